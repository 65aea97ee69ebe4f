//! Copies of the namespace into the grid, and the root record that names
//! them.
//!
//! A copy is the whole database, made consistent by SQLite's `VACUUM INTO`
//! on a connection of its own (a read transaction: PUTs and PROPPATCHes go
//! on meanwhile), then uploaded through the engine like any file, so it is
//! encrypted with its own key and erasure-coded. Its capability goes into
//! a new root record (sequence number + 1) stored on every server and in
//! `<data_dir>/root-record`. The record names the newest `keep` copies;
//! an older one goes on the garbage list and the collector frees it.
//!
//! A full copy each time: measured at 100,000 files in docs/OPERATIONS.md.
//! Shipping only what changed (Litestream-style WAL shipping) is left for
//! when that cost matters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::record::{self, CopyEntry, RecordError, RootRecord};
use super::secret::RootSecret;
use crate::engine::{EncodingParams, EngineError, UploadOptions, Uploader};
use crate::grid::Grid;
use crate::namespace::{Namespace, NamespaceError};

/// The local copy of the newest root record, in the data directory.
pub const RECORD_FILE: &str = "root-record";
/// Where a copy is made before it is uploaded.
const TEMP_FILE: &str = ".namespace-copy.tmp";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("namespace copy: {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("namespace copy: {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("namespace copy: upload: {0}")]
    Engine(#[from] EngineError),
    #[error("namespace copy: {0}")]
    Namespace(#[from] NamespaceError),
    #[error("namespace copy: {0}")]
    Record(#[from] RecordError),
    #[error("namespace copy: no server stored the root record: {}", errors.join("; "))]
    NoRecordStored { errors: Vec<String> },
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { context, source }
}

/// What one copy cost.
#[derive(Clone, Debug)]
pub struct CopyReport {
    pub seq: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Servers that stored the new root record.
    pub servers: usize,
}

/// Takes namespace copies; cheap to clone. Copies are serialised.
#[derive(Clone, Debug)]
pub struct Snapshots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ns: Namespace,
    grid: Grid,
    secret: RootSecret,
    data_dir: PathBuf,
    db_path: PathBuf,
    params: EncodingParams,
    upload: UploadOptions,
    keep: usize,
    /// Wakes the garbage collector when an old copy is queued.
    garbage_signal: Option<Arc<tokio::sync::Notify>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The newest record known (local file or grid); read before the first copy.
    record: Option<RootRecord>,
    /// [`Namespace::change_count`] when the last copy of this run began.
    copied: Option<u64>,
}

impl Snapshots {
    /// No I/O: the newest record is read before the first copy.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ns: Namespace,
        grid: Grid,
        secret: RootSecret,
        data_dir: PathBuf,
        db_path: PathBuf,
        params: EncodingParams,
        upload: UploadOptions,
        keep: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ns,
                grid,
                secret,
                data_dir,
                db_path,
                params,
                upload,
                keep: keep.clamp(1, record::MAX_COPIES),
                garbage_signal: None,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Wake `signal` (the collector's) when an old copy becomes garbage.
    /// Call before the first clone.
    pub fn with_garbage_signal(mut self, signal: Arc<tokio::sync::Notify>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.garbage_signal = Some(signal);
        }
        self
    }

    /// Copies the namespace unless nothing changed since the last copy
    /// of this run (`force`: copy anyway). `None`: nothing to do.
    pub async fn copy_if_changed(&self, force: bool) -> Result<Option<CopyReport>, SnapshotError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let changes = inner.ns.change_count();
        if !force && state.copied == Some(changes) {
            return Ok(None);
        }
        if state.record.is_none() {
            state.record = Some(inner.newest_record().await);
        }
        let started = Instant::now();
        let (cap, taken_at_ms, bytes) = inner.upload_copy().await?;
        let previous = state.record.clone().unwrap_or_default();
        let entry = CopyEntry {
            seq: previous.seq.saturating_add(1),
            taken_at_ms,
            cap,
        };
        let mut copies = vec![entry.clone()];
        copies.extend(previous.copies.iter().cloned());
        let dropped = copies.split_off(copies.len().min(inner.keep));
        let next = RootRecord {
            seq: entry.seq,
            copies,
        };
        let (servers, errors) = record::publish(&inner.grid, &inner.secret, &next).await?;
        if servers == 0 {
            // Nothing names the copy: free it.
            inner.ns.queue_garbage(&entry.cap).await?;
            return Err(SnapshotError::NoRecordStored { errors });
        }
        if !errors.is_empty() {
            tracing::warn!(stored = servers, failed = errors.len(), errors = %errors.join("; "),
                "the root record did not reach every server");
        }
        write_local_record(&inner.data_dir, &next.seal(&inner.secret)?).await?;
        let freed_any = !dropped.is_empty();
        for old in dropped {
            inner.ns.queue_garbage(&old.cap).await?;
        }
        if let (true, Some(signal)) = (freed_any, &inner.garbage_signal) {
            signal.notify_one();
        }
        let report = CopyReport {
            seq: next.seq,
            bytes,
            elapsed: started.elapsed(),
            servers,
        };
        state.record = Some(next);
        state.copied = Some(changes);
        Ok(Some(report))
    }

    /// The record the last copy wrote or the newest one found.
    pub async fn current_record(&self) -> Option<RootRecord> {
        self.inner.state.lock().await.record.clone()
    }

    /// Copies `interval` after changes (never with a zero interval) and
    /// at once on SIGUSR1, until aborted. Copies are logged.
    pub fn spawn(&self, interval: Duration) -> JoinHandle<()> {
        let snapshots = self.clone();
        tokio::spawn(async move {
            let mut usr1 = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::user_defined1(),
            ) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGUSR1: no copies on demand");
                    None
                }
            };
            loop {
                let periodic = async {
                    if interval.is_zero() {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(interval).await;
                };
                let on_demand = async {
                    match usr1.as_mut() {
                        Some(signal) => {
                            signal.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let force = tokio::select! {
                    () = periodic => false,
                    () = on_demand => {
                        tracing::info!("SIGUSR1: copying the namespace into the grid");
                        true
                    }
                };
                snapshots.copy_logged(force).await;
            }
        })
    }

    /// [`Snapshots::copy_if_changed`], its outcome logged.
    pub async fn copy_logged(&self, force: bool) -> bool {
        match self.copy_if_changed(force).await {
            Ok(Some(report)) => {
                tracing::info!(
                    seq = report.seq,
                    bytes = report.bytes,
                    ms = report.elapsed.as_millis() as u64,
                    servers = report.servers,
                    "namespace copied into the grid"
                );
                true
            }
            Ok(None) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot copy the namespace into the grid");
                false
            }
        }
    }
}

impl Inner {
    /// The newest of the local record and those on the servers, so the
    /// next sequence number is above every one written before.
    async fn newest_record(&self) -> RootRecord {
        let local = read_local_record(&self.data_dir, &self.secret).await;
        let found = record::read_newest(&self.grid, &self.secret).await;
        for problem in &found.problems {
            tracing::warn!(problem = %problem, "root record not read");
        }
        match (local, found.newest) {
            (Some(a), Some(b)) => {
                if a.seq >= b.seq {
                    a
                } else {
                    b
                }
            }
            (a, b) => a.or(b).unwrap_or_default(),
        }
    }

    /// Makes a consistent copy of the database and uploads it: its
    /// capability, when it was taken (ms since the epoch), and its size.
    async fn upload_copy(&self) -> Result<(String, u64, u64), SnapshotError> {
        let temp = self.data_dir.join(TEMP_FILE);
        let bytes = {
            let (db, temp) = (self.db_path.clone(), temp.clone());
            tokio::task::spawn_blocking(move || vacuum_into(&db, &temp))
                .await
                .map_err(|e| io("making the copy")(std::io::Error::other(e)))??
        };
        let taken_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let result = self.upload_file(&temp, bytes).await;
        let _ = tokio::fs::remove_file(&temp).await;
        Ok((result?, taken_at_ms, bytes))
    }

    /// Uploads the file at `path` (`size` bytes), journalled like a PUT
    /// so that a crash leaves no shares behind. The journal entry is made
    /// after the copy was taken: a copy must never hold its own entry, or
    /// the server recovered from it would delete its shares.
    async fn upload_file(&self, path: &Path, size: u64) -> Result<String, SnapshotError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io("reading the copy"))?;
        let mut uploader = Uploader::new(
            self.grid.clone(),
            self.params,
            self.upload.clone(),
            Some(size),
        )
        .await?;
        let journal = self.ns.begin_upload(&uploader.recovery_token()).await?;
        let mut buffer = vec![0u8; 1 << 20];
        let written = async {
            loop {
                let n = file
                    .read(&mut buffer)
                    .await
                    .map_err(io("reading the copy"))?;
                if n == 0 {
                    break;
                }
                uploader.write(Bytes::copy_from_slice(&buffer[..n])).await?;
            }
            Ok::<_, SnapshotError>(())
        }
        .await;
        if let Err(e) = written {
            uploader.abort().await;
            let _ = self.ns.end_upload(journal).await;
            return Err(e);
        }
        let cap = match uploader.finish().await {
            Ok(cap) => cap,
            Err(e) => {
                let _ = self.ns.end_upload(journal).await;
                return Err(e.into());
            }
        };
        self.ns.end_upload(journal).await?;
        Ok(cap.to_string())
    }
}

