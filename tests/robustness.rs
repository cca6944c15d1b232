//! Robustness against corrupt images: a seeded mutation test.
//!
//! Every mutation flips, sets or overwrites a few bytes of a fixture image in
//! one of the on-disk structures (superblock, inodes, directory entries,
//! inline/shared xattrs and long xattr prefixes, chunk indexes, the device
//! table, and for compressed images the map headers, lcluster indexes and
//! encoded pclusters). The positions come from the reader itself: the
//! pristine image is walked with the library to find where those
//! structures really are (see [`PLAN`] for the mutations per area). Each
//! mutated image (held in memory) then gets the in-process equivalent of
//! `image check` plus `image manifest`, and more: open, walk, read every
//! file, readlink every symlink, list every xattr and get each by name,
//! readdir every directory from the start and again from a middle offset,
//! look every listed name up in its parent.
//!
//! Every call must return `Ok` or `Err`. The harness enforces:
//! - no panic: each mutation runs under `catch_unwind`; a panic is reported
//!   with the seed, mutation number, image, offset and old -> new bytes;
//! - no hang: each mutation runs on its own worker thread, waited for with a
//!   timeout through a channel;
//! - no huge allocation: this test binary's global allocator records the
//!   largest single request of each thread, which must stay below
//!   [`ALLOC_CAP`];
//! - informative errors: almost every error's text names a field, a
//!   structure or an inode (nid);
//! - API contracts that must hold even on corrupt data (a read never
//!   returns a short count before the end of the file, readdir resumed at an
//!   offset it reported gives the rest of the same listing).
//!
//! Crafted cases cover a directory cycle (a dirent pointing at an ancestor),
//! self-referencing chunk indexes and ~340 extreme field values (sizes,
//! counts, addresses, block sizes). A self-test shows the harness does
//! catch a panic, a hang and a huge allocation. Finally ~20 mutated images are
//! written to files and given to the real binary (`image check`, `image
//! manifest`), which must exit 0 or 1 (never 101 or a signal) in time.
//!
//! Fixtures: `$EROFS_FIXTURES`, else `tests/fixtures` (built by
//! `scripts/fixtures.sh`; see `docs/fixtures.md`).
//! Set `EROFS_MUTATION_TRACE=1` to print every mutation before it runs
//! (useful if one ever aborts the whole process).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use erofs_virtiofsd::erofs::zmap::{ZKind, ZMap};
use erofs_virtiofsd::erofs::{self, ExtentKind, Image, ImageOptions, Inode, InodeKind};
use erofs_virtiofsd::source::{MemorySource, Source};

// ---------------------------------------------------------------------------
// Allocation tracking.

/// Largest single allocation any mutated image may cause. The biggest
/// legitimate buffers are far smaller (decoded extents <= 12 MiB, xattr
/// bodies <= 256 KiB, directory blocks <= 64 KiB, the harness's own read
/// buffer 128 KiB, the walk's path list a few MiB); a corrupt size field
/// must never get near this.
const ALLOC_CAP: usize = 64 << 20;

/// Largest single allocation request seen in the whole process.
static PROCESS_PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Largest single allocation request seen on this thread.
    static THREAD_PEAK: Cell<usize> = const { Cell::new(0) };
    /// Set by the harness self-test, which makes a huge request on purpose.
    static HUGE_EXPECTED: Cell<bool> = const { Cell::new(false) };
}

/// `System`, recording the largest single request per thread.
struct PeakTrackingAlloc;

impl PeakTrackingAlloc {
    fn note(size: usize) {
        PROCESS_PEAK.fetch_max(size, Ordering::Relaxed);
        // `try_with`: the slot may be gone while a thread is being torn down.
        let _ = THREAD_PEAK.try_with(|p| {
            if size > p.get() {
                p.set(size);
            }
        });
        if size > ALLOC_CAP && !HUGE_EXPECTED.try_with(Cell::get).unwrap_or(false) {
            report_huge_allocation(size);
        }
    }
}

/// Tells stderr about a request above the cap right away, without
/// allocating: if the request then fails, the process aborts and this line
/// is the only trace (rerun with `EROFS_MUTATION_TRACE=1` to see which
/// mutation it was).
fn report_huge_allocation(size: usize) {
    let mut buf = [0u8; 96];
    let head = b"robustness: allocation request of ";
    let tail = b" bytes exceeds the cap\n";
    buf[..head.len()].copy_from_slice(head);
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = head.len();
    buf[len..len + digits.len() - i].copy_from_slice(&digits[i..]);
    len += digits.len() - i;
    buf[len..len + tail.len()].copy_from_slice(tail);
    len += tail.len();
    // SAFETY: `buf[..len]` is initialised memory we own; write(2) on fd 2
    // only reads it.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the bookkeeping neither allocates nor touches the memory.
unsafe impl GlobalAlloc for PeakTrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakTrackingAlloc = PeakTrackingAlloc;

fn thread_peak() -> usize {
    THREAD_PEAK.with(Cell::get)
}

// ---------------------------------------------------------------------------
// Deterministic randomness.

/// The seed of every campaign (each area mixes in its own salt).
const SEED: u64 = 0x5EED_E0F5_2024_0001;

/// xorshift64* (Vigna): tiny, deterministic, good enough to pick offsets.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Never zero (xorshift's fixed point); scramble low-entropy seeds.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

fn hash_name(s: &str) -> u64 {
    // FNV-1a: a stable per-name salt.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Fixtures.

/// The images mutated: every uncompressed layout, and compressed ones whose
/// metadata (superblock, inodes, directories, xattrs) is parsed even while
/// their data is not decoded.
const FIXTURES: &[&str] = &[
    "edge_plain-b4096",
    "edge_plain-b512",
    "edge_plain-b512-noinline",
    "edge_plain-48bit",
    "edge_chunk4k-b512-blobdev",
    "big_chunk64k-blobdev",
    "edge_lz4",
    "edge_lz4hc-xattrprefix",
    "edge_zstd-48bit",
    "edge_lz4-dotomitted",
    "edge_lzma-MZ",
    "edge_deflate9",
    "edge_lz4hc-ztailpacking",
    "edge_zstd-fragdedupe",
];

#[path = "common/fixture_dir.rs"]
mod fixture_dir;
use fixture_dir::fixtures_dir;

/// One fixture image, its extra device and where its structures are.
#[derive(Debug)]
struct Fixture {
    name: &'static str,
    bytes: Arc<Vec<u8>>,
    blob_path: Option<PathBuf>,
    blob: Option<Arc<dyn Source>>,
    targets: Targets,
    /// Error texts the pristine image already produces (compressed data
    /// not decoded yet); left out of the informativeness statistics.
    baseline_errors: Arc<HashSet<String>>,
    /// What the pristine image reads as ([`Report::digest`]).
    baseline_digest: u64,
}

impl Fixture {
    fn devices(&self) -> Vec<Arc<dyn Source>> {
        self.blob.iter().cloned().collect()
    }
}

fn fixtures() -> &'static [Fixture] {
    static ALL: OnceLock<Vec<Fixture>> = OnceLock::new();
    ALL.get_or_init(|| FIXTURES.iter().map(|n| load_fixture(n)).collect())
}

fn fixture(name: &str) -> &'static Fixture {
    fixtures()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("fixture {name} is not in FIXTURES"))
}

fn load_fixture(name: &'static str) -> Fixture {
    let images = fixtures_dir().join("images");
    let image_path = images.join(format!("{name}.erofs"));
    let bytes = std::fs::read(&image_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", image_path.display()));
    let blob_path = Some(images.join(format!("{name}.blob"))).filter(|p| p.is_file());
    let blob = blob_path.as_ref().map(|p| {
        let b = std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        Arc::new(MemorySource::from_vec(b)) as Arc<dyn Source>
    });
    let devices: Vec<Arc<dyn Source>> = blob.iter().cloned().collect();
    let targets = discover(name, &bytes, devices.clone());
    let mut baseline = Report {
        strict: true,
        ..Report::default()
    };
    exercise(
        bytes.clone().to_vec(),
        devices,
        &HashSet::new(),
        &mut baseline,
    );
    assert!(
        baseline.opened && baseline.violations.is_empty(),
        "{name}: the pristine image fails: {:?}",
        baseline.violations
    );
    Fixture {
        name,
        bytes: Arc::new(bytes),
        blob_path,
        blob,
        targets,
        baseline_errors: Arc::new(baseline.all_errors),
        baseline_digest: baseline.digest,
    }
}

// ---------------------------------------------------------------------------
// Where the structures are (found with the library on the pristine image).

/// The on-disk structures mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Area {
    Superblock,
    Inode,
    Dirent,
    XattrInline,
    XattrShared,
    XattrPrefix,
    ChunkIndex,
    DeviceTable,
    /// Compressed inodes: map header and lcluster indexes.
    ZIndex,
    /// Compressed inodes: the encoded bytes of a pcluster.
    ZData,
}

