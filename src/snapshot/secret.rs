//! The root secret: 32 random bytes, made once per data directory, from
//! which every key of the namespace copies in the grid derives. With it
//! and the grid's configuration, `griddav recover` rebuilds the data
//! directory; without it, nothing in the grid names a file.
//!
//! On disk: `<data_dir>/root-secret`, the 32 raw bytes, mode 0600.
//! For people: [`RootSecret::to_words`], 14 groups of 4 base32 characters
//! (the secret and a 3-byte checksum), which [`RootSecret::parse`] reads
//! back in either case with any spaces or dashes.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::engine::crypto::tagged_hash;

/// The file name of the root secret in the data directory.
pub const FILE_NAME: &str = "root-secret";

// Do not change: the recovery key's written form.
const CHECKSUM_TAG: &str = "griddav/v1/recovery-key-checksum";
const CHECKSUM_LEN: usize = 3;

/// Why the root secret could not be read, made or parsed. No variant holds
/// the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum SecretError {
    /// The secret file could not be read or written.
    #[error("root secret {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The secret file is not 32 bytes.
    #[error("root secret {}: {len} bytes, expected 32 (damaged?)", path.display())]
    Length { path: PathBuf, len: usize },
    /// The secret file is readable by group or others.
    #[error("root secret {}: readable by others (mode {mode:o}); make it 0600", path.display())]
    Mode { path: PathBuf, mode: u32 },
    /// The recovery key the operator typed is not one.
    #[error("recovery key: {0}")]
    Parse(&'static str),
}

/// The root secret. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RootSecret([u8; 32]);

impl fmt::Debug for RootSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootSecret(..)")
    }
}

impl RootSecret {
    /// A secret from a parsed recovery key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret's bytes: never to be logged.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Where the secret lives in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Reads the secret of `data_dir`; `None` if it has none yet.
    /// Blocking.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, SecretError> {
        let path = Self::path(data_dir);
        let io_err = |source| SecretError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let mode = file.metadata().map_err(io_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Mode { path, mode });
        }
        let mut bytes = Vec::new();
        Read::by_ref(&mut file)
            .take(33)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::Length {
                path: path.clone(),
                len: bytes.len(),
            })?;
        Ok(Some(Self(secret)))
    }

    /// The secret of `data_dir`, made (32 random bytes, 0600, synced) if
    /// it has none. Blocking.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretError> {
        if let Some(secret) = Self::load(data_dir)? {
            return Ok(secret);
        }
        let secret = Self(rand::random());
        match secret.store(data_dir) {
            Ok(()) => Ok(secret),
            // Made by a racing process: theirs is the one.
            Err(SecretError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                Self::load(data_dir)?.ok_or(SecretError::Parse("vanished while being made"))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the secret as `data_dir`'s, which must have none: written
    /// under a temporary name, synced, then linked into place (never
    /// replacing one) and the directory synced. Blocking.
    pub fn store(&self, data_dir: &Path) -> Result<(), SecretError> {
        let path = Self::path(data_dir);
        let io_err = |source| SecretError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
        let temp = data_dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&self.0)?;
            file.sync_all()?;
            std::fs::hard_link(&temp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()
        })();
        let _ = std::fs::remove_file(&temp);
        written.map_err(io_err)
    }

    /// The form a person writes down: 14 groups of 4 characters.
    pub fn to_words(&self) -> String {
        let mut bytes = self.0.to_vec();
        bytes.extend_from_slice(&checksum(&self.0));
        let text = crate::grid::base32(&bytes);
        let groups: Vec<&str> = text
            .as_bytes()
            .chunks(4)
            // base32 output is ASCII.
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        groups.join("-")
    }

    /// Reads [`RootSecret::to_words`]'s form: either case, spaces and
    /// dashes anywhere; a wrong character or checksum is an error.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if compact.len() != 56 {
            return Err(SecretError::Parse(
                "expected 56 letters and digits (14 groups of 4)",
            ));
        }
        let bytes = crate::grid::from_base32(&compact)
            .map_err(|_| SecretError::Parse("a character that is not a-z or 2-7"))?;
        if bytes.len() != 32 + CHECKSUM_LEN {
            return Err(SecretError::Parse("wrong length"));
        }
        let (secret, sum) = bytes.split_at(32);
        let secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| SecretError::Parse("wrong length"))?;
        if sum != checksum(&secret) {
            return Err(SecretError::Parse(
                "checksum mismatch: a character is mistyped",
            ));
        }
        Ok(Self(secret))
    }
}

fn checksum(secret: &[u8; 32]) -> [u8; CHECKSUM_LEN] {
    let hash = tagged_hash(CHECKSUM_TAG, &[secret]);
    let mut sum = [0u8; CHECKSUM_LEN];
    sum.copy_from_slice(&hash[..CHECKSUM_LEN]);
    sum
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn made_once_owner_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RootSecret::load(dir.path()).unwrap().is_none());
        let made = RootSecret::load_or_create(dir.path()).unwrap();
        let path = RootSecret::path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), made.as_bytes());
        assert_eq!(RootSecret::load_or_create(dir.path()).unwrap(), made);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(RootSecret::load_or_create(other.path()).unwrap(), made);
        // Never replaced.
        assert!(RootSecret::from_bytes([1; 32]).store(dir.path()).is_err());
        assert_eq!(RootSecret::load(dir.path()).unwrap().unwrap(), made);
        assert!(!format!("{made:?}").contains(&made.to_words()[..4]));
    }

    #[test]
    fn a_damaged_or_open_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = RootSecret::path(dir.path());
        std::fs::write(&path, [7u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            RootSecret::load(dir.path()),
            Err(SecretError::Length { len: 31, .. })
        ));
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            RootSecret::load(dir.path()),
            Err(SecretError::Mode { .. })
        ));
    }

    #[test]
    fn words_round_trip_and_catch_typos() {
        let secret = RootSecret::from_bytes(rand::random());
        let words = secret.to_words();
        assert_eq!(words.len(), 14 * 4 + 13);
        assert_eq!(words.split('-').count(), 14);
        assert!(words.split('-').all(|g| g.len() == 4));
        assert_eq!(RootSecret::parse(&words).unwrap(), secret);
        let loose = words.to_uppercase().replace('-', " ");
        assert_eq!(RootSecret::parse(&format!(" {loose}\n")).unwrap(), secret);
        // Change one character: the checksum catches it.
        let mut chars: Vec<char> = words.chars().collect();
        chars[5] = if chars[5] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(RootSecret::parse(&typo).is_err());
        assert!(RootSecret::parse(&words[..words.len() - 1]).is_err());
        assert!(RootSecret::parse("").is_err());
        let bad: String = words.replacen(|c: char| c.is_ascii_alphabetic(), "1", 1);
        assert!(RootSecret::parse(&bad).is_err());
    }
}
