//! The status a client gets follows whose fault a storage failure is: the
//! grid not answering now is 503 with Retry-After (try again later); data
//! that fails verification on every server is 500 (retrying cannot help).

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::{Content, Request, Server, MIB};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Once a sync of the namespace's log has failed, nothing can be made
/// durable until griddav restarts (`namespace/durable.rs`). Every request
/// is then answered 503 saying so: before, dav-server made the lock check
/// that failed a 423 Locked (MKCOL, PUT, LOCK) and the rest bare 500s.
#[test]
fn a_namespace_log_that_cannot_sync_answers_503_until_a_restart() {
    let mut server = Server::start();
    let client = server.client();
    assert_eq!(client.mkcol("/before").status, 201);
    server.break_namespace_log();
    let first = client.mkcol("/a");
    assert_eq!(first.status, 500, "the change whose sync failed: {first:?}");
    for (method, path) in [
        ("MKCOL", "/b"),
        ("PUT", "/file"),
        ("LOCK", "/before"),
        ("PROPFIND", "/"),
        ("GET", "/before"),
        ("DELETE", "/before"),
        ("OPTIONS", "/"),
    ] {
        let answer = client.send(Request::new(method, path));
        assert_eq!(answer.status, 503, "{method} {path}: {answer:?}");
        assert!(
            answer.text().contains("restart griddav"),
            "{method} {path}: {}",
            answer.text()
        );
    }
    // A restart recovers from what is on disk and serves again.
    server.restart();
    let client = server.client();
    assert_eq!(client.mkcol("/after").status, 201);
}

#[test]
fn a_file_corrupt_on_every_server_is_500_not_503() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(3, 2 * MIB);
    let put = client.put("/file.bin", content.bytes());
    assert_eq!(put.status, 201, "{put:?}");

    let mut shares = Vec::new();
    for dir in server.share_dirs() {
        files_under(&dir, &mut shares);
    }
    assert_eq!(shares.len(), 10, "one share per server: {shares:?}");
    for share in &shares {
        let mut bytes = fs::read(share).expect("read share");
        // Inside block 0 (the header is 20 bytes): its hash check fails.
        for b in &mut bytes[100..200] {
            *b ^= 0x5a;
        }
        fs::write(share, bytes).expect("write share");
    }
    let get = client.get("/file.bin");
    assert_eq!(get.status, 500, "corrupt everywhere: {get:?}");
    assert!(get.header("retry-after").is_none(), "{get:?}");
}

#[test]
fn an_upload_the_grid_cannot_take_is_503_with_retry_after() {
    let server = Server::start();
    let client = server.client();
    // Eight of ten servers cannot store anything (happy = 7).
    for dir in server.share_dirs().into_iter().take(8) {
        if dir.exists() {
            fs::rename(&dir, dir.with_extension("away")).expect("move shares away");
        }
        fs::write(&dir, b"not a directory").expect("block the shares dir");
    }
    let content = Content::new(4, 2 * MIB);
    let put = client.put("/file.bin", content.bytes());
    assert_eq!(put.status, 503, "grid down: {put:?}");
    assert_eq!(put.header("retry-after"), Some("30"), "{put:?}");
    assert_eq!(client.get("/file.bin").status, 404);
}
