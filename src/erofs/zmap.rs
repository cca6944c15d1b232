//! Block maps of compressed inodes: which physical cluster (pcluster)
//! holds logical byte `la`, and how it is encoded.
//!
//! Three on-disk index forms exist: full 8-byte lcluster indexes
//! (COMPRESSED_FULL), compacted 2- and 4-byte packs (COMPRESSED_COMPACT)
//! and extent records (COMPRESSED_FULL with the EXTENTS advise bit). The
//! results match the kernel's `z_erofs_map_blocks_iter` with the full
//! decompressed length of the extent resolved (as FIEMAP does).
//!
//! Every walk over indexes is bounded by the largest pcluster the format
//! allows, so corrupt deltas cannot loop.

use zerocopy::FromBytes;

use super::access::MetaRead;
use super::inode::{Inode, MetaPos};
use super::ondisk::{
    self, ExtentRecord, LclusterIndex, MapHeader, EXTENT_PLEN_FMT_BIT, EXTENT_PLEN_MASK,
    EXTENT_PLEN_PARTIAL, LCLUSTER_D0_CBLKCNT, LCLUSTER_PARTIAL_REF, LCLUSTER_TYPE_HEAD1,
    LCLUSTER_TYPE_HEAD2, LCLUSTER_TYPE_NONHEAD, LCLUSTER_TYPE_PLAIN, MAP_ADVISE_BIG_PCLUSTER_1,
    MAP_ADVISE_BIG_PCLUSTER_2, MAP_ADVISE_COMPACTED_2B, MAP_ADVISE_EXTENTS,
    MAP_ADVISE_FRAGMENT_PCLUSTER, MAP_ADVISE_INLINE_PCLUSTER, MAP_ADVISE_INTERLACED_PCLUSTER,
    PCLUSTER_MAX_SIZE,
};
use super::{Error, Result};

/// Largest decoded extent (12 MiB).
pub const PCLUSTER_MAX_DSIZE: u64 = 12 << 20;

/// Algorithm format of an uncompressed pcluster stored shifted.
pub const ALG_SHIFTED: u8 = 4;
/// Algorithm format of an uncompressed pcluster stored interlaced.
pub const ALG_INTERLACED: u8 = 5;

/// Both big-pcluster advise bits.
const BIG_PCLUSTERS: u16 = MAP_ADVISE_BIG_PCLUSTER_1 | MAP_ADVISE_BIG_PCLUSTER_2;

/// Per-inode compression parameters (the kernel's lazily filled fields).
#[derive(Debug, Clone, Default)]
pub struct ZInfo {
    /// `h_advise` (`MAP_ADVISE_*`).
    advise: u16,
    /// log2 of the logical cluster size.
    lclusterbits: u32,
    /// Algorithms of HEAD1 and HEAD2 lclusters.
    head_algs: [u8; 2],
    /// Size of the inline tail pcluster (0: none).
    tail_size: u16,
    /// Metadata position of the inline tail pcluster (ztailpacking).
    tail_pos: u64,
    /// Offset in the packed inode of the tail (or whole-file) fragment.
    fragment_off: u64,
    /// Lcluster number of the tail extent's head.
    tail_head_lcn: u64,
    /// Number of extent records (extent-mapped inodes only).
    extent_count: Option<u64>,
}

/// Where the bytes of a compressed extent come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZKind {
    /// Zeros.
    Hole,
    /// A pcluster to decode.
    Encoded {
        /// Physical position: a device address, or metadata when `inline`.
        pa: u64,
        /// The pcluster is the inline tail right after the index area.
        inline: bool,
        /// Encoded length.
        plen: u64,
        /// Algorithm (0..=3) or [`ALG_SHIFTED`] / [`ALG_INTERLACED`].
        alg: u8,
        /// Only a prefix of the pcluster's decoded data belongs here.
        partial: bool,
    },
    /// In the packed inode, starting at this offset for byte `la`.
    Fragment {
        /// Offset in the packed inode of the extent's first byte.
        off: u64,
    },
}

/// A logical extent of a compressed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZExtent {
    /// Logical start.
    pub la: u64,
    /// Logical length (the whole decoded extent).
    pub llen: u64,
    /// Source.
    pub kind: ZKind,
}

