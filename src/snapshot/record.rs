//! The root record: a few hundred bytes, on every storage server, naming
//! the newest namespace copies. Encrypted and authenticated with a key
//! derived from the root secret (ChaCha20-Poly1305, ring), so a server
//! learns nothing from it and cannot forge or alter one; the sequence
//! number lets a reader take the newest of the records it finds.
//!
//! ```text
//! record   = "GDRR" | version 1 | nonce (12) | sealed payload | tag (16)
//! payload  = version 1 | seq (u64 BE) | count (u8) | count * copy   (newest first)
//! copy     = seq (u64 BE) | taken at, ms since the epoch (u64 BE) | cap length (u16 BE) | cap
//! ```
//!
//! Each server keeps it in a slot whose name and write enabler derive from
//! the root secret and the server's identity: one server's slot name or
//! enabler opens nothing on another.

use std::time::Duration;

use bytes::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

use super::secret::RootSecret;
use crate::engine::crypto::tagged_hash;
use crate::grid::{Grid, ShareSecrets, StorageIndex, MAX_RECORD_LEN};

// Do not change: on-grid format.
const MAGIC: &[u8; 4] = b"GDRR";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 5;
const TAG_LEN: usize = 16;
mod tag {
    pub(crate) const KEY: &str = "griddav/v1/root-record-key";
    pub(crate) const SLOT: &str = "griddav/v1/root-record-slot";
    pub(crate) const WRITE_ENABLER: &str = "griddav/v1/root-record-write-enabler";
    pub(crate) const LEASE_RENEW: &str = "griddav/v1/root-record-lease-renew";
    pub(crate) const LEASE_CANCEL: &str = "griddav/v1/root-record-lease-cancel";
}

/// Copies a record names at most (what fits the record's size limit with
/// room to spare).
pub const MAX_COPIES: usize = 64;

/// How long one server may take to store or return a record.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// One namespace copy in the grid.
#[derive(Clone, PartialEq, Eq)]
pub struct CopyEntry {
    /// The record sequence number that first named it.
    pub seq: u64,
    /// When the copy was taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// The capability of the copy (a secret).
    pub cap: String,
}

impl std::fmt::Debug for CopyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyEntry")
            .field("seq", &self.seq)
            .field("taken_at_ms", &self.taken_at_ms)
            .finish_non_exhaustive()
    }
}

/// What a root record says.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RootRecord {
    /// Increases with every record written: the newest record wins.
    pub seq: u64,
    /// Newest first.
    pub copies: Vec<CopyEntry>,
}

/// Why bytes from a server are not a root record of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Bad magic or version: not a root record.
    #[error("not a root record (bad magic or version)")]
    NotARecord,
    /// The AEAD tag does not verify: another root secret, or altered bytes.
    #[error("root record does not verify: another root secret, or altered")]
    DoesNotVerify,
    /// The record's fields are out of shape.
    #[error("root record is malformed: {0}")]
    Malformed(&'static str),
    /// The record is past the length limit.
    #[error("root record names too many copies or is too long")]
    TooLong,
}

/// The slot of the root record on the server with `identity`.
pub fn slot(secret: &RootSecret, identity: &[u8]) -> StorageIndex {
    let hash = tagged_hash(tag::SLOT, &[secret.as_bytes(), identity]);
    let mut si = [0u8; StorageIndex::LEN];
    si.copy_from_slice(&hash[..StorageIndex::LEN]);
    StorageIndex::from_bytes(si)
}

/// The secrets guarding the root record's slot on the server with
/// `identity`.
pub fn slot_secrets(secret: &RootSecret, identity: &[u8]) -> ShareSecrets {
    let s = secret.as_bytes();
    ShareSecrets {
        write_enabler: tagged_hash(tag::WRITE_ENABLER, &[s, identity]),
        lease_renew: tagged_hash(tag::LEASE_RENEW, &[s, identity]),
        lease_cancel: tagged_hash(tag::LEASE_CANCEL, &[s, identity]),
    }
}

fn key(secret: &RootSecret) -> Result<LessSafeKey, RecordError> {
    let bytes = tagged_hash(tag::KEY, &[secret.as_bytes()]);
    UnboundKey::new(&CHACHA20_POLY1305, &bytes)
        .map(LessSafeKey::new)
        .map_err(|_| RecordError::Malformed("key"))
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h
}

