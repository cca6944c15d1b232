//! `cargo bench --bench reader`: our EROFS reader against the Linux kernel's
//! EROFS driver on the fixtures' `usr` tree (issue 2). Needs root: it mounts
//! images (file-backed `mount(2)`).
//!
//! Two comparisons; in each, the sides run N times in turn (A, B, A, B, ...)
//! after one untimed warm-up run each, and the figures are min and median
//! wall-clock time per side and the ratio ours / kernel of the medians.
//!
//! (a) **lookup + stat of every path** of `usr_zstd15-ztailpack.erofs`
//!     (compressed data, but every piece of metadata is readable). The
//!     paths come from a walk done before timing. Ours, in-process with the
//!     library: open the image, then for each path start at the root inode
//!     and resolve component by component with `Image::lookup` +
//!     `Image::inode` (what `image stat` does). Kernel: `lstat` of each path
//!     on a kernel mount of the same file, on a mount whose dentry/inode
//!     caches are warm (same mount every run) and on a fresh mount (unmount +
//!     mount before each run, not timed).
//!
//! (b) **manifest** (walk, lstat, readlink, xattrs, SHA-256 of every regular
//!     file) of an uncompressed image of the same tree, built with the
//!     distribution's `mkfs.erofs` (default options, `-T0`) from a copy of
//!     the kernel's view of the fixture. Ours: the release binary
//!     `erofs-virtiofsd image manifest IMAGE`, the whole process timed.
//!     Kernel: `mount(2)` + this bench re-run as a child process that walks
//!     the mount and writes the same manifest (lstat, readlink,
//!     listxattr + getxattr, SHA-256 in 1 MiB reads, same JSON writer);
//!     unmounting after the run is not timed. A fresh mount every run.
//!
//! In both, the image file is in the host page cache for both sides (read
//! once before timing); both sides read the same private copy of it.
//! Before timing, each comparison checks that both sides see the same thing.
//!
//! Environment: `BENCH_RUNS` (runs per side, default 100 for (a) and 30 for
//! (b)), `BENCH_ONLY` (`a` or `b`: run one comparison, e.g. under a
//! profiler), `EROFS_FIXTURES` (fixtures directory, default `tests/fixtures`,
//! built by `scripts/fixtures.sh`).

mod util;

use std::collections::BTreeSet;
use std::fs;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::{cstr, fixtures_dir, machine, run_cmd, umount, Counting, Res};

use erofs_virtiofsd::cli::json::{backslash_replace, hex, Object};
use erofs_virtiofsd::erofs::{self, Image, ImageOptions, Inode, InodeKind};
use erofs_virtiofsd::source::{self, MemorySource, Source};
use sha2::{Digest, Sha256};

/// Our command line tool, built by cargo with the bench (release) profile.
const OUR_BIN: &str = env!("CARGO_BIN_EXE_erofs-virtiofsd");
/// The compressed fixture whose metadata (a) walks.
const USR_IMAGE: &str = "usr_zstd15-ztailpack.erofs";
/// Argument that turns this binary into the kernel-side manifest walker.
const WALKER_ARG: &str = "--kernel-walker";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == WALKER_ARG) {
        let Some(dir) = args.get(i + 1) else {
            eprintln!("{WALKER_ARG} needs a directory");
            return ExitCode::FAILURE;
        };
        let out = io::stdout();
        let mut out = io::BufWriter::new(out.lock());
        return match kernel_manifest(Path::new(dir), &mut out).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kernel walker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench reader: error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- mounting

/// Mounts `image` read-only at `dir` with the kernel's EROFS driver,
/// file-backed (each mount gets its own superblock and caches).
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
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOTBLK) {
        // A kernel without file-backed mounts: util-linux attaches a loop
        // device (the image is a private copy, so never a shared one).
        let st = Command::new("mount")
            .args(["-t", "erofs", "-o", "ro"])
            .arg(image)
            .arg(dir)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if st.success() {
            return Ok(());
        }
    }
    Err(format!(
        "mount -t erofs {} {}: {err} (is the kernel's EROFS driver available?)",
        image.display(),
        dir.display()
    ))
}

