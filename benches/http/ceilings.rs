//! What the disk itself allows (scenario `ceilings`): the same work griddav
//! asks of the disk, done without griddav, in the benchmark directory (on
//! the disk the servers' data is on), so that targets bounded by the disk
//! show it with figures from the same run. Each figure is the median of
//! [`RUNS`] runs.
//!
//! - **Share writes of a 3-of-10 PUT**: for the largest size measured (at
//!   most 1 GiB), ten threads each write one file of a third of it with
//!   `O_DIRECT`, in 1 MiB writes from an aligned buffer of random bytes,
//!   and `fdatasync` it; timed from the first write to the last sync. A
//!   file system without direct I/O (`open` answers `EINVAL`) is written
//!   through the page cache instead, and the report says so.
//! - **Cold read of the three data shares**: the page cache dropped (when
//!   the benchmark may: `GRIDDAV_BENCH_COLD_GET`), three of those files
//!   are read through the page cache in 1 MiB reads, four in flight on
//!   each (lanes taking every fourth MiB), as griddav reads a file's data
//!   shares with four segments in flight.
//! - **Sync floor of a small file**: ten files already holding 1 MiB of
//!   written zeros; [`ROUNDS`] rounds of ten threads each writing the next
//!   4 KiB of its own file and `fdatasync`ing it, the round done when all
//!   ten are; then one thread writing 4 KiB and `fdatasync`ing it
//!   [`ROUNDS`] times, the cost of one namespace commit's sync.
//!
//! Every file is removed again; errors end a probe, not the benchmark.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use rand::RngCore;

use super::*;

/// Runs of each probe; the median is reported.
pub(super) const RUNS: usize = 3;
/// The largest file the share-write probe writes the shares of.
const MAX_SIZE: u64 = 1 << 30;
pub(super) const SHARES: usize = 10;
const DATA_SHARES: usize = 3;
/// Bytes per `write` and per `read`.
const IO_LEN: usize = 1 << 20;
/// Reads in flight on each data share in the cold-read probe: griddav's
/// download keeps four segments in flight (`READ_AHEAD`), each a read of
/// every data share. One sequential reader per share read slower than
/// griddav did, so the figure was no ceiling.
const READS_IN_FLIGHT: usize = 4;
/// Alignment of direct writes: buffer, offset and length.
const ALIGN: usize = 4096;
/// Rounds of durable appends, and single write + sync of one file.
const ROUNDS: usize = 200;
const RECORD: usize = 4096;
/// Written (not allocated) zeros in each append file before the rounds.
const PREWRITTEN: usize = 1 << 20;

/// The disk's own ceilings; each `Err` is the probe's error.
pub(super) struct Ceilings {
    /// The file size the share writes are for.
    pub(super) size: u64,
    /// Bytes of each of the ten share files: a third of `size`, rounded up.
    pub(super) share_len: u64,
    /// Whether the shares were written with `O_DIRECT`.
    pub(super) direct: bool,
    /// Whether the page cache was dropped before the reads.
    pub(super) cold: bool,
    /// First write .. last sync of the ten share files.
    pub(super) write_secs: Result<f64, String>,
    /// Reading three of them at once.
    pub(super) read_secs: Result<f64, String>,
    /// One round of ten parallel 4 KiB write + fdatasync: median and p90, ms.
    pub(super) round_ms: Result<(f64, f64), String>,
    /// One 4 KiB write + fdatasync of one file, median ms.
    pub(super) commit_ms: Result<f64, String>,
}

impl Ceilings {
    /// How the shares were read back: cold when the page cache was dropped
    /// or the shares were written past it (direct I/O), warm otherwise.
    pub(super) fn read_temperature(&self) -> &'static str {
        if self.cold || self.direct {
            "cold"
        } else {
            "warm"
        }
    }
}

