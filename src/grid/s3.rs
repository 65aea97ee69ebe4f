//! A storage server that is an S3 bucket, or a prefix in one, through the
//! `object_store` crate: AWS, Garage, Ceph RGW, MinIO, Backblaze B2 and any
//! other S3-compatible service.
//!
//! Layout under the configured prefix:
//!
//! ```text
//!   shares/<si>/<share number>   finished shares (si in base32)
//!   records/<slot>               root records (the namespace copies' index)
//! ```
//!
//! A share becomes an object only when it is finished, so readers never see
//! a short one. Its bytes are gathered into parts of `part_size` (at least
//! S3's 5 MiB minimum): a share smaller than one part goes up as one PUT at
//! `finish`; a larger one streams as a multipart upload, one part in flight
//! while the next fills, and `finish` completes it. `abort`, a failed write
//! and dropping an unfinished writer abort the multipart upload, so no
//! parts stay behind to be paid for.
//!
//! The part buffers are leased from the gateway's [`BufferPool`], which the
//! engine's coded segments share, so `upload_memory_mib` bounds both: a
//! writer leases one part at `create` and keeps it until it ends. `create`
//! waits for that room no longer than the time limit, and fails the share
//! if none came free.
//!
//! S3 has no "create if absent" that works for multipart uploads on every
//! service, so `create` refuses a share that already exists as an object or
//! is being written through this store; two gateways writing the same
//! storage index at once are not guarded against (one gateway per grid, as
//! for local directories).
//!
//! Every request has a time limit (`timeout`), retried at most twice within
//! it, so a dead S3 server fails its shares in seconds and the upload goes
//! on with the others.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{
    BufferLease, BufferPool, GridError, GridResult, ShareInfo, ShareNum, ShareSecrets, ShareStore,
    ShareWriter, StorageIndex,
};

/// S3's smallest part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;

/// More objects than any storage index can have shares: a listing that
/// goes on past this is the server's fault, not an allocation.
const MAX_LISTED: usize = 1024;

/// Where one S3 server is and how to reach it.
#[derive(Clone)]
pub struct S3Options {
    /// `http://host:port` for S3-compatible services; `None` for AWS.
    pub endpoint: Option<String>,
    /// The bucket every object of this server goes in.
    pub bucket: String,
    /// Prepended to every object name (`griddav/`); empty for the bucket's
    /// root.
    pub prefix: String,
    /// The region requests are signed for.
    pub region: String,
    /// The key id requests are signed with.
    pub access_key_id: String,
    /// The secret requests are signed with; never logged.
    pub secret_access_key: String,
    /// Plain `http://` endpoints are refused unless this is set.
    pub allow_http: bool,
    /// Bytes gathered per part of a multipart upload (at least 5 MiB).
    pub part_size: usize,
    /// How long one request may take, retries included.
    pub timeout: Duration,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("part_size", &self.part_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A [`ShareStore`] keeping its shares as objects in an S3 bucket. Cheap to
/// clone; clones are the same store.
#[derive(Clone, Debug)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    server_id: String,
    prefix: String,
    part_size: usize,
    timeout: Duration,
    pool: Option<BufferPool>,
    /// Shares being written through this store: S3 cannot refuse a second
    /// writer of the same object, so this store does.
    writing: Mutex<HashSet<(StorageIndex, ShareNum)>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("server_id", &self.server_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store for `options`, named `server_id`. Builds the client only: no
    /// request is sent until the store is used. Part buffers are leased
    /// from `pool` when given.
    pub fn new(
        options: S3Options,
        server_id: impl Into<String>,
        pool: Option<BufferPool>,
    ) -> GridResult<Self> {
        let server_id = server_id.into();
        install_crypto_provider();
        let client_options = ClientOptions::new()
            .with_allow_http(options.allow_http)
            .with_timeout(options.timeout)
            .with_connect_timeout(options.timeout.min(Duration::from_secs(10)));
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: options.timeout,
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(&options.secret_access_key)
            .with_allow_http(options.allow_http)
            .with_client_options(client_options)
            .with_retry(retry);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        builder = builder.with_http_connector(RangeStatusConnector);
        let store = builder.build().map_err(|source| GridError::Backend {
            server: server_id.clone(),
            source: Box::new(source),
        })?;
        Ok(Self::with_object_store(
            Arc::new(store),
            server_id,
            options.prefix,
            options.part_size,
            options.timeout,
            pool,
        ))
    }

    /// A store on any [`ObjectStore`] (tests use this to put a fault
    /// between the store and the server).
    pub fn with_object_store(
        store: Arc<dyn ObjectStore>,
        server_id: String,
        prefix: String,
        part_size: usize,
        timeout: Duration,
        pool: Option<BufferPool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                server_id,
                prefix,
                part_size: part_size.max(MIN_PART_SIZE),
                timeout,
                pool,
                writing: Mutex::new(HashSet::new()),
            }),
        }
    }
}

