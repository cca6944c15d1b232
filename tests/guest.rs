//! Real guest: QEMU (TCG, Debian's `qemu-system-x86`) boots the test guest
//! of `vm-images/` (Debian's cloud kernel, busybox initramfs) against our
//! daemon serving a fixture image over vhost-user virtio-fs. The guest
//! mounts the tag, walks the whole tree (`vm-images/guest/evfs-walk`: type,
//! mode, owner, nlink, size, mtime with nanoseconds, device numbers, SHA-256
//! of every regular file, symlink targets, every xattr `getfattr` lists)
//! and prints it on the serial console; `vm-images/walk2manifest.py` turns
//! that into the manifest format, which must equal the kernel's manifest of
//! the fixture, field for field.
//!
//! A fourth test puts the image in the guest's own RAM (QEMU's loader
//! device) and serves it with `--image guest:GPA:LEN`; a fifth serves two
//! images by name (`--image NAME=PATH`): the guest walks the whole share,
//! and each top-level directory must equal its image's manifest.
//!
//! A sixth starts the daemon with no image and `--api-socket`: while the
//! guest runs, an image is added through the API, the guest lists it
//! (the share's root is never cached: no remount), walks it bit-exact,
//! and after the API removes it sees it gone; the metrics count the
//! guest's reads of it.
//!
//! Needs root, network access to Debian's archive the first time (the guest
//! kernel and busybox come from `apt-get download`; `vm-images/build.sh`
//! caches them in `vm-images/out/`), and about 15 s per image on 2 cores.
//! Guests boot one at a time (a second TCG guest would compete with the
//! first and with the daemon for the two cores).

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::fixture_image;
use common::manifest::{parse_jsonl, subtree};
use common::{assert_manifests_eq, load_expected};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One guest at a time, and the guest image built once.
fn guest_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(repo().join("vm-images/build.sh"))
            .output()
            .expect("run vm-images/build.sh");
        assert!(
            out.status.success(),
            "vm-images/build.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    guard
}

