//! Tahoe-LAFS storage servers as [`ShareStore`]s, over their HTTP storage
//! protocol ("Great Black Swamp", as served by tahoe-lafs 1.20).
//!
//! Each griddav share lives in a **mutable slot share** of the server (slot =
//! storage index, share = share number), because a griddav share grows by
//! appends and its length is known only at finish, while Tahoe's immutable
//! allocation needs the exact size up front. `docs/TAHOE.md` gives the
//! reasons; in short, every write is one `read-test-write` whose test
//! vector checks a small header of our own at the start of the slot share:
//!
//! ```text
//! slot share = slot header (24 bytes) || griddav share bytes
//! slot header = "GDSL" | version 1 | state | 0 0 | writer nonce (8) | share length (u64 BE)
//! ```
//!
//! - `create` writes the header with state 0 ("being written") and a random
//!   writer nonce, testing that the share does not exist: the server decides
//!   races, exactly one creator wins.
//! - each write appends at an explicit offset and tests that the header is
//!   still ours and still being written, so a repeated request is a no-op and
//!   a writer whose share was aborted or deleted cannot write into a new one.
//! - `finish` writes the last bytes and then, in the same request, the
//!   header with state 1 ("finished") and the share length.
//! - `abort` (and drop) truncates the share to length 0, which makes the
//!   server delete it, again under the test that it is still ours.
//! - `list` and `read` report a share only when its header says finished,
//!   so a share under construction stays invisible although the server
//!   would serve its bytes.
//!
//! A root record ([`ShareStore::put_record`]) is share 0 of its own slot,
//! holding the record's bytes and nothing else: one read-test-write with
//! no test replaces the whole share (write at 0, new length), which the
//! server applies at once; the write enabler the caller derives guards it.
//!
//! The secrets of [`ShareSecrets`] go into every write as the write enabler
//! and lease secrets: only a holder of the file's key can change or delete
//! its shares. The engine derives them per server from
//! [`ShareStore::identity`], which is the SPKI hash of the server's NURL
//! (its public key, which no config change moves), so the write enabler a
//! server keeps on its disk opens nothing on any other server.

mod cbor;
mod http;
mod immutable;
mod nurl;

pub use self::http::Timeouts;
pub use self::nurl::{nurls_of_node_dir, spki_hash, NodeDirError, Nurl};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use ::http::{HeaderValue, Method, StatusCode};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::future::join_all;

use self::cbor::{decode_rtw_answer, decode_share_set, encode_rtw, RtwAnswer, ShareOps};
use self::http::{
    escaped_excerpt, Client, ClientError, PinMismatch, Reply, TransportError, CBOR_LIMIT,
};
use super::{
    GridError, GridResult, ShareInfo, ShareNum, ShareSecrets, ShareStore, ShareWriter, StorageIndex,
};

// Do not change: on-server format (docs/TAHOE.md).
const SLOT_MAGIC: [u8; 4] = *b"GDSL";
const SLOT_VERSION: u8 = 1;
const STATE_WRITING: u8 = 0;
const STATE_FINISHED: u8 = 1;
/// Bytes of the slot header; the griddav share starts at this offset.
const SLOT_HEADER_LEN: u64 = 24;

/// Appends are gathered up to this many bytes before they are sent: one
/// request per block for griddav's 1 MiB segments, fewer requests for
/// small ones.
const FLUSH_AT: usize = 256 << 10;

/// The share of a root record's slot that holds it.
const RECORD_SHARE: ShareNum = ShareNum(0);

/// Lengths of finished shares seen, at most this many (then forgotten).
const MAX_KNOWN: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotHeader {
    state: u8,
    nonce: [u8; 8],
    len: u64,
}

impl SlotHeader {
    fn encode(&self) -> [u8; SLOT_HEADER_LEN as usize] {
        let mut out = [0u8; SLOT_HEADER_LEN as usize];
        out[..4].copy_from_slice(&SLOT_MAGIC);
        out[4] = SLOT_VERSION;
        out[5] = self.state;
        out[8..16].copy_from_slice(&self.nonce);
        out[16..24].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// `None` for anything but a header of ours (a short share included).
    fn decode(bytes: &[u8]) -> Option<SlotHeader> {
        let bytes: &[u8; SLOT_HEADER_LEN as usize] = bytes.try_into().ok()?;
        if bytes[..4] != SLOT_MAGIC || bytes[4] != SLOT_VERSION || bytes[6..8] != [0, 0] {
            return None;
        }
        let state = bytes[5];
        if state != STATE_WRITING && state != STATE_FINISHED {
            return None;
        }
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&bytes[8..16]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[16..24]);
        Some(SlotHeader {
            state,
            nonce,
            len: u64::from_be_bytes(len),
        })
    }

