//! The Downloader: any byte range of a file, verified before it is returned.
//!
//! Opening finds the shares (a listing on every server), reads one share's
//! trailer and checks its hash against the capability. Each segment is then
//! read from k shares, preferring the data shares 0..k-1, which need no
//! decoding. A block is returned only after its hash has been checked along
//! its share's block tree, whose root is checked against the share tree in
//! the trailer. Every segment is then checked against the ciphertext tree
//! (its leaf is one hash over the k data-block hashes, in hand already when
//! the data shares were read), so shares that are each self-consistent but
//! disagree with one another (an uploader's mistake) cannot make one
//! capability read as two different files. A share that fails is reported
//! and replaced by another; fewer than k good shares is an error, never
//! short or zeroed data.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::{self, Stream, StreamExt};
use lru::LruCache;

use super::cap::FileCap;
use super::codec::{segment_hash, SegmentCoder};
use super::crypto::{FileKey, Hash};
use super::hashtree::HashTree;
use super::hashtree::{self, verify_proof, VerifiedTree};
use super::layout::{
    Footer, Header, ShareLayout, Trailer, FOOTER_LEN, HEADER_BYTES, HEADER_LEN, TRAILER_BYTES,
    TRAILER_LEN,
};
use super::{Corruption, EngineError, EngineResult, ProblemKind, ShareProblem};
use crate::grid::{BufferLease, BufferPool, Grid, ShareNum, ShareStore, StorageIndex};

/// Decoded segments kept for readers that ask for small pieces in order.
const CACHED_SEGMENTS: NonZeroUsize = match NonZeroUsize::new(4) {
    Some(n) => n,
    None => panic!("zero capacity"), // evaluated at compile time
};
/// Segments fetched ahead of a streaming reader.
const READ_AHEAD: usize = 4;
/// Memory for read-ahead across every stream of the process: each stream
/// fetches the segment its reader waits for whatever this says, and reads
/// further ahead only while this has room. Sixty-four GETs at once then
/// hold a segment each plus this, not four segments each.
const READ_AHEAD_MEMORY: u64 = 64 << 20;
/// A share that could not be reached is tried again after this long,
/// doubled on each further failure up to [`MAX_BACKOFF`]: an outage that
/// ends must not leave a long-lived reader without the share for good.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Problems kept per reader; later ones are counted, not kept, so a read
/// of a large file from bad servers does not grow a list per segment.
const MAX_PROBLEMS: usize = 32;
/// A block read not answered within this long gets a backup read from
/// another share.
const HEDGE_AFTER: Duration = Duration::from_millis(1500);
/// Any one read of a share (block, hashes, trailer, listing) gives up
/// after this long, whatever the backend (a hung disk or NFS mount, too).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Once k shares are found, slower listings get twice as long again as
/// that took, within these bounds: a server much slower than its peers is
/// read without rather than waited for.
const MIN_LIST_GRACE: Duration = Duration::from_millis(100);
const MAX_LIST_GRACE: Duration = Duration::from_secs(1);

/// One copy of a share on one server.
struct Candidate {
    share: ShareNum,
    server: Arc<dyn ShareStore>,
    /// Set once the share's block-tree root has been checked against the
    /// share tree; then blocks can be checked.
    block_tree: Option<VerifiedTree>,
    /// The share as a whole is unusable: its header or trees are bad.
    corrupt: bool,
    /// Transient failures in a row (unreachable, timed out, not found);
    /// the share is not tried again before `retry_at`.
    failures: u32,
    retry_at: Option<Instant>,
    /// Its blocks failed their hashes: tried after every other share.
    demoted: bool,
    /// It answered late (a backup read was sent): tried after prompt ones
    /// until it answers in time again.
    slow: bool,
    /// A problem of this share was logged as a warning already.
    reported: bool,
    /// Segments whose block in this share failed its hash check: rot in one
    /// block leaves the share's other blocks usable.
    bad_blocks: HashSet<u64>,
}

struct ReadState {
    candidates: Vec<Candidate>,
    ciphertext_tree: VerifiedTree,
    problems: Vec<ShareProblem>,
    /// Problems seen beyond [`MAX_PROBLEMS`].
    problems_dropped: u64,
}

impl ReadState {
    fn push_problem(&mut self, problem: ShareProblem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_dropped += 1;
        }
    }
}

/// Reads one file version. Cheap to share behind an `Arc`; reads may run
/// concurrently.
pub struct Downloader {
    key: FileKey,
    si: StorageIndex,
    trailer: Trailer,
    layout: ShareLayout,
    coder: Arc<SegmentCoder>,
    state: Mutex<ReadState>,
    cache: Mutex<LruCache<u64, Segment>>,
    /// Where failures and demotions of servers are recorded.
    health: Arc<crate::grid::health::ServerHealth>,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("si", &self.si)
            .field("size", &self.trailer.size)
            .finish_non_exhaustive()
    }
}

/// A block fetched and checked.
struct GoodBlock {
    share: ShareNum,
    candidate: usize,
    /// The ciphertext of a parity block; a data block's plaintext (it was
    /// decrypted where it lay, beside its hashing).
    block: Bytes,
    plain: bool,
    hash: Hash,
}

/// The plaintext of one segment in the pieces it was read in: the k data
/// blocks, each decrypted in its own buffer, or one piece after decoding.
/// A streaming reader hands the pieces on without copying them together.
#[derive(Clone, Debug, Default)]
struct Segment {
    pieces: Vec<Bytes>,
}

impl Segment {
    fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    /// Bytes `from..to` (within the segment): a slice of one piece when
    /// they lie in one, else a copy.
    fn slice(&self, from: usize, to: usize) -> Bytes {
        let mut at = 0;
        let mut out: Option<BytesMut> = None;
        for piece in &self.pieces {
            let (start, end) = (at, at + piece.len());
            at = end;
            if end <= from || start >= to {
                continue;
            }
            let (a, b) = (from.max(start) - start, to.min(end) - start);
            if out.is_none() && from >= start && to <= end {
                return piece.slice(a..b);
            }
            out.get_or_insert_with(|| BytesMut::with_capacity(to - from))
                .extend_from_slice(&piece[a..b]);
        }
        out.map(BytesMut::freeze).unwrap_or_default()
    }

    /// The pieces from byte `skip` on.
    fn pieces_from(self, skip: usize) -> impl Iterator<Item = Bytes> {
        let mut at = 0;
        self.pieces.into_iter().filter_map(move |piece| {
            let start = at;
            at += piece.len();
            let from = skip.saturating_sub(start).min(piece.len());
            (from < piece.len()).then(|| piece.slice(from..))
        })
    }
}

/// The room all read-ahead shares ([`READ_AHEAD_MEMORY`]).
fn read_ahead_pool() -> &'static BufferPool {
    static POOL: OnceLock<BufferPool> = OnceLock::new();
    POOL.get_or_init(|| BufferPool::with_bytes(READ_AHEAD_MEMORY))
}

/// A segment being fetched by a task of its own, so that its reads,
/// hashing and decryption go on while the reader sends what it has; it is
/// cancelled when dropped.
struct Fetching {
    task: tokio::task::JoinHandle<EngineResult<Segment>>,
    /// Its room in the read-ahead memory, if it is ahead of the reader.
    _lease: Option<BufferLease>,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`Downloader::pieces`] keeps between pieces.
