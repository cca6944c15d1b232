//! Mounting images with the Linux kernel's EROFS driver: the oracle.
//!
//! Images are mounted file-backed (`mount(2)` with the image file as source,
//! Linux 6.12+), so no loop devices are needed and extra devices
//! (`-o device=PATH`) may be plain files too. If the kernel refuses a
//! file-backed mount (`ENOTBLK`: built without file-backed support, or the
//! file is on tmpfs, which cannot back one), the guard falls back to
//! util-linux `mount` and `losetup` (loop devices, detached on drop).
//!
//! The tests that use this are meant to run as root (CI does): they fail
//! loudly via [`assert_kernel_erofs`] instead of skipping.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Mount options beyond `ro`.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Extra devices (`-o device=PATH`, in order), e.g. a `--blobdev` blob.
    pub devices: Vec<PathBuf>,
    /// Start of the filesystem inside the image file (`-o fsoffset=N`,
    /// Linux 6.16+).
    pub fsoffset: Option<u64>,
}

impl MountOptions {
    /// Options with the given extra devices.
    pub fn with_devices(devices: &[&Path]) -> Self {
        MountOptions {
            devices: devices.iter().map(|d| d.to_path_buf()).collect(),
            fsoffset: None,
        }
    }

    /// The `data` string for mount(2), without `ro`.
    fn data(&self) -> Result<String, String> {
        let mut opts = Vec::new();
        for d in &self.devices {
            let s = d
                .to_str()
                .ok_or_else(|| format!("device path is not UTF-8: {}", d.display()))?;
            if s.contains(',') {
                return Err(format!("device path contains a comma: {s}"));
            }
            opts.push(format!("device={s}"));
        }
        if let Some(off) = self.fsoffset {
            opts.push(format!("fsoffset={off}"));
        }
        Ok(opts.join(","))
    }
}

/// RAII guard of a read-only kernel EROFS mount on a fresh temporary
/// directory; unmounts and removes the directory on drop.
#[derive(Debug)]
pub struct KernelMount {
    dir: PathBuf,
    image: PathBuf,
    /// Loop devices set up for the extra devices (loop fallback only).
    loops: Vec<String>,
}

