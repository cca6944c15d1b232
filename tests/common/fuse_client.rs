//! A FUSE client over the test frontend's virtqueues: builds requests the
//! way the Linux guest driver does, checks the reply framing, and walks the
//! whole tree into a manifest.
//!
//! The wire structures are written out here from `<linux/fuse.h>` rather
//! than taken from the crate, so that the tests check the server's
//! encoding instead of sharing it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::frontend::Frontend;
use super::manifest::{escape_bytes, hex, Entry};

pub const FUSE_LOOKUP: u32 = 1;
pub const FUSE_FORGET: u32 = 2;
pub const FUSE_GETATTR: u32 = 3;
pub const FUSE_READLINK: u32 = 5;
pub const FUSE_OPEN: u32 = 14;
pub const FUSE_READ: u32 = 15;
pub const FUSE_RELEASE: u32 = 18;
pub const FUSE_GETXATTR: u32 = 22;
pub const FUSE_LISTXATTR: u32 = 23;
pub const FUSE_INIT: u32 = 26;
pub const FUSE_OPENDIR: u32 = 27;
pub const FUSE_RELEASEDIR: u32 = 29;
pub const FUSE_BATCH_FORGET: u32 = 42;
pub const FUSE_READDIRPLUS: u32 = 44;
pub const ROOT_ID: u64 = 1;

/// The high-priority queue and the first request queue.
pub const HIPRIO: usize = 0;
pub const REQUEST_QUEUE: usize = 1;

// The wire structs are the daemon's own (uapi `fuse.h`); their layout is
// pinned by the size and offset tests in `src/fuse/abi.rs`.
pub use erofs_virtiofsd::fuse::abi::{
    Attr, AttrOut, Dirent, EntryOut, ForgetOne, GetattrIn, GetxattrIn, GetxattrOut, InHeader,
    InitIn, InitOut, OpenIn, OpenOut, OutHeader, ReadIn, ReleaseIn,
};

/// INIT flags the guest driver sends (a subset of Linux 6.x's).
pub const INIT_FLAGS: u32 = (1 << 0) // ASYNC_READ
    | (1 << 13) // DO_READDIRPLUS
    | (1 << 14) // READDIRPLUS_AUTO
    | (1 << 18) // PARALLEL_DIROPS
    | (1 << 22) // MAX_PAGES
    | (1 << 30); // INIT_EXT