    fn finished_len(&self) -> Option<u64> {
        (self.state == STATE_FINISHED).then_some(self.len)
    }
}

/// One Tahoe-LAFS storage server. Cheap to clone; clones share the
/// connection pool.
#[derive(Clone)]
pub struct TahoeStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for TahoeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TahoeStore")
            .field("server_id", &self.inner.server_id)
            .field("nurl", &self.inner.nurl)
            .finish_non_exhaustive()
    }
}

struct Inner {
    server_id: String,
    nurl: Nurl,
    client: Client,
    /// Finished shares and their lengths: a finished share never changes
    /// (it is only ever deleted, and then reads answer 404), so `read`
    /// checks the slot header once per share, not once per read.
    known: Mutex<HashMap<(StorageIndex, ShareNum), u64>>,
}

impl TahoeStore {
    /// A store for the server of `nurl`. No I/O: connections are opened
    /// when first needed. `server_id` defaults to the NURL's SPKI hash,
    /// the server's stable public identity.
    pub fn new(nurl: Nurl, server_id: Option<String>, timeouts: Timeouts) -> GridResult<Self> {
        let server_id = server_id.unwrap_or_else(|| format!("tahoe-{}", nurl.spki_hash_text()));
        let client = Client::new(&nurl, timeouts).map_err(|e| GridError::Backend {
            server: server_id.clone(),
            source: Box::new(TahoeError::Client(e)),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                server_id,
                nurl,
                client,
                known: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Where this server is and how it proves who it is.
    pub fn nurl(&self) -> &Nurl {
        &self.inner.nurl
    }

    /// Asks the server for its version document: a cheap check that it
    /// answers and accepts our swissnum.
    pub async fn check(&self) -> GridResult<()> {
        let reply = self
            .inner
            .send(
                Method::GET,
                "/storage/v1/version",
                &[],
                Bytes::new(),
                CBOR_LIMIT,
                "version",
            )
            .await?;
        self.inner
            .expect_status(&reply, &[StatusCode::OK], "version")?;
        Ok(())
    }
}

fn secret_headers(secrets: &ShareSecrets) -> Result<Vec<(&'static str, HeaderValue)>, TahoeError> {
    [
        ("write-enabler", &secrets.write_enabler),
        ("lease-renew-secret", &secrets.lease_renew),
        ("lease-cancel-secret", &secrets.lease_cancel),
    ]
    .into_iter()
    .map(|(kind, secret)| {
        // base64 and a fixed ASCII name: always a valid header value.
        HeaderValue::try_from(format!("{kind} {}", STANDARD.encode(secret)))
            .map(|value| ("x-tahoe-authorization", value))
            .map_err(|source| TahoeError::Header {
                what: "secret",
                source,
            })
    })
    .collect()
}

/// What went wrong talking to one Tahoe storage server, converted into
/// [`GridError`] once, in [`Inner::error`]. No variant holds a secret: the
/// swissnum and the share secrets travel only in request headers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TahoeError {
    /// 401: a wrong swissnum, or a write enabler of another key.
    #[error("{operation}: refused: wrong write enabler or swissnum")]
    Refused { operation: &'static str },
    #[error("{operation}: unexpected HTTP {status}: {detail}{}", if *.cut { " (cut short)" } else { "" })]
    UnexpectedStatus {
        operation: &'static str,
        status: StatusCode,
        /// The server's own words, escaped and short: it is not trusted.
        detail: String,
        cut: bool,
    },
    #[error("{operation}: bad answer: {source}")]
    BadAnswer {
        operation: &'static str,
        #[source]
        source: cbor::CborError,
    },
    #[error(
        "{operation} of share {share} of {si}: the share was removed or replaced while \
         being written"
    )]
    SlotReplaced {
        operation: &'static str,
        share: ShareNum,
        si: StorageIndex,
    },
    #[error(
        "read of {range:?} of share {share} of {si}: got {got} bytes of {want}; \
         the share is shorter than its header says"
    )]
    ShortRead {
        range: Range<u64>,
        share: ShareNum,
        si: StorageIndex,
        got: usize,
        want: u64,
    },
    #[error("{operation}: {got} bytes for a range of {want}")]
    TooLong {
        operation: &'static str,
        got: usize,
        want: u64,
    },
    #[error("{operation}: range {range:?} too long")]
    RangeTooLong {
        operation: &'static str,
        range: Range<u64>,
    },
    #[error("allocate share {share} of {si} ({len} bytes): not allocated (no room, or another upload of it under way)")]
    NotAllocated {
        si: StorageIndex,
        share: ShareNum,
        len: u64,
    },
    #[error("immutable share {share} of {si}: bad header: {reason}")]
    BadShareHeader {
        si: StorageIndex,
        share: ShareNum,
        reason: &'static str,
    },
    #[error("put root record: the server refused the write")]
    RecordRefused,
    #[error("delete of {si}: the server refused the write")]
    DeleteRefused { si: StorageIndex },
    /// Includes a certificate whose SPKI does not match the NURL's pin
    /// (a TLS error whose text says so).
    #[error("{operation}: {source}")]
    Transport {
        operation: &'static str,
        #[source]
        source: TransportError,
    },
    #[error("{operation}: {source}")]
    PinMismatch {
        operation: &'static str,
        #[source]
        source: PinMismatch,
    },
    #[error("{what} header: {source}")]
    Header {
        what: &'static str,
        #[source]
        source: ::http::header::InvalidHeaderValue,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Inner {
    /// The one conversion of this backend's errors into the grid's.
    fn error(&self, e: TahoeError) -> GridError {
        let server = self.server_id.clone();
        match e {
            TahoeError::Refused { operation } => GridError::Refused { server, operation },
            TahoeError::Transport {
                operation,
                source: TransportError::PinMismatch(source),
            } => GridError::Backend {
                server,
                source: Box::new(TahoeError::PinMismatch { operation, source }),
            },
            TahoeError::Transport { operation, source } => GridError::Io {
                server,
                operation,
                source: source.into_io(),
            },
            other => GridError::Backend {
                server,
                source: Box::new(other),
            },
        }
    }

    fn not_found(&self, si: StorageIndex, share: ShareNum) -> GridError {
        GridError::NotFound {
            server: self.server_id.clone(),
            si,
            share,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
        limit: usize,
        operation: &'static str,
    ) -> GridResult<Reply> {
        self.client
            .request(method, path, headers, body, limit)
            .await
            .map_err(|source: TransportError| {
                self.error(TahoeError::Transport { operation, source })
            })
    }

    fn expect_status(
        &self,
        reply: &Reply,
        ok: &[StatusCode],
        operation: &'static str,
    ) -> GridResult<()> {
        if ok.contains(&reply.status) {
            return Ok(());
        }
        if reply.status == StatusCode::UNAUTHORIZED {
            // A wrong swissnum in the NURL, or a write enabler of another
            // key (or of another derivation) for this storage index.
            return Err(self.error(TahoeError::Refused { operation }));
        }
        Err(self.error(TahoeError::UnexpectedStatus {
            operation,
            status: reply.status,
            detail: escaped_excerpt(&reply.body, 120),
            cut: reply.truncated,
        }))
    }

    async fn rtw(
        &self,
        si: StorageIndex,
        secrets: &ShareSecrets,
        ops: BTreeMap<u8, ShareOps>,
        reads: &[(u64, u64)],
        operation: &'static str,
    ) -> GridResult<RtwAnswer> {
        let headers = secret_headers(secrets).map_err(|e| self.error(e))?;
        let body = encode_rtw(&ops, reads);
        let path = format!("/storage/v1/mutable/{si}/read-test-write");
        let reply = self
            .send(Method::POST, &path, &headers, body, CBOR_LIMIT, operation)
            .await?;
        self.expect_status(&reply, &[StatusCode::OK], operation)?;
        decode_rtw_answer(&reply.body)
            .map_err(|source| self.error(TahoeError::BadAnswer { operation, source }))
    }

    /// Reads `range` of the slot share (slot offsets); `None` if the share
    /// does not exist. May return fewer bytes at the end of the share.
    async fn get_range(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
        operation: &'static str,
    ) -> GridResult<Option<Bytes>> {
        if range.is_empty() {
            return Ok(Some(Bytes::new()));
        }
        let path = format!("/storage/v1/mutable/{si}/{}", share.0);
        let value = format!("bytes={}-{}", range.start, range.end - 1);
        let range_header = HeaderValue::try_from(value).map_err(|source| {
            self.error(TahoeError::Header {
                what: "range",
                source,
            })
        })?;
        // A range is at most a block or a few hashes: within usize.
        let want = usize::try_from(range.end - range.start).map_err(|_| {
            self.error(TahoeError::RangeTooLong {
                operation,
                range: range.clone(),
            })
        })?;
        let reply = self
            .send(
                Method::GET,
                &path,
                &[("range", range_header)],
                Bytes::new(),
                want,
                operation,
            )
            .await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::NO_CONTENT => Ok(Some(Bytes::new())),
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => {
                if reply.body.len() as u64 > range.end - range.start {
                    return Err(self.error(TahoeError::TooLong {
                        operation,
                        got: reply.body.len(),
                        want: range.end - range.start,
                    }));
                }
                Ok(Some(reply.body))
            }
            _ => {
                self.expect_status(&reply, &[], operation)?;
                Ok(None)
            }
        }
    }

    /// The slot header of a share; `None` if the share does not exist or is
    /// not one of ours.
    async fn header(&self, si: StorageIndex, share: ShareNum) -> GridResult<Option<SlotHeader>> {
        Ok(self
            .get_range(si, share, 0..SLOT_HEADER_LEN, "read slot header")
            .await?
            .and_then(|bytes| SlotHeader::decode(&bytes)))
    }

    fn known_len(&self, si: StorageIndex, share: ShareNum) -> Option<u64> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(si, share))
            .copied()
    }

    fn remember(&self, si: StorageIndex, share: ShareNum, len: u64) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert((si, share), len);
    }

    fn forget(&self, si: StorageIndex, share: Option<ShareNum>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        match share {
            Some(share) => {
                known.remove(&(si, share));
            }
            None => known.retain(|(s, _), _| *s != si),
        }
    }

    /// The length of a finished share; `None` if it does not exist or is
    /// still being written.
    async fn finished_len(&self, si: StorageIndex, share: ShareNum) -> GridResult<Option<u64>> {
        if let Some(len) = self.known_len(si, share) {
            return Ok(Some(len));
        }
        let len = self.header(si, share).await?.and_then(|h| h.finished_len());
        if let Some(len) = len {
            self.remember(si, share, len);
        }
        Ok(len)
    }

    async fn share_numbers(&self, si: StorageIndex) -> GridResult<Vec<u8>> {
        let path = format!("/storage/v1/mutable/{si}/shares");
        let reply = self
            .send(
                Method::GET,
                &path,
                &[],
                Bytes::new(),
                CBOR_LIMIT,
                "list shares",
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        self.expect_status(&reply, &[StatusCode::OK], "list shares")?;
        decode_share_set(&reply.body).map_err(|source| {
            self.error(TahoeError::BadAnswer {
                operation: "list shares",
                source,
            })
        })
    }
}

