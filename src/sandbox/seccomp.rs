//! The seccomp allow-list: every system call the daemon makes once it
//! serves, by group, and the filter built from it with rust-vmm's
//! `seccompiler`.
//!
//! Policy: a call is on the list only if a serving path makes it (found
//! with `strace -f` over the test suites and checked with `--seccomp log`,
//! see docs/sandbox.md); setup calls (opening images, binding sockets,
//! mounting, the sandbox's own calls) happen before the filter and are not
//! listed. Arguments are checked where that closes a real door: `clone`
//! only makes threads (no new processes or namespaces), memory is never
//! made executable, `tgkill` and `prctl` only reach this process. Anything
//! else is `SECCOMP_RET_KILL_PROCESS` with `--seccomp kill` or logged
//! (`SECCOMP_RET_LOG`) with `--seccomp log`.
//!
//! One filter for the whole process (`SECCOMP_FILTER_FLAG_TSYNC`), plus a
//! second one that answers `clone3` with `ENOSYS`: its flags are in memory
//! where a filter cannot look, and glibc then falls back to `clone`, whose
//! flags it can.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::error::SandboxError;

/// What the process serves after the filter is on: selects the groups of
/// the list beyond the common ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Profile {
    /// vhost-user: guest memory mappings, the vring eventfds, messages with
    /// descriptors on the frontend socket.
    pub vhost: bool,
    /// /dev/fuse: replies spliced from the image through pipes.
    pub dev_fuse: bool,
    /// FUSE over io_uring queues.
    pub io_uring: bool,
    /// The process unmounts its own FUSE mount on a stop signal (no
    /// supervisor outside does it: `--sandbox none`).
    pub unmounts: bool,
    /// /dev/fuse passthrough of content-store entries: the two backing-file
    /// ioctls (and CAP_SYS_ADMIN, which the kernel wants for them).
    pub passthrough: bool,
}

/// The filter's verdict for calls off the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `SECCOMP_RET_KILL_PROCESS`.
    Kill,
    /// `SECCOMP_RET_LOG`: allowed, and logged by the kernel's audit.
    Log,
}

/// A rule list that allows a call whatever its arguments.
fn any() -> Vec<SeccompRule> {
    Vec::new()
}

/// One condition: argument `arg` compared with `op` to `value`.
fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| SandboxError::Seccomp(e.to_string()))
}

