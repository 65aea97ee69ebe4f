//! One segment in, N blocks out, and back: pure and synchronous, meant to
//! run on the blocking pool.
//!
//! A segment of `len` plaintext bytes at file offset `offset` is encrypted,
//! zero-padded to `k * ceil(len / k)` bytes and cut into k data blocks (the
//! ciphertext itself: the code is systematic); Reed-Solomon adds N - k parity
//! blocks of the same size. Each block is hashed into a leaf of its share's
//! block tree (SHA-256 in format version 1, BLAKE3 in version 2). The segment hash, a leaf of the ciphertext tree, is the hash
//! of the k data-block hashes: it commits to the ciphertext without hashing
//! it a second time.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use reed_solomon_erasure::galois_8::ReedSolomon;

use super::crypto::{tag, tagged_blake3, tagged_hash, tagged_hasher, FileKey, Hash};
use super::layout::{self, FORMAT_V1, FORMAT_VERSION};
use super::{EncodingParams, EngineError, ParamsError};
use crate::grid::{DIRECT_ALIGN as PAGE, SMALL_SHARE};

/// A segment encoded into its N blocks.
#[derive(Debug)]
pub struct EncodedSegment {
    /// `blocks[share]`, n of them: k data blocks, then parity.
    pub blocks: Vec<Bytes>,
    /// `block_hashes[share]`, in the file's format version's block hash.
    pub block_hashes: Vec<Hash>,
    /// The ciphertext-tree leaf: [`segment_hash`] of the k data-block hashes.
    pub segment_hash: Hash,
}

/// The hash of a block in format `version` (1 or 2; the layout has
/// refused any other before a coder is made).
pub fn block_hash(version: u16, block: &[u8]) -> Hash {
    if version == FORMAT_V1 {
        let mut hasher = tagged_hasher(tag::BLOCK);
        sha2::Digest::update(&mut hasher, block);
        sha2::Digest::finalize(hasher).into()
    } else {
        tagged_blake3(tag::BLOCK_V2, block)
    }
}

/// The ciphertext-tree leaf of a segment, from its k data-block hashes.
pub fn segment_hash(data_block_hashes: &[Hash]) -> Hash {
    let parts: Vec<&[u8]> = data_block_hashes.iter().map(|h| h.as_slice()).collect();
    tagged_hash(tag::SEGMENT, &parts)
}

/// Coded-segment buffers kept for reuse once every block of theirs is
/// written: at most this many (with the default 1 MiB segments coded
/// 3-of-10, 3.3 MiB each). A fresh buffer for every segment cost a 1 GiB
/// upload a page fault per 4 KiB and a pass zeroing the parity, about 7%
/// of its CPU.
static CODED_SPARES: Spares = Spares::new(8);

/// Plaintext buffers kept for reuse once their segment is encrypted: at
/// most this many (1 MiB each with the default segments).
static PLAINTEXT_SPARES: Spares = Spares::new(8);

/// Buffers kept for reuse, matched by length.
struct Spares {
    list: Mutex<Vec<Region>>,
    max: usize,
}

impl Spares {
    const fn new(max: usize) -> Self {
        Spares {
            list: Mutex::new(Vec::new()),
            max,
        }
    }

    /// A buffer `len` bytes long, reused if one is spare; its bytes are
    /// whatever a previous segment left, which every user overwrites.
    fn take(&self, len: usize) -> Region {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        match list.iter().position(|buf| buf.len() == len) {
            Some(at) => list.swap_remove(at),
            None => {
                drop(list);
                Region::new(len)
            }
        }
    }

    fn give(&self, buf: Region) {
        if buf.is_empty() {
            return;
        }
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() >= self.max {
            // Oldest out: buffers of a size no longer used age away.
            list.remove(0);
        }
        list.push(buf);
    }
}

/// Blocks longer than this are laid out at their page offset (see
/// [`SegmentCoder::encode`]). A store holds a share no longer in memory
/// and writes it at finish, so laying a small file's blocks out would
/// only cost memory.
const LAID_OUT_FROM: usize = SMALL_SHARE;

/// Buffers of at least this many bytes are mapped from the kernel.
const MAPPED_FROM: usize = 256 << 10;

/// A segment buffer. A large one is its own anonymous mapping, given back
/// to the kernel when dropped. From malloc, freed segment buffers stayed
/// in the arena of whichever thread freed them and were not reused by the
/// reads that came next: 64 concurrent GETs after 64 PUTs peaked at
/// 437-482 MiB, where the PUTs alone took 253-269 (mapped: 345-352).
enum Region {
    Mapped(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl Region {
    fn new(len: usize) -> Region {
        if len >= MAPPED_FROM {
            // A failed mapping (no memory) falls back to malloc, whose own
            // failure is the allocator's usual abort.
            if let Ok(map) = memmap2::MmapMut::map_anon(len) {
                return Region::Mapped(map);
            }
        }
        Region::Heap(vec![0u8; len])
    }

    fn empty() -> Region {
        Region::Heap(Vec::new())
    }
}

impl std::ops::Deref for Region {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Region::Mapped(map) => map,
            Region::Heap(vec) => vec,
        }
    }
}

