//! The Prometheus text exposition format (version 0.0.4) of a snapshot.
//!
//! Rendered here rather than through a client crate: the registry's
//! counters are plain atomics so the request paths take no lock, and the
//! format is a few lines of text per metric family; a client library would
//! either put its own (locked) metric types on the hot path or need every
//! value copied into it at each scrape anyway.

use std::fmt::{Display, Write};

use super::snapshot::{
    bucket_bound_us, CacheSnapshot, HistogramSnapshot, MetricsSnapshot, RequestSnapshot,
    StoreDomainSnapshot, StoreSnapshot,
};

/// The `Content-Type` of [`MetricsSnapshot::to_prometheus`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric name starts with this.
pub const PREFIX: &str = "erofs_virtiofsd_";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(self.0, "# TYPE {PREFIX}{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(PREFIX);
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                escape_label(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one sample per label set.
    fn single(&mut self, name: &str, kind: &str, help: &str, rows: &[(&[(&str, &str)], u64)]) {
        self.family(name, kind, help);
        for (labels, v) in rows {
            self.sample(name, labels, v);
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Microseconds as decimal seconds, exactly (`1` → `0.000001`).
fn us_as_seconds(us: u64) -> String {
    let mut s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

fn ns_as_seconds(ns: u64) -> String {
    let mut s = format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// One histogram's samples (after its family line).
fn histogram(out: &mut Out, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, b) in h.buckets.iter().enumerate() {
        cumulative = cumulative.saturating_add(b.count);
        let le = match b.le_us {
            Some(us) => us_as_seconds(us),
            None => "+Inf".to_owned(),
        };
        debug_assert!(b.le_us.is_none_or(|us| us == bucket_bound_us(i)));
        let mut l = labels.to_vec();
        l.push(("le", &le));
        out.sample(&bucket, &l, cumulative);
    }
    out.sample(&format!("{name}_sum"), labels, ns_as_seconds(h.sum_ns));
    out.sample(&format!("{name}_count"), labels, h.count);
}

/// The request families, with `prefix` before each name and `labels` on
/// each sample; `per` yields (labels, snapshot) for every sample set.
fn request_families(out: &mut Out, prefix: &str, rows: &[(Vec<(&str, &str)>, &RequestSnapshot)]) {
    let name = format!("{prefix}fuse_requests_total");
    out.family(&name, "counter", "FUSE requests answered, by opcode.");
    for (labels, r) in rows {
        for op in &r.opcodes {
            let mut l = labels.clone();
            l.push(("opcode", &op.name));
            out.sample(&name, &l, op.requests);
        }
    }
    let name = format!("{prefix}fuse_errors_total");
    out.family(
        &name,
        "counter",
        "FUSE requests answered with an error, by opcode.",
    );
    for (labels, r) in rows {
        for op in &r.opcodes {
            let mut l = labels.clone();
            l.push(("opcode", &op.name));
            out.sample(&name, &l, op.errors);
        }
    }
    let name = format!("{prefix}served_bytes_total");
    out.family(&name, "counter", "Bytes of file data in FUSE replies.");
    for (labels, r) in rows {
        out.sample(&name, labels, r.served_bytes);
    }
    let name = format!("{prefix}fuse_request_duration_seconds");
    out.family(&name, "histogram", "Time to answer a FUSE request.");
    for (labels, r) in rows {
        histogram(out, &name, labels, &r.latency);
    }
}

fn cache_families(out: &mut Out, prefix: &str, rows: &[(Vec<(&str, &str)>, &CacheSnapshot)]) {
    type Field = fn(&CacheSnapshot) -> u64;
    let fields: [(&str, &str, &str, Field); 5] = [
        (
            "extent_cache_hits_total",
            "counter",
            "Decoded-extent cache lookups answered from the cache.",
            |c| c.hits,
        ),
        (
            "extent_cache_misses_total",
            "counter",
            "Decoded-extent cache lookups that had to decode.",
            |c| c.misses,
        ),
        (
            "extent_cache_evictions_total",
            "counter",
            "Decoded extents dropped to make room.",
            |c| c.evictions,
        ),
        (
            "extent_cache_bytes",
            "gauge",
            "Bytes held by decoded-extent caches.",
            |c| c.bytes,
        ),
        (
            "extent_cache_entries",
            "gauge",
            "Entries held by decoded-extent caches.",
            |c| c.entries,
        ),
    ];
    for (name, kind, help, get) in fields {
        let name = format!("{prefix}{name}");
        out.family(&name, kind, help);
        for (labels, c) in rows {
            out.sample(&name, labels, get(c));
        }
    }
}

/// The content store's per-domain families (the store's counters, which
/// every process using it adds to), one sample per domain.
fn store_domain_families(out: &mut Out, s: &StoreSnapshot) {
    type Field = fn(&StoreDomainSnapshot) -> u64;
    let fields: [(&str, &str, &str, Field); 6] = [
        (
            "store_domain_entries",
            "gauge",
            "Entries of a trust domain in the content store.",
            |d| d.entries,
        ),
        (
            "store_domain_bytes",
            "gauge",
            "Bytes of content of a trust domain in the content store.",
            |d| d.bytes,
        ),
        (
            "store_domain_loads_total",
            "counter",
            "Contents of a trust domain loaded into the store, by every process.",
            |d| d.loads,
        ),
        (
            "store_domain_hits_total",
            "counter",
            "Lookups of a trust domain that found the content stored, by every process.",
            |d| d.hits,
        ),
        (
            "store_domain_verification_failures_total",
            "counter",
            "Contents of a trust domain that did not hash to their fingerprint, by every process.",
            |d| d.verification_failures,
        ),
        (
            "store_domain_evictions_total",
            "counter",
            "Entries of a trust domain evicted, by every process.",
            |d| d.evictions,
        ),
    ];
    for (name, kind, help, get) in fields {
        out.family(name, kind, help);
        for (domain, d) in &s.domains {
            out.sample(name, &[("domain", domain)], get(d));
        }
    }
}

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text format ([`CONTENT_TYPE`]); every
    /// name starts with [`PREFIX`], per-image families with
    /// `erofs_virtiofsd_image_` and an `image` label.
    pub fn to_prometheus(&self) -> String {
        let mut out = Out(String::with_capacity(8192));
        let version = env!("CARGO_PKG_VERSION");
        out.single(
            "build_info",
            "gauge",
            "Always 1; the version is a label.",
            &[(&[("version", version)], 1)],
        );
        out.single(
            "uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            &[(&[], self.uptime_seconds)],
        );
        let count = u64::try_from(self.images.len()).unwrap_or(u64::MAX);
        out.single("images", "gauge", "Images being served.", &[(&[], count)]);

        request_families(&mut out, "", &[(vec![], &self.requests)]);
        cache_families(&mut out, "", &[(vec![], &self.extent_cache)]);

        let s = &self.store;
        out.single(
            "store_entries",
            "gauge",
            "Entries in the content store.",
            &[(&[], s.entries)],
        );
        out.single(
            "store_shared_bytes",
            "gauge",
            "Bytes of content in the content store.",
            &[(&[], s.shared_bytes)],
        );
        out.single(
            "store_loads_total",
            "counter",
            "Content store entries loaded by this process.",
            &[(&[], s.loads)],
        );
        out.single(
            "store_hits_total",
            "counter",
            "Reads answered from an existing content store entry.",
            &[(&[], s.hits)],
        );
        out.single(
            "store_passthrough_opens_total",
            "counter",
            "Opens answered with FUSE passthrough to a content store entry (among the hits).",
            &[(&[], s.passthrough_opens)],
        );
        out.single(
            "store_verification_failures_total",
            "counter",
            "Files whose content did not hash to their fingerprint (served unshared).",
            &[(&[], s.verification_failures)],
        );
        out.single(
            "store_evictions_total",
            "counter",
            "Content store entries evicted by this process.",
            &[(&[], s.evictions)],
        );
        store_domain_families(&mut out, &self.store);

        let d = &self.dax;
        out.single(
            "dax_mappings",
            "gauge",
            "DAX window ranges mapped now.",
            &[(&[], d.active)],
        );
        out.single(
            "dax_maps_total",
            "counter",
            "DAX ranges mapped.",
            &[(&[], d.maps)],
        );
        out.single(
            "dax_unmaps_total",
            "counter",
            "DAX ranges unmapped.",
            &[(&[], d.unmaps)],
        );
        out.single(
            "dax_failures_total",
            "counter",
            "DAX map or unmap requests that failed.",
            &[(&[], d.failures)],
        );
        out.single(
            "dax_shared_maps_total",
            "counter",
            "DAX ranges mapped from a content store's mapped copy.",
            &[(&[], d.shared_maps)],
        );
        out.single(
            "dax_replaced_total",
            "counter",
            "Mapped contents found changed through a DAX window and replaced.",
            &[(&[], d.replaced)],
        );
        out.single(
            "dax_file_reads_total",
            "counter",
            "FUSE_READs of regular files on connections with a DAX window.",
            &[(&[], d.file_reads)],
        );

        let req_rows: Vec<_> = self
            .images
            .iter()
            .map(|(n, i)| (vec![("image", n.as_str())], &i.requests))
            .collect();
        request_families(&mut out, "image_", &req_rows);
        let cache_rows: Vec<_> = self
            .images
            .iter()
            .map(|(n, i)| (vec![("image", n.as_str())], &i.extent_cache))
            .collect();
        cache_families(&mut out, "image_", &cache_rows);
        out.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_us_as_seconds_exact() {
        let cases = [
            (1, "0.000001"),
            (2, "0.000002"),
            (1024, "0.001024"),
            (1_000_000, "1"),
            (16_777_216, "16.777216"),
        ];
        for (us, want) in cases {
            assert_eq!(us_as_seconds(us), want, "{us}");
        }
        assert_eq!(ns_as_seconds(0), "0");
        assert_eq!(ns_as_seconds(1_500_000_000), "1.5");
    }

    #[test]
    fn test_escape_label_quotes_backslash_newline() {
        let mut s = String::new();
        escape_label(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }
}
