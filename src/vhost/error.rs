//! Errors of the vhost-user transport.

use std::io;
use std::path::PathBuf;

/// What went wrong with one descriptor chain. Every variant is the guest's
/// doing (or a guest/VMM bug): the chain is answered with an error reply or
/// returned empty, and the queue keeps being served.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A device-readable descriptor follows a device-writable one.
    #[error("chain {head}: readable descriptor #{index} after a writable one")]
    ReadableAfterWritable {
        /// Head index of the chain.
        head: u16,
        /// Position of the offending descriptor in the chain.
        index: usize,
    },
    /// A descriptor points outside guest memory.
    #[error("chain {head}: descriptor #{index} ({addr:#x}+{len}) is not in guest memory")]
    OutsideGuestMemory {
        /// Head index of the chain.
        head: u16,
        /// Position of the offending descriptor in the chain.
        index: usize,
        /// Guest physical address of the descriptor.
        addr: u64,
        /// Length of the descriptor.
        len: u32,
        /// What vm-memory said.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The chain ends with a descriptor that says more follow: the next
    /// index was out of range, the chain looped past the queue size, an
    /// indirect table was nested or misaligned, or the total exceeded 4 GiB.
    #[error("chain {head}: cut short after {count} descriptors (loop, bad next index or bad indirect table)")]
    Broken {
        /// Head index of the chain.
        head: u16,
        /// Descriptors seen before the chain broke.
        count: usize,
    },
    /// The readable part is longer than any request we accept.
    #[error("chain {head}: {len} readable bytes exceed the {max}-byte request limit")]
    RequestTooLong {
        /// Head index of the chain.
        head: u16,
        /// Readable bytes (saturated at `u64::MAX`).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Two writable buffers overlap.
    #[error("chain {head}: writable buffers overlap")]
    OverlappingWritable {
        /// Head index of the chain.
        head: u16,
    },
    /// The writable part is longer than the address space.
    #[error("chain {head}: writable lengths overflow")]
    WritableOverflow {
        /// Head index of the chain.
        head: u16,
    },
}

/// A reply did not fit the writable part of its chain.
#[derive(Debug, thiserror::Error)]
#[error("reply needs bytes {offset}..{offset}+{len} but the chain has {capacity} writable bytes")]
pub struct ReplyTooLong {
    /// Where the write started.
    pub offset: usize,
    /// How much was to be written.
    pub len: usize,
    /// Writable bytes of the chain.
    pub capacity: usize,
}

impl From<ReplyTooLong> for io::Error {
    fn from(e: ReplyTooLong) -> Self {
        io::Error::new(io::ErrorKind::WriteZero, e)
    }
}

/// Errors that stop the daemon (setup, sockets), as opposed to per-request
/// problems, which are logged and answered.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The listening socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `--socket-group` could not be applied.
    #[error("cannot give socket {path} to group {group}: {source}")]
    SocketGroup {
        /// The socket path.
        path: PathBuf,
        /// The group name.
        group: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `--fd` is not a listening Unix socket.
    #[error("--fd {fd}: {reason}")]
    BadFd {
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        reason: String,
    },
    /// The vhost-user daemon failed.
    #[error("vhost-user: {0}")]
    VhostUser(String),
    /// A signal-handling or thread setup call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being set up.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
