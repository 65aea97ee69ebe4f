//! Group commit: a change is answered only once it is on stable storage.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL`: a commit appends its
//! frames to `<db>-wal` with `write()` and returns without syncing. SQLite
//! itself syncs only what keeps the database consistent: the header of a
//! new WAL (and the directory that holds it), and the WAL then the database
//! around each checkpoint. What a power cut can still take back is the tail
//! of the WAL: the last commits.
//!
//! [`WalSync`] adds the missing step. Every transaction gets a sequence
//! number (the last commit it wrote or could have read); its caller waits
//! until an `fdatasync` of the WAL that *began after* that commit returned
//! has succeeded. One sync serves every commit made before it began:
//!
//! ```text
//!   commit 7 ──> committed = 7 ─┐   leader (one at a time):
//!   commit 8 ──> committed = 8 ─┤     target = committed      (8)
//!                               │     fdatasync(<db>-wal)
//!   waiters 7, 8 <──────────────┴──   synced = target         (8)
//! ```
//!
//! The sync runs outside the connection's mutex, so commits go on while it
//! runs and the next sync takes them all: 8 concurrent writers pay about
//! one sync per round, not one each. It runs on the thread that committed
//! (the blocking pool's), so a lone writer pays no more than with
//! `synchronous = FULL`. `synchronous = FULL` (one sync inside
//! every commit, holding the connection) was measured against this: see
//! docs/BENCHMARKS.md, "Durable namespace commits".
//!
//! Reads wait too, for the commits they could have seen: no answer is built
//! on a change that a power cut could still take back.
//!
//! A failed sync poisons the namespace for good: Linux may drop the pages
//! it could not write and report that once, so a later sync that succeeds
//! proves nothing. Every operation that needs a sync then fails until
//! griddav restarts and SQLite recovers from what is on disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::NamespaceError;

/// Counters of the group commit, for tests, benchmarks and a status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Write transactions committed since the namespace was opened.
    pub commits: u64,
    /// How many of them are known durable: the highest commit covered by a
    /// successful sync of the WAL.
    pub synced: u64,
    /// `fdatasync` calls on the WAL that succeeded: `commits / syncs` is how
    /// many commits one sync served on average.
    pub syncs: u64,
}

/// The WAL file as we last opened it; reopened if the path now names
/// another file (SQLite deletes the WAL when the last connection closes).
#[derive(Debug)]
struct WalFile {
    file: File,
    dev: u64,
    ino: u64,
}

/// What the leader hands over: whether a sync runs, and the WAL's handle.
#[derive(Debug, Default)]
struct State {
    syncing: bool,
    wal: Option<Arc<WalFile>>,
}

#[derive(Debug)]
pub(crate) struct WalSync {
    wal_path: PathBuf,
    /// Sequence number of the last write commit. Bumped only while holding
    /// the connection's mutex, right after the commit returned, so every
    /// commit up to this number has handed its frames to the kernel.
    committed: AtomicU64,
    /// Every commit up to this number is durable.
    synced: AtomicU64,
    syncs: AtomicU64,
    poisoned: AtomicBool,
    state: Mutex<State>,
    /// Signalled when a sync ends.
    done: Condvar,
    /// Length of the WAL when the last successful sync began: the part of
    /// the file a power cut cannot take back while SQLite only appends
    /// (the crash test snapshots exactly this much).
    durable_wal_len: AtomicU64,
    /// The database file as opened for the sync at open, kept open for as
    /// long as the connection: closing any descriptor of a file drops every
    /// POSIX lock this process holds on it, SQLite's included. Closing it
    /// right after the sync let another process (`griddav put --to`) take
    /// our connection for gone, checkpoint and delete the WAL under it.
    db_file: Mutex<Option<File>>,
    /// Tests close this gate to hold the leader before its sync.
    #[cfg(test)]
    pub(crate) gate: Gate,
}

