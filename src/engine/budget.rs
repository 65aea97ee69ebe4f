//! One memory budget for all uploads together.
//!
//! Each upload already bounds its own memory (segments in flight, blocks
//! queued per share), but sixteen uploads at once would still hold sixteen
//! times that. A `MemoryBudget` counts coded segments across every upload
//! that shares it, from the moment a segment goes to the coder until the
//! last of its N blocks has been written; an upload that finds the budget
//! spent waits, which slows its client like any other back-pressure.

use std::sync::Arc;

use crate::grid::{BufferLease, BufferPool};

use super::EncodingParams;

/// Room for coded segments in a [`BufferPool`]: the pool may be shared
/// with stores that buffer bytes of their own (S3 parts), so that one
/// figure bounds all the memory uploads hold.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    pool: BufferPool,
    per_segment: u64,
}

/// Held by every block of a coded segment; the segment's place in the
/// budget comes back when the last block is written and drops it.
pub(crate) type SegmentPermit = Arc<BufferLease>;

/// The bytes one coded segment holds: its N blocks, segment size * N / k.
fn coded_segment_bytes(params: &EncodingParams) -> u64 {
    (u64::from(params.segment_size) * u64::from(params.n))
        .div_ceil(u64::from(params.k.max(1)))
        .max(1)
}

impl MemoryBudget {
    /// A budget of `segments` coded segments (at least one) of 1 KiB each,
    /// in a pool of its own: for tests that count segments.
    pub fn segments(segments: usize) -> Self {
        let per_segment = 1024;
        let segments = u64::try_from(segments.max(1)).unwrap_or(u64::MAX);
        Self {
            pool: BufferPool::with_bytes(segments.saturating_mul(per_segment)),
            per_segment,
        }
    }

    /// As many coded segments as fit in `bytes`, in a pool of its own.
    pub fn bytes(bytes: u64, params: &EncodingParams) -> Self {
        Self::in_pool(BufferPool::with_bytes(bytes), params)
    }

    /// Coded segments of `params` leased from `pool`, which others may
    /// share.
    pub fn in_pool(pool: BufferPool, params: &EncodingParams) -> Self {
        Self {
            pool,
            per_segment: coded_segment_bytes(params),
        }
    }

    /// The budget's size in segments (at least one: a segment larger than
    /// the pool takes all of it).
    pub fn total(&self) -> usize {
        usize::try_from(self.pool.total_bytes() / self.per_segment)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Segments free right now.
    pub fn available(&self) -> usize {
        usize::try_from(self.pool.available_bytes() / self.per_segment).unwrap_or(usize::MAX)
    }

    pub(crate) fn try_take(&self) -> Option<SegmentPermit> {
        self.pool.try_lease(self.per_segment).map(Arc::new)
    }

    pub(crate) async fn take(&self) -> Option<SegmentPermit> {
        self.pool.lease(self.per_segment).await.map(Arc::new)
    }
}
