//! `griddav check` and the background repair: walk the namespace and have
//! the engine check (and repair) each file that lives in the grid.
//!
//! The walk only reads the namespace, so it runs beside a `griddav serve`
//! on the same data directory (see [`crate::namespace::Namespace::open_read_only`]).
//! A file deleted while it is being checked is not counted: if shares were
//! re-created for it meanwhile, they are removed again, since the
//! collector may have freed the file before they existed.

pub mod cli;

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::engine::repair::{check_file, undo_repair, CheckOptions, FileReport, FileStatus};
use crate::engine::{Capability, EngineError};
use crate::grid::Grid;
use crate::namespace::{GridFile, Namespace, NamespaceError};

/// Files checked at once: listings of small files are latency-bound.
const CONCURRENT_FILES: usize = 4;

/// Totals of one walk.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Files checked.
    pub files: u64,
    /// Files found healthy: every share present on distinct servers, up to n.
    pub healthy: u64,
    /// Files not healthy before and healthy after their repair.
    pub repaired: u64,
    /// Readable but short of n shares on distinct servers after the run.
    pub degraded: u64,
    /// Files with fewer than k good shares: they cannot be read.
    pub unrecoverable: u64,
    /// Deleted while the walk went on: not counted above.
    pub deleted_meanwhile: u64,
    /// Share bytes read to verify, and plaintext bytes decoded to repair.
    pub bytes_read: u64,
    /// Share bytes written by repairs.
    pub bytes_written: u64,
    /// Plaintext bytes of the files checked.
    pub file_bytes: u64,
    /// Wall time of the walk.
    pub seconds: f64,
}

impl Summary {
    /// Whether every file is healthy after the run.
    pub fn all_healthy(&self) -> bool {
        self.degraded == 0 && self.unrecoverable == 0
    }
}

/// One file's outcome, as the walk hands it to its caller.
#[derive(Debug)]
pub struct Checked<'a> {
    /// The file as the namespace listed it.
    pub file: &'a GridFile,
    /// `None`: deleted while it was checked.
    pub report: Option<FileReport>,
}

