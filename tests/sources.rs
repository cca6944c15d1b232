//! Image sources: an image on a block device (a loop device over a fixture
//! image, extra blob devices included) reads exactly like the file, through
//! `image manifest` and through a FUSE mount, buffered and with
//! `--direct-io`, and equals the fixture's kernel manifest (the device's
//! size comes from the device, not from its empty inode metadata). With
//! `--direct-io`, an image embedded at an unaligned offset of a larger file
//! reads the same, and serving it adds (almost) nothing to the host page
//! cache.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use erofs_virtiofsd::erofs::{Image, ImageOptions};
use erofs_virtiofsd::source::{open_path, Source};

use common::cli::run_manifest_args;
use common::fusemount::FuseMount;
use common::kmount::{detach_loops, losetup};
use common::{assert_kernel_erofs, assert_manifests_eq, fixture_image, load_expected};
use common::{walk_manifest, Entry};

/// Read-only loop devices over files, detached on drop.
struct Loops(Vec<String>);

impl Loops {
    fn attach(files: &[&Path]) -> Loops {
        let mut loops = Loops(Vec::new());
        for f in files {
            let dev = losetup(f).unwrap_or_else(|e| panic!("{e}"));
            loops.0.push(dev);
        }
        loops
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.0.iter().map(PathBuf::from).collect()
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        detach_loops(&self.0);
    }
}

fn check_on_loop_devices(name: &str) {
    check_on_loop_devices_with(name, &[]);
    check_on_loop_devices_with(name, &["--direct-io"]);
}

fn check_on_loop_devices_with(name: &str, args: &[&str]) {
    assert_kernel_erofs();
    let fx = fixture_image(name);
    let mut files = vec![fx.image.as_path()];
    files.extend(fx.devices());
    let loops = Loops::attach(&files);
    let paths = loops.paths();
    let image = paths[0].as_path();
    let devices: Vec<&Path> = paths[1..].iter().map(PathBuf::as_path).collect();
    let meta = std::fs::metadata(image).expect("stat loop device");
    assert_eq!(
        meta.len(),
        0,
        "{}: block devices report no length",
        image.display()
    );

    let expected = load_expected(name);
    let via_cli: Vec<Entry> = run_manifest_args(image, &devices, args);
    assert_manifests_eq(
        &format!("{name} on {} {args:?}: `image manifest`", image.display()),
        &expected,
        &via_cli,
    );
    let mount = FuseMount::new(image, &devices, args);
    let via_fuse = walk_manifest(mount.path());
    assert_manifests_eq(
        &format!("{name} on {} {args:?}: FUSE mount", image.display()),
        &expected,
        &via_fuse,
    );
}

#[test]
fn test_loop_device_edge_plain_b4096() {
    check_on_loop_devices("edge_plain-b4096");
}

#[test]
fn test_loop_device_edge_lz4() {
    check_on_loop_devices("edge_lz4");
}

/// The image and its blob device both on loop devices.
#[test]
fn test_loop_devices_chunked_blobdev() {
    check_on_loop_devices("edge_chunk4k-b512-blobdev");
}