impl WalSync {
    /// For the database at `db_path`; its WAL is `<db_path>-wal`.
    pub(crate) fn new(db_path: &Path) -> WalSync {
        let mut wal = db_path.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal_path: PathBuf::from(wal),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            durable_wal_len: AtomicU64::new(0),
            db_file: Mutex::new(None),
            #[cfg(test)]
            gate: Gate::default(),
        }
    }

    pub(crate) fn stats(&self) -> SyncStats {
        SyncStats {
            commits: self.committed.load(Ordering::Acquire),
            synced: self.synced.load(Ordering::Acquire),
            syncs: self.syncs.load(Ordering::Acquire),
        }
    }

    #[cfg(test)]
    pub(crate) fn durable_wal_len(&self) -> u64 {
        self.durable_wal_len.load(Ordering::Acquire)
    }

    /// Records a write commit; call with the connection's mutex held, after
    /// the commit returned. Returns its sequence number.
    pub(crate) fn note_commit(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The last commit a transaction that just ended could have read; call
    /// with the connection's mutex held.
    pub(crate) fn last_commit(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Whether commit `seq` (and every one before it) is durable already.
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        self.synced.load(Ordering::Acquire) >= seq
    }

    /// Blocks until commit `seq` (and every one before it) is durable.
    ///
    /// Call on the blocking pool, right after the transaction, *without*
    /// the connection's mutex: the thread that committed syncs itself when
    /// no sync is running (no hand-off to another thread, so one client
    /// pays what `synchronous = FULL` would), and otherwise waits for the
    /// running sync and, if that began before its commit, for the next one,
    /// which one of the waiters runs for all of them.
    pub(crate) fn wait(&self, seq: u64) -> Result<(), NamespaceError> {
        if self.is_durable(seq) {
            return Ok(());
        }
        // Poisoned only by a panic between lock and unlock, which leaves
        // `State` whole (a flag and a handle).
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.synced.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            self.check_poisoned()?;
            if state.syncing {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.syncing = true;
            let current = state.wal.take();
            drop(state);
            #[cfg(test)]
            self.gate.wait_open();
            // Read before the sync starts: each commit up to `target` has
            // finished its writes, so the sync covers it (ours included).
            let target = self.committed.load(Ordering::Acquire);
            let result = sync_wal(&self.wal_path, current);
            state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.syncing = false;
            let outcome = match result {
                Ok((file, len)) => {
                    state.wal = Some(file);
                    self.durable_wal_len.fetch_max(len, Ordering::AcqRel);
                    self.syncs.fetch_add(1, Ordering::AcqRel);
                    self.synced.fetch_max(target, Ordering::AcqRel);
                    Ok(())
                }
                Err(source) => {
                    self.poisoned.store(true, Ordering::Release);
                    tracing::error!(path = %self.wal_path.display(), error = %source,
                        "syncing the namespace log failed: changes can no longer be made durable; restart griddav");
                    Err(NamespaceError::Sync {
                        context: "syncing the namespace log",
                        source,
                    })
                }
            };
            self.done.notify_all();
            return outcome;
        }
    }

    /// Whether a sync failed: nothing can be reported durable any more.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) fn check_poisoned(&self) -> Result<(), NamespaceError> {
        if self.is_poisoned() {
            return Err(NamespaceError::Sync {
                context: "syncing the namespace log (an earlier sync failed; restart griddav)",
                source: io::Error::other("an earlier sync of the namespace log failed"),
            });
        }
        Ok(())
    }

    /// At open, on the blocking pool, with nothing else running: makes the
    /// database file, the WAL and their directory durable (SQLite syncs
    /// neither the new database's directory entry nor a migration committed
    /// at `synchronous = NORMAL`).
    pub(crate) fn sync_at_open(&self, db_path: &Path) -> Result<(), NamespaceError> {
        let result = File::open(db_path)
            .and_then(|db| {
                db.sync_all()?;
                *self.db_file.lock().unwrap_or_else(|p| p.into_inner()) = Some(db);
                sync_wal(&self.wal_path, None)
            })
            .and_then(|(_, len)| {
                let dir = match db_path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ => Path::new("."),
                };
                File::open(dir).and_then(|d| d.sync_all()).map(|()| len)
            });
        match result {
            Ok(len) => {
                self.durable_wal_len.store(len, Ordering::Release);
                Ok(())
            }
            Err(source) => Err(NamespaceError::Sync {
                context: "syncing the namespace database at open",
                source,
            }),
        }
    }
}

/// Holds the next sync back while closed (tests only).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
}

