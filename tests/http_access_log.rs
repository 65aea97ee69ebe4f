//! One log line per request, when its answer is done: method, path,
//! status, bytes in and out, duration, client; as text by default and as
//! one JSON object per line with `--log-format json`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{wait_until, Client, Content, Server};

/// The log without its colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn access_line<'a>(log: &'a str, needles: &[&str]) -> Option<&'a str> {
    log.lines()
        .filter(|line| line.contains("griddav::access"))
        .find(|line| needles.iter().all(|n| line.contains(n)))
}

#[test]
fn every_request_gets_one_line_when_its_answer_is_done() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(7, 20_000);
    assert_eq!(client.put("/a.txt", content.bytes()).status, 201);
    let get = client.get("/a.txt");
    assert_eq!(get.status, 200);
    assert_eq!(client.get("/missing").status, 404);

    let put_line = [
        "method=PUT",
        "path=/a.txt",
        "status=201",
        "bytes_in=20000",
        "complete=true",
    ];
    let get_line = [
        "method=GET",
        "path=/a.txt",
        "status=200",
        "bytes_out=20000",
        "complete=true",
    ];
    let missing_line = ["method=GET", "path=/missing", "status=404"];
    let mut log = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            log = plain(&server.log_tail());
            access_line(&log, &put_line).is_some()
                && access_line(&log, &get_line).is_some()
                && access_line(&log, &missing_line).is_some()
        }),
        "access lines missing:\n{log}"
    );
    let line = access_line(&log, &get_line).expect("the GET's line");
    assert!(line.contains("client=127.0.0.1:"), "{line}");
    assert!(line.contains("duration_ms="), "{line}");
    assert!(line.contains("user=-"), "{line}");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start griddav");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the listening line");
    let addr = first
        .trim()
        .strip_prefix("griddav listening on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .expect("griddav listening on http://ADDR/")
        .parse()
        .expect("an address");
    let client = Client::new(addr);
    assert_eq!(client.put("/j.txt", b"json".to_vec()).status, 201);

    let mut found = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|v| v["target"] == "griddav::access" && v["method"] == "PUT");
        found.is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(ok, "no JSON access line for the PUT:\n{text}");
    for line in text.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON object: {line}"
        );
    }
    let put = found.expect("the PUT's line");
    assert_eq!(put["path"], "/j.txt");
    assert_eq!(put["status"], 201);
    assert_eq!(put["bytes_in"], 4);
}
