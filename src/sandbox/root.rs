//! The sandbox's root directory: an empty tmpfs in new namespaces (with
//! `/proc` and the directories kept), or an empty, already removed
//! directory to chroot into.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{setup_err, SandboxError};
use crate::os;

/// A directory to keep visible, checked and made absolute.
#[derive(Debug, Clone)]
pub(super) struct Keep {
    pub(super) path: PathBuf,
    pub(super) writable: bool,
}

/// Where the old root hangs between pivot_root and its unmount.
const OLD_ROOT: &str = "/.oldroot";

/// The tmpfs of the new root: small, few inodes (it holds only the mount
/// points of `/proc` and the directories kept).
const ROOT_TMPFS_OPTS: &str = "size=64k,nr_inodes=1024,mode=0755";

fn c(s: impl AsRef<[u8]>) -> Result<CString, SandboxError> {
    CString::new(s.as_ref()).map_err(|_| SandboxError::Setup {
        step: "name a path".into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let cs = |s: &[u8]| {
        CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    };
    os::mount::mount(
        &cs(source.as_bytes())?,
        &cs(target.as_os_str().as_bytes())?,
        &cs(fstype.as_bytes())?,
        flags,
        &cs(data.as_bytes())?,
    )
}

/// Enters new mount, network and IPC namespaces (the caller is already in
/// its new pid namespace) and makes the root an empty read-only tmpfs with
/// `/proc` (this pid namespace's, pids only, read-only) and `keeps` bound
/// at their own paths.
pub(super) fn enter_namespaces(keeps: &[Keep]) -> Result<(), SandboxError> {
    os::sandbox::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC).map_err(
        |source| SandboxError::Namespace {
            what: "mount, network and IPC",
            source,
        },
    )?;
    // No mount or unmount of ours reaches the host, nor the host's ours.
    mount(
        "none",
        Path::new("/"),
        "",
        libc::MS_REC | libc::MS_PRIVATE,
        "",
    )
    .map_err(setup_err("make the mounts private"))?;
    // The new root, mounted for now on /proc (any directory would do, and
    // that one is always there; the old root's /proc is left as it was
    // once pivot_root has moved the tmpfs away).
    let base = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("tmpfs", Path::new("/proc"), "tmpfs", base, ROOT_TMPFS_OPTS)
        .map_err(setup_err("mount the new root's tmpfs"))?;
    std::fs::create_dir("/proc/.oldroot").map_err(setup_err("make the old root's directory"))?;
    std::env::set_current_dir("/proc").map_err(setup_err("enter the new root"))?;
    os::sandbox::pivot_root(&c(".")?, &c(".oldroot")?).map_err(setup_err("pivot_root"))?;
    std::env::set_current_dir("/").map_err(setup_err("enter the new root"))?;
    for k in keeps {
        bind(k)?;
    }
    std::fs::create_dir("/proc").map_err(setup_err("make /proc"))?;
    mount_proc()?;
    let old = c(OLD_ROOT)?;
    os::mount::umount(&old, true).map_err(setup_err("unmount the old root"))?;
    std::fs::remove_dir(OLD_ROOT).map_err(setup_err("remove the old root's directory"))?;
    mount(
        "none",
        Path::new("/"),
        "",
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | base,
        "",
    )
    .map_err(setup_err("make the new root read-only"))?;
    std::env::set_current_dir("/").map_err(setup_err("enter the new root"))
}

/// Binds the host's `k.path` (under the old root) at `k.path` in the new
/// root: read-only, no setuid, no executables, no devices where writable.
/// Not recursive: mounts below it stay out of sight.
fn bind(k: &Keep) -> Result<(), SandboxError> {
    let rel = k.path.strip_prefix("/").unwrap_or(&k.path);
    let source = Path::new(OLD_ROOT).join(rel);
    let what = k.path.display().to_string();
    std::fs::create_dir_all(&k.path).map_err(setup_err(format!("make the mount point {what}")))?;
    let src = source.to_str().ok_or_else(|| SandboxError::Dir {
        path: k.path.clone(),
        why: "not valid UTF-8".into(),
    })?;
    mount(src, &k.path, "", libc::MS_BIND, "").map_err(setup_err(format!("bind {what}")))?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC;
    if k.writable {
        flags |= libc::MS_NODEV;
    } else {
        flags |= libc::MS_RDONLY;
    }
    mount("none", &k.path, "", flags, "").map_err(setup_err(format!("restrict the bind of {what}")))
}

/// Mounts this pid namespace's proc on /proc, read-only, with only the
/// process directories (`subset=pid`, Linux 5.8+; plain proc before).
fn mount_proc() -> Result<(), SandboxError> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
    let p = Path::new("/proc");
    match mount("proc", p, "proc", flags, "subset=pid") {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log::debug!("sandbox: proc has no subset=pid here; mounting all of it, read-only");
            mount("proc", p, "proc", flags, "")
        }
        r => r,
    }
    .map_err(setup_err("mount /proc"))
}

/// chroot into an empty directory that is removed before the chroot (so
/// nothing can be made in it, and nothing is left behind).
pub(super) fn chroot_empty() -> Result<(), SandboxError> {
    let base = std::env::temp_dir();
    let mut made = None;
    for n in 0..100u32 {
        let dir = base.join(format!("erofs-virtiofsd-root.{}.{n}", std::process::id()));
        match std::fs::DirBuilder::new().create(&dir) {
            Ok(()) => {
                made = Some(dir);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SandboxError::Chroot(e)),
        }
    }
    let dir = made.ok_or_else(|| {
        SandboxError::Chroot(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free directory name",
        ))
    })?;
    let entered = std::env::set_current_dir(&dir);
    let removed = std::fs::remove_dir(&dir);
    entered.map_err(SandboxError::Chroot)?;
    removed.map_err(SandboxError::Chroot)?;
    std::os::unix::fs::chroot(".").map_err(SandboxError::Chroot)?;
    std::env::set_current_dir("/").map_err(SandboxError::Chroot)
}
