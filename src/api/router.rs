//! Requests to replies, after HTTP parsing: method, target (path and
//! query) and body in, status, content type and body out. No I/O of its
//! own; what it changes, it changes through [`Control`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use log::{debug, info, warn};
use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::types::{BodyError, BuildInfo, DaemonState, ImageConfig, ImageName, MountSpec, FS_TYPE};
use super::{Control, ControlError, ErrorBody};
use crate::metrics::prometheus;

/// `Content-Type` of JSON replies.
pub const JSON: &str = "application/json";

/// Longest query string taken apart, in bytes.
const MAX_QUERY: usize = 8192;

/// A reply, before HTTP encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` (ignored when the body is empty).
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    /// No content (204).
    pub fn empty() -> Self {
        Reply {
            status: 204,
            content_type: JSON,
            body: Vec::new(),
            allow: None,
        }
    }

    /// A JSON body.
    pub fn json<T: Serialize>(status: u16, v: &T) -> Self {
        match serde_json::to_vec(v) {
            Ok(body) => Reply {
                status,
                content_type: JSON,
                body,
                allow: None,
            },
            Err(e) => Reply::error(500, "INTERNAL", &format!("cannot encode the reply: {e}")),
        }
    }

    /// An error: `{"code": code, "message": message}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        // Two strings always serialise; the fallback is for form's sake.
        let body = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        Reply {
            status,
            content_type: JSON,
            body,
            allow: None,
        }
    }

    fn control(e: &ControlError) -> Self {
        Reply::error(e.status(), e.code(), &e.to_string())
    }
}

/// The routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Daemon,
    Mount,
    Metrics,
    Prometheus,
    ReopenLogs,
}

impl Route {
    fn of(path: &str) -> Option<Self> {
        Some(match path {
            "/api/v1/daemon" => Route::Daemon,
            "/api/v1/mount" => Route::Mount,
            "/api/v1/metrics" => Route::Metrics,
            "/metrics" => Route::Prometheus,
            "/api/v1/daemon/logs/reopen" => Route::ReopenLogs,
            _ => return None,
        })
    }

    /// Methods, as in an `Allow` header.
    fn allow(self) -> &'static str {
        match self {
            Route::Daemon | Route::Metrics | Route::Prometheus => "GET",
            Route::Mount => "POST, DELETE",
            Route::ReopenLogs => "PUT",
        }
    }

    fn query_keys(self) -> &'static [&'static str] {
        match self {
            Route::Mount => &["mountpoint"],
            Route::Metrics => &["id"],
            _ => &[],
        }
    }
}

/// Splits a query string into decoded keys and values. Keys must be known
/// and given once; values are percent-decoded UTF-8 (`+` stays `+`).
fn parse_query(q: &str, known: &[&str]) -> Result<BTreeMap<String, String>, String> {
    if q.len() > MAX_QUERY {
        return Err(format!("query string longer than {MAX_QUERY} bytes"));
    }
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| format!("query part {s:?} is not UTF-8 once decoded"))
    };
    let mut out = BTreeMap::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = decode(k)?;
        if !known.contains(&k.as_str()) {
            return Err(if known.is_empty() {
                format!("unknown query parameter {k:?} (this route takes none)")
            } else {
                format!(
                    "unknown query parameter {k:?} (known: {})",
                    known.join(", ")
                )
            });
        }
        let v = decode(v)?;
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("query parameter {k:?} given twice"));
        }
    }
    Ok(out)
}

/// `GET /api/v1/daemon`, in nydusd's shape.
#[derive(Serialize)]
struct DaemonInfoWire {
    version: BuildInfo,
    id: Option<String>,
    supervisor: Option<String>,
    state: DaemonState,
    backend_collection: BTreeMap<String, BackendWire>,
}

/// One image in `backend_collection`, keyed by its mountpoint.
#[derive(Serialize)]
struct BackendWire {
    backend_type: &'static str,
    mountpoint: String,
    source: String,
    config: ConfigWire,
}

