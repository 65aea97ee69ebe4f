//! Everything the namespace holds survives a restart: files (inline and in
//! the grid), directories, dead properties and unexpired locks.

mod support;

use std::time::{Duration, Instant};

use support::{Client, Content, Request, Response, Server, MIB};

const NS: &str = "http://example.com/griddav-http-tests/";

fn lock(client: &Client, path: &str, timeout: &str) -> String {
    let body = r#"<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:">
  <D:lockscope><D:exclusive/></D:lockscope>
  <D:locktype><D:write/></D:locktype>
  <D:owner>griddav http tests</D:owner>
</D:lockinfo>"#;
    let response = client.send(
        Request::new("LOCK", path)
            .header("Timeout", timeout)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body),
    );
    assert_eq!(response.status, 200, "LOCK {path}: {response:?}");
    let token = response
        .header("Lock-Token")
        .unwrap_or_else(|| panic!("LOCK {path} answered without Lock-Token: {response:?}"));
    token
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

fn proppatch(client: &Client, path: &str, name: &str, value: &str) {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="{NS}">
  <D:set><D:prop><Z:{name}>{value}</Z:{name}></D:prop></D:set>
</D:propertyupdate>"#
    );
    let response = client.send(
        Request::new("PROPPATCH", path)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body),
    );
    assert_eq!(response.status, 207, "PROPPATCH {path}: {response:?}");
    let text = response.text();
    assert!(
        text.contains("200 OK") && !text.contains("424") && !text.contains("403"),
        "PROPPATCH {path} did not set {name}: {text}"
    );
}

fn propfind(client: &Client, path: &str, depth: &str, prop: &str) -> Response {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:Z="{NS}"><D:prop>{prop}</D:prop></D:propfind>"#
    );
    let response = client.send(
        Request::new("PROPFIND", path)
            .header("Depth", depth)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body),
    );
    assert_eq!(response.status, 207, "PROPFIND {path}: {response:?}");
    response
}

fn assert_content(client: &Client, path: &str, content: &Content) {
    let (get, len, sha) = client.get_sha256(path);
    assert_eq!(get.status, 200, "GET {path}: {get:?}");
    assert_eq!(len, content.len, "GET {path}: length");
    assert_eq!(sha, content.sha256(), "GET {path}: SHA-256");
}

