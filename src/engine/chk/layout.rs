//! The immutable share layout (allmydata/immutable/layout.py): what the
//! storage server holds for one share number, excluding the server's own
//! container header and leases.
//!
//! ```text
//! v1 (all offsets < 2^32)        v2 (otherwise)
//! 0x00 u32 version = 1           0x00 u32 version = 2
//! 0x04 u32 block size            0x04 u64 block size
//! 0x08 u32 share data size       0x0c u64 share data size
//! 0x0c u32 x 6 offsets           0x14 u64 x 6 offsets
//! 0x24 blocks                    0x44 blocks
//!      plaintext hash tree (unused, zeros), crypttext hash tree,
//!      block hash tree, share hash chain (u16 node, hash)*,
//!      UEB length (u32 | u64), UEB
//! ```

use super::hashtree::roundup_pow2;
use super::params::ChkParams;
use super::ChkError;

/// Hash trees over segments hold this many bytes.
fn segment_tree_size(num_segments: u64) -> u64 {
    let width = u64::try_from(roundup_pow2(
        usize::try_from(num_segments).unwrap_or(usize::MAX),
    ))
    .unwrap_or(u64::MAX);
    (2 * width - 1) * 32
}

/// Entries in each share's hash chain: the path from leaf to root, leaf
/// included (`needed_hashes(0, include_leaf=True)`).
pub fn num_share_hashes(n: u16) -> u64 {
    u64::from(roundup_pow2(usize::from(n)).trailing_zeros()) + 1
}

/// Where each part of a share starts, from the share's start.
/// The fields are Tahoe's names in `WriteBucketProxy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// The first block.
    pub data: u64,
    /// The plaintext hash tree: unused, written as zeros as Tahoe does.
    pub plaintext_hash_tree: u64,
    /// The ciphertext (segment) hash tree.
    pub crypttext_hash_tree: u64,
    /// This share's block hash tree.
    pub block_hashes: u64,
    /// The share hash chain: this share's path to the share root.
    pub share_hashes: u64,
    /// The length-prefixed URI extension block.
    pub uri_extension: u64,
}

/// Where everything is in one CHK share, as Tahoe's uploader lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareLayout {
    /// 1 with 32-bit offsets, 2 with 64-bit (for shares past 4 GiB).
    pub version: u32,
    /// Bytes per block of a full segment.
    pub block_size: u64,
    /// Block bytes in the share: `ceil(size / k)`.
    pub data_size: u64,
    /// Where each part starts.
    pub offsets: Offsets,
    /// Bytes of the packed URI extension block.
    pub ueb_len: u64,
}

impl ShareLayout {
    /// `make_write_bucket_proxy`: v1 when everything fits 32 bits, else v2.
    pub fn new(p: &ChkParams, ueb_len: u64) -> Result<Self, ChkError> {
        let seg_tree = segment_tree_size(p.num_segments);
        let share_tree = num_share_hashes(p.n) * 34;
        let build = |start: u64| -> Option<Offsets> {
            let data = start;
            let plaintext_hash_tree = data.checked_add(p.share_data_size)?;
            let crypttext_hash_tree = plaintext_hash_tree.checked_add(seg_tree)?;
            let block_hashes = crypttext_hash_tree.checked_add(seg_tree)?;
            let share_hashes = block_hashes.checked_add(seg_tree)?;
            let uri_extension = share_hashes.checked_add(share_tree)?;
            Some(Offsets {
                data,
                plaintext_hash_tree,
                crypttext_hash_tree,
                block_hashes,
                share_hashes,
                uri_extension,
            })
        };
        let too_large = ChkError::BadParams("file too large");
        let v1 = build(0x24).ok_or(too_large.clone())?;
        let small = 1u64 << 32;
        let (version, offsets) =
            if p.block_size < small && p.share_data_size < small && v1.uri_extension < small {
                (1, v1)
            } else {
                (2, build(0x44).ok_or(too_large)?)
            };
        Ok(Self {
            version,
            block_size: p.block_size,
            data_size: p.share_data_size,
            offsets,
            ueb_len,
        })
    }

