//! Tahoe-LAFS immutable shares over the HTTP storage protocol: what stock
//! Tahoe clients read as `URI:CHK:` files.
//!
//! - allocate: `POST /storage/v1/immutable/:si` with the lease secrets and
//!   an upload secret, body `{share-numbers, allocated-size}`; the answer
//!   says which shares were allocated and which the server already has.
//! - write: `PATCH /storage/v1/immutable/:si/:shnum` with `Content-Range`;
//!   the server finishes the share (answers 201) when every allocated byte
//!   is written, so the writer holds back its last bytes until `finish`: a
//!   share never becomes visible short, nor before the engine says so.
//! - abort: `PUT /storage/v1/immutable/:si/:shnum/abort`.
//! - read: `GET /storage/v1/immutable/:si/:shnum` with `Range`.
//! - list: `GET /storage/v1/immutable/:si/shares`.
//!
//! A client cannot delete a finished immutable share: the server frees it
//! when its last lease expires.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use ::http::{HeaderValue, Method, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};

use super::cbor::{decode_allocation, decode_share_set, encode_allocate};
use super::http::CBOR_LIMIT;
use super::{Inner, TahoeError, FLUSH_AT};
use crate::grid::{
    GridError, GridResult, ShareInfo, ShareNum, ShareSecrets, ShareWriter, StorageIndex,
};

/// The headers a request about an immutable upload carries: the upload
/// secret (the per-server write enabler: a secret only this client and
/// this server know, kept by the server only while the upload lasts) and,
/// for the allocation, the lease secrets.
fn headers(
    secrets: &ShareSecrets,
    leases: bool,
) -> Result<Vec<(&'static str, HeaderValue)>, TahoeError> {
    let mut list = vec![("upload-secret", &secrets.write_enabler)];
    if leases {
        list.push(("lease-renew-secret", &secrets.lease_renew));
        list.push(("lease-cancel-secret", &secrets.lease_cancel));
    }
    list.into_iter()
        .map(|(kind, secret)| {
            HeaderValue::try_from(format!("{kind} {}", STANDARD.encode(secret)))
                .map(|value| ("x-tahoe-authorization", value))
                .map_err(|source| TahoeError::Header {
                    what: "secret",
                    source,
                })
        })
        .collect()
}

impl Inner {
    pub(super) async fn allocate_immutable(
        self: &Arc<Self>,
        si: StorageIndex,
        share: ShareNum,
        len: u64,
        secrets: &ShareSecrets,
    ) -> GridResult<Box<dyn ShareWriter>> {
        const OP: &str = "allocate immutable share";
        let headers = headers(secrets, true).map_err(|e| self.error(e))?;
        let path = format!("/storage/v1/immutable/{si}");
        let reply = self
            .send(
                Method::POST,
                &path,
                &headers,
                encode_allocate(&[share.0], len),
                CBOR_LIMIT,
                OP,
            )
            .await?;
        self.expect_status(&reply, &[StatusCode::OK, StatusCode::CREATED], OP)?;
        let allocation = decode_allocation(&reply.body).map_err(|source| {
            self.error(TahoeError::BadAnswer {
                operation: OP,
                source,
            })
        })?;
        if allocation.already_have.contains(&share.0) {
            return Err(GridError::AlreadyExists {
                server: self.server_id.clone(),
                si,
                share,
            });
        }
        if !allocation.allocated.contains(&share.0) {
            return Err(self.error(TahoeError::NotAllocated { si, share, len }));
        }
        Ok(Box::new(ImmutableWriter {
            inner: Arc::clone(self),
            si,
            share,
            secrets: secrets.clone(),
            allocated: len,
            sent: 0,
            pending: BytesMut::new(),
            done: false,
        }))
    }

