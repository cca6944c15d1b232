//! DAX windows over a real vhost-user socket, with the test frontend as
//! the VMM: GET_SHMEM_CONFIG, SETUPMAPPING answered by a SHMEM_MAP on the
//! backend request channel carrying the file's decoded bytes, REMOVEMAPPING
//! answered by SHMEM_UNMAP, and the failures (the VMM refusing a map, an
//! unknown range, a full window and table) answered with an errno while
//! the daemon stays up.

mod common;

use std::time::Duration;

use vhost::vhost_user::message::VhostUserProtocolFeatures;

use common::daemon::Daemon;
use common::fixtures::{fixture_image, FixtureImage};
use common::frontend::{Frontend, FrontendOptions, WindowEvent};
use common::fuse_client::{FuseClient, InitIn, InitOut, FUSE_INIT, INIT_FLAGS, ROOT_ID};
use zerocopy::{FromBytes, IntoBytes};

const SETUPMAPPING: u32 = 48;
const REMOVEMAPPING: u32 = 49;
const FLAG_READ: u64 = 2;
const FLAG_WRITE: u64 = 1;
const MAP_ALIGNMENT: u32 = 1 << 26;
const RANGE: u64 = 2 << 20;
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

fn setup(
    c: &mut FuseClient,
    node: u64,
    foffset: u64,
    len: u64,
    moffset: u64,
    flags: u64,
) -> Result<(), i32> {
    let mut args = Vec::new();
    for v in [u64::MAX, foffset, len, flags, moffset] {
        args.extend_from_slice(&v.to_le_bytes());
    }
    c.call(SETUPMAPPING, node, &[&args], 0).map(drop)
}

fn remove(c: &mut FuseClient, ranges: &[(u64, u64)]) -> Result<(), i32> {
    let mut args = (ranges.len() as u32).to_le_bytes().to_vec();
    for &(m, l) in ranges {
        args.extend_from_slice(&m.to_le_bytes());
        args.extend_from_slice(&l.to_le_bytes());
    }
    c.call(REMOVEMAPPING, 0, &[&args], 0).map(drop)
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

fn take_events(c: &FuseClient) -> Vec<WindowEvent> {
    std::mem::take(&mut c.fe.window.as_ref().expect("window").lock().unwrap().events)
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
