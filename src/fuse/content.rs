//! Serving shared content: which READs and OPENs of a share are answered
//! from the content store ([`crate::share::Store`]) instead of the file's
//! own image, and the background loader that fills the store.
//!
//! A file takes part only when its image has a trust domain (and so an
//! [`ImageContent`]), it is a regular file of at least one byte with
//! xattrs, and it carries a fingerprint of a known form. Everything else
//! is served from its image exactly as without a store: no store access
//! at all.
//!
//! Per (image, inode) the state is:
//!
//! - **unknown**: the fingerprint is read once (cached, bounded); on each
//!   read the store is asked (at most every [`LOOK_AGAIN`]); when the entry
//!   is missing a load is queued, when it exists a verification is queued;
//!   the read is served from the image meanwhile (a reader never waits for
//!   a load, so a large file read at a few places is served at once);
//! - **pending**: a job for it is queued or running; served from the image;
//! - **verified**: this image's own content hashes to the fingerprint
//!   (checked by loading it into the store, or, when another image stored
//!   it first, by hashing this image's content once): served from the
//!   entry;
//! - **unshared**: this image's content does not hash to its fingerprint
//!   (the image lies, or is corrupt). Logged, counted in the store's
//!   verification failures, never tried again in this process: served from
//!   its own image.
//!
//! Why verify a file before serving it from an entry that exists: the
//! entry holds content X (verified when it was stored), but an image whose
//! xattr claims X while its data is Y must still read Y. Serving it from
//! X's entry would show its readers other bytes than their image holds.
//! The check reads the file once per (image, inode) and process.
//!
//! Loads and checks read the image through its *loader* image: the same
//! bytes opened with `O_DIRECT` when the image is a plain file, so content
//! that ends up in the store is not also left in the host page cache.
//! One load per content is in flight per process; the store's claims make
//! it one per content across processes.
//!
//! Trusts: the store (see [`crate::share`]); nothing from images (a
//! fingerprint is a claim, checked before use).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use log::{debug, info, warn};

use crate::erofs::{Image, Inode, InodeKind};
use crate::metrics::{StoreDomainSnapshot, StoreSnapshot};
use crate::share::{
    self, hash_content, Domain, Entry, Fingerprint, FingerprintXattr, LoadOutcome, Store,
};

/// How often a file whose entry is missing (or being loaded by another
/// process) asks the store again.
pub const LOOK_AGAIN: Duration = Duration::from_millis(200);

/// How long a file whose content did not fit waits before trying again.
const FULL_BACKOFF: Duration = Duration::from_secs(10);

/// Files whose state one image keeps (fingerprint, verified or not).
pub const MAX_FILES_PER_IMAGE: usize = 1 << 16;

/// Entries held open by one process (each holds a descriptor and keeps its
/// entry from being evicted).
pub const MAX_OPEN_ENTRIES: usize = 1024;

/// Loads and checks waiting for a loader thread (a file whose job does not
/// fit is queued again at a later read).
const QUEUE: usize = 4096;

/// Loader threads.
const LOADERS: usize = 2;

/// Hidden test hook (as `store preload`'s): a load pauses for good once
/// this many bytes of a file have been read, after saying so on stderr.
const PAUSE_ENV: &str = "EROFS_VIRTIOFSD_TEST_PAUSE_LOAD_AFTER";

/// What happened, for logs and tests.
#[derive(Debug, Default)]
pub struct ContentStats {
    /// READs answered from an entry.
    pub entry_reads: AtomicU64,
    /// OPENs answered with a passthrough backing file.
    pub passthrough_opens: AtomicU64,
    /// Contents this process loaded into the store.
    pub loads: AtomicU64,
    /// Files checked against an entry stored by someone else.
    pub verified: AtomicU64,
    /// Files whose content did not hash to their fingerprint.
    pub unshared: AtomicU64,
}