/// A byte range holding one instance of a structure.
#[derive(Debug, Clone)]
struct Region {
    start: u64,
    len: u64,
    /// The inode it belongs to, if any.
    nid: Option<u64>,
    /// Directory blocks: number of dirents (from dirent 0's nameoff).
    dirents: u64,
    /// Directory blocks: nameoff of dirent 0 (start of the names).
    names_at: u64,
}

impl Region {
    fn new(start: u64, len: u64, nid: Option<u64>) -> Self {
        Region {
            start,
            len,
            nid,
            dirents: 0,
            names_at: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Targets {
    regions: BTreeMap<Area, Vec<Region>>,
}

impl Targets {
    fn add(&mut self, area: Area, r: Region) {
        if r.len > 0 {
            self.regions.entry(area).or_default().push(r);
        }
    }

    fn of(&self, area: Area) -> &[Region] {
        self.regions.get(&area).map_or(&[], Vec::as_slice)
    }
}

fn le16(b: &[u8], at: u64) -> u16 {
    let at = at as usize;
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Inodes per (kind, layout, form, has-xattrs) class kept for mutation.
const INODES_PER_CLASS: usize = 8;
/// Directory blocks kept per directory (first, last and random ones).
const DIR_BLOCKS_PER_DIR: usize = 4;

fn discover(name: &str, bytes: &[u8], devices: Vec<Arc<dyn Source>>) -> Targets {
    let src: Arc<dyn Source> = Arc::new(MemorySource::from_vec(bytes.to_vec()));
    let img = Image::open(
        src,
        ImageOptions {
            devices,
            ..ImageOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: pristine image does not open: {e}"));
    let sb = img.superblock().clone();
    let bs = sb.block_size();
    let mut t = Targets::default();
    t.add(Area::Superblock, Region::new(1024, 144, None));
    if sb.extra_devices > 0 {
        t.add(
            Area::DeviceTable,
            Region::new(
                u64::from(sb.devt_slotoff) * 128,
                128 * u64::from(sb.extra_devices),
                None,
            ),
        );
    }

    let mut inodes: BTreeMap<u64, Inode> = BTreeMap::new();
    erofs::walk(
        &img,
        |e| {
            inodes.insert(e.inode.nid, e.inode.clone());
        },
        |p, e| panic!("{name}: pristine walk problem at {p:?}: {e}"),
    )
    .unwrap_or_else(|e| panic!("{name}: pristine walk fails: {e}"));

    let mut rng = Rng::new(SEED ^ hash_name(name));
    // A stratified sample of inodes: a few of every class.
    let mut classes: BTreeMap<String, Vec<&Inode>> = BTreeMap::new();
    for ino in inodes.values().filter(|i| !i.loc.in_metabox) {
        let key = format!(
            "{:?}/{}/{}/{}/{}",
            ino.kind,
            ino.layout,
            ino.extended,
            ino.xattr_isize > 0,
            ino.nid == img.root_nid()
        );
        classes.entry(key).or_default().push(ino);
    }
    for members in classes.values() {
        let mut picked = BTreeMap::new();
        picked.insert(0, members[0]);
        picked.insert(members.len() - 1, members[members.len() - 1]);
        while picked.len() < INODES_PER_CLASS.min(members.len()) {
            let i = rng.index(members.len());
            picked.insert(i, members[i]);
        }
        for ino in picked.values() {
            t.add(Area::Inode, Region::new(ino.loc.pos, 64, Some(ino.nid)));
        }
    }

    let xattr_base = u64::from(sb.xattr_blkaddr) << sb.blkszbits;
    let mut shared_ids = HashSet::new();
    for ino in inodes.values().filter(|i| !i.loc.in_metabox) {
        // Inline xattrs, and the shared ids they reference.
        if ino.xattr_isize > 0 {
            let start = ino.loc.pos + u64::from(ino.inode_isize);
            t.add(
                Area::XattrInline,
                Region::new(start, u64::from(ino.xattr_isize), Some(ino.nid)),
            );
            let count = u64::from(bytes[(start + 4) as usize]);
            for k in 0..count {
                shared_ids.insert(le32(bytes, start + 12 + 4 * k));
            }
        }
        // Chunk indexes (or 4-byte block maps) after inode + xattrs.
        if ino.layout == erofs::ondisk::LAYOUT_CHUNK_BASED {
            let format = ino.chunk_format();
            let unit = if format & erofs::ondisk::CHUNK_FORMAT_INDEXES != 0 {
                8
            } else {
                4
            };
            let chunkbits = u32::from(sb.blkszbits)
                + u32::from(format & erofs::ondisk::CHUNK_FORMAT_BLKBITS_MASK);
            let chunks = ino.size.div_ceil(1u64 << chunkbits);
            let start = ino
                .data_pos()
                .expect("data position")
                .pos
                .next_multiple_of(unit);
            t.add(
                Area::ChunkIndex,
                Region::new(start, chunks * unit, Some(ino.nid)),
            );
        }
        // Directory blocks, located through the block map.
        if ino.is_dir() && ino.size > 0 {
            let nblocks = ino.size.div_ceil(bs);
            let mut blocks = BTreeMap::new();
            blocks.insert(0, ());
            blocks.insert(nblocks - 1, ());
            while blocks.len() < (DIR_BLOCKS_PER_DIR as u64).min(nblocks) as usize {
                blocks.insert(rng.below(nblocks), ());
            }
            for &blk in blocks.keys() {
                let ext = img
                    .map(ino, blk * bs)
                    .unwrap_or_else(|e| panic!("{name}: map dir nid {}: {e}", ino.nid));
                let skip = blk * bs - ext.la;
                let pos = match ext.kind {
                    ExtentKind::Mapped { device: 0, pa } => pa + skip,
                    ExtentKind::Inline(p) if !p.in_metabox => p.pos + skip,
                    _ => continue,
                };
                let len = (ino.size - blk * bs).min(bs);
                let nameoff0 = u64::from(le16(bytes, pos + 8));
                t.add(
                    Area::Dirent,
                    Region {
                        start: pos,
                        len,
                        nid: Some(ino.nid),
                        dirents: nameoff0 / 12,
                        names_at: nameoff0,
                    },
                );
            }
        }
    }
    discover_compressed(&img, bytes, &inodes, &mut rng, &mut t);
    let mut shared_ids: Vec<u32> = shared_ids.into_iter().collect();
    shared_ids.sort_unstable();
    for id in shared_ids {
        let pos = xattr_base + 4 * u64::from(id);
        let name_len = u64::from(bytes[pos as usize]);
        let value_len = u64::from(le16(bytes, pos + 2));
        t.add(
            Area::XattrShared,
            Region::new(pos, (4 + name_len + value_len).min(64), None),
        );
    }
    // Long xattr prefixes stored plainly in the metadata.
    if sb.xattr_prefix_count > 0
        && (sb.has_compat(erofs::ondisk::COMPAT_PLAIN_XATTR_PFX)
            || !sb.has_incompat(erofs::ondisk::INCOMPAT_FRAGMENTS))
    {
        let start = u64::from(sb.xattr_prefix_start) * 4;
        let mut pos = start;
        for _ in 0..sb.xattr_prefix_count {
            pos = pos.next_multiple_of(4);
            pos += 2 + u64::from(le16(bytes, pos));
        }
        t.add(Area::XattrPrefix, Region::new(start, pos - start, None));
    }
    t
}

/// Compressed inodes kept per (layout, size class) for index and data
/// mutations.
const ZINODES_PER_CLASS: usize = 4;

/// Map headers, lcluster indexes and pclusters of a stratified sample of
/// compressed inodes.
fn discover_compressed(
    img: &Image,
    bytes: &[u8],
    inodes: &BTreeMap<u64, Inode>,
    rng: &mut Rng,
    t: &mut Targets,
) {
    let bits = u32::from(img.blkszbits());
    let mut classes: BTreeMap<(u8, u32), Vec<&Inode>> = BTreeMap::new();
    for ino in inodes
        .values()
        .filter(|i| i.is_compressed() && !i.loc.in_metabox && i.size > 0)
    {
        classes
            .entry((ino.layout, 64 - ino.size.leading_zeros()))
            .or_default()
            .push(ino);
    }
    let image_len = bytes.len() as u64;
    for members in classes.values() {
        let mut picked = BTreeMap::new();
        while picked.len() < ZINODES_PER_CLASS.min(members.len()) {
            let i = rng.index(members.len());
            picked.insert(i, members[i]);
        }
        for ino in picked.values() {
            let hdr = ino
                .data_pos()
                .expect("data position")
                .pos
                .next_multiple_of(8);
            let h = &bytes[hdr as usize..hdr as usize + 8];
            let len = if h[7] >> 7 != 0 {
                // Whole file in the packed inode: just the header.
                8
            } else {
                let lbits = bits + u32::from(h[7] & 15);
                let n = ino.size.div_ceil(1 << lbits.min(40));
                if ino.layout == erofs::ondisk::LAYOUT_COMPRESSED_FULL {
                    16 + 8 * n
                } else {
                    8 + 4 * n + 32
                }
            };
            let len = len.min(4096).min(image_len - hdr);
            t.add(Area::ZIndex, Region::new(hdr, len, Some(ino.nid)));
            let Ok(z) = ZMap::new(img, ino) else { continue };
            let mut seen = HashSet::new();
            for la in [0, ino.size / 2, ino.size - 1] {
                let Ok(e) = z.map(la) else { continue };
                if let ZKind::Encoded { pa, plen, .. } = e.kind {
                    if !seen.insert(pa) || pa + plen > image_len {
                        continue;
                    }
                    // Skip zero padding in front of the encoded bytes.
                    let body = &bytes[pa as usize..(pa + plen) as usize];
                    let lead = body.iter().position(|&b| b != 0).unwrap_or(0) as u64;
                    t.add(
                        Area::ZData,
                        Region::new(pa + lead, plen - lead, Some(ino.nid)),
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The work done on each (mutated) image.

/// What one run over an image found.
#[derive(Debug, Default)]
struct Report {
    opened: bool,
    paths: usize,
    calls: u64,
    /// Errors returned by library calls (walk problems included), with
    /// those the pristine image also shows left out.
    errors: u64,
    /// Of those, how many name a field, a structure or an nid.
    informative: u64,
    /// Of those, how many name the inode (nid).
    with_nid: u64,
    /// Texts of the first few uninformative errors.
    uninformative: Vec<String>,
    /// Every distinct error text (used for the pristine baselines).
    all_errors: HashSet<String>,
    /// Distinct error texts with digits blanked (kinds of errors seen).
    shapes: HashSet<String>,
    /// API contract breaks: test failures.
    violations: Vec<String>,
    /// Files longer than the read budget (sparse or corrupt sizes).
    budget_hits: u64,
    /// Pristine image: every listed name must look up to its listed nid.
    strict: bool,
    /// A hash of what was read (superblock, names, nids, attributes, xattrs,
    /// link targets, file data): tells whether a mutation had any visible
    /// effect.
    digest: u64,
}

/// Words that name a field or on-disk structure in an error text. An error
/// that contains one of these (or an nid) tells the user what is wrong.
const FIELD_WORDS: &[&str] = &[
    "nid",
    "superblock",
    "magic",
    "checksum",
    "block size",
    "dirblkbits",
    "sb_extslots",
    "feature",
    "metabox",
    "root",
    "inode",
    "i_format",
    "i_mode",
    "i_size",
    "i_xattr_icount",
    "data layout",
    "dirent",
    "directory",
    "xattr",
    "h_shared_count",
    "chunk",
    "device",
    "block map",
    "startblk",
    "inline data",
    "file data",
    // Compressed inodes.
    "compress",
    "index",
    "extent",
    "pcluster",
    "fragment",
    "packed",
    "algorithm",
    "lz4",
    "lzma",
    "deflate",
    "zstd",
];

fn is_informative(text: &str) -> bool {
    FIELD_WORDS.iter().any(|w| text.contains(w))
}

fn shape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    let mut last_digit = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (last_digit && c.is_ascii_hexdigit()) {
            if !last_digit {
                s.push('#');
            }
            last_digit = true;
        } else {
            last_digit = false;
            s.push(c);
        }
    }
    s
}

impl Report {
    fn error(&mut self, baseline: &HashSet<String>, e: &erofs::Error) {
        let text = e.to_string();
        if baseline.contains(&text) {
            return;
        }
        self.errors += 1;
        self.with_nid += u64::from(text.contains("nid "));
        if is_informative(&text) {
            self.informative += 1;
        } else if self.uninformative.len() < 8 {
            self.uninformative.push(text.clone());
        }
        if self.shapes.len() < 256 {
            self.shapes.insert(shape(&text));
        }
        if self.all_errors.len() < 256 {
            self.all_errors.insert(text);
        }
    }

    fn check<T>(&mut self, baseline: &HashSet<String>, r: erofs::Result<T>) -> Option<T> {
        self.calls += 1;
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(baseline, &e);
                None
            }
        }
    }

    fn mix(&mut self, bytes: &[u8]) {
        // FNV-1a, then the length (so concatenations differ).
        let mut h = self.digest ^ 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.digest = (h ^ bytes.len() as u64).wrapping_mul(0x0100_0000_01b3);
    }

    /// Hashes all of `data` (file contents: speed matters more than
    /// quality here).
    fn mix_data(&mut self, data: &[u8]) {
        let mut h = self.digest;
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        }
        self.digest = h;
        self.mix(words.remainder());
    }

    fn mix_u64(&mut self, v: u64) {
        self.mix(&v.to_le_bytes());
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 16 {
            self.violations.push(what);
        }
    }
}

/// Bytes read per file at most (from the start, then the last chunk). A
/// corrupt size or chunk format can make a file a legitimately huge sparse
/// one; reading all of it would test nothing but patience. The largest
/// fixture file is 40 MiB.
const READ_BUDGET: u64 = 48 << 20;
const READ_CHUNK: usize = 128 << 10;

fn read_file(img: &Image, ino: &Inode, buf: &mut [u8], base: &HashSet<String>, rep: &mut Report) {
    let read_at = |off: u64, buf: &mut [u8], rep: &mut Report| -> Option<usize> {
        let n = rep.check(base, img.read(ino, off, buf))?;
        let left = ino.size.saturating_sub(off);
        let want = (buf.len() as u64).min(left);
        if n as u64 != want {
            rep.violation(format!(
                "nid {}: read({off}, {}) returned {n}, expected {want} (size {})",
                ino.nid,
                buf.len(),
                ino.size
            ));
            return None;
        }
        Some(n)
    };
    let mut off = 0u64;
    while off < ino.size.min(READ_BUDGET) {
        match read_at(off, buf, rep) {
            Some(n) => {
                rep.mix_data(&buf[..n]);
                off += n as u64;
            }
            None => return,
        }
    }
    if ino.size > READ_BUDGET {
        rep.budget_hits += 1;
        let tail = ino.size - (READ_CHUNK as u64).min(ino.size);
        if let Some(n) = read_at(tail, buf, rep) {
            rep.mix_data(&buf[..n]);
        }
    }
    // Past the end: nothing, not an error.
    if rep.check(base, img.read(ino, ino.size, &mut buf[..1])) != Some(0) {
        rep.violation(format!("nid {}: read at EOF did not return 0", ino.nid));
    }
}

fn exercise_dir(img: &Image, dir: &Inode, base: &HashSet<String>, rep: &mut Report) {
    let mut list: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    let r = img.readdir(dir, 0, |e, next| {
        list.push((e.name.to_vec(), e.nid, next));
        true
    });
    let complete = rep.check(base, r).is_some();
    for (name, nid, next) in &list {
        rep.mix(name);
        rep.mix_u64(*nid);
        rep.mix_u64(*next);
    }
    // Resume from the offset reported for the middle entry.
    if list.len() >= 2 {
        let mid = list.len() / 2;
        let resume = list[mid - 1].2;
        let mut rest: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        let r = img.readdir(dir, resume, |e, next| {
            rest.push((e.name.to_vec(), e.nid, next));
            true
        });
        if rep.check(base, r).is_some() && complete && rest[..] != list[mid..] {
            rep.violation(format!(
                "nid {}: readdir resumed at {resume} gives {} entries, not the {} after entry {mid}",
                dir.nid,
                rest.len(),
                list.len() - mid
            ));
        }
        // Stopping early works too.
        let mut seen = 0;
        let r = img.readdir(dir, 0, |_, _| {
            seen += 1;
            false
        });
        rep.check(base, r);
    }
    // Every listed name looked up in this directory.
    for (name, nid, _) in &list {
        let found = rep.check(base, img.lookup(dir, name));
        if rep.strict && found.flatten().map(|(n, _)| n) != Some(*nid) {
            rep.violation(format!(
                "nid {}: lookup of {:?} gives {found:?}, listed as nid {nid}",
                dir.nid,
                String::from_utf8_lossy(name)
            ));
        }
    }
    // And names that are not there.
    rep.check(base, img.lookup(dir, b"\x01no such name"));
    rep.check(base, img.lookup(dir, &[b'z'; 256]));
    rep.check(base, img.lookup(dir, b""));
}

/// The in-process equivalent of `image check` + `image manifest`, plus
/// readdir/lookup of every directory.
fn exercise(
    bytes: Vec<u8>,
    devices: Vec<Arc<dyn Source>>,
    base: &HashSet<String>,
    rep: &mut Report,
) {
    let src: Arc<dyn Source> = Arc::new(MemorySource::from_vec(bytes));
    let Some(img) = rep.check(
        base,
        Image::open(
            src,
            ImageOptions {
                devices,
                ..ImageOptions::default()
            },
        ),
    ) else {
        return;
    };
    rep.opened = true;
    rep.mix(format!("{:?}", img.superblock()).as_bytes());
    rep.mix(img.superblock().feature_names().join(" ").as_bytes());
    for d in img.devices() {
        rep.mix(format!("{:?} {} {}", d.tag, d.blocks, d.uniaddr).as_bytes());
    }
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let r = erofs::walk(&img, |e| entries.push(e.clone()), |_, e| problems.push(e));
    rep.check(base, r);
    for p in &problems {
        rep.calls += 1;
        rep.error(base, p);
    }
    rep.paths = entries.len();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut done = HashSet::new();
    for e in &entries {
        let ino = &e.inode;
        if !done.insert(ino.nid) {
            continue;
        }
        rep.mix(&e.path);
        rep.mix(format!("{ino:?}").as_bytes());
        rep.check(base, img.inode(ino.nid));
        rep.mix_u64(ino.blocks_512(img.blkszbits()));
        match ino.kind {
            InodeKind::File => read_file(&img, ino, &mut buf, base, rep),
            InodeKind::Symlink => {
                if let Some(t) = rep.check(base, img.readlink(ino)) {
                    rep.mix(&t);
                    if t.len() > 4095 {
                        rep.violation(format!("nid {}: {}-byte symlink", ino.nid, t.len()));
                    }
                }
            }
            InodeKind::Dir => exercise_dir(&img, ino, base, rep),
            _ => {}
        }
        // Operations of the wrong kind fail cleanly.
        if ino.kind != InodeKind::Symlink && img.readlink(ino).is_ok() {
            rep.violation(format!(
                "nid {}: readlink of a non-symlink succeeded",
                ino.nid
            ));
        }
        if let Some(all) = rep.check(base, img.xattrs(ino)) {
            for x in &all {
                rep.mix(&[x.index]);
                rep.mix(&x.suffix);
                rep.mix(&x.value);
            }
        }
        if let Some(names) = rep.check(base, img.list_xattr_names(ino)) {
            for n in &names {
                if let Some(v) = rep.check(base, img.get_xattr(ino, n)) {
                    rep.mix(v.as_deref().unwrap_or(b"(absent)"));
                }
            }
        }
        rep.check(base, img.get_xattr(ino, b"user.\x01absent"));
    }
}

// ---------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone, Copy)]
enum MutKind {
    RandomByte,
    BitFlip,
    Zero,
    Ones,
    Run,
}

/// One applied mutation, with everything needed to reproduce it.
#[derive(Debug, Clone)]
struct Mutation {
    index: usize,
    area: Area,
    image: &'static str,
    nid: Option<u64>,
    offset: u64,
    old: Vec<u8>,
    new: Vec<u8>,
    kind: MutKind,
    checksum: &'static str,
    with_devices: bool,
}

impl std::fmt::Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |b: &[u8]| {
            b.iter().fold(String::new(), |mut s, x| {
                let _ = write!(s, "{x:02x}");
                s
            })
        };
        write!(
            f,
            "seed {SEED:#x} {:?} mutation #{} on {}{} at byte {}: {} -> {} ({:?}; superblock checksum {}; {})",
            self.area,
            self.index,
            self.image,
            self.nid.map(|n| format!(" (nid {n})")).unwrap_or_default(),
            self.offset,
            hex(&self.old),
            hex(&self.new),
            self.kind,
            self.checksum,
            if self.with_devices { "extra device given" } else { "no extra device" },
        )
    }
}

/// Picks the byte to mutate inside a region, aiming at the fields that
/// matter most for the area.
fn pick_offset(area: Area, r: &Region, rng: &mut Rng) -> u64 {
    let uniform = |rng: &mut Rng| r.start + rng.below(r.len);
    match area {
        Area::Dirent if r.dirents > 0 => {
            let entry = r.start + 12 * rng.below(r.dirents);
            match rng.below(10) {
                // nid: mostly its low bytes.
                0..=3 => {
                    entry
                        + if rng.chance(2, 3) {
                            rng.below(2)
                        } else {
                            rng.below(8)
                        }
                }
                // nameoff.
                4..=6 => entry + 8 + rng.below(2),
                // file type.
                7 => entry + 10,
                // the names.
                _ if r.len > r.names_at => r.start + r.names_at + rng.below(r.len - r.names_at),
                _ => uniform(rng),
            }
        }
        Area::DeviceTable if rng.chance(1, 2) => {
            // blocks, uniaddr and their high halves.
            let slot = r.start + 128 * rng.below(r.len / 128);
            slot + 64 + rng.below(14)
        }
        // The map header (advise, algorithms, cluster bits, tail sizes).
        Area::ZIndex if rng.chance(1, 3) => r.start + rng.below(8.min(r.len)),
        Area::ChunkIndex if rng.chance(1, 2) => {
            // The block address (low bytes) or the device id of an index.
            let unit = if r.len.is_multiple_of(8) { 8 } else { 4 };
            let rec = r.start + unit * rng.below(r.len / unit);
            rec + rng.below(unit)
        }
        _ => uniform(rng),
    }
}

/// The kernel's superblock checksum: crc32c seeded with 0x5045B54A, without
/// the final inversion, over the superblock's block after the checksum
/// field.
fn superblock_checksum(img: &[u8]) -> Option<u32> {
    let bits = img[1024 + 12];
    if !(9..=16).contains(&bits) {
        return None;
    }
    let mut len = 1usize << bits;
    if len > 1024 {
        len -= 1024;
    }
    let data = img.get(1032..1032 + len - 8)?;
    Some(!crc32c::crc32c_append(!0x5045_B54A, data))
}

fn fix_checksum(img: &mut [u8]) -> bool {
    if img[1024 + 8] & 1 == 0 {
        return false;
    }
    match superblock_checksum(img) {
        Some(c) => {
            img[1028..1032].copy_from_slice(&c.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Mutates `img` at a position of `area` chosen by `rng`.
fn mutate(fx: &Fixture, area: Area, index: usize, rng: &mut Rng, img: &mut [u8]) -> Mutation {
    let regions = fx.targets.of(area);
    let r = &regions[rng.index(regions.len())];
    let offset = pick_offset(area, r, rng);
    let kind = match rng.below(5) {
        0 => MutKind::RandomByte,
        1 => MutKind::BitFlip,
        2 => MutKind::Zero,
        3 => MutKind::Ones,
        _ => MutKind::Run,
    };
    let at = offset as usize;
    let len = match kind {
        MutKind::Run => 2 + rng.index(7),
        _ => 1,
    }
    .min(img.len() - at);
    let old = img[at..at + len].to_vec();
    let fill = rng.below(3);
    for (i, b) in img[at..at + len].iter_mut().enumerate() {
        *b = match kind {
            MutKind::RandomByte => rng.byte(),
            MutKind::BitFlip => *b ^ (1 << rng.below(8)),
            MutKind::Zero => 0,
            MutKind::Ones => 0xff,
            MutKind::Run => match fill {
                0 => rng.byte(),
                1 => 0xff,
                _ => (i as u8).wrapping_mul(0x31).wrapping_add(0x80),
            },
        };
    }
    // Every mutation changes something.
    if img[at..at + len] == old[..] {
        img[at] ^= 1 << rng.below(8);
    }
    let new = img[at..at + len].to_vec();
    // Keep the superblock checksum valid so the mutation reaches the
    // structure it targets; superblock mutations keep a stale checksum
    // one time in four (checksum checking is exercised too), and ones that
    // hit the checksum field itself keep it.
    let touches_csum = at < 1032 && at + len > 1028;
    let checksum = if fx.bytes[1024 + 8] & 1 == 0 && img[1024 + 8] & 1 == 0 {
        "absent"
    } else if touches_csum || (area == Area::Superblock && rng.chance(1, 4)) {
        "stale"
    } else if fix_checksum(img) {
        "recomputed"
    } else {
        "not computable"
    };
    Mutation {
        index,
        area,
        image: fx.name,
        nid: r.nid,
        offset,
        old,
        new,
        kind,
        checksum,
        with_devices: fx.blob.is_some() && !rng.chance(1, 8),
    }
}

// ---------------------------------------------------------------------------
// Isolation: panics, hangs, allocations.

/// How long one mutation's work may take (it takes well under a second).
const MUTATION_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// Message and location of the last panic on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records the location of panics on worker threads (the payload alone
/// has no location), then runs the default hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let loc = info
                .location()
                .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let msg = panic_text(info.payload());
            let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(format!("{msg}{loc}")));
            prev(info);
        }));
    });
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// How one isolated run ended.
enum Outcome {
    Done(Report, usize),
    Panicked(String),
    TimedOut,
}

/// Runs `work` on a fresh thread under `catch_unwind`, waiting at most
/// `timeout`. Returns the thread's largest single allocation too.
fn isolated<F>(label: &str, timeout: Duration, work: F) -> Outcome
where
    F: FnOnce() -> Report + Send + 'static,
{
    install_panic_hook();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(label.chars().take(60).collect())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let peak = thread_peak();
            let msg = match r {
                Ok(rep) => Ok(rep),
                Err(payload) => Err(LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| panic_text(payload.as_ref()))),
            };
            let _ = tx.send((msg, peak));
        })
        .expect("spawning a worker thread");
    match rx.recv_timeout(timeout) {
        Ok((Ok(rep), peak)) => Outcome::Done(rep, peak),
        Ok((Err(msg), _)) => Outcome::Panicked(msg),
        Err(mpsc::RecvTimeoutError::Timeout) => Outcome::TimedOut,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Outcome::Panicked("worker thread died without reporting".into())
        }
    }
}

