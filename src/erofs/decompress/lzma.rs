//! MicroLZMA decoding (EROFS's LZMA pclusters), on top of `lzma-rust2`'s
//! raw LZMA1 decoder.
//!
//! MicroLZMA (xz-embedded's `xz_dec_microlzma_*`, made for EROFS) is a raw
//! LZMA1 stream without end marker whose first byte, which the range coder
//! always starts with as 0x00 and otherwise ignores, is replaced by the
//! bitwise NOT of the lc/lp/pb properties byte. The sizes are known from
//! outside and the dictionary size comes from the image's LZMA config.
//! So the conversion is: properties = `!input[0]`, then a raw LZMA1 decode
//! of `[0x00] ++ input[1..]`.
//!
//! Exact decoding mirrors xz-embedded's "pedantic" mode, which the kernel
//! uses whenever it decodes a whole extent: the output is filled exactly,
//! no match runs past its end, the range coder is finished (code 0) and
//! every compressed byte has been consumed. Partial decoding stops once
//! the output is full, even inside a match.

use std::io::Read;

use lzma_rust2::LzmaReader;

use super::{Algorithm, LzmaConfig, Result};
use crate::erofs::Error;

/// The properties byte, then four range-coder init bytes.
const MIN_STREAM: usize = 5;
/// Largest valid properties byte: (pb 4 * 5 + lp 4) * 9 + lc 8.
const MAX_PROPS: u8 = (4 * 5 + 4) * 9 + 8;

fn err(detail: impl Into<String>) -> Error {
    Algorithm::Lzma.corrupt(detail)
}

/// Splits a properties byte into (lc, lp, pb) like xz-embedded's
/// `lzma_props`, which also requires lc + lp <= 4.
fn split_props(props: u8) -> Result<(u32, u32, u32)> {
    if props > MAX_PROPS {
        return Err(err(format!("invalid properties byte {props:#04x}")));
    }
    let pb = u32::from(props / 45);
    let rest = props % 45;
    let lp = u32::from(rest / 9);
    let lc = u32::from(rest % 9);
    if lc.saturating_add(lp) > 4 {
        return Err(err(format!("lc {lc} + lp {lp} exceeds 4")));
    }
    Ok((lc, lp, pb))
}

pub(super) fn decompress(
    cfg: &LzmaConfig,
    input: &[u8],
    output: &mut [u8],
    exact: bool,
) -> Result<()> {
    let out_len = output.len();
    if input.len() < MIN_STREAM {
        return Err(err(format!(
            "{}-byte stream is shorter than its {MIN_STREAM}-byte header",
            input.len()
        )));
    }
    let first = input.first().copied().unwrap_or(0);
    let (lc, lp, pb) = split_props(!first)?;
    // Distances never reach past the output, so a dictionary larger than
    // the output is never needed (the decoder allocates it).
    let out_u32 = u32::try_from(out_len).unwrap_or(u32::MAX);
    let dict_size = cfg.dict_size.min(out_u32.max(super::LZMA_MIN_DICT_SIZE));
    let rest = input.get(1..).unwrap_or(&[]);
    let stream = [0u8].as_slice().chain(rest);
    // Unknown size (u64::MAX) for a partial decode: we just stop reading.
    let size = if exact {
        u64::try_from(out_len).unwrap_or(u64::MAX)
    } else {
        u64::MAX
    };
    let mut reader = LzmaReader::new(stream, size, lc, lp, pb, dict_size, None)
        .map_err(|e| err(format!("cannot start decoder: {e}")))?;
    reader.set_relaxed_end_condition(!exact);
    reader
        .read_exact(output)
        .map_err(|e| err(format!("decoding {out_len} bytes: {e}")))?;
    if exact {
        let (stream, unused) = reader.into_parts();
        let (a, b) = stream.into_inner();
        let left = unused.len().saturating_add(a.len()).saturating_add(b.len());
        if left != 0 {
            return Err(err(format!(
                "{left} of {} compressed bytes left after {out_len} bytes",
                input.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lzma_props_split_matches_lzma_layout() {
        // 0x5d is the usual lc=3 lp=0 pb=2.
        assert_eq!(split_props(0x5d).unwrap(), (3, 0, 2));
        assert_eq!(split_props(0).unwrap(), (0, 0, 0));
        assert_eq!(split_props(4 * 45 + 4 * 9).unwrap(), (0, 4, 4));
    }

    #[test]
    fn test_lzma_props_invalid_rejected() {
        assert!(split_props(MAX_PROPS + 1).is_err());
        assert!(split_props(0xff).is_err());
        // lc 4 + lp 1.
        assert!(split_props(9 + 4).is_err());
        // lc 8 (valid for LZMA1, not for MicroLZMA).
        assert!(split_props(8).is_err());
    }

    #[test]
    fn test_lzma_short_stream_fails() {
        let cfg = LzmaConfig { dict_size: 65536 };
        for n in 0..MIN_STREAM {
            let input = vec![!0x5du8; n];
            let mut out = [0u8; 8];
            assert!(decompress(&cfg, &input, &mut out, true).is_err());
            assert!(decompress(&cfg, &input, &mut out, false).is_err());
        }
    }
}