/// reqwest is built without a crypto provider of its own: TLS to S3 uses
/// ring, like the Tahoe backend, as the process default. Installing it
/// twice (a second store) is harmless; another provider installed first
/// by the embedding program is kept.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// reqwest, with one repair to the answers: a ranged GET answered `200`
/// with a `Content-Range` header is taken as the `206` it is. rclone's
/// `serve s3` (gofakes3) answers ranges that way, and object_store refuses
/// such answers outright. The range itself is still checked against what
/// was asked for (object_store parses `Content-Range`, and
/// [`S3Store::read`] counts the bytes).
#[derive(Debug)]
struct RangeStatusConnector;

impl HttpConnector for RangeStatusConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(RangeStatusService { inner }))
    }
}

#[derive(Debug)]
struct RangeStatusService {
    inner: HttpClient,
}

#[async_trait]
impl HttpService for RangeStatusService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let ranged = request.headers().contains_key(http::header::RANGE);
        let mut response = self.inner.execute(request).await?;
        if ranged
            && response.status() == http::StatusCode::OK
            && response.headers().contains_key(http::header::CONTENT_RANGE)
        {
            *response.status_mut() = http::StatusCode::PARTIAL_CONTENT;
        }
        Ok(response)
    }
}

impl Inner {
    fn si_prefix(&self, si: StorageIndex) -> ObjectPath {
        ObjectPath::from(format!("{}shares/{si}/", self.prefix))
    }

    fn record_path(&self, slot: StorageIndex) -> ObjectPath {
        ObjectPath::from(format!("{}records/{slot}", self.prefix))
    }

    fn share_path(&self, si: StorageIndex, share: ShareNum) -> ObjectPath {
        ObjectPath::from(format!("{}shares/{si}/{}", self.prefix, share.0))
    }

    fn error(&self, source: object_store::Error) -> GridError {
        GridError::Backend {
            server: self.server_id.clone(),
            source: Box::new(source),
        }
    }

    /// A failure of `operation` on this server that S3 did not report
    /// itself: a time limit passed, an answer fell short.
    fn failed(
        &self,
        operation: &'static str,
        kind: std::io::ErrorKind,
        message: String,
    ) -> GridError {
        GridError::Io {
            server: self.server_id.clone(),
            operation,
            source: std::io::Error::new(kind, message),
        }
    }

    fn timed_out(&self, operation: &'static str) -> GridError {
        self.failed(
            operation,
            std::io::ErrorKind::TimedOut,
            format!("no answer within {:?}", self.timeout),
        )
    }

    /// No part buffer came free in the shared pool within the time limit.
    fn no_part_room(&self) -> GridError {
        self.failed(
            "create",
            std::io::ErrorKind::TimedOut,
            format!(
                "no room for a {} MiB part buffer in upload_memory_mib within {:?}",
                self.part_size >> 20,
                self.timeout
            ),
        )
    }

    /// `work` within the store's time limit.
    async fn timed<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> GridResult<object_store::Result<T>> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| self.timed_out(operation))
    }

    /// The length of a finished share, or `NotFound`.
    async fn share_len(&self, si: StorageIndex, share: ShareNum) -> GridResult<u64> {
        match self
            .timed("head", self.store.head(&self.share_path(si, share)))
            .await?
        {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(self.not_found(si, share)),
            Err(e) => Err(self.error(e)),
        }
    }

    fn not_found(&self, si: StorageIndex, share: ShareNum) -> GridError {
        GridError::NotFound {
            server: self.server_id.clone(),
            si,
            share,
        }
    }

    fn out_of_range(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
        len: u64,
    ) -> GridError {
        GridError::OutOfRange {
            server: self.server_id.clone(),
            si,
            share,
            range,
            len,
        }
    }

    fn stop_writing(&self, si: StorageIndex, share: ShareNum) {
        if let Ok(mut writing) = self.writing.lock() {
            writing.remove(&(si, share));
        }
    }
}

