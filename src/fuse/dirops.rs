//! Directory listings and extended attributes (the replies whose size the
//! caller chooses).

use std::sync::Arc;

use zerocopy::IntoBytes;

use super::abi::{self, *};
use super::dispatch::{send, send_bytes, Fail, OpResult, Server};
use super::sink::ReplySink;
use crate::erofs::Inode;

/// Longest xattr name the VFS passes (XATTR_NAME_MAX).
const XATTR_NAME_MAX: usize = 255;

const DIRENT_LEN: usize = std::mem::size_of::<Dirent>();
const DIRENTPLUS_LEN: usize = std::mem::size_of::<Direntplus>();

/// Directory cookies: 0 is the start; cookie `c >= 1` resumes at byte
/// `c - 1` of the on-disk entries (cookie 1, byte 0, follows the `.` that
/// directories stored without one get).
fn cookie_to_pos(cookie: u64) -> Option<u64> {
    cookie.checked_sub(1)
}

impl Server {
    pub(crate) fn readdir(
        &self,
        h: &InHeader,
        r: &ReadIn,
        plus: bool,
        sink: &mut dyn ReplySink,
    ) -> OpResult {
        let dir = self.file(h, r.fh, true)?;
        if !dir.is_dir() {
            return Err(Fail::Errno(libc::ENOTDIR));
        }
        let cap = usize::try_from(r.size.min(self.opts.max_read)).unwrap_or(0);
        let mut out: Vec<u8> = Vec::with_capacity(cap.min(1 << 16));
        let mut full = false;
        if r.offset == 0 && dir.dot_omitted {
            let ino = self.st_ino(dir.nid);
            full = !self.push_entry(&mut out, cap, plus, b".", ino, 4, 1, None);
        }
        let pos = cookie_to_pos(r.offset).unwrap_or(0);
        let mut failed = None;
        if !full {
            let res = self.img.readdir(&dir, pos, |e, next| {
                let child = if plus && e.name != b"." && e.name != b".." {
                    self.inode_of(e.nid).ok()
                } else {
                    None
                };
                let cookie = next.saturating_add(1);
                let ino = self.st_ino(e.nid);
                self.push_entry(
                    &mut out,
                    cap,
                    plus,
                    e.name,
                    ino,
                    e.file_type.dtype(),
                    cookie,
                    child,
                )
            });
            if let Err(e) = res {
                failed = Some(self.image_error("readdir", &e));
            }
        }
        match failed {
            // Entries before the damage are still worth returning.
            Some(f) if out.is_empty() => Err(f),
            _ => send_bytes(sink, h.unique, &[&out]),
        }
    }

    /// Appends one entry if it fits in `cap`; false when it does not (the
    /// listing stops there). With `plus`, a decoded `child` gets full
    /// attributes and counts a lookup; others get node id 0 (the kernel
    /// then looks the name up itself).
    #[allow(clippy::too_many_arguments)]
    fn push_entry(
        &self,
        out: &mut Vec<u8>,
        cap: usize,
        plus: bool,
        name: &[u8],
        ino: u64,
        typ: u32,
        cookie: u64,
        child: Option<Arc<Inode>>,
    ) -> bool {
        let head = if plus { DIRENTPLUS_LEN } else { DIRENT_LEN };
        let Some(rec) = head.checked_add(name.len()).and_then(abi::dirent_align) else {
            return false;
        };
        if name.is_empty() || name.len() > abi::NAME_MAX {
            // Not representable; skip it rather than fail the listing.
            return true;
        }
        if out.len().saturating_add(rec) > cap {
            return false;
        }
        let dirent = Dirent {
            ino,
            off: cookie,
            namelen: name.len() as u32,
            typ,
        };
        if plus {
            let entry_out = match child {
                Some(c) => self.entry(&c).unwrap_or_default(),
                None => EntryOut::default(),
            };
            out.extend_from_slice(Direntplus { entry_out, dirent }.as_bytes());
        } else {
            out.extend_from_slice(dirent.as_bytes());
        }
        out.extend_from_slice(name);
        let pad = rec.saturating_sub(head).saturating_sub(name.len());
        out.extend(std::iter::repeat_n(0u8, pad));
        true
    }

    pub(crate) fn getxattr(
        &self,
        h: &InHeader,
        size: u32,
        name: &[u8],
        sink: &mut dyn ReplySink,
    ) -> OpResult {
        let inode = self.node(h.nodeid)?;
        if name.len() > XATTR_NAME_MAX || name.is_empty() {
            return Err(Fail::Errno(libc::ERANGE));
        }
        let value = self
            .img
            .get_xattr(&inode, name)
            .map_err(|e| self.image_error("getxattr", &e))?
            .ok_or(Fail::Errno(libc::ENODATA))?;
        sized_reply(sink, h.unique, size, &value)
    }

    pub(crate) fn listxattr(&self, h: &InHeader, size: u32, sink: &mut dyn ReplySink) -> OpResult {
        let inode = self.node(h.nodeid)?;
        let names = self
            .img
            .list_xattr_names(&inode)
            .map_err(|e| self.image_error("listxattr", &e))?;
        let mut list = Vec::new();
        for n in names {
            // The kernel lists trusted.* only to CAP_SYS_ADMIN; root's uid
            // stands in for that here.
            if h.uid != 0 && n.starts_with(b"trusted.") {
                continue;
            }
            list.extend_from_slice(&n);
            list.push(0);
        }
        sized_reply(sink, h.unique, size, &list)
    }
}

/// GETXATTR/LISTXATTR reply: the size when `size` is 0, ERANGE when the
/// value does not fit, else the value.
fn sized_reply(sink: &mut dyn ReplySink, unique: u64, size: u32, value: &[u8]) -> OpResult {
    let len = u32::try_from(value.len()).map_err(|_| Fail::Errno(libc::E2BIG))?;
    if size == 0 {
        return send(
            sink,
            unique,
            &GetxattrOut {
                size: len,
                padding: 0,
            },
        );
    }
    if len > size {
        return Err(Fail::Errno(libc::ERANGE));
    }
    send_bytes(sink, unique, &[value])
}
