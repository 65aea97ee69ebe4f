//! Engine throughput: 1 GiB (or GRIDDAV_BENCH_MIB) through 3-of-10, into an
//! in-memory grid and into a grid of ten local directories, and back.
//!
//! `cargo bench --bench engine` prints plaintext MB/s and the peak RSS of each
//! run (the peak is reset between runs through /proc/self/clear_refs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use griddav::engine::{Downloader, EncodingParams, FileCap, UploadOptions, Uploader};
use griddav::grid::{Grid, MemoryStore, ShareStore};

const CHUNK: usize = 256 << 10;

fn main() {
    let mib: usize = std::env::var("GRIDDAV_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pattern = Bytes::from(pattern(64 << 20));
    let size = mib << 20;
    println!(
        "griddav engine benchmark: {mib} MiB, 3-of-10, 1 MiB segments, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let dir = tempfile::Builder::new()
        .prefix("griddav-bench-")
        .tempdir_in(std::env::var("GRIDDAV_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("temporary directory");
    let local = Grid::new(griddav::grid::grid_of_dirs(dir.path(), 10).expect("local grid"));
    runtime.block_on(run("local directories", &local, &pattern, size));
    drop(dir);

    let memory = Grid::new(
        (0..10)
            .map(|i| Arc::new(MemoryStore::new(format!("mem-{i}"))) as Arc<dyn ShareStore>)
            .collect(),
    );
    runtime.block_on(run("in-memory", &memory, &pattern, size));
}

async fn run(name: &str, grid: &Grid, pattern: &Bytes, size: usize) {
    reset_peak_rss();
    let start = Instant::now();
    let (cap, finish) = upload(grid, pattern, size).await;
    let up = start.elapsed();
    let up_rss = peak_rss_mib();

    reset_peak_rss();
    let start = Instant::now();
    download(grid, &cap, pattern, size).await;
    let down = start.elapsed();
    let down_rss = peak_rss_mib();

    let mb = size as f64 / 1e6;
    println!(
        "{name:>18}: upload {:7.1} MB/s (finish {:5.0} ms, peak RSS {up_rss} MiB)   download {:7.1} MB/s (peak RSS {down_rss} MiB)",
        mb / up.as_secs_f64(),
        finish.as_secs_f64() * 1e3,
        mb / down.as_secs_f64(),
    );
}

/// Uploads `size` bytes; returns the cap and how long `finish` took.
async fn upload(grid: &Grid, pattern: &Bytes, size: usize) -> (FileCap, Duration) {
    let mut uploader = Uploader::new(
        grid.clone(),
        EncodingParams::default(),
        UploadOptions::default(),
        Some(size as u64),
    )
    .await
    .expect("start upload");
    let mut sent = 0;
    while sent < size {
        let at = sent % pattern.len();
        let len = CHUNK.min(size - sent).min(pattern.len() - at);
        uploader
            .write(pattern.slice(at..at + len))
            .await
            .expect("write");
        sent += len;
    }
    let start = Instant::now();
    let cap = uploader.finish().await.expect("finish");
    (cap, start.elapsed())
}

async fn download(grid: &Grid, cap: &FileCap, pattern: &Bytes, size: usize) {
    let downloader = Arc::new(Downloader::open(grid, cap).await.expect("open"));
    let mut stream = std::pin::pin!(downloader.stream(0));
    let mut offset = 0;
    while let Some(piece) = stream.next().await {
        let piece = piece.expect("read");
        let mut checked = 0;
        while checked < piece.len() {
            let at = (offset + checked) % pattern.len();
            let len = (piece.len() - checked).min(pattern.len() - at);
            assert!(
                piece[checked..checked + len] == pattern[at..at + len],
                "content differs near offset {}",
                offset + checked
            );
            checked += len;
        }
        offset += piece.len();
    }
    assert_eq!(offset, size, "download length");
}

/// Incompressible bytes, so nothing in the path can shortcut them.
fn pattern(len: usize) -> Vec<u8> {
    let key = griddav::engine::crypto::FileKey::from_bytes([0x5a; 32]);
    let mut bytes = vec![0u8; len];
    key.apply_keystream(0, &mut bytes);
    bytes
}

fn reset_peak_rss() {
    // "5" resets the peak resident set size (Linux 4.0+); best effort.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}
