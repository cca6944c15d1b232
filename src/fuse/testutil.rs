//! Helpers for tests and fuzzing: small built-in images and request
//! builders (`cfg(test)` or the `test-utils` feature).

use std::sync::Arc;

use zerocopy::IntoBytes;

use super::abi::{self, InHeader, InitIn, OutHeader};
use super::request::IN_HEADER_LEN;
use crate::erofs::{Image, ImageOptions};
use crate::source::MemorySource;

/// A 16 KiB uncompressed image (mkfs.erofs 1.5, see
/// `scripts/make-fuse-testdata.sh`): `/hello` (12 bytes, xattrs
/// `user.test` and `trusted.secret`), `/big` (12300 bytes), `/empty`,
/// `/link -> hello`, `/dir/inner`.
pub const TINY_IMAGE: &[u8] = include_bytes!("testdata/tiny.erofs");

/// The same tree, LZ4-compressed.
pub const TINY_LZ4_IMAGE: &[u8] = include_bytes!("testdata/tiny-lz4.erofs");

/// Opens an in-memory image.
pub fn memory_image(bytes: &[u8]) -> crate::erofs::Result<Arc<Image>> {
    let src = Arc::new(MemorySource::from_vec(bytes.to_vec()));
    Image::open(src, ImageOptions::default()).map(Arc::new)
}

/// A request: header (len filled in) then `args`.
pub fn request(opcode: u32, nodeid: u64, unique: u64, args: &[&[u8]]) -> Vec<u8> {
    let len = args
        .iter()
        .fold(IN_HEADER_LEN, |a, b| a.saturating_add(b.len()));
    let hdr = InHeader {
        len: u32::try_from(len).unwrap_or(u32::MAX),
        opcode,
        unique,
        nodeid,
        ..Default::default()
    };
    let mut v = hdr.as_bytes().to_vec();
    for a in args {
        v.extend_from_slice(a);
    }
    v
}

/// The INIT a 7.45 kernel sends, offering `flags` (bits 32.. in flags2).
pub fn init_request(unique: u64, flags: u64) -> Vec<u8> {
    let init = InitIn {
        major: abi::KERNEL_VERSION,
        minor: abi::KERNEL_MINOR_VERSION,
        max_readahead: 128 << 10,
        flags: (flags as u32) | abi::INIT_EXT as u32,
        flags2: (flags >> 32) as u32,
        unused: [0; 11],
    };
    request(abi::INIT, 0, unique, &[init.as_bytes()])
}

/// Everything a 6.x kernel offers at INIT.
pub const KERNEL_FLAGS: u64 = (1 << 43) - 1;

/// Splits a reply into its header and payload.
pub fn split_reply(reply: &[u8]) -> Option<(OutHeader, &[u8])> {
    use zerocopy::FromBytes;
    let (h, rest) = OutHeader::read_from_prefix(reply).ok()?;
    Some((h, rest))
}
