//! The request sequences of clients that do not run on Linux, header for
//! header: macOS Finder, Windows Explorer (Mini-Redirector), Microsoft
//! Office; and the ETag rules davfs2 and Office rely on.

mod support;

use std::time::{Duration, Instant};

use support::{Client, Content, Request, Response, Server};

const FINDER: &str = "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)";
const MINIREDIR: &str = "Microsoft-WebDAV-MiniRedir/10.0.19045";
const OFFICE: &str = "Microsoft Office Word 2014";

fn lock_body(owner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8" ?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>{owner}</D:href></D:owner></D:lockinfo>"#
    )
}

/// LOCK as the given client sends it; returns the answer and the token.
fn lock(client: &Client, path: &str, agent: &str, timeout: &str) -> (Response, String) {
    let response = client.send(
        Request::new("LOCK", path)
            .header("User-Agent", agent)
            .header("Content-Type", "text/xml; charset=\"utf-8\"")
            .header("Depth", "0")
            .header("Timeout", timeout)
            .body(lock_body(agent)),
    );
    assert!(
        response.status == 200 || response.status == 201,
        "LOCK {path}: {response:?}"
    );
    let token = response
        .header("Lock-Token")
        .unwrap_or_else(|| panic!("LOCK {path} without Lock-Token: {response:?}"))
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    (response, token)
}

fn propfind(client: &Client, path: &str, agent: &str, depth: &str, body: &str) -> Response {
    client.send(
        Request::new("PROPFIND", path)
            .header("User-Agent", agent)
            .header("Depth", depth)
            .header("Content-Type", "text/xml; charset=\"utf-8\"")
            .body(body.to_owned()),
    )
}

const FINDER_PROPFIND: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop xmlns:A="http://www.apple.com/webdav_fs/props/"><D:getlastmodified/><D:getcontentlength/><D:creationdate/><D:resourcetype/><A:appledoubleheader/></D:prop></D:propfind>"#;

#[test]
fn finder_locks_uploads_chunked_and_reads_its_own_locked_file() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.mkcol("/Finder/").status, 201);
    let content = Content::new(40, 3 * 1024 * 1024 + 17);

    let (created, token) = lock(&client, "/Finder/report.pdf", FINDER, "Second-600");
    assert_eq!(created.status, 201, "LOCK of a new path creates it");
    let put = client.send(
        Request::new("PUT", "/Finder/report.pdf")
            .header("User-Agent", FINDER)
            .header("Content-Type", "application/octet-stream")
            .header("X-Expected-Entity-Length", &content.len.to_string())
            .header("If", &format!("(<{token}>)"))
            .pieces(content.pieces(65536))
            .chunked(),
    );
    assert!(
        put.is_success(),
        "chunked PUT with X-Expected-Entity-Length: {put:?}"
    );

    let props = propfind(&client, "/Finder/report.pdf", FINDER, "0", FINDER_PROPFIND);
    assert_eq!(props.status, 207, "{props:?}");
    let text = props.text();
    assert!(
        text.contains(&format!(
            "<D:getcontentlength>{}</D:getcontentlength>",
            content.len
        )),
        "{text}"
    );
    // The AppleDouble header property does not exist: reported, as 404.
    assert!(
        text.contains("appledoubleheader") && text.contains("404"),
        "{text}"
    );

    let get = client.send(Request::new("GET", "/Finder/report.pdf").header("User-Agent", FINDER));
    assert_eq!(get.status, 200);
    assert!(
        get.body == content.bytes(),
        "GET of the locked file returns its bytes"
    );
    let range = client.send(
        Request::new("GET", "/Finder/report.pdf")
            .header("User-Agent", FINDER)
            .header("Range", "bytes=1048576-1081343"),
    );
    assert_eq!(range.status, 206);
    assert!(range.body == content.slice(1_048_576, 1_081_344));

    let unlock = client.send(
        Request::new("UNLOCK", "/Finder/report.pdf")
            .header("User-Agent", FINDER)
            .header("Lock-Token", &format!("<{token}>")),
    );
    assert_eq!(unlock.status, 204);
}

