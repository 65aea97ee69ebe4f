//! Verified readers kept for the next request on the same content: every GET
//! opens the file anew, and a Range GET should not pay for listing the grid
//! and verifying the trailer each time. Content is immutable, but the grid
//! is not: a reader knows the shares it found when it was opened, so readers
//! expire, and sooner once a server failed them, so that shares that came
//! back after an outage (or moved) are found again. One of content the
//! collector freed fails its reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::Downloader;

/// Readers kept at most; the least recently used goes first.
const CAPACITY: usize = 64;
/// A reader is opened afresh after this long...
const MAX_AGE: Duration = Duration::from_secs(300);
/// ...or after this long once a share could not be reached through it.
const MAX_AGE_DEGRADED: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Entries {
    tick: u64,
    by_cap: HashMap<String, Entry>,
}

struct Entry {
    used: u64,
    opened: Instant,
    reader: Arc<Downloader>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.opened);
        age > MAX_AGE || (age > MAX_AGE_DEGRADED && self.reader.degraded())
    }
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
        if entries
            .by_cap
            .get(cap)
            .is_some_and(|entry| entry.expired(Instant::now()))
        {
            entries.by_cap.remove(cap);
            return None;
        }
        entries.by_cap.get_mut(cap).map(|entry| {
            entry.used = tick;
            Arc::clone(&entry.reader)
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
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                entries.by_cap.remove(&oldest);
            }
        }
        entries.by_cap.insert(
            cap.to_owned(),
            Entry {
                used: tick,
                opened: Instant::now(),
                reader,
            },
        );
    }

    /// Only bookkeeping happens under the lock; a panic there leaves a
    /// usable map.
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
