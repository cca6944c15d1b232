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

use super::image::Image;
use super::inode::{Inode, MetaPos};
use super::ondisk;
use super::{Error, Result};

/// Largest encoded pcluster (1 MiB).
pub const PCLUSTER_MAX_SIZE: u64 = 1 << 20;
/// Largest decoded extent (12 MiB).
pub const PCLUSTER_MAX_DSIZE: u64 = 12 << 20;

/// Algorithm format of an uncompressed pcluster stored shifted.
pub const ALG_SHIFTED: u8 = 4;
/// Algorithm format of an uncompressed pcluster stored interlaced.
pub const ALG_INTERLACED: u8 = 5;

const ADVISE_COMPACTED_2B: u16 = 0x0001;
const ADVISE_EXTENTS: u16 = 0x0001;
const ADVISE_BIG_PCLUSTER_1: u16 = 0x0002;
const ADVISE_BIG_PCLUSTER_2: u16 = 0x0004;
const ADVISE_INLINE_PCLUSTER: u16 = 0x0008;
const ADVISE_INTERLACED_PCLUSTER: u16 = 0x0010;
const ADVISE_FRAGMENT_PCLUSTER: u16 = 0x0020;

const TYPE_PLAIN: u8 = 0;
const TYPE_HEAD1: u8 = 1;
const TYPE_NONHEAD: u8 = 2;
const TYPE_HEAD2: u8 = 3;

const LI_PARTIAL_REF: u16 = 1 << 15;
const LI_D0_CBLKCNT: u32 = 1 << 11;

const EXTENT_PLEN_PARTIAL: u32 = 1 << 27;
const EXTENT_PLEN_FMT_BIT: u32 = 28;
const EXTENT_PLEN_MASK: u32 = ((PCLUSTER_MAX_SIZE as u32) << 1) - 1;

/// Per-inode compression parameters (the kernel's lazily filled fields).
#[derive(Debug, Clone, Default)]
pub struct ZInfo {
    advise: u16,
    lclusterbits: u32,
    algs: [u8; 2],
    idata_size: u16,
    /// Offset of the inline tail pcluster (ztailpacking).
    idataoff: u64,
    fragmentoff: u64,
    tail_headlcn: u64,
    extents: Option<u64>,
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

/// State gathered while walking lcluster indexes (the kernel's
/// `z_erofs_maprecorder`).
#[derive(Debug, Default, Clone)]
struct Rec {
    lcn: u64,
    kind: u8,
    headtype: u8,
    clusterofs: u64,
    delta: [u64; 2],
    pblk: u64,
    compressedblks: u64,
    nextpackoff: u64,
    partialref: bool,
}

/// Maps the compressed inode `inode` of `img`.
#[derive(Debug)]
pub struct ZMap<'a> {
    img: &'a Image,
    inode: &'a Inode,
    info: ZInfo,
    bits: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.saturating_add(2)) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.saturating_add(4)) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

