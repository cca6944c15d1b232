//! DAX dispatcher tests: a session over the built-in images with an
//! outbound side that has a window and records what it is asked to map.
#![allow(clippy::arithmetic_side_effects)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use zerocopy::{FromBytes, IntoBytes};

use super::abi::{self, *};
use super::dax::{DaxMode, MAX_MAPPINGS, RANGE};
use super::outbound::{DaxMapping, Outbound};
use super::testutil::*;
use super::{Session, Share, ShareOptions, VecSink};

/// What the window was asked.
#[derive(Debug)]
enum Event {
    Map {
        moffset: u64,
        foffset: u64,
        len: u64,
        /// The mapped bytes, read when the map was asked.
        bytes: Vec<u8>,
        /// The file's size.
        file_len: u64,
        /// The file itself (a new descriptor of it).
        file: File,
    },
    Unmap {
        moffset: u64,
        len: u64,
    },
}

#[derive(Debug)]
struct Window {
    size: u64,
    refuse: AtomicBool,
    events: Mutex<Vec<Event>>,
}

impl Outbound for Window {
    fn dax_window(&self) -> Option<u64> {
        Some(self.size)
    }

    fn dax_map(&self, m: &DaxMapping<'_>) -> io::Result<()> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(io::Error::other("refused by the VMM"));
        }
        let file = File::from(m.file.try_clone_to_owned()?);
        let mut bytes = vec![0u8; m.len as usize];
        file.read_exact_at(&mut bytes, m.file_offset)?;
        let file_len = file.metadata()?.len();
        self.events.lock().unwrap().push(Event::Map {
            moffset: m.window_offset,
            foffset: m.file_offset,
            len: m.len,
            bytes,
            file_len,
            file,
        });
        Ok(())
    }

    fn dax_unmap(&self, moffset: u64, len: u64) -> io::Result<()> {
        self.events
            .lock()
            .unwrap()
            .push(Event::Unmap { moffset, len });
        Ok(())
    }
}

struct Fx {
    share: Arc<Share>,
    srv: Session,
    win: Arc<Window>,
    sink: VecSink,
    unique: u64,
}

impl Fx {
    fn new(image: &[u8], mode: DaxMode, window: u64) -> Self {
        let img = memory_image(image).unwrap();
        let opts = ShareOptions {
            dax: mode,
            ..ShareOptions::default()
        };
        let share = Arc::new(Share::new(img, opts).unwrap());
        let win = Arc::new(Window {
            size: window,
            refuse: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
        });
        let srv = Session::new(Arc::clone(&share), Arc::clone(&win) as Arc<dyn Outbound>);
        let mut fx = Self {
            share,
            srv,
            win,
            sink: VecSink::new(),
            unique: 0,
        };
        let out = fx.init();
        assert_eq!(out.error, 0);
        fx
    }

    fn init(&mut self) -> OutHeader {
        self.srv
            .handle(&init_request(1, KERNEL_FLAGS), &mut self.sink)
            .unwrap();
        let r = self.sink.replies.last().unwrap();
        split_reply(r).unwrap().0
    }

    fn call(&mut self, opcode: u32, nodeid: u64, args: &[&[u8]]) -> Result<Vec<u8>, i32> {
        self.unique += 1;
        let req = request(opcode, nodeid, self.unique, args);
        self.srv.handle(&req, &mut self.sink).unwrap();
        let r = self.sink.replies.last().unwrap();
        let (h, body) = split_reply(r).unwrap();
        assert_eq!(h.unique, self.unique);
        if h.error == 0 {
            Ok(body.to_vec())
        } else {
            Err(-h.error)
        }
    }

    fn lookup(&mut self, name: &str) -> EntryOut {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        let b = self.call(LOOKUP, 1, &[&n]).unwrap();
        EntryOut::read_from_bytes(&b).unwrap()
    }

    fn setup(&mut self, node: u64, foffset: u64, len: u64, moffset: u64) -> Result<(), i32> {
        let s = SetupmappingIn {
            fh: u64::MAX,
            foffset,
            len,
            flags: SETUPMAPPING_FLAG_READ,
            moffset,
        };
        self.call(SETUPMAPPING, node, &[s.as_bytes()]).map(drop)
    }

