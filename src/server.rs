//! The HTTP server: hyper 1, one dav-server handler, and the body checks
//! dav-server leaves to us.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use dav_server::ls::DavLockSystem;
use dav_server::DavHandler;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use tokio::net::TcpListener;

use http_body_util::{BodyExt, Limited};

use tokio::task::JoinHandle;

use crate::config::{Config, S3ServerConfig, ServerConfig, DEFAULT_LOCAL_SERVERS};
use crate::dav::{propstat, GridFs, GridFsOptions, NamespaceLockSystem};
use crate::engine::{MemoryBudget, UploadOptions};
use crate::grid::tahoe::Timeouts;
use crate::grid::{
    grid_of_dirs, BufferPool, Grid, GridError, LocalStore, S3Options, S3Store, ShareStore,
    TahoeStore, MIN_PART_SIZE,
};
use crate::http::guard::{self, Guard};
use crate::http::listener::{Limits, TimedBody};
use crate::namespace::{Namespace, NamespaceError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// Why the service could not be assembled.
#[allow(missing_docs)] // fields are named in each variant's message
pub enum ServiceError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// The namespace database could not be opened.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// The root secret could not be read, made or parsed.
    #[error(transparent)]
    Secret(#[from] crate::snapshot::SecretError),
}

/// What `griddav serve` runs besides the listener.
pub struct Service {
    /// What answers each WebDAV request.
    pub handler: Front,
    /// PUTs in progress by path, for [`serve_with_limits`].
    pub uploads: Arc<crate::dav::pending::PendingUploads>,
    /// The garbage collector; abort it when serving stops.
    pub collector: JoinHandle<()>,
    /// Namespace copies into the grid, and the task that takes them.
    pub snapshots: crate::snapshot::Snapshots,
    /// Takes the namespace copies; abort it when serving stops.
    pub copier: JoinHandle<()>,
    /// The namespace: shutdown waits on its pending uploads; the metrics read it.
    pub ns: Namespace,
    /// The background repair (`[repair]`), if on; abort it likewise.
    pub repairer: Option<JoinHandle<()>>,
}

impl Service {
    /// What follows the listener's drain on SIGTERM/SIGINT: waits (a
    /// little) for the uploads whose connections were dropped to remove
    /// their shares, takes the last namespace copy, and stops the
    /// background tasks.
    pub async fn shut_down(self) {
        self.copier.abort();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match self.ns.pending_uploads().await {
                    Ok(pending) if !pending.is_empty() => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    }
                    _ => break,
                }
            }
        })
        .await;
        match waited {
            Ok(()) => tracing::info!("no upload left: every unfinished one was aborted"),
            Err(_) => {
                tracing::warn!("uploads still being aborted; the next start removes their shares")
            }
        }
        tracing::info!("taking the last namespace copy");
        if self.snapshots.copy_logged(false).await {
            tracing::info!("namespace copy up to date");
        }
        self.collector.abort();
        if let Some(repairer) = self.repairer {
            repairer.abort();
        }
    }
}