/// Pages of `file` in the host page cache, in bytes (util-linux `fincore`).
fn cached_bytes(file: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(file)
        .output()
        .expect("run fincore");
    assert!(
        out.status.success(),
        "fincore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| {
            panic!(
                "fincore output {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

/// Writes `file` back and drops its pages from the host page cache (dirty
/// pages would stay).
fn evict(file: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).expect("open for fadvise");
    f.sync_all().expect("fsync");
    // SAFETY: a plain syscall on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
}

/// A fixture embedded at byte 12345 of a larger file (ext4 under target/,
/// which takes O_DIRECT), read with `--direct-io`: the manifest equals the
/// kernel's through `image manifest` and FUSE (`--cache never`), and reading
/// every file leaves the image file out of the host page cache.
#[test]
fn test_direct_io_unaligned_offset_no_page_cache_growth() {
    assert_kernel_erofs();
    for name in ["edge_plain-b4096", "edge_lz4"] {
        let fx = fixture_image(name);
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir");
        let big = dir.path().join("embedded.img");
        let image = std::fs::read(&fx.image).expect("read fixture");
        let mut bytes = vec![0x5au8; 12345];
        bytes.extend_from_slice(&image);
        bytes.extend_from_slice(&[0xa5u8; 7777]);
        std::fs::write(&big, &bytes).expect("write embedded image");
        drop(bytes);
        // The same read, buffered, fills the page cache: what the direct
        // run must not do (and the check below can see it).
        evict(&big);
        run_manifest_args(&big, &[], &["--offset", "12345"]);
        assert!(
            cached_bytes(&big) * 2 > image.len() as u64,
            "{name}: a buffered read left the page cache empty; fincore sees nothing"
        );
        let expected = load_expected(name);
        let args = ["--direct-io", "--offset", "12345"];

        evict(&big);
        let before = cached_bytes(&big);
        assert!(
            before * 20 < image.len() as u64,
            "{name}: could not evict the image ({before} bytes cached)"
        );
        let via_cli = run_manifest_args(&big, &[], &args);
        assert_manifests_eq(
            &format!("{name} at 12345, direct I/O: `image manifest`"),
            &expected,
            &via_cli,
        );
        let mount = FuseMount::new(
            &big,
            &[],
            &["--direct-io", "--offset", "12345", "--cache", "never"],
        );
        let via_fuse = walk_manifest(mount.path());
        assert_manifests_eq(
            &format!("{name} at 12345, direct I/O: FUSE"),
            &expected,
            &via_fuse,
        );
        drop(mount);
        let after = cached_bytes(&big);
        let size = std::fs::metadata(&big).expect("stat").len();
        eprintln!("{name}: page cache of the image file {before} -> {after} bytes (file {size})");
        assert!(
            after.saturating_sub(before) * 20 < size,
            "{name}: direct I/O grew the page cache of the image by {} of {size} bytes",
            after.saturating_sub(before)
        );
    }
}

/// A memfd holding `bytes`, inheritable by children (no close-on-exec);
/// `sealable`: created with `MFD_ALLOW_SEALING`.
fn memfd_with(bytes: &[u8], sealable: bool) -> std::fs::File {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let flags = if sealable { libc::MFD_ALLOW_SEALING } else { 0 };
    // SAFETY: memfd_create with a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"erofs-image".as_ptr(), flags) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor this function owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes).expect("fill memfd");
    f
}

/// An image at byte 12345 of a memfd, named `fd:N`: mapped in place when the
/// memfd can be sealed, read with pread when it cannot; both give the
/// kernel's manifest through `image manifest` and a FUSE mount.
#[test]
fn test_memfd_image_at_unaligned_offset() {
    use std::os::fd::AsRawFd;
    assert_kernel_erofs();
    for name in ["edge_lz4", "edge_plain-b4096"] {
        let fx = fixture_image(name);
        let mut bytes = vec![0xeeu8; 12345];
        bytes.extend_from_slice(&std::fs::read(&fx.image).expect("read fixture"));
        let expected = load_expected(name);
        for sealable in [true, false] {
            let mem = memfd_with(&bytes, sealable);
            let spec = PathBuf::from(format!("fd:{}", mem.as_raw_fd()));
            let what = format!("{name} in a memfd at 12345 (sealable: {sealable})");
            let via_cli = run_manifest_args(&spec, &[], &["--offset", "12345"]);
            assert_manifests_eq(&format!("{what}: `image manifest`"), &expected, &via_cli);
            let mount = FuseMount::new(&spec, &[], &["--offset", "12345"]);
            let via_fuse = walk_manifest(mount.path());
            assert_manifests_eq(&format!("{what}: FUSE"), &expected, &via_fuse);
        }
    }
}

/// A source that counts the reads reaching it (the image file's reads).
#[derive(Debug)]
struct CountingSource {
    inner: Arc<dyn Source>,
    reads: AtomicU64,
    /// Says it has no page cache (as an O_DIRECT source does).
    uncached: bool,
}

impl Source for CountingSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_at(buf, offset)
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn uncached(&self) -> bool {
        self.uncached
    }
}

/// Every path of `img` with its inode number, mode, size and each
/// directory's entries looked up by name (what a `find -ls` asks).
fn listing(img: &Image) -> Vec<(Vec<u8>, u64, u32, u64)> {
    let mut out = Vec::new();
    erofs_virtiofsd::erofs::walk(
        img,
        |e| {
            out.push((e.path.clone(), e.inode.nid, e.inode.mode, e.inode.size));
        },
        |path, e| panic!("walk: {}: {e}", String::from_utf8_lossy(path)),
    )
    .expect("walk");
    let dirs: Vec<(Vec<u8>, u64)> = out.iter().map(|(p, n, _, _)| (p.clone(), *n)).collect();
    for (path, nid) in dirs {
        let dir = img.inode(nid).expect("inode");
        if !dir.is_dir() {
            continue;
        }
        let mut names = Vec::new();
        img.readdir(&dir, 0, |e, _| {
            names.push(e.name.to_vec());
            true
        })
        .expect("readdir");
        for name in names {
            let found = img.lookup(&dir, &name).expect("lookup");
            let (child, _) = found.unwrap_or_else(|| {
                panic!(
                    "{}: {} not found",
                    String::from_utf8_lossy(&path),
                    String::from_utf8_lossy(&name)
                )
            });
            out.push((name, child, 0, 0));
        }
    }
    out
}

/// A second walk of an image file (listings, lookups, inodes, inline and
/// block-mapped directories, inodes straddling two blocks, extended
/// inodes) is answered from the metadata cache: no read reaches the file,
/// so nothing of it stays in the host page cache beside our cache, and
/// the answers are the first walk's.
#[test]
fn test_second_walk_reads_nothing_from_the_image_file() {
    for name in [
        "edge_plain-b512",
        "edge_plain-b4096",
        "edge_plain-b512-noinline",
        "edge_plain-48bit",
        "edge_lz4-extended",
        "edge_lz4hc-xattrprefix",
        "edge_lz4hc-metabox",
        "usr_zstd15-ztailpack",
    ] {
        let file = open_path(&fixture_image(name).image, 0).expect("open fixture");
        let src = Arc::new(CountingSource {
            inner: file,
            reads: AtomicU64::new(0),
            uncached: false,
        });
        let img = Image::open(src.clone(), ImageOptions::default()).expect("Image::open");
        let first = listing(&img);
        let after_first = src.reads.load(Ordering::Relaxed);
        assert!(after_first > 0, "{name}: the first walk read nothing");
        let second = listing(&img);
        assert_eq!(first, second, "{name}: the second walk differs");
        let more = src.reads.load(Ordering::Relaxed) - after_first;
        assert_eq!(
            more, 0,
            "{name}: the second walk read the image {more} times"
        );
    }
}

/// An image reopened through another source (as the content store's
/// loader opens it with O_DIRECT) shares the first one's metadata cache:
/// after a walk of the first, a walk of the second reads nothing from its
/// source and gives the same answers. Another image's bytes are refused.
#[test]
fn test_reopened_image_shares_the_metadata_cache() {
    for name in ["edge_plain-b4096", "edge_plain-b512", "edge_lz4-extended"] {
        let path = fixture_image(name).image;
        let first = Image::open(open_path(&path, 0).expect("open"), ImageOptions::default())
            .expect("Image::open");
        let src = Arc::new(CountingSource {
            inner: open_path(&path, 0).expect("open again"),
            reads: AtomicU64::new(0),
            uncached: false,
        });
        let again = first
            .reopen(src.clone(), ImageOptions::default())
            .expect("reopen");
        let want = listing(&first);
        let before = src.reads.load(Ordering::Relaxed);
        assert_eq!(
            listing(&again),
            want,
            "{name}: the reopened image lists differently"
        );
        let more = src.reads.load(Ordering::Relaxed) - before;
        assert_eq!(
            more, 0,
            "{name}: the reopened image read its metadata again ({more} reads)"
        );
    }
    let a = Image::open(
        open_path(&fixture_image("edge_plain-b4096").image, 0).expect("open"),
        ImageOptions::default(),
    )
    .expect("Image::open");
    let other = open_path(&fixture_image("edge_lz4").image, 0).expect("open other");
    let err = a
        .reopen(other, ImageOptions::default())
        .expect_err("another image's bytes were taken");
    assert!(
        err.to_string().contains("not the image being reopened"),
        "{err}"
    );
}

/// From a source without a page cache (O_DIRECT), metadata blocks missed
/// in order are read in runs: a first walk reads the image far fewer
/// times than from a buffered file, and answers the same.
#[test]
fn test_uncached_source_reads_metadata_in_runs() {
    for name in [
        "usr_zstd15-ztailpack",
        "edge_plain-b4096",
        "edge_lz4-extended",
    ] {
        let walk = |uncached: bool| {
            let file = open_path(&fixture_image(name).image, 0).expect("open fixture");
            let src = Arc::new(CountingSource {
                inner: file,
                reads: AtomicU64::new(0),
                uncached,
            });
            let img = Image::open(src.clone(), ImageOptions::default()).expect("Image::open");
            let l = listing(&img);
            (l, src.reads.load(Ordering::Relaxed))
        };
        let (buffered, buffered_reads) = walk(false);
        let (direct, direct_reads) = walk(true);
        eprintln!("{name}: {buffered_reads} reads buffered, {direct_reads} uncached");
        assert_eq!(buffered, direct, "{name}: the walks differ");
        // The three fixtures here read 49-59% as often (a third more would
        // still show the runs; the same count would not).
        assert!(
            direct_reads * 3 <= buffered_reads * 2,
            "{name}: {direct_reads} reads uncached against {buffered_reads} buffered"
        );
    }
}
