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
//!   see [`decompress`].
//! - Partial decoding (`partial == true`, a prefix of the extent): decoding
//!   stops as soon as the output is full; the stream must still produce at
//!   least that much.
//!
//! No allocation here is sized by image data beyond a named cap: the LZMA
//! dictionary is at most [`LZMA_MAX_DICT_SIZE`] and the Zstandard window at
//! most `1 << ZSTD_MAX_WINDOW_LOG` bytes; DEFLATE and LZ4 decode straight
//! into the caller's buffer.

mod deflate;
mod lz4;
mod lzma;
mod zstd;

use super::{Error, Result};

/// Largest pcluster the kernel handles (`Z_EROFS_PCLUSTER_MAX_SIZE`).
pub const PCLUSTER_MAX_SIZE: usize = 1 << 20;

/// Largest LZMA dictionary the kernel accepts (`Z_EROFS_LZMA_MAX_DICT_SIZE`).
pub const LZMA_MAX_DICT_SIZE: u32 = 8 << 20;

/// Smallest LZMA dictionary the kernel accepts.
pub const LZMA_MIN_DICT_SIZE: u32 = 4096;

/// Largest DEFLATE window bits the kernel accepts (zlib's `MAX_WBITS`).
pub const DEFLATE_MAX_WINDOW_BITS: u8 = 15;

/// Largest Zstandard window log an image may configure: the kernel's
/// `Z_EROFS_ZSTD_MAX_DICT_SIZE` (= [`PCLUSTER_MAX_SIZE`], 2^20). It is also
/// the window limit given to the decoder, so no frame makes it buffer more.
pub const ZSTD_MAX_WINDOW_LOG: u8 = 20;

/// Smallest Zstandard window log (`ZSTD_WINDOWLOG_ABSOLUTEMIN`); the
/// on-disk config stores the window log minus this.
pub const ZSTD_MIN_WINDOW_LOG: u8 = 10;

/// Most bytes [`parse_cfgs`] can consume: four records of at most 65536
/// payload bytes, each with its 2-byte length and up to 3 bytes of
/// alignment. Read this much (or up to the end of the image) after the
/// superblock and pass it to [`parse_cfgs`].
pub const MAX_CFGS_BYTES: usize = 4 * (3 + 2 + 65536);

/// Algorithm of a pcluster, numbered like the kernel's
/// `Z_EROFS_COMPRESSION_*`: 0 LZ4, 1 LZMA, 2 DEFLATE, 3 ZSTD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// LZ4 raw blocks (also what lz4hc writes).
    Lz4,
    /// MicroLZMA.
    Lzma,
    /// Raw DEFLATE (no zlib header).
    Deflate,
    /// Zstandard frames.
    Zstd,
}

impl Algorithm {
    /// All algorithms, in on-disk number order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Lz4,
        Algorithm::Lzma,
        Algorithm::Deflate,
        Algorithm::Zstd,
    ];

    /// The algorithm with on-disk number `v`, if known.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Algorithm::Lz4),
            1 => Some(Algorithm::Lzma),
            2 => Some(Algorithm::Deflate),
            3 => Some(Algorithm::Zstd),
            _ => None,
        }
    }

    /// The on-disk number.
    pub fn as_u8(self) -> u8 {
        match self {
            Algorithm::Lz4 => 0,
            Algorithm::Lzma => 1,
            Algorithm::Deflate => 2,
            Algorithm::Zstd => 3,
        }
    }

    /// Lower-case name, as the kernel prints it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Lz4 => "lz4",
            Algorithm::Lzma => "lzma",
            Algorithm::Deflate => "deflate",
            Algorithm::Zstd => "zstd",
        }
    }

    /// Bit of this algorithm in the superblock's `available_compr_algs`.
    pub fn bit(self) -> u16 {
        match self {
            Algorithm::Lz4 => 1,
            Algorithm::Lzma => 2,
            Algorithm::Deflate => 4,
            Algorithm::Zstd => 8,
        }
    }
}

/// LZ4 settings (`struct z_erofs_lz4_cfgs`, or the superblock's
/// `lz4_max_distance` without `COMPR_CFGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lz4Config {
    /// Largest match distance the compressor used (0: LZ4's 65535). The
    /// kernel uses it only to plan buffers; matches are not checked against
    /// it.
    pub max_distance: u16,
    /// Largest pcluster in blocks (stored 0 reads as 1, like the kernel).
    pub max_pclusterblks: u16,
}

