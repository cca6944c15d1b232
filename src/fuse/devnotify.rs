//! Writing whole messages to a /dev/fuse descriptor, and the /dev/fuse
//! [`Outbound`]: notifications (`FUSE_NOTIFY_STORE`,
//! `FUSE_NOTIFY_INVAL_ENTRY`) written on a descriptor of their own. The
//! io_uring variant of the transport sends its notifications the same
//! way: the kernel takes them only on /dev/fuse.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use zerocopy::IntoBytes;

use super::abi::{
    NotifyInvalEntryOut, NotifyStoreOut, OutHeader, NOTIFY_INVAL_ENTRY, NOTIFY_STORE,
};
use super::outbound::Outbound;
use super::sink::OUT_HEADER_LEN;
use super::splice::SplicePipe;
use crate::erofs::Span;
use crate::os;

/// Writes one message (a reply or a notification), gathered from `parts`
/// (at most 8), to a /dev/fuse descriptor; retries when interrupted.
pub(crate) fn write_message(fd: RawFd, parts: &[&[u8]]) -> io::Result<()> {
    const MAX_IOV: usize = 8;
    if parts.len() > MAX_IOV {
        return Err(io::Error::other("too many message parts"));
    }
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = IoSlice::new(p);
    }
    let iov = iov.get(..parts.len()).unwrap_or(&[]);
    loop {
        match os::fd::writev(fd, iov) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The header of a notification of `code` with `body` bytes after it.
fn notify_header(code: i32, body: usize) -> io::Result<OutHeader> {
    Ok(OutHeader {
        len: u32::try_from(body.saturating_add(OUT_HEADER_LEN)).map_err(io::Error::other)?,
        error: code,
        unique: 0,
    })
}

/// The headers of a `FUSE_NOTIFY_STORE` of `size` bytes at `offset` of
/// node `nodeid`.
fn store_head(nodeid: u64, offset: u64, size: usize) -> io::Result<(OutHeader, NotifyStoreOut)> {
    let out = NotifyStoreOut {
        nodeid,
        offset,
        size: u32::try_from(size).map_err(io::Error::other)?,
        padding: 0,
    };
    let body = std::mem::size_of::<NotifyStoreOut>().saturating_add(size);
    Ok((notify_header(NOTIFY_STORE, body)?, out))
}

/// Notifications to the kernel of one /dev/fuse connection, written on a
/// descriptor of their own (a clone of the mount's): storing into the page
/// cache waits for pages a READ may hold locked, which must not stall a
/// worker.
#[derive(Debug)]
pub struct DevOutbound {
    fd: OwnedFd,
    /// The pipe spliced stores go through (made on first use); `Err` once
    /// making it failed: stores are then copied.
    pipe: Mutex<Option<Result<SplicePipe, ()>>>,
}

impl DevOutbound {
    /// Notifications written to `fd`, a descriptor of the connection.
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            pipe: Mutex::new(None),
        }
    }
}

impl Outbound for DevOutbound {
    fn can_store(&self) -> bool {
        true
    }

    fn store(&self, nodeid: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let (header, out) = store_head(nodeid, offset, data.len())?;
        write_message(
            self.fd.as_raw_fd(),
            &[header.as_bytes(), out.as_bytes(), data],
        )
    }

    /// Spliced from the image file's page cache when the pipe holds the
    /// whole message.
    fn store_spans(&self, nodeid: u64, offset: u64, spans: &[Span]) -> io::Result<bool> {
        let len = super::splice::spans_len(spans);
        let mut pipe = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        let pipe = match pipe.get_or_insert_with(|| SplicePipe::new().map_err(|_| ())) {
            Ok(p) => p,
            Err(()) => return Ok(false),
        };
        if !pipe.fits(len, spans.len()) {
            return Ok(false);
        }
        let (header, out) = store_head(nodeid, offset, len)?;
        if pipe
            .load(&[header.as_bytes(), out.as_bytes()], spans)
            .is_err()
        {
            return Ok(false);
        }
        let msg = OUT_HEADER_LEN
            .saturating_add(std::mem::size_of::<NotifyStoreOut>())
            .saturating_add(len);
        pipe.send(self.fd.as_raw_fd(), msg).map(|()| true)
    }

    fn can_passthrough(&self) -> bool {
        true
    }

    fn backing_open(&self, file: BorrowedFd<'_>) -> io::Result<u32> {
        crate::os::mount::fuse_backing_open(&self.fd, &file)
    }

    fn backing_close(&self, id: u32) -> io::Result<()> {
        crate::os::mount::fuse_backing_close(&self.fd, id)
    }

    fn inval_entry(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        let out = NotifyInvalEntryOut {
            parent,
            namelen: u32::try_from(name.len()).map_err(io::Error::other)?,
            flags: 0,
        };
        let body = std::mem::size_of::<NotifyInvalEntryOut>()
            .saturating_add(name.len())
            .saturating_add(1);
        let header = notify_header(NOTIFY_INVAL_ENTRY, body)?;
        write_message(
            self.fd.as_raw_fd(),
            &[header.as_bytes(), out.as_bytes(), name, &[0]],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn written(f: impl FnOnce(&DevOutbound)) -> Vec<u8> {
        let (r, w) = crate::os::fd::pipe(false).unwrap();
        let out = DevOutbound::new(w);
        f(&out);
        drop(out);
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn test_store_writes_one_notify_store() {
        let data: Vec<u8> = (0..8204u32).map(|i| i as u8).collect();
        let got = written(|o| o.store(77, 4096, &data).unwrap());
        let body = 24 + data.len();
        assert_eq!(got.len(), 16 + body, "one message");
        assert_eq!(&got[0..4], &((16 + body) as u32).to_ne_bytes());
        assert_eq!(&got[4..8], &NOTIFY_STORE.to_ne_bytes());
        assert_eq!(&got[8..16], &0u64.to_ne_bytes());
        assert_eq!(&got[16..24], &77u64.to_ne_bytes());
        assert_eq!(&got[24..32], &4096u64.to_ne_bytes());
        assert_eq!(&got[32..36], &8204u32.to_ne_bytes());
        assert_eq!(&got[40..], &data[..]);
    }

    #[test]
    fn test_store_spans_splices_the_file_ranges() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 10000]).unwrap();
        let spans = [
            Span::File {
                fd: f.as_raw_fd(),
                offset: 100,
                len: 5000,
            },
            Span::Zero(3),
        ];
        let mut sent = None;
        let got = written(|o| sent = Some(o.store_spans(5, 0, &spans).unwrap()));
        if sent != Some(true) {
            // No pipe big enough here (pipe-max-size): nothing written.
            assert!(got.is_empty());
            return;
        }
        assert_eq!(got.len(), 16 + 24 + 5003);
        assert_eq!(&got[4..8], &NOTIFY_STORE.to_ne_bytes());
        assert_eq!(&got[32..36], &5003u32.to_ne_bytes());
        assert!(got[40..5040].iter().all(|&b| b == 7));
        assert_eq!(&got[5040..], &[0, 0, 0]);
    }

    #[test]
    fn test_inval_entry_writes_the_name_with_a_nul() {
        let got = written(|o| o.inval_entry(1, b"img").unwrap());
        assert_eq!(got.len(), 16 + 16 + 4);
        assert_eq!(&got[0..4], &36u32.to_ne_bytes());
        assert_eq!(&got[4..8], &NOTIFY_INVAL_ENTRY.to_ne_bytes());
        assert_eq!(&got[16..24], &1u64.to_ne_bytes());
        assert_eq!(&got[24..28], &3u32.to_ne_bytes());
        assert_eq!(&got[32..], b"img\0");
    }
}
