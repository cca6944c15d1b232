//! FUSE over io_uring (`erofs-virtiofsd mount --io-uring on|auto`) on the
//! host kernel (6.14+), against the kernel's EROFS mount.
//!
//! - the manifests of three fixtures walked through the mount equal the
//!   kernel's, and the requests were served by the io_uring queue threads
//!   (their context switches grow with the walk, the /dev/fuse workers'
//!   do not);
//! - readers pinned to every CPU (so every per-CPU queue gets requests)
//!   read random ranges that equal the kernel's byte for byte;
//! - a sequential reader on one CPU gets its large READs answered by the
//!   queue's helper thread too, bytes equal to the kernel's;
//! - SIGTERM and umount end the daemon cleanly;
//! - `--io-uring on` fails with a clear message before mounting when the
//!   kernel does not allow it; `auto` then serves /dev/fuse only.
//!
//! The tests switch `/sys/module/fuse/parameters/enable_uring` and put it
//! back afterwards; they take a lock so they do not race on it. Needs root,
//! /dev/fuse and the kernel EROFS driver.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::cli::BIN;
use common::fixtures::fixture_image;
use common::fusemount::{is_mounted, wait_for, FuseMount};
use common::kmount::MountOptions;
use common::rangeread::pread_full;
use common::trees::XorShift64;
use common::{assert_kernel_erofs, assert_manifests_eq, walk_manifest, KernelMount};

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

static LOCK: Mutex<()> = Mutex::new(());

/// Holds the lock and `enable_uring` at a value; restores it on drop.
struct Param {
    old: String,
    _lock: MutexGuard<'static, ()>,
}

impl Param {
    /// `None` (the test is skipped, loudly) on a kernel without FUSE over
    /// io_uring (before 6.14 or built without it); this project's machine
    /// has it.
    fn set(on: bool) -> Option<Param> {
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let old = match fs::read_to_string(PARAM) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("SKIPPED: {PARAM}: {e} (this kernel has no FUSE over io_uring)");
                return None;
            }
        };
        fs::write(PARAM, if on { "Y" } else { "N" })
            .unwrap_or_else(|e| panic!("writing {PARAM}: {e}"));
        Some(Param {
            old: old.trim().to_owned(),
            _lock: lock,
        })
    }
}

impl Drop for Param {
    fn drop(&mut self) {
        let _ = fs::write(PARAM, &self.old);
    }
}

