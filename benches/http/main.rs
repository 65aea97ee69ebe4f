//! End-to-end HTTP benchmark: griddav against dav-server's LocalFs and
//! `rclone serve webdav`, on loopback, with a client that writes the request
//! bytes itself over a raw TCP socket so that every timestamp is the moment
//! the bytes were handed to the kernel.
//!
//!     bash bench/run.sh                 # the full run: 16 MiB .. 4 GiB
//!     GRIDDAV_BENCH_QUICK=1 bash bench/run.sh   # CI: 16 and 256 MiB
//!
//! Writes `docs/BENCHMARKS.md` and `docs/benchmarks-close-latency.svg`
//! (`GRIDDAV_BENCH_OUT` moves them). Every server is a separate process,
//! started afresh on an empty directory for each measurement, so its peak
//! RSS (`VmHWM`, reset through `/proc/PID/clear_refs` before each phase) is
//! its own. Environment:
//!
//! Scenarios (issue 13): `sizes` (one large PUT, GET and Range GETs per
//! size), `small` (10,000 files of 1-64 KiB as Finder and Explorer copy
//! them, 1 and 8 clients: benches/http/small.rs), `folders` (PROPFIND
//! Depth: 1 of 1,000, 10,000 and 100,000 entries: benches/http/folders.rs),
//! `concurrent` (64 clients PUT 64 MiB each at once, then GET them, against
//! one stream on the same server), `slow` (griddav on a throttled grid),
//! `ceilings` (what the disk itself allows, without griddav: the share
//! writes of a 3-of-10 PUT, a cold read of three shares, ten parallel
//! durable 4 KiB appends: benches/http/ceilings.rs).
//!
//! - `GRIDDAV_BENCH_QUICK=1`: sizes 16 and 256 MiB, 500 small files,
//!   folders of 1,000 and 10,000, 64 clients x 8 MiB, slow grid 128 MiB.
//! - `GRIDDAV_BENCH_SIZES=16,256,1024,4096` (MiB), `GRIDDAV_BENCH_PEERS=griddav,localfs,rclone`,
//!   `GRIDDAV_BENCH_SCENARIOS=sizes,small,folders,concurrent,slow,ceilings`,
//!   `GRIDDAV_BENCH_REPEAT=N` (median of N fresh runs per size: 3 in a full
//!   run, where one PUT's close alone varied from 20 to 88 ms at 1 GiB, and
//!   1 in a quick one), `GRIDDAV_BENCH_SMALL_FILES`,
//!   `GRIDDAV_BENCH_FOLDERS=1000,10000,100000`.
//! - `GRIDDAV_BENCH_COLD_GET=0|1`: drop the page cache before each
//!   whole-file GET (default: when the benchmark may, that is as root), so
//!   every server reads the file from the disk.
//! - `GRIDDAV_BIN`: the griddav binary to run (default: this build's).
//! - `GRIDDAV_BENCH_DIR`: where the servers' directories go (default: a
//!   temporary directory under the current one).
//! - `GRIDDAV_BENCH_SLOW_MIB`, `GRIDDAV_BENCH_SLOW_RATE` (bytes/s of share
//!   data, whole grid, default 40000000), `GRIDDAV_BENCH_CLIENTS`,
//!   `GRIDDAV_BENCH_CLIENT_MIB`.
//!
//! The binary is also its own helper servers: `--serve-localfs DIR` runs
//! the baseline (examples/baseline_localfs.rs) and `--serve-throttled DIR
//! RATE` runs griddav exactly as `griddav serve` does, but with every
//! storage server of its local grid behind one shared rate limit.

#[path = "../../examples/baseline_localfs.rs"]
mod baseline;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Bytes per `write` of the PUT body.
const SEND_CHUNK: usize = 1 << 20;
/// Repeating pattern of the file contents (random, so nothing compresses).
const PATTERN_LEN: usize = 64 << 20;
const RANGE_LEN: u64 = 32 << 10;
const RANGE_REQUESTS: usize = 21;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("--serve-localfs") => {
            let dir = PathBuf::from(&args[1]);
            let addr = "127.0.0.1:0".parse().expect("address");
            if let Err(e) = baseline::serve_localfs(dir, addr) {
                eprintln!("baseline: {e}");
                std::process::exit(1);
            }
        }
        Some("--serve-throttled") => {
            let dir = PathBuf::from(&args[1]);
            let rate: f64 = args[2].parse().expect("rate in bytes per second");
            if let Err(e) = throttled::serve(dir, rate) {
                eprintln!("throttled griddav: {e}");
                std::process::exit(1);
            }
        }
        _ => run_all(),
    }
}

