//! Image errors through our FUSE daemon: the client gets the errno the
//! cause implies, and the daemon's stderr names the inode and the byte
//! offset where the trouble is.
//!
//! - `test_fuse_device_not_given_is_enodev`: multi-device images mounted
//!   without `--device`: reading a file whose data is on the blob is
//!   ENODEV, logged with the nid and the byte of the device. Both kinds:
//!   Debian's mkfs.erofs 1.5 `--chunksize --blobdev` (the device has no
//!   unified address) and the fixture `edge_chunk4k-b512-blobdev` (mkfs
//!   1.9: looked up inside the image at its unified address, past its
//!   end). The fixture with the blob appended at its unified address
//!   ("flat") reads like the kernel's mount without `--device`.
//! - `test_fuse_undecodable_extent_is_euclean_with_inode_and_offset`: a
//!   freshly built lz4 image with one pcluster overwritten: reading that
//!   file is EUCLEAN (as from the kernel's mount), logged with the nid,
//!   the file bytes and the pcluster's image byte; the other file still
//!   reads and the daemon stays up.
//! - `test_fuse_corrupt_metadata_errno_matches_the_kernel`: five kinds of
//!   damage (inode type, xattr entry, dirent, compressed index, pcluster),
//!   one image each: every operation's errno equals the kernel's.
//! - `test_fuse_errno_of_each_call_matches_the_kernel`: writes of every
//!   kind, wrong types, missing and over-long names, xattr namespaces:
//!   the same answers as the kernel's mount of the same image.
//!
//! Needs root and /dev/fuse, Debian's mkfs.erofs (and mkfs.erofs 1.9 from
//! `scripts/sid-tools.sh erofs` for the corrupt-metadata test) and the
//! shared fixtures (like `fuse_mount.rs`).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use erofs_virtiofsd::erofs::zmap::{ZKind, ZMap};
use erofs_virtiofsd::erofs::{ExtentKind, Image, ImageOptions, Inode};
use erofs_virtiofsd::source::open_path;

use common::fusemount::FuseMount;
use common::mkfs::{mkfs_compressed, FIXED_UUID};
use common::trees::{image_dir, scratch_dir};
use common::{
    assert_kernel_erofs, assert_manifests_eq, fixture_image, load_expected, mkfs, walk_manifest,
    KernelMount,
};

/// Text lines of `len` bytes (compressible, different per `seed`).
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut n = seed;
    while out.len() < len {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(format!("line {} of {seed}: {:x}\n", out.len(), n >> 40).as_bytes());
    }
    out.truncate(len);
    out
}

/// A small tree: `/big.txt` (256 KiB) and `/other.txt` (64 KiB).
fn small_tree(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("big.txt", text(256 << 10, 1)),
        ("other.txt", text(64 << 10, 2)),
    ];
    for (name, data) in &files {
        fs::write(dir.join(name), data).expect("write tree file");
    }
    files
}

fn open_image(path: &Path) -> Image {
    Image::open(open_path(path, 0).expect("open"), ImageOptions::default()).expect("Image::open")
}

/// The inode at `/path`.
fn inode_at(img: &Image, path: &str) -> Inode {
    let mut inode = img.inode(img.root_nid()).expect("root");
    for name in path.split('/') {
        let (nid, _) = img
            .lookup(&inode, name.as_bytes())
            .expect("lookup")
            .unwrap_or_else(|| panic!("/{path} not found"));
        inode = img.inode(nid).expect("inode");
    }
    inode
}

fn on(mount: &FuseMount, name: &str) -> PathBuf {
    mount.path().join(OsStr::from_bytes(name.as_bytes()))
}

/// Reads `name` through `mount`, which must fail with ENODEV and log that
/// the data of `nid` at byte `pa` of extra device 1 is missing.
fn assert_missing_device(mount: &mut FuseMount, name: &str, nid: u64, pa: u64) {
    let err = fs::read(on(mount, name)).expect_err("data of a missing device");
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "/{name}: {err}");
    assert!(mount.alive(), "the daemon died: {}", mount.stderr_text());
    let log = mount.stderr_text();
    let want = format!("data of nid {nid} at byte {pa} of extra device 1");
    assert!(
        log.lines()
            .any(|l| l.contains(&want) && l.contains("--device")),
        "no log line with {want:?}: {log}"
    );
}

