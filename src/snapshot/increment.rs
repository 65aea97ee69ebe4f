//! Page images of the namespace and the increments between them.
//!
//! A copy is taken with SQLite's online backup API, which copies the
//! database page by page in one read transaction: unlike `VACUUM INTO`,
//! page N of the copy is page N of the database, so two copies taken a
//! while apart differ only in the pages written in between. Each page is
//! hashed; an increment holds the pages whose hash changed since the
//! copy before (and the new page count), so a small change ships a few
//! pages instead of the whole database.
//!
//! An increment names, in order, every file it builds on (the base copy
//! first, then the increments before it), and the digest of the image it
//! produces (over its page hashes): recovery reads the chain from the
//! newest file alone, applies it in order, and refuses a result whose
//! digest differs.
//!
//! ```text
//! "GDNI" | version (1) | page size (u32 BE) | page count (u32 BE) | image digest (32)
//! | chain length (u16 BE) | { cap length (u16 BE) | cap } ...
//! | changed pages (u32 BE) | { page number (u32 BE) | page } ...   (ascending)
//! ```
//!
//! A base is the plain database image (it starts with SQLite's own magic).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::engine::crypto::{tagged_hash, tagged_hasher};

// Do not change: on-grid format.
/// The largest namespace image an increment may describe (64 GiB, about
/// a hundred million files).
const MAX_IMAGE_BYTES: u64 = 64 << 30;
const MAGIC: &[u8; 4] = b"GDNI";
const VERSION: u8 = 1;
/// The first 16 bytes of every SQLite database: a base.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
mod tag {
    pub(crate) const PAGE: &str = "griddav/v1/namespace-page";
    pub(crate) const IMAGE: &str = "griddav/v1/namespace-image";
}

/// Files an increment may build on: more than any sane configuration
/// (`snapshot_max_increments` is at most this minus one).
pub const MAX_CHAIN: usize = 1024;
/// A capability is well under this.
const MAX_CAP_LEN: usize = 1024;
/// How long a copy waits for a writer that holds the database locked.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The hash of one database page: a tagged SHA-256.
pub type PageHash = [u8; 32];

/// Why a base image or increment could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The copy ends before its header or pages do.
    #[error("namespace increment cut short")]
    CutShort,
    /// The copy's bytes contradict its header.
    #[error("namespace increment malformed: {0}")]
    Malformed(&'static str),
    /// Reading or writing the local database file failed.
    #[error("namespace image: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite refused the image.
    #[error("namespace image: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn read_err(e: std::io::Error) -> FormatError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FormatError::CutShort
    } else {
        FormatError::Io(e)
    }
}

/// The page hashes of one image of the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Bytes per database page.
    pub page_size: u32,
    /// `hashes[page]`, one per page in order.
    pub hashes: Vec<PageHash>,
}

impl Image {
    /// What the whole image hashes to (page size, count and every page).
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = tagged_hasher(tag::IMAGE);
        hasher.update(self.page_size.to_be_bytes());
        hasher.update((self.hashes.len() as u64).to_be_bytes());
        for hash in &self.hashes {
            hasher.update(hash);
        }
        hasher.finalize().into()
    }

    /// Bytes of the database image: page size times page count.
    pub fn bytes(&self) -> u64 {
        u64::from(self.page_size).saturating_mul(self.hashes.len() as u64)
    }

    /// Page numbers (from 1) whose content differs from `older`'s.
    pub fn changed_since(&self, older: &Image) -> Vec<u32> {
        (0..self.hashes.len())
            .filter(|&i| older.hashes.get(i) != self.hashes.get(i))
            .filter_map(|i| u32::try_from(i + 1).ok())
            .collect()
    }
}

fn page_hash(page: &[u8]) -> PageHash {
    tagged_hash(tag::PAGE, &[page])
}

/// Copies the database at `db` into a new owner-only file at `temp` with
/// the backup API (one step: one read transaction, writers go on). Blocking.
pub fn take_image(db: &Path, temp: &Path) -> Result<(), FormatError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(temp);
    // SQLite accepts an existing empty file: made here, it is 0600.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    let source = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(BUSY_TIMEOUT)?;
    let mut target = rusqlite::Connection::open(temp)?;
    // A scratch file: no journal, no syncs (it is read back at once).
    target.pragma_update(None, "journal_mode", "OFF")?;
    target.pragma_update(None, "synchronous", "OFF")?;
    let started = Instant::now();
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ if started.elapsed() > BUSY_TIMEOUT => {
                    return Err(FormatError::Malformed("the namespace stayed locked"));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    drop(target);
    Ok(())
}

/// The page size a database image declares in its header.
fn header_page_size(header: &[u8; 100]) -> Result<u32, FormatError> {
    if &header[..16] != SQLITE_MAGIC {
        return Err(FormatError::Malformed("not an SQLite database"));
    }
    let size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u32::from(n),
    };
    if !(512..=65_536).contains(&size) || !size.is_power_of_two() {
        return Err(FormatError::Malformed("page size"));
    }
    Ok(size)
}