// ---------------------------------------------------------------- settings

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

struct Settings {
    quick: bool,
    sizes: Vec<u64>,
    peers: Vec<Peer>,
    scenarios: Vec<String>,
    repeat: usize,
    slow_size: u64,
    slow_rate: f64,
    clients: usize,
    client_size: u64,
    small_files: usize,
    folders: Vec<usize>,
    /// Whether the page cache is dropped before each whole-file GET.
    cold_get: bool,
    root: PathBuf,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("GRIDDAV_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let sizes = env_list("GRIDDAV_BENCH_SIZES")
            .map(|l| {
                l.iter()
                    .map(|s| s.parse::<u64>().expect("size in MiB") * MIB)
                    .collect()
            })
            .unwrap_or_else(|| {
                if quick {
                    vec![16 * MIB, 256 * MIB]
                } else {
                    vec![16 * MIB, 256 * MIB, 1024 * MIB, 4096 * MIB]
                }
            });
        let peers = env_list("GRIDDAV_BENCH_PEERS")
            .map(|l| {
                l.iter()
                    .map(|p| Peer::parse(p).unwrap_or_else(|| panic!("unknown peer {p}")))
                    .collect()
            })
            .unwrap_or_else(|| vec![Peer::Griddav, Peer::LocalFs, Peer::Rclone]);
        let scenarios = env_list("GRIDDAV_BENCH_SCENARIOS").unwrap_or_else(|| {
            [
                "sizes",
                "small",
                "folders",
                "concurrent",
                "slow",
                "ceilings",
            ]
            .map(String::from)
            .to_vec()
        });
        let folders = env_list("GRIDDAV_BENCH_FOLDERS")
            .map(|l| {
                l.iter()
                    .map(|s| s.parse::<usize>().expect("folder size in entries"))
                    .collect()
            })
            .unwrap_or_else(|| {
                if quick {
                    vec![1000, 10_000]
                } else {
                    vec![1000, 10_000, 100_000]
                }
            });
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Settings {
            quick,
            sizes,
            peers,
            scenarios,
            repeat: env_u64("GRIDDAV_BENCH_REPEAT")
                .unwrap_or(if quick { 1 } else { 3 })
                .max(1) as usize,
            slow_size: env_u64("GRIDDAV_BENCH_SLOW_MIB").unwrap_or(if quick { 128 } else { 1024 })
                * MIB,
            slow_rate: env_u64("GRIDDAV_BENCH_SLOW_RATE").unwrap_or(40_000_000) as f64,
            clients: env_u64("GRIDDAV_BENCH_CLIENTS").unwrap_or(64) as usize,
            client_size: env_u64("GRIDDAV_BENCH_CLIENT_MIB").unwrap_or(if quick { 8 } else { 64 })
                * MIB,
            small_files: env_u64("GRIDDAV_BENCH_SMALL_FILES").unwrap_or(if quick {
                500
            } else {
                10_000
            }) as usize,
            folders,
            cold_get: match std::env::var("GRIDDAV_BENCH_COLD_GET") {
                Ok(v) => v != "0" && !v.is_empty(),
                Err(_) => may_drop_page_cache(),
            },
            root: std::env::var_os("GRIDDAV_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".")),
            out: std::env::var_os("GRIDDAV_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("docs")),
        }
    }

    fn has(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

// ------------------------------------------------------------------ servers

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Griddav,
    LocalFs,
    Rclone,
    /// griddav with its grid throttled (slow-grid scenario only).
    GriddavThrottled,
}

impl Peer {
    fn parse(name: &str) -> Option<Peer> {
        match name {
            "griddav" => Some(Peer::Griddav),
            "localfs" => Some(Peer::LocalFs),
            "rclone" => Some(Peer::Rclone),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Peer::Griddav => "griddav",
            Peer::LocalFs => "dav-server LocalFs",
            Peer::Rclone => "rclone serve webdav",
            Peer::GriddavThrottled => "griddav, grid throttled",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Peer::Griddav | Peer::GriddavThrottled => "#c0392b",
            Peer::LocalFs => "#2471a3",
            Peer::Rclone => "#229954",
        }
    }
}

/// A running server process and what the benchmark watches of it.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    /// Directories where the first stored bytes of an upload show up.
    watch: Vec<PathBuf>,
}

impl Server {
    fn start(peer: Peer, dir: &Path, slow_rate: f64) -> Server {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("server directory");
        let log = std::fs::File::create(dir.with_extension("log")).expect("server log");
        let me = std::env::current_exe().expect("current exe");
        let (mut command, data) = match peer {
            Peer::Griddav => {
                // GRIDDAV_BIN: another build (say main's) to compare with.
                let bin = std::env::var_os("GRIDDAV_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_griddav")));
                let mut c = Command::new(bin);
                c.arg("serve")
                    .arg("--data-dir")
                    .arg(dir)
                    .args(["--listen", "127.0.0.1:0"]);
                c.env("RUST_LOG", "warn");
                (c, dir.to_path_buf())
            }
            Peer::GriddavThrottled => {
                let mut c = Command::new(&me);
                c.arg("--serve-throttled")
                    .arg(dir)
                    .arg(slow_rate.to_string());
                c.env("RUST_LOG", "warn");
                (c, dir.to_path_buf())
            }
            Peer::LocalFs => {
                let mut c = Command::new(&me);
                c.arg("--serve-localfs").arg(dir);
                (c, dir.to_path_buf())
            }
            Peer::Rclone => {
                let port = free_port();
                let mut c = Command::new("rclone");
                c.args(["serve", "webdav", "--addr"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg(dir)
                    .args(["--config", "/dev/null", "-q"]);
                (c, dir.to_path_buf())
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", peer.name()));
        let addr = match peer {
            Peer::Rclone => {
                let addr: SocketAddr = command
                    .get_args()
                    .nth(3)
                    .and_then(|a| a.to_str())
                    .and_then(|a| a.parse().ok())
                    .expect("rclone address");
                let deadline = Instant::now() + Duration::from_secs(20);
                while TcpStream::connect(addr).is_err() {
                    assert!(Instant::now() < deadline, "rclone did not start");
                    std::thread::sleep(Duration::from_millis(20));
                }
                addr
            }
            _ => {
                let stdout = child.stdout.take().expect("stdout");
                let mut line = String::new();
                BufReader::new(stdout)
                    .read_line(&mut line)
                    .expect("server output");
                let url = line
                    .split_whitespace()
                    .last()
                    .unwrap_or_else(|| panic!("{} did not start: {line:?}", peer.name()));
                url.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse()
                    .unwrap_or_else(|_| panic!("bad address in {line:?}"))
            }
        };
        let watch = match peer {
            Peer::Griddav | Peer::GriddavThrottled => (0..10)
                .map(|i| data.join(format!("grid/server-{i:02}/incoming")))
                .collect(),
            _ => vec![data.clone()],
        };
        Server {
            child,
            addr,
            dir: dir.to_path_buf(),
            watch,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// Peak resident set since the last reset, MiB.
    fn peak_mib(&self) -> f64 {
        proc_status_kib(self.pid(), "VmHWM:") as f64 / 1024.0
    }

    /// User + system CPU seconds used so far.
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

// ------------------------------------------------------------------- client

/// Timings of one PUT, all from the client's side of the socket.
struct PutTiming {
    status: u16,
    first_byte: Instant,
    last_byte: Instant,
    answered: Instant,
    /// Body bytes the server had not read yet when the last `write`
    /// returned (see [`unread_body_bytes`]).
    unread_at_last_byte: Option<u64>,
}

impl PutTiming {
    fn secs(&self) -> f64 {
        (self.answered - self.first_byte).as_secs_f64()
    }
    fn close_ms(&self) -> f64 {
        (self.answered - self.last_byte).as_secs_f64() * 1e3
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    Ok(stream)
}

/// PUTs `size` bytes of `pattern` (repeated) with Content-Length. The body
/// is written in [`SEND_CHUNK`] writes; `last_byte` is taken when the last
/// write returned, `answered` when the status line arrived.
fn put(addr: SocketAddr, path: &str, size: u64, pattern: &[u8]) -> io::Result<PutTiming> {
    let mut stream = connect(addr)?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let mut sent = 0u64;
    let first_byte = Instant::now();
    while sent < size {
        let at = (sent % pattern.len() as u64) as usize;
        let len = (SEND_CHUNK as u64)
            .min(size - sent)
            .min((pattern.len() - at) as u64) as usize;
        stream.write_all(&pattern[at..at + len])?;
        sent += len as u64;
    }
    let last_byte = Instant::now();
    let unread_at_last_byte = unread_body_bytes(stream.local_addr()?, addr);
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let (status, answered, headers) = read_head(&mut reader)?;
    drain_body(&mut reader, &headers, |_| Ok(()))?;
    Ok(PutTiming {
        status,
        first_byte,
        last_byte,
        answered,
        unread_at_last_byte,
    })
}

/// Bytes written by `client` to `server` that the server process has not
/// read yet: the client socket's send queue (not yet sent, or not yet
/// acknowledged) plus the server socket's receive queue, as the kernel
/// lists them in `/proc/net/tcp`. A client's `write` returns once its
/// bytes are in its own send buffer (autotuned up to `net.ipv4.tcp_wmem`'s
/// maximum, 4 MiB by default), so the close clock starts with these still
/// to be read, and every server must read them before it can answer.
/// `None` when the sockets are not listed (not IPv4, or closed already).
fn unread_body_bytes(client: SocketAddr, server: SocketAddr) -> Option<u64> {
    fn proc_name(addr: SocketAddr) -> Option<String> {
        match addr {
            // The address as the kernel prints it: the four bytes in
            // memory order, as one little-endian hex word on x86.
            SocketAddr::V4(v4) => Some(format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            )),
            SocketAddr::V6(_) => None,
        }
    }
    let (client, server) = (proc_name(client)?, proc_name(server)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (mut client_send, mut server_receive) = (None, None);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(queues)) =
            (fields.get(1), fields.get(2), fields.get(4))
        else {
            continue;
        };
        let Some((tx, rx)) = queues.split_once(':') else {
            continue;
        };
        if *local == client && *remote == server {
            client_send = u64::from_str_radix(tx, 16).ok();
        } else if *local == server && *remote == client {
            server_receive = u64::from_str_radix(rx, 16).ok();
        }
    }
    Some(client_send? + server_receive?)
}

/// Reads a status line and headers; returns the status, when the first byte
/// of the answer arrived, and the headers (names lowercased).
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Instant, BTreeMap<String, String>)> {
    let mut line = String::new();
    if reader.fill_buf()?.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"));
    }
    let answered = Instant::now();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Ok((status, answered, headers))
}

/// Reads the body (Content-Length or chunked), handing each piece to `sink`.
fn drain_body(
    reader: &mut impl BufRead,
    headers: &BTreeMap<String, String>,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut total = 0u64;
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let len = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if len == 0 {
                loop {
                    line.clear();
                    reader.read_line(&mut line)?;
                    if line.trim().is_empty() {
                        return Ok(total);
                    }
                }
            }
            total += copy_n(reader, len, &mut sink)?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    }
    let len: u64 = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    total += copy_n(reader, len, &mut sink)?;
    Ok(total)
}

fn copy_n(
    reader: &mut impl BufRead,
    mut len: u64,
    sink: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let all = len;
    while len > 0 {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
        }
        let n = buf.len().min(len as usize);
        sink(&buf[..n])?;
        reader.consume(n);
        len -= n as u64;
    }
    Ok(all)
}

const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// Whether this process may drop the page cache (root, outside a
/// container that mounts `/proc/sys` read-only): tried once.
fn may_drop_page_cache() -> bool {
    drop_page_cache().is_ok()
}

/// Writes every dirty page back and drops the clean ones, so that the GET
/// after it reads from the disk whatever the server did when it wrote.
/// Without it the comparison is not like for like: griddav writes shares
/// with direct I/O and drops what it wrote from the cache, while LocalFs
/// and rclone leave the whole file cached, so their GET right after the
/// PUT is served from memory and griddav's from the disk.
fn drop_page_cache() -> io::Result<()> {
    let synced = Command::new("sync").status()?;
    if !synced.success() {
        return Err(io::Error::other(format!("sync: {synced}")));
    }
    std::fs::write(DROP_CACHES, "3")
}

/// Checks the bytes at `offset` against the pattern.
fn check(pattern: &[u8], offset: u64, data: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let at = ((offset + done as u64) % pattern.len() as u64) as usize;
        let len = (data.len() - done).min(pattern.len() - at);
        if data[done..done + len] != pattern[at..at + len] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("content differs near offset {}", offset + done as u64),
            ));
        }
        done += len;
    }
    Ok(())
}

