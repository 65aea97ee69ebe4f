//! Shared helpers for the engine tests: grids of in-memory stores and a
//! store wrapper that fails on demand.

#![allow(dead_code)]

use std::ops::Range;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use griddav::grid::{
    Grid, GridError, GridResult, MemoryStore, ShareInfo, ShareNum, ShareSecrets, ShareStore,
    ShareWriter, StorageIndex,
};

pub fn memory_grid(count: usize) -> (Grid, Vec<Arc<MemoryStore>>) {
    let stores: Vec<Arc<MemoryStore>> = (0..count)
        .map(|i| Arc::new(MemoryStore::new(format!("mem-{i:02}"))))
        .collect();
    let grid = Grid::new(
        stores
            .iter()
            .map(|s| Arc::clone(s) as Arc<dyn ShareStore>)
            .collect(),
    );
    (grid, stores)
}

/// A grid of `servers` whose first `failing` fail every append after
/// their first `appends_ok`.
pub fn with_failing_servers(
    servers: Vec<Arc<dyn ShareStore>>,
    failing: usize,
    appends_ok: usize,
) -> Grid {
    Grid::new(
        servers
            .into_iter()
            .enumerate()
            .map(|(i, inner)| {
                if i < failing {
                    Arc::new(FailingStore::new(inner, appends_ok)) as Arc<dyn ShareStore>
                } else {
                    inner
                }
            })
            .collect(),
    )
}

/// Deterministic test content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Wraps a store; its writers fail every append after the first `appends_ok`.
#[derive(Debug)]
pub struct FailingStore {
    inner: Arc<dyn ShareStore>,
    appends_ok: usize,
    pub failures: AtomicUsize,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn ShareStore>, appends_ok: usize) -> Self {
        Self {
            inner,
            appends_ok,
            failures: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl ShareStore for FailingStore {
    fn server_id(&self) -> &str {
        self.inner.server_id()
    }

    async fn create(
        &self,
        si: StorageIndex,
        share: ShareNum,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        let inner = self.inner.create(si, share, secrets).await?;
        Ok(Box::new(FailingWriter {
            inner,
            server: self.server_id().to_owned(),
            appends_left: self.appends_ok,
        }))
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

#[derive(Debug)]
struct FailingWriter {
    inner: Box<dyn ShareWriter>,
    server: String,
    appends_left: usize,
}

#[async_trait]
impl ShareWriter for FailingWriter {
    async fn append(&mut self, data: Bytes) -> GridResult<()> {
        if self.appends_left == 0 {
            return Err(GridError::Server {
                server: self.server.clone(),
                message: "injected failure".into(),
            });
        }
        self.appends_left -= 1;
        self.inner.append(data).await
    }

    async fn finish(self: Box<Self>, len: u64) -> GridResult<()> {
        self.inner.finish(len).await
    }

    async fn abort(self: Box<Self>) -> GridResult<()> {
        self.inner.abort().await
    }
}
