//! `cargo bench --bench compressed`: read throughput of compressed files,
//! our library against the Linux kernel's EROFS driver on the same image.
//! Needs root: it mounts images (file-backed `mount(2)`), sets the mounts'
//! readahead and drops caches.
//!
//! **Workloads** (one per image; both sides read the same private copy):
//!
//! - `lz4`, `lz4hc`: the fixtures' 40 MiB `/mixed_40m`, copied out of a
//!   kernel mount of `big_lz4hc-C1m.erofs`, in images built here with the
//!   distribution's `mkfs.erofs` (1.5) `-zlz4` / `-zlz4hc` (default `-C`:
//!   4 KiB pclusters).
//! - `lz4hc-C1m`, `zstd`: the fixtures `big_lz4hc-C1m.erofs` (1 MiB
//!   pclusters) and `big_zstd-dedupe-fragments.erofs` (128 KiB pclusters,
//!   dedupe, fragments), same 40 MiB file.
//! - `deflate9`, `libdeflate12`, `lzma109-C1m`, `lzma-MZ` (and, as a
//!   reference on the same files, `edge-lz4`, `edge-zstd19`): no large
//!   DEFLATE or LZMA image exists and mkfs 1.5 cannot make one, so these
//!   read the regular files of at least 4 KiB (distinct inodes) of the
//!   fixtures' `edge` tree, one after the other (1.97 MB in 30 files).
//!
//! **Patterns**: `seq`: every file from start to end in requests of
//! `BENCH_SEQ_KIB` KiB (default 128); `rand`: 4 KiB reads at 4 KiB-aligned
//! offsets drawn with a fixed seed (xorshift64*, seed 0x5eed) uniformly
//! over all 4 KiB blocks of the workload, as many reads as 40% of those
//! blocks (4,096 reads for the 40 MiB file). Same requests on both sides
//! and in every run.
//!
//! **Sides** (in-process, one buffer allocated before timing): *ours* =
//! `Image::open` (a `FileSource` on the image file) + `Image::inode` per
//! file + `Image::read` per request; *kernel* = `open(2)` of the file on a
//! kernel mount + `pread(2)` per request.
//!
//! **Cache states**; in each, the sides run in turn (A, B, C, A, B, C, ...),
//! one untimed warm-up run each, then `BENCH_RUNS` timed runs:
//!
//! - `hot`: image file in the host page cache. Kernel: one mount kept for
//!   all runs (its page cache holds the decompressed file: no decompression
//!   at all). Ours: one `Image` kept for all runs (its decoded-extent cache
//!   holds every extent read).
//! - `cold-decode`: image file in the host page cache (read again before
//!   each kernel mount, not timed). Kernel: a fresh mount per run (an
//!   unmount and mount before the run, not timed): empty page cache and compressed
//!   page cache. Ours: a fresh `Image` per run (empty decode cache).
//! - `dropped`: `sync; echo 3 > /proc/sys/vm/drop_caches` before each run
//!   (after the kernel's fresh mount; not timed), fresh `Image` / mount.
//!
//! The kernel's fresh mounts run twice: with the readahead a file-backed
//! EROFS mount gets (its bdi's `read_ahead_kb`, 128) and with
//! `read_ahead_kb` = 2560 (`BENCH_RA_KB`; what this machine's loop devices
//! have): with 128 KiB the kernel decodes big extents once per readahead
//! window (`LZ4_decompress_safe_partial`), which makes it much slower on
//! LZ4 and on 1 MiB pclusters.
//!
//! Whole processes (single-file workloads; not with `BENCH_NO_PROCESS=1`):
//! `erofs-virtiofsd image cat IMAGE PATH > /dev/null` (its decode cache
//! always starts empty) vs `cat FILE > /dev/null` on the mount; `fio`
//! (if installed; psync engine, `--invalidate=0`) sequential and random
//! 4 KiB reads of the mounted file. fio's process takes ~0.3 s whatever it
//! reads, so its figure is its own: bytes / (mean per-I/O latency x I/Os).
//!
//! Before timing, each workload checks that both sides read the same bytes
//! (SHA-256 of every file, and of the random reads).
//!
//! **Figures**: MiB/s (2^20 bytes/s) from the median and the best run's
//! wall-clock time; ratios are ours / kernel of the median throughputs
//! (above 1: we are faster). Each in-process run also records the thread's
//! CPU time (`CLOCK_THREAD_CPUTIME_ID`; user + system, page faults and the
//! kernel's synchronous decompression included), process runs the
//! children's `getrusage`; the "CPU" ratio compares those, which other
//! load on the machine disturbs less than wall-clock time.
//!
//! Environment: `BENCH_RUNS` (timed runs per side, default 15),
//! `BENCH_ONLY` (comma-separated workload names), `BENCH_PATTERNS`
//! (`seq`,`rand`), `BENCH_STATES` (`hot`,`cold-decode`,`dropped`),
//! `BENCH_SEQ_KIB`, `BENCH_RA_KB` (default 2560), `BENCH_NO_PROCESS=1`,
//! `EROFS_FIXTURES`. `BENCH_PROFILE=ours-fresh|ours-warm|kernel-cold|kernel-hot`
//! runs only that side `BENCH_RUNS` times per selected workload and pattern
//! (for `perf record` or `valgrind --tool=callgrind`); `kernel-cold` then
//! uses the default readahead unless `BENCH_PROFILE_RA_KB` is set.

mod util;

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use util::{cstr, fixtures_dir, machine, run_cmd, umount, Counting, Res};

use erofs_virtiofsd::erofs::{self, Image, ImageOptions, InodeKind};
use erofs_virtiofsd::source::{self, Source};
use sha2::{Digest, Sha256};

/// Our command line tool, built by cargo with the bench (release) profile.
const OUR_BIN: &str = env!("CARGO_BIN_EXE_erofs-virtiofsd");
/// The fixture the 40 MiB file is copied from (and a workload itself).
const BIG_LZ4HC: &str = "big_lz4hc-C1m.erofs";
const BIG_ZSTD: &str = "big_zstd-dedupe-fragments.erofs";
const BIG_FILE: &str = "/mixed_40m";
/// Random reads: request size, seed, share of the workload's blocks read.
const RAND_BS: u64 = 4096;
const RAND_SEED: u64 = 0x5eed;
const RAND_SHARE_PERCENT: u64 = 40;
/// Edge-tree workloads read the regular files of at least this size.
const EDGE_MIN_SIZE: u64 = 4096;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench compressed: error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- mounting

