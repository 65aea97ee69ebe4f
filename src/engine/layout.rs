//! The byte layout of a share, versions 1 and 2 (see docs/FORMAT.md): the
//! two differ only in the hash of a block, so one layout serves both.
//!
//! ```text
//! header | block 0 | block 1 | ... | block tree | ciphertext tree | share proof | trailer | footer
//! ```
//!
//! Nothing before the blocks depends on the file length, so a share can be
//! written while the file is still arriving. Everything after the blocks is
//! written at finish. A reader starts from the fixed-size footer.
//! All integers are big-endian.

use super::crypto::{tag, tagged_hash, Hash};
use super::hashtree;
use super::EncodingParams;

/// Do not change: on-disk format.
pub const HEADER_MAGIC: [u8; 8] = *b"griddav\0";
/// Do not change: on-disk format.
pub const FOOTER_MAGIC: [u8; 4] = *b"GDFT";
/// Blocks hashed with tagged SHA-256. Do not change: on-disk format.
pub const FORMAT_V1: u16 = 1;
/// Blocks hashed with tagged BLAKE3; everything else as version 1. Do not
/// change: on-disk format.
pub const FORMAT_V2: u16 = 2;
/// The version new uploads write. Readers accept every version above.
pub const FORMAT_VERSION: u16 = FORMAT_V2;

/// `version` if a reader of this build understands it.
fn check_version(what: &'static str, version: u16) -> Result<u16, LayoutError> {
    match version {
        FORMAT_V1 | FORMAT_V2 => Ok(version),
        _ => Err(LayoutError::UnsupportedVersion { what, version }),
    }
}
/// AES-256-CTR, 128-bit big-endian counter from zero, counter = offset / 16.
pub const CIPHER_AES256_CTR: u8 = 1;
/// Systematic Reed-Solomon over GF(2^8) with reed-solomon-erasure 6's
/// `galois_8` matrix: shares 0..k are the data.
pub const CODEC_RS_GF8: u8 = 1;

/// Bytes of the header: magic, version, share, k, n, segment size.
/// Do not change: on-disk format.
pub const HEADER_LEN: u64 = HEADER_BYTES as u64;
/// [`HEADER_LEN`] as a `usize`: the size of the encoded array.
pub(crate) const HEADER_BYTES: usize = 20;
/// Bytes of the trailer: version, cipher, codec, k, n, segment size, size,
/// segment count and two roots. Do not change: on-disk format.
pub const TRAILER_LEN: u64 = TRAILER_BYTES as u64;
/// [`TRAILER_LEN`] as a `usize`: the size of the encoded array.
pub(crate) const TRAILER_BYTES: usize = 92;
/// Bytes of the footer: four offsets, share, version, magic.
/// Do not change: on-disk format.
pub const FOOTER_LEN: u64 = FOOTER_BYTES as u64;
/// [`FOOTER_LEN`] as a `usize`: the size of the encoded array.
pub(crate) const FOOTER_BYTES: usize = 40;

/// Largest segment a reader accepts: bounds what one segment can make it
/// allocate, whatever a share claims.
pub const MAX_SEGMENT_SIZE: u32 = 64 << 20;

/// Why share bytes do not parse as this layout: a bad or foreign share,
/// never a bug of ours.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum LayoutError {
    /// A header or footer without its magic: not a griddav share.
    #[error("bad magic in {what}")]
    BadMagic { what: &'static str },
    /// A version this build cannot read (written by a newer one).
    #[error("unsupported format version {version} in {what}")]
    UnsupportedVersion { what: &'static str, version: u16 },
    /// A cipher or codec id this build does not know.
    #[error("unsupported {what} id {id}")]
    UnsupportedAlgorithm { what: &'static str, id: u8 },
    /// A fixed-size part of the wrong length.
    #[error("{what} is {len} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        len: usize,
        expected: u64,
    },
    /// The trailer's k, n or segment size are out of range.
    #[error("invalid encoding parameters: {0}")]
    BadParams(#[from] super::ParamsError),
    /// The trailer's segment count disagrees with its size and segment size.
    #[error("segment count {claimed} does not match size {size} and segment size {segment_size}")]
    BadSegmentCount {
        claimed: u64,
        size: u64,
        segment_size: u32,
    },
    /// Offsets past `u64`: no real file, so a forged trailer.
    #[error("file too large for its layout")]
    Overflow,
    /// The footer's offsets are not the ones the verified trailer implies.
    #[error("footer offsets do not match the trailer")]
    FooterMismatch,
    /// Bytes ran out before the last field.
    #[error("{what} ends before its fields do")]
    Truncated { what: &'static str },
}

/// A bounds-checked reader of a fixed-size record: every read checks the
/// length itself, so no input panics it whatever the caller checked before.
struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, bytes }
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], LayoutError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or(LayoutError::Truncated { what: self.what })?;
        self.bytes = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, LayoutError> {
        Ok(u8::from_be_bytes(self.take()?))
    }
    fn u16(&mut self) -> Result<u16, LayoutError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, LayoutError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, LayoutError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

fn check_len(what: &'static str, bytes: &[u8], expected: u64) -> Result<(), LayoutError> {
    if bytes.len() as u64 == expected {
        Ok(())
    } else {
        Err(LayoutError::BadLength {
            what,
            len: bytes.len(),
            expected,
        })
    }
}

/// The first bytes of every share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version of this share.
    pub version: u16,
    /// Which of the n shares this is (0-based; 0..k are data).
    pub share: u16,
    /// Shares needed to read the file.
    pub k: u16,
    /// Shares written.
    pub n: u16,
    /// Plaintext bytes per segment (the last may be shorter).
    pub segment_size: u32,
}

