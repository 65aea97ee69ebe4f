//! A storage server that is a directory on a local file system.
//!
//! Layout under the store's directory:
//!
//! ```text
//!   shares/<si[..2]>/<si>/<share number>   finished shares (si in base32)
//!   incoming/<si>.<share number>           shares under construction
//!   packed/<id>.log                        small finished shares, see [`packed`]
//!   records/<slot>                         root records (slot in base32)
//! ```
//!
//! The two-character prefix level keeps directories small (at most 1024
//! prefixes) however many files the grid holds.
//!
//! A share is written under `incoming/` and linked into `shares/` by
//! [`ShareWriter::finish`] after an fsync, so a crash never leaves a short
//! share where readers look. Whatever a crash leaves in `incoming/` is removed
//! by the next [`LocalStore::open`]; hence **one process per directory**: a
//! second process opening the same directory would delete the first one's
//! uploads in progress.
//!
//! Every file operation runs on tokio's blocking pool, never on the reactor.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use tokio::task::JoinHandle;

use super::{
    FreeSpace, GridError, GridResult, ShareInfo, ShareNum, ShareSecrets, ShareStore, ShareWriter,
    StorageIndex,
};

mod direct;
mod packed;

pub(crate) use direct::ALIGN as DIRECT_ALIGN;

/// Without direct I/O (see [`direct`]): how many bytes a writer appends
/// between two starts of write-back. Dirty
/// pages per share stay below about twice this, and `finish` has at most that
/// much left to flush, so it answers in milliseconds whatever the share size
/// (measured: 1 GiB upload, ten 341 MiB shares, finish about 30 ms).
///
/// Write-back is an `fdatasync` on a second handle to the file, run on the
/// blocking pool while appends go on; the next interval waits for it before
/// starting its own. Once it succeeds, the interval it made durable is
/// dropped from the page cache (`POSIX_FADV_DONTNEED`): nobody reads a share
/// before `finish`, and a grid upload otherwise leaves 3.3 times the file in
/// cache. Measured, 1 GiB upload into ten directories on a noisy 2-core VM:
/// median 245 MB/s keeping the pages (5 runs), 340 MB/s dropping them (4).
///
/// Linux's `sync_file_range` would start and wait on write-back per range
/// without flushing metadata, but neither nix (0.29 to 0.32), rustix (1.1)
/// nor std wraps it, and this crate forbids the unsafe code a raw libc call
/// needs. Tried and not better (same runs): 32 or 64 MiB intervals, two
/// syncs in flight, starting write-back early with `POSIX_FADV_DONTNEED` on
/// the newest interval and syncing every 32 MiB.
const WRITEBACK_INTERVAL: u64 = 8 << 20;

/// A share is held in memory until it grows past this many bytes, and a
/// share that never does is written, synced and linked into place by
/// `finish` in one trip to the blocking pool. A small file's shares (every
/// share of a file up to about 150 KiB, 3-of-10) then cost no direct
/// writes of partial pages, no truncation and no extra trips, where most
/// of a small file's upload time went. A larger share writes what it held with
/// its next append and goes on as before.
pub(crate) const SMALL_SHARE: usize = 64 << 10;

/// A free-space answer is given again, without asking the file system,
/// for this long when it showed at least [`FREE_SPACE_REUSE_ABOVE`]: every
/// upload asks each server, and ten `statvfs` calls on the blocking pool
/// were a tenth of a small file's upload. Nearer to full, every answer is
/// fresh, so a disk that fills or is cleared is seen at once.
const FREE_SPACE_REUSE: Duration = Duration::from_secs(1);

/// See [`FREE_SPACE_REUSE`]: far more than a grid writes within it.
const FREE_SPACE_REUSE_ABOVE: u64 = 8 << 30;

/// Any one append, finish or create of a share gives up after this long: a
/// hung disk or NFS mount fails the share (the upload goes on with the
/// others) rather than holding the upload for ever. The blocking call
/// itself cannot be cancelled; the writer refuses to go on after it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A [`ShareStore`] keeping its shares in one local directory. Cheap to
/// clone; clones are the same store.
#[derive(Clone, Debug)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    server_id: String,
    /// Whether shares are written with direct I/O (see [`direct`]).
    direct_io: bool,
    /// Prefix directories whose entry in `shares/` is known to be on
    /// disk: a share finished under one of them needs no sync of
    /// `shares/`, which (nothing dirty in it) would still cost a cache
    /// flush. Filled at open and by each first sync.
    durable_prefixes: std::sync::Mutex<std::collections::HashSet<std::ffi::OsString>>,
    /// The last free-space answer and when it was taken (see
    /// [`FREE_SPACE_REUSE`]).
    free_space: std::sync::Mutex<Option<(Instant, FreeSpace)>>,
    /// Small finished shares, packed into logs.
    packed: Arc<packed::Packed>,
}

/// `count` stores in `root/server-00`, `root/server-01`, ..., with server ids
/// `local-00`, `local-01`, ...: the embedded default grid.
pub fn grid_of_dirs(root: &Path, count: usize) -> GridResult<Vec<Arc<dyn ShareStore>>> {
    grid_of_dirs_with(root, count, LocalStore::open)
}

/// [`grid_of_dirs`] opened with [`LocalStore::open_beside`]: for a second
/// process beside the server (`griddav check`).
pub fn grid_of_dirs_beside(root: &Path, count: usize) -> GridResult<Vec<Arc<dyn ShareStore>>> {
    grid_of_dirs_with(root, count, LocalStore::open_beside)
}

fn grid_of_dirs_with(
    root: &Path,
    count: usize,
    open: fn(PathBuf, String) -> GridResult<LocalStore>,
) -> GridResult<Vec<Arc<dyn ShareStore>>> {
    (0..count)
        .map(|i| {
            let store = open(root.join(format!("server-{i:02}")), format!("local-{i:02}"))?;
            Ok(Arc::new(store) as Arc<dyn ShareStore>)
        })
        .collect()
}

impl LocalStore {
    /// Opens the store in `dir`, creating it if missing, and removes the
    /// partial shares a crash left in `incoming/`.
    ///
    /// Blocking: call it at start-up or from a blocking task.
    pub fn open(dir: impl Into<PathBuf>, server_id: impl Into<String>) -> GridResult<Self> {
        let store = Self::open_with(dir.into(), server_id.into(), true)?;
        store.inner.remove_stale_incoming()?;
        Ok(store)
    }

    /// Opens the store without touching `incoming/`: for a process that
    /// runs beside the one serving this directory (`griddav check`), whose
    /// uploads in progress live there. Creates and finishes shares safely
    /// beside it: a partial name is taken with `create_new`, and a finished
    /// share is linked, never renamed over another, and no share is
    /// packed (the server appends to the logs).
    pub fn open_beside(dir: impl Into<PathBuf>, server_id: impl Into<String>) -> GridResult<Self> {
        Self::open_with(dir.into(), server_id.into(), false)
    }

