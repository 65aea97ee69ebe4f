//! A storage server in memory, for tests and benchmarks.
//!
//! Appends keep the caller's [`Bytes`] chunks as they are (no copy), so a
//! benchmark measures the engine and not this store; a read returns a slice
//! of one chunk when the range lies inside it and assembles a copy only when
//! the range spans chunks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{
    GridError, GridResult, ShareInfo, ShareNum, ShareSecrets, ShareStore, ShareWriter, StorageIndex,
};

type Key = (StorageIndex, ShareNum);

/// An in-memory [`ShareStore`]. Clones share the same shares, so a test can
/// keep a handle for inspection ([`MemoryStore::corrupt`], ...) while the
/// engine holds another as `Arc<dyn ShareStore>`.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

// By hand: a derived Debug would print every byte stored whenever a Grid or
// an error context is printed.
impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("server_id", &self.inner.server_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    server_id: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    finished: HashMap<Key, Share>,
    /// Shares under construction. Their bytes live in the writer until
    /// `finish`, which keeps them invisible without any extra bookkeeping.
    partial: HashSet<Key>,
    /// The write enabler of each storage index, fixed by its first create
    /// and checked like Tahoe checks a slot's: so the engine's per-server
    /// secrets (and the fallback for older ones) are tested without Tahoe.
    enablers: HashMap<StorageIndex, [u8; 32]>,
    /// Root records by slot, with the write enabler their first write set.
    records: HashMap<StorageIndex, (Bytes, [u8; 32])>,
}

/// A finished share: its chunks and where each one starts.
#[derive(Default)]
struct Share {
    chunks: Vec<Bytes>,
    /// `starts[i]` is the offset of `chunks[i]` in the share; strictly
    /// increasing because empty chunks are never stored.
    starts: Vec<u64>,
    len: u64,
}

impl Share {
    fn from_chunks(chunks: Vec<Bytes>) -> Self {
        let mut share = Share::default();
        for chunk in chunks {
            share.push(chunk);
        }
        share
    }

    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.starts.push(self.len);
        self.len += chunk.len() as u64;
        self.chunks.push(chunk);
    }

    /// Index of the chunk holding byte `offset`, which must be `< len`.
    fn chunk_at(&self, offset: u64) -> usize {
        // The first chunk starts at 0 <= offset, so the point is >= 1.
        self.starts.partition_point(|&start| start <= offset) - 1
    }

    /// The bytes of `range`, which the caller has checked lies within `len`.
    fn read(&self, range: Range<u64>) -> Bytes {
        if range.is_empty() {
            return Bytes::new();
        }
        let first = self.chunk_at(range.start);
        let chunk_start = self.starts[first];
        let chunk = &self.chunks[first];
        if range.end <= chunk_start + chunk.len() as u64 {
            // Offsets within one in-memory chunk fit in usize.
            return chunk
                .slice((range.start - chunk_start) as usize..(range.end - chunk_start) as usize);
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for (chunk, &start) in self.chunks[first..].iter().zip(&self.starts[first..]) {
            if start >= range.end {
                break;
            }
            let from = range.start.saturating_sub(start) as usize;
            let to = (range.end - start).min(chunk.len() as u64) as usize;
            out.extend_from_slice(&chunk[from..to]);
        }
        out.freeze()
    }
}

/// A grid of `count` memory stores named `mem-00`, `mem-01`, ..., and the
/// stores themselves, so a test can corrupt or remove what they hold.
#[cfg(test)]
pub(crate) fn memory_grid(count: usize) -> (super::Grid, Vec<MemoryStore>) {
    let stores: Vec<MemoryStore> = (0..count)
        .map(|i| MemoryStore::new(format!("mem-{i:02}")))
        .collect();
    let grid = super::Grid::new(
        stores
            .iter()
            .map(|s| Arc::new(s.clone()) as Arc<dyn ShareStore>)
            .collect(),
    );
    (grid, stores)
}

impl MemoryStore {
    /// An empty store named `server_id`.
    pub fn new(server_id: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                server_id: server_id.into(),
                state: Mutex::default(),
            }),
        }
    }

    /// Finished shares plus shares under construction, over every storage
    /// index: lets a test check that an aborted or dropped upload left
    /// nothing behind.
    pub fn share_count_including_partial(&self) -> usize {
        let state = self.inner.lock();
        state.finished.len() + state.partial.len()
    }

    /// Flips the bits of `xor_mask` in byte `byte_offset` of a finished
    /// share, as a failing disk or a malicious server would.
    pub fn corrupt(
        &self,
        si: StorageIndex,
        share: ShareNum,
        byte_offset: u64,
        xor_mask: u8,
    ) -> GridResult<()> {
        let mut state = self.inner.lock();
        let stored = state
            .finished
            .get_mut(&(si, share))
            .ok_or_else(|| self.inner.not_found(si, share))?;
        if byte_offset >= stored.len {
            return Err(GridError::OutOfRange {
                server: self.inner.server_id.clone(),
                si,
                share,
                range: byte_offset..byte_offset.saturating_add(1),
                len: stored.len,
            });
        }
        let index = stored.chunk_at(byte_offset);
        // Chunks are shared with the writer's caller; copy the one we change
        // so the caller's buffer stays intact.
        let mut changed = stored.chunks[index].to_vec();
        changed[(byte_offset - stored.starts[index]) as usize] ^= xor_mask;
        stored.chunks[index] = Bytes::from(changed);
        Ok(())
    }

    /// Removes a finished share, as a server that lost a disk would; returns
    /// whether it existed.
    pub fn remove_share(&self, si: StorageIndex, share: ShareNum) -> bool {
        self.inner.lock().finished.remove(&(si, share)).is_some()
    }
}