/// Mounts `image` read-only at `dir` with the kernel's EROFS driver,
/// file-backed (each mount gets its own superblock, bdi and caches).
fn mount_erofs(image: &Path, dir: &Path) -> Res<()> {
    let (src, tgt) = (cstr(image)?, cstr(dir)?);
    // SAFETY: the three strings are NUL-terminated and outlive the call;
    // a null `data` means no options.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            c"erofs".as_ptr(),
            libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    Err(format!(
        "mount -t erofs {} {}: {} (this bench needs file-backed EROFS mounts, Linux 6.12+)",
        image.display(),
        dir.display(),
        io::Error::last_os_error()
    ))
}

/// The `erofs-N` bdis (one per file-backed EROFS mount) that exist now.
fn erofs_bdis() -> BTreeSet<String> {
    fs::read_dir("/sys/class/bdi")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("erofs-"))
                .collect()
        })
        .unwrap_or_default()
}

/// A kernel mount, unmounted on drop.
struct Mount {
    dir: PathBuf,
    bdi: String,
    active: bool,
}

impl Mount {
    /// Mounts `image` at `dir` and finds the mount's bdi (the `erofs-N`
    /// that appeared; mounted again if someone else's mount appeared at
    /// the same time).
    fn new(image: &Path, dir: &Path) -> Res<Mount> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for _ in 0..20 {
            let before = erofs_bdis();
            mount_erofs(image, dir)?;
            let new: Vec<String> = erofs_bdis().difference(&before).cloned().collect();
            if new.len() == 1 {
                return Ok(Mount {
                    dir: dir.to_path_buf(),
                    bdi: new[0].clone(),
                    active: true,
                });
            }
            umount(dir)?;
        }
        Err(format!(
            "mount of {}: cannot tell its bdi among /sys/class/bdi/erofs-*",
            image.display()
        ))
    }

    fn ra_path(&self) -> PathBuf {
        Path::new("/sys/class/bdi")
            .join(&self.bdi)
            .join("read_ahead_kb")
    }

    fn read_ahead_kb(&self) -> Res<u32> {
        let p = self.ra_path();
        fs::read_to_string(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", p.display()))
    }

    fn set_read_ahead_kb(&self, kb: u32) -> Res<()> {
        let p = self.ra_path();
        fs::write(&p, kb.to_string()).map_err(|e| format!("{}: {e}", p.display()))
    }

    fn unmount(mut self) -> Res<()> {
        self.active = false;
        umount(&self.dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.active {
            let _ = umount(&self.dir);
        }
    }
}

/// A mount that is replaced by a fresh one before every run.
struct FreshMount {
    image: PathBuf,
    dir: PathBuf,
    cur: Option<Mount>,
}

impl FreshMount {
    fn new(image: &Path, dir: PathBuf) -> Self {
        FreshMount {
            image: image.to_path_buf(),
            dir,
            cur: None,
        }
    }

    /// Unmounts the previous mount, then mounts again (readahead `ra_kb`,
    /// 0 = the mount's default); with `cache_image` the image file is read
    /// first, so that it is in the host page cache.
    fn remount(&mut self, cache_image: bool, ra_kb: u32) -> Res<()> {
        if let Some(m) = self.cur.take() {
            m.unmount()?;
        }
        if cache_image {
            read_whole_file(&self.image)?;
        }
        let m = Mount::new(&self.image, &self.dir)?;
        if ra_kb != 0 {
            m.set_read_ahead_kb(ra_kb)?;
        }
        self.cur = Some(m);
        Ok(())
    }

    fn finish(&mut self) -> Res<()> {
        match self.cur.take() {
            Some(m) => m.unmount(),
            None => Ok(()),
        }
    }
}

fn read_whole_file(p: &Path) -> Res<u64> {
    let mut f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
    }
}

