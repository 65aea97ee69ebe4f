//! Check and repair of one file's shares: which servers hold which shares,
//! whether every byte of them verifies (`deep`), and the re-creation of
//! missing or corrupt shares from k good ones.
//!
//! Repair re-encodes. It reads the file segment by segment through a
//! verifying [`Downloader`] (any k good shares do) and codes each segment
//! again with the file's key. Encryption and coding are deterministic, so
//! the blocks come out identical to the uploader's, and the trailer rebuilt
//! from all n shares' block hashes must hash to the capability's trailer
//! hash: the new shares are proven right before any of them is finished.
//!
//! New shares go to reachable servers that hold none of the file, in the
//! file's placement order, so that the file ends with n shares on n
//! distinct servers wherever n servers answer. On a grid smaller than n a
//! missing share goes to the least loaded server, as an upload would wrap.
//! The engine knows nothing of names: the caller decides which files to
//! check and whether a file repaired meanwhile stopped being referenced.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::cap::FileCap;
use super::codec::SegmentCoder;
use super::download::Downloader;
use super::layout::Header;
use super::upload::{build_tails, run_share, SegmentHolds, ShareCommand, UploadTrees};
use super::{EngineError, EngineResult, ProblemKind, ShareProblem};
use crate::grid::{Grid, GridError, ShareNum, ShareStore};

/// Any one listing or lease renewal gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Blocks queued per new share beyond the one being written.
const SHARE_QUEUE: usize = 2;

/// What [`check_file`] does beyond listing the shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Read and verify every byte of every share.
    pub deep: bool,
    /// Re-create missing or corrupt shares.
    pub repair: bool,
    /// Renew the leases of servers that expire shares without one (Tahoe).
    pub renew_leases: bool,
}

/// A file's state after a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Every share present (and verified, when deep) on as many distinct
    /// servers as answer, up to n.
    Healthy,
    /// Not healthy before, healthy now.
    Repaired,
    /// Readable (k good shares or more) but short of healthy.
    Degraded,
    /// Fewer than k good shares: the file cannot be read.
    Unrecoverable,
}

/// A share on a server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Holding {
    /// The share number.
    pub share: u8,
    /// The id of the server holding it.
    pub server: String,
}

/// Something a check found wrong, or that went wrong while repairing.
#[derive(Clone, Debug, thiserror::Error)]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum CheckProblem {
    /// A share that failed verification or could not be read, or a server
    /// whose listing failed or did not come.
    #[error("{0}")]
    Share(ShareProblem),
    /// A server listed a share number the file does not have.
    #[error("{server}: share {share} of a file of {n} shares")]
    ShareOutOfRange { server: String, share: u8, n: u16 },
    /// The file could not be opened for a deep check.
    #[error("{0}")]
    Open(#[source] Arc<EngineError>),
    /// A server did not renew the file's lease.
    #[error("{server}: lease renewal: {kind}")]
    LeaseRenewal { server: String, kind: ProblemKind },
    /// A share this run tried to create and could not.
    #[error("repair: {0}")]
    Repair(ShareProblem),
}

impl serde::Serialize for CheckProblem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn serialize_error<S: serde::Serializer>(
    error: &Option<Arc<EngineError>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match error {
        Some(e) => serializer.collect_str(e),
        None => serializer.serialize_none(),
    }
}

/// What a check found and did for one file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileReport {
    /// Healthy, repaired, degraded or unrecoverable after the run.
    pub status: FileStatus,
    /// The file's coding: k shares of n read it.
    pub k: u16,
    /// Shares written for the file.
    pub n: u16,
    /// Good shares after the run (verified ones when deep).
    pub shares: Vec<Holding>,
    /// Share numbers with no good copy after the run.
    pub missing: Vec<u8>,
    /// Distinct servers holding a good share after the run.
    pub servers: usize,
    /// Servers whose listing failed or did not come.
    pub unreachable: Vec<String>,
    /// Shares that failed verification or could not be read, servers that
    /// did not list or renew, shares a repair could not create.
    pub problems: Vec<CheckProblem>,
    /// Shares this run created.
    pub written: Vec<Holding>,
    /// Leases renewed (servers that keep shares without leases not counted).
    pub leases_renewed: usize,
    /// Share bytes read (verification) and plaintext bytes decoded (repair).
    pub bytes_read: u64,
    /// Share bytes uploaded by the repair.
    pub bytes_written: u64,
    /// Why a repair that was needed did not complete.
    #[serde(serialize_with = "serialize_error")]
    pub error: Option<Arc<EngineError>>,
}