// ---------------------------------------------------------------------------
// Campaigns.

/// Mutations per area and run (the project requires >= 1000 in total).
const PLAN: &[(Area, usize)] = &[
    (Area::Superblock, 200),
    (Area::Inode, 300),
    (Area::Dirent, 250),
    (Area::XattrInline, 120),
    (Area::XattrShared, 60),
    (Area::XattrPrefix, 30),
    (Area::ChunkIndex, 120),
    (Area::DeviceTable, 60),
    (Area::ZIndex, 160),
    (Area::ZData, 120),
];

const fn plan_total() -> usize {
    let mut i = 0;
    let mut n = 0;
    while i < PLAN.len() {
        n += PLAN[i].1;
        i += 1;
    }
    n
}

const _: () = assert!(plan_total() >= 1000, "at least 1000 mutations per run");

/// Mutations that must change something visible (an error, or what is
/// read), at least: guards against regions that miss the live structures.
const MIN_EFFECTIVE_PERCENT: usize = 50;

/// Errors that must name a field, a structure or an nid, at least.
const MIN_INFORMATIVE_PERCENT: u64 = 95;

fn quota(area: Area) -> usize {
    PLAN.iter()
        .find(|(a, _)| *a == area)
        .map(|(_, n)| *n)
        .expect("area in PLAN")
}