impl Header {
    /// The header's bytes as written at the start of the share.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[..8].copy_from_slice(&HEADER_MAGIC);
        out[8..10].copy_from_slice(&self.version.to_be_bytes());
        out[10..12].copy_from_slice(&self.share.to_be_bytes());
        out[12..14].copy_from_slice(&self.k.to_be_bytes());
        out[14..16].copy_from_slice(&self.n.to_be_bytes());
        out[16..20].copy_from_slice(&self.segment_size.to_be_bytes());
        out
    }

    /// Parses a header read from a share; checks the magic and version only.
    pub fn decode(bytes: &[u8]) -> Result<Self, LayoutError> {
        check_len("header", bytes, HEADER_LEN)?;
        let mut r = Reader::new("header", bytes);
        if r.take::<8>()? != HEADER_MAGIC {
            return Err(LayoutError::BadMagic { what: "header" });
        }
        let version = check_version("header", r.u16()?)?;
        Ok(Self {
            version,
            share: r.u16()?,
            k: r.u16()?,
            n: r.u16()?,
            segment_size: r.u32()?,
        })
    }
}

/// What every share carries about the whole file; its hash is in the
/// capability, so a verified trailer vouches for everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The format version: which hash the blocks have.
    pub version: u16,
    /// Shares needed to read the file.
    pub k: u16,
    /// Shares written.
    pub n: u16,
    /// Plaintext bytes per segment, at most [`MAX_SEGMENT_SIZE`].
    pub segment_size: u32,
    /// Plaintext bytes of the whole file.
    pub size: u64,
    /// `ceil(size / segment_size)`; checked by [`ShareLayout::new`].
    pub segment_count: u64,
    /// Root of the tree over the N block-tree roots.
    pub share_root: Hash,
    /// Root of the tree over the segment hashes.
    pub ciphertext_root: Hash,
}

impl Trailer {
    /// The trailer's bytes, the same in every share of the file.
    pub fn encode(&self) -> [u8; TRAILER_BYTES] {
        let mut out = Vec::with_capacity(TRAILER_BYTES);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(CIPHER_AES256_CTR);
        out.push(CODEC_RS_GF8);
        out.extend_from_slice(&self.k.to_be_bytes());
        out.extend_from_slice(&self.n.to_be_bytes());
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.segment_count.to_be_bytes());
        out.extend_from_slice(&self.share_root);
        out.extend_from_slice(&self.ciphertext_root);
        let mut fixed = [0u8; TRAILER_BYTES];
        fixed.copy_from_slice(&out);
        fixed
    }

    /// Decodes and checks internal consistency; the caller checks the hash.
    pub fn decode(bytes: &[u8]) -> Result<Self, LayoutError> {
        check_len("trailer", bytes, TRAILER_LEN)?;
        let mut r = Reader::new("trailer", bytes);
        let version = check_version("trailer", r.u16()?)?;
        let cipher = r.u8()?;
        if cipher != CIPHER_AES256_CTR {
            return Err(LayoutError::UnsupportedAlgorithm {
                what: "cipher",
                id: cipher,
            });
        }
        let codec = r.u8()?;
        if codec != CODEC_RS_GF8 {
            return Err(LayoutError::UnsupportedAlgorithm {
                what: "codec",
                id: codec,
            });
        }
        let trailer = Self {
            version,
            k: r.u16()?,
            n: r.u16()?,
            segment_size: r.u32()?,
            size: r.u64()?,
            segment_count: r.u64()?,
            share_root: r.take()?,
            ciphertext_root: r.take()?,
        };
        ShareLayout::new(&trailer)?;
        Ok(trailer)
    }

    /// The hash the capability carries: verifies this trailer and, through
    /// its roots, every block.
    pub fn hash(&self) -> Hash {
        tagged_hash(tag::TRAILER, &[&self.encode()])
    }

    /// The coding parameters, validated. `happy` is not part of the format.
    pub fn params(&self) -> Result<EncodingParams, LayoutError> {
        let params = EncodingParams {
            k: self.k,
            happy: self.k,
            n: self.n,
            segment_size: self.segment_size,
        };
        params.validate()?;
        Ok(params)
    }
}