    pub(super) async fn read_immutable_range(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
        operation: &'static str,
    ) -> GridResult<Option<Bytes>> {
        if range.is_empty() {
            return Ok(Some(Bytes::new()));
        }
        let path = format!("/storage/v1/immutable/{si}/{}", share.0);
        let value = format!("bytes={}-{}", range.start, range.end - 1);
        let range_header = HeaderValue::try_from(value).map_err(|source| {
            self.error(TahoeError::Header {
                what: "range",
                source,
            })
        })?;
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
            // Tahoe's answer to a range starting at or past the end.
            StatusCode::NO_CONTENT => Ok(Some(Bytes::new())),
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => {
                if reply.body.len() > want {
                    return Err(self.error(TahoeError::TooLong {
                        operation,
                        got: reply.body.len(),
                        want: want as u64,
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

    pub(super) async fn read_immutable_exact(
        &self,
        si: StorageIndex,
        share: ShareNum,
        range: Range<u64>,
    ) -> GridResult<Bytes> {
        let want = range.end.saturating_sub(range.start);
        let bytes = self
            .read_immutable_range(si, share, range.clone(), "read immutable share")
            .await?
            .ok_or_else(|| self.not_found(si, share))?;
        if bytes.len() as u64 != want {
            return Err(self.error(TahoeError::ShortRead {
                range,
                share,
                si,
                got: bytes.len(),
                want,
            }));
        }
        Ok(bytes)
    }

    pub(super) async fn list_immutable_shares(
        &self,
        si: StorageIndex,
    ) -> GridResult<Vec<ShareInfo>> {
        const OP: &str = "list immutable shares";
        let path = format!("/storage/v1/immutable/{si}/shares");
        let reply = self
            .send(Method::GET, &path, &[], Bytes::new(), CBOR_LIMIT, OP)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        self.expect_status(&reply, &[StatusCode::OK], OP)?;
        let numbers = decode_share_set(&reply.body).map_err(|source| {
            self.error(TahoeError::BadAnswer {
                operation: OP,
                source,
            })
        })?;
        let lens =
            futures::future::join_all(numbers.iter().map(|n| self.share_len(si, ShareNum(*n))))
                .await;
        let mut infos = Vec::with_capacity(numbers.len());
        for (n, len) in numbers.into_iter().zip(lens) {
            if let Some(len) = len? {
                infos.push(ShareInfo {
                    share: ShareNum(n),
                    len,
                });
            }
        }
        Ok(infos)
    }

    /// A finished immutable share's length. The server tells it nowhere,
    /// so it is read from the share's own header (Tahoe's immutable share
    /// layout, version 1 or 2): the offset of the URI extension block,
    /// then that block's length field. `None`: the share went away.
    async fn share_len(&self, si: StorageIndex, share: ShareNum) -> GridResult<Option<u64>> {
        const OP: &str = "read immutable share header";
        let Some(head) = self.read_immutable_range(si, share, 0..0x44, OP).await? else {
            return Ok(None);
        };
        let bad =
            |reason: &'static str| self.error(TahoeError::BadShareHeader { si, share, reason });
        let field = |at: usize, size: usize| -> Option<u64> {
            let bytes = head.get(at..at + size)?;
            Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        };
        // Version, then (after the block and data sizes) six offsets; the
        // sixth is the URI extension block's.
        let (ueb_offset, field_len) = match field(0, 4) {
            Some(1) => (field(0x0c + 5 * 4, 4), 4u64),
            Some(2) => (field(0x14 + 5 * 8, 8), 8u64),
            _ => return Err(bad("unknown share version")),
        };
        let ueb_offset = ueb_offset.ok_or_else(|| bad("short header"))?;
        let end = ueb_offset
            .checked_add(field_len)
            .ok_or_else(|| bad("offset overflows"))?;
        let Some(len_field) = self
            .read_immutable_range(si, share, ueb_offset..end, OP)
            .await?
        else {
            return Ok(None);
        };
        if len_field.len() as u64 != field_len {
            return Err(bad("share ends inside its URI extension length"));
        }
        let ueb_len = len_field
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        end.checked_add(ueb_len)
            .map(Some)
            .ok_or_else(|| bad("length overflows"))
    }
}

/// An immutable share being written. Its length is fixed at allocation.
pub(super) struct ImmutableWriter {
    inner: Arc<Inner>,
    si: StorageIndex,
    share: ShareNum,
    secrets: ShareSecrets,
    allocated: u64,
    /// Bytes already on the server.
    sent: u64,
    /// Bytes appended but not sent yet.
    pending: BytesMut,
    done: bool,
}

impl fmt::Debug for ImmutableWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImmutableWriter")
            .field("server_id", &self.inner.server_id)
            .field("si", &self.si)
            .field("share", &self.share)
            .field("allocated", &self.allocated)
            .field("sent", &self.sent)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ImmutableWriter {
    fn length_mismatch(&self, written: u64, expected: u64) -> GridError {
        GridError::LengthMismatch {
            server: self.inner.server_id.clone(),
            si: self.si,
            share: self.share,
            written,
            expected,
        }
    }

    /// Sends `pending` at its offset; `last`: these are the share's final
    /// bytes, after which the server must say the share is finished.
    async fn send_pending(&mut self, last: bool) -> GridResult<()> {
        let op: &'static str = if last {
            "finish immutable share"
        } else {
            "write immutable share"
        };
        let data = self.pending.split().freeze();
        if data.is_empty() {
            return Ok(());
        }
        let end = self.sent + data.len() as u64;
        let headers = {
            let mut h = headers(&self.secrets, false).map_err(|e| self.inner.error(e))?;
            let range = HeaderValue::try_from(format!("bytes {}-{}/*", self.sent, end - 1))
                .map_err(|source| {
                    self.inner.error(TahoeError::Header {
                        what: "content-range",
                        source,
                    })
                })?;
            h.push(("content-range", range));
            h
        };
        let path = format!("/storage/v1/immutable/{}/{}", self.si, self.share.0);
        let reply = self
            .inner
            .send(Method::PATCH, &path, &headers, data, CBOR_LIMIT, op)
            .await?;
        let ok: &[StatusCode] = if last {
            &[StatusCode::CREATED]
        } else {
            &[StatusCode::OK]
        };
        self.inner.expect_status(&reply, ok, op)?;
        self.sent = end;
        Ok(())
    }

    async fn remove(&mut self) -> GridResult<()> {
        self.done = true;
        abort_upload(&self.inner, self.si, self.share, &self.secrets).await
    }
}

/// Asks the server to drop an unfinished upload. 404 (gone already: the
/// server's own time limit, or an earlier abort) is not an error.
async fn abort_upload(
    inner: &Inner,
    si: StorageIndex,
    share: ShareNum,
    secrets: &ShareSecrets,
) -> GridResult<()> {
    const OP: &str = "abort immutable share";
    let headers = headers(secrets, false).map_err(|e| inner.error(e))?;
    let path = format!("/storage/v1/immutable/{si}/{}/abort", share.0);
    let reply = inner
        .send(Method::PUT, &path, &headers, Bytes::new(), CBOR_LIMIT, OP)
        .await?;
    if reply.status == StatusCode::NOT_FOUND {
        return Ok(());
    }
    inner.expect_status(&reply, &[StatusCode::OK, StatusCode::NO_CONTENT], OP)
}

#[async_trait::async_trait]
impl ShareWriter for ImmutableWriter {
    async fn append(&mut self, data: Bytes) -> GridResult<()> {
        let total = self.sent + self.pending.len() as u64 + data.len() as u64;
        if total > self.allocated {
            return Err(self.length_mismatch(total, self.allocated));
        }
        self.pending.extend_from_slice(&data);
        // The last bytes wait for `finish`: they make the share final.
        if self.pending.len() >= FLUSH_AT && total < self.allocated {
            self.send_pending(false).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, len: u64) -> GridResult<()> {
        let written = self.sent + self.pending.len() as u64;
        if written != len || len != self.allocated {
            self.remove().await?;
            return Err(self.length_mismatch(written, self.allocated.min(len)));
        }
        // On failure, dropping `self` aborts the upload in the background.
        self.send_pending(true).await?;
        self.done = true;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> GridResult<()> {
        self.remove().await
    }
}

impl Drop for ImmutableWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let (si, share, secrets) = (self.si, self.share, self.secrets.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = abort_upload(&inner, si, share, &secrets).await {
                        tracing::warn!(error = %e, %si, %share,
                            "cannot abort an abandoned immutable upload; the server drops it after 30 minutes");
                    }
                });
            }
            Err(_) => tracing::warn!(%si, %share,
                "writer dropped outside a runtime: the Tahoe server drops the upload after 30 minutes"),
        }
    }
}
