//! An opened image: what it is made of (superblock, devices, caches) and
//! the operations a filesystem needs (inodes, data, directories, symlinks,
//! xattrs), each handed to the file that does that job.

use std::sync::Arc;

use super::access::{ImageRead, MetaRead};
use super::decompress::{self, Configs, Decoder};
use super::devices::{Device, Devices, Span};
use super::dir::{DirEntry, FileType};
use super::dirread;
use super::error::At;
use super::inode::{Inode, InodeKind, MetaPos};
use super::map::{self, Extent, ExtentKind};
use super::metacache::{MetaBytes, MetaCache};
use super::ondisk;
use super::plain;
use super::superblock::Superblock;
use super::xattr::{Xattr, Xattrs};
use super::zcache::CacheStats;
use super::zdata::{self, Compressed};
use super::zmap::{ZKind, ZMap};
use super::{Error, Result};
use crate::source::{read_exact_at, Source};

/// Longest symlink target the kernel returns (PAGE_SIZE - 1).
const SYMLINK_MAX: u64 = 4095;

/// Options for opening an image.
#[derive(Debug, Default, Clone)]
pub struct ImageOptions {
    /// Extra devices (blobs), in device-table order. When empty and the
    /// image has a device table, the data is looked up inside the primary
    /// source at each device's unified address ("flat" mode).
    pub devices: Vec<Arc<dyn Source>>,
    /// Bytes of metadata blocks to keep cached (default 32 MiB; 0 = none).
    pub meta_cache_bytes: Option<u64>,
    /// Bytes of decoded compressed extents to keep cached (default 256 MiB).
    pub decode_cache_bytes: Option<u64>,
}

/// Default decoded-extent cache budget.
pub const DEFAULT_DECODE_CACHE: u64 = 256 << 20;

/// Default metadata block cache budget.
pub const DEFAULT_META_CACHE: u64 = 32 << 20;

/// An opened EROFS image.
#[derive(Debug)]
pub struct Image {
    sb: Superblock,
    devices: Devices,
    metabox: Option<Inode>,
    meta_cache: Arc<MetaCache>,
    compressed: Compressed,
    xattrs: Xattrs,
}

impl Image {
    /// Opens and validates an image.
    pub fn open(src: Arc<dyn Source>, opts: ImageOptions) -> Result<Self> {
        let size = src.size();
        let head_len = size.min(4096) as usize;
        let mut head = vec![0u8; head_len];
        read_exact_at(src.as_ref(), &mut head, 0)
            .map_err(|e| Error::io(At::Image(0), head_len, e))?;
        let sb = Superblock::parse(&head)?;
        let meta_cache = Arc::new(MetaCache::new(
            opts.meta_cache_bytes.unwrap_or(DEFAULT_META_CACHE),
            sb.blkszbits,
        ));
        let decoder = Decoder {
            configs: load_configs(&sb, src.as_ref())?,
            zero_padding: sb.has_incompat(ondisk::INCOMPAT_ZERO_PADDING),
            block_size: sb.block_size() as usize,
        };
        let devices = Devices::open(src, &sb, opts.devices)?;
        let decode_cache = opts.decode_cache_bytes.unwrap_or(DEFAULT_DECODE_CACHE);
        let mut img = Image {
            sb,
            devices,
            metabox: None,
            meta_cache,
            compressed: Compressed::new(decoder, decode_cache),
            xattrs: Xattrs::default(),
        };
        if let Some(nid) = img.sb.metabox_nid {
            let mb = img.inode(nid)?;
            img.metabox = Some(mb);
        }
        Ok(img)
    }

    /// The same image read through `src` (another descriptor of its
    /// bytes, such as one opened with O_DIRECT) with `opts`' devices and
    /// decoded-data cache, sharing this image's metadata block cache
    /// (`opts.meta_cache_bytes` is ignored): a second reader of the image
    /// keeps no second copy of its metadata. `src` must hold the same
    /// image: a different superblock is an error.
    pub fn reopen(&self, src: Arc<dyn Source>, opts: ImageOptions) -> Result<Self> {
        let mut img = Image::open(
            src,
            ImageOptions {
                meta_cache_bytes: Some(0),
                ..opts
            },
        )?;
        if img.sb != self.sb {
            return Err(Error::corrupt(
                None,
                At::Image(ondisk::SUPER_OFFSET),
                "superblock",
                "not the image being reopened",
            ));
        }
        img.meta_cache = Arc::clone(&self.meta_cache);
        Ok(img)
    }