    fn field_size(&self) -> u64 {
        if self.version == 1 {
            4
        } else {
            8
        }
    }

    /// The share's full length: what an immutable allocation asks for.
    pub fn share_size(&self) -> u64 {
        self.offsets.uri_extension + self.field_size() + self.ueb_len
    }

    /// The share's first bytes: version, sizes and offsets.
    pub fn header(&self) -> Vec<u8> {
        let o = &self.offsets;
        let fields = [
            self.block_size,
            self.data_size,
            o.data,
            o.plaintext_hash_tree,
            o.crypttext_hash_tree,
            o.block_hashes,
            o.share_hashes,
            o.uri_extension,
        ];
        let mut out = self.version.to_be_bytes().to_vec();
        for f in fields {
            if self.version == 1 {
                // new() chose v1 only when every field fits 32 bits
                #[allow(clippy::cast_possible_truncation)]
                let f = f as u32;
                out.extend_from_slice(&f.to_be_bytes());
            } else {
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
        out
    }

    /// The bytes at `uri_extension`: its length, then the UEB.
    pub fn ueb_field(&self, ueb: &[u8]) -> Vec<u8> {
        let mut out = if self.version == 1 {
            // Ueb::pack's few hundred bytes (a reader refuses past
            // MAX_UEB_LEN, 64 KiB): far below u32::MAX.
            #[allow(clippy::cast_possible_truncation)]
            let len = ueb.len() as u32;
            len.to_be_bytes().to_vec()
        } else {
            (ueb.len() as u64).to_be_bytes().to_vec()
        };
        out.extend_from_slice(ueb);
        out
    }
}

/// The header as a reader finds it: the version and offsets, checked only
/// for shape (the caller checks them against the UEB's parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedHeader {
    /// 1 with 32-bit fields, 2 with 64-bit.
    pub version: u32,
    /// Where each part starts, as the header claims.
    pub offsets: Offsets,
}

impl ParsedHeader {
    /// Bytes a reader must fetch to parse any header.
    pub const MAX_LEN: usize = 0x44;

    /// Parses the first [`Self::MAX_LEN`] (or fewer) bytes of a share; an error
    /// says which field is out of shape.
    pub fn parse(b: &[u8]) -> Result<Self, &'static str> {
        let version = u32::from_be_bytes(
            b.get(..4)
                .ok_or("short header")?
                .try_into()
                .map_err(|_| "short header")?,
        );
        let (start, size) = match version {
            1 => (0x0c, 4),
            2 => (0x14, 8),
            _ => return Err("unknown share version"),
        };
        let field = |i: usize| -> Result<u64, &'static str> {
            let at = start + i * size;
            let s = b.get(at..at + size).ok_or("short header")?;
            Ok(if size == 4 {
                u64::from(u32::from_be_bytes(
                    s.try_into().map_err(|_| "short header")?,
                ))
            } else {
                u64::from_be_bytes(s.try_into().map_err(|_| "short header")?)
            })
        };
        let offsets = Offsets {
            data: field(0)?,
            plaintext_hash_tree: field(1)?,
            crypttext_hash_tree: field(2)?,
            block_hashes: field(3)?,
            share_hashes: field(4)?,
            uri_extension: field(5)?,
        };
        let o = &offsets;
        if !(o.data <= o.plaintext_hash_tree
            && o.plaintext_hash_tree <= o.crypttext_hash_tree
            && o.crypttext_hash_tree <= o.block_hashes
            && o.block_hashes <= o.share_hashes
            && o.share_hashes <= o.uri_extension)
        {
            return Err("offsets out of order");
        }
        if (o.uri_extension - o.share_hashes) % 34 != 0
            || (o.share_hashes - o.block_hashes) % 32 != 0
        {
            return Err("hash sections malformed");
        }
        Ok(Self { version, offsets })
    }

    /// Bytes of the UEB length field before the UEB: 4 in version 1, 8 in 2.
    pub fn ueb_len_field(&self) -> u64 {
        if self.version == 1 {
            4
        } else {
            8
        }
    }
}
