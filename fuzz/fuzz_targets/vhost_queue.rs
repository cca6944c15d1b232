//! Arbitrary descriptor chains over guest memory through the vhost-user
//! backend: a split virtqueue whose descriptor table, available ring and
//! buffers are the input, served by the backend as its queue thread does
//! (see `erofs_virtiofsd::vhost::fuzzing::fuzz_vring` for the layout).
//! Error replies are fine; a panic or a used ring that does not match what
//! the guest offered is a bug.
#![no_main]

use erofs_virtiofsd::vhost::fuzzing::fuzz_vring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_vring(data);
});
