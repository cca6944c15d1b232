//! The vhost-user-fs device: [`VhostUserBackend`] for one frontend
//! connection, moving requests from the virtqueues to a FUSE session and
//! replies back.
//!
//! Owns the session of one connection (a fresh [`Session`] per backend) and
//! the worker pool. FUSE framing and everything a request means is the
//! session's: this side only moves bytes between chains and the session. Trusts the vhost-user-backend crate for the control
//! plane (memory table, vring setup, which it validates) and nothing in the
//! virtqueues: chains go through [`super::chain`], and a broken queue stops
//! being served without taking the daemon down (an error returned from
//! `handle_event` would end the queue's thread).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use log::{debug, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserShMemConfig};
use vhost::vhost_user::Backend;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueOwnedT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::chain;
use super::config::{self, VirtioFsConfig, MAX_QUEUE_SIZE};
use super::error::DeviceError;
use super::outbound::VhostOutbound;
use super::pool::Pool;
use super::reply::error_reply;
use super::writer::GuestWriter;
use crate::fuse::request::unique_of;
use crate::fuse::{Outbound, Session};

/// The guest memory as the backend sees it.
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap>;
type MemGuard = GuestMemoryLoadGuard<GuestMemoryMmap>;
type Chain = DescriptorChain<MemGuard>;

/// Largest request accepted (readable bytes of a chain): a read-only
/// server gets no large WRITEs; 1 MiB of payload plus headers is plenty.
pub const MAX_REQUEST: usize = (1 << 20) + 4096;

/// How the device is set up (from the command line).
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// The tag, offered in config space when set.
    pub tag: Option<String>,
    /// Number of request queues (the high-priority queue comes on top).
    pub request_queues: usize,
    /// Worker threads for requests (0: handle them on the queue's thread).
    pub thread_pool_size: usize,
    /// Size of the DAX window (shared memory region 0), if any: offers
    /// the SHMEM protocol feature and answers GET_SHMEM_CONFIG.
    pub dax_window: Option<u64>,
}

