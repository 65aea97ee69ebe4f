//! Stores that fail on demand: a server that dies in the middle of an
//! upload, or one that lies, stalls, floods or goes away for a while on
//! reads, for tests of what the engine does then.

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
    /// Wraps `inner`; `appends_ok` appends succeed per share.
    pub fn new(inner: Arc<dyn ShareStore>, appends_ok: usize) -> Self {
        Self { inner, appends_ok }
    }
}

#[async_trait]
impl ShareStore for FailingStore {
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
        Ok(Box::new(FailingWriter {
            inner,
            server: self.server_id().to_owned(),
            appends_left: self.appends_ok,
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
        Ok(Box::new(FailingWriter {
            inner,
            server: self.server_id().to_owned(),
            appends_left: self.appends_ok,
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
            return Err(GridError::Io {
                server: self.server.clone(),
                operation: "append",
                source: std::io::Error::other("injected failure"),
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

/// How a [`FaultyStore`] misbehaves when it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passes everything through.
    None,
    /// Every read returns bytes of the right length but the wrong content
    /// (a lying or rotting server).
    Garbage,
    /// Reads of at least this many bytes (blocks, not hashes) return the
    /// wrong content: a server whose blocks fail their hashes while its
    /// trees pass.
    GarbageFrom(u64),
    /// Listings name every share twice.
    DuplicateListing,
    /// Every read returns the bytes asked for followed by as many again,
    /// as a server that sends more than it was asked would.
    TooLong,
    /// Every read, listing and create waits this long before answering
    /// (a server that answers after 50 s, or one that is merely slow).
    Slow(std::time::Duration),
    /// Every request fails at once, as an unreachable server's would, until
    /// the fault is changed back (an outage that ends).
    Down,
}

/// Wraps a store and misbehaves as its current [`Fault`] says; the fault
/// can be changed at any time through a [`FaultSwitch`], so a test can end
/// an outage or make a server slow halfway through a read.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ShareStore>,
    switch: FaultSwitch,
}

/// Changes the fault of the [`FaultyStore`]s it was given to.
#[derive(Clone, Debug)]
pub struct FaultSwitch(Arc<std::sync::Mutex<Fault>>);

impl FaultSwitch {
    /// A switch set to `fault`.
    pub fn new(fault: Fault) -> Self {
        Self(Arc::new(std::sync::Mutex::new(fault)))
    }

    /// Changes the fault of every store on this switch, from their next request.
    pub fn set(&self, fault: Fault) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    /// The fault now in force.
    pub fn get(&self) -> Fault {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FaultyStore {
    /// Wraps `inner`, misbehaving as `switch` says.
    pub fn new(inner: Arc<dyn ShareStore>, switch: FaultSwitch) -> Self {
        Self { inner, switch }
    }

    /// Applies the delay or outage of the current fault.
    async fn before(&self) -> GridResult<Fault> {
        let fault = self.switch.get();
        match fault {
            Fault::Slow(delay) => tokio::time::sleep(delay).await,
            Fault::Down => {
                return Err(GridError::Io {
                    server: self.server_id().to_owned(),
                    operation: "injected outage",
                    source: std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the server is down",
                    ),
                })
            }
            _ => {}
        }
        Ok(fault)
    }
}

#[async_trait]
impl ShareStore for FaultyStore {
    fn server_id(&self) -> &str {
        self.inner.server_id()
    }

    async fn put_record(
        &self,
        slot: StorageIndex,
        data: Bytes,
        secrets: &ShareSecrets,
    ) -> GridResult<()> {
        self.before().await?;
        self.inner.put_record(slot, data, secrets).await
    }

    async fn get_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        self.before().await?;
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
        self.before().await?;
        self.inner.create(si, share, secrets).await
    }

    async fn create_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        len: u64,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        self.before().await?;
        self.inner.create_immutable(si, share, len, secrets).await
    }

    async fn read_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        self.before().await?;
        self.inner.read_immutable(si, share, range).await
    }

    async fn list_immutable(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        self.before().await?;
        self.inner.list_immutable(si).await
    }

    async fn delete_immutable(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<bool> {
        self.before().await?;
        self.inner.delete_immutable(si, secrets).await
    }

    async fn read(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        let fault = self.before().await?;
        let len = range.end.saturating_sub(range.start);
        let bytes = self.inner.read(si, share, range).await?;
        let garbage =
            |bytes: Bytes| -> Bytes { bytes.iter().map(|b| b ^ 0xa5).collect::<Vec<u8>>().into() };
        Ok(match fault {
            Fault::Garbage => garbage(bytes),
            Fault::GarbageFrom(at_least) if len >= at_least => garbage(bytes),
            Fault::TooLong => {
                let mut longer = bytes.to_vec();
                longer.extend_from_slice(&bytes);
                longer.push(0);
                longer.into()
            }
            _ => bytes,
        })
    }

    async fn list(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        let fault = self.before().await?;
        let mut shares = self.inner.list(si).await?;
        if fault == Fault::DuplicateListing {
            shares.extend(shares.clone());
        }
        Ok(shares)
    }

    async fn delete(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<()> {
        self.before().await?;
        self.inner.delete(si, secrets).await
    }
}
