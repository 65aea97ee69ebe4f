//! Storage servers that go away and come back, seen through `griddav serve`
//! over HTTP: a GET that cannot start answers an error status, never a 200
//! with a short or empty body, and the file reads again once the shares
//! are back, without a restart.

mod support;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use support::{wait_until, Content, Request, Server, MIB};

#[test]
fn a_get_during_an_outage_fails_up_front_and_works_after_it() {
    let server = Server::start();
    let client = server.client();
    // More segments than a reader caches (4), so the outage is seen.
    let content = Content::new(16, 8 * MIB + 5);
    let put = client.send(
        Request::new("PUT", "/file.bin")
            .pieces(content.pieces(256 * 1024))
            .content_length(content.len),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let (get, len, sha) = client.get_sha256("/file.bin");
    assert_eq!((get.status, len, sha), (200, content.len, content.sha256()));

    // Eight of the ten servers lose their shares for a while (k = 3).
    let dirs: Vec<PathBuf> = server.share_dirs().into_iter().take(8).collect();
    for dir in &dirs {
        fs::rename(dir, dir.with_extension("away")).expect("move shares away");
    }
    let (get, len, _) = client.get_sha256("/file.bin");
    assert_eq!(
        get.status, 503,
        "GET during the outage: {} with {len} bytes (must not start a 200)",
        get.status
    );
    assert_eq!(len, 0, "an error answer carries no file bytes");
    for dir in &dirs {
        fs::rename(dir.with_extension("away"), dir).expect("bring shares back");
    }
    // The cached reader is retried or replaced; a generous bound.
    let mut last = None;
    let back = wait_until(Duration::from_secs(30), || {
        let (get, len, sha) = client.get_sha256("/file.bin");
        let ok = get.status == 200 && len == content.len && sha == content.sha256();
        last = Some((get.status, len));
        ok
    });
    assert!(back, "file unreadable after the outage ended: {last:?}");
}

// ---- 6. local secrets ----

#[test]
fn the_data_dir_and_the_namespace_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let mode = |path: &std::path::Path| {
        fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&server.data_dir()), 0o700, "data dir");
    let db = server.data_dir().join("namespace.db");
    assert_eq!(mode(&db), 0o600, "namespace.db");
}

/// Runs the griddav binary with `args`, `stdin` as its standard input.
fn griddav(data_dir: &std::path::Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run griddav");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("griddav output")
}

#[test]
fn get_and_verify_take_the_capability_from_standard_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let content = Content::new(61, 2 * MIB + 17).bytes();
    let put = griddav(dir.path(), &["put", "-"], &content);
    assert!(put.status.success(), "put: {put:?}");
    let cap = String::from_utf8(put.stdout).expect("cap text");
    let cap = cap.trim();
    assert!(cap.starts_with("griddav:"), "{cap}");

    for args in [&["get"][..], &["get", "-"][..]] {
        let get = griddav(dir.path(), args, format!("{cap}\n").as_bytes());
        assert!(get.status.success(), "{args:?}: {get:?}");
        assert!(get.stdout == content, "{args:?}: other bytes");
    }
    let verify = griddav(dir.path(), &["verify"], cap.as_bytes());
    assert!(verify.status.success(), "verify: {verify:?}");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("intact"));
    // A wrong capability on stdin is an error, not a silent success.
    let wrong = griddav(dir.path(), &["get", "-"], b"not a capability\n");
    assert!(!wrong.status.success());
}
