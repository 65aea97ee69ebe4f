//! The checks griddav applies to a request before dav-server's handler sees
//! it. dav-server trusts its input in places where griddav cannot: it
//! deletes every child of `/` before it refuses to delete `/` itself, panics
//! on a lone `"` in `If-Match`, carries out a MOVE whose Destination is on
//! another server, and reads `Overwrite: x` as `T`. griddav protects its
//! users whatever the library does, so every request passes [`Guard::check`]
//! first, and dav-server runs under [`catching`], which turns a panic into
//! a 500 answer.
//!
//! The guard either refuses a request (with the status RFC 4918 or RFC 9110
//! asks for) or lets it through rewritten into one canonical form, so that
//! what it checked is exactly what dav-server acts on:
//! - the request path and the Destination are percent-decoded, must be UTF-8
//!   without control characters, have their dot segments resolved and every
//!   name normalized to NFC (docs/CLIENTS.md, "Names"), and are encoded again;
//! - `Depth`, `If`, `If-Match` and `If-None-Match` are re-serialized from
//!   what the guard parsed; `X-Litmus` is removed (it makes dav-server walk
//!   the whole tree for `Depth: infinity`).
//!
//! While [`PathKinds::unavailable`] says the tree cannot be used (a sync
//! of the namespace log failed), every request is refused with 503.

use std::any::Any;
use std::error::Error as StdError;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Buf;
use dav_server::DavHandler;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::namespace::Namespace;

/// What a path names, as far as the guard needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing is there.
    Missing,
    /// A file.
    File,
    /// A directory.
    Collection,
}

/// Tells the guard what a path names, without the guard (or `dav`)
/// depending on the other.
pub trait PathKinds: Send + Sync + 'static {
    /// What `path` (decoded and canonical: `/a/b`) names; `None` when that
    /// cannot be told, and the request then goes on unchecked.
    fn kind<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Option<PathKind>>;

    /// The principal of the lock `token` covering `path`: `Some(None)` for
    /// a lock taken without users, `None` when there is no such lock (or
    /// it cannot be told: the lock system then answers as usual).
    fn lock_principal<'a>(
        &'a self,
        _path: &'a str,
        _token: &'a str,
    ) -> BoxFuture<'a, Option<Option<String>>> {
        async { None }.boxed()
    }

    /// Makes the folder `path` and its missing ancestors.
    fn create_folders<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, bool> {
        async { true }.boxed()
    }

    /// Why no request can be served now, if that is so: every request is
    /// then answered 503 with this reason.
    fn unavailable(&self) -> Option<&'static str> {
        None
    }
}

impl PathKinds for Namespace {
    fn kind<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Option<PathKind>> {
        async move {
            match self.lookup(path).await {
                Ok(None) => Some(PathKind::Missing),
                Ok(Some(node)) if node.is_dir() => Some(PathKind::Collection),
                Ok(Some(_)) => Some(PathKind::File),
                Err(e) => {
                    tracing::debug!(error = %e, "guard: cannot look up a path");
                    None
                }
            }
        }
        .boxed()
    }

    fn lock_principal<'a>(
        &'a self,
        path: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Option<Option<String>>> {
        async move {
            let locks = self.discover(path).await.ok()?;
            locks
                .into_iter()
                .find(|l| l.token == token)
                .map(|l| l.principal)
        }
        .boxed()
    }

    fn create_folders<'a>(&'a self, path: &'a str) -> BoxFuture<'a, bool> {
        async move {
            let mut at = String::new();
            for name in path.split('/').filter(|n| !n.is_empty()) {
                at.push('/');
                at.push_str(name);
                match self.create_dir(&at).await {
                    Ok(_) | Err(crate::namespace::NamespaceError::AlreadyExists { .. }) => {}
                    Err(e) => {
                        tracing::warn!(path = at, error = %e, "cannot create a user's root folder");
                        return false;
                    }
                }
            }
            true
        }
        .boxed()
    }

    fn unavailable(&self) -> Option<&'static str> {
        // Otherwise dav-server makes the lock check that failed a 423
        // Locked, and everything else a bare 500.
        self.cannot_sync().then_some(
            "the namespace database could not be synced to disk, so nothing can be stored \
             or read safely: restart griddav (its log names the failed sync)",
        )
    }
}

