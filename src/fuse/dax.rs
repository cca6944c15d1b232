//! DAX windows: FUSE_SETUPMAPPING and FUSE_REMOVEMAPPING, for a transport
//! whose client has a shared-memory window ([`Outbound::dax_window`]).
//!
//! A guest with a window maps file data instead of reading it: it asks
//! for `len` bytes of a file at `foffset` to appear at `moffset` of its
//! window, and the transport has the VMM map a host file there
//! ([`Outbound::dax_map`]). Image data may be compressed, inline or
//! fragmented, and the VMM maps every range writable (QEMU 11.1 maps
//! `PROT_READ | PROT_WRITE` even for a read-only request), so what is
//! mapped is never the image: it is a *content file* of the file's
//! decoded bytes, one per (image, inode), made by [`ContentCache`].
//!
//! A file shared through the content store (its image has a trust domain,
//! the file a verified fingerprint) maps the store's *mapped copy* of its
//! content ([`crate::share::Store::get_mapped`]): one host file for every
//! guest of the domain, on any connection or daemon of the store, and
//! never for a guest of another domain. Every other file maps a memfd
//! private to the connection. Both are as long as the file rounded up to
//! [`RANGE`] (2 MiB, the kernel's DAX range), the tail past EOF a hole (a
//! small file costs its own pages, not 2 MiB). A private memfd is filled
//! one range at a time, when a mapping first needs it.
//!
//! The xxh3 of each range's true bytes is kept (of a private range when it
//! is filled; of a shared copy when it is taken, after checking its
//! sha256). Before every mapping the range is hashed again; if a guest
//! wrote through its window meanwhile, a private range is decoded and
//! written again, and a shared copy is removed from the store and replaced
//! by a fresh one (never written in place: other guests map it); counted
//! in [`DaxStats::replaced`]. What a guest writes thus never reaches a
//! later mapping; while a range is mapped, the processes of that guest,
//! and for a shared copy the guests of the same domain mapping that range
//! at the same time, see the write.
//!
//! Bounds: at most [`MAX_MAPPINGS`] live mappings per connection (each is
//! a memory slot in QEMU, which has about 509 for RAM and mappings
//! together); a SETUPMAPPING beyond gets ENOSPC (with a window of at most
//! 512 MiB, a guest that maps 2 MiB ranges never gets there). Content
//! files: at most [`MAX_CONTENT_FILES`] and [`CONTENT_BUDGET`] filled bytes
//! not counting ranges that are mapped; beyond, files with no live mapping
//! are dropped (least recently used first) and unmapped ranges of the
//! others are punched out.
//!
//! State is reset when the guest's FUSE connection starts over: INIT
//! forgets the mappings (the VMM drops them on device reset), DESTROY
//! unmaps them first (a remount on the same device reuses the window); a
//! new vhost-user connection has a new session, so nothing survives it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use foldhash::fast::RandomState;
use log::{debug, info, warn};

use sha2::{Digest, Sha256};

use super::abi::{self, RemovemappingOne, SetupmappingIn};
use super::content::SharedContent;
use super::nodes::Target;
use super::outbound::{DaxMapping, Outbound};
use crate::erofs::{Inode, InodeKind};
use crate::metrics::Metrics;
use crate::share::{Entry, Fingerprint};

/// The unit the kernel maps (`FUSE_DAX_SZ`), and of content-file filling
/// and hashing.
pub const RANGE: u64 = 2 << 20;

/// Alignment of window and file offsets we accept (`map_alignment` 12).
pub const MAP_ALIGNMENT_SHIFT: u32 = 12;

/// Live mappings per connection.
pub const MAX_MAPPINGS: usize = 256;

/// Content files per connection.
pub const MAX_CONTENT_FILES: usize = 1024;

/// Filled bytes of content files kept beyond those mapped.
pub const CONTENT_BUDGET: u64 = 1 << 30;

/// Largest window that cannot fill the mapping table with 2 MiB ranges.
pub const MAX_SAFE_WINDOW: u64 = RANGE * MAX_MAPPINGS as u64;