/// Opens the namespace in the data directory, removes what uploads that a
/// crash interrupted left behind (before any new upload can start), and
/// builds the WebDAV handler and the garbage collector over `grid`.
pub async fn start_service(config: &Config, grid: Grid) -> Result<Service, ServiceError> {
    let data_dir = config.data_dir.clone();
    // Owner-only: it holds the namespace (every capability) and, by
    // default, the local grid. Tightened when it exists already (the
    // local grid's setup may have created it with the umask's mode).
    let owner_only = async {
        use std::os::unix::fs::PermissionsExt;
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(&data_dir).await?;
        let mode = tokio::fs::metadata(&data_dir).await?.permissions().mode();
        if mode & 0o077 != 0 {
            tokio::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).await?;
        }
        Ok(())
    };
    owner_only.await.map_err(|source| ServiceError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    // Made on the first start: the key of the namespace copies in the grid.
    let secret = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || crate::snapshot::RootSecret::load_or_create(&data_dir))
            .await
            .map_err(|e| ServiceError::DataDir {
                path: config.data_dir.clone(),
                source: io::Error::other(e),
            })??
    };
    // In the background: a server that hangs must not delay serving.
    tokio::spawn({
        let grid = grid.clone();
        async move { crate::grid::probe::probe_servers(&grid).await }
    });
    let ns = Namespace::open(config.namespace_db()).await?;
    crate::gc::recover_interrupted_uploads(&ns, &grid).await;
    let fs = GridFs::new(
        ns.clone(),
        grid.clone(),
        GridFsOptions {
            params: config.encoding_params(),
            upload: upload_options(config, &grid),
            inline_threshold: config.inline_threshold,
            read_buf_size: config.read_buf_size,
            format: config.encoding.format,
        },
    );
    let snapshots = crate::snapshot::Snapshots::new(
        ns.clone(),
        grid.clone(),
        secret,
        config.data_dir.clone(),
        config.namespace_db(),
        config.encoding_params(),
        upload_options(config, &grid),
        config.snapshot_keep,
    )
    .with_max_increments(config.snapshot_max_increments)
    .with_garbage_signal(fs.garbage_signal());
    let copier = snapshots.spawn(config.snapshot_interval());
    let repairer = config.repair_interval().map(|every| {
        crate::repair::spawn_repairer(ns.clone(), grid.clone(), every, fs.short_files_signal())
    });
    let collector = crate::gc::spawn_collector(
        ns.clone(),
        grid,
        fs.garbage_signal(),
        config.gc_grace(),
        fs.space_pressure(),
        fs.in_use(),
    );
    let guard = Guard::new(Arc::new(ns.clone()));
    let locks = NamespaceLockSystem::new(ns.clone(), config.lock_max_timeout());
    let uploads = fs.pending_uploads();
    let linker = Some(fs.linker());
    Ok(Service {
        uploads,
        handler: Front {
            handler: dav_handler(fs, Box::new(locks), config.read_buf_size),
            guard,
            users: crate::auth::Users::from_config(&config.users),
            linker,
        },
        collector,
        snapshots,
        copier,
        ns,
        repairer,
    })
}

/// Opens (creating directories as needed) the storage servers of
/// `config`. Blocking: call it at start-up or from a blocking task.
pub fn build_grid(config: &Config) -> Result<Grid, GridError> {
    // One pool for the whole grid: S3 part buffers and, through
    // `upload_options`, the coded segments of every upload.
    build_grid_with(config, false)
}

/// [`build_grid`] for a process beside a running server (`griddav
/// check`): local stores keep the server's uploads in progress.
pub fn build_grid_beside_server(config: &Config) -> Result<Grid, GridError> {
    build_grid_with(config, true)
}

fn build_grid_with(config: &Config, beside: bool) -> Result<Grid, GridError> {
    // One pool for the whole grid: S3 part buffers and, through
    // `upload_options`, the coded segments of every upload.
    let pool = BufferPool::with_bytes(config.encoding.upload_memory_mib.saturating_mul(1 << 20));
    let servers = match &config.grid.servers {
        None if beside => {
            crate::grid::grid_of_dirs_beside(&config.data_dir.join("grid"), DEFAULT_LOCAL_SERVERS)?
        }
        None => grid_of_dirs(&config.data_dir.join("grid"), DEFAULT_LOCAL_SERVERS)?,
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                ServerConfig::Local { path, .. } => {
                    let store = if beside {
                        LocalStore::open_beside(path.clone(), s.id(i))?
                    } else {
                        LocalStore::open(path.clone(), s.id(i))?
                    };
                    Ok(Arc::new(store) as Arc<dyn ShareStore>)
                }
                ServerConfig::Tahoe {
                    nurl, timeout_secs, ..
                } => {
                    let mut timeouts = Timeouts::default();
                    if let Some(secs) = timeout_secs {
                        timeouts.request = std::time::Duration::from_secs(*secs);
                    }
                    let store = TahoeStore::new(nurl.clone(), Some(s.id(i)), timeouts)?;
                    Ok(Arc::new(store) as Arc<dyn ShareStore>)
                }
                ServerConfig::S3(s3) => {
                    let store =
                        S3Store::new(s3_options(s3, &s.id(i))?, s.id(i), Some(pool.clone()))?;
                    Ok(Arc::new(store) as Arc<dyn ShareStore>)
                }
            })
            .collect::<Result<Vec<_>, GridError>>()?,
    };
    Ok(Grid::with_upload_memory(servers, pool))
}

