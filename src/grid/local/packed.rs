//! Small shares packed into append-only logs.
//!
//! A share finished while the writer still holds all of it in memory (at
//! most [`super::SMALL_SHARE`] bytes: every share of a file up to about
//! 150 KiB, 3-of-10) gets no file of its own. It is appended as one record
//! to the store's current log, `packed/<id>.log`, and the log is synced
//! with `fdatasync`: no new inode, no directory entry, no directory sync.
//! Uploads that finish at the same moment share one write and one sync
//! (a group commit: the first finisher writes whatever has queued up
//! behind it, the others wait for its sync).
//!
//! Why: a file of its own cost each small share about seven metadata
//! changes (a partial file created and removed, a directory made, a link)
//! and three syncs (the file, its directory and the directory's parent),
//! thirty syncs and seventy metadata changes for one small file on a
//! 3-of-10 grid. Those, not the bytes, were most of a small file's upload.
//!
//! A record, all integers little-endian:
//!
//! ```text
//!    0   4  magic "GDP1"
//!    4   1  state: 1 live, 2 deleted
//!    5   1  share number
//!    6   2  zero
//!    8  16  storage index
//!   24   4  data length, at most SMALL_SHARE
//!   28   4  zero
//!   32  32  BLAKE3 of this header (state and this field zero) and the data
//!   64   -  the share's bytes
//! ```
//!
//! Deleting a share sets its state byte to 2 in place (one sector written,
//! so it cannot tear) and punches the whole pages of its data out of the
//! file, which gives their room back at once; a log left with no live
//! record is removed. Nothing is ever compacted or moved.
//!
//! At open, the logs are scanned header by header. Every write before the
//! newest batch was synced before that batch began, so only the newest
//! batch of the newest log can be torn by a crash: its records are
//! checked against their hashes and the log is cut before the first that
//! fails. Every read checks the whole record again (state, names, hash):
//! a share read is never another's bytes, a deleted share's, or rot.
//!
//! One process writes the logs. A store opened beside a running server
//! (`griddav check`) never packs; it re-reads the logs' new records
//! before each listing, so it sees shares the server packed since, and a
//! share it deletes (a repair freeing a server of bad shares) is marked
//! deleted in place, which the server's reads then see.

use std::collections::{btree_map, BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::super::{ShareInfo, ShareNum, StorageIndex};
use super::SMALL_SHARE;

const MAGIC: &[u8; 4] = b"GDP1";
const HEADER: usize = 64;
const LIVE: u8 = 1;
const DELETED: u8 = 2;
const STATE_AT: u64 = 4;

/// A log is not appended to past this length; the next batch starts a
/// new one. Small enough that a log whose shares are mostly deleted is
/// soon removed whole.
const LOG_ROLL: u64 = 64 << 20;

/// At most this many bytes go into one write and one sync. It bounds the
/// tail that a crash can have torn, which open checks record by record.
const MAX_BATCH: usize = 4 << 20;

/// The active log is kept written with zeros this far past its last
/// record. A batch written over zeros leaves the file's length alone, so
/// its `fdatasync` flushes the data and no metadata: 0.13 ms against
/// 0.26 ms for a sync after an append, measured on this machine's disk
/// (ext4 without a journal). A zero header ends a log when it is read.
const ZEROED_AHEAD: u64 = 1 << 20;

/// What zeros are written from.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Where a live share's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    share: ShareNum,
    log: u32,
    /// Offset of the record's header in its log.
    at: u64,
    len: u32,
}

#[derive(Debug)]
struct Log {
    file: Arc<File>,
    /// Live records in it.
    live: usize,
    /// Whether its scan read every record, up to its end or to zeros: a
    /// log whose scan stopped at a damaged header may hold records past
    /// it, and is kept even with nothing live. Only the writer removes
    /// logs, so only its scan (at open) looks: a store beside the server
    /// scans before every listing and would re-read the zeros each time.
    whole: bool,
}

