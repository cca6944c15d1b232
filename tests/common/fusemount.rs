//! Mounting images through our own daemon (`erofs-virtiofsd mount
//! --foreground`), as an RAII guard.
//!
//! The guard waits for the mount to appear in `/proc/self/mountinfo`
//! (polling a condition, no fixed sleeps), keeps the daemon's stderr in a
//! file for failure messages, and on drop unmounts (lazily if busy), waits
//! for the daemon to exit and removes the mount point.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cli::BIN;

/// How long the daemon may take to mount or to exit.
const PATIENCE: Duration = Duration::from_secs(20);

/// A FUSE mount served by a child `erofs-virtiofsd mount --foreground`.
#[derive(Debug)]
pub struct FuseMount {
    dir: PathBuf,
    child: Option<Child>,
    stderr: PathBuf,
}

/// Whether `dir` is a mount point now (per `/proc/self/mountinfo`).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// umount(2) of `dir`, waiting out EBUSY for a while: a process that
/// another test forks holds the parent's descriptors (ours on this mount
/// among them) until it execs, so the mount can be busy for a moment
/// after every file of it was closed here.
fn umount_when_free(dir: &Path) -> io::Result<()> {
    let mut last = Ok(());
    wait_for(PATIENCE, || {
        last = umount(dir, 0);
        !matches!(&last, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
    });
    last
}

fn umount(dir: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    erofs_virtiofsd::os::mount::umount(&c, flags & libc::MNT_DETACH != 0)
}

impl FuseMount {
    /// Mounts `image` (extra `devices`, then `args` such as `--cache never`)
    /// on a fresh directory; panics with the daemon's stderr if it fails.
    #[track_caller]
    pub fn new(image: &Path, devices: &[&Path], args: &[&str]) -> FuseMount {
        FuseMount::try_new(image, devices, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`FuseMount::new`], returning the failure text.
    pub fn try_new(image: &Path, devices: &[&Path], args: &[&str]) -> Result<FuseMount, String> {
        let mut all: Vec<OsString> = Vec::new();
        for d in devices {
            all.push("--device".into());
            all.push(d.as_os_str().to_owned());
        }
        all.extend(args.iter().map(OsString::from));
        Self::spawn(Some(image), &all)
    }

    /// Mounts with no positional image: the images come from `args`
    /// (`--image NAME=PATH`, `--config FILE`).
    #[track_caller]
    pub fn named(args: &[OsString]) -> FuseMount {
        Self::spawn(None, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `mount [IMAGE] DIR --foreground ARGS` on a fresh directory and
    /// waits until it is mounted (or the daemon exits).
    fn spawn(image: Option<&Path>, args: &[OsString]) -> Result<FuseMount, String> {
        let dir = tempfile::Builder::new()
            .prefix("erofs-fuse-")
            .tempdir()
            .map_err(|e| format!("creating a mount point: {e}"))?
            .keep();
        let stderr = dir.with_extension("stderr");
        let err_file = fs::File::create(&stderr).map_err(|e| format!("{e}"))?;
        let mut cmd = Command::new(BIN);
        cmd.arg("mount");
        if let Some(image) = image {
            cmd.arg(image);
        }
        cmd.arg(&dir).arg("--foreground");
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file);
        let child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
        let mut m = FuseMount {
            dir,
            child: Some(child),
            stderr,
        };
        let mut exited = None;
        let up = wait_for(PATIENCE, || {
            if is_mounted(&m.dir) {
                return true;
            }
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    exited = Some(st);
                    return true;
                }
            }
            false
        });
        if let Some(st) = exited.filter(|_| !is_mounted(&m.dir)) {
            return Err(format!(
                "{cmd:?} exited ({st}) without mounting: {}",
                m.stderr_text()
            ));
        }
        if !up {
            return Err(format!("{cmd:?} did not mount within {PATIENCE:?}"));
        }
        Ok(m)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether the daemon is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Waits for the daemon to exit on its own (after an unmount or a
    /// signal); `None` if it does not within the patience limit.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_for(PATIENCE, || match child.try_wait() {
            Ok(Some(st)) => {
                status = Some(st);
                true
            }
            _ => false,
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Checks that the daemon is still up, unmounts, and checks that it
    /// then exited cleanly (`what` names the case in failures).
    #[track_caller]
    pub fn finish(mut self, what: &str) {
        assert!(
            self.alive(),
            "{what}: the daemon died: {}",
            self.stderr_text()
        );
        let st = self.unmount();
        assert!(st.is_some_and(|s| s.success()), "{what}: exit {st:?}");
    }

    /// Like [`FuseMount::finish`], and returns everything the daemon wrote
    /// to stderr (its last lines come at exit).
    #[track_caller]
    pub fn finish_with_log(mut self, what: &str) -> String {
        assert!(
            self.alive(),
            "{what}: the daemon died: {}",
            self.stderr_text()
        );
        if let Err(e) = umount_when_free(&self.dir) {
            panic!("umount {}: {e}", self.dir.display());
        }
        let st = self.wait_exit();
        let log = self.stderr_text();
        assert!(
            st.is_some_and(|s| s.success()),
            "{what}: exit {st:?}: {log}"
        );
        log
    }

    /// Unmounts (like `umount`) and returns the daemon's exit status.
    pub fn unmount(mut self) -> Option<ExitStatus> {
        if let Err(e) = umount_when_free(&self.dir) {
            panic!("umount {}: {e}", self.dir.display());
        }
        self.wait_exit()
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) && umount(&self.dir, 0).is_err() {
            let _ = umount(&self.dir, libc::MNT_DETACH);
        }
        if let Some(mut c) = self.child.take() {
            let done = wait_for(PATIENCE, || matches!(c.try_wait(), Ok(Some(_))));
            if !done {
                eprintln!("warning: daemon {} did not exit; killing it", c.id());
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if !is_mounted(&self.dir) {
            let _ = fs::remove_dir(&self.dir);
            let _ = fs::remove_file(&self.stderr);
        }
    }
}
