//! `[encoding] format = "tahoe-chk"` over WebDAV on local stores: a PUT
//! whose size is known (Content-Length) becomes a Tahoe-LAFS file, a
//! `URI:LIT:` capability up to 55 bytes and `URI:CHK:` shares past that,
//! whatever the inline threshold; a chunked PUT of unknown size stays
//! `griddav-v1`. The
//! shares are decoded with the engine's Tahoe decoder, as `tahoe get` would
//! (tests/tahoe_chk_put.rs does that with stock Tahoe).

mod support;

use std::process::{Command, Stdio};

use griddav::engine::chk::decode::decode_all;
use griddav::engine::chk::uri::{ChkCap, LitCap};
use griddav::grid::{grid_of_dirs_beside, StorageIndex};
use support::{Content, Request, Server};

const CONFIG: &str = "[encoding]\nformat = \"tahoe-chk\"\nsegment_size = 65536\n";

fn cap_of(server: &Server, path: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["cap", path])
        .stdin(Stdio::null())
        .output()
        .expect("run griddav cap");
    assert!(
        out.status.success(),
        "griddav cap {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The file's bytes, decoded from the immutable shares on the server's
/// local stores.
fn decode_from_grid(server: &Server, cap: &ChkCap) -> Vec<u8> {
    let stores = grid_of_dirs_beside(&server.data_dir().join("grid"), 10).expect("open stores");
    let si = StorageIndex::from_bytes(cap.storage_index());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let shares: Vec<(u16, Vec<u8>)> = runtime.block_on(async {
        let mut shares = Vec::new();
        for store in &stores {
            for info in store.list_immutable(si).await.expect("list") {
                let bytes = store
                    .read_immutable(si, info.share, 0..info.len)
                    .await
                    .expect("read share");
                shares.push((u16::from(info.share.0), bytes.to_vec()));
            }
        }
        shares
    });
    assert_eq!(shares.len(), usize::from(cap.n), "every share stored");
    let refs: Vec<(u16, &[u8])> = shares.iter().map(|(n, b)| (*n, &b[..])).collect();
    decode_all(cap, &refs).expect("decode")
}

#[test]
fn puts_of_known_size_become_tahoe_files() {
    let server = Server::start_with_config(CONFIG);
    let client = server.client();
    for (i, len) in [0u64, 1, 55, 56, 4096, 65536, 65537, 300_001]
        .into_iter()
        .enumerate()
    {
        let content = Content::new(i as u64 + 1, len);
        let path = format!("/f{len}.bin");
        let put = client.put(&path, content.bytes());
        assert!(put.is_success(), "PUT {len} bytes: {}", put.status);
        let cap = cap_of(&server, &path);
        if len <= 55 {
            assert!(cap.starts_with("URI:LIT:"), "{len} bytes: {cap}");
            assert_eq!(LitCap::parse(&cap).expect("LIT").data, content.bytes());
        } else {
            // 4096 bytes is below the inline threshold, yet stored as CHK
            // so that `tahoe get` reads it.
            assert!(cap.starts_with("URI:CHK:"), "{len} bytes: {cap}");
            let chk = ChkCap::parse(&cap).expect("CHK");
            assert_eq!((chk.k, chk.n, chk.size), (3, 10, len));
            assert_eq!(decode_from_grid(&server, &chk), content.bytes(), "{len}");
        }
    }
}

#[test]
fn a_chunked_put_of_unknown_size_stays_griddav_v1_and_a_short_body_publishes_nothing() {
    let server = Server::start_with_config(CONFIG);
    let client = server.client();
    let content = Content::new(9, 200_000);
    let put = client.send(
        Request::new("PUT", "/chunked.bin")
            .body(content.bytes())
            .chunked(),
    );
    assert!(put.is_success(), "{}", put.status);
    let cap = cap_of(&server, "/chunked.bin");
    assert!(cap.starts_with("griddav:1:"), "{cap}");
    let (get, len, sha) = client.get_sha256("/chunked.bin");
    assert_eq!((get.status, len, sha), (200, 200_000, content.sha256()));

    // Finder's chunked body declares its size in X-Expected-Entity-Length:
    // known before the bytes, so a Tahoe file.
    let finder = client.send(
        Request::new("PUT", "/finder.bin")
            .header("X-Expected-Entity-Length", "200000")
            .body(content.bytes())
            .chunked(),
    );
    assert!(finder.is_success(), "{}", finder.status);
    let cap = cap_of(&server, "/finder.bin");
    assert!(cap.starts_with("URI:CHK:"), "{cap}");
    let chk = ChkCap::parse(&cap).expect("CHK");
    assert_eq!(decode_from_grid(&server, &chk), content.bytes());

    // A body shorter than its Content-Length publishes nothing and leaves
    // no finished share behind.
    let before = server.grid().share_bytes();
    let short = client.send(
        Request::new("PUT", "/short.bin")
            .body(Content::new(3, 100_000).bytes())
            .content_length(150_000)
            .ending(support::Ending::ShutdownWrite),
    );
    assert!(!short.is_success());
    assert_eq!(client.get("/short.bin").status, 404);
    let mut after = server.grid();
    for _ in 0..100 {
        if after.share_bytes() == before && after.incoming_bytes() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        after = server.grid();
    }
    assert_eq!(
        after.share_bytes(),
        before,
        "shares of the aborted upload left behind"
    );
    assert_eq!(after.incoming_bytes(), 0, "partial shares left behind");
}