/// What the index walk knows about the lcluster it stands on (the
/// kernel's `z_erofs_maprecorder`).
#[derive(Debug, Default, Clone)]
struct Cursor {
    /// The lcluster number.
    lcn: u64,
    /// Its type (`LCLUSTER_TYPE_*`).
    kind: u8,
    /// Type of the head lcluster the walk ended on.
    head_kind: u8,
    /// Where the head's extent starts inside the lcluster (a whole
    /// lcluster for NONHEADs).
    cluster_off: u64,
    /// NONHEAD: lclusters back to the head.
    back: u64,
    /// NONHEAD: lclusters on to the next head (0: unknown).
    ahead: u64,
    /// HEAD: start block of the pcluster.
    head_block: u64,
    /// Compressed blocks of the pcluster, when an index says (0: unknown).
    compressed_blocks: u64,
    /// Metadata position right after the index pack read last.
    next_pack_pos: u64,
    /// Metadata position of the index (or pack) read last.
    index_pos: u64,
    /// HEAD: the extent is a partial reference of its pcluster.
    partial_ref: bool,
}

/// Maps the compressed inode `inode`, reading its indexes through `meta`
/// (an [`super::Image`], or anything else that reads its metadata).
#[derive(Debug)]
pub struct ZMap<'a, M: MetaRead + ?Sized> {
    meta: &'a M,
    inode: &'a Inode,
    info: ZInfo,
    /// log2 of the block size.
    blkbits: u32,
    /// Where the map header is (errors without a more precise place name
    /// it).
    header: MetaPos,
}

impl<'a, M: MetaRead + ?Sized> ZMap<'a, M> {
    /// Reads the map header and, for tail-packed or fragment files, finds
    /// the tail extent (the kernel's `z_erofs_fill_inode_lazy`).
    pub fn new(meta: &'a M, inode: &'a Inode) -> Result<Self> {
        let blkbits = u32::from(meta.superblock().blkszbits);
        let mut z = ZMap {
            meta,
            inode,
            info: ZInfo::default(),
            blkbits,
            header: inode.loc,
        };
        let header_pos = z.header_pos()?;
        z.header = header_pos;
        let raw = meta.meta("compressed map header", header_pos, 8)?;
        let h =
            MapHeader::read_from_bytes(&raw[..]).map_err(|_| z.bad("map header", "short read"))?;
        if h.whole_file_is_fragment() {
            // The whole file lives in the packed inode.
            z.info.advise = MAP_ADVISE_FRAGMENT_PCLUSTER;
            z.info.fragment_off = h.whole_file_fragment_offset();
            z.info.tail_head_lcn = 0;
            return Ok(z);
        }
        z.info.advise = h.h_advise.get();
        z.info.lclusterbits = blkbits.saturating_add(u32::from(h.h_clusterbits & 15));
        if z.info.lclusterbits > 24 {
            return Err(z.bad(
                "h_clusterbits",
                format!("logical cluster 2^{}", z.info.lclusterbits),
            ));
        }
        if inode.layout == ondisk::LAYOUT_COMPRESSED_FULL && z.info.advise & MAP_ADVISE_EXTENTS != 0
        {
            z.info.extent_count = Some(h.extent_count());
            return Ok(z);
        }
        z.info.head_algs = [h.h_algorithmtype & 15, h.h_algorithmtype >> 4];
        if z.info.advise & MAP_ADVISE_FRAGMENT_PCLUSTER != 0 {
            z.info.fragment_off = u64::from(h.h_u.get());
        } else if z.info.advise & MAP_ADVISE_INLINE_PCLUSTER != 0 {
            z.info.tail_size = h.idata_size();
        }
        for (i, a) in z.info.head_algs.iter().enumerate() {
            if *a > 3 {
                return Err(Error::unsupported(
                    Some(inode.nid),
                    format!("unknown HEAD{} compression format {a}", i.saturating_add(1)),
                ));
            }
        }
        if z.info.advise & BIG_PCLUSTERS != 0
            && !meta.superblock().has_incompat(ondisk::INCOMPAT_COMPR_CFGS)
        {
            return Err(z.bad("h_advise", "big pcluster without the superblock feature"));
        }
        if inode.layout == ondisk::LAYOUT_COMPRESSED_COMPACT
            && (z.info.advise & MAP_ADVISE_BIG_PCLUSTER_1 == 0)
                != (z.info.advise & MAP_ADVISE_BIG_PCLUSTER_2 == 0)
        {
            return Err(z.bad(
                "h_advise",
                "compact indexes with inconsistent big pcluster bits",
            ));
        }
        if z.info.tail_size != 0 || z.info.advise & MAP_ADVISE_FRAGMENT_PCLUSTER != 0 {
            z.find_tail()?;
        }
        Ok(z)
    }

