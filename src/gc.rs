//! Freeing shares that no name refers to any more, and cleaning up after
//! uploads that a crash interrupted.
//!
//! Content is immutable and shared (COPY shares a capability), so the
//! namespace decides when a capability is garbage; this collector deletes
//! its shares in the background, and resumes after a restart because the
//! garbage list lives in the namespace database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::engine::delete::{delete_shares_of_token, free_capability};
use crate::grid::Grid;
use crate::namespace::Namespace;

/// Capabilities claimed per round.
const BATCH: usize = 64;
/// How often the collector looks even when nobody woke it.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How long after the last write that ran out of space the collector
/// frees garbage at once rather than after the grace period.
const PRESSURE_WINDOW: Duration = Duration::from_secs(600);

/// Whether space ran out lately. While it did, the collector frees garbage
/// as soon as it is queued, skipping only content a running download still
/// reads, so that a DELETE makes room for the next PUT. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SpacePressure {
    inner: Arc<PressureInner>,
}

#[derive(Debug, Default)]
struct PressureInner {
    wake: Notify,
    until: Mutex<Option<Instant>>,
}

impl SpacePressure {
    /// A write ran out of space: free what can be freed now.
    pub fn report(&self) {
        *self.until() = Some(Instant::now() + PRESSURE_WINDOW);
        self.inner.wake.notify_one();
    }

    /// Whether a write ran out of space within the last ten minutes.
    pub fn active(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }

    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.inner.until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a running download still reads the content of a capability.
pub type InUse = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Deletes the shares of uploads that were under way when the last process
/// stopped, and forgets them.
pub async fn recover_interrupted_uploads(ns: &Namespace, grid: &Grid) {
    let pending = match ns.pending_uploads().await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::error!(error = %e, "cannot list interrupted uploads");
            return;
        }
    };
    for upload in pending {
        match delete_shares_of_token(grid, &upload.recovery_token).await {
            Ok(()) => {
                if let Err(e) = ns.end_upload(upload.id).await {
                    tracing::warn!(error = %e, "cannot end an interrupted upload's journal entry");
                }
                tracing::info!("removed the shares of an interrupted upload");
            }
            Err(e) => tracing::warn!(error = %e, "cannot remove an interrupted upload yet"),
        }
    }
}

/// One pass: frees everything that has been garbage for at least `grace`.
/// Returns how many capabilities were freed.
pub async fn collect_once(ns: &Namespace, grid: &Grid, grace: Duration) -> usize {
    collect(ns, grid, grace, |_| false).await
}

/// One pass under space pressure: frees all garbage, however recent, but
/// what `in_use` says a download still reads. Returns how many were freed.
pub async fn collect_under_pressure(ns: &Namespace, grid: &Grid, in_use: &InUse) -> usize {
    collect(ns, grid, Duration::ZERO, |cap| in_use(cap)).await
}

/// Frees the garbage older than `grace` that `keep` does not hold back;
/// what it holds back is released for a later pass.
async fn collect(
    ns: &Namespace,
    grid: &Grid,
    grace: Duration,
    keep: impl Fn(&str) -> bool,
) -> usize {
    let mut freed = 0;
    loop {
        let batch = match ns.take_garbage(BATCH, grace).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the garbage list");
                return freed;
            }
        };
        if batch.is_empty() {
            return freed;
        }
        let mut progress = false;
        for cap in batch {
            let done = if !keep(&cap) && free_capability(grid, &cap).await {
                freed += 1;
                progress = true;
                ns.garbage_done(&cap).await.map(|_| ())
            } else {
                ns.garbage_release(&cap).await
            };
            if let Err(e) = done {
                tracing::error!(error = %e, "cannot update the garbage list");
            }
        }
        if !progress {
            return freed;
        }
    }
}

