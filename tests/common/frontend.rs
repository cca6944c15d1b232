//! A vhost-user frontend for tests: the VMM's side of the socket and the
//! guest driver's side of the virtqueues.
//!
//! Guest RAM is a memfd shared with the daemon through SET_MEM_TABLE. The
//! split virtqueues (descriptor table, avail and used rings) live in that
//! RAM and are driven by hand, so tests can build any chain, valid or
//! not: [`Frontend::request`] for a plain request/reply round trip,
//! [`Frontend::push_descs`] + [`Frontend::wait_used`] for anything else.
//!
//! Layout (guest physical): RAM starts at [`RAM_BASE`]; queue `q` has its
//! rings in the `q`-th MiB; the rest is a data area handed out by a bump
//! allocator that wraps around ([`Frontend::alloc`]). Extra regions
//! ([`FrontendOptions::extra_regions`], each its own memfd and memory
//! table entry) are the test's own, e.g. for an image in guest memory.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend as VuFrontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest physical address where RAM starts (not 0, to catch code that
/// confuses addresses with offsets).
pub const RAM_BASE: u64 = 0x10_0000;
/// Guest RAM size.
pub const RAM_SIZE: usize = 64 << 20;
/// Ring area per queue.
pub(super) const QUEUE_AREA: u64 = 1 << 20;
/// virtio feature bits.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Descriptor flags.
pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;
pub const VRING_DESC_F_INDIRECT: u16 = 4;

/// How long to wait for the device before failing a test.
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// One split-virtqueue descriptor as the guest writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address of the buffer.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `VRING_DESC_F_*`.
    pub flags: u16,
    /// Next descriptor index (with `VRING_DESC_F_NEXT`).
    pub next: u16,
}

impl Desc {
    /// The 16 bytes of the descriptor (little-endian).
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// A buffer of a chain: where, how long, device-writable or not.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    /// Guest physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct FrontendOptions {
    /// Queues to set up (1 high-priority + request queues).
    pub num_queues: usize,
    /// Size of each queue.
    pub queue_size: u16,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX.
    pub event_idx: bool,
    /// Negotiate the CONFIG protocol feature when offered.
    pub config: bool,
    /// More guest RAM: (guest-physical address, size) of each extra
    /// region, each its own memfd and memory table entry (outside the
    /// main RAM; the allocator never hands them out).
    pub extra_regions: Vec<(u64, usize)>,
    /// Negotiate SHMEM and BACKEND_REQ when offered, and serve the backend
    /// request channel with a [`Window`] (what a VMM with a DAX window
    /// does).
    pub shmem: bool,
}

/// What the backend asked of the window, on the backend request channel.
#[derive(Debug)]
pub enum WindowEvent {
    /// SHMEM_MAP: the request and the bytes of its fd at
    /// `fd_offset..fd_offset + len`.
    Map {
        shmid: u8,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        flags: u64,
        /// The fd's length.
        fd_len: u64,
        /// The fd was opened for reading and writing (QEMU needs it).
        fd_writable: bool,
        bytes: Vec<u8>,
        /// The (device, inode) of the fd's file: equal for two maps of
        /// one host file.
        fd_id: (u64, u64),
        /// The fd (a copy), as the VMM would map it.
        file: File,
    },
    /// SHMEM_UNMAP.
    Unmap { shm_offset: u64, len: u64 },
}

/// The VMM's side of the backend request channel: records SHMEM_MAP and
/// SHMEM_UNMAP, refusing maps when told to.
#[derive(Debug, Default)]
pub struct Window {
    pub events: Vec<WindowEvent>,
    /// Answer SHMEM_MAP with an error.
    pub refuse_maps: bool,
}