/// Where byte 0 of `inode` is: (device, address); it must be mapped.
fn first_byte(img: &Image, inode: &Inode) -> (u16, u64) {
    match img.map(inode, 0).expect("map").kind {
        ExtentKind::Mapped { device, pa } => (device, pa),
        other => panic!("nid {} starts with {other:?}", inode.nid),
    }
}

#[test]
fn test_fuse_device_not_given_is_enodev() {
    assert_kernel_erofs();
    // mkfs 1.5 --blobdev: the device has no unified address, so it cannot
    // be inside the image.
    let tree = scratch_dir("erofs-enodev-tree-");
    small_tree(tree.path());
    let scratch = image_dir("erofs-enodev-");
    let blob = scratch.path().join("data.blob");
    let blob_arg = format!("--blobdev={}", blob.display());
    let image = mkfs(
        tree.path(),
        &scratch.path().join("meta.erofs"),
        &["-U", FIXED_UUID, "--chunksize=4096", &blob_arg],
    );
    let img = open_image(&image);
    assert_eq!(img.devices().len(), 1, "a device table");
    let big = inode_at(&img, "big.txt");
    let (device, pa) = first_byte(&img, &big);
    assert_eq!(device, 1, "the data is on the blob");
    let mut mount = FuseMount::new(&image, &[], &["--cache", "never"]);
    assert_missing_device(&mut mount, "big.txt", big.nid, pa);
    mount.finish("mkfs 1.5 blobdev image, device not given");

    // A fixture whose device has a unified address (mkfs 1.9): without
    // --device its data is looked up inside the image, past its end.
    let name = "edge_chunk4k-b512-blobdev";
    let fx = fixture_image(name);
    let img = open_image(&fx.image);
    let dev = img.devices().first().expect("a device table").clone();
    assert_ne!(dev.uniaddr, 0, "{name}: no unified address");
    let path = "files/log_65535";
    let inode = inode_at(&img, path);
    let (device, pa) = first_byte(&img, &inode);
    assert_eq!(device, 1, "{name}: /{path} is on the blob");
    let mut mount = FuseMount::new(&fx.image, &[], &["--cache", "never"]);
    assert_missing_device(&mut mount, path, inode.nid, pa);
    mount.finish("fixture, device not given");

    // The same image with the blob appended at its unified address reads
    // like the kernel's mount without --device ("flat").
    let flat = scratch.path().join("flat.erofs");
    let mut bytes = fs::read(&fx.image).expect("read image");
    let at = usize::try_from(dev.uniaddr << img.blkszbits()).expect("address");
    assert!(bytes.len() <= at, "{name}: the image overlaps its device");
    bytes.resize(at, 0);
    bytes.extend_from_slice(&fs::read(fx.blob.as_ref().expect("blob")).expect("read blob"));
    fs::write(&flat, &bytes).expect("write flat image");
    let mount = FuseMount::new(&flat, &[], &[]);
    assert_manifests_eq(
        &format!("{name} made flat: expected manifest vs our FUSE mount without --device"),
        &load_expected(name),
        &walk_manifest(mount.path()),
    );
    let log = mount.stderr_text();
    assert!(log.is_empty(), "flat image: daemon stderr: {log}");
    mount.finish("flat image");
}

#[test]
fn test_fuse_undecodable_extent_is_euclean_with_inode_and_offset() {
    assert_kernel_erofs();
    let tree = scratch_dir("erofs-eio-tree-");
    let files = small_tree(tree.path());
    let scratch = image_dir("erofs-eio-");
    let pristine = mkfs_compressed(
        tree.path(),
        &scratch.path().join("lz4.erofs"),
        "lz4",
        &["-U", FIXED_UUID],
    );
    let img = open_image(&pristine);
    let big = inode_at(&img, "big.txt");
    let ext = ZMap::new(&img, &big).and_then(|z| z.map(0)).expect("map");
    let ZKind::Encoded {
        pa,
        inline: false,
        plen,
        ..
    } = ext.kind
    else {
        panic!("/big.txt does not start with its own pcluster: {ext:?}");
    };
    // An LZ4 stream of 0xff bytes never ends its literal run: undecodable.
    let mut bytes = fs::read(&pristine).expect("read image");
    let (start, end) = (pa as usize, (pa + plen) as usize);
    bytes[start..end].fill(0xff);
    let image = scratch.path().join("corrupt.erofs");
    fs::write(&image, &bytes).expect("write corrupt image");

    let mut mount = FuseMount::new(&image, &[], &["--cache", "never"]);
    for _ in 0..2 {
        let err = fs::read(on(&mount, "big.txt")).expect_err("the damaged pcluster");
        assert_eq!(err.raw_os_error(), Some(libc::EUCLEAN), "{err}");
    }
    assert!(mount.alive(), "the daemon died: {}", mount.stderr_text());
    let other = files
        .iter()
        .find(|(n, _)| *n == "other.txt")
        .expect("other");
    assert_eq!(
        fs::read(on(&mount, "other.txt")).expect("undamaged file"),
        other.1
    );
    let log = mount.stderr_text();
    let want = format!(
        "nid {}: cannot decode file bytes 0..{} from the {plen}-byte pcluster at image byte {pa}",
        big.nid, ext.llen
    );
    assert!(
        log.lines().any(|l| l.contains(&want) && l.contains("lz4")),
        "no log line with {want:?}: {log}"
    );
    mount.finish("undecodable extent");
}

