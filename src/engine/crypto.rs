//! Keys, the storage index, tagged hashes, and AES-256-CTR at any offset.
//!
//! Every hash in the format is SHA-256 over a one-byte tag length, the tag,
//! and the data, except a block's hash in format version 2, which is BLAKE3
//! over the same encoding. Each use has its own tag, so a hash made for one
//! use can never be presented as another (a block hash as a tree node, say).

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use sha2::{Digest, Sha256};

use crate::grid::{ShareSecrets, StorageIndex};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// The tags of version 1. Do not change: on-disk format.
pub mod tag {
    /// A block in format version 1, hashed with SHA-256.
    pub const BLOCK: &str = "griddav/v1/block";
    /// A block in format version 2, hashed with BLAKE3.
    pub const BLOCK_V2: &str = "griddav/v2/block";
    /// An internal node of a hash tree.
    pub const NODE: &str = "griddav/v1/node";
    /// Padding leaves of a hash tree up to a power of two.
    pub const PAD: &str = "griddav/v1/pad";
    /// A segment, from its k data-block hashes (ciphertext-tree leaf).
    pub const SEGMENT: &str = "griddav/v1/segment";
    /// The trailer, whose hash the capability carries.
    pub const TRAILER: &str = "griddav/v1/trailer";
    /// The storage index, derived from the file key so servers never see the key.
    pub const STORAGE_INDEX: &str = "griddav/v1/storage-index";
    /// The write enabler of files written before secrets were per server:
    /// the same on every server; only to delete such files.
    pub const WRITE_ENABLER: &str = "griddav/v1/write-enabler";
    /// The lease-renewal secret of such files.
    pub const LEASE_RENEW: &str = "griddav/v1/lease-renew";
    /// The lease-cancel secret of such files.
    pub const LEASE_CANCEL: &str = "griddav/v1/lease-cancel";
    /// The write enabler one server sees: from the file key and that
    /// server's identity, so it is no use on another server.
    pub const SERVER_WRITE_ENABLER: &str = "griddav/v1/server-write-enabler";
    /// The lease-renewal secret one server sees.
    pub const SERVER_LEASE_RENEW: &str = "griddav/v1/server-lease-renew";
    /// The lease-cancel secret one server sees.
    pub const SERVER_LEASE_CANCEL: &str = "griddav/v1/server-lease-cancel";
}

/// A SHA-256 hasher with a tag already fed in.
pub fn tagged_hasher(tag: &str) -> Sha256 {
    let mut hasher = Sha256::new();
    // Tags are short constants; the length byte makes the encoding prefix-free.
    let len = u8::try_from(tag.len()).unwrap_or(u8::MAX);
    hasher.update([len]);
    hasher.update(tag.as_bytes());
    hasher
}

