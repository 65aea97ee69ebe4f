//! Small files the way Finder and Explorer copy a folder (issue 13, item 4):
//! `files` files of 1 to 64 KiB (a quarter at or under griddav's 16 KiB
//! inline threshold, the rest on the grid) into one new folder, by 1 and
//! by 8 clients at once, each on its own keep-alive connection, with the
//! requests those clients send for each file (docs/CLIENTS.md,
//! /work/shared/notes/clients.md):
//!
//! - **Finder**: PROPFIND (Depth 0) of the folder, PUT of the file
//!   (chunked, `X-Expected-Entity-Length`), PROPPATCH of a property on it,
//!   PUT of its 4 KiB `._` AppleDouble file.
//! - **Explorer**: PROPFIND (Depth 0) of the file (404), PUT of 0 bytes,
//!   LOCK, PROPPATCH of the Win32 times (with the lock token), PUT of the
//!   data (with the token), UNLOCK.
//!
//! A PROPPATCH answered 501 (dav-server's LocalFs keeps no dead
//! properties) counts as answered; LocalFs closes the connection after
//! it, and the client opens a new one ([`Conn::exchange`]). Files per
//! second counts the data files (not the `._` files), over the wall time
//! from the start until the last client is done. A sample of the
//! files is read back and checked afterwards.

use super::conn::{ok, BodyMode, Conn};
use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Client {
    Finder,
    Explorer,
}

