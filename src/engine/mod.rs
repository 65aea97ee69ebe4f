//! The streaming encode-and-upload engine. It knows nothing of WebDAV.
//!
//! ```text
//! write(Bytes) -> segmenter -> AES-256-CTR -> Reed-Solomon k-of-N -> SHA-256 per block
//!                                (blocking pool, <= max_in_flight segments)
//!              -> N share tasks, each appending to one ShareStore (bounded channels)
//! finish()     -> last segment, hash trees, trailers -> >= happy shares finished -> FileCap
//! ```
//!
//! [`Uploader`] turns a byte stream into shares without knowing the size in
//! advance; [`Downloader`] reads any byte range back, verifying every block
//! against the capability before it returns a byte.

// Share bytes and clients choose most numbers here: every narrowing cast
// says why it cannot truncate, or is a checked conversion with an error.
#![warn(clippy::cast_possible_truncation)]

pub mod budget;
pub mod cap;
pub mod chk;
pub mod codec;
pub mod crypto;
pub mod delete;
pub mod download;
pub mod format;
#[cfg(test)]
mod format_vectors;
pub mod hashtree;
pub mod layout;
pub mod reader;
pub mod repair;
mod taper;
pub mod upload;

pub use budget::MemoryBudget;
pub use cap::{AnyCapError, CapError, Capability, FileCap};
pub use codec::CodecError;
pub use download::Downloader;
pub use format::{FileUploader, Format};
pub use reader::FileReader;
pub use upload::Uploader;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::grid::{GridError, ShareNum};
use layout::LayoutError;

/// How a file is cut and coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodingParams {
    /// Shares needed to read the file.
    pub k: u16,
    /// Shares that must be stored for an upload to succeed.
    pub happy: u16,
    /// Shares made.
    pub n: u16,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
}

impl Default for EncodingParams {
    fn default() -> Self {
        Self {
            k: 3,
            happy: 7,
            n: 10,
            segment_size: 1 << 20,
        }
    }
}

impl EncodingParams {
    /// Checks `1 <= k <= happy <= n <= 256` and `0 < segment size <= 64 MiB`.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.k == 0 || self.k > self.happy || self.happy > self.n || self.n > 256 {
            return Err(ParamsError::Counts {
                k: self.k,
                happy: self.happy,
                n: self.n,
            });
        }
        if self.segment_size == 0 || self.segment_size > layout::MAX_SEGMENT_SIZE {
            return Err(ParamsError::SegmentSize {
                got: self.segment_size,
            });
        }
        Ok(())
    }
}

/// Why encoding parameters cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum ParamsError {
    /// The share counts are out of order or out of range.
    #[error("need 1 <= k <= happy <= n <= 256, got k={k} happy={happy} n={n}")]
    Counts { k: u16, happy: u16, n: u16 },
    /// The segment size is zero or above the format's limit.
    #[error(
        "segment size must be 1..={} bytes, got {got}",
        layout::MAX_SEGMENT_SIZE
    )]
    SegmentSize { got: u32 },
    /// There is nowhere to put shares.
    #[error("the grid has no servers")]
    NoServers,
    /// The erasure codec refused these counts.
    #[error("{k}-of-{n}: {source}")]
    Codec {
        k: usize,
        n: usize,
        #[source]
        source: reed_solomon_erasure::Error,
    },
}

/// Upload tuning that is not part of the format.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Segments being encoded or waiting for their share writes; `write`
    /// waits when this many are in flight.
    pub max_in_flight: usize,
    /// Blocks queued per share writer beyond the one being written.
    pub share_queue: usize,
    /// Shared with other uploads to bound their memory together.
    pub budget: Option<MemoryBudget>,
    /// Bytes before a declared end from which the pipeline runs shallow,
    /// so that less is left to write after the last byte (see
    /// `engine/taper.rs`); 0 turns it off.
    pub taper_from_end: u64,
    /// Segments between the coder and their last block written once the
    /// pipeline runs shallow (at least 1).
    pub taper_depth: u32,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            // Two, not four: one segment coding while the next fills
            // keeps two cores busy, and a shallower pipeline leaves less
            // to drain after the last byte. 1 GiB PUT, alternating runs:
            // 500-538 MB/s and close 18-23 ms against 369-491 and 18-30.
            max_in_flight: 2,
            share_queue: 2,
            budget: None,
            // More than a client's send buffer (3-4 MB on loopback) plus
            // the queues: the taper must have begun before the client's
            // last `write` returns to shorten its `close`.
            taper_from_end: 6 << 20,
            taper_depth: 2,
        }
    }
}

/// What went wrong with one share while reading or writing.
#[derive(Clone, Debug)]
pub struct ShareProblem {
    /// `None` when a whole server failed (a listing, say).
    pub share: Option<ShareNum>,
    /// The server it was on ([`crate::grid::ShareStore::server_id`]).
    pub server: String,
    /// What went wrong, and by whose fault.
    pub kind: ProblemKind,
}

