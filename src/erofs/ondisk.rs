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

/// Largest encoded pcluster (`Z_EROFS_PCLUSTER_MAX_SIZE`, 1 MiB).
pub const PCLUSTER_MAX_SIZE: u64 = 1 << 20;

/// The little-endian `u16` at byte `at` of `bytes`, if all of it is there.
pub fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    U16::read_from_prefix(bytes.get(at..)?)
        .ok()
        .map(|(v, _)| v.get())
}

/// The little-endian `u32` at byte `at` of `bytes`, if all of it is there.
pub fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    U32::read_from_prefix(bytes.get(at..)?)
        .ok()
        .map(|(v, _)| v.get())
}

/// The little-endian `u64` at byte `at` of `bytes`, if all of it is there.
pub fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    U64::read_from_prefix(bytes.get(at..)?)
        .ok()
        .map(|(v, _)| v.get())
}

/// Decodes a `T` from the first bytes of `bytes`, reading missing trailing
/// bytes as zeros (for records whose on-disk form is a prefix of the
/// struct: short extent records, superblocks without extension slots).
pub fn read_zero_extended<T: FromBytes + IntoBytes>(bytes: &[u8]) -> T {
    let mut v = T::new_zeroed();
    let dst = v.as_mut_bytes();
    let n = dst.len().min(bytes.len());
    dst[..n].copy_from_slice(&bytes[..n]);
    v
}

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

/// Compressed inode map header (8 bytes, at the first 8-byte boundary after
/// the inode and its inline xattrs).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MapHeader {
    /// Fragment offset, or (reserved, idata size), or the extent count's
    /// low 32 bits (extent records).
    pub h_u: U32,
    /// Advise bits (`MAP_ADVISE_*`).
    pub h_advise: U16,
    /// Algorithm types (HEAD1 low nibble, HEAD2 high nibble).
    pub h_algorithmtype: u8,
    /// Logical cluster bits (low nibble) and the all-fragments bit (bit 7).
    pub h_clusterbits: u8,
}

/// Map advise: compact indexes use 2-byte packs after the initial 4-byte
/// ones (compact layout); extent records (full layout).
pub const MAP_ADVISE_COMPACTED_2B: u16 = 0x0001;
/// Map advise: extent records instead of lcluster indexes (full layout).
pub const MAP_ADVISE_EXTENTS: u16 = 0x0001;
/// Map advise: HEAD1 pclusters may span several blocks.
pub const MAP_ADVISE_BIG_PCLUSTER_1: u16 = 0x0002;
/// Map advise: HEAD2 (and plain) pclusters may span several blocks.
pub const MAP_ADVISE_BIG_PCLUSTER_2: u16 = 0x0004;
/// Map advise: the tail pcluster is inline after the indexes.
pub const MAP_ADVISE_INLINE_PCLUSTER: u16 = 0x0008;
/// Map advise: uncompressed pclusters are stored interlaced.
pub const MAP_ADVISE_INTERLACED_PCLUSTER: u16 = 0x0010;
/// Map advise: the tail extent is a fragment of the packed inode.
pub const MAP_ADVISE_FRAGMENT_PCLUSTER: u16 = 0x0020;
/// `h_clusterbits` bit: the whole file is one fragment.
pub const MAP_FRAGMENT_INODE_BIT: u8 = 7;

impl MapHeader {
    /// Whether the whole file lives in the packed inode.
    pub fn whole_file_is_fragment(&self) -> bool {
        self.h_clusterbits >> MAP_FRAGMENT_INODE_BIT != 0
    }

    /// For a whole-file fragment: the offset in the packed inode (the 8
    /// header bytes as one little-endian u64, top bit cleared).
    pub fn whole_file_fragment_offset(&self) -> u64 {
        let raw = u64::from(self.h_u.get())
            | (u64::from(self.h_advise.get()) << 32)
            | (u64::from(self.h_algorithmtype) << 48)
            | (u64::from(self.h_clusterbits) << 56);
        raw & !(1 << 63)
    }

    /// Inline tail pcluster size (with `MAP_ADVISE_INLINE_PCLUSTER`).
    pub fn idata_size(&self) -> u16 {
        (self.h_u.get() >> 16) as u16
    }

    /// Number of extent records (with `MAP_ADVISE_EXTENTS`): 48 bits, the
    /// high 16 in the algorithm and cluster-bits bytes.
    pub fn extent_count(&self) -> u64 {
        let hi = u64::from(self.h_algorithmtype) | (u64::from(self.h_clusterbits) << 8);
        u64::from(self.h_u.get()) | (hi << 32)
    }
}

/// Lcluster type: uncompressed head.
pub const LCLUSTER_TYPE_PLAIN: u8 = 0;
/// Lcluster type: head compressed with the HEAD1 algorithm.
pub const LCLUSTER_TYPE_HEAD1: u8 = 1;
/// Lcluster type: not a head (continues the previous extent).
pub const LCLUSTER_TYPE_NONHEAD: u8 = 2;
/// Lcluster type: head compressed with the HEAD2 algorithm.
pub const LCLUSTER_TYPE_HEAD2: u8 = 3;
/// `di_advise` bit: the head's extent is a partial reference.
pub const LCLUSTER_PARTIAL_REF: u16 = 1 << 15;
/// First delta bit of a NONHEAD: the rest is the compressed block count.
pub const LCLUSTER_D0_CBLKCNT: u32 = 1 << 11;

/// Full lcluster index (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LclusterIndex {
    /// Type (low 2 bits) and flags.
    pub di_advise: U16,
    /// Offset of the decompressed data in the lcluster.
    pub di_clusterofs: U16,
    /// Block address (HEAD) or two deltas (NONHEAD).
    pub di_u: U32,
}

