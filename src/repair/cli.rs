//! The terminal side of `griddav check`: a progress bar with rate and ETA
//! (on a terminal only), a line per file and a summary, or one JSON
//! document (`--json`) for machines.

use std::fmt::Write as _;

use indicatif::{ProgressBar, ProgressStyle};

use super::{check_files, Checked, Summary};
use crate::engine::repair::{CheckOptions, FileReport, FileStatus};
use crate::grid::Grid;
use crate::namespace::{Namespace, NamespaceError};

/// Checks the files under `path` and prints what it found; true when every
/// file is healthy after the run.
pub async fn run(
    ns: &Namespace,
    grid: &Grid,
    path: &str,
    options: CheckOptions,
    json: bool,
) -> Result<bool, NamespaceError> {
    let files = ns.grid_files_under(path).await?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    // Drawn on standard error, and only when it is a terminal.
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut entries = Vec::new();
    let mut unhealthy = 0u64;
    let summary = check_files(ns, grid, &files, options, |checked: Checked<'_>| {
        bar.inc(checked.file.size);
        let Some(report) = checked.report else {
            return;
        };
        if !matches!(report.status, FileStatus::Healthy | FileStatus::Repaired) {
            unhealthy += 1;
            bar.set_message(format!("{unhealthy} not healthy"));
        }
        if json {
            let mut entry = serde_json::to_value(&report).unwrap_or_default();
            if let Some(object) = entry.as_object_mut() {
                object.insert("path".into(), checked.file.path.clone().into());
            }
            entries.push(entry);
        } else {
            let line = file_line(&checked.file.path, &report);
            bar.suspend(|| println!("{line}"));
        }
    })
    .await;
    bar.finish_and_clear();
    if json {
        let document = serde_json::json!({ "files": entries, "summary": summary });
        println!("{document}");
    } else {
        println!("{}", summary_line(&summary, options));
    }
    Ok(summary.all_healthy())
}

/// `/a/b: healthy, 10 of 10 shares on 10 servers: 0@local-03 1@local-07 ...`
fn file_line(path: &str, report: &FileReport) -> String {
    let status = match report.status {
        FileStatus::Healthy => "healthy",
        FileStatus::Repaired => "repaired",
        FileStatus::Degraded => "DEGRADED",
        FileStatus::Unrecoverable => "UNRECOVERABLE",
    };
    let distinct: std::collections::HashSet<u8> = report.shares.iter().map(|h| h.share).collect();
    let mut line = format!(
        "{path}: {status}, {} of {} shares on {} servers:",
        distinct.len(),
        report.n,
        report.servers
    );
    for holding in &report.shares {
        let _ = write!(line, " {}@{}", holding.share, holding.server);
    }
    if !report.written.is_empty() {
        let _ = write!(line, "; {} shares re-created", report.written.len());
    }
    if !report.missing.is_empty() {
        let _ = write!(line, "; missing {:?}", report.missing);
    }
    if !report.unreachable.is_empty() {
        let _ = write!(line, "; unreachable: {}", report.unreachable.join(", "));
    }
    if let Some(error) = &report.error {
        let _ = write!(line, "; {error}");
    }
    if !matches!(report.status, FileStatus::Healthy) {
        for problem in report.problems.iter().take(8) {
            let _ = write!(line, "\n    {problem}");
        }
    }
    line
}

fn summary_line(s: &Summary, options: CheckOptions) -> String {
    let rate = if s.seconds > 0.0 {
        (s.bytes_read.max(s.bytes_written)) as f64 / s.seconds / 1e6
    } else {
        0.0
    };
    format!(
        "{} files{}: {} healthy, {} repaired, {} degraded, {} unrecoverable{}; \
         {} bytes read, {} bytes written in {:.1} s ({rate:.1} MB/s)",
        s.files,
        if options.deep { " (deep)" } else { "" },
        s.healthy,
        s.repaired,
        s.degraded,
        s.unrecoverable,
        if s.deleted_meanwhile > 0 {
            format!(", {} deleted meanwhile", s.deleted_meanwhile)
        } else {
            String::new()
        },
        s.bytes_read,
        s.bytes_written,
        s.seconds,
    )
}