/// Summary of one campaign.
#[derive(Debug, Default)]
struct Stats {
    mutations: usize,
    per_image: BTreeMap<&'static str, usize>,
    opened: usize,
    errors: u64,
    informative: u64,
    with_nid: u64,
    calls: u64,
    budget_hits: u64,
    peak_alloc: usize,
    shapes: HashSet<String>,
    uninformative: Vec<String>,
    /// Mutations with a visible effect: open failed, an error, or
    /// something read differently.
    effective: usize,
}

fn run_campaign(area: Area) -> Stats {
    let started = Instant::now();
    let trace = std::env::var_os("EROFS_MUTATION_TRACE").is_some();
    let fxs: Vec<&Fixture> = fixtures()
        .iter()
        .filter(|f| !f.targets.of(area).is_empty())
        .collect();
    assert!(!fxs.is_empty(), "no fixture has {area:?} regions");
    let mut rng = Rng::new(SEED ^ hash_name(&format!("{area:?}")));
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for i in 0..quota(area) {
        let fx = fxs[i % fxs.len()];
        let mut img = fx.bytes.to_vec();
        let m = mutate(fx, area, i, &mut rng, &mut img);
        if trace {
            eprintln!("running {m}");
        }
        let devices = if m.with_devices {
            fx.devices()
        } else {
            Vec::new()
        };
        let base = fx.baseline_errors.clone();
        let outcome = isolated(
            &format!("mutation-{area:?}-{i}"),
            MUTATION_TIMEOUT,
            move || {
                let mut rep = Report::default();
                exercise(img, devices, &base, &mut rep);
                rep
            },
        );
        stats.mutations += 1;
        *stats.per_image.entry(fx.name).or_default() += 1;
        let (rep, peak) = match outcome {
            Outcome::Done(rep, peak) => (rep, peak),
            Outcome::Panicked(msg) => {
                failures.push(format!("PANIC: {m}: {msg}"));
                continue;
            }
            Outcome::TimedOut => {
                // The worker is stuck: stop here rather than pile up more.
                failures.push(format!("HANG: {m}: no result within {MUTATION_TIMEOUT:?}"));
                break;
            }
        };
        stats.peak_alloc = stats.peak_alloc.max(peak);
        if peak >= ALLOC_CAP {
            failures.push(format!(
                "HUGE ALLOCATION: {m}: a single request of {peak} bytes (cap {ALLOC_CAP})"
            ));
        }
        for v in &rep.violations {
            failures.push(format!("CONTRACT: {m}: {v}"));
        }
        stats.opened += usize::from(rep.opened);
        stats.effective +=
            usize::from(!rep.opened || rep.errors > 0 || rep.digest != fx.baseline_digest);
        stats.errors += rep.errors;
        stats.informative += rep.informative;
        stats.with_nid += rep.with_nid;
        stats.calls += rep.calls;
        stats.budget_hits += rep.budget_hits;
        stats.shapes.extend(rep.shapes);
        for u in rep.uninformative {
            if stats.uninformative.len() < 20 {
                stats.uninformative.push(format!("{m}: {u}"));
            }
        }
    }
    eprintln!(
        "{area:?}: {} mutations {:?}; {} opened, {} with a visible effect; {} calls, \
         {} errors ({} informative, {} with an nid); {} files over the read budget; \
         peak single allocation {} bytes; {:.1?}",
        stats.mutations,
        stats.per_image,
        stats.opened,
        stats.effective,
        stats.calls,
        stats.errors,
        stats.informative,
        stats.with_nid,
        stats.budget_hits,
        stats.peak_alloc,
        started.elapsed()
    );
    for u in &stats.uninformative {
        eprintln!("  {area:?} uninformative error: {u}");
    }
    if std::env::var_os("EROFS_MUTATION_SHAPES").is_some() {
        let mut shapes: Vec<_> = stats.shapes.iter().collect();
        shapes.sort();
        for s in shapes {
            eprintln!("  {area:?} error shape: {s}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) in the {area:?} campaign:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        stats.mutations,
        quota(area),
        "{area:?}: not every mutation ran"
    );
    assert!(
        stats.effective * 100 >= stats.mutations * MIN_EFFECTIVE_PERCENT,
        "{area:?}: only {} of {} mutations had a visible effect",
        stats.effective,
        stats.mutations
    );
    let pct = (stats.informative * 100)
        .checked_div(stats.errors)
        .unwrap_or(100);
    assert!(
        pct >= MIN_INFORMATIVE_PERCENT,
        "{area:?}: only {pct}% of {} errors name a field, structure or nid; e.g.:\n{}",
        stats.errors,
        stats.uninformative.join("\n")
    );
    stats
}

#[test]
fn test_mutation_plan_has_at_least_1000_mutations() {
    assert!(plan_total() >= 1000, "plan total {}", plan_total());
    // Every area of the plan has somewhere to mutate.
    for (area, n) in PLAN {
        assert!(*n > 0);
        let with = fixtures()
            .iter()
            .filter(|f| !f.targets.of(*area).is_empty())
            .count();
        assert!(with > 0, "no fixture has {area:?} regions");
    }
}

#[test]
fn test_mutation_superblock_never_panics_hangs_or_overallocates() {
    let s = run_campaign(Area::Superblock);
    // Some mutations must leave the image openable, or this tests nothing
    // past the superblock parser.
    assert!(
        s.opened > s.mutations / 4,
        "only {} of {} opened",
        s.opened,
        s.mutations
    );
}

#[test]
fn test_mutation_inodes_never_panic_hang_or_overallocate() {
    let s = run_campaign(Area::Inode);
    assert_eq!(s.opened, s.mutations, "inode mutations must not stop open");
    assert!(s.errors > 0, "no inode mutation was noticed");
}

#[test]
fn test_mutation_dirents_never_panic_hang_or_overallocate() {
    let s = run_campaign(Area::Dirent);
    assert_eq!(s.opened, s.mutations);
    assert!(s.errors > 0, "no dirent mutation was noticed");
}

#[test]
fn test_mutation_xattrs_never_panic_hang_or_overallocate() {
    let mut errors = 0;
    for area in [Area::XattrInline, Area::XattrShared, Area::XattrPrefix] {
        errors += run_campaign(area).errors;
    }
    assert!(errors > 0, "no xattr mutation was noticed");
}

#[test]
fn test_mutation_chunk_indexes_never_panic_hang_or_overallocate() {
    let s = run_campaign(Area::ChunkIndex);
    assert!(s.errors > 0, "no chunk index mutation was noticed");
}

#[test]
fn test_mutation_device_table_never_panics_hangs_or_overallocates() {
    run_campaign(Area::DeviceTable);
}

#[test]
fn test_mutation_compressed_indexes_never_panic_hang_or_overallocate() {
    let s = run_campaign(Area::ZIndex);
    assert!(s.errors > 0, "no compressed index mutation was noticed");
}

#[test]
fn test_mutation_compressed_data_never_panics_hangs_or_overallocates() {
    let s = run_campaign(Area::ZData);
    assert!(s.errors > 0, "no compressed data mutation was noticed");
}

/// The harness detects what it claims to: a panic (with its message and
/// location), a hang, and a huge single allocation.
#[test]
fn test_harness_detects_panic_hang_and_huge_allocation() {
    match isolated("selftest-panic", MUTATION_TIMEOUT, || {
        let n = std::hint::black_box(41) + 1;
        panic!("deliberate panic {n}")
    }) {
        Outcome::Panicked(msg) => assert!(
            msg.contains("deliberate panic 42") && msg.contains("robustness.rs"),
            "{msg}"
        ),
        _ => panic!("the panic was not caught"),
    }
    // A worker blocked on a channel nobody sends to; released afterwards.
    let (release, blocked) = mpsc::channel::<()>();
    let outcome = isolated("selftest-hang", Duration::from_millis(200), move || {
        let _ = blocked.recv();
        Report::default()
    });
    assert!(
        matches!(outcome, Outcome::TimedOut),
        "the hang was not detected"
    );
    drop(release);
    match isolated("selftest-alloc", MUTATION_TIMEOUT, || {
        HUGE_EXPECTED.with(|h| h.set(true));
        let v: Vec<u8> = Vec::with_capacity(ALLOC_CAP + 1);
        std::hint::black_box(&v);
        Report::default()
    }) {
        Outcome::Done(_, peak) => assert!(peak > ALLOC_CAP, "peak {peak} not recorded"),
        _ => panic!("the allocating worker failed"),
    }
    assert!(PROCESS_PEAK.load(Ordering::Relaxed) > ALLOC_CAP);
}

/// The pristine images: the harness itself finds nothing wrong, so the
/// errors the campaigns see come from the mutations.
#[test]
fn test_pristine_fixtures_exercise_without_errors() {
    for fx in fixtures() {
        let mut rep = Report {
            strict: true,
            ..Report::default()
        };
        exercise(fx.bytes.to_vec(), fx.devices(), &HashSet::new(), &mut rep);
        assert!(rep.opened && rep.paths > 2, "{}: {rep:?}", fx.name);
        assert!(
            rep.violations.is_empty(),
            "{}: {:?}",
            fx.name,
            rep.violations
        );
        // Compressed data may not be decoded yet; nothing else may fail.
        let other: Vec<_> = rep
            .all_errors
            .iter()
            .filter(|e| !e.contains("compressed data layout"))
            .collect();
        assert!(other.is_empty(), "{}: unexpected errors {other:?}", fx.name);
    }
}

// ---------------------------------------------------------------------------
// Crafted corruptions.

/// Opens a pristine or crafted image in memory.
fn open_mem(bytes: Vec<u8>, devices: Vec<Arc<dyn Source>>) -> Image {
    let src: Arc<dyn Source> = Arc::new(MemorySource::from_vec(bytes));
    Image::open(
        src,
        ImageOptions {
            devices,
            ..ImageOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("image does not open: {e}"))
}

/// Looks up an absolute path with the library (no symlinks followed).
fn resolve(img: &Image, path: &str) -> Inode {
    let mut cur = img.inode(img.root_nid()).expect("root inode");
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let (nid, _) = img
            .lookup(&cur, comp.as_bytes())
            .unwrap_or_else(|e| panic!("lookup {comp} in {path}: {e}"))
            .unwrap_or_else(|| panic!("{path}: no {comp}"));
        cur = img.inode(nid).expect("inode");
    }
    cur
}

/// The largest regular file directly in directory `path`.
fn largest_file(img: &Image, path: &str) -> Inode {
    let dir = resolve(img, path);
    let mut nids = Vec::new();
    img.readdir(&dir, 0, |e, _| {
        if e.file_type == erofs::FileType::File {
            nids.push(e.nid);
        }
        true
    })
    .expect("readdir");
    nids.into_iter()
        .map(|n| img.inode(n).expect("inode"))
        .max_by_key(|i| i.size)
        .unwrap_or_else(|| panic!("no regular file in {path}"))
}

/// Byte position of the dirent named `name` in directory `dir` (found in
/// the pristine bytes through the block map).
fn dirent_pos(img: &Image, bytes: &[u8], dir: &Inode, name: &[u8]) -> u64 {
    let bs = img.superblock().block_size();
    for blk in 0..dir.size.div_ceil(bs) {
        let ext = img.map(dir, blk * bs).expect("map directory block");
        let skip = blk * bs - ext.la;
        let pos = match ext.kind {
            ExtentKind::Mapped { device: 0, pa } => pa + skip,
            ExtentKind::Inline(p) => p.pos + skip,
            other => panic!("directory block in {other:?}"),
        };
        let len = (dir.size - blk * bs).min(bs);
        let block = &bytes[pos as usize..(pos + len) as usize];
        let count = u64::from(le16(block, 8)) / 12;
        for i in 0..count {
            let start = u64::from(le16(block, 12 * i + 8));
            let end = if i + 1 < count {
                u64::from(le16(block, 12 * (i + 1) + 8))
            } else {
                let tail = &block[start as usize..];
                start + tail.iter().position(|&b| b == 0).unwrap_or(tail.len()) as u64
            };
            if &block[start as usize..end as usize] == name {
                return pos + 12 * i;
            }
        }
    }
    panic!(
        "no dirent {:?} in nid {}",
        String::from_utf8_lossy(name),
        dir.nid
    );
}

/// Runs the whole exercise on a crafted image, isolated like a mutation,
/// and fails on a panic, hang, huge allocation or contract break.
#[track_caller]
fn assert_exercise_survives(what: &str, bytes: Vec<u8>, devices: Vec<Arc<dyn Source>>) -> Report {
    let outcome = isolated("crafted", MUTATION_TIMEOUT, move || {
        let mut rep = Report::default();
        exercise(bytes, devices, &HashSet::new(), &mut rep);
        rep
    });
    match outcome {
        Outcome::Done(rep, peak) => {
            assert!(
                peak < ALLOC_CAP,
                "{what}: single allocation of {peak} bytes"
            );
            assert!(rep.violations.is_empty(), "{what}: {:?}", rep.violations);
            rep
        }
        Outcome::Panicked(msg) => panic!("{what}: panicked: {msg}"),
        Outcome::TimedOut => panic!("{what}: no result within {MUTATION_TIMEOUT:?}"),
    }
}

/// Walks a crafted image on a worker thread; returns the problems found.
fn walk_problems(what: &str, bytes: Vec<u8>) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let img = open_mem(bytes, Vec::new());
        let mut problems = Vec::new();
        let mut paths = 0usize;
        let r = erofs::walk(
            &img,
            |_| paths += 1,
            |p, e| problems.push(format!("{}: {e}", String::from_utf8_lossy(p))),
        );
        let _ = tx.send((r.map_err(|e| e.to_string()), problems, paths));
    });
    let (r, problems, paths) = rx
        .recv_timeout(MUTATION_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: walk did not finish: {e}"));
    r.unwrap_or_else(|e| panic!("{what}: walk failed: {e}"));
    assert!(paths > 1, "{what}: walk visited {paths} paths");
    problems
}

