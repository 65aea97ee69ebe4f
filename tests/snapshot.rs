//! The namespace in the grid: the root secret and its recovery key, copies
//! of the namespace, `griddav recover`, and the graceful shutdown that
//! takes the last copy.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use support::Server;

fn griddav(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run griddav");
    // griddav may exit before it reads its input.
    let _ = child.stdin.take().expect("stdin is piped").write_all(stdin);
    child.wait_with_output().expect("wait for griddav")
}

#[test]
fn serve_makes_the_root_secret_and_recovery_key_prints_it() {
    let server = Server::start();
    let path = server.data_dir().join("root-secret");
    let secret = std::fs::read(&path).expect("serve made the root secret");
    assert_eq!(secret.len(), 32);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the root secret is the owner's only");

    let data_dir = server.data_dir();
    let out = griddav(
        &[
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "recovery-key".as_ref(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let groups: Vec<&str> = words.split('-').collect();
    assert_eq!(groups.len(), 14, "{words}");
    assert!(groups.iter().all(|g| g.len() == 4), "{words}");
    // The key is the secret: base32 of its 32 bytes and a checksum.
    let decoded = data_encoding::BASE32_NOPAD
        .decode(words.replace('-', "").to_uppercase().as_bytes())
        .unwrap();
    assert_eq!(&decoded[..32], &secret[..]);
    // Asking again prints the same key; the secret is never made anew.
    let again = griddav(
        &[
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "recovery-key".as_ref(),
        ],
        b"",
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), words);
    assert_eq!(std::fs::read(&path).unwrap(), secret);
}

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::{Client, Request};

const ALLPROP: &str =
    r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

/// A tree of `files` files under nested folders: every seventh file is
/// larger than the inline threshold (so it lives in the grid), the rest
/// inline; every fifth file and every folder gets dead properties.
/// Returns the folders, in creation order.
pub fn build_tree(client: &Client, files: usize) -> Vec<String> {
    let mut folders = vec!["/".to_owned()];
    for a in 0..5 {
        let top = format!("/d{a}/");
        assert_eq!(client.mkcol(&top).status, 201, "MKCOL {top}");
        folders.push(top.clone());
        for b in 0..3 {
            let sub = format!("{top}s{b}/");
            assert_eq!(client.mkcol(&sub).status, 201, "MKCOL {sub}");
            folders.push(sub.clone());
            let deep = format!("{sub}deep é/");
            let status = client.mkcol(&encode(&deep)).status;
            assert_eq!(status, 201, "MKCOL {deep}");
            folders.push(deep);
        }
    }
    for i in 0..files {
        let folder = &folders[i % folders.len()];
        let path = format!("{folder}f{i}.bin");
        let body = content(i);
        let put = client.put(&encode(&path), body);
        assert!(put.is_success(), "PUT {path}: {}", put.status);
        if i % 5 == 0 {
            proppatch(client, &path, i);
        }
    }
    for (i, folder) in folders.iter().enumerate() {
        proppatch(client, folder, 10_000 + i);
    }
    folders
}

fn content(i: usize) -> Vec<u8> {
    let len = if i % 7 == 0 { 20_000 + i } else { 10 + i % 300 };
    (0..len).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect()
}

fn encode(path: &str) -> String {
    path.replace(' ', "%20").replace('é', "%C3%A9")
}

fn proppatch(client: &Client, path: &str, i: usize) {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:griddav-test"><D:set><D:prop><T:color>c{i}</T:color><T:note>note &amp; {i}</T:note></D:prop></D:set></D:propertyupdate>"#
    );
    let response = client.send(
        Request::new("PROPPATCH", &encode(path))
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body),
    );
    assert_eq!(response.status, 207, "PROPPATCH {path}");
}

