//! The kernel's EROFS driver as the oracle.
//!
//! - `test_walker_matches_fixture_manifests`: validates the harness itself:
//!   every fixture image, mounted by the kernel and walked, must match
//!   its expected manifest.
//! - `test_*_tree_survives_mkfs`: validates the tree generators and mkfs 1.5:
//!   the kernel's view of the image equals the source tree (but directory
//!   sizes). `EROFS_DUMP_MANIFESTS=DIR` writes both edge manifests there.
//! - `test_manifest_matches_kernel_*`: images of the edge tree made by
//!   Debian's mkfs.erofs 1.5 with various options (and one at a byte offset
//!   in a bigger file); our `image manifest` must print exactly what the
//!   kernel shows.
//! - `test_manifest_matches_fixture_*`: our `image manifest` of each
//!   fixture image must equal its expected manifest.
//!
//! These tests need root (mounting, building trees with devices and
//! trusted.* xattrs) and fail, rather than skip, without it. Environment:
//! `EROFS_FIXTURES` (fixtures directory), `EROFS_TEST_TMP` (where trees are
//! built; default /dev/shm), `EROFS_IMAGE_TMP` (where images go; default
//! target/tmp, must not be tmpfs), `EROFS_KEEP_TMP=1` (keep trees and images).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::fixtures::{all_fixture_images, apply_delta, fixture_image};
use common::kmount::MountOptions;
use common::manifest::{diff_manifests, escape_bytes, parse_jsonl, to_jsonl};
use common::mkfs::FIXED_UUID;
use common::trees::{edge_tree, image_dir, plain_tree};
use common::{
    assert_kernel_erofs, assert_manifests_eq, load_expected, mkfs, run_manifest, walk_manifest,
    KernelMount,
};

// ---------------------------------------------------------------------------
// Harness self-checks (no mounting).

#[test]
fn harness_escape_matches_python_backslashreplace() {
    assert_eq!(
        escape_bytes(b"/names/latin1_\xe9t\xe9"),
        "/names/latin1_\\xe9t\\xe9"
    );
    assert_eq!(escape_bytes(b"\xc3("), "\\xc3(");
    assert_eq!(escape_bytes(b"\xfe\xff"), "\\xfe\\xff");
    assert_eq!(escape_bytes(b"\xed\xa0\x80"), "\\xed\\xa0\\x80");
    assert_eq!(escape_bytes("é😀\u{1}".as_bytes()), "é😀\u{1}");
}

#[test]
fn harness_dev_numbers_round_trip() {
    use common::manifest::{dev_major, dev_minor, make_dev};
    for (ma, mi) in [
        (0, 0),
        (1, 3),
        (4095, 1_048_575),
        (259, 65537),
        (u32::MAX, u32::MAX),
    ] {
        let d = make_dev(ma, mi);
        assert_eq!((dev_major(d), dev_minor(d)), (ma, mi));
    }
    assert_eq!(make_dev(8, 1), 0x801);
}

#[test]
fn harness_delta_semantics() {
    let base = parse_jsonl(
        concat!(
            r#"{"path": "/", "type": "dir", "size": 1, "xattrs": {}}"#,
            "\n",
            r#"{"path": "/a", "type": "reg", "size": 2, "xattrs": {"user.x": "00"}}"#,
            "\n",
            r#"{"path": "/b\\xff", "path_hex": "2f62ff", "type": "reg", "size": 3, "xattrs": {}}"#,
            "\n",
        ),
        "base",
    );
    let delta = concat!(
        r#"{"path": "/a", "set": {"size": 5, "xattrs": {"user.y": ""}}, "unset": ["type"]}"#,
        "\n",
        r#"{"path": "/b\\xff", "path_hex": "2f62ff", "removed": true}"#,
        "\n",
        r#"{"path": "/0", "added": {"path": "/0", "type": "fifo", "xattrs": {}}}"#,
        "\n",
    );
    let got = apply_delta(base, delta, "delta");
    let want = parse_jsonl(
        concat!(
            r#"{"path": "/", "type": "dir", "size": 1, "xattrs": {}}"#,
            "\n",
            r#"{"path": "/0", "type": "fifo", "xattrs": {}}"#,
            "\n",
            r#"{"path": "/a", "size": 5, "xattrs": {"user.y": ""}}"#,
            "\n",
        ),
        "want",
    );
    assert_manifests_eq("delta application", &want, &got);
    // And the diff reports field-level differences.
    let report = diff_manifests(&want[..2], &got).expect("manifests differ");
    assert!(report.contains("\"/a\": unexpected in actual"), "{report}");
}