#[test]
fn test_walk_directory_cycle_terminates_and_reports_it() {
    for name in ["edge_plain-b4096", "edge_plain-b512", "edge_lz4-dotomitted"] {
        let fx = fixture(name);
        let img = open_mem(fx.bytes.to_vec(), fx.devices());
        let root = img.root_nid();
        // /deep/d01/d02/...: 40 nested directories.
        let deep = resolve(&img, "/deep");
        let mut sub = None;
        img.readdir(&deep, 0, |e, _| {
            if e.name != b"." && e.name != b".." {
                sub = Some((e.name.to_vec(), e.nid));
            }
            sub.is_none()
        })
        .expect("readdir /deep");
        let (sub_name, sub_nid) = sub.expect("/deep has a subdirectory");
        assert!(img.inode(sub_nid).unwrap().is_dir());
        let sub_path = format!("/deep/{}", String::from_utf8_lossy(&sub_name));
        let sub_ino = resolve(&img, &sub_path);
        let mut grand = None;
        img.readdir(&sub_ino, 0, |e, _| {
            if e.name != b"." && e.name != b".." {
                grand = Some(e.name.to_vec());
            }
            grand.is_none()
        })
        .expect("readdir subdirectory");
        let grand_name = grand.expect("nested subdirectory");
        let root_ino = img.inode(root).unwrap();
        // (case, directory holding the dirent, dirent name, new nid)
        let cases: Vec<(&str, &Inode, &[u8], u64)> = vec![
            ("child points at the root", &sub_ino, &grand_name, root),
            (
                "child points at its parent",
                &sub_ino,
                &grand_name,
                sub_ino.nid,
            ),
            (
                "child points at its grandparent",
                &sub_ino,
                &grand_name,
                deep.nid,
            ),
            ("root entry points at the root", &root_ino, b"deep", root),
            ("directory contains itself", &deep, &sub_name, deep.nid),
        ];
        for (case, dir, entry, target) in cases {
            let what = format!("{name}: {case}");
            let mut bytes = fx.bytes.to_vec();
            let pos = dirent_pos(&img, &bytes, dir, entry) as usize;
            bytes[pos..pos + 8].copy_from_slice(&target.to_le_bytes());
            fix_checksum(&mut bytes);
            let problems = walk_problems(&what, bytes.clone());
            let want = format!("(nid {target}): directory: directory reached twice");
            assert!(
                problems.iter().any(|p| p.contains(&want)),
                "{what}: no cycle reported; problems: {problems:?}"
            );
            assert_eq!(problems.len(), 1, "{what}: {problems:?}");
            assert_exercise_survives(&what, bytes, Vec::new());
        }
    }
}

