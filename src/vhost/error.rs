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

/// A filesystem tag the config space cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// Empty or longer than the field.
    #[error("tag {tag:?} must be 1 to {max} bytes, not {len}")]
    Length {
        /// The tag.
        tag: String,
        /// Its length in bytes.
        len: usize,
        /// The field's size.
        max: usize,
    },
    /// A NUL byte would end it early.
    #[error("tag {tag:?} contains a NUL byte")]
    Nul {
        /// The tag.
        tag: String,
    },
}

/// Why a device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The tag is unusable.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// More request queues than the config space can say.
    #[error("{queues} request queues are too many")]
    TooManyQueues {
        /// Queues asked for.
        queues: usize,
    },
    /// The worker threads could not be started.
    #[error("worker threads: {0}")]
    Threads(#[source] io::Error),
}

/// What is wrong with an inherited descriptor given to listen on.
#[derive(Debug, thiserror::Error)]
pub enum FdProblem {
    /// A negative number.
    #[error("not a file descriptor")]
    Negative,
    /// Not open, or not a socket we could query.
    #[error("{0}")]
    Unusable(#[source] io::Error),
    /// A socket of another family.
    #[error("not a Unix domain socket")]
    NotUnix,
    /// A socket nobody called listen(2) on.
    #[error("socket is not listening")]
    NotListening,
}

/// How the vhost-user control plane failed: vhost-user-backend's error
/// (which is neither `Sync` nor a `std::error::Error`) taken apart, its
/// causes kept.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The connection's handler could not be made.
    #[error("cannot create the vhost-user handler: {0}")]
    Handler(#[source] vhost_user_backend::VhostUserHandlerError),
    /// The socket or a message failed.
    #[error("{what}: {source}")]
    Protocol {
        /// What was being done.
        what: &'static str,
        /// The protocol error.
        #[source]
        source: vhost::vhost_user::Error,
    },
    /// The thread serving the frontend could not be started.
    #[error("cannot start the frontend thread: {0}")]
    Start(#[source] io::Error),
    /// The thread serving the frontend panicked.
    #[error("the frontend thread panicked")]
    Panicked,
}

impl From<vhost_user_backend::Error> for VhostUserError {
    fn from(e: vhost_user_backend::Error) -> Self {
        use vhost_user_backend::Error as E;
        let protocol = |what, source| VhostUserError::Protocol { what, source };
        match e {
            E::NewVhostUserHandler(e) => VhostUserError::Handler(e),
            E::CreateBackendListener(e) => protocol("cannot create the backend listener", e),
            E::CreateBackendReqHandler(e) => protocol("cannot create the backend handler", e),
            E::CreateVhostUserListener(e) => protocol("cannot create the vhost-user listener", e),
            E::StartDaemon(e) => VhostUserError::Start(e),
            E::WaitDaemon(_) => VhostUserError::Panicked,
            E::HandleRequest(e) => protocol("handling a frontend request", e),
        }
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
    #[error("--fd {fd}: {problem}")]
    BadFd {
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        #[source]
        problem: FdProblem,
    },
    /// The device could not be set up.
    #[error("vhost-user device: {0}")]
    Device(#[from] DeviceError),
    /// The vhost-user daemon failed.
    #[error("vhost-user: {0}")]
    VhostUser(#[source] VhostUserError),
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
