//! Requests griddav refuses before dav-server sees them (src/http/guard.rs),
//! each answered with its status and leaving the tree exactly as it was:
//! root deletion in every spelling, malformed conditional headers (which
//! panicked dav-server), bad escapes and control characters in names,
//! trailing slashes on files, COPY into itself, Destinations elsewhere,
//! bad Overwrite values, Depth: infinity, and NFC/NFD names.

mod support;

use std::collections::BTreeMap;

use support::{Client, Content, Request, Response, Server};

/// Every href under `/` with, for files, the SHA-256 of their content:
/// PROPFIND Depth 1, collection by collection.
fn snapshot(client: &Client) -> BTreeMap<String, Option<String>> {
    let mut tree = BTreeMap::new();
    let mut pending = vec!["/".to_string()];
    while let Some(dir) = pending.pop() {
        let response = client.send(Request::new("PROPFIND", &dir).header("Depth", "1"));
        assert_eq!(response.status, 207, "PROPFIND {dir}: {response:?}");
        for href in hrefs(&response.text()) {
            if tree.contains_key(&href) {
                continue;
            }
            if href.ends_with('/') {
                if href != dir {
                    pending.push(href.clone());
                }
                tree.insert(href, None);
            } else {
                let (get, _, sha) = client.get_sha256(&href);
                assert_eq!(get.status, 200, "GET {href}");
                tree.insert(href, Some(sha));
            }
        }
    }
    tree
}

/// The text of every `href` element.
fn hrefs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in xml.match_indices("href>") {
        let open = xml[..at]
            .rfind('<')
            .expect("an element starts before 'href>'");
        if xml[open..].starts_with("</") {
            continue;
        }
        let text = &xml[at + "href>".len()..];
        let end = text.find('<').expect("an href element ends");
        out.push(text[..end].trim().to_string());
    }
    out
}

/// A small tree: two inline files, one in the grid, a folder in a folder.
fn populate(client: &Client) -> BTreeMap<String, Option<String>> {
    assert_eq!(client.put("/a.txt", "alpha").status, 201);
    assert_eq!(client.mkcol("/d/").status, 201);
    assert_eq!(client.put("/d/b.txt", "beta").status, 201);
    assert_eq!(client.mkcol("/d/e/").status, 201);
    let big = Content::new(9, 100_000);
    assert_eq!(client.put("/d/e/big.bin", big.bytes()).status, 201);
    let tree = snapshot(client);
    assert_eq!(tree.len(), 6, "{tree:?}");
    tree
}

fn send(client: &Client, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = Request::new(method, path);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    client.send(request)
}

fn url(client: &Client, path: &str) -> String {
    format!("http://{}{path}", client.addr)
}

#[test]
fn the_root_is_never_deleted_or_moved() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);

    let absolute = url(&client, "/");
    let spellings = [
        "/",
        "//",
        "/./",
        "/%2e/",
        "/%2E",
        "/d/..",
        "/d/../",
        "/d/e/%2e%2e/..",
        absolute.as_str(),
    ];
    for spelling in spellings {
        for depth in [None, Some("0"), Some("1"), Some("infinity")] {
            let mut headers = Vec::new();
            if let Some(depth) = depth {
                headers.push(("Depth", depth));
            }
            let delete = send(&client, "DELETE", spelling, &headers);
            assert_eq!(delete.status, 403, "DELETE {spelling} Depth {depth:?}");
            headers.push(("Destination", "/moved/"));
            let r#move = send(&client, "MOVE", spelling, &headers);
            assert_eq!(r#move.status, 403, "MOVE {spelling} Depth {depth:?}");
        }
    }
    // Not names at all.
    for bad in ["/%2F", "/..", "/d/../.."] {
        assert_eq!(
            send(&client, "DELETE", bad, &[]).status,
            400,
            "DELETE {bad}"
        );
    }
    // The root as a Destination: with Overwrite: T dav-server would empty it first.
    for (method, from) in [
        ("COPY", "/d/"),
        ("MOVE", "/d/"),
        ("COPY", "/a.txt"),
        ("MOVE", "/a.txt"),
    ] {
        for dest in ["/", "/d/..", absolute.as_str()] {
            let response = send(
                &client,
                method,
                from,
                &[("Destination", dest), ("Overwrite", "T")],
            );
            assert_eq!(response.status, 403, "{method} {from} to {dest}");
        }
    }
    assert_eq!(snapshot(&client), tree);
    assert_eq!(
        server.grid().shares.len(),
        10,
        "the big file's shares are all there"
    );
}

