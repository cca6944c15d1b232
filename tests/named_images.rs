//! Several images in one share (`--image NAME=PATH`, `--config FILE`),
//! each a top-level directory of a read-only root listing the names.
//!
//! - through a local `mount` and through the vhost-user test frontend: the
//!   root lists the names (in the order given), the manifest of each
//!   `/NAME/...` equals the kernel's manifest of that image, and inode
//!   numbers are unique across images (each image's slot on top of the
//!   kernel's number);
//! - the root is never cached: zero entry and attribute timeouts;
//! - the config file: per-image devices, relative paths; bad TOML, unknown
//!   keys, duplicate and bad names, a missing file: one clear line on
//!   stderr, exit 1, nothing mounted or served;
//! - a single image (positional or unnamed `--image`) is the root, as
//!   before.
//!
//! Needs root, /dev/fuse and the shared fixtures (like `fuse_mount.rs`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::BIN;
use common::daemon::Daemon;
use common::fixtures::{fixture_image, FixtureImage};
use common::frontend::{Frontend, FrontendOptions};
use common::fuse_client::{walk_from, FuseClient, ROOT_ID};
use common::fusemount::{is_mounted, FuseMount};
use common::{assert_manifests_eq, load_expected, walk_manifest};

/// The images served by name: (name, fixture), the first two given with
/// `--image NAME=PATH`, the others in a config file.
const FLAGS: [(&str, &str); 2] = [("lz4", "edge_lz4"), ("plain", "edge_plain-b4096")];
const CONFIG: [(&str, &str); 2] = [
    ("metabox", "edge_lz4hc-metabox"),
    ("blobdev", "edge_chunk4k-b512-blobdev"),
];

/// A config file for [`CONFIG`] in `dir`, with the image paths relative to
/// it (copied there) and the blob given as a device.
fn write_config(dir: &Path) -> PathBuf {
    let mut text = String::from("domain = \"tenant\"\n");
    for (name, fixture) in CONFIG {
        let fx = fixture_image(fixture);
        let local = format!("{fixture}.erofs");
        fs::copy(&fx.image, dir.join(&local)).expect("copy fixture");
        text.push_str(&format!(
            "\n[[image]]\nname = \"{name}\"\npath = \"{local}\"\n"
        ));
        if let Some(blob) = &fx.blob {
            text.push_str(&format!("devices = [\"{}\"]\n", blob.display()));
        }
    }
    let path = dir.join("share.toml");
    fs::write(&path, text).expect("write config");
    path
}

/// The arguments serving every image: `--image NAME=PATH` for [`FLAGS`],
/// `--config` for [`CONFIG`].
fn share_args(config: &Path) -> Vec<OsString> {
    let mut args = Vec::new();
    for (name, fixture) in FLAGS {
        let mut a = OsString::from(format!("{name}="));
        a.push(fixture_image(fixture).image.as_os_str());
        args.push("--image".into());
        args.push(a);
    }
    args.push("--config".into());
    args.push(config.as_os_str().to_owned());
    args.push("--domain".into());
    args.push("cli".into());
    args
}

fn all_images() -> Vec<(&'static str, FixtureImage)> {
    FLAGS
        .iter()
        .chain(CONFIG.iter())
        .map(|&(n, f)| (n, fixture_image(f)))
        .collect()
}

#[test]
fn test_named_images_through_a_local_mount() {
    common::assert_kernel_erofs();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = write_config(scratch.path());
    let mount = FuseMount::named(&share_args(&config));
    let root = mount.path();

    // The root: a read-only directory of the names, in the order given.
    let md = fs::metadata(root).expect("stat the root");
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o555);
    assert_eq!((md.ino(), md.nlink()), (1, 2 + 4));
    let listed: Vec<String> = fs::read_dir(root)
        .expect("list the root")
        .map(|d| d.expect("dirent").file_name().into_string().expect("UTF-8"))
        .collect();
    let names: Vec<&str> = all_images().iter().map(|(n, _)| *n).collect();
    assert_eq!(listed, names);
    assert!(
        fs::write(root.join("new"), b"x").is_err(),
        "the root is read-only"
    );
    assert_eq!(
        fs::metadata(root.join("absent"))
            .map_err(|e| e.raw_os_error())
            .err(),
        Some(Some(libc::ENOENT))
    );

    // Each /NAME is its image, as the kernel sees it.
    let mut inos: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (name, fx) in all_images() {
        let top = root.join(name);
        assert_manifests_eq(
            &format!(
                "/{name} of the share vs the kernel's manifest of {}",
                fx.name
            ),
            &load_expected(&fx.name),
            &walk_manifest(&top),
        );
        let set = inos.entry(name).or_default();
        collect_inos(&top, set);
    }
    // No inode number of one image is another's (tar and find would take
    // equal numbers for hard links).
    let all: Vec<(&str, &BTreeSet<u64>)> = inos.iter().map(|(n, s)| (*n, s)).collect();
    for (i, (a, sa)) in all.iter().enumerate() {
        for (b, sb) in &all[i + 1..] {
            let shared: Vec<_> = sa.intersection(sb).take(3).collect();
            assert!(shared.is_empty(), "/{a} and /{b} share st_ino {shared:?}");
        }
        let slots: BTreeSet<u64> = sa.iter().map(|i| i >> 48).collect();
        assert_eq!(slots.len(), 1, "/{a}: one slot for all its inodes");
    }
    let log = mount.stderr_text();
    assert!(log.is_empty(), "daemon stderr: {log}");
    mount.finish("named images");
}

