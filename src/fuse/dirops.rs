//! Directory listings and extended attributes (the replies whose size the
//! caller chooses).

use std::sync::Arc;

use zerocopy::IntoBytes;

use super::abi::{self, *};
use super::images::ShareImage;
use super::nodes::{Listed, Target};
use super::push::Pusher;
use super::reply::{send, send_bytes, Fail, OpResult};
use super::session::Session;
use super::sink::ReplySink;
use crate::erofs::{FileType, InodeKind};

/// A reader going through a directory in listing order gets the small
/// files after the one it reads pushed into the page cache, at most this
/// many entries at a time...
const STREAM_ENTRIES: usize = 32;
/// ... this many bytes ...
const STREAM_BYTES: u64 = 1 << 20;
/// ... and only files up to this size (a larger one ends the batch: it is
/// read with readahead).
const STREAM_FILE_MAX: u64 = 128 << 10;
/// Directories whose reading position is remembered (forgotten all at
/// once beyond).
const MAX_STREAMS: usize = 4096;

/// Longest xattr name the VFS passes (XATTR_NAME_MAX).
const XATTR_NAME_MAX: usize = 255;

const DIRENT_LEN: usize = std::mem::size_of::<Dirent>();
const DIRENTPLUS_LEN: usize = std::mem::size_of::<Direntplus>();

/// A READDIR(PLUS) reply being built.
pub(crate) struct Listing {
    pub(crate) buf: Vec<u8>,
    /// Most bytes the reply may hold.
    pub(crate) cap: usize,
    /// Entries with attributes (READDIRPLUS).
    pub(crate) plus: bool,
    /// The names may go at any time (the root of a share of named
    /// images): the client may not cache them.
    pub(crate) volatile: bool,
}

impl Listing {
    pub(crate) fn new(cap: usize, plus: bool) -> Self {
        Self {
            buf: Vec::with_capacity(cap.min(1 << 16)),
            cap,
            plus,
            volatile: false,
        }
    }
}

/// What a READDIRPLUS entry says of the inode it names.
pub(crate) enum Child<'a> {
    /// Nothing: node id 0.
    None,
    /// A node made already (the roots of named images).
    Held(Target),
    /// Inode `nid` of the image, listed at the given place.
    Listed(&'a Arc<ShareImage>, u64, Listed),
}

/// Directory cookies: 0 is the start; cookie `c >= 1` resumes at byte
/// `c - 1` of the on-disk entries (cookie 1, byte 0, follows the `.` that
/// directories stored without one get).
fn cookie_to_pos(cookie: u64) -> Option<u64> {
    cookie.checked_sub(1)
}

impl Session {
    pub(crate) fn readdir(
        &self,
        h: &InHeader,
        r: &ReadIn,
        plus: bool,
        sink: &mut dyn ReplySink,
    ) -> OpResult {
        let t = self.file(h, r.fh, true)?;
        let (img, dir) = (&t.img, &t.inode);
        if !dir.is_dir() {
            return Err(Fail::Errno(libc::ENOTDIR));
        }
        let cap = usize::try_from(r.size.min(self.share.options().max_read)).unwrap_or(0);
        let mut out = Listing::new(cap, plus);
        let mut full = false;
        if r.offset == 0 && dir.dot_omitted {
            let ino = img.st_ino(dir.nid);
            full = !self.push_entry(&mut out, b".", ino, 4, 1, Child::None);
        }
        let pos = cookie_to_pos(r.offset).unwrap_or(0);
        let mut failed = None;
        // A listing from the start expects its first regular file to be
        // read first (see `follow_listing`).
        let mut first_file = None;
        if !full {
            let mut at = pos;
            let res = img.image().readdir(dir, pos, |e, next| {
                if plus && r.offset == 0 && first_file.is_none() && e.file_type == FileType::File {
                    first_file = Some(at);
                }
                let child = if plus && e.name != b"." && e.name != b".." {
                    let listed = Listed {
                        parent: dir.nid,
                        at,
                        next,
                    };
                    Child::Listed(img, e.nid, listed)
                } else {
                    Child::None
                };
                let cookie = next.saturating_add(1);
                let ino = img.st_ino(e.nid);
                let fits =
                    self.push_entry(&mut out, e.name, ino, e.file_type.dtype(), cookie, child);
                at = next;
                fits
            });
            if let Err(e) = res {
                failed = Some(self.image_error(img, "readdir", &e));
            }
        }
        if let Some(at) = first_file {
            self.expect_next((img.serial(), dir.nid), at, false);
        }
        match failed {
            // Entries before the damage are still worth returning.
            Some(f) if out.buf.is_empty() => Err(f),
            _ => send_bytes(sink, h.unique, &[&out.buf]),
        }
    }

