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
    // Every copy full: each is one file, freed on its own.
    let mut server = Server::start_with_config(
        "snapshot_interval_secs = 1\nsnapshot_keep = 2\ngc_grace_secs = 0\n\
         snapshot_max_increments = 0\n",
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

/// The whole log (of every start) without its colours.
fn plain_log(server: &Server) -> String {
    let log = std::fs::read_to_string(server.data_dir().parent().unwrap().join("server.log"))
        .unwrap_or_default();
    let mut plain = String::with_capacity(log.len());
    let mut rest = log.as_str();
    while let Some(at) = rest.find('\x1b') {
        plain.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    plain.push_str(rest);
    plain
}

fn copies_logged(server: &Server) -> usize {
    plain_log(server)
        .matches("namespace copied into the grid")
        .count()
}

/// Sends SIGUSR1 and waits for the copy it asks for.
fn copy_now(server: &Server) {
    let before = copies_logged(server);
    let pid = server.pid().to_string();
    assert!(Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        support::wait_until(Duration::from_secs(30), || copies_logged(server) > before),
        "no copy within 30 s:\n{}",
        server.log_tail()
    );
}

/// After a base, copies are increments (a few pages, not the namespace);
/// a chain stays whole while a copy in the record builds on it, and is
/// freed once a newer base has taken over.
#[test]
fn increments_follow_a_base_and_a_chain_is_freed_once_a_newer_base_is_named() {
    let mut server = Server::start_with_config(
        "snapshot_interval_secs = 0\nsnapshot_keep = 1\ngc_grace_secs = 0\n\
         snapshot_max_increments = 2\n",
    );
    let client = server.client();
    assert_eq!(client.put("/grid.bin", vec![3u8; 50_000]).status, 201);
    for i in 0..200 {
        assert_eq!(
            client.put(&format!("/n{i}.txt"), vec![b'n'; 100]).status,
            201
        );
    }
    let shares = |server: &Server| server.grid().shares.len();
    copy_now(&server);
    assert!(
        plain_log(&server).contains("kind=\"base\""),
        "{}",
        server.log_tail()
    );
    assert_eq!(shares(&server), 20, "the file's 10 and the base's 10");
    for round in 1..=2 {
        assert_eq!(
            client.put(&format!("/r{round}.txt"), vec![b'r'; 10]).status,
            201
        );
        copy_now(&server);
        let log = plain_log(&server);
        assert!(
            log.contains(&format!("kind=\"increment {round}\"")),
            "{log}"
        );
        // keep = 1: the record names the increment only, which needs the
        // base and the increments before it: nothing is freed.
        assert_eq!(shares(&server), 20 + 10 * round);
    }
    let sizes: Vec<u64> = plain_log(&server)
        .lines()
        .filter(|l| l.contains("namespace copied into the grid"))
        .filter_map(|l| {
            let at = l.find(" bytes=")? + 7;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(sizes.len(), 3, "{}", server.log_tail());
    assert!(
        sizes[1] * 2 < sizes[0] && sizes[2] * 2 < sizes[0],
        "increments are not smaller than the base: {sizes:?}"
    );
    // Two increments: the next copy is a base, and the old chain goes.
    assert_eq!(client.put("/r3.txt", vec![b'r'; 10]).status, 201);
    copy_now(&server);
    let log = plain_log(&server);
    assert_eq!(log.matches("kind=\"base\"").count(), 2, "{log}");
    assert!(
        support::wait_until(Duration::from_secs(20), || shares(&server) == 20),
        "the old chain is not freed: {} shares",
        shares(&server)
    );
    assert!(server.stop().success());
}

const LOCKINFO: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>recovery test</D:owner></D:lockinfo>"#;

/// Every folder's Depth 1 allprop answer and every file's content, found
/// by walking the tree from `/`.
fn walk(client: &Client) -> BTreeMap<String, Vec<u8>> {
    let mut seen = BTreeMap::new();
    let mut folders = vec!["/".to_owned()];
    while let Some(folder) = folders.pop() {
        let answer = client.send(
            Request::new("PROPFIND", &folder)
                .header("Depth", "1")
                .header("Content-Type", "application/xml; charset=utf-8")
                .body(ALLPROP.to_owned()),
        );
        assert_eq!(answer.status, 207, "PROPFIND {folder}");
        let text = answer.text();
        for piece in text.split("href>").skip(1).step_by(2) {
            let href = piece.split("</").next().unwrap_or_default().to_owned();
            // Lock tokens are hrefs too (urn:uuid:...).
            if href == folder || !href.starts_with('/') {
                continue;
            }
            if href.ends_with('/') {
                folders.push(href);
            } else {
                let get = client.get(&href);
                assert_eq!(get.status, 200, "GET {href}");
                seen.insert(format!("GET {href}"), get.body);
            }
        }
        // A lock's remaining time counts down between the two walks.
        let mut redacted = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("Second-") {
            redacted.push_str(&rest[..at + 7]);
            rest = rest[at + 7..].trim_start_matches(|c: char| c.is_ascii_digit());
            redacted.push('N');
        }
        redacted.push_str(rest);
        seen.insert(format!("PROPFIND {folder}"), redacted.into_bytes());
    }
    seen
}

/// Recovery rebuilds the namespace from a base and several increments
/// holding deletes, moves (of files and of a folder), properties set and
/// removed, and locks taken and released: every PROPFIND answer and every
/// byte is as before, and a lock still holds.
#[test]
fn recovery_crosses_increments_with_deletes_moves_properties_and_locks() {
    let mut server = Server::start_with_config("snapshot_interval_secs = 0\n");
    let client = server.client();
    let files = 300;
    let folders = build_tree(&client, files);
    // Ballast, so that the changes below stay well under the size of the
    // namespace and all go into increments on one base.
    assert_eq!(client.mkcol("/ballast/").status, 201);
    for i in 0..80 {
        let put = client.put(&format!("/ballast/b{i}.bin"), vec![i as u8; 15_000]);
        assert_eq!(put.status, 201);
    }
    copy_now(&server);
    // Increment 1: deletes.
    for i in (0..files).step_by(9) {
        let path = format!("{}f{i}.bin", folders[i % folders.len()]);
        assert_eq!(client.delete(&encode(&path)).status, 204, "DELETE {path}");
    }
    copy_now(&server);
    // Increment 2: moves, a folder with everything in it among them.
    let moved = client.send(
        Request::new("MOVE", "/d1/s2/")
            .header("Destination", "/d4/moved%20here/")
            .header("Overwrite", "F"),
    );
    assert_eq!(moved.status, 201, "MOVE folder");
    for i in [1, 2, 3, 4, 5, 6] {
        let from = format!("{}f{i}.bin", folders[i % folders.len()]);
        let moved = client.send(Request::new("MOVE", &encode(&from)).header(
            "Destination",
            &format!("/d0/renamed {i}.bin").replace(' ', "%20"),
        ));
        assert!(moved.is_success(), "MOVE {from}: {}", moved.status);
    }
    copy_now(&server);
    // Increment 3: properties set anew and removed.
    for i in (10..files).step_by(10) {
        let path = format!("{}f{i}.bin", folders[i % folders.len()]);
        let exists = client.get(&encode(&path)).status == 200;
        if exists {
            proppatch(&client, &path, 50_000 + i);
        }
    }
    let remove = r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:griddav-test"><D:remove><D:prop><T:note/></D:prop></D:remove></D:propertyupdate>"#;
    let removed = client.send(
        Request::new("PROPPATCH", "/d2/")
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(remove),
    );
    assert_eq!(removed.status, 207);
    copy_now(&server);
    // Increment 4: locks, one released again, one kept; then a PUT in the
    // final copy taken at shutdown.
    let lock = |path: &str| {
        let answer = client.send(
            Request::new("LOCK", path)
                .header("Timeout", "Second-3600")
                .header("Content-Type", "application/xml; charset=utf-8")
                .body(LOCKINFO),
        );
        assert!(answer.is_success(), "LOCK {path}: {}", answer.text());
        answer.header("Lock-Token").unwrap().to_owned()
    };
    let held = lock("/d3/locked.txt");
    let released = lock("/d0/s0/unlocked.txt");
    let unlocked =
        client.send(Request::new("UNLOCK", "/d0/s0/unlocked.txt").header("Lock-Token", &released));
    assert_eq!(unlocked.status, 204);
    copy_now(&server);
    let put = client.send(
        Request::new("PUT", "/d3/locked.txt")
            .header("If", &format!("({held})"))
            .body(b"written under the lock".to_vec()),
    );
    assert!(put.is_success(), "PUT under the lock: {}", put.status);

    let before = walk(&client);
    assert!(before.len() > files, "{}", before.len());
    let key = recovery_key(&server.data_dir());
    assert!(server.stop().success(), "{}", server.log_tail());
    let log = plain_log(&server);
    assert_eq!(log.matches("kind=\"base\"").count(), 1, "{log}");
    assert!(log.contains("kind=\"increment 5\""), "{log}");
    let copies: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("namespace copied into the grid"))
        .collect();
    assert_eq!(copies.len(), 6, "{copies:#?}");
    let data = server.data_dir();
    for name in [
        "namespace.db",
        "namespace.db-wal",
        "namespace.db-shm",
        "root-record",
    ] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let out = recover(&data, None, &key, false);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "recover failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("a base and 5 increments"), "{stdout}");

    server.launch();
    let client = server.client();
    let after = walk(&client);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (what, body) in &before {
        assert!(
            after.get(what) == Some(body),
            "{what} differs after recovery:\nbefore: {}\nafter:  {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(after.get(what).map_or(&[][..], |b| &b[..]))
        );
    }
    // The lock kept survives; the one released stays released.
    assert_eq!(
        client.put("/d3/locked.txt", b"no token".to_vec()).status,
        423
    );
    assert_eq!(client.get("/d3/locked.txt").body, b"written under the lock");
    assert!(client
        .put("/d0/s0/unlocked.txt", b"free".to_vec())
        .is_success());
}

/// Every row of every table of the database at `db`, in order.
fn dump(db: &std::path::Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut found: Vec<String> = stmt
            .query_map([], |r| {
                let values: Vec<rusqlite::types::Value> =
                    (0..columns).map(|i| r.get(i)).collect::<Result<_, _>>()?;
                Ok(format!("{table}: {values:?}"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        found.sort();
        rows.extend(found);
    }
    rows
}

/// A copy whose root record could not be stored (as if griddav died
/// between shipping an increment and naming it) is never what recovery
/// finds: recovery yields the last copy named, exactly. The next copy is
/// computed from that last named one, so nothing named is lost, whether
/// the same run goes on or a restarted one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_never_named_by_a_record_is_never_restored_and_nothing_named_is_lost() {
    use griddav::engine::{EncodingParams, UploadOptions};
    use griddav::grid::{grid_of_dirs, Grid};
    use griddav::namespace::{Content, Namespace};
    use griddav::snapshot::{recover::recover, CopyKind, RootSecret, Snapshots};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("namespace.db");
    let ns = Namespace::open(&db).await.unwrap();
    let grid_dir = dir.path().join("grid");
    let grid = Grid::new(grid_of_dirs(&grid_dir, 10).unwrap());
    let secret = RootSecret::from_bytes(rand::random());
    let snapshots = || {
        Snapshots::new(
            ns.clone(),
            grid.clone(),
            secret.clone(),
            data.clone(),
            db.clone(),
            EncodingParams::default(),
            UploadOptions::default(),
            10,
        )
    };
    let put = |name: String| {
        let ns = ns.clone();
        async move {
            ns.publish_file(
                &name,
                Content::Inline(name.as_bytes().to_vec()),
                name.len() as u64,
                std::time::SystemTime::now(),
                None,
            )
            .await
            .unwrap();
        }
    };
    let recovered = |n: usize| {
        let (grid, secret, target) = (
            grid.clone(),
            secret.clone(),
            dir.path().join(format!("r{n}")),
        );
        async move {
            let done = recover(&grid, &secret, &target, &target.join("namespace.db"), false)
                .await
                .unwrap();
            (dump(&target.join("namespace.db")), done.increments)
        }
    };
    let records = |broken: bool| {
        for i in 0..10 {
            let records = grid_dir.join(format!("server-{i:02}")).join("records");
            if broken {
                std::fs::rename(&records, records.with_extension("saved")).unwrap();
                std::fs::write(&records, b"not a folder").unwrap();
            } else {
                std::fs::remove_file(&records).unwrap();
                std::fs::rename(records.with_extension("saved"), &records).unwrap();
            }
        }
    };

    for i in 0..300 {
        put(format!("/file {i}")).await;
    }
    let run = snapshots();
    assert_eq!(
        run.copy_if_changed(false).await.unwrap().unwrap().kind,
        CopyKind::Base
    );
    ns.remove("/file 7").await.unwrap();
    put("/second".into()).await;
    assert_eq!(
        run.copy_if_changed(false).await.unwrap().unwrap().kind,
        CopyKind::Increment(1)
    );
    let named = dump(&db);

    // Shipped, but no record names it.
    put("/third".into()).await;
    ns.remove("/file 8").await.unwrap();
    records(true);
    let failed = run.copy_if_changed(false).await;
    assert!(failed.is_err(), "{failed:?}");
    records(false);
    let (found, increments) = recovered(1).await;
    assert_eq!(increments, 1);
    assert_eq!(
        found, named,
        "recovery found more or less than the copy named"
    );

    // The same run goes on: the next increment builds on the one named.
    let next = run.copy_if_changed(false).await.unwrap().unwrap();
    assert_eq!(next.kind, CopyKind::Increment(2));
    let (found, increments) = recovered(2).await;
    assert_eq!(increments, 2);
    assert_eq!(found, dump(&db));

    // A restarted run (nothing of the last in memory) starts a new base;
    // an increment on it failing to be named changes nothing either.
    drop(run);
    let run = snapshots();
    put("/fourth".into()).await;
    assert_eq!(
        run.copy_if_changed(false).await.unwrap().unwrap().kind,
        CopyKind::Base
    );
    let named = dump(&db);
    put("/fifth".into()).await;
    records(true);
    assert!(run.copy_if_changed(false).await.is_err());
    records(false);
    drop(run);
    let (found, increments) = recovered(3).await;
    assert_eq!(increments, 0);
    assert_eq!(found, named);
}
