//! Users and TLS against the real server (src/auth, src/http/guard.rs,
//! src/http/roots.rs, src/http/tls.rs): Basic on every method, read-only
//! users, per-user roots that no spelling of a path, Destination, If: tag
//! or href gets out of, locks owned by their user, the cache of good
//! checks, the slowdown of repeated failures, HTTPS with keep-alive and a
//! kept self-signed certificate, and the refusal of an insecure listen.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::http::read_response;
use support::{Client, Request, Response, Server};

const LOCKINFO: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
    <D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope>\
    <D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>";

/// PHC strings of the test passwords, made once (each costs an argon2 run).
fn hash(password: &str) -> String {
    static HASHES: OnceLock<std::sync::Mutex<Vec<(String, String)>>> = OnceLock::new();
    let hashes = HASHES.get_or_init(Default::default);
    let mut hashes = hashes.lock().unwrap();
    if let Some((_, phc)) = hashes.iter().find(|(p, _)| p == password) {
        return phc.clone();
    }
    let phc = griddav::auth::hash_password(password).unwrap();
    hashes.push((password.to_owned(), phc.clone()));
    phc
}

/// alice in /home/alice, bob in /home/bob, carol read-only over all,
/// root over all.
fn users_config() -> String {
    format!(
        "[[users]]\nname = \"alice\"\npassword_hash = \"{}\"\nroot = \"/home/alice\"\n\
         [[users]]\nname = \"bob\"\npassword_hash = \"{}\"\nroot = \"/home/bob\"\n\
         [[users]]\nname = \"carol\"\npassword_hash = \"{}\"\nread_only = true\n\
         [[users]]\nname = \"root\"\npassword_hash = \"{}\"\n",
        hash("alice-pw"),
        hash("bob-pw"),
        hash("carol-pw"),
        hash("root-pw"),
    )
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn password_of(user: &str) -> String {
    format!("{user}-pw")
}

/// `request` as `user`.
fn as_user(user: &str, request: Request) -> Request {
    request.header("Authorization", &basic(user, &password_of(user)))
}

fn send_as(client: &Client, user: &str, request: Request) -> Response {
    client.send(as_user(user, request))
}

fn hrefs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in xml.match_indices("href>") {
        let open = xml[..at].rfind('<').unwrap();
        if xml[open..].starts_with("</") {
            continue;
        }
        let text = &xml[at + "href>".len()..];
        let end = text.find('<').unwrap();
        out.push(text[..end].trim().to_string());
    }
    out
}

fn propfind(client: &Client, user: &str, path: &str) -> Response {
    send_as(
        client,
        user,
        Request::new("PROPFIND", path).header("Depth", "1"),
    )
}

#[test]
fn every_method_needs_a_password() {
    let server = Server::start_with_config(&users_config());
    let client = server.client();
    assert_eq!(
        send_as(&client, "root", Request::new("PUT", "/f").body("x")).status,
        201
    );
    let methods = [
        "GET",
        "HEAD",
        "PUT",
        "DELETE",
        "MKCOL",
        "PROPFIND",
        "PROPPATCH",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "OPTIONS",
        "PATCH",
    ];
    for (i, method) in methods.into_iter().enumerate() {
        for authorization in [
            None,
            Some(basic("alice", "wrong")),
            Some(basic("nobody", "alice-pw")),
            Some("Bearer alice-pw".to_owned()),
        ] {
            // A source address per method: more than 10 failures from one
            // would be answered 429 (see the test below).
            let source = [127, 0, 1, u8::try_from(i).unwrap() + 1];
            let credentials = authorization
                .as_ref()
                .map(|value| format!("Authorization: {value}\r\n"))
                .unwrap_or_default();
            let response = send_from(
                source,
                server.addr,
                &format!(
                    "{method} /f HTTP/1.1\r\nHost: {}\r\nDestination: /g\r\n\
                     Lock-Token: <urn:uuid:x>\r\n{credentials}Content-Length: 1\r\n\
                     Connection: close\r\n\r\ny",
                    server.addr
                ),
            );
            assert_eq!(
                response.status, 401,
                "{method} {authorization:?}: {response:?}"
            );
            assert_eq!(
                response
                    .header("WWW-Authenticate")
                    .map(|v| v.starts_with("Basic realm=\"griddav\"")),
                Some(true),
                "{method}: {response:?}"
            );
        }
    }
    // Nothing was changed.
    let response = send_as(&client, "root", Request::new("GET", "/f"));
    assert_eq!((response.status, response.text().as_str()), (200, "x"));
    let names = hrefs(&propfind(&client, "root", "/").text());
    assert_eq!(names, ["/", "/f"], "only /f exists");
}

