//! Inode decoding (compact and extended on-disk forms).

use zerocopy::FromBytes;

use super::error::At;
use super::ondisk::{self, InodeCompact, InodeExtended};
use super::superblock::Superblock;
use super::{Error, Result};

/// Where a piece of metadata lives: in the primary device's address space
/// or inside the metabox inode's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaPos {
    /// Byte position.
    pub pos: u64,
    /// Whether `pos` is inside the metabox inode.
    pub in_metabox: bool,
}

impl MetaPos {
    /// Position `n` bytes further on.
    pub fn offset(self, n: u64) -> Option<MetaPos> {
        Some(MetaPos {
            pos: self.pos.checked_add(n)?,
            in_metabox: self.in_metabox,
        })
    }
}

impl From<MetaPos> for At {
    fn from(p: MetaPos) -> Self {
        if p.in_metabox {
            At::Metabox(p.pos)
        } else {
            At::Image(p.pos)
        }
    }
}

/// The file type of an inode, from its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// FIFO.
    Fifo,
    /// Socket.
    Socket,
}

/// A decoded inode.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Node id.
    pub nid: u64,
    /// Where the on-disk inode starts.
    pub loc: MetaPos,
    /// Whether the on-disk form is the 64-byte extended one.
    pub extended: bool,
    /// Full st_mode.
    pub mode: u32,
    /// Kind from the mode.
    pub kind: InodeKind,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Data layout (`ondisk::LAYOUT_*`).
    pub layout: u8,
    /// Start block of flat data; `None` for a flat file that is one hole.
    pub startblk: Option<u64>,
    /// Raw i_u field (rdev, chunk format, compressed block count).
    pub i_u: u32,
    /// Device number (char/block devices), in the kernel's new encoding.
    pub rdev: u32,
    /// Size of the on-disk inode (32 or 64).
    pub inode_isize: u32,
    /// Size of the inline xattr area.
    pub xattr_isize: u32,
    /// 32-bit inode number stored on disk.
    pub ino32: u32,
    /// Directory: the `.` entry is omitted on disk.
    pub dot_omitted: bool,
    /// Compressed inodes: total compressed blocks (i_u, plus i_nb high bits).
    pub compressed_blocks: u64,
}

/// A 2^48 block address mask, the widest any layout stores.
const ADDR_MASK_48: u64 = (1 << 48) - 1;

