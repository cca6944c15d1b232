//! The metrics registry: counters the request paths bump and the API reads.
//!
//! Everything a hot path touches is a relaxed atomic in a fixed-size
//! structure: recording a request, a cache hit or a DAX mapping takes no lock
//! and allocates nothing. The only lock guards the table of images, which
//! changes when an image is added or removed and is read when a snapshot is
//! taken; request paths hold their image's [`ImageMetrics`] (an `Arc`) and
//! never look it up by name.
//!
//! - [`Metrics`]: the daemon's registry: FUSE requests per opcode, errors,
//!   served bytes and a latency histogram ([`RequestCounters`]), the
//!   decoded-extent cache ([`CacheCounters`]), the content store
//!   ([`StoreCounters`]), DAX mappings ([`DaxCounters`]) and one
//!   [`ImageMetrics`] per image, at most [`MAX_IMAGES`];
//! - [`MetricsSnapshot`]: a point-in-time copy, serialised to JSON (serde)
//!   and to the Prometheus text format ([`MetricsSnapshot::to_prometheus`]).
//!
//! Counts are per process and start at zero; counters never decrease (an
//! image's counters go away with the image, the daemon's totals keep what it
//! counted). Values read in one snapshot are not taken at one instant: each
//! counter is exact, sums across counters may be off by requests in flight.
//!
//! Trusts: nothing; opcodes outside the table are counted as `OTHER` and
//! image names are escaped where a format needs it.
#![forbid(unsafe_code)]

mod names;
pub mod prometheus;
mod snapshot;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use names::opcode_name;
pub use snapshot::{
    CacheSnapshot, DaxSnapshot, HistogramBucket, HistogramSnapshot, ImageSnapshot, MetricsSnapshot,
    OpSnapshot, RequestSnapshot, StoreSnapshot,
};

/// Opcodes below this are counted in their own slot; the rest (and opcode
/// 0) share slot 0, reported as `OTHER`. FUSE opcodes end at 53 today.
pub const OPCODE_SLOTS: usize = 64;

/// Finite latency buckets: bucket `i` counts requests that took at most
/// `2^i` microseconds (1 µs .. ~16.8 s); one more bucket takes the rest.
pub const LATENCY_BUCKETS: usize = 25;

/// Most images the registry holds at once.
pub const MAX_IMAGES: usize = 4096;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// [`MAX_IMAGES`] images are already registered.
    #[error("the metrics registry already holds {MAX_IMAGES} images")]
    TooManyImages,
}

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
    buckets: [Counter; LATENCY_BUCKETS + 1],
    sum_ns: Counter,
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
struct OpCounters {
    requests: Counter,
    errors: Counter,
}

/// FUSE requests: per opcode, served bytes and latency.
#[derive(Debug)]
pub struct RequestCounters {
    ops: [OpCounters; OPCODE_SLOTS],
    served_bytes: Counter,
    latency: Histogram,
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
    own: Option<&'a CacheCounters>,
    total: &'a CacheCounters,
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

/// Counters of the shared content store.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Entries in the store now.
    pub entries: Gauge,
    /// Bytes of content held by the store now.
    pub shared_bytes: Gauge,
    /// Entries loaded (decoded and written) by this process.
    pub loads: Counter,
    /// Reads answered from an existing entry.
    pub hits: Counter,
    /// Loaded content whose digest did not match its fingerprint.
    pub verification_failures: Counter,
    /// Entries evicted by this process.
    pub evictions: Counter,
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
}

/// Counters kept for the daemon as a whole.
#[derive(Debug, Default)]
struct Totals {
    requests: RequestCounters,
    extent_cache: CacheCounters,
}

/// The counters of one image. Recording through it also counts in the
/// daemon's totals.
#[derive(Debug)]
pub struct ImageMetrics {
    name: String,
    requests: RequestCounters,
    extent_cache: CacheCounters,
    totals: Arc<Totals>,
}