/// What one operation on a path gives: "ok" or the errno's number.
fn outcome(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e
            .raw_os_error()
            .map_or_else(|| e.to_string(), |n| n.to_string()),
    }
}

/// getxattr (with `name`) or listxattr of `path`, not following symlinks
/// (the xattr crate's `Ok(None)` is ENODATA).
fn xattr_op(path: &Path, name: Option<&str>) -> std::io::Result<()> {
    match name {
        Some(n) => xattr::get(path, n)?
            .map(drop)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODATA)),
        None => xattr::list(path).map(|l| l.for_each(drop)),
    }
}

/// The part of both errno tests' trees: a directory `d/`, a file `f`, and
/// a file `x` with the xattr `user.a` = `b`.
fn errno_tree(tree: &Path) {
    fs::create_dir_all(tree.join("d")).expect("mkdir");
    fs::write(tree.join("f"), b"hello\n").expect("write");
    fs::write(tree.join("x"), b"xattrs\n").expect("write");
    xattr::set(tree.join("x"), "user.a", b"b").expect("setxattr");
}

/// What one call per entry of `calls` gives: ("what", "ok" or errno).
type Outcomes = Vec<(&'static str, String)>;

/// `calls` on the kernel's mount of `image`, then on ours: each call must
/// give both the same outcome, and the daemon must stay up. Returns ours.
fn outcomes_like_the_kernel(image: &Path, case: &str, calls: fn(&Path) -> Outcomes) -> Outcomes {
    let kernel = {
        let k = KernelMount::new(image, &[]);
        calls(k.path())
    };
    let mut mount = FuseMount::new(image, &[], &[]);
    let ours = calls(mount.path());
    assert_eq!(ours.len(), kernel.len(), "{case}");
    for ((what, k), (_, o)) in kernel.iter().zip(&ours) {
        assert_eq!(o, k, "{case}: {what}: ours vs the kernel");
    }
    assert!(
        mount.alive(),
        "{case}: the daemon died: {}",
        mount.stderr_text()
    );
    ours
}

/// Every operation of the corrupt-metadata test on a mount at `root`.
fn metadata_outcomes(root: &Path) -> Outcomes {
    let p = |rel: &str| root.join(rel);
    vec![
        ("stat f", outcome(fs::symlink_metadata(p("f")).map(drop))),
        ("read f", outcome(fs::read(p("f")).map(drop))),
        ("getxattr x", outcome(xattr_op(&p("x"), Some("user.a")))),
        ("listxattr x", outcome(xattr_op(&p("x"), None))),
        (
            "readdir d",
            outcome(fs::read_dir(p("d")).and_then(|mut rd| rd.try_for_each(|e| e.map(drop)))),
        ),
        ("read big", outcome(fs::read(p("big")).map(drop))),
        ("read other", outcome(fs::read(p("other")).map(drop))),
    ]
}

/// Damaged metadata and data, one fault per image (a file's inode type,
/// an xattr entry's name length, a directory's first dirent, a compressed
/// file's index and its pcluster): each operation gives our mount the
/// errno it gives the kernel's mount of the same bytes (EUCLEAN, the
/// kernel's EFSCORRUPTED, for all of these), the undamaged file reads,
/// and the daemon stays up.
#[test]
fn test_fuse_corrupt_metadata_errno_matches_the_kernel() {
    assert_kernel_erofs();
    let scratch = scratch_dir("erofs-fuse-errno-");
    let tree = scratch.path().join("tree");
    errno_tree(&tree);
    for i in 0..50 {
        fs::write(tree.join(format!("d/file_{i}")), format!("{i}\n")).expect("write");
    }
    fs::write(tree.join("big"), text(300 << 10, 3)).expect("write");
    fs::write(tree.join("other"), text(64 << 10, 4)).expect("write");
    // No superblock checksum: the inodes sit in the superblock's block,
    // and a damaged inode must not turn into a refused mount.
    let pristine = common::mkfs::mkfs_19(
        &tree,
        &scratch.path().join("pristine.erofs"),
        &["-zlz4hc", "-T0", "-Enosbcrc"],
    );
    let img = open_image(&pristine);
    let at = |path: &str| {
        let i = inode_at(&img, path);
        assert!(!i.loc.in_metabox, "{path}");
        (i.loc.pos as usize, i.inode_isize as usize, i)
    };
    let (f, _, _) = at("f");
    let (x, x_core, x_inode) = at("x");
    assert!(x_inode.xattr_isize > 12, "no inline xattr on /x");
    let (d, d_core, d_inode) = at("d");
    assert_eq!(d_inode.layout, 2, "/d is not inline");
    let (big, big_core, big_inode) = at("big");
    assert!(big_inode.is_compressed(), "/big is not compressed");
    let ext = ZMap::new(&img, &big_inode)
        .and_then(|z| z.map(0))
        .expect("map");
    let ZKind::Encoded {
        pa,
        inline: false,
        plen,
        ..
    } = ext.kind
    else {
        panic!("/big does not start with its own pcluster: {ext:?}");
    };
    let big_xattrs = big_inode.xattr_isize as usize;
    let d_xattrs = d_inode.xattr_isize as usize;
    drop(img);
    let bytes = fs::read(&pristine).expect("read image");
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "inode type",
            Box::new(move |b| b[f + 4..f + 6].copy_from_slice(&0o070644u16.to_le_bytes())),
        ),
        (
            // The first entry after the 12-byte inline xattr header.
            "xattr name length",
            Box::new(move |b| b[x + x_core + 12] = 250),
        ),
        (
            "first dirent's name offset",
            Box::new(move |b| {
                let p = d + d_core + d_xattrs + 8;
                b[p..p + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
            }),
        ),
        (
            "compressed index",
            Box::new(move |b| {
                let p = big + big_core + big_xattrs;
                b[p..p + 64].fill(0xff);
            }),
        ),
        (
            "pcluster",
            Box::new(move |b| b[pa as usize..(pa + plen) as usize].fill(0xff)),
        ),
    ];
    let image = scratch.path().join("corrupt.erofs");
    for (what, mutate) in &cases {
        let mut b = bytes.clone();
        mutate(&mut b);
        fs::write(&image, &b).expect("write corrupt image");
        let ours = outcomes_like_the_kernel(&image, what, metadata_outcomes);
        let failed: Vec<_> = ours.iter().filter(|(_, o)| o != "ok").collect();
        assert!(!failed.is_empty(), "{what}: the damage did not show");
        for (op, o) in &failed {
            assert_eq!(*o, libc::EUCLEAN.to_string(), "{what}: {op}");
        }
        assert_eq!(ours.last().map(|(_, o)| o.as_str()), Some("ok"), "{what}");
    }
}