    fn open_with(dir: PathBuf, server_id: String, packs: bool) -> GridResult<Self> {
        let packed =
            packed::Packed::open(dir.join("packed"), packs).map_err(|e| GridError::Io {
                server: server_id.clone(),
                operation: "open: packed shares",
                source: e,
            })?;
        let mut inner = Inner {
            dir,
            server_id,
            direct_io: false,
            durable_prefixes: Default::default(),
            free_space: std::sync::Mutex::new(None),
            packed: Arc::new(packed),
        };
        for sub in [
            inner.shares_dir(),
            inner.incoming_dir(),
            inner.records_dir(),
        ] {
            fs::create_dir_all(&sub).map_err(|e| inner.io_error("open: create directory", e))?;
        }
        inner.direct_io = direct::supported(&inner.incoming_dir());
        inner.find_durable_prefixes()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The directory the shares live under.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Inner {
    /// The last free-space answer, if young and far from full.
    fn recent_free_space(&self) -> Option<FreeSpace> {
        let recent = self
            .free_space
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (taken, space) = (*recent)?;
        (taken.elapsed() < FREE_SPACE_REUSE && space.bytes >= FREE_SPACE_REUSE_ABOVE)
            .then_some(space)
    }

    fn shares_dir(&self) -> PathBuf {
        self.dir.join("shares")
    }

    fn incoming_dir(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    fn records_dir(&self) -> PathBuf {
        self.dir.join("records")
    }

    fn record_path(&self, slot: StorageIndex) -> PathBuf {
        self.records_dir().join(slot.to_base32())
    }

    /// Replaces a record: a temporary file written and synced, renamed
    /// over the old one, the directory synced. A crash leaves the old
    /// record or the new, and at worst a temporary file that the next
    /// write of the slot replaces.
    fn write_record(&self, slot: StorageIndex, data: &[u8]) -> GridResult<()> {
        use std::io::Write;
        let dir = self.records_dir();
        let temp = dir.join(format!(".{}.tmp", slot.to_base32()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| self.io_error("put_record: create", e))?;
        file.write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io_error("put_record: write", e))?;
        drop(file);
        fs::rename(&temp, self.record_path(slot))
            .map_err(|e| self.io_error("put_record: rename", e))?;
        sync_dir(&dir).map_err(|e| self.io_error("put_record: sync directory", e))
    }

    fn read_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        use std::io::Read;
        let file = match File::open(self.record_path(slot)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("get_record: open", e)),
        };
        // One byte more than the limit tells an over-long record apart.
        let mut data = Vec::new();
        file.take(super::MAX_RECORD_LEN as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| self.io_error("get_record: read", e))?;
        super::check_record_len(&self.server_id, data.len())?;
        Ok(Some(Bytes::from(data)))
    }

    /// Syncs `shares/` once, so that every prefix directory in it now is
    /// durable, and records them.
    fn find_durable_prefixes(&self) -> GridResult<()> {
        let shares = self.shares_dir();
        sync_dir(&shares).map_err(|e| self.io_error("open: sync shares directory", e))?;
        let entries =
            fs::read_dir(&shares).map_err(|e| self.io_error("open: list shares directory", e))?;
        let mut durable = self
            .durable_prefixes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in entries {
            let entry = entry.map_err(|e| self.io_error("open: list shares directory", e))?;
            durable.insert(entry.file_name());
        }
        Ok(())
    }

    fn si_dir(&self, si: StorageIndex) -> PathBuf {
        let name = si.to_base32();
        self.shares_dir().join(&name[..2]).join(name)
    }

    fn share_path(&self, si: StorageIndex, share: ShareNum) -> PathBuf {
        self.si_dir(si).join(share.0.to_string())
    }

    fn incoming_path(&self, si: StorageIndex, share: ShareNum) -> PathBuf {
        self.incoming_dir().join(format!("{si}.{}", share.0))
    }

    fn io_error(&self, operation: &'static str, source: io::Error) -> GridError {
        GridError::Io {
            server: self.server_id.clone(),
            operation,
            source,
        }
    }

    /// Like [`Inner::io_error`], but a missing or existing file means the
    /// share is missing or exists.
    fn share_error(
        &self,
        operation: &'static str,
        si: StorageIndex,
        share: ShareNum,
        source: io::Error,
    ) -> GridError {
        let server = self.server_id.clone();
        match source.kind() {
            io::ErrorKind::NotFound => GridError::NotFound { server, si, share },
            io::ErrorKind::AlreadyExists => GridError::AlreadyExists { server, si, share },
            _ => self.io_error(operation, source),
        }
    }

    fn already_exists(&self, si: StorageIndex, share: ShareNum) -> GridError {
        GridError::AlreadyExists {
            server: self.server_id.clone(),
            si,
            share,
        }
    }

    fn remove_stale_incoming(&self) -> GridResult<()> {
        let entries = fs::read_dir(self.incoming_dir())
            .map_err(|e| self.io_error("open: list incoming", e))?;
        let mut removed = 0usize;
        for entry in entries {
            let entry = entry.map_err(|e| self.io_error("open: list incoming", e))?;
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error("open: remove stale partial share", e)),
            }
        }
        if removed > 0 {
            tracing::info!(
                server = %self.server_id,
                removed,
                "removed partial shares left by an interrupted run"
            );
        }
        Ok(())
    }

    /// `finish` once every byte is written: link the partial file into
    /// place, never replacing a finished share, and make its data and its
    /// new name durable.
    ///
    /// The name is linked before anything is synced, so that the data's
    /// sync commits the new names with it, where syncing the data first
    /// paid for a second journal commit per share (ten new shares finished
    /// in parallel, this machine's disk under load, two runs: median 11.4
    /// and 8.4 ms before, 10.7 and 5.7 ms after). Linking before the data
    /// is durable is safe: the share is unreachable until the namespace names its file, which
    /// happens only after `finish` answers, and an upload that dies first
    /// is collected through its journal; a sync that fails takes the name
    /// back.
    fn publish(&self, si: StorageIndex, share: ShareNum, file: File) -> GridResult<()> {
        let incoming = self.incoming_path(si, share);
        let si_dir = self.si_dir(si);
        let target = self.share_path(si, share);
        let si_dir_existed = si_dir.is_dir();
        let prefix = si_dir
            .parent()
            .and_then(Path::file_name)
            .map(ToOwned::to_owned);
        let prefix_durable = prefix.as_ref().is_none_or(|prefix| {
            self.durable_prefixes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(prefix)
        });
        fs::create_dir_all(&si_dir).map_err(|e| self.io_error("finish: create directory", e))?;
        // A link, not a rename: rename would silently replace a share that a
        // racing writer finished after our `create` checked for it.
        fs::hard_link(&incoming, &target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => self.already_exists(si, share),
            _ => self.io_error("finish: link into place", e),
        })?;
        let mut dirs = vec![si_dir.clone()];
        if !si_dir_existed {
            // A new directory must be durable in its parent too.
            dirs.extend(si_dir.parent().map(Path::to_path_buf));
        }
        if !prefix_durable {
            // A prefix made now, or by a finish that may not have synced
            // `shares/` yet: only the first files of a grid (1024 prefixes).
            dirs.push(self.shares_dir());
        }
        // The data first: on a journalling file system its commit carries
        // the new names too, and the directory syncs after it find little
        // or nothing left to commit.
        let synced = file
            .sync_all()
            .map_err(|e| self.io_error("finish: sync", e))
            .and_then(|()| {
                dirs.iter()
                    .try_for_each(|dir| sync_dir(dir))
                    .map_err(|e| self.io_error("finish: sync directory", e))
            });
        drop(file);
        if let (Ok(()), false, Some(prefix)) = (&synced, prefix_durable, prefix) {
            self.durable_prefixes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(prefix);
        }
        if let Err(e) = synced {
            // Not durable: take the share back so an error means "not there".
            let _ = fs::remove_file(&target);
            return Err(e);
        }
        if let Err(e) = fs::remove_file(&incoming) {
            // The share is finished; the extra name is only a leftover that
            // the next `open` removes.
            tracing::warn!(server = %self.server_id, path = %incoming.display(), error = %e,
                "cannot remove the partial name of a finished share");
        }
        Ok(())
    }
}

