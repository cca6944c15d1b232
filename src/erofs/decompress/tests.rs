//! Tests of the configs parser and of every algorithm on real pclusters.
//!
//! `testdata/vectors.tsv` lists pclusters cut from fixture images made by
//! mkfs.erofs 1.9.3 (an earlier fixture set whose `edge_multialg-hints`
//! chose the algorithm per file): each `NAME.bin` is one whole pcluster as
//! stored (zero padding included) whose decompressed extent is a whole
//! file; its length and sha256 are the kernel's view of that file (the
//! set's `manifests/edge.jsonl`). The ignored test
//! `test_vectors_regenerate_from_fixtures_writes_testdata` rebuilds them
//! from the fixtures directory (`$EROFS_FIXTURES`, else `tests/fixtures`,
//! see `docs/fixtures.md`); the repository's own `edge_multialg-hints`
//! compresses file data with lz4hc only, so its lzma and zstd cases (the
//! last two) need such a set in `$EROFS_FIXTURES`.

use sha2::{Digest, Sha256};

use super::*;
use crate::erofs::ondisk::{INCOMPAT_COMPR_CFGS, INCOMPAT_ZERO_PADDING};
use crate::erofs::Superblock;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// A decoder with `configs` for an image with (or without) zero padding.
fn decoder(configs: &Configs, zero_padding: bool, block_size: usize) -> Decoder {
    Decoder {
        configs: *configs,
        zero_padding,
        block_size,
    }
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn testdata() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/erofs/decompress/testdata")
}

/// One test vector of `testdata/vectors.tsv`.
struct Vector {
    name: String,
    alg: Algorithm,
    /// `legacy:U1` or `AVAILABLE:HEX` (the config records).
    cfgs: String,
    size: usize,
    sha256: String,
    pcluster: Vec<u8>,
}

impl Vector {
    fn configs(&self) -> Configs {
        let (a, b) = self.cfgs.split_once(':').unwrap();
        if a == "legacy" {
            Configs::legacy(b.parse().unwrap())
        } else {
            parse_cfgs(a.parse().unwrap(), &unhex(b), 12).unwrap().0
        }
    }

    fn decode(&self, input: &[u8], len: usize, partial: bool) -> Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        decoder(&self.configs(), true, 4096).decompress(self.alg, input, &mut out, partial)?;
        Ok(out)
    }
}

fn vectors() -> Vec<Vector> {
    let dir = testdata();
    let tsv = std::fs::read_to_string(dir.join("vectors.tsv")).unwrap();
    let mut out = Vec::new();
    for line in tsv.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let alg = Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == f[1])
            .unwrap();
        out.push(Vector {
            name: f[0].to_string(),
            alg,
            cfgs: f[4].to_string(),
            size: f[5].parse().unwrap(),
            sha256: f[6].to_string(),
            pcluster: std::fs::read(dir.join(format!("{}.bin", f[0]))).unwrap(),
        });
    }
    out
}

#[test]
fn test_vectors_cover_every_algorithm() {
    let v = vectors();
    for alg in Algorithm::ALL {
        assert!(v.iter().any(|x| x.alg == alg), "no vector for {alg:?}");
    }
}

#[test]
fn test_vectors_exact_decode_matches_kernel_sha256() {
    for v in vectors() {
        let out = v.decode(&v.pcluster, v.size, false).unwrap_or_else(|e| {
            panic!("{}: {e}", v.name);
        });
        assert_eq!(sha(&out), v.sha256, "{}", v.name);
    }
}

#[test]
fn test_vectors_prefix_partial_matches_full() {
    for v in vectors() {
        let full = v.decode(&v.pcluster, v.size, false).unwrap();
        for n in [0, 1, 7, 100, 4095, 4096, v.size / 2, v.size - 1, v.size] {
            let n = n.min(v.size);
            let out = v
                .decode(&v.pcluster, n, true)
                .unwrap_or_else(|e| panic!("{} prefix {n}: {e}", v.name));
            assert_eq!(out, full[..n], "{} prefix {n}", v.name);
        }
    }
}