    /// The decoded-extent cache's counts (hits, misses, evictions) and
    /// what it holds now.
    pub fn extent_cache_stats(&self) -> CacheStats {
        self.compressed.cache_stats()
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Extra devices from the device table.
    pub fn devices(&self) -> &[Device] {
        self.devices.extra()
    }

    /// Root directory nid.
    pub fn root_nid(&self) -> u64 {
        self.sb.root_nid
    }

    /// Block size bits.
    pub fn blkszbits(&self) -> u8 {
        self.sb.blkszbits
    }

    /// Reads `len` bytes of metadata at `pos`, borrowing when the source is
    /// memory.
    pub fn meta(&self, what: &'static str, pos: MetaPos, len: usize) -> Result<MetaBytes<'_>> {
        if pos.in_metabox {
            let mut v = vec![0u8; len];
            self.meta_into(what, pos, &mut v)?;
            return Ok(MetaBytes::Owned(v));
        }
        self.meta_cache.read(&self.devices, what, pos.pos, len)
    }

    /// Reads metadata at `pos` into `buf`.
    pub fn meta_into(&self, what: &'static str, pos: MetaPos, buf: &mut [u8]) -> Result<()> {
        if !pos.in_metabox {
            return self.devices.read_primary(what, pos.pos, buf);
        }
        let mb = self
            .metabox
            .as_ref()
            .ok_or_else(|| Error::corrupt(None, pos, what, "metabox reference without metabox"))?;
        let n = self.read(mb, pos.pos, buf)?;
        if n != buf.len() {
            return Err(Error::Truncated {
                what,
                at: At::Metabox(pos.pos),
                end: pos.pos.saturating_add(buf.len() as u64),
                size: mb.size,
            });
        }
        Ok(())
    }

    /// Where inode `nid` lives.
    pub fn inode_pos(&self, nid: u64) -> Result<MetaPos> {
        let in_metabox = nid & ondisk::NID_METABOX_BIT != 0;
        let lo = nid & !ondisk::NID_METABOX_BIT;
        // A nid names no place of its own: the dirent (or superblock
        // field) that holds it is at fault, and its reader knows where.
        let bad = || Error::corrupt_unplaced(Some(nid), "nid", "inode position overflows");
        let off = lo.checked_mul(32).ok_or_else(bad)?;
        if in_metabox {
            if self.sb.metabox_nid.is_none() {
                return Err(Error::corrupt_unplaced(
                    Some(nid),
                    "nid",
                    "metabox bit without metabox feature",
                ));
            }
            return Ok(MetaPos {
                pos: off,
                in_metabox,
            });
        }
        let base = u64::from(self.sb.meta_blkaddr) << self.sb.blkszbits;
        Ok(MetaPos {
            pos: base.checked_add(off).ok_or_else(bad)?,
            in_metabox,
        })
    }

    /// Reads and decodes inode `nid`.
    pub fn inode(&self, nid: u64) -> Result<Inode> {
        let loc = self.inode_pos(nid)?;
        let raw = self.meta("inode", loc, 32)?;
        if raw[0] & 1 == 0 {
            return Inode::parse(&self.sb, nid, loc, &raw);
        }
        let raw = self.meta("inode", loc, 64)?;
        Inode::parse(&self.sb, nid, loc, &raw)
    }

    /// Maps logical byte `la` of an uncompressed inode.
    pub fn map(&self, inode: &Inode, la: u64) -> Result<Extent> {
        map::map_uncompressed(self, inode, la)
    }

    /// Reads file data at `offset` into `buf`; returns bytes read (short
    /// only at end of file).
    pub fn read(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let Some(left) = inode.size.checked_sub(offset).filter(|l| *l > 0) else {
            return Ok(0);
        };
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let out = &mut buf[..want];
        if inode.is_compressed() {
            self.compressed.read(self, inode, offset, out)?;
        } else {
            plain::read(self, inode, offset, out)?;
        }
        Ok(want)
    }

    /// Where the bytes `offset..offset + len` (clamped to the file size) of
    /// an uncompressed file lie on the host: file descriptors and offsets
    /// to `splice(2)` from, and runs of zeros for holes. `None` when some
    /// part cannot be spliced (compressed or inline data, an extra device,
    /// a source that is not a buffered file, a range past the end of the
    /// image, more than `max_spans` pieces): read it with [`Image::read`],
    /// which also reports the errors.
    pub fn plain_spans(
        &self,
        inode: &Inode,
        offset: u64,
        len: usize,
        max_spans: usize,
    ) -> Result<Option<Vec<Span>>> {
        if inode.is_compressed() || !self.devices.can_splice() {
            return Ok(None);
        }
        let left = inode.size.saturating_sub(offset);
        let want = len.min(usize::try_from(left).unwrap_or(usize::MAX));
        plain::spans(self, &self.devices, inode, offset, want, max_spans)
    }

    /// The logical range `[start, end)` decoded anyway to read bytes
    /// `offset..offset + len` of a compressed inode: from the start of the
    /// pcluster extent holding `offset` to the end of the one holding the
    /// last byte (clipped to the file size). Where an end falls in a hole
    /// or a fragment, the range stops at the request there. `None` for
    /// inodes that are not compressed and for empty ranges.
    pub fn decoded_range(
        &self,
        inode: &Inode,
        offset: u64,
        len: u64,
    ) -> Result<Option<(u64, u64)>> {
        if !inode.is_compressed() {
            return Ok(None);
        }
        zdata::decoded_range(self, inode, offset, len)
    }

    /// The extent of `inode` holding byte `off` (`off < size`), as
    /// (start, length, is_hole).
    pub fn extent_at(&self, inode: &Inode, off: u64) -> Result<(u64, u64, bool)> {
        let (start, len, hole) = if inode.is_compressed() {
            let e = ZMap::new(self, inode)?.map(off)?;
            (e.la, e.llen, matches!(e.kind, ZKind::Hole))
        } else {
            let e = self.map(inode, off)?;
            (e.la, e.len, matches!(e.kind, ExtentKind::Hole))
        };
        if len == 0 || off < start || off.saturating_sub(start) >= len {
            return Err(Error::corrupt(
                Some(inode.nid),
                inode.loc,
                "block map",
                format!("extent {start}+{len} does not cover {off}"),
            ));
        }
        Ok((start, len, hole))
    }

    /// `SEEK_DATA`: the first byte at or after `off` that is not in a hole,
    /// or `None` when only holes remain before the end of the file.
    pub fn seek_data(&self, inode: &Inode, off: u64) -> Result<Option<u64>> {
        let mut pos = off;
        // Each pass moves past one extent; every extent read comes from a
        // distinct index position, so corrupt maps end in an error.
        while pos < inode.size {
            let (start, len, hole) = self.extent_at(inode, pos)?;
            if !hole {
                return Ok(Some(pos));
            }
            pos = start.saturating_add(len);
        }
        Ok(None)
    }

    /// `SEEK_HOLE`: the first byte at or after `off` in a hole, or the file
    /// size (the implicit hole at the end).
    pub fn seek_hole(&self, inode: &Inode, off: u64) -> Result<u64> {
        let mut pos = off;
        while pos < inode.size {
            let (start, len, hole) = self.extent_at(inode, pos)?;
            if hole {
                return Ok(pos);
            }
            pos = start.saturating_add(len);
        }
        Ok(inode.size.max(off))
    }

    /// Where byte `offset` of `inode`'s content is stored: its physical
    /// place, or its pcluster's when compressed. `None` in a hole or a
    /// fragment, or when the map cannot say (for messages).
    pub fn locate(&self, inode: &Inode, offset: u64) -> Option<At> {
        if inode.is_compressed() {
            let e = ZMap::new(self, inode).ok()?.map(offset).ok()?;
            return match e.kind {
                ZKind::Encoded { pa, inline, .. } => Some(if inline {
                    At::from(MetaPos {
                        pos: pa,
                        in_metabox: inode.loc.in_metabox,
                    })
                } else {
                    self.devices.locate(0, pa)
                }),
                ZKind::Hole | ZKind::Fragment { .. } => None,
            };
        }
        let e = self.map(inode, offset).ok()?;
        let skip = offset.checked_sub(e.la)?;
        match e.kind {
            ExtentKind::Mapped { device, pa } => {
                Some(self.devices.locate(device, pa.checked_add(skip)?))
            }
            ExtentKind::Inline(p) => p.offset(skip).map(At::from),
            ExtentKind::Hole => None,
        }
    }

    /// An upper bound for any sane directory size: 16 times the bytes of
    /// all devices (at least 1 MiB).
    fn max_dir_size(&self) -> u64 {
        self.devices.total_bytes().saturating_mul(16).max(1 << 20)
    }

    /// Reads directory block `blk` of `dir`.
    pub fn dir_block(&self, dir: &Inode, blk: u64) -> Result<Vec<u8>> {
        dirread::dir_block(self, dir, blk)
    }

    /// Looks `name` up in directory `dir`: binary search over blocks by their
    /// first name, then inside the block (as the kernel's namei does).
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<(u64, FileType)>> {
        dirread::lookup(self, self.max_dir_size(), dir, name)
    }

    /// Iterates the entries of `dir` from byte offset `offset` (0 = start;
    /// resume with the `next` offset an entry reported). `f` returns false
    /// to stop.
    pub fn readdir(
        &self,
        dir: &Inode,
        offset: u64,
        f: impl FnMut(DirEntry<'_>, u64) -> bool,
    ) -> Result<()> {
        dirread::readdir(self, self.max_dir_size(), dir, offset, f)
    }

    /// The target of a symlink, as readlink(2) on the kernel mount returns it.
    pub fn readlink(&self, inode: &Inode) -> Result<Vec<u8>> {
        if inode.kind != InodeKind::Symlink {
            return Err(Error::WrongKind {
                nid: inode.nid,
                what: "not a symlink",
            });
        }
        let len = inode.size.min(SYMLINK_MAX) as usize;
        let mut v = vec![0u8; len];
        let n = self.read(inode, 0, &mut v)?;
        v.truncate(n);
        if let Some(nul) = v.iter().position(|&b| b == 0) {
            v.truncate(nul);
        }
        Ok(v)
    }

    /// Every xattr of `inode`, inline ones first, then shared ones (the
    /// kernel's listxattr order), hidden ones included.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        self.xattrs.list(self, inode)
    }

    /// Full names listxattr shows (hidden prefixes left out), in kernel order.
    pub fn list_xattr_names(&self, inode: &Inode) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .xattrs(inode)?
            .iter()
            .filter_map(|x| x.full_name())
            .collect())
    }