/// Why a request was refused; becomes its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Refusal {
    /// The status of the answer (400, 403, 409, 502, ...).
    pub status: StatusCode,
    /// For the log and the client: never holds anything but the guard's words.
    pub reason: &'static str,
    /// An RFC 4918 precondition element, sent as a `DAV:error` body.
    pub precondition: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            precondition: None,
        }
    }

    fn bad_request(reason: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// The answer to send.
    pub fn into_response(self) -> Response<dav_server::body::Body> {
        let (content_type, body) = match self.precondition {
            Some(element) => (
                "application/xml; charset=utf-8",
                format!(
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
                     <D:error xmlns:D=\"DAV:\"><D:{element}/></D:error>\n"
                ),
            ),
            None => ("text/plain; charset=utf-8", format!("{}\n", self.reason)),
        };
        let mut response = Response::new(dav_server::body::Body::from(body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        response
    }
}

/// The checks of this module; cheap to clone.
#[derive(Clone, Default)]
pub struct Guard {
    kinds: Option<Arc<dyn PathKinds>>,
}

impl Guard {
    /// A guard that asks `kinds` what a path names (for trailing slashes).
    pub fn new(kinds: Arc<dyn PathKinds>) -> Self {
        Self { kinds: Some(kinds) }
    }

    /// A guard without a view of the tree: it skips the trailing-slash
    /// checks (for dav-server's own file systems, as in the benchmarks).
    pub fn without_tree() -> Self {
        Self { kinds: None }
    }

    /// Refuses `request`, or rewrites it into the canonical form the module
    /// docs describe and lets it through.
    pub async fn check<B>(&self, request: &mut Request<B>) -> Result<(), Refusal> {
        let refusal = self.check_inner(request).await;
        if let Err(refusal) = &refusal {
            tracing::debug!(
                method = %request.method(),
                status = refusal.status.as_u16(),
                reason = refusal.reason,
                "request refused before the handler"
            );
        }
        refusal
    }

    async fn check_inner<B>(&self, request: &mut Request<B>) -> Result<(), Refusal> {
        if let Some(reason) = self.kinds.as_ref().and_then(|kinds| kinds.unavailable()) {
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason));
        }
        // dav-server honours Depth: infinity on PROPFIND only for requests
        // that carry this header (it is litmus's); one policy for everyone.
        request.headers_mut().remove("x-litmus");

        let method = request.method().clone();
        if request.uri().path() == "*" {
            return if method == Method::OPTIONS {
                Ok(())
            } else {
                Err(Refusal::bad_request(
                    "'*' is a request target for OPTIONS only",
                ))
            };
        }
        // A user's paths, as they wrote them, are checked as if their root
        // were `/`, and then moved under it: nothing they can write names
        // anything outside (`..` above their `/` is refused by the parser).
        let user = request
            .extensions()
            .get::<crate::auth::Session>()
            .map(|s| Arc::clone(&s.0));
        let root: &[String] = user.as_ref().map_or(&[], |u| &u.root);
        let path = CanonicalPath::parse(request.uri().path())?;
        let host = request_host(request);
        check_headers(&method, request.headers_mut(), host.as_deref(), root)?;

        if path.is_root() && (method == Method::DELETE || method.as_str() == "MOVE") {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "the root collection cannot be deleted or moved",
            ));
        }
        let path = path.under(root);
        let copy_or_move = method.as_str() == "COPY" || method.as_str() == "MOVE";
        if copy_or_move {
            if let Some(dest) = destination(request.headers(), host.as_deref())? {
                check_copy_move_target(&dest)?;
                let dest = dest.under(root);
                check_copy_move(&path, &dest)?;
                set_header(request.headers_mut(), "destination", &dest.encoded())?;
            }
        }
        if let Some(user) = &user {
            self.check_user(user, &method, &path, request.headers())
                .await?;
        }
        self.check_trailing_slashes(&method, &path).await?;
        set_path(request, &path)
    }

    /// A user's root exists before their first request reaches the
    /// handler, and an UNLOCK of a lock someone else took is refused
    /// (dav-server's lock system is not told who unlocks).
    async fn check_user(
        &self,
        user: &crate::auth::User,
        method: &Method,
        path: &CanonicalPath,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let Some(kinds) = &self.kinds else {
            return Ok(());
        };
        if !user.root.is_empty() && !user.root_ready() {
            if !kinds.create_folders(&user.root_path()).await {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this user's root folder cannot be created",
                ));
            }
            user.set_root_ready();
        }
        // UNLOCK names its lock in Lock-Token; a refreshing LOCK in If.
        let tokens: Vec<String> = match method.as_str() {
            "UNLOCK" => single(headers, "lock-token")?
                .map(|v| v.trim().trim_start_matches('<').trim_end_matches('>'))
                .into_iter()
                .map(str::to_owned)
                .collect(),
            "LOCK" => single(headers, "if")?.map(state_tokens).unwrap_or_default(),
            _ => Vec::new(),
        };
        for token in &tokens {
            if let Some(Some(owner)) = kinds.lock_principal(&path.decoded(), token).await {
                if owner != user.name {
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "this lock belongs to another user",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A URL that ends in `/` names a collection: on a file it names
    /// nothing (404), and no file can be made there (409). A Destination
    /// is not checked: COPY of a file over `/coll/` with `Overwrite: T`
    /// replaces the collection (litmus copy_overwrite).
    async fn check_trailing_slashes(
        &self,
        method: &Method,
        path: &CanonicalPath,
    ) -> Result<(), Refusal> {
        let Some(kinds) = &self.kinds else {
            return Ok(());
        };
        // MKCOL's URL ends in '/' by habit; on a file dav-server answers 405.
        if method.as_str() == "MKCOL" || path.is_root() {
            return Ok(());
        }
        let creates_file = *method == Method::PUT || method.as_str() == "LOCK";
        if path.trailing_slash {
            match kinds.kind(&path.decoded()).await {
                Some(PathKind::File) if *method == Method::PUT => {
                    return Err(Refusal::new(
                        StatusCode::CONFLICT,
                        "a URL ending in '/' names a collection, not this file",
                    ))
                }
                Some(PathKind::File) => {
                    return Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        "a URL ending in '/' names a collection; this is a file",
                    ))
                }
                Some(PathKind::Missing) if creates_file => {
                    return Err(Refusal::new(
                        StatusCode::CONFLICT,
                        "a URL ending in '/' names a collection: no file can be made there",
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs dav-server's handler; a panic inside it becomes a logged 500
/// answer rather than a connection closed without one.
pub async fn catching<B, D, E>(
    handler: &DavHandler,
    request: Request<B>,
) -> Response<dav_server::body::Body>
where
    B: http_body::Body<Data = D, Error = E>,
    D: Buf + Send + 'static,
    E: StdError + Send + Sync + 'static,
{
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // A user's locks are theirs: the lock system is told who asks.
    let mut config = dav_server::DavConfig::new();
    if let Some(session) = request.extensions().get::<crate::auth::Session>() {
        config = config.principal(session.0.name.clone());
    }
    match AssertUnwindSafe(handler.handle_with(config, request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            tracing::error!(
                %method,
                path,
                panic = panic_message(panic.as_ref()),
                "the WebDAV handler panicked; answering 500"
            );
            let mut response = Response::new(dav_server::body::Body::empty());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            // Whatever the handler left unread of the body: start afresh.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(not a string)"
    }
}

// ---------------------------------------------------------------- paths

/// A path from a request line or a Destination: percent-decoded, checked,
/// dot segments resolved, every name in NFC.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CanonicalPath {
    names: Vec<String>,
    /// Whether the URL ends in `/` (after dot segments: `/a/.` does too).
    trailing_slash: bool,
}

impl CanonicalPath {
    fn parse(raw: &str) -> Result<Self, Refusal> {
        if raw
            .bytes()
            .any(|b| !(0x21..=0x7e).contains(&b) || b == b'#' || b == b'?')
        {
            return Err(Refusal::bad_request(
                "a path holds only visible ASCII, without '#' or '?'; encode the rest",
            ));
        }
        // An empty path (`http://host` as a Destination) is the root.
        let rest = if raw.is_empty() {
            ""
        } else {
            raw.strip_prefix('/')
                .ok_or_else(|| Refusal::bad_request("a path must start with '/'"))?
        };
        let mut names: Vec<String> = Vec::new();
        let mut trailing_slash = false;
        for segment in rest.split('/') {
            let decoded = percent_decode(segment)?;
            // A segment that does not add a name leaves the URL naming a collection.
            trailing_slash = true;
            match decoded.as_slice() {
                b"" | b"." => {}
                b".." => {
                    if names.pop().is_none() {
                        return Err(Refusal::bad_request("'..' above the root"));
                    }
                }
                bytes => {
                    names.push(check_name(bytes)?);
                    trailing_slash = false;
                }
            }
        }
        Ok(Self {
            trailing_slash: trailing_slash && !names.is_empty(),
            names,
        })
    }

    fn is_root(&self) -> bool {
        self.names.is_empty()
    }

    /// This path of a user whose root folder is `root`, as the tree names it.
    fn under(self, root: &[String]) -> CanonicalPath {
        if root.is_empty() {
            return self;
        }
        let trailing_slash = self.trailing_slash || self.is_root();
        let mut names = root.to_vec();
        names.extend(self.names);
        CanonicalPath {
            names,
            trailing_slash,
        }
    }

    /// `self` is a strict ancestor of `other`.
    fn contains(&self, other: &CanonicalPath) -> bool {
        self.names.len() < other.names.len() && other.names.starts_with(&self.names)
    }

    /// The namespace's form: `/`, `/a/b`.
    fn decoded(&self) -> String {
        if self.is_root() {
            return "/".to_owned();
        }
        self.names.iter().fold(String::new(), |mut out, name| {
            out.push('/');
            out.push_str(name);
            out
        })
    }

    /// The URL form, every byte but the unreserved ones encoded.
    fn encoded(&self) -> String {
        let mut out = String::new();
        for name in &self.names {
            out.push('/');
            for &b in name.as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        if self.trailing_slash || self.is_root() {
            out.push('/');
        }
        out
    }
}

fn percent_decode(segment: &str) -> Result<Vec<u8>, Refusal> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Refusal::bad_request("'%' must be followed by two hexadecimal digits")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// One decoded name: UTF-8 without control characters or '/', in NFC.
fn check_name(bytes: &[u8]) -> Result<String, Refusal> {
    let name = std::str::from_utf8(bytes)
        .map_err(|_| Refusal::bad_request("a name must be UTF-8 once percent-decoded"))?;
    if name.contains('/') {
        return Err(Refusal::bad_request("a name cannot contain '/' (%2F)"));
    }
    // C0 (NUL, TAB, CR, LF...), DEL and C1: no client can show them, and
    // they break logs and line-based tools.
    if name.chars().any(char::is_control) {
        return Err(Refusal::bad_request(
            "a name cannot contain control characters",
        ));
    }
    Ok(match is_nfc_quick(name.chars()) {
        IsNormalized::Yes => name.to_owned(),
        _ => name.nfc().collect(),
    })
}

fn set_path<B>(request: &mut Request<B>, path: &CanonicalPath) -> Result<(), Refusal> {
    let encoded = path.encoded();
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{encoded}?{query}"),
        None => encoded,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|_| Refusal::bad_request("the request target cannot be rewritten"))?,
    );
    *request.uri_mut() = Uri::from_parts(parts)
        .map_err(|_| Refusal::bad_request("the request target cannot be rewritten"))?;
    Ok(())
}

/// The authority the client addressed: `Host`, or the request target's
/// own in absolute form.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

// ---------------------------------------------------------------- COPY, MOVE

/// The Destination of a COPY or MOVE, canonical; `None` when there is
/// none (dav-server answers 400).
fn destination(headers: &HeaderMap, host: Option<&str>) -> Result<Option<CanonicalPath>, Refusal> {
    let Some(value) = single(headers, "destination")? else {
        return Ok(None);
    };
    let value = value.trim();
    if value.starts_with('/') {
        let path = value.split('?').next().unwrap_or_default();
        return CanonicalPath::parse(path).map(Some);
    }
    let uri: Uri = value
        .parse()
        .map_err(|_| Refusal::bad_request("the Destination is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(Refusal::bad_request(
            "the Destination is neither an absolute URL nor an absolute path",
        ));
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "the Destination is not on this server",
            ))
        }
    };
    if let Some(host) = host {
        if !same_server(authority, host, default_port) {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "the Destination is on another host or port",
            ));
        }
    }
    CanonicalPath::parse(uri.path()).map(Some)
}