#[test]
fn test_vectors_longer_output_fails_both_modes() {
    for v in vectors() {
        for partial in [false, true] {
            let r = v.decode(&v.pcluster, v.size + 1, partial);
            assert!(r.is_err(), "{} partial={partial}", v.name);
        }
    }
}

#[test]
fn test_vectors_shorter_output_exact_follows_kernel() {
    // A shorter exact decode is corruption for LZ4 (0padding), LZMA and
    // DEFLATE; the kernel's Zstandard loop stops once the output is full.
    for v in vectors() {
        let r = v.decode(&v.pcluster, v.size - 1, false);
        match v.alg {
            Algorithm::Zstd => assert!(r.is_ok(), "{}", v.name),
            _ => assert!(r.is_err(), "{}", v.name),
        }
    }
}

#[test]
fn test_vectors_trailing_byte_follows_kernel() {
    // One more byte at the end of the stream: LZ4 (0padding) and LZMA
    // must consume their input exactly; zlib and zstd stop before it.
    for v in vectors() {
        let mut input = v.pcluster.clone();
        input.push(0x5a);
        let exact = v.decode(&input, v.size, false);
        match v.alg {
            Algorithm::Lz4 | Algorithm::Lzma => assert!(exact.is_err(), "{}", v.name),
            Algorithm::Deflate | Algorithm::Zstd => {
                assert_eq!(sha(&exact.unwrap()), v.sha256, "{}", v.name)
            }
        }
        let out = v.decode(&input, v.size, true).unwrap();
        assert_eq!(sha(&out), v.sha256, "{} partial", v.name);
    }
}

#[test]
fn test_vectors_truncated_fail() {
    for v in vectors() {
        let len = v.pcluster.len();
        for cut in [1, 2, 16, len / 2] {
            let input = &v.pcluster[..len - cut];
            assert!(
                v.decode(input, v.size, false).is_err(),
                "{} cut {cut} exact",
                v.name
            );
            // The cut data is at the end of the stream; only LZ4's end
            // rules and a missing stream end make a prefix decode fail,
            // so just check it never panics.
            let _ = v.decode(input, v.size, true);
        }
    }
}

#[test]
fn test_vectors_all_zero_pcluster_fails() {
    for v in vectors() {
        let zeros = vec![0u8; v.pcluster.len()];
        assert!(v.decode(&zeros, v.size, false).is_err(), "{}", v.name);
        assert!(v.decode(&zeros, 10, true).is_err(), "{}", v.name);
    }
}

#[test]
fn test_vectors_bit_flips_never_panic_and_are_mostly_caught() {
    for v in vectors() {
        let start = v.pcluster.iter().position(|&b| b != 0).unwrap();
        let stream_len = v.pcluster.len() - start;
        let step = (stream_len / 97).max(1);
        let (mut tried, mut caught) = (0usize, 0usize);
        for (k, pos) in (start..v.pcluster.len()).step_by(step).enumerate() {
            let mut input = v.pcluster.clone();
            input[pos] ^= 1 << (k % 8);
            tried += 1;
            match v.decode(&input, v.size, false) {
                Err(_) => caught += 1,
                Ok(out) if sha(&out) != v.sha256 => caught += 1,
                Ok(_) => {}
            }
            let _ = v.decode(&input, v.size / 2, true);
        }
        // Errors or changed output; a flip in bits a format ignores (the
        // unused low nibble of LZ4's last token, say) changes nothing.
        assert!(caught * 10 >= tried * 9, "{}: {caught}/{tried}", v.name);
    }
}