#[async_trait]
impl ShareStore for S3Store {
    fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    async fn create(
        &self,
        si: StorageIndex,
        share: ShareNum,
        _secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        let inner = &self.inner;
        {
            let mut writing = inner.writing.lock().map_err(|_| GridError::Io {
                server: inner.server_id.clone(),
                operation: "create",
                source: std::io::Error::other("a writer panicked"),
            })?;
            if !writing.insert((si, share)) {
                return Err(GridError::AlreadyExists {
                    server: inner.server_id.clone(),
                    si,
                    share,
                });
            }
        }
        // From here on the writer owns the claim: dropping it (on any error
        // below too) releases it.
        let mut writer = S3Writer {
            inner: Arc::clone(inner),
            si,
            share,
            path: inner.share_path(si, share),
            buffer: Vec::new(),
            buffered: 0,
            written: 0,
            upload: None,
            part_in_flight: None,
            lease: None,
            ended: false,
        };
        match inner.share_len(si, share).await {
            Ok(_) => {
                return Err(GridError::AlreadyExists {
                    server: inner.server_id.clone(),
                    si,
                    share,
                })
            }
            Err(GridError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if let Some(pool) = &inner.pool {
            // Waited for no longer than a request: uploads and repairs
            // lease their writers' parts one at a time, so two of them
            // short of room could otherwise each hold some and wait on the
            // other for ever. The share fails; the upload goes on with the
            // others, or fails whole if too few are left.
            match tokio::time::timeout(inner.timeout, pool.lease(inner.part_size as u64)).await {
                Ok(lease) => writer.lease = lease,
                Err(_) => return Err(inner.no_part_room()),
            }
        }
        Ok(Box::new(writer))
    }

    async fn read(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        let inner = &self.inner;
        if range.start >= range.end {
            // Nothing to fetch, but the share must exist and hold the range.
            let len = inner.share_len(si, share).await?;
            if range.start > range.end || range.end > len {
                return Err(inner.out_of_range(si, share, range, len));
            }
            return Ok(Bytes::new());
        }
        let path = inner.share_path(si, share);
        let answer = inner
            .timed("read", inner.store.get_range(&path, range.clone()))
            .await?;
        match answer {
            Ok(bytes) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => Err(inner.not_found(si, share)),
            // A short answer or a refused range: the share's length says
            // whose fault it is.
            other => {
                let len = inner.share_len(si, share).await?;
                if range.end > len {
                    return Err(inner.out_of_range(si, share, range, len));
                }
                match other {
                    Err(e) => Err(inner.error(e)),
                    Ok(bytes) => Err(inner.failed(
                        "read",
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "asked for {} bytes, got {}",
                            range.end - range.start,
                            bytes.len()
                        ),
                    )),
                }
            }
        }
    }

    async fn list(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        let inner = &self.inner;
        let prefix = inner.si_prefix(si);
        let listing = async {
            let mut stream = inner.store.list(Some(&prefix));
            let mut found: Vec<ShareInfo> = Vec::new();
            let mut seen = HashSet::new();
            let mut listed = 0usize;
            while let Some(meta) = stream.try_next().await? {
                listed += 1;
                if listed > MAX_LISTED {
                    break;
                }
                // Anything that is not a share number is not ours.
                let Some(share) = meta
                    .location
                    .filename()
                    .and_then(|name| name.parse::<u8>().ok())
                else {
                    continue;
                };
                if seen.insert(share) {
                    found.push(ShareInfo {
                        share: ShareNum(share),
                        len: meta.size,
                    });
                }
            }
            Ok(found)
        };
        inner
            .timed("list", listing)
            .await?
            .map_err(|e| inner.error(e))
    }

    /// A record is one object, `<prefix>records/<slot>`, replaced by one
    /// PUT: S3 makes a PUT visible whole or not at all.
    async fn put_record(
        &self,
        slot: StorageIndex,
        data: Bytes,
        _secrets: &ShareSecrets,
    ) -> GridResult<()> {
        let inner = &self.inner;
        super::check_record_len(&inner.server_id, data.len())?;
        inner
            .timed(
                "put_record",
                inner
                    .store
                    .put(&inner.record_path(slot), PutPayload::from(data)),
            )
            .await?
            .map(|_| ())
            .map_err(|e| inner.error(e))
    }

    async fn get_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        let inner = &self.inner;
        let fetch = async {
            let answer = match inner.store.get(&inner.record_path(slot)).await {
                Ok(answer) => answer,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(inner.error(e)),
            };
            // Read no more than a record can hold: a longer answer is the
            // server's fault, not an allocation.
            let mut stream = answer.into_stream();
            let mut record = Vec::new();
            while let Some(chunk) = stream.try_next().await.map_err(|e| inner.error(e))? {
                if record.len() + chunk.len() > super::MAX_RECORD_LEN {
                    return Err(GridError::RecordTooLong {
                        server: inner.server_id.clone(),
                        len: record.len() + chunk.len(),
                        limit: super::MAX_RECORD_LEN,
                    });
                }
                record.extend_from_slice(&chunk);
            }
            Ok(Some(Bytes::from(record)))
        };
        tokio::time::timeout(inner.timeout, fetch)
            .await
            .map_err(|_| inner.timed_out("get_record"))?
    }

