//! Compressed images against the kernel's EROFS driver.
//!
//! - `test_zvariant_*`: the edge tree and the big tree (a few large files of
//!   mixed data, see `common::bigtree`) through Debian's mkfs.erofs 1.5 with
//!   `-zlz4` / `-zlz4hc[,LEVEL]`, every `-E` option 1.5 has that changes a
//!   compressed image, `-C` from 4 KiB to 1 MiB and `--compress-hints`; our
//!   `image manifest` must print exactly what the kernel shows, and the image
//!   must really have the layout the options ask for (mkfs 1.5 ignores some
//!   option mistakes silently).
//! - `test_ranges_fixture_*` / `test_ranges_zvariant_*`: 2000 random byte
//!   ranges of random regular files of every compressed fixture image (and
//!   of three mkfs 1.5 images of the big tree), read in-process with
//!   `Image::open` + `Image::lookup` + `Image::read`, must equal `pread` of
//!   the same ranges on a kernel mount (see `common::rangeread`).
//! - `test_concurrent_*`: 8 threads reading random ranges through one shared
//!   `Arc<Image>` (some with a small decoded-extent cache, so extents are
//!   evicted and decoded again while other threads read them).
//!
//! What mkfs.erofs 1.5 refuses (checked by hand against the Debian binary,
//! not worth a test each): `-zlz4hc,13` ("failed to initialize
//! compressor"; 12 is the highest level), `-C` above 1 MiB ("unsupported
//! clusterblks 512 (too large)"), `-C` that is not a multiple of 4096
//! ("invalid physical clustersize"); and `--compress-hints` with a pcluster size larger than
//! `-C` "fails to compress" the matching files (EFAULT) and silently stores
//! them uncompressed, so the hints here stay within `-C`. Every `-E` option
//! combination with compression (ztailpacking with legacy-compress, with
//! noinline_data, with `-C`) is accepted.
//!
//! Needs root and the kernel EROFS driver, like `kernel_oracle.rs`; same
//! environment variables (`EROFS_FIXTURES`, `EROFS_TEST_TMP`,
//! `EROFS_IMAGE_TMP`, `EROFS_KEEP_TMP`); `EROFS_RANGE_READS=N` and
//! `EROFS_RANGE_SEED=N` change the number of range reads per image and the
//! random sequences (soak runs; the seed of a failing run reproduces it).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use erofs_virtiofsd::erofs::{ondisk, walk, Image, ImageOptions};
use erofs_virtiofsd::source::open_path;

use common::bigtree::big_tree;
use common::fixtures::{all_fixture_images, fixture_image, is_compressed};
use common::mkfs::{mkfs_compressed, FIXED_UUID};
use common::rangeread::{summary, RangeOracle};
use common::trees::{edge_tree, image_dir};
use common::{assert_kernel_erofs, assert_manifests_eq, run_manifest, walk_manifest, KernelMount};

// ---------------------------------------------------------------------------
// Layout facts of an image, read with the library (to check that mkfs did
// what the options ask).

/// Inode counts of an image by layout and version.
#[derive(Debug, Default)]
struct LayoutStats {
    compressed_full: usize,
    compressed_compact: usize,
    flat: usize,
    compact_inodes: usize,
    extended_inodes: usize,
    feature_incompat: u32,
}

fn layout_stats(image: &Path) -> LayoutStats {
    let src = open_path(image, 0).unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
    let img = Image::open(src, ImageOptions::default())
        .unwrap_or_else(|e| panic!("Image::open {}: {e}", image.display()));
    let mut st = LayoutStats {
        feature_incompat: img.superblock().feature_incompat,
        ..LayoutStats::default()
    };
    let mut problems = Vec::new();
    walk(
        &img,
        |e| {
            if e.inode.extended {
                st.extended_inodes += 1;
            } else {
                st.compact_inodes += 1;
            }
            if !e.inode.is_dir() && e.inode.size > 0 {
                match e.inode.layout {
                    ondisk::LAYOUT_COMPRESSED_FULL => st.compressed_full += 1,
                    ondisk::LAYOUT_COMPRESSED_COMPACT => st.compressed_compact += 1,
                    _ => st.flat += 1,
                }
            }
        },
        |p, e| problems.push(format!("{}: {e}", String::from_utf8_lossy(p))),
    )
    .unwrap_or_else(|e| panic!("walk {}: {e}", image.display()));
    assert!(
        problems.is_empty(),
        "{}: {}",
        image.display(),
        problems.join("; ")
    );
    st
}