struct PieceStream {
    reader: Arc<Downloader>,
    /// The next segment to start fetching, and the end.
    next: u64,
    count: u64,
    /// Bytes of the first segment before the stream's offset.
    skip: usize,
    ahead: VecDeque<Fetching>,
    ready: VecDeque<Bytes>,
}

impl PieceStream {
    /// Starts fetching the segments ahead: always the next one when
    /// nothing else is under way, more while the shared memory has room.
    fn top_up(&mut self) {
        while self.next < self.count && self.ahead.len() < READ_AHEAD {
            let lease = if self.ahead.is_empty() {
                None
            } else {
                match read_ahead_pool().try_lease(self.reader.layout.segment_size) {
                    Some(lease) => Some(lease),
                    None => break,
                }
            };
            let reader = Arc::clone(&self.reader);
            let s = self.next;
            self.ahead.push_back(Fetching {
                task: tokio::spawn(async move { reader.segment_uncached(s).await }),
                _lease: lease,
            });
            self.next += 1;
        }
    }

    async fn next_piece(&mut self) -> Option<EngineResult<Bytes>> {
        loop {
            self.top_up();
            if let Some(piece) = self.ready.pop_front() {
                return Some(Ok(piece));
            }
            let mut head = self.ahead.pop_front()?;
            let segment = match (&mut head.task).await {
                Ok(result) => result,
                Err(source) => Err(EngineError::TaskFailed {
                    what: "segment reader",
                    source,
                }),
            };
            match segment {
                Ok(segment) => {
                    self.ready.extend(segment.pieces_from(self.skip));
                    self.skip = 0;
                }
                Err(e) => {
                    // Nothing after a failed segment: the reader stops here.
                    self.ahead.clear();
                    self.next = self.count;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Downloader {
    /// Finds the file's shares and verifies its trailer.
    pub async fn open(grid: &Grid, cap: &FileCap) -> EngineResult<Self> {
        let si = cap.key.storage_index();
        let servers = grid.permuted(si);
        let mut problems = Vec::new();
        let mut found = Vec::new();
        // Listings in parallel; once k distinct shares are known, slower
        // servers get a short grace, not a whole timeout each.
        let mut listings: futures::stream::FuturesUnordered<_> = servers
            .iter()
            .enumerate()
            .map(|(rank, server)| async move {
                let listing = tokio::time::timeout(READ_TIMEOUT, server.list(si)).await;
                (rank, listing)
            })
            .collect();
        let mut answered = vec![false; servers.len()];
        let mut grace_until: Option<tokio::time::Instant> = None;
        let listing_started = tokio::time::Instant::now();
        loop {
            let next = match grace_until {
                Some(at) => match tokio::time::timeout_at(at, listings.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => listings.next().await,
            };
            let Some((rank, listing)) = next else {
                break;
            };
            answered[rank] = true;
            let server = &servers[rank];
            match listing {
                Ok(Ok(shares)) => {
                    let mut seen = HashSet::new();
                    for info in shares {
                        // A share listed twice by one server is one share.
                        if seen.insert(info.share) {
                            found.push((info.share, rank, Arc::clone(server), info.len));
                        }
                    }
                }
                Ok(Err(e)) => problems.push(ShareProblem {
                    share: None,
                    server: server.server_id().to_owned(),
                    kind: ProblemKind::Unavailable(Arc::new(e)),
                }),
                Err(_) => problems.push(ShareProblem {
                    share: None,
                    server: server.server_id().to_owned(),
                    kind: ProblemKind::NoListing(READ_TIMEOUT),
                }),
            }
            let distinct: HashSet<ShareNum> = found.iter().map(|f| f.0).collect();
            if grace_until.is_none() && distinct.len() >= usize::from(cap.k) {
                let grace = (listing_started.elapsed() * 2).clamp(MIN_LIST_GRACE, MAX_LIST_GRACE);
                grace_until = Some(tokio::time::Instant::now() + grace);
            }
        }
        drop(listings);
        for (rank, server) in servers.iter().enumerate() {
            if !answered[rank] {
                problems.push(ShareProblem {
                    share: None,
                    server: server.server_id().to_owned(),
                    kind: ProblemKind::ListingSlow,
                });
            }
        }
        // Data shares first, then by the servers' preference for this file.
        found.sort_by_key(|(share, rank, _, _)| (*share, *rank));

        // Trailers in parallel: the first that verifies wins (every good
        // one is the same, its hash is in the capability), and a server
        // that does not answer holds nothing up.
        let mut verified: Option<(Trailer, ShareLayout)> = None;
        let mut trailers: futures::stream::FuturesUnordered<_> = found
            .iter()
            .enumerate()
            .map(|(index, (share, _, server, len))| async move {
                let result = match tokio::time::timeout(
                    READ_TIMEOUT,
                    read_trailer(server.as_ref(), si, *share, *len, cap),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err(TrailerError::Share(ProblemKind::TimedOut(READ_TIMEOUT))),
                };
                (index, result)
            })
            .collect();
        while let Some((index, result)) = trailers.next().await {
            let (share, _, server, _) = &found[index];
            match result {
                Ok(found) => {
                    verified = Some(found);
                    break;
                }
                Err(TrailerError::Cap(e)) => return Err(e),
                Err(TrailerError::Share(kind)) => problems.push(ShareProblem {
                    share: Some(*share),
                    server: server.server_id().to_owned(),
                    kind,
                }),
            }
        }
        drop(trailers);
        let Some((trailer, layout)) = verified else {
            return Err(EngineError::NotEnoughShares {
                have: 0,
                need: cap.k,
                problems,
            });
        };

        let mut candidates = Vec::new();
        for (share, _, server, len) in found {
            if len != layout.share_len || u16::from(share.0) >= trailer.n {
                problems.push(ShareProblem {
                    share: Some(share),
                    server: server.server_id().to_owned(),
                    kind: ProblemKind::Corrupt(Corruption::WrongLength {
                        len,
                        expected: layout.share_len,
                    }),
                });
                continue;
            }
            candidates.push(Candidate {
                share,
                server,
                block_tree: None,
                corrupt: false,
                failures: 0,
                retry_at: None,
                demoted: false,
                slow: false,
                reported: false,
                bad_blocks: HashSet::new(),
            });
        }
        for problem in &problems {
            tracing::warn!(%si, %problem, "share problem while opening");
        }
        let params = trailer.params().map_err(|source| EngineError::OwnLayout {
            what: "verified trailer",
            source,
        })?;
        Ok(Self {
            key: cap.key.clone(),
            si,
            coder: Arc::new(SegmentCoder::for_version(&params, trailer.version)?),
            state: Mutex::new(ReadState {
                candidates,
                ciphertext_tree: VerifiedTree::new(trailer.segment_count, trailer.ciphertext_root),
                problems_dropped: problems.len().saturating_sub(MAX_PROBLEMS) as u64,
                problems: problems.into_iter().take(MAX_PROBLEMS).collect(),
            }),
            cache: Mutex::new(LruCache::new(CACHED_SEGMENTS)),
            health: Arc::clone(grid.health()),
            trailer,
            layout,
        })
    }

    /// Plaintext bytes of the file, from the verified trailer.
    pub fn size(&self) -> u64 {
        self.trailer.size
    }

    /// Plaintext bytes per segment: the unit a read fetches and verifies.
    pub fn segment_size(&self) -> u64 {
        self.layout.segment_size
    }

    /// The verified trailer: what repair re-encodes the file with.
    pub(crate) fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// Where everything lies in each share of this file.
    pub(crate) fn layout(&self) -> &ShareLayout {
        &self.layout
    }

    /// The first share problems seen (at most a few dozen): missing,
    /// unreachable or corrupt.
    pub fn problems(&self) -> Vec<ShareProblem> {
        lock(&self.state).problems.clone()
    }

    /// Whether a share could not be reached while reading: a reader kept
    /// for later requests should then be opened afresh before long, since
    /// the shares it found at open may have moved on.
    pub fn degraded(&self) -> bool {
        let state = lock(&self.state);
        state.problems_dropped > 0 || state.problems.iter().any(|p| p.kind.is_unavailable())
    }

    /// Whether the file can be read now, before a GET commits to a 200: a
    /// reader is kept across requests, and a segment it has cached says
    /// nothing of whether the servers still answer. Without a cached
    /// first segment, fetches and verifies it (and keeps it). With one,
    /// asks k shares for their headers at once (a few small reads, so a
    /// Range GET stays fast); if fewer than k answer, the first segment
    /// is fetched again, which reads around what it can and reports what
    /// it cannot.
    pub async fn check_readable(&self) -> EngineResult<()> {
        if self.size() == 0 {
            return Ok(());
        }
        if self.cached(0).is_some() && self.k_shares_answer().await {
            return Ok(());
        }
        let segment = self.fetch_segment(0).await?;
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .put(0, segment);
        Ok(())
    }

    /// Whether k distinct shares answer a read of their headers now.
    async fn k_shares_answer(&self) -> bool {
        let k = usize::from(self.trailer.k);
        let picks = self.pick(0, k, &[], &[]);
        if picks.len() < k {
            return false;
        }
        let reads = picks.into_iter().map(|candidate| {
            let (server, share) = {
                let state = lock(&self.state);
                let c = &state.candidates[candidate];
                (Arc::clone(&c.server), c.share)
            };
            async move {
                let read = server.read(self.si, share, 0..super::layout::HEADER_LEN);
                matches!(
                    tokio::time::timeout(READ_TIMEOUT, read).await,
                    Ok(Ok(header)) if header.len() as u64 == super::layout::HEADER_LEN
                )
            }
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .all(|answered| answered)
    }

    /// Exactly the bytes `offset..offset + len` of the file.
    pub async fn read(&self, offset: u64, len: u64) -> EngineResult<Bytes> {
        let end = offset.checked_add(len).filter(|end| *end <= self.size());
        let Some(end) = end else {
            return Err(EngineError::RangeBeyondEnd {
                start: offset,
                end: offset.saturating_add(len),
                size: self.size(),
            });
        };
        if len == 0 {
            return Ok(Bytes::new());
        }
        let segment_size = self.layout.segment_size;
        let first = offset / segment_size;
        let last = (end - 1) / segment_size;
        if first == last {
            let segment = self.segment(first).await?;
            let start = in_segment(offset - first * segment_size);
            return Ok(segment.slice(start, start + in_segment(len)));
        }
        // Only a capacity hint: a length past `usize` (32-bit targets) gets
        // none, and fails as it grows as it would have anyway.
        let mut out = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
        for s in first..=last {
            let segment = self.segment(s).await?;
            let seg_start = s * segment_size;
            let from = offset.max(seg_start) - seg_start;
            let to = end.min(seg_start + segment.len() as u64) - seg_start;
            out.extend_from_slice(&segment.slice(in_segment(from), in_segment(to)));
        }
        Ok(out.freeze())
    }

    /// The file from `offset` to its end, in pieces of at most a segment,
    /// with the next segments fetched ahead.
    pub fn stream(self: Arc<Self>, offset: u64) -> impl Stream<Item = EngineResult<Bytes>> + Send {
        let segment_size = self.layout.segment_size;
        let first = offset / segment_size;
        let count = if offset >= self.size() {
            first
        } else {
            self.trailer.segment_count
        };
        stream::iter(first..count)
            .map(move |s| {
                let this = Arc::clone(&self);
                async move {
                    let segment = this.segment(s).await?;
                    let skip = in_segment(offset.saturating_sub(s * segment_size));
                    let len = segment.len();
                    Ok(segment.slice(skip.min(len), len))
                }
            })
            .buffered(READ_AHEAD)
    }

    /// The file from `offset` to its end, in pieces of at most a block
    /// (each a buffer the grid was read into, never copied together), with
    /// segments fetched and verified ahead on tasks of their own within a
    /// memory budget shared by every stream. What a GET sends.
    pub fn pieces(self: Arc<Self>, offset: u64) -> impl Stream<Item = EngineResult<Bytes>> + Send {
        let segment_size = self.layout.segment_size;
        let first = offset / segment_size;
        let count = if offset >= self.size() {
            first
        } else {
            self.trailer.segment_count
        };
        let state = PieceStream {
            reader: self,
            next: first,
            count,
            skip: in_segment(offset.saturating_sub(first.saturating_mul(segment_size))),
            ahead: VecDeque::new(),
            ready: VecDeque::new(),
        };
        stream::unfold(state, |mut state| async move {
            let piece = state.next_piece().await?;
            Some((piece, state))
        })
    }

    /// The plaintext of segment `s`, from the cache or the grid.
    async fn segment(&self, s: u64) -> EngineResult<Segment> {
        if let Some(segment) = self.cached(s) {
            return Ok(segment);
        }
        let segment = self.fetch_segment(s).await?;
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .put(s, segment.clone());
        Ok(segment)
    }

    /// [`Downloader::segment`] without keeping it: a stream reads each
    /// segment once, and a reader kept for later requests should not hold
    /// on to the last few segments of every file streamed through it.
    async fn segment_uncached(&self, s: u64) -> EngineResult<Segment> {
        match self.cached(s) {
            Some(segment) => Ok(segment),
            None => self.fetch_segment(s).await,
        }
    }

    fn cached(&self, s: u64) -> Option<Segment> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&s)
            .cloned()
    }

    async fn fetch_segment(&self, s: u64) -> EngineResult<Segment> {
        let k = usize::from(self.trailer.k);
        let mut good: Vec<GoodBlock> = Vec::with_capacity(k);
        // Blocks being fetched: a slow server gets a backup read from
        // another share after HEDGE_AFTER (hedged reads, as Tahoe's
        // downloader and Storj do); the first k good blocks win and the
        // rest are dropped (cancelled).
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut busy: Vec<(usize, ShareNum)> = Vec::new();
        let fetch = |candidate: usize| async move {
            let result =
                match tokio::time::timeout(READ_TIMEOUT, self.fetch_block(candidate, s)).await {
                    Ok(result) => result,
                    Err(_) => Err(BlockFailure::Share(ProblemKind::TimedOut(READ_TIMEOUT))),
                };
            (candidate, result)
        };
        for candidate in self.pick(s, k, &good, &busy) {
            busy.push((candidate, lock(&self.state).candidates[candidate].share));
            in_flight.push(fetch(candidate));
        }
        while good.len() < k {
            if in_flight.is_empty() {
                let state = lock(&self.state);
                return Err(EngineError::NotEnoughShares {
                    have: good.len(),
                    need: self.trailer.k,
                    problems: state.problems.clone(),
                });
            }
            let next = tokio::time::timeout(HEDGE_AFTER, in_flight.next()).await;
            let replacements = match next {
                Ok(Some((candidate, result))) => {
                    busy.retain(|(c, _)| *c != candidate);
                    match result {
                        Ok(block) => {
                            self.mark_good(candidate);
                            good.push(block);
                            0
                        }
                        Err(failure) => {
                            self.mark_bad(candidate, s, failure);
                            1
                        }
                    }
                }
                Ok(None) => 0,
                Err(_) => {
                    // Every read in flight is late: mark them slow (later
                    // segments prefer other servers) and hedge with one more.
                    let mut state = lock(&self.state);
                    for (candidate, _) in &busy {
                        state.candidates[*candidate].slow = true;
                    }
                    1
                }
            };
            for candidate in self.pick(s, replacements, &good, &busy) {
                busy.push((candidate, lock(&self.state).candidates[candidate].share));
                in_flight.push(fetch(candidate));
            }
        }
        drop(in_flight);

        good.sort_by_key(|b| b.share);
        let seg_len = in_segment(self.layout.segment_len(s));
        let decoded = good.iter().any(|b| usize::from(b.share.0) >= k);
        if !decoded {
            // The k data blocks, decrypted already: their hashes give the
            // segment hash, and the plaintext is their concatenation less
            // the padding.
            let hashes: Vec<Hash> = good.iter().map(|b| b.hash).collect();
            self.check_segment_hash(s, segment_hash(&hashes), &good)
                .await?;
            let mut left = seg_len;
            let pieces = good
                .into_iter()
                .filter_map(|b| {
                    let take = left.min(b.block.len());
                    left -= take;
                    (take > 0).then(|| b.block.slice(..take))
                })
                .collect();
            return Ok(Segment { pieces });
        }

        let n = usize::from(self.trailer.n);
        let coder = Arc::clone(&self.coder);
        let key = self.key.clone();
        let offset = s * self.layout.segment_size;
        let block_len = self.layout.block_len(s);
        let blocks: Vec<(ShareNum, bool, Bytes)> = good
            .iter()
            .map(|b| (b.share, b.plain, b.block.clone()))
            .collect();
        let (plain, hash) = tokio::task::spawn_blocking(move || {
            let mut slots: Vec<Option<Bytes>> = vec![None; n];
            for (share, plain, block) in blocks {
                let block = if plain {
                    // Back to ciphertext for the decoder.
                    let mut cipher = BytesMut::from(&block[..]);
                    key.apply_keystream(offset + u64::from(share.0) * block_len, &mut cipher);
                    cipher.freeze()
                } else {
                    block
                };
                slots[usize::from(share.0)] = Some(block);
            }
            let mut cipher = coder.decode(slots)?;
            let block_len = cipher.len() / k;
            let hashes: Vec<Hash> = cipher
                .chunks(block_len.max(1))
                .take(k)
                .map(|block| coder.block_hash(block))
                .collect();
            let hash = segment_hash(&hashes);
            cipher.truncate(seg_len);
            key.apply_keystream(offset, &mut cipher);
            Ok::<_, super::CodecError>((cipher.freeze(), hash))
        })
        .await
        .map_err(|source| EngineError::TaskFailed {
            what: "segment decoder",
            source,
        })?
        .map_err(|source| EngineError::Decode { segment: s, source })?;

        // Always, not only after decoding: shares that each match their own
        // block trees may still disagree with the ciphertext the uploader
        // hashed, and then no plaintext is released.
        self.check_segment_hash(s, hash, &good).await?;
        Ok(Segment {
            pieces: vec![plain],
        })
    }

    /// Up to `count` usable candidates for shares neither in `good` nor
    /// being fetched (`busy`): healthy servers before slow ones (in this
    /// read, or with recent trouble on the grid's record) before demoted
    /// ones, then data shares first, then the servers' order.
    fn pick(
        &self,
        s: u64,
        count: usize,
        good: &[GoodBlock],
        busy: &[(usize, ShareNum)],
    ) -> Vec<usize> {
        let state = lock(&self.state);
        let now = Instant::now();
        let mut usable: Vec<(u8, usize)> = state
            .candidates
            .iter()
            .enumerate()
            .filter(|(index, c)| {
                let taken = good.iter().any(|b| b.share == c.share)
                    || busy
                        .iter()
                        .any(|(b, share)| *b == *index || *share == c.share);
                let waiting = c.retry_at.is_some_and(|at| at > now);
                !c.corrupt && !waiting && !c.bad_blocks.contains(&s) && !taken
            })
            .map(|(index, c)| {
                let suspect = c.slow || self.health.is_suspect(c.server.server_id());
                (u8::from(c.demoted) * 2 + u8::from(suspect), index)
            })
            .collect();
        // Stable: candidates are already in (share, server rank) order.
        usable.sort_by_key(|(rank, _)| *rank);
        let mut picks: Vec<usize> = Vec::with_capacity(count);
        for (_, index) in usable {
            if picks.len() == count {
                break;
            }
            let share = state.candidates[index].share;
            if !picks.iter().any(|p| state.candidates[*p].share == share) {
                picks.push(index);
            }
        }
        picks
    }

    fn mark_bad(&self, candidate: usize, s: u64, failure: BlockFailure) {
        let mut state = lock(&self.state);
        let c = &mut state.candidates[candidate];
        let kind = match failure {
            BlockFailure::Share(kind) if kind.is_corrupt() => {
                c.corrupt = true;
                kind
            }
            BlockFailure::Share(kind) => {
                c.failures = c.failures.saturating_add(1);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << c.failures.min(8).saturating_sub(1))
                    .min(MAX_BACKOFF);
                c.retry_at = Some(Instant::now() + backoff);
                self.health.error(c.server.server_id());
                kind
            }
            BlockFailure::Block(kind) => {
                // A server whose blocks fail their hashes is tried last
                // for the rest of the read, not first for every segment.
                c.bad_blocks.insert(s);
                if !c.demoted {
                    self.health.demotion(c.server.server_id());
                }
                c.demoted = true;
                kind
            }
        };
        let first = !c.reported;
        c.reported = true;
        let problem = ShareProblem {
            share: Some(c.share),
            server: c.server.server_id().to_owned(),
            kind,
        };
        if first {
            tracing::warn!(si = %self.si, %problem, "share problem while reading");
        } else {
            tracing::debug!(si = %self.si, %problem, "share problem while reading");
        }
        state.push_problem(problem);
    }

    fn mark_good(&self, candidate: usize) {
        let mut state = lock(&self.state);
        let c = &mut state.candidates[candidate];
        c.failures = 0;
        c.retry_at = None;
        c.slow = false;
    }

    /// Reads block `s` of one candidate and checks it against the trees.
    async fn fetch_block(&self, candidate: usize, s: u64) -> Result<GoodBlock, BlockFailure> {
        let (share, server, has_root) = {
            let state = lock(&self.state);
            let c = &state.candidates[candidate];
            (c.share, Arc::clone(&c.server), c.block_tree.is_some())
        };
        let unavailable = |e: crate::grid::GridError| BlockFailure::Share(ProblemKind::of(e));
        if !has_root {
            let tree = self
                .verify_block_root(server.as_ref(), share)
                .await
                .map_err(BlockFailure::Share)?;
            let mut state = lock(&self.state);
            state.candidates[candidate].block_tree.get_or_insert(tree);
        }
        let needed = {
            let state = lock(&self.state);
            match &state.candidates[candidate].block_tree {
                Some(tree) => tree.nodes_needed(s),
                None => {
                    return Err(BlockFailure::Share(ProblemKind::Corrupt(
                        Corruption::BlockTreeUnverified,
                    )))
                }
            }
        };
        let start = self.layout.block_offset(s);
        let block_len = self.layout.block_len(s);
        let mut ranges = Vec::with_capacity(1 + needed.len());
        ranges.push(start..start + block_len);
        ranges.extend(
            needed
                .iter()
                .map(|node| node_range(self.layout.block_tree_offset, *node)),
        );
        // A data block is decrypted where it lies, in the same pass as its
        // hashing (it is in the cache then); it is released only once the
        // hash has been checked below and the segment against the
        // ciphertext tree.
        let plain_at = (u16::from(share.0) < self.trailer.k)
            .then(|| s * self.layout.segment_size + u64::from(share.0) * block_len);
        let key = self.key.clone();
        let (mut read, mut hashed, took) = if server.reads_blocking() {
            // Bytes on this machine: read, hash and decrypt in one trip
            // to the blocking pool.
            let (store, si, key) = (Arc::clone(&server), self.si, key.clone());
            let coder = Arc::clone(&self.coder);
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let mut read = store.read_ranges_blocking(si, share, &ranges)?;
                let took = started.elapsed();
                let mut hashed = None;
                if read.first().is_some_and(|b| b.len() as u64 == block_len) {
                    let block = read.remove(0);
                    let (hash, block) = hash_and_decrypt(&coder, block, plain_at, &key);
                    read.insert(0, block);
                    hashed = Some(hash);
                }
                Ok((read, hashed, took))
            })
            .await
            .map_err(|e| {
                BlockFailure::Share(ProblemKind::TaskFailed {
                    what: "reading",
                    source: Arc::new(e),
                })
            })?
            .map_err(unavailable)?
        } else {
            let started = Instant::now();
            let read = server
                .read_ranges(self.si, share, ranges)
                .await
                .map_err(unavailable)?;
            (read, None, started.elapsed())
        };
        self.health.read_ok(server.server_id(), took);
        if read.is_empty() {
            read.push(Bytes::new());
        }
        let mut read = read.into_iter();
        let block = read.next().ok_or_else(|| {
            unavailable(crate::grid::GridError::ShortRead {
                server: server.server_id().to_owned(),
                got: 0,
                want: block_len,
            })
        })?;
        if block.len() as u64 != block_len {
            return Err(BlockFailure::Block(ProblemKind::Corrupt(
                Corruption::BlockLength {
                    segment: s,
                    got: block.len(),
                    want: self.layout.block_len(s),
                },
            )));
        }
        let mut fetched = HashMap::with_capacity(needed.len());
        for node in needed {
            let bytes = read.next().unwrap_or_default();
            fetched.insert(
                node,
                node_hash(server.as_ref(), &bytes).map_err(unavailable)?,
            );
        }
        let coder = Arc::clone(&self.coder);
        let (hash, block) = match hashed.take() {
            Some(hash) => (hash, block),
            None => {
                tokio::task::spawn_blocking(move || hash_and_decrypt(&coder, block, plain_at, &key))
                    .await
                    .map_err(|e| {
                        BlockFailure::Share(ProblemKind::TaskFailed {
                            what: "hashing",
                            source: Arc::new(e),
                        })
                    })?
            }
        };
        let mut state = lock(&self.state);
        let ok = match &mut state.candidates[candidate].block_tree {
            Some(tree) => tree.verify_leaf(s, hash, &fetched),
            None => false,
        };
        if !ok {
            return Err(BlockFailure::Block(ProblemKind::Corrupt(
                Corruption::BlockHash { segment: s },
            )));
        }
        Ok(GoodBlock {
            share,
            candidate,
            block,
            plain: plain_at.is_some(),
            hash,
        })
    }

    /// Checks a share's block-tree root against the share tree in the trailer.
    async fn verify_block_root(
        &self,
        server: &dyn ShareStore,
        share: ShareNum,
    ) -> Result<VerifiedTree, ProblemKind> {
        let layout = &self.layout;
        let header = server.read(self.si, share, 0..HEADER_LEN);
        let root = read_node(server, self.si, share, layout.block_tree_offset, 0);
        let proof = server.read(
            self.si,
            share,
            layout.proof_offset..layout.proof_offset + layout.proof_len,
        );
        let (header, root, proof) = futures::join!(header, root, proof);
        let header = header.map_err(ProblemKind::of)?;
        if header[..] != self.expected_header(share)[..] {
            return Err(ProblemKind::Corrupt(Corruption::HeaderMismatch));
        }
        let root = root.map_err(ProblemKind::of)?;
        let proof = proof.map_err(ProblemKind::of)?;
        let proof: Vec<Hash> = proof
            .chunks_exact(32)
            .map(|chunk| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(chunk);
                hash
            })
            .collect();
        if !verify_proof(&root, u64::from(share.0), &proof, &self.trailer.share_root) {
            return Err(ProblemKind::Corrupt(Corruption::BlockRootNotInShareTree));
        }
        Ok(VerifiedTree::new(self.trailer.segment_count, root))
    }

    fn expected_header(&self, share: ShareNum) -> [u8; HEADER_BYTES] {
        Header {
            version: self.trailer.version,
            share: u16::from(share.0),
            k: self.trailer.k,
            n: self.trailer.n,
            segment_size: self.trailer.segment_size,
        }
        .encode()
    }

    /// Reads every byte of every share found and checks all of it: header,
    /// each block, every node of both stored trees, the proof, the trailer
    /// and the footer; and, segment by segment, that the shares agree with
    /// one another and with the ciphertext tree (the data blocks hash to
    /// the segment's leaf, the parity blocks are the code of the data).
    /// Returns the problems found (empty when all is well), including
    /// shares of this file that are missing altogether.
    pub async fn verify_all_shares(&self) -> Vec<ShareProblem> {
        self.verify_all_shares_with_progress(|_| {}).await
    }

    /// [`Downloader::verify_all_shares`], calling `progress` with the
    /// plaintext bytes each segment covers once its blocks are checked (a
    /// progress bar's steps).
    pub async fn verify_all_shares_with_progress(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Vec<ShareProblem> {
        let candidates: Vec<(ShareNum, Arc<dyn ShareStore>)> = {
            let state = lock(&self.state);
            state
                .candidates
                .iter()
                .map(|c| (c.share, Arc::clone(&c.server)))
                .collect()
        };
        let mut problems = Vec::new();
        for share in 0..self.trailer.n {
            if !candidates.iter().any(|(s, _)| u16::from(s.0) == share) {
                // share < n <= 256, checked by EncodingParams::validate
                #[allow(clippy::cast_possible_truncation)]
                let share = ShareNum(share as u8);
                problems.push(ShareProblem {
                    share: Some(share),
                    server: String::new(),
                    kind: ProblemKind::Missing,
                });
            }
        }
        let mut checks = Vec::with_capacity(candidates.len());
        let mut segment_leaves: Option<Vec<Hash>> = None;
        for (share, server) in candidates {
            let result = self.verify_share_structure(server.as_ref(), share).await;
            let failed = match result {
                Ok(leaves) => {
                    segment_leaves.get_or_insert(leaves);
                    None
                }
                Err(kind) => Some(kind),
            };
            checks.push(ShareCheck {
                share,
                server,
                leaves: Vec::new(),
                failed,
                disagrees: None,
            });
        }
        let segment_size = u64::from(self.trailer.segment_size);
        for s in 0..self.layout.segment_count {
            self.verify_segment(s, &mut checks, segment_leaves.as_deref())
                .await;
            let start = s.saturating_mul(segment_size);
            progress(segment_size.min(self.trailer.size.saturating_sub(start)));
        }
        for mut check in checks {
            let kind = match (check.failed.take(), check.disagrees) {
                (Some(kind), _) => Some(kind),
                (None, disagrees) => match self.check_block_tree(&check).await {
                    Err(kind) => Some(kind),
                    Ok(()) => disagrees
                        .map(|segment| ProblemKind::Corrupt(Corruption::Disagrees { segment })),
                },
            };
            if let Some(kind) = kind {
                problems.push(ShareProblem {
                    share: Some(check.share),
                    server: check.server.server_id().to_owned(),
                    kind,
                });
            }
        }
        problems
    }

    /// Reads block `s` of every share still in good standing, hashes each
    /// into its share's leaves, and checks the blocks against one another.
    async fn verify_segment(&self, s: u64, checks: &mut [ShareCheck], leaves: Option<&[Hash]>) {
        let start = self.layout.block_offset(s);
        let range = start..start + self.layout.block_len(s);
        let reads = futures::future::join_all(checks.iter().map(|check| {
            let range = range.clone();
            async move {
                match check.failed {
                    Some(_) => None,
                    None => Some(check.server.read(self.si, check.share, range).await),
                }
            }
        }))
        .await;
        let mut blocks: Vec<(usize, Bytes)> = Vec::new();
        for (index, read) in reads.into_iter().enumerate() {
            match read {
                None => {}
                Some(Ok(block)) if block.len() as u64 == range.end - range.start => {
                    blocks.push((index, block))
                }
                Some(Ok(block)) => {
                    checks[index].failed = Some(ProblemKind::Corrupt(Corruption::BlockLength {
                        segment: s,
                        got: block.len(),
                        want: range.end - range.start,
                    }))
                }
                Some(Err(e)) => checks[index].failed = Some(ProblemKind::of(e)),
            }
        }
        let shares: Vec<(ShareNum, Bytes)> = blocks
            .iter()
            .map(|(index, block)| (checks[*index].share, block.clone()))
            .collect();
        let coder = Arc::clone(&self.coder);
        let k = usize::from(self.trailer.k);
        let n = usize::from(self.trailer.n);
        let leaf = leaves
            .and_then(|l| l.get(usize::try_from(s).ok()?))
            .copied();
        let outcome = tokio::task::spawn_blocking(move || {
            let hashes: Vec<Hash> = shares.iter().map(|(_, b)| coder.block_hash(b)).collect();
            let disagreeing = cross_check(&coder, k, n, &shares, leaf);
            (hashes, disagreeing)
        })
        .await;
        let (hashes, disagreeing) = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                let source = Arc::new(e);
                for (index, _) in &blocks {
                    checks[*index].failed = Some(ProblemKind::TaskFailed {
                        what: "hashing",
                        source: Arc::clone(&source),
                    });
                }
                return;
            }
        };
        for ((index, _), hash) in blocks.iter().zip(hashes) {
            let check = &mut checks[*index];
            check.leaves.push(hash);
            if disagreeing.contains(&check.share) && check.disagrees.is_none() {
                check.disagrees = Some(s);
            }
        }
    }

    /// The stored block tree of a share against the blocks it holds, and
    /// its root against the share tree.
    async fn check_block_tree(&self, check: &ShareCheck) -> Result<(), ProblemKind> {
        let layout = &self.layout;
        let block_tree = HashTree::from_leaves(&check.leaves);
        let stored = check
            .server
            .read(
                self.si,
                check.share,
                layout.block_tree_offset..layout.ciphertext_tree_offset,
            )
            .await
            .map_err(ProblemKind::of)?;
        if stored[..] != block_tree.to_bytes()[..] {
            return Err(ProblemKind::Corrupt(Corruption::BlockTreeMismatch));
        }
        let proof: Vec<Hash> = check
            .server
            .read(
                self.si,
                check.share,
                layout.proof_offset..layout.trailer_offset,
            )
            .await
            .map_err(ProblemKind::of)?
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        if !verify_proof(
            &block_tree.root(),
            u64::from(check.share.0),
            &proof,
            &self.trailer.share_root,
        ) {
            return Err(ProblemKind::Corrupt(Corruption::BlockRootNotInShareTree));
        }
        Ok(())
    }

    /// Everything of one share but its blocks and block tree: header,
    /// ciphertext tree (whose leaves it returns), trailer and footer.
    async fn verify_share_structure(
        &self,
        server: &dyn ShareStore,
        share: ShareNum,
    ) -> Result<Vec<Hash>, ProblemKind> {
        let layout = &self.layout;
        let read = |range: std::ops::Range<u64>| async move {
            server
                .read(self.si, share, range)
                .await
                .map_err(ProblemKind::of)
        };
        let corrupt = |what: Corruption| Err(ProblemKind::Corrupt(what));
        if read(0..HEADER_LEN).await?[..] != self.expected_header(share)[..] {
            return corrupt(Corruption::HeaderMismatch);
        }
        let stored = read(layout.ciphertext_tree_offset..layout.proof_offset).await?;
        // An offset past `usize` is past anything read into memory: short.
        let first_leaf = usize::try_from(hashtree::width_for(layout.segment_count) - 1)
            .ok()
            .and_then(|width| width.checked_mul(32));
        let Some(leaf_bytes) = first_leaf.and_then(|first| stored.get(first..)) else {
            return corrupt(Corruption::CiphertextTreeShort);
        };
        let stored_leaves: Vec<Hash> = leaf_bytes
            .chunks_exact(32)
            // More leaves than `usize` holds cannot be in memory: take all.
            .take(usize::try_from(layout.segment_count).unwrap_or(usize::MAX))
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        let rebuilt = HashTree::from_leaves(&stored_leaves);
        if stored[..] != rebuilt.to_bytes()[..] || rebuilt.root() != self.trailer.ciphertext_root {
            return corrupt(Corruption::CiphertextTreeMismatch);
        }
        let tail = read(layout.trailer_offset..layout.share_len).await?;
        let mut expected = self.trailer.encode().to_vec();
        expected.extend_from_slice(&layout.footer(u16::from(share.0)).encode());
        if tail[..] != expected[..] {
            return corrupt(Corruption::TailMismatch);
        }
        Ok(stored_leaves)
    }

    async fn check_segment_hash(&self, s: u64, hash: Hash, good: &[GoodBlock]) -> EngineResult<()> {
        for block in good {
            let (share, server, needed) = {
                let state = lock(&self.state);
                let c = &state.candidates[block.candidate];
                (
                    c.share,
                    Arc::clone(&c.server),
                    state.ciphertext_tree.nodes_needed(s),
                )
            };
            let mut fetched: HashMap<u64, Hash> = HashMap::with_capacity(needed.len());
            if !needed.is_empty() {
                let offset = self.layout.ciphertext_tree_offset;
                let ranges = needed
                    .iter()
                    .map(|node| node_range(offset, *node))
                    .collect();
                let reads = server.read_ranges(self.si, share, ranges);
                let Ok(Ok(reads)) = tokio::time::timeout(READ_TIMEOUT, reads).await else {
                    continue;
                };
                let nodes: Result<Vec<Hash>, _> = reads
                    .iter()
                    .map(|bytes| node_hash(server.as_ref(), bytes))
                    .collect();
                let Ok(nodes) = nodes else {
                    continue;
                };
                if nodes.len() != needed.len() {
                    continue;
                }
                fetched.extend(needed.into_iter().zip(nodes));
            }
            let mut state = lock(&self.state);
            if state.ciphertext_tree.verify_leaf(s, hash, &fetched) {
                return Ok(());
            }
        }
        Err(EngineError::Inconsistent { segment: s })
    }
}

/// A block's hash, and the block decrypted in place if `plain_at` (its
/// offset in the file) says it is a data block.
fn hash_and_decrypt(
    coder: &SegmentCoder,
    block: Bytes,
    plain_at: Option<u64>,
    key: &FileKey,
) -> (Hash, Bytes) {
    let hash = coder.block_hash(&block);
    let block = match plain_at {
        Some(offset) => {
            let mut buf = block
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            key.apply_keystream(offset, &mut buf);
            buf.freeze()
        }
        None => block,
    };
    (hash, block)
}

/// Where node `node` of the tree stored at `tree_offset` lies in a share.
fn node_range(tree_offset: u64, node: u64) -> std::ops::Range<u64> {
    let start = tree_offset + 32 * node;
    start..start + 32
}

/// A node read from a server: exactly 32 bytes, else the server's fault.
fn node_hash(server: &dyn ShareStore, bytes: &[u8]) -> Result<Hash, crate::grid::GridError> {
    bytes
        .try_into()
        .map_err(|_| crate::grid::GridError::ShortRead {
            server: server.server_id().to_owned(),
            got: bytes.len(),
            want: 32,
        })
}

/// Reads node `node` of the tree stored at `tree_offset` in a share.
async fn read_node(
    server: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    tree_offset: u64,
    node: u64,
) -> Result<Hash, crate::grid::GridError> {
    let start = tree_offset + 32 * node;
    let bytes = server.read(si, share, start..start + 32).await?;
    // The store's contract is exact reads; a short answer is the server's fault.
    bytes[..]
        .try_into()
        .map_err(|_| crate::grid::GridError::ShortRead {
            server: server.server_id().to_owned(),
            got: bytes.len(),
            want: 32,
        })
}

/// One share under `verify_all_shares`.
struct ShareCheck {
    share: ShareNum,
    server: Arc<dyn ShareStore>,
    /// Hashes of the blocks read so far: the leaves of its block tree.
    leaves: Vec<Hash>,
    /// The share cannot be checked further (unreadable or corrupt).
    failed: Option<ProblemKind>,
    /// The first segment whose block disagreed with the other shares.
    disagrees: Option<u64>,
}

/// The shares among `blocks` (one segment's, from different shares) that
/// disagree with the segment the ciphertext tree's `leaf` names. Finds a k
/// of them that decode to that segment (the lowest-numbered k first, then
/// without each share in turn, which finds any single culprit), re-encodes
/// it and compares every block. Without such a k, every share disagrees:
/// the segment cannot be read correctly from what is there.
fn cross_check(
    coder: &SegmentCoder,
    k: usize,
    n: usize,
    blocks: &[(ShareNum, Bytes)],
    leaf: Option<Hash>,
) -> Vec<ShareNum> {
    let Some(leaf) = leaf else {
        return Vec::new();
    };
    if blocks.len() < k {
        return Vec::new();
    }
    let mut sorted: Vec<&(ShareNum, Bytes)> = blocks.iter().collect();
    sorted.sort_by_key(|(share, _)| *share);
    // Any k good blocks decode to the segment the uploader hashed. The
    // first k usually are; when they are not, other choices of k are
    // tried, so that up to n - k bad blocks are told apart from the good.
    for chosen in Combinations::new(sorted.len(), k).take(MAX_CROSS_CHECKS) {
        let mut slots: Vec<Option<Bytes>> = vec![None; n];
        for &index in &chosen {
            let (share, block) = sorted[index];
            if let Some(slot) = slots.get_mut(usize::from(share.0)) {
                *slot = Some(block.clone());
            }
        }
        let Ok(cipher) = coder.decode(slots) else {
            continue;
        };
        let expected = coder.blocks_of(&cipher);
        let hashes: Vec<Hash> = expected[..k].iter().map(|b| coder.block_hash(b)).collect();
        if segment_hash(&hashes) != leaf {
            continue;
        }
        return blocks
            .iter()
            .filter(|(share, block)| expected.get(usize::from(share.0)) != Some(block))
            .map(|(share, _)| *share)
            .collect();
    }
    blocks.iter().map(|(share, _)| *share).collect()
}

/// Choices of k blocks a deep check decodes from before it gives up on a
/// segment (3-of-10 has 120 in all; 128-of-256 too many to try).
const MAX_CROSS_CHECKS: usize = 256;

/// The k-element subsets of `0..m` as sorted index lists, in
/// lexicographic order (the first is `0..k`).
struct Combinations {
    m: usize,
    current: Option<Vec<usize>>,
}

impl Combinations {
    fn new(m: usize, k: usize) -> Self {
        Self {
            m,
            current: (k <= m).then(|| (0..k).collect()),
        }
    }
}

impl Iterator for Combinations {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let current = self.current.take()?;
        let k = current.len();
        let mut following = current.clone();
        // The rightmost index that can still move right.
        let movable = (0..k).rev().find(|&i| following[i] < self.m - k + i);
        if let Some(i) = movable {
            following[i] += 1;
            for j in i + 1..k {
                following[j] = following[j - 1] + 1;
            }
            self.current = Some(following);
        }
        Some(current)
    }
}