impl Inner {
    /// The state is only changed by single insert/remove calls that cannot
    /// panic half-way, so a poisoned lock still guards consistent data.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refused(&self, operation: &'static str) -> GridError {
        GridError::Refused {
            server: self.server_id.clone(),
            operation,
        }
    }

    fn not_found(&self, si: StorageIndex, share: ShareNum) -> GridError {
        GridError::NotFound {
            server: self.server_id.clone(),
            si,
            share,
        }
    }
}

#[async_trait]
impl ShareStore for MemoryStore {
    fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    async fn put_record(
        &self,
        slot: StorageIndex,
        data: Bytes,
        secrets: &ShareSecrets,
    ) -> GridResult<()> {
        super::check_record_len(&self.inner.server_id, data.len())?;
        let mut state = self.inner.lock();
        if let Some((_, enabler)) = state.records.get(&slot) {
            if *enabler != secrets.write_enabler {
                return Err(self.inner.refused("put_record"));
            }
        }
        state.records.insert(slot, (data, secrets.write_enabler));
        Ok(())
    }

    async fn get_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        Ok(self
            .inner
            .lock()
            .records
            .get(&slot)
            .map(|(data, _)| data.clone()))
    }

    async fn create(
        &self,
        si: StorageIndex,
        share: ShareNum,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        let key = (si, share);
        let mut state = self.inner.lock();
        let enabler = *state.enablers.entry(si).or_insert(secrets.write_enabler);
        if enabler != secrets.write_enabler {
            return Err(self.inner.refused("create"));
        }
        if state.finished.contains_key(&key) || !state.partial.insert(key) {
            return Err(GridError::AlreadyExists {
                server: self.inner.server_id.clone(),
                si,
                share,
            });
        }
        Ok(Box::new(MemoryWriter {
            store: Arc::clone(&self.inner),
            key,
            chunks: Vec::new(),
            written: 0,
            done: false,
        }))
    }

    async fn read(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        let state = self.inner.lock();
        let stored = state
            .finished
            .get(&(si, share))
            .ok_or_else(|| self.inner.not_found(si, share))?;
        if range.start > range.end || range.end > stored.len {
            return Err(GridError::OutOfRange {
                server: self.inner.server_id.clone(),
                si,
                share,
                range,
                len: stored.len,
            });
        }
        Ok(stored.read(range))
    }

    async fn list(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        let state = self.inner.lock();
        Ok(state
            .finished
            .iter()
            .filter(|((key_si, _), _)| *key_si == si)
            .map(|(&(_, share), stored)| ShareInfo {
                share,
                len: stored.len,
            })
            .collect())
    }

    async fn delete(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<()> {
        let mut state = self.inner.lock();
        if let Some(enabler) = state.enablers.get(&si) {
            if *enabler != secrets.write_enabler {
                return Err(self.inner.refused("delete"));
            }
        }
        state.finished.retain(|(key_si, _), _| *key_si != si);
        if !state.partial.iter().any(|(key_si, _)| *key_si == si) {
            state.enablers.remove(&si);
        }
        Ok(())
    }
}

struct MemoryWriter {
    store: Arc<Inner>,
    key: Key,
    chunks: Vec<Bytes>,
    written: u64,
    /// Set once finished or aborted: Drop then has nothing to clean up.
    done: bool,
}