impl std::ops::DerefMut for Region {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Region::Mapped(map) => map,
            Region::Heap(vec) => vec,
        }
    }
}

/// The owner of a coded segment's bytes behind its blocks: the buffer goes
/// back to the spares when the last block is dropped.
struct Recycled(Region);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        CODED_SPARES.give(std::mem::replace(&mut self.0, Region::empty()));
    }
}

/// The plaintext of one segment being gathered. [`SegmentCoder::encode`]
/// encrypts it into a buffer with room for all N coded blocks, taken only
/// then: an upload waiting for its client holds one segment's plaintext,
/// not its 3.3 times as much coded room (64 uploads held 213 MiB of it).
pub struct SegmentBuf {
    buf: Region,
    /// Plaintext bytes gathered, from the start of `buf`.
    len: usize,
    /// The most plaintext it takes (the segment size).
    max: usize,
}

impl std::fmt::Debug for SegmentBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentBuf({} of {} bytes)", self.len, self.max)
    }
}

impl SegmentBuf {
    /// Plaintext bytes gathered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is gathered yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Plaintext bytes it still takes.
    pub fn room(&self) -> usize {
        self.max - self.len
    }

    /// Appends the first `room()` bytes of `data` at most; returns how
    /// many it took.
    pub fn extend(&mut self, data: &[u8]) -> usize {
        let take = self.room().min(data.len());
        self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
        self.len += take;
        take
    }
}

impl Drop for SegmentBuf {
    fn drop(&mut self) {
        PLAINTEXT_SPARES.give(std::mem::replace(&mut self.buf, Region::empty()));
    }
}

/// Reed-Solomon coding of segments into n blocks and back, for one file's
/// k, n and format version. Pure and synchronous: run on the blocking pool.
#[derive(Debug)]
pub struct SegmentCoder {
    /// The format version: which hash the blocks get.
    version: u16,
    k: usize,
    n: usize,
    /// Where the blocks of a segment lie in their shares (see
    /// [`SegmentCoder::encode`]).
    segment_size: u64,
    /// `None` when n == k: there is nothing to compute.
    rs: Option<ReedSolomon>,
}

/// Why blocks could not be decoded into a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum CodecError {
    /// The caller passed a slot list of the wrong length (our bug).
    #[error("{slots} block slots for {shares} shares")]
    SlotCount { slots: usize, shares: usize },
    /// The blocks differ in length (a bad share got past verification).
    #[error("blocks of different lengths")]
    UnequalBlocks,
    /// k = n and a data block is missing: nothing can rebuild it.
    #[error("a data block is missing and there is no parity")]
    NoParity,
    /// The Reed-Solomon library refused the blocks.
    #[error("reed-solomon reconstruction failed: {0}")]
    Reconstruct(#[source] reed_solomon_erasure::Error),
    /// The library reported success but left a data block empty.
    #[error("reconstruction left a data block empty")]
    EmptyAfterReconstruct,
}

impl SegmentCoder {
    /// A coder for new uploads, in the current format version.
    pub fn new(params: &EncodingParams) -> Result<Self, EngineError> {
        Self::for_version(params, FORMAT_VERSION)
    }

    /// A coder for a file of format `version` (from its verified trailer).
    pub fn for_version(params: &EncodingParams, version: u16) -> Result<Self, EngineError> {
        let k = usize::from(params.k);
        let n = usize::from(params.n);
        let rs = if n > k {
            Some(ReedSolomon::new(k, n - k).map_err(|source| ParamsError::Codec { k, n, source })?)
        } else {
            None
        };
        Ok(Self {
            version,
            k,
            n,
            segment_size: u64::from(params.segment_size).max(1),
            rs,
        })
    }

    /// The format version the blocks are hashed for.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The hash of a block of this coder's files.
    pub fn block_hash(&self, block: &[u8]) -> Hash {
        block_hash(self.version, block)
    }

    /// Bytes a segment buffer of `len` plaintext bytes needs, padding included.
    pub fn padded_len(&self, len: usize) -> usize {
        len.div_ceil(self.k) * self.k
    }

    /// An empty buffer for a segment of at most `segment_size` plaintext
    /// bytes.
    pub fn segment_buf(&self, segment_size: usize) -> SegmentBuf {
        SegmentBuf {
            buf: PLAINTEXT_SPARES.take(segment_size),
            len: 0,
            max: segment_size,
        }
    }