/// A kernel mount, unmounted on drop.
struct Mount {
    dir: PathBuf,
    active: bool,
}

impl Mount {
    fn new(image: &Path, dir: &Path) -> Res<Mount> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        mount_erofs(image, dir)?;
        Ok(Mount {
            dir: dir.to_path_buf(),
            active: true,
        })
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

// ------------------------------------------------------------------ timing

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }

    fn min(&self) -> Duration {
        self.sorted().first().copied().unwrap_or_default()
    }

    fn median(&self) -> Duration {
        let v = self.sorted();
        match v.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

/// Rows of the final table.
struct Row {
    bench: &'static str,
    side: String,
    how: &'static str,
    s: Samples,
    ratio_vs: Option<Duration>,
}

// ------------------------------------------------------------- (a) metadata

/// Every path of the image, from our walk ("/" first, then sorted).
fn our_paths(img: &Image) -> Res<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    let mut problems = Vec::new();
    erofs::walk(
        img,
        |e| paths.push(e.path.clone()),
        |p, e| problems.push(format!("{}: {e}", backslash_replace(p).0)),
    )
    .map_err(|e| format!("walk: {e}"))?;
    if !problems.is_empty() {
        return Err(format!("walk problems: {problems:?}"));
    }
    paths.sort();
    Ok(paths)
}

/// Resolves `path` from the root component by component, like `image stat`.
fn our_resolve(img: &Image, path: &[u8]) -> Res<Inode> {
    let mut cur = img.inode(img.root_nid()).map_err(|e| e.to_string())?;
    for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let (nid, _) = img
            .lookup(&cur, comp)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: not found", backslash_replace(path).0))?;
        cur = img.inode(nid).map_err(|e| e.to_string())?;
    }
    Ok(cur)
}

/// One run of our side: open the image, resolve and stat every path.
fn ours_stat_all(src: Arc<dyn Source>, paths: &[Vec<u8>]) -> Res<u64> {
    let img = Image::open(src, ImageOptions::default()).map_err(|e| e.to_string())?;
    let mut acc = 0u64;
    for p in paths {
        let ino = our_resolve(&img, p)?;
        acc = acc
            .wrapping_add(ino.size)
            .wrapping_add(u64::from(ino.mode) ^ u64::from(ino.nlink));
    }
    Ok(black_box(acc))
}

/// One run of the kernel side: lstat every path on the mount.
fn kernel_stat_all(paths: &[PathBuf]) -> Res<u64> {
    let mut acc = 0u64;
    for p in paths {
        let m = fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        acc = acc
            .wrapping_add(m.size())
            .wrapping_add(u64::from(m.mode()) ^ m.nlink());
    }
    Ok(black_box(acc))
}

