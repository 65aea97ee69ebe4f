//! The [`ShareStore`] contract as tests: every backend's test module runs
//! [`run_all`] against a fresh store (object_store's `integration.rs` style).
//!
//! Each check uses its own random storage index, so the checks can share one
//! store and a backend may run them one by one or all together.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;

use super::{
    GridError, ShareNum, ShareSecrets, ShareStore, ShareWriter, StorageIndex, MAX_RECORD_LEN,
};

/// Runs every check of the contract.
pub(crate) async fn run_all(store: &dyn ShareStore) {
    round_trip(store).await;
    range_reads(store).await;
    empty_share(store).await;
    partial_share_is_invisible(store).await;
    finish_with_wrong_length_fails(store).await;
    last_bytes_given_to_finish(store).await;
    appends_handed_over_together(store).await;
    last_bytes_given_to_finish_in_pieces(store).await;
    create_of_existing_share_fails(store).await;
    racing_creates_have_one_winner(store).await;
    abort_removes_everything(store).await;
    drop_removes_everything(store).await;
    delete_removes_finished_shares(store).await;
    unknown_storage_index(store).await;
    records_round_trip(store).await;
    records_are_bounded(store).await;
}

pub(crate) fn random_si() -> StorageIndex {
    StorageIndex::from_bytes(rand::random())
}

pub(crate) fn secrets() -> ShareSecrets {
    ShareSecrets {
        write_enabler: [0x11; 32],
        lease_renew: [0x22; 32],
        lease_cancel: [0x33; 32],
    }
}

/// Bytes that differ at every offset of a share and between shares, so a
/// read from the wrong place cannot pass by accident.
pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// Writes `data` as one finished share in appends of `chunk` bytes.
pub(crate) async fn put(
    store: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    data: &[u8],
    chunk: usize,
) {
    appended(store, si, share, data, chunk)
        .await
        .finish(data.len() as u64)
        .await
        .expect("finish");
}

/// A new share's writer with `data` appended in appends of `chunk` bytes,
/// not finished.
async fn appended(
    store: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    data: &[u8],
    chunk: usize,
) -> Box<dyn ShareWriter> {
    let mut writer = store
        .create(si, share, &secrets())
        .await
        .expect("create a new share");
    for part in data.chunks(chunk.max(1)) {
        writer
            .append(Bytes::copy_from_slice(part))
            .await
            .expect("append");
    }
    writer
}