/// Everything a client can see of the tree: each folder's Depth 1 allprop
/// answer (names, sizes, times, ETags, dead properties) and each file's
/// content.
pub fn snapshot_of(client: &Client, folders: &[String], files: usize) -> BTreeMap<String, Vec<u8>> {
    let mut seen = BTreeMap::new();
    for folder in folders {
        let answer = client.send(
            Request::new("PROPFIND", &encode(folder))
                .header("Depth", "1")
                .header("Content-Type", "application/xml; charset=utf-8")
                .body(ALLPROP.to_owned()),
        );
        assert_eq!(answer.status, 207, "PROPFIND {folder}");
        seen.insert(format!("PROPFIND {folder}"), answer.body);
    }
    for i in 0..files {
        let path = format!("{}f{i}.bin", folders[i % folders.len()]);
        let get = client.get(&encode(&path));
        assert_eq!(get.status, 200, "GET {path}");
        seen.insert(format!("GET {path}"), get.body);
    }
    seen
}

fn recovery_key(data_dir: &std::path::Path) -> String {
    let out = griddav(
        &[
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "recovery-key".as_ref(),
        ],
        b"",
    );
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn recover(
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    key: &str,
    force: bool,
) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--data-dir".as_ref(), data_dir.as_os_str()];
    if let Some(config) = config {
        args.push("--config".as_ref());
        args.push(config.as_os_str());
    }
    args.push("recover".as_ref());
    if force {
        args.push("--force".as_ref());
    }
    griddav(&args, format!("{key}\n").as_bytes())
}