impl KernelMount {
    /// Mounts `image` (with extra `devices`), panicking with the reason and
    /// the kernel log if the kernel refuses.
    #[track_caller]
    pub fn new(image: &Path, devices: &[&Path]) -> KernelMount {
        assert_kernel_erofs();
        KernelMount::mount(image, &MountOptions::with_devices(devices))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts `image` with `opts`; the error explains what failed and
    /// includes the kernel's recent EROFS messages.
    pub fn mount(image: &Path, opts: &MountOptions) -> Result<KernelMount, String> {
        let dir = tempfile::Builder::new()
            .prefix("erofs-kmount-")
            .tempdir()
            .map_err(|e| format!("creating a mount point: {e}"))?
            .keep();
        match mount_erofs(image, &dir, opts) {
            Ok(loops) => Ok(KernelMount {
                dir,
                image: image.to_path_buf(),
                loops,
            }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(format!(
                    "kernel EROFS mount of {} (options {opts:?}) failed: {e}\n\
                     recent kernel messages:\n{}",
                    image.display(),
                    kernel_log_tail(20)
                ))
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The mounted image.
    pub fn image(&self) -> &Path {
        &self.image
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        let mut result = umount(&self.dir, 0);
        if result.is_err() {
            // Busy (an open file somewhere): detach it; it goes away once the
            // last user is gone.
            result = umount(&self.dir, libc::MNT_DETACH);
        }
        match result {
            Ok(()) => {
                if let Err(e) = fs::remove_dir(&self.dir) {
                    eprintln!("warning: removing {}: {e}", self.dir.display());
                }
                detach_loops(&self.loops);
            }
            // Never remove a directory that may still be a mount point.
            Err(e) => eprintln!(
                "warning: could not unmount {} ({e}); leaving it",
                self.dir.display()
            ),
        }
    }
}

fn cstring(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("path contains a NUL byte: {}", p.display()))
}

/// mount(2) of `image` on `dir`, read-only. When the kernel cannot mount the
/// file directly, falls back to util-linux `mount` (loop device), with loop
/// devices for the extra devices too; returns those so they can be detached.
fn mount_erofs(image: &Path, dir: &Path, opts: &MountOptions) -> Result<Vec<String>, String> {
    let data = opts.data()?;
    let source = cstring(image)?;
    let target = cstring(dir)?;
    let fstype = CString::new("erofs").expect("no NUL in a literal");
    let data_c = CString::new(data).map_err(|_| "mount options contain NUL".to_string())?;
    let rc = erofs_virtiofsd::os::mount::mount(&source, &target, &fstype, libc::MS_RDONLY, &data_c);
    let Err(err) = rc else {
        return Ok(Vec::new());
    };
    if err.raw_os_error() != Some(libc::ENOTBLK) {
        return Err(format!("mount(2): {err}"));
    }
    // ENOTBLK: no file-backed mount (kernel without
    // CONFIG_EROFS_FS_BACKED_BY_FILE, or a file on a filesystem that cannot
    // back one, such as tmpfs). Use loop devices.
    let why = format!(
        "file-backed mount(2) refused ({err}: kernel without file-backed EROFS, \
         or the image or a device is on tmpfs); loop fallback"
    );
    let mut loops = Vec::new();
    for d in &opts.devices {
        match losetup(d) {
            Ok(l) => loops.push(l),
            Err(e) => {
                detach_loops(&loops);
                return Err(format!("{why}: {e}"));
            }
        }
    }
    let loop_opts = MountOptions {
        devices: loops.iter().map(PathBuf::from).collect(),
        fsoffset: opts.fsoffset,
    };
    let mut o = String::from("ro");
    let data = loop_opts.data()?;
    if !data.is_empty() {
        o.push(',');
        o.push_str(&data);
    }
    let out = Command::new("mount")
        .args(["-t", "erofs", "-o", &o])
        .arg(image)
        .arg(dir)
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(loops),
        Ok(out) => {
            detach_loops(&loops);
            Err(format!(
                "{why}: mount -o {o}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(e) => {
            detach_loops(&loops);
            Err(format!("{why}: running mount(8): {e}"))
        }
    }
}

/// `losetup --find --show --read-only FILE`: the new loop device (detach
/// it with [`detach_loops`]).
pub fn losetup(file: &Path) -> Result<String, String> {
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(file)
        .output()
        .map_err(|e| format!("running losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "losetup {}: {}: {}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn detach_loops(loops: &[String]) {
    for l in loops {
        match Command::new("losetup").arg("-d").arg(l).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: losetup -d {l}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: losetup -d {l}: {e}"),
        }
    }
}

fn umount(dir: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(dir).map_err(io::Error::other)?;
    erofs_virtiofsd::os::mount::umount(&target, flags & libc::MNT_DETACH != 0)
}

/// The last `n` kernel log lines that mention erofs or loop devices (or a note
/// saying why there are none).
pub fn kernel_log_tail(n: usize) -> String {
    match Command::new("dmesg").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("erofs") || l.contains("EROFS") || l.contains("loop"))
                .collect();
            if lines.is_empty() {
                return "  (no erofs messages in dmesg)".to_string();
            }
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Ok(out) => format!(
            "  (dmesg failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("  (cannot run dmesg: {e})"),
    }
}

/// Whether kernel EROFS mounts can work here: we are root and the kernel
/// knows `erofs` (after `modprobe erofs` if needed). Checked once.
pub fn kernel_erofs_available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(check_kernel_erofs).clone()
}

fn check_kernel_erofs() -> Result<(), String> {
    let euid = erofs_virtiofsd::os::proc::euid();
    if euid != 0 {
        return Err(format!(
            "not running as root (euid {euid}); mounting needs CAP_SYS_ADMIN"
        ));
    }
    let has_erofs = || {
        fs::read_to_string("/proc/filesystems")
            .map(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().last() == Some("erofs"))
            })
            .unwrap_or(false)
    };
    if has_erofs() {
        return Ok(());
    }
    let modprobe = Command::new("modprobe").arg("erofs").output();
    if has_erofs() {
        return Ok(());
    }
    Err(format!(
        "the kernel has no erofs filesystem (/proc/filesystems); modprobe erofs: {}",
        match modprobe {
            Ok(o) => format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => e.to_string(),
        }
    ))
}

/// Panics with a clear message when kernel EROFS mounts cannot work. These
/// tests are meant to run as root in CI and must not skip silently.
#[track_caller]
pub fn assert_kernel_erofs() {
    if let Err(why) = kernel_erofs_available() {
        panic!(
            "kernel oracle tests need root and the kernel EROFS driver: {why}\n\
             (run the tests as root on a kernel with CONFIG_EROFS_FS)"
        );
    }
}
