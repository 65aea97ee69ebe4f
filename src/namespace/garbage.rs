//! The garbage list (capabilities whose shares can be freed) and the journal
//! of uploads in flight.
//!
//! # Garbage, and the race with COPY and publish
//!
//! A capability is queued in the same transaction that drops the last row
//! referring to it. Within this namespace a capability can only come back
//! through [`Namespace::publish_file`] with a capability the caller held on
//! to (COPY reads the source row in its own transaction, so its capability
//! is referenced throughout). The collector's cycle is
//! `take_garbage` -> free the shares -> `garbage_done` (or `garbage_release`
//! on failure), and each entry is in one of two states:
//!
//! - **queued**: publishing the capability again takes it off the list
//!   (nothing was freed yet) and `take_garbage` skips and drops any entry
//!   that is referenced again;
//! - **claimed** by `take_garbage`: its shares may be half deleted, so
//!   publishing it is refused with `Conflict`; `garbage_done` re-checks and
//!   reports a reference that appeared anyway as `Conflict` (only possible
//!   if another process bypassed this API).
//!
//! Claims do not survive a restart: opening the namespace returns claimed
//! entries to the queue, so an interrupted collection is resumed.
//! `take_garbage` takes only entries older than `min_age`: a grace period
//! for readers that opened the old version just before it was replaced.

use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, Transaction};

use super::clock::{duration_ms, from_ms};
use super::error::DbContext;
use super::tree::cap_refs;
use super::{Namespace, NamespaceError, NsPath};

/// Identifies an upload in the pending journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(pub i64);

/// An upload that began and has not ended: after a crash, its shares are
/// orphans to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The journal row; the upload removes it when it ends.
    pub id: UploadId,
    /// What the engine needs to delete the upload's shares (its recovery
    /// token, which holds the file key: keep it as private as a capability).
    pub recovery_token: String,
    /// When the upload began (milliseconds in the journal).
    pub started_at: SystemTime,
}

pub(crate) fn release_all_claims(conn: &Connection) -> Result<(), NamespaceError> {
    conn.execute("UPDATE garbage SET claimed = 0 WHERE claimed <> 0", [])
        .ctx("releasing garbage claims of a previous run")?;
    Ok(())
}