/// A record waiting for the next batch.
#[derive(Debug)]
struct Pending {
    si: StorageIndex,
    share: ShareNum,
    record: Vec<u8>,
    /// Where the share would be as a file of its own: if one is there
    /// (written beside the server, or before shares were packed), the
    /// share exists already and is not packed.
    file: PathBuf,
    done: oneshot::Sender<io::Result<()>>,
}

#[derive(Debug, Default)]
struct State {
    /// One flat ordered map: a map of vectors cost about 165 bytes of
    /// memory per packed share (100,000 shares opened: 16 MiB), this one
    /// about 84 (8 MiB).
    index: BTreeMap<(StorageIndex, ShareNum), Entry>,
    logs: BTreeMap<u32, Log>,
    /// The log appended to and its length; `None` until the first batch
    /// (or after a failed write, whose log is not appended to again).
    active: Option<(u32, u64)>,
    /// How far the active log is written with zeros (see [`ZEROED_AHEAD`]).
    zeroed: u64,
    /// Shares being written, by this process, that may end up packed.
    building: HashSet<(StorageIndex, ShareNum)>,
    queue: Vec<Pending>,
    /// Whether a batch writer is running (it drains `queue`).
    committing: bool,
    /// Where the last scan stopped: a log and an offset in it (beside a
    /// server, the next listing scans on from there).
    scanned: (u32, u64),
    /// The id the next new log takes: past every log ever seen, so that a
    /// log being removed never has its name taken again.
    next_log: u32,
}

/// The packed small shares of one store.
#[derive(Debug)]
pub(super) struct Packed {
    dir: PathBuf,
    /// Whether this process writes the logs (false beside a server).
    writer: bool,
    state: Mutex<State>,
}

/// A packed share located for reading.
pub(super) struct Located {
    file: Arc<File>,
    at: u64,
    si: StorageIndex,
    share: ShareNum,
    /// The share's length.
    pub(super) len: u64,
}

impl Packed {
    /// Opens `dir` (creating it), scans its logs and, when `writer`, cuts
    /// a torn tail and removes logs with nothing live. Blocking.
    pub(super) fn open(dir: PathBuf, writer: bool) -> io::Result<Packed> {
        fs::create_dir_all(&dir)?;
        let packed = Packed {
            dir,
            writer,
            state: Mutex::new(State::default()),
        };
        {
            let mut state = packed.lock();
            let newest = packed.scan(&mut state)?;
            if let Some(newest) = newest {
                packed.check_torn_tail(&mut state, newest)?;
            }
            if writer {
                packed.remove_dead_logs(&mut state);
            }
        }
        Ok(packed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn log_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id:08x}.log"))
    }

