//! Point-in-time copies of the registry's counters: what `GET
//! /api/v1/metrics` serialises and `GET /metrics` renders.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::counters::{
    CacheCounters, DaxCounters, Histogram, RequestCounters, LATENCY_BUCKETS, OPCODE_SLOTS,
};
use super::names;

/// Every value of the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Seconds since the registry was made.
    pub uptime_seconds: u64,
    /// FUSE requests of the whole daemon.
    pub requests: RequestSnapshot,
    /// Decoded-extent caches of the whole daemon (sizes summed over images).
    pub extent_cache: CacheSnapshot,
    /// The content store as this process sees it.
    pub store: StoreSnapshot,
    /// The DAX window.
    pub dax: DaxSnapshot,
    /// Per image, by name.
    pub images: BTreeMap<String, ImageSnapshot>,
}

/// FUSE requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestSnapshot {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Bytes of file data in replies.
    pub served_bytes: u64,
    /// Per opcode, in opcode order; opcodes never seen are left out.
    pub opcodes: Vec<OpSnapshot>,
    /// How long requests took.
    pub latency: HistogramSnapshot,
}

/// The requests of one opcode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSnapshot {
    /// The opcode's name (`OTHER` for opcodes past the table).
    pub name: String,
    /// The opcode (0 for `OTHER`).
    pub opcode: u32,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// A latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Observations.
    pub count: u64,
    /// Sum of all observations, in nanoseconds.
    pub sum_ns: u64,
    /// Per bucket (not cumulative), bounds rising, the last one unbounded.
    pub buckets: Vec<HistogramBucket>,
}

/// One bucket of a histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramBucket {
    /// Upper bound in microseconds (inclusive); `None` for the last bucket.
    pub le_us: Option<u64>,
    /// Observations above the previous bound and at most this one.
    pub count: u64,
}

/// A decoded-extent cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheSnapshot {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to decode.
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
}

/// The content store.
///
/// `entries` and `shared_bytes` are what the store holds now for the
/// domains this daemon serves; `loads`, `hits`, `passthrough_opens`,
/// `verification_failures` and `evictions` are this process's; `domains`
/// has, per domain served, the store's own counters, which every process
/// using the store adds to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    /// Entries in the store now.
    pub entries: u64,
    /// Bytes of content in the store now.
    pub shared_bytes: u64,
    /// Entries loaded by this process.
    pub loads: u64,
    /// Reads answered from an existing entry: READs answered from an
    /// entry plus passthrough opens of one.
    pub hits: u64,
    /// Of the hits, opens answered with FUSE passthrough to an entry (the
    /// kernel then reads the entry without asking us).
    #[serde(default)]
    pub passthrough_opens: u64,
    /// Files whose content did not hash to their fingerprint (served
    /// unshared).
    pub verification_failures: u64,
    /// Entries evicted by this process.
    pub evictions: u64,
    /// Per trust domain served, by name: the store's counters.
    #[serde(default)]
    pub domains: BTreeMap<String, StoreDomainSnapshot>,
}

/// One trust domain of the content store, counted by every process that
/// uses the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreDomainSnapshot {
    /// Entries stored now.
    pub entries: u64,
    /// Bytes of content stored now.
    pub bytes: u64,
    /// Contents loaded (verified and stored).
    pub loads: u64,
    /// Lookups that found the content already stored.
    pub hits: u64,
    /// Contents whose sha256 was not their fingerprint.
    pub verification_failures: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

/// The DAX window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaxSnapshot {
    /// Ranges mapped now.
    pub active: u64,
    /// Ranges mapped since start.
    pub maps: u64,
    /// Ranges unmapped since start.
    pub unmaps: u64,
    /// Map or unmap requests that failed.
    pub failures: u64,
    /// Of `maps`: ranges of a content store's mapped copy.
    #[serde(default)]
    pub shared_maps: u64,
    /// Mapped contents found changed through a window and replaced.
    #[serde(default)]
    pub replaced: u64,
    /// FUSE_READs of regular files on connections with a window.
    #[serde(default)]
    pub file_reads: u64,
}

/// One image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageSnapshot {
    /// FUSE requests about the image.
    pub requests: RequestSnapshot,
    /// The image's decoded-extent cache.
    pub extent_cache: CacheSnapshot,
}

/// The upper bound of finite latency bucket `i`, in microseconds.
pub(super) fn bucket_bound_us(i: usize) -> u64 {
    1u64 << i
}

fn histogram(h: &Histogram) -> HistogramSnapshot {
    let buckets: Vec<HistogramBucket> = h
        .buckets
        .iter()
        .enumerate()
        .map(|(i, c)| HistogramBucket {
            le_us: (i < LATENCY_BUCKETS).then(|| bucket_bound_us(i)),
            count: c.get(),
        })
        .collect();
    HistogramSnapshot {
        count: buckets.iter().fold(0u64, |a, b| a.saturating_add(b.count)),
        sum_ns: h.sum_ns.get(),
        buckets,
    }
}

pub(super) fn requests(r: &RequestCounters) -> RequestSnapshot {
    let mut out = RequestSnapshot {
        served_bytes: r.served_bytes.get(),
        latency: histogram(&r.latency),
        ..Default::default()
    };
    for (slot, op) in r.ops.iter().enumerate().take(OPCODE_SLOTS) {
        let (requests, errors) = (op.requests.get(), op.errors.get());
        if requests == 0 && errors == 0 {
            continue;
        }
        out.requests = out.requests.saturating_add(requests);
        out.errors = out.errors.saturating_add(errors);
        out.opcodes.push(OpSnapshot {
            name: names::opcode_name(slot).into_owned(),
            opcode: u32::try_from(slot).unwrap_or(0),
            requests,
            errors,
        });
    }
    out
}

/// A cache's values; `extra_bytes`/`extra_entries` add the sizes held by
/// images to the daemon's own.
pub(super) fn cache(c: &CacheCounters, extra_bytes: u64, extra_entries: u64) -> CacheSnapshot {
    CacheSnapshot {
        hits: c.hits.get(),
        misses: c.misses.get(),
        evictions: c.evictions.get(),
        bytes: c.bytes.get().saturating_add(extra_bytes),
        entries: c.entries.get().saturating_add(extra_entries),
    }
}

pub(super) fn dax(d: &DaxCounters) -> DaxSnapshot {
    DaxSnapshot {
        active: d.active.get(),
        maps: d.maps.get(),
        unmaps: d.unmaps.get(),
        failures: d.failures.get(),
        shared_maps: d.shared_maps.get(),
        replaced: d.replaced.get(),
        file_reads: d.file_reads.get(),
    }
}
