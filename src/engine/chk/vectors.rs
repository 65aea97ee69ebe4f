//! The CHK pieces against vectors made by Tahoe-LAFS's own code
//! (tests/chk/tahoe_vectors.json, written by `tests/chk/tahoe_chk.py
//! vectors` with tahoe-lafs 1.20.0): hashes, trees, base32, AES-CTR, and
//! whole files as Tahoe's Encoder lays them out for its storage servers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use aes::cipher::{KeyIvInit, StreamCipher};
use serde::Deserialize;

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
