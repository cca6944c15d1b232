//! The /dev/fuse transport: mount with mount(2), serve with worker threads
//! (each on its own clone of the device fd), unmount.
//!
//! Owns the device fds and the per-thread buffers. Trusts the kernel to
//! frame messages (one request per read(2)); their contents still go
//! through the dispatcher's checks.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use log::warn;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::abi::{self, OutHeader};
use super::devnotify::{write_message, DevOutbound};
use super::outbound::{Outbound, RepliesOnly};
use super::session::Session;
use super::share::Share;
use super::sink::{out_header, Errno, Fill, ReplySink, OUT_HEADER_LEN};
use super::splice::{spans_len, SplicePipe};
use super::uring;
use crate::erofs::Span;
use crate::os;

/// Why mounting or serving failed.
#[derive(Debug, thiserror::Error)]
pub enum DevFuseError {
    /// Mounting needs CAP_SYS_ADMIN.
    #[error("mounting needs root (CAP_SYS_ADMIN); running as uid {euid}")]
    NotRoot {
        /// Effective uid.
        euid: u32,
    },
    /// /dev/fuse could not be opened.
    #[error("cannot open /dev/fuse (is the fuse module loaded? try `modprobe fuse`): {0}")]
    NoDevice(#[source] io::Error),
    /// The mount point is unusable.
    #[error("bad mount point {path}: {source}")]
    BadMountpoint {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: io::Error,
    },
    /// mount(2) failed.
    #[error("mount(2) of fuse on {path} failed: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A worker thread failed.
    #[error("serving /dev/fuse: {0}")]
    Serve(#[source] io::Error),
}

/// Mount settings.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// The directory to mount on.
    pub mountpoint: PathBuf,
    /// Filesystem name shown as the mount source.
    pub fsname: String,
    /// Subtype: the type shows as `fuse.SUBTYPE`.
    pub subtype: String,
    /// Largest READ the kernel may send (`max_read=`).
    pub max_read: u32,
    /// `read_ahead_kb` to give the mount once INIT is answered (the kernel
    /// caps it to the 128 KiB it offers when it processes the INIT reply);
    /// `None` keeps the kernel's.
    pub readahead_kb: Option<u32>,
}

/// A live FUSE mount: the device fd the kernel talks to.
#[derive(Debug)]
pub struct FuseMount {
    fd: OwnedFd,
    mountpoint: PathBuf,
    max_read: u32,
    /// The mount's `read_ahead_kb` in sysfs, opened at mount (the serving
    /// process may no longer see sysfs), and the value to write there once
    /// INIT is answered.
    readahead: Option<(std::fs::File, u32)>,
    /// Worker descriptors cloned ahead by [`FuseMount::open_clones`].
    clones: Vec<OwnedFd>,
    /// How long a worker that answered a request polls for the next one
    /// (see [`Poller`]); zero: never.
    poll: Duration,
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens /dev/fuse read-write, close-on-exec.
fn open_dev() -> io::Result<OwnedFd> {
    // std opens with O_CLOEXEC.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(OwnedFd::from)
}

/// Checks what mounting needs before anything is mounted: root, /dev/fuse
/// and a directory to mount on (returned absolute).
pub fn preflight(mountpoint: &Path) -> Result<PathBuf, DevFuseError> {
    let euid = os::proc::euid();
    if euid != 0 {
        return Err(DevFuseError::NotRoot { euid });
    }
    let bad = |source: io::Error| DevFuseError::BadMountpoint {
        path: mountpoint.to_path_buf(),
        source,
    };
    let abs = std::fs::canonicalize(mountpoint).map_err(bad)?;
    let md = std::fs::metadata(&abs).map_err(bad)?;
    if !md.is_dir() {
        return Err(bad(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    drop(open_dev().map_err(DevFuseError::NoDevice)?);
    Ok(abs)
}

/// Mounts a read-only FUSE filesystem on `cfg.mountpoint` (absolute) and
/// returns the device fd to serve it from. The kernel sends INIT at once;
/// anything touching the mount waits until it is answered.
pub fn mount(cfg: &MountConfig) -> Result<FuseMount, DevFuseError> {
    let fd = open_dev().map_err(DevFuseError::NoDevice)?;
    let mount_err = |source: io::Error| DevFuseError::Mount {
        path: cfg.mountpoint.clone(),
        source,
    };
    let (uid, gid) = os::proc::uid_gid();
    let data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid},default_permissions,allow_other,max_read={}",
        fd.as_raw_fd(),
        libc::S_IFDIR,
        cfg.max_read
    );
    let bad_str = |_| mount_err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in option"));
    let source = CString::new(cfg.fsname.as_bytes()).map_err(bad_str)?;
    let fstype = CString::new(format!("fuse.{}", cfg.subtype)).map_err(bad_str)?;
    let data = CString::new(data).map_err(bad_str)?;
    let target = cstring(&cfg.mountpoint).map_err(mount_err)?;
    os::mount::mount(
        &source,
        &target,
        &fstype,
        libc::MS_RDONLY | libc::MS_NOSUID,
        &data,
    )
    .map_err(mount_err)?;
    let readahead = cfg
        .readahead_kb
        .and_then(|kb| match open_readahead(&cfg.mountpoint) {
            Ok(f) => Some((f, kb)),
            Err(e) => {
                warn!(
                    "cannot set the readahead of {} to {kb} KiB: {e}",
                    cfg.mountpoint.display()
                );
                None
            }
        });
    Ok(FuseMount {
        fd,
        mountpoint: cfg.mountpoint.clone(),
        max_read: cfg.max_read,
        readahead,
        clones: Vec::new(),
        poll: Duration::ZERO,
    })
}

/// The `MAJOR:MINOR` device of the newest mount on `mountpoint`, from
/// /proc/self/mountinfo: unlike stat(2) this does not touch the new FUSE
/// mount, which would wait for an INIT nobody answers yet.
fn mount_device(mountpoint: &Path) -> io::Result<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = mountpoint.as_os_str().as_bytes();
    info.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let dev = f.nth(2)?;
            let point = unescape_mountinfo(f.nth(1)?);
            (point == want).then(|| dev.to_owned())
        })
        .next_back()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "mount not in /proc/self/mountinfo"))
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&c, tail)) = rest.split_first() {
        let oct = tail
            .get(..3)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match oct {
            Some(v) if c == b'\\' => {
                out.push(v);
                rest = tail.get(3..).unwrap_or(&[]);
            }
            _ => {
                out.push(c);
                rest = tail;
            }
        }
    }
    out
}