impl vhost::vhost_user::VhostUserFrontendReqHandlerMut for Window {
    fn shmem_map(
        &mut self,
        req: &vhost::vhost_user::message::VhostUserMMap,
        fd: &dyn AsRawFd,
    ) -> vhost::vhost_user::HandlerResult<u64> {
        // SAFETY: F_GETFL takes no argument and touches no memory.
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        // SAFETY: F_DUPFD_CLOEXEC takes an int argument; the new
        // descriptor is owned by the File made from it.
        let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        assert!(dup >= 0, "dup of the SHMEM_MAP fd");
        // SAFETY: `dup` is a new descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(dup) };
        let (fd_offset, len) = (req.fd_offset, req.len);
        let mut bytes = vec![0u8; len as usize];
        let meta = file.metadata().expect("fstat of the SHMEM_MAP fd");
        let fd_len = meta.len();
        let fd_id = (
            std::os::unix::fs::MetadataExt::dev(&meta),
            std::os::unix::fs::MetadataExt::ino(&meta),
        );
        let _ = std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, fd_offset);
        self.events.push(WindowEvent::Map {
            shmid: req.shmid,
            fd_offset,
            shm_offset: req.shm_offset,
            len,
            flags: req.flags,
            fd_len,
            fd_writable: fl >= 0 && fl & libc::O_ACCMODE == libc::O_RDWR,
            bytes,
            fd_id,
            file,
        });
        if self.refuse_maps {
            return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
        }
        Ok(0)
    }

    fn shmem_unmap(
        &mut self,
        req: &vhost::vhost_user::message::VhostUserMMap,
    ) -> vhost::vhost_user::HandlerResult<u64> {
        self.events.push(WindowEvent::Unmap {
            shm_offset: req.shm_offset,
            len: req.len,
        });
        Ok(0)
    }
}

impl Default for FrontendOptions {
    fn default() -> Self {
        Self {
            num_queues: 2,
            queue_size: 256,
            event_idx: true,
            config: true,
            extra_regions: Vec::new(),
            shmem: false,
        }
    }
}

/// One virtqueue as the driver sees it.
#[derive(Debug)]
pub(super) struct Queue {
    pub(super) size: u16,
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    pub(super) avail_idx: u16,
    pub(super) used_seen: u16,
    pub(super) next_desc: u16,
    pub(super) kick: EventFd,
    pub(super) call: EventFd,
}

/// A connected frontend with its guest RAM and queues.
pub struct Frontend {
    pub(super) vu: VuFrontend,
    pub(super) mem: GuestMemoryMmap,
    pub(super) _ram: Vec<File>,
    pub(super) queues: Vec<Queue>,
    pub(super) data_start: u64,
    pub(super) data_next: u64,
    pub(super) data_end: u64,
    /// Virtio features the device offered.
    pub device_features: u64,
    /// Protocol features the device offered.
    pub device_protocol_features: VhostUserProtocolFeatures,
    /// Protocol features acked.
    pub protocol_features: VhostUserProtocolFeatures,
    pub(super) event_idx: bool,
    /// The backend request channel's recorder (with
    /// [`FrontendOptions::shmem`]).
    pub window: Option<Arc<Mutex<Window>>>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

/// A memfd of `size` bytes.
pub(super) fn memfd(size: usize) -> File {
    let name = c"test-guest-ram";
    // SAFETY: `name` is NUL-terminated; memfd_create has no other inputs.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size as u64)
        .expect("sizing the guest RAM memfd");
    file
}

impl Frontend {
    /// Connects to `socket` and sets the device up as QEMU does:
    /// features, owner, protocol features, memory table, then each queue.
    pub fn connect(socket: &Path, opts: &FrontendOptions) -> Frontend {
        let layout: Vec<(u64, usize)> = std::iter::once((RAM_BASE, RAM_SIZE))
            .chain(opts.extra_regions.iter().copied())
            .collect();
        let ram: Vec<File> = layout.iter().map(|&(_, size)| memfd(size)).collect();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(layout.iter().zip(&ram).map(
            |(&(gpa, size), f)| {
                (
                    GuestAddress(gpa),
                    size,
                    Some(FileOffset::new(f.try_clone().expect("dup memfd"), 0)),
                )
            },
        ))
        .expect("mapping guest RAM");
        // (No read timeout: the vhost crate retries on EAGAIN, so a
        // timeout would turn a hang into a busy loop.)
        let sock = std::os::unix::net::UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        let mut vu = VuFrontend::from_stream(sock, opts.num_queues as u64);

        let device_features = vu.get_features().expect("GET_FEATURES");
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        assert_ne!(device_features & proto_bit, 0, "no PROTOCOL_FEATURES");
        vu.set_owner().expect("SET_OWNER");
        let device_protocol_features = vu.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
        let mut want = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        if opts.config {
            want |= VhostUserProtocolFeatures::CONFIG;
        }
        if opts.shmem {
            want |= VhostUserProtocolFeatures::SHMEM | VhostUserProtocolFeatures::BACKEND_REQ;
        }
        let protocol_features = device_protocol_features & want;
        vu.set_protocol_features(protocol_features)
            .expect("SET_PROTOCOL_FEATURES");
        let window = if protocol_features.contains(VhostUserProtocolFeatures::BACKEND_REQ) {
            let w = Arc::new(Mutex::new(Window::default()));
            let mut server = vhost::vhost_user::FrontendReqHandler::new(Arc::clone(&w))
                .expect("backend request channel");
            server.set_reply_ack_flag(true);
            let tx = server.get_tx_raw_fd();
            vu.set_backend_request_fd(&tx).expect("SET_BACKEND_REQ_FD");
            // Served until the daemon closes its end; a refused request
            // was answered with an error and the next one is served.
            std::thread::spawn(move || {
                while let Ok(_) | Err(vhost::vhost_user::Error::ReqHandlerError(_)) =
                    server.handle_request()
                {}
            });
            Some(w)
        } else {
            None
        };
        if protocol_features.contains(VhostUserProtocolFeatures::MQ) {
            let n = vu.get_queue_num().expect("GET_QUEUE_NUM");
            assert!(
                n >= opts.num_queues as u64,
                "device has {n} queues, test wants {}",
                opts.num_queues
            );
        }
        let mut acked = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | proto_bit;
        if opts.event_idx {
            acked |= VIRTIO_RING_F_EVENT_IDX;
        }
        assert_eq!(device_features & acked, acked, "device lacks features");
        vu.set_features(acked).expect("SET_FEATURES");

        let infos: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).expect("region info"))
            .collect();
        vu.set_mem_table(&infos).expect("SET_MEM_TABLE");
        let region = mem
            .iter()
            .find(|r| r.start_addr() == GuestAddress(RAM_BASE))
            .expect("the main RAM region");
        let va_base = region.as_ptr() as u64;

