//! `--sandbox`, `--seccomp` and `--allow-dir`, shared by serve and mount.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::sandbox::{self, Mode, Options, Seccomp};

/// `--sandbox` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxArg {
    /// New mount, pid, network and IPC namespaces; the root an empty
    /// read-only tmpfs with only /proc and the --allow-dir directories.
    Namespace,
    /// chroot into an empty directory, no namespaces (keeps no directory:
    /// no --allow-dir).
    Chroot,
    /// Neither (for containers that can make no namespace).
    None,
}

/// `--seccomp` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeccompArg {
    /// Kill the process at a system call off the allow-list.
    Kill,
    /// Allow it, logged in the kernel's audit log (type=1326).
    Log,
    /// No filter.
    None,
}

/// How the daemon is isolated once its images and sockets are open
/// (docs/sandbox.md).
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Isolation once the images and sockets are open: `namespace`,
    /// `chroot` or `none`. Default: namespace as root, none otherwise.
    /// Capabilities are dropped in every mode.
    #[arg(long, value_enum, value_name = "MODE")]
    sandbox: Option<SandboxArg>,
    /// Seccomp allow-list of the daemon's system calls: `kill` a process
    /// that makes another, `log` it, or `none`.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SeccompArg::Kill)]
    seccomp: SeccompArg,
    /// Directory whose images may be opened after start (images added
    /// through the API), kept visible read-only at the same path in the
    /// sandbox; repeat for several.
    #[arg(long = "allow-dir", value_name = "DIR")]
    allow_dirs: Vec<PathBuf>,
}

impl SandboxArgs {
    /// The sandbox these arguments ask for.
    pub fn options(&self) -> Options {
        Options {
            mode: match self.sandbox {
                Some(SandboxArg::Namespace) => Mode::Namespace,
                Some(SandboxArg::Chroot) => Mode::Chroot,
                Some(SandboxArg::None) => Mode::None,
                None => sandbox::default_mode(),
            },
            seccomp: match self.seccomp {
                SeccompArg::Kill => Seccomp::Kill,
                SeccompArg::Log => Seccomp::Log,
                SeccompArg::None => Seccomp::None,
            },
            read_only: self.allow_dirs.clone(),
            writable: Vec::new(),
        }
    }
}
