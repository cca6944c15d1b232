//! Soak: 8 threads read random ranges of random files through our FUSE
//! mounts and compare every byte with the kernel's EROFS mount of the same
//! image, for `EROFS_FUSE_SOAK_SECS` seconds (default 30).
//!
//! Seven images, each mounted with a cache mode chosen so that every read
//! path is exercised: compressed with 1 MiB pclusters (`--cache never`:
//! direct I/O, every read reaches the daemon, up to 1 MiB per request),
//! compressed with many small files (`--cache auto`), chunk-based with a
//! blob device (`--cache always`: page cache, readahead, async reads),
//! flat with 512-byte blocks (`--cache never`), flat with 4 KiB blocks
//! (`--cache always`: windows pushed around small reads, spliced from the
//! image file) and two compressed ones with the page cache kept (the rest
//! of decoded extents pushed). Reads are 1 byte to 2 MiB,
//! anywhere in the file, block or pcluster aligned, near and past the end.
//! Files are opened anew for each few reads (lookups, opens, releases).
//!
//! Needs root, /dev/fuse and the kernel EROFS driver. `EROFS_FUSE_SOAK_SEED`
//! changes the random sequences (the seed of a failing run reproduces its
//! choices, not its timing); `EROFS_FUSE_SOAK_READERS` the number of reader
//! threads (default 8; `scripts/soak.sh` runs 16 for 10 minutes).
//!
//! The daemons' resident memory, open descriptors and threads are sampled
//! every second; in runs of two minutes or more each must stay within 10%
//! of its value after the warm-up (the first quarter of the run) to the
//! end, and the figures are printed either way.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::fixtures::fixture_image;
use common::fusemount::FuseMount;
use common::kmount::MountOptions;
use common::rangeread::{list_files, pread_full};
use common::resources::Sampler;
use common::trees::XorShift64;
use common::{assert_kernel_erofs, KernelMount};

const DEFAULT_READERS: usize = 8;
const MAX_LEN: u64 = 2 << 20;

struct Target {
    name: &'static str,
    kernel: KernelMount,
    fuse: FuseMount,
    /// (raw path below the root, size), regular files only.
    files: Vec<(Vec<u8>, u64)>,
    /// Indexes of files larger than 64 KiB.
    large: Vec<usize>,
}

fn target(name: &'static str, cache: &str) -> Target {
    let fx = fixture_image(name);
    let kernel = KernelMount::mount(&fx.image, &MountOptions::with_devices(&fx.devices()))
        .unwrap_or_else(|e| panic!("{e}"));
    let fuse = FuseMount::new(&fx.image, &fx.devices(), &["--cache", cache]);
    let mut files = Vec::new();
    list_files(kernel.path(), b"", &mut files);
    files.sort();
    let large = (0..files.len())
        .filter(|&i| files[i].1 > 64 << 10)
        .collect();
    Target {
        name,
        kernel,
        fuse,
        files,
        large,
    }
}

fn random_len(rng: &mut XorShift64) -> u64 {
    match rng.below(10) {
        0 | 1 => 1 + rng.below(64),
        2..=6 => {
            let e = rng.below(21);
            ((1 << e) + rng.below(1 << e)).min(MAX_LEN)
        }
        7 => 1 << 20,
        _ => 4096 * (1 + rng.below(MAX_LEN / 4096)),
    }
}

fn random_offset(rng: &mut XorShift64, size: u64) -> u64 {
    match rng.below(10) {
        0..=3 => rng.below(size + 1),
        4 => 0,
        5 | 6 => {
            let unit = [512u64, 4096, 65536, 1 << 20][rng.below(4) as usize];
            let base = rng.below(size / unit + 1) * unit;
            match rng.below(3) {
                0 => base.saturating_sub(1),
                1 => base,
                _ => base + 1,
            }
        }
        7 | 8 => size.saturating_sub(1 + rng.below(size.clamp(1, 300 << 10))),
        _ => size + rng.below(4096),
    }
}

#[derive(Default)]
struct Totals {
    reads: AtomicU64,
    bytes: AtomicU64,
    opens: AtomicU64,
}

fn readers() -> usize {
    std::env::var("EROFS_FUSE_SOAK_READERS")
        .ok()
        .map(|v| v.parse().expect("EROFS_FUSE_SOAK_READERS is a number"))
        .unwrap_or(DEFAULT_READERS)
}

fn soak_secs() -> u64 {
    std::env::var("EROFS_FUSE_SOAK_SECS")
        .ok()
        .map(|v| v.parse().expect("EROFS_FUSE_SOAK_SECS is a number"))
        .unwrap_or(30)
}

