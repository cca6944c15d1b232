//! Load claims: the lock file that makes one process the only loader of a
//! key, and the small filesystem helpers the store builds on.
//!
//! A claim is `claims/HEX` in a domain directory, held with an exclusive
//! `flock` for as long as its owner loads `HEX`. The kernel drops the lock
//! when the owner dies, so a dead loader's claim is free for the next one.
//! The owner unlinks the file before closing it; whoever locks a claim
//! checks afterwards that the path still names the file it locked (it may
//! have locked a file just unlinked by the previous owner) and tries again
//! if not. The file's first 8 bytes hold the bytes its owner has reserved
//! in the store's usage count (written under the usage lock).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Attempts to lock a claim whose path keeps being replaced under us.
const MAX_TRIES: usize = 64;

/// Whether `f` is the file `path` names now.
pub(super) fn same_file(f: &File, path: &Path) -> io::Result<bool> {
    let a = f.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(b) => Ok(a.dev() == b.dev() && a.ino() == b.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens (creating) a file for reading and writing, mode 0600.
pub(super) fn open_rw_create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Reads a little-endian u64 at offset 0 (0 for a shorter file).
pub(super) fn read_u64(f: &File) -> io::Result<u64> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match f.read_at(&mut b[got..], got as u64)? {
            0 => return Ok(0),
            n => got += n,
        }
    }
    Ok(u64::from_le_bytes(b))
}

/// Writes a little-endian u64 at offset 0.
pub(super) fn write_u64(f: &File, v: u64) -> io::Result<()> {
    f.write_all_at(&v.to_le_bytes(), 0)
}

/// A held claim; dropping it unlinks the file and releases the lock.
#[derive(Debug)]
pub(super) struct Claim {
    file: File,
    path: PathBuf,
}

impl Claim {
    /// Takes the claim at `path`. Without `wait`, `Ok(None)` when a live
    /// owner holds it; with `wait`, blocks until the owner is done (or
    /// dead).
    pub(super) fn acquire(path: &Path, wait: bool) -> io::Result<Option<Claim>> {
        for _ in 0..MAX_TRIES {
            let file = open_rw_create(path)?;
            if wait {
                file.lock()?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => return Ok(None),
                    Err(TryLockError::Error(e)) => return Err(e),
                }
            }
            if same_file(&file, path)? {
                return Ok(Some(Claim {
                    file,
                    path: path.to_path_buf(),
                }));
            }
        }
        // Always losing the race to other claimants: someone else loads.
        Ok(None)
    }

    /// Whether a live owner holds the claim at `path`, and if so, the
    /// bytes it has reserved. A dead owner's claim is taken and returned
    /// in `Err` for the caller to clean up after.
    pub(super) fn probe(path: &Path) -> io::Result<Result<u64, Claim>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(0)),
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Err(TryLockError::WouldBlock) => Ok(Ok(read_u64(&file)?)),
            Err(TryLockError::Error(e)) => Err(e),
            Ok(()) => {
                drop(file);
                match Claim::acquire(path, false)? {
                    Some(c) => Ok(Err(c)),
                    None => Ok(Ok(0)),
                }
            }
        }
    }

    /// Records the bytes this claim has reserved (call under the usage
    /// lock).
    pub(super) fn set_reserved(&self, bytes: u64) -> io::Result<()> {
        write_u64(&self.file, bytes)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Unlink while still locked, so nobody can lock this file and take
        // it for the claim afterwards (they check the path).
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove claim {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_claim_second_claimant_sees_busy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        let a = Claim::acquire(&p, false).unwrap().expect("first claim");
        assert!(Claim::acquire(&p, false).unwrap().is_none());
        a.set_reserved(42).unwrap();
        assert_eq!(Claim::probe(&p).unwrap().unwrap(), 42);
        drop(a);
        assert!(!p.exists());
        assert!(Claim::acquire(&p, false).unwrap().is_some());
    }

    #[test]
    fn test_claim_probe_takes_dead_claims() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        // A claim file nobody holds: what a killed loader leaves.
        std::fs::write(&p, 7u64.to_le_bytes()).unwrap();
        let dead = Claim::probe(&p).unwrap().expect_err("dead claim");
        drop(dead);
        assert!(!p.exists());
        assert_eq!(Claim::probe(&p).unwrap().unwrap(), 0);
    }

    #[test]
    fn test_claim_locked_after_unlink_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        // Someone opened the old file, then its owner unlinked it.
        let old = open_rw_create(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        old.lock().unwrap();
        assert!(!same_file(&old, &p).unwrap());
        // A claimant still gets a fresh claim on the path.
        let c = Claim::acquire(&p, false).unwrap().expect("claim");
        assert!(same_file(&c.file, &p).unwrap());
    }
}
