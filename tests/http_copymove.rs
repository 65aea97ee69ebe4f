//! COPY and MOVE, in particular into the root collection.

mod support;

use support::{Client, Content, Request, Server};

fn copy_or_move(client: &Client, method: &str, from: &str, to: &str) -> u16 {
    let destination = format!("http://{}{to}", client.addr);
    client
        .send(Request::new(method, from).header("Destination", &destination))
        .status
}

fn assert_body(client: &Client, path: &str, content: &Content) {
    let (get, len, sha) = client.get_sha256(path);
    assert_eq!(get.status, 200, "GET {path}");
    assert_eq!((len, sha), (content.len, content.sha256()), "GET {path}");
}

#[test]
fn copy_and_move_within_a_collection() {
    let server = Server::start();
    let client = server.client();
    let big = Content::new(1, 5_000_000);
    assert_eq!(client.mkcol("/d/").status, 201);
    assert_eq!(client.put("/d/a.bin", big.bytes()).status, 201);
    assert_eq!(copy_or_move(&client, "COPY", "/d/a.bin", "/d/b.bin"), 201);
    assert_eq!(copy_or_move(&client, "MOVE", "/d/b.bin", "/d/c.bin"), 201);
    assert_body(&client, "/d/a.bin", &big);
    assert_body(&client, "/d/c.bin", &big);
    assert_eq!(client.get("/d/b.bin").status, 404);
    // COPY shares the immutable content: no new shares.
    assert_eq!(server.grid().shares.len(), 10);
}

#[test]
fn copy_and_move_into_the_root_collection() {
    let server = Server::start();
    let client = server.client();
    let big = Content::new(2, 5_000_000);
    let small = Content::new(3, 100);
    assert_eq!(client.mkcol("/d/").status, 201);
    assert_eq!(client.put("/d/a.bin", big.bytes()).status, 201);
    assert_eq!(client.put("/s.txt", small.bytes()).status, 201);

    assert_eq!(
        copy_or_move(&client, "COPY", "/d/a.bin", "/top.bin"),
        201,
        "COPY /d/a.bin to /top.bin"
    );
    assert_eq!(
        copy_or_move(&client, "COPY", "/s.txt", "/s2.txt"),
        201,
        "COPY /s.txt to /s2.txt"
    );
    assert_eq!(
        copy_or_move(&client, "MOVE", "/d/a.bin", "/moved.bin"),
        201,
        "MOVE /d/a.bin to /moved.bin"
    );
    assert_eq!(
        copy_or_move(&client, "MOVE", "/d/", "/e/"),
        201,
        "MOVE /d/ to /e/"
    );
    assert_body(&client, "/top.bin", &big);
    assert_body(&client, "/moved.bin", &big);
    assert_body(&client, "/s2.txt", &small);
    assert_eq!(client.get("/d/a.bin").status, 404);
}