    fn remove(&mut self, ranges: &[(u64, u64)]) -> Result<(), i32> {
        let mut args = RemovemappingIn {
            count: ranges.len() as u32,
        }
        .as_bytes()
        .to_vec();
        for &(moffset, len) in ranges {
            args.extend_from_slice(RemovemappingOne { moffset, len }.as_bytes());
        }
        self.call(REMOVEMAPPING, 0, &[&args]).map(drop)
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.win.events.lock().unwrap()
    }

    /// The file's bytes as FUSE_READ gives them.
    fn read_all(&mut self, node: u64, size: u64) -> Vec<u8> {
        let r = ReadIn {
            fh: 0,
            offset: 0,
            size: size as u32,
            ..Default::default()
        };
        self.call(READ, node, &[r.as_bytes()]).unwrap()
    }
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(RANGE as usize, 0);
    v
}

#[test]
fn test_init_offers_map_alignment_only_with_a_window() {
    let fx = Fx::new(TINY_IMAGE, DaxMode::Always, 8 * RANGE);
    // Second connection start on the same session is refused, so check
    // the first INIT's reply.
    let r = fx.sink.replies.first().unwrap();
    let out = InitOut::read_from_bytes(split_reply(r).unwrap().1).unwrap();
    assert_ne!(u64::from(out.flags) & MAP_ALIGNMENT, 0);
    assert_ne!(u64::from(out.flags2) << 32 & HAS_INODE_DAX, 0);
    assert_eq!(out.map_alignment, 12);
    // A share that does not map: no DAX at INIT, SETUPMAPPING is ENOSYS.
    let mut never = Fx::new(TINY_IMAGE, DaxMode::Never, 8 * RANGE);
    let r = never.sink.replies.first().unwrap();
    let out = InitOut::read_from_bytes(split_reply(r).unwrap().1).unwrap();
    assert_eq!(u64::from(out.flags) & MAP_ALIGNMENT, 0);
    assert_eq!(out.map_alignment, 0);
    let big = never.lookup("big").nodeid;
    assert_eq!(never.setup(big, 0, RANGE, 0), Err(libc::ENOSYS));
    assert_eq!(fx.srv.dax_counts().unwrap().setups, 0);
    assert!(never.srv.dax_counts().is_none());
}

#[test]
fn test_setupmapping_maps_the_decoded_content_padded() {
    for image in [TINY_IMAGE, TINY_LZ4_IMAGE] {
        let mut fx = Fx::new(image, DaxMode::Always, 8 * RANGE);
        let e = fx.lookup("big");
        let want = fx.read_all(e.nodeid, e.attr.size);
        assert_eq!(want.len(), 12300);
        fx.setup(e.nodeid, 0, RANGE, 2 * RANGE).unwrap();
        {
            let ev = fx.events();
            let [Event::Map {
                moffset,
                foffset,
                len,
                bytes,
                file_len,
                ..
            }] = ev.as_slice()
            else {
                panic!("{ev:?}");
            };
            assert_eq!((*moffset, *foffset, *len), (2 * RANGE, 0, RANGE));
            assert_eq!(*file_len, RANGE, "the fd covers fd_offset + len");
            assert!(*bytes == padded(&want), "mapped bytes differ");
            // Only the data's pages are allocated: the padding is a hole.
            let Event::Map { file, .. } = &ev[0] else {
                unreachable!()
            };
            use std::os::unix::fs::MetadataExt;
            assert!(file.metadata().unwrap().blocks() * 512 <= 16 << 10);
        }
        let c = fx.srv.dax_counts().unwrap();
        assert_eq!((c.setups, c.refused, c.file_reads), (1, 0, 1));
        fx.remove(&[(2 * RANGE, RANGE)]).unwrap();
        assert!(matches!(
            fx.events().last(),
            Some(Event::Unmap { moffset, len }) if *moffset == 2 * RANGE && *len == RANGE
        ));
        assert_eq!(fx.srv.dax_counts().unwrap().removes, 1);
    }
}

