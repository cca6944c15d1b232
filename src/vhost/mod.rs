//! The vhost-user-fs device: serves the FUSE dispatcher to a VMM over
//! vhost-user, the guest mounting it with `mount -t virtiofs TAG DIR`.
//!
//! - [`config`]: feature bits, protocol features, config space;
//! - [`chain`]: one descriptor chain split into request and reply space,
//!   every length and direction checked;
//! - [`GuestWriter`]: the reply space, written with volatile copies and,
//!   for file data, by the kernel (`preadv` into the guest's buffers);
//! - [`FsBackend`]: the `VhostUserBackend` of one connection;
//! - [`connection_session`]: the FUSE session of one connection, with its
//!   [`VhostOutbound`]; [`guest_image_share`]: a share over an image in
//!   guest memory;
//! - [`serve`]: the listening socket, one fresh session per frontend,
//!   signals.
//!
//! Trusts the rust-vmm crates for the vhost-user control plane and guest
//! memory bounds; trusts nothing the guest puts in the virtqueues. Owns
//! the listening socket (removed on exit) and the per-connection session.
//! System calls go through [`crate::os`].
#![forbid(unsafe_code)]

mod backend;
pub mod chain;
pub mod config;
mod daemon;
pub mod error;
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzzing;
mod outbound;
mod pool;
mod reply;
mod session;
mod writer;

pub use backend::{DeviceOptions, FsBackend, GuestMem, MAX_REQUEST};
pub use daemon::{bind, serve, Bound, Listen, ServeOptions, ShareFor};
pub use error::{
    ChainError, DaemonError, DeviceError, FdProblem, ReplyTooLong, TagError, VhostUserError,
};
pub use outbound::VhostOutbound;
pub use session::{connection_session, connection_session_with, guest_image_share, GuestImage};
pub use writer::GuestWriter;