impl<'a> ZMap<'a> {
    /// Reads the map header and, for tail-packed or fragment files, finds
    /// the tail extent (the kernel's `z_erofs_fill_inode_lazy`).
    pub fn new(img: &'a Image, inode: &'a Inode) -> Result<Self> {
        let bits = u32::from(img.blkszbits());
        let mut z = ZMap {
            img,
            inode,
            info: ZInfo::default(),
            bits,
        };
        let base = z.index_base()?;
        let pos = base
            .pos
            .checked_next_multiple_of(8)
            .ok_or_else(|| z.bad("map header", "position overflows"))?;
        let h = img.meta("compressed map header", MetaPos { pos, ..base }, 8)?;
        if h[7] >> 7 != 0 {
            // The whole file lives in the packed inode.
            z.info.advise = ADVISE_FRAGMENT_PCLUSTER;
            z.info.fragmentoff =
                u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) ^ (1 << 63);
            z.info.tail_headlcn = 0;
            return Ok(z);
        }
        z.info.advise = le16(&h, 4);
        z.info.lclusterbits = bits.saturating_add(u32::from(h[7] & 15));
        if z.info.lclusterbits > 24 {
            return Err(z.bad(
                "h_clusterbits",
                format!("logical cluster 2^{}", z.info.lclusterbits),
            ));
        }
        if inode.layout == ondisk::LAYOUT_COMPRESSED_FULL && z.info.advise & ADVISE_EXTENTS != 0 {
            z.info.extents = Some(u64::from(le32(&h, 0)) | (u64::from(le16(&h, 6)) << 32));
            return Ok(z);
        }
        z.info.algs = [h[6] & 15, h[6] >> 4];
        if z.info.advise & ADVISE_FRAGMENT_PCLUSTER != 0 {
            z.info.fragmentoff = u64::from(le32(&h, 0));
        } else if z.info.advise & ADVISE_INLINE_PCLUSTER != 0 {
            z.info.idata_size = le16(&h, 2);
        }
        for (i, a) in z.info.algs.iter().enumerate() {
            if *a > 3 {
                return Err(Error::unsupported(
                    Some(inode.nid),
                    format!("unknown HEAD{} compression format {a}", i.saturating_add(1)),
                ));
            }
        }
        let big = z.info.advise & (ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2);
        if big != 0 && !img.superblock().has_incompat(ondisk::INCOMPAT_COMPR_CFGS) {
            return Err(z.bad("h_advise", "big pcluster without the superblock feature"));
        }
        if inode.layout == ondisk::LAYOUT_COMPRESSED_COMPACT
            && (z.info.advise & ADVISE_BIG_PCLUSTER_1 == 0)
                != (z.info.advise & ADVISE_BIG_PCLUSTER_2 == 0)
        {
            return Err(z.bad(
                "h_advise",
                "compact indexes with inconsistent big pcluster bits",
            ));
        }
        if z.info.idata_size != 0 || z.info.advise & ADVISE_FRAGMENT_PCLUSTER != 0 {
            z.find_tail()?;
        }
        Ok(z)
    }

    fn bad(&self, field: &'static str, detail: impl Into<String>) -> Error {
        Error::corrupt(Some(self.inode.nid), field, detail)
    }

    /// End of the inode and its xattrs, where the map header area begins.
    fn index_base(&self) -> Result<MetaPos> {
        self.inode
            .data_pos()
            .ok_or_else(|| self.bad("compressed map", "position overflows"))
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
        let e = if self.info.extents.is_some() {
            self.map_ext(la)?
        } else {
            self.map_fo(la)?
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

    fn load(&self, m: &mut Rec, lcn: u64, lookahead: bool) -> Result<()> {
        match self.inode.layout {
            ondisk::LAYOUT_COMPRESSED_FULL => self.load_full(m, lcn),
            _ => self.load_compact(m, lcn, lookahead),
        }
    }

    fn load_full(&self, m: &mut Rec, lcn: u64) -> Result<()> {
        let start = self
            .index_base()?
            .pos
            .checked_next_multiple_of(8)
            .and_then(|p| p.checked_add(16))
            .and_then(|p| p.checked_add(lcn.checked_mul(8)?))
            .ok_or_else(|| self.bad("lcluster index", "position overflows"))?;
        let di = self.img.meta("lcluster index", self.meta_pos(start), 8)?;
        m.lcn = lcn;
        m.nextpackoff = start.saturating_add(8);
        let advise = le16(&di, 0);
        m.kind = (advise & 3) as u8;
        if m.kind == TYPE_NONHEAD {
            m.clusterofs = 1 << self.info.lclusterbits;
            let d0 = u32::from(le16(&di, 4));
            m.delta[0] = u64::from(d0);
            if d0 & LI_D0_CBLKCNT != 0 {
                if self.info.advise & (ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2) == 0 {
                    return Err(self.bad("lcluster index", "CBLKCNT without big pclusters"));
                }
                m.compressedblks = u64::from(d0 & !LI_D0_CBLKCNT);
                m.delta[0] = 1;
            }
            m.delta[1] = u64::from(le16(&di, 6));
        } else {
            m.partialref = advise & LI_PARTIAL_REF != 0;
            m.clusterofs = u64::from(le16(&di, 2));
            if m.clusterofs >= 1 << self.info.lclusterbits {
                return Err(self.bad("di_clusterofs", format!("{} at lcn {lcn}", m.clusterofs)));
            }
            m.pblk = u64::from(le32(&di, 4));
        }
        Ok(())
    }

    fn load_compact(&self, m: &mut Rec, lcn: u64, lookahead: bool) -> Result<()> {
        let bits = self.info.lclusterbits;
        let ebase = self
            .index_base()?
            .pos
            .checked_next_multiple_of(8)
            .and_then(|p| p.checked_add(8))
            .ok_or_else(|| self.bad("compact index", "position overflows"))?;
        let totalidx = self.inode.size.div_ceil(1 << self.bits);
        if lcn >= totalidx || bits > 14 {
            return Err(self.bad(
                "compact index",
                format!("lcn {lcn} of {totalidx} (cluster bits {bits})"),
            ));
        }
        m.lcn = lcn;
        let c4 = (32u64.wrapping_sub(ebase % 32) / 4) & 7;
        let mut c2 = 0;
        if self.info.advise & ADVISE_COMPACTED_2B != 0 && c4 < totalidx {
            c2 = totalidx.saturating_sub(c4) & !15;
        }
        let mut pos = ebase;
        let mut shift = 2u32;
        let mut rel = lcn;
        if lcn >= c4 {
            pos = pos.saturating_add(c4.saturating_mul(4));
            rel = lcn.saturating_sub(c4);
            if rel < c2 {
                shift = 1;
            } else {
                pos = pos.saturating_add(c2.saturating_mul(2));
                rel = rel.saturating_sub(c2);
            }
        }
        pos = pos.saturating_add(rel << shift);
        let vcnt: u64 = match shift {
            2 if bits <= 14 => 2,
            1 if bits <= 12 => 16,
            _ => {
                return Err(Error::unsupported(
                    Some(self.inode.nid),
                    format!("compact {}-byte indexes with 2^{bits} clusters", 1 << shift),
                ))
            }
        };
        let packsize = vcnt << shift;
        let bytes = pos & packsize.wrapping_sub(1);
        let pack_start = pos.saturating_sub(bytes);
        m.nextpackoff = pack_start.saturating_add(packsize);
        let pack = self.img.meta(
            "compact index",
            self.meta_pos(pack_start),
            packsize as usize,
        )?;
        let lobits = bits.max(12);
        let encodebits = packsize
            .saturating_sub(4)
            .saturating_mul(8)
            .checked_div(vcnt)
            .unwrap_or(0) as u32;
        let decode = |i: u64| -> (u64, u8) {
            let bitpos = (encodebits as u64).saturating_mul(i);
            let v = le32(&pack, (bitpos / 8) as usize) >> (bitpos & 7);
            (
                u64::from(v & (1u32 << lobits).wrapping_sub(1)),
                ((v >> lobits) & 3) as u8,
            )
        };
        let mut i = bytes >> shift;
        let (lo, kind) = decode(i);
        m.kind = kind;
        let big = self.info.advise & ADVISE_BIG_PCLUSTER_1 != 0;
        let cblk = u64::from(LI_D0_CBLKCNT);
        if kind == TYPE_NONHEAD {
            m.clusterofs = 1 << bits;
            if lookahead {
                // Distance to the next HEAD: count NONHEADs to the pack end.
                let mut d1 = 0u64;
                let mut j = i;
                let mut last_lo = lo;
                let mut found = false;
                while j < vcnt {
                    let (l, t) = decode(j);
                    if t != TYPE_NONHEAD {
                        found = true;
                        break;
                    }
                    last_lo = l;
                    d1 = d1.saturating_add(1);
                    j = j.saturating_add(1);
                }
                if !found && last_lo & cblk == 0 {
                    d1 = d1.saturating_add(last_lo).saturating_sub(1);
                }
                m.delta[1] = d1;
            }
            if lo & cblk != 0 {
                if !big {
                    return Err(self.bad("compact index", "CBLKCNT without big pclusters"));
                }
                m.compressedblks = lo & !cblk;
                m.delta[0] = 1;
                return Ok(());
            } else if i.saturating_add(1) != vcnt {
                m.delta[0] = lo;
                return Ok(());
            }
            // The last lcluster of a pack stores delta[1]; take delta[0]
            // from the previous one.
            let (plo, pt) = decode(i.saturating_sub(1));
            let plo = if i == 0 || pt != TYPE_NONHEAD {
                0
            } else if plo & cblk != 0 {
                1
            } else {
                plo
            };
            m.delta[0] = plo.saturating_add(1);
            return Ok(());
        }
        m.clusterofs = lo;
        m.delta[0] = 0;
        // Block address of a HEAD: the pack's base plus the pclusters
        // before it in the pack.
        let mut nblk: u64;
        if !big {
            nblk = 1;
            let mut ii = i as i64;
            while ii > 0 {
                ii = ii.saturating_sub(1);
                let (l, t) = decode(ii as u64);
                if t == TYPE_NONHEAD {
                    ii = ii.saturating_sub(i64::try_from(l).unwrap_or(i64::MAX));
                }
                if ii >= 0 {
                    nblk = nblk.saturating_add(1);
                }
            }
        } else {
            nblk = 0;
            while i > 0 {
                i = i.saturating_sub(1);
                let (l, t) = decode(i);
                if t == TYPE_NONHEAD {
                    if l & cblk != 0 {
                        i = i.saturating_sub(1);
                        nblk = nblk.saturating_add(l & !cblk);
                        continue;
                    }
                    if l <= 1 {
                        return Err(self.bad("compact index", "big pcluster with plain delta 1"));
                    }
                    i = i.saturating_sub(l.saturating_sub(2));
                    continue;
                }
                nblk = nblk.saturating_add(1);
            }
        }
        m.pblk = u64::from(le32(&pack, packsize.saturating_sub(4) as usize)).saturating_add(nblk);
        Ok(())
    }

    fn lookback(&self, m: &mut Rec, mut distance: u64) -> Result<u64> {
        let bits = self.info.lclusterbits;
        for _ in 0..self.walk_limit() {
            if distance == 0 || m.lcn < distance {
                break;
            }
            let lcn = m.lcn.saturating_sub(distance);
            self.load(m, lcn, false)?;
            if m.kind == TYPE_NONHEAD {
                distance = m.delta[0];
                continue;
            }
            m.headtype = m.kind;
            return Ok((lcn << bits) | m.clusterofs);
        }
        Err(self.bad(
            "lcluster index",
            format!("bogus lookback distance {distance} at lcn {}", m.lcn),
        ))
    }

    fn compressed_len(&self, m: &mut Rec) -> Result<u64> {
        let bits = self.info.lclusterbits;
        let bigpcl1 = self.info.advise & ADVISE_BIG_PCLUSTER_1 != 0;
        let bigpcl2 = self.info.advise & ADVISE_BIG_PCLUSTER_2 != 0;
        let lcn = m.lcn.saturating_add(1);
        if (m.headtype == TYPE_HEAD1 && !bigpcl1)
            || ((m.headtype == TYPE_PLAIN || m.headtype == TYPE_HEAD2) && !bigpcl2)
            || lcn.checked_shl(bits).is_none_or(|l| l >= self.inode.size)
        {
            m.compressedblks = 1;
        }
        if m.compressedblks == 0 {
            self.load(m, lcn, false)?;
            if m.kind == TYPE_NONHEAD && m.delta[0] != 1 {
                return Err(self.bad("lcluster index", format!("bogus CBLKCNT at lcn {lcn}")));
            }
            if m.kind != TYPE_NONHEAD || m.compressedblks == 0 {
                m.compressedblks = 1;
            }
        }
        m.compressedblks
            .checked_shl(self.bits)
            .filter(|p| p >> self.bits == m.compressedblks)
            .ok_or_else(|| self.bad("lcluster index", "compressed length overflows"))
    }

    fn decompressed_len(&self, m: &mut Rec, la: u64) -> Result<u64> {
        let bits = self.info.lclusterbits;
        let mut lcn = m.lcn;
        let headlcn = la >> bits;
        for _ in 0..self.walk_limit() {
            if lcn.checked_shl(bits).is_none_or(|l| l >= self.inode.size) {
                return Ok(self.inode.size.saturating_sub(la));
            }
            self.load(m, lcn, true)?;
            if m.kind == TYPE_NONHEAD {
                if m.delta[1] == 0 {
                    // Pre-1.0 mkfs wrote invalid d1; the kernel steps by one.
                    m.delta[1] = 1;
                }
            } else {
                if lcn != headlcn {
                    return (lcn << bits)
                        .checked_add(m.clusterofs)
                        .and_then(|e| e.checked_sub(la))
                        .ok_or_else(|| self.bad("lcluster index", "extent ends before it starts"));
                }
                m.delta[1] = 1;
            }
            lcn = lcn.saturating_add(m.delta[1]);
        }
        Err(self.bad(
            "lcluster index",
            format!("extent at {la} longer than a pcluster may decode to"),
        ))
    }

    /// Finds the head lcluster and extent bounds for byte `la` (the first
    /// half of the kernel's `z_erofs_map_blocks_fo`): returns the recorder
    /// positioned on the head, the extent start and the end of the first
    /// lcluster's span.
    fn locate(&self, la: u64) -> Result<(Rec, u64, u64)> {
        let bits = self.info.lclusterbits;
        let ztailpacking = self.info.idata_size != 0;
        let initial_lcn = la >> bits;
        let endoff = la & (1u64 << bits).wrapping_sub(1);
        let mut m = Rec::default();
        self.load(&mut m, initial_lcn, false)?;
        let first_nextpackoff = m.nextpackoff;
        let mut end = m.lcn.saturating_add(1).saturating_mul(1 << bits);
        let m_la;
        if m.kind != TYPE_NONHEAD && endoff >= m.clusterofs {
            m.headtype = m.kind;
            m_la = (m.lcn << bits) | m.clusterofs;
            if ztailpacking && end > self.inode.size {
                end = self.inode.size;
            }
        } else {
            if m.kind != TYPE_NONHEAD {
                if m.lcn == 0 {
                    return Err(self.bad("lcluster index", "invalid logical cluster 0"));
                }
                end = (m.lcn << bits) | m.clusterofs;
                m.delta[0] = 1;
            }
            let d0 = m.delta[0];
            m_la = self.lookback(&mut m, d0)?;
        }
        if end <= m_la {
            return Err(self.bad("lcluster index", format!("extent {m_la}..{end} is empty")));
        }
        m.nextpackoff = first_nextpackoff;
        Ok((m, m_la, end))
    }

    /// Records where the tail extent starts (the kernel's FINDTAIL pass).
    fn find_tail(&mut self) -> Result<()> {
        let last = self
            .inode
            .size
            .checked_sub(1)
            .ok_or_else(|| self.bad("i_size", "tail of an empty file"))?;
        let (m, _, _) = self.locate(last)?;
        if self.info.idata_size != 0 {
            self.info.idataoff = m.nextpackoff;
            let bs = 1u64 << self.bits;
            let plen = u64::from(self.info.idata_size);
            if (self.info.idataoff & bs.wrapping_sub(1)).saturating_add(plen) > bs {
                return Err(self.bad(
                    "h_idata_size",
                    format!("tail pcluster of {plen} bytes crosses a block"),
                ));
            }
        }
        self.info.tail_headlcn = m.lcn;
        if self.info.advise & ADVISE_FRAGMENT_PCLUSTER != 0
            && self.inode.layout == ondisk::LAYOUT_COMPRESSED_FULL
        {
            self.info.fragmentoff |= m.pblk << 32;
        }
        Ok(())
    }

    /// The kernel's `z_erofs_map_blocks_fo`, with the full extent length.
    fn map_fo(&self, la: u64) -> Result<ZExtent> {
        let info = &self.info;
        let fragment = info.advise & ADVISE_FRAGMENT_PCLUSTER != 0;
        let ztailpacking = info.idata_size != 0;
        if fragment && info.tail_headlcn == 0 {
            return Ok(ZExtent {
                la: 0,
                llen: self.inode.size,
                kind: ZKind::Fragment {
                    off: info.fragmentoff,
                },
            });
        }
        let (mut m, m_la, end) = self.locate(la)?;
        if fragment && m.lcn == info.tail_headlcn {
            // The tail extent runs to the end of the file.
            return Ok(ZExtent {
                la: m_la,
                llen: self.inode.size.saturating_sub(m_la),
                kind: ZKind::Fragment {
                    off: info.fragmentoff,
                },
            });
        }
        let (pa, inline, plen) = if ztailpacking && m.lcn == info.tail_headlcn {
            (info.idataoff, true, u64::from(info.idata_size))
        } else {
            let pa = m
                .pblk
                .checked_shl(self.bits)
                .filter(|p| p >> self.bits == m.pblk)
                .ok_or_else(|| self.bad("lcluster index", "block address overflows"))?;
            (pa, false, self.compressed_len(&mut m)?)
        };
        let alg = if m.headtype == TYPE_PLAIN {
            if end.saturating_sub(m_la) > plen {
                return Err(self.bad("lcluster index", "plain extent longer than its pcluster"));
            }
            if info.advise & ADVISE_INTERLACED_PCLUSTER != 0 {
                ALG_INTERLACED
            } else {
                ALG_SHIFTED
            }
        } else {
            let a = if m.headtype == TYPE_HEAD2 {
                info.algs[1]
            } else {
                info.algs[0]
            };
            let sb = self.img.superblock();
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
        let partial = m.partialref;
        let llen = self.decompressed_len(&mut m, m_la)?;
        Ok(ZExtent {
            la: m_la,
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
    fn map_ext(&self, la: u64) -> Result<ZExtent> {
        let bits = self.info.lclusterbits;
        let bs = 1u64 << self.bits;
        let recsz = 4u64 << ((self.info.advise >> 1) & 3);
        let base = self.index_base()?;
        let mut pos = base
            .pos
            .checked_next_multiple_of(8)
            .and_then(|p| p.checked_add(8))
            .and_then(|p| p.checked_next_multiple_of(recsz))
            .ok_or_else(|| self.bad("extent records", "position overflows"))?;
        let mut lend = self.inode.size;
        let (mut m_pa, mut m_plen) = (0u64, 0u32);
        let lstart;
        let last;
        if recsz <= 8 {
            let mut pa: Option<u64> = None;
            let mut l: u64;
            if recsz <= 4 {
                let b = self.img.meta("extent records", self.meta_pos(pos), 8)?;
                pa = Some(u64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]));
                pos = pos.saturating_add(8);
                l = 0;
            } else {
                l = la >> bits << bits;
                pos = pos.saturating_add((l >> bits).saturating_mul(recsz));
            }
            // Records from lcluster l up to the one holding la, read in one go.
            let count = (la >> bits).saturating_sub(l >> bits).saturating_add(1);
            let total = count.saturating_mul(recsz);
            if total > (PCLUSTER_MAX_SIZE << 4) {
                return Err(Error::unsupported(
                    Some(self.inode.nid),
                    format!("{count} extent records before offset {la}"),
                ));
            }
            let recs = self
                .img
                .meta("extent records", self.meta_pos(pos), total as usize)?;
            for r in recs.chunks_exact(recsz as usize) {
                m_plen = le32(r, 0);
                match pa {
                    Some(p) => {
                        m_pa = p;
                        pa = Some(p.saturating_add(u64::from(m_plen & EXTENT_PLEN_MASK)));
                    }
                    None => m_pa = u64::from(le32(r, 4)),
                }
                l = l.saturating_add(1 << bits);
            }
            last = l
                >= self
                    .inode
                    .size
                    .div_ceil(1 << bits)
                    .saturating_mul(1 << bits);
            lend = lend.min(l);
            lstart = l.saturating_sub(1 << bits);
        } else {
            let n = self.info.extents.unwrap_or(0);
            let mut ls = lend;
            let (mut lo, mut hi) = (0u64, n);
            // Binary search: at most 64 steps.
            while lo < hi {
                let mid = lo.midpoint(hi);
                let at = pos.saturating_add(mid.saturating_mul(recsz));
                let r = self
                    .img
                    .meta("extent record", self.meta_pos(at), recsz as usize)?;
                let mut rla = u64::from(le32(&r, 12));
                let rpa = u64::from(le32(&r, 4)) | (u64::from(le32(&r, 8)) << 32);
                if recsz > 16 {
                    rla |= u64::from(le32(&r, 16)) << 32;
                }
                if rla > la {
                    hi = mid;
                    if rla > lend {
                        return Err(self.bad("extent records", "records out of order"));
                    }
                    lend = rla;
                } else {
                    lo = mid.saturating_add(1);
                    if la == rla {
                        hi = hi.min(lo.saturating_add(1));
                    }
                    ls = rla;
                    m_plen = le32(&r, 0);
                    m_pa = rpa;
                }
            }
            lstart = ls;
            last = lo >= n;
        }
        if lstart >= lend {
            return Ok(ZExtent {
                la,
                llen: lend.saturating_sub(la).max(1),
                kind: ZKind::Hole,
            });
        }
        let fragment = self.info.advise & ADVISE_FRAGMENT_PCLUSTER != 0;
        let kind = if last && fragment {
            let mut off = u64::from(m_plen);
            if recsz > 4 {
                off |= m_pa << 32;
            }
            ZKind::Fragment { off }
        } else if m_plen != 0 {
            let fmt = m_plen >> EXTENT_PLEN_FMT_BIT;
            let alg = if fmt != 0 {
                fmt.saturating_sub(1) as u8
            } else if self.info.advise & ADVISE_INTERLACED_PCLUSTER != 0
                && m_pa & bs.wrapping_sub(1) == 0
            {
                ALG_INTERLACED
            } else {
                ALG_SHIFTED
            };
            ZKind::Encoded {
                pa: m_pa,
                inline: false,
                plen: u64::from(m_plen & EXTENT_PLEN_MASK),
                alg,
                partial: m_plen & EXTENT_PLEN_PARTIAL != 0,
            }
        } else {
            ZKind::Hole
        };
        Ok(ZExtent {
            la: lstart,
            llen: lend.saturating_sub(lstart),
            kind,
        })
    }
}
