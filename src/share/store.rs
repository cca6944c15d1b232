//! The content store: one verified copy of each (domain, fingerprint)'s
//! content, shared by every process that names the same directory.
//!
//! The on-disk layout, the locking rules and what a crash leaves behind are
//! described in the module documentation of [`crate::share`].

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::claim::{self, Claim};
use super::domain::Domain;
use super::fingerprint::{self, Fingerprint};
use super::stats::{self, DomainStats, Event};
use super::{Error, Result};

/// Name of the versioned directory inside a store directory.
pub const LAYOUT_DIR: &str = "v1";

/// Domains whose directory paths a store keeps made (past it, it starts
/// over: a process serves few domains).
const MAX_CACHED_DOMAIN_DIRS: usize = 64;

/// Options of an opened store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most bytes of content the store may hold (entries plus loads in
    /// flight); loads past it evict unused entries, least recently used
    /// first. Each process enforces its own limit at its own loads.
    pub size_limit: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            size_limit: default_size_limit(),
        }
    }
}

/// The default size limit: a quarter of physical memory (1 GiB when the
/// memory size is unknown).
pub fn default_size_limit() -> u64 {
    let total = fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    match total {
        Some(kb) => kb.saturating_mul(1024) / 4,
        None => 1 << 30,
    }
}

/// The default store directory: `/dev/shm/erofs-virtiofsd.UID`, so a
/// stored file is one copy in RAM and users do not share a store.
pub fn default_dir() -> PathBuf {
    let uid = fs_uid().unwrap_or(0);
    PathBuf::from(format!("/dev/shm/erofs-virtiofsd.{uid}"))
}

/// What [`Store::load`] did.
#[derive(Debug)]
pub enum LoadOutcome {
    /// This call loaded and verified the content; it is now stored.
    Stored(Entry),
    /// The content was already stored (by anyone): nothing was read.
    AlreadyStored(Entry),
    /// Another live loader is loading it right now: nothing was read.
    /// Serve from the image and look again later.
    InProgress,
}

/// One stored content, held open. While an `Entry` lives, its content
/// cannot be evicted (it holds a shared `flock` on the file).
#[derive(Debug)]
pub struct Entry {
    file: File,
    len: u64,
    domain: Domain,
    fingerprint: Fingerprint,
}

impl Entry {
    /// Content length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The content, opened read-only: for `pread` (`FileExt::read_at`) and
    /// as a FUSE passthrough backing file. Keep the `Entry` alive while the
    /// descriptor is used (dropping it lets the content be evicted; the
    /// bytes of an open file stay readable, but no longer count in the
    /// store's size).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A new read-write descriptor of the content (for a DAX mapping, as
    /// QEMU refuses read-only descriptors there), reopened through
    /// `/proc/self/fd`. Never write through it: every reader of the
    /// domain sees the same bytes. The same lifetime rule as
    /// [`Entry::file`] applies.
    pub fn open_rw(&self) -> Result<File> {
        let p = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("reopen entry read-write", &p, e))
    }

    /// The domain the content is stored for.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The content's fingerprint (its sha256, verified).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

impl AsFd for Entry {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The paths of one domain inside a store.
#[derive(Debug)]
struct DomainDir {
    objects: PathBuf,
    /// Mapped copies (see [`Kind::Mapped`]).
    mapped: PathBuf,
    claims: PathBuf,
    tmp: PathBuf,
    stats: PathBuf,
}

/// A private store's directory: removed when the store is dropped, or by
/// the next private store created beside it once its owner is dead.
#[derive(Debug)]
struct PrivateDir {
    path: PathBuf,
    _owner: File,
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            log::warn!("cannot remove private store {}: {e}", self.path.display());
        }
    }
}

/// An opened content store.
#[derive(Debug)]
pub struct Store {
    /// `DIR/v1`.
    root: PathBuf,
    opts: StoreOptions,
    /// Whether published entries must reach the disk first (not tmpfs).
    sync: bool,
    private: Option<PrivateDir>,
    /// Entries this process evicted (the store's counters count every
    /// process's).
    evicted_here: AtomicU64,
    /// The domains' directory paths, made once (every open of a shared
    /// file that the entry cache misses asks for them).
    dirs: Mutex<HashMap<Domain, Arc<DomainDir>>>,
}

