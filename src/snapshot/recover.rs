//! `griddav recover`: a data directory rebuilt from the grid and the root
//! secret alone.
//!
//! Reads the root record of every reachable server, takes the newest that
//! verifies, downloads the newest copy it names (the engine verifies every
//! byte against the capability). A base is the database itself; an
//! increment names its base and the increments before it: the base is
//! downloaded and each increment applied in order, each checked against
//! the digest of the image it must produce. SQLite's integrity check
//! follows. If that copy cannot be rebuilt, older copies the record names
//! are tried. The result is installed as `namespace.db`, with the root
//! secret and the record beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::copy::{write_local_record, SnapshotError};
use super::increment::{self, FormatError, Header, Kind};
use super::record::{self, CopyEntry, RecordError};
use super::secret::{RootSecret, SecretError};
use crate::engine::{Downloader, FileCap};
use crate::grid::Grid;

const TEMP_FILE: &str = ".namespace-recover.tmp";
/// Where the base is rebuilt when the copy is an increment.
const TEMP_BASE: &str = ".namespace-recover-base.tmp";
/// Where each increment of a chain is downloaded before it is applied.
const TEMP_INCREMENT: &str = ".namespace-recover-increment.tmp";

/// Why `griddav recover` did not install a namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum RecoverError {
    /// A namespace already exists and `--force` was not given.
    #[error(
        "{} exists: recover would replace this namespace; give --force to set it aside \
         (renamed, not deleted) and recover anyway", path.display()
    )]
    Exists { path: PathBuf },
    /// The data directory holds another root secret and `--force` was not given.
    #[error(
        "{} holds another root secret: this data directory belongs to another key; \
         give --force to set it aside and recover anyway", path.display()
    )]
    OtherSecret { path: PathBuf },
    /// No server returned a record that verifies with this key.
    #[error(
        "no server holds a root record that verifies with this key{}",
        problems_text(problems)
    )]
    NoRecord { problems: Vec<String> },
    /// No copy the newest record names could be read.
    #[error("no namespace copy named by root record {seq} could be read: {}", failures.join("; "))]
    NoCopy { seq: u64, failures: Vec<String> },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The root secret could not be read or parsed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A copy could not be downloaded or applied.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A record was malformed.
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
    /// When the installed copy was taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// Bytes downloaded: the base and every increment applied.
    pub bytes: u64,
    /// Increments applied on the base.
    pub increments: usize,
    /// Wall time of the whole recovery.
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
    let mut chosen: Option<(CopyEntry, (u64, usize))> = None;
    for copy in &newest.copies {
        match rebuild(grid, copy, data_dir, &temp).await {
            Ok(done) => {
                chosen = Some((copy.clone(), done));
                break;
            }
            Err(e) => {
                tracing::warn!(copy = copy.seq, error = %e, "namespace copy unusable; trying an older one");
                failures.push(format!("copy {}: {e}", copy.seq));
            }
        }
    }
    for scratch in [TEMP_BASE, TEMP_INCREMENT] {
        let _ = tokio::fs::remove_file(data_dir.join(scratch)).await;
    }
    let Some((copy, (bytes, increments))) = chosen else {
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
        increments,
        elapsed: started.elapsed(),
        records_verified: found.verified,
        problems: found.problems,
        set_aside,
    })
}

