//! The fork into the sandbox and the supervisor the parent becomes: it
//! waits for the child, handles stop signals as told, cleans up after the
//! child and exits the way it did.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::{setup_err, SandboxError};
use crate::os;
use crate::os::sandbox::{Exit, Forked, Pid};
use crate::os::signal::SignalSet;

/// What the supervisor does on a stop signal (SIGTERM, SIGINT, SIGHUP,
/// SIGQUIT).
pub enum OnStop {
    /// Send it on to the sandboxed child, which handles it.
    Forward,
    /// Run this outside the sandbox (e.g. unmount); also run when the child
    /// ends with a failure or a signal. With [`super::Mode::None`] there is no
    /// supervisor: the process must do it itself, and keeps CAP_SYS_ADMIN
    /// for it.
    Run(Box<dyn FnMut() + Send>),
}

impl std::fmt::Debug for OnStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnStop::Forward => "Forward",
            OnStop::Run(_) => "Run(..)",
        })
    }
}

/// A socket file to remove once the sandboxed child has ended (it cannot
/// see it), if it is still the one there when the sandbox was entered.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    ident: (u64, u64),
}

impl SocketFile {
    fn remove_if_ours(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.file_type().is_socket() && (m.dev(), m.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// What the supervisor outside the sandbox does.
#[derive(Debug)]
pub struct Supervision {
    pub(super) on_stop: OnStop,
    sockets: Vec<SocketFile>,
    /// SIGHUP is not a stop signal: it goes to the child (which reopens
    /// its log file).
    forward_hup: bool,
}

impl Supervision {
    /// Stop signals are forwarded to the child.
    pub fn forward() -> Self {
        Supervision {
            on_stop: OnStop::Forward,
            sockets: Vec::new(),
            forward_hup: false,
        }
    }

    /// Stop signals run `f` outside the sandbox.
    pub fn run_on_stop(f: impl FnMut() + Send + 'static) -> Self {
        Supervision {
            on_stop: OnStop::Run(Box::new(f)),
            sockets: Vec::new(),
            forward_hup: false,
        }
    }

    /// With `on`, SIGHUP is sent on to the child whatever [`OnStop`] says
    /// (the child reopens its log file on it).
    pub fn forward_sighup(mut self, on: bool) -> Self {
        self.forward_hup = on;
        self
    }

    /// Also removes the socket at `path` (if there is one now) once the
    /// child has ended.
    pub fn remove_on_exit(mut self, path: Option<&Path>) -> Self {
        if let Some(path) = path {
            if let Ok(m) = std::fs::symlink_metadata(path) {
                if m.file_type().is_socket() {
                    self.sockets.push(SocketFile {
                        path: path.to_path_buf(),
                        ident: (m.dev(), m.ino()),
                    });
                }
            }
        }
        self
    }
}

/// The signals the supervisor acts on: stop signals, and SIGCHLD.
const SIGNALS: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGCHLD,
];

/// Forks (first moving children into a new pid namespace when `new_pid_ns`):
/// returns in the child; the parent supervises it and never returns.
pub(super) fn fork_supervised(new_pid_ns: bool, sup: Supervision) -> Result<(), SandboxError> {
    let set = SignalSet::new(&SIGNALS);
    // Blocked before the fork, so that none is lost (an unblocked SIGCHLD
    // is discarded) or kills the parent before it waits for them.
    let old_mask = set.block_saving().map_err(setup_err("block signals"))?;
    let restore = |e: SandboxError| {
        let _ = old_mask.set_mask();
        e
    };
    // Nothing buffered is written twice.
    let _ = io::stdout().flush();
    // The child learns that the parent died before it asked for
    // PR_SET_PDEATHSIG: the pipe then has no writer left.
    let (lifeline_r, lifeline_w) = os::fd::pipe(true)
        .map_err(setup_err("make a pipe"))
        .map_err(restore)?;
    if new_pid_ns {
        os::sandbox::unshare(libc::CLONE_NEWPID)
            .map_err(|source| SandboxError::Namespace {
                what: "pid",
                source,
            })
            .map_err(restore)?;
    }
    match os::sandbox::fork()
        .map_err(setup_err("fork"))
        .map_err(restore)?
    {
        Forked::Parent(child) => {
            drop(lifeline_r);
            supervise(child, set, sup, lifeline_w)
        }
        Forked::Child => {
            drop(lifeline_w);
            os::sandbox::set_parent_death_signal(libc::SIGKILL)
                .map_err(setup_err("ask for a parent-death signal"))?;
            let mut b = [0u8; 1];
            if let Ok(0) = os::fd::read(lifeline_r.as_raw_fd(), &mut b) {
                return Err(SandboxError::Setup {
                    step: "start".into(),
                    source: io::Error::other("the supervising parent is gone"),
                });
            }
            drop(lifeline_r);
            old_mask
                .set_mask()
                .map_err(setup_err("restore the signal mask"))?;
            Ok(())
        }
    }
}

/// The parent's life: until the child ends, act on stop signals; then
/// clean up and exit like the child.
fn supervise(child: Pid, set: SignalSet, mut sup: Supervision, _lifeline: OwnedFd) -> ! {
    let exit = loop {
        let Ok(sig) = set.wait() else { continue };
        if sig == libc::SIGCHLD {
            match os::sandbox::wait_child(child, true) {
                Ok(Some(exit)) => break exit,
                Ok(None) => continue,
                Err(e) => {
                    let _ = writeln!(
                        io::stderr(),
                        "erofs-virtiofsd: supervisor: waiting for the sandboxed daemon: {e}"
                    );
                    break Exit::Code(1);
                }
            }
        }
        if sig == libc::SIGHUP && sup.forward_hup {
            let _ = os::sandbox::send_signal(child, sig);
            continue;
        }
        match &mut sup.on_stop {
            // The child may be gone already (its SIGCHLD comes next).
            OnStop::Forward => {
                let _ = os::sandbox::send_signal(child, sig);
            }
            OnStop::Run(f) => f(),
        }
    };
    if exit != Exit::Code(0) {
        if let OnStop::Run(f) = &mut sup.on_stop {
            f();
        }
    }
    for s in &sup.sockets {
        s.remove_if_ours();
    }
    os::sandbox::exit_like(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_supervision_records_only_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let sup = Supervision::forward()
            .remove_on_exit(Some(&sock))
            .remove_on_exit(Some(&file))
            .remove_on_exit(None);
        assert_eq!(sup.sockets.len(), 1);
        // A socket replaced by another one is not removed.
        std::fs::remove_file(&sock).unwrap();
        let _l2 = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        sup.sockets[0].remove_if_ours();
        assert!(sock.exists());
    }
}
