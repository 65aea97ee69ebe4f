//! `/metrics`, the status page and `/status.json` on `metrics_listen`,
//! read after real requests to the WebDAV listener.

mod support;

use std::time::Duration;

use support::{wait_until, Client, Content, Request, Server, MIB};

fn metrics_server() -> (Server, Client) {
    metrics_server_with("")
}

/// A server with its metrics listener and `config` (TOML after the
/// top-level keys), and a client of that listener.
fn metrics_server_with(config: &str) -> (Server, Client) {
    let server = Server::start_with_config(&format!("metrics_listen = \"127.0.0.1:0\"\n{config}"));
    let at = server
        .metrics_addr
        .expect("the server printed its metrics address");
    assert!(at.ip().is_loopback());
    (server, Client::new(at))
}

/// The value of the sample `name` (with its labels written as in the
/// text format), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Once the namespace log cannot be synced (every request is then 503
/// until a restart), the metrics say so, for an alert.
#[test]
fn a_namespace_log_that_cannot_sync_shows_in_the_metrics() {
    let (server, metrics) = metrics_server();
    let text = metrics.get("/metrics").text();
    assert_eq!(
        sample(&text, "griddav_namespace_sync_failed"),
        Some(0.0),
        "{text}"
    );
    server.break_namespace_log();
    assert_eq!(server.client().mkcol("/a").status, 500);
    let text = metrics.get("/metrics").text();
    assert_eq!(
        sample(&text, "griddav_namespace_sync_failed"),
        Some(1.0),
        "{text}"
    );
}

fn put(client: &Client, path: &str, content: &Content) {
    let response = client.send(
        Request::new("PUT", path)
            .pieces(content.pieces(64 * 1024))
            .content_length(content.len),
    );
    assert_eq!(response.status, 201, "PUT {path}: {response:?}");
}

