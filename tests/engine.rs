//! The engine against in-memory grids: round trips, ranges, lost and corrupt
//! shares, failing servers, abort and drop.

mod common;

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use common::{content, memory_grid, read_all, total_shares, upload, SMALL};
use griddav::engine::{Downloader, EncodingParams, EngineError, FileCap, UploadOptions, Uploader};
use griddav::grid::{Grid, MemoryStore, ShareNum, ShareStore};
use proptest::prelude::*;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn round_trip_with_any_chunking(
        size in prop_oneof![Just(0usize), Just(1), Just(999), Just(1000), Just(1001), 0usize..20_000],
        chunks in proptest::collection::vec(1usize..3000, 1..8),
        seed in any::<u64>(),
    ) {
        RUNTIME.block_on(async {
            let (grid, stores) = memory_grid(10);
            let data = content(size, seed);
            let cap = upload(&grid, SMALL, &data, &chunks).await;
            prop_assert_eq!(cap.size, size as u64);
            prop_assert_eq!(total_shares(&stores), 10);
            let back = read_all(&grid, &cap).await.expect("read back");
            prop_assert!(back == data, "content differs");
            let parsed: FileCap = cap.to_string().parse().expect("cap parses");
            prop_assert!(parsed == cap);
            Ok(())
        })?;
    }

    #[test]
    fn random_ranges_equal_the_slice(
        size in 1usize..12_000,
        ranges in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..10),
        seed in any::<u64>(),
    ) {
        RUNTIME.block_on(async {
            let (grid, _) = memory_grid(10);
            let data = content(size, seed);
            let cap = upload(&grid, SMALL, &data, &[777]).await;
            let downloader = Arc::new(Downloader::open(&grid, &cap).await.expect("open"));
            for (a, b) in ranges {
                let start = (a * size as f64) as usize;
                let len = (b * (size - start) as f64) as usize;
                let got = downloader.read(start as u64, len as u64).await.expect("range");
                prop_assert_eq!(&got[..], &data[start..start + len]);
            }
            let offset = (ranges_first_offset(size)) as u64;
            let streamed: Vec<u8> = futures::StreamExt::collect::<Vec<_>>(
                Arc::clone(&downloader).stream(offset)).await
                .into_iter()
                .map(|r| r.expect("stream piece"))
                .flat_map(|b| b.to_vec())
                .collect();
            prop_assert!(streamed[..] == data[offset as usize..]);
            let beyond = downloader.read(size as u64 - 1, 2).await;
            let beyond_is_error = matches!(beyond, Err(EngineError::RangeBeyondEnd { .. }));
            prop_assert!(beyond_is_error);
            Ok(())
        })?;
    }

    #[test]
    fn any_n_minus_k_shares_lost_still_reads(
        lost in proptest::sample::subsequence((0u8..10).collect::<Vec<_>>(), 7),
        extra in 0u8..10,
        seed in any::<u64>(),
    ) {
        RUNTIME.block_on(async {
            let (grid, stores) = memory_grid(10);
            let data = content(5_500, seed);
            let cap = upload(&grid, SMALL, &data, &[4096]).await;
            let si = cap.key.storage_index();
            for share in &lost {
                remove_everywhere(&stores, si, *share);
            }
            let back = read_all(&grid, &cap).await.expect("read with 3 shares");
            prop_assert!(back == data);

            let survivor = (0u8..10).filter(|s| !lost.contains(s)).nth(usize::from(extra % 3)).unwrap_or(0);
            remove_everywhere(&stores, si, survivor);
            match read_all(&grid, &cap).await {
                Err(EngineError::NotEnoughShares { have, need: 3, .. }) => prop_assert!(have < 3),
                other => prop_assert!(false, "expected NotEnoughShares, got {:?}", other.map(|v| v.len())),
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_flipped_bit_anywhere_is_detected(
        share in 0u8..10,
        position in 0.0f64..1.0,
        bit in 0u8..8,
        seed in any::<u64>(),
    ) {
        RUNTIME.block_on(async {
            let (grid, stores) = memory_grid(10);
            let data = content(4_321, seed);
            let cap = upload(&grid, SMALL, &data, &[1500]).await;
            let si = cap.key.storage_index();
            let (store, len) = locate(&stores, si, share).await;
            let offset = ((len - 1) as f64 * position) as u64;
            store.corrupt(si, ShareNum(share), offset, 1 << bit).expect("corrupt");

            let downloader = Downloader::open(&grid, &cap).await.expect("open");
            let problems = downloader.verify_all_shares().await;
            prop_assert_eq!(problems.len(), 1, "problems: {:?}", problems);
            prop_assert_eq!(problems[0].share, Some(ShareNum(share)));

            // Reads still succeed, also when the corrupt share is one they need.
            let back = read_all(&grid, &cap).await.expect("read around the corruption");
            prop_assert!(back == data);
            let mut without_others = Vec::new();
            for other in (0u8..10).filter(|s| *s != share).take(6) {
                remove_everywhere(&stores, si, other);
                without_others.push(other);
            }
            // Now exactly three shares remain, one of them corrupt: either the
            // read avoids the corrupt bytes or it fails; it never lies.
            if let Ok(back) = read_all(&grid, &cap).await {
                prop_assert!(back == data);
            }
            Ok(())
        })?;
    }
}

/// Feeds `data` in `chunk`-byte writes to an upload that must fail, at some
/// write or at finish, with six live shares where seven were needed.
async fn expect_not_happy(mut uploader: Uploader, data: &[u8], chunk: usize) {
    let mut failed = None;
    for piece in data.chunks(chunk) {
        if let Err(e) = uploader.write(Bytes::copy_from_slice(piece)).await {
            failed = Some(e);
            break;
        }
    }
    let error = match failed {
        Some(e) => e,
        None => uploader.finish().await.expect_err("finish must fail"),
    };
    assert!(
        matches!(
            error,
            EngineError::NotHappy {
                live: 6,
                happy: 7,
                ..
            }
        ),
        "{error}"
    );
}

fn ranges_first_offset(size: usize) -> usize {
    size / 3
}

fn remove_everywhere(stores: &[Arc<MemoryStore>], si: griddav::grid::StorageIndex, share: u8) {
    for store in stores {
        store.remove_share(si, ShareNum(share));
    }
}

async fn locate(
    stores: &[Arc<MemoryStore>],
    si: griddav::grid::StorageIndex,
    share: u8,
) -> (Arc<MemoryStore>, u64) {
    for store in stores {
        let listing = store.list(si).await.expect("list");
        if let Some(info) = listing.iter().find(|i| i.share == ShareNum(share)) {
            return (Arc::clone(store), info.len);
        }
    }
    panic!("share {share} not found");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blocks_on_too_many_shares_give_an_error_not_bytes() {
    let (grid, stores) = memory_grid(10);
    let data = content(2_500, 7);
    let cap = upload(&grid, SMALL, &data, &[100]).await;
    let si = cap.key.storage_index();
    // Byte 20 is the first byte of block 0 in every share.
    for share in 0..8u8 {
        let (store, _) = locate(&stores, si, share).await;
        store
            .corrupt(si, ShareNum(share), 20, 0x01)
            .expect("corrupt");
    }
    let downloader = Downloader::open(&grid, &cap).await.expect("open");
    match downloader.read(0, 10).await {
        Err(EngineError::NotEnoughShares {
            have,
            need: 3,
            problems,
        }) => {
            assert_eq!(have, 2);
            assert_eq!(problems.len(), 8, "{problems:?}");
        }
        other => panic!("expected NotEnoughShares, got {other:?}"),
    }
    // Segment 2 is clean on every share.
    let tail = downloader.read(2_000, 500).await.expect("clean segment");
    assert_eq!(&tail[..], &data[2_000..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_megabyte_segment_file_round_trips() {
    let (grid, _) = memory_grid(10);
    let data = content(5 * (1 << 20) + 12_345, 3);
    let cap = upload(
        &grid,
        EncodingParams::default(),
        &data,
        &[65_536, 1, 300_000],
    )
    .await;
    assert_eq!(read_all(&grid, &cap).await.expect("read"), data);
}

fn failing_grid(stores: &[Arc<MemoryStore>], failing: usize, appends_ok: usize) -> Grid {
    let servers = stores
        .iter()
        .map(|s| Arc::clone(s) as Arc<dyn ShareStore>)
        .collect();
    common::with_failing_servers(servers, failing, appends_ok)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_servers_failing_mid_upload_is_survived() {
    let (_, stores) = memory_grid(10);
    let grid = failing_grid(&stores, 3, 5);
    let data = content(20_000, 11);
    let mut uploader = Uploader::new(grid.clone(), SMALL, UploadOptions::default(), None)
        .await
        .expect("start");
    for chunk in data.chunks(900) {
        uploader
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write");
    }
    assert_eq!(uploader.problems().len(), 3, "{:?}", uploader.problems());
    let cap = uploader.finish().await.expect("finish with 7 shares");
    assert_eq!(total_shares(&stores), 7);
    assert_eq!(read_all(&grid, &cap).await.expect("read"), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn four_servers_failing_with_happy_seven_fails_and_leaves_nothing() {
    let (_, stores) = memory_grid(10);
    let grid = failing_grid(&stores, 4, 5);
    let data = content(20_000, 12);
    let uploader = Uploader::new(grid.clone(), SMALL, UploadOptions::default(), None)
        .await
        .expect("start");
    expect_not_happy(uploader, &data, 900).await;
    assert_eq!(total_shares(&stores), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn four_servers_failing_at_finish_leaves_nothing() {
    // The failures hit only the tails, after every block was stored.
    let (_, stores) = memory_grid(10);
    let data = content(3_000, 13);
    let blocks = 1 + 3; // header + three segments
    let grid = failing_grid(&stores, 4, blocks);
    let mut uploader = Uploader::new(grid, SMALL, UploadOptions::default(), None)
        .await
        .expect("start");
    uploader.write(Bytes::from(data)).await.expect("write");
    let error = uploader.finish().await.expect_err("finish must fail");
    assert!(
        matches!(error, EngineError::NotHappy { live: 6, .. }),
        "{error}"
    );
    assert_eq!(total_shares(&stores), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_and_drop_leave_nothing() {
    let (grid, stores) = memory_grid(10);
    let mut uploader = Uploader::new(grid.clone(), SMALL, UploadOptions::default(), None)
        .await
        .expect("start");
    uploader
        .write(Bytes::from(content(7_777, 1)))
        .await
        .expect("write");
    assert_eq!(total_shares(&stores), 10);
    uploader.abort().await;
    assert_eq!(total_shares(&stores), 0);
    assert!(matches!(
        uploader.write(Bytes::from_static(b"x")).await,
        Err(EngineError::Aborted)
    ));

    let mut uploader = Uploader::new(grid, SMALL, UploadOptions::default(), None)
        .await
        .expect("start");
    uploader
        .write(Bytes::from(content(7_777, 2)))
        .await
        .expect("write");
    drop(uploader);
    wait_until_empty(&stores).await;
}

async fn wait_until_empty(stores: &[Arc<MemoryStore>]) {
    for _ in 0..200 {
        if total_shares(stores) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} shares left after drop", total_shares(stores));
}

#[tokio::test(flavor = "multi_thread")]
async fn expected_size_is_enforced() {
    let (grid, stores) = memory_grid(10);
    let short = Uploader::new(grid.clone(), SMALL, UploadOptions::default(), Some(5_000)).await;
    let mut short = short.expect("start");
    short
        .write(Bytes::from(content(4_999, 1)))
        .await
        .expect("write");
    assert!(matches!(
        short.finish().await,
        Err(EngineError::SizeMismatch {
            expected: 5_000,
            written: 4_999
        })
    ));
    assert_eq!(total_shares(&stores), 0);

    let mut long = Uploader::new(grid.clone(), SMALL, UploadOptions::default(), Some(5_000))
        .await
        .expect("start");
    long.write(Bytes::from(content(4_000, 1)))
        .await
        .expect("write");
    assert!(matches!(
        long.write(Bytes::from(content(1_001, 1))).await,
        Err(EngineError::SizeMismatch {
            expected: 5_000,
            written: 5_001
        })
    ));
    assert_eq!(total_shares(&stores), 0);

    let mut exact = Uploader::new(grid.clone(), SMALL, UploadOptions::default(), Some(5_000))
        .await
        .expect("start");
    exact
        .write(Bytes::from(content(5_000, 1)))
        .await
        .expect("write");
    let cap = exact.finish().await.expect("exact size");
    assert_eq!(
        read_all(&grid, &cap).await.expect("read"),
        content(5_000, 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_capability_is_an_error() {
    let (grid, _) = memory_grid(10);
    let cap = upload(&grid, SMALL, &content(2_000, 5), &[2_000]).await;
    let mut wrong_hash = cap.clone();
    wrong_hash.trailer_hash[0] ^= 1;
    assert!(matches!(
        Downloader::open(&grid, &wrong_hash).await,
        Err(EngineError::NotEnoughShares { have: 0, .. })
    ));
    let mut wrong_size = cap.clone();
    wrong_size.size += 1;
    assert!(Downloader::open(&grid, &wrong_size).await.is_err());
}

/// Every regular file under `root`.
/// Waits until `count` files are under `root`.
async fn wait_for_files(root: &std::path::Path, count: usize) {
    for _ in 0..500 {
        if files_under(root).len() == count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "not {count} files under {}: {:?}",
        root.display(),
        files_under(root)
    );
}

fn files_under(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn local_grid(root: &std::path::Path, failing: usize, appends_ok: usize) -> Grid {
    let servers = griddav::grid::grid_of_dirs(root, 10).expect("local grid");
    common::with_failing_servers(servers, failing, appends_ok)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_grid_survives_three_failures_and_cleans_up_after_four() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = content(3 * (1 << 20) + 5, 21);

    let grid = local_grid(dir.path(), 3, 2);
    let cap = upload(&grid, EncodingParams::default(), &data, &[100_000]).await;
    assert_eq!(files_under(dir.path()).len(), 7);
    assert_eq!(read_all(&grid, &cap).await.expect("read"), data);
    let si = cap.key.storage_index();
    for server in grid.servers() {
        server
            .delete(si, &cap.key.share_secrets(server.identity()))
            .await
            .expect("delete");
    }
    assert!(files_under(dir.path()).is_empty());

    let grid = local_grid(dir.path(), 4, 2);
    let uploader = Uploader::new(
        grid,
        EncodingParams::default(),
        UploadOptions::default(),
        None,
    )
    .await
    .expect("start");
    expect_not_happy(uploader, &data, 100_000).await;
    assert_eq!(files_under(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn local_grid_abort_and_drop_leave_no_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grid = local_grid(dir.path(), 0, 0);
    let mut uploader = Uploader::new(
        grid.clone(),
        EncodingParams::default(),
        UploadOptions::default(),
        None,
    )
    .await
    .expect("start");
    uploader
        .write(Bytes::from(content(3 << 20, 1)))
        .await
        .expect("write");
    // A share gets its file once its first block is written: with two
    // segments in flight at most, the third sends the first's blocks.
    wait_for_files(dir.path(), 10).await;
    uploader.abort().await;
    assert!(files_under(dir.path()).is_empty());

    let mut uploader = Uploader::new(
        grid,
        EncodingParams::default(),
        UploadOptions::default(),
        None,
    )
    .await
    .expect("start");
    uploader
        .write(Bytes::from(content(3 << 20, 2)))
        .await
        .expect("write");
    wait_for_files(dir.path(), 10).await;
    drop(uploader);
    for _ in 0..200 {
        if files_under(dir.path()).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("files left after drop: {:?}", files_under(dir.path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_sharing_a_tiny_memory_budget_all_finish() {
    let (grid, _) = memory_grid(10);
    // Two coded segments for six uploads together: they must take turns
    // without deadlocking, and give every place back.
    let budget = griddav::engine::MemoryBudget::segments(2);
    let options = UploadOptions {
        budget: Some(budget.clone()),
        ..UploadOptions::default()
    };
    let uploads = (0..6u64).map(|seed| {
        let grid = grid.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let data = content(25_000 + seed as usize * 777, seed);
            let mut uploader = Uploader::new(grid.clone(), SMALL, options, None)
                .await
                .expect("start");
            for chunk in data.chunks(1_500) {
                uploader
                    .write(Bytes::copy_from_slice(chunk))
                    .await
                    .expect("write");
            }
            let cap = uploader.finish().await.expect("finish");
            assert_eq!(read_all(&grid, &cap).await.expect("read"), data);
        })
    });
    let all = futures::future::join_all(uploads);
    let results = tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("uploads sharing a budget must not deadlock");
    for result in results {
        result.expect("upload task");
    }
    assert_eq!(budget.available(), budget.total());
}

#[tokio::test(flavor = "multi_thread")]
async fn happy_counts_distinct_servers_not_shares() {
    // Ten shares wrap round four servers: 3, 3, 2, 2 per server.
    let (grid, stores) = memory_grid(4);
    match Uploader::new(grid.clone(), SMALL, UploadOptions::default(), None).await {
        Err(EngineError::NotHappy { live, happy, .. }) => {
            assert_eq!((live, happy), (4, 7), "four distinct servers, seven needed");
        }
        Err(e) => panic!("expected NotHappy, got {e}"),
        Ok(_) => panic!("an upload to 4 servers with happy = 7 must not start"),
    }
    assert_eq!(total_shares(&stores), 0, "nothing left behind");

    // With happy = 4 the same grid takes the file.
    let params = EncodingParams { happy: 4, ..SMALL };
    let data = content(5_000, 31);
    let cap = upload(&grid, params, &data, &[700]).await;
    assert_eq!(total_shares(&stores), 10);
    assert_eq!(read_all(&grid, &cap).await.expect("read"), data);
}
