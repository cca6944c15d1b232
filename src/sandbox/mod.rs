//! The sandbox the daemon enters once its images, store and sockets are
//! open, before it serves a single request (docs/sandbox.md):
//!
//! - [`Mode::Namespace`] (the default as root): the process forks once; the
//!   parent stays outside as a small supervisor and the child, PID 1 of a
//!   new pid namespace, enters new mount, network and IPC namespaces whose
//!   root is an empty read-only tmpfs holding only `/proc` (pids only) and
//!   the directories it must still open (`--allow-dir`, read-only; the
//!   content store, read-write), each at its own path;
//! - [`Mode::Chroot`]: the same fork, then a chroot into an empty directory
//!   that is removed at once (no namespaces, so no directory can be kept);
//! - [`Mode::None`]: no fork, no new root (for containers that can do
//!   neither).
//!
//! Then, in every mode: capabilities dropped (all of them, except
//! CAP_SYS_ADMIN for a `mount --sandbox none` that unmounts itself),
//! `no_new_privs`, and the seccomp allow-list of [`seccomp`].
//!
//! The supervisor forwards stop signals to the child (or runs the caller's
//! stop action, e.g. unmounting, which needs the host's view and
//! capabilities), removes the sockets it was given once the child has
//! ended, and exits the way the child did (the same status, or killed by
//! the same signal).
//!
//! Trusts nothing from requests: it runs before any.
#![forbid(unsafe_code)]

mod error;
mod root;
pub mod seccomp;
mod supervisor;

use std::io::{self, Write};
use std::path::PathBuf;

pub use error::SandboxError;
pub use seccomp::{Profile, Verdict};
pub use supervisor::{OnStop, Supervision};

use error::setup_err;
use root::Keep;

use crate::os;

/// Environment variable of the seccomp tests: when set to `1`, the daemon
/// makes a system call that is on no allow-list right after installing the
/// filter (and says so on stderr), so that `kill` must end it with SIGSYS
/// and `log` must log it.
pub const TEST_FORBIDDEN_SYSCALL_ENV: &str = "EROFS_VIRTIOFSD_TEST_FORBIDDEN_SYSCALL";

/// Where the daemon runs (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// New mount, pid, network and IPC namespaces; root pivoted to an empty
    /// tmpfs.
    Namespace,
    /// chroot into an empty directory; no namespaces.
    Chroot,
    /// No isolation of the filesystem or processes.
    None,
}

/// The seccomp filter (`--seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seccomp {
    /// Calls off the list kill the process (SIGSYS).
    Kill,
    /// Calls off the list are allowed and logged (kernel audit log).
    Log,
    /// No filter.
    None,
}

/// The sandbox of one daemon.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where it runs.
    pub mode: Mode,
    /// Its seccomp filter.
    pub seccomp: Seccomp,
    /// Directories kept visible read-only, at their own path: where images
    /// added at runtime may come from (`--allow-dir`).
    pub read_only: Vec<PathBuf>,
    /// Directories kept visible read-write, at their own path: the content
    /// store.
    pub writable: Vec<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: default_mode(),
            seccomp: Seccomp::Kill,
            read_only: Vec::new(),
            writable: Vec::new(),
        }
    }
}

/// The default `--sandbox`: namespaces as root (as virtiofsd), none
/// otherwise (without CAP_SYS_ADMIN no namespace or mount can be made).
pub fn default_mode() -> Mode {
    if os::proc::euid() == 0 {
        Mode::Namespace
    } else {
        Mode::None
    }
}

/// What [`Options::enter`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    /// Where the process now runs.
    pub mode: Mode,
    /// Its filter.
    pub seccomp: Seccomp,
    /// Whether the capability bounding set was cleared too.
    pub bounding_cleared: bool,
}

