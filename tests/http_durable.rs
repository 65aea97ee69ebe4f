//! End to end: no answer to a change leaves the server before the change
//! is on stable storage (issue 18).
//!
//! Runs `griddav serve` under `strace -f` and sends one request of each
//! kind that changes something (MKCOL, PUT inline and into the grid, PATCH,
//! PROPPATCH, COPY, MOVE, LOCK, UNLOCK, DELETE). From the trace, for every
//! answer written to a socket:
//!
//! - every write to the namespace's WAL that ended before the answer began
//!   is covered by an `fdatasync`/`fsync` of the WAL that began after that
//!   write ended and ended before the answer began;
//! - every share linked into place (`linkat` into `shares/`) was synced,
//!   and its directory too, after the link began (so after every write to
//!   it: all come before `finish`, which links) and before the answer began;
//! - every write to a log of packed small shares (`packed/*.log`) that
//!   ended before the answer began is covered by a sync of that log that
//!   began after the write ended and ended before the answer began.
//!
//! Needs `strace` and permission to trace (`.ci/run` installs strace and
//! runs this test); `GRIDDAV_DURABLE_BIN` checks another build (the test
//! fails for builds before issue 18).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Client, Request};

const LOCK_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>durable</D:owner></D:lockinfo>"#;

const PROPPATCH_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:durable"><D:set><D:prop><Z:color>red</Z:color></D:prop></D:set></D:propertyupdate>"#;

/// `griddav serve` under strace; both killed by PID when dropped.
struct Traced {
    child: Child,
    addr: std::net::SocketAddr,
    trace: PathBuf,
}

