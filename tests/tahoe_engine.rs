//! The engine (Uploader / Downloader) against ten real Tahoe-LAFS 1.20.0
//! storage nodes started by `tests/tahoe/harness.sh start`.
//!
//! Skipped, with a message, unless `GRIDDAV_TAHOE_CONFIG` is the path of the
//! config the harness wrote (`tests/tahoe/harness.sh config`). The tests
//! kill, stop and restart nodes, so they run one at a time and leave every
//! node running again.

#[path = "tahoe/support.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use griddav::engine::{Downloader, EncodingParams, FileCap, UploadOptions, Uploader};
use griddav::grid::{Grid, ShareStore, StorageIndex};
use sha2::{Digest, Sha256};
use support::{content, Harness, MIB};

/// Uploads `data` in 256 KiB writes; `during(written)` runs before each.
async fn upload(
    grid: &Grid,
    data: &[u8],
    mut during: impl FnMut(usize),
) -> (StorageIndex, griddav::engine::EngineResult<FileCap>) {
    let mut uploader = Uploader::new(
        grid.clone(),
        EncodingParams::default(),
        UploadOptions::default(),
        Some(data.len() as u64),
    )
    .await
    .expect("start upload");
    let si = uploader.storage_index();
    for (i, chunk) in data.chunks(256 << 10).enumerate() {
        during(i * (256 << 10));
        if let Err(e) = uploader.write(Bytes::copy_from_slice(chunk)).await {
            return (si, Err(e));
        }
    }
    (si, uploader.finish().await)
}