/// GETs the whole file and checks it; returns seconds from request to last byte.
fn get(addr: SocketAddr, path: &str, size: u64, pattern: &[u8]) -> io::Result<f64> {
    let mut stream = connect(addr)?;
    let start = Instant::now();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let (status, _, headers) = read_head(&mut reader)?;
    if status != 200 {
        return Err(io::Error::other(format!("GET answered {status}")));
    }
    let mut offset = 0u64;
    let n = drain_body(&mut reader, &headers, |piece| {
        check(pattern, offset, piece)?;
        offset += piece.len() as u64;
        Ok(())
    })?;
    if n != size {
        return Err(io::Error::other(format!(
            "GET gave {n} bytes, expected {size}"
        )));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Median milliseconds of 32 KiB Range GETs in the middle of the file, on
/// one keep-alive connection (the first request is a warm-up, not counted).
fn range_gets(addr: SocketAddr, path: &str, size: u64, pattern: &[u8]) -> io::Result<f64> {
    let stream = connect(addr)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let start_at = (size / 2).saturating_sub(RANGE_LEN / 2) + 4321;
    let start_at = start_at.min(size.saturating_sub(RANGE_LEN));
    let end = start_at + RANGE_LEN - 1;
    let mut times = Vec::new();
    for i in 0..RANGE_REQUESTS {
        let t = Instant::now();
        writer.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nRange: bytes={start_at}-{end}\r\n\r\n")
                .as_bytes(),
        )?;
        let (status, _, headers) = read_head(&mut reader)?;
        if status != 206 {
            return Err(io::Error::other(format!("Range GET answered {status}")));
        }
        let mut body = Vec::with_capacity(RANGE_LEN as usize);
        drain_body(&mut reader, &headers, |p| {
            body.extend_from_slice(p);
            Ok(())
        })?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if body.len() as u64 != RANGE_LEN {
            return Err(io::Error::other(format!(
                "Range GET gave {} bytes",
                body.len()
            )));
        }
        check(pattern, start_at, &body)?;
        if i > 0 {
            times.push(ms);
        }
    }
    Ok(median(&mut times))
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Watches directories from another thread and records when a file with
/// at least one byte first shows up in any of them.
struct FirstBytes {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<Instant>>,
}

impl FirstBytes {
    fn watch(dirs: Vec<PathBuf>) -> FirstBytes {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for dir in &dirs {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        if entry.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
                            return Some(Instant::now());
                        }
                    }
                }
                // Tight, but leave the two cores to the server and client.
                std::thread::sleep(Duration::from_micros(200));
            }
            None
        });
        FirstBytes { stop, thread }
    }

    fn finish(self) -> Option<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("watcher")
    }
}

