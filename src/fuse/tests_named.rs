//! Dispatcher tests of a share of named images: the synthetic root, node
//! ids and inode numbers across images, images added and removed while a
//! connection holds their nodes.
#![allow(clippy::arithmetic_side_effects)]

use std::io;
use std::sync::{Arc, Mutex};

use zerocopy::{FromBytes, IntoBytes};

use super::abi::*;
use super::tests::{parse_dirents, Fx};
use super::testutil::*;
use super::{ImageMeta, Outbound, RepliesOnly, Session, Share, ShareError, ShareOptions, VecSink};
use super::{LONG_TIMEOUT_SECS, ROOT_INO};

/// Records the names it is told are gone.
#[derive(Debug, Default)]
struct Gone(Mutex<Vec<(u64, Vec<u8>)>>);

impl Outbound for Gone {
    fn inval_entry(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap().push((parent, name.to_vec()));
        Ok(())
    }
}

fn meta(domain: &str) -> ImageMeta {
    ImageMeta {
        source: format!("{domain}.erofs"),
        domain: Some(domain.into()),
        fingerprint_xattr: None,
    }
}

/// A share of `a` (TINY_IMAGE) and `b` (TINY_LZ4_IMAGE).
fn named_share() -> Arc<Share> {
    let share = Share::named(ShareOptions::default());
    share
        .add_image("a", memory_image(TINY_IMAGE).unwrap(), meta("d1"))
        .unwrap();
    share
        .add_image("b", memory_image(TINY_LZ4_IMAGE).unwrap(), meta("d2"))
        .unwrap();
    Arc::new(share)
}

/// A session after INIT, with everything offered (zero-message opens too).
fn ready(share: &Arc<Share>, out: Arc<dyn Outbound>) -> Fx {
    let mut fx = Fx {
        srv: Session::new(Arc::clone(share), out),
        sink: VecSink::new(),
        unique: 1,
    };
    let (h, _) = fx.raw(&init_request(1, KERNEL_FLAGS));
    assert_eq!(h.error, 0);
    fx
}

fn getattr(fx: &mut Fx, node: u64) -> Result<AttrOut, i32> {
    let b = fx.call(GETATTR, node, &[GetattrIn::default().as_bytes()])?;
    Ok(AttrOut::read_from_bytes(&b).unwrap())
}

fn list_root(fx: &mut Fx, fh: u64, offset: u64, plus: bool) -> Vec<(String, u64, EntryOut)> {
    let r = ReadIn {
        fh,
        offset,
        size: 4096,
        ..Default::default()
    };
    let op = if plus { READDIRPLUS } else { READDIR };
    let b = fx.call(op, ROOT_ID, &[r.as_bytes()]).unwrap();
    parse_dirents(&b, plus)
}

#[test]
fn test_root_is_an_uncached_read_only_directory_of_the_names() {
    let share = named_share();
    let mut fx = ready(&share, Arc::new(RepliesOnly));
    let root = getattr(&mut fx, ROOT_ID).unwrap();
    assert_eq!(root.attr.mode, libc::S_IFDIR | 0o555);
    assert_eq!((root.attr.ino, root.attr.nlink), (ROOT_INO, 4));
    assert_eq!((root.attr_valid, root.attr_valid_nsec), (0, 0));
    // No negative entry for a name that may come later.
    assert_eq!(fx.lookup(ROOT_ID, "c"), Err(libc::ENOENT));
    let a = fx.lookup(ROOT_ID, "a").unwrap();
    assert_eq!((a.entry_valid, a.entry_valid_nsec), (0, 0));
    assert_eq!(a.attr_valid, LONG_TIMEOUT_SECS);
    assert_eq!(a.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    // The root's listing is opened with a message and never cached.
    let o = fx.open(ROOT_ID, true).unwrap();
    assert_ne!(o.fh, 0);
    assert_eq!(o.open_flags & (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE), 0);
    for plus in [false, true] {
        let names: Vec<String> = list_root(&mut fx, o.fh, 0, plus)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, [".", "..", "a", "b"], "plus {plus}");
    }
    let ents = list_root(&mut fx, o.fh, 0, true);
    for (name, _, e) in &ents[2..] {
        assert_ne!(e.nodeid, 0, "{name}");
        assert_eq!(e.entry_valid, 0, "{name}");
    }
    // Directories inside an image are opened with a message too (a
    // zero-message opendir would cache every listing, the root's too).
    assert_ne!(fx.open(a.nodeid, true).unwrap().fh, 0);
    // Nothing can be written or opened as a file.
    let w = OpenIn {
        flags: libc::O_RDWR as u32,
        ..Default::default()
    };
    assert_eq!(fx.call(OPENDIR, ROOT_ID, &[w.as_bytes()]), Err(libc::EROFS));
    assert_eq!(fx.open(ROOT_ID, false), Err(libc::EISDIR));
    let acc = |mask| AccessIn { mask, padding: 0 };
    assert_eq!(
        fx.call(ACCESS, ROOT_ID, &[acc(2).as_bytes()]),
        Err(libc::EROFS)
    );
    assert!(fx.call(ACCESS, ROOT_ID, &[acc(5).as_bytes()]).is_ok());
    assert!(fx.call(STATFS, ROOT_ID, &[]).is_ok());
}