/// Rebuilds the namespace of one copy into `temp` and checks it is a sound
/// database: bytes downloaded and increments applied.
async fn rebuild(
    grid: &Grid,
    copy: &CopyEntry,
    data_dir: &Path,
    temp: &Path,
) -> Result<(u64, usize), String> {
    let mut bytes = download(grid, &copy.cap, temp).await?;
    let head = {
        let temp = temp.to_owned();
        tokio::task::spawn_blocking(move || -> Result<Option<Header>, String> {
            let mut first = std::io::BufReader::new(
                std::fs::File::open(&temp).map_err(|e| format!("reading the copy: {e}"))?,
            );
            let mut magic = [0u8; 16];
            std::io::Read::read_exact(&mut first, &mut magic)
                .map_err(|e| format!("reading the copy: {e}"))?;
            if &magic == increment::SQLITE_MAGIC {
                return Ok(None);
            }
            let mut first = std::io::BufReader::new(
                std::fs::File::open(&temp).map_err(|e| format!("reading the copy: {e}"))?,
            );
            Header::read(&mut first)
                .map(Some)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let mut increments = 0;
    if let Some(head) = head {
        let base = data_dir.join(TEMP_BASE);
        let scratch = data_dir.join(TEMP_INCREMENT);
        bytes = bytes.saturating_add(download(grid, &head.chain[0], &base).await?);
        let mut image = {
            let base = base.clone();
            tokio::task::spawn_blocking(move || increment::hash_image(&base))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("the base: {e}"))?
        };
        let mut target = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&base)
            .map_err(|e| format!("the base: {e}"))?;
        for (n, cap) in head.chain.iter().enumerate().skip(1) {
            bytes = bytes.saturating_add(download(grid, cap, &scratch).await?);
            let expected = head.chain[..n].to_vec();
            (target, image) = apply_file(&scratch, Some(expected), target, image)
                .await
                .map_err(|e| format!("increment {n}: {e}"))?;
            increments += 1;
        }
        (target, _) = apply_file(temp, None, target, image)
            .await
            .map_err(|e| format!("increment {}: {e}", head.chain.len()))?;
        increments += 1;
        target
            .sync_all()
            .map_err(|e| format!("writing the copy: {e}"))?;
        drop(target);
        std::fs::rename(&base, temp).map_err(|e| format!("writing the copy: {e}"))?;
    }
    let path = temp.to_owned();
    tokio::task::spawn_blocking(move || check_database(&path))
        .await
        .map_err(|e| e.to_string())??;
    Ok((bytes, increments))
}

/// Applies the increment in the file `path` (whose chain must be
/// `expected`, when given) to `target`. Blocking work on its own thread.
async fn apply_file(
    path: &Path,
    expected: Option<Vec<String>>,
    mut target: std::fs::File,
    mut image: increment::Image,
) -> Result<(std::fs::File, increment::Image), String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&path).map_err(|e| e.to_string())?,
        );
        let header = Header::read(&mut reader).map_err(|e| e.to_string())?;
        if expected.is_some_and(|chain| chain != header.chain) {
            return Err("it does not build on the files before it".to_owned());
        }
        increment::apply(&header, &mut reader, &mut target, &mut image)
            .map_err(|e| e.to_string())?;
        Ok((target, image))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Downloads the file `cap` into a new owner-only file at `temp`; its size.
async fn download(grid: &Grid, cap: &str, temp: &Path) -> Result<u64, String> {
    let cap: FileCap = cap.parse().map_err(|e| format!("capability: {e}"))?;
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
    Ok(bytes)
}

/// The files the copy `cap` builds on, base first (none for a base),
/// from its first bytes.
pub async fn chain_of(grid: &Grid, cap: &str) -> Result<Vec<String>, String> {
    // The longest header: every link at its longest.
    const MAX_HEADER: usize = 64 + increment::MAX_CHAIN * (2 + 1024);
    let parsed: FileCap = cap.parse().map_err(|e| format!("capability: {e}"))?;
    let downloader = Arc::new(
        Downloader::open(grid, &parsed)
            .await
            .map_err(|e| e.to_string())?,
    );
    let mut stream = std::pin::pin!(downloader.stream(0));
    let mut head = Vec::new();
    while let Some(piece) = stream.next().await {
        head.extend_from_slice(&piece.map_err(|e| e.to_string())?);
        match Header::kind(&head) {
            Ok(Kind::Base) => return Ok(Vec::new()),
            Ok(Kind::Increment(header)) => return Ok(header.chain),
            Err(FormatError::CutShort) if head.len() < MAX_HEADER => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(FormatError::CutShort.to_string())
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
