//! The file capability: everything a reader needs to find, verify and
//! decrypt one file version, as one printable string:
//!
//! `griddav:1:<key>:<trailer hash>:<k>:<n>:<size>`
//!
//! key and trailer hash in lowercase unpadded base32 (52 characters each),
//! the numbers in decimal without leading zeros.

use std::fmt;
use std::str::FromStr;

use super::crypto::{FileKey, Hash};
use crate::grid::{base32, from_base32};

const PREFIX: &str = "griddav:1:";

/// Why a text is not a capability (or an upload recovery token). The
/// messages name the field, never its content: a capability is a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum CapError {
    /// The text is not a capability of this version.
    #[error("does not start with {prefix:?}")]
    Prefix { prefix: &'static str },
    /// Fields are missing or extra.
    #[error("expected 5 fields after the prefix, got {got}")]
    FieldCount { got: usize },
    /// A key or hash field is not lowercase unpadded base32.
    #[error("{what}: {source}")]
    Base32 {
        what: &'static str,
        #[source]
        source: data_encoding::DecodeError,
    },
    /// A key or hash field decodes to the wrong length.
    #[error("{what}: not 32 bytes")]
    Not32Bytes { what: &'static str },
    /// A number field is not a decimal number.
    #[error("{what}: {source}")]
    Number {
        what: &'static str,
        #[source]
        source: std::num::ParseIntError,
    },
    /// A number field is beyond what its type can hold.
    #[error("{what} out of range")]
    OutOfRange { what: &'static str },
    /// The share counts are out of order or out of range.
    #[error("need 1 <= k <= n <= 256, got {k}-of-{n}")]
    Counts { k: u16, n: u16 },
    /// The text parses but is not how we print it (case, leading zeros), so it could name the same file twice.
    #[error("not in canonical form")]
    NotCanonical,
    /// The capability's counts or size are not the ones its verified trailer holds.
    #[error(
        "the capability says {cap_k}-of-{cap_n}, {cap_size} bytes; its verified trailer says \
         {k}-of-{n}, {size} bytes"
    )]
    TrailerDisagrees {
        cap_k: u16,
        cap_n: u16,
        cap_size: u64,
        k: u16,
        n: u16,
        size: u64,
    },
}

#[derive(Clone, PartialEq, Eq)]
/// One file version's capability: its key, what verifies it, and its shape.
pub struct FileCap {
    /// Decrypts the file; the secret part of the capability.
    pub key: FileKey,
    /// Hash of the share trailer, which roots every other check.
    pub trailer_hash: Hash,
    /// Shares needed to read the file.
    pub k: u16,
    /// Shares written in all.
    pub n: u16,
    /// Plaintext length in bytes.
    pub size: u64,
}

/// A 32-byte field in lowercase unpadded base32.
pub(crate) fn parse_32(field: &str, what: &'static str) -> Result<[u8; 32], CapError> {
    let bytes = from_base32(field).map_err(|source| CapError::Base32 { what, source })?;
    bytes.try_into().map_err(|_| CapError::Not32Bytes { what })
}

impl fmt::Display for FileCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}:{}:{}:{}",
            base32(self.key.as_bytes()),
            base32(&self.trailer_hash),
            self.k,
            self.n,
            self.size
        )
    }
}

/// Keeps the key out of logs.
impl fmt::Debug for FileCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FileCap(si={}, {}-of-{}, {} bytes)",
            self.key.storage_index(),
            self.k,
            self.n,
            self.size
        )
    }
}

impl FromStr for FileCap {
    type Err = CapError;

    fn from_str(text: &str) -> Result<Self, CapError> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or(CapError::Prefix { prefix: PREFIX })?;
        let fields: Vec<&str> = rest.split(':').collect();
        let [key, hash, k, n, size] = fields[..] else {
            return Err(CapError::FieldCount { got: fields.len() });
        };
        let number = |field: &str, what: &'static str| -> Result<u64, CapError> {
            field
                .parse::<u64>()
                .map_err(|source| CapError::Number { what, source })
        };
        let cap = Self {
            key: FileKey::from_bytes(parse_32(key, "key")?),
            trailer_hash: parse_32(hash, "trailer hash")?,
            k: u16::try_from(number(k, "k")?).map_err(|_| CapError::OutOfRange { what: "k" })?,
            n: u16::try_from(number(n, "n")?).map_err(|_| CapError::OutOfRange { what: "n" })?,
            size: number(size, "size")?,
        };
        if cap.k == 0 || cap.k > cap.n || cap.n > 256 {
            return Err(CapError::Counts { k: cap.k, n: cap.n });
        }
        // One spelling per capability: no '+', leading zeros or upper case.
        if cap.to_string() != text {
            return Err(CapError::NotCanonical);
        }
        Ok(cap)
    }
}

/// Any capability a namespace row can hold: griddav's own format, or a
/// Tahoe-LAFS immutable file (`URI:CHK:`, or `URI:LIT:` for one of at most
/// 55 bytes). Which format a file was written in is told by its
/// capability alone.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Capability {
    /// `griddav:1:...`: griddav's share format.
    Griddav(FileCap),
    /// `URI:CHK:...`: a Tahoe-LAFS immutable file.
    Chk(super::chk::uri::ChkCap),
    /// `URI:LIT:...`: a Tahoe-LAFS literal file, its bytes in the capability.
    Lit(super::chk::uri::LitCap),
}