    /// Corruption of the map (placed at its header).
    fn bad(&self, field: &'static str, detail: impl Into<String>) -> Error {
        Error::corrupt(Some(self.inode.nid), self.header, field, detail)
    }

    /// Corruption of the index (or record) at metadata position `pos`.
    fn bad_at(&self, pos: u64, field: &'static str, detail: impl Into<String>) -> Error {
        Error::corrupt(Some(self.inode.nid), self.meta_pos(pos), field, detail)
    }

    /// Where the map header is: the first 8-byte boundary after the inode
    /// and its inline xattrs.
    fn header_pos(&self) -> Result<MetaPos> {
        let base = self
            .inode
            .data_pos()
            .ok_or_else(|| self.bad("compressed map", "position overflows"))?;
        let pos = base
            .pos
            .checked_next_multiple_of(8)
            .ok_or_else(|| self.bad("map header", "position overflows"))?;
        Ok(MetaPos { pos, ..base })
    }

    /// Where the indexes (or extent records) start: right after the map
    /// header.
    fn indexes_pos(&self) -> Result<u64> {
        self.header_pos()?
            .pos
            .checked_add(8)
            .ok_or_else(|| self.bad("lcluster index", "position overflows"))
    }

    fn meta_pos(&self, pos: u64) -> MetaPos {
        MetaPos {
            pos,
            in_metabox: self.inode.loc.in_metabox,
        }
    }

    /// Logical clusters the walk may cross inside one extent.
    fn walk_limit(&self) -> u64 {
        (PCLUSTER_MAX_DSIZE >> self.info.lclusterbits).saturating_add(2)
    }

    /// The extent holding logical byte `la` (`la < size`).
    pub fn map(&self, la: u64) -> Result<ZExtent> {
        let e = if self.info.extent_count.is_some() {
            self.map_extent_records(la)?
        } else {
            self.map_lclusters(la)?
        };
        if let ZKind::Encoded { plen, .. } = e.kind {
            if plen > PCLUSTER_MAX_SIZE || e.llen > PCLUSTER_MAX_DSIZE {
                return Err(Error::unsupported(
                    Some(self.inode.nid),
                    format!("pcluster of {plen} bytes decoding to {} bytes", e.llen),
                ));
            }
        }
        if e.llen == 0 || la < e.la || la.saturating_sub(e.la) >= e.llen {
            return Err(self.bad(
                "compressed map",
                format!("extent {}+{} does not cover {la}", e.la, e.llen),
            ));
        }
        Ok(e)
    }

    /// Loads lcluster `lcn` into `c`; `find_ahead`: for a NONHEAD of a
    /// compact pack, also count the lclusters on to the next head.
    fn load(&self, c: &mut Cursor, lcn: u64, find_ahead: bool) -> Result<()> {
        match self.inode.layout {
            ondisk::LAYOUT_COMPRESSED_FULL => self.load_full(c, lcn),
            _ => self.load_compact(c, lcn, find_ahead),
        }
    }

    /// Loads lcluster `lcn` from the full (8-byte) indexes. The first two
    /// index slots overlap the map header and are never used.
    fn load_full(&self, c: &mut Cursor, lcn: u64) -> Result<()> {
        let pos = self
            .indexes_pos()?
            .checked_add(8)
            .and_then(|p| p.checked_add(lcn.checked_mul(8)?))
            .ok_or_else(|| self.bad("lcluster index", "position overflows"))?;
        let raw = self.meta.meta("lcluster index", self.meta_pos(pos), 8)?;
        let index = LclusterIndex::read_from_bytes(&raw[..])
            .map_err(|_| self.bad_at(pos, "lcluster index", "short read"))?;
        c.lcn = lcn;
        c.index_pos = pos;
        c.next_pack_pos = pos.saturating_add(8);
        c.kind = index.lcluster_type();
        if c.kind == LCLUSTER_TYPE_NONHEAD {
            c.cluster_off = 1 << self.info.lclusterbits;
            let back = u32::from(index.delta_back());
            c.back = u64::from(back);
            if back & LCLUSTER_D0_CBLKCNT != 0 {
                if self.info.advise & BIG_PCLUSTERS == 0 {
                    return Err(self.bad_at(
                        pos,
                        "lcluster index",
                        "CBLKCNT without big pclusters",
                    ));
                }
                c.compressed_blocks = u64::from(back & !LCLUSTER_D0_CBLKCNT);
                c.back = 1;
            }
            c.ahead = u64::from(index.delta_ahead());
        } else {
            c.partial_ref = index.di_advise.get() & LCLUSTER_PARTIAL_REF != 0;
            c.cluster_off = u64::from(index.di_clusterofs.get());
            if c.cluster_off >= 1 << self.info.lclusterbits {
                return Err(self.bad_at(
                    pos,
                    "di_clusterofs",
                    format!("{} at lcn {lcn}", c.cluster_off),
                ));
            }
            c.head_block = u64::from(index.blkaddr());
        }
        Ok(())
    }

