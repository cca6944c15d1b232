//! Not tests: the two steps of `scripts/fixtures.sh` that need the test
//! harness (see `docs/fixtures.md`). Both are ignored; the script runs them:
//!
//! - `build_fixture_trees`: writes the `edge` and `big` trees into
//!   `$FIXTURE_TREES/edge` and `$FIXTURE_TREES/big` (see
//!   `common::fixture_trees`). Needs root (devices, owners, trusted.*).
//! - `derive_fixture_manifests`: mounts every image of the fixtures
//!   directory (`$EROFS_FIXTURES`, else `tests/fixtures`) with the kernel,
//!   walks it, and writes `manifests/TREE.jsonl` from each tree's reference
//!   image (`"ref": true` in `build.jsonl`) and `manifests/NAME.delta.jsonl`
//!   for every other image that the kernel shows differently (removing
//!   stale deltas). With `$FIXTURE_TREES` it first checks that each
//!   reference manifest equals its source tree but for directory sizes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use common::fixture_trees::{build_fixture_big_tree, build_fixture_edge_tree};
use common::fixtures::{all_fixture_images, apply_delta, build_records, fixtures_dir, tree_of};
use common::kmount::MountOptions;
use common::manifest::{diff_manifests, hex, to_jsonl, Entry};
use common::{assert_kernel_erofs, walk_manifest, KernelMount};

/// The directory the trees go to (or come from).
const TREES_ENV: &str = "FIXTURE_TREES";

fn trees_dir() -> Option<PathBuf> {
    std::env::var_os(TREES_ENV).map(PathBuf::from)
}

#[test]
#[ignore = "run by scripts/fixtures.sh"]
fn build_fixture_trees() {
    let out = trees_dir().unwrap_or_else(|| panic!("set {TREES_ENV} to an empty directory"));
    type Build = fn(&Path);
    let trees: [(&str, Build); 2] = [
        ("edge", build_fixture_edge_tree),
        ("big", build_fixture_big_tree),
    ];
    for (name, build) in trees {
        let root = out.join(name);
        fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        build(&root);
    }
}

#[test]
#[ignore = "run by scripts/fixtures.sh --regen-manifests"]
fn derive_fixture_manifests() {
    assert_kernel_erofs();
    let dir = fixtures_dir().join("manifests");
    let records = build_records();
    let mut views: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for fx in all_fixture_images() {
        let mount = KernelMount::mount(&fx.image, &MountOptions::with_devices(&fx.devices()))
            .unwrap_or_else(|e| panic!("{e}"));
        views.insert(fx.name.clone(), walk_manifest(mount.path()));
    }

    let mut refs: BTreeMap<String, String> = BTreeMap::new();
    for (name, record) in &records {
        if record["ref"].as_bool() == Some(true) {
            let tree = tree_of(name);
            if let Some(other) = refs.insert(tree.clone(), name.clone()) {
                panic!("tree {tree} has two reference images: {other} and {name}");
            }
        }
    }
    for (tree, name) in &refs {
        let view = views
            .get(name)
            .unwrap_or_else(|| panic!("reference image {name} was not built"));
        if let Some(trees) = trees_dir() {
            check_against_source(&trees.join(tree), name, view);
        }
        write(&dir.join(format!("{tree}.jsonl")), &to_jsonl(view));
    }

    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display())) {
        let path = entry.expect("reading the manifests directory").path();
        if path.to_string_lossy().ends_with(".delta.jsonl") {
            fs::remove_file(&path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
        }
    }
    for (name, view) in &views {
        let tree = tree_of(name);
        let base = views
            .get(
                refs.get(&tree)
                    .unwrap_or_else(|| panic!("tree {tree} has no reference image")),
            )
            .expect("reference views are present");
        let delta = delta_lines(base, view);
        let applied = apply_delta(base.clone(), &delta, &format!("{name} delta"));
        if let Some(report) = diff_manifests(view, &applied) {
            panic!("{name}: the delta does not rebuild the kernel's view:\n{report}");
        }
        if !delta.is_empty() {
            write(&dir.join(format!("{name}.delta.jsonl")), &delta);
        }
    }
}

/// The build time of every fixture image (`-T 1700000000 --mkfs-time`).
const BUILD_TIME: i64 = 1_700_000_000;