impl Capability {
    /// Plaintext length in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Self::Griddav(cap) => cap.size,
            Self::Chk(cap) => cap.size,
            Self::Lit(cap) => cap.data.len() as u64,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Griddav(cap) => cap.fmt(f),
            Self::Chk(cap) => f.write_str(&cap.to_uri()),
            Self::Lit(cap) => f.write_str(&cap.to_uri()),
        }
    }
}

/// Why a text is not any capability we read. Messages never hold the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnyCapError {
    /// A `griddav:` capability that does not parse.
    #[error("griddav capability: {0}")]
    Griddav(#[from] CapError),
    /// A `URI:CHK:` or `URI:LIT:` capability that does not parse.
    #[error("Tahoe-LAFS capability: {0}")]
    Tahoe(#[from] super::chk::ChkError),
    /// Neither `griddav:`, `URI:CHK:` nor `URI:LIT:`.
    #[error("not a griddav, URI:CHK or URI:LIT capability")]
    Unknown,
}

impl FromStr for Capability {
    type Err = AnyCapError;

    fn from_str(text: &str) -> Result<Self, AnyCapError> {
        use super::chk::uri::{ChkCap, LitCap};
        if text.starts_with("griddav:") {
            Ok(Self::Griddav(text.parse()?))
        } else if text.starts_with("URI:CHK:") {
            Ok(Self::Chk(ChkCap::parse(text)?))
        } else if text.starts_with("URI:LIT:") {
            Ok(Self::Lit(LitCap::parse(text)?))
        } else {
            Err(AnyCapError::Unknown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> FileCap {
        FileCap {
            key: FileKey::from_bytes([3; 32]),
            trailer_hash: [4; 32],
            k: 3,
            n: 10,
            size: 12345,
        }
    }

    #[test]
    fn round_trips_and_rejects_other_spellings() {
        let text = cap().to_string();
        assert_eq!(text.parse::<FileCap>().ok(), Some(cap()));
        assert_eq!(
            text.to_uppercase().parse::<FileCap>(),
            Err(CapError::Prefix { prefix: PREFIX })
        );
        assert_eq!(
            text.replace(":12345", ":012345").parse::<FileCap>(),
            Err(CapError::NotCanonical)
        );
        assert_eq!(
            text.replace(":12345", ":+12345").parse::<FileCap>(),
            Err(CapError::NotCanonical)
        );
        assert_eq!(
            text.replace(":3:10:", ":11:10:").parse::<FileCap>(),
            Err(CapError::Counts { k: 11, n: 10 })
        );
        assert_eq!(
            format!("{text}:1").parse::<FileCap>(),
            Err(CapError::FieldCount { got: 6 })
        );
        assert!(matches!(
            text.replace(":12345", ":x").parse::<FileCap>(),
            Err(CapError::Number { what: "size", .. })
        ));
        assert!(matches!(
            text.replacen("griddav:1:a", "griddav:1:1", 1)
                .parse::<FileCap>(),
            Err(CapError::Base32 { what: "key", .. })
        ));
        assert!(!format!("{:?}", cap()).contains(&text[10..30]));
    }

    #[test]
    fn any_capability_is_told_by_its_prefix_and_prints_as_read() {
        let griddav = cap().to_string();
        let chk = "URI:CHK:aaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbba:3:10:1000";
        let lit = "URI:LIT:nbswy3dp"; // "hello"
        for text in [griddav.as_str(), chk, lit, "URI:LIT:"] {
            let parsed: Capability = text.parse().expect("parses");
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(lit.parse::<Capability>().map(|c| c.size()), Ok(5));
        assert_eq!("URI:SSK:x".parse::<Capability>(), Err(AnyCapError::Unknown));
        assert!(matches!(
            "URI:LIT:NBSWY3DP".parse::<Capability>(),
            Err(AnyCapError::Tahoe(_))
        ));
        assert!(!format!("{:?}", lit.parse::<Capability>()).contains("nbswy3dp"));
    }

    use proptest::prelude::*;

    // Run long by tests/fuzz.sh (PROPTEST_CASES).
    proptest! {
        #[test]
        fn fuzz_capability_arbitrary_text(text in ".{0,200}", field in "[a-z2-7:0-9+-]{0,60}") {
            let _ = text.parse::<FileCap>();
            // Arbitrary text in place of each field of a good capability.
            let good = cap().to_string();
            let fields: Vec<&str> = good.split(':').collect();
            for i in 0..fields.len() {
                let mut mutated = fields.clone();
                mutated[i] = &field;
                let mutated = mutated.join(":");
                if let Ok(parsed) = mutated.parse::<FileCap>() {
                    // Only the canonical spelling parses.
                    prop_assert_eq!(parsed.to_string(), mutated);
                }
            }
        }

        #[test]
        fn fuzz_capability_round_trips(
            key in any::<[u8; 32]>(),
            hash in any::<[u8; 32]>(),
            k in 1u16..=256,
            extra in 0u16..256,
            size in any::<u64>(),
        ) {
            let cap = FileCap { key: FileKey::from_bytes(key), trailer_hash: hash, k, n: (k + extra).min(256), size };
            prop_assert_eq!(cap.to_string().parse::<FileCap>().ok(), Some(cap.clone()));
            let debug = format!("{cap:?}");
            prop_assert!(!debug.contains(&base32(&key)), "{}", debug);
        }
    }
}
