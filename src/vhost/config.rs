//! The virtio-fs device as the frontend sees it: feature bits, protocol
//! features, queue layout and config space (virtio spec 1.3, 5.11
//! "File System Device").

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use zerocopy::little_endian::U32;

use super::error::TagError;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Length of the tag field of the config space.
pub const TAG_LEN: usize = 36;

/// The high-priority queue's index (FORGET, INTERRUPT).
pub const HIPRIO_QUEUE: usize = 0;

/// Largest queue size we accept (split virtqueues allow 32768).
pub const MAX_QUEUE_SIZE: usize = 32768;

/// Most request queues `--queues` accepts.
pub const MAX_REQUEST_QUEUES: usize = 62;

/// virtio-fs configuration space (`struct virtio_fs_config`), without the
/// optional `notify_buf_size` of `VIRTIO_FS_F_NOTIFICATION`, which we do
/// not offer.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VirtioFsConfig {
    /// Filesystem name, UTF-8, NUL-padded (not terminated when 36 bytes).
    pub tag: [u8; TAG_LEN],
    /// Number of request queues (queues 1..=N; queue 0 is high priority).
    pub num_request_queues: U32,
}

impl VirtioFsConfig {
    /// The config space for `tag` and `queues` request queues.
    pub fn new(tag: &str, queues: u32) -> Result<Self, TagError> {
        let bytes = tag.as_bytes();
        if bytes.is_empty() || bytes.len() > TAG_LEN {
            return Err(TagError::Length {
                tag: tag.to_owned(),
                len: bytes.len(),
                max: TAG_LEN,
            });
        }
        if bytes.contains(&0) {
            return Err(TagError::Nul {
                tag: tag.to_owned(),
            });
        }
        let mut t = [0u8; TAG_LEN];
        t[..bytes.len()].copy_from_slice(bytes);
        Ok(Self {
            tag: t,
            num_request_queues: U32::new(queues),
        })
    }

    /// `size` bytes of the config space at `offset`, or `None` when the
    /// range is not inside it.
    pub fn read(&self, offset: u32, size: u32) -> Option<Vec<u8>> {
        let bytes = self.as_bytes();
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        bytes.get(start..end).map(<[u8]>::to_vec)
    }
}

/// The virtio feature bits we offer.
pub fn virtio_features() -> u64 {
    (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// The vhost-user protocol features we offer. `CONFIG` only when a tag was
/// given: QEMU's vhost-user-fs-pci takes the tag from its own command line
/// and does not ask, while a generic vhost-user device reads it from us.
/// `SHMEM` (with the backend request channel it needs) only with a DAX
/// window.
pub fn protocol_features(with_config: bool, with_window: bool) -> VhostUserProtocolFeatures {
    let mut f = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
    if with_config {
        f |= VhostUserProtocolFeatures::CONFIG;
    }
    if with_window {
        f |= VhostUserProtocolFeatures::SHMEM | VhostUserProtocolFeatures::BACKEND_REQ;
    }
    f
}

/// Smallest DAX window: one 2 MiB range.
pub const MIN_DAX_WINDOW: u64 = 2 << 20;

/// Largest DAX window accepted (64 GiB).
pub const MAX_DAX_WINDOW: u64 = 64 << 30;

/// Checks a DAX window size: QEMU aborts unless it is a power of two and
/// a multiple of 2 MiB.
pub fn check_dax_window(size: u64) -> Result<u64, String> {
    if !size.is_power_of_two() || !(MIN_DAX_WINDOW..=MAX_DAX_WINDOW).contains(&size) {
        return Err(format!(
            "{size} bytes: a DAX window is a power of two from 2 MiB to 64 GiB"
        ));
    }
    Ok(size)
}

/// The `--print-capabilities` document of the vhost-user spec's "Backend
/// program conventions": the device type and the (type-specific) feature
/// names we support, of which there are none for `fs`.
pub fn capabilities_json() -> String {
    "{\n  \"type\": \"fs\",\n  \"features\": []\n}\n".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn test_config_layout_matches_virtio_spec() {
        assert_eq!(size_of::<VirtioFsConfig>(), 40);
        assert_eq!(offset_of!(VirtioFsConfig, tag), 0);
        assert_eq!(offset_of!(VirtioFsConfig, num_request_queues), 36);
    }

    #[test]
    fn test_config_read_ranges() {
        let c = VirtioFsConfig::new("myfs", 3).unwrap();
        let all = c.read(0, 40).unwrap();
        assert_eq!(&all[..5], b"myfs\0");
        assert_eq!(&all[36..], &[3, 0, 0, 0]);
        assert_eq!(c.read(36, 4).unwrap(), vec![3, 0, 0, 0]);
        assert_eq!(c.read(40, 0).unwrap(), Vec::<u8>::new());
        assert!(c.read(37, 4).is_none());
        assert!(c.read(u32::MAX, u32::MAX).is_none());
    }

    #[test]
    fn test_config_tag_rules() {
        let table: &[(&str, bool)] = &[
            ("a", true),
            (&"x".repeat(36), true),
            (&"x".repeat(37), false),
            ("", false),
            ("a\0b", false),
        ];
        for (tag, ok) in table {
            assert_eq!(VirtioFsConfig::new(tag, 1).is_ok(), *ok, "{tag:?}");
        }
    }

    #[test]
    fn test_features_include_required_bits() {
        let f = virtio_features();
        for bit in [32, 28, 29, 30] {
            assert_ne!(f & (1 << bit), 0, "bit {bit}");
        }
        assert!(!protocol_features(false, false).contains(VhostUserProtocolFeatures::CONFIG));
        assert!(protocol_features(true, false).contains(VhostUserProtocolFeatures::CONFIG));
        let shmem = VhostUserProtocolFeatures::SHMEM | VhostUserProtocolFeatures::BACKEND_REQ;
        assert!(!protocol_features(true, false).intersects(shmem));
        assert!(protocol_features(true, true).contains(shmem));
    }

    #[test]
    fn test_dax_window_sizes() {
        let table: &[(u64, bool)] = &[
            (0, false),
            (1 << 20, false),
            (2 << 20, true),
            (3 << 20, false),
            (256 << 20, true),
            (64 << 30, true),
            (128 << 30, false),
        ];
        for &(size, ok) in table {
            assert_eq!(check_dax_window(size).is_ok(), ok, "{size}");
        }
    }
}
