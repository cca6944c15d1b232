//! Dispatcher tests over the built-in images, through [`VecSink`].
#![allow(clippy::arithmetic_side_effects)]

use std::sync::Arc;

use zerocopy::{FromBytes, IntoBytes};

use super::abi::{self, *};
use super::fuzzing::{fuzz_dispatch, fuzz_seeds};
use super::testutil::*;
use super::{CachePolicy, RepliesOnly, Session, Share, ShareOptions, VecSink};

/// A session over `img` that sends nothing but replies.
fn session(img: Arc<crate::erofs::Image>, opts: ShareOptions) -> Session {
    let share = Share::new(img, opts).unwrap();
    Session::new(Arc::new(share), Arc::new(RepliesOnly))
}

pub(super) struct Fx {
    pub(super) srv: Session,
    pub(super) sink: VecSink,
    pub(super) unique: u64,
}

impl Fx {
    fn new(opts: ShareOptions) -> Self {
        let img = memory_image(TINY_IMAGE).unwrap();
        Self {
            srv: session(img, opts),
            sink: VecSink::new(),
            unique: 100,
        }
    }

    /// A server after INIT with everything offered, caching `cache`.
    fn ready(cache: CachePolicy) -> Self {
        let mut fx = Self::new(ShareOptions {
            cache,
            ..ShareOptions::default()
        });
        let no_zero_open = KERNEL_FLAGS & !(abi::NO_OPEN_SUPPORT | abi::NO_OPENDIR_SUPPORT);
        let (h, _) = fx.raw(&init_request(1, no_zero_open));
        assert_eq!(h.error, 0);
        fx
    }

    /// Sends raw bytes; returns the reply (panics if none).
    pub(super) fn raw(&mut self, req: &[u8]) -> (OutHeader, Vec<u8>) {
        let before = self.sink.replies.len();
        self.srv.handle(req, &mut self.sink).unwrap();
        assert_eq!(self.sink.replies.len(), before + 1, "no reply");
        let r = self.sink.replies.last().unwrap();
        let (h, body) = split_reply(r).unwrap();
        assert_eq!(h.len as usize, r.len(), "header len");
        (h, body.to_vec())
    }

    pub(super) fn call(
        &mut self,
        opcode: u32,
        nodeid: u64,
        args: &[&[u8]],
    ) -> Result<Vec<u8>, i32> {
        self.unique += 1;
        let (h, body) = self.raw(&request(opcode, nodeid, self.unique, args));
        assert_eq!(h.unique, self.unique);
        if h.error == 0 {
            Ok(body)
        } else {
            assert!(body.is_empty());
            Err(-h.error)
        }
    }

    pub(super) fn no_reply(&mut self, opcode: u32, nodeid: u64, args: &[&[u8]]) {
        let before = self.sink.replies.len();
        self.srv
            .handle(&request(opcode, nodeid, 9, args), &mut self.sink)
            .unwrap();
        assert_eq!(self.sink.replies.len(), before, "unexpected reply");
    }

    pub(super) fn lookup(&mut self, dir: u64, name: &str) -> Result<EntryOut, i32> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        let b = self.call(LOOKUP, dir, &[&n])?;
        Ok(EntryOut::read_from_bytes(&b).unwrap())
    }

    pub(super) fn open(&mut self, node: u64, dir: bool) -> Result<OpenOut, i32> {
        let o = OpenIn::default();
        let b = self.call(if dir { OPENDIR } else { OPEN }, node, &[o.as_bytes()])?;
        Ok(OpenOut::read_from_bytes(&b).unwrap())
    }

    pub(super) fn read(
        &mut self,
        node: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, i32> {
        let r = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        self.call(READ, node, &[r.as_bytes()])
    }
}

fn getxattr_in(size: u32) -> Vec<u8> {
    GetxattrIn { size, padding: 0 }.as_bytes().to_vec()
}

#[test]
fn test_requests_before_init_get_eio() {
    let mut fx = Fx::new(ShareOptions::default());
    for op in [LOOKUP, GETATTR, READ, STATFS, 9999] {
        assert_eq!(fx.call(op, 1, &[&[0u8; 64]]), Err(libc::EIO), "opcode {op}");
    }
    assert!(!fx.srv.initialized());
}

