//! The "big" tree: a few large files of mixed data (~11 MiB in all, 1 MiB of
//! it a hole) for compressed images, so that files span many pclusters, big
//! pclusters fill up, incompressible stretches turn into plain pclusters and
//! file tails end in the middle of a logical cluster.
//!
//! Every byte comes from a seeded xorshift PRNG ([`XorShift64`]), so images
//! (and failures) reproduce exactly. See [`BIG_FILES`] for what is in it.

use std::fs::{self, File, FileTimes};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use super::trees::{scratch_dir, XorShift64};

/// What one file of the big tree holds.
#[derive(Clone, Copy, Debug)]
pub enum Content {
    /// Segments of random, text, zero and pattern data with random lengths
    /// (1 byte .. 256 KiB), so kind changes fall anywhere in a cluster.
    Mixed,
    /// Word-salad prose with line breaks (compresses ~2-3x).
    Text,
    /// Incompressible random bytes.
    Random,
    /// All zeros (written, not a hole).
    Zeros,
    /// A 4099-byte random pattern repeated (long matches across blocks).
    Pattern,
    /// 4 KiB random / 4 KiB text alternating, shifted by 1000 bytes, so
    /// pclusters mix compressible and incompressible data.
    Interleaved,
    /// Each 4 KiB: 2 KiB random then 2 KiB zeros (about 50% ratio).
    HalfCompressible,
    /// A 1 MiB hole, then text (mkfs compresses the zeros it reads).
    SparseThenText,
}

/// The files of the big tree: (path, size, content). Sizes end mid-block and
/// mid-cluster on purpose.
pub const BIG_FILES: &[(&str, u64, Content)] = &[
    ("mixed_3m", 3 * (1 << 20) + 12345, Content::Mixed),
    ("text_1m", (1 << 20) + 2049, Content::Text),
    ("random_1m", (1 << 20) + 4097, Content::Random),
    ("zeros_1m", (1 << 20) + 1, Content::Zeros),
    ("pattern_600k", 600_017, Content::Pattern),
    ("interleaved_1m", (1 << 20) + 3000, Content::Interleaved),
    ("halfcomp_512k", 524_288 + 2047, Content::HalfCompressible),
    ("sparse_text", (1 << 20) + 5000, Content::SparseThenText),
    ("sizes/text_4095", 4095, Content::Text),
    ("sizes/text_4096", 4096, Content::Text),
    ("sizes/text_4097", 4097, Content::Text),
    ("sizes/text_16383", 16383, Content::Text),
    ("sizes/text_16385", 16385, Content::Text),
    ("sizes/text_65535", 65535, Content::Text),
    ("sizes/text_65537", 65537, Content::Text),
    ("sizes/text_262143", 262_143, Content::Text),
    ("sizes/text_262145", 262_145, Content::Text),
    ("sizes/mixed_300001", 300_001, Content::Mixed),
    ("sizes/mixed_1048575", 1_048_575, Content::Mixed),
    ("sizes/random_65537", 65537, Content::Random),
    ("sizes/random_131071", 131_071, Content::Random),
    ("sizes/zeros_12289", 12289, Content::Zeros),
];

/// Fixed mtime of every file and directory of the tree.
pub const BIG_MTIME: u64 = 1_700_000_000;

/// A built big tree in its own scratch directory (removed on drop).
#[derive(Debug)]
pub struct BigTree {
    dir: TempDir,
}

impl BigTree {
    /// The tree's root directory (what mkfs.erofs gets).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The big tree, freshly built in a scratch directory (see [`BIG_FILES`]).
pub fn big_tree() -> BigTree {
    let dir = scratch_dir("erofs-big-");
    build_big_tree(dir.path());
    BigTree { dir }
}

/// Writes the big tree under `root` (an existing empty directory).
pub fn build_big_tree(root: &Path) {
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(BIG_MTIME);
    for (i, (rel, size, content)) in BIG_FILES.iter().enumerate() {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
        }
        let seed = 0xb16_0000 + i as u64;
        let mut f =
            File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        match content {
            Content::SparseThenText => {
                let hole = 1u64 << 20;
                f.seek(SeekFrom::Start(hole))
                    .unwrap_or_else(|e| panic!("seek {}: {e}", path.display()));
                f.write_all(&generate(Content::Text, (size - hole) as usize, seed))
            }
            c => f.write_all(&generate(*c, *size as usize, seed)),
        }
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        f.set_len(*size)
            .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        f.set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))
            .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
    }
    for dir in [root.join("sizes"), root.to_path_buf()] {
        let f = File::open(&dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()));
        f.set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))
            .unwrap_or_else(|e| panic!("set times of {}: {e}", dir.display()));
    }
}

/// `len` bytes of `content` from `seed`.
pub fn generate(content: Content, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    let mut out = Vec::with_capacity(len + 4096);
    match content {
        Content::Random => out = rng.bytes(len),
        Content::Zeros => out.resize(len, 0),
        Content::Text | Content::SparseThenText => text(&mut rng, len, &mut out),
        Content::Pattern => {
            let pattern = rng.bytes(4099);
            while out.len() < len {
                out.extend_from_slice(&pattern);
            }
        }
        Content::Interleaved => {
            text(&mut rng, 1000, &mut out);
            while out.len() < len {
                out.extend_from_slice(&rng.bytes(4096));
                text(&mut rng, 4096, &mut out);
            }
        }
        Content::HalfCompressible => {
            while out.len() < len {
                out.extend_from_slice(&rng.bytes(2048));
                out.resize(out.len() + 2048, 0);
            }
        }
        Content::Mixed => {
            while out.len() < len {
                let seg = 1 + rng.below(256 << 10) as usize;
                match rng.below(4) {
                    0 => out.extend_from_slice(&rng.bytes(seg)),
                    1 => out.resize(out.len() + seg, 0),
                    2 => {
                        let period = 1 + rng.below(300) as usize;
                        let pattern = rng.bytes(period);
                        out.extend(pattern.iter().copied().cycle().take(seg));
                    }
                    _ => text(&mut rng, seg, &mut out),
                }
            }
        }
    }
    out.truncate(len);
    out
}

/// Appends exactly `len` bytes of word-salad text.
fn text(rng: &mut XorShift64, len: usize, out: &mut Vec<u8>) {
    const WORDS: &[&str] = &[
        "the",
        "filesystem",
        "cluster",
        "physical",
        "logical",
        "block",
        "inode",
        "kernel",
        "compressed",
        "of",
        "and",
        "a",
        "to",
        "read",
        "only",
        "image",
        "data",
        "map",
        "tail",
        "packing",
        "lz4",
        "decompress",
        "page",
        "cache",
        "virtio",
        "daemon",
        "guest",
        "host",
        "extent",
        "index",
        "head",
        "nonhead",
        "plain",
        "big",
        "erofs",
        "superblock",
    ];
    let end = out.len() + len;
    let mut col = 0usize;
    while out.len() < end {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 60 + rng.below(20) as usize {
            out.push(b'\n');
            col = 0;
        } else if rng.below(12) == 0 {
            out.extend_from_slice(b". ");
        } else {
            out.push(b' ');
        }
    }
    out.truncate(end);
}
