//! What each server has been like lately: latency of share writes, errors,
//! and demotions (blocks that failed their hashes). Uploads place their
//! first shares (the data shares, which readers need no decoding for) on
//! servers without recent trouble, and servers with recent trouble last.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A server with an error or a demotion this recent counts as suspect.
const SUSPECT_FOR: Duration = Duration::from_secs(300);
/// A share write this slow counts as trouble too.
const SLOW_WRITE: Duration = Duration::from_secs(10);

/// One server's record, as [`ServerHealth::report`] gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthRecord {
    /// Smoothed duration of a share write (append or finish).
    pub write_latency: Option<Duration>,
    /// Share writes timed into `write_latency`.
    pub writes: u64,
    /// Smoothed duration of a block read (the block and the hashes that
    /// prove it), as downloads see it.
    pub read_latency: Option<Duration>,
    /// Block reads timed into `read_latency`.
    pub reads: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Blocks from this server that failed their hashes.
    pub demotions: u64,
    /// When the last error, demotion or slow write happened.
    pub last_trouble: Option<Instant>,
}

impl HealthRecord {
    fn suspect(&self, now: Instant) -> bool {
        self.last_trouble
            .is_some_and(|at| now.saturating_duration_since(at) < SUSPECT_FOR)
    }
}

/// Health of every server of a grid, by server id. Shared by the grid's
/// clones.
#[derive(Debug, Default)]
pub struct ServerHealth {
    records: Mutex<HashMap<String, HealthRecord>>,
}

impl ServerHealth {
    fn with<T>(&self, server: &str, f: impl FnOnce(&mut HealthRecord) -> T) -> T {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        f(records.entry(server.to_owned()).or_default())
    }

    /// A share write that succeeded after `took`.
    pub fn write_ok(&self, server: &str, took: Duration) {
        self.with(server, |r| {
            r.writes += 1;
            // Exponential moving average, weight 1/8.
            r.write_latency = Some(match r.write_latency {
                None => took,
                Some(avg) => (avg * 7 + took) / 8,
            });
            if took >= SLOW_WRITE {
                r.last_trouble = Some(Instant::now());
            }
        });
    }

    /// A block read that succeeded after `took`. Downloads route around
    /// slow servers themselves; this record is for operators.
    pub fn read_ok(&self, server: &str, took: Duration) {
        self.with(server, |r| {
            r.reads += 1;
            r.read_latency = Some(match r.read_latency {
                None => took,
                Some(avg) => (avg * 7 + took) / 8,
            });
        });
    }

    /// A request that failed (not for want of space: a full server is
    /// healthy, only full).
    pub fn error(&self, server: &str) {
        self.with(server, |r| {
            r.errors += 1;
            r.last_trouble = Some(Instant::now());
        });
    }

    /// A block from this server failed its hash.
    pub fn demotion(&self, server: &str) {
        self.with(server, |r| {
            r.demotions += 1;
            r.last_trouble = Some(Instant::now());
        });
    }

    /// Whether the server had trouble lately.
    pub fn is_suspect(&self, server: &str) -> bool {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records
            .get(server)
            .is_some_and(|r| r.suspect(Instant::now()))
    }

    /// Every server's record, for logs and a status page.
    pub fn report(&self) -> Vec<(String, HealthRecord)> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = records
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