#[async_trait]
impl ShareStore for TahoeStore {
    fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    fn identity(&self) -> &[u8] {
        &self.inner.nurl.spki_hash
    }

    async fn put_record(
        &self,
        slot: StorageIndex,
        data: Bytes,
        secrets: &ShareSecrets,
    ) -> GridResult<()> {
        super::check_record_len(&self.inner.server_id, data.len())?;
        let len = data.len() as u64;
        let mut ops = BTreeMap::new();
        ops.insert(
            RECORD_SHARE.0,
            ShareOps {
                new_length: Some(len),
                ..ShareOps::default()
            }
            .write(0, data),
        );
        let answer = self
            .inner
            .rtw(slot, secrets, ops, &[], "put root record")
            .await?;
        if !answer.success {
            // No test vector: a refusal here is the server's own.
            return Err(self.inner.error(TahoeError::RecordRefused));
        }
        Ok(())
    }

    async fn get_record(&self, slot: StorageIndex) -> GridResult<Option<Bytes>> {
        // One byte past the limit tells an over-long record apart.
        let range = 0..super::MAX_RECORD_LEN as u64 + 1;
        let Some(bytes) = self
            .inner
            .get_range(slot, RECORD_SHARE, range, "get root record")
            .await?
        else {
            return Ok(None);
        };
        super::check_record_len(&self.inner.server_id, bytes.len())?;
        Ok((!bytes.is_empty()).then_some(bytes))
    }

