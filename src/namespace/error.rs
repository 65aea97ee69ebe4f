//! The one error type of the namespace.

use super::locks::Lock;

/// Everything a namespace operation can fail with.
///
/// Paths in errors are canonical namespace paths (`/a/b`, root `/`).
/// The variants a WebDAV front end maps to status codes carry the path the
/// caller must name in its answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum NamespaceError {
    /// The path (or, for a create, its parent) does not exist.
    #[error("not found: {path}")]
    NotFound { path: String },
    /// The destination exists and the operation does not replace it.
    #[error("already exists: {path}")]
    AlreadyExists { path: String },
    /// A path component that must be a directory is a file.
    #[error("not a directory: {path}")]
    NotADirectory { path: String },
    /// A file operation named a directory.
    #[error("is a directory: {path}")]
    IsADirectory { path: String },
    /// A non-recursive removal of a directory that still has children.
    #[error("directory not empty: {path}")]
    DirectoryNotEmpty { path: String },
    /// The path is malformed or one of its names is not allowed.
    #[error("invalid name {name:?} in {path:?}: {reason}")]
    InvalidName {
        path: String,
        name: String,
        reason: &'static str,
    },
    /// The operation is refused by the state of the tree: moving a directory
    /// into itself, removing the root, publishing content that is being
    /// garbage-collected.
    #[error("conflict at {path}: {reason}")]
    Conflict { path: String, reason: &'static str },
    /// A lock (rooted at `path`, token `token`) blocks the operation; `lock`
    /// is that lock in full, for the `DavLockSystem` answers.
    #[error("locked: {path} by {token}")]
    Locked {
        token: String,
        path: String,
        /// The blocking lock in full, for the `DavLockSystem` answers.
        lock: Box<Lock>,
    },
    /// UNLOCK or refresh named a token that does not cover the path (never
    /// existed, released, or expired).
    #[error("no lock {token} covers {path}")]
    LockNotFound { token: String, path: String },
    /// One dead property's value is larger than a property may be.
    #[error("property {{{namespace}}}{name} of {path} is {size} bytes; at most {limit} are kept")]
    PropertyTooLarge {
        path: String,
        namespace: String,
        name: String,
        size: usize,
        limit: usize,
    },
    /// The dead properties of one node would together exceed their budget.
    #[error("the properties of {path} would take {total} bytes; at most {limit} are kept")]
    PropertiesFull {
        path: String,
        total: u64,
        limit: u64,
    },
    /// The caller passed arguments that contradict each other (e.g. inline
    /// content whose length is not the size given).
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    /// The database was written by a newer griddav; we refuse to guess.
    #[error(
        "namespace database has schema version {found}; this griddav supports up to {supported}"
    )]
    UnsupportedSchema { found: i64, supported: i64 },
    /// SQLite failed; `context` says what we were doing.
    #[error("namespace database error while {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// Making committed changes durable failed (an `fsync` of the database
    /// or its log): the disk's fault, not the client's. After such a
    /// failure every change fails until griddav restarts.
    #[error("namespace database sync failed while {context}: {source}")]
    Sync {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The blocking task running the query panicked or was cancelled at
    /// shutdown: a bug or an exiting runtime, not the client's fault.
    #[error("namespace worker failed while {context}: {reason}")]
    Internal {
        context: &'static str,
        reason: String,
    },
}

/// Attaches what we were doing to a rusqlite error.
pub(crate) trait DbContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, NamespaceError>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn ctx(self, context: &'static str) -> Result<T, NamespaceError> {
        self.map_err(|source| NamespaceError::Db { context, source })
    }
}

impl NamespaceError {
    /// The database's disk (or quota) is full.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            NamespaceError::Db { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DiskFull)
            ),
            NamespaceError::Sync { source, .. } => crate::grid::io_out_of_space(source),
            _ => false,
        }
    }
}
