//! A real S3 server in-process: `s3s-fs` (the `s3s` crate's file-system
//! backend) on a loopback port, with one access key. Used by the S3 store's
//! conformance tests (`src/grid/s3.rs` includes this file) and by the
//! integration tests.
//!
//! Objects live as plain files under `<root>/<bucket>/<key>`, so a test can
//! corrupt one; multipart uploads in progress are `<root>/.upload-*` files.

// Included privately by the S3 store's unit tests and by test crates:
// its `pub` items are their shared API, not the library's.
#![allow(unreachable_pub)]
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const ACCESS_KEY_ID: &str = "griddav-test";
pub const SECRET_ACCESS_KEY: &str = "griddav-test-secret";

/// The server; stopped (its listener and connections dropped) on drop.
pub struct S3Server {
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl S3Server {
    /// Starts a server holding empty `buckets`.
    pub async fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::Builder::new()
            .prefix("griddav-s3-")
            .tempdir()
            .expect("temporary directory");
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).expect("create a bucket");
        }
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs on the directory");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
        ));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        S3Server { addr, root, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The file holding `key` of `bucket`.
    pub fn object_file(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn uploads_in_progress(&self) -> usize {
        std::fs::read_dir(self.root.path())
            .expect("read the server's root")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(".upload"))
            .count()
    }

    /// Every object file under `bucket` (recursively), as keys.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else if let Ok(key) = path.strip_prefix(base) {
                    let key = key.to_string_lossy().into_owned();
                    // s3s-fs keeps metadata beside objects in hidden files.
                    if !key.rsplit('/').next().unwrap_or("").starts_with('.') {
                        out.push(key);
                    }
                }
            }
        }
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }

    /// Stops answering: the listener and every connection go away, as when
    /// the server process dies.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