/// The S3 store's options from its config entry, the secret read from
/// wherever the entry says it is.
fn s3_options(s3: &S3ServerConfig, server_id: &str) -> Result<S3Options, GridError> {
    let secret_access_key = s3.secret().map_err(|reason| GridError::Backend {
        server: server_id.to_owned(),
        source: reason.into(),
    })?;
    let part_mib = s3.part_size_mib.unwrap_or(5);
    Ok(S3Options {
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone(),
        prefix: s3.normalized_prefix(),
        region: s3.region.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key,
        allow_http: s3.allow_http,
        part_size: usize::try_from(part_mib.saturating_mul(1 << 20)).unwrap_or(MIN_PART_SIZE),
        timeout: std::time::Duration::from_secs(s3.timeout_secs.unwrap_or(60)),
    })
}

/// Upload tuning: `max_in_flight`, and a memory budget of
/// `upload_memory_mib` that every upload made with these options shares,
/// with the part buffers of `grid`'s stores when they have a pool: call
/// this once per server, not once per upload.
pub fn upload_options(config: &Config, grid: &Grid) -> UploadOptions {
    let params = config.encoding_params();
    let budget = match grid.upload_memory() {
        Some(pool) => MemoryBudget::in_pool(pool.clone(), &params),
        None => MemoryBudget::bytes(
            config.encoding.upload_memory_mib.saturating_mul(1 << 20),
            &params,
        ),
    };
    UploadOptions {
        max_in_flight: config.encoding.max_in_flight,
        budget: Some(budget),
        ..UploadOptions::default()
    }
}

/// dav-server's handler behind the checks griddav applies first
/// ([`crate::http::guard`]). Cheap to clone.
#[derive(Clone)]
pub struct Front {
    /// dav-server's handler, over [`crate::dav::GridFs`].
    pub handler: DavHandler,
    /// Refuses requests before the handler sees them (limits, paths).
    pub guard: Guard,
    /// `None`: no `[[users]]`, everyone is let in.
    pub users: Option<Arc<crate::auth::Users>>,
    /// Answers `PUT` with `Griddav-Link` (griddav's own tree only).
    pub linker: Option<crate::dav::link::Linker>,
}

impl From<DavHandler> for Front {
    /// A handler over one of dav-server's own file systems: guarded, but
    /// without the checks that need griddav's tree.
    fn from(handler: DavHandler) -> Self {
        Front {
            handler,
            guard: Guard::without_tree(),
            users: None,
            linker: None,
        }
    }
}

/// The dav-server handler over griddav's file and lock systems.
pub fn dav_handler(fs: GridFs, locks: Box<dyn DavLockSystem>, read_buf_size: usize) -> DavHandler {
    DavHandler::builder()
        .filesystem(Box::new(fs))
        .locksystem(locks)
        .read_buf_size(read_buf_size)
        .build_handler()
}

/// Accepts connections on `listener` until `shutdown` completes, with the
/// default `[http]` limits.
pub async fn serve(
    listener: TcpListener,
    handler: Front,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with_limits(
        listener,
        handler,
        Limits::default(),
        Arc::default(),
        shutdown,
    )
    .await
}

/// Accepts connections on `listener` until `shutdown` completes; see
/// [`crate::http::listener`]. Every PUT is registered in `uploads` from its
/// arrival to its answer, so that requests for a file being uploaded wait
/// for it (see [`crate::dav::pending`]); `uploads` must be the handler's
/// GridFs's ([`Service::uploads`]).
pub async fn serve_with_limits(
    listener: TcpListener,
    handler: Front,
    limits: Limits,
    uploads: Arc<crate::dav::pending::PendingUploads>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_tls(listener, handler, limits, None, uploads, shutdown).await
}

