//! kill -9 during concurrent PUTs and MOVEs, ten times over. After each
//! restart every file is at a version a client could have committed (the
//! one acknowledged, or, for a request the kill cut off, the one before or
//! after it), never partial; the namespace passes `PRAGMA integrity_check`;
//! and, with `gc_grace_secs = 0`, the shares on disk are exactly those of
//! the files that exist.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::http::{Client, Request};
use support::server::wait_until;
use support::{Content, Server};

const ROUNDS: u64 = 10;
const THREADS: u64 = 20;
const SIZES: [u64; 4] = [700, 40_000, 400_000, 1_500_000];

/// Versions each path may be at: a content hash, or `None` for absent.
type Model = HashMap<String, HashSet<Option<String>>>;

enum Outcome {
    Done,
    Refused,
    Unknown,
}

fn outcome(client: &Client, request: Request) -> Outcome {
    let exchange = client.exchange(request, None);
    match exchange.response {
        Some(Ok(response)) if exchange.write_error.is_none() || response.status > 0 => {
            if response.is_success() {
                Outcome::Done
            } else {
                Outcome::Refused
            }
        }
        _ => Outcome::Unknown,
    }
}

fn put(model: &Mutex<Model>, client: &Client, path: &str, content: &Content) {
    let result = outcome(client, Request::new("PUT", path).body(content.bytes()));
    let mut model = model.lock().expect("model lock");
    let entry = model
        .entry(path.to_owned())
        .or_insert_with(|| HashSet::from([None]));
    match result {
        Outcome::Done => *entry = HashSet::from([Some(content.sha256())]),
        Outcome::Refused => {}
        Outcome::Unknown => {
            entry.insert(Some(content.sha256()));
        }
    }
}

fn moved(model: &Mutex<Model>, client: &Client, from: &str, to: &str) {
    let request = Request::new("MOVE", from)
        .header("Destination", &format!("http://{}{to}", client.addr))
        .header("Overwrite", "T");
    let result = outcome(client, request);
    let mut model = model.lock().expect("model lock");
    let source: HashSet<Option<String>> = model
        .get(from)
        .cloned()
        .unwrap_or_else(|| HashSet::from([None]))
        .into_iter()
        .filter(Option::is_some)
        .collect();
    match result {
        Outcome::Done => {
            model.insert(to.to_owned(), source);
            model.insert(from.to_owned(), HashSet::from([None]));
        }
        Outcome::Refused => {}
        Outcome::Unknown => {
            model
                .entry(to.to_owned())
                .or_insert_with(|| HashSet::from([None]))
                .extend(source);
            model
                .entry(from.to_owned())
                .or_insert_with(|| HashSet::from([None]))
                .insert(None);
        }
    }
}

/// Storage indexes (base32) that have a non-empty share directory or a
/// live packed share.
fn shares_on_disk(grid: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for server in fs::read_dir(grid).into_iter().flatten().flatten() {
        for log in fs::read_dir(server.path().join("packed"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for (si, _, _) in support::grid::packed_records(&log.path()) {
                found.insert(si);
            }
        }
        for prefix in fs::read_dir(server.path().join("shares"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for si in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                if fs::read_dir(si.path())
                    .into_iter()
                    .flatten()
                    .next()
                    .is_some()
                {
                    found.insert(si.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    found
}

fn live_storage_indexes(db: &Path) -> BTreeSet<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the namespace read-only");
    let mut statement = conn
        .prepare("SELECT cap FROM nodes WHERE cap IS NOT NULL")
        .expect("prepare");
    let caps: Vec<String> = statement
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|c| c.expect("cap"))
        .collect();
    caps.iter()
        .map(|cap| {
            let cap: griddav::engine::FileCap = cap.parse().expect("a valid capability");
            cap.key.storage_index().to_base32()
        })
        .collect()
}

fn integrity(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the namespace read-only");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

#[test]
fn kill_9_during_concurrent_puts_and_moves_loses_nothing_committed() {
    let mut server = Server::start_with_config("gc_grace_secs = 0\n[repair]\ninterval_secs = 0\n");
    let model: Arc<Mutex<Model>> = Arc::default();
    let db = server.data_dir().join("namespace.db");
    let mut uncertain = 0usize;
    for round in 0..ROUNDS {
        let client = server.client();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (model, stop) = (Arc::clone(&model), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let (f, m) = (format!("/f{t:02}"), format!("/m{t:02}"));
                    put(
                        &model,
                        &client,
                        &format!("/n{t:02}-{round}"),
                        &Content::new(round * 1000 + t, SIZES[(t % 4) as usize]),
                    );
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let seed = 1_000_000 + round * 100_000 + t * 1000 + i;
                        match i % 3 {
                            0 => put(
                                &model,
                                &client,
                                &f,
                                &Content::new(seed, SIZES[((t + i) % 4) as usize]),
                            ),
                            1 => moved(&model, &client, &f, &m),
                            _ => moved(&model, &client, &m, &f),
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 97 * round));
        server.crash_and_restart();
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("client thread");
        }

        assert_eq!(integrity(&db), "ok", "round {round}");
        let client = server.client();
        let mut model = model.lock().expect("model lock");
        for (path, possible) in model.iter_mut() {
            let (response, _, sha) = client.get_sha256(path);
            let seen = match response.status {
                200 => Some(sha),
                404 => None,
                other => panic!(
                    "round {round}: GET {path}: {other}; log:\n{}",
                    server.log_tail()
                ),
            };
            assert!(
                possible.contains(&seen),
                "round {round}: {path} is {seen:?}, expected one of {possible:?}"
            );
            if possible.len() > 1 {
                uncertain += 1;
            }
            *possible = HashSet::from([seen]);
        }
        let grid = server.data_dir().join("grid");
        let mut last = (BTreeSet::new(), BTreeSet::new());
        assert!(
            wait_until(Duration::from_secs(60), || {
                last = (shares_on_disk(&grid), live_storage_indexes(&db));
                last.0 == last.1
            }),
            "round {round}: shares on disk {} vs live files {}: extra {:?}, missing {:?}",
            last.0.len(),
            last.1.len(),
            last.0.difference(&last.1).collect::<Vec<_>>(),
            last.1.difference(&last.0).collect::<Vec<_>>()
        );
        assert!(
            server.grid().incoming.is_empty(),
            "round {round}: partial shares left"
        );
    }
    eprintln!(
        "kill -9 loop: {ROUNDS} rounds x {THREADS} clients, {} paths checked each round, {uncertain} cut-off requests resolved to an allowed version",
        model.lock().expect("model lock").len()
    );
}