/// `VACUUM INTO` a fresh owner-only file; returns its size. Blocking.
fn vacuum_into(db: &Path, temp: &Path) -> Result<u64, SnapshotError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(temp);
    // VACUUM INTO accepts an existing empty file: made here, it is 0600.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(io("creating the copy"))?;
    let sqlite = |context| move |source| SnapshotError::Sqlite { context, source };
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the namespace"))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(sqlite("opening the namespace"))?;
    let target = temp
        .to_str()
        .ok_or_else(|| io("naming the copy")(std::io::Error::other("path is not UTF-8")))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(sqlite("VACUUM INTO"))?;
    drop(conn);
    let file = std::fs::File::open(temp).map_err(io("reading the copy"))?;
    Ok(file.metadata().map_err(io("reading the copy"))?.len())
}

/// The record in `<data_dir>/root-record`, if there is one that verifies.
pub async fn read_local_record(data_dir: &Path, secret: &RootSecret) -> Option<RootRecord> {
    let bytes = tokio::fs::read(data_dir.join(RECORD_FILE)).await.ok()?;
    match RootRecord::open(&bytes, secret) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(error = %e, "the local root record is unusable; the grid's are used");
            None
        }
    }
}

/// Replaces `<data_dir>/root-record` atomically.
pub async fn write_local_record(data_dir: &Path, sealed: &[u8]) -> Result<(), SnapshotError> {
    let (dir, sealed) = (data_dir.to_owned(), sealed.to_vec());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let temp = dir.join(format!(".{RECORD_FILE}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&sealed)?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(RECORD_FILE))?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| io("writing the local root record")(std::io::Error::other(e)))?
    .map_err(io("writing the local root record"))
}
