//! Our own FUSE protocol layer, read-only, independent of the transport.
//!
//! - [`abi`]: the wire structures of `<linux/fuse.h>` (7.45);
//! - [`request`]: bounds-checked decoding of one request (the framing
//!   every transport shares);
//! - [`Share`]: what every connection serving a share sees the same: the
//!   images (one at the root, or named images under a synthetic root,
//!   added and removed at runtime) and the server options (it outlives
//!   connections);
//! - [`Session`]: one connection's dispatcher over a share (INIT
//!   negotiation, lookup counts, handles, one function per opcode);
//! - [`ReplySink`]: how a transport receives replies, file data written
//!   straight into its own buffers;
//! - [`Outbound`]: what a transport can send besides replies (page-cache
//!   stores, entry invalidations, DAX mappings), and [`push`], the policy
//!   deciding which pages to store;
//! - [`devfuse`]: the /dev/fuse transport (mount, worker threads, unmount)
//!   and [`uring`], its io_uring variant.
//!
//! Trusts: the images only through [`crate::erofs`] (which validates
//! them); requests not at all (any byte string gets a reply or is dropped,
//! never a panic). Owns: the session state of each connection and the
//! share's image table. System calls go through [`crate::os`].
#![forbid(unsafe_code)]
#![deny(clippy::arithmetic_side_effects)]

pub mod abi;
pub mod content;
pub mod dax;
#[cfg(test)]
mod dax_tests;
pub mod devfuse;
mod devnotify;
mod dirops;
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzzing;
mod images;
mod nodes;
pub mod outbound;
mod passthrough;
pub mod push;
mod reply;
pub mod request;
mod rootdir;
mod session;
mod share;
mod sink;
mod splice;
mod stored;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_named;
#[cfg(any(test, feature = "test-utils"))]
pub mod testutil;
pub mod uring;

pub use dax::{DaxCounts, DaxMode};
pub use devnotify::DevOutbound;
pub use images::{check_name, ImageMeta, NameError, ShareImage, MAX_IMAGES, MAX_NAME_LEN};
pub use outbound::{DaxMapping, Outbound, RepliesOnly};
pub use rootdir::ROOT_INO;
pub use session::Session;
pub use share::{
    CachePolicy, ImageProvider, OpenError, Removed, Share, ShareError, ShareOptions,
    DEFAULT_MAX_HANDLES, DEFAULT_MAX_NODES, DEFAULT_MAX_READ, LONG_TIMEOUT_SECS, MAX_LOGGED_ERRORS,
};
pub use sink::{out_header, Errno, Fill, ReplySink, VecSink, OUT_HEADER_LEN};
