//! The HTTP/1.1 server on a unix socket: hyper on a current-thread tokio
//! runtime in a thread of its own; handlers run on a small blocking pool so
//! a slow [`Control`] call never stalls other clients.
//!
//! Bounds: one request per connection (no keep-alive); request heads of at
//! most [`MAX_HEAD`] bytes, read within `read_timeout`; bodies of at most
//! `max_body_bytes` (413), read within `read_timeout` (408); a whole
//! connection within `request_timeout`; at most `max_connections` served at
//! once, then a few more get 503 and the rest are closed unread.

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::router::{Reply, Router};
use super::{ApiError, Control};

/// Largest request head (request line and headers), in bytes; larger gets
/// 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// Connections beyond `max_connections` that still get a 503 reply; past
/// these, connections are closed unread.
const BUSY_SLOTS: usize = 4;

/// Limits of the API server.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest request body (default 64 KiB); larger gets 413.
    pub max_body_bytes: usize,
    /// Time to send the request head, and again the body (default 10 s).
    /// A head not complete by then closes the connection; a body, 408.
    pub read_timeout: Duration,
    /// Time for a whole connection, handler included (default 60 s). A
    /// change still running then completes, but its reply is lost.
    pub request_timeout: Duration,
    /// Connections served at once (default 16); requests handled at once
    /// are bounded by the same number.
    pub max_connections: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_body_bytes: 64 * 1024,
            read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 16,
        }
    }
}

/// A running API server. Dropping it (or [`ApiHandle::shutdown`]) stops the
/// server and removes its socket.
#[derive(Debug)]
pub struct ApiHandle {
    path: PathBuf,
    /// (st_dev, st_ino) of the socket we bound, so we never remove another
    /// process's socket that replaced ours.
    ident: (u64, u64),
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiHandle {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the server, waits for its thread and removes the socket.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for ApiHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                warn!("API server thread panicked");
            }
        }
        remove_if_ours(&self.path, self.ident);
    }
}

/// Serves the API on a unix socket at `path` with the default limits (see
/// [`serve_api_with`]).
pub fn serve_api(path: &Path, control: Arc<dyn Control>) -> Result<ApiHandle, ApiError> {
    serve_api_with(path, control, ApiOptions::default())
}

/// Serves the API on a unix socket at `path` (mode 0600) in background
/// threads. A stale socket at `path` (nobody listening) is replaced; a live
/// one, or anything that is not a socket, is refused. Same as
/// [`ApiSocket::bind`] then [`ApiSocket::serve`].
pub fn serve_api_with(
    path: &Path,
    control: Arc<dyn Control>,
    opts: ApiOptions,
) -> Result<ApiHandle, ApiError> {
    ApiSocket::bind(path)?.serve(control, opts)
}

/// The API socket, bound and listening but not served yet: a daemon binds
/// it before entering its sandbox (which cannot make sockets) and serves
/// it after (serving starts threads, which the sandbox must come before).
/// Dropped unserved, it removes its socket file.
#[derive(Debug)]
pub struct ApiSocket {
    path: PathBuf,
    ident: (u64, u64),
    listener: Option<StdListener>,
}