/// Counts, per queue, the batches being taken off the ring and the
/// requests handed to the pool, so that stopping a queue (GET_VRING_BASE)
/// can wait until every chain the device took is back on the used ring.
#[derive(Debug, Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn add(&self) {
        let mut c = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *c = c.saturating_add(1);
    }

    fn done(&self) {
        let mut c = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *c = c.saturating_sub(1);
        if *c == 0 {
            self.idle.notify_all();
        }
    }

    /// Counts one unit of work until the guard is dropped.
    fn busy(&self) -> Busy<'_> {
        self.add();
        Busy(self)
    }

    fn wait_idle(&self) {
        let mut c = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *c > 0 {
            c = self.idle.wait(c).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// One unit of [`InFlight`] work, ended on drop.
struct Busy<'a>(&'a InFlight);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// A chain handed to the pool, counted in [`InFlight`] until dropped.
struct QueuedChain {
    core: Arc<Core>,
    queue: usize,
}

impl QueuedChain {
    fn new(core: Arc<Core>, queue: usize) -> Self {
        if let Some(f) = core.inflight.get(queue) {
            f.add();
        }
        Self { core, queue }
    }
}

impl Drop for QueuedChain {
    fn drop(&mut self) {
        if let Some(f) = self.core.inflight.get(self.queue) {
            f.done();
        }
    }
}

/// What request handling needs, shared with the pool's jobs.
struct Core {
    session: Arc<Session>,
    event_idx: AtomicBool,
    inflight: Vec<InFlight>,
}

/// The vhost-user-fs backend of one connection.
pub struct FsBackend {
    core: Arc<Core>,
    out: Arc<VhostOutbound>,
    config: Option<VirtioFsConfig>,
    num_queues: usize,
    mem: GuestMem,
    pool: Mutex<Option<Pool>>,
    /// The consumer ends of the exit events given to the epoll threads:
    /// vhost-user-backend 0.24 turns each into a bare number and never
    /// closes it (one eventfd per queue per connection), so
    /// [`FsBackend::close_exit_events`] does once the threads are gone.
    exit_consumers: Mutex<Vec<RawFd>>,
}

impl std::fmt::Debug for FsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBackend")
            .field("num_queues", &self.num_queues)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FsBackend {
    /// A backend serving `session` over `mem` (the memory the vhost-user
    /// daemon updates on SET_MEM_TABLE); `out` is the session's outbound
    /// side, given the backend request channel when the frontend sends it.
    pub fn new(
        session: Arc<Session>,
        out: Arc<VhostOutbound>,
        opts: &DeviceOptions,
        mem: GuestMem,
    ) -> Result<Self, DeviceError> {
        let queues =
            u32::try_from(opts.request_queues).map_err(|_| DeviceError::TooManyQueues {
                queues: opts.request_queues,
            })?;
        let config = match &opts.tag {
            Some(tag) => Some(VirtioFsConfig::new(tag, queues)?),
            None => None,
        };
        let num_queues = opts.request_queues.saturating_add(1);
        let pool = if opts.thread_pool_size > 0 {
            Some(Pool::new(opts.thread_pool_size).map_err(DeviceError::Threads)?)
        } else {
            None
        };
        Ok(Self {
            core: Arc::new(Core {
                session,
                event_idx: AtomicBool::new(false),
                inflight: (0..num_queues).map(|_| InFlight::default()).collect(),
            }),
            out,
            config,
            num_queues,
            mem,
            pool: Mutex::new(pool),
            exit_consumers: Mutex::new(Vec::new()),
        })
    }

    /// Closes the exit events' consumer ends that the vhost-user library
    /// abandoned. Only for `this`, the last reference to the backend: the
    /// library's epoll threads each hold one while they run, so none runs
    /// now and none can still wait on those descriptors.
    pub fn close_exit_events(this: Arc<Self>) {
        let Some(backend) = Arc::into_inner(this) else {
            warn!("vhost: the epoll threads still run; their exit events stay open");
            return;
        };
        let fds = std::mem::take(
            &mut *backend
                .exit_consumers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for fd in fds {
            if let Err(e) = crate::os::fd::close_abandoned(fd) {
                warn!("vhost: closing an exit event ({fd}): {e}");
            }
        }
    }

    /// Stops the worker pool after its queued requests are done.
    pub fn shutdown(&self) {
        let pool = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(pool);
    }

    /// Serves every available chain of `vring` (queue `queue`).
    fn process_queue(&self, queue: usize, vring: &VringRwLock) {
        let Some(inflight) = self.core.inflight.get(queue) else {
            return;
        };
        // Held while chains are taken off the ring, so that a concurrent
        // GET_VRING_BASE also waits for a chain popped but not yet queued.
        let _busy = inflight.busy();
        let event_idx = self.core.event_idx.load(Ordering::Acquire);
        // Rounds in a row that found nothing: re-enabling notifications
        // may report new chains that arrived meanwhile (worth one more
        // round), or chains that cannot be taken (queue stopped, ring
        // unreadable), which must not make this thread spin.
        let mut empty_rounds = 0u32;
        loop {
            if event_idx {
                if let Err(e) = vring.disable_notification() {
                    warn!("queue {queue}: cannot disable notifications: {e}");
                }
            }
            let mut taken = 0usize;
            loop {
                let chain = match vring.get_mut().get_queue_mut().iter(self.mem.memory()) {
                    Ok(mut avail) => avail.next(),
                    Err(e) => {
                        // Not ready (stopped) or a corrupt avail index:
                        // nothing to do until the next kick.
                        debug!("queue {queue}: {e}");
                        None
                    }
                };
                let Some(chain) = chain else { break };
                taken = taken.saturating_add(1);
                self.submit(queue, vring, chain);
            }
            if !event_idx {
                break;
            }
            empty_rounds = if taken == 0 {
                empty_rounds.saturating_add(1)
            } else {
                0
            };
            match vring.enable_notification() {
                Ok(true) if empty_rounds < 2 => continue,
                Ok(true) => {
                    debug!("queue {queue}: chains announced but none can be taken");
                    break;
                }
                Ok(false) => break,
                Err(e) => {
                    warn!("queue {queue}: cannot enable notifications: {e}");
                    break;
                }
            }
        }
    }

    fn submit(&self, queue: usize, vring: &VringRwLock, chain: Chain) {
        let pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        match pool.as_ref() {
            Some(pool) => {
                let vring = vring.clone();
                // Counted until the job is dropped, run or not.
                let job = QueuedChain::new(Arc::clone(&self.core), queue);
                pool.run(Box::new(move || {
                    job.core.serve_chain(queue, &vring, chain);
                    drop(job);
                }));
            }
            None => {
                drop(pool);
                self.core.serve_chain(queue, vring, chain);
            }
        }
    }
}

impl Core {
    /// Parses, dispatches and completes one chain.
    fn serve_chain(&self, queue: usize, vring: &VringRwLock, mut chain: Chain) {
        let head = chain.head_index();
        let mem = chain.memory().clone();
        let used = {
            let parsed = chain::parse(&mem, head, &mut chain, MAX_REQUEST);
            let mut writer = parsed.writer;
            match parsed.fault {
                None => self.dispatch(queue, &parsed.request, &mut writer),
                Some(e) => {
                    warn!("queue {queue}: {e}");
                    let unique = unique_of(&parsed.request).unwrap_or(0);
                    error_reply(&mut writer, unique, errno_of(&e));
                }
            }
            writer.used()
        };
        self.complete(queue, vring, head, used);
    }

    /// Hands the request (the chain's readable bytes; the session checks
    /// its framing) to the session. An error from the session means the
    /// reply did not fit the chain: EIO is answered in its place.
    fn dispatch(&self, queue: usize, req: &[u8], w: &mut GuestWriter<'_>) {
        // A panic in the session is a bug, but it must not take the queue
        // thread (and with it the device) down: answer EIO instead.
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.session.handle(req, w)));
        if let Ok(Ok(())) = r {
            return;
        }
        let unique = unique_of(req).unwrap_or(0);
        match r {
            Ok(Err(e)) => debug!("queue {queue}: reply to request {unique} not delivered: {e}"),
            _ => warn!("queue {queue}: request {unique} panicked; answered EIO"),
        }
        error_reply(w, unique, libc::EIO);
    }

    /// Puts the chain on the used ring and notifies the guest if needed.
    fn complete(&self, queue: usize, vring: &VringRwLock, head: u16, used: usize) {
        let used = u32::try_from(used).unwrap_or(u32::MAX);
        let mut state = vring.get_mut();
        if let Err(e) = state.add_used(head, used) {
            warn!("queue {queue}: cannot return chain {head}: {e}");
            return;
        }
        let notify = match state.needs_notification() {
            Ok(n) => n,
            Err(e) => {
                debug!("queue {queue}: cannot read used_event: {e}");
                true
            }
        };
        if notify {
            if let Err(e) = state.signal_used_queue() {
                debug!("queue {queue}: cannot signal the guest: {e}");
            }
        }
    }
}

