//! The read-only FUSE server: one request in, at most one reply out, over an
//! `Arc<Image>`, independent of the transport.
//!
//! [`Server::handle`] takes the raw bytes of one request (header included)
//! and answers through a [`ReplySink`]. It keeps the session state (INIT,
//! node lookup counts, open handles) behind locks, so any number of
//! transport threads may call it at once.
//!
//! Node ids: the root is [`abi::ROOT_ID`]; every other inode is `nid + 2`
//! (ids 0 and 1 are taken, and nid 0 is a valid inode), so a real nid never
//! collides with the root. `st_ino` is what the kernel's EROFS driver
//! reports for the nid.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use foldhash::fast::RandomState;

use zerocopy::{Immutable, IntoBytes};

use super::abi::{self, *};
use super::nodes::{Handle, HandleTable, NodeTable};
use super::push::{Pusher, SMALL_READ};
use super::request::{parse_header, BatchForget, Op};
use super::sink::{out_header, Errno, ReplySink};
use super::splice::MAX_SPANS;
use crate::erofs::{ondisk, Image, Inode, InodeKind};

/// How long the kernel may trust what it was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// No caching: zero timeouts and direct I/O (every read reaches us).
    Never,
    /// Short timeouts (1 s); the page cache is dropped on open.
    Auto,
    /// Long timeouts, data and directory listings kept across opens (the
    /// image never changes).
    #[default]
    Always,
}

/// Attribute and entry timeout under [`CachePolicy::Always`] (one year).
pub const LONG_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// Default largest READ: 1 MiB (256 pages).
pub const DEFAULT_MAX_READ: u32 = 1 << 20;

/// Default cap on open handles.
pub const DEFAULT_MAX_HANDLES: usize = 1 << 16;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Caching policy.
    pub cache: CachePolicy,
    /// Largest READ (and READDIR) size accepted; also what INIT offers as
    /// `max_pages` (in 4 KiB pages).
    pub max_read: u32,
    /// Most handles open at once (ENFILE beyond).
    pub max_handles: usize,
    /// Background requests the kernel may have in flight (readahead).
    pub max_background: u16,
    /// Ask for FUSE over io_uring at INIT (the transport has its rings
    /// ready and will register them once INIT is answered).
    pub io_uring: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            cache: CachePolicy::default(),
            max_read: DEFAULT_MAX_READ,
            max_handles: DEFAULT_MAX_HANDLES,
            max_background: 64,
            io_uring: false,
        }
    }
}

/// Reads at least this long are spliced when they can be: shorter ones
/// cost fewer system calls with pread + writev.
const SPLICE_MIN: usize = 32 << 10;

/// Failure of one operation: an errno for the reply, or the transport's own
/// error (passed up).
#[derive(Debug)]
pub(crate) enum Fail {
    Errno(i32),
    Io(io::Error),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Errno(e.0)
    }
}

impl From<crate::erofs::Error> for Fail {
    fn from(e: crate::erofs::Error) -> Self {
        Fail::Errno(e.errno())
    }
}

pub(crate) type OpResult = Result<(), Fail>;

/// The read-only FUSE server of one image.
#[derive(Debug)]
pub struct Server {
    pub(crate) img: Arc<Image>,
    pub(crate) opts: ServerOptions,
    pub(crate) root: Arc<Inode>,
    /// Negotiated minor version; 0 before INIT.
    minor: AtomicU32,
    /// The kernel supports zero-message opens and we use them.
    no_open: AtomicBool,
    /// The same for directories.
    no_opendir: AtomicBool,
    /// INIT agreed on FUSE over io_uring.
    over_io_uring: AtomicBool,
    pub(crate) nodes: NodeTable,
    pub(crate) handles: HandleTable,
    errors_logged: AtomicU32,
    /// Pushes decoded pages nobody read yet into the page cache (set by a
    /// `/dev/fuse` transport).
    pusher: OnceLock<Pusher>,
    /// Per directory (nid), the listing position of the file a reader going
    /// through it in order reads next (see `follow_listing`).
    pub(crate) dir_streams: Mutex<HashMap<u64, u64, RandomState>>,
}

