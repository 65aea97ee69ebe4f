//! Per-server secrets against two real Tahoe-LAFS nodes: the write enabler
//! and lease secrets one server is sent do not open the file's shares on
//! another, and files written with the older per-file secrets can still be
//! deleted. Needs the nodes of `tests/tahoe/harness.sh start` and
//! `GRIDDAV_TAHOE_CONFIG` (as `.ci/run` sets it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use griddav::config::{Config, ServerConfig};
use griddav::engine::crypto::FileKey;
use griddav::engine::delete::delete_shares;
use griddav::grid::tahoe::Timeouts;
use griddav::grid::{Grid, GridError, ShareNum, ShareSecrets, ShareStore, TahoeStore};

fn two_nodes() -> (TahoeStore, TahoeStore) {
    let path = std::env::var_os("GRIDDAV_TAHOE_CONFIG")
        .expect("GRIDDAV_TAHOE_CONFIG: the config of a running tests/tahoe/harness.sh");
    let config = Config::load(Some(std::path::Path::new(&path))).expect("harness config");
    let mut stores = config
        .grid
        .servers
        .expect("servers")
        .into_iter()
        .filter_map(|s| match s {
            ServerConfig::Tahoe { nurl, .. } => Some(
                TahoeStore::new(
                    nurl,
                    None,
                    Timeouts {
                        connect: Duration::from_secs(10),
                        request: Duration::from_secs(30),
                    },
                )
                .expect("store"),
            ),
            _ => None,
        });
    let a = stores.next().expect("a first Tahoe node");
    let b = stores.next().expect("a second Tahoe node");
    (a, b)
}

async fn put(store: &TahoeStore, key: &FileKey, share: u8, secrets: &ShareSecrets) {
    let mut writer = store
        .create(key.storage_index(), ShareNum(share), secrets)
        .await
        .expect("create");
    writer
        .append(Bytes::from_static(b"share bytes"))
        .await
        .expect("append");
    writer.finish(11).await.expect("finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tahoe harness: GRIDDAV_TAHOE_CONFIG"]
async fn secrets_of_one_tahoe_server_do_not_open_another() {
    let (a, b) = two_nodes();
    assert_ne!(a.identity(), b.identity());
    let key = FileKey::random();
    let si = key.storage_index();
    let (of_a, of_b) = (
        key.share_secrets(a.identity()),
        key.share_secrets(b.identity()),
    );
    put(&a, &key, 0, &of_a).await;
    put(&b, &key, 1, &of_b).await;

    // Server a (or anyone who read its disk, where Tahoe keeps the write
    // enabler) tries to truncate or add to the file's slot on server b.
    match b.delete(si, &of_a).await {
        Err(GridError::Refused { .. }) => {}
        other => panic!("b accepted a's secrets for a delete: {other:?}"),
    }
    match b.create(si, ShareNum(7), &of_a).await {
        Err(GridError::Refused { .. }) => {}
        other => panic!("b accepted a's secrets for a write: {other:?}"),
    }
    match a.delete(si, &of_b).await {
        Err(GridError::Refused { .. }) => {}
        other => panic!("a accepted b's secrets: {other:?}"),
    }
    assert_eq!(
        &b.read(si, ShareNum(1), 0..11).await.expect("read")[..],
        b"share bytes"
    );
    assert_eq!(
        &a.read(si, ShareNum(0), 0..11).await.expect("read")[..],
        b"share bytes"
    );

    let grid = Grid::new(vec![
        Arc::new(a.clone()) as Arc<dyn ShareStore>,
        Arc::new(b.clone()),
    ]);
    delete_shares(&grid, &key)
        .await
        .expect("delete with each server's own secrets");
    assert!(a.list(si).await.expect("list").is_empty());
    assert!(b.list(si).await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tahoe harness: GRIDDAV_TAHOE_CONFIG"]
async fn tahoe_files_with_the_old_secrets_are_still_deleted() {
    let (a, b) = two_nodes();
    let key = FileKey::random();
    let si = key.storage_index();
    let legacy = key.legacy_share_secrets();
    put(&a, &key, 0, &legacy).await;
    put(&b, &key, 1, &legacy).await;
    let grid = Grid::new(vec![
        Arc::new(a.clone()) as Arc<dyn ShareStore>,
        Arc::new(b.clone()),
    ]);
    delete_shares(&grid, &key).await.expect("delete falls back");
    assert!(a.list(si).await.expect("list").is_empty());
    assert!(b.list(si).await.expect("list").is_empty());
}
