//! On-disk structures, byte for byte as the kernel's `erofs_fs.h` lays them
//! out. Every multi-byte field is little-endian; nothing here is trusted.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Byte offset of the superblock inside the image.
pub const SUPER_OFFSET: u64 = 1024;
/// The superblock magic.
pub const SUPER_MAGIC: u32 = 0xE0F5_E1E2;
/// Seed of the superblock crc32c.
pub const SB_CHKSUM_SEED: u32 = 0x5045_B54A;

/// COMPAT: the superblock carries a crc32c.
pub const COMPAT_SB_CHKSUM: u32 = 0x0000_0001;
/// COMPAT: inodes carry mtimes.
pub const COMPAT_MTIME: u32 = 0x0000_0002;
/// COMPAT: per-inode xattr name bloom filters.
pub const COMPAT_XATTR_FILTER: u32 = 0x0000_0004;
/// COMPAT: shared xattrs live in the metabox inode.
pub const COMPAT_SHARED_EA_IN_METABOX: u32 = 0x0000_0008;
/// COMPAT: long xattr prefixes stored plainly in the metadata area.
pub const COMPAT_PLAIN_XATTR_PFX: u32 = 0x0000_0010;
/// COMPAT: image-share (fingerprint) xattrs.
pub const COMPAT_ISHARE_XATTRS: u32 = 0x0000_0020;

/// INCOMPAT: LZ4 0-padding (in-place decompression).
pub const INCOMPAT_ZERO_PADDING: u32 = 0x0000_0001;
/// INCOMPAT: compression configs / big pclusters.
pub const INCOMPAT_COMPR_CFGS: u32 = 0x0000_0002;
/// INCOMPAT: chunk-based files.
pub const INCOMPAT_CHUNKED_FILE: u32 = 0x0000_0004;
/// INCOMPAT: device table / HEAD2 lclusters.
pub const INCOMPAT_DEVICE_TABLE: u32 = 0x0000_0008;
/// INCOMPAT: tail-packed compressed data.
pub const INCOMPAT_ZTAILPACKING: u32 = 0x0000_0010;
/// INCOMPAT: fragments / dedupe.
pub const INCOMPAT_FRAGMENTS: u32 = 0x0000_0020;
/// INCOMPAT: long xattr name prefixes.
pub const INCOMPAT_XATTR_PREFIXES: u32 = 0x0000_0040;
/// INCOMPAT: 48-bit block addresses.
pub const INCOMPAT_48BIT: u32 = 0x0000_0080;
/// INCOMPAT: metadata in the metabox inode.
pub const INCOMPAT_METABOX: u32 = 0x0000_0100;
/// Every INCOMPAT bit this reader understands.
pub const ALL_INCOMPAT: u32 = (INCOMPAT_METABOX << 1) - 1;

/// Data layout: flat, no tail packing.
pub const LAYOUT_FLAT_PLAIN: u8 = 0;
/// Data layout: compressed, full indexes.
pub const LAYOUT_COMPRESSED_FULL: u8 = 1;
/// Data layout: flat with the tail inline after the inode.
pub const LAYOUT_FLAT_INLINE: u8 = 2;
/// Data layout: compressed, compact indexes.
pub const LAYOUT_COMPRESSED_COMPACT: u8 = 3;
/// Data layout: chunk-based.
pub const LAYOUT_CHUNK_BASED: u8 = 4;

/// i_format bit 0: extended (64-byte) inode.
pub const I_VERSION_MASK: u16 = 0x01;
/// i_format bits 1..3: data layout.
pub const I_DATALAYOUT_BIT: u16 = 1;
/// i_format bit 4: nlink is 1 (compact non-directories) / `.` omitted
/// (directories).
pub const I_NLINK_1_OR_DOT_OMITTED_BIT: u16 = 4;
/// Every i_format bit defined.
pub const I_ALL: u16 = (1 << 5) - 1;

/// Chunk format: chunk size bits above the block size.
pub const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x001F;
/// Chunk format: 8-byte chunk indexes instead of a 4-byte block map.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x0020;
/// Chunk format: 48-bit chunk start blocks.
pub const CHUNK_FORMAT_48BIT: u16 = 0x0040;
/// Every chunk format bit defined.
pub const CHUNK_FORMAT_ALL: u16 = (CHUNK_FORMAT_48BIT << 1) - 1;

