//! Files PUT through griddav with `[encoding] format = "tahoe-chk"` onto the
//! ten Tahoe-LAFS nodes of tests/tahoe/harness.sh are read back
//! byte-identical by a stock `tahoe get` of their capability on the client
//! node of tests/chk/tahoe_client.sh (`griddav cap PATH` prints it).
//!
//! Needs both running and `GRIDDAV_TAHOE_CONFIG` set (as .ci/run does);
//! hence `#[ignore]`: run with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

use support::{sha256_hex, Content, Server};

const MIB: u64 = 1 << 20;

/// The harness's griddav config with `format = "tahoe-chk"`; the data
/// directory is the test server's own.
fn config() -> String {
    let path = std::env::var("GRIDDAV_TAHOE_CONFIG").expect(
        "set GRIDDAV_TAHOE_CONFIG: start tests/tahoe/harness.sh and tests/chk/tahoe_client.sh",
    );
    let text = std::fs::read_to_string(&path).expect("read the harness config");
    let mut out: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("data_dir"))
        .map(|line| format!("{line}\n"))
        .collect();
    out.push_str("\n[encoding]\nformat = \"tahoe-chk\"\n");
    out
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().expect("run helper");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn cap_of(server: &Server, path: &str) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["cap", path]));
    String::from_utf8(out).unwrap().trim().to_owned()
}

fn tahoe_get(cap: &str) -> Vec<u8> {
    run(Command::new("bash")
        .arg("tests/chk/tahoe_client.sh")
        .args(["get", cap]))
}

#[test]
#[ignore = "needs the Tahoe harness nodes and tests/chk/tahoe_client.sh running"]
fn tahoe_get_reads_what_griddav_put() {
    let server = Server::start_with_config(&config());
    let client = server.client();
    // Empty, tiny, Tahoe's literal threshold, one default segment, one
    // segment and a byte, and a large file.
    for (i, len) in [0, 1, 55, MIB, MIB + 1, 100 * MIB].into_iter().enumerate() {
        let content = Content::new(100 + i as u64, len);
        let path = format!("/chk-{len}.bin");
        let started = Instant::now();
        let put = client.put(&path, content.bytes());
        let took = started.elapsed();
        assert!(put.is_success(), "PUT {len} bytes: {}", put.status);
        let cap = cap_of(&server, &path);
        let kind = if len <= 55 { "URI:LIT:" } else { "URI:CHK:" };
        assert!(cap.starts_with(kind), "{len} bytes: {cap}");
        let got = tahoe_get(&cap);
        assert_eq!(got.len() as u64, len, "{len} bytes: tahoe get's length");
        assert!(
            sha256_hex(&got) == content.sha256(),
            "{len} bytes: tahoe get returned other bytes"
        );
        eprintln!("{len} bytes: PUT {took:?}, read back by tahoe get");
    }
}
