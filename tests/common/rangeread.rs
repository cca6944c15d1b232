//! Random-range reads through the library, checked against `pread` on a
//! kernel mount of the same image.
//!
//! A [`RangeOracle`] mounts an image with the kernel driver, lists the regular
//! files the kernel shows, and opens the image in-process
//! ([`Image::open`]). Each check picks a file (weighted to files larger than
//! 64 KiB), a byte range (1 byte .. [`MAX_LEN`], anywhere: at 0, block
//! aligned, straddling the file's extent / pcluster boundaries, near and past
//! end of file), resolves the path with [`Image::lookup`] from the root,
//! reads the range with [`Image::read`] and compares it with `pread(2)` of
//! the kernel's file. Everything is driven by a seeded PRNG, so a failure
//! reproduces with the same seed.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use erofs_virtiofsd::erofs::zmap::ZMap;
use erofs_virtiofsd::erofs::{Image, ImageOptions, Inode};
use erofs_virtiofsd::source::open_path;

use super::kmount::{KernelMount, MountOptions};
use super::manifest::escape_bytes;
use super::trees::XorShift64;

/// Longest range read (300 KiB).
pub const MAX_LEN: u64 = 300 << 10;

/// Files larger than this are "large" and picked more often.
pub const LARGE_FILE: u64 = 64 << 10;

/// Most extent boundaries remembered per file.
const MAX_BOUNDARIES: usize = 1 << 16;

/// One regular file of the image, as the kernel shows it.
#[derive(Debug)]
pub struct FileInfo {
    /// Absolute raw path inside the image ("/a/b").
    pub path: Vec<u8>,
    /// Size the kernel reports.
    pub size: u64,
    /// The file on the kernel mount (shared by all threads; pread only).
    pub kfile: File,
    /// Ends of the file's extents as our map reports them (computed on
    /// first use; empty if mapping failed: the reads then report the error).
    boundaries: OnceLock<Vec<u64>>,
}

/// One range read.
#[derive(Clone, Copy, Debug)]
pub struct ReadOp {
    /// Index into [`RangeOracle::files`].
    pub file: usize,
    /// Byte offset.
    pub offset: u64,
    /// Bytes asked for.
    pub len: u64,
}

/// A range where our bytes differ from the kernel's.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Image name.
    pub image: String,
    /// Path inside the image (escaped).
    pub path: String,
    /// File size (kernel).
    pub size: u64,
    /// Range offset.
    pub offset: u64,
    /// Range length asked for.
    pub len: u64,
    /// What differs.
    pub what: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (size {}): read at offset {} length {}: {}",
            self.image, self.path, self.size, self.offset, self.len, self.what
        )
    }
}

/// What a run of checks did.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// Reads done.
    pub reads: u64,
    /// Bytes compared.
    pub bytes: u64,
    /// Reads that differed (or failed on our side).
    pub mismatches: u64,
    /// The first few mismatches, in order.
    pub first: Vec<Mismatch>,
    /// Wall time.
    pub elapsed: Duration,
}

impl RunReport {
    const KEEP: usize = 5;

    fn record(&mut self, m: Mismatch) {
        self.mismatches += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(m);
        }
    }

    fn merge(&mut self, other: RunReport) {
        self.reads += other.reads;
        self.bytes += other.bytes;
        self.mismatches += other.mismatches;
        for m in other.first {
            if self.first.len() < Self::KEEP {
                self.first.push(m);
            }
        }
    }

    /// Panics with the first mismatches if there were any.
    #[track_caller]
    pub fn assert_clean(&self, what: &str) {
        if self.mismatches == 0 {
            return;
        }
        let list: Vec<String> = self.first.iter().map(|m| format!("  {m}")).collect();
        panic!(
            "{what}: {} of {} range reads differ from the kernel; first ones:\n{}",
            self.mismatches,
            self.reads,
            list.join("\n")
        );
    }
}