/// Whether a Destination's authority names the server the request came
/// to; a port left out is the Destination scheme's default on both sides
/// (so a TLS proxy's `https://host/` matches `Host: host`).
fn same_server(dest: &Authority, host: &str, default_port: u16) -> bool {
    let Ok(host) = host.trim().parse::<Authority>() else {
        return false;
    };
    dest.host().eq_ignore_ascii_case(host.host())
        && dest.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port)
}

/// A Destination as its sender wrote it (a user's root is their `/`).
fn check_copy_move_target(dest: &CanonicalPath) -> Result<(), Refusal> {
    if dest.is_root() {
        // With Overwrite: T dav-server would first delete the whole tree.
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the root collection cannot be a Destination",
        ));
    }
    Ok(())
}

fn check_copy_move(source: &CanonicalPath, dest: &CanonicalPath) -> Result<(), Refusal> {
    check_copy_move_target(dest)?;
    if source.contains(dest) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the Destination is inside the source",
        ));
    }
    if dest.contains(source) {
        // Overwriting the Destination would delete the source with it.
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the Destination contains the source",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- headers

/// The value of a header that may appear once; `None` if absent.
fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::bad_request(
            "Depth, Destination, Overwrite, If, If-Range, Lock-Token and Timeout may appear once",
        ));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| Refusal::bad_request("a WebDAV header holds visible ASCII only"))
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), Refusal> {
    let value = HeaderValue::from_str(value)
        .map_err(|_| Refusal::bad_request("a header cannot be rewritten"))?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(())
}