impl Inode {
    /// Decodes the inode whose on-disk bytes start `raw` (at least 32 bytes;
    /// 64 when the format says extended — the caller re-reads if short).
    pub fn parse(sb: &Superblock, nid: u64, loc: MetaPos, raw: &[u8]) -> Result<Self> {
        let short = |need: usize| {
            Error::corrupt(
                Some(nid),
                loc,
                "inode",
                format!("needs {need} bytes, only {} readable", raw.len()),
            )
        };
        let ifmt = ondisk::le16(raw, 0).ok_or_else(|| short(2))?;
        if ifmt & !ondisk::I_ALL != 0 {
            return Err(Error::unsupported(
                Some(nid),
                format!("i_format {ifmt:#x} has unknown bits"),
            ));
        }
        let layout = ((ifmt >> ondisk::I_DATALAYOUT_BIT) & 0x7) as u8;
        if layout > ondisk::LAYOUT_CHUNK_BASED {
            return Err(Error::unsupported(
                Some(nid),
                format!("data layout {layout}"),
            ));
        }
        let bit4 = (ifmt >> ondisk::I_NLINK_1_OR_DOT_OMITTED_BIT) & 1 == 1;
        let extended = ifmt & ondisk::I_VERSION_MASK != 0;
        let (mode, uid, gid, nlink, size, mtime, mtime_nsec, i_u, nb, icount, ino32, addrmask);
        if extended {
            let b = raw.get(..64).ok_or_else(|| short(64))?;
            let d = InodeExtended::read_from_bytes(b)
                .map_err(|_| Error::corrupt(Some(nid), loc, "inode", "decode"))?;
            mode = d.i_mode.get();
            uid = d.i_uid.get();
            gid = d.i_gid.get();
            nlink = d.i_nlink.get();
            size = d.i_size.get();
            mtime = d.i_mtime.get() as i64;
            mtime_nsec = d.i_mtime_nsec.get();
            i_u = d.i_u.get();
            nb = d.i_nb.get();
            icount = d.i_xattr_icount.get();
            ino32 = d.i_ino.get();
            addrmask = ADDR_MASK_48;
        } else {
            let b = raw.get(..32).ok_or_else(|| short(32))?;
            let d = InodeCompact::read_from_bytes(b)
                .map_err(|_| Error::corrupt(Some(nid), loc, "inode", "decode"))?;
            mode = d.i_mode.get();
            uid = u32::from(d.i_uid.get());
            gid = u32::from(d.i_gid.get());
            let is_dir = u32::from(mode) & libc::S_IFMT == libc::S_IFDIR;
            if !is_dir && bit4 {
                nlink = 1;
                nb = d.i_nb.get();
                addrmask = ADDR_MASK_48;
            } else {
                nlink = u32::from(d.i_nb.get());
                nb = 0;
                addrmask = u64::from(u32::MAX);
            }
            size = u64::from(d.i_size.get());
            mtime = sb.epoch.wrapping_add(i64::from(d.i_mtime.get()));
            mtime_nsec = sb.fixed_nsec;
            i_u = d.i_u.get();
            icount = d.i_xattr_icount.get();
            ino32 = d.i_ino.get();
        }
        if size > i64::MAX as u64 {
            return Err(Error::corrupt(
                Some(nid),
                loc,
                "i_size",
                format!("negative size {size}"),
            ));
        }
        let kind = match u32::from(mode) & libc::S_IFMT {
            libc::S_IFREG => InodeKind::File,
            libc::S_IFDIR => InodeKind::Dir,
            libc::S_IFLNK => InodeKind::Symlink,
            libc::S_IFCHR => InodeKind::CharDev,
            libc::S_IFBLK => InodeKind::BlockDev,
            libc::S_IFIFO => InodeKind::Fifo,
            libc::S_IFSOCK => InodeKind::Socket,
            _ => {
                return Err(Error::corrupt(
                    Some(nid),
                    loc,
                    "i_mode",
                    format!("bogus file type in mode {mode:o}"),
                ))
            }
        };
        let xattr_isize = if icount == 0 {
            0
        } else {
            // 12-byte header + (icount - 1) 4-byte slots; at most ~256 KiB.
            // icount <= 65535: at most 262148 bytes.
            u32::from(icount)
                .saturating_sub(1)
                .saturating_mul(4)
                .saturating_add(12)
        };
        let has_data = matches!(kind, InodeKind::File | InodeKind::Dir | InodeKind::Symlink);
        let mut startblk = None;
        let mut rdev = 0;
        if has_data {
            let blk = u64::from(i_u) | (u64::from(nb) << 32);
            let is_null = (blk ^ u64::MAX) & addrmask == 0;
            if !(layout == ondisk::LAYOUT_FLAT_PLAIN && is_null) {
                startblk = Some(blk);
            }
        } else if matches!(kind, InodeKind::CharDev | InodeKind::BlockDev) {
            rdev = i_u;
        }
        let compressed =
            layout == ondisk::LAYOUT_COMPRESSED_FULL || layout == ondisk::LAYOUT_COMPRESSED_COMPACT;
        let compressed_blocks = if compressed {
            u64::from(i_u) | (u64::from(nb) << 32)
        } else {
            0
        };
        if layout == ondisk::LAYOUT_CHUNK_BASED {
            let format = (i_u & 0xffff) as u16;
            if format & !ondisk::CHUNK_FORMAT_ALL != 0 {
                return Err(Error::unsupported(
                    Some(nid),
                    format!("chunk format {format:#x}"),
                ));
            }
        }
        Ok(Inode {
            nid,
            loc,
            extended,
            mode: u32::from(mode),
            kind,
            uid,
            gid,
            nlink,
            size,
            mtime,
            mtime_nsec,
            layout,
            startblk,
            i_u,
            rdev,
            inode_isize: if extended { 64 } else { 32 },
            xattr_isize,
            ino32,
            dot_omitted: kind == InodeKind::Dir && bit4,
            compressed_blocks,
        })
    }

    /// Whether the data is compressed.
    pub fn is_compressed(&self) -> bool {
        self.layout == ondisk::LAYOUT_COMPRESSED_FULL
            || self.layout == ondisk::LAYOUT_COMPRESSED_COMPACT
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == InodeKind::Dir
    }

    /// Chunk format bits (chunk-based layout only).
    pub fn chunk_format(&self) -> u16 {
        (self.i_u & 0xffff) as u16
    }