/// Library and kernel views of one image, for range checks.
#[derive(Debug)]
pub struct RangeOracle {
    /// Image name for reports.
    pub name: String,
    /// The image, opened in-process.
    pub img: Arc<Image>,
    /// Every regular file the kernel shows.
    pub files: Vec<FileInfo>,
    /// Indexes of the files larger than [`LARGE_FILE`].
    pub large: Vec<usize>,
    // Dropped last: the kernel files above are closed first.
    mount: KernelMount,
}

impl RangeOracle {
    /// Mounts `image` (with extra `devices`) with the kernel, lists its
    /// regular files and opens it in-process with `opts` (its `devices` are
    /// filled in from `devices`).
    #[track_caller]
    pub fn new(name: &str, image: &Path, devices: &[&Path], mut opts: ImageOptions) -> Self {
        let mount = KernelMount::mount(image, &MountOptions::with_devices(devices))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut found = Vec::new();
        list_files(mount.path(), b"", &mut found);
        found.sort();
        let files: Vec<FileInfo> = found
            .into_iter()
            .map(|(path, size)| {
                let on_mount = mount.path().join(OsStr::from_bytes(&path[1..]));
                let kfile = File::open(&on_mount)
                    .unwrap_or_else(|e| panic!("{name}: open {}: {e}", on_mount.display()));
                FileInfo {
                    path,
                    size,
                    kfile,
                    boundaries: OnceLock::new(),
                }
            })
            .collect();
        assert!(
            !files.is_empty(),
            "{name}: the kernel shows no regular file"
        );
        let large = (0..files.len())
            .filter(|&i| files[i].size > LARGE_FILE)
            .collect();
        opts.devices = devices
            .iter()
            .map(|d| open_path(d, 0).unwrap_or_else(|e| panic!("open {}: {e}", d.display())))
            .collect();
        let src = open_path(image, 0).unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
        let img = Image::open(src, opts)
            .unwrap_or_else(|e| panic!("{name}: Image::open of {}: {e}", image.display()));
        RangeOracle {
            name: name.to_string(),
            img: Arc::new(img),
            files,
            large,
            mount,
        }
    }

    /// The kernel mount point.
    pub fn mount_path(&self) -> &Path {
        self.mount.path()
    }

    /// Picks a random range read. With `hot`, a third of the picks go to
    /// the first two large files' first MiB (so that threads collide on the
    /// same pclusters).
    pub fn pick(&self, img: &Image, rng: &mut XorShift64, hot: bool) -> ReadOp {
        if hot && !self.large.is_empty() && rng.below(3) == 0 {
            let file = self.large[rng.below(self.large.len().min(2) as u64) as usize];
            let size = self.files[file].size;
            let offset = rng.below(size.min(1 << 20));
            let len = 1 + rng.below(64 << 10);
            return ReadOp { file, offset, len };
        }
        let file = if !self.large.is_empty() && rng.below(10) < 7 {
            self.large[rng.below(self.large.len() as u64) as usize]
        } else {
            rng.below(self.files.len() as u64) as usize
        };
        let size = self.files[file].size;
        let (offset, len) = match rng.below(100) {
            // Anywhere in the file.
            0..=29 => (rng.below(size + 1), random_len(rng)),
            // Straddling an extent (pcluster) boundary.
            30..=54 => {
                let b = self.boundaries(img, file);
                if b.is_empty() {
                    (rng.below(size + 1), random_len(rng))
                } else {
                    let end = b[rng.below(b.len() as u64) as usize];
                    let before = 1 + rng.below(end.clamp(1, 16 << 10));
                    let offset = end.saturating_sub(before);
                    let extra = random_len(rng);
                    let len = (before + rng.below(extra)).clamp(1, MAX_LEN);
                    (offset, len)
                }
            }
            // Near the end of file.
            55..=69 => {
                let back = 1 + rng.below(size.clamp(1, 256 << 10));
                (size.saturating_sub(back), random_len(rng))
            }
            // At or just past the end of file.
            70..=72 => (size + rng.below(3), random_len(rng)),
            // From the start.
            73..=82 => (0, random_len(rng)),
            // Block aligned, give or take a byte.
            _ => {
                let blocks = size / 4096 + 1;
                let base = rng.below(blocks) * 4096;
                let offset = match rng.below(3) {
                    0 => base.saturating_sub(1),
                    1 => base,
                    _ => base + 1,
                };
                (offset, random_len(rng))
            }
        };
        ReadOp { file, offset, len }
    }

