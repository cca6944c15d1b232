//! A regular file or a block device (anything `pread` works on) as an
//! image source.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::{clamp_read, Source};

/// An image read with `pread(2)` through the host page cache.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Self::from_file(file)
    }

    /// Wraps an already open file.
    pub fn from_file(file: File) -> io::Result<Self> {
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory, not an image",
            ));
        }
        // A block device's metadata has no length: ask the device (seeking
        // to the end reports its size, as BLKGETSIZE64 would; `pread` does
        // not use the file position).
        let size = if meta.file_type().is_block_device() {
            (&file).seek(SeekFrom::End(0))?
        } else {
            meta.len()
        };
        Ok(Self { size, file })
    }
}

impl Source for FileSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let buf = clamp_read(buf, offset, self.size);
        if buf.is_empty() {
            return Ok(0);
        }
        self.file.read_at(buf, offset)
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn splice_fd(&self) -> Option<(RawFd, u64)> {
        Some((self.file.as_raw_fd(), 0))
    }
}