async fn download(grid: &Grid, cap: &FileCap) -> (Vec<u8>, Downloader) {
    let downloader = Downloader::open(grid, cap).await.expect("open");
    let mut out = Vec::with_capacity(cap.size as usize);
    let step = 4 * MIB as u64;
    let mut offset = 0;
    while offset < cap.size {
        let len = step.min(cap.size - offset);
        out.extend_from_slice(&downloader.read(offset, len).await.expect("read"));
        offset += len;
    }
    (out, downloader)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_round_trips_of_several_sizes() {
    let harness = Harness::get();
    runtime().block_on(async {
        let (grid, _) = harness.grid(Duration::from_secs(30));
        for (len, seed) in [(0, 1), (1, 2), (4097, 3), (MIB + 1, 4), (5 * MIB + 333, 5)] {
            let data = content(len, seed);
            let (si, cap) = upload(&grid, &data, |_| {}).await;
            let cap = cap.expect("upload");
            assert_eq!(
                harness.share_files(si).len(),
                10,
                "10 shares of {len} bytes"
            );
            let (read, downloader) = download(&grid, &cap).await;
            assert!(read == data, "{len} bytes read back differ");
            assert!(
                downloader.problems().is_empty(),
                "{:?}",
                downloader.problems()
            );
        }
    });
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_three_nodes_killed_mid_upload() {
    let harness = Harness::get();
    runtime().block_on(async {
        let (grid, _) = harness.grid(Duration::from_secs(30));
        let data = content(24 * MIB, 7);
        let mut killed = false;
        let (si, cap) = upload(&grid, &data, |written| {
            if written >= 8 * MIB && !killed {
                for i in [1, 4, 7] {
                    harness.signal(i, "-KILL");
                }
                killed = true;
            }
        })
        .await;
        let cap = cap.expect("upload with 3 of 10 nodes killed midway");
        let live: Vec<usize> = harness.share_files(si).iter().map(|(i, _)| *i).collect();
        assert!(
            live.iter().filter(|i| ![1, 4, 7].contains(*i)).count() >= 7,
            "shares on {live:?}"
        );
        // Read with the three still down.
        let (read, _) = download(&grid, &cap).await;
        assert!(read == data, "read back differs");
    });
    harness.restart_all();
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_stopped_node_times_out() {
    let harness = Harness::get();
    runtime().block_on(async {
        let (grid, _) = harness.grid(Duration::from_secs(3));
        let data = content(3 * MIB, 9);
        // A stopped process still accepts TCP connections but never answers.
        harness.signal(2, "-STOP");
        let started = Instant::now();
        let (_, cap) = upload(&grid, &data, |_| {}).await;
        let cap = cap.expect("upload with one node stopped");
        let (read, _) = download(&grid, &cap).await;
        assert!(read == data, "read back differs");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
        harness.signal(2, "-CONT");
    });
    harness.restart_all();
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_corrupt_share_on_disk_is_detected_and_read_is_right() {
    let harness = Harness::get();
    runtime().block_on(async {
        let (grid, _) = harness.grid(Duration::from_secs(30));
        let data = content(3 * MIB + 17, 11);
        let (si, cap) = upload(&grid, &data, |_| {}).await;
        let cap = cap.expect("upload");
        // Share 0 holds ciphertext (the code is systematic), so a reader
        // uses it first. Its first block starts after Tahoe's container
        // header (468 bytes), our slot header (24) and the share header (20).
        let files = harness.share_files(si);
        let (_, share0) = files
            .iter()
            .find(|(_, path)| path.file_name().is_some_and(|n| n == "0"))
            .expect("share 0 on some node");
        let mut bytes = std::fs::read(share0).expect("read share file");
        for b in &mut bytes[468 + 24 + 20 + 1000..468 + 24 + 20 + 1064] {
            *b ^= 0x5a;
        }
        std::fs::write(share0, &bytes).expect("write share file");

        let (read, downloader) = download(&grid, &cap).await;
        assert!(read == data, "read back differs");
        let problems = downloader.problems();
        assert!(
            problems.iter().any(|p| p.kind.is_corrupt()),
            "corruption not reported: {problems:?}"
        );
    });
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_fewer_than_happy_fails_and_leaves_nothing() {
    let harness = Harness::get();
    runtime().block_on(async {
        let (grid, stores) = harness.grid(Duration::from_secs(30));
        let data = content(8 * MIB, 13);
        let mut killed = false;
        let (si, cap) = upload(&grid, &data, |written| {
            if written >= 2 * MIB && !killed {
                for i in [0, 3, 5, 8] {
                    harness.signal(i, "-KILL");
                }
                killed = true;
            }
        })
        .await;
        assert!(cap.is_err(), "upload with 6 of 10 nodes must fail");
        // Abandoned writers clean up in the background.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = harness.share_files(si);
            if left.iter().all(|(i, _)| [0, 3, 5, 8].contains(i)) {
                break;
            }
            assert!(Instant::now() < deadline, "partial shares left: {left:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in [1, 2, 4, 6, 7, 9] {
            assert_eq!(stores[i].list(si).await.expect("list"), vec![]);
        }
    });
    harness.restart_all();
}

/// 200 MiB (GRIDDAV_TAHOE_MIB to change) through the engine into the ten
/// nodes and back, timed.
#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_throughput() {
    let harness = Harness::get();
    let mib: usize = std::env::var("GRIDDAV_TAHOE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    runtime().block_on(async {
        let (grid, _) = harness.grid(Duration::from_secs(60));
        let data = content(mib * MIB, 17);
        let started = Instant::now();
        let (_, cap) = upload(&grid, &data, |_| {}).await;
        let cap = cap.expect("upload");
        let up = started.elapsed();
        let started = Instant::now();
        let (read, _) = download(&grid, &cap).await;
        let down = started.elapsed();
        assert!(
            Sha256::digest(&read) == Sha256::digest(&data),
            "read back differs"
        );
        eprintln!(
            "tahoe throughput, {mib} MiB, 3-of-10 into 10 nodes: upload {:.1} s ({:.1} MiB/s), \
             download {:.1} s ({:.1} MiB/s); config {}",
            up.as_secs_f64(),
            mib as f64 / up.as_secs_f64(),
            down.as_secs_f64(),
            mib as f64 / down.as_secs_f64(),
            harness.config.display()
        );
    });
}