#[test]
fn test_init_negotiates_big_reads_readdirplus_and_flags2() {
    let mut fx = Fx::new(ShareOptions::default());
    let (h, body) = fx.raw(&init_request(5, KERNEL_FLAGS));
    assert_eq!((h.error, h.unique), (0, 5));
    let out = InitOut::read_from_bytes(&body).unwrap();
    assert_eq!((out.major, out.minor), (7, KERNEL_MINOR_VERSION));
    assert_eq!(out.max_pages, 256);
    let flags = u64::from(out.flags) | (u64::from(out.flags2) << 32);
    for f in [
        MAX_PAGES,
        DO_READDIRPLUS,
        ASYNC_READ,
        PARALLEL_DIROPS,
        INIT_EXT,
        POSIX_ACL,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x}");
    }
    // Support bits are not echoed, nothing unasked is set, no DAX; with
    // cached attributes (the default) every READDIR is a READDIRPLUS.
    assert_eq!(
        flags & (NO_OPEN_SUPPORT | WRITEBACK_CACHE | HAS_INODE_DAX | READDIRPLUS_AUTO),
        0
    );
    assert_eq!(out.map_alignment, 0);
    // A second INIT is refused.
    assert_eq!(fx.raw(&init_request(6, KERNEL_FLAGS)).0.error, -libc::EIO);
}

#[test]
fn test_init_version_table() {
    let cases: &[(&str, u32, u32, i32, Option<u32>)] = &[
        ("old major", 6, 40, libc::EPROTO, None),
        ("too old minor", 7, 30, libc::EPROTO, None),
        ("7.31", 7, 31, 0, Some(31)),
        ("7.36", 7, 36, 0, Some(36)),
        ("newer minor", 7, 99, 0, Some(KERNEL_MINOR_VERSION)),
    ];
    for (name, major, minor, err, want_minor) in cases {
        let mut fx = Fx::new(ShareOptions::default());
        let init = InitIn {
            major: *major,
            minor: *minor,
            flags: MAX_PAGES as u32,
            ..Default::default()
        };
        let (h, body) = fx.raw(&request(INIT, 0, 1, &[&init.as_bytes()[..16]]));
        assert_eq!(-h.error, *err, "{name}");
        if let Some(m) = want_minor {
            assert_eq!(InitOut::read_from_bytes(&body).unwrap().minor, *m, "{name}");
        }
        assert_eq!(fx.srv.initialized(), want_minor.is_some(), "{name}");
    }
    // A newer major: we answer with ours and wait for another INIT.
    let mut fx = Fx::new(ShareOptions::default());
    let init = InitIn {
        major: 8,
        minor: 0,
        ..Default::default()
    };
    let (h, body) = fx.raw(&request(INIT, 0, 1, &[init.as_bytes()]));
    assert_eq!(h.error, 0);
    assert_eq!(InitOut::read_from_bytes(&body).unwrap().major, 7);
    assert!(!fx.srv.initialized());
}

#[test]
fn test_malformed_requests_get_error_replies() {
    let mut fx = Fx::ready(CachePolicy::Always);
    let good = request(GETATTR, 1, 42, &[&[0u8; 16]]);
    let mut long_len = good.clone();
    long_len[0..4].copy_from_slice(&4096u32.to_ne_bytes());
    let mut ext = good.clone();
    ext[36..38].copy_from_slice(&100u16.to_ne_bytes());
    let no_nul = request(LOOKUP, 1, 42, &[b"hello"]);
    let read_in = |size: u32| {
        ReadIn {
            fh: 0,
            offset: 0,
            size,
            ..Default::default()
        }
        .as_bytes()
        .to_vec()
    };
    let huge_read = request(READ, 1, 42, &[&read_in(u32::MAX)]);
    let over_max = request(READ, 1, 42, &[&read_in(DEFAULT_MAX_READ_TEST + 1)]);
    let huge_readdir = request(READDIR, 1, 42, &[&read_in(u32::MAX)]);
    let cases: &[(&str, &[u8], u64, i32)] = &[
        ("empty", &[], 0, libc::EINVAL),
        ("truncated header, no unique", &good[..12], 0, libc::EINVAL),
        ("truncated header", &good[..30], 42, libc::EINVAL),
        ("len beyond buffer", &long_len, 42, libc::EINVAL),
        ("extensions beyond args", &ext, 42, libc::EINVAL),
        ("getattr without args", &good[..40], 42, libc::EINVAL),
        ("name without NUL", &no_nul, 42, libc::EINVAL),
        ("huge read", &huge_read, 42, libc::EINVAL),
        ("read over max_read", &over_max, 42, libc::EINVAL),
        ("readdir without handle", &huge_readdir, 42, libc::EBADF),
    ];
    for (name, req, unique, errno) in cases {
        let (h, body) = fx.raw(req);
        assert_eq!((h.unique, -h.error), (*unique, *errno), "{name}");
        assert!(body.is_empty(), "{name}");
    }
}

