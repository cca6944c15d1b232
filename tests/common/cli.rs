//! Running our own binary.

use std::path::Path;
use std::process::Command;

use super::manifest::{parse_jsonl, Entry};

/// Path of the `erofs-virtiofsd` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_erofs-virtiofsd");

/// Runs `erofs-virtiofsd image manifest IMAGE [--device DEV]... [--offset N]`
/// and parses its output: one JSON object per line, the fixture manifest
/// format. Entries are returned in the order printed (the format requires
/// raw-path order; [`super::manifest::assert_manifests_eq`] checks it).
/// Panics with the command's stderr if it fails.
#[track_caller]
pub fn run_manifest(image: &Path, devices: &[&Path], offset: Option<u64>) -> Vec<Entry> {
    let off = offset.map(|o| o.to_string());
    let mut extra = Vec::new();
    if let Some(o) = &off {
        extra.extend(["--offset", o.as_str()]);
    }
    run_manifest_args(image, devices, &extra)
}

/// [`run_manifest`] with more options (e.g. `--direct-io`).
#[track_caller]
pub fn run_manifest_args(image: &Path, devices: &[&Path], extra: &[&str]) -> Vec<Entry> {
    let mut cmd = Command::new(BIN);
    cmd.args(["image", "manifest"]).arg(image);
    for d in devices {
        cmd.arg("--device").arg(d);
    }
    cmd.args(extra);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout)
        .unwrap_or_else(|e| panic!("{cmd:?} printed invalid UTF-8: {e}"));
    parse_jsonl(&text, &format!("output of {cmd:?}"))
}