#[test]
fn finder_storm_of_appledouble_and_ds_store_files() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.mkcol("/Photos/").status, 201);
    let appledouble = Content::new(41, 4096).bytes();
    let started = Instant::now();
    let mut requests = 0;
    for i in 0..250 {
        let path = format!("/Photos/._IMG_{i:04}.JPG");
        let put = client.send(
            Request::new("PUT", &path)
                .header("User-Agent", FINDER)
                .header("X-Expected-Entity-Length", "4096")
                .body(appledouble.clone())
                .chunked(),
        );
        assert_eq!(put.status, 201, "PUT {path}: {put:?}");
        let found = propfind(&client, &path, FINDER, "0", FINDER_PROPFIND);
        assert_eq!(found.status, 207, "PROPFIND {path}");
        let probe = if i % 2 == 0 {
            "/Photos/.localized"
        } else {
            "/Photos/.ql_disablethumbnails"
        };
        assert_eq!(
            propfind(&client, probe, FINDER, "0", FINDER_PROPFIND).status,
            404
        );
        let ds_store = client.send(
            Request::new("PUT", "/Photos/.DS_Store")
                .header("User-Agent", FINDER)
                .body(Content::new(i, 6148).bytes()),
        );
        assert!(ds_store.is_success(), "PUT .DS_Store: {ds_store:?}");
        requests += 4;
    }
    for i in 0..250 {
        let path = format!("/Photos/._IMG_{i:04}.JPG");
        let delete = client.send(Request::new("DELETE", &path).header("User-Agent", FINDER));
        assert_eq!(delete.status, 204, "DELETE {path}");
        requests += 1;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "finder storm: {requests} requests in {:.2} s = {:.0} requests/s",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    // Small files live in the namespace, not in the grid.
    assert_eq!(server.grid().file_count(), 0);
    assert_eq!(
        client.get("/Photos/.DS_Store").body,
        Content::new(249, 6148).bytes()
    );
    assert_eq!(client.get("/Photos/._IMG_0007.JPG").status, 404);
}

const WIN32_PROPPATCH: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Wed, 25 Nov 2026 10:00:00 GMT</Z:Win32CreationTime><Z:Win32LastAccessTime>Wed, 25 Nov 2026 10:00:01 GMT</Z:Win32LastAccessTime><Z:Win32LastModifiedTime>Wed, 25 Nov 2026 10:00:02 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;

#[test]
fn windows_explorer_creates_a_file() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(42, 700_000);

    let empty = client.send(
        Request::new("PUT", "/Notes.txt")
            .header("User-Agent", MINIREDIR)
            .header("Translate", "f")
            .body(Vec::new()),
    );
    assert_eq!(empty.status, 201, "PUT of 0 bytes: {empty:?}");
    let (locked, token) = lock(&client, "/Notes.txt", MINIREDIR, "Second-3600");
    assert_eq!(locked.status, 200);
    // RFC 4918 10.7 lets the server grant a shorter timeout; it must say which.
    assert!(
        locked.text().contains("<D:timeout>Second-"),
        "granted timeout: {}",
        locked.text()
    );

    let patched = client.send(
        Request::new("PROPPATCH", "/Notes.txt")
            .header("User-Agent", MINIREDIR)
            .header("Content-Type", "text/xml; charset=\"utf-8\"")
            .header("If", &format!("(<{token}>)"))
            .body(WIN32_PROPPATCH),
    );
    assert_eq!(patched.status, 207, "{patched:?}");
    let text = patched.text();
    assert!(
        !text.contains("403") && !text.contains("424") && !text.contains("501"),
        "{text}"
    );

    let without_token = client.send(
        Request::new("PUT", "/Notes.txt")
            .header("User-Agent", MINIREDIR)
            .body(b"intruder".to_vec()),
    );
    assert_eq!(without_token.status, 423);
    let put = client.send(
        Request::new("PUT", "/Notes.txt")
            .header("User-Agent", MINIREDIR)
            .header("If", &format!("(<{token}>)"))
            .body(content.bytes()),
    );
    assert_eq!(put.status, 204, "PUT with the token: {put:?}");
    let unlock = client.send(
        Request::new("UNLOCK", "/Notes.txt")
            .header("User-Agent", MINIREDIR)
            .header("Lock-Token", &format!("<{token}>")),
    );
    assert_eq!(unlock.status, 204);

    let listing = propfind(
        &client,
        "/",
        MINIREDIR,
        "1",
        r#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/><D:resourcetype/><D:getlastmodified/></D:prop></D:propfind>"#,
    );
    assert_eq!(listing.status, 207);
    assert!(listing.text().contains("/Notes.txt"), "{}", listing.text());
    assert!(
        listing.text().contains(&format!(">{}<", content.len)),
        "{}",
        listing.text()
    );
    let props = propfind(
        &client,
        "/Notes.txt",
        MINIREDIR,
        "0",
        r#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:prop><Z:Win32FileAttributes/><Z:Win32CreationTime/></D:prop></D:propfind>"#,
    );
    assert!(props.text().contains("00000020"), "{}", props.text());
    assert!(client.get("/Notes.txt").body == content.bytes());
}