impl Options {
    /// The directories to keep, each absolute (as given, and also its
    /// canonical path when that differs) and checked to be a directory.
    fn keeps(&self) -> Result<Vec<Keep>, SandboxError> {
        let mut out: Vec<Keep> = Vec::new();
        let dirs = self
            .read_only
            .iter()
            .map(|p| (p, false))
            .chain(self.writable.iter().map(|p| (p, true)));
        for (p, writable) in dirs {
            let bad = |why: String| SandboxError::Dir {
                path: p.clone(),
                why,
            };
            let canon = std::fs::canonicalize(p).map_err(|e| bad(e.to_string()))?;
            if !canon.is_dir() {
                return Err(bad("not a directory".into()));
            }
            let given = std::path::absolute(p).map_err(|e| bad(e.to_string()))?;
            for path in [given, canon] {
                match out.iter_mut().find(|k| k.path == path) {
                    Some(k) => k.writable |= writable,
                    None => out.push(Keep { path, writable }),
                }
            }
        }
        Ok(out)
    }

    /// Enters the sandbox: call it once everything the daemon opens by path
    /// at start is open, while the process still has one thread, and start
    /// threads only afterwards. With [`Mode::Namespace`] and
    /// [`Mode::Chroot`] the process forks; this returns only in the child
    /// (the parent supervises it as `sup` says and exits the way it does).
    pub fn enter(&self, profile: Profile, sup: Supervision) -> Result<Entered, SandboxError> {
        let keeps = self.keeps()?;
        let mut profile = profile;
        let mut keep_caps: &[u32] = &[];
        match self.mode {
            Mode::None => {
                if matches!(sup.on_stop, OnStop::Run(_)) {
                    // Nobody outside: the process unmounts itself.
                    profile.unmounts = true;
                    keep_caps = &[os::sandbox::cap::SYS_ADMIN];
                }
            }
            Mode::Chroot => {
                if let Some(k) = keeps.first() {
                    return Err(SandboxError::Dir {
                        path: k.path.clone(),
                        why: "--sandbox chroot keeps no directory visible; use --sandbox namespace"
                            .into(),
                    });
                }
                supervisor::fork_supervised(false, sup)?;
                root::chroot_empty()?;
            }
            Mode::Namespace => {
                supervisor::fork_supervised(true, sup)?;
                root::enter_namespaces(&keeps)?;
            }
        }
        let dropped =
            os::sandbox::drop_capabilities(keep_caps).map_err(SandboxError::Capabilities)?;
        os::sandbox::set_no_new_privs().map_err(setup_err("set no_new_privs"))?;
        match self.seccomp {
            Seccomp::Kill => seccomp::install(profile, Verdict::Kill)?,
            Seccomp::Log => seccomp::install(profile, Verdict::Log)?,
            Seccomp::None => {}
        }
        if std::env::var_os(TEST_FORBIDDEN_SYSCALL_ENV).is_some_and(|v| v == "1") {
            let r = os::sandbox::forbidden_syscall();
            let _ = writeln!(
                io::stderr(),
                "erofs-virtiofsd: test: the forbidden system call returned {r:?}"
            );
        }
        let entered = Entered {
            mode: self.mode,
            seccomp: self.seccomp,
            bounding_cleared: dropped.bounding,
        };
        // Debug, not info: a healthy daemon is silent at the default level
        // (tests hold mounts to an empty stderr).
        log::debug!(
            "sandbox: {:?}, seccomp {:?}, capabilities dropped{}",
            entered.mode,
            entered.seccomp,
            if keep_caps.is_empty() {
                ""
            } else {
                " but CAP_SYS_ADMIN (to unmount)"
            }
        );
        Ok(entered)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn test_keeps_are_absolute_directories_both_as_given_and_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let opts = Options {
            mode: Mode::None,
            seccomp: Seccomp::None,
            read_only: vec![link.clone()],
            writable: vec![real.clone()],
        };
        let keeps = opts.keeps().unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        let find = |p: &Path| keeps.iter().find(|k| k.path == p).map(|k| k.writable);
        assert_eq!(find(&link), Some(false));
        assert_eq!(find(&real), Some(true), "{keeps:?}");
        assert_eq!(keeps.len(), 2);
    }

    #[test]
    fn test_keeps_refuse_files_and_missing_paths() {
        let file = tempfile::NamedTempFile::new().unwrap();
        for p in [file.path().to_path_buf(), PathBuf::from("/no/such/dir/x")] {
            let opts = Options {
                mode: Mode::None,
                seccomp: Seccomp::None,
                read_only: vec![p.clone()],
                writable: Vec::new(),
            };
            assert!(
                matches!(opts.keeps(), Err(SandboxError::Dir { .. })),
                "{p:?}"
            );
        }
    }
}
