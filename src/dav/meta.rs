//! Metadata and directory entries as dav-server wants them, from namespace rows.

use std::time::SystemTime;

use dav_server::fs::{DavDirEntry, DavMetaData, FsFuture, FsResult};
use futures::FutureExt;

use crate::namespace::Node;

#[derive(Debug, Clone)]
pub struct GridMeta {
    pub len: u64,
    pub modified: SystemTime,
    pub created: SystemTime,
    pub is_dir: bool,
    pub etag: String,
}

impl From<&Node> for GridMeta {
    fn from(node: &Node) -> Self {
        Self {
            len: node.size,
            modified: node.modified,
            created: node.created,
            is_dir: node.is_dir(),
            etag: node.etag.clone(),
        }
    }
}

impl DavMetaData for GridMeta {
    fn len(&self) -> u64 {
        self.len
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

pub struct GridDirEntry {
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
