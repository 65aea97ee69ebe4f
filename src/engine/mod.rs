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

pub mod budget;
pub mod cap;
pub mod codec;
pub mod crypto;
pub mod delete;
pub mod download;
#[cfg(test)]
mod format_vectors;
pub mod hashtree;
pub mod layout;
pub mod upload;

pub use budget::MemoryBudget;
pub use cap::FileCap;
pub use download::Downloader;
pub use upload::Uploader;

use std::fmt;

use crate::grid::{GridError, ShareNum};

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
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 || self.k > self.happy || self.happy > self.n || self.n > 256 {
            return Err(format!(
                "need 1 <= k <= happy <= n <= 256, got k={} happy={} n={}",
                self.k, self.happy, self.n
            ));
        }
        if self.segment_size == 0 || self.segment_size > layout::MAX_SEGMENT_SIZE {
            return Err(format!(
                "segment size must be 1..={} bytes, got {}",
                layout::MAX_SEGMENT_SIZE,
                self.segment_size
            ));
        }
        Ok(())
    }
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
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            share_queue: 2,
            budget: None,
        }
    }
}

/// What went wrong with one share while reading or writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareProblem {
    /// `None` when a whole server failed (a listing, say).
    pub share: Option<ShareNum>,
    pub server: String,
    pub kind: ProblemKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The server could not be reached or failed the request.
    Unavailable(String),
    /// The server returned bytes that failed verification.
    Corrupt(String),
}

impl fmt::Display for ShareProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.share {
            Some(share) => write!(f, "share {share} on {}: ", self.server)?,
            None => write!(f, "{}: ", self.server)?,
        }
        match &self.kind {
            ProblemKind::Unavailable(why) => write!(f, "unavailable: {why}"),
            ProblemKind::Corrupt(why) => write!(f, "corrupt: {why}"),
        }
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
pub enum EngineError {
    #[error("invalid encoding parameters: {0}")]
    InvalidParams(String),
    #[error("invalid capability: {0}")]
    InvalidCap(String),
    #[error("upload expected {expected} bytes, got {written}")]
    SizeMismatch { expected: u64, written: u64 },
    #[error("upload failed: only {live} distinct servers hold writable shares, {happy} needed (`happy`) ({})", Problems(.problems))]
    NotHappy {
        live: usize,
        happy: u16,
        problems: Vec<ShareProblem>,
    },
    #[error("not enough good shares: {have} of {need} needed ({})", Problems(.problems))]
    NotEnoughShares {
        have: usize,
        need: u16,
        problems: Vec<ShareProblem>,
    },
    #[error("range {start}..{end} is beyond the end of a {size}-byte file")]
    RangeBeyondEnd { start: u64, end: u64, size: u64 },
    #[error("segment {segment}: shares decode to ciphertext the uploader did not hash")]
    Inconsistent { segment: u64 },
    #[error("shares could not be deleted everywhere ({})", Problems(.problems))]
    DeleteIncomplete { problems: Vec<ShareProblem> },
    #[error("the upload was aborted or failed earlier")]
    Aborted,
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type EngineResult<T> = Result<T, EngineError>;
