//! Soak over the vhost-user socket, with the test frontend (tests/common/
//! frontend.rs) as the VMM:
//!
//! - `test_vhost_soak_four_queues_random_reads_match_kernel`: for
//!   `EROFS_SOAK_SECS` seconds (default 20; `scripts/soak.sh` runs 600),
//!   lookups, opens, random-range READs, releases and forgets of random
//!   files of a compressed image, spread over four request queues served by
//!   a worker pool, every byte compared with the kernel's EROFS mount; the
//!   daemon's resident memory, descriptors and threads sampled every
//!   second, and in runs of two minutes or more held within 10% of their
//!   value after the warm-up (the first quarter).
//! - `test_vhost_hundred_reconnects_leak_nothing`: 100 frontends one after
//!   another (INIT, a few requests, hang-up); after the first ten the
//!   daemon's descriptors and threads never grow and its memory stays
//!   within 10%.
//!
//! Needs root (the kernel mount).

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::fixtures::{fixture_image, FixtureImage};
use common::frontend::{Frontend, FrontendOptions};
use common::fuse_client::{FuseClient, ROOT_ID};
use common::rangeread::{list_files, pread_full};
use common::resources::Sampler;
use common::trees::XorShift64;
use common::{assert_kernel_erofs, KernelMount};

fn soak_secs() -> u64 {
    std::env::var("EROFS_SOAK_SECS")
        .ok()
        .map(|v| v.parse().expect("EROFS_SOAK_SECS is a number"))
        .unwrap_or(20)
}

/// A daemon on `img` logging warnings only (a long soak at the tests'
/// usual debug level would write gigabytes of log).
fn start_quiet(img: &FixtureImage, extra: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
    cmd.arg("--socket-path")
        .arg(&socket)
        .arg("--image")
        .arg(&img.image)
        .arg("--log-level")
        .arg("warn");
    for dev in img.devices() {
        cmd.arg("--device").arg(dev);
    }
    cmd.args(extra);
    Daemon::spawn(cmd, socket, log, dir)
}

/// The node of `path` ("/a/b"), looked up component by component.
fn resolve(c: &mut FuseClient, path: &[u8]) -> Result<u64, i32> {
    let mut node = ROOT_ID;
    for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
        node = c.lookup(node, name)?.nodeid;
    }
    Ok(node)
}

#[test]
fn test_vhost_soak_four_queues_random_reads_match_kernel() {
    assert_kernel_erofs();
    let img = fixture_image("usr_zstd15-ztailpack");
    let kernel = KernelMount::new(&img.image, &img.devices());
    let mut files = Vec::new();
    list_files(kernel.path(), b"", &mut files);
    assert!(files.len() > 100, "few files in the fixture");

    let d = start_quiet(&img, &["--queues", "4", "--thread-pool-size", "4"]);
    let opts = FrontendOptions {
        num_queues: 5,
        ..Default::default()
    };
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
    c.init();
    let secs = soak_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut rng = XorShift64::new(0x50a4);
    let mut sampler = Sampler::new();
    sampler.sample(&[d.pid()]);
    let mut next_sample = start + Duration::from_secs(1);
    let (mut reads, mut bytes, mut requests) = (0u64, 0u64, 0u64);
    let mut theirs = vec![0u8; 256 << 10];
    let mut first = true;
    while first || Instant::now() < deadline {
        first = false;
        let (rel, size) = &files[rng.below(files.len() as u64) as usize];
        // Each file's requests go to one of the four request queues.
        c.queue = 1 + rng.below(4) as usize;
        let what = String::from_utf8_lossy(rel).into_owned();
        let node = resolve(&mut c, rel).unwrap_or_else(|e| panic!("lookup {what}: errno {e}"));
        let fh = c
            .open(node, false)
            .unwrap_or_else(|e| panic!("open {what}: errno {e}"));
        let kf = File::open(kernel.path().join(OsStr::from_bytes(&rel[1..]))).expect("kernel open");
        for _ in 0..1 + rng.below(4) {
            let off = rng.below(size + 1);
            let len = 1 + rng.below(theirs.len() as u64) as usize;
            let kn = pread_full(&kf, &mut theirs[..len], off).expect("kernel pread");
            let ours = c
                .read(node, fh, off, len as u32)
                .unwrap_or_else(|e| panic!("READ {what} at {off} len {len}: errno {e}"));
            assert_eq!(
                ours.len(),
                kn,
                "{what} at {off} len {len}: READ length vs the kernel"
            );
            assert!(
                ours[..] == theirs[..kn],
                "{what} at {off} len {len}: bytes differ from the kernel's"
            );
            reads += 1;
            bytes += kn as u64;
            requests += 1;
        }
        c.release(node, fh, false).expect("release");
        requests += 3;
        // The kernel forgets inodes under memory pressure: so do we, now
        // and then, so that the node table goes up and down.
        if rng.below(50) == 0 {
            c.forget_all();
        }
        if Instant::now() >= next_sample {
            sampler.sample(&[d.pid()]);
            next_sample += Duration::from_secs(1);
        }
    }
    sampler.sample(&[d.pid()]);
    let warmup = secs as f64 / 4.0;
    let what = "vhost soak: 4 request queues, worker pool of 4";
    eprintln!("{}", sampler.report(what, warmup));
    eprintln!(
        "vhost soak: {reads} reads ({:.1} MiB) in {requests} requests over {secs} s",
        bytes as f64 / (1 << 20) as f64
    );
    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
    if secs >= 120 {
        if let Err(e) = sampler.check_flat(what, warmup, 10) {
            panic!("{e}");
        }
    }
}

