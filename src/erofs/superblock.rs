//! Superblock decoding and validation.

use zerocopy::FromBytes;

use std::mem::offset_of;

use super::error::At;
use super::ondisk::{self, SuperBlock as RawSb};
use super::{Error, Result};

/// Where the superblock is.
const SB_AT: At = At::Image(ondisk::SUPER_OFFSET);

/// Where field `offset` (in the superblock) is in the image.
pub(super) fn field_at(offset: usize) -> At {
    SB_AT.plus(offset as u64)
}

/// Smallest and largest supported block size bits. The kernel accepts 9
/// up to PAGE_SHIFT; mkfs can write up to 64 KiB blocks.
const MIN_BLKSZBITS: u8 = 9;
const MAX_BLKSZBITS: u8 = 16;

/// A validated, decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Compatible feature bits.
    pub feature_compat: u32,
    /// Incompatible feature bits.
    pub feature_incompat: u32,
    /// Size of the on-disk superblock (128 + 16 * extslots).
    pub sb_size: usize,
    /// The stored checksum, when SB_CHKSUM is set (already verified).
    pub checksum: Option<u32>,
    /// Root directory nid.
    pub root_nid: u64,
    /// Inode count.
    pub inos: u64,
    /// Base seconds for compact inodes.
    pub epoch: i64,
    /// Nanoseconds for compact inodes.
    pub fixed_nsec: u32,
    /// Build time (seconds after epoch) for the 48-bit layout.
    pub build_time: u32,
    /// Total blocks of the primary device.
    pub blocks: u64,
    /// Start block of the inode area.
    pub meta_blkaddr: u32,
    /// Start block of the shared xattr area.
    pub xattr_blkaddr: u32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume name (NUL-trimmed).
    pub volume_name: Vec<u8>,
    /// Available compression algorithms bitmap (or lz4 max distance).
    pub u1: u16,
    /// Extra devices in the device table.
    pub extra_devices: u16,
    /// Device table slot offset (in 128-byte units).
    pub devt_slotoff: u16,
    /// Number of long xattr prefixes.
    pub xattr_prefix_count: u8,
    /// Start of long xattr prefixes (in 4-byte units).
    pub xattr_prefix_start: u32,
    /// nid of the packed inode (0 if none).
    pub packed_nid: u64,
    /// nid of the metabox inode.
    pub metabox_nid: Option<u64>,
    /// Reserved byte of the xattr filter (filter used only when 0).
    pub xattr_filter_reserved: u8,
    /// Long-prefix index naming the image-share (fingerprint) xattr, when
    /// COMPAT_ISHARE_XATTRS is set. Not checked against the prefix count
    /// here (the kernel refuses such a mount; we only lose the fingerprints).
    pub ishare_xattr_prefix_id: Option<u8>,
}