    /// Where an image made with `mkfs.erofs --xattr-inode-digest` keeps each
    /// file's content fingerprint: the short prefix index and the name
    /// after it (the long prefix's infix), as [`Xattr`] reports them. `None`
    /// when the image declares no such xattr or names a missing prefix.
    pub fn ishare_xattr(&self) -> Result<Option<(u8, Vec<u8>)>> {
        let Some(id) = self.sb.ishare_xattr_prefix_id else {
            return Ok(None);
        };
        Ok(self
            .xattrs
            .prefixes(self)?
            .get(usize::from(id))
            .map(|p| (p.base_index, p.infix.clone())))
    }

    /// The value of xattr `name`, or `None` when absent (or hidden).
    pub fn get_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Option<Vec<u8>>> {
        self.xattrs.get(self, inode, name)
    }
}

impl MetaRead for Image {
    fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn meta(&self, what: &'static str, pos: MetaPos, len: usize) -> Result<MetaBytes<'_>> {
        Image::meta(self, what, pos, len)
    }

    fn meta_into(&self, what: &'static str, pos: MetaPos, buf: &mut [u8]) -> Result<()> {
        Image::meta_into(self, what, pos, buf)
    }
}

impl ImageRead for Image {
    fn inode(&self, nid: u64) -> Result<Inode> {
        Image::inode(self, nid)
    }

