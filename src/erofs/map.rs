//! Block maps of uncompressed inodes: where logical byte `la` of a file
//! lives (flat, tail-inline and chunk-based layouts).

use zerocopy::FromBytes;

use super::access::MetaRead;
use super::error::At;
use super::inode::{Inode, MetaPos};
use super::ondisk::{self, ChunkIndex};
use super::{Error, Result};

/// Where a logical extent of a file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Zeros (a hole).
    Hole,
    /// On device `device` (0 = primary) at byte `pa`.
    Mapped {
        /// Device id from the chunk index (0 = primary).
        device: u16,
        /// Physical byte address.
        pa: u64,
    },
    /// Inline in the metadata, right after the inode.
    Inline(MetaPos),
}

/// A logical extent `[la, la + len)` and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Logical start.
    pub la: u64,
    /// Length in bytes (never 0 for `la < size`).
    pub len: u64,
    /// Location.
    pub kind: ExtentKind,
}

/// What the chunk mapper needs to know about a chunk-based inode, besides
/// the chunk record bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkGeometry {
    /// log2 of the chunk size.
    pub chunkbits: u32,
    /// Record size: 8 (chunk indexes) or 4 (block map).
    pub unit: u64,
    /// Whether chunk indexes carry 48-bit block addresses.
    pub addr48: bool,
}

impl ChunkGeometry {
    /// Geometry of a chunk-based inode.
    pub fn of(inode: &Inode, blkszbits: u8) -> Result<Self> {
        let format = inode.chunk_format();
        let chunkbits = u32::from(blkszbits)
            .saturating_add(u32::from(format & ondisk::CHUNK_FORMAT_BLKBITS_MASK));
        if chunkbits >= 63 {
            return Err(Error::corrupt(
                Some(inode.nid),
                inode.loc,
                "chunk format",
                format!("chunk size 2^{chunkbits}"),
            ));
        }
        let indexes = format & ondisk::CHUNK_FORMAT_INDEXES != 0;
        Ok(Self {
            chunkbits,
            unit: if indexes { 8 } else { 4 },
            addr48: format & ondisk::CHUNK_FORMAT_48BIT != 0,
        })
    }

    /// Position of the record for chunk `chunknr`.
    pub fn record_pos(&self, inode: &Inode, chunknr: u64) -> Option<MetaPos> {
        let start = inode.data_pos()?;
        let aligned = start.pos.checked_next_multiple_of(self.unit)?;
        Some(MetaPos {
            pos: aligned.checked_add(chunknr.checked_mul(self.unit)?)?,
            in_metabox: start.in_metabox,
        })
    }

    /// Decodes a chunk record into an extent for chunk `chunknr`.
    pub fn extent(&self, inode: &Inode, blkszbits: u8, chunknr: u64, rec: &[u8]) -> Result<Extent> {
        // Where the record is (the inode when its position overflows).
        let at = || {
            self.record_pos(inode, chunknr)
                .map_or(At::from(inode.loc), At::from)
        };
        let bad = || Error::corrupt(Some(inode.nid), at(), "chunk index", "short record");
        let la = chunknr
            .checked_shl(self.chunkbits)
            .filter(|la| *la < inode.size)
            .ok_or_else(|| {
                Error::corrupt(Some(inode.nid), at(), "chunk index", "chunk beyond size")
            })?;
        let bs = 1u64 << blkszbits;
        let rest = inode
            .size
            .saturating_sub(la)
            .div_ceil(bs)
            .saturating_mul(bs);
        let len = (1u64 << self.chunkbits).min(rest);
        let (blk, device, mask) = if self.unit == 8 {
            let (index, _) = ChunkIndex::read_from_prefix(rec).map_err(|_| bad())?;
            let lo = u64::from(index.startblk_lo.get());
            let device = index.device_id.get();
            if self.addr48 {
                let hi = u64::from(index.startblk_hi.get());
                (lo | (hi << 32), device, (1u64 << 48) - 1)
            } else {
                (lo, device, u64::from(u32::MAX))
            }
        } else {
            // A block map: one 32-bit start block per chunk.
            let blk = ondisk::le32(rec, 0).ok_or_else(bad)?;
            (u64::from(blk), 0, u64::from(u32::MAX))
        };
        let kind = if blk & mask == mask {
            ExtentKind::Hole
        } else {
            let pa = blk
                .checked_shl(u32::from(blkszbits))
                .filter(|p| p >> blkszbits == blk);
            ExtentKind::Mapped {
                device,
                pa: pa.ok_or_else(|| {
                    Error::corrupt(
                        Some(inode.nid),
                        at(),
                        "chunk index",
                        format!("block {blk} overflows"),
                    )
                })?,
            }
        };
        Ok(Extent { la, len, kind })
    }
}

