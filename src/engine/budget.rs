//! One memory budget for all uploads together.
//!
//! Each upload already bounds its own memory (segments in flight, blocks
//! queued per share), but sixteen uploads at once would still hold sixteen
//! times that. A `MemoryBudget` counts coded segments across every upload
//! that shares it, from the moment a segment goes to the coder until the
//! last of its N blocks has been written; an upload that finds the budget
//! spent waits, which slows its client like any other back-pressure.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::EncodingParams;

#[derive(Clone, Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    segments: usize,
}

/// Held by every block of a coded segment; the segment's place in the
/// budget comes back when the last block is written and drops it.
pub(crate) type SegmentPermit = Arc<OwnedSemaphorePermit>;

impl MemoryBudget {
    /// A budget of `segments` coded segments (at least one).
    pub fn segments(segments: usize) -> Self {
        let segments = segments.max(1);
        Self {
            permits: Arc::new(Semaphore::new(segments)),
            segments,
        }
    }

    /// As many coded segments as fit in `bytes`: a coded segment holds its
    /// N blocks, segment size * N / k bytes.
    pub fn bytes(bytes: u64, params: &EncodingParams) -> Self {
        let per_segment = (u64::from(params.segment_size) * u64::from(params.n))
            .div_ceil(u64::from(params.k.max(1)))
            .max(1);
        Self::segments(usize::try_from(bytes / per_segment).unwrap_or(usize::MAX))
    }

    /// The budget's size in segments.
    pub fn total(&self) -> usize {
        self.segments
    }

    /// Segments free right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    pub(crate) fn try_take(&self) -> Option<SegmentPermit> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .ok()
            .map(Arc::new)
    }

    pub(crate) async fn take(&self) -> Option<SegmentPermit> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .ok()
            .map(Arc::new)
    }
}
