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
//!   decoded-extent cache ([`CacheCounters`]), DAX mappings
//!   ([`DaxCounters`]) and one
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

mod counters;
mod names;
pub mod prometheus;
mod snapshot;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use counters::Totals;
pub use counters::{
    CacheCounters, CacheRecorder, Counter, DaxCounters, Gauge, Histogram, RequestCounters,
    LATENCY_BUCKETS, OPCODE_SLOTS,
};
pub use names::opcode_name;
pub use snapshot::{
    CacheSnapshot, DaxSnapshot, HistogramBucket, HistogramSnapshot, ImageSnapshot, MetricsSnapshot,
    OpSnapshot, RequestSnapshot, StoreDomainSnapshot, StoreSnapshot,
};

/// Most images the registry holds at once.
pub const MAX_IMAGES: usize = 4096;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// [`MAX_IMAGES`] images are already registered.
    #[error("the metrics registry already holds {MAX_IMAGES} images")]
    TooManyImages,
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
            // The content store counts for itself: the share's snapshot
            // (`Share::metrics_snapshot`) fills this in when it has one.
            store: StoreSnapshot::default(),
            dax: snapshot::dax(&self.dax),
            images,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::check_prometheus;
