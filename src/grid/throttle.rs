//! A store whose writes pass through a link of limited bandwidth, shared by
//! every store wrapped with it: a slow grid for benchmarks and tests.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{GridResult, ShareInfo, ShareNum, ShareSecrets, ShareStore, ShareWriter, StorageIndex};

/// A link that carries `rate` bytes per second, one append after another.
pub struct Link {
    rate: f64,
    next_free: Mutex<Option<Instant>>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Link({} B/s)", self.rate)
    }
}

impl Link {
    /// A link of `bytes_per_second` (at least 1), shared by the stores given it.
    pub fn new(bytes_per_second: f64) -> Arc<Link> {
        Arc::new(Link {
            rate: bytes_per_second.max(1.0),
            next_free: Mutex::new(None),
        })
    }

    /// Waits until `bytes` more have crossed the link.
    async fn pass(&self, bytes: usize) {
        let done = {
            // Holds only an Instant: a poisoned lock still has a usable value.
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = next.map_or(now, |t| t.max(now));
            let done = start + Duration::from_secs_f64(bytes as f64 / self.rate);
            *next = Some(done);
            done
        };
        tokio::time::sleep_until(done).await;
    }
}

/// A [`ShareStore`] whose appends cross a [`Link`]; reads, listings and
/// deletes go straight to the inner store.
#[derive(Debug)]
pub struct ThrottledStore {
    inner: Arc<dyn ShareStore>,
    link: Arc<Link>,
}

impl ThrottledStore {
    /// Wraps `inner` so that its appends cross `link`.
    pub fn new(inner: Arc<dyn ShareStore>, link: Arc<Link>) -> Self {
        Self { inner, link }
    }
}

#[derive(Debug)]
struct ThrottledWriter {
    inner: Box<dyn ShareWriter>,
    link: Arc<Link>,
}

#[async_trait]
impl ShareStore for ThrottledStore {
    fn server_id(&self) -> &str {
        self.inner.server_id()
    }

    async fn put_record(
        &self,
        slot: StorageIndex,
        data: Bytes,
        secrets: &ShareSecrets,
    ) -> GridResult<()> {
        self.inner.put_record(slot, data, secrets).await
    }

    async fn get_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        self.inner.get_record(slot).await
    }

    async fn free_space(&self) -> Option<super::FreeSpace> {
        self.inner.free_space().await
    }

    async fn renew_lease(
        &self,
        si: super::StorageIndex,
        secrets: &super::ShareSecrets,
    ) -> super::GridResult<bool> {
        self.inner.renew_lease(si, secrets).await
    }

    fn identity(&self) -> &[u8] {
        self.inner.identity()
    }

    async fn create(
        &self,
        si: StorageIndex,
        share: ShareNum,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        let inner = self.inner.create(si, share, secrets).await?;
        Ok(Box::new(ThrottledWriter {
            inner,
            link: Arc::clone(&self.link),
        }))
    }

    async fn create_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        len: u64,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        let inner = self.inner.create_immutable(si, share, len, secrets).await?;
        Ok(Box::new(ThrottledWriter {
            inner,
            link: Arc::clone(&self.link),
        }))
    }

    async fn read_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        self.inner.read_immutable(si, share, range).await
    }

    async fn list_immutable(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        self.inner.list_immutable(si).await
    }

    async fn delete_immutable(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<bool> {
        self.inner.delete_immutable(si, secrets).await
    }

    async fn read(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        self.inner.read(si, share, range).await
    }

    async fn list(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        self.inner.list(si).await
    }

    async fn delete(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<()> {
        self.inner.delete(si, secrets).await
    }
}

#[async_trait]
impl ShareWriter for ThrottledWriter {
    async fn append(&mut self, data: Bytes) -> GridResult<()> {
        self.link.pass(data.len()).await;
        self.inner.append(data).await
    }

    async fn finish(self: Box<Self>, len: u64) -> GridResult<()> {
        self.inner.finish(len).await
    }

    async fn abort(self: Box<Self>) -> GridResult<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::MemoryStore;

    #[tokio::test]
    async fn wrappers_report_the_free_space_of_the_store_they_wrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local: Arc<dyn ShareStore> =
            Arc::new(crate::grid::LocalStore::open(dir.path(), "l").expect("open"));
        let inner = local
            .free_space()
            .await
            .expect("a local store knows its free space");
        let wrapped: [Arc<dyn ShareStore>; 3] = [
            Arc::new(ThrottledStore::new(Arc::clone(&local), Link::new(1e9))),
            Arc::new(crate::grid::FailingStore::new(Arc::clone(&local), 0)),
            Arc::new(crate::grid::FaultyStore::new(
                Arc::clone(&local),
                crate::grid::FaultSwitch::new(crate::grid::Fault::None),
            )),
        ];
        for store in wrapped {
            let space = store.free_space().await.expect("forwarded");
            // The same volume; its free bytes may move between the calls.
            assert_eq!(space.volume, inner.volume);
        }
    }

    #[tokio::test]
    async fn passes_the_conformance_suite_and_paces_appends() {
        let link = Link::new(1e9);
        let store = ThrottledStore::new(Arc::new(MemoryStore::new("m")), Arc::clone(&link));
        crate::grid::conformance::run_all(&store).await;

        let slow = ThrottledStore::new(Arc::new(MemoryStore::new("s")), Link::new(1_000_000.0));
        let si = StorageIndex::from_bytes([1; 16]);
        let secrets = crate::engine::crypto::FileKey::from_bytes([2; 32]).share_secrets(b"test");
        let mut writer = slow
            .create(si, ShareNum(0), &secrets)
            .await
            .expect("create");
        let started = std::time::Instant::now();
        for _ in 0..4 {
            writer
                .append(Bytes::from(vec![0u8; 50_000]))
                .await
                .expect("append");
        }
        // 200 kB at 1 MB/s.
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
        writer.finish(200_000).await.expect("finish");
    }
}