    /// Loads lcluster `lcn` from the compact indexes: packs of 2 (4 bytes
    /// per lcluster) up to the first 32-byte boundary, then packs of 16 (2
    /// bytes per lcluster) when the inode has them, then packs of 2 again.
    /// Each pack is a bit string of (offset or delta, type) entries ending
    /// with the start block of its first pcluster.
    fn load_compact(&self, c: &mut Cursor, lcn: u64, find_ahead: bool) -> Result<()> {
        let bits = self.info.lclusterbits;
        let start = self.indexes_pos()?;
        let total = self.inode.size.div_ceil(1 << self.blkbits);
        if lcn >= total || bits > 14 {
            return Err(self.bad(
                "compact index",
                format!("lcn {lcn} of {total} (cluster bits {bits})"),
            ));
        }
        c.lcn = lcn;
        // 4-byte entries up to the 32-byte boundary, then the 2-byte area.
        let lead_4b = (32u64.wrapping_sub(start % 32) / 4) & 7;
        let mut count_2b = 0;
        if self.info.advise & MAP_ADVISE_COMPACTED_2B != 0 && lead_4b < total {
            count_2b = total.saturating_sub(lead_4b) & !15;
        }
        let mut pos = start;
        // log2 of the bytes per entry.
        let mut entry_shift = 2u32;
        let mut rel = lcn;
        if lcn >= lead_4b {
            pos = pos.saturating_add(lead_4b.saturating_mul(4));
            rel = lcn.saturating_sub(lead_4b);
            if rel < count_2b {
                entry_shift = 1;
            } else {
                pos = pos.saturating_add(count_2b.saturating_mul(2));
                rel = rel.saturating_sub(count_2b);
            }
        }
        pos = pos.saturating_add(rel << entry_shift);
        let per_pack: u64 = match entry_shift {
            2 if bits <= 14 => 2,
            1 if bits <= 12 => 16,
            _ => {
                return Err(Error::unsupported(
                    Some(self.inode.nid),
                    format!(
                        "compact {}-byte indexes with 2^{bits} clusters",
                        1 << entry_shift
                    ),
                ))
            }
        };
        let pack_size = per_pack << entry_shift;
        let in_pack = pos & pack_size.wrapping_sub(1);
        let pack_start = pos.saturating_sub(in_pack);
        c.next_pack_pos = pack_start.saturating_add(pack_size);
        c.index_pos = pack_start;
        let pack = self.meta.meta(
            "compact index",
            self.meta_pos(pack_start),
            pack_size as usize,
        )?;
        let lo_bits = bits.max(12);
        let bits_per_entry = pack_size
            .saturating_sub(4)
            .saturating_mul(8)
            .checked_div(per_pack)
            .unwrap_or(0);
        // Entry `i` of the pack: (offset or delta, lcluster type).
        let entry = |i: u64| -> (u64, u8) {
            let bitpos = bits_per_entry.saturating_mul(i);
            let v = ondisk::le32(&pack, (bitpos / 8) as usize).unwrap_or(0) >> (bitpos & 7);
            (
                u64::from(v & (1u32 << lo_bits).wrapping_sub(1)),
                ((v >> lo_bits) & 3) as u8,
            )
        };
        let mut slot = in_pack >> entry_shift;
        let (lo, kind) = entry(slot);
        c.kind = kind;
        let big = self.info.advise & MAP_ADVISE_BIG_PCLUSTER_1 != 0;
        let cblkcnt = u64::from(LCLUSTER_D0_CBLKCNT);
        if kind == LCLUSTER_TYPE_NONHEAD {
            c.cluster_off = 1 << bits;
            if find_ahead {
                // Distance to the next HEAD: count NONHEADs to the pack end.
                let mut ahead = 0u64;
                let mut next = slot;
                let mut last_lo = lo;
                let mut found = false;
                while next < per_pack {
                    let (l, t) = entry(next);
                    if t != LCLUSTER_TYPE_NONHEAD {
                        found = true;
                        break;
                    }
                    last_lo = l;
                    ahead = ahead.saturating_add(1);
                    next = next.saturating_add(1);
                }
                if !found && last_lo & cblkcnt == 0 {
                    ahead = ahead.saturating_add(last_lo).saturating_sub(1);
                }
                c.ahead = ahead;
            }
            if lo & cblkcnt != 0 {
                if !big {
                    return Err(self.bad_at(
                        pack_start,
                        "compact index",
                        "CBLKCNT without big pclusters",
                    ));
                }
                c.compressed_blocks = lo & !cblkcnt;
                c.back = 1;
                return Ok(());
            } else if slot.saturating_add(1) != per_pack {
                c.back = lo;
                return Ok(());
            }
            // The last lcluster of a pack stores the distance ahead; take
            // the distance back from the previous one.
            let (prev_lo, prev_kind) = entry(slot.saturating_sub(1));
            let prev_back = if slot == 0 || prev_kind != LCLUSTER_TYPE_NONHEAD {
                0
            } else if prev_lo & cblkcnt != 0 {
                1
            } else {
                prev_lo
            };
            c.back = prev_back.saturating_add(1);
            return Ok(());
        }
        c.cluster_off = lo;
        c.back = 0;
        // Block address of a HEAD: the pack's base plus the pclusters
        // before it in the pack.
        let mut blocks_before: u64;
        if !big {
            blocks_before = 1;
            let mut back_slot = slot as i64;
            while back_slot > 0 {
                back_slot = back_slot.saturating_sub(1);
                let (l, t) = entry(back_slot as u64);
                if t == LCLUSTER_TYPE_NONHEAD {
                    back_slot = back_slot.saturating_sub(i64::try_from(l).unwrap_or(i64::MAX));
                }
                if back_slot >= 0 {
                    blocks_before = blocks_before.saturating_add(1);
                }
            }
        } else {
            blocks_before = 0;
            while slot > 0 {
                slot = slot.saturating_sub(1);
                let (l, t) = entry(slot);
                if t == LCLUSTER_TYPE_NONHEAD {
                    if l & cblkcnt != 0 {
                        slot = slot.saturating_sub(1);
                        blocks_before = blocks_before.saturating_add(l & !cblkcnt);
                        continue;
                    }
                    if l <= 1 {
                        return Err(self.bad_at(
                            pack_start,
                            "compact index",
                            "big pcluster with plain delta 1",
                        ));
                    }
                    slot = slot.saturating_sub(l.saturating_sub(2));
                    continue;
                }
                blocks_before = blocks_before.saturating_add(1);
            }
        }
        let pack_block = ondisk::le32(&pack, pack_size.saturating_sub(4) as usize).unwrap_or(0);
        c.head_block = u64::from(pack_block).saturating_add(blocks_before);
        Ok(())
    }

