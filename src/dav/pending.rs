//! Uploads in progress, by path, so that a file being uploaded is not
//! reported missing.
//!
//! GNOME's gvfs FUSE bridge returns from `close()` before its PUT has
//! finished, and the `stat` that follows is a PROPFIND of the new file:
//! answered 404, `cp x /mount/y && sha256sum /mount/y` fails. So a request
//! that finds no file at a path with an upload in progress waits (at most
//! [`WAIT_FOR_UPLOAD`]) for that upload to commit or abort, then looks
//! again. A path that has a committed version is never waited for: its
//! readers get that version at once (publish on commit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// How long a request waits for an upload of the path it names. A client
/// that stats right after `close()` waits for the last segment to be
/// stored, usually milliseconds; an upload still receiving data after this
/// long is reported as not there yet.
pub const WAIT_FOR_UPLOAD: Duration = Duration::from_secs(30);

struct Entry {
    writers: usize,
    /// Dropped (which wakes every receiver) when the last writer ends.
    ended: watch::Sender<()>,
}

#[derive(Default)]
/// The paths with a PUT in progress, and a way to wait for each to end.
pub struct PendingUploads {
    paths: Mutex<HashMap<String, Entry>>,
}

impl PendingUploads {
    /// Registers an upload of `path` until the guard is released or dropped.
    pub fn begin(self: &Arc<Self>, path: &str) -> UploadGuard {
        let mut paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        paths
            .entry(path.to_owned())
            .and_modify(|entry| entry.writers += 1)
            .or_insert_with(|| Entry {
                writers: 1,
                ended: watch::channel(()).0,
            });
        UploadGuard {
            uploads: Some(Arc::clone(self)),
            path: path.to_owned(),
        }
    }

    fn end(&self, path: &str) {
        let mut paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = paths.get_mut(path) {
            entry.writers = entry.writers.saturating_sub(1);
            if entry.writers == 0 {
                paths.remove(path);
            }
        }
    }

    /// The paths with an upload in progress, for the status page.
    pub fn in_progress(&self) -> Vec<String> {
        let paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<String> = paths.keys().cloned().collect();
        all.sort();
        all
    }

    /// Waits until no upload of `path` is in progress, or `limit` passed.
    /// Returns whether there was one to wait for.
    pub async fn wait_for(&self, path: &str, limit: Duration) -> bool {
        let mut ended = {
            let paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
            match paths.get(path) {
                Some(entry) => entry.ended.subscribe(),
                None => return false,
            }
        };
        // Nothing is ever sent: `changed` returns when the sender is dropped.
        if tokio::time::timeout(limit, ended.changed()).await.is_err() {
            tracing::debug!(path, "upload still in progress after the wait limit");
        }
        true
    }
}

tokio::task_local! {
    /// Whether the request being handled waits for uploads (see [`Tracking`]).
    static WAITS: bool;
}

/// Whether the request being handled waits for an upload of a path it
/// finds empty: PROPFIND, GET and HEAD do; a PUT must not wait for itself.
pub fn request_waits() -> bool {
    WAITS.try_with(|waits| *waits).unwrap_or(false)
}

/// What a request has to do with uploads in progress, decided at the
/// HTTP layer before the handler runs.
pub struct Tracking {
    /// A PUT is registered from the moment it arrives: the handler's checks
    /// before `open` take a few database round trips, and a client that
    /// stats the file meanwhile must wait too.
    put: Option<UploadGuard>,
    waits: bool,
}

impl Tracking {
    /// Registers a PUT's path at once, and notes whether `request` waits.
    pub fn of<B>(uploads: &Arc<PendingUploads>, request: &http::Request<B>) -> Tracking {
        let method = request.method();
        let put = (method == http::Method::PUT)
            .then(|| dav_server::davpath::DavPath::from_uri(request.uri()).ok())
            .flatten()
            .and_then(|path| super::fs::ns_path(&path).ok())
            .map(|path| uploads.begin(&path));
        let waits = method == http::Method::GET
            || method == http::Method::HEAD
            || method.as_str() == "PROPFIND";
        Tracking { put, waits }
    }

    /// Runs the handling of the request; a PUT ends when its answer is ready.
    pub async fn around<F: std::future::Future>(self, handling: F) -> F::Output {
        let answer = WAITS.scope(self.waits, handling).await;
        drop(self.put);
        answer
    }
}

/// An upload in progress; ends when released or dropped.
pub struct UploadGuard {
    uploads: Option<Arc<PendingUploads>>,
    path: String,
}

impl UploadGuard {
    /// Ends the upload now (committed or failed): waiting requests look again.
    pub fn release(&mut self) {
        if let Some(uploads) = self.uploads.take() {
            uploads.end(&self.path);
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_last_upload_ends() {
        let uploads = Arc::new(PendingUploads::default());
        assert!(!uploads.wait_for("/a", WAIT_FOR_UPLOAD).await);
        let first = uploads.begin("/a");
        let mut second = uploads.begin("/a");
        let waiter = {
            let uploads = Arc::clone(&uploads);
            tokio::spawn(async move { uploads.wait_for("/a", WAIT_FOR_UPLOAD).await })
        };
        second.release();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one upload of /a is still going");
        drop(first);
        assert!(waiter.await.expect("waiter"));
        assert!(!uploads.wait_for("/a", WAIT_FOR_UPLOAD).await);
    }
}
