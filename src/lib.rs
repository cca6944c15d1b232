//! erofs-virtiofsd: serve read-only EROFS images to virtual machines.
//!
//! The crate is split by what each part trusts and owns:
//! - [`erofs`]: the on-disk format (parsing and mapping only);
//! - [`source`]: where image bytes come from;
//! - [`fuse`]: the FUSE protocol and the /dev/fuse transport;
//! - [`cli`]: the command line;
//! - [`vhost`]: the vhost-user-fs device and daemon;
//! - [`os`]: the system calls, the only module allowed `unsafe` code.
#![deny(unsafe_code)]

pub mod cli;
pub mod erofs;
pub mod fuse;
pub mod os;
pub mod source;
pub mod vhost;