impl Store {
    /// Opens (creating when missing) the store in `dir`, shared with every
    /// process that opens the same directory. `dir` must belong to this
    /// user and be writable by nobody else.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        mkdir_private(dir)?;
        check_private(dir)?;
        let root = dir.join(LAYOUT_DIR);
        mkdir_private(&root)?;
        mkdir_private(&root.join("domains"))?;
        check_private(&root)?;
        let sync = !on_memory_fs(dir);
        let store = Store {
            root,
            opts,
            sync,
            private: None,
            evicted_here: AtomicU64::new(0),
            dirs: Mutex::new(HashMap::new()),
        };
        store.reconcile()?;
        Ok(store)
    }

    /// A store for this process alone, in a new directory under `base`
    /// (e.g. `/dev/shm`), removed when the store is dropped. Private
    /// stores of dead processes under `base` are removed first.
    pub fn private(base: &Path, opts: StoreOptions) -> Result<Store> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let parent = base.join(format!("erofs-virtiofsd-private.{}", fs_uid().unwrap_or(0)));
        mkdir_private(&parent)?;
        check_private(&parent)?;
        remove_dead_private(&parent);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{}-{n}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io("create private store", &path, e))?;
        let owner_path = path.join("owner");
        let owner =
            claim::open_rw_create(&owner_path).map_err(|e| Error::io("create", &owner_path, e))?;
        owner
            .lock()
            .map_err(|e| Error::io("lock", &owner_path, e))?;
        let guard = PrivateDir {
            path: path.clone(),
            _owner: owner,
        };
        let mut store = Store::open(&path, opts)?;
        store.private = Some(guard);
        Ok(store)
    }

    /// The store's versioned directory (`DIR/v1`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The options the store was opened with.
    pub fn options(&self) -> StoreOptions {
        self.opts
    }

    /// The stored entry of `fingerprint` in `domain`, if there is one and
    /// it is not being evicted right now. Counts a hit. Never waits.
    pub fn get(&self, domain: &Domain, fingerprint: &Fingerprint) -> Result<Option<Entry>> {
        let d = self.domain_dir(domain);
        let e = self.open_entry(&d, domain, fingerprint)?;
        if e.is_some() {
            self.count(&d, Event::Hit);
        }
        Ok(e)
    }

    /// Counts a verification failure found outside [`Store::load`] (an
    /// image whose own content does not hash to the fingerprint of an
    /// entry already stored).
    pub fn count_verify_failure(&self, domain: &Domain) {
        let d = self.domain_dir(domain);
        if let Err(e) = self.make_domain_dirs(&d) {
            log::warn!("cannot count a verification failure: {e}");
            return;
        }
        self.count(&d, Event::VerifyFailure);
    }

    /// Stores the content of `fingerprint` in `domain`, `len` bytes read
    /// through `read(offset, buf)` (returns the bytes read, 0 at end),
    /// unless it is stored already or another process is loading it (then
    /// nothing is read and nobody waits). The content becomes visible only
    /// once its sha256 equals the fingerprint; on a mismatch nothing is
    /// stored, the failure is counted and [`Error::Mismatch`] returned.
    pub fn load(
        &self,
        domain: &Domain,
        fingerprint: &Fingerprint,
        len: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
    ) -> Result<LoadOutcome> {
        self.load_inner(Kind::Read, domain, fingerprint, len, false, read)
    }

    /// As [`Store::load`], but when another process is loading the same
    /// content, waits for it to finish (or die) instead of returning
    /// [`LoadOutcome::InProgress`]. For warming a store, not for readers.
    pub fn load_waiting(
        &self,
        domain: &Domain,
        fingerprint: &Fingerprint,
        len: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
    ) -> Result<LoadOutcome> {
        self.load_inner(Kind::Read, domain, fingerprint, len, true, read)
    }

    fn load_inner(
        &self,
        kind: Kind,
        domain: &Domain,
        fp: &Fingerprint,
        len: u64,
        wait: bool,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
    ) -> Result<LoadOutcome> {
        let d = self.domain_dir(domain);
        if let Some(e) = self.open_kind(kind, &d, domain, fp)? {
            self.count(&d, Event::Hit);
            return Ok(LoadOutcome::AlreadyStored(e));
        }
        self.make_domain_dirs(&d)?;
        let hex = kind.work_name(fp);
        let claim_path = d.claims.join(&hex);
        let claim = match Claim::acquire(&claim_path, wait) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(LoadOutcome::InProgress),
            Err(e) => return Err(Error::io("claim", &claim_path, e)),
        };
        // It may have been stored between our look and our claim.
        if let Some(e) = self.open_kind(kind, &d, domain, fp)? {
            self.count(&d, Event::Hit);
            return Ok(LoadOutcome::AlreadyStored(e));
        }
        let stored_len = kind.stored_len(len)?;
        self.reserve(&claim, stored_len)?;
        let tmp = d.tmp.join(&hex);
        let written = self
            .write_verified(&tmp, domain, fp, len, read)
            .and_then(|f| {
                // A mapped copy: zeros (a hole) up to the whole range.
                if stored_len != len {
                    f.set_len(stored_len)
                        .map_err(|e| Error::io("extend", &tmp, e))?;
                }
                Ok(f)
            });
        let len = stored_len;
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                self.unreserve(&claim, len);
                remove_quietly(&tmp);
                if let Error::Mismatch { .. } = e {
                    self.count(&d, Event::VerifyFailure);
                }
                return Err(e);
            }
        };
        let object = kind.dir(&d).join(fp.to_hex());
        let published = self.publish(&claim, &tmp, &object, len);
        remove_quietly(&tmp);
        match published {
            Ok(true) => {}
            Ok(false) => {
                // Stored by someone who ignored our claim (cannot happen
                // with this code): use theirs.
                self.unreserve(&claim, len);
                drop(file);
                return match self.open_kind(kind, &d, domain, fp)? {
                    Some(e) => Ok(LoadOutcome::AlreadyStored(e)),
                    None => Ok(LoadOutcome::InProgress),
                };
            }
            Err(e) => {
                self.unreserve(&claim, len);
                return Err(e);
            }
        }
        // Our read-write descriptor holds a shared lock, so the entry
        // cannot be evicted before its read-only descriptor holds one too.
        let entry = self.open_kind(kind, &d, domain, fp)?;
        drop(file);
        drop(claim);
        self.count(&d, Event::Load);
        match entry {
            Some(e) => Ok(LoadOutcome::Stored(e)),
            None => Err(Error::io(
                "open the entry just stored",
                &object,
                io::Error::from(io::ErrorKind::NotFound),
            )),
        }
    }

    /// Writes the content to `tmp` while hashing it; returns the file
    /// (holding a shared lock) when the hash matches.
    fn write_verified(
        &self,
        tmp: &Path,
        domain: &Domain,
        fp: &Fingerprint,
        len: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<usize>,
    ) -> Result<File> {
        // A dead loader's partial file may be there: we hold the claim.
        remove_quietly(tmp);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| Error::io("create", tmp, e))?;
        file.lock_shared().map_err(|e| Error::io("lock", tmp, e))?;
        let actual = fingerprint::stream_hashed(len, read, &mut |chunk| {
            file.write_all(chunk)
                .map_err(|e| Error::io("write", tmp, e))
        })?;
        if actual != *fp {
            return Err(Error::Mismatch {
                domain: domain.clone(),
                fingerprint: *fp,
                actual,
            });
        }
        if self.sync {
            file.sync_data().map_err(|e| Error::io("sync", tmp, e))?;
        }
        Ok(file)
    }

    /// Links the verified `tmp` as `object` under the usage lock, moving
    /// the claim's reservation to the entry. `Ok(false)`: `object` exists.
    fn publish(&self, claim: &Claim, tmp: &Path, object: &Path, len: u64) -> Result<bool> {
        let usage = self.lock_usage()?;
        match fs::hard_link(tmp, object) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(Error::io("link entry", object, e)),
        }
        // From now on the entry itself counts; the reservation is spent.
        let _ = claim.set_reserved(0);
        drop(usage);
        log::debug!("stored {len} bytes as {}", object.display());
        Ok(true)
    }

    /// Opens, share-locks and touches (for LRU) a stored entry.
    fn open_entry(
        &self,
        d: &DomainDir,
        domain: &Domain,
        fp: &Fingerprint,
    ) -> Result<Option<Entry>> {
        self.open_kind(Kind::Read, d, domain, fp)
    }

    /// [`Store::open_entry`] of either kind (a mapped copy opened
    /// read-write).
    fn open_kind(
        &self,
        kind: Kind,
        d: &DomainDir,
        domain: &Domain,
        fp: &Fingerprint,
    ) -> Result<Option<Entry>> {
        let path = kind.dir(d).join(fp.to_hex());
        let file = match OpenOptions::new()
            .read(true)
            .write(kind == Kind::Mapped)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open entry", &path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => {}
            // Being evicted right now.
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(Error::io("lock entry", &path, e)),
        }
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat entry", &path, e))?;
        if meta.nlink() == 0 {
            // Evicted between our open and our lock.
            return Ok(None);
        }
        // Least-recently-used order is the entries' mtime.
        if let Err(e) = file.set_modified(SystemTime::now()) {
            log::debug!("cannot touch {}: {e}", path.display());
        }
        Ok(Some(Entry {
            file,
            len: meta.len(),
            domain: domain.clone(),
            fingerprint: *fp,
        }))
    }

    /// Every domain's entries, bytes and counters, sorted by domain.
    pub fn stats(&self) -> Result<Vec<DomainStats>> {
        let mut out = Vec::new();
        for (domain, _) in self.domains()? {
            out.push(self.domain_stats(&domain)?);
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(out)
    }

    /// One domain's entries, bytes and counters (zeros for a domain the
    /// store has never seen). Lists the domain's entries: not for a hot
    /// path.
    pub fn domain_stats(&self, domain: &Domain) -> Result<DomainStats> {
        let d = self.domain_dir(domain);
        let (mut entries, mut bytes) = (0u64, 0u64);
        for (_, meta) in list_objects(&d.objects)? {
            entries += 1;
            bytes = bytes.saturating_add(meta.len());
        }
        let counters =
            stats::read(&d.stats).map_err(|e| Error::io("read counters", &d.stats, e))?;
        Ok(DomainStats {
            domain: domain.clone(),
            entries,
            bytes,
            counters,
        })
    }

    /// Entries this process evicted since the store was opened.
    pub fn evictions_here(&self) -> u64 {
        self.evicted_here.load(Ordering::Relaxed)
    }

    /// Bytes the store counts as used (entries plus loads in flight).
    pub fn usage(&self) -> Result<u64> {
        let u = self.lock_usage()?;
        claim::read_u64(&u.file).map_err(|e| Error::io("read usage", &u.path, e))
    }

    /// Recounts the usage from the entries and live loads, and removes
    /// what dead loaders left (partial files, claims).
    pub fn reconcile(&self) -> Result<()> {
        let usage = self.lock_usage()?;
        self.evict_locked(&usage, 0, 0).map(|_| ())
    }

    fn domains(&self) -> Result<Vec<(Domain, PathBuf)>> {
        let dir = self.root.join("domains");
        let mut out = Vec::new();
        for e in read_dir(&dir)? {
            let name = e.file_name();
            match name.to_str().and_then(Domain::from_dir_name) {
                Some(d) => out.push((d, e.path())),
                None => log::debug!("ignoring {} in the store", e.path().display()),
            }
        }
        Ok(out)
    }

    fn domain_dir(&self, domain: &Domain) -> Arc<DomainDir> {
        let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = dirs.get(domain) {
            return Arc::clone(d);
        }
        if dirs.len() >= MAX_CACHED_DOMAIN_DIRS {
            dirs.clear();
        }
        let base = self.root.join("domains").join(domain.dir_name());
        let d = Arc::new(DomainDir {
            objects: base.join("objects"),
            mapped: base.join("mapped"),
            claims: base.join("claims"),
            tmp: base.join("tmp"),
            stats: base.join("stats"),
        });
        dirs.insert(domain.clone(), Arc::clone(&d));
        d
    }

    fn make_domain_dirs(&self, d: &DomainDir) -> Result<()> {
        for p in [&d.objects, &d.mapped, &d.claims, &d.tmp] {
            mkdir_private_all(p)?;
        }
        Ok(())
    }

    fn count(&self, d: &DomainDir, e: Event) {
        if let Err(err) = stats::bump(&d.stats, e) {
            log::warn!("cannot count {e:?} in {}: {err}", d.stats.display());
        }
    }

    fn lock_usage(&self) -> Result<UsageLock> {
        let path = self.root.join("usage");
        let file = claim::open_rw_create(&path).map_err(|e| Error::io("open", &path, e))?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(UsageLock { file, path })
    }

    /// Reserves `len` bytes for the claim's load, evicting when the limit
    /// would be passed.
    fn reserve(&self, claim: &Claim, len: u64) -> Result<()> {
        let limit = self.opts.size_limit;
        let usage = self.lock_usage()?;
        let mut used = usage.get()?;
        if len > limit {
            // Evicting everything would not help (and a corrupt size must
            // not empty the store).
            return Err(Error::Full { len, used, limit });
        }
        if used.saturating_add(len) > limit {
            used = self.evict_locked(&usage, len, limit)?;
            if used.saturating_add(len) > limit {
                return Err(Error::Full { len, used, limit });
            }
        }
        claim
            .set_reserved(len)
            .map_err(|e| Error::io("record reservation", &usage.path, e))?;
        usage.set(used.saturating_add(len))
    }

    /// Gives back a failed load's reservation.
    fn unreserve(&self, claim: &Claim, len: u64) {
        let r = self.lock_usage().and_then(|usage| {
            let used = usage.get()?;
            let _ = claim.set_reserved(0);
            usage.set(used.saturating_sub(len))
        });
        if let Err(e) = r {
            log::warn!("cannot return a reservation of {len} bytes: {e}");
        }
    }

    /// Under the usage lock: recounts the usage from the entries and live
    /// claims (cleaning up after dead loaders), then evicts unused entries,
    /// least recently used first, until `incoming` more bytes fit in
    /// `limit` (`limit` 0: recount only). Returns the new usage.
    fn evict_locked(&self, usage: &UsageLock, incoming: u64, limit: u64) -> Result<u64> {
        let mut total = 0u64;
        let mut candidates = Vec::new();
        for (domain, _) in self.domains()? {
            let d = self.domain_dir(&domain);
            total = total.saturating_add(self.sweep_claims(&d)?);
            let mut objects = list_objects(&d.objects)?;
            objects.extend(list_objects(&d.mapped)?);
            for (path, meta) in objects {
                total = total.saturating_add(meta.len());
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                candidates.push((mtime, path, meta.len(), domain.clone()));
            }
        }
        if limit > 0 && total.saturating_add(incoming) > limit {
            candidates.sort_by_key(|c| c.0);
            for (_, path, size, domain) in candidates {
                if total.saturating_add(incoming) <= limit {
                    break;
                }
                if evict(&path)? {
                    total = total.saturating_sub(size);
                    self.evicted_here.fetch_add(1, Ordering::Relaxed);
                    self.count(&self.domain_dir(&domain), Event::Eviction);
                    log::debug!("evicted {} ({size} bytes)", path.display());
                }
            }
        }
        usage.set(total)?;
        Ok(total)
    }

    /// Removes dead loaders' claims and partial files in a domain; returns
    /// the bytes live loaders have reserved.
    fn sweep_claims(&self, d: &DomainDir) -> Result<u64> {
        let mut reserved = 0u64;
        // Partial files first: each belongs to the claim of the same name.
        for e in read_dir(&d.tmp)? {
            let claim_path = d.claims.join(e.file_name());
            match Claim::acquire(&claim_path, false) {
                Ok(Some(dead)) => {
                    remove_quietly(&e.path());
                    drop(dead);
                }
                Ok(None) => {}
                Err(err) => log::warn!("cannot check {}: {err}", claim_path.display()),
            }
        }
        for e in read_dir(&d.claims)? {
            match Claim::probe(&e.path()) {
                Ok(Ok(bytes)) => reserved = reserved.saturating_add(bytes),
                Ok(Err(dead)) => drop(dead),
                Err(err) => log::warn!("cannot check {}: {err}", e.path().display()),
            }
        }
        Ok(reserved)
    }
}