/// Under `--dax inode`: files at least this long get `FUSE_ATTR_DAX`.
/// Smaller ones cost a whole 2 MiB range of the window and a memory slot
/// for little data, and are read through FUSE_READ.
pub const INODE_DAX_MIN_SIZE: u64 = 64 << 10;

/// Which files a guest may map (`--dax`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DaxMode {
    /// No mappings: SETUPMAPPING gets ENOSYS, as without a window.
    #[default]
    Never,
    /// Every regular file (attributes carry `FUSE_ATTR_DAX` for guests
    /// mounted `dax=inode`).
    Always,
    /// Regular files of at least [`INODE_DAX_MIN_SIZE`] bytes carry
    /// `FUSE_ATTR_DAX`; guests mounted `dax=inode` map those only (a
    /// guest mounted `dax=always` maps every file).
    Inode,
}

/// What the DAX path did on one connection.
#[derive(Debug, Default)]
pub struct DaxStats {
    /// SETUPMAPPINGs answered with a mapping.
    pub setups: AtomicU64,
    /// Ranges unmapped on REMOVEMAPPING (or replaced, or at DESTROY).
    pub removes: AtomicU64,
    /// SETUPMAPPINGs refused (writable, table full, VMM refused).
    pub refused: AtomicU64,
    /// Ranges found changed by the guest and written again.
    pub replaced: AtomicU64,
    /// FUSE_READs of regular files (data not served by a mapping).
    pub file_reads: AtomicU64,
    /// Of `setups`: mappings of a store's mapped copy (shared by the
    /// guests of a domain).
    pub shared: AtomicU64,
    /// Mappings live now.
    pub live: AtomicU64,
    /// The daemon's registry, counting the same (over all connections).
    registry: Option<Arc<Metrics>>,
}

impl DaxStats {
    fn setup(&self, shared: bool) {
        bump(&self.setups);
        bump(&self.live);
        if shared {
            bump(&self.shared);
        }
        if let Some(m) = &self.registry {
            m.dax().maps.inc();
            m.dax().active.inc();
            if shared {
                m.dax().shared_maps.inc();
            }
        }
    }

    /// A mapping ended (`unmapped`: by an unmap, else forgotten at INIT).
    fn ended(&self, unmapped: bool) {
        let _ = self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
        if unmapped {
            bump(&self.removes);
        }
        if let Some(m) = &self.registry {
            m.dax().active.dec();
            if unmapped {
                m.dax().unmaps.inc();
            }
        }
    }

    fn refused(&self) {
        bump(&self.refused);
        if let Some(m) = &self.registry {
            m.dax().failures.inc();
        }
    }

    fn replaced(&self) {
        bump(&self.replaced);
        if let Some(m) = &self.registry {
            m.dax().replaced.inc();
        }
    }

    /// A FUSE_READ of a regular file.
    pub(crate) fn file_read(&self) {
        bump(&self.file_reads);
        if let Some(m) = &self.registry {
            m.dax().file_reads.inc();
        }
    }
}

/// A copy of [`DaxStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaxCounts {
    /// See [`DaxStats::setups`].
    pub setups: u64,
    /// See [`DaxStats::removes`].
    pub removes: u64,
    /// See [`DaxStats::refused`].
    pub refused: u64,
    /// See [`DaxStats::replaced`].
    pub replaced: u64,
    /// See [`DaxStats::file_reads`].
    pub file_reads: u64,
    /// See [`DaxStats::shared`].
    pub shared: u64,
    /// See [`DaxStats::live`].
    pub live: u64,
}

impl std::fmt::Display for DaxCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dax: setups={} removes={} refused={} replaced={} file_reads={} shared={} live={}",
            self.setups,
            self.removes,
            self.refused,
            self.replaced,
            self.file_reads,
            self.shared,
            self.live
        )
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// (image serial, nid).
type Key = (u64, u64);

/// One range of a content file.
#[derive(Debug, Clone, Copy, Default)]
struct RangeState {
    /// Holds the decoded bytes (else a hole).
    filled: bool,
    /// Bytes of pages written (the file's data in the range, rounded up to
    /// a page; the rest is a hole).
    bytes: u64,
    /// xxh3 of the whole range as written.
    hash: u64,
    /// Live mappings using it.
    live: u32,
}

