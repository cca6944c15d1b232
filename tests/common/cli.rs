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
    let mut cmd = Command::new(BIN);
    cmd.args(["image", "manifest"]).arg(image);
    for d in devices {
        cmd.arg("--device").arg(d);
    }
    if let Some(off) = offset {
        cmd.arg("--offset").arg(off.to_string());
    }
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
