//! Verified readers kept for the next request on the same content: every GET
//! opens the file anew, and a Range GET should not pay for listing the grid
//! and verifying the trailer each time. Content is immutable, but the grid
//! is not: a reader knows the shares it found when it was opened, so readers
//! expire, and sooner once a server failed them, so that shares that came
//! back after an outage (or moved) are found again. One of content the
//! collector freed fails its reads.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::engine::FileReader;

/// Readers kept at most; the least recently used goes first.
const CAPACITY: NonZeroUsize = match NonZeroUsize::new(64) {
    Some(n) => n,
    None => panic!("zero capacity"), // evaluated at compile time
};
/// A reader is opened afresh after this long...
const MAX_AGE: Duration = Duration::from_secs(300);
/// ...or after this long once a share could not be reached through it.
const MAX_AGE_DEGRADED: Duration = Duration::from_secs(5);

struct Entry {
    opened: Instant,
    reader: Arc<FileReader>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.opened);
        age > MAX_AGE || (age > MAX_AGE_DEGRADED && self.reader.degraded())
    }
}

pub(crate) struct ReaderCache {
    entries: Mutex<LruCache<String, Entry>>,
}

impl Default for ReaderCache {
    fn default() -> Self {
        Self {
            entries: Mutex::new(LruCache::new(CAPACITY)),
        }
    }
}

impl ReaderCache {
    pub(crate) fn get(&self, cap: &str) -> Option<Arc<FileReader>> {
        let mut entries = self.lock();
        if entries
            .peek(cap)
            .is_some_and(|entry| entry.expired(Instant::now()))
        {
            entries.pop(cap);
            return None;
        }
        entries.get(cap).map(|entry| Arc::clone(&entry.reader))
    }

    pub(crate) fn contains(&self, cap: &str) -> bool {
        self.lock().contains(cap)
    }

    pub(crate) fn insert(&self, cap: &str, reader: Arc<FileReader>) {
        self.lock().put(
            cap.to_owned(),
            Entry {
                opened: Instant::now(),
                reader,
            },
        );
    }

    /// Only bookkeeping happens under the lock; a panic there leaves a
    /// usable map.
    fn lock(&self) -> MutexGuard<'_, LruCache<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
