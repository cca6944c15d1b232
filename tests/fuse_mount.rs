//! Our FUSE daemon (`erofs-virtiofsd mount`) against the kernel's EROFS
//! driver and the fixtures' expected manifests.
//!
//! - `test_fuse_fixture_*`: every fixture image, mounted through
//!   /dev/fuse by our daemon and walked (lstat, readdir, read, readlink,
//!   listxattr/getxattr), must equal its expected manifest field for field.
//! - `test_fuse_matches_kernel_mkfs15_*`: images of the edge tree made by
//!   Debian's mkfs.erofs 1.5 (plain, compressed, chunked with a blob
//!   device, at a byte offset) through both mounts: equal manifests, equal
//!   st_ino/st_blocks/st_blksize, the same POSIX ACL decisions for other
//!   users, and SEEK_DATA/SEEK_HOLE from the image's real holes.
//! - `test_fuse_corrupt_*`: a damaged pcluster and a damaged inode give
//!   EUCLEAN for those files only, as the kernel's mount of the same bytes
//!   does; the daemon stays up and the rest reads fine.
//! - `test_fuse_lifecycle_*` / `test_fuse_mount_errors`: SIGTERM/SIGINT and
//!   `umount` end the daemon cleanly, the background mode returns with the
//!   mount usable, and bad setups fail with a clear message before mounting.
//!
//! Needs root and /dev/fuse (and the kernel EROFS driver), like
//! `kernel_oracle.rs`; same environment variables.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use erofs_virtiofsd::erofs::zmap::{ZKind, ZMap};
use erofs_virtiofsd::erofs::{walk, Image, ImageOptions, InodeKind};
use erofs_virtiofsd::source::open_path;

use common::cli::BIN;
use common::fixtures::{all_fixture_images, fixture_image};
use common::fusemount::{is_mounted, wait_for, FuseMount};
use common::kmount::MountOptions;
use common::manifest::walk_manifest_skipping;
use common::mkfs::{mkfs_compressed, FIXED_UUID};
use common::trees::{edge_tree, image_dir};
use common::{
    assert_kernel_erofs, assert_manifests_eq, load_expected, mkfs, walk_manifest, KernelMount,
};

// ---------------------------------------------------------------------------
// (1) Every fixture through FUSE against its expected manifest.

fn check_fixture(name: &str) {
    assert_kernel_erofs();
    let started = Instant::now();
    let fx = fixture_image(name);
    let mount = FuseMount::new(&fx.image, &fx.devices(), &[]);
    let ours = walk_manifest(mount.path());
    assert_manifests_eq(
        &format!("fixture {name}: expected manifest vs our FUSE mount"),
        &load_expected(name),
        &ours,
    );
    let stderr = mount.stderr_text();
    assert!(
        mount.unmount().is_some_and(|s| s.success()),
        "{name}: daemon exit"
    );
    assert!(stderr.is_empty(), "{name}: daemon stderr: {stderr}");
    eprintln!("{name}: {} entries, {:.2?}", ours.len(), started.elapsed());
}

macro_rules! fuse_fixture_tests {
    ($($test:ident: $name:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check_fixture($name);
            }
        )*
    };
}

fuse_fixture_tests! {
    test_fuse_fixture_big_chunk64k_blobdev: "big_chunk64k-blobdev";
    test_fuse_fixture_big_lz4hc_c1m: "big_lz4hc-C1m";
    test_fuse_fixture_big_zstd_dedupe_fragments: "big_zstd-dedupe-fragments";
    test_fuse_fixture_edge_chunk4k_b512_blobdev: "edge_chunk4k-b512-blobdev";
    test_fuse_fixture_edge_deflate9: "edge_deflate9";
    test_fuse_fixture_edge_libdeflate12: "edge_libdeflate12";
    test_fuse_fixture_edge_lz4: "edge_lz4";
    test_fuse_fixture_edge_lz4_b1024: "edge_lz4-b1024";
    test_fuse_fixture_edge_lz4_compact_allroot: "edge_lz4-compact-allroot";
    test_fuse_fixture_edge_lz4_dotomitted: "edge_lz4-dotomitted";
    test_fuse_fixture_edge_lz4_extended: "edge_lz4-extended";
    test_fuse_fixture_edge_lz4_zd: "edge_lz4-zD";
    test_fuse_fixture_edge_lz4hc_c64k: "edge_lz4hc-C64k";
    test_fuse_fixture_edge_lz4hc_dedupe_fphidden: "edge_lz4hc-dedupe-fphidden";
    test_fuse_fixture_edge_lz4hc_fingerprint: "edge_lz4hc-fingerprint";
    test_fuse_fixture_edge_lz4hc_fragments: "edge_lz4hc-fragments";
    test_fuse_fixture_edge_lz4hc_metabox: "edge_lz4hc-metabox";
    test_fuse_fixture_edge_lz4hc_xattrprefix: "edge_lz4hc-xattrprefix";
    test_fuse_fixture_edge_lz4hc_ztailpacking: "edge_lz4hc-ztailpacking";
    test_fuse_fixture_edge_lz4hc12: "edge_lz4hc12";
    test_fuse_fixture_edge_lzma_mz: "edge_lzma-MZ";
    test_fuse_fixture_edge_lzma_allfragments: "edge_lzma-allfragments";
    test_fuse_fixture_edge_lzma109_c1m: "edge_lzma109-C1m";
    test_fuse_fixture_edge_multialg_hints: "edge_multialg-hints";
    test_fuse_fixture_edge_plain_48bit: "edge_plain-48bit";
    test_fuse_fixture_edge_plain_b4096: "edge_plain-b4096";
    test_fuse_fixture_edge_plain_b512: "edge_plain-b512";
    test_fuse_fixture_edge_plain_b512_noinline: "edge_plain-b512-noinline";
    test_fuse_fixture_edge_zstd_48bit: "edge_zstd-48bit";
    test_fuse_fixture_edge_zstd_b2048_ztailpack: "edge_zstd-b2048-ztailpack";
    test_fuse_fixture_edge_zstd_fragdedupe: "edge_zstd-fragdedupe";
    test_fuse_fixture_edge_zstd19: "edge_zstd19";
    test_fuse_fixture_usr_zstd15_ztailpack: "usr_zstd15-ztailpack";
}