/// Sets `read_ahead_kb` of the FUSE mount on `mountpoint` (its backing
/// device info in sysfs). FUSE offers 128 KiB at INIT, so a daemon cannot
/// ask for more there; with more, the kernel reads ahead in requests of up
/// to `max_read` bytes, several at a time, which the workers serve in
/// parallel. Call it after INIT is answered: the INIT reply caps it.
pub fn set_readahead(mountpoint: &Path, kb: u32) -> io::Result<()> {
    write_readahead(&mut open_readahead(mountpoint)?, kb)
}

/// Opens the `read_ahead_kb` file of the FUSE mount on `mountpoint` for
/// writing (see [`set_readahead`]).
fn open_readahead(mountpoint: &Path) -> io::Result<std::fs::File> {
    let dev = mount_device(mountpoint)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/sys/class/bdi/{dev}/read_ahead_kb"))
}

fn write_readahead(file: &mut std::fs::File, kb: u32) -> io::Result<()> {
    use std::io::Write;
    file.write_all(format!("{kb}\n").as_bytes())
}

/// Unmounts `mountpoint`; when it is busy, detaches it lazily (the kernel
/// keeps serving open files until they are closed).
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    let target = cstring(mountpoint)?;
    match os::mount::umount(&target, false) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => os::mount::umount(&target, true),
        r => r,
    }
}

impl FuseMount {
    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Has a worker that answered a request poll for the next one for up to
    /// `window` before it sleeps (zero: never; see [`Poller`]).
    pub fn set_poll(&mut self, window: Duration) {
        self.poll = window;
    }

