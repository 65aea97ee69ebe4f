//! The database schema and its migrations.
//!
//! `PRAGMA user_version` holds the schema version. [`migrate`] brings any
//! older database up to [`SCHEMA_VERSION`] one step at a time, each step in
//! its own transaction, and refuses a newer database rather than guess.

use rusqlite::{params, Connection, TransactionBehavior};

use super::error::DbContext;
use super::NamespaceError;

/// Do not change the meaning of a version: on-disk format. Add a step.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The root directory's row id, fixed by the first migration.
pub(crate) const ROOT_ID: i64 = 1;

const V1: &str = "
CREATE TABLE nodes (
    id       INTEGER PRIMARY KEY,
    parent   INTEGER REFERENCES nodes(id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('dir', 'file')),
    size     INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
    created  INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    etag     TEXT NOT NULL,
    cap      TEXT,
    inline   BLOB,
    -- a file has exactly one of cap/inline, a directory neither
    CHECK ((kind = 'dir' AND cap IS NULL AND inline IS NULL)
        OR (kind = 'file' AND (cap IS NULL) <> (inline IS NULL))),
    CHECK (parent IS NOT NULL OR id = 1),
    UNIQUE (parent, name)
);
-- reference counting of capabilities is a lookup by cap
CREATE INDEX nodes_cap ON nodes(cap) WHERE cap IS NOT NULL;

CREATE TABLE props (
    node_id   INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (node_id, namespace, name)
) WITHOUT ROWID;

CREATE TABLE garbage (
    cap       TEXT PRIMARY KEY,
    queued_at INTEGER NOT NULL,
    -- set while a collector is freeing the shares: see garbage.rs
    claimed   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE pending_uploads (
    id            INTEGER PRIMARY KEY,
    storage_index TEXT NOT NULL,
    started_at    INTEGER NOT NULL
);

CREATE TABLE locks (
    token          TEXT PRIMARY KEY,
    path           TEXT NOT NULL,
    depth_infinite INTEGER NOT NULL,
    shared         INTEGER NOT NULL,
    owner_xml      BLOB,
    principal      TEXT,
    timeout_at     INTEGER,
    created        INTEGER NOT NULL
);
CREATE INDEX locks_path ON locks(path);
CREATE INDEX locks_timeout ON locks(timeout_at) WHERE timeout_at IS NOT NULL;
";

/// Sets the connection up (WAL, foreign keys) and migrates the schema.
pub(crate) fn prepare(conn: &mut Connection, now_ms: i64) -> Result<(), NamespaceError> {
    // WAL: readers never block the writer. NORMAL: a commit does not sync
    // (it survives a process crash, not a power cut, and never costs
    // consistency); `durable.rs` syncs the WAL once for all commits waiting
    // before anyone answers, which FULL would do once per commit while
    // holding the connection. Foreign keys are per connection and off by
    // default.
    conn.pragma_update(None, "journal_mode", "WAL")
        .ctx("enabling WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .ctx("setting synchronous")?;
    conn.pragma_update(None, "foreign_keys", true)
        .ctx("enabling foreign keys")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .ctx("setting busy timeout")?;
    migrate(conn, now_ms)?;
    // Files stored with fewer than n shares, for repair to complete first
    // (files.rs). Outside the numbered steps: a table an older griddav
    // ignores, which a newer one may create at any version.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS short_files (
             cap         TEXT PRIMARY KEY,
             recorded_at INTEGER NOT NULL
         );",
    )
    .ctx("creating the table of files short of shares")
}

/// Migrates to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection, now_ms: i64) -> Result<(), NamespaceError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a migration")?;
        // Read inside the write transaction: two processes opening the same
        // fresh database must not both run step 1.
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx("reading the schema version")?;
        match version {
            SCHEMA_VERSION => return Ok(()),
            0 => {
                tx.execute_batch(V1).ctx("creating schema version 1")?;
                tx.execute(
                    "INSERT INTO nodes (id, parent, name, kind, size, created, modified, etag)
                     VALUES (?1, NULL, '', 'dir', 0, ?2, ?2, ?3)",
                    params![ROOT_ID, now_ms, super::tree::dir_etag(ROOT_ID, now_ms)],
                )
                .ctx("creating the root directory")?;
            }
            found => {
                return Err(NamespaceError::UnsupportedSchema {
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
        }
        tx.pragma_update(None, "user_version", version + 1)
            .ctx("writing the schema version")?;
        tx.commit().ctx("committing a migration")?;
    }
}
