//! Reading a CHK file from k shares, verified as Tahoe's downloader does:
//! the UEB against the hash in the capability, each share's block-tree root
//! against the share hash tree, each block against its share's block tree,
//! each segment's ciphertext against the crypttext hash tree, and the whole
//! ciphertext against the UEB's flat crypttext hash.
//!
//! This reader takes whole shares in memory; it is the reference the
//! ranged, streaming reader will be checked against.

use aes::cipher::{KeyIvInit, StreamCipher};

use super::hashtree::{hash_tree, roundup_pow2, verify_leaf};
use super::hashutil::{
    block_hash, tagged_hash, uri_extension_hash, Hash, TaggedHasher, CIPHERTEXT_SEGMENT_TAG,
    CIPHERTEXT_TAG,
};
use super::layout::ParsedHeader;
use super::params::ChkParams;
use super::ueb::{Ueb, MAX_UEB_LEN};
use super::uri::ChkCap;
use super::zfec::Zfec;
use super::{Aes128Ctr, ChkError};

/// One share, checked against the capability: its block hashes are known
/// good, its blocks not yet read.
struct CheckedShare<'a> {
    shnum: u16,
    data: &'a [u8],
    header: ParsedHeader,
    block_hashes: Vec<Hash>,
}

fn bad(shnum: u16, reason: &'static str) -> ChkError {
    ChkError::BadShare { shnum, reason }
}

fn slice(data: &[u8], start: u64, len: u64) -> Option<&[u8]> {
    let s = usize::try_from(start).ok()?;
    let e = s.checked_add(usize::try_from(len).ok()?)?;
    data.get(s..e)
}

fn hashes(data: &[u8], start: u64, count: u64) -> Option<Vec<Hash>> {
    let raw = slice(data, start, count.checked_mul(32)?)?;
    Some(
        raw.chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect(),
    )
}

/// Reads and checks the UEB of one share against the capability.
fn read_ueb(cap: &ChkCap, shnum: u16, data: &[u8]) -> Result<(ParsedHeader, Ueb), ChkError> {
    let header = ParsedHeader::parse(data).map_err(|r| bad(shnum, r))?;
    let at = header.offsets.uri_extension;
    let lf = header.ueb_len_field();
    let raw = slice(data, at, lf).ok_or(bad(shnum, "truncated before the UEB"))?;
    let mut len = 0u64;
    for &b in raw {
        len = (len << 8) | u64::from(b);
    }
    if len > MAX_UEB_LEN {
        return Err(bad(shnum, "UEB too long"));
    }
    let ueb = at
        .checked_add(lf)
        .and_then(|start| slice(data, start, len))
        .ok_or(bad(shnum, "truncated UEB"))?;
    if uri_extension_hash(ueb) != cap.ueb_hash {
        return Err(bad(shnum, "UEB does not match the capability"));
    }
    Ok((header, Ueb::parse(ueb, cap.k, cap.n, cap.size)?))
}

fn check_share<'a>(
    ueb: &Ueb,
    p: &ChkParams,
    shnum: u16,
    data: &'a [u8],
    header: ParsedHeader,
) -> Result<CheckedShare<'a>, ChkError> {
    let o = header.offsets;
    let leaf_count = p.segment_count();
    let first_leaf = roundup_pow2(leaf_count) - 1;
    let width = roundup_pow2(leaf_count) as u64;
    let tree_nodes = 2 * width - 1;
    if o.share_hashes - o.block_hashes < tree_nodes * 32
        || o.plaintext_hash_tree - o.data < p.share_data_size
    {
        return Err(bad(shnum, "sections too small for the file"));
    }
    let tree =
        hashes(data, o.block_hashes, tree_nodes).ok_or(bad(shnum, "truncated block hashes"))?;
    let leaves = &tree[first_leaf..first_leaf + leaf_count];
    // The whole stored tree, not only the nodes a path needs: Tahoe's
    // downloader checks the nodes it reads and its verifier all of them, so
    // a share with any bad node is corrupt to Tahoe too.
    let full = hash_tree(leaves);
    if full != tree {
        return Err(bad(shnum, "block hash tree is inconsistent"));
    }
    let block_root = full[0];
    // The share hash chain: (node, hash) pairs.
    let chain_len = (o.uri_extension - o.share_hashes) / 34;
    let chain_raw =
        slice(data, o.share_hashes, chain_len * 34).ok_or(bad(shnum, "truncated share hashes"))?;
    let chain: Vec<(usize, Hash)> = chain_raw
        .chunks_exact(34)
        .map(|c| {
            let node = usize::from(u16::from_be_bytes([c[0], c[1]]));
            (node, c[2..].try_into().unwrap_or([0; 32]))
        })
        .collect();
    let lookup = |i: usize| chain.iter().find(|(n, _)| *n == i).map(|(_, h)| *h);
    // Tahoe stores the leaf itself in the chain; it must be this share's root.
    let leaf_node = roundup_pow2(usize::from(p.n)) - 1 + usize::from(shnum);
    if lookup(leaf_node).is_some_and(|h| h != block_root) {
        return Err(bad(shnum, "share hash chain names another block tree root"));
    }
    if !verify_leaf(
        &ueb.share_root_hash,
        usize::from(p.n),
        usize::from(shnum),
        &block_root,
        &lookup,
    ) {
        return Err(bad(shnum, "block tree root not in the share hash tree"));
    }
    Ok(CheckedShare {
        shnum,
        data,
        header,
        block_hashes: leaves.to_vec(),
    })
}