    /// Walks back from `c` over `distance` lclusters (and on, as NONHEADs
    /// say) to the head; returns the logical start of its extent.
    fn walk_back(&self, c: &mut Cursor, mut distance: u64) -> Result<u64> {
        let bits = self.info.lclusterbits;
        for _ in 0..self.walk_limit() {
            if distance == 0 || c.lcn < distance {
                break;
            }
            let lcn = c.lcn.saturating_sub(distance);
            self.load(c, lcn, false)?;
            if c.kind == LCLUSTER_TYPE_NONHEAD {
                distance = c.back;
                continue;
            }
            c.head_kind = c.kind;
            return Ok((lcn << bits) | c.cluster_off);
        }
        Err(self.bad_at(
            c.index_pos,
            "lcluster index",
            format!("bogus lookback distance {distance} at lcn {}", c.lcn),
        ))
    }

    /// Encoded length of the pcluster whose head `c` stands on.
    fn compressed_len(&self, c: &mut Cursor) -> Result<u64> {
        let bits = self.info.lclusterbits;
        let big1 = self.info.advise & MAP_ADVISE_BIG_PCLUSTER_1 != 0;
        let big2 = self.info.advise & MAP_ADVISE_BIG_PCLUSTER_2 != 0;
        let lcn = c.lcn.saturating_add(1);
        if (c.head_kind == LCLUSTER_TYPE_HEAD1 && !big1)
            || ((c.head_kind == LCLUSTER_TYPE_PLAIN || c.head_kind == LCLUSTER_TYPE_HEAD2) && !big2)
            || lcn.checked_shl(bits).is_none_or(|l| l >= self.inode.size)
        {
            c.compressed_blocks = 1;
        }
        if c.compressed_blocks == 0 {
            self.load(c, lcn, false)?;
            if c.kind == LCLUSTER_TYPE_NONHEAD && c.back != 1 {
                return Err(self.bad_at(
                    c.index_pos,
                    "lcluster index",
                    format!("bogus CBLKCNT at lcn {lcn}"),
                ));
            }
            if c.kind != LCLUSTER_TYPE_NONHEAD || c.compressed_blocks == 0 {
                c.compressed_blocks = 1;
            }
        }
        c.compressed_blocks
            .checked_shl(self.blkbits)
            .filter(|p| p >> self.blkbits == c.compressed_blocks)
            .ok_or_else(|| {
                self.bad_at(c.index_pos, "lcluster index", "compressed length overflows")
            })
    }