pub(super) fn run(settings: &Settings) -> Ceilings {
    let size = settings
        .sizes
        .iter()
        .copied()
        .max()
        .unwrap_or(MAX_SIZE)
        .min(MAX_SIZE);
    let share_len = size.div_ceil(DATA_SHARES as u64);
    let mut c = Ceilings {
        size,
        share_len,
        direct: false,
        cold: settings.cold_get,
        write_secs: Err("not run".into()),
        read_secs: Err("not run".into()),
        round_ms: Err("not run".into()),
        commit_ms: Err("not run".into()),
    };
    let dir = match tempfile::Builder::new()
        .prefix("ceilings-")
        .tempdir_in(&settings.root)
    {
        Ok(dir) => dir,
        Err(e) => {
            let e = format!("temporary directory: {e}");
            c.write_secs = Err(e.clone());
            c.read_secs = Err(e.clone());
            c.round_ms = Err(e.clone());
            c.commit_ms = Err(e);
            return c;
        }
    };

    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    let (mut write_error, mut read_error) = (None, None);
    for run in 0..RUNS {
        let paths: Vec<PathBuf> = (0..SHARES)
            .map(|i| dir.path().join(format!("share-{i:02}")))
            .collect();
        let written = write_shares(&paths, share_len);
        let read = written.as_ref().map_err(|e| e.to_string()).and_then(|_| {
            if settings.cold_get {
                drop_page_cache().map_err(|e| format!("dropping the page cache: {e}"))?;
            }
            read_shares(&paths[..DATA_SHARES], DATA_SHARES as u64 * share_len)
                .map_err(|e| e.to_string())
        });
        remove(&paths);
        let (direct, secs) = match written {
            Ok(w) => w,
            Err(e) => {
                eprintln!("  ceilings {}/{RUNS}: share writes: ERROR {e}", run + 1);
                write_error = Some(e.to_string());
                break;
            }
        };
        eprintln!(
            "  ceilings {}/{RUNS}: 10 x {} MiB shares written {} in {secs:.2} s ({:.0} MB/s of shares), 3 read {} in {}",
            run + 1,
            share_len / MIB,
            if direct { "direct" } else { "buffered" },
            mbs(SHARES as u64 * share_len, secs),
            if settings.cold_get { "cold" } else { "without dropping the cache" },
            match &read {
                Ok(s) => format!("{s:.2} s"),
                Err(e) => format!("ERROR {e}"),
            }
        );
        c.direct = direct;
        writes.push(secs);
        match read {
            Ok(secs) => reads.push(secs),
            Err(e) => read_error = Some(e),
        }
    }
    match write_error {
        Some(e) => {
            c.write_secs = Err(e);
            c.read_secs = Err("no shares written".into());
        }
        None => {
            c.write_secs = Ok(median(&mut writes));
            c.read_secs = match read_error {
                Some(e) => Err(e),
                None => Ok(median(&mut reads)),
            };
        }
    }

    let (mut medians, mut p90s, mut commits) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        match sync_floor(dir.path()) {
            Ok((median_ms, p90_ms, commit_ms)) => {
                eprintln!(
                    "  ceilings {}/{RUNS}: ten parallel 4 KiB write + fdatasync: median {median_ms:.3} ms, p90 {p90_ms:.3} ms; one: median {commit_ms:.3} ms",
                    run + 1
                );
                medians.push(median_ms);
                p90s.push(p90_ms);
                commits.push(commit_ms);
            }
            Err(e) => {
                eprintln!("  ceilings {}/{RUNS}: durable appends: ERROR {e}", run + 1);
                c.round_ms = Err(e.to_string());
                c.commit_ms = Err(e.to_string());
                break;
            }
        }
    }
    if medians.len() == RUNS {
        c.round_ms = Ok((median(&mut medians), median(&mut p90s)));
        c.commit_ms = Ok(median(&mut commits));
    }
    c
}

/// Removes files, whatever is left of them.
fn remove(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Joins every thread of a probe: their results in order, or the first
/// error (a panic as one, naming `what`).
fn join_all<T>(
    threads: Vec<std::thread::ScopedJoinHandle<'_, io::Result<T>>>,
    what: &str,
) -> io::Result<Vec<T>> {
    let mut results = Vec::with_capacity(threads.len());
    let mut first_error = None;
    for thread in threads {
        match thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other(format!("{what} panicked"))))
        {
            Ok(result) => results.push(result),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(results), Err)
}

/// A buffer of `len` random bytes starting on an [`ALIGN`] boundary
/// (without unsafe code: a `Vec<u8>` one alignment longer, used from its
/// first aligned byte).
fn aligned_random(len: usize) -> (Vec<u8>, usize) {
    let mut raw = vec![0u8; len + ALIGN];
    rand::thread_rng().fill_bytes(&mut raw);
    let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
    (raw, start)
}

/// Creates `paths`, each `share_len` bytes, written by one thread per file
/// and synced. Returns whether the writes were direct, and the seconds
/// from the first write to the last sync.
fn write_shares(paths: &[PathBuf], share_len: u64) -> io::Result<(bool, f64)> {
    let mut direct = true;
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let open = |direct: bool| {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            if direct {
                options.custom_flags(nix::libc::O_DIRECT);
            }
            options.open(path)
        };
        // All files are in one directory: only the first open can refuse
        // O_DIRECT, and then every file is written through the page cache.
        let file = match open(direct) {
            Err(e) if direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
                direct = false;
                open(false)?
            }
            other => other?,
        };
        files.push(file);
    }
    // One buffer for every writer, filled before the clock starts.
    let (raw, start) = aligned_random(IO_LEN);
    let buf = &raw[start..start + IO_LEN];
    let (_, secs) = on_each(&files, "a share writer", |file| {
        let mut at = 0u64;
        while at < share_len {
            let left = share_len - at;
            let len = if left >= IO_LEN as u64 {
                IO_LEN
            } else if direct {
                // The last piece padded to a page, cut back below.
                (left as usize).next_multiple_of(ALIGN)
            } else {
                left as usize
            };
            file.write_all_at(&buf[..len], at)?;
            at += len as u64;
        }
        if at != share_len {
            file.set_len(share_len)?;
        }
        file.sync_data()
    })?;
    Ok((direct, secs))
}

