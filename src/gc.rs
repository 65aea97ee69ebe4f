//! Freeing shares that no name refers to any more, and cleaning up after
//! uploads that a crash interrupted.
//!
//! Content is immutable and shared (COPY shares a capability), so the
//! namespace decides when a capability is garbage; this collector deletes
//! its shares in the background, and resumes after a restart because the
//! garbage list lives in the namespace database.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::engine::delete::{delete_shares, delete_shares_of_token};
use crate::engine::FileCap;
use crate::grid::Grid;
use crate::namespace::Namespace;

/// Capabilities claimed per round.
const BATCH: usize = 64;
/// How often the collector looks even when nobody woke it.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Deletes the shares of one capability; false if some server could not be asked.
pub async fn free_capability(grid: &Grid, cap: &str) -> bool {
    let cap: FileCap = match cap.parse() {
        Ok(cap) => cap,
        Err(e) => {
            // Nothing can be done with it; do not retry it forever.
            tracing::error!(error = %e, "garbage list holds an invalid capability; dropped");
            return true;
        }
    };
    match delete_shares(grid, &cap.key).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "freeing shares failed; will retry");
            false
        }
    }
}

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
            let done = if free_capability(grid, &cap).await {
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
pub fn spawn_collector(
    ns: Namespace,
    grid: Grid,
    wake: Arc<Notify>,
    grace: Duration,
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
            tokio::select! {
                _ = wake.notified() => {
                    // Let the grace period of what was just queued run out.
                    tokio::time::sleep(grace.min(MAX_SLEEP)).await;
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    })
}
