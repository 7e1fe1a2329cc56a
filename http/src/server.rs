//! The REST server: HTTP/1.1 on a Unix socket, one per microVM, served by hyper on a
//! current-thread tokio runtime in its own thread ("wisp-api"). Each connection is a task, so a
//! slow or stalled client only costs its own task; header and body reads are bounded by
//! `read_timeout`, bodies by `body_limit`, and an answer the client does not read by
//! `write_timeout`. A client that half-closes its side after its request (`nc -N`,
//! `shutdown(SHUT_WR)`) still gets its answer, however long the action takes: hyper's
//! `half_close` keeps the connection until the answer is written instead of dropping it at
//! the read side's EOF. Requests become `VmmAction`s for the VMM thread.
//! The socket is bound by wisp-hostfs: 0600 (0660 with `socket_group`) before anyone can
//! connect, never over a live socket or a non-socket, and removed at shutdown only if the
//! path still names it.

use crate::metrics::{ApiMetrics, Refusal};
use crate::response::{self, fault, ApiResponse};
use crate::routes;
use crate::write_deadline::WriteDeadline;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use wisp_api::vmm_channel::{request_id_or_new, ApiSender, ReplySender};
use wisp_hostfs::{BoundSocket, HostFsError, SocketOptions};

/// The header a client may set to name its request; the answer carries it (or a generated
/// id) back, and the VMM's log lines name it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Largest request body accepted, as in Firecracker (51200 bytes).
pub const DEFAULT_BODY_LIMIT: usize = 50 * 1024;
/// How long a client may take to send a request's headers, and then its body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer may wait for a client that does not read it before the connection is
/// dropped.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's per-connection read buffer bound; caps what one client can make us hold.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// Tunables of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub body_limit: usize,
    pub read_timeout: Duration,
    /// How long a write of an answer may make no progress (the client reads nothing).
    pub write_timeout: Duration,
    /// `None`: only the socket's owner may connect (0600). `Some(gid)`: group `gid` too (0660).
    pub socket_group: Option<u32>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_limit: DEFAULT_BODY_LIMIT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            socket_group: None,
        }
    }
}

/// Errors of starting or stopping the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("API socket {0} is in use: another process answers on it")]
    InUse(PathBuf),
    #[error("API socket path {0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot create API socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: HostFsError,
    },
    #[error("cannot listen on API socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the API runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot spawn the API thread: {0}")]
    Thread(#[source] io::Error),
    #[error("the API thread panicked")]
    ThreadPanicked,
    #[error(transparent)]
    Seccomp(wisp_seccomp::SeccompError),
}

/// A running server. Dropping it (or `shutdown`) stops the thread and removes the socket.
#[derive(Debug)]
pub struct ApiServerHandle {
    path: PathBuf,
    /// Removes the socket path on drop, if it is still ours.
    socket: Option<BoundSocket>,
    metrics: Arc<ApiMetrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServerHandle {
    /// The socket path served.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The request counters, for the VMM's metrics line.
    pub fn metrics(&self) -> &Arc<ApiMetrics> {
        &self.metrics
    }

    /// Stops accepting, drops open connections, joins the thread and removes the socket.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the thread already ended; joining tells why.
            let _ = stop.send(());
        }
        let joined = match self.thread.take() {
            Some(t) => t.join().map_err(|_| ServerError::ThreadPanicked),
            None => Ok(()),
        };
        drop(self.socket.take());
        joined
    }
}

impl Drop for ApiServerHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            log::warn!("API server shutdown: {e}");
        }
    }
}

/// Starts the server on `path` with the default limits. When this returns `Ok`, the socket
/// is bound and listening: a client may connect at once.
pub fn spawn_api_server(path: &Path, vmm: ApiSender) -> Result<ApiServerHandle, ServerError> {
    spawn_api_server_with(path, vmm, ServerConfig::default())
}

