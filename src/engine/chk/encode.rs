//! The streaming CHK encoder: plaintext in (its size known up front), each
//! share's bytes out in order: the header, then one block per segment as
//! segments fill, then at the end the hash trees and the UEB. The same steps
//! as Tahoe's allmydata/immutable/encode.py, with a key the caller supplies
//! (random per file: Tahoe reads non-convergent files like any other).

use aes::cipher::{KeyIvInit, StreamCipher};

use super::hashtree::{hash_tree, needed_hashes};
use super::hashutil::{
    block_hash, uri_extension_hash, Hash, TaggedHasher, CIPHERTEXT_SEGMENT_TAG, CIPHERTEXT_TAG,
};
use super::layout::ShareLayout;
use super::params::ChkParams;
use super::ueb::Ueb;
use super::uri::ChkCap;
use super::zfec::Zfec;
use super::{Aes128Ctr, ChkError};

/// One segment's blocks, one per share number, and where they go.
#[derive(Debug)]
pub struct SegmentBlocks {
    /// The segment's number, from 0.
    pub segment: u64,
    /// Offset of these blocks within every share.
    pub share_offset: u64,
    /// `blocks[shnum]`.
    pub blocks: Vec<Vec<u8>>,
}

/// What `finish` leaves: each share's remaining bytes and the capability.
#[derive(Debug)]
pub struct Finished {
    /// Offset where the tails start within every share.
    pub tail_offset: u64,
    /// `tails[shnum]`: hash trees, share hash chain, UEB.
    pub tails: Vec<Vec<u8>>,
    /// The file's `URI:CHK:` capability: a secret.
    pub cap: ChkCap,
}

/// Tahoe's CHK uploader as a sans-I/O state machine: plaintext in, the
/// blocks of each segment out, then each share's tail and the capability.
pub struct ChkEncoder {
    params: ChkParams,
    layout: ShareLayout,
    key: [u8; 16],
    cipher: Aes128Ctr,
    code: Zfec,
    /// Ciphertext of the segment being filled.
    segment: Vec<u8>,
    next_segment: u64,
    received: u64,
    crypttext: TaggedHasher,
    segment_hashes: Vec<Hash>,
    /// `block_hashes[shnum][segment]`.
    block_hashes: Vec<Vec<Hash>>,
}

impl ChkEncoder {
    /// An encoder for a file of `params`' shape under AES key `key`.
    pub fn new(key: [u8; 16], params: ChkParams) -> Result<Self, ChkError> {
        let ueb_len = Self::ueb_len(&params) as u64;
        let layout = ShareLayout::new(&params, ueb_len)?;
        let segment_cap = usize::try_from(params.segment_size)
            .map_err(|_| ChkError::BadParams("segment too large"))?;
        Ok(Self {
            layout,
            key,
            cipher: Aes128Ctr::new((&key).into(), &[0u8; 16].into()),
            code: Zfec::new(usize::from(params.k), usize::from(params.n))?,
            segment: Vec::with_capacity(segment_cap),
            next_segment: 0,
            received: 0,
            crypttext: TaggedHasher::new(CIPHERTEXT_TAG),
            segment_hashes: Vec::new(),
            block_hashes: vec![Vec::new(); usize::from(params.n)],
            params,
        })
    }

    /// The UEB's length does not depend on its hash values
    /// (`get_uri_extension_size`), so the share size is known up front.
    fn ueb_len(params: &ChkParams) -> usize {
        Ueb {
            params: *params,
            crypttext_hash: [0; 32],
            crypttext_root_hash: [0; 32],
            share_root_hash: [0; 32],
        }
        .pack()
        .len()
    }

    /// The file's shape, as fixed at creation.
    pub fn params(&self) -> &ChkParams {
        &self.params
    }

    /// Every share's exact length: the size of its immutable allocation.
    pub fn share_size(&self) -> u64 {
        self.layout.share_size()
    }

    /// The first bytes of every share (the same for all of them).
    pub fn header(&self) -> Vec<u8> {
        self.layout.header()
    }

    /// Takes plaintext; returns the segments it completed.
    pub fn write(&mut self, mut data: &[u8]) -> Result<Vec<SegmentBlocks>, ChkError> {
        let over = ChkError::SizeMismatch {
            expected: self.params.size,
        };
        let total = self
            .received
            .checked_add(data.len() as u64)
            .ok_or(over.clone())?;
        if total > self.params.size {
            return Err(over);
        }
        self.received = total;
        let mut out = Vec::new();
        while !data.is_empty() {
            let want = to_usize(self.params.segment_len(self.next_segment))? - self.segment.len();
            let take = want.min(data.len());
            let start = self.segment.len();
            self.segment.extend_from_slice(&data[..take]);
            self.cipher.apply_keystream(&mut self.segment[start..]);
            data = &data[take..];
            if take == want {
                out.push(self.encode_segment()?);
            }
        }
        Ok(out)
    }