const DEFAULT_MAX_READ_TEST: u32 = super::DEFAULT_MAX_READ;

#[test]
fn test_opcode_table() {
    let mut fx = Fx::ready(CachePolicy::Always);
    let hello = fx.lookup(1, "hello").unwrap().nodeid;
    let cases: &[(&str, u32, u64, i32)] = &[
        ("unknown", 9999, 1, libc::ENOSYS),
        ("cuse init", 4096, 1, libc::ENOSYS),
        ("getlk", GETLK, hello, libc::ENOSYS),
        ("ioctl", IOCTL, hello, libc::ENOSYS),
        ("setupmapping", SETUPMAPPING, hello, libc::ENOSYS),
        ("setattr", SETATTR, hello, libc::EROFS),
        ("write", WRITE, hello, libc::EROFS),
        ("mkdir", MKDIR, 1, libc::EROFS),
        ("unlink", UNLINK, 1, libc::EROFS),
        ("create", CREATE, 1, libc::EROFS),
        ("setxattr", SETXATTR, hello, libc::EROFS),
        ("removexattr", REMOVEXATTR, hello, libc::EROFS),
        ("rename2", RENAME2, 1, libc::EROFS),
        ("fallocate", FALLOCATE, hello, libc::EROFS),
        ("copy_file_range", COPY_FILE_RANGE, hello, libc::EROFS),
        ("tmpfile", TMPFILE, 1, libc::EROFS),
        ("getattr of unknown node", GETATTR, 123_456, libc::ESTALE),
        ("getattr of node 0", GETATTR, 0, libc::ESTALE),
    ];
    for (name, op, node, errno) in cases {
        assert_eq!(fx.call(*op, *node, &[&[0u8; 64]]), Err(*errno), "{name}");
    }
    for op in [FSYNC, FSYNCDIR, SYNCFS] {
        assert_eq!(fx.call(op, hello, &[&[0u8; 16]]), Ok(vec![]), "opcode {op}");
    }
    fx.no_reply(INTERRUPT, 0, &[&7u64.to_ne_bytes()]);
    fx.no_reply(NOTIFY_REPLY, 0, &[]);
}

#[test]
fn test_lookup_counts_and_forget() {
    let mut fx = Fx::ready(CachePolicy::Always);
    let e = fx.lookup(1, "hello").unwrap();
    assert_eq!(e.attr.size, 12);
    assert_eq!(e.attr.mode, 0o100644);
    assert_eq!(e.attr.mtime, 1_700_000_000);
    assert!(e.nodeid >= 2, "never the root id");
    assert_eq!(e.entry_valid, super::LONG_TIMEOUT_SECS);
    assert_eq!(fx.lookup(1, "hello").unwrap().nodeid, e.nodeid);
    assert_eq!(fx.srv.lookup_count(e.nodeid), 2);
    // The inode number is the nid, as the kernel reports it.
    assert_eq!(e.attr.ino + 2, e.nodeid);
    fx.no_reply(FORGET, e.nodeid, &[ForgetIn { nlookup: 1 }.as_bytes()]);
    assert_eq!(fx.srv.lookup_count(e.nodeid), 1);
    assert!(fx.call(GETATTR, e.nodeid, &[&[0u8; 16]]).is_ok());
    let dir = fx.lookup(1, "dir").unwrap();
    let inner = fx.lookup(dir.nodeid, "inner").unwrap();
    let mut batch = BatchForgetIn { count: 3, dummy: 0 }.as_bytes().to_vec();
    for (id, n) in [(e.nodeid, 1), (dir.nodeid, 5), (inner.nodeid, 1)] {
        batch.extend_from_slice(
            ForgetOne {
                nodeid: id,
                nlookup: n,
            }
            .as_bytes(),
        );
    }
    fx.no_reply(BATCH_FORGET, 0, &[&batch]);
    assert_eq!(fx.srv.node_count(), 0);
    assert_eq!(fx.call(GETATTR, e.nodeid, &[&[0u8; 16]]), Err(libc::ESTALE));
    // The root is never forgotten.
    fx.no_reply(FORGET, 1, &[ForgetIn { nlookup: 100 }.as_bytes()]);
    assert!(fx.call(GETATTR, 1, &[&[0u8; 16]]).is_ok());
}

