//! The source trees of the project's fixture images (`scripts/fixtures.sh`,
//! `docs/fixtures.md`): `edge` and `big`, built deterministically here; the
//! third tree, `usr`, is unpacked from pinned wheels by the script.
//!
//! - `edge`: the edge tree of [`super::trees`] with 255-byte names
//!   ([`EdgeOptions::FULL`]), plus what newer mkfs features need
//!   ([`fixture_edge_extras`]): text, log, tail and mixed files for the
//!   compress hints (`tests/fixtures/hints.txt`), files with equal content
//!   for dedupe, 150 xattrs on one file, names under a long xattr prefix for
//!   `--xattr-prefix`, and a 3415-byte path.
//! - `big`: one 40 MiB file of mixed data (random, log text, zeros,
//!   patterns; [`big_mixed`]) and a small README.

use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::bigtree::{generate, Content};
use super::trees::{
    build_edge_tree_plus, log_text, mixed_data, mo, Builder, EdgeOptions, XorShift64, FILE,
};

/// Sizes of `/files/text_N` (block boundaries of 512..4096-byte blocks).
pub const FIXTURE_TEXT_SIZES: &[usize] = &[
    511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8191, 8192, 8193,
];

/// Sizes of `/files/tail_N`: a few bytes past whole clusters, so the tail
/// is small (ztailpacking, fragments); 1500 bytes of log text repeated.
pub const FIXTURE_TAIL_SIZES: &[usize] = &[12289, 12388, 14288, 16288];

/// Number of xattrs on `/xattrs/many_user` (the edge tree has 100).
pub const FIXTURE_MANY_XATTRS: usize = 150;

/// The long xattr name prefix the `edge_lz4hc-xattrprefix` image registers
/// with `--xattr-prefix` (the tree has 40 names under it).
pub const FIXTURE_LONG_XATTR_PREFIX: &str =
    "user.com.example.a-rather-long-application.namespace.prefix.for.erofs.";

/// Levels of `/deep_long` (85-byte components: a 3415-byte deepest path).
pub const FIXTURE_DEEP_LONG_LEVELS: usize = 40;

/// Builds the fixtures' `edge` tree into the existing empty directory `root`.
pub fn build_fixture_edge_tree(root: &Path) {
    build_edge_tree_plus(root, &EdgeOptions::FULL, fixture_edge_extras);
}

/// What the fixtures' edge tree has beyond [`super::trees::build_edge_tree`].
fn fixture_edge_extras(b: &mut Builder) {
    for &n in FIXTURE_TEXT_SIZES {
        let data = generate(Content::Text, n, 0x7e47_0000 + n as u64);
        b.file(format!("files/text_{n}").as_bytes(), &data, FILE);
    }
    for n in [65535usize, 65536, 65537] {
        b.file(
            format!("files/log_{n}").as_bytes(),
            &log_text(n, n as u64),
            FILE,
        );
    }
    b.file(b"files/mixed_131073", &mixed_data(131_073, 13), FILE);
    // Compressible enough that 12289 bytes fit one 4 KiB lz4 pcluster.
    for &n in FIXTURE_TAIL_SIZES {
        let line = log_text(1500, 0x7a11 + n as u64);
        b.file(
            format!("files/tail_{n}").as_bytes(),
            &line.iter().copied().cycle().take(n).collect::<Vec<u8>>(),
            FILE,
        );
    }
    // Equal content in three files (dedupe, fragdedupe).
    let same = generate(Content::Text, 20000, 0x5a3e);
    for i in 0..3 {
        b.file(format!("files/samecontent_{i}").as_bytes(), &same, FILE);
    }

    for i in 100..FIXTURE_MANY_XATTRS {
        let value = format!("value-{i}-{}", "v".repeat(i % 37));
        b.xattr(
            b"xattrs/many_user",
            &format!("user.attr.{i:03}"),
            value.as_bytes(),
        );
    }
    for i in 0..40 {
        let value = XorShift64::new(200 + i as u64).bytes(1 + i / 10);
        b.xattr(
            b"xattrs/prefix_sharing",
            &format!("{FIXTURE_LONG_XATTR_PREFIX}key{i:02}"),
            &value,
        );
    }
    b.file(
        b"xattrs/prefix_only",
        b"long prefix\n",
        mo(0o600, 1000, 1000),
    );
    b.xattr(
        b"xattrs/prefix_only",
        &format!("{FIXTURE_LONG_XATTR_PREFIX}alone"),
        b"one",
    );

    let mut p = b"deep_long".to_vec();
    b.dir(&p, super::trees::DIR);
    for level in 1..=FIXTURE_DEEP_LONG_LEVELS {
        p.extend_from_slice(format!("/L{level:02}_{}", "q".repeat(80)).as_bytes());
        b.dir(&p, super::trees::DIR);
    }
    p.extend_from_slice(b"/leaf");
    b.file(&p, b"the bottom of a 3415-byte path\n", FILE);
}

/// Size of `/mixed_40m` in the `big` tree.
pub const FIXTURE_BIG_SIZE: usize = 40 << 20;

/// `len` bytes of segments at any offset: random (up to 32 KiB, 4% of the
/// segments), log text (up to 64 KiB, 8%), short random patterns repeated
/// (up to 256 KiB, 28%) and zeros (up to 256 KiB, the rest): about 0.3 MiB
/// random, 1 MiB text, 10 MiB patterns in 40 MiB. Long stretches of
/// self-similar text make `-Ededupe` very slow (minutes per MiB), hence
/// the short text segments.
pub fn big_mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    let mut out = Vec::with_capacity(len + (256 << 10));
    while out.len() < len {
        let kind = rng.below(100);
        if kind < 4 {
            let n = 1 + rng.below(32 << 10) as usize;
            out.extend_from_slice(&rng.bytes(n));
        } else if kind < 12 {
            let n = 1 + rng.below(64 << 10) as usize;
            out.extend_from_slice(&log_text(n, rng.next_u64()));
        } else if kind < 40 {
            let n = 1 + rng.below(256 << 10) as usize;
            let period = 1 + rng.below(300) as usize;
            let pattern = rng.bytes(period);
            out.extend(pattern.iter().copied().cycle().take(n));
        } else {
            let n = 1 + rng.below(256 << 10) as usize;
            out.resize(out.len() + n, 0);
        }
    }
    out.truncate(len);
    out
}

/// Builds the fixtures' `big` tree into the existing empty directory `root`.
pub fn build_fixture_big_tree(root: &Path) {
    let at = |sec: u64, nsec: u32| SystemTime::UNIX_EPOCH + Duration::new(sec, nsec);
    let put = |rel: &str, data: &[u8], uid: u32, time: SystemTime| {
        let path = root.join(rel);
        let mut f =
            File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        f.write_all(data)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        f.set_times(FileTimes::new().set_modified(time).set_accessed(time))
            .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
        lchown(&path, Some(uid), Some(uid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    };
    put(
        "README",
        b"40 MiB of mixed data, seeded.\n",
        0,
        at(1_709_182_941, 0),
    );
    put(
        "mixed_40m",
        &big_mixed(FIXTURE_BIG_SIZE, 0xb1640),
        1000,
        at(1_700_000_042, 420),
    );
    let dir = File::open(root).unwrap_or_else(|e| panic!("open {}: {e}", root.display()));
    let t = at(1_700_000_000, 0);
    dir.set_times(FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap_or_else(|e| panic!("set times of {}: {e}", root.display()));
    dir.set_permissions(fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", root.display()));
}