impl Superblock {
    /// Decodes and validates the superblock from the image's first bytes
    /// (`head` must hold at least 1024 + 128 bytes; more is used for the
    /// checksum and extension slots when present).
    pub fn parse(head: &[u8]) -> Result<Self> {
        const OFF: usize = ondisk::SUPER_OFFSET as usize;
        const BASE_END: usize = OFF + ondisk::SUPER_BASE_SIZE;
        let (off, base_end) = (OFF, BASE_END);
        let base = head.get(off..base_end).ok_or(Error::Truncated {
            what: "superblock",
            at: At::Image(0),
            end: base_end as u64,
            size: head.len() as u64,
        })?;
        // Zero-extend to the full struct so optional slots read as 0.
        let mut full = [0u8; std::mem::size_of::<RawSb>()];
        full[..base.len()].copy_from_slice(base);
        let raw = RawSb::read_from_bytes(&full[..]).map_err(|_| {
            Error::corrupt(
                None,
                SB_AT,
                "superblock",
                "size mismatch decoding superblock",
            )
        })?;
        let magic = raw.magic.get();
        if magic != ondisk::SUPER_MAGIC {
            return Err(Error::NotErofs { found: magic });
        }
        let blkszbits = raw.blkszbits;
        if !(MIN_BLKSZBITS..=MAX_BLKSZBITS).contains(&blkszbits) {
            return Err(Error::unsupported(
                None,
                format!("block size 2^{blkszbits} (supported: 512 to 65536 bytes)"),
            ));
        }
        if raw.dirblkbits != 0 {
            return Err(Error::unsupported(
                None,
                format!(
                    "dirblkbits {} (directory blocks larger than fs blocks)",
                    raw.dirblkbits
                ),
            ));
        }
        let feature_compat = raw.feature_compat.get();
        let checksum = if feature_compat & ondisk::COMPAT_SB_CHKSUM != 0 {
            let stored = raw.checksum.get();
            let computed = Self::compute_checksum(head, blkszbits)?;
            if stored != computed {
                return Err(Error::BadChecksum { stored, computed });
            }
            Some(stored)
        } else {
            None
        };
        let feature_incompat = raw.feature_incompat.get();
        let unknown = feature_incompat & !ondisk::ALL_INCOMPAT;
        if unknown != 0 {
            return Err(Error::UnknownIncompat { bits: unknown });
        }
        // At most 128 + 255 * 16 bytes.
        let sb_size = usize::from(raw.sb_extslots)
            .saturating_mul(16)
            .saturating_add(ondisk::SUPER_BASE_SIZE);
        // The superblock must fit in what the kernel reads (one 4 KiB page).
        if sb_size > 4096usize.saturating_sub(off) {
            return Err(Error::corrupt(
                None,
                field_at(offset_of!(RawSb, sb_extslots)),
                "sb_extslots",
                format!("{} slots make a {sb_size}-byte superblock", raw.sb_extslots),
            ));
        }
        let ext_end = off.saturating_add(sb_size.min(std::mem::size_of::<RawSb>()));
        if ext_end > base_end {
            let ext = head.get(base_end..ext_end).ok_or(Error::Truncated {
                what: "superblock extension slots",
                at: At::Image(base_end as u64),
                end: ext_end as u64,
                size: head.len() as u64,
            })?;
            full[ondisk::SUPER_BASE_SIZE..][..ext.len()].copy_from_slice(ext);
        }
        let raw = RawSb::read_from_bytes(&full[..])
            .map_err(|_| Error::corrupt(None, SB_AT, "superblock", "size mismatch"))?;
        let is_48bit = feature_incompat & ondisk::INCOMPAT_48BIT != 0;
        let mut blocks = u64::from(raw.blocks_lo.get());
        let root_nid = if is_48bit && raw.rootnid_8b.get() != 0 {
            blocks |= u64::from(raw.rootnid_2b.get()) << 32;
            raw.rootnid_8b.get()
        } else {
            u64::from(raw.rootnid_2b.get())
        };
        let metabox_nid = if feature_incompat & ondisk::INCOMPAT_METABOX != 0 {
            if sb_size <= offset_of!(RawSb, metabox_nid) {
                return Err(Error::corrupt(
                    None,
                    field_at(offset_of!(RawSb, sb_extslots)),
                    "sb_extslots",
                    "metabox feature set but the superblock has no metabox_nid slot",
                ));
            }
            let nid = raw.metabox_nid.get();
            if nid & ondisk::NID_METABOX_BIT != 0 {
                return Err(Error::corrupt(
                    None,
                    field_at(offset_of!(RawSb, metabox_nid)),
                    "metabox_nid",
                    "metabox inode inside itself",
                ));
            }
            Some(nid)
        } else {
            None
        };
        let name = &raw.volume_name;
        let name_len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Ok(Self {
            blkszbits,
            feature_compat,
            feature_incompat,
            sb_size,
            checksum,
            root_nid,
            inos: raw.inos.get(),
            epoch: raw.epoch.get() as i64,
            fixed_nsec: raw.fixed_nsec.get(),
            build_time: raw.build_time.get(),
            blocks,
            meta_blkaddr: raw.meta_blkaddr.get(),
            xattr_blkaddr: raw.xattr_blkaddr.get(),
            uuid: raw.uuid,
            volume_name: name[..name_len].to_vec(),
            u1: raw.u1.get(),
            extra_devices: if feature_incompat & ondisk::INCOMPAT_DEVICE_TABLE != 0 {
                raw.extra_devices.get()
            } else {
                0
            },
            devt_slotoff: raw.devt_slotoff.get(),
            xattr_prefix_count: raw.xattr_prefix_count,
            xattr_prefix_start: raw.xattr_prefix_start.get(),
            packed_nid: raw.packed_nid.get(),
            metabox_nid,
            xattr_filter_reserved: raw.xattr_filter_reserved,
            ishare_xattr_prefix_id: (feature_compat & ondisk::COMPAT_ISHARE_XATTRS != 0)
                .then_some(raw.ishare_xattr_prefix_id),
        })
    }

    /// crc32c over the superblock's block after the checksum field, as the
    /// kernel computes it.
    fn compute_checksum(head: &[u8], blkszbits: u8) -> Result<u32> {
        let off = ondisk::SUPER_OFFSET as usize;
        let blksz = 1usize << blkszbits;
        let len = if blksz > off {
            blksz.saturating_sub(off)
        } else {
            blksz
        };
        let len = len.saturating_sub(8);
        let start = off.saturating_add(8);
        let end = start.saturating_add(len);
        let data = head.get(start..end).ok_or(Error::Truncated {
            what: "superblock checksum range",
            at: At::Image(start as u64),
            end: end as u64,
            size: head.len() as u64,
        })?;
        // The kernel's crc32c(seed, ...) has no final inversion; the crc32c
        // crate applies pre- and post-inversion, so undo both.
        Ok(!crc32c::crc32c_append(!ondisk::SB_CHKSUM_SEED, data))
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        1u64 << self.blkszbits
    }

