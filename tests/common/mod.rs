//! Shared harness for the integration tests: the Linux kernel's EROFS driver
//! is the oracle for what an image contains.
//!
//! - [`manifest`]: the manifest entry type (the JSON-lines format of
//!   `docs/fixtures.md`), a walker that builds it from a mounted
//!   tree, and a field-by-field comparison with a readable diff.
//! - [`fixtures`]: where the fixtures live ([`fixture_dir`]) and the
//!   expected manifest of each fixture image (tree manifest + per-image
//!   delta); [`fixture_trees`]: the source trees of the fixture images.
//! - [`kmount`]: mount an image with the kernel driver (RAII guard) and check
//!   up front that we can.
//! - [`trees`]: deterministic source trees for `mkfs.erofs` (edge cases, plain).
//! - [`mkfs`]: run Debian's `mkfs.erofs` 1.5.
//! - [`cli`]: run our own binary's `image manifest` command.
//! - [`fusemount`]: mount an image through our own FUSE daemon (RAII guard).
//! - [`daemon`]: run our binary in serve mode on a temporary socket.
//! - [`procs`]: the processes of a daemon (a supervisor and its sandboxed
//!   child by default).
//! - [`chv`]: that frontend speaking cloud-hypervisor's message sequence
//!   (set-up, memory hotplug, reconnect).
//! - [`frontend`]: a vhost-user frontend with memfd guest RAM and
//!   hand-driven split virtqueues.
//! - [`fuse_client`]: FUSE requests over that frontend, and a tree walk
//!   into a manifest.
//!
//! Every integration test crate compiles this module on its own and uses only
//! part of it, hence the `dead_code` and `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod bigtree;
pub mod chv;
pub mod cli;
pub mod daemon;
pub mod dax;
pub mod fixture_dir;
pub mod fixture_trees;
pub mod fixtures;
pub mod frontend;
pub mod fuse_client;
pub mod fusemount;
pub mod kmount;
pub mod manifest;
pub mod mkfs;
pub mod procs;
pub mod rangeread;
pub mod resources;
pub mod trees;

pub use cli::run_manifest;
pub use fixtures::{fixture_image, fixtures_dir, load_expected};
pub use kmount::{assert_kernel_erofs, KernelMount};
pub use manifest::{assert_manifests_eq, walk_manifest, Entry};
pub use mkfs::mkfs;