    async fn delete(&self, si: StorageIndex, _secrets: &ShareSecrets) -> GridResult<()> {
        let inner = &self.inner;
        for info in self.list(si).await? {
            let path = inner.share_path(si, info.share);
            match inner.timed("delete", inner.store.delete(&path)).await? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(inner.error(e)),
            }
        }
        Ok(())
    }
}

/// A share on its way into S3.
struct S3Writer {
    inner: Arc<Inner>,
    si: StorageIndex,
    share: ShareNum,
    path: ObjectPath,
    /// Bytes of the part being gathered.
    buffer: Vec<Bytes>,
    buffered: usize,
    written: u64,
    /// Started when the share outgrows one part.
    upload: Option<Box<dyn MultipartUpload>>,
    part_in_flight: Option<tokio::task::JoinHandle<object_store::Result<()>>>,
    /// The part buffer's room in the shared pool.
    lease: Option<BufferLease>,
    /// Finished or aborted: nothing left for `Drop` to clean.
    ended: bool,
}

impl fmt::Debug for S3Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Writer")
            .field("server", &self.inner.server_id)
            .field("si", &self.si)
            .field("share", &self.share)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl S3Writer {
    /// Waits for the part in flight, if any.
    async fn wait_for_part(&mut self) -> GridResult<()> {
        let Some(part) = self.part_in_flight.take() else {
            return Ok(());
        };
        let inner = Arc::clone(&self.inner);
        match tokio::time::timeout(inner.timeout, part).await {
            Err(_) => Err(inner.timed_out("write part")),
            Ok(Err(join)) => Err(GridError::Io {
                server: inner.server_id.clone(),
                operation: "write part",
                source: std::io::Error::other(join),
            }),
            Ok(Ok(result)) => result.map_err(|e| inner.error(e)),
        }
    }

    /// Sends the gathered bytes as the next part; at most one part is in
    /// flight, so memory stays at two parts per share.
    async fn send_part(&mut self) -> GridResult<()> {
        self.wait_for_part().await?;
        if self.upload.is_none() {
            let inner = Arc::clone(&self.inner);
            let upload = inner
                .timed(
                    "start multipart upload",
                    inner.store.put_multipart(&self.path),
                )
                .await?
                .map_err(|e| inner.error(e))?;
            self.upload = Some(upload);
        }
        let payload: PutPayload = std::mem::take(&mut self.buffer).into_iter().collect();
        self.buffered = 0;
        if let Some(upload) = self.upload.as_mut() {
            self.part_in_flight = Some(tokio::spawn(upload.put_part(payload)));
        }
        Ok(())
    }

    async fn finish_inner(&mut self, len: u64) -> GridResult<()> {
        if len != self.written {
            return Err(GridError::LengthMismatch {
                server: self.inner.server_id.clone(),
                si: self.si,
                share: self.share,
                written: self.written,
                expected: len,
            });
        }
        let inner = Arc::clone(&self.inner);
        if self.upload.is_none() {
            let payload: PutPayload = std::mem::take(&mut self.buffer).into_iter().collect();
            inner
                .timed("write", inner.store.put(&self.path, payload))
                .await?
                .map_err(|e| inner.error(e))?;
            return Ok(());
        }
        if self.buffered > 0 {
            self.send_part().await?;
        }
        self.wait_for_part().await?;
        if let Some(upload) = self.upload.as_mut() {
            inner
                .timed("complete multipart upload", upload.complete())
                .await?
                .map_err(|e| inner.error(e))?;
        }
        self.upload = None;
        Ok(())
    }

    /// Aborts the multipart upload, if one was started.
    async fn abort_inner(&mut self) -> GridResult<()> {
        if let Some(part) = self.part_in_flight.take() {
            part.abort();
        }
        self.buffer.clear();
        let Some(mut upload) = self.upload.take() else {
            return Ok(());
        };
        let inner = Arc::clone(&self.inner);
        inner
            .timed("abort multipart upload", upload.abort())
            .await?
            .map_err(|e| inner.error(e))
    }

    fn end(&mut self) {
        self.ended = true;
        self.lease = None;
        self.inner.stop_writing(self.si, self.share);
    }
}