#[test]
fn test_vhost_hundred_reconnects_leak_nothing() {
    let img = fixture_image("edge_lz4");
    let d = start_quiet(&img, &["--queues", "2", "--thread-pool-size", "2"]);
    let opts = FrontendOptions {
        num_queues: 3,
        ..Default::default()
    };
    let mut sampler = Sampler::new();
    for i in 0..100u32 {
        let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
        c.init();
        // The previous frontend's hang-up was handled before this one was
        // served (one frontend at a time): what it left is counted here.
        if i >= 10 {
            sampler.sample(&[d.pid()]);
        }
        c.queue = 1 + (i % 2) as usize;
        let entries = c.list_dir(ROOT_ID).expect("READDIRPLUS of the root");
        assert!(!entries.is_empty(), "connection {i}: empty root");
        for e in entries.iter().take(8) {
            let node = e.entry.nodeid;
            if e.entry.attr.mode & libc::S_IFMT == libc::S_IFREG {
                let fh = c.open(node, false).expect("open");
                c.read(node, fh, 0, 4096).expect("read");
                c.release(node, fh, false).expect("release");
            }
        }
        // Half hang up with files still open and nodes not forgotten.
        if i % 2 == 0 {
            c.forget_all();
        }
        drop(c);
    }
    // One more frontend: the last hang-up handled too.
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
    c.init();
    sampler.sample(&[d.pid()]);
    drop(c);
    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
    let what = "100 reconnects";
    eprintln!("{}", sampler.report(what, 0.0));
    let samples = sampler.samples();
    let (first, last) = (samples[0].1, samples[samples.len() - 1].1);
    // A sample sees the new connection part way through its setup, so the
    // count moves by a couple of descriptors from one sample to the next
    // (37-39, back and forth, when other tests load the machine); a leak
    // only grows. So the fewest descriptors of the last ten samples must
    // not pass the most of the first ten: any descriptor left behind by
    // more than a few of the 90 hang-ups fails this.
    let fds: Vec<usize> = samples.iter().map(|s| s.1.fds as usize).collect();
    let window = 10.min(fds.len());
    let early_max = fds[..window].iter().copied().max().unwrap_or(0);
    let late_min = fds[fds.len() - window..].iter().copied().min().unwrap_or(0);
    assert!(
        late_min <= early_max,
        "descriptors grew over 90 reconnects: at most {early_max} in the first {window} samples, at least {late_min} in the last {window}\n{}\nper reconnect: {fds:?}\nthey are: {}",
        sampler.report(what, 0.0),
        common::resources::fd_kinds(d.pid())
    );
    assert!(
        last.threads <= first.threads,
        "threads grew over 90 reconnects: {} -> {}",
        first.threads,
        last.threads
    );
    if let Err(e) = sampler.check_flat(what, 0.0, 10) {
        panic!("{e}");
    }
}