#[test]
fn test_vectors_lz4_without_zero_padding_decodes_stream_start() {
    for v in vectors().into_iter().filter(|v| v.alg == Algorithm::Lz4) {
        let start = v.pcluster.iter().position(|&b| b != 0).unwrap();
        let mut out = vec![0u8; v.size];
        let mut stream = v.pcluster[start..].to_vec();
        // Legacy images may have data after the stream.
        stream.extend_from_slice(&[0xaa; 100]);
        decoder(&v.configs(), false, 4096)
            .decompress(Algorithm::Lz4, &stream, &mut out, false)
            .unwrap();
        assert_eq!(sha(&out), v.sha256, "{}", v.name);
    }
}

#[test]
fn test_vectors_padding_beyond_first_block_fails() {
    for v in vectors() {
        let mut input = vec![0u8; 4096];
        let start = v.pcluster.iter().position(|&b| b != 0).unwrap();
        input.extend_from_slice(&v.pcluster[start..]);
        assert!(v.decode(&input, v.size, false).is_err(), "{}", v.name);
        // With a larger block size the same bytes are fine.
        let mut out = vec![0u8; v.size];
        decoder(&v.configs(), true, 8192)
            .decompress(v.alg, &input, &mut out, false)
            .unwrap();
    }
}

/// Deterministic xorshift64 for the random-input test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn test_random_and_spliced_inputs_never_panic() {
    let cfgs = Configs {
        available: 0xf,
        lzma: Some(LzmaConfig { dict_size: 4096 }),
        deflate: Some(DeflateConfig { windowbits: 15 }),
        zstd: Some(ZstdConfig { window_log: 20 }),
        ..Configs::default()
    };
    let vecs = vectors();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.below(300);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            // A real stream with a random splice of random bytes.
            let v = &vecs[rng.below(vecs.len())];
            let mut input = v.pcluster.clone();
            let at = rng.below(input.len());
            let n = rng.below(16).min(input.len() - at);
            for b in &mut input[at..at + n] {
                *b = rng.next() as u8;
            }
            input
        };
        let out_len = rng.below(20000);
        let mut out = vec![0u8; out_len];
        for alg in Algorithm::ALL {
            for partial in [false, true] {
                for zero_padding in [false, true] {
                    let _ = decoder(&cfgs, zero_padding, 4096)
                        .decompress(alg, &input, &mut out, partial);
                }
            }
        }
    }
}

#[test]
fn test_decompress_undeclared_algorithm_is_corrupt() {
    let mut out = [0u8; 4];
    for alg in [Algorithm::Lzma, Algorithm::Deflate, Algorithm::Zstd] {
        let e = decoder(&Configs::default(), true, 4096)
            .decompress(alg, &[1, 2, 3], &mut out, false)
            .unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }
}

#[test]
fn test_decompress_corrupt_headers_fail() {
    let cfgs = Configs {
        available: 0xf,
        lzma: Some(LzmaConfig { dict_size: 1 << 20 }),
        deflate: Some(DeflateConfig { windowbits: 15 }),
        zstd: Some(ZstdConfig { window_log: 20 }),
        ..Configs::default()
    };
    let mut out = [0u8; 64];
    // Invalid LZMA properties (!0x00 = 0xff > 224).
    assert!(decoder(&cfgs, true, 4096)
        .decompress(Algorithm::Lzma, &[0, 0, 0, 0, 0, 0], &mut out, false)
        .is_err());
    // DEFLATE reserved block type 3.
    assert!(decoder(&cfgs, true, 4096)
        .decompress(Algorithm::Deflate, &[0x07, 0, 0], &mut out, true)
        .is_err());
    // Not a Zstandard frame.
    assert!(decoder(&cfgs, true, 4096)
        .decompress(Algorithm::Zstd, &[1, 2, 3, 4, 5, 6, 7, 8], &mut out, true)
        .is_err());
}