// --------------------------------------------------------------- measuring

#[derive(Clone, Debug, Default)]
struct Measure {
    put_mbs: f64,
    close_ms: f64,
    /// [`PutTiming::unread_at_last_byte`], in MiB.
    unread_mib: f64,
    first_share_ms: f64,
    put_rss_mib: f64,
    put_cpu_s: f64,
    get_mbs: f64,
    get_rss_mib: f64,
    range_ms: f64,
    error: Option<String>,
}

fn mbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// One size against one fresh server.
fn measure_once(settings: &Settings, peer: Peer, size: u64, pattern: &[u8], tag: &str) -> Measure {
    let dir = settings.root.join(format!("{}-{tag}", peer_slug(peer)));
    let server = Server::start(peer, &dir, settings.slow_rate);
    let path = "/bench.bin";
    let mut m = Measure::default();
    let result = (|| -> io::Result<()> {
        server.reset_peak();
        let cpu0 = server.cpu_secs();
        let watcher = FirstBytes::watch(server.watch.clone());
        let timing = put(server.addr, path, size, pattern);
        let first = watcher.finish();
        let timing = timing?;
        m.put_cpu_s = server.cpu_secs() - cpu0;
        m.put_rss_mib = server.peak_mib();
        if !(200..300).contains(&timing.status) {
            return Err(io::Error::other(format!("PUT answered {}", timing.status)));
        }
        m.put_mbs = mbs(size, timing.secs());
        m.close_ms = timing.close_ms();
        m.unread_mib = timing
            .unread_at_last_byte
            .map_or(f64::NAN, |bytes| bytes as f64 / MIB as f64);
        m.first_share_ms = first
            .map(|t| t.saturating_duration_since(timing.first_byte).as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN);
        if settings.cold_get {
            drop_page_cache()?;
        }
        server.reset_peak();
        let secs = get(server.addr, path, size, pattern)?;
        m.get_mbs = mbs(size, secs);
        m.get_rss_mib = server.peak_mib();
        m.range_ms = range_gets(server.addr, path, size, pattern)?;
        Ok(())
    })();
    if let Err(e) = result {
        m.error = Some(e.to_string());
    }
    server.stop();
    m
}

