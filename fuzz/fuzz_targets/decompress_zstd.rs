//! One zstd pcluster of arbitrary bytes through the decoder (input layout:
//! `common/decompress.rs`). Errors are fine; a panic is a bug.
#![no_main]

#[path = "common/decompress.rs"]
mod common;

use erofs_virtiofsd::erofs::decompress::Algorithm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::run(Algorithm::Zstd, data);
});
