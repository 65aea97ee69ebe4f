//! Verified readers kept for the next request on the same content: every GET
//! opens the file anew, and a Range GET should not pay for listing the grid
//! and verifying the trailer each time. Content is immutable, so a reader
//! never goes stale; one of content the collector freed fails its reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::Downloader;

/// Readers kept at most; the least recently used goes first.
const CAPACITY: usize = 64;

#[derive(Default)]
struct Entries {
    tick: u64,
    by_cap: HashMap<String, (u64, Arc<Downloader>)>,
}

#[derive(Default)]
pub(crate) struct ReaderCache {
    entries: Mutex<Entries>,
}

impl ReaderCache {
    pub fn get(&self, cap: &str) -> Option<Arc<Downloader>> {
        let mut entries = self.lock();
        entries.tick += 1;
        let tick = entries.tick;
        entries.by_cap.get_mut(cap).map(|entry| {
            entry.0 = tick;
            Arc::clone(&entry.1)
        })
    }

    pub fn insert(&self, cap: &str, reader: Arc<Downloader>) {
        let mut entries = self.lock();
        entries.tick += 1;
        let tick = entries.tick;
        if entries.by_cap.len() >= CAPACITY && !entries.by_cap.contains_key(cap) {
            let oldest = entries
                .by_cap
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                entries.by_cap.remove(&oldest);
            }
        }
        entries.by_cap.insert(cap.to_owned(), (tick, reader));
    }

    /// Only bookkeeping happens under the lock; a panic there leaves a
    /// usable map.
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