impl ContentStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Display for ContentStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} reads from entries, {} passthrough opens, {} loads, {} files verified, \
             {} files unshared (content not matching its fingerprint)",
            g(&self.entry_reads),
            g(&self.passthrough_opens),
            g(&self.loads),
            g(&self.verified),
            g(&self.unshared)
        )
    }
}

/// A background job.
enum Job {
    /// Load the content into the store (and so verify it).
    Load(Arc<ImageContent>, u64, Fingerprint),
    /// Hash this image's own content against an entry's fingerprint.
    Verify(Arc<ImageContent>, u64, Fingerprint),
}

/// The content store as a share serves it: the store, the entries this
/// process holds open, the loads in flight and the loader threads.
pub struct SharedContent {
    store: Store,
    /// Entries held open, by (domain, fingerprint), oldest first.
    entries: Mutex<EntryCache>,
    /// Contents this process is loading now.
    inflight: Mutex<HashSet<(Domain, Fingerprint), RandomState>>,
    /// The loader threads' queue, made at the first job (threads start
    /// only once the sandbox is entered).
    queue: OnceLock<SyncSender<Job>>,
    stats: ContentStats,
    /// Test hook: pause loads after this many bytes.
    pause_after: Option<u64>,
    /// Offer FUSE passthrough on transports that have it.
    passthrough: AtomicBool,
}

impl fmt::Debug for SharedContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedContent")
            .field("store", &self.store.root())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct EntryCache {
    map: HashMap<(Domain, Fingerprint), Arc<Entry>, RandomState>,
    order: VecDeque<(Domain, Fingerprint)>,
}

impl EntryCache {
    fn get(&self, k: &(Domain, Fingerprint)) -> Option<Arc<Entry>> {
        self.map.get(k).cloned()
    }

    fn insert(&mut self, k: (Domain, Fingerprint), e: Arc<Entry>) -> Arc<Entry> {
        if let Some(old) = self.map.get(&k) {
            return Arc::clone(old);
        }
        while self.map.len() >= MAX_OPEN_ENTRIES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
        self.order.push_back(k.clone());
        self.map.insert(k, Arc::clone(&e));
        e
    }
}