/// [`ImageConfig`] with paths as (lossy) strings.
#[derive(Serialize)]
struct ConfigWire {
    devices: Vec<String>,
    offset: u64,
    direct_io: bool,
    domain: Option<String>,
}

impl From<&ImageConfig> for ConfigWire {
    fn from(c: &ImageConfig) -> Self {
        ConfigWire {
            devices: c
                .devices
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect(),
            offset: c.offset,
            direct_io: c.direct_io,
            domain: c.domain.clone(),
        }
    }
}

/// Routes requests to a [`Control`]. Mounts, unmounts and log reopening
/// are run one at a time; the rest run concurrently with them.
pub struct Router {
    control: Arc<dyn Control>,
    changes: Mutex<()>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `control`.
    pub fn new(control: Arc<dyn Control>) -> Self {
        Router {
            control,
            changes: Mutex::new(()),
        }
    }

    /// Answers one request. `target` is the request target's path and
    /// query (`/api/v1/mount?mountpoint=/a`).
    pub fn handle(&self, method: &str, target: &str, body: &[u8]) -> Reply {
        let reply = self.route(method, target, body);
        if reply.status >= 500 {
            warn!(
                "API {method} {target}: {}",
                String::from_utf8_lossy(&reply.body)
            );
        } else {
            debug!("API {method} {target}: {}", reply.status);
        }
        reply
    }

