//! Where shares live.
//!
//! [`ShareStore`] is the one seam between the engine and the bytes on a storage
//! server. A store knows nothing of files, keys or WebDAV: it keeps opaque
//! shares, named by a [`StorageIndex`] and a [`ShareNum`], that grow by appends
//! and become visible only once finished.
//!
//! [`Grid`] is an ordered set of stores plus the rule that decides which
//! server holds which share of a file (a permutation per storage index).

#[cfg(test)]
mod conformance;
mod fault;
pub mod health;
mod local;
pub(crate) mod memory;
mod pool;
pub mod probe;
mod s3;
pub mod tahoe;
mod throttle;

pub use fault::{FailingStore, Fault, FaultSwitch, FaultyStore};
pub use local::{grid_of_dirs, grid_of_dirs_beside, LocalStore};
// For the coder, which lays blocks out where the local store's direct
// writes take them without a copy (engine/codec.rs).
pub(crate) use local::{DIRECT_ALIGN, SMALL_SHARE};
pub use memory::MemoryStore;
pub use pool::{BufferLease, BufferPool};
pub use s3::{S3Options, S3Store, MIN_PART_SIZE};
pub use tahoe::TahoeStore;
pub use throttle::{Link, ThrottledStore};

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Identifies a file's shares on every server: 16 bytes derived from the
/// file's key, so it reveals nothing of the key or the content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageIndex([u8; 16]);

impl StorageIndex {
    /// Length in bytes.
    pub const LEN: usize = 16;

    /// Wraps bytes derived elsewhere (the engine derives them from a key).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw 16 bytes, as backends put them in requests.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lowercase base32 without padding (26 characters): safe as a file name
    /// on every file system and in a URL path.
    pub fn to_base32(&self) -> String {
        base32(&self.0)
    }

    /// Parses [`StorageIndex::to_base32`]'s form; `None` for anything else.
    pub fn from_base32(text: &str) -> Option<Self> {
        Some(Self(from_base32(text).ok()?.try_into().ok()?))
    }
}

/// Lowercase unpadded base32: the one text form of storage indexes, keys
/// and hashes (file names, capabilities, recovery tokens).
pub fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(bytes)
        .to_ascii_lowercase()
}

/// The bytes of [`base32`]'s form, either case.
pub fn from_base32(text: &str) -> Result<Vec<u8>, data_encoding::DecodeError> {
    data_encoding::BASE32_NOPAD.decode(text.to_ascii_uppercase().as_bytes())
}

impl fmt::Debug for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageIndex({})", self.to_base32())
    }
}

impl fmt::Display for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base32())
    }
}

/// The number of a share within a file, `0..N` (N <= 256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShareNum(pub u8);

impl fmt::Display for ShareNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sh{}", self.0)
    }
}

/// Secrets a server may demand before it lets a client change or delete a
/// file's shares. The engine derives them from the file's key and the
/// server's [`ShareStore::identity`], so each server gets its own: a server
/// (or whoever reads its disk) learns nothing that opens the file's shares
/// on any other server. Backends that have no access control (local
/// directories) ignore them.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareSecrets {
    /// Lets a client write or replace shares (Tahoe's write enabler).
    pub write_enabler: [u8; 32],
    /// Lets a client renew its lease on the shares.
    pub lease_renew: [u8; 32],
    /// Lets a client cancel its lease (and so delete the shares).
    pub lease_cancel: [u8; 32],
}

impl fmt::Debug for ShareSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareSecrets(..)")
    }
}

/// A finished share as a listing reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareInfo {
    /// Which of the file's shares this is.
    pub share: ShareNum,
    /// Length in bytes of the finished share.
    pub len: u64,
}

