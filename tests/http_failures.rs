//! PUTs that do not complete never replace the old version and leave no
//! shares of their own behind.

mod support;

use std::time::Duration;

use support::{
    wait_until, Client, Content, Ending, GridFiles, Request, Server, INLINE_THRESHOLD, KIB, MIB,
};

/// How long aborted shares may take to disappear.
const CLEANUP: Duration = Duration::from_secs(5);

/// PUTs `content` as a new file (the server may hold other files) and
/// returns the grid as it then is.
fn put_old_version(server: &Server, path: &str, content: &Content) -> GridFiles {
    let shares_before = server.grid().shares.len();
    let put = server.client().send(
        Request::new("PUT", path)
            .pieces(content.pieces(256 * 1024))
            .content_length(content.len),
    );
    assert_eq!(put.status, 201, "PUT {path} (old version): {put:?}");
    let grid = server.grid();
    let new_shares = if content.len > INLINE_THRESHOLD {
        10
    } else {
        0
    };
    assert_eq!(
        grid.shares.len(),
        shares_before + new_shares,
        "share files after PUT {path} of {} bytes: {:?}",
        content.len,
        grid.shares.keys()
    );
    assert!(grid.incoming.is_empty(), "incoming: {:?}", grid.incoming);
    grid
}

/// The old version is still what GET returns, and (within a few seconds)
/// the grid holds exactly the shares it held before the failed PUT.
fn assert_old_version_intact(server: &Server, path: &str, old: &Content, before: &GridFiles) {
    let client: Client = server.client();
    let (get, len, sha) = client.get_sha256(path);
    assert_eq!(get.status, 200, "GET {path} after the failed PUT: {get:?}");
    assert_eq!(len, old.len, "GET {path}: length of the old version");
    assert_eq!(sha, old.sha256(), "GET {path}: SHA-256 of the old version");

    let settled = wait_until(CLEANUP, || {
        let grid = server.grid();
        grid.incoming.is_empty() && grid.shares == before.shares && grid.other == before.other
    });
    let grid = server.grid();
    assert!(
        settled,
        "{CLEANUP:?} after the failed PUT the grid should hold only the old version's \
         {} share files and nothing incoming; it holds shares {:?}, incoming {:?}, other {:?}",
        before.shares.len(),
        grid.shares.keys().collect::<Vec<_>>(),
        grid.incoming,
        grid.other
    );
    // And a HEAD/PROPFIND-independent check: the length the server reports.
    assert_eq!(
        get.header("Content-Length"),
        Some(old.len.to_string().as_str())
    );
}

#[test]
fn disconnect_at_half_of_a_put_over_an_existing_file() {
    let server = Server::start();
    let old = Content::new(1, 16 * MIB);
    let before = put_old_version(&server, "/file.bin", &old);

    let new = Content::new(2, 16 * MIB);
    let grid_dir = server.data_dir().join("grid");
    let saw_partial_shares = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let saw = std::sync::Arc::clone(&saw_partial_shares);
    let exchange = server.client().exchange(
        Request::new("PUT", "/file.bin")
            .pieces(new.pieces(256 * 1024))
            .content_length(new.len)
            .stop_after(new.len / 2)
            .before_ending(move || {
                // Hold the connection open until the upload has shares in the
                // grid, so that the abort has something to clean up.
                let seen = wait_until(Duration::from_secs(10), || {
                    !GridFiles::scan(&grid_dir).incoming.is_empty()
                });
                saw.store(seen, std::sync::atomic::Ordering::SeqCst);
            })
            .ending(Ending::Drop),
        None,
    );
    assert!(exchange.write_error.is_none(), "{exchange:?}");
    assert_eq!(exchange.sent, new.len / 2);
    assert!(
        saw_partial_shares.load(std::sync::atomic::Ordering::SeqCst),
        "after half of a 16 MiB body the upload should have partial shares under incoming/"
    );

    assert_old_version_intact(&server, "/file.bin", &old, &before);
}

#[test]
fn content_length_larger_than_the_body() {
    let server = Server::start();
    // (old length, declared Content-Length, bytes actually sent)
    let cases: [(u64, u64, u64); 3] = [
        (3 * MIB, 3 * MIB, 2 * MIB),
        (3 * MIB, 5 * MIB + 1, 5 * MIB),
        (1000, 3000, 2000), // small files stay inline
    ];
    for (i, (old_len, declared, sent)) in cases.into_iter().enumerate() {
        let path = format!("/cl-{i}.bin");
        let old = Content::new(100 + i as u64, old_len);
        put_old_version(&server, &path, &old);
        let before = server.grid();
        let new = Content::new(200 + i as u64, sent);
        let exchange = server.client().exchange(
            Request::new("PUT", &path)
                .pieces(new.pieces(64 * 1024))
                .content_length(declared)
                .ending(Ending::ShutdownWrite),
            None,
        );
        // RFC 9112 section 8: a server that receives an incomplete message MAY
        // answer with an error before closing. It must never answer 2xx.
        match &exchange.response {
            Some(Ok(response)) => {
                assert!(
                    !response.is_success(),
                    "case {i}: PUT with Content-Length {declared} but {sent} bytes sent \
                     answered {} {}",
                    response.status,
                    response.reason
                );
                assert_eq!(
                    response.status, 400,
                    "case {i}: a truncated body is the client's fault"
                );
                eprintln!("case {i}: answered {} {}", response.status, response.reason);
            }
            Some(Err(e)) => eprintln!("case {i}: connection closed without an answer: {e}"),
            None => unreachable!("ShutdownWrite reads the answer"),
        }
        assert_old_version_intact(&server, &path, &old, &before);
    }
}

