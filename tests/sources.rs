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
