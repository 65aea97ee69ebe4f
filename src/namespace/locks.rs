//! WebDAV locks (RFC 4918 section 6-7), persistent, with real expiry.
//!
//! Locks key on the canonical path (see [`NsPath`]), not on nodes: a lock
//! may be taken on a name that does not exist yet, and it stays with the
//! name when the DAV layer moves things unless it calls
//! [`Namespace::rename_locks`] or [`Namespace::delete_locks`].
//!
//! Rules, the same as dav-server's `MemLs` plus expiry:
//! - a lock *covers* its path, and everything below it when deep;
//! - a new exclusive lock conflicts with any lock covering its path or, when
//!   deep, with any lock below; a new shared lock only with exclusive ones;
//! - [`Namespace::check`] passes when every exclusive lock covering the path
//!   is held (token submitted and principal matching, unless
//!   `ignore_principal`), at least one of the shared ones is held if there
//!   are any, and, when deep, every lock below the path is held;
//! - a lock whose `timeout_at` is not after now is expired: every query
//!   ignores it, and writing operations delete expired rows as they go.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Row, Transaction};

use super::clock::{duration_ms, from_ms};
use super::error::DbContext;
use super::{Namespace, NamespaceError, NsPath};

/// One lock, as stored and as returned to the DAV layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// `urn:uuid:...`, 122 random bits.
    pub token: String,
    /// Canonical path of the lock root.
    pub path: String,
    /// The user who took the lock; `None` without authentication.
    pub principal: Option<String>,
    /// The `DAV:owner` element as the DAV layer serialized it.
    pub owner: Option<Vec<u8>>,
    /// When the lock expires; `None` for an infinite lock.
    pub timeout_at: Option<SystemTime>,
    /// Time left when this value was read (what `lockdiscovery` reports).
    pub timeout: Option<Duration>,
    /// Shared rather than exclusive.
    pub shared: bool,
    /// Depth infinity.
    pub deep: bool,
    /// When the lock was taken; orders the locks of one path.
    pub created: SystemTime,
}

const LOCK_COLS: &str =
    "token, path, principal, owner_xml, timeout_at, shared, depth_infinite, created";
const ALIVE: &str = "(timeout_at IS NULL OR timeout_at > ?2)";

fn lock_from_row(row: &Row<'_>, now: i64) -> rusqlite::Result<Lock> {
    let timeout_at: Option<i64> = row.get(4)?;
    Ok(Lock {
        token: row.get(0)?,
        path: row.get(1)?,
        principal: row.get(2)?,
        owner: row.get(3)?,
        timeout_at: timeout_at.map(from_ms),
        timeout: timeout_at
            .map(|t| Duration::from_millis(u64::try_from(t.saturating_sub(now)).unwrap_or(0))),
        shared: row.get(5)?,
        deep: row.get(6)?,
        created: from_ms(row.get(7)?),
    })
}

fn locked(lock: Lock) -> NamespaceError {
    NamespaceError::Locked {
        token: lock.token.clone(),
        path: lock.path.clone(),
        lock: Box::new(lock),
    }
}

fn purge_expired(tx: &Transaction<'_>, now: i64) -> Result<(), NamespaceError> {
    tx.prepare_cached("DELETE FROM locks WHERE timeout_at IS NOT NULL AND timeout_at <= ?1")
        .and_then(|mut s| s.execute([now]))
        .ctx("purging expired locks")?;
    Ok(())
}

fn query_locks(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    now: i64,
) -> Result<Vec<Lock>, NamespaceError> {
    query_at_most(tx, sql, params, now, usize::MAX)
}

/// At most `max + 1` of the rows of `sql`: one more than `max` tells the
/// caller there were too many, without stepping through the rest.
fn query_at_most(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    now: i64,
    max: usize,
) -> Result<Vec<Lock>, NamespaceError> {
    tx.prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(params, |r| lock_from_row(r, now))?
                .take(max.saturating_add(1))
                .collect()
        })
        .ctx("reading locks")
}

/// Locks that [`Namespace::discover`] reads on the calling thread; a path
/// covered by more (shared locks have no limit) is read on the blocking
/// pool.
const DISCOVER_IN_PLACE: usize = 64;

