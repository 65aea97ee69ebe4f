//! Write handles: the bytes of a PUT go straight into the engine.
//!
//! Small files are buffered and stored inline in the namespace; past the
//! inline threshold (or at once, when the declared size is larger) an
//! Uploader takes the bytes as they arrive. Nothing is published until
//! `flush` finds exactly the declared number of bytes; a handle dropped
//! before that (client gone, short or long body) aborts the upload and the
//! previous version stays as it was.
//!
//! With `[encoding] format = "tahoe-chk"`, a request that writes a whole
//! new version whose size is known before its bytes (Content-Length or
//! X-Expected-Entity-Length; not a partial update or append) becomes a
//! Tahoe-LAFS immutable file whatever its size: a `URI:LIT:` capability up
//! to 55 bytes, a `URI:CHK:` one past that, so that `tahoe get` reads every
//! such file. Every other write (a chunked PUT of unknown size among them)
//! stays `griddav-v1`.
//!
//! A partial update (Content-Range PUT, sabredav PATCH, append) writes a new
//! version: the old bytes before the range, the new bytes, and the old bytes
//! after them, all streamed through the engine. The old version stays until
//! that new one is committed.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult, OpenOptions};
use futures::{FutureExt, StreamExt};

use super::fs::{engine_error, ns_error, FsInner};
use super::meta::GridMeta;
use super::pending::UploadGuard;
use crate::engine::chk::uri::{LitCap, LIT_THRESHOLD};
use crate::engine::{Capability, FileUploader, Format};
use crate::namespace::{Content, Namespace, NamespaceError, Node, NsPath, UploadId};

/// The version a partial update starts from.
struct Base {
    content: Content,
    size: u64,
}

enum Sink {
    /// Still small enough to be stored inline.
    Buffer(BytesMut),
    Upload {
        uploader: Box<FileUploader>,
        /// `None`: the upload stores nothing to recover (`URI:LIT:`).
        journal: Option<Journal>,
    },
}

/// An upload's entry in the namespace's journal of pending uploads, which
/// collects its shares should griddav stop before the upload ends.
///
/// The entry is written (and synced) while the first bytes go to the
/// shares, not before: a small file's PUT no longer waits for that sync
/// first. It is awaited before the upload finishes, so no share is
/// finished, durable and visible, before the entry that would collect it
/// is durable; a share cut short by a crash is only a partial file, which
/// its store removes when it opens.
struct Journal(tokio::task::JoinHandle<Result<UploadId, NamespaceError>>);

impl Journal {
    fn begin(ns: &Namespace, recovery_token: String) -> Journal {
        let ns = ns.clone();
        Journal(tokio::spawn(async move {
            ns.begin_upload(&recovery_token).await
        }))
    }

    /// The entry, once durable.
    async fn written(self) -> FsResult<UploadId> {
        match self.0.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(ns_error("journal upload", e)),
            Err(e) => {
                tracing::error!(error = %e, "writing an upload's journal entry failed");
                Err(FsError::GeneralFailure)
            }
        }
    }

    /// Ends the entry of an upload that was aborted and cleaned up. One
    /// whose writing failed needs no end.
    async fn end(self, ns: &Namespace) {
        if let Ok(id) = self.written().await {
            end_entry(ns, id).await;
        }
    }
}