/// Every call a client may make that must fail or answer in a set way on
/// a read-only EROFS mount at `root`: writes of every kind, wrong types,
/// missing names, xattr namespaces, name lengths.
fn call_outcomes(root: &Path) -> Outcomes {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let p = |rel: &str| root.join(rel);
    let open_with = |rel: &str, o: &mut fs::OpenOptions| o.open(p(rel)).map(drop);
    let read_one = |rel: &str| {
        fs::File::open(p(rel)).and_then(|mut f| {
            use std::io::Read;
            f.read(&mut [0u8; 16]).map(drop)
        })
    };
    vec![
        (
            "open write",
            outcome(open_with("f", fs::OpenOptions::new().write(true))),
        ),
        (
            "open append",
            outcome(open_with("f", fs::OpenOptions::new().append(true))),
        ),
        (
            "create",
            outcome(open_with(
                "new",
                fs::OpenOptions::new().write(true).create(true),
            )),
        ),
        (
            "create existing, excl",
            outcome(open_with(
                "f",
                fs::OpenOptions::new().write(true).create_new(true),
            )),
        ),
        ("mkdir", outcome(fs::create_dir(p("nd")))),
        ("mkdir existing", outcome(fs::create_dir(p("d")))),
        ("unlink", outcome(fs::remove_file(p("f")))),
        ("unlink missing", outcome(fs::remove_file(p("nope")))),
        ("rmdir", outcome(fs::remove_dir(p("d")))),
        ("rename", outcome(fs::rename(p("f"), p("g")))),
        ("symlink", outcome(symlink("f", p("s2")))),
        ("link", outcome(fs::hard_link(p("f"), p("f2")))),
        (
            "chmod",
            outcome(fs::set_permissions(
                p("f"),
                fs::Permissions::from_mode(0o600),
            )),
        ),
        (
            "truncate",
            outcome(fs::File::open(p("f")).and_then(|f| f.set_len(0))),
        ),
        ("setxattr", outcome(xattr::set(p("x"), "user.new", b"1"))),
        ("removexattr", outcome(xattr::remove(p("x"), "user.a"))),
        (
            "stat missing",
            outcome(fs::symlink_metadata(p("nope")).map(drop)),
        ),
        (
            "stat through a file",
            outcome(fs::metadata(p("f/x")).map(drop)),
        ),
        ("readdir of a file", outcome(fs::read_dir(p("f")).map(drop))),
        (
            "readlink of a file",
            outcome(fs::read_link(p("f")).map(drop)),
        ),
        (
            "readlink of a dir",
            outcome(fs::read_link(p("d")).map(drop)),
        ),
        ("readlink", outcome(fs::read_link(p("s")).map(drop))),
        ("read a dir", outcome(read_one("d"))),
        (
            "read through a dangling link",
            outcome(read_one("dangling")),
        ),
        (
            "lookup 255 bytes",
            outcome(fs::metadata(p(&"n".repeat(255))).map(drop)),
        ),
        (
            "lookup 256 bytes",
            outcome(fs::metadata(p(&"n".repeat(256))).map(drop)),
        ),
        ("getxattr", outcome(xattr_op(&p("x"), Some("user.a")))),
        (
            "getxattr missing",
            outcome(xattr_op(&p("x"), Some("user.nope"))),
        ),
        (
            "getxattr trusted missing",
            outcome(xattr_op(&p("x"), Some("trusted.nope"))),
        ),
        (
            "getxattr acl",
            outcome(xattr_op(&p("x"), Some("system.posix_acl_access"))),
        ),
        (
            "getxattr system.foo",
            outcome(xattr_op(&p("x"), Some("system.foo"))),
        ),
        (
            "getxattr foo.bar",
            outcome(xattr_op(&p("x"), Some("foo.bar"))),
        ),
        ("getxattr user.", outcome(xattr_op(&p("x"), Some("user.")))),
        (
            "getxattr security.",
            outcome(xattr_op(&p("x"), Some("security."))),
        ),
        (
            "getxattr 256-byte name",
            outcome(xattr_op(
                &p("x"),
                Some(&format!("user.{}", "n".repeat(251))),
            )),
        ),
        (
            "getxattr of a symlink",
            outcome(xattr_op(&p("s"), Some("user.a"))),
        ),
        ("listxattr", outcome(xattr_op(&p("x"), None))),
    ]
}

/// The calls of [`call_outcomes`] give our mount what they give the
/// kernel's mount of the same image (EROFS for every write, ENOTDIR,
/// EISDIR, EINVAL, ENOENT, ENAMETOOLONG, ENODATA, EOPNOTSUPP for a name in
/// no namespace, EINVAL for a bare prefix, ERANGE for a name too long).
#[test]
fn test_fuse_errno_of_each_call_matches_the_kernel() {
    assert_kernel_erofs();
    let scratch = scratch_dir("erofs-fuse-calls-");
    let tree = scratch.path().join("tree");
    errno_tree(&tree);
    fs::write(tree.join("d/in"), b"in\n").expect("write");
    std::os::unix::fs::symlink("f", tree.join("s")).expect("symlink");
    std::os::unix::fs::symlink("nowhere", tree.join("dangling")).expect("symlink");
    let image = mkfs(&tree, &scratch.path().join("calls.erofs"), &[]);
    let ours = outcomes_like_the_kernel(&image, "calls", call_outcomes);
    // The list is not all refusals: the reads that must work do.
    assert!(ours.iter().any(|(w, o)| *w == "getxattr" && o == "ok"));
}
