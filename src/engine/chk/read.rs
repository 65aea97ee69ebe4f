//! The ranged, streaming reader of a Tahoe-LAFS CHK file: any byte range,
//! verified as Tahoe's downloader verifies it, from any k good shares.
//!
//! ```text
//! open:   list_immutable on every server (parallel, time-limited)
//!         -> header + UEB of the first shares -> UEB hash == the capability's
//! per segment: k shares (data shares first), each on first use:
//!         header -> share hash chain -> block-tree root in the share tree
//!         block + the block-tree nodes its path needs -> block hash checked
//!         -> zfec decode -> segment hash in the crypttext tree -> AES-128-CTR
//! ```
//!
//! [`decode::decode_all`](super::decode::decode_all) is the whole-file
//! reference this reader is tested against. Trees are checked lazily, the
//! nodes one path needs at a time (Tahoe's `IncompleteHashTree`), so a
//! Range GET in the middle of a large file reads a few hundred bytes of
//! hashes, not whole trees; a share that fails any check is set aside and
//! reported as a [`ShareProblem`], and fewer than k good shares is an
//! error, never short or unverified data.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use bytes::{Bytes, BytesMut};
use futures::stream::{self, FuturesUnordered, Stream, StreamExt};
use lru::LruCache;

use super::hashtree::{hash_tree, pair_hash, roundup_pow2, verify_leaf};
use super::hashutil::{block_hash, tagged_hash, uri_extension_hash, Hash, CIPHERTEXT_SEGMENT_TAG};
use super::layout::ParsedHeader;
use super::params::ChkParams;
use super::ueb::{Ueb, MAX_UEB_LEN};
use super::uri::ChkCap;
use super::zfec::Zfec;
use super::{Aes128Ctr, ChkError};
use crate::engine::{Corruption, EngineError, EngineResult, ProblemKind, ShareProblem};
use crate::grid::{Grid, GridError, ShareNum, ShareStore, StorageIndex};

/// Any one read of a share gives up after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Once k shares are listed, slower servers get this much longer at most.
const MAX_LIST_GRACE: Duration = Duration::from_secs(1);
const MIN_LIST_GRACE: Duration = Duration::from_millis(100);
/// Segments fetched ahead of a streaming reader: memory is this many
/// segments per stream, whatever the file's size.
const READ_AHEAD: usize = 3;
/// Decoded segments kept for small reads in order (Range GETs).
const CACHED_SEGMENTS: NonZeroUsize = match NonZeroUsize::new(2) {
    Some(n) => n,
    None => panic!("zero capacity"), // evaluated at compile time
};
/// The largest segment read (Tahoe's default is 1 MiB).
const MAX_SEGMENT_SIZE: u64 = 64 << 20;
/// Problems kept per reader; later ones are counted only.
const MAX_PROBLEMS: usize = 32;
/// A share that could not be reached is tried again after this long,
/// doubled on each further failure up to [`MAX_BACKOFF`], so that a
/// frozen server costs a read one time-out, not one per segment.
const RETRY_AFTER: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A block read not answered within this long gets a backup read from
/// another share (hedged reads, as griddav's own downloader does).
const HEDGE_AFTER: Duration = Duration::from_millis(1500);
/// The share hash chain holds log2(n) + 1 entries of 34 bytes: refuse a
/// header that claims more than a 256-share file's before reading it.
const MAX_CHAIN_BYTES: u64 = 34 * 10;

/// A Merkle tree known by its root, whose other nodes become known as
/// paths to the root are checked (Tahoe's `IncompleteHashTree`).
#[derive(Debug)]
struct LazyTree {
    num_leaves: usize,
    known: HashMap<usize, Hash>,
}

impl LazyTree {
    fn new(num_leaves: usize, root: Hash) -> Self {
        Self {
            num_leaves,
            known: HashMap::from([(0, root)]),
        }
    }

    fn leaf_node(&self, leaf: usize) -> usize {
        roundup_pow2(self.num_leaves) - 1 + leaf
    }

    /// The nodes a check of `leaf` needs that are not known yet: the
    /// siblings along its path up to the first known node.
    fn missing(&self, leaf: usize) -> Vec<usize> {
        let mut here = self.leaf_node(leaf);
        let mut out = Vec::new();
        while !self.known.contains_key(&here) {
            let sibling = if here % 2 == 1 { here + 1 } else { here - 1 };
            if !self.known.contains_key(&sibling) {
                out.push(sibling);
            }
            here = (here - 1) / 2;
        }
        out
    }

    /// Checks `hash` as leaf `leaf`, given the nodes `missing` asked for;
    /// on success every node on the path becomes known.
    fn verify(&mut self, leaf: usize, hash: Hash, fetched: &HashMap<usize, Hash>) -> bool {
        if leaf >= self.num_leaves {
            return false;
        }
        let mut here = self.leaf_node(leaf);
        let mut acc = hash;
        let mut learned = Vec::new();
        loop {
            if let Some(known) = self.known.get(&here) {
                if *known != acc {
                    return false;
                }
                break;
            }
            learned.push((here, acc));
            let sibling = if here % 2 == 1 { here + 1 } else { here - 1 };
            let Some(s) = self.known.get(&sibling).or(fetched.get(&sibling)).copied() else {
                return false;
            };
            learned.push((sibling, s));
            acc = if here % 2 == 1 {
                pair_hash(&acc, &s)
            } else {
                pair_hash(&s, &acc)
            };
            here = (here - 1) / 2;
        }
        self.known.extend(learned);
        true
    }
}

