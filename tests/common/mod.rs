//! Shared helpers for the engine tests: grids of in-memory stores, grids
//! with failing servers, test content.

#![allow(dead_code)]

use std::sync::Arc;

use griddav::grid::{FailingStore, Grid, MemoryStore, ShareStore};

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