fn mount_path(mnt: &Path, p: &[u8]) -> PathBuf {
    let rel = p.strip_prefix(b"/").unwrap_or(p);
    if rel.is_empty() {
        mnt.to_path_buf()
    } else {
        mnt.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// Every path under `root` as seen by the kernel ("/"-rooted bytes).
fn kernel_paths(root: &Path) -> Res<BTreeSet<Vec<u8>>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((abs, rel)) = stack.pop() {
        let md = fs::symlink_metadata(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
        if md.is_dir() {
            for ent in fs::read_dir(&abs).map_err(|e| format!("{}: {e}", abs.display()))? {
                let ent = ent.map_err(|e| e.to_string())?;
                let mut r = rel.clone();
                if r.len() > 1 {
                    r.push(b'/');
                }
                r.extend_from_slice(ent.file_name().as_bytes());
                stack.push((ent.path(), r));
            }
        }
        out.insert(rel);
    }
    Ok(out)
}

/// Replays one run of ours and splits its reads between `Image::inode` and
/// `Image::lookup` (diagnostics).
fn attribute_reads(inner: Arc<dyn Source>, paths: &[Vec<u8>]) -> Res<String> {
    let c = Arc::new(Counting::new(inner));
    let img = Image::open(c.clone(), ImageOptions::default()).map_err(|e| e.to_string())?;
    let calls = || c.calls();
    let (mut inode_calls, mut inode_reads, mut extended) = (0u64, 0u64, 0u64);
    let (mut lookup_calls, mut lookup_reads, mut multi_block) = (0u64, 0u64, 0u64);
    let bs = img.superblock().block_size();
    let stat = |nid: u64, n: &mut u64, r: &mut u64, ext: &mut u64| -> Res<Inode> {
        let before = calls();
        let ino = img.inode(nid).map_err(|e| e.to_string())?;
        *n += 1;
        *r += calls() - before;
        *ext += u64::from(ino.extended);
        Ok(ino)
    };
    for p in paths {
        let mut cur = stat(
            img.root_nid(),
            &mut inode_calls,
            &mut inode_reads,
            &mut extended,
        )?;
        for comp in p.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let before = calls();
            let (nid, _) = img
                .lookup(&cur, comp)
                .map_err(|e| e.to_string())?
                .ok_or("not found")?;
            lookup_calls += 1;
            lookup_reads += calls() - before;
            multi_block += u64::from(cur.size > bs);
            cur = stat(nid, &mut inode_calls, &mut inode_reads, &mut extended)?;
        }
    }
    Ok(format!(
        "ours, reads by caller: Image::inode {inode_calls} calls -> {inode_reads} preads \
         ({extended} extended inodes read twice: 32 B, then 64 B; root inode read {} times); \
         Image::lookup {lookup_calls} calls -> {lookup_reads} preads ({multi_block} in directories \
         larger than one {bs}-byte block)",
        paths.len()
    ))
}

fn bench_metadata(work: &Path, image: &Path, runs: usize, rows: &mut Vec<Row>) -> Res<()> {
    println!("== (a) lookup + stat of every path: {USR_IMAGE}");
    let file_src = || source::open_path(image, 0).map_err(|e| format!("{}: {e}", image.display()));
    let bytes = fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let mem_src: Arc<dyn Source> = Arc::new(MemorySource::from_vec(bytes));

    let img = Image::open(file_src()?, ImageOptions::default()).map_err(|e| e.to_string())?;
    let paths = our_paths(&img)?;
    let depth: usize = paths
        .iter()
        .map(|p| p.split(|&b| b == b'/').filter(|c| !c.is_empty()).count())
        .sum();

    let warm_dir = work.join("mnt-warm");
    let cold_dir = work.join("mnt-cold");
    let warm = Mount::new(image, &warm_dir)?;
    let warm_paths: Vec<PathBuf> = paths.iter().map(|p| mount_path(&warm_dir, p)).collect();
    let cold_paths: Vec<PathBuf> = paths.iter().map(|p| mount_path(&cold_dir, p)).collect();

    // Same paths, same attributes on both sides.
    let kset = kernel_paths(&warm_dir)?;
    let oset: BTreeSet<Vec<u8>> = paths.iter().cloned().collect();
    if kset != oset {
        let only_k: Vec<_> = kset.difference(&oset).take(5).collect();
        let only_o: Vec<_> = oset.difference(&kset).take(5).collect();
        return Err(format!(
            "path sets differ: kernel only {only_k:?}, ours only {only_o:?}"
        ));
    }
    for (p, kp) in paths.iter().zip(&warm_paths) {
        let o = our_resolve(&img, p)?;
        let k = fs::symlink_metadata(kp).map_err(|e| e.to_string())?;
        let ours = (o.mode, o.uid, o.gid, u64::from(o.nlink), o.size, o.mtime);
        let kern = (k.mode(), k.uid(), k.gid(), k.nlink(), k.size(), k.mtime());
        if ours != kern || i64::from(o.mtime_nsec) != k.mtime_nsec() {
            return Err(format!(
                "{}: ours {ours:?} kernel {kern:?}",
                backslash_replace(p).0
            ));
        }
    }
    drop(img);
    println!(
        "checked: {} paths ({} components to resolve), same paths and attributes on both sides",
        paths.len(),
        depth
    );

    // Diagnostics: what one run of ours reads, and on behalf of what.
    let counting = Arc::new(Counting::new(file_src()?));
    ours_stat_all(counting.clone(), &paths)?;
    println!(
        "ours, one run: {} ({} paths: {} Image::inode + {} Image::lookup calls)",
        counting.report("read_at calls (pread)", 4),
        paths.len(),
        paths.len() + depth,
        depth
    );
    println!("{}", attribute_reads(file_src()?, &paths)?);

    let mut s_file = Samples::default();
    let mut s_mem = Samples::default();
    let mut s_warm = Samples::default();
    let mut s_cold = Samples::default();
    let mut s_mount = Samples::default();
    let mut cold: Option<Mount> = None;
    for i in 0..=runs {
        let (d_file, _) = timed(|| ours_stat_all(file_src()?, &paths))?;
        let (d_mem, _) = timed(|| ours_stat_all(mem_src.clone(), &paths))?;
        let (d_warm, _) = timed(|| kernel_stat_all(&warm_paths))?;
        if let Some(m) = cold.take() {
            m.unmount()?;
        }
        let (d_mount, m) = timed(|| Mount::new(image, &cold_dir))?;
        cold = Some(m);
        let (d_cold, _) = timed(|| kernel_stat_all(&cold_paths))?;
        if i == 0 {
            continue; // warm-up
        }
        s_file.push(d_file);
        s_mem.push(d_mem);
        s_warm.push(d_warm);
        s_cold.push(d_cold);
        s_mount.push(d_mount);
    }
    if let Some(m) = cold.take() {
        m.unmount()?;
    }
    warm.unmount()?;
    println!(
        "kernel mount(2) time (not in the cold figures): median {}",
        ms(s_mount.median())
    );

    let (warm_med, cold_med) = (s_warm.median(), s_cold.median());
    let n = paths.len();
    rows.push(Row {
        bench: "(a) lookup+stat",
        side: format!("kernel: lstat x{n}, warm mount (dentries cached)"),
        how: "in-process",
        s: s_warm,
        ratio_vs: None,
    });
    rows.push(Row {
        bench: "(a) lookup+stat",
        side: format!("kernel: lstat x{n}, fresh mount per run"),
        how: "in-process",
        s: s_cold,
        ratio_vs: None,
    });
    rows.push(Row {
        bench: "(a) lookup+stat",
        side: "ours: Image::open + lookup/inode per component (file, pread) — vs warm".into(),
        how: "library, in-process",
        s: Samples(s_file.0.clone()),
        ratio_vs: Some(warm_med),
    });
    rows.push(Row {
        bench: "(a) lookup+stat",
        side: "ours: same — vs fresh mount".into(),
        how: "library, in-process",
        s: s_file,
        ratio_vs: Some(cold_med),
    });
    rows.push(Row {
        bench: "(a) lookup+stat",
        side: "ours, diagnostic: image in memory (MemorySource) — vs fresh mount".into(),
        how: "library, in-process",
        s: s_mem,
        ratio_vs: Some(cold_med),
    });
    Ok(())
}

// ------------------------------------------------------------- (b) manifest

fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

fn sha256_file(p: &Path, buf: &mut [u8]) -> io::Result<String> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// One manifest line from what the kernel shows for `abs`.
fn kernel_line(abs: &Path, rel: &[u8], md: &fs::Metadata, buf: &mut [u8]) -> io::Result<String> {
    let mut o = Object::new();
    let (p, valid) = backslash_replace(rel);
    o.str("path", &p);
    if !valid {
        o.str("path_hex", &hex(rel));
    }
    let ft = md.file_type();
    let t = if ft.is_file() {
        "reg"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "lnk"
    } else if ft.is_char_device() {
        "chr"
    } else if ft.is_block_device() {
        "blk"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "sock"
    };
    o.str("type", t)
        .int("mode", md.mode())
        .int("uid", md.uid())
        .int("gid", md.gid())
        .int("nlink", md.nlink())
        .int("size", md.size())
        .int("mtime", md.mtime())
        .int("mtime_nsec", md.mtime_nsec());
    if ft.is_char_device() || ft.is_block_device() {
        o.int("rdev_major", major(md.rdev()))
            .int("rdev_minor", minor(md.rdev()));
    } else if ft.is_file() {
        o.str("sha256", &sha256_file(abs, buf)?);
    } else if ft.is_symlink() {
        let t = fs::read_link(abs)?.into_os_string().into_vec();
        let (ts, valid) = backslash_replace(&t);
        o.str("target", &ts);
        if !valid {
            o.str("target_hex", &hex(&t));
        }
    }
    let mut xs = Vec::new();
    for name in xattr::list(abs)? {
        if let Some(v) = xattr::get(abs, &name)? {
            xs.push((name.into_vec(), v));
        }
    }
    xs.sort();
    let pairs: Vec<(String, String)> = xs
        .iter()
        .map(|(n, v)| (backslash_replace(n).0, hex(v)))
        .collect();
    o.map("xattrs", &pairs);
    Ok(o.finish())
}

/// The kernel side of (b): walk the mount at `root`, sort by path bytes,
/// write one manifest line per path.
fn kernel_manifest(root: &Path, out: &mut impl Write) -> io::Result<()> {
    let mut entries = Vec::new();
    let mut stack = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((abs, rel)) = stack.pop() {
        let md = fs::symlink_metadata(&abs)?;
        if md.is_dir() {
            for ent in fs::read_dir(&abs)? {
                let ent = ent?;
                let mut r = rel.clone();
                if r.len() > 1 {
                    r.push(b'/');
                }
                r.extend_from_slice(ent.file_name().as_bytes());
                stack.push((ent.path(), r));
            }
        }
        entries.push((rel, abs, md));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = vec![0u8; 1 << 20];
    for (rel, abs, md) in &entries {
        writeln!(out, "{}", kernel_line(abs, rel, md, &mut buf)?)?;
    }
    Ok(())
}

/// Builds the uncompressed image of the usr tree: kernel view of the
/// fixture copied out with `cp -a`, then `mkfs.erofs -T0`.
fn build_plain_image(work: &Path, usr_image: &Path) -> Res<(PathBuf, String)> {
    let src_dir = work.join("mnt-src");
    let tree = work.join("usr-tree");
    let m = Mount::new(usr_image, &src_dir)?;
    run_cmd(
        Command::new("cp").arg("-a").arg(&src_dir).arg(&tree),
        "cp -a",
    )?;
    m.unmount()?;
    let plain = work.join("usr-plain.erofs");
    let out = run_cmd(
        Command::new("mkfs.erofs").arg("-T0").arg(&plain).arg(&tree),
        "mkfs.erofs -T0",
    )?;
    let version = String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("mkfs.erofs (unknown version)")
        .trim()
        .to_string();
    Ok((plain, version))
}

fn ours_manifest(image: &Path, stdout: Stdio) -> Res<Vec<u8>> {
    run_cmd(
        Command::new(OUR_BIN)
            .args(["image", "manifest"])
            .arg(image)
            .stdout(stdout),
        "erofs-virtiofsd image manifest",
    )
}

fn walker(dir: &Path, stdout: Stdio) -> Res<Vec<u8>> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    run_cmd(
        Command::new(me).arg(WALKER_ARG).arg(dir).stdout(stdout),
        "kernel walker",
    )
}

/// Ours in-process with the library, same work as `manifest` minus the
/// JSON (diagnostics: what the process and the output cost).
fn ours_manifest_lib(src: Arc<dyn Source>) -> Res<u64> {
    let img = Image::open(src, ImageOptions::default()).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    erofs::walk(&img, |e| entries.push(e.clone()), |_, _| {}).map_err(|e| e.to_string())?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut buf = vec![0u8; 1 << 20];
    let mut acc = 0u64;
    for e in &entries {
        match e.inode.kind {
            InodeKind::File => {
                let mut h = Sha256::new();
                let mut off = 0;
                while off < e.inode.size {
                    let n = img
                        .read(&e.inode, off, &mut buf)
                        .map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("short read".into());
                    }
                    h.update(&buf[..n]);
                    off += n as u64;
                }
                acc = acc.wrapping_add(u64::from(h.finalize()[0]));
            }
            InodeKind::Symlink => {
                acc += img.readlink(&e.inode).map_err(|e| e.to_string())?.len() as u64;
            }
            _ => {}
        }
        acc += img.xattrs(&e.inode).map_err(|e| e.to_string())?.len() as u64;
    }
    Ok(black_box(acc))
}

