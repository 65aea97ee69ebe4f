//! Tahoe-LAFS's tagged hashes (allmydata/util/hashutil.py): SHA-256d
//! (SHA-256 of SHA-256, against length extension) over the tag as a
//! netstring, then the value.

use sha2::{Digest, Sha256};

// Do not change: these tags are Tahoe-LAFS's, part of its on-disk format.
/// Tag of the storage index derived from the AES key. Do not change: Tahoe's format.
pub const STORAGE_INDEX_TAG: &[u8] = b"allmydata_immutable_key_to_storage_index_v1";
/// Tag of a block hash. Do not change: Tahoe's format.
pub const BLOCK_TAG: &[u8] = b"allmydata_encoded_subshare_v1";
/// Tag of the URI extension block's hash. Do not change: Tahoe's format.
pub const UEB_TAG: &[u8] = b"allmydata_uri_extension_v1";
/// Tag of the flat hash of the whole ciphertext. Do not change: Tahoe's format.
pub const CIPHERTEXT_TAG: &[u8] = b"allmydata_crypttext_v1";
/// Tag of a ciphertext segment's hash. Do not change: Tahoe's format.
pub const CIPHERTEXT_SEGMENT_TAG: &[u8] = b"allmydata_crypttext_segment_v1";
/// Tag of a padding leaf of a Merkle tree. Do not change: Tahoe's format.
pub const MERKLE_EMPTY_LEAF_TAG: &[u8] = b"Merkle tree empty leaf";
/// Tag of an internal Merkle node. Do not change: Tahoe's format.
pub const MERKLE_INTERNAL_NODE_TAG: &[u8] = b"Merkle tree internal node";

/// A SHA-256d output (Tahoe hashes twice).
pub type Hash = [u8; 32];

/// `netstring(s)`: `len:s,`.
pub fn netstring(s: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", s.len()).into_bytes();
    out.extend_from_slice(s);
    out.push(b',');
    out
}

/// A streaming `tagged_hasher(tag)`.
#[derive(Clone)]
pub struct TaggedHasher(Sha256);

impl TaggedHasher {
    /// A hasher with `netstring(tag)` already fed in.
    pub fn new(tag: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(netstring(tag));
        Self(h)
    }

    /// Feeds more of the value (no netstring framing).
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// SHA-256 of the SHA-256: Tahoe's double hash.
    pub fn finish(self) -> Hash {
        Sha256::digest(self.0.finalize()).into()
    }
}

/// `tagged_hash(tag, val)`: SHA-256d of `netstring(tag) || val`.
pub fn tagged_hash(tag: &[u8], val: &[u8]) -> Hash {
    let mut h = TaggedHasher::new(tag);
    h.update(val);
    h.finish()
}

/// `tagged_pair_hash(tag, a, b)`: SHA-256d of the three netstrings.
pub fn tagged_pair_hash(tag: &[u8], a: &[u8], b: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(netstring(tag));
    h.update(netstring(a));
    h.update(netstring(b));
    Sha256::digest(h.finalize()).into()
}

/// The 16-byte storage index of a CHK file from its AES key.
pub fn storage_index(key: &[u8; 16]) -> [u8; 16] {
    let h = tagged_hash(STORAGE_INDEX_TAG, key);
    let mut si = [0u8; 16];
    si.copy_from_slice(&h[..16]);
    si
}

/// A block's leaf in its share's block tree.
pub fn block_hash(block: &[u8]) -> Hash {
    tagged_hash(BLOCK_TAG, block)
}

/// The hash a capability carries: of the packed UEB.
pub fn uri_extension_hash(ueb: &[u8]) -> Hash {
    tagged_hash(UEB_TAG, ueb)
}
