//! The crate's interface to the operating system: the one module allowed
//! to use `unsafe`. Everything else in the crate is `#![forbid(unsafe_code)]`
//! and reaches the kernel through the safe functions and types here.
//!
//! What it owns, by concern:
//! - [`fd`]: descriptor calls on memory the caller lends for the call
//!   (read, write, writev, pipes, seals, socket options, duplicating an
//!   inherited descriptor);
//! - [`mmap`]: [`mmap::SealedMapping`], a read-only mapping of a file
//!   sealed against writes and size changes, lent out as `&[u8]`;
//! - [`splice`]: splice(2) between files, pipes and devices;
//! - [`signal`]: blocking signals and waiting for them on a thread;
//! - [`mount`]: mount(2), umount2(2) and the /dev/fuse clone ioctl;
//! - [`proc`]: process-wide calls (ids, page size, CPU pinning, group
//!   lookup, detaching into the background);
//! - [`sandbox`]: namespaces, pivot_root, the supervising parent's fork
//!   and wait, capabilities and `no_new_privs`;
//! - [`uring`]: the FUSE-over-io_uring ring, whose entries' buffers the
//!   kernel writes while it holds them;
//! - [`guestmem`]: reading file bytes straight into guest memory
//!   ([`vm_memory::VolatileSlice`]s).
//!
//! Why it is sound, in general terms (each block says it precisely): every
//! pointer handed to the kernel comes from a live Rust borrow (or a
//! `VolatileSlice`, whose constructor promises the memory is valid) that
//! lasts for the whole call, with the length of that borrow; descriptors
//! are plain numbers to the kernel (a wrong one fails with `EBADF`, it
//! never touches our memory); the only memory the kernel keeps using after
//! a call returns (the io_uring entries' buffers, a mapping) is owned by a
//! type here that outlives that use. Guest memory is never turned into a
//! Rust reference: the guest may write it at any time, so it is only
//! written by the kernel (`preadv`) or with vm-memory's volatile copies.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod fd;
pub mod guestmem;
pub mod mmap;
pub mod mount;
pub mod proc;
pub mod sandbox;
pub mod signal;
pub mod splice;
pub mod uring;

use std::io;

/// The result of a call returning -1 and setting `errno` on failure.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The result of a call returning a byte count, or -1 and `errno`.
fn check_size(rc: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}
