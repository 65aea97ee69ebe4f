//! The `tahoe-chk` uploader: a file whose size is known at the start,
//! streamed into genuine Tahoe-LAFS immutable shares while its bytes arrive.
//!
//! The size fixes everything up front ([`ChkParams`], every share's exact
//! length), so each share is an immutable allocation of that length on its
//! server ([`crate::grid::ShareStore::create_immutable`]). Then, as with
//! [`crate::engine::Uploader`] (whose placement, share tasks, `happy` rule
//! and problem reports this reuses): the header goes to every share, each
//! segment is encrypted and coded on the blocking pool as soon as it is
//! full while the next one fills, its blocks are queued to one bounded task
//! per share, and `finish` writes the hash trees and the URI extension block
//! and waits until every share is durable. Memory: the segment being filled,
//! the one being coded, and the bounded share queues, whatever the size.
//!
//! Files of at most [`LIT_THRESHOLD`] bytes become `URI:LIT:` capabilities,
//! the bytes inside the capability, as Tahoe makes them: no shares at all.
//!
//! The CHK key is random per file (Tahoe reads non-convergent files like
//! any other); the servers' secrets are derived from it per server.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::encode::{ChkEncoder, SegmentBlocks};
use super::hashutil::storage_index;
use super::params::ChkParams;
use super::uri::{LitCap, LIT_THRESHOLD};
use super::ChkError;
use crate::engine::budget::{MemoryBudget, SegmentPermit};
use crate::engine::cap::Capability;
use crate::engine::crypto::{tagged_hash, FileKey};
use crate::engine::upload::{
    distinct_servers, finish_shares, not_happy, run_share, servers_with_room, slot_error,
    SegmentHolds, ShareCommand, ShareSlot,
};
use crate::engine::{
    EncodingParams, EngineError, EngineResult, ParamsError, ProblemKind, ShareProblem,
    UploadOptions,
};
use crate::grid::{Grid, ShareNum, ShareSecrets, StorageIndex};

// Do not change: the servers' secrets of stored CHK shares depend on it.
const SECRETS_TAG: &str = "griddav/v1/chk-share-secrets";
/// Recovery tokens of CHK uploads: this prefix, then the base32 CHK key.
pub(crate) const TOKEN_PREFIX: &str = "griddav-chk-upload:1:";

/// The secrets of a CHK file's shares on the server with `identity`:
/// per server, from the file's key, like griddav's own files.
pub fn share_secrets(key: &[u8; 16], identity: &[u8]) -> ShareSecrets {
    FileKey::from_bytes(tagged_hash(SECRETS_TAG, &[key])).share_secrets(identity)
}

/// What a later process needs to remove a CHK upload that never finished.
pub fn recovery_token(key: &[u8; 16]) -> String {
    format!("{TOKEN_PREFIX}{}", crate::grid::base32(key))
}

/// The CHK key of a [`recovery_token`]; `None` for any other text.
pub(crate) fn key_of_token(token: &str) -> Option<[u8; 16]> {
    let encoded = token.strip_prefix(TOKEN_PREFIX)?;
    crate::grid::from_base32(encoded).ok()?.try_into().ok()
}

/// Removes a CHK file's shares from every server that lets a client do so
/// (not Tahoe: there its shares go when their leases expire). Fails,
/// naming the servers, if some server could not be asked.
pub async fn delete_chk_shares(grid: &Grid, key: &[u8; 16]) -> EngineResult<()> {
    let si = StorageIndex::from_bytes(storage_index(key));
    let results = futures::future::join_all(grid.servers().iter().map(|server| async move {
        server
            .delete_immutable(si, &share_secrets(key, server.identity()))
            .await
    }))
    .await;
    super::super::delete::deletion_outcome(grid, results)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// A `write` or `finish` failed or was cancelled half-way: nothing
    /// may be published.
    Broken,
    Finished,
}

/// A finished CHK (or LIT) upload.
#[derive(Debug)]
pub struct ChkFinished {
    /// `Capability::Chk`, or `Capability::Lit` for a small file.
    pub cap: Capability,
    /// All n shares stored on as many distinct servers as the grid has
    /// (up to n); always true for a LIT file.
    pub complete: bool,
}

type Coding = JoinHandle<(ChkEncoder, Result<Vec<SegmentBlocks>, ChkError>)>;

