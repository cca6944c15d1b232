//! Directory blocks: an array of 12-byte dirents followed by their names,
//! sorted by name so lookups can binary-search.

use zerocopy::FromBytes;

use super::ondisk::{self, Dirent};
use super::{Error, Result};

/// File type stored in a dirent (the kernel's FT_* values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// Unknown.
    Unknown,
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// FIFO.
    Fifo,
    /// Socket.
    Socket,
    /// Symbolic link.
    Symlink,
}

impl FileType {
    fn from_ft(ft: u8) -> Self {
        match ft {
            1 => FileType::File,
            2 => FileType::Dir,
            3 => FileType::CharDev,
            4 => FileType::BlockDev,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }

    /// The `d_type` value (DT_*) for readdir.
    pub fn dtype(self) -> u32 {
        match self {
            FileType::Unknown => 0,
            FileType::Fifo => 1,
            FileType::CharDev => 2,
            FileType::Dir => 4,
            FileType::BlockDev => 6,
            FileType::File => 8,
            FileType::Symlink => 10,
            FileType::Socket => 12,
        }
    }
}

/// One entry of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// Name bytes (no NUL).
    pub name: &'a [u8],
    /// Target nid (the metabox bit included).
    pub nid: u64,
    /// Stored file type.
    pub file_type: FileType,
}

/// A validated directory block. Its errors name the directory but not
/// where the block is (the bytes may come from a compressed directory):
/// the reader places them.
#[derive(Debug)]
pub struct DirBlock<'a> {
    data: &'a [u8],
    count: usize,
}

const DIRENT_SIZE: usize = std::mem::size_of::<Dirent>();

impl<'a> DirBlock<'a> {
    /// Validates a directory block. `data` is the block's bytes that belong to
    /// the directory (shorter than a block for the last one).
    pub fn parse(data: &'a [u8], nid: u64) -> Result<Self> {
        let first = Self::dirent_at(data, 0, nid)?;
        let nameoff0 = usize::from(first.nameoff.get());
        if nameoff0 < DIRENT_SIZE || nameoff0 >= data.len() {
            return Err(Error::corrupt_unplaced(
                Some(nid),
                "dirent[0].nameoff",
                format!("{nameoff0} outside 12..{}", data.len()),
            ));
        }
        Ok(Self {
            data,
            count: nameoff0 / DIRENT_SIZE,
        })
    }

    fn dirent_at(data: &[u8], i: usize, nid: u64) -> Result<Dirent> {
        let off = i.saturating_mul(DIRENT_SIZE);
        let end = off.saturating_add(DIRENT_SIZE);
        let b = data.get(off..end).ok_or_else(|| {
            Error::corrupt_unplaced(
                Some(nid),
                "dirent",
                format!("dirent {i} beyond directory block of {} bytes", data.len()),
            )
        })?;
        Dirent::read_from_bytes(b)
            .map_err(|_| Error::corrupt_unplaced(Some(nid), "dirent", "decode"))
    }