async fn sorted_list(store: &dyn ShareStore, si: StorageIndex) -> Vec<(u8, u64)> {
    let mut listed: Vec<(u8, u64)> = store
        .list(si)
        .await
        .expect("list")
        .into_iter()
        .map(|info| (info.share.0, info.len))
        .collect();
    listed.sort_unstable();
    listed
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, GridError>, what: &str) {
    match result {
        Err(GridError::NotFound { .. }) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

fn assert_already_exists<T: std::fmt::Debug>(result: Result<T, GridError>, what: &str) {
    match result {
        Err(GridError::AlreadyExists { .. }) => {}
        other => panic!("{what}: expected AlreadyExists, got {other:?}"),
    }
}

pub(crate) async fn round_trip(store: &dyn ShareStore) {
    assert!(!store.server_id().is_empty());
    let si = random_si();
    let first = pattern(1, 10_000);
    let second = pattern(2, 333);
    put(store, si, ShareNum(0), &first, 1000).await;
    // Uneven appends, including empty ones, must concatenate exactly.
    let mut writer = store
        .create(si, ShareNum(7), &secrets())
        .await
        .expect("create");
    for part in [
        &second[..0],
        &second[..1],
        &second[1..1],
        &second[1..200],
        &second[200..],
    ] {
        writer
            .append(Bytes::copy_from_slice(part))
            .await
            .expect("append");
    }
    writer.finish(second.len() as u64).await.expect("finish");

    let read = store.read(si, ShareNum(0), 0..10_000).await.expect("read");
    assert_eq!(&read[..], &first[..]);
    let read = store.read(si, ShareNum(7), 0..333).await.expect("read");
    assert_eq!(&read[..], &second[..]);
    assert_eq!(sorted_list(store, si).await, vec![(0, 10_000), (7, 333)]);
    assert_not_found(
        store.read(si, ShareNum(1), 0..0).await,
        "read of a share never created",
    );
}

pub(crate) async fn range_reads(store: &dyn ShareStore) {
    let si = random_si();
    let data = pattern(3, 4096);
    put(store, si, ShareNum(2), &data, 100).await;
    for (start, end) in [
        (0, 1),
        (99, 101),
        (100, 200),
        (150, 4000),
        (4095, 4096),
        (0, 4096),
    ] {
        let read = store
            .read(si, ShareNum(2), start..end)
            .await
            .expect("range read");
        assert_eq!(
            &read[..],
            &data[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    for empty in [0, 17, 4096] {
        let read = store
            .read(si, ShareNum(2), empty..empty)
            .await
            .expect("empty range read");
        assert!(read.is_empty());
    }
    #[allow(clippy::reversed_empty_ranges)]
    let bad_ranges = [
        4000..4097,
        4096..4097,
        5000..6000,
        10..5,
        u64::MAX - 1..u64::MAX,
    ];
    for range in bad_ranges {
        match store.read(si, ShareNum(2), range.clone()).await {
            Err(GridError::OutOfRange { len, .. }) => assert_eq!(len, 4096),
            other => panic!("read of {range:?}: expected OutOfRange, got {other:?}"),
        }
    }
}

pub(crate) async fn empty_share(store: &dyn ShareStore) {
    let si = random_si();
    let writer = store
        .create(si, ShareNum(0), &secrets())
        .await
        .expect("create");
    writer.finish(0).await.expect("finish an empty share");
    assert_eq!(sorted_list(store, si).await, vec![(0, 0)]);
    let read = store.read(si, ShareNum(0), 0..0).await.expect("read");
    assert!(read.is_empty());
}

pub(crate) async fn partial_share_is_invisible(store: &dyn ShareStore) {
    let si = random_si();
    let mut writer = store
        .create(si, ShareNum(4), &secrets())
        .await
        .expect("create");
    writer
        .append(Bytes::from(pattern(4, 500)))
        .await
        .expect("append");
    assert_eq!(sorted_list(store, si).await, vec![]);
    assert_not_found(
        store.read(si, ShareNum(4), 0..0).await,
        "read of a partial share",
    );
    assert_not_found(
        store.read(si, ShareNum(4), 0..10).await,
        "read of a partial share",
    );
    writer.finish(500).await.expect("finish");
    assert_eq!(sorted_list(store, si).await, vec![(4, 500)]);
}

pub(crate) async fn finish_with_wrong_length_fails(store: &dyn ShareStore) {
    let si = random_si();
    for (share, claimed) in [(ShareNum(0), 99), (ShareNum(1), 101), (ShareNum(2), 0)] {
        let mut writer = store.create(si, share, &secrets()).await.expect("create");
        writer
            .append(Bytes::from(pattern(5, 100)))
            .await
            .expect("append");
        match writer.finish(claimed).await {
            Err(GridError::LengthMismatch {
                written, expected, ..
            }) => {
                assert_eq!((written, expected), (100, claimed));
            }
            other => {
                panic!("finish({claimed}) after 100 bytes: expected LengthMismatch, got {other:?}")
            }
        }
    }
    assert_eq!(sorted_list(store, si).await, vec![]);
    // A failed finish must not leave the share half-created.
    for share in [ShareNum(0), ShareNum(1), ShareNum(2)] {
        assert_not_found(
            store.read(si, share, 0..0).await,
            "read after a failed finish",
        );
        create_eventually(store, si, share)
            .await
            .abort()
            .await
            .expect("abort");
    }
}

/// `finish_with` appends its bytes and finishes, whatever their length
/// against the store's pages and buffers, and counts them in the length.
pub(crate) async fn last_bytes_given_to_finish(store: &dyn ShareStore) {
    // One block of a 1 MiB segment at 3-of-10, the size griddav appends.
    const BLOCK: usize = 349_526;
    let si = random_si();
    // A small share, then shares past any in-memory hold, appended in
    // blocks of a 3-of-10 segment, whose last bytes end on, before and
    // after a page, or run longer than a direct-write buffer.
    let cases: [(usize, usize); 7] = [
        (1000, 500),
        (2 * BLOCK, 0),
        (2 * BLOCK, 1),
        (2 * BLOCK, 4096 - (2 * BLOCK) % 4096),
        (2 * BLOCK, 5000),
        (3 * BLOCK, 133_336),
        (BLOCK, 700_000),
    ];
    for (n, &(body, last)) in cases.iter().enumerate() {
        let share = ShareNum(u8::try_from(n).expect("few cases"));
        let data = pattern(n as u8 + 40, body + last);
        appended(store, si, share, &data[..body], BLOCK)
            .await
            .finish_with(Bytes::copy_from_slice(&data[body..]), data.len() as u64)
            .await
            .expect("finish with the last bytes");
        let read = store
            .read(si, share, 0..data.len() as u64)
            .await
            .expect("read");
        assert!(read[..] == data[..], "case {body}+{last}: the bytes differ");
    }
    let writer = appended(store, si, ShareNum(9), &pattern(7, 100_000), 100_000).await;
    match writer
        .finish_with(Bytes::from(pattern(8, 10)), 100_000)
        .await
    {
        Err(GridError::LengthMismatch {
            written, expected, ..
        }) => assert_eq!((written, expected), (100_010, 100_000)),
        other => panic!("finish_with 10 bytes too many: expected LengthMismatch, got {other:?}"),
    }
    assert_not_found(
        store.read(si, ShareNum(9), 0..0).await,
        "read after a failed finish_with",
    );
}

/// The bytes of `data` from `from` on, cut into pieces `lens` long.
fn pieces_of(data: &[u8], from: usize, lens: &[usize]) -> Vec<Bytes> {
    let mut at = from;
    lens.iter()
        .map(|&len| {
            let piece = Bytes::copy_from_slice(&data[at..at + len]);
            at += len;
            piece
        })
        .collect()
}

/// [`ShareWriter::append_many`] writes what as many appends would: blocks
/// of a 1 MiB segment handed over two and three at a time, then pieces
/// shorter than a page (held back, and then joined to the next block),
/// before the share is large enough to leave any in-memory hold and after.
pub(crate) async fn appends_handed_over_together(store: &dyn ShareStore) {
    const BLOCK: usize = 349_526;
    let si = random_si();
    let groups: [&[usize]; 5] = [
        &[100, 3000],
        &[BLOCK, BLOCK],
        &[10, 20, 4000],
        &[BLOCK, 1, BLOCK],
        &[],
    ];
    let total: usize = groups.iter().flat_map(|g| g.iter()).sum();
    let data = pattern(61, total);
    let mut writer = store
        .create(si, ShareNum(3), &secrets())
        .await
        .expect("create");
    let mut at = 0;
    for group in groups {
        let pieces = pieces_of(&data, at, group);
        at += group.iter().sum::<usize>();
        writer.append_many(pieces).await.expect("append_many");
    }
    writer.finish(total as u64).await.expect("finish");
    assert_holds(
        store,
        si,
        ShareNum(3),
        &data,
        "appends handed over together",
    )
    .await;
}

/// Panics unless share `share` of `si` reads back as exactly `data`.
async fn assert_holds(
    store: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
    data: &[u8],
    what: &str,
) {
    let read = store
        .read(si, share, 0..data.len() as u64)
        .await
        .expect("read");
    assert!(read[..] == data[..], "{what}: the bytes differ");
}

/// [`ShareWriter::finish_with_many`] writes its pieces in order before
/// finishing, as the uploader hands over a share's hash trees and trailer:
/// on a share still small, and on shares past any in-memory hold whose
/// pieces are shorter than a page, longer than a direct-write buffer, or
/// empty.
pub(crate) async fn last_bytes_given_to_finish_in_pieces(store: &dyn ShareStore) {
    const BLOCK: usize = 349_526;
    let si = random_si();
    let cases: [(usize, &[usize]); 4] = [
        (1000, &[200, 0, 300]),
        (2 * BLOCK, &[300_000, 1, 599_999]),
        (3 * BLOCK, &[4096, 100_000, 29_240]),
        (BLOCK, &[]),
    ];
    for (n, &(body, pieces)) in cases.iter().enumerate() {
        let share = ShareNum(u8::try_from(n).expect("few cases"));
        let data = pattern(n as u8 + 80, body + pieces.iter().sum::<usize>());
        appended(store, si, share, &data[..body], BLOCK)
            .await
            .finish_with_many(pieces_of(&data, body, pieces), data.len() as u64)
            .await
            .expect("finish with the last bytes in pieces");
        assert_holds(store, si, share, &data, &format!("case {body}+{pieces:?}")).await;
    }
}

pub(crate) async fn create_of_existing_share_fails(store: &dyn ShareStore) {
    let si = random_si();
    put(store, si, ShareNum(0), b"finished", 8).await;
    assert_already_exists(
        store.create(si, ShareNum(0), &secrets()).await,
        "create of a finished share",
    );

    let mut writer = store
        .create(si, ShareNum(1), &secrets())
        .await
        .expect("create");
    writer
        .append(Bytes::from_static(b"partial"))
        .await
        .expect("append");
    assert_already_exists(
        store.create(si, ShareNum(1), &secrets()).await,
        "create of a share under construction",
    );
    // The failed create must not have disturbed the first writer.
    writer
        .append(Bytes::from_static(b"!"))
        .await
        .expect("append");
    writer.finish(8).await.expect("finish");
    let read = store.read(si, ShareNum(1), 0..8).await.expect("read");
    assert_eq!(&read[..], b"partial!");
    let read = store.read(si, ShareNum(0), 0..8).await.expect("read");
    assert_eq!(&read[..], b"finished");
}

pub(crate) async fn racing_creates_have_one_winner(store: &dyn ShareStore) {
    let si = random_si();
    let secrets = secrets();
    let results = join_all((0..8).map(|_| store.create(si, ShareNum(3), &secrets))).await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok(writer) => winners.push(writer),
            Err(GridError::AlreadyExists { .. }) => {}
            Err(other) => panic!("racing create: expected AlreadyExists, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racing create must win");
    let mut winner = winners.pop().expect("one winner");
    winner
        .append(Bytes::from_static(b"won"))
        .await
        .expect("append");
    winner.finish(3).await.expect("finish");
    assert_eq!(sorted_list(store, si).await, vec![(3, 3)]);
}

pub(crate) async fn abort_removes_everything(store: &dyn ShareStore) {
    let si = random_si();
    let mut writer = store
        .create(si, ShareNum(5), &secrets())
        .await
        .expect("create");
    writer
        .append(Bytes::from(pattern(6, 1000)))
        .await
        .expect("append");
    writer.abort().await.expect("abort");
    // Never appended to at all.
    let writer = store
        .create(si, ShareNum(6), &secrets())
        .await
        .expect("create");
    writer.abort().await.expect("abort");

    assert_eq!(sorted_list(store, si).await, vec![]);
    assert_not_found(store.read(si, ShareNum(5), 0..0).await, "read after abort");
    // Abort is synchronous cleanup: the share can be created again at once.
    let writer = store
        .create(si, ShareNum(5), &secrets())
        .await
        .expect("create after abort");
    writer.abort().await.expect("abort");
}

pub(crate) async fn drop_removes_everything(store: &dyn ShareStore) {
    let si = random_si();
    let mut writer = store
        .create(si, ShareNum(8), &secrets())
        .await
        .expect("create");
    writer
        .append(Bytes::from(pattern(7, 1000)))
        .await
        .expect("append");
    drop(writer);
    assert_eq!(sorted_list(store, si).await, vec![]);
    assert_not_found(store.read(si, ShareNum(8), 0..0).await, "read after drop");
    // Drop cannot await, so a backend may finish its cleanup in the
    // background; the share must become creatable again soon.
    create_eventually(store, si, ShareNum(8))
        .await
        .abort()
        .await
        .expect("abort");
}

/// Creates a share that an earlier writer's Drop is still cleaning up.
pub(crate) async fn create_eventually(
    store: &dyn ShareStore,
    si: StorageIndex,
    share: ShareNum,
) -> Box<dyn super::ShareWriter> {
    for _ in 0..500 {
        match store.create(si, share, &secrets()).await {
            Ok(writer) => return writer,
            Err(GridError::AlreadyExists { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(other) => panic!("create: {other:?}"),
        }
    }
    panic!("share {share} of {si} still exists 5 s after its writer was dropped");
}

pub(crate) async fn delete_removes_finished_shares(store: &dyn ShareStore) {
    let si = random_si();
    let other = random_si();
    put(store, si, ShareNum(0), b"zero", 4).await;
    put(store, si, ShareNum(9), b"nine", 2).await;
    put(store, other, ShareNum(0), b"other", 5).await;
    store.delete(si, &secrets()).await.expect("delete");
    assert_eq!(sorted_list(store, si).await, vec![]);
    assert_not_found(store.read(si, ShareNum(0), 0..1).await, "read after delete");
    // Deleting again, or deleting what never existed, is not an error.
    store.delete(si, &secrets()).await.expect("delete again");
    store
        .delete(random_si(), &secrets())
        .await
        .expect("delete of nothing");
    // Other storage indexes are untouched, and the deleted shares can be
    // created anew.
    assert_eq!(sorted_list(store, other).await, vec![(0, 5)]);
    put(store, si, ShareNum(0), b"again", 5).await;
    assert_eq!(sorted_list(store, si).await, vec![(0, 5)]);
}

pub(crate) async fn unknown_storage_index(store: &dyn ShareStore) {
    let si = random_si();
    assert_eq!(sorted_list(store, si).await, vec![]);
    assert_not_found(
        store.read(si, ShareNum(0), 0..0).await,
        "read of an unknown index",
    );
}

/// Root records: none until written, then exactly the last bytes written
/// (longer or shorter than before), each slot on its own, apart from shares.
pub(crate) async fn records_round_trip(store: &dyn ShareStore) {
    let slot = random_si();
    let other = random_si();
    assert_eq!(store.get_record(slot).await.expect("get unwritten"), None);
    let first = Bytes::from(pattern(4, 700));
    store
        .put_record(slot, first.clone(), &secrets())
        .await
        .expect("put");
    assert_eq!(store.get_record(slot).await.expect("get"), Some(first));
    let longer = Bytes::from(pattern(5, 3000));
    store
        .put_record(slot, longer.clone(), &secrets())
        .await
        .expect("replace with a longer record");
    assert_eq!(store.get_record(slot).await.expect("get"), Some(longer));
    let shorter = Bytes::from(pattern(6, 10));
    store
        .put_record(slot, shorter.clone(), &secrets())
        .await
        .expect("replace with a shorter record");
    assert_eq!(
        store.get_record(slot).await.expect("get"),
        Some(shorter.clone()),
        "a shorter record must not keep the old tail"
    );
    let full = Bytes::from(pattern(7, MAX_RECORD_LEN));
    store
        .put_record(other, full.clone(), &secrets())
        .await
        .expect("put a record of the largest length");
    assert_eq!(store.get_record(other).await.expect("get"), Some(full));
    assert_eq!(store.get_record(slot).await.expect("get"), Some(shorter));
    // A record is not a share, and shares leave records alone.
    assert_eq!(sorted_list(store, slot).await, vec![]);
    assert_eq!(store.get_record(random_si()).await.expect("get"), None);
}

pub(crate) async fn records_are_bounded(store: &dyn ShareStore) {
    let slot = random_si();
    let kept = Bytes::from_static(b"kept");
    store
        .put_record(slot, kept.clone(), &secrets())
        .await
        .expect("put");
    match store
        .put_record(slot, Bytes::from(vec![1u8; MAX_RECORD_LEN + 1]), &secrets())
        .await
    {
        Err(GridError::RecordTooLong { .. }) => {}
        other => panic!("an over-long record: expected RecordTooLong, got {other:?}"),
    }
    assert_eq!(store.get_record(slot).await.expect("get"), Some(kept));
}
