//! A bounded cache of decoded compressed extents.
//!
//! Sequential reads through one pcluster decode it once; concurrent readers
//! of the same pcluster wait for the first decoder instead of decoding it
//! again. Once the decoded bytes exceed the budget, entries are evicted in
//! second-chance (CLOCK) order: the oldest entry goes unless it was used
//! since it was last passed over, so a hit costs a flag and an eviction
//! O(1) amortised, however many extents are cached.
//!
//! A decode that fails for a lasting reason (the bytes are corrupt, the
//! construct unsupported: [`Error::is_lasting`]) is remembered like a
//! success, so the next read of the same pcluster gets the same error at
//! once instead of decoding megabytes again to fail again: a corrupt
//! extent shared by many files (the packed inode's) costs one decode, as
//! in the kernel. A remembered failure weighs [`FAILURE_COST`] bytes of
//! the budget and is evicted like any entry. I/O errors are not kept (a
//! later read may succeed).
//!
//! Images in guest memory may be rewritten by the guest while they are
//! read; a remembered failure then stays until it is evicted even if the
//! bytes become valid again. That is by decision: images are declared
//! read-only, a guest rewriting its own image only hurts its own reads,
//! and what matters is that each pcluster costs the daemon at most one
//! decode while it is cached, whatever the guest does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use foldhash::fast::RandomState;

use super::{Error, Result};

/// Identifies one decoded extent: where its pcluster is and how much of it
/// is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Physical position of the pcluster (device 0 address space, or a
    /// metadata position for inline tails).
    pub pa: u64,
    /// The pcluster is inline metadata (`pa` is a metadata position).
    pub inline: bool,
    /// The pcluster lives in the metabox address space.
    pub in_metabox: bool,
    /// Decoded length.
    pub llen: u64,
    /// Offset of the extent inside its first block (interlaced data
    /// depends on it).
    pub la_in_block: u32,
}

/// A decoded extent, shared by the cache and its readers.
pub type Decoded = Arc<Vec<u8>>;

/// Bound on remembered once-read extents (cleared when reached).
const MAX_SEEN: usize = 1 << 16;

/// Budget bytes a remembered failure weighs (its entry, its error's text
/// and a share of the map), so failures are bounded and evicted like
/// decoded extents.
pub const FAILURE_COST: u64 = 1024;

/// A decode in flight or done: its bytes or its error (kept with its type,
/// so every reader waiting on it gets the same errno).
type Slot = Arc<OnceLock<Result<Decoded>>>;

#[derive(Debug)]
struct Entry {
    slot: Slot,
    /// Used since the clock hand last passed it.
    referenced: bool,
    /// Which insertion of `key` this is (stale clock positions of an
    /// earlier, removed entry of the same key are skipped).
    generation: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Entry, RandomState>,
    /// Every entry once, oldest first, with its generation: the clock.
    clock: VecDeque<(Key, u64)>,
    /// Extents read whole once and not cached (admission on second use).
    seen: HashSet<Key, RandomState>,
    generation: u64,
    bytes: u64,
    /// Entries evicted so far.
    evictions: u64,
}

/// What a decoded-extent cache did so far and holds now (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Extent lookups answered from the cache (or from another reader's
    /// decode in flight).
    pub hits: u64,
    /// Extent lookups that decoded.
    pub misses: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
    /// Decoded bytes held now.
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
}

impl Inner {
    /// Evicts decoded entries until at most `budget` bytes are held.
    /// Entries still being decoded (no bytes yet) and recently used ones
    /// get another round; stale clock positions are dropped. Each pass
    /// over an entry either evicts it or clears its flag, so this ends.
    fn evict_to(&mut self, budget: u64) {
        let mut spared = 0usize;
        while self.bytes > budget {
            let Some((key, generation)) = self.clock.pop_front() else {
                return;
            };
            let Some(e) = self.map.get_mut(&key) else {
                continue;
            };
            if e.generation != generation {
                continue;
            }
            if e.bytes == 0 || e.referenced {
                e.referenced = false;
                self.clock.push_back((key, generation));
                spared = spared.saturating_add(1);
                if spared > self.clock.len().saturating_mul(2) {
                    // Everything left is being decoded.
                    return;
                }
                continue;
            }
            if let Some(e) = self.map.remove(&key) {
                self.bytes = self.bytes.saturating_sub(e.bytes);
                self.evictions = self.evictions.saturating_add(1);
            }
        }
    }
}

