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

/// Do not raise carelessly: it is taken from the user's disk for good.
pub(crate) const RESERVE_BYTES: u64 = 8 << 20;

#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    dir: PathBuf,
    present: AtomicBool,
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
    /// One `statvfs` and no write: cheap enough to call on the reactor
    /// (see [`Namespace::space_is_short`](super::Namespace::space_is_short)).
    pub(crate) fn short(&self) -> bool {
        // Once released, the reserve's room is in `free` but not for new
        // content.
        let mark = if self.present.load(Ordering::Acquire) {
            RESERVE_BYTES
        } else {
            2 * RESERVE_BYTES
        };
        self.free().is_some_and(|free| free < mark)
    }
}