/// MicroLZMA settings (`struct z_erofs_lzma_cfgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LzmaConfig {
    /// Dictionary size: [`LZMA_MIN_DICT_SIZE`]..=[`LZMA_MAX_DICT_SIZE`].
    /// Match distances beyond it are corruption.
    pub dict_size: u32,
}

/// DEFLATE settings (`struct z_erofs_deflate_cfgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Window bits as stored (0..=15; mkfs writes 15, libdeflate images 0).
    /// The kernel always inflates with a 32 KiB window and so do we.
    pub windowbits: u8,
}

/// Zstandard settings (`struct z_erofs_zstd_cfgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdConfig {
    /// Window log (the stored value plus [`ZSTD_MIN_WINDOW_LOG`]), at most
    /// [`ZSTD_MAX_WINDOW_LOG`].
    pub window_log: u8,
}

/// Per-image decoder configuration.
///
/// [`Configs::default`] is what the kernel assumes for an image without
/// `COMPR_CFGS`: LZ4 only, default distance, one-block pclusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configs {
    /// Bitmap of usable algorithms ([`Algorithm::bit`]).
    pub available: u16,
    /// LZ4 settings (always present; LZ4 needs no config record).
    pub lz4: Lz4Config,
    /// MicroLZMA settings, when LZMA is available.
    pub lzma: Option<LzmaConfig>,
    /// DEFLATE settings, when DEFLATE is available.
    pub deflate: Option<DeflateConfig>,
    /// Zstandard settings, when Zstandard is available.
    pub zstd: Option<ZstdConfig>,
}

impl Default for Configs {
    fn default() -> Self {
        Configs::legacy(0)
    }
}

impl Configs {
    /// The configuration of an image without `COMPR_CFGS`: LZ4 only, with
    /// the superblock's `lz4_max_distance` (its `u1` field).
    pub fn legacy(lz4_max_distance: u16) -> Self {
        Configs {
            available: Algorithm::Lz4.bit(),
            lz4: Lz4Config {
                max_distance: lz4_max_distance,
                max_pclusterblks: 1,
            },
            lzma: None,
            deflate: None,
            zstd: None,
        }
    }

    /// Whether the image declares `alg`.
    pub fn is_available(&self, alg: Algorithm) -> bool {
        self.available & alg.bit() != 0
    }
}

/// Size of each kernel config struct (the least a record may hold).
const LZ4_CFG_SIZE: usize = 14;
const LZMA_CFG_SIZE: usize = 14;
const DEFLATE_CFG_SIZE: usize = 6;
const ZSTD_CFG_SIZE: usize = 6;

fn cfg_err(detail: String) -> Error {
    Error::corrupt(None, "compression configs", detail)
}

fn le16(b: &[u8], at: usize) -> u16 {
    let lo = b.get(at).copied().unwrap_or(0);
    let hi = b.get(at.saturating_add(1)).copied().unwrap_or(0);
    u16::from_le_bytes([lo, hi])
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    for (i, byte) in v.iter_mut().enumerate() {
        *byte = b.get(at.saturating_add(i)).copied().unwrap_or(0);
    }
    u32::from_le_bytes(v)
}

