//! The synthetic root of a share of named images: a read-only directory
//! (mode 0555, owned by root) whose entries are the images' names.
//!
//! Images come and go while clients hold the root, and virtio-fs cannot
//! tell its clients, so nothing about the root may be cached: its
//! attributes and its entries get zero timeouts, its listing is never kept
//! (no `FOPEN_CACHE_DIR`, and no zero-message opendir in such a share),
//! and a name not found gets no negative entry. The attributes of each
//! image's own root directory are cached like any other inode's.
//!
//! Listing cookies: 1 follows `.`, 2 follows `..`, and `serial + 2`
//! follows the image with that serial; images are listed in the order
//! they were added, so a listing resumed after images came or went skips
//! and repeats nothing that stayed.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::abi::*;
use super::dirops::{Child, Listing};
use super::nodes::{Handle, Target};
use super::reply::{send, send_bytes, send_ok, Fail, OpResult};
use super::request::Op;
use super::session::{check_open, statfs_of, Session};
use super::sink::ReplySink;
use crate::erofs::ondisk;

/// `st_ino` of the synthetic root.
pub const ROOT_INO: u64 = 1;

/// `d_type` of a directory.
const DT_DIR: u32 = 4;

/// The cookie following `.`; `..` follows.
const AFTER_DOT: u64 = 1;
/// The cookie following `..`; images follow (`serial + AFTER_DOTDOT`).
const AFTER_DOTDOT: u64 = 2;

impl Session {
    /// Answers `op` on the synthetic root; `None` when the root does
    /// nothing special for it (the caller dispatches it as usual).
    pub(crate) fn root_op(
        &self,
        h: &InHeader,
        op: &Op<'_>,
        sink: &mut dyn ReplySink,
    ) -> Option<OpResult> {
        Some(match *op {
            Op::Lookup(name) => self.root_lookup(h, name, sink),
            Op::Getattr(_) => self.root_getattr(h, sink),
            Op::Statx(_) => self.root_statx(h, sink),
            Op::Readlink | Op::Lseek(_) => Err(Fail::Errno(libc::EINVAL)),
            Op::Open(ref o) => check_open(o, false, true),
            Op::Opendir(ref o) => self.root_opendir(h, o, sink),
            Op::Read(_) => Err(Fail::Errno(libc::EISDIR)),
            Op::Readdir(ref r) => self.root_readdir(h, r, false, sink),
            Op::Readdirplus(ref r) => self.root_readdir(h, r, true, sink),
            Op::Statfs => send(sink, h.unique, &statfs_of(&self.share.images())),
            Op::Getxattr(_, name) if name.is_empty() || name.len() > 255 => {
                Err(Fail::Errno(libc::ERANGE))
            }
            Op::Getxattr(..) => Err(Fail::Errno(libc::ENODATA)),
            Op::Listxattr(0) => send(sink, h.unique, &GetxattrOut::default()),
            Op::Listxattr(_) => send_ok(sink, h.unique),
            Op::Access(a) => {
                if a.mask & 2 != 0 {
                    Err(Fail::Errno(libc::EROFS))
                } else {
                    // Mode 0555: anyone may read and search it.
                    send_ok(sink, h.unique)
                }
            }
            _ => return None,
        })
    }