/// Checks that an image of the big tree made with `args` has the layout the
/// options ask for.
fn check_layout(what: &str, args: &[&str], hints: bool, st: &LayoutStats) {
    let has = |opt: &str| {
        args.iter()
            .filter_map(|a| a.strip_prefix("-E"))
            .any(|e| e.split(',').any(|o| o == opt))
    };
    let cluster = args
        .iter()
        .filter_map(|a| a.strip_prefix("-C"))
        .map(|c| c.parse::<u64>().expect("numeric -C"))
        .next_back()
        .unwrap_or(4096);
    let compressed = st.compressed_full + st.compressed_compact;
    assert!(
        compressed >= 10,
        "{what}: only {compressed} compressed files ({st:?})"
    );
    if has("legacy-compress") {
        assert_eq!(
            st.compressed_compact, 0,
            "{what}: compact indexes despite legacy-compress ({st:?})"
        );
    } else {
        assert!(
            st.compressed_compact > 0,
            "{what}: no compact indexes ({st:?})"
        );
    }
    let bit = |b: u32| st.feature_incompat & b != 0;
    assert_eq!(
        bit(ondisk::INCOMPAT_ZTAILPACKING),
        has("ztailpacking"),
        "{what}: ztailpacking feature ({st:?})"
    );
    // Big pclusters (the compression-configs bit) come with -C > 4096 or
    // hints.
    assert_eq!(
        bit(ondisk::INCOMPAT_COMPR_CFGS),
        cluster > 4096 || hints,
        "{what}: big pcluster feature ({st:?})"
    );
    if has("force-inode-compact") {
        assert_eq!(st.extended_inodes, 0, "{what}: extended inodes ({st:?})");
    }
    if has("force-inode-extended") {
        assert_eq!(st.compact_inodes, 0, "{what}: compact inodes ({st:?})");
    }
}

// ---------------------------------------------------------------------------
// (1) mkfs 1.5 compressed variants: our manifest against the kernel's.

/// Compress hints for `--compress-hints` (mkfs 1.5 format: `PCLUSTERSIZE
/// REGEX`); used with `-C262144`, which every size here stays within.
const HINTS: &str = "4096 .*rand.*\n16384 .*text.*\n65536 sizes/.*\n262144 mixed_3m\n";

/// Builds `variant` images of the edge tree and of the big tree with
/// `-z{alg}` and `args` (plus the hints file when `hints`), and compares our
/// manifest of each with the kernel's view.
fn check_variant(variant: &str, alg: &str, args: &[&str], hints: bool) {
    assert_kernel_erofs();
    let started = Instant::now();
    let scratch = image_dir("erofs-zvariant-");
    let hints_path = scratch.path().join("hints.txt");
    let hints_arg = format!("--compress-hints={}", hints_path.display());
    let mut all: Vec<&str> = vec!["-U", FIXED_UUID];
    all.extend_from_slice(args);
    if hints {
        std::fs::write(&hints_path, HINTS).expect("writing the hints file");
        all.push(&hints_arg);
    }
    let edge = edge_tree();
    let big = big_tree();
    for (tree, root, min_entries) in [("edge", edge.path(), 5000), ("big", big.path(), 20)] {
        let image = mkfs_compressed(
            root,
            &scratch.path().join(format!("{variant}-{tree}.erofs")),
            alg,
            &all,
        );
        let kernel = {
            let mount = KernelMount::new(&image, &[]);
            walk_manifest(mount.path())
        };
        assert!(
            kernel.len() > min_entries,
            "{variant}: the kernel shows only {} entries of the {tree} tree",
            kernel.len()
        );
        let ours = run_manifest(&image, &[], None);
        assert_manifests_eq(
            &format!(
                "mkfs 1.5 -z{alg} {args:?}{} image of the {tree} tree: kernel (expected) vs our manifest",
                if hints { " + hints" } else { "" }
            ),
            &kernel,
            &ours,
        );
        if tree == "big" {
            check_layout(
                &format!("{variant} ({tree} tree)"),
                args,
                hints,
                &layout_stats(&image),
            );
        }
    }
    eprintln!("{variant}: {:.2?}", started.elapsed());
}