    fn encode_segment(&mut self) -> Result<SegmentBlocks, ChkError> {
        let seg = self.next_segment;
        self.crypttext.update(&self.segment);
        let mut h = TaggedHasher::new(CIPHERTEXT_SEGMENT_TAG);
        h.update(&self.segment);
        self.segment_hashes.push(h.finish());
        // The tail is coded zero-padded to a multiple of k; its hashes cover
        // the real ciphertext only.
        let block_len = to_usize(self.params.block_len(seg))?;
        let k = usize::from(self.params.k);
        self.segment.resize(block_len * k, 0);
        // ChkParams never has an empty block: a CHK file holds >= 1 byte.
        let primary: Vec<&[u8]> = self.segment.chunks(block_len.max(1)).collect();
        let blocks = self.code.encode(&primary)?;
        for (shnum, b) in blocks.iter().enumerate() {
            self.block_hashes[shnum].push(block_hash(b));
        }
        self.segment.clear();
        self.next_segment += 1;
        Ok(SegmentBlocks {
            segment: seg,
            share_offset: self.layout.offsets.data + seg * self.params.block_size,
            blocks,
        })
    }

    /// After exactly `size` bytes: the shares' tails and the capability.
    pub fn finish(self) -> Result<Finished, ChkError> {
        if self.received != self.params.size || self.next_segment != self.params.num_segments {
            return Err(ChkError::SizeMismatch {
                expected: self.params.size,
            });
        }
        let crypttext_tree = hash_tree(&self.segment_hashes);
        let block_trees: Vec<Vec<Hash>> = self.block_hashes.iter().map(|l| hash_tree(l)).collect();
        let share_leaves: Vec<Hash> = block_trees.iter().map(|t| t[0]).collect();
        let share_tree = hash_tree(&share_leaves);
        let ueb = Ueb {
            params: self.params,
            crypttext_hash: self.crypttext.finish(),
            crypttext_root_hash: crypttext_tree[0],
            share_root_hash: share_tree[0],
        }
        .pack();
        if ueb.len() as u64 != self.layout.ueb_len {
            return Err(ChkError::BadParams("UEB length changed"));
        }
        let o = self.layout.offsets;
        let n = usize::from(self.params.n);
        let mut tails = Vec::with_capacity(n);
        for (shnum, block_tree) in block_trees.iter().enumerate() {
            let mut t =
                Vec::with_capacity(to_usize(self.layout.share_size() - o.plaintext_hash_tree)?);
            // The unused plaintext hash tree: zeros, as Tahoe writes it.
            t.resize(to_usize(o.crypttext_hash_tree - o.plaintext_hash_tree)?, 0);
            for h in &crypttext_tree {
                t.extend_from_slice(h);
            }
            for h in block_tree {
                t.extend_from_slice(h);
            }
            for i in needed_hashes(n, shnum, true) {
                // a node of a tree over n <= 256 leaves: i < 511
                #[allow(clippy::cast_possible_truncation)]
                let node = i as u16;
                t.extend_from_slice(&node.to_be_bytes());
                t.extend_from_slice(&share_tree[i]);
            }
            t.extend_from_slice(&self.layout.ueb_field(&ueb));
            debug_assert_eq!(
                o.plaintext_hash_tree + t.len() as u64,
                self.layout.share_size()
            );
            tails.push(t);
        }
        Ok(Finished {
            tail_offset: o.plaintext_hash_tree,
            tails,
            cap: ChkCap {
                key: self.key,
                ueb_hash: uri_extension_hash(&ueb),
                k: self.params.k,
                n: self.params.n,
                size: self.params.size,
            },
        })
    }
}

/// Encodes a whole file in memory: every share's bytes and the capability.
pub fn encode_all(
    key: [u8; 16],
    params: ChkParams,
    data: &[u8],
) -> Result<(Vec<Vec<u8>>, ChkCap), ChkError> {
    let mut enc = ChkEncoder::new(key, params)?;
    let header = enc.header();
    let mut shares: Vec<Vec<u8>> = vec![header; usize::from(params.n)];
    for seg in enc.write(data)? {
        for (s, b) in shares.iter_mut().zip(seg.blocks) {
            s.extend_from_slice(&b);
        }
    }
    let fin = enc.finish()?;
    for (s, t) in shares.iter_mut().zip(fin.tails) {
        s.extend_from_slice(&t);
    }
    Ok((shares, fin.cap))
}

/// A length the encoder is about to allocate, as a `usize`: only a 32-bit
/// target with a segment or tail past 4 GiB fails it.
fn to_usize(len: u64) -> Result<usize, ChkError> {
    usize::try_from(len).map_err(|_| ChkError::BadParams("segment too large for this platform"))
}