/// Executables of the process rows (`cat`, `fio`, our binary).
static EXECUTABLES: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// `sync; echo 3 > /proc/sys/vm/drop_caches`, then the executables the
/// process rows start are read back, so that "dropped" is about the image
/// data only (what the bench process maps itself is never dropped).
fn drop_caches() -> Res<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", b"3").map_err(|e| format!("drop_caches: {e}"))?;
    for exe in EXECUTABLES.get().into_iter().flatten() {
        read_whole_file(exe)?;
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// Reads completed and sectors read on the block device holding `p`.
fn disk_reads(p: &Path) -> Option<(u64, u64)> {
    let dev = fs::metadata(p).ok()?.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let s = fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/stat")).ok()?;
    let f: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((*f.first()?, *f.get(2)?))
}

// ------------------------------------------------------------------ timing

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn children_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage the call writes to.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One timed run.
#[derive(Clone, Copy, Default)]
struct Meas {
    wall: Duration,
    /// CPU time, when known.
    cpu: Option<Duration>,
    bytes: u64,
    /// Disk reads and sectors during the run (dropped state).
    disk: Option<(u64, u64)>,
}

#[derive(Default, Clone)]
struct Samples(Vec<Meas>);

fn median_of(mut v: Vec<Duration>) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

impl Samples {
    fn bytes(&self) -> u64 {
        self.0.first().map_or(0, |m| m.bytes)
    }

    fn median(&self) -> Duration {
        median_of(self.0.iter().map(|m| m.wall).collect())
    }

    fn min(&self) -> Duration {
        self.0.iter().map(|m| m.wall).min().unwrap_or_default()
    }

    fn cpu_median(&self) -> Option<Duration> {
        let v: Option<Vec<Duration>> = self.0.iter().map(|m| m.cpu).collect();
        v.filter(|v| !v.is_empty()).map(median_of)
    }

    fn mibs(&self) -> f64 {
        mibs(self.bytes(), self.median())
    }

    fn cpu_mibs(&self) -> Option<f64> {
        self.cpu_median().map(|c| mibs(self.bytes(), c))
    }

    fn disk_median(&self) -> Option<(u64, u64)> {
        let v: Option<Vec<(u64, u64)>> = self.0.iter().map(|m| m.disk).collect();
        let mut v = v.filter(|v| !v.is_empty())?;
        v.sort();
        Some(v[v.len() / 2])
    }
}

fn mibs(bytes: u64, d: Duration) -> f64 {
    if d.is_zero() {
        return 0.0;
    }
    bytes as f64 / (1u64 << 20) as f64 / d.as_secs_f64()
}

// --------------------------------------------------------------- workloads

#[derive(Clone)]
struct FileRef {
    /// Absolute path inside the image ("/a/b").
    path: Vec<u8>,
    nid: u64,
    size: u64,
}

struct Workload {
    name: &'static str,
    alg: &'static str,
    image: PathBuf,
    origin: String,
    files: Vec<FileRef>,
    /// One large file: whole-process rows (image cat, cat, fio) apply.
    single: bool,
}

impl Workload {
    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    fn mount_paths(&self, mnt: &Path) -> Vec<PathBuf> {
        self.files
            .iter()
            .map(|f| mnt.join(std::ffi::OsStr::from_bytes(&f.path[1..])))
            .collect()
    }
}

#[derive(Clone)]
enum Pattern {
    Seq { req: usize },
    Rand { reqs: Vec<(usize, u64)> },
}

impl Pattern {
    fn name(&self) -> String {
        match self {
            Pattern::Seq { req } => format!("seq {} KiB", req >> 10),
            Pattern::Rand { reqs } => format!("rand 4 KiB x{}", reqs.len()),
        }
    }

    fn is_seq(&self) -> bool {
        matches!(self, Pattern::Seq { .. })
    }

    fn bytes(&self, w: &Workload) -> u64 {
        match self {
            Pattern::Seq { .. } => w.bytes(),
            Pattern::Rand { reqs } => reqs
                .iter()
                .map(|&(i, off)| w.files[i].size.saturating_sub(off).min(RAND_BS))
                .sum(),
        }
    }

    fn buf_len(&self) -> usize {
        match self {
            Pattern::Seq { req } => *req,
            Pattern::Rand { .. } => RAND_BS as usize,
        }
    }
}

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn rand_requests(files: &[FileRef]) -> Vec<(usize, u64)> {
    // Blocks of every file, numbered across the workload.
    let mut starts = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for f in files {
        starts.push(total);
        total += f.size.div_ceil(RAND_BS);
    }
    let count = (total * RAND_SHARE_PERCENT).div_ceil(100).max(1);
    let mut rng = Rng(RAND_SEED);
    (0..count)
        .map(|_| {
            let b = rng.next() % total;
            let i = starts.partition_point(|&s| s <= b) - 1;
            (i, (b - starts[i]) * RAND_BS)
        })
        .collect()
}

// -------------------------------------------------------- the two readers

fn open_image(src: Arc<dyn Source>) -> Res<Image> {
    Image::open(src, ImageOptions::default()).map_err(|e| e.to_string())
}

fn file_source(p: &Path) -> Res<Arc<dyn Source>> {
    source::open_path(p, 0).map_err(|e| format!("{}: {e}", p.display()))
}

type Sink<'a> = Option<&'a mut dyn FnMut(usize, &[u8])>;

/// One run of ours on `img`; `sink` sees every byte read (checks). Returns
/// the bytes read and the number of `Image::read` calls.
fn ours_run(
    img: &Image,
    w: &Workload,
    pat: &Pattern,
    buf: &mut [u8],
    mut sink: Sink<'_>,
) -> Res<(u64, u64)> {
    let mut bytes = 0u64;
    let mut calls = 0u64;
    let inode = |i: usize| img.inode(w.files[i].nid).map_err(|e| e.to_string());
    match pat {
        Pattern::Seq { .. } => {
            for (i, f) in w.files.iter().enumerate() {
                let ino = inode(i)?;
                let mut off = 0u64;
                while off < f.size {
                    let n = img.read(&ino, off, buf).map_err(|e| e.to_string())?;
                    calls += 1;
                    if n == 0 {
                        return Err(format!("ours: short read at {off} of {}", f.size));
                    }
                    if let Some(s) = sink.as_mut() {
                        s(i, &buf[..n]);
                    }
                    black_box(&buf[..n]);
                    off += n as u64;
                    bytes += n as u64;
                }
            }
        }
        Pattern::Rand { reqs } => {
            let inodes = (0..w.files.len()).map(inode).collect::<Res<Vec<_>>>()?;
            for &(i, off) in reqs {
                let n = img.read(&inodes[i], off, buf).map_err(|e| e.to_string())?;
                calls += 1;
                if let Some(s) = sink.as_mut() {
                    s(i, &buf[..n]);
                }
                black_box(&buf[..n]);
                bytes += n as u64;
            }
        }
    }
    Ok((bytes, calls))
}

/// One run of the kernel side: open + pread on the mount.
fn kernel_run(
    paths: &[PathBuf],
    w: &Workload,
    pat: &Pattern,
    buf: &mut [u8],
    mut sink: Sink<'_>,
) -> Res<u64> {
    let mut bytes = 0u64;
    let open = |p: &PathBuf| File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let pread = |f: &File, off: u64, buf: &mut [u8]| -> Res<usize> {
        loop {
            match f.read_at(buf, off) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("pread at {off}: {e}")),
            }
        }
    };
    match pat {
        Pattern::Seq { .. } => {
            for (i, p) in paths.iter().enumerate() {
                let f = open(p)?;
                let size = w.files[i].size;
                let mut off = 0u64;
                while off < size {
                    let n = pread(&f, off, buf)?;
                    if n == 0 {
                        return Err(format!("kernel: short read at {off} of {size}"));
                    }
                    if let Some(s) = sink.as_mut() {
                        s(i, &buf[..n]);
                    }
                    black_box(&buf[..n]);
                    off += n as u64;
                    bytes += n as u64;
                }
            }
        }
        Pattern::Rand { reqs } => {
            let files = paths.iter().map(open).collect::<Res<Vec<_>>>()?;
            for &(i, off) in reqs {
                let want = (w.files[i].size - off).min(RAND_BS) as usize;
                let n = pread(&files[i], off, &mut buf[..want])?;
                if n != want {
                    return Err(format!("kernel: short read at {off}: {n} of {want}"));
                }
                if let Some(s) = sink.as_mut() {
                    s(i, &buf[..n]);
                }
                black_box(&buf[..n]);
                bytes += n as u64;
            }
        }
    }
    Ok(bytes)
}

