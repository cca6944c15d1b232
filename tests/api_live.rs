//! The API socket of a real daemon (`--api-socket`), in its default sandbox
//! (as root: namespaces and the seccomp allow-list with `kill`):
//!
//! - a local mount started with no image: two images added through the
//!   API (one with an extra device given in its config), read bit-exact
//!   against their manifests, one removed (its name gone, a file of it
//!   held open keeps reading), the metrics counting the reads per image;
//! - serve mode with no image: an image added while a vhost-user frontend
//!   is connected shows at its next LOOKUP, and is gone after DELETE;
//! - the content store in the metrics: a local mount of two images of one
//!   trust domain (mkfs.erofs 1.9, `--xattr-inode-digest`) with a store in
//!   a tempdir; reading shared files moves the store's entries, bytes,
//!   loads and hits, per process and per domain, in JSON and Prometheus;
//! - bad input on a live mount (bad JSON, missing, unreadable and
//!   non-EROFS images, a path outside `--allow-dir`, duplicate and unknown
//!   mountpoints, an oversized body, a client that sends nothing): a
//!   clear 4xx each, and the mount keeps serving.
//!
//! Needs root, /dev/fuse and the fixtures (like `named_images.rs`); the
//! store test needs mkfs.erofs 1.9 (`scripts/sid-tools.sh erofs`).

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::fixtures::fixture_image;
use common::frontend::{Frontend, FrontendOptions};
use common::fuse_client::{walk_from, FuseClient, ROOT_ID};
use common::fusemount::wait_for;
use common::fusemount::FuseMount;
use common::manifest::sha256_file;
use common::mkfs::mkfs_19;
use common::{assert_manifests_eq, load_expected, walk_manifest};
use serde_json::Value;