fn peer_slug(peer: Peer) -> &'static str {
    match peer {
        Peer::Griddav => "griddav",
        Peer::LocalFs => "localfs",
        Peer::Rclone => "rclone",
        Peer::GriddavThrottled => "throttled",
    }
}

/// Median of `repeat` fresh runs, metric by metric.
fn measure(settings: &Settings, peer: Peer, size: u64, pattern: &[u8]) -> Measure {
    let runs: Vec<Measure> = (0..settings.repeat)
        .map(|r| {
            let m = measure_once(settings, peer, size, pattern, &format!("{}m-{r}", size / MIB));
            eprintln!(
                "  {:<24} {:>5} MiB: PUT {:7.1} MB/s close {:8.1} ms (unread {:4.1} MiB) first-share {:7.1} ms RSS {:6.1} MiB CPU {:5.1} s | GET {:7.1} MB/s RSS {:6.1} MiB | range {:6.2} ms{}",
                peer.name(),
                size / MIB,
                m.put_mbs,
                m.close_ms,
                m.unread_mib,
                m.first_share_ms,
                m.put_rss_mib,
                m.put_cpu_s,
                m.get_mbs,
                m.get_rss_mib,
                m.range_ms,
                m.error.as_deref().map(|e| format!("  ERROR {e}")).unwrap_or_default()
            );
            m
        })
        .collect();
    if runs.len() == 1 {
        return runs.into_iter().next().expect("one run");
    }
    let pick = |f: fn(&Measure) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).filter(|x| !x.is_nan()).collect();
        median(&mut v)
    };
    Measure {
        put_mbs: pick(|m| m.put_mbs),
        close_ms: pick(|m| m.close_ms),
        unread_mib: pick(|m| m.unread_mib),
        first_share_ms: pick(|m| m.first_share_ms),
        put_rss_mib: pick(|m| m.put_rss_mib),
        put_cpu_s: pick(|m| m.put_cpu_s),
        get_mbs: pick(|m| m.get_mbs),
        get_rss_mib: pick(|m| m.get_rss_mib),
        range_ms: pick(|m| m.range_ms),
        error: runs.iter().find_map(|m| m.error.clone()),
    }
}