    /// The file's extent ends, as our map reports them (cached).
    fn boundaries(&self, img: &Image, file: usize) -> &[u64] {
        let f = &self.files[file];
        f.boundaries.get_or_init(|| {
            let Ok(inode) = resolve(img, &f.path) else {
                return Vec::new();
            };
            extent_ends(img, &inode).unwrap_or_default()
        })
    }

    /// Reads `op` through `img` and with pread from the kernel's file.
    /// `ours`/`theirs` are scratch buffers of at least `op.len` bytes.
    pub fn check(
        &self,
        img: &Image,
        op: ReadOp,
        ours: &mut [u8],
        theirs: &mut [u8],
    ) -> Result<u64, Mismatch> {
        let f = &self.files[op.file];
        let len = op.len as usize;
        let mismatch = |what: String| Mismatch {
            image: self.name.clone(),
            path: escape_bytes(&f.path),
            size: f.size,
            offset: op.offset,
            len: op.len,
            what,
        };
        let kn = pread_full(&f.kfile, &mut theirs[..len], op.offset).unwrap_or_else(|e| {
            panic!(
                "{}: kernel pread of {} at {} ({} bytes) failed: {e}",
                self.name,
                escape_bytes(&f.path),
                op.offset,
                op.len
            )
        });
        let inode = resolve(img, &f.path).map_err(|e| mismatch(format!("lookup: {e}")))?;
        if inode.size != f.size {
            return Err(mismatch(format!(
                "our inode size is {}, the kernel's {}",
                inode.size, f.size
            )));
        }
        let buf = &mut ours[..len];
        // Poison the buffer so bytes we fail to write show up.
        buf.fill(0xa5);
        let n = img
            .read(&inode, op.offset, buf)
            .map_err(|e| mismatch(format!("Image::read failed: {e}")))?;
        if n != kn {
            return Err(mismatch(format!("we returned {n} bytes, the kernel {kn}")));
        }
        if let Some(i) = (0..n).find(|&i| buf[i] != theirs[i]) {
            let at = op.offset + i as u64;
            let differing = (i..n).filter(|&j| buf[j] != theirs[j]).count();
            let ext = describe_extent(img, &inode, at);
            return Err(mismatch(format!(
                "first difference at file offset {at} (byte {i} of the range): ours {:#04x}, \
                 kernel {:#04x}; {differing} of the {} bytes from there differ; \
                 our extent there: {ext}",
                buf[i],
                theirs[i],
                n - i
            )));
        }
        Ok(n as u64)
    }

    /// `reads` random checks through `img` from `seed`.
    pub fn run_with(&self, img: &Image, seed: u64, reads: u64, hot: bool) -> RunReport {
        let started = Instant::now();
        let mut rng = XorShift64::new(seed);
        let mut ours = vec![0u8; MAX_LEN as usize];
        let mut theirs = vec![0u8; MAX_LEN as usize];
        let mut report = RunReport::default();
        for _ in 0..reads {
            let op = self.pick(img, &mut rng, hot);
            report.reads += 1;
            match self.check(img, op, &mut ours, &mut theirs) {
                Ok(n) => report.bytes += n,
                Err(m) => report.record(m),
            }
        }
        report.elapsed = started.elapsed();
        report
    }

    /// `reads` random checks through the shared image from `seed`.
    pub fn run(&self, seed: u64, reads: u64) -> RunReport {
        self.run_with(&self.img, seed, reads, false)
    }