#[test]
fn office_saves_by_moving_a_temporary_file_over_its_locked_original() {
    let server = Server::start();
    let client = server.client();
    let options = client.send(Request::new("OPTIONS", "/").header("User-Agent", OFFICE));
    assert_eq!(options.status, 200);
    assert_eq!(options.header("MS-Author-Via"), Some("DAV"));
    let dav = options.header("DAV").unwrap_or_default().replace(' ', "");
    assert!(dav.starts_with("1,2"), "DAV: {dav}");

    assert_eq!(client.mkcol("/Shared/").status, 201);
    let v1 = Content::new(43, 900_000);
    let v2 = Content::new(44, 950_000);
    assert_eq!(client.put("/Shared/Budget.docx", v1.bytes()).status, 201);

    let (_, token) = lock(&client, "/Shared/Budget.docx", OFFICE, "Second-3");
    let url = format!("http://{}/Shared/Budget.docx", client.addr);
    let tagged = format!("<{url}> (<{token}>)");

    // Someone else cannot write while the lock holds.
    let other = client.send(Request::new("PUT", "/Shared/Budget.docx").body(b"other".to_vec()));
    assert_eq!(other.status, 423);

    let owner_file = client.send(
        Request::new("PUT", "/Shared/~$Budget.docx")
            .header("User-Agent", OFFICE)
            .body(Content::new(45, 162).bytes()),
    );
    assert_eq!(owner_file.status, 201);
    let temp = client.send(
        Request::new("PUT", "/Shared/~WRL0001.tmp")
            .header("User-Agent", OFFICE)
            .body(v2.bytes()),
    );
    assert_eq!(temp.status, 201);
    let moved = client.send(
        Request::new("MOVE", "/Shared/~WRL0001.tmp")
            .header("User-Agent", OFFICE)
            .header("Destination", &url)
            .header("Overwrite", "T")
            .header("If", &tagged),
    );
    assert!(
        moved.is_success(),
        "MOVE over the locked original by its owner: {moved:?}"
    );
    assert!(client.get("/Shared/Budget.docx").body == v2.bytes());
    assert_eq!(client.delete("/Shared/~$Budget.docx").status, 204);

    // Office does not always UNLOCK: the lock must run out by itself.
    let (_, token) = lock(&client, "/Shared/Budget.docx", OFFICE, "Second-2");
    let blocked = client.send(Request::new("PUT", "/Shared/Budget.docx").body(b"late".to_vec()));
    assert_eq!(blocked.status, 423, "lock {token} holds");
    std::thread::sleep(Duration::from_millis(3200));
    let after = client.send(Request::new("PUT", "/Shared/Budget.docx").body(b"late".to_vec()));
    assert!(after.is_success(), "after the lock's timeout: {after:?}");
    assert_eq!(client.get("/Shared/Budget.docx").body, b"late");
}

#[test]
fn etags_follow_content_and_if_match_guards_puts() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(46, 300_000);
    assert_eq!(client.put("/doc.bin", content.bytes()).status, 201);
    let etag = |client: &Client| -> String {
        let head = client.send(Request::new("HEAD", "/doc.bin"));
        assert_eq!(head.status, 200);
        head.header("ETag").expect("ETag on HEAD").to_owned()
    };
    let first = etag(&client);
    let (_, token) = lock(
        &client,
        "/doc.bin",
        "davfs2/1.6.1 neon/0.32.5",
        "Second-600",
    );
    assert_eq!(etag(&client), first, "LOCK does not change the ETag");
    let propfind_etag = propfind(
        &client,
        "/doc.bin",
        "davfs2/1.6.1",
        "0",
        r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>"#,
    );
    assert!(
        propfind_etag.text().contains(first.trim_matches('"')),
        "{}",
        propfind_etag.text()
    );

    // davfs2 uploads with the ETag it saw.
    let put = client.send(
        Request::new("PUT", "/doc.bin")
            .header("If", &format!("(<{token}>)"))
            .header("If-Match", &first)
            .body(Content::new(47, 300_000).bytes()),
    );
    assert_eq!(put.status, 204, "{put:?}");
    let second = etag(&client);
    assert_ne!(second, first, "new content, new ETag");

    let stale = client.send(
        Request::new("PUT", "/doc.bin")
            .header("If", &format!("(<{token}>)"))
            .header("If-Match", &first)
            .body(b"stale writer".to_vec()),
    );
    assert_eq!(stale.status, 412);
    assert_eq!(etag(&client), second, "a refused PUT changes nothing");
    assert!(client.get("/doc.bin").body == Content::new(47, 300_000).bytes());
}