macro_rules! zvariant_tests {
    ($($name:ident: $alg:literal, [$($arg:expr),*] $(, hints: $hints:expr)?;)*) => {
        $(
            #[test]
            fn $name() {
                #[allow(unused_mut, unused_assignments)]
                let mut hints = false;
                $(hints = $hints;)?
                check_variant(stringify!($name), $alg, &[$($arg),*], hints);
            }
        )*
    };
}

// Each -E option with both lz4 and lz4hc; -C at 4 KiB, 16 KiB, 64 KiB,
// 256 KiB and 1 MiB (each with both compressors); lz4hc levels 1, 4, 9
// (default), 12; compress hints with both.
zvariant_tests! {
    test_zvariant_lz4: "lz4", [];
    test_zvariant_lz4hc: "lz4hc", [];
    test_zvariant_lz4hc1: "lz4hc,1", [];
    test_zvariant_lz4_c4k: "lz4", ["-C4096"];
    test_zvariant_lz4hc_c4k_extended_ztailpacking: "lz4hc", ["-C4096", "-Eforce-inode-extended,ztailpacking"];
    test_zvariant_lz4_c16k_ztailpacking: "lz4", ["-C16384", "-Eztailpacking"];
    test_zvariant_lz4hc_c16k: "lz4hc", ["-C16384"];
    test_zvariant_lz4_c64k_legacy: "lz4", ["-C65536", "-Elegacy-compress"];
    test_zvariant_lz4hc_c64k_ztailpacking: "lz4hc", ["-C65536", "-Eztailpacking"];
    test_zvariant_lz4_c256k_noinline: "lz4", ["-C262144", "-Enoinline_data"];
    test_zvariant_lz4hc_c256k_legacy_ztailpacking: "lz4hc", ["-C262144", "-Elegacy-compress,ztailpacking"];
    test_zvariant_lz4_c1m_ztailpacking: "lz4", ["-C1048576", "-Eztailpacking"];
    test_zvariant_lz4hc12_c1m: "lz4hc,12", ["-C1048576"];
    test_zvariant_lz4hc_c1m_legacy: "lz4hc,4", ["-C1048576", "-Elegacy-compress"];
    test_zvariant_lz4_ztailpacking_compact: "lz4", ["-Eztailpacking,force-inode-compact", "--all-root"];
    test_zvariant_lz4hc_compact_force_ids: "lz4hc", ["-Eforce-inode-compact", "--force-uid=1000", "--force-gid=100"];
    test_zvariant_lz4_extended_legacy: "lz4", ["-Eforce-inode-extended,legacy-compress"];
    test_zvariant_lz4hc_noinline: "lz4hc", ["-Enoinline_data"];
    test_zvariant_lz4hc12_ztailpacking_noinline: "lz4hc,12", ["-Eztailpacking,noinline_data"];
    test_zvariant_lz4_hints: "lz4", ["-C262144"], hints: true;
    test_zvariant_lz4hc_hints_ztailpacking: "lz4hc", ["-C262144", "-Eztailpacking"], hints: true;
}

// ---------------------------------------------------------------------------
// (2) Random-range reads against pread on a kernel mount.

/// Range reads per image (default; `EROFS_RANGE_READS=N` overrides it for
/// soak runs).
const RANGE_READS: u64 = 2000;

fn range_reads() -> u64 {
    env_u64("EROFS_RANGE_READS").unwrap_or(RANGE_READS)
}

fn env_u64(var: &str) -> Option<u64> {
    let v = std::env::var(var).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|e| panic!("{var}={v:?} is not a number: {e}")),
    )
}

/// A fixed seed per image name (FNV-1a), so every image gets its own
/// sequence and a failure reproduces; `EROFS_RANGE_SEED=N` is mixed in for
/// soak runs with other sequences.
fn seed_of(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^ env_u64("EROFS_RANGE_SEED").unwrap_or(0)
}

fn check_fixture_ranges(name: &str) {
    assert_kernel_erofs();
    let fx = fixture_image(name);
    assert!(is_compressed(name), "{name} is not a compressed fixture");
    let oracle = RangeOracle::new(name, &fx.image, &fx.devices(), ImageOptions::default());
    let report = oracle.run(seed_of(name), range_reads());
    eprintln!(
        "{} ({} files, {} > 64 KiB)",
        summary(name, &report),
        oracle.files.len(),
        oracle.large.len()
    );
    report.assert_clean(&format!("fixture {name}"));
}

macro_rules! fixture_range_tests {
    ($($test:ident: $name:literal;)*) => {
        /// Every fixture the range tests cover.
        const RANGE_FIXTURES: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                check_fixture_ranges($name);
            }
        )*
    };
}