#[test]
fn test_chunk_index_pointing_at_itself_terminates() {
    for name in ["edge_chunk4k-b512-blobdev", "big_chunk64k-blobdev"] {
        let fx = fixture(name);
        let img = open_mem(fx.bytes.to_vec(), fx.devices());
        let bits = img.blkszbits();
        let regions = fx.targets.of(Area::ChunkIndex);
        // The chunk-based inode with the most chunks.
        let region = regions.iter().max_by_key(|r| r.len).expect("chunk indexes");
        let nid = region.nid.expect("chunk index nid");
        let ino = img.inode(nid).unwrap();
        let iu_pos = (ino.loc.pos + 16) as usize;
        let index_blk = region.start >> bits;
        let inode_blk = ino.loc.pos >> bits;
        // (case, record unit, block every record points at)
        for (case, unit, blk) in [
            ("8-byte indexes at the index block", 8u64, index_blk),
            ("8-byte indexes at the inode's block", 8, inode_blk),
            ("4-byte block map at the index block", 4, index_blk),
        ] {
            let what = format!("{name} nid {nid}: {case}");
            let mut bytes = fx.bytes.to_vec();
            let mut format = le16(&bytes, iu_pos as u64);
            if unit == 4 {
                format &= !erofs::ondisk::CHUNK_FORMAT_INDEXES;
            }
            bytes[iu_pos..iu_pos + 2].copy_from_slice(&format.to_le_bytes());
            let start = ino.data_pos().unwrap().pos.next_multiple_of(unit);
            let chunkbits =
                u32::from(bits) + u32::from(format & erofs::ondisk::CHUNK_FORMAT_BLKBITS_MASK);
            let chunks = ino.size.div_ceil(1 << chunkbits);
            for c in 0..chunks {
                let at = (start + c * unit) as usize;
                if unit == 8 {
                    // startblk_hi, device_id 0, startblk_lo
                    bytes[at..at + 4].fill(0);
                    bytes[at + 4..at + 8].copy_from_slice(&(blk as u32).to_le_bytes());
                } else {
                    bytes[at..at + 4].copy_from_slice(&(blk as u32).to_le_bytes());
                }
            }
            fix_checksum(&mut bytes);
            // Every chunk reads the (mutated) metadata at `blk`, or fails
            // cleanly where that runs past the end of the image.
            let crafted = bytes.clone();
            let size = ino.size;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let img = open_mem(crafted.clone(), Vec::new());
                let ino = img.inode(nid).unwrap();
                let mut out = vec![0u8; size.min(READ_BUDGET) as usize];
                let r = img.read(&ino, 0, &mut out);
                let _ = tx.send((r.map_err(|e| e.to_string()), out));
            });
            let (r, out) = rx
                .recv_timeout(MUTATION_TIMEOUT)
                .unwrap_or_else(|e| panic!("{what}: read did not finish: {e}"));
            let pa = (blk << bits) as usize;
            let chunk = 1usize << chunkbits;
            match r {
                Ok(n) => {
                    assert_eq!(n, out.len(), "{what}");
                    for (c, got) in out.chunks(chunk).enumerate() {
                        assert!(
                            got == &bytes[pa..pa + got.len()],
                            "{what}: chunk {c} is not the bytes at block {blk}"
                        );
                    }
                }
                Err(e) => assert!(
                    pa + chunk > bytes.len() && e.contains("truncated"),
                    "{what}: {e}"
                ),
            }
            assert_exercise_survives(&what, bytes, fx.devices());
        }
    }
}

