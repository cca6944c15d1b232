//! The EROFS on-disk format: superblock, inodes, directories, xattrs and
//! block maps.
//!
//! This module owns the format's rules and trusts nothing it reads: every
//! number from the image goes through checked arithmetic, every loop driven
//! by on-disk data is bounded, and allocations sized by on-disk fields are
//! capped first. Bytes come from a [`crate::source::Source`]; nothing here
//! touches sockets, FUSE or the host filesystem.
//!
//! Files by job:
//! - the format, parsed from bytes: `ondisk` (the structs), `superblock`,
//!   `inode`, `dir` (directory blocks), `xattr` (names, entries);
//! - mapping a file's bytes to where they are: `map` (uncompressed),
//!   `zmap` (compressed), both reading their indexes through
//!   [`MetaRead`];
//! - reading: `plain` and `zdata` (file data; `zcache` holds decoded
//!   extents, `decompress` the decoders), `dirread` (lookup, listing) and
//!   the xattr walk in `xattr`, all through [`ImageRead`];
//! - where the bytes are: `devices` (sources, device routing, splice
//!   spans), `metacache` (primary metadata through a block cache);
//! - `image`: an opened [`Image`], what it is made of and the operations a
//!   filesystem calls, each handed to the file above that does it; `walk`
//!   visits every path of one;
//! - `error`: what can go wrong, with the inode and the place ([`At`]).
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
pub use zcache::CacheStats;
