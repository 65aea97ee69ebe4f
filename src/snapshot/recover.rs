//! `griddav recover`: a data directory rebuilt from the grid and the root
//! secret alone.
//!
//! Reads the root record of every reachable server, takes the newest that
//! verifies, downloads the newest copy it names (the engine verifies every
//! byte against the capability; SQLite's integrity check follows), falling
//! back to older copies the record names, and installs it as
//! `namespace.db`, with the root secret and the record beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::copy::{write_local_record, SnapshotError};
use super::record::{self, CopyEntry, RecordError};
use super::secret::{RootSecret, SecretError};
use crate::engine::{Downloader, FileCap};
use crate::grid::Grid;

const TEMP_FILE: &str = ".namespace-recover.tmp";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    #[error(
        "{} exists: recover would replace this namespace; give --force to set it aside \
         (renamed, not deleted) and recover anyway", path.display()
    )]
    Exists { path: PathBuf },
    #[error(
        "{} holds another root secret: this data directory belongs to another key; \
         give --force to set it aside and recover anyway", path.display()
    )]
    OtherSecret { path: PathBuf },
    #[error(
        "no server holds a root record that verifies with this key{}",
        problems_text(problems)
    )]
    NoRecord { problems: Vec<String> },
    #[error("no namespace copy named by root record {seq} could be read: {}", failures.join("; "))]
    NoCopy { seq: u64, failures: Vec<String> },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

fn problems_text(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", problems.join("; "))
    }
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> RecoverError {
    move |source| RecoverError::Io { context, source }
}

/// What a recovery did.
#[derive(Debug)]
pub struct Recovered {
    /// The root record used.
    pub record_seq: u64,
    /// The copy installed.
    pub copy_seq: u64,
    pub taken_at_ms: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Servers whose record verified.
    pub records_verified: usize,
    /// Servers that could not be asked or whose record did not verify.
    pub problems: Vec<String>,
    /// Where the namespace that was replaced (`--force`) now is.
    pub set_aside: Vec<PathBuf>,
}

/// Rebuilds `db_path` (in `data_dir`) from `grid` with `secret`.
pub async fn recover(
    grid: &Grid,
    secret: &RootSecret,
    data_dir: &Path,
    db_path: &Path,
    force: bool,
) -> Result<Recovered, RecoverError> {
    let started = Instant::now();
    if !force
        && tokio::fs::try_exists(db_path)
            .await
            .map_err(io("looking for the namespace"))?
    {
        return Err(RecoverError::Exists {
            path: db_path.to_owned(),
        });
    }
    let existing = {
        let data_dir = data_dir.to_owned();
        tokio::task::spawn_blocking(move || RootSecret::load(&data_dir))
            .await
            .map_err(|e| io("reading the root secret")(std::io::Error::other(e)))?
    };
    let other_secret = match existing {
        Ok(Some(found)) => found != *secret,
        Ok(None) => false,
        // Damaged: set aside with --force like another key's.
        Err(_) => true,
    };
    if other_secret && !force {
        return Err(RecoverError::OtherSecret {
            path: RootSecret::path(data_dir),
        });
    }
    let found = record::read_newest(grid, secret).await;
    let Some(newest) = found.newest else {
        return Err(RecoverError::NoRecord {
            problems: found.problems,
        });
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io("creating the data directory"))?;
    }
    let temp = data_dir.join(TEMP_FILE);
    let mut failures = Vec::new();
    let mut chosen: Option<(CopyEntry, u64)> = None;
    for copy in &newest.copies {
        match fetch_copy(grid, copy, &temp).await {
            Ok(bytes) => {
                chosen = Some((copy.clone(), bytes));
                break;
            }
            Err(e) => {
                tracing::warn!(copy = copy.seq, error = %e, "namespace copy unusable; trying an older one");
                failures.push(format!("copy {}: {e}", copy.seq));
            }
        }
    }
    let Some((copy, bytes)) = chosen else {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(RecoverError::NoCopy {
            seq: newest.seq,
            failures,
        });
    };
    let set_aside = install(data_dir, db_path, &temp, secret, other_secret).await?;
    write_local_record(data_dir, &newest.seal(secret)?).await?;
    Ok(Recovered {
        record_seq: newest.seq,
        copy_seq: copy.seq,
        taken_at_ms: copy.taken_at_ms,
        bytes,
        elapsed: started.elapsed(),
        records_verified: found.verified,
        problems: found.problems,
        set_aside,
    })
}

