//! `griddav check` and `check --repair` beside a running server on the
//! local grid: lost servers are reported, their shares re-created
//! elsewhere, and the files then survive the loss of seven other servers.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use support::{Content, Server};

fn check(server: &Server, args: &[&str]) -> (Output, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("--data-dir")
        .arg(server.data_dir())
        .arg("check")
        .arg("--json")
        .args(args)
        .output()
        .expect("run griddav check");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check {args:?}: not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, document)
}

fn summary(document: &serde_json::Value, key: &str) -> u64 {
    document["summary"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no summary.{key} in {}", document["summary"]))
}

/// Removes every share of a local server: its `shares/` directory's
/// content and its logs of packed small shares. A running server still
/// reads the packed shares of logs it has open: restart it to lose them.
fn empty(shares: &Path) {
    for entry in fs::read_dir(shares).expect("shares dir").flatten() {
        fs::remove_dir_all(entry.path()).expect("remove shares");
    }
    let packed = shares.with_file_name("packed");
    for entry in fs::read_dir(&packed).into_iter().flatten().flatten() {
        fs::remove_file(entry.path()).expect("remove a packed log");
    }
}

fn servers_of(file: &serde_json::Value) -> Vec<String> {
    file["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|h| h["server"].as_str().expect("server").to_owned())
        .collect()
}

#[test]
fn repair_restores_lost_shares_so_files_survive_seven_other_servers_lost() {
    let mut server = Server::start_with_config("gc_grace_secs = 0\n");
    let client = server.client();
    let mut files = Vec::new();
    for i in 0..50u64 {
        // Past the inline threshold; up to 2 MiB, several segments.
        let content = Content::new(i, 20_000 + i * 41_000);
        let path = format!("/f{i:02}.bin");
        assert_eq!(client.put(&path, content.bytes()).status, 201, "{path}");
        files.push((path, content));
    }
    let (output, document) = check(&server, &[]);
    assert!(output.status.success(), "{}", document["summary"]);
    assert_eq!(summary(&document, "healthy"), 50);

    let dirs = server.share_dirs();
    assert_eq!(dirs.len(), 10);
    for dir in &dirs[..3] {
        empty(dir);
    }
    let lost = ["local-00", "local-01", "local-02"];
    let (output, document) = check(&server, &[]);
    assert!(
        !output.status.success(),
        "three servers emptied, yet exit 0"
    );
    assert_eq!(
        summary(&document, "degraded"),
        50,
        "{}",
        document["summary"]
    );
    for file in document["files"].as_array().expect("files") {
        let servers = servers_of(file);
        assert_eq!(servers.len(), 7, "{file}");
        assert!(
            servers.iter().all(|s| !lost.contains(&s.as_str())),
            "{file}"
        );
        assert_eq!(file["missing"].as_array().map(Vec::len), Some(3), "{file}");
    }

    let started = Instant::now();
    let (output, document) = check(&server, &["--repair"]);
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "{}\n{}",
        document["summary"],
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(summary(&document, "repaired"), 50);
    let file_bytes = summary(&document, "file_bytes");
    eprintln!(
        "repair: {} MB of files, {} MB of shares written, in {seconds:.2} s: {:.1} MB/s of files",
        file_bytes / 1_000_000,
        summary(&document, "bytes_written") / 1_000_000,
        file_bytes as f64 / seconds / 1e6
    );
    for file in document["files"].as_array().expect("files") {
        let mut servers = servers_of(file);
        servers.sort();
        servers.dedup();
        assert_eq!(
            servers.len(),
            10,
            "ten distinct servers after repair: {file}"
        );
    }
    let (output, document) = check(&server, &["--deep"]);
    assert!(output.status.success(), "{}", document["summary"]);
    assert_eq!(summary(&document, "healthy"), 50);

    // Seven *other* servers lost: only the re-created shares are left.
    for dir in &dirs[3..] {
        empty(dir);
    }
    server.restart();
    let client = server.client();
    for (path, content) in &files {
        let (response, len, sha) = client.get_sha256(path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(len, content.len, "{path}");
        assert_eq!(sha, content.sha256(), "{path}");
    }
}

#[test]
fn deep_check_finds_a_corrupt_share_and_repair_replaces_it() {
    let server = Server::start();
    let client = server.client();
    let content = Content::new(99, 3_000_000);
    assert_eq!(client.put("/d.bin", content.bytes()).status, 201);

    // Flip a byte in the middle of one share: the listing does not see it.
    let grid = server.grid();
    let (share, _) = grid
        .shares
        .iter()
        .find(|(path, _)| path.starts_with("server-04"))
        .expect("a share on server-04");
    let share = server.data_dir().join("grid").join(share);
    let mut bytes = fs::read(&share).expect("read share");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&share, bytes).expect("write share");

    let (output, document) = check(&server, &[]);
    assert!(output.status.success(), "{}", document["summary"]);
    let (output, document) = check(&server, &["--deep"]);
    assert!(
        !output.status.success(),
        "deep check passed a corrupt share"
    );
    assert_eq!(summary(&document, "degraded"), 1);
    let file = &document["files"][0];
    assert!(
        !servers_of(file).contains(&"local-04".to_owned()),
        "the corrupt share is not counted good: {file}"
    );

    let (output, document) = check(&server, &["--deep", "--repair"]);
    assert!(output.status.success(), "{document}");
    assert_eq!(summary(&document, "repaired"), 1);
    let (output, document) = check(&server, &["--deep"]);
    assert!(output.status.success(), "{document}");
    assert_eq!(summary(&document, "healthy"), 1);
    let (response, len, sha) = client.get_sha256("/d.bin");
    assert_eq!((response.status, len), (200, content.len));
    assert_eq!(sha, content.sha256());
}

#[test]
fn check_of_a_path_and_a_file_deleted_meanwhile() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.mkcol("/a/").status, 201);
    assert_eq!(client.put("/a/x.bin", vec![7u8; 100_000]).status, 201);
    assert_eq!(client.put("/y.bin", vec![8u8; 100_000]).status, 201);
    assert_eq!(client.put("/small", vec![9u8; 10]).status, 201);
    let (output, document) = check(&server, &["/a"]);
    assert!(output.status.success(), "{document}");
    assert_eq!(summary(&document, "files"), 1);
    assert_eq!(document["files"][0]["path"], "/a/x.bin");
    let (output, document) = check(&server, &[]);
    assert!(output.status.success(), "{document}");
    assert_eq!(
        summary(&document, "files"),
        2,
        "inline files are not in the grid"
    );

    // The human form: one line per file and a summary.
    let output = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["check", "/y.bin"])
        .output()
        .expect("run griddav check");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("/y.bin: healthy, 10 of 10 shares on 10 servers"),
        "{text}"
    );
    assert!(text.contains("1 files: 1 healthy, 0 repaired"), "{text}");
}

