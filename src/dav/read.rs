//! Read handles: bytes of a verified file version, at any offset.
//!
//! A read inside one segment is served exactly (small Range GETs are
//! Finder's hot path). Once a reader moves on sequentially into the next
//! segment, a stream takes over that fetches segments ahead.

use std::io::SeekFrom;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult};
use futures::{FutureExt, Stream, StreamExt};

use super::fs::{engine_error, FsInner};
use super::meta::GridMeta;
use crate::engine::{EngineResult, FileReader};
use crate::namespace::{Content, Node};

type SegmentStream = Pin<Box<dyn Stream<Item = EngineResult<Bytes>> + Send>>;

struct ReadAhead {
    /// File offset of the first byte of `pending`.
    at: u64,
    pending: Bytes,
    /// A Mutex only to make the handle `Sync`; it is never contended.
    stream: Mutex<SegmentStream>,
}

pub(crate) struct ReadHandle {
    fs: Arc<FsInner>,
    meta: GridMeta,
    content: Option<Content>,
    pos: u64,
    downloader: Option<Arc<FileReader>>,
    ahead: Option<ReadAhead>,
    last_segment: Option<u64>,
}

impl std::fmt::Debug for ReadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHandle")
            .field("len", &self.meta.len)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl ReadHandle {
    pub(crate) fn new(fs: Arc<FsInner>, node: &Node) -> Self {
        Self {
            fs,
            meta: GridMeta::from(node),
            content: node.content.clone(),
            pos: 0,
            downloader: None,
            ahead: None,
            last_segment: None,
        }
    }

    /// Before the GET handler sends its status line (it asks for the
    /// metadata first): opens the reader and fetches and verifies the
    /// first segment, so that a file that cannot be read answers an error
    /// status instead of a 200 followed by a broken body. The segment stays
    /// in the reader's cache for the first read.
    async fn start(&mut self) -> FsResult<()> {
        if self.downloader.is_some() || self.meta.len == 0 {
            return Ok(());
        }
        let Some(Content::Cap(cap)) = &self.content else {
            return Ok(());
        };
        let downloader = self.fs.downloader(cap).await?;
        downloader
            .check_readable()
            .await
            .map_err(|e| engine_error("read", &e))?;
        self.downloader = Some(downloader);
        Ok(())
    }

    async fn read(&mut self, count: usize) -> FsResult<Bytes> {
        let size = self.meta.len;
        if self.pos >= size || count == 0 {
            return Ok(Bytes::new());
        }
        let want = (count as u64).min(size - self.pos);
        let cap = match &self.content {
            Some(Content::Inline(bytes)) => {
                let start = self.pos as usize;
                let end = start + want as usize;
                let piece = bytes
                    .get(start..end)
                    .map(Bytes::copy_from_slice)
                    .ok_or(FsError::GeneralFailure)?;
                self.pos += piece.len() as u64;
                return Ok(piece);
            }
            Some(Content::Cap(cap)) => cap.clone(),
            None => return Err(FsError::Forbidden),
        };
        let downloader = match &self.downloader {
            Some(d) => Arc::clone(d),
            None => {
                let d = self.fs.downloader(&cap).await?;
                self.downloader = Some(Arc::clone(&d));
                d
            }
        };
        if downloader.size() != size {
            tracing::error!(
                expected = size,
                actual = downloader.size(),
                "namespace size differs from the file's"
            );
            return Err(FsError::GeneralFailure);
        }
        let segment_size = downloader.segment_size();
        let segment = self.pos / segment_size;
        // A read of less than a full buffer is the last of its range:
        // nothing after it is wanted, so nothing is fetched ahead.
        let more_wanted = count >= self.fs.options.read_buf_size;
        let sequential = segment > 0 && self.last_segment == Some(segment - 1) && more_wanted;
        if self.ahead.as_ref().is_some_and(|a| a.at == self.pos) || sequential {
            return self.read_ahead(&downloader, want).await;
        }
        let segment_end = (segment + 1) * segment_size;
        let len = want.min(segment_end - self.pos);
        let piece = downloader
            .read(self.pos, len)
            .await
            .map_err(|e| engine_error("read", &e))?;
        self.pos += piece.len() as u64;
        self.last_segment = Some(segment);
        Ok(piece)
    }

    async fn read_ahead(&mut self, downloader: &Arc<FileReader>, want: u64) -> FsResult<Bytes> {
        let ahead = match self.ahead.take() {
            Some(ahead) if ahead.at == self.pos => ahead,
            _ => ReadAhead {
                at: self.pos,
                pending: Bytes::new(),
                stream: Mutex::new(Arc::clone(downloader).pieces(self.pos)),
            },
        };
        let mut ahead = ahead;
        if ahead.pending.is_empty() {
            let stream = ahead
                .stream
                .get_mut()
                .map_err(|_| FsError::GeneralFailure)?;
            match stream.next().await {
                Some(Ok(piece)) => ahead.pending = piece,
                Some(Err(e)) => return Err(engine_error("read", &e)),
                // The size was checked: an early end is a bug, never zeros.
                None => return Err(FsError::GeneralFailure),
            }
        }
        let take = (want as usize).min(ahead.pending.len());
        let piece = ahead.pending.split_to(take);
        self.pos += piece.len() as u64;
        ahead.at = self.pos;
        self.ahead = Some(ahead);
        Ok(piece)
    }
}

impl DavFile for ReadHandle {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            self.start().await?;
            let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
            Ok(meta)
        }
        .boxed()
    }

    fn write_buf(&mut self, _buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        self.read(count).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let target = match pos {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.meta.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        let result = match target {
            Some(at) => {
                self.pos = at;
                Ok(at)
            }
            None => Err(FsError::GeneralFailure),
        };
        futures::future::ready(result).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        futures::future::ready(Ok(())).boxed()
    }
}