/// Errors of a storage backend. They name the server so that the engine can
/// report which server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum GridError {
    /// The share is not on this server (or not finished yet).
    #[error("{server}: share {share} of {si} not found")]
    NotFound {
        server: String,
        si: StorageIndex,
        share: ShareNum,
    },
    /// A share of that number exists or is being written already.
    #[error("{server}: share {share} of {si} already exists")]
    AlreadyExists {
        server: String,
        si: StorageIndex,
        share: ShareNum,
    },
    /// A read asked for bytes past the end of the share.
    #[error(
        "{server}: read of {range:?} is beyond the end ({len} bytes) of share {share} of {si}"
    )]
    OutOfRange {
        server: String,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
        len: u64,
    },
    /// A finished share has another length than the writer declared.
    #[error("{server}: share {share} of {si} has {written} bytes, expected {expected} at finish")]
    LengthMismatch {
        server: String,
        si: StorageIndex,
        share: ShareNum,
        written: u64,
        expected: u64,
    },
    /// The backend's I/O failed (disk, network); see the source.
    #[error("{server}: {operation}: {source}")]
    Io {
        server: String,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The server refused a change for want of the right secret (Tahoe's
    /// 401): another key's write enabler, or one of the derivation that
    /// preceded per-server secrets.
    #[error("{server}: {operation}: refused: wrong write enabler or swissnum")]
    Refused {
        server: String,
        operation: &'static str,
    },
    /// The store broke its contract of exact reads.
    #[error("{server}: read of {want} bytes returned {got}")]
    ShortRead {
        server: String,
        got: usize,
        want: u64,
    },
    /// A root record longer than [`MAX_RECORD_LEN`], offered or found.
    #[error("{server}: root record of {len} bytes is longer than the limit of {limit}")]
    RecordTooLong {
        server: String,
        len: usize,
        limit: usize,
    },
    /// The backend keeps no root records.
    #[error("{server}: {operation} is not supported by this store")]
    Unsupported {
        server: String,
        operation: &'static str,
    },
    /// A backend's own error, converted once where it leaves the backend
    /// (the Tahoe backend's `TahoeError`): the server misbehaved or could
    /// not be reached, and the source says how.
    #[error("{server}: {source}")]
    Backend {
        server: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The result of a storage server request.
pub type GridResult<T> = Result<T, GridError>;

impl GridError {
    /// The server is out of room (ENOSPC, EDQUOT): a full disk, not a fault.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            GridError::Io { source, .. } => io_out_of_space(source),
            _ => false,
        }
    }
}

/// Whether an I/O error means a full file system or quota.
pub fn io_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(
            e.raw_os_error(),
            Some(code) if code == nix::errno::Errno::ENOSPC as i32
                || code == nix::errno::Errno::EDQUOT as i32
        )
}

/// One storage server.
///
/// Contract, shared by every backend and checked by the conformance tests:
/// - A share under construction ([`ShareStore::create`] .. [`ShareWriter::finish`])
///   is invisible: `list` does not report it and `read` answers `NotFound`.
/// - `finish` makes the share durable and visible atomically, with exactly the
///   bytes appended; it fails with `LengthMismatch` if their count differs from
///   the length given.
/// - `abort`, or dropping an unfinished writer, removes everything the writer
///   stored. Drop cleans up on a best-effort basis; `abort` reports errors.
/// - `create` of a share that already exists, finished or under construction,
///   fails with `AlreadyExists`.
/// - `read` returns exactly the bytes of `range` or an error, never fewer.
/// - `list` is unordered; a storage index with no shares lists as empty.
/// - `delete` removes every finished share of the storage index; deleting
///   nothing is not an error.
/// - Root records (`put_record` / `get_record`) live apart from shares,
///   in slots named by a [`StorageIndex`] the caller derives: `put_record`
///   replaces the whole record atomically (a reader sees the old bytes or
///   the new, never a mix), `get_record` answers `None` for a slot never
///   written, and no record is longer than [`MAX_RECORD_LEN`].
#[async_trait]
pub trait ShareStore: Send + Sync + fmt::Debug {
    /// A stable name for this server: used in errors and, hashed with the
    /// storage index, to choose which server holds which share.
    fn server_id(&self) -> &str;

    /// What the engine derives this server's [`ShareSecrets`] from. It must
    /// never change for a server that holds shares (else their secrets
    /// would be lost), so a server with a public key of its own answers
    /// that key's hash rather than a configurable name.
    fn identity(&self) -> &[u8] {
        self.server_id().as_bytes()
    }