    /// Reads the headers of every record past `state.scanned` (logs not
    /// seen yet included) into the index. Answers the newest log's id and
    /// where its records start being unchecked: the last batch's span.
    fn scan(&self, state: &mut State) -> io::Result<Option<u32>> {
        let mut ids: Vec<u32> = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .filter(|n| n.len() == 8)
                .and_then(|n| u32::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            if id >= state.scanned.0 {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let newest = ids.last().copied();
        for id in ids {
            let file = match state.logs.get(&id) {
                Some(log) => Arc::clone(&log.file),
                None => {
                    let opened = OpenOptions::new()
                        .read(true)
                        .write(self.writer)
                        .open(self.log_path(id));
                    match opened {
                        Ok(file) => Arc::new(file),
                        // Removed by the server since we listed.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            let from = if id == state.scanned.0 {
                state.scanned.1
            } else {
                0
            };
            let (end, live, len) = scan_log(&file, from, |si, entry| {
                // A second record of a share (never written by one
                // process) is ignored: the first stays.
                match state.index.entry((si, entry.share)) {
                    btree_map::Entry::Occupied(_) => false,
                    btree_map::Entry::Vacant(place) => {
                        place.insert(Entry { log: id, ..entry });
                        true
                    }
                }
            })?;
            let whole = !self.writer || end == len || zeros_from(&file, end, len)?;
            let log = state.logs.entry(id).or_insert(Log {
                file,
                live: 0,
                whole,
            });
            log.live += live;
            log.whole = whole;
            if !whole && self.writer {
                tracing::warn!(log = %self.log_path(id).display(), offset = end,
                    "a packed log has bytes past its last readable record; it is kept");
            }
            state.scanned = (id, end);
            state.next_log = state.next_log.max(id.saturating_add(1));
        }
        Ok(newest)
    }

    /// Checks the records of the newest log's last batch against their
    /// hashes; the first that fails and all after it are dropped (and,
    /// for the writer, cut off the log).
    fn check_torn_tail(&self, state: &mut State, newest: u32) -> io::Result<()> {
        let Some(log) = state.logs.get(&newest) else {
            return Ok(());
        };
        let file = Arc::clone(&log.file);
        let scanned_end = if state.scanned.0 == newest {
            state.scanned.1
        } else {
            0
        };
        let window = scanned_end.saturating_sub((MAX_BATCH + HEADER + SMALL_SHARE) as u64);
        let mut in_window: Vec<(StorageIndex, Entry)> = state
            .index
            .iter()
            .map(|((si, _), e)| (*si, *e))
            .filter(|(_, e)| e.log == newest && e.at >= window)
            .collect();
        in_window.sort_by_key(|(_, e)| e.at);
        let mut cut = None;
        for (si, entry) in &in_window {
            if read_record(&file, entry.at, *si, entry.share, u64::from(entry.len)).is_err() {
                cut = Some(entry.at);
                break;
            }
        }
        let Some(cut) = cut else {
            let len = file.metadata()?.len();
            // Zeros, or a header torn by a crash, past the last record: a
            // torn batch and the zeros after it are no longer than this.
            // More is damage, not a crash: that log is kept as it is.
            let torn_at_most = (MAX_BATCH as u64) + ZEROED_AHEAD;
            if self.writer && len > scanned_end && len - scanned_end <= torn_at_most {
                file.set_len(scanned_end)?;
                file.sync_data()?;
                if let Some(log) = state.logs.get_mut(&newest) {
                    log.whole = true;
                }
            }
            return Ok(());
        };
        tracing::warn!(log = %self.log_path(newest).display(), offset = cut,
            "packed shares torn by a crash (never acknowledged) are dropped");
        for (si, entry) in in_window.iter().filter(|(_, e)| e.at >= cut) {
            remove_entry(state, *si, *entry);
        }
        state.scanned = (newest, cut);
        if self.writer {
            file.set_len(cut)?;
            file.sync_data()?;
            if let Some(log) = state.logs.get_mut(&newest) {
                log.whole = true;
            }
        }
        Ok(())
    }

    /// Removes the logs with no live record (the writer's open only: no
    /// batch is being written then).
    fn remove_dead_logs(&self, state: &mut State) {
        let dead: Vec<u32> = state
            .logs
            .iter()
            .filter(|(_, log)| log.live == 0 && log.whole)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            state.logs.remove(&id);
            self.remove_log_file(id);
        }
    }

    /// Removes log `id`, which holds no live record; a failure only
    /// leaves it behind, to be removed at the next open.
    fn remove_log_file(&self, id: u32) {
        if let Err(e) = fs::remove_file(self.log_path(id)) {
            tracing::warn!(log = %self.log_path(id).display(), error = %e,
                "cannot remove a packed log with no live share");
        }
    }

    /// Whether packing is this process's to do.
    pub(super) fn writes(&self) -> bool {
        self.writer
    }

    /// Marks a share as being written; false if it is packed already or
    /// being written (the caller answers `AlreadyExists`).
    pub(super) fn begin(&self, si: StorageIndex, share: ShareNum) -> bool {
        let mut state = self.lock();
        !state.index.contains_key(&(si, share)) && state.building.insert((si, share))
    }

    /// Ends what [`Packed::begin`] marked (finished, aborted or dropped).
    pub(super) fn end(&self, si: StorageIndex, share: ShareNum) {
        self.lock().building.remove(&(si, share));
    }

    /// Where a packed share is, if it is packed.
    pub(super) fn locate(&self, si: StorageIndex, share: ShareNum) -> Option<Located> {
        let state = self.lock();
        let entry = state.index.get(&(si, share))?;
        let log = state.logs.get(&entry.log)?;
        Some(Located {
            file: Arc::clone(&log.file),
            at: entry.at,
            si,
            share,
            len: u64::from(entry.len),
        })
    }

    /// The packed shares of `si`. Beside a server, the logs' new records
    /// are read first. Blocking.
    pub(super) fn list(&self, si: StorageIndex) -> io::Result<Vec<ShareInfo>> {
        let mut state = self.lock();
        if !self.writer {
            self.scan(&mut state)?;
        }
        Ok(shares_of(&state, si)
            .map(|e| ShareInfo {
                share: e.share,
                len: u64::from(e.len),
            })
            .collect())
    }

    /// Appends a share's record and returns once it is durable, sharing
    /// the write and the sync with every record queued meanwhile. Fails
    /// with `AlreadyExists` if `file`, the share as a file of its own, is
    /// there.
    pub(super) async fn append(
        self: &Arc<Self>,
        si: StorageIndex,
        share: ShareNum,
        data: &[u8],
        file: PathBuf,
    ) -> io::Result<()> {
        let record = encode_record(si, share, data)?;
        let (done, answer) = oneshot::channel();
        let lead = {
            let mut state = self.lock();
            state.queue.push(Pending {
                si,
                share,
                record,
                file,
                done,
            });
            !std::mem::replace(&mut state.committing, true)
        };
        if lead {
            let packed = Arc::clone(self);
            tokio::task::spawn_blocking(move || packed.commit_queued());
        }
        answer
            .await
            .map_err(|_| io::Error::other("the packed log's writer stopped"))?
    }

    /// Writes and syncs batches until the queue is empty.
    fn commit_queued(&self) {
        loop {
            let batch = {
                let mut state = self.lock();
                if state.queue.is_empty() {
                    state.committing = false;
                    return;
                }
                let mut bytes = 0usize;
                let take = state
                    .queue
                    .iter()
                    .take_while(|p| {
                        bytes += p.record.len();
                        bytes <= MAX_BATCH
                    })
                    .count()
                    .max(1);
                state.queue.drain(..take).collect::<Vec<_>>()
            };
            // Checked here, on the batch writer's thread, rather than at
            // `create`: a trip to the blocking pool per share saved.
            let mut to_write = Vec::with_capacity(batch.len());
            for pending in batch {
                match fs::symlink_metadata(&pending.file) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => to_write.push(pending),
                    Ok(_) => {
                        let _ = pending.done.send(Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "the share exists as a file",
                        )));
                    }
                    Err(e) => {
                        let _ = pending.done.send(Err(e));
                    }
                }
            }
            let mut batch = to_write;
            let result = if batch.is_empty() {
                Ok(())
            } else {
                self.commit(&mut batch)
            };
            for pending in batch {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(same_error(e)),
                };
                let _ = pending.done.send(answer);
            }
        }
    }

    /// One batch: written at the end of the active log in one call,
    /// synced, then entered into the index.
    fn commit(&self, batch: &mut [Pending]) -> io::Result<()> {
        let (id, file, start, zeroed) = self.active_log()?;
        let mut entries = Vec::with_capacity(batch.len());
        let mut at = start;
        for pending in batch.iter() {
            let len = u32::try_from(pending.record.len() - HEADER)
                .map_err(|_| io::Error::other("packed record longer than its limit"))?;
            entries.push((
                pending.si,
                Entry {
                    share: pending.share,
                    log: id,
                    at,
                    len,
                },
            ));
            at += pending.record.len() as u64;
        }
        // One write: the first record's buffer takes the others (a lone
        // record, one client's usual batch, is written without a copy).
        let (first, rest) = batch
            .split_first_mut()
            .ok_or_else(|| io::Error::other("an empty batch"))?;
        let mut bytes = std::mem::take(&mut first.record);
        bytes.reserve(rest.iter().map(|p| p.record.len()).sum());
        for pending in rest {
            bytes.extend_from_slice(&pending.record);
        }
        let end = at;
        let new_zeroed = if end > zeroed {
            end + ZEROED_AHEAD
        } else {
            zeroed
        };
        let written = file
            .write_all_at(&bytes, start)
            .and_then(|()| write_zeros(&file, end.max(zeroed)..new_zeroed))
            .and_then(|()| file.sync_data());
        let mut state = self.lock();
        if let Err(e) = written {
            // Never append after a failed write (its bytes are in an
            // unknown state): the next batch starts a new log, and these
            // records are marked deleted if the disk still lets us.
            state.active = None;
            drop(state);
            for (_, entry) in &entries {
                let _ = file.write_all_at(&[DELETED], entry.at + STATE_AT);
            }
            let _ = file.sync_data();
            return Err(e);
        }
        state.active = Some((id, end));
        state.zeroed = new_zeroed;
        state.scanned = (id, end);
        for (si, entry) in entries {
            if let Some(log) = state.logs.get_mut(&id) {
                log.live += 1;
            }
            if let Some(old) = state.index.insert((si, entry.share), entry) {
                // Not written by `begin`'s rules; the newer record wins.
                if let Some(log) = state.logs.get_mut(&old.log) {
                    log.live = log.live.saturating_sub(1);
                }
            }
        }
        Ok(())
    }

    /// The log to append to, its end and how far it is zeroed, starting
    /// a new log when there is none or the current one is full. Only the
    /// batch writer calls it.
    fn active_log(&self) -> io::Result<(u32, Arc<File>, u64, u64)> {
        let (next, full) = {
            let mut state = self.lock();
            let active = state.active.and_then(|(id, end)| {
                state
                    .logs
                    .get(&id)
                    .map(|log| (id, Arc::clone(&log.file), end, state.zeroed))
            });
            let full = match active {
                Some(active) if active.2 < LOG_ROLL => return Ok(active),
                Some((_, file, end, _)) => Some((file, end)),
                None => None,
            };
            let next = state.next_log.max(1);
            state.next_log = next.saturating_add(1);
            (next, full)
        };
        if let Some((file, end)) = full {
            // Its zeros are not needed any more; only room is at stake.
            let _ = file.set_len(end);
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(self.log_path(next))?,
        );
        // The new name must survive a crash with the records in it.
        File::open(&self.dir)?.sync_all()?;
        let mut state = self.lock();
        state.logs.insert(
            next,
            Log {
                file: Arc::clone(&file),
                live: 0,
                whole: true,
            },
        );
        state.active = Some((next, 0));
        state.zeroed = 0;
        Ok((next, file, 0, 0))
    }

    /// Deletes every packed share of `si`: marked deleted in place and
    /// synced, then their pages punched out and emptied logs removed.
    /// Blocking.
    pub(super) fn delete(&self, si: StorageIndex) -> io::Result<()> {
        let mut victims: Vec<(Entry, Arc<File>)> = {
            let state = self.lock();
            shares_of(&state, si)
                .filter_map(|e| {
                    state
                        .logs
                        .get(&e.log)
                        .map(|log| (*e, Arc::clone(&log.file)))
                })
                .collect()
        };
        if !self.writer {
            // Beside the server (a repair freeing a server of bad shares):
            // the logs are open read-only here. Marking a record deleted
            // changes one byte the server never writes again but to mark
            // it deleted too; its reads then answer not found.
            let mut writable: HashMap<u32, Arc<File>> = HashMap::new();
            for (entry, file) in &mut victims {
                let opened = match writable.entry(entry.log) {
                    std::collections::hash_map::Entry::Occupied(opened) => opened.into_mut(),
                    std::collections::hash_map::Entry::Vacant(place) => place.insert(Arc::new(
                        OpenOptions::new()
                            .write(true)
                            .open(self.log_path(entry.log))?,
                    )),
                };
                *file = Arc::clone(opened);
            }
        }
        for (entry, file) in &victims {
            file.write_all_at(&[DELETED], entry.at + STATE_AT)?;
        }
        let mut synced: HashSet<u32> = HashSet::new();
        for (entry, file) in &victims {
            if synced.insert(entry.log) {
                file.sync_data()?;
            }
        }
        let mut emptied = Vec::new();
        {
            let mut state = self.lock();
            let active = state.active.map(|(id, _)| id);
            for (entry, _) in &victims {
                let removable = state.logs.get(&entry.log).is_some_and(|log| log.whole);
                if remove_entry(&mut state, si, *entry)
                    && removable
                    && self.writer
                    && Some(entry.log) != active
                {
                    state.logs.remove(&entry.log);
                    emptied.push(entry.log);
                }
            }
        }
        for (entry, file) in &victims {
            punch_data(file, entry);
        }
        for id in emptied {
            self.remove_log_file(id);
        }
        Ok(())
    }
}

