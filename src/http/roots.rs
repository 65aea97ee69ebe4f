//! Answers to a user whose `root` is not `/`: [`crate::http::guard`] moved
//! their request into the root folder, and this takes the root out of the
//! answer again, so that every href and location is a path the user sent.
//!
//! dav-server writes hrefs as absolute paths encoded with percent-encoding
//! that leaves letters, digits, `-._~` alone; a root is made of exactly
//! those (see [`crate::auth::root_names`]), so its encoded form is a plain
//! prefix of the hrefs under it. An href outside the root (a lock on an
//! ancestor that blocks the request) becomes the user's `/`: it is the
//! nearest thing the user can name, and it tells nothing of the tree above.

use http::header::{HeaderValue, CONTENT_LOCATION, LOCATION};
use http::{Method, Response};

use crate::auth::User;
use crate::dav::xmlstream::{Rewrite, Rewritten};
use crate::http::listener::StreamedAnswer;

/// The root's URL form: `/a/b`; empty for `/`.
pub fn encoded_root(user: &User) -> String {
    user.root.iter().map(|n| format!("/{n}")).collect()
}

/// Whether answers to `method` can name paths in their bodies.
fn names_paths(method: &Method) -> bool {
    matches!(
        method.as_str(),
        "PROPFIND" | "PROPPATCH" | "LOCK" | "DELETE" | "COPY" | "MOVE" | "MKCOL" | "PUT"
    )
}

/// `path` (an href's text) seen from inside `root`.
fn strip(path: &str, root: &str) -> String {
    // An absolute URL's path is the part after its authority.
    let (origin, rest) = match path.find("://") {
        Some(i) => {
            let after = &path[i + 3..];
            let slash = after.find('/').map_or(path.len(), |j| i + 3 + j);
            path.split_at(slash)
        }
        None => ("", path),
    };
    let inner = match rest.strip_prefix(root) {
        Some("") => "/",
        Some(inner) if inner.starts_with('/') => inner,
        _ if rest.starts_with('/') => "/",
        // Not a path (a dead property's own text): left as it is.
        _ => return path.to_owned(),
    };
    format!("{origin}{inner}")
}

/// Every `<href>` / `<D:href>` text of an XML body, taken out of `root`.
pub fn strip_hrefs(body: &[u8], root: &str) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else {
        return body.to_vec();
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("href>") {
        let (before, after) = rest.split_at(i + 5);
        out.push_str(before);
        rest = after;
        // An opening tag: `<href>` or `<P:href>`, not `</P:href>`.
        let tag = before.rfind('<').map_or("", |start| &before[start..]);
        let opening = tag.len() >= 6
            && !tag.starts_with("</")
            && tag[1..tag.len() - 5]
                .strip_suffix(':')
                .map_or(tag.len() == 6, |p| !p.contains([' ', '/', '>']));
        if !opening {
            continue;
        }
        let end = rest.find('<').unwrap_or(rest.len());
        out.push_str(&strip(rest[..end].trim(), root));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// Takes `user`'s root out of an answer to `method`.
pub async fn strip_answer(
    user: &User,
    method: &Method,
    response: Response<dav_server::body::Body>,
) -> Response<dav_server::body::Body> {
    let root = encoded_root(user);
    if root.is_empty() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    for name in [LOCATION, CONTENT_LOCATION] {
        if let Some(value) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
            let stripped = strip(value, &root);
            if let Ok(value) = HeaderValue::from_str(&stripped) {
                parts.headers.insert(name, value);
            }
        }
    }
    let xml = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("xml"));
    if !xml || !names_paths(method) {
        return Response::from_parts(parts, body);
    }
    // As the answer streams, one child of its root element at a time
    // (dav::xmlstream): a big folder's listing is never held whole.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let mut response = Response::from_parts(parts, body);
    let body = StreamedAnswer::take(&mut response);
    StreamedAnswer::attach(
        &mut response,
        Box::pin(Rewritten::new(body, Stripping { root })),
    );
    response
}

/// Takes the root out of the hrefs of each child of an answer's root.
struct Stripping {
    root: String,
}

impl Rewrite for Stripping {
    fn child(&mut self, _root_open: &[u8], child: &[u8]) -> Option<Vec<u8>> {
        let stripped = strip_hrefs(child, &self.root);
        (stripped != child).then_some(stripped)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn hrefs_lose_the_root() {
        let body = "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/u/alice/</D:href>\
            </D:response><D:response><D:href>/u/alice/a%20b/c</D:href></D:response>\
            <response><href>http://h:1/u/alice/x</href></response>\
            <D:lockroot><D:href>/u/alice</D:href></D:lockroot>\
            <D:href>/u/alicex/y</D:href><D:href>/u</D:href><D:hrefs>z</D:hrefs></D:multistatus>";
        let out = String::from_utf8(strip_hrefs(body.as_bytes(), "/u/alice")).unwrap();
        assert_eq!(
            out,
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/</D:href>\
            </D:response><D:response><D:href>/a%20b/c</D:href></D:response>\
            <response><href>http://h:1/x</href></response>\
            <D:lockroot><D:href>/</D:href></D:lockroot>\
            <D:href>/</D:href><D:href>/</D:href><D:hrefs>z</D:hrefs></D:multistatus>"
        );
    }
}