/// Every fixture image has a test above (a new fixture must get one).
#[test]
fn test_fuse_every_fixture_has_a_test() {
    let src = include_str!("fuse_mount.rs");
    for fx in all_fixture_images() {
        assert!(
            src.contains(&format!("\"{}\";", fx.name)),
            "fixture {} has no test_fuse_fixture_* test",
            fx.name
        );
    }
}

// ---------------------------------------------------------------------------
// (2) mkfs 1.5 images of the edge tree: FUSE against the kernel.

/// (st_ino, st_blocks, st_blksize) of every path under `root`.
fn stat_extras(root: &Path) -> BTreeMap<Vec<u8>, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((p, raw)) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        if md.is_dir() {
            for d in fs::read_dir(&p).unwrap_or_else(|e| panic!("readdir {}: {e}", p.display())) {
                let d = d.expect("dirent");
                let mut child = raw.clone();
                if child != b"/" {
                    child.push(b'/');
                }
                child.extend_from_slice(d.file_name().as_bytes());
                stack.push((d.path(), child));
            }
        }
        out.insert(raw, (md.ino(), md.blocks(), md.blksize()));
    }
    out
}

/// Whether `uid:gid` may read `path` (a child process with those ids).
fn may_read(path: &Path, uid: u32, gid: u32) -> bool {
    Command::new("cat")
        .arg(path)
        .uid(uid)
        .gid(gid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running cat")
        .success()
}

/// SEEK_DATA/SEEK_HOLE at `off` through a mount (`Err(errno)` on failure).
fn seek(f: &fs::File, off: i64, whence: i32) -> Result<i64, i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open file for the whole call.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// SEEK_DATA/SEEK_HOLE on every file of /sparse through the FUSE mount must
/// follow the image's real holes; returns how many offsets were in a hole.
fn check_lseek(img: &Image, mount: &Path) -> usize {
    let src_root = img.inode(img.root_nid()).expect("root");
    let (sparse_nid, _) = img
        .lookup(&src_root, b"sparse")
        .expect("lookup")
        .expect("/sparse");
    let dir = img.inode(sparse_nid).expect("inode");
    let mut names = Vec::new();
    img.readdir(&dir, 0, |e, _| {
        if e.name != b"." && e.name != b".." {
            names.push((e.name.to_vec(), e.nid));
        }
        true
    })
    .expect("readdir");
    let mut holes_seen = 0;
    for (name, nid) in names {
        let inode = img.inode(nid).expect("inode");
        if inode.kind != InodeKind::File {
            continue;
        }
        let f = fs::File::open(mount.join("sparse").join(OsStr::from_bytes(&name))).expect("open");
        let size = inode.size;
        let mut offs: Vec<u64> = (0..size).step_by(4096).collect();
        offs.extend([size.saturating_sub(1), size, size + 100]);
        for off in offs {
            let want_data = match img.seek_data(&inode, off).expect("seek_data") {
                _ if off >= size => Err(libc::ENXIO),
                Some(p) => Ok(p as i64),
                None => Err(libc::ENXIO),
            };
            let want_hole = if off >= size {
                Err(libc::ENXIO)
            } else {
                Ok(img.seek_hole(&inode, off).expect("seek_hole") as i64)
            };
            if want_hole.is_ok_and(|h| (h as u64) < size) {
                holes_seen += 1;
            }
            let what = format!("/sparse/{} at {off}", String::from_utf8_lossy(&name));
            assert_eq!(
                seek(&f, off as i64, libc::SEEK_DATA),
                want_data,
                "SEEK_DATA {what}"
            );
            assert_eq!(
                seek(&f, off as i64, libc::SEEK_HOLE),
                want_hole,
                "SEEK_HOLE {what}"
            );
        }
    }
    holes_seen
}

/// mkfs 1.5 stores no holes; the fixtures (mkfs 1.9) do, in flat,
/// chunk-based and compressed files.
#[test]
fn test_fuse_lseek_follows_real_holes() {
    assert_kernel_erofs();
    let mut holes = 0;
    for name in [
        "edge_chunk4k-b512-blobdev",
        "edge_plain-b4096",
        "edge_zstd19",
    ] {
        let fx = fixture_image(name);
        let opts = ImageOptions {
            devices: fx
                .devices()
                .iter()
                .map(|d| open_path(d, 0).expect("open blob"))
                .collect(),
            ..ImageOptions::default()
        };
        let img = Image::open(open_path(&fx.image, 0).expect("open"), opts).expect("Image::open");
        let fuse = FuseMount::new(&fx.image, &fx.devices(), &[]);
        let n = check_lseek(&img, fuse.path());
        eprintln!("{name}: {n} offsets in holes");
        holes += n;
    }
    assert!(holes > 0, "no real holes in any /sparse");
}

/// Mounts `image` with the kernel (with `kopts`) and through FUSE (with
/// `fuse_args`) and compares everything the two show.
fn compare_with_kernel(what: &str, image: &Path, kopts: &MountOptions, fuse_args: &[&str]) {
    let devices: Vec<&Path> = kopts.devices.iter().map(PathBuf::as_path).collect();
    let kernel = KernelMount::mount(image, kopts).unwrap_or_else(|e| panic!("{e}"));
    let fuse = FuseMount::new(image, &devices, fuse_args);
    let kman = walk_manifest(kernel.path());
    assert!(kman.len() > 5000, "{what}: only {} entries", kman.len());
    let fman = walk_manifest(fuse.path());
    assert_manifests_eq(&format!("{what}: kernel (expected) vs FUSE"), &kman, &fman);
    let (ks, fs_) = (stat_extras(kernel.path()), stat_extras(fuse.path()));
    for (path, k) in &ks {
        assert_eq!(
            Some(k),
            fs_.get(path),
            "{what}: (st_ino, st_blocks, st_blksize) of {}",
            String::from_utf8_lossy(path)
        );
    }
    // POSIX ACLs decide for other users as on the kernel mount.
    for rel in ["xattrs/acl_file", "xattrs/acl_dir", "files/text_4096"] {
        for (uid, gid) in [(1000, 1000), (1001, 1001), (1002, 1002), (2000, 2000)] {
            let (kp, fp) = (kernel.path().join(rel), fuse.path().join(rel));
            if !kp.exists() {
                continue;
            }
            assert_eq!(
                may_read(&fp, uid, gid),
                may_read(&kp, uid, gid),
                "{what}: read access to {rel} for {uid}:{gid}"
            );
        }
    }
}

#[test]
fn test_fuse_matches_kernel_mkfs15_plain_and_offset() {
    assert_kernel_erofs();
    let tree = edge_tree();
    let scratch = image_dir("erofs-fuse-");
    let plain = mkfs(
        tree.path(),
        &scratch.path().join("plain.erofs"),
        &["-U", FIXED_UUID],
    );
    compare_with_kernel("mkfs 1.5 default", &plain, &MountOptions::default(), &[]);
    const OFFSET: u64 = 65536;
    let mut data = vec![0x5au8; OFFSET as usize];
    data.extend(fs::read(&plain).expect("reading the image"));
    let at = scratch.path().join("at-offset.img");
    fs::write(&at, data).expect("writing the offset image");
    let kopts = MountOptions {
        devices: vec![],
        fsoffset: Some(OFFSET),
    };
    compare_with_kernel(
        "mkfs 1.5 at offset 65536, --cache never",
        &at,
        &kopts,
        &["--offset", "65536", "--cache", "never"],
    );
}

#[test]
fn test_fuse_matches_kernel_mkfs15_chunked_blobdev_and_lz4hc() {
    assert_kernel_erofs();
    let tree = edge_tree();
    let scratch = image_dir("erofs-fuse-");
    let blob = scratch.path().join("chunk.blob");
    let blob_arg = format!("--blobdev={}", blob.display());
    let chunked = mkfs(
        tree.path(),
        &scratch.path().join("chunk.erofs"),
        &["-U", FIXED_UUID, "--chunksize=4096", &blob_arg],
    );
    compare_with_kernel(
        "mkfs 1.5 --chunksize=4096 --blobdev, --cache auto",
        &chunked,
        &MountOptions::with_devices(&[&blob]),
        &["--cache", "auto", "--threads", "2"],
    );
    let z = mkfs_compressed(
        tree.path(),
        &scratch.path().join("lz4hc.erofs"),
        "lz4hc",
        &["-U", FIXED_UUID, "-Eztailpacking"],
    );
    compare_with_kernel(
        "mkfs 1.5 -zlz4hc -Eztailpacking",
        &z,
        &MountOptions::default(),
        &[],
    );
}

// ---------------------------------------------------------------------------
// (3) A corrupt image: EUCLEAN (the kernel's EFSCORRUPTED) for the damaged
// files only.

/// Files to damage in a compressed image.
struct Victims {
    /// A compressed, singly linked regular file whose first extent is its
    /// own pcluster: (path, pcluster address, encoded length).
    pcluster: (Vec<u8>, u64, u64),
    /// Another singly linked regular file: (path, nid).
    inode: (Vec<u8>, u64),
}

fn pick_victims(img: &Image) -> Victims {
    let mut pcluster = None;
    let mut inode_victim = None;
    walk(
        img,
        |e| {
            let i = &e.inode;
            if i.kind != InodeKind::File || i.nlink != 1 || i.size < (64 << 10) {
                return;
            }
            if pcluster.is_none() && i.is_compressed() {
                if let Ok(ext) = ZMap::new(img, i).and_then(|z| z.map(0)) {
                    if let ZKind::Encoded {
                        pa,
                        inline: false,
                        plen,
                        ..
                    } = ext.kind
                    {
                        pcluster = Some((e.path.clone(), pa, plen));
                        return;
                    }
                }
            }
            if inode_victim.is_none() {
                inode_victim = Some((e.path.clone(), i.nid));
            }
        },
        |p, e| panic!("{}: {e}", String::from_utf8_lossy(p)),
    )
    .expect("walk");
    Victims {
        pcluster: pcluster.expect("no compressed file with its own pcluster"),
        inode: inode_victim.expect("no second file"),
    }
}

#[test]
fn test_fuse_corrupt_image_fails_only_damaged_files() {
    assert_kernel_erofs();
    let name = "edge_lz4";
    let fx = fixture_image(name);
    let scratch = image_dir("erofs-fuse-corrupt-");
    let image = scratch.path().join("corrupt.erofs");
    let mut bytes = fs::read(&fx.image).expect("read fixture");
    let img = Image::open(
        open_path(&fx.image, 0).expect("open"),
        ImageOptions::default(),
    )
    .expect("Image::open");
    let Victims {
        pcluster: (zpath, pa, plen),
        inode: (ipath, nid),
    } = pick_victims(&img);
    // An LZ4 stream of 0xff bytes never ends its literal run: undecodable.
    let (pa, plen) = (pa as usize, plen as usize);
    bytes[pa..pa + plen].fill(0xff);
    // A file type that does not exist in the inode's mode.
    let ipos = img.inode_pos(nid).expect("inode_pos").pos as usize;
    bytes[ipos + 4..ipos + 6].copy_from_slice(&0o070644u16.to_le_bytes());
    fs::write(&image, &bytes).expect("write corrupt image");
    drop(img);

    let mut mount = FuseMount::new(&image, &[], &["--cache", "never"]);
    let on = |p: &[u8]| mount.path().join(OsStr::from_bytes(&p[1..]));
    let (zfile, ifile) = (on(&zpath), on(&ipath));
    for _ in 0..2 {
        let err = fs::read(&zfile).expect_err("reading the damaged pcluster");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EUCLEAN),
            "{}: {err}",
            zfile.display()
        );
        assert!(fs::symlink_metadata(&zfile).is_ok(), "the inode is fine");
        let err = fs::symlink_metadata(&ifile).expect_err("stat of the damaged inode");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EUCLEAN),
            "{}: {err}",
            ifile.display()
        );
    }
    // The kernel's mount of the same bytes says the same.
    {
        let k = KernelMount::new(&image, &[]);
        let kon = |p: &[u8]| k.path().join(OsStr::from_bytes(&p[1..]));
        let err = fs::read(kon(&zpath)).expect_err("kernel: the damaged pcluster");
        assert_eq!(err.raw_os_error(), Some(libc::EUCLEAN), "kernel: {err}");
        let err = fs::symlink_metadata(kon(&ipath)).expect_err("kernel: the damaged inode");
        assert_eq!(err.raw_os_error(), Some(libc::EUCLEAN), "kernel: {err}");
    }
    assert!(mount.alive(), "the daemon died: {}", mount.stderr_text());
    let ours = walk_manifest_skipping(mount.path(), &[&zpath, &ipath]);
    let expected: Vec<_> = load_expected(name)
        .into_iter()
        .filter(|e| e.raw_path != zpath && e.raw_path != ipath)
        .collect();
    assert_manifests_eq(
        "corrupt image: expected manifest (damaged files left out) vs FUSE",
        &expected,
        &ours,
    );
    assert!(mount.alive(), "the daemon died: {}", mount.stderr_text());
    let log = mount.stderr_text();
    assert!(log.contains("corrupt"), "damage not logged: {log}");
}