impl RootRecord {
    fn payload(&self) -> Result<Vec<u8>, RecordError> {
        if self.copies.len() > MAX_COPIES {
            return Err(RecordError::TooLong);
        }
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(u8::try_from(self.copies.len()).map_err(|_| RecordError::TooLong)?);
        for copy in &self.copies {
            out.extend_from_slice(&copy.seq.to_be_bytes());
            out.extend_from_slice(&copy.taken_at_ms.to_be_bytes());
            let len = u16::try_from(copy.cap.len()).map_err(|_| RecordError::TooLong)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(copy.cap.as_bytes());
        }
        Ok(out)
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut reader = Reader(bytes);
        if reader.u8()? != VERSION {
            return Err(RecordError::Malformed("payload version"));
        }
        let seq = reader.u64()?;
        let count = reader.u8()?;
        let mut copies = Vec::with_capacity(usize::from(count).min(MAX_COPIES));
        for _ in 0..count {
            let seq = reader.u64()?;
            let taken_at_ms = reader.u64()?;
            let len = usize::from(reader.u16()?);
            let cap = std::str::from_utf8(reader.take(len)?)
                .map_err(|_| RecordError::Malformed("capability is not UTF-8"))?
                .to_owned();
            copies.push(CopyEntry {
                seq,
                taken_at_ms,
                cap,
            });
        }
        if !reader.0.is_empty() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        Ok(RootRecord { seq, copies })
    }

    /// The record sealed with `secret`'s key and a fresh random nonce.
    pub fn seal(&self, secret: &RootSecret) -> Result<Bytes, RecordError> {
        let mut sealed = self.payload()?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        key(secret)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header()),
                &mut sealed,
            )
            .map_err(|_| RecordError::TooLong)?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(&header());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        if out.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong);
        }
        Ok(Bytes::from(out))
    }

    /// Verifies and decrypts a record; nothing is parsed before it verifies.
    pub fn open(bytes: &[u8], secret: &RootSecret) -> Result<Self, RecordError> {
        if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || bytes[..HEADER_LEN] != header() {
            return Err(RecordError::NotARecord);
        }
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        let mut sealed = bytes[HEADER_LEN + NONCE_LEN..].to_vec();
        let plain = key(secret)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header()),
                &mut sealed,
            )
            .map_err(|_| RecordError::DoesNotVerify)?;
        Self::from_payload(plain)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

/// Stores `record` on every server of `grid`, all at once. Returns how
/// many servers stored it and the errors of the others (each naming its
/// server; none holds a secret).
pub async fn publish(
    grid: &Grid,
    secret: &RootSecret,
    record: &RootRecord,
) -> Result<(usize, Vec<String>), RecordError> {
    let sealed = record.seal(secret)?;
    let results = futures::future::join_all(grid.servers().iter().map(|server| {
        let sealed = sealed.clone();
        async move {
            let id = server.identity();
            let secrets = slot_secrets(secret, id);
            let put = server.put_record(slot(secret, id), sealed, &secrets);
            match tokio::time::timeout(SERVER_TIMEOUT, put).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "{}: no answer within {SERVER_TIMEOUT:?}",
                    server.server_id()
                )),
            }
        }
    }))
    .await;
    let mut stored = 0;
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(()) => stored += 1,
            Err(e) => errors.push(e),
        }
    }
    Ok((stored, errors))
}

/// What reading the root records of a grid found.
#[derive(Debug, Default)]
pub struct Found {
    /// The newest record that verified, if any.
    pub newest: Option<RootRecord>,
    /// Servers that answered with a record that verified.
    pub verified: usize,
    /// Servers that answered they have none.
    pub empty: usize,
    /// One line per server that could not be asked or whose record did
    /// not verify.
    pub problems: Vec<String>,
}

