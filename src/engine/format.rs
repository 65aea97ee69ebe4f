//! The share formats a new file can be written in, and one uploader over
//! both, so that a caller (the WebDAV layer) picks a format once and then
//! streams the same way whatever it picked.

use bytes::Bytes;
use serde::Deserialize;

use super::cap::Capability;
use super::chk::upload::ChkUploader;
use super::{EncodingParams, EngineResult, ShareProblem, UploadOptions, Uploader};
use crate::grid::Grid;

/// How new files are stored (`[encoding] format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Format {
    /// griddav's own format: any stream, its size known or not.
    #[default]
    #[serde(rename = "griddav-v1")]
    GriddavV1,
    /// Tahoe-LAFS immutable (CHK) files, which stock Tahoe reads, for
    /// uploads whose size is known at the start; the others stay
    /// `griddav-v1` (a CHK share's size is fixed before its first byte).
    #[serde(rename = "tahoe-chk")]
    TahoeChk,
}

/// A finished upload, in either format.
#[derive(Debug)]
pub struct Stored {
    /// What reads the file back: a secret for the namespace only.
    pub cap: Capability,
    /// All n shares stored on as many distinct servers as the grid has;
    /// when not, repair has work to do.
    pub complete: bool,
}

/// An upload in one of the formats.
#[derive(Debug)]
pub enum FileUploader {
    /// `griddav-v1`.
    Griddav(Box<Uploader>),
    /// `tahoe-chk` (or `URI:LIT:` for at most 55 bytes).
    Chk(Box<ChkUploader>),
}

impl FileUploader {
    /// Starts an upload in `format` where it can: `tahoe-chk` needs the
    /// size up front, so without one the file is `griddav-v1`.
    pub async fn start(
        format: Format,
        grid: Grid,
        params: EncodingParams,
        options: UploadOptions,
        size: Option<u64>,
    ) -> EngineResult<Self> {
        match (format, size) {
            (Format::TahoeChk, Some(size)) => Ok(Self::Chk(Box::new(
                ChkUploader::new(grid, params, options, size).await?,
            ))),
            _ => Ok(Self::Griddav(Box::new(
                Uploader::new(grid, params, options, size).await?,
            ))),
        }
    }

    /// What removes this upload's shares should the process die before it
    /// ends; `None` when it stores nothing (a `URI:LIT:` file).
    pub fn recovery_token(&self) -> Option<String> {
        match self {
            Self::Griddav(u) => Some(u.recovery_token()),
            Self::Chk(u) => u.recovery_token(),
        }
    }

    /// Accepts the next bytes of the file.
    pub async fn write(&mut self, data: Bytes) -> EngineResult<()> {
        match self {
            Self::Griddav(u) => u.write(data).await,
            Self::Chk(u) => u.write(data).await,
        }
    }

    /// Completes the upload: every share durable, or an error.
    pub async fn finish(self) -> EngineResult<Stored> {
        match self {
            Self::Griddav(u) => u.finish_counted().await.map(|f| Stored {
                cap: Capability::Griddav(f.cap),
                complete: f.complete,
            }),
            Self::Chk(u) => u.finish().await.map(|f| Stored {
                cap: f.cap,
                complete: f.complete,
            }),
        }
    }

    /// Stops the upload and removes what it wrote. Idempotent.
    pub async fn abort(&mut self) {
        match self {
            Self::Griddav(u) => u.abort().await,
            Self::Chk(u) => u.abort().await,
        }
    }

    /// Shares lost so far, and why.
    pub fn problems(&self) -> &[ShareProblem] {
        match self {
            Self::Griddav(u) => u.problems(),
            Self::Chk(u) => u.problems(),
        }
    }
}
