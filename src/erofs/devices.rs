//! Where an image's bytes are: the primary source and the extra devices
//! (blobs) of the device table, which of them holds a physical address, and
//! which file descriptor to splice it from.
//!
//! Physical addresses come in two forms. Chunk indexes name a device id
//! and an address on that device. Everything else (flat and compressed
//! data) uses the unified address space: the primary image, then each
//! extra device at its `uniaddr` block. When the extra devices are not
//! given, the image is read "flat": each device is looked up inside the
//! primary source at its unified address, as the kernel does without a
//! `device=` option. A read that runs past the end of the primary source
//! there is a missing device, not a truncated image.

use std::sync::Arc;

use zerocopy::FromBytes;

use super::error::At;
use super::ondisk::DeviceSlot;
use super::superblock::Superblock;
use super::{Error, Result};
use crate::source::{read_exact_at, Source};

/// A piece of file data on the host, from [`super::Image::plain_spans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// `len` bytes of the open file `fd` at `offset`.
    File {
        /// The host file descriptor (owned by the image's source).
        fd: std::os::fd::RawFd,
        /// Byte offset in that file.
        offset: u64,
        /// Byte count.
        len: usize,
    },
    /// `len` zero bytes (a hole).
    Zero(usize),
}

/// An extra device from the device table.
#[derive(Debug, Clone)]
pub struct Device {
    /// The tag stored in the table (a path or digest).
    pub tag: Vec<u8>,
    /// Size in blocks.
    pub blocks: u64,
    /// Unified start block.
    pub uniaddr: u64,
    /// Where its device table slot is in the image.
    slot_pos: u64,
    src: Option<Arc<dyn Source>>,
}

/// Where a physical address of a read lives.
enum Route<'a> {
    /// In the primary source at this offset. `missing`: the bytes belong
    /// to extra device `id` at `offset`, which was not given (flat mode:
    /// read inside the primary, missing if it is not there).
    Primary {
        offset: u64,
        missing: Option<(u16, u64)>,
    },
    /// In given extra device `id` at this offset.
    Extra {
        src: &'a dyn Source,
        id: u16,
        offset: u64,
    },
}

/// The primary source and the extra devices of an image.
#[derive(Debug)]
pub(super) struct Devices {
    primary: Arc<dyn Source>,
    extra: Vec<Device>,
    /// Mask of the device id bits chunk indexes use.
    id_mask: u16,
    blkszbits: u8,
    /// Bytes of all sources together.
    total_bytes: u64,
}

impl Devices {
    /// The primary source and, when the superblock has a device table, its
    /// extra devices: `given` (in table order) or none at all (flat mode).
    pub(super) fn open(
        primary: Arc<dyn Source>,
        sb: &Superblock,
        given: Vec<Arc<dyn Source>>,
    ) -> Result<Self> {
        let n = usize::from(sb.extra_devices);
        if !given.is_empty() && given.len() != n {
            return Err(Error::unsupported(
                None,
                format!(
                    "extra devices don't match: the image has {n}, {} given",
                    given.len()
                ),
            ));
        }
        let mut devices = Devices {
            total_bytes: primary.size(),
            primary,
            extra: Vec::with_capacity(n),
            id_mask: 0,
            blkszbits: sb.blkszbits,
        };
        if n == 0 {
            return Ok(devices);
        }
        let mask = n.saturating_add(1).next_power_of_two().saturating_sub(1);
        devices.id_mask = u16::try_from(mask).unwrap_or(u16::MAX);
        let mut pos = u64::from(sb.devt_slotoff) * 128;
        let mut given = given.into_iter();
        for _ in 0..n {
            let mut raw = [0u8; 128];
            devices.read_primary("device table", pos, &mut raw)?;
            let slot = DeviceSlot::read_from_bytes(&raw[..])
                .map_err(|_| Error::corrupt(None, At::Image(pos), "device slot", "decode"))?;
            let tag_len = slot.tag.iter().position(|&b| b == 0).unwrap_or(64);
            let src = given.next();
            if let Some(s) = &src {
                devices.total_bytes = devices.total_bytes.saturating_add(s.size());
            }
            devices.extra.push(Device {
                tag: slot.tag[..tag_len].to_vec(),
                blocks: u64::from(slot.blocks_lo.get()),
                uniaddr: u64::from(slot.uniaddr_lo.get()),
                slot_pos: pos,
                src,
            });
            pos = pos.saturating_add(128);
        }
        Ok(devices)
    }