/// Creates a share's partial file. `create_new` makes the partial name the
/// lock: a second writer of the same share (in this process or one beside
/// it) fails here with `AlreadyExists`. Opened without direct I/O: the share
/// starts small (SMALL_SHARE).
fn create_partial(inner: &Inner, si: StorageIndex, share: ShareNum) -> GridResult<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(inner.incoming_path(si, share))
        .map_err(|e| inner.share_error("create", si, share, e))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Exactly `ranges` of a share, with one open file.
fn read_ranges_now(
    inner: &Inner,
    si: StorageIndex,
    share: ShareNum,
    ranges: &[Range<u64>],
) -> GridResult<Vec<Bytes>> {
    if let Some(located) = inner.packed.locate(si, share) {
        for range in ranges {
            range_len(inner, located.len, si, share, range)?;
        }
        return located
            .read(ranges)
            .map_err(|e| inner.share_error("read packed share", si, share, e));
    }
    let file = File::open(inner.share_path(si, share))
        .map_err(|e| inner.share_error("read: open", si, share, e))?;
    let len = file
        .metadata()
        .map_err(|e| inner.io_error("read: stat", e))?
        .len();
    ranges
        .iter()
        .map(|range| read_range(inner, &file, len, si, share, range.clone()))
        .collect()
}

/// The length of `range`, if it lies within a share `len` bytes long.
fn range_len(
    inner: &Inner,
    len: u64,
    si: StorageIndex,
    share: ShareNum,
    range: &Range<u64>,
) -> GridResult<u64> {
    range
        .end
        .checked_sub(range.start)
        .filter(|_| range.end <= len)
        .ok_or_else(|| GridError::OutOfRange {
            server: inner.server_id.clone(),
            si,
            share,
            range: range.clone(),
            len,
        })
}

/// Exactly `range` of a share file `len` bytes long.
fn read_range(
    inner: &Inner,
    file: &File,
    len: u64,
    si: StorageIndex,
    share: ShareNum,
    range: Range<u64>,
) -> GridResult<Bytes> {
    use std::io::{Read, Seek};
    let count = range_len(inner, len, si, share, &range)?;
    let too_large = || {
        inner.io_error(
            "read",
            io::Error::new(io::ErrorKind::InvalidInput, "range larger than memory"),
        )
    };
    let capacity = usize::try_from(count).map_err(|_| too_large())?;
    // Read into spare capacity: read_to_end does not zero it first, which
    // a `vec![0; count]` would (a pass over every byte served).
    let mut buf = Vec::new();
    buf.try_reserve_exact(capacity).map_err(|_| too_large())?;
    let mut reader = file;
    reader
        .seek(io::SeekFrom::Start(range.start))
        .map_err(|e| inner.io_error("read: seek", e))?;
    reader
        .take(count)
        .read_to_end(&mut buf)
        .map_err(|e| inner.io_error("read", e))?;
    // A share that shrank under us is an error, not short data.
    if buf.len() != capacity {
        return Err(inner.io_error(
            "read",
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "share shorter than its length",
            ),
        ));
    }
    Ok(Bytes::from(buf))
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T, F>(inner: &Inner, operation: &'static str, work: F) -> GridResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> GridResult<T> + Send + 'static,
{
    within_write_timeout(inner, operation, async {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| inner.io_error(operation, io::Error::other(e)))?
    })
    .await
}

/// `work`, or a time-out error once [`WRITE_TIMEOUT`] has passed.
async fn within_write_timeout<T>(
    inner: &Inner,
    operation: &'static str,
    work: impl std::future::Future<Output = GridResult<T>>,
) -> GridResult<T> {
    tokio::time::timeout(WRITE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(inner.io_error(
                operation,
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from the disk within {WRITE_TIMEOUT:?}"),
                ),
            ))
        })
}

