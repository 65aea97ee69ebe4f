//! The namespace, copied into the grid, and its recovery.
//!
//! ```text
//!   namespace.db --backup API--> page image --whole (base) or changed pages (increment)
//!       --Uploader--> grid (a file like any other)
//!   root record (seq, caps of the newest copies) --put_record--> every server
//!   recover: root records --newest that verifies--> copy --Downloader--> its chain:
//!       base + increments in order, checked against the digest --> namespace.db
//! ```
//!
//! Everything derives from the root secret in the data directory
//! ([`secret`]); `docs/OPERATIONS.md` says how to keep it.

pub mod copy;
pub mod increment;
pub mod record;
pub mod recover;
pub mod secret;

pub use copy::{CopyKind, CopyReport, SnapshotError, Snapshots};
pub use record::{CopyEntry, RootRecord};
pub use secret::{RootSecret, SecretError};