/// Hashes every page of the database image at `path`. Blocking.
pub fn hash_image(path: &Path) -> Result<Image, FormatError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut header = [0u8; 100];
    file.read_exact(&mut header).map_err(read_err)?;
    let page_size = header_page_size(&header)?;
    if len % u64::from(page_size) != 0 {
        return Err(FormatError::Malformed(
            "size is not a whole number of pages",
        ));
    }
    let pages = usize::try_from(len / u64::from(page_size))
        .map_err(|_| FormatError::Malformed("too many pages"))?;
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut page = vec![0u8; page_size as usize];
    let mut hashes = Vec::with_capacity(pages);
    for _ in 0..pages {
        reader.read_exact(&mut page).map_err(read_err)?;
        hashes.push(page_hash(&page));
    }
    Ok(Image { page_size, hashes })
}

/// Writes to `out` the increment from `older` to `newer` (the image at
/// `image`), building on `chain`. Returns its size. Blocking.
pub fn write_increment(
    image: &Path,
    older: &Image,
    newer: &Image,
    chain: &[String],
    out: &Path,
) -> Result<u64, FormatError> {
    use std::os::unix::fs::OpenOptionsExt;
    if chain.is_empty() || chain.len() >= MAX_CHAIN {
        return Err(FormatError::Malformed("chain length"));
    }
    let changed = newer.changed_since(older);
    let _ = std::fs::remove_file(out);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(MAGIC)?;
    w.write_all(&[VERSION])?;
    w.write_all(&newer.page_size.to_be_bytes())?;
    let count =
        u32::try_from(newer.hashes.len()).map_err(|_| FormatError::Malformed("page count"))?;
    w.write_all(&count.to_be_bytes())?;
    w.write_all(&newer.digest())?;
    w.write_all(&(chain.len() as u16).to_be_bytes())?;
    for cap in chain {
        let len = u16::try_from(cap.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_CAP_LEN)
            .ok_or(FormatError::Malformed("capability length"))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(cap.as_bytes())?;
    }
    let n = u32::try_from(changed.len()).map_err(|_| FormatError::Malformed("page count"))?;
    w.write_all(&n.to_be_bytes())?;
    let mut source = File::open(image)?;
    let mut page = vec![0u8; newer.page_size as usize];
    for pgno in changed {
        source.seek(SeekFrom::Start(
            u64::from(pgno - 1) * u64::from(newer.page_size),
        ))?;
        source.read_exact(&mut page).map_err(read_err)?;
        // The image must not have changed since it was hashed.
        if page_hash(&page) != newer.hashes[(pgno - 1) as usize] {
            return Err(FormatError::Malformed("the image changed while read"));
        }
        w.write_all(&pgno.to_be_bytes())?;
        w.write_all(&page)?;
    }
    let file = w
        .into_inner()
        .map_err(|e| FormatError::Io(e.into_error()))?;
    Ok(file.metadata()?.len())
}

/// The header of an increment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Bytes per page of the image it yields.
    pub page_size: u32,
    /// Pages in the image it yields.
    pub page_count: u32,
    /// [`Image::digest`] of the image it yields: checked after applying.
    pub digest: [u8; 32],
    /// What it builds on, base first.
    pub chain: Vec<String>,
    /// How many pages follow.
    pub pages: u32,
}

fn u16_of(r: &mut impl Read) -> Result<u16, FormatError> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b).map_err(read_err)?;
    Ok(u16::from_be_bytes(b))
}

fn u32_of(r: &mut impl Read) -> Result<u32, FormatError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(read_err)?;
    Ok(u32::from_be_bytes(b))
}

/// What the first bytes of a copy say it is.
pub enum Kind {
    /// A whole database image.
    Base,
    /// The pages changed since an earlier copy.
    Increment(Header),
}

impl Header {
    /// Reads a header; bytes from the grid are checked before use.
    pub fn read(r: &mut impl Read) -> Result<Header, FormatError> {
        let mut magic = [0u8; 5];
        r.read_exact(&mut magic).map_err(read_err)?;
        if &magic[..4] != MAGIC || magic[4] != VERSION {
            return Err(FormatError::Malformed("not a namespace increment"));
        }
        let page_size = u32_of(r)?;
        if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(FormatError::Malformed("page size"));
        }
        let page_count = u32_of(r)?;
        // Bounds what a recovery allocates (a hash per page) and writes
        // before the digest can be checked: a namespace of 100,000 files
        // is about 57 MB.
        if page_count == 0 || u64::from(page_count) * u64::from(page_size) > MAX_IMAGE_BYTES {
            return Err(FormatError::Malformed("page count"));
        }
        let mut digest = [0u8; 32];
        r.read_exact(&mut digest).map_err(read_err)?;
        let links = usize::from(u16_of(r)?);
        if links == 0 || links >= MAX_CHAIN {
            return Err(FormatError::Malformed("chain length"));
        }
        let mut chain = Vec::with_capacity(links);
        for _ in 0..links {
            let len = usize::from(u16_of(r)?);
            if len == 0 || len > MAX_CAP_LEN {
                return Err(FormatError::Malformed("capability length"));
            }
            let mut cap = vec![0u8; len];
            r.read_exact(&mut cap).map_err(read_err)?;
            chain.push(
                String::from_utf8(cap)
                    .map_err(|_| FormatError::Malformed("capability is not UTF-8"))?,
            );
        }
        let pages = u32_of(r)?;
        if pages > page_count {
            return Err(FormatError::Malformed("more pages than the image has"));
        }
        Ok(Header {
            page_size,
            page_count,
            digest,
            chain,
            pages,
        })
    }

    /// A base or an increment's header, from the first bytes of a copy
    /// (`CutShort`: more are needed).
    pub fn kind(bytes: &[u8]) -> Result<Kind, FormatError> {
        if bytes.len() >= SQLITE_MAGIC.len() && bytes[..SQLITE_MAGIC.len()] == SQLITE_MAGIC[..] {
            return Ok(Kind::Base);
        }
        let mut reader = bytes;
        Header::read(&mut reader).map(Kind::Increment)
    }
}