/// How many image errors are logged to stderr (then they are only counted).
const MAX_LOGGED_ERRORS: u32 = 100;

impl Server {
    /// A server for `img`; fails if the root inode cannot be decoded.
    pub fn new(img: Arc<Image>, opts: ServerOptions) -> crate::erofs::Result<Self> {
        let root = Arc::new(img.inode(img.root_nid())?);
        if !root.is_dir() {
            return Err(crate::erofs::Error::corrupt(
                Some(root.nid),
                root.loc,
                "root inode",
                "not a directory",
            ));
        }
        Ok(Self {
            img,
            handles: HandleTable::new(opts.max_handles),
            opts,
            root,
            minor: AtomicU32::new(0),
            no_open: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
            over_io_uring: AtomicBool::new(false),
            nodes: NodeTable::new(),
            errors_logged: AtomicU32::new(0),
            pusher: OnceLock::new(),
            dir_streams: Mutex::new(HashMap::default()),
        })
    }

    /// The image served.
    pub fn image(&self) -> &Arc<Image> {
        &self.img
    }

    /// Starts pushing data nobody read yet into the page cache (the rest of
    /// each decoded extent after a small read of compressed data, the next
    /// small files of a directory read in order; see [`Pusher`]), through
    /// `fd`, a descriptor of the mount's `/dev/fuse` connection. Only with
    /// [`CachePolicy::Always`] (otherwise, or when already started, it does
    /// nothing and returns `Ok(false)`).
    pub fn start_pushing(&self, fd: OwnedFd) -> io::Result<bool> {
        if self.opts.cache != CachePolicy::Always || self.pusher.get().is_some() {
            return Ok(false);
        }
        let p = Pusher::start(Arc::clone(&self.img), fd)?;
        Ok(self.pusher.set(p).is_ok())
    }

    /// Stops pushing (the pushing thread ends).
    pub fn stop_pushing(&self) {
        if let Some(p) = self.pusher.get() {
            p.close();
        }
    }

    /// Whether INIT agreed on FUSE over io_uring (requests then arrive on
    /// the transport's rings once they are registered).
    pub fn over_io_uring(&self) -> bool {
        self.over_io_uring.load(Ordering::Acquire)
    }

    /// Whether INIT has been answered.
    pub fn initialized(&self) -> bool {
        self.minor.load(Ordering::Acquire) != 0
    }

    /// Nodes the kernel holds (the root not counted).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Lookup count of a node id (0 when unknown; the root is not counted).
    pub fn lookup_count(&self, nodeid: u64) -> u64 {
        self.nodes.lookups(nodeid)
    }

    /// Handles open.
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    /// Handles one request (`req`: the whole message, header included) and
    /// sends its reply, if it gets one, to `sink`. Malformed requests get an
    /// error reply (EINVAL, or EIO before INIT); nothing here panics on any
    /// input. Returns only the sink's own errors.
    pub fn handle(&self, req: &[u8], sink: &mut dyn ReplySink) -> io::Result<()> {
        let (hdr, args) = match parse_header(req) {
            Ok(x) => x,
            Err(e) => return send_err(sink, e.unique.unwrap_or(0), e.error.errno()),
        };
        let op = match Op::decode(hdr.opcode, args) {
            Ok(op) => op,
            Err(e) => return send_err(sink, hdr.unique, e.errno()),
        };
        if !op.wants_reply() {
            if self.initialized() {
                self.no_reply(&hdr, &op);
            }
            return Ok(());
        }
        let r = if !self.initialized() && !matches!(op, Op::Init(_)) {
            Err(Fail::Errno(libc::EIO))
        } else {
            self.dispatch(&hdr, op, sink)
        };
        match r {
            Ok(()) => Ok(()),
            Err(Fail::Errno(e)) => send_err(sink, hdr.unique, e),
            Err(Fail::Io(e)) => Err(e),
        }
    }

