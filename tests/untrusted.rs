//! Storage servers that cannot be trusted (issue 16): per-server secrets,
//! servers that lie, stall, answer without end or come back after an outage.
//! Against in-memory grids whose stores misbehave on purpose
//! (`griddav::grid::fault`).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{content, memory_grid};
use griddav::engine::crypto::FileKey;
use griddav::engine::delete::delete_shares;
use griddav::engine::{Downloader, EncodingParams, FileCap, UploadOptions, Uploader};
use griddav::grid::{Grid, GridError, MemoryStore, ShareNum, ShareStore};

const SMALL: EncodingParams = EncodingParams {
    k: 3,
    happy: 7,
    n: 10,
    segment_size: 1000,
};

async fn upload(grid: &Grid, params: EncodingParams, data: &[u8]) -> FileCap {
    let mut uploader = Uploader::new(grid.clone(), params, UploadOptions::default(), None)
        .await
        .expect("start upload");
    for chunk in data.chunks(4096) {
        uploader
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write");
    }
    uploader.finish().await.expect("finish")
}

async fn read_all(grid: &Grid, cap: &FileCap) -> Vec<u8> {
    let downloader = Downloader::open(grid, cap).await.expect("open");
    downloader.read(0, cap.size).await.expect("read").to_vec()
}

fn count_shares(stores: &[Arc<MemoryStore>]) -> usize {
    stores
        .iter()
        .map(|s| s.share_count_including_partial())
        .sum()
}

// ---- 1. secrets per server ----

#[tokio::test]
async fn secrets_sent_to_one_server_do_not_open_another() {
    let (grid, stores) = memory_grid(10);
    let data = content(5000, 1);
    let cap = upload(&grid, SMALL, &data).await;
    let si = cap.key.storage_index();
    let (a, b) = (&stores[0], &stores[1]);
    let of_a = cap.key.share_secrets(a.identity());
    assert_ne!(of_a, cap.key.share_secrets(b.identity()));
    // What server a learnt, presented to server b.
    match b.delete(si, &of_a).await {
        Err(GridError::Refused { .. }) => {}
        other => panic!("b accepted a's secrets: {other:?}"),
    }
    assert!(matches!(
        b.create(si, ShareNum(200), &of_a).await,
        Err(GridError::Refused { .. })
    ));
    assert_eq!(b.list(si).await.expect("list").len(), 1);
    assert_eq!(read_all(&grid, &cap).await, data);

    delete_shares(&grid, &cap.key).await.expect("delete");
    assert_eq!(count_shares(&stores), 0);
}

#[tokio::test]
async fn files_written_with_the_old_secrets_are_still_deleted() {
    let (grid, stores) = memory_grid(4);
    let key = FileKey::random();
    let si = key.storage_index();
    let legacy = key.legacy_share_secrets();
    for (i, store) in stores.iter().enumerate() {
        let mut writer = store
            .create(si, ShareNum(i as u8), &legacy)
            .await
            .expect("create");
        writer
            .append(Bytes::from_static(b"old"))
            .await
            .expect("append");
        writer.finish(3).await.expect("finish");
    }
    // The per-server secrets are refused; the fallback is not.
    assert!(matches!(
        stores[0]
            .delete(si, &key.share_secrets(stores[0].identity()))
            .await,
        Err(GridError::Refused { .. })
    ));
    assert_eq!(count_shares(&stores), 4);
    delete_shares(&grid, &key).await.expect("delete");
    assert_eq!(count_shares(&stores), 0);
}