impl Located {
    /// Exactly `ranges` of the share, each already checked against its
    /// length, from one read of its whole record. Blocking.
    pub(super) fn read(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Bytes>> {
        let data = Bytes::from(read_record(
            &self.file, self.at, self.si, self.share, self.len,
        )?);
        ranges
            .iter()
            .map(|range| {
                let start = usize::try_from(range.start).map_err(|_| io::Error::other("range"))?;
                let end = usize::try_from(range.end).map_err(|_| io::Error::other("range"))?;
                if start > end || end > data.len() {
                    return Err(io::Error::other("range outside a packed share"));
                }
                Ok(data.slice(start..end))
            })
            .collect()
    }
}

/// Whether `file` holds only zeros from `at` to `len`.
fn zeros_from(file: &File, mut at: u64, len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; ZEROS.len()];
    while at < len {
        let want = usize::try_from(len - at).map_or(buf.len(), |left| left.min(buf.len()));
        file.read_exact_at(&mut buf[..want], at)?;
        if buf[..want].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += want as u64;
    }
    Ok(true)
}

/// Writes zeros over `range` of `file`.
fn write_zeros(file: &File, range: Range<u64>) -> io::Result<()> {
    let mut at = range.start;
    while at < range.end {
        let len = usize::try_from(range.end - at).map_or(ZEROS.len(), |left| left.min(ZEROS.len()));
        file.write_all_at(&ZEROS[..len], at)?;
        at += len as u64;
    }
    Ok(())
}