// ---------------------------------------------------------------------------
// (4) Lifecycle and errors.

fn small_image() -> PathBuf {
    fixture_image("edge_lz4").image
}

#[test]
fn test_fuse_lifecycle_signals_unmount() {
    assert_kernel_erofs();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut m = FuseMount::new(&small_image(), &[], &[]);
        let dir = m.path().to_path_buf();
        // Busy: an open file does not keep the daemon from ending.
        let f = fs::File::open(dir.join("files/text_4096")).expect("open");
        let mut buf = [0u8; 16];
        f.read_at(&mut buf, 0).expect("read");
        // SAFETY: kill has no memory preconditions.
        assert_eq!(unsafe { libc::kill(m.pid() as i32, sig) }, 0);
        assert!(
            wait_for(Duration::from_secs(10), || !is_mounted(&dir)),
            "still mounted after signal {sig}"
        );
        drop(f);
        let st = m.wait_exit().expect("the daemon did not exit");
        assert!(st.success(), "signal {sig}: exit {st}: {}", m.stderr_text());
    }
    // A plain umount ends the daemon too.
    let m = FuseMount::new(&small_image(), &[], &[]);
    let st = m.unmount().expect("the daemon did not exit after umount");
    assert!(st.success(), "exit after umount: {st}");
}