/// SHA-256 of everything a run reads, per file, then overall.
fn digest_of(
    w: &Workload,
    run: impl FnOnce(&mut dyn FnMut(usize, &[u8])) -> Res<()>,
) -> Res<Vec<String>> {
    let mut hs: Vec<Sha256> = (0..w.files.len()).map(|_| Sha256::new()).collect();
    let mut all = Sha256::new();
    run(&mut |i, b| {
        hs[i].update(b);
        all.update(b);
    })?;
    let mut v: Vec<String> = hs.into_iter().map(|h| hex(&h.finalize())).collect();
    v.push(hex(&all.finalize()));
    Ok(v)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn dev_null() -> Res<Stdio> {
    File::create("/dev/null")
        .map(Stdio::from)
        .map_err(|e| format!("/dev/null: {e}"))
}

fn have_fio() -> bool {
    Command::new("fio")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One fio job on `file`; returns fio's own time (mean latency x I/Os) and
/// the bytes it read.
fn fio_run(file: &Path, pat: &Pattern, size: u64) -> Res<(Duration, u64)> {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=bench",
        "--ioengine=psync",
        "--readonly",
        "--invalidate=0",
        "--thread",
        "--output-format=json",
    ])
    .arg(format!("--filename={}", file.display()));
    match pat {
        Pattern::Seq { req } => {
            cmd.arg("--rw=read")
                .arg(format!("--bs={req}"))
                .arg(format!("--size={size}"));
        }
        Pattern::Rand { reqs } => {
            cmd.arg("--rw=randread")
                .arg(format!("--bs={RAND_BS}"))
                .arg("--norandommap")
                .arg(format!("--randseed={RAND_SEED}"))
                .arg(format!("--size={}", size / RAND_BS * RAND_BS))
                .arg(format!("--io_size={}", reqs.len() as u64 * RAND_BS));
        }
    }
    let out = run_cmd(&mut cmd, "fio")?;
    let j: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| format!("fio output: {e}"))?;
    let r = &j["jobs"][0]["read"];
    let ios = r["total_ios"].as_f64().ok_or("fio: no total_ios")?;
    let lat = r["lat_ns"]["mean"].as_f64().ok_or("fio: no lat_ns")?;
    let bytes = r["io_bytes"].as_u64().ok_or("fio: no io_bytes")?;
    Ok((Duration::from_nanos((ios * lat) as u64), bytes))
}

// ------------------------------------------------------------------- sides

/// One thing that is timed. `ra` is the kernel mount's `read_ahead_kb`
/// (0: the mount's default).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Side {
    OursFresh,
    OursWarm,
    OursProcess,
    KernelHot,
    KernelFresh(u32),
    CatHot,
    CatFresh(u32),
    FioHot,
    FioFresh(u32),
}

struct Ctx<'a> {
    w: &'a Workload,
    pat: &'a Pattern,
    buf: Vec<u8>,
    warm_img: Image,
    hot_paths: Vec<PathBuf>,
    fresh: FreshMount,
    fresh_paths: Vec<PathBuf>,
}

impl Ctx<'_> {
    /// Runs `side` once. `dropped`: drop caches first (after mounting).
    fn run(&mut self, side: Side, dropped: bool) -> Res<Meas> {
        let (w, pat) = (self.w, self.pat);
        let single = || -> Res<&FileRef> {
            w.files
                .first()
                .filter(|_| w.single)
                .ok_or_else(|| "process rows need a single-file workload".to_string())
        };
        // Untimed preparation.
        match side {
            Side::KernelFresh(ra) | Side::CatFresh(ra) | Side::FioFresh(ra) => {
                self.fresh.remount(!dropped, ra)?
            }
            Side::OursProcess if !dropped => {
                read_whole_file(&w.image)?;
            }
            _ => {}
        }
        if dropped {
            drop_caches()?;
        }
        let disk0 = if dropped { disk_reads(&w.image) } else { None };
        let (cpu0, kids0) = (thread_cpu(), children_cpu());
        let t0 = Instant::now();
        let (bytes, fio_time) = match side {
            Side::OursFresh => {
                let img = open_image(file_source(&w.image)?)?;
                (ours_run(&img, w, pat, &mut self.buf, None)?.0, None)
            }
            Side::OursWarm => (
                ours_run(&self.warm_img, w, pat, &mut self.buf, None)?.0,
                None,
            ),
            Side::OursProcess => {
                let f = single()?;
                run_cmd(
                    Command::new(OUR_BIN)
                        .args(["image", "cat"])
                        .arg(&w.image)
                        .arg(std::ffi::OsStr::from_bytes(&f.path))
                        .stdout(dev_null()?),
                    "erofs-virtiofsd image cat",
                )?;
                (f.size, None)
            }
            Side::KernelHot => (
                kernel_run(&self.hot_paths, w, pat, &mut self.buf, None)?,
                None,
            ),
            Side::KernelFresh(_) => (
                kernel_run(&self.fresh_paths, w, pat, &mut self.buf, None)?,
                None,
            ),
            Side::CatHot | Side::CatFresh(_) => {
                let f = single()?;
                let p = if side == Side::CatHot {
                    &self.hot_paths[0]
                } else {
                    &self.fresh_paths[0]
                };
                run_cmd(Command::new("cat").arg(p).stdout(dev_null()?), "cat")?;
                (f.size, None)
            }
            Side::FioHot | Side::FioFresh(_) => {
                let f = single()?;
                let p = if side == Side::FioHot {
                    &self.hot_paths[0]
                } else {
                    &self.fresh_paths[0]
                };
                let (d, b) = fio_run(p, pat, f.size)?;
                (b, Some(d))
            }
        };
        let wall = t0.elapsed();
        let cpu = match side {
            Side::OursFresh | Side::OursWarm | Side::KernelHot | Side::KernelFresh(_) => {
                Some(thread_cpu() - cpu0)
            }
            Side::OursProcess | Side::CatHot | Side::CatFresh(_) => Some(children_cpu() - kids0),
            Side::FioHot | Side::FioFresh(_) => None,
        };
        let disk = match (disk0, disk_reads(&w.image)) {
            (Some((r0, s0)), Some((r1, s1))) => Some((r1 - r0, s1 - s0)),
            _ => None,
        };
        Ok(Meas {
            wall: fio_time.unwrap_or(wall),
            cpu,
            bytes,
            disk,
        })
    }
}