    /// Decoded length of the extent starting at `la`, whose head `c` stands
    /// on: walks ahead to the next head (or the end of the file).
    fn decompressed_len(&self, c: &mut Cursor, la: u64) -> Result<u64> {
        let bits = self.info.lclusterbits;
        let mut lcn = c.lcn;
        let head_lcn = la >> bits;
        for _ in 0..self.walk_limit() {
            if lcn.checked_shl(bits).is_none_or(|l| l >= self.inode.size) {
                return Ok(self.inode.size.saturating_sub(la));
            }
            self.load(c, lcn, true)?;
            if c.kind == LCLUSTER_TYPE_NONHEAD {
                if c.ahead == 0 {
                    // Pre-1.0 mkfs wrote invalid deltas; the kernel steps by one.
                    c.ahead = 1;
                }
            } else {
                if lcn != head_lcn {
                    return (lcn << bits)
                        .checked_add(c.cluster_off)
                        .and_then(|e| e.checked_sub(la))
                        .ok_or_else(|| {
                            self.bad_at(
                                c.index_pos,
                                "lcluster index",
                                "extent ends before it starts",
                            )
                        });
                }
                c.ahead = 1;
            }
            lcn = lcn.saturating_add(c.ahead);
        }
        Err(self.bad_at(
            c.index_pos,
            "lcluster index",
            format!("extent at {la} longer than a pcluster may decode to"),
        ))
    }

    /// Finds the head lcluster and extent bounds for byte `la` (the first
    /// half of the kernel's `z_erofs_map_blocks_fo`): returns the cursor
    /// on the head, the extent start and the end of the first lcluster's
    /// span.
    fn locate(&self, la: u64) -> Result<(Cursor, u64, u64)> {
        let bits = self.info.lclusterbits;
        let tail_packed = self.info.tail_size != 0;
        let initial_lcn = la >> bits;
        let off_in_lcluster = la & (1u64 << bits).wrapping_sub(1);
        let mut c = Cursor::default();
        self.load(&mut c, initial_lcn, false)?;
        let first_next_pack_pos = c.next_pack_pos;
        let mut end = c.lcn.saturating_add(1).saturating_mul(1 << bits);
        let start;
        if c.kind != LCLUSTER_TYPE_NONHEAD && off_in_lcluster >= c.cluster_off {
            c.head_kind = c.kind;
            start = (c.lcn << bits) | c.cluster_off;
            if tail_packed && end > self.inode.size {
                end = self.inode.size;
            }
        } else {
            if c.kind != LCLUSTER_TYPE_NONHEAD {
                if c.lcn == 0 {
                    return Err(self.bad_at(
                        c.index_pos,
                        "lcluster index",
                        "invalid logical cluster 0",
                    ));
                }
                end = (c.lcn << bits) | c.cluster_off;
                c.back = 1;
            }
            let distance = c.back;
            start = self.walk_back(&mut c, distance)?;
        }
        if end <= start {
            return Err(self.bad_at(
                c.index_pos,
                "lcluster index",
                format!("extent {start}..{end} is empty"),
            ));
        }
        c.next_pack_pos = first_next_pack_pos;
        Ok((c, start, end))
    }

