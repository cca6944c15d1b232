//! Descriptor calls: plain reads and writes on memory borrowed for the
//! call, pipes, seals, socket options, and taking over an inherited
//! descriptor.
//!
//! Descriptors are taken as [`RawFd`] where the callers hold them that way
//! (a worker's device fd, a source's file): a descriptor number is not
//! memory, and a closed or wrong one makes the call fail (`EBADF`); these
//! functions never close or take over a descriptor they are given.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{check, check_size};

/// One read(2) of up to `buf.len()` bytes (no retry on `EINTR`).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes for the whole call
    // (an exclusive borrow), which is all the kernel writes.
    check_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// One write(2) of up to `buf.len()` bytes (no retry on `EINTR`).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for `buf.len()` bytes for the whole call;
    // the kernel only reads it.
    check_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// One writev(2) of `parts`, in order (no retry on `EINTR`).
pub fn writev(fd: RawFd, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    let cnt = libc::c_int::try_from(parts.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many parts"))?;
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix (std
    // guarantees it); each one borrows a live slice for the whole call and
    // the kernel only reads `cnt` of them and the bytes they point at.
    check_size(unsafe { libc::writev(fd, parts.as_ptr().cast(), cnt) })
}

/// Sets or clears O_NONBLOCK on `fd`'s open file description.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let fl = status_flags(fd)?;
    let fl = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL takes an int argument and touches no memory.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, fl) })?;
    Ok(())
}

/// The open file description's status flags (F_GETFL).
pub fn status_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    check(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// A new pipe, close-on-exec, non-blocking when `nonblock`: (read end,
/// write end).
pub fn pipe(nonblock: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    let flags = libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 };
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    // SAFETY: pipe2 succeeded, so both are new descriptors that nothing
    // else in the process owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Asks for a pipe buffer of `bytes` (F_SETPIPE_SZ); returns the size the
/// kernel gave.
pub fn set_pipe_size(pipe: &impl AsFd, bytes: libc::c_int) -> io::Result<usize> {
    let fd = pipe.as_fd().as_raw_fd();
    // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory.
    let got = check(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes) })?;
    usize::try_from(got).map_err(io::Error::other)
}

/// Adds `seals` (`F_SEAL_*`) to a memfd; fails when the file cannot be
/// sealed (not a memfd made with `MFD_ALLOW_SEALING`, or mapped writable).
pub fn add_seals(file: &impl AsFd, seals: libc::c_int) -> io::Result<()> {
    let fd = file.as_fd().as_raw_fd();
    // SAFETY: F_ADD_SEALS takes an int argument and touches no memory.
    check(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }).map(drop)
}

/// The seals (`F_SEAL_*`) a file carries.
pub fn seals(file: &impl AsFd) -> io::Result<libc::c_int> {
    let fd = file.as_fd().as_raw_fd();
    // SAFETY: F_GET_SEALS takes no argument and touches no memory.
    check(unsafe { libc::fcntl(fd, libc::F_GET_SEALS) })
}

/// An integer socket option at `SOL_SOCKET` level (`SO_DOMAIN`, ...).
pub fn socket_option(sock: &impl AsFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let fd = sock.as_fd().as_raw_fd();
    let mut val: libc::c_int = 0;
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: `val` and `len` are valid for writes of the sizes given (len
    // says how much room `val` has; the kernel writes at most that).
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_mut(&mut val).cast(),
            &mut len,
        )
    })?;
    Ok(val)
}

/// A new anonymous memory file (memfd), close-on-exec, `len` bytes long
/// (sparse: pages are allocated as they are written). `name` shows in
/// /proc/PID/maps and fd links.
pub fn memfd(name: &std::ffi::CStr, len: u64) -> io::Result<std::fs::File> {
    // SAFETY: `name` is a NUL-terminated string borrowed for the call; the
    // kernel only reads it.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create succeeded, so `fd` is a new descriptor that
    // nothing else in the process owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(len)?;
    Ok(file)
}

/// Frees the pages of `len` bytes at `offset` of `file` (they read back as
/// zeros), keeping its size: `fallocate(PUNCH_HOLE | KEEP_SIZE)`.
pub fn punch_hole(file: &impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    let fd = file.as_fd().as_raw_fd();
    let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: fallocate takes integer arguments and touches no memory.
    check(unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    })
    .map(drop)
}

/// A descriptor of our own for the open file of inherited descriptor `fd`
/// (one named on the command line, `fd:N` or `--fd N`): a close-on-exec
/// duplicate, numbered 3 or higher. The inherited number itself is left
/// open and never used again. Fails with `EBADF` when `fd` is not open.
///
/// Duplicating (rather than taking over the number) means that nothing
/// needs to be assumed about who else in the process might own `fd`.
pub fn dup_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int argument and touches no memory.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: fcntl succeeded, so `new` is a new descriptor that nothing
    // else in the process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Closes `fd`, a descriptor its last owner gave up as a bare number
/// without closing it (the exit events of `crate::vhost`'s backend; see
/// there). The caller must know that nothing uses or closes the number
/// any more.
pub fn close_abandoned(fd: RawFd) -> io::Result<()> {
    // SAFETY: close(2) of a number; by the caller's guarantee it is open
    // and nobody owns or uses it, so nothing else is closed or disturbed.
    check(unsafe { libc::close(fd) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_memfd_is_sized_and_holes_read_as_zeros() {
        use std::os::unix::fs::FileExt;
        let f = memfd(c"test", 8192).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8192);
        f.write_all_at(&[7u8; 8192], 0).unwrap();
        punch_hole(&f, 4096, 4096).unwrap();
        let mut buf = [1u8; 8192];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 7));
        assert!(buf[4096..].iter().all(|&b| b == 0));
        assert_eq!(f.metadata().unwrap().len(), 8192);
    }

    #[test]
    fn test_pipe_carries_writes_and_vectors() {
        let (r, w) = pipe(true).unwrap();
        assert_eq!(write(w.as_raw_fd(), b"ab").unwrap(), 2);
        let parts = [IoSlice::new(b"cd"), IoSlice::new(b""), IoSlice::new(b"e")];
        assert_eq!(writev(w.as_raw_fd(), &parts).unwrap(), 3);
        let mut buf = [0u8; 8];
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"abcde");
        // Empty and non-blocking: EAGAIN, not a hang.
        let e = read(r.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn test_closed_descriptor_fails_with_ebadf() {
        let mut buf = [0u8; 4];
        let e = read(987_654, &mut buf).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let e = dup_inherited(987_654).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn test_dup_inherited_is_a_new_descriptor_of_the_same_file() {
        let (r, w) = pipe(false).unwrap();
        let dup = dup_inherited(w.as_raw_fd()).unwrap();
        assert_ne!(dup.as_raw_fd(), w.as_raw_fd());
        assert!(dup.as_raw_fd() >= 3);
        assert_eq!(write(dup.as_raw_fd(), b"x").unwrap(), 1);
        let mut buf = [0u8; 1];
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), 1);
    }

    #[test]
    fn test_socket_option_of_a_non_socket_fails() {
        let (r, _w) = pipe(false).unwrap();
        let e = socket_option(&r, libc::SO_DOMAIN).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
    }
}