/// The daemon serving one image; killed (and reaped) on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon serving `images` (each an `--image` argument, with
    /// `devices`) with more `args`; waits until it listens.
    fn start_with(
        images: &[OsString],
        devices: &[&Path],
        args: &[OsString],
        sock: &Path,
        log: &Path,
    ) -> Daemon {
        let log_file = std::fs::File::create(log).expect("daemon log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
        cmd.arg("--socket-path").arg(sock).args(args);
        for image in images {
            cmd.arg("--image").arg(image);
        }
        for d in devices {
            cmd.arg("--device").arg(d);
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("daemon log"))
            .stderr(log_file);
        let child = cmd.spawn().expect("start erofs-virtiofsd");
        let mut d = Daemon {
            child,
            log: log.to_path_buf(),
        };
        // Wait for the line the daemon prints once its socket listens (the
        // socket file alone appears at bind(2), before listen(2)); polling
        // a condition with a deadline, the daemon's exit ends it at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d
            .log_text()
            .contains("Waiting for vhost-user socket connection...")
        {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "the daemon exited ({status}) before listening:\n{}",
                    d.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no socket at {} after 30 s:\n{}",
                sock.display(),
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the daemon exited ({status}):\n{}", self.log_text());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Boots the guest against our daemon serving fixture `name`, walks the
/// tree in the guest and compares it with the fixture's kernel manifest.
fn check_guest_walk(name: &str) {
    let fx = fixture_image(name);
    check_guest_walk_with(
        name,
        fx.image.as_os_str().to_owned(),
        &fx.devices(),
        &[],
        &[],
    );
}

/// [`check_guest_walk`] with the daemon's `--image` argument given, and more
/// arguments for `vm-images/run.sh` (before `--`) and QEMU (after it).
fn check_guest_walk_with(
    name: &str,
    image_arg: OsString,
    devices: &[&Path],
    run_args: &[&str],
    qemu_args: &[OsString],
) {
    let guest = guest_walk(name, &[image_arg], devices, run_args, qemu_args);
    let expected = load_expected(name);
    assert_manifests_eq(
        &format!("{name}: guest walk through virtio-fs vs the kernel's manifest"),
        &expected,
        &guest,
    );
}

/// Boots the guest against our daemon serving `images` (each an `--image`
/// argument, with `devices`), walks the share in the guest and returns the
/// walk as a manifest.
fn guest_walk(
    name: &str,
    images: &[OsString],
    devices: &[&Path],
    run_args: &[&str],
    qemu_args: &[OsString],
) -> Vec<common::Entry> {
    guest_walk_with(name, images, devices, &[], run_args, qemu_args, &|| {})
}

/// [`guest_walk`] with more daemon arguments, and `after` run once the
/// guest is done, while the daemon still runs.
fn guest_walk_with(
    name: &str,
    images: &[OsString],
    devices: &[&Path],
    daemon_args: &[OsString],
    run_args: &[&str],
    qemu_args: &[OsString],
    after: &dyn Fn(),
) -> Vec<common::Entry> {
    let _guard = guest_lock();
    let work = tempfile::Builder::new()
        .prefix("evfs-guest-")
        .tempdir()
        .expect("scratch dir");
    let sock = work.path().join("vfs.sock");
    let mut daemon = Daemon::start_with(
        images,
        devices,
        daemon_args,
        &sock,
        &work.path().join("daemon.log"),
    );
    let console = work.path().join("console.log");
    let started = Instant::now();
    let out = Command::new(repo().join("vm-images/run.sh"))
        .args(["--no-build", "-c", "walk", "--timeout", "600", "-s"])
        .arg(&sock)
        .arg("--log")
        .arg(&console)
        .args(run_args)
        .arg("--")
        .args(qemu_args)
        .stdin(Stdio::null())
        .output()
        .expect("run vm-images/run.sh");
    let took = started.elapsed();
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        out.status.success(),
        "{name}: the guest walk failed ({}); stderr:\n{}\nconsole (tail):\n{}\ndaemon log (tail):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&console_text, 40),
        tail(&daemon.log_text(), 40)
    );
    daemon.assert_running();

    let walk = work.path().join("walk.txt");
    std::fs::write(&walk, &out.stdout).expect("write walk output");
    let conv = Command::new(repo().join("vm-images/walk2manifest.py"))
        .arg(&walk)
        .output()
        .expect("run walk2manifest.py");
    assert!(
        conv.status.success(),
        "{name}: walk2manifest.py failed: {}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let text = String::from_utf8(conv.stdout).expect("manifest is UTF-8");
    let guest = parse_jsonl(&text, &format!("{name}: guest walk"));
    // The walker drops `xattrs` only if the mount has none to offer; ours
    // must offer them.
    assert!(
        guest.iter().all(|e| e.get("xattrs").is_some()),
        "{name}: the guest could not read xattrs through our daemon"
    );
    eprintln!(
        "{name}: the guest walked {} paths in {:.1} s (boot included)",
        guest.len(),
        took.as_secs_f64()
    );
    after();
    daemon.assert_running();
    guest
}

/// A guest reads an image whose files are in the content store (issue
/// 15): the store is warmed by another process (`store preload`), then the
/// daemon serves the image in that domain; the guest's walk is bit-exact
/// and the daemon's metrics show reads answered from the store's entries
/// and nothing loaded again.
#[test]
fn test_guest_reads_an_image_served_from_the_store() {
    let name = "edge_lz4hc-fingerprint";
    let fx = fixture_image(name);
    let dir = tempfile::tempdir().expect("scratch dir");
    let store = dir.path().join("store");
    let api_sock = dir.path().join("api.sock");
    let pre = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"))
        .args([
            "store", "preload", "--domain", "guests", "--json", "--store",
        ])
        .arg(&store)
        .arg(&fx.image)
        .output()
        .expect("store preload");
    assert!(
        pre.status.success(),
        "store preload: {}",
        String::from_utf8_lossy(&pre.stderr)
    );
    let args: Vec<OsString> = vec![
        "--domain".into(),
        "guests".into(),
        "--store".into(),
        store.clone().into(),
        "--api-socket".into(),
        api_sock.clone().into(),
    ];
    let check = || {
        let (st, body) = api(&api_sock, "GET", "/api/v1/metrics", "");
        assert_eq!(st, 200, "{body}");
        let m: serde_json::Value = serde_json::from_str(&body).expect("metrics JSON");
        let s = &m["store"];
        assert!(
            s["hits"].as_u64().unwrap_or(0) > 0,
            "no read was answered from the store: {s}"
        );
        assert_eq!(s["loads"].as_u64(), Some(0), "contents loaded again: {s}");
        assert_eq!(s["verification_failures"].as_u64(), Some(0), "{s}");
    };
    let guest = guest_walk_with(
        name,
        &[fx.image.as_os_str().to_owned()],
        &fx.devices(),
        &args,
        &[],
        &[],
        &check,
    );
    // The guest's walker (getfattr's quoted names) cannot attach xattrs to
    // names with control, non-ASCII or backslash bytes: it drops them on
    // the host kernel's mount too. This fixture is the one whose such
    // files carry an xattr (the fingerprint): compare everything else.
    let plain_xattrs = |v: Vec<common::Entry>| -> Vec<common::Entry> {
        v.into_iter()
            .map(|mut e| {
                if e.raw_path
                    .iter()
                    .any(|&b| !(0x21..0x7f).contains(&b) || b == b'\\')
                {
                    e.fields.remove("xattrs");
                }
                e
            })
            .collect()
    };
    assert_manifests_eq(
        &format!("{name}: guest walk of the image served from the store"),
        &plain_xattrs(load_expected(name)),
        &plain_xattrs(guest),
    );
}

/// Uncompressed: flat and tail-packed inline data, 4 KiB blocks.
#[test]
fn test_guest_walk_edge_plain_b4096() {
    check_guest_walk("edge_plain-b4096");
}

/// Compressed: LZ4 with 4 KiB pclusters (the same odd tree: names, xattrs,
/// ACLs, devices, sparse files, hard links).
#[test]
fn test_guest_walk_edge_lz4() {
    check_guest_walk("edge_lz4");
}

/// Compressed: zstd with tail packing, a real library tree.
#[test]
fn test_guest_walk_usr_zstd15_ztailpack() {
    check_guest_walk("usr_zstd15-ztailpack");
}

/// The image in the guest's own RAM: QEMU's loader device places the
/// fixture at the unaligned guest-physical address 0x1000_0003 (the guest
/// kernel keeps its hands off the range: `memmap=4M$0x10000000`), and the
/// daemon serves `--image guest:0x10000003:LEN` through the vhost-user
/// memory table.
#[test]
fn test_guest_walk_image_in_guest_ram() {
    let name = "edge_lz4";
    let fx = fixture_image(name);
    let len = std::fs::metadata(&fx.image).expect("stat fixture").len();
    assert!(len < 4 << 20, "the reserved range holds 4 MiB");
    let mut loader = OsString::from("loader,force-raw=on,addr=0x10000003,file=");
    loader.push(fx.image.as_os_str());
    check_guest_walk_with(
        name,
        OsString::from(format!("guest:0x10000003:{len}")),
        &[],
        &["--append", "memmap=4M$0x10000000"],
        &[OsString::from("-device"), loader],
    );
}

/// Two images by name: the guest sees a read-only root of the two names,
/// and under each the image as the kernel sees it.
#[test]
fn test_guest_walk_two_named_images() {
    let images = [("lz4", "edge_lz4"), ("plain", "edge_plain-b4096")];
    let args: Vec<OsString> = images
        .iter()
        .map(|(n, f)| {
            let mut a = OsString::from(format!("{n}="));
            a.push(fixture_image(f).image.as_os_str());
            a
        })
        .collect();
    let guest = guest_walk("two named images", &args, &[], &[], &[]);
    let root = guest
        .iter()
        .find(|e| e.raw_path == b"/")
        .expect("the root in the walk");
    assert_eq!(root.kind(), "dir");
    assert_eq!(
        root.get("mode").and_then(|m| m.as_u64()),
        Some(u64::from(libc::S_IFDIR | 0o555))
    );
    assert_eq!(root.get("nlink").and_then(|m| m.as_u64()), Some(4));
    let tops: Vec<&[u8]> = guest
        .iter()
        .filter(|e| e.raw_path.len() > 1 && !e.raw_path[1..].contains(&b'/'))
        .map(|e| &e.raw_path[1..])
        .collect();
    assert_eq!(tops, [b"lz4".as_slice(), b"plain".as_slice()]);
    for (n, f) in images {
        assert_manifests_eq(
            &format!("/{n} of the guest's walk vs the kernel's manifest of {f}"),
            &load_expected(f),
            &subtree(&guest, n.as_bytes()),
        );
    }
}

/// What the guest runs in the API test: waits for `/mnt/lz4` to appear,
/// walks it, waits for it to go. Each step prints a marker the host waits
/// for on the console; the guest's waits are bounded (5 min each).
const API_GUEST_SCRIPT: &str = r#"echo "ROOT [$(ls /mnt)]"
echo EVFS-API-READY
i=0; while [ ! -d /mnt/lz4 ]; do i=$((i+1)); [ $i -gt 3000 ] && exit 3; sleep 0.1; done
echo "ROOT [$(ls /mnt)]"
echo EVFS-API-WALK
evfs-walk /mnt/lz4; rc=$?
mkdir -p /run/rw /run/c1; mount -t tmpfs t /run/rw; mkdir /run/rw/u /run/rw/w
mount -t overlay o -o lowerdir=/mnt/lz4,upperdir=/run/rw/u,workdir=/run/rw/w /run/c1 &&
echo hi >/run/c1/new && echo "OVERLAY [$(ls -A /run/c1 | wc -l) $(cat /run/c1/new) $(ls -A /run/rw/u)]"
umount /run/c1
echo EVFS-API-WALKED
i=0; while [ -e /mnt/lz4 ]; do i=$((i+1)); [ $i -gt 3000 ] && exit 4; sleep 0.1; done
echo "ROOT [$(ls /mnt)]"
exit $rc
"#;

/// One HTTP request on the API socket; (status, body).
fn api(sock: &Path, method: &str, target: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect to the API");
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the reply");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// Waits (bounded) until the console log holds `marker`, or QEMU ends.
fn wait_console(console: &Path, marker: &str, qemu: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if text.contains(marker) {
            return;
        }
        if let Ok(Some(st)) = qemu.try_wait() {
            panic!(
                "the guest ended ({st}) before {marker}:\n{}",
                tail(&text, 40)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {marker} from the guest:\n{}",
            tail(&text, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// READ requests and served bytes of image `name` in `GET /api/v1/metrics`.
fn api_reads(sock: &Path, name: &str) -> (u64, u64) {
    let (st, body) = api(sock, "GET", "/api/v1/metrics", "");
    assert_eq!(st, 200, "{body}");
    let m: serde_json::Value = serde_json::from_str(&body).expect("metrics JSON");
    let r = &m["images"][name]["requests"];
    let reads = r["opcodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["name"] == "READ")
        .map_or(0, |o| o["requests"].as_u64().unwrap_or(0));
    (reads, r["served_bytes"].as_u64().unwrap_or(0))
}

/// A running guest gets an image through the API and loses it again.
#[test]
fn test_guest_sees_images_added_and_removed_through_the_api() {
    const FIXTURE: &str = "edge_lz4";
    let _guard = guest_lock();
    let work = tempfile::Builder::new()
        .prefix("evfs-guest-api-")
        .tempdir()
        .expect("scratch dir");
    // The image comes from an --allow-dir directory: the daemon runs in its
    // default sandbox, where nothing else of the host is visible.
    let allow = work.path().join("images");
    std::fs::create_dir(&allow).expect("mkdir");
    let image = allow.join("lz4.erofs");
    std::fs::copy(fixture_image(FIXTURE).image, &image).expect("copy the fixture");
    let sock = work.path().join("vfs.sock");
    let api_sock = work.path().join("api.sock");
    let mut daemon = Daemon::start_with(
        &[],
        &[],
        &[
            "--api-socket".into(),
            api_sock.clone().into(),
            "--allow-dir".into(),
            allow.clone().into(),
        ],
        &sock,
        &work.path().join("daemon.log"),
    );
    let script = work.path().join("guest.sh");
    std::fs::write(&script, API_GUEST_SCRIPT).expect("write the guest script");
    let console = work.path().join("console.log");
    let mut qemu = Command::new(repo().join("vm-images/run.sh"))
        .args(["--no-build", "--timeout", "900", "-s"])
        .arg(&sock)
        .arg("--log")
        .arg(&console)
        .arg("--script-file")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vm-images/run.sh");

    wait_console(&console, "EVFS-API-READY", &mut qemu);
    let body = format!(
        r#"{{"source":"{}","fs_type":"erofs","config":"{{}}"}}"#,
        image.display()
    );
    let (st, text) = api(&api_sock, "POST", "/api/v1/mount?mountpoint=/lz4", &body);
    assert_eq!(st, 204, "{text}");
    wait_console(&console, "EVFS-API-WALKED", &mut qemu);
    let (reads, bytes) = api_reads(&api_sock, "lz4");
    let (st, text) = api(&api_sock, "DELETE", "/api/v1/mount?mountpoint=/lz4", "");
    assert_eq!(st, 204, "{text}");

    let out = qemu.wait_with_output().expect("wait for the guest");
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the guest script failed ({}): stdout:\n{}\nstderr:\n{}\nconsole (tail):\n{}\ndaemon log (tail):\n{}",
        out.status,
        tail(&stdout, 20),
        String::from_utf8_lossy(&out.stderr),
        tail(&console_text, 40),
        tail(&daemon.log_text(), 40)
    );
    daemon.assert_running();
    // What the guest listed at its root: nothing, the image, nothing again.
    let roots: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ROOT [")).collect();
    assert_eq!(roots, ["ROOT []", "ROOT [lz4]", "ROOT []"], "{stdout}");
    // docs/vmms.md's Kata-style step: the layer stacked with overlayfs in the
    // guest, a writable upper directory on guest memory: the merged tree has
    // the layer's top-level entries plus the new file, which went to the
    // upper directory only.
    let top_level = load_expected(FIXTURE)
        .iter()
        .filter(|e| e.raw_path.len() > 1 && e.raw_path.iter().filter(|&&b| b == b'/').count() == 1)
        .count();
    let overlay = format!("OVERLAY [{} hi new]", top_level + 1);
    assert!(
        stdout.lines().any(|l| l == overlay),
        "no `{overlay}` from the guest's overlay mount:\n{stdout}"
    );
    // Its walk of /lz4, bit-exact against the kernel's manifest.
    let walk: String = stdout
        .split_once("EVFS-API-WALK\n")
        .and_then(|(_, rest)| rest.split_once("EVFS-API-WALKED"))
        .map(|(w, _)| w.to_owned())
        .expect("the walk between its markers");
    let walk_file = work.path().join("walk.txt");
    std::fs::write(&walk_file, walk).expect("write the walk");
    let conv = Command::new(repo().join("vm-images/walk2manifest.py"))
        .arg(&walk_file)
        .output()
        .expect("run walk2manifest.py");
    assert!(
        conv.status.success(),
        "walk2manifest.py: {}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let text = String::from_utf8(conv.stdout).expect("UTF-8 manifest");
    let expected = load_expected(FIXTURE);
    assert_manifests_eq(
        "/lz4 added through the API, walked in the guest, vs the kernel's manifest",
        &expected,
        &parse_jsonl(&text, "guest walk of /lz4"),
    );
    // The metrics counted the guest's reads: every regular file was read
    // (hard links share their pages, so at most the sum over paths).
    let sizes: Vec<u64> = expected
        .iter()
        .filter(|e| e.kind() == "reg")
        .map(|e| e.get("size").and_then(|s| s.as_u64()).unwrap_or(0))
        .collect();
    let (largest, sum) = (
        sizes.iter().copied().max().unwrap_or(0),
        sizes.iter().sum::<u64>(),
    );
    // (An image's counters start at zero when it is added.)
    assert!(reads > 0, "READ requests of /lz4: {reads}");
    assert!(
        (largest..=sum).contains(&bytes) && bytes > 0,
        "served bytes {bytes}, files {largest}..={sum}"
    );
}