/// Number of segments of a file: ceil(size / segment size).
pub fn segment_count(size: u64, segment_size: u32) -> u64 {
    size.div_ceil(u64::from(segment_size.max(1)))
}

/// The last bytes of every share: where the parts after the blocks start.
/// Untrusted: a reader checks it against the layout its verified trailer implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Where the block tree starts (just after the last block).
    pub block_tree_offset: u64,
    /// Where the ciphertext tree starts.
    pub ciphertext_tree_offset: u64,
    /// Where this share's proof (block-tree root to share root) starts.
    pub proof_offset: u64,
    /// Where the trailer starts; the footer follows it.
    pub trailer_offset: u64,
    /// Which share this is; must match the header.
    pub share: u16,
    /// Format version; must match the trailer.
    pub version: u16,
}

impl Footer {
    /// The footer's bytes as written at the end of the share.
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut out = [0u8; FOOTER_BYTES];
        out[..8].copy_from_slice(&self.block_tree_offset.to_be_bytes());
        out[8..16].copy_from_slice(&self.ciphertext_tree_offset.to_be_bytes());
        out[16..24].copy_from_slice(&self.proof_offset.to_be_bytes());
        out[24..32].copy_from_slice(&self.trailer_offset.to_be_bytes());
        out[32..34].copy_from_slice(&self.share.to_be_bytes());
        out[34..36].copy_from_slice(&self.version.to_be_bytes());
        out[36..40].copy_from_slice(&FOOTER_MAGIC);
        out
    }

    /// Parses the last [`FOOTER_LEN`] bytes of a share; checks magic and version only.
    pub fn decode(bytes: &[u8]) -> Result<Self, LayoutError> {
        check_len("footer", bytes, FOOTER_LEN)?;
        let mut r = Reader::new("footer", bytes);
        let mut footer = Self {
            block_tree_offset: r.u64()?,
            ciphertext_tree_offset: r.u64()?,
            proof_offset: r.u64()?,
            trailer_offset: r.u64()?,
            share: r.u16()?,
            version: 0,
        };
        let version = r.u16()?;
        if r.take::<4>()? != FOOTER_MAGIC {
            return Err(LayoutError::BadMagic { what: "footer" });
        }
        footer.version = check_version("footer", version)?;
        Ok(footer)
    }
}

/// Where everything is in a share of a file with a given trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareLayout {
    /// The trailer's format version, repeated in every footer.
    pub version: u16,
    /// Plaintext bytes per full segment.
    pub segment_size: u64,
    /// Plaintext bytes of the whole file.
    pub size: u64,
    /// Shares needed to read the file (the trailer's k, widened for arithmetic).
    pub k: u64,
    /// Segments in the file: `ceil(size / segment_size)`, 0 for an empty file.
    pub segment_count: u64,
    /// Block size of every full segment: ceil(segment size / k).
    pub full_block_len: u64,
    /// Offset of the block tree in every share.
    pub block_tree_offset: u64,
    /// Offset of the ciphertext tree in every share.
    pub ciphertext_tree_offset: u64,
    /// Offset of the share proof in every share.
    pub proof_offset: u64,
    /// Bytes of the share proof: 32 per level of the share tree.
    pub proof_len: u64,
    /// Offset of the trailer in every share.
    pub trailer_offset: u64,
    /// Offset of the footer in every share.
    pub footer_offset: u64,
    /// Total bytes of every share.
    pub share_len: u64,
}

/// Bytes of every block but the last in a share of segments of
/// `segment_size` bytes coded k-of-n.
pub(crate) fn full_block_len(segment_size: u64, k: u64) -> u64 {
    segment_size.div_ceil(k.max(1))
}

/// Offset of block `segment` within every share whose full blocks are
/// `full_block_len` bytes long.
pub(crate) fn block_offset(full_block_len: u64, segment: u64) -> u64 {
    HEADER_LEN + segment * full_block_len
}

