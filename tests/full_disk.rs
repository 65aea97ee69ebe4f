//! A full disk: a PUT that does not fit answers 507 and leaves the old
//! version and nothing of its own; a DELETE then makes room at once (its
//! garbage freed before the grace period); and with the disk at 0 bytes
//! free, DELETE and MOVE still work while new content is refused.
//!
//! Needs root (it mounts a small tmpfs as the data directory): `.ci/run`
//! runs it with `--include-ignored`.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::http::Request;
use support::server::wait_until;
use support::{Content, Server};

/// Unmounts the tmpfs when the test ends, after the server (declared
/// before it) is gone.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) {
    fs::create_dir_all(dir).expect("create the data directory");
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mount tmpfs on {} (root needed)",
        dir.display()
    );
}

/// Fills the file system of `dir` to 0 bytes free with one file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = fs::File::create(&path).expect("create filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs it"]
fn full_disk_answers_507_keeps_the_old_version_and_a_delete_makes_room() {
    let mut mounted = None;
    let server = Server::start_with_setup("", |data| {
        mount_tmpfs(data, "64m");
        mounted = Some(Mount(data.to_owned()));
    });
    let _mount = mounted;
    let client = server.client();
    let old = Content::new(1, 2_000_000);
    assert_eq!(client.put("/keep.bin", old.bytes()).status, 201);
    let big = Content::new(2, 10_000_000);
    assert_eq!(client.put("/big.bin", big.bytes()).status, 201);

    // About 27 MB of shares for 8 MB of file, with about 16 MB free.
    let new = Content::new(3, 8_000_000);
    let response = client.put("/keep.bin", new.bytes());
    assert_eq!(response.status, 507, "{}", server.log_tail());
    let (get, len, sha) = client.get_sha256("/keep.bin");
    assert_eq!((get.status, len), (200, old.len));
    assert_eq!(sha, old.sha256(), "old version intact");
    assert!(
        wait_until(Duration::from_secs(10), || server
            .grid()
            .incoming
            .is_empty()),
        "the failed PUT left partial shares: {:?}",
        server.grid().incoming
    );

    // A DELETE makes room for the next PUT without waiting for the grace
    // period (an hour by default).
    assert_eq!(client.delete("/big.bin").status, 204);
    let mut last = 0;
    let fitted = wait_until(Duration::from_secs(30), || {
        last = client.put("/keep.bin", new.bytes()).status;
        last == 204 || {
            std::thread::sleep(Duration::from_millis(500));
            false
        }
    });
    assert!(
        fitted,
        "PUT after DELETE answered {last}; log:\n{}",
        server.log_tail()
    );
    let (get, len, sha) = client.get_sha256("/keep.bin");
    assert_eq!((get.status, len), (200, new.len));
    assert_eq!(sha, new.sha256());

    // The disk at 0 bytes free: removals and moves still work, new
    // content is refused with 507.
    let small = Content::new(4, 30_000);
    assert_eq!(client.put("/a.bin", small.bytes()).status, 201);
    assert_eq!(client.put("/b.bin", small.bytes()).status, 201);
    let filler = fill(&server.data_dir());
    assert_eq!(client.put("/c.bin", small.bytes()).status, 507);
    assert_eq!(client.put("/inline", vec![1u8; 100]).status, 507);
    let moved = client.send(
        Request::new("MOVE", "/a.bin")
            .header("Destination", &format!("http://{}/moved.bin", server.addr)),
    );
    assert_eq!(
        moved.status,
        201,
        "MOVE on a full disk; {}",
        server.log_tail()
    );
    assert_eq!(client.delete("/b.bin").status, 204, "{}", server.log_tail());
    assert_eq!(client.get("/moved.bin").status, 200);
    fs::remove_file(filler).expect("remove filler");
    assert!(
        wait_until(Duration::from_secs(30), || client
            .put("/c.bin", small.bytes())
            .status
            == 201),
        "PUT once space is back; log:\n{}",
        server.log_tail()
    );
}