#[test]
fn test_fuse_lifecycle_background_mode() {
    assert_kernel_erofs();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("mount")
        .arg(small_image())
        .arg(dir.path())
        .output()
        .expect("running mount");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Usable as soon as the command returned.
    assert!(is_mounted(dir.path()));
    let n = fs::read_dir(dir.path()).expect("readdir").count();
    assert!(n > 5, "{n} entries");
    let pids_of = |dir: &Path| -> Vec<u32> {
        let want = dir.as_os_str().as_bytes();
        fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.split(|&b| b == 0).any(|a| a == want))
                    .unwrap_or(false)
            })
            .collect()
    };
    // One daemon serves the mount: the detached process, which supervises
    // from outside the sandbox (the default), and the one child it forked
    // into the sandbox, which serves.
    let pids = pids_of(dir.path());
    assert_eq!(pids.len(), 2, "supervisor and sandboxed server: {pids:?}");
    let (a, b) = (pids[0], pids[1]);
    assert!(
        common::procs::children(a) == [b] || common::procs::children(b) == [a],
        "one of {pids:?} is the other's only child"
    );
    let c = std::ffi::CString::new(dir.path().as_os_str().as_bytes()).expect("path");
    erofs_virtiofsd::os::mount::umount(&c, false).expect("umount");
    assert!(
        wait_for(Duration::from_secs(10), || pids_of(dir.path()).is_empty()),
        "the daemon did not exit after umount"
    );
}

#[test]
fn test_fuse_mount_errors() {
    assert_kernel_erofs();
    let scratch = image_dir("erofs-fuse-err-");
    let garbage = scratch.path().join("garbage.img");
    fs::write(&garbage, vec![0x42u8; 8192]).expect("write");
    let afile = scratch.path().join("afile");
    fs::write(&afile, b"x").expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8").to_string();
    let img = small_image();
    let img = img.to_str().expect("utf-8").to_string();
    let missing = format!("{d}/missing");
    let cases: &[(&str, Vec<&str>, &str)] = &[
        (
            "bad image",
            vec![garbage.to_str().unwrap(), &d],
            "not an EROFS image",
        ),
        (
            "missing image",
            vec!["/nonexistent.erofs", &d],
            "cannot open image",
        ),
        (
            "missing mount point",
            vec![&img, &missing],
            "bad mount point",
        ),
        (
            "mount point is a file",
            vec![&img, afile.to_str().unwrap()],
            "not a directory",
        ),
    ];
    for (what, args, want) in cases {
        let out = Command::new(BIN)
            .arg("mount")
            .args(args)
            .arg("--foreground")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(want), "{what}: {err}");
        assert!(!is_mounted(dir.path()), "{what}: mounted anyway");
    }
    // Not root.
    let out = Command::new(BIN)
        .args(["mount", &img, &d, "--foreground"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "not root: {err}");
    assert!(err.contains("needs root"), "not root: {err}");
    // No /dev/fuse: an empty /dev in a private mount namespace.
    let script = format!("mount -t tmpfs none /dev && exec {BIN} mount {img} {d} --foreground");
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "no /dev/fuse: {err}");
    assert!(err.contains("/dev/fuse"), "no /dev/fuse: {err}");
    assert!(!is_mounted(dir.path()));
}

/// The `MAJOR:MINOR` of the mount on `dir` (mountinfo's third field).
fn mount_dev(dir: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&&*want)).then(|| f[2].to_string())
        })
        .next_back()
        .unwrap_or_else(|| panic!("{} not in mountinfo", dir.display()))
}

#[test]
fn test_fuse_readahead_is_set_on_the_mount() {
    assert_kernel_erofs();
    let cases: [(&[&str], &str); 3] = [
        (&[], "4096"),
        (&["--readahead-kb", "1024"], "1024"),
        // 0 keeps the kernel's: FUSE offers 128 KiB at INIT.
        (&["--readahead-kb", "0"], "128"),
    ];
    for (args, want) in cases {
        let m = FuseMount::new(&small_image(), &[], args);
        assert!(fs::read_dir(m.path()).is_ok_and(|d| d.count() > 0));
        let knob = format!("/sys/class/bdi/{}/read_ahead_kb", mount_dev(m.path()));
        let mut seen = String::new();
        // Set by the worker right after it answers INIT.
        let ok = wait_for(Duration::from_secs(10), || {
            seen = fs::read_to_string(&knob).unwrap_or_default();
            seen.trim() == want
        });
        assert!(ok, "{args:?}: {knob} is {seen:?}, want {want}");
        let log = m.stderr_text();
        assert!(log.is_empty(), "{args:?}: daemon stderr: {log}");
        let st = m.unmount();
        assert!(st.is_some_and(|s| s.success()), "{args:?}: exit {st:?}");
    }
}