fn side_label(side: Side, default_ra: u32) -> String {
    let ra = |r: u32| {
        if r == 0 {
            format!("readahead {default_ra} KiB (mount default)")
        } else {
            format!("readahead {r} KiB")
        }
    };
    match side {
        Side::OursFresh => "fresh Image per run (empty decode cache)".into(),
        Side::OursWarm => "same Image every run (decode cache warm)".into(),
        Side::OursProcess => "process: `erofs-virtiofsd image cat` (empty decode cache)".into(),
        Side::KernelHot => "pread, same mount every run (page cache warm)".into(),
        Side::KernelFresh(r) => format!("pread, fresh mount per run, {}", ra(r)),
        Side::CatHot => "process: `cat` on the warm mount".into(),
        Side::CatFresh(r) => format!("process: `cat`, fresh mount, {}", ra(r)),
        Side::FioHot => "fio on the warm mount (fio's own time)".into(),
        Side::FioFresh(r) => format!("fio, fresh mount, {} (fio's own time)", ra(r)),
    }
}

// ------------------------------------------------------------------ results

struct Row {
    workload: &'static str,
    pattern: String,
    state: &'static str,
    ours: String,
    o: Samples,
    kernel: String,
    k: Samples,
    diagnostic: bool,
    headline: bool,
}

impl Row {
    fn ratio(&self) -> f64 {
        let k = self.k.mibs();
        if k == 0.0 {
            0.0
        } else {
            self.o.mibs() / k
        }
    }

    fn cpu_ratio(&self) -> Option<f64> {
        Some(self.o.cpu_mibs()? / self.k.cpu_mibs()?)
    }
}

fn fmt_tp(s: &Samples) -> String {
    format!("{:.0} ({:.0})", s.mibs(), mibs(s.bytes(), s.min()))
}

// ------------------------------------------------------------- one workload

struct Cfg {
    runs: usize,
    states: Vec<String>,
    process: bool,
    fio: bool,
    ra_kb: u32,
}

impl Cfg {
    fn wants(&self, s: &str) -> bool {
        self.states.iter().any(|x| x == s)
    }
}

fn bench_workload(
    work: &Path,
    w: &Workload,
    pat: &Pattern,
    cfg: &Cfg,
    rows: &mut Vec<Row>,
) -> Res<()> {
    let bytes = pat.bytes(w);
    println!(
        "== {} / {}: {} file(s), {} bytes per run",
        w.name,
        pat.name(),
        w.files.len(),
        bytes
    );
    let hot_dir = work.join(format!("mnt-{}-hot", w.name));
    let hot = Mount::new(&w.image, &hot_dir)?;
    let default_ra = hot.read_ahead_kb()?;
    let fresh_dir = work.join(format!("mnt-{}-fresh", w.name));
    let mut ctx = Ctx {
        w,
        pat,
        buf: vec![0u8; pat.buf_len()],
        warm_img: open_image(file_source(&w.image)?)?,
        hot_paths: w.mount_paths(&hot_dir),
        fresh: FreshMount::new(&w.image, fresh_dir.clone()),
        fresh_paths: w.mount_paths(&fresh_dir),
    };

    // Same bytes on both sides.
    {
        let img = open_image(file_source(&w.image)?)?;
        let buf = &mut ctx.buf;
        let o = digest_of(w, |s| ours_run(&img, w, pat, buf, Some(s)).map(|_| ()))?;
        let k = digest_of(w, |s| {
            kernel_run(&ctx.hot_paths, w, pat, buf, Some(s)).map(|_| ())
        })?;
        if o != k {
            let bad: Vec<_> = w
                .files
                .iter()
                .zip(o.iter().zip(&k))
                .filter(|(_, (a, b))| a != b)
                .map(|(f, _)| String::from_utf8_lossy(&f.path).into_owned())
                .take(5)
                .collect();
            return Err(format!(
                "{} / {}: ours and the kernel read different bytes (files {bad:?})",
                w.name,
                pat.name()
            ));
        }
        println!(
            "checked: ours and the kernel read the same bytes (sha256 {}...)",
            &o[o.len() - 1][..16]
        );
        // Diagnostics: what one run of ours reads from the image.
        let c = Arc::new(Counting::new(file_source(&w.image)?));
        let img = open_image(c.clone())?;
        let (_, calls) = ours_run(&img, w, pat, buf, None)?;
        println!(
            "ours, one run on a fresh Image: {calls} Image::read calls; {}",
            c.report("preads of the image", 3)
        );
    }

    let ra = cfg.ra_kb;
    let proc_rows = cfg.process && w.single;
    let fio = proc_rows && cfg.fio;
    let mut got: HashMap<(bool, Side), Samples> = HashMap::new();
    let mut phase = |dropped: bool, sides: &[Side], ctx: &mut Ctx| -> Res<()> {
        for i in 0..=cfg.runs {
            for &s in sides {
                let m = ctx.run(s, dropped)?;
                if i > 0 {
                    got.entry((dropped, s)).or_default().0.push(m);
                }
            }
        }
        Ok(())
    };

    // Hot image file: hot and cold-decode.
    let mut sides = Vec::new();
    if cfg.wants("cold-decode") {
        sides.extend([Side::OursFresh, Side::KernelFresh(0), Side::KernelFresh(ra)]);
    }
    if cfg.wants("hot") {
        sides.extend([Side::OursWarm, Side::KernelHot]);
    }
    if proc_rows && pat.is_seq() {
        if cfg.wants("cold-decode") {
            sides.extend([Side::OursProcess, Side::CatFresh(0), Side::CatFresh(ra)]);
        }
        if cfg.wants("hot") {
            sides.push(Side::CatHot);
        }
    }
    if fio {
        if cfg.wants("cold-decode") {
            sides.push(Side::FioFresh(0));
        }
        if cfg.wants("hot") {
            sides.push(Side::FioHot);
        }
    }
    phase(false, &sides, &mut ctx)?;

    // Dropped caches.
    if cfg.wants("dropped") {
        let mut sides = vec![Side::OursFresh, Side::KernelFresh(0), Side::KernelFresh(ra)];
        if proc_rows && pat.is_seq() {
            sides.extend([Side::OursProcess, Side::CatFresh(0), Side::CatFresh(ra)]);
        }
        if fio {
            sides.push(Side::FioFresh(0));
        }
        phase(true, &sides, &mut ctx)?;
        // Leave the image file in the page cache for what follows.
        read_whole_file(&w.image)?;
    }
    ctx.fresh.finish()?;
    drop(ctx);
    hot.unmount()?;

    // Rows: (state, ours, kernel, dropped, diagnostic, headline).
    let mut rec = |state: &'static str, o: Side, k: Side, dropped: bool, diag: bool| {
        let (Some(os), Some(ks)) = (got.get(&(dropped, o)), got.get(&(dropped, k))) else {
            return;
        };
        rows.push(Row {
            workload: w.name,
            pattern: pat.name(),
            state,
            ours: side_label(o, default_ra),
            o: os.clone(),
            kernel: side_label(k, default_ra),
            k: ks.clone(),
            diagnostic: diag,
            headline: !diag && matches!(o, Side::OursFresh | Side::OursWarm),
        });
    };
    rec("hot", Side::OursWarm, Side::KernelHot, false, false);
    rec(
        "cold-decode",
        Side::OursFresh,
        Side::KernelFresh(0),
        false,
        false,
    );
    rec(
        "cold-decode",
        Side::OursFresh,
        Side::KernelFresh(ra),
        false,
        false,
    );
    rec(
        "dropped",
        Side::OursFresh,
        Side::KernelFresh(0),
        true,
        false,
    );
    rec(
        "dropped",
        Side::OursFresh,
        Side::KernelFresh(ra),
        true,
        false,
    );
    rec(
        "cold-decode",
        Side::OursProcess,
        Side::CatFresh(0),
        false,
        false,
    );
    rec(
        "cold-decode",
        Side::OursProcess,
        Side::CatFresh(ra),
        false,
        false,
    );
    rec("hot", Side::OursProcess, Side::CatHot, false, true);
    rec("dropped", Side::OursProcess, Side::CatFresh(0), true, false);
    rec(
        "dropped",
        Side::OursProcess,
        Side::CatFresh(ra),
        true,
        false,
    );
    rec("hot", Side::OursWarm, Side::FioHot, false, true);
    rec(
        "cold-decode",
        Side::OursFresh,
        Side::FioFresh(0),
        false,
        true,
    );
    rec("dropped", Side::OursFresh, Side::FioFresh(0), true, true);

    // Disk reads in the dropped state (diagnostics).
    let disk = |s: Side| {
        got.get(&(true, s))
            .and_then(Samples::disk_median)
            .map(|(r, sec)| format!("{r} reads / {} KiB", sec / 2))
    };
    if let (Some(o), Some(k0), Some(kr)) = (
        disk(Side::OursFresh),
        disk(Side::KernelFresh(0)),
        disk(Side::KernelFresh(ra)),
    ) {
        println!(
            "dropped caches, disk reads per run (median): ours {o}; kernel, readahead {default_ra} KiB {k0}; kernel, readahead {ra} KiB {kr}"
        );
    }
    Ok(())
}

