//! Many GETs at once (issue 13, item 6): every reader gets its file whole
//! and correct while the read-ahead of all of them together is held to a
//! shared memory budget, so that most streams find it spent and read only
//! the segment they wait for.

mod support;

use std::sync::Arc;

use support::{Content, Request, Server, MIB};

const FILES: u64 = 24;
const READERS_PER_FILE: u64 = 2;

#[test]
fn many_concurrent_gets_each_return_their_whole_file() {
    let server = Arc::new(Server::start());
    let contents: Vec<Content> = (0..FILES)
        .map(|i| Content::new(7000 + i, 4 * MIB + 1000 * i + 3))
        .collect();

    let puts: Vec<_> = contents
        .iter()
        .enumerate()
        .map(|(i, content)| {
            let client = server.client();
            let content = *content;
            std::thread::spawn(move || {
                client.send(
                    Request::new("PUT", &format!("/many-{i}.bin"))
                        .pieces(content.pieces(256 * 1024))
                        .content_length(content.len),
                )
            })
        })
        .collect();
    for (i, put) in puts.into_iter().enumerate() {
        let response = put.join().expect("writer thread");
        assert_eq!(response.status, 201, "PUT of file {i}: {response:?}");
    }

    let gets: Vec<_> = (0..FILES * READERS_PER_FILE)
        .map(|r| {
            let client = server.client();
            let i = r % FILES;
            std::thread::spawn(move || (i, client.get_sha256(&format!("/many-{i}.bin"))))
        })
        .collect();
    for get in gets {
        let (i, (response, len, sha)) = get.join().expect("reader thread");
        let content = contents[i as usize];
        assert_eq!(response.status, 200, "GET of file {i}: {response:?}");
        assert_eq!(len, content.len, "length of file {i}");
        assert_eq!(sha, content.sha256(), "bytes of file {i}");
    }
}
