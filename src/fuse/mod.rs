//! Our own FUSE protocol layer, read-only, independent of the transport.
//!
//! - [`abi`]: the wire structures of `<linux/fuse.h>` (7.45);
//! - [`request`]: bounds-checked decoding of one request;
//! - [`Server`]: the dispatcher over an `Arc<Image>` (INIT negotiation,
//!   lookup counts, handles, one function per opcode);
//! - [`ReplySink`]: how a transport receives replies, file data written
//!   straight into its own buffers;
//! - [`devfuse`]: the /dev/fuse transport (mount, worker threads, unmount).
//!
//! Trusts: the image only through [`crate::erofs`] (which validates it);
//! requests not at all (any byte string gets a reply or is dropped, never a
//! panic). Owns: the session state of one mount. System calls go through
//! [`crate::os`].
#![forbid(unsafe_code)]
#![deny(clippy::arithmetic_side_effects)]

pub mod abi;
pub mod devfuse;
mod dirops;
mod dispatch;
mod nodes;
pub mod push;
pub mod request;
mod sink;
mod splice;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "test-utils"))]
pub mod testutil;
pub mod uring;

pub use dispatch::{
    CachePolicy, Server, ServerOptions, DEFAULT_MAX_HANDLES, DEFAULT_MAX_READ, LONG_TIMEOUT_SECS,
};
pub use sink::{out_header, Errno, Fill, ReplySink, VecSink, OUT_HEADER_LEN};
