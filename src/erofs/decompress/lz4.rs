//! LZ4 raw block decoding (what both lz4 and lz4hc images store).
//!
//! Our own small decoder, because the kernel needs two behaviours that
//! `lz4_flex` does not offer: stopping once the output is full (the
//! kernel's `LZ4_decompress_safe_partial`, used for partial decoding and
//! for images without zero padding) and LZ4's strict end-of-block rules
//! (`LZ4_decompress_safe`, used for full decoding with zero padding).
//! It is safe Rust and decodes straight into the caller's buffer.

use super::{Algorithm, Result};
use crate::erofs::Error;

/// Shortest match.
const MIN_MATCH: usize = 4;
/// The last bytes of a block are always literals.
const LAST_LITERALS: usize = 5;
/// A match never starts within this many bytes of the end of a block.
const MF_LIMIT: usize = 12;
/// Input bytes that must follow a literal run that is not the last one:
/// 2 (offset) + 1 (token) + `LAST_LITERALS`.
const INPUT_MARGIN: usize = 2 + 1 + LAST_LITERALS;

fn err(detail: impl Into<String>) -> Error {
    Algorithm::Lz4.corrupt(detail)
}

/// Reads the extra length bytes after a 15 in a token nibble.
#[inline]
fn read_len(input: &[u8], ip: &mut usize, mut len: usize) -> Result<usize> {
    loop {
        let b = *input
            .get(*ip)
            .ok_or_else(|| err("input ends inside a length"))?;
        *ip = ip.saturating_add(1);
        len = len.saturating_add(usize::from(b));
        if b != 255 {
            return Ok(len);
        }
    }
}

/// Bytes a "wild" copy moves at once: short literal runs and matches are
/// copied 16 bytes at a time (inlined moves instead of a memmove call) when
/// the buffers have that much room past the run. The bytes written past
/// the run's end are overwritten by the runs that follow, since every
/// output position is written in order.
const WILD: usize = 16;

/// Copies `len` bytes from `src` to `op` in `N`-byte chunks, the last one
/// running past `op + len`. Each chunk reads bytes already final when
/// `op - src >= N`; the caller has checked that and that `out` has `N`
/// bytes of room past `op + len`.
#[inline(always)]
fn copy_chunks<const N: usize>(out: &mut [u8], src: usize, op: usize, len: usize) {
    let mut done = 0usize;
    while done < len {
        let (s, d) = (src.wrapping_add(done), op.wrapping_add(done));
        out.copy_within(s..s.wrapping_add(N), d);
        done = done.wrapping_add(N);
    }
}

/// Copies a match of `len` bytes from `offset` bytes back to `op`.
/// The caller has checked `0 < offset <= op` and `op + len <= out.len()`.
#[inline(always)]
fn copy_match(out: &mut [u8], op: usize, offset: usize, len: usize) {
    let src = op.wrapping_sub(offset);
    let room = op.saturating_add(len).saturating_add(WILD) <= out.len();
    if offset >= WILD && room {
        copy_chunks::<WILD>(out, src, op, len);
        return;
    }
    if offset >= 8 && room {
        // No memmove call for the short, near matches of text either.
        copy_chunks::<8>(out, src, op, len);
        return;
    }
    if offset >= len {
        out.copy_within(src..src.wrapping_add(len), op);
    } else if offset == 1 {
        let b = out.get(src).copied().unwrap_or(0);
        if let Some(dst) = out.get_mut(op..op.wrapping_add(len)) {
            dst.fill(b);
        }
    } else {
        // Overlapping: the region from `src` is periodic with period
        // `offset`, so copying everything written so far keeps the period;
        // each step doubles what is available.
        let mut done = 0usize;
        while done < len {
            let n = offset.wrapping_add(done).min(len.wrapping_sub(done));
            out.copy_within(src..src.wrapping_add(n), op.wrapping_add(done));
            done = done.wrapping_add(n);
        }
    }
}

