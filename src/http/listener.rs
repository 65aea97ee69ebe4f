//! The accept loop and what is set up for each connection before a request
//! reaches the service: the connection cap, TCP_NODELAY, and the time limits
//! on request heads, idle keep-alive connections and request bodies.
//!
//! ```text
//!   accept (cap: max_connections) -> TCP_NODELAY (and, from loopback, a
//!     small receive buffer) -> hyper http1
//!     head within header_read_timeout of connecting or of the previous answer
//!     body: nothing for body_idle_timeout while the handler waits -> error
//!     no request in progress and nothing sent or received for keep_alive_idle -> closed
//! ```
//!
//! With TLS, the handshake happens in the connection's own task, within
//! `header_read_timeout`, so a client that never finishes it holds one
//! connection slot for that long and never delays accepting others.
//!
//! Accept errors never end the loop: running out of file descriptors
//! (EMFILE, ENFILE) or kernel memory pauses accepting for a moment, and the
//! connections wait in the listen backlog until descriptors are free again.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dav_server::body::{Body as DavBody, BodyType};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::config::HttpConfig;

/// The per-connection limits, from `[http]` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request head must be complete within this long of the connection
    /// opening or of the previous answer.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress on which nothing is sent or
    /// received for this long is closed.
    pub keep_alive_idle: Duration,
    /// A request body that delivers nothing for this long while the handler
    /// waits for it fails (and with it the upload); an answer the client
    /// does not read for this long closes the connection.
    pub body_idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Once `shutdown` completes: how long requests in flight may take to
    /// finish before their connections are dropped (their uploads then
    /// abort). Idle connections close at once.
    pub shutdown_grace: Duration,
}

impl From<&HttpConfig> for Limits {
    fn from(c: &HttpConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(c.header_read_timeout_secs),
            keep_alive_idle: Duration::from_secs(c.keep_alive_idle_secs),
            body_idle_timeout: Duration::from_secs(c.body_idle_timeout_secs),
            max_connections: c.max_connections,
            // A top-level key (`shutdown_grace_secs`): set by the caller.
            shutdown_grace: Duration::ZERO,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from(&HttpConfig::default())
    }
}

/// The address a request's connection came from; in its extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Receive buffer of a connection from this machine (an OS mount through
/// davfs2 or rclone, a proxy in front of griddav): `SO_RCVBUF`, which the
/// kernel doubles for its own bookkeeping.
///
/// The kernel's autotuning grew a loopback PUT's buffer to about 7 MB, all
/// of it full: the body the client has sent and the server not yet read.
/// A client's `close()` waits for that too, about 13 ms at 550 MB/s.
/// Measured, 1 GiB PUTs to a local grid, 6 per setting on this 2-core VM:
/// autotuned, 485-548 MB/s and close 18.8-34.3 ms; 256 KiB, 502-612 MB/s
/// and close 13.6-19.9 ms (128 KiB and 64 KiB alike). A round trip of
/// microseconds needs no more; a remote client's does (a window caps
/// throughput at window / round trip), so only loopback peers get it.
const LOOPBACK_RECEIVE_BUFFER: usize = 256 << 10;