#[test]
fn test_lookup_misses() {
    let mut always = Fx::ready(CachePolicy::Always);
    let neg = always.lookup(1, "nope").unwrap();
    assert_eq!((neg.nodeid, neg.entry_valid), (0, super::LONG_TIMEOUT_SECS));
    let mut never = Fx::ready(CachePolicy::Never);
    assert_eq!(never.lookup(1, "nope"), Err(libc::ENOENT));
    let hello = never.lookup(1, "hello").unwrap();
    assert_eq!((hello.entry_valid, hello.attr_valid), (0, 0));
    assert_eq!(never.lookup(hello.nodeid, "x"), Err(libc::ENOTDIR));
    let long = "a".repeat(300);
    assert_eq!(never.lookup(1, &long), Err(libc::ENAMETOOLONG));
    assert_eq!(never.lookup(1, ""), Err(libc::ENOENT));
}

#[test]
fn test_read_matches_image() {
    for (image, chunk) in [(TINY_IMAGE, 0), (TINY_IMAGE, 1000), (TINY_LZ4_IMAGE, 4096)] {
        let img = memory_image(image).unwrap();
        let mut fx = Fx {
            srv: session(Arc::clone(&img), ShareOptions::default()),
            sink: VecSink {
                replies: vec![],
                chunk,
            },
            unique: 1,
        };
        fx.raw(&init_request(
            1,
            KERNEL_FLAGS & !(NO_OPEN_SUPPORT | NO_OPENDIR_SUPPORT),
        ));
        let e = fx.lookup(1, "big").unwrap();
        let fh = fx.open(e.nodeid, false).unwrap().fh;
        let inode = img.inode(e.attr.ino).unwrap();
        let mut want = vec![0u8; 12300];
        img.read(&inode, 0, &mut want).unwrap();
        for (off, size) in [
            (0u64, 1 << 20),
            (1, 4096),
            (4095, 2),
            (12_000, 1000),
            (12_300, 10),
            (u64::MAX, 10),
        ] {
            let got = fx.read(e.nodeid, fh, off, size).unwrap();
            let start = (off as usize).min(want.len());
            let end = start.saturating_add(size as usize).min(want.len());
            assert_eq!(
                got,
                &want[start..end],
                "offset {off} size {size} chunk {chunk}"
            );
        }
        assert_eq!(fx.read(e.nodeid, fh + 10, 0, 10), Err(libc::EBADF));
        assert_eq!(
            fx.call(
                RELEASE,
                e.nodeid,
                &[ReleaseIn {
                    fh,
                    ..Default::default()
                }
                .as_bytes()]
            ),
            Ok(vec![])
        );
        assert_eq!(fx.read(e.nodeid, fh, 0, 10), Err(libc::EBADF));
        assert_eq!(fx.srv.handle_count(), 0);
    }
}