/// SHA-256(len(tag) || tag || parts...).
pub fn tagged_hash(tag: &str, parts: &[&[u8]]) -> Hash {
    let mut hasher = tagged_hasher(tag);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// BLAKE3(len(tag) || tag || data), 32 bytes: the block hash of format
/// version 2. BLAKE3 rather than SHA-256 because an upload hashes every
/// block of all N shares (3.3 times the file at 3-of-10): measured on this
/// project's machine (AVX-512, SHA-NI), 6.4 GB per CPU-second against
/// SHA-256's 1.5, on 341 KiB blocks.
pub fn tagged_blake3(tag: &str, data: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    let len = u8::try_from(tag.len()).unwrap_or(u8::MAX);
    hasher.update(&[len]);
    hasher.update(tag.as_bytes());
    hasher.update(data);
    *hasher.finalize().as_bytes()
}

/// The 32-byte AES-256 key of one file version. Random, never convergent:
/// a convergent key would need the whole file before the first byte is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey([u8; 32]);

impl FileKey {
    /// A fresh key from the operating system's random source.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// A key from a capability the caller parsed.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes: a secret, never to be logged.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 16 bytes of the tagged hash of the key.
    pub fn storage_index(&self) -> StorageIndex {
        let hash = tagged_hash(tag::STORAGE_INDEX, &[&self.0]);
        let mut si = [0u8; StorageIndex::LEN];
        si.copy_from_slice(&hash[..StorageIndex::LEN]);
        StorageIndex::from_bytes(si)
    }

    /// The secrets that protect this file's shares on the server whose
    /// [`crate::grid::ShareStore::identity`] is `server`. Each server gets
    /// its own (as Tahoe derives its write enablers per server): a server
    /// learns nothing that changes or deletes the file's shares elsewhere.
    /// The key has a fixed length, so key || identity is unambiguous.
    pub fn share_secrets(&self, server: &[u8]) -> ShareSecrets {
        ShareSecrets {
            write_enabler: tagged_hash(tag::SERVER_WRITE_ENABLER, &[&self.0, server]),
            lease_renew: tagged_hash(tag::SERVER_LEASE_RENEW, &[&self.0, server]),
            lease_cancel: tagged_hash(tag::SERVER_LEASE_CANCEL, &[&self.0, server]),
        }
    }

    /// The secrets of files written before they were derived per server:
    /// the same on every server. Only for deleting such files (a server
    /// refuses the per-server ones); never sent for a new share.
    pub fn legacy_share_secrets(&self) -> ShareSecrets {
        ShareSecrets {
            write_enabler: tagged_hash(tag::WRITE_ENABLER, &[&self.0]),
            lease_renew: tagged_hash(tag::LEASE_RENEW, &[&self.0]),
            lease_cancel: tagged_hash(tag::LEASE_CANCEL, &[&self.0]),
        }
    }

    /// Encrypts or decrypts (the same operation) `data`, which sits at byte
    /// `offset` of the file. AES-256-CTR with a 128-bit big-endian counter
    /// that starts at zero: the counter of a byte is its offset / 16. A zero
    /// nonce is safe because every key encrypts exactly one file version.
    pub fn apply_keystream(&self, offset: u64, data: &mut [u8]) {
        self.cipher_at(offset).apply_keystream(data);
    }

    /// [`FileKey::apply_keystream`] from `input` into `output` (the same
    /// length): the plaintext buffer stays as it was.
    pub fn encrypt_into(&self, offset: u64, input: &[u8], output: &mut [u8]) {
        if let Err(e) = self.cipher_at(offset).apply_keystream_b2b(input, output) {
            unreachable!("keystream into a buffer of another length: {e}");
        }
    }

    /// The file's cipher, positioned at byte `offset`.
    fn cipher_at(&self, offset: u64) -> Aes256Ctr {
        let mut cipher = Aes256Ctr::new((&self.0).into(), &[0u8; 16].into());
        cipher.seek(offset);
        cipher
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystream_at_any_offset_matches_the_whole_stream() {
        let key = FileKey::from_bytes([7; 32]);
        let mut whole = vec![0u8; 1000];
        key.apply_keystream(0, &mut whole);
        for start in [0usize, 1, 15, 16, 17, 500, 999] {
            let mut part = vec![0u8; 1000 - start];
            key.apply_keystream(start as u64, &mut part);
            assert_eq!(part, whole[start..]);
        }
    }

    #[test]
    fn encrypting_into_another_buffer_is_encrypting_in_place() {
        let key = FileKey::from_bytes([9; 32]);
        let plain: Vec<u8> = (0..1000u32)
            .map(|i| i.to_le_bytes()[0].wrapping_mul(7))
            .collect();
        for start in [0u64, 5, 16, 4099] {
            let mut in_place = plain.clone();
            key.apply_keystream(start, &mut in_place);
            let mut out = vec![0u8; plain.len()];
            key.encrypt_into(start, &plain, &mut out);
            assert_eq!(out, in_place);
            assert_ne!(out, plain);
        }
    }

    #[test]
    fn share_secrets_differ_per_server_and_from_the_legacy_ones() {
        let key = FileKey::from_bytes([3; 32]);
        let a = key.share_secrets(b"server-a");
        let b = key.share_secrets(b"server-b");
        assert_eq!(a, key.share_secrets(b"server-a"));
        assert_ne!(a.write_enabler, b.write_enabler);
        assert_ne!(a.lease_renew, b.lease_renew);
        assert_ne!(a.lease_cancel, b.lease_cancel);
        assert_ne!(a.write_enabler, key.legacy_share_secrets().write_enabler);
        assert_ne!(a.write_enabler, a.lease_renew);
    }

    #[test]
    fn blake3_block_hash_is_tagged_blake3() {
        // Reference: BLAKE3 of the same bytes put together by hand.
        let mut input = vec![16u8];
        input.extend_from_slice(b"griddav/v2/block");
        input.extend_from_slice(b"abc");
        assert_eq!(
            tagged_blake3(tag::BLOCK_V2, b"abc"),
            *blake3::hash(&input).as_bytes()
        );
        assert_ne!(
            tagged_blake3(tag::BLOCK_V2, b"abc"),
            tagged_hash(tag::BLOCK_V2, &[b"abc"])
        );
    }

    #[test]
    fn tags_separate_uses() {
        let data = [1u8; 32];
        assert_ne!(
            tagged_hash(tag::BLOCK, &[&data]),
            tagged_hash(tag::NODE, &[&data])
        );
        assert_eq!(
            tagged_hash(tag::NODE, &[&data[..16], &data[16..]]),
            tagged_hash(tag::NODE, &[&data])
        );
    }
}