    /// Position right after the inode and its inline xattrs.
    pub fn data_pos(&self) -> Option<MetaPos> {
        self.loc
            .offset(u64::from(self.inode_isize))?
            .offset(u64::from(self.xattr_isize))
    }

    /// Major device number.
    pub fn rdev_major(&self) -> u32 {
        (self.rdev & 0xfff00) >> 8
    }

    /// Minor device number.
    pub fn rdev_minor(&self) -> u32 {
        (self.rdev & 0xff) | ((self.rdev >> 12) & 0xfff00)
    }

    /// The `st_blocks` value the kernel reports (512-byte units).
    pub fn blocks_512(&self, blkszbits: u8) -> u64 {
        let shift = u32::from(blkszbits).saturating_sub(9);
        if self.is_compressed() {
            self.compressed_blocks
                .checked_shl(shift)
                .unwrap_or(u64::MAX)
        } else {
            let bs = 1u64 << blkszbits;
            self.size.div_ceil(bs).saturating_mul(bs) >> 9
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        let mut h = vec![0u8; 4096];
        h[1024..1028].copy_from_slice(&ondisk::SUPER_MAGIC.to_le_bytes());
        h[1036] = 12;
        h[1024 + 24..1024 + 32].copy_from_slice(&1_000i64.to_le_bytes());
        Superblock::parse(&h).unwrap()
    }

    fn compact(ifmt: u16, mode: u16, nb: u16, size: u32, iu: u32) -> Vec<u8> {
        let mut b = vec![0u8; 32];
        b[0..2].copy_from_slice(&ifmt.to_le_bytes());
        b[4..6].copy_from_slice(&mode.to_le_bytes());
        b[6..8].copy_from_slice(&nb.to_le_bytes());
        b[8..12].copy_from_slice(&size.to_le_bytes());
        b[12..16].copy_from_slice(&7u32.to_le_bytes());
        b[16..20].copy_from_slice(&iu.to_le_bytes());
        b
    }

    const LOC: MetaPos = MetaPos {
        pos: 0,
        in_metabox: false,
    };

    #[test]
    fn test_inode_compact_file_decodes() {
        let ino = Inode::parse(&sb(), 1, LOC, &compact(0, 0o100644, 3, 10, 5)).unwrap();
        assert_eq!(ino.kind, InodeKind::File);
        assert_eq!(ino.nlink, 3);
        assert_eq!(ino.mtime, 1007);
        assert_eq!(ino.startblk, Some(5));
    }

    #[test]
    fn test_inode_nlink1_bit_repurposes_nb() {
        let ino = Inode::parse(&sb(), 1, LOC, &compact(0x10, 0o100644, 2, 10, 5)).unwrap();
        assert_eq!(ino.nlink, 1);
        assert_eq!(ino.startblk, Some(5 | (2 << 32)));
    }

    #[test]
    fn test_inode_flat_plain_null_is_hole() {
        let ino = Inode::parse(&sb(), 1, LOC, &compact(0, 0o100644, 1, 10, u32::MAX)).unwrap();
        assert_eq!(ino.startblk, None);
    }

    #[test]
    fn test_inode_rejects_table() {
        let cases: &[(&str, Vec<u8>, &str)] = &[
            (
                "unknown format bits",
                compact(0x40, 0o100644, 1, 0, 0),
                "i_format",
            ),
            (
                "layout 5",
                compact(5 << 1, 0o100644, 1, 0, 0),
                "data layout",
            ),
            ("bogus mode", compact(0, 0o070000, 1, 0, 0), "i_mode"),
            ("short", vec![0u8; 10], "needs 32"),
            ("extended short", compact(1, 0o100644, 1, 0, 0), "needs 64"),
            (
                "chunk format",
                compact(4 << 1, 0o100644, 1, 0, 0x80),
                "chunk format",
            ),
        ];
        for (name, raw, want) in cases {
            let err = Inode::parse(&sb(), 9, LOC, raw).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn test_inode_rdev_decodes_like_kernel() {
        let mut ino = Inode::parse(&sb(), 1, LOC, &compact(0, 0o020644, 1, 0, 0)).unwrap();
        // new_encode_dev(4095, 1048575)
        let (ma, mi) = (4095u32, 1_048_575u32);
        ino.rdev = (mi & 0xff) | (ma << 8) | ((mi & !0xff) << 12);
        assert_eq!((ino.rdev_major(), ino.rdev_minor()), (ma, mi));
    }
}