impl fmt::Debug for MemoryWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryWriter")
            .field("server_id", &self.store.server_id)
            .field("si", &self.key.0)
            .field("share", &self.key.1)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ShareWriter for MemoryWriter {
    async fn append(&mut self, data: Bytes) -> GridResult<()> {
        self.written += data.len() as u64;
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, len: u64) -> GridResult<()> {
        let (si, share) = self.key;
        if len != self.written {
            return Err(GridError::LengthMismatch {
                server: self.store.server_id.clone(),
                si,
                share,
                written: self.written,
                expected: len,
            });
        }
        let stored = Share::from_chunks(std::mem::take(&mut self.chunks));
        let mut state = self.store.lock();
        state.partial.remove(&self.key);
        state.finished.insert(self.key, stored);
        self.done = true;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> GridResult<()> {
        self.store.lock().partial.remove(&self.key);
        self.done = true;
        Ok(())
    }
}

impl Drop for MemoryWriter {
    fn drop(&mut self) {
        if !self.done {
            self.store.lock().partial.remove(&self.key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::grid::conformance;

    #[tokio::test]
    async fn conformance() {
        let store = MemoryStore::new("memory-0");
        conformance::run_all(&store).await;
        // Every writer was finished, aborted or dropped.
        assert!(store.inner.lock().partial.is_empty());
    }

    #[tokio::test]
    async fn a_record_is_replaced_only_with_its_write_enabler() {
        let store = MemoryStore::new("memory-0");
        let slot = conformance::random_si();
        let mine = conformance::secrets();
        store
            .put_record(slot, Bytes::from_static(b"one"), &mine)
            .await
            .unwrap();
        let mut other = mine.clone();
        other.write_enabler = [0x44; 32];
        assert!(matches!(
            store
                .put_record(slot, Bytes::from_static(b"two"), &other)
                .await,
            Err(GridError::Refused { .. })
        ));
        assert_eq!(
            store.get_record(slot).await.unwrap(),
            Some(Bytes::from_static(b"one"))
        );
    }

    fn secrets() -> ShareSecrets {
        ShareSecrets {
            write_enabler: [1; 32],
            lease_renew: [2; 32],
            lease_cancel: [3; 32],
        }
    }

    async fn put(store: &MemoryStore, si: StorageIndex, share: ShareNum, parts: &[&[u8]]) {
        let mut writer = store.create(si, share, &secrets()).await.unwrap();
        let mut len = 0;
        for part in parts {
            writer.append(Bytes::copy_from_slice(part)).await.unwrap();
            len += part.len() as u64;
        }
        writer.finish(len).await.unwrap();
    }

    #[tokio::test]
    async fn helpers_count_corrupt_and_remove() {
        let store = MemoryStore::new("memory-0");
        let si = StorageIndex::from_bytes([7; 16]);
        put(&store, si, ShareNum(0), &[b"abc", b"def"]).await;
        let partial = store.create(si, ShareNum(1), &secrets()).await.unwrap();
        assert_eq!(store.share_count_including_partial(), 2);
        drop(partial);
        assert_eq!(store.share_count_including_partial(), 1);

        store.corrupt(si, ShareNum(0), 4, 0x20).unwrap();
        let read = store.read(si, ShareNum(0), 0..6).await.unwrap();
        assert_eq!(&read[..], b"abcdEf");
        assert!(matches!(
            store.corrupt(si, ShareNum(0), 6, 1),
            Err(GridError::OutOfRange { .. })
        ));
        assert!(matches!(
            store.corrupt(si, ShareNum(1), 0, 1),
            Err(GridError::NotFound { .. })
        ));

        assert!(store.remove_share(si, ShareNum(0)));
        assert!(!store.remove_share(si, ShareNum(0)));
        assert_eq!(store.share_count_including_partial(), 0);
    }

    #[tokio::test]
    async fn corrupt_does_not_touch_the_callers_buffer() {
        let store = MemoryStore::new("memory-0");
        let si = StorageIndex::from_bytes([8; 16]);
        let data = Bytes::from_static(b"0123456789");
        let mut writer = store.create(si, ShareNum(0), &secrets()).await.unwrap();
        writer.append(data.clone()).await.unwrap();
        writer.finish(10).await.unwrap();
        store.corrupt(si, ShareNum(0), 0, 0xff).unwrap();
        assert_eq!(&data[..], b"0123456789");
        let read = store.read(si, ShareNum(0), 0..1).await.unwrap();
        assert_eq!(read[0], b'0' ^ 0xff);
    }

    #[tokio::test]
    async fn appends_and_reads_within_a_chunk_do_not_copy() {
        let store = MemoryStore::new("memory-0");
        let si = StorageIndex::from_bytes([9; 16]);
        let data = Bytes::from(vec![5u8; 4096]);
        let mut writer = store.create(si, ShareNum(0), &secrets()).await.unwrap();
        writer.append(data.clone()).await.unwrap();
        writer.finish(4096).await.unwrap();
        let read = store.read(si, ShareNum(0), 100..200).await.unwrap();
        assert_eq!(read.as_ptr(), data[100..].as_ptr());
        assert!(
            format!("{store:?}").len() < 100,
            "Debug must not dump shares"
        );
    }

    proptest! {
        /// Reads over arbitrary chunkings equal slices of the concatenation.
        #[test]
        fn chunked_reads_match_contiguous(
            parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..8),
            a in 0usize..200,
            b in 0usize..200,
        ) {
            let whole: Vec<u8> = parts.concat();
            let share = Share::from_chunks(parts.into_iter().map(Bytes::from).collect());
            prop_assert_eq!(share.len, whole.len() as u64);
            let (start, end) = (a.min(b).min(whole.len()), a.max(b).min(whole.len()));
            let read = share.read(start as u64..end as u64);
            prop_assert_eq!(&read[..], &whole[start..end]);
        }
    }
}
