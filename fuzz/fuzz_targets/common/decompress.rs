//! Shared body of the decompressor targets: one pcluster of arbitrary
//! bytes through `Decoder::decompress` for one algorithm.
//!
//! Input layout: byte 0 flags (bit 0: partial decoding, bit 1: the image
//! has zero padding, bits 4-7: output length multiplier - 1), bytes 1-2 the
//! output length unit (little endian; the output is at most 16 x 64 KiB =
//! 1 MiB, the largest lcluster run mkfs writes is 12 MiB but 1 MiB covers
//! every code path), byte 3 the algorithm's setting (LZMA dictionary size,
//! Zstandard window log), the rest the pcluster. Errors are fine; a panic
//! or an unfilled `Ok` output is a bug (the decoder promises to fill it).

use erofs_virtiofsd::erofs::decompress::{
    Algorithm, Configs, Decoder, DeflateConfig, LzmaConfig, ZstdConfig, DEFLATE_MAX_WINDOW_BITS,
    LZMA_MAX_DICT_SIZE, LZMA_MIN_DICT_SIZE, ZSTD_MAX_WINDOW_LOG, ZSTD_MIN_WINDOW_LOG,
};

/// Runs one input against `alg`.
pub fn run(alg: Algorithm, data: &[u8]) {
    let [flags, lo, hi, setting, input @ ..] = data else {
        return;
    };
    let unit = usize::from(u16::from_le_bytes([*lo, *hi]));
    let out_len = unit * (usize::from(flags >> 4) + 1);
    let mut configs = Configs::legacy(0);
    configs.available = alg.bit();
    configs.lz4.max_pclusterblks = 256;
    match alg {
        Algorithm::Lzma => {
            let shift = 12 + u32::from(setting % 12);
            let dict_size = (1u32 << shift).clamp(LZMA_MIN_DICT_SIZE, LZMA_MAX_DICT_SIZE);
            configs.lzma = Some(LzmaConfig { dict_size });
        }
        Algorithm::Deflate => {
            configs.deflate = Some(DeflateConfig {
                windowbits: setting % (DEFLATE_MAX_WINDOW_BITS + 1),
            })
        }
        Algorithm::Zstd => {
            let span = ZSTD_MAX_WINDOW_LOG - ZSTD_MIN_WINDOW_LOG + 1;
            configs.zstd = Some(ZstdConfig {
                window_log: ZSTD_MIN_WINDOW_LOG + setting % span,
            })
        }
        Algorithm::Lz4 => {}
    }
    let decoder = Decoder {
        configs,
        zero_padding: flags & 2 != 0,
        block_size: 4096,
    };
    // A poison pattern: an `Ok` must have overwritten every byte the
    // stream produced; the decoder's contract is a full output, which a
    // second decode into another pattern checks.
    let mut a = vec![0xA5u8; out_len];
    let ra = decoder.decompress(alg, input, &mut a, flags & 1 != 0);
    if ra.is_ok() {
        let mut b = vec![0x5Au8; out_len];
        let rb = decoder.decompress(alg, input, &mut b, flags & 1 != 0);
        assert!(
            rb.is_ok(),
            "{alg:?}: the same input decoded once, failed once"
        );
        assert!(
            a == b,
            "{alg:?}: Ok output not fully written (or not deterministic)"
        );
    }
}
