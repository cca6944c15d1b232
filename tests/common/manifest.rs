//! Manifest entries: one JSON object per file, as defined by
//! `docs/fixtures.md`, built from a mounted tree by
//! [`walk_manifest`] and compared by [`assert_manifests_eq`].

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One manifest line: the raw path (the sort key) and every field of the JSON
/// object, `path` and `path_hex` included.
///
/// Fields are kept as JSON values so that fixture deltas (`set`/`unset`) apply
/// directly and comparison is generic over whatever fields are present.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The raw path bytes: `/` for the root, else `/a/b`.
    pub raw_path: Vec<u8>,
    /// The JSON object (all fields, including `path`/`path_hex`).
    pub fields: Map<String, Value>,
}

impl Entry {
    /// Builds an entry from a parsed manifest line; the raw path comes from
    /// `path_hex` when present, else from the UTF-8 bytes of `path`.
    pub fn from_json(value: Value) -> Result<Entry, String> {
        let Value::Object(fields) = value else {
            return Err(format!("manifest line is not a JSON object: {value}"));
        };
        let raw_path = raw_path_of(&fields)?;
        Ok(Entry { raw_path, fields })
    }

    /// Parses one JSON line.
    pub fn from_line(line: &str) -> Result<Entry, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("invalid JSON ({e}): {line}"))?;
        Entry::from_json(value)
    }

    /// The entry as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    /// One field.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// The `type` field (`reg`, `dir`, ...), or `""`.
    pub fn kind(&self) -> &str {
        self.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The path as written in the manifest (`\xNN` for bytes that are not
    /// UTF-8), for messages.
    pub fn display_path(&self) -> String {
        escape_bytes(&self.raw_path)
    }
}

/// Reads the raw path of a manifest object (`path_hex` wins over `path`).
pub fn raw_path_of(fields: &Map<String, Value>) -> Result<Vec<u8>, String> {
    if let Some(hex) = fields.get("path_hex") {
        let hex = hex
            .as_str()
            .ok_or_else(|| format!("path_hex is not a string: {hex}"))?;
        return hex_decode(hex);
    }
    match fields.get("path") {
        Some(Value::String(p)) => Ok(p.as_bytes().to_vec()),
        other => Err(format!("entry without a string path: {other:?}")),
    }
}

/// Parses JSON-lines text (empty lines ignored) into entries, keeping order.
/// `origin` names the source in error messages.
pub fn parse_jsonl(text: &str, origin: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            Entry::from_line(line).unwrap_or_else(|e| panic!("{origin}:{}: {e}", n + 1))
        })
        .collect()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").expect("writing to a String cannot fail");
    }
    s
}

/// Decodes hex (either case).
pub fn hex_decode(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd-length hex string: {text:?}"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|e| format!("invalid hex {text:?} at {i}: {e}"))
        })
        .collect()
}

/// Decodes `bytes` as UTF-8, writing every byte that is not part of a valid
/// sequence as `\xNN`, like Python's `bytes.decode(errors="backslashreplace")`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}").expect("writing to a String cannot fail");
        }
    }
    out
}

/// Linux `major()` of a `dev_t` (glibc's encoding, as `st_rdev` uses).
pub fn dev_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

/// Linux `minor()` of a `dev_t`.
pub fn dev_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

/// Linux `makedev()`.
pub fn make_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

/// Walks the tree mounted at `root` with lstat/readdir/readlink/llistxattr/
/// lgetxattr (never following symlinks) and returns its manifest, sorted by
/// raw path bytes.
///
/// Paths are used whole, so `root` plus the deepest path must stay below
/// `PATH_MAX` (4096); the fixtures' deepest path is 3415 bytes.
pub fn walk_manifest(root: &Path) -> Vec<Entry> {
    walk_manifest_skipping(root, &[])
}

