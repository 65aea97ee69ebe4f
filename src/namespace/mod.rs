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
//! - **Durability**: a method returns only once what it committed, and
//!   every commit it could have read, is on stable storage (group commit
//!   of the WAL, see `durable.rs`). An answer built on its result can
//!   promise that a power cut will not take the change back.
//!
//! One connection behind a mutex serialises all work of this process (there
//! is no read pool: every statement is an indexed lookup, and the writes are
//! short). Reads of a few rows run on the caller's thread when the
//! connection is free and nothing they could see awaits its sync; all else
//! runs on the blocking pool. Run one griddav per database: opening
//! releases the garbage claims of collectors that are presumed dead (see
//! `garbage.rs`).

mod clock;
mod durable;
mod error;
mod files;
mod garbage;
mod locks;
mod path;
mod props;
mod reserve;
mod schema;
mod tree;

pub use clock::{Clock, ManualClock, SystemClock};
pub use durable::SyncStats;
pub use error::NamespaceError;
pub use files::GridFile;
pub use garbage::{PendingUpload, UploadId};
pub use locks::Lock;
pub use path::{validate_name, NsPath};
pub use props::{
    ChildPropsPage, Prop, PropPatch, CHILD_PAGE_BYTES, MAX_PROPS_PER_NODE, MAX_PROP_VALUE,
};
pub use tree::{Content, Node, NodeKind, PublishOutcome, Removal, RenameOutcome, Usage};

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use durable::WalSync;
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
    sync: WalSync,
    /// Committed changes a namespace copy must carry (see
    /// [`Namespace::change_count`]).
    changes: std::sync::atomic::AtomicU64,
    /// `None` for a read-only handle.
    reserve: Option<reserve::Reserve>,
}