/// Overwrites the bytes at `pos` with `value`.
fn put(bytes: &mut [u8], pos: u64, value: &[u8]) {
    bytes[pos as usize..pos as usize + value.len()].copy_from_slice(value);
}

/// Fields set to extreme values: (what, image, [(offset, new bytes)]).
type FieldCase = (String, &'static str, Vec<(u64, Vec<u8>)>);

/// Extreme values in the size, count and address fields, where a missing
/// bound would show as a huge allocation, a hang or a panic.
fn boundary_cases() -> Vec<FieldCase> {
    let mut cases: Vec<FieldCase> = Vec::new();
    let sb = |what: &str, name: &'static str, off: u64, v: &[u8]| -> FieldCase {
        (
            format!("superblock {what}"),
            name,
            vec![(1024 + off, v.to_vec())],
        )
    };
    for name in ["edge_plain-b4096", "edge_chunk4k-b512-blobdev"] {
        cases.push(sb("sb_extslots 255", name, 13, &[255]));
        cases.push(sb("root nid 0xffff", name, 14, &[0xff, 0xff]));
        cases.push(sb("meta_blkaddr max", name, 40, &u32::MAX.to_le_bytes()));
        cases.push(sb("xattr_blkaddr max", name, 44, &u32::MAX.to_le_bytes()));
        cases.push(sb(
            "all incompat bits known",
            name,
            80,
            &0x1ffu32.to_le_bytes(),
        ));
        cases.push(sb("extra_devices max", name, 86, &u16::MAX.to_le_bytes()));
        cases.push(sb("devt_slotoff max", name, 88, &u16::MAX.to_le_bytes()));
        cases.push(sb("xattr_prefix_count 255", name, 91, &[255]));
        cases.push(sb(
            "xattr_prefix_start max",
            name,
            92,
            &u32::MAX.to_le_bytes(),
        ));
        cases.push(sb("packed_nid max", name, 96, &u64::MAX.to_le_bytes()));
        for bits in 9..=16u8 {
            cases.push(sb(&format!("blkszbits {bits}"), name, 12, &[bits]));
        }
        cases.push((
            "superblock long prefixes at the end of the image".into(),
            name,
            vec![
                (1024 + 80, 0x4fu32.to_le_bytes().to_vec()),
                (1024 + 91, vec![255]),
                (1024 + 92, (0x1000_0000u32).to_le_bytes().to_vec()),
            ],
        ));
    }
    // 48-bit layout: 64-bit root nid and block count.
    let name = "edge_plain-48bit";
    cases.push(sb("rootnid_8b max", name, 104, &u64::MAX.to_le_bytes()));
    cases.push(sb(
        "rootnid_8b metabox bit",
        name,
        104,
        &((1u64 << 63) | 42).to_le_bytes(),
    ));
    cases.push(sb(
        "blocks high bits max",
        name,
        14,
        &u16::MAX.to_le_bytes(),
    ));

    for name in [
        "edge_plain-b4096",
        "edge_plain-48bit",
        "edge_chunk4k-b512-blobdev",
    ] {
        let fx = fixture(name);
        let img = open_mem(fx.bytes.to_vec(), fx.devices());
        let root = img.inode(img.root_nid()).unwrap();
        let bigdir = resolve(&img, "/bigdir");
        let sparse = resolve(&img, "/sparse/lead_hole");
        let file = largest_file(&img, "/files");
        let link = {
            let dir = resolve(&img, "/symlinks");
            let mut nid = None;
            img.readdir(&dir, 0, |e, _| {
                if e.file_type == erofs::FileType::Symlink {
                    nid = Some(e.nid);
                }
                nid.is_none()
            })
            .unwrap();
            img.inode(nid.expect("a symlink")).unwrap()
        };
        for ino in [&root, &bigdir, &sparse, &file, &link] {
            let mut field = |what: &str, off: u64, v: Vec<u8>| {
                cases.push((
                    format!("nid {} {what}", ino.nid),
                    name,
                    vec![(ino.loc.pos + off, v)],
                ));
            };
            let max_size = if ino.extended {
                i64::MAX.to_le_bytes().to_vec()
            } else {
                u32::MAX.to_le_bytes().to_vec()
            };
            field("i_size max", 8, max_size.clone());
            if ino.extended {
                field("i_size negative", 8, u64::MAX.to_le_bytes().to_vec());
            }
            field("i_xattr_icount max", 2, u16::MAX.to_le_bytes().to_vec());
            field("i_xattr_icount 1", 2, 1u16.to_le_bytes().to_vec());
            field("i_xattr_icount 4", 2, 4u16.to_le_bytes().to_vec());
            field("i_u max", 16, u32::MAX.to_le_bytes().to_vec());
            field("i_u 0xfffffffe", 16, 0xffff_fffeu32.to_le_bytes().to_vec());
            field("i_nb max", 6, u16::MAX.to_le_bytes().to_vec());
            // Every data layout, the extended bit kept.
            let ext = u8::from(ino.extended);
            for layout in 0..8u8 {
                field(
                    &format!("data layout {layout}"),
                    0,
                    vec![(layout << 1) | ext],
                );
            }
            // A flat plain file with a null start block and the largest
            // size: a huge sparse file (read within the budget).
            cases.push((
                format!("nid {} huge sparse flat file", ino.nid),
                name,
                vec![
                    (ino.loc.pos, vec![ext]),
                    (ino.loc.pos + 4, (0o100644u16).to_le_bytes().to_vec()),
                    (ino.loc.pos + 8, max_size),
                    (ino.loc.pos + 16, u32::MAX.to_le_bytes().to_vec()),
                ],
            ));
        }
        if root.xattr_isize > 0 {
            let body = root.loc.pos + u64::from(root.inode_isize);
            cases.push((
                format!("nid {} h_shared_count 255", root.nid),
                name,
                vec![(body + 4, vec![255])],
            ));
            cases.push((
                format!("nid {} first shared xattr id max", root.nid),
                name,
                vec![(body + 12, u32::MAX.to_le_bytes().to_vec())],
            ));
        }
        // Directory block fields.
        let first = dirent_pos(&img, &fx.bytes, &bigdir, b".");
        for (what, off, v) in [
            (
                "dirent[0].nameoff max",
                8u64,
                u16::MAX.to_le_bytes().to_vec(),
            ),
            ("dirent[0].nameoff 12", 8, 12u16.to_le_bytes().to_vec()),
            ("dirent[0].nameoff 0", 8, vec![0, 0]),
            ("dirent[1].nameoff max", 20, u16::MAX.to_le_bytes().to_vec()),
            ("dirent[1].nameoff 0", 20, vec![0, 0]),
            ("dirent[0].nid max", 0, u64::MAX.to_le_bytes().to_vec()),
            ("dirent[2].nid max", 24, u64::MAX.to_le_bytes().to_vec()),
            (
                "dirent[2].nid metabox bit",
                24,
                (1u64 << 63).to_le_bytes().to_vec(),
            ),
            ("dirent[2].nid 0", 24, vec![0; 8]),
            ("dirent[2].file_type 0xff", 34, vec![0xff]),
        ] {
            cases.push((format!("/bigdir {what}"), name, vec![(first + off, v)]));
        }
    }
    // Chunk format: the largest chunk size, 48-bit addresses, block maps.
    let fx = fixture("edge_chunk4k-b512-blobdev");
    let img = open_mem(fx.bytes.to_vec(), fx.devices());
    for r in fx.targets.of(Area::ChunkIndex).iter().take(3) {
        let nid = r.nid.unwrap();
        let ino = img.inode(nid).unwrap();
        let fmt = ino.chunk_format();
        for (what, v) in [
            ("chunk blkbits 31", fmt | 0x1f),
            ("chunk 48-bit", fmt | erofs::ondisk::CHUNK_FORMAT_48BIT),
            (
                "chunk indexes off",
                fmt & !erofs::ondisk::CHUNK_FORMAT_INDEXES,
            ),
        ] {
            cases.push((
                format!("nid {nid} {what}"),
                fx.name,
                vec![(ino.loc.pos + 16, v.to_le_bytes().to_vec())],
            ));
        }
        cases.push((
            format!("nid {nid} first chunk index all ones"),
            fx.name,
            vec![(r.start, vec![0xff; 8])],
        ));
        cases.push((
            format!("nid {nid} first chunk on device 0xffff"),
            fx.name,
            vec![(r.start + 2, vec![0xff; 2])],
        ));
        cases.push((
            format!("nid {nid} 2^43-byte chunks of 48-bit all-ones blocks"),
            fx.name,
            vec![
                (ino.loc.pos + 16, (fmt | 0x5f).to_le_bytes().to_vec()),
                (r.start, vec![0xff, 0xff, 0, 0, 0xfe, 0xff, 0xff, 0xff]),
            ],
        ));
    }
    cases
}