    async fn create(
        &self,
        si: StorageIndex,
        share: ShareNum,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        let header = SlotHeader {
            state: STATE_WRITING,
            nonce: rand::random(),
            len: 0,
        };
        let encoded = header.encode();
        let mut ops = BTreeMap::new();
        ops.insert(
            share.0,
            ShareOps::default()
                .test_absent()
                .write(0, Bytes::copy_from_slice(&encoded)),
        );
        let answer = self
            .inner
            .rtw(si, secrets, ops, &[(0, SLOT_HEADER_LEN)], "create share")
            .await?;
        let ours = answer
            .data
            .get(&share.0)
            .and_then(|reads| reads.first())
            .is_some_and(|read| read[..] == encoded);
        // A failed test whose share already holds our very header is a
        // repeated request whose first copy succeeded.
        if !answer.success && !ours {
            return Err(GridError::AlreadyExists {
                server: self.inner.server_id.clone(),
                si,
                share,
            });
        }
        self.inner.forget(si, Some(share));
        Ok(Box::new(TahoeWriter {
            inner: Arc::clone(&self.inner),
            si,
            share,
            secrets: secrets.clone(),
            header,
            sent: 0,
            pending: BytesMut::new(),
            done: false,
        }))
    }

    async fn read(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        let inner = &self.inner;
        let len = inner
            .finished_len(si, share)
            .await?
            .ok_or_else(|| inner.not_found(si, share))?;
        if range.start > range.end || range.end > len {
            return Err(GridError::OutOfRange {
                server: inner.server_id.clone(),
                si,
                share,
                range,
                len,
            });
        }
        let want = range.end - range.start;
        let slot_range = SLOT_HEADER_LEN + range.start..SLOT_HEADER_LEN + range.end;
        let Some(bytes) = inner.get_range(si, share, slot_range, "read share").await? else {
            inner.forget(si, Some(share));
            return Err(inner.not_found(si, share));
        };
        if bytes.len() as u64 != want {
            return Err(inner.error(TahoeError::ShortRead {
                range,
                share,
                si,
                got: bytes.len(),
                want,
            }));
        }
        Ok(bytes)
    }

