//! The `Allow` header of OPTIONS answers: the methods that really work on
//! the resource, no more, no fewer.
//!
//! dav-server leaves PROPPATCH out everywhere (griddav keeps dead
//! properties on files, folders and `/`), and lists COPY on `/`, whose
//! every destination lies inside itself. It does know what the path is (a
//! file, a folder, `/`, or nothing) and says so through the list it builds;
//! griddav reads the kind from that list and answers its own.

use http::header::{HeaderMap, HeaderValue, ALLOW};
use http::Uri;

/// What an OPTIONS request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `OPTIONS *`: the server as a whole.
    Server,
    File,
    Folder,
    Root,
    /// Nothing there yet.
    Unmapped,
}

impl Kind {
    /// The kind dav-server's own list describes: it offers MKCOL only on
    /// an unmapped path, GET only on a file, DELETE only below `/`.
    fn of(dav_server_allow: &str, uri: &Uri) -> Kind {
        let has = |method: &str| {
            dav_server_allow
                .split(',')
                .any(|m| m.trim().eq_ignore_ascii_case(method))
        };
        if uri.path() == "*" {
            Kind::Server
        } else if has("MKCOL") {
            Kind::Unmapped
        } else if has("GET") {
            Kind::File
        } else if has("DELETE") {
            Kind::Folder
        } else {
            Kind::Root
        }
    }

    fn methods(self) -> &'static str {
        match self {
            Kind::Server => {
                "OPTIONS,GET,HEAD,PUT,PATCH,DELETE,PROPFIND,PROPPATCH,MKCOL,COPY,MOVE,LOCK,UNLOCK"
            }
            Kind::File => {
                "OPTIONS,GET,HEAD,PUT,PATCH,DELETE,PROPFIND,PROPPATCH,COPY,MOVE,LOCK,UNLOCK"
            }
            // GET and HEAD of a folder answer 405 (no index pages); PUT and
            // MKCOL on an existing folder are refused.
            Kind::Folder => "OPTIONS,DELETE,PROPFIND,PROPPATCH,COPY,MOVE,LOCK,UNLOCK",
            // `/` cannot be deleted (refused before the handler), moved, or
            // copied (every destination is inside it); MKCOL of it answers
            // 405 since it exists.
            Kind::Root => "OPTIONS,PROPFIND,PROPPATCH,LOCK,UNLOCK",
            Kind::Unmapped => "OPTIONS,PUT,MKCOL,LOCK",
        }
    }
}

/// Replaces the `Allow` header of dav-server's OPTIONS answer for `uri`.
pub fn correct(uri: &Uri, headers: &mut HeaderMap) {
    let Some(kind) = headers
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(|allow| Kind::of(allow, uri))
    else {
        return;
    };
    headers.insert(ALLOW, HeaderValue::from_static(kind.methods()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_dav_servers_lists() {
        let uri: Uri = "/x".parse().expect("uri");
        let cases = [
            ("OPTIONS,MKCOL,PUT,LOCK", Kind::Unmapped),
            (
                "HEAD,GET,PATCH,PUT,OPTIONS,PROPFIND,COPY,MOVE,DELETE,LOCK,UNLOCK",
                Kind::File,
            ),
            (
                "OPTIONS,PROPFIND,COPY,MOVE,DELETE,LOCK,UNLOCK",
                Kind::Folder,
            ),
            ("OPTIONS,PROPFIND,COPY,LOCK,UNLOCK", Kind::Root),
        ];
        for (list, kind) in cases {
            assert_eq!(Kind::of(list, &uri), kind, "{list}");
        }
        let star: Uri = "*".parse().expect("uri");
        assert_eq!(Kind::of("HEAD,GET", &star), Kind::Server);
    }

    #[test]
    fn no_allow_header_is_left_alone() {
        let mut headers = HeaderMap::new();
        correct(&"/".parse().expect("uri"), &mut headers);
        assert!(headers.get(ALLOW).is_none());
    }
}