impl SharedContent {
    /// Serving from `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            entries: Mutex::new(EntryCache::default()),
            inflight: Mutex::new(HashSet::default()),
            queue: OnceLock::new(),
            stats: ContentStats::default(),
            pause_after: std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse().ok()),
            passthrough: AtomicBool::new(true),
        }
    }

    /// Whether OPENs of stored files may be answered with FUSE passthrough
    /// (on transports that have it; default on).
    pub fn set_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
    }

    pub(crate) fn passthrough_wanted(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    pub(crate) fn count_passthrough_open(&self) {
        ContentStats::bump(&self.stats.passthrough_opens);
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What happened so far.
    pub fn stats(&self) -> &ContentStats {
        &self.stats
    }

    pub(crate) fn count_entry_read(&self) {
        ContentStats::bump(&self.stats.entry_reads);
    }

    /// Adds to `snap` what this process counted (loads; hits: READs
    /// answered from entries and passthrough opens; files found unshared;
    /// evictions) and, for each of `domains`, what the store holds and
    /// counted. Lists each domain's entries: for metrics requests, not for
    /// a hot path. A domain the store cannot be read for is left out
    /// (logged).
    pub fn add_metrics(&self, snap: &mut StoreSnapshot, domains: &BTreeSet<Domain>) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.stats;
        let opens = g(&s.passthrough_opens);
        snap.loads = snap.loads.saturating_add(g(&s.loads));
        snap.hits = snap
            .hits
            .saturating_add(g(&s.entry_reads))
            .saturating_add(opens);
        snap.passthrough_opens = snap.passthrough_opens.saturating_add(opens);
        snap.verification_failures = snap.verification_failures.saturating_add(g(&s.unshared));
        snap.evictions = snap.evictions.saturating_add(self.store.evictions_here());
        for d in domains {
            let st = match self.store.domain_stats(d) {
                Ok(st) => st,
                Err(e) => {
                    debug!("content store metrics of domain {d}: {e}");
                    continue;
                }
            };
            snap.entries = snap.entries.saturating_add(st.entries);
            snap.shared_bytes = snap.shared_bytes.saturating_add(st.bytes);
            let c = st.counters;
            snap.domains.insert(
                d.as_str().to_owned(),
                StoreDomainSnapshot {
                    entries: st.entries,
                    bytes: st.bytes,
                    loads: c.loads,
                    hits: c.hits,
                    verification_failures: c.verify_failures,
                    evictions: c.evictions,
                },
            );
        }
    }

    /// The entry to answer reads of `inode` of `img` from, if there is one
    /// and this image's content is verified to be it. Otherwise `None`
    /// (serve from the image), after queueing what brings the file
    /// closer to being served from the store. Never waits for a load.
    pub(crate) fn entry_for(
        self: &Arc<Self>,
        ic: &Arc<ImageContent>,
        image: &Image,
        inode: &Inode,
    ) -> Option<Arc<Entry>> {
        if inode.kind != InodeKind::File || inode.size == 0 || inode.xattr_isize == 0 {
            return None;
        }
        let nid = inode.nid;
        let (fp, status) = ic.state_of(image, inode)?;
        let key = (ic.domain.clone(), fp);
        match status {
            Status::Unshared | Status::Pending => None,
            Status::Verified => {
                let cached = self.lock_entries().get(&key);
                if let Some(e) = cached {
                    return usable(e, inode);
                }
                match self.store.get(&ic.domain, &fp) {
                    Ok(Some(e)) => {
                        let e = self.lock_entries().insert(key, Arc::new(e));
                        usable(e, inode)
                    }
                    Ok(None) => {
                        // Evicted since: load it again.
                        ic.set(nid, Status::Unknown, None);
                        None
                    }
                    Err(e) => {
                        debug!("content store: {e}");
                        ic.set(nid, Status::Verified, None);
                        None
                    }
                }
            }
            Status::Unknown => {
                let now = Instant::now();
                if ic.waiting(nid, now) {
                    return None;
                }
                // (The cache's lock is let go before the store is asked.)
                let cached = self.lock_entries().get(&key);
                let stored = match cached {
                    Some(e) => Some(e),
                    None => match self.store.get(&ic.domain, &fp) {
                        Ok(e) => e.map(|e| self.lock_entries().insert(key.clone(), Arc::new(e))),
                        Err(e) => {
                            debug!("content store: {e}");
                            ic.set(nid, Status::Unknown, now.checked_add(LOOK_AGAIN));
                            return None;
                        }
                    },
                };
                let job = if stored.is_some() {
                    Job::Verify(Arc::clone(ic), nid, fp)
                } else {
                    let mut inflight = self.lock_inflight();
                    if inflight.contains(&key) {
                        // Another image of this process is loading it:
                        // look again once it is stored.
                        drop(inflight);
                        ic.set(nid, Status::Unknown, now.checked_add(LOOK_AGAIN));
                        return None;
                    }
                    inflight.insert(key.clone());
                    Job::Load(Arc::clone(ic), nid, fp)
                };
                ic.set(nid, Status::Pending, None);
                if !self.submit(job) {
                    self.lock_inflight().remove(&key);
                    ic.set(nid, Status::Unknown, now.checked_add(LOOK_AGAIN));
                }
                None
            }
        }
    }

    /// Queues a job, starting the loaders at the first; `false` when the
    /// queue is full (or the loaders cannot start).
    fn submit(self: &Arc<Self>, job: Job) -> bool {
        let tx = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..LOADERS {
                let me = Arc::downgrade(self);
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("loader-{i}"))
                    .spawn(move || loader(&me, &rx));
                if let Err(e) = spawned {
                    warn!("cannot start a content loader thread: {e}");
                }
            }
            tx
        });
        match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                warn!("the content loaders are gone; serving from the images");
                false
            }
        }
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_inflight(
        &self,
    ) -> std::sync::MutexGuard<'_, HashSet<(Domain, Fingerprint), RandomState>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self, job: Job) {
        match job {
            Job::Load(ic, nid, fp) => {
                self.load(&ic, nid, fp);
                self.lock_inflight().remove(&(ic.domain.clone(), fp));
            }
            Job::Verify(ic, nid, fp) => self.verify(&ic, nid, fp),
        }
    }

    fn load(&self, ic: &ImageContent, nid: u64, fp: Fingerprint) {
        let inode = match ic.loader.inode(nid) {
            Ok(i) => i,
            Err(e) => {
                warn!("{}: nid {nid}: cannot load: {e}", ic.name);
                ic.set(nid, Status::Unshared, None);
                return;
            }
        };
        let pause = self.pause_after;
        let mut read = |off: u64, buf: &mut [u8]| -> io::Result<usize> {
            if pause.is_some_and(|n| off >= n) {
                pause_forever();
            }
            ic.loader.read(&inode, off, buf).map_err(io::Error::other)
        };
        let key = (ic.domain.clone(), fp);
        match self.store.load(&ic.domain, &fp, inode.size, &mut read) {
            Ok(LoadOutcome::Stored(e)) => {
                ContentStats::bump(&self.stats.loads);
                debug!("{}: nid {nid}: loaded {fp} ({} bytes)", ic.name, e.len());
                self.lock_entries().insert(key, Arc::new(e));
                ic.set(nid, Status::Verified, None);
            }
            Ok(LoadOutcome::AlreadyStored(e)) => {
                self.lock_entries().insert(key, Arc::new(e));
                self.verify(ic, nid, fp);
            }
            Ok(LoadOutcome::InProgress) => {
                ic.set(nid, Status::Unknown, Instant::now().checked_add(LOOK_AGAIN));
            }
            Err(share::Error::Mismatch { actual, .. }) => {
                // Counted by the store.
                self.lie(ic, nid, fp, actual, false);
            }
            Err(e @ share::Error::Full { .. }) => {
                debug!("{}: nid {nid}: {e}", ic.name);
                ic.set(
                    nid,
                    Status::Unknown,
                    Instant::now().checked_add(FULL_BACKOFF),
                );
            }
            Err(e) => {
                warn!("{}: nid {nid}: loading {fp}: {e}", ic.name);
                ic.set(
                    nid,
                    Status::Unknown,
                    Instant::now().checked_add(FULL_BACKOFF),
                );
            }
        }
    }

    /// Hashes the image's own content of `nid` and marks it verified or
    /// unshared.
    fn verify(&self, ic: &ImageContent, nid: u64, fp: Fingerprint) {
        let hashed = ic
            .loader
            .inode(nid)
            .map_err(|e| e.to_string())
            .and_then(|inode| {
                let mut read = |off: u64, buf: &mut [u8]| -> io::Result<usize> {
                    ic.loader.read(&inode, off, buf).map_err(io::Error::other)
                };
                hash_content(inode.size, &mut read).map_err(|e| e.to_string())
            });
        match hashed {
            Ok(actual) if actual == fp => {
                debug!("{}: nid {nid}: verified against the stored {fp}", ic.name);
                ContentStats::bump(&self.stats.verified);
                ic.set(nid, Status::Verified, None);
            }
            Ok(actual) => self.lie(ic, nid, fp, actual, true),
            Err(e) => {
                warn!("{}: nid {nid}: cannot check {fp}: {e}", ic.name);
                ic.set(nid, Status::Unshared, None);
            }
        }
    }

    /// Marks a file whose content is not its fingerprint: logged, counted,
    /// served from its own image from now on.
    fn lie(&self, ic: &ImageContent, nid: u64, fp: Fingerprint, actual: Fingerprint, count: bool) {
        warn!(
            "{}: nid {nid}: content claimed as {fp} (domain {}) has sha256 {actual}: \
             served unshared from its own image",
            ic.name, ic.domain
        );
        if count {
            self.store.count_verify_failure(&ic.domain);
        }
        ContentStats::bump(&self.stats.unshared);
        ic.set(nid, Status::Unshared, None);
    }
}

