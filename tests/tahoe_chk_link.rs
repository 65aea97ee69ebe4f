//! Tahoe files served over WebDAV, against stock Tahoe-LAFS 1.20.0: a file
//! `tahoe put` wrote (its default convergent key, 3-of-10) is linked into a
//! griddav server on the ten nodes of tests/tahoe/harness.sh and read back
//! byte-identical, whole and by a Range GET in the middle, also with 7 of
//! the 10 nodes stopped; a share corrupted on a node's disk is found by
//! both `griddav check --deep` / `griddav verify` and `tahoe check --verify`.
//!
//! Needs the harness's nodes and the client node of tests/chk/tahoe_client.sh
//! running, with `GRIDDAV_TAHOE_CONFIG` set (as .ci/run does); hence
//! `#[ignore]`: run with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "tahoe/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use griddav::engine::chk::uri::ChkCap;
use griddav::grid::StorageIndex;
use support::{content, Harness, MIB};

/// A running `griddav serve` on the harness's nodes, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    data: tempfile::TempDir,
}

impl Server {
    fn start(harness: &Harness) -> Server {
        let data = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_griddav"))
            .arg("serve")
            .arg("--config")
            .arg(&harness.config)
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start griddav serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("griddav listening on http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Server { child, addr, data }
    }

    /// One request on its own connection: (status, body).
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let mut tcp = TcpStream::connect(self.addr).expect("connect");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).expect("send");
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).expect("read the answer");
        let end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header block");
        let head = String::from_utf8_lossy(&answer[..end]).to_string();
        let status = head[9..12].parse().expect("status");
        (status, answer[end + 4..].to_vec())
    }

    fn griddav(&self, harness: &Harness, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_griddav"))
            .arg("--config")
            .arg(&harness.config)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run griddav")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_script(args: &[&str]) -> Vec<u8> {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chk/tahoe_client.sh"))
        .args(args)
        .output()
        .expect("tahoe_client.sh");
    assert!(
        out.status.success(),
        "tahoe_client.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `tahoe check --verify CAP` on the client node: its report.
fn tahoe_check_verify(harness: &Harness, cap: &str) -> String {
    let venv = std::env::var("GRIDDAV_TAHOE_VENV")
        .unwrap_or_else(|_| harness.base.join("venv").to_string_lossy().into_owned());
    let out = Command::new(Path::new(&venv).join("bin/tahoe"))
        .arg("-d")
        .arg(harness.base.join("client"))
        .args(["check", "--verify", cap])
        .output()
        .expect("tahoe check --verify");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "needs the Tahoe harness nodes and tests/chk/tahoe_client.sh running"]
fn a_file_tahoe_put_is_linked_read_over_webdav_and_checked_by_both() {
    let harness = Harness::get();
    let mut bytes = content(3 * MIB + 12_345, 44);
    // `tahoe put` is convergent: the same bytes as an earlier run (whose
    // share this test corrupted on disk) would find those shares again on
    // nodes that were kept, and never upload good ones.
    bytes[..16].copy_from_slice(&rand::random::<[u8; 16]>());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("from-tahoe.bin");
    std::fs::write(&file, &bytes).expect("write the file");
    let cap = String::from_utf8(client_script(&["put", file.to_str().expect("utf-8 path")]))
        .expect("utf-8 cap")
        .trim()
        .to_owned();
    assert!(cap.starts_with("URI:CHK:"), "{cap}");
    let parsed = ChkCap::parse(&cap).expect("tahoe's cap parses");
    assert_eq!((parsed.k, parsed.n), (3, 10));

    let server = Server::start(&harness);
    let (status, said) = server.send(
        "PUT",
        "/from-tahoe.bin",
        &[("Griddav-Link", &cap), ("Content-Length", "0")],
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&said));
    let (status, body) = server.send("GET", "/from-tahoe.bin", &[]);
    assert_eq!(status, 200);
    assert!(body == bytes, "GET differs from what tahoe put stored");
    let (from, to) = (1_500_000, 1_700_000);
    let range = format!("bytes={from}-{}", to - 1);
    let (status, body) = server.send("GET", "/from-tahoe.bin", &[("Range", &range)]);
    assert_eq!(status, 206);
    assert!(body == bytes[from..to], "Range GET differs");

    // Seven of the ten nodes stop: any three shares decode.
    for i in 0..7 {
        harness.signal(i, "-KILL");
    }
    let (status, body) = server.send("GET", "/from-tahoe.bin", &[("Range", &range)]);
    assert_eq!(status, 206);
    assert!(
        body == bytes[from..to],
        "Range GET with 7 nodes stopped differs"
    );
    let (status, body) = server.send("GET", "/from-tahoe.bin", &[]);
    assert_eq!(status, 200);
    assert!(body == bytes, "GET with 7 nodes stopped differs");
    harness.restart_all();

    // Both checkers are content first.
    let check = server.griddav(&harness, &["check", "--deep", "/"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let report = tahoe_check_verify(&harness, &cap);
    assert!(report.contains("Healthy"), "{report}");
    assert!(!report.contains("Not Healthy"), "{report}");

    // A byte of one share's blocks flips on its node's disk (after the
    // storage server's 12-byte container header).
    let si = StorageIndex::from_bytes(parsed.storage_index());
    let files = harness.share_files(si);
    assert!(files.len() >= 10, "{files:?}");
    let (node, path) = &files[0];
    let mut raw = std::fs::read(path).expect("share file");
    raw[12 + 0x24 + 1000] ^= 0x01;
    std::fs::write(path, raw).expect("corrupt the share");
    let shnum: u8 = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("share number");

    let check = server.griddav(&harness, &["check", "--deep", "/"]);
    assert!(
        !check.status.success(),
        "griddav check --deep missed the corrupt share"
    );
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains(&format!("sh{shnum}")), "{said}");
    let verify = server.griddav(&harness, &["verify", &cap]);
    assert!(!verify.status.success());
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let report = tahoe_check_verify(&harness, &cap);
    assert!(report.contains("Not Healthy"), "node {node}: {report}");
    // And the file still reads, around the bad share.
    let (status, body) = server.send("GET", "/from-tahoe.bin", &[]);
    assert_eq!(status, 200);
    assert!(body == bytes);
}