#[test]
fn test_inode_numbers_and_node_ids_are_unique_across_images() {
    let share = named_share();
    let mut fx = ready(&share, Arc::new(RepliesOnly));
    let a = fx.lookup(ROOT_ID, "a").unwrap();
    let b = fx.lookup(ROOT_ID, "b").unwrap();
    let ha = fx.lookup(a.nodeid, "hello").unwrap();
    let hb = fx.lookup(b.nodeid, "hello").unwrap();
    assert_ne!(ha.nodeid, hb.nodeid);
    assert_ne!(ha.attr.ino, hb.attr.ino);
    assert_ne!(ha.attr.ino >> 48, hb.attr.ino >> 48, "image slots on top");
    // Below the slot, the kernel's number (the nid: no metabox here).
    let img = share.image("a").unwrap();
    let (nid, _) = img.image().lookup(img.root(), b"hello").unwrap().unwrap();
    assert_eq!(ha.attr.ino & ((1 << 48) - 1), nid);
    assert_eq!(ha.attr.ino, img.st_ino(nid));
    // The same inode looked up again keeps its id.
    assert_eq!(fx.lookup(a.nodeid, "hello").unwrap().nodeid, ha.nodeid);
    assert_eq!(fx.srv.lookup_count(ha.nodeid), 2);
    // Each image reads as itself.
    let fa = fx.open(ha.nodeid, false);
    let data = match fa {
        Ok(o) => fx.read(ha.nodeid, o.fh, 0, 4096).unwrap(),
        // Zero-message opens: read by node.
        Err(libc::ENOSYS) => fx.read(ha.nodeid, 0, 0, 4096).unwrap(),
        Err(e) => panic!("open: {e}"),
    };
    let inode = img
        .image()
        .lookup(img.root(), b"hello")
        .unwrap()
        .map(|(nid, _)| img.image().inode(nid).unwrap())
        .unwrap();
    let mut want = vec![0; inode.size as usize];
    img.image().read(&inode, 0, &mut want).unwrap();
    assert_eq!(data, want);
}

#[test]
fn test_removed_image_is_gone_its_nodes_stale_its_open_files_readable() {
    let share = named_share();
    let gone = Arc::new(Gone::default());
    let mut fx = ready(&share, gone.clone());
    let a = fx.lookup(ROOT_ID, "a").unwrap();
    let big = fx.lookup(a.nodeid, "big").unwrap();
    let dir = fx.lookup(a.nodeid, "dir").unwrap();
    let before = fx.read(big.nodeid, 0, 0, 100).unwrap();
    // A handle on the directory, opened with a message.
    let dfh = fx.open(dir.nodeid, true).unwrap().fh;

    let removed = share.remove_image("a").unwrap();
    assert!(removed.image.is_removed());
    assert_eq!(removed.told, 1);
    assert_eq!(
        *gone.0.lock().unwrap(),
        [(ROOT_ID, b"a".to_vec())],
        "the connection was told"
    );
    assert_eq!(fx.lookup(ROOT_ID, "a"), Err(libc::ENOENT));
    assert_eq!(getattr(&mut fx, big.nodeid), Err(libc::ESTALE));
    assert_eq!(fx.lookup(a.nodeid, "hello"), Err(libc::ESTALE));
    assert_eq!(fx.open(dir.nodeid, true), Err(libc::ESTALE));
    // What is open keeps reading from the image.
    assert_eq!(fx.read(big.nodeid, 0, 0, 100).unwrap(), before);
    let r = ReadIn {
        fh: dfh,
        size: 4096,
        ..Default::default()
    };
    assert!(!fx
        .call(READDIR, dir.nodeid, &[r.as_bytes()])
        .unwrap()
        .is_empty());
    // The root lists what is left.
    let fh = fx.open(ROOT_ID, true).unwrap().fh;
    let names: Vec<String> = list_root(&mut fx, fh, 0, false)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, [".", "..", "b"]);
    assert_eq!(getattr(&mut fx, ROOT_ID).unwrap().attr.nlink, 3);

    // A new image under the old name: new ids, the old ones stay stale.
    share
        .add_image("a", memory_image(TINY_LZ4_IMAGE).unwrap(), meta("d1"))
        .unwrap();
    let a2 = fx.lookup(ROOT_ID, "a").unwrap();
    assert_ne!(a2.nodeid, a.nodeid);
    let big2 = fx.lookup(a2.nodeid, "big").unwrap();
    assert_ne!(big2.nodeid, big.nodeid);
    assert_eq!(getattr(&mut fx, big.nodeid), Err(libc::ESTALE));
    // Once the client forgets the old nodes, their ids mean nothing.
    let forget = ForgetIn { nlookup: 1 };
    fx.no_reply(FORGET, big.nodeid, &[forget.as_bytes()]);
    assert_eq!(fx.read(big.nodeid, 0, 0, 100), Err(libc::ESTALE));
    // The listing resumes after the images it already listed.
    let ents = list_root(&mut fx, fh, 0, false);
    let after_b = ents.iter().find(|e| e.0 == "b").unwrap().1;
    let rest: Vec<String> = list_root(&mut fx, fh, after_b, false)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(rest, ["a"]);
}