/// What DAX maps of a shared file (see [`super::dax`]).
impl SharedContent {
    /// The mapped copy of `inode` of `img` (whose sharing is `ic`): made
    /// from this image when the store has none (verified on the way), or
    /// the stored one once this image's own content is verified to be its
    /// fingerprint (hashed here, once, when not verified yet). `None`: map
    /// a private copy (no fingerprint, content not its fingerprint, store
    /// full or failing). Waits for the load or check (and for another
    /// process making the same copy): the first mapping of a shared file
    /// reads it whole.
    pub(crate) fn mapped_copy(
        &self,
        ic: &ImageContent,
        image: &Image,
        inode: &Inode,
    ) -> Option<(Entry, Fingerprint)> {
        if inode.kind != InodeKind::File || inode.size == 0 || inode.xattr_isize == 0 {
            return None;
        }
        let nid = inode.nid;
        let (fp, status) = ic.state_of(image, inode)?;
        if status == Status::Unshared {
            return None;
        }
        let stored = match self.store.get_mapped(&ic.domain, &fp) {
            Ok(Some(e)) => e,
            Ok(None) => {
                let loader = match ic.loader.inode(nid) {
                    Ok(i) => i,
                    Err(e) => {
                        warn!("{}: nid {nid}: cannot load: {e}", ic.name);
                        return None;
                    }
                };
                let mut read = |off: u64, buf: &mut [u8]| -> io::Result<usize> {
                    ic.loader.read(&loader, off, buf).map_err(io::Error::other)
                };
                match self
                    .store
                    .load_mapped(&ic.domain, &fp, inode.size, &mut read)
                {
                    Ok(LoadOutcome::Stored(e)) => {
                        debug!("{}: nid {nid}: mapped copy of {fp} made", ic.name);
                        ic.set(nid, Status::Verified, None);
                        return Some((e, fp));
                    }
                    Ok(LoadOutcome::AlreadyStored(e)) => e,
                    Ok(LoadOutcome::InProgress) => return None,
                    Err(share::Error::Mismatch { actual, .. }) => {
                        self.lie(ic, nid, fp, actual, false);
                        return None;
                    }
                    Err(e) => {
                        debug!("{}: nid {nid}: mapped copy of {fp}: {e}", ic.name);
                        return None;
                    }
                }
            }
            Err(e) => {
                debug!("{}: nid {nid}: mapped copy of {fp}: {e}", ic.name);
                return None;
            }
        };
        if ic.state_of(image, inode).map(|s| s.1) != Some(Status::Verified) {
            self.verify(ic, nid, fp);
        }
        (ic.state_of(image, inode).map(|s| s.1) == Some(Status::Verified)).then_some((stored, fp))
    }

