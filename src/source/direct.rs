//! A file or block device read with `O_DIRECT`: no host page cache, so an
//! image served to guests is not cached twice (once on the host, once in
//! every guest's page cache).
//!
//! Direct I/O wants the file offset, the length and the buffer address
//! aligned to the device's logical block size. Requests that are aligned
//! already go straight into the caller's buffer; the others go through a
//! per-thread aligned bounce buffer covering the enclosing aligned range.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::{clamp_read, Source};

/// Largest bounce read issued at once (longer requests are served in parts;
/// callers loop, see [`super::read_exact_at`]).
const MAX_BOUNCE: usize = 1 << 20;

/// Alignment used when the device does not say (a multiple of every
/// logical block size in use).
const DEFAULT_ALIGN: usize = 4096;

thread_local! {
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Frees the calling thread's bounce buffer (up to [`MAX_BOUNCE`] plus
/// one block); the next unaligned read makes a new one. For threads that
/// read in bursts (the content store's loaders).
pub fn release_bounce_buffer() {
    BOUNCE.with(|b| *b.borrow_mut() = Vec::new());
}

/// An image read with `O_DIRECT`.
#[derive(Debug)]
pub struct DirectFileSource {
    file: File,
    size: u64,
    align: usize,
}

impl DirectFileSource {
    /// Opens `path` read-only with `O_DIRECT`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{} (O_DIRECT): {e}", path.display())))?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory, not an image",
            ));
        }
        let (size, align) = if meta.file_type().is_block_device() {
            let size = (&file).seek(SeekFrom::End(0))?;
            (
                size,
                logical_block_size(meta.rdev()).unwrap_or(DEFAULT_ALIGN),
            )
        } else {
            (
                meta.len(),
                logical_block_size(meta.dev()).unwrap_or(DEFAULT_ALIGN),
            )
        };
        // At least 512 and a power of two, whatever sysfs said.
        let align = align.max(512).next_power_of_two();
        Ok(Self { file, size, align })
    }

    /// The alignment direct reads use.
    pub fn alignment(&self) -> usize {
        self.align
    }

    fn is_aligned(&self, buf: &[u8], offset: u64) -> bool {
        let a = self.align;
        (buf.as_ptr() as usize).is_multiple_of(a)
            && buf.len().is_multiple_of(a)
            && offset.is_multiple_of(a as u64)
    }
}

/// The logical block size of block device `dev` (major:minor), from sysfs;
/// for a partition, the queue of its whole disk.
fn logical_block_size(dev: u64) -> Option<usize> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let base = format!("/sys/dev/block/{major}:{minor}");
    for q in ["queue/logical_block_size", "../queue/logical_block_size"] {
        if let Ok(s) = std::fs::read_to_string(format!("{base}/{q}")) {
            if let Ok(n) = s.trim().parse::<usize>() {
                if n.is_power_of_two() {
                    return Some(n);
                }
            }
        }
    }
    None
}

impl Source for DirectFileSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let buf = clamp_read(buf, offset, self.size);
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len();
        if self.is_aligned(buf, offset) {
            return self.file.read_at(buf, offset);
        }
        let a = self.align as u64;
        let start = offset - offset % a;
        let head = (offset - start) as usize;
        let want = n.min(MAX_BOUNCE);
        let span = (head + want).next_multiple_of(self.align);
        BOUNCE.with(|b| {
            let mut b = b.borrow_mut();
            // An aligned window inside the vector: no allocator alignment
            // needed.
            if b.len() < span + self.align {
                b.resize(span + self.align, 0);
            }
            let skew = b.as_ptr().align_offset(self.align);
            let window = &mut b[skew..skew + span];
            let mut got = 0;
            while got < span {
                match self.file.read_at(&mut window[got..], start + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                if got % self.align != 0 {
                    // A short read off a block boundary: the end of the file.
                    break;
                }
            }
            let avail = got.saturating_sub(head).min(want);
            buf[..avail].copy_from_slice(&window[head..head + avail]);
            Ok(avail)
        })
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn uncached(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn test_unaligned_reads_match_the_file() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..200_003u32).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let src = match DirectFileSource::open(&path) {
            Ok(s) => s,
            // tmpfs and some others refuse O_DIRECT.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(src.size(), data.len() as u64);
        for (off, len) in [
            (0u64, 4096usize),
            (1, 1),
            (4095, 2),
            (12345, 70_000),
            (199_990, 100),
            (0, 200_003),
            (100_000, 2 << 20),
        ] {
            let mut buf = vec![0u8; len];
            let mut done = 0;
            while done < len {
                let k = src.read_at(&mut buf[done..], off + done as u64).unwrap();
                if k == 0 {
                    break;
                }
                done += k;
            }
            let end = (off as usize + len).min(data.len());
            assert_eq!(done, end - off as usize, "({off}, {len})");
            assert!(buf[..done] == data[off as usize..end], "({off}, {len})");
        }
    }
}
