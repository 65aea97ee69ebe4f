//! Partial updates (Content-Range PUT, sabredav PATCH) write a new version
//! through the engine; the old version stays until that one is complete.
//! And a read the grid cannot serve fails: it never returns zeros.

mod support;

use support::{Content, Ending, Request, Server, MIB};

fn expected_after(old: &[u8], at: usize, new: &[u8]) -> Vec<u8> {
    let mut out = old.to_vec();
    if out.len() < at + new.len() {
        out.resize(at + new.len(), 0);
    }
    out[at..at + new.len()].copy_from_slice(new);
    out
}

#[test]
fn content_range_put_and_sabredav_patch() {
    let server = Server::start();
    let client = server.client();
    let old = Content::new(60, 3 * MIB + 100).bytes();
    assert_eq!(client.put("/f.bin", old.clone()).status, 201);

    // Overwrite a range that spans a segment boundary.
    let middle = Content::new(61, 70_000).bytes();
    let at = MIB as usize - 1000;
    let put = client.send(
        Request::new("PUT", "/f.bin")
            .header(
                "Content-Range",
                &format!("bytes {}-{}/*", at, at + middle.len() - 1),
            )
            .body(middle.clone()),
    );
    assert!(put.is_success(), "{put:?}");
    let now = expected_after(&old, at, &middle);
    assert!(client.get("/f.bin").body == now, "range written in place");

    // Extend past the end.
    let tail = Content::new(62, 5000).bytes();
    let at = now.len() - 10;
    let put = client.send(
        Request::new("PUT", "/f.bin")
            .header(
                "Content-Range",
                &format!("bytes {}-{}/*", at, at + tail.len() - 1),
            )
            .body(tail.clone()),
    );
    assert!(put.is_success(), "{put:?}");
    let now = expected_after(&now, at, &tail);
    assert!(client.get("/f.bin").body == now, "range extends the file");

    // sabredav PATCH: append, and the last N bytes.
    let appended = b"appended by PATCH".to_vec();
    let patch = client.send(
        Request::new("PATCH", "/f.bin")
            .header("Content-Type", "application/x-sabredav-partialupdate")
            .header("X-Update-Range", "append")
            .body(appended.clone()),
    );
    assert!(patch.is_success(), "{patch:?}");
    let mut now = now;
    now.extend_from_slice(&appended);
    assert!(client.get("/f.bin").body == now);
    let patch = client.send(
        Request::new("PATCH", "/f.bin")
            .header("Content-Type", "application/x-sabredav-partialupdate")
            .header("X-Update-Range", "bytes=-4")
            .body(b"LAST".to_vec()),
    );
    assert!(patch.is_success(), "{patch:?}");
    let len = now.len();
    now[len - 4..].copy_from_slice(b"LAST");
    assert!(client.get("/f.bin").body == now);

    // A range that starts past the end is refused; nothing changes.
    let beyond = client.send(
        Request::new("PUT", "/f.bin")
            .header(
                "Content-Range",
                &format!("bytes {}-{}/*", len + 10, len + 11),
            )
            .body(b"xx".to_vec()),
    );
    assert_eq!(beyond.status, 416);
    assert!(client.get("/f.bin").body == now);

    // A partial update cut off half-way leaves the previous version whole.
    let cut = client.exchange(
        Request::new("PUT", "/f.bin")
            .header("Content-Range", &format!("bytes 0-{}/*", 2 * MIB - 1))
            .pieces(Content::new(63, 2 * MIB).pieces(64 * 1024))
            .content_length(2 * MIB)
            .stop_after(MIB)
            .ending(Ending::Drop),
        None,
    );
    assert!(cut
        .response
        .as_ref()
        .is_none_or(|r| r.as_ref().map_or(true, |r| !r.is_success())));
    assert!(
        client.get("/f.bin").body == now,
        "old version intact after a cut partial PUT"
    );
}

/// Removes the first `count` of `paths`, relative to the grid directory.
fn remove_shares(server: &Server, paths: &[std::path::PathBuf], count: usize) {
    let grid = server.data_dir().join("grid");
    for path in &paths[..count] {
        std::fs::remove_file(grid.join(path)).expect("remove share");
    }
}

#[test]
fn a_file_the_grid_cannot_serve_is_an_error_not_zeros() {
    let server = Server::start();
    let client = server.client();

    // Seven shares gone: any three still give the file back.
    let kept = Content::new(65, MIB + 5);
    assert_eq!(client.put("/kept.bin", kept.bytes()).status, 201);
    let shares: Vec<_> = server.grid().shares.keys().cloned().collect();
    assert_eq!(shares.len(), 10);
    remove_shares(&server, &shares, 7);
    assert!(
        client.get("/kept.bin").body == kept.bytes(),
        "3 of 10 shares suffice"
    );

    // Eight gone: fewer than k = 3 remain.
    let content = Content::new(64, 2 * MIB + 3);
    assert_eq!(client.put("/lost.bin", content.bytes()).status, 201);
    let shares: Vec<_> = server
        .grid()
        .shares
        .keys()
        .filter(|path| !shares.contains(path))
        .cloned()
        .collect();
    assert_eq!(shares.len(), 10);
    remove_shares(&server, &shares, 8);
    let exchange = client.exchange(Request::new("GET", "/lost.bin"), None);
    // The headers may already be out when the grid fails: then the body must
    // break off (an error reading it), never be completed with zeros.
    if let Some(Ok(response)) = exchange.response {
        assert!(
            !response.is_success() || response.body.len() < content.len as usize,
            "a GET without enough shares returned {} complete bytes",
            response.body.len()
        );
    }
}
