//! The API's errors: what the daemon answers a request it cannot fulfil
//! ([`ControlError`]), the body every error response carries
//! ([`ErrorBody`]), and why the server could not start ([`ApiError`]).

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Why the daemon refused or failed a request; each maps to an HTTP status
/// and a `code` in the error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed or asks for something impossible (400,
    /// `BAD_REQUEST`).
    #[error("{0}")]
    BadRequest(String),
    /// No such image (404, `NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// An image of that name is already served (409, `ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// A bound was reached, e.g. the most images at once (409,
    /// `LIMIT_REACHED`).
    #[error("{0}")]
    LimitReached(String),
    /// The image cannot be opened or is not a valid EROFS image (422,
    /// `UNPROCESSABLE_IMAGE`).
    #[error("{0}")]
    Unprocessable(String),
    /// Not supported by this daemon or in its current mode (501,
    /// `NOT_SUPPORTED`).
    #[error("{0}")]
    Unsupported(String),
    /// Not now: starting or shutting down (503, `UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the daemon itself (500, `INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::BadRequest(_) => 400,
            ControlError::NotFound(_) => 404,
            ControlError::AlreadyExists(_) | ControlError::LimitReached(_) => 409,
            ControlError::Unprocessable(_) => 422,
            ControlError::Unsupported(_) => 501,
            ControlError::Unavailable(_) => 503,
            ControlError::Internal(_) => 500,
        }
    }

    /// The `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::BadRequest(_) => "BAD_REQUEST",
            ControlError::NotFound(_) => "NOT_FOUND",
            ControlError::AlreadyExists(_) => "ALREADY_EXISTS",
            ControlError::LimitReached(_) => "LIMIT_REACHED",
            ControlError::Unprocessable(_) => "UNPROCESSABLE_IMAGE",
            ControlError::Unsupported(_) => "NOT_SUPPORTED",
            ControlError::Unavailable(_) => "UNAVAILABLE",
            ControlError::Internal(_) => "INTERNAL",
        }
    }
}

/// The body of every error response, as nydusd sends it:
/// `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, upper-case identifier of the kind of error.
    pub code: String,
    /// What went wrong, for a human.
    pub message: String,
}

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Another process answers on the socket path.
    #[error("API socket {}: another process is listening on it", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket (it is left alone).
    #[error("API socket {}: exists and is not a socket", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Binding or preparing the socket failed.
    #[error("API socket {}: {source}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The server's runtime or thread could not be started.
    #[error("cannot start the API server: {0}")]
    Start(#[source] io::Error),
}