/// The packed shares of `si` in the index.
fn shares_of(state: &State, si: StorageIndex) -> impl Iterator<Item = &Entry> {
    state
        .index
        .range((si, ShareNum(0))..=(si, ShareNum(u8::MAX)))
        .map(|(_, entry)| entry)
}

/// Removes `entry` from the index; true if its log has no live record left.
fn remove_entry(state: &mut State, si: StorageIndex, entry: Entry) -> bool {
    if state.index.get(&(si, entry.share)) != Some(&entry) {
        return false;
    }
    state.index.remove(&(si, entry.share));
    match state.logs.get_mut(&entry.log) {
        Some(log) => {
            log.live = log.live.saturating_sub(1);
            log.live == 0
        }
        None => false,
    }
}

/// Gives back the whole pages of a deleted record's data. Only room is
/// at stake, so a failure (a file system without hole punching) is
/// ignored.
fn punch_data(file: &File, entry: &Entry) {
    use nix::fcntl::{fallocate, FallocateFlags};
    const PAGE: u64 = 4096;
    let data_start = entry.at + HEADER as u64;
    let first = data_start.div_ceil(PAGE) * PAGE;
    let last = (data_start + u64::from(entry.len)) / PAGE * PAGE;
    if last <= first {
        return;
    }
    if let (Ok(offset), Ok(len)) = (i64::try_from(first), i64::try_from(last - first)) {
        let _ = fallocate(
            file.as_raw_fd(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        );
    }
}

/// An error like `e` for another waiter of the same batch (`io::Error`
/// does not clone): the OS error itself when there is one, so that a
/// full disk is still seen as one.
fn same_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn record_hash(header: &[u8; HEADER], data: &[u8]) -> [u8; 32] {
    let mut hashed = *header;
    hashed[STATE_AT as usize] = 0;
    hashed[32..].fill(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&hashed);
    hasher.update(data);
    *hasher.finalize().as_bytes()
}

fn encode_record(si: StorageIndex, share: ShareNum, data: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|len| *len as usize <= SMALL_SHARE)
        .ok_or_else(|| io::Error::other("share too large to pack"))?;
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(MAGIC);
    header[4] = LIVE;
    header[5] = share.0;
    header[8..24].copy_from_slice(si.as_bytes());
    header[24..28].copy_from_slice(&len.to_le_bytes());
    let hash = record_hash(&header, data);
    header[32..].copy_from_slice(&hash);
    let mut record = Vec::with_capacity(HEADER + data.len());
    record.extend_from_slice(&header);
    record.extend_from_slice(data);
    Ok(record)
}