#[test]
fn test_open_flags_by_cache_policy() {
    let cases = [
        (
            CachePolicy::Never,
            FOPEN_DIRECT_IO | FOPEN_NOFLUSH,
            FOPEN_NOFLUSH,
        ),
        (CachePolicy::Auto, FOPEN_NOFLUSH, FOPEN_NOFLUSH),
        (
            CachePolicy::Always,
            FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR | FOPEN_NOFLUSH,
            FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR | FOPEN_NOFLUSH,
        ),
    ];
    for (cache, file_flags, dir_flags) in cases {
        let mut fx = Fx::ready(cache);
        let e = fx.lookup(1, "hello").unwrap();
        assert_eq!(
            fx.open(e.nodeid, false).unwrap().open_flags,
            file_flags,
            "{cache:?}"
        );
        assert_eq!(fx.open(1, true).unwrap().open_flags, dir_flags, "{cache:?}");
        assert_eq!(fx.open(1, false), Err(libc::EISDIR));
        assert_eq!(fx.open(e.nodeid, true), Err(libc::ENOTDIR));
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_TRUNC] {
            let o = OpenIn {
                flags: flags as u32,
                open_flags: 0,
            };
            assert_eq!(fx.call(OPEN, e.nodeid, &[o.as_bytes()]), Err(libc::EROFS));
        }
        // O_DIRECT openers get direct I/O under every policy.
        let o = OpenIn {
            flags: libc::O_DIRECT as u32,
            open_flags: 0,
        };
        let body = fx.call(OPEN, e.nodeid, &[o.as_bytes()]).unwrap();
        let out = OpenOut::read_from_bytes(&body).unwrap();
        assert_eq!(
            out.open_flags & FOPEN_DIRECT_IO,
            FOPEN_DIRECT_IO,
            "{cache:?}"
        );
        assert_eq!(out.open_flags & FOPEN_KEEP_CACHE, 0, "{cache:?}");
    }
}

#[test]
fn test_zero_message_open_when_kernel_supports_it() {
    let mut fx = Fx::new(ShareOptions::default());
    fx.raw(&init_request(1, KERNEL_FLAGS));
    let e = fx.lookup(1, "hello").unwrap();
    assert_eq!(fx.open(e.nodeid, false), Err(libc::ENOSYS));
    assert_eq!(fx.open(1, true), Err(libc::ENOSYS));
    assert_eq!(fx.read(e.nodeid, 0, 0, 100).unwrap(), b"hello world\n");
    assert_eq!(fx.call(FLUSH, e.nodeid, &[&[0u8; 24]]), Err(libc::ENOSYS));
    // A kernel with zero-message opens for files only (7.23..7.28) still
    // gets real directory handles.
    let mut fx = Fx::new(ShareOptions::default());
    fx.raw(&init_request(1, KERNEL_FLAGS & !NO_OPENDIR_SUPPORT));
    let e = fx.lookup(1, "hello").unwrap();
    assert_eq!(fx.open(e.nodeid, false), Err(libc::ENOSYS));
    let dir = fx.open(1, true).unwrap();
    assert_ne!(dir.fh, 0);
    let r = ReadIn {
        fh: 0,
        size: 4096,
        ..Default::default()
    };
    assert_eq!(fx.call(READDIR, 1, &[r.as_bytes()]), Err(libc::EBADF));
}

#[test]
fn test_node_table_is_bounded() {
    // Arrange: room for two nodes.
    let mut fx = Fx::new(ShareOptions {
        max_nodes: 2,
        ..ShareOptions::default()
    });
    fx.raw(&init_request(1, 0));
    let hello = fx.lookup(1, "hello").unwrap();
    fx.lookup(1, "big").unwrap();
    // Act + assert: a third inode is ENFILE; held ones still look up.
    assert_eq!(fx.lookup(1, "link").map(|e| e.nodeid), Err(libc::ENFILE));
    assert_eq!(fx.lookup(1, "hello").map(|e| e.nodeid), Ok(hello.nodeid));
    // Forgetting one (both its lookups) makes room.
    fx.no_reply(FORGET, hello.nodeid, &[ForgetIn { nlookup: 2 }.as_bytes()]);
    assert!(fx.lookup(1, "link").is_ok());
    assert_eq!(fx.srv.node_count(), 2);
}