impl Traced {
    fn start(dir: &Path) -> Traced {
        let bin = std::env::var_os("GRIDDAV_DURABLE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_griddav")));
        let trace = dir.join("strace.log");
        let mut child = Command::new("strace")
            .args(["-f", "-y", "-ttt", "-T", "-s", "300", "-o"])
            .arg(&trace)
            .args([
                "-e",
                "trace=write,pwrite64,writev,pwritev,sendto,sendmsg,fsync,fdatasync,linkat",
            ])
            .arg(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run strace (install it: .ci/run does)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let started = Instant::now();
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("griddav listening on ") {
                        let hostport = url
                            .trim()
                            .trim_start_matches("http://")
                            .trim_end_matches('/');
                        break hostport.parse().expect("listening address");
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("griddav under strace exited before listening: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "griddav under strace did not listen within 120 s"
            );
        };
        Traced { child, addr, trace }
    }

    /// Stops the server (SIGTERM to its PID: strace blocks signals while
    /// it runs a program it started) and waits for strace to finish.
    fn stop(mut self) -> String {
        let strace = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
            .unwrap_or_default();
        for pid in children.split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
        let started = Instant::now();
        while self.child.try_wait().expect("poll strace").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "griddav under strace did not exit within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.trace).expect("read the strace log")
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
enum Kind {
    WalWrite,
    WalSync,
    /// A write to the packed-share log at this path.
    PackWrite(String),
    /// A sync of the file or directory at this path.
    Sync(String),
    Link {
        from: String,
        to: String,
    },
    Answer(u16),
}

#[derive(Debug, Clone)]
struct Event {
    kind: Kind,
    start: f64,
    end: f64,
    line: String,
}

/// The text between the first `<` after `call(` and its `>`: the path of
/// the first file descriptor argument (`strace -y`).
fn fd_path(args: &str) -> Option<&str> {
    let open = args.find('<')?;
    let close = args[open..]
        .find(">,")
        .or_else(|| args[open..].find(">)"))?;
    Some(&args[open + 1..open + close])
}

fn quoted(args: &str) -> Vec<String> {
    args.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// Parses `strace -f -y -ttt -T` output, joining `<unfinished ...>` with
/// `<... resumed>` lines per thread.
fn parse(trace: &str) -> Vec<Event> {
    let mut pending: HashMap<String, (f64, String)> = HashMap::new();
    let mut events = Vec::new();
    for raw in trace.lines() {
        // strace pads the thread id to five columns (`%-5d`), so a short
        // id (a fresh machine's small pids) is followed by two spaces.
        let Some((tid, rest)) = raw.split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(time) = time.parse::<f64>() else {
            continue;
        };
        let (start, call) = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(tid.to_owned(), (time, head.to_owned()));
            continue;
        } else if rest.starts_with("<... ") {
            let Some((start, head)) = pending.remove(tid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            (start, format!("{head}{tail}"))
        } else {
            (time, rest.to_owned())
        };
        // Duration `<0.000123>` at the end; result before it.
        let Some((body, dur)) = call.rsplit_once(" <") else {
            continue;
        };
        let Ok(dur) = dur.trim_end_matches('>').parse::<f64>() else {
            continue;
        };
        let Some((name, args)) = body.split_once('(') else {
            continue;
        };
        let ok = body
            .rsplit_once(" = ")
            .is_some_and(|(_, r)| !r.trim_start().starts_with('-'));
        if !ok {
            continue;
        }
        let path = fd_path(args).unwrap_or("");
        let kind = match name {
            "pwrite64" | "write" | "writev" | "pwritev" if path.ends_with(".db-wal") => {
                Kind::WalWrite
            }
            "pwrite64" | "write" | "writev" | "pwritev"
                if path.contains("/packed/") && path.ends_with(".log") =>
            {
                Kind::PackWrite(path.to_owned())
            }
            "fsync" | "fdatasync" if path.ends_with(".db-wal") => Kind::WalSync,
            "fsync" | "fdatasync" => Kind::Sync(path.to_owned()),
            "linkat" => {
                let q = quoted(args);
                if q.len() < 2 {
                    continue;
                }
                Kind::Link {
                    from: q[0].clone(),
                    to: q[1].clone(),
                }
            }
            "write" | "writev" | "sendto" | "sendmsg"
                if path.starts_with("socket:") || path.starts_with("TCP") =>
            {
                let Some(at) = args.find("HTTP/1.1 ") else {
                    continue;
                };
                let code = &args[at + 9..];
                let Ok(status) = code.get(..3).unwrap_or("").parse::<u16>() else {
                    continue;
                };
                Kind::Answer(status)
            }
            _ => continue,
        };
        events.push(Event {
            kind,
            start,
            end: start + dur,
            line: raw.to_owned(),
        });
    }
    events
}

/// The violations of the rules in the module docs; and how many answers
/// had WAL writes, share links and packed-share writes to account for.
fn check(events: &[Event]) -> (Vec<String>, usize, usize, usize) {
    let mut violations = Vec::new();
    let (mut checked_wal, mut checked_links, mut checked_packs) = (0, 0, 0);
    let synced_between = |from: f64, to: f64, pred: &dyn Fn(&Kind) -> bool| {
        events
            .iter()
            .any(|e| pred(&e.kind) && e.start >= from && e.end <= to)
    };
    for answer in events {
        let Kind::Answer(status) = answer.kind else {
            continue;
        };
        let wal_writes: Vec<_> = events
            .iter()
            .filter(|e| matches!(e.kind, Kind::WalWrite) && e.end <= answer.start)
            .collect();
        if let Some(last) = wal_writes.iter().max_by(|a, b| a.end.total_cmp(&b.end)) {
            checked_wal += 1;
            // The WAL only grows by appends here: a sync after the last
            // write covers every earlier one.
            if !synced_between(last.end, answer.start, &|k| matches!(k, Kind::WalSync)) {
                violations.push(format!(
                    "answer {status} sent before the namespace log was synced:\n  last WAL write: {}\n  answer: {}",
                    last.line, answer.line
                ));
            }
        }
        for write in events.iter().filter(|e| e.end <= answer.start) {
            let Kind::PackWrite(log) = &write.kind else {
                continue;
            };
            checked_packs += 1;
            if !synced_between(
                write.end,
                answer.start,
                &|k| matches!(k, Kind::Sync(p) if p == log),
            ) {
                violations.push(format!(
                    "answer {status} sent before a packed share was synced:\n  write: {}\n  answer: {}",
                    write.line, answer.line
                ));
            }
        }
        for link in events.iter().filter(|e| e.end <= answer.start) {
            let Kind::Link { from, to } = &link.kind else {
                continue;
            };
            if !to.contains("/shares/") {
                continue;
            }
            checked_links += 1;
            let file_synced = synced_between(
                link.start,
                answer.start,
                &|k| matches!(k, Kind::Sync(p) if p == from),
            );
            let dir = Path::new(to).parent().map(|d| d.display().to_string());
            let dir_synced = synced_between(
                link.end,
                answer.start,
                &|k| matches!(k, Kind::Sync(p) if Some(p) == dir.as_ref()),
            );
            if !file_synced || !dir_synced {
                violations.push(format!(
                    "answer {status} sent before a share was durable (file synced: {file_synced}, directory synced: {dir_synced}):\n  link: {}\n  answer: {}",
                    link.line, answer.line
                ));
            }
        }
    }
    (violations, checked_wal, checked_links, checked_packs)
}

#[test]
#[ignore = "needs strace and permission to trace; .ci/run runs it"]
fn every_answer_to_a_change_leaves_after_the_change_is_synced() {
    let dir = tempfile::Builder::new()
        .prefix("griddav-durable-")
        .tempdir()
        .expect("temporary directory");
    let server = Traced::start(dir.path());
    let client = Client::new(server.addr);
    let dest = |path: &str| format!("http://{}{path}", server.addr);

    let expect = |request: Request, statuses: &[u16]| {
        let what = format!("{} {}", request.method, request.path);
        let response = client.send(request);
        assert!(statuses.contains(&response.status), "{what}: {response:?}");
        response
    };
    expect(Request::new("MKCOL", "/d"), &[201]);
    expect(
        Request::new("PUT", "/d/small.txt").body(vec![b's'; 2000]),
        &[201],
    );
    expect(
        Request::new("PUT", "/d/big.bin").body(vec![b'b'; 300_000]),
        &[201],
    );
    expect(
        Request::new("PUT", "/d/packed.bin").body(vec![b'p'; 40_000]),
        &[201],
    );
    expect(
        Request::new("PATCH", "/d/small.txt")
            .header("Content-Type", "application/x-sabredav-partialupdate")
            .header("X-Update-Range", "append")
            .body(b"more".to_vec()),
        &[200, 204],
    );
    expect(
        Request::new("PROPPATCH", "/d/small.txt")
            .header("Content-Type", "application/xml")
            .body(PROPPATCH_BODY.as_bytes().to_vec()),
        &[207],
    );
    expect(
        Request::new("COPY", "/d/big.bin").header("Destination", &dest("/d/copy.bin")),
        &[201],
    );
    expect(
        Request::new("MOVE", "/d/copy.bin").header("Destination", &dest("/d/moved.bin")),
        &[201],
    );
    let lock = expect(
        Request::new("LOCK", "/d/small.txt")
            .header("Content-Type", "application/xml")
            .header("Timeout", "Second-600")
            .body(LOCK_BODY.as_bytes().to_vec()),
        &[200],
    );
    let token = lock
        .header("Lock-Token")
        .expect("LOCK answers a Lock-Token")
        .to_owned();
    expect(
        Request::new("UNLOCK", "/d/small.txt").header("Lock-Token", &token),
        &[204],
    );
    expect(Request::new("DELETE", "/d/moved.bin"), &[204]);
    expect(Request::new("DELETE", "/d"), &[204]);

    let trace = server.stop();
    let events = parse(&trace);
    let answers = events
        .iter()
        .filter(|e| matches!(e.kind, Kind::Answer(_)))
        .count();
    assert!(
        answers >= 12,
        "the trace shows {answers} answers of 12:\n{trace}"
    );
    let (violations, checked_wal, checked_links, checked_packs) = check(&events);
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(
        checked_wal >= 12,
        "only {checked_wal} answers came after a namespace write: is the trace complete?"
    );
    assert!(
        checked_links >= 3,
        "the 300 KB PUT linked {checked_links} shares into place (3-of-10 needs at least 7)"
    );
    assert!(
        checked_packs >= 3,
        "the 40 KB PUT packed {checked_packs} shares (3-of-10 needs at least 7)"
    );
}

/// strace pads thread ids to five columns: a 4-digit id (as on a fresh
/// machine) is followed by two spaces, a 6-digit one by one. Both parse.
#[test]
fn trace_lines_parse_whatever_the_width_of_the_thread_id() {
    let trace = concat!(
        "5303  1795966456.400000 pwrite64(11</d/namespace.db-wal>, \"x\", 1, 0) = 1 <0.000010>\n",
        "5303  1795966456.400100 fdatasync(11</d/namespace.db-wal>) = 0 <0.000100>\n",
        "123456 1795966456.400300 writev(12<TCP:[127.0.0.1:1->127.0.0.1:2]>, ",
        "[{iov_base=\"HTTP/1.1 201 Created\\r\\n\", iov_len=22}], 1) = 22 <0.000010>\n",
    );
    let events = parse(trace);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(events[0].kind, Kind::WalWrite));
    assert!(matches!(events[1].kind, Kind::WalSync));
    assert!(matches!(events[2].kind, Kind::Answer(201)));
}
