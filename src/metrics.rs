//! What an operator watches: Prometheus metrics (`/metrics`), a status
//! page (`/`) and the same as JSON (`/status.json`), served on the
//! separate `metrics_listen` address. Requests are counted where the
//! front end sees them ([`Observed`]); the grid's own records (server
//! health, the upload memory budget) are read when a scrape asks, so the
//! engine and the grid know nothing of this module.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::dav::pending::PendingUploads;
use crate::grid::{Grid, StorageIndex};

/// Error lines kept for the status page.
const RECENT_ERRORS: usize = 50;
/// How long one server may take to answer the status page's look.
const LOOK_TIMEOUT: Duration = Duration::from_secs(3);
/// Header read limit on the metrics listener (it serves small GETs only).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

/// The process's request metrics. One set per process: the front end
/// records into it without being handed it, and a scrape reads it.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<MethodLabels, Gauge>,
    bytes_in: Counter,
    bytes_out: Counter,
    repairs: Family<OutcomeLabels, Counter>,
    errors: Mutex<VecDeque<String>>,
    /// Request bodies being received (PUT, PATCH), by arrival number.
    uploads: Mutex<BTreeMap<u64, Receiving>>,
    next_upload: AtomicU64,
}

/// A request body being received, as the listener counts its bytes.
struct Receiving {
    method: Method,
    path: String,
    started: Instant,
    received: Arc<AtomicU64>,
    expected: Option<u64>,
}

/// Keeps an upload on the status page while it lives.
#[must_use = "the upload leaves the status page when this is dropped"]
pub struct ReceivingGuard(u64);

impl Drop for ReceivingGuard {
    fn drop(&mut self) {
        global()
            .uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(duration_histogram),
        in_flight: Family::default(),
        bytes_in: Counter::default(),
        bytes_out: Counter::default(),
        repairs: Family::default(),
        errors: Mutex::new(VecDeque::with_capacity(RECENT_ERRORS)),
        uploads: Mutex::new(BTreeMap::new()),
        next_upload: AtomicU64::new(0),
    })
}

impl Metrics {
    /// Keeps `line` among the last [`RECENT_ERRORS`] error lines.
    pub fn error_line(&self, line: String) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errors.len() >= RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(line);
    }

    /// A file the background repair looked at: "healthy", "repaired",
    /// "degraded" or "unrecoverable".
    pub fn repair_outcome(&self, outcome: &'static str) {
        self.repairs.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A request that sends a body to store (PUT, PATCH) arrived: it is
    /// shown with the bytes counted in `received` until the guard drops.
    /// `expected` is its Content-Length, when it declared one.
    pub fn receiving(
        &self,
        method: &Method,
        path: &str,
        expected: Option<u64>,
        received: Arc<AtomicU64>,
    ) -> ReceivingGuard {
        let id = self.next_upload.fetch_add(1, Ordering::Relaxed);
        self.uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Receiving {
                    method: method.clone(),
                    path: path.to_owned(),
                    started: Instant::now(),
                    received,
                    expected,
                },
            );
        ReceivingGuard(id)
    }

    fn uploads(&self) -> Vec<UploadStatus> {
        let uploads = self.uploads.lock().unwrap_or_else(PoisonError::into_inner);
        uploads
            .values()
            .map(|u| UploadStatus {
                method: u.method.to_string(),
                path: u.path.clone(),
                received_bytes: u.received.load(Ordering::Relaxed),
                expected_bytes: u.expected,
                seconds: u.started.elapsed().as_secs_f64(),
            })
            .collect()
    }

    fn recent_errors(&self) -> Vec<String> {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.iter().cloned().collect()
    }
}

/// A request reached the server: it is in flight until [`request_done`].
/// The listener calls both, once per request, where it also writes the
/// request's log line, so the counts are the ones on the wire.
pub fn request_started(method: &Method) {
    global()
        .in_flight
        .get_or_create(&MethodLabels {
            method: method_label(method),
        })
        .inc();
}