/// A hole in a block map or chunk index.
pub const NULL_ADDR_32: u32 = u32::MAX;

/// Dirent nid bit: the inode lives in the metabox.
pub const NID_METABOX_BIT: u64 = 1 << 63;

/// Longest name (file or xattr suffix).
pub const NAME_LEN: usize = 255;

/// Superblock (144 bytes at most; 128 without extension slots).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SuperBlock {
    /// Magic number.
    pub magic: U32,
    /// crc32c of the superblock block (when COMPAT_SB_CHKSUM).
    pub checksum: U32,
    /// Compatible features.
    pub feature_compat: U32,
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Extension slots (16 bytes each) after the first 128 bytes.
    pub sb_extslots: u8,
    /// Root nid (16-bit), or blocks high bits with 48BIT.
    pub rootnid_2b: U16,
    /// Number of inodes.
    pub inos: U64,
    /// Base seconds for compact inode mtimes.
    pub epoch: U64,
    /// Nanoseconds for compact inode mtimes.
    pub fixed_nsec: U32,
    /// Block count, low 32 bits.
    pub blocks_lo: U32,
    /// Start block of the metadata (inode) area.
    pub meta_blkaddr: U32,
    /// Start block of the shared xattr area.
    pub xattr_blkaddr: U32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume name.
    pub volume_name: [u8; 16],
    /// Incompatible features.
    pub feature_incompat: U32,
    /// Available compression algorithms or lz4 max distance.
    pub u1: U16,
    /// Number of extra devices.
    pub extra_devices: U16,
    /// Device table slot offset (in 128-byte slots).
    pub devt_slotoff: U16,
    /// Directory block size bits (must be 0).
    pub dirblkbits: u8,
    /// Number of long xattr name prefixes.
    pub xattr_prefix_count: u8,
    /// Start of the long xattr prefixes (in 4-byte units).
    pub xattr_prefix_start: U32,
    /// nid of the packed inode.
    pub packed_nid: U64,
    /// Reserved for the xattr filter.
    pub xattr_filter_reserved: u8,
    /// Long-prefix index of the image-share (fingerprint) xattr (valid with
    /// COMPAT_ISHARE_XATTRS).
    pub ishare_xattr_prefix_id: u8,
    /// Reserved.
    pub reserved: [u8; 2],
    /// Seconds added to epoch for the build time.
    pub build_time: U32,
    /// 64-bit root nid (48BIT).
    pub rootnid_8b: U64,
    /// Reserved.
    pub reserved2: U64,
    /// nid of the metabox inode (METABOX).
    pub metabox_nid: U64,
    /// Reserved.
    pub reserved3: U64,
}

/// Size of the fixed part of the superblock.
pub const SUPER_BASE_SIZE: usize = 128;

/// Device table slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeviceSlot {
    /// Device tag (path or digest).
    pub tag: [u8; 64],
    /// Blocks, low bits.
    pub blocks_lo: U32,
    /// Unified start block, low bits.
    pub uniaddr_lo: U32,
    /// Blocks, high bits.
    pub blocks_hi: U32,
    /// Unified start block, high bits.
    pub uniaddr_hi: U16,
    /// Reserved.
    pub reserved: [u8; 50],
}

/// Compact (32-byte) inode.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InodeCompact {
    /// Format bits.
    pub i_format: U16,
    /// Inline xattr count (in 4-byte units, header included).
    pub i_xattr_icount: U16,
    /// Mode.
    pub i_mode: U16,
    /// nlink, or start block / blocks high bits.
    pub i_nb: U16,
    /// Size.
    pub i_size: U32,
    /// mtime relative to the superblock epoch.
    pub i_mtime: U32,
    /// Start block / rdev / chunk info / compressed blocks.
    pub i_u: U32,
    /// 32-bit inode number.
    pub i_ino: U32,
    /// uid.
    pub i_uid: U16,
    /// gid.
    pub i_gid: U16,
    /// Reserved.
    pub i_reserved: U32,
}

