//! The test [`Frontend`] speaking cloud-hypervisor's vhost-user message
//! sequence (its `vhost_user` device code and `vu_common_ctrl.rs`), which
//! differs from QEMU's in order and in what it offers:
//!
//! - set-up: SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES,
//!   SET_PROTOCOL_FEATURES (it offers MQ, CONFIGURE_MEM_SLOTS, REPLY_ACK,
//!   INFLIGHT_SHMFD, LOG_SHMFD and DEVICE_STATE, and keeps what the
//!   backend also has), GET_QUEUE_NUM, then at activation SET_FEATURES
//!   (it offers INDIRECT_DESC, EVENT_IDX, VERSION_1, IN_ORDER,
//!   ORDER_PLATFORM, NOTIFICATION_DATA, keeping the backend's), SET_MEM_TABLE,
//!   SET_VRING_NUM for every queue, then per queue SET_VRING_ADDR,
//!   SET_VRING_BASE, SET_VRING_CALL, SET_VRING_KICK, then SET_VRING_ENABLE
//!   for every queue;
//! - memory hotplug: ADD_MEM_REG with the new region's memfd;
//! - reconnect after a hang-up: SET_OWNER, GET_FEATURES,
//!   SET_PROTOCOL_FEATURES with what was acked before (no
//!   GET_PROTOCOL_FEATURES), then the whole activation again with every
//!   region in SET_MEM_TABLE and each queue's base at its avail index.

use std::path::Path;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend as VuFrontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::frontend::{
    memfd, Frontend, FrontendOptions, Queue, QUEUE_AREA, RAM_BASE, RAM_SIZE, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};

/// virtio feature bits cloud-hypervisor offers besides the common ones.
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;
pub const VIRTIO_F_ORDER_PLATFORM: u64 = 1 << 36;
pub const VIRTIO_F_NOTIFICATION_DATA: u64 = 1 << 38;

/// The protocol features cloud-hypervisor's virtio-fs device offers.
pub fn offered_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::INFLIGHT_SHMFD
        | VhostUserProtocolFeatures::LOG_SHMFD
        | VhostUserProtocolFeatures::DEVICE_STATE
}