/// Materialises `spans` by reading the host fds.
fn read_spans(spans: &[erofs_virtiofsd::erofs::Span]) -> Vec<u8> {
    use erofs_virtiofsd::erofs::Span;
    let mut out = Vec::new();
    for s in spans {
        match *s {
            Span::Zero(n) => out.resize(out.len() + n, 0),
            Span::File { fd, offset, len } => {
                let mut buf = vec![0u8; len];
                // SAFETY: `buf` is writable for `len` bytes; `fd` is the
                // image's open descriptor.
                let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, offset as i64) };
                assert_eq!(n, len as isize, "pread of a span");
                out.extend_from_slice(&buf);
            }
        }
    }
    out
}

/// The host ranges the /dev/fuse transport splices from equal what
/// `Image::read` returns, for every file of plain images (flat, inline,
/// holes, 48-bit, chunks with and without a blob device, at an offset),
/// at many ranges; compressed files and extra devices are never spliced.
#[test]
fn test_fuse_spliced_ranges_equal_reads() {
    let mut spliced = 0usize;
    let tree = edge_tree();
    let scratch = image_dir("erofs-spans-");
    let plain = mkfs(
        tree.path(),
        &scratch.path().join("p.erofs"),
        &["-U", FIXED_UUID],
    );
    let chunked = mkfs(
        tree.path(),
        &scratch.path().join("c.erofs"),
        &["-U", FIXED_UUID, "--chunksize=8192"],
    );
    let mut at = vec![0x5au8; 12345];
    at.extend(fs::read(&plain).expect("read image"));
    let at_path = scratch.path().join("at.img");
    fs::write(&at_path, at).expect("write");
    let mut cases: Vec<(String, PathBuf, u64, Vec<PathBuf>)> = vec![
        ("mkfs plain".into(), plain.clone(), 0, vec![]),
        ("mkfs chunked".into(), chunked, 0, vec![]),
        ("mkfs plain at 12345".into(), at_path, 12345, vec![]),
    ];
    for name in [
        "edge_plain-b4096",
        "edge_plain-b512",
        "edge_plain-48bit",
        "big_chunk64k-blobdev",
        "edge_lz4",
    ] {
        let fx = fixture_image(name);
        let devs = fx.devices().iter().map(|d| d.to_path_buf()).collect();
        cases.push((name.into(), fx.image.clone(), 0, devs));
    }
    for (what, image, offset, devices) in cases {
        let opts = ImageOptions {
            devices: devices
                .iter()
                .map(|d| open_path(d, 0).expect("blob"))
                .collect(),
            ..ImageOptions::default()
        };
        let img = Image::open(open_path(&image, offset).expect("open"), opts).expect("open");
        let mut files = Vec::new();
        walk(
            &img,
            |e| {
                if e.inode.kind == InodeKind::File {
                    files.push(e.inode.clone());
                }
            },
            |p, e| panic!("{what}: {}: {e}", String::from_utf8_lossy(p)),
        )
        .expect("walk");
        let mut rng = common::trees::XorShift64::new(7);
        for inode in &files {
            let size = inode.size;
            let mut ranges = vec![(0, size as usize), (size / 2, 65536)];
            for _ in 0..4 {
                ranges.push((rng.below(size + 1), 1 + rng.below(300_000) as usize));
            }
            for (off, len) in ranges {
                let Some(spans) = img.plain_spans(inode, off, len, 16).expect("plain_spans") else {
                    continue;
                };
                assert!(
                    !inode.is_compressed(),
                    "{what}: spans for a compressed file"
                );
                let want_len = len.min(size.saturating_sub(off) as usize);
                let mut want = vec![0u8; want_len];
                let n = img.read(inode, off, &mut want).expect("read");
                assert_eq!(n, want_len);
                assert!(
                    read_spans(&spans) == want,
                    "{what}: nid {} at {off} len {len}: spliced bytes differ",
                    inode.nid
                );
                spliced += 1;
            }
        }
    }
    eprintln!("{spliced} ranges checked");
    assert!(spliced > 1000, "only {spliced} ranges could be spliced");
}

/// An image truncated while mounted: reads of the data that is gone fail
/// with EIO (the spliced reply finds the file short and the copying path
/// reports it), the daemon stays up and the rest still reads.
#[test]
fn test_fuse_image_truncated_while_mounted() {
    assert_kernel_erofs();
    let tree = edge_tree();
    let scratch = image_dir("erofs-trunc-");
    let img_path = mkfs(
        tree.path(),
        &scratch.path().join("t.erofs"),
        &["-U", FIXED_UUID],
    );
    let img = Image::open(
        open_path(&img_path, 0).expect("open"),
        ImageOptions::default(),
    )
    .expect("open");
    // The largest file: its data sits in the back part of the image.
    let mut biggest: Option<(Vec<u8>, u64)> = None;
    walk(
        &img,
        |e| {
            if e.inode.kind == InodeKind::File
                && biggest.as_ref().is_none_or(|(_, s)| e.inode.size > *s)
            {
                biggest = Some((e.path.clone(), e.inode.size));
            }
        },
        |_, _| {},
    )
    .expect("walk");
    let (big, size) = biggest.expect("a file");
    assert!(size >= 1 << 20, "largest file only {size} bytes");
    let fuse = FuseMount::new(&img_path, &[], &[]);
    let big_path = fuse.path().join(OsStr::from_bytes(&big[1..]));
    let small = fuse.path().join("files/log_70000");
    let small_before = fs::read(&small).expect("small file");
    // Metadata is read (and cached) before the cut.
    assert_eq!(fs::metadata(&big_path).expect("stat").len(), size);
    // Cut the image 8 KiB into the file's data.
    let inode = img.inode(walk_lookup(&img, &big)).expect("inode");
    let spans = img
        .plain_spans(&inode, 0, 4096, 16)
        .expect("plain_spans")
        .expect("an uncompressed file in a buffered file splices");
    let Some(erofs_virtiofsd::erofs::Span::File { offset: start, .. }) = spans.first().copied()
    else {
        panic!("the file starts with a hole: {spans:?}");
    };
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&img_path)
        .expect("open rw");
    f.set_len(start + 8192).expect("truncate");
    let err = fs::read(&big_path).expect_err("reading data past the cut succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let mut fuse = fuse;
    assert!(fuse.alive(), "daemon died: {}", fuse.stderr_text());
    // Cached data still reads; the mount answers.
    assert_eq!(
        fs::read(&small).expect("small file after the cut"),
        small_before
    );
    assert!(fs::read_dir(fuse.path()).is_ok_and(|d| d.count() > 0));
    let st = fuse.unmount();
    assert!(st.is_some_and(|s| s.success()), "exit {st:?}");
}

