//! Reading compressed inodes: map each range to its pcluster, decode it
//! (through the decoded-extent cache) and copy the requested bytes.

use std::mem::offset_of;
use std::sync::OnceLock;

use super::access::{ImageRead, MetaRead};
use super::decompress::{Algorithm, Decoder};
use super::error::At;
use super::inode::{Inode, MetaPos};
use super::ondisk;
use super::superblock::field_at;
use super::zcache::{CacheStats, Decoded, Key, Lookup, ZCache};
use super::zmap::{ZExtent, ZKind, ZMap, ALG_INTERLACED, ALG_SHIFTED};
use super::{Error, Result};

thread_local! {
    /// Per-thread buffer for compressed input.
    static INPUT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Compressed input read at once for a run of whole extents.
const MAX_RUN_INPUT: u64 = 1 << 20;

/// Extents decoded from one run read.
const MAX_RUN_EXTENTS: usize = 512;

/// Input buffers up to this size are kept for the thread's next decode.
const MAX_KEPT_INPUT: usize = 4 << 20;

/// The pcluster of an encoded extent.
#[derive(Debug, Clone, Copy)]
struct Pcluster {
    /// Physical position (a metadata position when `inline`).
    pa: u64,
    /// The inline tail after the index area.
    inline: bool,
    /// Encoded length.
    plen: u64,
    /// Algorithm, or [`ALG_SHIFTED`] / [`ALG_INTERLACED`].
    alg: u8,
    /// Only a prefix of the decoded data belongs to the extent.
    partial: bool,
}

impl Pcluster {
    fn of(ext: &ZExtent) -> Option<Self> {
        match ext.kind {
            ZKind::Encoded {
                pa,
                inline,
                plen,
                alg,
                partial,
            } => Some(Pcluster {
                pa,
                inline,
                plen,
                alg,
                partial,
            }),
            _ => None,
        }
    }
}

/// An image's compressed-data reader: its decoder, its decoded-extent cache
/// and its packed inode (found on first use).
#[derive(Debug)]
pub(super) struct Compressed {
    decoder: Decoder,
    cache: ZCache,
    packed: OnceLock<Result<Inode>>,
}

impl Compressed {
    /// A reader decoding with `decoder`, caching up to `cache_bytes` of
    /// decoded extents.
    pub(super) fn new(decoder: Decoder, cache_bytes: u64) -> Self {
        Compressed {
            decoder,
            cache: ZCache::new(cache_bytes),
            packed: OnceLock::new(),
        }
    }

    /// The decoded-extent cache's counts.
    pub(super) fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Reads `buf.len()` bytes (already clipped to the file size) of
    /// compressed `inode` of `img` at `offset`.
    pub(super) fn read<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let zmap = ZMap::new(img, inode)?;
        let mut done = 0usize;
        // Each pass copies at least one byte (ZMap::map guarantees the extent
        // covers `pos`), so this ends.
        while done < buf.len() {
            let pos = offset.saturating_add(done as u64);
            let ext = zmap.map(pos)?;
            let skip = pos.saturating_sub(ext.la);
            let avail = usize::try_from(ext.llen.saturating_sub(skip)).unwrap_or(usize::MAX);
            let n = avail.min(buf.len().saturating_sub(done));
            let out = &mut buf[done..][..n];
            match ext.kind {
                ZKind::Hole => out.fill(0),
                ZKind::Fragment { off } => {
                    self.read_fragment(img, inode, off.saturating_add(skip), out)?
                }
                ZKind::Encoded { .. } => {
                    let key = extent_key(img, inode, &ext);
                    let whole = skip == 0 && n as u64 == ext.llen;
                    let cached = match self.cache.lookup(key, whole) {
                        Lookup::Ready(d) => Some(d),
                        // Failed before: the same bytes fail the same way.
                        Lookup::Failed(e) => return Err(e),
                        Lookup::Pending | Lookup::Absent { again: true } => None,
                        Lookup::Absent { again: false } if whole => {
                            // The request covers the whole extent, read
                            // whole for the first time (a stream): decode
                            // it and the whole extents after it straight
                            // into the reply, keep no copy.
                            self.cache.count_miss();
                            let made = self.decode_run(img, inode, &zmap, ext, &mut buf[done..])?;
                            done = done.saturating_add(made.max(1));
                            continue;
                        }
                        Lookup::Absent { .. } => None,
                    };
                    let data = match cached {
                        Some(d) => d,
                        None => self.decoded_extent(img, inode, &ext)?,
                    };
                    let start = usize::try_from(skip).unwrap_or(usize::MAX);
                    let src = data.get(start..).and_then(|s| s.get(..n)).ok_or_else(|| {
                        let short = Error::corrupt_unplaced(
                            Some(inode.nid),
                            "compressed data",
                            format!(
                                "decoded extent of {} bytes, {} expected",
                                data.len(),
                                ext.llen
                            ),
                        );
                        decode_error(img, inode, &ext, short)
                    })?;
                    out.copy_from_slice(src);
                }
            }
            done = done.saturating_add(n);
        }
        Ok(())
    }

    /// The packed inode (fragments, and long xattr prefixes of older images).
    fn packed_inode<I: ImageRead + ?Sized>(&self, img: &I) -> Result<Inode> {
        // Found (or failed) once; a failure answers every later use the
        // same way, with its type.
        self.packed
            .get_or_init(|| {
                let sb = img.superblock();
                let nid = sb.packed_nid;
                if nid == 0 || !sb.has_incompat(ondisk::INCOMPAT_FRAGMENTS) {
                    return Err(Error::corrupt(
                        None,
                        field_at(offset_of!(ondisk::SuperBlock, packed_nid)),
                        "packed_nid",
                        "fragment data but the image has no packed inode",
                    ));
                }
                img.inode(nid)
            })
            .clone()
    }

    /// Reads fragment bytes from the packed inode.
    fn read_fragment<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        off: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let sb = img.superblock();
        if Some(inode.nid) == sb.metabox_nid || inode.nid == sb.packed_nid {
            return Err(Error::corrupt(
                Some(inode.nid),
                inode.loc,
                "fragment",
                "the packed or metabox inode refers to fragments",
            ));
        }
        let packed = self.packed_inode(img)?;
        let n = img.read(&packed, off, out)?;
        if n != out.len() {
            return Err(Error::corrupt(
                Some(inode.nid),
                inode.loc,
                "fragment",
                format!(
                    "fragment at {off}+{} beyond the packed inode ({} bytes)",
                    out.len(),
                    packed.size
                ),
            ));
        }
        Ok(())
    }

    /// The decoded bytes of extent `ext`, from the cache or freshly decoded.
    fn decoded_extent<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        ext: &ZExtent,
    ) -> Result<Decoded> {
        let key = extent_key(img, inode, ext);
        self.cache.get_or_decode(key, || {
            let llen = usize::try_from(ext.llen).unwrap_or(usize::MAX);
            let mut out = vec![0u8; llen];
            self.decode_extent(img, inode, ext, &mut out)?;
            Ok(out)
        })
    }

    /// Decodes extent `ext` into `out` (exactly its decoded length). A
    /// failure (reading the pcluster or decoding it) is an
    /// [`Error::Decode`] naming the inode, the extent and the pcluster.
    fn decode_extent<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        ext: &ZExtent,
        out: &mut [u8],
    ) -> Result<()> {
        let Some(pcluster) = Pcluster::of(ext) else {
            return Err(not_encoded(inode));
        };
        let plen = usize::try_from(pcluster.plen).unwrap_or(usize::MAX);
        // The compressed input goes through a per-thread buffer, reused
        // across decodes (taken out while in use, so no borrow is held).
        let mut input = INPUT.with(|b| b.take());
        if input.len() < plen {
            input.resize(plen, 0);
        }
        let r = read_pcluster(img, inode, &pcluster, &mut input[..plen])
            .and_then(|()| self.decode_input(img, inode, ext, &input[..plen], out))
            .map_err(|e| decode_error(img, inode, ext, e));
        if input.capacity() <= MAX_KEPT_INPUT {
            INPUT.with(|b| b.replace(input));
        }
        r
    }

    /// Decodes `input`, the pcluster of extent `ext`, into `out`.
    fn decode_input<M: MetaRead + ?Sized>(
        &self,
        img: &M,
        inode: &Inode,
        ext: &ZExtent,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let Some(pcluster) = Pcluster::of(ext) else {
            return Err(not_encoded(inode));
        };
        let la_in_block = img.superblock().blkoff(ext.la);
        self.decode(inode, &pcluster, la_in_block, input, out)
    }

    /// Decodes `first` (a whole extent at the start of `buf`, not cached)
    /// and the following whole extents whose pclusters are physically
    /// contiguous with it, with one read of their compressed input (a run of
    /// small pclusters costs one read instead of one each). The extents
    /// after the first are not looked up in the decode cache: a stream
    /// decodes them anyway (another reader decoding the same one at the same
    /// time only costs a second decode), and each lookup took a lock and a
    /// hash insert, 5% of the CPU of a sequential read. Returns the decoded
    /// bytes written to `buf`.
    fn decode_run<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        zmap: &ZMap<'_, I>,
        first: ZExtent,
        buf: &mut [u8],
    ) -> Result<usize> {
        let first_len = usize::try_from(first.llen).unwrap_or(usize::MAX);
        let (pa, inline, plen) = match first.kind {
            ZKind::Encoded {
                pa, inline, plen, ..
            } => (pa, inline, plen),
            _ => (0, true, 0),
        };
        if first_len > buf.len() {
            return Err(Error::corrupt(
                Some(inode.nid),
                inode.loc,
                "compressed map",
                "extent beyond the read",
            ));
        }
        if inline || plen >= MAX_RUN_INPUT {
            self.stream_extent(img, inode, &first, &mut buf[..first_len])?;
            return Ok(first_len);
        }
        let mut run = vec![first];
        let mut in_len = plen;
        let mut out_len = first.llen;
        while in_len < MAX_RUN_INPUT && run.len() < MAX_RUN_EXTENTS && out_len < buf.len() as u64 {
            let la = first.la.saturating_add(out_len);
            // A map error ends the run; the caller's next map reports it.
            let Ok(e) = zmap.map(la) else { break };
            let ZKind::Encoded {
                pa: p,
                inline: false,
                plen: l,
                ..
            } = e.kind
            else {
                break;
            };
            if e.la != la
                || Some(p) != pa.checked_add(in_len)
                || out_len.saturating_add(e.llen) > buf.len() as u64
                || in_len.saturating_add(l) > MAX_RUN_INPUT
            {
                break;
            }
            run.push(e);
            in_len = in_len.saturating_add(l);
            out_len = out_len.saturating_add(e.llen);
        }
        if run.len() == 1 {
            self.stream_extent(img, inode, &first, &mut buf[..first_len])?;
            return Ok(first_len);
        }
        let in_len = usize::try_from(in_len).unwrap_or(usize::MAX);
        let mut input = INPUT.with(|b| b.take());
        if input.len() < in_len {
            input.resize(in_len, 0);
        }
        let r = self.decode_run_input(img, inode, &run, pa, &mut input[..in_len], buf);
        if input.capacity() <= MAX_KEPT_INPUT {
            INPUT.with(|b| b.replace(input));
        }
        r
    }

    /// Decodes extent `ext` straight into `out` (a stream, not cached);
    /// a failure is remembered in the cache all the same, so the next
    /// reader of the extent does not decode it again to fail again.
    fn stream_extent<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        ext: &ZExtent,
        out: &mut [u8],
    ) -> Result<()> {
        self.decode_extent(img, inode, ext, out).inspect_err(|e| {
            self.cache.remember_failure(extent_key(img, inode, ext), e);
        })
    }

    fn decode_run_input<I: ImageRead + ?Sized>(
        &self,
        img: &I,
        inode: &Inode,
        run: &[ZExtent],
        pa: u64,
        input: &mut [u8],
        buf: &mut [u8],
    ) -> Result<usize> {
        img.read_physical(inode.nid, 0, pa, input).map_err(|e| {
            // The one read of the whole run failed: name the run.
            let first = run.first().map_or(0, |e| e.la);
            let llen = run.iter().fold(0u64, |n, e| n.saturating_add(e.llen));
            Error::Decode {
                nid: inode.nid,
                la: first,
                llen,
                at: img.locate(inode, first).unwrap_or(At::Image(pa)),
                plen: input.len() as u64,
                cause: Box::new(e),
            }
        })?;
        let (mut i, mut o) = (0usize, 0usize);
        for e in run {
            let Some(pcluster) = Pcluster::of(e) else {
                break;
            };
            let plen = usize::try_from(pcluster.plen).unwrap_or(usize::MAX);
            let llen = usize::try_from(e.llen).unwrap_or(usize::MAX);
            let src = input.get(i..).and_then(|s| s.get(..plen));
            let dst = buf.get_mut(o..).and_then(|s| s.get_mut(..llen));
            let (Some(src), Some(dst)) = (src, dst) else {
                return Err(Error::corrupt(
                    Some(inode.nid),
                    inode.loc,
                    "compressed map",
                    "run beyond its buffer",
                ));
            };
            self.decode_input(img, inode, e, src, dst).map_err(|err| {
                let err = decode_error(img, inode, e, err);
                self.cache.remember_failure(extent_key(img, inode, e), &err);
                err
            })?;
            i = i.saturating_add(plen);
            o = o.saturating_add(llen);
        }
        Ok(o)
    }

    /// Decodes pcluster `pcluster` (`input`) into `out`; `la_in_block`:
    /// where the extent starts in its first block (interlaced data depends
    /// on it).
    fn decode(
        &self,
        inode: &Inode,
        pcluster: &Pcluster,
        la_in_block: u64,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        match pcluster.alg {
            ALG_SHIFTED => {
                let src = input.get(..out.len()).ok_or_else(|| {
                    Error::corrupt_unplaced(
                        Some(inode.nid),
                        "plain pcluster",
                        "shorter than its extent",
                    )
                })?;
                out.copy_from_slice(src);
                Ok(())
            }
            ALG_INTERLACED => {
                // The part up to the first block boundary is stored at the end
                // of the pcluster, the rest from its start.
                if out.len() > input.len() {
                    return Err(Error::corrupt_unplaced(
                        Some(inode.nid),
                        "plain pcluster",
                        "shorter than its extent",
                    ));
                }
                let bs = self.decoder.block_size as u64;
                let head_room =
                    usize::try_from(bs.saturating_sub(la_in_block)).unwrap_or(usize::MAX);
                let head = head_room.min(out.len());
                let from = input.len().checked_sub(head_room).ok_or_else(|| {
                    Error::corrupt_unplaced(
                        Some(inode.nid),
                        "interlaced pcluster",
                        "smaller than a block",
                    )
                })?;
                out[..head].copy_from_slice(&input[from..][..head]);
                let rest = out.len().saturating_sub(head);
                out[head..].copy_from_slice(&input[..rest]);
                Ok(())
            }
            a => {
                let alg = Algorithm::from_u8(a).ok_or_else(|| {
                    Error::unsupported(Some(inode.nid), format!("compression algorithm {a}"))
                })?;
                self.decoder.decompress(alg, input, out, pcluster.partial)
            }
        }
    }
}

