//! Shares of replaced and deleted versions are freed by the collector once
//! their grace period has passed (`gc_grace_secs = 0` here).

mod support;

use std::time::Duration;

use support::{wait_until, Content, Request, Server, MIB};

/// The collector is woken by new garbage, and wakes by itself at least every 30 s.
const COLLECTED: Duration = Duration::from_secs(40);

#[test]
fn replaced_and_deleted_versions_are_freed() {
    let server = Server::start_with_config("gc_grace_secs = 0\n");
    let client = server.client();
    let put = |seed: u64| {
        let content = Content::new(seed, 2 * MIB + seed);
        let response = client.send(
            Request::new("PUT", "/gc.bin")
                .pieces(content.pieces(256 * 1024))
                .content_length(content.len),
        );
        assert!(response.is_success(), "PUT: {response:?}");
        content
    };
    put(1);
    let first = server.grid();
    assert_eq!(first.shares.len(), 10);
    put(2);
    let last = put(3);

    // Only the last version's 10 shares remain, none of the first version's.
    let freed = wait_until(COLLECTED, || server.grid().shares.len() == 10);
    let grid = server.grid();
    assert!(
        freed,
        "replaced versions not freed: {:?}",
        grid.shares.keys()
    );
    assert!(
        grid.shares.keys().all(|k| !first.shares.contains_key(k)),
        "the first version's shares are still there"
    );
    let (get, len, sha) = client.get_sha256("/gc.bin");
    assert_eq!(get.status, 200);
    assert_eq!((len, sha), (last.len, last.sha256()));

    // COPY shares the content: deleting one name frees nothing. (Into a
    // collection: COPY into the root is tested in http_copymove.rs.)
    assert_eq!(client.mkcol("/keep/").status, 201, "MKCOL /keep/");
    let copy = client.send(Request::new("COPY", "/gc.bin").header(
        "Destination",
        &format!("http://{}/keep/copy.bin", server.addr),
    ));
    assert_eq!(copy.status, 201, "COPY: {copy:?}");
    assert_eq!(client.delete("/gc.bin").status, 204, "DELETE /gc.bin");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        server.grid().shares.len(),
        10,
        "the copy still refers to the content"
    );
    let (get, len, sha) = client.get_sha256("/keep/copy.bin");
    assert_eq!(get.status, 200);
    assert_eq!((len, sha), (last.len, last.sha256()));

    // Deleting the last name frees the shares.
    assert_eq!(
        client.delete("/keep/copy.bin").status,
        204,
        "DELETE /keep/copy.bin"
    );
    let freed = wait_until(COLLECTED, || server.grid().shares.is_empty());
    assert!(
        freed,
        "shares of a deleted file not freed: {:?}",
        server.grid().shares.keys()
    );
}