    fn read(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Image::read(self, inode, offset, buf)
    }

    fn read_physical(&self, nid: u64, device: u16, pa: u64, buf: &mut [u8]) -> Result<()> {
        self.devices.read(nid, device, pa, buf)
    }

    fn read_physical_cached(&self, nid: u64, device: u16, pa: u64, buf: &mut [u8]) -> Result<()> {
        let Some(offset) = self.devices.primary_offset(nid, device, pa)? else {
            return self.devices.read(nid, device, pa, buf);
        };
        let bytes = self
            .meta_cache
            .read(&self.devices, "file data", offset, buf.len())?;
        bytes.copy_into("file data", At::Image(offset), buf)
    }

    fn locate(&self, inode: &Inode, offset: u64) -> Option<At> {
        Image::locate(self, inode, offset)
    }
}

/// The compression configurations that follow the superblock (the legacy
/// LZ4-only ones without `COMPR_CFGS`).
fn load_configs(sb: &Superblock, src: &dyn Source) -> Result<Configs> {
    if !sb.has_incompat(ondisk::INCOMPAT_COMPR_CFGS) {
        return Ok(Configs::legacy(sb.u1));
    }
    let start = ondisk::SUPER_OFFSET.saturating_add(sb.sb_size as u64);
    let len = src
        .size()
        .saturating_sub(start)
        .min(decompress::MAX_CFGS_BYTES as u64) as usize;
    let mut buf = vec![0u8; len];
    Devices::read_source(src, "compression configs", At::Image(start), &mut buf)?;
    let (cfgs, _) = decompress::parse_cfgs(sb.u1, &buf, sb.blkszbits)
        .map_err(|e| e.placed(None, At::Image(start)))?;
    Ok(cfgs)
}