    async fn list(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        let numbers = self.inner.share_numbers(si).await?;
        let lens = join_all(
            numbers
                .iter()
                .map(|n| self.inner.finished_len(si, ShareNum(*n))),
        )
        .await;
        let mut infos = Vec::new();
        let mut relisted: Option<Vec<u8>> = None;
        for (n, len) in numbers.into_iter().zip(lens) {
            let len = match len {
                Ok(len) => len,
                Err(e) => {
                    // Tahoe answers 500 to a read of a share it is deleting
                    // (a writer dropped just before: its partial share is
                    // being removed). A share missing from a second
                    // listing was deleted under us; any other stays an
                    // error. One second listing at most.
                    if relisted.is_none() {
                        relisted = Some(self.inner.share_numbers(si).await?);
                    }
                    if relisted.as_ref().is_some_and(|now| !now.contains(&n)) {
                        continue;
                    }
                    return Err(e);
                }
            };
            if let Some(len) = len {
                infos.push(ShareInfo {
                    share: ShareNum(n),
                    len,
                });
            }
        }
        Ok(infos)
    }

    async fn delete(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<()> {
        let numbers = self.inner.share_numbers(si).await?;
        self.inner.forget(si, None);
        if numbers.is_empty() {
            return Ok(());
        }
        let ops = numbers
            .into_iter()
            .map(|n| {
                (
                    n,
                    ShareOps {
                        new_length: Some(0),
                        ..ShareOps::default()
                    },
                )
            })
            .collect();
        let answer = self
            .inner
            .rtw(si, secrets, ops, &[], "delete shares")
            .await?;
        if !answer.success {
            return Err(self.inner.error(TahoeError::DeleteRefused { si }));
        }
        self.inner.forget(si, None);
        Ok(())
    }

    async fn create_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        len: u64,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        self.inner.allocate_immutable(si, share, len, secrets).await
    }

    async fn read_immutable(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        self.inner.read_immutable_exact(si, share, range).await
    }

    async fn list_immutable(&self, si: StorageIndex) -> GridResult<Vec<ShareInfo>> {
        self.inner.list_immutable_shares(si).await
    }

    /// Tahoe lets no client delete an immutable share: it goes when its
    /// last lease expires.
    async fn delete_immutable(
        &self,
        _si: StorageIndex,
        _secrets: &ShareSecrets,
    ) -> GridResult<bool> {
        Ok(false)
    }