impl ShareLayout {
    /// The layout of a consistent trailer; an error for parameters or counts
    /// that no valid upload produces.
    pub fn new(trailer: &Trailer) -> Result<Self, LayoutError> {
        check_version("trailer", trailer.version)?;
        trailer.params()?;
        if trailer.segment_count != segment_count(trailer.size, trailer.segment_size) {
            return Err(LayoutError::BadSegmentCount {
                claimed: trailer.segment_count,
                size: trailer.size,
                segment_size: trailer.segment_size,
            });
        }
        let k = u64::from(trailer.k);
        let segment_size = u64::from(trailer.segment_size);
        let segment_count = trailer.segment_count;
        let full_block_len = full_block_len(segment_size, k);
        let blocks_len = match segment_count.checked_sub(1) {
            None => 0,
            Some(full) => {
                let last_len = trailer.size - full * segment_size;
                full.checked_mul(full_block_len)
                    .and_then(|len| len.checked_add(last_len.div_ceil(k)))
                    .ok_or(LayoutError::Overflow)?
            }
        };
        let tree_len = hashtree::checked_width_for(segment_count)
            .and_then(|width| width.checked_mul(64))
            .map(|two_width| two_width - 32)
            .ok_or(LayoutError::Overflow)?;
        let proof_len = 32 * u64::from(hashtree::depth_for(u64::from(trailer.n)));
        let add = |a: u64, b: u64| a.checked_add(b).ok_or(LayoutError::Overflow);
        let block_tree_offset = add(HEADER_LEN, blocks_len)?;
        let ciphertext_tree_offset = add(block_tree_offset, tree_len)?;
        let proof_offset = add(ciphertext_tree_offset, tree_len)?;
        let trailer_offset = add(proof_offset, proof_len)?;
        let footer_offset = add(trailer_offset, TRAILER_LEN)?;
        let share_len = add(footer_offset, FOOTER_LEN)?;
        Ok(Self {
            version: trailer.version,
            segment_size,
            size: trailer.size,
            k,
            segment_count,
            full_block_len,
            block_tree_offset,
            ciphertext_tree_offset,
            proof_offset,
            proof_len,
            trailer_offset,
            footer_offset,
            share_len,
        })
    }

    /// Plaintext length of segment `segment`.
    pub fn segment_len(&self, segment: u64) -> u64 {
        let start = segment * self.segment_size;
        (self.size - start).min(self.segment_size)
    }

    /// Bytes of block `segment` in every share: `ceil(segment_len / k)`.
    pub fn block_len(&self, segment: u64) -> u64 {
        self.segment_len(segment).div_ceil(self.k)
    }

    /// Offset of block `segment` within every share.
    pub fn block_offset(&self, segment: u64) -> u64 {
        block_offset(self.full_block_len, segment)
    }

    /// The footer share `share` ends with.
    pub fn footer(&self, share: u16) -> Footer {
        Footer {
            block_tree_offset: self.block_tree_offset,
            ciphertext_tree_offset: self.ciphertext_tree_offset,
            proof_offset: self.proof_offset,
            trailer_offset: self.trailer_offset,
            share,
            version: self.version,
        }
    }