/// Extended (64-byte) inode.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InodeExtended {
    /// Format bits.
    pub i_format: U16,
    /// Inline xattr count.
    pub i_xattr_icount: U16,
    /// Mode.
    pub i_mode: U16,
    /// Start block / blocks high bits.
    pub i_nb: U16,
    /// Size.
    pub i_size: U64,
    /// Start block / rdev / chunk info / compressed blocks.
    pub i_u: U32,
    /// 32-bit inode number.
    pub i_ino: U32,
    /// uid.
    pub i_uid: U32,
    /// gid.
    pub i_gid: U32,
    /// mtime seconds.
    pub i_mtime: U64,
    /// mtime nanoseconds.
    pub i_mtime_nsec: U32,
    /// nlink.
    pub i_nlink: U32,
    /// Reserved.
    pub i_reserved2: [u8; 16],
}

/// Header of the inline xattr area.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XattrIbodyHeader {
    /// Bloom filter: bit set = name absent.
    pub h_name_filter: U32,
    /// Number of shared xattr ids following.
    pub h_shared_count: u8,
    /// Reserved.
    pub h_reserved2: [u8; 7],
}

/// An xattr entry header, followed by name and value.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XattrEntry {
    /// Name length.
    pub e_name_len: u8,
    /// Name prefix index.
    pub e_name_index: u8,
    /// Value size.
    pub e_value_size: U16,
}

/// Chunk index (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ChunkIndex {
    /// Start block high bits (48BIT chunk format).
    pub startblk_hi: U16,
    /// Device id.
    pub device_id: U16,
    /// Start block low bits.
    pub startblk_lo: U32,
}

/// Directory entry (12 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Dirent {
    /// Target nid.
    pub nid: U64,
    /// Offset of the name inside the block.
    pub nameoff: U16,
    /// File type (FT_*).
    pub file_type: u8,
    /// Reserved.
    pub reserved: u8,
}

/// Compressed inode map header (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MapHeader {
    /// Fragment offset, or (reserved, idata size).
    pub h_u: U32,
    /// Advise bits.
    pub h_advise: U16,
    /// Algorithm types (HEAD1 low nibble, HEAD2 high nibble).
    pub h_algorithmtype: u8,
    /// Logical cluster bits and the all-fragments bit.
    pub h_clusterbits: u8,
}

/// Full lcluster index (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LclusterIndex {
    /// Type and flags.
    pub di_advise: U16,
    /// Offset of the decompressed data in the lcluster.
    pub di_clusterofs: U16,
    /// Block address (HEAD) or deltas (NONHEAD).
    pub di_u: U32,
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn test_ondisk_sizes_match_kernel() {
        assert_eq!(size_of::<SuperBlock>(), 144);
        assert_eq!(size_of::<DeviceSlot>(), 128);
        assert_eq!(size_of::<InodeCompact>(), 32);
        assert_eq!(size_of::<InodeExtended>(), 64);
        assert_eq!(size_of::<XattrIbodyHeader>(), 12);
        assert_eq!(size_of::<XattrEntry>(), 4);
        assert_eq!(size_of::<ChunkIndex>(), 8);
        assert_eq!(size_of::<Dirent>(), 12);
        assert_eq!(size_of::<MapHeader>(), 8);
        assert_eq!(size_of::<LclusterIndex>(), 8);
    }

    #[test]
    fn test_ondisk_offsets_match_kernel() {
        assert_eq!(offset_of!(SuperBlock, blkszbits), 12);
        assert_eq!(offset_of!(SuperBlock, epoch), 24);
        assert_eq!(offset_of!(SuperBlock, meta_blkaddr), 40);
        assert_eq!(offset_of!(SuperBlock, feature_incompat), 80);
        assert_eq!(offset_of!(SuperBlock, dirblkbits), 90);
        assert_eq!(offset_of!(SuperBlock, packed_nid), 96);
        assert_eq!(offset_of!(SuperBlock, ishare_xattr_prefix_id), 105);
        assert_eq!(offset_of!(SuperBlock, build_time), 108);
        assert_eq!(offset_of!(SuperBlock, rootnid_8b), 112);
        assert_eq!(offset_of!(SuperBlock, metabox_nid), 128);
        assert_eq!(offset_of!(InodeCompact, i_u), 16);
        assert_eq!(offset_of!(InodeExtended, i_u), 16);
        assert_eq!(offset_of!(InodeExtended, i_mtime), 32);
        assert_eq!(offset_of!(InodeExtended, i_nlink), 44);
        assert_eq!(offset_of!(DeviceSlot, uniaddr_hi), 76);
    }
}