    /// Number of dirents.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the block has no entries (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `i`, validated like the kernel's readdir does.
    pub fn entry(&self, i: usize, nid: u64) -> Result<DirEntry<'a>> {
        let de = Self::dirent_at(self.data, i, nid)?;
        let nameoff = usize::from(de.nameoff.get());
        let end = if i.saturating_add(1) >= self.count {
            // Last name: up to the first NUL or the end of the data.
            let tail = self.data.get(nameoff..).ok_or_else(|| {
                Error::corrupt_unplaced(
                    Some(nid),
                    "dirent.nameoff",
                    format!("entry {i} name offset {nameoff} beyond {}", self.data.len()),
                )
            })?;
            nameoff.saturating_add(tail.iter().position(|&b| b == 0).unwrap_or(tail.len()))
        } else {
            usize::from(
                Self::dirent_at(self.data, i.saturating_add(1), nid)?
                    .nameoff
                    .get(),
            )
        };
        let name = self.data.get(nameoff..end).ok_or_else(|| {
            Error::corrupt_unplaced(
                Some(nid),
                "dirent.nameoff",
                format!(
                    "entry {i} name {nameoff}..{end} outside block of {}",
                    self.data.len()
                ),
            )
        })?;
        if name.is_empty() || name.len() > ondisk::NAME_LEN {
            return Err(Error::corrupt_unplaced(
                Some(nid),
                "dirent name",
                format!("entry {i} has a {}-byte name", name.len()),
            ));
        }
        Ok(DirEntry {
            name,
            nid: de.nid.get(),
            file_type: FileType::from_ft(de.file_type),
        })
    }

    /// Binary search for `name` in this block (names sorted by bytes).
    pub fn find(&self, name: &[u8], nid: u64) -> Result<Option<DirEntry<'a>>> {
        let mut err = None;
        let r = crate::erofs::dir::bsearch(self.count, |i| match self.entry(i, nid) {
            Ok(e) => name.cmp(e.name),
            Err(e) => {
                err = Some(e);
                std::cmp::Ordering::Equal
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        match r {
            Ok(i) => self.entry(i, nid).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// Binary search over `0..n` where `cmp(i)` compares the target with item
/// `i`. `Ok(i)`: found at `i`; `Err(i)`: the last item smaller than the
/// target is `i - 1` (so `i` items are smaller).
pub(crate) fn bsearch(
    n: usize,
    mut cmp: impl FnMut(usize) -> std::cmp::Ordering,
) -> std::result::Result<usize, usize> {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        // lo < hi <= n, so the midpoint and mid + 1 cannot overflow.
        let mid = lo.midpoint(hi);
        match cmp(mid) {
            std::cmp::Ordering::Equal => return Ok(mid),
            std::cmp::Ordering::Greater => lo = mid.saturating_add(1),
            std::cmp::Ordering::Less => hi = mid,
        }
    }
    Err(lo)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// Builds a directory block from (name, nid, ft) entries.
    fn block(entries: &[(&[u8], u64, u8)], size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size];
        let mut nameoff = entries.len() * DIRENT_SIZE;
        for (i, (name, nid, ft)) in entries.iter().enumerate() {
            let d = i * DIRENT_SIZE;
            b[d..d + 8].copy_from_slice(&nid.to_le_bytes());
            b[d + 8..d + 10].copy_from_slice(&(nameoff as u16).to_le_bytes());
            b[d + 10] = *ft;
            b[nameoff..nameoff + name.len()].copy_from_slice(name);
            nameoff += name.len();
        }
        b
    }

    #[test]
    fn test_dirblock_entries_and_find() {
        let data = block(
            &[(b".", 1, 2), (b"..", 1, 2), (b"a", 5, 1), (b"zz", 6, 7)],
            64,
        );
        let blk = DirBlock::parse(&data, 1).unwrap();
        assert_eq!(blk.len(), 4);
        assert_eq!(blk.entry(3, 1).unwrap().name, b"zz");
        assert_eq!(blk.find(b"a", 1).unwrap().unwrap().nid, 5);
        assert_eq!(
            blk.find(b"zz", 1).unwrap().unwrap().file_type,
            FileType::Symlink
        );
        assert!(blk.find(b"b", 1).unwrap().is_none());
    }

    #[test]
    fn test_dirblock_last_name_stops_at_block_end() {
        let data = block(&[(b".", 1, 2), (b"abc", 2, 1)], 24 + 4);
        let blk = DirBlock::parse(&data, 1).unwrap();
        assert_eq!(blk.entry(1, 1).unwrap().name, b"abc");
    }

    #[test]
    fn test_dirblock_rejects_table() {
        let good = block(&[(b".", 1, 2), (b"..", 1, 2)], 64);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "nameoff0 zero",
                {
                    let mut b = good.clone();
                    b[8] = 0;
                    b
                },
                "nameoff",
            ),
            (
                "nameoff0 past end",
                {
                    let mut b = good.clone();
                    b[8] = 200;
                    b
                },
                "nameoff",
            ),
            (
                "names go backwards",
                {
                    let mut b = good.clone();
                    b[20] = 2;
                    b
                },
                "name",
            ),
            ("too short", vec![0u8; 5], "dirent"),
        ];
        for (name, data, want) in cases {
            let r = DirBlock::parse(&data, 1).and_then(|b| {
                for i in 0..b.len() {
                    b.entry(i, 1)?;
                }
                Ok(())
            });
            let err = r.unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
