//! Reading compressed inodes: map each range to its pcluster, decode it
//! (through the decoded-extent cache) and copy the requested bytes.

use std::sync::Arc;

use super::decompress::{self, Algorithm};
use super::image::Image;
use super::inode::{Inode, MetaPos};
use super::ondisk;
use super::zcache::Key;
use super::zmap::{ZExtent, ZKind, ZMap, ALG_INTERLACED, ALG_SHIFTED};
use super::{Error, Result};

impl Image {
    /// Reads `buf.len()` bytes (already clipped to the file size) of a
    /// compressed inode at `offset`.
    pub(super) fn read_compressed(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<()> {
        let zmap = ZMap::new(self, inode)?;
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
                    self.read_fragment(inode, off.saturating_add(skip), out)?
                }
                ZKind::Encoded { .. } => {
                    let data = self.decoded_extent(inode, &ext)?;
                    let start = usize::try_from(skip).unwrap_or(usize::MAX);
                    let src = data.get(start..).and_then(|s| s.get(..n)).ok_or_else(|| {
                        Error::corrupt(
                            Some(inode.nid),
                            "compressed data",
                            "decoded extent too short",
                        )
                    })?;
                    out.copy_from_slice(src);
                }
            }
            done = done.saturating_add(n);
        }
        Ok(())
    }

    /// Reads fragment bytes from the packed inode.
    fn read_fragment(&self, inode: &Inode, off: u64, out: &mut [u8]) -> Result<()> {
        let sb = self.superblock();
        if Some(inode.nid) == sb.metabox_nid || inode.nid == sb.packed_nid {
            return Err(Error::corrupt(
                Some(inode.nid),
                "fragment",
                "the packed or metabox inode refers to fragments",
            ));
        }
        let packed = self.packed_inode()?;
        let n = self.read(&packed, off, out)?;
        if n != out.len() {
            return Err(Error::corrupt(
                Some(inode.nid),
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
    fn decoded_extent(&self, inode: &Inode, ext: &ZExtent) -> Result<Arc<[u8]>> {
        let ZKind::Encoded {
            pa,
            inline,
            plen,
            alg,
            partial,
        } = ext.kind
        else {
            return Err(Error::corrupt(
                Some(inode.nid),
                "compressed map",
                "not an encoded extent",
            ));
        };
        let key = Key {
            pa,
            inline,
            in_metabox: inline && inode.loc.in_metabox,
            llen: ext.llen,
            la_in_block: self.superblock().blkoff(ext.la) as u32,
        };
        self.zcache().get_or_decode(key, || {
            let plen = usize::try_from(plen).unwrap_or(usize::MAX);
            let mut input = vec![0u8; plen];
            if inline {
                let p = MetaPos {
                    pos: pa,
                    in_metabox: inode.loc.in_metabox,
                };
                self.meta_into("inline pcluster", p, &mut input)?;
            } else {
                self.read_physical(inode, pa, &mut input)?;
            }
            let llen = usize::try_from(ext.llen).unwrap_or(usize::MAX);
            let mut out = vec![0u8; llen];
            self.decode(
                inode,
                alg,
                &input,
                &mut out,
                partial,
                self.superblock().blkoff(ext.la),
            )
            .map_err(|e| match e {
                Error::Corrupt { detail, field, .. } => Error::corrupt(
                    Some(inode.nid),
                    field,
                    format!(
                        "{detail} (pcluster at {pa}, {plen} bytes, extent {}+{})",
                        ext.la, ext.llen
                    ),
                ),
                other => other,
            })?;
            Ok(out)
        })
    }

    fn decode(
        &self,
        inode: &Inode,
        alg: u8,
        input: &[u8],
        out: &mut [u8],
        partial: bool,
        la_in_block: u64,
    ) -> Result<()> {
        let bs = self.superblock().block_size();
        match alg {
            ALG_SHIFTED => {
                let src = input.get(..out.len()).ok_or_else(|| {
                    Error::corrupt(Some(inode.nid), "plain pcluster", "shorter than its extent")
                })?;
                out.copy_from_slice(src);
                Ok(())
            }
            ALG_INTERLACED => {
                // The part up to the first block boundary is stored at the end
                // of the pcluster, the rest from its start.
                if out.len() > input.len() {
                    return Err(Error::corrupt(
                        Some(inode.nid),
                        "plain pcluster",
                        "shorter than its extent",
                    ));
                }
                let head_room =
                    usize::try_from(bs.saturating_sub(la_in_block)).unwrap_or(usize::MAX);
                let head = head_room.min(out.len());
                let from = input.len().checked_sub(head_room).ok_or_else(|| {
                    Error::corrupt(
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
                let zero_padding = self
                    .superblock()
                    .has_incompat(ondisk::INCOMPAT_ZERO_PADDING);
                decompress::decompress(
                    alg,
                    self.zconfigs(),
                    input,
                    out,
                    partial,
                    zero_padding,
                    bs as usize,
                )
            }
        }
    }
}