/// Panics unless the kernel's view of a reference image equals its source
/// tree, but for what mkfs.erofs 1.9 changes on purpose (see
/// [`expected_from_source`]).
fn check_against_source(source: &Path, image: &str, view: &[Entry]) {
    let tree = expected_from_source(&walk_manifest(source));
    let view: Vec<Entry> = view.iter().cloned().map(without_dir_size).collect();
    if let Some(report) = diff_manifests(&tree, &view) {
        panic!(
            "the kernel's view of {image} differs from its source tree {}:\n{report}",
            source.display()
        );
    }
}

fn without_dir_size(mut e: Entry) -> Entry {
    if e.kind() == "dir" {
        e.fields.remove("size");
    }
    e
}

/// The source tree's manifest as mkfs.erofs 1.9 stores it: directory sizes
/// are EROFS's own (left out); a directory that holds a whiteout (a 0/0
/// character device) gets an empty `trusted.overlay.origin`; an inode whose
/// mtime equals the build time becomes compact and so loses its nanoseconds.
fn expected_from_source(tree: &[Entry]) -> Vec<Entry> {
    let mut whiteout_dirs: Vec<Vec<u8>> = tree
        .iter()
        .filter(|e| {
            e.kind() == "chr"
                && e.get("rdev_major") == Some(&Value::from(0))
                && e.get("rdev_minor") == Some(&Value::from(0))
        })
        .map(|e| {
            let cut = e.raw_path.iter().rposition(|&b| b == b'/').unwrap_or(0);
            if cut == 0 {
                b"/".to_vec()
            } else {
                e.raw_path[..cut].to_vec()
            }
        })
        .collect();
    whiteout_dirs.sort();
    tree.iter()
        .cloned()
        .map(|mut e| {
            if e.kind() == "dir" && whiteout_dirs.binary_search(&e.raw_path).is_ok() {
                if let Some(Value::Object(x)) = e.fields.get_mut("xattrs") {
                    x.entry("trusted.overlay.origin")
                        .or_insert_with(|| "".into());
                }
            }
            if e.get("mtime") == Some(&Value::from(BUILD_TIME)) {
                e.fields.insert("mtime_nsec".into(), 0.into());
            }
            without_dir_size(e)
        })
        .collect()
}

/// The delta lines that turn `base` into `view` (the format of
/// `docs/fixtures.md`), sorted by raw path.
fn delta_lines(base: &[Entry], view: &[Entry]) -> String {
    let old: BTreeMap<&[u8], &Entry> = base.iter().map(|e| (&e.raw_path[..], e)).collect();
    let new: BTreeMap<&[u8], &Entry> = view.iter().map(|e| (&e.raw_path[..], e)).collect();
    let mut paths: Vec<&[u8]> = old.keys().chain(new.keys()).copied().collect();
    paths.sort();
    paths.dedup();
    let mut out = String::new();
    for path in paths {
        let mut line = Map::new();
        let (a, b) = (old.get(path), new.get(path));
        let shown = a.or(b).expect("path comes from one side");
        line.insert("path".into(), shown.fields["path"].clone());
        if std::str::from_utf8(path).is_err() {
            line.insert("path_hex".into(), hex(path).into());
        }
        match (a, b) {
            (Some(_), None) => {
                line.insert("removed".into(), true.into());
            }
            (None, Some(b)) => {
                line.insert("added".into(), b.to_json());
            }
            (Some(a), Some(b)) => {
                let set: Map<String, Value> = b
                    .fields
                    .iter()
                    .filter(|(k, v)| a.fields.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let unset: Vec<Value> = a
                    .fields
                    .keys()
                    .filter(|k| !b.fields.contains_key(*k))
                    .map(|k| Value::from(k.as_str()))
                    .collect();
                if set.is_empty() && unset.is_empty() {
                    continue;
                }
                if !set.is_empty() {
                    line.insert("set".into(), Value::Object(set));
                }
                if !unset.is_empty() {
                    line.insert("unset".into(), Value::Array(unset));
                }
            }
            (None, None) => unreachable!("path comes from one side"),
        }
        out.push_str(&Value::Object(line).to_string());
        out.push('\n');
    }
    out
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("wrote {} ({} bytes)", path.display(), text.len());
}