#[test]
fn files_directories_properties_and_locks_survive_a_restart() {
    let mut server = Server::start();
    let client = server.client();

    assert_eq!(client.mkcol("/dir/").status, 201, "MKCOL /dir/");
    assert_eq!(client.mkcol("/dir/sub/").status, 201, "MKCOL /dir/sub/");
    assert_eq!(client.mkcol("/empty/").status, 201, "MKCOL /empty/");

    let big = Content::new(11, 6 * MIB + 123);
    let put = client.send(
        Request::new("PUT", "/dir/big.bin")
            .pieces(big.pieces(256 * 1024))
            .content_length(big.len),
    );
    assert_eq!(put.status, 201, "PUT /dir/big.bin: {put:?}");
    let small = Content::new(12, 1234);
    assert_eq!(client.put("/dir/sub/small.txt", small.bytes()).status, 201);
    let empty = Content::new(13, 0);
    assert_eq!(client.put("/dir/empty.txt", Vec::new()).status, 201);

    proppatch(&client, "/dir/big.bin", "color", "blue-green-42");
    proppatch(&client, "/dir/", "owner-note", "kept by the namespace");

    let locked_old = Content::new(14, 50_000);
    assert_eq!(
        client.put("/dir/locked.bin", locked_old.bytes()).status,
        201
    );
    let token = lock(&client, "/dir/locked.bin", "Second-3600");
    let short_old = Content::new(15, 100);
    assert_eq!(client.put("/dir/short.txt", short_old.bytes()).status, 201);
    let _short_token = lock(&client, "/dir/short.txt", "Second-2");
    let short_locked_at = Instant::now();

    let before = client.put("/dir/locked.bin", b"no token".to_vec());
    assert_eq!(
        before.status, 423,
        "PUT on a locked file without the token: {before:?}"
    );

    server.restart();
    let client = server.client();

    // Files, whole.
    assert_content(&client, "/dir/big.bin", &big);
    assert_content(&client, "/dir/sub/small.txt", &small);
    assert_content(&client, "/dir/empty.txt", &empty);
    assert_content(&client, "/dir/locked.bin", &locked_old);
    assert_eq!(
        server.grid().shares.len(),
        30,
        "two grid files and the namespace copy taken at shutdown, 10 shares each"
    );

    // Directories and their members.
    let listing = propfind(&client, "/dir/", "1", "<D:resourcetype/>").text();
    for href in [
        "/dir/",
        "/dir/sub/",
        "/dir/big.bin",
        "/dir/empty.txt",
        "/dir/locked.bin",
        "/dir/short.txt",
    ] {
        assert!(
            listing.contains(&format!("{href}<")),
            "PROPFIND /dir/ Depth 1 after restart lacks {href}: {listing}"
        );
    }
    assert!(listing.contains("collection"), "{listing}");
    let empty_dir = propfind(&client, "/empty/", "0", "<D:resourcetype/>").text();
    assert!(
        empty_dir.contains("collection"),
        "/empty/ after restart: {empty_dir}"
    );

    // Dead properties.
    let props = propfind(&client, "/dir/big.bin", "0", "<Z:color/>").text();
    assert!(
        props.contains("blue-green-42") && props.contains(NS),
        "dead property of /dir/big.bin after restart: {props}"
    );
    let props = propfind(&client, "/dir/", "0", "<Z:owner-note/>").text();
    assert!(
        props.contains("kept by the namespace"),
        "dead property of /dir/ after restart: {props}"
    );
    let props = propfind(&client, "/dir/big.bin", "0", "<D:getcontentlength/>").text();
    assert!(
        props.contains(&big.len.to_string()),
        "getcontentlength after restart: {props}"
    );

    // The unexpired lock still holds; its token still opens it.
    let lockdiscovery = propfind(&client, "/dir/locked.bin", "0", "<D:lockdiscovery/>").text();
    assert!(
        lockdiscovery.contains(&token),
        "lockdiscovery after restart lacks the token {token}: {lockdiscovery}"
    );
    let without = client.put("/dir/locked.bin", b"no token".to_vec());
    assert_eq!(
        without.status, 423,
        "PUT on a file locked before the restart, without the token: {without:?}"
    );
    assert_content(&client, "/dir/locked.bin", &locked_old);
    let locked_new = Content::new(16, 70_000);
    let with = client.send(
        Request::new("PUT", "/dir/locked.bin")
            .header("If", &format!("(<{token}>)"))
            .body(locked_new.bytes()),
    );
    assert!(
        with.is_success(),
        "PUT with the lock token after restart: {with:?}"
    );
    assert_content(&client, "/dir/locked.bin", &locked_new);
    let unlock = client.send(
        Request::new("UNLOCK", "/dir/locked.bin").header("Lock-Token", &format!("<{token}>")),
    );
    assert_eq!(unlock.status, 204, "UNLOCK after restart: {unlock:?}");
    assert!(client.put("/dir/locked.bin", b"free".to_vec()).is_success());

    // A lock whose timeout ran out blocks nobody, restart or not.
    let left = Duration::from_secs(3).saturating_sub(short_locked_at.elapsed());
    std::thread::sleep(left);
    let short = client.put("/dir/short.txt", b"expired lock".to_vec());
    assert!(
        short.is_success(),
        "PUT after the Second-2 lock expired: {short:?}"
    );
}

#[test]
fn a_crash_mid_put_is_cleaned_up_at_the_next_start() {
    let mut server = Server::start();
    let old = Content::new(700, 4 * MIB);
    let put = server.client().send(
        Request::new("PUT", "/crash.bin")
            .pieces(old.pieces(256 * 1024))
            .content_length(old.len),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let before = server.grid();
    assert_eq!(before.shares.len(), 10);

    // A PUT over it that is half sent when the server dies.
    let new = Content::new(701, 32 * MIB);
    let client = server.client();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender_progress = std::sync::Arc::clone(&progress);
    let sender = std::thread::spawn(move || {
        client.exchange(
            Request::new("PUT", "/crash.bin")
                .pieces(new.pieces(64 * 1024))
                .content_length(new.len)
                .throttle(8 * MIB)
                .progress(sender_progress),
            None,
        )
    });
    let started = Instant::now();
    while server.grid().incoming_bytes() < 4 * MIB {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the upload never reached the grid"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.crash_and_restart();
    let exchange = sender.join().expect("sender thread");
    assert!(
        !exchange
            .response
            .as_ref()
            .is_some_and(|r| r.as_ref().is_ok_and(|r| r.is_success())),
        "a PUT cut off by a crash must not succeed: {exchange:?}"
    );
    assert!(progress.load(std::sync::atomic::Ordering::SeqCst) < new.len);

    assert_content(&server.client(), "/crash.bin", &old);
    let settled = support::wait_until(Duration::from_secs(10), || {
        let grid = server.grid();
        grid.incoming.is_empty() && grid.shares == before.shares
    });
    assert!(
        settled,
        "after the restart the grid should hold only the old version's shares: {:?}",
        server.grid()
    );
}