/// Downloads one copy into `temp` and checks it is a sound database.
async fn fetch_copy(grid: &Grid, copy: &CopyEntry, temp: &Path) -> Result<u64, String> {
    let cap: FileCap = copy.cap.parse().map_err(|e| format!("capability: {e}"))?;
    let downloader = Arc::new(
        Downloader::open(grid, &cap)
            .await
            .map_err(|e| e.to_string())?,
    );
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(temp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(temp)
            .map_err(|e| format!("{}: {e}", temp.display()))?;
        tokio::fs::File::from_std(file)
    };
    let mut stream = std::pin::pin!(downloader.stream(0));
    let mut bytes = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| e.to_string())?;
        bytes = bytes.saturating_add(piece.len() as u64);
        file.write_all(&piece)
            .await
            .map_err(|e| format!("writing the copy: {e}"))?;
    }
    file.sync_all()
        .await
        .map_err(|e| format!("writing the copy: {e}"))?;
    drop(file);
    let path = temp.to_owned();
    tokio::task::spawn_blocking(move || check_database(&path))
        .await
        .map_err(|e| e.to_string())??;
    Ok(bytes)
}

/// SQLite's own check, and the root folder where griddav puts it.
fn check_database(path: &Path) -> Result<(), String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("not a database: {e}"))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity check: {e}"))?;
    if verdict != "ok" {
        return Err(format!("integrity check: {verdict}"));
    }
    let roots: i64 = conn
        .query_row(
            "SELECT count(*) FROM nodes WHERE id = 1 AND parent IS NULL AND kind = 'dir'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| format!("not a griddav namespace: {e}"))?;
    if roots != 1 {
        return Err("not a griddav namespace: no root folder".into());
    }
    Ok(())
}

/// Moves the downloaded copy into place; what it replaces (and another
/// key's secret) is renamed aside, never deleted.
async fn install(
    data_dir: &Path,
    db_path: &Path,
    temp: &Path,
    secret: &RootSecret,
    replace_secret: bool,
) -> Result<Vec<PathBuf>, RecoverError> {
    let (data_dir, db_path, temp, secret) = (
        data_dir.to_owned(),
        db_path.to_owned(),
        temp.to_owned(),
        secret.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut set_aside = Vec::new();
        let mut aside = |path: PathBuf| -> Result<(), RecoverError> {
            if path.exists() {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".before-recover-{stamp}"));
                let target = path.with_file_name(name);
                std::fs::rename(&path, &target).map_err(io("setting the old namespace aside"))?;
                set_aside.push(target);
            }
            Ok(())
        };
        let mut wal = db_path.as_os_str().to_owned();
        wal.push("-wal");
        let mut shm = db_path.as_os_str().to_owned();
        shm.push("-shm");
        // The WAL first: a WAL left beside the new database would be
        // replayed into it.
        aside(PathBuf::from(wal))?;
        aside(PathBuf::from(shm))?;
        aside(db_path.clone())?;
        if replace_secret {
            aside(RootSecret::path(&data_dir))?;
        }
        std::fs::rename(&temp, &db_path).map_err(io("installing the namespace"))?;
        std::fs::File::open(&data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the data directory"))?;
        if RootSecret::load(&data_dir)?.is_none() {
            secret.store(&data_dir)?;
        }
        Ok(set_aside)
    })
    .await
    .map_err(|e| io("installing the namespace")(std::io::Error::other(e)))?
}
