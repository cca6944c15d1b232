//! Why the sandbox could not be entered.

use std::io;
use std::path::PathBuf;

/// Why the sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// unshare(2) refused.
    #[error("cannot create the sandbox's {what} namespace (where namespaces cannot be made, e.g. in a container without CAP_SYS_ADMIN, run with --sandbox chroot or --sandbox none)")]
    Namespace {
        /// Which namespaces.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// chroot(2) or the empty directory failed.
    #[error("cannot chroot into an empty directory (where chroot is not allowed, run with --sandbox none)")]
    Chroot(#[source] io::Error),
    /// A step of building the sandbox failed.
    #[error("sandbox: cannot {step}")]
    Setup {
        /// What was being done.
        step: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A directory that must stay visible cannot be.
    #[error("cannot keep {path} visible in the sandbox: {why}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Dropping capabilities failed.
    #[error("cannot drop capabilities")]
    Capabilities(#[source] io::Error),
    /// Building or installing the seccomp filter failed.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

pub(super) fn setup_err(step: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let step = step.into();
    move |source| SandboxError::Setup { step, source }
}
