//! Running `mkfs.erofs` (Debian 12's erofs-utils 1.5) to build test images.
//!
//! What Debian's mkfs.erofs 1.5 supports (checked against the binary; note
//! that it silently IGNORES unknown `-E` options, so a typo or a newer option
//! such as `-E48bit`, `-Efragments` or `-Ededupe` just builds the default
//! image; [`mkfs`] rejects `-E` options it does not know for that reason):
//! - `-E` extended options: `legacy-compress`, `force-inode-compact`,
//!   `force-inode-extended`, `nosbcrc`, `noinline_data`, `ztailpacking`.
//!   `force-inode-compact` fails ("cannot be in compact form") on any inode
//!   with uid/gid > 65535 (combine it with `--all-root` or `--force-uid=`/
//!   `--force-gid=`); per-file mtimes are then dropped (all = build time).
//! - `-T#`: fixed build time AND mtime of every file (even with
//!   `--preserve-mtime`); without `-T`, per-file mtimes (and nanoseconds) are
//!   kept and most inodes become extended (compact only where mtime equals the
//!   build time). `--ignore-mtime`: compact inodes where the ids allow, mtime
//!   = build time. `SOURCE_DATE_EPOCH` clamps newer mtimes to it instead.
//! - `-U UUID`, `--all-root`, `--force-uid=#`, `--force-gid=#`,
//!   `--ignore-mtime`, `--preserve-mtime`, `-x#` (xattr tolerance: < 0
//!   disables xattrs; default 2 = share xattrs used by 2+ inodes),
//!   `--chunksize=#` (chunk-based files), `--blobdev=PATH` (with a chunk
//!   size: data in an extra device), `--exclude-path`, `--exclude-regex`,
//!   `--file-contexts`, `--max-extent-bytes=#`, `--quiet`, `-d#`.
//! - Compression: `-zlz4`, `-zlz4hc[,LEVEL]` only (no lzma/deflate/zstd),
//!   `-C#` physical cluster size, `--compress-hints=FILE`.
//! - Limits found with the edge tree: names of 255 bytes fail ("Could not
//!   format the device: No such file or directory"; 254 works); images with
//!   `--chunksize` fail with EIO when written to tmpfs (see
//!   [`super::trees::image_dir`]). 255-byte xattr names, 60000-byte values,
//!   100+ xattrs per inode, negative and 64-bit mtimes all work.
//! - NOT supported: `-b` (the block size is always 4096 = page size),
//!   `--mkfs-time`, `--xattr-prefix`, `-m`/metabox, `--tar`, `--aufs`,
//!   `--ovlfs-strip`, `--sort`, `--gzip`. Images with other block sizes or
//!   newer features come from the fixture images (mkfs 1.9, `docs/fixtures.md`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `-E` options Debian's mkfs.erofs 1.5 understands.
pub const MKFS15_EXTENDED_OPTIONS: &[&str] = &[
    "legacy-compress",
    "force-inode-compact",
    "force-inode-extended",
    "nosbcrc",
    "noinline_data",
    "ztailpacking",
];

/// The compressors Debian's mkfs.erofs 1.5 has.
pub const MKFS15_COMPRESSORS: &[&str] = &["lz4", "lz4hc"];

/// A fixed filesystem UUID for reproducible images.
pub const FIXED_UUID: &str = "6a8c3d52-6b1b-4a27-9a3e-0e5f2e4b7c11";

