//! Connection limits and time limits, accept errors, and request latency on
//! keep-alive connections (issue 9, items 2, 4 and 9).

mod support;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::read_response;
use support::{wait_until, Content, Ending, GridFiles, Request, Response, Server, KIB, MIB};

/// A generous bound for something that should happen within a second or two.
const SOON: Duration = Duration::from_secs(10);

/// One keep-alive connection, driven by hand.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(server: &Server) -> Connection {
        let stream = TcpStream::connect(server.addr).expect("connect");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set read timeout");
        Connection {
            reader: BufReader::new(stream),
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Sends the request in one write and reads the answer.
    fn send(&mut self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
        let mut message = format!("{method} {path} HTTP/1.1\r\nHost: griddav\r\n");
        for header in headers {
            message.push_str(header);
            message.push_str("\r\n");
        }
        if !body.is_empty() || method == "PUT" {
            message.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        message.push_str("\r\n");
        let mut bytes = message.into_bytes();
        bytes.extend_from_slice(body);
        self.stream().write_all(&bytes).expect("send a request");
        read_response(&mut self.reader, method == "HEAD", None)
            .unwrap_or_else(|e| panic!("{method} {path}: reading the answer failed: {e}"))
    }

    /// True once the server has closed the connection (EOF or reset),
    /// waiting at most `wait` for it.
    fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream()
            .set_read_timeout(Some(wait))
            .expect("set read timeout");
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected bytes from the server on an idle connection"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true,
        }
    }
}

/// The server answers a new connection.
fn assert_alive(server: &Server) {
    let answer = server.client().send(Request::new("OPTIONS", "/"));
    assert_eq!(answer.status, 200, "OPTIONS / {answer:?}");
}

#[test]
fn a_request_head_that_never_completes_is_closed_after_the_header_timeout() {
    let server = Server::start_with_config(
        "[http]\nheader_read_timeout_secs = 1\nkeep_alive_idle_secs = 60\n",
    );
    let mut slow = Connection::open(&server);
    slow.stream()
        .write_all(b"PROPFIND / HTTP/1.1\r\nHost: griddav\r\nX-Slow: ")
        .expect("send the start of a head");
    // A byte every 200 ms: never idle, never finished.
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < SOON {
        if slow.stream().write_all(b"a").is_err() || slow.closed_within(Duration::from_millis(200))
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a head still unfinished after {SOON:?} (header_read_timeout_secs = 1) should be closed"
    );
    assert_alive(&server);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let server = Server::start_with_config(
        "[http]\nkeep_alive_idle_secs = 1\nheader_read_timeout_secs = 60\n",
    );
    let mut connection = Connection::open(&server);
    for _ in 0..2 {
        let answer = connection.send("OPTIONS", "/", &[], b"");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_ne!(answer.header("Connection"), Some("close"), "{answer:?}");
    }
    assert!(
        connection.closed_within(SOON),
        "an idle keep-alive connection should be closed after keep_alive_idle_secs = 1"
    );
    assert_alive(&server);
}

#[test]
fn a_put_whose_body_stalls_is_aborted_and_the_old_version_kept() {
    let server = Server::start_with_config("[http]\nbody_idle_timeout_secs = 2\n");
    let old = Content::new(1, 3 * MIB);
    let put = server.client().send(
        Request::new("PUT", "/file.bin")
            .pieces(old.pieces(256 * 1024))
            .content_length(old.len),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let before = server.grid();
    assert_eq!(before.shares.len(), 10, "{before:?}");
    assert!(before.incoming.is_empty(), "{before:?}");

    let new = Content::new(2, 8 * MIB);
    let grid_dir = server.data_dir().join("grid");
    let saw_partial = Arc::new(AtomicBool::new(false));
    let cleaned_while_open = Arc::new(AtomicBool::new(false));
    let (saw, cleaned) = (Arc::clone(&saw_partial), Arc::clone(&cleaned_while_open));
    let expected = before.clone();
    let exchange = server.client().exchange(
        Request::new("PUT", "/file.bin")
            .pieces(new.pieces(256 * 1024))
            .content_length(new.len)
            // Three segments: with two in flight at most, the first one's
            // blocks are on their way to the servers.
            .stop_after(3 * MIB)
            .before_ending(move || {
                // The connection stays open: only the body timeout can end
                // the upload.
                saw.store(
                    wait_until(SOON, || !GridFiles::scan(&grid_dir).incoming.is_empty()),
                    Ordering::SeqCst,
                );
                cleaned.store(
                    wait_until(Duration::from_secs(30), || {
                        let grid = GridFiles::scan(&grid_dir);
                        grid.incoming.is_empty() && grid.shares == expected.shares
                    }),
                    Ordering::SeqCst,
                );
            })
            .ending(Ending::Complete),
        None,
    );
    assert!(exchange.write_error.is_none(), "{exchange:?}");
    assert!(
        saw_partial.load(Ordering::SeqCst),
        "after 3 MiB of body the upload should have partial shares under incoming/"
    );
    assert!(
        cleaned_while_open.load(Ordering::SeqCst),
        "the stalled upload's partial shares should go while its connection is still open; \
         grid now: {:?}",
        server.grid()
    );
    if let Some(Ok(answer)) = &exchange.response {
        assert!(
            !answer.is_success(),
            "a stalled PUT must not succeed: {answer:?}"
        );
    }

    let (get, len, sha) = server.client().get_sha256("/file.bin");
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(
        (len, sha),
        (old.len, old.sha256()),
        "the old version is intact"
    );
    let grid = server.grid();
    assert_eq!(grid.shares, before.shares);
    assert!(grid.incoming.is_empty(), "{grid:?}");
}

#[test]
fn connections_beyond_max_connections_wait_until_one_closes() {
    let server =
        Server::start_with_config("[http]\nmax_connections = 2\nkeep_alive_idle_secs = 60\n");
    let mut first = Connection::open(&server);
    let mut second = Connection::open(&server);
    for connection in [&mut first, &mut second] {
        assert_eq!(connection.send("OPTIONS", "/", &[], b"").status, 200);
    }

    let mut third = Connection::open(&server);
    third
        .stream()
        .write_all(b"OPTIONS / HTTP/1.1\r\nHost: griddav\r\n\r\n")
        .expect("send a request on the third connection");
    third
        .stream()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    match third.reader.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the third connection was served or closed at once: {other:?}"),
    }

    drop(first);
    third
        .stream()
        .set_read_timeout(Some(SOON))
        .expect("set read timeout");
    let answer = read_response(&mut third.reader, false, None)
        .expect("the third connection is served once the first closes");
    assert_eq!(answer.status, 200, "{answer:?}");

    // The second still works, and the cap never stopped the server.
    assert_eq!(second.send("OPTIONS", "/", &[], b"").status, 200);
    drop((second, third));
    assert_alive(&server);
}