    /// Appends one entry if it fits; false when it does not (the listing
    /// stops there). With `plus`, a `child` gets full attributes and counts
    /// a lookup (only once the entry fits); others, and children that
    /// cannot be given, get node id 0 (the kernel then looks the name up
    /// itself).
    pub(crate) fn push_entry(
        &self,
        out: &mut Listing,
        name: &[u8],
        ino: u64,
        typ: u32,
        cookie: u64,
        child: Child<'_>,
    ) -> bool {
        let (plus, cap, volatile) = (out.plus, out.cap, out.volatile);
        let out = &mut out.buf;
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
                Child::Held(c) => self.entry(&c, volatile).ok(),
                Child::Listed(img, nid, listed) => self.listed_entry(img, nid, listed),
                Child::None => None,
            };
            let entry_out = entry_out.unwrap_or_default();
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
        let t = self.node(h.nodeid)?;
        if name.len() > XATTR_NAME_MAX || name.is_empty() {
            return Err(Fail::Errno(libc::ERANGE));
        }
        if let Some(errno) = unknown_xattr_name(name) {
            return Err(Fail::Errno(errno));
        }
        let value = t
            .img
            .image()
            .get_xattr(&t.inode, name)
            .map_err(|e| self.image_error(&t.img, "getxattr", &e))?
            .ok_or(Fail::Errno(libc::ENODATA))?;
        sized_reply(sink, h.unique, size, &value)
    }

    pub(crate) fn listxattr(&self, h: &InHeader, size: u32, sink: &mut dyn ReplySink) -> OpResult {
        let t = self.node(h.nodeid)?;
        let names = t
            .img
            .image()
            .list_xattr_names(&t.inode)
            .map_err(|e| self.image_error(&t.img, "listxattr", &e))?;
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

/// The namespaces the kernel's EROFS answers for: a name in another one is
/// EOPNOTSUPP there (no handler takes it), a known prefix with nothing
/// after it EINVAL. FUSE hands every name to the daemon, so the same rule
/// is kept here. POSIX ACLs are the two `system.` names the kernel maps to
/// the inode's ACLs.
fn unknown_xattr_name(name: &[u8]) -> Option<i32> {
    const PREFIXES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    if name == b"system.posix_acl_access" || name == b"system.posix_acl_default" {
        return None;
    }
    match PREFIXES.iter().find(|p| name.starts_with(p)) {
        Some(p) if name.len() == p.len() => Some(libc::EINVAL),
        Some(_) => None,
        None => Some(libc::EOPNOTSUPP),
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

impl Session {
    /// `nodeid`, a regular file, was read from its start. When it is the
    /// entry a reader going through its directory in listing order reads
    /// next (the one after the previous file read there, or where the last
    /// batch stopped), the small regular files after it are pushed into the
    /// page cache, so that reading them costs no round trip (tar, cp -r,
    /// grep -r). A file read out of order only moves the directory's
    /// expected position: random access pushes nothing.
    pub(crate) fn follow_listing(&self, p: &Pusher, nodeid: u64, img: &Arc<ShareImage>) {
        let Some(l) = self.nodes.listed(nodeid) else {
            return;
        };
        let in_order = self
            .dir_streams
            .lock()
            .is_ok_and(|s| s.get(&(img.serial(), l.parent)) == Some(&l.at));
        if !in_order {
            self.expect_next((img.serial(), l.parent), l.next, true);
            return;
        }
        let Ok(dir) = self.inode_of(img, l.parent) else {
            return;
        };
        let (mut seen, mut bytes, mut resume) = (0usize, 0u64, l.next);
        let _ = img.image().readdir(&dir.inode, l.next, |e, next| {
            seen = seen.saturating_add(1);
            if e.file_type == FileType::File {
                let Ok(t) = self.inode_of(img, e.nid) else {
                    return false;
                };
                let inode = &t.inode;
                let total = bytes.saturating_add(inode.size);
                if inode.kind != InodeKind::File
                    || inode.size > STREAM_FILE_MAX
                    || total > STREAM_BYTES
                {
                    // Read by itself: the next batch starts there.
                    return false;
                }
                if let Some(id) = self.nodeid_of(img, e.nid) {
                    p.offer_file(id, &t);
                }
                bytes = total;
            }
            resume = next;
            seen < STREAM_ENTRIES
        });
        self.expect_next((img.serial(), l.parent), resume, true);
    }

    /// Remembers `pos` as where the next file read in order in directory
    /// `dir` (image serial, nid) sits (with `replace` false, only if
    /// nothing is remembered).
    fn expect_next(&self, dir: (u64, u64), pos: u64, replace: bool) {
        let Ok(mut streams) = self.dir_streams.lock() else {
            return;
        };
        if streams.len() >= MAX_STREAMS && !streams.contains_key(&dir) {
            streams.clear();
        }
        if replace {
            streams.insert(dir, pos);
        } else {
            streams.entry(dir).or_insert(pos);
        }
    }
}
