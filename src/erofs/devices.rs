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
    src: Option<Arc<dyn Source>>,
}

/// Where a physical address of a read lives.
enum Route<'a> {
    /// In the primary source at this offset; `device` is the extra device
    /// whose data this is (flat mode), if any.
    Primary { offset: u64, device: Option<u16> },
    /// In a given extra device at this offset.
    Extra { src: &'a dyn Source, offset: u64 },
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
                .map_err(|_| Error::corrupt(None, "device slot", "decode"))?;
            let tag_len = slot.tag.iter().position(|&b| b == 0).unwrap_or(64);
            let src = given.next();
            if let Some(s) = &src {
                devices.total_bytes = devices.total_bytes.saturating_add(s.size());
            }
            devices.extra.push(Device {
                tag: slot.tag[..tag_len].to_vec(),
                blocks: u64::from(slot.blocks_lo.get()),
                uniaddr: u64::from(slot.uniaddr_lo.get()),
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

    /// Reads `buf.len()` bytes at `pos` of `src` (named `dev` in errors).
    pub(super) fn read_source(
        src: &dyn Source,
        dev: &str,
        what: &'static str,
        pos: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let size = src.size();
        let end = pos.saturating_add(buf.len() as u64);
        if end > size {
            return Err(Error::Truncated {
                what,
                offset: pos,
                end,
                size,
                device: dev.to_string(),
            });
        }
        read_exact_at(src, buf, pos).map_err(|e| Error::Io {
            offset: pos,
            len: buf.len(),
            source: e,
        })
    }

    /// Reads `buf.len()` bytes at `pos` of the primary source.
    pub(super) fn read_primary(&self, what: &'static str, pos: u64, buf: &mut [u8]) -> Result<()> {
        Self::read_source(self.primary.as_ref(), "image", what, pos, buf)
    }

    /// Where physical address `pa` of device `device` (0: the unified
    /// address space) is read from.
    fn route(&self, nid: u64, device: u16, pa: u64) -> Result<Route<'_>> {
        let bs = self.blkszbits;
        let id = device & self.id_mask;
        if id != 0 {
            let dev =
                self.extra
                    .get(usize::from(id).saturating_sub(1))
                    .ok_or(Error::MissingDevice {
                        id,
                        given: self.extra.len(),
                    })?;
            return match &dev.src {
                Some(src) => Ok(Route::Extra {
                    src: src.as_ref(),
                    offset: pa,
                }),
                None => {
                    // Flat mode: every device is concatenated into the
                    // primary at its unified address (as the kernel does
                    // when no device= option is given).
                    let base = dev.uniaddr.checked_shl(u32::from(bs)).unwrap_or(u64::MAX);
                    let offset = base
                        .checked_add(pa)
                        .ok_or_else(|| Error::corrupt(Some(nid), "device address", "overflow"))?;
                    Ok(Route::Primary {
                        offset,
                        device: Some(id),
                    })
                }
            };
        }
        if let Some((src, offset)) = self.extra_device_at(pa) {
            return Ok(Route::Extra { src, offset });
        }
        Ok(Route::Primary {
            offset: pa,
            device: None,
        })
    }

    /// Reads physical bytes of `nid`'s data from the right device.
    pub(super) fn read(&self, nid: u64, device: u16, pa: u64, buf: &mut [u8]) -> Result<()> {
        match self.route(nid, device, pa)? {
            Route::Extra { src, offset } => {
                Self::read_source(src, "extra device", "file data", offset, buf)
            }
            Route::Primary { offset, device } => {
                match self.read_primary("file data", offset, buf) {
                    Err(Error::Truncated { .. }) if device.is_some() => Err(Error::MissingDevice {
                        id: device.unwrap_or(0),
                        given: 0,
                    }),
                    r => r,
                }
            }
        }
    }

    /// The extra device (given as a source) whose unified address range
    /// holds physical address `pa` of device id 0, with `pa`'s offset in
    /// it; `None`: `pa` is in the primary image.
    fn extra_device_at(&self, pa: u64) -> Option<(&dyn Source, u64)> {
        let bs = self.blkszbits;
        for dev in &self.extra {
            let src = dev.src.as_ref()?;
            if dev.uniaddr == 0 {
                continue;
            }
            let start = dev.uniaddr << bs;
            let end = start.saturating_add(dev.blocks << bs);
            if let Some(rel) = pa.checked_sub(start).filter(|_| pa < end) {
                return Some((src.as_ref(), rel));
            }
        }
        None
    }

    /// The span to splice `len` physical bytes at `pa` of device `device`
    /// from; `None` when they are not in the primary source, or it is not
    /// a file that can be spliced from.
    pub(super) fn span(&self, device: u16, pa: u64, len: usize) -> Option<Span> {
        let (fd, base) = self.primary.splice_fd()?;
        if device & self.id_mask != 0 || self.extra_device_at(pa).is_some() {
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