/// A request's answer is done, sent whole or cut off: counts it (status,
/// bytes received and sent, duration) and ends its time in flight. A
/// request never answered (its client left first) counts as status 0.
pub fn request_done(
    method: &Method,
    path: &str,
    status: Option<http::StatusCode>,
    bytes_in: u64,
    bytes_out: u64,
    duration: std::time::Duration,
) {
    let metrics = global();
    let label = method_label(method);
    metrics
        .in_flight
        .get_or_create(&MethodLabels {
            method: label.clone(),
        })
        .dec();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method: label.clone(),
            status: status.map_or(0, |status| status.as_u16()),
        })
        .inc();
    metrics
        .duration
        .get_or_create(&MethodLabels { method: label })
        .observe(duration.as_secs_f64());
    metrics.bytes_in.inc_by(bytes_in);
    metrics.bytes_out.inc_by(bytes_out);
    if let Some(status) = status.filter(|status| status.is_server_error()) {
        metrics.error_line(format!(
            "{} {method} {path} -> {status}",
            httpdate::fmt_http_date(SystemTime::now()),
        ));
    }
}

/// Standard methods by name; anything else as "other", so that a client
/// cannot grow the label set without bound.
fn method_label(method: &Method) -> String {
    const KNOWN: [&str; 15] = [
        "GET",
        "HEAD",
        "PUT",
        "POST",
        "DELETE",
        "OPTIONS",
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "PATCH",
        "TRACE",
    ];
    let name = method.as_str();
    if KNOWN.contains(&name) {
        name.to_owned()
    } else {
        "other".to_owned()
    }
}

/// What the metrics listener reads besides [`global`].
#[derive(Clone)]
pub struct Sources {
    /// The servers to look at, and their health records.
    pub grid: Grid,
    /// The uploads in progress.
    pub uploads: Arc<PendingUploads>,
    /// For the length of the garbage queue.
    pub ns: crate::namespace::Namespace,
    /// For the age of the newest namespace copy.
    pub snapshots: crate::snapshot::Snapshots,
}

