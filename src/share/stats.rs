//! Per-domain counters, shared by every process that uses a store.
//!
//! One 64-byte file per domain (`stats` in the domain's directory): the
//! magic `EVFSCNT1`, then little-endian u64 counters (loads, hits,
//! verification failures, evictions) and room for more. Every change is a
//! read-modify-write under an exclusive `flock`, so concurrent processes
//! never lose a count; a process killed mid-update leaves the lock to the
//! kernel and the 64-byte write either done or not. A missing or
//! unrecognised file reads as zeros. Not on a hot path: once per load,
//! hit, failure or eviction.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::domain::Domain;

const MAGIC: &[u8; 8] = b"EVFSCNT1";
const SIZE: usize = 64;

/// Event counters of one domain since its store was created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Contents loaded (verified and stored).
    pub loads: u64,
    /// Entries found already stored.
    pub hits: u64,
    /// Contents whose sha256 did not match the fingerprint (not stored).
    pub verify_failures: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

/// What `store stat` shows for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStats {
    /// The domain.
    pub domain: Domain,
    /// Entries stored now.
    pub entries: u64,
    /// Bytes of content stored now.
    pub bytes: u64,
    /// Event counters.
    pub counters: Counters,
}

/// A countable event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    Load,
    Hit,
    VerifyFailure,
    Eviction,
}

impl Counters {
    fn decode(b: &[u8]) -> Self {
        if b.len() < SIZE || &b[..8] != MAGIC {
            return Self::default();
        }
        let u = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[8 + 8 * i..16 + 8 * i]);
            u64::from_le_bytes(w)
        };
        Self {
            loads: u(0),
            hits: u(1),
            verify_failures: u(2),
            evictions: u(3),
        }
    }

    fn encode(&self) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        b[..8].copy_from_slice(MAGIC);
        for (i, v) in [self.loads, self.hits, self.verify_failures, self.evictions]
            .iter()
            .enumerate()
        {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn add(&mut self, e: Event) {
        let c = match e {
            Event::Load => &mut self.loads,
            Event::Hit => &mut self.hits,
            Event::VerifyFailure => &mut self.verify_failures,
            Event::Eviction => &mut self.evictions,
        };
        *c = c.saturating_add(1);
    }
}

fn read_locked(f: &File) -> io::Result<Counters> {
    let mut b = [0u8; SIZE];
    let mut got = 0;
    while got < SIZE {
        match f.read_at(&mut b[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(Counters::decode(&b[..got]))
}

/// Counts one event in the counters file at `path` (created if missing).
pub(super) fn bump(path: &Path, e: Event) -> io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    f.lock()?;
    let mut c = read_locked(&f)?;
    c.add(e);
    f.write_all_at(&c.encode(), 0)
    // Closing the file releases the lock.
}

/// Reads the counters file at `path` (zeros when missing).
pub(super) fn read(path: &Path) -> io::Result<Counters> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Counters::default()),
        Err(e) => return Err(e),
    };
    f.lock_shared()?;
    read_locked(&f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counters_bump_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stats");
        assert_eq!(read(&p).unwrap(), Counters::default());
        for e in [Event::Load, Event::Hit, Event::Hit, Event::VerifyFailure] {
            bump(&p, e).unwrap();
        }
        bump(&p, Event::Eviction).unwrap();
        let c = read(&p).unwrap();
        assert_eq!(
            c,
            Counters {
                loads: 1,
                hits: 2,
                verify_failures: 1,
                evictions: 1
            }
        );
    }

    #[test]
    fn test_counters_garbage_file_reads_as_zero_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stats");
        std::fs::write(
            &p,
            b"not a counters file at all, but long enough to pass size checks",
        )
        .unwrap();
        assert_eq!(read(&p).unwrap(), Counters::default());
        bump(&p, Event::Hit).unwrap();
        assert_eq!(read(&p).unwrap().hits, 1);
    }

    #[test]
    fn test_counters_concurrent_bumps_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stats");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        bump(&p, Event::Load).unwrap();
                    }
                });
            }
        });
        assert_eq!(read(&p).unwrap().loads, 200);
    }
}
