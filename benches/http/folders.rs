//! Big folders (issue 13, item 5): PROPFIND Depth: 1 on folders of 1,000,
//! 10,000 and 100,000 entries. Time to first byte (request written ..
//! status line), total time (.. last byte of the answer) and the server's
//! peak RSS during the PROPFIND (`VmHWM` reset just before), and how much
//! that peak is above the RSS the server had before the request.
//!
//! griddav's folders are filled over HTTP (empty PUTs from 8 connections:
//! its entries live in its namespace); the peers' folders are made
//! directly in the directory they serve, which is the same thing to them.
//! The PROPFIND names what Windows Explorer asks for (many properties a
//! server does not have, answered as 404 propstats by griddav). A second
//! one has no body, which RFC 4918 makes an allprop (every property,
//! `lockdiscovery` and the dead ones included): what `curl -X PROPFIND`,
//! scripts and some libraries send; only its total time is reported.
//!
//! griddav copies its namespace into the grid 30 s after changes, and
//! that copy is an upload with the engine's buffers (about 25 MiB): when
//! the timer fell inside a PROPFIND, the copy's memory was counted as the
//! PROPFIND's. So the copy of the filled folders is taken first (SIGUSR1,
//! as an operator would) and waited for; with nothing changed after it,
//! the periodic copies during the PROPFINDs have nothing to do.

use super::conn::{BodyMode, Conn};
use super::*;

#[derive(Clone, Debug)]
pub(super) struct FolderRun {
    pub entries: usize,
    pub first_byte_ms: f64,
    pub total_ms: f64,
    pub peak_rss_mib: f64,
    /// Peak during the PROPFIND minus the RSS just before it.
    pub growth_mib: f64,
    pub answer_mib: f64,
    /// Total time of the allprop PROPFIND (no body), median.
    pub allprop_total_ms: f64,
    pub error: Option<String>,
}

const EXPLORER_PROPFIND: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:prop><D:name/><D:parentname/><D:href/><D:ishidden/><D:isreadonly/><D:getcontenttype/><D:contentclass/><D:getcontentlanguage/><D:creationdate/><D:lastaccessed/><D:getlastmodified/><D:getcontentlength/><D:iscollection/><D:isstructureddocument/><D:defaultdocument/><D:displayname/><D:isroot/><D:resourcetype/></D:prop></D:propfind>"#;

/// Repeats of each PROPFIND; the median total is reported.
pub(super) const REPEATS: usize = 3;