/// The virtio features cloud-hypervisor offers.
pub fn offered_features() -> u64 {
    VIRTIO_RING_F_INDIRECT_DESC
        | VIRTIO_RING_F_EVENT_IDX
        | VIRTIO_F_VERSION_1
        | VIRTIO_F_IN_ORDER
        | VIRTIO_F_ORDER_PLATFORM
        | VIRTIO_F_NOTIFICATION_DATA
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// What cloud-hypervisor agreed on with the backend, kept for reconnects.
#[derive(Debug, Clone, Copy)]
pub struct Agreed {
    /// Acked virtio features.
    pub features: u64,
    /// Acked protocol features.
    pub protocol: VhostUserProtocolFeatures,
    /// GET_QUEUE_NUM's answer.
    pub queue_num: u64,
}

impl Frontend {
    /// Connects to `socket` and sets the device up with cloud-hypervisor's
    /// sequence (see the module docs). `opts.num_queues` counts the
    /// high-priority queue.
    pub fn connect_like_cloud_hypervisor(
        socket: &Path,
        opts: &FrontendOptions,
    ) -> (Frontend, Agreed) {
        let ram = vec![memfd(RAM_SIZE)];
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(RAM_BASE),
            RAM_SIZE,
            Some(FileOffset::new(ram[0].try_clone().expect("dup memfd"), 0)),
        )])
        .expect("mapping guest RAM");
        let mut vu = connect(socket, opts.num_queues);

        // negotiate_features_vhost_user().
        vu.set_owner().expect("SET_OWNER");
        let backend_features = vu.get_features().expect("GET_FEATURES");
        let features = offered_features() & backend_features;
        assert_ne!(
            features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0,
            "no PROTOCOL_FEATURES"
        );
        let backend_protocol = vu.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
        let protocol = offered_protocol_features() & backend_protocol;
        vu.set_protocol_features(protocol)
            .expect("SET_PROTOCOL_FEATURES");
        // The fs device asks for the queue count when MQ was agreed.
        assert!(protocol.contains(VhostUserProtocolFeatures::MQ), "no MQ");
        let queue_num = vu.get_queue_num().expect("GET_QUEUE_NUM");
        assert!(
            queue_num >= opts.num_queues as u64,
            "backend has {queue_num} queues, {} wanted",
            opts.num_queues
        );
        let agreed = Agreed {
            features,
            protocol,
            queue_num,
        };

        let data_start = RAM_BASE + QUEUE_AREA * opts.num_queues as u64;
        let mut fe = Frontend {
            vu,
            mem,
            _ram: ram,
            queues: Vec::new(),
            data_start,
            data_next: data_start,
            data_end: RAM_BASE + RAM_SIZE as u64,
            device_features: backend_features,
            device_protocol_features: backend_protocol,
            protocol_features: protocol,
            event_idx: features & VIRTIO_RING_F_EVENT_IDX != 0,
            window: None,
        };
        for q in 0..opts.num_queues {
            let queue = new_queue(q, opts.queue_size);
            fe.queues.push(queue);
        }
        fe.activate_like_cloud_hypervisor(&agreed);
        (fe, agreed)
    }

    /// setup_vhost_user(): features, memory table, then the vrings in
    /// cloud-hypervisor's order, each queue's base at its avail index.
    fn activate_like_cloud_hypervisor(&mut self, agreed: &Agreed) {
        self.vu.set_features(agreed.features).expect("SET_FEATURES");
        let infos: Vec<VhostUserMemoryRegionInfo> = self
            .mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).expect("region info"))
            .collect();
        self.vu.set_mem_table(&infos).expect("SET_MEM_TABLE");
        let region = self
            .mem
            .iter()
            .find(|r| r.start_addr() == GuestAddress(RAM_BASE))
            .expect("the main RAM region");
        let va_base = region.as_ptr() as u64;
        let va = |gpa: u64| va_base + (gpa - RAM_BASE);
        for (q, queue) in self.queues.iter().enumerate() {
            self.vu.set_vring_num(q, queue.size).expect("SET_VRING_NUM");
        }
        for (q, queue) in self.queues.iter().enumerate() {
            let cfg = VringConfigData {
                queue_max_size: queue.size,
                queue_size: queue.size,
                flags: 0,
                desc_table_addr: va(queue.desc),
                used_ring_addr: va(queue.used),
                avail_ring_addr: va(queue.avail),
                log_addr: None,
            };
            self.vu.set_vring_addr(q, &cfg).expect("SET_VRING_ADDR");
            self.vu
                .set_vring_base(q, queue.avail_idx)
                .expect("SET_VRING_BASE");
            self.vu
                .set_vring_call(q, &queue.call)
                .expect("SET_VRING_CALL");
            self.vu
                .set_vring_kick(q, &queue.kick)
                .expect("SET_VRING_KICK");
        }
        for q in 0..self.queues.len() {
            self.vu.set_vring_enable(q, true).expect("SET_VRING_ENABLE");
        }
    }

    /// Hotplugs `size` bytes of guest RAM at `gpa` (a new memfd) with
    /// ADD_MEM_REG; request buffers are allocated there from now on.
    pub fn hotplug_memory(&mut self, gpa: u64, size: usize) {
        let file = memfd(size);
        let region = GuestRegionMmap::<()>::from_range(
            GuestAddress(gpa),
            size,
            Some(FileOffset::new(file.try_clone().expect("dup memfd"), 0)),
        )
        .expect("mapping the new region");
        let info = VhostUserMemoryRegionInfo::from_guest_region(&region).expect("region info");
        self.mem = self
            .mem
            .insert_region(std::sync::Arc::new(region))
            .expect("adding the region");
        self._ram.push(file);
        self.vu.add_mem_region(&info).expect("ADD_MEM_REG");
        self.data_start = gpa;
        self.data_next = gpa;
        self.data_end = gpa + size as u64;
    }

    /// cloud-hypervisor's reconnect after the backend hung up (or was
    /// restarted): a new connection to `socket`, then SET_OWNER,
    /// GET_FEATURES, SET_PROTOCOL_FEATURES (as agreed before, without
    /// asking), and the activation again on the same rings and memory.
    pub fn reconnect_like_cloud_hypervisor(&mut self, socket: &Path, agreed: &Agreed) {
        let mut vu = connect(socket, self.queues.len());
        vu.set_owner().expect("SET_OWNER");
        let backend_features = vu.get_features().expect("GET_FEATURES");
        assert_eq!(
            backend_features & agreed.features,
            agreed.features,
            "the backend lost features across the reconnect"
        );
        vu.set_protocol_features(agreed.protocol)
            .expect("SET_PROTOCOL_FEATURES");
        self.vu = vu;
        self.activate_like_cloud_hypervisor(agreed);
    }

    /// Hangs up: closes the connection (the daemon waits for the next).
    pub fn hang_up(&mut self, socket: &Path) {
        // Replaced by a connection nobody speaks on; the old one closes.
        self.vu = connect_idle(socket);
    }
}

fn connect(socket: &Path, queues: usize) -> VuFrontend {
    let sock = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    VuFrontend::from_stream(sock, queues as u64)
}

/// A frontend over one end of a socket pair (no daemon behind it): what
/// a hung-up frontend holds until it reconnects.
fn connect_idle(_socket: &Path) -> VuFrontend {
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    VuFrontend::from_stream(a, 1)
}

fn new_queue(q: usize, size: u16) -> Queue {
    let base = RAM_BASE + QUEUE_AREA * q as u64;
    let desc = base;
    let avail = desc + 16 * u64::from(size);
    let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
    assert!(used + 6 + 8 * u64::from(size) <= base + QUEUE_AREA);
    Queue {
        size,
        desc,
        avail,
        used,
        avail_idx: 0,
        used_seen: 0,
        next_desc: 0,
        kick: EventFd::new(EFD_NONBLOCK).expect("kick eventfd"),
        call: EventFd::new(EFD_NONBLOCK).expect("call eventfd"),
    }
}