/// Parses the compression configs of an image with `COMPR_CFGS`, like the
/// kernel's `z_erofs_parse_cfgs`.
///
/// `available_algs` is the superblock's `available_compr_algs` (its `u1`
/// field). `records` are the image bytes from the end of the superblock
/// (image offset 1024 + sb_size, always 4-aligned) on, at least up to the
/// last record ([`MAX_CFGS_BYTES`] is always enough). There is one record
/// per set bit, in ascending algorithm order, each at a 4-byte aligned
/// offset: `le16 size` (0 means 65536) then `size` payload bytes.
/// `blkszbits` is the image's log2 block size (for the LZ4
/// `max_pclusterblks` limit).
///
/// Returns the configs and the number of bytes of `records` consumed.
/// Unknown algorithm bits are [`Error::Unsupported`], as are DEFLATE window
/// bits above 15 (the kernel's `-EOPNOTSUPP`); malformed records are
/// corruption.
pub fn parse_cfgs(available_algs: u16, records: &[u8], blkszbits: u8) -> Result<(Configs, usize)> {
    let all: u16 = Algorithm::ALL.iter().fold(0, |acc, a| acc | a.bit());
    let unknown = available_algs & !all;
    if unknown != 0 {
        return Err(Error::unsupported(
            None,
            format!(
                "compression algorithms {unknown:#x} (available_compr_algs {available_algs:#x})"
            ),
        ));
    }
    let mut cfgs = Configs {
        available: available_algs,
        lz4: Lz4Config {
            max_distance: 0,
            max_pclusterblks: 1,
        },
        lzma: None,
        deflate: None,
        zstd: None,
    };
    let mut off = 0usize;
    for alg in Algorithm::ALL {
        if available_algs & alg.bit() == 0 {
            continue;
        }
        // erofs_read_metadata: align to 4, le16 length (0 = 65536), payload.
        off = off
            .checked_next_multiple_of(4)
            .ok_or_else(|| cfg_err("offset overflow".into()))?;
        let len_end = off.saturating_add(2);
        if len_end > records.len() {
            return Err(cfg_err(format!(
                "{} record length at byte {off} is past the {} bytes given",
                alg.name(),
                records.len()
            )));
        }
        let size = match le16(records, off) {
            0 => 65536usize,
            n => usize::from(n),
        };
        let end = len_end.saturating_add(size);
        let payload = records.get(len_end..end).ok_or_else(|| {
            cfg_err(format!(
                "{} record of {size} bytes at byte {len_end} runs past the {} bytes given",
                alg.name(),
                records.len()
            ))
        })?;
        off = end;
        match alg {
            Algorithm::Lz4 => cfgs.lz4 = parse_lz4(payload, blkszbits)?,
            Algorithm::Lzma => cfgs.lzma = Some(parse_lzma(payload)?),
            Algorithm::Deflate => cfgs.deflate = Some(parse_deflate(payload)?),
            Algorithm::Zstd => cfgs.zstd = Some(parse_zstd(payload)?),
        }
    }
    Ok((cfgs, off))
}

fn too_small(alg: Algorithm, size: usize, need: usize) -> Error {
    cfg_err(format!(
        "{} config record has {size} bytes, needs at least {need}",
        alg.name()
    ))
}

fn parse_lz4(p: &[u8], blkszbits: u8) -> Result<Lz4Config> {
    if p.len() < LZ4_CFG_SIZE {
        return Err(too_small(Algorithm::Lz4, p.len(), LZ4_CFG_SIZE));
    }
    let max_distance = le16(p, 0);
    let max_pclusterblks = match le16(p, 2) {
        0 => 1, // the kernel's "reserved case"
        n => n,
    };
    let limit = PCLUSTER_MAX_SIZE
        .checked_shr(u32::from(blkszbits))
        .unwrap_or(0);
    if usize::from(max_pclusterblks) > limit {
        return Err(cfg_err(format!(
            "lz4 max_pclusterblks {max_pclusterblks} exceeds {limit} blocks (1 MiB)"
        )));
    }
    Ok(Lz4Config {
        max_distance,
        max_pclusterblks,
    })
}

fn parse_lzma(p: &[u8]) -> Result<LzmaConfig> {
    if p.len() < LZMA_CFG_SIZE {
        return Err(too_small(Algorithm::Lzma, p.len(), LZMA_CFG_SIZE));
    }
    let dict_size = le32(p, 0);
    let format = le16(p, 4);
    if format != 0 {
        return Err(cfg_err(format!("unknown lzma format {format:#x}")));
    }
    if !(LZMA_MIN_DICT_SIZE..=LZMA_MAX_DICT_SIZE).contains(&dict_size) {
        return Err(cfg_err(format!(
            "lzma dictionary size {dict_size} outside {LZMA_MIN_DICT_SIZE}..={LZMA_MAX_DICT_SIZE}"
        )));
    }
    Ok(LzmaConfig { dict_size })
}

fn parse_deflate(p: &[u8]) -> Result<DeflateConfig> {
    if p.len() < DEFLATE_CFG_SIZE {
        return Err(too_small(Algorithm::Deflate, p.len(), DEFLATE_CFG_SIZE));
    }
    let windowbits = p.first().copied().unwrap_or(0);
    if windowbits > DEFLATE_MAX_WINDOW_BITS {
        return Err(Error::unsupported(
            None,
            format!("deflate window bits {windowbits} (at most {DEFLATE_MAX_WINDOW_BITS})"),
        ));
    }
    Ok(DeflateConfig { windowbits })
}

