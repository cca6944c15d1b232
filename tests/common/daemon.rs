//! Runs our binary in serve mode on a socket in a temporary directory.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What the daemon prints on stderr once its socket listens.
pub const READY_LINE: &str = "Waiting for vhost-user socket connection...";

/// A running `erofs-virtiofsd --socket-path ... --image ...`, killed on
/// drop. Its stderr goes to a file in its directory (see [`Self::log`]).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// The vhost-user socket.
    pub socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts serving `image` (plus `args`) and waits for the socket.
    pub fn start(image: &Path, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("vhost.sock");
        let log = dir.path().join("daemon.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
        cmd.arg("--socket-path")
            .arg(&socket)
            .arg("--image")
            .arg(image)
            .arg("--log-level")
            .arg("debug")
            .args(args);
        Self::spawn(cmd, socket, log, dir)
    }

    /// Starts `cmd` (already given its arguments) and waits for `socket`.
    pub fn spawn(
        mut cmd: Command,
        socket: PathBuf,
        log: PathBuf,
        dir: tempfile::TempDir,
    ) -> Daemon {
        let err = File::create(&log).expect("daemon log file");
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl(2), which is async-signal-safe. It ends the
        // daemon if the test thread that started it dies (a killed or
        // crashed test run leaves no daemons behind).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawning erofs-virtiofsd");
        let mut d = Daemon {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // The socket file appears at bind(2), before listen(2): wait for the
        // line the daemon prints once it listens.
        while !d.log().contains(READY_LINE) {
            if let Some(status) = d.try_wait() {
                panic!("daemon exited with {status} before listening:\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not create its socket:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the daemon has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("waitpid"))
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's process id (with the default sandbox, its supervisor's;
    /// see [`super::procs`]).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// CPU time (user + system) the daemon has used, in clock ticks: its
    /// process and the sandboxed process it forked, if any.
    pub fn cpu_ticks(&self) -> u64 {
        super::procs::cpu_ticks(self.pid())
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("daemon running").id();
        // SAFETY: kill(2) with our own child's pid and a valid signal.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