fn bench_manifest(work: &Path, usr_image: &Path, runs: usize, rows: &mut Vec<Row>) -> Res<()> {
    println!("== (b) manifest of an uncompressed image of the usr tree");
    let (plain, mkfs_version) = build_plain_image(work, usr_image)?;
    let size = fs::metadata(&plain).map_err(|e| e.to_string())?.len();
    println!(
        "built {} ({size} bytes) with `mkfs.erofs -T0` ({mkfs_version})",
        plain.display()
    );
    let bytes = fs::read(&plain).map_err(|e| e.to_string())?; // into the page cache
    let reg_bytes: u64;

    // Both sides write the same manifest.
    let mnt = work.join("mnt-manifest");
    {
        let ours = ours_manifest(&plain, Stdio::piped())?;
        let m = Mount::new(&plain, &mnt)?;
        let kern = walker(&mnt, Stdio::piped())?;
        m.unmount()?;
        let parse = |b: &[u8]| -> Res<Vec<serde_json::Value>> {
            b.split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
                .collect()
        };
        let (o, k) = (parse(&ours)?, parse(&kern)?);
        if o.len() != k.len() {
            return Err(format!(
                "manifest lines: ours {} kernel {}",
                o.len(),
                k.len()
            ));
        }
        if let Some((a, b)) = o.iter().zip(&k).find(|(a, b)| a != b) {
            return Err(format!("manifests differ:\n ours   {a}\n kernel {b}"));
        }
        reg_bytes = o
            .iter()
            .filter(|v| v["type"] == "reg")
            .filter_map(|v| v["size"].as_u64())
            .sum();
        println!(
            "checked: {} manifest lines, identical on both sides ({} regular files, {reg_bytes} bytes hashed){}",
            o.len(),
            o.iter().filter(|v| v["type"] == "reg").count(),
            if ours == kern { ", byte for byte" } else { "" }
        );
    }
    let counting = Arc::new(Counting::new(
        source::open_path(&plain, 0).map_err(|e| e.to_string())?,
    ));
    ours_manifest_lib(counting.clone())?;
    println!(
        "ours (library, same reads as manifest), one run: {}",
        counting.report("read_at calls (pread)", 4)
    );
    let mem_src: Arc<dyn Source> = Arc::new(MemorySource::from_vec(bytes));

    let mut s_ours = Samples::default();
    let mut s_kern = Samples::default();
    let mut s_lib = Samples::default();
    let mut s_lib_mem = Samples::default();
    let mut s_umount = Samples::default();
    let mut s_kwarm = Samples::default();
    let warm_dir = work.join("mnt-manifest-warm");
    let warm = Mount::new(&plain, &warm_dir)?;
    for i in 0..=runs {
        let (d_ours, _) = timed(|| ours_manifest(&plain, Stdio::null()))?;
        let (d_kern, m) = timed(|| {
            let m = Mount::new(&plain, &mnt)?;
            walker(&mnt, Stdio::null())?;
            Ok(m)
        })?;
        let (d_umount, _) = timed(|| m.unmount())?;
        let (d_lib, _) =
            timed(|| ours_manifest_lib(source::open_path(&plain, 0).map_err(|e| e.to_string())?))?;
        let (d_lib_mem, _) = timed(|| ours_manifest_lib(mem_src.clone()))?;
        let (d_kwarm, _) = timed(|| walker(&warm_dir, Stdio::null()))?;
        if i == 0 {
            continue; // warm-up
        }
        s_ours.push(d_ours);
        s_kern.push(d_kern);
        s_umount.push(d_umount);
        s_lib.push(d_lib);
        s_lib_mem.push(d_lib_mem);
        s_kwarm.push(d_kwarm);
    }
    warm.unmount()?;
    println!(
        "kernel umount time (not in the figures): median {}",
        ms(s_umount.median())
    );
    let kmed = s_kern.median();
    rows.push(Row {
        bench: "(b) manifest",
        side: "kernel: mount(2) + walker process (lstat, readlink, listxattr+getxattr, sha256, same JSON)".into(),
        how: "child process",
        s: s_kern,
        ratio_vs: None,
    });
    rows.push(Row {
        bench: "(b) manifest",
        side: "kernel, diagnostic: walker process on a warm mount (same mount every run)".into(),
        how: "child process",
        s: s_kwarm,
        ratio_vs: None,
    });
    rows.push(Row {
        bench: "(b) manifest",
        side: "ours: `erofs-virtiofsd image manifest IMAGE > /dev/null`".into(),
        how: "release binary, whole process",
        s: s_ours,
        ratio_vs: Some(kmed),
    });
    rows.push(Row {
        bench: "(b) manifest",
        side: "ours, diagnostic: library walk+read+sha256+xattrs, no JSON (file, pread)".into(),
        how: "library, in-process",
        s: s_lib,
        ratio_vs: Some(kmed),
    });
    rows.push(Row {
        bench: "(b) manifest",
        side: "ours, diagnostic: same, image in memory (MemorySource)".into(),
        how: "library, in-process",
        s: s_lib_mem,
        ratio_vs: Some(kmed),
    });
    Ok(())
}