/// Maps logical byte `la` of an uncompressed inode (flat, tail-inline or
/// chunk-based), reading chunk records through `meta`.
pub fn map_uncompressed<M: MetaRead + ?Sized>(meta: &M, inode: &Inode, la: u64) -> Result<Extent> {
    let blkszbits = meta.superblock().blkszbits;
    match inode.layout {
        ondisk::LAYOUT_FLAT_PLAIN | ondisk::LAYOUT_FLAT_INLINE => map_flat(inode, blkszbits, la),
        ondisk::LAYOUT_CHUNK_BASED => {
            let g = ChunkGeometry::of(inode, blkszbits)?;
            let chunknr = la >> g.chunkbits;
            let pos = g.record_pos(inode, chunknr).ok_or_else(|| {
                Error::corrupt(
                    Some(inode.nid),
                    inode.loc,
                    "chunk index",
                    "position overflows",
                )
            })?;
            let rec = meta.meta("chunk index", pos, g.unit as usize)?;
            g.extent(inode, blkszbits, chunknr, &rec)
        }
        _ => Err(Error::WrongKind {
            nid: inode.nid,
            what: "compressed inodes are mapped by ZMap, not the flat block map",
        }),
    }
}

/// Maps logical byte `la` of a flat (plain or tail-inline) inode.
pub fn map_flat(inode: &Inode, blkszbits: u8, la: u64) -> Result<Extent> {
    let bs = 1u64 << blkszbits;
    let size = inode.size;
    if la >= size {
        return Err(Error::corrupt(
            Some(inode.nid),
            inode.loc,
            "read",
            "offset beyond size",
        ));
    }
    let inline = inode.layout == ondisk::LAYOUT_FLAT_INLINE;
    let Some(startblk) = inode.startblk else {
        return Ok(Extent {
            la: 0,
            len: size,
            kind: ExtentKind::Hole,
        });
    };
    let nblocks = size.div_ceil(bs);
    let lastblk = nblocks.saturating_sub(u64::from(inline));
    let tail_start = lastblk << blkszbits;
    if la < tail_start {
        let pa = startblk
            .checked_shl(u32::from(blkszbits))
            .filter(|p| p >> blkszbits == startblk)
            .and_then(|p| p.checked_add(la))
            .ok_or_else(|| {
                Error::corrupt(
                    Some(inode.nid),
                    inode.loc,
                    "startblk",
                    format!("block {startblk} overflows"),
                )
            })?;
        return Ok(Extent {
            la,
            len: tail_start.saturating_sub(la),
            kind: ExtentKind::Mapped { device: 0, pa },
        });
    }
    let base = inode.data_pos().ok_or_else(|| {
        Error::corrupt(
            Some(inode.nid),
            inode.loc,
            "inline data",
            "position overflows",
        )
    })?;
    let tail_len = size.saturating_sub(tail_start);
    if (base.pos & bs.saturating_sub(1)).saturating_add(tail_len) > bs {
        return Err(Error::corrupt(
            Some(inode.nid),
            base,
            "inline data",
            format!(
                "{tail_len}-byte tail at {} crosses a block boundary",
                base.pos
            ),
        ));
    }
    let off = la.saturating_sub(tail_start);
    Ok(Extent {
        la,
        len: size.saturating_sub(la),
        kind: ExtentKind::Inline(base.offset(off).ok_or_else(|| {
            Error::corrupt(Some(inode.nid), base, "inline data", "position overflows")
        })?),
    })
}
