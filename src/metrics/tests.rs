use std::time::Duration;

use super::*;

#[test]
fn test_bucket_index_log2_bounds() {
    let us = Duration::from_micros;
    let cases = [
        (Duration::ZERO, 0),
        (Duration::from_nanos(999), 0),
        (us(1), 0),
        (Duration::from_nanos(1_999), 0),
        (us(2), 1),
        (us(3), 2),
        (us(4), 2),
        (us(5), 3),
        (us(1024), 10),
        (us(1025), 11),
        (us(1 << 24), 24),
        (us((1 << 24) + 1), 25),
        (Duration::from_secs(3600), 25),
        (Duration::MAX, 25),
    ];
    for (d, want) in cases {
        assert_eq!(Histogram::bucket_index(d), want, "{d:?}");
    }
}

#[test]
fn test_observe_request_counts_opcode_errors_bytes_latency() {
    let m = Metrics::new();
    m.observe_request(1, Duration::from_micros(3), 0, 0);
    m.observe_request(1, Duration::from_micros(3), 0, -2);
    m.observe_request(15, Duration::from_millis(2), 4096, 0);
    m.observe_request(4096, Duration::ZERO, 0, 38);
    m.observe_request(0, Duration::ZERO, 0, 0);

    let s = m.snapshot().requests;

    assert_eq!(s.requests, 5);
    assert_eq!(s.errors, 2);
    assert_eq!(s.served_bytes, 4096);
    let ops: Vec<(&str, u32, u64, u64)> = s
        .opcodes
        .iter()
        .map(|o| (o.name.as_str(), o.opcode, o.requests, o.errors))
        .collect();
    assert_eq!(
        ops,
        [("OTHER", 0, 2, 1), ("LOOKUP", 1, 2, 1), ("READ", 15, 1, 0)]
    );
    assert_eq!(s.latency.count, 5);
    assert_eq!(s.latency.sum_ns, 2_006_000);
    assert_eq!(s.latency.buckets.len(), LATENCY_BUCKETS + 1);
    assert_eq!(s.latency.buckets[0].count, 2);
    assert_eq!(s.latency.buckets[2].count, 2);
    assert_eq!(s.latency.buckets[11].count, 1);
    assert_eq!(s.latency.buckets[11].le_us, Some(2048));
    assert_eq!(s.latency.buckets[LATENCY_BUCKETS].le_us, None);
}

#[test]
fn test_opcode_name_named_unnamed_other() {
    assert_eq!(opcode_name(0), "OTHER");
    assert_eq!(opcode_name(15), "READ");
    assert_eq!(opcode_name(7), "OP_7");
    assert_eq!(opcode_name(48), "SETUPMAPPING");
    assert_eq!(opcode_name(53), "COPY_FILE_RANGE_64");
    assert_eq!(opcode_name(60), "OP_60");
}

#[test]
fn test_image_metrics_count_in_image_and_totals() {
    let m = Metrics::new();
    let a = m.add_image("a").unwrap();
    let b = m.add_image("b").unwrap();

    a.observe_request(15, Duration::from_micros(10), 100, 0);
    b.observe_request(15, Duration::from_micros(10), 1, 0);
    m.observe_request(26, Duration::from_micros(10), 0, 0);
    a.extent_cache().hit();
    a.extent_cache().miss();
    a.extent_cache().set_size(1000, 2);
    b.extent_cache().set_size(24, 1);
    m.extent_cache().evicted(3);

    let s = m.snapshot();
    assert_eq!(s.requests.requests, 3);
    assert_eq!(s.requests.served_bytes, 101);
    assert_eq!(s.images["a"].requests.requests, 1);
    assert_eq!(s.images["a"].requests.served_bytes, 100);
    assert_eq!(s.images["b"].requests.served_bytes, 1);
    assert_eq!(s.images["a"].extent_cache.hits, 1);
    assert_eq!(s.images["a"].extent_cache.misses, 1);
    assert_eq!(s.images["b"].extent_cache.hits, 0);
    assert_eq!(
        s.extent_cache,
        CacheSnapshot {
            hits: 1,
            misses: 1,
            evictions: 3,
            bytes: 1024,
            entries: 3
        }
    );

    // Removing an image takes its size and series, not the totals' counts.
    assert!(m.remove_image("a").is_some());
    let s = m.snapshot();
    assert!(!s.images.contains_key("a"));
    assert_eq!(s.requests.requests, 3);
    assert_eq!(s.extent_cache.hits, 1);
    assert_eq!(s.extent_cache.bytes, 24);
    assert!(m.remove_image("a").is_none());
    assert!(m.image("b").is_some());
}