/// Where a content file comes from.
#[derive(Debug)]
enum Backing {
    /// A memfd of this connection, filled range by range.
    Private(File),
    /// The store's mapped copy of the file's fingerprint in its domain,
    /// verified when taken: every range `filled`, with the hash of its
    /// true bytes.
    Shared(Entry),
}

/// A file's decoded content, padded to whole ranges.
#[derive(Debug)]
struct Content {
    backing: Backing,
    ranges: Vec<RangeState>,
    last_use: u64,
}

impl Content {
    fn live(&self) -> bool {
        self.ranges.iter().any(|r| r.live > 0)
    }

    fn file(&self) -> &File {
        match &self.backing {
            Backing::Private(f) => f,
            Backing::Shared(e) => e.file(),
        }
    }

    fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Shared(_))
    }
}

/// The hashes of the ranges of a mapped copy of `size` bytes of content
/// whose sha256 must be `fp` (zeros past `size`), or `None` when it holds
/// anything else (a guest wrote into it).
fn check_copy(e: &Entry, size: u64, fp: &Fingerprint) -> Option<Vec<u64>> {
    let padded = size.checked_next_multiple_of(RANGE)?;
    if e.len() != padded {
        return None;
    }
    let mut sha = Sha256::new();
    let mut hashes = Vec::new();
    let mut buf = vec![0u8; RANGE as usize];
    let mut off = 0u64;
    while off < padded {
        if let Err(err) = e.file().read_exact_at(&mut buf, off) {
            warn!("dax: reading a mapped copy: {err}");
            return None;
        }
        let data = usize::try_from(size.saturating_sub(off).min(RANGE)).ok()?;
        let (head, tail) = buf.split_at_mut(data);
        sha.update(&*head);
        let dirty = tail.iter().any(|b| *b != 0);
        tail.fill(0);
        if dirty {
            return None;
        }
        hashes.push(xxhash_rust::xxh3::xxh3_64(&buf));
        off = off.saturating_add(RANGE);
    }
    (Fingerprint::from_sha256(sha.finalize().into()) == *fp).then_some(hashes)
}

/// The content files of one connection: "a writable file holding the
/// decoded content of (image, inode)", filled range by range. The one
/// place that knows where mapped bytes come from: a shared store's
/// entries (per trust domain) can take its place.
#[derive(Debug, Default)]
struct ContentCache {
    files: HashMap<Key, Content, RandomState>,
    /// Filled bytes over all files.
    filled: u64,
    clock: u64,
}

/// Ranges `first..=last` of a byte range.
fn ranges_of(offset: u64, len: u64) -> (usize, usize) {
    let first = offset / RANGE;
    let last = offset.saturating_add(len.saturating_sub(1)) / RANGE;
    (
        usize::try_from(first).unwrap_or(usize::MAX),
        usize::try_from(last).unwrap_or(usize::MAX),
    )
}

/// Decodes range `r` of `t`'s file into a whole-range buffer (zeros past
/// EOF).
fn decode_range(t: &Target, r: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; RANGE as usize];
    let start = (r as u64).saturating_mul(RANGE);
    let mut pos = 0usize;
    while pos < buf.len() {
        let Some(dst) = buf.get_mut(pos..) else { break };
        let n = t
            .img
            .image()
            .read(&t.inode, start.saturating_add(pos as u64), dst)
            .map_err(|e| {
                warn!("dax: decoding nid {}: {e}", t.inode.nid);
                e.errno()
            })?;
        if n == 0 {
            break;
        }
        pos = pos.saturating_add(n);
    }
    Ok(buf)
}

