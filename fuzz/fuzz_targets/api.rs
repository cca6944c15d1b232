//! Arbitrary bytes into the API's router (the layer after HTTP parsing),
//! as a sequence of requests against a fake daemon (see
//! `erofs_virtiofsd::api::testutil::fuzz_api` for the input layout); each
//! body is also parsed as a mount config string. Error replies are fine; a
//! panic, or a reply that breaks the API's shape, is a bug.
#![no_main]

use erofs_virtiofsd::api::testutil::fuzz_api;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_api(data);
});