/// [`walk_manifest`], leaving out the raw paths in `skip` (listed in their
/// directory but never stat'ed or read: damaged files of a corrupt image).
pub fn walk_manifest_skipping(root: &Path, skip: &[&[u8]]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((fs_path, raw_path)) = stack.pop() {
        let meta = fs::symlink_metadata(&fs_path)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", fs_path.display()));
        if meta.is_dir() {
            let rd = fs::read_dir(&fs_path)
                .unwrap_or_else(|e| panic!("readdir {}: {e}", fs_path.display()));
            for dirent in rd {
                let dirent =
                    dirent.unwrap_or_else(|e| panic!("readdir {}: {e}", fs_path.display()));
                let name = dirent.file_name();
                let mut child = raw_path.clone();
                if child != b"/" {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                if skip.contains(&child.as_slice()) {
                    continue;
                }
                stack.push((fs_path.join(&name), child));
            }
        }
        out.push(entry_from_fs(&fs_path, raw_path, &meta));
    }
    out.sort_by(|a, b| a.raw_path.cmp(&b.raw_path));
    out
}

/// Builds the manifest entry of one file from its `lstat` result.
fn entry_from_fs(fs_path: &Path, raw_path: Vec<u8>, meta: &fs::Metadata) -> Entry {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
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
    } else if ft.is_socket() {
        "sock"
    } else {
        panic!(
            "{}: unknown file type, mode {:o}",
            fs_path.display(),
            meta.mode()
        )
    };

    let mut f = Map::new();
    f.insert("path".into(), escape_bytes(&raw_path).into());
    if std::str::from_utf8(&raw_path).is_err() {
        f.insert("path_hex".into(), hex(&raw_path).into());
    }
    f.insert("type".into(), kind.into());
    f.insert("mode".into(), meta.mode().into());
    f.insert("uid".into(), meta.uid().into());
    f.insert("gid".into(), meta.gid().into());
    f.insert("nlink".into(), meta.nlink().into());
    f.insert("size".into(), meta.size().into());
    f.insert("mtime".into(), meta.mtime().into());
    f.insert("mtime_nsec".into(), meta.mtime_nsec().into());
    match kind {
        "chr" | "blk" => {
            f.insert("rdev_major".into(), dev_major(meta.rdev()).into());
            f.insert("rdev_minor".into(), dev_minor(meta.rdev()).into());
        }
        "reg" => {
            f.insert("sha256".into(), sha256_file(fs_path).into());
        }
        "lnk" => {
            let target = fs::read_link(fs_path)
                .unwrap_or_else(|e| panic!("readlink {}: {e}", fs_path.display()));
            let target = target.as_os_str().as_bytes();
            f.insert("target".into(), escape_bytes(target).into());
            if std::str::from_utf8(target).is_err() {
                f.insert("target_hex".into(), hex(target).into());
            }
        }
        _ => {}
    }
    f.insert("xattrs".into(), Value::Object(read_xattrs(fs_path)));
    Entry {
        raw_path,
        fields: f,
    }
}

/// Hex SHA-256 of a regular file's content.
pub fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

/// All xattrs `llistxattr` returns, as {name: hex value}.
fn read_xattrs(path: &Path) -> Map<String, Value> {
    let names = xattr::list(path).unwrap_or_else(|e| panic!("llistxattr {}: {e}", path.display()));
    let mut map = Map::new();
    for name in names {
        let value = xattr::get(path, &name)
            .unwrap_or_else(|e| panic!("lgetxattr {} {:?}: {e}", path.display(), name))
            .unwrap_or_else(|| {
                panic!(
                    "{}: listxattr returned {:?} but getxattr says it does not exist",
                    path.display(),
                    name
                )
            });
        map.insert(escape_bytes(OsStr::as_bytes(&name)), hex(&value).into());
    }
    map
}

/// Renders entries as JSON lines (for dumping a manifest to a file).
pub fn to_jsonl(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str(&e.to_json().to_string());
        s.push('\n');
    }
    s
}

/// How many differing paths [`diff_manifests`] details.
pub const MAX_REPORTED_PATHS: usize = 20;