/// Copies `n` literal bytes.
#[inline(always)]
fn copy_literals(input: &[u8], ip: usize, out: &mut [u8], op: usize, n: usize) -> Result<()> {
    if n <= WILD {
        let src = input.get(ip..ip.saturating_add(WILD));
        let dst = out.get_mut(op..op.saturating_add(WILD));
        if let (Some(src), Some(dst)) = (src, dst) {
            dst.copy_from_slice(src);
            return Ok(());
        }
    }
    let src = input
        .get(ip..ip.saturating_add(n))
        .ok_or_else(|| err("literals past the end of the input"))?;
    let dst = out
        .get_mut(op..op.saturating_add(n))
        .ok_or_else(|| err("literals past the end of the output"))?;
    dst.copy_from_slice(src);
    Ok(())
}

/// Input bytes the fast path needs from a sequence's token on: the token,
/// a 16-byte literal copy and the match offset fit, and a literal run of
/// at most 14 bytes then ends more than `INPUT_MARGIN` bytes before the
/// end of the input.
const FAST_IN: usize = 32;

/// Output room the fast path needs from a sequence's start: at most 14
/// literals (16 bytes written) then a match of at most 18 (at most 24
/// bytes written by [`copy_match`]'s 8-byte steps), which then ends more
/// than `MF_LIMIT` bytes before the end of the output.
const FAST_OUT: usize = 48;

/// Decodes one sequence of the most common shape, a literal run of at most
/// 14 bytes and a match of at most 18 (neither with extra length bytes),
/// far from both ends of the block, with fixed-size copies and no rule
/// checks: the distances from the ends make every end-of-block rule hold.
/// Returns the input and output positions after it, or `None` (nothing
/// decided) when the sequence is of another shape, too near an end, or
/// invalid: the general loop then decodes it, and reports any error.
#[inline(always)]
fn fast_sequence(input: &[u8], ip: usize, out: &mut [u8], op: usize) -> Option<(usize, usize)> {
    let window: &[u8; FAST_IN] = input.get(ip..ip.checked_add(FAST_IN)?)?.try_into().ok()?;
    if out.len().checked_sub(op)? < FAST_OUT {
        return None;
    }
    let [token, ..] = *window;
    let lit = usize::from(token >> 4);
    let code = usize::from(token & 15);
    if lit == 15 || code == 15 {
        return None;
    }
    // Literals: 16 bytes, the ones past the run overwritten by the match.
    let src: &[u8; 16] = window.get(1..17)?.try_into().ok()?;
    out.get_mut(op..op.wrapping_add(16))?.copy_from_slice(src);
    let op = op.wrapping_add(lit);
    let at = lit.wrapping_add(1);
    let offset = match window.get(at..at.wrapping_add(2))? {
        &[lo, hi] => usize::from(u16::from_le_bytes([lo, hi])),
        _ => return None,
    };
    if offset == 0 || offset > op {
        return None;
    }
    let len = code.wrapping_add(MIN_MATCH);
    let src = op.wrapping_sub(offset);
    if offset >= 18 {
        // Every byte read is final: the 18 bytes end at or before `op`.
        out.copy_within(src..src.wrapping_add(18), op);
    } else {
        copy_match(out, op, offset, len);
    }
    Some((ip.wrapping_add(at).wrapping_add(2), op.wrapping_add(len)))
}

/// Decodes the LZ4 block `input` into `output`.
///
/// `exact`: `LZ4_decompress_safe` rules — the block must end exactly at the
/// end of `input` having produced exactly `output.len()` bytes, its last
/// `LAST_LITERALS` bytes are literals and no literal run ends within
/// `MF_LIMIT` bytes of the output end unless it is the last sequence.
/// Otherwise `LZ4_decompress_safe_partial` rules: decoding stops as soon
/// as the output is full (even inside a match or literal run) and anything
/// after that is ignored.
///
/// Either way, a block that cannot fill `output` is an error.
pub(super) fn decompress(input: &[u8], output: &mut [u8], exact: bool) -> Result<()> {
    // One loop per rule set: the hot loop then tests no flag.
    if exact {
        decode::<true, true>(input, output)
    } else {
        decode::<false, true>(input, output)
    }
}