impl FileReport {
    /// A report with `status` and nothing found yet.
    pub fn new(status: FileStatus) -> Self {
        Self {
            status,
            k: 0,
            n: 0,
            shares: Vec::new(),
            missing: Vec::new(),
            servers: 0,
            unreachable: Vec::new(),
            problems: Vec::new(),
            written: Vec::new(),
            leases_renewed: 0,
            bytes_read: 0,
            bytes_written: 0,
            error: None,
        }
    }
}

/// Where the shares of one file are, as the listings say.
struct Survey {
    /// The servers in this file's placement order.
    servers: Vec<Arc<dyn ShareStore>>,
    reachable: Vec<bool>,
    /// `(share, rank)` of every good share copy; rank indexes `servers`.
    good: Vec<(ShareNum, usize)>,
    /// Ranks of servers that listed any share of the file, good or not.
    listed: HashSet<usize>,
    /// `(share, rank, len)` as listed.
    found: Vec<(ShareNum, usize, u64)>,
}

/// Checks one file and, with `options.repair`, repairs it. Never fails as
/// a whole: what went wrong is in the report.
pub async fn check_file(grid: &Grid, cap: &FileCap, options: CheckOptions) -> FileReport {
    let mut report = FileReport {
        k: cap.k,
        n: cap.n,
        ..FileReport::new(FileStatus::Healthy)
    };
    let mut survey = survey(grid, cap, &mut report).await;
    let n = usize::from(cap.n);

    let mut downloader: Option<Arc<Downloader>> = None;
    if options.deep {
        match Downloader::open(grid, cap).await {
            Ok(opened) => {
                let opened = Arc::new(opened);
                report.bytes_read += survey.found.iter().map(|(_, _, len)| len).sum::<u64>();
                let problems = opened.verify_all_shares().await;
                drop_bad_shares(&mut survey, &problems, &mut report);
                downloader = Some(opened);
            }
            Err(e) => {
                report.problems.push(CheckProblem::Open(Arc::new(e)));
                survey.good.clear();
            }
        }
    }
    if options.renew_leases {
        report.leases_renewed = renew_leases(&survey, cap, &mut report).await;
    }

    let before = assess(&survey, n);
    if !before.healthy() && options.repair && before.distinct_shares >= usize::from(cap.k) {
        if options.deep {
            free_servers_holding_only_bad_shares(&mut survey, cap).await;
        }
        let targets = targets(&survey, &before, n);
        if targets.is_empty() {
            report.error = Some(Arc::new(EngineError::NoRepairTarget));
        } else {
            let opened = match downloader.take() {
                Some(opened) => Ok(opened),
                None => Downloader::open(grid, cap).await.map(Arc::new),
            };
            let rebuilt = match opened {
                Ok(opened) => rebuild(cap, opened, &survey, targets, &mut report).await,
                Err(e) => Err(e),
            };
            if let Err(e) = rebuilt {
                tracing::warn!(si = %cap.key.storage_index(), error = %e, "repair failed");
                report.error = Some(Arc::new(e));
            }
            for holding in &report.written {
                let rank = survey
                    .servers
                    .iter()
                    .position(|s| s.server_id() == holding.server);
                if let Some(rank) = rank {
                    survey.good.push((ShareNum(holding.share), rank));
                    survey.listed.insert(rank);
                }
            }
        }
    }
    let after = assess(&survey, n);
    report.status = if after.distinct_shares < usize::from(cap.k) {
        FileStatus::Unrecoverable
    } else if !after.healthy() {
        FileStatus::Degraded
    } else if before.healthy() {
        FileStatus::Healthy
    } else {
        FileStatus::Repaired
    };
    report.shares = survey
        .good
        .iter()
        .map(|(share, rank)| Holding {
            share: share.0,
            server: survey.servers[*rank].server_id().to_owned(),
        })
        .collect();
    report
        .shares
        .sort_by(|a, b| (a.share, &a.server).cmp(&(b.share, &b.server)));
    report.missing = after.missing.iter().map(|s| share_num(*s).0).collect();
    report.servers = after.distinct_servers;
    report
}

