//! PUT and GET of a large file through the real server, and Range GETs.

mod support;

use support::{Content, Request, Server, MIB};

#[test]
fn put_get_100_mib_round_trip_and_range() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(0x100, 100 * MIB);
    let expected = content.sha256();

    let put = client.send(
        Request::new("PUT", "/big.bin")
            .pieces(content.pieces(256 * 1024))
            .content_length(content.len),
    );
    assert_eq!(put.status, 201, "PUT of a new file: {put:?}");

    let (get, len, sha) = client.get_sha256("/big.bin");
    assert_eq!(get.status, 200, "GET: {get:?}");
    assert_eq!(len, content.len, "GET body length");
    assert_eq!(sha, expected, "SHA-256 of GET body vs. what was sent");

    // A range in the middle, across segment boundaries (segments are 1 MiB).
    let (start, end) = (50 * MIB - 12_345, 53 * MIB + 777);
    let range = client.send(
        Request::new("GET", "/big.bin").header("Range", &format!("bytes={start}-{}", end - 1)),
    );
    assert_eq!(range.status, 206, "Range GET: {:?}", range.headers);
    assert_eq!(
        range.header("Content-Range"),
        Some(format!("bytes {start}-{}/{}", end - 1, content.len).as_str())
    );
    assert_eq!(range.body.len() as u64, end - start, "Range GET length");
    assert!(
        range.body == content.slice(start, end),
        "Range GET bytes differ from that slice of the content"
    );

    // The last bytes, by suffix range.
    let tail = client.send(Request::new("GET", "/big.bin").header("Range", "bytes=-1000"));
    assert_eq!(tail.status, 206, "suffix Range GET: {:?}", tail.headers);
    assert!(
        tail.body == content.slice(content.len - 1000, content.len),
        "suffix Range GET differs"
    );

    // The grid holds exactly one version: 10 finished shares, nothing incoming.
    let grid = server.grid();
    assert_eq!(
        grid.shares.len(),
        10,
        "share files: {:?}",
        grid.shares.keys()
    );
    assert!(grid.incoming.is_empty(), "incoming: {:?}", grid.incoming);
    assert!(
        grid.share_bytes() >= content.len * 10 / 3,
        "10 shares of a 3-of-10 code hold at least 10/3 of the file: {} bytes",
        grid.share_bytes()
    );
}

#[test]
fn small_file_is_inline_and_chunked_put_round_trips() {
    let server = Server::start();
    let client = server.client();

    let small = Content::new(7, 4096).bytes();
    let put = client.put("/small.txt", small.clone());
    assert_eq!(put.status, 201, "{put:?}");
    let get = client.get("/small.txt");
    assert_eq!(get.status, 200);
    assert!(get.body == small, "small file differs");
    let grid = server.grid();
    assert_eq!(
        grid.file_count(),
        0,
        "a 4096-byte file must stay inline: {grid:?}"
    );

    // Chunked body with Finder's X-Expected-Entity-Length, bigger than inline.
    let content = Content::new(8, 5 * MIB + 3);
    let put = client.send(
        Request::new("PUT", "/chunked.bin")
            .header("X-Expected-Entity-Length", &content.len.to_string())
            .pieces(content.pieces(100_000))
            .chunked(),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let (get, len, sha) = client.get_sha256("/chunked.bin");
    assert_eq!(get.status, 200);
    assert_eq!(len, content.len);
    assert_eq!(sha, content.sha256());

    // Chunked without any declared length.
    let content = Content::new(9, 2 * MIB + 5);
    let put = client.send(
        Request::new("PUT", "/chunked2.bin")
            .pieces(content.pieces(65_536))
            .chunked(),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let (_, len, sha) = client.get_sha256("/chunked2.bin");
    assert_eq!(len, content.len);
    assert_eq!(sha, content.sha256());
    assert_eq!(
        server.grid().shares.len(),
        20,
        "two grid files, 10 shares each"
    );
}