fixture_range_tests! {
    test_ranges_fixture_big_lz4hc_c1m: "big_lz4hc-C1m";
    test_ranges_fixture_big_zstd_dedupe_fragments: "big_zstd-dedupe-fragments";
    test_ranges_fixture_edge_deflate9: "edge_deflate9";
    test_ranges_fixture_edge_libdeflate12: "edge_libdeflate12";
    test_ranges_fixture_edge_lz4_b1024: "edge_lz4-b1024";
    test_ranges_fixture_edge_lz4_compact_allroot: "edge_lz4-compact-allroot";
    test_ranges_fixture_edge_lz4_dotomitted: "edge_lz4-dotomitted";
    test_ranges_fixture_edge_lz4_extended: "edge_lz4-extended";
    test_ranges_fixture_edge_lz4_zd: "edge_lz4-zD";
    test_ranges_fixture_edge_lz4: "edge_lz4";
    test_ranges_fixture_edge_lz4hc_c64k: "edge_lz4hc-C64k";
    test_ranges_fixture_edge_lz4hc_dedupe_fphidden: "edge_lz4hc-dedupe-fphidden";
    test_ranges_fixture_edge_lz4hc_fingerprint: "edge_lz4hc-fingerprint";
    test_ranges_fixture_edge_lz4hc_fragments: "edge_lz4hc-fragments";
    test_ranges_fixture_edge_lz4hc_metabox: "edge_lz4hc-metabox";
    test_ranges_fixture_edge_lz4hc_xattrprefix: "edge_lz4hc-xattrprefix";
    test_ranges_fixture_edge_lz4hc_ztailpacking: "edge_lz4hc-ztailpacking";
    test_ranges_fixture_edge_lz4hc12: "edge_lz4hc12";
    test_ranges_fixture_edge_lzma_mz: "edge_lzma-MZ";
    test_ranges_fixture_edge_lzma_allfragments: "edge_lzma-allfragments";
    test_ranges_fixture_edge_lzma109_c1m: "edge_lzma109-C1m";
    test_ranges_fixture_edge_multialg_hints: "edge_multialg-hints";
    test_ranges_fixture_edge_zstd_48bit: "edge_zstd-48bit";
    test_ranges_fixture_edge_zstd_b2048_ztailpack: "edge_zstd-b2048-ztailpack";
    test_ranges_fixture_edge_zstd_fragdedupe: "edge_zstd-fragdedupe";
    test_ranges_fixture_edge_zstd19: "edge_zstd19";
    test_ranges_fixture_usr_zstd15_ztailpack: "usr_zstd15-ztailpack";
}

/// The list above must name every compressed fixture (and nothing else).
#[test]
fn test_ranges_cover_every_compressed_fixture() {
    let compressed: Vec<String> = all_fixture_images()
        .into_iter()
        .map(|f| f.name)
        .filter(|n| is_compressed(n))
        .collect();
    let mut listed: Vec<String> = RANGE_FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        listed, compressed,
        "the range-read tests must list exactly the compressed fixtures"
    );
}

/// Range reads on a mkfs 1.5 image of the big tree.
fn check_variant_ranges(variant: &str, alg: &str, args: &[&str]) {
    assert_kernel_erofs();
    let scratch = image_dir("erofs-zranges-");
    let tree = big_tree();
    let mut all: Vec<&str> = vec!["-U", FIXED_UUID];
    all.extend_from_slice(args);
    let image = mkfs_compressed(
        tree.path(),
        &scratch.path().join(format!("{variant}.erofs")),
        alg,
        &all,
    );
    drop(tree);
    let oracle = RangeOracle::new(variant, &image, &[], ImageOptions::default());
    let report = oracle.run(seed_of(variant), range_reads());
    eprintln!("{}", summary(variant, &report));
    report.assert_clean(&format!("mkfs 1.5 -z{alg} {args:?} image of the big tree"));
}

#[test]
fn test_ranges_zvariant_lz4hc12_c1m_ztailpacking() {
    check_variant_ranges(
        "lz4hc12_c1m_ztailpacking",
        "lz4hc,12",
        &["-C1048576", "-Eztailpacking"],
    );
}

#[test]
fn test_ranges_zvariant_lz4_c16k_legacy() {
    check_variant_ranges("lz4_c16k_legacy", "lz4", &["-C16384", "-Elegacy-compress"]);
}

