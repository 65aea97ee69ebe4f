//! The last bytes of an upload of declared size run through a shallow
//! pipeline.
//!
//! A client's `close()` waits for every byte the server holds unwritten
//! when the last one arrives: the segment being filled, the segments being
//! coded and every block queued or being written to a share. The queues
//! that keep both cores and the disk busy in the middle of a file are,
//! at its end, only something the client waits through: about 6 MiB of
//! file at the defaults, 12 ms at 500 MB/s. So once fewer than
//! [`super::UploadOptions::taper_from_end`] bytes of the declared size
//! remain, a segment goes to the coder only while fewer than
//! [`super::UploadOptions::taper_depth`] others are between the coder and
//! the last of their blocks written. The client's own send buffer then
//! holds what the server's queues held, and its last `write` returns
//! later, with less left to drain.
//!
//! Measured on this 2-core VM, a fresh local grid per size, alternating
//! runs, 6 MiB from the end and a depth of 2 against no taper: close after
//! the last byte 256 MiB 12.2-15.6 ms against 15.0-21.2, 1 GiB 14.8-18.6
//! against 17.3-21.9, 16 MiB 13.4-22.1 against 14.1-24.0; throughput the
//! same within the noise (1 GiB 492-580 MB/s against 442-521). A depth of
//! 1 (coding and writing in turn) was slower and no shorter (19-23 ms at
//! 256 MiB). At 4 GiB the close did not change (21-29 ms): there most
//! of it was building the shares' tails after the last byte, since made
//! cheaper (see `build_tails` in `upload.rs`).
//!
//! Each segment takes a place from a semaphore when it goes to the coder
//! and gives it back when its last block is written (the place rides with
//! the blocks, like the memory budget's permit). Before the taper there
//! are far more places than the queues can ever fill and nobody waits.
//! At the taper the upload takes all but `depth` of them for good.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Places before the taper: more segments than an upload's queues can
/// hold, whatever `max_in_flight` says, so taking one never waits.
const PLACES: u32 = 1 << 20;

/// A segment's place: given back when the last holder (the coder's queue
/// entry, then one per block queued to a share) drops it.
pub(crate) type SegmentPlace = Arc<OwnedSemaphorePermit>;

/// One upload's places; see the module docs.
#[derive(Debug)]
pub(super) struct Taper {
    places: Arc<Semaphore>,
    /// File offset from which segments run shallow; `None` for an upload
    /// of unknown size or with the taper off.
    from: Option<u64>,
    depth: u32,
    /// The places taken for good at the taper, once it has begun.
    narrowed: Option<OwnedSemaphorePermit>,
}

impl Taper {
    /// For an upload declaring `expected_size` bytes (the taper needs a
    /// declared end): shallow for the last `from_end` bytes, `depth`
    /// segments deep. A `from_end` of 0 turns it off.
    pub(super) fn new(expected_size: Option<u64>, from_end: u64, depth: u32) -> Self {
        let from = expected_size
            .filter(|_| from_end > 0)
            .map(|size| size.saturating_sub(from_end));
        Self {
            places: Arc::new(Semaphore::new(PLACES as usize)),
            from,
            depth: depth.clamp(1, PLACES),
            narrowed: None,
        }
    }

    /// Whether the segment starting at file offset `offset` runs shallow.
    /// The caller must then hand every segment it holds coded to the share
    /// writers before [`Taper::place`]: their places come back only once
    /// their blocks are written.
    pub(super) fn is_shallow(&self, offset: u64) -> bool {
        self.from.is_some_and(|from| offset >= from)
    }

    /// A place for the segment starting at `offset`. In the shallow part
    /// this waits until fewer than `depth` segments are still unwritten.
    /// `None` only if the semaphore were closed, which nothing here does:
    /// the segment then goes without a place, never without its bytes.
    pub(super) async fn place(&mut self, offset: u64) -> Option<SegmentPlace> {
        if !self.is_shallow(offset) {
            return Arc::clone(&self.places)
                .try_acquire_owned()
                .ok()
                .map(Arc::new);
        }
        if self.narrowed.is_none() {
            let keep = PLACES - self.depth;
            self.narrowed = Arc::clone(&self.places).acquire_many_owned(keep).await.ok();
        }
        Arc::clone(&self.places)
            .acquire_owned()
            .await
            .ok()
            .map(Arc::new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn before_the_taper_places_never_wait() {
        let mut taper = Taper::new(Some(100 << 20), 6 << 20, 2);
        let held: Vec<_> = (0..64)
            .map(|_| Arc::clone(&taper.places).try_acquire_owned().unwrap())
            .collect();
        let place = tokio::time::timeout(Duration::from_secs(5), taper.place(0)).await;
        assert!(place.unwrap().is_some());
        assert!(!taper.is_shallow((94 << 20) - 1));
        assert!(taper.is_shallow(94 << 20));
        drop(held);
    }

    #[tokio::test]
    async fn in_the_taper_a_place_waits_for_an_earlier_segment_written() {
        let mut taper = Taper::new(Some(10 << 20), 6 << 20, 2);
        let first = taper.place(4 << 20).await.unwrap();
        let second = taper.place(5 << 20).await.unwrap();
        // Two unwritten: the third waits until one of them is written.
        let waiting = tokio::time::timeout(Duration::from_millis(50), taper.place(6 << 20)).await;
        assert!(waiting.is_err(), "a third place was given at depth 2");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), taper.place(6 << 20))
            .await
            .unwrap();
        assert!(third.is_some());
        drop(second);
    }

    #[test]
    fn an_upload_of_unknown_size_or_with_the_taper_off_never_tapers() {
        assert!(!Taper::new(None, 6 << 20, 2).is_shallow(u64::MAX));
        assert!(!Taper::new(Some(1 << 20), 0, 2).is_shallow(1 << 20));
        // Smaller than the taper: shallow from its first byte.
        assert!(Taper::new(Some(1 << 20), 6 << 20, 2).is_shallow(0));
    }
}