#[test]
fn test_add_image_bounded_readd_allowed() {
    let m = Metrics::new();
    for i in 0..MAX_IMAGES {
        m.add_image(&i.to_string()).unwrap();
    }

    let over = m.add_image("one-more");
    let again = m.add_image("0");

    assert!(matches!(over, Err(MetricsError::TooManyImages)));
    assert!(again.is_ok());
    assert_eq!(m.snapshot().images.len(), MAX_IMAGES);
}

#[test]
fn test_gauge_dec_stops_at_zero() {
    let g = Gauge::default();
    g.inc();
    g.dec();
    g.dec();
    assert_eq!(g.get(), 0);
    g.set(7);
    g.dec();
    assert_eq!(g.get(), 6);
}

#[test]
fn test_dax_counters_reach_snapshot_and_the_store_is_left_to_the_share() {
    let m = Metrics::new();
    m.dax().active.inc();
    m.dax().maps.add(5);
    m.dax().unmaps.add(4);
    m.dax().failures.inc();
    m.dax().shared_maps.add(3);
    m.dax().replaced.inc();
    m.dax().file_reads.add(2);

    let s = m.snapshot();

    // The registry has no store counters of its own: the share's
    // snapshot fills the store in from its content store (tests/api_live.rs
    // checks those figures end to end).
    assert_eq!(s.store, StoreSnapshot::default());
    assert_eq!(
        s.dax,
        DaxSnapshot {
            active: 1,
            maps: 5,
            unmaps: 4,
            failures: 1,
            shared_maps: 3,
            replaced: 1,
            file_reads: 2
        }
    );
}

#[test]
fn test_snapshot_json_roundtrip() {
    let m = Metrics::new();
    m.add_image("img")
        .unwrap()
        .observe_request(3, Duration::from_micros(1), 0, 0);
    let s = m.snapshot();

    let json = serde_json::to_string(&s).unwrap();
    let back: MetricsSnapshot = serde_json::from_str(&json).unwrap();

    assert_eq!(back, s);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["images"]["img"]["requests"]["opcodes"][0]["name"],
        "GETATTR"
    );
}

/// Checks the text format line by line; returns (family → type, samples).
pub(crate) fn check_prometheus(text: &str) -> (BTreeMap<String, String>, Vec<(String, f64)>) {
    let mut types = BTreeMap::new();
    let mut helps = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "text must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            assert!(helps.insert(name.to_owned()), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(helps.contains(name), "TYPE before HELP: {line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line}");
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && name.starts_with("erofs_virtiofsd_"),
                "{line}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
            }
            let family = types
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            let suffix = &name[family.len()..];
            match types[family].as_str() {
                "histogram" => assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line}"),
                _ => assert_eq!(suffix, "", "{line}"),
            }
            samples.push((series.to_owned(), value));
        }
    }
    (types, samples)
}

