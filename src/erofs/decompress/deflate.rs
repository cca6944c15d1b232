//! Raw DEFLATE decoding with zlib-rs (a Rust port of zlib, through
//! `flate2`), straight into the caller's buffer.
//!
//! The kernel inflates with zlib (`-MAX_WBITS`, a 32 KiB window whatever
//! the image's window bits) under `Z_SYNC_FLUSH`, and so do we with the
//! same state machine: a whole-extent decode succeeds when the final block
//! ends with the output exactly full (zlib reads the end-of-block code even
//! with no room left), and fails when the output is full but the stream
//! goes on; a partial decode succeeds as soon as the output is full. Input
//! after the end of the stream is ignored. A stream that ends or runs out
//! of input before the output is full is corruption.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

use super::{Algorithm, Result};
use crate::erofs::Error;

fn err(detail: impl Into<String>) -> Error {
    Algorithm::Deflate.corrupt(detail)
}

thread_local! {
    /// One inflater per thread (zlib keeps a 32 KiB window), reset before
    /// each use.
    static STATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

pub(super) fn decompress(input: &[u8], output: &mut [u8], exact: bool) -> Result<()> {
    STATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let z = slot.get_or_insert_with(|| Decompress::new(false));
            z.reset(false);
            run(z, input, output, exact)
        }
        // Only reachable by re-entrance, which never happens; stay correct.
        Err(_) => run(&mut Decompress::new(false), input, output, exact),
    })
}

fn run(z: &mut Decompress, input: &[u8], output: &mut [u8], exact: bool) -> Result<()> {
    let out_len = output.len();
    if !exact && out_len == 0 {
        return Ok(());
    }
    let status = z
        .decompress(input, output, FlushDecompress::Sync)
        .map_err(|e| {
            err(format!(
                "invalid stream ({e}) at input byte {}, output byte {}",
                z.total_in(),
                z.total_out()
            ))
        })?;
    let written = usize::try_from(z.total_out()).unwrap_or(usize::MAX);
    match status {
        Status::StreamEnd if written == out_len => Ok(()),
        Status::StreamEnd => Err(err(format!(
            "stream ends after {written} bytes, expected {out_len}"
        ))),
        Status::Ok | Status::BufError if written >= out_len => {
            if exact {
                Err(err(format!(
                    "stream continues past the {out_len}-byte output"
                )))
            } else {
                Ok(())
            }
        }
        Status::Ok | Status::BufError => Err(err(format!(
            "stream truncated after {} input bytes with {written} of {out_len} bytes decoded",
            input.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw DEFLATE of "hello hello hello!" (a final fixed-Huffman block).
    fn sample() -> (Vec<u8>, Vec<u8>) {
        let want = b"hello hello hello!".to_vec();
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut out = vec![0u8; 64];
        c.compress(&want, &mut out, flate2::FlushCompress::Finish)
            .unwrap();
        out.truncate(usize::try_from(c.total_out()).unwrap());
        (out, want)
    }

    #[test]
    fn test_deflate_exact_size_decodes() {
        let (c, want) = sample();
        let mut out = vec![0u8; want.len()];
        decompress(&c, &mut out, true).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn test_deflate_trailing_input_ignored() {
        let (mut c, want) = sample();
        c.extend_from_slice(&[0xde, 0xad]);
        let mut out = vec![0u8; want.len()];
        decompress(&c, &mut out, true).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn test_deflate_short_output_exact_fails_partial_ok() {
        let (c, want) = sample();
        let mut out = vec![0u8; want.len() - 1];
        assert!(decompress(&c, &mut out, true).is_err());
        decompress(&c, &mut out, false).unwrap();
        assert_eq!(out, want[..want.len() - 1]);
    }

    #[test]
    fn test_deflate_long_output_fails() {
        let (c, want) = sample();
        let mut out = vec![0u8; want.len() + 1];
        assert!(decompress(&c, &mut out, true).is_err());
        assert!(decompress(&c, &mut out, false).is_err());
    }

    #[test]
    fn test_deflate_state_reset_between_calls() {
        let (c, want) = sample();
        let mut out = vec![0u8; 3];
        // Leave the per-thread inflater mid-stream, then decode again.
        decompress(&c, &mut out, false).unwrap();
        let mut out = vec![0u8; want.len()];
        decompress(&c, &mut out, true).unwrap();
        assert_eq!(out, want);
    }
}