#[test]
fn malformed_conditional_headers_answer_400_not_a_panic() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);
    let cases: &[(&str, &str, &str, &str)] = &[
        ("GET", "/a.txt", "If-Match", "\""),
        ("PUT", "/a.txt", "If-Match", "\""),
        ("PUT", "/a.txt", "If-None-Match", "\""),
        ("DELETE", "/a.txt", "If-Match", "W/\""),
        ("DELETE", "/a.txt", "If", "<"),
        ("DELETE", "/a.txt", "If", "(<"),
        ("DELETE", "/a.txt", "If", "([x)"),
        ("DELETE", "/a.txt", "If", "([\"x)"),
        ("DELETE", "/a.txt", "If", "(<urn:x"),
        ("PUT", "/a.txt", "If", "(Not)"),
        ("GET", "/d/e/big.bin", "If-Range", "\""),
        ("UNLOCK", "/a.txt", "Lock-Token", "<"),
        ("LOCK", "/a.txt", "Timeout", "Second-"),
        ("DELETE", "/d/", "Depth", "2"),
        ("COPY", "/a.txt", "Destination", "::"),
        ("PROPFIND", "/", "Depth", "infinite"),
    ];
    for &(method, path, name, value) in cases {
        let mut request = Request::new(method, path)
            .header(name, value)
            .header("Range", "bytes=0-1");
        if method == "PUT" {
            request = request.body("overwritten");
        }
        let response = client.send(request);
        assert_eq!(response.status, 400, "{method} {path} with {name}: {value}");
    }
    assert_eq!(snapshot(&client), tree);
    assert!(
        !server.log_tail().contains("panicked"),
        "{}",
        server.log_tail()
    );

    // Well-formed conditions still work: a false one fails, a true one passes.
    let put = |headers: &[(&str, &str)]| {
        let mut request = Request::new("PUT", "/a.txt").body("changed");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        client.send(request).status
    };
    assert_eq!(put(&[("If", "(<DAV:no-lock>)")]), 412);
    assert_eq!(put(&[("If-Match", "\"not-the-etag\"")]), 412);
    assert_eq!(put(&[("If", "(Not <DAV:no-lock>)")]), 204);
    assert_eq!(client.get("/a.txt").text(), "changed");
}

#[test]
fn depth_infinity_is_refused_for_every_client() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);
    for litmus in [false, true] {
        let mut request = Request::new("PROPFIND", "/").header("Depth", "infinity");
        if litmus {
            request = request.header("X-Litmus", "props: 1 (propfind_d0)");
        }
        let response = client.send(request);
        assert_eq!(response.status, 403, "X-Litmus: {litmus}");
        assert!(
            response.text().contains("propfind-finite-depth"),
            "{}",
            response.text()
        );
    }
    assert_eq!(snapshot(&client), tree);
}

#[test]
fn bad_escapes_and_control_characters_in_names_answer_400() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);
    let names = [
        "/%ff%fe", "/%c0%af", "/%zz", "/a%zzb", "/a%", "/a%4", "/a%0Ab", "/a%0Db", "/a%09b",
        "/a%7Fb", "/a%01b", "/a%00b", "/d/%ff/x",
    ];
    for name in names {
        assert_eq!(client.put(name, "x").status, 400, "PUT {name}");
        assert_eq!(client.mkcol(name).status, 400, "MKCOL {name}");
        assert_eq!(client.get(name).status, 400, "GET {name}");
        for method in ["COPY", "MOVE"] {
            let response = send(&client, method, "/a.txt", &[("Destination", name)]);
            assert_eq!(response.status, 400, "{method} to {name}");
            let dest = url(&client, name);
            let response = send(&client, method, "/a.txt", &[("Destination", &dest)]);
            assert_eq!(response.status, 400, "{method} to {dest}");
        }
    }
    assert_eq!(snapshot(&client), tree);
}

#[test]
fn a_trailing_slash_on_a_file_names_nothing() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);
    for method in [
        "GET",
        "HEAD",
        "PROPFIND",
        "DELETE",
        "PROPPATCH",
        "LOCK",
        "UNLOCK",
    ] {
        for path in ["/a.txt/", "/d/e/big.bin/"] {
            let response = client.send(Request::new(method, path));
            assert_eq!(response.status, 404, "{method} {path}");
        }
    }
    assert_eq!(client.put("/a.txt/", "changed").status, 409);
    assert_eq!(client.put("/new.txt/", "new").status, 409);
    assert_eq!(client.send(Request::new("LOCK", "/new.txt/")).status, 409);
    let copy = send(&client, "COPY", "/a.txt/", &[("Destination", "/z.txt")]);
    assert_eq!(copy.status, 404, "COPY from a file's collection URL");
    // MKCOL keeps dav-server's answer: something is there already.
    assert_eq!(client.mkcol("/a.txt/").status, 405);
    // Collections keep their slash.
    let propfind = client.send(Request::new("PROPFIND", "/d/").header("Depth", "0"));
    assert_eq!(propfind.status, 207);
    assert_eq!(snapshot(&client), tree);
}