/// Voluntary context switches of the daemon's threads named `comm` (in
/// its process and the sandboxed one it forked).
fn switches(pid: u32, comm: &str) -> u64 {
    let tasks = common::procs::tree(pid)
        .into_iter()
        .filter_map(|p| fs::read_dir(format!("/proc/{p}/task")).ok())
        .flat_map(|d| d.flatten());
    let mut total = 0;
    for t in tasks {
        let name = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !name.trim().starts_with(comm) {
            continue;
        }
        let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// How many threads of the daemon `pid` (its process and the sandboxed one
/// it forked) are named `comm`.
fn threads_named(pid: u32, comm: &str) -> usize {
    common::procs::tree(pid)
        .into_iter()
        .filter_map(|p| fs::read_dir(format!("/proc/{p}/task")).ok())
        .flat_map(|d| d.flatten())
        .filter(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|n| n.trim() == comm))
        .count()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Fixture `name` mounted by the kernel and by us with `args`.
fn mount_both(name: &str, args: &[&str]) -> (KernelMount, FuseMount) {
    let fx = fixture_image(name);
    let kernel = KernelMount::mount(&fx.image, &MountOptions::with_devices(&fx.devices()))
        .unwrap_or_else(|e| panic!("{e}"));
    let fuse = FuseMount::new(&fx.image, &fx.devices(), args);
    (kernel, fuse)
}

/// Waits until the daemon `pid` has a thread named `comm` (the io_uring
/// threads start right after mount(2) returns).
fn assert_thread_starts(name: &str, pid: u32, comm: &str) {
    assert!(
        wait_for(Duration::from_secs(10), || threads_named(pid, comm) >= 1),
        "{name}: no {comm} thread"
    );
}

#[test]
fn test_uring_manifests_match_kernel_and_use_the_rings() {
    assert_kernel_erofs();
    let Some(_p) = Param::set(true) else { return };
    for name in ["edge_lz4", "usr_zstd15-ztailpack", "edge_plain-b4096"] {
        let (kernel, fuse) = mount_both(name, &["--io-uring", "on"]);
        let pid = fuse.pid();
        assert_thread_starts(name, pid, "fuse-uring");
        let (ring0, dev0) = (switches(pid, "fuse-uring"), switches(pid, "fuse-worker"));
        let kman = walk_manifest(kernel.path());
        let fman = walk_manifest(fuse.path());
        assert_manifests_eq(
            &format!("{name}: kernel vs FUSE over io_uring"),
            &kman,
            &fman,
        );
        let (ring, dev) = (
            switches(pid, "fuse-uring") - ring0,
            switches(pid, "fuse-worker") - dev0,
        );
        eprintln!(
            "{name}: {} entries; queue threads switched {ring} times, /dev/fuse workers {dev}",
            kman.len()
        );
        // Each request wakes a queue thread once at most; a walk of N
        // entries makes well over N/4 requests (lookups are answered by
        // READDIRPLUS, but every file is opened and read).
        assert!(
            ring as usize >= kman.len() / 4,
            "{name}: the queue threads served too few requests ({ring} wake-ups for {} entries)",
            kman.len()
        );
        assert!(
            dev < ring,
            "{name}: the /dev/fuse workers ({dev}) were busier than the rings ({ring})"
        );
        let log = fuse.stderr_text();
        assert!(log.is_empty(), "{name}: daemon stderr: {log}");
        fuse.finish(name);
    }
}

fn regular_files(root: &Path, out: &mut Vec<(PathBuf, u64)>) {
    for e in fs::read_dir(root).expect("readdir").flatten() {
        let md = fs::symlink_metadata(e.path()).expect("lstat");
        if md.is_dir() {
            regular_files(&e.path(), out);
        } else if md.is_file() {
            out.push((e.path(), md.len()));
        }
    }
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data written only by CPU_ZERO/CPU_SET;
    // sched_setaffinity reads it for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

#[test]
fn test_uring_random_reads_on_every_cpu_match_kernel() {
    assert_kernel_erofs();
    let Some(_p) = Param::set(true) else { return };
    for (name, cache) in [("big_lz4hc-C1m", "always"), ("edge_plain-b512", "never")] {
        let (kernel, fuse) = mount_both(name, &["--io-uring", "on", "--cache", cache]);
        let mut files = Vec::new();
        regular_files(kernel.path(), &mut files);
        files.sort();
        assert!(!files.is_empty());
        let deadline = Instant::now() + Duration::from_secs(4);
        let reads: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cpus())
                .map(|cpu| {
                    let (files, kernel, fuse) = (&files, &kernel, &fuse);
                    s.spawn(move || {
                        pin(cpu);
                        let mut rng = XorShift64::new(0x0e1a + cpu as u64);
                        let (mut ours, mut theirs) = (vec![0u8; 1 << 21], vec![0u8; 1 << 21]);
                        let mut n = 0u64;
                        while n < 50 || Instant::now() < deadline {
                            let (kpath, size) = &files[rng.below(files.len() as u64) as usize];
                            let rel = kpath.strip_prefix(kernel.path()).expect("below root");
                            let kf = File::open(kpath).expect("kernel open");
                            let ff = File::open(fuse.path().join(rel))
                                .unwrap_or_else(|e| panic!("open {}: {e}", rel.display()));
                            let off = rng.below(size + 4096);
                            let max = if rng.below(2) == 0 { 8192 } else { 1 << 21 };
                            let len = 1 + rng.below(max) as usize;
                            let kn = pread_full(&kf, &mut theirs[..len], off).expect("kernel");
                            ours[..len].fill(0xa5);
                            let fnr = pread_full(&ff, &mut ours[..len], off).unwrap_or_else(|e| {
                                panic!("{name}: {} at {off}: {e}", rel.display())
                            });
                            assert_eq!(fnr, kn, "{name}: {} at {off} len {len}", rel.display());
                            assert!(
                                ours[..kn] == theirs[..kn],
                                "{name}: {} at {off} len {len}: bytes differ (CPU {cpu})",
                                rel.display()
                            );
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("reader")).sum()
        });
        eprintln!("{name}: {reads} random reads on {} CPUs equal", cpus());
        let log = fuse.stderr_text();
        assert!(log.is_empty(), "{name}: daemon stderr: {log}");
        fuse.finish(name);
    }
}

/// A sequential reader on one CPU: the kernel queues all its readahead on
/// that CPU's queue, whose thread lends the large READs to its helper
/// ("fuse-uring-read"); every byte must still equal the kernel's.
#[test]
fn test_uring_sequential_reads_use_the_helper_and_match_kernel() {
    use std::io::Read;
    assert_kernel_erofs();
    let Some(_p) = Param::set(true) else { return };
    for name in ["big_lz4hc-C1m", "big_chunk64k-blobdev", "edge_plain-b4096"] {
        let (kernel, fuse) = mount_both(name, &["--io-uring", "on"]);
        let pid = fuse.pid();
        assert_thread_starts(name, pid, "fuse-uring-read");
        let helper0 = switches(pid, "fuse-uring-read");
        let mut files = Vec::new();
        regular_files(kernel.path(), &mut files);
        files.sort();
        let biggest = files.iter().map(|f| f.1).max().unwrap_or(0);
        let bytes: u64 = std::thread::scope(|s| {
            s.spawn(|| {
                pin(0);
                let (mut ours, mut theirs) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
                let mut total = 0u64;
                for (kpath, size) in &files {
                    let rel = kpath.strip_prefix(kernel.path()).expect("below root");
                    let mut kf = File::open(kpath).expect("kernel open");
                    let mut ff = File::open(fuse.path().join(rel))
                        .unwrap_or_else(|e| panic!("open {}: {e}", rel.display()));
                    let mut at = 0u64;
                    loop {
                        let kn = read_full(&mut kf, &mut theirs);
                        let fnr = read_full(&mut ff, &mut ours);
                        assert_eq!(fnr, kn, "{name}: {} at {at}", rel.display());
                        assert!(
                            ours[..kn] == theirs[..kn],
                            "{name}: {} at {at}: bytes differ",
                            rel.display()
                        );
                        if kn == 0 {
                            break;
                        }
                        at += kn as u64;
                    }
                    assert_eq!(at, *size, "{name}: {}", rel.display());
                    total += at;
                }
                total
            })
            .join()
            .expect("reader")
        });
        let helper = switches(pid, "fuse-uring-read") - helper0;
        eprintln!("{name}: {bytes} bytes read in order equal; the helper woke {helper} times");
        if biggest >= 4 << 20 {
            // Readahead of a file this large asks for 1 MiB at a time.
            assert!(helper > 0, "{name}: no READ was lent to the helper");
        }
        let log = fuse.stderr_text();
        assert!(log.is_empty(), "{name}: daemon stderr: {log}");
        fuse.finish(name);
    }

    fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        n
    }
}

#[test]
fn test_uring_lifecycle_signal_and_umount() {
    assert_kernel_erofs();
    let Some(_p) = Param::set(true) else { return };
    let img = fixture_image("edge_lz4").image;
    let mut m = FuseMount::new(&img, &[], &["--io-uring", "on"]);
    let dir = m.path().to_path_buf();
    assert!(fs::read(dir.join("files/text_4096")).is_ok_and(|d| d.len() == 4096));
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) }, 0);
    assert!(
        wait_for(Duration::from_secs(10), || !is_mounted(&dir)),
        "still mounted after SIGTERM"
    );
    let st = m
        .wait_exit()
        .expect("the daemon did not exit after SIGTERM");
    assert!(
        st.success(),
        "exit after SIGTERM: {st}: {}",
        m.stderr_text()
    );
    let m = FuseMount::new(&img, &[], &["--io-uring", "on"]);
    assert!(fs::read_dir(m.path()).is_ok_and(|d| d.count() > 0));
    let st = m.unmount().expect("the daemon did not exit after umount");
    assert!(st.success(), "exit after umount: {st}");
}

#[test]
fn test_uring_refused_when_the_kernel_does_not_allow_it() {
    assert_kernel_erofs();
    let Some(_p) = Param::set(false) else { return };
    let img = fixture_image("edge_lz4").image;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("mount")
        .arg(&img)
        .arg(dir.path())
        .args(["--foreground", "--io-uring", "on"])
        .output()
        .expect("running the daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--io-uring on succeeded: {err}");
    assert!(err.contains("enable_uring"), "unclear message: {err}");
    assert!(!is_mounted(dir.path()), "mounted although refused");
    // `auto` falls back to /dev/fuse: no queue threads, the tree reads.
    let m = FuseMount::new(&img, &[], &["--io-uring", "auto"]);
    assert!(fs::read(m.path().join("files/text_4096")).is_ok_and(|d| d.len() == 4096));
    // Served (INIT answered, the workers running): no queue thread exists.
    assert!(threads_named(m.pid(), "fuse-worker-1") == 1);
    assert_eq!(threads_named(m.pid(), "fuse-uring"), 0);
    let st = m.unmount();
    assert!(st.is_some_and(|s| s.success()), "exit {st:?}");
}
