//! The sandbox (docs/sandbox.md), checked from outside: the capabilities,
//! namespaces, root and mounts of the serving process through
//! /proc/PID, the seccomp filter's verdicts (SIGSYS with `kill`, an audit
//! record in the kernel log with `log`), the supervisor's clean-up, and the
//! clear error when namespaces cannot be made.
//!
//! Needs root (the default sandbox is made as root).

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::cli::BIN;
use common::daemon::{Daemon, READY_LINE};
use common::fixtures::fixture_image;
use common::frontend::{Frontend, FrontendOptions};
use common::fuse_client::{walk, FuseClient};
use common::fusemount::{is_mounted, wait_for, FuseMount};
use common::{assert_kernel_erofs, assert_manifests_eq, load_expected, procs};

const FORBIDDEN_ENV: &str = "EROFS_VIRTIOFSD_TEST_FORBIDDEN_SYSCALL";

fn image() -> PathBuf {
    fixture_image("edge_lz4").image
}

/// A field of /proc/PID/status.
fn status_field(pid: u32, name: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Checks that `pid` has no capability at all, `no_new_privs` and a
/// seccomp filter.
#[track_caller]
fn assert_unprivileged(pid: u32) {
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, set), "0000000000000000", "{set} of {pid}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "seccomp filter mode");
}

/// (mount point, filesystem type, per-mount options) of each mount `pid`
/// sees.
fn mounts_of(pid: u32) -> Vec<(String, String, String)> {
    let info = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    info.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f
                .iter()
                .position(|&x| x == "-")
                .expect("mountinfo separator");
            (f[4].to_owned(), f[sep + 1].to_owned(), f[5].to_owned())
        })
        .collect()
}

/// The names in the root directory of `pid`.
fn root_listing(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/root"))
        .expect("/proc/PID/root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ns(pid: &str, which: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{which}")).expect("ns link")
}

/// Walks the whole image through the daemon and compares with the kernel's
/// manifest: serving works in the sandbox.
fn assert_serves(d: &Daemon) {
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &FrontendOptions::default()));
    c.init();
    let actual = walk(&mut c);
    assert_manifests_eq("walk in the sandbox", &load_expected("edge_lz4"), &actual);
}

/// Sends SIGTERM and checks the daemon exits 0 and its socket is gone.
#[track_caller]
fn assert_stops_cleanly(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(20)).expect("daemon exit");
    assert!(st.success(), "{st}\n{}", d.log());
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn test_default_sandbox_has_no_capabilities_namespaces_and_an_empty_root() {
    let d = Daemon::start(&image(), &[]);
    let sup = d.pid();
    let server = procs::server(sup);
    assert_ne!(server, sup, "the default sandbox forks a server");
    assert_unprivileged(server);
    // PID 1 of a pid namespace of its own.
    let nspid = status_field(server, "NSpid");
    assert_eq!(nspid, format!("{server}\t1"));
    for which in ["mnt", "net", "pid", "ipc"] {
        assert_ne!(
            ns(&server.to_string(), which),
            ns("self", which),
            "{which} namespace"
        );
    }
    // Its whole world: a read-only tmpfs root and its own /proc.
    let mounts = mounts_of(server);
    let points: Vec<&str> = mounts.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(points, ["/", "/proc"], "{mounts:?}");
    assert_eq!(mounts[0].1, "tmpfs");
    assert_eq!(mounts[1].1, "proc");
    for m in &mounts {
        assert!(m.2.split(',').any(|o| o == "ro"), "{m:?} is read-only");
    }
    assert_eq!(root_listing(server), ["proc"]);
    // Only process directories in its /proc.
    let proc_names = fs::read_dir(format!("/proc/{server}/root/proc"))
        .expect("its /proc")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        proc_names
            .iter()
            .all(|n| n.parse::<u32>().is_ok() || n == "self" || n == "thread-self"),
        "{proc_names:?}"
    );
    // The supervisor outside keeps what it needs to clean up.
    assert_ne!(status_field(sup, "CapEff"), "0000000000000000");
    assert_serves(&d);
    assert_stops_cleanly(d);
}