#[test]
fn request_counters_and_bytes_follow_real_requests() {
    let (server, metrics) = metrics_server();
    let client = server.client();
    let sizes = [3 * MIB, 200 * 1024, 20_000];
    let contents: Vec<Content> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| Content::new(i as u64 + 1, len))
        .collect();
    for (i, content) in contents.iter().enumerate() {
        put(&client, &format!("/m{i}.bin"), content);
    }
    for (i, content) in contents.iter().take(2).enumerate() {
        let (response, len, sha) = client.get_sha256(&format!("/m{i}.bin"));
        assert_eq!(response.status, 200);
        assert_eq!(len, content.len);
        assert_eq!(sha, content.sha256());
    }
    // Deleted content waits out gc_grace_secs (an hour) in the queue.
    assert_eq!(client.delete("/m2.bin").status, 204);
    let response = metrics.get("/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{response:?}"
    );
    let text = response.text();
    let count = |method: &str, status: u16| {
        sample(
            &text,
            &format!("griddav_http_requests_total{{method=\"{method}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(count("PUT", 201), Some(3.0), "{text}");
    assert_eq!(count("GET", 200), Some(2.0), "{text}");
    let sent: u64 = sizes.iter().sum();
    let received = sample(&text, "griddav_http_received_bytes_total").unwrap_or(0.0);
    assert!(
        received >= sent as f64,
        "received {received} < {sent}\n{text}"
    );
    let read: u64 = sizes[..2].iter().sum();
    let out = sample(&text, "griddav_http_sent_bytes_total").unwrap_or(0.0);
    assert!(out >= read as f64, "sent {out} < {read}\n{text}");
    assert_eq!(
        sample(
            &text,
            "griddav_http_request_duration_seconds_count{method=\"PUT\"}"
        ),
        Some(3.0),
        "{text}"
    );
    // Nothing in flight once every answer is in.
    assert_eq!(
        sample(&text, "griddav_http_requests_in_flight{method=\"PUT\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "griddav_upload_memory_bytes").is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "griddav_upload_memory_in_use_bytes"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "griddav_garbage_queue_length"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "griddav_http_requests_total{method=\"DELETE\",status=\"204\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // Two files went to the grid (the third is small but above the inline
    // threshold too): every server took share writes.
    for s in 0..10 {
        let writes = sample(
            &text,
            &format!("griddav_server_share_writes_total{{server=\"local-{s:02}\"}}"),
        );
        assert!(
            writes.is_some_and(|w| w >= 3.0),
            "local-{s:02}: {writes:?}\n{text}"
        );
    }
    // The two GETs read blocks from at least k = 3 servers, each timed.
    let read_from: Vec<String> = (0..10)
        .map(|s| format!("local-{s:02}"))
        .filter(|server| {
            sample(
                &text,
                &format!("griddav_server_block_reads_total{{server=\"{server}\"}}"),
            )
            .is_some_and(|r| r >= 1.0)
        })
        .collect();
    assert!(read_from.len() >= 3, "{read_from:?}\n{text}");
    for server in &read_from {
        let latency = sample(
            &text,
            &format!("griddav_server_read_latency_seconds{{server=\"{server}\"}}"),
        );
        assert!(
            latency.is_some_and(|l| l > 0.0),
            "{server}: {latency:?}\n{text}"
        );
    }
}

#[test]
fn status_lists_servers_and_uploads_in_progress() {
    let (server, metrics) = metrics_server();
    let status = |metrics: &Client| -> serde_json::Value {
        let response = metrics.get("/status.json");
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_str(&response.text()).expect("status.json is JSON")
    };
    let now = status(&metrics);
    let servers = now["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 10, "{now}");
    for s in servers {
        assert_eq!(s["reachable"], true, "{s}");
        assert!(s["free_bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
        assert!(s["latency_ms"].as_f64().is_some(), "{s}");
    }
    assert_eq!(now["uploads"].as_array().map(Vec::len), Some(0), "{now}");

    // A slow PUT shows up while it runs, and is gone when it is done.
    let content = Content::new(7, 2 * MIB);
    let upload = {
        let client = server.client();
        std::thread::spawn(move || {
            client.send(
                Request::new("PUT", "/slow.bin")
                    .pieces(content.pieces(64 * 1024))
                    .content_length(content.len)
                    .throttle(512 * 1024),
            )
        })
    };
    // It shows up with its progress: some bytes received, not all yet,
    // of the length it declared.
    let seen = wait_until(Duration::from_secs(30), || {
        status(&metrics)["uploads"].as_array().is_some_and(|u| {
            u.iter().any(|u| {
                u["path"] == "/slow.bin"
                    && u["method"] == "PUT"
                    && u["expected_bytes"].as_u64() == Some(2 * MIB)
                    && u["received_bytes"]
                        .as_u64()
                        .is_some_and(|b| b > 0 && b < 2 * MIB)
            })
        })
    });
    assert!(
        seen,
        "the upload never appeared in /status.json with its progress: {}",
        status(&metrics)
    );
    let page = metrics.get("/");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("<table"), "{html}");
    assert!(html.contains("local-09"), "{html}");
    assert!(html.contains("PUT /slow.bin: "), "{html}");
    assert!(html.contains(" of 2.0 MiB ("), "{html}");
    assert!(!html.contains("<script"), "{html}");
    let response = upload.join().expect("the upload thread");
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(
        status(&metrics)["uploads"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(metrics.get("/nothing").status, 404);

    // `griddav status` prints the same for a terminal.
    let at = server.metrics_addr.expect("metrics address");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_griddav"))
        .args(["status", "--url", &format!("http://{at}/")])
        .output()
        .expect("run griddav status");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(printed.contains("servers: 10 of 10 reachable"), "{printed}");
    assert!(printed.contains("local-00"), "{printed}");
    assert!(printed.contains("uploads in progress: 0"), "{printed}");
}

#[test]
fn background_repairs_are_counted() {
    let (server, metrics) = metrics_server_with("[repair]\ninterval_secs = 1\n");
    let client = server.client();
    assert_eq!(
        client
            .put("/r.bin", Content::new(5, 200_000).bytes())
            .status,
        201
    );
    // Every share of one server gone: the next pass re-creates it.
    let shares = &server.share_dirs()[6];
    for entry in std::fs::read_dir(shares).expect("shares dir").flatten() {
        std::fs::remove_dir_all(entry.path()).expect("remove shares");
    }
    let repaired = || {
        sample(
            &metrics.get("/metrics").text(),
            "griddav_repair_files_total{outcome=\"repaired\"}",
        )
        .is_some_and(|n| n >= 1.0)
    };
    assert!(
        wait_until(Duration::from_secs(60), repaired),
        "no repair counted; log:\n{}",
        server.log_tail()
    );
}

/// A request answered with a server error shows up in the recent errors of
/// `/status.json`, the status page and `griddav status`; one answered 2xx
/// or 4xx does not.
#[test]
fn server_errors_are_listed_as_recent_errors() {
    let (server, metrics) = metrics_server();
    let client = server.client();
    let content = Content::new(11, 300 * 1024);
    put(&client, "/lost.bin", &content);
    assert_eq!(client.get("/missing.bin").status, 404);
    let status = || -> serde_json::Value {
        let response = metrics.get("/status.json");
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_str(&response.text()).expect("status.json is JSON")
    };
    let before = status();
    assert_eq!(
        before["recent_errors"].as_array().map(Vec::len),
        Some(0),
        "{before}"
    );

    // Eight of ten servers lose every share: 2 < k = 3 left.
    for dir in &server.share_dirs()[..8] {
        for entry in std::fs::read_dir(dir).expect("shares dir").flatten() {
            std::fs::remove_dir_all(entry.path()).expect("remove shares");
        }
    }
    let response = client.get("/lost.bin");
    assert!(
        (500..600).contains(&response.status),
        "GET of a file with 2 of 3 needed shares: {response:?}"
    );
    let after = status();
    let errors = after["recent_errors"].as_array().expect("recent_errors");
    assert_eq!(errors.len(), 1, "{after}");
    let line = errors[0].as_str().expect("a line of text");
    assert!(
        line.contains(&format!("GET /lost.bin -> {}", response.status)),
        "{line}"
    );
    let html = metrics.get("/").text();
    assert!(html.contains("GET /lost.bin"), "{html}");

    let at = server.metrics_addr.expect("metrics address");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_griddav"))
        .args(["status", "--url", &format!("http://{at}/")])
        .output()
        .expect("run griddav status");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("recent errors: 1"), "{printed}");
    assert!(printed.contains("GET /lost.bin"), "{printed}");
}

/// A Range GET that crosses a segment boundary reads the two segments it
/// needs (and the first, which every GET checks before its status line),
/// and starts no read-ahead: it once fetched four more segments for every
/// such request, 10x the work of a 32 KiB Range GET.
#[test]
fn a_range_get_across_a_segment_boundary_reads_only_its_segments() {
    let (server, metrics) = metrics_server_with("[encoding]\nsegment_size = 65536\n");
    let client = server.client();
    let content = Content::new(7, 4 * MIB);
    put(&client, "/r.bin", &content);
    let block_reads = || -> f64 {
        let text = metrics.get("/metrics").text();
        (0..10)
            .filter_map(|s| {
                sample(
                    &text,
                    &format!("griddav_server_block_reads_total{{server=\"local-{s:02}\"}}"),
                )
            })
            .sum()
    };
    let before = block_reads();
    // 16 KiB on each side of the boundary between segments 10 and 11.
    let (start, end) = (11 * 65536 - 16384, 11 * 65536 + 16383);
    let range =
        client.send(Request::new("GET", "/r.bin").header("Range", &format!("bytes={start}-{end}")));
    assert_eq!(range.status, 206);
    assert!(range.body == content.slice(start, end + 1));
    // Read-ahead tasks would run on after the answer: give them time to count.
    std::thread::sleep(Duration::from_millis(300));
    let reads = block_reads() - before;
    // k = 3 blocks each of segments 0, 10 and 11.
    assert!(
        reads <= 9.0,
        "{reads} block reads for a two-segment Range GET"
    );
    assert!(reads >= 6.0, "{reads} block reads: the counter missed some");
}