#[test]
fn running_out_of_file_descriptors_does_not_stop_the_server() {
    let mut server = Server::start_with_fd_limit(64);
    // More idle connections than descriptors: accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(server.addr).expect("connect (the backlog has room)"))
        .collect();
    // Seconds of failing accepts; the process must not exit.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !server.has_exited(),
        "griddav exited while out of file descriptors; log:\n{}",
        server.log_tail()
    );
    assert!(
        server.log_tail().contains("Too many open files"),
        "with 120 connections and 64 descriptors accept should have failed; log:\n{}",
        server.log_tail()
    );
    drop(held);

    let started = Instant::now();
    let answered = wait_until(SOON, || {
        let exchange = server.client().exchange(
            Request::new("PUT", "/after.txt").body(vec![7u8; 4 * KIB as usize]),
            None,
        );
        matches!(exchange.response, Some(Ok(ref r)) if r.status == 201)
    });
    assert!(
        answered,
        "the server should serve again once the connections are closed; log:\n{}",
        server.log_tail()
    );
    eprintln!(
        "served again {:?} after the connections closed",
        started.elapsed()
    );
    let get = server.client().get("/after.txt");
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.body, vec![7u8; 4 * KIB as usize]);

    let log = server.log_tail();
    let lines = log.matches("Too many open files").count();
    assert!(
        (1..=3).contains(&lines),
        "accept errors should be logged a few times, not once per attempt: {lines} lines; log:\n{log}"
    );
}

/// PUT, PROPFIND, GET and DELETE of a 4 KiB file, 50 times on one
/// keep-alive connection. Without TCP_NODELAY a PROPFIND whose answer
/// leaves in pieces waits for the client's delayed ACK: about 40 ms.
#[test]
fn propfind_on_a_keep_alive_connection_does_not_wait_for_delayed_acks() {
    let server = Server::start();
    let mut connection = Connection::open(&server);
    let body = Content::new(9, 4 * KIB).bytes();
    let named = br#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/><D:getlastmodified/><D:resourcetype/></D:prop></D:propfind>"#;
    let mut propfinds = Vec::new();
    let started = Instant::now();
    for i in 0..50 {
        let path = format!("/loop-{i}.bin");
        assert_eq!(connection.send("PUT", &path, &[], &body).status, 201);
        // Alternate allprop (no body: dav-server streams its answer) and
        // named properties (griddav completes the answer in one piece).
        let propfind: &[u8] = if i % 2 == 0 { b"" } else { named };
        let asked = Instant::now();
        let answer = connection.send("PROPFIND", &path, &["Depth: 0"], propfind);
        propfinds.push(asked.elapsed());
        assert_eq!(answer.status, 207, "{answer:?}");
        let get = connection.send("GET", &path, &[], b"");
        assert_eq!((get.status, get.body.len()), (200, body.len()));
        assert_eq!(connection.send("DELETE", &path, &[], b"").status, 204);
    }
    let elapsed = started.elapsed();
    let slowest = *propfinds.iter().max().expect("50 PROPFINDs");
    let mut sorted = propfinds.clone();
    sorted.sort();
    eprintln!(
        "200 requests on one connection in {elapsed:?} ({:.0} requests/s); \
         PROPFIND median {:?}, slowest {slowest:?}",
        200.0 / elapsed.as_secs_f64(),
        sorted[sorted.len() / 2]
    );
    assert!(
        slowest < Duration::from_millis(40),
        "a PROPFIND took {slowest:?} on a keep-alive connection: {propfinds:?}"
    );
}
