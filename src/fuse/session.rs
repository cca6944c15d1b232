//! One connection's FUSE session: one request in, at most one reply out,
//! independent of the transport.
//!
//! [`Session::handle`] takes the raw bytes of one request (header included)
//! and answers through a [`ReplySink`]. It keeps the connection's state
//! (INIT, node lookup counts, open handles, directory reading positions)
//! behind locks, so any number of transport threads may call it at once.
//! What every connection sees the same (the images, the options) is the
//! [`Share`] it points at; what the transport can send besides replies
//! (page-cache pushes) goes through its [`Outbound`].
//!
//! Framing and what happens before INIT are decided here for every
//! transport: a request that cannot be decoded gets EINVAL (with its
//! `unique` when it has one), anything but INIT before INIT gets EIO, and
//! INIT first opens what the share opens late ([`Share::opened_at_init`]).
//!
//! Node ids: the root is [`abi::ROOT_ID`]. In a share whose root is one
//! image, every other inode is `nid + 2` (ids 0 and 1 are taken, and nid 0
//! is a valid inode), so a real nid never collides with the root, and
//! `st_ino` is what the kernel's EROFS driver reports for the nid. In a
//! share of named images the root is synthetic (`super::rootdir`), ids are
//! handed out per (image, nid) and never reused (`super::nodes`), and
//! `st_ino` carries the image's slot (`super::images`).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use log::warn;

use super::abi::{self, *};
use super::dax::{Dax, DaxCounts};
use super::images::ShareImage;
use super::nodes::{Handle, HandleTable, Listed, NodeTable, Target};
use super::outbound::Outbound;
use super::passthrough::{OpenMode, Passthrough};
use super::push::{Pusher, SMALL_READ};
use super::reply::{send, send_bytes, send_err, send_ok, Fail, OpResult};
use super::request::{parse_header, BatchForget, Op, Removemapping};
use super::share::{CachePolicy, Share, LONG_TIMEOUT_SECS};
use super::sink::{Errno, ReplySink};
use super::splice::{MAX_SPANS, SPLICE_MIN};
use super::stored;
use crate::erofs::{ondisk, Inode, InodeKind};
use crate::metrics::ImageMetrics;

/// What one request counts in the metrics.
#[derive(Default)]
struct Tally {
    opcode: u32,
    /// Bytes of file data in the reply.
    bytes: u64,
    /// The errno of its reply (0: success).
    errno: i32,
    /// The image it read, when it has its own counters.
    image: Option<Arc<ImageMetrics>>,
}

/// The FUSE session of one connection to a [`Share`].
#[derive(Debug)]
pub struct Session {
    pub(crate) share: Arc<Share>,
    /// What the transport sends besides replies.
    out: Arc<dyn Outbound>,
    /// Ask for FUSE over io_uring at INIT.
    io_uring: bool,
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
    /// Pushes data nobody read yet into the client's page cache (when the
    /// transport can and the cache is kept).
    pusher: Option<Pusher>,
    /// The root's node in a share whose root is an image (once open).
    root_target: OnceLock<Target>,
    /// Per directory (image serial, nid), the listing position of the file
    /// a reader going through it in order reads next (see
    /// `follow_listing`).
    pub(crate) dir_streams: Mutex<HashMap<(u64, u64), u64, RandomState>>,
    /// DAX mappings, when the transport has a window and the share maps
    /// (see [`super::dax`]).
    dax: Option<Dax>,
    /// Backing files of passthrough opens.
    pt: Passthrough,
}

