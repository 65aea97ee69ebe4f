//! The Uploader: bytes in, shares out, while the bytes are still arriving.
//!
//! `write` re-blocks incoming chunks into segments and hands each full one to
//! the blocking pool for encryption, coding and hashing. Encoded segments are
//! taken back in order and their blocks queued to one task per share, which
//! appends them to that share's server. Every queue is bounded, so a slow
//! server or a busy CPU makes `write` wait: that wait is the back-pressure
//! that slows the client, and it keeps memory independent of file size.
//!
//! A share whose server fails is dropped (its earlier blocks are gone from
//! memory); the upload goes on while at least `happy` shares are alive.
//! Anything short of a successful `finish` removes every share written.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::budget::{MemoryBudget, SegmentPermit};
use super::cap::FileCap;
use super::codec::{EncodedSegment, SegmentBuf, SegmentCoder};
use super::crypto::{FileKey, Hash};
use super::hashtree::{HashTree, TreeBuilder};
use super::layout::{Header, ShareLayout, Trailer, FORMAT_VERSION};
use super::taper::{SegmentPlace, Taper};
use super::{
    EncodingParams, EngineError, EngineResult, ParamsError, ProblemKind, ShareProblem,
    UploadOptions,
};
use std::time::{Duration, Instant};

use crate::grid::health::ServerHealth;
use crate::grid::{Grid, GridError, ShareNum, ShareStore, ShareWriter, StorageIndex};

pub(super) enum ShareCommand {
    /// Append a block; what its segment holds is dropped once it is written.
    Append(Bytes, SegmentHolds),
    /// Append the tail (its pieces one after another), then finish the
    /// share at `len` bytes.
    Finish { tail: Vec<Bytes>, len: u64 },
}

/// What a segment keeps until the last of its blocks is written: its room
/// in the memory budget and its place in the taper (each block's command
/// holds a clone).
#[derive(Clone, Debug, Default)]
pub(crate) struct SegmentHolds {
    _budget: Option<SegmentPermit>,
    _place: Option<SegmentPlace>,
}

impl SegmentHolds {
    /// Only a place in the memory budget, if any.
    pub(crate) fn budget(budget: Option<SegmentPermit>) -> Self {
        Self {
            _budget: budget,
            _place: None,
        }
    }
}

/// Sends each share task still running its tail (`Finish`), then waits
/// for them all: the servers that stored their share, and why each other
/// share was lost. `tails` are (tail in pieces, total length) in share order.
pub(super) async fn finish_shares(
    slots: &mut [ShareSlot],
    tails: impl IntoIterator<Item = ShareTail>,
) -> (Vec<String>, Vec<(ShareNum, String, ProblemKind)>) {
    let mut finishing = Vec::new();
    for (slot, (tail, len)) in slots.iter_mut().zip(tails) {
        let Some(sender) = slot.sender.take() else {
            continue;
        };
        // A failed send means the task already ended; its error is
        // collected below with the others.
        let _ = sender.send(ShareCommand::Finish { tail, len }).await;
        finishing.push(slot);
    }
    let (mut stored_on, mut lost) = (Vec::new(), Vec::new());
    for slot in finishing {
        let (share, server) = (slot.share, slot.server.clone());
        let kind = match slot.task.take() {
            None => ProblemKind::TaskGone { what: "share task" },
            Some(task) => match task.await {
                Ok(Ok(())) => {
                    stored_on.push(server);
                    continue;
                }
                Ok(Err(e)) => ProblemKind::of(e),
                Err(e) => ProblemKind::TaskFailed {
                    what: "share task",
                    source: Arc::new(e),
                },
            },
        };
        lost.push((share, server, kind));
    }
    (stored_on, lost)
}

/// One share's writer task, seen from the Uploader.
pub(super) struct ShareSlot {
    pub(super) share: ShareNum,
    pub(super) server: String,
    /// `None` once the share is dead or finished.
    pub(super) sender: Option<mpsc::Sender<ShareCommand>>,
    pub(super) task: Option<JoinHandle<Result<(), GridError>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// A `write` or `finish` was cancelled half-way, or failed: the shares
    /// may be inconsistent, so nothing may be published.
    Broken,
    Finished,
}

/// A finished upload.
#[derive(Debug)]
pub struct Finished {
    /// The capability that reads the file back: a secret for the namespace only.
    pub cap: FileCap,
    /// All n shares stored, on as many distinct servers as the grid has
    /// (up to n). When not, repair has work to do.
    pub complete: bool,
}