#[async_trait]
impl ShareStore for LocalStore {
    async fn free_space(&self) -> Option<FreeSpace> {
        if let Some(space) = self.inner.recent_free_space() {
            return Some(space);
        }
        let dir = self.inner.dir.clone();
        let space = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::MetadataExt;
            let stat = nix::sys::statvfs::statvfs(&dir).ok()?;
            // fsblkcnt_t and c_ulong are u64 on 64-bit Linux only.
            #[allow(clippy::useless_conversion)]
            let bytes =
                u64::from(stat.blocks_available()).checked_mul(u64::from(stat.fragment_size()))?;
            let volume = fs::metadata(&dir).ok()?.dev();
            Some(FreeSpace {
                bytes,
                volume: Some(volume),
            })
        })
        .await;
        let space = space.ok().flatten()?;
        *self
            .inner
            .free_space
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), space));
        Some(space)
    }

    fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    async fn put_record(
        &self,
        slot: StorageIndex,
        data: Bytes,
        _secrets: &ShareSecrets,
    ) -> GridResult<()> {
        super::check_record_len(&self.inner.server_id, data.len())?;
        let inner = Arc::clone(&self.inner);
        blocking(&self.inner, "put_record", move || {
            inner.write_record(slot, &data)
        })
        .await
    }

    async fn get_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        let inner = Arc::clone(&self.inner);
        blocking(&self.inner, "get_record", move || inner.read_record(slot)).await
    }

    async fn create(
        &self,
        si: StorageIndex,
        share: ShareNum,
        _secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        if self.inner.packed.writes() {
            // No trip to the disk: a share packed or being written is known
            // here, and one finished as a file of its own is found when
            // this one finishes (by the batch writer, or by the link into
            // place if it grows too large to pack).
            if !self.inner.packed.begin(si, share) {
                return Err(self.inner.already_exists(si, share));
            }
            return Ok(LocalWriter::new(&self.inner, si, share, None));
        }
        let inner = Arc::clone(&self.inner);
        let file = blocking(&self.inner, "create", move || {
            match fs::symlink_metadata(inner.share_path(si, share)) {
                Ok(_) => return Err(inner.already_exists(si, share)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(inner.io_error("create: check finished share", e)),
            }
            create_partial(&inner, si, share)
        })
        .await?;
        Ok(LocalWriter::new(&self.inner, si, share, Some(file)))
    }

    async fn read(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        let mut pieces = self.read_ranges(si, share, vec![range]).await?;
        pieces.pop().ok_or_else(|| {
            self.inner.io_error(
                "read",
                io::Error::other("no answer for the one range asked"),
            )
        })
    }

    async fn read_ranges(
        &self,
        si: StorageIndex,
        share: ShareNum,
        ranges: Vec<Range<u64>>,
    ) -> GridResult<Vec<Bytes>> {
        let inner = Arc::clone(&self.inner);
        // One open and one trip to the blocking pool for a block and the
        // tree nodes that prove it.
        blocking(&self.inner, "read", move || {
            read_ranges_now(&inner, si, share, &ranges)
        })
        .await
    }

    fn reads_blocking(&self) -> bool {
        true
    }

    fn read_ranges_blocking(
        &self,
        si: StorageIndex,
        share: ShareNum,
        ranges: &[Range<u64>],
    ) -> GridResult<Vec<Bytes>> {
        read_ranges_now(&self.inner, si, share, ranges)
    }

    async fn list(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        let inner = Arc::clone(&self.inner);
        blocking(&self.inner, "list", move || {
            let mut shares = inner
                .packed
                .list(si)
                .map_err(|e| inner.io_error("list packed shares", e))?;
            let entries = match fs::read_dir(inner.si_dir(si)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(shares),
                Err(e) => return Err(inner.io_error("list", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| inner.io_error("list", e))?;
                let Some(share) = parse_share_name(&entry.file_name()) else {
                    continue;
                };
                if shares.iter().any(|s| s.share == share) {
                    // Packed, and also a file (written beside the server).
                    continue;
                }
                match entry.metadata() {
                    Ok(meta) if meta.is_file() => shares.push(ShareInfo {
                        share,
                        len: meta.len(),
                    }),
                    Ok(_) => {}
                    // Deleted while we listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(inner.io_error("list: stat", e)),
                }
            }
            Ok(shares)
        })
        .await
    }

    async fn delete(&self, si: StorageIndex, _secrets: &ShareSecrets) -> GridResult<()> {
        let inner = Arc::clone(&self.inner);
        blocking(&self.inner, "delete", move || {
            inner
                .packed
                .delete(si)
                .map_err(|e| inner.io_error("delete packed shares", e))?;
            // The prefix directory stays: removing it could race with a
            // `finish` of another storage index that shares the prefix.
            match fs::remove_dir_all(inner.si_dir(si)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(inner.io_error("delete", e)),
            }
        })
        .await
    }
}

/// Share numbers are written in canonical decimal; anything else in a
/// storage index directory is not ours.
fn parse_share_name(name: &std::ffi::OsStr) -> Option<ShareNum> {
    let name = name.to_str()?;
    let number: u8 = name.parse().ok()?;
    (number.to_string() == name).then_some(ShareNum(number))
}

/// A write-back: makes the file durable up to at least `synced.end`, then
/// drops `synced` (clean now, and never written again) from the page cache.
fn sync_and_drop(file: &File, synced: Range<u64>) -> io::Result<()> {
    file.sync_data()?;
    // Only advice: a failure costs memory, never data, so it is ignored.
    if let (Ok(offset), Ok(len)) = (
        i64::try_from(synced.start),
        i64::try_from(synced.end - synced.start),
    ) {
        let _ = posix_fadvise(
            file.as_raw_fd(),
            offset,
            len,
            PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    Ok(())
}

#[derive(Debug)]
struct LocalWriter {
    store: Arc<Inner>,
    si: StorageIndex,
    share: ShareNum,
    /// Whether the share is packed if it stays small (see [`packed`]): it
    /// then has no file until it outgrows [`SMALL_SHARE`].
    packs: bool,
    /// `None` while an append has it on the blocking pool, and for good once
    /// an append or a write-back failed or an append was cancelled: the file
    /// may then hold bytes past `written` or have lost some, so the writer
    /// refuses to go on. Also `None` while a packing writer's share is small.
    file: Option<File>,
    /// With direct I/O, the bytes past the last whole page written; `None`
    /// when writing through the page cache (or while an append has it).
    tail: Option<direct::Tail>,
    /// Every byte appended so far, while they are fewer than
    /// [`SMALL_SHARE`]: nothing is on disk yet. `None` once written.
    small: Option<Vec<u8>>,
    written: u64,
    /// Where the last write-back started; the next one starts
    /// [`WRITEBACK_INTERVAL`] bytes later. Everything before it is out of
    /// the page cache or about to be (see [`sync_and_drop`]).
    writeback_from: u64,
    /// The write-back in flight, if any.
    writeback: Option<JoinHandle<io::Result<()>>>,
    /// Set once finished or aborted: Drop then has nothing to clean up.
    done: bool,
}

impl LocalWriter {
    /// A writer of a new share whose partial file is `file`; `None` for a
    /// share packed if it stays small (the file is made if it outgrows).
    fn new(store: &Arc<Inner>, si: StorageIndex, share: ShareNum, file: Option<File>) -> Box<Self> {
        Box::new(LocalWriter {
            store: Arc::clone(store),
            si,
            share,
            packs: file.is_none(),
            tail: store.direct_io.then(direct::Tail::default),
            small: Some(Vec::new()),
            file,
            written: 0,
            writeback_from: 0,
            writeback: None,
            done: false,
        })
    }

    fn take_file(&mut self, operation: &'static str) -> GridResult<File> {
        self.file.take().ok_or_else(|| self.broken(operation))
    }

    /// Why a writer whose earlier write failed or was cancelled refuses
    /// to go on.
    fn broken(&self, operation: &'static str) -> GridError {
        self.store.io_error(
            operation,
            io::Error::other("an earlier write to this share failed or was cancelled"),
        )
    }

    /// Waits for the write-back in flight, so that at most one runs per
    /// share and dirty pages stay bounded.
    async fn wait_writeback(&mut self, operation: &'static str) -> GridResult<()> {
        if let Some(pending) = self.writeback.take() {
            let synced = match tokio::time::timeout(WRITE_TIMEOUT, pending).await {
                Ok(joined) => joined.map_err(io::Error::other).and_then(|r| r),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("write-back not done within {WRITE_TIMEOUT:?}"),
                )),
            };
            if let Err(e) = synced {
                // The kernel reports a write-back error once: a later fsync
                // may succeed although pages were lost, so never finish.
                self.file = None;
                return Err(self.store.io_error(operation, e));
            }
        }
        Ok(())
    }

    /// Appends `last`, the share's last bytes in pieces, and finishes. A
    /// share written with direct I/O takes the pieces with its final page,
    /// in the one trip to the blocking pool that finishing needs anyway
    /// (ten shares finishing together each waited about 0.8 ms between two
    /// trips on this machine), copied only into the write buffer.
    async fn finish_inner(&mut self, last: Vec<Bytes>, len: u64) -> GridResult<()> {
        let on_disk_direct = self.small.is_none() && self.tail.is_some();
        let last = if on_disk_direct {
            last
        } else {
            self.append_many(last).await?;
            Vec::new()
        };
        let written = self.written + last.iter().map(|piece| piece.len() as u64).sum::<u64>();
        if len != written {
            return Err(GridError::LengthMismatch {
                server: self.store.server_id.clone(),
                si: self.si,
                share: self.share,
                written,
                expected: len,
            });
        }
        let (inner, si, share) = (Arc::clone(&self.store), self.si, self.share);
        if self.packs {
            if let Some(held) = self.small.take() {
                let packed = Arc::clone(&self.store.packed);
                let file = inner.share_path(si, share);
                return within_write_timeout(&inner, "finish: pack", async {
                    packed
                        .append(si, share, &held, file)
                        .await
                        .map_err(|e| inner.share_error("finish: pack", si, share, e))
                })
                .await;
            }
        }
        let file = self.take_file("finish")?;
        if let Some(held) = self.small.take() {
            return blocking(&self.store, "finish", move || {
                file.write_all_at(&held, 0)
                    .map_err(|e| inner.io_error("finish: write", e))?;
                inner.publish(si, share, file)
            })
            .await;
        }
        self.wait_writeback("finish: write-back").await?;
        let last_pages = match self.tail.take() {
            Some(tail) => Some((tail, self.write_buf("finish").await?)),
            None => None,
        };
        let written_through = self.written;
        blocking(&self.store, "finish", move || {
            if let Some((mut tail, mut buf)) = last_pages {
                let at = written_through - tail.held_len() as u64;
                tail.write_final(&file, &mut buf, &last, at)
                    .and_then(|()| file.set_len(len))
                    .map_err(|e| inner.io_error("finish: write the last pages", e))?;
            }
            // `written` counts what we sent; the file is the truth.
            let on_disk = file
                .metadata()
                .map_err(|e| inner.io_error("finish: stat", e))?
                .len();
            if on_disk != len {
                return Err(GridError::LengthMismatch {
                    server: inner.server_id.clone(),
                    si,
                    share,
                    written: on_disk,
                    expected: len,
                });
            }
            // Only the tail since the last write-back is still dirty.
            inner.publish(si, share, file)
        })
        .await
    }

    /// A buffer of the direct-write pool, waited for no longer than a
    /// write: a disk so slow that every buffer is busy fails the share.
    async fn write_buf(&self, operation: &'static str) -> GridResult<direct::WriteBuf> {
        match tokio::time::timeout(WRITE_TIMEOUT, direct::WriteBuf::borrow()).await {
            Ok(borrowed) => borrowed.map_err(|e| self.store.io_error(operation, e)),
            Err(_) => Err(self.store.io_error(
                operation,
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no direct-write buffer free within {WRITE_TIMEOUT:?}"),
                ),
            )),
        }
    }

    /// [`ShareWriter::append_many`] with direct I/O: the tail and the new
    /// bytes go to the disk through a pooled buffer, all but the last
    /// partial page, in one trip to the blocking pool however many pieces
    /// there are.
    async fn append_direct(&mut self, pieces: Vec<Bytes>) -> GridResult<()> {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        let end = self.written + len as u64;
        if self.file.is_none() {
            return Err(self.broken("append"));
        }
        let Some(tail) = self.tail.as_mut() else {
            return Err(self.broken("append"));
        };
        if tail.absorbs(len) {
            // Less than a page in all: nothing to write yet.
            for piece in &pieces {
                tail.keep(piece);
            }
            self.written = end;
            return Ok(());
        }
        let mut buf = self.write_buf("append").await?;
        let file = self.take_file("append")?;
        let mut tail = self.tail.take().ok_or_else(|| self.broken("append"))?;
        let written_through = self.written - tail.held_len() as u64;
        // On a timeout or failure the file and tail stay behind: the
        // writer refuses to go on.
        let (file, tail, result) = blocking(&self.store, "append", move || {
            let result = pieces.iter().try_fold(written_through, |at, piece| {
                tail.write(&file, &mut buf, piece, at)
            });
            Ok((file, tail, result))
        })
        .await?;
        result.map_err(|e| self.store.io_error("append", e))?;
        self.file = Some(file);
        self.tail = Some(tail);
        self.written = end;
        Ok(())
    }

    /// Appends `data` to the file: with direct I/O through
    /// [`Self::append_direct`], otherwise through the page cache with
    /// write-back every [`WRITEBACK_INTERVAL`].
    async fn append_through(&mut self, data: Bytes) -> GridResult<()> {
        if self.store.direct_io {
            return self.append_direct(vec![data]).await;
        }
        let file = self.take_file("append")?;
        let offset = self.written;
        let end = offset + data.len() as u64;
        let start_writeback = end - self.writeback_from >= WRITEBACK_INTERVAL;
        // On a timeout the file stays with the stuck call: `self.file`
        // remains `None` and the writer refuses to go on.
        let (file, result) = blocking(&self.store, "append", move || {
            let result = file.write_all_at(&data, offset).and_then(|()| {
                // A second handle lets the write-back run while appends go on.
                start_writeback.then(|| file.try_clone()).transpose()
            });
            Ok((file, result))
        })
        .await?;
        let sync_handle = result.map_err(|e| self.store.io_error("append", e))?;
        self.file = Some(file);
        self.written = end;
        if let Some(handle) = sync_handle {
            // Wait for the previous interval's write-back (this is what
            // bounds dirty pages and paces the writer at disk speed), then
            // start this one's without waiting for it.
            self.wait_writeback("append: write-back").await?;
            let from = self.writeback_from;
            self.writeback = Some(tokio::task::spawn_blocking(move || {
                sync_and_drop(&handle, from..end)
            }));
            self.writeback_from = end;
        }
        Ok(())
    }

    /// Removes the partial file now, on the blocking pool.
    async fn remove_partial(&self) -> GridResult<()> {
        if self.packs && self.small.is_some() {
            // Still held in memory: nothing of it is on disk.
            return Ok(());
        }
        let path = self.store.incoming_path(self.si, self.share);
        let inner = Arc::clone(&self.store);
        blocking(&self.store, "abort", move || match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(inner.io_error("abort: remove partial share", e)),
        })
        .await
    }
}

