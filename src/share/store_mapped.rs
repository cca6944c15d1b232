//! Mapped copies: the content of a (domain, fingerprint) as DAX windows
//! map it, beside the entries READs are answered from.
//!
//! A VMM maps every DAX range writable (QEMU 11.1 does even when asked for
//! a read-only map) and needs the file to cover whole 2 MiB ranges. So a
//! guest mapping a store entry could change it, and an entry's length is
//! its content's. A mapped copy is therefore a file of its own,
//! `domains/DOMAIN/mapped/HEX`: the verified content followed by zeros (a
//! hole) up to a multiple of [`MAPPED_ALIGN`], opened read-write. It is
//! loaded like an entry (claim `claims/HEX.map`, partial file
//! `tmp/HEX.map`, published only when its sha256 is HEX), counted in the
//! store's size and evicted like one (never while held: an [`Entry`] of a
//! mapped copy holds a shared lock, as any entry does). Whoever maps it
//! must check it is still the content before each mapping (guests of the
//! domain may have written into it) and drop a changed one with
//! [`Store::drop_mapped`]: the next load makes a fresh copy, while those
//! who still map the changed one keep it until they let go.
//!
//! READs, FUSE passthrough and local mounts never read mapped copies, so a
//! guest writing through its window reaches only the guests of its own
//! domain that map the same copy at the same time.

use std::fs;
use std::io;
use std::path::Path;

use super::{claim, DomainDir, Entry, LoadOutcome, Store};
use crate::share::domain::Domain;
use crate::share::fingerprint::Fingerprint;
use crate::share::stats::Event;
use crate::share::{Error, Result};

/// Mapped copies are padded with zeros to a multiple of this (the
/// kernel's DAX range, `FUSE_DAX_SZ`).
pub const MAPPED_ALIGN: u64 = 2 << 20;

/// Which of a content's two stored forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The entry READs and passthrough opens use: the content, read-only.
    Read,
    /// The mapped copy DAX windows map: the content padded with zeros to
    /// [`MAPPED_ALIGN`], opened read-write.
    Mapped,
}

impl Kind {
    pub(super) fn dir(self, d: &DomainDir) -> &Path {
        match self {
            Kind::Read => &d.objects,
            Kind::Mapped => &d.mapped,
        }
    }

    /// The name of the claim and partial file of a load.
    pub(super) fn work_name(self, fp: &Fingerprint) -> String {
        match self {
            Kind::Read => fp.to_hex(),
            Kind::Mapped => format!("{}.map", fp.to_hex()),
        }
    }

    /// The stored file's length for `len` bytes of content.
    pub(super) fn stored_len(self, len: u64) -> Result<u64> {
        match self {
            Kind::Read => Ok(len),
            Kind::Mapped => len
                .checked_next_multiple_of(MAPPED_ALIGN)
                .ok_or(Error::Full {
                    len,
                    used: 0,
                    limit: u64::MAX,
                }),
        }
    }
}

impl Store {
    /// The mapped copy of `fingerprint` in `domain`, if there is one and
    /// it is not being evicted right now (opened read-write; its length is
    /// the padded length). Counts a hit. Never waits. The copy may have
    /// been changed by a guest since it was stored: check it.
    pub fn get_mapped(&self, domain: &Domain, fingerprint: &Fingerprint) -> Result<Option<Entry>> {
        let d = self.domain_dir(domain);
        let e = self.open_kind(Kind::Mapped, &d, domain, fingerprint)?;
        if e.is_some() {
            self.count(&d, Event::Hit);
        }
        Ok(e)
    }

    /// As [`Store::load_waiting`], for the mapped copy: `len` bytes of
    /// content read through `read`, verified, then padded. When another
    /// process is making the same copy, waits for it (or its death) and
    /// returns that copy: guests of a domain reading the same files at the
    /// same time get one copy, not a private one each.
    pub fn load_mapped(
        &self,
        domain: &Domain,
        fingerprint: &Fingerprint,
        len: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
    ) -> Result<LoadOutcome> {
        self.load_inner(Kind::Mapped, domain, fingerprint, len, true, read)
    }

    /// Removes the mapped copy `e` from the store (it was changed through
    /// a window) unless the store already holds another one in its place;
    /// `Ok(true)` when removed. Those who hold it keep it; nobody gets it
    /// any more.
    pub fn drop_mapped(&self, e: &Entry) -> Result<bool> {
        let d = self.domain_dir(e.domain());
        let path = d.mapped.join(e.fingerprint().to_hex());
        let usage = self.lock_usage()?;
        if !claim::same_file(e.file(), &path).map_err(|err| Error::io("stat", &path, err))? {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(Error::io("remove mapped copy", &path, err)),
        }
        let used = usage.get()?;
        usage.set(used.saturating_sub(e.len()))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileExt, MetadataExt};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::share::StoreOptions;