/// The nid at `path` (absolute, as the walk gives it).
fn walk_lookup(img: &Image, path: &[u8]) -> u64 {
    let mut nid = None;
    walk(
        img,
        |e| {
            if e.path == path {
                nid = Some(e.inode.nid);
            }
        },
        |_, _| {},
    )
    .expect("walk");
    nid.expect("path found")
}

/// Runs `f` on a shared read-only mapping of all of `path` (address and
/// length; `len > 0`), unmapped afterwards. Mapping touches no page.
fn with_mapping<T>(path: &Path, f: impl FnOnce(*mut libc::c_void, usize) -> T) -> T {
    let file = fs::File::open(path).expect("open");
    let len = usize::try_from(file.metadata().expect("stat").len()).expect("size");
    assert!(len > 0, "{}: empty", path.display());
    // SAFETY: a fresh shared read-only mapping of an open file on a
    // read-only mount or an image nobody writes; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    let out = f(map, len);
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(map, len) };
    out
}

/// How many of `path`'s pages are in the host page cache, and how many it
/// has (`mincore` over a mapping that is never touched, so the count does
/// not fault anything in).
fn resident_pages(path: &Path) -> (usize, usize) {
    let map = resident_map(path);
    (map.iter().filter(|&&r| r).count(), map.len())
}

/// Which pages of `path` are in the page cache (mincore of a mapping).
fn resident_map(path: &Path) -> Vec<bool> {
    with_mapping(path, |map, len| {
        let mut vec = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `map` is a mapping of `len` bytes and `vec` has one byte
        // per page of it.
        let rc = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().map(|b| b & 1 == 1).collect()
    })
}

/// Reading uncompressed files through the mount must not take the image's
/// pages out of the host page cache: a spliced reply that lets the kernel
/// move (steal) those pages into the mount's own cache leaves the image
/// cold for every other reader of it (and was twice as slow).
#[test]
fn test_fuse_reads_leave_the_image_cached() {
    assert_kernel_erofs();
    let scratch = image_dir("erofs-steal-");
    let tree = scratch.path().join("tree");
    fs::create_dir(&tree).expect("mkdir");
    let data = common::trees::XorShift64::new(7).bytes(24 << 20);
    fs::write(tree.join("big"), &data).expect("write");
    let img_path = mkfs(&tree, &scratch.path().join("p.erofs"), &["-U", FIXED_UUID]);
    // Something outside the test reclaims page-cache pages now and then on
    // this VM (its page cache shrank from 3 GB to 0.5 GB within minutes with
    // 23 GB free; under load about one run in 40 lost 50-130 of these
    // pages, with the daemons of before and after this comment alike): a
    // fresh mount gets another try then. Stealing takes nearly every page
    // on every run (5,500-6,000 of 6,145 each try), so it still fails.
    let mut lost = Vec::new();
    for attempt in 0..3 {
        let image_bytes = fs::read(&img_path).expect("read image");
        assert!(image_bytes.len() >= data.len());
        let (before, pages) = resident_pages(&img_path);
        assert_eq!(
            before, pages,
            "the image is not all cached after reading it"
        );
        let fuse = FuseMount::new(&img_path, &[], &[]);
        assert!(
            fs::read(fuse.path().join("big")).expect("read through the mount") == data,
            "content differs"
        );
        let (after, _) = resident_pages(&img_path);
        fuse.finish("plain image");
        if after == pages {
            if attempt > 0 {
                eprintln!("image pages lost to something else in earlier tries: {lost:?}");
            }
            return;
        }
        lost.push(format!("{} of {pages}", pages - after));
    }
    panic!("reading through the mount took image pages out of the page cache, every try: {lost:?}");
}

/// The bytes of `path` as the page cache sees them: read through a shared
/// mapping (pages the cache holds are not asked for again).
fn read_mapped(path: &Path) -> Vec<u8> {
    if fs::metadata(path).expect("stat").len() == 0 {
        return Vec::new();
    }
    with_mapping(path, |map, len| {
        // SAFETY: `map` is readable for `len` bytes while mapped.
        unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) }.to_vec()
    })
}

