//! A property test of the HTTP front: random sequences of WebDAV requests,
//! well-formed and hostile, against the real server and a small in-memory
//! model of the tree. After every step the server must still answer, every
//! answer must have a status, and the tree must equal the model.
//!
//! `cargo test` runs a bounded number of cases; `tests/model.sh` runs many
//! more (`GRIDDAV_MODEL_CASES`).

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use support::{Client, Request, Server};

/// Names a generated path is built from: plain, with a space, non-ASCII.
const NAMES: &[&str] = &["a", "b", "c d", "é"];
/// Files larger than griddav's inline threshold go to the grid.
const LARGE_FILE: usize = 20 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

/// The tree as the model says it is: path (without trailing slash, root
/// excluded) to node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    nodes: BTreeMap<String, Node>,
}

impl Model {
    fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn is_dir(&self, path: &str) -> bool {
        path.is_empty() || matches!(self.get(path), Some(Node::Dir))
    }

    fn exists(&self, path: &str) -> bool {
        path.is_empty() || self.nodes.contains_key(path)
    }

    fn subtree(&self, path: &str) -> Vec<String> {
        let prefix = format!("{path}/");
        self.nodes
            .keys()
            .filter(|p| *p == path || p.starts_with(&prefix))
            .cloned()
            .collect()
    }

    fn remove(&mut self, path: &str) {
        for p in self.subtree(path) {
            self.nodes.remove(&p);
        }
    }

    fn copy(&mut self, from: &str, to: &str) {
        let moved: Vec<(String, Node)> = self
            .subtree(from)
            .into_iter()
            .filter_map(|p| {
                let node = self.nodes.get(&p)?.clone();
                Some((format!("{to}{}", &p[from.len()..]), node))
            })
            .collect();
        self.nodes.extend(moved);
    }
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// A logical path ("" is the root; "a/c d" is a file or folder two deep).
fn logical_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(NAMES), 1..=3).prop_map(|names| names.join("/"))
}

/// The path on the wire: every segment percent-encoded where it must be.
fn wire(path: &str, dir: bool) -> String {
    let mut out = String::from("/");
    for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if dir && !path.is_empty() {
        out.push('/');
    }
    out
}

#[derive(Clone, Debug)]
enum Step {
    Put {
        path: String,
        body: Vec<u8>,
    },
    Get {
        path: String,
    },
    Delete {
        path: String,
        as_dir: bool,
    },
    Mkcol {
        path: String,
    },
    CopyMove {
        copy: bool,
        from: String,
        to: String,
        overwrite: Option<bool>,
    },
    Propfind {
        path: String,
        depth: &'static str,
    },
    /// A request that must change nothing and be refused (4xx, or 502 for a
    /// Destination elsewhere).
    Hostile {
        method: &'static str,
        path: String,
        headers: Vec<(&'static str, String)>,
    },
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (any::<u8>()).prop_map(|b| vec![b; LARGE_FILE]),
    ]
}

/// Spellings of the root that must never be deleted or moved.
const ROOT_SPELLINGS: &[&str] = &["/", "//", "/./", "/%2e/", "/a/..", "/a/../", "/%2F", "/./."];

