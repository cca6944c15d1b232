//! An opened image: the superblock, devices and the operations a filesystem
//! needs (inodes, data, directories, symlinks, xattrs).

use std::sync::{Arc, OnceLock};

use zerocopy::FromBytes;

use super::decompress::{self, Configs};
use super::dir::{DirBlock, DirEntry, FileType};
use super::inode::{Inode, InodeKind, MetaPos};
use super::map::{map_flat, ChunkGeometry, Extent, ExtentKind};
use super::metacache::{MetaBytes, MetaCache};
use super::ondisk::{self, DeviceSlot, XattrEntry, XattrIbodyHeader};
use super::superblock::Superblock;
use super::xattr::{self, LongPrefix, Xattr};
use super::zcache::ZCache;
use super::zmap::{ZKind, ZMap};
use super::{Error, Result};
use crate::source::{read_exact_at, Source};

/// A piece of file data on the host, from [`Image::plain_spans`].
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

/// Longest symlink target the kernel returns (PAGE_SIZE - 1).
const SYMLINK_MAX: u64 = 4095;
/// Largest inline xattr area: 12 + 4 * (65535 - 1) bytes.
const XATTR_IBODY_MAX: u32 = 12 + 4 * 65534;

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

/// The inline xattr area: name filter, shared ids, inline entries.
type Ibody<'a> = (u32, Vec<u32>, MetaBytes<'a>, usize);

/// An opened EROFS image.
#[derive(Debug)]
pub struct Image {
    src: Arc<dyn Source>,
    sb: Superblock,
    devices: Vec<Device>,
    device_id_mask: u16,
    metabox: Option<Inode>,
    prefixes: OnceLock<std::result::Result<Vec<LongPrefix>, String>>,
    meta_cache: MetaCache,
    zcache: ZCache,
    zconfigs: Configs,
    packed: OnceLock<std::result::Result<Inode, String>>,
    total_bytes: u64,
}

impl Image {
    /// Opens and validates an image.
    pub fn open(src: Arc<dyn Source>, opts: ImageOptions) -> Result<Self> {
        let size = src.size();
        let head_len = size.min(4096) as usize;
        let mut head = vec![0u8; head_len];
        read_exact_at(src.as_ref(), &mut head, 0).map_err(|e| Error::Io {
            offset: 0,
            len: head_len,
            source: e,
        })?;
        let sb = Superblock::parse(&head)?;
        let meta_cache = MetaCache::new(
            opts.meta_cache_bytes.unwrap_or(DEFAULT_META_CACHE),
            sb.block_size(),
        );
        let zcache = ZCache::new(opts.decode_cache_bytes.unwrap_or(DEFAULT_DECODE_CACHE));
        let mut img = Image {
            src,
            sb,
            devices: Vec::new(),
            device_id_mask: 0,
            metabox: None,
            prefixes: OnceLock::new(),
            meta_cache,
            zcache,
            zconfigs: Configs::default(),
            packed: OnceLock::new(),
            total_bytes: size,
        };
        img.load_zconfigs()?;
        img.load_devices(opts)?;
        if let Some(nid) = img.sb.metabox_nid {
            let mb = img.inode(nid)?;
            img.metabox = Some(mb);
        }
        Ok(img)
    }

    /// Parses the compression configurations that follow the superblock.
    fn load_zconfigs(&mut self) -> Result<()> {
        if !self.sb.has_incompat(ondisk::INCOMPAT_COMPR_CFGS) {
            self.zconfigs = Configs::legacy(self.sb.u1);
            return Ok(());
        }
        let start = ondisk::SUPER_OFFSET.saturating_add(self.sb.sb_size as u64);
        let len = self
            .src
            .size()
            .saturating_sub(start)
            .min(decompress::MAX_CFGS_BYTES as u64) as usize;
        let mut buf = vec![0u8; len];
        self.read_primary("compression configs", start, &mut buf)?;
        let (cfgs, _) = decompress::parse_cfgs(self.sb.u1, &buf, self.sb.blkszbits)?;
        self.zconfigs = cfgs;
        Ok(())
    }

    /// The decoded-extent cache.
    pub(super) fn zcache(&self) -> &ZCache {
        &self.zcache
    }