/// A 4 KiB read in a file with large pclusters decodes a whole extent; the
/// daemon pushes the rest of it into the mount's page cache
/// (FUSE_NOTIFY_STORE), as the kernel's EROFS fills the page cache for all
/// of a decoded pcluster. The pages appear without being read, and every
/// page the cache then holds equals the kernel's.
#[test]
fn test_fuse_pushes_decoded_extents_into_the_page_cache() {
    assert_kernel_erofs();
    let mut pushed_somewhere = 0usize;
    for name in [
        "big_lz4hc-C1m",
        "big_zstd-dedupe-fragments",
        "edge_lzma109-C1m",
        "edge_lz4hc-C64k",
        "edge_lzma-allfragments",
        "edge_multialg-hints",
        "edge_zstd-b2048-ztailpack",
    ] {
        let fx = fixture_image(name);
        let kernel = KernelMount::mount(&fx.image, &MountOptions::with_devices(&fx.devices()))
            .unwrap_or_else(|e| panic!("{e}"));
        let fuse = FuseMount::new(&fx.image, &fx.devices(), &[]);
        let mut files = Vec::new();
        common::rangeread::list_files(kernel.path(), b"", &mut files);
        files.sort();
        files.retain(|(_, size)| *size >= 256 << 10);
        assert!(!files.is_empty(), "{name}: no file of 256 KiB or more");
        let mut pushed = 0usize;
        for (rel, size) in files.iter().take(6) {
            let rel = OsStr::from_bytes(&rel[1..]);
            let (fpath, kpath) = (fuse.path().join(rel), kernel.path().join(rel));
            let pages = usize::try_from(size.div_ceil(4096)).expect("pages");
            let (before, _) = resident_pages(&fpath);
            assert_eq!(before, 0, "{name}/{rel:?}: cached before any read");
            let f = fs::File::open(&fpath).expect("open through FUSE");
            let at = (size / 2) & !4095;
            let mut page = [0u8; 4096];
            let n = common::rangeread::pread_full(&f, &mut page, at).expect("pread");
            let want = fs::read(&kpath).expect("kernel read");
            let end = usize::try_from(at).expect("offset");
            assert_eq!(&page[..n], &want[end..end + n], "{name}/{rel:?} at {at}");
            // The push is asynchronous: wait until the cache holds more
            // than the page read (or give up; not every extent is large).
            let grew = wait_for(Duration::from_secs(3), || resident_pages(&fpath).0 > 1);
            let (held, _) = resident_pages(&fpath);
            assert!(held <= pages);
            if grew {
                pushed += 1;
            }
            let seen = read_mapped(&fpath);
            assert!(
                seen == want,
                "{name}/{rel:?}: the page cache ({held} pages after one read) differs from the kernel's file"
            );
        }
        eprintln!(
            "{name}: pushes seen for {pushed} of {} files",
            files.len().min(6)
        );
        pushed_somewhere += pushed;
        fuse.finish(name);
    }
    assert!(
        pushed_somewhere >= 10,
        "only {pushed_somewhere} files got pushed pages"
    );
}

