//! The binary's error behaviour: bad images, bad arguments, bad paths.
//!
//! The contract checked for every failure of the `image` commands: exactly
//! one line on stderr, starting with `erofs-virtiofsd: error:` and naming
//! the problem; exit code 1 (never 101, a panic, nor a signal); nothing
//! else. `image check` and `image manifest` report problems *inside* an
//! image differently (on stdout, resp. one stderr line per path), which
//! has its own tests. And an image embedded at an odd byte offset of a
//! bigger file reads exactly like the image itself (`--offset`).
//!
//! Fixtures: `$EROFS_FIXTURES`, else `tests/fixtures` (built by
//! `scripts/fixtures.sh`; see `docs/fixtures.md`).

use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use erofs_virtiofsd::erofs::{self, ExtentKind, Image, ImageOptions, InodeKind};
use erofs_virtiofsd::source::{MemorySource, Source};

const BIN: &str = env!("CARGO_BIN_EXE_erofs-virtiofsd");

/// How long one run may take (they take milliseconds).
const TIMEOUT: Duration = Duration::from_secs(60);

#[path = "common/fixture_dir.rs"]
mod fixture_dir;
use fixture_dir::fixtures_dir;

fn image(name: &str) -> PathBuf {
    let p = fixtures_dir().join("images").join(format!("{name}.erofs"));
    assert!(p.is_file(), "missing fixture {}", p.display());
    p
}

fn blob(name: &str) -> PathBuf {
    let p = fixtures_dir().join("images").join(format!("{name}.blob"));
    assert!(p.is_file(), "missing fixture {}", p.display());
    p
}

/// Deterministic filler bytes (xorshift64).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A finished run of the binary.
#[derive(Debug)]
struct Run {
    cmd: String,
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs the binary with stdout and stderr going to files in `dir` (a full
/// pipe would block it), polling `try_wait` until [`TIMEOUT`].
fn run_with(args: &[OsString], dir: &Path, stderr_to: Option<&Path>) -> Run {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("run{n}.stdout"));
    let err_path = stderr_to
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(format!("run{n}.stderr")));
    let cmd = format!(
        "erofs-virtiofsd {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(stderr_to.is_none())
                .open(&err_path)
                .expect("stderr file"),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break s,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmd}: no exit within {TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let stderr = if stderr_to.is_some() {
        String::new()
    } else {
        String::from_utf8_lossy(&std::fs::read(&err_path).expect("read stderr")).into_owned()
    };
    Run {
        cmd,
        code: status.code(),
        signal: status.signal(),
        stdout: std::fs::read(&out_path).expect("read stdout"),
        stderr,
    }
}

fn run(args: &[OsString], dir: &Path) -> Run {
    run_with(args, dir, None)
}

/// Builds an argument list from anything path- or string-like.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        Vec::<OsString>::from([$(OsString::from(AsRef::<OsStr>::as_ref(&$a))),*])
    };
}

/// Asserts the failure contract: exit 1, no panic or signal, exactly one
/// stderr line `erofs-virtiofsd: error: ...` containing every `wants`.
#[track_caller]
fn assert_one_error_line(case: &str, r: &Run, wants: &[&str]) {
    let ctx = format!("{case}: `{}`", r.cmd);
    assert_eq!(
        r.signal, None,
        "{ctx}: killed by a signal; stderr:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{ctx}: panicked:\n{}",
        r.stderr
    );
    assert_eq!(r.code, Some(1), "{ctx}: exit code; stderr:\n{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{ctx}: expected exactly one stderr line, got:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.ends_with('\n'),
        "{ctx}: unterminated line {:?}",
        r.stderr
    );
    let line = lines[0];
    assert!(
        line.starts_with("erofs-virtiofsd: error: "),
        "{ctx}: {line:?}"
    );
    for w in wants {
        assert!(line.contains(w), "{ctx}: {line:?} does not mention {w:?}");
    }
}

/// The kernel's superblock checksum (crc32c seeded 0x5045B54A, no final
/// inversion) over the superblock's block after the checksum field.
fn fix_checksum(img: &mut [u8]) {
    let bits = img[1024 + 12];
    let mut len = 1usize << bits;
    if len > 1024 {
        len -= 1024;
    }
    let crc = !crc32c::crc32c_append(!0x5045_B54A, &img[1032..1024 + len]);
    img[1028..1032].copy_from_slice(&crc.to_le_bytes());
}