/// One share on one server.
struct Share {
    share: ShareNum,
    server: Arc<dyn ShareStore>,
    /// Its header and a block tree whose root is in the share tree, once
    /// checked.
    checked: Option<(ParsedHeader, LazyTree)>,
    /// Unusable for the rest of the read: a header, tree or chain failed.
    corrupt: bool,
    /// Unreachable lately: not tried again before then.
    retry_at: Option<Instant>,
    /// Transient failures in a row.
    failures: u32,
    /// It answered late (a backup read was sent): tried after prompt
    /// shares until it answers in time again.
    slow: bool,
    /// Segments whose block here failed its hash.
    bad_blocks: HashSet<u64>,
    /// Its blocks failed a hash: tried after every other share.
    demoted: bool,
}

struct State {
    shares: Vec<Share>,
    crypttext: LazyTree,
    problems: Vec<ShareProblem>,
    problems_dropped: u64,
}

impl State {
    fn push_problem(&mut self, problem: ShareProblem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_dropped += 1;
        }
    }
}

/// Reads one Tahoe-LAFS CHK file. Shared behind an `Arc`; reads may run
/// concurrently.
pub struct ChkReader {
    cap: ChkCap,
    si: StorageIndex,
    ueb: Ueb,
    code: Arc<Zfec>,
    state: Mutex<State>,
    cache: Mutex<LruCache<u64, Bytes>>,
}

impl std::fmt::Debug for ChkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChkReader")
            .field("si", &self.si)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

fn corrupt(reason: &'static str) -> ProblemKind {
    ProblemKind::Corrupt(Corruption::Chk(reason))
}

fn problem(share: ShareNum, server: &dyn ShareStore, kind: ProblemKind) -> ShareProblem {
    ShareProblem {
        share: Some(share),
        server: server.server_id().to_owned(),
        kind,
    }
}

/// One read of an immutable share, time-limited, exactly `range` long.
async fn read(
    server: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    range: Range<u64>,
) -> Result<Bytes, ProblemKind> {
    let want = range.end - range.start;
    match tokio::time::timeout(READ_TIMEOUT, server.read_immutable(si, share, range)).await {
        Err(_) => Err(ProblemKind::TimedOut(READ_TIMEOUT)),
        Ok(Err(e)) => Err(ProblemKind::of(e)),
        Ok(Ok(bytes)) if bytes.len() as u64 == want => Ok(bytes),
        Ok(Ok(bytes)) => Err(ProblemKind::of(GridError::ShortRead {
            server: server.server_id().to_owned(),
            got: bytes.len(),
            want,
        })),
    }
}

fn to_hash(bytes: &[u8]) -> Hash {
    bytes.try_into().unwrap_or([0; 32])
}

