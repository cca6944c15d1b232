//! What a vhost-user connection sends its guest besides replies: DAX
//! window mappings, as `SHMEM_MAP`/`SHMEM_UNMAP` on the backend request
//! channel (see `crate::fuse::dax`).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use vhost::vhost_user::message::VhostUserMMap;
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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
    /// The window mappings the frontend's memory table shows (see
    /// [`VhostOutbound::memory_updated`]).
    shown: Mutex<Shown>,
    shown_changed: Condvar,
}

/// How long a map waits for the frontend's memory table to show it before
/// going on (and, the first time, concluding that this VMM does not show
/// its window mappings there).
const SHOW_TIMEOUT: Duration = Duration::from_secs(2);

/// One region of the frontend's memory table backed by a file: (device,
/// inode, offset in the file, guest-physical address, length).
type ShownRegion = (u64, u64, u64, u64, u64);

/// What the frontend's memory table holds, as far as window mappings go.
#[derive(Debug, Default)]
struct Shown {
    regions: Vec<ShownRegion>,
    /// Whether this VMM shows its window mappings in the memory table
    /// (QEMU 11.1 does); `None` until the first map tells.
    shows_maps: Option<bool>,
    /// The window's guest-physical address, once a map has shown it.
    window_gpa: Option<u64>,
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
            shown: Mutex::new(Shown::default()),
            shown_changed: Condvar::new(),
        }
    }

    /// The frontend changed the memory table (SET_MEM_TABLE, ADD_MEM_REG,
    /// REM_MEM_REG): keeps its file-backed regions, for [`Self::dax_map`].
    pub fn memory_updated(&self, mem: &GuestMemoryMmap) {
        if self.window.is_none() {
            return;
        }
        let regions = mem
            .iter()
            .filter_map(|r| {
                let fo = r.file_offset()?;
                let md = fo.file().metadata().ok()?;
                Some((md.dev(), md.ino(), fo.start(), r.start_addr().0, r.len()))
            })
            .collect();
        self.lock_shown().regions = regions;
        self.shown_changed.notify_all();
    }

    /// Guest-physical addresses of the shown regions holding `len` bytes
    /// of the file `(dev, ino)` from offset `foff`.
    fn shown_at(shown: &Shown, key: (u64, u64, u64, u64)) -> Vec<u64> {
        shown
            .regions
            .iter()
            .filter(|r| (r.0, r.1, r.2, r.4) == key)
            .map(|r| r.3)
            .collect()
    }

    fn lock_shown(&self) -> std::sync::MutexGuard<'_, Shown> {
        self.shown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After SHMEM_MAP's reply, waits until the frontend's memory table
    /// shows the mapping. QEMU 11.1 replies to SHMEM_MAP *before* it
    /// commits the new memory layout: a guest told at once that its
    /// mapping is set up may read the window before it is there and see
    /// zeros (seen once in ~10 `dax=always` walks under load). QEMU sends
    /// the mapping back as ADD_MEM_REG from that commit, so once the
    /// table shows it, the guest's view has it too. `before`: how many
    /// regions showed this file range before the map was asked for.
    fn wait_shown(&self, key: (u64, u64, u64, u64), window_offset: u64, before: usize) {
        let deadline = Instant::now() + SHOW_TIMEOUT;
        let mut shown = self.lock_shown();
        loop {
            let matching = Self::shown_at(&shown, key);
            let there = match shown.window_gpa {
                Some(base) => matching.contains(&base.saturating_add(window_offset)),
                None => matching.len() > before,
            };
            if there {
                if shown.window_gpa.is_none() && matching.len() == 1 {
                    shown.window_gpa = matching.first().map(|g| g.wrapping_sub(window_offset));
                }
                if shown.shows_maps != Some(true) {
                    debug!("dax: the VMM shows window mappings in its memory table; maps wait for them");
                    shown.shows_maps = Some(true);
                }
                return;
            }
            if shown.shows_maps == Some(false) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                if shown.shows_maps.is_none() {
                    info!("dax: the VMM does not show window mappings in its memory table; maps do not wait");
                    shown.shows_maps = Some(false);
                } else {
                    warn!("dax: the mapping at window offset {window_offset:#x} did not show in the memory table within {SHOW_TIMEOUT:?}");
                }
                return;
            }
            shown = self
                .shown_changed
                .wait_timeout(shown, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
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
        let md = std::fs::File::from(m.file.try_clone_to_owned()?).metadata()?;
        let key = (md.dev(), md.ino(), m.file_offset, m.len);
        let before = Self::shown_at(&self.lock_shown(), key).len();
        self.channel()?.shmem_map(&req, &m.file)?;
        self.wait_shown(key, m.window_offset, before);
        Ok(())
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