#[test]
fn test_ranges_zvariant_lz4hc_c256k_noinline() {
    check_variant_ranges(
        "lz4hc_c256k_noinline",
        "lz4hc",
        &["-C262144", "-Enoinline_data"],
    );
}

// ---------------------------------------------------------------------------
// (3) Concurrent reads through one shared Image.

const THREADS: usize = 8;
const READS_PER_THREAD: u64 = 250;

fn check_concurrent(name: &str, decode_cache_bytes: Option<u64>) {
    assert_kernel_erofs();
    let fx = fixture_image(name);
    let opts = ImageOptions {
        decode_cache_bytes,
        ..ImageOptions::default()
    };
    let oracle = RangeOracle::new(name, &fx.image, &fx.devices(), opts);
    let report = oracle.run_concurrent(seed_of(name) ^ 0xc0c0, THREADS, READS_PER_THREAD);
    eprintln!(
        "{} ({THREADS} threads, decode cache {decode_cache_bytes:?})",
        summary(name, &report)
    );
    assert_eq!(report.reads, THREADS as u64 * READS_PER_THREAD);
    report.assert_clean(&format!("{THREADS} threads on fixture {name}"));
    // Every clone handed to a thread is gone again.
    assert_eq!(Arc::strong_count(&oracle.img), 1);
}

/// 1 MiB pclusters with a 3 MiB decoded-extent cache: extents are evicted
/// and decoded again while other threads wait for or read them.
#[test]
fn test_concurrent_big_lz4hc_c1m_small_cache() {
    check_concurrent("big_lz4hc-C1m", Some(3 << 20));
}

#[test]
fn test_concurrent_usr_zstd15_ztailpack() {
    check_concurrent("usr_zstd15-ztailpack", None);
}

/// No decoded-extent cache at all: every read decodes.
#[test]
fn test_concurrent_big_zstd_dedupe_fragments_no_cache() {
    check_concurrent("big_zstd-dedupe-fragments", Some(0));
}

// ---------------------------------------------------------------------------
// (4) Whole-extent reads: the first whole read of an extent decodes straight
// into the caller's buffer, the second admits it to the decoded-extent
// cache, the third is served from the cache. All three equal the kernel.

fn check_whole_extents(name: &str, max_files: usize) {
    use std::os::unix::fs::FileExt;
    assert_kernel_erofs();
    let fx = fixture_image(name);
    let oracle = RangeOracle::new(name, &fx.image, &fx.devices(), ImageOptions::default());
    let img = &oracle.img;
    let mut checked = 0u64;
    // Largest files first: they have the most extents.
    let mut order: Vec<usize> = (0..oracle.files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(oracle.files[i].size));
    for &i in order.iter().take(max_files) {
        let f = &oracle.files[i];
        let inode = common::rangeread::resolve(img, &f.path).unwrap();
        let ends = common::rangeread::extent_ends(img, &inode).unwrap();
        let mut want = vec![0u8; f.size as usize];
        f.kfile.read_exact_at(&mut want, 0).unwrap();
        for pass in 0..3 {
            let mut start = 0u64;
            for &end in &ends {
                let mut got = vec![0u8; (end - start) as usize];
                let n = img
                    .read(&inode, start, &mut got)
                    .unwrap_or_else(|e| panic!("{name} pass {pass}: read at {start}: {e}"));
                assert_eq!(n, got.len(), "{name}: short read at {start}");
                assert!(
                    got[..] == want[start as usize..end as usize],
                    "{name} pass {pass}: extent {start}..{end} of {} differs from the kernel",
                    common::manifest::escape_bytes(&f.path)
                );
                checked += 1;
                start = end;
            }
        }
    }
    assert!(checked > 0, "{name}: no extent read");
    eprintln!("{name}: {checked} whole-extent reads equal the kernel");
}

#[test]
fn test_whole_extents_big_lz4hc_c1m() {
    check_whole_extents("big_lz4hc-C1m", 4);
}

#[test]
fn test_whole_extents_big_zstd_dedupe_fragments() {
    check_whole_extents("big_zstd-dedupe-fragments", 4);
}

#[test]
fn test_whole_extents_edge_lz4hc_ztailpacking() {
    check_whole_extents("edge_lz4hc-ztailpacking", 40);
}

#[test]
fn test_whole_extents_edge_lzma_mz() {
    check_whole_extents("edge_lzma-MZ", 40);
}
