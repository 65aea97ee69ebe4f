//! The directory tree: inode-style rows, content by capability or inline.

use std::fmt;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension, Row, Transaction};
use sha2::{Digest, Sha256};

use super::clock::{from_ms, to_ms};
use super::error::DbContext;
use super::garbage::{self, UploadId};
use super::schema::ROOT_ID;
use super::{Namespace, NamespaceError, NsPath};

/// What a file holds: a capability for content in the grid, or the bytes
/// themselves for small files.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    /// The engine's capability string, opaque here.
    Cap(String),
    /// The whole file, stored in the row.
    Inline(Vec<u8>),
}

// A capability holds the file's key: keep it out of logs.
impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Cap(c) => write!(f, "Cap(<{} chars>)", c.len()),
            Content::Inline(b) => write!(f, "Inline(<{} bytes>)", b.len()),
        }
    }
}

/// Directory or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory: has children, no content.
    Dir,
    /// A file: has content, no children.
    File,
}

/// One row of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Stable while the node exists, across renames; never reused by a
    /// live node.
    pub id: i64,
    /// `None` only for the root.
    pub parent: Option<i64>,
    /// Empty for the root.
    pub name: String,
    /// Directory or file; fixed for the node's life.
    pub kind: NodeKind,
    /// File size in bytes; 0 for directories.
    pub size: u64,
    /// When the node was made; a rename keeps it.
    pub created: SystemTime,
    /// Last modification: a new content, or a time the client set ([`Namespace::set_mtime`]).
    pub modified: SystemTime,
    /// Strong ETag value without quotes. Files: derived from the content
    /// (see the module docs). Directories: fixed at creation.
    pub etag: String,
    /// `None` for directories.
    pub content: Option<Content>,
}

impl Node {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }
}

/// What [`Namespace::publish_file`] and [`Namespace::copy_file`] did.
#[derive(Clone)]
pub struct PublishOutcome {
    /// The file row as committed.
    pub node: Node,
    /// True when the name was new (201), false when a file was replaced (204).
    pub created: bool,
    /// The replaced capability, when this put it on the garbage list:
    /// a hint to wake the collector.
    pub garbage_queued: Option<String>,
}

// The queued capability holds a key: keep it out of logs.
impl fmt::Debug for PublishOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishOutcome")
            .field("node", &self.node)
            .field("created", &self.created)
            .field("garbage_queued", &self.garbage_queued.is_some())
            .finish()
    }
}

/// What a removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removal {
    /// Rows removed (the node and everything below it).
    pub nodes: u64,
    /// Capabilities put on the garbage list.
    pub garbage_queued: u64,
}

/// What [`Namespace::rename`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameOutcome {
    /// Whether an existing destination was replaced (204 rather than 201).
    pub replaced: bool,
    /// Capabilities of the replaced destination put on the garbage list.
    pub garbage_queued: u64,
}

/// Space accounting, for the quota properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Number of files.
    pub files: u64,
    /// Number of directories, the root not counted.
    pub dirs: u64,
    /// Sum of the file sizes as listed (a COPY counts twice).
    pub logical_bytes: u64,
    /// Bytes of distinct content: each capability once, plus inline files.
    pub stored_bytes: u64,
}

const NODE_COLS: &str = "id, parent, name, kind, size, created, modified, etag, cap, inline";

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<Node> {
    let kind: String = row.get(3)?;
    let size: i64 = row.get(4)?;
    let cap: Option<String> = row.get(8)?;
    let inline: Option<Vec<u8>> = row.get(9)?;
    let content = match (cap, inline) {
        (Some(c), _) => Some(Content::Cap(c)),
        (None, Some(b)) => Some(Content::Inline(b)),
        (None, None) => None,
    };
    Ok(Node {
        id: row.get(0)?,
        parent: row.get(1)?,
        name: row.get(2)?,
        kind: if kind == "dir" {
            NodeKind::Dir
        } else {
            NodeKind::File
        },
        // The schema's CHECK keeps sizes non-negative.
        size: u64::try_from(size).unwrap_or(0),
        created: from_ms(row.get(5)?),
        modified: from_ms(row.get(6)?),
        etag: row.get(7)?,
        content,
    })
}

pub(crate) fn node_by_id(tx: &Transaction<'_>, id: i64) -> Result<Option<Node>, NamespaceError> {
    tx.prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], node_from_row).optional())
        .ctx("reading a node")
}

fn child(tx: &Transaction<'_>, parent: i64, name: &str) -> Result<Option<Node>, NamespaceError> {
    tx.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE parent = ?1 AND name = ?2"
    ))
    .and_then(|mut s| s.query_row(params![parent, name], node_from_row).optional())
    .ctx("looking up a name")
}