/// Has griddav copy its namespace now (SIGUSR1) and waits until that copy
/// has landed (its local root record replaced) and no other follows it: a
/// periodic copy already under way when the signal arrives lands first,
/// and the forced one runs right after it.
fn settle_namespace_copy(server: &Server) -> io::Result<()> {
    const QUIET: Duration = Duration::from_secs(3);
    let record = server.dir.join(griddav::snapshot::copy::RECORD_FILE);
    let read = || std::fs::read(&record).ok();
    let before = read();
    let status = Command::new("kill")
        .args(["-USR1", &server.pid().to_string()])
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("kill -USR1: {status}")));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = before.clone();
    let mut since = Instant::now();
    loop {
        if Instant::now() > deadline {
            return Err(io::Error::other("no namespace copy within 300 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
        let now = read();
        if now != last {
            last = now;
            since = Instant::now();
        } else if last != before && since.elapsed() >= QUIET {
            return Ok(());
        }
    }
}

fn fill(server: &Server, peer: Peer, folder: &str, entries: usize) -> io::Result<()> {
    match peer {
        Peer::Griddav | Peer::GriddavThrottled => {
            let mut conn = Conn::open(server.addr)?;
            let a = conn.exchange("MKCOL", folder, "", &[], BodyMode::Length)?;
            super::conn::ok(&a, "MKCOL", folder)?;
            drop(conn);
            let clients = 8;
            let threads: Vec<_> = (0..clients)
                .map(|c| {
                    let addr = server.addr;
                    let folder = folder.to_string();
                    std::thread::spawn(move || -> io::Result<()> {
                        let mut conn = Conn::open(addr)?;
                        for i in (c..entries).step_by(clients) {
                            let path = format!("{folder}e{i:06}");
                            let a = conn.exchange("PUT", &path, "", &[], BodyMode::Length)?;
                            super::conn::ok(&a, "PUT", &path)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("filling thread")?;
            }
            Ok(())
        }
        Peer::LocalFs | Peer::Rclone => {
            let dir = server.dir.join(folder.trim_matches('/'));
            std::fs::create_dir_all(&dir)?;
            for i in 0..entries {
                std::fs::File::create(dir.join(format!("e{i:06}")))?;
            }
            Ok(())
        }
    }
}

fn propfind(
    server: &Server,
    folder: &str,
    entries: usize,
    body: &str,
) -> io::Result<(f64, f64, f64, f64, f64)> {
    let mut conn = Conn::open(server.addr)?;
    let before = proc_status_kib(server.pid(), "VmRSS:") as f64 / 1024.0;
    server.reset_peak();
    let start = Instant::now();
    let a = conn.exchange(
        "PROPFIND",
        folder,
        "Depth: 1\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n",
        body.as_bytes(),
        BodyMode::Length,
    )?;
    let total = start.elapsed().as_secs_f64() * 1e3;
    let peak = server.peak_mib();
    if a.status != 207 {
        return Err(io::Error::other(format!(
            "PROPFIND {folder} answered {}",
            a.status
        )));
    }
    // `<D:response>` and `</D:response>` per entry (an href can also be
    // a 404 property: Explorer names `href`).
    let responses = count(&a.body, b"response>") / 2;
    if responses != entries + 1 {
        return Err(io::Error::other(format!(
            "PROPFIND {folder}: {responses} entries in the answer, expected {}",
            entries + 1
        )));
    }
    let first = a.first_byte.saturating_duration_since(start).as_secs_f64() * 1e3;
    Ok((
        first,
        total,
        peak,
        (peak - before).max(0.0),
        a.body.len() as f64 / MIB as f64,
    ))
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Every folder size on one fresh server of `peer`.
pub(super) fn run(settings: &Settings, peer: Peer, sizes: &[usize]) -> Vec<FolderRun> {
    let dir = settings.root.join(format!("{}-folders", peer_slug(peer)));
    let server = Server::start(peer, &dir, settings.slow_rate);
    // Every folder is made before the first PROPFIND: rclone caches a
    // directory's listing, and would not see a folder made after it.
    let mut made = Vec::new();
    for &entries in sizes {
        let folder = format!("/big-{entries}/");
        let filled = Instant::now();
        let outcome = fill(&server, peer, &folder, entries);
        eprintln!(
            "  {:<24} {entries} entries made in {:.1} s",
            peer.name(),
            filled.elapsed().as_secs_f64()
        );
        made.push(outcome);
    }
    if peer == Peer::Griddav {
        if let Err(e) = settle_namespace_copy(&server) {
            eprintln!(
                "  {:<24} namespace copy before the PROPFINDs: {e}",
                peer.name()
            );
        }
    }
    let mut runs = Vec::new();
    for (&entries, filled) in sizes.iter().zip(made) {
        let folder = format!("/big-{entries}/");
        let mut r = FolderRun {
            entries,
            first_byte_ms: f64::NAN,
            total_ms: f64::NAN,
            peak_rss_mib: f64::NAN,
            growth_mib: f64::NAN,
            answer_mib: f64::NAN,
            allprop_total_ms: f64::NAN,
            error: None,
        };
        let outcome = filled.and_then(|()| {
            let mut firsts = Vec::new();
            let mut totals = Vec::new();
            let mut peak = 0.0f64;
            let mut growth = 0.0f64;
            for _ in 0..REPEATS {
                let (f, t, p, g, size) = propfind(&server, &folder, entries, EXPLORER_PROPFIND)?;
                firsts.push(f);
                totals.push(t);
                peak = peak.max(p);
                growth = growth.max(g);
                r.answer_mib = size;
            }
            r.first_byte_ms = median(&mut firsts);
            r.total_ms = median(&mut totals);
            r.peak_rss_mib = peak;
            r.growth_mib = growth;
            let mut allprop = Vec::new();
            for _ in 0..REPEATS {
                allprop.push(propfind(&server, &folder, entries, "")?.1);
            }
            r.allprop_total_ms = median(&mut allprop);
            Ok(())
        });
        if let Err(e) = outcome {
            r.error = Some(e.to_string());
        }
        eprintln!(
            "  {:<24} PROPFIND Depth 1, {:>6} entries: first byte {:8.1} ms, total {:8.1} ms, {:6.1} MiB of XML, peak RSS {:6.1} MiB (+{:5.1}), allprop total {:8.1} ms{}",
            peer.name(),
            entries,
            r.first_byte_ms,
            r.total_ms,
            r.answer_mib,
            r.peak_rss_mib,
            r.growth_mib,
            r.allprop_total_ms,
            r.error.as_deref().map(|e| format!("  ERROR {e}")).unwrap_or_default()
        );
        runs.push(r);
    }
    server.stop();
    runs
}