/// A reply: status and body.
#[derive(Debug)]
struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `code` of an error body.
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 request on the unix socket `sock` (the server closes the
/// connection after each reply).
fn request(sock: &Path, method: &str, target: &str, body: &[u8]) -> Resp {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {sock:?}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
         Content-Type: application/json\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    // A server refusing the body (413 on its declared length) may close
    // before taking it all: its reply is still there to read.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read reply");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Resp { status, body }
}

fn mount_body(source: &Path, devices: &[PathBuf]) -> Vec<u8> {
    let config = serde_json::json!({ "devices": devices }).to_string();
    serde_json::json!({ "source": source, "fs_type": "erofs", "config": config })
        .to_string()
        .into_bytes()
}

fn add(sock: &Path, name: &str, source: &Path, devices: &[PathBuf]) -> Resp {
    request(
        sock,
        "POST",
        &format!("/api/v1/mount?mountpoint=/{name}"),
        &mount_body(source, devices),
    )
}

fn remove(sock: &Path, name: &str) -> Resp {
    request(
        sock,
        "DELETE",
        &format!("/api/v1/mount?mountpoint=/{name}"),
        b"",
    )
}

fn metrics(sock: &Path) -> Value {
    let r = request(sock, "GET", "/api/v1/metrics", b"");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The READ requests and served bytes of image `name` in a metrics
/// snapshot.
fn reads_of(m: &Value, name: &str) -> (u64, u64) {
    let img = &m["images"][name]["requests"];
    (
        op_requests(img, "READ"),
        img["served_bytes"].as_u64().unwrap_or(0),
    )
}

/// Requests of opcode `name` in a metrics snapshot's `requests` object.
fn op_requests(requests: &Value, name: &str) -> u64 {
    requests["opcodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["name"] == name)
        .map_or(0, |o| o["requests"].as_u64().unwrap_or(0))
}

/// Sum of the sizes of the regular files of a manifest.
fn file_bytes(entries: &[common::Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.kind() == "reg")
        .map(|e| e.get("size").and_then(Value::as_u64).unwrap_or(0))
        .sum()
}

/// A directory for `--allow-dir` holding copies of fixture images (and
/// their blobs) as `NAME.erofs`.
fn allow_dir(fixtures: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in fixtures {
        let fx = fixture_image(f);
        fs::copy(&fx.image, dir.path().join(format!("{f}.erofs"))).expect("copy image");
        if let Some(b) = &fx.blob {
            fs::copy(b, dir.path().join(format!("{f}.blob"))).expect("copy blob");
        }
    }
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("list")
        .map(|d| d.expect("dirent").file_name().into_string().expect("UTF-8"))
        .collect()
}

fn mount_with_api(allow: &Path, sock: &Path) -> FuseMount {
    // Zero timeouts and direct I/O: every read of the test reaches the
    // daemon, so the metrics count exactly what was read.
    let args: Vec<OsString> = vec![
        "--api-socket".into(),
        sock.into(),
        "--allow-dir".into(),
        allow.into(),
        "--cache".into(),
        "never".into(),
    ];
    FuseMount::named(&args)
}

#[test]
fn test_images_added_and_removed_through_the_api_of_a_local_mount() {
    common::assert_kernel_erofs();
    const LZ4: &str = "edge_lz4";
    const BLOBDEV: &str = "edge_chunk4k-b512-blobdev";
    let allow = allow_dir(&[LZ4, BLOBDEV]);
    let sock = allow.path().join("api.sock");
    let mount = mount_with_api(allow.path(), &sock);
    let root = mount.path();
    assert!(listing(root).is_empty(), "started with no image");

    let r = request(&sock, "GET", "/api/v1/daemon", b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "RUNNING");

    let img = |f: &str| allow.path().join(format!("{f}.erofs"));
    let blob = allow.path().join(format!("{BLOBDEV}.blob"));
    let r = add(&sock, "lz4", &img(LZ4), &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = add(&sock, "blobdev", &img(BLOBDEV), std::slice::from_ref(&blob));
    assert_eq!(r.status, 204, "{}", r.body);
    // The root is never cached: the names show without a remount.
    assert_eq!(listing(root), ["lz4", "blobdev"]);

    // The daemon reports both, with their options.
    let d = request(&sock, "GET", "/api/v1/daemon", b"").json();
    let coll = &d["backend_collection"];
    assert_eq!(coll["/lz4"]["source"], img(LZ4).to_str().unwrap());
    assert_eq!(
        coll["/blobdev"]["config"]["devices"][0],
        blob.to_str().unwrap()
    );

    // Each reads bit-exact (contents are hashed by the walk).
    let before = metrics(&sock);
    let mut expected = Vec::new();
    for (name, fx) in [("lz4", LZ4), ("blobdev", BLOBDEV)] {
        let want = load_expected(fx);
        assert_manifests_eq(
            &format!("/{name} added through the API vs the manifest of {fx}"),
            &want,
            &walk_manifest(&root.join(name)),
        );
        expected.push((name, file_bytes(&want)));
    }
    // The metrics counted those reads, per image (direct I/O: every byte
    // read once by the walk reached the daemon).
    let after = metrics(&sock);
    for (name, bytes) in &expected {
        let (r0, b0) = reads_of(&before, name);
        let (r1, b1) = reads_of(&after, name);
        assert!(r1 > r0, "/{name}: READ requests {r0} -> {r1}");
        assert_eq!(b1 - b0, *bytes, "/{name}: served bytes");
    }
    let cache = &after["images"]["lz4"]["extent_cache"];
    assert!(
        cache["misses"].as_u64().unwrap_or(0) > 0,
        "lz4 decodes: {cache}"
    );
    let prom = request(&sock, "GET", "/metrics", b"");
    assert_eq!(prom.status, 200);
    assert!(
        prom.body
            .contains("erofs_virtiofsd_image_served_bytes_total{image=\"lz4\"}"),
        "{}",
        prom.body
    );

    // A file of /lz4 held open across the removal keeps reading.
    let held_path = walk_first_file(&root.join("lz4"));
    let want_hash = sha256_file(&held_path);
    let mut held = fs::File::open(&held_path).expect("open a file of /lz4");
    let r = remove(&sock, "lz4");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(listing(root), ["blobdev"]);
    assert_eq!(
        fs::metadata(root.join("lz4"))
            .map_err(|e| e.raw_os_error())
            .err(),
        Some(Some(libc::ENOENT))
    );
    let mut data = Vec::new();
    held.read_to_end(&mut data).expect("read the held file");
    assert_eq!(sha256_hex(&data), want_hash, "the held file's contents");
    drop(held);
    let m = metrics(&sock);
    assert!(m["images"].get("lz4").is_none(), "{}", m["images"]);
    assert!(m["images"].get("blobdev").is_some());
    // Removed twice: 404.
    assert_eq!(remove(&sock, "lz4").status, 404);

    assert!(
        !mount.stderr_text().contains("panicked"),
        "{}",
        mount.stderr_text()
    );
    mount.finish("API on a local mount");
    assert!(!sock.exists(), "the API socket is removed on exit");
}

/// Deterministic bytes (a xorshift stream), `len` of them.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn test_metrics_count_the_content_store() {
    // Two trees sharing one file (under another name), each with one file
    // of its own; image a uncompressed, image b lz4hc; one domain.
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("store dir");
    let common_data = noise(1, 300_000);
    let (own_a, own_b) = (noise(2, 70_000), noise(3, 5_000));
    let files: [(&str, &str, &[u8]); 4] = [
        ("a", "lib/common.bin", &common_data),
        ("a", "own-a", &own_a),
        ("b", "usr/common.bin", &common_data),
        ("b", "own-b", &own_b),
    ];
    for (img, name, data) in files {
        let p = tmp.path().join(format!("tree-{img}")).join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    let ia = mkfs_19(
        &tmp.path().join("tree-a"),
        &tmp.path().join("a.erofs"),
        &["--xattr-inode-digest"],
    );
    let ib = mkfs_19(
        &tmp.path().join("tree-b"),
        &tmp.path().join("b.erofs"),
        &["-zlz4hc", "--xattr-inode-digest"],
    );
    let sock = tmp.path().join("api.sock");
    let image = |n: &str, p: &Path| -> [OsString; 2] {
        let mut v = OsString::from(format!("{n}="));
        v.push(p);
        ["--image".into(), v]
    };
    let mut args: Vec<OsString> = Vec::new();
    args.extend(image("a", &ia));
    args.extend(image("b", &ib));
    args.extend([
        "--domain".into(),
        "team".into(),
        "--store".into(),
        store.path().into(),
        "--api-socket".into(),
        sock.clone().into_os_string(),
    ]);
    let mount = FuseMount::named(&args);
    let root = mount.path();

    // Nothing read yet: the domain is there, with nothing in it.
    let m0 = wait_api(&sock, || request(&sock, "GET", "/api/v1/metrics", b"")).json();
    let st = &m0["store"];
    for k in [
        "entries",
        "shared_bytes",
        "loads",
        "hits",
        "verification_failures",
    ] {
        assert_eq!(u(&st[k]), 0, "{k} before any read: {st}");
    }
    assert_eq!(u(&st["domains"]["team"]["entries"]), 0, "{st}");

    let read_all = || {
        for (img, name, data) in files {
            let got = fs::read(root.join(img).join(name)).expect("read");
            assert!(got == data, "/{img}/{name} differs");
        }
    };
    // The first reads are answered from the images and queue the loads
    // (three contents: the common one once); later reads are answered
    // from the entries (READs or passthrough opens), once each image's
    // copy of the common content is verified against its entry.
    read_all();
    let mut last = Value::Null;
    let settled = wait_for(Duration::from_secs(60), || {
        read_all();
        last = metrics(&sock);
        let st = &last["store"];
        u(&st["loads"]) >= 3 && u(&st["hits"]) >= 4
    });
    assert!(settled, "the store counters never moved: {}", last["store"]);

    let st = &last["store"];
    let bytes = (common_data.len() + own_a.len() + own_b.len()) as u64;
    assert_eq!(u(&st["loads"]), 3, "each content loaded once: {st}");
    assert_eq!(u(&st["entries"]), 3, "{st}");
    assert_eq!(u(&st["shared_bytes"]), bytes, "{st}");
    assert_eq!(u(&st["verification_failures"]), 0, "{st}");
    assert_eq!(u(&st["evictions"]), 0, "{st}");
    assert!(u(&st["passthrough_opens"]) <= u(&st["hits"]), "{st}");
    let team = &st["domains"]["team"];
    assert_eq!(u(&team["entries"]), 3, "{team}");
    assert_eq!(u(&team["bytes"]), bytes, "{team}");
    assert_eq!(u(&team["loads"]), 3, "{team}");
    // (The store's own hits count lookups that found an entry stored: here
    // the process had each entry open already, so it need not look.)
    let _ = u(&team["hits"]);
    assert_eq!(st["domains"].as_object().map(|o| o.len()), Some(1), "{st}");

    // The same in the Prometheus text.
    let prom = request(&sock, "GET", "/metrics", b"");
    assert_eq!(prom.status, 200);
    for line in [
        "erofs_virtiofsd_store_entries 3".to_owned(),
        format!("erofs_virtiofsd_store_shared_bytes {bytes}"),
        "erofs_virtiofsd_store_loads_total 3".to_owned(),
        "erofs_virtiofsd_store_domain_entries{domain=\"team\"} 3".to_owned(),
        "erofs_virtiofsd_store_domain_loads_total{domain=\"team\"} 3".to_owned(),
    ] {
        assert!(
            prom.body.lines().any(|l| l == line),
            "no line {line:?} in\n{}",
            prom.body
        );
    }
    let hits_line = prom
        .body
        .lines()
        .find(|l| l.starts_with("erofs_virtiofsd_store_hits_total "))
        .expect("store_hits_total");
    let hits: u64 = hits_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(hits >= 4, "{hits_line}");

    assert!(
        !mount.stderr_text().contains("panicked"),
        "{}",
        mount.stderr_text()
    );
    mount.finish("store metrics");
}

/// The first regular file under `dir` (depth first, sorted), not empty.
fn walk_first_file(dir: &Path) -> PathBuf {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|d| d.expect("dirent").path())
        .collect();
    names.sort();
    for p in &names {
        let md = fs::symlink_metadata(p).expect("lstat");
        if md.is_file() && md.len() > 0 {
            return p.clone();
        }
    }
    for p in names {
        if fs::symlink_metadata(&p).expect("lstat").is_dir() {
            let found = walk_first_file(&p);
            if !found.as_os_str().is_empty() {
                return found;
            }
        }
    }
    PathBuf::new()
}

fn sha256_hex(data: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("data");
    fs::write(&p, data).expect("write");
    sha256_file(&p)
}

#[test]
fn test_bad_api_input_gets_4xx_and_the_mount_keeps_serving() {
    common::assert_kernel_erofs();
    const PLAIN: &str = "edge_plain-b4096";
    let allow = allow_dir(&[PLAIN]);
    let not_erofs = allow.path().join("not-erofs.img");
    fs::write(&not_erofs, vec![0x5au8; 8192]).expect("write junk");
    let sock = allow.path().join("api.sock");
    let mount = mount_with_api(allow.path(), &sock);
    let root = mount.path();
    let img = allow.path().join(format!("{PLAIN}.erofs"));
    assert_eq!(add(&sock, "plain", &img, &[]).status, 204);

    // A client that connects and sends nothing: others are still served
    // while it waits (its connection is closed after the read timeout).
    let mut idle = UnixStream::connect(&sock).expect("idle client");

    let mp = "/api/v1/mount?mountpoint=/x";
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "bad JSON",
            mp.into(),
            b"{not json".to_vec(),
            400,
            "INVALID_BODY",
        ),
        (
            "unknown key",
            mp.into(),
            br#"{"source":"/a","colour":1}"#.to_vec(),
            400,
            "INVALID_BODY",
        ),
        (
            "missing image",
            mp.into(),
            mount_body(&allow.path().join("absent.erofs"), &[]),
            422,
            "UNPROCESSABLE_IMAGE",
        ),
        (
            "not an EROFS image",
            mp.into(),
            mount_body(&not_erofs, &[]),
            422,
            "UNPROCESSABLE_IMAGE",
        ),
        (
            "a directory",
            mp.into(),
            mount_body(allow.path(), &[]),
            422,
            "UNPROCESSABLE_IMAGE",
        ),
        (
            "outside --allow-dir",
            mp.into(),
            mount_body(&fixture_image(PLAIN).image, &[]),
            422,
            "UNPROCESSABLE_IMAGE",
        ),
        (
            "'..' in the path",
            mp.into(),
            mount_body(&allow.path().join("../x.erofs"), &[]),
            400,
            "BAD_REQUEST",
        ),
        (
            "a device outside --allow-dir",
            mp.into(),
            mount_body(&img, &[PathBuf::from("/etc/passwd")]),
            422,
            "UNPROCESSABLE_IMAGE",
        ),
        (
            "duplicate mountpoint",
            "/api/v1/mount?mountpoint=/plain".into(),
            mount_body(&img, &[]),
            409,
            "ALREADY_EXISTS",
        ),
        (
            "nested mountpoint",
            "/api/v1/mount?mountpoint=/a/b".into(),
            mount_body(&img, &[]),
            400,
            "INVALID_MOUNTPOINT",
        ),
        (
            "oversized body",
            mp.into(),
            vec![b' '; 1 << 20],
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (what, target, body, status, code) in &cases {
        let r = request(&sock, "POST", target, body);
        assert_eq!((r.status, r.code().as_str()), (*status, *code), "{what}");
        let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(!msg.is_empty(), "{what}: a message");
    }
    let r = remove(&sock, "absent");
    assert_eq!((r.status, r.code().as_str()), (404, "NOT_FOUND"));
    let r = request(&sock, "GET", "/api/v1/nothing", b"");
    assert_eq!(r.status, 404);

    // Nothing was added by the refused requests; the mount still serves.
    assert_eq!(listing(root), ["plain"]);
    assert_manifests_eq(
        "/plain after bad API requests",
        &load_expected(PLAIN),
        &walk_manifest(&root.join("plain")),
    );
    // The idle client is still connected (or already timed out): either
    // way it held up nobody.
    let _ = idle.write_all(b"");
    drop(idle);
    let log = mount.stderr_text();
    assert!(!log.contains("panicked"), "{log}");
    mount.finish("bad API input");
}

#[test]
fn test_serve_with_no_image_gets_one_through_the_api() {
    const PLAIN: &str = "edge_plain-b4096";
    let allow = allow_dir(&[PLAIN]);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let api = dir.path().join("api.sock");
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
    cmd.arg("--socket-path")
        .arg(&socket)
        .arg("--api-socket")
        .arg(&api)
        .arg("--allow-dir")
        .arg(allow.path())
        .args(["--log-level", "debug"]);
    let d = Daemon::spawn(cmd, socket, log, dir);
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &FrontendOptions::default()));
    c.init();
    assert_eq!(c.lookup(ROOT_ID, b"plain").map(drop), Err(libc::ENOENT));
    // The API may come up a moment after the vhost-user socket.
    let img = allow.path().join(format!("{PLAIN}.erofs"));
    let r = wait_api(&api, || add(&api, "plain", &img, &[]));
    assert_eq!(r.status, 204, "{}", r.body);
    let e = c
        .lookup(ROOT_ID, b"plain")
        .expect("LOOKUP of the added image");
    assert_eq!(e.entry_valid, 0, "root entries are not cached");
    assert_manifests_eq(
        "/plain added through the API, over the virtqueues",
        &load_expected(PLAIN),
        &walk_from(&mut c, e.nodeid),
    );
    let (reads, bytes) = reads_of(&metrics(&api), "plain");
    assert!(reads > 0 && bytes == file_bytes(&load_expected(PLAIN)));
    assert_eq!(remove(&api, "plain").status, 204);
    assert_eq!(c.lookup(ROOT_ID, b"plain").map(drop), Err(libc::ENOENT));
    let text = d.log();
    assert!(!text.contains("panicked"), "{text}");
}

/// Runs `f` once the API socket accepts connections.
fn wait_api(sock: &Path, f: impl FnOnce() -> Resp) -> Resp {
    assert!(
        common::fusemount::wait_for(Duration::from_secs(30), || UnixStream::connect(sock)
            .is_ok()),
        "the API socket {} never answered",
        sock.display()
    );
    f()
}

/// An API socket alone (no image with a domain yet) does not agree FUSE
/// passthrough at INIT by default, which would cost every file an OPEN and
/// a RELEASE: reading every file of a mount sends at most the one OPEN
/// that turns opens off. `--passthrough on` asks for it anyway; the files
/// read the same either way.
#[test]
fn test_api_socket_alone_keeps_zero_message_opens() {
    const PLAIN: &str = "edge_plain-b4096";
    let fx = fixture_image(PLAIN);
    let expected = load_expected(PLAIN);
    for (mode, opens_off) in [("auto", true), ("on", false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("api.sock");
        let mut image = OsString::from("a=");
        image.push(&fx.image);
        let args: Vec<OsString> = vec![
            "--image".into(),
            image,
            "--api-socket".into(),
            sock.clone().into_os_string(),
            "--store".into(),
            dir.path().join("store").into_os_string(),
            "--passthrough".into(),
            mode.into(),
        ];
        let mount = FuseMount::named(&args);
        let got = walk_manifest(&mount.path().join("a"));
        assert_manifests_eq(&format!("--passthrough {mode}"), &expected, &got);
        let m = wait_api(&sock, || request(&sock, "GET", "/api/v1/metrics", b"")).json();
        let files = expected.iter().filter(|e| e.kind() == "reg").count() as u64;
        let conn = &m["requests"];
        let (opens, releases) = (op_requests(conn, "OPEN"), op_requests(conn, "RELEASE"));
        if opens_off {
            assert!(
                opens <= 1,
                "--passthrough {mode}: {opens} OPEN for {files} files"
            );
            assert_eq!(releases, 0, "--passthrough {mode}");
        } else {
            // The kernel sends an OPEN per file once passthrough is agreed
            // (a kernel without it agrees to none: then at most one).
            assert!(
                opens >= files || opens <= 1,
                "--passthrough {mode}: {opens} OPEN for {files} files"
            );
        }
        mount.finish(&format!("--passthrough {mode}"));
    }
}