/// Checks the headers dav-server parses (its parsers panic on some
/// malformed values and ignore others) and re-serializes those it would
/// read differently.
fn check_headers(
    method: &Method,
    headers: &mut HeaderMap,
    host: Option<&str>,
    root: &[String],
) -> Result<(), Refusal> {
    if let Some(value) = single(headers, "depth")? {
        let (depth, noroot) = parse_depth(value)?;
        if method.as_str() == "PROPFIND" {
            if depth == "infinity" {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    reason: "PROPFIND with Depth: infinity is refused; walk the tree with Depth: 1",
                    precondition: Some("propfind-finite-depth"),
                });
            }
            if noroot && depth == "1" {
                // dav-server's answer without Depth is the children alone.
                headers.remove("depth");
            } else {
                set_header(headers, "depth", depth)?;
            }
        } else {
            set_header(headers, "depth", depth)?;
        }
    }
    if let Some(value) = single(headers, "overwrite")? {
        if value != "T" && value != "F" {
            return Err(Refusal::bad_request("Overwrite is T or F"));
        }
    }
    if let Some(value) = single(headers, "if")? {
        let rewritten = parse_if(value, host, root)?;
        set_header(headers, "if", &rewritten)?;
    }
    for name in ["if-match", "if-none-match"] {
        if let Some(rewritten) = parse_etag_lists(headers, name)? {
            set_header(headers, name, &rewritten)?;
        }
    }
    if let Some(value) = single(headers, "if-range")? {
        check_if_range(value)?;
    }
    if let Some(value) = single(headers, "lock-token")? {
        let inner = value
            .trim()
            .strip_prefix('<')
            .and_then(|v| v.strip_suffix('>'))
            .ok_or_else(|| Refusal::bad_request("Lock-Token is a URI in '<' '>'"))?;
        check_absolute_uri(inner)?;
    }
    if let Some(value) = single(headers, "timeout")? {
        check_timeout(value)?;
    }
    Ok(())
}

