//! The CHK read capability, `URI:CHK:<key>:<UEB hash>:<k>:<n>:<size>`, in
//! Tahoe's base32 (RFC 3548 alphabet, lower case, no padding).

use std::fmt;

use data_encoding::{Encoding, Specification};
use std::sync::OnceLock;

use super::hashutil::{storage_index, Hash};
use super::ChkError;

/// Tahoe's base32: RFC 4648's alphabet in lower case, no padding.
pub fn base32() -> &'static Encoding {
    static ENC: OnceLock<Encoding> = OnceLock::new();
    ENC.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        // Tahoe rejects base32 whose unused trailing bits are set; so do we.
        spec.check_trailing_bits = true;
        #[allow(clippy::expect_used)]
        spec.encoding().expect("a valid base32 specification")
    })
}

/// A `URI:CHK:` capability: what reads one immutable Tahoe file.
/// The key is a secret; `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct ChkCap {
    /// The AES-128 key of the ciphertext.
    pub key: [u8; 16],
    /// The hash of the URI extension block: verifies the shares.
    pub ueb_hash: Hash,
    /// Shares needed to read the file.
    pub k: u16,
    /// Shares written.
    pub n: u16,
    /// Plaintext bytes of the file.
    pub size: u64,
}

impl fmt::Debug for ChkCap {
    // The key is a secret: never in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChkCap({}-of-{}, {} bytes)", self.k, self.n, self.size)
    }
}

impl ChkCap {
    /// Where the shares are stored: derived from the key so servers never see it.
    pub fn storage_index(&self) -> [u8; 16] {
        storage_index(&self.key)
    }

    /// The capability as Tahoe writes it: `URI:CHK:key:ueb_hash:k:n:size`.
    pub fn to_uri(&self) -> String {
        format!(
            "URI:CHK:{}:{}:{}:{}:{}",
            base32().encode(&self.key),
            base32().encode(&self.ueb_hash),
            self.k,
            self.n,
            self.size
        )
    }

    /// Parses a `URI:CHK:` capability; anything else is [`ChkError::BadCap`].
    pub fn parse(s: &str) -> Result<Self, ChkError> {
        let bad = ChkError::BadCap;
        let rest = s.strip_prefix("URI:CHK:").ok_or(bad.clone())?;
        let parts: Vec<&str> = rest.split(':').collect();
        let [key, ueb, k, n, size] = parts.as_slice() else {
            return Err(bad);
        };
        let key: [u8; 16] = decode_exact(key)?;
        let ueb_hash: Hash = decode_exact(ueb)?;
        let num = |s: &str| -> Result<u64, ChkError> {
            if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ChkError::BadCap);
            }
            s.parse().map_err(|_| ChkError::BadCap)
        };
        let k = u16::try_from(num(k)?).map_err(|_| ChkError::BadCap)?;
        let n = u16::try_from(num(n)?).map_err(|_| ChkError::BadCap)?;
        if k == 0 || k > n || n > 256 {
            return Err(ChkError::BadCap);
        }
        Ok(Self {
            key,
            ueb_hash,
            k,
            n,
            size: num(size)?,
        })
    }
}

/// Files up to this many bytes are literal: Tahoe puts their bytes in the
/// capability itself (`URI_LIT_SIZE_THRESHOLD` of its uploader) and
/// stores no shares.
pub const LIT_THRESHOLD: u64 = 55;

/// The longest literal file we accept from outside (a linked capability):
/// Tahoe makes them only up to [`LIT_THRESHOLD`] bytes.
const MAX_LIT_LEN: usize = 4096;

/// A `URI:LIT:` capability: a small file's bytes, in the capability.
#[derive(Clone, PartialEq, Eq)]
pub struct LitCap {
    /// The file's bytes.
    pub data: Vec<u8>,
}

impl fmt::Debug for LitCap {
    // The bytes are the file's content: never in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LitCap({} bytes)", self.data.len())
    }
}

impl LitCap {
    /// The capability as Tahoe writes it: `URI:LIT:` and the bytes in base32.
    pub fn to_uri(&self) -> String {
        format!("URI:LIT:{}", base32().encode(&self.data))
    }

    /// Parses a `URI:LIT:` capability of at most 4 KiB of data; anything
    /// else is [`ChkError::BadCap`].
    pub fn parse(s: &str) -> Result<Self, ChkError> {
        let rest = s.strip_prefix("URI:LIT:").ok_or(ChkError::BadCap)?;
        if rest.len() > base32().encode_len(MAX_LIT_LEN) {
            return Err(ChkError::BadCap);
        }
        let data = base32()
            .decode(rest.as_bytes())
            .map_err(|_| ChkError::BadCap)?;
        Ok(Self { data })
    }
}

fn decode_exact<const N: usize>(s: &str) -> Result<[u8; N], ChkError> {
    // Only lower-case base32 of exactly N bytes.
    if base32().encode_len(N) != s.len() {
        return Err(ChkError::BadCap);
    }
    base32()
        .decode(s.as_bytes())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(ChkError::BadCap)
}
