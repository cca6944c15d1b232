//! The counters themselves: relaxed atomics in fixed-size structures, which
//! the request paths bump and [`super::snapshot`] copies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Opcodes below this are counted in their own slot; the rest (and opcode
/// 0) share slot 0, reported as `OTHER`. FUSE opcodes end at 53 today.
pub const OPCODE_SLOTS: usize = 64;

/// Finite latency buckets: bucket `i` counts requests that took at most
/// `2^i` microseconds (1 µs .. ~16.8 s); one more bucket takes the rest.
pub const LATENCY_BUCKETS: usize = 25;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping after 2^64, which no real count reaches).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (sizes, live entries); never below zero.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one, stopping at zero.
    #[inline]
    pub fn dec(&self) {
        // A decrement below zero is a caller's bookkeeping bug; it must not
        // wrap to 2^64 - 1 in what users see.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with fixed log2 buckets (see [`LATENCY_BUCKETS`]).
#[derive(Debug)]
pub struct Histogram {
    pub(super) buckets: [Counter; LATENCY_BUCKETS + 1],
    pub(super) sum_ns: Counter,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| Counter::default()),
            sum_ns: Counter::default(),
        }
    }
}

impl Histogram {
    /// The bucket a latency falls in: the first `i` with `latency <= 2^i`
    /// µs, or the last bucket.
    pub fn bucket_index(latency: Duration) -> usize {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if us <= 1 {
            return 0;
        }
        // Bits needed for `us - 1`: ceil(log2(us)).
        let i = (u64::BITS - (us - 1).leading_zeros()) as usize;
        i.min(LATENCY_BUCKETS)
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, latency: Duration) {
        self.buckets[Self::bucket_index(latency)].inc();
        self.sum_ns
            .add(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Requests and errors of one opcode.
#[derive(Debug, Default)]
pub(super) struct OpCounters {
    pub(super) requests: Counter,
    pub(super) errors: Counter,
}

/// FUSE requests: per opcode, served bytes and latency.
#[derive(Debug)]
pub struct RequestCounters {
    pub(super) ops: [OpCounters; OPCODE_SLOTS],
    pub(super) served_bytes: Counter,
    pub(super) latency: Histogram,
}

impl Default for RequestCounters {
    fn default() -> Self {
        RequestCounters {
            ops: std::array::from_fn(|_| OpCounters::default()),
            served_bytes: Counter::default(),
            latency: Histogram::default(),
        }
    }
}

impl RequestCounters {
    /// The table slot of an opcode.
    #[inline]
    pub fn slot(opcode: u32) -> usize {
        usize::try_from(opcode)
            .ok()
            .filter(|&i| i < OPCODE_SLOTS)
            .unwrap_or(0)
    }

    /// Records one answered request: `bytes` of file data in its reply,
    /// `errno` its error (0 on success; the sign does not matter).
    #[inline]
    pub fn observe(&self, opcode: u32, latency: Duration, bytes: u64, errno: i32) {
        let op = &self.ops[Self::slot(opcode)];
        op.requests.inc();
        if errno != 0 {
            op.errors.inc();
        }
        if bytes != 0 {
            self.served_bytes.add(bytes);
        }
        self.latency.observe(latency);
    }
}

/// Counters of a cache of decoded extents.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Lookups answered from the cache.
    pub hits: Counter,
    /// Lookups that had to decode.
    pub misses: Counter,
    /// Entries dropped to make room.
    pub evictions: Counter,
    /// Bytes held now.
    pub bytes: Gauge,
    /// Entries held now.
    pub entries: Gauge,
}

/// Records into an image's cache counters and the daemon's totals at once
/// (from [`ImageMetrics::extent_cache`]), or into the totals only (from
/// [`Metrics::extent_cache`], for a cache not tied to one image).
///
/// Counters go to both; sizes ([`CacheRecorder::set_size`]) only to the
/// nearest owner, and the daemon's size is the sum over its images, so an
/// image that goes away takes its size with it.
#[derive(Debug, Clone, Copy)]
pub struct CacheRecorder<'a> {
    pub(super) own: Option<&'a CacheCounters>,
    pub(super) total: &'a CacheCounters,
}

impl CacheRecorder<'_> {
    fn each(&self, f: impl Fn(&CacheCounters)) {
        if let Some(own) = self.own {
            f(own);
        }
        f(self.total);
    }

    /// A lookup answered from the cache.
    #[inline]
    pub fn hit(&self) {
        self.each(|c| c.hits.inc());
    }

    /// A lookup that had to decode.
    #[inline]
    pub fn miss(&self) {
        self.each(|c| c.misses.inc());
    }

    /// `n` entries evicted.
    #[inline]
    pub fn evicted(&self, n: u64) {
        self.each(|c| c.evictions.add(n));
    }

    /// What the cache holds now.
    #[inline]
    pub fn set_size(&self, bytes: u64, entries: u64) {
        let c = self.own.unwrap_or(self.total);
        c.bytes.set(bytes);
        c.entries.set(entries);
    }
}

/// Counters of the DAX window.
#[derive(Debug, Default)]
pub struct DaxCounters {
    /// Ranges mapped now.
    pub active: Gauge,
    /// SETUPMAPPING ranges mapped.
    pub maps: Counter,
    /// REMOVEMAPPING ranges unmapped.
    pub unmaps: Counter,
    /// Map or unmap requests that failed.
    pub failures: Counter,
    /// Of `maps`: ranges of a content store's mapped copy (shared by the
    /// guests of a trust domain).
    pub shared_maps: Counter,
    /// Mapped contents found changed through a window and replaced.
    pub replaced: Counter,
    /// FUSE_READs of regular files on connections with a window (data
    /// not served by a mapping).
    pub file_reads: Counter,
}

/// Counters kept for the daemon as a whole.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) requests: RequestCounters,
    pub(super) extent_cache: CacheCounters,
}
