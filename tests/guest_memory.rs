//! `--image guest:GPA:LEN`: an image in the guest's own RAM, read through
//! the vhost-user memory table, driven by the test frontend
//! (`common::frontend`) with two extra memory regions that touch at
//! [`HIGH`], so that the image, placed at an odd address, crosses a region
//! boundary.
//!
//! - `test_guest_image_manifest_*`: INIT, then a walk over the virtqueues
//!   equals the fixture's kernel manifest;
//! - `test_guest_image_memory_is_exactly_the_image`: the same with guest
//!   memory mapped exactly over the image, so that no read outside it can
//!   succeed;
//! - `test_guest_image_unmapped_*`, `test_guest_image_too_small_*`,
//!   `test_guest_image_written_after_first_init`: INIT fails with an error
//!   reply and a log line, the daemon stays up, a later INIT retries;
//! - `test_guest_image_concurrent_rewrite`: the guest scribbles over the
//!   image while requests run: only data or error replies, no crash, and a
//!   new connection serves the restored image in full.
//! - `test_guest_image_bad_arguments`: malformed `guest:` specs and
//!   options that do not apply exit 1 with one error line.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

use common::assert_manifests_eq;
use common::daemon::Daemon;
use common::fixtures::{fixture_image, load_expected};
use common::frontend::{Frontend, FrontendOptions};
use common::fuse_client::{
    walk, FuseClient, InitIn, ReadIn, FUSE_INIT, FUSE_READDIRPLUS, INIT_FLAGS, ROOT_ID,
};
use common::resources::Sampler;

/// The lower extra region: [LOW, HIGH).
const LOW: u64 = 0x0ff0_0000;
/// The upper extra region starts where the lower one ends.
const HIGH: u64 = 0x1000_0000;
/// Room for the largest image these tests place there (`edge_plain-b4096`,
/// about 4.3 MiB).
const HIGH_SIZE: usize = 8 << 20;
/// Where images go: 3 bytes past a page, half a MiB below the boundary.
const IMAGE_GPA: u64 = HIGH - (512 << 10) + 3;

fn frontend_options() -> FrontendOptions {
    FrontendOptions {
        extra_regions: vec![(LOW, (HIGH - LOW) as usize), (HIGH, HIGH_SIZE)],
        ..Default::default()
    }
}

/// A daemon serving `guest:GPA:LEN`.
fn start(gpa: u64, len: u64, extra: &[&str]) -> Daemon {
    let spec = format!("guest:{gpa:#x}:{len}");
    Daemon::start(Path::new(&spec), extra)
}

fn connect(d: &Daemon) -> FuseClient {
    FuseClient::new(Frontend::connect(&d.socket, &frontend_options()))
}

/// INIT as the guest driver sends it: Ok or the errno of the reply.
fn try_init(c: &mut FuseClient) -> Result<(), i32> {
    let i = InitIn {
        major: 7,
        minor: 38,
        max_readahead: 128 << 10,
        flags: INIT_FLAGS,
        ..Default::default()
    };
    c.call(FUSE_INIT, 0, &[i.as_bytes()], 256).map(drop)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    let img = fixture_image(name);
    assert!(img.blob.is_none(), "{name} needs a blob device");
    std::fs::read(&img.image).expect("reading the fixture")
}

fn assert_alive(d: &mut Daemon) {
    assert!(d.try_wait().is_none(), "daemon exited:\n{}", d.log());
    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
}

fn check_manifest(name: &str) {
    let t = Instant::now();
    let bytes = fixture_bytes(name);
    let end = IMAGE_GPA + bytes.len() as u64;
    assert!(IMAGE_GPA < HIGH && end > HIGH && end <= HIGH + HIGH_SIZE as u64);
    let mut d = start(IMAGE_GPA, bytes.len() as u64, &[]);
    let mut c = connect(&d);
    c.fe.write(IMAGE_GPA, &bytes);
    try_init(&mut c).unwrap_or_else(|e| panic!("INIT: errno {e}\n{}", d.log()));
    let actual = walk(&mut c);
    c.forget_all();
    assert_manifests_eq(
        &format!("virtio-fs walk of {name} in guest memory vs fixture manifest"),
        &load_expected(name),
        &actual,
    );
    assert!(d.log().contains("opened"), "daemon log:\n{}", d.log());
    assert_alive(&mut d);
    eprintln!(
        "{name}: {} entries from guest memory at {IMAGE_GPA:#x}, {:?}",
        actual.len(),
        t.elapsed()
    );
}

