//! What GNOME's gvfs (and the editors that save through it) need from the
//! server: `getetag` equal to the `ETag` header, a file being uploaded
//! visible once its upload commits, an `Allow` header that tells the
//! truth, and quota figures that mean something.

mod support;

use std::time::{Duration, Instant};

use support::{wait_until, Client, Content, Ending, Request, Response, Server, MIB};

/// The PROPFIND body gvfs sends for a file's information.
const GVFS_PROPFIND: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<D:propfind xmlns:D="DAV:"><D:prop><D:creationdate/><D:displayname/><D:getcontentlength/><D:getcontenttype/><D:getetag/><D:getlastmodified/><D:resourcetype/></D:prop></D:propfind>"#;

fn propfind(client: &Client, path: &str, depth: &str, body: &str) -> Response {
    client.send(
        Request::new("PROPFIND", path)
            .header("Depth", depth)
            .header("Content-Type", "application/xml")
            .body(body.to_owned()),
    )
}

/// The text of every `<prefix:name>` element of an XML answer, in order.
fn element_texts(xml: &str, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&format!(":{name}>")) {
        let open_start = rest[..at]
            .rfind('<')
            .expect("an element opens before its name");
        let after = &rest[at + name.len() + 2..];
        if rest[open_start..].starts_with("</") {
            rest = after;
            continue;
        }
        let end = after.find("</").expect("element closes");
        found.push(after[..end].to_owned());
        rest = &after[end..];
    }
    found
}

fn getetag(client: &Client, path: &str, body: &str) -> String {
    let answer = propfind(client, path, "0", body);
    assert_eq!(answer.status, 207, "PROPFIND {path}: {answer:?}");
    let tags = element_texts(&answer.text(), "getetag");
    assert_eq!(tags.len(), 1, "one getetag for {path}: {}", answer.text());
    tags[0].clone()
}

#[test]
fn getetag_is_the_etag_header_and_saves_with_if_match_succeed() {
    let server = Server::start();
    let client = server.client();
    for (path, size) in [("/small.txt", 100usize), ("/big.bin", 200_000)] {
        let put = client.put(path, vec![b'a'; size]);
        assert!(put.is_success(), "PUT {path}: {put:?}");
        let head = client.send(Request::new("HEAD", path));
        let header = head.header("ETag").expect("ETag header").to_owned();
        assert!(header.starts_with('"') && header.ends_with('"'), "{header}");
        // Named properties (gvfs), allprop and an empty body (RFC 4918 9.1).
        for body in [
            GVFS_PROPFIND,
            r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#,
            "",
        ] {
            assert_eq!(getetag(&client, path, body), header, "body {body:?}");
        }

        // An editor's save: the etag read at open, as If-Match on HEAD then PUT.
        let check = client.send(Request::new("HEAD", path).header("If-Match", &header));
        assert_eq!(check.status, 200, "HEAD If-Match {header}: {check:?}");
        let save = client.send(
            Request::new("PUT", path)
                .header("If-Match", &header)
                .body(vec![b'b'; size]),
        );
        assert!(save.is_success(), "PUT If-Match {header}: {save:?}");
        let new_tag = getetag(&client, path, GVFS_PROPFIND);
        assert_ne!(new_tag, header, "the content changed");

        // The old tag is stale now: 412, and the content stays.
        let stale = client.send(
            Request::new("PUT", path)
                .header("If-Match", &header)
                .body(vec![b'c'; size]),
        );
        assert_eq!(stale.status, 412, "stale If-Match: {stale:?}");
        // An unquoted tag is not an entity tag (RFC 9110 8.8.3): it never
        // matches; the malformed header is refused (400) before anything
        // is written.
        let bare = new_tag.trim_matches('"');
        let unquoted = client.send(
            Request::new("PUT", path)
                .header("If-Match", bare)
                .body(vec![b'd'; size]),
        );
        assert_eq!(unquoted.status, 400, "unquoted If-Match: {unquoted:?}");
        let (got, len, _) = client.get_sha256(path);
        assert_eq!((got.status, len), (200, size as u64));
        assert_eq!(got.header("ETag"), Some(new_tag.as_str()));
    }
}

