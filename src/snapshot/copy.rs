//! Copies of the namespace into the grid, and the root record that names
//! them.
//!
//! Each copy starts as a page image of the database, made consistent by
//! SQLite's backup API on a connection of its own (one read transaction:
//! PUTs and PROPPATCHes go on meanwhile); see [`super::increment`]. The
//! first copy of a run is a *base*: the image itself. The next ones are
//! *increments*: the pages changed since the copy before, naming the base
//! and the increments they build on. A new base is taken when the chain
//! holds `max_increments` increments or its increments add up to more
//! than the image. Either is uploaded through the engine like any file
//! (encrypted with its own key, erasure-coded), and its capability goes
//! into a new root record (sequence number + 1) stored on every server and
//! in `<data_dir>/root-record`.
//!
//! A copy counts as shipped once the record naming it is stored: if the
//! upload or the record fails (or griddav dies in between), the record
//! still names the copy before, whose chain is whole, and the next copy
//! is again computed from the last shipped image.
//!
//! The record names the newest `keep` copies (each a base or an increment
//! with its chain). When one leaves the record, the files only it needed
//! go on the garbage list and the collector frees them: a chain's files
//! go once no copy in the record builds on them, i.e. once a newer base
//! has taken over and the chain's copies are past `keep`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::increment::{self, FormatError, Image};
use super::record::{self, CopyEntry, RecordError, RootRecord};
use super::secret::RootSecret;
use crate::engine::{EncodingParams, EngineError, UploadOptions, Uploader};
use crate::grid::Grid;
use crate::namespace::{Namespace, NamespaceError};

/// The local copy of the newest root record, in the data directory.
pub const RECORD_FILE: &str = "root-record";
/// Where a copy's image is made before it is uploaded.
const TEMP_FILE: &str = ".namespace-copy.tmp";
/// Where an increment is written before it is uploaded.
const TEMP_INCREMENT: &str = ".namespace-increment.tmp";
/// Increments before a new base, unless configured otherwise.
pub const DEFAULT_MAX_INCREMENTS: usize = 100;

