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
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::dav::GridFs;

/// The dav-server handler over griddav's file and lock systems.
pub fn dav_handler(fs: GridFs, locks: Box<dyn DavLockSystem>, read_buf_size: usize) -> DavHandler {
    DavHandler::builder()
        .filesystem(Box::new(fs))
        .locksystem(locks)
        .read_buf_size(read_buf_size)
        .build_handler()
}

/// Accepts connections on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handler: DavHandler,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(handler.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    handler: DavHandler,
    request: Request<Incoming>,
) -> Result<Response<dav_server::body::Body>, Infallible> {
    let declared = declared_length(&request);
    let body_was_bad = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&body_was_bad);
    let request = request.map(|body| CheckedBody {
        inner: body,
        declared,
        received: 0,
        bad: flag,
    });
    let mut response = handler.handle(request).await;
    if body_was_bad.load(Ordering::Relaxed) && response.status().is_server_error() {
        // dav-server reports a broken request body as an I/O error (502);
        // the fault is the client's. Nothing was published either way.
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(response)
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
    inner: Incoming,
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