    /// A new fd attached to the same connection (FUSE_DEV_IOC_CLONE), so a
    /// worker gets its own request queue.
    fn clone_fd(&self) -> io::Result<OwnedFd> {
        let new = open_dev()?;
        os::mount::clone_fuse_fd(&new, self.fd.as_raw_fd())?;
        Ok(new)
    }

    /// Clones the descriptors of a [`FuseMount::serve`] with `threads`
    /// workers now, while /dev/fuse can still be opened (before the
    /// sandbox). Without it, `serve` clones them itself.
    pub fn open_clones(&mut self, threads: usize) {
        while self.clones.len().saturating_add(1) < threads {
            match self.clone_fd() {
                Ok(fd) => self.clones.push(fd),
                Err(_) => break,
            }
        }
    }

    /// Serves `share` with `threads` workers until the filesystem is
    /// unmounted (the device then reads ENODEV), in a [`Session`] of its
    /// own whose notifications go through a [`DevOutbound`]. Workers past
    /// the first use cloned fds; if cloning fails they share the main one.
    ///
    /// With `queues` (made by [`uring::make_queues`] before INIT), INIT
    /// asks for FUSE over io_uring, and one more thread per queue registers
    /// it once INIT agreed on it and serves the requests the kernel puts
    /// there; the workers keep serving FORGET and INTERRUPT (and
    /// everything, if io_uring was not agreed).
    pub fn serve(
        &mut self,
        share: &Arc<Share>,
        threads: usize,
        queues: Vec<uring::Queue>,
    ) -> Result<(), DevFuseError> {
        let threads = threads.max(1);
        self.open_clones(threads);
        let mut fds: Vec<Option<OwnedFd>> = std::mem::take(&mut self.clones)
            .into_iter()
            .map(Some)
            .collect();
        fds.resize_with(threads.saturating_sub(1), || None);
        let bufsize = usize::try_from(self.max_read)
            .unwrap_or(usize::MAX)
            .saturating_add(2 * 4096)
            .max(abi::MIN_READ_BUFFER);
        let main_fd = self.fd.as_raw_fd();
        let init = Arc::new(AfterInit {
            acted: AtomicBool::new(false),
            state: Mutex::new(InitState::Pending),
            changed: Condvar::new(),
            mountpoint: self.mountpoint.clone(),
            readahead: Mutex::new(self.readahead.take()),
        });
        // Notifications (decoded pages nobody read yet, names gone) go
        // through a descriptor of their own.
        let out: Arc<dyn Outbound> = match self.fd.try_clone() {
            Ok(fd) => Arc::new(DevOutbound::new(fd)),
            Err(e) => {
                warn!("no page cache pushing: {e}");
                Arc::new(RepliesOnly)
            }
        };
        let session =
            Arc::new(Session::new(Arc::clone(share), out).with_io_uring(!queues.is_empty()));
        let server = &session;
        let poller = Poller::new(self.poll);
        let poller = &poller;
        // Polling flips O_NONBLOCK on the worker's open file: only a
        // worker that has its descriptor to itself may poll.
        let shared_main = fds.iter().any(Option::is_none);
        for q in queues {
            let (server, init) = (Arc::clone(server), Arc::clone(&init));
            // Detached: a queue thread ends when the connection does; the
            // process does not wait for it after the workers are done.
            std::thread::Builder::new()
                .name("fuse-uring".into())
                .spawn(move || {
                    if init.wait() && server.over_io_uring() {
                        if let Err(e) = uring::serve_queue(q, main_fd, &server) {
                            warn!("FUSE over io_uring queue: {e}");
                        }
                    }
                })
                .map_err(DevFuseError::Serve)?;
        }
        let result = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (i, fd) in fds.iter().enumerate() {
                let raw = fd.as_ref().map_or(main_fd, AsRawFd::as_raw_fd);
                let server = Arc::clone(server);
                let init = &*init;
                let polls = fd.is_some().then_some(poller);
                let h = std::thread::Builder::new()
                    .name(format!("fuse-worker-{}", i.saturating_add(1)))
                    .spawn_scoped(s, move || worker(raw, &server, bufsize, init, polls));
                match h {
                    Ok(h) => handles.push(h),
                    Err(e) => return Err(e),
                }
            }
            let polls = (!shared_main).then_some(poller);
            let mut result = worker(main_fd, server, bufsize, &init, polls);
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("worker thread panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        });
        init.set(InitState::Stopped);
        session.stop_pushing();
        result.map_err(DevFuseError::Serve)
    }
}

/// Where the connection is in its life, for the threads that wait for INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitState {
    Pending,
    Done,
    Stopped,
}