/// Why a block could not be used, and how much of the share that rules out.
enum BlockFailure {
    Share(ProblemKind),
    Block(ProblemKind),
}

enum TrailerError {
    /// The share is not usable; try another.
    Share(ProblemKind),
    /// The share is fine but disagrees with the capability: the capability is wrong.
    Cap(EngineError),
}

/// Reads and verifies the trailer and footer at the end of one share.
async fn read_trailer(
    server: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    len: u64,
    cap: &FileCap,
) -> Result<(Trailer, ShareLayout), TrailerError> {
    let corrupt = |why: Corruption| TrailerError::Share(ProblemKind::Corrupt(why));
    let tail_len = TRAILER_LEN + FOOTER_LEN;
    if len < tail_len {
        return Err(corrupt(Corruption::TooShort { len }));
    }
    let tail = server
        .read(si, share, len - tail_len..len)
        .await
        .map_err(|e| TrailerError::Share(ProblemKind::of(e)))?;
    if tail.len() as u64 != tail_len {
        return Err(corrupt(Corruption::ShortTail {
            got: tail.len(),
            want: tail_len,
        }));
    }
    let (trailer_bytes, footer_bytes) = tail.split_at(TRAILER_BYTES);
    let trailer = Trailer::decode(trailer_bytes).map_err(|e| corrupt(Corruption::Trailer(e)))?;
    if trailer.hash() != cap.trailer_hash {
        return Err(corrupt(Corruption::TrailerHash));
    }
    if (trailer.k, trailer.n, trailer.size) != (cap.k, cap.n, cap.size) {
        return Err(TrailerError::Cap(EngineError::InvalidCap(
            super::CapError::TrailerDisagrees {
                cap_k: cap.k,
                cap_n: cap.n,
                cap_size: cap.size,
                k: trailer.k,
                n: trailer.n,
                size: trailer.size,
            },
        )));
    }
    let layout = ShareLayout::new(&trailer).map_err(|e| corrupt(Corruption::Layout(e)))?;
    let footer = Footer::decode(footer_bytes).map_err(|e| corrupt(Corruption::Footer(e)))?;
    layout
        .check_footer(&footer, u16::from(share.0))
        .map_err(|e| corrupt(Corruption::Footer(e)))?;
    if len != layout.share_len {
        return Err(corrupt(Corruption::WrongLength {
            len,
            expected: layout.share_len,
        }));
    }
    Ok((trailer, layout))
}