/// Streams one file version into the grid. See the module docs.
pub struct Uploader {
    key: FileKey,
    si: StorageIndex,
    params: EncodingParams,
    coder: Arc<SegmentCoder>,
    /// Tests only: the share whose blocks a faulty uploader gets wrong.
    #[cfg(test)]
    pub(crate) tamper_share: Option<usize>,
    grid: Grid,
    expected_size: Option<u64>,
    max_in_flight: usize,
    buffer: SegmentBuf,
    written: u64,
    /// File offset of the next segment handed to the coder.
    next_offset: u64,
    in_flight: VecDeque<(Coding, SegmentHolds)>,
    budget: Option<MemoryBudget>,
    taper: Taper,
    slots: Vec<ShareSlot>,
    /// Each share's block tree and the ciphertext tree, built as segments
    /// are coded: about 64 bytes per segment per share.
    trees: UploadTrees,
    problems: Vec<ShareProblem>,
    state: State,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("si", &self.si)
            .field("written", &self.written)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    /// Starts an upload with a fresh random key: creates the N shares on the
    /// grid's servers in the storage index's permuted order.
    pub async fn new(
        grid: Grid,
        params: EncodingParams,
        options: UploadOptions,
        expected_size: Option<u64>,
    ) -> EngineResult<Self> {
        Self::with_key(
            grid,
            params,
            options,
            expected_size,
            FileKey::random(),
            FORMAT_VERSION,
        )
        .await
    }

    /// As [`Uploader::new`] with a given key and format version: for test
    /// vectors only; a key must never encrypt two different files, so this
    /// is not public.
    pub(crate) async fn with_key(
        grid: Grid,
        params: EncodingParams,
        options: UploadOptions,
        expected_size: Option<u64>,
        key: FileKey,
        version: u16,
    ) -> EngineResult<Self> {
        params.validate()?;
        if grid.servers().is_empty() {
            return Err(ParamsError::NoServers.into());
        }
        let coder = Arc::new(SegmentCoder::for_version(&params, version)?);
        let si = key.storage_index();
        let servers = servers_with_room(&grid, si, &params, expected_size).await;
        let n = usize::from(params.n);

        let creates = (0..n).map(|i| {
            let server = Arc::clone(&servers[i % servers.len()]);
            let secrets = key.share_secrets(server.identity());
            async move {
                #[allow(clippy::cast_possible_truncation)] // i < n <= 256, checked by validate()
                let share = ShareNum(i as u8);
                let result = server.create(si, share, &secrets).await;
                (share, server, result)
            }
        });
        let created = futures::future::join_all(creates).await;

        let mut uploader = Self {
            key,
            si,
            params,
            grid,
            expected_size,
            max_in_flight: options.max_in_flight.max(1),
            buffer: coder.segment_buf(params.segment_size as usize),
            written: 0,
            next_offset: 0,
            in_flight: VecDeque::new(),
            budget: options.budget.clone(),
            taper: Taper::new(expected_size, options.taper_from_end, options.taper_depth),
            slots: Vec::with_capacity(n),
            trees: UploadTrees::new(n),
            problems: Vec::new(),
            state: State::Open,
            coder,
            #[cfg(test)]
            tamper_share: None,
        };
        for (share, server, result) in created {
            let server_id = server.server_id().to_owned();
            match result {
                Ok(writer) => {
                    let (sender, receiver) = mpsc::channel(options.share_queue.max(1));
                    let health = Some((Arc::clone(uploader.grid.health()), server_id.clone()));
                    let task = tokio::spawn(run_share(writer, receiver, health));
                    uploader.slots.push(ShareSlot {
                        share,
                        server: server_id,
                        sender: Some(sender),
                        task: Some(task),
                    });
                }
                Err(e) => {
                    tracing::warn!(%si, %share, server = %server_id, error = %e, "share create failed");
                    uploader.problems.push(ShareProblem {
                        share: Some(share),
                        server: server_id.clone(),
                        kind: ProblemKind::of(e),
                    });
                    uploader.slots.push(ShareSlot {
                        share,
                        server: server_id,
                        sender: None,
                        task: None,
                    });
                }
            }
        }
        if let Err(e) = uploader.check_happy() {
            uploader.abort_shares().await;
            return Err(e);
        }
        let header_template = Header {
            version,
            share: 0,
            k: params.k,
            n: params.n,
            segment_size: params.segment_size,
        };
        let headers: Vec<Bytes> = (0..n)
            .map(|i| {
                #[allow(clippy::cast_possible_truncation)] // i < n <= 256, checked by validate()
                let share = i as u16;
                let header = Header {
                    share,
                    ..header_template
                };
                Bytes::copy_from_slice(&header.encode())
            })
            .collect();
        uploader.state = State::Broken;
        uploader
            .send_to_shares(headers, SegmentHolds::default())
            .await?;
        uploader.state = State::Open;
        Ok(uploader)
    }