fn hostile() -> impl Strategy<Value = Step> {
    let root = prop::sample::select(ROOT_SPELLINGS).prop_map(|s| s.to_string());
    prop_oneof![
        // The root in any spelling, with any Depth.
        (
            root.clone(),
            prop::sample::select(&["0", "1", "infinity"][..])
        )
            .prop_map(|(path, depth)| Step::Hostile {
                method: "DELETE",
                path,
                headers: vec![("Depth", depth.to_string())],
            }),
        (root, logical_path()).prop_map(|(path, to)| Step::Hostile {
            method: "MOVE",
            path,
            headers: vec![("Destination", wire(&to, true))],
        }),
        // Malformed conditional headers.
        (
            logical_path(),
            prop::sample::select(&["DELETE", "PUT", "MKCOL", "MOVE", "PROPPATCH"][..]),
            prop::sample::select(
                &[
                    ("If-Match", "\""),
                    ("If-None-Match", "\""),
                    ("If", "<"),
                    ("If", "(<"),
                    ("If", "([x)"),
                ][..]
            )
        )
            .prop_map(|(path, method, (name, value))| Step::Hostile {
                method,
                path: wire(&path, false),
                headers: vec![(name, value.to_string())],
            }),
        // Invalid escapes and control characters in names.
        (
            prop::sample::select(&["PUT", "MKCOL", "DELETE"][..]),
            prop::sample::select(&["/%ff%fe", "/%c0%af", "/%zz", "/x%0Ay", "/x%0Dy", "/x%01y"][..])
        )
            .prop_map(|(method, path)| Step::Hostile {
                method,
                path: path.to_string(),
                headers: vec![],
            }),
        // A destination elsewhere, or an Overwrite that is neither T nor F.
        (logical_path(), logical_path()).prop_map(|(from, to)| Step::Hostile {
            method: "MOVE",
            path: wire(&from, false),
            headers: vec![(
                "Destination",
                format!("http://127.0.0.1:1{}", wire(&to, false))
            )],
        }),
        (logical_path(), logical_path()).prop_map(|(from, to)| Step::Hostile {
            method: "COPY",
            path: wire(&from, false),
            headers: vec![
                ("Destination", wire(&to, false)),
                ("Overwrite", "maybe".to_string()),
            ],
        }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (logical_path(), body()).prop_map(|(path, body)| Step::Put { path, body }),
        2 => logical_path().prop_map(|path| Step::Get { path }),
        2 => (logical_path(), any::<bool>()).prop_map(|(path, as_dir)| Step::Delete { path, as_dir }),
        4 => logical_path().prop_map(|path| Step::Mkcol { path }),
        3 => (any::<bool>(), logical_path(), logical_path(), prop::option::of(any::<bool>()))
            .prop_map(|(copy, from, to, overwrite)| Step::CopyMove { copy, from, to, overwrite }),
        1 => (
            prop_oneof![Just(String::new()), logical_path()],
            prop::sample::select(&["0", "1"][..])
        )
            .prop_map(|(path, depth)| Step::Propfind { path, depth }),
        3 => hostile(),
    ]
}

/// Sends `step`, checks its status against the model and applies it there.
fn apply(client: &Client, model: &mut Model, step: &Step) -> Result<(), TestCaseError> {
    match step {
        Step::Put { path, body } => {
            let status = client.put(&wire(path, false), body.clone()).status;
            let expect_ok = model.is_dir(parent(path)) && !model.is_dir(path);
            check_outcome(status, expect_ok, step)?;
            if expect_ok {
                model.nodes.insert(path.clone(), Node::File(body.clone()));
            }
        }
        Step::Get { path } => {
            let response = client.get(&wire(path, false));
            match model.get(path) {
                Some(Node::File(bytes)) => {
                    prop_assert_eq!(response.status, 200, "{:?}", step);
                    prop_assert!(&response.body == bytes, "{:?}: wrong bytes", step);
                }
                // A folder has no body of its own: any answer but a server error.
                Some(Node::Dir) => prop_assert!(
                    response.status < 500,
                    "{:?}: answered {}",
                    step,
                    response.status
                ),
                None => prop_assert_eq!(response.status, 404, "{:?}", step),
            }
        }
        Step::Delete { path, as_dir } => {
            let status = client.delete(&wire(path, *as_dir)).status;
            let expect_ok = match model.get(path) {
                Some(Node::Dir) => true,
                Some(Node::File(_)) => !as_dir,
                None => false,
            };
            check_outcome(status, expect_ok, step)?;
            if expect_ok {
                model.remove(path);
            }
        }
        Step::Mkcol { path } => {
            let status = client.mkcol(&wire(path, true)).status;
            let expect_ok = !model.exists(path) && model.is_dir(parent(path));
            check_outcome(status, expect_ok, step)?;
            if expect_ok {
                model.nodes.insert(path.clone(), Node::Dir);
            }
        }
        Step::CopyMove {
            copy,
            from,
            to,
            overwrite,
        } => {
            let dir = model.is_dir(from);
            let mut request = Request::new(if *copy { "COPY" } else { "MOVE" }, &wire(from, dir))
                .header(
                    "Destination",
                    &format!("http://{}{}", client.addr, wire(to, dir)),
                );
            if let Some(overwrite) = overwrite {
                request = request.header("Overwrite", if *overwrite { "T" } else { "F" });
            }
            let status = client.send(request).status;
            // Source and destination may not overlap either way: overwriting
            // an ancestor would delete the source with it.
            let into_itself = to == from
                || to.starts_with(&format!("{from}/"))
                || from.starts_with(&format!("{to}/"));
            let destination_taken = model.exists(to);
            let expect_ok = model.exists(from)
                && !into_itself
                && model.is_dir(parent(to))
                && (!destination_taken || overwrite.unwrap_or(true));
            check_outcome(status, expect_ok, step)?;
            if expect_ok {
                model.remove(to);
                model.copy(from, to);
                if !copy {
                    model.remove(from);
                }
            }
        }
        Step::Propfind { path, depth } => {
            let response = client.send(
                Request::new("PROPFIND", &wire(path, model.is_dir(path))).header("Depth", depth),
            );
            let expected = if model.exists(path) { 207 } else { 404 };
            prop_assert_eq!(response.status, expected, "{:?}", step);
        }
        Step::Hostile {
            method,
            path,
            headers,
        } => {
            let mut request = Request::new(method, path);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            if *method == "PUT" {
                request = request.body(b"hostile".to_vec());
            }
            let status = client.send(request).status;
            // 502 is RFC 4918's answer to a Destination on another server.
            prop_assert!(
                (400..500).contains(&status) || status == 502,
                "{:?}: answered {}, want a 4xx and no change",
                step,
                status
            );
        }
    }
    Ok(())
}

fn check_outcome(status: u16, expect_ok: bool, step: &Step) -> Result<(), TestCaseError> {
    prop_assert!(
        status != 0 && status < 500,
        "{:?}: answered {}",
        step,
        status
    );
    prop_assert_eq!(
        (200..300).contains(&status),
        expect_ok,
        "{:?}: answered {}",
        step,
        status
    );
    Ok(())
}

/// The tree as the server lists it, walked with PROPFIND Depth: 1.
fn server_tree(client: &Client) -> Result<Model, TestCaseError> {
    let mut model = Model::default();
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        let response =
            client.send(Request::new("PROPFIND", &wire(&dir, true)).header("Depth", "1"));
        prop_assert_eq!(response.status, 207, "PROPFIND of /{}", dir);
        for (path, is_dir) in listed(&response.body)? {
            if path == dir {
                continue;
            }
            if is_dir {
                model.nodes.insert(path.clone(), Node::Dir);
                pending.push(path);
            } else {
                let get = client.get(&wire(&path, false));
                prop_assert_eq!(get.status, 200, "GET /{}", path);
                model.nodes.insert(path, Node::File(get.body));
            }
        }
    }
    Ok(model)
}

