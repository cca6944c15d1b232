//! The HTTP API socket: images added and removed at runtime, the daemon's
//! state, metrics and log reopening, in the shape of nydusd's API (which
//! Kata's runtimes drive): JSON over HTTP/1.1 on a unix socket.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /api/v1/daemon` | 200, state `RUNNING`, version, images |
//! | `POST /api/v1/mount?mountpoint=/NAME` | 204; body `{"source", "fs_type": "erofs", "config"}` |
//! | `DELETE /api/v1/mount?mountpoint=/NAME` | 204 |
//! | `GET /api/v1/metrics[?id=NAME]` | 200, JSON [`MetricsSnapshot`] (or one image's) |
//! | `GET /metrics` | 200, Prometheus text format |
//! | `PUT /api/v1/daemon/logs/reopen` | 204 |
//!
//! Errors carry `{"code": "...", "message": "..."}` with a 4xx or 5xx
//! status. docs/api.md has the details.
//!
//! - [`Control`]: what the daemon implements for the API;
//! - [`serve_api`]: binds the socket and serves it in background threads
//!   ([`ApiSocket`]: the two steps apart, around a sandbox);
//! - [`router::Router`]: requests to replies after HTTP parsing (what the
//!   fuzz target drives);
//! - [`types`]: image names, mount requests and their config, strictly
//!   parsed.
//!
//! Trusts: nothing a client sends. Every request is bounded (head, body,
//! time, connections) and gets a reply or a closed connection; no input
//! reaches the daemon except through [`Control`], as checked values.
#![forbid(unsafe_code)]

mod error;
pub mod router;
mod server;
#[cfg(any(test, feature = "test-utils"))]
pub mod testutil;
pub mod types;

pub use error::{ApiError, ControlError, ErrorBody};
pub use server::{serve_api, serve_api_with, ApiHandle, ApiOptions, ApiSocket, MAX_HEAD};
pub use types::{
    BuildInfo, DaemonState, DaemonStatus, ImageConfig, ImageInfo, ImageName, MountSpec,
};

use crate::metrics::MetricsSnapshot;

/// What the daemon does for the API. Called from the API's handler threads:
/// [`Control::mount`], [`Control::umount`] and [`Control::reopen_logs`] one
/// at a time, the others at any time, also during those.
pub trait Control: Send + Sync {
    /// The daemon's state and images.
    fn daemon(&self) -> DaemonStatus;

    /// Adds image `name` as the share's top-level directory `/NAME`.
    /// [`ControlError::AlreadyExists`] if the name is taken,
    /// [`ControlError::Unprocessable`] if the image cannot be opened.
    fn mount(&self, name: &ImageName, spec: MountSpec) -> Result<(), ControlError>;

    /// Removes image `name`; [`ControlError::NotFound`] if there is none.
    fn umount(&self, name: &ImageName) -> Result<(), ControlError>;

    /// The metrics now (e.g. [`crate::metrics::Metrics::snapshot`]).
    fn metrics(&self) -> MetricsSnapshot;

    /// Reopens the log file (as on SIGHUP).
    fn reopen_logs(&self) -> Result<(), ControlError>;
}