    /// Records where the tail extent starts (the kernel's FINDTAIL pass).
    fn find_tail(&mut self) -> Result<()> {
        let last = self.inode.size.checked_sub(1).ok_or_else(|| {
            Error::corrupt(
                Some(self.inode.nid),
                self.inode.loc,
                "i_size",
                "tail of an empty file",
            )
        })?;
        let (c, _, _) = self.locate(last)?;
        if self.info.tail_size != 0 {
            self.info.tail_pos = c.next_pack_pos;
            let bs = 1u64 << self.blkbits;
            let plen = u64::from(self.info.tail_size);
            if (self.info.tail_pos & bs.wrapping_sub(1)).saturating_add(plen) > bs {
                return Err(self.bad(
                    "h_idata_size",
                    format!("tail pcluster of {plen} bytes crosses a block"),
                ));
            }
        }
        self.info.tail_head_lcn = c.lcn;
        if self.info.advise & MAP_ADVISE_FRAGMENT_PCLUSTER != 0
            && self.inode.layout == ondisk::LAYOUT_COMPRESSED_FULL
        {
            self.info.fragment_off |= c.head_block << 32;
        }
        Ok(())
    }

    /// The kernel's `z_erofs_map_blocks_fo` (lcluster indexes), with the
    /// full extent length.
    fn map_lclusters(&self, la: u64) -> Result<ZExtent> {
        let info = &self.info;
        let fragment = info.advise & MAP_ADVISE_FRAGMENT_PCLUSTER != 0;
        let tail_packed = info.tail_size != 0;
        if fragment && info.tail_head_lcn == 0 {
            return Ok(ZExtent {
                la: 0,
                llen: self.inode.size,
                kind: ZKind::Fragment {
                    off: info.fragment_off,
                },
            });
        }
        let (mut c, start, end) = self.locate(la)?;
        if fragment && c.lcn == info.tail_head_lcn {
            // The tail extent runs to the end of the file.
            return Ok(ZExtent {
                la: start,
                llen: self.inode.size.saturating_sub(start),
                kind: ZKind::Fragment {
                    off: info.fragment_off,
                },
            });
        }
        let (pa, inline, plen) = if tail_packed && c.lcn == info.tail_head_lcn {
            (info.tail_pos, true, u64::from(info.tail_size))
        } else {
            let pa = c
                .head_block
                .checked_shl(self.blkbits)
                .filter(|p| p >> self.blkbits == c.head_block)
                .ok_or_else(|| {
                    self.bad_at(c.index_pos, "lcluster index", "block address overflows")
                })?;
            (pa, false, self.compressed_len(&mut c)?)
        };
        let alg = if c.head_kind == LCLUSTER_TYPE_PLAIN {
            if end.saturating_sub(start) > plen {
                return Err(self.bad_at(
                    c.index_pos,
                    "lcluster index",
                    "plain extent longer than its pcluster",
                ));
            }
            if info.advise & MAP_ADVISE_INTERLACED_PCLUSTER != 0 {
                ALG_INTERLACED
            } else {
                ALG_SHIFTED
            }
        } else {
            let a = if c.head_kind == LCLUSTER_TYPE_HEAD2 {
                info.head_algs[1]
            } else {
                info.head_algs[0]
            };
            let sb = self.meta.superblock();
            let avail = if sb.has_incompat(ondisk::INCOMPAT_COMPR_CFGS) {
                sb.u1
            } else {
                1 // LZ4 only
            };
            if avail & (1 << a) == 0 {
                return Err(self.bad(
                    "h_algorithmtype",
                    format!("algorithm {a} not in the image's set {avail:#x}"),
                ));
            }
            a
        };
        let partial = c.partial_ref;
        let llen = self.decompressed_len(&mut c, start)?;
        Ok(ZExtent {
            la: start,
            llen,
            kind: ZKind::Encoded {
                pa,
                inline,
                plen,
                alg,
                partial,
            },
        })
    }