#[test]
fn test_setupmapping_refusals() {
    let mut fx = Fx::new(TINY_IMAGE, DaxMode::Always, 4 * RANGE);
    let big = fx.lookup("big").nodeid;
    let dir = fx.lookup("dir").nodeid;
    let writable = SetupmappingIn {
        fh: u64::MAX,
        foffset: 0,
        len: RANGE,
        flags: SETUPMAPPING_FLAG_WRITE | SETUPMAPPING_FLAG_READ,
        moffset: 0,
    };
    assert_eq!(
        fx.call(SETUPMAPPING, big, &[writable.as_bytes()]),
        Err(libc::EPERM)
    );
    let cases: &[(&str, u64, u64, u64, u64, i32)] = &[
        ("past the window", big, 0, RANGE, 4 * RANGE, libc::EINVAL),
        (
            "straddles the window's end",
            big,
            0,
            RANGE,
            3 * RANGE + 4096,
            libc::EINVAL,
        ),
        ("unaligned moffset", big, 0, RANGE, 100, libc::EINVAL),
        ("unaligned foffset", big, 1, 4096, 0, libc::EINVAL),
        ("zero length", big, 0, 0, 0, libc::EINVAL),
        ("longer than a range", big, 0, 2 * RANGE, 0, libc::EINVAL),
        ("past the padded file", big, RANGE, RANGE, 0, libc::EINVAL),
        ("a directory", dir, 0, RANGE, 0, libc::EINVAL),
        ("an unknown node", 999_999, 0, RANGE, 0, libc::ESTALE),
    ];
    for &(name, node, foffset, len, moffset, errno) in cases {
        assert_eq!(fx.setup(node, foffset, len, moffset), Err(errno), "{name}");
    }
    assert!(fx.events().is_empty());
    // A short request is malformed.
    assert_eq!(fx.call(SETUPMAPPING, big, &[&[0u8; 8]]), Err(libc::EINVAL));
    let c = fx.srv.dax_counts().unwrap();
    assert_eq!((c.setups, c.refused), (0, 1), "EPERM refused");
}

#[test]
fn test_vmm_refusal_is_eio_and_nothing_stays_mapped() {
    let mut fx = Fx::new(TINY_IMAGE, DaxMode::Always, 4 * RANGE);
    let big = fx.lookup("big").nodeid;
    fx.win.refuse.store(true, Ordering::Relaxed);
    assert_eq!(fx.setup(big, 0, RANGE, 0), Err(libc::EIO));
    assert_eq!(fx.remove(&[(0, RANGE)]), Err(libc::EINVAL), "not mapped");
    fx.win.refuse.store(false, Ordering::Relaxed);
    fx.setup(big, 0, RANGE, 0).unwrap();
    let c = fx.srv.dax_counts().unwrap();
    assert_eq!((c.setups, c.refused, c.removes), (1, 1, 0));
}

#[test]
fn test_removemapping_of_unknown_ranges_is_einval_and_removes_the_rest() {
    let mut fx = Fx::new(TINY_IMAGE, DaxMode::Always, 4 * RANGE);
    let big = fx.lookup("big").nodeid;
    fx.setup(big, 0, RANGE, 0).unwrap();
    fx.setup(big, 0, RANGE, RANGE).unwrap();
    // Wrong length, unknown offset, and one real range.
    assert_eq!(
        fx.remove(&[(0, 4096), (3 * RANGE, RANGE), (RANGE, RANGE)]),
        Err(libc::EINVAL)
    );
    let unmaps: Vec<u64> = fx
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Unmap { moffset, .. } => Some(*moffset),
            Event::Map { .. } => None,
        })
        .collect();
    assert_eq!(unmaps, vec![RANGE]);
    fx.remove(&[(0, RANGE)]).unwrap();
    // A count larger than the ranges present: only whole ones count.
    let args = RemovemappingIn { count: 1000 }.as_bytes().to_vec();
    assert_eq!(fx.call(REMOVEMAPPING, 0, &[&args]), Ok(vec![]));
}