impl Session {
    /// A session of `share` over a transport that sends `out` besides
    /// replies. When the transport can store pages and the share keeps the
    /// page cache ([`CachePolicy::Always`]), a thread pushes data nobody
    /// read yet (the rest of each decoded extent after a small read of
    /// compressed data, the next small files of a directory read in order;
    /// see [`Pusher`]); it ends with the session.
    pub fn new(share: Arc<Share>, out: Arc<dyn Outbound>) -> Self {
        let pusher = if out.can_store() && share.options().cache == CachePolicy::Always {
            match Pusher::start(Arc::clone(&out)) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!("no page cache pushing: {e}");
                    None
                }
            }
        } else {
            None
        };
        share.register(&out);
        let dax = Dax::new(
            out.dax_window(),
            share.options().dax,
            Some(Arc::clone(share.metrics())),
        );
        Self {
            dax,
            handles: HandleTable::new(share.options().max_handles),
            nodes: NodeTable::new(share.is_named(), share.options().max_nodes),
            share,
            out,
            io_uring: false,
            minor: AtomicU32::new(0),
            no_open: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
            over_io_uring: AtomicBool::new(false),
            pusher,
            root_target: OnceLock::new(),
            dir_streams: Mutex::new(HashMap::default()),
            pt: Passthrough::default(),
        }
    }

    /// Asks for FUSE over io_uring at INIT (the transport has its rings
    /// ready and registers them once INIT is answered).
    pub fn with_io_uring(mut self, on: bool) -> Self {
        self.io_uring = on;
        self
    }

    /// The share served.
    pub fn share(&self) -> &Arc<Share> {
        &self.share
    }

    /// What the transport sends besides replies.
    pub fn outbound(&self) -> &Arc<dyn Outbound> {
        &self.out
    }

    /// Stops pushing (the pushing thread ends once its queue is empty).
    pub fn stop_pushing(&self) {
        if let Some(p) = &self.pusher {
            p.close();
        }
    }

    /// Whether INIT agreed on FUSE over io_uring (requests then arrive on
    /// the transport's rings once they are registered).
    pub fn over_io_uring(&self) -> bool {
        self.over_io_uring.load(Ordering::Acquire)
    }

    /// The negotiated minor version (0 before INIT).
    pub(crate) fn minor(&self) -> u32 {
        self.minor.load(Ordering::Acquire)
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

    /// Forgets the DAX mappings as INIT does (tests).
    #[cfg(test)]
    pub(crate) fn dax_reset_for_tests(&self) {
        if let Some(d) = &self.dax {
            d.reset(self.out.as_ref(), false);
        }
    }

    /// What the DAX path did (`None` without DAX).
    pub fn dax_counts(&self) -> Option<DaxCounts> {
        self.dax.as_ref().map(Dax::counts)
    }

    /// Handles one request (`req`: the whole message, header included;
    /// bytes past its `len` are ignored) and sends its reply, if it gets
    /// one, to `sink`. Malformed requests get an error reply (EINVAL, or
    /// EIO before INIT); nothing here panics on any input. Returns only the
    /// sink's own errors.
    pub fn handle(&self, req: &[u8], sink: &mut dyn ReplySink) -> io::Result<()> {
        let start = Instant::now();
        let mut tally = Tally::default();
        let r = self.handle_counted(req, sink, &mut tally);
        self.count(&tally, start.elapsed());
        r
    }

    /// Records one request in the share's metrics (and its image's, when
    /// the request was about one): relaxed atomics only.
    #[inline]
    fn count(&self, t: &Tally, latency: Duration) {
        match &t.image {
            Some(img) => img.observe_request(t.opcode, latency, t.bytes, t.errno),
            None => self
                .share
                .metrics()
                .observe_request(t.opcode, latency, t.bytes, t.errno),
        }
    }

    fn handle_counted(
        &self,
        req: &[u8],
        sink: &mut dyn ReplySink,
        tally: &mut Tally,
    ) -> io::Result<()> {
        let (hdr, args) = match parse_header(req) {
            Ok(x) => x,
            Err(e) => {
                tally.errno = e.error.errno();
                return send_err(sink, e.unique.unwrap_or(0), e.error.errno());
            }
        };
        tally.opcode = hdr.opcode;
        let op = match Op::decode(hdr.opcode, args) {
            Ok(op) => op,
            Err(e) => {
                tally.errno = e.errno();
                return send_err(sink, hdr.unique, e.errno());
            }
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
            self.dispatch(&hdr, op, sink, tally)
        };
        match r {
            Ok(()) => Ok(()),
            Err(Fail::Errno(e)) => {
                tally.errno = e;
                send_err(sink, hdr.unique, e)
            }
            Err(Fail::Io(e)) => {
                tally.errno = libc::EIO;
                Err(e)
            }
        }
    }

    fn no_reply(&self, h: &InHeader, op: &Op<'_>) {
        match op {
            Op::Forget(f) => self.nodes.forget(h.nodeid, f.nlookup),
            Op::BatchForget(b) => self.batch_forget(b),
            _ => {}
        }
    }

    fn dispatch(
        &self,
        h: &InHeader,
        op: Op<'_>,
        sink: &mut dyn ReplySink,
        tally: &mut Tally,
    ) -> OpResult {
        if h.nodeid == abi::ROOT_ID && self.share.is_named() {
            if let Some(r) = self.root_op(h, &op, sink) {
                return r;
            }
        }
        match op {
            Op::Init(i) => self.init(h, &i, sink),
            Op::Lookup(name) => self.lookup(h, name, sink),
            Op::Getattr(_) => self.getattr(h, sink),
            Op::Statx(_) => self.statx(h, sink),
            Op::Readlink => self.readlink(h, sink),
            Op::Open(o) => self.open(h, &o, false, sink),
            Op::Opendir(o) => self.open(h, &o, true, sink),
            Op::Read(r) => self.read(h, &r, sink, tally),
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
            Op::Setupmapping(s) => self.setupmapping(h, &s, sink),
            Op::Removemapping(r) => self.removemapping(h, &r, sink),
            Op::Mutating(_) => Err(Fail::Errno(libc::EROFS)),
            Op::Unsupported(_) => Err(Fail::Errno(libc::ENOSYS)),
            // Handled by `no_reply`.
            Op::Forget(_) | Op::BatchForget(_) | Op::Interrupt(_) | Op::Ignored(_) => Ok(()),
        }
    }

    // -----------------------------------------------------------------
    // Helpers.

    /// Logs an image error (rate-limited, see [`Share`]) and turns it into
    /// its errno.
    pub(crate) fn image_error(
        &self,
        img: &ShareImage,
        what: &str,
        e: &crate::erofs::Error,
    ) -> Fail {
        self.share.image_error(img, what, e)
    }

    /// The image at the root (open once INIT was answered).
    fn root(&self) -> Result<&Arc<ShareImage>, Fail> {
        self.share.root_image().ok_or(Fail::Errno(libc::EIO))
    }

    /// Node id of `nid` of `img` (in a share of named images: while the
    /// kernel holds it).
    pub(crate) fn nodeid_of(&self, img: &ShareImage, nid: u64) -> Option<u64> {
        if self.share.is_named() {
            self.nodes.id_of(img.serial(), nid)
        } else if nid == img.root().nid {
            Some(abi::ROOT_ID)
        } else {
            nid.checked_add(2)
        }
    }

    /// The inode of a node the kernel holds; ESTALE for ids never handed
    /// out (or forgotten), and for nodes of an image removed from the
    /// share.
    pub(crate) fn node(&self, nodeid: u64) -> Result<Target, Fail> {
        let t = self.node_any(nodeid)?;
        if t.img.is_removed() {
            return Err(Fail::Errno(libc::ESTALE));
        }
        Ok(t)
    }

    /// The same, also for nodes of a removed image (files still open keep
    /// reading).
    fn node_any(&self, nodeid: u64) -> Result<Target, Fail> {
        if nodeid == abi::ROOT_ID && !self.share.is_named() {
            if let Some(t) = self.root_target.get() {
                return Ok(t.clone());
            }
            let img = self.root()?;
            let t = Target::new(Arc::clone(img), Arc::clone(img.root()));
            return Ok(self.root_target.get_or_init(|| t).clone());
        }
        self.nodes.get(nodeid).ok_or(Fail::Errno(libc::ESTALE))
    }

    /// Inode `nid` of `img`: the node the kernel holds of it, else decoded.
    pub(crate) fn inode_of(
        &self,
        img: &Arc<ShareImage>,
        nid: u64,
    ) -> Result<Target, crate::erofs::Error> {
        if let Some(t) = self.nodeid_of(img, nid).and_then(|id| self.node(id).ok()) {
            if t.inode.nid == nid && Arc::ptr_eq(&t.img, img) {
                return Ok(t);
            }
        }
        let inode = img.image().inode(nid)?;
        Ok(Target::new(Arc::clone(img), Arc::new(inode)))
    }

    /// (seconds, nanoseconds) the kernel may cache entries and attributes.
    pub(crate) fn timeout(&self) -> (u64, u32) {
        match self.share.options().cache {
            CachePolicy::Never => (0, 0),
            CachePolicy::Auto => (1, 0),
            CachePolicy::Always => (LONG_TIMEOUT_SECS, 0),
        }
    }

    /// FUSE attributes of an inode, field for field what the kernel's EROFS
    /// driver reports (atime and ctime are the mtime).
    pub(crate) fn attr(&self, img: &ShareImage, i: &Inode) -> Attr {
        let bits = img.image().blkszbits();
        // Casting i64 to u64 keeps the two's complement bits, which the
        // kernel reads back as a signed time.
        let mtime = i.mtime as u64;
        Attr {
            ino: img.st_ino(i.nid),
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
            flags: self.dax.as_ref().map_or(0, |d| d.attr_flags(i)),
        }
    }

    /// The entry reply for `t`, counting one lookup of it. A `volatile`
    /// entry (a name in the root of a share of named images, which may go
    /// at any time) may not be cached; its attributes may.
    pub(crate) fn entry(&self, t: &Target, volatile: bool) -> Result<EntryOut, Fail> {
        let nodeid = if self.share.is_named() {
            self.nodes.add_lookup_keyed(t).map_err(Fail::Errno)?
        } else {
            let id = self
                .nodeid_of(&t.img, t.inode.nid)
                .ok_or(Fail::Errno(libc::EIO))?;
            if id != abi::ROOT_ID {
                // ENFILE when the node table is full (--max-nodes).
                self.nodes.add_lookup(id, t).map_err(Fail::Errno)?;
            }
            id
        };
        Ok(self.entry_out(nodeid, t, volatile))
    }

    /// The entry reply for `t` under `nodeid` (its lookup already counted).
    pub(crate) fn entry_out(&self, nodeid: u64, t: &Target, volatile: bool) -> EntryOut {
        let (secs, nsecs) = self.timeout();
        let (entry_secs, entry_nsecs) = if volatile { (0, 0) } else { (secs, nsecs) };
        EntryOut {
            nodeid,
            generation: 0,
            entry_valid: entry_secs,
            attr_valid: secs,
            entry_valid_nsec: entry_nsecs,
            attr_valid_nsec: nsecs,
            attr: self.attr(&t.img, &t.inode),
        }
    }

    /// The entry reply for inode `nid` of `img` listed by READDIRPLUS at
    /// `listed`, counting one lookup of it; `None` when it cannot be given
    /// (the inode does not decode, the node table is full): the kernel
    /// then looks the name up itself. In a share whose root is one image
    /// the node is found or made in one visit of the node table.
    pub(crate) fn listed_entry(
        &self,
        img: &Arc<ShareImage>,
        nid: u64,
        listed: Listed,
    ) -> Option<EntryOut> {
        // In a share of named images the id is handed out by the lookup
        // counted here, and the roots are not in the node table.
        let id = (!self.share.is_named())
            .then(|| self.nodeid_of(img, nid))
            .flatten()
            .filter(|&id| id != abi::ROOT_ID);
        let Some(id) = id else {
            let t = self.inode_of(img, nid).ok()?;
            let out = self.entry(&t, false).ok()?;
            self.nodes.set_listed(out.nodeid, listed);
            return Some(out);
        };
        let inode = img.image().inode(nid).ok()?;
        let t = self.nodes.add_listed(id, img, inode, listed).ok()?;
        Some(self.entry_out(id, &t, false))
    }

    // -----------------------------------------------------------------
    // Session.

    fn init(&self, h: &InHeader, i: &InitIn, sink: &mut dyn ReplySink) -> OpResult {
        if self.initialized() {
            return Err(Fail::Errno(libc::EIO));
        }
        self.share.open_at_init().map_err(Fail::Errno)?;
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
        let opts = self.share.options();
        match opts.cache {
            CachePolicy::Never => want |= DIRECT_IO_ALLOW_MMAP | READDIRPLUS_AUTO,
            CachePolicy::Auto => want |= CACHE_SYMLINKS | READDIRPLUS_AUTO,
            CachePolicy::Always => want |= CACHE_SYMLINKS | NO_OPEN_SUPPORT | NO_OPENDIR_SUPPORT,
        }
        if self.share.is_named() {
            // Zero-message opendir would have the client cache every
            // directory's listing, the root's too, whose names change.
            want &= !NO_OPENDIR_SUPPORT;
        }
        if self.io_uring {
            want |= OVER_IO_URING;
        }
        if let Some(d) = &self.dax {
            want |= MAP_ALIGNMENT | HAS_INODE_DAX;
            // A new connection of the guest's driver: the VMM dropped the
            // old mappings with the device, or DESTROY unmapped them.
            d.reset(self.out.as_ref(), false);
        }
        let passthrough = self.share.content().is_some_and(|c| c.passthrough_wanted())
            && self.out.can_passthrough();
        if passthrough {
            // Passthrough is set up at OPEN: no zero-message opens.
            want = (want | PASSTHROUGH) & !NO_OPEN_SUPPORT;
        }
        let flags = want & kernel;
        self.pt.set_on(flags & PASSTHROUGH != 0);
        self.over_io_uring
            .store(flags & OVER_IO_URING != 0, Ordering::Release);
        self.no_open
            .store(flags & NO_OPEN_SUPPORT != 0, Ordering::Release);
        self.no_opendir
            .store(flags & NO_OPENDIR_SUPPORT != 0, Ordering::Release);
        let pages = (opts.max_read / 4096).clamp(1, u32::from(u16::MAX));
        let bg = opts.max_background.max(1);
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
            map_alignment: if flags & MAP_ALIGNMENT != 0 {
                super::dax::MAP_ALIGNMENT_SHIFT as u16
            } else {
                0
            },
            flags2: (flags >> 32) as u32,
            // Backing files (store entries) are on a file system that
            // stacks on nothing.
            max_stack_depth: u32::from(flags & PASSTHROUGH != 0),
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
        if let Some(d) = &self.dax {
            d.reset(self.out.as_ref(), true);
        }
        self.nodes.clear();
        self.handles.clear();
        self.pt.clear();
        self.minor.store(0, Ordering::Release);
        send_ok(sink, h.unique)
    }

    // -----------------------------------------------------------------
    // Nodes.

    fn lookup(&self, h: &InHeader, name: &[u8], sink: &mut dyn ReplySink) -> OpResult {
        let dir = self.node(h.nodeid)?;
        if !dir.inode.is_dir() {
            return Err(Fail::Errno(libc::ENOTDIR));
        }
        if name.len() > ondisk::NAME_LEN {
            return Err(Fail::Errno(libc::ENAMETOOLONG));
        }
        let img = &dir.img;
        let found = img
            .image()
            .lookup(&dir.inode, name)
            .map_err(|e| self.image_error(img, "lookup", &e))?;
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
        let t = self
            .inode_of(img, nid)
            .map_err(|e| self.image_error(img, "lookup", &e))?;
        let out = self.entry(&t, false)?;
        send(sink, h.unique, &out)
    }

    fn batch_forget(&self, b: &BatchForget<'_>) {
        for f in b.iter() {
            self.nodes.forget(f.nodeid, f.nlookup);
        }
    }

    fn getattr(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        let t = self.node(h.nodeid)?;
        let (secs, nsecs) = self.timeout();
        let out = AttrOut {
            attr_valid: secs,
            attr_valid_nsec: nsecs,
            dummy: 0,
            attr: self.attr(&t.img, &t.inode),
        };
        send(sink, h.unique, &out)
    }

    fn statx(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        if self.minor.load(Ordering::Acquire) < 39 {
            return Err(Fail::Errno(libc::ENOSYS));
        }
        let t = self.node(h.nodeid)?;
        let inode = &t.inode;
        let a = self.attr(&t.img, inode);
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
        let t = self.node(h.nodeid)?;
        if t.inode.kind != InodeKind::Symlink {
            return Err(Fail::Errno(libc::EINVAL));
        }
        let target = t
            .img
            .image()
            .readlink(&t.inode)
            .map_err(|e| self.image_error(&t.img, "readlink", &e))?;
        send_bytes(sink, h.unique, &[&target])
    }

    fn statfs(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        let img = if self.share.is_named() {
            Arc::clone(&self.node(h.nodeid)?.img)
        } else {
            Arc::clone(self.root()?)
        };
        send(sink, h.unique, &statfs_of(&[img]))
    }

    fn access(&self, h: &InHeader, mask: u32, sink: &mut dyn ReplySink) -> OpResult {
        let t = self.node(h.nodeid)?;
        let mask = mask & 7;
        if mask & 2 != 0 {
            return Err(Fail::Errno(libc::EROFS));
        }
        if !may_access(&t.inode, h.uid, h.gid, mask) {
            return Err(Fail::Errno(libc::EACCES));
        }
        send_ok(sink, h.unique)
    }

    // -----------------------------------------------------------------
    // Files.

    fn open(&self, h: &InHeader, o: &OpenIn, dir: bool, sink: &mut dyn ReplySink) -> OpResult {
        let target = self.node(h.nodeid)?;
        check_open(o, dir, target.inode.is_dir())?;
        if self.zero_message_open(dir) {
            // Zero-message opens: the kernel then keeps the page cache and
            // directory cache by itself and sends no RELEASE.
            return Err(Fail::Errno(libc::ENOSYS));
        }
        let fh = self
            .handles
            .insert(Handle {
                target: Some(target.clone()),
                dir,
            })
            .ok_or(Fail::Errno(libc::ENFILE))?;
        let mut open_flags = FOPEN_NOFLUSH;
        match self.share.options().cache {
            CachePolicy::Never if !dir => open_flags |= FOPEN_DIRECT_IO,
            CachePolicy::Never | CachePolicy::Auto => {}
            CachePolicy::Always => open_flags |= FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR,
        }
        if !dir && o.flags & libc::O_DIRECT as u32 != 0 {
            // The opener asked to bypass caches: honour it whatever the
            // mount's policy (each read reaches us, nothing is cached).
            open_flags = (open_flags & !FOPEN_KEEP_CACHE) | FOPEN_DIRECT_IO;
        }
        let mut backing_id = 0;
        if !dir && open_flags & FOPEN_DIRECT_IO == 0 && self.pt.is_on() {
            let entry = || stored::entry_for(&self.share, &target);
            if let OpenMode::Backing(id) = self.pt.open(&*self.out, h.nodeid, fh, entry) {
                // The kernel refuses any other flag with passthrough
                // (FOPEN_PASSTHROUGH_MASK: no KEEP_CACHE, no CACHE_DIR).
                open_flags = (open_flags & FOPEN_NOFLUSH) | FOPEN_PASSTHROUGH;
                backing_id = i32::try_from(id).unwrap_or(0);
                if let Some(c) = self.share.content() {
                    c.count_passthrough_open();
                }
            }
        }
        let out = OpenOut {
            fh,
            open_flags,
            backing_id,
        };
        if let Err(e) = send(sink, h.unique, &out) {
            self.pt.release(&*self.out, fh);
            self.handles.remove(fh);
            return Err(e);
        }
        Ok(())
    }

    fn release(&self, h: &InHeader, fh: u64, sink: &mut dyn ReplySink) -> OpResult {
        self.pt.release(&*self.out, fh);
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
    pub(crate) fn file(&self, h: &InHeader, fh: u64, dir: bool) -> Result<Target, Fail> {
        if fh == 0 && self.zero_message_open(dir) {
            return self.node_any(h.nodeid);
        }
        match self.handles.get(fh) {
            Some(Handle {
                target: Some(t),
                dir: d,
            }) if d == dir => Ok(t),
            _ => Err(Fail::Errno(libc::EBADF)),
        }
    }

    fn read(
        &self,
        h: &InHeader,
        r: &ReadIn,
        sink: &mut dyn ReplySink,
        tally: &mut Tally,
    ) -> OpResult {
        if r.size > self.share.options().max_read {
            return Err(Fail::Errno(libc::EINVAL));
        }
        let t = self.file(h, r.fh, false)?;
        tally.image = t.img.metrics().cloned();
        let inode = &t.inode;
        if inode.kind != InodeKind::File {
            return Err(Fail::Errno(libc::EINVAL));
        }
        if let Some(d) = &self.dax {
            d.stats.file_read();
        }
        let left = inode.size.saturating_sub(r.offset);
        let len = u64::from(r.size).min(left);
        let len = usize::try_from(len).unwrap_or(0);
        if let Some(entry) = stored::entry_for(&self.share, &t) {
            return stored::reply_from_entry(&self.share, h.unique, &entry, r.offset, len, sink);
        }
        let img = t.img.image();
        // Counted before the reply goes out: once the reader has its data it
        // may send the next READ, which another worker may take before this
        // one gets on, and read-around must see the reads in their order.
        let misses = self
            .pusher
            .as_ref()
            .and_then(|p| p.count_small_read(h.nodeid, inode, len as u64));
        if len >= SPLICE_MIN && sink.can_splice() {
            // Uncompressed data straight from the image file's page cache;
            // anything else (or any doubt) takes the copying path below.
            if let Ok(Some(spans)) = img.plain_spans(inode, r.offset, len, MAX_SPANS) {
                if sink.send_spans(h.unique, &spans)? {
                    tally.bytes = len as u64;
                    self.after_read(h.nodeid, &t, r.offset, len as u64, misses);
                    return Ok(());
                }
            }
        }
        let mut failed = 0;
        let mut fill = |buf: &mut [u8], pos: usize| -> Result<usize, Errno> {
            let off = r.offset.saturating_add(pos as u64);
            img.read(inode, off, buf).map_err(|e| {
                let n = match self.image_error(&t.img, "read", &e) {
                    Fail::Errno(n) => n,
                    Fail::Io(_) => libc::EIO,
                };
                failed = n;
                Errno(n)
            })
        };
        sink.send_with(h.unique, len, &mut fill)?;
        if failed == 0 {
            tally.bytes = len as u64;
        } else {
            tally.errno = failed;
        }
        self.after_read(h.nodeid, &t, r.offset, len as u64, misses);
        Ok(())
    }

    /// After a READ of `offset..offset + len` of `inode` (node `nodeid`)
    /// was answered, by either path: offers the pushes it calls for (the
    /// rest of a decoded extent, the window around a small read, the next
    /// files of a directory read in order). `misses`: the read's count from
    /// [`Pusher::count_small_read`].
    fn after_read(&self, nodeid: u64, t: &Target, offset: u64, len: u64, misses: Option<u64>) {
        let Some(p) = &self.pusher else {
            return;
        };
        if len < SMALL_READ {
            if t.inode.is_compressed() {
                if let Ok(Some(range)) = t.img.image().decoded_range(&t.inode, offset, len) {
                    p.offer(nodeid, t, offset, len, range);
                }
            } else if let Some(misses) = misses {
                p.read_around(nodeid, t, offset, len, misses);
            }
        }
        if offset == 0 {
            self.follow_listing(p, nodeid, &t.img);
        }
    }

    fn setupmapping(&self, h: &InHeader, s: &SetupmappingIn, sink: &mut dyn ReplySink) -> OpResult {
        let Some(d) = &self.dax else {
            return Err(Fail::Errno(libc::ENOSYS));
        };
        // The guest maps only files it has open (its SETUPMAPPING names no
        // handle: fh is always -1), so a file of an image removed through
        // the API keeps mapping like an open file keeps reading.
        let t = self.node_any(h.nodeid)?;
        let content = self.share.content().map(|c| c.as_ref());
        d.setup(self.out.as_ref(), &t, s, content)
            .map_err(Fail::Errno)?;
        send_ok(sink, h.unique)
    }

    fn removemapping(
        &self,
        h: &InHeader,
        r: &Removemapping<'_>,
        sink: &mut dyn ReplySink,
    ) -> OpResult {
        let Some(d) = &self.dax else {
            return Err(Fail::Errno(libc::ENOSYS));
        };
        d.remove(self.out.as_ref(), r.iter()).map_err(Fail::Errno)?;
        send_ok(sink, h.unique)
    }

    fn lseek(&self, h: &InHeader, l: &LseekIn, sink: &mut dyn ReplySink) -> OpResult {
        let t = match self.file(h, l.fh, false) {
            Ok(t) => t,
            Err(_) => self.node(h.nodeid)?,
        };
        let inode = &t.inode;
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
        let img = t.img.image();
        let pos = if whence == libc::SEEK_DATA {
            img.seek_data(inode, l.offset)
                .map_err(|e| self.image_error(&t.img, "lseek", &e))?
                .ok_or(Fail::Errno(libc::ENXIO))?
        } else {
            img.seek_hole(inode, l.offset)
                .map_err(|e| self.image_error(&t.img, "lseek", &e))?
        };
        send(sink, h.unique, &LseekOut { offset: pos })
    }
}

/// Refuses an OPEN/OPENDIR (`dir`) that writes, truncates, or names the
/// wrong kind of inode (`is_dir`).
pub(crate) fn check_open(o: &OpenIn, dir: bool, is_dir: bool) -> Result<(), Fail> {
    let acc = o.flags & libc::O_ACCMODE as u32;
    if acc != libc::O_RDONLY as u32 || o.flags & libc::O_TRUNC as u32 != 0 {
        return Err(Fail::Errno(libc::EROFS));
    }
    if dir != is_dir {
        return Err(Fail::Errno(if dir { libc::ENOTDIR } else { libc::EISDIR }));
    }
    Ok(())
}

/// STATFS of a share serving `images`: their blocks and inodes added up.
pub(crate) fn statfs_of(images: &[Arc<ShareImage>]) -> StatfsOut {
    let (mut blocks, mut inos, mut bsize) = (0u64, 0u64, None);
    for i in images {
        let img = i.image();
        let sb = img.superblock();
        blocks = img
            .devices()
            .iter()
            .fold(blocks.saturating_add(sb.blocks), |acc, d| {
                acc.saturating_add(d.blocks)
            });
        inos = inos.saturating_add(sb.inos);
        bsize.get_or_insert(u32::try_from(sb.block_size()).unwrap_or(4096));
    }
    let bsize = bsize.unwrap_or(4096);
    StatfsOut {
        st: Kstatfs {
            blocks,
            bfree: 0,
            bavail: 0,
            files: u64::MAX,
            ffree: u64::MAX.saturating_sub(inos),
            bsize,
            namelen: ondisk::NAME_LEN as u32,
            frsize: bsize,
            padding: 0,
            spare: [0; 6],
        },
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