/// Applies the pages that follow `header` in `r` to the image file
/// `target` whose page hashes are `image`, then checks the result against
/// the header's digest. Blocking.
pub fn apply(
    header: &Header,
    r: &mut impl Read,
    target: &mut File,
    image: &mut Image,
) -> Result<(), FormatError> {
    if header.page_size != image.page_size {
        return Err(FormatError::Malformed("page size differs from the base's"));
    }
    let size = u64::from(header.page_size);
    target.set_len(u64::from(header.page_count) * size)?;
    image.hashes.resize(header.page_count as usize, [0u8; 32]);
    let mut page = vec![0u8; header.page_size as usize];
    let mut last = 0u32;
    for _ in 0..header.pages {
        let pgno = u32_of(r)?;
        if pgno <= last || pgno > header.page_count {
            return Err(FormatError::Malformed("page number out of order or range"));
        }
        last = pgno;
        r.read_exact(&mut page).map_err(read_err)?;
        target.seek(SeekFrom::Start(u64::from(pgno - 1) * size))?;
        target.write_all(&page)?;
        image.hashes[(pgno - 1) as usize] = page_hash(&page);
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        return Err(FormatError::Malformed("trailing bytes"));
    }
    if image.digest() != header.digest {
        return Err(FormatError::Malformed(
            "the image rebuilt does not match the increment's digest",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn db_with(path: &Path, rows: std::ops::Range<i64>) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)",
        )
        .unwrap();
        for i in rows {
            conn.execute(
                "INSERT OR REPLACE INTO t VALUES (?1, ?2)",
                rusqlite::params![i, vec![(i % 251) as u8; 300]],
            )
            .unwrap();
        }
    }

    #[test]
    fn an_increment_rebuilds_the_newer_image_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        db_with(&db, 0..2000);
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        take_image(&db, &a).unwrap();
        let old = hash_image(&a).unwrap();
        db_with(&db, 1990..2010);
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("DELETE FROM t WHERE id < 100", [])
            .unwrap();
        take_image(&db, &b).unwrap();
        let new = hash_image(&b).unwrap();
        let changed = new.changed_since(&old);
        assert!(!changed.is_empty());
        assert!(changed.len() * 4 < new.hashes.len(), "{changed:?}");

        let inc = dir.path().join("inc");
        let chain = vec!["base-cap".to_owned()];
        let len = write_increment(&b, &old, &new, &chain, &inc).unwrap();
        assert!(len < std::fs::metadata(&b).unwrap().len() / 2);
        let bytes = std::fs::read(&inc).unwrap();
        let Kind::Increment(header) = Header::kind(&bytes).unwrap() else {
            panic!("not an increment")
        };
        assert_eq!(header.chain, chain);
        let mut reader = BufReader::new(File::open(&inc).unwrap());
        let header = Header::read(&mut reader).unwrap();
        let mut target = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&a)
            .unwrap();
        let mut image = old.clone();
        apply(&header, &mut reader, &mut target, &mut image).unwrap();
        assert_eq!(image, new);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

        // Any altered byte is refused; a cut-short one too.
        for at in [10, 60, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            let mut r = &bad[..];
            let mut image = old.clone();
            let result = Header::read(&mut r)
                .and_then(|h| apply(&h, &mut r, &mut tempfile::tempfile().unwrap(), &mut image));
            assert!(result.is_err(), "byte {at} altered and accepted");
        }
        let mut r = &bytes[..bytes.len() - 5];
        let header = Header::read(&mut r).unwrap();
        let mut image = old.clone();
        assert!(matches!(
            apply(
                &header,
                &mut r,
                &mut tempfile::tempfile().unwrap(),
                &mut image
            ),
            Err(FormatError::CutShort)
        ));
        assert!(matches!(
            Header::kind(&bytes[..20]),
            Err(FormatError::CutShort)
        ));
        assert!(matches!(
            Header::kind(&std::fs::read(&b).unwrap()[..16]),
            Ok(Kind::Base)
        ));
    }
}
