//! Metadata of the primary device: borrowed from a memory source, or
//! through a bounded cache of its blocks, so repeated inode, directory and
//! index reads cost a hash lookup instead of a `pread` and an allocation.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;

use super::devices::Devices;
use super::error::At;
use super::{Error, Result};

const SHARDS: usize = 16;

/// Blocks read at once when a source without a page cache (O_DIRECT) is
/// missed in order: a walk's inodes and directories lie mostly in
/// ascending blocks, and one 64 KiB read costs little more than one of
/// 4 KiB.
const RUN_BLOCKS: u64 = 16;

/// Bytes of metadata: borrowed from a memory source, a slice of a cached
/// block, or an owned copy.
#[derive(Debug)]
pub enum MetaBytes<'a> {
    /// Borrowed straight from the source's memory.
    Borrowed(&'a [u8]),
    /// A range of a cached block.
    Cached(Arc<[u8]>, usize, usize),
    /// An owned copy.
    Owned(Vec<u8>),
}

impl Deref for MetaBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            MetaBytes::Borrowed(b) => b,
            MetaBytes::Cached(a, start, len) => {
                a.get(*start..).and_then(|s| s.get(..*len)).unwrap_or(&[])
            }
            MetaBytes::Owned(v) => v,
        }
    }
}

impl MetaBytes<'_> {
    /// Copies all the bytes into `dst`, which must be as long (`what` at
    /// `at` names them in the error otherwise).
    pub fn copy_into(&self, what: &'static str, at: At, dst: &mut [u8]) -> Result<()> {
        let src: &[u8] = self;
        if src.len() != dst.len() {
            return Err(Error::Truncated {
                what,
                at,
                end: at.offset().saturating_add(dst.len() as u64),
                size: at.offset().saturating_add(src.len() as u64),
            });
        }
        dst.copy_from_slice(src);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, (Arc<[u8]>, u64), RandomState>,
    tick: u64,
}

/// Cached blocks, sharded by block number to keep lock contention low.
#[derive(Debug)]
pub struct MetaCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    blkszbits: u8,
    /// The block after the last one read from an uncached source: a miss
    /// at or shortly after it reads a run of blocks.
    next_miss: AtomicU64,
}