/// The recovery round trip on `server`: build, stop (the last copy),
/// delete what `delete` names, recover, start, compare.
pub fn round_trip(
    server: &mut Server,
    config: Option<&std::path::Path>,
    files: usize,
    delete_all: bool,
) {
    let client = server.client();
    let started = Instant::now();
    let folders = build_tree(&client, files);
    eprintln!(
        "built {files} files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let before = snapshot_of(&client, &folders, files);
    let key = recovery_key(&server.data_dir());
    let status = server.stop();
    assert!(status.success(), "SIGTERM: {status}\n{}", server.log_tail());
    let log = server.log_tail();
    assert!(log.contains("namespace copied into the grid"), "{log}");

    let data = server.data_dir();
    if delete_all {
        std::fs::remove_dir_all(&data).unwrap();
    } else {
        for name in [
            "namespace.db",
            "namespace.db-wal",
            "namespace.db-shm",
            "root-secret",
            "root-record",
        ] {
            let _ = std::fs::remove_file(data.join(name));
        }
    }
    let bad_key = {
        let mut k: Vec<char> = key.chars().collect();
        k[0] = if k[0] == 'a' { 'b' } else { 'a' };
        k.into_iter().collect::<String>()
    };
    let refused = recover(&data, config, &bad_key, false);
    assert!(!refused.status.success(), "a mistyped key is refused");

    let out = recover(&data, config, &key, false);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "recover failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{files} files: {stdout}");
    // A second recover would replace the namespace: refused without --force.
    let again = recover(&data, config, &key, false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = recover(&data, config, &key, true);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(String::from_utf8_lossy(&forced.stdout).contains("set aside"));

    server.launch();
    let after = snapshot_of(&server.client(), &folders, files);
    assert_eq!(before.len(), after.len());
    for (what, body) in &before {
        assert!(
            after.get(what) == Some(body),
            "{what} differs after recovery:\nbefore: {}\nafter:  {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(after.get(what).map_or(&[][..], |b| &b[..]))
        );
    }
    assert_eq!(
        recovery_key(&server.data_dir()),
        key,
        "the recovered directory keeps its key"
    );
}

#[test]
fn a_deleted_namespace_is_recovered_from_the_local_grid() {
    let mut server = Server::start();
    round_trip(&mut server, None, 1000, false);
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_a_lost_data_directory_is_recovered_from_the_grid() {
    let config = std::path::PathBuf::from(
        std::env::var_os("GRIDDAV_TAHOE_CONFIG")
            .expect("GRIDDAV_TAHOE_CONFIG: the config of a running tests/tahoe/harness.sh"),
    );
    let toml = std::fs::read_to_string(&config).expect("harness config");
    let mut server = Server::start_with_config(&toml);
    round_trip(&mut server, Some(&config), 1000, true);
}

#[test]
fn sigterm_during_a_slow_put_exits_within_grace_and_leaves_nothing() {
    let mut server = Server::start_with_config("shutdown_grace_secs = 2\n");
    let client = server.client();
    assert_eq!(client.put("/kept.bin", vec![7u8; 100_000]).status, 201);
    // 8 MiB at 256 KiB/s: half a minute, far past the grace period.
    let size = 8u64 << 20;
    let slow = std::thread::spawn(move || {
        client.send(
            Request::new("PUT", "/slow.bin")
                .content_length(size)
                .pieces((0..size / 4096).map(|_| vec![1u8; 4096]))
                .throttle(256 << 10),
        )
    });
    assert!(support::wait_until(Duration::from_secs(20), || server
        .grid()
        .incoming_bytes()
        > 0));
    let stopping = Instant::now();
    let status = server.stop();
    let took = stopping.elapsed();
    assert!(status.success(), "{status}\n{}", server.log_tail());
    // Generous: the grace (2 s), the aborts and the last copy.
    assert!(took < Duration::from_secs(20), "exit took {took:?}");
    let log = server.log_tail();
    for step in [
        "shutting down",
        "stopped accepting connections",
        "grace period over",
        // Logged once the aborted upload's journal entry is gone, which
        // its abort ends after removing the shares.
        "no upload left: every unfinished one was aborted",
        "namespace copied into the grid",
        "stopped",
    ] {
        assert!(log.contains(step), "no {step:?} in the log:\n{log}");
    }
    let _ = slow.join();
    let grid = server.grid();
    assert!(
        grid.incoming.is_empty(),
        "partial shares left: {:?}",
        grid.incoming
    );

    server.launch();
    let client = server.client();
    assert_eq!(client.get("/slow.bin").status, 404);
    assert_eq!(client.get("/kept.bin").body, vec![7u8; 100_000]);
    let log = server.log_tail();
    assert!(
        !log.contains("interrupted"),
        "the restart found leftovers:\n{log}"
    );
}

/// Copies follow changes within the interval, none is taken while nothing
/// changes, and beyond `snapshot_keep` the oldest are freed.
#[test]
fn copies_follow_changes_and_old_ones_are_freed() {
    let mut server = Server::start_with_config(
        "snapshot_interval_secs = 1\nsnapshot_keep = 2\ngc_grace_secs = 0\n",
    );
    let client = server.client();
    assert_eq!(client.put("/grid.bin", vec![3u8; 50_000]).status, 201);
    let copies = |server: &Server| {
        server
            .log_tail()
            .matches("namespace copied into the grid")
            .count()
    };
    for round in 1..=4 {
        assert_eq!(
            client
                .put(&format!("/note{round}.txt"), vec![b'x'; round])
                .status,
            201
        );
        assert!(
            support::wait_until(Duration::from_secs(20), || copies(&server) >= round),
            "copy {round} not taken within 20 s:\n{}",
            server.log_tail()
        );
    }
    // Idle: no further copies.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        copies(&server),
        4,
        "copies without changes:\n{}",
        server.log_tail()
    );
    // The file's 10 shares and the 2 newest copies' 20: the 2 oldest freed.
    assert!(
        support::wait_until(Duration::from_secs(20), || server.grid().shares.len() == 30),
        "shares: {}",
        server.grid().shares.len()
    );
    // SIGUSR1 copies at once, changed or not.
    let pid = server.pid().to_string();
    assert!(Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap()
        .success());
    assert!(support::wait_until(Duration::from_secs(20), || copies(
        &server
    ) == 5));
    assert!(server.stop().success());
}
