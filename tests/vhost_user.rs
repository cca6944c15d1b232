//! The daemon in serve mode, driven over a real vhost-user socket by the
//! test frontend (`common::frontend`: memfd guest RAM, hand-built split
//! virtqueues) and a FUSE client on top of it (`common::fuse_client`).
//!
//! - `test_manifest_over_virtqueues_*`: INIT, READDIRPLUS, LOOKUP, GETATTR,
//!   READ, READLINK and xattrs of every file of a fixture, through the
//!   virtqueues, equal the kernel's manifest of the fixture.
//! - `test_malformed_chains_*`: broken descriptor chains get an error reply
//!   or come back empty, and the next valid request is served.
//! - `test_reconnect_*`, `test_once_*`, `test_sigterm_*`: the daemon's
//!   life cycle on its socket.
//! - the rest: config space, features, buffer layouts, the worker pool,
//!   `--fd`, `--socket-group`, `--print-capabilities`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use zerocopy::IntoBytes;

use common::assert_manifests_eq;
use common::daemon::Daemon;
use common::fixtures::{fixture_image, load_expected, FixtureImage};
use common::frontend::{
    Buf, Desc, Frontend, FrontendOptions, DEVICE_TIMEOUT, RAM_BASE, RAM_SIZE,
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use common::fuse_client::{
    parse_reply, request, walk, FuseClient, GetattrIn, ReadIn, FUSE_GETATTR, FUSE_READ, HIPRIO,
    REQUEST_QUEUE, ROOT_ID,
};

/// Starts a daemon on `img` (its blob passed with `--device`).
fn start(img: &FixtureImage, extra: &[&str]) -> Daemon {
    let mut args: Vec<String> = Vec::new();
    for dev in img.devices() {
        args.push("--device".into());
        args.push(dev.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&img.image, &args)
}

fn connect(d: &Daemon) -> FuseClient {
    FuseClient::new(Frontend::connect(&d.socket, &FrontendOptions::default()))
}

/// Walks the fixture through the virtqueues and compares with the kernel.
fn check_manifest(name: &str, extra: &[&str]) {
    let img = fixture_image(name);
    let d = start(&img, extra);
    let mut c = connect(&d);
    c.init();
    let t = Instant::now();
    let actual = walk(&mut c);
    c.forget_all();
    eprintln!(
        "{name}: {} entries walked in {:?}",
        actual.len(),
        t.elapsed()
    );
    assert_manifests_eq(
        &format!("virtio-fs walk of {name} vs fixture manifest"),
        &load_expected(name),
        &actual,
    );
    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
}

#[test]
fn test_manifest_over_virtqueues_edge_lz4() {
    check_manifest("edge_lz4", &[]);
}

#[test]
fn test_manifest_over_virtqueues_edge_plain_b4096() {
    check_manifest("edge_plain-b4096", &[]);
}

#[test]
fn test_manifest_over_virtqueues_blobdev_with_worker_pool() {
    check_manifest(
        "edge_chunk4k-b512-blobdev",
        &["--thread-pool-size", "3", "--cache", "never"],
    );
}

/// A GETATTR of the root on `q`: its reply payload or errno.
fn getattr_root(c: &mut FuseClient, q: usize, unique: u64) -> Result<Vec<u8>, i32> {
    let g = GetattrIn::default();
    let req = request(FUSE_GETATTR, unique, ROOT_ID, &[g.as_bytes()]);
    let reply = c.fe.request(q, &req, 256);
    parse_reply(&reply, unique)
}

/// The request bytes of a GETATTR of the root.
fn getattr_req(unique: u64) -> Vec<u8> {
    request(
        FUSE_GETATTR,
        unique,
        ROOT_ID,
        &[GetattrIn::default().as_bytes()],
    )
}

/// How a malformed chain must come back.
#[derive(Debug)]
enum Expect {
    /// Used, with a header-only error reply of this errno.
    ErrorReply(i32),
    /// Used with length 0.
    Empty,
    /// Used with length 0 or an error reply (implementation's choice).
    EmptyOrError,
    /// Not returned at all (the head index is not a descriptor).
    NotUsed,
}

/// One malformed chain: descriptors written at their indices, then the
/// head made available.
struct Case {
    name: &'static str,
    descs: Vec<(u16, Desc)>,
    head: u16,
    expect: Expect,
    /// Where the error reply is expected.
    reply_at: u64,
}

const R: u16 = 0;
const W: u16 = VRING_DESC_F_WRITE;
const N: u16 = VRING_DESC_F_NEXT;

fn desc(addr: u64, len: usize, flags: u16, next: u16) -> Desc {
    Desc {
        addr,
        len: len as u32,
        flags,
        next,
    }
}

fn malformed_cases(fe: &mut Frontend) -> Vec<Case> {
    let req = getattr_req(0x77);
    let req_at = fe.alloc(req.len());
    fe.write(req_at, &req);
    let rl = req.len();
    let out = fe.alloc(4096);
    let out2 = fe.alloc(4096);
    let outside = RAM_BASE + RAM_SIZE as u64 + 0x1000;
    let short_at = fe.alloc(64);
    fe.write(short_at, &req[..10]);
    // Header claims 200 bytes; only 56 are readable.
    let mut lying = req.clone();
    lying[0..4].copy_from_slice(&200u32.to_le_bytes());
    let lying_at = fe.alloc(lying.len());
    fe.write(lying_at, &lying);
    // A request longer than the daemon accepts (2 MiB of readable bytes).
    let big_len = 2 << 20;
    let big_at = fe.alloc(big_len);
    let mut big = req.clone();
    big[0..4].copy_from_slice(&(big_len as u32).to_le_bytes());
    fe.write(big_at, &big);
    // Indirect tables.
    let t_loop = fe.alloc(32);
    fe.write(t_loop, &desc(req_at, rl, R | N, 1).to_bytes());
    fe.write(t_loop + 16, &desc(out, 64, W | N, 1).to_bytes());
    let t_nested = fe.alloc(32);
    fe.write(t_nested, &desc(req_at, rl, R | N, 1).to_bytes());
    fe.write(
        t_nested + 16,
        &desc(t_loop, 32, VRING_DESC_F_INDIRECT, 0).to_bytes(),
    );
    let t_odd = fe.alloc(32);
    fe.write(t_odd, &desc(req_at, rl, R | N, 1).to_bytes());
    fe.write(t_odd + 16, &desc(out, 64, W, 0).to_bytes());
    let t_outside_entry = fe.alloc(32);
    fe.write(t_outside_entry, &desc(outside, rl, R | N, 1).to_bytes());
    fe.write(t_outside_entry + 16, &desc(out, 64, W, 0).to_bytes());

    vec![
        Case {
            name: "readable descriptor outside guest memory",
            descs: vec![(0, desc(outside, rl, R | N, 1)), (1, desc(out, 64, W, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EIO),
            reply_at: out,
        },
        Case {
            name: "readable descriptor below guest memory",
            descs: vec![(0, desc(0x1000, rl, R | N, 1)), (1, desc(out, 64, W, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EIO),
            reply_at: out,
        },
        Case {
            name: "writable descriptor outside guest memory",
            descs: vec![
                (0, desc(req_at, rl, R | N, 1)),
                (1, desc(outside, 64, W, 0)),
            ],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "writable descriptor straddling the end of RAM",
            descs: vec![
                (0, desc(req_at, rl, R | N, 1)),
                (1, desc(RAM_BASE + RAM_SIZE as u64 - 8, 64, W, 0)),
            ],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "length near 4 GiB",
            descs: vec![
                (0, desc(req_at, rl, R | N, 1)),
                (1, desc(out, u32::MAX as usize, W, 0)),
            ],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "header shorter than fuse_in_header",
            descs: vec![(0, desc(short_at, 10, R | N, 1)), (1, desc(out, 64, W, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EINVAL),
            reply_at: out,
        },
        Case {
            name: "request longer than the readable part",
            descs: vec![(0, desc(lying_at, rl, R | N, 1)), (1, desc(out, 64, W, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EINVAL),
            reply_at: out,
        },
        Case {
            name: "request over the size limit",
            descs: vec![
                (0, desc(big_at, big_len, R | N, 1)),
                (1, desc(out, 64, W, 0)),
            ],
            head: 0,
            expect: Expect::ErrorReply(libc::E2BIG),
            reply_at: out,
        },
        Case {
            name: "writable before readable",
            descs: vec![(0, desc(out, 64, W | N, 1)), (1, desc(req_at, rl, R, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EIO),
            reply_at: out,
        },
        Case {
            name: "readable only (no reply space)",
            descs: vec![(0, desc(req_at, rl, R, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "zero-length descriptors only",
            descs: vec![(0, desc(req_at, 0, R | N, 1)), (1, desc(out, 0, W, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "zero-length request",
            descs: vec![(0, desc(req_at, 0, R | N, 1)), (1, desc(out, 64, W, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EINVAL),
            reply_at: out,
        },
        Case {
            name: "reply space shorter than a reply header",
            descs: vec![(0, desc(req_at, rl, R | N, 1)), (1, desc(out, 8, W, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "reply space shorter than the attributes",
            descs: vec![(0, desc(req_at, rl, R | N, 1)), (1, desc(out, 40, W, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EIO),
            reply_at: out,
        },
        Case {
            name: "loop in the descriptor table",
            descs: vec![
                (0, desc(req_at, rl, R | N, 1)),
                (1, desc(out, 64, W | N, 2)),
                (2, desc(out2, 64, W | N, 1)),
            ],
            head: 0,
            expect: Expect::EmptyOrError,
            reply_at: out,
        },
        Case {
            name: "next index out of range",
            descs: vec![(0, desc(req_at, rl, R | N, 999)), (1, desc(out, 64, W, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "head index out of range",
            descs: vec![],
            head: 999,
            expect: Expect::NotUsed,
            reply_at: 0,
        },
        Case {
            name: "loop in an indirect table",
            descs: vec![(0, desc(t_loop, 32, VRING_DESC_F_INDIRECT, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EIO),
            reply_at: out,
        },
        Case {
            name: "nested indirect table",
            descs: vec![(0, desc(t_nested, 32, VRING_DESC_F_INDIRECT, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "indirect table length not a multiple of 16",
            descs: vec![(0, desc(t_odd, 24, VRING_DESC_F_INDIRECT, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "indirect table outside guest memory",
            descs: vec![(0, desc(outside, 32, VRING_DESC_F_INDIRECT, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
        Case {
            name: "indirect entry outside guest memory",
            descs: vec![(0, desc(t_outside_entry, 32, VRING_DESC_F_INDIRECT, 0))],
            head: 0,
            expect: Expect::ErrorReply(libc::EIO),
            reply_at: out,
        },
        Case {
            name: "empty indirect table",
            descs: vec![(0, desc(t_odd, 0, VRING_DESC_F_INDIRECT, 0))],
            head: 0,
            expect: Expect::Empty,
            reply_at: 0,
        },
    ]
}

fn check_malformed(event_idx: bool, pool: &str) {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &["--thread-pool-size", pool]);
    let opts = FrontendOptions {
        event_idx,
        ..Default::default()
    };
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
    c.init();
    let cases = malformed_cases(&mut c.fe);
    let mut unique = 1000;
    for case in cases {
        let name = case.name;
        c.fe.write(case.reply_at.max(RAM_BASE), &[0xa5; 64]);
        c.fe.push_descs(REQUEST_QUEUE, &case.descs, case.head);
        match case.expect {
            Expect::NotUsed => {
                assert!(
                    c.fe.no_used_within(REQUEST_QUEUE, Duration::from_millis(200)),
                    "{name}: a used buffer came back"
                );
            }
            expect => {
                let (id, len) =
                    c.fe.wait_used(REQUEST_QUEUE, DEVICE_TIMEOUT)
                        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", d.log()));
                assert_eq!(id, u32::from(case.head), "{name}: used id");
                let reply = c.fe.read(case.reply_at.max(RAM_BASE), len as usize);
                match expect {
                    Expect::Empty => assert_eq!(len, 0, "{name}: used length"),
                    Expect::ErrorReply(errno) => {
                        assert_eq!(len, 16, "{name}: used length");
                        assert_eq!(
                            &reply[4..8],
                            &(-errno).to_le_bytes(),
                            "{name}: error in {reply:02x?}"
                        );
                        assert_eq!(&reply[0..4], &16u32.to_le_bytes(), "{name}: reply len");
                    }
                    Expect::EmptyOrError => assert!(
                        len == 0 || (len == 16 && reply[4..8] != [0, 0, 0, 0]),
                        "{name}: used length {len}, reply {reply:02x?}"
                    ),
                    Expect::NotUsed => unreachable!(),
                }
            }
        }
        // The daemon keeps serving.
        unique += 2;
        getattr_root(&mut c, REQUEST_QUEUE, unique)
            .unwrap_or_else(|e| panic!("after {name}: GETATTR errno {e}\n{}", d.log()));
    }
    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
    assert!(
        log.contains("readable descriptor #1 after a writable one"),
        "daemon log:\n{log}"
    );
}

#[test]
fn test_malformed_chains_answered_and_serving_goes_on() {
    check_malformed(true, "0");
}

#[test]
fn test_malformed_chains_without_event_idx_with_worker_pool() {
    check_malformed(false, "2");
}

#[test]
fn test_corrupt_avail_index_does_not_spin_and_reconnect_recovers() {
    let img = fixture_image("edge_plain-b4096");
    for pool in ["0", "2"] {
        let d = start(&img, &["--thread-pool-size", pool]);
        let mut c = connect(&d);
        c.init();
        // The guest claims 1000 new chains on a 256-entry queue.
        c.fe.set_avail_idx(REQUEST_QUEUE, 1001);
        c.fe.kick(REQUEST_QUEUE);
        let before = d.cpu_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let spent = d.cpu_ticks() - before;
        assert!(
            spent < 20,
            "pool {pool}: daemon used {spent} ticks in 0.5 s"
        );
        assert!(c.fe.poll_used(REQUEST_QUEUE).is_none());
        // The high-priority queue is unaffected; a new frontend is served.
        assert_eq!(
            c.fe.send_no_reply(HIPRIO, &request(2, 3, ROOT_ID, &[&1u64.to_le_bytes()])),
            0
        );
        drop(c);
        let mut c = connect(&d);
        c.init();
        c.getattr(ROOT_ID).expect("served after reconnecting");
        assert!(!d.log().contains("panicked"));
    }
}

#[test]
fn test_reply_and_request_split_across_many_buffers_and_indirect() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &[]);
    let mut c = connect(&d);
    c.init();
    let files = c.lookup(ROOT_ID, b"files").expect("/files");
    let file = c
        .lookup(files.nodeid, b"tail_12289")
        .expect("/files/tail_12289");
    let nodeid = file.nodeid;
    let size = file.attr.size as usize;
    assert_eq!(size, 12289);
    let whole = c.read_all(nodeid).expect("read");
    assert_eq!(whole.len(), size);
    let fh = c.open(nodeid, false).expect("open");
    let mut unique = 5000;
    // (piece size, indirect table): chains stay within the queue size (256).
    for (piece, indirect) in [
        (1, false),
        (97, false),
        (4096, false),
        (61, true),
        (0, true),
    ] {
        unique += 2;
        let r = ReadIn {
            fh,
            offset: 0,
            size: size as u32,
            ..Default::default()
        };
        let req = request(FUSE_READ, unique, nodeid, &[r.as_bytes()]);
        // 1-byte pieces: a short read into 100 bytes of reply space.
        let cap = if piece == 1 { 16 + 100 } else { 16 + size };
        let reply = c.fe.request_with(REQUEST_QUEUE, &req, cap, piece, indirect);
        let data = parse_reply(&reply, unique).expect("READ");
        let want = (cap - 16).min(size);
        assert_eq!(data, &whole[..want], "piece {piece} indirect {indirect}");
    }
    c.release(nodeid, fh, false).expect("release");
}

#[test]
fn test_reconnect_gets_a_fresh_session() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &[]);
    let mut first = connect(&d);
    first.init();
    let dirs = first.list_dir(ROOT_ID).expect("readdirplus");
    let some = dirs.first().expect("root has entries").entry.nodeid;
    first.getattr(some).expect("getattr in the first session");
    drop(first);

    // Same socket, new frontend: served, and the old node ids are gone.
    let mut second = connect(&d);
    second.init();
    second.getattr(ROOT_ID).expect("root in the second session");
    assert_eq!(
        second.getattr(some),
        Err(libc::ESTALE),
        "node id of the previous session"
    );
    drop(second);

    // And a third, without INIT: the session starts uninitialised.
    let mut third = connect(&d);
    assert_eq!(
        third.getattr(ROOT_ID),
        Err(libc::EIO),
        "request before INIT"
    );
    third.init();
    third.getattr(ROOT_ID).expect("after INIT");
    assert!(d.log().matches("frontend connected").count() >= 3);
}

#[test]
fn test_once_exits_after_disconnect_and_removes_socket() {
    let img = fixture_image("edge_plain-b4096");
    let mut d = start(&img, &["--once"]);
    let mut c = connect(&d);
    c.init();
    drop(c);
    let status = d
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("daemon still running:\n{}", d.log()));
    assert!(status.success(), "{status}:\n{}", d.log());
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn test_sigterm_removes_socket_and_exits_zero() {
    for (sig, connected) in [
        (libc::SIGTERM, false),
        (libc::SIGINT, true),
        (libc::SIGTERM, true),
    ] {
        let img = fixture_image("edge_plain-b4096");
        let mut d = start(&img, &["--thread-pool-size", "2"]);
        let c = connected.then(|| {
            let mut c = connect(&d);
            c.init();
            c
        });
        d.signal(sig);
        let status = d
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("signal {sig}: daemon still running:\n{}", d.log()));
        assert!(status.success(), "signal {sig}: {status}:\n{}", d.log());
        assert!(!d.socket.exists(), "signal {sig}: socket left behind");
        drop(c);
    }
}

#[test]
fn test_config_space_has_tag_and_queue_count() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &["--tag", "erofs-test", "--queues", "3"]);
    let opts = FrontendOptions {
        num_queues: 4,
        ..Default::default()
    };
    let mut fe = Frontend::connect(&d.socket, &opts);
    assert!(fe
        .device_protocol_features
        .contains(VhostUserProtocolFeatures::CONFIG));
    let cfg = fe.get_config(0, 40).expect("GET_CONFIG");
    let mut tag = b"erofs-test".to_vec();
    tag.resize(36, 0);
    assert_eq!(&cfg[..36], &tag[..]);
    assert_eq!(&cfg[36..40], &3u32.to_le_bytes());
    assert_eq!(
        fe.get_config(36, 4).expect("num_request_queues"),
        3u32.to_le_bytes()
    );
    // (A range past the config space gets an empty reply, which QEMU
    // reports as an error; the vhost crate's frontend would wait for the
    // full size instead, so that case is covered by the unit tests.)
    // Every request queue works.
    let mut c = FuseClient::new(fe);
    c.init();
    for q in 1..=3 {
        getattr_root(&mut c, q, 100 + q as u64).unwrap_or_else(|e| panic!("queue {q}: {e}"));
    }
}

#[test]
fn test_without_tag_no_config_feature_like_qemu_7_2() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &[]);
    let opts = FrontendOptions {
        config: false,
        ..Default::default()
    };
    let fe = Frontend::connect(&d.socket, &opts);
    assert!(!fe
        .device_protocol_features
        .contains(VhostUserProtocolFeatures::CONFIG));
    assert!(fe
        .device_protocol_features
        .contains(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK));
    let want = (1u64 << 32) | (1 << 28) | (1 << 29) | (1 << 30);
    assert_eq!(fe.device_features & want, want, "{:#x}", fe.device_features);
}

#[test]
fn test_worker_pool_serves_pipelined_requests_on_two_queues() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &["--thread-pool-size", "4", "--queues", "2"]);
    let opts = FrontendOptions {
        num_queues: 3,
        ..Default::default()
    };
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
    c.init();
    let root = c.getattr(ROOT_ID).expect("root");
    // 100 GETATTRs in flight on each request queue, then collect.
    let mut pending = std::collections::BTreeMap::new();
    for i in 0..200u64 {
        let q = 1 + (i % 2) as usize;
        let unique = 10_000 + 2 * i;
        let req = getattr_req(unique);
        let at = c.fe.alloc(req.len());
        c.fe.write(at, &req);
        let out = c.fe.alloc(256);
        let head = c.fe.push_chain(
            q,
            &[
                Buf {
                    addr: at,
                    len: req.len() as u32,
                    write: false,
                },
                Buf {
                    addr: out,
                    len: 256,
                    write: true,
                },
            ],
            false,
        );
        pending.insert((q, head), (unique, out));
    }
    let mut done = 0;
    let deadline = Instant::now() + DEVICE_TIMEOUT;
    while done < 200 {
        for q in 1..=2 {
            if let Some((id, len)) = c.fe.poll_used(q) {
                let (unique, out) = pending
                    .remove(&(q, id as u16))
                    .unwrap_or_else(|| panic!("queue {q}: unknown used id {id}"));
                let reply = c.fe.read(out, len as usize);
                let payload = parse_reply(&reply, unique).expect("GETATTR");
                assert_eq!(&payload[16..16 + 88], root.as_bytes());
                done += 1;
            }
        }
        if done < 200 {
            assert!(Instant::now() < deadline, "{} replies missing", 200 - done);
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert!(pending.is_empty());
    // FORGET on the high-priority queue comes back without a reply.
    let req = request(2, 1, ROOT_ID, &[&1u64.to_le_bytes()]);
    assert_eq!(c.fe.send_no_reply(HIPRIO, &req), 0);
}

#[test]
fn test_stopping_a_queue_waits_for_its_requests() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &["--thread-pool-size", "2"]);
    let mut c = connect(&d);
    c.init();
    for i in 0..50u64 {
        let req = getattr_req(20_000 + 2 * i);
        let at = c.fe.alloc(req.len());
        c.fe.write(at, &req);
        let out = c.fe.alloc(256);
        c.fe.push_chain(
            REQUEST_QUEUE,
            &[
                Buf {
                    addr: at,
                    len: req.len() as u32,
                    write: false,
                },
                Buf {
                    addr: out,
                    len: 256,
                    write: true,
                },
            ],
            false,
        );
    }
    // GET_VRING_BASE: once it returns, every chain the device took is used
    // (the INIT before them included).
    let base = c.fe.get_vring_base(REQUEST_QUEUE);
    let mut used = 1;
    while c.fe.poll_used(REQUEST_QUEUE).is_some() {
        used += 1;
    }
    assert_eq!(used, base, "chains taken vs chains returned");
}

#[test]
fn test_fd_option_serves_an_inherited_listening_socket() {
    let img = fixture_image("edge_plain-b4096");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("inherited.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    // A duplicate without close-on-exec, for the child to inherit.
    // SAFETY: F_DUPFD on our own open fd.
    let fd = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            libc::F_DUPFD,
            100,
        )
    };
    assert!(fd >= 0);
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
    cmd.arg("--fd")
        .arg(fd.to_string())
        .arg("--image")
        .arg(&img.image)
        .arg("--once");
    let mut d = Daemon::spawn(cmd, socket.clone(), log, dir);
    // SAFETY: closing our copy of the duplicate; the child has its own.
    unsafe { libc::close(fd) };
    let mut c = FuseClient::new(Frontend::connect(&socket, &FrontendOptions::default()));
    c.init();
    c.getattr(ROOT_ID).expect("root over --fd");
    drop(c);
    let status = d.wait_exit(Duration::from_secs(20)).expect("--once exit");
    assert!(status.success(), "{}", d.log());
    drop(listener);
}

#[test]
fn test_fd_option_rejects_what_is_not_a_listening_socket() {
    let img = fixture_image("edge_plain-b4096");
    for fd in ["--fd=0", "--fd=-1", "--fd=9999"] {
        let out = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
            .args([fd, "--image"])
            .arg(&img.image)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{fd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--fd"), "{fd}: {err}");
    }
}

#[test]
fn test_socket_group_sets_group_and_mode() {
    let img = fixture_image("edge_plain-b4096");
    let d = start(&img, &["--socket-group", "0"]);
    let m = std::fs::metadata(&d.socket).expect("socket");
    assert_eq!(m.gid(), 0);
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
}

#[test]
fn test_print_capabilities_is_spec_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
        .arg("--print-capabilities")
        .output()
        .expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let obj = v.as_object().expect("a JSON object");
    assert_eq!(obj.get("type").and_then(|t| t.as_str()), Some("fs"));
    let features = obj
        .get("features")
        .and_then(|f| f.as_array())
        .expect("a features array");
    assert!(features.iter().all(|f| f.is_string()));
    // Also accepted as the `serve` subcommand, other options ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
        .args(["serve", "--print-capabilities", "--queues", "2"])
        .output()
        .expect("run");
    assert!(out.status.success());
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("valid JSON");
}

#[test]
fn test_serve_argument_errors() {
    let img = fixture_image("edge_plain-b4096");
    let image = img.image.display().to_string();
    let table: &[(&[&str], &str)] = &[
        (&["--image", &image], "--socket-path or --fd"),
        (
            &["--socket-path", "/tmp/x.sock"],
            "--image (or --image-fd) is required",
        ),
        (
            &[
                "--socket-path",
                "/tmp/x.sock",
                "--image",
                &image,
                "--tag",
                &"t".repeat(37),
            ],
            "--tag",
        ),
        (
            &["--socket-path", "/tmp/x.sock", "--image", "/nonexistent"],
            "nonexistent",
        ),
        (
            &[
                "--socket-path",
                "/tmp/x.sock",
                "--image",
                &image,
                "--queues",
                "0",
            ],
            "queues",
        ),
    ];
    for (args, want) in table {
        let out = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
            .args(*args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `--image-fd N --offset 12345`: the image in host memory (a sealed,
/// mapped memfd), at an unaligned offset, served over the virtqueues.
#[test]
fn test_manifest_over_virtqueues_image_fd_memfd_offset() {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = "edge_lz4";
    let img = fixture_image(name);
    let mut bytes = vec![0x11u8; 12345];
    bytes.extend_from_slice(&std::fs::read(&img.image).expect("read fixture"));
    // SAFETY: memfd_create with a NUL-terminated name; the memfd is
    // inheritable (no MFD_CLOEXEC) so the daemon gets it.
    let fd = unsafe { libc::memfd_create(c"image".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor owned here.
    let mut mem = unsafe { std::fs::File::from_raw_fd(fd) };
    mem.write_all(&bytes).expect("fill memfd");

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
    cmd.arg("--socket-path")
        .arg(&socket)
        .args([
            "--image-fd",
            &mem.as_raw_fd().to_string(),
            "--offset",
            "12345",
        ])
        .args(["--log-level", "debug"]);
    let d = Daemon::spawn(cmd, socket, log, dir);
    let mut c = connect(&d);
    c.init();
    let actual = walk(&mut c);
    assert_manifests_eq(
        &format!("virtio-fs walk of {name} in a memfd at 12345"),
        &load_expected(name),
        &actual,
    );
    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
}
