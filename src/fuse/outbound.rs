//! What a transport can send its client besides replies: the one hook the
//! dispatcher has for data the client has not asked for yet.
//!
//! Every transport implements [`Outbound`] for its connections:
//!
//! | | /dev/fuse (and its io_uring variant) | vhost-user |
//! |---|---|---|
//! | page-cache stores | `FUSE_NOTIFY_STORE` | no (virtio-fs has no notifications) |
//! | entry invalidation | `FUSE_NOTIFY_INVAL_ENTRY` | no |
//! | DAX window mappings | no | `SHMEM_MAP`/`SHMEM_UNMAP` (later) |
//! | passthrough backing files | `FUSE_DEV_IOC_BACKING_OPEN`/`_CLOSE` | no |
//!
//! The dispatcher decides *what* to send (which pages to push after a
//! read, which names went away: [`super::push`], [`super::Share`]); the
//! transport only writes it. A method a transport does not support
//! returns [`unsupported`] (the default), and the caller goes without.

use std::io;
use std::os::fd::BorrowedFd;

use crate::erofs::Span;

/// The error of a method a transport does not support.
pub fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "not supported by this transport",
    )
}

/// A range of a host file to map into the client's DAX window.
#[derive(Debug, Clone, Copy)]
pub struct DaxMapping<'a> {
    /// Offset in the window (the client's `moffset`).
    pub window_offset: u64,
    /// The file holding the data.
    pub file: BorrowedFd<'a>,
    /// Offset of the data in `file`.
    pub file_offset: u64,
    /// Bytes to map.
    pub len: u64,
}

/// A transport's channel to its client for everything but replies.
///
/// Called from the dispatcher's threads (and the pushing thread) at any
/// time; an implementation does its own locking. Errors are the
/// transport's: `ENOENT` when the client no longer knows the node (nothing
/// to do), `ENODEV` when the connection is gone.
pub trait Outbound: Send + Sync + std::fmt::Debug {
    /// Whether [`store`](Self::store) reaches the client: only then does
    /// the dispatcher push pages.
    fn can_store(&self) -> bool {
        false
    }

    /// Puts `data` into the client's page cache for node `nodeid` at byte
    /// `offset` (`FUSE_NOTIFY_STORE`).
    fn store(&self, _nodeid: u64, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(unsupported())
    }

    /// The same with the data given as host file ranges (`spans`, adding up
    /// to the whole range), moved without a copy through user space where
    /// the transport can. `Ok(false)`: nothing was sent; the caller reads
    /// the data and calls [`store`](Self::store) instead.
    fn store_spans(&self, _nodeid: u64, _offset: u64, _spans: &[Span]) -> io::Result<bool> {
        Ok(false)
    }

    /// Tells the client that `name` in directory node `parent` is gone or
    /// changed (`FUSE_NOTIFY_INVAL_ENTRY`).
    fn inval_entry(&self, _parent: u64, _name: &[u8]) -> io::Result<()> {
        Err(unsupported())
    }

    /// The size of the client's DAX window in bytes, when it has one.
    fn dax_window(&self) -> Option<u64> {
        None
    }

    /// Whether [`backing_open`](Self::backing_open) may work: only then
    /// does INIT offer FUSE passthrough.
    fn can_passthrough(&self) -> bool {
        false
    }

    /// Registers `file` as a passthrough backing file; returns the backing
    /// id an OPEN reply names (`FOPEN_PASSTHROUGH`).
    fn backing_open(&self, _file: BorrowedFd<'_>) -> io::Result<u32> {
        Err(unsupported())
    }

    /// Drops a backing id (files opened with it keep their backing file).
    fn backing_close(&self, _id: u32) -> io::Result<()> {
        Err(unsupported())
    }

    /// Maps a file range into the client's DAX window.
    fn dax_map(&self, _mapping: &DaxMapping<'_>) -> io::Result<()> {
        Err(unsupported())
    }

    /// Unmaps `len` bytes at `window_offset` of the client's DAX window.
    fn dax_unmap(&self, _window_offset: u64, _len: u64) -> io::Result<()> {
        Err(unsupported())
    }
}

/// A transport that sends nothing but replies (tests, fuzzing, and
/// transports before their hooks are written).
#[derive(Debug, Default, Clone, Copy)]
pub struct RepliesOnly;

impl Outbound for RepliesOnly {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_defaults_are_unsupported() {
        let out = RepliesOnly;
        assert!(!out.can_store());
        assert_eq!(out.dax_window(), None);
        assert!(!out.can_passthrough());
        assert_eq!(
            out.backing_close(1).unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
        for r in [
            out.store(2, 0, b"x"),
            out.inval_entry(1, b"name"),
            out.dax_unmap(0, 4096),
        ] {
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::Unsupported);
        }
        assert!(!out.store_spans(2, 0, &[Span::Zero(1)]).unwrap());
        let f = tempfile::tempfile().unwrap();
        let m = DaxMapping {
            window_offset: 0,
            file: std::os::fd::AsFd::as_fd(&f),
            file_offset: 0,
            len: 2 << 20,
        };
        assert_eq!(
            out.dax_map(&m).unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
    }
}