/// Opens a fixture in memory with the library.
fn open(path: &Path, devices: &[PathBuf]) -> Image {
    let src: Arc<dyn Source> = Arc::new(MemorySource::from_vec(std::fs::read(path).unwrap()));
    let devices = devices
        .iter()
        .map(|d| Arc::new(MemorySource::from_vec(std::fs::read(d).unwrap())) as Arc<dyn Source>)
        .collect();
    Image::open(
        src,
        ImageOptions {
            devices,
            ..ImageOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every path of an image with its inode, from the library's walk.
fn paths(img: &Image) -> Vec<erofs::WalkEntry> {
    let mut v = Vec::new();
    erofs::walk(
        img,
        |e| v.push(e.clone()),
        |p, e| panic!("{}: {e}", String::from_utf8_lossy(p)),
    )
    .expect("walk");
    v
}

fn path_str(e: &erofs::WalkEntry) -> String {
    String::from_utf8(e.path.clone()).expect("UTF-8 path")
}

/// A non-empty regular file whose data starts at or after byte `cut` (and
/// is not inline) while its inode ends before `cut`, for truncation tests:
/// reading it fails on the data, not on the inode. (mkfs.erofs 1.9 often
/// writes an inode after its data, so not every such file qualifies.)
fn file_with_data_after(img: &Image, cut: u64) -> String {
    paths(img)
        .iter()
        .filter(|e| e.inode.kind == InodeKind::File && e.inode.size > 0)
        .filter(|e| e.inode.loc.pos + if e.inode.extended { 64 } else { 32 } <= cut)
        .find(|e| {
            matches!(img.map(&e.inode, 0), Ok(x) if matches!(x.kind,
                ExtentKind::Mapped { device: 0, pa } if pa >= cut))
        })
        .map(path_str)
        .expect("a file with its data past the cut")
}

/// A path whose inode (not just data) lies at or after byte `cut`.
fn path_with_inode_after(img: &Image, cut: u64) -> String {
    paths(img)
        .iter()
        .find(|e| e.inode.loc.pos >= cut)
        .map(path_str)
        .expect("an inode past the cut")
}

fn first_of_kind(img: &Image, kind: InodeKind) -> String {
    paths(img)
        .iter()
        .find(|e| e.inode.kind == kind && e.path.len() > 1)
        .map(path_str)
        .unwrap_or_else(|| panic!("no {kind:?} in the image"))
}

/// One failing invocation and what its error line must mention.
struct Case {
    name: &'static str,
    args: Vec<OsString>,
    wants: Vec<String>,
}

fn case(name: &'static str, args: Vec<OsString>, wants: &[&str]) -> Case {
    Case {
        name,
        args,
        wants: wants.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn test_cli_bad_images_and_arguments_give_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let plain = image("edge_plain-b4096");
    let plain_bytes = std::fs::read(&plain).unwrap();
    let chunk = image("edge_chunk4k-b512-blobdev");
    let chunk_blob = blob("edge_chunk4k-b512-blobdev");

    // Damaged and foreign files.
    let trunc1100 = t.join("trunc1100.erofs");
    std::fs::write(&trunc1100, &plain_bytes[..1100]).unwrap();
    let half = plain_bytes.len() / 2;
    let trunc_half = t.join("trunc_half.erofs");
    std::fs::write(&trunc_half, &plain_bytes[..half]).unwrap();
    let random = t.join("random.bin");
    let mut noise_bytes = noise(7, 64 << 10);
    noise_bytes[1024..1028].copy_from_slice(b"NOPE");
    std::fs::write(&random, &noise_bytes).unwrap();
    let zeros = t.join("zeros.bin");
    std::fs::write(&zeros, vec![0u8; 8192]).unwrap();
    let text = t.join("hostname.txt");
    std::fs::write(&text, b"build-host\n").unwrap();
    let missing = t.join("does-not-exist.erofs");
    let a_dir = t.join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();

    // Unknown INCOMPAT bit, with the checksum handled three ways.
    let mut unknown = plain_bytes.clone();
    assert_eq!(
        unknown[1024 + 8] & 1,
        1,
        "fixture has a superblock checksum"
    );
    let incompat = u32::from_le_bytes(unknown[1104..1108].try_into().unwrap()) | 0x8000_0000;
    unknown[1104..1108].copy_from_slice(&incompat.to_le_bytes());
    let unknown_stale = t.join("unknown_incompat_stale_csum.erofs");
    std::fs::write(&unknown_stale, &unknown).unwrap();
    fix_checksum(&mut unknown);
    let unknown_csum = t.join("unknown_incompat_csum.erofs");
    std::fs::write(&unknown_csum, &unknown).unwrap();
    unknown[1024 + 8] &= !1;
    let unknown_nocsum = t.join("unknown_incompat_no_csum.erofs");
    std::fs::write(&unknown_nocsum, &unknown).unwrap();

    // Paths inside the images.
    let img = open(&plain, &[]);
    let data_past_half = file_with_data_after(&img, half as u64);
    let inode_past_half = path_with_inode_after(&img, half as u64);
    let symlink = first_of_kind(&img, InodeKind::Symlink);
    let fifo = first_of_kind(&img, InodeKind::Fifo);
    let file = first_of_kind(&img, InodeKind::File);
    let chunk_img = open(&chunk, std::slice::from_ref(&chunk_blob));
    let chunk_file = paths(&chunk_img)
        .iter()
        .filter(|e| e.inode.kind == InodeKind::File && e.inode.size > 0)
        .map(path_str)
        .next()
        .unwrap();
    let size = plain_bytes.len().to_string();

    let cases = vec![
        // Not (all of) an EROFS image.
        case(
            "truncated to 1100 bytes",
            args!["image", "info", trunc1100],
            &["truncated", "superblock", "1100"],
        ),
        case(
            "truncated to 1100 bytes (ls)",
            args!["image", "ls", trunc1100, "/"],
            &["truncated", "superblock"],
        ),
        case(
            "truncated to 1100 bytes (check)",
            args!["image", "check", trunc1100],
            &["truncated", "superblock"],
        ),
        case(
            "truncated to 1100 bytes (manifest)",
            args!["image", "manifest", trunc1100],
            &["truncated", "superblock"],
        ),
        case(
            "truncated at half: file data",
            args!["image", "cat", trunc_half, data_past_half],
            &["truncated", "file data", &data_past_half],
        ),
        case(
            "truncated at half: inode",
            args!["image", "stat", trunc_half, inode_past_half],
            &["truncated", "inode"],
        ),
        case(
            "random bytes",
            args!["image", "info", random],
            &["not an EROFS image", "magic"],
        ),
        case(
            "zeros",
            args!["image", "ls", zeros],
            &["not an EROFS image", "magic 0x00000000"],
        ),
        case(
            "short text file",
            args!["image", "info", text],
            &["superblock", "truncated"],
        ),
        case(
            "missing file",
            args!["image", "info", missing],
            &["cannot open image", "does-not-exist.erofs", "No such file"],
        ),
        case(
            "directory as image",
            args!["image", "check", a_dir],
            &["cannot open image", "is a directory"],
        ),
        case(
            "unknown incompat, checksum recomputed",
            args!["image", "info", unknown_csum],
            &["unknown incompatible feature bits 0x80000000"],
        ),
        case(
            "unknown incompat, checksum feature cleared",
            args!["image", "ls", unknown_nocsum],
            &["unknown incompatible feature bits 0x80000000"],
        ),
        case(
            "unknown incompat, stale checksum",
            args!["image", "info", unknown_stale],
            &["superblock checksum mismatch"],
        ),
        // --offset.
        case(
            "offset 1",
            args!["image", "info", "--offset", "1", plain],
            &["not an EROFS image"],
        ),
        case(
            "offset 4096",
            args!["image", "ls", "--offset", "4096", plain],
            &["not an EROFS image"],
        ),
        case(
            "offset at the end",
            args!["image", "info", "--offset", size, plain],
            &["truncated", "superblock"],
        ),
        case(
            "offset past the end",
            args!["image", "info", "--offset", "99999999", plain],
            &["offset 99999999", "beyond the end"],
        ),
        // --device.
        case(
            "two devices for one",
            args!["image", "info", chunk, "--device", chunk_blob, "--device", chunk_blob],
            &["extra devices don't match", "has 1, 2 given"],
        ),
        case(
            "device for none",
            args!["image", "ls", plain, "--device", chunk_blob],
            &["extra devices don't match", "has 0, 1 given"],
        ),
        case(
            "missing device",
            args!["image", "info", chunk, "--device", missing],
            &["cannot open device", "does-not-exist.erofs"],
        ),
        case(
            "data on a device not given",
            args!["image", "cat", chunk, chunk_file],
            &["extra device", "--device"],
        ),
        // Paths inside the image.
        case(
            "stat of a missing path",
            args!["image", "stat", plain, "/no/such"],
            &["/no: no such file or directory"],
        ),
        case(
            "cat of a missing path",
            args!["image", "cat", plain, "/nope"],
            &["/nope: no such file or directory"],
        ),
        case(
            "ls of a missing path",
            args!["image", "ls", plain, "/files/nope"],
            &["/files/nope: no such file or directory"],
        ),
        case(
            "ls -l of a missing path",
            args!["image", "ls", "-l", plain, "/nope"],
            &["/nope: no such file or directory"],
        ),
        case(
            "xattr of a missing path",
            args!["image", "xattr", plain, "/nope"],
            &["/nope: no such file or directory"],
        ),
        case(
            "path through a file",
            args!["image", "stat", plain, format!("{file}/x")],
            &["not a directory"],
        ),
        case(
            "cat of a directory",
            args!["image", "cat", plain, "/files"],
            &["/files: is a directory"],
        ),
        case(
            "cat of the root",
            args!["image", "cat", plain, "/"],
            &["is a directory"],
        ),
        case(
            "cat of a symlink",
            args!["image", "cat", plain, symlink],
            &["is a symlink"],
        ),
        case(
            "cat of a fifo",
            args!["image", "cat", plain, fifo],
            &["not a regular file"],
        ),
    ];
    for c in &cases {
        let r = run(&c.args, t);
        let wants: Vec<&str> = c.wants.iter().map(String::as_str).collect();
        assert_one_error_line(c.name, &r, &wants);
        assert!(
            r.stdout.is_empty(),
            "{}: printed to stdout: {:?}",
            c.name,
            String::from_utf8_lossy(&r.stdout)
        );
    }
}

#[test]
fn test_check_truncated_half_image_reports_problems_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(image("edge_plain-b4096")).unwrap();
    let path = tmp.path().join("half.erofs");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let r = run(&args!["image", "check", path], tmp.path());
    assert_eq!((r.code, r.signal), (Some(1), None), "{}", r.stderr);
    assert!(r.stderr.is_empty(), "stderr: {}", r.stderr);
    let out = String::from_utf8(r.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let (last, problems) = lines.split_last().expect("output");
    assert!(
        last.ends_with("paths") && last.contains("problem(s) in"),
        "{last}"
    );
    let n: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, problems.len(), "{out}");
    assert!(n > 0);
    for p in problems {
        assert!(p.starts_with('/') && p.contains("truncated"), "{p}");
    }
}

#[test]
fn test_manifest_truncated_half_image_reports_each_problem_once() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(image("edge_plain-b4096")).unwrap();
    let path = tmp.path().join("half.erofs");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let r = run(&args!["image", "manifest", path], tmp.path());
    assert_eq!((r.code, r.signal), (Some(1), None), "{}", r.stderr);
    assert!(!r.stderr.is_empty());
    for line in r.stderr.lines() {
        assert!(
            line.starts_with("erofs-virtiofsd: /") && line.contains("truncated"),
            "{line}"
        );
    }
    // What could be read is still printed, one JSON object per line.
    let out = String::from_utf8(r.stdout).unwrap();
    assert!(out.lines().count() > 100);
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert!(v["path"].is_string(), "{line}");
    }
}

#[test]
fn test_cli_unwritable_stderr_exits_1_without_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let full = Path::new("/dev/full");
    assert!(full.exists(), "/dev/full is needed");
    let bytes = std::fs::read(image("edge_plain-b4096")).unwrap();
    let half = tmp.path().join("half.erofs");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let missing = tmp.path().join("missing.erofs");
    for args in [
        args!["image", "info", missing],
        args!["image", "manifest", half],
    ] {
        let r = run_with(&args, tmp.path(), Some(full));
        assert_eq!(
            (r.code, r.signal),
            (Some(1), None),
            "`{}` with stderr on /dev/full",
            r.cmd
        );
    }
}