/// The node at `path`; `None` when any component is missing or a file
/// stands where a directory should be.
pub(crate) fn resolve(tx: &Transaction<'_>, path: &NsPath) -> Result<Option<Node>, NamespaceError> {
    let Some(mut node) = node_by_id(tx, ROOT_ID)? else {
        return Err(NamespaceError::NotFound {
            path: "/".to_owned(),
        });
    };
    for name in path.names() {
        if !node.is_dir() {
            return Ok(None);
        }
        match child(tx, node.id, name)? {
            Some(n) => node = n,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

pub(crate) fn require(tx: &Transaction<'_>, path: &NsPath) -> Result<Node, NamespaceError> {
    resolve(tx, path)?.ok_or_else(|| NamespaceError::NotFound {
        path: path.to_string(),
    })
}

/// The directory that holds (or will hold) `path`, and `path`'s name.
fn parent_dir<'p>(
    tx: &Transaction<'_>,
    path: &'p NsPath,
) -> Result<(Node, &'p str), NamespaceError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(NamespaceError::Conflict {
            path: path.to_string(),
            reason: "the root has no parent",
        });
    };
    let dir = resolve(tx, &parent)?.ok_or_else(|| NamespaceError::NotFound {
        path: parent.to_string(),
    })?;
    if !dir.is_dir() {
        return Err(NamespaceError::NotADirectory {
            path: parent.to_string(),
        });
    }
    Ok((dir, name))
}

pub(crate) fn dir_etag(id: i64, created_ms: i64) -> String {
    format!("d{id:x}-{created_ms:x}")
}

/// ETag of file content. Hashed, because the capability holds the key and
/// the ETag is shown to every client.
fn content_etag(content: &Content, size: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"griddav etag v1\0");
    match content {
        Content::Cap(c) => {
            h.update(b"c");
            h.update(c.as_bytes());
        }
        Content::Inline(b) => {
            h.update(b"i");
            h.update(b);
        }
    }
    h.update(size.to_le_bytes());
    data_encoding::HEXLOWER.encode(&h.finalize()[..16])
}

fn split(content: &Content) -> (Option<&str>, Option<&[u8]>) {
    match content {
        Content::Cap(c) => (Some(c.as_str()), None),
        Content::Inline(b) => (None, Some(b.as_slice())),
    }
}

fn cap_of(node: &Node) -> Option<&str> {
    match &node.content {
        Some(Content::Cap(c)) => Some(c),
        _ => None,
    }
}

/// How many rows refer to `cap`.
pub(crate) fn cap_refs(tx: &Transaction<'_>, cap: &str) -> Result<i64, NamespaceError> {
    tx.prepare_cached("SELECT COUNT(*) FROM nodes WHERE cap = ?1")
        .and_then(|mut s| s.query_row([cap], |r| r.get(0)))
        .ctx("counting references to a capability")
}

/// Puts `cap` on the garbage list if no row refers to it any more; true if
/// it was queued now.
fn queue_if_unreferenced(
    tx: &Transaction<'_>,
    cap: &str,
    now: i64,
) -> Result<bool, NamespaceError> {
    if cap_refs(tx, cap)? > 0 {
        return Ok(false);
    }
    let n = tx
        .prepare_cached(
            "INSERT INTO garbage (cap, queued_at) VALUES (?1, ?2) ON CONFLICT (cap) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![cap, now]))
        .ctx("queueing garbage")?;
    Ok(n == 1)
}

const SUBTREE: &str =
    "WITH RECURSIVE sub(id) AS (SELECT ?1 UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent = sub.id)";

/// Deletes `id` and everything below it (their properties cascade), then
/// queues the capabilities nothing refers to any more.
fn remove_subtree(tx: &Transaction<'_>, id: i64, now: i64) -> Result<Removal, NamespaceError> {
    let caps: Vec<String> = tx
        .prepare(&format!(
            "{SUBTREE} SELECT DISTINCT cap FROM nodes WHERE id IN sub AND cap IS NOT NULL"
        ))
        .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
        .ctx("collecting the capabilities of a subtree")?;
    let nodes: i64 = tx
        .query_row(&format!("{SUBTREE} SELECT COUNT(*) FROM sub"), [id], |r| {
            r.get(0)
        })
        .ctx("counting a subtree")?;
    // One statement for the whole subtree rather than a chain of ON DELETE
    // CASCADE actions, whose recursion SQLite bounds by the trigger depth.
    tx.execute(
        &format!("DELETE FROM nodes WHERE id IN ({SUBTREE} SELECT id FROM sub)"),
        [id],
    )
    .ctx("deleting a subtree")?;
    let mut queued = 0;
    for cap in &caps {
        if queue_if_unreferenced(tx, cap, now)? {
            queued += 1;
        }
    }
    Ok(Removal {
        nodes: u64::try_from(nodes).unwrap_or(0),
        garbage_queued: queued,
    })
}

fn to_i64(n: u64, what: &str) -> Result<i64, NamespaceError> {
    i64::try_from(n).map_err(|_| NamespaceError::InvalidArgument {
        reason: format!("{what} {n} is too large"),
    })
}

/// A file row's content columns, as written by publish and copy.
struct FileContent<'a> {
    content: &'a Content,
    size: i64,
    etag: &'a str,
    mtime_ms: i64,
}

