//! Tahoe's segment and block sizes for an immutable file
//! (allmydata/immutable/upload.py `get_all_encoding_parameters`,
//! encode.py `_got_all_encoding_parameters`).

use super::ChkError;

/// Tahoe's default maximum segment size (`DEFAULT_IMMUTABLE_MAX_SEGMENT_SIZE`).
pub const DEFAULT_MAX_SEGMENT_SIZE: u64 = 1024 * 1024;

/// Files up to this size are literal caps (`URI:LIT:`) in Tahoe, never
/// shares (`URI_LIT_SIZE_THRESHOLD`).
pub const LIT_SIZE_THRESHOLD: u64 = 55;

/// 2^24 segments: 16 TiB at Tahoe's default 1 MiB segment.
pub const MAX_SEGMENTS: u64 = 1 << 24;

/// Everything about a CHK file's shape that follows from its size and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChkParams {
    /// Plaintext bytes of the file.
    pub size: u64,
    /// Shares needed to read the file.
    pub k: u16,
    /// Shares written.
    pub n: u16,
    /// Plaintext bytes per segment, a multiple of k.
    pub segment_size: u64,
    /// `ceil(size / segment_size)`, at least 1.
    pub num_segments: u64,
    /// Bytes per block of a full segment (`segment_size / k`).
    pub block_size: u64,
    /// Ciphertext bytes in the last segment (never 0).
    pub tail_segment_size: u64,
    /// The last segment zero-padded to a multiple of k before coding.
    pub tail_segment_padded: u64,
    /// Bytes per block of the last segment: `tail_segment_padded / k`.
    pub tail_block_size: u64,
    /// Block bytes in one share: `ceil(size / k)`.
    pub share_data_size: u64,
}

impl ChkParams {
    /// The shape Tahoe's uploader chooses: the segment size is
    /// `min(max_segment_size, size)` rounded up to a multiple of k.
    pub fn for_upload(size: u64, k: u16, n: u16, max_segment_size: u64) -> Result<Self, ChkError> {
        let segsize = size.min(max_segment_size);
        let segsize = segsize
            .div_ceil(u64::from(k.max(1)))
            .checked_mul(u64::from(k))
            .ok_or(ChkError::BadParams("segment size overflows"))?;
        Self::new(size, k, n, segsize)
    }

    /// The shape of an existing file whose UEB says `segment_size`.
    pub fn new(size: u64, k: u16, n: u16, segment_size: u64) -> Result<Self, ChkError> {
        if k == 0 || k > n || n > 256 {
            return Err(ChkError::BadParams("need 1 <= k <= n <= 256"));
        }
        if size == 0 || segment_size == 0 {
            return Err(ChkError::BadParams("a CHK file holds at least one byte"));
        }
        let kk = u64::from(k);
        if segment_size % kk != 0 {
            return Err(ChkError::BadParams("segment size is not a multiple of k"));
        }
        let num_segments = size.div_ceil(segment_size);
        // Hash trees over segments are held whole; a capability or UEB that
        // claims more segments than any real file has is refused before
        // anything is sized from it.
        if num_segments > MAX_SEGMENTS {
            return Err(ChkError::BadParams("too many segments"));
        }
        let tail = match size % segment_size {
            0 => segment_size,
            t => t,
        };
        let tail_padded = tail.div_ceil(kk) * kk;
        let block_size = segment_size / kk;
        let tail_block_size = tail_padded / kk;
        let share_data_size = (num_segments - 1)
            .checked_mul(block_size)
            .and_then(|x| x.checked_add(tail_block_size))
            .ok_or(ChkError::BadParams("file too large"))?;
        Ok(Self {
            size,
            k,
            n,
            segment_size,
            num_segments,
            block_size,
            tail_segment_size: tail,
            tail_segment_padded: tail_padded,
            tail_block_size,
            share_data_size,
        })
    }

    /// `num_segments` as a count for indexing. It is at most
    /// [`MAX_SEGMENTS`] (2^24), checked in [`Self::new`], the only
    /// constructor, so it fits every platform's `usize`, and so does every
    /// segment number below it.
    pub fn segment_count(&self) -> usize {
        // num_segments <= MAX_SEGMENTS = 2^24, checked in ChkParams::new
        #[allow(clippy::cast_possible_truncation)]
        let count = self.num_segments as usize;
        count
    }

    /// Ciphertext bytes of segment `seg` (unpadded).
    pub fn segment_len(&self, seg: u64) -> u64 {
        if seg + 1 == self.num_segments {
            self.tail_segment_size
        } else {
            self.segment_size
        }
    }

    /// Block bytes of segment `seg` in each share.
    pub fn block_len(&self, seg: u64) -> u64 {
        if seg + 1 == self.num_segments {
            self.tail_block_size
        } else {
            self.block_size
        }
    }

    /// `codec_params` of the UEB: `segment_size-k-n`.
    pub fn codec_params(&self) -> String {
        format!("{}-{}-{}", self.segment_size, self.k, self.n)
    }

    /// `tail_codec_params` of the UEB: `padded_tail-k-n`.
    pub fn tail_codec_params(&self) -> String {
        format!("{}-{}-{}", self.tail_segment_padded, self.k, self.n)
    }
}