#[test]
fn test_cli_unwritable_stdout_gives_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    // stdout on /dev/full: writing fails with ENOSPC.
    let mut child = Command::new(BIN)
        .args(["image", "manifest"])
        .arg(image("edge_plain-b512"))
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .stderr(std::fs::File::create(tmp.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let r = Run {
        cmd: "image manifest > /dev/full".into(),
        code: status.code(),
        signal: status.signal(),
        stdout: Vec::new(),
        stderr: std::fs::read_to_string(tmp.path().join("err")).unwrap(),
    };
    assert_one_error_line("stdout on /dev/full", &r, &["No space left on device"]);
}

#[test]
fn test_offset_embedded_image_manifest_matches_plain_image() {
    let tmp = tempfile::tempdir().unwrap();
    const OFFSET: usize = 12345;
    // (image, extra device)
    for (name, device) in [
        ("edge_plain-b512", None),
        (
            "edge_chunk4k-b512-blobdev",
            Some(blob("edge_chunk4k-b512-blobdev")),
        ),
        ("edge_lz4", None),
    ] {
        let plain = image(name);
        let bytes = std::fs::read(&plain).unwrap();
        let mut embedded = noise(0xfeed, OFFSET);
        embedded.extend_from_slice(&bytes);
        embedded.extend_from_slice(&noise(0xbeef, 7777));
        let path = tmp.path().join(format!("{name}.embedded"));
        std::fs::write(&path, &embedded).unwrap();
        let dev: Vec<OsString> = match &device {
            Some(d) => args!["--device", d],
            None => Vec::new(),
        };
        let mut a = args!["image", "manifest", plain];
        a.extend(dev.iter().cloned());
        let want = run(&a, tmp.path());
        assert_eq!(
            (want.code, want.signal),
            (Some(0), None),
            "{name}: {}",
            want.stderr
        );
        let mut a = args!["image", "manifest", path, "--offset", OFFSET.to_string()];
        a.extend(dev.iter().cloned());
        let got = run(&a, tmp.path());
        assert_eq!(
            (got.code, got.signal),
            (Some(0), None),
            "{name}: {}",
            got.stderr
        );
        assert!(got.stderr.is_empty(), "{name}: {}", got.stderr);
        assert!(want.stdout.len() > 1000, "{name}: tiny manifest");
        assert!(
            got.stdout == want.stdout,
            "{name}: manifest at offset {OFFSET} differs from the plain image's"
        );
        // And off by one byte it is not an image at all.
        let mut a = args![
            "image",
            "manifest",
            path,
            "--offset",
            (OFFSET + 1).to_string()
        ];
        a.extend(dev);
        let r = run(&a, tmp.path());
        assert_one_error_line(name, &r, &["not an EROFS image"]);
    }
}

/// A regular file turned into an extended flat inode with a null start
/// block (one hole) and a 2^62-byte size: `check` must finish (holes are
/// not read) and `manifest` must refuse to hash it, both promptly.
#[test]
fn test_huge_sparse_file_check_finishes_manifest_refuses() {
    let src = image("edge_plain-b4096");
    let img = open(&src, &[]);
    let victim = paths(&img)
        .into_iter()
        .find(|e| e.inode.kind == InodeKind::File && e.inode.extended && !e.inode.loc.in_metabox)
        .expect("an extended regular file");
    let mut bytes = std::fs::read(&src).expect("read fixture");
    let at = victim.inode.loc.pos as usize;
    // i_format: extended, FLAT_PLAIN; i_nb = 0xffff and i_u = 0xffffffff:
    // a null 48-bit start block; i_size = 2^62.
    bytes[at..at + 2].copy_from_slice(&1u16.to_le_bytes());
    bytes[at + 6..at + 8].copy_from_slice(&u16::MAX.to_le_bytes());
    bytes[at + 8..at + 16].copy_from_slice(&(1u64 << 62).to_le_bytes());
    bytes[at + 16..at + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sparse.erofs");
    std::fs::write(&path, &bytes).expect("write image");

    let r = run(
        &["image".into(), "check".into(), path.clone().into()],
        dir.path(),
    );
    assert_eq!(
        r.code,
        Some(0),
        "{}: {}",
        r.cmd,
        String::from_utf8_lossy(&r.stdout)
    );

    let r = run(
        &["image".into(), "manifest".into(), path.into()],
        dir.path(),
    );
    assert_eq!(r.code, Some(1), "{}", r.cmd);
    let name = path_str(&victim);
    assert!(
        r.stderr.contains(&name) && r.stderr.contains("--max-file-size"),
        "{}: stderr {:?}",
        r.cmd,
        r.stderr
    );
}