#[test]
fn test_boundary_field_values_never_panic_hang_or_overallocate() {
    let cases = boundary_cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    eprintln!("{} boundary cases", cases.len());
    for (what, name, patches) in cases {
        let fx = fixture(name);
        let mut bytes = fx.bytes.to_vec();
        for (pos, value) in &patches {
            put(&mut bytes, *pos, value);
        }
        fix_checksum(&mut bytes);
        // Images with an extra device also run in flat mode (no device).
        let runs = if fx.blob.is_some() {
            vec![fx.devices(), Vec::new()]
        } else {
            vec![Vec::new()]
        };
        for devices in runs {
            let n = devices.len();
            let at: Vec<u64> = patches.iter().map(|p| p.0).collect();
            assert_exercise_survives(
                &format!("{name}: {what} (bytes {at:?}, {n} extra devices)"),
                bytes.clone(),
                devices,
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The real binary on mutated images.

const BIN: &str = env!("CARGO_BIN_EXE_erofs-virtiofsd");

/// How long one run of the binary may take (a check of these images takes
/// a fraction of a second).
const BINARY_TIMEOUT: Duration = Duration::from_secs(60);

/// A finished run of the binary.
#[derive(Debug)]
struct BinRun {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs the binary with output going to files in `dir` (a pipe could fill
/// up and block it), polling `try_wait` until `timeout`.
fn run_binary(args: &[&std::ffi::OsStr], dir: &Path, timeout: Duration) -> Result<BinRun, String> {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("run{n}.stdout"));
    let err_path = dir.join(format!("run{n}.stderr"));
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawning {BIN}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no exit within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting: {e}")),
        }
    };
    Ok(BinRun {
        status,
        stdout: std::fs::read(&out_path).map_err(|e| e.to_string())?,
        stderr: std::fs::read(&err_path).map_err(|e| e.to_string())?,
    })
}

#[test]
fn test_binary_mutated_images_exit_cleanly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let names = [
        "edge_plain-b512",
        "edge_chunk4k-b512-blobdev",
        "edge_lz4",
        "edge_plain-b4096",
        "big_chunk64k-blobdev",
    ];
    let mut rng = Rng::new(SEED ^ hash_name("binary"));
    let mut failures = Vec::new();
    let mut exits = BTreeMap::new();
    for i in 0..20 {
        let fx = fixture(names[i % names.len()]);
        let areas: Vec<Area> = PLAN
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| !fx.targets.of(*a).is_empty())
            .collect();
        let area = areas[(i / names.len() + i) % areas.len()];
        let mut bytes = fx.bytes.to_vec();
        let m = mutate(fx, area, i, &mut rng, &mut bytes);
        let path = tmp.path().join(format!("m{i}-{}.erofs", fx.name));
        std::fs::write(&path, &bytes).expect("writing mutated image");
        for cmd in ["check", "manifest"] {
            let mut args: Vec<&std::ffi::OsStr> =
                vec!["image".as_ref(), cmd.as_ref(), path.as_os_str()];
            if let (true, Some(blob)) = (m.with_devices, &fx.blob_path) {
                args.push("--device".as_ref());
                args.push(blob.as_os_str());
            }
            match run_binary(&args, tmp.path(), BINARY_TIMEOUT) {
                Err(e) => failures.push(format!("{cmd} on {m}: {e}")),
                Ok(run) => {
                    let stderr = String::from_utf8_lossy(&run.stderr);
                    *exits.entry((cmd, run.status.code())).or_insert(0) += 1;
                    if !matches!(run.status.code(), Some(0 | 1)) || stderr.contains("panicked") {
                        failures.push(format!(
                            "{cmd} on {m}: exit {:?} (signal {:?}):\n{stderr}",
                            run.status.code(),
                            run.status.signal()
                        ));
                    }
                    if run.status.code() == Some(0) && run.stdout.is_empty() {
                        failures.push(format!("{cmd} on {m}: success without output"));
                    }
                }
            }
        }
    }
    eprintln!("binary exits (command, code) -> runs: {exits:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