/// Reads `paths` whole through the page cache, [`READS_IN_FLIGHT`] threads
/// per file. Returns the seconds from the first read to the last.
fn read_shares(paths: &[PathBuf], expected: u64) -> io::Result<f64> {
    let files = paths
        .iter()
        .map(|path| {
            let file = File::open(path)?;
            let len = file.metadata()?.len();
            Ok((file, len))
        })
        .collect::<io::Result<Vec<(File, u64)>>>()?;
    let lanes: Vec<(&File, u64, usize)> = files
        .iter()
        .flat_map(|(file, len)| (0..READS_IN_FLIGHT).map(move |lane| (file, *len, lane)))
        .collect();
    let (counts, secs) = on_each(&lanes, "a share reader", |&(file, len, lane)| {
        read_lane(file, len, lane)
    })?;
    match counts.iter().sum::<u64>() {
        n if n == expected => Ok(secs),
        n => Err(io::Error::other(format!(
            "read {n} bytes of shares, expected {expected}"
        ))),
    }
}

/// Reads every [`READS_IN_FLIGHT`]th `IO_LEN` piece of `file`, from piece
/// `lane` on; the bytes read.
fn read_lane(file: &File, len: u64, lane: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; IO_LEN];
    let stride = (IO_LEN * READS_IN_FLIGHT) as u64;
    let mut at = (IO_LEN * lane) as u64;
    let mut total = 0u64;
    while at < len {
        let piece = usize::try_from((len - at).min(IO_LEN as u64)).map_err(io::Error::other)?;
        file.read_exact_at(&mut buf[..piece], at)?;
        total += piece as u64;
        at += stride;
    }
    Ok(total)
}

/// Runs `work` on every item at once, one thread each, started together
/// after the threads are up: the results, and the seconds from the start
/// until the last is done.
fn on_each<I: Sync, T: Send>(
    items: &[I],
    what: &str,
    work: impl Fn(&I) -> io::Result<T> + Sync,
) -> io::Result<(Vec<T>, f64)> {
    let barrier = Barrier::new(items.len() + 1);
    std::thread::scope(|s| {
        let threads: Vec<_> = items
            .iter()
            .map(|item| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    work(item)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results = join_all(threads, what);
        let secs = start.elapsed().as_secs_f64();
        results.map(|r| (r, secs))
    })
}

/// A file of `PREWRITTEN` written zeros, synced, open for writing.
fn prewritten(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all_at(&vec![0u8; PREWRITTEN], 0)?;
    file.sync_all()?;
    Ok(file)
}

/// Ten parallel durable 4 KiB writes per round, then single ones: the
/// median and p90 round, and the median single write + sync, all in ms.
fn sync_floor(dir: &Path) -> io::Result<(f64, f64, f64)> {
    let mut paths: Vec<PathBuf> = (0..SHARES)
        .map(|i| dir.join(format!("append-{i:02}")))
        .collect();
    paths.push(dir.join("commit"));
    let result = (|| {
        let mut files = paths
            .iter()
            .map(|p| prewritten(p))
            .collect::<io::Result<Vec<File>>>()?;
        let commit = files.pop().expect("the commit file");
        let mut record = [0u8; RECORD];
        rand::thread_rng().fill_bytes(&mut record);
        let record = &record;

        let barrier = Barrier::new(files.len() + 1);
        let mut rounds = std::thread::scope(|s| {
            let writers: Vec<_> = files
                .iter()
                .map(|file| {
                    let barrier = &barrier;
                    s.spawn(move || -> io::Result<()> {
                        // Every round's two waits are kept after an error,
                        // so that the others are not left waiting.
                        let mut error = None;
                        for round in 0..ROUNDS {
                            barrier.wait();
                            if error.is_none() {
                                if let Err(e) = file
                                    .write_all_at(record, (round * RECORD) as u64)
                                    .and_then(|()| file.sync_data())
                                {
                                    error = Some(e);
                                }
                            }
                            barrier.wait();
                        }
                        error.map_or(Ok(()), Err)
                    })
                })
                .collect();
            let mut times = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                barrier.wait();
                let start = Instant::now();
                barrier.wait();
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            join_all(writers, "an append writer").map(|_| times)
        })?;
        rounds.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let p90 = rounds[(rounds.len() * 9).div_ceil(10) - 1];
        let round_median = median(&mut rounds);

        let mut commits = Vec::with_capacity(ROUNDS);
        for i in 0..ROUNDS {
            let start = Instant::now();
            commit.write_all_at(record, (i * RECORD) as u64)?;
            commit.sync_data()?;
            commits.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok((round_median, p90, median(&mut commits)))
    })();
    remove(&paths);
    result
}
