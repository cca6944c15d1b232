//! erofs-virtiofsd: serve read-only EROFS images to virtual machines.
//!
//! The crate is split by what each part trusts and owns:
//! - [`erofs`]: the on-disk format (parsing and mapping only);
//! - [`source`]: where image bytes come from;
//! - [`fuse`]: the FUSE protocol and the /dev/fuse transport;
//! - [`share`]: shared content (fingerprints, trust domains, the store);
//! - [`cli`]: the command line;
//! - [`metrics`]: counters of the request paths, as JSON and Prometheus text;
//! - [`api`]: the HTTP API socket (images added and removed, metrics);
//! - [`vhost`]: the vhost-user-fs device and daemon;
//! - [`os`]: the system calls, the only module allowed `unsafe` code.
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod erofs;
pub mod fuse;
pub mod metrics;
pub mod os;
pub mod share;
pub mod source;
pub mod vhost;