/// The store's mapped copy of `t`, verified (`None`: map a private copy).
/// A copy found changed is removed from the store and counted, and a
/// fresh one taken.
fn shared_content(t: &Target, sc: &SharedContent, stats: &DaxStats) -> Option<Content> {
    let ic = t.img.content()?;
    for _ in 0..2 {
        let (e, fp) = sc.mapped_copy(ic, t.img.image(), &t.inode)?;
        if let Some(hashes) = check_copy(&e, t.inode.size, &fp) {
            let ranges = hashes
                .into_iter()
                .map(|hash| RangeState {
                    filled: true,
                    bytes: 0,
                    hash,
                    live: 0,
                })
                .collect();
            return Some(Content {
                backing: Backing::Shared(e),
                ranges,
                last_use: 0,
            });
        }
        warn!(
            "dax: the mapped copy of nid {} ({fp}) was changed through a window; replaced",
            t.inode.nid
        );
        stats.replaced();
        sc.drop_mapped(&e);
    }
    None
}

impl ContentCache {
    /// A content file for `t`: the store's mapped copy when the file is
    /// shared, else a private memfd with every range a hole.
    fn new_content(
        t: &Target,
        share: Option<&SharedContent>,
        stats: &DaxStats,
    ) -> Result<Content, i32> {
        if let Some(c) = share.and_then(|sc| shared_content(t, sc, stats)) {
            return Ok(c);
        }
        let padded = t
            .inode
            .size
            .checked_next_multiple_of(RANGE)
            .ok_or(libc::EFBIG)?;
        let file = crate::os::fd::memfd(c"erofs-dax", padded).map_err(|e| {
            warn!("dax: content file: {e}");
            e.raw_os_error().unwrap_or(libc::EIO)
        })?;
        let n = usize::try_from(padded / RANGE).map_err(|_| libc::EFBIG)?;
        Ok(Content {
            backing: Backing::Private(file),
            ranges: vec![RangeState::default(); n],
            last_use: 0,
        })
    }