// ---------------------------------------------------------------------------
// (a) The walker against the fixtures' kernel manifests.

#[test]
fn test_walker_matches_fixture_manifests() {
    assert_kernel_erofs();
    let images = all_fixture_images();
    assert!(!images.is_empty(), "no fixture images found");
    let mut failures = Vec::new();
    for fx in &images {
        let started = Instant::now();
        let mount = match KernelMount::mount(&fx.image, &MountOptions::with_devices(&fx.devices()))
        {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: the kernel cannot mount it: {e}", fx.name));
                continue;
            }
        };
        let actual = walk_manifest(mount.path());
        drop(mount);
        let expected = load_expected(&fx.name);
        eprintln!(
            "{}: {} entries, {:.2?}",
            fx.name,
            actual.len(),
            started.elapsed()
        );
        if let Some(report) = diff_manifests(&expected, &actual) {
            failures.push(format!(
                "{}: kernel view differs from the expected manifest:\n{report}",
                fx.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixture images failed:\n\n{}",
        failures.len(),
        images.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// The generated trees through mkfs.erofs 1.5 and the kernel.

/// Fields the kernel shows as mkfs 1.5 read them from the source tree (with
/// default options). Directory sizes are EROFS-specific and left out.
fn source_comparable(entries: &[common::Entry]) -> Vec<common::Entry> {
    entries
        .iter()
        .cloned()
        .map(|mut e| {
            if e.kind() == "dir" {
                e.fields.remove("size");
            }
            e
        })
        .collect()
}

#[test]
fn test_plain_tree_survives_mkfs() {
    assert_kernel_erofs();
    let tree = plain_tree();
    let scratch = image_dir("erofs-oracle-");
    let image = mkfs(
        tree.path(),
        &scratch.path().join("plain.erofs"),
        &["-U", FIXED_UUID],
    );
    let mount = KernelMount::new(&image, &[]);
    let source = walk_manifest(tree.path());
    let kernel = walk_manifest(mount.path());
    assert_manifests_eq(
        "plain tree: source (expected) vs kernel mount of the mkfs 1.5 image",
        &source_comparable(&source),
        &source_comparable(&kernel),
    );
}

#[test]
fn test_edge_tree_survives_mkfs() {
    assert_kernel_erofs();
    let started = Instant::now();
    let tree = edge_tree();
    eprintln!("edge tree built in {:.2?}", started.elapsed());
    let scratch = image_dir("erofs-oracle-");
    let image = mkfs(
        tree.path(),
        &scratch.path().join("edge.erofs"),
        &["-U", FIXED_UUID],
    );
    let mount = KernelMount::new(&image, &[]);
    let source = walk_manifest(tree.path());
    let kernel = walk_manifest(mount.path());
    if let Ok(dir) = std::env::var("EROFS_DUMP_MANIFESTS") {
        let dir = PathBuf::from(dir);
        std::fs::write(dir.join("edge-source.jsonl"), to_jsonl(&source)).expect("dump source");
        std::fs::write(dir.join("edge-kernel.jsonl"), to_jsonl(&kernel)).expect("dump kernel");
    }
    assert_manifests_eq(
        "edge tree: source (expected) vs kernel mount of the mkfs 1.5 image",
        &source_comparable(&source),
        &source_comparable(&kernel),
    );
}

// ---------------------------------------------------------------------------
// (b) Our manifest against the kernel, for mkfs 1.5 variants of the edge tree.

/// Builds the edge tree, makes an image with `args` (plus a blob device when
/// `blob`), and compares our manifest with the kernel's view.
fn check_mkfs_variant(variant: &str, args: &[&str], blob: bool) {
    assert_kernel_erofs();
    let tree = edge_tree();
    let scratch = image_dir("erofs-oracle-");
    let image_path = scratch.path().join(format!("{variant}.erofs"));
    let blob_path = scratch.path().join(format!("{variant}.blob"));
    let blob_arg = format!("--blobdev={}", blob_path.display());
    let mut all: Vec<&str> = vec!["-U", FIXED_UUID];
    all.extend_from_slice(args);
    if blob {
        all.push(&blob_arg);
    }
    let image = mkfs(tree.path(), &image_path, &all);
    let devices: Vec<&Path> = if blob {
        vec![blob_path.as_path()]
    } else {
        vec![]
    };
    let kernel = {
        let mount = KernelMount::new(&image, &devices);
        walk_manifest(mount.path())
    };
    assert!(
        kernel.len() > 5000,
        "{variant}: the kernel shows only {} entries",
        kernel.len()
    );
    let ours = run_manifest(&image, &devices, None);
    assert_manifests_eq(
        &format!("mkfs 1.5 {args:?} image of the edge tree: kernel (expected) vs our manifest"),
        &kernel,
        &ours,
    );
}

macro_rules! kernel_variant_tests {
    ($($name:ident: [$($arg:expr),*] $(, blob: $blob:expr)?;)*) => {
        $(
            #[test]
            fn $name() {
                #[allow(unused_mut, unused_assignments)]
                let mut blob = false;
                $(blob = $blob;)?
                check_mkfs_variant(stringify!($name), &[$($arg),*], blob);
            }
        )*
    };
}

kernel_variant_tests! {
    test_manifest_matches_kernel_default: [];
    test_manifest_matches_kernel_noinline_data: ["-Enoinline_data"];
    test_manifest_matches_kernel_fixed_time_t0: ["-T0"];
    // Fixed mtimes: inodes with ids <= 65535 compact, the others extended.
    test_manifest_matches_kernel_fixed_time_mixed_inodes: ["-T1700000000", "--force-gid=7"];
    test_manifest_matches_kernel_ignore_mtime: ["--ignore-mtime"];
    // mkfs 1.5 refuses compact inodes for ids > 65535, hence the id options.
    test_manifest_matches_kernel_inode_compact: ["-Eforce-inode-compact", "--all-root"];
    test_manifest_matches_kernel_inode_compact_max_ids: ["-Eforce-inode-compact", "--force-uid=65535", "--force-gid=65534"];
    test_manifest_matches_kernel_inode_extended: ["-Eforce-inode-extended"];
    test_manifest_matches_kernel_chunk4k: ["--chunksize=4096"];
    test_manifest_matches_kernel_chunk64k: ["--chunksize=65536"];
    test_manifest_matches_kernel_chunk64k_blobdev: ["--chunksize=65536"], blob: true;
    test_manifest_matches_kernel_chunk4k_blobdev_noinline: ["--chunksize=4096", "-Enoinline_data"], blob: true;
    test_manifest_matches_kernel_all_root: ["--all-root"];
    test_manifest_matches_kernel_force_ids: ["--force-uid=4294967294", "--force-gid=65536"];
    test_manifest_matches_kernel_xattr_tolerance_0: ["-x0"];
    test_manifest_matches_kernel_xattr_tolerance_5: ["-x5"];
    test_manifest_matches_kernel_no_xattrs: ["-x-1"];
    test_manifest_matches_kernel_no_sb_checksum: ["-Enosbcrc"];
}

/// The image at a byte offset inside a bigger file (kernel `-o fsoffset=`,
/// Linux 6.16+; our `--offset`).
#[test]
fn test_manifest_matches_kernel_at_offset() {
    const OFFSET: u64 = 65536;
    assert_kernel_erofs();
    let tree = edge_tree();
    let scratch = image_dir("erofs-oracle-");
    let plain = mkfs(
        tree.path(),
        &scratch.path().join("plain.erofs"),
        &["-U", FIXED_UUID],
    );
    let mut data = vec![0xa5u8; OFFSET as usize];
    data.extend(std::fs::read(&plain).expect("reading the image"));
    let image = scratch.path().join("at-offset.img");
    std::fs::write(&image, data).expect("writing the offset image");
    let opts = MountOptions {
        devices: vec![],
        fsoffset: Some(OFFSET),
    };
    let kernel = {
        let mount = KernelMount::mount(&image, &opts).unwrap_or_else(|e| panic!("{e}"));
        walk_manifest(mount.path())
    };
    let ours = run_manifest(&image, &[], Some(OFFSET));
    assert_manifests_eq(
        "edge tree image at offset 65536: kernel (expected) vs our manifest",
        &kernel,
        &ours,
    );
}

// ---------------------------------------------------------------------------
// (c) Our manifest against the fixtures' expected manifests (every fixture,
// compressed ones included).

fn check_fixture(name: &str) {
    let fx = fixture_image(name);
    let ours = run_manifest(&fx.image, &fx.devices(), None);
    assert_manifests_eq(
        &format!("fixture {name}: expected manifest vs our manifest"),
        &load_expected(name),
        &ours,
    );
}

macro_rules! fixture_tests {
    ($($test:ident: $name:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check_fixture($name);
            }
        )*
    };
}

fixture_tests! {
    test_manifest_matches_fixture_big_chunk64k_blobdev: "big_chunk64k-blobdev";
    test_manifest_matches_fixture_big_lz4hc_c1m: "big_lz4hc-C1m";
    test_manifest_matches_fixture_big_zstd_dedupe_fragments: "big_zstd-dedupe-fragments";
    test_manifest_matches_fixture_edge_chunk4k_b512_blobdev: "edge_chunk4k-b512-blobdev";
    test_manifest_matches_fixture_edge_deflate9: "edge_deflate9";
    test_manifest_matches_fixture_edge_libdeflate12: "edge_libdeflate12";
    test_manifest_matches_fixture_edge_lz4: "edge_lz4";
    test_manifest_matches_fixture_edge_lz4_b1024: "edge_lz4-b1024";
    test_manifest_matches_fixture_edge_lz4_compact_allroot: "edge_lz4-compact-allroot";
    test_manifest_matches_fixture_edge_lz4_dotomitted: "edge_lz4-dotomitted";
    test_manifest_matches_fixture_edge_lz4_extended: "edge_lz4-extended";
    test_manifest_matches_fixture_edge_lz4_zd: "edge_lz4-zD";
    test_manifest_matches_fixture_edge_lz4hc_c64k: "edge_lz4hc-C64k";
    test_manifest_matches_fixture_edge_lz4hc_dedupe_fphidden: "edge_lz4hc-dedupe-fphidden";
    test_manifest_matches_fixture_edge_lz4hc_fingerprint: "edge_lz4hc-fingerprint";
    test_manifest_matches_fixture_edge_lz4hc_fragments: "edge_lz4hc-fragments";
    test_manifest_matches_fixture_edge_lz4hc_metabox: "edge_lz4hc-metabox";
    test_manifest_matches_fixture_edge_lz4hc_xattrprefix: "edge_lz4hc-xattrprefix";
    test_manifest_matches_fixture_edge_lz4hc_ztailpacking: "edge_lz4hc-ztailpacking";
    test_manifest_matches_fixture_edge_lz4hc12: "edge_lz4hc12";
    test_manifest_matches_fixture_edge_lzma_mz: "edge_lzma-MZ";
    test_manifest_matches_fixture_edge_lzma_allfragments: "edge_lzma-allfragments";
    test_manifest_matches_fixture_edge_lzma109_c1m: "edge_lzma109-C1m";
    test_manifest_matches_fixture_edge_multialg_hints: "edge_multialg-hints";
    test_manifest_matches_fixture_edge_plain_48bit: "edge_plain-48bit";
    test_manifest_matches_fixture_edge_plain_b4096: "edge_plain-b4096";
    test_manifest_matches_fixture_edge_plain_b512: "edge_plain-b512";
    test_manifest_matches_fixture_edge_plain_b512_noinline: "edge_plain-b512-noinline";
    test_manifest_matches_fixture_edge_zstd_48bit: "edge_zstd-48bit";
    test_manifest_matches_fixture_edge_zstd_b2048_ztailpack: "edge_zstd-b2048-ztailpack";
    test_manifest_matches_fixture_edge_zstd_fragdedupe: "edge_zstd-fragdedupe";
    test_manifest_matches_fixture_edge_zstd19: "edge_zstd19";
    test_manifest_matches_fixture_usr_zstd15_ztailpack: "usr_zstd15-ztailpack";
}

/// Every fixture image has a test above (a new fixture must get one).
#[test]
fn test_every_fixture_has_a_manifest_test() {
    let src = include_str!("kernel_oracle.rs");
    let dir = common::fixtures::fixtures_dir().join("images");
    for entry in std::fs::read_dir(&dir).expect("fixture images") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".erofs") {
            assert!(
                src.contains(&format!("\"{stem}\";")),
                "fixture {stem} has no test_manifest_matches_fixture_* test"
            );
        }
    }
}