struct SlowGrid {
    size: u64,
    rate: f64,
    put_secs: f64,
    close_ms: f64,
    first_share_ms: f64,
    rss_mib: f64,
    error: Option<String>,
}

fn slow_grid(settings: &Settings, pattern: &[u8]) -> SlowGrid {
    let dir = settings.root.join("throttled");
    let server = Server::start(Peer::GriddavThrottled, &dir, settings.slow_rate);
    server.reset_peak();
    let watcher = FirstBytes::watch(server.watch.clone());
    let timing = put(server.addr, "/slow.bin", settings.slow_size, pattern);
    let first = watcher.finish();
    let mut s = SlowGrid {
        size: settings.slow_size,
        rate: settings.slow_rate,
        put_secs: f64::NAN,
        close_ms: f64::NAN,
        first_share_ms: f64::NAN,
        rss_mib: server.peak_mib(),
        error: None,
    };
    match timing {
        Ok(t) if (200..300).contains(&t.status) => {
            s.put_secs = t.secs();
            s.close_ms = t.close_ms();
            s.first_share_ms = first
                .map(|f| f.saturating_duration_since(t.first_byte).as_secs_f64() * 1e3)
                .unwrap_or(f64::NAN);
        }
        Ok(t) => s.error = Some(format!("PUT answered {}", t.status)),
        Err(e) => s.error = Some(e.to_string()),
    }
    eprintln!(
        "  slow grid {} MiB at {:.0} MB/s: PUT {:.1} s, close {:.1} ms, first share {:.1} ms, RSS {:.1} MiB{}",
        s.size / MIB,
        s.rate / 1e6,
        s.put_secs,
        s.close_ms,
        s.first_share_ms,
        s.rss_mib,
        s.error.as_deref().map(|e| format!(" ERROR {e}")).unwrap_or_default()
    );
    server.stop();
    s
}

