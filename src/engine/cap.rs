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
use super::EngineError;
use crate::grid::base32;

const PREFIX: &str = "griddav:1:";

#[derive(Clone, PartialEq, Eq)]
pub struct FileCap {
    pub key: FileKey,
    pub trailer_hash: Hash,
    pub k: u16,
    pub n: u16,
    pub size: u64,
}

fn parse_32(field: &str, what: &str) -> Result<[u8; 32], EngineError> {
    let bytes = data_encoding::BASE32_NOPAD
        .decode(field.to_ascii_uppercase().as_bytes())
        .map_err(|e| EngineError::InvalidCap(format!("{what}: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| EngineError::InvalidCap(format!("{what}: not 32 bytes")))
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
    type Err = EngineError;

    fn from_str(text: &str) -> Result<Self, EngineError> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| EngineError::InvalidCap(format!("does not start with {PREFIX:?}")))?;
        let fields: Vec<&str> = rest.split(':').collect();
        let [key, hash, k, n, size] = fields[..] else {
            return Err(EngineError::InvalidCap(format!(
                "expected 5 fields after the prefix, got {}",
                fields.len()
            )));
        };
        let number = |field: &str, what: &str| -> Result<u64, EngineError> {
            field
                .parse::<u64>()
                .map_err(|e| EngineError::InvalidCap(format!("{what}: {e}")))
        };
        let cap = Self {
            key: FileKey::from_bytes(parse_32(key, "key")?),
            trailer_hash: parse_32(hash, "trailer hash")?,
            k: u16::try_from(number(k, "k")?)
                .map_err(|_| EngineError::InvalidCap("k out of range".into()))?,
            n: u16::try_from(number(n, "n")?)
                .map_err(|_| EngineError::InvalidCap("n out of range".into()))?,
            size: number(size, "size")?,
        };
        if cap.k == 0 || cap.k > cap.n || cap.n > 256 {
            return Err(EngineError::InvalidCap(format!(
                "need 1 <= k <= n <= 256, got {}-of-{}",
                cap.k, cap.n
            )));
        }
        // One spelling per capability: no '+', leading zeros or upper case.
        if cap.to_string() != text {
            return Err(EngineError::InvalidCap("not in canonical form".into()));
        }
        Ok(cap)
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
        assert!(text.to_uppercase().parse::<FileCap>().is_err());
        assert!(text
            .replace(":12345", ":012345")
            .parse::<FileCap>()
            .is_err());
        assert!(text
            .replace(":12345", ":+12345")
            .parse::<FileCap>()
            .is_err());
        assert!(text
            .replace(":3:10:", ":11:10:")
            .parse::<FileCap>()
            .is_err());
        assert!(format!("{text}:1").parse::<FileCap>().is_err());
        assert!(text[..text.len() - 1]
            .replace(PREFIX, "griddav:2:")
            .parse::<FileCap>()
            .is_err());
        assert!(!format!("{:?}", cap()).contains(&text[10..30]));
    }
}