fn be_number(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Why a share's UEB could not be used.
enum UebError {
    /// This share is unusable; try another.
    Share(ProblemKind),
    /// The UEB is the one the capability names, yet unusable: the
    /// capability itself is wrong.
    Cap(ChkError),
}

/// Reads a share's header and UEB and checks the UEB against the capability.
async fn read_ueb(
    server: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    cap: &ChkCap,
) -> Result<(ParsedHeader, Ueb), UebError> {
    let header = read(server, si, share, 0..ParsedHeader::MAX_LEN as u64)
        .await
        .map_err(UebError::Share)?;
    let header = ParsedHeader::parse(&header).map_err(|r| UebError::Share(corrupt(r)))?;
    let at = header.offsets.uri_extension;
    let lf = header.ueb_len_field();
    let end = at
        .checked_add(lf)
        .ok_or(UebError::Share(corrupt("UEB offset out of range")))?;
    let len = be_number(
        &read(server, si, share, at..end)
            .await
            .map_err(UebError::Share)?,
    );
    if len > MAX_UEB_LEN {
        return Err(UebError::Share(corrupt("UEB too long")));
    }
    let raw = read(server, si, share, end..end + len)
        .await
        .map_err(UebError::Share)?;
    if uri_extension_hash(&raw) != cap.ueb_hash {
        return Err(UebError::Share(corrupt(
            "UEB does not match the capability",
        )));
    }
    let ueb = Ueb::parse(&raw, cap.k, cap.n, cap.size).map_err(UebError::Cap)?;
    Ok((header, ueb))
}

impl ChkReader {
    /// Finds the file's shares and verifies its UEB against the capability.
    pub async fn open(grid: &Grid, cap: &ChkCap) -> EngineResult<Self> {
        let si = StorageIndex::from_bytes(cap.storage_index());
        let servers = grid.permuted(si);
        let k = usize::from(cap.k);
        let mut problems = Vec::new();
        let mut found: Vec<(ShareNum, usize)> = Vec::new();
        let mut listings: FuturesUnordered<_> = servers
            .iter()
            .enumerate()
            .map(|(rank, server)| async move {
                (
                    rank,
                    tokio::time::timeout(READ_TIMEOUT, server.list_immutable(si)).await,
                )
            })
            .collect();
        let mut answered = vec![false; servers.len()];
        let started = std::time::Instant::now();
        let mut grace_until: Option<tokio::time::Instant> = None;
        loop {
            let next = match grace_until {
                Some(at) => match tokio::time::timeout_at(at, listings.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => listings.next().await,
            };
            let Some((rank, listing)) = next else { break };
            answered[rank] = true;
            let server = servers[rank].server_id().to_owned();
            match listing {
                Ok(Ok(shares)) => {
                    for info in shares {
                        if u16::from(info.share.0) >= cap.n {
                            problems.push(ShareProblem {
                                share: Some(info.share),
                                server: server.clone(),
                                kind: corrupt("share number past n"),
                            });
                        } else if !found.contains(&(info.share, rank)) {
                            found.push((info.share, rank));
                        }
                    }
                }
                Ok(Err(e)) => problems.push(ShareProblem {
                    share: None,
                    server,
                    kind: ProblemKind::of(e),
                }),
                Err(_) => problems.push(ShareProblem {
                    share: None,
                    server,
                    kind: ProblemKind::NoListing(READ_TIMEOUT),
                }),
            }
            let distinct: HashSet<ShareNum> = found.iter().map(|f| f.0).collect();
            if grace_until.is_none() && distinct.len() >= k {
                let grace = (started.elapsed() * 2).clamp(MIN_LIST_GRACE, MAX_LIST_GRACE);
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
        found.sort();

        // UEBs in parallel: the first that matches the capability wins
        // (every good one is the same: its hash is in the capability).
        let mut uebs: FuturesUnordered<_> = found
            .iter()
            .enumerate()
            .map(|(index, (share, rank))| {
                let server = Arc::clone(&servers[*rank]);
                let share = *share;
                async move { (index, read_ueb(server.as_ref(), si, share, cap).await) }
            })
            .collect();
        let mut verified = None;
        while let Some((index, result)) = uebs.next().await {
            let (share, rank) = found[index];
            match result {
                Ok((_, ueb)) => {
                    verified = Some(ueb);
                    break;
                }
                Err(UebError::Cap(e)) => return Err(EngineError::Chk(e)),
                Err(UebError::Share(kind)) => {
                    problems.push(problem(share, servers[rank].as_ref(), kind))
                }
            }
        }
        drop(uebs);
        for p in &problems {
            tracing::warn!(%si, problem = %p, "share problem while opening a CHK file");
        }
        let Some(ueb) = verified else {
            return Err(EngineError::NotEnoughShares {
                have: 0,
                need: cap.k,
                problems,
            });
        };
        let p = ueb.params;
        // The UEB is the capability's own, but a linked capability may
        // come from anyone: a segment is held in memory whole.
        if p.segment_size > MAX_SEGMENT_SIZE {
            return Err(EngineError::Chk(ChkError::BadUeb(
                "segment size above 64 MiB",
            )));
        }
        let shares = found
            .into_iter()
            .map(|(share, rank)| Share {
                share,
                server: Arc::clone(&servers[rank]),
                checked: None,
                corrupt: false,
                retry_at: None,
                failures: 0,
                slow: false,
                bad_blocks: HashSet::new(),
                demoted: false,
            })
            .collect();
        Ok(Self {
            cap: cap.clone(),
            si,
            code: Arc::new(Zfec::new(k, usize::from(cap.n)).map_err(ChkError::from)?),
            state: Mutex::new(State {
                shares,
                crypttext: LazyTree::new(p.segment_count(), ueb.crypttext_root_hash),
                problems_dropped: problems.len().saturating_sub(MAX_PROBLEMS) as u64,
                problems: problems.into_iter().take(MAX_PROBLEMS).collect(),
            }),
            cache: Mutex::new(LruCache::new(CACHED_SEGMENTS)),
            ueb,
        })
    }

    fn params(&self) -> &ChkParams {
        &self.ueb.params
    }

    /// Plaintext bytes of the file.
    pub fn size(&self) -> u64 {
        self.cap.size
    }

    /// Plaintext bytes per segment, from the verified UEB.
    pub fn segment_size(&self) -> u64 {
        self.params().segment_size
    }

    /// The file's k and n.
    pub fn counts(&self) -> (u16, u16) {
        (self.cap.k, self.cap.n)
    }

    /// The storage index of the file's shares.
    pub fn storage_index(&self) -> StorageIndex {
        self.si
    }

    /// The shares found at open: (share, server).
    pub fn holdings(&self) -> Vec<(ShareNum, String)> {
        lock(&self.state)
            .shares
            .iter()
            .map(|s| (s.share, s.server.server_id().to_owned()))
            .collect()
    }

    /// The first share problems seen.
    pub fn problems(&self) -> Vec<ShareProblem> {
        lock(&self.state).problems.clone()
    }

    /// Whether a share could not be reached while reading.
    pub fn degraded(&self) -> bool {
        let state = lock(&self.state);
        state.problems_dropped > 0 || state.problems.iter().any(|p| p.kind.is_unavailable())
    }

    /// Whether the file can be read now: the first segment is fetched and
    /// verified unless it is cached and k shares answer a small read.
    pub async fn check_readable(&self) -> EngineResult<()> {
        if self.cached(0).is_some() && self.k_shares_answer().await {
            return Ok(());
        }
        let segment = self.fetch_segment(0).await?;
        cache_lock(&self.cache).put(0, segment);
        Ok(())
    }

    async fn k_shares_answer(&self) -> bool {
        let picks = self.pick(0, usize::from(self.cap.k), &[]);
        if picks.len() < usize::from(self.cap.k) {
            return false;
        }
        let reads = picks.into_iter().map(|i| {
            let (server, share) = {
                let state = lock(&self.state);
                (Arc::clone(&state.shares[i].server), state.shares[i].share)
            };
            async move { read(server.as_ref(), self.si, share, 0..4).await.is_ok() }
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// Exactly the bytes `offset..offset + len` of the file.
    pub async fn read(&self, offset: u64, len: u64) -> EngineResult<Bytes> {
        let Some(end) = offset.checked_add(len).filter(|e| *e <= self.size()) else {
            return Err(EngineError::RangeBeyondEnd {
                start: offset,
                end: offset.saturating_add(len),
                size: self.size(),
            });
        };
        if len == 0 {
            return Ok(Bytes::new());
        }
        let seg_size = self.segment_size();
        let (first, last) = (offset / seg_size, (end - 1) / seg_size);
        let mut out = BytesMut::new();
        for s in first..=last {
            let segment = self.segment(s).await?;
            let start = s * seg_size;
            let from = in_segment(offset.max(start) - start);
            let to = in_segment(end.min(start + segment.len() as u64) - start);
            if first == last {
                return Ok(segment.slice(from..to));
            }
            out.extend_from_slice(&segment[from..to]);
        }
        Ok(out.freeze())
    }

    /// The file from `offset` to its end, a segment at a time, with up to
    /// [`READ_AHEAD`] segments fetched ahead.
    pub fn stream(self: Arc<Self>, offset: u64) -> impl Stream<Item = EngineResult<Bytes>> + Send {
        let seg_size = self.segment_size();
        let first = offset / seg_size;
        let count = if offset >= self.size() {
            first
        } else {
            self.params().num_segments
        };
        stream::iter(first..count)
            .map(move |s| {
                let this = Arc::clone(&self);
                async move {
                    let segment = match this.cached(s) {
                        Some(segment) => segment,
                        None => this.fetch_segment(s).await?,
                    };
                    let skip = in_segment(offset.saturating_sub(s * seg_size)).min(segment.len());
                    Ok(segment.slice(skip..))
                }
            })
            .buffered(READ_AHEAD)
    }

    async fn segment(&self, s: u64) -> EngineResult<Bytes> {
        if let Some(segment) = self.cached(s) {
            return Ok(segment);
        }
        let segment = self.fetch_segment(s).await?;
        cache_lock(&self.cache).put(s, segment.clone());
        Ok(segment)
    }

    fn cached(&self, s: u64) -> Option<Bytes> {
        cache_lock(&self.cache).get(&s).cloned()
    }

    /// Up to `count` usable shares for segment `s` not among `taken`:
    /// shares in good standing first, data shares before parity.
    fn pick(&self, s: u64, count: usize, taken: &[ShareNum]) -> Vec<usize> {
        let state = lock(&self.state);
        let now = Instant::now();
        let mut usable: Vec<(u8, usize)> = state
            .shares
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !c.corrupt
                    && !c.bad_blocks.contains(&s)
                    && !taken.contains(&c.share)
                    && c.retry_at.is_none_or(|at| at <= now)
            })
            .map(|(i, c)| (u8::from(c.demoted) * 2 + u8::from(c.slow), i))
            .collect();
        usable.sort_by_key(|(rank, _)| *rank);
        let mut picks: Vec<usize> = Vec::with_capacity(count);
        for (_, i) in usable {
            if picks.len() == count {
                break;
            }
            let share = state.shares[i].share;
            if !picks.iter().any(|p| state.shares[*p].share == share) {
                picks.push(i);
            }
        }
        picks
    }

    /// The plaintext of segment `s`, from k verified blocks.
    async fn fetch_segment(&self, s: u64) -> EngineResult<Bytes> {
        let k = usize::from(self.cap.k);
        let mut good: Vec<(usize, ShareNum, Bytes)> = Vec::with_capacity(k);
        let mut taken: Vec<ShareNum> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let fetch = |i: usize| async move { (i, self.fetch_block(i, s).await) };
        for i in self.pick(s, k, &taken) {
            taken.push(lock(&self.state).shares[i].share);
            in_flight.push(fetch(i));
        }
        while good.len() < k {
            if in_flight.is_empty() {
                let state = lock(&self.state);
                return Err(EngineError::NotEnoughShares {
                    have: good.len(),
                    need: self.cap.k,
                    problems: state.problems.clone(),
                });
            }
            let more = match tokio::time::timeout(HEDGE_AFTER, in_flight.next()).await {
                Ok(Some((i, Ok(block)))) => {
                    let share = lock(&self.state).shares[i].share;
                    good.push((i, share, block));
                    false
                }
                Ok(Some((i, Err(kind)))) => {
                    self.mark_bad(i, s, kind);
                    let share = lock(&self.state).shares[i].share;
                    taken.retain(|t| *t != share);
                    true
                }
                Ok(None) => false,
                // Every read in flight is late: one more, from another
                // share, and later segments prefer prompt ones.
                Err(_) => {
                    let mut state = lock(&self.state);
                    for c in state.shares.iter_mut() {
                        if taken.contains(&c.share) && !good.iter().any(|g| g.1 == c.share) {
                            c.slow = true;
                        }
                    }
                    true
                }
            };
            if more {
                for j in self.pick(s, 1, &taken) {
                    taken.push(lock(&self.state).shares[j].share);
                    in_flight.push(fetch(j));
                }
            }
        }
        drop(in_flight);

        let code = Arc::clone(&self.code);
        let seg_len = in_segment(self.params().segment_len(s));
        let blocks: Vec<(usize, Bytes)> = good
            .iter()
            .map(|(_, share, b)| (usize::from(share.0), b.clone()))
            .collect();
        let (mut cipher, hash) = tokio::task::spawn_blocking(move || {
            let refs: Vec<(usize, &[u8])> = blocks.iter().map(|(n, b)| (*n, &b[..])).collect();
            let primary = code.decode(&refs)?;
            let mut segment = primary.concat();
            segment.truncate(seg_len);
            let hash = tagged_hash(CIPHERTEXT_SEGMENT_TAG, &segment);
            Ok::<_, ChkError>((segment, hash))
        })
        .await
        .map_err(|source| EngineError::TaskFailed {
            what: "CHK segment decoder",
            source,
        })??;
        self.check_crypttext(s, hash, &good).await?;
        let key = self.cap.key;
        let offset = s * self.segment_size();
        let plain = tokio::task::spawn_blocking(move || {
            let mut c = Aes128Ctr::new((&key).into(), &[0u8; 16].into());
            c.seek(offset);
            c.apply_keystream(&mut cipher);
            Bytes::from(cipher)
        })
        .await
        .map_err(|source| EngineError::TaskFailed {
            what: "CHK segment decryption",
            source,
        })?;
        Ok(plain)
    }

    /// Checks a segment's hash against the crypttext tree (root in the
    /// UEB), with the nodes its path needs read from the shares at hand.
    async fn check_crypttext(
        &self,
        s: u64,
        hash: Hash,
        good: &[(usize, ShareNum, Bytes)],
    ) -> EngineResult<()> {
        let leaf = usize::try_from(s).unwrap_or(usize::MAX);
        for (i, _, _) in good {
            let (server, share, base, missing) = {
                let state = lock(&self.state);
                let c = &state.shares[*i];
                let Some((header, _)) = &c.checked else {
                    continue;
                };
                (
                    Arc::clone(&c.server),
                    c.share,
                    header.offsets.crypttext_hash_tree,
                    state.crypttext.missing(leaf),
                )
            };
            let mut fetched = HashMap::new();
            let reads = missing.iter().map(|node| {
                let start = base + 32 * *node as u64;
                read(server.as_ref(), self.si, share, start..start + 32)
            });
            let Ok(nodes) = futures::future::try_join_all(reads).await else {
                continue;
            };
            for (node, bytes) in missing.iter().zip(nodes) {
                fetched.insert(*node, to_hash(&bytes));
            }
            if lock(&self.state).crypttext.verify(leaf, hash, &fetched) {
                return Ok(());
            }
            if missing.is_empty() {
                break;
            }
        }
        Err(EngineError::Inconsistent { segment: s })
    }

    fn mark_bad(&self, i: usize, s: u64, kind: ProblemKind) {
        let mut state = lock(&self.state);
        let c = &mut state.shares[i];
        if matches!(kind, ProblemKind::Corrupt(Corruption::BlockHash { .. })) {
            c.bad_blocks.insert(s);
            c.demoted = true;
        } else if kind.is_corrupt() {
            c.corrupt = true;
        } else {
            c.failures = c.failures.saturating_add(1);
            let backoff = RETRY_AFTER
                .saturating_mul(1 << c.failures.min(6).saturating_sub(1))
                .min(MAX_BACKOFF);
            c.retry_at = Some(Instant::now() + backoff);
        }
        let p = problem(c.share, c.server.as_ref(), kind);
        tracing::warn!(si = %self.si, problem = %p, "share problem while reading a CHK file");
        state.push_problem(p);
    }

    /// Checks share `i`'s header against the file's shape and its
    /// block-tree root against the share tree in the UEB.
    async fn check_share(&self, i: usize) -> Result<(), ProblemKind> {
        let (server, share) = {
            let state = lock(&self.state);
            (Arc::clone(&state.shares[i].server), state.shares[i].share)
        };
        let checked = check_share(server.as_ref(), self.si, share, &self.ueb).await?;
        lock(&self.state).shares[i].checked.get_or_insert(checked);
        Ok(())
    }

    /// Reads block `s` of share `i` and checks it against the share's
    /// block tree.
    async fn fetch_block(&self, i: usize, s: u64) -> Result<Bytes, ProblemKind> {
        if lock(&self.state).shares[i].checked.is_none() {
            self.check_share(i).await?;
        }
        let leaf = usize::try_from(s).unwrap_or(usize::MAX);
        let (server, share, offsets, missing) = {
            let state = lock(&self.state);
            let c = &state.shares[i];
            let Some((header, tree)) = &c.checked else {
                return Err(corrupt("share not checked"));
            };
            (
                Arc::clone(&c.server),
                c.share,
                header.offsets,
                tree.missing(leaf),
            )
        };
        let p = self.params();
        let start = offsets.data + s * p.block_size;
        let block = read(
            server.as_ref(),
            self.si,
            share,
            start..start + p.block_len(s),
        );
        let nodes = futures::future::try_join_all(missing.iter().map(|node| {
            let at = offsets.block_hashes + 32 * *node as u64;
            read(server.as_ref(), self.si, share, at..at + 32)
        }));
        let (block, nodes) = futures::join!(block, nodes);
        let (block, nodes) = (block?, nodes?);
        let fetched: HashMap<usize, Hash> = missing
            .iter()
            .zip(nodes)
            .map(|(n, b)| (*n, to_hash(&b)))
            .collect();
        let hashed = block.clone();
        let hash = tokio::task::spawn_blocking(move || block_hash(&hashed))
            .await
            .map_err(|e| ProblemKind::TaskFailed {
                what: "hashing",
                source: Arc::new(e),
            })?;
        let mut state = lock(&self.state);
        let ok = match &mut state.shares[i].checked {
            Some((_, tree)) => tree.verify(leaf, hash, &fetched),
            None => false,
        };
        if ok {
            state.shares[i].retry_at = None;
            state.shares[i].failures = 0;
            state.shares[i].slow = false;
            Ok(block)
        } else {
            Err(ProblemKind::Corrupt(Corruption::BlockHash { segment: s }))
        }
    }

    /// Reads every byte of every share found and checks all of it as
    /// `tahoe check --verify` does: each share's UEB against the
    /// capability, its whole block tree against its blocks and (through
    /// the share hash chain) the share tree, its crypttext tree against
    /// the UEB. Returns the problems found, missing shares included.
    pub async fn verify_all_shares_with_progress(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Vec<ShareProblem> {
        let shares: Vec<(ShareNum, Arc<dyn ShareStore>)> = lock(&self.state)
            .shares
            .iter()
            .map(|c| (c.share, Arc::clone(&c.server)))
            .collect();
        let mut problems = Vec::new();
        for n in 0..self.cap.n {
            // n <= 256 and share numbers are below it
            #[allow(clippy::cast_possible_truncation)]
            let share = ShareNum(n as u8);
            if !shares.iter().any(|(s, _)| *s == share) {
                problems.push(ShareProblem {
                    share: Some(share),
                    server: String::new(),
                    kind: ProblemKind::Missing,
                });
            }
        }
        let p = *self.params();
        // (share, server, header, leaves, failure)
        let mut checks = Vec::new();
        for (share, server) in shares {
            let result =
                verify_structure(server.as_ref(), self.si, share, &self.cap, &self.ueb).await;
            match result {
                Ok((header, leaves)) => checks.push((share, server, header, leaves, None)),
                Err(kind) => problems.push(problem(share, server.as_ref(), kind)),
            }
        }
        for s in 0..p.num_segments {
            let reads = futures::future::join_all(checks.iter().map(|c| {
                let (share, server, header, _, failed) = c;
                let start = header.offsets.data + s * p.block_size;
                let range = start..start + p.block_len(s);
                let server = Arc::clone(server);
                async move {
                    if failed.is_some() {
                        return None;
                    }
                    Some(read(server.as_ref(), self.si, *share, range).await)
                }
            }))
            .await;
            for (c, result) in checks.iter_mut().zip(reads) {
                match result {
                    None => {}
                    Some(Err(kind)) => c.4 = Some(kind),
                    Some(Ok(block)) => {
                        let leaf = c.3.get(usize::try_from(s).unwrap_or(usize::MAX));
                        if leaf != Some(&block_hash(&block)) {
                            c.4 = Some(ProblemKind::Corrupt(Corruption::BlockHash { segment: s }));
                        }
                    }
                }
            }
            progress(p.segment_len(s));
        }
        for (share, server, _, _, failed) in checks {
            if let Some(kind) = failed {
                problems.push(problem(share, server.as_ref(), kind));
            }
        }
        problems
    }
}

/// A share's header checked against the file's shape, and its block-tree
/// root against the share tree through its hash chain.
async fn check_share(
    server: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    ueb: &Ueb,
) -> Result<(ParsedHeader, LazyTree), ProblemKind> {
    let p = ueb.params;
    let header = read(server, si, share, 0..ParsedHeader::MAX_LEN as u64).await?;
    let header = ParsedHeader::parse(&header).map_err(corrupt)?;
    let o = header.offsets;
    let tree_bytes = (2 * roundup_pow2(p.segment_count()) as u64 - 1) * 32;
    if o.plaintext_hash_tree - o.data < p.share_data_size
        || o.block_hashes - o.crypttext_hash_tree < tree_bytes
        || o.share_hashes - o.block_hashes < tree_bytes
    {
        return Err(corrupt("sections too small for the file"));
    }
    let chain_len = o.uri_extension - o.share_hashes;
    if chain_len > MAX_CHAIN_BYTES {
        return Err(corrupt("share hash chain too long"));
    }
    let root = read(server, si, share, o.block_hashes..o.block_hashes + 32);
    let chain = read(server, si, share, o.share_hashes..o.uri_extension);
    let (root, chain) = futures::join!(root, chain);
    let root = to_hash(&root?);
    let chain: Vec<(usize, Hash)> = chain?
        .chunks_exact(34)
        .map(|c| {
            (
                usize::from(u16::from_be_bytes([c[0], c[1]])),
                to_hash(&c[2..]),
            )
        })
        .collect();
    let lookup = |i: usize| chain.iter().find(|(n, _)| *n == i).map(|(_, h)| *h);
    let n = usize::from(p.n);
    let leaf_node = roundup_pow2(n) - 1 + usize::from(share.0);
    if lookup(leaf_node).is_some_and(|h| h != root) {
        return Err(corrupt("share hash chain names another block tree root"));
    }
    if !verify_leaf(
        &ueb.share_root_hash,
        n,
        usize::from(share.0),
        &root,
        &lookup,
    ) {
        return Err(ProblemKind::Corrupt(Corruption::BlockRootNotInShareTree));
    }
    Ok((header, LazyTree::new(p.segment_count(), root)))
}

/// Everything of one share but its blocks: its UEB, its header, its whole
/// block tree (whose leaves it returns) and crypttext tree.
async fn verify_structure(
    server: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    cap: &ChkCap,
    ueb: &Ueb,
) -> Result<(ParsedHeader, Vec<Hash>), ProblemKind> {
    match read_ueb(server, si, share, cap).await {
        Ok(_) => {}
        Err(UebError::Share(kind)) => return Err(kind),
        Err(UebError::Cap(_)) => return Err(corrupt("UEB does not parse")),
    }
    let (header, _) = check_share(server, si, share, ueb).await?;
    let o = header.offsets;
    let leaves = ueb.params.segment_count();
    let first_leaf = roundup_pow2(leaves) - 1;
    let tree_bytes = (2 * roundup_pow2(leaves) as u64 - 1) * 32;
    let whole = |at: u64| async move {
        let bytes = read(server, si, share, at..at + tree_bytes).await?;
        Ok::<Vec<Hash>, ProblemKind>(bytes.chunks_exact(32).map(to_hash).collect())
    };
    let block_tree = whole(o.block_hashes).await?;
    if hash_tree(&block_tree[first_leaf..first_leaf + leaves]) != block_tree {
        return Err(corrupt("block hash tree is inconsistent"));
    }
    // check_share put the root in the share tree already.
    let crypttext = whole(o.crypttext_hash_tree).await?;
    let rebuilt = hash_tree(&crypttext[first_leaf..first_leaf + leaves]);
    if rebuilt != crypttext || rebuilt[0] != ueb.crypttext_root_hash {
        return Err(corrupt("crypttext hash tree does not match the UEB"));
    }
    Ok((header, block_tree[first_leaf..first_leaf + leaves].to_vec()))
}

/// The state lock is never held across an await.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn cache_lock(cache: &Mutex<LruCache<u64, Bytes>>) -> MutexGuard<'_, LruCache<u64, Bytes>> {
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// A position within one segment as a `usize`: segments are held in
/// memory whole, so their sizes fit.
fn in_segment(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests: small numbers; a panic is the failure report
mod tests {
    use super::*;
    use crate::grid::memory::{memory_grid, MemoryStore};
    use crate::grid::ShareSecrets;

    fn secrets() -> ShareSecrets {
        ShareSecrets {
            write_enabler: [1; 32],
            lease_renew: [2; 32],
            lease_cancel: [3; 32],
        }
    }

    /// Encodes `data` 3-of-10 and puts share i on store i.
    async fn stored(data: &[u8], segment: u64) -> (Grid, Vec<MemoryStore>, ChkCap, Vec<Vec<u8>>) {
        let (grid, stores) = memory_grid(10);
        let params = ChkParams::for_upload(data.len() as u64, 3, 10, segment).unwrap();
        let (shares, cap) = super::super::encode::encode_all([7; 16], params, data).unwrap();
        let si = StorageIndex::from_bytes(cap.storage_index());
        for (i, share) in shares.iter().enumerate() {
            let mut w = stores[i]
                .create_immutable(si, ShareNum(i as u8), share.len() as u64, &secrets())
                .await
                .unwrap();
            w.append(Bytes::from(share.clone())).await.unwrap();
            w.finish(share.len() as u64).await.unwrap();
        }
        (grid, stores, cap, shares)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn every_range_reads_back_and_matches_the_whole_file_decoder() {
        let data = data(200);
        let (grid, _, cap, shares) = stored(&data, 30).await;
        let whole: Vec<(u16, &[u8])> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u16, &s[..]))
            .collect();
        assert_eq!(
            super::super::decode::decode_all(&cap, &whole).unwrap(),
            data
        );
        let reader = Arc::new(ChkReader::open(&grid, &cap).await.unwrap());
        assert_eq!(reader.size(), 200);
        assert_eq!(reader.segment_size(), 30);
        reader.check_readable().await.unwrap();
        for offset in 0..=200u64 {
            for len in 0..=(200 - offset) {
                let got = reader.read(offset, len).await.unwrap();
                assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
            }
            let streamed: Vec<Bytes> = Arc::clone(&reader)
                .stream(offset)
                .map(|p| p.unwrap())
                .collect()
                .await;
            assert_eq!(streamed.concat(), &data[offset as usize..]);
        }
        assert!(reader.read(150, 51).await.is_err());
        assert!(reader.problems().is_empty());
        assert!(reader
            .verify_all_shares_with_progress(|_| {})
            .await
            .is_empty());
    }

    #[tokio::test]
    async fn seven_of_ten_shares_gone_still_reads_and_eight_do_not() {
        let data = data(100_000);
        let (grid, stores, cap, _) = stored(&data, 9_999).await;
        let si = StorageIndex::from_bytes(cap.storage_index());
        // The data shares go first, so the parity must be decoded.
        for (i, store) in stores.iter().enumerate().take(7) {
            assert!(store.remove_share(si, ShareNum(i as u8)));
        }
        let reader = Arc::new(ChkReader::open(&grid, &cap).await.unwrap());
        assert_eq!(reader.read(0, cap.size).await.unwrap(), data);
        assert_eq!(reader.read(50_000, 10).await.unwrap(), data[50_000..50_010]);
        let missing = reader.verify_all_shares_with_progress(|_| {}).await;
        assert_eq!(missing.len(), 7, "{missing:?}");
        assert!(missing
            .iter()
            .all(|p| matches!(p.kind, ProblemKind::Missing)));
        assert!(stores[7].remove_share(si, ShareNum(7)));
        let reader = ChkReader::open(&grid, &cap).await.unwrap();
        match reader.read(0, 10).await {
            Err(EngineError::NotEnoughShares {
                have: 2, need: 3, ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn corrupt_shares_are_skipped_and_reported() {
        let data = data(50_000);
        let (grid, stores, cap, shares) = stored(&data, 9_999).await;
        let si = StorageIndex::from_bytes(cap.storage_index());
        let header = ParsedHeader::parse(&shares[0]).unwrap();
        let o = header.offsets;
        // A block of share 0 in segment 2, the block tree of share 1, the
        // UEB of share 2, the share hash chain of share 3, the header of 4.
        stores[0]
            .corrupt(si, ShareNum(0), o.data + 2 * 3333 + 5, 1)
            .unwrap();
        // Node 2, which a read of segment 0 needs (node 1 it computes).
        stores[1]
            .corrupt(si, ShareNum(1), o.block_hashes + 64 + 3, 1)
            .unwrap();
        stores[2]
            .corrupt(si, ShareNum(2), o.uri_extension + 10, 1)
            .unwrap();
        stores[3]
            .corrupt(si, ShareNum(3), o.share_hashes + 5, 1)
            .unwrap();
        stores[4].corrupt(si, ShareNum(4), 2, 1).unwrap();
        let reader = Arc::new(ChkReader::open(&grid, &cap).await.unwrap());
        let streamed: Vec<Bytes> = Arc::clone(&reader)
            .stream(0)
            .map(|p| p.unwrap())
            .collect()
            .await;
        assert_eq!(streamed.concat(), data);
        let bad: HashSet<u8> = reader
            .problems()
            .iter()
            .filter(|p| p.kind.is_corrupt())
            .filter_map(|p| p.share.map(|s| s.0))
            .collect();
        assert!(bad.contains(&0) && bad.contains(&1), "{bad:?}");
        let mut named: Vec<u8> = reader
            .verify_all_shares_with_progress(|_| {})
            .await
            .iter()
            .filter(|p| p.kind.is_corrupt())
            .filter_map(|p| p.share.map(|s| s.0))
            .collect();
        named.sort_unstable();
        assert_eq!(named, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_capability_of_another_file_finds_nothing_it_trusts() {
        let data = data(5000);
        let (grid, _, cap, _) = stored(&data, 1000).await;
        let mut wrong = cap.clone();
        wrong.ueb_hash[0] ^= 1;
        match ChkReader::open(&grid, &wrong).await {
            Err(EngineError::NotEnoughShares {
                have: 0, problems, ..
            }) => {
                assert!(problems.iter().all(|p| p.kind.is_corrupt()), "{problems:?}")
            }
            other => panic!("{other:?}"),
        }
        let mut other_size = cap.clone();
        other_size.size += 1;
        other_size.ueb_hash = cap.ueb_hash;
        assert!(ChkReader::open(&grid, &other_size).await.is_err());
    }

    #[test]
    fn lazy_tree_checks_paths_and_learns_their_nodes() {
        let leaves: Vec<Hash> = (0..5u8).map(|i| [i; 32]).collect();
        let full = hash_tree(&leaves);
        let mut tree = LazyTree::new(5, full[0]);
        let missing = tree.missing(3);
        let fetched: HashMap<usize, Hash> = missing.iter().map(|n| (*n, full[*n])).collect();
        assert!(!tree.verify(3, [9; 32], &fetched));
        assert!(tree.verify(3, leaves[3], &fetched));
        // Leaf 2 is leaf 3's sibling: nothing more to read.
        assert!(tree.missing(2).is_empty());
        assert!(tree.verify(2, leaves[2], &HashMap::new()));
        let mut lying = fetched.clone();
        let other = tree.missing(0);
        for n in &other {
            lying.insert(*n, [0; 32]);
        }
        assert!(!tree.verify(0, leaves[0], &lying));
        assert!(!tree.verify(7, leaves[0], &lying));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests
mod slow_tests {
    use super::*;
    use crate::grid::memory::MemoryStore;
    use crate::grid::{Fault, FaultSwitch, FaultyStore, ShareSecrets};

    /// Two data shares' servers freeze after the open: each segment is
    /// read around them after a hedge, and later segments go to prompt
    /// servers first, so a 20-segment read takes seconds (waiting for the
    /// 30 s time-outs would take minutes; the bound is generous).
    #[tokio::test]
    async fn frozen_servers_are_read_around_once() {
        let data: Vec<u8> = (0..60_000u32).map(|i| (i % 249) as u8).collect();
        let params = ChkParams::for_upload(data.len() as u64, 3, 10, 3_000).unwrap();
        let (shares, cap) = super::super::encode::encode_all([3; 16], params, &data).unwrap();
        let si = StorageIndex::from_bytes(cap.storage_index());
        let secrets = ShareSecrets {
            write_enabler: [1; 32],
            lease_renew: [2; 32],
            lease_cancel: [3; 32],
        };
        let mut switches = Vec::new();
        let mut servers: Vec<Arc<dyn ShareStore>> = Vec::new();
        for (i, share) in shares.iter().enumerate() {
            let store = MemoryStore::new(format!("mem-{i:02}"));
            let mut w = store
                .create_immutable(si, ShareNum(i as u8), share.len() as u64, &secrets)
                .await
                .unwrap();
            w.append(Bytes::from(share.clone())).await.unwrap();
            w.finish(share.len() as u64).await.unwrap();
            let switch = FaultSwitch::new(Fault::None);
            servers.push(Arc::new(FaultyStore::new(Arc::new(store), switch.clone())));
            switches.push(switch);
        }
        let grid = Grid::new(servers);
        let reader = Arc::new(ChkReader::open(&grid, &cap).await.unwrap());
        for switch in &switches[..2] {
            switch.set(Fault::Slow(Duration::from_secs(3600)));
        }
        let started = std::time::Instant::now();
        let got: Vec<Bytes> = Arc::clone(&reader)
            .stream(0)
            .map(|p| p.unwrap())
            .collect()
            .await;
        assert_eq!(got.concat(), data);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(60), "{took:?}");
        eprintln!("20 segments around 2 frozen servers: {took:?}");
    }
}