    /// The storage index the shares are stored under; known before any byte is sent.
    pub fn storage_index(&self) -> StorageIndex {
        self.si
    }

    /// What a later process needs to remove this upload's shares should this
    /// one die before finishing or aborting it: see [`super::delete`].
    pub fn recovery_token(&self) -> String {
        super::delete::recovery_token(&self.key)
    }

    /// Plaintext bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Shares lost so far, and why.
    pub fn problems(&self) -> &[ShareProblem] {
        &self.problems
    }

    /// Accepts the next bytes of the file. Waits while the pipeline is full.
    /// Cancelling this future leaves the upload unusable (it can only be
    /// aborted), never half-published.
    pub async fn write(&mut self, data: Bytes) -> EngineResult<()> {
        self.check_open()?;
        let written = self.written.checked_add(data.len() as u64);
        let over = match (written, self.expected_size) {
            (None, _) => true,
            (Some(w), Some(expected)) => w > expected,
            (Some(_), None) => false,
        };
        if over {
            let expected = self.expected_size.unwrap_or(u64::MAX);
            let written = written.unwrap_or(u64::MAX);
            self.abort().await;
            return Err(EngineError::SizeMismatch { expected, written });
        }
        self.state = State::Broken;
        if let Err(e) = self.dispatch_coded().await {
            self.abort().await;
            return Err(e);
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = self.buffer.extend(rest);
            rest = &rest[take..];
            self.written += take as u64;
            if self.buffer.room() == 0 {
                if let Err(e) = self.submit_segment().await {
                    self.abort().await;
                    return Err(e);
                }
            }
        }
        self.state = State::Open;
        Ok(())
    }

    /// Completes the upload: codes the last segment, writes the trees and
    /// trailers, and finishes the shares. Succeeds only if at least `happy`
    /// shares are stored; otherwise removes them all.
    pub async fn finish(self) -> EngineResult<FileCap> {
        self.finish_counted().await.map(|finished| finished.cap)
    }