#[test]
fn read_only_users_change_nothing() {
    let server = Server::start_with_config(&users_config());
    let client = server.client();
    assert_eq!(
        send_as(&client, "root", Request::new("PUT", "/f").body("x")).status,
        201
    );
    assert_eq!(
        send_as(&client, "root", Request::new("MKCOL", "/d")).status,
        201
    );
    let before = propfind(&client, "root", "/").text();
    for (method, path) in [
        ("PUT", "/f"),
        ("PUT", "/new"),
        ("DELETE", "/f"),
        ("DELETE", "/d"),
        ("MKCOL", "/e"),
        ("MOVE", "/f"),
        ("COPY", "/f"),
        ("PROPPATCH", "/f"),
        ("LOCK", "/f"),
        ("PATCH", "/f"),
    ] {
        let request = Request::new(method, path)
            .header("Destination", "/g")
            .header("Content-Type", "application/xml")
            .body(if method == "LOCK" { LOCKINFO } else { "y" });
        let response = send_as(&client, "carol", request);
        assert_eq!(response.status, 403, "{method} {path}: {response:?}");
    }
    assert_eq!(propfind(&client, "root", "/").text(), before);
    // Reading works.
    let response = send_as(&client, "carol", Request::new("GET", "/f"));
    assert_eq!((response.status, response.text().as_str()), (200, "x"));
    assert_eq!(propfind(&client, "carol", "/").status, 207);
}

#[test]
fn users_see_their_root_as_slash_and_nothing_outside() {
    let server = Server::start_with_config(&users_config());
    let client = server.client();
    assert_eq!(
        send_as(&client, "bob", Request::new("PUT", "/b.txt").body("bob's")).status,
        201
    );
    assert_eq!(
        send_as(&client, "root", Request::new("PUT", "/top.txt").body("top")).status,
        201
    );
    // The root is made on first use and is alice's `/`.
    assert_eq!(
        send_as(&client, "alice", Request::new("MKCOL", "/docs/")).status,
        201
    );
    assert_eq!(
        send_as(
            &client,
            "alice",
            Request::new("PUT", "/docs/a%20b.txt").body("alice's")
        )
        .status,
        201
    );
    let response = send_as(
        &client,
        "root",
        Request::new("GET", "/home/alice/docs/a%20b.txt"),
    );
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "alice's")
    );

    // hrefs are the paths alice sent.
    let listing = propfind(&client, "alice", "/");
    assert_eq!(listing.status, 207);
    assert_eq!(hrefs(&listing.text()), ["/", "/docs/"]);
    let listing = propfind(&client, "alice", "/docs/");
    assert_eq!(hrefs(&listing.text()), ["/docs/", "/docs/a%20b.txt"]);
    assert!(!listing.text().contains("home"), "{}", listing.text());

    // Every spelling of a way out.
    for path in [
        "/../b.txt",
        "/../bob/b.txt",
        "/../../home/bob/b.txt",
        "/%2e%2e/bob/b.txt",
        "/%2E%2E/%2E%2E/top.txt",
        "/docs/../../bob/b.txt",
        "/..%2fbob%2fb.txt",
        "/%2fhome%2fbob%2fb.txt",
    ] {
        for method in ["GET", "PROPFIND", "DELETE", "PUT"] {
            let response = send_as(&client, "alice", Request::new(method, path).body("evil"));
            assert_eq!(response.status, 400, "{method} {path}: {response:?}");
        }
    }
    // Names of other roots name nothing of theirs.
    for path in ["/home/bob/b.txt", "/b.txt", "/top.txt"] {
        assert_eq!(
            send_as(&client, "alice", Request::new("GET", path)).status,
            404,
            "{path}"
        );
    }

    // Destinations: outside refused, "another root" lands inside alice's.
    for dest in ["/../bob/x", "/%2e%2e/bob/x", "/docs/../../bob/x"] {
        for method in ["COPY", "MOVE"] {
            let response = send_as(
                &client,
                "alice",
                Request::new(method, "/docs/a%20b.txt").header("Destination", dest),
            );
            assert_eq!(response.status, 400, "{method} -> {dest}: {response:?}");
        }
    }
    let response = send_as(
        &client,
        "alice",
        Request::new("COPY", "/docs/a%20b.txt")
            .header("Destination", "http://elsewhere.example/home/bob/x"),
    );
    assert_eq!(response.status, 502, "{response:?}");
    let own = format!("http://{}/home/bob/", server.addr);
    assert_eq!(
        send_as(&client, "alice", Request::new("MKCOL", "/home/")).status,
        201
    );
    assert_eq!(
        send_as(&client, "alice", Request::new("MKCOL", "/home/bob/")).status,
        201
    );
    let response = send_as(
        &client,
        "alice",
        Request::new("COPY", "/docs/a%20b.txt").header("Destination", &format!("{own}b.txt")),
    );
    assert_eq!(response.status, 201, "{response:?}");
    let response = send_as(
        &client,
        "root",
        Request::new("GET", "/home/alice/home/bob/b.txt"),
    );
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "alice's")
    );

    // If: tags name paths under alice's root, whatever they say.
    let response = send_as(
        &client,
        "alice",
        Request::new("PUT", "/docs/a%20b.txt")
            .header("If", "</../bob/b.txt> ([\"x\"])")
            .body("z"),
    );
    assert_eq!(response.status, 400, "{response:?}");

    // Bob's file and the top file are as they were.
    let response = send_as(&client, "bob", Request::new("GET", "/b.txt"));
    assert_eq!((response.status, response.text().as_str()), (200, "bob's"));
    let response = send_as(&client, "root", Request::new("GET", "/top.txt"));
    assert_eq!((response.status, response.text().as_str()), (200, "top"));
    assert_eq!(
        hrefs(&propfind(&client, "bob", "/").text()),
        ["/", "/b.txt"]
    );
    // A user's root cannot be deleted or moved by them.
    assert_eq!(
        send_as(&client, "alice", Request::new("DELETE", "/")).status,
        403
    );
    assert_eq!(
        send_as(
            &client,
            "alice",
            Request::new("MOVE", "/").header("Destination", "/x")
        )
        .status,
        403
    );
}