// -------------------------------------------------------------------- main

fn runs_from_env(default: usize) -> Res<usize> {
    match std::env::var("BENCH_RUNS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("BENCH_RUNS={v}: want a positive integer")),
        Err(_) => Ok(default),
    }
}

fn run() -> Res<()> {
    if erofs_virtiofsd::os::proc::euid() != 0 {
        return Err(
            "this benchmark mounts images with the kernel's EROFS driver: run it as root \
             (e.g. `sudo scripts/bench-reader.sh`)"
                .into(),
        );
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if !["", "a", "b"].contains(&only.as_str()) {
        return Err(format!("BENCH_ONLY={only}: want a or b"));
    }
    let (runs_a, runs_b) = (runs_from_env(100)?, runs_from_env(30)?);
    let fixtures = fixtures_dir();
    let fixture = fixtures.join("images").join(USR_IMAGE);
    if !fixture.is_file() {
        return Err(format!(
            "fixture {} not found (set EROFS_FIXTURES to the fixtures directory)",
            fixture.display()
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("erofs-bench-reader-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    // A private copy: never shares a loop device or a superblock with
    // anyone else's mount of the fixture; both sides read this file.
    let usr = work.path().join(USR_IMAGE);
    fs::copy(&fixture, &usr).map_err(|e| format!("copy {}: {e}", fixture.display()))?;
    fs::read(&usr).map_err(|e| e.to_string())?; // into the page cache

    println!("machine: {}", machine());
    println!("our binary: {OUR_BIN}");
    let mut rows = Vec::new();
    if only != "b" {
        bench_metadata(work.path(), &usr, runs_a, &mut rows)?;
    }
    if only != "a" {
        bench_manifest(work.path(), &usr, runs_b, &mut rows)?;
    }

    println!();
    println!("--- results (markdown) ---");
    println!("| benchmark | side | how | runs | min | median | ours / kernel (medians) |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let ratio = match r.ratio_vs {
            Some(k) if !k.is_zero() => {
                format!("{:.2}", r.s.median().as_secs_f64() / k.as_secs_f64())
            }
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.bench,
            r.side,
            r.how,
            r.s.0.len(),
            ms(r.s.min()),
            ms(r.s.median()),
            ratio
        );
    }
    println!("--- end results ---");
    Ok(())
}