/// The map said encoded, the code holding the extent found otherwise.
fn not_encoded(inode: &Inode) -> Error {
    Error::corrupt(
        Some(inode.nid),
        inode.loc,
        "compressed map",
        "not an encoded extent",
    )
}

/// `cause`, the failure to decode extent `ext` of `inode`, as an
/// [`Error::Decode`] that names the inode, the extent and its pcluster.
fn decode_error<I: ImageRead + ?Sized>(
    img: &I,
    inode: &Inode,
    ext: &ZExtent,
    cause: Error,
) -> Error {
    let (at, plen) = match Pcluster::of(ext) {
        Some(p) if p.inline => (
            At::from(MetaPos {
                pos: p.pa,
                in_metabox: inode.loc.in_metabox,
            }),
            p.plen,
        ),
        Some(p) => (img.locate(inode, ext.la).unwrap_or(At::Image(p.pa)), p.plen),
        None => (At::from(inode.loc), 0),
    };
    Error::Decode {
        nid: inode.nid,
        la: ext.la,
        llen: ext.llen,
        at,
        plen,
        cause: Box::new(cause),
    }
}

/// Reads the encoded bytes of `pcluster` (of `inode`) into `input`.
fn read_pcluster<I: ImageRead + ?Sized>(
    img: &I,
    inode: &Inode,
    pcluster: &Pcluster,
    input: &mut [u8],
) -> Result<()> {
    if pcluster.inline {
        let p = MetaPos {
            pos: pcluster.pa,
            in_metabox: inode.loc.in_metabox,
        };
        img.meta_into("inline pcluster", p, input)
    } else {
        img.read_physical(inode.nid, 0, pcluster.pa, input)
    }
}

