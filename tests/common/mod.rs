//! Shared helpers for the engine tests: grids of in-memory stores, grids
//! with failing servers, test content.

#![allow(dead_code)]
// Each test crate includes this module privately: its `pub` items are
// the test crates' shared API, so `pub(crate)` would only add noise.
#![allow(unreachable_pub)]

use std::sync::Arc;

use bytes::Bytes;
use griddav::engine::{Downloader, EncodingParams, EngineError, FileCap, UploadOptions, Uploader};
use griddav::grid::{FailingStore, Grid, MemoryStore, ShareStore};

/// 3-of-10 with small segments, so that small files have many.
pub const SMALL: EncodingParams = EncodingParams {
    k: 3,
    happy: 7,
    n: 10,
    segment_size: 1000,
};

/// Uploads `data` cut at the given chunk lengths (cycled).
pub async fn upload(grid: &Grid, params: EncodingParams, data: &[u8], chunks: &[usize]) -> FileCap {
    let mut uploader = Uploader::new(grid.clone(), params, UploadOptions::default(), None)
        .await
        .expect("start upload");
    let mut offset = 0;
    let mut i = 0;
    while offset < data.len() {
        let len = chunks[i % chunks.len()].max(1).min(data.len() - offset);
        uploader
            .write(Bytes::copy_from_slice(&data[offset..offset + len]))
            .await
            .expect("write");
        offset += len;
        i += 1;
    }
    uploader.finish().await.expect("finish")
}

pub async fn read_all(grid: &Grid, cap: &FileCap) -> Result<Vec<u8>, EngineError> {
    let downloader = Downloader::open(grid, cap).await?;
    Ok(downloader.read(0, cap.size).await?.to_vec())
}

/// Shares on the stores, finished or not.
pub fn total_shares(stores: &[Arc<MemoryStore>]) -> usize {
    stores
        .iter()
        .map(|s| s.share_count_including_partial())
        .sum()
}

pub fn memory_grid(count: usize) -> (Grid, Vec<Arc<MemoryStore>>) {
    let stores: Vec<Arc<MemoryStore>> = (0..count)
        .map(|i| Arc::new(MemoryStore::new(format!("mem-{i:02}"))))
        .collect();
    let grid = Grid::new(
        stores
            .iter()
            .map(|s| Arc::clone(s) as Arc<dyn ShareStore>)
            .collect(),
    );
    (grid, stores)
}

/// A grid of `servers` whose first `failing` fail every append after
/// their first `appends_ok`.
pub fn with_failing_servers(
    servers: Vec<Arc<dyn ShareStore>>,
    failing: usize,
    appends_ok: usize,
) -> Grid {
    Grid::new(
        servers
            .into_iter()
            .enumerate()
            .map(|(i, inner)| {
                if i < failing {
                    Arc::new(FailingStore::new(inner, appends_ok)) as Arc<dyn ShareStore>
                } else {
                    inner
                }
            })
            .collect(),
    )
}

/// Deterministic test content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}