    fn no_reply(&self, h: &InHeader, op: &Op<'_>) {
        match op {
            Op::Forget(f) => self.nodes.forget(h.nodeid, f.nlookup),
            Op::BatchForget(b) => self.batch_forget(b),
            _ => {}
        }
    }

    fn dispatch(&self, h: &InHeader, op: Op<'_>, sink: &mut dyn ReplySink) -> OpResult {
        match op {
            Op::Init(i) => self.init(h, &i, sink),
            Op::Lookup(name) => self.lookup(h, name, sink),
            Op::Getattr(_) => self.getattr(h, sink),
            Op::Statx(_) => self.statx(h, sink),
            Op::Readlink => self.readlink(h, sink),
            Op::Open(o) => self.open(h, &o, false, sink),
            Op::Opendir(o) => self.open(h, &o, true, sink),
            Op::Read(r) => self.read(h, &r, sink),
            Op::Release(r) | Op::Releasedir(r) => self.release(h, r.fh, sink),
            Op::Readdir(r) => self.readdir(h, &r, false, sink),
            Op::Readdirplus(r) => self.readdir(h, &r, true, sink),
            Op::Statfs => self.statfs(h, sink),
            Op::Getxattr(size, name) => self.getxattr(h, size, name, sink),
            Op::Listxattr(size) => self.listxattr(h, size, sink),
            Op::Access(a) => self.access(h, a.mask, sink),
            Op::Flush(_) => self.flush(h, sink),
            Op::Fsync(_) | Op::Fsyncdir(_) | Op::Syncfs => send_ok(sink, h.unique),
            Op::Lseek(l) => self.lseek(h, &l, sink),
            Op::Destroy => self.destroy(h, sink),
            Op::Mutating(_) => Err(Fail::Errno(libc::EROFS)),
            Op::Unsupported(_) => Err(Fail::Errno(libc::ENOSYS)),
            // Handled by `no_reply`.
            Op::Forget(_) | Op::BatchForget(_) | Op::Interrupt(_) | Op::Ignored(_) => Ok(()),
        }
    }

    // -----------------------------------------------------------------
    // Helpers.