/// The shares side of a CHK upload.
struct Shares {
    key: [u8; 16],
    si: StorageIndex,
    params: ChkParams,
    happy: u16,
    share_size: u64,
    grid: Grid,
    /// `None` while it codes a segment on the blocking pool.
    encoder: Option<ChkEncoder>,
    /// The segment being coded, and its memory permit.
    coding: Option<(Coding, Option<SegmentPermit>)>,
    budget: Option<MemoryBudget>,
    slots: Vec<ShareSlot>,
    problems: Vec<ShareProblem>,
    /// Plaintext of the segment being filled.
    buffer: BytesMut,
    next_segment: u64,
}

enum Body {
    /// Small enough for a `URI:LIT:`: the bytes so far.
    Lit(BytesMut),
    Chk(Box<Shares>),
}

/// Streams one file of a known size into Tahoe CHK shares (or a LIT
/// capability). See the module docs.
pub struct ChkUploader {
    size: u64,
    written: u64,
    body: Body,
    state: State,
}

impl std::fmt::Debug for ChkUploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChkUploader")
            .field("size", &self.size)
            .field("written", &self.written)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ChkUploader {
    /// Starts the upload of a `size`-byte file, coded k-of-n (from
    /// `params`; Tahoe's segment size rules applied to `params`'s segment
    /// size) with a fresh random key: allocates the n shares on the grid's
    /// servers and writes their headers. Nothing is stored for a file of
    /// at most [`LIT_THRESHOLD`] bytes.
    pub async fn new(
        grid: Grid,
        params: EncodingParams,
        options: UploadOptions,
        size: u64,
    ) -> EngineResult<Self> {
        let key: [u8; 16] = rand::random();
        Self::with_key(grid, params, options, size, key).await
    }

    async fn with_key(
        grid: Grid,
        params: EncodingParams,
        options: UploadOptions,
        size: u64,
        key: [u8; 16],
    ) -> EngineResult<Self> {
        params.validate()?;
        if size <= LIT_THRESHOLD {
            return Ok(Self {
                size,
                written: 0,
                // size <= 55
                body: Body::Lit(BytesMut::with_capacity(usize::try_from(size).unwrap_or(0))),
                state: State::Open,
            });
        }
        if grid.servers().is_empty() {
            return Err(ParamsError::NoServers.into());
        }
        let chk = ChkParams::for_upload(size, params.k, params.n, u64::from(params.segment_size))
            .map_err(EngineError::Chk)?;
        let encoder = ChkEncoder::new(key, chk).map_err(EngineError::Chk)?;
        let share_size = encoder.share_size();
        let header = Bytes::from(encoder.header());
        let si = StorageIndex::from_bytes(storage_index(&key));
        let servers = servers_with_room(&grid, si, &params, Some(size)).await;
        let n = usize::from(params.n);
        let creates = (0..n).map(|i| {
            let server = Arc::clone(&servers[i % servers.len()]);
            let secrets = share_secrets(&key, server.identity());
            async move {
                #[allow(clippy::cast_possible_truncation)] // i < n <= 256, checked by validate()
                let share = ShareNum(i as u8);
                let result = server
                    .create_immutable(si, share, share_size, &secrets)
                    .await;
                (share, server, result)
            }
        });
        let created = futures::future::join_all(creates).await;
        let mut shares = Shares {
            key,
            si,
            params: chk,
            happy: params.happy,
            share_size,
            grid,
            encoder: Some(encoder),
            coding: None,
            budget: options.budget.clone(),
            slots: Vec::with_capacity(n),
            problems: Vec::new(),
            buffer: BytesMut::new(),
            next_segment: 0,
        };
        for (share, server, result) in created {
            let server_id = server.server_id().to_owned();
            match result {
                Ok(writer) => {
                    let (sender, receiver) = mpsc::channel(options.share_queue.max(1));
                    let health = Some((Arc::clone(shares.grid.health()), server_id.clone()));
                    let task = tokio::spawn(run_share(writer, receiver, health));
                    shares.slots.push(ShareSlot {
                        share,
                        server: server_id,
                        sender: Some(sender),
                        task: Some(task),
                    });
                }
                Err(e) => {
                    tracing::warn!(%si, %share, server = %server_id, error = %e,
                        "immutable share allocation failed");
                    shares.problems.push(ShareProblem {
                        share: Some(share),
                        server: server_id.clone(),
                        kind: ProblemKind::of(e),
                    });
                    shares.slots.push(ShareSlot {
                        share,
                        server: server_id,
                        sender: None,
                        task: None,
                    });
                }
            }
        }
        shares.fresh_buffer();
        let mut uploader = Self {
            size,
            written: 0,
            body: Body::Chk(Box::new(shares)),
            state: State::Broken,
        };
        let Body::Chk(shares) = &mut uploader.body else {
            unreachable!("set just above");
        };
        let started = match shares.check_happy() {
            Ok(()) => shares.send_to_shares(vec![header; n], None).await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            uploader.abort().await;
            return Err(e);
        }
        uploader.state = State::Open;
        Ok(uploader)
    }

    /// The size declared at the start.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Plaintext bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Shares lost so far, and why.
    pub fn problems(&self) -> &[ShareProblem] {
        match &self.body {
            Body::Lit(_) => &[],
            Body::Chk(shares) => &shares.problems,
        }
    }

    /// What a later process needs to remove this upload's shares should
    /// this one die first (see [`delete_chk_shares`]); `None` for a LIT
    /// file, which stores nothing.
    pub fn recovery_token(&self) -> Option<String> {
        match &self.body {
            Body::Lit(_) => None,
            Body::Chk(shares) => Some(recovery_token(&shares.key)),
        }
    }

    /// Accepts the next bytes. More than the declared size is an error
    /// that aborts the upload. Cancelling this future leaves the upload
    /// unusable (it can only be aborted), never half-published.
    pub async fn write(&mut self, mut data: Bytes) -> EngineResult<()> {
        self.check_open()?;
        let total = self.written.checked_add(data.len() as u64);
        if total.is_none_or(|total| total > self.size) {
            let written = total.unwrap_or(u64::MAX);
            self.abort().await;
            return Err(EngineError::SizeMismatch {
                expected: self.size,
                written,
            });
        }
        self.state = State::Broken;
        let result = match &mut self.body {
            Body::Lit(buffer) => {
                buffer.extend_from_slice(&data);
                Ok(())
            }
            Body::Chk(shares) => {
                let mut result = Ok(());
                while !data.is_empty() {
                    let room = shares.segment_room();
                    let take = room.min(data.len());
                    shares.buffer.extend_from_slice(&data.split_to(take));
                    if take == room {
                        if let Err(e) = shares.submit_segment().await {
                            result = Err(e);
                            break;
                        }
                    }
                }
                result
            }
        };
        if let Err(e) = result {
            self.abort().await;
            return Err(e);
        }
        self.written = total.unwrap_or(self.size);
        self.state = State::Open;
        Ok(())
    }

    /// Completes the upload after exactly the declared bytes: codes the
    /// last segment, writes the hash trees and the URI extension block,
    /// and waits until every share is durable. Fewer than `happy` distinct
    /// servers, or fewer bytes than declared, is an error that removes
    /// what it can.
    pub async fn finish(mut self) -> EngineResult<ChkFinished> {
        self.check_open()?;
        if self.written != self.size {
            let written = self.written;
            self.abort().await;
            return Err(EngineError::SizeMismatch {
                expected: self.size,
                written,
            });
        }
        self.state = State::Broken;
        let result = match &mut self.body {
            Body::Lit(buffer) => Ok(ChkFinished {
                cap: Capability::Lit(LitCap {
                    data: buffer.to_vec(),
                }),
                complete: true,
            }),
            Body::Chk(shares) => shares.finish().await,
        };
        match result {
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

    /// Stops the upload and aborts every share being written. Idempotent.
    pub async fn abort(&mut self) {
        if self.state == State::Finished {
            return;
        }
        self.state = State::Broken;
        if let Body::Chk(shares) = &mut self.body {
            if let Some((coding, _)) = shares.coding.take() {
                coding.abort();
            }
            shares.abort_shares().await;
        }
    }

    fn check_open(&self) -> EngineResult<()> {
        match self.state {
            State::Open => Ok(()),
            State::Broken | State::Finished => Err(EngineError::Aborted),
        }
    }
}

impl Drop for ChkUploader {
    fn drop(&mut self) {
        // Closing the channels makes each share task abort its writer.
        if let Body::Chk(shares) = &mut self.body {
            for slot in &mut shares.slots {
                slot.sender = None;
            }
        }
    }
}

impl Shares {
    fn segment_len(&self) -> usize {
        // A segment is at most the configured segment size (<= 64 MiB).
        usize::try_from(self.params.segment_len(self.next_segment)).unwrap_or(usize::MAX)
    }

    fn segment_room(&self) -> usize {
        self.segment_len() - self.buffer.len()
    }

    fn fresh_buffer(&mut self) {
        self.buffer = BytesMut::with_capacity(self.segment_len());
    }

    /// Hands the full segment to the encoder on the blocking pool, once
    /// the previous one is coded and queued to the shares.
    async fn submit_segment(&mut self) -> EngineResult<()> {
        self.dispatch_coded().await?;
        let permit = self.take_permit().await?;
        let segment = std::mem::take(&mut self.buffer);
        self.next_segment += 1;
        if self.next_segment < self.params.num_segments {
            self.fresh_buffer();
        }
        let Some(mut encoder) = self.encoder.take() else {
            return Err(EngineError::Aborted);
        };
        let task = tokio::task::spawn_blocking(move || {
            let blocks = encoder.write(&segment);
            (encoder, blocks)
        });
        self.coding = Some((task, permit));
        Ok(())
    }

    /// Waits for the segment being coded and queues its blocks.
    async fn dispatch_coded(&mut self) -> EngineResult<()> {
        let Some((task, permit)) = self.coding.take() else {
            return Ok(());
        };
        let (encoder, blocks) = task.await.map_err(|source| EngineError::TaskFailed {
            what: "CHK segment encoder",
            source,
        })?;
        self.encoder = Some(encoder);
        for segment in blocks.map_err(EngineError::Chk)? {
            let blocks = segment.blocks.into_iter().map(Bytes::from).collect();
            self.send_to_shares(blocks, permit.clone()).await?;
        }
        Ok(())
    }

    /// A place in the shared memory budget; while none is free, the coded
    /// segment goes to its share writers first, so waiting cannot deadlock.
    async fn take_permit(&mut self) -> EngineResult<Option<SegmentPermit>> {
        let Some(budget) = self.budget.clone() else {
            return Ok(None);
        };
        if let Some(permit) = budget.try_take() {
            return Ok(Some(permit));
        }
        match budget.take().await {
            Some(permit) => Ok(Some(permit)),
            None => Err(EngineError::BudgetClosed),
        }
    }

    async fn send_to_shares(
        &mut self,
        blocks: Vec<Bytes>,
        permit: Option<SegmentPermit>,
    ) -> EngineResult<()> {
        for (index, block) in blocks.into_iter().enumerate() {
            let Some(sender) = &self.slots[index].sender else {
                continue;
            };
            if sender
                .send(ShareCommand::Append(
                    block,
                    SegmentHolds::budget(permit.clone()),
                ))
                .await
                .is_err()
            {
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

    async fn finish(&mut self) -> EngineResult<ChkFinished> {
        self.dispatch_coded().await?;
        let Some(encoder) = self.encoder.take() else {
            return Err(EngineError::Aborted);
        };
        let finished = tokio::task::spawn_blocking(move || encoder.finish())
            .await
            .map_err(|source| EngineError::TaskFailed {
                what: "CHK share tails",
                source,
            })?
            .map_err(EngineError::Chk)?;
        let share_size = self.share_size;
        let tails = finished
            .tails
            .into_iter()
            .map(|tail| (vec![Bytes::from(tail)], share_size));
        let (stored_on, lost) = finish_shares(&mut self.slots, tails).await;
        for (share, server, kind) in lost {
            self.lose_share(share, server, kind);
        }
        let stored = distinct_servers(stored_on.iter().map(String::as_str));
        if stored < usize::from(self.happy) {
            // Finished shares are visible: remove them where the store
            // lets a client (Tahoe frees them at lease expiry).
            if let Err(e) = delete_chk_shares(&self.grid, &self.key).await {
                tracing::warn!(si = %self.si, error = %e,
                    "could not delete the shares of a failed CHK upload");
            }
            return Err(not_happy(stored, self.happy, self.problems.clone()));
        }
        tracing::debug!(si = %self.si, size = self.params.size, stored, "CHK upload finished");
        let servers = self.grid.servers().len();
        let n = usize::from(self.params.n);
        Ok(ChkFinished {
            cap: Capability::Chk(finished.cap),
            complete: stored_on.len() >= n && stored >= n.min(servers),
        })
    }

    async fn abort_shares(&mut self) {
        for slot in &mut self.slots {
            slot.sender = None;
        }
        for slot in &mut self.slots {
            if let Some(task) = slot.task.take() {
                let _ = task.await;
            }
        }
    }

    fn lose_share(&mut self, share: ShareNum, server: String, kind: ProblemKind) {
        tracing::warn!(si = %self.si, %share, %server, error = ?kind, "share lost during CHK upload");
        self.problems.push(ShareProblem {
            share: Some(share),
            server,
            kind,
        });
    }

    fn check_happy(&self) -> EngineResult<()> {
        let live = distinct_servers(
            self.slots
                .iter()
                .filter(|s| s.sender.is_some())
                .map(|s| s.server.as_str()),
        );
        if live < usize::from(self.happy) {
            return Err(not_happy(live, self.happy, self.problems.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests: a panic is the failure report; test bytes wrap on purpose
mod tests {
    use super::*;
    use crate::engine::chk::decode::decode_all;
    use crate::grid::memory::memory_grid;
    use crate::grid::{FailingStore, MemoryStore, ShareStore};

    fn params(segment_size: u32) -> EncodingParams {
        EncodingParams {
            k: 3,
            happy: 7,
            n: 10,
            segment_size,
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + i / 251) % 256) as u8).collect()
    }

    /// Every finished immutable share of `cap` on the stores, as bytes.
    async fn shares_of(stores: &[MemoryStore], si: StorageIndex) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        for store in stores {
            for info in store.list_immutable(si).await.unwrap() {
                let bytes = store
                    .read_immutable(si, info.share, 0..info.len)
                    .await
                    .unwrap();
                out.push((u16::from(info.share.0), bytes.to_vec()));
            }
        }
        out
    }

    async fn upload(grid: Grid, p: EncodingParams, plain: &[u8]) -> EngineResult<ChkFinished> {
        let mut up =
            ChkUploader::new(grid, p, UploadOptions::default(), plain.len() as u64).await?;
        // Uneven pieces, across segment boundaries.
        for piece in plain.chunks(7_777) {
            up.write(Bytes::copy_from_slice(piece)).await?;
        }
        up.finish().await
    }

    #[tokio::test]
    async fn files_round_trip_through_tahoes_decoder() {
        // One byte past LIT, one segment, one segment + 1, several with a short tail.
        for len in [56usize, 3 * 1024, 3 * 1024 + 1, 10 * 3 * 1024 + 5] {
            let (grid, stores) = memory_grid(10);
            let plain = data(len);
            let finished = upload(grid, params(3 * 1024), &plain).await.unwrap();
            let Capability::Chk(cap) = &finished.cap else {
                panic!("{len} bytes: expected a CHK cap, got {:?}", finished.cap);
            };
            assert!(finished.complete);
            assert!(finished.cap.to_string().starts_with("URI:CHK:"));
            let si = StorageIndex::from_bytes(cap.storage_index());
            let shares = shares_of(&stores, si).await;
            assert_eq!(shares.len(), 10, "{len} bytes");
            let refs: Vec<(u16, &[u8])> = shares.iter().map(|(n, b)| (*n, &b[..])).collect();
            assert_eq!(decode_all(cap, &refs).unwrap(), plain, "{len} bytes");
            // Any k of them.
            assert_eq!(decode_all(cap, &refs[7..]).unwrap(), plain, "{len} bytes");
        }
    }

    #[tokio::test]
    async fn small_files_are_literal_and_store_nothing() {
        for len in [0usize, 1, 55] {
            let (grid, stores) = memory_grid(10);
            let plain = data(len);
            let finished = upload(grid, params(1 << 20), &plain).await.unwrap();
            match &finished.cap {
                Capability::Lit(lit) => assert_eq!(lit.data, plain),
                other => panic!("{len} bytes: {other:?}"),
            }
            assert!(finished.cap.to_string().starts_with("URI:LIT:"));
            assert!(stores
                .iter()
                .all(|s| s.share_count_including_partial() == 0));
        }
    }

    #[tokio::test]
    async fn a_stream_of_the_wrong_length_is_refused_and_leaves_no_share() {
        let (grid, stores) = memory_grid(10);
        let mut up = ChkUploader::new(grid.clone(), params(1024), UploadOptions::default(), 5000)
            .await
            .unwrap();
        up.write(Bytes::from(data(4999))).await.unwrap();
        assert!(matches!(
            up.finish().await,
            Err(EngineError::SizeMismatch {
                expected: 5000,
                written: 4999
            })
        ));
        let mut up = ChkUploader::new(grid.clone(), params(1024), UploadOptions::default(), 5000)
            .await
            .unwrap();
        up.write(Bytes::from(data(4000))).await.unwrap();
        assert!(matches!(
            up.write(Bytes::from(data(1001))).await,
            Err(EngineError::SizeMismatch {
                expected: 5000,
                written: 5001
            })
        ));
        assert!(matches!(
            up.write(Bytes::from_static(b"x")).await,
            Err(EngineError::Aborted)
        ));
        drop(up);
        let mut lit = ChkUploader::new(grid, params(1024), UploadOptions::default(), 10)
            .await
            .unwrap();
        assert!(lit.write(Bytes::from(data(11))).await.is_err());
        // Aborts run in the share tasks: give them a moment.
        for _ in 0..100 {
            if stores
                .iter()
                .all(|s| s.share_count_including_partial() == 0)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("partial shares left behind");
    }

    /// Servers that fail after `appends_ok` appends of each share.
    fn failing_grid(failing: usize, appends_ok: usize) -> (Grid, Vec<MemoryStore>) {
        let stores: Vec<MemoryStore> = (0..10)
            .map(|i| MemoryStore::new(format!("mem-{i:02}")))
            .collect();
        let servers = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let inner = Arc::new(s.clone()) as Arc<dyn ShareStore>;
                if i < failing {
                    Arc::new(FailingStore::new(inner, appends_ok)) as Arc<dyn ShareStore>
                } else {
                    inner
                }
            })
            .collect();
        (Grid::new(servers), stores)
    }

    #[tokio::test]
    async fn servers_failing_mid_upload_are_reported_and_the_rest_suffice() {
        let plain = data(20 * 1024 + 3);
        let (grid, stores) = failing_grid(3, 4);
        let finished = upload(grid, params(1024), &plain).await.unwrap();
        assert!(!finished.complete);
        let Capability::Chk(cap) = &finished.cap else {
            panic!("{:?}", finished.cap)
        };
        let si = StorageIndex::from_bytes(cap.storage_index());
        let shares = shares_of(&stores, si).await;
        assert_eq!(shares.len(), 7);
        let refs: Vec<(u16, &[u8])> = shares.iter().map(|(n, b)| (*n, &b[..])).collect();
        assert_eq!(decode_all(cap, &refs).unwrap(), plain);

        // Four failing servers leave six: short of happy = 7.
        let (grid, stores) = failing_grid(4, 4);
        match upload(grid, params(1024), &plain).await {
            Err(EngineError::NotHappy {
                live,
                happy: 7,
                problems,
            }) => {
                assert!(live < 7);
                assert!(problems.len() >= 4, "{problems:?}");
            }
            other => panic!("expected NotHappy, got {other:?}"),
        }
        for _ in 0..100 {
            if stores
                .iter()
                .all(|s| s.share_count_including_partial() == 0)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("shares left behind by a failed upload");
    }

    #[tokio::test]
    async fn a_recovery_token_removes_an_unfinished_uploads_shares() {
        let (grid, stores) = memory_grid(10);
        let mut up = ChkUploader::new(grid.clone(), params(1024), UploadOptions::default(), 9000)
            .await
            .unwrap();
        up.write(Bytes::from(data(100))).await.unwrap();
        let token = up.recovery_token().unwrap();
        let finished = {
            up.write(Bytes::from(data(8900))).await.unwrap();
            up.finish().await.unwrap()
        };
        assert!(stores.iter().any(|s| s.share_count_including_partial() > 0));
        crate::engine::delete::delete_shares_of_token(&grid, &token)
            .await
            .unwrap();
        assert!(stores
            .iter()
            .all(|s| s.share_count_including_partial() == 0));
        // Freeing the capability of an already-freed file is no error.
        assert!(crate::engine::delete::free_capability(&grid, &finished.cap.to_string()).await);
    }
}