/// [`check_file`] for a Tahoe-LAFS CHK file: which servers hold its
/// shares (its URI extension block verified against the capability), and
/// with `deep` every byte of every share verified as `tahoe check
/// --verify` does. Leases are not renewed and nothing is repaired: a
/// repair asked for is reported as [`EngineError::ChkRepairUnsupported`].
pub async fn check_chk_file(
    grid: &Grid,
    cap: &super::chk::uri::ChkCap,
    options: CheckOptions,
) -> FileReport {
    let mut report = FileReport {
        k: cap.k,
        n: cap.n,
        ..FileReport::new(FileStatus::Healthy)
    };
    let reader = match super::chk::read::ChkReader::open(grid, cap).await {
        Ok(reader) => reader,
        Err(e) => {
            report.status = FileStatus::Unrecoverable;
            report.missing = (0..cap.n).filter_map(|s| u8::try_from(s).ok()).collect();
            report.problems.push(CheckProblem::Open(Arc::new(e)));
            return report;
        }
    };
    let mut holdings = reader.holdings();
    let mut problems = reader.problems();
    if options.deep {
        let found = reader.verify_all_shares_with_progress(|_| {}).await;
        holdings.retain(|(share, server)| {
            !found
                .iter()
                .any(|p| p.share == Some(*share) && p.server == *server)
        });
        problems.extend(found);
    }
    let distinct: HashSet<ShareNum> = holdings.iter().map(|(share, _)| *share).collect();
    let servers: HashSet<&str> = holdings.iter().map(|(_, s)| s.as_str()).collect();
    report.servers = servers.len();
    report.unreachable = problems
        .iter()
        .filter(|p| p.share.is_none() && p.kind.is_unavailable())
        .map(|p| p.server.clone())
        .collect();
    report.missing = (0..cap.n)
        .filter_map(|s| u8::try_from(s).ok())
        .filter(|s| !distinct.contains(&ShareNum(*s)))
        .collect();
    report.shares = holdings
        .iter()
        .map(|(share, server)| Holding {
            share: share.0,
            server: server.clone(),
        })
        .collect();
    report
        .shares
        .sort_by(|a, b| (a.share, &a.server).cmp(&(b.share, &b.server)));
    report.problems = problems
        .into_iter()
        .filter(|p| !matches!(p.kind, ProblemKind::Missing))
        .map(CheckProblem::Share)
        .collect();
    report.status = if distinct.len() < usize::from(cap.k) {
        FileStatus::Unrecoverable
    } else if distinct.len() < usize::from(cap.n) || !report.problems.is_empty() {
        FileStatus::Degraded
    } else {
        FileStatus::Healthy
    };
    if options.repair && report.status != FileStatus::Healthy {
        report.error = Some(Arc::new(EngineError::ChkRepairUnsupported));
    }
    report
}