#[test]
fn test_remapping_an_offset_unmaps_the_old_mapping_first() {
    let mut fx = Fx::new(TINY_IMAGE, DaxMode::Always, 4 * RANGE);
    let big = fx.lookup("big").nodeid;
    let hello = fx.lookup("hello").nodeid;
    let want = fx.read_all(hello, 12);
    fx.setup(big, 0, RANGE, 0).unwrap();
    fx.setup(hello, 0, RANGE, 0).unwrap();
    let ev = fx.events();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert!(matches!(ev[1], Event::Unmap { moffset: 0, len } if len == RANGE));
    assert!(matches!(&ev[2], Event::Map { bytes, .. } if *bytes == padded(&want)));
}

#[test]
fn test_full_table_gets_enospc_until_a_range_is_removed() {
    let mut fx = Fx::new(TINY_IMAGE, DaxMode::Always, 2 * RANGE);
    let big = fx.lookup("big").nodeid;
    for i in 0..MAX_MAPPINGS as u64 {
        fx.setup(big, 0, 4096, i * 4096).unwrap();
    }
    let next = MAX_MAPPINGS as u64 * 4096;
    assert_eq!(fx.setup(big, 0, 4096, next), Err(libc::ENOSPC));
    fx.remove(&[(0, 4096)]).unwrap();
    fx.setup(big, 0, 4096, next).unwrap();
    let c = fx.srv.dax_counts().unwrap();
    assert_eq!((c.setups, c.refused), (MAX_MAPPINGS as u64 + 1, 1));
}

#[test]
fn test_changed_range_is_restored_before_it_is_mapped_again() {
    let mut fx = Fx::new(TINY_LZ4_IMAGE, DaxMode::Always, 4 * RANGE);
    let e = fx.lookup("big");
    let want = fx.read_all(e.nodeid, e.attr.size);
    fx.setup(e.nodeid, 0, RANGE, 0).unwrap();
    // The guest writes through its window: into the mapped file.
    {
        let ev = fx.events();
        let Some(Event::Map { file, .. }) = ev.first() else {
            panic!("{ev:?}");
        };
        file.write_all_at(b"guest was here", 100).unwrap();
        file.write_all_at(b"and past EOF", 20000).unwrap();
    }
    fx.remove(&[(0, RANGE)]).unwrap();
    fx.setup(e.nodeid, 0, RANGE, RANGE).unwrap();
    let ev = fx.events();
    let Some(Event::Map { bytes, .. }) = ev.last() else {
        panic!("{ev:?}");
    };
    assert!(*bytes == padded(&want), "the true content is mapped again");
    assert_eq!(fx_counts_replaced(&fx.srv), 1);
}

fn fx_counts_replaced(s: &Session) -> u64 {
    s.dax_counts().unwrap().replaced
}

#[test]
fn test_destroy_unmaps_and_init_forgets() {
    let mut fx = Fx::new(TINY_IMAGE, DaxMode::Always, 4 * RANGE);
    let big = fx.lookup("big").nodeid;
    fx.setup(big, 0, RANGE, 0).unwrap();
    fx.setup(big, 0, RANGE, RANGE).unwrap();
    fx.call(DESTROY, 0, &[]).unwrap();
    let unmaps = fx
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Unmap { .. }))
        .count();
    assert_eq!(unmaps, 2);
    assert_eq!(fx.init().error, 0);
    let big = fx.lookup("big").nodeid;
    fx.setup(big, 0, RANGE, 0).unwrap();
    // INIT after a device reset: the VMM has no mappings; nothing is
    // unmapped, and the window's offsets are free again.
    let mut fx2 = Fx::new(TINY_IMAGE, DaxMode::Always, 4 * RANGE);
    let big = fx2.lookup("big").nodeid;
    fx2.setup(big, 0, RANGE, 0).unwrap();
    fx2.srv.dax_reset_for_tests();
    fx2.setup(big, 0, RANGE, 0).unwrap();
    assert!(!fx2
        .events()
        .iter()
        .any(|e| matches!(e, Event::Unmap { .. })));
}

