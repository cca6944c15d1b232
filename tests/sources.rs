//! Image sources: an image on a block device (a loop device over a fixture
//! image, extra blob devices included) reads exactly like the file, through
//! `image manifest` and through a FUSE mount, and equals the fixture's
//! kernel manifest. The device's size comes from the device, not from its
//! (empty) inode metadata.

mod common;

use std::path::{Path, PathBuf};

use common::fusemount::FuseMount;
use common::kmount::{detach_loops, losetup};
use common::{
    assert_kernel_erofs, assert_manifests_eq, fixture_image, load_expected, run_manifest,
};
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
    let via_cli: Vec<Entry> = run_manifest(image, &devices, None);
    assert_manifests_eq(
        &format!("{name} on {}: `image manifest`", image.display()),
        &expected,
        &via_cli,
    );
    let mount = FuseMount::new(image, &devices, &[]);
    let via_fuse = walk_manifest(mount.path());
    assert_manifests_eq(
        &format!("{name} on {}: FUSE mount", image.display()),
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
