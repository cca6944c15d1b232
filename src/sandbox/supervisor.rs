//! The fork into the sandbox and the supervisor the parent becomes: it
//! waits for the child, handles stop signals as told, cleans up after the
//! child and exits the way it did.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use super::{OnStop, SandboxError, Supervision};
use crate::os;
use crate::os::sandbox::{Exit, Forked, Pid};
use crate::os::signal::SignalSet;

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
    let old_mask = set
        .block_saving()
        .map_err(super::setup_err("block signals"))?;
    let restore = |e: SandboxError| {
        let _ = old_mask.set_mask();
        e
    };
    // Nothing buffered is written twice.
    let _ = io::stdout().flush();
    // The child learns that the parent died before it asked for
    // PR_SET_PDEATHSIG: the pipe then has no writer left.
    let (lifeline_r, lifeline_w) = os::fd::pipe(true)
        .map_err(super::setup_err("make a pipe"))
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
        .map_err(super::setup_err("fork"))
        .map_err(restore)?
    {
        Forked::Parent(child) => {
            drop(lifeline_r);
            supervise(child, set, sup, lifeline_w)
        }
        Forked::Child => {
            drop(lifeline_w);
            os::sandbox::set_parent_death_signal(libc::SIGKILL)
                .map_err(super::setup_err("ask for a parent-death signal"))?;
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
                .map_err(super::setup_err("restore the signal mask"))?;
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