#[async_trait]
impl ShareWriter for S3Writer {
    async fn append(&mut self, data: Bytes) -> GridResult<()> {
        self.written += data.len() as u64;
        let mut data = data;
        while !data.is_empty() {
            let room = self.inner.part_size - self.buffered;
            let piece = data.split_to(room.min(data.len()));
            self.buffered += piece.len();
            self.buffer.push(piece);
            if self.buffered == self.inner.part_size {
                if let Err(e) = self.send_part().await {
                    let _ = self.abort_inner().await;
                    self.end();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, len: u64) -> GridResult<()> {
        let result = self.finish_inner(len).await;
        if result.is_err() {
            let _ = self.abort_inner().await;
        }
        self.end();
        result
    }

    async fn abort(mut self: Box<Self>) -> GridResult<()> {
        let result = self.abort_inner().await;
        self.end();
        result
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Some(part) = self.part_in_flight.take() {
            part.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            // Best effort, as the contract says: S3 keeps (and bills) the
            // parts of an upload nobody aborts.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let timeout = self.inner.timeout;
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(timeout, upload.abort()).await;
                });
            }
        }
        self.inner.stop_writing(self.si, self.share);
    }
}

/// The in-process S3 server the integration tests use too.
#[cfg(test)]
#[path = "../../tests/support/s3_server.rs"]
mod s3_server;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::grid::conformance;

    use super::s3_server::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

    fn options(server: &S3Server, bucket: &str, prefix: &str) -> S3Options {
        S3Options {
            endpoint: Some(server.endpoint()),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: ACCESS_KEY_ID.to_owned(),
            secret_access_key: SECRET_ACCESS_KEY.to_owned(),
            allow_http: true,
            part_size: MIN_PART_SIZE,
            timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_at_the_bucket_root() {
        let server = S3Server::start(&["bucket-0"]).await;
        let store = S3Store::new(options(&server, "bucket-0", ""), "s3-bucket-0", None).unwrap();
        conformance::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_under_a_prefix() {
        let server = S3Server::start(&["bucket-0"]).await;
        let store = S3Store::new(
            options(&server, "bucket-0", "griddav/a/"),
            "s3-bucket-0/a",
            None,
        )
        .unwrap();
        conformance::run_all(&store).await;
        assert!(
            server
                .objects("bucket-0")
                .iter()
                .all(|key| key.starts_with("griddav/a/shares/")
                    || key.starts_with("griddav/a/records/")),
            "{:?}",
            server.objects("bucket-0")
        );
    }

    /// A share of several parts streams as a multipart upload and reads back
    /// whole and in ranges that cross part boundaries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_share_larger_than_a_part_streams_in_parts() {
        let server = S3Server::start(&["bucket-0"]).await;
        let store = S3Store::new(options(&server, "bucket-0", ""), "s3-bucket-0", None).unwrap();
        let si = conformance::random_si();
        let data = conformance::pattern(9, 2 * MIN_PART_SIZE + 12_345);
        let mut writer = store
            .create(si, ShareNum(4), &conformance::secrets())
            .await
            .unwrap();
        for piece in data.chunks(700_000) {
            writer.append(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(
            server.uploads_in_progress(),
            2,
            "a multipart upload (its record and its first part) is under way before finish"
        );
        writer.finish(data.len() as u64).await.unwrap();
        assert_eq!(server.uploads_in_progress(), 0);
        let whole = store
            .read(si, ShareNum(4), 0..data.len() as u64)
            .await
            .unwrap();
        assert!(whole[..] == data[..], "the share reads back whole");
        let cross = (MIN_PART_SIZE as u64 - 10)..(MIN_PART_SIZE as u64 + 10);
        let part = store.read(si, ShareNum(4), cross.clone()).await.unwrap();
        assert_eq!(&part[..], &data[cross.start as usize..cross.end as usize]);
        assert_eq!(
            store.list(si).await.unwrap(),
            vec![ShareInfo {
                share: ShareNum(4),
                len: data.len() as u64
            }]
        );
    }

    /// Aborting, failing the length check and dropping a writer all abort
    /// the multipart upload: no parts stay on the server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ended_upload_leaves_no_parts_behind() {
        let server = S3Server::start(&["bucket-0"]).await;
        let store = S3Store::new(options(&server, "bucket-0", ""), "s3-bucket-0", None).unwrap();
        let si = conformance::random_si();
        let part = Bytes::from(conformance::pattern(1, MIN_PART_SIZE + 1));

        let mut aborted = store
            .create(si, ShareNum(0), &conformance::secrets())
            .await
            .unwrap();
        aborted.append(part.clone()).await.unwrap();
        assert!(server.uploads_in_progress() > 0);
        aborted.abort().await.unwrap();
        assert_eq!(server.uploads_in_progress(), 0, "abort");

        let mut wrong_length = store
            .create(si, ShareNum(1), &conformance::secrets())
            .await
            .unwrap();
        wrong_length.append(part.clone()).await.unwrap();
        assert!(matches!(
            wrong_length.finish(1).await,
            Err(GridError::LengthMismatch { .. })
        ));
        assert_eq!(
            server.uploads_in_progress(),
            0,
            "finish with a wrong length"
        );

        let mut dropped = store
            .create(si, ShareNum(2), &conformance::secrets())
            .await
            .unwrap();
        dropped.append(part).await.unwrap();
        drop(dropped);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.uploads_in_progress() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a dropped writer's upload was not aborted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(store.list(si).await.unwrap(), vec![]);
    }

    /// A writer holds one part of the shared pool from create to end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn part_buffers_come_from_the_shared_pool() {
        let server = S3Server::start(&["bucket-0"]).await;
        let pool = BufferPool::with_bytes(3 * MIN_PART_SIZE as u64);
        let store = S3Store::new(
            options(&server, "bucket-0", ""),
            "s3-bucket-0",
            Some(pool.clone()),
        )
        .unwrap();
        let si = conformance::random_si();
        let first = store
            .create(si, ShareNum(0), &conformance::secrets())
            .await
            .unwrap();
        let second = store
            .create(si, ShareNum(1), &conformance::secrets())
            .await
            .unwrap();
        assert_eq!(pool.available_bytes(), MIN_PART_SIZE as u64);
        first.abort().await.unwrap();
        second.finish(0).await.unwrap();
        assert_eq!(pool.available_bytes(), pool.total_bytes());
    }

    /// A create that finds no part buffer free fails within the store's
    /// time limit instead of waiting for one for ever (two uploads, or an
    /// upload and a repair, each holding some parts, would deadlock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_create_without_room_fails_within_the_time_limit() {
        let server = S3Server::start(&["bucket-0"]).await;
        let pool = BufferPool::with_bytes(MIN_PART_SIZE as u64);
        let mut opts = options(&server, "bucket-0", "");
        opts.timeout = Duration::from_secs(1);
        let store = S3Store::new(opts, "s3-full", Some(pool.clone())).unwrap();
        let si = conformance::random_si();
        let holder = store
            .create(si, ShareNum(0), &conformance::secrets())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let err = store
            .create(si, ShareNum(1), &conformance::secrets())
            .await
            .expect_err("no room for a second part");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("upload_memory_mib"), "{err}");
        // The failed create took nothing; the holder's room comes back.
        holder.abort().await.unwrap();
        assert_eq!(pool.available_bytes(), pool.total_bytes());
        let again = store
            .create(si, ShareNum(1), &conformance::secrets())
            .await
            .unwrap();
        again.finish(0).await.unwrap();
    }

    /// A server that stops answering fails the writes and reads sent to it
    /// within the store's time limit, with an error naming the server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_server_fails_within_the_time_limit() {
        let server = S3Server::start(&["bucket-0"]).await;
        let mut opts = options(&server, "bucket-0", "");
        opts.timeout = Duration::from_secs(3);
        let store = S3Store::new(opts, "s3-dead", None).unwrap();
        let si = conformance::random_si();
        conformance::put(&store, si, ShareNum(0), b"before", 6).await;
        server.kill();
        let started = std::time::Instant::now();
        let read = store.read(si, ShareNum(0), 0..6).await;
        let err = read.expect_err("a dead server cannot answer");
        assert!(err.to_string().contains("s3-dead"), "{err}");
        let created = store.create(si, ShareNum(1), &conformance::secrets()).await;
        assert!(created.is_err(), "create on a dead server");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
    }
}