/// A header's fields, if it is one: (state, storage index, entry without
/// its log).
fn decode_header(header: &[u8; HEADER]) -> Option<(u8, StorageIndex, Entry)> {
    if &header[..4] != MAGIC || header[6..8] != [0, 0] || header[28..32] != [0; 4] {
        return None;
    }
    let len = u32::from_le_bytes(header[24..28].try_into().ok()?);
    if len as usize > SMALL_SHARE {
        return None;
    }
    let si = StorageIndex::from_bytes(header[8..24].try_into().ok()?);
    Some((
        header[4],
        si,
        Entry {
            share: ShareNum(header[5]),
            log: 0,
            at: 0,
            len,
        },
    ))
}

/// Reads the headers of one log from `from`, calling `live` for each live
/// record (it answers whether the record counts as live). Stops at the
/// first thing that is not a whole record: the end, zeros, a torn tail.
/// Answers where it stopped, how many records counted live, and the log's
/// length.
fn scan_log(
    file: &File,
    from: u64,
    mut live: impl FnMut(StorageIndex, Entry) -> bool,
) -> io::Result<(u64, usize, u64)> {
    let len = file.metadata()?.len();
    let mut at = from;
    let mut count = 0;
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= len {
        file.read_exact_at(&mut header, at)?;
        let Some((state, si, entry)) = decode_header(&header) else {
            break;
        };
        let end = at + (HEADER as u64) + u64::from(entry.len);
        if end > len {
            break;
        }
        match state {
            LIVE => {
                if live(si, Entry { at, ..entry }) {
                    count += 1;
                }
            }
            DELETED => {}
            _ => break,
        }
        at = end;
    }
    Ok((at, count, len))
}

