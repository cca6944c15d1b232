//! The API socket driven over a real unix socket by real HTTP clients
//! (hyper's, curl, and raw streams for misbehaving clients), against a
//! `Control` that checks images the way the daemon does: the file must
//! open and carry the EROFS magic.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use erofs_virtiofsd::api::{
    serve_api, serve_api_with, ApiError, ApiHandle, ApiOptions, ApiSocket, Control, ControlError,
    DaemonState, DaemonStatus, ImageInfo, ImageName, MountSpec,
};
use erofs_virtiofsd::metrics::{Metrics, MetricsSnapshot};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Safety net for reads from the server, so a broken server fails the test
/// instead of hanging it; never used to wait for an event.
const STUCK: Duration = Duration::from_secs(20);

#[derive(Default)]
struct TestControl {
    images: Mutex<BTreeMap<ImageName, MountSpec>>,
    metrics: Metrics,
    reopened: AtomicU64,
    /// When set, `mount` waits for a message on it first.
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

fn check_image(p: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut sb = [0u8; 1028];
    f.read_exact(&mut sb)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if sb[1024..1028] != 0xE0F5_E1E2u32.to_le_bytes() {
        return Err(format!("{}: not an EROFS image", p.display()));
    }
    Ok(())
}

impl Control for TestControl {
    fn daemon(&self) -> DaemonStatus {
        let images = self.images.lock().unwrap();
        DaemonStatus {
            id: Some("test-daemon".into()),
            state: DaemonState::Running,
            images: images
                .iter()
                .map(|(n, s)| ImageInfo {
                    name: Some(n.clone()),
                    source: s.source.clone(),
                    config: s.config.clone(),
                })
                .collect(),
        }
    }

    fn mount(&self, name: &ImageName, spec: MountSpec) -> Result<(), ControlError> {
        if let Some(gate) = self.gate.lock().unwrap().take() {
            gate.recv().unwrap();
        }
        if self.images.lock().unwrap().contains_key(name) {
            return Err(ControlError::AlreadyExists(format!("/{name} is mounted")));
        }
        check_image(&spec.source).map_err(ControlError::Unprocessable)?;
        let m = self.metrics.add_image(name.as_str()).unwrap();
        m.observe_request(15, Duration::from_micros(40), 8192, 0);
        self.images.lock().unwrap().insert(name.clone(), spec);
        Ok(())
    }