    /// Removes a mapped copy found changed (see
    /// [`crate::share::Store::drop_mapped`]).
    pub(crate) fn drop_mapped(&self, e: &Entry) {
        if let Err(err) = self.store.drop_mapped(e) {
            warn!("content store: {err}");
        }
    }
}

impl SharedContent {
    /// Logs what the share did with the store (when its serving ends; not
    /// at drop: background loaders may hold it past the process's end).
    pub fn log_summary(&self) {
        info!("content store: {}", self.stats);
    }
}

/// An entry whose length is the inode's (anything else would be another
/// content: never served).
fn usable(e: Arc<Entry>, inode: &Inode) -> Option<Arc<Entry>> {
    (e.len() == inode.size).then_some(e)
}

/// A loader thread: runs jobs until the share is gone. When the queue runs
/// dry after some jobs, the thread's O_DIRECT bounce buffer is freed and
/// the heap's free memory goes back to the system: a load's buffers are
/// freed when it ends, but the allocator would keep them in the loader
/// threads' heaps (megabytes per process after a few thousand loads,
/// `scripts/bench-share`).
fn loader(me: &std::sync::Weak<SharedContent>, rx: &Mutex<Receiver<Job>>) {
    let mut worked = false;
    loop {
        let next = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.try_recv() {
                Ok(j) => Some(j),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        let job = match next {
            Some(j) => j,
            None => {
                if std::mem::take(&mut worked) {
                    crate::source::release_bounce_buffer();
                    crate::os::proc::release_free_heap();
                }
                let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            }
        };
        let Some(me) = me.upgrade() else {
            return;
        };
        me.run(job);
        worked = true;
    }
}

fn pause_forever() -> ! {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "erofs-virtiofsd: test: load paused");
    loop {
        std::thread::park();
    }
}

