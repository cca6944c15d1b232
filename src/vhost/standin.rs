//! TEMPORARY stand-in for `crate::fuse` (being written on the `fuse`
//! branch) with the same shape: `Server::handle(&self, req, &mut dyn
//! ReplySink)`. Answers INIT and GETATTR of the root, everything else
//! ENOSYS. Removed when the `fuse` branch is merged.
#![allow(missing_docs, dead_code, clippy::type_complexity)]

use std::io;
use std::sync::Arc;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::erofs::Image;

pub mod abi {
    use super::*;

    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
    pub struct OutHeader {
        pub len: u32,
        pub error: i32,
        pub unique: u64,
    }

    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
    pub struct InHeader {
        pub len: u32,
        pub opcode: u32,
        pub unique: u64,
        pub nodeid: u64,
        pub uid: u32,
        pub gid: u32,
        pub pid: u32,
        pub total_extlen: u16,
        pub padding: u16,
    }
}

use abi::{InHeader, OutHeader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub const OUT_HEADER_LEN: usize = 16;

pub trait ReplySink {
    fn send(&mut self, header: &OutHeader, body: &[&[u8]]) -> io::Result<()>;
    fn send_with(
        &mut self,
        unique: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8], usize) -> Result<usize, Errno>,
    ) -> io::Result<()>;
}

pub fn out_header(unique: u64, errno: i32, payload: usize) -> OutHeader {
    let len = payload.saturating_add(OUT_HEADER_LEN);
    OutHeader {
        len: u32::try_from(len).unwrap_or(u32::MAX),
        error: errno.checked_neg().unwrap_or(i32::MIN),
        unique,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    Never,
    Auto,
    #[default]
    Always,
}

#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub cache: CachePolicy,
}

#[derive(Debug)]
pub struct Server {
    _img: Arc<Image>,
}

impl Server {
    pub fn new(img: Arc<Image>, _opts: ServerOptions) -> crate::erofs::Result<Self> {
        Ok(Self { _img: img })
    }

    pub fn handle(&self, req: &[u8], sink: &mut dyn ReplySink) -> io::Result<()> {
        let Ok((h, _)) = InHeader::read_from_prefix(req) else {
            return sink.send(&out_header(0, libc::EINVAL, 0), &[]);
        };
        match h.opcode {
            2 | 42 | 36 => Ok(()),
            26 => {
                // fuse_init_out: major 7, minor 31, max_write 4096.
                let mut out = [0u8; 64];
                out[0..4].copy_from_slice(&7u32.to_le_bytes());
                out[4..8].copy_from_slice(&31u32.to_le_bytes());
                out[20..24].copy_from_slice(&4096u32.to_le_bytes());
                sink.send(&out_header(h.unique, 0, 64), &[&out])
            }
            15 => sink.send_with(h.unique, 8, &mut |buf, pos| {
                let data = b"standin!";
                let n = buf.len().min(data.len().saturating_sub(pos));
                buf[..n].copy_from_slice(&data[pos..pos + n]);
                Ok(n)
            }),
            _ => sink.send(&out_header(h.unique, libc::ENOSYS, 0), &[]),
        }
    }
}