/// [`serve_with_limits`], over TLS when `tls` is given.
pub async fn serve_tls(
    listener: TcpListener,
    handler: Front,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    uploads: Arc<crate::dav::pending::PendingUploads>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let service = move |mut request: Request<TimedBody>| {
        let front = handler.clone();
        let uploads = Arc::clone(&uploads);
        async move {
            // Before the upload tracking: it keys on the path the tree
            // knows, which for a user is under their root.
            let user = match admit(&front, &mut request).await {
                Ok(user) => user,
                Err(refusal) => return Ok(refusal),
            };
            let tracking = crate::dav::pending::Tracking::of(&uploads, &request);
            let name = user.as_ref().map(|user| user.name.clone());
            let mut response = tracking.around(handle(front, request, user)).await?;
            if let Some(name) = name {
                response
                    .extensions_mut()
                    .insert(crate::http::listener::AccessUser(name));
            }
            Ok(response)
        }
    };
    crate::http::listener::run_tls(listener, limits, tls, service, shutdown).await;
    Ok(())
}

/// Authenticates the request (when users are configured) and passes it
/// through the guard, which moves a user's paths into their root.
async fn admit(
    front: &Front,
    request: &mut Request<TimedBody>,
) -> Result<Option<Arc<crate::auth::User>>, Response<dav_server::body::Body>> {
    let mut user = None;
    if let Some(users) = &front.users {
        let client = request
            .extensions()
            .get::<crate::http::listener::ClientAddr>()
            .map(|c| c.0.ip());
        let authorization = request.headers().get(http::header::AUTHORIZATION);
        let found = users
            .authenticate(authorization, client)
            .await
            .map_err(crate::auth::Denied::into_response)?;
        if found.read_only && crate::auth::changes_anything(request.method()) {
            return Err(crate::auth::Denied::ReadOnly.into_response());
        }
        request.headers_mut().remove(http::header::AUTHORIZATION);
        request
            .extensions_mut()
            .insert(crate::auth::Session(Arc::clone(&found)));
        user = Some(found);
    }
    front
        .guard
        .check(request)
        .await
        .map_err(guard::Refusal::into_response)?;
    Ok(user)
}

/// The largest PROPFIND body read into memory.
const MAX_PROPFIND_BODY: usize = 1 << 20;

async fn handle(
    front: Front,
    request: Request<TimedBody>,
    user: Option<Arc<crate::auth::User>>,
) -> Result<Response<dav_server::body::Body>, Infallible> {
    let method = request.method().clone();
    let response = handle_admitted(front, request).await?;
    Ok(match user {
        Some(user) => crate::http::roots::strip_answer(&user, &method, response).await,
        None => response,
    })
}