/// Reads the root record of every server and keeps the newest that
/// verifies with `secret`.
pub async fn read_newest(grid: &Grid, secret: &RootSecret) -> Found {
    let answers = futures::future::join_all(grid.servers().iter().map(|server| async move {
        let get = server.get_record(slot(secret, server.identity()));
        let answer = match tokio::time::timeout(SERVER_TIMEOUT, get).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {SERVER_TIMEOUT:?}")),
        };
        (server.server_id().to_owned(), answer)
    }))
    .await;
    let mut found = Found::default();
    for (server, answer) in answers {
        match answer {
            Ok(None) => found.empty += 1,
            Ok(Some(bytes)) => match RootRecord::open(&bytes, secret) {
                Ok(record) => {
                    found.verified += 1;
                    if found.newest.as_ref().is_none_or(|n| record.seq > n.seq) {
                        found.newest = Some(record);
                    }
                }
                Err(e) => found.problems.push(format!("{server}: {e}")),
            },
            Err(e) => found.problems.push(format!("{server}: {e}")),
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::grid::{MemoryStore, ShareStore};
    use std::sync::Arc;

    fn record(seq: u64, copies: usize) -> RootRecord {
        RootRecord {
            seq,
            copies: (0..copies as u64)
                .map(|i| CopyEntry {
                    seq: seq - i,
                    taken_at_ms: 1_800_000_000_000 + i,
                    cap: format!("griddav:1:{}:{}:3:10:{}", "a".repeat(52), "b".repeat(52), i),
                })
                .collect(),
        }
    }

    #[test]
    fn sealed_records_open_only_with_their_secret_and_unaltered() {
        let secret = RootSecret::from_bytes([5; 32]);
        let r = record(42, 10);
        let sealed = r.seal(&secret).unwrap();
        assert!(sealed.len() < 2000, "{}", sealed.len());
        assert_eq!(RootRecord::open(&sealed, &secret).unwrap(), r);
        assert_ne!(sealed, r.seal(&secret).unwrap(), "a fresh nonce each time");
        let other = RootSecret::from_bytes([6; 32]);
        assert_eq!(
            RootRecord::open(&sealed, &other),
            Err(RecordError::DoesNotVerify)
        );
        for at in [5, 20, sealed.len() - 1] {
            let mut bad = sealed.to_vec();
            bad[at] ^= 1;
            assert_eq!(
                RootRecord::open(&bad, &secret),
                Err(RecordError::DoesNotVerify)
            );
        }
        assert_eq!(
            RootRecord::open(&sealed[..20], &secret),
            Err(RecordError::NotARecord)
        );
        assert_eq!(
            RootRecord::open(b"nonsense", &secret),
            Err(RecordError::NotARecord)
        );
        // The plaintext is not visible.
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("griddav:1:"));
        assert!(record(100, MAX_COPIES + 1).seal(&secret).is_err());
    }

    #[test]
    fn slots_and_enablers_differ_per_server_and_secret() {
        let a = RootSecret::from_bytes([1; 32]);
        let b = RootSecret::from_bytes([2; 32]);
        assert_ne!(slot(&a, b"s1"), slot(&a, b"s2"));
        assert_ne!(slot(&a, b"s1"), slot(&b, b"s1"));
        assert_eq!(slot(&a, b"s1"), slot(&a, b"s1"));
        assert_ne!(
            slot_secrets(&a, b"s1").write_enabler,
            slot_secrets(&a, b"s2").write_enabler
        );
    }

    #[tokio::test]
    async fn the_newest_verifying_record_wins() {
        let stores: Vec<MemoryStore> = (0..4).map(|i| MemoryStore::new(format!("m{i}"))).collect();
        let grid = Grid::new(
            stores
                .iter()
                .map(|s| Arc::new(s.clone()) as Arc<dyn ShareStore>)
                .collect(),
        );
        let secret = RootSecret::from_bytes([9; 32]);
        let found = read_newest(&grid, &secret).await;
        assert!(found.newest.is_none());
        assert_eq!(found.empty, 4);
        let (stored, errors) = publish(&grid, &secret, &record(1, 1)).await.unwrap();
        assert_eq!((stored, errors.len()), (4, 0));
        // A newer record reaches two servers only; a forged one a third.
        let newer = record(2, 2);
        let sealed = newer.seal(&secret).unwrap();
        for s in &stores[..2] {
            let id = s.identity();
            s.put_record(
                slot(&secret, id),
                sealed.clone(),
                &slot_secrets(&secret, id),
            )
            .await
            .unwrap();
        }
        let forged = record(99, 1)
            .seal(&RootSecret::from_bytes([0; 32]))
            .unwrap();
        let id = stores[2].identity();
        stores[2]
            .put_record(slot(&secret, id), forged, &slot_secrets(&secret, id))
            .await
            .unwrap();
        let found = read_newest(&grid, &secret).await;
        assert_eq!(found.newest, Some(newer));
        assert_eq!(found.verified, 3);
        assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
        // Another secret finds nothing of this one.
        let found = read_newest(&grid, &RootSecret::from_bytes([8; 32])).await;
        assert!(found.newest.is_none());
        assert_eq!(found.empty, 4);
    }
}