/// The Prometheus text of every metric.
pub async fn render(sources: &Sources) -> String {
    let metrics = global();
    let mut registry = Registry::with_prefix("griddav");
    registry.register(
        "http_requests",
        "HTTP requests answered, by method and status",
        metrics.requests.clone(),
    );
    registry.register(
        "http_request_duration_seconds",
        "Time from a request's arrival to its answer's head",
        metrics.duration.clone(),
    );
    registry.register(
        "http_requests_in_flight",
        "Requests being answered, by method (PUT: uploads, GET: downloads)",
        metrics.in_flight.clone(),
    );
    registry.register(
        "http_received_bytes",
        "Request body bytes, as declared by Content-Length",
        metrics.bytes_in.clone(),
    );
    registry.register(
        "http_sent_bytes",
        "Response body bytes, as declared by Content-Length",
        metrics.bytes_out.clone(),
    );
    registry.register(
        "repair_files",
        "Files the background repair looked at, by outcome",
        metrics.repairs.clone(),
    );
    let uploads: Gauge = Gauge::default();
    uploads.set(i64::try_from(sources.uploads.in_progress().len()).unwrap_or(i64::MAX));
    registry.register(
        "uploads_in_progress",
        "Paths with a PUT in progress",
        uploads,
    );
    let sync_failed: Gauge = Gauge::default();
    sync_failed.set(i64::from(sources.ns.cannot_sync()));
    registry.register(
        "namespace_sync_failed",
        "1 once a sync of the namespace log has failed: every request is refused until griddav restarts",
        sync_failed,
    );
    if let Some(pool) = sources.grid.upload_memory() {
        let total: Gauge = Gauge::default();
        total.set(i64::try_from(pool.total_bytes()).unwrap_or(i64::MAX));
        let used: Gauge = Gauge::default();
        let in_use = pool.total_bytes().saturating_sub(pool.available_bytes());
        used.set(i64::try_from(in_use).unwrap_or(i64::MAX));
        registry.register("upload_memory_bytes", "The upload memory budget", total);
        registry.register(
            "upload_memory_in_use_bytes",
            "Upload memory leased now",
            used,
        );
    }
    let garbage = tokio::time::timeout(LOOK_TIMEOUT, sources.ns.list_garbage()).await;
    if let Ok(Ok(garbage)) = garbage {
        let queued: Gauge = Gauge::default();
        queued.set(i64::try_from(garbage.len()).unwrap_or(i64::MAX));
        registry.register(
            "garbage_queue_length",
            "Replaced or deleted contents whose shares wait to be freed",
            queued,
        );
    }
    if let Some(record) = sources.snapshots.current_record().await {
        if let Some(newest) = record.copies.iter().map(|c| c.taken_at_ms).max() {
            let now_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let age: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
            age.set(now_ms.saturating_sub(newest) as f64 / 1e3);
            registry.register(
                "namespace_copy_age_seconds",
                "Time since the newest namespace copy in the grid was taken",
                age,
            );
        }
    }
    let writes = Family::<ServerLabels, Counter>::default();
    let errors = Family::<ServerLabels, Counter>::default();
    let demotions = Family::<ServerLabels, Counter>::default();
    let latency = Family::<ServerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let reads = Family::<ServerLabels, Counter>::default();
    let read_latency = Family::<ServerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (server, record) in sources.grid.health().report() {
        let labels = ServerLabels { server };
        writes.get_or_create(&labels).inc_by(record.writes);
        errors.get_or_create(&labels).inc_by(record.errors);
        demotions.get_or_create(&labels).inc_by(record.demotions);
        if let Some(took) = record.write_latency {
            latency.get_or_create(&labels).set(took.as_secs_f64());
        }
        reads.get_or_create(&labels).inc_by(record.reads);
        if let Some(took) = record.read_latency {
            read_latency.get_or_create(&labels).set(took.as_secs_f64());
        }
    }
    registry.register("server_share_writes", "Share writes that succeeded", writes);
    registry.register(
        "server_errors",
        "Requests to the server that failed",
        errors,
    );
    registry.register(
        "server_demotions",
        "Blocks from the server that failed their hashes",
        demotions,
    );
    registry.register(
        "server_write_latency_seconds",
        "Smoothed duration of a share write",
        latency,
    );
    registry.register(
        "server_block_reads",
        "Block reads (a block and its proof) that succeeded",
        reads,
    );
    registry.register(
        "server_read_latency_seconds",
        "Smoothed duration of a block read",
        read_latency,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// `/status.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Every server, in configuration order.
    pub servers: Vec<ServerStatus>,
    /// Request bodies being received, oldest first, with their progress.
    pub uploads: Vec<UploadStatus>,
    /// The upload memory pool's size; `None` without a shared pool.
    pub upload_memory_bytes: Option<u64>,
    /// The part of the pool leased out now.
    pub upload_memory_in_use_bytes: Option<u64>,
    /// The last errors logged, newest last.
    pub recent_errors: Vec<String>,
}

/// An upload in progress, as the listener sees it: the path as the client
/// sent it, the body bytes received so far and, when the client declared
/// it, how many are coming.
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadStatus {
    /// PUT or PATCH.
    pub method: String,
    /// The path as the client sent it.
    pub path: String,
    /// Body bytes received so far.
    pub received_bytes: u64,
    /// The body's declared length (`Content-Length`), if any.
    pub expected_bytes: Option<u64>,
    /// Since the request arrived.
    pub seconds: f64,
}

impl UploadStatus {
    /// "1.2 MiB of 4.0 MiB (30%), 0.8 MB/s"
    fn progress(&self) -> String {
        let mut text = bytes_text(self.received_bytes);
        if let Some(expected) = self.expected_bytes {
            let percent = if expected == 0 {
                100.0
            } else {
                self.received_bytes as f64 * 100.0 / expected as f64
            };
            text.push_str(&format!(" of {} ({percent:.0}%)", bytes_text(expected)));
        }
        if self.seconds > 0.0 {
            let rate = self.received_bytes as f64 / self.seconds / 1e6;
            text.push_str(&format!(", {rate:.1} MB/s"));
        }
        text
    }
}

#[derive(Debug, Serialize, Deserialize)]
/// One server's line of the status page.
pub struct ServerStatus {
    /// The server id (`local-00`, `tahoe-<spki-hash>`, `s3-<bucket>`).
    pub id: String,
    /// Whether it answered the look in time.
    pub reachable: bool,
    /// Latency of the status page's look (an empty listing), or why none.
    pub latency_ms: Option<f64>,
    /// Why it did not answer.
    pub problem: Option<String>,
    /// Room it reports for more shares; `None` when it does not say.
    pub free_bytes: Option<u64>,
    /// Smoothed duration of its share writes, from the health records.
    pub write_latency_ms: Option<f64>,
    /// Smoothed duration of its block reads, from the health records.
    pub read_latency_ms: Option<f64>,
    /// Failed requests, from the health records.
    pub errors: u64,
}

/// Looks at every server (at once, each within [`LOOK_TIMEOUT`]).
pub async fn status(sources: &Sources) -> Status {
    let health = sources.grid.health().report();
    let si = StorageIndex::from_bytes([0; 16]);
    let looks = sources.grid.servers().iter().map(|server| {
        let health = &health;
        async move {
            let started = Instant::now();
            let (listed, free) = tokio::join!(
                tokio::time::timeout(LOOK_TIMEOUT, server.list(si)),
                tokio::time::timeout(LOOK_TIMEOUT, server.free_space()),
            );
            let (latency_ms, problem) = match listed {
                Ok(Ok(_)) => (Some(started.elapsed().as_secs_f64() * 1e3), None),
                Ok(Err(e)) => (None, Some(e.to_string())),
                Err(_) => (None, Some(format!("no answer within {LOOK_TIMEOUT:?}"))),
            };
            let id = server.server_id().to_owned();
            let record = health.iter().find(|(s, _)| *s == id).map(|(_, r)| r);
            ServerStatus {
                reachable: problem.is_none(),
                latency_ms,
                problem,
                free_bytes: free.ok().flatten().map(|f| f.bytes),
                write_latency_ms: record
                    .and_then(|r| r.write_latency)
                    .map(|d| d.as_secs_f64() * 1e3),
                read_latency_ms: record
                    .and_then(|r| r.read_latency)
                    .map(|d| d.as_secs_f64() * 1e3),
                errors: record.map_or(0, |r| r.errors),
                id,
            }
        }
    });
    let servers = futures::future::join_all(looks).await;
    let pool = sources.grid.upload_memory();
    Status {
        servers,
        uploads: global().uploads(),
        upload_memory_bytes: pool.map(|p| p.total_bytes()),
        upload_memory_in_use_bytes: pool
            .map(|p| p.total_bytes().saturating_sub(p.available_bytes())),
        recent_errors: global().recent_errors(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The status page: plain HTML, no script.
pub fn html(status: &Status) -> String {
    let mut page = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>griddav status</title>\
         <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style>\
         </head><body><h1>griddav</h1><h2>Servers</h2><table><tr><th>server</th>\
         <th>reachable</th><th>latency (ms)</th><th>free (bytes)</th>\
         <th>write latency (ms)</th><th>read latency (ms)</th><th>errors</th>\
         <th>problem</th></tr>",
    );
    for s in &status.servers {
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.id),
            if s.reachable { "yes" } else { "NO" },
            or_dash(s.latency_ms.map(|l| format!("{l:.1}"))),
            or_dash(s.free_bytes),
            or_dash(s.write_latency_ms.map(|l| format!("{l:.1}"))),
            or_dash(s.read_latency_ms.map(|l| format!("{l:.1}"))),
            s.errors,
            escape(s.problem.as_deref().unwrap_or("")),
        ));
    }
    page.push_str("</table><h2>Uploads in progress</h2><ul>");
    for upload in &status.uploads {
        page.push_str(&format!(
            "<li>{} {}: {}</li>",
            escape(&upload.method),
            escape(&upload.path),
            escape(&upload.progress())
        ));
    }
    page.push_str(&format!(
        "</ul><p>Upload memory in use: {} of {} bytes</p><h2>Recent errors</h2><ul>",
        or_dash(status.upload_memory_in_use_bytes),
        or_dash(status.upload_memory_bytes)
    ));
    for line in &status.recent_errors {
        page.push_str(&format!("<li>{}</li>", escape(line)));
    }
    page.push_str("</ul></body></html>\n");
    page
}