/// Removes the shares of a file that this run wrote from the servers it
/// wrote them to: for a caller that finds the file was deleted while it
/// was being repaired (the collector may have freed it before the new
/// shares existed). Those servers held nothing of the file before.
pub async fn undo_repair(grid: &Grid, cap: &FileCap, written: &[Holding]) -> EngineResult<()> {
    let si = cap.key.storage_index();
    let servers: HashSet<&str> = written.iter().map(|h| h.server.as_str()).collect();
    let mut problems = Vec::new();
    for server in grid.servers() {
        if !servers.contains(server.server_id()) {
            continue;
        }
        let secrets = cap.key.share_secrets(server.identity());
        if let Err(e) = server.delete(si, &secrets).await {
            problems.push(ShareProblem {
                share: None,
                server: server.server_id().to_owned(),
                kind: ProblemKind::of(e),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::DeleteIncomplete { problems })
    }
}

async fn survey(grid: &Grid, cap: &FileCap, report: &mut FileReport) -> Survey {
    let si = cap.key.storage_index();
    let servers = grid.permuted(si);
    let listings = futures::future::join_all(
        servers
            .iter()
            .map(|server| tokio::time::timeout(REQUEST_TIMEOUT, server.list(si))),
    )
    .await;
    let mut survey = Survey {
        reachable: vec![false; servers.len()],
        good: Vec::new(),
        listed: HashSet::new(),
        found: Vec::new(),
        servers,
    };
    for (rank, listing) in listings.into_iter().enumerate() {
        let server = survey.servers[rank].server_id().to_owned();
        match listing {
            Ok(Ok(shares)) => {
                survey.reachable[rank] = true;
                let mut seen = HashSet::new();
                for info in shares {
                    if !seen.insert(info.share) {
                        continue;
                    }
                    survey.listed.insert(rank);
                    survey.found.push((info.share, rank, info.len));
                    if u16::from(info.share.0) < cap.n {
                        survey.good.push((info.share, rank));
                    } else {
                        report.problems.push(CheckProblem::ShareOutOfRange {
                            server: server.clone(),
                            share: info.share.0,
                            n: cap.n,
                        });
                    }
                }
            }
            Ok(Err(e)) => {
                report.problems.push(CheckProblem::Share(ShareProblem {
                    share: None,
                    server: server.clone(),
                    kind: ProblemKind::of(e),
                }));
                report.unreachable.push(server);
            }
            Err(_) => {
                report.problems.push(CheckProblem::Share(ShareProblem {
                    share: None,
                    server: server.clone(),
                    kind: ProblemKind::NoListing(REQUEST_TIMEOUT),
                }));
                report.unreachable.push(server);
            }
        }
    }
    survey
}

/// Takes the shares a deep verification found bad (or could not read)
/// out of the good ones.
fn drop_bad_shares(survey: &mut Survey, problems: &[ShareProblem], report: &mut FileReport) {
    for problem in problems {
        let Some(share) = problem.share else {
            report.problems.push(CheckProblem::Share(problem.clone()));
            continue;
        };
        if problem.server.is_empty() {
            // "No server holds this share": counted as missing.
            continue;
        }
        report.problems.push(CheckProblem::Share(problem.clone()));
        survey
            .good
            .retain(|(s, rank)| *s != share || survey.servers[*rank].server_id() != problem.server);
    }
}

async fn renew_leases(survey: &Survey, cap: &FileCap, report: &mut FileReport) -> usize {
    let si = cap.key.storage_index();
    let renewals = futures::future::join_all(survey.listed.iter().map(|rank| {
        let server = &survey.servers[*rank];
        let secrets = cap.key.share_secrets(server.identity());
        async move {
            let renewed = tokio::time::timeout(REQUEST_TIMEOUT, server.renew_lease(si, &secrets));
            (server.server_id(), renewed.await)
        }
    }))
    .await;
    let mut renewed = 0;
    for (server, result) in renewals {
        match result {
            Ok(Ok(true)) => renewed += 1,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => report.problems.push(CheckProblem::LeaseRenewal {
                server: server.to_owned(),
                kind: ProblemKind::of(e),
            }),
            Err(_) => report.problems.push(CheckProblem::LeaseRenewal {
                server: server.to_owned(),
                kind: ProblemKind::TimedOut(REQUEST_TIMEOUT),
            }),
        }
    }
    renewed
}

/// How far a file is from n shares on distinct servers.
struct Assessment {
    /// Share numbers with no good copy.
    missing: Vec<usize>,
    /// Share numbers with good copies only on servers that the matching
    /// gave another share.
    unplaced: Vec<usize>,
    distinct_shares: usize,
    distinct_servers: usize,
    /// Shares on distinct servers (a maximum matching).
    matched: usize,
    /// What healthy needs: n, or fewer when fewer servers answer.
    want: usize,
}

impl Assessment {
    fn healthy(&self) -> bool {
        self.missing.is_empty() && self.matched >= self.want
    }
}

fn assess(survey: &Survey, n: usize) -> Assessment {
    let servers = survey.servers.len();
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (share, rank) in &survey.good {
        let holders = &mut holders[usize::from(share.0)];
        if !holders.contains(rank) {
            holders.push(*rank);
        }
    }
    for list in &mut holders {
        list.sort_unstable();
    }
    let mut server_of_share: Vec<Option<usize>> = vec![None; n];
    let mut share_of_server: Vec<Option<usize>> = vec![None; servers];
    for share in 0..n {
        let mut seen = vec![false; servers];
        augment(
            share,
            &holders,
            &mut seen,
            &mut share_of_server,
            &mut server_of_share,
        );
    }
    let reachable = survey.reachable.iter().filter(|r| **r).count();
    let distinct_servers: HashSet<usize> = survey.good.iter().map(|(_, rank)| *rank).collect();
    Assessment {
        missing: (0..n).filter(|s| holders[*s].is_empty()).collect(),
        unplaced: (0..n)
            .filter(|s| !holders[*s].is_empty() && server_of_share[*s].is_none())
            .collect(),
        distinct_shares: holders.iter().filter(|h| !h.is_empty()).count(),
        distinct_servers: distinct_servers.len(),
        matched: server_of_share.iter().flatten().count(),
        want: n.min(reachable),
    }
}

/// Kuhn's augmenting path: gives `share` a server of its own if the
/// shares already placed can make room. Depth is at most n <= 256.
fn augment(
    share: usize,
    holders: &[Vec<usize>],
    seen: &mut [bool],
    share_of_server: &mut [Option<usize>],
    server_of_share: &mut [Option<usize>],
) -> bool {
    for &server in &holders[share] {
        if seen[server] {
            continue;
        }
        seen[server] = true;
        let free = match share_of_server[server] {
            None => true,
            Some(other) => augment(other, holders, seen, share_of_server, server_of_share),
        };
        if free {
            share_of_server[server] = Some(share);
            server_of_share[share] = Some(server);
            return true;
        }
    }
    false
}

/// Where the shares to make go: missing shares first, then shares that
/// share a server with another, each to a reachable server that lists
/// nothing of this file, in placement order. On a grid with fewer
/// reachable servers than shares, missing shares that find no empty
/// server go to the least loaded one.
/// A share number of the file (below its n) as a [`ShareNum`].
fn share_num(share: usize) -> ShareNum {
    // share < n <= 256, checked by EncodingParams::validate
    #[allow(clippy::cast_possible_truncation)]
    let share = share as u8;
    ShareNum(share)
}

fn targets(survey: &Survey, assessment: &Assessment, n: usize) -> Vec<(ShareNum, usize)> {
    let mut free = (0..survey.servers.len())
        .filter(|rank| survey.reachable[*rank] && !survey.listed.contains(rank));
    let mut chosen = Vec::new();
    let mut load: Vec<usize> = vec![0; survey.servers.len()];
    for (_, rank) in &survey.good {
        load[*rank] += 1;
    }
    let reachable = survey.reachable.iter().filter(|r| **r).count();
    for share in &assessment.missing {
        let rank = free.next().or_else(|| {
            (reachable < n)
                .then(|| {
                    (0..survey.servers.len())
                        .filter(|rank| survey.reachable[*rank])
                        .filter(|rank| !holds(survey, *rank, *share))
                        .min_by_key(|rank| (load[*rank], *rank))
                })
                .flatten()
        });
        if let Some(rank) = rank {
            load[rank] += 1;
            chosen.push((share_num(*share), rank));
        }
    }
    let room = assessment.want.saturating_sub(assessment.matched);
    for share in assessment.unplaced.iter().take(room) {
        if let Some(rank) = free.next() {
            chosen.push((share_num(*share), rank));
        }
    }
    chosen
}

/// Whether the server at `rank` lists share `share` (good or not): a
/// create there would collide.
fn holds(survey: &Survey, rank: usize, share: usize) -> bool {
    survey
        .found
        .iter()
        .any(|(s, r, _)| *r == rank && usize::from(s.0) == share)
}

/// A server whose listed shares of the file all failed verification holds
/// nothing of use: delete them, so that it can take a good share.
async fn free_servers_holding_only_bad_shares(survey: &mut Survey, cap: &FileCap) {
    let si = cap.key.storage_index();
    let good: HashSet<usize> = survey.good.iter().map(|(_, rank)| *rank).collect();
    let bad_only: Vec<usize> = survey
        .listed
        .iter()
        .copied()
        .filter(|rank| !good.contains(rank))
        .collect();
    for rank in bad_only {
        let server = &survey.servers[rank];
        let secrets = cap.key.share_secrets(server.identity());
        let deleted = match server.delete(si, &secrets).await {
            Err(GridError::Refused { .. }) => {
                server.delete(si, &cap.key.legacy_share_secrets()).await
            }
            other => other,
        };
        match deleted {
            Ok(()) => {
                tracing::info!(%si, server = server.server_id(), "deleted shares that failed verification");
                survey.listed.remove(&rank);
                survey.found.retain(|(_, r, _)| *r != rank);
            }
            Err(e) => {
                tracing::warn!(%si, error = %e, "cannot delete shares that failed verification")
            }
        }
    }
}

/// One share being re-created.
struct NewShare {
    share: ShareNum,
    rank: usize,
    sender: Option<mpsc::Sender<ShareCommand>>,
    /// Its Finish was sent: an Ok end of its task means finished, not
    /// aborted (a task whose channel closes aborts and also ends Ok).
    finishing: bool,
    task: tokio::task::JoinHandle<Result<(), GridError>>,
}

/// Re-encodes the file and writes the shares of `targets`; adds those
/// finished to the survey's good shares and the report.
async fn rebuild(
    cap: &FileCap,
    downloader: Arc<Downloader>,
    survey: &Survey,
    targets: Vec<(ShareNum, usize)>,
    report: &mut FileReport,
) -> EngineResult<()> {
    let si = cap.key.storage_index();
    let trailer = *downloader.trailer();
    let layout = *downloader.layout();
    let params = trailer.params().map_err(|source| EngineError::OwnLayout {
        what: "verified trailer",
        source,
    })?;
    // Rebuilt shares keep the file's own format: their block hashes must
    // match the share tree its capability vouches for.
    let coder = Arc::new(SegmentCoder::for_version(&params, trailer.version)?);
    let mut shares = Vec::new();
    for (share, rank) in targets {
        let server = &survey.servers[rank];
        let secrets = cap.key.share_secrets(server.identity());
        match server.create(si, share, &secrets).await {
            Ok(writer) => {
                let (sender, receiver) = mpsc::channel(SHARE_QUEUE);
                let header = Header {
                    version: trailer.version,
                    share: u16::from(share.0),
                    k: params.k,
                    n: params.n,
                    segment_size: params.segment_size,
                };
                let task = tokio::spawn(run_share(writer, receiver, None));
                let header = Bytes::copy_from_slice(&header.encode());
                let alive = sender
                    .send(ShareCommand::Append(header, SegmentHolds::default()))
                    .await
                    .is_ok();
                shares.push(NewShare {
                    share,
                    rank,
                    sender: alive.then_some(sender),
                    finishing: false,
                    task,
                });
            }
            Err(e) => report.problems.push(CheckProblem::Repair(ShareProblem {
                share: Some(share),
                server: server.server_id().to_owned(),
                kind: ProblemKind::of(e),
            })),
        }
    }
    if shares.is_empty() {
        return Err(EngineError::NoRepairTarget);
    }

    let n = usize::from(params.n);
    let mut trees = UploadTrees::new(n);
    let mut segments = std::pin::pin!(Arc::clone(&downloader).stream(0));
    let mut offset = 0u64;
    while let Some(segment) = segments.next().await {
        let segment = segment?;
        report.bytes_read += segment.len() as u64;
        let (coder, key, at) = (Arc::clone(&coder), cap.key.clone(), offset);
        offset += segment.len() as u64;
        let encoded = tokio::task::spawn_blocking(move || {
            let mut buf = coder.segment_buf(segment.len());
            buf.extend(&segment);
            coder.encode(&key, at, buf)
        })
        .await
        .map_err(|source| EngineError::TaskFailed {
            what: "segment encoder",
            source,
        })?;
        trees.add(&encoded);
        for new in &mut shares {
            let Some(sender) = &new.sender else { continue };
            let block = encoded.blocks[usize::from(new.share.0)].clone();
            if sender
                .send(ShareCommand::Append(block, SegmentHolds::default()))
                .await
                .is_err()
            {
                new.sender = None;
            }
        }
        if shares.iter().all(|s| s.sender.is_none()) {
            break;
        }
    }
    if offset != layout.size {
        // Every new share task aborts as its channel closes.
        return Err(collect_failures(shares, survey, report).await.unwrap_or(
            EngineError::ShortRead {
                read: offset,
                size: layout.size,
            },
        ));
    }
    let size = layout.size;
    let (rebuilt, tails) =
        tokio::task::spawn_blocking(move || build_tails(params, trailer.version, size, trees))
            .await
            .map_err(|source| EngineError::TaskFailed {
                what: "building share tails",
                source,
            })??;
    if rebuilt.hash() != cap.trailer_hash {
        // Dropping the senders aborts every new share.
        return Err(EngineError::ReencodedMismatch);
    }
    for new in &mut shares {
        if let Some(sender) = new.sender.take() {
            let (tail, len) = tails[usize::from(new.share.0)].clone();
            new.finishing = sender
                .send(ShareCommand::Finish { tail, len })
                .await
                .is_ok();
        }
    }
    let before = report.written.len();
    let failure = collect_failures(shares, survey, report).await;
    let written = (report.written.len() - before) as u64;
    report.bytes_written += written * layout.share_len;
    match failure {
        Some(e) if written == 0 => Err(e),
        _ => Ok(()),
    }
}

/// Waits for the new shares' tasks; records the finished ones as good and
/// the failed ones as problems. Returns the failures, if any.
async fn collect_failures(
    shares: Vec<NewShare>,
    survey: &Survey,
    report: &mut FileReport,
) -> Option<EngineError> {
    let mut failed = Vec::new();
    for mut new in shares {
        new.sender = None;
        let server = &survey.servers[new.rank];
        match new.task.await {
            Ok(Ok(())) if new.finishing => {
                report.written.push(Holding {
                    share: new.share.0,
                    server: server.server_id().to_owned(),
                });
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(ShareProblem {
                share: Some(new.share),
                server: server.server_id().to_owned(),
                kind: ProblemKind::of(e),
            }),
            Err(source) => failed.push(ShareProblem {
                share: Some(new.share),
                server: server.server_id().to_owned(),
                kind: ProblemKind::TaskFailed {
                    what: "share writer",
                    source: Arc::new(source),
                },
            }),
        }
    }
    if failed.is_empty() {
        return None;
    }
    report
        .problems
        .extend(failed.iter().cloned().map(CheckProblem::Repair));
    Some(EngineError::RepairWritesFailed { problems: failed })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::engine::{EncodingParams, UploadOptions, Uploader};
    use crate::grid::{Fault, FaultSwitch, FaultyStore, MemoryStore};

    /// A deep check names what it found as variants a caller can match:
    /// a server that is down and a share whose bytes were changed.
    #[tokio::test]
    async fn check_problems_are_typed() {
        let stores: Vec<MemoryStore> = (0..10).map(|i| MemoryStore::new(format!("m{i}"))).collect();
        let outage = FaultSwitch::new(Fault::None);
        let servers = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let store = Arc::new(s.clone()) as Arc<dyn ShareStore>;
                if i == 9 {
                    Arc::new(FaultyStore::new(store, outage.clone())) as Arc<dyn ShareStore>
                } else {
                    store
                }
            })
            .collect();
        let grid = Grid::new(servers);
        let params = EncodingParams {
            k: 3,
            happy: 7,
            n: 10,
            segment_size: 4096,
        };
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut uploader = Uploader::new(grid.clone(), params, UploadOptions::default(), None)
            .await
            .unwrap();
        uploader.write(Bytes::from(data)).await.unwrap();
        let cap = uploader.finish().await.unwrap();
        let si = cap.key.storage_index();
        let corrupted = stores
            .iter()
            .take(9)
            .find_map(|s| {
                let listed = futures::executor::block_on(s.list(si)).unwrap();
                let share = listed.first()?.share;
                s.corrupt(si, share, 5_000, 0x40).unwrap();
                Some((s.server_id().to_owned(), share))
            })
            .unwrap();
        outage.set(Fault::Down);

        let options = CheckOptions {
            deep: true,
            ..CheckOptions::default()
        };
        let report = check_file(&grid, &cap, options).await;
        assert_eq!(report.status, FileStatus::Degraded, "{report:?}");
        assert!(report.error.is_none());
        assert!(
            report.problems.iter().any(|p| matches!(
                p,
                CheckProblem::Share(ShareProblem { share: None, server, kind: ProblemKind::Unavailable(_) })
                    if server == "m9"
            )),
            "{:?}",
            report.problems
        );
        assert!(
            report.problems.iter().any(|p| matches!(
                p,
                CheckProblem::Share(ShareProblem { share: Some(share), server, kind: ProblemKind::Corrupt(_) })
                    if (server.clone(), *share) == corrupted
            )),
            "{:?}",
            report.problems
        );
        // As the command line's JSON shows them: text, not structures.
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["problems"][0].is_string(), "{json}");
    }
}