/// The state lock is never held across an await, so poisoning can only come
/// from a panic in this module's own bookkeeping; carry on with the data.
fn lock(state: &Mutex<ReadState>) -> MutexGuard<'_, ReadState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A position or length within one segment as a `usize`: at most the
/// segment size, which `Trailer::params` bounds by
/// [`MAX_SEGMENT_SIZE`](super::layout::MAX_SEGMENT_SIZE) (64 MiB) before any
/// layout exists.
fn in_segment(x: u64) -> usize {
    debug_assert!(x <= u64::from(super::layout::MAX_SEGMENT_SIZE));
    #[allow(clippy::cast_possible_truncation)] // x <= MAX_SEGMENT_SIZE, checked in Trailer::params
    let x = x as usize;
    x
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::engine::{EncodingParams, UploadOptions, Uploader};
    use crate::grid::memory::memory_grid;

    /// An uploader that wrote share 0 wrong (each share consistent with
    /// its own block tree, share 0 not with the others): reads never give
    /// other bytes than those hashed, and `verify` names the share.
    #[tokio::test]
    async fn shares_that_disagree_with_the_ciphertext_tree_are_caught() {
        let (grid, stores) = memory_grid(10);
        let params = EncodingParams {
            k: 3,
            happy: 7,
            n: 10,
            segment_size: 999,
        };
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut uploader = Uploader::new(grid.clone(), params, UploadOptions::default(), None)
            .await
            .unwrap();
        uploader.tamper_share = Some(0);
        uploader.write(Bytes::from(data.clone())).await.unwrap();
        let cap = uploader.finish().await.unwrap();

        let downloader = Downloader::open(&grid, &cap).await.unwrap();
        match downloader.read(0, cap.size).await {
            Err(EngineError::Inconsistent { .. }) => {}
            Ok(bytes) => panic!("read {} bytes from inconsistent shares", bytes.len()),
            Err(e) => panic!("unexpected error {e}"),
        }
        let problems = downloader.verify_all_shares().await;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].share, Some(ShareNum(0)));
        assert!(
            matches!(
                &problems[0].kind,
                ProblemKind::Corrupt(Corruption::Disagrees { .. })
            ),
            "{problems:?}"
        );

        // Without share 0 the parity gives back exactly the bytes written.
        let si = cap.key.storage_index();
        assert!(stores.iter().any(|s| s.remove_share(si, ShareNum(0))));
        let downloader = Downloader::open(&grid, &cap).await.unwrap();
        assert_eq!(downloader.read(0, cap.size).await.unwrap(), data);
        assert!(downloader
            .verify_all_shares()
            .await
            .iter()
            .all(|p| p.share == Some(ShareNum(0))));
    }

    #[test]
    fn combinations_are_every_subset_once() {
        let all: Vec<Vec<usize>> = Combinations::new(5, 3).collect();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], vec![0, 1, 2]);
        assert_eq!(all[9], vec![2, 3, 4]);
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 10);
        assert_eq!(Combinations::new(2, 3).count(), 0);
        assert_eq!(
            Combinations::new(4, 0).collect::<Vec<_>>(),
            vec![Vec::<usize>::new()]
        );
    }

    /// Three shares (n - k is 7) corrupted in the same segment: a deep
    /// verification names those three, and only those.
    #[tokio::test]
    async fn verification_tells_three_bad_blocks_of_one_segment_from_the_good() {
        let (grid, stores) = memory_grid(10);
        let params = EncodingParams {
            k: 3,
            happy: 7,
            n: 10,
            segment_size: 3000,
        };
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        let mut uploader = Uploader::new(grid.clone(), params, UploadOptions::default(), None)
            .await
            .unwrap();
        uploader.write(Bytes::from(data.clone())).await.unwrap();
        let cap = uploader.finish().await.unwrap();
        let si = cap.key.storage_index();
        let downloader = Downloader::open(&grid, &cap).await.unwrap();
        // The middle of segment 3's block in each of three shares.
        let offset = downloader.layout().block_offset(3) + 500;
        let mut corrupted = Vec::new();
        for store in &stores {
            for info in store.list(si).await.unwrap() {
                if corrupted.len() < 3 {
                    store.corrupt(si, info.share, offset, 0x5a).unwrap();
                    corrupted.push(info.share);
                }
            }
        }
        corrupted.sort();
        let downloader = Downloader::open(&grid, &cap).await.unwrap();
        assert_eq!(downloader.read(0, cap.size).await.unwrap(), data);
        let problems = downloader.verify_all_shares().await;
        let mut named: Vec<ShareNum> = problems.iter().filter_map(|p| p.share).collect();
        named.sort();
        assert_eq!(named, corrupted, "{problems:?}");
        assert!(problems.iter().all(|p| p.kind.is_corrupt()), "{problems:?}");
    }
}