impl ApiSocket {
    /// Binds a unix socket at `path` (mode 0600). A stale socket at `path`
    /// (nobody listening) is replaced; a live one, or anything that is not
    /// a socket, is refused.
    pub fn bind(path: &Path) -> Result<ApiSocket, ApiError> {
        let sock_err = |source| ApiError::Socket {
            path: path.to_owned(),
            source,
        };
        clear_stale(path)?;
        let listener = StdListener::bind(path).map_err(sock_err)?;
        let setup = || -> std::io::Result<(u64, u64)> {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            let m = std::fs::symlink_metadata(path)?;
            Ok((m.dev(), m.ino()))
        };
        match setup() {
            Ok(ident) => Ok(ApiSocket {
                path: path.to_owned(),
                ident,
                listener: Some(listener),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(sock_err(e))
            }
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves the API on the socket in background threads; the handle
    /// stops them and removes the socket.
    pub fn serve(
        mut self,
        control: Arc<dyn Control>,
        opts: ApiOptions,
    ) -> Result<ApiHandle, ApiError> {
        let path = std::mem::take(&mut self.path);
        let ident = self.ident;
        let Some(listener) = self.listener.take() else {
            return Err(ApiError::Start(std::io::Error::other("already served")));
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(opts.max_connections.clamp(1, 64))
            .thread_name("api-handler")
            .build();
        let started = rt.and_then(|rt| {
            // Registering the listener needs the runtime's reactor.
            let listener = {
                let _enter = rt.enter();
                UnixListener::from_std(listener)?
            };
            let (stop_tx, stop_rx) = oneshot::channel();
            let shared = Arc::new(Shared {
                router: Arc::new(Router::new(control)),
                handlers: Arc::new(Semaphore::new(opts.max_connections.max(1))),
                opts,
            });
            let thread = std::thread::Builder::new()
                .name("api".to_owned())
                .spawn(move || {
                    rt.block_on(accept_loop(listener, shared, stop_rx));
                    // Handlers stuck in a Control call are not waited for long.
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?;
            Ok((stop_tx, thread))
        });
        match started {
            // From here on the handle owns the socket file.
            Ok((stop, thread)) => Ok(ApiHandle {
                path,
                ident,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(e) => {
                remove_if_ours(&path, ident);
                Err(ApiError::Start(e))
            }
        }
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        if self.listener.is_some() {
            remove_if_ours(&self.path, self.ident);
        }
    }
}

/// Removes the socket at `path` if it is still the one with `ident`
/// (st_dev, st_ino): never another process's socket that replaced ours.
fn remove_if_ours(path: &Path, ident: (u64, u64)) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() && (m.dev(), m.ino()) == ident {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a socket nobody listens on; refuses a live one or a non-socket.
fn clear_stale(path: &Path) -> Result<(), ApiError> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ApiError::Socket {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !m.file_type().is_socket() {
        return Err(ApiError::NotASocket {
            path: path.to_owned(),
        });
    }
    match StdStream::connect(path) {
        Ok(_) => Err(ApiError::InUse {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            debug!("API socket {}: removing a stale socket", path.display());
            std::fs::remove_file(path).map_err(|source| ApiError::Socket {
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(ApiError::Socket {
            path: path.to_owned(),
            source,
        }),
    }
}

/// What every connection task shares.
struct Shared {
    router: Arc<Router>,
    /// Requests being handled (in the blocking pool) at once.
    handlers: Arc<Semaphore>,
    opts: ApiOptions,
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let conns = Arc::new(Semaphore::new(shared.opts.max_connections.max(1)));
    let busy = Arc::new(Semaphore::new(BUSY_SLOTS));
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of
                    // spinning on the same error.
                    warn!("API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Ok(permit) = Arc::clone(&conns).try_acquire_owned() {
            tokio::spawn(serve_conn(stream, Arc::clone(&shared), permit, false));
        } else if let Ok(permit) = Arc::clone(&busy).try_acquire_owned() {
            debug!("API: connection limit reached; answering 503");
            tokio::spawn(serve_conn(stream, Arc::clone(&shared), permit, true));
        } else {
            debug!("API: connection limit reached; closing a connection");
            drop(stream);
        }
    }
}

/// Serves one connection (one request); `busy` answers 503 to it.
async fn serve_conn(
    stream: UnixStream,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    busy: bool,
) {
    let opts = shared.opts.clone();
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move {
            let reply = if busy {
                Reply::error(503, "BUSY", "too many API connections; try again")
            } else {
                handle(req, &shared).await
            };
            Ok::<_, Infallible>(to_response(reply))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.read_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), svc);
    match tokio::time::timeout(opts.request_timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("API connection: {e}"),
        Err(_) => debug!(
            "API connection: not done in {:?}; closed",
            opts.request_timeout
        ),
    }
}

/// Reads the body within its bounds and runs the router in the blocking
/// pool.
async fn handle(req: Request<Incoming>, shared: &Shared) -> Reply {
    let (parts, body) = req.into_parts();
    let max = shared.opts.max_body_bytes;
    let too_large = || {
        Reply::error(
            413,
            "PAYLOAD_TOO_LARGE",
            &format!("request body larger than {max} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let body =
        match tokio::time::timeout(shared.opts.read_timeout, Limited::new(body, max).collect())
            .await
        {
            Err(_) => {
                return Reply::error(
                    408,
                    "REQUEST_TIMEOUT",
                    &format!(
                        "request body not received within {:?}",
                        shared.opts.read_timeout
                    ),
                )
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Ok(Err(e)) => {
                return Reply::error(400, "BAD_REQUEST", &format!("cannot read the body: {e}"))
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
    let Ok(permit) = Arc::clone(&shared.handlers).try_acquire_owned() else {
        return Reply::error(503, "BUSY", "too many API requests in progress; try again");
    };
    let method = parts.method.as_str().to_owned();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let router = Arc::clone(&shared.router);
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        router.handle(&method, &target, &body)
    });
    match job.await {
        Ok(r) => r,
        Err(e) => {
            warn!("API handler failed: {e}");
            Reply::error(500, "INTERNAL", "the request handler failed")
        }
    }
}

fn to_response(r: Reply) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let has_body = !r.body.is_empty();
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(SERVER, HeaderValue::from_static("erofs-virtiofsd"));
    if has_body {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    }
    if let Some(allow) = r.allow {
        h.insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}