#[test]
fn test_add_and_remove_refuse_what_they_cannot_do() {
    let share = named_share();
    let img = || memory_image(TINY_IMAGE).unwrap();
    assert!(matches!(
        share.add_image("a", img(), ImageMeta::default()),
        Err(ShareError::Exists(n)) if n == "a"
    ));
    for bad in ["", ".", "..", "x/y", "nul\0"] {
        assert!(
            matches!(
                share.add_image(bad, img(), ImageMeta::default()),
                Err(ShareError::BadName(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        share.remove_image("zz"),
        Err(ShareError::NotFound(_))
    ));
    let single = Share::new(img(), ShareOptions::default()).unwrap();
    assert!(matches!(
        single.add_image("a", img(), ImageMeta::default()),
        Err(ShareError::NotNamed)
    ));
    assert!(matches!(
        single.remove_image("a"),
        Err(ShareError::NotNamed)
    ));
    // Carried through: the per-image record.
    let a = share.image("a").unwrap();
    assert_eq!(a.meta().domain.as_deref(), Some("d1"));
    assert_eq!(a.name(), Some("a"));
    let names: Vec<_> = share
        .images()
        .iter()
        .map(|i| i.name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn test_empty_named_share_serves_an_empty_root() {
    let share = Arc::new(Share::named(ShareOptions::default()));
    let mut fx = ready(&share, Arc::new(RepliesOnly));
    assert_eq!(getattr(&mut fx, ROOT_ID).unwrap().attr.nlink, 2);
    let fh = fx.open(ROOT_ID, true).unwrap().fh;
    assert_eq!(list_root(&mut fx, fh, 0, true).len(), 2);
    assert_eq!(fx.read(ROOT_ID, fh, 0, 10), Err(libc::EISDIR));
    // A handle of another node is not the root's.
    assert_eq!(list_root_err(&mut fx, 12345), libc::EBADF);
}

fn list_root_err(fx: &mut Fx, fh: u64) -> i32 {
    let r = ReadIn {
        fh,
        size: 4096,
        ..Default::default()
    };
    fx.call(READDIR, ROOT_ID, &[r.as_bytes()]).unwrap_err()
}

#[test]
fn test_readdirplus_inside_an_image_hands_out_node_ids() {
    let share = named_share();
    let mut fx = ready(&share, Arc::new(RepliesOnly));
    let a = fx.lookup(ROOT_ID, "a").unwrap();
    let o = fx.open(a.nodeid, true).unwrap();
    let r = ReadIn {
        fh: o.fh,
        offset: 0,
        size: 4096,
        ..Default::default()
    };
    let b = fx.call(READDIRPLUS, a.nodeid, &[r.as_bytes()]).unwrap();
    let ents = parse_dirents(&b, true);
    let (_, _, hello) = ents.iter().find(|e| e.0 == "hello").expect("hello listed");
    // An id handed out by the listing itself, counted once.
    assert_ne!(hello.nodeid, 0);
    assert_eq!(fx.srv.lookup_count(hello.nodeid), 1);
    let l = fx.lookup(a.nodeid, "hello").unwrap();
    assert_eq!(l.nodeid, hello.nodeid);
    assert_eq!(fx.srv.lookup_count(l.nodeid), 2);
    let attr = getattr(&mut fx, l.nodeid).unwrap().attr;
    assert_eq!((attr.ino, attr.size), (hello.attr.ino, hello.attr.size));
}
