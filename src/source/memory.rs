//! An image held in memory: an owned buffer or any byte region.

use std::fmt;
use std::io;

use super::Source;

/// A memory region as an image source. The image may start at any byte
/// offset of the region (no alignment is assumed).
pub struct MemorySource {
    bytes: Box<dyn AsRef<[u8]> + Send + Sync>,
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySource")
            .field("len", &self.bytes().len())
            .finish()
    }
}

impl MemorySource {
    /// Wraps an owned buffer.
    pub fn from_vec(v: Vec<u8>) -> Self {
        Self { bytes: Box::new(v) }
    }

    /// Wraps any owner of bytes (a mapping, a shared buffer).
    pub fn new(bytes: Box<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        Self { bytes }
    }

    fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }
}

impl Source for MemorySource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let b = self.bytes();
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= b.len() {
            return Ok(0);
        }
        let n = buf.len().min(b.len() - start);
        buf[..n].copy_from_slice(&b[start..start + n]);
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.bytes().len() as u64
    }

    fn slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.bytes().get(start..start.checked_add(len)?)
    }
}
