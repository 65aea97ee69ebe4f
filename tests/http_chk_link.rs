//! Tahoe-LAFS CHK files served over WebDAV: shares written by the CHK
//! encoder (byte-identical with Tahoe's, src/engine/chk) straight into the
//! server's local grid, linked with `PUT` + `Griddav-Link`, read back with
//! GET and Range GET, also with 7 of 10 shares gone; bad, unreadable and
//! misused links refused with a reason, and the capability never logged.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use griddav::engine::chk::encode::encode_all;
use griddav::engine::chk::params::ChkParams;
use griddav::engine::chk::uri::ChkCap;
use griddav::grid::{grid_of_dirs_beside, ShareNum, ShareSecrets, ShareStore, StorageIndex};
use support::http::Request;
use support::Server;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The server's ten local stores, opened beside it.
fn stores(server: &Server) -> Vec<Arc<dyn ShareStore>> {
    grid_of_dirs_beside(&server.data_dir().join("grid"), 10).expect("open the local grid")
}

/// Encodes `bytes` 3-of-10 as Tahoe would and puts share i on server i.
fn upload_chk(server: &Server, bytes: &[u8], key: [u8; 16]) -> ChkCap {
    let params = ChkParams::for_upload(bytes.len() as u64, 3, 10, 100_000).expect("params");
    let (shares, cap) = encode_all(key, params, bytes).expect("encode");
    let si = StorageIndex::from_bytes(cap.storage_index());
    let stores = stores(server);
    let secrets = ShareSecrets {
        write_enabler: [1; 32],
        lease_renew: [2; 32],
        lease_cancel: [3; 32],
    };
    runtime().block_on(async {
        for (i, share) in shares.into_iter().enumerate() {
            let len = share.len() as u64;
            let mut w = stores[i]
                .create_immutable(si, ShareNum(i as u8), len, &secrets)
                .await
                .expect("create");
            w.append(Bytes::from(share)).await.expect("append");
            w.finish(len).await.expect("finish");
        }
    });
    cap
}

fn link(server: &Server, path: &str, cap: &str) -> support::http::Response {
    server.client().send(
        Request::new("PUT", path)
            .header("Griddav-Link", cap)
            .content_length(0),
    )
}

#[test]
fn a_linked_chk_file_reads_back_whole_and_in_ranges_with_seven_shares_gone() {
    let server = Server::start();
    let bytes = data(450_000);
    let cap = upload_chk(&server, &bytes, [0x42; 16]);
    let uri = cap.to_uri();

    let linked = link(&server, "/tahoe.bin", &uri);
    assert_eq!(linked.status, 201, "{}", linked.text());
    assert_eq!(link(&server, "/tahoe.bin", &uri).status, 204);

    let got = server.client().get("/tahoe.bin");
    assert_eq!(got.status, 200);
    assert!(got.body == bytes, "whole file differs");
    let range = server
        .client()
        .send(Request::new("GET", "/tahoe.bin").header("Range", "bytes=199990-300009"));
    assert_eq!(range.status, 206);
    assert!(range.body == bytes[199_990..300_010], "range differs");

    // Seven servers lose their shares, the data shares among them.
    let si = StorageIndex::from_bytes(cap.storage_index());
    let stores = stores(&server);
    runtime().block_on(async {
        for store in &stores[..7] {
            let secrets = ShareSecrets {
                write_enabler: [1; 32],
                lease_renew: [2; 32],
                lease_cancel: [3; 32],
            };
            store.delete_immutable(si, &secrets).await.expect("delete");
        }
    });
    let range = server
        .client()
        .send(Request::new("GET", "/tahoe.bin").header("Range", "bytes=225000-225099"));
    assert_eq!(range.status, 206);
    assert!(range.body == bytes[225_000..225_100], "range differs");
    let got = server.client().get("/tahoe.bin");
    assert_eq!(got.status, 200);
    assert!(got.body == bytes, "whole file differs with 3 shares");

    // One more gone: an error status, never wrong or short data.
    runtime().block_on(async {
        let secrets = ShareSecrets {
            write_enabler: [1; 32],
            lease_renew: [2; 32],
            lease_cancel: [3; 32],
        };
        stores[7]
            .delete_immutable(si, &secrets)
            .await
            .expect("delete");
    });
    let copy = server
        .client()
        .send(Request::new("COPY", "/tahoe.bin").header("Destination", "/again.bin"));
    assert_eq!(copy.status, 201);
    let failed = server.client().get("/again.bin");
    assert!(failed.status >= 500, "{}", failed.status);

    assert!(
        !server.log_tail().contains(&uri[8..40]),
        "the capability was logged"
    );
}

