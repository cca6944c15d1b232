//! Where image bytes come from.
//!
//! A [`Source`] answers "give me N bytes at offset O" for one image or
//! extra device. It owns the underlying file or memory and trusts nothing
//! about the bytes it returns: the EROFS layer validates them.
#![forbid(unsafe_code)]

mod direct;
mod fd;
mod file;
mod guest;
mod memory;

use std::fmt::Debug;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

pub use direct::{release_bounce_buffer, DirectFileSource};
pub use fd::{open_fd, parse_fd_spec};
pub use file::FileSource;
pub use guest::GuestMemorySource;
pub use memory::MemorySource;

/// A random-access, read-only byte store holding an image or extra device.
pub trait Source: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 only at or past the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Total size in bytes.
    fn size(&self) -> u64;

    /// Borrowed view of `len` bytes at `offset`, when the source is memory.
    fn slice(&self, _offset: u64, _len: usize) -> Option<&[u8]> {
        None
    }

    /// A file descriptor whose bytes at `base + offset` are this source's
    /// bytes at `offset`, for `splice(2)` straight from the host page cache
    /// (buffered files only); `None` when the bytes must be read.
    fn splice_fd(&self) -> Option<(RawFd, u64)> {
        None
    }

    /// Whether each read goes to the device itself rather than through
    /// the host page cache (O_DIRECT): every read is then an I/O, and
    /// callers reading a run of blocks do better to read it at once.
    fn uncached(&self) -> bool {
        false
    }
}

/// The part of `buf` that a read at `offset` of a `size`-byte source can
/// fill: empty at or past the end.
pub fn clamp_read(buf: &mut [u8], offset: u64, size: u64) -> &mut [u8] {
    let left = size.saturating_sub(offset);
    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    &mut buf[..n]
}

/// Fills `buf` completely from `offset`, or fails with `UnexpectedEof`.
pub fn read_exact_at(src: &dyn Source, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    if let Some(s) = src.slice(offset, buf.len()) {
        buf.copy_from_slice(s);
        return Ok(());
    }
    while !buf.is_empty() {
        match src.read_at(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read past end of image at byte {offset}"),
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A byte window `[start, start + len)` of another source: an image embedded
/// at an offset inside a larger file or memory region.
#[derive(Debug)]
pub struct Window {
    inner: Arc<dyn Source>,
    start: u64,
    len: u64,
}

impl Window {
    /// Creates a window starting at `start`; `len` defaults to the rest.
    pub fn new(inner: Arc<dyn Source>, start: u64, len: Option<u64>) -> io::Result<Self> {
        let size = inner.size();
        if start > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {start} is beyond the end of the source ({size} bytes)"),
            ));
        }
        let avail = size - start;
        let len = match len {
            Some(l) if l > avail => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("window of {l} bytes at {start} exceeds source size {size}"),
                ))
            }
            Some(l) => l,
            None => avail,
        };
        Ok(Self { inner, start, len })
    }
}

impl Source for Window {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let buf = clamp_read(buf, offset, self.len);
        if buf.is_empty() {
            return Ok(0);
        }
        self.inner.read_at(buf, self.start + offset)
    }

    fn size(&self) -> u64 {
        self.len
    }

    fn slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        if end > self.len {
            return None;
        }
        self.inner.slice(self.start + offset, len)
    }

    fn splice_fd(&self) -> Option<(RawFd, u64)> {
        let (fd, base) = self.inner.splice_fd()?;
        Some((fd, base.checked_add(self.start)?))
    }

    fn uncached(&self) -> bool {
        self.inner.uncached()
    }
}

/// Opens `path` as a source, applying `offset` when non-zero.
pub fn open_path(path: &std::path::Path, offset: u64) -> io::Result<Arc<dyn Source>> {
    open_path_with(path, offset, false)
}

/// Opens `path` as a source (with `O_DIRECT` when `direct`), applying
/// `offset` when non-zero. `fd:N` names inherited descriptor N (see
/// [`open_fd`]; `direct` does not apply).
pub fn open_path_with(
    path: &std::path::Path,
    offset: u64,
    direct: bool,
) -> io::Result<Arc<dyn Source>> {
    let file: Arc<dyn Source> = if let Some(fd) = parse_fd_spec(path) {
        // `fd:N`: an inherited descriptor (a memfd is mapped when sealable).
        open_fd(fd)?
    } else if direct {
        Arc::new(DirectFileSource::open(path)?)
    } else {
        Arc::new(FileSource::open(path)?)
    };
    if offset == 0 {
        Ok(file)
    } else {
        Ok(Arc::new(Window::new(file, offset, None)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_window_read_past_end_returns_zero() {
        let mem: Arc<dyn Source> = Arc::new(MemorySource::from_vec((0u8..100).collect()));
        let w = Window::new(mem, 7, Some(10)).unwrap();
        let mut buf = [0u8; 20];
        assert_eq!(w.read_at(&mut buf, 0).unwrap(), 10);
        assert_eq!(buf[0], 7);
        assert_eq!(w.read_at(&mut buf, 10).unwrap(), 0);
        assert_eq!(w.slice(3, 7).unwrap(), &[10, 11, 12, 13, 14, 15, 16]);
        assert!(w.slice(3, 8).is_none());
    }

    #[test]
    fn test_window_beyond_source_is_rejected() {
        let mem: Arc<dyn Source> = Arc::new(MemorySource::from_vec(vec![0; 10]));
        assert!(Window::new(mem.clone(), 11, None).is_err());
        assert!(Window::new(mem, 5, Some(6)).is_err());
    }

    #[test]
    fn test_read_exact_at_short_source_is_eof() {
        let mem = MemorySource::from_vec(vec![1; 10]);
        let mut buf = [0u8; 4];
        read_exact_at(&mem, &mut buf, 6).unwrap();
        let err = read_exact_at(&mem, &mut buf, 7).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