/// Every `st_ino` under `dir`, `dir` included.
fn collect_inos(dir: &Path, out: &mut BTreeSet<u64>) {
    let md = fs::symlink_metadata(dir).expect("lstat");
    out.insert(md.ino());
    if md.is_dir() {
        for d in fs::read_dir(dir).expect("readdir") {
            collect_inos(&d.expect("dirent").path(), out);
        }
    }
}

#[test]
fn test_named_images_over_virtqueues() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = write_config(scratch.path());
    let args = share_args(&config);
    // `Daemon::start` gives the first `--image`; the rest follow.
    let first = PathBuf::from(&args[1]);
    let rest: Vec<&str> = args[2..]
        .iter()
        .map(|a| a.to_str().expect("UTF-8"))
        .collect();
    let d = Daemon::start(&first, &rest);
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &FrontendOptions::default()));
    c.init();
    let root = c.getattr(ROOT_ID).expect("GETATTR of the root");
    assert_eq!(root.mode, libc::S_IFDIR | 0o555);
    let listed: Vec<Vec<u8>> = c
        .list_dir(ROOT_ID)
        .expect("READDIRPLUS of the root")
        .into_iter()
        .map(|e| {
            assert_eq!(e.entry.entry_valid, 0, "a root entry may not be cached");
            e.name
        })
        .collect();
    let images = all_images();
    let want: Vec<Vec<u8>> = images.iter().map(|(n, _)| n.as_bytes().to_vec()).collect();
    assert_eq!(listed, want);
    assert_eq!(c.lookup(ROOT_ID, b"absent").map(drop), Err(libc::ENOENT));
    let mut slots = BTreeSet::new();
    for (name, fx) in images {
        let e = c
            .lookup(ROOT_ID, name.as_bytes())
            .expect("LOOKUP of a name");
        assert_eq!((e.entry_valid, e.entry_valid_nsec), (0, 0), "{name}");
        assert!(slots.insert(e.attr.ino >> 48), "{name}: a slot of its own");
        let walked = walk_from(&mut c, e.nodeid);
        assert_manifests_eq(
            &format!(
                "/{name} over the virtqueues vs the kernel's manifest of {}",
                fx.name
            ),
            &load_expected(&fx.name),
            &walked,
        );
    }
    c.forget_all();
    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
    assert!(
        log.contains("serving 4 images: lz4, plain, metabox, blobdev"),
        "daemon log:\n{log}"
    );
}

#[test]
fn test_single_image_is_the_root_as_before() {
    let fx = fixture_image("edge_lz4");
    let expected = load_expected("edge_lz4");
    // Positional, as always, and as an unnamed --image.
    let positional = FuseMount::new(&fx.image, &[], &[]);
    let flagged = FuseMount::named(&[OsString::from("--image"), fx.image.as_os_str().to_owned()]);
    for (what, m) in [("positional", &positional), ("--image", &flagged)] {
        assert_manifests_eq(what, &expected, &walk_manifest(m.path()));
        assert_ne!(fs::metadata(m.path()).expect("stat").ino(), 1, "{what}");
    }
    positional.finish("positional");
    flagged.finish("--image");
}

/// Runs `args`; returns (exit code, stderr).
fn run(args: &[OsString]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn test_bad_configs_and_names_are_one_clear_line() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path();
    let image = fixture_image("edge_lz4").image;
    let cfg = |text: &str| {
        let p = dir.join(format!("c{}.toml", text.len()));
        fs::write(&p, text).expect("write config");
        p
    };
    let img_line = format!("path = \"{}\"\n", image.display());
    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (vec!["--config".into(), cfg("[[image]\n").into()], "line 1"),
        (
            vec![
                "--config".into(),
                cfg(&format!(
                    "[[image]]\nname = \"a\"\n{img_line}colour = \"red\"\n"
                ))
                .into(),
            ],
            "colour",
        ),
        (
            vec![
                "--config".into(),
                cfg(&format!(
                    "[[image]]\nname = \"a\"\n{img_line}[[image]]\nname = \"a\"\n{img_line}"
                ))
                .into(),
            ],
            "given twice",
        ),
        (
            vec![
                "--config".into(),
                cfg(&format!("[[image]]\nname = \"a/b\"\n{img_line}")).into(),
            ],
            "contains '/'",
        ),
        (
            vec!["--config".into(), dir.join("missing.toml").into()],
            "missing.toml",
        ),
        (vec!["--image".into(), "..=/x.erofs".into()], "reserved"),
        (
            vec![
                "--image".into(),
                format!("a={}", image.display()).into(),
                "--image".into(),
                format!("a={}", image.display()).into(),
            ],
            "given twice",
        ),
        (
            vec![
                "--image".into(),
                format!("a={}", image.display()).into(),
                "--domain".into(),
                "".into(),
            ],
            "--domain",
        ),
        (
            vec!["--image".into(), "a=/nonexistent.erofs".into()],
            "image a",
        ),
    ];
    let mnt = tempfile::tempdir().expect("mount point");
    let sock = dir.join("never.sock");
    for (args, want) in &cases {
        for mode in ["mount", "serve"] {
            let mut all: Vec<OsString> = Vec::new();
            if mode == "mount" {
                all.extend(["mount".into(), mnt.path().into(), "--foreground".into()]);
            } else {
                all.extend(["--socket-path".into(), sock.clone().into()]);
            }
            all.extend(args.iter().cloned());
            let (code, err) = run(&all);
            assert_eq!(code, Some(1), "{mode} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{mode} {args:?}: one line: {err}");
            assert!(
                err.starts_with("erofs-virtiofsd: error:"),
                "{mode} {args:?}: {err}"
            );
            assert!(err.contains(want), "{mode} {args:?}: no {want:?} in {err}");
            assert!(!is_mounted(mnt.path()), "{mode} {args:?}: mounted anyway");
            assert!(!sock.exists(), "{mode} {args:?}: listening anyway");
        }
    }
}