#[async_trait]
impl ShareWriter for LocalWriter {
    async fn append(&mut self, data: Bytes) -> GridResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.small.take() {
            Some(mut held) if held.len() + data.len() <= SMALL_SHARE => {
                held.extend_from_slice(&data);
                self.written += data.len() as u64;
                self.small = Some(held);
                Ok(())
            }
            Some(held) => {
                // No longer small: what was held goes to disk first, from
                // the start of the file, then `data` (not copied onto the
                // held bytes: it is a whole block of a large upload).
                if self.packs {
                    let (inner, si, share) = (Arc::clone(&self.store), self.si, self.share);
                    let file = blocking(&self.store, "append: create", move || {
                        create_partial(&inner, si, share)
                    })
                    .await?;
                    self.file = Some(file);
                }
                let Some(file) = &self.file else {
                    return Err(self.broken("append"));
                };
                if self.store.direct_io {
                    if let Err(e) = direct::enable(file) {
                        self.file = None;
                        return Err(self.store.io_error("append: turn on direct I/O", e));
                    }
                }
                self.written -= held.len() as u64;
                if !held.is_empty() {
                    self.append_through(Bytes::from(held)).await?;
                }
                self.append_through(data).await
            }
            None => self.append_through(data).await,
        }
    }

    async fn append_many(&mut self, pieces: Vec<Bytes>) -> GridResult<()> {
        if self.small.is_none() && self.store.direct_io {
            return self.append_direct(pieces).await;
        }
        for piece in pieces {
            self.append(piece).await?;
        }
        Ok(())
    }

    async fn finish(self: Box<Self>, len: u64) -> GridResult<()> {
        self.finish_with(Bytes::new(), len).await
    }

    async fn finish_with(self: Box<Self>, last: Bytes, len: u64) -> GridResult<()> {
        self.finish_with_many(vec![last], len).await
    }

    async fn finish_with_many(mut self: Box<Self>, last: Vec<Bytes>, len: u64) -> GridResult<()> {
        let result = self.finish_inner(last, len).await;
        if result.is_err() {
            // Clean up now rather than in Drop, so that the share can be
            // created again as soon as finish returns.
            let _ = self.remove_partial().await;
        }
        self.done = true;
        if self.packs {
            self.store.packed.end(self.si, self.share);
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> GridResult<()> {
        self.file = None;
        // A write-back in flight works on the unlinked file and ends alone.
        self.writeback = None;
        self.done = true;
        let removed = self.remove_partial().await;
        if self.packs {
            self.store.packed.end(self.si, self.share);
        }
        removed
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.packs {
            self.store.packed.end(self.si, self.share);
            if self.small.is_some() {
                // Still held in memory: nothing of it is on disk.
                return;
            }
        }
        let path = self.store.incoming_path(self.si, self.share);
        let remove = move || {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e,
                        "cannot remove an abandoned partial share; the next open will");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::grid::conformance;

    fn incoming_names(store: &LocalStore) -> Vec<String> {
        fs::read_dir(store.inner.incoming_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Waits for the background removals started by dropped writers.
    async fn wait_incoming_empty(store: &LocalStore) {
        for _ in 0..500 {
            if incoming_names(store).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("incoming/ still holds {:?}", incoming_names(store));
    }

    /// A free-space answer is given again only while young and far from
    /// full; the first answer is the file system's.
    #[tokio::test]
    async fn free_space_is_reused_only_while_young_and_far_from_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("server"), "local-test").unwrap();
        assert!(store.inner.recent_free_space().is_none());
        let asked = store.free_space().await.unwrap();
        assert!(asked.bytes > 0);
        let set = |age: Duration, bytes: u64| {
            let taken = Instant::now().checked_sub(age).unwrap();
            *store.inner.free_space.lock().unwrap() = Some((taken, FreeSpace { bytes, ..asked }));
        };
        set(Duration::ZERO, FREE_SPACE_REUSE_ABOVE);
        assert_eq!(
            store.free_space().await.unwrap().bytes,
            FREE_SPACE_REUSE_ABOVE
        );
        set(Duration::ZERO, FREE_SPACE_REUSE_ABOVE - 1);
        assert!(
            store.inner.recent_free_space().is_none(),
            "near full: asked again"
        );
        set(FREE_SPACE_REUSE, u64::MAX);
        assert!(
            store.inner.recent_free_space().is_none(),
            "too old: asked again"
        );
        assert_eq!(store.free_space().await.unwrap().volume, asked.volume);
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("server"), "local-test").unwrap();
        conformance::run_all(&store).await;
        wait_incoming_empty(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_multi_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        conformance::run_all(&store).await;
        wait_incoming_empty(&store).await;
    }

    /// A large share is a file of its own, written under `incoming/` and
    /// linked into `shares/`; a small one is a record in a packed log.
    #[tokio::test]
    async fn layout_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        let si = StorageIndex::from_bytes([0xab; 16]);
        let name = si.to_base32();
        let large = conformance::pattern(7, SMALL_SHARE + 1);
        let mut writer = store
            .create(si, ShareNum(3), &conformance::secrets())
            .await
            .unwrap();
        writer.append(Bytes::from(large.clone())).await.unwrap();
        assert_eq!(incoming_names(&store), vec![format!("{name}.3")]);
        writer.finish(large.len() as u64).await.unwrap();
        assert!(incoming_names(&store).is_empty());
        let path = dir
            .path()
            .join("shares")
            .join(&name[..2])
            .join(&name)
            .join("3");
        assert!(fs::read(path).unwrap() == large);

        let mut writer = store
            .create(si, ShareNum(4), &conformance::secrets())
            .await
            .unwrap();
        writer.append(Bytes::from_static(b"hello")).await.unwrap();
        assert!(
            incoming_names(&store).is_empty(),
            "a small share has no file"
        );
        writer.finish(5).await.unwrap();
        assert!(!store.inner.si_dir(si).join("4").exists());
        let logs = packed::log_files(&dir.path().join("packed"));
        assert_eq!(logs.len(), 1);
        let log = fs::read(&logs[0]).unwrap();
        assert_eq!(&log[..4], b"GDP1");
        assert_eq!(&log[8..24], si.as_bytes());
        assert_eq!(&log[64..69], b"hello");
        assert!(
            log[69..].iter().all(|b| *b == 0),
            "zeros after the last record"
        );
        let mut listed = store.list(si).await.unwrap();
        listed.sort_by_key(|s| s.share);
        assert_eq!(
            listed,
            vec![
                ShareInfo {
                    share: ShareNum(3),
                    len: large.len() as u64
                },
                ShareInfo {
                    share: ShareNum(4),
                    len: 5
                }
            ]
        );
    }

    #[tokio::test]
    async fn stale_incoming_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let si = conformance::random_si();
        {
            let store = LocalStore::open(dir.path(), "local-test").unwrap();
            conformance::put(&store, si, ShareNum(0), b"kept", 4).await;
            let mut writer = store
                .create(si, ShareNum(1), &conformance::secrets())
                .await
                .unwrap();
            // Large enough to be a file (a small one is only in memory).
            writer
                .append(Bytes::from(vec![7; SMALL_SHARE + 1]))
                .await
                .unwrap();
            // A crash: no Drop, nothing cleans up.
            std::mem::forget(writer);
        }
        fs::write(dir.path().join("incoming").join("junk"), b"?").unwrap();
        assert_eq!(
            fs::read_dir(dir.path().join("incoming")).unwrap().count(),
            2
        );

        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        assert!(incoming_names(&store).is_empty());
        assert_eq!(
            store.list(si).await.unwrap(),
            vec![ShareInfo {
                share: ShareNum(0),
                len: 4
            }]
        );
        // The share that was in progress can be written again.
        conformance::put(&store, si, ShareNum(1), b"again", 5).await;
    }

    #[tokio::test]
    async fn list_ignores_foreign_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        let si = conformance::random_si();
        conformance::put(&store, si, ShareNum(12), b"twelve", 6).await;
        let si_dir = store.inner.si_dir(si);
        // The share is packed; foreign names where files would be.
        fs::create_dir_all(&si_dir).unwrap();
        for name in ["012", "256", "x", "3.tmp", "+4"] {
            fs::write(si_dir.join(name), b"?").unwrap();
        }
        fs::create_dir(si_dir.join("5")).unwrap();
        assert_eq!(
            store.list(si).await.unwrap(),
            vec![ShareInfo {
                share: ShareNum(12),
                len: 6
            }]
        );
    }

    /// A share held in memory while small, written whole at finish, and
    /// one that outgrows the hold part-way through an append, read back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shares_small_and_outgrowing_the_hold_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        let data = conformance::pattern(0x33, 3 * SMALL_SHARE);
        for (len, pieces) in [
            (100, vec![100]),
            (SMALL_SHARE, vec![40, SMALL_SHARE - 40]),
            (SMALL_SHARE + 1, vec![8192, SMALL_SHARE - 8192, 1]),
            (
                3 * SMALL_SHARE,
                vec![3, SMALL_SHARE, 5000, 2 * SMALL_SHARE - 5003],
            ),
        ] {
            let si = conformance::random_si();
            let mut writer = store
                .create(si, ShareNum(1), &conformance::secrets())
                .await
                .unwrap();
            let mut at = 0;
            for piece in pieces {
                writer
                    .append(Bytes::copy_from_slice(&data[at..at + piece]))
                    .await
                    .unwrap();
                at += piece;
            }
            assert_eq!(at, len);
            writer.finish(len as u64).await.unwrap();
            let read = store.read(si, ShareNum(1), 0..len as u64).await.unwrap();
            assert!(
                read[..] == data[..len],
                "a share of {len} bytes reads back different bytes"
            );
        }
        assert!(incoming_names(&store).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_share_round_trip() {
        const MIB: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        let si = conformance::random_si();
        let data = conformance::pattern(0x5a, 40 * MIB);
        conformance::put(&store, si, ShareNum(0), &data, MIB).await;
        let read = store
            .read(si, ShareNum(0), 0..data.len() as u64)
            .await
            .unwrap();
        assert!(
            read[..] == data[..],
            "40 MiB share reads back different bytes"
        );
        // Ranges across the write-back boundaries.
        for start in [8 * MIB - 3, 16 * MIB - 1, 39 * MIB] {
            let range = start as u64..(start + MIB) as u64;
            let read = store.read(si, ShareNum(0), range).await.unwrap();
            assert!(read[..] == data[start..start + MIB]);
        }
        assert!(incoming_names(&store).is_empty());
    }

    /// Small shares written by many uploads at once (group commits) all
    /// read back after the store is opened again; deleted ones stay
    /// deleted, and a log with nothing live left is removed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packed_shares_survive_reopen_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        let shares: Vec<(StorageIndex, Vec<u8>)> = (0..64)
            .map(|i| {
                (
                    conformance::random_si(),
                    conformance::pattern(i, 100 + 997 * i as usize),
                )
            })
            .collect();
        let puts = shares.iter().map(|(si, data)| {
            let store = store.clone();
            let (si, data) = (*si, data.clone());
            tokio::spawn(
                async move { conformance::put(&store, si, ShareNum(2), &data, 4096).await },
            )
        });
        for put in futures::future::join_all(puts).await {
            put.unwrap();
        }
        drop(store);

        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        for (si, data) in &shares {
            let read = store
                .read(*si, ShareNum(2), 0..data.len() as u64)
                .await
                .unwrap();
            assert!(
                read[..] == data[..],
                "a packed share reads back different bytes"
            );
            let mid = data.len() as u64 / 2;
            let piece = store
                .read(*si, ShareNum(2), mid..data.len() as u64)
                .await
                .unwrap();
            assert!(piece[..] == data[mid as usize..]);
        }
        let (deleted, kept) = shares.split_at(32);
        for (si, _) in deleted {
            store.delete(*si, &conformance::secrets()).await.unwrap();
        }
        drop(store);

        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        for (si, _) in deleted {
            assert!(store.list(*si).await.unwrap().is_empty());
            assert!(matches!(
                store.read(*si, ShareNum(2), 0..1).await,
                Err(GridError::NotFound { .. })
            ));
        }
        for (si, data) in kept {
            let read = store
                .read(*si, ShareNum(2), 0..data.len() as u64)
                .await
                .unwrap();
            assert!(read[..] == data[..]);
        }
        for (si, _) in kept {
            store.delete(*si, &conformance::secrets()).await.unwrap();
        }
        drop(store);
        let _store = LocalStore::open(dir.path(), "local-test").unwrap();
        assert!(
            packed::log_files(&dir.path().join("packed")).is_empty(),
            "logs with no live share are removed"
        );
    }

    /// What a crash during the last sync leaves (a record whose bytes did
    /// not all reach the disk) is dropped and cut off at the next open;
    /// the records before it stay, and new ones can be written.
    #[tokio::test]
    async fn a_torn_last_record_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        let sis: Vec<StorageIndex> = (0..3).map(|_| conformance::random_si()).collect();
        for (i, si) in sis.iter().enumerate() {
            conformance::put(
                &store,
                *si,
                ShareNum(0),
                &conformance::pattern(i as u8, 3000),
                3000,
            )
            .await;
        }
        drop(store);
        let log = packed::log_files(&dir.path().join("packed")).pop().unwrap();
        let mut bytes = fs::read(&log).unwrap();
        let last_record = 2 * (64 + 3000);
        bytes[last_record + 64 + 1234] ^= 0x40;
        fs::write(&log, &bytes).unwrap();

        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        assert_eq!(fs::metadata(&log).unwrap().len(), last_record as u64);
        assert!(store.list(sis[2]).await.unwrap().is_empty());
        for (i, si) in sis[..2].iter().enumerate() {
            let read = store.read(*si, ShareNum(0), 0..3000).await.unwrap();
            assert!(read[..] == conformance::pattern(i as u8, 3000)[..]);
        }
        conformance::put(&store, sis[2], ShareNum(0), b"again", 5).await;
        drop(store);
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        assert_eq!(
            &store.read(sis[2], ShareNum(0), 0..5).await.unwrap()[..],
            b"again"
        );
    }

    /// A packed share whose bytes rotted on disk is an error, never other
    /// bytes; the records around it still read.
    #[tokio::test]
    async fn a_corrupt_packed_share_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        let sis: Vec<StorageIndex> = (0..3).map(|_| conformance::random_si()).collect();
        for si in &sis {
            conformance::put(&store, *si, ShareNum(5), &[9; 1000], 1000).await;
        }
        let log = packed::log_files(&dir.path().join("packed")).pop().unwrap();
        let mut bytes = fs::read(&log).unwrap();
        bytes[(64 + 1000) + 64 + 10] ^= 1;
        fs::write(&log, &bytes).unwrap();
        let err = store.read(sis[1], ShareNum(5), 500..600).await.unwrap_err();
        assert!(err.to_string().contains("hash"), "{err}");
        for si in [sis[0], sis[2]] {
            assert_eq!(
                &store.read(si, ShareNum(5), 0..1000).await.unwrap()[..],
                &[9; 1000]
            );
        }
        assert!(matches!(
            store.read(sis[0], ShareNum(5), 999..1001).await,
            Err(GridError::OutOfRange { .. })
        ));
    }

    /// A store opened beside the server sees what the server packs after
    /// it opened, and a share the server deletes reads as missing.
    #[tokio::test]
    async fn a_store_beside_the_server_sees_new_packed_shares() {
        let dir = tempfile::tempdir().unwrap();
        let server = LocalStore::open(dir.path(), "local-test").unwrap();
        let beside = LocalStore::open_beside(dir.path(), "local-test").unwrap();
        let si = conformance::random_si();
        conformance::put(&server, si, ShareNum(1), b"packed later", 12).await;
        assert_eq!(
            beside.list(si).await.unwrap(),
            vec![ShareInfo {
                share: ShareNum(1),
                len: 12
            }]
        );
        assert_eq!(
            &beside.read(si, ShareNum(1), 0..12).await.unwrap()[..],
            b"packed later"
        );
        // Beside the server, shares are files, never packed.
        conformance::put(&beside, si, ShareNum(2), b"a file", 6).await;
        assert!(server.inner.si_dir(si).join("2").is_file());
        assert_eq!(
            &server.read(si, ShareNum(2), 0..6).await.unwrap()[..],
            b"a file"
        );
        // The server does not look for that file at create, but will not
        // pack the same share beside it.
        let mut writer = server
            .create(si, ShareNum(2), &conformance::secrets())
            .await
            .unwrap();
        writer.append(Bytes::from_static(b"packed")).await.unwrap();
        assert!(matches!(
            writer.finish(6).await,
            Err(GridError::AlreadyExists { .. })
        ));
        assert_eq!(
            &server.read(si, ShareNum(2), 0..6).await.unwrap()[..],
            b"a file"
        );
        server.delete(si, &conformance::secrets()).await.unwrap();
        assert!(matches!(
            beside.read(si, ShareNum(1), 0..12).await,
            Err(GridError::NotFound { .. })
        ));
        // A repair beside the server may delete what the server packed.
        let other = conformance::random_si();
        conformance::put(&server, other, ShareNum(3), b"bad", 3).await;
        assert_eq!(beside.list(other).await.unwrap().len(), 1);
        beside.delete(other, &conformance::secrets()).await.unwrap();
        assert!(matches!(
            server.read(other, ShareNum(3), 0..3).await,
            Err(GridError::NotFound { .. })
        ));
        drop(server);
        let server = LocalStore::open(dir.path(), "local-test").unwrap();
        assert!(server.list(other).await.unwrap().is_empty());
    }

    /// Two records of 100 bytes, `first` (deleted if `delete_first`) then
    /// `second`, in a log that is not the newest, with the second record's
    /// header damaged. Answers the log, `first` and `second`.
    async fn log_damaged_at_its_second_record(
        dir: &Path,
        delete_first: bool,
    ) -> (PathBuf, StorageIndex, StorageIndex) {
        let store = LocalStore::open(dir, "local-test").unwrap();
        let (first, second) = (conformance::random_si(), conformance::random_si());
        conformance::put(&store, first, ShareNum(0), &[1; 100], 100).await;
        conformance::put(&store, second, ShareNum(0), &[2; 100], 100).await;
        if delete_first {
            store.delete(first, &conformance::secrets()).await.unwrap();
        }
        drop(store);
        let log = packed::log_files(&dir.join("packed")).pop().unwrap();
        // A newer log, so that the damaged one is not the newest.
        let store = LocalStore::open(dir, "local-test").unwrap();
        conformance::put(&store, conformance::random_si(), ShareNum(0), b"new", 3).await;
        drop(store);
        let mut bytes = fs::read(&log).unwrap();
        bytes[64 + 100] = b'X'; // the second record's magic
        fs::write(&log, &bytes).unwrap();
        (log, first, second)
    }

    /// A log whose scan stops at a damaged header is kept, even with no
    /// live record before the damage: records may lie past it.
    #[tokio::test]
    async fn a_log_damaged_in_the_middle_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, second) = log_damaged_at_its_second_record(dir.path(), true).await;
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        assert!(log.exists(), "a damaged log was removed");
        assert!(store.list(second).await.unwrap().is_empty());
    }

    /// Deleting the last readable record of a damaged log keeps the log:
    /// the records past the damage are still in it.
    #[tokio::test]
    async fn deleting_from_a_damaged_log_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (log, first, _) = log_damaged_at_its_second_record(dir.path(), false).await;
        let store = LocalStore::open(dir.path(), "local-test").unwrap();
        assert_eq!(store.list(first).await.unwrap().len(), 1);
        store.delete(first, &conformance::secrets()).await.unwrap();
        assert!(log.exists(), "a damaged log was removed by a delete");
        let bytes = fs::read(&log).unwrap();
        assert_eq!(&bytes[64 + 100 + 64..64 + 100 + 64 + 100], &[2u8; 100][..]);
    }

    #[tokio::test]
    async fn grid_of_dirs_names_servers() {
        let dir = tempfile::tempdir().unwrap();
        let grid = grid_of_dirs(dir.path(), 10).unwrap();
        let ids: Vec<&str> = grid.iter().map(|store| store.server_id()).collect();
        assert_eq!(ids[0], "local-00");
        assert_eq!(ids[9], "local-09");
        assert!(dir.path().join("server-09").join("shares").is_dir());
    }
}