#[test]
fn chunked_put_with_wrong_expected_entity_length() {
    let server = Server::start();
    const CHUNK: u64 = 64 * KIB;
    // (body length, X-Expected-Entity-Length, description)
    let body = 48 * CHUNK; // 3 MiB, an exact multiple of the chunk size
    let cases: [(u64, u64, &str); 6] = [
        (body + 123, body + 122, "one byte smaller"),
        (body + 123, body + 124, "one byte larger"),
        (body, body - CHUNK, "smaller, at a chunk boundary"),
        (body, body + CHUNK, "larger, at a chunk boundary"),
        (body, 10 * CHUNK, "much smaller, at a chunk boundary"),
        (3000, 2000, "small body, inline sizes"),
    ];
    for (i, (len, expected, what)) in cases.into_iter().enumerate() {
        let path = format!("/xeel-{i}.bin");
        let old = Content::new(300 + i as u64, 2 * MIB + 1);
        put_old_version(&server, &path, &old);
        let before = server.grid();
        let new = Content::new(400 + i as u64, len);
        let exchange = server.client().exchange(
            Request::new("PUT", &path)
                .header("X-Expected-Entity-Length", &expected.to_string())
                .pieces(new.pieces(CHUNK as usize))
                .chunked(),
            None,
        );
        let response = exchange
            .response
            .expect("a complete request reads its answer")
            .unwrap_or_else(|e| panic!("case {i} ({what}): no answer: {e}"));
        assert_eq!(
            response.status, 400,
            "case {i} ({what}): chunked PUT of {len} bytes with X-Expected-Entity-Length \
             {expected} answered {} {}",
            response.status, response.reason
        );
        assert_old_version_intact(&server, &path, &old, &before);
    }
}

#[test]
fn disconnect_mid_put_of_a_new_file_leaves_nothing_behind() {
    let server = Server::start();
    for (i, chunked) in [false, true].into_iter().enumerate() {
        let path = format!("/new-{i}.bin");
        let new = Content::new(500 + i as u64, 8 * MIB);
        let grid_dir = server.data_dir().join("grid");
        let mut request = Request::new("PUT", &path)
            .pieces(new.pieces(256 * 1024))
            .stop_after(new.len / 2)
            .before_ending(move || {
                wait_until(Duration::from_secs(10), || {
                    !GridFiles::scan(&grid_dir).incoming.is_empty()
                });
            })
            .ending(Ending::Drop);
        request = if chunked {
            request
                .chunked()
                .header("X-Expected-Entity-Length", &new.len.to_string())
        } else {
            request.content_length(new.len)
        };
        let exchange = server.client().exchange(request, None);
        assert!(exchange.write_error.is_none(), "{exchange:?}");

        assert!(
            wait_until(CLEANUP, || server.grid().file_count() == 0),
            "{CLEANUP:?} after the disconnect the grid should be empty: {:?}",
            server.grid()
        );
        // The aborted content must never show: no file, or (since dav-server
        // opens the file before reading the body) an empty one.
        let get = server.client().get(&path);
        assert!(
            get.status == 404 || (get.status == 200 && get.body.is_empty()),
            "GET {path} after an aborted PUT of a new file: {} with {} bytes",
            get.status,
            get.body.len()
        );
        eprintln!(
            "GET {path} after an aborted PUT of a new file: {}",
            get.status
        );
    }
}

#[test]
fn disconnect_mid_chunked_put_over_an_existing_file() {
    let server = Server::start();
    let old = Content::new(600, 5 * MIB);
    let before = put_old_version(&server, "/finder.bin", &old);
    let new = Content::new(601, 12 * MIB);
    let exchange = server.client().exchange(
        Request::new("PUT", "/finder.bin")
            .header("X-Expected-Entity-Length", &new.len.to_string())
            .pieces(new.pieces(128 * 1024))
            .chunked()
            .stop_after(new.len / 2)
            .ending(Ending::Drop),
        None,
    );
    assert!(exchange.write_error.is_none(), "{exchange:?}");
    assert_old_version_intact(&server, "/finder.bin", &old, &before);
}
