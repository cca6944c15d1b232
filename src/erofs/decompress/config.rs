//! Algorithms and the per-image decoder configuration: the compression
//! configs that follow the superblock (`COMPR_CFGS`), parsed like the
//! kernel's `z_erofs_parse_cfgs`.

use zerocopy::FromBytes;

use crate::erofs::ondisk::{self, DeflateCfgs, Lz4Cfgs, LzmaCfgs, ZstdCfgs, PCLUSTER_MAX_SIZE};
use crate::erofs::{Error, Result};

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

    /// Corruption error for bad compressed data of this algorithm.
    pub fn corrupt(self, detail: impl Into<String>) -> Error {
        Error::corrupt_unplaced(None, self.name(), detail)
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

fn cfg_err(detail: String) -> Error {
    Error::corrupt_unplaced(None, "compression configs", detail)
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
        let size = match ondisk::le16(records, off).unwrap_or(0) {
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

/// The config struct `T` at the start of `alg`'s record payload `p`.
fn record<T: FromBytes>(alg: Algorithm, p: &[u8]) -> Result<T> {
    T::read_from_prefix(p)
        .map(|(v, _)| v)
        .map_err(|_| too_small(alg, p.len(), std::mem::size_of::<T>()))
}

fn parse_lz4(p: &[u8], blkszbits: u8) -> Result<Lz4Config> {
    let r: Lz4Cfgs = record(Algorithm::Lz4, p)?;
    let max_distance = r.max_distance.get();
    let max_pclusterblks = match r.max_pclusterblks.get() {
        0 => 1, // the kernel's "reserved case"
        n => n,
    };
    let limit = PCLUSTER_MAX_SIZE
        .checked_shr(u32::from(blkszbits))
        .unwrap_or(0);
    if u64::from(max_pclusterblks) > limit {
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
    let r: LzmaCfgs = record(Algorithm::Lzma, p)?;
    let dict_size = r.dict_size.get();
    let format = r.format.get();
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
    let r: DeflateCfgs = record(Algorithm::Deflate, p)?;
    let windowbits = r.windowbits;
    if windowbits > DEFLATE_MAX_WINDOW_BITS {
        return Err(Error::unsupported(
            None,
            format!("deflate window bits {windowbits} (at most {DEFLATE_MAX_WINDOW_BITS})"),
        ));
    }
    Ok(DeflateConfig { windowbits })
}

fn parse_zstd(p: &[u8]) -> Result<ZstdConfig> {
    let r: ZstdCfgs = record(Algorithm::Zstd, p)?;
    if r.format != 0 {
        return Err(cfg_err(format!("unknown zstd format {:#x}", r.format)));
    }
    let max = ZSTD_MAX_WINDOW_LOG.saturating_sub(ZSTD_MIN_WINDOW_LOG);
    if r.windowlog > max {
        return Err(cfg_err(format!(
            "zstd window log {}+{ZSTD_MIN_WINDOW_LOG} exceeds {ZSTD_MAX_WINDOW_LOG}",
            r.windowlog
        )));
    }
    Ok(ZstdConfig {
        window_log: r.windowlog.saturating_add(ZSTD_MIN_WINDOW_LOG),
    })
}