#[test]
fn test_zstd_window_above_cap_fails() {
    // Frame header: magic, descriptor 0 (no FCS, not single segment),
    // window descriptor exponent 11 -> 2^(10+11) = 2 MiB > 1 MiB.
    let cfgs = Configs {
        available: 0x9,
        zstd: Some(ZstdConfig { window_log: 20 }),
        ..Configs::default()
    };
    let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 11 << 3, 0x01, 0x00, 0x00];
    let mut out = [0u8; 16];
    let e = decoder(&cfgs, true, 4096)
        .decompress(Algorithm::Zstd, &frame, &mut out, true)
        .unwrap_err();
    assert!(e.to_string().contains("too much memory"), "{e}");
}

#[test]
fn test_algorithm_numbers_round_trip() {
    for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
        assert_eq!(Algorithm::from_u8(i as u8), Some(alg));
        assert_eq!(alg.as_u8(), i as u8);
        assert_eq!(alg.bit(), 1 << i);
    }
    assert_eq!(Algorithm::from_u8(4), None);
    assert_eq!(Algorithm::from_u8(255), None);
}

#[test]
fn test_configs_default_is_lz4_only() {
    let c = Configs::default();
    assert!(c.is_available(Algorithm::Lz4));
    assert!(!c.is_available(Algorithm::Lzma));
    assert_eq!(c.lz4.max_pclusterblks, 1);
    assert_eq!(Configs::legacy(4096).lz4.max_distance, 4096);
}

/// Config records as mkfs.erofs writes them for `-zlz4hc,12:lzma:zstd`
/// (edge_multialg-hints).
const MULTI: [u8; 40] = [
    0x0e, 0x00, 0xff, 0xff, 0x20, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // lz4
    0x0e, 0x00, 0x00, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // lzma
    0x06, 0x00, 0x00, 0x0a, 0, 0, 0, 0, // zstd
];

#[test]
fn test_parse_cfgs_multialg_records_parse() {
    let (c, used) = parse_cfgs(0b1011, &MULTI, 12).unwrap();
    assert_eq!(used, 40);
    assert_eq!(c.available, 0b1011);
    assert_eq!(
        c.lz4,
        Lz4Config {
            max_distance: 0xffff,
            max_pclusterblks: 32
        }
    );
    assert_eq!(c.lzma, Some(LzmaConfig { dict_size: 0x80000 }));
    assert_eq!(c.deflate, None);
    assert_eq!(c.zstd, Some(ZstdConfig { window_log: 20 }));
}

#[test]
fn test_parse_cfgs_aligns_each_record_to_four() {
    // deflate (size 6 -> ends at 8), then zstd: a 5-byte deflate record
    // is too small, so use size 7: next record at 12, not 9.
    let mut r = vec![0x07, 0x00, 15, 0, 0, 0, 0, 0, 0, 0xee, 0xee, 0xee];
    r.extend_from_slice(&[0x06, 0x00, 0x00, 0x05, 0, 0, 0, 0]);
    let (c, used) = parse_cfgs(0b1100, &r, 12).unwrap();
    assert_eq!(used, 20);
    assert_eq!(c.deflate, Some(DeflateConfig { windowbits: 15 }));
    assert_eq!(c.zstd, Some(ZstdConfig { window_log: 15 }));
}

#[test]
fn test_parse_cfgs_zero_size_means_65536() {
    let mut r = vec![0x00, 0x00];
    r.extend(std::iter::repeat_n(0u8, 65536));
    r[2] = 15;
    let (c, used) = parse_cfgs(0b0100, &r, 12).unwrap();
    assert_eq!(used, 65538);
    assert_eq!(c.deflate, Some(DeflateConfig { windowbits: 15 }));
    assert!(parse_cfgs(0b0100, &r[..65537], 12).is_err());
}

