//! Concurrent PUTs to one path: one version wins whole, and readers only
//! ever see a complete version.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{wait_until, Content, Request, Server, MIB};

#[test]
fn concurrent_puts_to_one_path_one_version_wins_whole() {
    let server = Server::start();
    let path = "/contended.bin";
    let initial = Content::new(1000, 3 * MIB + 17);
    let writers: Vec<Content> = (0..4u64)
        .map(|i| Content::new(1001 + i, 3 * MIB + 1000 * i + 5))
        .collect();

    let put = server.client().send(
        Request::new("PUT", path)
            .pieces(initial.pieces(256 * 1024))
            .content_length(initial.len),
    );
    assert_eq!(put.status, 201, "initial PUT: {put:?}");

    // Every version a reader may see: SHA-256 -> (name, length).
    let mut known: HashMap<String, (String, u64)> = HashMap::new();
    known.insert(initial.sha256(), ("initial".to_string(), initial.len));
    for (i, content) in writers.iter().enumerate() {
        known.insert(content.sha256(), (format!("writer {i}"), content.len));
    }
    let known = Arc::new(known);

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let client = server.client();
            let known = Arc::clone(&known);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let (get, len, sha) = client.get_sha256(path);
                    assert_eq!(get.status, 200, "reader {r}: GET during the PUTs: {get:?}");
                    let Some((name, expected_len)) = known.get(&sha) else {
                        panic!(
                            "reader {r}: GET returned {len} bytes (Content-Length {:?}) that \
                             are none of the known versions",
                            get.header("Content-Length")
                        );
                    };
                    assert_eq!(len, *expected_len, "reader {r}: length of {name}");
                    seen.push(name.clone());
                    if finished {
                        return seen;
                    }
                }
            })
        })
        .collect();

    // Throttled and staggered so that the uploads overlap for a good while
    // and publish one after another while the readers read.
    let puts: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(i, content)| {
            let client = server.client();
            let content = *content;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(250 * i as u64));
                client.send(
                    Request::new("PUT", path)
                        .pieces(content.pieces(64 * 1024))
                        .content_length(content.len)
                        .throttle(4 * MIB),
                )
            })
        })
        .collect();
    for (i, put) in puts.into_iter().enumerate() {
        let response = put.join().expect("writer thread");
        assert!(
            response.is_success(),
            "writer {i}: PUT over an existing file: {} {}",
            response.status,
            response.reason
        );
    }
    done.store(true, Ordering::SeqCst);
    for (r, reader) in readers.into_iter().enumerate() {
        let seen = reader.join().expect("reader thread");
        let mut counts: Vec<(String, usize)> = Vec::new();
        for name in seen {
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => counts.push((name, 1)),
            }
        }
        eprintln!("reader {r} saw, in order of first sight: {counts:?}");
    }

    let (get, len, sha) = server.client().get_sha256(path);
    assert_eq!(get.status, 200);
    let (winner, expected_len) = known
        .get(&sha)
        .unwrap_or_else(|| panic!("final GET ({len} bytes) is none of the known versions"));
    assert_ne!(
        winner, "initial",
        "some writer's version must have replaced the initial one"
    );
    assert_eq!(len, *expected_len);
    eprintln!("final version: {winner}");

    // Every upload ended: nothing is left under incoming/, and with the
    // default grace period (an hour) no replaced version has been freed yet,
    // so the grid holds five whole versions of 10 shares each.
    assert!(
        wait_until(Duration::from_secs(5), || server.grid().incoming.is_empty()),
        "incoming after all PUTs: {:?}",
        server.grid().incoming
    );
    let grid = server.grid();
    assert_eq!(
        grid.shares.len(),
        10 * (1 + writers.len()),
        "share files: {:?}",
        grid.shares.keys()
    );
}
