//! Where small files live: in the namespace database up to
//! `inline_threshold`, in the grid (encrypted) above it, and always in the
//! grid with `inline_threshold = 0`.

mod support;

use support::{Server, INLINE_THRESHOLD};

/// A marker no share or database page holds by chance.
const MARKER: &[u8] = b"griddav-plaintext-marker-7f3a9c";

fn small_file() -> Vec<u8> {
    let mut bytes = MARKER.to_vec();
    bytes.extend_from_slice(b" and a few more bytes");
    bytes
}

/// Whether any file under `dir` (the namespace database, its WAL, the
/// shares) holds `needle` in clear.
fn plaintext_on_disk(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("list the data directory") {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn small_files_live_in_the_namespace_by_default() {
    let server = Server::start();
    let client = server.client();
    assert_eq!(client.put("/small.txt", small_file()).status, 201);
    assert!(small_file().len() as u64 <= INLINE_THRESHOLD);
    assert_eq!(
        server.grid().shares.len(),
        0,
        "a small file stays out of the grid"
    );
    assert!(
        plaintext_on_disk(&server.data_dir(), MARKER),
        "the default keeps small files in clear in namespace.db, as the README says"
    );
    assert_eq!(client.get("/small.txt").body, small_file());
}

#[test]
fn inline_threshold_zero_stores_every_file_encrypted_in_the_grid() {
    let server = Server::start_with_config("inline_threshold = 0\n");
    let client = server.client();
    assert_eq!(client.put("/small.txt", small_file()).status, 201);
    assert_eq!(client.put("/one.txt", b"x".to_vec()).status, 201);
    assert_eq!(
        server.grid().shares.len(),
        20,
        "two files of ten shares each in the grid"
    );
    assert!(
        !plaintext_on_disk(&server.data_dir(), MARKER),
        "no file's bytes are in clear anywhere in the data directory"
    );
    assert_eq!(client.get("/small.txt").body, small_file());
    assert_eq!(client.get("/one.txt").body, b"x");
    // An empty file has no content to store: it stays a row.
    assert_eq!(client.put("/empty.txt", Vec::new()).status, 201);
    assert_eq!(client.get("/empty.txt").body, b"");
    assert_eq!(server.grid().shares.len(), 20);
}