    /// [`Uploader::finish`], also telling how many shares were stored: a
    /// file stored with fewer than n (on fewer distinct servers than the
    /// grid could give it) is one for repair to complete.
    pub async fn finish_counted(mut self) -> EngineResult<Finished> {
        self.check_open()?;
        if let Some(expected) = self.expected_size {
            if expected != self.written {
                let written = self.written;
                self.abort().await;
                return Err(EngineError::SizeMismatch { expected, written });
            }
        }
        self.state = State::Broken;
        match self.finish_inner().await {
            Ok(finished) => {
                self.state = State::Finished;
                Ok(finished)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> EngineResult<Finished> {
        if !self.buffer.is_empty() {
            self.submit_segment().await?;
        }
        self.dispatch_all().await?;

        let trees = std::mem::take(&mut self.trees);
        let (trailer, tails) = {
            let params = self.params;
            let size = self.written;
            let version = self.coder.version();
            if size <= CODE_IN_PLACE_UP_TO as u64 {
                // One small segment: trees of one leaf each.
                build_tails(params, version, size, trees)?
            } else {
                tokio::task::spawn_blocking(move || build_tails(params, version, size, trees))
                    .await
                    .map_err(|source| EngineError::TaskFailed {
                        what: "building share tails",
                        source,
                    })??
            }
        };

        let (stored_on, lost) = finish_shares(&mut self.slots, tails).await;
        for (share, server, kind) in lost {
            self.lose_share(share, server, kind);
        }
        let stored = distinct_servers(stored_on.iter().map(String::as_str));
        if stored < usize::from(self.params.happy) {
            // Finished shares are visible; delete them so nothing is left.
            self.delete_everywhere().await;
            return Err(not_happy(stored, self.params.happy, self.problems.clone()));
        }
        tracing::debug!(si = %self.si, size = self.written, stored, "upload finished");
        let servers = self.grid.servers().len();
        Ok(Finished {
            cap: FileCap {
                key: self.key.clone(),
                trailer_hash: trailer.hash(),
                k: self.params.k,
                n: self.params.n,
                size: self.written,
            },
            complete: stored_on.len() >= usize::from(self.params.n)
                && stored >= usize::from(self.params.n).min(servers),
        })
    }

    /// Stops the upload and removes every share it wrote. Idempotent.
    pub async fn abort(&mut self) {
        if self.state == State::Finished {
            return;
        }
        self.state = State::Broken;
        self.in_flight.clear();
        self.abort_shares().await;
    }

    async fn abort_shares(&mut self) {
        for slot in &mut self.slots {
            // Closing the channel makes the task abort its writer.
            slot.sender = None;
        }
        for slot in &mut self.slots {
            if let Some(task) = slot.task.take() {
                let _ = task.await;
            }
        }
    }

    /// Removes finished shares of this upload from every server.
    async fn delete_everywhere(&self) {
        let deletes = self.grid.servers().iter().map(|server| {
            let secrets = self.key.share_secrets(server.identity());
            async move {
                if let Err(e) = server.delete(self.si, &secrets).await {
                    tracing::warn!(si = %self.si, server = server.server_id(), error = %e,
                        "could not delete the shares of a failed upload");
                }
            }
        });
        futures::future::join_all(deletes).await;
    }

    fn check_open(&self) -> EngineResult<()> {
        match self.state {
            State::Open => Ok(()),
            State::Broken | State::Finished => Err(EngineError::Aborted),
        }
    }

    /// Hands the buffered segment to the coder, first dispatching the oldest
    /// coded segment if the pipeline is full.
    async fn submit_segment(&mut self) -> EngineResult<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.dispatch_oldest().await?;
        }
        if self.taper.is_shallow(self.next_offset) {
            // Segments held here keep their places until written.
            self.dispatch_all().await?;
        }
        let place = self.taper.place(self.next_offset).await;
        let budget = self.take_permit().await?;
        let fresh = self.coder.segment_buf(self.params.segment_size as usize);
        let segment = std::mem::replace(&mut self.buffer, fresh);
        let offset = self.next_offset;
        self.next_offset += segment.len() as u64;
        let coding = if segment.len() <= CODE_IN_PLACE_UP_TO {
            Coding::Done(self.coder.encode(&self.key, offset, segment))
        } else {
            let coder = Arc::clone(&self.coder);
            let key = self.key.clone();
            Coding::Pool(tokio::task::spawn_blocking(move || {
                coder.encode(&key, offset, segment)
            }))
        };
        let holds = SegmentHolds {
            _budget: budget,
            _place: place,
        };
        self.in_flight.push_back((coding, holds));
        Ok(())
    }

    /// Hands the coded segments at the front of the queue to their share
    /// writers, without waiting for any still being coded: blocks go to
    /// the servers as soon as they exist. Waiting until `max_in_flight`
    /// segments had piled up kept a slow client's first 4 MiB (and their
    /// 13 MB of blocks) in memory, and left them all to write after its
    /// last byte.
    async fn dispatch_coded(&mut self) -> EngineResult<()> {
        while self
            .in_flight
            .front()
            .is_some_and(|(task, _)| task.is_finished())
        {
            self.dispatch_oldest().await?;
        }
        Ok(())
    }

    async fn dispatch_oldest(&mut self) -> EngineResult<()> {
        if let Some((oldest, holds)) = self.in_flight.pop_front() {
            let encoded = oldest.join().await?;
            self.dispatch(encoded, holds).await?;
        }
        Ok(())
    }

    /// Hands every segment taken for coding to its share writers, in order.
    async fn dispatch_all(&mut self) -> EngineResult<()> {
        while !self.in_flight.is_empty() {
            self.dispatch_oldest().await?;
        }
        Ok(())
    }

    /// A place in the shared memory budget for the next segment. While
    /// none is free, hands this upload's own coded segments to their share
    /// writers first: they free places without needing any, so waiting
    /// after that cannot deadlock.
    async fn take_permit(&mut self) -> EngineResult<Option<SegmentPermit>> {
        let Some(budget) = self.budget.clone() else {
            return Ok(None);
        };
        loop {
            if let Some(permit) = budget.try_take() {
                return Ok(Some(permit));
            }
            if self.in_flight.is_empty() {
                return match budget.take().await {
                    Some(permit) => Ok(Some(permit)),
                    None => Err(EngineError::BudgetClosed),
                };
            }
            self.dispatch_oldest().await?;
        }
    }

    /// Queues a coded segment's blocks to the share tasks.
    async fn dispatch(
        &mut self,
        #[cfg_attr(not(test), allow(unused_mut))] mut encoded: EncodedSegment,
        holds: SegmentHolds,
    ) -> EngineResult<()> {
        #[cfg(test)]
        if let Some(share) = self.tamper_share {
            // A faulty uploader: one share's block differs from the code of
            // the segment, yet its own block tree is consistent with it.
            let mut block = encoded.blocks[share].to_vec();
            if let Some(byte) = block.first_mut() {
                *byte ^= 0x5a;
            }
            encoded.block_hashes[share] = self.coder.block_hash(&block);
            encoded.blocks[share] = Bytes::from(block);
        }
        self.trees.add(&encoded);
        self.send_to_shares(encoded.blocks, holds).await
    }

    async fn send_to_shares(
        &mut self,
        blocks: Vec<Bytes>,
        holds: SegmentHolds,
    ) -> EngineResult<()> {
        for (index, block) in blocks.into_iter().enumerate() {
            let Some(sender) = &self.slots[index].sender else {
                continue;
            };
            let command = ShareCommand::Append(block, holds.clone());
            if sender.send(command).await.is_err() {
                let slot = &mut self.slots[index];
                slot.sender = None;
                let kind = slot_error(slot).await;
                let (share, server) = (slot.share, slot.server.clone());
                self.lose_share(share, server, kind);
                self.check_happy()?;
            }
        }
        Ok(())
    }

    fn lose_share(&mut self, share: ShareNum, server: String, kind: ProblemKind) {
        tracing::warn!(si = %self.si, %share, %server, error = ?kind, "share lost during upload");
        self.problems.push(ShareProblem {
            share: Some(share),
            server,
            kind,
        });
    }

    /// `happy` counts distinct servers, as Tahoe's servers-of-happiness
    /// does: shares wrapped onto one server fall with it together.
    fn check_happy(&self) -> EngineResult<()> {
        let live = distinct_servers(
            self.slots
                .iter()
                .filter(|s| s.sender.is_some())
                .map(|s| s.server.as_str()),
        );
        if live < usize::from(self.params.happy) {
            return Err(not_happy(live, self.params.happy, self.problems.clone()));
        }
        Ok(())
    }
}

/// An upload short of `happy` servers: out of space when a server said
/// it was full, otherwise not happy.
pub(super) fn not_happy(live: usize, happy: u16, problems: Vec<ShareProblem>) -> EngineError {
    if problems
        .iter()
        .any(|p| matches!(p.kind, ProblemKind::NoSpace(_)))
    {
        EngineError::NoSpace {
            live,
            happy,
            problems,
        }
    } else {
        EngineError::NotHappy {
            live,
            happy,
            problems,
        }
    }
}

/// How many different servers the ids name.
pub(super) fn distinct_servers<'a>(ids: impl Iterator<Item = &'a str>) -> usize {
    ids.collect::<std::collections::HashSet<_>>().len()
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Dropping the senders closes the channels; each share task then
        // aborts its writer on its own, after this Uploader is gone.
        for slot in &mut self.slots {
            slot.sender = None;
        }
    }
}

