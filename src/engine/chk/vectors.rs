//! The CHK pieces against vectors made by Tahoe-LAFS's own code
//! (tests/chk/tahoe_vectors.json, written by `tests/chk/tahoe_chk.py
//! vectors` with tahoe-lafs 1.20.0): hashes, trees, base32, AES-CTR, and
//! whole files as Tahoe's Encoder lays them out for its storage servers.

// Test vectors: byte patterns wrap on purpose; sizes and indices are small.
#![allow(clippy::cast_possible_truncation)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use aes::cipher::{KeyIvInit, StreamCipher};
use serde::Deserialize;

use super::decode::decode_all;
use super::encode::encode_all;
use super::hashtree::{hash_tree, needed_hashes};
use super::hashutil::*;
use super::layout::{ParsedHeader, ShareLayout};
use super::params::ChkParams;
use super::uri::{base32, ChkCap};
use super::Aes128Ctr;
use super::ChkError;

#[derive(Deserialize)]
struct Vectors {
    tahoe_version: String,
    netstring: Vec<(String, String)>,
    hashes: Vec<Hashes>,
    storage_index: Vec<(String, String, String)>,
    trees: Vec<Tree>,
    base32: Vec<(String, String)>,
    aes: Vec<(String, String, String)>,
    files: Vec<File>,
}

#[derive(Deserialize)]
struct Hashes {
    value: String,
    block: String,
    ueb: String,
    crypttext: String,
    crypttext_segment: String,
    pair: String,
}

#[derive(Deserialize)]
struct Tree {
    leaves: Vec<String>,
    nodes: Vec<String>,
    needed: Vec<Vec<usize>>,
}

#[derive(Deserialize)]
struct File {
    size: u64,
    k: u16,
    n: u16,
    max_segment_size: u64,
    key: String,
    plaintext: String,
    cap: String,
    shares: Vec<String>,
}