/// The data of the record at `at`, checked: live, the share asked for, of
/// its length, and matching its hash.
fn read_record(
    file: &File,
    at: u64,
    si: StorageIndex,
    share: ShareNum,
    len: u64,
) -> io::Result<Vec<u8>> {
    let bad =
        |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("packed share: {why}"));
    let total = usize::try_from(len)
        .ok()
        .filter(|len| *len <= SMALL_SHARE)
        .ok_or_else(|| bad("length past the limit"))?
        + HEADER;
    let mut record = vec![0u8; total];
    file.read_exact_at(&mut record, at)?;
    let header: [u8; HEADER] = record[..HEADER]
        .try_into()
        .map_err(|_| bad("short header"))?;
    let Some((state, found_si, entry)) = decode_header(&header) else {
        return Err(bad("not a record header"));
    };
    if state != LIVE {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "packed share deleted",
        ));
    }
    if found_si != si || entry.share != share || u64::from(entry.len) != len {
        return Err(bad("the record names another share"));
    }
    if record_hash(&header, &record[HEADER..]) != header[32..] {
        return Err(bad("bytes do not match the record's hash"));
    }
    record.drain(..HEADER);
    Ok(record)
}

/// The paths of a store's logs, for tests that look at the disk.
#[cfg(test)]
pub(super) fn log_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs
}