/// What a share task ended with, once its channel has closed.
pub(super) async fn slot_error(slot: &mut ShareSlot) -> ProblemKind {
    match slot.task.take() {
        Some(task) => match task.await {
            Ok(Err(e)) => ProblemKind::of(e),
            Ok(Ok(())) => ProblemKind::TaskGone { what: "share task" },
            Err(e) => ProblemKind::TaskFailed {
                what: "share task",
                source: Arc::new(e),
            },
        },
        None => ProblemKind::TaskGone { what: "share task" },
    }
}

/// Segments up to this many bytes are coded on the uploader's own task,
/// and a file up to this size gets its tails built there too. Such a
/// segment codes in about 50 us (AES-CTR, Reed-Solomon and BLAKE3 of 3.3
/// times its bytes), less than a trip to the blocking pool costs on this
/// 2-core VM: a 40 KB grid PUT made about 94 thread switches and spent
/// 1.85 ms of CPU, two of its trips being for this work.
const CODE_IN_PLACE_UP_TO: usize = 64 << 10;

/// A segment being coded: on the blocking pool, or coded already.
enum Coding {
    Pool(JoinHandle<EncodedSegment>),
    Done(EncodedSegment),
}

impl Coding {
    fn is_finished(&self) -> bool {
        match self {
            Coding::Pool(task) => task.is_finished(),
            Coding::Done(_) => true,
        }
    }

    async fn join(self) -> EngineResult<EncodedSegment> {
        match self {
            Coding::Pool(task) => task.await.map_err(|source| EngineError::TaskFailed {
                what: "segment encoder",
                source,
            }),
            Coding::Done(encoded) => Ok(encoded),
        }
    }
}

/// Most blocks a share task hands its writer at once. With the defaults
/// at most three are ever queued (`share_queue` and the one just taken).
/// 1 GiB PUTs to a local grid, fresh servers, alternating: about 40 % of
/// blocks went in a write with others, and server CPU was 238-287 ticks
/// against 254-298 writing each alone (MB/s 465-552 against 445-515).
const COALESCE: usize = 4;

