//! `griddav serve` over ten real Tahoe-LAFS nodes, driven with a real HTTP
//! client: 200 MiB PUT and GET, nodes killed in the middle of a PUT, too
//! many nodes killed, a share corrupted on a node's disk.
//!
//! Skipped, with a message, unless `GRIDDAV_TAHOE_CONFIG` is the path of the
//! config written by `tests/tahoe/harness.sh start`.

#[path = "tahoe/support.rs"]
mod support;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use support::{content, Harness, MIB};

/// A running `griddav serve`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
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
        Server {
            child,
            addr,
            _data: data,
        }
    }

    async fn send(
        &self,
        request: http::Request<
            http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>,
        >,
    ) -> Result<(http::StatusCode, Sha256, u64), String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let mut body = response.into_body();
        let mut hash = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                hash.update(data);
                len += data.len() as u64;
            }
        }
        Ok((status, hash, len))
    }

    /// PUTs `data` in 256 KiB pieces; `during(offset)` runs before each piece.
    async fn put(
        &self,
        path: &str,
        data: Bytes,
        during: impl FnMut(usize) + Send + Sync + 'static,
    ) -> Result<http::StatusCode, String> {
        let len = data.len();
        let mut during = during;
        let pieces = futures::stream::iter((0..len).step_by(256 << 10)).map(move |offset| {
            during(offset);
            let end = (offset + (256 << 10)).min(len);
            Ok::<_, Infallible>(Frame::data(data.slice(offset..end)))
        });
        let body = StreamBody::new(pieces)
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { match e {} })
            .boxed();
        let request = http::Request::put(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_LENGTH, len)
            .body(body)
            .expect("request");
        self.send(request).await.map(|(status, _, _)| status)
    }

    /// GETs `path`: status, SHA-256 and length of the body.
    async fn get(&self, path: &str) -> (http::StatusCode, [u8; 32], u64) {
        let body = http_body_util::Empty::new()
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { match e {} })
            .boxed();
        let request = http::Request::get(path)
            .header(http::header::HOST, self.addr.to_string())
            .body(body)
            .expect("request");
        let (status, hash, len) = self.send(request).await.expect("GET");
        (status, hash.finalize().into(), len)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn kill(pid: i32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_serve_200_mib_put_and_get() {
    let harness = Harness::get();
    let mib: usize = std::env::var("GRIDDAV_TAHOE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let server = Server::start(&harness);
    runtime().block_on(async {
        let data = Bytes::from(content(mib * MIB, 21));
        let last_piece = (data.len() - 1) / (256 << 10) * (256 << 10);
        let last_sent = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mark = std::sync::Arc::clone(&last_sent);
        let started = Instant::now();
        let status = server
            .put("/big.bin", data.clone(), move |offset| {
                if offset == last_piece {
                    *mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
            })
            .await
            .expect("PUT");
        let up = started.elapsed();
        let close = last_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expect("last piece sent")
            .elapsed();
        assert!(status.is_success(), "PUT: {status}");
        let started = Instant::now();
        let (status, hash, len) = server.get("/big.bin").await;
        let down = started.elapsed();
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(len, data.len() as u64);
        assert!(hash == sha(&data), "GET returned other bytes");
        eprintln!(
            "griddav serve over 10 Tahoe nodes, {mib} MiB: PUT {:.1} s ({:.1} MiB/s, \
             answer {:.0} ms after the last piece was handed to the client), \
             GET {:.1} s ({:.1} MiB/s)",
            up.as_secs_f64(),
            mib as f64 / up.as_secs_f64(),
            close.as_secs_f64() * 1000.0,
            down.as_secs_f64(),
            mib as f64 / down.as_secs_f64()
        );
    });
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_serve_three_nodes_killed_mid_put() {
    let harness = Harness::get();
    let server = Server::start(&harness);
    let pids: Vec<i32> = [2, 5, 9].iter().map(|i| harness.pid(*i)).collect();
    runtime().block_on(async {
        let data = Bytes::from(content(32 * MIB, 23));
        let status = server
            .put("/killed.bin", data.clone(), move |offset| {
                if offset == 8 * MIB {
                    for pid in &pids {
                        kill(*pid, "-KILL");
                    }
                }
            })
            .await
            .expect("PUT");
        assert!(status.is_success(), "PUT with 3 nodes killed: {status}");
        // GET with those three still down.
        let (status, hash, _) = server.get("/killed.bin").await;
        assert_eq!(status, http::StatusCode::OK);
        assert!(hash == sha(&data), "GET returned other bytes");
    });
    drop(server);
    harness.restart_all();
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_serve_fewer_than_happy_fails_cleanly() {
    let harness = Harness::get();
    let server = Server::start(&harness);
    let down = [1, 3, 6, 8];
    let live: Vec<usize> = (0..10).filter(|i| !down.contains(i)).collect();
    let pids: Vec<i32> = down.iter().map(|i| harness.pid(*i)).collect();
    runtime().block_on(async {
        let old = Bytes::from(content(300 << 10, 25));
        let status = server
            .put("/precious.bin", old.clone(), |_| {})
            .await
            .expect("PUT");
        assert!(status.is_success(), "first PUT: {status}");
        let before: Vec<_> = live.iter().map(|i| harness.storage_indexes(*i)).collect();

        let new = Bytes::from(content(16 * MIB, 27));
        let result = server
            .put("/precious.bin", new, move |offset| {
                if offset == 4 * MIB {
                    for pid in &pids {
                        kill(*pid, "-KILL");
                    }
                }
            })
            .await;
        match result {
            Ok(status) => assert!(status.is_server_error(), "PUT below happy: {status}"),
            Err(e) => panic!("PUT below happy: no HTTP answer: {e}"),
        }
        // The previous version is intact, and readable from the live nodes.
        let (status, hash, _) = server.get("/precious.bin").await;
        assert_eq!(status, http::StatusCode::OK);
        assert!(hash == sha(&old), "the previous version changed");
        // No partial share of the failed upload stays on the live nodes.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now: Vec<_> = live.iter().map(|i| harness.storage_indexes(*i)).collect();
            if now == before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "partial shares left on live nodes: before {before:?}, now {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    drop(server);
    harness.restart_all();
}

#[test]
#[ignore = "needs the Tahoe-LAFS nodes of tests/tahoe/harness.sh: set GRIDDAV_TAHOE_CONFIG, run with --ignored"]
fn tahoe_serve_corrupt_share_still_reads_right() {
    let harness = Harness::get();
    let server = Server::start(&harness);
    runtime().block_on(async {
        let before: Vec<_> = (0..10).map(|i| harness.storage_indexes(i)).collect();
        let data = Bytes::from(content(5 * MIB, 29));
        let status = server
            .put("/corrupt.bin", data.clone(), |_| {})
            .await
            .expect("PUT");
        assert!(status.is_success(), "PUT: {status}");
        // The new storage index, and its share 0 (ciphertext, read first).
        let mut new_si = None;
        for (i, old) in before.iter().enumerate() {
            if let Some(si) = harness.storage_indexes(i).difference(old).next() {
                new_si = Some(si.clone());
            }
        }
        let si = new_si.expect("the upload's storage index");
        let mut corrupted = 0;
        for i in 0..10 {
            let file = harness
                .node_dir(i)
                .join("storage/shares")
                .join(&si[..2])
                .join(&si)
                .join("0");
            if let Ok(mut bytes) = std::fs::read(&file) {
                // Inside block 0: past Tahoe's container header (468 bytes),
                // the slot header (24) and the share header (20).
                for b in &mut bytes[468 + 24 + 20 + 5000..468 + 24 + 20 + 5100] {
                    *b ^= 0xa5;
                }
                std::fs::write(&file, &bytes).expect("corrupt");
                corrupted += 1;
            }
        }
        assert_eq!(corrupted, 1, "share 0 of {si} on exactly one node");
        let (status, hash, _) = server.get("/corrupt.bin").await;
        assert_eq!(status, http::StatusCode::OK);
        assert!(hash == sha(&data), "GET returned other bytes");
    });
}
