//! Decompression of compressed physical clusters (pclusters): LZ4 (lz4 and
//! lz4hc images), MicroLZMA, raw DEFLATE and Zstandard, with the
//! per-image decoder configuration from the superblock's compression
//! configs (`COMPR_CFGS`).
//!
//! The success and failure rules mirror the Linux kernel's EROFS
//! decompressors (`fs/erofs/decompressor*.c`):
//!
//! - Leading zero padding: LZMA, DEFLATE and Zstandard streams always sit
//!   at the end of their pcluster; LZ4 streams do when the image has the
//!   `ZERO_PADDING` (0PADDING) incompat feature. The zero bytes before the
//!   stream are skipped, looking only within the first block; a first block
//!   of only zeros is corruption (the kernel's `z_erofs_fixup_insize`).
//! - Exact decoding (`partial == false`): the stream must fill the output.
//!   What happens past that point differs per algorithm, as in the kernel;
//!   see [`Decoder::decompress`].
//! - Partial decoding (`partial == true`, a prefix of the extent): decoding
//!   stops as soon as the output is full; the stream must still produce at
//!   least that much.
//!
//! No allocation here is sized by image data beyond a named cap: the LZMA
//! dictionary is at most [`LZMA_MAX_DICT_SIZE`] and the Zstandard window at
//! most `1 << ZSTD_MAX_WINDOW_LOG` bytes; DEFLATE and LZ4 decode straight
//! into the caller's buffer.

mod config;
mod deflate;
mod lz4;
mod lzma;
mod zstd;

pub use config::{
    parse_cfgs, Algorithm, Configs, DeflateConfig, Lz4Config, LzmaConfig, ZstdConfig,
    DEFLATE_MAX_WINDOW_BITS, LZMA_MAX_DICT_SIZE, LZMA_MIN_DICT_SIZE, MAX_CFGS_BYTES,
    ZSTD_MAX_WINDOW_LOG, ZSTD_MIN_WINDOW_LOG,
};

use crate::erofs::{Error, Result};

/// Skips the leading zero padding like the kernel's `z_erofs_fixup_insize`:
/// the stream starts at the first non-zero byte within the first
/// `min(input.len(), block_size)` bytes; none there is corruption.
fn skip_zero_padding(alg: Algorithm, input: &[u8], block_size: usize) -> Result<&[u8]> {
    let window = input.len().min(block_size);
    let head = input.get(..window).unwrap_or(input);
    match head.iter().position(|&b| b != 0) {
        Some(start) => Ok(input.get(start..).unwrap_or(&[])),
        None => Err(alg.corrupt(format!(
            "no compressed data in the first {window} bytes of a {}-byte pcluster",
            input.len()
        ))),
    }
}

/// How an image's pclusters are decoded: its configs and the two layout
/// rules that hold for every pcluster of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    /// The image's configs (algorithms it declares, their settings).
    pub configs: Configs,
    /// The image has `ZERO_PADDING`. It matters only for LZ4; the other
    /// algorithms always skip leading zeros, as in the kernel.
    pub zero_padding: bool,
    /// The image's block size (the padding scan looks at one block).
    pub block_size: usize,
}

impl Decoder {
    /// Decompresses one pcluster.
    ///
    /// - `input`: the whole pcluster as stored. For a tail-packed (inline)
    ///   pcluster pass its bytes; the padding scan covers the first
    ///   `min(input.len(), block_size)` bytes.
    /// - `output`: the decompressed extent, or a prefix of it when
    ///   `partial`; it is filled completely or an error is returned.
    ///
    /// Exactness rules when `partial` is false (mirroring the kernel):
    /// - LZ4 with `zero_padding`: the stream (padding removed) must decode
    ///   to exactly `output.len()` bytes and end exactly at the end of the
    ///   input, with LZ4's end-of-block rules (`LZ4_decompress_safe`).
    ///   Without `zero_padding` legacy pclusters may carry trailing data, so
    ///   LZ4 then always decodes like a partial decode
    ///   (`LZ4_decompress_safe_partial`).
    /// - LZMA: exactly `output.len()` bytes, every compressed byte consumed,
    ///   no match running past the end and a finished range coder (the
    ///   "pedantic" MicroLZMA mode).
    /// - DEFLATE: the final block must end once the output is full; input
    ///   after it is ignored. A stream that is still going when the output
    ///   is full is corruption.
    /// - Zstandard: the frame must fill the output; the kernel stops there
    ///   and does not look at the rest of the frame, and neither do we.
    ///
    /// In every mode a stream that ends before the output is full is
    /// corruption (the kernel leaves stale bytes in part of the last page
    /// in some such cases; we never return unfilled output). An algorithm
    /// the image did not declare in its configs is corruption, as in the
    /// kernel's map code.
    pub fn decompress(
        &self,
        alg: Algorithm,
        input: &[u8],
        output: &mut [u8],
        partial: bool,
    ) -> Result<()> {
        let cfgs = &self.configs;
        if !cfgs.is_available(alg) {
            return Err(Error::corrupt_unplaced(
                None,
                "algorithm",
                format!(
                    "pcluster uses {} but the image declares algorithms {:#x}",
                    alg.name(),
                    cfgs.available
                ),
            ));
        }
        let block_size = self.block_size;
        match alg {
            Algorithm::Lz4 => {
                if self.zero_padding {
                    let stream = skip_zero_padding(alg, input, block_size)?;
                    lz4::decompress(stream, output, !partial)
                } else {
                    lz4::decompress(input, output, false)
                }
            }
            Algorithm::Lzma => {
                let cfg = cfgs.lzma.ok_or_else(|| missing_cfg(alg))?;
                let stream = skip_zero_padding(alg, input, block_size)?;
                lzma::decompress(&cfg, stream, output, !partial)
            }
            Algorithm::Deflate => {
                let stream = skip_zero_padding(alg, input, block_size)?;
                deflate::decompress(stream, output, !partial)
            }
            Algorithm::Zstd => {
                let cfg = cfgs.zstd.ok_or_else(|| missing_cfg(alg))?;
                let stream = skip_zero_padding(alg, input, block_size)?;
                zstd::decompress(&cfg, stream, output)
            }
        }
    }
}

fn missing_cfg(alg: Algorithm) -> Error {
    Error::corrupt_unplaced(
        None,
        "compression configs",
        format!("{} is available but has no config record", alg.name()),
    )
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests;
