//! Reading directories of an image: their blocks, name lookup (binary
//! search over blocks, then inside one, as the kernel's namei does) and
//! listing from an offset.

use super::access::ImageRead;
use super::dir::{bsearch, DirBlock, DirEntry, FileType};
use super::inode::Inode;
use super::ondisk;
use super::plain;
use super::{Error, Result};

/// Checks that `dir` is a directory no larger than `max_size` bytes (a
/// bound from the size of the image: more blocks than that is corruption).
fn check_dir(dir: &Inode, max_size: u64) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::WrongKind {
            nid: dir.nid,
            what: "not a directory",
        });
    }
    if dir.size > max_size {
        return Err(Error::corrupt(
            Some(dir.nid),
            dir.loc,
            "directory size",
            format!("{} bytes is larger than the image could hold", dir.size),
        ));
    }
    Ok(())
}

/// Places an error found in directory block `blk` of `dir`: where the
/// block is stored (its pcluster, for a compressed directory), else the
/// directory's inode.
fn place<I: ImageRead + ?Sized>(img: &I, dir: &Inode, blk: u64, e: Error) -> Error {
    let start = blk.saturating_mul(img.superblock().block_size());
    let at = img.locate(dir, start).unwrap_or(dir.loc.into());
    e.placed(Some(dir.nid), at)
}

/// Reads directory block `blk` of `dir`.
pub(super) fn dir_block<I: ImageRead + ?Sized>(img: &I, dir: &Inode, blk: u64) -> Result<Vec<u8>> {
    let bs = img.superblock().block_size();
    let start = blk
        .checked_mul(bs)
        .filter(|s| *s < dir.size)
        .ok_or_else(|| Error::corrupt(Some(dir.nid), dir.loc, "directory", "block beyond size"))?;
    let len = dir.size.saturating_sub(start).min(bs) as usize;
    let mut v = vec![0u8; len];
    let n = if dir.is_compressed() {
        img.read(dir, start, &mut v)?
    } else {
        plain::read_cached(img, dir, start, &mut v)?;
        len
    };
    if n != len {
        return Err(Error::corrupt(
            Some(dir.nid),
            img.locate(dir, start).unwrap_or(dir.loc.into()),
            "directory",
            "short read",
        ));
    }
    Ok(v)
}

/// Looks `name` up in directory `dir` (at most `max_size` bytes).
pub(super) fn lookup<I: ImageRead + ?Sized>(
    img: &I,
    max_size: u64,
    dir: &Inode,
    name: &[u8],
) -> Result<Option<(u64, FileType)>> {
    check_dir(dir, max_size)?;
    if name.is_empty() || name.len() > ondisk::NAME_LEN {
        return Ok(None);
    }
    let nblocks = usize::try_from(dir.size.div_ceil(img.superblock().block_size()))
        .map_err(|_| Error::corrupt(Some(dir.nid), dir.loc, "directory size", "too many blocks"))?;
    let mut failure = None;
    let mut exact = None;
    let mut candidate: Option<(u64, Vec<u8>)> = None;
    let _ = bsearch(nblocks, |mid| {
        let r = dir_block(img, dir, mid as u64).and_then(|data| {
            let first = DirBlock::parse(&data, dir.nid)
                .and_then(|b| b.entry(0, dir.nid))
                .map_err(|e| place(img, dir, mid as u64, e))?;
            Ok((name.cmp(first.name), (first.nid, first.file_type), data))
        });
        match r {
            Ok((ord, hit, data)) => {
                match ord {
                    std::cmp::Ordering::Greater => candidate = Some((mid as u64, data)),
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
    let Some((blk, data)) = candidate else {
        return Ok(None);
    };
    let found = DirBlock::parse(&data, dir.nid)
        .and_then(|b| b.find(name, dir.nid))
        .map_err(|e| place(img, dir, blk, e))?;
    Ok(found.map(|e| (e.nid, e.file_type)))
}

/// Iterates the entries of `dir` (at most `max_size` bytes) from byte
/// offset `offset` (0 = start; resume with the `next` offset an entry
/// reported). `f` returns false to stop.
pub(super) fn readdir<I: ImageRead + ?Sized>(
    img: &I,
    max_size: u64,
    dir: &Inode,
    offset: u64,
    mut f: impl FnMut(DirEntry<'_>, u64) -> bool,
) -> Result<()> {
    check_dir(dir, max_size)?;
    let bits = img.superblock().blkszbits;
    let mut pos = offset;
    // Each pass moves `pos` to the next block start, so this runs at most
    // size / block size times (bounded by check_dir).
    while pos < dir.size {
        let blk = pos >> bits;
        let data = dir_block(img, dir, blk)?;
        let block = DirBlock::parse(&data, dir.nid).map_err(|e| place(img, dir, blk, e))?;
        let blk_start = blk << bits;
        let first = usize::try_from(pos.saturating_sub(blk_start) / 12).unwrap_or(usize::MAX);
        let blk_end = blk_start.saturating_add(data.len() as u64);
        for i in first..block.len() {
            let e = block
                .entry(i, dir.nid)
                .map_err(|e| place(img, dir, blk, e))?;
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