/// Where a file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Unknown,
    Pending,
    Verified,
    Unshared,
}

/// A file's state: 24 bytes a file in the table (an image's table holds
/// up to [`MAX_FILES_PER_IMAGE`] files, kept for the life of the mount).
#[derive(Debug, Clone, Copy)]
struct FileState {
    /// Index of its fingerprint in [`Files::fps`] ([`NO_FP`]: none).
    fp: u32,
    status: Status,
    /// Not before this many milliseconds after [`ImageContent::epoch`],
    /// plus one (0: no wait; unknown files).
    next_look: u64,
}

/// [`FileState::fp`] of a file without a fingerprint.
const NO_FP: u32 = u32::MAX;

/// The files of an image whose state is known, and their fingerprints
/// (kept apart: most of the table's buckets are empty).
#[derive(Default)]
struct Files {
    states: HashMap<u64, FileState, RandomState>,
    fps: Vec<Fingerprint>,
}

impl Files {
    fn fp(&self, s: &FileState) -> Option<Fingerprint> {
        self.fps.get(usize::try_from(s.fp).ok()?).copied()
    }

    /// Stores `fp` in `fps`; its index for [`FileState::fp`] ([`NO_FP`],
    /// and not stored, once the index would not fit).
    fn push_fp(fps: &mut Vec<Fingerprint>, fp: Fingerprint) -> u32 {
        let i = u32::try_from(fps.len()).unwrap_or(NO_FP);
        if i != NO_FP {
            fps.push(fp);
        }
        i
    }

    /// Keeps the files `keep` says, and the fingerprints they use.
    fn retain(&mut self, keep: impl Fn(&FileState) -> bool) {
        self.states.retain(|_, s| keep(s));
        let old = std::mem::take(&mut self.fps);
        for s in self.states.values_mut() {
            let fp = usize::try_from(s.fp).ok().and_then(|i| old.get(i));
            s.fp = fp.map_or(NO_FP, |fp| Self::push_fp(&mut self.fps, *fp));
        }
    }
}

/// One image's part in sharing: its domain, its fingerprint xattr, the
/// image its content is loaded through, and each file's state.
pub struct ImageContent {
    /// For log lines.
    name: String,
    domain: Domain,
    xattr: FingerprintXattr,
    /// The same image, opened with O_DIRECT when it is a plain file.
    loader: Arc<Image>,
    files: Mutex<Files>,
    /// What [`FileState::next_look`] counts from.
    epoch: Instant,
}

impl fmt::Debug for ImageContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageContent")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("xattr", &self.xattr.name())
            .finish_non_exhaustive()
    }
}

impl ImageContent {
    /// The sharing of an image of trust domain `domain` whose fingerprints
    /// are in the xattr `fingerprint_xattr` (`None`: what it declares):
    /// `None` when it has no domain or its files no fingerprint xattr.
    /// `loader`: the image opened for loads (O_DIRECT); `None` loads
    /// through `image` itself.
    pub fn for_image(
        name: &str,
        image: &Arc<Image>,
        domain: Option<&str>,
        fingerprint_xattr: Option<&str>,
        loader: Option<Arc<Image>>,
    ) -> share::Result<Option<Self>> {
        let Some(domain) = domain else {
            return Ok(None);
        };
        let domain = Domain::new(domain)?;
        let configured = fingerprint_xattr
            .map(FingerprintXattr::from_name)
            .transpose()?;
        let Some(xattr) = FingerprintXattr::for_image(image, configured.as_ref()) else {
            debug!("{name}: no fingerprint xattr: its files are served unshared");
            return Ok(None);
        };
        Ok(Some(Self {
            name: name.to_owned(),
            domain,
            xattr,
            loader: loader.unwrap_or_else(|| Arc::clone(image)),
            files: Mutex::new(Files::default()),
            epoch: Instant::now(),
        }))
    }