/// Writes new content into an existing file row and queues its old
/// capability if that was the last reference.
fn replace_content(
    tx: &Transaction<'_>,
    old: &Node,
    new: &FileContent<'_>,
    now: i64,
) -> Result<Option<String>, NamespaceError> {
    let (cap, inline) = split(new.content);
    tx.prepare_cached(
        "UPDATE nodes SET size = ?2, modified = ?3, etag = ?4, cap = ?5, inline = ?6 WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            old.id,
            new.size,
            new.mtime_ms,
            new.etag,
            cap,
            inline
        ])
    })
    .ctx("replacing a file's content")?;
    match cap_of(old) {
        Some(old_cap) if Some(old_cap) != cap => {
            Ok(queue_if_unreferenced(tx, old_cap, now)?.then(|| old_cap.to_owned()))
        }
        _ => Ok(None),
    }
}

fn insert_file(
    tx: &Transaction<'_>,
    parent: i64,
    name: &str,
    new: &FileContent<'_>,
    now: i64,
) -> Result<i64, NamespaceError> {
    let (cap, inline) = split(new.content);
    tx.prepare_cached(
        "INSERT INTO nodes (parent, name, kind, size, created, modified, etag, cap, inline)
         VALUES (?1, ?2, 'file', ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            parent,
            name,
            new.size,
            now,
            new.mtime_ms,
            new.etag,
            cap,
            inline
        ])
    })
    .ctx("creating a file")?;
    Ok(tx.last_insert_rowid())
}

fn reread(tx: &Transaction<'_>, id: i64, path: &NsPath) -> Result<Node, NamespaceError> {
    node_by_id(tx, id)?.ok_or_else(|| NamespaceError::NotFound {
        path: path.to_string(),
    })
}

impl Namespace {
    /// The node at `path`, or `None`.
    pub async fn lookup(&self, path: &str) -> Result<Option<Node>, NamespaceError> {
        let path = NsPath::parse(path)?;
        self.read_few("looking up a path", move |tx, _| resolve(tx, &path))
            .await
    }

    /// The children of the directory at `path`, sorted by name (bytewise).
    pub async fn list(&self, path: &str) -> Result<Vec<Node>, NamespaceError> {
        self.list_page(path, None, usize::MAX).await
    }

    /// At most `limit` children of the directory at `path` whose names sort
    /// after `after` (all from the first when `None`), by name (bytewise):
    /// a listing read a page at a time, so that its memory does not grow
    /// with the folder.
    pub async fn list_page(
        &self,
        path: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Node>, NamespaceError> {
        let path = NsPath::parse(path)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("listing a directory", false, move |tx, _| {
            let dir = require(tx, &path)?;
            if !dir.is_dir() {
                return Err(NamespaceError::NotADirectory {
                    path: path.to_string(),
                });
            }
            // '' sorts before every name, and no name is empty.
            let after = after.as_deref().unwrap_or_default();
            tx.prepare_cached(&format!(
                "SELECT {NODE_COLS} FROM nodes WHERE parent = ?1 AND name > ?2 \
                 ORDER BY name LIMIT ?3"
            ))
            .and_then(|mut s| {
                s.query_map(params![dir.id, after, limit], node_from_row)?
                    .collect()
            })
            .ctx("listing a directory")
        })
        .await
    }

    /// Creates a directory. Fails with `AlreadyExists` if anything has that
    /// name, `NotFound`/`NotADirectory` if the parent is missing or a file.
    pub async fn create_dir(&self, path: &str) -> Result<Node, NamespaceError> {
        let path = NsPath::parse(path)?;
        self.run("creating a directory", true, move |tx, now| {
            if path.is_root() {
                return Err(NamespaceError::AlreadyExists {
                    path: path.to_string(),
                });
            }
            let (dir, name) = parent_dir(tx, &path)?;
            if child(tx, dir.id, name)?.is_some() {
                return Err(NamespaceError::AlreadyExists {
                    path: path.to_string(),
                });
            }
            tx.execute(
                "INSERT INTO nodes (parent, name, kind, size, created, modified, etag)
                 VALUES (?1, ?2, 'dir', 0, ?3, ?3, '')",
                params![dir.id, name, now],
            )
            .ctx("creating a directory")?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE nodes SET etag = ?2 WHERE id = ?1",
                params![id, dir_etag(id, now)],
            )
            .ctx("creating a directory")?;
            reread(tx, id, &path)
        })
        .await
    }