/// The decoder; `FAST`: common sequences take [`fast_sequence`] (off only
/// in tests, which check that both ways decide every block alike).
fn decode<const EXACT: bool, const FAST: bool>(input: &[u8], output: &mut [u8]) -> Result<()> {
    let exact = EXACT;
    let in_len = input.len();
    let out_len = output.len();
    let (mut ip, mut op) = (0usize, 0usize);
    if exact && out_len == 0 {
        // LZ4_decompress_safe with no room: only an empty block fits.
        return if input == [0] {
            Ok(())
        } else {
            Err(err("non-empty block for an empty output"))
        };
    }
    loop {
        while let Some((i, o)) = FAST.then(|| fast_sequence(input, ip, output, op)).flatten() {
            (ip, op) = (i, o);
        }
        if !exact && op >= out_len {
            return Ok(());
        }
        let token = *input.get(ip).ok_or_else(|| {
            err(format!(
                "input ends after {in_len} bytes with {op} of {out_len} bytes decoded"
            ))
        })?;
        ip = ip.saturating_add(1);

        // Literals.
        let mut lit = usize::from(token >> 4);
        if lit == 15 {
            lit = read_len(input, &mut ip, lit)?;
        }
        let lit_in_end = ip.saturating_add(lit);
        let lit_out_end = op.saturating_add(lit);
        if exact {
            let near_out_end = lit_out_end > out_len.saturating_sub(MF_LIMIT) || out_len < MF_LIMIT;
            let near_in_end =
                lit_in_end > in_len.saturating_sub(INPUT_MARGIN) || in_len < INPUT_MARGIN;
            if near_out_end || near_in_end {
                // Must be the last sequence: it ends the input exactly and
                // fills the output exactly.
                if lit_in_end != in_len || lit_out_end > out_len {
                    return Err(err(format!(
                        "last literal run ({lit} bytes at input {ip}, output {op}) does not end \
                         the {in_len}-byte block"
                    )));
                }
                copy_literals(input, ip, output, op, lit)?;
                if lit_out_end != out_len {
                    return Err(err(format!(
                        "block decodes to {lit_out_end} bytes, expected {out_len}"
                    )));
                }
                return Ok(());
            }
            copy_literals(input, ip, output, op, lit)?;
            ip = lit_in_end;
            op = lit_out_end;
        } else {
            let n = lit
                .min(in_len.saturating_sub(ip))
                .min(out_len.saturating_sub(op));
            copy_literals(input, ip, output, op, n)?;
            ip = ip.saturating_add(n);
            op = op.saturating_add(n);
            if op >= out_len {
                return Ok(());
            }
            if n < lit {
                return Err(err(format!(
                    "input ends inside literals with {op} of {out_len} bytes decoded"
                )));
            }
        }

        // Match.
        let offset = match input.get(ip..ip.saturating_add(2)) {
            Some(&[lo, hi]) => usize::from(u16::from_le_bytes([lo, hi])),
            _ => {
                return Err(err(format!(
                    "input ends before a match offset with {op} of {out_len} bytes decoded"
                )))
            }
        };
        ip = ip.saturating_add(2);
        if offset == 0 || offset > op {
            return Err(err(format!(
                "match offset {offset} at output {op} points outside the output"
            )));
        }
        let mut len = usize::from(token & 15);
        if len == 15 {
            len = read_len(input, &mut ip, len)?;
        }
        len = len.saturating_add(MIN_MATCH);
        let end = op.saturating_add(len);
        if exact {
            if end > out_len.saturating_sub(LAST_LITERALS) || out_len < LAST_LITERALS {
                return Err(err(format!(
                    "match of {len} bytes at output {op} runs into the last {LAST_LITERALS} \
                     bytes of a {out_len}-byte block"
                )));
            }
        } else if end > out_len {
            len = out_len.saturating_sub(op);
        }
        copy_match(output, op, offset, len);
        op = op.saturating_add(len);
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// Hand-made block: literals "abcd", match offset 4 len 8, literals
    /// "efghi" (5 final literals) -> "abcdabcdabcdefghi".
    fn sample() -> (Vec<u8>, Vec<u8>) {
        let block = vec![
            0x44, b'a', b'b', b'c', b'd', 4, 0, // 4 literals, match len 4+4
            0x50, b'e', b'f', b'g', b'h', b'i', // 5 final literals
        ];
        (block, b"abcdabcdabcdefghi".to_vec())
    }

    /// Inputs of many shapes: random bytes, runs, short-period patterns
    /// (every period 1..40, so every overlapping-match path), text-like
    /// mixes, with lengths around the wild-copy margins.
    fn shapes() -> Vec<Vec<u8>> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for len in [
            0usize, 1, 5, 12, 13, 16, 17, 31, 32, 33, 64, 100, 4096, 65536,
        ] {
            out.push((0..len).map(|_| rnd() as u8).collect());
            out.push(vec![7u8; len]);
            for period in 1..40usize {
                let pat: Vec<u8> = (0..period).map(|_| rnd() as u8).collect();
                out.push((0..len).map(|i| pat[i % period]).collect());
            }
            let words: [&[u8]; 6] = [
                b"erofs ",
                b"virtio ",
                b"{\"k\":",
                b"0123456789",
                b"\n",
                b"zz",
            ];
            let mut t = Vec::new();
            while t.len() < len {
                match rnd() % 5 {
                    0 => t.push(rnd() as u8),
                    1 => t.extend(std::iter::repeat_n(rnd() as u8, (rnd() % 40) as usize)),
                    _ => t.extend_from_slice(words[(rnd() % 6) as usize]),
                }
            }
            t.truncate(len);
            out.push(t);
        }
        out
    }

    #[test]
    fn test_lz4_matches_reference_compressor_round_trips() {
        for data in shapes() {
            let block = lz4_flex::block::compress(&data);
            let mut got = vec![0xeeu8; data.len()];
            decompress(&block, &mut got, true).expect("exact decode");
            assert_eq!(got, data, "exact, {} bytes", data.len());
            // Partial decodes of every prefix length up to 200 and a few
            // more: the prefix equals the data's.
            let lens = (0..data.len().min(200)).chain([data.len() / 2, data.len()]);
            for n in lens {
                let mut got = vec![0xeeu8; n];
                decompress(&block, &mut got, false).expect("partial decode");
                assert_eq!(got, data[..n], "partial {n} of {} bytes", data.len());
            }
        }
    }

    #[test]
    fn test_lz4_handmade_block_decodes() {
        let (block, want) = sample();
        let mut out = vec![0u8; want.len()];
        decompress(&block, &mut out, true).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn test_lz4_overlapping_match_repeats_pattern() {
        // "abc" then a match of 4+11 at offset 3, then 5 literals.
        let mut block = vec![0x3b, b'a', b'b', b'c', 3, 0];
        block.extend_from_slice(&[0x50, b'v', b'w', b'x', b'y', b'z']);
        let mut out = vec![0u8; 3 + 15 + 5];
        decompress(&block, &mut out, true).unwrap();
        assert_eq!(&out, b"abcabcabcabcabcabcvwxyz");
    }

    #[test]
    fn test_lz4_prefix_inside_match_partial_ok() {
        let (block, want) = sample();
        for n in 0..=want.len() {
            let mut out = vec![0u8; n];
            decompress(&block, &mut out, false).unwrap();
            assert_eq!(out, want[..n], "prefix {n}");
        }
    }

    #[test]
    fn test_lz4_trailing_garbage_exact_fails_partial_ok() {
        let (mut block, want) = sample();
        block.extend_from_slice(&[1, 2, 3]);
        let mut out = vec![0u8; want.len()];
        assert!(decompress(&block, &mut out, true).is_err());
        decompress(&block, &mut out, false).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn test_lz4_wrong_output_size_exact_fails() {
        let (block, want) = sample();
        for n in [0, want.len() - 1, want.len() + 1] {
            let mut out = vec![0u8; n];
            assert!(decompress(&block, &mut out, true).is_err(), "size {n}");
        }
        // Partial decoding cannot produce more than the block holds.
        let mut out = vec![0u8; want.len() + 1];
        assert!(decompress(&block, &mut out, false).is_err());
    }

    #[test]
    fn test_lz4_bad_offset_fails() {
        for off in [0u8, 5] {
            let block = [0x44, b'a', b'b', b'c', b'd', off, 0, 0x50, 1, 2, 3, 4, 5];
            let mut out = vec![0u8; 17];
            assert!(decompress(&block, &mut out, true).is_err());
            assert!(decompress(&block, &mut out, false).is_err());
        }
    }

    #[test]
    fn test_lz4_match_in_last_literals_exact_fails() {
        // Literal "a", match of 8 at offset 1, then nothing: ends with a match.
        let block = [0x14, b'a', 1, 0, 0x00];
        let mut out = vec![0u8; 9];
        assert!(decompress(&block, &mut out, true).is_err());
        decompress(&block, &mut out, false).unwrap();
        assert_eq!(out, [b'a'; 9]);
    }

    #[test]
    fn test_lz4_empty_output_exact_needs_empty_block() {
        assert!(decompress(&[0], &mut [], true).is_ok());
        assert!(decompress(&[0, 0], &mut [], true).is_err());
        assert!(decompress(&[], &mut [], true).is_err());
        assert!(decompress(&[], &mut [], false).is_ok());
    }

    #[test]
    fn test_lz4_long_lengths_decode() {
        // 300 literals (15 + 255 + 30), match len 4+15+255+10=284 at offset 1,
        // then 5 literals.
        let mut block = vec![0xff, 255, 30];
        block.extend((0..300).map(|i| i as u8));
        block.extend_from_slice(&[1, 0, 255, 10, 0x50, 9, 9, 9, 9, 9]);
        let mut want: Vec<u8> = (0..300).map(|i| i as u8).collect();
        want.extend(std::iter::repeat_n(want[299], 284));
        want.extend_from_slice(&[9; 5]);
        let mut out = vec![0u8; want.len()];
        decompress(&block, &mut out, true).unwrap();
        assert_eq!(out, want);
    }

    /// Decodes `block` into `n` bytes both ways (with and without the fast
    /// path) under both rule sets; the two must agree: both fail, or both
    /// succeed with the same bytes.
    fn both_ways_agree(block: &[u8], n: usize, what: &str) -> usize {
        let mut decoded = 0;
        for exact in [true, false] {
            let (mut fast, mut slow) = (vec![0xa5u8; n], vec![0x5au8; n]);
            let (f, s) = if exact {
                (
                    decode::<true, true>(block, &mut fast),
                    decode::<true, false>(block, &mut slow),
                )
            } else {
                (
                    decode::<false, true>(block, &mut fast),
                    decode::<false, false>(block, &mut slow),
                )
            };
            assert_eq!(
                f.is_ok(),
                s.is_ok(),
                "{what}, exact {exact}: {f:?} vs {s:?}"
            );
            if f.is_ok() {
                assert!(fast == slow, "{what}, exact {exact}: outputs differ");
                decoded += 1;
            }
        }
        decoded
    }

    #[test]
    fn test_lz4_fast_path_decides_like_the_general_loop() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut valid, mut corrupt_ok) = (0, 0);
        for (k, data) in shapes().into_iter().enumerate() {
            let block = lz4_flex::block::compress(&data);
            valid += both_ways_agree(&block, data.len(), &format!("shape {k}"));
            if block.is_empty() {
                continue;
            }
            // Corrupted copies: flipped bytes (tokens, offsets, lengths
            // and literals alike), then wrong output sizes.
            for trial in 0..24 {
                let mut bad = block.clone();
                for _ in 0..1 + trial % 3 {
                    let at = (rnd() % bad.len() as u64) as usize;
                    bad[at] ^= 1 << (rnd() % 8);
                }
                corrupt_ok +=
                    both_ways_agree(&bad, data.len(), &format!("shape {k} trial {trial}"));
            }
            for n in [data.len().saturating_sub(1), data.len() + 1, data.len() / 2] {
                both_ways_agree(&block, n, &format!("shape {k} into {n}"));
            }
        }
        // Both kinds of outcome were exercised.
        assert!(valid > 500, "{valid} valid decodes");
        assert!(corrupt_ok > 0, "no corrupt block decoded");
    }

    #[test]
    fn test_lz4_every_truncation_fails_without_panic() {
        let (block, want) = sample();
        for cut in 0..block.len() {
            let mut out = vec![0u8; want.len()];
            assert!(
                decompress(&block[..cut], &mut out, true).is_err(),
                "cut {cut}"
            );
        }
    }
}