async fn answer(
    sources: Sources,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(kind),
        );
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(&sources).await,
        ),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            html(&status(&sources).await),
        ),
        "/status.json" => match serde_json::to_string_pretty(&status(&sources).await) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves `/metrics`, `/` and `/status.json` on `listener` until the task
/// is aborted.
pub async fn serve(listener: TcpListener, sources: Sources) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(sources, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

/// Binds `at`, prints the address on standard output (a line
/// `griddav metrics on http://ADDR/`, which scripts and tests read when
/// the port was 0), and serves there in the background.
pub async fn start(
    at: std::net::SocketAddr,
    sources: Sources,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::io::Write;
    let listener = TcpListener::bind(at).await?;
    let addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "griddav metrics on http://{addr}/")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, "serving metrics and the status page");
    Ok(tokio::spawn(serve(listener, sources)))
}

/// Why `griddav status` could not read a running server's status.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum StatusError {
    /// Neither `--url` nor `metrics_listen` says where to ask.
    #[error("no status address: give --url, or set metrics_listen in the configuration")]
    NoAddress,
    /// The URL is not a plain `http://HOST:PORT/`.
    #[error("{url}: give it as http://HOST:PORT/")]
    BadUrl { url: String },
    /// Connecting, sending or reading failed.
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The whole answer did not come in time.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The answer is not a status document.
    #[error("{url}: {reason}")]
    BadAnswer { url: String, reason: String },
}

