//! Where the fixture images are: the one resolver for every test and bench
//! (standalone, so that test crates without `common` can include it with
//! `#[path]`).
//!
//! `$EROFS_FIXTURES` if set (any directory with the layout of
//! `tests/fixtures`: `images/`, `manifests/`, `build.jsonl`), else the
//! repository's own `tests/fixtures`, whose images `scripts/fixtures.sh`
//! builds (see `docs/fixtures.md`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Environment variable that overrides the fixtures directory.
pub const FIXTURES_ENV: &str = "EROFS_FIXTURES";

/// The script that builds the repository's fixture images.
pub const FIXTURES_SCRIPT: &str = "scripts/fixtures.sh";

/// The fixtures directory (see the module docs). Panics, naming the script
/// to run, when its images are missing.
pub fn fixtures_dir() -> PathBuf {
    let (dir, how) = match std::env::var_os(FIXTURES_ENV) {
        Some(d) => (PathBuf::from(d), format!("${FIXTURES_ENV}")),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
            "the repository's fixtures".to_string(),
        ),
    };
    assert!(
        dir.join("manifests").is_dir() && dir.join("images").is_dir(),
        "fixture images not found at {} ({how}: expected images/ and manifests/ there); \
         build them with `{FIXTURES_SCRIPT}` (as root), or set {FIXTURES_ENV} to a \
         fixtures directory",
        dir.display()
    );
    dir
}