    /// The primary source.
    pub(super) fn primary(&self) -> &dyn Source {
        self.primary.as_ref()
    }

    /// The extra devices, in table order.
    pub(super) fn extra(&self) -> &[Device] {
        &self.extra
    }

    /// Bytes of all given sources together.
    pub(super) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Reads `buf.len()` bytes of `src` at `at` (which says which source
    /// it is, for errors).
    pub(super) fn read_source(
        src: &dyn Source,
        what: &'static str,
        at: At,
        buf: &mut [u8],
    ) -> Result<()> {
        let size = src.size();
        let pos = at.offset();
        let end = pos.saturating_add(buf.len() as u64);
        if end > size {
            return Err(Error::Truncated {
                what,
                at,
                end,
                size,
            });
        }
        read_exact_at(src, buf, pos).map_err(|e| Error::io(at, buf.len(), e))
    }

    /// Reads `buf.len()` bytes at `pos` of the primary source.
    pub(super) fn read_primary(&self, what: &'static str, pos: u64, buf: &mut [u8]) -> Result<()> {
        Self::read_source(self.primary.as_ref(), what, At::Image(pos), buf)
    }

    /// Where physical address `pa` of device `device` (0: the unified
    /// address space) is read from.
    fn route(&self, nid: u64, device: u16, pa: u64) -> Result<Route<'_>> {
        let bs = self.blkszbits;
        let id = device & self.id_mask;
        if id == 0 {
            return Ok(self.route_unified(pa));
        }
        let dev =
            self.extra
                .get(usize::from(id).saturating_sub(1))
                .ok_or(Error::MissingDevice {
                    id,
                    given: self.given(),
                    nid: Some(nid),
                    offset: pa,
                })?;
        if let Some(src) = &dev.src {
            return Ok(Route::Extra {
                src: src.as_ref(),
                id,
                offset: pa,
            });
        }
        if dev.uniaddr == 0 {
            // No unified address (mkfs 1.5 `--blobdev` writes none): the
            // device cannot be inside the primary, whose first block holds
            // the superblock.
            return Err(Error::MissingDevice {
                id,
                given: self.given(),
                nid: Some(nid),
                offset: pa,
            });
        }
        // Flat mode: every device is concatenated into the primary at its
        // unified address (as the kernel does when no device= option is
        // given).
        let base = dev.uniaddr.checked_shl(u32::from(bs)).unwrap_or(u64::MAX);
        let offset = base.checked_add(pa).ok_or_else(|| {
            Error::corrupt(
                Some(nid),
                At::Image(dev.slot_pos),
                "device address",
                format!("byte {pa} of device {id} overflows the unified address space"),
            )
        })?;
        Ok(Route::Primary {
            offset,
            missing: Some((id, pa)),
        })
    }

