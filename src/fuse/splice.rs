//! Messages to `/dev/fuse` whose data comes straight from the image file's
//! page cache: the header is written into a pipe, the data spliced into it
//! from the file (page references, no copy), and the pipe spliced into the
//! device, where the kernel copies each page once into the mount's cache.
//! Used for READ replies and for `FUSE_NOTIFY_STORE` pushes of
//! uncompressed data.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::erofs::Span;
use crate::os;

/// Reads at least this long are spliced when they can be: shorter ones
/// cost fewer system calls with pread + writev.
pub(crate) const SPLICE_MIN: usize = 32 << 10;

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
#[derive(Debug)]
pub(crate) struct SplicePipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Buffers (pages) the pipe holds.
    slots: usize,
}

impl SplicePipe {
    pub(crate) fn new() -> io::Result<Self> {
        let (r, w) = os::fd::pipe(true)?;
        let mut got = 0;
        for bytes in [PIPE_BYTES, 1 << 20] {
            if let Ok(n) = os::fd::set_pipe_size(&w, bytes) {
                got = n;
                break;
            }
        }
        let slots = got / 4096;
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
        // (Without SPLICE_F_MOVE: see `os::splice::pipe_to`.)
        let e = match os::splice::pipe_to(self.r.as_raw_fd(), fd, len) {
            Ok(n) if n == len => return Ok(()),
            Ok(_) => io::Error::from(io::ErrorKind::WriteZero),
            Err(e) => e,
        };
        self.drain();
        Err(e)
    }

    /// Empties the pipe (after a failed message), so the next starts clean.
    fn drain(&self) {
        let mut scratch = [0u8; 4096];
        while matches!(os::fd::read(self.r.as_raw_fd(), &mut scratch), Ok(n) if n > 0) {}
    }

    /// Writes all of `bytes` into the pipe (it has room: it is empty and
    /// sized for a whole message; a full pipe fails with EAGAIN).
    fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = os::fd::write(self.w.as_raw_fd(), bytes)?;
            bytes = bytes.get(n..).unwrap_or(&[]);
        }
        Ok(())
    }

    /// Moves `len` bytes of `fd` at `offset` into the pipe (page
    /// references, no copy).
    fn splice_in(&self, fd: RawFd, offset: u64, len: usize) -> io::Result<()> {
        let mut off = offset;
        let mut left = len;
        while left > 0 {
            match os::splice::file_to_pipe(fd, &mut off, self.w.as_raw_fd(), left) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