fn parse_zstd(p: &[u8]) -> Result<ZstdConfig> {
    if p.len() < ZSTD_CFG_SIZE {
        return Err(too_small(Algorithm::Zstd, p.len(), ZSTD_CFG_SIZE));
    }
    let format = p.first().copied().unwrap_or(0);
    if format != 0 {
        return Err(cfg_err(format!("unknown zstd format {format:#x}")));
    }
    let stored = p.get(1).copied().unwrap_or(0);
    let max = ZSTD_MAX_WINDOW_LOG.saturating_sub(ZSTD_MIN_WINDOW_LOG);
    if stored > max {
        return Err(cfg_err(format!(
            "zstd window log {stored}+{ZSTD_MIN_WINDOW_LOG} exceeds {ZSTD_MAX_WINDOW_LOG}"
        )));
    }
    Ok(ZstdConfig {
        window_log: stored.saturating_add(ZSTD_MIN_WINDOW_LOG),
    })
}

/// Corruption error for bad compressed data of `alg`.
fn bad_data(alg: Algorithm, detail: impl Into<String>) -> Error {
    Error::corrupt(None, alg.name(), detail)
}

/// Skips the leading zero padding like the kernel's `z_erofs_fixup_insize`:
/// the stream starts at the first non-zero byte within the first
/// `min(input.len(), block_size)` bytes; none there is corruption.
fn skip_zero_padding(alg: Algorithm, input: &[u8], block_size: usize) -> Result<&[u8]> {
    let window = input.len().min(block_size);
    let head = input.get(..window).unwrap_or(input);
    match head.iter().position(|&b| b != 0) {
        Some(start) => Ok(input.get(start..).unwrap_or(&[])),
        None => Err(bad_data(
            alg,
            format!(
                "no compressed data in the first {window} bytes of a {}-byte pcluster",
                input.len()
            ),
        )),
    }
}

/// Decompresses one pcluster.
///
/// - `input`: the whole pcluster as stored. For a tail-packed (inline)
///   pcluster pass its bytes; the padding scan covers the first
///   `min(input.len(), block_size)` bytes.
/// - `output`: the decompressed extent, or a prefix of it when `partial`;
///   it is filled completely or an error is returned.
/// - `zero_padding`: the image has `ZERO_PADDING`. It matters only for
///   LZ4; the other algorithms always skip leading zeros, as in the kernel.
/// - `block_size`: the image's block size.
///
/// Exactness rules when `partial` is false (mirroring the kernel):
/// - LZ4 with `zero_padding`: the stream (padding removed) must decode to
///   exactly `output.len()` bytes and end exactly at the end of the input,
///   with LZ4's end-of-block rules (`LZ4_decompress_safe`). Without
///   `zero_padding` legacy pclusters may carry trailing data, so LZ4 then
///   always decodes like a partial decode (`LZ4_decompress_safe_partial`).
/// - LZMA: exactly `output.len()` bytes, every compressed byte consumed,
///   no match running past the end and a finished range coder (the
///   "pedantic" MicroLZMA mode).
/// - DEFLATE: the final block must end once the output is full; input after
///   it is ignored. A stream that is still going when the output is full
///   is corruption.
/// - Zstandard: the frame must fill the output; the kernel stops there and
///   does not look at the rest of the frame, and neither do we.
///
/// In every mode a stream that ends before the output is full is
/// corruption (the kernel leaves stale bytes in part of the last page in
/// some such cases; we never return unfilled output). An algorithm the
/// image did not declare in `cfgs` is corruption, as in the kernel's map
/// code.
pub fn decompress(
    alg: Algorithm,
    cfgs: &Configs,
    input: &[u8],
    output: &mut [u8],
    partial: bool,
    zero_padding: bool,
    block_size: usize,
) -> Result<()> {
    if !cfgs.is_available(alg) {
        return Err(Error::corrupt(
            None,
            "algorithm",
            format!(
                "pcluster uses {} but the image declares algorithms {:#x}",
                alg.name(),
                cfgs.available
            ),
        ));
    }
    match alg {
        Algorithm::Lz4 => {
            if zero_padding {
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

fn missing_cfg(alg: Algorithm) -> Error {
    Error::corrupt(
        None,
        "compression configs",
        format!("{} is available but has no config record", alg.name()),
    )
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests;
