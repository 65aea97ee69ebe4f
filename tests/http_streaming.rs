//! Streaming is visible from outside: share bytes reach the grid while the
//! client is still sending.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Content, Request, Server, MIB};

#[test]
fn shares_grow_while_a_throttled_client_is_still_sending() {
    let server = Server::start();
    let content = Content::new(64, 64 * MIB);
    let rate = 8 * MIB; // about 8 s for the whole body
    let progress = Arc::new(AtomicU64::new(0));

    let client = server.client();
    let sender_progress = Arc::clone(&progress);
    let sender = std::thread::spawn(move || {
        let started = Instant::now();
        let response = client.send(
            Request::new("PUT", "/stream.bin")
                .pieces(content.pieces(64 * 1024))
                .content_length(content.len)
                .throttle(rate)
                .progress(sender_progress),
        );
        (response, started.elapsed())
    });

    // Watch the grid while the body is on its way: record (body bytes sent,
    // bytes under incoming/) whenever incoming/ holds something.
    let mut observations: Vec<(u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sender.is_finished() && Instant::now() < deadline {
        let sent_before = progress.load(Ordering::SeqCst);
        let incoming = server.grid().incoming_bytes();
        let sent_after = progress.load(Ordering::SeqCst);
        if incoming > 0 && sent_after < content.len {
            observations.push((sent_before, incoming));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (response, took) = sender.join().expect("sender thread");
    assert_eq!(response.status, 201, "PUT: {response:?}");
    eprintln!(
        "64 MiB PUT at {} MiB/s took {took:?}; {} observations of incoming shares while sending",
        rate / MIB,
        observations.len()
    );

    let first = observations.first().unwrap_or_else(|| {
        panic!("no share bytes appeared under incoming/ while the client was sending")
    });
    let last = observations.last().expect("observations is not empty");
    assert!(
        first.0 < content.len / 2,
        "share bytes should appear early; the first were seen after {} of {} body bytes",
        first.0,
        content.len
    );
    assert!(
        last.1 > first.1,
        "incoming shares should grow while the body arrives: {observations:?}"
    );
    // Ciphertext written so far is about N/k = 10/3 of the plaintext received:
    // at least a good part of what was sent (minus a few segments in flight)
    // should already be in the grid at the last observation.
    let in_flight = 16 * MIB;
    assert!(
        last.1 * 3 / 10 + in_flight >= last.0,
        "incoming holds {} share bytes after {} body bytes were sent: the upload lags \
         more than {in_flight} bytes behind the client",
        last.1,
        last.0
    );

    let grid = server.grid();
    assert!(
        grid.incoming.is_empty(),
        "incoming after commit: {:?}",
        grid.incoming
    );
    assert_eq!(
        grid.shares.len(),
        10,
        "share files: {:?}",
        grid.shares.keys()
    );
    assert!(
        grid.share_bytes() >= content.len * 10 / 3,
        "10 shares of a 3-of-10 code hold at least 10/3 of the file"
    );

    let (get, len, sha) = server.client().get_sha256("/stream.bin");
    assert_eq!(get.status, 200);
    assert_eq!(len, content.len);
    assert_eq!(sha, content.sha256(), "GET after a streamed PUT");
}