    /// Whether ranges `first..=last` of a shared content still hold their
    /// true bytes.
    fn shared_intact(c: &Content, first: usize, last: usize) -> Result<bool, i32> {
        let mut now = vec![0u8; RANGE as usize];
        for r in first..=last {
            let state = c.ranges.get(r).ok_or(libc::EINVAL)?;
            let off = (r as u64).saturating_mul(RANGE);
            c.file().read_exact_at(&mut now, off).map_err(io_errno)?;
            if xxhash_rust::xxh3::xxh3_64(&now) != state.hash {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The content file of `t`, with ranges `first..=last` holding the
    /// file's true bytes (filled, or checked against their hash and
    /// written again when changed; a changed shared copy is replaced by
    /// a fresh one, never written in place: other guests map it).
    fn prepare(
        &mut self,
        key: Key,
        t: &Target,
        first: usize,
        last: usize,
        stats: &DaxStats,
        share: Option<&SharedContent>,
    ) -> Result<&Content, i32> {
        self.clock = self.clock.saturating_add(1);
        if !self.files.contains_key(&key) {
            self.make_room_for_file();
            let c = Self::new_content(t, share, stats)?;
            self.files.insert(key, c);
        }
        let clock = self.clock;
        let mut added = 0u64;
        let c = self.files.get_mut(&key).ok_or(libc::EIO)?;
        c.last_use = clock;
        if c.is_shared() {
            if Self::shared_intact(c, first, last)? {
                return self.files.get(&key).ok_or(libc::EIO);
            }
            warn!(
                "dax: a mapped copy of nid {} was changed through a window; replaced",
                t.inode.nid
            );
            stats.replaced();
            let Some(old) = self.files.remove(&key) else {
                return Err(libc::EIO);
            };
            if let (Backing::Shared(e), Some(sc)) = (&old.backing, share) {
                sc.drop_mapped(e);
            }
            let mut fresh = Self::new_content(t, share, stats)?;
            for (n, o) in fresh.ranges.iter_mut().zip(&old.ranges) {
                n.live = o.live;
            }
            fresh.last_use = clock;
            let shared = fresh.is_shared();
            self.files.insert(key, fresh);
            if shared {
                return self.files.get(&key).ok_or(libc::EIO);
            }
        }
        let c = self.files.get_mut(&key).ok_or(libc::EIO)?;
        for r in first..=last {
            let Some(state) = c.ranges.get(r).copied() else {
                return Err(libc::EINVAL);
            };
            let off = (r as u64).saturating_mul(RANGE);
            if state.filled {
                let mut now = vec![0u8; RANGE as usize];
                c.file().read_exact_at(&mut now, off).map_err(io_errno)?;
                if xxhash_rust::xxh3::xxh3_64(&now) == state.hash {
                    continue;
                }
                warn!(
                    "dax: range {r} of nid {} was changed through a window; written again",
                    t.inode.nid
                );
                stats.replaced();
            }
            let data = decode_range(t, r)?;
            let written = t
                .inode
                .size
                .saturating_sub(off)
                .min(RANGE)
                .checked_next_multiple_of(4096)
                .unwrap_or(RANGE)
                .min(RANGE);
            let head = data
                .get(..usize::try_from(written).unwrap_or(0))
                .unwrap_or(&[]);
            c.file().write_all_at(head, off).map_err(io_errno)?;
            if state.filled && written < RANGE {
                // What the guest wrote past the data goes with the hole.
                crate::os::fd::punch_hole(
                    c.file(),
                    off.saturating_add(written),
                    RANGE.saturating_sub(written),
                )
                .map_err(io_errno)?;
            }
            if let Some(s) = c.ranges.get_mut(r) {
                let before = if s.filled { s.bytes } else { 0 };
                added = added.saturating_add(written).saturating_sub(before);
                s.filled = true;
                s.bytes = written;
                s.hash = xxhash_rust::xxh3::xxh3_64(&data);
            }
        }
        self.filled = self.filled.saturating_add(added);
        self.files.get(&key).ok_or(libc::EIO)
    }

    /// Counts a live mapping of ranges `first..=last` of `key` (`add`) or
    /// ends one.
    fn set_live(&mut self, key: Key, first: usize, last: usize, add: bool) {
        let Some(c) = self.files.get_mut(&key) else {
            return;
        };
        for s in c.ranges.iter_mut().take(last.saturating_add(1)).skip(first) {
            s.live = if add {
                s.live.saturating_add(1)
            } else {
                s.live.saturating_sub(1)
            };
        }
    }

    /// Drops files with no live mapping, least recently used first, until
    /// there is room for one more file.
    fn make_room_for_file(&mut self) {
        while self.files.len() >= MAX_CONTENT_FILES {
            if !self.drop_lru() {
                break;
            }
        }
    }

    /// Keeps filled bytes not mapped within [`CONTENT_BUDGET`]: drops
    /// unmapped files (LRU), then punches unmapped ranges.
    fn trim(&mut self) {
        while self.filled > CONTENT_BUDGET.saturating_add(self.mapped_bytes()) {
            if !self.drop_lru() {
                break;
            }
        }
        if self.filled <= CONTENT_BUDGET.saturating_add(self.mapped_bytes()) {
            return;
        }
        let mut freed = 0u64;
        // (Shared copies are the store's: never punched.)
        for c in self.files.values_mut().filter(|c| !c.is_shared()) {
            let Backing::Private(file) = &c.backing else {
                continue;
            };
            for (r, s) in c.ranges.iter_mut().enumerate() {
                if s.filled && s.live == 0 {
                    let off = (r as u64).saturating_mul(RANGE);
                    if crate::os::fd::punch_hole(file, off, RANGE).is_ok() {
                        freed = freed.saturating_add(s.bytes);
                        *s = RangeState::default();
                    }
                }
            }
        }
        self.filled = self.filled.saturating_sub(freed);
    }

    fn mapped_bytes(&self) -> u64 {
        self.files
            .values()
            .flat_map(|c| c.ranges.iter())
            .filter(|s| s.live > 0)
            .fold(0u64, |a, s| a.saturating_add(s.bytes))
    }

    /// Drops the least recently used file with no live mapping; false
    /// when there is none.
    fn drop_lru(&mut self) -> bool {
        let victim = self
            .files
            .iter()
            .filter(|(_, c)| !c.live())
            .min_by_key(|(_, c)| c.last_use)
            .map(|(k, _)| *k);
        let Some(k) = victim else { return false };
        if let Some(c) = self.files.remove(&k) {
            let n = c.ranges.iter().fold(0u64, |a, s| a.saturating_add(s.bytes));
            self.filled = self.filled.saturating_sub(n);
        }
        true
    }
}

fn io_errno(e: io::Error) -> i32 {
    warn!("dax: content file: {e}");
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// One live mapping of the window.
#[derive(Debug, Clone, Copy)]
struct Live {
    key: Key,
    len: u64,
    first: usize,
    last: usize,
}

#[derive(Debug, Default)]
struct DaxState {
    /// By window offset.
    live: BTreeMap<u64, Live>,
    content: ContentCache,
}

/// The DAX state of one connection.
#[derive(Debug)]
pub(crate) struct Dax {
    window: u64,
    mode: DaxMode,
    /// Held across the transport's map and unmap calls (which wait for
    /// the VMM): DAX requests of a connection are served one at a time.
    /// Nothing else takes it, in particular not the transport's control
    /// path (memory table updates the VMM sends while it maps).
    state: Mutex<DaxState>,
    pub(crate) stats: DaxStats,
}

impl Dax {
    /// DAX for a transport whose window is `window` bytes, or `None` when
    /// there is no window or `mode` is [`DaxMode::Never`].
    /// `registry`: the daemon's metrics, counting what this connection does.
    pub(crate) fn new(
        window: Option<u64>,
        mode: DaxMode,
        registry: Option<Arc<Metrics>>,
    ) -> Option<Self> {
        let window = window.filter(|w| *w > 0)?;
        if mode == DaxMode::Never {
            return None;
        }
        Some(Self {
            window,
            mode,
            state: Mutex::new(DaxState::default()),
            stats: DaxStats {
                registry,
                ..DaxStats::default()
            },
        })
    }

    /// The `fuse_attr.flags` of `inode`.
    pub(crate) fn attr_flags(&self, inode: &Inode) -> u32 {
        let yes = inode.kind == InodeKind::File
            && match self.mode {
                DaxMode::Never => false,
                DaxMode::Always => true,
                DaxMode::Inode => inode.size >= INODE_DAX_MIN_SIZE,
            };
        if yes {
            abi::ATTR_DAX
        } else {
            0
        }
    }

    /// The counters so far.
    pub(crate) fn counts(&self) -> DaxCounts {
        let s = &self.stats;
        DaxCounts {
            setups: s.setups.load(Ordering::Relaxed),
            removes: s.removes.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            replaced: s.replaced.load(Ordering::Relaxed),
            file_reads: s.file_reads.load(Ordering::Relaxed),
            shared: s.shared.load(Ordering::Relaxed),
            live: s.live.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DaxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// FUSE_SETUPMAPPING of `t`: an errno on failure.
    /// `share`: the content store of the connection's share, if it has
    /// one (files of images with a domain and fingerprints map its mapped
    /// copies).
    pub(crate) fn setup(
        &self,
        out: &dyn Outbound,
        t: &Target,
        s: &SetupmappingIn,
        share: Option<&SharedContent>,
    ) -> Result<(), i32> {
        let r = self.try_setup(out, t, s, share);
        if matches!(r, Err(e) if e != libc::EINVAL) {
            self.stats.refused();
        }
        r
    }

    fn try_setup(
        &self,
        out: &dyn Outbound,
        t: &Target,
        s: &SetupmappingIn,
        share: Option<&SharedContent>,
    ) -> Result<(), i32> {
        if s.flags & abi::SETUPMAPPING_FLAG_WRITE != 0 {
            return Err(libc::EPERM);
        }
        if t.inode.kind != InodeKind::File {
            return Err(libc::EINVAL);
        }
        let align = (1u64 << MAP_ALIGNMENT_SHIFT) - 1;
        let padded = t.inode.size.checked_next_multiple_of(RANGE).unwrap_or(0);
        let ok = s.len > 0
            && s.len <= RANGE
            && (s.foffset | s.moffset | s.len) & align == 0
            && s.moffset
                .checked_add(s.len)
                .is_some_and(|e| e <= self.window)
            && s.foffset.checked_add(s.len).is_some_and(|e| e <= padded);
        if !ok {
            debug!(
                "dax: bad SETUPMAPPING foffset {:#x} len {:#x} moffset {:#x} (size {})",
                s.foffset, s.len, s.moffset, t.inode.size
            );
            return Err(libc::EINVAL);
        }
        let key = (t.img.serial(), t.inode.nid);
        let (first, last) = ranges_of(s.foffset, s.len);
        let mut st = self.lock();
        // The kernel reuses a window range it dropped; the VMM refuses
        // overlapping maps: unmap whatever overlaps first.
        let end = s.moffset.saturating_add(s.len);
        let overlapping: Vec<u64> = st
            .live
            .range(..end)
            .filter(|(m, l)| m.saturating_add(l.len) > s.moffset)
            .map(|(m, _)| *m)
            .collect();
        for m in overlapping {
            self.unmap_locked(&mut st, out, m);
        }
        if st.live.len() >= MAX_MAPPINGS {
            warn!("dax: {MAX_MAPPINGS} mappings live; SETUPMAPPING refused");
            return Err(libc::ENOSPC);
        }
        let content = st
            .content
            .prepare(key, t, first, last, &self.stats, share)?;
        let shared = content.is_shared();
        let m = DaxMapping {
            window_offset: s.moffset,
            file: content.file().as_fd(),
            file_offset: s.foffset,
            len: s.len,
        };
        if let Err(e) = out.dax_map(&m) {
            warn!(
                "dax: mapping {:#x} bytes at window offset {:#x}: {e}",
                s.len, s.moffset
            );
            return Err(libc::EIO);
        }
        st.live.insert(
            s.moffset,
            Live {
                key,
                len: s.len,
                first,
                last,
            },
        );
        st.content.set_live(key, first, last, true);
        st.content.trim();
        self.stats.setup(shared);
        Ok(())
    }

    /// Unmaps the live mapping at `moffset` (the transport's errors are
    /// logged: the mapping is forgotten either way).
    fn unmap_locked(&self, st: &mut DaxState, out: &dyn Outbound, moffset: u64) {
        let Some(l) = st.live.remove(&moffset) else {
            return;
        };
        st.content.set_live(l.key, l.first, l.last, false);
        if let Err(e) = out.dax_unmap(moffset, l.len) {
            warn!(
                "dax: unmapping {:#x} bytes at window offset {moffset:#x}: {e}",
                l.len
            );
        }
        self.stats.ended(true);
    }

    /// FUSE_REMOVEMAPPING: each range must be a live mapping, exactly;
    /// EINVAL (after removing the others) when one is not.
    pub(crate) fn remove(
        &self,
        out: &dyn Outbound,
        ranges: impl Iterator<Item = RemovemappingOne>,
    ) -> Result<(), i32> {
        let mut st = self.lock();
        let mut unknown = 0usize;
        for r in ranges {
            match st.live.get(&r.moffset) {
                Some(l) if l.len == r.len => self.unmap_locked(&mut st, out, r.moffset),
                _ => unknown = unknown.saturating_add(1),
            }
        }
        st.content.trim();
        if unknown > 0 {
            debug!("dax: REMOVEMAPPING of {unknown} ranges not mapped");
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    /// At DESTROY (`unmap`: the VMM still has the mappings) or INIT (the
    /// device was reset, or DESTROY came first): forgets every mapping.
    /// Content files stay, their ranges checked before their next use.
    pub(crate) fn reset(&self, out: &dyn Outbound, unmap: bool) {
        let mut st = self.lock();
        if unmap {
            let all: Vec<u64> = st.live.keys().copied().collect();
            for m in all {
                self.unmap_locked(&mut st, out, m);
            }
        } else {
            let all: Vec<Live> = st.live.values().copied().collect();
            st.live.clear();
            for l in all {
                self.stats.ended(false);
                st.content.set_live(l.key, l.first, l.last, false);
            }
        }
        st.content.trim();
        info!("{}", self.counts());
    }
}

impl Drop for Dax {
    /// The connection is gone, and the VMM's mappings with it: they no
    /// longer count as active in the registry.
    fn drop(&mut self) {
        if let Some(m) = &self.stats.registry {
            for _ in 0..self.stats.live.load(Ordering::Relaxed) {
                m.dax().active.dec();
            }
        }
    }
}