    fn umount(&self, name: &ImageName) -> Result<(), ControlError> {
        match self.images.lock().unwrap().remove(name) {
            Some(_) => {
                self.metrics.remove_image(name.as_str());
                Ok(())
            }
            None => Err(ControlError::NotFound(format!("/{name} is not mounted"))),
        }
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    fn reopen_logs(&self) -> Result<(), ControlError> {
        self.reopened.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    control: Arc<TestControl>,
    api: Option<ApiHandle>,
}

impl Fixture {
    fn new(opts: ApiOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let control = Arc::new(TestControl::default());
        let api = serve_api_with(&dir.path().join("api.sock"), control.clone(), opts).unwrap();
        Fixture {
            dir,
            control,
            api: Some(api),
        }
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// An image file: valid (EROFS magic) or not.
    fn image(&self, name: &str, valid: bool) -> PathBuf {
        let mut data = vec![0u8; 4096];
        if valid {
            data[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        }
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn req(&self, method: &str, target: &str, body: &[u8]) -> Resp {
        request(&self.sock(), method, target, body)
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// (status, error code) of an error reply, checking its shape.
    fn error(&self) -> (u16, String) {
        let v = self.json();
        assert_eq!(self.headers["content-type"], "application/json", "{self:?}");
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 2, "{v}");
        assert!(!v["message"].as_str().unwrap().is_empty(), "{v}");
        (self.status, v["code"].as_str().unwrap().to_owned())
    }
}

/// One request with hyper's HTTP/1.1 client over the unix socket.
fn request(sock: &Path, method: &str, target: &str, body: &[u8]) -> Resp {
    try_request(sock, method, target, body).unwrap()
}

fn try_request(sock: &Path, method: &str, target: &str, body: &[u8]) -> Result<Resp, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(sock)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let resp = tokio::time::timeout(STUCK, send.send_request(req))
            .await
            .map_err(|_| "no reply".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    })
}

/// Everything the server sends on a raw stream until it closes it.
fn read_to_close(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(STUCK)).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("server did not close the connection: {e}"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_body(source: &Path, config: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "source": source, "fs_type": "erofs", "config": config,
    }))
    .unwrap()
}

#[test]
fn test_routes_over_socket() {
    let f = Fixture::new(ApiOptions::default());
    let img = f.image("layer.erofs", true);

    let info = f.req("GET", "/api/v1/daemon", b"");
    assert_eq!(info.status, 200);
    assert_eq!(info.headers["content-type"], "application/json");
    let v = info.json();
    assert_eq!(v["state"], "RUNNING");
    assert_eq!(v["id"], "test-daemon");
    assert!(v["version"]["package_ver"].is_string());

    let cfg = r#"{"devices":[],"offset":0,"direct_io":false,"domain":"d"}"#;
    // Kata's runtime-rs percent-encodes the mountpoint; its Go runtime
    // does not: both are the same image.
    let added = f.req(
        "POST",
        "/api/v1/mount?mountpoint=%2Flayer",
        &mount_body(&img, cfg),
    );
    assert_eq!(
        added.status,
        204,
        "{:?}",
        String::from_utf8_lossy(&added.body)
    );
    assert!(added.body.is_empty());
    let dup = f.req(
        "POST",
        "/api/v1/mount?mountpoint=/layer",
        &mount_body(&img, ""),
    );
    assert_eq!(dup.error(), (409, "ALREADY_EXISTS".into()));

    let v = f.req("GET", "/api/v1/daemon", b"").json();
    let b = &v["backend_collection"]["/layer"];
    assert_eq!(b["source"], img.to_str().unwrap());
    assert_eq!(b["config"]["domain"], "d");

    let m = f.req("GET", "/api/v1/metrics", b"");
    assert_eq!(m.status, 200);
    let v = m.json();
    assert_eq!(v["images"]["layer"]["requests"]["served_bytes"], 8192);
    assert_eq!(v["requests"]["opcodes"][0]["name"], "READ");
    let one = f.req("GET", "/api/v1/metrics?id=layer", b"").json();
    assert_eq!(one["requests"]["requests"], 1);

    let prom = f.req("GET", "/metrics", b"");
    assert_eq!(prom.status, 200);
    assert_eq!(
        prom.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(prom.body).unwrap();
    let samples = check_prometheus(&text);
    assert_eq!(samples["erofs_virtiofsd_served_bytes_total"], 8192.0);
    assert_eq!(
        samples["erofs_virtiofsd_image_fuse_requests_total{image=\"layer\",opcode=\"READ\"}"],
        1.0
    );

    let reopen = f.req("PUT", "/api/v1/daemon/logs/reopen", b"");
    assert_eq!(reopen.status, 204);
    assert_eq!(f.control.reopened.load(Ordering::Relaxed), 1);

    let removed = f.req("DELETE", "/api/v1/mount?mountpoint=/layer", b"");
    assert_eq!(removed.status, 204);
    let gone = f.req("DELETE", "/api/v1/mount?mountpoint=/layer", b"");
    assert_eq!(gone.error(), (404, "NOT_FOUND".into()));
    let v = f.req("GET", "/api/v1/daemon", b"").json();
    assert_eq!(v["backend_collection"], serde_json::json!({}));
}

#[test]
fn test_bad_requests_get_4xx_and_server_keeps_serving() {
    let f = Fixture::new(ApiOptions::default());
    let good = f.image("good.erofs", true);
    let bad = f.image("bad.img", false);
    let missing = f.dir.path().join("missing.erofs");
    let mp = "/api/v1/mount?mountpoint=/x";
    // (method, target, body, status, code, part of the message)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/nope", vec![], 404, "NO_ROUTE", "/nope"),
        (
            "PATCH",
            "/api/v1/daemon",
            vec![],
            405,
            "METHOD_NOT_ALLOWED",
            "GET",
        ),
        (
            "POST",
            mp,
            b"{not json".to_vec(),
            400,
            "INVALID_BODY",
            "body",
        ),
        ("POST", mp, b"".to_vec(), 400, "INVALID_BODY", "body"),
        (
            "POST",
            mp,
            mount_body(&good, r#"{"offset":0,"mode":"cached","prefetch":true}"#),
            400,
            "INVALID_BODY",
            "unknown keys \"mode\", \"prefetch\"",
        ),
        (
            "POST",
            mp,
            br#"{"source":"/a","fs_type":"rafs","config":""}"#.to_vec(),
            400,
            "UNSUPPORTED_FS_TYPE",
            "rafs",
        ),
        (
            "POST",
            mp,
            mount_body(&bad, ""),
            422,
            "UNPROCESSABLE_IMAGE",
            "not an EROFS image",
        ),
        (
            "POST",
            mp,
            mount_body(&missing, ""),
            422,
            "UNPROCESSABLE_IMAGE",
            "missing.erofs",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/rafs/c1/lowerdir",
            mount_body(&good, ""),
            400,
            "INVALID_MOUNTPOINT",
            "nested",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/..",
            mount_body(&good, ""),
            400,
            "INVALID_MOUNTPOINT",
            "reserved",
        ),
        (
            "POST",
            "/api/v1/mount",
            mount_body(&good, ""),
            400,
            "BAD_QUERY",
            "mountpoint",
        ),
        (
            "DELETE",
            "/api/v1/mount?mountpoint=/never",
            vec![],
            404,
            "NOT_FOUND",
            "/never",
        ),
    ];
    for (method, target, body, status, code, needle) in cases {
        let r = f.req(method, target, &body);
        assert_eq!(r.error(), (status, code.to_owned()), "{method} {target}");
        let msg = r.json()["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{method} {target}: {msg}");
    }
    let r = f.req("DELETE", "/api/v1/daemon", b"");
    assert_eq!(r.headers["allow"], "GET");

    let ok = f.req("POST", mp, &mount_body(&good, ""));
    assert_eq!(ok.status, 204);
}

#[test]
fn test_oversized_body_413() {
    let f = Fixture::new(ApiOptions {
        max_body_bytes: 1024,
        ..Default::default()
    });
    let good = f.image("good.erofs", true);
    let mut big = mount_body(&good, "");
    big.truncate(big.len() - 1);
    big.extend(std::iter::repeat_n(b' ', 2048));
    big.push(b'}');

    // Declared length over the limit.
    let r = f.req("POST", "/api/v1/mount?mountpoint=/x", &big);
    assert_eq!(r.error(), (413, "PAYLOAD_TOO_LARGE".into()));

    // Chunked, no declared length: caught while reading.
    let mut s = UnixStream::connect(f.sock()).unwrap();
    let head = "POST /api/v1/mount?mountpoint=/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before the last chunks: later
    // writes can fail, the reply is still there to read.
    for _ in 0..4 {
        let chunk = format!("200\r\n{}\r\n", " ".repeat(512));
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let reply = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(reply.contains("PAYLOAD_TOO_LARGE"), "{reply}");

    // A head over the limit.
    let long = format!("/api/v1/daemon?{}", "a".repeat(20 * 1024));
    let mut s = UnixStream::connect(f.sock()).unwrap();
    let _ = s.write_all(format!("GET {long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let reply = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");

    assert_eq!(
        f.req(
            "POST",
            "/api/v1/mount?mountpoint=/x",
            &mount_body(&good, "")
        )
        .status,
        204
    );
}

#[test]
fn test_slow_client_closed_while_others_served() {
    let f = Fixture::new(ApiOptions {
        read_timeout: Duration::from_millis(300),
        ..Default::default()
    });

    // Half a head, then nothing.
    let mut slow = UnixStream::connect(f.sock()).unwrap();
    slow.write_all(b"GET /api/v1/daemon HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Served while the slow client holds its connection.
    assert_eq!(f.req("GET", "/api/v1/daemon", b"").status, 200);
    let reply = read_to_close(&mut slow);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408 "),
        "{reply}"
    );

    // A full head, then half a body: 408.
    let mut slow = UnixStream::connect(f.sock()).unwrap();
    slow.write_all(
        b"POST /api/v1/mount?mountpoint=/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"source\"",
    )
    .unwrap();
    assert_eq!(f.req("GET", "/metrics", b"").status, 200);
    let reply = read_to_close(&mut slow);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(reply.contains("REQUEST_TIMEOUT"), "{reply}");

    assert_eq!(f.req("GET", "/api/v1/daemon", b"").status, 200);
}

#[test]
fn test_too_many_connections_busy_then_closed() {
    let f = Fixture::new(ApiOptions {
        max_connections: 2,
        read_timeout: Duration::from_secs(60),
        ..Default::default()
    });

    // Two idle connections take both slots (the server accepts in order).
    let idle: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(f.sock()).unwrap())
        .collect();
    let busy = f.req("GET", "/api/v1/daemon", b"");
    assert_eq!(busy.error(), (503, "BUSY".into()));

    // Four more idle ones fill the 503 slots; the next is closed unread.
    let more: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(f.sock()).unwrap())
        .collect();
    let mut last = UnixStream::connect(f.sock()).unwrap();
    let _ = last.write_all(b"GET /api/v1/daemon HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_to_close(&mut last), "");

    // Hanging up frees the slots: the server sees each close as an event,
    // so a later request is served (bounded retries, no sleeps).
    drop(idle);
    drop(more);
    let served = (0..200).any(|_| {
        try_request(&f.sock(), "GET", "/api/v1/daemon", b"").is_ok_and(|r| r.status == 200)
    });
    assert!(served, "slots never freed");
}

#[test]
fn test_slow_control_call_does_not_block_other_requests() {
    let f = Fixture::new(ApiOptions::default());
    let good = f.image("good.erofs", true);
    let (release, gate) = mpsc::channel();
    *f.control.gate.lock().unwrap() = Some(gate);

    let sock = f.sock();
    let body = mount_body(&good, "");
    let mounting =
        std::thread::spawn(move || request(&sock, "POST", "/api/v1/mount?mountpoint=/x", &body));

    // The mount is parked in the Control; reads still get answers.
    assert_eq!(f.req("GET", "/api/v1/daemon", b"").status, 200);
    assert_eq!(f.req("GET", "/metrics", b"").status, 200);
    release.send(()).unwrap();
    assert_eq!(mounting.join().unwrap().status, 204);
}

#[test]
fn test_socket_stale_replaced_live_refused_file_kept() {
    let dir = tempfile::tempdir().unwrap();
    let control: Arc<dyn Control> = Arc::new(TestControl::default());

    // Stale: a socket file nobody listens on.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let api = serve_api(&stale, control.clone()).unwrap();
    assert_eq!(request(&stale, "GET", "/api/v1/daemon", b"").status, 200);
    let mode = std::fs::metadata(&stale).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Live: refused, and the live server keeps its socket.
    let e = serve_api(&stale, control.clone()).unwrap_err();
    assert!(matches!(e, ApiError::InUse { .. }), "{e}");
    assert_eq!(request(&stale, "GET", "/api/v1/daemon", b"").status, 200);

    // Not a socket: refused and left alone.
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    let e = serve_api(&file, control.clone()).unwrap_err();
    assert!(matches!(e, ApiError::NotASocket { .. }), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // Dropping the handle stops the server and removes the socket.
    api.shutdown();
    assert!(!stale.exists());
    let e = serve_api(&dir.path().join("no/such/dir.sock"), control).unwrap_err();
    assert!(matches!(e, ApiError::Socket { .. }), "{e}");
}

/// Bound before a sandbox, served after: the socket listens from the
/// bind on (a client may connect before serving starts), and one dropped
/// unserved removes its file.
#[test]
fn test_socket_bound_then_served_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let control: Arc<dyn Control> = Arc::new(TestControl::default());
    let path = dir.path().join("api.sock");

    let bound = ApiSocket::bind(&path).unwrap();
    assert_eq!(bound.path(), path);
    let early = UnixStream::connect(&path).expect("listening once bound");
    let api = bound.serve(control.clone(), ApiOptions::default()).unwrap();
    drop(early);
    assert_eq!(request(&path, "GET", "/api/v1/daemon", b"").status, 200);
    api.shutdown();
    assert!(!path.exists());

    drop(ApiSocket::bind(&path).unwrap());
    assert!(!path.exists(), "an unserved socket removes its file");
}

#[test]
fn test_drop_keeps_a_socket_that_replaced_ours() {
    let mut f = Fixture::new(ApiOptions::default());
    let sock = f.sock();
    std::fs::remove_file(&sock).unwrap();
    let other = UnixListener::bind(&sock).unwrap();

    drop(f.api.take());

    assert!(sock.exists());
    drop(other);
}

/// The curl lines of docs/api.md, run as written (curl must be installed;
/// scripts/setup.sh does).
#[test]
fn test_curl_examples_from_docs() {
    let f = Fixture::new(ApiOptions::default());
    let img = f.image("layer1.erofs", true);
    let sock = f.sock();
    let curl = |args: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--unix-socket"])
            .arg(&sock)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl is needed (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };

    let body = format!(
        r#"{{"source": "{}", "fs_type": "erofs", "config": "{{\"direct_io\": false}}"}}"#,
        img.display()
    );
    let (code, _) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        "http://localhost/api/v1/mount?mountpoint=/layer1",
    ]);
    assert_eq!(code, "204");
    let (code, body) = curl(&["http://localhost/api/v1/daemon"]);
    assert_eq!(code, "200");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["backend_collection"]["/layer1"]["mountpoint"], "/layer1");
    let (code, body) = curl(&["http://localhost/metrics"]);
    assert_eq!(code, "200");
    check_prometheus(&body);
    let (code, body) = curl(&["http://localhost/api/v1/metrics"]);
    assert_eq!(code, "200");
    serde_json::from_str::<Value>(&body).unwrap();
    let (code, _) = curl(&["-X", "PUT", "http://localhost/api/v1/daemon/logs/reopen"]);
    assert_eq!(code, "204");
    let (code, _) = curl(&[
        "-X",
        "DELETE",
        "http://localhost/api/v1/mount?mountpoint=/layer1",
    ]);
    assert_eq!(code, "204");
    let (code, body) = curl(&[
        "-X",
        "DELETE",
        "http://localhost/api/v1/mount?mountpoint=/layer1",
    ]);
    assert_eq!(code, "404");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "NOT_FOUND");
}

/// Checks the Prometheus text format line by line (`# HELP`, then `# TYPE`,
/// then samples of that family) and returns the samples.
fn check_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut family: Option<(String, String)> = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    let mut last_help: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "{line}");
            assert!(seen.insert(name.to_owned()), "family twice: {line}");
            last_help = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(
                last_help.as_deref(),
                Some(name),
                "TYPE without HELP: {line}"
            );
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            family = Some((name.to_owned(), kind.to_owned()));
        } else {
            let (fam, kind) = family.as_ref().expect("sample before any TYPE");
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = series.split('{').next().unwrap();
            let suffix = name
                .strip_prefix(fam.as_str())
                .unwrap_or_else(|| panic!("sample {name} outside family {fam}: {line}"));
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"].contains(&suffix),
                _ => suffix.is_empty(),
            };
            assert!(ok, "{line}");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "dup: {line}"
            );
        }
    }
    assert!(text.ends_with('\n'));
    samples
}
