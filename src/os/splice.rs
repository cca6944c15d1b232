//! splice(2): moving bytes between a file, a pipe and a device inside the
//! kernel (page references, no copy through user space).
//!
//! No user memory is involved except the in/out file offset, which is a
//! local of these functions for the duration of the call.

use std::io;
use std::os::fd::RawFd;

use super::check_size;

/// Moves up to `len` bytes of file `fd` at `*offset` into pipe `pipe_w`
/// (non-blocking on the pipe); advances `*offset` by what moved and
/// returns that count (0: end of file).
pub fn file_to_pipe(fd: RawFd, offset: &mut u64, pipe_w: RawFd, len: usize) -> io::Result<usize> {
    let mut off = libc::loff_t::try_from(*offset).map_err(io::Error::other)?;
    // SAFETY: `off` is a valid in/out offset for the whole call; no other
    // memory is passed.
    let n = check_size(unsafe {
        libc::splice(
            fd,
            &mut off,
            pipe_w,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    })?;
    *offset = u64::try_from(off).map_err(io::Error::other)?;
    Ok(n)
}

/// Moves up to `len` bytes from pipe `pipe_r` into `out` (a device or a
/// pipe) at its current position; returns the count moved.
pub fn pipe_to(pipe_r: RawFd, out: RawFd, len: usize) -> io::Result<usize> {
    // No SPLICE_F_MOVE: with it the kernel steals whole page-cache pages
    // of the image (removing them from the image file's cache) to put them
    // in the mount's cache, which halved sequential reads (the stealing
    // costs more than the copy) and left the image cold for every other
    // reader of it.
    // SAFETY: plain descriptors, null offsets (the pipe has none, the
    // device uses its own); no memory is passed.
    check_size(unsafe {
        libc::splice(
            pipe_r,
            std::ptr::null_mut(),
            out,
            std::ptr::null_mut(),
            len,
            0,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn test_file_bytes_move_through_a_pipe() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        let (r1, w1) = super::super::fd::pipe(true).unwrap();
        let (r2, w2) = super::super::fd::pipe(true).unwrap();
        let mut off = 3;
        assert_eq!(
            file_to_pipe(f.as_raw_fd(), &mut off, w1.as_raw_fd(), 4).unwrap(),
            4
        );
        assert_eq!(off, 7);
        assert_eq!(pipe_to(r1.as_raw_fd(), w2.as_raw_fd(), 4).unwrap(), 4);
        let mut buf = [0u8; 8];
        let n = super::super::fd::read(r2.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"3456");
        let mut end = 10;
        assert_eq!(
            file_to_pipe(f.as_raw_fd(), &mut end, w1.as_raw_fd(), 4).unwrap(),
            0
        );
    }
}