fn lock(client: &Client, user: &str, path: &str) -> (Response, String) {
    let response = send_as(
        client,
        user,
        Request::new("LOCK", path)
            .header("Content-Type", "application/xml")
            .header("Timeout", "Second-600")
            .body(LOCKINFO),
    );
    let token = response
        .header("Lock-Token")
        .unwrap_or_default()
        .trim_matches(['<', '>'])
        .to_owned();
    (response, token)
}

#[test]
fn locks_belong_to_the_user_who_took_them() {
    let server = Server::start_with_config(&users_config());
    let client = server.client();
    assert_eq!(
        send_as(&client, "alice", Request::new("PUT", "/doc.txt").body("v1")).status,
        201
    );
    let (response, token) = lock(&client, "alice", "/doc.txt");
    assert_eq!(response.status, 200, "{response:?}");
    // The lock root is the path alice sent.
    assert_eq!(
        hrefs(&response.text())
            .into_iter()
            .filter(|h| h.starts_with('/'))
            .collect::<Vec<_>>(),
        ["/doc.txt"],
        "{}",
        response.text()
    );
    let discovery = send_as(
        &client,
        "alice",
        Request::new("PROPFIND", "/doc.txt").header("Depth", "0").body(
            "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop><D:lockdiscovery/></D:prop></D:propfind>",
        ),
    );
    assert!(
        discovery.text().contains("<D:href>/doc.txt</D:href>"),
        "{}",
        discovery.text()
    );

    // root sees the file at its own path, but cannot write through or
    // remove alice's lock, even with her token.
    let theirs = "/home/alice/doc.txt";
    let if_token = format!("(<{token}>)");
    let response = send_as(
        &client,
        "root",
        Request::new("PUT", theirs)
            .header("If", &if_token)
            .body("root's"),
    );
    assert_eq!(response.status, 423, "{response:?}");
    let response = send_as(
        &client,
        "root",
        Request::new("DELETE", theirs).header("If", &if_token),
    );
    assert_eq!(response.status, 423, "{response:?}");
    let response = send_as(
        &client,
        "root",
        Request::new("UNLOCK", theirs).header("Lock-Token", &format!("<{token}>")),
    );
    assert_eq!(response.status, 403, "{response:?}");
    let response = send_as(
        &client,
        "root",
        Request::new("LOCK", theirs)
            .header("If", &if_token)
            .header("Timeout", "Second-3600"),
    );
    assert_eq!(
        response.status, 403,
        "refresh by another user: {response:?}"
    );

    // alice can.
    let response = send_as(
        &client,
        "alice",
        Request::new("PUT", "/doc.txt")
            .header("If", &if_token)
            .body("v2"),
    );
    assert!(response.is_success(), "{response:?}");
    let response = send_as(
        &client,
        "alice",
        Request::new("UNLOCK", "/doc.txt").header("Lock-Token", &format!("<{token}>")),
    );
    assert_eq!(response.status, 204, "{response:?}");
    // A refresh of her own lock works; a new lock to refresh first.
    let (response, token) = lock(&client, "alice", "/doc.txt");
    assert_eq!(response.status, 200, "{response:?}");
    let response = send_as(
        &client,
        "alice",
        Request::new("LOCK", "/doc.txt")
            .header("If", &format!("(<{token}>)"))
            .header("Timeout", "Second-3600"),
    );
    assert_eq!(response.status, 200, "own refresh: {response:?}");
    let response = send_as(&client, "root", Request::new("GET", theirs));
    assert_eq!((response.status, response.text().as_str()), (200, "v2"));
}