    /// Starts writing a new share; it stays invisible until the writer's
    /// `finish`.
    async fn create(
        &self,
        si: StorageIndex,
        share: ShareNum,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>>;

    /// Exactly the bytes of `range` of a finished share.
    async fn read(&self, si: StorageIndex, share: ShareNum, range: Range<u64>)
        -> GridResult<Bytes>;

    /// Several ranges of one share, each as [`ShareStore::read`] would
    /// answer it: a block and the hash-tree nodes that prove it. A store
    /// that can serve them in one go (one open file, one trip to the
    /// blocking pool) overrides this; the default reads them together.
    async fn read_ranges(
        &self,
        si: StorageIndex,
        share: ShareNum,
        ranges: Vec<Range<u64>>,
    ) -> GridResult<Vec<Bytes>> {
        futures::future::try_join_all(ranges.into_iter().map(|range| self.read(si, share, range)))
            .await
    }

    /// Whether [`ShareStore::read_ranges_blocking`] works: the store's
    /// bytes are on this machine and reading them only blocks a thread.
    fn reads_blocking(&self) -> bool {
        false
    }

    /// [`ShareStore::read_ranges`] on the calling thread, for a caller on
    /// the blocking pool with more to do with the bytes (hashing,
    /// decrypting): one trip to the pool instead of two. Stores whose
    /// [`ShareStore::reads_blocking`] is false answer an error.
    fn read_ranges_blocking(
        &self,
        si: StorageIndex,
        share: ShareNum,
        ranges: &[Range<u64>],
    ) -> GridResult<Vec<Bytes>> {
        let _ = (si, share, ranges);
        Err(GridError::Unsupported {
            server: self.server_id().to_owned(),
            operation: "blocking reads",
        })
    }

    /// The finished shares of `si` this server holds, in no order.
    async fn list(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>>;

    /// Removes every finished share of `si`; nothing there is not an error.
    async fn delete(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<()>;

    /// The room this server has for more shares, for the free space
    /// clients show (WebDAV quota); `None` when it does not say.
    async fn free_space(&self) -> Option<FreeSpace> {
        None
    }

    /// Replaces the root record in `slot` with `data` (at most
    /// [`MAX_RECORD_LEN`] bytes), durably. `secrets` guard the slot on
    /// servers with access control: the first write fixes them.
    async fn put_record(
        &self,
        slot: StorageIndex,
        data: Bytes,
        secrets: &ShareSecrets,
    ) -> GridResult<()> {
        let _ = (slot, data, secrets);
        Err(GridError::Unsupported {
            server: self.server_id().to_owned(),
            operation: "put_record",
        })
    }

    /// The root record in `slot`; `None` if none was ever written.
    async fn get_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        let _ = slot;
        Err(GridError::Unsupported {
            server: self.server_id().to_owned(),
            operation: "get_record",
        })
    }

    /// Renews this client's lease on the shares of `si`, on servers that
    /// expire shares nobody renews (Tahoe). `Ok(false)`: this server keeps
    /// shares without leases, nothing to do.
    async fn renew_lease(&self, _si: StorageIndex, _secrets: &ShareSecrets) -> GridResult<bool> {
        Ok(false)
    }

    /// Starts writing a Tahoe-LAFS immutable (CHK) share whose length,
    /// `len`, is fixed before its first byte. Such shares live apart from
    /// griddav's own on a Tahoe server (an immutable allocation, not a
    /// mutable slot), so stock Tahoe clients find them; on stores where a
    /// share is plain bytes they are written like any other share.
    async fn create_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        len: u64,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        let _ = len;
        self.create(si, share, secrets).await
    }

    /// Exactly the bytes of `range` of a finished immutable (CHK) share.
    async fn read_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        self.read(si, share, range).await
    }

    /// The finished immutable (CHK) shares of `si` this server holds.
    async fn list_immutable(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        self.list(si).await
    }

    /// Removes the immutable (CHK) shares of `si` where the store lets a
    /// client do so; `Ok(false)` where only lease expiry frees them (Tahoe).
    async fn delete_immutable(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<bool> {
        self.delete(si, secrets).await.map(|()| true)
    }
}

/// The longest root record a store keeps (a record names a few namespace
/// copies: a few hundred bytes each).
pub const MAX_RECORD_LEN: usize = 16 << 10;

/// Checks a record's length before it is stored.
pub(crate) fn check_record_len(server: &str, len: usize) -> GridResult<()> {
    if len > MAX_RECORD_LEN {
        return Err(GridError::RecordTooLong {
            server: server.to_owned(),
            len,
            limit: MAX_RECORD_LEN,
        });
    }
    Ok(())
}

/// Free room on a storage server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes that more shares can take.
    pub bytes: u64,
    /// Servers reporting the same volume share these bytes (directories on
    /// one disk): counted once. `None`: this server's own.
    pub volume: Option<u64>,
}

/// A share being written: appends in order, then `finish` or `abort`.
#[async_trait]
pub trait ShareWriter: Send + fmt::Debug {
    /// Appends `data` at the current end of the share.
    async fn append(&mut self, data: Bytes) -> GridResult<()>;

    /// Appends `pieces` one after another, as as many
    /// [`append`](Self::append)s would. A store may write them in one trip
    /// to its disk: the uploader hands over together the blocks that queued
    /// up while the previous write ran.
    async fn append_many(&mut self, pieces: Vec<Bytes>) -> GridResult<()> {
        for piece in pieces {
            self.append(piece).await?;
        }
        Ok(())
    }

    /// Makes the share durable and visible; `len` is the total number of bytes
    /// appended, checked by the store.
    async fn finish(self: Box<Self>, len: u64) -> GridResult<()>;

    /// Appends `data`, the share's last bytes, then finishes it with `len`
    /// bytes in all; on an error the share is gone, as after
    /// [`abort`](Self::abort). A store may write the last bytes and finish
    /// in one trip to its disk, where an append and a finish take two.
    async fn finish_with(mut self: Box<Self>, data: Bytes, len: u64) -> GridResult<()> {
        if let Err(e) = self.append(data).await {
            let _ = self.abort().await;
            return Err(e);
        }
        self.finish(len).await
    }