/// Pause after an accept error that is not one connection's own failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per kind of trouble in this period.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` and serves each with `service` until
/// `shutdown` completes. Never fails: accept errors are logged (a few
/// lines, however many there are) and accepting resumes after a pause.
///
/// After `shutdown`: the listening socket closes, idle connections close,
/// requests in flight get [`Limits::shutdown_grace`] to finish, and the
/// connections still open then are dropped; returns once every connection
/// is gone.
pub async fn run<S, F>(
    listener: TcpListener,
    limits: Limits,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Fn(Request<TimedBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<DavBody>, Infallible>> + Send + 'static,
{
    run_tls(listener, limits, None, service, shutdown).await;
}

/// [`run`], over TLS when `tls` is given.
pub async fn run_tls<S, F>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Fn(Request<TimedBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<DavBody>, Infallible>> + Send + 'static,
{
    let mut shutdown = pin!(shutdown);
    // At least one: validation refuses 0, and a server that can serve
    // nothing would hang every client.
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut at_cap = RateLimitedLog::default();
    let mut accept_errors = RateLimitedLog::default();
    let mut backoff = FIRST_BACKOFF;
    let mut connections = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(suppressed) = at_cap.due() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        times_before = suppressed,
                        "connection limit reached: new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                if accept_errors.total > 0 {
                    tracing::info!(errors = accept_errors.total, "accepting connections again");
                    accept_errors = RateLimitedLog::default();
                }
                backoff = FIRST_BACKOFF;
                let service = service.clone();
                connections.spawn(connection(
                    stream,
                    peer,
                    tls.clone(),
                    service,
                    limits,
                    permit,
                    stop_rx.clone(),
                ));
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "a connection failed before it was accepted");
            }
            Err(e) => {
                if let Some(suppressed) = accept_errors.due() {
                    tracing::warn!(
                        error = %e,
                        pause_ms = backoff.as_millis() as u64,
                        times_before = suppressed,
                        "cannot accept connections; pausing"
                    );
                }
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    drop(listener);
    drain(connections, stop_tx, limits.shutdown_grace).await;
}

/// Closes idle connections, gives the others `grace` to finish their
/// requests, then drops those left (an upload in one aborts).
async fn drain(
    mut connections: tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
    grace: Duration,
) {
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    tracing::info!(
        connections = open,
        grace_secs = grace.as_secs(),
        "stopped accepting connections; letting requests in flight finish"
    );
    let _ = stop.send(true);
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_ok() {
        tracing::info!("every connection finished");
        return;
    }
    tracing::warn!(
        connections = connections.len(),
        "grace period over: dropping the connections still open"
    );
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Errors that concern one connection only: accept the next at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Decides when a repeated condition is logged again: the first time, then
/// at most once per [`LOG_EVERY`], with how many times it was not logged.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
    total: u64,
}

impl RateLimitedLog {
    /// `Some(times not logged since the last line)` when a line is due.
    fn due(&mut self) -> Option<u64> {
        self.total = self.total.saturating_add(1);
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Serves one connection; holds its place under `max_connections` until
/// the connection ends.
async fn connection<S, F>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: S,
    limits: Limits,
    permit: OwnedSemaphorePermit,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    S: Fn(Request<TimedBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<DavBody>, Infallible>> + Send + 'static,
{
    // Without it, a small answer written after another small write (the
    // last piece of a body, a chunked terminator) waits for the client's
    // delayed ACK: about 40 ms per request on a keep-alive connection.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    if peer.ip().to_canonical().is_loopback() {
        let receive = socket2::SockRef::from(&stream).set_recv_buffer_size(LOOPBACK_RECEIVE_BUFFER);
        if let Err(e) = receive {
            tracing::debug!(%peer, error = %e, "cannot set the receive buffer");
        }
    }
    let Some(tls) = tls else {
        return serve_io(stream, peer, service, limits, permit, stop).await;
    };
    match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve_io(stream, peer, service, limits, permit, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake not done in time"),
    }
}

/// Serves HTTP/1.1 on one connection's (plain or TLS) stream.
async fn serve_io<IO, S, F>(
    stream: IO,
    peer: SocketAddr,
    service: S,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<TimedBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<DavBody>, Infallible>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let requests = Arc::clone(&activity);
    let body_idle_timeout = limits.body_idle_timeout;
    let service = service_fn(move |request: Request<Incoming>| {
        let in_flight = InFlight::begin(&requests);
        let received = Arc::new(AtomicU64::new(0));
        crate::metrics::request_started(request.method());
        let receiving = matches!(request.method().as_str(), "PUT" | "PATCH").then(|| {
            let declared = request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            crate::metrics::global().receiving(
                request.method(),
                request.uri().path(),
                declared,
                Arc::clone(&received),
            )
        });
        let access = Access {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            client: peer,
            started: Instant::now(),
            received: Arc::clone(&received),
            status: None,
            user: None,
            sent: 0,
            expected: None,
            ended: false,
            _receiving: receiving,
        };
        let mut request = request.map(|body| TimedBody::new(body, body_idle_timeout, received));
        request.extensions_mut().insert(ClientAddr(peer));
        let answer = service(request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(AnswerBody::wrap(response, in_flight, access))
        }
    });
    let mut conn = pin!(hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, service));
    let mut check_at = Instant::now() + limits.keep_alive_idle;
    let mut stopping = false;
    loop {
        tokio::select! {
            changed = stop.changed(), if !stopping => {
                // Shutting down (or the listener is gone): finish the
                // request in flight, if any, then close.
                stopping = true;
                let _ = changed;
                conn.as_mut().graceful_shutdown();
            }
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                match activity.verdict(now, &limits) {
                    Verdict::Keep { until } => check_at = until,
                    Verdict::Close(why) => {
                        // Dropping the connection closes the socket; no
                        // request is waiting for an answer on it.
                        tracing::debug!(%peer, why, "closing connection");
                        return;
                    }
                }
            }
        }
    }
}

/// What one connection is doing, for the idle and write-stall checks.
struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last byte read or written, or of
    /// the end of the last answer.
    last: AtomicU64,
    /// Milliseconds since `start` plus one at which a write began to wait
    /// for the client to read; 0 when no write waits.
    write_blocked: AtomicU64,
    /// Requests whose answers are not yet fully handed to hyper.
    in_flight: AtomicUsize,
}