async fn handle_admitted(
    front: Front,
    request: Request<TimedBody>,
) -> Result<Response<dav_server::body::Body>, Infallible> {
    if crate::dav::link::Linker::wants(&request) {
        // Before dav-server, which would store the (empty) body instead.
        return Ok(match &front.linker {
            Some(linker) => linker.serve(request).await,
            None => status_only(StatusCode::NOT_IMPLEMENTED),
        });
    }
    let handler = front.handler;
    if request.method().as_str() == "PROPFIND" {
        return Ok(handle_propfind(handler, request).await);
    }
    let request = crate::http::range::single_range_only(request);
    let options = (request.method() == Method::OPTIONS).then(|| request.uri().clone());
    let method = request.method().clone();
    let declared = declared_length(&request);
    let body_was_bad = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&body_was_bad);
    let request = request.map(|body| {
        RequestBody::Streamed(CheckedBody {
            inner: body,
            declared,
            received: 0,
            bad: flag,
        })
    });
    let serving = (method.as_str() == "MOVE")
        .then(|| {
            let destination = request.headers().get("destination")?.to_str().ok()?;
            crate::dav::moving::Move::of(request.uri().path(), destination)
        })
        .flatten();
    let mut response = crate::dav::moving::serve(serving, guard::catching(&handler, request)).await;
    if let Some(uri) = options {
        crate::dav::allow::correct(&uri, response.headers_mut());
    }
    if matches!(method, Method::GET | Method::HEAD | Method::PUT)
        && response.status() == StatusCode::BAD_GATEWAY
    {
        // dav-server's answer to FsError::IsRemote, which dav::fs gives only
        // for the grid not answering now (too few servers for a read, an
        // upload not happy): that may pass, so 503, not 502. Corrupt data
        // and our own bugs are 500 already.
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("30"),
        );
    }
    if body_was_bad.load(Ordering::Relaxed) && response.status().is_server_error() {
        // dav-server reports a broken request body as an I/O error (502);
        // the fault is the client's. Nothing was published either way.
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

/// PROPFIND with its answer completed: every property the client named is
/// reported, found or 404 (see [`crate::dav::propstat`]).
async fn handle_propfind(
    handler: DavHandler,
    request: Request<TimedBody>,
) -> Response<dav_server::body::Body> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_PROPFIND_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "PROPFIND body refused");
            return status_only(StatusCode::PAYLOAD_TOO_LARGE);
        }
    };
    let requested = propstat::requested_props(&body);
    if let Some(refusal) = propstat::refusal(requested.as_ref()) {
        return refusal;
    }
    let request = Request::from_parts(parts, RequestBody::Buffered(Some(body)));
    let response = propstat::scoped(requested.as_ref(), guard::catching(&handler, request)).await;
    if response.status() != StatusCode::MULTI_STATUS {
        return response;
    }
    // Completed one response at a time as it streams: a folder of any
    // size costs the memory of one entry (dav::xmlstream).
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let mut response = Response::from_parts(parts, dav_server::body::Body::empty());
    crate::http::listener::StreamedAnswer::attach(
        &mut response,
        Box::pin(propstat::streamed(requested, body)),
    );
    response
}

fn status_only(status: StatusCode) -> Response<dav_server::body::Body> {
    let mut response = Response::new(dav_server::body::Body::empty());
    *response.status_mut() = status;
    response
}

/// A request body as the handler gets it.
enum RequestBody {
    Streamed(CheckedBody),
    /// Already read (PROPFIND); `None` once handed out.
    Buffered(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            RequestBody::Streamed(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streamed(body) => body.is_end_stream(),
            RequestBody::Buffered(bytes) => bytes.is_none(),
        }
    }
}

/// The body length a PUT declares without Content-Length: macOS Finder
/// sends chunked bodies with `X-Expected-Entity-Length`.
fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    if request.method() != Method::PUT
        || request.headers().contains_key(http::header::CONTENT_LENGTH)
    {
        return None;
    }
    request
        .headers()
        .get("X-Expected-Entity-Length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Passes the request body through, but turns a body longer than declared
/// (or one that breaks off) into an error before its excess reaches the
/// file system: dav-server would otherwise stop at the declared length and
/// flush, which looks exactly like a complete upload.
struct CheckedBody {
    inner: TimedBody,
    declared: Option<u64>,
    received: u64,
    bad: Arc<AtomicBool>,
}

impl Body for CheckedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received = self.received.saturating_add(data.len() as u64);
                    if self
                        .declared
                        .is_some_and(|declared| self.received > declared)
                    {
                        self.bad.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "request body longer than X-Expected-Entity-Length",
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.bad.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))))
            }
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn the_default_grid_follows_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let grid = build_grid(&config).unwrap();
        let ids: Vec<String> = grid
            .servers()
            .iter()
            .map(|s| s.server_id().to_owned())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("local-{i:02}")).collect();
        assert_eq!(ids, want);
        for i in 0..10 {
            assert!(dir.path().join(format!("data/grid/server-{i:02}")).is_dir());
        }

        let config = Config::parse(&format!(
            "[grid]\nservers = [{{ kind = \"local\", path = {:?} }}, {{ kind = \"local\", path = {:?}, id = \"two\" }}]\n",
            dir.path().join("one"),
            dir.path().join("two")
        ))
        .unwrap();
        let grid = build_grid(&config).unwrap();
        let ids: Vec<&str> = grid.servers().iter().map(|s| s.server_id()).collect();
        assert_eq!(ids, ["local-00", "two"]);
        assert!(dir.path().join("one").is_dir());
    }
}