    /// Encrypts `segment` (plaintext at file offset `offset`) into a buffer
    /// with room for its N blocks and codes it there, the parity beside
    /// the data. Encrypting from one buffer into another costs the same
    /// pass as encrypting in place.
    ///
    /// Each block longer than [`LAID_OUT_FROM`] lies in its own run of
    /// pages, at the offset modulo a page that it will have in its share
    /// file (`layout::block_offset`): a store writing with direct I/O
    /// (`grid/local/direct.rs`) writes it from where it lies, copying only
    /// the part that completes the page before it. Packed end to end, the blocks were copied whole into
    /// aligned buffers: a quarter of a 1 GiB upload's CPU samples. Four
    /// 4 GiB PUTs each, alternating builds: 2.4-2.8 CPU-s per GiB against
    /// 3.2-3.6 packed, at the same throughput (the disk's). The bytes are
    /// the same either way.
    pub fn encode(&self, key: &FileKey, offset: u64, segment: SegmentBuf) -> EncodedSegment {
        let len = segment.len;
        let block_len = len.div_ceil(self.k);
        let (first, stride, room) = if block_len > LAID_OUT_FROM {
            let stride = block_len.next_multiple_of(PAGE);
            (self.page_offset_of(offset), stride, PAGE + stride * self.n)
        } else {
            (0, block_len, block_len * self.n)
        };
        let mut buf = CODED_SPARES.take(room);
        for i in 0..self.k {
            let at = first + i * stride;
            let from = (i * block_len).min(len);
            let to = ((i + 1) * block_len).min(len);
            key.encrypt_into(
                offset + from as u64,
                &segment.buf[from..to],
                &mut buf[at..at + (to - from)],
            );
            buf[at + (to - from)..at + block_len].fill(0);
        }
        drop(segment);
        let blocks = self.code_in_place(buf, block_len, first, stride);
        let block_hashes: Vec<Hash> = blocks.iter().map(|b| self.block_hash(b)).collect();
        let segment_hash = segment_hash(&block_hashes[..self.k]);
        EncodedSegment {
            blocks,
            block_hashes,
            segment_hash,
        }
    }

    /// The N blocks of a segment's padded ciphertext (a multiple of k
    /// bytes long): the k data blocks and the parity computed from them.
    pub fn blocks_of(&self, data: &[u8]) -> Vec<Bytes> {
        let block_len = data.len() / self.k;
        let mut buf = CODED_SPARES.take(block_len * self.n);
        buf[..block_len * self.k].copy_from_slice(&data[..block_len * self.k]);
        self.code_in_place(buf, block_len, 0, block_len)
    }

    /// Where, modulo a page, the blocks of the segment at plaintext
    /// `offset` lie in their share files.
    fn page_offset_of(&self, offset: u64) -> usize {
        let full_block_len = layout::full_block_len(self.segment_size, self.k as u64);
        let at = layout::block_offset(full_block_len, offset / self.segment_size);
        usize::try_from(at % PAGE as u64).unwrap_or(0)
    }

    /// The N blocks of `buf`, block `i` of `block_len` bytes at
    /// `first + i * stride`: the first k are the data, the parity is
    /// computed into the n - k after them.
    fn code_in_place(
        &self,
        mut buf: Region,
        block_len: usize,
        first: usize,
        stride: usize,
    ) -> Vec<Bytes> {
        if let Some(rs) = &self.rs {
            if block_len > 0 {
                let (data, parity) = buf[first..].split_at_mut(self.k * stride);
                let data_blocks: Vec<&[u8]> = data
                    .chunks(stride)
                    .map(|chunk| &chunk[..block_len])
                    .collect();
                let mut parity_blocks: Vec<&mut [u8]> = parity
                    .chunks_mut(stride)
                    .take(self.n - self.k)
                    .map(|chunk| &mut chunk[..block_len])
                    .collect();
                // Cannot fail: k data and n - k parity slices, all block_len long.
                if let Err(e) = rs.encode_sep(&data_blocks, &mut parity_blocks) {
                    unreachable!("reed-solomon encode with consistent shapes failed: {e:?}");
                }
            }
        }
        let bytes = Bytes::from_owner(Recycled(buf));
        (0..self.n)
            .map(|i| {
                let at = first + i * stride;
                bytes.slice(at..at + block_len)
            })
            .collect()
    }

