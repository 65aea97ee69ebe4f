//! `tahoe-chk`: Tahoe-LAFS's immutable (CHK) file format, byte for byte, so
//! that stock Tahoe reads what griddav writes and griddav reads what Tahoe
//! wrote. Sans-I/O like the rest of the engine's coding core: bytes in,
//! bytes out; where the shares live is the grid's business (so the arrows
//! stay `engine -> grid`, and nothing here knows WebDAV or a backend).
//!
//! ```text
//! plaintext -> AES-128-CTR -> segments -> zfec k-of-n -> blocks per share
//!   hashutil.rs  tagged SHA-256d hashes      hashtree.rs  Tahoe's Merkle trees
//!   params.rs    segment and block sizes     ueb.rs       URI extension block
//!   layout.rs    share header and offsets    uri.rs       URI:CHK: capabilities
//!   zfec.rs      zfec's k-of-n code          encode.rs / decode.rs
//! ```
//!
//! Each piece is checked against vectors made by the real Python code
//! (tests/chk/make_*_vectors.py).

pub mod decode;
pub mod encode;
pub mod hashtree;
pub mod hashutil;
pub mod layout;
pub mod params;
pub mod read;
pub mod ueb;
pub mod upload;
pub mod uri;
pub mod zfec;

#[cfg(test)]
mod vectors;

/// Tahoe's cipher: AES-128 in CTR mode, the 16-byte counter block
/// big-endian from zero (allmydata/crypto/aes.py).
pub type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// What can go wrong making or reading a CHK file.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum ChkError {
    /// k, n or the segment size are out of range, or the size past the limit.
    #[error("bad CHK parameters: {0}")]
    BadParams(&'static str),
    /// The string is not a well-formed `URI:CHK:` capability.
    #[error("not a URI:CHK capability")]
    BadCap,
    /// The URI extension block is malformed or too long.
    #[error("bad URI extension block: {0}")]
    BadUeb(&'static str),
    /// A share failed a check; the read goes on without it.
    #[error("share {shnum} is bad: {reason}")]
    BadShare { shnum: u16, reason: &'static str },
    /// Fewer than k shares passed their checks.
    #[error("not enough good shares: have {have}, need {need}")]
    NotEnoughShares { have: usize, need: usize },
    /// Verified parts disagree with each other: the capability's hashes do not
    /// match the shares.
    #[error("integrity failure: {0}")]
    Integrity(&'static str),
    /// The plaintext fed to the encoder was not the declared size.
    #[error("plaintext length differs from the declared {expected} bytes")]
    SizeMismatch { expected: u64 },
    /// The erasure code refused its input.
    #[error(transparent)]
    Zfec(#[from] zfec::ZfecError),
}