#[test]
fn bad_unreadable_and_misused_links_are_refused_with_a_reason() {
    let server = Server::start();
    let bytes = data(5_000);
    let cap = upload_chk(&server, &bytes, [0x17; 16]);
    let uri = cap.to_uri();

    let bad = link(&server, "/x.bin", "URI:CHK:nonsense");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("not a capability"), "{}", bad.text());

    let mut other = cap.clone();
    other.ueb_hash[3] ^= 1;
    let unreadable = link(&server, "/x.bin", &other.to_uri());
    assert_eq!(unreadable.status, 422, "{}", unreadable.text());
    assert!(unreadable.text().contains("cannot be read"));
    assert_eq!(server.client().get("/x.bin").status, 404);

    let with_body = server.client().send(
        Request::new("PUT", "/x.bin")
            .header("Griddav-Link", &uri)
            .body(b"hello".to_vec()),
    );
    assert_eq!(with_body.status, 400);
    assert!(with_body.text().contains("body must be empty"));
    assert_eq!(server.client().get("/x.bin").status, 404);

    assert_eq!(link(&server, "/no/such/folder.bin", &uri).status, 409);
    assert_eq!(
        server.client().send(Request::new("MKCOL", "/d")).status,
        201
    );
    assert_eq!(link(&server, "/d", &uri).status, 409);

    let lit = link(&server, "/hello.txt", "URI:LIT:nbswy3dp");
    assert_eq!(lit.status, 201);
    assert_eq!(server.client().get("/hello.txt").body, b"hello");

    let ok = link(&server, "/d/x.bin", &uri);
    assert_eq!(ok.status, 201);
    assert!(server.client().get("/d/x.bin").body == bytes);
    assert_eq!(
        server
            .client()
            .send(Request::new("DELETE", "/d/x.bin"))
            .status,
        204
    );
    assert!(
        !server.log_tail().contains(&uri[8..40]),
        "the capability was logged"
    );
}

fn griddav(server: &Server, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_griddav"))
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run griddav");
    let _ = child.stdin.take().expect("stdin is piped").write_all(stdin);
    child.wait_with_output().expect("wait for griddav")
}

/// `griddav link` (capability on standard input), `get`, `verify` and
/// `check --deep` on a CHK file; one share corrupted on disk is named by
/// both, and a repair asked for says it is not supported.
#[test]
fn the_cli_links_reads_and_checks_chk_files() {
    let server = Server::start();
    let bytes = data(250_000);
    let cap = upload_chk(&server, &bytes, [0x55; 16]);
    let uri = cap.to_uri();

    let unreadable = griddav(&server, &["link", "URI:CHK:x", "/bad.bin"], b"");
    assert!(!unreadable.status.success());
    let linked = griddav(
        &server,
        &["link", "/cli.bin"],
        format!("{uri}\n").as_bytes(),
    );
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    assert!(server.client().get("/cli.bin").body == bytes);
    let got = griddav(&server, &["get", "-"], uri.as_bytes());
    assert!(got.status.success());
    assert!(got.stdout == bytes);
    let verify = griddav(&server, &["verify"], uri.as_bytes());
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let check = griddav(&server, &["check", "--deep"], b"");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // A byte in the middle of share 4's blocks flips on disk.
    let si = StorageIndex::from_bytes(cap.storage_index()).to_base32();
    let path = server.share_dirs()[4].join(&si[..2]).join(&si).join("4");
    let mut share = std::fs::read(&path).expect("share 4 on disk");
    share[0x24 + 20_000] ^= 0x10;
    std::fs::write(&path, share).expect("corrupt share 4");

    let verify = griddav(&server, &["verify", &uri], b"");
    assert!(!verify.status.success());
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        said.contains("share sh4") && said.contains("corrupt"),
        "{said}"
    );
    let shallow = griddav(&server, &["check"], b"");
    assert!(shallow.status.success(), "a shallow check reads no block");
    let deep = griddav(&server, &["check", "--deep"], b"");
    assert!(!deep.status.success());
    let said = String::from_utf8_lossy(&deep.stdout);
    assert!(said.contains("/cli.bin") && said.contains("sh4"), "{said}");
    let repair = griddav(&server, &["check", "--deep", "--repair"], b"");
    assert!(!repair.status.success());
    let said = String::from_utf8_lossy(&repair.stdout);
    assert!(said.contains("not supported"), "{said}");
    // Reading goes on without it.
    assert!(server.client().get("/cli.bin").body == bytes);
}
