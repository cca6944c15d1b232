//! DAX windows over a real vhost-user socket, with the test frontend as
//! the VMM: GET_SHMEM_CONFIG, SETUPMAPPING answered by a SHMEM_MAP on the
//! backend request channel carrying the file's decoded bytes, REMOVEMAPPING
//! answered by SHMEM_UNMAP, and the failures (the VMM refusing a map, an
//! unknown range, a full window and table) answered with an errno while
//! the daemon stays up. Files of images with a trust domain and
//! fingerprints map the content store's mapped copies: one host file for
//! the guests of a domain, never for another's.
//!
//! The store tests need mkfs.erofs 1.9 (`--xattr-inode-digest`):
//! `$EROFS_MKFS_NEW`, else `target/sid/bin/mkfs.erofs` as
//! `scripts/sid-tools.sh erofs` installs it.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;

use common::daemon::Daemon;
use common::dax::{remove, setup, take_events, FLAG_READ, FLAG_WRITE, RANGE};
use common::fixtures::{fixture_image, FixtureImage};
use common::frontend::{Frontend, FrontendOptions, WindowEvent};
use common::fuse_client::{FuseClient, InitIn, InitOut, FUSE_INIT, INIT_FLAGS, ROOT_ID};
use common::mkfs::{mixed_content as content, mkfs_19 as mkfs};
use zerocopy::{FromBytes, IntoBytes};

const MAP_ALIGNMENT: u32 = 1 << 26;
const WINDOW: u64 = 8 * RANGE;

