//! The directory tree, dead properties, locks and the garbage list, on SQLite.
//!
//! ```text
//!   dav ──> Namespace ──spawn_blocking──> Mutex<rusqlite::Connection> ──> namespace.db (WAL)
//!             nodes     inode-style rows: MOVE of a directory is one UPDATE
//!             props     dead properties, keyed by node id (move with it, cascade on delete)
//!             locks     keyed by canonical path, with expiry
//!             garbage   capabilities no row refers to any more, for the share collector
//!             pending_uploads   journal of uploads in flight, for crash clean-up
//! ```
//!
//! Decisions the DAV layer relies on:
//! - **Paths** are `&str`, percent-decoded, starting with `/`, an optional
//!   trailing `/` ignored (see [`NsPath`]). Bad names give
//!   [`NamespaceError::InvalidName`].
//! - **Atomicity**: every public method is one SQLite transaction. A method
//!   whose future is dropped may still complete (the blocking task runs on);
//!   it is then complete or absent, never half done.
//! - **Content is immutable** and identified by its capability string; rows
//!   sharing a capability share the shares. A capability goes on the garbage
//!   list in the same transaction that drops its last reference.
//! - **ETags** derive from the content (capability or inline bytes, and the
//!   size), so a COPY has its source's ETag and setting the mtime keeps it.
//!   Capabilities carry a random key per version, so re-uploading the same
//!   bytes still gives a new ETag; identical inline content keeps its ETag.
//! - **Times** are stored in milliseconds since the epoch.
//!
//! One writer connection behind a mutex serialises all work of this process;
//! WAL keeps it safe with other processes on the same file (they wait up to
//! the busy timeout).

mod clock;
mod error;
mod garbage;
mod locks;
mod path;
mod props;
mod schema;
mod tree;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::NamespaceError;
pub use garbage::{PendingUpload, UploadId};
pub use locks::Lock;
pub use path::{validate_name, NsPath};
pub use props::{Prop, PropPatch};
pub use tree::{Content, Node, NodeKind, PublishOutcome, Removal, RenameOutcome, Usage};

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use error::DbContext;

/// A handle on the namespace database; clone it freely (an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Namespace {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
}

impl Namespace {
    /// Opens (creating and migrating if needed) the database at `path`, on
    /// the system clock.
    pub async fn open(path: impl AsRef<Path>) -> Result<Namespace, NamespaceError> {
        Self::open_with_clock(path, Arc::new(SystemClock)).await
    }

    /// Like [`Namespace::open`] with an injected clock (tests use
    /// [`ManualClock`] to expire locks without sleeping).
    pub async fn open_with_clock(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Namespace, NamespaceError> {
        let path = path.as_ref().to_owned();
        let now = clock::to_ms(clock.now());
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, NamespaceError> {
            let mut conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ctx("opening the namespace database")?;
            schema::prepare(&mut conn, now)?;
            // Claims belong to collectors of a previous run, which are gone:
            // their entries must be taken again.
            garbage::release_all_claims(&conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| NamespaceError::Internal {
            context: "opening the namespace database",
            reason: e.to_string(),
        })??;
        Ok(Namespace {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                clock,
            }),
        })
    }

    /// The clock this namespace uses.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Runs `f` on the connection on the blocking pool, inside one
    /// transaction (IMMEDIATE when `write`, so a read-then-write never
    /// upgrades and fails with SQLITE_BUSY), committed if `f` succeeds.
    async fn run<T, F>(&self, context: &'static str, write: bool, f: F) -> Result<T, NamespaceError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> Result<T, NamespaceError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside `f` rolled its transaction back as it unwound
            // (Transaction's Drop), so the connection is consistent even if
            // the mutex is poisoned.
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            let behavior = if write {
                TransactionBehavior::Immediate
            } else {
                TransactionBehavior::Deferred
            };
            let tx = conn.transaction_with_behavior(behavior).ctx(context)?;
            let now = clock::to_ms(inner.clock.now());
            let out = f(&tx, now)?;
            tx.commit().ctx(context)?;
            Ok(out)
        })
        .await
        .map_err(|e| NamespaceError::Internal {
            context,
            reason: e.to_string(),
        })?
    }
}