#[test]
fn test_prometheus_text_format_and_values() {
    let m = Metrics::new();
    let img = m.add_image("we\"ird\\name").unwrap();
    img.observe_request(15, Duration::from_micros(3), 512, 0);
    m.observe_request(1, Duration::from_secs(100), 0, -2);
    m.dax().maps.inc();

    let text = m.snapshot().to_prometheus();
    let (types, samples) = check_prometheus(&text);
    let get = |s: &str| {
        samples
            .iter()
            .find(|(n, _)| n == s)
            .unwrap_or_else(|| panic!("no sample {s} in\n{text}"))
            .1
    };

    assert_eq!(types["erofs_virtiofsd_fuse_requests_total"], "counter");
    assert_eq!(
        types["erofs_virtiofsd_fuse_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(types["erofs_virtiofsd_store_entries"], "gauge");
    assert_eq!(
        get("erofs_virtiofsd_fuse_requests_total{opcode=\"READ\"}"),
        1.0
    );
    assert_eq!(
        get("erofs_virtiofsd_fuse_errors_total{opcode=\"LOOKUP\"}"),
        1.0
    );
    assert_eq!(get("erofs_virtiofsd_served_bytes_total"), 512.0);
    assert_eq!(
        get("erofs_virtiofsd_fuse_request_duration_seconds_bucket{le=\"0.000004\"}"),
        1.0
    );
    assert_eq!(
        get("erofs_virtiofsd_fuse_request_duration_seconds_bucket{le=\"16.777216\"}"),
        1.0
    );
    assert_eq!(
        get("erofs_virtiofsd_fuse_request_duration_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert_eq!(
        get("erofs_virtiofsd_fuse_request_duration_seconds_count"),
        2.0
    );
    assert_eq!(
        get("erofs_virtiofsd_fuse_request_duration_seconds_sum"),
        100.000003
    );
    assert_eq!(get("erofs_virtiofsd_dax_maps_total"), 1.0);
    assert_eq!(get("erofs_virtiofsd_images"), 1.0);
    assert_eq!(
        get("erofs_virtiofsd_image_fuse_requests_total{image=\"we\\\"ird\\\\name\",opcode=\"READ\"}"),
        1.0
    );
    assert_eq!(
        get("erofs_virtiofsd_image_served_bytes_total{image=\"we\\\"ird\\\\name\"}"),
        512.0
    );
}

#[test]
fn test_prometheus_store_domains_and_passthrough_opens() {
    let mut s = Metrics::new().snapshot();
    s.store.passthrough_opens = 4;
    s.store.domains.insert(
        "team \"a\"".to_owned(),
        StoreDomainSnapshot {
            entries: 2,
            bytes: 8192,
            loads: 3,
            hits: 5,
            verification_failures: 1,
            evictions: 7,
        },
    );
    s.store
        .domains
        .insert("b".to_owned(), StoreDomainSnapshot::default());

    let text = s.to_prometheus();
    let (types, samples) = check_prometheus(&text);
    let get = |s: &str| {
        samples
            .iter()
            .find(|(n, _)| n == s)
            .unwrap_or_else(|| panic!("no sample {s} in\n{text}"))
            .1
    };

    assert_eq!(types["erofs_virtiofsd_store_domain_entries"], "gauge");
    assert_eq!(types["erofs_virtiofsd_store_domain_loads_total"], "counter");
    assert_eq!(get("erofs_virtiofsd_store_passthrough_opens_total"), 4.0);
    let d = "{domain=\"team \\\"a\\\"\"}";
    assert_eq!(
        get(&format!("erofs_virtiofsd_store_domain_entries{d}")),
        2.0
    );
    assert_eq!(
        get(&format!("erofs_virtiofsd_store_domain_bytes{d}")),
        8192.0
    );
    assert_eq!(
        get(&format!("erofs_virtiofsd_store_domain_loads_total{d}")),
        3.0
    );
    assert_eq!(
        get(&format!("erofs_virtiofsd_store_domain_hits_total{d}")),
        5.0
    );
    assert_eq!(
        get(&format!(
            "erofs_virtiofsd_store_domain_verification_failures_total{d}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!("erofs_virtiofsd_store_domain_evictions_total{d}")),
        7.0
    );
    assert_eq!(
        get("erofs_virtiofsd_store_domain_loads_total{domain=\"b\"}"),
        0.0
    );

    // The JSON form round-trips, and a snapshot without the new fields
    // still reads.
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<MetricsSnapshot>(&json).unwrap(), s);
    let old = r#"{"entries":1,"shared_bytes":2,"loads":3,"hits":4,"verification_failures":5,"evictions":6}"#;
    let old: StoreSnapshot = serde_json::from_str(old).unwrap();
    assert_eq!(
        (old.hits, old.passthrough_opens, old.domains.len()),
        (4, 0, 0)
    );
}