#[test]
fn test_allowed_directory_is_the_only_host_path_and_read_only() {
    let allowed = tempfile::tempdir().expect("tempdir");
    fs::write(allowed.path().join("layer.erofs"), b"an image").expect("write");
    let dir = allowed.path().to_str().expect("utf-8 path");
    let d = Daemon::start(&image(), &["--allow-dir", dir]);
    let server = procs::server(d.pid());
    let mounts = mounts_of(server);
    let bound = mounts
        .iter()
        .find(|m| m.0 == dir)
        .unwrap_or_else(|| panic!("{dir} not in {mounts:?}"));
    for opt in ["ro", "nosuid", "noexec"] {
        assert!(bound.2.split(',').any(|o| o == opt), "{bound:?} has {opt}");
    }
    assert_eq!(mounts.len(), 3, "{mounts:?}");
    let first = Path::new(dir)
        .components()
        .nth(1)
        .expect("a first component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let mut want = vec!["proc".to_owned(), first];
    want.sort();
    assert_eq!(root_listing(server), want);
    let inside = format!("/proc/{server}/root{dir}/layer.erofs");
    assert_eq!(
        fs::read(&inside).expect("the file, seen from inside"),
        b"an image"
    );
    // Nothing else of the host's directory tree is there.
    assert!(!Path::new(&format!("/proc/{server}/root/etc")).exists());
    assert_stops_cleanly(d);
}

#[test]
fn test_chroot_sandbox_has_an_empty_root_and_no_new_namespaces() {
    let d = Daemon::start(&image(), &["--sandbox", "chroot"]);
    let server = procs::server(d.pid());
    assert_ne!(server, d.pid());
    assert_unprivileged(server);
    assert!(root_listing(server).is_empty());
    assert_eq!(ns(&server.to_string(), "mnt"), ns("self", "mnt"));
    assert_serves(&d);
    assert_stops_cleanly(d);

    // chroot keeps no directory: asking for one is an error naming the
    // mode that can.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("--socket-path")
        .arg(dir.path().join("v.sock"))
        .arg("--image")
        .arg(image())
        .args(["--sandbox", "chroot", "--allow-dir", "/tmp"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sandbox namespace"), "{err}");
}

#[test]
fn test_no_sandbox_still_drops_capabilities_and_filters() {
    let d = Daemon::start(&image(), &["--sandbox", "none"]);
    assert!(
        procs::children(d.pid()).is_empty(),
        "no fork without a sandbox"
    );
    assert_unprivileged(d.pid());
    assert_serves(&d);
    assert_stops_cleanly(d);
}

/// Runs `cmd` with stderr to a file until it exits (at most 30 s); returns
/// the status and what it wrote.
fn run_to_exit(mut cmd: Command) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"));
    let mut child: Child = cmd.spawn().expect("spawn");
    let mut status = None;
    let exited = wait_for(Duration::from_secs(30), || {
        status = child.try_wait().expect("waitpid");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "did not exit: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    }
    (
        status.expect("status"),
        fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn test_seccomp_kill_ends_the_daemon_with_sigsys() {
    for sandbox in ["namespace", "chroot", "none"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("v.sock");
        let mut cmd = Command::new(BIN);
        cmd.arg("--socket-path")
            .arg(&sock)
            .arg("--image")
            .arg(image())
            .args(["--sandbox", sandbox, "--seccomp", "kill"])
            .env(FORBIDDEN_ENV, "1");
        let (st, err) = run_to_exit(cmd);
        // Killed before it could say the call returned, and (through the
        // supervisor, which dies the same way) seen as killed by SIGSYS.
        assert_eq!(st.signal(), Some(libc::SIGSYS), "{sandbox}: {st}\n{err}");
        assert!(!err.contains("returned"), "{sandbox}: {err}");
        // The supervisor removes the socket; without one, nobody can (as
        // after SIGKILL: the next start replaces the stale socket).
        if sandbox != "none" {
            assert!(!sock.exists(), "{sandbox}: socket left behind");
        }
    }
}

#[test]
fn test_seccomp_kill_in_mount_leaves_no_mount_behind() {
    assert_kernel_erofs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg(image())
        .arg(dir.path())
        .arg("--foreground")
        .env(FORBIDDEN_ENV, "1");
    let (st, err) = run_to_exit(cmd);
    assert_eq!(st.signal(), Some(libc::SIGSYS), "{st}\n{err}");
    // The supervisor unmounted what the dead daemon could no longer serve.
    assert!(!is_mounted(dir.path()), "mount left behind");
}

/// /dev/kmsg, read from its end: the kernel log records written after it
/// was opened.
struct Kmsg(fs::File);

impl Kmsg {
    fn open_at_end() -> Kmsg {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg");
        use std::os::fd::AsRawFd;
        // SAFETY: lseek on our own descriptor; no memory is passed.
        let rc = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        assert!(
            rc >= 0,
            "seek /dev/kmsg: {}",
            std::io::Error::last_os_error()
        );
        Kmsg(f)
    }

    /// The first new record for which `want` holds, waiting for records up
    /// to `limit`.
    fn find(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if want(&rec) {
                        return Some(rec);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    let mut pfd = libc::pollfd {
                        fd: self.0.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    let ms = libc::c_int::try_from(left.as_millis())
                        .unwrap_or(1000)
                        .max(1);
                    // SAFETY: one pollfd, valid for the call.
                    unsafe { libc::poll(&mut pfd, 1, ms) };
                }
                // Records overwritten before we read them: go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) => panic!("read /dev/kmsg: {e}"),
            }
        }
    }
}

#[test]
fn test_seccomp_log_allows_and_logs_the_call() {
    let logged = fs::read_to_string("/proc/sys/kernel/seccomp/actions_logged").unwrap_or_default();
    assert!(
        logged.split_whitespace().any(|a| a == "log"),
        "this kernel does not log SECCOMP_RET_LOG (actions_logged: {logged:?})"
    );
    let mut kmsg = Kmsg::open_at_end();
    let mut cmd = Command::new(BIN);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("v.sock");
    cmd.arg("--socket-path")
        .arg(&sock)
        .arg("--image")
        .arg(image())
        .args(["--seccomp", "log", "--log-level", "debug"])
        .env(FORBIDDEN_ENV, "1");
    let d = Daemon::spawn(cmd, sock, dir.path().join("log"), dir);
    // Allowed: the call returned and the daemon goes on serving.
    assert!(
        d.log().contains("the forbidden system call returned Ok("),
        "{}",
        d.log()
    );
    assert!(d.log().contains(READY_LINE));
    let server = procs::server(d.pid());
    let want_pid = format!(" pid={server} ");
    let want_call = format!(" syscall={} ", libc::SYS_personality);
    let rec = kmsg.find(Duration::from_secs(10), |r| {
        r.contains("type=1326") && r.contains(&want_pid) && r.contains(&want_call)
    });
    let rec = rec.expect("no seccomp audit record (type=1326) for the daemon's call");
    // SECCOMP_RET_LOG, not a kill.
    assert!(rec.contains("code=0x7ffc0000"), "{rec}");
    assert_serves(&d);
    assert_stops_cleanly(d);
}

/// The sandboxed child of `mount` supervisor `sup`, once its filter is on
/// (the mount is up before the sandbox is entered, and `mount` prints
/// nothing when it is).
fn in_sandbox(sup: u32) -> u32 {
    let mut server = sup;
    let entered = wait_for(Duration::from_secs(20), || {
        server = procs::server(sup);
        server != sup
            && fs::read_to_string(format!("/proc/{server}/status"))
                .is_ok_and(|s| s.lines().any(|l| l == "Seccomp:\t2"))
    });
    assert!(entered, "mount's server never entered the sandbox");
    server
}

#[test]
fn test_mount_in_the_sandbox() {
    assert_kernel_erofs();
    let m = FuseMount::new(&image(), &[], &[]);
    let sup = m.pid();
    let server = in_sandbox(sup);
    assert_unprivileged(server);
    // It does not even see the mount it serves.
    let points: Vec<String> = mounts_of(server).into_iter().map(|m| m.0).collect();
    assert_eq!(points, ["/", "/proc"]);
    let data = fs::read(m.path().join("files/text_4096")).expect("read through the mount");
    assert_eq!(data.len(), 4096);
    // SIGTERM to the supervisor: it unmounts, the server sees the end and
    // exits 0, and so does the supervisor.
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(sup as i32, libc::SIGTERM) }, 0);
    let dir = m.path().to_path_buf();
    let mut m = m;
    let st = m.wait_exit().expect("exit after SIGTERM");
    assert!(st.success(), "{st}: {}", m.stderr_text());
    assert!(!is_mounted(&dir));
}

#[test]
fn test_mount_server_killed_the_supervisor_unmounts_and_dies_alike() {
    assert_kernel_erofs();
    let mut m = FuseMount::new(&image(), &[], &[]);
    let dir = m.path().to_path_buf();
    let server = in_sandbox(m.pid());
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
    let st = m.wait_exit().expect("supervisor exit");
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    assert!(!is_mounted(&dir), "the dead mount was left behind");
}

#[test]
fn test_mount_without_sandbox_keeps_only_cap_sys_admin_to_unmount_itself() {
    assert_kernel_erofs();
    let mut m = FuseMount::new(&image(), &[], &["--sandbox", "none"]);
    let pid = m.pid();
    let filtered = wait_for(Duration::from_secs(20), || {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| s.lines().any(|l| l == "Seccomp:\t2"))
    });
    assert!(filtered, "no seccomp filter");
    assert!(procs::children(pid).is_empty(), "no fork without a sandbox");
    // CAP_SYS_ADMIN (bit 21) alone, for the unmount on a stop signal.
    for set in ["CapPrm", "CapEff"] {
        assert_eq!(status_field(pid, set), "0000000000200000", "{set}");
    }
    assert_eq!(status_field(pid, "CapInh"), "0000000000000000");
    let dir = m.path().to_path_buf();
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let st = m.wait_exit().expect("exit after SIGTERM");
    assert!(st.success(), "{st}: {}", m.stderr_text());
    assert!(!is_mounted(&dir));
}

#[test]
fn test_without_cap_sys_admin_namespace_fails_clearly_and_the_others_serve() {
    let start = |sandbox: Option<&str>| {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("v.sock");
        let mut cmd = Command::new(BIN);
        cmd.arg("--socket-path")
            .arg(&sock)
            .arg("--image")
            .arg(image());
        if let Some(s) = sandbox {
            cmd.args(["--sandbox", s]);
        }
        // SAFETY: runs between fork and exec and only calls prctl(2),
        // which is async-signal-safe: root without CAP_SYS_ADMIN, as in a
        // container that may not make namespaces.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_CAPBSET_DROP, 21, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        (cmd, sock, dir)
    };
    let (cmd, sock, _dir) = start(None);
    let (st, err) = run_to_exit(cmd);
    assert_eq!(st.code(), Some(1), "{st}: {err}");
    assert!(err.contains("namespace"), "{err}");
    assert!(err.contains("--sandbox chroot or --sandbox none"), "{err}");
    assert!(!sock.exists(), "socket left behind");
    for sandbox in ["chroot", "none"] {
        let (cmd, sock, dir) = start(Some(sandbox));
        let log = dir.path().join("log");
        let d = Daemon::spawn(cmd, sock, log, dir);
        assert_unprivileged(procs::server(d.pid()));
        assert_serves(&d);
        assert_stops_cleanly(d);
    }
}