/// Live locks covering `path`: deep ones on its ancestors (root first),
/// then all on the path itself.
fn covering(tx: &Transaction<'_>, path: &NsPath, now: i64) -> Result<Vec<Lock>, NamespaceError> {
    Ok(covering_at_most(tx, path, now, usize::MAX)?.unwrap_or_default())
}

/// [`covering`], or `None` once more than `max` locks are found.
fn covering_at_most(
    tx: &Transaction<'_>,
    path: &NsPath,
    now: i64,
    max: usize,
) -> Result<Option<Vec<Lock>>, NamespaceError> {
    let mut out = Vec::new();
    let ancestors = path.ancestors();
    let queries = ancestors
        .iter()
        .map(|a| (&*DEEP_AT_SQL, a))
        .chain([(&*AT_SQL, path)]);
    for (sql, at) in queries {
        let left = max.saturating_sub(out.len());
        let found = query_at_most(tx, sql, params![at.as_str(), now], now, left)?;
        if found.len() > left {
            return Ok(None);
        }
        out.extend(found);
    }
    Ok(Some(out))
}

fn at(tx: &Transaction<'_>, path: &NsPath, now: i64) -> Result<Vec<Lock>, NamespaceError> {
    query_locks(tx, &AT_SQL, params![path.as_str(), now], now)
}

/// Live locks whose root is `?1`, oldest first. Built once: lock discovery
/// runs it for every entry of an allprop listing.
static AT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {LOCK_COLS} FROM locks WHERE path = ?1 AND {ALIVE} ORDER BY created, token")
});

/// Live depth-infinity locks whose root is `?1`, oldest first.
static DEEP_AT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {LOCK_COLS} FROM locks WHERE path = ?1 AND depth_infinite AND {ALIVE} ORDER BY created, token"
    )
});

/// Live locks strictly below `path`.
fn below(tx: &Transaction<'_>, path: &NsPath, now: i64) -> Result<Vec<Lock>, NamespaceError> {
    let (lo, hi) = path.descendant_range();
    query_locks(
        tx,
        &format!(
            "SELECT {LOCK_COLS} FROM locks WHERE path >= ?1 AND path < ?3 AND path <> ?4 AND {ALIVE}
             ORDER BY path, created, token"
        ),
        params![lo, now, hi, path.as_str()],
        now,
    )
}

/// The live lock `token` if it covers `path`.
fn find_covering(
    tx: &Transaction<'_>,
    path: &NsPath,
    token: &str,
    now: i64,
) -> Result<Lock, NamespaceError> {
    let found = query_locks(
        tx,
        &format!("SELECT {LOCK_COLS} FROM locks WHERE token = ?1 AND {ALIVE}"),
        params![token, now],
        now,
    )?
    .into_iter()
    .next()
    .filter(|l| {
        NsPath::parse(&l.path).is_ok_and(|lp| lp == *path || (l.deep && lp.is_ancestor_of(path)))
    });
    found.ok_or_else(|| NamespaceError::LockNotFound {
        token: token.to_owned(),
        path: path.to_string(),
    })
}

fn new_token() -> String {
    uuid::Uuid::new_v4().urn().to_string()
}

fn expiry(now: i64, timeout: Option<Duration>) -> Option<i64> {
    timeout.map(|d| now.saturating_add(duration_ms(d)))
}

