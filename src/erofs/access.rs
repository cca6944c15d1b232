//! The narrow interfaces through which the map, data, directory and xattr
//! code reaches an image.
//!
//! [`super::Image`] implements both traits; the code behind them names
//! only these traits, never `Image`, so it does not depend on `image.rs`
//! (which depends on it). What each trait offers is what that code needs
//! and nothing more: metadata bytes for the maps, plus physical bytes and
//! file content for data, directories and xattrs.

use super::error::At;
use super::inode::{Inode, MetaPos};
use super::metacache::MetaBytes;
use super::superblock::Superblock;
use super::Result;

/// Metadata of an image: what the block maps read.
pub trait MetaRead {
    /// The image's superblock.
    fn superblock(&self) -> &Superblock;

    /// `len` bytes of metadata at `pos`, borrowed or cached where possible.
    fn meta(&self, what: &'static str, pos: MetaPos, len: usize) -> Result<MetaBytes<'_>>;

    /// Metadata at `pos` into `buf` (all of it, or an error).
    fn meta_into(&self, what: &'static str, pos: MetaPos, buf: &mut [u8]) -> Result<()>;
}

/// Inodes, file content and physical bytes of an image: what the data,
/// directory and xattr readers need besides metadata.
pub trait ImageRead: MetaRead {
    /// Reads and decodes inode `nid`.
    fn inode(&self, nid: u64) -> Result<Inode>;

    /// Reads content of `inode` at `offset` into `buf` (any layout);
    /// returns the bytes read, short only at the end of the file.
    fn read(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Reads `buf.len()` physical bytes at `pa` of device `device` (0: the
    /// unified address space), holding data of inode `nid`.
    fn read_physical(&self, nid: u64, device: u16, pa: u64, buf: &mut [u8]) -> Result<()>;

    /// Reads `buf.len()` physical bytes like [`ImageRead::read_physical`],
    /// through the metadata block cache where they lie on the primary
    /// device: for directory blocks, which walks read again and again.
    fn read_physical_cached(&self, nid: u64, device: u16, pa: u64, buf: &mut [u8]) -> Result<()>;

    /// Where byte `offset` of `inode`'s content is stored, for messages:
    /// its physical place, or its pcluster's when compressed. `None` in a
    /// hole or a fragment, or when the map cannot say.
    fn locate(&self, inode: &Inode, offset: u64) -> Option<At>;
}
