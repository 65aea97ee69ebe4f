//! The URI extension block (allmydata/uri.py `pack_extension`): the file's
//! parameters and hash-tree roots, `key:netstring(value)` pairs in sorted key
//! order. Its tagged hash is in the capability.

use std::collections::BTreeMap;

use super::hashutil::Hash;
use super::params::ChkParams;
use super::ChkError;

/// A UEB longer than this is not one a Tahoe uploader wrote (they are ~450
/// bytes); refuse it before reading it.
pub const MAX_UEB_LEN: u64 = 64 * 1024;

/// The URI extension block: what a CHK file's shares carry about the
/// whole file, vouched for by the hash in the capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ueb {
    /// The file's shape.
    pub params: ChkParams,
    /// Flat hash of the whole ciphertext (`crypttext_hash`).
    pub crypttext_hash: Hash,
    /// Root of the tree over segment hashes (`crypttext_root_hash`).
    pub crypttext_root_hash: Hash,
    /// Root of the tree over the shares' block-tree roots.
    pub share_root_hash: Hash,
}

impl Ueb {
    /// The UEB's bytes as Tahoe writes them: sorted `key:netstring` fields.
    pub fn pack(&self) -> Vec<u8> {
        let p = &self.params;
        let mut fields: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        fields.insert("codec_name", b"crs".to_vec());
        fields.insert("codec_params", p.codec_params().into_bytes());
        fields.insert("tail_codec_params", p.tail_codec_params().into_bytes());
        fields.insert("size", p.size.to_string().into_bytes());
        fields.insert("segment_size", p.segment_size.to_string().into_bytes());
        fields.insert("num_segments", p.num_segments.to_string().into_bytes());
        fields.insert("needed_shares", p.k.to_string().into_bytes());
        fields.insert("total_shares", p.n.to_string().into_bytes());
        fields.insert("crypttext_hash", self.crypttext_hash.to_vec());
        fields.insert("crypttext_root_hash", self.crypttext_root_hash.to_vec());
        fields.insert("share_root_hash", self.share_root_hash.to_vec());
        let mut out = Vec::with_capacity(512);
        for (k, v) in fields {
            out.extend_from_slice(k.as_bytes());
            out.push(b':');
            out.extend_from_slice(&super::hashutil::netstring(&v));
        }
        out
    }

    /// Parses a UEB as Tahoe's downloader does: the file's shape comes from
    /// the capability's k, n and size plus the UEB's segment size; unknown
    /// keys (older uploaders wrote plaintext hashes) are ignored; every field
    /// this reader relies on must be present and well formed.
    pub fn parse(data: &[u8], k: u16, n: u16, size: u64) -> Result<Self, ChkError> {
        let fields = unpack(data)?;
        let get = |key: &'static str| fields.get(key).ok_or(ChkError::BadUeb("missing field"));
        let num = |key: &'static str| -> Result<u64, ChkError> {
            let v = get(key)?;
            if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
                return Err(ChkError::BadUeb("bad number"));
            }
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ChkError::BadUeb("bad number"))
        };
        let hash = |key: &'static str| -> Result<Hash, ChkError> {
            get(key)?
                .as_slice()
                .try_into()
                .map_err(|_| ChkError::BadUeb("hash is not 32 bytes"))
        };
        let params = ChkParams::new(size, k, n, num("segment_size")?)
            .map_err(|_| ChkError::BadUeb("impossible segment size"))?;
        // Redundant fields must agree with the capability: a UEB that
        // disagrees was not written for this file.
        if num("size")? != size
            || num("needed_shares")? != u64::from(k)
            || num("total_shares")? != u64::from(n)
            || num("num_segments")? != params.num_segments
        {
            return Err(ChkError::BadUeb("fields disagree with the capability"));
        }
        if let Some(name) = fields.get("codec_name") {
            if name != b"crs" {
                return Err(ChkError::BadUeb("codec is not crs"));
            }
        }
        Ok(Self {
            params,
            crypttext_hash: hash("crypttext_hash")?,
            crypttext_root_hash: hash("crypttext_root_hash")?,
            share_root_hash: hash("share_root_hash")?,
        })
    }
}

/// `unpack_extension`, strict: rejects trailing garbage and bad netstrings.
pub fn unpack(mut data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ChkError> {
    let bad = ChkError::BadUeb("malformed");
    let mut out = BTreeMap::new();
    while !data.is_empty() {
        let colon = data.iter().position(|&b| b == b':').ok_or(bad.clone())?;
        let key = std::str::from_utf8(&data[..colon]).map_err(|_| bad.clone())?;
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-')
        {
            return Err(bad);
        }
        data = &data[colon + 1..];
        let colon = data.iter().position(|&b| b == b':').ok_or(bad.clone())?;
        let digits = &data[..colon];
        if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(bad.clone())?;
        data = &data[colon + 1..];
        if data.len() < len + 1 || data[len] != b',' {
            return Err(bad);
        }
        if out.insert(key.to_string(), data[..len].to_vec()).is_some() {
            return Err(ChkError::BadUeb("duplicate field"));
        }
        data = &data[len + 1..];
    }
    Ok(out)
}
