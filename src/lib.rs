//! erofs-virtiofsd: serve read-only EROFS images to virtual machines.
//!
//! The crate is split by what each part trusts and owns:
//! - [`erofs`]: the on-disk format (parsing and mapping only);
//! - [`source`]: where image bytes come from;
//! - [`share`]: shared content (fingerprints, trust domains, the store);
//! - [`cli`]: the command line;
//! - [`vhost`]: the vhost-user-fs device and daemon.

pub mod cli;
pub mod erofs;
pub mod fuse;
pub mod share;
pub mod source;
pub mod vhost;