/// Small reads at random places of an uncompressed file: once the file has
/// had as many of them as half its 128 KiB windows, the daemon pushes the
/// window around each further one into the page cache (a reader covering
/// the file densely comes back next to where it read); before that, only
/// the pages read are cached. Everything cached equals the kernel's file.
#[test]
fn test_fuse_reads_around_dense_random_reads() {
    assert_kernel_erofs();
    let scratch = image_dir("erofs-around-");
    let tree = scratch.path().join("tree");
    fs::create_dir_all(&tree).expect("mkdir");
    // 2 MiB + a partial page: 17 windows, read-around after 8 small reads.
    let mut rng = common::trees::XorShift64::new(5);
    let mut data = vec![0u8; (2 << 20) + 1000];
    rng.fill(&mut data);
    fs::write(tree.join("data.bin"), &data).expect("write");
    let img = mkfs(&tree, &scratch.path().join("a.erofs"), &["-U", FIXED_UUID]);
    let kernel =
        KernelMount::mount(&img, &MountOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let want = fs::read(kernel.path().join("data.bin")).expect("kernel read");
    assert_eq!(want, data, "the kernel reads the file back");
    let fuse = FuseMount::new(&img, &[], &[]);
    let path = fuse.path().join("data.bin");
    let f = fs::File::open(&path).expect("open through FUSE");
    const WINDOW: usize = 128 << 10;
    let window_pages = |w: usize| -> usize {
        resident_map(&path)
            .iter()
            .skip(w * WINDOW / 4096)
            .take(WINDOW / 4096)
            .filter(|&&r| r)
            .count()
    };
    let mut page = [0u8; 4096];
    let mut read_at = |w: usize| {
        // A page in the middle of window `w`.
        let at = w * WINDOW + 16 * 4096;
        let n = common::rangeread::pread_full(&f, &mut page, at as u64).expect("pread");
        assert_eq!(&page[..n], &want[at..at + n], "read at {at}");
    };
    // Seven small reads in odd windows: nothing around them is pushed.
    for w in [1, 3, 5, 7, 9, 11, 13] {
        read_at(w);
    }
    // The eighth starts read-around: its window fills.
    read_at(15);
    assert!(
        wait_for(Duration::from_secs(5), || window_pages(15) == WINDOW / 4096),
        "window 15 not pushed: {} pages",
        window_pages(15)
    );
    // Pushes go out in order, one thread: the earlier windows would be
    // complete by now if they had been pushed.
    for w in [1, 3, 5, 7, 9, 11, 13] {
        assert!(
            window_pages(w) < 8,
            "window {w} was read around before the file was read densely: {} pages",
            window_pages(w)
        );
    }
    // From now on every small read pushes its window.
    read_at(2);
    assert!(
        wait_for(Duration::from_secs(5), || window_pages(2) == WINDOW / 4096),
        "window 2 not pushed: {} pages",
        window_pages(2)
    );
    drop(f);
    assert!(
        read_mapped(&path) == want,
        "the page cache differs from the kernel's file"
    );
    fuse.finish("around");
}

/// A reader going through a directory in listing order (tar, cp -r) gets
/// the small files after the one it reads pushed into the page cache: they
/// appear without being read, and read back equal to the kernel's. Files
/// read out of order push nothing.
#[test]
fn test_fuse_pushes_files_read_in_listing_order() {
    assert_kernel_erofs();
    let scratch = image_dir("erofs-stream-");
    let tree = scratch.path().join("tree");
    let mut rng = common::trees::XorShift64::new(11);
    for d in ["seq", "rand", "other"] {
        let dir = tree.join(d);
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..40u64 {
            // Mostly small text-like files, one larger than a batch takes.
            let len = if i == 20 {
                300_000
            } else {
                1 + rng.below(20_000)
            };
            let data: Vec<u8> = (0..len)
                .map(|j| b"abcdefgh\n"[(j % 9) as usize] ^ (i as u8 & 7))
                .collect();
            fs::write(dir.join(format!("f{i:02}")), data).expect("write");
        }
        fs::create_dir(dir.join("sub")).expect("mkdir");
        fs::write(dir.join("sub/x"), b"x").expect("write");
    }
    for (what, img) in [
        (
            "plain",
            mkfs(&tree, &scratch.path().join("p.erofs"), &["-U", FIXED_UUID]),
        ),
        (
            "lz4",
            mkfs_compressed(
                &tree,
                &scratch.path().join("z.erofs"),
                "lz4",
                &["-U", FIXED_UUID],
            ),
        ),
    ] {
        let kernel =
            KernelMount::mount(&img, &MountOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let fuse = FuseMount::new(&img, &[], &[]);
        let listing = |d: &str| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(fuse.path().join(d))
                .expect("readdir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.is_file())
                .collect();
            // read_dir gives the listing order; keep it.
            v.dedup();
            v
        };
        let resident = |p: &Path| resident_pages(p);
        let full = |p: &Path| {
            let (held, pages) = resident(p);
            held == pages
        };
        // Out of order first: reading the 6th file of "rand" pushes nothing.
        let rand = listing("rand");
        fs::read(&rand[5]).expect("read");
        // In order: the first file of "seq", then the batch after it.
        let seq = listing("seq");
        assert!(seq.len() >= 40, "{what}: {} files listed", seq.len());
        fs::read(&seq[0]).expect("read");
        assert!(
            wait_for(Duration::from_secs(5), || full(&seq[1])),
            "{what}: the file after the first one read was not pushed: {:?}",
            resident(&seq[1])
        );
        // Pushes go out in order, one thread: anything "rand" had queued
        // before is done by now.
        assert_eq!(
            resident(&rand[6]).0,
            0,
            "{what}: a file read out of order pushed its neighbour"
        );
        // The batch stops before the large file; reading that one starts the
        // next batch.
        let big = seq
            .iter()
            .position(|p| fs::metadata(p).unwrap().len() > 200_000)
            .expect("big file");
        // The batch is pushed file by file: wait for its last one (then,
        // pushes being in order, the batch is complete).
        assert!(
            wait_for(Duration::from_secs(5), || full(&seq[big - 1])),
            "{what}: {:?} not pushed",
            seq[big - 1]
        );
        assert_eq!(
            resident(&seq[big]).0,
            0,
            "{what}: the large file was pushed"
        );
        fs::read(&seq[big]).expect("read");
        assert!(
            wait_for(Duration::from_secs(5), || full(&seq[big + 1])),
            "{what}: the batch after the large file was not pushed"
        );
        // Every page the cache holds equals the kernel's.
        for d in ["seq", "rand"] {
            for p in listing(d) {
                let rel = p.strip_prefix(fuse.path()).expect("under the mount");
                let want = fs::read(kernel.path().join(rel)).expect("kernel read");
                assert!(
                    read_mapped(&p) == want,
                    "{what}: {rel:?} differs from the kernel's"
                );
            }
        }
        fuse.finish(what);
    }
}

/// Files whose reads are answered by splicing from the image (uncompressed,
/// whole blocks, 32 KiB or more) continue a listing-order stream like any
/// other: after the first file of a directory is read, the next one is
/// pushed into the page cache.
#[test]
fn test_fuse_spliced_reads_follow_the_listing() {
    assert_kernel_erofs();
    let scratch = image_dir("erofs-spliced-stream-");
    let dir = scratch.path().join("tree/d");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut rng = common::trees::XorShift64::new(3);
    for i in 0..10 {
        // Ten blocks each: no inline tail, so the whole file is spliced.
        let mut data = vec![0u8; 40960];
        rng.fill(&mut data);
        fs::write(dir.join(format!("f{i}")), data).expect("write");
    }
    let img = mkfs(
        &scratch.path().join("tree"),
        &scratch.path().join("s.erofs"),
        &["-U", FIXED_UUID],
    );
    let kernel =
        KernelMount::mount(&img, &MountOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let fuse = FuseMount::new(&img, &[], &[]);
    let listing: Vec<PathBuf> = fs::read_dir(fuse.path().join("d"))
        .expect("readdir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(listing.len(), 10);
    let full = |p: &Path| {
        let (held, pages) = resident_pages(p);
        held == pages
    };
    assert!(!full(&listing[1]), "cached before anything was read");
    fs::read(&listing[0]).expect("read");
    assert!(
        wait_for(Duration::from_secs(5), || full(&listing[1])),
        "the file after a spliced read in listing order was not pushed: {:?}",
        resident_pages(&listing[1])
    );
    for p in &listing[..2] {
        let rel = p.strip_prefix(fuse.path()).expect("under the mount");
        let want = fs::read(kernel.path().join(rel)).expect("kernel read");
        assert!(read_mapped(p) == want, "{rel:?} differs from the kernel's");
    }
    fuse.finish("spliced");
}

/// Workers poll for the next request after answering one (`--poll-us`):
/// a walk with a long window lists what the kernel's mount lists, and once
/// the requests stop, the daemon stops using the CPU (a worker left
/// polling, or its descriptor left non-blocking, would spin for good).
#[test]
fn test_fuse_polling_workers_go_quiet() {
    assert_kernel_erofs();
    let scratch = image_dir("erofs-poll-");
    let tree = scratch.path().join("tree");
    for d in 0..200 {
        let dir = tree.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..5 {
            fs::write(dir.join(format!("f{f}")), format!("{d} {f}\n")).expect("write");
        }
    }
    let img = mkfs(&tree, &scratch.path().join("p.erofs"), &["-U", FIXED_UUID]);
    let kernel = common::kmount::KernelMount::new(&img, &[]);
    let expected = common::manifest::walk_manifest(kernel.path());
    for window in ["20000", "0"] {
        let fuse = FuseMount::new(&img, &[], &["--poll-us", window, "--sandbox", "none"]);
        let got = common::manifest::walk_manifest(fuse.path());
        common::manifest::assert_manifests_eq(&format!("--poll-us {window}"), &expected, &got);
        // Past the window (20 ms), nothing is left to do: over the next
        // half second the daemon may use a little CPU (clock ticks of
        // 10 ms), not a polling core.
        std::thread::sleep(Duration::from_millis(40));
        let before = common::procs::cpu_ticks(fuse.pid());
        std::thread::sleep(Duration::from_millis(500));
        let used = common::procs::cpu_ticks(fuse.pid()).saturating_sub(before);
        assert!(
            used < 5,
            "--poll-us {window}: the quiet daemon used {used} ticks of CPU in 500 ms"
        );
        fuse.finish(&format!("--poll-us {window}"));
    }
}