/// Checks every grid file under `path`, calling `on_file` after each (in
/// the order of the paths).
pub async fn check_tree(
    ns: &Namespace,
    grid: &Grid,
    path: &str,
    options: CheckOptions,
    on_file: impl FnMut(Checked<'_>),
) -> Result<Summary, NamespaceError> {
    let files = ns.grid_files_under(path).await?;
    Ok(check_files(ns, grid, &files, options, on_file).await)
}

/// [`check_tree`] over files already listed.
pub async fn check_files(
    ns: &Namespace,
    grid: &Grid,
    files: &[GridFile],
    options: CheckOptions,
    mut on_file: impl FnMut(Checked<'_>),
) -> Summary {
    let started = Instant::now();
    let mut summary = Summary::default();
    // By index: a closure over `&GridFile` would not be general enough
    // for a future that must be Send (rust-lang/rust#110338).
    let mut results = futures::stream::iter(0..files.len())
        .map(|i| check_one(ns, grid, &files[i], options))
        .buffered(CONCURRENT_FILES);
    let mut next = files.iter();
    while let Some(report) = results.next().await {
        let Some(file) = next.next() else { break };
        match &report {
            None => summary.deleted_meanwhile += 1,
            Some(report) => {
                summary.files += 1;
                summary.file_bytes += file.size;
                summary.bytes_read += report.bytes_read;
                summary.bytes_written += report.bytes_written;
                match report.status {
                    FileStatus::Healthy => summary.healthy += 1,
                    FileStatus::Repaired => summary.repaired += 1,
                    FileStatus::Degraded => summary.degraded += 1,
                    FileStatus::Unrecoverable => summary.unrecoverable += 1,
                }
            }
        }
        on_file(Checked { file, report });
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

async fn check_one(
    ns: &Namespace,
    grid: &Grid,
    file: &GridFile,
    options: CheckOptions,
) -> Option<FileReport> {
    let cap = match file.cap.parse::<Capability>() {
        Ok(Capability::Griddav(cap)) => cap,
        Ok(Capability::Chk(cap)) => {
            let report = crate::engine::repair::check_chk_file(grid, &cap, options).await;
            return match ns.cap_referenced(&file.cap).await {
                Ok(false) => None,
                _ => Some(report),
            };
        }
        // Its bytes are in the capability: nothing on the grid to check.
        Ok(Capability::Lit(_)) => return Some(FileReport::new(FileStatus::Healthy)),
        Err(e) => {
            let error = match e {
                crate::engine::AnyCapError::Griddav(e) => EngineError::InvalidCap(e),
                crate::engine::AnyCapError::Tahoe(e) => EngineError::Chk(e),
                _ => EngineError::Chk(crate::engine::chk::ChkError::BadCap),
            };
            return Some(FileReport {
                error: Some(std::sync::Arc::new(error)),
                ..FileReport::new(FileStatus::Unrecoverable)
            });
        }
    };
    let report = check_file(grid, &cap, options).await;
    if report.status == FileStatus::Healthy && report.written.is_empty() {
        return Some(report);
    }
    // Something is off, or shares were written: make sure the file still
    // exists before reporting it (or keeping what was written for it).
    match ns.cap_referenced(&file.cap).await {
        Ok(false) => {
            if !report.written.is_empty() {
                if let Err(e) = undo_repair(grid, &cap, &report.written).await {
                    tracing::warn!(path = %file.path, error = %e,
                        "cannot remove shares re-created for a file deleted meanwhile");
                }
            }
            None
        }
        Ok(true) => Some(report),
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether a file still exists");
            Some(report)
        }
    }
}

/// How often files recorded short of shares are tried again (or sooner,
/// after the interval when that is shorter).
const SHORT_RETRY: Duration = Duration::from_secs(60);

/// Repairs the files recorded as stored with fewer than n shares; forgets
/// each once it is whole.
pub async fn repair_short_files(ns: &Namespace, grid: &Grid) {
    let files = match ns.short_files().await {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the files short of shares");
            return;
        }
    };
    let options = CheckOptions {
        deep: false,
        repair: true,
        renew_leases: false,
    };
    for file in files {
        let Some(report) = check_one(ns, grid, &file, options).await else {
            continue;
        };
        match report.status {
            FileStatus::Healthy | FileStatus::Repaired => {
                if report.status == FileStatus::Repaired {
                    crate::metrics::global().repair_outcome("repaired");
                    tracing::info!(
                        shares_written = report.written.len(),
                        "repaired a file stored with fewer than n shares"
                    );
                }
                if let Err(e) = ns.short_done(&file.cap).await {
                    tracing::warn!(error = %e, "cannot forget a file short of shares");
                }
            }
            FileStatus::Degraded | FileStatus::Unrecoverable => {}
        }
    }
}

/// Runs a repairing walk of the whole tree every `interval` until the
/// runtime stops, logging what it repaired and what it could not; files
/// recorded short of shares (`short` is notified) are completed sooner,
/// once servers have room again.
pub fn spawn_repairer(
    ns: Namespace,
    grid: Grid,
    interval: Duration,
    short: std::sync::Arc<tokio::sync::Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut next_pass = tokio::time::Instant::now() + interval;
        loop {
            let retry = tokio::time::Instant::now() + SHORT_RETRY.min(interval);
            tokio::select! {
                _ = tokio::time::sleep_until(next_pass.min(retry)) => {}
                _ = short.notified() => {
                    // Let the servers that were full make room first.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            repair_short_files(&ns, &grid).await;
            if tokio::time::Instant::now() < next_pass {
                continue;
            }
            next_pass = tokio::time::Instant::now() + interval;
            let options = CheckOptions {
                deep: false,
                repair: true,
                renew_leases: true,
            };
            let walk = check_tree(&ns, &grid, "/", options, |checked: Checked<'_>| {
                let Some(report) = &checked.report else {
                    return;
                };
                crate::metrics::global().repair_outcome(match report.status {
                    FileStatus::Healthy => "healthy",
                    FileStatus::Repaired => "repaired",
                    FileStatus::Degraded => "degraded",
                    FileStatus::Unrecoverable => "unrecoverable",
                });
                match report.status {
                    FileStatus::Healthy => {}
                    FileStatus::Repaired => tracing::info!(
                        path = %checked.file.path,
                        shares_written = report.written.len(),
                        "repaired"
                    ),
                    FileStatus::Degraded | FileStatus::Unrecoverable => tracing::warn!(
                        path = %checked.file.path,
                        status = ?report.status,
                        good_shares = report.shares.len(),
                        missing = ?report.missing,
                        error = report.error.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                        "file not healthy after repair"
                    ),
                }
            })
            .await;
            match walk {
                Ok(s) if s.repaired > 0 || !s.all_healthy() => tracing::info!(
                    files = s.files,
                    healthy = s.healthy,
                    repaired = s.repaired,
                    degraded = s.degraded,
                    unrecoverable = s.unrecoverable,
                    bytes_written = s.bytes_written,
                    seconds = s.seconds,
                    "background repair pass"
                ),
                Ok(s) => tracing::debug!(
                    files = s.files,
                    seconds = s.seconds,
                    "background repair pass: all healthy"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "background repair cannot read the namespace")
                }
            }
        }
    })
}