/// Write transactions that change nothing a user sees: the collector's
/// and the upload journal's bookkeeping. They do not count as changes for
/// the namespace copies, or an idle server would copy itself for ever
/// (each copy frees an old one, which is such a change).
const BOOKKEEPING: &[&str] = &[
    "taking garbage",
    "finishing garbage",
    "releasing garbage",
    "queueing garbage",
    "beginning an upload",
    "ending an upload",
];

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
        let sync = WalSync::new(&path);
        let (conn, sync, reserve) = on_blocking_pool(
            "opening the namespace database",
            move || -> Result<_, NamespaceError> {
                // It holds every capability: readable by its owner only (SQLite
                // gives its -wal and -shm files the same mode). Created here,
                // or tightened if an older version left it group-readable.
                {
                    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                    let internal = |e: std::io::Error| NamespaceError::Internal {
                        context: "creating the namespace database owner-only",
                        reason: e.to_string(),
                    };
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(internal)?;
                    let mode = file.metadata().map_err(internal)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        file.set_permissions(std::fs::Permissions::from_mode(0o600))
                            .map_err(internal)?;
                    }
                }
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
                sync.sync_at_open(&path)?;
                let reserve = reserve::Reserve::open(&path);
                Ok((conn, sync, reserve))
            },
        )
        .await??;
        Ok(Namespace {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                clock,
                sync,
                changes: std::sync::atomic::AtomicU64::new(0),
                reserve: Some(reserve),
            }),
        })
    }

    /// How many committed write transactions changed names, content,
    /// properties or locks since the namespace was opened: a copy taken
    /// after reading this holds at least those changes.
    pub fn change_count(&self) -> u64 {
        self.inner
            .changes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Opens an existing database for reading only, beside a `griddav
    /// serve` that writes it (`griddav check`): no migration, no release of
    /// the collector's claims, no change of any kind.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Namespace, NamespaceError> {
        let path = path.as_ref().to_owned();
        let sync = WalSync::new(&path);
        let conn = on_blocking_pool(
            "opening the namespace database read-only",
            move || -> Result<_, NamespaceError> {
                let conn = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .ctx("opening the namespace database read-only")?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .ctx("setting busy timeout")?;
                let found: i64 = conn
                    .pragma_query_value(None, "user_version", |r| r.get(0))
                    .ctx("reading the schema version")?;
                if found != schema::SCHEMA_VERSION {
                    return Err(NamespaceError::UnsupportedSchema {
                        found,
                        supported: schema::SCHEMA_VERSION,
                    });
                }
                Ok(conn)
            },
        )
        .await??;
        Ok(Namespace {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                clock: Arc::new(SystemClock),
                sync,
                changes: std::sync::atomic::AtomicU64::new(0),
                reserve: None,
            }),
        })
    }

    /// Whether the database's disk is so full that new content must be
    /// refused, keeping the room left for removals (see `reserve.rs`).
    ///
    /// One `statvfs`, on the calling thread: the database's directory is
    /// on a local file system (SQLite's WAL needs one), whose `statvfs`
    /// reads counters in memory and waits for no device. A trip to the
    /// blocking pool for it cost every PUT two thread switches.
    pub fn space_is_short(&self) -> bool {
        self.inner.reserve.as_ref().is_some_and(|r| r.short())
    }

    /// The clock this namespace uses.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Counters of the group commit (see [`SyncStats`]).
    pub fn sync_stats(&self) -> SyncStats {
        self.inner.sync.stats()
    }

    /// Whether a sync of the log failed, so that nothing can be made
    /// durable (or read as durable) until griddav restarts.
    pub fn cannot_sync(&self) -> bool {
        self.inner.sync.is_poisoned()
    }

    /// A read of a few indexed rows (one path, one node's properties, the
    /// locks over one path), run on the calling thread when that cannot
    /// wait: the connection is free and every commit the read could see is
    /// already durable. Otherwise, as [`Namespace::run`] does.
    ///
    /// Why: a small file's PUT made five such reads, each a round trip to
    /// the blocking pool that cost more than the read (two thread switches
    /// against a few microseconds of SQLite on cached pages). Only reads of
    /// a bounded number of rows may come here; listings go through `run`.
    async fn read_few<T, F>(&self, context: &'static str, f: F) -> Result<T, NamespaceError>
    where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>, i64) -> Result<T, NamespaceError> + Send + 'static,
    {
        let (result, seq) = match self.read_now(context, f) {
            Ok(done) => done,
            // Busy (or poisoned, which `run` deals with): wait off this thread.
            Err(f) => return self.run(context, false, f).await,
        };
        if self.inner.sync.is_durable(seq) {
            return result;
        }
        // The read saw a commit whose sync is still running: wait for it
        // where waiting is allowed, as `run` would have.
        let inner = self.inner.clone();
        on_blocking_pool(context, move || inner.sync.wait(seq))
            .await?
            .and(result)
    }

    /// [`Namespace::read_few`]'s read, if the connection is free: the
    /// result and the last commit it could have read. `f` back if not.
    fn read_now<T, F>(
        &self,
        context: &'static str,
        f: F,
    ) -> Result<(Result<T, NamespaceError>, u64), F>
    where
        F: FnOnce(&Transaction<'_>, i64) -> Result<T, NamespaceError>,
    {
        let Ok(mut conn) = self.inner.conn.try_lock() else {
            return Err(f);
        };
        let now = clock::to_ms(self.inner.clock.now());
        let result = transact(&mut conn, TransactionBehavior::Deferred, context, now, f);
        Ok((result, self.inner.sync.last_commit()))
    }

    /// Runs `f` on the connection on the blocking pool, inside one
    /// transaction (IMMEDIATE when `write`, so a read-then-write never
    /// upgrades and fails with SQLITE_BUSY), committed if `f` succeeds.
    /// Returns once that commit, and every commit `f` could have read, is
    /// durable. A write that failed because the disk is full runs `f` once
    /// more on the namespace's reserve (see `reserve.rs`).
    async fn run<T, F>(
        &self,
        context: &'static str,
        write: bool,
        mut f: F,
    ) -> Result<T, NamespaceError>
    where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>, i64) -> Result<T, NamespaceError> + Send + 'static,
    {
        if write {
            // After a failed sync nothing more is changed: it could never
            // be reported durable.
            self.inner.sync.check_poisoned()?;
        }
        let inner = self.inner.clone();
        on_blocking_pool(context, move || {
            if write {
                if let Some(reserve) = &inner.reserve {
                    reserve.adjust();
                }
            }
            let (result, seq) = {
                // A panic inside `f` rolled its transaction back as it
                // unwound (Transaction's Drop), so the connection is
                // consistent even if the mutex is poisoned.
                let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
                let behavior = if write {
                    TransactionBehavior::Immediate
                } else {
                    TransactionBehavior::Deferred
                };
                let now = clock::to_ms(inner.clock.now());
                let changes_before = conn.total_changes();
                let mut result = transact(&mut conn, behavior, context, now, &mut f);
                if write
                    && result.as_ref().is_err_and(NamespaceError::is_out_of_space)
                    && inner.reserve.as_ref().is_some_and(|r| r.release())
                {
                    // Rolled back (the transaction was dropped): once more,
                    // on the reserve's room.
                    result = transact(&mut conn, behavior, context, now, &mut f);
                }
                // Still under the mutex: sequence numbers follow commit
                // order. A write transaction that changed no row (a lock
                // check's purge, a removal of no locks) wrote nothing to
                // the WAL and needs no sync of its own: measured, such
                // syncs cost a lone client a fifth of its rate. Statements
                // that write without counting a change (schema changes,
                // pragmas) run only at open, which syncs everything.
                let changed = conn.total_changes() != changes_before;
                if write && changed && result.is_ok() && !BOOKKEEPING.contains(&context) {
                    inner
                        .changes
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                let seq = if write && changed && result.is_ok() {
                    inner.sync.note_commit()
                } else {
                    inner.sync.last_commit()
                };
                (result, seq)
            };
            // The connection is free again: others commit while we sync.
            // Errors wait too: a refusal may rest on a commit not yet durable.
            inner.sync.wait(seq).and(result)
        })
        .await?
    }
}