fn errno_of(e: &super::error::ChainError) -> i32 {
    match e {
        super::error::ChainError::RequestTooLong { .. } => libc::E2BIG,
        _ => libc::EIO,
    }
}

impl VhostUserBackend for FsBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.num_queues
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        config::virtio_features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        config::protocol_features(self.config.is_some(), self.out.dax_window().is_some())
    }

    fn set_backend_req_fd(&self, channel: Backend) {
        self.out.set_channel(channel);
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        match self.out.dax_window() {
            Some(size) => Ok(VhostUserShMemConfig::new(1, &[size])),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no shared memory regions without --dax-window",
            )),
        }
    }

    fn set_event_idx(&self, enabled: bool) {
        self.core.event_idx.store(enabled, Ordering::Release);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // An empty answer tells the frontend the range is invalid.
        self.config
            .as_ref()
            .and_then(|c| c.read(offset, size))
            .unwrap_or_default()
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "virtio-fs config space is read-only",
        ))
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        // `self.mem` is the same atomic the daemon just updated; the
        // outbound side watches it for DAX window mappings.
        self.out.memory_updated(&mem.memory());
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // One epoll thread per queue: queue i on thread i.
        (0..self.num_queues).map(|i| 1u64 << i).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => {
                self.exit_consumers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(pair.0.as_raw_fd());
                Some(pair)
            }
            Err(e) => {
                warn!("cannot create an exit event: {e}");
                None
            }
        }
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        if let Some(f) = self.core.inflight.get(queue_index as usize) {
            f.wait_idle();
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            debug!("queue thread {thread_id}: unexpected events {evset:?}");
            return Ok(());
        }
        // One queue per thread, so the thread index is the queue index.
        match vrings.get(usize::from(device_event)) {
            Some(vring) => self.process_queue(thread_id, vring),
            None => debug!("queue thread {thread_id}: event {device_event} for no queue"),
        }
        Ok(())
    }
}