fn start(img: &FixtureImage, extra: &[&str]) -> Daemon {
    let mut args: Vec<String> = vec!["--tag".into(), "daxfs".into()];
    for dev in img.devices() {
        args.push("--device".into());
        args.push(dev.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&img.image, &args)
}

fn connect(d: &Daemon) -> FuseClient {
    let opts = FrontendOptions {
        shmem: true,
        ..Default::default()
    };
    let fe = std::panic::catch_unwind(|| Frontend::connect(&d.socket, &opts))
        .unwrap_or_else(|_| panic!("connecting failed; daemon log:\n{}", d.log()));
    FuseClient::new(fe)
}

/// INIT as a guest mounted `dax=always` (offering MAP_ALIGNMENT).
fn init_with_dax(c: &mut FuseClient) -> InitOut {
    let i = InitIn {
        major: 7,
        minor: 38,
        max_readahead: 128 << 10,
        flags: INIT_FLAGS | MAP_ALIGNMENT,
        ..Default::default()
    };
    let mut out = c.call(FUSE_INIT, 0, &[i.as_bytes()], 256).expect("INIT");
    out.resize(64, 0);
    InitOut::read_from_bytes(&out).expect("INIT reply")
}

/// Regular files of the tree: (node id, size).
fn files(c: &mut FuseClient) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![ROOT_ID];
    while let Some(dir) = stack.pop() {
        for d in c.list_dir(dir).expect("readdirplus") {
            match d.entry.attr.mode & libc::S_IFMT {
                libc::S_IFDIR => stack.push(d.entry.nodeid),
                libc::S_IFREG => out.push((d.entry.nodeid, d.entry.attr.size)),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[test]
fn test_window_is_offered_only_with_dax_window() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &["--dax-window", "16M"]);
    let mut c = connect(&d);
    let want = VhostUserProtocolFeatures::SHMEM
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
    assert!(c.fe.device_protocol_features.contains(want));
    assert_eq!(c.fe.get_shmem_config().unwrap(), vec![16 << 20]);
    let cfg = c.fe.get_config(0, 40).unwrap();
    assert_eq!(&cfg[..6], b"daxfs\0");
    assert_eq!(&cfg[36..], &1u32.to_le_bytes());
    let init = init_with_dax(&mut c);
    assert_ne!(init.flags & MAP_ALIGNMENT, 0);
    assert_eq!(init.map_alignment, 12);

    let plain = start(&img, &[]);
    let mut c = FuseClient::new(Frontend::connect(
        &plain.socket,
        &FrontendOptions {
            shmem: true,
            ..Default::default()
        },
    ));
    assert!(!c
        .fe
        .device_protocol_features
        .intersects(VhostUserProtocolFeatures::SHMEM | VhostUserProtocolFeatures::BACKEND_REQ));
    let init = init_with_dax(&mut c);
    assert_eq!(init.flags & MAP_ALIGNMENT, 0);
    let (node, _) = files(&mut c)[0];
    assert_eq!(
        setup(&mut c, node, 0, RANGE, 0, FLAG_READ),
        Err(libc::ENOSYS)
    );
}

#[test]
fn test_bad_window_sizes_are_refused() {
    let img = fixture_image("edge_plain-b4096");
    for size in ["3M", "1M", "0", "128G", "x"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
            .args([
                "--socket-path",
                "/nonexistent/s",
                "--tag",
                "t",
                "--dax-window",
                size,
            ])
            .arg("--image")
            .arg(&img.image)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{size}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--dax-window"), "{size}: {err}");
    }
    // A window needs a tag (the device reads it from config space).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
        .args(["--socket-path", "/nonexistent/s", "--dax-window", "2M"])
        .arg("--image")
        .arg(&img.image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Every file of plain, zstd tail-packed and fragment images, mapped range
/// by range: each SHMEM_MAP carries a writable fd whose bytes are the
/// file's content (READ's), zero-padded to the range.
#[test]
fn test_setupmapping_maps_each_files_content() {
    for name in [
        "edge_plain-b4096",
        "edge_zstd-b2048-ztailpack",
        "edge_lz4hc-fragments",
    ] {
        let img = fixture_image(name);
        let d = start(&img, &["--dax-window", &WINDOW.to_string()]);
        let mut c = connect(&d);
        c.init();
        let mut mapped = 0;
        for (node, size) in files(&mut c) {
            if size == 0 {
                continue;
            }
            let want = c.read_all(node).expect("read");
            for (i, foffset) in (0..size).step_by(RANGE as usize).enumerate().take(3) {
                let moffset = (i as u64 % 4) * RANGE;
                setup(&mut c, node, foffset, RANGE, moffset, FLAG_READ)
                    .unwrap_or_else(|e| panic!("{name}: node {node}: errno {e}\n{}", d.log()));
                let events = take_events(&c);
                let Some(WindowEvent::Map {
                    shmid,
                    fd_offset,
                    shm_offset,
                    len,
                    fd_len,
                    fd_writable,
                    bytes,
                    ..
                }) = events.last()
                else {
                    panic!("{name}: no SHMEM_MAP: {events:?}");
                };
                assert_eq!(
                    (*shmid, *fd_offset, *shm_offset, *len),
                    (0, foffset, moffset, RANGE)
                );
                assert!(*fd_writable, "QEMU maps the fd read-write");
                assert!(*fd_len >= foffset + RANGE, "the fd covers the range");
                let end = (foffset + RANGE).min(size) as usize;
                let mut expect = want[foffset as usize..end].to_vec();
                expect.resize(RANGE as usize, 0);
                assert!(
                    *bytes == expect,
                    "{name}: node {node} at {foffset}: bytes differ"
                );
                remove(&mut c, &[(moffset, RANGE)]).unwrap();
                let events = take_events(&c);
                assert!(
                    matches!(events.as_slice(), [WindowEvent::Unmap { shm_offset, len }]
                        if *shm_offset == moffset && *len == RANGE),
                    "{events:?}"
                );
                mapped += 1;
            }
        }
        assert!(mapped > 5, "{name}: only {mapped} ranges mapped");
    }
}

#[test]
fn test_failures_get_errnos_and_the_daemon_stays_up() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &["--dax-window", "2M"]);
    let mut c = connect(&d);
    c.init();
    let fs = files(&mut c);
    let (node, _) = *fs.iter().find(|(_, s)| *s > 0).unwrap();
    let window = c.fe.window.clone().unwrap();

    // The VMM refuses the map: EIO, nothing stays mapped.
    window.lock().unwrap().refuse_maps = true;
    assert_eq!(setup(&mut c, node, 0, RANGE, 0, FLAG_READ), Err(libc::EIO));
    window.lock().unwrap().refuse_maps = false;
    assert_eq!(remove(&mut c, &[(0, RANGE)]), Err(libc::EINVAL));
    c.getattr(node).expect("daemon up after a refused map");

    // Writable mappings are refused without asking the VMM.
    take_events(&c);
    assert_eq!(
        setup(&mut c, node, 0, RANGE, 0, FLAG_READ | FLAG_WRITE),
        Err(libc::EPERM)
    );
    assert!(take_events(&c).is_empty());

    // Past the (2 MiB) window.
    assert_eq!(
        setup(&mut c, node, 0, RANGE, RANGE, FLAG_READ),
        Err(libc::EINVAL)
    );
    assert_eq!(
        setup(&mut c, node, 0, 8192, RANGE - 4096, FLAG_READ),
        Err(libc::EINVAL)
    );

    // A REMOVEMAPPING of a range never mapped.
    assert_eq!(remove(&mut c, &[(4096, RANGE)]), Err(libc::EINVAL));

    // A full table: 256 live 4 KiB mappings, then ENOSPC until one goes.
    for i in 0..256u64 {
        setup(&mut c, node, 0, 4096, i * 4096, FLAG_READ)
            .unwrap_or_else(|e| panic!("mapping {i}: errno {e}"));
    }
    assert_eq!(
        setup(&mut c, node, 0, 4096, 256 * 4096, FLAG_READ),
        Err(libc::ENOSPC)
    );
    remove(&mut c, &[(0, 4096)]).unwrap();
    setup(&mut c, node, 0, 4096, 256 * 4096, FLAG_READ).unwrap();
    // Mapping an offset again unmaps what was there first.
    take_events(&c);
    setup(&mut c, node, 0, 4096, 4096, FLAG_READ).unwrap();
    let ev = take_events(&c);
    assert!(
        matches!(
            ev.as_slice(),
            [
                WindowEvent::Unmap {
                    shm_offset: 4096,
                    len: 4096
                },
                WindowEvent::Map { .. }
            ]
        ),
        "{ev:?}"
    );
    c.getattr(node).expect("daemon up");
    drop(c);
    // The counters are logged when the connection ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !d.log().contains("connection ended; dax:") {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.log().contains("refused=3"), "{}", d.log());
}

/// One mapping as the VMM saw it.
struct Mapped {
    fd_id: (u64, u64),
    bytes: Vec<u8>,
    file: File,
}

/// SETUPMAPPING of `len` bytes of `node` at `foffset` to `moffset`; the
/// SHMEM_MAP the VMM got.
fn map(c: &mut FuseClient, node: u64, foffset: u64, moffset: u64) -> Mapped {
    take_events(c);
    setup(c, node, foffset, RANGE, moffset, FLAG_READ).expect("SETUPMAPPING");
    let events = take_events(c);
    match events.into_iter().last() {
        Some(WindowEvent::Map {
            fd_id, bytes, file, ..
        }) => Mapped { fd_id, bytes, file },
        e => panic!("no SHMEM_MAP: {e:?}"),
    }
}

/// `data[from..]` up to one range, padded with zeros to the range.
fn range_of(data: &[u8], from: u64) -> Vec<u8> {
    let end = (from + RANGE).min(data.len() as u64) as usize;
    let mut v = data[from as usize..end].to_vec();
    v.resize(RANGE as usize, 0);
    v
}

/// A field of the counters a daemon logs when its connection ends.
fn ended_count(d: &Daemon, field: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = d.log();
        // Only whole lines: the daemon may be writing this one right now.
        let whole = log.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        if let Some(line) = whole
            .map(str::trim_end)
            .find(|l| l.contains("connection ended; dax:"))
        {
            let key = format!(" {field}=");
            let at = line.find(&key).unwrap_or_else(|| panic!("{line}")) + key.len();
            return line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "no counters logged:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node of the regular file `name` in the root.
fn node_of(c: &mut FuseClient, name: &str) -> u64 {
    c.list_dir(ROOT_ID)
        .expect("readdirplus")
        .into_iter()
        .find(|d| d.name == name.as_bytes())
        .map(|d| d.entry.nodeid)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn test_guests_of_a_domain_map_one_copy_and_writes_never_reach_a_later_mapping() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let big = content(1, 3 * (1 << 20) + 1234);
    fs::write(tree.join("big"), &big).unwrap();
    fs::write(tree.join("small"), b"a small file\n").unwrap();
    // Two images of one content (one of them compressed).
    let plain = mkfs(
        &tree,
        &work.path().join("plain.erofs"),
        &["--xattr-inode-digest"],
    );
    let lz4 = mkfs(
        &tree,
        &work.path().join("lz4.erofs"),
        &["--xattr-inode-digest", "-zlz4hc"],
    );
    let store = tempfile::Builder::new()
        .prefix("evfs-daxstore-")
        .tempdir_in(common::dax::store_base())
        .unwrap();
    let store_arg = store.path().display().to_string();
    let args = |domain: &'static str| {
        [
            "--tag",
            "daxfs",
            "--dax-window",
            "16M",
            "--domain",
            domain,
            "--store",
            store_arg.as_str(),
        ]
    };
    let (a, b, c) = (
        Daemon::start(&plain, &args("tenant-a")),
        Daemon::start(&lz4, &args("tenant-a")),
        Daemon::start(&plain, &args("tenant-b")),
    );
    let open = |d: &Daemon| {
        let mut cl = connect(d);
        cl.init();
        let node = node_of(&mut cl, "big");
        (cl, node)
    };
    let (mut ca, na) = open(&a);
    let (mut cb, nb) = open(&b);
    let (mut cc, nc) = open(&c);
    let ma = map(&mut ca, na, 0, 0);
    let mb = map(&mut cb, nb, 0, 0);
    let mc = map(&mut cc, nc, 0, 0);
    for m in [&ma, &mb, &mc] {
        assert!(m.bytes == range_of(&big, 0), "mapped bytes differ");
    }
    assert_eq!(
        ma.fd_id, mb.fd_id,
        "one host file for the guests of a domain"
    );
    assert_ne!(ma.fd_id, mc.fd_id, "another domain maps another file");
    // The copy: the content, then a hole to the whole range.
    let meta = ma.file.metadata().unwrap();
    assert_eq!(meta.len(), 2 * RANGE);
    assert!(meta.blocks() * 512 <= big.len() as u64 + 8192, "{meta:?}");
    let tail = map(&mut ca, na, RANGE, RANGE);
    assert_eq!(tail.fd_id, ma.fd_id);
    assert!(
        tail.bytes == range_of(&big, RANGE),
        "the last range, padded"
    );

    // Guest A writes through its window. Guest B maps the same copy at
    // the same time and sees it; the guest of the other domain does not.
    ma.file.write_all_at(b"written by guest A", 100).unwrap();
    let mut seen = [0u8; 18];
    mb.file.read_exact_at(&mut seen, 100).unwrap();
    assert_eq!(&seen, b"written by guest A");
    let mut seen_c = [0u8; 18];
    mc.file.read_exact_at(&mut seen_c, 100).unwrap();
    assert_eq!(&seen_c[..], &big[100..118]);

    // A maps the range again: the true content, in a fresh copy.
    remove(&mut ca, &[(0, RANGE)]).unwrap();
    let again = map(&mut ca, na, 0, 0);
    assert!(
        again.bytes == range_of(&big, 0),
        "a write reached a later mapping"
    );
    assert_ne!(again.fd_id, ma.fd_id, "a fresh copy, not the written one");
    // B's guest still maps the written copy until it maps again; then it
    // gets the fresh copy too.
    remove(&mut cb, &[(0, RANGE)]).unwrap();
    let b_again = map(&mut cb, nb, 0, 0);
    assert!(b_again.bytes == range_of(&big, 0));
    assert_eq!(b_again.fd_id, again.fd_id);
    drop(cb);
    // A new connection of the domain maps the fresh copy.
    let mut late = connect(&b);
    late.init();
    let node = node_of(&mut late, "big");
    let l = map(&mut late, node, 0, 0);
    assert_eq!(l.fd_id, again.fd_id);
    assert!(l.bytes == range_of(&big, 0));
    // A small file: a copy of one range, mostly hole.
    let node = node_of(&mut late, "small");
    let s = map(&mut late, node, 0, RANGE);
    assert!(s.bytes == range_of(b"a small file\n", 0));
    assert_eq!(s.file.metadata().unwrap().len(), RANGE);
    drop(late);
    drop((ca, cc));
    assert_eq!(ended_count(&a, "replaced"), 1, "{}", a.log());
    assert_eq!(ended_count(&a, "shared"), 3, "{}", a.log());
    assert_eq!(ended_count(&b, "shared"), 2, "{}", b.log());
    assert_eq!(ended_count(&c, "replaced"), 0, "{}", c.log());
    assert_eq!(ended_count(&c, "shared"), 1, "{}", c.log());
}

#[test]
fn test_images_without_a_domain_map_private_copies() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let big = content(2, (1 << 20) + 5);
    fs::write(tree.join("big"), &big).unwrap();
    let plain = mkfs(
        &tree,
        &work.path().join("plain.erofs"),
        &["--xattr-inode-digest"],
    );
    let args = ["--tag", "daxfs", "--dax-window", "16M"];
    let d = Daemon::start(&plain, &args);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut cl = connect(&d);
        cl.init();
        let node = node_of(&mut cl, "big");
        let m = map(&mut cl, node, 0, 0);
        assert!(m.bytes == range_of(&big, 0));
        ids.push(m.fd_id);
    }
    assert_ne!(ids[0], ids[1], "each connection its own copy");
}

#[test]
fn test_an_image_lying_about_a_fingerprint_maps_its_own_bytes_and_changes_nobody_elses() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let mut victim = b"LYING-IMAGE-TEST-MARKER-0123456789".to_vec();
    victim.extend(content(9, 5 * 4096));
    fs::write(tree.join("victim"), &victim).unwrap();
    let honest = mkfs(
        &tree,
        &work.path().join("honest.erofs"),
        &["--xattr-inode-digest"],
    );
    // The liar: the same fingerprint xattr, one byte of data changed.
    let mut bytes = fs::read(&honest).unwrap();
    let at = bytes
        .windows(34)
        .position(|w| w == &victim[..34])
        .expect("the data, uncompressed");
    bytes[at + 40] ^= 0xff;
    let liar = work.path().join("liar.erofs");
    fs::write(&liar, &bytes).unwrap();
    let mut lie = victim.clone();
    lie[40] ^= 0xff;
    let store = tempfile::Builder::new()
        .prefix("evfs-daxstore-")
        .tempdir_in(common::dax::store_base())
        .unwrap();
    let store_arg = store.path().display().to_string();
    let args = [
        "--tag",
        "daxfs",
        "--dax-window",
        "16M",
        "--domain",
        "d",
        "--store",
        store_arg.as_str(),
    ];
    let first_map = |image: &Path| {
        let d = Daemon::start(image, &args);
        let mut c = connect(&d);
        c.init();
        let node = node_of(&mut c, "victim");
        let m = map(&mut c, node, 0, 0);
        drop(c);
        (ended_count(&d, "shared"), m)
    };
    // The liar first: its copy fails verification, it maps its own bytes.
    let (shared, m) = first_map(&liar);
    assert!(m.bytes == range_of(&lie, 0));
    assert_eq!(shared, 0);
    // The honest image makes the copy; the liar, coming again, checks its
    // own content against it and still maps its own bytes.
    let (shared, honest_map) = first_map(&honest);
    assert!(honest_map.bytes == range_of(&victim, 0));
    assert_eq!(shared, 1);
    let (shared, m) = first_map(&liar);
    assert!(m.bytes == range_of(&lie, 0));
    assert_eq!(shared, 0);
    assert_ne!(m.fd_id, honest_map.fd_id);
    let (_, again) = first_map(&honest);
    assert_eq!(again.fd_id, honest_map.fd_id);
    assert!(again.bytes == range_of(&victim, 0));
}
