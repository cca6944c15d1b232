//! The system calls of the sandbox: namespaces and the root directory
//! (unshare, pivot_root), the supervising parent (fork, waitpid, kill,
//! dying of a child's signal), capabilities and `no_new_privs`.
//!
//! Nothing here decides policy; [`crate::sandbox`] does, in safe code.
//! Mounting goes through [`super::mount`], chroot and directories through
//! std.

use std::ffi::CStr;
use std::io;

use super::check;
use super::signal::SignalSet;

/// A process id.
pub type Pid = libc::pid_t;

/// Which side of a [`fork`] we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The parent, with the child's pid.
    Parent(Pid),
    /// The child.
    Child,
}

/// Forks. Only a single-threaded process may (another thread could hold a
/// lock, e.g. the allocator's, that nobody would release in the child): it
/// fails (`Other`) when more than one thread is running.
pub fn fork() -> io::Result<Forked> {
    let threads = super::proc::thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "cannot fork with {threads} threads running"
        )));
    }
    // SAFETY: the process has one thread (checked above; only this thread
    // could start another), so the child is a complete copy of it with no
    // lock held by a thread that does not exist there.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Moves the calling thread into new namespaces (`CLONE_NEW*` flags); a
/// new pid namespace takes effect for children forked afterwards.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags only and touches no memory of ours.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Makes `new_root` the root mount of this mount namespace and moves the
/// old root to `put_old` (under `new_root`).
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated strings borrowed for the whole call;
    // the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for `sig` when the parent (the thread that forked us) exits.
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    let sig = libc::c_ulong::try_from(sig).map_err(io::Error::other)?;
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) }).map(drop)
}

/// Sets `no_new_privs`: execve can never grant privileges again (setuid
/// bits and file capabilities are ignored). Inherited by threads started
/// afterwards; cannot be unset.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers and touches no memory.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(libc::c_int),
}

/// Reaps child `pid` if it has ended (waiting for it unless `nohang`);
/// `None` when `nohang` and it is still running.
pub fn wait_child(pid: Pid, nohang: bool) -> io::Result<Option<Exit>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is valid for one write for the whole call.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if rc == 0 {
            return Ok(None);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some(Exit::Code(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some(Exit::Signal(libc::WTERMSIG(status))));
        }
        // Stopped or continued (not asked for): keep waiting.
    }
}

/// Sends `sig` to process `pid`.
pub fn send_signal(pid: Pid, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers and touches no memory.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Ends this process the way a child ended: with its exit status, or
/// killed by the same signal (without a core dump of our own: we did not
/// crash). Runs no destructors.
pub fn exit_like(how: Exit) -> ! {
    if let Exit::Signal(sig) = how {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct borrowed for the call;
        // signal() with SIG_DFL installs no handler of ours; unblocking
        // and raising touch only the initialised set. If the signal does
        // not end the process (its default is to ignore it), we fall
        // through to `_exit`.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
        }
        let _ = SignalSet::new(&[sig]).unblock();
        // SAFETY: raise only sends a signal to this thread.
        unsafe { libc::raise(sig) };
    }
    let code = match how {
        Exit::Code(c) => c,
        Exit::Signal(s) => 128_i32.saturating_add(s),
    };
    // SAFETY: _exit ends the process at once; nothing of ours runs after.
    unsafe { libc::_exit(code) }
}

/// Capability numbers (`CAP_*` of linux/capability.h) this module names.
pub mod cap {
    /// CAP_SYS_ADMIN: mount and umount, among much else.
    pub const SYS_ADMIN: u32 = 21;
}

/// What [`drop_capabilities`] managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The bounding set was cleared too (it needs CAP_SETPCAP; without it,
    /// `no_new_privs` is what keeps execve from granting anything).
    pub bounding: bool,
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one per 32 capabilities.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, two `CapData`.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability of the calling thread except `keep` (which stay
/// permitted and effective): the bounding set (when CAP_SETPCAP allows),
/// the ambient set, then the permitted, effective and inheritable sets.
/// Threads started afterwards inherit the result; call it while the
/// process has one thread, or each thread keeps its own.
pub fn drop_capabilities(keep: &[u32]) -> io::Result<Dropped> {
    let kept = |c: u32| keep.contains(&c);
    let mut bounding = true;
    for c in 0..64u32 {
        let arg = libc::c_ulong::from(c);
        // SAFETY: PR_CAPBSET_READ takes an integer and touches no memory;
        // past the last capability it fails with EINVAL.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, arg, 0, 0, 0) };
        if r < 0 {
            break;
        }
        if r == 0 || kept(c) {
            continue;
        }
        // SAFETY: as above, for PR_CAPBSET_DROP.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, arg, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
            bounding = false;
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integers and touches no
    // memory. Kernels before 4.3 have no ambient set (EINVAL): nothing to
    // clear there.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    for &c in keep {
        let (word, bit) = (usize::try_from(c / 32).unwrap_or(usize::MAX), c % 32);
        if let Some(d) = data.get_mut(word) {
            d.effective |= 1 << bit;
            d.permitted |= 1 << bit;
        }
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: the header and both data structs (what version 3 reads) are
    // live locals borrowed for the whole call; capset only reads them
    // (the header's version is written back only on a version mismatch,
    // into our own struct).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Dropped { bounding })
}

/// Makes one system call that no allow-list of ours has
/// (`personality(0xffffffff)`, which only reads the current persona), for
/// the tests of the seccomp filter. Its result, or the error.
pub fn forbidden_syscall() -> io::Result<i64> {
    // SAFETY: personality with 0xffffffff queries the persona and changes
    // nothing; no memory is passed.
    let rc = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_wait_child_of_nobody_fails_with_echild() {
        let e = wait_child(i32::MAX, true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECHILD));
    }

    #[test]
    fn test_fork_refuses_with_threads_running() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(fork().is_err());
        drop(tx);
        let _ = t.join();
    }

    #[test]
    fn test_forbidden_syscall_without_a_filter_answers() {
        // Unfiltered, personality(0xffffffff) returns the current persona.
        assert!(forbidden_syscall().is_ok());
    }
}