#[test]
fn test_guest_image_manifest_edge_lz4() {
    check_manifest("edge_lz4");
}

#[test]
fn test_guest_image_manifest_edge_plain_b4096() {
    check_manifest("edge_plain-b4096");
}

/// Guest memory is exactly the image: two regions, the first starting at
/// the image's odd first byte, the second ending at its last byte (no
/// page alignment anywhere). Any read outside `[GPA, GPA + LEN)` would hit
/// unmapped memory and fail the walk.
#[test]
fn test_guest_image_memory_is_exactly_the_image() {
    let name = "edge_plain-b4096";
    let bytes = fixture_bytes(name);
    let len = bytes.len() as u64;
    let low = HIGH - IMAGE_GPA;
    let opts = FrontendOptions {
        extra_regions: vec![(IMAGE_GPA, low as usize), (HIGH, (len - low) as usize)],
        ..Default::default()
    };
    let mut d = start(IMAGE_GPA, len, &[]);
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
    c.fe.write(IMAGE_GPA, &bytes);
    try_init(&mut c).unwrap_or_else(|e| panic!("INIT: errno {e}\n{}", d.log()));
    let actual = walk(&mut c);
    assert_manifests_eq(
        &format!("{name} in exactly-sized guest memory"),
        &load_expected(name),
        &actual,
    );
    assert_alive(&mut d);
    // One byte more on either side is not mapped.
    for (gpa, len) in [(IMAGE_GPA - 1, len + 1), (IMAGE_GPA, len + 1)] {
        let mut d = start(gpa, len, &[]);
        let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
        c.fe.write(IMAGE_GPA, &bytes);
        assert_eq!(try_init(&mut c), Err(libc::ENODEV), "{gpa:#x}+{len}");
        assert_alive(&mut d);
    }
}

/// A range not (or not entirely) mapped: INIT gets ENODEV, the log says
/// why, requests before INIT get EIO, and the daemon goes on serving.
#[test]
fn test_guest_image_unmapped_range_fails_init() {
    let cases = [
        ("in no region", 0x2000_0000u64, 4096u64),
        (
            "running past the last region",
            HIGH + HIGH_SIZE as u64 - 100,
            4096,
        ),
        ("in the hole below the regions", LOW - 8192, 4096),
    ];
    for (what, gpa, len) in cases {
        let mut d = start(gpa, len, &[]);
        for _ in 0..2 {
            let mut c = connect(&d);
            assert_eq!(c.getattr(ROOT_ID).map(drop), Err(libc::EIO), "{what}");
            assert_eq!(try_init(&mut c), Err(libc::ENODEV), "{what}");
            // Retried, still refused.
            assert_eq!(try_init(&mut c), Err(libc::ENODEV), "{what}");
            assert_alive(&mut d);
        }
        let log = d.log();
        assert!(
            log.contains("is not in guest memory") && log.contains("FUSE INIT refused"),
            "{what}: daemon log:\n{log}"
        );
    }
}

/// LEN shorter than the image (or than a superblock), or no image at
/// all there: INIT gets EIO with a log line; the daemon stays up.
#[test]
fn test_guest_image_too_small_or_garbage_fails_init() {
    let bytes = fixture_bytes("edge_plain-b4096");
    let cases = [
        ("half the image", bytes.len() as u64 / 2, true, "too small"),
        (
            "less than a superblock",
            1100,
            true,
            "FUSE INIT refused (EIO)",
        ),
        (
            "zeros",
            bytes.len() as u64,
            false,
            "FUSE INIT refused (EIO)",
        ),
    ];
    for (what, len, write, logged) in cases {
        let mut d = start(IMAGE_GPA, len, &[]);
        let mut c = connect(&d);
        if write {
            c.fe.write(IMAGE_GPA, &bytes);
        }
        assert_eq!(try_init(&mut c), Err(libc::EIO), "{what}");
        assert_alive(&mut d);
        let log = d.log();
        assert!(log.contains(logged), "{what}: daemon log:\n{log}");
        drop(c);
        // A new connection is served (and refused) the same way.
        let mut c = connect(&d);
        assert_eq!(try_init(&mut c), Err(libc::EIO), "{what}");
        assert_alive(&mut d);
    }
}