/// A rule list allowing the call when argument `arg` (a 32-bit int) is one
/// of `values`.
fn arg_in(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SandboxError> {
    values
        .iter()
        .map(|&v| {
            SeccompRule::new(vec![cond(arg, Len::Dword, Op::Eq, v)?])
                .map_err(|e| SandboxError::Seccomp(e.to_string()))
        })
        .collect()
}

/// A rule list allowing the call when argument `arg` has none of the bits
/// of `mask` set.
fn arg_without(arg: u8, mask: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    Ok(vec![SeccompRule::new(vec![cond(
        arg,
        Len::Qword,
        Op::MaskedEq(mask),
        0,
    )?])
    .map_err(|e| SandboxError::Seccomp(e.to_string()))?])
}

/// Adds `calls`, each allowed whatever its arguments.
fn allow(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, calls: &[libc::c_long]) {
    for &c in calls {
        rules.insert(c, any());
    }
}

/// The flags glibc's pthread_create passes to clone (and nothing else may).
const THREAD_CLONE_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

/// The allow-list for `profile`, in a process whose pid (as it sees it) is
/// `pid`.
pub fn rules(profile: Profile, pid: u32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let mut r = BTreeMap::new();

    // Memory: the allocator, thread stacks, decoded-extent buffers, the
    // guest's RAM mappings (shared, from the frontend's descriptors).
    // Nothing may become executable.
    allow(
        &mut r,
        &[
            libc::SYS_brk,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_madvise,
        ],
    );
    let no_exec = u64::try_from(libc::PROT_EXEC).unwrap_or(4);
    r.insert(libc::SYS_mmap, arg_without(2, no_exec)?);
    r.insert(libc::SYS_mprotect, arg_without(2, no_exec)?);

    // Threads: the vhost-user vring and worker threads, /dev/fuse workers,
    // the page-cache pusher, the API's runtime and handler threads, the
    // signal thread. clone only with exactly the thread flags of glibc's
    // pthread_create (no fork, no namespaces); clone3 is listed so that the
    // second filter's ENOSYS is what it gets (a kill here would win).
    r.insert(
        libc::SYS_clone,
        vec![
            SeccompRule::new(vec![cond(0, Len::Qword, Op::Eq, THREAD_CLONE_FLAGS)?])
                .map_err(|e| SandboxError::Seccomp(e.to_string()))?,
        ],
    );
    allow(
        &mut r,
        &[
            libc::SYS_clone3,
            libc::SYS_futex,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_gettid,
            libc::SYS_exit,
            libc::SYS_exit_group,
            // available_parallelism, and glibc sizing its malloc arenas.
            libc::SYS_sched_getaffinity,
            // Spin-then-yield fallbacks of locks.
            libc::SYS_sched_yield,
        ],
    );
    // Naming the new thread (std does it with PR_SET_NAME), nothing else.
    r.insert(libc::SYS_prctl, arg_in(0, &[libc::PR_SET_NAME as u64])?);

    // Signals: the signal thread's sigwait, the masks of new threads,
    // glibc's lazily installed internal handlers, the alternate stack std
    // gives every thread for its stack-overflow report, returning from a
    // handler, and abort() (tgkill of this process only).
    allow(
        &mut r,
        &[
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigtimedwait,
            libc::SYS_rt_sigaction,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            libc::SYS_getpid,
        ],
    );
    r.insert(
        libc::SYS_tgkill,
        vec![
            SeccompRule::new(vec![cond(0, Len::Dword, Op::Eq, u64::from(pid))?])
                .map_err(|e| SandboxError::Seccomp(e.to_string()))?,
        ],
    );

    // Time and randomness: the vDSO's fallbacks, HashMap seeds.
    allow(
        &mut r,
        &[
            libc::SYS_clock_gettime,
            libc::SYS_clock_getres,
            libc::SYS_gettimeofday,
            libc::SYS_getrandom,
        ],
    );

    // Descriptors: reading images (pread; preadv straight into guest
    // memory for vhost), replies and logs (write, writev), the store's
    // counters (pwrite), a block device's size (lseek), duplicating and
    // flags (fcntl), closing.
    allow(
        &mut r,
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_writev,
            libc::SYS_pread64,
            libc::SYS_preadv,
            libc::SYS_pwrite64,
            libc::SYS_lseek,
            libc::SYS_fcntl,
            libc::SYS_close,
        ],
    );

    // Opening images added at runtime (under --allow-dir) and their
    // devices: open, stat (statx; fstat and fstatat are its fallbacks),
    // and the RAM size for their default decode cache.
    allow(
        &mut r,
        &[
            libc::SYS_openat,
            libc::SYS_statx,
            libc::SYS_newfstatat,
            libc::SYS_fstat,
            libc::SYS_sysinfo,
        ],
    );

    // The content store: entries locked while used (flock), loaded into
    // tmp/ and published with link, synced on disks, touched on hits,
    // evicted and swept (unlink, directory listing), domain directories
    // made; entries re-opened through /proc/self/fd (openat above).
    allow(
        &mut r,
        &[
            libc::SYS_flock,
            libc::SYS_linkat,
            libc::SYS_unlinkat,
            libc::SYS_mkdirat,
            libc::SYS_getdents64,
            libc::SYS_fdatasync,
            libc::SYS_utimensat,
        ],
    );
    // x86_64's glibc calls these where other architectures have only the
    // *at forms.
    #[cfg(target_arch = "x86_64")]
    allow(&mut r, &[libc::SYS_unlink, libc::SYS_mkdir]);

    // Event loops and sockets, all made before the sandbox (no socket can
    // be made, bound or connected): the vhost-user epoll threads, frontend
    // messages with descriptors (recvmsg, sendmsg), the API's tokio reactor
    // accepting and answering (accept4, recvfrom, writev, shutdown).
    allow(
        &mut r,
        &[
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_eventfd2,
            libc::SYS_accept4,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_recvfrom,
            libc::SYS_shutdown,
        ],
    );
    #[cfg(target_arch = "x86_64")]
    allow(&mut r, &[libc::SYS_epoll_wait]);
    // `--syslog`: messages sent (send(2), which is sendto with no address)
    // on the datagram socket connected to syslog before the sandbox; with
    // an address it could reach another socket, so that is refused.
    r.insert(
        libc::SYS_sendto,
        vec![SeccompRule::new(vec![cond(4, Len::Qword, Op::Eq, 0)?])
            .map_err(|e| SandboxError::Seccomp(e.to_string()))?],
    );

    if profile.dev_fuse {
        // /dev/fuse: replies spliced from image files through a pipe per
        // worker (sized with fcntl).
        allow(&mut r, &[libc::SYS_splice, libc::SYS_pipe2]);
    }
    if profile.io_uring {
        // FUSE over io_uring: queue threads pinned to their CPU, submitting
        // and reaping on rings made before the sandbox (registration is a
        // ring command, not io_uring_register).
        allow(
            &mut r,
            &[libc::SYS_io_uring_enter, libc::SYS_sched_setaffinity],
        );
    }
    if profile.passthrough {
        // FUSE passthrough: OPEN of a stored file registers the entry as a
        // backing file on the /dev/fuse descriptor, RELEASE drops it. No
        // other ioctl.
        r.insert(
            libc::SYS_ioctl,
            arg_in(
                1,
                &[
                    crate::os::mount::FUSE_DEV_IOC_BACKING_OPEN,
                    crate::os::mount::FUSE_DEV_IOC_BACKING_CLOSE,
                ],
            )?,
        );
    }
    if profile.unmounts {
        // `mount --sandbox none`: the signal thread unmounts.
        allow(&mut r, &[libc::SYS_umount2]);
    }
    if profile.vhost {
        // DAX windows: the backend request channel the frontend hands over
        // (SET_BACKEND_REQ_FD) is checked to be a Unix stream socket
        // (getsockopt SO_DOMAIN, SO_TYPE); each mapped file's decoded
        // content goes into a memfd of its own (memfd_create, sized with
        // ftruncate), whose unmapped ranges are freed with
        // fallocate(PUNCH_HOLE).
        allow(
            &mut r,
            &[
                libc::SYS_getsockopt,
                libc::SYS_memfd_create,
                libc::SYS_ftruncate,
                libc::SYS_fallocate,
            ],
        );
    }
    // profile.vhost: otherwise nothing beyond the common groups (mmap of guest
    // memory, eventfds, recvmsg and sendmsg are there).
    Ok(r)
}

