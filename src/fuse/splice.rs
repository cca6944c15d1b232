//! Messages to `/dev/fuse` whose data comes straight from the image file's
//! page cache: the header is written into a pipe, the data spliced into it
//! from the file (page references, no copy), and the pipe spliced into the
//! device, where the kernel copies each page once into the mount's cache.
//! Used for READ replies and for `FUSE_NOTIFY_STORE` pushes of
//! uncompressed data.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::erofs::Span;

/// Most pieces (file ranges, holes) one spliced message is made of; more
/// take the copying path.
pub(crate) const MAX_SPANS: usize = 16;

/// Bytes `spans` stand for.
pub(crate) fn spans_len(spans: &[Span]) -> usize {
    spans
        .iter()
        .map(|s| match *s {
            Span::File { len, .. } | Span::Zero(len) => len,
        })
        .fold(0usize, usize::saturating_add)
}

/// Pipe size asked for: room for a 1 MiB payload split at every page plus
/// the pieces' partial pages and the header. Without CAP_SYS_RESOURCE the
/// kernel allows `/proc/sys/fs/pipe-max-size` (1 MiB by default), and the
/// largest messages take the copying path.
const PIPE_BYTES: libc::c_int = 2 << 20;

/// A non-blocking pipe big enough for one whole message (header and
/// payload, in as many page-sized buffers as the pieces need).
pub(crate) struct SplicePipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Buffers (pages) the pipe holds.
    slots: usize,
}

impl SplicePipe {
    pub(crate) fn new() -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two new descriptors owned by nothing else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut got = -1;
        for bytes in [PIPE_BYTES, 1 << 20] {
            // SAFETY: F_SETPIPE_SZ takes an int argument, touches no memory.
            got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) };
            if got > 0 {
                break;
            }
        }
        let slots = usize::try_from(got).unwrap_or(0) / 4096;
        if slots < 64 {
            return Err(io::Error::other("pipe too small for spliced messages"));
        }
        Ok(Self { r, w, slots })
    }

    /// Whether a message of `total` payload bytes in `pieces` pieces fits:
    /// each piece may start and end inside a page, the header takes a
    /// buffer of its own.
    pub(crate) fn fits(&self, total: usize, pieces: usize) -> bool {
        let need = total
            .div_ceil(4096)
            .saturating_add(pieces.saturating_mul(2))
            .saturating_add(1);
        need <= self.slots
    }

    /// Fills the (empty) pipe with one message: the `head` parts, then the
    /// spans. On failure (a file shorter than its spans, a full pipe) the
    /// pipe is emptied again and nothing was sent.
    pub(crate) fn load(&self, head: &[&[u8]], spans: &[Span]) -> io::Result<()> {
        let r = self.fill(head, spans);
        if r.is_err() {
            self.drain();
        }
        r
    }

    fn fill(&self, head: &[&[u8]], spans: &[Span]) -> io::Result<()> {
        static ZEROS: [u8; 4096] = [0; 4096];
        for part in head {
            self.write_all(part)?;
        }
        for span in spans {
            match *span {
                Span::File { fd, offset, len } => self.splice_in(fd, offset, len)?,
                Span::Zero(mut n) => {
                    while n > 0 {
                        let k = n.min(ZEROS.len());
                        self.write_all(ZEROS.get(..k).unwrap_or(&[]))?;
                        n = n.saturating_sub(k);
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves the loaded message (`len` bytes in all) into the device `fd`
    /// as one write. Fails with the device's error, or with
    /// [`io::ErrorKind::WriteZero`] when only part of it moved; either way
    /// the pipe is empty afterwards.
    pub(crate) fn send(&self, fd: RawFd, len: usize) -> io::Result<()> {
        // No SPLICE_F_MOVE: with it the kernel steals whole page-cache
        // pages of the image (removing them from the image file's cache)
        // to put them in the mount's cache, which halved sequential reads
        // (the stealing costs more than the copy) and left the image cold
        // for every other reader of it.
        // SAFETY: plain descriptors, no memory is passed.
        let n = unsafe {
            libc::splice(
                self.r.as_raw_fd(),
                std::ptr::null_mut(),
                fd,
                std::ptr::null_mut(),
                len,
                0,
            )
        };
        if usize::try_from(n) == Ok(len) {
            return Ok(());
        }
        let e = if n < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::from(io::ErrorKind::WriteZero)
        };
        self.drain();
        Err(e)
    }

    /// Empties the pipe (after a failed message), so the next starts clean.
    fn drain(&self) {
        let mut scratch = [0u8; 4096];
        loop {
            // SAFETY: `scratch` is writable for its length.
            let n = unsafe { libc::read(self.r.as_raw_fd(), scratch.as_mut_ptr().cast(), 4096) };
            if n <= 0 {
                break;
            }
        }
    }

    /// Writes all of `bytes` into the pipe (it has room: it is empty and
    /// sized for a whole message; a full pipe fails with EAGAIN).
    fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            // SAFETY: `bytes` is readable for its length.
            let n = unsafe { libc::write(self.w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            bytes = bytes.get(n..).unwrap_or(&[]);
        }
        Ok(())
    }

    /// Moves `len` bytes of `fd` at `offset` into the pipe (page
    /// references, no copy).
    fn splice_in(&self, fd: RawFd, offset: u64, len: usize) -> io::Result<()> {
        let mut off = i64::try_from(offset).map_err(io::Error::other)?;
        let mut left = len;
        while left > 0 {
            // SAFETY: `off` is a valid in/out offset for the call; no other
            // memory is touched.
            let n = unsafe {
                libc::splice(
                    fd,
                    &mut off,
                    self.w.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            match usize::try_from(n) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => left = left.saturating_sub(n),
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}