    /// Checks a footer read from share `share` against this layout.
    pub fn check_footer(&self, footer: &Footer, share: u16) -> Result<(), LayoutError> {
        if *footer == self.footer(share) {
            Ok(())
        } else {
            Err(LayoutError::FooterMismatch)
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // tests: byte patterns wrap on purpose
mod tests {
    use super::*;

    fn trailer(size: u64) -> Trailer {
        Trailer {
            version: FORMAT_VERSION,
            k: 3,
            n: 10,
            segment_size: 1000,
            size,
            segment_count: segment_count(size, 1000),
            share_root: [1; 32],
            ciphertext_root: [2; 32],
        }
    }

    #[test]
    fn records_round_trip() {
        let header = Header {
            version: FORMAT_VERSION,
            share: 9,
            k: 3,
            n: 10,
            segment_size: 1 << 20,
        };
        assert_eq!(Header::decode(&header.encode()), Ok(header));
        let t = trailer(2500);
        assert_eq!(Trailer::decode(&t.encode()), Ok(t));
        let footer = ShareLayout::new(&t).map(|l| l.footer(4));
        let footer = footer.expect("layout");
        assert_eq!(Footer::decode(&footer.encode()), Ok(footer));
    }

    #[test]
    fn layout_of_a_multi_segment_file() {
        let layout = ShareLayout::new(&trailer(2500)).expect("layout");
        assert_eq!(layout.segment_count, 3);
        assert_eq!(layout.full_block_len, 334);
        assert_eq!(layout.block_len(2), 167);
        assert_eq!(layout.block_tree_offset, 20 + 334 * 2 + 167);
        assert_eq!(
            layout.ciphertext_tree_offset - layout.block_tree_offset,
            7 * 32
        );
        assert_eq!(layout.proof_len, 4 * 32);
        assert_eq!(layout.share_len, layout.footer_offset + FOOTER_LEN);
    }

    #[test]
    fn hostile_trailers_are_rejected() {
        let mut t = trailer(2500);
        t.segment_count = 4;
        assert!(Trailer::decode(&t.encode()).is_err());
        let mut t = trailer(u64::MAX);
        t.segment_size = 1;
        t.segment_count = u64::MAX;
        assert!(Trailer::decode(&t.encode()).is_err());
        let mut t = trailer(10);
        t.k = 0;
        assert!(Trailer::decode(&t.encode()).is_err());
        let mut bytes = trailer(10).encode();
        bytes[3] = 9;
        assert!(Trailer::decode(&bytes).is_err());
        assert!(Trailer::decode(&bytes[..50]).is_err());
        let mut bytes = trailer(10).encode();
        bytes[1] = 3;
        assert!(matches!(
            Trailer::decode(&bytes),
            Err(LayoutError::UnsupportedVersion { version: 3, .. })
        ));
    }

    #[test]
    fn both_versions_decode_and_a_footer_must_match_its_trailer() {
        for version in [FORMAT_V1, FORMAT_V2] {
            let t = Trailer {
                version,
                ..trailer(2500)
            };
            assert_eq!(Trailer::decode(&t.encode()), Ok(t));
            let layout = ShareLayout::new(&t).expect("layout");
            let footer = layout.footer(1);
            assert_eq!(Footer::decode(&footer.encode()), Ok(footer));
            let other = Footer {
                version: FORMAT_V1 + FORMAT_V2 - version,
                ..footer
            };
            assert_eq!(
                layout.check_footer(&other, 1),
                Err(LayoutError::FooterMismatch)
            );
        }
    }

    use proptest::prelude::*;

    fn any_trailer() -> impl Strategy<Value = Trailer> {
        (
            any::<(u16, u16, u32)>(),
            any::<u64>(),
            prop_oneof![Just(None), any::<u64>().prop_map(Some)],
            any::<[u8; 32]>(),
            any::<u16>(),
        )
            .prop_map(
                |((k, n, segment_size), size, count, root, version)| Trailer {
                    version: version % 4,
                    k: k % 300,
                    n: n % 300,
                    segment_size: segment_size % (2 * MAX_SEGMENT_SIZE + 2),
                    size: size >> (size % 64),
                    // Mostly the consistent count, so that decoding gets past it.
                    segment_count: count.unwrap_or(segment_count(
                        size >> (size % 64),
                        segment_size % (2 * MAX_SEGMENT_SIZE + 2),
                    )),
                    share_root: root,
                    ciphertext_root: root,
                },
            )
    }

    // Run long by tests/fuzz.sh (PROPTEST_CASES): whatever a storage server
    // sends as a share's tail, decoding returns, never panics.
    proptest! {
        #[test]
        fn fuzz_share_tail_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::decode(&bytes);
            let _ = Footer::decode(&bytes);
            if let Ok(t) = Trailer::decode(&bytes) {
                let layout = ShareLayout::new(&t);
                prop_assert!(layout.is_ok());
                let encoded = t.encode();
                prop_assert_eq!(&encoded[..], &bytes[..]);
            }
            for len in [HEADER_LEN, TRAILER_LEN, FOOTER_LEN] {
                let exact = bytes.iter().copied().cycle().take(len as usize).collect::<Vec<_>>();
                let _ = Header::decode(&exact);
                let _ = Trailer::decode(&exact);
                let _ = Footer::decode(&exact);
            }
        }

        #[test]
        fn fuzz_share_tail_round_trips(t in any_trailer(), share in any::<u16>()) {
            match Trailer::decode(&t.encode()) {
                Ok(decoded) => {
                    prop_assert_eq!(decoded, t);
                    let layout = ShareLayout::new(&t);
                    prop_assert!(layout.is_ok());
                    if let Ok(layout) = layout {
                        let footer = layout.footer(share);
                        prop_assert_eq!(Footer::decode(&footer.encode()), Ok(footer));
                        prop_assert_eq!(layout.check_footer(&footer, share), Ok(()));
                        prop_assert!(layout.share_len >= layout.footer_offset);
                    }
                }
                Err(_) => prop_assert!(ShareLayout::new(&t).is_err()),
            }
        }
    }
}