    /// Makes `content` the file at `path`, in one transaction: creates the
    /// file, or replaces the content of the existing file row (keeping its
    /// id, hence its properties and creation time). The replaced capability
    /// goes on the garbage list unless another row still refers to it.
    ///
    /// `upload`, when given, is ended in the same transaction, so a crash
    /// can never leave a published file whose upload still looks pending
    /// (the next start's clean-up would delete its shares).
    ///
    /// Publishing a capability that is on the garbage list takes it off
    /// again; one a collector is freeing right now is refused with
    /// `Conflict` (its shares may already be gone).
    pub async fn publish_file(
        &self,
        path: &str,
        content: Content,
        size: u64,
        mtime: SystemTime,
        upload: Option<UploadId>,
    ) -> Result<PublishOutcome, NamespaceError> {
        let path = NsPath::parse(path)?;
        match &content {
            Content::Inline(b) if b.len() as u64 != size => {
                return Err(NamespaceError::InvalidArgument {
                    reason: format!("inline content of {} bytes with size {size}", b.len()),
                })
            }
            Content::Cap(c) if c.is_empty() => {
                return Err(NamespaceError::InvalidArgument {
                    reason: "empty capability".to_owned(),
                })
            }
            _ => {}
        }
        let size_i = to_i64(size, "size")?;
        let mtime_ms = to_ms(mtime);
        self.run("publishing a file", true, move |tx, now| {
            if path.is_root() {
                return Err(NamespaceError::IsADirectory {
                    path: path.to_string(),
                });
            }
            let (dir, name) = parent_dir(tx, &path)?;
            if let Content::Cap(c) = &content {
                garbage::reclaim(tx, &path, c)?;
            }
            let etag = content_etag(&content, size);
            let new = FileContent {
                content: &content,
                size: size_i,
                etag: &etag,
                mtime_ms,
            };
            let (id, created, garbage_queued) = match child(tx, dir.id, name)? {
                Some(old) if old.is_dir() => {
                    return Err(NamespaceError::IsADirectory {
                        path: path.to_string(),
                    })
                }
                Some(old) => {
                    let queued = replace_content(tx, &old, &new, now)?;
                    (old.id, false, queued)
                }
                None => {
                    let id = insert_file(tx, dir.id, name, &new, now)?;
                    (id, true, None)
                }
            };
            if let Some(upload) = upload {
                garbage::end_upload_tx(tx, upload)?;
            }
            Ok(PublishOutcome {
                node: reread(tx, id, &path)?,
                created,
                garbage_queued,
            })
        })
        .await
    }

    /// Removes the file or directory at `path`, recursively.
    pub async fn remove(&self, path: &str) -> Result<Removal, NamespaceError> {
        self.remove_inner(path, None).await
    }

    /// Removes the file at `path`; `IsADirectory` for a directory.
    pub async fn remove_file(&self, path: &str) -> Result<Removal, NamespaceError> {
        self.remove_inner(path, Some(NodeKind::File)).await
    }

    /// Removes the empty directory at `path`: `NotADirectory` for a file,
    /// `DirectoryNotEmpty` if it has children.
    pub async fn remove_dir(&self, path: &str) -> Result<Removal, NamespaceError> {
        self.remove_inner(path, Some(NodeKind::Dir)).await
    }

    async fn remove_inner(
        &self,
        path: &str,
        only: Option<NodeKind>,
    ) -> Result<Removal, NamespaceError> {
        let path = NsPath::parse(path)?;
        self.run("removing", true, move |tx, now| {
            if path.is_root() {
                return Err(NamespaceError::Conflict {
                    path: path.to_string(),
                    reason: "the root cannot be removed",
                });
            }
            let node = require(tx, &path)?;
            let p = path.to_string();
            match (only, node.kind) {
                (Some(NodeKind::File), NodeKind::Dir) => {
                    return Err(NamespaceError::IsADirectory { path: p })
                }
                (Some(NodeKind::Dir), NodeKind::File) => {
                    return Err(NamespaceError::NotADirectory { path: p })
                }
                (Some(NodeKind::Dir), NodeKind::Dir) => {
                    let children: i64 = tx
                        .query_row(
                            "SELECT COUNT(*) FROM nodes WHERE parent = ?1",
                            [node.id],
                            |r| r.get(0),
                        )
                        .ctx("counting children")?;
                    if children > 0 {
                        return Err(NamespaceError::DirectoryNotEmpty { path: p });
                    }
                }
                _ => {}
            }
            remove_subtree(tx, node.id, now)
        })
        .await
    }