enum Verdict {
    Keep { until: Instant },
    Close(&'static str),
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.millis(), Ordering::Relaxed);
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    fn verdict(&self, now: Instant, limits: &Limits) -> Verdict {
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 {
            let until = self.at(blocked - 1) + limits.body_idle_timeout;
            if now >= until {
                return Verdict::Close("the client has not read its answer");
            }
            return Verdict::Keep {
                until: until.min(now + limits.keep_alive_idle),
            };
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // The request's own limits apply; look again later.
            return Verdict::Keep {
                until: now + limits.keep_alive_idle.min(limits.body_idle_timeout),
            };
        }
        let until = self.at(self.last.load(Ordering::Relaxed)) + limits.keep_alive_idle;
        if now >= until {
            Verdict::Close("idle keep-alive connection")
        } else {
            Verdict::Keep { until }
        }
    }
}

/// Marks a request in progress from the moment its head is parsed until
/// its answer's body is dropped (written or abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, recording when bytes move.
struct Watched<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    fn write_progress<T>(&self, poll: &Poll<io::Result<T>>) {
        match poll {
            Poll::Pending => {
                let now = self.activity.millis().saturating_add(1);
                let _ = self.activity.write_blocked.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => {
                self.activity.write_blocked.store(0, Ordering::Relaxed);
                self.activity.touch();
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_progress(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_progress(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails when the client sends nothing for
/// `body_idle_timeout` while someone waits for it. Time the handler spends
/// elsewhere (a full upload pipeline) does not count, so back-pressure
/// never looks like a stalled client.
pub struct TimedBody {
    inner: Incoming,
    /// Body bytes received so far, for the request's log line.
    received: Arc<AtomicU64>,
    limit: Duration,
    /// Armed on the first poll that has to wait; `None` until then.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    timed_out: bool,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration, received: Arc<AtomicU64>) -> TimedBody {
        TimedBody {
            inner,
            received,
            limit,
            timer: None,
            waiting: false,
            timed_out: false,
        }
    }

    fn timeout_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the request body sent nothing for {} s",
                self.limit.as_secs()
            ),
        )
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(Some(Err(this.timeout_error())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if let Some(Ok(data)) = &frame {
                    if let Some(data) = data.data_ref() {
                        this.received
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(io::Error::other)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    timer.as_mut().reset(deadline);
                    this.waiting = true;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.timed_out = true;
                    return Poll::Ready(Some(Err(this.timeout_error())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.timed_out && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A streamed answer body of griddav's own, as a rewrite of dav-server's
/// (a PROPFIND answer completed one response at a time).
pub type OwnBody = Pin<Box<dyn Body<Data = Bytes, Error = io::Error> + Send>>;

/// An answer whose body is a stream of griddav's own rather than
/// dav-server's [`DavBody`], which only a dav-server handler can make
/// stream. The service returns such an answer with an empty `DavBody` and
/// this extension holding the real body; [`AnswerBody`] sends that.
#[derive(Clone)]
pub struct StreamedAnswer(Arc<std::sync::Mutex<Option<OwnBody>>>);

impl StreamedAnswer {
    /// Makes `body` the body of `response`.
    pub fn attach(response: &mut Response<DavBody>, body: OwnBody) {
        *response.body_mut() = DavBody::empty();
        response
            .extensions_mut()
            .insert(StreamedAnswer(Arc::new(std::sync::Mutex::new(Some(body)))));
    }

    /// The body of `response`, taken out: its own stream if it has one,
    /// else dav-server's, boxed.
    pub fn take(response: &mut Response<DavBody>) -> OwnBody {
        match Self::take_own(response) {
            Some(own) => own,
            None => Box::pin(std::mem::replace(response.body_mut(), DavBody::empty())),
        }
    }

    fn take_own(response: &mut Response<DavBody>) -> Option<OwnBody> {
        let own = response.extensions_mut().remove::<StreamedAnswer>()?;
        // Only plain data behind it: a panic elsewhere leaves it usable.
        let body = own.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        body
    }
}

/// What an answer's body is made of.
enum Inner {
    Dav(DavBody),
    Own(OwnBody),
}

/// An answer's body as hyper gets it: dav-server's body, telling hyper its
/// exact size and its end when it is one buffer, so that the head and the
/// whole body leave in one write, with no chunked terminator written
/// afterwards; or a [`StreamedAnswer`]. Ends the request's [`InFlight`]
/// when dropped.
pub struct AnswerBody {
    inner: Inner,
    /// The size to announce; `None` when the answer has its own
    /// Content-Length (hyper checks the two agree) or streams.
    exact: Option<u64>,
    /// Logged when the answer is dropped: sent whole, or cut off.
    access: Access,
    _in_flight: InFlight,
}

/// Who a request's answer was for, when the request named a user: set by
/// the service on its response, read for the request's log line.
#[derive(Clone, Debug)]
pub struct AccessUser(pub String);

/// One request's log line, filled in as the answer goes out.
struct Access {
    method: http::Method,
    path: String,
    client: SocketAddr,
    started: Instant,
    received: Arc<AtomicU64>,
    /// `None` until an answer exists: a request whose client left before
    /// it was answered is logged and counted with status 0.
    status: Option<StatusCode>,
    user: Option<String>,
    sent: u64,
    /// The body's length when known ahead (hyper stops polling a body once
    /// it has written that many bytes).
    expected: Option<u64>,
    /// The body reported its end.
    ended: bool,
    /// Keeps an upload on the status page until its answer is done.
    _receiving: Option<crate::metrics::ReceivingGuard>,
}

impl Drop for Access {
    fn drop(&mut self) {
        // One line and one count per request, when its answer is done: the
        // duration and the bytes are the whole exchange's, not the head's.
        let bytes_in = self.received.load(Ordering::Relaxed);
        let duration = self.started.elapsed();
        crate::metrics::request_done(
            &self.method,
            &self.path,
            self.status,
            bytes_in,
            self.sent,
            duration,
        );
        tracing::info!(
            target: "griddav::access",
            method = %self.method,
            path = %self.path,
            status = self.status.map_or(0, |status| status.as_u16()),
            bytes_in,
            bytes_out = self.sent,
            duration_ms = duration.as_secs_f64() * 1000.0,
            user = %self.user.as_deref().unwrap_or("-"),
            client = %self.client,
            // Sent to its end, not cut off by the client going away.
            complete = self.ended || self.expected.is_some_and(|len| self.sent >= len),
            "request"
        );
    }
}

impl AnswerBody {
    fn wrap(
        mut response: Response<DavBody>,
        in_flight: InFlight,
        mut access: Access,
    ) -> Response<AnswerBody> {
        let own = StreamedAnswer::take_own(&mut response);
        let has_length = response
            .headers()
            .contains_key(http::header::CONTENT_LENGTH);
        access.status = Some(response.status());
        access.user = response
            .extensions()
            .get::<AccessUser>()
            .map(|user| user.0.clone());
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        response.map(|inner| {
            let inner = match own {
                Some(own) => Inner::Own(own),
                None => Inner::Dav(inner),
            };
            let exact = match &inner {
                Inner::Dav(DavBody {
                    inner: BodyType::Bytes(Some(bytes)),
                }) if !has_length => Some(bytes.len() as u64),
                _ => None,
            };
            access.expected = match &inner {
                Inner::Dav(DavBody {
                    inner: BodyType::Empty | BodyType::Bytes(None),
                }) => Some(0),
                _ => declared.or(exact),
            };
            AnswerBody {
                inner,
                exact,
                access,
                _in_flight: in_flight,
            }
        })
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let poll = match &mut this.inner {
            Inner::Dav(dav) => Pin::new(dav).poll_frame(cx),
            Inner::Own(own) => own.as_mut().poll_frame(cx),
        };
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.access.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.access.ended = true,
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Dav(dav) => matches!(dav.inner, BodyType::Empty | BodyType::Bytes(None)),
            Inner::Own(own) => own.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let Inner::Dav(dav) = &self.inner else {
            return SizeHint::default();
        };
        match (&dav.inner, self.exact) {
            (BodyType::Bytes(Some(_)), Some(len)) => SizeHint::with_exact(len),
            (BodyType::Empty | BodyType::Bytes(None), _) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