impl MetaCache {
    /// A cache of about `budget` bytes of `1 << blkszbits`-byte blocks.
    pub fn new(budget: u64, blkszbits: u8) -> Self {
        let blocks = budget.checked_shr(u32::from(blkszbits)).unwrap_or(0);
        let per_shard = usize::try_from(blocks.div_ceil(SHARDS as u64)).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            blkszbits,
            next_miss: AtomicU64::new(u64::MAX),
        }
    }

    /// `len` bytes of metadata at byte `pos` of the primary device:
    /// borrowed when the source is memory, a range of a cached block when
    /// they fit in one, else an owned copy.
    pub(super) fn read<'a>(
        &self,
        devices: &'a Devices,
        what: &'static str,
        pos: u64,
        len: usize,
    ) -> Result<MetaBytes<'a>> {
        let src = devices.primary();
        if let Some(s) = src.slice(pos, len) {
            return Ok(MetaBytes::Borrowed(s));
        }
        let block_size = 1u64 << self.blkszbits;
        let blk = pos >> self.blkszbits;
        let off = (pos & block_size.wrapping_sub(1)) as usize;
        let truncated = || Error::Truncated {
            what,
            at: At::Image(pos),
            end: pos.saturating_add(len as u64),
            size: src.size(),
        };
        // A short block says where the block ended; the caller wants to
        // know where its bytes did.
        let whole = |e| match e {
            Error::Truncated { .. } => truncated(),
            other => other,
        };
        if off.saturating_add(len) as u64 > block_size {
            return self
                .read_across(devices, what, pos, len, &truncated)
                .map_err(whole);
        }
        let block = self.block(devices, what, blk).map_err(whole)?;
        if off.saturating_add(len) > block.len() {
            return Err(truncated());
        }
        Ok(MetaBytes::Cached(block, off, len))
    }

    /// `len` bytes at `pos` that cross a block boundary (an inode
    /// straddling two blocks, a long xattr), copied from the cached blocks
    /// (long reads, which no metadata needs, straight from the device).
    fn read_across<'a>(
        &self,
        devices: &'a Devices,
        what: &'static str,
        pos: u64,
        len: usize,
        truncated: &dyn Fn() -> Error,
    ) -> Result<MetaBytes<'a>> {
        let block_size = 1u64 << self.blkszbits;
        let mut v = vec![0u8; len];
        if len as u64 > block_size.saturating_mul(4) {
            devices.read_primary(what, pos, &mut v)?;
            return Ok(MetaBytes::Owned(v));
        }
        let mut done = 0usize;
        while let Some(rest) = len.checked_sub(done).filter(|r| *r > 0) {
            let at = pos.saturating_add(done as u64);
            let off = (at & block_size.wrapping_sub(1)) as usize;
            let block = self.block(devices, what, at >> self.blkszbits)?;
            // A block short of the bytes asked for: the image ends there.
            let piece = block
                .get(off..)
                .map(|b| &b[..b.len().min(rest)])
                .filter(|b| !b.is_empty())
                .ok_or_else(truncated)?;
            v[done..][..piece.len()].copy_from_slice(piece);
            done = done.saturating_add(piece.len());
        }
        Ok(MetaBytes::Owned(v))
    }

    /// Block `blk` of the primary device (shorter at the end of a truncated
    /// image), from the cache or read and remembered.
    fn block(&self, devices: &Devices, what: &'static str, blk: u64) -> Result<Arc<[u8]>> {
        if let Some(b) = self.get(blk) {
            return Ok(b);
        }
        let block_size = 1u64 << self.blkszbits;
        let start = blk << self.blkszbits;
        let size = devices.primary().size();
        if start >= size {
            return Err(Error::Truncated {
                what,
                at: At::Image(start),
                end: start.saturating_add(block_size),
                size,
            });
        }
        let run = self.run_len(devices.primary().uncached(), blk);
        if run > 1 {
            return self.read_run(devices, what, blk, run);
        }
        let len = size.saturating_sub(start).min(block_size) as usize;
        // Read straight into the shared block: one allocation, no copy.
        let mut b: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
        let buf = Arc::get_mut(&mut b).ok_or_else(|| {
            Error::io(
                At::Image(start),
                len,
                std::io::Error::other("a block just made is shared"),
            )
        })?;
        devices.read_primary(what, start, buf)?;
        self.insert(blk, b.clone());
        Ok(b)
    }

    /// How many blocks to read for a miss at `blk`: a run from an uncached
    /// source missed in order (at or within a run after the last read),
    /// else one.
    fn run_len(&self, uncached: bool, blk: u64) -> u64 {
        if !uncached || self.per_shard == 0 {
            return 1;
        }
        let next = self.next_miss.load(Ordering::Relaxed);
        let in_order = blk.checked_sub(next).is_some_and(|d| d < RUN_BLOCKS);
        if in_order {
            RUN_BLOCKS
        } else {
            // Where a run would start if the next miss follows this one.
            self.next_miss
                .store(blk.saturating_add(1), Ordering::Relaxed);
            1
        }
    }

    /// Reads up to `run` blocks from `blk` (fewer at the end of the
    /// image) in one read, remembers each, and returns block `blk`.
    fn read_run(
        &self,
        devices: &Devices,
        what: &'static str,
        blk: u64,
        run: u64,
    ) -> Result<Arc<[u8]>> {
        let block_size = 1usize << self.blkszbits;
        let start = blk << self.blkszbits;
        let size = devices.primary().size();
        let len = size
            .saturating_sub(start)
            .min(run.saturating_mul(block_size as u64)) as usize;
        let mut v = vec![0u8; len];
        devices.read_primary(what, start, &mut v)?;
        self.next_miss.store(
            blk.saturating_add(len.div_ceil(block_size) as u64),
            Ordering::Relaxed,
        );
        let mut blocks = (blk..).zip(v.chunks(block_size).map(Arc::<[u8]>::from));
        // `start` is inside the image (checked by the caller): one block at least.
        let (_, first) = blocks.next().ok_or(Error::Truncated {
            what,
            at: At::Image(start),
            end: start.saturating_add(block_size as u64),
            size,
        })?;
        self.insert(blk, first.clone());
        for (n, b) in blocks {
            self.insert(n, b);
        }
        Ok(first)
    }

    fn shard(&self, blk: u64) -> Option<&Mutex<Shard>> {
        self.shards
            .get(blk.checked_rem(SHARDS as u64).unwrap_or(0) as usize)
    }

    /// The cached block `blk`, if present.
    pub fn get(&self, blk: u64) -> Option<Arc<[u8]>> {
        let mut s = self.shard(blk)?.lock().ok()?;
        s.tick = s.tick.wrapping_add(1);
        let t = s.tick;
        let e = s.map.get_mut(&blk)?;
        e.1 = t;
        Some(e.0.clone())
    }

    /// Remembers block `blk`.
    pub fn insert(&self, blk: u64, data: Arc<[u8]>) {
        if self.per_shard == 0 {
            return;
        }
        let Some(Ok(mut s)) = self.shard(blk).map(|m| m.lock()) else {
            return;
        };
        s.tick = s.tick.wrapping_add(1);
        let t = s.tick;
        s.map.insert(blk, (data, t));
        if s.map.len() > self.per_shard {
            // Drop the older half in one go (amortised O(1) per insert).
            let mut ticks: Vec<u64> = s.map.values().map(|e| e.1).collect();
            let mid = ticks.len() / 2;
            let (_, cut, _) = ticks.select_nth_unstable(mid);
            let cut = *cut;
            s.map.retain(|_, e| e.1 > cut);
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn test_metacache_hit_and_bounded() {
        let c = MetaCache::new(16 * 4 * 4096, 12);
        for b in 0..1000u64 {
            c.insert(b, Arc::from(vec![b as u8; 8]));
        }
        let held: usize = c.shards.iter().map(|s| s.lock().unwrap().map.len()).sum();
        assert!(held <= 16 * 4, "{held} blocks held");
        assert_eq!(c.get(999).unwrap()[0], 999u64 as u8);
    }

    #[test]
    fn test_metabytes_views() {
        let a: Arc<[u8]> = Arc::from(vec![1u8, 2, 3, 4]);
        assert_eq!(&*MetaBytes::Cached(a, 1, 2), &[2, 3]);
        assert_eq!(&*MetaBytes::Owned(vec![9]), &[9]);
    }
}