    /// Moves `from` to `to` as one row update, also for a directory (its
    /// children, and every node's properties, come along: they key on ids).
    ///
    /// An existing destination is `AlreadyExists` unless `overwrite`; then it
    /// is removed (recursively, its content queued as garbage) in the same
    /// transaction. Moving a directory into itself, or onto one of the
    /// source's ancestors, is `Conflict`. Renaming a path to itself is a
    /// no-op. Locks are not touched: see [`Namespace::rename_locks`].
    pub async fn rename(
        &self,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<RenameOutcome, NamespaceError> {
        let from = NsPath::parse(from)?;
        let to = NsPath::parse(to)?;
        self.run("renaming", true, move |tx, now| {
            if from.is_root() || to.is_root() {
                return Err(NamespaceError::Conflict {
                    path: "/".to_owned(),
                    reason: "the root cannot be moved or replaced",
                });
            }
            let src = require(tx, &from)?;
            if from == to {
                return Ok(RenameOutcome::default());
            }
            // For a file, a destination below it fails below as NotADirectory.
            if src.is_dir() && from.is_ancestor_of(&to) {
                return Err(NamespaceError::Conflict {
                    path: to.to_string(),
                    reason: "cannot move a directory into itself",
                });
            }
            if to.is_ancestor_of(&from) {
                return Err(NamespaceError::Conflict {
                    path: to.to_string(),
                    reason: "cannot replace an ancestor of the source",
                });
            }
            let (dir, name) = parent_dir(tx, &to)?;
            let mut outcome = RenameOutcome::default();
            if let Some(existing) = child(tx, dir.id, name)? {
                if !overwrite {
                    return Err(NamespaceError::AlreadyExists {
                        path: to.to_string(),
                    });
                }
                outcome.replaced = true;
                outcome.garbage_queued = remove_subtree(tx, existing.id, now)?.garbage_queued;
            }
            tx.execute(
                "UPDATE nodes SET parent = ?2, name = ?3 WHERE id = ?1",
                params![src.id, dir.id, name],
            )
            .ctx("moving a node")?;
            Ok(outcome)
        })
        .await
    }

    /// Copies the file `from` to `to` sharing its content (no data copied):
    /// same capability or inline bytes, same size, modification time and
    /// ETag, and a copy of its dead properties. An existing destination file
    /// is replaced (its properties too; its old capability queued if this
    /// was the last reference); a directory there is `IsADirectory`.
    pub async fn copy_file(&self, from: &str, to: &str) -> Result<PublishOutcome, NamespaceError> {
        let from = NsPath::parse(from)?;
        let to = NsPath::parse(to)?;
        self.run("copying a file", true, move |tx, now| {
            let src = require(tx, &from)?;
            let Some(content) = src.content.clone() else {
                return Err(NamespaceError::IsADirectory {
                    path: from.to_string(),
                });
            };
            if from == to {
                return Ok(PublishOutcome {
                    node: src,
                    created: false,
                    garbage_queued: None,
                });
            }
            if to.is_root() {
                return Err(NamespaceError::IsADirectory {
                    path: to.to_string(),
                });
            }
            let (dir, name) = parent_dir(tx, &to)?;
            let new = FileContent {
                content: &content,
                size: to_i64(src.size, "size")?,
                etag: &src.etag,
                mtime_ms: to_ms(src.modified),
            };
            let (id, created, garbage_queued) = match child(tx, dir.id, name)? {
                Some(old) if old.is_dir() => {
                    return Err(NamespaceError::IsADirectory {
                        path: to.to_string(),
                    })
                }
                Some(old) => {
                    let queued = replace_content(tx, &old, &new, now)?;
                    tx.execute("DELETE FROM props WHERE node_id = ?1", [old.id])
                        .ctx("dropping the replaced file's properties")?;
                    (old.id, false, queued)
                }
                None => {
                    let id = insert_file(tx, dir.id, name, &new, now)?;
                    (id, true, None)
                }
            };
            tx.execute(
                "INSERT INTO props (node_id, namespace, name, value)
                 SELECT ?2, namespace, name, value FROM props WHERE node_id = ?1",
                params![src.id, id],
            )
            .ctx("copying properties")?;
            Ok(PublishOutcome {
                node: reread(tx, id, &to)?,
                created,
                garbage_queued,
            })
        })
        .await
    }

    /// Sets the modification time of the file or directory at `path`.
    /// The ETag does not change: it follows the content.
    pub async fn set_mtime(&self, path: &str, mtime: SystemTime) -> Result<Node, NamespaceError> {
        let path = NsPath::parse(path)?;
        let ms = to_ms(mtime);
        self.run("setting a modification time", true, move |tx, _| {
            let node = require(tx, &path)?;
            tx.execute(
                "UPDATE nodes SET modified = ?2 WHERE id = ?1",
                params![node.id, ms],
            )
            .ctx("setting a modification time")?;
            reread(tx, node.id, &path)
        })
        .await
    }

    /// Counts files, directories and bytes (see [`Usage`]).
    pub async fn usage(&self) -> Result<Usage, NamespaceError> {
        self.run("computing usage", false, |tx, _| {
            let (files, dirs, logical): (i64, i64, i64) = tx
                .query_row(
                    "SELECT COALESCE(SUM(kind = 'file'), 0), COALESCE(SUM(kind = 'dir'), 0) - 1,
                            COALESCE(SUM(size), 0) FROM nodes",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .ctx("computing usage")?;
            let stored: i64 = tx
                .query_row(
                    "SELECT COALESCE((SELECT SUM(size) FROM
                                (SELECT MAX(size) AS size FROM nodes WHERE cap IS NOT NULL GROUP BY cap)), 0)
                          + COALESCE((SELECT SUM(size) FROM nodes WHERE inline IS NOT NULL), 0)",
                    [],
                    |r| r.get(0),
                )
                .ctx("computing usage")?;
            let u = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(Usage {
                files: u(files),
                dirs: u(dirs),
                logical_bytes: u(logical),
                stored_bytes: u(stored),
            })
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::super::testutil::*;
    use super::super::{Prop, PropPatch};
    use super::*;
    use std::time::Duration;

    fn names(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[tokio::test]
    async fn tree_operations_and_their_errors() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let a = ns.create_dir("/a").await.unwrap();
        assert!(a.is_dir());
        assert_eq!(a.parent, Some(ROOT_ID));
        ns.create_dir("/a/b/").await.unwrap();
        assert!(matches!(
            ns.create_dir("/a").await,
            Err(NamespaceError::AlreadyExists { path }) if path == "/a"
        ));
        assert!(matches!(
            ns.create_dir("/").await,
            Err(NamespaceError::AlreadyExists { .. })
        ));
        assert!(matches!(
            ns.create_dir("/x/y").await,
            Err(NamespaceError::NotFound { path }) if path == "/x"
        ));
        let out = ns
            .publish_file("/a/f", Content::Inline(b"hello".to_vec()), 5, t0(), None)
            .await
            .unwrap();
        assert!(out.created);
        assert_eq!(out.node.size, 5);
        assert!(matches!(
            ns.create_dir("/a/f/g").await,
            Err(NamespaceError::NotADirectory { path }) if path == "/a/f"
        ));
        assert!(matches!(
            ns.publish_file("/a/f/g", cap("c"), 1, t0(), None).await,
            Err(NamespaceError::NotADirectory { .. })
        ));
        assert!(matches!(
            ns.publish_file("/a", cap("c"), 1, t0(), None).await,
            Err(NamespaceError::IsADirectory { .. })
        ));
        assert!(matches!(
            ns.publish_file("/", cap("c"), 1, t0(), None).await,
            Err(NamespaceError::IsADirectory { .. })
        ));
        assert!(matches!(
            ns.publish_file("/a/g", Content::Inline(vec![1, 2]), 3, t0(), None)
                .await,
            Err(NamespaceError::InvalidArgument { .. })
        ));

        let file = ns.lookup("/a/f").await.unwrap().unwrap();
        assert_eq!(file.kind, NodeKind::File);
        assert_eq!(file.content, Some(Content::Inline(b"hello".to_vec())));
        assert_eq!(file.modified, t0());
        assert_eq!(names(&ns.list("/a").await.unwrap()), ["b", "f"]);
        assert_eq!(names(&ns.list("/").await.unwrap()), ["a"]);
        assert!(matches!(
            ns.list("/a/f").await,
            Err(NamespaceError::NotADirectory { .. })
        ));
        assert!(matches!(
            ns.list("/zz").await,
            Err(NamespaceError::NotFound { .. })
        ));
        assert_eq!(ns.lookup("/nope").await.unwrap(), None);
        assert_eq!(ns.lookup("/a/f/x").await.unwrap(), None);

        let usage = ns.usage().await.unwrap();
        assert_eq!(
            usage,
            Usage {
                files: 1,
                dirs: 2,
                logical_bytes: 5,
                stored_bytes: 5
            }
        );

        assert!(matches!(
            ns.remove_dir("/a").await,
            Err(NamespaceError::DirectoryNotEmpty { .. })
        ));
        assert!(matches!(
            ns.remove_file("/a").await,
            Err(NamespaceError::IsADirectory { .. })
        ));
        assert!(matches!(
            ns.remove_dir("/a/f").await,
            Err(NamespaceError::NotADirectory { .. })
        ));
        assert!(matches!(
            ns.remove("/").await,
            Err(NamespaceError::Conflict { .. })
        ));
        assert!(matches!(
            ns.remove("/q").await,
            Err(NamespaceError::NotFound { .. })
        ));
        assert_eq!(ns.remove_dir("/a/b").await.unwrap().nodes, 1);
        assert_eq!(ns.remove("/a").await.unwrap().nodes, 2);
        assert_eq!(ns.lookup("/a").await.unwrap(), None);
        assert_eq!(ns.usage().await.unwrap(), Usage::default());
    }

    #[tokio::test]
    async fn invalid_names_are_refused_everywhere() {
        let f = Fixture::new().await;
        for bad in ["a", "/a//b", "/..", "/a/./b", "/nul\0", ""] {
            let invalid = |r: Result<(), NamespaceError>| {
                assert!(
                    matches!(r, Err(NamespaceError::InvalidName { .. })),
                    "{bad:?}: {r:?}"
                )
            };
            invalid(f.ns.create_dir(bad).await.map(drop));
            invalid(f.ns.lookup(bad).await.map(drop));
            invalid(
                f.ns.publish_file(bad, cap("c"), 1, t0(), None)
                    .await
                    .map(drop),
            );
            invalid(f.ns.rename("/x", bad, true).await.map(drop));
            invalid(
                f.ns.lock(bad, None, None, None, false, false)
                    .await
                    .map(drop),
            );
        }
    }

    #[tokio::test]
    async fn renaming_a_directory_keeps_its_children_and_properties() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        ns.create_dir("/a").await.unwrap();
        ns.create_dir("/a/b").await.unwrap();
        ns.create_dir("/ab").await.unwrap();
        let c = f.put("/a/b/c", "cap-c", 7).await.node;
        ns.patch_props(
            "/a/b",
            vec![PropPatch::Set(Prop {
                namespace: String::new(),
                name: "p".into(),
                value: b"v".to_vec(),
            })],
        )
        .await
        .unwrap();

        let out = ns.rename("/a", "/z", false).await.unwrap();
        assert_eq!(out, RenameOutcome::default());
        assert_eq!(ns.lookup("/a").await.unwrap(), None);
        assert_eq!(ns.lookup("/z/b/c").await.unwrap().unwrap(), c);
        assert_eq!(ns.list_props("/z/b").await.unwrap().len(), 1);
        assert!(ns.lookup("/ab").await.unwrap().is_some());

        assert!(matches!(
            ns.rename("/z", "/z/b/q", false).await,
            Err(NamespaceError::Conflict { .. })
        ));
        assert!(matches!(
            ns.rename("/z/b", "/z", true).await,
            Err(NamespaceError::Conflict { .. })
        ));
        assert!(matches!(
            ns.rename("/z", "/ab", false).await,
            Err(NamespaceError::AlreadyExists { .. })
        ));
        assert!(matches!(
            ns.rename("/z", "/no/where", false).await,
            Err(NamespaceError::NotFound { path }) if path == "/no"
        ));
        assert!(matches!(
            ns.rename("/missing", "/y", false).await,
            Err(NamespaceError::NotFound { .. })
        ));
        f.put("/file", "cap-file", 1).await;
        assert!(matches!(
            ns.rename("/file", "/file/x", false).await,
            Err(NamespaceError::NotADirectory { path }) if path == "/file"
        ));
        assert_eq!(
            ns.rename("/z", "/z/", false).await.unwrap(),
            RenameOutcome::default()
        );

        // Overwrite: the destination subtree goes, its content to garbage.
        f.put("/ab/old", "cap-old", 3).await;
        let out = ns.rename("/z", "/ab", true).await.unwrap();
        assert!(out.replaced);
        assert_eq!(out.garbage_queued, 1);
        assert_eq!(f.garbage().await, ["cap-old"]);
        assert_eq!(ns.lookup("/ab/b/c").await.unwrap().unwrap().id, c.id);
        assert_eq!(ns.lookup("/ab/old").await.unwrap(), None);

        // A file over a file, sharing content: nothing becomes garbage.
        ns.copy_file("/ab/b/c", "/c2").await.unwrap();
        let out = ns.rename("/c2", "/ab/b/c", true).await.unwrap();
        assert_eq!(out.garbage_queued, 0);
        assert_eq!(f.garbage().await, ["cap-old"]);
    }

    #[tokio::test]
    async fn copy_shares_content_and_garbage_waits_for_the_last_reference() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let src = f.put("/f", "cap-1", 100).await.node;
        ns.patch_props(
            "/f",
            vec![PropPatch::Set(Prop {
                namespace: "urn:a".into(),
                name: "n".into(),
                value: b"1".to_vec(),
            })],
        )
        .await
        .unwrap();
        let out = ns.copy_file("/f", "/g").await.unwrap();
        assert!(out.created);
        assert_eq!(out.node.content, src.content);
        assert_eq!(out.node.etag, src.etag);
        assert_eq!(out.node.size, 100);
        assert_ne!(out.node.id, src.id);
        assert_eq!(ns.list_props("/g").await.unwrap().len(), 1);
        let usage = ns.usage().await.unwrap();
        assert_eq!((usage.logical_bytes, usage.stored_bytes), (200, 100));

        assert_eq!(ns.remove("/f").await.unwrap().garbage_queued, 0);
        assert!(f.garbage().await.is_empty());
        assert_eq!(ns.remove("/g").await.unwrap().garbage_queued, 1);
        assert_eq!(f.garbage().await, ["cap-1"]);

        // Copy over an existing file: its old content and properties go.
        f.put("/s", "cap-s", 1).await;
        f.put("/d", "cap-d", 1).await;
        ns.patch_props(
            "/d",
            vec![PropPatch::Set(Prop {
                namespace: "urn:a".into(),
                name: "old".into(),
                value: b"x".to_vec(),
            })],
        )
        .await
        .unwrap();
        let out = ns.copy_file("/s", "/d").await.unwrap();
        assert!(!out.created);
        assert_eq!(out.garbage_queued.as_deref(), Some("cap-d"));
        assert!(ns.list_props("/d").await.unwrap().is_empty());

        ns.create_dir("/dir").await.unwrap();
        assert!(matches!(
            ns.copy_file("/dir", "/x").await,
            Err(NamespaceError::IsADirectory { .. })
        ));
        assert!(matches!(
            ns.copy_file("/s", "/dir").await,
            Err(NamespaceError::IsADirectory { .. })
        ));
        assert!(matches!(
            ns.copy_file("/nope", "/x").await,
            Err(NamespaceError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn recursive_remove_queues_each_unreferenced_cap_once() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        ns.create_dir("/d").await.unwrap();
        ns.create_dir("/d/e").await.unwrap();
        f.put("/d/1", "cap-1", 1).await;
        f.put("/d/e/2", "cap-2", 1).await;
        ns.copy_file("/d/e/2", "/d/e/2b").await.unwrap();
        ns.copy_file("/d/1", "/kept").await.unwrap();
        let out = ns.remove("/d").await.unwrap();
        assert_eq!(out.nodes, 5);
        assert_eq!(out.garbage_queued, 1);
        assert_eq!(f.garbage().await, ["cap-2"]);
    }

    #[tokio::test]
    async fn publish_replaces_in_place_and_queues_the_old_cap() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let first = f.put("/f", "cap-1", 10).await;
        assert!(first.created);
        assert_eq!(first.garbage_queued, None);
        f.clock.advance(Duration::from_secs(5));
        let second = f.put("/f", "cap-2", 20).await;
        assert!(!second.created);
        assert_eq!(second.garbage_queued.as_deref(), Some("cap-1"));
        assert_eq!(second.node.id, first.node.id);
        assert_eq!(second.node.created, first.node.created);
        assert_eq!(second.node.size, 20);
        assert_ne!(second.node.etag, first.node.etag);
        assert_eq!(f.garbage().await, ["cap-1"]);

        // Republishing the same capability is not a replacement.
        assert_eq!(f.put("/f", "cap-2", 20).await.garbage_queued, None);
        assert_eq!(f.put("/f", "cap-2", 20).await.node.etag, second.node.etag);

        let inline = ns
            .publish_file("/f", Content::Inline(b"abc".to_vec()), 3, t0(), None)
            .await
            .unwrap();
        assert_eq!(inline.garbage_queued.as_deref(), Some("cap-2"));
        let again = ns
            .publish_file("/f", Content::Inline(b"abc".to_vec()), 3, t0(), None)
            .await
            .unwrap();
        assert_eq!(again.node.etag, inline.node.etag, "same bytes, same ETag");
        assert_eq!(again.garbage_queued, None);
        let empty = ns
            .publish_file("/e", Content::Inline(Vec::new()), 0, t0(), None)
            .await
            .unwrap();
        assert_ne!(empty.node.etag, again.node.etag);

        // A queued capability published again leaves the garbage list.
        f.put("/g", "cap-1", 10).await;
        assert_eq!(f.garbage().await, ["cap-2"]);
    }

    #[tokio::test]
    async fn set_mtime_keeps_the_etag() {
        let f = Fixture::new().await;
        let node = f.put("/f", "cap", 1).await.node;
        let later = t0() + Duration::from_millis(123_456);
        let after = f.ns.set_mtime("/f", later).await.unwrap();
        assert_eq!(after.modified, later);
        assert_eq!(after.etag, node.etag);
        let dir = f.ns.set_mtime("/", later).await.unwrap();
        assert_eq!(dir.modified, later);
        assert!(matches!(
            f.ns.set_mtime("/nope", later).await,
            Err(NamespaceError::NotFound { .. })
        ));
    }
}
