//! The test vectors of docs/FORMAT.md, reproduced byte for byte.
//!
//! Each vector is a fenced block in FORMAT.md (```vector-NAME) of
//! `field: value` lines. This test uploads the vector's content with its fixed
//! key and checks the capability and every share against the document, so the
//! document and the code cannot drift apart.
//!
//! A unit test rather than an integration test: it needs
//! `Uploader::with_key`, which is not public (a key must never encrypt two
//! files, so no caller outside the crate may choose one).

// Test vectors: byte patterns wrap on purpose; sizes and indices are small.
#![allow(clippy::cast_possible_truncation)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::engine::crypto::FileKey;
use crate::engine::{Downloader, EncodingParams, UploadOptions, Uploader};
use crate::grid::memory::memory_grid;
use crate::grid::ShareStore;

fn vector(name: &str) -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let fence = format!("```vector-{name}\n");
    let start = doc
        .find(&fence)
        .unwrap_or_else(|| panic!("no vector {name} in FORMAT.md"))
        + fence.len();
    let end = start + doc[start..].find("```").expect("closing fence");
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in doc[start..end].lines() {
        if let Some((key, value)) = line.split_once(": ") {
            last = key.trim().to_owned();
            fields.insert(last.clone(), value.trim().to_owned());
        } else if !line.trim().is_empty() {
            // A continuation line of a long hex value.
            fields
                .entry(last.clone())
                .or_default()
                .push_str(line.trim());
        }
    }
    fields
}

/// Uploads `content` as the vector describes and returns (cap, shares by number).
async fn produce(fields: &BTreeMap<String, String>, content: &[u8]) -> (String, Vec<Vec<u8>>) {
    let key: [u8; 32] = hex::decode(&fields["key"])
        .expect("key hex")
        .try_into()
        .expect("32 bytes");
    let params = EncodingParams {
        k: fields["k"].parse().expect("k"),
        happy: fields["k"].parse().expect("k"),
        n: fields["n"].parse().expect("n"),
        segment_size: fields["segment size"].parse().expect("segment size"),
    };
    let (grid, stores) = memory_grid(usize::from(params.n));
    let mut uploader = Uploader::with_key(
        grid.clone(),
        params,
        UploadOptions::default(),
        Some(content.len() as u64),
        FileKey::from_bytes(key),
        fields["format"].parse().expect("format version"),
    )
    .await
    .expect("start");
    for chunk in content.chunks(333) {
        uploader
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write");
    }
    let cap = uploader.finish().await.expect("finish");
    let si = cap.key.storage_index();
    let mut shares = vec![Vec::new(); usize::from(params.n)];
    for store in &stores {
        for info in store.list(si).await.expect("list") {
            let bytes = store.read(si, info.share, 0..info.len).await.expect("read");
            shares[usize::from(info.share.0)] = bytes.to_vec();
        }
    }
    let back = Downloader::open(&grid, &cap).await.expect("open");
    assert_eq!(&back.read(0, cap.size).await.expect("read")[..], content);
    assert!(shares.iter().all(|s| !s.is_empty()));
    (cap.to_string(), shares)
}

fn check(name: &str, fields: &BTreeMap<String, String>, cap: &str, shares: &[Vec<u8>]) {
    println!("vector {name}\ncap: {cap}");
    for (i, share) in shares.iter().enumerate() {
        println!(
            "share {i} length: {}\nshare {i} sha256: {}",
            share.len(),
            hex::encode(Sha256::digest(share))
        );
    }
    println!("share 0 hex: {}", hex::encode(&shares[0]));
    if let Some(expected) = fields.get("share 0 hex") {
        assert_eq!(&hex::encode(&shares[0]), expected, "{name}: share 0 bytes");
    }
    assert_eq!(cap, fields["cap"], "{name}: capability");
    for (i, share) in shares.iter().enumerate() {
        assert_eq!(
            share.len().to_string(),
            fields[&format!("share {i} length")],
            "{name}: share {i} length"
        );
        assert_eq!(
            hex::encode(Sha256::digest(share)),
            fields[&format!("share {i} sha256")],
            "{name}: share {i} sha256"
        );
    }
}

async fn small_file(name: &str) {
    let fields = vector(name);
    let content = fields["content"].trim_matches('"').replace("\\n", "\n");
    let (cap, shares) = produce(&fields, content.as_bytes()).await;
    check(name, &fields, &cap, &shares);
}

async fn multi_segment(name: &str) {
    let fields = vector(name);
    let size: usize = fields["size"].parse().expect("size");
    // The content rule stated in FORMAT.md: byte i is (i * 7) mod 251.
    let content: Vec<u8> = (0..size).map(|i| ((i * 7) % 251) as u8).collect();
    let (cap, shares) = produce(&fields, &content).await;
    check(name, &fields, &cap, &shares);
}

async fn empty_file(name: &str) {
    let fields = vector(name);
    let (cap, shares) = produce(&fields, b"").await;
    check(name, &fields, &cap, &shares);
}

// Version 2, what griddav writes now.

#[tokio::test]
async fn small_file_vector() {
    small_file("small").await;
}

#[tokio::test]
async fn multi_segment_vector() {
    multi_segment("multi-segment").await;
}

#[tokio::test]
async fn empty_file_vector() {
    empty_file("empty").await;
}

// Version 1: files written before version 2 still read (`produce` reads
// every vector back through the Downloader), byte for byte as specified.

#[tokio::test]
async fn small_file_vector_v1() {
    small_file("small-v1").await;
}

#[tokio::test]
async fn multi_segment_vector_v1() {
    multi_segment("multi-segment-v1").await;
}

#[tokio::test]
async fn empty_file_vector_v1() {
    empty_file("empty-v1").await;
}