    /// Logs an image error (the first [`MAX_LOGGED_ERRORS`]) and turns it
    /// into its errno.
    pub(crate) fn image_error(&self, what: &str, e: &crate::erofs::Error) -> Fail {
        let n = self.errors_logged.fetch_add(1, Ordering::Relaxed);
        if n < MAX_LOGGED_ERRORS {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("erofs-virtiofsd: {what}: {e}\n"),
            );
        }
        Fail::Errno(e.errno())
    }

    /// Node id of `nid`.
    pub(crate) fn nodeid_of(&self, nid: u64) -> Option<u64> {
        if nid == self.root.nid {
            Some(abi::ROOT_ID)
        } else {
            nid.checked_add(2)
        }
    }

    /// `st_ino` of `nid`, as the kernel's EROFS driver reports it
    /// (`erofs_nid_to_ino64`: nids of metabox images are folded so the
    /// metabox bit lands on bit 31).
    pub(crate) fn st_ino(&self, nid: u64) -> u64 {
        if self.img.superblock().metabox_nid.is_none() {
            return nid;
        }
        ((nid << 1) & 0xffff_ffff_0000_0000)
            | (nid & 0x7fff_ffff)
            | ((nid >> ondisk::NID_METABOX_BIT.trailing_zeros()) << 31)
    }

    /// The inode of a node the kernel holds; ESTALE for ids never handed
    /// out (or forgotten).
    pub(crate) fn node(&self, nodeid: u64) -> Result<Arc<Inode>, Fail> {
        if nodeid == abi::ROOT_ID {
            return Ok(Arc::clone(&self.root));
        }
        self.nodes.get(nodeid).ok_or(Fail::Errno(libc::ESTALE))
    }

    /// The inode of `nid`: from the node table when the kernel holds it,
    /// else decoded.
    pub(crate) fn inode_of(&self, nid: u64) -> Result<Arc<Inode>, crate::erofs::Error> {
        if let Some(i) = self.nodeid_of(nid).and_then(|id| self.node(id).ok()) {
            if i.nid == nid {
                return Ok(i);
            }
        }
        self.img.inode(nid).map(Arc::new)
    }

    /// (seconds, nanoseconds) the kernel may cache entries and attributes.
    pub(crate) fn timeout(&self) -> (u64, u32) {
        match self.opts.cache {
            CachePolicy::Never => (0, 0),
            CachePolicy::Auto => (1, 0),
            CachePolicy::Always => (LONG_TIMEOUT_SECS, 0),
        }
    }

    /// FUSE attributes of an inode, field for field what the kernel's EROFS
    /// driver reports (atime and ctime are the mtime).
    pub(crate) fn attr(&self, i: &Inode) -> Attr {
        let bits = self.img.blkszbits();
        // Casting i64 to u64 keeps the two's complement bits, which the
        // kernel reads back as a signed time.
        let mtime = i.mtime as u64;
        Attr {
            ino: self.st_ino(i.nid),
            size: i.size,
            blocks: i.blocks_512(bits),
            atime: mtime,
            mtime,
            ctime: mtime,
            atimensec: i.mtime_nsec,
            mtimensec: i.mtime_nsec,
            ctimensec: i.mtime_nsec,
            mode: i.mode,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            rdev: i.rdev,
            blksize: 1u32.checked_shl(u32::from(bits)).unwrap_or(4096),
            flags: 0,
        }
    }

    /// The entry reply for `inode`, counting one lookup of it.
    pub(crate) fn entry(&self, inode: &Arc<Inode>) -> Result<EntryOut, Fail> {
        let nodeid = self.nodeid_of(inode.nid).ok_or(Fail::Errno(libc::EIO))?;
        if nodeid != abi::ROOT_ID {
            self.nodes.add_lookup(nodeid, inode);
        }
        let (secs, nsecs) = self.timeout();
        Ok(EntryOut {
            nodeid,
            generation: 0,
            entry_valid: secs,
            attr_valid: secs,
            entry_valid_nsec: nsecs,
            attr_valid_nsec: nsecs,
            attr: self.attr(inode),
        })
    }

    // -----------------------------------------------------------------
    // Session.

    fn init(&self, h: &InHeader, i: &InitIn, sink: &mut dyn ReplySink) -> OpResult {
        if self.initialized() {
            return Err(Fail::Errno(libc::EIO));
        }
        if i.major < KERNEL_VERSION {
            return Err(Fail::Errno(libc::EPROTO));
        }
        if i.major > KERNEL_VERSION {
            // Tell the kernel our major; it sends INIT again with it.
            let out = InitOut {
                major: KERNEL_VERSION,
                minor: KERNEL_MINOR_VERSION,
                ..Default::default()
            };
            return send(sink, h.unique, &out);
        }
        if i.minor < MIN_MINOR_VERSION {
            return Err(Fail::Errno(libc::EPROTO));
        }
        let mut kernel = u64::from(i.flags);
        if kernel & INIT_EXT != 0 {
            kernel |= u64::from(i.flags2) << 32;
        }
        let mut want = ASYNC_READ
            | PARALLEL_DIROPS
            | MAX_PAGES
            | DO_READDIRPLUS
            | ASYNC_DIO
            | POSIX_ACL
            | INIT_EXT;
        // Always READDIRPLUS with cached attributes: the kernel's "auto" mode
        // sends plain READDIR after a directory's first request and then a
        // LOOKUP per entry for `ls -l` / `find -ls`. Attributes never change,
        // so entries read with plus are never wasted.
        match self.opts.cache {
            CachePolicy::Never => want |= DIRECT_IO_ALLOW_MMAP | READDIRPLUS_AUTO,
            CachePolicy::Auto => want |= CACHE_SYMLINKS | READDIRPLUS_AUTO,
            CachePolicy::Always => want |= CACHE_SYMLINKS | NO_OPEN_SUPPORT | NO_OPENDIR_SUPPORT,
        }
        if self.opts.io_uring {
            want |= OVER_IO_URING;
        }
        let flags = want & kernel;
        self.over_io_uring
            .store(flags & OVER_IO_URING != 0, Ordering::Release);
        self.no_open
            .store(flags & NO_OPEN_SUPPORT != 0, Ordering::Release);
        self.no_opendir
            .store(flags & NO_OPENDIR_SUPPORT != 0, Ordering::Release);
        let pages = (self.opts.max_read / 4096).clamp(1, u32::from(u16::MAX));
        let bg = self.opts.max_background.max(1);
        let out = InitOut {
            major: KERNEL_VERSION,
            minor: i.minor.min(KERNEL_MINOR_VERSION),
            max_readahead: i.max_readahead,
            // The support bits are what the kernel offers, not flags to set.
            flags: (flags & !(NO_OPEN_SUPPORT | NO_OPENDIR_SUPPORT)) as u32,
            max_background: bg,
            congestion_threshold: bg.saturating_mul(3) / 4,
            max_write: 4096,
            time_gran: 1,
            max_pages: u16::try_from(pages).unwrap_or(u16::MAX),
            map_alignment: 0,
            flags2: (flags >> 32) as u32,
            ..Default::default()
        };
        // Initialized before the reply goes out: the kernel sends the
        // requests it held back as soon as it has the reply, and another
        // thread may read one before this one returns.
        self.minor.store(out.minor, Ordering::Release);
        let r = send(sink, h.unique, &out);
        if r.is_err() {
            self.minor.store(0, Ordering::Release);
        }
        r
    }

    fn destroy(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        self.nodes.clear();
        self.handles.clear();
        self.minor.store(0, Ordering::Release);
        send_ok(sink, h.unique)
    }

    // -----------------------------------------------------------------
    // Nodes.

    fn lookup(&self, h: &InHeader, name: &[u8], sink: &mut dyn ReplySink) -> OpResult {
        let dir = self.node(h.nodeid)?;
        if !dir.is_dir() {
            return Err(Fail::Errno(libc::ENOTDIR));
        }
        if name.len() > ondisk::NAME_LEN {
            return Err(Fail::Errno(libc::ENAMETOOLONG));
        }
        let found = self
            .img
            .lookup(&dir, name)
            .map_err(|e| self.image_error("lookup", &e))?;
        let Some((nid, _)) = found else {
            let (secs, nsecs) = self.timeout();
            if secs == 0 && nsecs == 0 {
                return Err(Fail::Errno(libc::ENOENT));
            }
            // A negative entry the kernel may cache.
            let out = EntryOut {
                entry_valid: secs,
                entry_valid_nsec: nsecs,
                ..Default::default()
            };
            return send(sink, h.unique, &out);
        };
        let inode = self
            .inode_of(nid)
            .map_err(|e| self.image_error("lookup", &e))?;
        let out = self.entry(&inode)?;
        send(sink, h.unique, &out)
    }

    fn batch_forget(&self, b: &BatchForget<'_>) {
        for f in b.iter() {
            self.nodes.forget(f.nodeid, f.nlookup);
        }
    }

    fn getattr(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        let inode = self.node(h.nodeid)?;
        let (secs, nsecs) = self.timeout();
        let out = AttrOut {
            attr_valid: secs,
            attr_valid_nsec: nsecs,
            dummy: 0,
            attr: self.attr(&inode),
        };
        send(sink, h.unique, &out)
    }

    fn statx(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        if self.minor.load(Ordering::Acquire) < 39 {
            return Err(Fail::Errno(libc::ENOSYS));
        }
        let inode = self.node(h.nodeid)?;
        let a = self.attr(&inode);
        let (secs, nsecs) = self.timeout();
        let t = SxTime {
            tv_sec: inode.mtime,
            tv_nsec: inode.mtime_nsec,
            reserved: 0,
        };
        let mut attributes = STATX_ATTR_IMMUTABLE;
        if inode.is_compressed() {
            attributes |= STATX_ATTR_COMPRESSED;
        }
        let out = StatxOut {
            attr_valid: secs,
            attr_valid_nsec: nsecs,
            flags: 0,
            spare: [0; 2],
            stat: Statx {
                mask: STATX_BASIC_STATS,
                blksize: a.blksize,
                attributes,
                nlink: a.nlink,
                uid: a.uid,
                gid: a.gid,
                mode: (a.mode & 0xffff) as u16,
                ino: a.ino,
                size: a.size,
                blocks: a.blocks,
                attributes_mask: STATX_ATTR_IMMUTABLE | STATX_ATTR_COMPRESSED,
                atime: t,
                ctime: t,
                mtime: t,
                rdev_major: inode.rdev_major(),
                rdev_minor: inode.rdev_minor(),
                ..Default::default()
            },
        };
        send(sink, h.unique, &out)
    }

    fn readlink(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        let inode = self.node(h.nodeid)?;
        if inode.kind != InodeKind::Symlink {
            return Err(Fail::Errno(libc::EINVAL));
        }
        let target = self
            .img
            .readlink(&inode)
            .map_err(|e| self.image_error("readlink", &e))?;
        send_bytes(sink, h.unique, &[&target])
    }

    fn statfs(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        let sb = self.img.superblock();
        let blocks = self
            .img
            .devices()
            .iter()
            .fold(sb.blocks, |acc, d| acc.saturating_add(d.blocks));
        let bsize = u32::try_from(sb.block_size()).unwrap_or(4096);
        let out = StatfsOut {
            st: Kstatfs {
                blocks,
                bfree: 0,
                bavail: 0,
                files: u64::MAX,
                ffree: u64::MAX.saturating_sub(sb.inos),
                bsize,
                namelen: ondisk::NAME_LEN as u32,
                frsize: bsize,
                padding: 0,
                spare: [0; 6],
            },
        };
        send(sink, h.unique, &out)
    }

    fn access(&self, h: &InHeader, mask: u32, sink: &mut dyn ReplySink) -> OpResult {
        let inode = self.node(h.nodeid)?;
        let mask = mask & 7;
        if mask & 2 != 0 {
            return Err(Fail::Errno(libc::EROFS));
        }
        if !may_access(&inode, h.uid, h.gid, mask) {
            return Err(Fail::Errno(libc::EACCES));
        }
        send_ok(sink, h.unique)
    }

    // -----------------------------------------------------------------
    // Files.

    fn open(&self, h: &InHeader, o: &OpenIn, dir: bool, sink: &mut dyn ReplySink) -> OpResult {
        let inode = self.node(h.nodeid)?;
        let acc = o.flags & libc::O_ACCMODE as u32;
        if acc != libc::O_RDONLY as u32 || o.flags & libc::O_TRUNC as u32 != 0 {
            return Err(Fail::Errno(libc::EROFS));
        }
        if dir != inode.is_dir() {
            return Err(Fail::Errno(if dir { libc::ENOTDIR } else { libc::EISDIR }));
        }
        if self.zero_message_open(dir) {
            // Zero-message opens: the kernel then keeps the page cache and
            // directory cache by itself and sends no RELEASE.
            return Err(Fail::Errno(libc::ENOSYS));
        }
        let fh = self
            .handles
            .insert(Handle { inode, dir })
            .ok_or(Fail::Errno(libc::ENFILE))?;
        let mut open_flags = FOPEN_NOFLUSH;
        match self.opts.cache {
            CachePolicy::Never if !dir => open_flags |= FOPEN_DIRECT_IO,
            CachePolicy::Never | CachePolicy::Auto => {}
            CachePolicy::Always => open_flags |= FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR,
        }
        if !dir && o.flags & libc::O_DIRECT as u32 != 0 {
            // The opener asked to bypass caches: honour it whatever the
            // mount's policy (each read reaches us, nothing is cached).
            open_flags = (open_flags & !FOPEN_KEEP_CACHE) | FOPEN_DIRECT_IO;
        }
        let out = OpenOut {
            fh,
            open_flags,
            backing_id: 0,
        };
        if let Err(e) = send(sink, h.unique, &out) {
            self.handles.remove(fh);
            return Err(e);
        }
        Ok(())
    }

    fn release(&self, h: &InHeader, fh: u64, sink: &mut dyn ReplySink) -> OpResult {
        self.handles.remove(fh);
        send_ok(sink, h.unique)
    }

    fn flush(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        if self.no_open.load(Ordering::Acquire) {
            // Without OPEN there is no FOPEN_NOFLUSH to stop these; ENOSYS
            // makes the kernel stop sending them.
            return Err(Fail::Errno(libc::ENOSYS));
        }
        send_ok(sink, h.unique)
    }

    /// Whether OPEN (or OPENDIR) is answered ENOSYS so that the kernel
    /// opens without a message (it offered to).
    fn zero_message_open(&self, dir: bool) -> bool {
        if dir {
            self.no_opendir.load(Ordering::Acquire)
        } else {
            self.no_open.load(Ordering::Acquire)
        }
    }

    /// The inode a READ/READDIR/LSEEK is about: the handle's when `fh` is
    /// set, else (zero-message opens) the node's.
    pub(crate) fn file(&self, h: &InHeader, fh: u64, dir: bool) -> Result<Arc<Inode>, Fail> {
        if fh == 0 && self.zero_message_open(dir) {
            return self.node(h.nodeid);
        }
        match self.handles.get(fh) {
            Some(hd) if hd.dir == dir => Ok(hd.inode),
            _ => Err(Fail::Errno(libc::EBADF)),
        }
    }

    fn read(&self, h: &InHeader, r: &ReadIn, sink: &mut dyn ReplySink) -> OpResult {
        if r.size > self.opts.max_read {
            return Err(Fail::Errno(libc::EINVAL));
        }
        let inode = self.file(h, r.fh, false)?;
        if inode.kind != InodeKind::File {
            return Err(Fail::Errno(libc::EINVAL));
        }
        let left = inode.size.saturating_sub(r.offset);
        let len = u64::from(r.size).min(left);
        let len = usize::try_from(len).unwrap_or(0);
        let img = &self.img;
        // Counted before the reply goes out: once the reader has its data it
        // may send the next READ, which another worker may take before this
        // one gets on, and read-around must see the reads in their order.
        let misses = self
            .pusher
            .get()
            .and_then(|p| p.count_small_read(h.nodeid, &inode, len as u64));
        if len >= SPLICE_MIN && sink.can_splice() {
            // Uncompressed data straight from the image file's page cache;
            // anything else (or any doubt) takes the copying path below.
            if let Ok(Some(spans)) = img.plain_spans(&inode, r.offset, len, MAX_SPANS) {
                if sink.send_spans(h.unique, &spans)? {
                    self.after_read(h.nodeid, &inode, r.offset, len as u64, misses);
                    return Ok(());
                }
            }
        }
        let mut fill = |buf: &mut [u8], pos: usize| -> Result<usize, Errno> {
            let off = r.offset.saturating_add(pos as u64);
            img.read(&inode, off, buf)
                .map_err(|e| match self.image_error("read", &e) {
                    Fail::Errno(n) => Errno(n),
                    Fail::Io(_) => Errno(libc::EIO),
                })
        };
        sink.send_with(h.unique, len, &mut fill)?;
        self.after_read(h.nodeid, &inode, r.offset, len as u64, misses);
        Ok(())
    }

    /// After a READ of `offset..offset + len` of `inode` (node `nodeid`)
    /// was answered, by either path: offers the pushes it calls for (the
    /// rest of a decoded extent, the window around a small read, the next
    /// files of a directory read in order). `misses`: the read's count from
    /// [`Pusher::count_small_read`].
    fn after_read(
        &self,
        nodeid: u64,
        inode: &Arc<Inode>,
        offset: u64,
        len: u64,
        misses: Option<u64>,
    ) {
        let Some(p) = self.pusher.get() else {
            return;
        };
        if len < SMALL_READ {
            if inode.is_compressed() {
                if let Ok(Some(range)) = self.img.decoded_range(inode, offset, len) {
                    p.offer(nodeid, inode, offset, len, range);
                }
            } else if let Some(misses) = misses {
                p.read_around(nodeid, inode, offset, len, misses);
            }
        }
        if offset == 0 {
            self.follow_listing(p, nodeid);
        }
    }

    fn lseek(&self, h: &InHeader, l: &LseekIn, sink: &mut dyn ReplySink) -> OpResult {
        let inode = match self.file(h, l.fh, false) {
            Ok(i) => i,
            Err(_) => self.node(h.nodeid)?,
        };
        if inode.kind != InodeKind::File {
            return Err(Fail::Errno(libc::EINVAL));
        }
        let whence = i32::try_from(l.whence).unwrap_or(-1);
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return Err(Fail::Errno(libc::EINVAL));
        }
        if i64::try_from(l.offset).is_err() || l.offset >= inode.size {
            return Err(Fail::Errno(libc::ENXIO));
        }
        let pos = if whence == libc::SEEK_DATA {
            self.img
                .seek_data(&inode, l.offset)
                .map_err(|e| self.image_error("lseek", &e))?
                .ok_or(Fail::Errno(libc::ENXIO))?
        } else {
            self.img
                .seek_hole(&inode, l.offset)
                .map_err(|e| self.image_error("lseek", &e))?
        };
        send(sink, h.unique, &LseekOut { offset: pos })
    }
}