/// Takes `cap` off the garbage list because it is being published again;
/// refuses if a collector is freeing it.
pub(crate) fn reclaim(
    tx: &Transaction<'_>,
    path: &NsPath,
    cap: &str,
) -> Result<(), NamespaceError> {
    let claimed: Option<bool> = tx
        .prepare_cached("SELECT claimed FROM garbage WHERE cap = ?1")
        .and_then(|mut s| {
            let mut rows = s.query([cap])?;
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .ctx("checking the garbage list")?;
    match claimed {
        None => Ok(()),
        Some(true) => Err(NamespaceError::Conflict {
            path: path.to_string(),
            reason: "this content is being garbage-collected",
        }),
        Some(false) => {
            tx.execute("DELETE FROM garbage WHERE cap = ?1", [cap])
                .ctx("taking a capability off the garbage list")?;
            Ok(())
        }
    }
}

pub(crate) fn end_upload_tx(tx: &Transaction<'_>, id: UploadId) -> Result<bool, NamespaceError> {
    let n = tx
        .prepare_cached("DELETE FROM pending_uploads WHERE id = ?1")
        .and_then(|mut s| s.execute([id.0]))
        .ctx("ending an upload")?;
    Ok(n == 1)
}

impl Namespace {
    /// Claims up to `limit` queued capabilities that were queued at least
    /// `min_age` ago and that no row refers to, oldest first. The caller
    /// frees their shares, then calls [`Namespace::garbage_done`] for each
    /// (or [`Namespace::garbage_release`] to retry later).
    pub async fn take_garbage(
        &self,
        limit: usize,
        min_age: Duration,
    ) -> Result<Vec<String>, NamespaceError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let min_age = duration_ms(min_age);
        self.run("taking garbage", true, move |tx, now| {
            let candidates: Vec<String> = tx
                .prepare_cached(
                    "SELECT cap FROM garbage WHERE claimed = 0 AND queued_at <= ?1
                     ORDER BY queued_at, cap LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![now.saturating_sub(min_age), limit], |r| r.get(0))?
                        .collect()
                })
                .ctx("reading the garbage list")?;
            let mut taken = Vec::with_capacity(candidates.len());
            for cap in candidates {
                if cap_refs(tx, &cap)? > 0 {
                    tx.execute("DELETE FROM garbage WHERE cap = ?1", [&cap])
                        .ctx("dropping referenced garbage")?;
                } else {
                    tx.execute("UPDATE garbage SET claimed = 1 WHERE cap = ?1", [&cap])
                        .ctx("claiming garbage")?;
                    taken.push(cap);
                }
            }
            Ok(taken)
        })
        .await
    }

    /// Records that `cap`'s shares are freed: removes it from the list.
    /// Returns false if it was not on the list.
    pub async fn garbage_done(&self, cap: &str) -> Result<bool, NamespaceError> {
        let cap = cap.to_owned();
        self.run("finishing garbage", true, move |tx, _| {
            if cap_refs(tx, &cap)? > 0 {
                tracing::error!("a capability being garbage-collected is referenced again");
                tx.execute("DELETE FROM garbage WHERE cap = ?1", [&cap])
                    .ctx("dropping referenced garbage")?;
                return Err(NamespaceError::Conflict {
                    path: String::new(),
                    reason: "garbage-collected content is referenced again",
                });
            }
            let n = tx
                .execute("DELETE FROM garbage WHERE cap = ?1", [&cap])
                .ctx("finishing garbage")?;
            Ok(n == 1)
        })
        .await
    }

    /// Returns a claimed capability to the queue (freeing failed; retry
    /// later).
    pub async fn garbage_release(&self, cap: &str) -> Result<(), NamespaceError> {
        let cap = cap.to_owned();
        self.run("releasing garbage", true, move |tx, _| {
            tx.execute("UPDATE garbage SET claimed = 0 WHERE cap = ?1", [&cap])
                .ctx("releasing garbage")?;
            Ok(())
        })
        .await
    }

    /// Puts a capability that no row refers to (an old namespace copy) on
    /// the garbage list, so the collector frees its shares after the grace
    /// period. Queueing one already there is not an error.
    pub async fn queue_garbage(&self, cap: &str) -> Result<(), NamespaceError> {
        let cap = cap.to_owned();
        self.run("queueing garbage", true, move |tx, now| {
            tx.execute(
                "INSERT OR IGNORE INTO garbage (cap, queued_at) VALUES (?1, ?2)",
                params![cap, now],
            )
            .ctx("queueing garbage")?;
            Ok(())
        })
        .await
    }

    /// Every capability on the garbage list, claimed or not, sorted.
    pub async fn list_garbage(&self) -> Result<Vec<String>, NamespaceError> {
        self.run("listing garbage", false, |tx, _| {
            tx.prepare("SELECT cap FROM garbage ORDER BY cap")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .ctx("listing garbage")
        })
        .await
    }

    /// Journals an upload before its first share is written.
    pub async fn begin_upload(&self, recovery_token: &str) -> Result<UploadId, NamespaceError> {
        let si = recovery_token.to_owned();
        self.run("beginning an upload", true, move |tx, now| {
            tx.execute(
                "INSERT INTO pending_uploads (storage_index, started_at) VALUES (?1, ?2)",
                params![si, now],
            )
            .ctx("beginning an upload")?;
            Ok(UploadId(tx.last_insert_rowid()))
        })
        .await
    }

    /// Ends an upload that was aborted and cleaned up (a committed upload is
    /// ended by [`Namespace::publish_file`]). Returns false if unknown.
    pub async fn end_upload(&self, id: UploadId) -> Result<bool, NamespaceError> {
        self.run("ending an upload", true, move |tx, _| end_upload_tx(tx, id))
            .await
    }

    /// The uploads begun and not ended, oldest first. At start-up, before
    /// any new upload, each of these is a crashed upload whose shares the
    /// caller deletes before calling [`Namespace::end_upload`].
    pub async fn pending_uploads(&self) -> Result<Vec<PendingUpload>, NamespaceError> {
        self.run("listing pending uploads", false, |tx, _| {
            tx.prepare("SELECT id, storage_index, started_at FROM pending_uploads ORDER BY id")
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        Ok(PendingUpload {
                            id: UploadId(r.get(0)?),
                            recovery_token: r.get(1)?,
                            started_at: from_ms(r.get(2)?),
                        })
                    })?
                    .collect()
                })
                .ctx("listing pending uploads")
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[tokio::test]
    async fn collector_cycle_claims_and_refuses_resurrection_of_claimed_content() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        f.put("/a", "cap-a", 1).await;
        f.put("/b", "cap-b", 1).await;
        f.put("/c", "cap-c", 1).await;
        ns.remove("/a").await.unwrap();
        f.clock.advance(Duration::from_secs(1));
        ns.remove("/b").await.unwrap();
        ns.remove("/c").await.unwrap();

        // A queued capability published again is simply no longer garbage.
        f.put("/c2", "cap-c", 1).await;
        assert_eq!(f.garbage().await, ["cap-a", "cap-b"]);

        let taken = ns.take_garbage(10, Duration::ZERO).await.unwrap();
        assert_eq!(taken, ["cap-a", "cap-b"], "oldest first");
        assert!(ns
            .take_garbage(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            ns.publish_file("/a", cap("cap-a"), 1, t0(), None).await,
            Err(NamespaceError::Conflict { .. })
        ));
        assert_eq!(ns.lookup("/a").await.unwrap(), None);

        assert!(ns.garbage_done("cap-a").await.unwrap());
        assert!(!ns.garbage_done("cap-a").await.unwrap());
        ns.garbage_release("cap-b").await.unwrap();
        assert_eq!(ns.take_garbage(1, Duration::ZERO).await.unwrap(), ["cap-b"]);
        // Freed for good: the capability may be published again (the engine
        // never hands it out twice, but the namespace need not care).
        f.put("/a", "cap-a", 1).await;
        assert_eq!(f.garbage().await, ["cap-b"]);
    }

    #[tokio::test]
    async fn take_garbage_honours_the_grace_period_and_resumes_after_restart() {
        let f = Fixture::new().await;
        f.put("/a", "cap-a", 1).await;
        f.ns.remove("/a").await.unwrap();
        let grace = Duration::from_secs(60);
        assert!(f.ns.take_garbage(10, grace).await.unwrap().is_empty());
        f.clock.advance(grace);
        assert_eq!(f.ns.take_garbage(10, grace).await.unwrap(), ["cap-a"]);
        // The collector dies with its claim; the next run takes it again.
        let f = f.reopen().await;
        assert_eq!(f.ns.take_garbage(10, grace).await.unwrap(), ["cap-a"]);
        assert!(f.ns.garbage_done("cap-a").await.unwrap());
        assert!(f.garbage().await.is_empty());
    }

    #[tokio::test]
    async fn a_reference_that_appears_behind_our_back_is_not_collected() {
        let f = Fixture::new().await;
        f.put("/a", "cap-a", 1).await;
        f.ns.remove("/a").await.unwrap();
        // Simulate a writer that bypassed the API (another process, a bug):
        // take_garbage re-checks and drops the entry rather than free it.
        let conn = rusqlite::Connection::open(f.db_path()).unwrap();
        conn.execute(
            "INSERT INTO nodes (parent, name, kind, size, created, modified, etag, cap)
             VALUES (1, 'sneaky', 'file', 1, 0, 0, 'e', 'cap-a')",
            [],
        )
        .unwrap();
        assert!(f
            .ns
            .take_garbage(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
        assert!(f.garbage().await.is_empty());
    }

    #[tokio::test]
    async fn pending_uploads_journal() {
        let f = Fixture::new().await;
        let u1 = f.ns.begin_upload("si-1").await.unwrap();
        let u2 = f.ns.begin_upload("si-2").await.unwrap();
        assert_ne!(u1, u2);
        // Publishing ends its upload in the same transaction.
        f.ns.publish_file("/f", cap("cap-1"), 1, t0(), Some(u1))
            .await
            .unwrap();
        let f = f.reopen().await;
        let pending = f.ns.pending_uploads().await.unwrap();
        assert_eq!(
            pending,
            [PendingUpload {
                id: u2,
                recovery_token: "si-2".into(),
                started_at: t0(),
            }]
        );
        assert!(f.ns.end_upload(u2).await.unwrap());
        assert!(!f.ns.end_upload(u2).await.unwrap());
        assert!(f.ns.pending_uploads().await.unwrap().is_empty());

        // A failed publish leaves the upload pending for the clean-up.
        let u3 = f.ns.begin_upload("si-3").await.unwrap();
        f.ns.create_dir("/d").await.unwrap();
        assert!(f
            .ns
            .publish_file("/d", cap("cap-3"), 1, t0(), Some(u3))
            .await
            .is_err());
        assert_eq!(f.ns.pending_uploads().await.unwrap()[0].id, u3);
    }
}