/// The mkfs.erofs version string (e.g. `1.5`); panics with install advice
/// when the tool is missing.
pub fn mkfs_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        // Without arguments it prints its usage and, last, "mkfs.erofs X.Y".
        let out = match Command::new("mkfs.erofs").output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("mkfs.erofs not found in PATH: apt-get install erofs-utils")
            }
            Err(e) => panic!("cannot run mkfs.erofs: {e}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("mkfs.erofs "))
            .next_back()
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// Runs `mkfs.erofs --quiet ARGS IMAGE TREE` and returns the image path.
/// Panics with the command line and mkfs's output if it fails, and (for mkfs
/// 1.5) on `-E` options it would silently ignore.
#[track_caller]
pub fn mkfs(tree: &Path, image: &Path, args: &[&str]) -> PathBuf {
    let version = mkfs_version();
    if version == "1.5" {
        check_15_args(args);
    }
    let mut cmd = Command::new("mkfs.erofs");
    if !args.contains(&"--quiet") {
        cmd.arg("--quiet");
    }
    cmd.args(args).arg(image).arg(tree);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "mkfs.erofs {version} failed ({}): {cmd:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    assert!(
        image.is_file(),
        "mkfs.erofs succeeded but {} does not exist",
        image.display()
    );
    image.to_path_buf()
}

/// Builds a compressed image: `-z ALG` (e.g. `lz4`, `lz4hc,12`) plus `args`.
#[track_caller]
pub fn mkfs_compressed(tree: &Path, image: &Path, alg: &str, args: &[&str]) -> PathBuf {
    let z = format!("-z{alg}");
    let mut all: Vec<&str> = vec![&z];
    all.extend_from_slice(args);
    mkfs(tree, image, &all)
}

#[track_caller]
fn check_15_args(args: &[&str]) {
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let ext = if *a == "-E" {
            it.next().copied()
        } else {
            a.strip_prefix("-E")
        };
        if let Some(ext) = ext {
            for opt in ext.split(',') {
                assert!(
                    MKFS15_EXTENDED_OPTIONS.contains(&opt),
                    "mkfs.erofs 1.5 silently ignores -E {opt}; it knows only {MKFS15_EXTENDED_OPTIONS:?}"
                );
            }
        }
        if a.starts_with("-b") {
            panic!("mkfs.erofs 1.5 has no -b (block size is always 4096)");
        }
        let z = if *a == "-z" {
            it.next().copied()
        } else {
            a.strip_prefix("-z")
        };
        if let Some(z) = z {
            for alg in z.split(':') {
                let name = alg.split(',').next().unwrap_or(alg);
                assert!(
                    MKFS15_COMPRESSORS.contains(&name),
                    "mkfs.erofs 1.5 has no compressor {name:?} (only {MKFS15_COMPRESSORS:?})"
                );
            }
        }
    }
}

/// mkfs.erofs 1.9 from Debian sid (for `--xattr-inode-digest`):
/// `$EROFS_MKFS_NEW`, else `target/sid/bin/mkfs.erofs` as
/// `scripts/sid-tools.sh erofs` installs it. Panics with that advice when
/// it is not runnable.
pub fn mkfs_new() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = match std::env::var_os("EROFS_MKFS_NEW") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sid/bin/mkfs.erofs"),
        };
        let out = Command::new(&p).arg("--version").output();
        let v = out
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        assert!(
            v.contains(" 1.9"),
            "mkfs.erofs 1.9 not runnable at {}: run `scripts/sid-tools.sh erofs` or set \
             EROFS_MKFS_NEW",
            p.display()
        );
        p
    })
}

/// Runs mkfs.erofs 1.9 ([`mkfs_new`]) `--quiet ARGS IMAGE TREE`; returns
/// the image path.
#[track_caller]
pub fn mkfs_19(tree: &Path, image: &Path, args: &[&str]) -> PathBuf {
    let out = Command::new(mkfs_new())
        .arg("--quiet")
        .args(args)
        .arg(image)
        .arg(tree)
        .output()
        .expect("run mkfs.erofs");
    assert!(
        out.status.success(),
        "mkfs.erofs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image.to_path_buf()
}

/// Deterministic content for store and DAX tests: 8 KiB of xorshift noise,
/// then 8 KiB of numbered text lines, alternating, so that compressors
/// have something to do and every seed gives other bytes.
pub fn mixed_content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        if (v.len() / 8192) % 2 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(format!("line {seed} {} of text\n", v.len()).as_bytes());
        }
    }
    v.truncate(len);
    v
}
