//! The `manifest` format of the test fixtures: one JSON object per path,
//! sorted by raw path bytes, with what the kernel shows for it.

use sha2::{Digest, Sha256};

use super::json::{backslash_replace, hex, Object};
use crate::erofs::{Image, Inode, InodeKind};

/// The fixture type name of an inode kind.
pub fn type_name(kind: InodeKind) -> &'static str {
    match kind {
        InodeKind::File => "reg",
        InodeKind::Dir => "dir",
        InodeKind::Symlink => "lnk",
        InodeKind::CharDev => "chr",
        InodeKind::BlockDev => "blk",
        InodeKind::Fifo => "fifo",
        InodeKind::Socket => "sock",
    }
}

/// SHA-256 of a file's content, streamed in 1 MiB reads.
pub fn sha256(img: &Image, inode: &Inode) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    // Sized to the file (at most 1 MiB): most files are small, and zeroing
    // a megabyte per file dominated the walk.
    let mut buf = vec![0u8; inode.size.min(1 << 20) as usize];
    let mut off = 0u64;
    while off < inode.size {
        let n = img.read(inode, off, &mut buf)?;
        if n == 0 {
            anyhow::bail!("short read at {off}");
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex(&h.finalize()))
}

/// The visible xattrs of an inode as (name, hex value), sorted by name.
pub fn xattr_pairs(img: &Image, inode: &Inode) -> anyhow::Result<Vec<(String, String)>> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = img
        .xattrs(inode)?
        .into_iter()
        .filter_map(|x| x.full_name().map(|n| (n, x.value)))
        .collect();
    v.sort();
    // listxattr cannot return one name twice; keep the first like getxattr.
    v.dedup_by(|a, b| a.0 == b.0);
    Ok(v.into_iter()
        .map(|(n, val)| (backslash_replace(&n).0, hex(&val)))
        .collect())
}

/// One manifest line for `path`.
pub fn line(img: &Image, path: &[u8], inode: &Inode, max_file_size: u64) -> anyhow::Result<String> {
    let mut o = Object::new();
    let (p, valid) = backslash_replace(path);
    o.str("path", &p);
    if !valid {
        o.str("path_hex", &hex(path));
    }
    o.str("type", type_name(inode.kind))
        .int("mode", inode.mode)
        .int("uid", inode.uid)
        .int("gid", inode.gid)
        .int("nlink", inode.nlink)
        .int("size", inode.size)
        .int("mtime", inode.mtime)
        .int("mtime_nsec", inode.mtime_nsec);
    match inode.kind {
        InodeKind::CharDev | InodeKind::BlockDev => {
            o.int("rdev_major", inode.rdev_major())
                .int("rdev_minor", inode.rdev_minor());
        }
        InodeKind::File => {
            if inode.size > max_file_size {
                anyhow::bail!(
                    "file of {} bytes is larger than --max-file-size {max_file_size}; not hashed",
                    inode.size
                );
            }
            o.str("sha256", &sha256(img, inode)?);
        }
        InodeKind::Symlink => {
            let t = img.readlink(inode)?;
            let (ts, valid) = backslash_replace(&t);
            o.str("target", &ts);
            if !valid {
                o.str("target_hex", &hex(&t));
            }
        }
        _ => {}
    }
    o.map("xattrs", &xattr_pairs(img, inode)?);
    Ok(o.finish())
}