    fn route(&self, method: &str, target: &str, body: &[u8]) -> Reply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some(route) = Route::of(path) else {
            return Reply::error(404, "NO_ROUTE", &format!("no such route: {path}"));
        };
        let allowed = route.allow().split(", ").any(|m| m == method);
        if !allowed {
            let mut r = Reply::error(
                405,
                "METHOD_NOT_ALLOWED",
                &format!("{path} takes {}, not {method}", route.allow()),
            );
            r.allow = Some(route.allow());
            return r;
        }
        let query = match parse_query(query, route.query_keys()) {
            Ok(q) => q,
            Err(e) => return Reply::error(400, "BAD_QUERY", &e),
        };
        let takes_body = route == Route::Mount && method == "POST";
        if !takes_body && !body.is_empty() {
            return Reply::error(
                400,
                "UNEXPECTED_BODY",
                &format!("{method} {path} takes no body"),
            );
        }
        match route {
            Route::Daemon => self.daemon(),
            Route::Mount => self.mount(method, &query, body),
            Route::Metrics => self.metrics(query.get("id").map(String::as_str)),
            Route::Prometheus => Reply {
                status: 200,
                content_type: prometheus::CONTENT_TYPE,
                body: self.control.metrics().to_prometheus().into_bytes(),
                allow: None,
            },
            Route::ReopenLogs => {
                let _one = self.changes.lock().unwrap_or_else(|e| e.into_inner());
                match self.control.reopen_logs() {
                    Ok(()) => Reply::empty(),
                    Err(e) => Reply::control(&e),
                }
            }
        }
    }

    fn daemon(&self) -> Reply {
        let st = self.control.daemon();
        let backend_collection = st
            .images
            .iter()
            .map(|i| {
                let mountpoint = i
                    .name
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), ImageName::mountpoint);
                let b = BackendWire {
                    backend_type: FS_TYPE,
                    mountpoint: mountpoint.clone(),
                    source: i.source.to_string_lossy().into_owned(),
                    config: ConfigWire::from(&i.config),
                };
                (mountpoint, b)
            })
            .collect();
        Reply::json(
            200,
            &DaemonInfoWire {
                version: BuildInfo::current(),
                id: st.id,
                supervisor: None,
                state: st.state,
                backend_collection,
            },
        )
    }

    fn mount(&self, method: &str, query: &BTreeMap<String, String>, body: &[u8]) -> Reply {
        let Some(mountpoint) = query.get("mountpoint") else {
            return Reply::error(
                400,
                "BAD_QUERY",
                "missing query parameter mountpoint (give ?mountpoint=/NAME)",
            );
        };
        let name = match ImageName::from_mountpoint(mountpoint) {
            Ok(n) => n,
            Err(e) => return Reply::error(400, "INVALID_MOUNTPOINT", &e),
        };
        if method == "DELETE" {
            let _one = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            return match self.control.umount(&name) {
                Ok(()) => {
                    info!("API: image {name} removed");
                    Reply::empty()
                }
                Err(e) => Reply::control(&e),
            };
        }
        let spec = match MountSpec::parse_body(body) {
            Ok(s) => s,
            Err(e @ BodyError::UnsupportedFsType(_)) => {
                return Reply::error(400, "UNSUPPORTED_FS_TYPE", &e.to_string())
            }
            Err(e @ BodyError::Invalid(_)) => {
                return Reply::error(400, "INVALID_BODY", &e.to_string())
            }
        };
        let source = spec.source.clone();
        let _one = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        match self.control.mount(&name, spec) {
            Ok(()) => {
                info!("API: image {name} added from {}", source.display());
                Reply::empty()
            }
            Err(e) => Reply::control(&e),
        }
    }

    fn metrics(&self, id: Option<&str>) -> Reply {
        let snap = self.control.metrics();
        let Some(id) = id else {
            return Reply::json(200, &snap);
        };
        if let Err(e) = ImageName::new(id) {
            return Reply::error(400, "BAD_QUERY", &e);
        }
        match snap.images.get(id) {
            Some(img) => Reply::json(200, img),
            None => Reply::error(404, "NOT_FOUND", &format!("no image named {id:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_query_table() {
        let ok = [
            ("", vec![]),
            ("mountpoint=/a", vec![("mountpoint", "/a")]),
            ("mountpoint=%2Fa%20b", vec![("mountpoint", "/a b")]),
            ("mountpoint=/a+b", vec![("mountpoint", "/a+b")]),
            ("&mountpoint=/x&", vec![("mountpoint", "/x")]),
            ("mountpoint", vec![("mountpoint", "")]),
        ];
        for (q, want) in ok {
            let got = parse_query(q, &["mountpoint"]).unwrap();
            let got: Vec<(&str, &str)> =
                got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(got, want, "{q}");
        }
        let bad = [
            ("id=1", "unknown query parameter \"id\""),
            ("mountpoint=/a&mountpoint=/b", "given twice"),
            ("mountpoint=%FF", "not UTF-8"),
        ];
        for (q, want) in bad {
            let e = parse_query(q, &["mountpoint"]).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
        let e = parse_query("x=1", &[]).unwrap_err();
        assert!(e.contains("takes none"), "{e}");
    }
    use crate::api::testutil::{fuzz_api, FakeControl, FAKE_MAX_IMAGES};
    use serde_json::Value;

    fn router() -> (Router, Arc<FakeControl>) {
        let fake = Arc::new(FakeControl::default());
        (Router::new(fake.clone()), fake)
    }

    fn code(r: &Reply) -> String {
        let e: ErrorBody = serde_json::from_slice(&r.body).unwrap();
        e.code
    }

    const MOUNT_A: &[u8] =
        br#"{"source":"/img/a.erofs","fs_type":"erofs","config":"{\"offset\":0}"}"#;

    #[test]
    fn test_route_errors_table() {
        let (r, _) = router();
        r.handle("POST", "/api/v1/mount?mountpoint=/a", MOUNT_A);
        let long = format!("/api/v1/mount?mountpoint=/{}", "x".repeat(256));
        let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
            ("GET", "/", b"", 404, "NO_ROUTE"),
            ("GET", "/api/v1/daemon/", b"", 404, "NO_ROUTE"),
            ("GET", "/api/v2/daemon", b"", 404, "NO_ROUTE"),
            ("POST", "/api/v1/daemon", b"", 405, "METHOD_NOT_ALLOWED"),
            (
                "PUT",
                "/api/v1/mount?mountpoint=/a",
                MOUNT_A,
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (
                "GET",
                "/api/v1/mount?mountpoint=/a",
                b"",
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (
                "GET",
                "/api/v1/daemon/logs/reopen",
                b"",
                405,
                "METHOD_NOT_ALLOWED",
            ),
            ("GET", "/api/v1/daemon?x=1", b"", 400, "BAD_QUERY"),
            ("GET", "/api/v1/daemon", b"{}", 400, "UNEXPECTED_BODY"),
            (
                "DELETE",
                "/api/v1/mount?mountpoint=/a",
                b"{}",
                400,
                "UNEXPECTED_BODY",
            ),
            ("POST", "/api/v1/mount", MOUNT_A, 400, "BAD_QUERY"),
            (
                "POST",
                "/api/v1/mount?mountpoint=a",
                MOUNT_A,
                400,
                "INVALID_MOUNTPOINT",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/",
                MOUNT_A,
                400,
                "INVALID_MOUNTPOINT",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/..",
                MOUNT_A,
                400,
                "INVALID_MOUNTPOINT",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/a/b",
                MOUNT_A,
                400,
                "INVALID_MOUNTPOINT",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=%2Fa%2Fb",
                MOUNT_A,
                400,
                "INVALID_MOUNTPOINT",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/a%00",
                MOUNT_A,
                400,
                "INVALID_MOUNTPOINT",
            ),
            ("POST", &long, MOUNT_A, 400, "INVALID_MOUNTPOINT"),
            (
                "POST",
                "/api/v1/mount?mountpoint=/b",
                b"{",
                400,
                "INVALID_BODY",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/b",
                b"",
                400,
                "INVALID_BODY",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/b",
                br#"{"source":"/i","config":"{\"mode\":1}"}"#,
                400,
                "INVALID_BODY",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/b",
                br#"{"source":"/i","fs_type":"rafs","config":""}"#,
                400,
                "UNSUPPORTED_FS_TYPE",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/a",
                MOUNT_A,
                409,
                "ALREADY_EXISTS",
            ),
            (
                "POST",
                "/api/v1/mount?mountpoint=/b",
                br#"{"source":"/img/bad.img"}"#,
                422,
                "UNPROCESSABLE_IMAGE",
            ),
            (
                "DELETE",
                "/api/v1/mount?mountpoint=/nope",
                b"",
                404,
                "NOT_FOUND",
            ),
            ("GET", "/api/v1/metrics?id=nope", b"", 404, "NOT_FOUND"),
            ("GET", "/api/v1/metrics?id=..", b"", 400, "BAD_QUERY"),
        ];
        for (m, t, b, status, want) in cases {
            let reply = r.handle(m, t, b);
            assert_eq!(
                (reply.status, code(&reply).as_str()),
                (status, want),
                "{m} {t}"
            );
            assert_eq!(reply.content_type, JSON);
        }
        let reply = r.handle("DELETE", "/api/v1/daemon", b"");
        assert_eq!(reply.allow, Some("GET"));
        let reply = r.handle("PUT", "/api/v1/mount?mountpoint=/a", b"");
        assert_eq!(reply.allow, Some("POST, DELETE"));
    }

    #[test]
    fn test_mount_daemon_umount_cycle() {
        let (r, fake) = router();

        let added = r.handle(
            "POST",
            "/api/v1/mount?mountpoint=%2Flayer",
            br#"{"source":"/img/l.erofs","fs_type":"erofs","config":"{\"devices\":[\"/img/blob\"],\"offset\":4096,\"direct_io\":true,\"domain\":\"d1\"}"}"#,
        );
        let info = r.handle("GET", "/api/v1/daemon", b"");
        let removed = r.handle("DELETE", "/api/v1/mount?mountpoint=/layer", b"");
        let again = r.handle("DELETE", "/api/v1/mount?mountpoint=/layer", b"");
        let info_after = r.handle("GET", "/api/v1/daemon", b"");

        assert_eq!(added, Reply::empty());
        assert_eq!(info.status, 200);
        let v: Value = serde_json::from_slice(&info.body).unwrap();
        assert_eq!(v["state"], "RUNNING");
        assert_eq!(v["id"], "fake");
        assert_eq!(v["version"]["package_ver"], env!("CARGO_PKG_VERSION"));
        for k in ["git_commit", "build_time", "profile", "rustc"] {
            assert!(v["version"][k].is_string(), "{k}");
        }
        let b = &v["backend_collection"]["/layer"];
        assert_eq!(b["backend_type"], "erofs");
        assert_eq!(b["mountpoint"], "/layer");
        assert_eq!(b["source"], "/img/l.erofs");
        assert_eq!(b["config"]["devices"][0], "/img/blob");
        assert_eq!(b["config"]["offset"], 4096);
        assert_eq!(b["config"]["direct_io"], true);
        assert_eq!(b["config"]["domain"], "d1");
        assert_eq!(removed.status, 204);
        assert_eq!(again.status, 404);
        let v: Value = serde_json::from_slice(&info_after.body).unwrap();
        assert_eq!(v["backend_collection"], serde_json::json!({}));
        assert!(fake.metrics.image("layer").is_none());
    }

    #[test]
    fn test_limit_reached_is_409() {
        let (r, _) = router();
        for i in 0..FAKE_MAX_IMAGES {
            let t = format!("/api/v1/mount?mountpoint=/i{i}");
            assert_eq!(r.handle("POST", &t, br#"{"source":"/x"}"#).status, 204);
        }

        let over = r.handle(
            "POST",
            "/api/v1/mount?mountpoint=/over",
            br#"{"source":"/x"}"#,
        );

        assert_eq!((over.status, code(&over).as_str()), (409, "LIMIT_REACHED"));
    }

    #[test]
    fn test_metrics_json_prometheus_reopen() {
        let (r, fake) = router();
        r.handle("POST", "/api/v1/mount?mountpoint=/a", MOUNT_A);

        let json = r.handle("GET", "/api/v1/metrics", b"");
        let one = r.handle("GET", "/api/v1/metrics?id=a", b"");
        let prom = r.handle("GET", "/metrics", b"");
        let reopen = r.handle("PUT", "/api/v1/daemon/logs/reopen", b"");

        let v: Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(v["requests"]["requests"], 1);
        assert_eq!(v["images"]["a"]["requests"]["opcodes"][0]["name"], "LOOKUP");
        let v: Value = serde_json::from_slice(&one.body).unwrap();
        assert_eq!(v["requests"]["requests"], 1);
        assert_eq!(prom.status, 200);
        assert_eq!(prom.content_type, prometheus::CONTENT_TYPE);
        let text = String::from_utf8(prom.body).unwrap();
        let (_, samples) = crate::metrics::check_prometheus(&text);
        assert!(samples.contains(&(
            "erofs_virtiofsd_image_fuse_requests_total{image=\"a\",opcode=\"LOOKUP\"}".to_owned(),
            1.0
        )));
        assert_eq!(reopen, Reply::empty());
        assert_eq!(fake.reopened.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn test_fuzz_api_seeds_hold() {
        let seeds: [&[u8]; 4] = [
            b"\x00/api/v1/daemon\n",
            b"\x01/api/v1/mount?mountpoint=/a\n{\"source\":\"/a\"}\n--\n\x02/api/v1/mount?mountpoint=/a\n",
            b"\x00/metrics\n--\n\x00/api/v1/metrics?id=a\n--\n\x03/api/v1/daemon/logs/reopen",
            b"\x05\xff\xfe\n\x00\x00",
        ];
        for s in seeds {
            fuzz_api(s);
        }
    }
}