/// `f` on the blocking pool; its panic is an internal error of `context`.
async fn on_blocking_pool<T: Send + 'static>(
    context: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NamespaceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NamespaceError::Internal {
            context,
            reason: e.to_string(),
        })
}

/// `f` inside one transaction of `behavior`, committed if it succeeds
/// (dropped, so rolled back, if not).
fn transact<T>(
    conn: &mut Connection,
    behavior: TransactionBehavior,
    context: &'static str,
    now: i64,
    f: impl FnOnce(&Transaction<'_>, i64) -> Result<T, NamespaceError>,
) -> Result<T, NamespaceError> {
    let tx = conn.transaction_with_behavior(behavior).ctx(context)?;
    let out = f(&tx, now)?;
    tx.commit().ctx(context)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
pub(crate) mod testutil {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A fixed "now" for tests (2027).
    pub(crate) fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    pub(crate) fn cap(s: &str) -> Content {
        Content::Cap(s.to_owned())
    }

    /// A namespace in a temporary directory on a manual clock.
    pub(crate) struct Fixture {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) ns: Namespace,
        pub(crate) clock: Arc<ManualClock>,
    }

    impl Fixture {
        pub(crate) async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new(t0()));
            let ns = Namespace::open_with_clock(dir.path().join("ns.db"), clock.clone())
                .await
                .unwrap();
            Fixture { dir, ns, clock }
        }

        pub(crate) fn db_path(&self) -> PathBuf {
            self.dir.path().join("ns.db")
        }

        /// Closes the database and opens it again, as a restart would.
        pub(crate) async fn reopen(self) -> Self {
            let Fixture { dir, ns, clock } = self;
            drop(ns);
            let ns = Namespace::open_with_clock(dir.path().join("ns.db"), clock.clone())
                .await
                .unwrap();
            Fixture { dir, ns, clock }
        }

        /// A file with a capability.
        pub(crate) async fn put(&self, path: &str, c: &str, size: u64) -> PublishOutcome {
            self.ns
                .publish_file(path, cap(c), size, t0(), None)
                .await
                .unwrap()
        }

        pub(crate) async fn garbage(&self) -> Vec<String> {
            self.ns.list_garbage().await.unwrap()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::testutil::*;
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[tokio::test]
    async fn a_fresh_database_has_a_root_wal_and_the_schema_version() {
        let f = Fixture::new().await;
        let root = f.ns.lookup("/").await.unwrap().unwrap();
        assert!(root.is_dir());
        assert_eq!(root.parent, None);
        assert!(f.ns.list("/").await.unwrap().is_empty());
        let conn = Connection::open(f.db_path()).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let f = Fixture::new().await;
        let path = f.db_path();
        drop(f.ns);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Namespace::open(&path).await.unwrap_err();
        assert!(
            matches!(err, NamespaceError::UnsupportedSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn everything_but_expired_locks_survives_a_reopen() {
        let f = Fixture::new().await;
        f.ns.create_dir("/d").await.unwrap();
        let file = f.put("/d/f", "cap-1", 10).await.node;
        f.ns.publish_file("/d/small", Content::Inline(b"hi".to_vec()), 2, t0(), None)
            .await
            .unwrap();
        f.ns.patch_props(
            "/d/f",
            vec![PropPatch::Set(Prop {
                namespace: "urn:x".into(),
                name: "color".into(),
                value: b"<x:color>red</x:color>".to_vec(),
            })],
        )
        .await
        .unwrap();
        let keep =
            f.ns.lock(
                "/d/f",
                Some("alice"),
                Some(b"<owner/>"),
                Some(Duration::from_secs(3600)),
                false,
                false,
            )
            .await
            .unwrap();
        let forever = f.ns.lock("/e", None, None, None, true, true).await.unwrap();
        f.ns.lock(
            "/d/small",
            None,
            None,
            Some(Duration::from_secs(1)),
            false,
            false,
        )
        .await
        .unwrap();
        f.put("/d/f2", "cap-2", 1).await;
        f.put("/d/f2", "cap-3", 1).await; // cap-2 -> garbage
        let upload = f.ns.begin_upload("si-1").await.unwrap();

        f.clock.advance(Duration::from_secs(2));
        let f = f.reopen().await;

        let again = f.ns.lookup("/d/f").await.unwrap().unwrap();
        assert_eq!(again, file);
        let small = f.ns.lookup("/d/small").await.unwrap().unwrap();
        assert_eq!(small.content, Some(Content::Inline(b"hi".to_vec())));
        assert_eq!(
            f.ns.get_prop("/d/f", "urn:x", "color")
                .await
                .unwrap()
                .unwrap(),
            b"<x:color>red</x:color>"
        );
        let mut locks = f.ns.list_locks().await.unwrap();
        locks.sort_by(|a, b| a.token.cmp(&b.token));
        let mut want = [keep, forever];
        want.sort_by(|a, b| a.token.cmp(&b.token));
        assert_eq!(
            locks
                .iter()
                .map(|l| (&l.token, &l.path, &l.owner, l.timeout_at))
                .collect::<Vec<_>>(),
            want.iter()
                .map(|l| (&l.token, &l.path, &l.owner, l.timeout_at))
                .collect::<Vec<_>>()
        );
        assert_eq!(f.garbage().await, ["cap-2"]);
        let pending = f.ns.pending_uploads().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, upload);
        assert_eq!(pending[0].recovery_token, "si-1");
    }

    /// dav-server needs `Send` futures from its backends.
    #[tokio::test]
    async fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let f = Fixture::new().await;
        send(&f.ns.lookup("/"));
        send(&f.ns.check("/", None, false, true, &["t"]));
        send(&f.ns.lock("/", None, None, None, false, false));
        send(&f.ns.publish_file("/f", cap("c"), 1, t0(), None));
    }

    /// COPY racing with removals of the source and of the copies: at the
    /// end the capability is on the garbage list if and only if no row
    /// refers to it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn copy_racing_remove_never_loses_or_leaks_a_capability() {
        for round in 0..5 {
            let f = Fixture::new().await;
            f.put("/f", "cap-x", 5).await;
            let mut tasks = Vec::new();
            for i in 0..16 {
                let ns = f.ns.clone();
                tasks.push(tokio::spawn(async move {
                    let _ = ns.copy_file("/f", &format!("/c{i}")).await;
                    if (i + round) % 3 == 0 {
                        let _ = ns.remove(&format!("/c{i}")).await;
                    }
                }));
            }
            let ns = f.ns.clone();
            tasks.push(tokio::spawn(async move {
                ns.remove("/f").await.unwrap();
            }));
            for t in tasks {
                t.await.unwrap();
            }
            let referenced =
                f.ns.list("/")
                    .await
                    .unwrap()
                    .iter()
                    .any(|n| n.content == Some(cap("cap-x")));
            let queued = f.garbage().await == ["cap-x"];
            assert!(
                referenced != queued,
                "round {round}: referenced {referenced}, queued {queued}"
            );
        }
    }

    /// Many writers on one path: the row ends as one version whole, and
    /// every replaced capability is queued exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishes_leave_one_version_and_queue_the_rest_once() {
        let f = Fixture::new().await;
        const N: u64 = 40;
        let mut tasks = Vec::new();
        for i in 0..N {
            let ns = f.ns.clone();
            tasks.push(tokio::spawn(async move {
                ns.publish_file("/f", cap(&format!("cap-{i}")), 1000 + i, t0(), None)
                    .await
                    .unwrap()
            }));
        }
        let mut created = 0;
        let mut reported = Vec::new();
        for t in tasks {
            let out = t.await.unwrap();
            created += usize::from(out.created);
            reported.extend(out.garbage_queued);
        }
        assert_eq!(created, 1, "exactly one publish created the file");
        let node = f.ns.lookup("/f").await.unwrap().unwrap();
        let Some(Content::Cap(winner)) = &node.content else {
            panic!("not a capability: {node:?}");
        };
        let i: u64 = winner.strip_prefix("cap-").unwrap().parse().unwrap();
        assert_eq!(node.size, 1000 + i, "size belongs to the winning version");

        let all: HashSet<String> = (0..N).map(|i| format!("cap-{i}")).collect();
        let garbage: HashSet<String> = f.garbage().await.into_iter().collect();
        let mut expected = all.clone();
        expected.remove(winner);
        assert_eq!(garbage, expected);
        assert_eq!(
            reported.len() as u64,
            N - 1,
            "each replaced cap reported once"
        );
        assert_eq!(reported.into_iter().collect::<HashSet<_>>(), expected);
    }
}