#[test]
fn test_fuse_soak_random_ranges_match_kernel() {
    assert_kernel_erofs();
    let targets = [
        target("big_lz4hc-C1m", "never"),
        target("usr_zstd15-ztailpack", "auto"),
        target("big_chunk64k-blobdev", "always"),
        target("edge_plain-b512", "never"),
        target("edge_plain-b4096", "always"),
        // Compressed with the page cache kept: reads then also land in
        // pages the daemon pushed after decoding a neighbour.
        target("big_zstd-dedupe-fragments", "always"),
        target("edge_lz4hc-C64k", "always"),
    ];
    let seed: u64 = std::env::var("EROFS_FUSE_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    let stop = AtomicBool::new(false);
    let totals = Totals::default();
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let pids: Vec<u32> = targets.iter().map(|t| t.fuse.pid()).collect();
    let mut sampler = Sampler::new();
    std::thread::scope(|s| {
        for t in 0..readers() {
            let (targets, stop, totals, failures) = (&targets, &stop, &totals, &failures);
            s.spawn(move || {
                let mut rng = XorShift64::new(seed.wrapping_add(t as u64));
                let mut ours = vec![0u8; MAX_LEN as usize];
                let mut theirs = vec![0u8; MAX_LEN as usize];
                // At least one round, however short the soak.
                let mut first = true;
                while first || (Instant::now() < deadline && !stop.load(Ordering::Relaxed)) {
                    first = false;
                    let tg = &targets[rng.below(targets.len() as u64) as usize];
                    let idx = if !tg.large.is_empty() && rng.below(10) < 7 {
                        tg.large[rng.below(tg.large.len() as u64) as usize]
                    } else {
                        rng.below(tg.files.len() as u64) as usize
                    };
                    let (rel, size) = &tg.files[idx];
                    let rel = OsStr::from_bytes(&rel[1..]);
                    let kf = File::open(tg.kernel.path().join(rel)).expect("kernel open");
                    let ff = match File::open(tg.fuse.path().join(rel)) {
                        Ok(f) => f,
                        Err(e) => {
                            failures.lock().unwrap().push(format!(
                                "{}: open {}: {e}",
                                tg.name,
                                rel.to_string_lossy()
                            ));
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                    };
                    totals.opens.fetch_add(1, Ordering::Relaxed);
                    for _ in 0..1 + rng.below(4) {
                        let off = random_offset(&mut rng, *size);
                        let len = random_len(&mut rng) as usize;
                        let kn = pread_full(&kf, &mut theirs[..len], off).expect("kernel pread");
                        ours[..len].fill(0xa5);
                        let what = format!(
                            "{}: {} (size {size}) at {off} len {len}",
                            tg.name,
                            rel.to_string_lossy()
                        );
                        let problem = match pread_full(&ff, &mut ours[..len], off) {
                            Err(e) => Some(format!("{what}: FUSE read failed: {e}")),
                            Ok(n) if n != kn => {
                                Some(format!("{what}: FUSE read {n} bytes, kernel {kn}"))
                            }
                            Ok(n) => (0..n).find(|&i| ours[i] != theirs[i]).map(|i| {
                                format!(
                                    "{what}: first difference at byte {i}: {:#04x} vs kernel {:#04x}",
                                    ours[i], theirs[i]
                                )
                            }),
                        };
                        if let Some(p) = problem {
                            failures.lock().unwrap().push(p);
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                        totals.reads.fetch_add(1, Ordering::Relaxed);
                        totals.bytes.fetch_add(kn as u64, Ordering::Relaxed);
                    }
                }
            });
        }
        // Sampling, not synchronisation: one look a second until the end.
        sampler.sample(&pids);
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1).min(deadline - Instant::now()));
            sampler.sample(&pids);
        }
    });
    let failures = failures.into_inner().unwrap();
    let warmup = soak_secs() as f64 / 4.0;
    let what = format!("soak: {} daemons, {} readers", pids.len(), readers());
    eprintln!("{}", sampler.report(&what, warmup));
    eprintln!(
        "soak: {} reads, {} opens, {:.1} MiB compared in {} s, seed {seed:#x}",
        totals.reads.load(Ordering::Relaxed),
        totals.opens.load(Ordering::Relaxed),
        totals.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        soak_secs()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if soak_secs() >= 120 {
        if let Err(e) = sampler.check_flat(&what, warmup, 10) {
            panic!("{e}");
        }
    }
    for mut tg in targets {
        assert!(
            tg.fuse.alive(),
            "{}: daemon died: {}",
            tg.name,
            tg.fuse.stderr_text()
        );
        let log = tg.fuse.stderr_text();
        assert!(log.is_empty(), "{}: daemon stderr: {log}", tg.name);
        let st = tg.fuse.unmount();
        assert!(
            st.is_some_and(|s| s.success()),
            "{}: daemon exit {st:?}",
            tg.name
        );
    }
}
