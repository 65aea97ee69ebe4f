//! Direct I/O for share files (`O_DIRECT`): appends go from a small
//! aligned buffer to the disk without a copy in the page cache.
//!
//! A buffered upload copies 3.3 times the file's bytes into the page cache,
//! has the kernel write them back and then drops them again: measured here,
//! 895 MB of shares written by ten threads cost 0.35 to 0.67 s of kernel
//! CPU buffered against 0.04 to 0.09 s direct. Through griddav (same
//! binary, direct I/O on and off, alternating runs, 2 cores under load):
//! 256 MiB PUT 371-398 MB/s direct against 298-316 buffered, the answer
//! after the last byte 31-58 ms against 61-105 ms (16 MiB: 24-34 against
//! 40-52 ms); server CPU about the same (0.94-0.97 s against 0.95-1.03 s),
//! the thread switches of synchronous writes eating what the page cache
//! cost. `finish` has nothing left to flush but the last partial page and
//! the metadata.
//!
//! `O_DIRECT` wants the buffer, the file offset and the length aligned.
//! Each writer keeps only its [`Tail`], the bytes past its last whole page
//! (less than one); an append copies the tail and the new bytes into a
//! [`WriteBuf`] borrowed from a pool the whole process shares, writes
//! every whole page of them with one call and keeps the rest as the new
//! tail. `finish` writes the tail padded to a page and cuts the file back
//! to its length. Stores on file systems without direct I/O (a probe at
//! open) write through the page cache.
//!
//! Why a shared pool rather than a buffer per writer: a buffer per writer
//! had to choose between memory and speed. 64 KiB ones kept 64 uploads of
//! ten shares at 43 MiB, but cut a block of a MiB segment into six
//! synchronous writes: 256 MiB PUT 295-330 MB/s, 0.90-1.09 CPU-s, close
//! 35-49 ms, against 384-408 MB/s, 0.80-0.82 CPU-s and 21-31 ms with
//! 256 KiB ones (alternating runs, same machine), which took 166 MiB for
//! 64 uploads. Pooled, a block is one write and the memory is the pool's:
//! 412-436 MB/s, 0.77-0.80 CPU-s, close 24-46 ms in the same runs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::grid::{BufferLease, BufferPool};

/// Alignment of buffers, offsets and lengths: a page, which every block
/// device's logical block size divides.
pub(crate) const ALIGN: usize = 4096;

/// Bytes of one pooled write buffer: a block of a 1 MiB segment coded
/// 3-of-10 (341 KiB) is one write; longer appends are written in pieces
/// this long.
const WRITE_BUF_LEN: usize = 512 << 10;

/// Pooled write buffers, shared by every direct writer in the process: at
/// most this many direct writes are in flight at once, and the pool never
/// holds more than 16 MiB. Ten threads writing direct kept this disk busy
/// (1.1-1.5 GB/s); more only queue in the kernel.
const WRITE_BUFS: usize = 32;

/// `options` with `O_DIRECT` added.
pub(super) fn direct(options: &mut OpenOptions) -> &mut OpenOptions {
    options.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
}

/// Turns `O_DIRECT` on for a file opened without it, before anything is
/// written to it (nothing of it is in the page cache then).
pub(super) fn enable(file: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_DIRECT;
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Whether files in `dir` take direct writes: creates a probe file, writes
/// one aligned page through `O_DIRECT` and removes it.
pub(super) fn supported(dir: &Path) -> bool {
    let probe = dir.join(".direct-io-probe");
    let written = direct(OpenOptions::new().write(true).create(true).truncate(true))
        .open(&probe)
        .and_then(|file| file.write_all_at(Aligned::new(ALIGN).as_slice(), 0));
    let _ = std::fs::remove_file(&probe);
    written.is_ok()
}

/// A zeroed buffer whose usable part starts on an [`ALIGN`] boundary
/// (without unsafe code: a `Vec<u8>` one page longer, used from its first
/// aligned byte).
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        // Always found for u8 (alignment 1): within the first ALIGN bytes.
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { raw, start, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// The process's pool of write buffers: the room for [`WRITE_BUFS`] of
/// them, and those made so far that are not lent out.
struct WritePool {
    room: BufferPool,
    free: Mutex<Vec<Aligned>>,
}

fn write_pool() -> &'static WritePool {
    static POOL: OnceLock<WritePool> = OnceLock::new();
    POOL.get_or_init(|| WritePool {
        room: BufferPool::with_bytes((WRITE_BUFS * WRITE_BUF_LEN) as u64),
        free: Mutex::new(Vec::new()),
    })
}

/// A write buffer borrowed from the pool, returned to it when dropped.
pub(super) struct WriteBuf {
    buf: Option<Aligned>,
    _lease: BufferLease,
}

impl std::fmt::Debug for WriteBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteBuf")
    }
}

