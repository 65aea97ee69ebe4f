//! Memory that uploads hold, counted once for the whole gateway.
//!
//! The engine leases room for each coded segment from a [`BufferPool`]
//! until its blocks are written; stores that must gather bytes before they
//! can send them (an S3 multipart part is at least 5 MiB) lease their
//! buffers from the same pool. One pool bounds both, so `upload_memory_mib`
//! means what it says whatever the servers are.
//!
//! Room is counted in KiB so that a tokio semaphore (at most `u32::MAX`
//! permits per acquisition) can hold any request the engine makes.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: u64 = 1024;

/// A shared amount of memory, leased out in pieces. Cheap to clone; clones
/// are the same pool.
#[derive(Clone, Debug)]
pub struct BufferPool {
    permits: Arc<Semaphore>,
    units: u32,
}

/// Room held in a [`BufferPool`]; it goes back when this is dropped.
#[derive(Debug)]
pub struct BufferLease {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
}

impl BufferLease {
    /// The bytes this lease holds (rounded up to whole KiB).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl BufferPool {
    /// A pool of `bytes` (at least 1 KiB; at most 4 TiB, far beyond any
    /// machine's memory).
    pub fn with_bytes(bytes: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// The pool's size in bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes not leased right now.
    pub fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    /// The units a lease of `bytes` takes: a request larger than the whole
    /// pool takes all of it, so that it waits for the pool to drain rather
    /// than forever.
    fn units_for(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units)
    }

    /// Leases `bytes`, waiting until they are free; `None` only if the pool
    /// was closed.
    pub async fn lease(&self, bytes: u64) -> Option<BufferLease> {
        let units = self.units_for(bytes);
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .ok()?;
        Some(BufferLease {
            _permit: permit,
            bytes: u64::from(units) * UNIT,
        })
    }

    /// Leases `bytes` if they are free now.
    pub fn try_lease(&self, bytes: u64) -> Option<BufferLease> {
        let units = self.units_for(bytes);
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(units)
            .ok()?;
        Some(BufferLease {
            _permit: permit,
            bytes: u64::from(units) * UNIT,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_come_back_when_dropped() {
        let pool = BufferPool::with_bytes(10 * UNIT);
        let a = pool.try_lease(6 * UNIT).expect("room for 6 KiB");
        assert!(pool.try_lease(6 * UNIT).is_none(), "only 4 KiB are left");
        let b = pool.try_lease(1).expect("a byte takes one unit");
        assert_eq!(b.bytes(), UNIT);
        assert_eq!(pool.available_bytes(), 3 * UNIT);
        drop(a);
        drop(b);
        assert_eq!(pool.available_bytes(), pool.total_bytes());
    }

    #[tokio::test]
    async fn a_request_larger_than_the_pool_waits_for_all_of_it() {
        let pool = BufferPool::with_bytes(4 * UNIT);
        let held = pool.try_lease(UNIT).expect("room");
        assert!(pool.try_lease(u64::MAX).is_none());
        drop(held);
        let all = pool.lease(u64::MAX).await.expect("the whole pool");
        assert_eq!(all.bytes(), pool.total_bytes());
    }
}