    /// The trust domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `t` as a [`FileState::next_look`].
    fn look_at(&self, t: Option<Instant>) -> u64 {
        t.map_or(0, |t| {
            let ms = t.saturating_duration_since(self.epoch).as_millis();
            u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1)
        })
    }

    /// The fingerprint and status of a file (the fingerprint read once);
    /// `None`: no fingerprint.
    fn state_of(&self, img: &Image, inode: &Inode) -> Option<(Fingerprint, Status)> {
        {
            let files = self.lock();
            if let Some(s) = files.states.get(&inode.nid) {
                return files.fp(s).map(|fp| (fp, s.status));
            }
        }
        let fp = self.xattr.fingerprint(img, inode);
        let mut files = self.lock();
        if files.states.len() >= MAX_FILES_PER_IMAGE {
            // Forget what can be found again; unshared files stay known
            // (never tried twice).
            files.retain(|s| s.status == Status::Unshared || s.status == Status::Pending);
        }
        if let Some(s) = files.states.get(&inode.nid).copied() {
            // Another thread was first.
            return files.fp(&s).map(|fp| (fp, s.status));
        }
        let index = fp.map_or(NO_FP, |fp| Files::push_fp(&mut files.fps, fp));
        files.states.insert(
            inode.nid,
            FileState {
                fp: index,
                status: Status::Unknown,
                next_look: 0,
            },
        );
        fp.filter(|_| index != NO_FP)
            .map(|fp| (fp, Status::Unknown))
    }

    fn set(&self, nid: u64, status: Status, next_look: Option<Instant>) {
        let at = self.look_at(next_look);
        if let Some(s) = self.lock().states.get_mut(&nid) {
            if s.status != Status::Unshared {
                s.status = status;
                s.next_look = at;
            }
        }
    }

    /// Whether an unknown file should not ask the store yet.
    fn waiting(&self, nid: u64, now: Instant) -> bool {
        let now = self.look_at(Some(now));
        self.lock()
            .states
            .get(&nid)
            .is_some_and(|s| s.next_look != 0 && now < s.next_look)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint::from_sha256([b; 32])
    }

    /// A file's state costs 24 bytes a bucket, and forgetting files keeps
    /// the right fingerprint for each file left (and only theirs).
    #[test]
    fn test_file_states_are_small_and_retain_keeps_fingerprints() {
        assert_eq!(std::mem::size_of::<(u64, FileState)>(), 24);
        let mut files = Files::default();
        for nid in 0..100u64 {
            let has_fp = nid % 3 != 0;
            let index = if has_fp {
                Files::push_fp(&mut files.fps, fp(nid as u8))
            } else {
                NO_FP
            };
            let status = if nid % 2 == 0 {
                Status::Unshared
            } else {
                Status::Verified
            };
            files.states.insert(
                nid,
                FileState {
                    fp: index,
                    status,
                    next_look: 0,
                },
            );
        }
        files.retain(|s| s.status == Status::Unshared);
        assert_eq!(files.states.len(), 50);
        let with_fp = files.states.values().filter(|s| s.fp != NO_FP).count();
        assert_eq!(files.fps.len(), with_fp);
        for (nid, s) in &files.states {
            let want = (nid % 3 != 0).then(|| fp(*nid as u8));
            assert_eq!(files.fp(s), want, "nid {nid}");
        }
    }
}