/// Runs the collector until the runtime stops. `wake` makes it look now.
/// Call [`recover_interrupted_uploads`] before serving, not concurrently:
/// it would take the journal entries of new uploads for interrupted ones.
/// Under [`SpacePressure`], garbage is freed at once but for what
/// `in_use` names.
pub fn spawn_collector(
    ns: Namespace,
    grid: Grid,
    wake: Arc<Notify>,
    grace: Duration,
    pressure: SpacePressure,
    in_use: InUse,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let sleep = if grace.is_zero() {
            MAX_SLEEP
        } else {
            grace.min(MAX_SLEEP)
        };
        loop {
            let freed = collect_once(&ns, &grid, grace).await;
            if freed > 0 {
                tracing::debug!(freed, "garbage collected");
            }
            if pressure.active() {
                let freed = collect_under_pressure(&ns, &grid, &in_use).await;
                if freed > 0 {
                    tracing::info!(
                        freed,
                        "space is short: garbage freed before its grace period"
                    );
                }
            }
            tokio::select! {
                _ = wake.notified() => {
                    if !pressure.active() {
                        // Let the grace period of what was just queued run out.
                        tokio::time::sleep(grace.min(MAX_SLEEP)).await;
                    }
                }
                _ = pressure.inner.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EncodingParams, FileCap, UploadOptions, Uploader};
    use crate::grid::{MemoryStore, ShareStore};
    use crate::namespace::Content;

    fn grid() -> (Grid, Vec<Arc<MemoryStore>>) {
        let stores: Vec<Arc<MemoryStore>> = (0..10)
            .map(|i| Arc::new(MemoryStore::new(format!("m{i}"))))
            .collect();
        let servers = stores
            .iter()
            .map(|s| Arc::clone(s) as Arc<dyn ShareStore>)
            .collect();
        (Grid::new(servers), stores)
    }

    fn shares(stores: &[Arc<MemoryStore>]) -> usize {
        stores
            .iter()
            .map(|s| s.share_count_including_partial())
            .sum()
    }

    async fn started(grid: &Grid, bytes: &'static [u8]) -> Uploader {
        let options = UploadOptions::default();
        let mut uploader = Uploader::new(grid.clone(), EncodingParams::default(), options, None)
            .await
            .expect("start");
        uploader
            .write(bytes::Bytes::from_static(bytes))
            .await
            .expect("write");
        uploader
    }

    async fn stored(grid: &Grid, bytes: &'static [u8]) -> FileCap {
        started(grid, bytes).await.finish().await.expect("finish")
    }

    #[tokio::test]
    async fn interrupted_uploads_are_removed_and_published_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = Namespace::open(dir.path().join("ns.db"))
            .await
            .expect("namespace");
        let (grid, stores) = grid();

        let kept = stored(&grid, b"a file that is published").await;
        // An upload that finished its shares, then the process died before
        // publishing it: ten visible orphan shares and a journal entry.
        let unpublished = started(&grid, b"some bytes of a file").await;
        ns.begin_upload(&unpublished.recovery_token())
            .await
            .expect("journal");
        let orphan = unpublished.finish().await.expect("finish");
        assert_eq!(shares(&stores), 20);

        // A published upload whose journal entry ended with the publish.
        let published = ns.begin_upload("griddav-upload:1:unused").await;
        let published = published.expect("journal");
        ns.publish_file(
            "/kept",
            Content::Cap(kept.to_string()),
            kept.size,
            std::time::SystemTime::now(),
            Some(published),
        )
        .await
        .expect("publish");

        recover_interrupted_uploads(&ns, &grid).await;
        assert_eq!(
            shares(&stores),
            10,
            "only the published file's shares remain"
        );
        assert!(ns.pending_uploads().await.expect("pending").is_empty());
        assert!(crate::engine::Downloader::open(&grid, &orphan)
            .await
            .is_err());
        assert!(crate::engine::Downloader::open(&grid, &kept).await.is_ok());
    }

    #[tokio::test]
    async fn garbage_is_freed_once_unreferenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = Namespace::open(dir.path().join("ns.db"))
            .await
            .expect("namespace");
        let (grid, stores) = grid();
        let first = stored(&grid, b"version one").await;
        let now = std::time::SystemTime::now();
        ns.publish_file("/f", Content::Cap(first.to_string()), first.size, now, None)
            .await
            .expect("publish");
        ns.copy_file("/f", "/g").await.expect("copy");
        ns.publish_file("/f", Content::Inline(b"small".to_vec()), 5, now, None)
            .await
            .expect("replace");
        assert_eq!(
            collect_once(&ns, &grid, Duration::ZERO).await,
            0,
            "/g still refers to it"
        );
        assert_eq!(shares(&stores), 10);
        ns.remove("/g").await.expect("remove");
        assert_eq!(collect_once(&ns, &grid, Duration::ZERO).await, 1);
        assert_eq!(shares(&stores), 0);
    }
}
