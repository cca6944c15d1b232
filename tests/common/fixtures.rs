//! The fixture images (`docs/fixtures.md`): images made by upstream
//! mkfs.erofs 1.9 and the kernel's manifest of each. Where they are:
//! [`fixtures_dir`] (`$EROFS_FIXTURES`, else `tests/fixtures`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::manifest::{escape_bytes, parse_jsonl, raw_path_of, Entry};

pub use super::fixture_dir::{fixtures_dir, FIXTURES_ENV, FIXTURES_SCRIPT};

/// A fixture image and its extra device, if it has one.
#[derive(Clone, Debug)]
pub struct FixtureImage {
    /// Image name (file stem), e.g. `edge_plain-b4096`.
    pub name: String,
    /// `images/NAME.erofs`.
    pub image: PathBuf,
    /// `images/NAME.blob` when present (the `--blobdev` device).
    pub blob: Option<PathBuf>,
}

impl FixtureImage {
    /// The extra devices to pass when mounting/reading (the blob, if any).
    pub fn devices(&self) -> Vec<&Path> {
        self.blob.iter().map(PathBuf::as_path).collect()
    }
}

/// One fixture image by name; panics if `images/NAME.erofs` is missing.
pub fn fixture_image(name: &str) -> FixtureImage {
    let images = fixtures_dir().join("images");
    let image = images.join(format!("{name}.erofs"));
    assert!(
        image.is_file(),
        "fixture image {} does not exist",
        image.display()
    );
    let blob = images.join(format!("{name}.blob"));
    FixtureImage {
        name: name.to_string(),
        image,
        blob: blob.is_file().then_some(blob),
    }
}

/// Every `images/*.erofs`, sorted by name.
pub fn all_fixture_images() -> Vec<FixtureImage> {
    let images = fixtures_dir().join("images");
    let mut names: Vec<String> = fs::read_dir(&images)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", images.display()))
        .map(|d| d.expect("reading the fixture images directory").path())
        .filter(|p| p.extension().is_some_and(|x| x == "erofs"))
        .map(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_else(|| panic!("fixture image name is not UTF-8: {}", p.display()))
                .to_string()
        })
        .collect();
    names.sort();
    names.iter().map(|n| fixture_image(n)).collect()
}

/// The `build.jsonl` records by image name.
pub fn build_records() -> BTreeMap<String, Value> {
    let path = fixtures_dir().join("build.jsonl");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: invalid JSON ({e}): {l}", path.display()));
            let name = v["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: record without a name: {l}", path.display()))
                .to_string();
            (name, v)
        })
        .collect()
}

/// The source tree of a fixture image (`edge`, `big`, `usr`): the `tree` field
/// of its `build.jsonl` record, else the name up to the first `_`.
pub fn tree_of(image_name: &str) -> String {
    if let Some(tree) = build_records()
        .get(image_name)
        .and_then(|r| r["tree"].as_str())
    {
        return tree.to_string();
    }
    image_name
        .split_once('_')
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("cannot tell the tree of fixture image {image_name:?}"))
}

/// Whether a fixture is compressed (its mkfs arguments contain `-z...`).
pub fn is_compressed(image_name: &str) -> bool {
    let records = build_records();
    let record = records
        .get(image_name)
        .unwrap_or_else(|| panic!("no build.jsonl record for {image_name:?}"));
    record["argv"]
        .as_array()
        .unwrap_or_else(|| panic!("build.jsonl record of {image_name:?} has no argv"))
        .iter()
        .filter_map(Value::as_str)
        .any(|a| a.starts_with("-z"))
}

/// The manifest of a tree, `manifests/TREE.jsonl`.
pub fn load_tree_manifest(tree: &str) -> Vec<Entry> {
    let path = fixtures_dir()
        .join("manifests")
        .join(format!("{tree}.jsonl"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_jsonl(&text, &path.display().to_string())
}

/// What the kernel shows for fixture image `image_name`: its tree's manifest
/// with `manifests/NAME.delta.jsonl` applied (if present), sorted by raw path.
pub fn load_expected(image_name: &str) -> Vec<Entry> {
    let tree = tree_of(image_name);
    let entries = load_tree_manifest(&tree);
    let delta = fixtures_dir()
        .join("manifests")
        .join(format!("{image_name}.delta.jsonl"));
    if !delta.exists() {
        return entries;
    }
    let text =
        fs::read_to_string(&delta).unwrap_or_else(|e| panic!("read {}: {e}", delta.display()));
    apply_delta(entries, &text, &delta.display().to_string())
}

/// Applies delta lines: `{"path", ["path_hex"], "set": {field: value},
/// ["unset": [field]]}` replaces/removes fields, `{"path", "removed": true}`
/// drops the entry, `{"path", "added": ENTRY}` inserts one.
pub fn apply_delta(entries: Vec<Entry>, delta_text: &str, origin: &str) -> Vec<Entry> {
    let mut by_path: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    for e in entries {
        let shown = e.display_path();
        if by_path.insert(e.raw_path.clone(), e).is_some() {
            panic!("{origin}: base manifest has {shown:?} twice");
        }
    }
    for (n, line) in delta_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{origin}:{}", n + 1);
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: invalid JSON ({e})"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{at}: delta line is not an object"));
        let raw = raw_path_of(obj).unwrap_or_else(|e| panic!("{at}: {e}"));
        if let Some(added) = obj.get("added") {
            let entry =
                Entry::from_json(added.clone()).unwrap_or_else(|e| panic!("{at}: added: {e}"));
            assert_eq!(entry.raw_path, raw, "{at}: added entry has another path");
            assert!(
                by_path.insert(raw, entry).is_none(),
                "{at}: added entry already exists"
            );
            continue;
        }
        if obj.get("removed").and_then(Value::as_bool) == Some(true) {
            assert!(
                by_path.remove(&raw).is_some(),
                "{at}: removed entry {:?} does not exist",
                escape_bytes(&raw)
            );
            continue;
        }
        let entry = by_path.get_mut(&raw).unwrap_or_else(|| {
            panic!(
                "{at}: delta for {:?}, which the tree does not have",
                escape_bytes(&raw)
            )
        });
        let mut touched = false;
        if let Some(set) = obj.get("set") {
            let set = set
                .as_object()
                .unwrap_or_else(|| panic!("{at}: \"set\" is not an object"));
            for (k, val) in set {
                entry.fields.insert(k.clone(), val.clone());
            }
            touched = true;
        }
        if let Some(unset) = obj.get("unset") {
            let unset = unset
                .as_array()
                .unwrap_or_else(|| panic!("{at}: \"unset\" is not an array"));
            for k in unset {
                let k = k
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: \"unset\" holds a non-string"));
                entry.fields.remove(k);
            }
            touched = true;
        }
        assert!(
            touched,
            "{at}: delta line has none of set/unset/removed/added"
        );
    }
    by_path.into_values().collect()
}
