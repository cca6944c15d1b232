//! Timing of sequential 1 MiB READs over vhost-user, driven by the test
//! frontend (`common::frontend`, no VMM): a measurement, not a test, so it
//! is `#[ignore]`d. See docs/benchmarks.md for how it is run:
//!
//! ```text
//! BENCH_BASE_BIN=/path/to/other/erofs-virtiofsd \
//!   cargo test --release --test vhost_read_bench -- --ignored --nocapture
//! ```
//!
//! A 64 MiB file (`BENCH_FILE_MIB`; compressible text) is read in 1 MiB
//! READs, one in flight, from three images: uncompressed in a file, lz4 in
//! a file, and uncompressed in a sealed memfd (`--image-fd`, served from a
//! mapping); each with the reply space in one 1 MiB descriptor and in 256
//! page-sized descriptors (as a guest's page cache gives it). Each run starts a fresh
//! daemon (cold decode cache; the image file is in the host page cache).
//! With `BENCH_BASE_BIN`, the runs alternate between that binary
//! ("before") and this tree's ("after"). Every reply's length is checked,
//! and the last reply's bytes.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use common::daemon::Daemon;
use common::frontend::{Buf, Frontend, FrontendOptions, DEVICE_TIMEOUT};
use common::fuse_client::{request, FuseClient, ReadIn, FUSE_READ, REQUEST_QUEUE, ROOT_ID};
use common::mkfs::{mkfs, mkfs_compressed};
use common::trees::image_dir;

const MIB: usize = 1 << 20;

/// The file size in MiB: `BENCH_FILE_MIB`, default 64.
fn file_mib() -> usize {
    std::env::var("BENCH_FILE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(64)
}

/// The file's bytes: numbered lines of text (lz4 gets about 3:1).
fn content(file_mib: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(file_mib * MIB);
    let mut n = 0u64;
    while v.len() < file_mib * MIB {
        let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        v.extend_from_slice(
            format!("{n:010} {x:08x} the quick brown fox jumps over the lazy dog\n").as_bytes(),
        );
        n += 1;
    }
    v.truncate(file_mib * MIB);
    v
}

/// An inheritable memfd holding `bytes` (the child gets it by number).
fn memfd_with(bytes: &[u8]) -> File {
    // SAFETY: memfd_create with a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"bench-image".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor owned by nothing else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(bytes).expect("fill memfd");
    f
}

fn start(bin: &Path, image: &[String]) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(bin);
    cmd.arg("--socket-path")
        .arg(&socket)
        .args(image)
        .args(["--log-level", "warn"]);
    let d = Daemon::spawn(cmd, socket, log, dir);
    // The socket file exists from bind(2), a moment before listen(2):
    // wait until a connection is accepted (the daemon then serves the
    // next one).
    let deadline = Instant::now() + DEVICE_TIMEOUT;
    while let Err(e) = UnixStream::connect(&d.socket) {
        assert!(Instant::now() < deadline, "connect: {e}");
        std::thread::sleep(Duration::from_millis(5));
    }
    d
}

/// One run: a fresh daemon, READs of 1 MiB over the whole file (`want`)
/// into reply space cut in `piece`-byte descriptors; (wall seconds, daemon
/// CPU ticks).
fn run(bin: &Path, image: &[String], piece: usize, want: &[u8]) -> (f64, u64) {
    let file_mib = want.len() / MIB;
    let d = start(bin, image);
    let opts = FrontendOptions {
        queue_size: 1024,
        ..Default::default()
    };
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
    c.init();
    let node = c.lookup(ROOT_ID, b"f").expect("lookup f").nodeid;
    let fh = c.open(node, false).expect("open f");
    let req_at = c.fe.alloc(128);
    let out_at = c.fe.alloc(16 + MIB);
    let mut bufs = Vec::new();
    let cpu0 = d.cpu_ticks();
    let t0 = Instant::now();
    for i in 0..file_mib {
        let r = ReadIn {
            fh,
            offset: (i * MIB) as u64,
            size: MIB as u32,
            ..Default::default()
        };
        let req = request(FUSE_READ, 1000 + i as u64, node, &[r.as_bytes()]);
        c.fe.write(req_at, &req);
        bufs.clear();
        bufs.push(Buf {
            addr: req_at,
            len: req.len() as u32,
            write: false,
        });
        // The header alone, then the data space in pieces.
        bufs.push(Buf {
            addr: out_at,
            len: 16,
            write: true,
        });
        let mut off = 0;
        while off < MIB {
            bufs.push(Buf {
                addr: out_at + 16 + off as u64,
                len: piece as u32,
                write: true,
            });
            off += piece;
        }
        c.fe.push_chain(REQUEST_QUEUE, &bufs, false);
        let (_, len) =
            c.fe.wait_used(REQUEST_QUEUE, DEVICE_TIMEOUT)
                .expect("reply");
        assert_eq!(len as usize, 16 + MIB, "reply {i}");
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = d.cpu_ticks() - cpu0;
    let last = c.fe.read(out_at + 16, MIB);
    assert!(last == want[(file_mib - 1) * MIB..], "last MiB differs");
    (secs, cpu)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
fn bench_sequential_1mib_reads() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
    let mut sides = Vec::new();
    if let Some(base) = std::env::var_os("BENCH_BASE_BIN") {
        sides.push(("before", PathBuf::from(base)));
    }
    sides.push(("after", ours));

    let file_mib = file_mib();
    let data = content(file_mib);
    let work = image_dir("vhost-bench");
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).expect("mkdir tree");
    std::fs::write(tree.join("f"), &data).expect("write f");
    let plain = mkfs(&tree, &work.path().join("plain.erofs"), &["-T0"]);
    let lz4 = mkfs_compressed(&tree, &work.path().join("lz4.erofs"), "lz4", &["-T0"]);
    // In the host page cache before timing.
    let plain_bytes = std::fs::read(&plain).expect("read plain");
    std::fs::read(&lz4).expect("read lz4");
    let mem = memfd_with(&plain_bytes);
    let path_arg = |p: &Path| vec!["--image".to_string(), p.display().to_string()];
    let images: Vec<(&str, Vec<String>)> = vec![
        ("plain file", path_arg(&plain)),
        ("lz4 file", path_arg(&lz4)),
        (
            "plain sealed memfd",
            vec!["--image-fd".into(), mem.as_raw_fd().to_string()],
        ),
    ];

    println!(
        "{file_mib} MiB in 1 MiB READs, {runs} runs per side after one warm-up; \
         wall ms min / median, MiB/s of the median, daemon CPU ms median"
    );
    for (name, image) in &images {
        for piece in [MIB, 4096] {
            let layout = if piece == MIB {
                "1 x 1 MiB"
            } else {
                "256 x 4 KiB"
            };
            let mut wall: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
            let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
            for (_, bin) in &sides {
                run(bin, image, piece, &data);
            }
            for _ in 0..runs {
                for (s, (_, bin)) in sides.iter().enumerate() {
                    let (w, c) = run(bin, image, piece, &data);
                    wall[s].push(w * 1000.0);
                    cpu[s].push(c as f64 * 10.0);
                }
            }
            for (s, (side, _)) in sides.iter().enumerate() {
                let min = wall[s].iter().copied().fold(f64::INFINITY, f64::min);
                let med = median(&mut wall[s]);
                let cmed = median(&mut cpu[s]);
                println!(
                    "| {name} | {layout} | {side} | {min:.1} / {med:.1} | {:.0} | {cmed:.0} |",
                    file_mib as f64 / (med / 1000.0),
                );
            }
        }
    }
}