impl WriteBuf {
    /// Waits for a buffer of the pool (the caller bounds the wait).
    pub(super) async fn borrow() -> io::Result<Self> {
        let pool = write_pool();
        let lease = pool
            .room
            .lease(WRITE_BUF_LEN as u64)
            .await
            .ok_or_else(|| io::Error::other("the direct-write buffer pool is closed"))?;
        let reused = pool
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        Ok(Self {
            buf: Some(reused.unwrap_or_else(|| Aligned::new(WRITE_BUF_LEN))),
            _lease: lease,
        })
    }

    fn bytes(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(buf) => buf.as_mut_slice(),
            None => &mut [],
        }
    }
}

impl Drop for WriteBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            write_pool()
                .free
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(buf);
        }
    }
}

/// Where in `data`, appended to `held` bytes of a page, the next page
/// begins, if that is a page-aligned address and at least one whole page
/// of `data` follows it: then `data` needs no copy but of its first
/// `ALIGN - held` bytes. The coder lays blocks out in memory at their
/// offset in the share modulo a page (`engine/codec.rs`) for this.
fn in_place_from(held: usize, data: &[u8]) -> Option<usize> {
    let head = (ALIGN - held) % ALIGN;
    let page = data.get(head..)?;
    let aligned = (page.as_ptr() as usize) % ALIGN == 0;
    (aligned && page.len() >= ALIGN).then_some(head)
}

/// Writes `pieces` one after the other at `at`, in one call unless the
/// kernel takes only part of them.
fn write_all_vectored_at<const N: usize>(
    file: &File,
    pieces: [&[u8]; N],
    mut at: u64,
) -> io::Result<()> {
    // An array, not a Vec: this runs for every block of every share.
    let slices = pieces.map(io::IoSlice::new);
    let offset = i64::try_from(at).map_err(|_| io::Error::other("offset past i64"))?;
    let mut done = nix::sys::uio::pwritev(file, &slices, offset).map_err(io::Error::from)?;
    // Rare: the rest piece by piece.
    for piece in pieces {
        if done >= piece.len() {
            done -= piece.len();
            at += piece.len() as u64;
            continue;
        }
        file.write_all_at(&piece[done..], at + done as u64)?;
        at += piece.len() as u64;
        done = 0;
    }
    Ok(())
}