/// Ends a written journal entry; a failure only leaves it for the next
/// start's clean-up.
async fn end_entry(ns: &Namespace, id: UploadId) {
    if let Err(e) = ns.end_upload(id).await {
        tracing::warn!(error = %e, "could not end an upload's journal entry");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Committed,
    Failed,
}

pub(crate) struct WriteHandle {
    fs: Arc<FsInner>,
    path: String,
    base: Option<Base>,
    append: bool,
    /// Where the request's bytes go in the new version.
    start: u64,
    /// Bytes of the request body received.
    received: u64,
    /// Bytes of the request body declared (Content-Length, X-Expected-Entity-Length).
    expected: Option<u64>,
    /// Bytes handed to the sink: the new version's length so far.
    fed: u64,
    sink: Option<Sink>,
    state: State,
    committed: Option<Node>,
    /// Lets requests that find no file here wait for this upload to end.
    pending: UploadGuard,
}

impl std::fmt::Debug for WriteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHandle")
            .field("path", &self.path)
            .field("received", &self.received)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl WriteHandle {
    pub(crate) async fn open(
        fs: Arc<FsInner>,
        path: String,
        node: Option<Node>,
        options: &OpenOptions,
    ) -> FsResult<Self> {
        match &node {
            Some(node) if node.is_dir() => return Err(FsError::Forbidden),
            Some(_) if options.create_new => return Err(FsError::Exists),
            None if !options.create && !options.create_new => return Err(FsError::NotFound),
            None => {
                let parent = NsPath::parse(&path)
                    .map_err(|e| ns_error("open", e))?
                    .parent()
                    .ok_or(FsError::Forbidden)?;
                match fs
                    .ns
                    .lookup(parent.as_str())
                    .await
                    .map_err(|e| ns_error("open", e))?
                {
                    Some(parent) if parent.is_dir() => {}
                    _ => return Err(FsError::NotFound),
                }
            }
            Some(_) => {}
        }
        if fs.ns.space_is_short() {
            // The room left is kept for removals (see namespace/reserve.rs).
            return Err(fs.note(FsError::InsufficientStorage));
        }
        let pending = fs.uploads.begin(&path);
        let partial = !options.truncate;
        if node.is_none() && partial {
            // LOCK on an unmapped URL (and a partial PUT to a new file) opens
            // without truncate and expects the file to exist afterwards,
            // empty, even if nothing is ever written.
            fs.ns
                .publish_file(
                    &path,
                    Content::Inline(Vec::new()),
                    0,
                    SystemTime::now(),
                    None,
                )
                .await
                .map_err(|e| ns_error("create empty file", e))?;
        }
        let base = match node {
            Some(node) if partial => node.content.map(|content| Base {
                content,
                size: node.size,
            }),
            _ => None,
        };
        let start = match (&base, options.append) {
            (Some(base), true) => base.size,
            _ => 0,
        };
        Ok(Self {
            fs,
            path,
            base,
            append: options.append,
            start,
            received: 0,
            expected: options.size,
            fed: 0,
            sink: Some(Sink::Buffer(BytesMut::new())),
            state: State::Open,
            committed: None,
            pending,
        })
    }

    fn check_open(&self) -> FsResult<()> {
        match self.state {
            State::Open => Ok(()),
            State::Committed | State::Failed => Err(FsError::GeneralFailure),
        }
    }

    /// The size of a write that becomes a Tahoe file: `tahoe-chk`
    /// configured, a whole new version, its size declared up front.
    fn chk_size(&self) -> Option<u64> {
        let whole = self.base.is_none() && !self.append && self.start == 0;
        (self.fs.options.format == Format::TahoeChk && whole)
            .then_some(self.expected)
            .flatten()
    }

    /// The new version's size when it is known before the bytes arrive.
    fn final_size(&self) -> Option<u64> {
        match &self.base {
            None => self.expected,
            Some(base) => self
                .expected
                .map(|expected| base.size.max(self.start.saturating_add(expected))),
        }
    }

    async fn write(&mut self, data: Bytes) -> FsResult<()> {
        self.check_open()?;
        if data.is_empty() {
            return Ok(());
        }
        let first = self.received == 0;
        self.received = self.received.saturating_add(data.len() as u64);
        if self
            .expected
            .is_some_and(|expected| self.received > expected)
        {
            // Longer than declared: never publish it.
            self.fail().await;
            return Err(FsError::GeneralFailure);
        }
        if first && self.start > 0 {
            self.copy_base(0, self.start).await?;
        }
        self.feed(data).await
    }

    /// Hands bytes of the new version to the buffer or the uploader.
    async fn feed(&mut self, data: Bytes) -> FsResult<()> {
        self.fed += data.len() as u64;
        let (threshold, known_large) = match self.chk_size() {
            // A Tahoe file: a URI:LIT: from the buffer, or CHK shares.
            Some(size) => (LIT_THRESHOLD, size > LIT_THRESHOLD),
            None => {
                let threshold = self.fs.options.inline_threshold;
                (
                    threshold,
                    self.final_size().is_some_and(|size| size > threshold),
                )
            }
        };
        let result = match self.sink.as_mut() {
            Some(Sink::Buffer(buffer)) if !known_large && self.fed <= threshold => {
                buffer.extend_from_slice(&data);
                Ok(())
            }
            Some(Sink::Buffer(buffer)) => {
                let buffered = std::mem::take(buffer).freeze();
                self.start_upload(buffered, data).await
            }
            Some(Sink::Upload { uploader, .. }) => uploader
                .write(data)
                .await
                .map_err(|e| engine_error("write", &e)),
            None => Err(FsError::GeneralFailure),
        };
        if result.is_err() {
            self.fail().await;
        }
        result
    }

    async fn start_upload(&mut self, buffered: Bytes, data: Bytes) -> FsResult<()> {
        let options = &self.fs.options;
        let format = match self.chk_size() {
            Some(_) => Format::TahoeChk,
            None => Format::GriddavV1,
        };
        let uploader = FileUploader::start(
            format,
            self.fs.grid.clone(),
            options.params,
            options.upload.clone(),
            self.final_size(),
        )
        .await
        .map_err(|e| engine_error("start upload", &e))?;
        let journal = uploader
            .recovery_token()
            .map(|token| Journal::begin(&self.fs.ns, token));
        self.sink = Some(Sink::Upload {
            uploader: Box::new(uploader),
            journal,
        });
        if let Some(Sink::Upload { uploader, .. }) = self.sink.as_mut() {
            for piece in [buffered, data] {
                if !piece.is_empty() {
                    uploader
                        .write(piece)
                        .await
                        .map_err(|e| engine_error("write", &e))?;
                }
            }
        }
        Ok(())
    }

    /// Streams bytes `from..to` of the base version into the new one.
    async fn copy_base(&mut self, from: u64, to: u64) -> FsResult<()> {
        let Some(base) = &self.base else {
            return Ok(());
        };
        if from >= to {
            return Ok(());
        }
        match &base.content {
            Content::Inline(bytes) => {
                let piece = Bytes::copy_from_slice(&bytes[from as usize..to as usize]);
                self.feed(piece).await
            }
            Content::Cap(cap) => {
                let downloader = self.fs.downloader(cap).await?;
                let mut stream = std::pin::pin!(downloader.stream(from));
                let mut at = from;
                while at < to {
                    let Some(piece) = stream.next().await else {
                        return Err(FsError::GeneralFailure);
                    };
                    let mut piece = piece.map_err(|e| engine_error("read base version", &e))?;
                    piece.truncate((to - at).min(piece.len() as u64) as usize);
                    at += piece.len() as u64;
                    self.feed(piece).await?;
                }
                Ok(())
            }
        }
    }

    async fn commit(&mut self) -> FsResult<()> {
        self.check_open()?;
        if let Some(expected) = self.expected {
            if self.received != expected {
                // dav-server answers 400 for this right after flush returns;
                // all that is left to do here is to publish nothing.
                tracing::info!(path = %self.path, expected, received = self.received,
                    "body length differs from the declared length; upload discarded");
                self.fail().await;
                return Ok(());
            }
        }
        if let Some(base) = &self.base {
            if self.received == 0 && !self.append {
                // Opened for a partial update that never wrote: nothing changed.
                self.state = State::Committed;
                return Ok(());
            }
            let (base_size, after) = (base.size, self.start + self.received);
            if self.received == 0 {
                self.copy_base(0, self.start).await?;
            }
            self.copy_base(after, base_size).await?;
        }
        let size = self.fed;
        let mut complete = true;
        let (content, journal) = match self.sink.take() {
            Some(Sink::Buffer(buffer)) if self.chk_size().is_some() => {
                // A Tahoe literal file: the bytes are the capability.
                let lit = Capability::Lit(LitCap {
                    data: buffer.to_vec(),
                });
                (Content::Cap(lit.to_string()), None)
            }
            Some(Sink::Buffer(buffer)) => (Content::Inline(buffer.to_vec()), None),
            Some(Sink::Upload {
                mut uploader,
                journal,
            }) => {
                // No share finishes before its journal entry is durable.
                let journal = match journal {
                    None => None,
                    Some(journal) => match journal.written().await {
                        Ok(id) => Some(id),
                        Err(e) => {
                            self.state = State::Failed;
                            uploader.abort().await;
                            return Err(e);
                        }
                    },
                };
                match uploader.finish().await {
                    Ok(stored) => {
                        // Repair completes griddav-v1 files only, for now.
                        complete = stored.complete || !matches!(stored.cap, Capability::Griddav(_));
                        (Content::Cap(stored.cap.to_string()), journal)
                    }
                    Err(e) => {
                        self.state = State::Failed;
                        if let Some(journal) = journal {
                            end_entry(&self.fs.ns, journal).await;
                        }
                        return Err(engine_error("finish upload", &e));
                    }
                }
            }
            None => return Err(FsError::GeneralFailure),
        };
        let cap = match &content {
            Content::Cap(cap) => Some(cap.clone()),
            Content::Inline(_) => None,
        };
        match self
            .fs
            .ns
            .publish_file(&self.path, content, size, SystemTime::now(), journal)
            .await
        {
            Ok(outcome) => {
                self.fs.wake_collector(outcome.garbage_queued.is_some());
                if let (false, Some(cap)) = (complete, &cap) {
                    // Stored with fewer than n shares: repair completes it.
                    match self.fs.ns.record_short(cap).await {
                        Ok(()) => self.fs.short_files.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot record a file short of shares")
                        }
                    }
                }
                self.committed = Some(outcome.node);
                self.state = State::Committed;
                Ok(())
            }
            Err(e) => {
                // The name went away (or turned into a directory) while the
                // bytes were arriving: the shares just written belong to nobody.
                self.state = State::Failed;
                if let Some(cap) = cap {
                    crate::engine::delete::free_capability(&self.fs.grid, &cap).await;
                }
                if let Some(journal) = journal {
                    end_entry(&self.fs.ns, journal).await;
                }
                Err(ns_error("publish", e))
            }
        }
    }

    /// Aborts the upload, removing its shares; the old version is untouched.
    async fn fail(&mut self) {
        self.state = State::Failed;
        self.pending.release();
        if let Some(Sink::Upload {
            mut uploader,
            journal,
        }) = self.sink.take()
        {
            uploader.abort().await;
            if let Some(journal) = journal {
                journal.end(&self.fs.ns).await;
            }
        }
    }
}