impl Namespace {
    /// Takes a lock on `path` (which need not exist). `timeout: None` is an
    /// infinite lock. A conflicting live lock gives `Locked` with that lock.
    pub async fn lock(
        &self,
        path: &str,
        principal: Option<&str>,
        owner: Option<&[u8]>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> Result<Lock, NamespaceError> {
        let path = NsPath::parse(path)?;
        let principal = principal.map(str::to_owned);
        let owner = owner.map(<[u8]>::to_vec);
        self.run("locking", true, move |tx, now| {
            purge_expired(tx, now)?;
            let conflicts = |l: &Lock| !shared || !l.shared;
            if let Some(l) = covering(tx, &path, now)?.into_iter().find(conflicts) {
                return Err(locked(l));
            }
            if deep {
                if let Some(l) = below(tx, &path, now)?.into_iter().find(conflicts) {
                    return Err(locked(l));
                }
            }
            let token = new_token();
            let timeout_at = expiry(now, timeout);
            tx.execute(
                "INSERT INTO locks (token, path, depth_infinite, shared, owner_xml, principal, timeout_at, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![token, path.as_str(), deep, shared, owner, principal, timeout_at, now],
            )
            .ctx("storing a lock")?;
            Ok(Lock {
                token,
                path: path.to_string(),
                principal: principal.clone(),
                owner: owner.clone(),
                timeout_at: timeout_at.map(from_ms),
                timeout,
                shared,
                deep,
                created: from_ms(now),
            })
        })
        .await
    }

    /// Releases lock `token`; `path` must be within its scope.
    /// `LockNotFound` otherwise (also for an expired lock).
    pub async fn unlock(&self, path: &str, token: &str) -> Result<(), NamespaceError> {
        let path = NsPath::parse(path)?;
        let token = token.to_owned();
        self.run("unlocking", true, move |tx, now| {
            purge_expired(tx, now)?;
            let lock = find_covering(tx, &path, &token, now)?;
            tx.execute("DELETE FROM locks WHERE token = ?1", [&lock.token])
                .ctx("deleting a lock")?;
            Ok(())
        })
        .await
    }

    /// Gives lock `token` a new timeout counted from now; `path` must be
    /// within its scope.
    pub async fn refresh(
        &self,
        path: &str,
        token: &str,
        timeout: Option<Duration>,
    ) -> Result<Lock, NamespaceError> {
        let path = NsPath::parse(path)?;
        let token = token.to_owned();
        self.run("refreshing a lock", true, move |tx, now| {
            purge_expired(tx, now)?;
            let mut lock = find_covering(tx, &path, &token, now)?;
            let timeout_at = expiry(now, timeout);
            tx.execute(
                "UPDATE locks SET timeout_at = ?2 WHERE token = ?1",
                params![lock.token, timeout_at],
            )
            .ctx("refreshing a lock")?;
            lock.timeout_at = timeout_at.map(from_ms);
            lock.timeout = timeout;
            Ok(lock)
        })
        .await
    }

    /// Whether a request by `principal` submitting `tokens` may modify
    /// `path` (and, when `deep`, everything below it). `Locked` names one
    /// lock that is in the way.
    pub async fn check(
        &self,
        path: &str,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        tokens: &[&str],
    ) -> Result<(), NamespaceError> {
        let path = NsPath::parse(path)?;
        let principal = principal.map(str::to_owned);
        let tokens: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
        self.read_few("checking locks", move |tx, now| {
            let held = |l: &Lock| {
                tokens.contains(&l.token)
                    && (ignore_principal || principal.as_deref() == l.principal.as_deref())
            };
            let mut holds_one = false;
            let mut shared_in_the_way = None;
            for l in covering(tx, &path, now)? {
                if held(&l) {
                    holds_one = true;
                } else if !l.shared {
                    return Err(locked(l));
                } else {
                    shared_in_the_way.get_or_insert(l);
                }
            }
            if let (false, Some(l)) = (holds_one, shared_in_the_way) {
                return Err(locked(l));
            }
            if deep {
                if let Some(l) = below(tx, &path, now)?.into_iter().find(|l| !held(l)) {
                    return Err(locked(l));
                }
            }
            Ok(())
        })
        .await
    }

    /// The live locks covering `path` (deep ones on ancestors, root first,
    /// then those on the path).
    pub async fn discover(&self, path: &str) -> Result<Vec<Lock>, NamespaceError> {
        let path = NsPath::parse(path)?;
        // Asked for every entry of a PROPFIND that lists lockdiscovery (an
        // allprop listing asks it a thousand times for a folder of a
        // thousand): a trip to the blocking pool each cost more than the
        // read. Most paths have no lock at all.
        let in_place = path.clone();
        let few = self
            .read_few("discovering locks", move |tx, now| {
                covering_at_most(tx, &in_place, now, DISCOVER_IN_PLACE)
            })
            .await?;
        if let Some(locks) = few {
            return Ok(locks);
        }
        self.run("discovering locks", false, move |tx, now| {
            covering(tx, &path, now)
        })
        .await
    }

    /// Deletes every lock at or below `path` (after DELETE, or MOVE away).
    /// Returns how many rows went (expired ones included).
    pub async fn delete_locks(&self, path: &str) -> Result<u64, NamespaceError> {
        let path = NsPath::parse(path)?;
        self.run("deleting locks", true, move |tx, _| {
            let (lo, hi) = path.descendant_range();
            let n = tx
                .execute(
                    "DELETE FROM locks WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
                    params![path.as_str(), lo, hi],
                )
                .ctx("deleting locks")?;
            Ok(n as u64)
        })
        .await
    }

    /// Moves every lock at or below `from` to the same place below `to`
    /// (for a MOVE that keeps its locks). Returns how many moved.
    pub async fn rename_locks(&self, from: &str, to: &str) -> Result<u64, NamespaceError> {
        let from = NsPath::parse(from)?;
        let to = NsPath::parse(to)?;
        self.run("moving locks", true, move |tx, now| {
            purge_expired(tx, now)?;
            let mut moved = at(tx, &from, now)?;
            moved.extend(below(tx, &from, now)?);
            for l in &moved {
                let new_path = NsPath::parse(&l.path)?.rebase(&from, &to);
                tx.execute(
                    "UPDATE locks SET path = ?2 WHERE token = ?1",
                    params![l.token, new_path.as_str()],
                )
                .ctx("moving a lock")?;
            }
            Ok(moved.len() as u64)
        })
        .await
    }

    /// Every live lock, by path (for diagnostics and tests).
    pub async fn list_locks(&self) -> Result<Vec<Lock>, NamespaceError> {
        self.run("listing locks", false, move |tx, now| {
            query_locks(
                tx,
                &format!(
                    "SELECT {LOCK_COLS} FROM locks WHERE timeout_at IS NULL OR timeout_at > ?1
                     ORDER BY path, created, token"
                ),
                params![now],
                now,
            )
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Place {
        Same,
        Ancestor,
        Descendant,
        /// `/a` vs `/ab`: a shared string prefix, no ancestry.
        PrefixSibling,
    }

    /// Every combination of (existing lock kind, depth, place) x (new lock
    /// kind, depth), against RFC 4918's rules written out directly.
    #[tokio::test]
    async fn lock_conflict_matrix() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let mut cases = 0;
        for place in [
            Place::Same,
            Place::Ancestor,
            Place::Descendant,
            Place::PrefixSibling,
        ] {
            for old_shared in [false, true] {
                for old_deep in [false, true] {
                    for new_shared in [false, true] {
                        for new_deep in [false, true] {
                            let (old_path, new_path) = match place {
                                Place::Same => ("/a/b", "/a/b"),
                                Place::Ancestor => ("/a", "/a/b/c"),
                                Place::Descendant => ("/a/b/c", "/a"),
                                Place::PrefixSibling => ("/a", "/ab"),
                            };
                            let both_shared = old_shared && new_shared;
                            let expect_conflict = !both_shared
                                && match place {
                                    Place::Same => true,
                                    Place::Ancestor => old_deep,
                                    Place::Descendant => new_deep,
                                    Place::PrefixSibling => false,
                                };
                            ns.delete_locks("/").await.unwrap();
                            let old = ns
                                .lock(old_path, Some("p1"), None, None, old_shared, old_deep)
                                .await
                                .unwrap();
                            let got = ns
                                .lock(new_path, Some("p1"), None, None, new_shared, new_deep)
                                .await;
                            let case = format!(
                                "{place:?} old(shared={old_shared}, deep={old_deep}) \
                                 new(shared={new_shared}, deep={new_deep}): {got:?}"
                            );
                            match got {
                                Err(NamespaceError::Locked { token, path, lock }) => {
                                    assert!(expect_conflict, "{case}");
                                    assert_eq!(token, old.token, "{case}");
                                    assert_eq!(path, old_path, "{case}");
                                    assert_eq!(*lock, old, "{case}");
                                }
                                Ok(_) => assert!(!expect_conflict, "{case}"),
                                Err(e) => panic!("{case}: {e}"),
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 64);
    }

    #[tokio::test]
    async fn check_requires_the_tokens_and_principal_of_every_lock_in_the_way() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let x = ns
            .lock("/a", Some("alice"), None, None, false, true)
            .await
            .unwrap();
        let t = x.token.as_str();
        let locked = |r: Result<(), NamespaceError>| matches!(r, Err(NamespaceError::Locked { token, .. }) if token == x.token);
        assert!(locked(
            ns.check("/a/b", Some("alice"), false, false, &[]).await
        ));
        assert!(ns
            .check("/a/b", Some("alice"), false, false, &[t])
            .await
            .is_ok());
        assert!(locked(
            ns.check("/a/b", Some("bob"), false, false, &[t]).await
        ));
        assert!(ns
            .check("/a/b", Some("bob"), true, false, &[t])
            .await
            .is_ok());
        assert!(ns.check("/ab", None, false, true, &[]).await.is_ok());
        // A deep check of the root meets the lock below it.
        assert!(locked(ns.check("/", None, false, true, &[]).await));
        assert!(ns.check("/", None, false, false, &[]).await.is_ok());
        assert!(ns
            .check("/", Some("alice"), false, true, &[t])
            .await
            .is_ok());

        // Shared locks: holding one of those on the path is enough there,
        // but every one below a deep check must be held.
        let s1 = ns
            .lock("/s", Some("u1"), None, None, true, false)
            .await
            .unwrap();
        let s2 = ns
            .lock("/s", Some("u2"), None, None, true, false)
            .await
            .unwrap();
        assert!(ns.check("/s", None, false, false, &[]).await.is_err());
        assert!(ns
            .check("/s", Some("u1"), false, false, &[&s1.token])
            .await
            .is_ok());
        assert!(ns
            .check("/s", Some("u2"), false, false, &[&s2.token])
            .await
            .is_ok());
        assert!(ns
            .check("/", None, true, true, &[t, &s1.token])
            .await
            .is_err());
        assert!(ns
            .check("/", None, true, true, &[t, &s1.token, &s2.token])
            .await
            .is_ok());
    }

    /// More locks than `discover` reads in place: the ones past the limit
    /// are not dropped, and the order (ancestors' deep locks first) holds
    /// whether the limit is crossed on an ancestor or on the path.
    #[tokio::test]
    async fn discover_returns_every_lock_past_the_in_place_limit() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let mut expected = Vec::new();
        for _ in 0..DISCOVER_IN_PLACE {
            let l = ns.lock("/a", None, None, None, true, true).await.unwrap();
            expected.push(l.token);
        }
        let mut shallow = Vec::new();
        for _ in 0..3 {
            let l = ns
                .lock("/a/b", None, None, None, true, false)
                .await
                .unwrap();
            shallow.push(l.token);
        }
        let tokens = |v: Vec<Lock>| v.into_iter().map(|l| l.token).collect::<Vec<_>>();
        // Exactly the limit, all on the ancestor: read in place.
        let mut want = expected.clone();
        want.sort();
        let mut got = tokens(ns.discover("/a/c").await.unwrap());
        got.sort();
        assert_eq!(got, want);
        // Past it on the path itself.
        let got = tokens(ns.discover("/a/b").await.unwrap());
        assert_eq!(got.len(), DISCOVER_IN_PLACE + 3);
        let (deep, own) = got.split_at(DISCOVER_IN_PLACE);
        let mut deep = deep.to_vec();
        deep.sort();
        assert_eq!(deep, want);
        // Taken at the same (manual) time: by token.
        shallow.sort();
        assert_eq!(own, shallow.as_slice());
        // Past it on the ancestor already.
        ns.lock("/a", None, None, None, true, true).await.unwrap();
        assert_eq!(
            ns.discover("/a/b").await.unwrap().len(),
            DISCOVER_IN_PLACE + 4
        );
    }

    #[tokio::test]
    async fn discover_unlock_refresh_follow_the_lock_scope() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let deep = ns.lock("/a", None, None, None, true, true).await.unwrap();
        let shallow = ns
            .lock("/a/b", None, None, None, true, false)
            .await
            .unwrap();
        let tokens = |v: Vec<Lock>| v.into_iter().map(|l| l.token).collect::<Vec<_>>();
        assert_eq!(
            tokens(ns.discover("/a/b/").await.unwrap()),
            [deep.token.clone(), shallow.token.clone()]
        );
        assert_eq!(
            tokens(ns.discover("/a/b/c").await.unwrap()),
            std::slice::from_ref(&deep.token)
        );
        assert!(ns.discover("/ab").await.unwrap().is_empty());

        assert!(matches!(
            ns.unlock("/a/b/c", &shallow.token).await,
            Err(NamespaceError::LockNotFound { .. })
        ));
        assert!(matches!(
            ns.unlock("/a", "urn:uuid:nope").await,
            Err(NamespaceError::LockNotFound { .. })
        ));
        ns.unlock("/a/b", &shallow.token).await.unwrap();
        // A deep lock may be released through any resource in its scope.
        let r = ns
            .refresh("/a/x", &deep.token, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(r.timeout_at, Some(t0() + Duration::from_secs(60)));
        assert_eq!(r.timeout, Some(Duration::from_secs(60)));
        ns.unlock("/a/x/y", &deep.token).await.unwrap();
        assert!(ns.list_locks().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn expired_locks_block_nothing() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let l = ns
            .lock(
                "/f",
                Some("p"),
                None,
                Some(Duration::from_secs(1)),
                false,
                true,
            )
            .await
            .unwrap();
        assert_eq!(l.timeout_at, Some(t0() + Duration::from_secs(1)));
        f.clock.advance(Duration::from_millis(900));
        assert!(ns.check("/f", None, false, false, &[]).await.is_err());
        assert_eq!(
            ns.discover("/f").await.unwrap()[0].timeout,
            Some(Duration::from_millis(100)),
            "timeout reports the time left"
        );
        // A refresh restarts the count from now.
        ns.refresh("/f", &l.token, Some(Duration::from_secs(1)))
            .await
            .unwrap();
        f.clock.advance(Duration::from_millis(900));
        assert!(ns.check("/f", None, false, false, &[]).await.is_err());

        f.clock.advance(Duration::from_millis(200));
        assert!(ns.check("/f", None, false, true, &[]).await.is_ok());
        assert!(ns.check("/", None, false, true, &[]).await.is_ok());
        assert!(ns.discover("/f").await.unwrap().is_empty());
        assert!(ns.list_locks().await.unwrap().is_empty());
        assert!(matches!(
            ns.refresh("/f", &l.token, None).await,
            Err(NamespaceError::LockNotFound { .. })
        ));
        assert!(matches!(
            ns.unlock("/f", &l.token).await,
            Err(NamespaceError::LockNotFound { .. })
        ));
        ns.lock("/f", None, None, None, false, true).await.unwrap();

        // Infinite locks do not expire.
        f.clock.advance(Duration::from_secs(10 * 365 * 86_400));
        assert!(ns.check("/f", None, false, false, &[]).await.is_err());
    }

    #[tokio::test]
    async fn delete_and_rename_locks_by_prefix() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        let a = ns.lock("/a", None, None, None, false, false).await.unwrap();
        let ab = ns
            .lock("/a/b", None, None, None, false, false)
            .await
            .unwrap();
        let sibling = ns
            .lock("/ab", None, None, None, false, false)
            .await
            .unwrap();
        let paths = |v: Vec<Lock>| {
            let mut p: Vec<(String, String)> = v.into_iter().map(|l| (l.token, l.path)).collect();
            p.sort_by(|x, y| x.1.cmp(&y.1));
            p
        };
        assert_eq!(ns.rename_locks("/a", "/x/y").await.unwrap(), 2);
        assert_eq!(
            paths(ns.list_locks().await.unwrap()),
            [
                (sibling.token.clone(), "/ab".to_owned()),
                (a.token.clone(), "/x/y".to_owned()),
                (ab.token.clone(), "/x/y/b".to_owned()),
            ]
        );
        assert_eq!(ns.delete_locks("/x/").await.unwrap(), 2);
        assert_eq!(
            paths(ns.list_locks().await.unwrap()),
            [(sibling.token.clone(), "/ab".to_owned())]
        );
        assert_eq!(ns.delete_locks("/").await.unwrap(), 1);
        assert!(ns.list_locks().await.unwrap().is_empty());
    }

    #[test]
    fn tokens_are_uuid_urns() {
        let t = new_token();
        assert_eq!(t.len(), "urn:uuid:".len() + 36);
        assert!(t.starts_with("urn:uuid:"));
        assert_eq!(&t[9 + 14..9 + 15], "4");
        assert_ne!(new_token(), t);
    }
}