impl LclusterIndex {
    /// Lcluster type (`LCLUSTER_TYPE_*`).
    pub fn lcluster_type(&self) -> u8 {
        (self.di_advise.get() & 3) as u8
    }

    /// Start block of a HEAD's pcluster.
    pub fn blkaddr(&self) -> u32 {
        self.di_u.get()
    }

    /// NONHEAD: lclusters back to the head (or, with
    /// [`LCLUSTER_D0_CBLKCNT`], the compressed block count).
    pub fn delta_back(&self) -> u16 {
        (self.di_u.get() & 0xffff) as u16
    }

    /// NONHEAD: lclusters on to the next head.
    pub fn delta_ahead(&self) -> u16 {
        (self.di_u.get() >> 16) as u16
    }
}

/// Extent record of extent-mapped compressed inodes (`z_erofs_extent`).
/// On disk a record is 4, 8, 16 or 32 bytes: a prefix of this struct
/// (then padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ExtentRecord {
    /// Encoded length ([`EXTENT_PLEN_MASK`]), partial bit
    /// ([`EXTENT_PLEN_PARTIAL`]) and format ([`EXTENT_PLEN_FMT_BIT`] on).
    pub plen: U32,
    /// Physical start, low 32 bits.
    pub pstart_lo: U32,
    /// Physical start, high 32 bits.
    pub pstart_hi: U32,
    /// Logical start, low 32 bits.
    pub lstart_lo: U32,
    /// Logical start, high 32 bits.
    pub lstart_hi: U32,
}

/// Extent record `plen` bit: a partial reference.
pub const EXTENT_PLEN_PARTIAL: u32 = 1 << 27;
/// Extent record `plen`: the format (algorithm + 1, 0 = uncompressed)
/// starts at this bit.
pub const EXTENT_PLEN_FMT_BIT: u32 = 28;
/// Extent record `plen`: mask of the encoded length.
pub const EXTENT_PLEN_MASK: u32 = ((PCLUSTER_MAX_SIZE as u32) << 1) - 1;

/// LZ4 compression config record (`z_erofs_lz4_cfgs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Lz4Cfgs {
    /// Largest match distance.
    pub max_distance: U16,
    /// Largest pcluster in blocks.
    pub max_pclusterblks: U16,
    /// Reserved.
    pub reserved: [u8; 10],
}

/// MicroLZMA compression config record (`z_erofs_lzma_cfgs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LzmaCfgs {
    /// Dictionary size.
    pub dict_size: U32,
    /// Format (must be 0).
    pub format: U16,
    /// Reserved.
    pub reserved: [u8; 8],
}

/// DEFLATE compression config record (`z_erofs_deflate_cfgs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeflateCfgs {
    /// Window bits.
    pub windowbits: u8,
    /// Reserved.
    pub reserved: [u8; 5],
}

/// Zstandard compression config record (`z_erofs_zstd_cfgs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ZstdCfgs {
    /// Format (must be 0).
    pub format: u8,
    /// Window log minus 10.
    pub windowlog: u8,
    /// Reserved.
    pub reserved: [u8; 4],
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
        assert_eq!(size_of::<ExtentRecord>(), 20);
        assert_eq!(size_of::<Lz4Cfgs>(), 14);
        assert_eq!(size_of::<LzmaCfgs>(), 14);
        assert_eq!(size_of::<DeflateCfgs>(), 6);
        assert_eq!(size_of::<ZstdCfgs>(), 6);
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
        assert_eq!(offset_of!(MapHeader, h_advise), 4);
        assert_eq!(offset_of!(MapHeader, h_clusterbits), 7);
        assert_eq!(offset_of!(LclusterIndex, di_u), 4);
        assert_eq!(offset_of!(ChunkIndex, startblk_lo), 4);
        assert_eq!(offset_of!(ExtentRecord, lstart_lo), 12);
        assert_eq!(offset_of!(LzmaCfgs, format), 4);
    }

    #[test]
    fn test_ondisk_map_header_unions_decode() {
        // h_u = 0x0123_4567, advise 0x0009, algorithm 0x21, cluster bits 0x83.
        let raw = [0x67, 0x45, 0x23, 0x01, 0x09, 0x00, 0x21, 0x83];
        let h = MapHeader::read_from_bytes(&raw[..]).unwrap();
        assert!(h.whole_file_is_fragment());
        assert_eq!(
            h.whole_file_fragment_offset(),
            u64::from_le_bytes(raw) & !(1 << 63)
        );
        assert_eq!(h.idata_size(), 0x0123);
        assert_eq!(h.extent_count(), 0x8321_0123_4567);
        let li = LclusterIndex::read_from_bytes(&[2, 0x80, 5, 0, 1, 2, 3, 4][..]).unwrap();
        assert_eq!(li.lcluster_type(), LCLUSTER_TYPE_NONHEAD);
        assert_eq!(
            li.di_advise.get() & LCLUSTER_PARTIAL_REF,
            LCLUSTER_PARTIAL_REF
        );
        assert_eq!((li.delta_back(), li.delta_ahead()), (0x0201, 0x0403));
        assert_eq!(li.blkaddr(), 0x0403_0201);
    }

    #[test]
    fn test_ondisk_le_helpers_and_zero_extension() {
        let b = [1u8, 2, 3, 4, 5];
        assert_eq!(le16(&b, 3), Some(0x0504));
        assert_eq!(le16(&b, 4), None);
        assert_eq!(le32(&b, 1), Some(0x0504_0302));
        assert_eq!(le32(&b, 2), None);
        let r: ExtentRecord = read_zero_extended(&[9, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(
            (r.plen.get(), r.pstart_lo.get(), r.lstart_hi.get()),
            (9, 7, 0)
        );
    }
}