/// What happens once INIT is answered (by any worker: the clones share the
/// connection's input queue): the readahead is set and the io_uring queue
/// threads are let go.
struct AfterInit {
    /// Set by the one worker that acts on INIT: every later request checks
    /// only this, not the lock.
    acted: AtomicBool,
    state: Mutex<InitState>,
    changed: Condvar,
    mountpoint: PathBuf,
    readahead: Mutex<Option<(std::fs::File, u32)>>,
}

impl AfterInit {
    fn state(&self) -> std::sync::MutexGuard<'_, InitState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, to: InitState) {
        let mut st = self.state();
        if *st == InitState::Pending {
            *st = to;
            self.changed.notify_all();
        }
    }

    /// Called after each request: on the first call after INIT was
    /// answered, sets the readahead and wakes the queue threads.
    fn check(&self, server: &Session) {
        if self.acted.load(Ordering::Relaxed)
            || !server.initialized()
            || self.acted.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let readahead = self
            .readahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((mut file, kb)) = readahead {
            if let Err(e) = write_readahead(&mut file, kb) {
                warn!(
                    "cannot set the readahead of {} to {kb} KiB: {e}",
                    self.mountpoint.display()
                );
            }
        }
        self.set(InitState::Done);
    }

    /// Waits until INIT was answered (true) or serving ended (false).
    fn wait(&self) -> bool {
        let mut st = self.state();
        while *st == InitState::Pending {
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *st == InitState::Done
    }
}

/// One page of an aligned buffer.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Replies written to a /dev/fuse fd with writev(2); file data goes into a
/// page-aligned per-thread buffer.
struct DevSink {
    fd: RawFd,
    /// Grown to the largest reply filled so far (never past
    /// `max_payload`): a worker whose replies are small, or whose reads
    /// go to FUSE passthrough, keeps no megabyte of touched pages.
    data: Vec<Page>,
    /// The pipe spliced replies go through (made on first use); `Err`
    /// once making it failed: splicing is then off for this worker.
    pipe: Option<Result<SplicePipe, ()>>,
    max_payload: usize,
    /// Requests answered since the last reply of more than
    /// [`SMALL_REPLY`] bytes was filled in `data`.
    quiet: u32,
}

/// A reply filled in a worker's buffer up to this size does not keep a
/// larger buffer alive.
const SMALL_REPLY: usize = 64 << 10;

/// Requests in a row without a reply larger than [`SMALL_REPLY`] after
/// which a worker gives a larger buffer back (a burst of reads through the
/// daemon, then metadata or passthrough reads only).
const SHRINK_AFTER: u32 = 1024;

impl DevSink {
    fn new(fd: RawFd, max_payload: usize) -> Self {
        Self {
            fd,
            data: Vec::new(),
            pipe: None,
            max_payload,
            quiet: 0,
        }
    }

    /// Counts a request answered; gives a large buffer back when no
    /// request needed it for a while.
    fn request_done(&mut self) {
        self.quiet = self.quiet.saturating_add(1);
        if self.quiet >= SHRINK_AFTER && self.data.len() > SMALL_REPLY / 4096 {
            self.data = Vec::new();
            self.quiet = 0;
        }
    }