    /// Offset of byte `pos` inside its block.
    pub fn blkoff(&self, pos: u64) -> u64 {
        pos & self.block_size().wrapping_sub(1)
    }

    /// Whether an incompatible feature bit is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    /// Whether a compatible feature bit is set.
    pub fn has_compat(&self, bit: u32) -> bool {
        self.feature_compat & bit != 0
    }

    /// Names of the feature bits that are set.
    pub fn feature_names(&self) -> Vec<&'static str> {
        const COMPAT: &[(u32, &str)] = &[
            (ondisk::COMPAT_SB_CHKSUM, "sb_csum"),
            (ondisk::COMPAT_MTIME, "mtime"),
            (ondisk::COMPAT_XATTR_FILTER, "xattr_filter"),
            (ondisk::COMPAT_SHARED_EA_IN_METABOX, "shared_ea_in_metabox"),
            (ondisk::COMPAT_PLAIN_XATTR_PFX, "plain_xattr_pfx"),
            (ondisk::COMPAT_ISHARE_XATTRS, "ishare_xattrs"),
        ];
        const INCOMPAT: &[(u32, &str)] = &[
            (ondisk::INCOMPAT_ZERO_PADDING, "0padding"),
            (ondisk::INCOMPAT_COMPR_CFGS, "compr_cfgs/big_pcluster"),
            (ondisk::INCOMPAT_CHUNKED_FILE, "chunked_file"),
            (ondisk::INCOMPAT_DEVICE_TABLE, "device_table/compr_head2"),
            (ondisk::INCOMPAT_ZTAILPACKING, "ztailpacking"),
            (ondisk::INCOMPAT_FRAGMENTS, "fragments/dedupe"),
            (ondisk::INCOMPAT_XATTR_PREFIXES, "xattr_prefixes"),
            (ondisk::INCOMPAT_48BIT, "48bit"),
            (ondisk::INCOMPAT_METABOX, "metabox"),
        ];
        let c = COMPAT
            .iter()
            .filter(|(b, _)| self.feature_compat & b != 0)
            .map(|(_, n)| *n);
        let i = INCOMPAT
            .iter()
            .filter(|(b, _)| self.feature_incompat & b != 0)
            .map(|(_, n)| *n);
        c.chain(i).collect()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn minimal_head(blkszbits: u8) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[1024..1028].copy_from_slice(&ondisk::SUPER_MAGIC.to_le_bytes());
        h[1024 + 12] = blkszbits;
        h[1024 + 14..1024 + 16].copy_from_slice(&36u16.to_le_bytes());
        h
    }

    #[test]
    fn test_superblock_minimal_parses() {
        let sb = Superblock::parse(&minimal_head(12)).unwrap();
        assert_eq!(sb.block_size(), 4096);
        assert_eq!(sb.root_nid, 36);
    }

    #[test]
    fn test_superblock_rejects_table() {
        type Mutate = fn(&mut Vec<u8>);
        let cases: &[(&str, Mutate, &str)] = &[
            ("bad magic", |h| h[1024] = 0, "not an EROFS image"),
            ("tiny block", |h| h[1036] = 8, "block size"),
            ("huge block", |h| h[1036] = 30, "block size"),
            ("dirblkbits", |h| h[1024 + 90] = 1, "dirblkbits"),
            (
                "unknown incompat",
                |h| h[1024 + 80..1024 + 84].copy_from_slice(&0x8000u32.to_le_bytes()),
                "unknown incompatible",
            ),
            (
                "bad checksum",
                |h| h[1024 + 8] = 1, // COMPAT_SB_CHKSUM with checksum 0
                "checksum",
            ),
            ("truncated", |h| h.truncate(1100), "truncated"),
        ];
        for (name, mutate, want) in cases {
            let mut h = minimal_head(12);
            mutate(&mut h);
            let err = Superblock::parse(&h).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn test_superblock_ishare_prefix_id_only_with_feature() {
        let mut h = minimal_head(12);
        h[1024 + 0x69] = 3;
        assert_eq!(Superblock::parse(&h).unwrap().ishare_xattr_prefix_id, None);
        h[1024 + 8..1024 + 12].copy_from_slice(&ondisk::COMPAT_ISHARE_XATTRS.to_le_bytes());
        assert_eq!(
            Superblock::parse(&h).unwrap().ishare_xattr_prefix_id,
            Some(3)
        );
    }

    #[test]
    fn test_superblock_checksum_verifies() {
        let mut h = minimal_head(12);
        h[1024 + 8] = 1;
        let crc = Superblock::compute_checksum(&h, 12).unwrap();
        h[1028..1032].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Superblock::parse(&h).unwrap().checksum, Some(crc));
    }
}