impl Client {
    pub(super) fn name(self) -> &'static str {
        match self {
            Client::Finder => "Finder",
            Client::Explorer => "Explorer",
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct SmallRun {
    pub files: usize,
    pub files_per_s: f64,
    pub requests_per_s: f64,
    /// Median time of one file's whole sequence, ms.
    pub file_ms: f64,
    pub peak_rss_mib: f64,
    pub error: Option<String>,
}

/// Size of file `i`: 1 KiB .. 64 KiB, spread evenly, same for every server.
fn size_of(i: usize) -> usize {
    let mut x = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    1024 + (x % (63 * 1024 + 1)) as usize
}

fn offset_of(i: usize, pattern: &[u8]) -> usize {
    (i * 4099) % (pattern.len() - (64 << 10))
}

const FINDER_PROPPATCH: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><A:appledoubleheader xmlns:A="http://www.apple.com/webdav_fs/props/">AAUWBwACAAAAAAAAAAAAAAAAAAAAAAAAAAEAAAAJAAAAMgAAAA4=</A:appledoubleheader></D:prop></D:set></D:propertyupdate>"#;

const EXPLORER_PROPPATCH: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Sun, 29 Nov 2026 18:00:00 GMT</Z:Win32CreationTime><Z:Win32LastAccessTime>Sun, 29 Nov 2026 18:00:00 GMT</Z:Win32LastAccessTime><Z:Win32LastModifiedTime>Sun, 29 Nov 2026 18:00:00 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;

const LOCK_BODY: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>bench</D:href></D:owner></D:lockinfo>"#;

const PROPFIND_DEPTH0: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/><D:getcontentlength/><D:resourcetype/><D:getetag/></D:prop></D:propfind>"#;

/// One client's share of the files: every `clients`-th from `first`.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn copy_files(
    conn: &mut Conn,
    client: Client,
    dir: &str,
    first: usize,
    step: usize,
    files: usize,
    pattern: &[u8],
    times: &mut Vec<f64>,
) -> io::Result<u64> {
    let xml = "Content-Type: application/xml; charset=utf-8\r\n";
    let mut requests = 0u64;
    let apple_double = &pattern[..4096];
    for i in (first..files).step_by(step) {
        let started = Instant::now();
        let name = format!("f{i:06}.dat");
        let path = format!("{dir}{name}");
        let data = &pattern[offset_of(i, pattern)..][..size_of(i)];
        match client {
            Client::Finder => {
                let a = conn.exchange(
                    "PROPFIND",
                    dir,
                    &format!("Depth: 0\r\n{xml}"),
                    PROPFIND_DEPTH0.as_bytes(),
                    BodyMode::Length,
                )?;
                ok(&a, "PROPFIND", dir)?;
                let a = conn.exchange("PUT", &path, "", data, BodyMode::Chunked)?;
                ok(&a, "PUT", &path)?;
                let a = conn.exchange(
                    "PROPPATCH",
                    &path,
                    xml,
                    FINDER_PROPPATCH.as_bytes(),
                    BodyMode::Length,
                )?;
                // LocalFs keeps no dead properties (501): answered all the same.
                if a.status != 501 {
                    ok(&a, "PROPPATCH", &path)?;
                }
                let dot = format!("{dir}._{name}");
                let a = conn.exchange("PUT", &dot, "", apple_double, BodyMode::Chunked)?;
                ok(&a, "PUT", &dot)?;
                requests += 4;
            }
            Client::Explorer => {
                let a = conn.exchange(
                    "PROPFIND",
                    &path,
                    &format!("Depth: 0\r\n{xml}"),
                    PROPFIND_DEPTH0.as_bytes(),
                    BodyMode::Length,
                )?;
                if a.status != 404 {
                    return Err(io::Error::other(format!(
                        "PROPFIND {path} of a new file answered {}",
                        a.status
                    )));
                }
                let a = conn.exchange("PUT", &path, "", &[], BodyMode::Length)?;
                ok(&a, "PUT", &path)?;
                let a = conn.exchange(
                    "LOCK",
                    &path,
                    &format!("Timeout: Second-3600\r\nDepth: 0\r\n{xml}"),
                    LOCK_BODY.as_bytes(),
                    BodyMode::Length,
                )?;
                ok(&a, "LOCK", &path)?;
                let token = a
                    .headers
                    .get("lock-token")
                    .cloned()
                    .ok_or_else(|| io::Error::other(format!("LOCK {path}: no Lock-Token")))?;
                let token = token.trim().trim_start_matches('<').trim_end_matches('>');
                let if_header = format!("If: (<{token}>)\r\n");
                let a = conn.exchange(
                    "PROPPATCH",
                    &path,
                    &format!("{if_header}{xml}"),
                    EXPLORER_PROPPATCH.as_bytes(),
                    BodyMode::Length,
                )?;
                ok(&a, "PROPPATCH", &path)?;
                let a = conn.exchange("PUT", &path, &if_header, data, BodyMode::Length)?;
                ok(&a, "PUT", &path)?;
                let a = conn.exchange(
                    "UNLOCK",
                    &path,
                    &format!("Lock-Token: <{token}>\r\n"),
                    &[],
                    BodyMode::Length,
                )?;
                ok(&a, "UNLOCK", &path)?;
                requests += 6;
            }
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(requests)
}

/// Reads back every 97th file and checks its bytes.
fn check_sample(addr: SocketAddr, dir: &str, files: usize, pattern: &[u8]) -> io::Result<()> {
    let mut conn = Conn::open(addr)?;
    for i in (0..files).step_by(97) {
        let path = format!("{dir}f{i:06}.dat");
        let a = conn.exchange("GET", &path, "", &[], BodyMode::Length)?;
        ok(&a, "GET", &path)?;
        if a.body != pattern[offset_of(i, pattern)..][..size_of(i)] {
            return Err(io::Error::other(format!("GET {path}: wrong bytes")));
        }
    }
    Ok(())
}

/// One run: a fresh server, one folder, `clients` clients.
pub(super) fn run(
    settings: &Settings,
    peer: Peer,
    client: Client,
    clients: usize,
    files: usize,
    pattern: &Arc<Vec<u8>>,
) -> SmallRun {
    let dir = settings.root.join(format!(
        "{}-small-{}-{clients}",
        peer_slug(peer),
        client.name()
    ));
    let server = Server::start(peer, &dir, settings.slow_rate);
    let folder = "/copy/";
    let mut result = SmallRun {
        files,
        files_per_s: f64::NAN,
        requests_per_s: f64::NAN,
        file_ms: f64::NAN,
        peak_rss_mib: f64::NAN,
        error: None,
    };
    let outcome = (|| -> io::Result<()> {
        let mut conn = Conn::open(server.addr)?;
        let a = conn.exchange("MKCOL", folder, "", &[], BodyMode::Length)?;
        ok(&a, "MKCOL", folder)?;
        drop(conn);
        server.reset_peak();
        let barrier = Arc::new(Barrier::new(clients + 1));
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let barrier = Arc::clone(&barrier);
                let pattern = Arc::clone(pattern);
                let addr = server.addr;
                std::thread::spawn(move || -> io::Result<(u64, Vec<f64>)> {
                    let mut conn = Conn::open(addr);
                    barrier.wait();
                    let conn = conn
                        .as_mut()
                        .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
                    let mut times = Vec::new();
                    let n = copy_files(
                        conn, client, folder, c, clients, files, &pattern, &mut times,
                    )?;
                    Ok((n, times))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut requests = 0;
        let mut times = Vec::new();
        let mut first_error = None;
        for t in threads {
            match t.join().expect("client thread") {
                Ok((n, t)) => {
                    requests += n;
                    times.extend(t);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        result.peak_rss_mib = server.peak_mib();
        if let Some(e) = first_error {
            return Err(e);
        }
        result.files_per_s = files as f64 / secs;
        result.requests_per_s = requests as f64 / secs;
        result.file_ms = median(&mut times);
        check_sample(server.addr, folder, files, pattern)
    })();
    if let Err(e) = outcome {
        result.error = Some(e.to_string());
    }
    eprintln!(
        "  {:<24} {:<8} {} client(s), {} files: {:7.1} files/s ({:7.1} requests/s), file median {:6.2} ms, RSS {:5.1} MiB{}",
        peer.name(),
        client.name(),
        clients,
        files,
        result.files_per_s,
        result.requests_per_s,
        result.file_ms,
        result.peak_rss_mib,
        result
            .error
            .as_deref()
            .map(|e| format!("  ERROR {e}"))
            .unwrap_or_default()
    );
    server.stop();
    result
}