#[test]
fn test_handle_table_is_bounded() {
    let mut fx = Fx::new(ShareOptions {
        max_handles: 2,
        ..ShareOptions::default()
    });
    fx.raw(&init_request(1, 0));
    let e = fx.lookup(1, "hello").unwrap();
    let a = fx.open(e.nodeid, false).unwrap().fh;
    fx.open(1, true).unwrap();
    assert_eq!(fx.open(e.nodeid, false), Err(libc::ENFILE));
    fx.call(
        RELEASE,
        e.nodeid,
        &[ReleaseIn {
            fh: a,
            ..Default::default()
        }
        .as_bytes()],
    )
    .unwrap();
    assert!(fx.open(e.nodeid, false).is_ok());
}

pub(super) fn parse_dirents(mut b: &[u8], plus: bool) -> Vec<(String, u64, EntryOut)> {
    let mut out = vec![];
    while !b.is_empty() {
        let (entry, rest) = if plus {
            let (d, r) = Direntplus::read_from_prefix(b).unwrap();
            (d, r)
        } else {
            let (d, r) = Dirent::read_from_prefix(b).unwrap();
            (
                Direntplus {
                    entry_out: EntryOut::default(),
                    dirent: d,
                },
                r,
            )
        };
        let n = entry.dirent.namelen as usize;
        let name = String::from_utf8(rest[..n].to_vec()).unwrap();
        out.push((name, entry.dirent.off, entry.entry_out));
        let rec = abi::dirent_align(b.len() - rest.len() + n).unwrap();
        b = &b[rec.min(b.len())..];
    }
    out
}

#[test]
fn test_readdir_lists_and_resumes() {
    for plus in [false, true] {
        let mut fx = Fx::ready(CachePolicy::Auto);
        let fh = fx.open(1, true).unwrap().fh;
        let op = if plus { READDIRPLUS } else { READDIR };
        let mut names = vec![];
        let mut cookie = 0;
        // A buffer that holds one or two entries at a time.
        loop {
            let r = ReadIn {
                fh,
                offset: cookie,
                size: if plus { 200 } else { 40 },
                ..Default::default()
            };
            let b = fx.call(op, 1, &[r.as_bytes()]).unwrap();
            let ents = parse_dirents(&b, plus);
            if ents.is_empty() {
                break;
            }
            for (name, off, entry) in ents {
                if plus {
                    let dots = name == "." || name == "..";
                    assert_eq!(entry.nodeid == 0, dots, "{name}");
                    if !dots {
                        assert_eq!(fx.srv.lookup_count(entry.nodeid), 1, "{name}");
                    }
                }
                names.push(name);
                cookie = off;
            }
        }
        assert_eq!(
            names,
            [".", "..", "big", "dir", "empty", "hello", "link"],
            "plus={plus}"
        );
    }
}