    /// The root's attributes: a directory with a link from each image.
    fn root_attr(&self) -> Attr {
        let t = self
            .share
            .created()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let links = u32::try_from(self.share.image_count())
            .unwrap_or(u32::MAX)
            .saturating_add(2);
        Attr {
            ino: ROOT_INO,
            size: 0,
            blocks: 0,
            atime: t.as_secs(),
            mtime: t.as_secs(),
            ctime: t.as_secs(),
            atimensec: t.subsec_nanos(),
            mtimensec: t.subsec_nanos(),
            ctimensec: t.subsec_nanos(),
            mode: libc::S_IFDIR | 0o555,
            nlink: links,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn root_lookup(&self, h: &InHeader, name: &[u8], sink: &mut dyn ReplySink) -> OpResult {
        if name.len() > ondisk::NAME_LEN {
            return Err(Fail::Errno(libc::ENAMETOOLONG));
        }
        // No negative entry: the name may come any time.
        let img = self
            .share
            .lookup_image(name)
            .ok_or(Fail::Errno(libc::ENOENT))?;
        let t = Target::new(Arc::clone(&img), Arc::clone(img.root()));
        let out = self.entry(&t, true)?;
        send(sink, h.unique, &out)
    }

    fn root_getattr(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        let out = AttrOut {
            attr_valid: 0,
            attr_valid_nsec: 0,
            dummy: 0,
            attr: self.root_attr(),
        };
        send(sink, h.unique, &out)
    }

    fn root_statx(&self, h: &InHeader, sink: &mut dyn ReplySink) -> OpResult {
        if self.minor() < 39 {
            return Err(Fail::Errno(libc::ENOSYS));
        }
        let a = self.root_attr();
        let t = SxTime {
            tv_sec: i64::try_from(a.mtime).unwrap_or(0),
            tv_nsec: a.mtimensec,
            reserved: 0,
        };
        let out = StatxOut {
            attr_valid: 0,
            attr_valid_nsec: 0,
            flags: 0,
            spare: [0; 2],
            stat: Statx {
                mask: STATX_BASIC_STATS,
                blksize: a.blksize,
                attributes: STATX_ATTR_IMMUTABLE,
                nlink: a.nlink,
                uid: a.uid,
                gid: a.gid,
                mode: (a.mode & 0xffff) as u16,
                ino: a.ino,
                size: a.size,
                blocks: a.blocks,
                attributes_mask: STATX_ATTR_IMMUTABLE | STATX_ATTR_COMPRESSED,
                atime: t,
                ctime: t,
                mtime: t,
                ..Default::default()
            },
        };
        send(sink, h.unique, &out)
    }

    fn root_opendir(&self, h: &InHeader, o: &OpenIn, sink: &mut dyn ReplySink) -> OpResult {
        check_open(o, true, true)?;
        let fh = self
            .handles
            .insert(Handle {
                target: None,
                dir: true,
            })
            .ok_or(Fail::Errno(libc::ENFILE))?;
        // Neither FOPEN_KEEP_CACHE nor FOPEN_CACHE_DIR: the names change.
        let out = OpenOut {
            fh,
            open_flags: 0,
            backing_id: 0,
        };
        if let Err(e) = send(sink, h.unique, &out) {
            self.handles.remove(fh);
            return Err(e);
        }
        Ok(())
    }

    fn root_readdir(
        &self,
        h: &InHeader,
        r: &ReadIn,
        plus: bool,
        sink: &mut dyn ReplySink,
    ) -> OpResult {
        match self.handles.get(r.fh) {
            Some(Handle {
                target: None,
                dir: true,
            }) => {}
            _ => return Err(Fail::Errno(libc::EBADF)),
        }
        let cap = usize::try_from(r.size.min(self.share.options().max_read)).unwrap_or(0);
        let mut out = Listing::new(cap, plus);
        out.volatile = true;
        let dots: [(&[u8], u64); 2] = [(b".", AFTER_DOT), (b"..", AFTER_DOTDOT)];
        for (name, cookie) in dots {
            if r.offset < cookie
                && !self.push_entry(&mut out, name, ROOT_INO, DT_DIR, cookie, Child::None)
            {
                return send_bytes(sink, h.unique, &[&out.buf]);
            }
        }
        for img in self.share.images() {
            let cookie = img.serial().saturating_add(AFTER_DOTDOT);
            if cookie <= r.offset {
                continue;
            }
            let Some(name) = img.name() else { continue };
            let ino = img.st_ino(img.root().nid);
            let child = if plus {
                Child::Held(Target::new(Arc::clone(&img), Arc::clone(img.root())))
            } else {
                Child::None
            };
            if !self.push_entry(&mut out, name.as_bytes(), ino, DT_DIR, cookie, child) {
                break;
            }
        }
        send_bytes(sink, h.unique, &[&out.buf])
    }
}