#[test]
fn a_folder_is_never_copied_or_moved_into_itself() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);
    for method in ["COPY", "MOVE"] {
        for (from, to) in [
            ("/d/", "/d/sub/"),
            ("/d", "/d/e/f"),
            ("/d/", "/d/e/"),
            ("/d/e/", "/d/"),
            ("/d/e/big.bin", "/d"),
        ] {
            for overwrite in ["T", "F"] {
                let dest = url(&client, to);
                let response = send(
                    &client,
                    method,
                    from,
                    &[("Destination", &dest), ("Overwrite", overwrite)],
                );
                assert_eq!(
                    response.status, 403,
                    "{method} {from} to {to}, Overwrite {overwrite}"
                );
            }
        }
    }
    assert_eq!(snapshot(&client), tree);
}

#[test]
fn a_destination_on_another_host_or_port_is_502() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);
    let port = client.addr.port();
    let others = [
        format!("http://127.0.0.1:{}/c.txt", port.wrapping_add(1)),
        format!("http://127.0.0.2:{port}/c.txt"),
        format!("http://localhost:{port}/c.txt"),
        "http://127.0.0.1/c.txt".to_string(),
    ];
    for method in ["COPY", "MOVE"] {
        for dest in &others {
            let response = send(&client, method, "/a.txt", &[("Destination", dest)]);
            assert_eq!(response.status, 502, "{method} to {dest}");
        }
    }
    assert_eq!(snapshot(&client), tree);
    // The same server, named as the client named it, or a plain path.
    let here = url(&client, "/c.txt");
    assert_eq!(
        send(&client, "COPY", "/a.txt", &[("Destination", &here)]).status,
        201
    );
    assert_eq!(
        send(&client, "COPY", "/a.txt", &[("Destination", "/c2.txt")]).status,
        201
    );
    assert_eq!(client.get("/c2.txt").text(), "alpha");
}

#[test]
fn overwrite_other_than_t_or_f_is_400() {
    let server = Server::start();
    let client = server.client();
    let tree = populate(&client);
    for method in ["COPY", "MOVE"] {
        for overwrite in ["x", "t", "f", "yes", "TRUE", ""] {
            let response = send(
                &client,
                method,
                "/a.txt",
                &[("Destination", "/d/b.txt"), ("Overwrite", overwrite)],
            );
            assert_eq!(
                response.status, 400,
                "{method} with Overwrite: {overwrite:?}"
            );
        }
    }
    assert_eq!(snapshot(&client), tree);
    assert_eq!(client.get("/d/b.txt").text(), "beta");
}

#[test]
fn nfc_and_nfd_spellings_name_one_file() {
    let server = Server::start();
    let client = server.client();
    // "café" precomposed (NFC, as Windows sends it) and decomposed (NFD, as macOS does).
    let nfc = "/caf%C3%A9.txt";
    let nfd = "/cafe%CC%81.txt";
    assert_eq!(client.put(nfd, "from a Mac").status, 201);
    assert_eq!(client.put(nfc, "from Windows").status, 204, "the same file");
    assert_eq!(client.get(nfd).text(), "from Windows");
    assert_eq!(client.mkcol("/Re%CC%81sume%CC%81/").status, 201);
    assert_eq!(
        client.mkcol("/R%C3%A9sum%C3%A9/").status,
        405,
        "the same folder"
    );
    let copy = send(
        &client,
        "COPY",
        nfc,
        &[("Destination", "/Re%CC%81sume%CC%81/x.txt")],
    );
    assert_eq!(copy.status, 201);
    assert_eq!(client.get("/R%C3%A9sum%C3%A9/x.txt").text(), "from Windows");
    let tree = snapshot(&client);
    // Hex digits in either case are the same href.
    let mut names: Vec<String> = tree.keys().map(|href| href.to_ascii_lowercase()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "/",
            "/caf%c3%a9.txt",
            "/r%c3%a9sum%c3%a9/",
            "/r%c3%a9sum%c3%a9/x.txt"
        ],
        "answers name files in NFC"
    );
}