    /// Decoder configuration of this image.
    pub(super) fn zconfigs(&self) -> &Configs {
        &self.zconfigs
    }

    /// The packed inode (fragments, and long xattr prefixes of older images).
    pub(super) fn packed_inode(&self) -> Result<Inode> {
        let r = self.packed.get_or_init(|| {
            let nid = self.sb.packed_nid;
            if nid == 0 || !self.sb.has_incompat(ondisk::INCOMPAT_FRAGMENTS) {
                return Err("fragment data but the image has no packed inode".to_string());
            }
            self.inode(nid).map_err(|e| e.to_string())
        });
        r.clone()
            .map_err(|e| Error::Earlier(format!("packed inode: {e}")))
    }

    /// Reads bytes at physical address `pa` of the primary address space
    /// (extra devices mapped by unified address).
    pub(super) fn read_physical(&self, inode: &Inode, pa: u64, buf: &mut [u8]) -> Result<()> {
        self.read_device(inode, 0, pa, buf)
    }

    fn load_devices(&mut self, opts: ImageOptions) -> Result<()> {
        let n = usize::from(self.sb.extra_devices);
        if !opts.devices.is_empty() && opts.devices.len() != n {
            return Err(Error::unsupported(
                None,
                format!(
                    "extra devices don't match: the image has {n}, {} given",
                    opts.devices.len()
                ),
            ));
        }
        if n == 0 {
            return Ok(());
        }
        let mask = n.saturating_add(1).next_power_of_two().saturating_sub(1);
        self.device_id_mask = u16::try_from(mask).unwrap_or(u16::MAX);
        let mut pos = u64::from(self.sb.devt_slotoff) * 128;
        let mut given = opts.devices.into_iter();
        for _ in 0..n {
            let mut raw = [0u8; 128];
            self.read_primary("device table", pos, &mut raw)?;
            let slot = DeviceSlot::read_from_bytes(&raw[..])
                .map_err(|_| Error::corrupt(None, "device slot", "decode"))?;
            let tag_len = slot.tag.iter().position(|&b| b == 0).unwrap_or(64);
            let src = given.next();
            if let Some(s) = &src {
                self.total_bytes = self.total_bytes.saturating_add(s.size());
            }
            self.devices.push(Device {
                tag: slot.tag[..tag_len].to_vec(),
                blocks: u64::from(slot.blocks_lo.get()),
                uniaddr: u64::from(slot.uniaddr_lo.get()),
                src,
            });
            pos = pos.saturating_add(128);
        }
        Ok(())
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Extra devices from the device table.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Root directory nid.
    pub fn root_nid(&self) -> u64 {
        self.sb.root_nid
    }

    /// Block size bits.
    pub fn blkszbits(&self) -> u8 {
        self.sb.blkszbits
    }

    fn read_from(
        &self,
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

    fn read_primary(&self, what: &'static str, pos: u64, buf: &mut [u8]) -> Result<()> {
        self.read_from(self.src.as_ref(), "image", what, pos, buf)
    }

    /// Reads `len` bytes of metadata at `pos`, borrowing when the source is
    /// memory.
    pub fn meta(&self, what: &'static str, pos: MetaPos, len: usize) -> Result<MetaBytes<'_>> {
        if !pos.in_metabox {
            if let Some(s) = self.src.slice(pos.pos, len) {
                return Ok(MetaBytes::Borrowed(s));
            }
            let bits = self.sb.blkszbits;
            let blk = pos.pos >> bits;
            let off = self.sb.blkoff(pos.pos) as usize;
            if off.saturating_add(len) as u64 <= self.sb.block_size() {
                let block = self.meta_block(what, blk).map_err(|e| match e {
                    Error::Truncated {
                        what, size, device, ..
                    } => Error::Truncated {
                        what,
                        offset: pos.pos,
                        end: pos.pos.saturating_add(len as u64),
                        size,
                        device,
                    },
                    other => other,
                })?;
                if off.saturating_add(len) > block.len() {
                    return Err(Error::Truncated {
                        what,
                        offset: pos.pos,
                        end: pos.pos.saturating_add(len as u64),
                        size: self.src.size(),
                        device: "image".into(),
                    });
                }
                return Ok(MetaBytes::Cached(block, off, len));
            }
        }
        let mut v = vec![0u8; len];
        self.meta_into(what, pos, &mut v)?;
        Ok(MetaBytes::Owned(v))
    }

    /// Metadata block `blk` of the primary device (shorter at the end of a
    /// truncated image), through the block cache.
    fn meta_block(&self, what: &'static str, blk: u64) -> Result<Arc<[u8]>> {
        if let Some(b) = self.meta_cache.get(blk) {
            return Ok(b);
        }
        let start = blk << self.sb.blkszbits;
        let size = self.src.size();
        if start >= size {
            return Err(Error::Truncated {
                what,
                offset: start,
                end: start.saturating_add(self.sb.block_size()),
                size,
                device: "image".into(),
            });
        }
        let len = size.saturating_sub(start).min(self.sb.block_size()) as usize;
        let mut v = vec![0u8; len];
        self.read_primary(what, start, &mut v)?;
        let b: Arc<[u8]> = Arc::from(v);
        self.meta_cache.insert(blk, b.clone());
        Ok(b)
    }

    /// Reads metadata at `pos` into `buf`.
    pub fn meta_into(&self, what: &'static str, pos: MetaPos, buf: &mut [u8]) -> Result<()> {
        if !pos.in_metabox {
            return self.read_primary(what, pos.pos, buf);
        }
        let mb = self
            .metabox
            .as_ref()
            .ok_or_else(|| Error::corrupt(None, what, "metabox reference without metabox"))?;
        let n = self.read(mb, pos.pos, buf)?;
        if n != buf.len() {
            return Err(Error::Truncated {
                what,
                offset: pos.pos,
                end: pos.pos.saturating_add(buf.len() as u64),
                size: mb.size,
                device: "metabox inode".into(),
            });
        }
        Ok(())
    }

    /// Where inode `nid` lives.
    pub fn inode_pos(&self, nid: u64) -> Result<MetaPos> {
        let in_metabox = nid & ondisk::NID_METABOX_BIT != 0;
        let lo = nid & !ondisk::NID_METABOX_BIT;
        let bad = || Error::corrupt(Some(nid), "nid", "inode position overflows");
        let off = lo.checked_mul(32).ok_or_else(bad)?;
        if in_metabox {
            if self.sb.metabox_nid.is_none() {
                return Err(Error::corrupt(
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
        match inode.layout {
            ondisk::LAYOUT_FLAT_PLAIN | ondisk::LAYOUT_FLAT_INLINE => {
                map_flat(inode, self.sb.blkszbits, la)
            }
            ondisk::LAYOUT_CHUNK_BASED => {
                let g = ChunkGeometry::of(inode, self.sb.blkszbits)?;
                let chunknr = la >> g.chunkbits;
                let pos = g.record_pos(inode, chunknr).ok_or_else(|| {
                    Error::corrupt(Some(inode.nid), "chunk index", "position overflows")
                })?;
                let rec = self.meta("chunk index", pos, g.unit as usize)?;
                g.extent(inode, self.sb.blkszbits, chunknr, &rec)
            }
            _ => Err(self.compressed_error(inode)),
        }
    }

    fn compressed_error(&self, inode: &Inode) -> Error {
        Error::WrongKind {
            nid: inode.nid,
            what: "compressed inodes are mapped by ZMap, not the flat block map",
        }
    }

    /// Reads physical bytes of an extent from the right device.
    fn read_device(&self, inode: &Inode, device: u16, pa: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.sb.blkszbits;
        let id = device & self.device_id_mask;
        if id != 0 {
            let dev = self.devices.get(usize::from(id).saturating_sub(1)).ok_or(
                Error::MissingDevice {
                    id,
                    given: self.devices.len(),
                },
            )?;
            return match &dev.src {
                Some(src) => self.read_from(src.as_ref(), "extra device", "file data", pa, buf),
                None => {
                    // Flat mode: every device is concatenated into the
                    // primary at its unified address (as the kernel does
                    // when no device= option is given).
                    let base = dev.uniaddr.checked_shl(u32::from(bs)).unwrap_or(u64::MAX);
                    let pa = base.checked_add(pa).ok_or_else(|| {
                        Error::corrupt(Some(inode.nid), "device address", "overflow")
                    })?;
                    match self.read_primary("file data", pa, buf) {
                        Err(Error::Truncated { .. }) => Err(Error::MissingDevice { id, given: 0 }),
                        r => r,
                    }
                }
            };
        }
        if let Some((src, rel)) = self.extra_device_at(pa) {
            return self.read_from(src, "extra device", "file data", rel, buf);
        }
        self.read_primary("file data", pa, buf)
    }

    /// The extra device (given as a source) whose unified address range
    /// holds physical address `pa` of device id 0, with `pa`'s offset in
    /// it; `None`: `pa` is in the primary image.
    fn extra_device_at(&self, pa: u64) -> Option<(&dyn Source, u64)> {
        let bs = self.sb.blkszbits;
        for dev in &self.devices {
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

    /// Walks the extents of uncompressed `inode` over `want` bytes from
    /// `offset` (within the file): `each(done, n, kind, skip)` gets each
    /// piece, `done` bytes into the range, `n` bytes long, starting `skip`
    /// bytes into its extent of kind `kind`; it returns whether to go on.
    fn for_each_piece(
        &self,
        inode: &Inode,
        offset: u64,
        want: usize,
        mut each: impl FnMut(usize, usize, ExtentKind, u64) -> Result<bool>,
    ) -> Result<()> {
        let mut done = 0usize;
        // Each pass covers at least one byte, so this ends after `want`
        // passes at most.
        while let Some(rest) = want.checked_sub(done).filter(|r| *r > 0) {
            let pos = offset.saturating_add(done as u64);
            let ext = self.map(inode, pos)?;
            let span = pos
                .checked_sub(ext.la)
                .and_then(|skip| Some((skip, ext.len.checked_sub(skip)?)))
                .filter(|(_, avail)| *avail > 0);
            let Some((skip, avail)) = span else {
                return Err(Error::corrupt(
                    Some(inode.nid),
                    "block map",
                    "extent does not cover offset",
                ));
            };
            let n = usize::try_from(avail).unwrap_or(usize::MAX).min(rest);
            if !each(done, n, ext.kind, skip)? {
                break;
            }
            done = done.saturating_add(n);
        }
        Ok(())
    }

    /// Reads file data at `offset` into `buf`; returns bytes read (short
    /// only at end of file).
    pub fn read(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let Some(left) = inode.size.checked_sub(offset).filter(|l| *l > 0) else {
            return Ok(0);
        };
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if inode.is_compressed() {
            self.read_compressed(inode, offset, &mut buf[..want])?;
            return Ok(want);
        }
        self.for_each_piece(inode, offset, want, |done, n, kind, skip| {
            let out = &mut buf[done..][..n];
            match kind {
                ExtentKind::Hole => out.fill(0),
                ExtentKind::Mapped { device, pa } => {
                    let pa = pa.checked_add(skip).ok_or_else(|| {
                        Error::corrupt(Some(inode.nid), "block map", "address overflow")
                    })?;
                    self.read_device(inode, device, pa, out)?;
                }
                ExtentKind::Inline(p) => {
                    let p = p.offset(skip).ok_or_else(|| {
                        Error::corrupt(Some(inode.nid), "inline data", "address overflow")
                    })?;
                    self.meta_into("inline data", p, out)?;
                }
            }
            Ok(true)
        })?;
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
        if inode.is_compressed() {
            return Ok(None);
        }
        let Some((fd, base)) = self.src.splice_fd() else {
            return Ok(None);
        };
        let left = inode.size.saturating_sub(offset);
        let want = len.min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut spans: Vec<Span> = Vec::new();
        let mut whole = true;
        self.for_each_piece(inode, offset, want, |_, n, kind, skip| {
            let span = match kind {
                ExtentKind::Hole => Some(Span::Zero(n)),
                ExtentKind::Mapped { device, pa } => pa
                    .checked_add(skip)
                    .filter(|&p| {
                        device & self.device_id_mask == 0
                            && self.extra_device_at(p).is_none()
                            && p.checked_add(n as u64)
                                .is_some_and(|e| e <= self.src.size())
                    })
                    .and_then(|p| base.checked_add(p))
                    .map(|at| Span::File {
                        fd,
                        offset: at,
                        len: n,
                    }),
                ExtentKind::Inline(_) => None,
            };
            let full = spans.len() >= max_spans;
            match (span, spans.last_mut()) {
                (None, _) => whole = false,
                // Contiguous with the previous piece: one span.
                (Some(Span::File { offset: at, .. }), Some(Span::File { offset, len, .. }))
                    if offset.checked_add(*len as u64) == Some(at) =>
                {
                    *len = len.saturating_add(n);
                }
                (Some(_), _) if full => whole = false,
                (Some(span), _) => spans.push(span),
            }
            Ok(whole)
        })?;
        Ok(whole.then_some(spans))
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

    /// Reads the whole content of a small inode (directory block, symlink).
    fn read_vec(&self, inode: &Inode, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        let n = self.read(inode, offset, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Bytes all devices hold: an upper bound for any sane directory size.
    fn check_dir_size(&self, dir: &Inode) -> Result<()> {
        if !dir.is_dir() {
            return Err(Error::WrongKind {
                nid: dir.nid,
                what: "not a directory",
            });
        }
        if dir.size > self.total_bytes.saturating_mul(16).max(1 << 20) {
            return Err(Error::corrupt(
                Some(dir.nid),
                "directory size",
                format!("{} bytes is larger than the image could hold", dir.size),
            ));
        }
        Ok(())
    }

    /// Reads directory block `blk` of `dir`.
    pub fn dir_block(&self, dir: &Inode, blk: u64) -> Result<Vec<u8>> {
        let bs = self.sb.block_size();
        let start = blk
            .checked_mul(bs)
            .filter(|s| *s < dir.size)
            .ok_or_else(|| Error::corrupt(Some(dir.nid), "directory", "block beyond size"))?;
        let len = dir.size.saturating_sub(start).min(bs) as usize;
        let v = self.read_vec(dir, start, len)?;
        if v.len() != len {
            return Err(Error::corrupt(Some(dir.nid), "directory", "short read"));
        }
        Ok(v)
    }

    /// Looks `name` up in directory `dir`: binary search over blocks by their
    /// first name, then inside the block (as the kernel's namei does).
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<(u64, FileType)>> {
        self.check_dir_size(dir)?;
        if name.is_empty() || name.len() > ondisk::NAME_LEN {
            return Ok(None);
        }
        let nblocks = usize::try_from(dir.size.div_ceil(self.sb.block_size()))
            .map_err(|_| Error::corrupt(Some(dir.nid), "directory size", "too many blocks"))?;
        let mut failure = None;
        let mut exact = None;
        let mut candidate: Option<Vec<u8>> = None;
        let _ = super::dir::bsearch(nblocks, |mid| {
            let r = self.dir_block(dir, mid as u64).and_then(|data| {
                let first = DirBlock::parse(&data, dir.nid)?.entry(0, dir.nid)?;
                Ok((name.cmp(first.name), (first.nid, first.file_type), data))
            });
            match r {
                Ok((ord, hit, data)) => {
                    match ord {
                        std::cmp::Ordering::Greater => candidate = Some(data),
                        std::cmp::Ordering::Equal => exact = Some(hit),
                        std::cmp::Ordering::Less => {}
                    }
                    ord
                }
                Err(e) => {
                    failure = Some(e);
                    std::cmp::Ordering::Equal
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if exact.is_some() {
            return Ok(exact);
        }
        let Some(data) = candidate else {
            return Ok(None);
        };
        let blk = DirBlock::parse(&data, dir.nid)?;
        Ok(blk.find(name, dir.nid)?.map(|e| (e.nid, e.file_type)))
    }

    /// Iterates the entries of `dir` from byte offset `offset` (0 = start;
    /// resume with the `next` offset an entry reported). `f` returns false
    /// to stop.
    pub fn readdir(
        &self,
        dir: &Inode,
        offset: u64,
        mut f: impl FnMut(DirEntry<'_>, u64) -> bool,
    ) -> Result<()> {
        self.check_dir_size(dir)?;
        let bits = self.sb.blkszbits;
        let mut pos = offset;
        // Each pass moves `pos` to the next block start, so this runs at most
        // size / block size times (bounded by check_dir_size).
        while pos < dir.size {
            let blk = pos >> bits;
            let data = self.dir_block(dir, blk)?;
            let block = DirBlock::parse(&data, dir.nid)?;
            let blk_start = blk << bits;
            let first = usize::try_from(pos.saturating_sub(blk_start) / 12).unwrap_or(usize::MAX);
            let blk_end = blk_start.saturating_add(data.len() as u64);
            for i in first..block.len() {
                let e = block.entry(i, dir.nid)?;
                let next_i = i.saturating_add(1);
                let next = if next_i < block.len() {
                    blk_start.saturating_add((next_i as u64).saturating_mul(12))
                } else {
                    blk_end
                };
                if !f(e, next) {
                    return Ok(());
                }
            }
            pos = blk_end;
        }
        Ok(())
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
        let mut v = self.read_vec(inode, 0, len)?;
        if let Some(nul) = v.iter().position(|&b| b == 0) {
            v.truncate(nul);
        }
        Ok(v)
    }

    fn prefixes(&self) -> Result<&[LongPrefix]> {
        let r = self
            .prefixes
            .get_or_init(|| self.load_prefixes().map_err(|e| e.to_string()));
        match r {
            Ok(v) => Ok(v),
            Err(e) => Err(Error::Earlier(format!("long xattr prefixes: {e}"))),
        }
    }

    fn load_prefixes(&self) -> Result<Vec<LongPrefix>> {
        let count = self.sb.xattr_prefix_count;
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut pos = u64::from(self.sb.xattr_prefix_start) * 4;
        let plain = self.sb.has_compat(ondisk::COMPAT_PLAIN_XATTR_PFX);
        let packed = if !plain
            && self.metabox.is_none()
            && self.sb.has_incompat(ondisk::INCOMPAT_FRAGMENTS)
            && self.sb.packed_nid != 0
        {
            Some(self.inode(self.sb.packed_nid)?)
        } else {
            None
        };
        let in_metabox = !plain && self.metabox.is_some();
        let read = |pos: u64, buf: &mut [u8]| -> Result<()> {
            match &packed {
                Some(p) => {
                    if self.read(p, pos, buf)? != buf.len() {
                        return Err(Error::corrupt(
                            None,
                            "xattr prefixes",
                            "beyond packed inode",
                        ));
                    }
                    Ok(())
                }
                None => self.meta_into("xattr prefix", MetaPos { pos, in_metabox }, buf),
            }
        };
        let mut out = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            pos = pos.next_multiple_of(4);
            let mut l = [0u8; 2];
            read(pos, &mut l)?;
            let len = match u16::from_le_bytes(l) {
                0 => 65536usize,
                n => usize::from(n),
            };
            if len > 256 {
                return Err(Error::corrupt(
                    None,
                    "xattr prefix",
                    format!("length {len}"),
                ));
            }
            let mut body = vec![0u8; len];
            read(pos.saturating_add(2), &mut body)?;
            out.push(LongPrefix::parse(&body)?);
            pos = pos.saturating_add(2).saturating_add(len as u64);
        }
        Ok(out)
    }

    /// Every xattr of `inode`, inline ones first, then shared ones (the
    /// kernel's listxattr order), hidden ones included.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        self.for_each_xattr(inode, |x| {
            out.push(x);
            true
        })?;
        Ok(out)
    }

    fn ibody(&self, inode: &Inode) -> Result<Option<Ibody<'_>>> {
        let isz = inode.xattr_isize;
        if isz == 0 {
            return Ok(None);
        }
        if isz <= 12 || isz > XATTR_IBODY_MAX {
            return Err(Error::corrupt(
                Some(inode.nid),
                "i_xattr_icount",
                format!("inline xattr size {isz}"),
            ));
        }
        let pos = inode
            .loc
            .offset(u64::from(inode.inode_isize))
            .ok_or_else(|| Error::corrupt(Some(inode.nid), "xattr", "position overflows"))?;
        let body = self.meta("inline xattrs", pos, isz as usize)?;
        let hdr = XattrIbodyHeader::read_from_bytes(&body[..12])
            .map_err(|_| Error::corrupt(Some(inode.nid), "xattr header", "decode"))?;
        let shared_count = usize::from(hdr.h_shared_count);
        // shared_count <= 255: no overflow.
        let ids_end = shared_count.saturating_mul(4).saturating_add(12);
        let ids = body.get(12..ids_end).ok_or_else(|| {
            Error::corrupt(
                Some(inode.nid),
                "h_shared_count",
                format!("{shared_count} shared ids do not fit in {isz} bytes"),
            )
        })?;
        let ids = ids
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let filter = hdr.h_name_filter.get();
        Ok(Some((filter, ids, body, ids_end)))
    }

    fn for_each_xattr(&self, inode: &Inode, mut f: impl FnMut(Xattr) -> bool) -> Result<()> {
        let Some((_, ids, body, ids_end)) = self.ibody(inode)? else {
            return Ok(());
        };
        let mut prefixes: Option<&[LongPrefix]> = None;
        let mut resolve = |idx: u8, name: &[u8]| -> Result<Option<(u8, Vec<u8>)>> {
            if idx & 0x80 == 0 {
                return Ok(Some((idx, name.to_vec())));
            }
            let p = match prefixes {
                Some(p) => p,
                None => {
                    let p = self.prefixes()?;
                    prefixes = Some(p);
                    p
                }
            };
            Ok(xattr::resolve_name(idx, name, p))
        };
        let mut rest: &[u8] = body.get(ids_end..).unwrap_or(&[]);
        while !rest.is_empty() {
            let e = rest
                .get(..4)
                .and_then(|b| XattrEntry::read_from_bytes(b).ok())
                .ok_or_else(|| {
                    Error::corrupt(Some(inode.nid), "xattr entry", "truncated header")
                })?;
            let size = xattr::entry_size(e.e_name_len, e.e_value_size.get()) as usize;
            if size > rest.len() {
                return Err(Error::corrupt(
                    Some(inode.nid),
                    "xattr entry",
                    format!("{size}-byte entry beyond the inline area"),
                ));
            }
            // size >= 4 + name + value was checked against rest above.
            let (name, value) = rest[4..size].split_at(usize::from(e.e_name_len));
            let value = &value[..usize::from(e.e_value_size.get())];
            if let Some((index, suffix)) = resolve(e.e_name_index, name)? {
                if !f(Xattr {
                    index,
                    suffix,
                    value: value.to_vec(),
                }) {
                    return Ok(());
                }
            }
            rest = &rest[size..];
        }
        let in_metabox = self.sb.has_compat(ondisk::COMPAT_SHARED_EA_IN_METABOX);
        let base = u64::from(self.sb.xattr_blkaddr) << self.sb.blkszbits;
        for id in ids {
            let pos = MetaPos {
                pos: base.saturating_add(u64::from(id).saturating_mul(4)),
                in_metabox,
            };
            let hb = self.meta("shared xattr", pos, 4)?;
            let body_pos = pos.offset(4).ok_or_else(|| {
                Error::corrupt(Some(inode.nid), "shared xattr", "position overflows")
            })?;
            let e = XattrEntry::read_from_bytes(&hb[..])
                .map_err(|_| Error::corrupt(Some(inode.nid), "shared xattr", "decode"))?;
            let nl = usize::from(e.e_name_len);
            let vl = usize::from(e.e_value_size.get());
            let body = self.meta("shared xattr", body_pos, nl.saturating_add(vl))?;
            if let Some((index, suffix)) = resolve(e.e_name_index, &body[..nl])? {
                if !f(Xattr {
                    index,
                    suffix,
                    value: body[nl..].to_vec(),
                }) {
                    return Ok(());
                }
            }
        }
        Ok(())
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
            .prefixes()?
            .get(usize::from(id))
            .map(|p| (p.base_index, p.infix.clone())))
    }

    /// The value of xattr `name`, or `None` when absent (or hidden).
    pub fn get_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some((index, suffix)) = xattr::split_name(name) else {
            return Ok(None);
        };
        if suffix.len() > ondisk::NAME_LEN {
            return Ok(None);
        }
        let Some((filter, _, _, _)) = self.ibody(inode)? else {
            return Ok(None);
        };
        if self.sb.has_compat(ondisk::COMPAT_XATTR_FILTER)
            && self.sb.xattr_filter_reserved == 0
            && filter & (1u32 << xattr::filter_bit(index, suffix)) != 0
        {
            return Ok(None);
        }
        let mut found = None;
        self.for_each_xattr(inode, |x| {
            if x.index == index && x.suffix == suffix {
                found = Some(x.value);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }
}
