//! Where the daemons log: `--log-file` (reopened on SIGHUP and through the
//! API, for rotation) and `--syslog`, in the default sandbox (as root:
//! namespaces, seccomp `kill`), where the log file's directory is not
//! visible and no socket can be made.

mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::fusemount::{is_mounted, wait_for, FuseMount};

/// Waits (bounded) until the file at `path` exists and holds `text`.
fn wait_for_text(path: &Path, text: &str) -> bool {
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(path).is_ok_and(|t| t.contains(text))
    })
}

fn put_reopen(sock: &Path) -> u16 {
    let mut s = UnixStream::connect(sock).expect("connect to the API");
    s.write_all(b"PUT /api/v1/daemon/logs/reopen HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reply");
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn serve_cmd(dir: &Path, extra: &[OsString]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
    cmd.arg("--socket-path")
        .arg(dir.join("vhost.sock"))
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .args(extra);
    cmd
}

#[test]
fn test_log_file_reopened_after_rename_on_sighup_and_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("log dir");
    let log = logs.path().join("daemon.log");
    let cmd = serve_cmd(dir.path(), &["--log-file".into(), log.clone().into()]);
    let stderr = dir.path().join("stderr");
    let sock = dir.path().join("vhost.sock");
    let api = dir.path().join("api.sock");
    let d = Daemon::spawn(cmd, sock, stderr, tempfile::tempdir().expect("tempdir"));
    // Logged after the sandbox was entered (its directory is not visible
    // from there).
    assert!(
        wait_for_text(&log, "waiting for a vhost-user frontend"),
        "log: {:?}",
        std::fs::read_to_string(&log)
    );

    // Rotation by rename, then SIGHUP: a new file at the same path.
    let rotated = logs.path().join("daemon.log.1");
    std::fs::rename(&log, &rotated).expect("rename the log");
    d.signal(libc::SIGHUP);
    assert!(
        wait_for_text(&log, "log file reopened (SIGHUP)"),
        "no new log file after SIGHUP; stderr: {}",
        d.log()
    );
    assert!(!std::fs::read_to_string(&rotated)
        .expect("rotated log")
        .contains("reopened"));

    // The same through the API.
    assert!(wait_for(Duration::from_secs(30), || UnixStream::connect(
        &api
    )
    .is_ok()));
    std::fs::rename(&log, logs.path().join("daemon.log.2")).expect("rename the log");
    assert_eq!(put_reopen(&api), 204);
    assert!(
        wait_for_text(&log, "log file reopened (API)"),
        "{}",
        d.log()
    );

    // The daemon is still serving (SIGHUP did not stop it).
    let mut d = d;
    assert!(d.try_wait().is_none(), "the daemon exited: {}", d.log());
}

#[test]
fn test_mount_log_file_reopened_on_sighup_keeps_the_mount() {
    common::assert_kernel_erofs();
    let logs = tempfile::tempdir().expect("log dir");
    let log = logs.path().join("mount.log");
    let image = common::fixture_image("edge_plain-b4096").image;
    let mount = FuseMount::new(
        &image,
        &[],
        &[
            "--log-file",
            log.to_str().expect("UTF-8"),
            "--log-level",
            "debug",
        ],
    );
    // The sandbox's line (debug) is written from inside it.
    assert!(wait_for_text(&log, "sandbox:"));
    std::fs::rename(&log, logs.path().join("mount.log.1")).expect("rename");
    // The supervisor outside the sandbox sends SIGHUP on to the daemon.
    let st = Command::new("kill")
        .args(["-HUP", &mount.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(st.success());
    assert!(wait_for_text(&log, "log file reopened (SIGHUP)"));
    assert!(is_mounted(mount.path()), "SIGHUP unmounted");
    assert!(std::fs::read_dir(mount.path()).is_ok());
    mount.finish("log file reopened");
}

#[test]
fn test_syslog_gets_messages_from_the_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let syslog = dir.path().join("log.sock");
    let server = UnixDatagram::bind(&syslog).expect("bind a syslog socket");
    server
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let cmd = serve_cmd(
        dir.path(),
        &[OsString::from("--syslog"), syslog.clone().into()],
    );
    let d = Daemon::spawn(
        cmd,
        dir.path().join("vhost.sock"),
        dir.path().join("stderr"),
        tempfile::tempdir().expect("tempdir"),
    );
    // Read datagrams until one sent from inside the sandbox (the daemon
    // waits for its frontend there).
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = server.recv(&mut buf).unwrap_or_else(|e| {
            panic!("no syslog message ({e}); got {seen:?}; stderr: {}", d.log())
        });
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = msg.contains("waiting for a vhost-user frontend");
        seen.push(msg);
        if done {
            break;
        }
    }
    let last = seen.last().expect("a message");
    // RFC 3164, facility daemon (3), severity info (6): <30>.
    assert!(last.starts_with("<30>"), "{last}");
    assert!(last.contains("erofs-virtiofsd["), "{last}");
    assert!(
        !d.log().contains("[INFO]"),
        "info went to stderr: {}",
        d.log()
    );
}