/// A good password is checked with argon2 once, not on every request:
/// many authenticated requests take far less than as many argon2 runs.
#[test]
fn good_checks_are_cached() {
    let server = Server::start_with_config(&users_config());
    let client = server.client();
    // What one check costs on this machine, now.
    let started = Instant::now();
    for _ in 0..3 {
        griddav::auth::hash_password("x").unwrap();
    }
    let one_check = started.elapsed() / 3;
    assert_eq!(propfind(&client, "alice", "/").status, 207);
    let requests = 60u32;
    let started = Instant::now();
    for _ in 0..requests {
        assert_eq!(propfind(&client, "alice", "/").status, 207);
    }
    let elapsed = started.elapsed();
    // Generous: uncached, each request would cost at least one check.
    assert!(
        elapsed < one_check * requests / 2,
        "{requests} authenticated PROPFINDs took {elapsed:?}; one argon2 check takes {one_check:?}"
    );
}

/// One exchange from a chosen loopback source address.
fn send_from(source: [u8; 4], server: SocketAddr, request: &str) -> Response {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(server).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer.write_all(request.as_bytes()).unwrap();
    read_response(
        &mut BufReader::new(stream),
        request.starts_with("HEAD"),
        None,
    )
    .unwrap()
}

#[test]
fn repeated_failures_from_one_address_are_slowed_down() {
    let server = Server::start_with_config(&users_config());
    let get = |source: [u8; 4], password: &str| {
        send_from(
            source,
            server.addr,
            &format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                server.addr,
                basic("root", password)
            ),
        )
    };
    // Finder's first request carries no credentials: not a failure.
    for _ in 0..15 {
        let response = send_from(
            [127, 0, 0, 1],
            server.addr,
            &format!(
                "OPTIONS / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.addr
            ),
        );
        assert_eq!(response.status, 401);
    }
    for i in 0..10 {
        assert_eq!(get([127, 0, 0, 1], "guess").status, 401, "failure {i}");
    }
    for password in ["guess", "root-pw"] {
        let response = get([127, 0, 0, 1], password);
        assert_eq!(response.status, 429, "{response:?}");
        let retry: u64 = response.header("Retry-After").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Another address is served as before.
    let status = get([127, 0, 0, 2], "root-pw").status;
    assert!(status != 429 && status != 401, "{status}");
    assert_eq!(get([127, 0, 0, 2], "guess").status, 401);
}

#[test]
fn an_insecure_listen_beyond_loopback_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Only tries: griddav must refuse before it binds anything.
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_griddav"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(dir.path().join("data"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{listen}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains("listening"), "{stdout}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for words in [
            "griddav passwd",
            "[[users]]",
            "self_signed",
            "allow_insecure",
        ] {
            assert!(
                stderr.contains(words),
                "{listen}: {words:?} not in {stderr}"
            );
        }
    }
    // With users but no TLS, too.
    let config = dir.path().join("users.toml");
    std::fs::write(
        &config,
        format!(
            "[[users]]\nname = \"a\"\npassword_hash = \"{}\"\n",
            hash("alice-pw")
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_griddav"))
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no [tls]"));
}

#[test]
fn passwd_prints_a_hash_the_server_accepts() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret: with spaces\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let phc = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let server = Server::start_with_config(&format!(
        "[[users]]\nname = \"u\"\npassword_hash = \"{phc}\"\n"
    ));
    let client = server.client();
    let ok = client.send(
        Request::new("PROPFIND", "/").header("Authorization", &basic("u", "s3cret: with spaces")),
    );
    assert_eq!(ok.status, 207);
    // The password appears in no log line.
    assert!(!server.log_tail().contains("s3cret"));
}