#[test]
fn test_xattr_size_probe_erange_enodata() {
    let mut fx = Fx::ready(CachePolicy::Always);
    let e = fx.lookup(1, "hello").unwrap().nodeid;
    let name = b"user.test\0";
    let probe = fx.call(GETXATTR, e, &[&getxattr_in(0), name]).unwrap();
    assert_eq!(GetxattrOut::read_from_bytes(&probe).unwrap().size, 5);
    assert_eq!(
        fx.call(GETXATTR, e, &[&getxattr_in(4), name]),
        Err(libc::ERANGE)
    );
    assert_eq!(
        fx.call(GETXATTR, e, &[&getxattr_in(5), name]).unwrap(),
        b"value"
    );
    assert_eq!(
        fx.call(GETXATTR, e, &[&getxattr_in(u32::MAX), name])
            .unwrap(),
        b"value"
    );
    assert_eq!(
        fx.call(GETXATTR, e, &[&getxattr_in(100), b"user.nope\0"]),
        Err(libc::ENODATA)
    );
    assert_eq!(
        fx.call(
            GETXATTR,
            e,
            &[&getxattr_in(100), b"system.posix_acl_access\0"]
        ),
        Err(libc::ENODATA)
    );
    // Names the kernel's EROFS has no handler for, or a bare prefix: the
    // kernel's errnos (EOPNOTSUPP, EINVAL), not ENODATA.
    for (name, want) in [
        (&b"foo.bar\0"[..], libc::EOPNOTSUPP),
        (b"system.foo\0", libc::EOPNOTSUPP),
        (b"user\0", libc::EOPNOTSUPP),
        (b"userx.test\0", libc::EOPNOTSUPP),
        (b"user.\0", libc::EINVAL),
        (b"trusted.\0", libc::EINVAL),
        (b"security.\0", libc::EINVAL),
        (b"security.nope\0", libc::ENODATA),
        (b"system.posix_acl_default\0", libc::ENODATA),
    ] {
        assert_eq!(
            fx.call(GETXATTR, e, &[&getxattr_in(100), name]),
            Err(want),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    let list = fx.call(LISTXATTR, e, &[&getxattr_in(1000)]).unwrap();
    assert_eq!(list, b"user.test\0trusted.secret\0");
    let probe = fx.call(LISTXATTR, e, &[&getxattr_in(0)]).unwrap();
    assert_eq!(GetxattrOut::read_from_bytes(&probe).unwrap().size, 25);
    assert_eq!(fx.call(LISTXATTR, e, &[&getxattr_in(3)]), Err(libc::ERANGE));
    // Not root: trusted.* is hidden, as the kernel hides it.
    let mut req = request(LISTXATTR, e, 7, &[&getxattr_in(1000)]);
    req[24..28].copy_from_slice(&1000u32.to_ne_bytes());
    let (h, body) = fx.raw(&req);
    assert_eq!((h.error, body.as_slice()), (0, &b"user.test\0"[..]));
}

#[test]
fn test_readlink_statfs_access_lseek() {
    let mut fx = Fx::ready(CachePolicy::Always);
    let link = fx.lookup(1, "link").unwrap().nodeid;
    assert_eq!(fx.call(READLINK, link, &[]).unwrap(), b"hello");
    assert_eq!(fx.call(READLINK, 1, &[]), Err(libc::EINVAL));
    let st = StatfsOut::read_from_bytes(&fx.call(STATFS, 1, &[]).unwrap()).unwrap();
    assert_eq!((st.st.bsize, st.st.blocks, st.st.bfree), (4096, 4, 0));
    assert_eq!(st.st.namelen, 255);
    let acc = |mask: u32| AccessIn { mask, padding: 0 }.as_bytes().to_vec();
    assert_eq!(fx.call(ACCESS, 1, &[&acc(4)]), Ok(vec![]));
    assert_eq!(fx.call(ACCESS, 1, &[&acc(2)]), Err(libc::EROFS));
    let big = fx.lookup(1, "big").unwrap().nodeid;
    let seek = |fx: &mut Fx, offset: u64, whence: i32| {
        let l = LseekIn {
            fh: 0,
            offset,
            whence: whence as u32,
            padding: 0,
        };
        fx.call(LSEEK, big, &[l.as_bytes()])
            .map(|b| LseekOut::read_from_bytes(&b).unwrap().offset)
    };
    assert_eq!(seek(&mut fx, 100, libc::SEEK_DATA), Ok(100));
    assert_eq!(seek(&mut fx, 100, libc::SEEK_HOLE), Ok(12_300));
    assert_eq!(seek(&mut fx, 12_300, libc::SEEK_DATA), Err(libc::ENXIO));
    assert_eq!(seek(&mut fx, u64::MAX, libc::SEEK_HOLE), Err(libc::ENXIO));
    assert_eq!(seek(&mut fx, 0, libc::SEEK_SET), Err(libc::EINVAL));
}

#[test]
fn test_statx_and_destroy() {
    let mut fx = Fx::ready(CachePolicy::Always);
    let e = fx.lookup(1, "hello").unwrap();
    let sx = StatxOut::read_from_bytes(&fx.call(STATX, e.nodeid, &[&[0u8; 24]]).unwrap()).unwrap();
    assert_eq!(sx.stat.mask, STATX_BASIC_STATS);
    assert_eq!((sx.stat.size, sx.stat.ino), (12, e.attr.ino));
    assert_eq!(sx.stat.mtime.tv_sec, 1_700_000_000);
    assert_eq!(fx.call(DESTROY, 0, &[]), Ok(vec![]));
    assert!(!fx.srv.initialized());
    assert_eq!(fx.srv.node_count(), 0);
    assert_eq!(fx.call(GETATTR, 1, &[&[0u8; 16]]), Err(libc::EIO));
    // A new session may start (a rebooted guest).
    assert_eq!(fx.raw(&init_request(1, KERNEL_FLAGS)).0.error, 0);
}

#[test]
fn test_fuzz_harness_runs_seeds_and_noise() {
    let seeds = fuzz_seeds();
    assert_eq!(seeds.len(), 3);
    // Each seed is a working session: all but the deliberate errors
    // (MKDIR, the FLUSH of zero-message opens) succeed.
    let wants = [8, 10, 7];
    for (s, want) in seeds.iter().zip(wants) {
        assert_eq!(fuzz_dispatch(s), want);
    }
    // Seeds with every byte flipped in turn, and some pseudo-random noise.
    for s in &seeds {
        for i in 0..s.len() {
            let mut m = s.clone();
            m[i] ^= 0xff;
            fuzz_dispatch(&m);
        }
    }
    let mut x = 0x1234_5678_9abc_def0u64;
    for _ in 0..200 {
        let data: Vec<u8> = (0..600)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fuzz_dispatch(&data);
    }
    if let Some(dir) = std::env::var_os("EROFS_WRITE_FUZZ_SEEDS") {
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}")), s).unwrap();
        }
    }
}