/// Why a share could not be used, by whose fault: the server's (it failed
/// or did not answer), the data's (it failed verification), a full disk,
/// or our own (a task of ours that died).
#[derive(Clone, Debug, thiserror::Error)]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum ProblemKind {
    /// The server could not be reached or failed the request.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Arc<GridError>),
    /// The server listed nothing within the time limit.
    #[error("unavailable: no listing within {0:?}")]
    NoListing(Duration),
    /// The listing came later than the others; the read went on without it.
    #[error("unavailable: listing too slow; read without it")]
    ListingSlow,
    /// A read got no answer within the time limit.
    #[error("unavailable: no answer within {0:?}")]
    TimedOut(Duration),
    /// No server listed the share.
    #[error("unavailable: no server holds this share")]
    Missing,
    /// The server returned bytes that failed verification.
    #[error("corrupt: {0}")]
    Corrupt(#[source] Corruption),
    /// The server is out of room (a full disk or quota).
    #[error("out of space: {0}")]
    NoSpace(#[source] Arc<GridError>),
    /// A task of ours panicked or was cancelled: a bug, not the server's.
    #[error("unavailable: {what} failed: {source}")]
    TaskFailed {
        what: &'static str,
        #[source]
        source: Arc<tokio::task::JoinError>,
    },
    /// A task of ours ended without saying why.
    #[error("unavailable: {what} ended without a result")]
    TaskGone { what: &'static str },
}

impl ProblemKind {
    /// What a failed server request says about the share.
    pub fn of(e: GridError) -> Self {
        if e.is_out_of_space() {
            ProblemKind::NoSpace(Arc::new(e))
        } else {
            ProblemKind::Unavailable(Arc::new(e))
        }
    }

    /// The share's bytes failed verification.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, ProblemKind::Corrupt(_))
    }

    /// Our own fault rather than the server's or the data's.
    pub fn is_ours(&self) -> bool {
        matches!(
            self,
            ProblemKind::TaskFailed { .. } | ProblemKind::TaskGone { .. }
        )
    }

    /// The share could not be had now (not corrupt, not a full disk): it
    /// may be there on another try.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, ProblemKind::Corrupt(_) | ProblemKind::NoSpace(_))
    }
}

