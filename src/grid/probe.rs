//! A look at every storage server when griddav starts, so that a wrong
//! address, swissnum or certificate pin is reported then, by name, and not
//! at the first upload.

use std::time::{Duration, Instant};

use super::{Grid, GridError, StorageIndex};

/// How long one server may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one server answered.
#[derive(Debug)]
pub struct ProbeResult {
    /// Which server this is ([`super::ShareStore::server_id`]).
    pub server: String,
    /// The answer's latency, or why there was none.
    pub outcome: Result<Duration, ProbeError>,
}

/// Why a server gave no answer to the probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The listing failed.
    #[error(transparent)]
    Failed(#[from] GridError),
    /// The listing took longer than the probe's limit.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Asks every server of `grid` at once for a cheap listing (of a storage
/// index no file has: its shares are an empty list) and logs each answer.
/// A server that fails is only reported: uploads route around it.
pub async fn probe_servers(grid: &Grid) -> Vec<ProbeResult> {
    // All zeros: a storage index is a hash, so no file ever has this one,
    // and every backend answers it with an empty list.
    let si = StorageIndex::from_bytes([0; 16]);
    let probes = grid.servers().iter().map(|server| async move {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, server.list(si)).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(ProbeError::Failed(e)),
            Err(_) => Err(ProbeError::TimedOut(PROBE_TIMEOUT)),
        };
        ProbeResult {
            server: server.server_id().to_owned(),
            outcome,
        }
    });
    let results = futures::future::join_all(probes).await;
    let answering = results.iter().filter(|r| r.outcome.is_ok()).count();
    for result in &results {
        match &result.outcome {
            Ok(latency) => {
                tracing::info!(server = %result.server, ?latency, "storage server answers")
            }
            Err(reason) => {
                tracing::warn!(server = %result.server, %reason, "storage server does not answer")
            }
        }
    }
    tracing::info!(
        answering,
        servers = results.len(),
        "storage servers checked at start"
    );
    results
}