#[test]
fn test_init_readdirplus_auto_only_without_long_caching() {
    for (cache, auto) in [
        (CachePolicy::Always, false),
        (CachePolicy::Auto, true),
        (CachePolicy::Never, true),
    ] {
        let mut fx = Fx::new(ShareOptions {
            cache,
            ..ShareOptions::default()
        });
        let (h, body) = fx.raw(&init_request(5, KERNEL_FLAGS));
        assert_eq!(h.error, 0);
        let out = InitOut::read_from_bytes(&body).unwrap();
        let flags = u64::from(out.flags) | (u64::from(out.flags2) << 32);
        assert_ne!(flags & DO_READDIRPLUS, 0, "{cache:?}");
        assert_eq!(flags & READDIRPLUS_AUTO != 0, auto, "{cache:?}");
    }
}

/// Opens the tiny image after failing `fails` times (ENODEV).
#[derive(Debug)]
struct LateImage {
    fails: std::sync::atomic::AtomicU32,
}

impl super::ImageProvider for LateImage {
    fn describe(&self) -> String {
        "late image".into()
    }

    fn open(&self) -> Result<crate::erofs::Image, super::OpenError> {
        use std::sync::atomic::Ordering;
        if self
            .fails
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(super::OpenError::Unavailable(std::io::Error::other(
                "not there yet",
            )));
        }
        let img = memory_image(TINY_IMAGE).unwrap();
        Ok(Arc::try_unwrap(img).unwrap())
    }
}

#[test]
fn test_image_opened_at_init_refuses_until_it_opens() {
    let provider = LateImage {
        fails: std::sync::atomic::AtomicU32::new(2),
    };
    let share = Share::opened_at_init(Box::new(provider), ShareOptions::default());
    let mut fx = Fx {
        srv: Session::new(Arc::new(share), Arc::new(RepliesOnly)),
        sink: VecSink::new(),
        unique: 1,
    };
    assert_eq!(fx.call(GETATTR, 1, &[&[0; 16]]), Err(libc::EIO));
    for _ in 0..2 {
        let (h, _) = fx.raw(&init_request(1, KERNEL_FLAGS));
        assert_eq!(h.error, -libc::ENODEV);
        assert!(!fx.srv.initialized());
        assert!(fx.srv.share().root_image().is_none());
    }
    // Requests that want no reply get none, before INIT as after.
    fx.no_reply(FORGET, 5, &[&[1, 0, 0, 0, 0, 0, 0, 0]]);
    let (h, _) = fx.raw(&init_request(1, KERNEL_FLAGS));
    assert_eq!(h.error, 0);
    assert!(fx.srv.share().root_image().is_some());
    let attr = fx.call(GETATTR, 1, &[&[0; 16]]).unwrap();
    let attr = AttrOut::read_from_bytes(&attr).unwrap();
    assert_eq!(attr.attr.mode & libc::S_IFMT, libc::S_IFDIR);
}
