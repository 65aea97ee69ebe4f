//! A store that fails on demand: a server that dies in the middle of an
//! upload, for tests of what the engine does then.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    GridError, GridResult, ShareInfo, ShareNum, ShareSecrets, ShareStore, ShareWriter, StorageIndex,
};

/// Wraps a store; each share it creates accepts `appends_ok` appends, then
/// fails every further one. Everything else passes through.
#[derive(Debug)]
pub struct FailingStore {
    inner: Arc<dyn ShareStore>,
    appends_ok: usize,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn ShareStore>, appends_ok: usize) -> Self {
        Self { inner, appends_ok }
    }
}

#[async_trait]
impl ShareStore for FailingStore {
    fn server_id(&self) -> &str {
        self.inner.server_id()
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