    fn reader(data: &[u8]) -> impl FnMut(u64, &mut [u8]) -> io::Result<usize> + '_ {
        move |off, buf| {
            let off = off as usize;
            let n = buf.len().min(data.len() - off);
            buf[..n].copy_from_slice(&data[off..off + n]);
            Ok(n)
        }
    }

    fn fp_of(data: &[u8]) -> Fingerprint {
        Fingerprint::from_sha256(Sha256::digest(data).into())
    }

    fn stored(o: LoadOutcome) -> Entry {
        match o {
            LoadOutcome::Stored(e) | LoadOutcome::AlreadyStored(e) => e,
            LoadOutcome::InProgress => panic!("in progress"),
        }
    }

    #[test]
    fn test_mapped_copy_is_padded_writable_and_apart_from_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions {
                size_limit: 1 << 30,
            },
        )
        .unwrap();
        let d = Domain::new("t").unwrap();
        let data: Vec<u8> = (0..3 * MAPPED_ALIGN / 2).map(|i| i as u8).collect();
        let fp = fp_of(&data);
        assert!(s.get_mapped(&d, &fp).unwrap().is_none());
        let m = stored(
            s.load_mapped(&d, &fp, data.len() as u64, &mut reader(&data))
                .unwrap(),
        );
        assert_eq!(m.len(), 2 * MAPPED_ALIGN);
        let mut head = vec![0u8; data.len()];
        m.file().read_exact_at(&mut head, 0).unwrap();
        assert!(head == data);
        let mut tail = vec![1u8; (2 * MAPPED_ALIGN) as usize - data.len()];
        m.file()
            .read_exact_at(&mut tail, data.len() as u64)
            .unwrap();
        assert!(tail.iter().all(|b| *b == 0));
        // Writable (a VMM needs it), and not the entry READs use.
        m.file().write_all_at(b"x", 0).unwrap();
        let e = stored(
            s.load(&d, &fp, data.len() as u64, &mut reader(&data))
                .unwrap(),
        );
        assert_eq!(e.len(), data.len() as u64);
        assert_ne!(
            e.file().metadata().unwrap().ino(),
            m.file().metadata().unwrap().ino()
        );
        // The same copy again, until it is dropped.
        let again = s.get_mapped(&d, &fp).unwrap().unwrap();
        assert_eq!(
            again.file().metadata().unwrap().ino(),
            m.file().metadata().unwrap().ino()
        );
        assert!(s.drop_mapped(&m).unwrap());
        assert!(!s.drop_mapped(&again).unwrap(), "already gone");
        assert!(s.get_mapped(&d, &fp).unwrap().is_none());
        // Dropping an old copy leaves a fresh one in place.
        let fresh = stored(
            s.load_mapped(&d, &fp, data.len() as u64, &mut reader(&data))
                .unwrap(),
        );
        assert!(!s.drop_mapped(&m).unwrap());
        assert!(s.get_mapped(&d, &fp).unwrap().is_some());
        assert_eq!(s.usage().unwrap(), fresh.len() + e.len());
        // A content not matching its fingerprint is never a copy.
        let other = fp_of(b"other");
        assert!(s
            .load_mapped(&d, &other, data.len() as u64, &mut reader(&data))
            .is_err());
        assert!(s.get_mapped(&d, &other).unwrap().is_none());
    }

    #[test]
    fn test_mapped_copies_count_in_the_size_and_held_ones_are_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 5 * MAPPED_ALIGN;
        let s = Store::open(dir.path(), StoreOptions { size_limit: limit }).unwrap();
        let d = Domain::new("t").unwrap();
        let a: Vec<u8> = vec![1; 100];
        let b: Vec<u8> = vec![2; 100];
        let c: Vec<u8> = vec![3; 100];
        let held = stored(s.load_mapped(&d, &fp_of(&a), 100, &mut reader(&a)).unwrap());
        drop(stored(
            s.load_mapped(&d, &fp_of(&b), 100, &mut reader(&b)).unwrap(),
        ));
        assert_eq!(s.usage().unwrap(), 2 * MAPPED_ALIGN);
        // One range more than the limit allows: the unused copy goes.
        let big = vec![4u8; (4 * MAPPED_ALIGN) as usize];
        drop(stored(
            s.load_mapped(&d, &fp_of(&big), big.len() as u64, &mut reader(&big))
                .unwrap(),
        ));
        assert!(s.get_mapped(&d, &fp_of(&b)).unwrap().is_none(), "evicted");
        assert!(s.get_mapped(&d, &fp_of(&a)).unwrap().is_some(), "held");
        drop(held);
        drop(stored(
            s.load_mapped(&d, &fp_of(&c), 100, &mut reader(&c)).unwrap(),
        ));
        assert!(s.usage().unwrap() <= limit);
    }
}