#[test]
fn folder_etags_are_quoted_too() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.mkcol("/docs/").status, 201);
    assert!(client.put("/docs/a.txt", "a").is_success());
    let answer = propfind(&client, "/", "1", GVFS_PROPFIND);
    assert_eq!(answer.status, 207, "{answer:?}");
    let tags = element_texts(&answer.text(), "getetag");
    assert_eq!(tags.len(), 2, "root and /docs/: {}", answer.text());
    for tag in tags {
        assert!(
            tag.len() > 2 && tag.starts_with('"') && tag.ends_with('"'),
            "{tag}"
        );
    }
}

/// A chunked PUT of a new file at `rate` bytes per second, in a thread;
/// returns once the server has started storing it (shares incoming).
fn slow_put(
    server: &Server,
    path: &str,
    content: &Content,
    rate: u64,
    stop_after: Option<u64>,
    hook: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<Option<Response>> {
    let client = server.client();
    let mut request = Request::new("PUT", path)
        .chunked()
        .pieces(content.pieces(64 * 1024))
        .throttle(rate)
        .before_ending(hook);
    if let Some(limit) = stop_after {
        request = request.stop_after(limit).ending(Ending::Drop);
    }
    let upload = std::thread::spawn(move || {
        client
            .exchange(request, None)
            .response
            .map(|r| r.expect("PUT answer"))
    });
    assert!(
        wait_until(Duration::from_secs(60), || server.grid().incoming_bytes()
            > 0),
        "the upload never reached the grid"
    );
    upload
}

#[test]
fn a_file_being_uploaded_is_answered_once_its_upload_commits() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(17, 4 * MIB);
    let upload = slow_put(&server, "/new.bin", &content, 2 * MIB, None, || {});
    // gvfs's stat right after close(), and a reader: both wait for the commit.
    let reader = std::thread::spawn(move || client.get_sha256("/new.bin"));
    let answer = propfind(&server.client(), "/new.bin", "0", GVFS_PROPFIND);
    assert_eq!(answer.status, 207, "PROPFIND during the upload: {answer:?}");
    assert_eq!(
        element_texts(&answer.text(), "getcontentlength"),
        vec![(4 * MIB).to_string()],
        "{}",
        answer.text()
    );
    let put = upload.join().expect("PUT thread").expect("PUT answered");
    assert_eq!(put.status, 201, "{put:?}");
    let (got, len, sha) = reader.join().expect("GET thread");
    assert_eq!((got.status, len), (200, 4 * MIB), "{got:?}");
    assert_eq!(sha, content.sha256());
}

#[test]
fn a_dropped_upload_is_answered_404_promptly() {
    let server = Server::start();
    let addr = server.addr;
    let content = Content::new(18, 8 * MIB);
    let (sender, receiver) = std::sync::mpsc::channel();
    // Once 2 MiB are sent: a PROPFIND starts and is still waiting a second
    // later (without an upload to wait for it answers in milliseconds);
    // then the client vanishes.
    let hook = move || {
        let started = Instant::now();
        let propfind = std::thread::spawn(move || {
            propfind(&Client::new(addr), "/gone.bin", "0", GVFS_PROPFIND)
        });
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !propfind.is_finished(),
            "PROPFIND did not wait for the upload"
        );
        sender.send((started, propfind)).expect("send");
    };
    let upload = slow_put(&server, "/gone.bin", &content, 4 * MIB, Some(2 * MIB), hook);
    assert!(upload.join().expect("PUT thread").is_none());
    let (started, propfind) = receiver.recv().expect("the hook ran");
    let answer = propfind.join().expect("PROPFIND thread");
    assert_eq!(answer.status, 404, "{answer:?}");
    // Far below the 30 s a request may wait for an upload.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let head = server.client().send(Request::new("HEAD", "/gone.bin"));
    assert_eq!(head.status, 404);
}

#[test]
fn readers_of_an_existing_file_get_the_old_version_during_an_upload() {
    let server = Server::start();
    let client = server.client();
    let old = Content::new(19, MIB);
    assert!(client.put("/doc.bin", old.bytes()).is_success());
    let new = Content::new(20, 4 * MIB);
    // 512 KiB/s: the new version needs 8 s, the old one is served at once.
    let upload = slow_put(&server, "/doc.bin", &new, 512 * 1024, None, || {});
    let (got, len, sha) = client.get_sha256("/doc.bin");
    assert_eq!((got.status, len, sha), (200, MIB, old.sha256()));
    assert!(
        !upload.is_finished(),
        "the old version was served while the new one was still arriving"
    );
    let put = upload.join().expect("PUT thread").expect("PUT answered");
    assert!(put.is_success(), "{put:?}");
    let (_, len, sha) = client.get_sha256("/doc.bin");
    assert_eq!((len, sha), (4 * MIB, new.sha256()));
}