    /// The kernel's `z_erofs_map_blocks_ext` (extent records).
    fn map_extent_records(&self, la: u64) -> Result<ZExtent> {
        let bits = self.info.lclusterbits;
        let bs = 1u64 << self.blkbits;
        let rec_size = 4u64 << ((self.info.advise >> 1) & 3);
        let mut pos = self
            .indexes_pos()?
            .checked_next_multiple_of(rec_size)
            .ok_or_else(|| self.bad("extent records", "position overflows"))?;
        // The extent found: [start, end), its record's plen and physical
        // start, and whether it is the last one of the file.
        let mut end = self.inode.size;
        let (mut rec_pa, mut rec_plen) = (0u64, 0u32);
        let start;
        let last;
        if rec_size <= 8 {
            // One record per lcluster: 4-byte records are lengths only,
            // after a 64-bit physical start; 8-byte ones add a 32-bit one.
            let mut next_pa: Option<u64> = None;
            // Logical start of the lcluster whose record comes next.
            let mut next_la: u64;
            if rec_size <= 4 {
                let b = self.meta.meta("extent records", self.meta_pos(pos), 8)?;
                next_pa = Some(
                    ondisk::le64(&b, 0)
                        .ok_or_else(|| self.bad_at(pos, "extent records", "short read"))?,
                );
                pos = pos.saturating_add(8);
                next_la = 0;
            } else {
                next_la = la >> bits << bits;
                pos = pos.saturating_add((next_la >> bits).saturating_mul(rec_size));
            }
            // Records from lcluster next_la up to the one holding la, read
            // in one go.
            let count = (la >> bits)
                .saturating_sub(next_la >> bits)
                .saturating_add(1);
            let total = count.saturating_mul(rec_size);
            if total > (PCLUSTER_MAX_SIZE << 4) {
                return Err(Error::unsupported(
                    Some(self.inode.nid),
                    format!("{count} extent records before offset {la}"),
                ));
            }
            let recs = self
                .meta
                .meta("extent records", self.meta_pos(pos), total as usize)?;
            for raw in recs.chunks_exact(rec_size as usize) {
                let rec: ExtentRecord = ondisk::read_zero_extended(raw);
                rec_plen = rec.plen.get();
                match next_pa {
                    Some(p) => {
                        rec_pa = p;
                        next_pa = Some(p.saturating_add(u64::from(rec_plen & EXTENT_PLEN_MASK)));
                    }
                    None => rec_pa = u64::from(rec.pstart_lo.get()),
                }
                next_la = next_la.saturating_add(1 << bits);
            }
            last = next_la
                >= self
                    .inode
                    .size
                    .div_ceil(1 << bits)
                    .saturating_mul(1 << bits);
            end = end.min(next_la);
            start = next_la.saturating_sub(1 << bits);
        } else {
            // Records with logical starts, sorted: binary search.
            let n = self.info.extent_count.unwrap_or(0);
            let mut found_start = end;
            let (mut lo, mut hi) = (0u64, n);
            // At most 64 steps.
            while lo < hi {
                let mid = lo.midpoint(hi);
                let at = pos.saturating_add(mid.saturating_mul(rec_size));
                let raw = self
                    .meta
                    .meta("extent record", self.meta_pos(at), rec_size as usize)?;
                let rec: ExtentRecord = ondisk::read_zero_extended(&raw);
                // 16-byte records end before lstart_hi, which reads as 0.
                let rec_la =
                    u64::from(rec.lstart_lo.get()) | (u64::from(rec.lstart_hi.get()) << 32);
                let rec_start =
                    u64::from(rec.pstart_lo.get()) | (u64::from(rec.pstart_hi.get()) << 32);
                if rec_la > la {
                    hi = mid;
                    if rec_la > end {
                        return Err(self.bad_at(at, "extent records", "records out of order"));
                    }
                    end = rec_la;
                } else {
                    lo = mid.saturating_add(1);
                    if la == rec_la {
                        hi = hi.min(lo.saturating_add(1));
                    }
                    found_start = rec_la;
                    rec_plen = rec.plen.get();
                    rec_pa = rec_start;
                }
            }
            start = found_start;
            last = lo >= n;
        }
        if start >= end {
            return Ok(ZExtent {
                la,
                llen: end.saturating_sub(la).max(1),
                kind: ZKind::Hole,
            });
        }
        let fragment = self.info.advise & MAP_ADVISE_FRAGMENT_PCLUSTER != 0;
        let kind = if last && fragment {
            let mut off = u64::from(rec_plen);
            if rec_size > 4 {
                off |= rec_pa << 32;
            }
            ZKind::Fragment { off }
        } else if rec_plen != 0 {
            let fmt = rec_plen >> EXTENT_PLEN_FMT_BIT;
            let alg = if fmt != 0 {
                fmt.saturating_sub(1) as u8
            } else if self.info.advise & MAP_ADVISE_INTERLACED_PCLUSTER != 0
                && rec_pa & bs.wrapping_sub(1) == 0
            {
                ALG_INTERLACED
            } else {
                ALG_SHIFTED
            };
            ZKind::Encoded {
                pa: rec_pa,
                inline: false,
                plen: u64::from(rec_plen & EXTENT_PLEN_MASK),
                alg,
                partial: rec_plen & EXTENT_PLEN_PARTIAL != 0,
            }
        } else {
            ZKind::Hole
        };
        Ok(ZExtent {
            la: start,
            llen: end.saturating_sub(start),
            kind,
        })
    }
}