/// Appends what it is sent; finishes on `Finish`; aborts when the channel
/// closes first or an append fails.
///
/// With `health`, each write's latency or failure goes into that server's
/// record (see [`crate::grid::health`]).
pub(super) async fn run_share(
    mut writer: Box<dyn ShareWriter>,
    mut commands: mpsc::Receiver<ShareCommand>,
    health: Option<(Arc<ServerHealth>, String)>,
) -> Result<(), GridError> {
    let note = |started: Instant, result: &Result<(), GridError>| {
        if let Some((health, server)) = &health {
            match result {
                Ok(()) => health.write_ok(server, started.elapsed()),
                Err(e) if e.is_out_of_space() => {}
                Err(_) => health.error(server),
            }
        }
    };
    let mut next = None;
    loop {
        let command = match next.take() {
            Some(command) => command,
            None => match commands.recv().await {
                Some(command) => command,
                None => break,
            },
        };
        let started = Instant::now();
        match command {
            ShareCommand::Append(block, holds) => {
                // Blocks that queued while the last write ran go in one
                // write (see COALESCE); each keeps what its segment holds
                // until then.
                let (mut blocks, mut held) = (vec![block], vec![holds]);
                while blocks.len() < COALESCE {
                    match commands.try_recv() {
                        Ok(ShareCommand::Append(block, holds)) => {
                            blocks.push(block);
                            held.push(holds);
                        }
                        Ok(finish) => {
                            next = Some(finish);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let appended = writer.append_many(blocks).await;
                drop(held);
                note(started, &appended);
                if let Err(e) = appended {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            }
            ShareCommand::Finish { tail, len } => {
                let finished = writer.finish_with_many(tail, len).await;
                note(started, &finished);
                return finished;
            }
        }
    }
    writer.abort().await
}

/// Below this much free space a server is left out of a new upload of
/// unknown size (while `happy` servers remain).
const MIN_SERVER_FREE: u64 = 16 << 20;
/// How long a server may take to say how much room it has.
const FREE_SPACE_TIMEOUT: Duration = Duration::from_secs(2);

/// The servers a new upload uses, in [`Grid::placement`] order: those
/// that say they lack room for one share of it (or, the size unknown, for
/// [`MIN_SERVER_FREE`]) are left out, as long as `happy` distinct servers
/// remain. Shares then wrap onto the others, and repair moves them back
/// once the full servers have room.
pub(super) async fn servers_with_room(
    grid: &Grid,
    si: StorageIndex,
    params: &EncodingParams,
    expected_size: Option<u64>,
) -> Vec<Arc<dyn ShareStore>> {
    let order = grid.placement(si);
    let need = expected_size
        .map(|size| {
            size.div_ceil(u64::from(params.k.max(1)))
                .saturating_add(1 << 20)
        })
        .unwrap_or(0)
        .max(MIN_SERVER_FREE);
    let spaces = futures::future::join_all(
        order
            .iter()
            .map(|server| tokio::time::timeout(FREE_SPACE_TIMEOUT, server.free_space())),
    )
    .await;
    let full: Vec<bool> = spaces
        .iter()
        .map(|space| matches!(space, Ok(Some(space)) if space.bytes < need))
        .collect();
    let room = full.iter().filter(|f| !**f).count();
    if room == order.len() || room < usize::from(params.happy) {
        return order;
    }
    tracing::info!(%si, skipped = order.len() - room, need, "servers without room left out of an upload");
    order
        .into_iter()
        .zip(full)
        .filter(|(_, full)| !full)
        .map(|(server, _)| server)
        .collect()
}

/// The hash trees of an upload, built segment by segment as it streams:
/// each share's block tree and the ciphertext tree.
#[derive(Debug, Default)]
pub(super) struct UploadTrees {
    blocks: Vec<TreeBuilder>,
    ciphertext: TreeBuilder,
}

impl UploadTrees {
    pub(super) fn new(n: usize) -> Self {
        Self {
            blocks: vec![TreeBuilder::new(); n],
            ciphertext: TreeBuilder::new(),
        }
    }

    /// Adds the next segment's hashes.
    pub(super) fn add(&mut self, encoded: &EncodedSegment) {
        for (tree, hash) in self.blocks.iter_mut().zip(&encoded.block_hashes) {
            tree.push(*hash);
        }
        self.ciphertext.push(encoded.segment_hash);
    }
}

/// The bytes of a share after its blocks, in pieces, and the share's
/// total length.
pub(super) type ShareTail = (Vec<Bytes>, u64);

/// The trailer and, for every share, the bytes after its blocks together
/// with the share's total length. Each share's bytes come in pieces: its
/// block tree, the ciphertext tree (one buffer all shares point into) and
/// the rest. Joined, a 4 GiB upload's tails were 5 MiB of fresh memory
/// copied after its last byte: building them took 5.7-13 ms of its close,
/// against 2.4-4.0 ms in pieces (alternating runs, timed in `finish`).
pub(super) fn build_tails(
    params: EncodingParams,
    version: u16,
    size: u64,
    trees: UploadTrees,
) -> EngineResult<(Trailer, Vec<ShareTail>)> {
    let segment_count = trees.ciphertext.leaves() as u64;
    let block_trees: Vec<HashTree> = trees.blocks.into_iter().map(TreeBuilder::finish).collect();
    let roots: Vec<Hash> = block_trees.iter().map(HashTree::root).collect();
    let share_tree = HashTree::from_leaves(&roots);
    let ciphertext_tree = trees.ciphertext.finish();
    let trailer = Trailer {
        version,
        k: params.k,
        n: params.n,
        segment_size: params.segment_size,
        size,
        segment_count,
        share_root: share_tree.root(),
        ciphertext_root: ciphertext_tree.root(),
    };
    let layout = ShareLayout::new(&trailer).map_err(|source| EngineError::OwnLayout {
        what: "layout of our own upload",
        source,
    })?;
    let ciphertext_bytes = Bytes::from(ciphertext_tree.into_bytes());
    let trailer_bytes = trailer.encode();
    let tails = block_trees
        .into_iter()
        .enumerate()
        .map(|(share, tree)| {
            #[allow(clippy::cast_possible_truncation)] // one tree per share: share < n <= 256
            let share = share as u16;
            let mut rest = Vec::new();
            for hash in share_tree.proof(usize::from(share)) {
                rest.extend_from_slice(&hash);
            }
            rest.extend_from_slice(&trailer_bytes);
            rest.extend_from_slice(&layout.footer(share).encode());
            let tail = vec![
                Bytes::from(tree.into_bytes()),
                ciphertext_bytes.clone(),
                Bytes::from(rest),
            ];
            debug_assert_eq!(
                layout.block_tree_offset + tail.iter().map(|piece| piece.len() as u64).sum::<u64>(),
                layout.share_len
            );
            (tail, layout.share_len)
        })
        .collect();
    Ok((trailer, tails))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::grid::{FreeSpace, MemoryStore, ShareInfo, ShareSecrets};
    use async_trait::async_trait;
    use std::time::Duration;

    /// A memory store that reports `free` bytes of room, and whose appends
    /// take `delay` each and are counted in `appends`.
    #[derive(Debug)]
    struct TestStore {
        inner: MemoryStore,
        free: u64,
        delay: Duration,
        appends: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl TestStore {
        fn new(name: String, free: u64) -> Self {
            Self {
                inner: MemoryStore::new(name),
                free,
                delay: Duration::ZERO,
                appends: Arc::default(),
            }
        }
    }

    #[derive(Debug)]
    struct CountedWriter {
        inner: Box<dyn ShareWriter>,
        delay: Duration,
        appends: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait]
    impl ShareWriter for CountedWriter {
        async fn append(&mut self, data: Bytes) -> crate::grid::GridResult<()> {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.inner.append(data).await?;
            self.appends
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        async fn finish(self: Box<Self>, len: u64) -> crate::grid::GridResult<()> {
            self.inner.finish(len).await
        }
        async fn abort(self: Box<Self>) -> crate::grid::GridResult<()> {
            self.inner.abort().await
        }
    }

    #[async_trait]
    impl ShareStore for TestStore {
        fn server_id(&self) -> &str {
            self.inner.server_id()
        }
        async fn create(
            &self,
            si: StorageIndex,
            share: ShareNum,
            secrets: &ShareSecrets,
        ) -> crate::grid::GridResult<Box<dyn ShareWriter>> {
            Ok(Box::new(CountedWriter {
                inner: self.inner.create(si, share, secrets).await?,
                delay: self.delay,
                appends: Arc::clone(&self.appends),
            }))
        }
        async fn read(
            &self,
            si: StorageIndex,
            share: ShareNum,
            range: std::ops::Range<u64>,
        ) -> crate::grid::GridResult<Bytes> {
            self.inner.read(si, share, range).await
        }
        async fn list(&self, si: StorageIndex) -> crate::grid::GridResult<Vec<ShareInfo>> {
            self.inner.list(si).await
        }
        async fn delete(
            &self,
            si: StorageIndex,
            secrets: &ShareSecrets,
        ) -> crate::grid::GridResult<()> {
            self.inner.delete(si, secrets).await
        }
        async fn free_space(&self) -> Option<FreeSpace> {
            Some(FreeSpace {
                bytes: self.free,
                volume: None,
            })
        }
    }

    fn grid(free: impl Fn(usize) -> u64) -> Grid {
        Grid::new(
            (0..10)
                .map(|i| Arc::new(TestStore::new(format!("m{i}"), free(i))) as Arc<dyn ShareStore>)
                .collect(),
        )
    }

    async fn holders(grid: &Grid, si: StorageIndex) -> Vec<String> {
        let mut holders = Vec::new();
        for server in grid.servers() {
            for _ in server.list(si).await.unwrap() {
                holders.push(server.server_id().to_owned());
            }
        }
        holders
    }

    #[tokio::test]
    async fn a_full_server_is_skipped_while_happy_can_be_met() {
        let grid = grid(|i| if i == 4 { 1000 } else { 1 << 40 });
        let mut up = Uploader::new(
            grid.clone(),
            EncodingParams::default(),
            UploadOptions::default(),
            Some(50_000),
        )
        .await
        .unwrap();
        up.write(Bytes::from(vec![7u8; 50_000])).await.unwrap();
        let cap = up.finish().await.unwrap();
        let held = holders(&grid, cap.key.storage_index()).await;
        assert_eq!(held.len(), 10, "all n shares stored: {held:?}");
        assert!(!held.contains(&"m4".to_owned()), "{held:?}");

        // Every server full: none is skipped (happy could not be met).
        let grid = self::grid(|_| 1000);
        let mut up = Uploader::new(
            grid.clone(),
            EncodingParams::default(),
            UploadOptions::default(),
            None,
        )
        .await
        .unwrap();
        up.write(Bytes::from(vec![7u8; 50_000])).await.unwrap();
        let cap = up.finish().await.unwrap();
        let mut servers = holders(&grid, cap.key.storage_index()).await;
        servers.dedup();
        assert_eq!(servers.len(), 10);
    }

    #[tokio::test]
    async fn servers_with_recent_trouble_get_the_last_shares() {
        let grid = grid(|_| 1 << 40);
        let si = StorageIndex::from_bytes([3; 16]);
        let first = grid.permuted(si)[0].server_id().to_owned();
        grid.health().error(&first);
        let placement = grid.placement(si);
        assert_eq!(placement.last().unwrap().server_id(), first);
        assert_eq!(placement.len(), 10);
        assert!(grid.health().is_suspect(&first));
        assert_eq!(grid.health().report()[0].1.errors, 1);
    }

    /// Uploads 32 segments to ten slow stores in segment-sized writes;
    /// returns the fewest blocks any share had written when the last
    /// `write` returned, and whether the file then reads back.
    async fn blocks_written_at_last_byte(taper_from_end: u64) -> (usize, bool) {
        const SEGMENT: u32 = 32 << 10;
        const SEGMENTS: usize = 32;
        let counters: Vec<_> = (0..10)
            .map(|_| Arc::new(std::sync::atomic::AtomicUsize::new(0)))
            .collect();
        let grid = Grid::new(
            counters
                .iter()
                .enumerate()
                .map(|(i, appends)| {
                    Arc::new(TestStore {
                        delay: Duration::from_millis(3),
                        appends: Arc::clone(appends),
                        ..TestStore::new(format!("s{i}"), 1 << 40)
                    }) as Arc<dyn ShareStore>
                })
                .collect(),
        );
        let params = EncodingParams {
            segment_size: SEGMENT,
            ..EncodingParams::default()
        };
        let options = UploadOptions {
            taper_from_end,
            taper_depth: 1,
            ..UploadOptions::default()
        };
        let data: Vec<u8> = (0..SEGMENTS * SEGMENT as usize)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut up = Uploader::new(grid.clone(), params, options, Some(data.len() as u64))
            .await
            .unwrap();
        for chunk in data.chunks(SEGMENT as usize) {
            up.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let fewest = counters
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::SeqCst))
            .min()
            .unwrap();
        let cap = up.finish().await.unwrap();
        let read = crate::engine::Downloader::open(&grid, &cap)
            .await
            .unwrap()
            .read(0, data.len() as u64)
            .await
            .unwrap();
        // The first append of each share is its header.
        (fewest.saturating_sub(1), read[..] == data[..])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn near_a_declared_end_the_pipeline_runs_shallow() {
        // Tapered to one segment for the last eight: when the last byte is
        // taken, every segment before the last is on every share.
        let (tapered, reads) = blocks_written_at_last_byte(8 * (32 << 10)).await;
        assert!(reads, "the tapered upload must read back");
        assert!(
            tapered >= 31,
            "only {tapered} of 32 blocks written at the last byte"
        );

        // Without the taper the queues still hold segments then: what the
        // client's close would wait through.
        let (deep, reads) = blocks_written_at_last_byte(0).await;
        assert!(reads, "the untapered upload must read back");
        assert!(
            deep <= 29,
            "{deep} of 32 blocks written at the last byte without the taper"
        );
    }
}
