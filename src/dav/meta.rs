//! Metadata and directory entries as dav-server wants them, from namespace rows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dav_server::fs::{DavDirEntry, DavMetaData, FsFuture, FsResult};
use futures::FutureExt;

use crate::namespace::Node;

#[derive(Debug, Clone)]
pub(crate) struct GridMeta {
    pub len: u64,
    pub modified: SystemTime,
    pub created: SystemTime,
    pub is_dir: bool,
    pub etag: String,
    /// For folders: the bytes the whole namespace uses, as last counted
    /// for the quota (see [`GridMeta::with_usage`]).
    pub usage: Option<Arc<AtomicU64>>,
}

impl From<&Node> for GridMeta {
    fn from(node: &Node) -> Self {
        Self {
            len: node.size,
            modified: node.modified,
            created: node.created,
            is_dir: node.is_dir(),
            etag: node.etag.clone(),
            usage: None,
        }
    }
}

impl GridMeta {
    /// dav-server reports quota on any path but `/` as
    /// `available = total - len()`, `used = len()`. A folder's length is
    /// otherwise unused, so for folders it is the namespace's usage: every
    /// folder then shows the grid's free space, as `df` does for any
    /// directory of a mount. The figure is read when dav-server asks, just
    /// after it has refreshed the quota.
    pub(crate) fn with_usage(mut self, usage: &Arc<AtomicU64>) -> Self {
        if self.is_dir {
            self.usage = Some(Arc::clone(usage));
        }
        self
    }
}

impl DavMetaData for GridMeta {
    fn len(&self) -> u64 {
        match &self.usage {
            Some(usage) => usage.load(Ordering::Relaxed),
            None => self.len,
        }
    }

    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }

    fn created(&self) -> FsResult<SystemTime> {
        Ok(self.created)
    }

    fn is_dir(&self) -> bool {
        self.is_dir
    }

    /// Follows the content, not the clock: a client that saw this ETag on
    /// HEAD or LOCK can PUT with If-Match until the content really changes.
    fn etag(&self) -> Option<String> {
        Some(self.etag.clone())
    }
}

pub(crate) struct GridDirEntry {
    pub name: String,
    pub meta: GridMeta,
}

impl DavDirEntry for GridDirEntry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        futures::future::ready(Ok(meta)).boxed()
    }
}