    /// [`finish_with`](Self::finish_with) for last bytes that come in
    /// `pieces`, one after another. By default they are joined into one
    /// buffer first, so a store that sends the last bytes with its finish
    /// still sends them in one request.
    async fn finish_with_many(self: Box<Self>, pieces: Vec<Bytes>, len: u64) -> GridResult<()> {
        self.finish_with(joined(pieces), len).await
    }

    /// Removes everything written so far.
    async fn abort(self: Box<Self>) -> GridResult<()>;
}

/// `pieces` as one buffer: without a copy when there is only one.
pub(crate) fn joined(pieces: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(pieces) {
        Ok([piece]) => piece,
        Err(pieces) => {
            let mut all = bytes::BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for piece in &pieces {
                all.extend_from_slice(piece);
            }
            all.freeze()
        }
    }
}

/// The set of storage servers of a grid.
#[derive(Clone, Debug)]
pub struct Grid {
    servers: Vec<Arc<dyn ShareStore>>,
    upload_memory: Option<BufferPool>,
    health: Arc<health::ServerHealth>,
}

impl Grid {
    /// A grid whose stores each buffer on their own.
    pub fn new(servers: Vec<Arc<dyn ShareStore>>) -> Self {
        Self {
            servers,
            upload_memory: None,
            health: Arc::default(),
        }
    }

    /// A grid whose stores lease their buffers from `pool`, which uploads
    /// to it should use for their coded segments too
    /// ([`Grid::upload_memory`]), so that one figure bounds both.
    pub fn with_upload_memory(servers: Vec<Arc<dyn ShareStore>>, pool: BufferPool) -> Self {
        Self {
            servers,
            upload_memory: Some(pool),
            health: Arc::default(),
        }
    }

    /// The memory pool the stores of this grid buffer in, if they share one.
    pub fn upload_memory(&self) -> Option<&BufferPool> {
        self.upload_memory.as_ref()
    }

    /// What the servers have been like lately (shared by clones).
    pub fn health(&self) -> &Arc<health::ServerHealth> {
        &self.health
    }

    /// Where a new upload puts its shares: [`Grid::permuted`], with the
    /// servers that had trouble lately moved to the end (in the same
    /// order), so that the data shares land on healthy ones.
    pub fn placement(&self, si: StorageIndex) -> Vec<Arc<dyn ShareStore>> {
        let (healthy, suspect): (Vec<_>, Vec<_>) = self
            .permuted(si)
            .into_iter()
            .partition(|s| !self.health.is_suspect(s.server_id()));
        healthy.into_iter().chain(suspect).collect()
    }

    /// Every server, in configuration order.
    pub fn servers(&self) -> &[Arc<dyn ShareStore>] {
        &self.servers
    }

    /// Plaintext bytes the grid has room for when every byte is stored as
    /// `n` shares of which `k` rebuild it: the free space of the servers
    /// (each volume once) times k/n. Uploads spread shares evenly over the
    /// servers, so this is what many files can fill. `None` when no server
    /// reports its free space.
    pub async fn available_bytes(&self, k: u16, n: u16) -> Option<u64> {
        if k == 0 || n == 0 {
            return None;
        }
        let reports =
            futures::future::join_all(self.servers.iter().map(|server| server.free_space())).await;
        let mut volumes = std::collections::HashSet::new();
        let mut free: u128 = 0;
        let mut any = false;
        for space in reports.into_iter().flatten() {
            any = true;
            if space.volume.is_none_or(|volume| volumes.insert(volume)) {
                free += u128::from(space.bytes);
            }
        }
        let room = free * u128::from(k) / u128::from(n);
        any.then(|| u64::try_from(room).unwrap_or(u64::MAX))
    }

    /// The servers in the order this storage index prefers them: sorted by
    /// SHA-256(storage index || server id). Share `i` of an upload goes to
    /// the `i`-th server of this order (wrapping round when the grid has
    /// fewer servers than shares), so uploads spread evenly over the grid and
    /// a reader knows where to look first.
    pub fn permuted(&self, si: StorageIndex) -> Vec<Arc<dyn ShareStore>> {
        let mut keyed: Vec<([u8; 32], &Arc<dyn ShareStore>)> = self
            .servers
            .iter()
            .map(|server| {
                let mut hasher = Sha256::new();
                hasher.update(si.as_bytes());
                hasher.update(server.server_id().as_bytes());
                (hasher.finalize().into(), server)
            })
            .collect();
        keyed.sort_by_key(|a| a.0);
        keyed
            .into_iter()
            .map(|(_, server)| Arc::clone(server))
            .collect()
    }
}