impl ImageMetrics {
    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records one answered request about this image (see
    /// [`RequestCounters::observe`]).
    #[inline]
    pub fn observe_request(&self, opcode: u32, latency: Duration, bytes: u64, errno: i32) {
        self.requests.observe(opcode, latency, bytes, errno);
        self.totals.requests.observe(opcode, latency, bytes, errno);
    }

    /// This image's decoded-extent cache.
    pub fn extent_cache(&self) -> CacheRecorder<'_> {
        CacheRecorder {
            own: Some(&self.extent_cache),
            total: &self.totals.extent_cache,
        }
    }

    fn snapshot(&self) -> ImageSnapshot {
        ImageSnapshot {
            requests: snapshot::requests(&self.requests),
            extent_cache: snapshot::cache(&self.extent_cache, 0, 0),
        }
    }
}

/// The daemon's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    totals: Arc<Totals>,
    store: StoreCounters,
    dax: DaxCounters,
    images: RwLock<BTreeMap<String, Arc<ImageMetrics>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry; uptime counts from now.
    pub fn new() -> Self {
        Metrics {
            started: Instant::now(),
            totals: Arc::default(),
            store: StoreCounters::default(),
            dax: DaxCounters::default(),
            images: RwLock::default(),
        }
    }

    /// Records one answered request that concerns no single image (INIT,
    /// the share's root, STATFS...). Requests about an image go through
    /// [`ImageMetrics::observe_request`], which counts here too.
    #[inline]
    pub fn observe_request(&self, opcode: u32, latency: Duration, bytes: u64, errno: i32) {
        self.totals.requests.observe(opcode, latency, bytes, errno);
    }

    /// A decoded-extent cache not tied to one image.
    pub fn extent_cache(&self) -> CacheRecorder<'_> {
        CacheRecorder {
            own: None,
            total: &self.totals.extent_cache,
        }
    }

    /// The content store's counters.
    pub fn store(&self) -> &StoreCounters {
        &self.store
    }

    /// The DAX window's counters.
    pub fn dax(&self) -> &DaxCounters {
        &self.dax
    }

    /// Registers an image and returns its counters, fresh. A name already
    /// registered gets new counters (the old handle keeps counting into the
    /// totals only).
    pub fn add_image(&self, name: &str) -> Result<Arc<ImageMetrics>, MetricsError> {
        let img = Arc::new(ImageMetrics {
            name: name.to_owned(),
            requests: RequestCounters::default(),
            extent_cache: CacheCounters::default(),
            totals: Arc::clone(&self.totals),
        });
        let mut images = self.images.write().unwrap_or_else(|e| e.into_inner());
        if images.len() >= MAX_IMAGES && !images.contains_key(name) {
            return Err(MetricsError::TooManyImages);
        }
        images.insert(name.to_owned(), Arc::clone(&img));
        Ok(img)
    }

    /// Unregisters an image; its counts stay in the totals.
    pub fn remove_image(&self, name: &str) -> Option<Arc<ImageMetrics>> {
        self.images
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// The counters of a registered image.
    pub fn image(&self, name: &str) -> Option<Arc<ImageMetrics>> {
        self.images
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A copy of every value now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let images: Vec<Arc<ImageMetrics>> = self
            .images
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let images: BTreeMap<String, ImageSnapshot> = images
            .iter()
            .map(|i| (i.name.clone(), i.snapshot()))
            .collect();
        let (img_bytes, img_entries) = images.values().fold((0u64, 0u64), |(b, e), i| {
            (
                b.saturating_add(i.extent_cache.bytes),
                e.saturating_add(i.extent_cache.entries),
            )
        });
        MetricsSnapshot {
            uptime_seconds: self.started.elapsed().as_secs(),
            requests: snapshot::requests(&self.totals.requests),
            extent_cache: snapshot::cache(&self.totals.extent_cache, img_bytes, img_entries),
            store: snapshot::store(&self.store),
            dax: snapshot::dax(&self.dax),
            images,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::check_prometheus;
