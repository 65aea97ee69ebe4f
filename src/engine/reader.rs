//! [`FileReader`]: one reader for every capability a namespace row can
//! hold, so that the WebDAV layer and the command line read griddav files,
//! Tahoe-LAFS CHK files and literal files alike.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use super::chk::read::ChkReader;
use super::{Capability, Downloader, EngineError, EngineResult, ShareProblem};
use crate::grid::Grid;

/// A verified reader of one file version, whatever its format.
#[derive(Debug)]
pub enum FileReader {
    /// griddav's own format.
    Griddav(Arc<Downloader>),
    /// A Tahoe-LAFS immutable file.
    Chk(Arc<ChkReader>),
    /// A Tahoe-LAFS literal file: its bytes were in the capability.
    Lit(Bytes),
}

impl FileReader {
    /// Finds the file's shares and verifies what the capability vouches
    /// for (griddav's trailer, Tahoe's URI extension block); a literal
    /// file needs nothing.
    pub async fn open(grid: &Grid, cap: &Capability) -> EngineResult<Self> {
        Ok(match cap {
            Capability::Griddav(cap) => Self::Griddav(Arc::new(Downloader::open(grid, cap).await?)),
            Capability::Chk(cap) => Self::Chk(Arc::new(ChkReader::open(grid, cap).await?)),
            Capability::Lit(cap) => Self::Lit(Bytes::from(cap.data.clone())),
        })
    }

    /// Plaintext bytes of the file.
    pub fn size(&self) -> u64 {
        match self {
            Self::Griddav(d) => d.size(),
            Self::Chk(r) => r.size(),
            Self::Lit(b) => b.len() as u64,
        }
    }

    /// Plaintext bytes per segment: the unit a read fetches and verifies.
    pub fn segment_size(&self) -> u64 {
        match self {
            Self::Griddav(d) => d.segment_size(),
            Self::Chk(r) => r.segment_size(),
            Self::Lit(b) => (b.len() as u64).max(1),
        }
    }

    /// The first share problems seen.
    pub fn problems(&self) -> Vec<ShareProblem> {
        match self {
            Self::Griddav(d) => d.problems(),
            Self::Chk(r) => r.problems(),
            Self::Lit(_) => Vec::new(),
        }
    }

    /// Whether a share could not be reached while reading.
    pub fn degraded(&self) -> bool {
        match self {
            Self::Griddav(d) => d.degraded(),
            Self::Chk(r) => r.degraded(),
            Self::Lit(_) => false,
        }
    }

    /// Whether the file can be read now, before a GET commits to a 200.
    pub async fn check_readable(&self) -> EngineResult<()> {
        match self {
            Self::Griddav(d) => d.check_readable().await,
            Self::Chk(r) => r.check_readable().await,
            Self::Lit(_) => Ok(()),
        }
    }

    /// Exactly the bytes `offset..offset + len` of the file.
    pub async fn read(&self, offset: u64, len: u64) -> EngineResult<Bytes> {
        match self {
            Self::Griddav(d) => d.read(offset, len).await,
            Self::Chk(r) => r.read(offset, len).await,
            Self::Lit(b) => lit_slice(b, offset, len),
        }
    }

    /// The file from `offset` to its end, with segments fetched ahead.
    pub fn stream(self: Arc<Self>, offset: u64) -> BoxStream<'static, EngineResult<Bytes>> {
        match &*self {
            Self::Griddav(d) => Arc::clone(d).stream(offset).boxed(),
            Self::Chk(r) => Arc::clone(r).stream(offset).boxed(),
            Self::Lit(b) => lit_stream(b, offset),
        }
    }

    /// What a GET sends: [`FileReader::stream`], in griddav's case in
    /// pieces of at most a block within a shared read-ahead budget.
    pub fn pieces(self: Arc<Self>, offset: u64) -> BoxStream<'static, EngineResult<Bytes>> {
        match &*self {
            Self::Griddav(d) => Arc::clone(d).pieces(offset).boxed(),
            _ => self.stream(offset),
        }
    }

    /// Reads every byte of every share and reports the problems found
    /// (none for a literal file), calling `progress` as segments are done.
    pub async fn verify_all_shares_with_progress(
        &self,
        progress: impl FnMut(u64),
    ) -> Vec<ShareProblem> {
        match self {
            Self::Griddav(d) => d.verify_all_shares_with_progress(progress).await,
            Self::Chk(r) => r.verify_all_shares_with_progress(progress).await,
            Self::Lit(_) => Vec::new(),
        }
    }
}

fn lit_slice(b: &Bytes, offset: u64, len: u64) -> EngineResult<Bytes> {
    let size = b.len() as u64;
    match offset.checked_add(len).filter(|end| *end <= size) {
        // Both within a literal file's few bytes.
        #[allow(clippy::cast_possible_truncation)]
        Some(end) => Ok(b.slice(offset as usize..end as usize)),
        None => Err(EngineError::RangeBeyondEnd {
            start: offset,
            end: offset.saturating_add(len),
            size,
        }),
    }
}

fn lit_stream(b: &Bytes, offset: u64) -> BoxStream<'static, EngineResult<Bytes>> {
    let size = b.len() as u64;
    if offset >= size {
        return stream::empty().boxed();
    }
    stream::iter([lit_slice(b, offset, size - offset)]).boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::grid::memory::memory_grid;

    #[tokio::test]
    async fn literal_files_read_from_their_capability() {
        let (grid, _) = memory_grid(1);
        let cap: Capability = "URI:LIT:nbswy3dp".parse().unwrap();
        let reader = Arc::new(FileReader::open(&grid, &cap).await.unwrap());
        assert_eq!(reader.size(), 5);
        reader.check_readable().await.unwrap();
        assert_eq!(reader.read(1, 3).await.unwrap(), "ell");
        assert!(reader.read(3, 3).await.is_err());
        let rest: Vec<Bytes> = Arc::clone(&reader)
            .pieces(2)
            .map(|p| p.unwrap())
            .collect()
            .await;
        assert_eq!(rest.concat(), b"llo");
        assert_eq!(Arc::clone(&reader).stream(5).count().await, 0);
        assert!(reader
            .verify_all_shares_with_progress(|_| {})
            .await
            .is_empty());
    }
}