/// POSIX permission check of `mask` (R=4, X=1) for a caller.
fn may_access(inode: &Inode, uid: u32, gid: u32, mask: u32) -> bool {
    if mask == 0 {
        return true;
    }
    let mode = inode.mode;
    if uid == 0 {
        // Root may read anything and execute what someone may execute.
        return mask & 1 == 0 || inode.is_dir() || mode & 0o111 != 0;
    }
    let bits = if uid == inode.uid {
        (mode >> 6) & 7
    } else if gid == inode.gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & mask == mask
}

/// Sends a fixed-size reply.
pub(crate) fn send<T: IntoBytes + Immutable>(
    sink: &mut dyn ReplySink,
    unique: u64,
    body: &T,
) -> OpResult {
    send_bytes(sink, unique, &[body.as_bytes()])
}

/// Sends a reply made of `parts`.
pub(crate) fn send_bytes(sink: &mut dyn ReplySink, unique: u64, parts: &[&[u8]]) -> OpResult {
    let len = parts.iter().fold(0usize, |a, p| a.saturating_add(p.len()));
    sink.send(&out_header(unique, 0, len), parts)?;
    Ok(())
}

/// Sends an empty success reply.
pub(crate) fn send_ok(sink: &mut dyn ReplySink, unique: u64) -> OpResult {
    send_bytes(sink, unique, &[])
}

/// Sends an error reply.
fn send_err(sink: &mut dyn ReplySink, unique: u64, errno: i32) -> io::Result<()> {
    sink.send(&out_header(unique, errno, 0), &[])
}
