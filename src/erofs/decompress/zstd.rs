//! Zstandard decoding with the `zstd` crate (libzstd), streaming straight
//! into the caller's buffer.
//!
//! Mirrors the kernel: decoding stops once the output is full, whether or
//! not the frame ends there (the kernel never reads past that point); a
//! frame that ends before the output is full is corruption. The window is
//! limited to `1 << ZSTD_MAX_WINDOW_LOG` bytes, the most an image may
//! configure, which also caps what libzstd allocates. The image's own
//! window log is not used as the limit: the kernel sizes its decoder
//! workspace for the largest window of all mounted images, so it may read
//! frames with a larger window than the image declares, up to that cap.
//! Legacy (pre-1.0) Zstandard formats are not built in, as in the kernel.

use std::cell::RefCell;

use zstd::zstd_safe::{get_error_name, DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

use super::{Algorithm, Result, ZstdConfig, ZSTD_MAX_WINDOW_LOG};
use crate::erofs::Error;

fn err(detail: impl Into<String>) -> Error {
    Algorithm::Zstd.corrupt(detail)
}

thread_local! {
    /// One decoder context per thread, reset before each use.
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

pub(super) fn decompress(_cfg: &ZstdConfig, input: &[u8], output: &mut [u8]) -> Result<()> {
    DCTX.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            if slot.is_none() {
                *slot = Some(new_dctx()?);
            }
            match slot.as_mut() {
                Some(dctx) => run(dctx, input, output),
                None => Err(err("no decoder context")),
            }
        }
        // Only reachable by re-entrance, which never happens; stay correct.
        Err(_) => run(&mut new_dctx()?, input, output),
    })
}

fn new_dctx() -> Result<DCtx<'static>> {
    let mut dctx = DCtx::try_create().ok_or_else(|| err("cannot allocate a decoder context"))?;
    dctx.set_parameter(DParameter::WindowLogMax(u32::from(ZSTD_MAX_WINDOW_LOG)))
        .map_err(|code| err(format!("window limit: {}", get_error_name(code))))?;
    Ok(dctx)
}

fn run(dctx: &mut DCtx<'static>, input: &[u8], output: &mut [u8]) -> Result<()> {
    // Session reset keeps the window limit.
    dctx.reset(ResetDirective::SessionOnly)
        .map_err(|code| err(format!("reset: {}", get_error_name(code))))?;
    let out_len = output.len();
    if out_len == 0 {
        return Ok(());
    }
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(output);
    loop {
        let (in_before, out_before) = (inb.pos(), outb.pos());
        let hint = dctx
            .decompress_stream(&mut outb, &mut inb)
            .map_err(|code| {
                err(format!(
                    "{} at input byte {}, output byte {}",
                    get_error_name(code),
                    inb.pos(),
                    outb.pos()
                ))
            })?;
        if outb.pos() >= out_len {
            return Ok(());
        }
        if hint == 0 {
            return Err(err(format!(
                "frame ends after {} bytes, expected {out_len}",
                outb.pos()
            )));
        }
        if inb.pos() == in_before && outb.pos() == out_before {
            return Err(err(format!(
                "stream truncated after {} input bytes with {} of {out_len} bytes decoded",
                input.len(),
                outb.pos()
            )));
        }
    }
}