/// The store-wide usage count, locked.
struct UsageLock {
    file: File,
    path: PathBuf,
}

impl UsageLock {
    fn get(&self) -> Result<u64> {
        claim::read_u64(&self.file).map_err(|e| Error::io("read usage", &self.path, e))
    }

    fn set(&self, v: u64) -> Result<()> {
        claim::write_u64(&self.file, v).map_err(|e| Error::io("write usage", &self.path, e))
    }
}

/// Evicts the entry at `path` unless someone uses it. `Ok(false)`: in use
/// (or already gone).
fn evict(path: &Path) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open entry", path, e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(e)) => return Err(Error::io("lock entry", path, e)),
    }
    if !claim::same_file(&file, path).map_err(|e| Error::io("stat entry", path, e))? {
        return Ok(false);
    }
    // Unlinked while we hold the exclusive lock: whoever locks it after us
    // sees nlink 0 and treats it as gone.
    fs::remove_file(path).map_err(|e| Error::io("remove entry", path, e))?;
    Ok(true)
}

/// The entries of an objects directory (names of 64 hex digits).
fn list_objects(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let mut out = Vec::new();
    for e in read_dir(dir)? {
        let name = e.file_name();
        if name.to_str().and_then(Fingerprint::from_hex).is_none() {
            continue;
        }
        match e.metadata() {
            Ok(m) if m.is_file() => out.push((e.path(), m)),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io("stat entry", &e.path(), err)),
        }
    }
    Ok(out)
}