/// `0`, `1` or `infinity` (any case), with Microsoft's `,noroot` allowed.
fn parse_depth(value: &str) -> Result<(&'static str, bool), Refusal> {
    let value = value.trim().to_ascii_lowercase();
    let (depth, noroot) = match value.split_once(',') {
        Some((depth, rest)) if rest.trim() == "noroot" => (depth.trim(), true),
        Some(_) => return Err(Refusal::bad_request("Depth is 0, 1 or infinity")),
        None => (value.as_str(), false),
    };
    let depth = match depth {
        "0" => "0",
        "1" => "1",
        "infinity" => "infinity",
        _ => return Err(Refusal::bad_request("Depth is 0, 1 or infinity")),
    };
    Ok((depth, noroot))
}

fn check_timeout(value: &str) -> Result<(), Refusal> {
    let bad = || Refusal::bad_request("Timeout is a list of Second-n or Infinite");
    for word in value.split(',') {
        let word = word.trim();
        if word.eq_ignore_ascii_case("infinite") {
            continue;
        }
        let seconds = word
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("second-"))
            .and_then(|_| word.get(7..))
            .ok_or_else(bad)?;
        if seconds.is_empty() || seconds.len() > 20 || !seconds.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
    }
    Ok(())
}

fn skip_lws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// One entity-tag at the start of `s` (RFC 9110 section 8.8.3):
/// `[W/] DQUOTE *etagc DQUOTE`, etagc being visible ASCII but `"`.
/// Returns the tag and the rest.
fn entity_tag(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix("W/").unwrap_or(s);
    let inner = body.strip_prefix('"')?;
    let end = inner.find('"')?;
    if !inner.as_bytes()[..end]
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b))
    {
        return None;
    }
    let len = (s.len() - body.len()) + 1 + end + 1;
    Some((&s[..len], &s[len..]))
}

/// `If-Match` / `If-None-Match` over all their lines: `*` or a list of
/// entity-tags. Returns the value to hand on: dav-server splits a list
/// at every comma, so a tag holding one (never one of griddav's, which
/// cannot match anyway) is left out rather than split.
fn parse_etag_lists(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, Refusal> {
    let bad =
        || Refusal::bad_request("If-Match and If-None-Match are '*' or a list of entity-tags");
    let mut any = false;
    let mut star = false;
    let mut tags: Vec<&str> = Vec::new();
    let mut count = 0usize;
    for value in headers.get_all(name) {
        any = true;
        let value = value.to_str().map_err(|_| bad())?;
        if value.trim() == "*" {
            star = true;
            continue;
        }
        let mut rest = skip_lws(value);
        loop {
            // Empty list elements are allowed (RFC 9110 section 5.6.1).
            while let Some(after) = rest.strip_prefix(',') {
                rest = skip_lws(after);
            }
            if rest.is_empty() {
                break;
            }
            let (tag, after) = entity_tag(rest).ok_or_else(bad)?;
            count += 1;
            if !tag.contains(',') {
                tags.push(tag);
            }
            rest = skip_lws(after);
            if !(rest.is_empty() || rest.starts_with(',')) {
                return Err(bad());
            }
        }
    }
    if !any {
        return Ok(None);
    }
    if star {
        return if count == 0 {
            Ok(Some("*".to_owned()))
        } else {
            Err(bad())
        };
    }
    Ok(Some(tags.join(", ")))
}

fn check_if_range(value: &str) -> Result<(), Refusal> {
    let value = value.trim();
    let ok = if value.starts_with('"') || value.starts_with("W/") {
        entity_tag(value).is_some_and(|(_, rest)| rest.is_empty())
    } else {
        httpdate::parse_http_date(value).is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::bad_request(
            "If-Range is an entity-tag or an HTTP date",
        ))
    }
}

