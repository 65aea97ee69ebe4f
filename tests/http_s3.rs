//! `griddav serve` on a grid of ten S3 servers (s3s-fs, in this process,
//! one bucket each): files round-trip, a PUT goes on when three servers die
//! in its middle, a corrupted object is read around, and deleted files'
//! objects go.

#[path = "support/s3_server.rs"]
mod s3_server;
mod support;

use std::sync::Arc;
use std::time::Duration;

use s3_server::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use support::{sha256_hex, wait_until, Content, Request, Server, MIB};

const SERVERS: usize = 10;

/// Ten S3 servers and the runtime that serves them (its worker threads
/// answer while the test thread makes blocking HTTP requests).
struct S3Grid {
    servers: Vec<Arc<S3Server>>,
    _runtime: tokio::runtime::Runtime,
}

fn bucket(i: usize) -> String {
    format!("griddav-{i:02}")
}

impl S3Grid {
    fn start() -> S3Grid {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the S3 servers");
        let servers = (0..SERVERS)
            .map(|i| Arc::new(runtime.block_on(S3Server::start(&[&bucket(i)]))))
            .collect();
        S3Grid {
            servers,
            _runtime: runtime,
        }
    }

    /// A griddav config with the ten buckets as its servers; the secret of
    /// every other one comes from a file, to use both ways of giving it.
    fn config(&self, secret_file: &std::path::Path) -> String {
        let mut toml = String::from("gc_grace_secs = 0\n[grid]\nservers = [\n");
        for (i, server) in self.servers.iter().enumerate() {
            let secret = if i % 2 == 0 {
                format!("secret_access_key = \"{SECRET_ACCESS_KEY}\"")
            } else {
                format!("secret_access_key_file = \"{}\"", secret_file.display())
            };
            toml.push_str(&format!(
                "  {{ kind = \"s3\", endpoint = \"{}\", bucket = \"{}\", prefix = \"shares-of-griddav\", \
                 access_key_id = \"{ACCESS_KEY_ID}\", {secret}, allow_http = true, timeout_secs = 10 }},\n",
                server.endpoint(),
                bucket(i),
            ));
        }
        toml.push_str("]\n");
        toml
    }

    /// Objects (shares) in each bucket.
    fn objects(&self) -> Vec<Vec<String>> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, server)| server.objects(&bucket(i)))
            .collect()
    }
}

fn start() -> (S3Grid, Server, tempfile::TempDir) {
    let grid = S3Grid::start();
    let secrets = tempfile::tempdir().expect("a directory for the secret");
    let secret_file = secrets.path().join("s3-secret");
    std::fs::write(&secret_file, format!("{SECRET_ACCESS_KEY}\n")).expect("write the secret");
    let server = Server::start_with_config(&grid.config(&secret_file));
    (grid, server, secrets)
}

#[test]
fn files_round_trip_through_ten_s3_servers() {
    let (grid, server, _secrets) = start();
    let client = server.client();
    let content = Content::new(41, 30 * MIB + 12_345);
    let put = client.put("/big.bin", content.bytes());
    assert_eq!(put.status, 201, "{put:?}");
    let (get, len, digest) = client.get_sha256("/big.bin");
    assert_eq!(get.status, 200);
    assert_eq!(len, content.len);
    assert_eq!(digest, sha256_hex(&content.bytes()));

    let objects = grid.objects();
    for (i, keys) in objects.iter().enumerate() {
        assert_eq!(keys.len(), 1, "bucket {i} holds one share: {keys:?}");
        assert!(
            keys[0].starts_with("shares-of-griddav/shares/"),
            "the prefix is used: {keys:?}"
        );
    }

    assert_eq!(client.delete("/big.bin").status, 204);
    assert!(
        wait_until(Duration::from_secs(30), || grid
            .objects()
            .iter()
            .all(Vec::is_empty)),
        "the shares of a deleted file are removed: {:?}",
        grid.objects()
    );
}

#[test]
fn a_put_goes_on_when_three_s3_servers_die_in_its_middle() {
    let (grid, server, _secrets) = start();
    let content = Content::new(42, 40 * MIB);
    let piece = MIB as usize;
    let pieces = content.len as usize / piece;
    let doomed: Vec<Arc<S3Server>> = grid.servers[..3].to_vec();
    let body = {
        (0..pieces).map(move |i| {
            if i == pieces / 2 {
                for server in &doomed {
                    server.kill();
                }
            }
            content.slice((i * piece) as u64, ((i + 1) * piece) as u64)
        })
    };
    let put = server.client().send(
        Request::new("PUT", "/survivor.bin")
            .content_length(content.len)
            .pieces(body),
    );
    assert_eq!(put.status, 201, "{put:?}\n{}", server.log_tail());
    let (get, len, digest) = server.client().get_sha256("/survivor.bin");
    assert_eq!(get.status, 200);
    assert_eq!(len, content.len);
    assert_eq!(digest, sha256_hex(&content.bytes()));
    let live_shares: usize = grid.objects()[3..].iter().map(Vec::len).sum();
    assert_eq!(live_shares, 7, "the seven live servers hold a share each");
}

#[test]
fn a_corrupted_object_is_detected_and_read_around() {
    let (grid, server, _secrets) = start();
    let client = server.client();
    let content = Content::new(43, 6 * MIB + 7);
    assert_eq!(client.put("/file.bin", content.bytes()).status, 201);

    // Flip bytes in the middle of every share object of three servers.
    for i in 0..3 {
        let key = &grid.servers[i].objects(&bucket(i))[0];
        let path = grid.servers[i].object_file(&bucket(i), key);
        let mut bytes = std::fs::read(&path).expect("read an object");
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).expect("corrupt an object");
    }
    let (get, len, digest) = client.get_sha256("/file.bin");
    assert_eq!(get.status, 200);
    assert_eq!(len, content.len);
    assert_eq!(
        digest,
        sha256_hex(&content.bytes()),
        "the right bytes from the seven good shares"
    );
    let log = server.log_tail();
    assert!(
        (0..3).any(|i| log.contains(&format!("s3-{}", bucket(i)))),
        "the corrupt shares are reported with their server:\n{log}"
    );
}
