//! Room kept for the namespace on a full disk.
//!
//! SQLite needs a little space for any write, a DELETE's included. A file
//! of [`RESERVE_BYTES`] beside the database holds that room: when a write
//! fails because the disk is full, the file is removed and the write tried
//! again, so DELETE, MOVE and UNLOCK (which free space or need next to
//! none) still commit, and it is put back once the disk has room again.
//! New content is refused below the same mark ([`Namespace::space_is_short`]), so that
//! uploads do not eat the room freed for removals.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Do not raise carelessly: it is taken from the user's disk for good.
pub(crate) const RESERVE_BYTES: u64 = 8 << 20;

/// A free-space reading at least [`FAR_FROM_SHORT`] answers "not short"
/// again, without asking the file system, for this long. Every PUT asks,
/// and asking is a trip to the blocking pool (about three thread switches
/// on this machine) for a `statvfs`; no write fills that much in between.
const READING_REUSE: Duration = Duration::from_secs(1);

/// See [`READING_REUSE`].
const FAR_FROM_SHORT: u64 = 8 << 30;

#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    dir: PathBuf,
    present: AtomicBool,
    /// When the last reading far from short was taken.
    far_from_short_at: Mutex<Option<Instant>>,
}

impl Reserve {
    /// Creates the reserve file beside `db` if there is room for it.
    pub(crate) fn open(db: &Path) -> Reserve {
        let mut name = db.as_os_str().to_owned();
        name.push(".reserve");
        let reserve = Reserve {
            path: PathBuf::from(name),
            dir: db
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned(),
            present: AtomicBool::new(false),
            far_from_short_at: Mutex::new(None),
        };
        let present = std::fs::metadata(&reserve.path).is_ok_and(|m| m.len() >= RESERVE_BYTES);
        reserve.present.store(present, Ordering::Release);
        reserve.adjust();
        reserve
    }

    /// Free bytes on the database's file system, if it says.
    pub(crate) fn free(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        // fsblkcnt_t and c_ulong are u64 on 64-bit Linux only.
        #[allow(clippy::useless_conversion)]
        u64::from(stat.blocks_available()).checked_mul(u64::from(stat.fragment_size()))
    }

    /// Before a write: takes the reserve back once the disk has room again.
    /// Blocking (a statvfs, rarely a file write).
    ///
    /// The reserve is not given up here when the disk runs low, only when
    /// a write has failed for want of room ([`Reserve::release`]): given up
    /// earlier, whatever else is filling the disk (another program, or a
    /// file being copied in) takes the room before the removal it was kept
    /// for arrives.
    pub(crate) fn adjust(&self) {
        if self.present.load(Ordering::Acquire) {
            return;
        }
        let Some(free) = self.free() else { return };
        if free > 4 * RESERVE_BYTES {
            match self.create() {
                Ok(()) => self.present.store(true, Ordering::Release),
                Err(e) => {
                    let _ = std::fs::remove_file(&self.path);
                    tracing::warn!(error = %e, "cannot create the namespace's reserve");
                }
            }
        }
    }

    /// After a write failed because the disk is full: gives the reserve up
    /// so that the write can be tried again. Whether to try it again: true
    /// unless the file is there and cannot be removed. A writer that finds
    /// it already given up tries again too: the writer that gave it up
    /// failed at the same moment, and the room it freed is for both.
    pub(crate) fn release(&self) -> bool {
        if self
            .present
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return true;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(
                    "the namespace's disk is full: its reserve is released so that removals still work; new content is refused until space is freed"
                );
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot release the namespace's reserve");
                false
            }
        }
    }

    fn create(&self) -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&self.path)?;
        // Written, not sparse: the blocks must really be taken.
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..RESERVE_BYTES / chunk.len() as u64 {
            file.write_all(&chunk)?;
        }
        file.sync_all()
    }

    /// Whether the disk is below the mark where new content is refused.
    /// Blocking (a statvfs).
    pub(crate) fn short(&self) -> bool {
        // Once released, the reserve's room is in `free` but not for new
        // content.
        let mark = if self.present.load(Ordering::Acquire) {
            RESERVE_BYTES
        } else {
            2 * RESERVE_BYTES
        };
        let Some(free) = self.free() else {
            return false;
        };
        if free >= FAR_FROM_SHORT {
            *self
                .far_from_short_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        free < mark
    }

    /// Whether a reading younger than [`READING_REUSE`] was far from
    /// short: new content is then let in without asking again.
    pub(crate) fn recently_far_from_short(&self) -> bool {
        self.far_from_short_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < READING_REUSE)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    /// A reading far from short is reused for a while; nearer to full,
    /// every question goes to the file system.
    #[test]
    fn only_a_recent_reading_far_from_short_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::open(&dir.path().join("namespace.db"));
        assert!(!reserve.recently_far_from_short(), "nothing read yet");
        let free = reserve.free().unwrap();
        assert!(!reserve.short());
        assert_eq!(reserve.recently_far_from_short(), free >= FAR_FROM_SHORT);
        let old = Instant::now().checked_sub(READING_REUSE).unwrap();
        *reserve.far_from_short_at.lock().unwrap() = Some(old);
        assert!(!reserve.recently_far_from_short(), "too old: asked again");
    }
}
