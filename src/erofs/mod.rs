//! The EROFS on-disk format: superblock, inodes, directories, xattrs and
//! block maps.
//!
//! This module owns the format's rules and trusts nothing it reads: every
//! number from the image goes through checked arithmetic, every loop driven
//! by on-disk data is bounded, and allocations sized by on-disk fields are
//! capped first. Bytes come from a [`crate::source::Source`]; nothing here
//! touches sockets, FUSE or the host filesystem.
#![forbid(unsafe_code)]
#![deny(clippy::arithmetic_side_effects)]

mod access;
pub mod decompress;
mod devices;
mod dir;
mod dirread;
mod error;
mod image;
mod inode;
mod map;
mod metacache;
pub mod ondisk;
mod plain;
mod superblock;
mod walk;
mod xattr;
mod zcache;
mod zdata;
pub mod zmap;

pub use access::{ImageRead, MetaRead};
pub use devices::{Device, Span};
pub use dir::{DirBlock, DirEntry, FileType};
pub use error::{At, Error, Result};
pub use image::{Image, ImageOptions};
pub use inode::{Inode, InodeKind, MetaPos};
pub use map::{Extent, ExtentKind};
pub use metacache::MetaBytes;
pub use superblock::Superblock;
pub use walk::{walk, WalkEntry, MAX_DEPTH};
pub use xattr::{xattr_full_name, Xattr};