#[test]
fn test_parse_cfgs_unknown_algorithm_unsupported() {
    let e = parse_cfgs(0b1_0001, &MULTI, 12).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

#[test]
fn test_parse_cfgs_invalid_values_rejected() {
    let corrupt = |avail: u16, rec: &[u8]| {
        let e = parse_cfgs(avail, rec, 12).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    };
    // Records too small for their struct.
    corrupt(0b0001, &[0x0d, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    corrupt(0b0100, &[0x05, 0, 15, 0, 0, 0, 0]);
    // lzma dictionary below 4 KiB, above 8 MiB, unknown format.
    let lzma = |dict: u32, format: u16| {
        let mut r = vec![0x0e, 0x00];
        r.extend_from_slice(&dict.to_le_bytes());
        r.extend_from_slice(&format.to_le_bytes());
        r.extend_from_slice(&[0; 8]);
        r
    };
    corrupt(0b0010, &lzma(4095, 0));
    corrupt(0b0010, &lzma((8 << 20) + 1, 0));
    corrupt(0b0010, &lzma(1 << 20, 1));
    assert!(parse_cfgs(0b0010, &lzma(8 << 20, 0), 12).is_ok());
    // zstd window log above 20, unknown format.
    corrupt(0b1000, &[0x06, 0, 0, 11, 0, 0, 0, 0]);
    corrupt(0b1000, &[0x06, 0, 1, 5, 0, 0, 0, 0]);
    // lz4 pcluster above 1 MiB: 256 blocks of 4 KiB is the limit.
    let lz4 = |blks: u16| {
        let mut r = vec![0x0e, 0x00, 0, 0];
        r.extend_from_slice(&blks.to_le_bytes());
        r.extend_from_slice(&[0; 10]);
        r
    };
    assert_eq!(
        parse_cfgs(1, &lz4(256), 12).unwrap().0.lz4.max_pclusterblks,
        256
    );
    assert_eq!(
        parse_cfgs(1, &lz4(0), 12).unwrap().0.lz4.max_pclusterblks,
        1
    );
    corrupt(1, &lz4(257));
    assert!(parse_cfgs(1, &lz4(2048), 9).is_ok());
    // Truncated input.
    corrupt(0b1011, &MULTI[..39]);
    corrupt(0b1011, &MULTI[..33]);
}

#[test]
fn test_parse_cfgs_deflate_large_window_unsupported() {
    let e = parse_cfgs(0b0100, &[0x06, 0, 16, 0, 0, 0, 0, 0], 12).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // Small window bits are accepted (libdeflate images store 0).
    assert!(parse_cfgs(0b0100, &[0x06, 0, 0, 0, 0, 0, 0, 0], 12).is_ok());
}

#[test]
fn test_parse_cfgs_no_algorithms_consumes_nothing() {
    let (c, used) = parse_cfgs(0, &[], 12).unwrap();
    assert_eq!(used, 0);
    assert!(!c.is_available(Algorithm::Lz4));
}

/// The fixtures directory resolver the integration tests use.
#[path = "../../../tests/common/fixture_dir.rs"]
mod fixture_dir;

/// (image, path, algorithm, vector name): files whose whole content is one
/// pcluster.
const CASES: &[(&str, &str, Algorithm, &str)] = &[
    (
        "edge_lz4",
        "/files/tail_12289",
        Algorithm::Lz4,
        "lz4_tail_12289",
    ),
    (
        "edge_lz4",
        "/files/ones_12289",
        Algorithm::Lz4,
        "lz4_ones_12289",
    ),
    (
        "edge_lz4hc12",
        "/files/tail_12289",
        Algorithm::Lz4,
        "lz4hc12_tail_12289",
    ),
    (
        "edge_lz4hc-C64k",
        "/files/log_65536",
        Algorithm::Lz4,
        "lz4hc_c64k_log_65536",
    ),
    (
        "edge_lzma109-C1m",
        "/files/log_65536",
        Algorithm::Lzma,
        "lzma109_log_65536",
    ),
    (
        "edge_lzma-MZ",
        "/files/text_8193",
        Algorithm::Lzma,
        "lzma_mz_text_8193",
    ),
    (
        "edge_deflate9",
        "/files/text_8193",
        Algorithm::Deflate,
        "deflate9_text_8193",
    ),
    (
        "edge_libdeflate12",
        "/files/text_8193",
        Algorithm::Deflate,
        "libdeflate12_text_8193",
    ),
    (
        "edge_zstd19",
        "/files/text_8193",
        Algorithm::Zstd,
        "zstd19_text_8193",
    ),
    (
        "edge_multialg-hints",
        "/files/ones_12289",
        Algorithm::Lz4,
        "multi_lz4hc_ones_12289",
    ),
    (
        "edge_multialg-hints",
        "/files/log_65536",
        Algorithm::Lzma,
        "multi_lzma_log_65536",
    ),
    (
        "edge_multialg-hints",
        "/files/mixed_131073",
        Algorithm::Zstd,
        "multi_zstd_mixed_131073",
    ),
];

/// Rebuilds `testdata/` from the fixture images: finds each case's pcluster
/// by trying every block-aligned range of up to 16 blocks until one decodes
/// to the file's kernel sha256. Run with
/// `cargo test test_vectors_regenerate -- --ignored`.
#[test]
#[ignore = "rewrites testdata/ from the fixture images"]
fn test_vectors_regenerate_from_fixtures_writes_testdata() {
    let fixtures = fixture_dir::fixtures_dir();
    let manifest = std::fs::read_to_string(fixtures.join("manifests/edge.jsonl")).unwrap();
    let lookup = |path: &str| -> (usize, String) {
        for line in manifest.lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            if e["path"] == path {
                return (
                    e["size"].as_u64().unwrap() as usize,
                    e["sha256"].as_str().unwrap().to_string(),
                );
            }
        }
        panic!("{path} not in manifest");
    };
    let dir = testdata();
    std::fs::create_dir_all(&dir).unwrap();
    let mut tsv =
        String::from("# name\talgorithm\timage\tpath\tcfgs\tsize\tsha256\timage_offset\tplen\n");
    for &(image, path, alg, name) in CASES {
        let img = std::fs::read(fixtures.join(format!("images/{image}.erofs"))).unwrap();
        let sb = Superblock::parse(&img[..4096]).unwrap();
        assert_ne!(sb.feature_incompat & INCOMPAT_ZERO_PADDING, 0);
        let bs = 1usize << sb.blkszbits;
        let (cfgs, cfg_text) = if sb.feature_incompat & INCOMPAT_COMPR_CFGS != 0 {
            let rec = &img[1024 + sb.sb_size..];
            let (c, used) = parse_cfgs(sb.u1, rec, sb.blkszbits).unwrap();
            (c, format!("{}:{}", sb.u1, hex(&rec[..used])))
        } else {
            (Configs::legacy(sb.u1), format!("legacy:{}", sb.u1))
        };
        let (size, want) = lookup(path);
        let mut found = None;
        'search: for start in (0..img.len()).step_by(bs) {
            if img[start..start + bs].iter().all(|&b| b == 0) {
                continue;
            }
            for blocks in 1..=16 {
                let end = start + blocks * bs;
                if end > img.len() {
                    break;
                }
                let mut out = vec![0u8; size];
                let input = &img[start..end];
                if decoder(&cfgs, true, bs)
                    .decompress(alg, input, &mut out, false)
                    .is_ok()
                    && sha(&out) == want
                {
                    found = Some((start, input.to_vec()));
                    break 'search;
                }
            }
        }
        let (offset, pcluster) = found.unwrap_or_else(|| panic!("{name}: no pcluster found"));
        assert!(
            pcluster.len() < 64 * 1024,
            "{name}: {} bytes",
            pcluster.len()
        );
        std::fs::write(dir.join(format!("{name}.bin")), &pcluster).unwrap();
        tsv.push_str(&format!(
            "{name}\t{}\t{image}\t{path}\t{cfg_text}\t{size}\t{want}\t{offset}\t{}\n",
            alg.name(),
            pcluster.len()
        ));
    }
    std::fs::write(dir.join("vectors.tsv"), tsv).unwrap();
}