/// The plaintext of the file `cap` names, from any k or more of its shares
/// (`(share number, share bytes)`); bad shares are skipped while k good
/// ones remain.
pub fn decode_all(cap: &ChkCap, shares: &[(u16, &[u8])]) -> Result<Vec<u8>, ChkError> {
    let k = usize::from(cap.k);
    let mut ueb = None;
    let mut checked = Vec::new();
    let mut last_err = None;
    for &(shnum, data) in shares {
        if shnum >= cap.n || checked.iter().any(|c: &CheckedShare| c.shnum == shnum) {
            continue;
        }
        let r = read_ueb(cap, shnum, data).and_then(|(header, u)| {
            let p = u.params;
            let c = check_share(&u, &p, shnum, data, header)?;
            Ok((u, c))
        });
        match r {
            Ok((u, c)) => {
                ueb.get_or_insert(u);
                checked.push(c);
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some(ueb) = ueb else {
        return Err(last_err.unwrap_or(ChkError::NotEnoughShares { have: 0, need: k }));
    };
    let p = ueb.params;
    // The crypttext tree from the first share that carries a good one.
    let leaf_count = p.segment_count();
    let first_leaf = roundup_pow2(leaf_count) - 1;
    let width = roundup_pow2(leaf_count) as u64;
    let mut segment_hashes = None;
    for c in &checked {
        let o = c.header.offsets;
        if let Some(tree) = hashes(c.data, o.crypttext_hash_tree, 2 * width - 1) {
            let leaves = &tree[first_leaf..first_leaf + leaf_count];
            let full = hash_tree(leaves);
            if full[0] == ueb.crypttext_root_hash && full == tree {
                segment_hashes = Some(leaves.to_vec());
                break;
            }
        }
    }
    let segment_hashes = segment_hashes.ok_or(ChkError::Integrity(
        "no share has a good crypttext hash tree",
    ))?;
    let code = Zfec::new(k, usize::from(p.n))?;
    let mut cipher = Aes128Ctr::new((&cap.key).into(), &[0u8; 16].into());
    let mut flat = TaggedHasher::new(CIPHERTEXT_TAG);
    // The size comes from the capability: reserve no more than a bounded
    // amount on its word.
    let mut out = Vec::with_capacity(usize::try_from(p.size.min(64 << 20)).unwrap_or(0));
    // Shares whose blocks proved bad drop out for the rest of the file.
    let mut good: Vec<bool> = vec![true; checked.len()];
    for (seg_ix, seg) in (0..p.num_segments).enumerate() {
        let blen = p.block_len(seg);
        let mut blocks: Vec<(usize, &[u8])> = Vec::with_capacity(k);
        for (i, c) in checked.iter().enumerate() {
            if blocks.len() == k {
                break;
            }
            if !good[i] {
                continue;
            }
            let at = seg
                .checked_mul(p.block_size)
                .and_then(|x| x.checked_add(c.header.offsets.data));
            match at.and_then(|at| slice(c.data, at, blen)) {
                Some(b) if block_hash(b) == c.block_hashes[seg_ix] => {
                    blocks.push((usize::from(c.shnum), b))
                }
                _ => good[i] = false,
            }
        }
        if blocks.len() < k {
            return Err(ChkError::NotEnoughShares {
                have: blocks.len(),
                need: k,
            });
        }
        let primary = code.decode(&blocks)?;
        let mut segment: Vec<u8> = primary.concat();
        // A length past `usize` (32-bit targets) exceeds any segment in
        // memory: truncating to `usize::MAX` keeps it whole, as intended.
        segment.truncate(usize::try_from(p.segment_len(seg)).unwrap_or(usize::MAX));
        if tagged_hash(CIPHERTEXT_SEGMENT_TAG, &segment) != segment_hashes[seg_ix] {
            return Err(ChkError::Integrity(
                "segment does not match the crypttext hash tree",
            ));
        }
        flat.update(&segment);
        cipher.apply_keystream(&mut segment);
        out.extend_from_slice(&segment);
    }
    if flat.finish() != ueb.crypttext_hash {
        return Err(ChkError::Integrity(
            "ciphertext does not match the UEB's crypttext hash",
        ));
    }
    Ok(out)
}