// ---------------------------------------------------------------- HTTPS

/// A TLS client that trusts only `cert` (PEM), naming the server `localhost`.
fn tls_connect(
    addr: SocketAddr,
    cert: &std::path::Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    tls_connect_as(addr, cert, "localhost")
}

/// A TLS client that trusts only `cert` (PEM), naming the server `name`.
fn tls_connect_as(
    addr: SocketAddr,
    cert: &std::path::Path,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

fn tls_exchange(
    stream: &mut BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    head: &str,
    body: &[u8],
) -> Response {
    let inner = stream.get_mut();
    inner.write_all(head.as_bytes()).unwrap();
    inner.write_all(body).unwrap();
    inner.flush().unwrap();
    read_response(stream, head.starts_with("HEAD"), None).unwrap()
}

#[test]
fn https_with_a_user_and_keep_alive() {
    let mut server = Server::start_with_config(&format!(
        "{}[tls]\nself_signed = true\nnames = [\"griddav.test\"]\n",
        users_config()
    ));
    let cert = server.data_dir().join("tls/cert.pem");
    let pem = std::fs::read(&cert).unwrap();
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(server.data_dir().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(
        server.log_tail().contains("sha256"),
        "the fingerprint is logged"
    );

    let auth = basic("alice", "alice-pw");
    let host = format!("localhost:{}", server.addr.port());
    let mut stream = BufReader::new(tls_connect(server.addr, &cert));
    // Three requests, one connection.
    let put = tls_exchange(
        &mut stream,
        &format!("PUT /s.txt HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Length: 6\r\n\r\n"),
        b"secure",
    );
    assert_eq!(put.status, 201, "{put:?}");
    let get = tls_exchange(
        &mut stream,
        &format!("GET /s.txt HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n"),
        b"",
    );
    assert_eq!((get.status, get.text().as_str()), (200, "secure"));
    let unauthenticated = tls_exchange(
        &mut stream,
        &format!("PROPFIND / HTTP/1.1\r\nHost: {host}\r\nDepth: 1\r\n\r\n"),
        b"",
    );
    assert_eq!(unauthenticated.status, 401);
    let listing = tls_exchange(
        &mut stream,
        &format!(
            "PROPFIND / HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nDepth: 1\r\n\r\n"
        ),
        b"",
    );
    assert_eq!(hrefs(&listing.text()), ["/", "/s.txt"]);

    // The certificate names what [tls] names adds.
    let mut other = BufReader::new(tls_connect_as(server.addr, &cert, "griddav.test"));
    let get = tls_exchange(
        &mut other,
        &format!("GET /s.txt HTTP/1.1\r\nHost: griddav.test\r\nAuthorization: {auth}\r\n\r\n"),
        b"",
    );
    assert_eq!(get.status, 200);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = Client::new(server.addr).exchange(Request::new("GET", "/s.txt"), None);
    assert!(
        !matches!(plain.response, Some(Ok(ref r)) if r.status == 200),
        "{:?}",
        plain.response
    );

    // The certificate is kept across restarts.
    server.restart();
    assert_eq!(std::fs::read(&cert).unwrap(), pem);
    let mut stream = BufReader::new(tls_connect(server.addr, &cert));
    let get = tls_exchange(
        &mut stream,
        &format!("GET /s.txt HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n"),
        b"",
    );
    assert_eq!((get.status, get.text().as_str()), (200, "secure"));
}

#[test]
fn https_with_certificate_and_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let server = Server::start_with_config(&format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n"));
    assert!(
        !server.data_dir().join("tls").exists(),
        "no certificate made"
    );
    let mut stream = BufReader::new(tls_connect(server.addr, &cert));
    let host = format!("localhost:{}", server.addr.port());
    let put = tls_exchange(
        &mut stream,
        &format!("PUT /f HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n"),
        b"ok",
    );
    assert_eq!(put.status, 201, "{put:?}");
    let get = tls_exchange(
        &mut stream,
        &format!("GET /f HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        b"",
    );
    assert_eq!((get.status, get.text().as_str()), (200, "ok"));
}