/// Builds one request: header (len filled in) + argument parts.
pub fn request(opcode: u32, unique: u64, nodeid: u64, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = 40 + parts.iter().map(|p| p.len()).sum::<usize>();
    let h = InHeader {
        len: len as u32,
        opcode,
        unique,
        nodeid,
        ..Default::default()
    };
    let mut v = h.as_bytes().to_vec();
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

/// Splits a reply into its header and payload, checking the framing:
/// `len` equals the bytes the device reported, `unique` matches, and an
/// error reply has no payload.
pub fn parse_reply(reply: &[u8], unique: u64) -> Result<Vec<u8>, i32> {
    let (h, payload) = OutHeader::read_from_prefix(reply)
        .unwrap_or_else(|_| panic!("reply of {} bytes has no header", reply.len()));
    assert_eq!(
        h.len as usize,
        reply.len(),
        "reply header len vs used length"
    );
    assert_eq!(h.unique, unique, "reply unique");
    if h.error != 0 {
        assert!(h.error < 0 && h.error > -4096, "error {}", h.error);
        assert!(payload.is_empty(), "error reply with a payload");
        return Err(-h.error);
    }
    Ok(payload.to_vec())
}

fn parse<T: FromBytes + KnownLayout + Immutable>(payload: &[u8], what: &str) -> T {
    T::read_from_bytes(payload)
        .unwrap_or_else(|_| panic!("{what} reply of {} bytes", payload.len()))
}

/// One READDIRPLUS entry.
#[derive(Clone, Debug)]
pub struct DirentPlus {
    pub entry: EntryOut,
    pub name: Vec<u8>,
    pub off: u64,
    pub typ: u32,
}

/// A FUSE session over a [`Frontend`].
#[derive(Debug)]
pub struct FuseClient {
    pub fe: Frontend,
    /// The queue requests go to (default: the first request queue).
    pub queue: usize,
    unique: u64,
    /// Largest READ/READDIR size used.
    pub chunk: u32,
    /// Lookups to forget, by node id.
    pub lookups: BTreeMap<u64, u64>,
}

impl FuseClient {
    /// Wraps a connected frontend (INIT not sent yet).
    pub fn new(fe: Frontend) -> Self {
        Self {
            fe,
            queue: REQUEST_QUEUE,
            unique: 0,
            chunk: 128 << 10,
            lookups: BTreeMap::new(),
        }
    }

    /// Sends one request on the request queue; returns the payload or the
    /// errno.
    pub fn call(
        &mut self,
        opcode: u32,
        nodeid: u64,
        args: &[&[u8]],
        reply_cap: usize,
    ) -> Result<Vec<u8>, i32> {
        self.unique += 2;
        let unique = self.unique;
        let req = request(opcode, unique, nodeid, args);
        let reply = self.fe.request(self.queue, &req, 16 + reply_cap);
        parse_reply(&reply, unique)
    }

    /// INIT as a 7.38 guest.
    pub fn init(&mut self) -> InitOut {
        let i = InitIn {
            major: 7,
            minor: 38,
            max_readahead: 128 << 10,
            flags: INIT_FLAGS,
            flags2: 0,
            ..Default::default()
        };
        let out = self
            .call(FUSE_INIT, 0, &[i.as_bytes()], 256)
            .unwrap_or_else(|e| panic!("INIT failed with errno {e}"));
        let mut buf = out.clone();
        buf.resize(64, 0);
        let o: InitOut = parse(&buf, "INIT");
        assert_eq!(o.major, 7, "INIT major");
        o
    }

    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<EntryOut, i32> {
        let mut n = name.to_vec();
        n.push(0);
        let out = self.call(FUSE_LOOKUP, parent, &[&n], 128)?;
        let e: EntryOut = parse(&out, "LOOKUP");
        if e.nodeid != 0 {
            *self.lookups.entry(e.nodeid).or_default() += 1;
        }
        Ok(e)
    }

    pub fn getattr(&mut self, nodeid: u64) -> Result<Attr, i32> {
        let g = GetattrIn::default();
        let out = self.call(FUSE_GETATTR, nodeid, &[g.as_bytes()], 104)?;
        Ok(parse::<AttrOut>(&out, "GETATTR").attr)
    }

    pub fn open(&mut self, nodeid: u64, dir: bool) -> Result<u64, i32> {
        let o = OpenIn {
            flags: libc::O_RDONLY as u32,
            open_flags: 0,
        };
        let op = if dir { FUSE_OPENDIR } else { FUSE_OPEN };
        let out = self.call(op, nodeid, &[o.as_bytes()], 16)?;
        Ok(parse::<OpenOut>(&out, "OPEN").fh)
    }

    pub fn release(&mut self, nodeid: u64, fh: u64, dir: bool) -> Result<(), i32> {
        let r = ReleaseIn {
            fh,
            ..Default::default()
        };
        let op = if dir { FUSE_RELEASEDIR } else { FUSE_RELEASE };
        let out = self.call(op, nodeid, &[r.as_bytes()], 0)?;
        assert!(out.is_empty());
        Ok(())
    }

    pub fn read(&mut self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
        let r = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        let out = self.call(FUSE_READ, nodeid, &[r.as_bytes()], size as usize)?;
        assert!(out.len() <= size as usize, "READ returned more than asked");
        Ok(out)
    }

    /// The whole content of a regular file.
    pub fn read_all(&mut self, nodeid: u64) -> Result<Vec<u8>, i32> {
        let fh = self.open(nodeid, false)?;
        let mut data = Vec::new();
        loop {
            let chunk = self.read(nodeid, fh, data.len() as u64, self.chunk)?;
            if chunk.is_empty() {
                break;
            }
            data.extend_from_slice(&chunk);
        }
        self.release(nodeid, fh, false)?;
        Ok(data)
    }

    pub fn readdirplus(
        &mut self,
        nodeid: u64,
        fh: u64,
        offset: u64,
    ) -> Result<Vec<DirentPlus>, i32> {
        let r = ReadIn {
            fh,
            offset,
            size: self.chunk,
            ..Default::default()
        };
        let out = self.call(
            FUSE_READDIRPLUS,
            nodeid,
            &[r.as_bytes()],
            self.chunk as usize,
        )?;
        let mut rest = &out[..];
        let mut v = Vec::new();
        while !rest.is_empty() {
            let (entry, after) = EntryOut::read_from_prefix(rest).expect("direntplus entry");
            let (d, after) = Dirent::read_from_prefix(after).expect("direntplus dirent");
            let namelen = d.namelen as usize;
            assert!(namelen > 0 && namelen <= 1024, "namelen {namelen}");
            let name = after[..namelen].to_vec();
            let padded = (24 + namelen + 7) & !7;
            rest = &after[padded - 24..];
            v.push(DirentPlus {
                entry,
                name,
                off: d.off,
                typ: d.typ,
            });
        }
        Ok(v)
    }

    /// Every entry of a directory but `.` and `..`.
    pub fn list_dir(&mut self, nodeid: u64) -> Result<Vec<DirentPlus>, i32> {
        let fh = self.open(nodeid, true)?;
        let mut all = Vec::new();
        let mut off = 0;
        loop {
            let batch = self.readdirplus(nodeid, fh, off)?;
            let Some(last) = batch.last() else { break };
            off = last.off;
            for d in batch {
                if d.name == b"." || d.name == b".." {
                    continue;
                }
                if d.entry.nodeid != 0 {
                    *self.lookups.entry(d.entry.nodeid).or_default() += 1;
                }
                all.push(d);
            }
        }
        self.release(nodeid, fh, true)?;
        Ok(all)
    }

    pub fn readlink(&mut self, nodeid: u64) -> Result<Vec<u8>, i32> {
        self.call(FUSE_READLINK, nodeid, &[], 4096)
    }

    pub fn listxattr(&mut self, nodeid: u64) -> Result<Vec<Vec<u8>>, i32> {
        let probe = GetxattrIn::default();
        let out = self.call(FUSE_LISTXATTR, nodeid, &[probe.as_bytes()], 8)?;
        let size = parse::<GetxattrOut>(&out, "LISTXATTR size").size;
        if size == 0 {
            return Ok(Vec::new());
        }
        let g = GetxattrIn { size, padding: 0 };
        let out = self.call(FUSE_LISTXATTR, nodeid, &[g.as_bytes()], size as usize)?;
        assert_eq!(out.len(), size as usize, "LISTXATTR size changed");
        assert_eq!(out.last(), Some(&0), "LISTXATTR list not NUL-terminated");
        Ok(out[..out.len() - 1]
            .split(|&b| b == 0)
            .map(<[u8]>::to_vec)
            .collect())
    }

    pub fn getxattr(&mut self, nodeid: u64, name: &[u8]) -> Result<Vec<u8>, i32> {
        let mut n = name.to_vec();
        n.push(0);
        let probe = GetxattrIn::default();
        let out = self.call(FUSE_GETXATTR, nodeid, &[probe.as_bytes(), &n], 8)?;
        let size = parse::<GetxattrOut>(&out, "GETXATTR size").size;
        if size == 0 {
            return Ok(Vec::new());
        }
        let g = GetxattrIn { size, padding: 0 };
        let out = self.call(FUSE_GETXATTR, nodeid, &[g.as_bytes(), &n], size as usize)?;
        assert_eq!(out.len(), size as usize, "GETXATTR size changed");
        Ok(out)
    }

    /// Forgets every lookup counted so far, with BATCH_FORGET on the
    /// high-priority queue (no reply: the chain comes back empty).
    pub fn forget_all(&mut self) {
        let all: Vec<ForgetOne> = std::mem::take(&mut self.lookups)
            .into_iter()
            .map(|(nodeid, nlookup)| ForgetOne { nodeid, nlookup })
            .collect();
        for batch in all.chunks(256) {
            let mut args = Vec::new();
            args.extend_from_slice(&(batch.len() as u32).to_le_bytes());
            args.extend_from_slice(&0u32.to_le_bytes());
            for f in batch {
                args.extend_from_slice(f.as_bytes());
            }
            self.unique += 2;
            let req = request(FUSE_BATCH_FORGET, self.unique, 0, &[&args]);
            let used = self.fe.send_no_reply(HIPRIO, &req);
            assert_eq!(used, 0, "BATCH_FORGET got a reply");
        }
    }
}

/// `major` and `minor` of a FUSE `rdev` (the kernel's `new_decode_dev`).
pub fn decode_rdev(rdev: u32) -> (u32, u32) {
    (
        (rdev & 0xfff00) >> 8,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "reg",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "lnk",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "sock",
        _ => panic!("unknown file type in mode {mode:o}"),
    }
}

/// The manifest entry of one node, as the kernel mount would show it.
fn entry_of(c: &mut FuseClient, nodeid: u64, raw_path: Vec<u8>, attr: &Attr) -> Entry {
    let shown = escape_bytes(&raw_path);
    let kind = kind_of(attr.mode);
    let mut f = Map::new();
    f.insert("path".into(), shown.clone().into());
    if std::str::from_utf8(&raw_path).is_err() {
        f.insert("path_hex".into(), hex(&raw_path).into());
    }
    f.insert("type".into(), kind.into());
    f.insert("mode".into(), attr.mode.into());
    f.insert("uid".into(), attr.uid.into());
    f.insert("gid".into(), attr.gid.into());
    f.insert("nlink".into(), attr.nlink.into());
    f.insert("size".into(), attr.size.into());
    f.insert("mtime".into(), (attr.mtime as i64).into());
    f.insert("mtime_nsec".into(), attr.mtimensec.into());
    match kind {
        "chr" | "blk" => {
            let (ma, mi) = decode_rdev(attr.rdev);
            f.insert("rdev_major".into(), ma.into());
            f.insert("rdev_minor".into(), mi.into());
        }
        "reg" => {
            let data = c
                .read_all(nodeid)
                .unwrap_or_else(|e| panic!("{shown}: read failed with errno {e}"));
            assert_eq!(data.len() as u64, attr.size, "{shown}: read length vs size");
            f.insert("sha256".into(), hex(&Sha256::digest(&data)).into());
        }
        "lnk" => {
            let t = c
                .readlink(nodeid)
                .unwrap_or_else(|e| panic!("{shown}: readlink failed with errno {e}"));
            f.insert("target".into(), escape_bytes(&t).into());
            if std::str::from_utf8(&t).is_err() {
                f.insert("target_hex".into(), hex(&t).into());
            }
        }
        _ => {}
    }
    let mut xattrs = Map::new();
    let names = c
        .listxattr(nodeid)
        .unwrap_or_else(|e| panic!("{shown}: listxattr failed with errno {e}"));
    for name in names {
        let v = c
            .getxattr(nodeid, &name)
            .unwrap_or_else(|e| panic!("{shown}: getxattr {name:?} failed with errno {e}"));
        xattrs.insert(escape_bytes(&name), Value::from(hex(&v)));
    }
    f.insert("xattrs".into(), Value::Object(xattrs));
    Entry {
        raw_path,
        fields: f,
    }
}

/// Walks the whole tree: READDIRPLUS for each directory, LOOKUP and
/// GETATTR of every entry (both must agree with READDIRPLUS), READ of every
/// regular file, READLINK, LISTXATTR/GETXATTR. Sorted by raw path.
pub fn walk(c: &mut FuseClient) -> Vec<Entry> {
    walk_from(c, ROOT_ID)
}

/// [`walk`] of the tree under node `top` (looked up already), with paths
/// from there: the manifest of an image served as a top-level directory.
pub fn walk_from(c: &mut FuseClient, top: u64) -> Vec<Entry> {
    let root_attr = c.getattr(top).expect("GETATTR of the top");
    let mut out = vec![entry_of(c, top, b"/".to_vec(), &root_attr)];
    let mut stack = vec![(top, b"/".to_vec())];
    while let Some((dir, dir_path)) = stack.pop() {
        let entries = c
            .list_dir(dir)
            .unwrap_or_else(|e| panic!("{}: readdirplus errno {e}", escape_bytes(&dir_path)));
        for d in entries {
            let mut path = dir_path.clone();
            if path != b"/" {
                path.push(b'/');
            }
            path.extend_from_slice(&d.name);
            let shown = escape_bytes(&path);
            let looked = c
                .lookup(dir, &d.name)
                .unwrap_or_else(|e| panic!("{shown}: lookup errno {e}"));
            assert_eq!(
                looked.nodeid, d.entry.nodeid,
                "{shown}: lookup vs readdirplus nodeid"
            );
            assert_eq!(
                looked.attr, d.entry.attr,
                "{shown}: lookup vs readdirplus attr"
            );
            let attr = c
                .getattr(looked.nodeid)
                .unwrap_or_else(|e| panic!("{shown}: getattr errno {e}"));
            assert_eq!(attr, looked.attr, "{shown}: getattr vs lookup attr");
            assert_eq!(
                d.typ,
                (attr.mode & libc::S_IFMT) >> 12,
                "{shown}: dirent type vs mode"
            );
            if attr.mode & libc::S_IFMT == libc::S_IFDIR {
                stack.push((looked.nodeid, path.clone()));
            }
            out.push(entry_of(c, looked.nodeid, path, &attr));
        }
    }
    out.sort_by(|a, b| a.raw_path.cmp(&b.raw_path));
    out
}