/// `BENCH_PROFILE`: one side only, `runs` times.
fn profile_workload(work: &Path, w: &Workload, pat: &Pattern, side: &str, runs: usize) -> Res<()> {
    let side = match side {
        "ours-fresh" => Side::OursFresh,
        "ours-warm" => Side::OursWarm,
        "kernel-cold" => Side::KernelFresh(env_usize("BENCH_PROFILE_RA_KB", 0)? as u32),
        "kernel-hot" => Side::KernelHot,
        other => {
            return Err(format!(
                "BENCH_PROFILE={other}: want ours-fresh, ours-warm, kernel-cold or kernel-hot"
            ))
        }
    };
    let hot_dir = work.join(format!("mnt-{}-hot", w.name));
    let hot = Mount::new(&w.image, &hot_dir)?;
    let fresh_dir = work.join(format!("mnt-{}-fresh", w.name));
    let mut ctx = Ctx {
        w,
        pat,
        buf: vec![0u8; pat.buf_len()],
        warm_img: open_image(file_source(&w.image)?)?,
        hot_paths: w.mount_paths(&hot_dir),
        fresh: FreshMount::new(&w.image, fresh_dir.clone()),
        fresh_paths: w.mount_paths(&fresh_dir),
    };
    if matches!(side, Side::OursWarm | Side::KernelHot) {
        ctx.run(side, false)?; // warm-up
    }
    let mut s = Samples::default();
    for _ in 0..runs {
        s.0.push(ctx.run(side, false)?);
    }
    ctx.fresh.finish()?;
    drop(ctx);
    hot.unmount()?;
    println!(
        "profile {side:?} {} / {}: {runs} runs, median {:.3} ms = {:.0} MiB/s (best {:.0}); CPU median {:.3} ms",
        w.name,
        pat.name(),
        s.median().as_secs_f64() * 1e3,
        s.mibs(),
        mibs(s.bytes(), s.min()),
        s.cpu_median().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

// ------------------------------------------------------------ preparation

fn mkfs_version() -> String {
    let out = Command::new("mkfs.erofs").output();
    out.ok()
        .and_then(|o| {
            let all = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&all)
                .lines()
                .find_map(|l| l.trim().strip_prefix("mkfs.erofs ").map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

/// Files of `img` (regular, distinct inodes, at least `min` bytes), sorted
/// by path.
fn regular_files(img: &Image, min: u64) -> Res<Vec<FileRef>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    erofs::walk(
        img,
        |e| {
            if e.inode.kind == InodeKind::File && e.inode.size >= min && seen.insert(e.inode.nid) {
                out.push(FileRef {
                    path: e.path.clone(),
                    nid: e.inode.nid,
                    size: e.inode.size,
                });
            }
        },
        |p, e| problems.push(format!("{}: {e}", String::from_utf8_lossy(p))),
    )
    .map_err(|e| format!("walk: {e}"))?;
    if !problems.is_empty() {
        return Err(format!("walk problems: {problems:?}"));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn big_file(img: &Image) -> Res<Vec<FileRef>> {
    let files = regular_files(img, 0)?;
    let f = files
        .into_iter()
        .find(|f| f.path == BIG_FILE.as_bytes())
        .ok_or(format!("{BIG_FILE} not found"))?;
    Ok(vec![f])
}

fn compression_of(img: &Image, files: &[FileRef]) -> Res<String> {
    let (mut c, mut u) = (0, 0);
    for f in files {
        let ino = img.inode(f.nid).map_err(|e| e.to_string())?;
        if ino.is_compressed() {
            c += 1;
        } else {
            u += 1;
        }
    }
    Ok(match (c, u) {
        (_, 0) => "all compressed".into(),
        (c, u) => format!("{c} compressed, {u} stored uncompressed"),
    })
}

struct Spec {
    name: &'static str,
    alg: &'static str,
    /// Fixture image name, or `None` for an image built here with mkfs.
    fixture: Option<&'static str>,
    mkfs_alg: &'static str,
    edge: bool,
    origin: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "lz4",
        alg: "lz4",
        fixture: None,
        mkfs_alg: "lz4",
        edge: false,
        origin: "`mkfs.erofs -zlz4` (default -C: 4 KiB pclusters)",
    },
    Spec {
        name: "lz4hc",
        alg: "lz4hc",
        fixture: None,
        mkfs_alg: "lz4hc",
        edge: false,
        origin: "`mkfs.erofs -zlz4hc` (default level, default -C: 4 KiB pclusters)",
    },
    Spec {
        name: "lz4hc-C1m",
        alg: "lz4hc",
        fixture: Some(BIG_LZ4HC),
        mkfs_alg: "",
        edge: false,
        origin: "mkfs 1.9 `-zlz4hc,12 -C1048576`",
    },
    Spec {
        name: "zstd",
        alg: "zstd",
        fixture: Some(BIG_ZSTD),
        mkfs_alg: "",
        edge: false,
        origin: "mkfs 1.9 `-zzstd,level=15 -C131072 -Ededupe,fragments`",
    },
    Spec {
        name: "deflate9",
        alg: "deflate",
        fixture: Some("edge_deflate9.erofs"),
        mkfs_alg: "",
        edge: true,
        origin: "mkfs 1.9 `-zdeflate,level=9`",
    },
    Spec {
        name: "libdeflate12",
        alg: "deflate",
        fixture: Some("edge_libdeflate12.erofs"),
        mkfs_alg: "",
        edge: true,
        origin: "mkfs 1.9 `-zlibdeflate,level=12`",
    },
    Spec {
        name: "lzma109-C1m",
        alg: "lzma",
        fixture: Some("edge_lzma109-C1m.erofs"),
        mkfs_alg: "",
        edge: true,
        origin: "mkfs 1.9 `-zlzma,level=109,dictsize=1048576 -C1048576`",
    },
    Spec {
        name: "lzma-MZ",
        alg: "lzma",
        fixture: Some("edge_lzma-MZ.erofs"),
        mkfs_alg: "",
        edge: true,
        origin: "mkfs 1.9 `-zlzma --MZ`",
    },
    Spec {
        name: "edge-lz4",
        alg: "lz4, edge files (reference)",
        fixture: Some("edge_lz4.erofs"),
        mkfs_alg: "",
        edge: true,
        origin: "mkfs 1.9 `-zlz4`",
    },
    Spec {
        name: "edge-zstd19",
        alg: "zstd, edge files (reference)",
        fixture: Some("edge_zstd19.erofs"),
        mkfs_alg: "",
        edge: true,
        origin: "mkfs 1.9 `-zzstd,level=19`",
    },
];

fn prepare(work: &Path, images: &Path, spec: &Spec, tree: &mut Option<PathBuf>) -> Res<Workload> {
    let image = work.join(format!("{}.erofs", spec.name));
    let origin = match spec.fixture {
        Some(fx) => {
            let src = images.join(fx);
            fs::copy(&src, &image).map_err(|e| format!("copy {}: {e}", src.display()))?;
            format!("fixture `{fx}` ({})", spec.origin)
        }
        None => {
            let t = match tree {
                Some(t) => t.clone(),
                None => {
                    // Copy the 40 MiB file out of a kernel mount of a fixture.
                    let t = work.join("big-tree");
                    fs::create_dir_all(&t).map_err(|e| e.to_string())?;
                    let fx = work.join("src.erofs");
                    fs::copy(images.join(BIG_LZ4HC), &fx).map_err(|e| e.to_string())?;
                    let mdir = work.join("mnt-src");
                    let m = Mount::new(&fx, &mdir)?;
                    run_cmd(
                        Command::new("cp")
                            .arg("-a")
                            .arg(mdir.join(&BIG_FILE[1..]))
                            .arg(&t),
                        "cp -a",
                    )?;
                    m.unmount()?;
                    fs::remove_file(&fx).map_err(|e| e.to_string())?;
                    *tree = Some(t.clone());
                    t
                }
            };
            run_cmd(
                Command::new("mkfs.erofs")
                    .arg(format!("-z{}", spec.mkfs_alg))
                    .arg(&image)
                    .arg(&t),
                "mkfs.erofs",
            )?;
            format!(
                "built here with mkfs.erofs {} {}",
                mkfs_version(),
                spec.origin
            )
        }
    };
    read_whole_file(&image)?; // into the page cache
    let img = open_image(file_source(&image)?)?;
    let files = if spec.edge {
        regular_files(&img, EDGE_MIN_SIZE)?
    } else {
        big_file(&img)?
    };
    let size = fs::metadata(&image).map_err(|e| e.to_string())?.len();
    let what = if spec.edge {
        format!(
            "the {} regular files of at least {EDGE_MIN_SIZE} bytes of the edge tree",
            files.len()
        )
    } else {
        format!("`{BIG_FILE}`")
    };
    Ok(Workload {
        name: spec.name,
        alg: spec.alg,
        image,
        origin: format!(
            "{origin}; image {size} bytes; reads {what}: {} bytes, {}",
            files.iter().map(|f| f.size).sum::<u64>(),
            compression_of(&img, &files)?
        ),
        files,
        single: !spec.edge,
    })
}

// -------------------------------------------------------------------- main

fn env_usize(name: &str, default: usize) -> Res<usize> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name}={v}: want a positive integer")),
        _ => Ok(default),
    }
}

fn env_list(name: &str, all: &[&str]) -> Res<Vec<String>> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => {
            let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
            for i in &items {
                if !all.contains(&i.as_str()) {
                    return Err(format!("{name}: unknown {i:?} (want some of {all:?})"));
                }
            }
            Ok(items)
        }
        _ => Ok(all.iter().map(|s| s.to_string()).collect()),
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_results(workloads: &[Workload], rows: &[Row]) {
    println!();
    println!("--- results (markdown) ---");
    for w in workloads {
        if !rows.iter().any(|r| r.workload == w.name) {
            continue;
        }
        println!();
        println!("**{}** ({}): {}", w.name, w.alg, w.origin);
        println!();
        println!("| pattern | caches | ours | ours MiB/s median (best) | kernel | kernel MiB/s median (best) | ours/kernel | ours/kernel, CPU time |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in rows.iter().filter(|r| r.workload == w.name) {
            let ratio = format!("{:.2}", r.ratio());
            let cpu = r.cpu_ratio().map_or("—".to_string(), |c| format!("{c:.2}"));
            println!(
                "| {} | {} | {}{} | {} | {} | {} | {} | {} |",
                r.pattern,
                r.state,
                if r.diagnostic { "*diagnostic*: " } else { "" },
                r.ours,
                fmt_tp(&r.o),
                r.kernel,
                fmt_tp(&r.k),
                if r.diagnostic {
                    ratio
                } else {
                    format!("**{ratio}**")
                },
                cpu
            );
        }
    }
    println!();
    println!("Summary: ours/kernel of median throughputs, in-process, wall-clock (CPU time in parentheses); above 1: ours is faster.");
    println!();
    let ra_cols: Vec<String> = {
        let mut v: Vec<String> = rows
            .iter()
            .filter(|r| r.headline && r.state != "hot")
            .map(|r| {
                format!(
                    "{} / {}",
                    r.state,
                    r.kernel.rsplit(", ").next().unwrap_or("")
                )
            })
            .collect();
        let mut seen = BTreeSet::new();
        v.retain(|c| seen.insert(c.clone()));
        v
    };
    print!("| workload | algorithm | pattern | hot |");
    for c in &ra_cols {
        print!(" {c} |");
    }
    println!();
    println!("|---|---|---|---|{}", "---|".repeat(ra_cols.len()));
    for w in workloads {
        for p in ["seq", "rand"] {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.workload == w.name && r.pattern.starts_with(p) && r.headline)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let fmt = |r: Option<&&Row>| {
                r.map_or("—".to_string(), |r| {
                    format!(
                        "{:.2} ({})",
                        r.ratio(),
                        r.cpu_ratio().map_or("—".into(), |c| format!("{c:.2}"))
                    )
                })
            };
            print!(
                "| {} | {} | {} | {} |",
                w.name,
                w.alg,
                p,
                fmt(mine.iter().find(|r| r.state == "hot"))
            );
            for c in &ra_cols {
                let r = mine.iter().find(|r| {
                    r.state != "hot"
                        && &format!(
                            "{} / {}",
                            r.state,
                            r.kernel.rsplit(", ").next().unwrap_or("")
                        ) == c
                });
                print!(" {} |", fmt(r));
            }
            println!();
        }
    }
    println!("--- end results ---");
}

fn run() -> Res<()> {
    if erofs_virtiofsd::os::proc::euid() != 0 {
        return Err(
            "this benchmark mounts images and drops caches: run it as root \
             (e.g. `sudo scripts/bench-compressed.sh`)"
                .into(),
        );
    }
    let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
    let only = env_list("BENCH_ONLY", &names)?;
    let patterns = env_list("BENCH_PATTERNS", &["seq", "rand"])?;
    let states = env_list("BENCH_STATES", &["hot", "cold-decode", "dropped"])?;
    let runs = env_usize("BENCH_RUNS", 15)?;
    let seq_kib = env_usize("BENCH_SEQ_KIB", 128)?;
    let ra_kb = env_usize("BENCH_RA_KB", 2560)? as u32;
    let profile = std::env::var("BENCH_PROFILE")
        .ok()
        .filter(|s| !s.is_empty());
    let process = std::env::var("BENCH_NO_PROCESS").map_or(true, |v| v.is_empty() || v == "0");
    let fio = process && have_fio();
    let mut exes = vec![PathBuf::from(OUR_BIN)];
    exes.extend(which("cat"));
    exes.extend(which("fio"));
    let _ = EXECUTABLES.set(exes);
    let cfg = Cfg {
        runs,
        states,
        process,
        fio,
        ra_kb,
    };

    let images = fixtures_dir().join("images");
    if !images.join(BIG_LZ4HC).is_file() {
        return Err(format!(
            "fixture {} not found (set EROFS_FIXTURES to the fixtures directory)",
            images.join(BIG_LZ4HC).display()
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("erofs-bench-compressed-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;

    println!("machine: {}", machine());
    println!("our binary: {OUR_BIN}");
    println!(
        "runs per side: {runs}; states: {}; patterns: {}; seq requests: {seq_kib} KiB; kernel readahead variant: {ra_kb} KiB; fio: {}",
        cfg.states.join(","),
        patterns.join(","),
        if fio {
            "yes"
        } else if process {
            "not installed"
        } else {
            "off"
        }
    );
    println!("load average at start: {}", load_average());
    let mut tree = None;
    let mut rows = Vec::new();
    let mut workloads = Vec::new();
    for spec in SPECS.iter().filter(|s| only.iter().any(|o| o == s.name)) {
        let w = prepare(work.path(), &images, spec, &mut tree)?;
        println!("workload {} ({}): {}", w.name, w.alg, w.origin);
        for p in &patterns {
            let pat = if p == "seq" {
                Pattern::Seq { req: seq_kib << 10 }
            } else {
                Pattern::Rand {
                    reqs: rand_requests(&w.files),
                }
            };
            match &profile {
                Some(side) => profile_workload(work.path(), &w, &pat, side, runs)?,
                None => bench_workload(work.path(), &w, &pat, &cfg, &mut rows)?,
            }
        }
        workloads.push(w);
    }
    println!("load average at end: {}", load_average());
    if profile.is_none() {
        print_results(&workloads, &rows);
    }
    Ok(())
}