fn vectors() -> Vectors {
    let v: Vectors =
        serde_json::from_str(include_str!("../../../tests/chk/tahoe_vectors.json")).unwrap();
    assert_eq!(v.tahoe_version, "1.20.0");
    v
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn h32(s: &str) -> Hash {
    h(s).try_into().unwrap()
}

#[test]
fn hashes_match_tahoe() {
    let v = vectors();
    for (value, want) in &v.netstring {
        assert_eq!(netstring(&h(value)), h(want));
    }
    for x in &v.hashes {
        let value = h(&x.value);
        assert_eq!(block_hash(&value), h32(&x.block));
        assert_eq!(uri_extension_hash(&value), h32(&x.ueb));
        assert_eq!(tagged_hash(CIPHERTEXT_TAG, &value), h32(&x.crypttext));
        assert_eq!(
            tagged_hash(CIPHERTEXT_SEGMENT_TAG, &value),
            h32(&x.crypttext_segment)
        );
        assert_eq!(tagged_pair_hash(b"tag", &value, b"second"), h32(&x.pair));
        // The streaming hasher agrees with the one-shot one, split anywhere.
        let mut s = TaggedHasher::new(BLOCK_TAG);
        let (a, b) = value.split_at(value.len() / 3);
        s.update(a);
        s.update(b);
        assert_eq!(s.finish(), h32(&x.block));
    }
    assert_eq!(v.storage_index.len(), 3);
    for (key, si, si_from_uri) in &v.storage_index {
        let key: [u8; 16] = h(key).try_into().unwrap();
        assert_eq!(storage_index(&key).to_vec(), h(si));
        assert_eq!(storage_index(&key).to_vec(), h(si_from_uri));
    }
}

#[test]
fn hash_trees_match_tahoe() {
    let v = vectors();
    assert!(v.trees.len() >= 10);
    for t in &v.trees {
        let leaves: Vec<Hash> = t.leaves.iter().map(|s| h32(s)).collect();
        let nodes: Vec<Hash> = t.nodes.iter().map(|s| h32(s)).collect();
        assert_eq!(hash_tree(&leaves), nodes, "{} leaves", leaves.len());
        for (i, want) in t.needed.iter().enumerate() {
            assert_eq!(
                &needed_hashes(leaves.len(), i, true),
                want,
                "{} leaves, leaf {i}",
                leaves.len()
            );
        }
    }
}

#[test]
fn base32_and_aes_match_tahoe() {
    let v = vectors();
    for (bytes, text) in &v.base32 {
        assert_eq!(&base32().encode(&h(bytes)), text);
        assert_eq!(base32().decode(text.as_bytes()).unwrap(), h(bytes));
    }
    for (key, plain, want) in &v.aes {
        let key: [u8; 16] = h(key).try_into().unwrap();
        let mut data = h(plain);
        Aes128Ctr::new((&key).into(), &[0u8; 16].into()).apply_keystream(&mut data);
        assert_eq!(data, h(want));
    }
}

/// The share hash chain's (node, hash) pairs, sorted: Tahoe writes them in
/// the iteration order of a Python set, griddav in node order; readers take
/// any order.
fn normalized(share: &[u8]) -> Vec<u8> {
    let hdr = ParsedHeader::parse(share).unwrap();
    let (a, b) = (
        hdr.offsets.share_hashes as usize,
        hdr.offsets.uri_extension as usize,
    );
    let mut pairs: Vec<&[u8]> = share[a..b].chunks(34).collect();
    pairs.sort();
    let mut out = share[..a].to_vec();
    out.extend(pairs.concat());
    out.extend_from_slice(&share[b..]);
    out
}

#[test]
fn files_encode_byte_identical_with_tahoes_encoder() {
    let v = vectors();
    assert!(v.files.len() >= 6);
    for f in &v.files {
        let key: [u8; 16] = h(&f.key).try_into().unwrap();
        let plain = h(&f.plaintext);
        let params = ChkParams::for_upload(f.size, f.k, f.n, f.max_segment_size).unwrap();
        let (shares, cap) = encode_all(key, params, &plain).unwrap();
        assert_eq!(cap.to_uri(), f.cap, "{} bytes {}-of-{}", f.size, f.k, f.n);
        assert_eq!(ChkCap::parse(&f.cap).unwrap(), cap);
        for (i, (mine, theirs)) in shares.iter().zip(&f.shares).enumerate() {
            assert_eq!(
                normalized(mine),
                normalized(&h(theirs)),
                "{} bytes, share {i}",
                f.size
            );
        }
    }
}

#[test]
fn files_tahoe_wrote_decode_from_any_k_shares() {
    for f in &vectors().files {
        let cap = ChkCap::parse(&f.cap).unwrap();
        let plain = h(&f.plaintext);
        let shares: Vec<Vec<u8>> = f.shares.iter().map(|s| h(s)).collect();
        let all: Vec<(u16, &[u8])> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u16, s.as_slice()))
            .collect();
        let k = usize::from(f.k);
        // The data shares, the last k (all parity when n >= 2k), and every
        // share: each must give the plaintext.
        for set in [&all[..k], &all[all.len() - k..], &all[..]] {
            assert_eq!(decode_all(&cap, set).unwrap(), plain, "{} bytes", f.size);
        }
    }
}

#[test]
fn corruption_is_detected_and_routed_around() {
    let v = vectors();
    let f = v
        .files
        .iter()
        .find(|f| f.k == 3 && f.n == 10 && f.size > 500)
        .unwrap();
    let cap = ChkCap::parse(&f.cap).unwrap();
    let plain = h(&f.plaintext);
    let good: Vec<Vec<u8>> = f.shares.iter().map(|s| h(s)).collect();
    let hdr = ParsedHeader::parse(&good[0]).unwrap();
    let o = hdr.offsets;
    // A flipped byte in a block, in a block hash, in the share hash chain,
    // in the UEB: with only k shares each is an error, never wrong data;
    // with one more share the file still reads.
    for at in [
        o.data + 1,
        o.block_hashes + 40,
        o.share_hashes + 5,
        o.uri_extension + 10,
    ] {
        let mut bad = good.clone();
        bad[1][at as usize] ^= 0x40;
        let k_only: Vec<(u16, &[u8])> = (0..3).map(|i| (i as u16, bad[i].as_slice())).collect();
        let err = decode_all(&cap, &k_only).unwrap_err();
        assert!(
            matches!(
                err,
                ChkError::NotEnoughShares { .. } | ChkError::BadShare { shnum: 1, .. }
            ),
            "offset {at}: {err:?}"
        );
        let plus_one: Vec<(u16, &[u8])> = (0..4).map(|i| (i as u16, bad[i].as_slice())).collect();
        assert_eq!(decode_all(&cap, &plus_one).unwrap(), plain, "offset {at}");
    }
    // A capability with another UEB hash matches no share.
    let mut other = cap.clone();
    other.ueb_hash[0] ^= 1;
    let all: Vec<(u16, &[u8])> = good
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u16, s.as_slice()))
        .collect();
    assert!(matches!(
        decode_all(&other, &all).unwrap_err(),
        ChkError::BadShare { .. }
    ));
    // A capability claiming an absurd size is refused, not allocated for.
    let mut huge = cap.clone();
    huge.size = u64::MAX;
    assert!(decode_all(&huge, &all).is_err());
    // A truncated share is refused, not read past.
    let short: Vec<(u16, &[u8])> = (0..3)
        .map(|i| (i as u16, &good[i][..good[i].len() - 1]))
        .collect();
    assert!(decode_all(&cap, &short).is_err());
}