/// Compares two manifests entry by entry and field by field. Returns `None`
/// when equal, else a readable report of the first [`MAX_REPORTED_PATHS`]
/// differing paths (missing, unexpected, or which fields differ), plus counts.
/// Both sides must be sorted by raw path without duplicates.
pub fn diff_manifests(expected: &[Entry], actual: &[Entry]) -> Option<String> {
    let mut problems: Vec<String> = Vec::new();
    for (side, list) in [("expected", expected), ("actual", actual)] {
        if let Some(w) = list.windows(2).find(|w| w[0].raw_path >= w[1].raw_path) {
            problems.push(format!(
                "{side} manifest is not sorted by raw path bytes (or has duplicates): {:?} then {:?}",
                w[0].display_path(),
                w[1].display_path()
            ));
        }
    }

    let exp: BTreeMap<&[u8], &Entry> = expected.iter().map(|e| (&e.raw_path[..], e)).collect();
    let act: BTreeMap<&[u8], &Entry> = actual.iter().map(|e| (&e.raw_path[..], e)).collect();
    let mut paths: Vec<&[u8]> = exp.keys().chain(act.keys()).copied().collect();
    paths.sort();
    paths.dedup();

    let (mut missing, mut extra, mut differing) = (0usize, 0usize, 0usize);
    let mut details: Vec<String> = Vec::new();
    for path in paths {
        let shown = escape_bytes(path);
        match (exp.get(path), act.get(path)) {
            (Some(_), None) => {
                missing += 1;
                if details.len() < MAX_REPORTED_PATHS {
                    details.push(format!("{shown:?}: missing from actual"));
                }
            }
            (None, Some(a)) => {
                extra += 1;
                if details.len() < MAX_REPORTED_PATHS {
                    details.push(format!(
                        "{shown:?}: unexpected in actual ({})",
                        abbreviate(&a.to_json())
                    ));
                }
            }
            (Some(e), Some(a)) => {
                let fields = diff_fields(&e.fields, &a.fields);
                if !fields.is_empty() {
                    differing += 1;
                    if details.len() < MAX_REPORTED_PATHS {
                        details.push(format!("{shown:?} [{}]:\n{}", e.kind(), fields.join("\n")));
                    }
                }
            }
            (None, None) => unreachable!("path comes from one of the maps"),
        }
    }
    if missing + extra + differing == 0 && problems.is_empty() {
        return None;
    }
    let mut report = format!(
        "{} expected entries, {} actual: {missing} missing, {extra} unexpected, \
         {differing} differing",
        expected.len(),
        actual.len()
    );
    for p in problems {
        report.push_str("\n  ");
        report.push_str(&p);
    }
    let total = missing + extra + differing;
    if total > details.len() {
        write!(
            report,
            "\nfirst {} of {total} differing paths:",
            details.len()
        )
        .expect("writing to a String cannot fail");
    }
    for d in details {
        report.push_str("\n  ");
        report.push_str(&d);
    }
    Some(report)
}

/// Field-level differences of one entry, one line each (xattrs per name).
fn diff_fields(expected: &Map<String, Value>, actual: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<&String> = expected.keys().chain(actual.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        match (expected.get(key), actual.get(key)) {
            (Some(e), Some(a)) if e == a => {}
            (Some(Value::Object(e)), Some(Value::Object(a))) if key == "xattrs" => {
                let mut names: Vec<&String> = e.keys().chain(a.keys()).collect();
                names.sort();
                names.dedup();
                for name in names {
                    match (e.get(name), a.get(name)) {
                        (Some(x), Some(y)) if x == y => {}
                        (x, y) => out.push(format!(
                            "      xattr {name:?}: expected {}, actual {}",
                            shown(x),
                            shown(y)
                        )),
                    }
                }
            }
            (e, a) => out.push(format!(
                "      {key}: expected {}, actual {}",
                shown(e),
                shown(a)
            )),
        }
    }
    out
}

/// A value for a diff line: `(absent)` or abbreviated JSON.
fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), abbreviate)
}

/// JSON text, cut in the middle when long (hex values of big xattrs).
fn abbreviate(v: &Value) -> String {
    const MAX: usize = 120;
    let s = v.to_string();
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= MAX {
        return s;
    }
    let head: String = chars[..MAX / 2].iter().collect();
    let tail: String = chars[chars.len() - 20..].iter().collect();
    format!("{head}…{tail} ({} chars)", chars.len())
}

/// Panics with a readable report when the manifests differ. `what` says what
/// was compared with what, e.g. `"kernel mount of X vs fixture manifest"`.
#[track_caller]
/// The entries at and under `/top` of `entries`, with paths taken from
/// there (`/top` becomes `/`, `/top/x` becomes `/x`): the manifest of an
/// image served as the top-level directory `top` of a share.
pub fn subtree(entries: &[Entry], top: &[u8]) -> Vec<Entry> {
    let mut prefix = b"/".to_vec();
    prefix.extend_from_slice(top);
    let mut out: Vec<Entry> = entries
        .iter()
        .filter_map(|e| {
            let rest = e.raw_path.strip_prefix(prefix.as_slice())?;
            let raw = match rest {
                [] => b"/".to_vec(),
                [b'/', ..] => rest.to_vec(),
                _ => return None,
            };
            let mut fields = e.fields.clone();
            fields.insert("path".into(), escape_bytes(&raw).into());
            if fields.contains_key("path_hex") {
                fields.insert("path_hex".into(), hex(&raw).into());
            }
            Some(Entry {
                raw_path: raw,
                fields,
            })
        })
        .collect();
    out.sort_by(|a, b| a.raw_path.cmp(&b.raw_path));
    out
}

pub fn assert_manifests_eq(what: &str, expected: &[Entry], actual: &[Entry]) {
    if let Some(report) = diff_manifests(expected, actual) {
        panic!("manifest mismatch: {what}\n{report}");
    }
}