        let data_start = RAM_BASE + QUEUE_AREA * opts.num_queues as u64;
        let mut fe = Frontend {
            vu,
            mem,
            _ram: ram,
            queues: Vec::new(),
            data_start,
            data_next: data_start,
            data_end: RAM_BASE + RAM_SIZE as u64,
            device_features,
            device_protocol_features,
            protocol_features,
            event_idx: opts.event_idx,
            window,
        };
        for q in 0..opts.num_queues {
            fe.setup_queue(q, opts.queue_size, va_base);
        }
        fe
    }

    fn setup_queue(&mut self, q: usize, size: u16, va_base: u64) {
        let base = RAM_BASE + QUEUE_AREA * q as u64;
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        assert!(used + 6 + 8 * u64::from(size) <= base + QUEUE_AREA);
        let va = |gpa: u64| va_base + (gpa - RAM_BASE);
        let queue = Queue {
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            used_seen: 0,
            next_desc: 0,
            kick: EventFd::new(EFD_NONBLOCK).expect("kick eventfd"),
            call: EventFd::new(EFD_NONBLOCK).expect("call eventfd"),
        };
        self.vu.set_vring_num(q, size).expect("SET_VRING_NUM");
        let cfg = VringConfigData {
            queue_max_size: size,
            queue_size: size,
            flags: 0,
            desc_table_addr: va(desc),
            used_ring_addr: va(used),
            avail_ring_addr: va(avail),
            log_addr: None,
        };
        self.vu.set_vring_addr(q, &cfg).expect("SET_VRING_ADDR");
        self.vu.set_vring_base(q, 0).expect("SET_VRING_BASE");
        self.vu
            .set_vring_call(q, &queue.call)
            .expect("SET_VRING_CALL");
        self.vu
            .set_vring_kick(q, &queue.kick)
            .expect("SET_VRING_KICK");
        self.vu.set_vring_enable(q, true).expect("SET_VRING_ENABLE");
        self.queues.push(queue);
    }

    /// GET_SHMEM_CONFIG: the sizes of the device's shared memory regions.
    pub fn get_shmem_config(&mut self) -> Result<Vec<u64>, String> {
        let c = self.vu.get_shmem_config().map_err(|e| e.to_string())?;
        let n = c.nregions as usize;
        let sizes = c.memory_sizes;
        Ok(sizes[..n.min(sizes.len())].to_vec())
    }

    /// Reads `size` bytes of config space at `offset` (GET_CONFIG).
    pub fn get_config(&mut self, offset: u32, size: u32) -> Result<Vec<u8>, String> {
        let buf = vec![0u8; size as usize];
        self.vu
            .get_config(offset, size, VhostUserConfigFlags::WRITABLE, &buf)
            .map(|(_, payload)| payload)
            .map_err(|e| e.to_string())
    }

    /// Stops queue `q` (GET_VRING_BASE) and returns the device's next
    /// avail index.
    pub fn get_vring_base(&mut self, q: usize) -> u32 {
        self.vu.get_vring_base(q).expect("GET_VRING_BASE")
    }

    /// The guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Allocates `len` bytes of the data area (64-byte aligned), wrapping
    /// around at the end: fine as long as less than the data area (tens of
    /// MiB) is in flight.
    pub fn alloc(&mut self, len: usize) -> u64 {
        let len = (len as u64 + 63) & !63;
        assert!(len <= self.data_end - self.data_start, "allocation too big");
        if self.data_next + len > self.data_end {
            self.data_next = self.data_start;
        }
        let at = self.data_next;
        self.data_next += len;
        at
    }

    /// Writes guest memory.
    pub fn write(&self, gpa: u64, data: &[u8]) {
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .expect("write guest memory");
    }

    /// Reads guest memory.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(gpa))
            .expect("read guest memory");
        v
    }

    /// Writes descriptor `index` of queue `q`'s table.
    pub fn write_desc(&self, q: usize, index: u16, d: Desc) {
        let queue = &self.queues[q];
        assert!(index < queue.size);
        self.write(queue.desc + 16 * u64::from(index), &d.to_bytes());
    }

    /// Makes `head` available on queue `q` (without kicking).
    pub fn make_available(&mut self, q: usize, head: u16) {
        let event_idx = self.event_idx;
        let queue = &mut self.queues[q];
        let slot = queue.avail_idx % queue.size;
        let ring = queue.avail + 4 + 2 * u64::from(slot);
        self.mem
            .write_obj(head, GuestAddress(ring))
            .expect("avail ring");
        if event_idx {
            // used_event: interrupt once the device passes what we saw.
            let used_event = queue.avail + 4 + 2 * u64::from(queue.size);
            self.mem
                .write_obj(queue.used_seen, GuestAddress(used_event))
                .expect("used_event");
        }
        queue.avail_idx = queue.avail_idx.wrapping_add(1);
        self.mem
            .store(
                queue.avail_idx,
                GuestAddress(queue.avail + 2),
                Ordering::Release,
            )
            .expect("avail idx");
    }

    /// Overwrites queue `q`'s avail index (for corrupt-ring tests).
    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        let queue = &mut self.queues[q];
        queue.avail_idx = idx;
        self.mem
            .store(idx, GuestAddress(queue.avail + 2), Ordering::Release)
            .expect("avail idx");
    }

    /// Notifies the device that queue `q` has new buffers.
    pub fn kick(&self, q: usize) {
        self.queues[q].kick.write(1).expect("kick");
    }

    /// Puts `bufs` in consecutive free descriptors of queue `q` (or, with
    /// `indirect`, in an indirect table), makes the chain available and
    /// kicks. Returns the head index.
    pub fn push_chain(&mut self, q: usize, bufs: &[Buf], indirect: bool) -> u16 {
        let descs: Vec<Desc> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| Desc {
                addr: b.addr,
                len: b.len,
                flags: if b.write { VRING_DESC_F_WRITE } else { 0 }
                    | if i + 1 < bufs.len() {
                        VRING_DESC_F_NEXT
                    } else {
                        0
                    },
                next: 0,
            })
            .collect();
        if indirect {
            let table = self.alloc(16 * descs.len());
            for (i, d) in descs.iter().enumerate() {
                let d = Desc {
                    next: (i + 1) as u16,
                    ..*d
                };
                self.write(table + 16 * i as u64, &d.to_bytes());
            }
            let head = self.take_descs(q, 1);
            let d = Desc {
                addr: table,
                len: 16 * descs.len() as u32,
                flags: VRING_DESC_F_INDIRECT,
                next: 0,
            };
            self.write_desc(q, head, d);
            self.make_available(q, head);
            self.kick(q);
            return head;
        }
        let head = self.take_descs(q, descs.len().max(1));
        let size = self.queues[q].size;
        for (i, d) in descs.iter().enumerate() {
            let idx = (head + i as u16) % size;
            let d = Desc {
                next: (idx + 1) % size,
                ..*d
            };
            self.write_desc(q, idx, d);
        }
        self.make_available(q, head);
        self.kick(q);
        head
    }

    /// Reserves `n` consecutive descriptor indices (round robin; callers
    /// keep fewer than the queue size in flight).
    fn take_descs(&mut self, q: usize, n: usize) -> u16 {
        let queue = &mut self.queues[q];
        assert!(n <= queue.size as usize, "chain longer than the queue");
        if queue.next_desc as usize + n > queue.size as usize {
            queue.next_desc = 0;
        }
        let head = queue.next_desc;
        queue.next_desc = ((queue.next_desc as usize + n) % queue.size as usize) as u16;
        head
    }

    /// Writes raw descriptors at the given indices, makes `head` available
    /// and kicks: for malformed chains.
    pub fn push_descs(&mut self, q: usize, descs: &[(u16, Desc)], head: u16) {
        for (i, d) in descs {
            self.write_desc(q, *i, *d);
        }
        self.make_available(q, head);
        self.kick(q);
    }

    /// The next used element of queue `q` if there is one: (id, len).
    pub fn poll_used(&mut self, q: usize) -> Option<(u32, u32)> {
        let queue = &mut self.queues[q];
        let idx: u16 = self
            .mem
            .load(GuestAddress(queue.used + 2), Ordering::Acquire)
            .expect("used idx");
        if idx == queue.used_seen {
            return None;
        }
        let slot = queue.used_seen % queue.size;
        let elem = queue.used + 4 + 8 * u64::from(slot);
        let id: u32 = self.mem.read_obj(GuestAddress(elem)).expect("used id");
        let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).expect("used len");
        queue.used_seen = queue.used_seen.wrapping_add(1);
        Some((id, len))
    }

    /// Waits for the next used element of queue `q`.
    pub fn wait_used(&mut self, q: usize, timeout: Duration) -> Result<(u32, u32), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(u) = self.poll_used(q) {
                return Ok(u);
            }
            if self.event_idx {
                // Ask for an interrupt at the next used buffer, then look
                // again in case it came before the request was visible.
                let queue = &self.queues[q];
                let used_event = queue.avail + 4 + 2 * u64::from(queue.size);
                self.mem
                    .store(queue.used_seen, GuestAddress(used_event), Ordering::SeqCst)
                    .expect("used_event");
                if let Some(u) = self.poll_used(q) {
                    return Ok(u);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no used buffer on queue {q} after {timeout:?}"));
            }
            let ms = (deadline - now).as_millis().min(100) as i32;
            let mut pfd = libc::pollfd {
                fd: self.queues[q].call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            let _ = self.queues[q].call.read();
        }
    }

    /// Whether queue `q` has nothing used that we have not seen, waiting a
    /// little to be sure.
    pub fn no_used_within(&mut self, q: usize, wait: Duration) -> bool {
        std::thread::sleep(wait);
        self.poll_used(q).is_none()
    }

    /// Sends `req` on queue `q` with `reply_cap` bytes of reply space
    /// (split into pieces of at most `piece` bytes, 0: one piece) and
    /// returns the reply (the used length of the writable part).
    pub fn request_with(
        &mut self,
        q: usize,
        req: &[u8],
        reply_cap: usize,
        piece: usize,
        indirect: bool,
    ) -> Vec<u8> {
        let in_addr = self.alloc(req.len());
        self.write(in_addr, req);
        let out_addr = self.alloc(reply_cap);
        // Poison the reply area so a short write is visible.
        self.write(out_addr, &vec![0xa5; reply_cap]);
        let mut bufs = Vec::new();
        let split = |addr: u64, len: usize, write: bool, bufs: &mut Vec<Buf>| {
            let step = if piece == 0 { len.max(1) } else { piece };
            let mut off = 0;
            while off < len {
                let n = step.min(len - off);
                bufs.push(Buf {
                    addr: addr + off as u64,
                    len: n as u32,
                    write,
                });
                off += n;
            }
        };
        split(in_addr, req.len(), false, &mut bufs);
        split(out_addr, reply_cap, true, &mut bufs);
        let head = self.push_chain(q, &bufs, indirect);
        let (id, len) = self
            .wait_used(q, DEVICE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id, u32::from(head), "used id is not the chain head");
        assert!(len as usize <= reply_cap, "used len {len} > {reply_cap}");
        self.read(out_addr, len as usize)
    }

    /// [`Self::request_with`] with the reply space in one piece.
    pub fn request(&mut self, q: usize, req: &[u8], reply_cap: usize) -> Vec<u8> {
        self.request_with(q, req, reply_cap, 0, false)
    }

    /// Sends `req` on queue `q` without any reply space and returns the
    /// used length (FORGET and friends).
    pub fn send_no_reply(&mut self, q: usize, req: &[u8]) -> u32 {
        let in_addr = self.alloc(req.len());
        self.write(in_addr, req);
        let head = self.push_chain(
            q,
            &[Buf {
                addr: in_addr,
                len: req.len() as u32,
                write: false,
            }],
            false,
        );
        let (id, len) = self
            .wait_used(q, DEVICE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id, u32::from(head));
        len
    }
}