impl Drop for WriteHandle {
    fn drop(&mut self) {
        if let Some(Sink::Upload {
            mut uploader,
            journal,
        }) = self.sink.take()
        {
            if self.state == State::Committed {
                return;
            }
            // Client gone or body rejected: remove the shares, keep the old version.
            let ns = self.fs.ns.clone();
            let path = self.path.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        uploader.abort().await;
                        if let Some(journal) = journal {
                            journal.end(&ns).await;
                        }
                        tracing::info!(%path, "unfinished upload aborted");
                    });
                }
                Err(_) => {
                    // No runtime: the Uploader's own drop closes its share
                    // writers, and the journal entry is cleaned at next start.
                    drop(uploader);
                }
            }
        }
    }
}

impl DavFile for WriteHandle {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let node = match &self.committed {
                Some(node) => node.clone(),
                None => self
                    .fs
                    .ns
                    .lookup(&self.path)
                    .await
                    .map_err(|e| ns_error("metadata", e))?
                    .ok_or(FsError::NotFound)?,
            };
            Ok(Box::new(GridMeta::from(&node)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let data = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(data)
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move {
            let result = self.write(buf).await;
            result.map_err(|e| self.fs.note(e))
        }
        .boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            if self.received > 0 {
                return Err(FsError::GeneralFailure);
            }
            let base_size = self.base.as_ref().map_or(0, |b| b.size);
            if self.append {
                return Ok(self.start);
            }
            let target = match pos {
                SeekFrom::Start(at) => Some(at),
                SeekFrom::End(delta) => base_size.checked_add_signed(delta),
                SeekFrom::Current(delta) => self.start.checked_add_signed(delta),
            };
            // No sparse files: a range must start inside or at the end of the old version.
            match target {
                Some(at) if at <= base_size => {
                    self.start = at;
                    Ok(at)
                }
                _ => Err(FsError::GeneralFailure),
            }
        }
        .boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            let result = self.commit().await;
            self.pending.release();
            result.map_err(|e| self.fs.note(e))
        }
        .boxed()
    }
}