    /// `PUT /storage/v1/lease/:storage_index`: Tahoe expires shares whose
    /// leases all ran out, so `griddav check` renews ours. 404: the server
    /// holds no share of it.
    async fn renew_lease(&self, si: StorageIndex, secrets: &ShareSecrets) -> GridResult<bool> {
        let headers: Vec<_> = secret_headers(secrets)
            .map_err(|e| self.inner.error(e))?
            .into_iter()
            .filter(|(_, value)| !value.as_bytes().starts_with(b"write-enabler"))
            .collect();
        let reply = self
            .inner
            .send(
                Method::PUT,
                &format!("/storage/v1/lease/{si}"),
                &headers,
                Bytes::new(),
                CBOR_LIMIT,
                "renew lease",
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.inner.expect_status(
            &reply,
            &[StatusCode::NO_CONTENT, StatusCode::OK],
            "renew lease",
        )?;
        Ok(true)
    }
}

/// A share being written into a slot share.
struct TahoeWriter {
    inner: Arc<Inner>,
    si: StorageIndex,
    share: ShareNum,
    secrets: ShareSecrets,
    /// The header `create` wrote: every write tests for it.
    header: SlotHeader,
    /// Share bytes already on the server.
    sent: u64,
    /// Share bytes appended but not sent yet.
    pending: BytesMut,
    done: bool,
}

impl fmt::Debug for TahoeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TahoeWriter")
            .field("server_id", &self.inner.server_id)
            .field("si", &self.si)
            .field("share", &self.share)
            .field("sent", &self.sent)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl TahoeWriter {
    /// Sends the pending bytes, then (for `finish`) the finished header,
    /// in one read-test-write conditional on our header being in place.
    async fn write(
        &mut self,
        finish: Option<SlotHeader>,
        operation: &'static str,
    ) -> GridResult<()> {
        let data = self.pending.split().freeze();
        let data_len = data.len() as u64;
        if data.is_empty() && finish.is_none() {
            return Ok(());
        }
        let mut op = ShareOps::default().test_eq(0, &self.header.encode());
        if !data.is_empty() {
            op = op.write(SLOT_HEADER_LEN + self.sent, data);
        }
        if let Some(finished) = finish {
            op = op.write(0, Bytes::copy_from_slice(&finished.encode()));
        }
        let mut ops = BTreeMap::new();
        ops.insert(self.share.0, op);
        let answer = self
            .inner
            .rtw(
                self.si,
                &self.secrets,
                ops,
                &[(0, SLOT_HEADER_LEN)],
                operation,
            )
            .await?;
        let now = answer
            .data
            .get(&self.share.0)
            .and_then(|reads| reads.first())
            .and_then(|read| SlotHeader::decode(read));
        // A repeated finish whose first copy went through finds the
        // finished header already there.
        if !answer.success && (finish.is_none() || now != finish) {
            return Err(self.inner.error(TahoeError::SlotReplaced {
                operation,
                share: self.share,
                si: self.si,
            }));
        }
        self.sent += data_len;
        Ok(())
    }

    async fn remove(&mut self) -> GridResult<()> {
        self.done = true;
        remove_partial(&self.inner, self.si, self.share, &self.secrets, self.header).await
    }
}

/// Truncates a share being written to length 0 (the server then deletes
/// it), if it still holds our header: a share someone else created after
/// ours was removed is left alone.
async fn remove_partial(
    inner: &Inner,
    si: StorageIndex,
    share: ShareNum,
    secrets: &ShareSecrets,
    header: SlotHeader,
) -> GridResult<()> {
    let mut ops = BTreeMap::new();
    ops.insert(
        share.0,
        ShareOps {
            new_length: Some(0),
            ..ShareOps::default()
        }
        .test_eq(0, &header.encode()),
    );
    // A failed test means the share is gone already or is not ours.
    inner.rtw(si, secrets, ops, &[], "abort share").await?;
    Ok(())
}

#[async_trait]
impl ShareWriter for TahoeWriter {
    async fn append(&mut self, data: Bytes) -> GridResult<()> {
        self.pending.extend_from_slice(&data);
        if self.pending.len() >= FLUSH_AT {
            // On failure the caller drops or aborts the writer, which
            // removes the partial share (not here: a server that timed out
            // would make the caller wait a second time).
            self.write(None, "append").await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, len: u64) -> GridResult<()> {
        let written = self.sent + self.pending.len() as u64;
        if written != len {
            self.remove().await?;
            return Err(GridError::LengthMismatch {
                server: self.inner.server_id.clone(),
                si: self.si,
                share: self.share,
                written,
                expected: len,
            });
        }
        let finished = SlotHeader {
            state: STATE_FINISHED,
            len,
            ..self.header
        };
        // On failure, dropping `self` removes the partial share in the
        // background.
        self.write(Some(finished), "finish").await?;
        self.done = true;
        self.inner.remember(self.si, self.share, len);
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> GridResult<()> {
        self.remove().await
    }
}

impl Drop for TahoeWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let (si, share, secrets, header) = (self.si, self.share, self.secrets.clone(), self.header);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = remove_partial(&inner, si, share, &secrets, header).await {
                        tracing::warn!(error = %e, %si, %share,
                            "cannot remove an abandoned partial share from a Tahoe server");
                    }
                });
            }
            Err(_) => tracing::warn!(%si, %share,
                "writer dropped outside a runtime: its partial share stays on the Tahoe server"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::grid::conformance;

    #[test]
    fn backend_errors_become_grid_errors_once_and_keep_their_kind() {
        let nurl = Nurl::parse(
            "pb://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@127.0.0.1:1/secretswissnum#v=1",
        )
        .unwrap();
        let store = TahoeStore::new(nurl, Some("s1".into()), Timeouts::default()).unwrap();
        let inner = &store.inner;
        let si = StorageIndex::from_bytes([7; 16]);
        let refused = inner.error(TahoeError::Refused { operation: "write" });
        assert!(matches!(
            refused,
            GridError::Refused {
                ref server,
                operation: "write"
            } if server == "s1"
        ));
        let replaced = inner.error(TahoeError::SlotReplaced {
            operation: "write",
            share: ShareNum(2),
            si,
        });
        let GridError::Backend { server, source } = &replaced else {
            panic!("{replaced:?}");
        };
        assert_eq!(server, "s1");
        assert!(matches!(
            source.downcast_ref::<TahoeError>(),
            Some(TahoeError::SlotReplaced {
                share: ShareNum(2),
                ..
            })
        ));
        let short = inner.error(TahoeError::ShortRead {
            range: 0..10,
            share: ShareNum(1),
            si,
            got: 3,
            want: 10,
        });
        let timeout = inner.error(TahoeError::Transport {
            operation: "read share",
            source: TransportError::Timeout(std::time::Duration::from_secs(1)),
        });
        assert!(
            matches!(&timeout, GridError::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
            "{timeout:?}"
        );
        for e in [refused, replaced, short, timeout] {
            assert!(!e.to_string().contains("secretswissnum"), "{e}");
            assert!(!format!("{e:?}").contains("secretswissnum"), "{e:?}");
        }
    }

    #[test]
    fn slot_header_round_trip() {
        let h = SlotHeader {
            state: STATE_FINISHED,
            nonce: [9; 8],
            len: 0x0102_0304_0506,
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..8], b"GDSL\x01\x01\x00\x00");
        assert_eq!(SlotHeader::decode(&bytes), Some(h));
        assert_eq!(h.finished_len(), Some(0x0102_0304_0506));
        let mut bad = bytes;
        bad[5] = 7;
        assert_eq!(SlotHeader::decode(&bad), None);
        assert_eq!(SlotHeader::decode(&bytes[..23]), None);
        assert_eq!(SlotHeader::decode(b"xxxxxxxxxxxxxxxxxxxxxxxx"), None);
    }

    /// The stores of the running harness (`tests/tahoe/harness.sh`); the
    /// tests that call this are `#[ignore]`d and run with `--ignored`.
    fn harness_stores() -> Vec<TahoeStore> {
        let path = std::env::var("GRIDDAV_TAHOE_CONFIG")
            .expect("GRIDDAV_TAHOE_CONFIG must be the config of a running tests/tahoe/harness.sh");
        let config = crate::config::Config::load(Some(std::path::Path::new(&path))).unwrap();
        let stores = config
            .grid
            .servers
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                crate::config::ServerConfig::Tahoe { nurl, .. } => {
                    Some(TahoeStore::new(nurl.clone(), Some(s.id(i)), Timeouts::default()).unwrap())
                }
                _ => None,
            })
            .collect();
        stores
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
    async fn conformance_against_tahoe() {
        let stores = harness_stores();
        stores[0].check().await.unwrap();
        conformance::run_all(&stores[0]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
    async fn immutable_shares_are_allocated_written_finished_and_read() {
        let stores = harness_stores();
        let store = &stores[4];
        let si = conformance::random_si();
        let secrets = conformance::secrets();
        // A share laid out as Tahoe's v1 header says: the URI extension
        // block's offset at 0x20, its length field there.
        let mut share = vec![0u8; 300_000];
        share[..4].copy_from_slice(&1u32.to_be_bytes());
        let ueb_at = 300_000u32 - 4 - 10;
        share[0x20..0x24].copy_from_slice(&ueb_at.to_be_bytes());
        share[ueb_at as usize..ueb_at as usize + 4].copy_from_slice(&10u32.to_be_bytes());
        for (i, b) in share[0x24..ueb_at as usize].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let len = share.len() as u64;
        let mut w = store
            .create_immutable(si, ShareNum(2), len, &secrets)
            .await
            .unwrap();
        for piece in share.chunks(100_000) {
            w.append(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        // All bytes appended, yet not finished: invisible.
        assert!(store.list_immutable(si).await.unwrap().is_empty());
        assert!(store.read_immutable(si, ShareNum(2), 0..4).await.is_err());
        w.finish(len).await.unwrap();
        assert_eq!(
            store.list_immutable(si).await.unwrap(),
            vec![ShareInfo {
                share: ShareNum(2),
                len
            }]
        );
        let middle = store
            .read_immutable(si, ShareNum(2), 1000..250_000)
            .await
            .unwrap();
        assert_eq!(&middle[..], &share[1000..250_000]);
        assert!(store
            .read_immutable(si, ShareNum(2), len - 5..len + 5)
            .await
            .is_err());
        assert!(matches!(
            store.create_immutable(si, ShareNum(2), len, &secrets).await,
            Err(GridError::AlreadyExists { .. })
        ));
        assert!(!store.delete_immutable(si, &secrets).await.unwrap());

        // Aborted, short and long writes leave no share.
        let mut w = store
            .create_immutable(si, ShareNum(3), 1000, &secrets)
            .await
            .unwrap();
        w.append(Bytes::from(vec![1u8; 500])).await.unwrap();
        assert!(w.append(Bytes::from(vec![1u8; 501])).await.is_err());
        assert!(matches!(
            w.finish(500).await,
            Err(GridError::LengthMismatch { .. })
        ));
        let w = store
            .create_immutable(si, ShareNum(4), 1000, &secrets)
            .await
            .unwrap();
        w.abort().await.unwrap();
        let listed: Vec<u8> = store
            .list_immutable(si)
            .await
            .unwrap()
            .iter()
            .map(|i| i.share.0)
            .collect();
        assert_eq!(listed, vec![2]);
        // Both can be allocated again: nothing of them is left.
        for n in [3u8, 4] {
            store
                .create_immutable(si, ShareNum(n), 10, &secrets)
                .await
                .unwrap()
                .abort()
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
    async fn wrong_write_enabler_is_refused() {
        let stores = harness_stores();
        let store = &stores[1];
        let si = conformance::random_si();
        conformance::put(store, si, ShareNum(0), b"mine", 4).await;
        let mut other = conformance::secrets();
        other.write_enabler = [0x44; 32];
        match store.delete(si, &other).await {
            Err(GridError::Refused { .. }) => {}
            r => panic!("delete with another key: expected a refusal, got {r:?}"),
        }
        assert!(store.create(si, ShareNum(1), &other).await.is_err());
        let read = store.read(si, ShareNum(0), 0..4).await.unwrap();
        assert_eq!(&read[..], b"mine");
        store.delete(si, &conformance::secrets()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
    async fn a_record_is_replaced_only_with_its_write_enabler() {
        let stores = harness_stores();
        let store = &stores[3];
        let slot = conformance::random_si();
        let mine = conformance::secrets();
        store
            .put_record(slot, Bytes::from_static(b"one"), &mine)
            .await
            .unwrap();
        let mut other = mine.clone();
        other.write_enabler = [0x44; 32];
        match store
            .put_record(slot, Bytes::from_static(b"two"), &other)
            .await
        {
            Err(GridError::Refused { .. }) => {}
            r => panic!("a record write with another enabler: expected a refusal, got {r:?}"),
        }
        assert_eq!(
            store.get_record(slot).await.unwrap(),
            Some(Bytes::from_static(b"one"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
    async fn wrong_pin_is_refused() {
        let stores = harness_stores();
        let mut nurl = stores[2].nurl().clone();
        nurl.spki_hash[0] ^= 1;
        let store = TahoeStore::new(nurl, None, Timeouts::default()).unwrap();
        let err = store.check().await.unwrap_err();
        let GridError::Backend { source, .. } = &err else {
            panic!("expected the backend's pin mismatch, got {err:?}");
        };
        assert!(
            matches!(
                source.downcast_ref::<TahoeError>(),
                Some(TahoeError::PinMismatch { .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("SPKI"), "{err}");
    }
}
