//! Linking an existing file into the tree by its capability: a griddav
//! file, or a Tahoe-LAFS immutable file (`URI:CHK:`, `URI:LIT:`) written by
//! stock Tahoe, which is then read, verified as Tahoe does, over WebDAV.
//!
//! Two ways in: `griddav link CAP PATH`, and over HTTP a `PUT` of the path
//! with an empty body and the capability in the `Griddav-Link` header
//! (docs/TAHOE.md). Either way the capability is opened first (a CHK
//! file's URI extension block found and verified against it, a griddav
//! file's trailer), so nothing unreadable enters the tree; then the row is
//! published like a PUT's: a file already there is replaced, a folder is
//! not. A capability is a secret: no message or log line here holds it.

use std::sync::Arc;
use std::time::SystemTime;

use dav_server::davpath::DavPath;
use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::fs::{ns_path, FsInner};
use crate::engine::{AnyCapError, Capability, EngineError, FileReader};
use crate::grid::Grid;
use crate::namespace::{Content, Namespace, NamespaceError, PublishOutcome};

/// The header that carries the capability of a linking `PUT`.
pub const LINK_HEADER: &str = "griddav-link";

/// The longest capability accepted (a `URI:LIT:` of 4 KiB is ~6.6 KiB).
const MAX_CAP_LEN: usize = 8 << 10;

/// Why a capability was not linked. Messages never hold the capability.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The text is not a capability griddav reads.
    #[error("not a capability griddav reads: {0}")]
    BadCap(#[from] AnyCapError),
    /// The header is missing, repeated, too long or not text.
    #[error("the Griddav-Link header must be one capability in ASCII")]
    BadHeader,
    /// A linking PUT came with a body.
    #[error("a PUT with Griddav-Link links a capability: its body must be empty")]
    BodyNotEmpty,
    /// The capability's shares are not found, or do not verify against it.
    #[error("the capability cannot be read: {0}")]
    Unreadable(#[source] EngineError),
    /// The file's folder does not exist.
    #[error("no folder to link into: create the parent folder first")]
    NoParent,
    /// A folder is at the path.
    #[error("a folder is at this path")]
    IsFolder,
    /// The path is locked.
    #[error("the path is locked: unlock it first")]
    Locked,
    /// The path is not one a file can have.
    #[error("invalid path: {0}")]
    BadPath(String),
    /// The namespace failed.
    #[error("namespace: {0}")]
    Namespace(#[source] NamespaceError),
}

impl LinkError {
    /// The answer to a linking PUT that failed this way.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadCap(_) | Self::BadHeader | Self::BodyNotEmpty | Self::BadPath(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unreadable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NoParent | Self::IsFolder => StatusCode::CONFLICT,
            Self::Locked => StatusCode::LOCKED,
            Self::Namespace(e) if e.is_out_of_space() => StatusCode::INSUFFICIENT_STORAGE,
            Self::Namespace(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn ns_failure(e: NamespaceError) -> LinkError {
    match e {
        NamespaceError::NotFound { .. } | NamespaceError::NotADirectory { .. } => {
            LinkError::NoParent
        }
        NamespaceError::IsADirectory { .. } => LinkError::IsFolder,
        NamespaceError::Locked { .. } => LinkError::Locked,
        NamespaceError::InvalidName { .. } => LinkError::BadPath(e.to_string()),
        other => LinkError::Namespace(other),
    }
}

/// Opens `cap` (verifying what it vouches for) and publishes it at
/// `path`, replacing a file there. The folder must exist.
pub async fn link_capability(
    ns: &Namespace,
    grid: &Grid,
    path: &str,
    cap: &str,
) -> Result<PublishOutcome, LinkError> {
    let parsed: Capability = cap.parse()?;
    match ns.lookup(path).await.map_err(ns_failure)? {
        Some(node) if node.is_dir() => return Err(LinkError::IsFolder),
        _ => {}
    }
    if !ns.discover(path).await.map_err(ns_failure)?.is_empty() {
        return Err(LinkError::Locked);
    }
    let reader = FileReader::open(grid, &parsed)
        .await
        .map_err(LinkError::Unreadable)?;
    let size = reader.size();
    // Stored in its canonical spelling: the same file linked twice is one
    // capability, freed once.
    ns.publish_file(
        path,
        Content::Cap(parsed.to_string()),
        size,
        SystemTime::now(),
        None,
    )
    .await
    .map_err(ns_failure)
}

/// The HTTP way in, for a server's [`GridFs`](super::GridFs).
#[derive(Clone)]
pub struct Linker {
    inner: Arc<FsInner>,
}

impl std::fmt::Debug for Linker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Linker")
    }
}

impl Linker {
    pub(crate) fn new(inner: Arc<FsInner>) -> Self {
        Self { inner }
    }

    /// Whether `request` is a linking PUT (it carries [`LINK_HEADER`]).
    pub fn wants<B>(request: &Request<B>) -> bool {
        request.method() == Method::PUT && request.headers().contains_key(LINK_HEADER)
    }

    /// Answers a linking PUT whose path the guard has made canonical: 201
    /// for a new file, 204 for a replaced one, 4xx with the reason.
    pub async fn serve<B>(&self, request: Request<B>) -> Response<dav_server::body::Body> {
        match self.link(&request).await {
            Ok(created) => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::NO_CONTENT
                };
                let mut response = Response::new(dav_server::body::Body::empty());
                *response.status_mut() = status;
                response
            }
            Err(e) => {
                let status = e.status();
                if status.is_server_error() {
                    tracing::error!(error = %e, "link failed");
                } else {
                    tracing::info!(error = %e, "link refused");
                }
                let mut response = Response::new(dav_server::body::Body::from(format!("{e}\n")));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
        }
    }

    async fn link<B>(&self, request: &Request<B>) -> Result<bool, LinkError> {
        let headers = request.headers();
        // An empty body only: a link is not an upload, and a body that
        // goes unread must not be one a client thinks was stored.
        if headers.contains_key(http::header::TRANSFER_ENCODING)
            || headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .any(|v| v.as_bytes() != b"0")
            || headers.contains_key(http::header::CONTENT_RANGE)
        {
            return Err(LinkError::BodyNotEmpty);
        }
        let mut values = headers.get_all(LINK_HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(LinkError::BadHeader);
        };
        if value.len() > MAX_CAP_LEN {
            return Err(LinkError::BadHeader);
        }
        let cap = value.to_str().map_err(|_| LinkError::BadHeader)?.trim();
        let path = DavPath::new(request.uri().path())
            .ok()
            .and_then(|p| ns_path(&p).ok())
            .ok_or_else(|| LinkError::BadPath("not a UTF-8 path".to_owned()))?;
        let outcome = link_capability(&self.inner.ns, &self.inner.grid, &path, cap).await?;
        self.inner.wake_collector(outcome.garbage_queued.is_some());
        Ok(outcome.created)
    }
}