/// The target of the filters: the architecture we were built for.
fn arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        SandboxError::Seccomp(format!(
            "no seccomp filter for {} (x86_64, aarch64 and riscv64 only); use --seccomp none",
            std::env::consts::ARCH
        ))
    })
}

/// The two filters for `profile` in process `pid`: the allow-list, and the
/// one answering `clone3` with `ENOSYS`.
pub fn programs(
    profile: Profile,
    pid: u32,
    verdict: Verdict,
) -> Result<[BpfProgram; 2], SandboxError> {
    let arch = arch()?;
    let mismatch = match verdict {
        Verdict::Kill => SeccompAction::KillProcess,
        Verdict::Log => SeccompAction::Log,
    };
    let list = SeccompFilter::new(rules(profile, pid)?, mismatch, SeccompAction::Allow, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, any());
    let enosys = u32::try_from(libc::ENOSYS).unwrap_or(38);
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(enosys),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    Ok([list, clone3])
}

/// Installs the filters for `profile` on every thread of the process
/// (sets `no_new_privs`, which installing a filter needs).
pub fn install(profile: Profile, verdict: Verdict) -> Result<(), SandboxError> {
    let [list, clone3] = programs(profile, std::process::id(), verdict)?;
    for p in [&clone3, &list] {
        seccompiler::apply_filter_all_threads(p)
            .map_err(|e| SandboxError::Seccomp(format!("installing the filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rules_grow_with_the_profile() {
        let base = rules(Profile::default(), 1).unwrap();
        let fuse = rules(
            Profile {
                dev_fuse: true,
                io_uring: true,
                unmounts: true,
                ..Profile::default()
            },
            1,
        )
        .unwrap();
        for c in [
            libc::SYS_splice,
            libc::SYS_io_uring_enter,
            libc::SYS_umount2,
        ] {
            assert!(!base.contains_key(&c), "{c}");
            assert!(fuse.contains_key(&c), "{c}");
        }
    }

    #[test]
    fn test_no_process_or_privilege_calls_on_the_list() {
        let all = rules(
            Profile {
                vhost: true,
                dev_fuse: true,
                io_uring: true,
                unmounts: true,
                passthrough: false,
            },
            1,
        )
        .unwrap();
        for c in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_capset,
            libc::SYS_setuid,
            libc::SYS_open_by_handle_at,
            libc::SYS_bpf,
            libc::SYS_personality,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_register,
            libc::SYS_ioctl,
        ] {
            assert!(!all.contains_key(&c), "{c} is on the list");
        }
    }

    #[test]
    fn test_passthrough_allows_only_the_backing_ioctls() {
        let base = rules(Profile::default(), 1).unwrap();
        assert!(!base.contains_key(&libc::SYS_ioctl));
        let pt = rules(
            Profile {
                dev_fuse: true,
                passthrough: true,
                ..Profile::default()
            },
            1,
        )
        .unwrap();
        // Two rules (one per command), none allowing any argument.
        assert_eq!(pt[&libc::SYS_ioctl].len(), 2);
        let [list, _] = programs(
            Profile {
                passthrough: true,
                ..Profile::default()
            },
            1,
            Verdict::Kill,
        )
        .unwrap();
        assert!(!list.is_empty());
    }

    #[test]
    fn test_programs_compile_for_both_verdicts() {
        for v in [Verdict::Kill, Verdict::Log] {
            let [list, clone3] = programs(Profile::default(), 42, v).unwrap();
            assert!(list.len() > clone3.len());
        }
    }
}