#[test]
fn test_attr_dax_flag_by_mode() {
    // `big` is 12300 bytes: under the inode policy's 64 KiB.
    let table: &[(DaxMode, u32, u32)] = &[
        (DaxMode::Always, abi::ATTR_DAX, abi::ATTR_DAX),
        (DaxMode::Inode, 0, 0),
    ];
    for &(mode, big_flags, hello_flags) in table {
        let mut fx = Fx::new(TINY_IMAGE, mode, 4 * RANGE);
        assert_eq!(fx.lookup("big").attr.flags, big_flags, "{mode:?}");
        assert_eq!(fx.lookup("hello").attr.flags, hello_flags, "{mode:?}");
        assert_eq!(fx.lookup("dir").attr.flags, 0, "{mode:?}");
    }
    let inode = super::dax::Dax::new(Some(RANGE), DaxMode::Inode, None).unwrap();
    let img = memory_image(TINY_IMAGE).unwrap();
    let mut i = img.inode(img.root_nid()).unwrap();
    i.kind = crate::erofs::InodeKind::File;
    i.size = 64 << 10;
    assert_eq!(inode.attr_flags(&i), abi::ATTR_DAX);
    i.size -= 1;
    assert_eq!(inode.attr_flags(&i), 0);
}

#[test]
fn test_counters_reach_the_metrics_registry() {
    let mut fx = Fx::new(TINY_IMAGE, DaxMode::Always, 4 * RANGE);
    let big = fx.lookup("big").nodeid;
    let dax = |fx: &Fx| fx.share.metrics_snapshot().dax;
    assert_eq!(dax(&fx).maps, 0);
    fx.setup(big, 0, RANGE, 0).unwrap();
    let d = dax(&fx);
    assert_eq!((d.maps, d.active, d.unmaps), (1, 1, 0), "{d:?}");
    // A guest writes through its window; the next mapping is the truth.
    let file = match fx.events().last() {
        Some(Event::Map { file, .. }) => file.try_clone().unwrap(),
        e => panic!("{e:?}"),
    };
    file.write_all_at(b"written by a guest", 0).unwrap();
    fx.remove(&[(0, RANGE)]).unwrap();
    let d = dax(&fx);
    assert_eq!((d.active, d.unmaps, d.replaced), (0, 1, 0), "{d:?}");
    fx.setup(big, 0, RANGE, RANGE).unwrap();
    let d = dax(&fx);
    assert_eq!((d.maps, d.active, d.replaced), (2, 1, 1), "{d:?}");
    // Refused (writable), and a FUSE_READ of a file.
    let s = SetupmappingIn {
        fh: u64::MAX,
        foffset: 0,
        len: RANGE,
        flags: SETUPMAPPING_FLAG_WRITE,
        moffset: 2 * RANGE,
    };
    assert_eq!(
        fx.call(SETUPMAPPING, big, &[s.as_bytes()]),
        Err(libc::EPERM)
    );
    fx.read_all(big, 4096);
    let d = dax(&fx);
    assert_eq!((d.failures, d.shared_maps), (1, 0), "{d:?}");
    assert!(d.file_reads >= 1, "{d:?}");
    let c = fx.srv.dax_counts().unwrap();
    assert_eq!(
        (c.setups, c.removes, c.refused, c.replaced, c.live),
        (2, 1, 1, 1, 1)
    );
    // INIT forgets the mapping: nothing stays counted as active.
    fx.srv.dax_reset_for_tests();
    assert_eq!(dax(&fx).active, 0);
    assert_eq!(fx.srv.dax_counts().unwrap().live, 0);
    // A connection that ends with mappings live: they go with it.
    fx.setup(big, 0, RANGE, 0).unwrap();
    assert_eq!(dax(&fx).active, 1);
    let Fx { srv, share, .. } = fx;
    drop(srv);
    assert_eq!(share.metrics_snapshot().dax.active, 0);
}