fn allow(client: &Client, path: &str) -> Vec<String> {
    let answer = client.send(Request::new("OPTIONS", path));
    assert_eq!(answer.status, 200, "OPTIONS {path}: {answer:?}");
    let mut methods: Vec<String> = answer
        .header("Allow")
        .unwrap_or_else(|| panic!("OPTIONS {path} without Allow: {answer:?}"))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect();
    methods.sort();
    methods
}

fn sorted(methods: &str) -> Vec<String> {
    let mut methods: Vec<String> = methods.split(',').map(str::to_owned).collect();
    methods.sort();
    methods
}

#[test]
fn allow_lists_what_really_works() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.mkcol("/folder/").status, 201);
    assert!(client.put("/file.txt", "x").is_success());
    let cases = [
        ("/", "OPTIONS,PROPFIND,PROPPATCH,LOCK,UNLOCK"),
        (
            "/folder/",
            "OPTIONS,DELETE,PROPFIND,PROPPATCH,COPY,MOVE,LOCK,UNLOCK",
        ),
        (
            "/file.txt",
            "OPTIONS,GET,HEAD,PUT,PATCH,DELETE,PROPFIND,PROPPATCH,COPY,MOVE,LOCK,UNLOCK",
        ),
        ("/nothing", "OPTIONS,PUT,MKCOL,LOCK"),
    ];
    for (path, expected) in cases {
        assert_eq!(allow(&client, path), sorted(expected), "{path}");
    }

    // What is listed works: PROPPATCH on the folder and on /.
    let proppatch = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:test"><D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"#;
    for path in ["/folder/", "/"] {
        let answer = client.send(Request::new("PROPPATCH", path).body(proppatch));
        assert_eq!(answer.status, 207, "PROPPATCH {path}: {answer:?}");
        assert!(answer.text().contains("200 OK"), "{}", answer.text());
    }
    // What is not listed does not: PUT and MKCOL on / and on the folder,
    // GET of the folder.
    for (method, path) in [
        ("PUT", "/"),
        ("MKCOL", "/"),
        ("PUT", "/folder/"),
        ("MKCOL", "/folder/"),
        ("GET", "/folder/"),
    ] {
        let answer = client.send(Request::new(method, path));
        assert!(
            (400..500).contains(&answer.status),
            "{method} {path}: {answer:?}"
        );
    }
}

const QUOTA_PROPFIND: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>"#;

fn quota(client: &Client, path: &str) -> (u64, u64) {
    let answer = propfind(client, path, "0", QUOTA_PROPFIND);
    assert_eq!(answer.status, 207, "{answer:?}");
    let text = answer.text();
    let number = |name: &str| -> u64 {
        let values = element_texts(&text, name);
        assert_eq!(values.len(), 1, "{name} of {path}: {text}");
        values[0]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
    };
    (number("quota-available-bytes"), number("quota-used-bytes"))
}

#[test]
fn quota_is_the_grids_free_space_over_the_expansion() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(21, 3 * MIB);
    assert!(client.put("/a.bin", content.bytes()).is_success());
    assert!(client.put("/small.txt", "hello").is_success());
    assert_eq!(client.mkcol("/folder/").status, 201);

    // The embedded grid: 10 directories on the data directory's disk, each
    // byte stored as 10 shares of which 3 rebuild it.
    let stat = nix::sys::statvfs::statvfs(&server.data_dir().join("grid")).expect("statvfs");
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let expected = free * 3 / 10;
    let (available, used) = quota(&client, "/");
    assert_eq!(used, 3 * MIB + 5, "bytes stored");
    // Other processes write to the same disk meanwhile: 2% of slack.
    let slack = expected / 50 + MIB;
    assert!(
        available.abs_diff(expected) <= slack,
        "available {available}, statvfs says {free} free, so about {expected}"
    );
    // A folder shows the same free space (what Files shows for it).
    let (folder_available, folder_used) = quota(&client, "/folder/");
    assert_eq!(folder_used, used);
    assert!(folder_available.abs_diff(available) <= slack);
}
