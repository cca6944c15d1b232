//! What the device serves: a `fuse::Session` per frontend connection
//! (so that a reconnecting VMM or a rebooted guest starts with no lookup
//! counts and no open handles) over a share that outlives connections.
//!
//! - [`connection_session`]: the session of one connection, with its
//!   [`VhostOutbound`] (DAX window mappings);
//! - [`guest_image_share`]: a share whose image is in the guest's own RAM,
//!   opened at FUSE INIT through the connection's memory table (the FUSE
//!   layer answers everything before that, as for any share).

use std::sync::Arc;

use super::backend::GuestMem;
use super::outbound::VhostOutbound;
use crate::erofs::{Image, ImageOptions};
use crate::fuse::{ImageProvider, OpenError, Session, Share, ShareOptions};
use crate::source::GuestMemorySource;

/// A fresh FUSE session of `share` for one frontend connection (the share
/// is shared between connections: its images are immutable, and their
/// caches stay warm across reconnections), without a DAX window.
pub fn connection_session(share: &Arc<Share>) -> Arc<Session> {
    connection_session_with(share, Arc::new(VhostOutbound::default()))
}

/// The same over a given outbound side (which the backend also holds, to
/// pass it the backend request channel).
pub fn connection_session_with(share: &Arc<Share>, out: Arc<VhostOutbound>) -> Arc<Session> {
    Arc::new(Session::new(Arc::clone(share), out))
}

/// An image in the guest's own RAM (`--image guest:GPA:LEN`).
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Guest-physical address of the image's first byte (any alignment).
    pub gpa: u64,
    /// Length of the image in bytes.
    pub len: u64,
    /// How to open it (caches, extra devices).
    pub options: ImageOptions,
}

/// The share of an image in guest memory: opened when FUSE INIT arrives
/// (after SET_MEM_TABLE: the image is read through the connection's
/// memory table `mem`).
///
/// Before a successful INIT every request gets EIO (as before any INIT);
/// an INIT whose range is not mapped gets ENODEV, one whose range holds no
/// usable image (or too little of it) the errno of the cause (EIO for
/// garbage), each with a log line, and a later INIT tries again.
///
/// The image's metadata and decoded-extent caches keep validated copies:
/// when the guest rewrites the image while it is served, the daemon may
/// go on answering from those copies (stale but consistent), while what
/// it reads afresh reflects the new bytes (validated again, or an error).
pub fn guest_image_share(image: &GuestImage, opts: &ShareOptions, mem: &GuestMem) -> Arc<Share> {
    let provider = GuestImageProvider {
        image: image.clone(),
        mem: mem.clone(),
    };
    Arc::new(Share::opened_at_init(Box::new(provider), opts.clone()))
}

struct GuestImageProvider {
    image: GuestImage,
    mem: GuestMem,
}

impl std::fmt::Debug for GuestImageProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestImageProvider")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl ImageProvider for GuestImageProvider {
    fn describe(&self) -> String {
        format!(
            "guest image at {:#x}..{:#x} ({} bytes)",
            self.image.gpa,
            self.image.gpa.saturating_add(self.image.len),
            self.image.len
        )
    }

    fn open(&self) -> Result<Image, OpenError> {
        let src = GuestMemorySource::new(self.mem.clone(), self.image.gpa, self.image.len)
            .and_then(|s| s.check_mapped().map(|()| s))
            .map_err(OpenError::Unavailable)?;
        let img = Image::open(Arc::new(src), self.image.options.clone())?;
        let sb = img.superblock();
        let need = sb.blocks.saturating_mul(sb.block_size());
        if need > self.image.len {
            return Err(OpenError::TooSmall {
                need,
                have: self.image.len,
            });
        }
        Ok(img)
    }
}