    /// Rebuilds the k data blocks from any k blocks (`blocks[i]` is share i's,
    /// all the same length) and returns the ciphertext of the segment, padding
    /// included.
    pub fn decode(&self, blocks: Vec<Option<Bytes>>) -> Result<BytesMut, CodecError> {
        if blocks.len() != self.n {
            return Err(CodecError::SlotCount {
                slots: blocks.len(),
                shares: self.n,
            });
        }
        let block_len = blocks.iter().flatten().map(|b| b.len()).next().unwrap_or(0);
        if blocks.iter().flatten().any(|b| b.len() != block_len) {
            return Err(CodecError::UnequalBlocks);
        }
        let mut out = BytesMut::with_capacity(block_len * self.k);
        if blocks[..self.k].iter().all(Option::is_some) {
            for block in blocks[..self.k].iter().flatten() {
                out.extend_from_slice(block);
            }
            return Ok(out);
        }
        let rs = self.rs.as_ref().ok_or(CodecError::NoParity)?;
        let mut shards: Vec<Option<Vec<u8>>> =
            blocks.into_iter().map(|b| b.map(|b| b.to_vec())).collect();
        rs.reconstruct_data(&mut shards)
            .map_err(CodecError::Reconstruct)?;
        for shard in &shards[..self.k] {
            let shard = shard.as_ref().ok_or(CodecError::EmptyAfterReconstruct)?;
            out.extend_from_slice(shard);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // tests: byte patterns wrap on purpose
mod tests {
    use super::*;

    #[test]
    fn decodes_from_any_k_blocks() {
        let params = EncodingParams::default();
        let coder = SegmentCoder::new(&params).expect("coder");
        let key = FileKey::from_bytes([9; 32]);
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut segment = coder.segment_buf(plain.len());
        assert_eq!(segment.extend(&plain), plain.len());
        let encoded = coder.encode(&key, 4096, segment);
        assert_eq!(encoded.blocks.len(), 10);
        assert!(encoded.blocks.iter().all(|b| b.len() == 334));
        for skip in [
            [0usize, 1, 2, 3, 4, 5, 6],
            [3, 4, 5, 6, 7, 8, 9],
            [0, 2, 4, 6, 8, 9, 1],
        ] {
            let blocks = (0..10)
                .map(|i| (!skip.contains(&i)).then(|| encoded.blocks[i].clone()))
                .collect();
            let mut cipher = coder.decode(blocks).expect("decode");
            cipher.truncate(plain.len());
            key.apply_keystream(4096, &mut cipher);
            assert_eq!(&cipher[..], &plain[..]);
        }
    }

    #[test]
    fn large_blocks_lie_at_their_page_offset_in_the_share() {
        let params = EncodingParams::default();
        let coder = SegmentCoder::new(&params).expect("coder");
        let key = FileKey::from_bytes([5; 32]);
        let segment_size = params.segment_size as usize;
        let plain: Vec<u8> = (0..segment_size as u32)
            .map(|i| (i * 31 + i / 7) as u8)
            .collect();
        // The share format's rule (docs/FORMAT.md), written out.
        let full_block_len = segment_size.div_ceil(usize::from(params.k)) as u64;
        for segment_index in [0u64, 1, 5, 4097] {
            let offset = segment_index * segment_size as u64;
            let mut segment = coder.segment_buf(segment_size);
            assert_eq!(segment.extend(&plain), segment_size);
            let encoded = coder.encode(&key, offset, segment);
            let in_share = (layout::HEADER_LEN + segment_index * full_block_len) % PAGE as u64;
            for block in &encoded.blocks {
                assert_eq!(block.len() as u64, full_block_len);
                assert_eq!((block.as_ptr() as usize % PAGE) as u64, in_share);
            }
            // The same bytes as blocks packed end to end.
            let mut cipher = BytesMut::from(&plain[..]);
            key.apply_keystream(offset, &mut cipher);
            cipher.resize(coder.padded_len(plain.len()), 0);
            assert!(
                encoded.blocks == coder.blocks_of(&cipher),
                "segment {segment_index}: blocks differ from packed coding"
            );
        }
    }

    #[test]
    fn a_reused_buffer_codes_exactly_as_a_fresh_one() {
        let coder = SegmentCoder::new(&EncodingParams::default()).expect("coder");
        let key = FileKey::from_bytes([3; 32]);
        // A full segment leaves its bytes in the buffer it goes back to.
        let mut first = coder.segment_buf(3000);
        assert_eq!(first.extend(&[0xff; 4000]), 3000);
        drop(coder.encode(&key, 0, first));
        let plain: Vec<u8> = (0..1001u32).map(|i| (i * 13) as u8).collect();
        let mut second = coder.segment_buf(3000);
        second.extend(&plain);
        let encoded = coder.encode(&key, 8192, second);
        let mut cipher = BytesMut::from(&plain[..]);
        key.apply_keystream(8192, &mut cipher);
        cipher.resize(coder.padded_len(plain.len()), 0);
        assert_eq!(encoded.blocks, coder.blocks_of(&cipher));
    }
}
