//! The default store directory as a tmpfs of its own, mounted
//! `huge=within_size`.
//!
//! A store on a plain `/dev/shm` holds its entries in 4 KiB pages, and a
//! passthrough read of an entry then runs at about half the speed of the
//! kernel's EROFS mount of the same image (whose page cache uses large
//! folios); on a tmpfs mounted `huge=within_size` it runs at the kernel's
//! speed (docs/benchmarks.md, "The content store in serving"). So when a
//! process that may mount (root) creates the default store directory, it
//! mounts such a tmpfs on it; every later process, daemon or mount, finds
//! it there. Any other directory named with `--store` is left as the user
//! made it.
//!
//! Only a directory this call creates is mounted on: mounting over an
//! existing one would hide the entries other processes are using. The
//! check and the mount run under an exclusive lock on a file beside the
//! directory, so two processes starting at once make one mount.
//!
//! `within_size` gives a file huge pages only where its size covers them:
//! small entries cost no more memory than on `/dev/shm`. No `size=`: like
//! `/dev/shm`, the tmpfs may grow to half of RAM, and the store's own
//! `--store-size` bounds it below that.

use std::ffi::CString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Error, Result};
use crate::os::mount;

/// What [`prepare_default_dir`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// It created the directory and mounted a huge-page tmpfs on it.
    Mounted,
    /// The directory exists and is a mount point (most likely such a tmpfs
    /// mounted by an earlier process): used as it is.
    ExistingMount,
    /// The directory exists and is not a mount point: used as it is.
    ExistingDir,
    /// It created the directory but could not mount on it (not root, no
    /// transparent huge pages in the kernel, ...): a plain directory.
    PlainDir(String),
}

/// Prepares `dir`, the default store directory (see the module
/// documentation). Leaves `dir` existing; the store's own checks
/// (ownership, mode) come after.
pub fn prepare_default_dir(dir: &Path) -> Result<Prepared> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Ok(Prepared::ExistingDir),
    };
    let lock_path = lock_path(dir);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| Error::io("open the lock", &lock_path, e))?;
    lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            let parent_dev = fs::metadata(parent)
                .map_err(|e| Error::io("stat", parent, e))?
                .dev();
            return Ok(if meta.is_dir() && meta.dev() != parent_dev {
                Prepared::ExistingMount
            } else {
                Prepared::ExistingDir
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("stat", dir, e)),
    }
    DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    if !in_init_mount_namespace() {
        return Ok(Prepared::PlainDir(
            "not in the host's mount namespace (a mount would be seen only here)".into(),
        ));
    }
    match mount_huge_tmpfs(dir) {
        Ok(()) => Ok(Prepared::Mounted),
        Err(e) => Ok(Prepared::PlainDir(e.to_string())),
    }
    // The lock is released when `lock` is dropped, after the mount.
}

/// Whether this process's mount namespace is init's: only a tmpfs mounted
/// there is seen by every process that finds the directory (one mounted in
/// a container's namespace would leave the host's processes, and other
/// containers sharing /dev/shm, a second, empty store underneath).
fn in_init_mount_namespace() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(me), Ok(init)) => me == init,
        _ => false,
    }
}

/// The lock file of `dir`: `DIR.lock` beside it.
fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    dir.with_file_name(name)
}

fn mount_huge_tmpfs(dir: &Path) -> io::Result<()> {
    let target = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // The root directory belongs to the mounting process (as the store
    // wants: its own user), mode 0700.
    mount::mount(
        c"erofs-virtiofsd-store",
        &target,
        c"tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        c"mode=0700,huge=within_size",
    )
}

/// Opens the store in `dir`; when `dir` is the [default
/// one](super::store::default_dir), prepares it first (see the module
/// documentation) and logs what it found.
pub fn open_store(dir: &Path, opts: super::store::StoreOptions) -> Result<super::store::Store> {
    if dir == super::store::default_dir() {
        match prepare_default_dir(dir)? {
            Prepared::Mounted => log::info!(
                "content store: mounted a tmpfs (huge=within_size) on {}",
                dir.display()
            ),
            Prepared::PlainDir(why) => log::info!(
                "content store: {} is a plain directory (no tmpfs of its own: {why})",
                dir.display()
            ),
            Prepared::ExistingMount | Prepared::ExistingDir => {}
        }
    }
    super::store::Store::open(dir, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// A fresh directory under /tmp, its mounts taken down at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("hugefs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let store = self.0.join("store");
            let c = CString::new(store.as_os_str().as_bytes()).unwrap();
            while mount::umount(&c, true).is_ok() {}
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The mountinfo lines of mounts exactly at `path`.
    fn mounts_at(path: &Path) -> Vec<String> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let want = path.to_str().unwrap();
        info.lines()
            .filter(|l| l.split(' ').nth(4) == Some(want))
            .map(str::to_owned)
            .collect()
    }

    fn root() -> bool {
        if crate::os::proc::euid() != 0 {
            eprintln!("skipped: mounting needs root");
            return false;
        }
        true
    }

    /// Whether this test process may mount where everyone sees it.
    fn may_mount() -> bool {
        if !in_init_mount_namespace() {
            eprintln!("skipped: not in the host's mount namespace");
            return false;
        }
        root()
    }

    #[test]
    fn a_new_default_dir_gets_a_huge_page_tmpfs_once() {
        if !may_mount() {
            return;
        }
        let s = Scratch::new("once");
        let dir = s.0.join("store");
        assert_eq!(prepare_default_dir(&dir).unwrap(), Prepared::Mounted);
        let m = mounts_at(&dir);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains(" - tmpfs "), "{}", m[0]);
        assert!(m[0].contains("huge=within_size"), "{}", m[0]);
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), 0);
        // Found again, not mounted twice.
        assert_eq!(prepare_default_dir(&dir).unwrap(), Prepared::ExistingMount);
        assert_eq!(mounts_at(&dir).len(), 1);
        // And the store accepts it.
        let store = super::super::store::Store::open(&dir, Default::default()).unwrap();
        assert!(store.root().starts_with(&dir));
    }

    #[test]
    fn an_existing_dir_is_never_mounted_over() {
        if !root() {
            return;
        }
        let s = Scratch::new("existing");
        let dir = s.0.join("store");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("in-use"), b"x").unwrap();
        assert_eq!(prepare_default_dir(&dir).unwrap(), Prepared::ExistingDir);
        assert!(mounts_at(&dir).is_empty());
        assert!(dir.join("in-use").exists());
    }

    #[test]
    fn processes_starting_at_once_make_one_mount() {
        if !may_mount() {
            return;
        }
        let s = Scratch::new("race");
        let dir = Arc::new(s.0.join("store"));
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let results: Vec<Prepared> = (0..n)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    prepare_default_dir(&dir).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let mounted = results.iter().filter(|r| **r == Prepared::Mounted).count();
        assert_eq!(mounted, 1, "{results:?}");
        assert!(results
            .iter()
            .all(|r| matches!(r, Prepared::Mounted | Prepared::ExistingMount)));
        assert_eq!(mounts_at(&dir).len(), 1);
    }
}