/// The image is opened when INIT arrives, from what is in guest memory
/// then: a refused INIT is retried once the guest has written the image.
#[test]
fn test_guest_image_written_after_first_init() {
    let bytes = fixture_bytes("edge_plain-b4096");
    let mut d = start(IMAGE_GPA, bytes.len() as u64, &[]);
    let mut c = connect(&d);
    assert_eq!(try_init(&mut c), Err(libc::EIO));
    c.fe.write(IMAGE_GPA, &bytes);
    try_init(&mut c).unwrap_or_else(|e| panic!("INIT: errno {e}\n{}", d.log()));
    let root = c.getattr(ROOT_ID).expect("GETATTR of the root");
    assert_eq!(root.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_alive(&mut d);
}

/// A small xorshift generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Scribbles over `[gpa, gpa + image.len())` until `stop`: random bytes
/// over random spans, now and then the whole region, now and then the
/// pristine image again (so that requests get somewhere). Counts rounds.
fn scribble(mem: GuestMemoryMmap, gpa: u64, image: Vec<u8>, stop: Arc<AtomicBool>) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let len = image.len() as u64;
    let mut junk = vec![0u8; image.len()];
    let mut rounds = 0u64;
    while !stop.load(Ordering::Relaxed) {
        rounds += 1;
        match rng.below(8) {
            0..=2 => mem.write_slice(&image, GuestAddress(gpa)).expect("restore"),
            3 => {
                for b in junk.iter_mut() {
                    *b = rng.next() as u8;
                }
                mem.write_slice(&junk, GuestAddress(gpa)).expect("junk all");
            }
            _ => {
                for _ in 0..4 {
                    let at = rng.below(len);
                    let n = (1 + rng.below(512)).min(len - at) as usize;
                    for b in junk[..n].iter_mut() {
                        *b = rng.next() as u8;
                    }
                    mem.write_slice(&junk[..n], GuestAddress(gpa + at))
                        .expect("junk span");
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    rounds
}

/// Requests over the whole tree, any of which may fail: GETATTR, one
/// READDIRPLUS batch per directory, LOOKUP, a few READs per file. Nothing
/// is unbounded (the guest's scribbles may make sizes and counts absurd).
fn loose_walk(c: &mut FuseClient, ok: &AtomicU64, failed: &AtomicU64, deadline: Instant) {
    let count = |r: bool| {
        if r {
            ok.fetch_add(1, Ordering::Relaxed);
        } else {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    };
    count(c.getattr(ROOT_ID).is_ok());
    let mut dirs = vec![ROOT_ID];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        if Instant::now() >= deadline || seen > 400 {
            return;
        }
        let fh = match c.open(dir, true) {
            Ok(fh) => fh,
            Err(_) => {
                count(false);
                continue;
            }
        };
        let r = ReadIn {
            fh,
            size: 16 << 10,
            ..Default::default()
        };
        let listing = c.call(FUSE_READDIRPLUS, dir, &[r.as_bytes()], 16 << 10);
        count(listing.is_ok());
        let _ = c.release(dir, fh, true);
        let Ok(listing) = listing else { continue };
        for name in dirent_names(&listing).into_iter().take(64) {
            seen += 1;
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(e) = c.lookup(dir, &name) else {
                count(false);
                continue;
            };
            count(true);
            match e.attr.mode & libc::S_IFMT {
                libc::S_IFDIR if dirs.len() < 64 => dirs.push(e.nodeid),
                libc::S_IFREG => {
                    if let Ok(fh) = c.open(e.nodeid, false) {
                        for i in 0..4u64 {
                            count(c.read(e.nodeid, fh, i * (32 << 10), 32 << 10).is_ok());
                        }
                        let _ = c.release(e.nodeid, fh, false);
                    } else {
                        count(false);
                    }
                }
                libc::S_IFLNK => count(c.readlink(e.nodeid).is_ok()),
                _ => {}
            }
        }
    }
}

/// Names in a READDIRPLUS payload (entry_out, then the dirent: ino, off,
/// namelen, type, name, padded to 8), stopping at anything malformed.
fn dirent_names(mut payload: &[u8]) -> Vec<Vec<u8>> {
    const ENTRY_OUT: usize = 128;
    let mut names = Vec::new();
    while payload.len() >= ENTRY_OUT + 24 {
        let d = &payload[ENTRY_OUT..];
        let namelen = u32::from_le_bytes([d[16], d[17], d[18], d[19]]) as usize;
        let Some(name) = d.get(24..24 + namelen) else {
            break;
        };
        names.push(name.to_vec());
        let rec = (ENTRY_OUT + 24 + namelen + 7) & !7;
        payload = payload.get(rec..).unwrap_or(&[]);
    }
    names
}

#[test]
fn test_guest_image_concurrent_rewrite_edge_lz4() {
    concurrent_rewrite("edge_lz4");
}

/// Plain data goes from guest memory straight into the reply buffers.
#[test]
fn test_guest_image_concurrent_rewrite_edge_plain_b4096() {
    concurrent_rewrite("edge_plain-b4096");
}

fn concurrent_rewrite(name: &str) {
    let bytes = fixture_bytes(name);
    let len = bytes.len() as u64;
    let mut d = start(
        IMAGE_GPA,
        len,
        &["--thread-pool-size", "2", "--decode-cache", "0"],
    );
    let mut c = connect(&d);
    c.fe.write(IMAGE_GPA, &bytes);
    try_init(&mut c).unwrap_or_else(|e| panic!("INIT: errno {e}\n{}", d.log()));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mem = c.fe.mem().clone();
        let stop = Arc::clone(&stop);
        let image = bytes.clone();
        std::thread::spawn(move || scribble(mem, IMAGE_GPA, image, stop))
    };
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let t = Instant::now();
    // EROFS_SOAK_SECS lengthens it (scripts/soak.sh: 10 minutes); the
    // daemon's memory, descriptors and threads are sampled meanwhile.
    let secs: u64 = std::env::var("EROFS_SOAK_SECS")
        .ok()
        .map(|v| v.parse().expect("EROFS_SOAK_SECS is a number"))
        .unwrap_or(4);
    let deadline = t + Duration::from_secs(secs);
    let mut walks = 0;
    let mut sampler = Sampler::new();
    sampler.sample(&[d.pid()]);
    let mut next_sample = t + Duration::from_secs(1);
    while Instant::now() < deadline {
        loose_walk(
            &mut c,
            &ok,
            &failed,
            deadline.min(Instant::now() + Duration::from_secs(1)),
        );
        walks += 1;
        assert!(d.try_wait().is_none(), "daemon died:\n{}", d.log());
        if Instant::now() >= next_sample {
            sampler.sample(&[d.pid()]);
            next_sample += Duration::from_secs(1);
        }
    }
    let what = format!("{name}: guest rewriting its image");
    eprintln!("{}", sampler.report(&what, secs as f64 / 4.0));
    if secs >= 120 {
        if let Err(e) = sampler.check_flat(&what, secs as f64 / 4.0, 10) {
            panic!("{e}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().expect("writer thread");
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!(
        "{name}: {walks} walks, {ok} data replies, {failed} error replies, \
         {rounds} rewrites in {:?}",
        t.elapsed()
    );
    assert!(ok > 0, "no request succeeded");
    assert!(rounds > 10, "the guest hardly wrote");
    if std::env::var_os("GMEM_DEBUG").is_some() {
        eprintln!("{}", d.log());
    }
    assert_alive(&mut d);

    // The same connection still answers.
    c.fe.write(IMAGE_GPA, &bytes);
    assert!(c.getattr(ROOT_ID).is_ok(), "GETATTR of the root");
    drop(c);
    // A new connection opens the restored image afresh: all of it.
    let mut c = connect(&d);
    c.fe.write(IMAGE_GPA, &bytes);
    try_init(&mut c).unwrap_or_else(|e| panic!("INIT: errno {e}\n{}", d.log()));
    let actual = walk(&mut c);
    assert_manifests_eq(
        &format!("{name} restored after the rewrites"),
        &load_expected(name),
        &actual,
    );
    assert_alive(&mut d);
}

/// Bad `guest:` specs and options that do not apply: exit 1 with one
/// error line, before any socket is created.
#[test]
fn test_guest_image_bad_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let cases: [(&[&str], &str); 6] = [
        (&["--image", "guest:0x1000"], "expected guest:GPA:LEN"),
        (&["--image", "guest:0x1000:0"], "LEN is 0"),
        (&["--image", "guest:zz:16"], "not a number"),
        (&["--image", "guest:0xffffffffffffffff:2"], "wraps around"),
        (&["--image", "guest:0x1000:16", "--offset", "3"], "--offset"),
        (
            &["--image", "guest:0x1000:16", "--direct-io"],
            "--direct-io",
        ),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
            .arg("--socket-path")
            .arg(&socket)
            .args(args)
            .output()
            .expect("running erofs-virtiofsd");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("erofs-virtiofsd: error:") && err.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(!socket.exists(), "{args:?}: socket created");
    }
}
