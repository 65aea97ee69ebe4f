//! The command line beside a running server: `put --to` links an upload
//! into the tree, `cap` prints a WebDAV file's capability, `get` reads it.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::{Content, Server};

fn griddav(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run griddav");
    // griddav may refuse and exit before it reads its input: a broken
    // pipe here is not the test's failure.
    let _ = child.stdin.take().expect("stdin is piped").write_all(stdin);
    child.wait_with_output().expect("wait for griddav")
}

fn stdout_line(output: &Output) -> String {
    assert!(
        output.status.success(),
        "griddav failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn put_to_links_the_file_and_cap_prints_its_capability() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.mkcol("/docs/").status, 201);
    let content = Content::new(7, 300_000);

    let put = griddav(
        &server,
        &["put", "-", "--to", "/docs/a.bin"],
        &content.bytes(),
    );
    let cap = stdout_line(&put);
    assert!(cap.starts_with("griddav:1:"), "{cap}");
    let (get, len, sha) = client.get_sha256("/docs/a.bin");
    assert_eq!(get.status, 200, "the CLI upload is served over WebDAV");
    assert_eq!((len, sha), (content.len, content.sha256()));

    let printed = stdout_line(&griddav(&server, &["cap", "/docs/a.bin"], b""));
    assert_eq!(printed, cap, "cap prints the capability of the WebDAV file");
    let got = griddav(&server, &["get", &printed], b"");
    assert!(got.status.success());
    assert_eq!(got.stdout, content.bytes());

    // Deleting it over WebDAV works like for any file.
    assert_eq!(client.delete("/docs/a.bin").status, 204);
    let gone = griddav(&server, &["cap", "/docs/a.bin"], b"");
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no such file"));
}

#[test]
fn cap_explains_folders_and_inline_files() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.put("/note.txt", b"small".to_vec()).status, 201);
    let inline = griddav(&server, &["cap", "/note.txt"], b"");
    assert!(!inline.status.success());
    assert!(
        String::from_utf8_lossy(&inline.stderr).contains("inline_threshold"),
        "{}",
        String::from_utf8_lossy(&inline.stderr)
    );
    let folder = griddav(&server, &["cap", "/"], b"");
    assert!(!folder.status.success());
    assert!(String::from_utf8_lossy(&folder.stderr).contains("folder"));
}

#[test]
fn put_to_a_missing_folder_uploads_nothing() {
    let server = Server::start();
    let put = griddav(
        &server,
        &["put", "-", "--to", "/nope/a.bin"],
        &[1u8; 100_000],
    );
    assert!(!put.status.success());
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("no folder /nope"),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(server.grid().shares.len(), 0, "no shares left behind");
}

#[test]
fn serve_names_a_storage_server_that_does_not_answer_at_start() {
    let dirs = tempfile::tempdir().expect("a temporary directory");
    let mut servers = String::from("[grid]\nservers = [\n");
    for i in 0..7 {
        let path = dirs.path().join(format!("g{i}"));
        servers.push_str(&format!("{{ kind = \"local\", path = {:?} }},\n", path));
    }
    // Port 1 on loopback: nothing listens there, so the connection is refused.
    servers.push_str(
        "{ kind = \"tahoe\", id = \"unreachable\", nurl = \"pb://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@127.0.0.1:1/swissnumswissnumswissnum#v=1\" },\n]\n",
    );
    let config = servers.as_str();
    let server = Server::start_with_config(config);
    assert!(
        support::wait_until(std::time::Duration::from_secs(30), || {
            let log = server.log_tail();
            log.contains("storage server does not answer") && log.contains("unreachable")
        }),
        "the unreachable server is named in the log:\n{}",
        server.log_tail()
    );
    let log = server.log_tail();
    assert!(log.contains("storage server answers"), "{log}");
    assert!(
        !log.contains("swissnumswissnum"),
        "no swissnum in the log: {log}"
    );
}