/// (logical path, is a folder) for each `response` of a multistatus.
fn listed(xml: &[u8]) -> Result<Vec<(String, bool)>, TestCaseError> {
    let root = xmltree::Element::parse(xml)
        .map_err(|e| TestCaseError::fail(format!("PROPFIND answer is not XML: {e}")))?;
    let mut out = Vec::new();
    for response in root.children.iter().filter_map(|c| c.as_element()) {
        if response.name != "response" {
            continue;
        }
        let href = response
            .get_child("href")
            .and_then(|h| h.get_text())
            .ok_or_else(|| TestCaseError::fail("a response without href"))?;
        let is_dir = response
            .children
            .iter()
            .filter_map(|c| c.as_element())
            .filter_map(|ps| ps.get_child("prop"))
            .filter_map(|p| p.get_child("resourcetype"))
            .any(|rt| rt.get_child("collection").is_some());
        let decoded = percent_decode(href.trim_start_matches(|c| c != '/'))?;
        out.push((decoded.trim_matches('/').to_string(), is_dir));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, TestCaseError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .map_err(|_| TestCaseError::fail("bad escape in href"))?;
            let byte = u8::from_str_radix(hex, 16)
                .map_err(|_| TestCaseError::fail(format!("bad escape %{hex} in href")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TestCaseError::fail("href is not UTF-8"))
}

/// Empties the tree between cases.
fn reset(client: &Client) {
    for name in NAMES {
        client.delete(&wire(name, false));
    }
}

#[test]
fn random_requests_keep_the_server_alive_and_the_tree_equal_to_the_model() {
    let cases = std::env::var("GRIDDAV_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let server = Server::start();
    let client = server.client();
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        // Each case is dozens of real requests: shrinking stays short.
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(step(), 1..40), |steps| {
        reset(&client);
        let mut model = Model::default();
        prop_assert!(
            server_tree(&client)? == model,
            "the tree is not empty at the start"
        );
        for (i, step) in steps.iter().enumerate() {
            apply(&client, &mut model, step)?;
            let tree = server_tree(&client)?;
            prop_assert!(
                tree == model,
                "after step {} ({:?}): the server has {:?}, the model {:?}",
                i,
                step,
                tree.nodes.keys().collect::<Vec<_>>(),
                model.nodes.keys().collect::<Vec<_>>()
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n--- server log ---\n{}", server.log_tail());
    }
}