    fn writev(&self, parts: &[&[u8]]) -> io::Result<()> {
        match write_message(self.fd, parts) {
            // The request was interrupted or aborted: nobody waits for this
            // reply any more.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

impl ReplySink for DevSink {
    fn can_splice(&self) -> bool {
        !matches!(self.pipe, Some(Err(())))
    }

    fn send_spans(&mut self, unique: u64, spans: &[Span]) -> io::Result<bool> {
        let total = spans_len(spans);
        if total > self.max_payload {
            return Ok(false);
        }
        let pipe = match self
            .pipe
            .get_or_insert_with(|| SplicePipe::new().map_err(|_| ()))
        {
            Ok(p) => p,
            Err(()) => return Ok(false),
        };
        if !pipe.fits(total, spans.len()) {
            return Ok(false);
        }
        let header = out_header(unique, 0, total);
        if pipe.load(&[header.as_bytes()], spans).is_err() {
            // A short file (truncated image) or a full pipe: nothing was
            // sent; the copying path answers (with EIO if the data is gone).
            return Ok(false);
        }
        match pipe.send(self.fd, total.saturating_add(OUT_HEADER_LEN)) {
            Ok(()) => Ok(true),
            // The request was interrupted or aborted: nobody waits.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(e),
            // Anything else (EINTR, a short move): the copying path
            // answers; if the kernel already ended the request, its
            // write gets ENOENT, which is fine.
            Err(_) => Ok(false),
        }
    }

    fn send(&mut self, header: &OutHeader, body: &[&[u8]]) -> io::Result<()> {
        let mut parts: [&[u8]; 4] = [header.as_bytes(), &[], &[], &[]];
        if body.len() >= parts.len() {
            // More parts than any reply has: gather them first.
            let joined: Vec<u8> = body.concat();
            return self.writev(&[header.as_bytes(), &joined]);
        }
        for (p, b) in parts.iter_mut().skip(1).zip(body) {
            *p = b;
        }
        self.writev(&parts[..body.len().saturating_add(1)])
    }

    fn send_with(&mut self, unique: u64, len: usize, fill: &mut Fill<'_>) -> io::Result<()> {
        let len = len.min(self.max_payload);
        if len > SMALL_REPLY {
            self.quiet = 0;
        }
        let pages = len.div_ceil(4096);
        if self.data.len() < pages {
            self.data.resize(pages, Page([0; 4096]));
        }
        let bytes = self.data.as_mut_bytes();
        let len = len.min(bytes.len());
        let buf = &mut bytes[..len];
        match fill(buf, 0) {
            Ok(n) => {
                let n = n.min(len);
                let hdr = out_header(unique, 0, n);
                let data = &self.data.as_bytes()[..n];
                self.writev(&[hdr.as_bytes(), data])
            }
            Err(Errno(e)) => self.writev(&[out_header(unique, e, 0).as_bytes()]),
        }
    }
}

/// Polling for the next request. Most of a FUSE round trip on a small
/// machine, a VM above all, can be waking the worker: the requester's CPU
/// interrupts the one the worker sleeps on, and a halted virtual CPU takes
/// long to come back. A worker that has just answered a request therefore
/// keeps reading its (then non-blocking) descriptor for a while, handing
/// the CPU to anything else runnable between reads, before it goes back to
/// sleep: a walk's next request, a few hundred microseconds later, finds it
/// awake. One worker polls at a time; the others sleep in read(2) as
/// before.
///
/// The window adapts, as QEMU's adaptive polling does: while requests come
/// less than `max` apart it is `max`; each longer gap halves it (to none
/// below [`MIN_POLL_US`]), so a mount that is seldom used costs nothing.
struct Poller {
    max: Duration,
    /// The current window, in microseconds.
    window_us: AtomicU64,
    busy: AtomicBool,
    /// When any worker last finished a request, in microseconds since
    /// `epoch`: the gap to the next request is the connection's, whichever
    /// workers take turns (sleeping readers are woken in turn).
    last_done_us: AtomicU64,
    epoch: Instant,
}

/// A window this short is not worth a poll: below it, none.
const MIN_POLL_US: u64 = 8;

/// What polling ended with.
enum Polled {
    /// A request of this many bytes, read into the buffer.
    Request(usize),
    /// Nothing within the window (or another worker polls, or polling is
    /// off): block in read(2).
    Nothing,
    /// The connection is gone (unmounted).
    Gone,
}

impl Poller {
    fn new(max: Duration) -> Self {
        let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Self {
            max,
            window_us: AtomicU64::new(max_us),
            busy: AtomicBool::new(false),
            last_done_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A worker finished a request.
    fn done(&self) {
        if !self.max.is_zero() {
            self.last_done_us.store(self.now_us(), Ordering::Relaxed);
        }
    }

    /// A worker that slept got a request: learns from the gap since the
    /// last one finished (within `max`, polling would have caught it).
    fn woke(&self) {
        if self.max.is_zero() {
            return;
        }
        let gap_us = self
            .now_us()
            .saturating_sub(self.last_done_us.load(Ordering::Relaxed));
        self.learn(Duration::from_micros(gap_us));
    }

    /// Sets the window after a gap between requests that no poll caught.
    fn learn(&self, gap: Duration) {
        let next = if gap <= self.max {
            u64::try_from(self.max.as_micros()).unwrap_or(u64::MAX)
        } else {
            let half = self.window_us.load(Ordering::Relaxed) / 2;
            if half < MIN_POLL_US {
                0
            } else {
                half
            }
        };
        self.window_us.store(next, Ordering::Relaxed);
    }

    /// Polls `fd` for the next request for up to the current window, if
    /// there is one and no other worker is at it.
    fn next(&self, fd: RawFd, buf: &mut [u8]) -> io::Result<Polled> {
        let window = Duration::from_micros(self.window_us.load(Ordering::Relaxed));
        if window.is_zero() || self.busy.swap(true, Ordering::Acquire) {
            return Ok(Polled::Nothing);
        }
        // A descriptor that cannot be made non-blocking is read the usual
        // way; one that cannot be made blocking again ends the worker (it
        // would spin on EAGAIN in read(2) for good).
        let got = match os::fd::set_nonblocking(fd, true) {
            Ok(()) => {
                let polled = Self::spin(fd, buf, window);
                os::fd::set_nonblocking(fd, false).and(polled)
            }
            Err(_) => Ok(Polled::Nothing),
        };
        self.busy.store(false, Ordering::Release);
        got
    }

    fn spin(fd: RawFd, buf: &mut [u8], window: Duration) -> io::Result<Polled> {
        let until = Instant::now().checked_add(window);
        loop {
            match os::fd::read(fd, buf) {
                Ok(n) => return Ok(Polled::Request(n)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {}
                    // Interrupted, or a request the kernel took back.
                    Some(libc::EINTR | libc::ENOENT) => {}
                    Some(libc::ENODEV) => return Ok(Polled::Gone),
                    _ => return Err(e),
                },
            }
            if until.is_none_or(|t| Instant::now() >= t) {
                return Ok(Polled::Nothing);
            }
            std::thread::yield_now();
        }
    }
}

/// Reads requests from `fd` and answers them until the device reports
/// ENODEV (unmounted).
fn worker(
    fd: RawFd,
    server: &Session,
    bufsize: usize,
    init: &AfterInit,
    poller: Option<&Poller>,
) -> io::Result<()> {
    let mut req = vec![0u8; bufsize];
    let mut sink = DevSink::new(fd, bufsize);
    let mut polled = None;
    loop {
        let n = match polled.take() {
            Some(n) => n,
            None => match os::fd::read(fd, &mut req) {
                Ok(n) => {
                    if let Some(p) = poller {
                        p.woke();
                    }
                    n
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                    Some(libc::ENODEV) => return Ok(()),
                    _ => return Err(e),
                },
            },
        };
        let msg = req.get(..n).unwrap_or(&[]);
        if let Err(e) = server.handle(msg, &mut sink) {
            if e.raw_os_error() == Some(libc::ENODEV) {
                return Ok(());
            }
            return Err(e);
        }
        sink.request_done();
        init.check(server);
        if server.over_io_uring() {
            // Only FORGET and INTERRUPT still come here: nothing to poll
            // for, and the queues' threads want the CPUs.
            continue;
        }
        let Some(p) = poller else { continue };
        p.done();
        match p.next(fd, &mut req)? {
            Polled::Request(n) => polled = Some(n),
            Polled::Nothing => {}
            Polled::Gone => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;
    use super::{DevSink, Polled, Poller, MIN_POLL_US, SHRINK_AFTER, SMALL_REPLY};
    use crate::fuse::sink::ReplySink;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    /// The reply buffer grows to the replies filled in it, and a large
    /// one is given back after [`SHRINK_AFTER`] requests that did not
    /// need it (not before).
    #[test]
    fn reply_buffer_grows_on_demand_and_shrinks_when_quiet() {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("open /dev/null");
        let mut sink = DevSink::new(null.as_raw_fd(), 1 << 20);
        assert!(sink.data.is_empty(), "a new worker touched its buffer");
        let mut fill = |b: &mut [u8], _: usize| Ok(b.len());
        sink.send_with(1, 100, &mut fill).expect("small reply");
        assert_eq!(sink.data.len(), 1);
        sink.send_with(2, 512 << 10, &mut fill)
            .expect("large reply");
        assert_eq!(sink.data.len(), 128);
        for _ in 1..SHRINK_AFTER {
            sink.send_with(3, SMALL_REPLY, &mut fill).expect("reply");
            sink.request_done();
        }
        assert_eq!(sink.data.len(), 128, "shrunk too early");
        sink.request_done();
        assert!(sink.data.is_empty(), "kept a large buffer nobody needs");
        sink.send_with(4, 8192, &mut fill)
            .expect("reply after shrinking");
        assert_eq!(sink.data.len(), 2);
    }

    /// The polling window is the maximum while requests come closer than
    /// it, halves with each longer gap, and goes to none below the least
    /// worth polling; a zero maximum never polls.
    #[test]
    fn poll_window_adapts_to_the_gaps() {
        let p = Poller::new(Duration::from_micros(300));
        let window = |p: &Poller| p.window_us.load(Ordering::Relaxed);
        assert_eq!(window(&p), 300);
        p.learn(Duration::from_millis(5));
        assert_eq!(window(&p), 150);
        p.learn(Duration::from_micros(301));
        assert_eq!(window(&p), 75);
        p.learn(Duration::from_micros(200));
        assert_eq!(window(&p), 300, "a short gap restores the maximum");
        for _ in 0..5 {
            p.learn(Duration::from_secs(1));
        }
        assert_eq!(window(&p), 9);
        p.learn(Duration::from_secs(1));
        assert_eq!(window(&p), 0, "below {MIN_POLL_US} us: no polling");
        p.learn(Duration::from_secs(1));
        assert_eq!(window(&p), 0);
        let (r, _w) = crate::os::fd::pipe(false).expect("pipe");
        let mut buf = [0u8; 8];
        assert!(matches!(
            p.next(r.as_raw_fd(), &mut buf),
            Ok(Polled::Nothing)
        ));
        let off = Poller::new(Duration::ZERO);
        assert_eq!(window(&off), 0);
        off.learn(Duration::ZERO);
        assert_eq!(window(&off), 0);
    }

    /// With a window, a poll reads what is already there, and leaves the
    /// descriptor blocking again whatever it found.
    #[test]
    fn poll_reads_a_waiting_request_and_restores_blocking() {
        let p = Poller::new(Duration::from_micros(300));
        let (r, w) = crate::os::fd::pipe(false).expect("pipe");
        let a = r.as_raw_fd();
        crate::os::fd::write(w.as_raw_fd(), b"request").expect("write");
        let mut buf = [0u8; 16];
        assert!(matches!(p.next(a, &mut buf), Ok(Polled::Request(7))));
        assert_eq!(&buf[..7], b"request");
        assert!(matches!(p.next(a, &mut buf), Ok(Polled::Nothing)));
        let flags = crate::os::fd::status_flags(a).expect("F_GETFL");
        assert_eq!(flags & libc::O_NONBLOCK, 0, "left non-blocking");
        assert!(!p.busy.load(Ordering::Relaxed), "poller left busy");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), b"/tmp/a b");
        assert_eq!(unescape_mountinfo("/x\\011y\\134z"), b"/x\ty\\z");
        // Not an escape: kept as is, also at the end.
        assert_eq!(unescape_mountinfo("/a\\9x\\04"), b"/a\\9x\\04");
        assert_eq!(unescape_mountinfo(""), b"");
    }
}