#[test]
fn serve_repairs_in_the_background_and_logs_it() {
    let server = Server::start_with_config("[repair]\ninterval_secs = 1\n");
    let client = server.client();
    let content = Content::new(5, 200_000);
    assert_eq!(client.put("/bg.bin", content.bytes()).status, 201);
    let dirs = server.share_dirs();
    let count = |dir: &Path| server_share_count(dir);
    assert_eq!(count(&dirs[6]), 1);
    empty(&dirs[6]);
    assert_eq!(count(&dirs[6]), 0);
    assert!(
        support::server::wait_until(std::time::Duration::from_secs(60), || count(&dirs[6]) == 1),
        "no share re-created within 60 s; log:\n{}",
        server.log_tail()
    );
    assert!(
        support::server::wait_until(std::time::Duration::from_secs(10), || server
            .log_tail()
            .contains("repaired")),
        "{}",
        server.log_tail()
    );
    let (output, document) = check(&server, &[]);
    assert!(output.status.success(), "{document}");
}

/// Finished shares under one server's `shares/`.
fn server_share_count(shares: &Path) -> usize {
    let mut count = 0;
    for prefix in fs::read_dir(shares).expect("shares dir").flatten() {
        for si in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
            count += fs::read_dir(si.path()).into_iter().flatten().count();
        }
    }
    count
}

#[test]
fn a_file_stored_short_of_shares_is_recorded_and_completed() {
    let server = Server::start_with_config("[repair]\ninterval_secs = 5\n");
    let client = server.client();
    let dirs = server.share_dirs();
    // Server 3 cannot take new shares: its incoming/ is not a directory.
    let incoming = dirs[3].parent().expect("server dir").join("incoming");
    fs::remove_dir(&incoming).expect("remove incoming");
    fs::write(&incoming, b"not a directory").expect("block incoming");
    let content = Content::new(11, 300_000);
    assert_eq!(client.put("/short.bin", content.bytes()).status, 201);
    let recorded = || {
        let db = server.data_dir().join("namespace.db");
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open the namespace");
        conn.query_row("SELECT COUNT(*) FROM short_files", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count short files")
    };
    assert_eq!(recorded(), 1, "the upload with 9 of 10 shares is recorded");
    assert_eq!(server_share_count(&dirs[3]), 0);

    fs::remove_file(&incoming).expect("unblock incoming");
    fs::create_dir(&incoming).expect("restore incoming");
    assert!(
        support::server::wait_until(std::time::Duration::from_secs(60), || {
            server_share_count(&dirs[3]) == 1 && recorded() == 0
        }),
        "not completed: {} shares on server 3, {} recorded; log:\n{}",
        server_share_count(&dirs[3]),
        recorded(),
        server.log_tail()
    );
    let (output, document) = check(&server, &[]);
    assert!(output.status.success(), "{document}");
}