/// What about a share failed verification. The messages name the check,
/// never share content.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum Corruption {
    /// The share is shorter than its fixed header and tail.
    #[error("share is only {len} bytes")]
    TooShort { len: u64 },
    /// The share's length disagrees with the one its trailer implies.
    #[error("share is {len} bytes, the trailer implies {expected}")]
    WrongLength { len: u64, expected: u64 },
    /// The server returned fewer tail bytes than asked for.
    #[error("read of {want} bytes of trailer and footer returned {got}")]
    ShortTail { got: usize, want: u64 },
    /// The trailer does not parse.
    #[error("trailer: {0}")]
    Trailer(#[source] LayoutError),
    /// The trailer is not the one the capability names.
    #[error("trailer hash does not match the capability")]
    TrailerHash,
    /// The header's layout is invalid.
    #[error("layout: {0}")]
    Layout(#[source] LayoutError),
    /// The footer does not parse.
    #[error("footer: {0}")]
    Footer(#[source] LayoutError),
    /// The header's layout is not the one the trailer implies.
    #[error("header does not match the trailer")]
    HeaderMismatch,
    /// This share's tail differs from the one already verified on another.
    #[error("trailer or footer differs from the verified trailer")]
    TailMismatch,
    /// A block was read before its share's block tree was verified.
    #[error("block tree not verified")]
    BlockTreeUnverified,
    /// A block read came back with the wrong length.
    #[error("read of block {segment} returned {got} bytes, not {want}")]
    BlockLength { segment: u64, got: usize, want: u64 },
    /// A block's hash is not the one in the verified block tree.
    #[error("block {segment} does not match its block tree")]
    BlockHash { segment: u64 },
    /// The share's block-tree root is not the one the share tree holds.
    #[error("block-tree root not in the share tree")]
    BlockRootNotInShareTree,
    /// The stored block tree was not built from the stored blocks.
    #[error("stored block tree does not match the blocks")]
    BlockTreeMismatch,
    /// The stored ciphertext tree has fewer hashes than segments need.
    #[error("stored ciphertext tree is short")]
    CiphertextTreeShort,
    /// The stored ciphertext tree's root is not the trailer's.
    #[error("stored ciphertext tree does not match the trailer")]
    CiphertextTreeMismatch,
    /// A Tahoe-LAFS CHK share failed a check of its structure.
    #[error("Tahoe share: {0}")]
    Chk(&'static str),
    /// Only this share's block makes the segment's ciphertext hash wrong.
    #[error("block {segment} disagrees with the other shares and the ciphertext tree")]
    Disagrees { segment: u64 },
}

impl From<Corruption> for ProblemKind {
    fn from(c: Corruption) -> Self {
        ProblemKind::Corrupt(c)
    }
}

impl fmt::Display for ShareProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.share {
            Some(share) => write!(f, "share {share} on {}: ", self.server)?,
            None => write!(f, "{}: ", self.server)?,
        }
        write!(f, "{}", self.kind)
    }
}

/// Formats a list of problems for an error message.
pub struct Problems<'a>(pub &'a [ShareProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no share problems seen");
        }
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// Why an upload, read, delete or repair failed.
#[allow(missing_docs)] // fields are named in each variant's message
pub enum EngineError {
    /// The encoding parameters cannot be used.
    #[error("invalid encoding parameters: {0}")]
    InvalidParams(#[from] ParamsError),
    /// The capability string does not parse.
    #[error("invalid capability: {0}")]
    InvalidCap(#[from] cap::CapError),
    /// The `tahoe-chk` format refused the file or its shares.
    #[error("tahoe-chk: {0}")]
    Chk(#[from] chk::ChkError),
    /// Repair of a Tahoe-LAFS CHK file was asked for: griddav reads and
    /// checks such files but does not rebuild their shares.
    #[error("repair of Tahoe-LAFS CHK files is not supported: repair it with Tahoe (`tahoe check --repair CAP`)")]
    ChkRepairUnsupported,
    /// The upload's body was not the length it declared.
    #[error("upload expected {expected} bytes, got {written}")]
    SizeMismatch { expected: u64, written: u64 },
    /// Too few distinct servers took shares for the file to be safe.
    #[error("upload failed: only {live} distinct servers hold writable shares, {happy} needed (`happy`) ({})", Problems(.problems))]
    NotHappy {
        live: usize,
        happy: u16,
        problems: Vec<ShareProblem>,
    },
    /// Too many servers are out of room for the upload to be stored on
    /// `happy` of them: a full grid, not an outage.
    #[error("upload failed: out of space on the grid: only {live} distinct servers had room, {happy} needed (`happy`) ({})", Problems(.problems))]
    NoSpace {
        live: usize,
        happy: u16,
        problems: Vec<ShareProblem>,
    },
    /// Fewer than `k` shares could be read and verified.
    #[error("not enough good shares: {have} of {need} needed ({})", Problems(.problems))]
    NotEnoughShares {
        have: usize,
        need: u16,
        problems: Vec<ShareProblem>,
    },
    /// The requested range runs past the file's end.
    #[error("range {start}..{end} is beyond the end of a {size}-byte file")]
    RangeBeyondEnd { start: u64, end: u64, size: u64 },
    /// Verified shares decode to ciphertext the trailer does not vouch for.
    #[error("segment {segment}: shares decode to ciphertext the uploader did not hash")]
    Inconsistent { segment: u64 },
    /// Some shares may be left behind on servers that failed the delete.
    #[error("shares could not be deleted everywhere ({})", Problems(.problems))]
    DeleteIncomplete { problems: Vec<ShareProblem> },
    /// The upload was used after it was aborted or failed.
    #[error("the upload was aborted or failed earlier")]
    Aborted,
    /// A grid request failed outside any one share's read or write.
    #[error(transparent)]
    Grid(#[from] GridError),
    /// No server would take a new share of a file being repaired.
    #[error("repair: no server would take a new share")]
    NoRepairTarget,
    /// New shares of a file being repaired failed as they were written.
    #[error("repair: new shares could not be written ({})", Problems(.problems))]
    RepairWritesFailed { problems: Vec<ShareProblem> },
    /// A task of ours panicked or was cancelled: a bug.
    #[error("internal error: {what} failed: {source}")]
    TaskFailed {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The upload memory budget was closed while an upload waited on it.
    #[error("internal error: memory budget closed")]
    BudgetClosed,
    /// A trailer or layout we made or verified ourselves is invalid: a bug.
    #[error("internal error: {what}: {source}")]
    OwnLayout {
        what: &'static str,
        #[source]
        source: LayoutError,
    },
    /// Shares that verified would not decode: a bug in the codec's use.
    #[error("internal error: decoding segment {segment}: {source}")]
    Decode {
        segment: u64,
        #[source]
        source: CodecError,
    },
    /// A repair read fewer bytes than the file holds without an error.
    #[error("internal error: read {read} bytes of a {size}-byte file")]
    ShortRead { read: u64, size: u64 },
    /// Shares re-encoded for a repair hash to another trailer than the
    /// capability's; nothing was written.
    #[error("internal error: re-encoded shares do not match the capability; nothing written")]
    ReencodedMismatch,
}

/// The result of an engine operation.
pub type EngineResult<T> = Result<T, EngineError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_errors_say_which_rule_is_broken() {
        let ok = EncodingParams::default();
        assert_eq!(ok.validate(), Ok(()));
        let counts = EncodingParams { happy: 11, ..ok };
        assert_eq!(
            counts.validate(),
            Err(ParamsError::Counts {
                k: 3,
                happy: 11,
                n: 10
            })
        );
        let segment = EncodingParams {
            segment_size: 0,
            ..ok
        };
        assert_eq!(segment.validate(), Err(ParamsError::SegmentSize { got: 0 }));
        assert!(segment.validate().is_err_and(|e| e
            .to_string()
            .contains("segment size must be 1..=67108864 bytes")));
    }
}