/// `scheme ":" ...` of visible ASCII, without `<`, `>` or `"`.
fn check_absolute_uri(uri: &str) -> Result<(), Refusal> {
    let bad = || Refusal::bad_request("a state token or Lock-Token is an absolute URI");
    let (scheme, _) = uri.split_once(':').ok_or_else(bad)?;
    let mut scheme_chars = scheme.bytes();
    let scheme_ok = scheme_chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_chars.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let chars_ok = uri
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && !b"<>\"".contains(&b));
    if scheme_ok && chars_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The state tokens of an `If` header: the `<...>` inside its lists (a
/// `<...>` outside them is a resource tag). At most 16: more is no
/// client's.
fn state_tokens(value: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut in_list = false;
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        match c {
            '(' => in_list = true,
            ')' => in_list = false,
            '<' => {
                let Some((inner, after)) = angle(rest) else {
                    break;
                };
                if in_list && tokens.len() < 16 {
                    tokens.push(inner.to_owned());
                }
                rest = after;
                continue;
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    tokens
}

/// The text between `<` and `>` at the start of `s`, and the rest.
fn angle(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some((&inner[..end], &inner[end + 1..]))
}

/// Parses an `If` header (RFC 4918 section 10.4) and writes it again the
/// way dav-server's parser reads it (which panics on an unterminated
/// `<` or `[`, and ignores a whole header it cannot parse, condition
/// and all). Resource tags become absolute URLs with canonical paths, so
/// that they name what the request paths name.
///
/// ```text
/// If = 1*No-tag-list | 1*Tagged-list      Tagged-list = Resource-Tag 1*List
/// List = "(" 1*Condition ")"             Condition = ["Not"] (Coded-URL | "[" entity-tag "]")
/// ```
fn parse_if(value: &str, host: Option<&str>, root: &[String]) -> Result<String, Refusal> {
    let bad = |reason| Refusal::bad_request(reason);
    let mut out = String::with_capacity(value.len() + 32);
    let mut rest = skip_lws(value);
    let mut tagged: Option<bool> = None;
    let mut lists = 0usize;
    while !rest.is_empty() {
        if rest.starts_with('<') {
            if tagged == Some(false) {
                return Err(bad("If: tagged and untagged lists cannot be mixed"));
            }
            tagged = Some(true);
            let (tag, after) = angle(rest).ok_or_else(|| bad("If: a '<' without its '>'"))?;
            out.push_str(&resource_tag(tag, host, root)?);
            out.push(' ');
            rest = skip_lws(after);
            if !rest.starts_with('(') {
                return Err(bad("If: a resource tag must be followed by a list"));
            }
        } else if rest.starts_with('(') {
            // After a tag, its lists; before any, the first untagged one.
            tagged.get_or_insert(false);
            rest = if_list(rest, &mut out)?;
            out.push(' ');
            lists += 1;
        } else {
            return Err(bad("If: expected '(' or '<'"));
        }
        rest = skip_lws(rest);
    }
    if lists == 0 {
        return Err(bad("If: no list"));
    }
    Ok(out.trim_end().to_owned())
}

/// One `( ... )` at the start of `s`, written to `out`; returns the rest.
fn if_list<'a>(s: &'a str, out: &mut String) -> Result<&'a str, Refusal> {
    let bad = |reason| Refusal::bad_request(reason);
    let mut rest = s.strip_prefix('(').unwrap_or(s);
    out.push('(');
    let mut conditions = 0usize;
    loop {
        rest = skip_lws(rest);
        if let Some(after) = rest.strip_prefix(')') {
            if conditions == 0 {
                return Err(bad("If: an empty list"));
            }
            out.push(')');
            return Ok(after);
        }
        if conditions > 0 {
            out.push(' ');
        }
        if rest.get(..3).is_some_and(|w| w.eq_ignore_ascii_case("not")) {
            out.push_str("Not ");
            rest = skip_lws(&rest[3..]);
        }
        if rest.starts_with('<') {
            let (token, after) = angle(rest).ok_or_else(|| bad("If: a '<' without its '>'"))?;
            check_absolute_uri(token)?;
            out.push('<');
            out.push_str(token);
            out.push('>');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('[') {
            let (tag, after) = entity_tag(inner).ok_or_else(|| bad("If: a bad entity-tag"))?;
            rest = after
                .strip_prefix(']')
                .ok_or_else(|| bad("If: an entity-tag without its ']'"))?;
            out.push('[');
            out.push_str(tag);
            out.push(']');
        } else if rest.is_empty() {
            return Err(bad("If: a list without its ')'"));
        } else {
            return Err(bad("If: a condition is a <state-token> or an [entity-tag]"));
        }
        conditions += 1;
    }
}

/// A resource tag as an absolute URL with a canonical path: dav-server
/// ignores an `If` header whose tag is not an absolute URL. A user's tags,
/// whatever host they name, are paths under their root.
fn resource_tag(tag: &str, host: Option<&str>, root: &[String]) -> Result<String, Refusal> {
    let bad = || Refusal::bad_request("If: a resource tag is a URL");
    if tag.starts_with('/') {
        let path = CanonicalPath::parse(tag.split('?').next().unwrap_or_default())?.under(root);
        let host = host.unwrap_or("localhost");
        return Ok(format!("<http://{host}{}>", path.encoded()));
    }
    let uri: Uri = tag.parse().map_err(|_| bad())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad());
    };
    let path = CanonicalPath::parse(uri.path())?.under(root);
    Ok(format!("<{scheme}://{authority}{}>", path.encoded()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn canonical(raw: &str) -> Result<String, StatusCode> {
        CanonicalPath::parse(raw)
            .map(|p| p.encoded())
            .map_err(|r| r.status)
    }

    #[test]
    fn every_spelling_of_the_root_is_the_root() {
        for root in [
            "/",
            "//",
            "/./",
            "/%2e/",
            "/%2E",
            "/a/..",
            "/a/../",
            "/a/b/../..",
            "",
        ] {
            let path = CanonicalPath::parse(root).unwrap();
            assert!(path.is_root(), "{root:?}");
            assert_eq!(path.encoded(), "/");
        }
        for bad in ["/..", "/a/../..", "/%2e%2e", "/%2F", "/a%2fb"] {
            assert_eq!(canonical(bad), Err(StatusCode::BAD_REQUEST), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_decoded_checked_and_encoded_again() {
        assert_eq!(canonical("/a//b/./c/").unwrap(), "/a/b/c/");
        assert_eq!(canonical("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(canonical("/a%20b").unwrap(), "/a%20b");
        assert_eq!(canonical("/%C3%BC").unwrap(), "/%C3%BC");
        // NFD u + combining diaeresis becomes NFC ü.
        assert_eq!(canonical("/u%CC%88").unwrap(), "/%C3%BC");
        for bad in [
            "/%ff%fe",
            "/%c0%af",
            "/%zz",
            "/%",
            "/%4",
            "/a%0Ab",
            "/a%0db",
            "/a%09b",
            "/a%7Fb",
            "/a%00b",
            "/a%C2%85b",
            "/a#b",
            "relative",
        ] {
            assert_eq!(canonical(bad), Err(StatusCode::BAD_REQUEST), "{bad:?}");
        }
    }

    #[test]
    fn ancestry_is_by_name() {
        let p = |s| CanonicalPath::parse(s).unwrap();
        assert!(p("/a").contains(&p("/a/b")));
        assert!(p("/").contains(&p("/a")));
        assert!(!p("/a").contains(&p("/ab")));
        assert!(!p("/a").contains(&p("/a/")));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn check(method: &str, pairs: &[(&'static str, &str)]) -> Result<HeaderMap, StatusCode> {
        let mut map = headers(pairs);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        check_headers(&method, &mut map, Some("127.0.0.1:80"), &[])
            .map(|()| map)
            .map_err(|r| r.status)
    }

    #[test]
    fn malformed_conditional_headers_are_refused() {
        for (name, value) in [
            ("if-match", "\""),
            ("if-match", "W/\""),
            ("if-match", "\"a\" \"b\""),
            ("if-match", "*, \"a\""),
            ("if-none-match", "\""),
            ("if-none-match", "abc"),
            ("if", "<"),
            ("if", "(<"),
            ("if", "([x)"),
            ("if", "([\"x\")"),
            ("if", "([\"x)"),
            ("if", "()"),
            ("if", "(<no-scheme>)"),
            ("if", "(Not)"),
            ("if", "(plain:word)"),
            ("if", "<http://h/a>"),
            ("if", "(<urn:x>) <http://h/a> (<urn:y>)"),
            ("if", ""),
            ("if-range", "\""),
            ("if-range", "yesterday"),
            ("lock-token", "opaquelocktoken:x"),
            ("lock-token", "<"),
            ("lock-token", "<>"),
            ("timeout", "Second-"),
            ("timeout", "Second-x"),
            ("timeout", "Forever"),
            ("depth", "2"),
            ("depth", "infinite"),
            ("overwrite", "t"),
            ("overwrite", "yes"),
            ("overwrite", ""),
        ] {
            assert_eq!(
                check("PUT", &[(name, value)]).err(),
                Some(StatusCode::BAD_REQUEST),
                "{name}: {value}"
            );
        }
        assert_eq!(
            check("PUT", &[("depth", "0"), ("depth", "0")]).err(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn good_conditional_headers_pass_in_a_form_dav_server_reads() {
        let ok = |name: &'static str, value: &str| {
            check("PUT", &[(name, value)])
                .unwrap_or_else(|s| panic!("{name}: {value}: {s}"))
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(ok("if-match", "*").unwrap(), "*");
        assert_eq!(
            ok("if-match", "\"a\",W/\"b\" , ,").unwrap(),
            "\"a\", W/\"b\""
        );
        // A comma inside a tag would be split by dav-server: it is left out.
        assert_eq!(ok("if-none-match", "\"a,\"").unwrap(), "");
        assert_eq!(ok("if-match", "\"\"").unwrap(), "\"\"");
        assert_eq!(
            ok("if", "(<opaquelocktoken:a-b>) (Not <DAV:no-lock>)").unwrap(),
            "(<opaquelocktoken:a-b>) (Not <DAV:no-lock>)"
        );
        assert_eq!(
            ok("if", " <http://h:1/a/%75%CC%88> ( not<urn:x> [W/\"e]\"] )").unwrap(),
            "<http://h:1/a/%C3%BC> (Not <urn:x> [W/\"e]\"])"
        );
        assert_eq!(
            ok("if", "</doc.docx> (<urn:t>)").unwrap(),
            "<http://127.0.0.1:80/doc.docx> (<urn:t>)"
        );
        assert_eq!(ok("depth", "Infinity").unwrap(), "infinity");
        ok("if-range", "\"abc\"");
        ok("if-range", "Sun, 06 Nov 1994 08:49:37 GMT");
        ok("lock-token", "<opaquelocktoken:1234>");
        ok("timeout", "Infinite, Second-4100000000");
        ok("overwrite", "F");
    }

    #[test]
    fn state_tokens_are_the_coded_urls_inside_lists() {
        assert_eq!(
            state_tokens("</a> (<urn:uuid:1> [\"e\"]) (Not <urn:uuid:2>) <http://h/b> (<x:3>)"),
            ["urn:uuid:1", "urn:uuid:2", "x:3"]
        );
        assert!(state_tokens("([\"e\"])").is_empty());
        assert!(state_tokens("(<unterminated").is_empty());
    }

    #[test]
    fn propfind_depth_policy() {
        for value in ["infinity", "Infinity", "infinity,noroot"] {
            assert_eq!(
                check("PROPFIND", &[("depth", value)]).err(),
                Some(StatusCode::FORBIDDEN)
            );
        }
        let map = check("PROPFIND", &[("depth", "1,noroot")]).unwrap();
        assert!(map.get("depth").is_none());
        // DELETE and COPY take infinity.
        check("DELETE", &[("depth", "infinity")]).unwrap();
    }

    #[test]
    fn destinations_on_other_servers_are_refused() {
        let dest = |value: &str| {
            destination(&headers(&[("destination", value)]), Some("127.0.0.1:4918"))
                .map(|d| d.map(|p| p.encoded()))
                .map_err(|r| r.status)
        };
        assert_eq!(dest("http://127.0.0.1:4918/a").unwrap().unwrap(), "/a");
        assert_eq!(dest("/a/b/").unwrap().unwrap(), "/a/b/");
        assert_eq!(dest("http://127.0.0.1:4918").unwrap().unwrap(), "/");
        for other in [
            "http://127.0.0.1:4919/a",
            "http://127.0.0.2:4918/a",
            "http://127.0.0.1/a",
            "ftp://127.0.0.1:4918/a",
        ] {
            assert_eq!(dest(other).err(), Some(StatusCode::BAD_GATEWAY), "{other}");
        }
        assert_eq!(dest("a/b").err(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            dest("http://127.0.0.1:4918/%ff").err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert!(same_server(&"Host:80".parse().unwrap(), "host", 80));
        assert!(same_server(&"host".parse().unwrap(), "host", 443));
    }

    mod panicking {
        use dav_server::davpath::DavPath;
        use dav_server::fs::{
            DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsFuture, FsStream, OpenOptions,
            ReadDirMeta,
        };

        /// A file system whose every call panics, as a stand-in for a
        /// dav-server bug.
        #[derive(Clone)]
        pub(crate) struct Panics;

        impl DavFileSystem for Panics {
            fn open<'a>(
                &'a self,
                _: &'a DavPath,
                _: OpenOptions,
            ) -> FsFuture<'a, Box<dyn DavFile>> {
                panic!("open")
            }
            fn read_dir<'a>(
                &'a self,
                _: &'a DavPath,
                _: ReadDirMeta,
            ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
                panic!("read_dir")
            }
            fn metadata<'a>(&'a self, _: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
                panic!("metadata")
            }
        }
    }

    #[tokio::test]
    async fn a_panic_in_the_handler_becomes_a_500() {
        let handler = DavHandler::builder()
            .filesystem(Box::new(panicking::Panics))
            .build_handler();
        let request = Request::builder()
            .method("GET")
            .uri("/x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = catching(&handler, request).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