    /// `threads` threads, each doing `reads` random checks (seeds
    /// `seed + thread`) through its own clone of the shared `Arc<Image>`,
    /// started together.
    pub fn run_concurrent(&self, seed: u64, threads: usize, reads: u64) -> RunReport {
        let started = Instant::now();
        let barrier = Barrier::new(threads);
        let mut total = RunReport::default();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let img = Arc::clone(&self.img);
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        self.run_with(&img, seed.wrapping_add(t as u64), reads, true)
                    })
                })
                .collect();
            for h in handles {
                total.merge(h.join().expect("a reader thread panicked"));
            }
        });
        total.elapsed = started.elapsed();
        total
    }
}

/// A random length: tiny, log-uniform up to [`MAX_LEN`], uniform, or whole
/// blocks.
fn random_len(rng: &mut XorShift64) -> u64 {
    match rng.below(10) {
        0 | 1 => 1 + rng.below(16),
        2..=6 => {
            let e = rng.below(19);
            ((1 << e) + rng.below(1 << e)).min(MAX_LEN)
        }
        7 | 8 => 1 + rng.below(MAX_LEN),
        _ => 4096 * (1 + rng.below(MAX_LEN / 4096)),
    }
}

/// Resolves absolute `path` with [`Image::lookup`] from the root.
pub fn resolve(img: &Image, path: &[u8]) -> Result<Inode, String> {
    let mut inode = img
        .inode(img.root_nid())
        .map_err(|e| format!("root inode: {e}"))?;
    for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
        let found = img
            .lookup(&inode, name)
            .map_err(|e| format!("lookup of {:?}: {e}", escape_bytes(name)))?;
        let (nid, _) = found.ok_or_else(|| format!("{:?} not found", escape_bytes(name)))?;
        inode = img
            .inode(nid)
            .map_err(|e| format!("inode {nid} ({:?}): {e}", escape_bytes(name)))?;
    }
    Ok(inode)
}

/// The ends of `inode`'s extents (compressed: [`ZMap`]; else the block map),
/// in order.
pub fn extent_ends(img: &Image, inode: &Inode) -> Result<Vec<u64>, String> {
    let mut ends = Vec::new();
    let zmap = if inode.is_compressed() {
        Some(ZMap::new(img, inode).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut pos = 0u64;
    while pos < inode.size && ends.len() < MAX_BOUNDARIES {
        let (la, len) = match &zmap {
            Some(z) => {
                let e = z.map(pos).map_err(|e| e.to_string())?;
                (e.la, e.llen)
            }
            None => {
                let e = img.map(inode, pos).map_err(|e| e.to_string())?;
                (e.la, e.len)
            }
        };
        let end = la.saturating_add(len).min(inode.size);
        if end <= pos {
            break;
        }
        ends.push(end);
        pos = end;
    }
    Ok(ends)
}

/// Our extent at `at`, for mismatch reports.
fn describe_extent(img: &Image, inode: &Inode, at: u64) -> String {
    if !inode.is_compressed() {
        return match img.map(inode, at) {
            Ok(e) => format!("{e:?} (layout {})", inode.layout),
            Err(e) => format!("map failed: {e}"),
        };
    }
    match ZMap::new(img, inode).and_then(|z| z.map(at)) {
        Ok(e) => format!("{e:?} (layout {})", inode.layout),
        Err(e) => format!("map failed: {e}"),
    }
}

/// pread until `buf` is full or end of file.
pub fn pread_full(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Appends every regular file under `dir` (raw path `prefix/...`) with its
/// size; does not follow symlinks.
pub fn list_files(dir: &Path, prefix: &[u8], out: &mut Vec<(Vec<u8>, u64)>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
        let name = entry.file_name();
        let mut path = prefix.to_vec();
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        let full: PathBuf = entry.path();
        let md =
            fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("lstat {}: {e}", full.display()));
        if md.is_dir() {
            list_files(&full, &path, out);
        } else if md.is_file() {
            out.push((path, md.len()));
        }
    }
}

/// Per-image summary line for test logs.
pub fn summary(name: &str, r: &RunReport) -> String {
    format!(
        "{name}: {} reads, {:.1} MiB compared, {} mismatches, {:.2?}",
        r.reads,
        r.bytes as f64 / (1 << 20) as f64,
        r.mismatches,
        r.elapsed
    )
}