#[cfg(test)]
impl Gate {
    pub(crate) fn set_open(&self, open: bool) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = !open;
        self.changed.notify_all();
    }

    fn wait_open(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        while *closed {
            closed = self.changed.wait(closed).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One `fdatasync` of the WAL; returns the file (for the next sync) and the
/// WAL's length when the sync began.
fn sync_wal(path: &Path, current: Option<Arc<WalFile>>) -> io::Result<(Arc<WalFile>, u64)> {
    let on_path = std::fs::metadata(path)?;
    let wal = match current {
        Some(w) if w.dev == on_path.dev() && w.ino == on_path.ino() => w,
        _ => {
            let file = File::open(path)?;
            let meta = file.metadata()?;
            Arc::new(WalFile {
                file,
                dev: meta.dev(),
                ino: meta.ino(),
            })
        }
    };
    let len = wal.file.metadata()?.len();
    wal.file.sync_data()?;
    Ok((wal, len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::super::testutil::*;
    use super::super::{Content, Namespace, Prop, PropPatch};
    use super::*;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use std::time::{Duration, Instant};

    type Op = Box<dyn FnOnce(Namespace) -> BoxFuture<'static, Result<(), NamespaceError>> + Send>;

    fn op<F, T>(f: impl FnOnce(Namespace) -> F + Send + 'static) -> Op
    where
        F: std::future::Future<Output = Result<T, NamespaceError>> + Send + 'static,
    {
        Box::new(move |ns| f(ns).map(|r| r.map(drop)).boxed())
    }

    fn sync(ns: &Namespace) -> &WalSync {
        &ns.inner.sync
    }

    /// Polls until `commits` reaches `n` (the transaction is committed and
    /// its caller is waiting for the sync); bounded, generously.
    async fn wait_for_commits(ns: &Namespace, n: u64) {
        let started = Instant::now();
        while ns.sync_stats().commits < n {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "commit {n} never happened"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs `op` with the sync held back: it must commit, then not return
    /// until the sync it waits for has run.
    async fn assert_waits_for_its_sync(ns: &Namespace, name: &str, op: Op) {
        let before = ns.sync_stats();
        assert_eq!(
            before.synced, before.commits,
            "{name}: earlier commits synced"
        );
        sync(ns).gate.set_open(false);
        let task = tokio::spawn(op(ns.clone()));
        wait_for_commits(ns, before.commits + 1).await;
        // Every chance for a wrongly early return to happen.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !task.is_finished(),
            "{name} returned before its commit was synced"
        );
        assert_eq!(ns.sync_stats().synced, before.synced, "{name}");
        sync(ns).gate.set_open(true);
        task.await
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let after = ns.sync_stats();
        assert_eq!(after.commits, before.commits + 1, "{name}: one commit");
        assert_eq!(
            after.synced, after.commits,
            "{name}: synced when it returned"
        );
        assert_eq!(after.syncs, before.syncs + 1, "{name}: one sync");
    }

    fn prop(name: &str) -> PropPatch {
        PropPatch::Set(Prop {
            namespace: "urn:x".into(),
            name: name.into(),
            value: b"v".to_vec(),
        })
    }

    /// Each write method the DAV layer awaits before answering a change
    /// (PUT, PATCH, DELETE, MKCOL, MOVE, COPY, PROPPATCH, LOCK, UNLOCK) and
    /// those of the upload journal and the collector.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_returns_only_after_its_commit_is_synced() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let inline = || Content::Inline(b"small file".to_vec());
        let ops: Vec<(&str, Op)> = vec![
            (
                "create_dir",
                op(|ns| async move { ns.create_dir("/d").await }),
            ),
            (
                "publish_file inline",
                op(
                    move |ns| async move { ns.publish_file("/d/i", inline(), 10, t0(), None).await },
                ),
            ),
            (
                "begin_upload",
                op(|ns| async move { ns.begin_upload("si").await }),
            ),
            (
                "publish_file cap",
                op(|ns| async move { ns.publish_file("/d/c", cap("cap-1"), 5, t0(), None).await }),
            ),
            (
                "patch_props",
                op(|ns| async move { ns.patch_props("/d/c", vec![prop("p")]).await }),
            ),
            (
                "set_mtime",
                op(|ns| async move { ns.set_mtime("/d/c", t0()).await }),
            ),
            (
                "copy_file",
                op(|ns| async move { ns.copy_file("/d/c", "/d/c2").await }),
            ),
            (
                "rename",
                op(|ns| async move { ns.rename("/d/c2", "/d/c3", false).await }),
            ),
            (
                "lock",
                op(|ns| async move { ns.lock("/d/i", None, None, None, false, false).await }),
            ),
            (
                "refresh",
                op(|ns| async move {
                    let token = ns.list_locks().await?.remove(0).token;
                    ns.refresh("/d/i", &token, Some(Duration::from_secs(60)))
                        .await
                }),
            ),
            (
                "rename_locks",
                op(|ns| async move { ns.rename_locks("/d/i", "/d/j").await }),
            ),
            (
                "unlock",
                op(|ns| async move {
                    let token = ns.list_locks().await?.remove(0).token;
                    ns.unlock("/d/j", &token).await
                }),
            ),
            (
                "lock again",
                op(|ns| async move { ns.lock("/d/i", None, None, None, false, false).await }),
            ),
            (
                "delete_locks",
                op(|ns| async move { ns.delete_locks("/d").await }),
            ),
            (
                "remove_file",
                op(|ns| async move { ns.remove_file("/d/c").await }),
            ),
            ("remove", op(|ns| async move { ns.remove("/d").await })),
            (
                "create_dir /e",
                op(|ns| async move { ns.create_dir("/e").await }),
            ),
            (
                "remove_dir",
                op(|ns| async move { ns.remove_dir("/e").await }),
            ),
            (
                "end_upload",
                op(|ns| async move {
                    let id = ns.pending_uploads().await?.remove(0).id;
                    ns.end_upload(id).await
                }),
            ),
            (
                "take_garbage",
                op(|ns| async move { ns.take_garbage(10, Duration::ZERO).await }),
            ),
            (
                "garbage_release",
                op(|ns| async move { ns.garbage_release("cap-1").await }),
            ),
            (
                "garbage_done",
                op(|ns| async move { ns.garbage_done("cap-1").await }),
            ),
        ];
        for (name, op) in ops {
            assert_waits_for_its_sync(ns, name, op).await;
        }
        // A write transaction that changed nothing wrote nothing to sync.
        let quiet = ns.sync_stats();
        assert_eq!(ns.delete_locks("/nothing").await.unwrap(), 0);
        assert_eq!(ns.sync_stats(), quiet);
        // The script above did what it says (a failing step fails the test
        // inside the helper, so this only checks the end state).
        assert!(ns.list("/").await.unwrap().is_empty());
        assert!(ns.list_locks().await.unwrap().is_empty());
        assert!(f.garbage().await.is_empty());
    }

    /// A read that could see a commit not yet synced waits for that sync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_waits_for_the_commits_it_could_see() {
        let f = Fixture::new().await;
        let before = f.ns.sync_stats();
        sync(&f.ns).gate.set_open(false);
        let ns = f.ns.clone();
        let put = tokio::spawn(async move {
            ns.publish_file("/f", Content::Inline(b"x".to_vec()), 1, t0(), None)
                .await
        });
        wait_for_commits(&f.ns, before.commits + 1).await;
        let ns = f.ns.clone();
        let read = tokio::spawn(async move { ns.lookup("/f").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !read.is_finished(),
            "a read answered from an unsynced commit"
        );
        sync(&f.ns).gate.set_open(true);
        put.await.unwrap().unwrap();
        assert!(read.await.unwrap().unwrap().is_some());
        // With nothing pending, a read does not sync at all.
        let quiet = f.ns.sync_stats();
        f.ns.lookup("/f").await.unwrap();
        assert_eq!(f.ns.sync_stats(), quiet);
    }

    /// Group commit: commits that arrive while a sync is held back are all
    /// made durable by the next single sync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_sync_serves_every_commit_waiting() {
        let f = Fixture::new().await;
        let before = f.ns.sync_stats();
        sync(&f.ns).gate.set_open(false);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let ns = f.ns.clone();
            tasks.push(tokio::spawn(async move {
                ns.publish_file(
                    &format!("/f{i}"),
                    Content::Inline(vec![b'x'; 100]),
                    100,
                    t0(),
                    None,
                )
                .await
            }));
        }
        wait_for_commits(&f.ns, before.commits + 8).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tasks.iter().all(|t| !t.is_finished()));
        sync(&f.ns).gate.set_open(true);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let after = f.ns.sync_stats();
        assert_eq!(after.commits, before.commits + 8);
        assert_eq!(after.synced, after.commits);
        assert_eq!(after.syncs, before.syncs + 1, "one sync for eight commits");
    }

    /// When the log cannot be synced, no change is reported done, now or
    /// later (a later sync that succeeds would prove nothing).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_that_change_and_every_later_one() {
        let f = Fixture::new().await;
        f.ns.create_dir("/a").await.unwrap();
        // SQLite keeps writing to its open handle; the sync opens the path.
        let mut wal = f.db_path().into_os_string();
        wal.push("-wal");
        std::fs::remove_file(&wal).unwrap();
        let err = f.ns.create_dir("/b").await.unwrap_err();
        assert!(matches!(err, NamespaceError::Sync { .. }), "{err}");
        let commits = f.ns.sync_stats().commits;
        let err = f.ns.create_dir("/c").await.unwrap_err();
        assert!(matches!(err, NamespaceError::Sync { .. }), "{err}");
        assert_eq!(
            f.ns.sync_stats().commits,
            commits,
            "refused before any commit"
        );
        // What could see the unsynced commit fails too; nothing is reported
        // as synced that was not.
        assert!(f.ns.lookup("/b").await.is_err());
        let stats = f.ns.sync_stats();
        assert!(stats.synced < stats.commits);
    }

    /// Everything the namespace holds, for comparing two databases.
    async fn state(ns: &Namespace) -> String {
        let mut out = String::new();
        let mut dirs = vec!["/".to_owned()];
        while let Some(dir) = dirs.pop() {
            for node in ns.list(&dir).await.unwrap() {
                let path = format!("{}/{}", dir.trim_end_matches('/'), node.name);
                let props = ns.list_props(&path).await.unwrap();
                out.push_str(&format!(
                    "{path} {node:?} {:?} {props:?}\n",
                    node.content.as_ref().map(|c| match c {
                        Content::Inline(b) => format!("inline {b:?}"),
                        Content::Cap(c) => format!("cap {c}"),
                    })
                ));
                if node.is_dir() {
                    dirs.push(path);
                }
            }
        }
        let locks: Vec<_> = ns
            .list_locks()
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.token, l.path, l.timeout_at))
            .collect();
        let uploads: Vec<_> = ns
            .pending_uploads()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.id, u.recovery_token))
            .collect();
        out.push_str(&format!(
            "locks {locks:?}\ngarbage {:?}\nuploads {uploads:?}\n",
            ns.list_garbage().await.unwrap()
        ));
        out
    }

    /// Power cut, simulated: whenever a change has returned, build the
    /// disk as a power cut at that moment could leave it (the database
    /// file, and the WAL only as far as the last sync covered: what was
    /// written after the sync began is dropped) and open it. Every change
    /// that returned must be there, inline bytes included.
    ///
    /// The model holds while SQLite only appends to the WAL, i.e. until its
    /// first checkpoint; the test checks it stays below that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_power_cut_keeps_every_change_that_returned() {
        let f = Fixture::new().await;
        let db = f.db_path();
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let db_at_open = std::fs::read(&db).unwrap();
        let script: Vec<Op> = vec![
            op(|ns| async move { ns.create_dir("/docs").await }),
            op(|ns| async move {
                ns.publish_file(
                    "/docs/a.txt",
                    Content::Inline(b"hello".to_vec()),
                    5,
                    t0(),
                    None,
                )
                .await
            }),
            op(|ns| async move { ns.begin_upload("si-big").await }),
            op(|ns| async move {
                let id = ns.pending_uploads().await?.remove(0).id;
                ns.publish_file("/docs/big", cap("cap-big"), 300_000, t0(), Some(id))
                    .await
            }),
            op(|ns| async move { ns.patch_props("/docs/a.txt", vec![prop("color")]).await }),
            op(|ns| async move { ns.copy_file("/docs/big", "/docs/big2").await }),
            op(|ns| async move { ns.rename("/docs", "/papers", false).await }),
            op(|ns| async move {
                ns.lock("/papers/a.txt", Some("u"), None, None, false, false)
                    .await
            }),
            op(|ns| async move {
                ns.publish_file(
                    "/papers/a.txt",
                    Content::Inline(b"hello, world".to_vec()),
                    12,
                    t0(),
                    None,
                )
                .await
            }),
            op(|ns| async move {
                let token = ns.list_locks().await?.remove(0).token;
                ns.unlock("/papers/a.txt", &token).await
            }),
            op(|ns| async move { ns.remove("/papers/big").await }),
            op(|ns| async move { ns.remove("/papers/big2").await }),
            op(|ns| async move { ns.create_dir("/papers/sub").await }),
        ];
        for (step, op) in script.into_iter().enumerate() {
            op(f.ns.clone()).await.unwrap();
            let live = state(&f.ns).await;
            let durable_len = sync(&f.ns).durable_wal_len();

            let cut = tempfile::tempdir().unwrap();
            let cut_db = cut.path().join("ns.db");
            std::fs::write(&cut_db, std::fs::read(&db).unwrap()).unwrap();
            let mut log = std::fs::read(&wal).unwrap();
            assert!(log.len() as u64 >= durable_len, "step {step}");
            log.truncate(durable_len as usize);
            std::fs::write(cut.path().join("ns.db-wal"), log).unwrap();
            assert_eq!(
                std::fs::read(&db).unwrap(),
                db_at_open,
                "step {step}: a checkpoint ran; the append-only model no longer holds"
            );
            let after = Namespace::open_with_clock(&cut_db, f.clock.clone())
                .await
                .unwrap();
            assert_eq!(
                state(&after).await,
                live,
                "step {step}: lost by a power cut"
            );
        }
    }
}