/// An image removed from a live /dev/fuse mount (the library's share API;
/// the daemon's API socket will call the same): the kernel takes the
/// entry invalidation, the name is gone from the root at once, a file
/// opened before keeps reading the image, and a lookup under a directory
/// of the removed image held open gets ESTALE.
#[test]
fn test_image_removed_from_a_live_mount() {
    use erofs_virtiofsd::erofs::{Image, ImageOptions};
    use erofs_virtiofsd::fuse::devfuse::{self, MountConfig};
    use erofs_virtiofsd::fuse::{ImageMeta, Share, ShareOptions};
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::Arc;

    common::assert_kernel_erofs();
    let open = |fixture: &str| {
        let src = erofs_virtiofsd::source::open_path(&fixture_image(fixture).image, 0)
            .expect("open fixture");
        Arc::new(Image::open(src, ImageOptions::default()).expect("Image::open"))
    };
    let share = Arc::new(Share::named(ShareOptions::default()));
    for (name, fixture) in FLAGS {
        share
            .add_image(name, open(fixture), ImageMeta::default())
            .expect("add image");
    }
    let dir = tempfile::tempdir().expect("mount point");
    let mountpoint = devfuse::preflight(dir.path()).expect("preflight");
    let mount = devfuse::mount(&MountConfig {
        mountpoint: mountpoint.clone(),
        fsname: "erofs-test".into(),
        subtype: "erofs-test".into(),
        max_read: 1 << 20,
        readahead_kb: None,
    })
    .expect("mount");
    let served = Arc::clone(&share);
    let server = std::thread::spawn(move || {
        let mut mount = mount;
        mount.serve(&served, 2, Vec::new())
    });

    // A file and a directory of `lz4`, opened while it is served.
    let (name, fixture) = FLAGS[0];
    let kernel = common::KernelMount::mount(
        &fixture_image(fixture).image,
        &common::kmount::MountOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut files = Vec::new();
    common::rangeread::list_files(kernel.path(), b"", &mut files);
    let (rel, size) = files
        .iter()
        .find(|(_, size)| *size > 8192)
        .expect("a file of more than 8 KiB")
        .clone();
    let rel = std::ffi::OsStr::from_bytes(&rel[1..]);
    let want = fs::read(kernel.path().join(rel)).expect("kernel read");
    let mut file = fs::File::open(mountpoint.join(name).join(rel)).expect("open through FUSE");
    let mut head = vec![0u8; 4096];
    file.read_exact(&mut head).expect("read the head");
    assert_eq!(head, want[..4096]);
    let held_dir = fs::File::open(mountpoint.join(name)).expect("open the image's root");

    let removed = share.remove_image(name).expect("remove");
    assert_eq!(removed.told, 1, "the kernel took the invalidation");
    let err = fs::metadata(mountpoint.join(name)).expect_err("the name is gone");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let listed: Vec<_> = fs::read_dir(&mountpoint)
        .expect("list the root")
        .map(|d| d.expect("dirent").file_name())
        .collect();
    assert_eq!(listed, [FLAGS[1].0]);
    // What was open keeps reading.
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)
        .expect("read the rest after removal");
    assert_eq!(4096 + rest.len() as u64, size);
    assert_eq!(rest, want[4096..]);
    // A name never looked up under the held directory: ESTALE.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&held_dir);
    let err = fs::metadata(format!("/proc/self/fd/{fd}/never-looked-up"))
        .expect_err("a lookup in a removed image");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    drop((file, held_dir));
    devfuse::unmount(&mountpoint).expect("unmount");
    server
        .join()
        .expect("serving thread")
        .expect("served until unmounted");
    assert_eq!(share.images().len(), 1);
}