/// The cache key of extent `ext` of `inode`.
fn extent_key<M: MetaRead + ?Sized>(img: &M, inode: &Inode, ext: &ZExtent) -> Key {
    let (pa, inline) = match ext.kind {
        ZKind::Encoded { pa, inline, .. } => (pa, inline),
        _ => (u64::MAX, false),
    };
    Key {
        pa,
        inline,
        in_metabox: inline && inode.loc.in_metabox,
        llen: ext.llen,
        la_in_block: img.superblock().blkoff(ext.la) as u32,
    }
}

/// The logical range `[start, end)` decoded anyway to read bytes
/// `offset..offset + len` of compressed `inode`: from the start of the
/// pcluster extent holding `offset` to the end of the one holding the last
/// byte (clipped to the file size). Where an end falls in a hole or a
/// fragment, the range stops at the request there. `None` for empty
/// ranges.
pub(super) fn decoded_range<M: MetaRead + ?Sized>(
    meta: &M,
    inode: &Inode,
    offset: u64,
    len: u64,
) -> Result<Option<(u64, u64)>> {
    let end = offset.saturating_add(len).min(inode.size);
    if offset >= end {
        return Ok(None);
    }
    let zmap = ZMap::new(meta, inode)?;
    let first = zmap.map(offset)?;
    let start = match first.kind {
        ZKind::Encoded { .. } => first.la.min(offset),
        _ => offset,
    };
    let last_pos = end.saturating_sub(1);
    let first_end = first.la.saturating_add(first.llen);
    let last = if last_pos < first_end {
        first
    } else {
        zmap.map(last_pos)?
    };
    let stop = match last.kind {
        ZKind::Encoded { .. } => last.la.saturating_add(last.llen).max(end),
        _ => end,
    };
    Ok(Some((start, stop.min(inode.size))))
}