/// The entries of a directory; a missing directory is empty.
fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let it = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    it.map(|e| e.map_err(|err| Error::io("list", dir, err)))
        .collect()
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            log::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

/// Creates a directory with mode 0700 (fine if it exists).
fn mkdir_private(path: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create directory", path, e)),
    }
}

fn mkdir_private_all(path: &Path) -> Result<()> {
    DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

/// Refuses a store directory that someone else could change: it must be a
/// directory (not a symlink) of this user, writable by nobody else.
fn check_private(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    let unsafe_store = |what: String| Error::UnsafeStore {
        path: path.to_path_buf(),
        what,
    };
    if !meta.is_dir() {
        return Err(unsafe_store("not a directory".into()));
    }
    if let Some(uid) = fs_uid() {
        if meta.uid() != uid {
            return Err(unsafe_store(format!(
                "owned by uid {}, not by this process's uid {uid}",
                meta.uid()
            )));
        }
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(unsafe_store(format!(
            "writable by group or others (mode {:o})",
            meta.permissions().mode() & 0o7777
        )));
    }
    Ok(())
}

/// Removes private stores whose owner process is gone.
fn remove_dead_private(parent: &Path) {
    let Ok(entries) = read_dir(parent) else {
        return;
    };
    for e in entries {
        let owner = e.path().join("owner");
        let Ok(f) = File::open(&owner) else {
            continue;
        };
        if f.try_lock().is_ok() {
            log::debug!("removing dead private store {}", e.path().display());
            if let Err(err) = fs::remove_dir_all(e.path()) {
                log::warn!("cannot remove {}: {err}", e.path().display());
            }
        }
    }
}

/// The filesystem uid of this process (owner of the files it creates).
fn fs_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    // Real, effective, saved set, filesystem.
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Whether `path` lies on tmpfs or ramfs (entries live in RAM and vanish
/// with the machine, so they need no sync before they are published).
fn on_memory_fs(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let mut best: Option<(usize, bool)> = None;
    for line in info.lines() {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let Some(mnt) = left.split(' ').nth(4) else {
            continue;
        };
        let mnt = unescape_mountinfo(mnt);
        let fstype = right.split(' ').next().unwrap_or("");
        if path.starts_with(&mnt) {
            let depth = Path::new(&mnt).components().count();
            // Later lines are mounted on top of earlier ones.
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, fstype == "tmpfs" || fstype == "ramfs"));
            }
        }
    }
    best.is_some_and(|(_, mem)| mem)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

#[path = "store_mapped.rs"]
mod mapped;
pub use mapped::{Kind, MAPPED_ALIGN};