#[test]
fn caps_parse_strictly() {
    let v = vectors();
    let cap = &v.files[0].cap;
    assert!(ChkCap::parse(cap).is_ok());
    for bad in [
        cap.replace("URI:CHK:", "URI:CHK-Verifier:"),
        cap.to_uppercase(),
        format!("{cap}:1"),
        cap.replacen(":3:10:", ":0:10:", 1),
        cap.replacen(":3:10:", ":11:10:", 1),
        cap.replacen(":3:10:", ":3:257:", 1),
        cap.replacen(":3:10:", ":+3:10:", 1),
        format!("{}x", &cap[..cap.rfind(':').unwrap()]),
    ] {
        assert_eq!(ChkCap::parse(&bad), Err(ChkError::BadCap), "{bad}");
    }
}

#[test]
fn streaming_writes_in_any_pieces_give_the_same_shares() {
    let params = ChkParams::for_upload(10_000, 3, 10, 1000).unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let key = [7u8; 16];
    let (whole, cap) = encode_all(key, params, &data).unwrap();
    for piece in [1usize, 7, 999, 1000, 1001, 4096] {
        let mut enc = super::encode::ChkEncoder::new(key, params).unwrap();
        let mut shares: Vec<Vec<u8>> = vec![enc.header(); 10];
        for chunk in data.chunks(piece) {
            for seg in enc.write(chunk).unwrap() {
                for (s, b) in shares.iter_mut().zip(seg.blocks) {
                    assert_eq!(s.len() as u64, seg.share_offset);
                    s.extend_from_slice(&b);
                }
            }
        }
        let share_size = enc.share_size();
        let fin = enc.finish().unwrap();
        for (s, t) in shares.iter_mut().zip(fin.tails) {
            assert_eq!(s.len() as u64, fin.tail_offset);
            s.extend_from_slice(&t);
            assert_eq!(s.len() as u64, share_size);
        }
        assert_eq!(shares, whole, "pieces of {piece}");
        assert_eq!(fin.cap, cap);
    }
    // Too many or too few bytes is an error, not a file.
    let mut enc = super::encode::ChkEncoder::new(key, params).unwrap();
    assert!(enc.write(&[0u8; 10_001]).is_err());
    let mut enc = super::encode::ChkEncoder::new(key, params).unwrap();
    enc.write(&data[..9_999]).unwrap();
    assert!(enc.finish().is_err());
}

/// The share layout Tahoe's Encoder wrote: header fields and offsets, the
/// share length, and the UEB where the header says, hashing to the cap.
#[test]
fn share_layout_matches_tahoes_encoder() {
    for f in &vectors().files {
        let cap = ChkCap::parse(&f.cap).unwrap();
        let params = ChkParams::for_upload(f.size, f.k, f.n, f.max_segment_size).unwrap();
        assert_eq!(cap.key.to_vec(), h(&f.key));
        assert_eq!(h(&f.plaintext).len() as u64, cap.size);
        for share in &f.shares {
            let share = h(share);
            let hdr = ParsedHeader::parse(&share).unwrap();
            let at = hdr.offsets.uri_extension as usize;
            let len = u32::from_be_bytes(share[at..at + 4].try_into().unwrap()) as usize;
            let ueb = &share[at + 4..at + 4 + len];
            assert_eq!(uri_extension_hash(ueb), cap.ueb_hash);
            let parsed = super::ueb::Ueb::parse(ueb, cap.k, cap.n, cap.size).unwrap();
            assert_eq!(parsed.params, params);
            assert_eq!(parsed.pack(), ueb, "UEB packs back to the same bytes");
            let layout = ShareLayout::new(&params, len as u64).unwrap();
            assert_eq!(layout.share_size() as usize, share.len());
            assert_eq!(layout.header(), share[..0x24].to_vec());
        }
    }
}