/// What [`ZCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// Decoded and cached.
    Ready(Decoded),
    /// Another reader is decoding it now.
    Pending,
    /// Decoded before and failed (a lasting failure, remembered).
    Failed(Error),
    /// Not cached; `again`: a whole-extent reader asked for it before.
    Absent {
        /// Asked for before (see [`ZCache::lookup`]).
        again: bool,
    },
}

/// The decoded-extent cache.
#[derive(Debug)]
pub struct ZCache {
    inner: Mutex<Inner>,
    budget: u64,
    /// Lookups answered without decoding (relaxed: only reported).
    hits: AtomicU64,
    /// Lookups that decoded.
    misses: AtomicU64,
}

impl ZCache {
    /// A cache holding at most `budget` decoded bytes (0 disables caching
    /// beyond the decode in flight).
    pub fn new(budget: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Counts so far and what is held now.
    pub fn stats(&self) -> CacheStats {
        let (bytes, entries, evictions) = self
            .inner
            .lock()
            .map(|i| (i.bytes, i.map.len() as u64, i.evictions))
            .unwrap_or_default();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions,
            bytes,
            entries,
        }
    }

    /// A lookup that decodes outside the cache (a stream read whole once).
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Decoded bytes currently held.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn bytes(&self) -> u64 {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    /// Returns the decoded extent for `key`, decoding it with `decode` if no
    /// other reader has (or is doing so).
    pub fn get_or_decode(
        &self,
        key: Key,
        decode: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Decoded> {
        let slot = {
            let mut g = self.lock()?;
            if let Some(e) = g.map.get_mut(&key) {
                e.referenced = true;
                e.slot.clone()
            } else {
                g.generation = g.generation.wrapping_add(1);
                let generation = g.generation;
                let slot: Slot = Arc::new(OnceLock::new());
                g.map.insert(
                    key,
                    Entry {
                        slot: slot.clone(),
                        referenced: false,
                        generation,
                        bytes: 0,
                    },
                );
                g.clock.push_back((key, generation));
                slot
            }
        };
        let mut fresh = false;
        let r = slot.get_or_init(|| {
            fresh = true;
            decode().map(Arc::new)
        });
        let counter = if fresh { &self.misses } else { &self.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(data) => {
                let data = data.clone();
                if fresh {
                    self.account(key, &slot, data.len() as u64)?;
                }
                Ok(data)
            }
            Err(e) => {
                let e = e.clone();
                // Readers that waited on this decode share its error. A
                // lasting failure is kept like a success (the same bytes
                // fail the same way); a transient one is dropped, so a
                // later read retries.
                if fresh {
                    if e.is_lasting() {
                        self.account(key, &slot, FAILURE_COST)?;
                    } else if let Ok(mut g) = self.inner.lock() {
                        if g.map.get(&key).is_some_and(|e| Arc::ptr_eq(&e.slot, &slot)) {
                            g.map.remove(&key);
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// Remembers that decoding `key` failed with `err`, found by a reader
    /// that decoded it outside the cache (a stream); as for a failure in
    /// [`ZCache::get_or_decode`], only a lasting one is kept. An entry
    /// already there (decoded by another reader meanwhile) is left alone.
    pub fn remember_failure(&self, key: Key, err: &Error) {
        if !err.is_lasting() || self.budget == 0 {
            return;
        }
        let slot: Slot = Arc::new(OnceLock::new());
        if slot.set(Err(err.clone())).is_err() {
            return;
        }
        {
            let Ok(mut g) = self.inner.lock() else {
                return;
            };
            if g.map.contains_key(&key) {
                return;
            }
            g.seen.remove(&key);
            g.generation = g.generation.wrapping_add(1);
            let generation = g.generation;
            g.map.insert(
                key,
                Entry {
                    slot: slot.clone(),
                    referenced: false,
                    generation,
                    bytes: 0,
                },
            );
            g.clock.push_back((key, generation));
        }
        let _ = self.account(key, &slot, FAILURE_COST);
    }

    /// What the cache holds for `key`; never starts a decode. With
    /// `whole` (the reader wants the entire extent), an absent key is
    /// remembered, and [`Lookup::Absent`] says whether it was already
    /// asked for: extents read whole once (a stream) are not worth keeping,
    /// extents read whole again are.
    pub fn lookup(&self, key: Key, whole: bool) -> Lookup {
        let slot = {
            let Ok(mut g) = self.inner.lock() else {
                return Lookup::Absent { again: false };
            };
            let Some(e) = g.map.get_mut(&key) else {
                if !whole || self.budget == 0 {
                    return Lookup::Absent { again: false };
                }
                if g.seen.remove(&key) {
                    return Lookup::Absent { again: true };
                }
                if g.seen.len() >= MAX_SEEN {
                    g.seen.clear();
                }
                g.seen.insert(key);
                return Lookup::Absent { again: false };
            };
            e.referenced = true;
            e.slot.clone()
        };
        match slot.get() {
            Some(Ok(data)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Ready(data.clone())
            }
            Some(Err(e)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Failed(e.clone())
            }
            None => Lookup::Pending,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::Poisoned("the decode cache lock"))
    }

    fn account(&self, key: Key, slot: &Slot, len: u64) -> Result<()> {
        let mut g = self.lock()?;
        let Some(e) = g.map.get_mut(&key) else {
            return Ok(());
        };
        if !Arc::ptr_eq(&e.slot, slot) {
            return Ok(());
        }
        e.bytes = len;
        g.bytes = g.bytes.saturating_add(len);
        g.evict_to(self.budget);
        if g.clock.len() > g.map.len().saturating_mul(2).saturating_add(64) {
            // Mostly stale positions (failed decodes): rebuild the clock
            // from the live entries, oldest first.
            let Inner { map, clock, .. } = &mut *g;
            clock.retain(|(k, generation)| map.get(k).is_some_and(|e| e.generation == *generation));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::erofs::error::At;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(pa: u64) -> Key {
        Key {
            pa,
            inline: false,
            in_metabox: false,
            llen: 10,
            la_in_block: 0,
        }
    }

    #[test]
    fn test_stats_count_hits_misses_and_evictions() {
        // Room for two 10-byte extents.
        let c = ZCache::new(20);
        let ten = || Ok(vec![0u8; 10]);
        c.get_or_decode(key(1), ten).unwrap();
        c.get_or_decode(key(1), ten).unwrap();
        assert!(matches!(c.lookup(key(1), false), Lookup::Ready(_)));
        assert!(matches!(c.lookup(key(2), false), Lookup::Absent { .. }));
        c.count_miss();
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.evictions), (2, 2, 0));
        assert_eq!((s.bytes, s.entries), (10, 1));
        // Two more extents: one of the three must go.
        c.get_or_decode(key(2), ten).unwrap();
        c.get_or_decode(key(3), ten).unwrap();
        let s = c.stats();
        assert_eq!((s.misses, s.evictions), (4, 1));
        assert_eq!((s.bytes, s.entries), (20, 2));
    }

    #[test]
    fn test_zcache_decodes_once_when_hit() {
        let c = ZCache::new(1 << 20);
        let n = AtomicUsize::new(0);
        for _ in 0..3 {
            let d = c
                .get_or_decode(key(1), || {
                    n.fetch_add(1, Ordering::SeqCst);
                    Ok(vec![7; 10])
                })
                .unwrap();
            assert_eq!(&d[..], &[7; 10]);
        }
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn test_zcache_concurrent_readers_decode_once() {
        let c = Arc::new(ZCache::new(1 << 20));
        let n = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, n, b) = (c.clone(), n.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    c.get_or_decode(key(5), || {
                        n.fetch_add(1, Ordering::SeqCst);
                        Ok(vec![1; 10])
                    })
                    .unwrap()
                    .len()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 10);
        }
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn test_zcache_evicts_lru_over_budget() {
        let c = ZCache::new(25);
        for pa in 0..5 {
            c.get_or_decode(key(pa), || Ok(vec![0; 10])).unwrap();
        }
        assert!(c.bytes() <= 25);
        // The most recent entry is still cached.
        let n = AtomicUsize::new(0);
        c.get_or_decode(key(4), || {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(vec![0; 10])
        })
        .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn test_zcache_used_entries_get_a_second_chance() {
        let c = ZCache::new(30);
        for pa in 0..3 {
            c.get_or_decode(key(pa), || Ok(vec![0; 10])).unwrap();
        }
        // Entry 0, the oldest, is used again: entry 1 goes first.
        assert!(matches!(c.lookup(key(0), false), Lookup::Ready(_)));
        c.get_or_decode(key(3), || Ok(vec![0; 10])).unwrap();
        assert!(matches!(c.lookup(key(0), false), Lookup::Ready(_)));
        assert!(matches!(c.lookup(key(1), false), Lookup::Absent { .. }));
        assert!(matches!(c.lookup(key(2), false), Lookup::Ready(_)));
        assert_eq!(c.bytes(), 30);
    }

    #[test]
    fn test_zcache_clock_stays_bounded() {
        // Many evictions and failed reads (whose entries are removed
        // without eviction): the clock keeps about one position per entry.
        let c = ZCache::new(100);
        for pa in 0..10_000u64 {
            if pa % 3 == 0 {
                let io = std::io::Error::from_raw_os_error(libc::EIO);
                let _ = c.get_or_decode(key(pa), || Err(Error::io(At::Image(0), 1, io)));
            } else {
                c.get_or_decode(key(pa), || Ok(vec![0; 10])).unwrap();
            }
        }
        let g = c.inner.lock().unwrap();
        assert!(g.bytes <= 100);
        assert!(g.map.len() <= 10, "{} entries", g.map.len());
        assert!(
            g.clock.len() <= 2 * g.map.len() + 65,
            "{} clock positions",
            g.clock.len()
        );
    }

    #[test]
    fn test_zcache_lasting_failure_is_kept() {
        // A corrupt pcluster fails once; the retry (and a lookup) answers
        // the same error without decoding again.
        let c = ZCache::new(1 << 20);
        let n = AtomicUsize::new(0);
        for _ in 0..3 {
            let e = c
                .get_or_decode(key(9), || {
                    n.fetch_add(1, Ordering::SeqCst);
                    Err(Error::corrupt_unplaced(None, "lzma", "bad"))
                })
                .unwrap_err();
            assert!(e.to_string().contains("lzma: bad"), "{e}");
        }
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(matches!(c.lookup(key(9), true), Lookup::Failed(_)));
        assert_eq!(c.bytes(), FAILURE_COST);
    }

    #[test]
    fn test_zcache_io_failure_is_not_kept() {
        let c = ZCache::new(1 << 20);
        let io = || {
            Error::io(
                At::Image(0),
                1,
                std::io::Error::from_raw_os_error(libc::EIO),
            )
        };
        assert!(c.get_or_decode(key(9), || Err(io())).is_err());
        assert!(c.get_or_decode(key(9), || Ok(vec![1])).is_ok());
        c.remember_failure(key(10), &io());
        assert!(matches!(c.lookup(key(10), false), Lookup::Absent { .. }));
    }

    #[test]
    fn test_zcache_remembered_failures_are_bounded() {
        // A corrupt image with many bad pclusters: failures are evicted
        // like extents, within the budget.
        let c = ZCache::new(8 * FAILURE_COST);
        for pa in 0..1000u64 {
            let bad = Error::corrupt_unplaced(None, "x", "bad");
            if pa % 2 == 0 {
                let _ = c.get_or_decode(key(pa), || Err(bad));
            } else {
                c.remember_failure(key(pa), &bad);
            }
        }
        assert!(c.bytes() <= 8 * FAILURE_COST);
        let g = c.inner.lock().unwrap();
        assert!(g.map.len() <= 8, "{} entries", g.map.len());
        assert!(g.clock.len() <= 2 * g.map.len() + 65);
    }

    #[test]
    fn test_zcache_remember_failure_keeps_a_decoded_entry() {
        let c = ZCache::new(1 << 20);
        c.get_or_decode(key(1), || Ok(vec![3; 10])).unwrap();
        c.remember_failure(key(1), &Error::corrupt_unplaced(None, "x", "bad"));
        assert!(matches!(c.lookup(key(1), false), Lookup::Ready(_)));
        c.remember_failure(key(2), &Error::corrupt_unplaced(None, "x", "bad"));
        assert!(matches!(c.lookup(key(2), false), Lookup::Failed(_)));
    }

    #[test]
    fn test_zcache_failure_keeps_its_type() {
        // A decode failing for a missing device answers ENODEV, not a
        // generic EIO.
        let c = ZCache::new(100);
        let missing = Error::MissingDevice {
            id: 1,
            given: 0,
            nid: Some(5),
            offset: 4096,
        };
        let e = c
            .get_or_decode(key(3), || Err(missing.clone()))
            .unwrap_err();
        assert!(matches!(e, Error::MissingDevice { id: 1, .. }), "{e}");
        assert_eq!(e.errno(), libc::ENODEV);
        let e = c
            .get_or_decode(key(4), || Err(Error::unsupported(Some(5), "x")))
            .unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
    }
}