struct Concurrent {
    peer: Peer,
    clients: usize,
    size: u64,
    /// One PUT and one GET of `size` alone, on the same server, first.
    single_put_mbs: f64,
    single_get_mbs: f64,
    put_mbs: f64,
    put_rss_mib: f64,
    max_close_ms: f64,
    get_mbs: f64,
    get_rss_mib: f64,
    errors: Vec<String>,
}

fn concurrent(settings: &Settings, peer: Peer, pattern: &Arc<Vec<u8>>) -> Concurrent {
    let dir = settings
        .root
        .join(format!("{}-concurrent", peer_slug(peer)));
    let server = Server::start(peer, &dir, settings.slow_rate);
    let clients = settings.clients;
    let size = settings.client_size;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (single_put_mbs, single_get_mbs) = match put(server.addr, "/single.bin", size, pattern)
        .and_then(|t| {
            if (200..300).contains(&t.status) {
                Ok(mbs(size, t.secs()))
            } else {
                Err(io::Error::other(format!("PUT answered {}", t.status)))
            }
        })
        .and_then(|p| {
            Ok((
                p,
                mbs(size, get(server.addr, "/single.bin", size, pattern)?),
            ))
        }) {
        Ok(r) => r,
        Err(e) => {
            errors
                .lock()
                .expect("errors")
                .push(format!("single stream: {e}"));
            (f64::NAN, f64::NAN)
        }
    };

    let run = |get_phase: bool| -> (f64, f64, f64) {
        server.reset_peak();
        let barrier = Arc::new(Barrier::new(clients + 1));
        let closes = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let pattern = Arc::clone(pattern);
                let errors = Arc::clone(&errors);
                let closes = Arc::clone(&closes);
                let addr = server.addr;
                std::thread::spawn(move || {
                    let path = format!("/client-{i:02}.bin");
                    barrier.wait();
                    if get_phase {
                        if let Err(e) = get(addr, &path, size, &pattern) {
                            errors
                                .lock()
                                .expect("errors")
                                .push(format!("GET {path}: {e}"));
                        }
                    } else {
                        match put(addr, &path, size, &pattern) {
                            Ok(t) if (200..300).contains(&t.status) => {
                                closes.lock().expect("closes").push(t.close_ms())
                            }
                            Ok(t) => errors
                                .lock()
                                .expect("errors")
                                .push(format!("PUT {path} answered {}", t.status)),
                            Err(e) => errors
                                .lock()
                                .expect("errors")
                                .push(format!("PUT {path}: {e}")),
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for t in threads {
            t.join().expect("client thread");
        }
        let secs = start.elapsed().as_secs_f64();
        let max_close = closes
            .lock()
            .expect("closes")
            .iter()
            .cloned()
            .fold(0.0, f64::max);
        (
            mbs(size * clients as u64, secs),
            server.peak_mib(),
            max_close,
        )
    };
    let (put_mbs, put_rss_mib, max_close_ms) = run(false);
    let (get_mbs, get_rss_mib, _) = run(true);
    server.stop();
    let errors = errors.lock().expect("errors").clone();
    let c = Concurrent {
        peer,
        clients,
        size,
        single_put_mbs,
        single_get_mbs,
        put_mbs,
        put_rss_mib,
        max_close_ms,
        get_mbs,
        get_rss_mib,
        errors,
    };
    eprintln!(
        "  {} x {} MiB into {}: single stream PUT {:.1} GET {:.1} MB/s; together PUT {:.1} MB/s (RSS {:.1} MiB, slowest close {:.1} ms), GET {:.1} MB/s (RSS {:.1} MiB), {} errors",
        c.clients,
        c.size / MIB,
        peer.name(),
        c.single_put_mbs,
        c.single_get_mbs,
        c.put_mbs,
        c.put_rss_mib,
        c.max_close_ms,
        c.get_mbs,
        c.get_rss_mib,
        c.errors.len()
    );
    c
}

// --------------------------------------------------------------- slow grid

/// griddav with a slow grid, for the slow-grid scenario. Runs in a child
/// process (the benchmark binary itself) so that its RSS is measured like
/// `griddav serve`'s; everything but the grid is built exactly as
/// `griddav serve` builds it (src/main.rs), from the public API, so no
/// throttling code or knob ships in the server.
mod throttled {
    use std::path::PathBuf;
    use std::sync::Arc;

    use griddav::config::Config;
    use griddav::grid::{Grid, Link, ShareStore, ThrottledStore};

    pub(crate) fn serve(dir: PathBuf, rate: f64) -> Result<(), Box<dyn std::error::Error>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut config = Config::load(None)?;
            config.data_dir = dir;
            config.listen = "127.0.0.1:0".parse()?;
            config.validate()?;
            let plain = {
                let config = config.clone();
                tokio::task::spawn_blocking(move || griddav::server::build_grid(&config)).await??
            };
            // One link shared by every server of the grid.
            let link = Link::new(rate);
            let grid = Grid::new(
                plain
                    .servers()
                    .iter()
                    .map(|inner| {
                        Arc::new(ThrottledStore::new(Arc::clone(inner), Arc::clone(&link)))
                            as Arc<dyn ShareStore>
                    })
                    .collect(),
            );
            // Built as `griddav serve` builds it, on the throttled grid.
            let service = griddav::server::start_service(&config, grid).await?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                writeln!(
                    stdout,
                    "throttled griddav listening on http://{}/",
                    listener.local_addr()?
                )?;
                stdout.flush()?;
            }
            griddav::server::serve(listener, service.handler, std::future::pending()).await?;
            Ok(())
        })
    }
}