    /// Where address `pa` of the unified address space is: in a given
    /// extra device whose range holds it, else in the primary (flat mode
    /// for a range of a device that was not given).
    fn route_unified(&self, pa: u64) -> Route<'_> {
        let bs = self.blkszbits;
        for (i, dev) in self.extra.iter().enumerate() {
            if dev.uniaddr == 0 {
                continue;
            }
            let start = dev.uniaddr << bs;
            let end = start.saturating_add(dev.blocks << bs);
            let Some(rel) = pa.checked_sub(start).filter(|_| pa < end) else {
                continue;
            };
            // At most 65535 devices: the id fits.
            let id = u16::try_from(i.saturating_add(1)).unwrap_or(u16::MAX);
            return match &dev.src {
                Some(src) => Route::Extra {
                    src: src.as_ref(),
                    id,
                    offset: rel,
                },
                None => Route::Primary {
                    offset: pa,
                    missing: Some((id, rel)),
                },
            };
        }
        Route::Primary {
            offset: pa,
            missing: None,
        }
    }

    /// The offset in the primary source of physical address `pa` of device
    /// `device`, when the bytes are there and belong to it (not to an
    /// extra device that was not given); `None` otherwise.
    pub(super) fn primary_offset(&self, nid: u64, device: u16, pa: u64) -> Result<Option<u64>> {
        Ok(match self.route(nid, device, pa)? {
            Route::Primary {
                offset,
                missing: None,
            } => Some(offset),
            _ => None,
        })
    }

    /// How many extra devices were given.
    fn given(&self) -> usize {
        self.extra.iter().filter(|d| d.src.is_some()).count()
    }

    /// Reads physical bytes of `nid`'s data from the right device. Data of
    /// an extra device that was not given and is not inside the primary
    /// either is [`Error::MissingDevice`].
    pub(super) fn read(&self, nid: u64, device: u16, pa: u64, buf: &mut [u8]) -> Result<()> {
        match self.route(nid, device, pa)? {
            Route::Extra { src, id, offset } => {
                Self::read_source(src, "file data", At::Device { id, offset }, buf)
            }
            Route::Primary { offset, missing } => {
                match (self.read_primary("file data", offset, buf), missing) {
                    (Err(Error::Truncated { .. }), Some((id, offset))) => {
                        Err(Error::MissingDevice {
                            id,
                            given: self.given(),
                            nid: Some(nid),
                            offset,
                        })
                    }
                    (r, _) => r,
                }
            }
        }
    }

    /// Where physical address `pa` of device `device` is, for messages.
    pub(super) fn locate(&self, device: u16, pa: u64) -> At {
        let id = device & self.id_mask;
        if id != 0 {
            return At::Device { id, offset: pa };
        }
        match self.route_unified(pa) {
            Route::Extra { id, offset, .. } => At::Device { id, offset },
            Route::Primary { offset, .. } => At::Image(offset),
        }
    }

    /// The span to splice `len` physical bytes at `pa` of device `device`
    /// from; `None` when they are not in the primary source, or it is not
    /// a file that can be spliced from.
    pub(super) fn span(&self, device: u16, pa: u64, len: usize) -> Option<Span> {
        let (fd, base) = self.primary.splice_fd()?;
        if device & self.id_mask != 0 {
            return None;
        }
        if let Route::Extra { .. } = self.route_unified(pa) {
            return None;
        }
        pa.checked_add(len as u64)
            .filter(|&end| end <= self.primary.size())?;
        Some(Span::File {
            fd,
            offset: base.checked_add(pa)?,
            len,
        })
    }

    /// Whether the primary source can be spliced from at all.
    pub(super) fn can_splice(&self) -> bool {
        self.primary.splice_fd().is_some()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    /// A superblock of 512-byte blocks whose device table (at byte 1024 +
    /// 128 * 2 = slot offset 10) holds one device of 4 blocks at unified
    /// block 8.
    fn image(primary_len: usize) -> (Superblock, Vec<u8>) {
        let mut h = vec![0u8; primary_len.max(4096)];
        h[1024..1028].copy_from_slice(&crate::erofs::ondisk::SUPER_MAGIC.to_le_bytes());
        h[1024 + 12] = 9;
        h[1024 + 80..1024 + 84]
            .copy_from_slice(&crate::erofs::ondisk::INCOMPAT_DEVICE_TABLE.to_le_bytes());
        h[1024 + 86..1024 + 88].copy_from_slice(&1u16.to_le_bytes());
        h[1024 + 88..1024 + 90].copy_from_slice(&24u16.to_le_bytes());
        let slot = 24 * 128;
        h[slot + 64..slot + 68].copy_from_slice(&4u32.to_le_bytes());
        h[slot + 68..slot + 72].copy_from_slice(&8u32.to_le_bytes());
        let sb = Superblock::parse(&h).unwrap();
        h.truncate(primary_len);
        (sb, h)
    }

    fn mem(bytes: Vec<u8>) -> Arc<dyn Source> {
        Arc::new(MemorySource::from_vec(bytes))
    }

    #[test]
    fn test_devices_unified_address_of_a_missing_device_is_enodev() {
        // The primary ends at block 8: unified block 9 is on the device.
        let (sb, bytes) = image(8 * 512);
        let devs = Devices::open(mem(bytes), &sb, Vec::new()).unwrap();
        let mut buf = [0u8; 16];
        let e = devs.read(42, 0, 9 * 512 + 100, &mut buf).unwrap_err();
        assert_eq!(e.errno(), libc::ENODEV, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("nid 42") && text.contains("byte 612"),
            "{text}"
        );
        // The same read by device id.
        let e = devs.read(42, 1, 612, &mut buf).unwrap_err();
        assert_eq!(e.errno(), libc::ENODEV, "{e}");
        // Past the end of everything, outside the device: truncated.
        let e = devs.read(42, 0, 40 * 512, &mut buf).unwrap_err();
        assert_eq!(e.errno(), libc::EIO, "{e}");
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
    }

    #[test]
    fn test_devices_without_unified_address_are_missing_unless_given() {
        // A device slot with no unified address (uniaddr 0).
        let (sb, mut bytes) = image(8 * 512);
        bytes[24 * 128 + 68..24 * 128 + 72].fill(0);
        let devs = Devices::open(mem(bytes.clone()), &sb, Vec::new()).unwrap();
        let mut buf = [0u8; 16];
        // Byte 0 of the device would be the primary's first bytes in flat
        // mode: it is missing instead.
        let e = devs.read(3, 1, 0, &mut buf).unwrap_err();
        assert_eq!(e.errno(), libc::ENODEV, "{e}");
        let devs = Devices::open(mem(bytes), &sb, vec![mem(vec![9; 512])]).unwrap();
        devs.read(3, 1, 0, &mut buf).unwrap();
        assert_eq!(buf, [9; 16]);
    }

    #[test]
    fn test_devices_flat_image_holding_the_device_reads_it() {
        // The primary holds the device's blocks at unified block 8.
        let (sb, mut bytes) = image(12 * 512);
        bytes[9 * 512..10 * 512].fill(7);
        let devs = Devices::open(mem(bytes), &sb, Vec::new()).unwrap();
        let mut buf = [0u8; 16];
        devs.read(1, 0, 9 * 512, &mut buf).unwrap();
        assert_eq!(buf, [7; 16]);
        devs.read(1, 1, 512, &mut buf).unwrap();
        assert_eq!(buf, [7; 16]);
    }

    #[test]
    fn test_devices_given_device_is_read_at_its_offset() {
        let (sb, bytes) = image(8 * 512);
        let mut blob = vec![0u8; 4 * 512];
        blob[512..1024].fill(5);
        let devs = Devices::open(mem(bytes), &sb, vec![mem(blob)]).unwrap();
        let mut buf = [0u8; 16];
        devs.read(1, 0, 9 * 512, &mut buf).unwrap();
        assert_eq!(buf, [5; 16]);
        assert_eq!(devs.locate(0, 9 * 512), At::Device { id: 1, offset: 512 });
        let e = devs.read(1, 1, 4 * 512, &mut buf).unwrap_err();
        assert!(e.to_string().contains("extra device 1"), "{e}");
    }
}