/// How long `griddav status` waits for the whole answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest answer `griddav status` reads.
const MAX_STATUS: u64 = 4 << 20;

/// Fetches `/status.json` from `url` (`http://HOST:PORT/`), or from
/// `metrics_listen` when no URL is given.
pub async fn fetch_status(
    url: Option<&str>,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<Status, StatusError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = match (url, metrics_listen) {
        (Some(url), _) => url.to_owned(),
        (None, Some(at)) => format!("http://{at}/"),
        (None, None) => return Err(StatusError::NoAddress),
    };
    let host = url
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .filter(|host| !host.is_empty())
        .ok_or_else(|| StatusError::BadUrl { url: url.clone() })?
        .to_owned();
    let io = |source| StatusError::Io {
        url: url.clone(),
        source,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&host).await.map_err(io)?;
        let request =
            format!("GET /status.json HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut answer = Vec::new();
        stream
            .take(MAX_STATUS)
            .read_to_end(&mut answer)
            .await
            .map_err(io)?;
        Ok::<_, StatusError>(answer)
    };
    let answer = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| StatusError::Timeout {
            url: url.clone(),
            timeout: FETCH_TIMEOUT,
        })??;
    let bad = |reason: String| StatusError::BadAnswer {
        url: url.clone(),
        reason,
    };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the header".into()))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split(' ').nth(1) != Some("200") {
        return Err(bad(format!("answered {status_line:?}")));
    }
    let body = &answer[split + 4..];
    serde_json::from_slice(body).map_err(|e| bad(format!("not a status: {e}")))
}

fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The status as `griddav status` prints it.
pub fn text(status: &Status) -> String {
    let reachable = status.servers.iter().filter(|s| s.reachable).count();
    let mut out = format!(
        "servers: {reachable} of {} reachable\n",
        status.servers.len()
    );
    let width = status.servers.iter().map(|s| s.id.len()).max().unwrap_or(0);
    for s in &status.servers {
        let state = if s.reachable {
            format!(
                "up {:>8}",
                or_dash(s.latency_ms.map(|l| format!("{l:.1} ms")))
            )
        } else {
            "DOWN       ".to_owned()
        };
        out.push_str(&format!(
            "  {:<width$}  {state}  free {:>10}  write {:>9}  read {:>9}  errors {}{}\n",
            s.id,
            or_dash(s.free_bytes.map(bytes_text)),
            or_dash(s.write_latency_ms.map(|l| format!("{l:.1} ms"))),
            or_dash(s.read_latency_ms.map(|l| format!("{l:.1} ms"))),
            s.errors,
            s.problem
                .as_deref()
                .map(|p| format!("  ({p})"))
                .unwrap_or_default(),
        ));
    }
    if let (Some(total), Some(used)) = (
        status.upload_memory_bytes,
        status.upload_memory_in_use_bytes,
    ) {
        out.push_str(&format!(
            "upload memory: {} of {} in use\n",
            bytes_text(used),
            bytes_text(total)
        ));
    }
    out.push_str(&format!("uploads in progress: {}\n", status.uploads.len()));
    for upload in &status.uploads {
        out.push_str(&format!(
            "  {} {}: {}\n",
            upload.method,
            upload.path,
            upload.progress()
        ));
    }
    out.push_str(&format!("recent errors: {}\n", status.recent_errors.len()));
    for line in &status.recent_errors {
        out.push_str(&format!("  {line}\n"));
    }
    out
}
