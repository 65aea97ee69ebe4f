//! What a namespace copy costs, full and as an increment after 10 PUTs,
//! and how long recovery takes from a base and 10 increments, at 100,000
//! files (docs/OPERATIONS.md quotes the figures). Ignored in `cargo test`
//! (a minute of work); run with
//! `cargo test --release --test snapshot_cost -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Instant;

use griddav::engine::{EncodingParams, UploadOptions};
use griddav::grid::{grid_of_dirs, Grid};
use griddav::namespace::{Content, Namespace};
use griddav::snapshot::{recover, CopyKind, RootSecret, Snapshots};

/// Fills a fresh namespace with `files` files in folders of 100: one in
/// ten inline (1 KiB), the rest with a capability; one in ten with two
/// dead properties. Rows are written directly, in one transaction.
fn fill(db: &std::path::Path, files: usize) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    let now = 1_800_000_000_000i64;
    let mut next_id = 2i64;
    let mut folder = 0i64;
    for i in 0..files {
        if i % 100 == 0 {
            folder = next_id;
            next_id += 1;
            tx.execute(
                "INSERT INTO nodes (id, parent, name, kind, size, created, modified, etag)
                 VALUES (?1, 1, ?2, 'dir', 0, ?3, ?3, ?4)",
                rusqlite::params![
                    folder,
                    format!("folder {}", i / 100),
                    now,
                    format!("d{folder}")
                ],
            )
            .unwrap();
        }
        let id = next_id;
        next_id += 1;
        let (cap, inline): (Option<String>, Option<Vec<u8>>) = if i % 10 == 0 {
            (None, Some(vec![b'x'; 1024]))
        } else {
            let key = griddav::grid::base32(&rand::random::<[u8; 32]>());
            let hash = griddav::grid::base32(&rand::random::<[u8; 32]>());
            (
                Some(format!("griddav:1:{key}:{hash}:3:10:{}", 100_000 + i)),
                None,
            )
        };
        tx.execute(
            "INSERT INTO nodes (id, parent, name, kind, size, created, modified, etag, cap, inline)
             VALUES (?1, ?2, ?3, 'file', ?4, ?5, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                id,
                folder,
                format!("document number {i}.pdf"),
                100_000 + i,
                now,
                format!("e{id:016x}"),
                cap,
                inline
            ],
        )
        .unwrap();
        if i % 10 == 1 {
            for name in ["color", "author"] {
                tx.execute(
                    "INSERT INTO props (node_id, namespace, name, value) VALUES (?1, 'urn:x', ?2, ?3)",
                    rusqlite::params![id, name, format!("<x:{name}>value {i}</x:{name}>").into_bytes()],
                )
                .unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (100,000 files): run with --ignored --nocapture"]
async fn copy_and_recovery_at_100k_files() {
    let files: usize = std::env::var("GRIDDAV_COST_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("namespace.db");
    drop(Namespace::open(&db).await.unwrap());
    fill(&db, files);
    let ns = Namespace::open(&db).await.unwrap();
    let grid = Grid::new(grid_of_dirs(&dir.path().join("grid"), 10).unwrap());
    let secret = RootSecret::from_bytes(rand::random());
    let snapshots = |max_increments| {
        Snapshots::new(
            ns.clone(),
            grid.clone(),
            secret.clone(),
            data.clone(),
            db.clone(),
            EncodingParams::default(),
            UploadOptions::default(),
            10,
        )
        .with_max_increments(max_increments)
    };
    let put_ten = |round: usize| {
        let ns = ns.clone();
        async move {
            for i in 0..10 {
                let upload = ns.begin_upload("cost").await.unwrap();
                let key = griddav::grid::base32(&rand::random::<[u8; 32]>());
                let hash = griddav::grid::base32(&rand::random::<[u8; 32]>());
                ns.publish_file(
                    &format!("/folder 3/new {round} {i}.pdf"),
                    Content::Cap(format!("griddav:1:{key}:{hash}:3:10:123456")),
                    123_456,
                    std::time::SystemTime::now(),
                    Some(upload),
                )
                .await
                .unwrap();
            }
        }
    };
    let full = snapshots(0);
    for round in 0..3 {
        put_ten(100 + round).await;
        let report = full.copy_if_changed(true).await.unwrap().unwrap();
        assert_eq!(report.kind, CopyKind::Base);
        println!(
            "{files} files, full copy {round} after 10 PUTs: {} bytes ({:.1} MB in the grid at \
             3-of-10), {:.2} s",
            report.bytes,
            report.bytes as f64 * 10.0 / 3.0 / 1e6,
            report.elapsed.as_secs_f64()
        );
    }
    drop(full);
    let incremental = snapshots(100);
    let base = incremental.copy_if_changed(true).await.unwrap().unwrap();
    assert_eq!(base.kind, CopyKind::Base);
    println!(
        "{files} files, base: {} bytes, {:.2} s",
        base.bytes,
        base.elapsed.as_secs_f64()
    );
    let rounds = 10;
    for round in 0..rounds {
        put_ten(round).await;
        let report = incremental.copy_if_changed(false).await.unwrap().unwrap();
        assert_eq!(report.kind, CopyKind::Increment(round + 1));
        println!(
            "{files} files, increment {} after 10 PUTs: {} bytes ({:.3} MB in the grid at \
             3-of-10), {:.2} s",
            round + 1,
            report.bytes,
            report.bytes as f64 * 10.0 / 3.0 / 1e6,
            report.elapsed.as_secs_f64()
        );
    }
    drop(incremental);
    drop(ns);

    let target = dir.path().join("recovered");
    let started = Instant::now();
    let done = recover::recover(&grid, &secret, &target, &target.join("namespace.db"), false)
        .await
        .unwrap();
    println!(
        "{files} files: recovered a base and {} increments, {} bytes, in {:.2} s",
        done.increments,
        done.bytes,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(done.increments, rounds);
    let recovered = Namespace::open(target.join("namespace.db")).await.unwrap();
    let listed = recovered.list("/folder 7").await.unwrap();
    assert_eq!(listed.len(), 100.min(files.saturating_sub(700)));
    let listed = recovered.list("/folder 3").await.unwrap();
    assert_eq!(
        listed.len(),
        100.min(files.saturating_sub(300)) + 10 * (rounds + 3)
    );
}
