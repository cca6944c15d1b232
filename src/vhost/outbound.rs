//! What a vhost-user connection sends its guest besides replies: DAX
//! window mappings, as `SHMEM_MAP`/`SHMEM_UNMAP` on the backend request
//! channel (see `crate::fuse::dax`).

use std::io;
use std::sync::{Mutex, PoisonError};

use vhost::vhost_user::message::VhostUserMMap;
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

use crate::fuse::Outbound;

/// What a vhost-user connection sends its guest besides replies: DAX
/// window mappings, as `SHMEM_MAP`/`SHMEM_UNMAP` on the backend request
/// channel (the frontend gives it with SET_BACKEND_REQ_FD). Page-cache
/// stores and entry invalidations do not exist on virtio-fs.
#[derive(Default)]
pub struct VhostOutbound {
    /// The window's size (shared memory region 0), when there is one.
    window: Option<u64>,
    /// The backend request channel, once the frontend gave it.
    channel: Mutex<Option<Backend>>,
}

impl std::fmt::Debug for VhostOutbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostOutbound")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl VhostOutbound {
    /// The outbound side of a connection with a DAX window of `window`
    /// bytes (or none).
    pub fn new(window: Option<u64>) -> Self {
        Self {
            window,
            channel: Mutex::new(None),
        }
    }

    /// Keeps the backend request channel (SET_BACKEND_REQ_FD).
    pub fn set_channel(&self, channel: Backend) {
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = Some(channel);
    }

    /// The channel, cloned out of the lock: a map waits for the VMM's
    /// reply, and the VMM sends memory-table updates on the frontend
    /// socket meanwhile, so no lock of ours is held across the wait (the
    /// channel's own serialises requests on it).
    fn channel(&self) -> io::Result<Backend> {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the frontend gave no backend request channel",
                )
            })
    }
}

impl Outbound for VhostOutbound {
    fn dax_window(&self) -> Option<u64> {
        self.window
    }

    fn dax_map(&self, m: &crate::fuse::DaxMapping<'_>) -> io::Result<()> {
        if self.window.is_none() {
            return Err(crate::fuse::outbound::unsupported());
        }
        let req = VhostUserMMap {
            shmid: 0,
            fd_offset: m.file_offset,
            shm_offset: m.window_offset,
            len: m.len,
            // Read-only asked for; QEMU 11.1 maps writable anyway (see
            // `crate::fuse::dax`).
            flags: 0,
            ..Default::default()
        };
        self.channel()?.shmem_map(&req, &m.file).map(drop)
    }

    fn dax_unmap(&self, window_offset: u64, len: u64) -> io::Result<()> {
        if self.window.is_none() {
            return Err(crate::fuse::outbound::unsupported());
        }
        let req = VhostUserMMap {
            shmid: 0,
            shm_offset: window_offset,
            len,
            ..Default::default()
        };
        self.channel()?.shmem_unmap(&req).map(drop)
    }
}