/// Why a namespace copy failed; the namespace itself is untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum SnapshotError {
    /// A local file operation failed.
    #[error("namespace copy: {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Reading the namespace database failed.
    #[error("namespace copy: {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// Uploading the copy or its record failed.
    #[error("namespace copy: upload: {0}")]
    Engine(#[from] EngineError),
    /// The namespace refused the copy's transaction.
    #[error("namespace copy: {0}")]
    Namespace(#[from] NamespaceError),
    /// The root record could not be made or read.
    #[error("namespace copy: {0}")]
    Record(#[from] RecordError),
    /// Every server refused the new root record.
    #[error("namespace copy: no server stored the root record: {}", errors.join("; "))]
    NoRecordStored { errors: Vec<String> },
    /// The image or increment could not be built.
    #[error("namespace copy: {0}")]
    Image(#[from] FormatError),
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { context, source }
}

/// Whether a copy is a whole image or the pages changed since the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyKind {
    /// The whole database image: what later increments build on.
    Base,
    /// The n-th increment on its base.
    Increment(usize),
}

/// What one copy cost.
#[derive(Clone, Debug)]
pub struct CopyReport {
    /// The root record sequence number that names this copy.
    pub seq: u64,
    /// A base or the n-th increment on it.
    pub kind: CopyKind,
    /// Bytes uploaded (before erasure coding).
    pub bytes: u64,
    /// The size of the whole namespace image.
    pub image_bytes: u64,
    /// Wall time from start to the record stored.
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
    max_increments: usize,
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
    /// The image the record names, as far as this run shipped it: the
    /// first copy of a run is a base.
    shipped: Option<Shipped>,
    /// For copies named by a record: every file each needs (its chain and
    /// itself), learnt when shipped or read from the grid.
    needs: std::collections::HashMap<String, Vec<String>>,
}

#[derive(Debug)]
struct Shipped {
    image: Image,
    /// The base, then the increments on it; the last is the newest copy.
    chain: Vec<String>,
    /// What the chain's increments add up to.
    increment_bytes: u64,
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
                max_increments: DEFAULT_MAX_INCREMENTS,
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

    /// At most `max` increments on a base (0: every copy is a base).
    /// Call before the first clone.
    pub fn with_max_increments(mut self, max: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_increments = max.min(increment::MAX_CHAIN - 1);
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
        let made = inner.upload_copy(state.shipped.as_ref()).await?;
        let previous = state.record.clone().unwrap_or_default();
        let entry = CopyEntry {
            seq: previous.seq.saturating_add(1),
            taken_at_ms: made.taken_at_ms,
            cap: made.cap.clone(),
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
            // Nothing names the copy: free it. The last shipped image
            // stays the one the next copy is computed from.
            inner.ns.queue_garbage(&entry.cap).await?;
            return Err(SnapshotError::NoRecordStored { errors });
        }
        if !errors.is_empty() {
            tracing::warn!(stored = servers, failed = errors.len(), errors = %errors.join("; "),
                "the root record did not reach every server");
        }
        let mut needs = made.chain.clone();
        needs.push(made.cap.clone());
        state.needs.insert(made.cap.clone(), needs.clone());
        let increment_bytes = match made.kind {
            CopyKind::Base => 0,
            CopyKind::Increment(_) => state
                .shipped
                .as_ref()
                .map_or(0, |s| s.increment_bytes)
                .saturating_add(made.bytes),
        };
        state.shipped = Some(Shipped {
            image: made.image,
            chain: needs,
            increment_bytes,
        });
        state.record = Some(next.clone());
        state.copied = Some(changes);
        write_local_record(&inner.data_dir, &next.seal(&inner.secret)?).await?;
        let freed_any = inner.free_dropped(&mut state, &next, &dropped).await?;
        if let (true, Some(signal)) = (freed_any, &inner.garbage_signal) {
            signal.notify_one();
        }
        let report = CopyReport {
            seq: next.seq,
            kind: made.kind,
            bytes: made.bytes,
            image_bytes: made.image_bytes,
            elapsed: started.elapsed(),
            servers,
        };
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
                    kind = match report.kind {
                        CopyKind::Base => "base".to_owned(),
                        CopyKind::Increment(n) => format!("increment {n}"),
                    },
                    bytes = report.bytes,
                    image_bytes = report.image_bytes,
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

    /// Takes an image of the database and uploads it whole (a base) or
    /// the pages changed since `shipped` (an increment).
    async fn upload_copy(&self, shipped: Option<&Shipped>) -> Result<Made, SnapshotError> {
        let temp = self.data_dir.join(TEMP_FILE);
        let result = self.upload_image(shipped, &temp).await;
        let _ = tokio::fs::remove_file(&temp).await;
        let _ = tokio::fs::remove_file(self.data_dir.join(TEMP_INCREMENT)).await;
        result
    }

    async fn upload_image(
        &self,
        shipped: Option<&Shipped>,
        temp: &Path,
    ) -> Result<Made, SnapshotError> {
        let image = {
            let (db, temp) = (self.db_path.clone(), temp.to_owned());
            tokio::task::spawn_blocking(move || {
                increment::take_image(&db, &temp)?;
                increment::hash_image(&temp)
            })
            .await
            .map_err(|e| io("making the copy")(std::io::Error::other(e)))??
        };
        let taken_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let image_bytes = image.bytes();
        let on = shipped.filter(|s| {
            let increments = s.chain.len().saturating_sub(1);
            s.image.page_size == image.page_size
                && increments < self.max_increments
                && s.increment_bytes.saturating_add(
                    (image.changed_since(&s.image).len() as u64)
                        .saturating_mul(u64::from(image.page_size)),
                ) < image_bytes
        });
        let Some(shipped) = on else {
            let cap = self.upload_file(temp, image_bytes).await?;
            return Ok(Made {
                cap,
                kind: CopyKind::Base,
                chain: Vec::new(),
                bytes: image_bytes,
                image_bytes,
                image,
                taken_at_ms,
            });
        };
        let out = self.data_dir.join(TEMP_INCREMENT);
        let (bytes, image) = {
            let (temp, out, older, chain) = (
                temp.to_owned(),
                out.clone(),
                shipped.image.clone(),
                shipped.chain.clone(),
            );
            tokio::task::spawn_blocking(move || {
                increment::write_increment(&temp, &older, &image, &chain, &out)
                    .map(|bytes| (bytes, image))
            })
            .await
            .map_err(|e| io("writing the increment")(std::io::Error::other(e)))??
        };
        let cap = self.upload_file(&out, bytes).await?;
        Ok(Made {
            cap,
            kind: CopyKind::Increment(shipped.chain.len()),
            chain: shipped.chain.clone(),
            bytes,
            image_bytes,
            image,
            taken_at_ms,
        })
    }

    /// Queues for freeing the files that only the copies `dropped` from
    /// the record needed. Files whose chain cannot be learnt are kept
    /// (a leak, logged; never a file a kept copy needs).
    async fn free_dropped(
        &self,
        state: &mut State,
        kept: &RootRecord,
        dropped: &[CopyEntry],
    ) -> Result<bool, SnapshotError> {
        if dropped.is_empty() {
            return Ok(false);
        }
        let mut live = std::collections::HashSet::new();
        for copy in &kept.copies {
            match self.needs_of(state, &copy.cap).await {
                Ok(needs) => live.extend(needs),
                Err(e) => {
                    tracing::warn!(copy = copy.seq, error = %e,
                        "cannot tell what a kept namespace copy builds on: older copies are not freed");
                    return Ok(false);
                }
            }
        }
        let mut freed = std::collections::HashSet::new();
        for copy in dropped {
            let needs = match self.needs_of(state, &copy.cap).await {
                Ok(needs) => needs,
                Err(e) => {
                    tracing::warn!(copy = copy.seq, error = %e,
                        "cannot tell what an old namespace copy builds on: it is not freed");
                    continue;
                }
            };
            state.needs.remove(&copy.cap);
            for cap in needs {
                if !live.contains(&cap) && freed.insert(cap.clone()) {
                    self.ns.queue_garbage(&cap).await?;
                }
            }
        }
        Ok(!freed.is_empty())
    }

    /// Every file the copy `cap` needs, itself last.
    async fn needs_of(&self, state: &mut State, cap: &str) -> Result<Vec<String>, String> {
        if let Some(needs) = state.needs.get(cap) {
            return Ok(needs.clone());
        }
        let mut needs = super::recover::chain_of(&self.grid, cap).await?;
        needs.push(cap.to_owned());
        state.needs.insert(cap.to_owned(), needs.clone());
        Ok(needs)
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

/// A copy uploaded, not yet named by a record.
struct Made {
    cap: String,
    kind: CopyKind,
    /// What it builds on (empty for a base).
    chain: Vec<String>,
    bytes: u64,
    image_bytes: u64,
    image: Image,
    taken_at_ms: u64,
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