/// `spawn_api_server` with explicit limits.
pub fn spawn_api_server_with(
    path: &Path,
    vmm: ApiSender,
    config: ServerConfig,
) -> Result<ApiServerHandle, ServerError> {
    let opts = SocketOptions {
        group: config.socket_group,
    };
    let (std_listener, socket) =
        wisp_hostfs::bind_listener(path, &opts).map_err(|source| match source {
            HostFsError::SocketInUse => ServerError::InUse(path.to_path_buf()),
            HostFsError::NotASocket { .. } => ServerError::NotASocket(path.to_path_buf()),
            source => ServerError::Socket {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let bind_err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ServerError::Runtime)?;
    let listener = {
        let _ctx = runtime.enter();
        UnixListener::from_std(std_listener).map_err(bind_err)?
    };
    let metrics = Arc::new(ApiMetrics::new());
    let ctx = Arc::new(Context {
        vmm,
        config,
        metrics: Arc::clone(&metrics),
    });
    let (stop, stopped) = oneshot::channel();
    // The API filter goes on before the first accept; the caller hears whether it did.
    let (filtered_tx, filtered) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("wisp-api".to_string())
        .spawn(move || {
            let entered = wisp_seccomp::enter(wisp_seccomp::ThreadKind::Api);
            let serve = entered.is_ok();
            let _ = filtered_tx.send(entered);
            if serve {
                runtime.block_on(accept_loop(listener, ctx, stopped));
            }
        })
        .map_err(ServerError::Thread)?;
    match filtered.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(ServerError::Seccomp(e));
        }
        Err(_) => return Err(ServerError::ThreadPanicked),
    }
    Ok(ApiServerHandle {
        path: path.to_path_buf(),
        socket: Some(socket),
        metrics,
        stop: Some(stop),
        thread: Some(thread),
    })
}

struct Context {
    vmm: ApiSender,
    config: ServerConfig,
    metrics: Arc<ApiMetrics>,
}

async fn accept_loop(
    listener: UnixListener,
    ctx: Arc<Context>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    ctx.metrics.record_connection();
                    tokio::spawn(serve_connection(stream, Arc::clone(&ctx)));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener survives.
                    log::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: tokio::net::UnixStream, ctx: Arc<Context>) {
    let (read_timeout, write_timeout) = (ctx.config.read_timeout, ctx.config.write_timeout);
    let service = service_fn(move |req| handle(req, Arc::clone(&ctx)));
    let io = TokioIo::new(WriteDeadline::new(stream, write_timeout));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_buf_size(MAX_BUF_SIZE)
        // EOF on the read side ends the connection only once the answers are written.
        .half_close(true)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        log::debug!("API connection ended: {e}");
    }
}

async fn handle(req: Request<Incoming>, ctx: Arc<Context>) -> Result<ApiResponse, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let given = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok());
    let request_id = request_id_or_new(given);
    let mut answer = route_and_execute(req, &request_id, &ctx).await;
    log::debug!("[{request_id}] API {method} {path} -> {}", answer.status());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        answer.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(answer)
}

async fn route_and_execute(req: Request<Incoming>, request_id: &str, ctx: &Context) -> ApiResponse {
    let (endpoint, param) = match routes::resolve(req.method().as_str(), req.uri().path()) {
        Ok(found) => found,
        Err(e) => {
            let refusal = match e {
                routes::RouteError::NotFound { .. } => Refusal::NotFound,
                _ => Refusal::MethodNotAllowed,
            };
            ctx.metrics.record_refusal(refusal);
            return response::route_error(&e);
        }
    };
    let param = param.map(str::to_string);
    let answer = match read_body(req, ctx).await {
        Ok(body) => match routes::parse_action(endpoint, param.as_deref(), &body) {
            Ok(action) => execute(action, request_id.to_string(), ctx).await,
            Err(e) => response::route_error(&e),
        },
        Err(answer) => answer,
    };
    ctx.metrics.record(endpoint, answer.status().is_success());
    answer
}

/// Reads the whole body within the size and time limits, or returns the error answer.
async fn read_body(req: Request<Incoming>, ctx: &Context) -> Result<bytes::Bytes, ApiResponse> {
    let limit = ctx.config.body_limit;
    let too_large = |declared: Option<u64>| {
        ctx.metrics.record_refusal(Refusal::BodyTooLarge);
        let size = declared.map_or(String::new(), |n| format!(" ({n} bytes)"));
        fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body{size} is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > limit as u64) {
        return Err(too_large(Some(len)));
    }
    let body = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(ctx.config.read_timeout, body).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(None)),
        Ok(Err(e)) => Err(fault(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
        Err(_) => {
            ctx.metrics.record_refusal(Refusal::ReadTimeout);
            Err(fault(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    ctx.config.read_timeout.as_millis()
                ),
            ))
        }
    }
}

/// Hands the action to the VMM thread and waits for its result.
async fn execute(action: wisp_api::VmmAction, request_id: String, ctx: &Context) -> ApiResponse {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reply = ReplySender::new(move |result| {
        if tx.send(result).is_err() {
            log::debug!("API client went away before its reply");
        }
    });
    if let Err(e) = ctx.vmm.submit(action, request_id, reply) {
        return fault(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    match rx.await {
        Ok(result) => response::vmm_result(&result),
        Err(_) => fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the VMM thread dropped the request without answering",
        ),
    }
}
