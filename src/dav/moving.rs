//! MOVE onto an existing file, in one transaction.
//!
//! dav-server carries out `MOVE src` with `Overwrite: T` onto an existing
//! file in two steps: it removes the destination, then renames the source
//! onto it. A crash (or a failed rename) between the two loses the
//! destination without moving the source: the kill -9 test
//! (`tests/crash_loop.rs`) found `/m05` gone with `/f05` still in place.
//! The namespace's rename already replaces an existing file in the same
//! transaction as the move, so while a MOVE is served, [`GridFs`] leaves
//! the removal of its destination file to that rename.
//!
//! [`GridFs`]: super::GridFs

use std::future::Future;

use percent_encoding::percent_decode_str;

/// The MOVE a task is serving, as tree paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The path being moved, decoded, without a trailing slash.
    pub source: String,
    /// Where it goes, in the same form; it may exist already.
    pub destination: String,
}

tokio::task_local! {
    static SERVING: Move;
}

impl Move {
    /// The MOVE of `path` (a request path) to `destination` (the
    /// Destination header as the request guard left it: an absolute,
    /// percent-encoded path); `None` when either does not decode.
    pub fn of(path: &str, destination: &str) -> Option<Move> {
        Some(Move {
            source: tree_path(path)?,
            destination: tree_path(destination)?,
        })
    }
}

/// The path as the tree names it: decoded, without a trailing slash.
fn tree_path(encoded: &str) -> Option<String> {
    let decoded = percent_decode_str(encoded).decode_utf8().ok()?;
    let trimmed = decoded.trim_end_matches('/');
    Some(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// Runs `work` (the handler serving a request) marked as serving `serving`.
pub async fn serve<F: Future>(serving: Option<Move>, work: F) -> F::Output {
    match serving {
        Some(serving) => SERVING.scope(serving, work).await,
        None => work.await,
    }
}

/// The MOVE the current task serves, if any.
pub(crate) fn current() -> Option<Move> {
    SERVING.try_with(Move::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_move_is_known_only_inside_its_task() {
        assert_eq!(current(), None);
        let serving = Move::of("/a%20b", "/d/c%C3%A9/").expect("decodes");
        assert_eq!(serving.source, "/a b");
        assert_eq!(serving.destination, "/d/cé");
        let seen = serve(Some(serving.clone()), async { current() }).await;
        assert_eq!(seen, Some(serving));
        assert_eq!(current(), None);
        assert_eq!(Move::of("/%FF", "/x"), None, "not UTF-8");
    }
}
