//! Arbitrary bytes into the FUSE dispatcher, as a sequence of requests
//! against a fresh server over a small built-in image (see
//! `erofs_virtiofsd::fuse::fuzzing::fuzz_dispatch` for the input layout).
//! Errors are fine; a panic or a reply that breaks the protocol is a bug.
#![no_main]

use erofs_virtiofsd::fuse::fuzzing::fuzz_dispatch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_dispatch(data);
});