/// The bytes of a share past its last whole page written: less than a
/// page between appends.
#[derive(Debug, Default)]
pub(super) struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    /// Bytes held (less than a page between calls).
    pub(super) fn held_len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether appending `len` bytes writes nothing: they only join the
    /// tail, and no buffer is needed.
    pub(super) fn absorbs(&self, len: usize) -> bool {
        self.bytes.len() + len < ALIGN
    }

    /// Keeps `data` in the tail; only when [`Tail::absorbs`] said so.
    pub(super) fn keep(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    /// Appends `data` to the bytes held, which start at file offset `at`
    /// (page-aligned), writing every whole page through `buf`; returns the
    /// offset of the bytes then held.
    pub(super) fn write(
        &mut self,
        file: &File,
        buf: &mut WriteBuf,
        mut data: &[u8],
        mut at: u64,
    ) -> io::Result<u64> {
        let room = buf.bytes().len() / ALIGN * ALIGN;
        if room == 0 {
            return Err(io::Error::other("no direct-write buffer"));
        }
        loop {
            let held = self.bytes.len();
            if let Some(in_place) = in_place_from(held, data) {
                // The tail and the bytes that complete its page through
                // the buffer, then every whole page after them straight
                // from where they lie.
                let rest = &data[in_place..];
                let whole = rest.len() / ALIGN * ALIGN;
                let first_page = if held > 0 {
                    let out = &mut buf.bytes()[..ALIGN];
                    out[..held].copy_from_slice(&self.bytes);
                    out[held..].copy_from_slice(&data[..in_place]);
                    &out[..]
                } else {
                    &[][..]
                };
                // One write of both: a direct write waits for the disk.
                write_all_vectored_at(file, [first_page, &rest[..whole]], at)?;
                at += (first_page.len() + whole) as u64;
                self.bytes.clear();
                self.bytes.extend_from_slice(&rest[whole..]);
                return Ok(at);
            }
            let whole = ((held + data.len()) / ALIGN * ALIGN).min(room);
            if whole == 0 {
                self.bytes.extend_from_slice(data);
                return Ok(at);
            }
            // held < ALIGN <= whole: the tail goes first, all of it.
            let take = whole - held;
            let out = &mut buf.bytes()[..whole];
            out[..held].copy_from_slice(&self.bytes);
            out[held..].copy_from_slice(&data[..take]);
            file.write_all_at(out, at)?;
            self.bytes.clear();
            at += whole as u64;
            data = &data[take..];
        }
    }

    /// Writes the bytes held, which start at file offset `at` (page-aligned),
    /// and `pieces` after them, one after the other: the share's last
    /// bytes, every page of them, the last padded with zeros; the caller
    /// then cuts the file to its length. The pieces are gathered in `buf`,
    /// one write per buffer filled however many pieces there are (a direct
    /// write waits for the disk): one for the hash trees and trailer of a
    /// share of a file up to 2 GiB, two up to several GiB.
    pub(super) fn write_final(
        &mut self,
        file: &File,
        buf: &mut WriteBuf,
        pieces: &[impl AsRef<[u8]>],
        mut at: u64,
    ) -> io::Result<()> {
        let out = buf.bytes();
        let room = out.len() / ALIGN * ALIGN;
        let held = self.bytes.len();
        if room <= held {
            return Err(io::Error::other("no direct-write buffer"));
        }
        out[..held].copy_from_slice(&self.bytes);
        self.bytes.clear();
        let mut filled = held;
        for piece in pieces {
            let mut piece = piece.as_ref();
            while !piece.is_empty() {
                let take = piece.len().min(room - filled);
                out[filled..filled + take].copy_from_slice(&piece[..take]);
                filled += take;
                piece = &piece[take..];
                if filled == room {
                    file.write_all_at(&out[..room], at)?;
                    at += room as u64;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            // Below `room`, a whole number of pages: the padding fits.
            let padded = filled.div_ceil(ALIGN) * ALIGN;
            out[filled..padded].fill(0);
            file.write_all_at(&out[..padded], at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A share file opened as a store opens it (direct I/O where the file
    /// system has it), appended to through a [`Tail`].
    struct TestShare {
        dir: tempfile::TempDir,
        file: File,
        tail: Tail,
        /// Where the tail's bytes start, and how many bytes were appended.
        at: u64,
        appended: u64,
    }

    impl TestShare {
        fn new() -> TestShare {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            if supported(dir.path()) {
                direct(&mut options);
            }
            let file = options.open(dir.path().join("share")).expect("open");
            TestShare {
                dir,
                file,
                tail: Tail::default(),
                at: 0,
                appended: 0,
            }
        }

        async fn append(&mut self, piece: &[u8]) {
            if self.tail.absorbs(piece.len()) {
                self.tail.keep(piece);
            } else {
                let mut buf = WriteBuf::borrow().await.expect("buffer");
                self.at = self
                    .tail
                    .write(&self.file, &mut buf, piece, self.at)
                    .expect("write");
            }
            self.appended += piece.len() as u64;
            assert_eq!(self.at % ALIGN as u64, 0);
            assert_eq!(self.at + self.tail.held_len() as u64, self.appended);
        }

        /// Writes `last` and every page still held, cuts the file to its
        /// length and reads it.
        async fn finish(mut self, last: &[u8]) -> Vec<u8> {
            let mut buf = WriteBuf::borrow().await.expect("buffer");
            self.tail
                .write_final(&self.file, &mut buf, &[last], self.at)
                .expect("last pages");
            self.file
                .set_len(self.appended + last.len() as u64)
                .expect("cut");
            drop(self.file);
            let mut back = Vec::new();
            File::open(self.dir.path().join("share"))
                .and_then(|mut f| f.read_to_end(&mut back))
                .expect("read back");
            back
        }
    }

    #[tokio::test]
    async fn appends_of_any_length_write_the_exact_bytes() {
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut share = TestShare::new();
        let mut pos = 0;
        // Uneven appends: below a page, across pages, past the buffer.
        for len in [1usize, 4095, 4097, 20, 300_000, 3, 1_100_000, 123_456] {
            let end = (pos + len).min(data.len());
            share.append(&data[pos..end]).await;
            pos = end;
        }
        assert_eq!(share.finish(&[]).await, &data[..pos]);
    }

    /// The last bytes, given to the finish, go with the held tail: in one
    /// write where they fit the buffer, in pages first where they do not.
    #[tokio::test]
    async fn last_bytes_of_any_length_are_written_with_the_tail() {
        let data: Vec<u8> = (0..1_500_000u32)
            .map(|i| (i * 11 + i / 307) as u8)
            .collect();
        for last in [0usize, 1, 4096 - 1000, 5_000, WRITE_BUF_LEN + 12_345] {
            let mut share = TestShare::new();
            share.append(&data[..1000]).await;
            assert_eq!(share.tail.held_len(), 1000);
            let back = share.finish(&data[1000..1000 + last]).await;
            assert!(back == data[..1000 + last], "{last} last bytes");
        }
    }

    /// Appends laid out in memory at their file offset modulo a page, as
    /// the coder lays out blocks, are written in place; the bytes are the
    /// same as through the buffer.
    #[tokio::test]
    async fn appends_laid_out_at_their_page_offset_write_the_exact_bytes() {
        let data: Vec<u8> = (0..1_500_000u32)
            .map(|i| (i * 13 + i / 509) as u8)
            .collect();
        let mut memory = memmap2::MmapMut::map_anon(2 << 20).expect("map");
        let mut share = TestShare::new();
        let mut pos = 0;
        // A 20-byte header (through the tail), then block-sized appends.
        for len in [20usize, 349_526, 349_526, 9_000, 349_526, 100_000] {
            let end = (pos + len).min(data.len());
            let lies_at = pos % ALIGN;
            let laid_out = &mut memory[lies_at..lies_at + (end - pos)];
            laid_out.copy_from_slice(&data[pos..end]);
            assert!(
                share.tail.absorbs(laid_out.len())
                    || in_place_from(share.tail.held_len(), laid_out).is_some(),
                "an append of {len} at {pos} is written in place"
            );
            share.append(laid_out).await;
            pos = end;
        }
        assert_eq!(share.finish(&[]).await, &data[..pos]);
    }

    #[test]
    fn only_page_aligned_remainders_are_written_in_place() {
        let memory = memmap2::MmapMut::map_anon(4 * ALIGN).expect("map");
        assert_eq!(in_place_from(0, &memory[..2 * ALIGN]), Some(0));
        assert_eq!(in_place_from(100, &memory[ALIGN - 100 + 7..]), None);
        assert_eq!(in_place_from(100, &memory[100..]), Some(ALIGN - 100));
        assert_eq!(in_place_from(0, &memory[1..ALIGN + 1]), None, "misaligned");
        assert_eq!(
            in_place_from(0, &memory[..ALIGN - 1]),
            None,
            "no whole page"
        );
    }
}