mod ceilings;
mod conn;
mod folders;
mod report;
mod small;
use report::{loadavg, machine, sh, write_report};

fn run_all() {
    let settings = Settings::from_env();
    let started_at = Instant::now();
    let started = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    std::fs::create_dir_all(&settings.root).expect("benchmark directory");
    let work = tempfile::Builder::new()
        .prefix("griddav-http-bench-")
        .tempdir_in(&settings.root)
        .expect("temporary directory");
    let settings = Settings {
        root: work.path().to_path_buf(),
        ..settings
    };
    let mut machine = machine(&settings.root);
    eprintln!(
        "griddav HTTP benchmark: sizes {:?} MiB, peers {:?}, scenarios {:?}, in {}; load {}",
        settings.sizes.iter().map(|s| s / MIB).collect::<Vec<_>>(),
        settings.peers,
        settings.scenarios,
        settings.root.display(),
        machine.load_before
    );
    let pattern = {
        use rand::RngCore;
        let mut p = vec![0u8; PATTERN_LEN];
        rand::thread_rng().fill_bytes(&mut p);
        Arc::new(p)
    };

    let mut results = BTreeMap::new();
    if settings.has("sizes") {
        for &size in &settings.sizes {
            for &peer in &settings.peers {
                results.insert((peer, size), measure(&settings, peer, size, &pattern));
            }
        }
    }
    let mut smalls = BTreeMap::new();
    if settings.has("small") {
        for client in [small::Client::Finder, small::Client::Explorer] {
            for clients in [1, 8] {
                for &peer in &settings.peers {
                    let r = small::run(
                        &settings,
                        peer,
                        client,
                        clients,
                        settings.small_files,
                        &pattern,
                    );
                    smalls.insert((client, clients, peer), r);
                }
            }
        }
    }
    let mut folders = BTreeMap::new();
    if settings.has("folders") {
        for &peer in &settings.peers {
            folders.insert(peer, folders::run(&settings, peer, &settings.folders));
        }
    }
    let mut conc = Vec::new();
    if settings.has("concurrent") {
        for &peer in &settings.peers {
            conc.push(concurrent(&settings, peer, &pattern));
        }
    }
    let slow = settings.has("slow").then(|| slow_grid(&settings, &pattern));
    let ceilings = settings.has("ceilings").then(|| ceilings::run(&settings));
    machine.load_after = loadavg();
    write_report(
        &settings,
        &machine,
        &results,
        &smalls,
        &folders,
        slow.as_ref(),
        &conc,
        ceilings.as_ref(),
        &started,
        started_at.elapsed(),
    )
    .expect("write the report");
    eprintln!(
        "wrote {} and {}",
        settings.out.join("BENCHMARKS.md").display(),
        settings.out.join("benchmarks-close-latency.svg").display()
    );
}
