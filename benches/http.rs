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
//! - `GRIDDAV_BENCH_QUICK=1`: sizes 16 and 256 MiB, slow grid 128 MiB,
//!   concurrency 16 x 16 MiB.
//! - `GRIDDAV_BENCH_SIZES=16,256,1024,4096` (MiB), `GRIDDAV_BENCH_PEERS=griddav,localfs,rclone`,
//!   `GRIDDAV_BENCH_SCENARIOS=sizes,slow,concurrent`, `GRIDDAV_BENCH_REPEAT=N`
//!   (median of N fresh runs per size).
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

#[path = "../examples/baseline_localfs.rs"]
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
        let scenarios = env_list("GRIDDAV_BENCH_SCENARIOS")
            .unwrap_or_else(|| vec!["sizes".into(), "slow".into(), "concurrent".into()]);
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Settings {
            quick,
            sizes,
            peers,
            scenarios,
            repeat: env_u64("GRIDDAV_BENCH_REPEAT").unwrap_or(1).max(1) as usize,
            slow_size: env_u64("GRIDDAV_BENCH_SLOW_MIB").unwrap_or(if quick { 128 } else { 1024 })
                * MIB,
            slow_rate: env_u64("GRIDDAV_BENCH_SLOW_RATE").unwrap_or(40_000_000) as f64,
            clients: env_u64("GRIDDAV_BENCH_CLIENTS").unwrap_or(16) as usize,
            client_size: env_u64("GRIDDAV_BENCH_CLIENT_MIB").unwrap_or(if quick {
                16
            } else {
                256
            }) * MIB,
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
                let mut c = Command::new(env!("CARGO_BIN_EXE_griddav"));
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
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let (status, answered, headers) = read_head(&mut reader)?;
    drain_body(&mut reader, &headers, |_| Ok(()))?;
    Ok(PutTiming {
        status,
        first_byte,
        last_byte,
        answered,
    })
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
        m.first_share_ms = first
            .map(|t| t.saturating_duration_since(timing.first_byte).as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN);
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
                "  {:<24} {:>5} MiB: PUT {:7.1} MB/s close {:8.1} ms first-share {:7.1} ms RSS {:6.1} MiB CPU {:5.1} s | GET {:7.1} MB/s RSS {:6.1} MiB | range {:6.2} ms{}",
                peer.name(),
                size / MIB,
                m.put_mbs,
                m.close_ms,
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
        put_mbs,
        put_rss_mib,
        max_close_ms,
        get_mbs,
        get_rss_mib,
        errors,
    };
    eprintln!(
        "  {} x {} MiB into {}: PUT {:.1} MB/s (RSS {:.1} MiB, slowest close {:.1} ms), GET {:.1} MB/s (RSS {:.1} MiB), {} errors",
        c.clients,
        c.size / MIB,
        peer.name(),
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

    pub fn serve(dir: PathBuf, rate: f64) -> Result<(), Box<dyn std::error::Error>> {
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

// ------------------------------------------------------------------- report

struct Machine {
    cores: String,
    cpu: String,
    memory: String,
    disk: String,
    kernel: String,
    writeback: String,
    load_before: String,
    load_after: String,
    rclone: String,
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine(root: &Path) -> Machine {
    let root = root.display().to_string().replace('\'', "");
    Machine {
        cores: sh("nproc"),
        cpu: sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-"),
        memory: sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo"),
        disk: sh(&format!(
            "df -hT '{root}' | awk 'NR==2 {{print $1\", \"$2\", \"$3\" (\"$5\" free)\"}}'; \
             d=$(df --output=source '{root}' | tail -1 | sed 's|/dev/||'); \
             r=$(cat /sys/block/$d/queue/rotational 2>/dev/null); \
             [ -n \"$r\" ] && {{ [ \"$r\" = 0 ] && echo ', non-rotational (sysfs)' || echo ', rotational (sysfs)'; }}"
        ))
        .replace('\n', ""),
        kernel: sh("uname -sr"),
        writeback: sh("echo \"vm.dirty_ratio $(cat /proc/sys/vm/dirty_ratio)%, vm.dirty_background_ratio $(cat /proc/sys/vm/dirty_background_ratio)%\""),
        load_before: loadavg(),
        load_after: String::new(),
        rclone: sh("rclone version 2>/dev/null | head -1"),
    }
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.digits$}")
    }
}

fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

struct Target {
    what: String,
    wanted: String,
    measured: String,
    holds: Option<bool>,
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    settings: &Settings,
    machine: &Machine,
    results: &BTreeMap<(Peer, u64), Measure>,
    slow: Option<&SlowGrid>,
    conc: &[Concurrent],
    started: &str,
    took: Duration,
) -> io::Result<()> {
    let mut md = String::new();
    let k = 3.0;
    let n = 10.0;
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `bash bench/run.sh` (`cargo bench --bench http`, source `benches/http.rs`){} on {started}, in {:.0} s{}. \
         Do not edit by hand: run it again.\n",
        if settings.quick { " in quick mode" } else { "" },
        took.as_secs_f64(),
        if settings.repeat > 1 {
            format!("; each size and server is the median of {} fresh runs (`GRIDDAV_BENCH_REPEAT={}`)", settings.repeat, settings.repeat)
        } else {
            String::new()
        }
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| cores (`nproc`) | {} |", machine.cores);
    let _ = writeln!(md, "| CPU | {} |", machine.cpu);
    let _ = writeln!(md, "| memory | {} |", machine.memory);
    let _ = writeln!(md, "| disk (benchmark directory) | {} |", machine.disk);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| page-cache write-back | {} |", machine.writeback);
    let _ = writeln!(
        md,
        "| load average (1, 5, 15 min) | {} at the start, {} at the end |",
        machine.load_before, machine.load_after
    );
    let _ = writeln!(md, "| peers | griddav 3-of-10 on ten local directories (defaults); dav-server 0.11 LocalFs (`examples/baseline_localfs.rs`, griddav's hyper set-up); {} |\n", machine.rclone);

    let _ = writeln!(md, "## How it measures\n");
    let _ = writeln!(
        md,
        "Each cell is a fresh server process on an empty directory, on loopback. The client writes the request itself \
         on a raw TCP socket (`Content-Length`, body in 1 MiB `write`s of random bytes) and reads the answer itself:\n\n\
         - **PUT MB/s**: plaintext bytes / (first body byte written .. status line received).\n\
         - **close**: last body `write` returned .. status line received: what a client's `close()` waits for. \
         The last few MB may still sit in the socket buffers when the clock starts, so this includes the server \
         reading them.\n\
         - **first share**: first body byte written .. a file with at least one byte exists where the server stores \
         data (griddav: `grid/server-*/incoming/`; the peers: the served directory), polled every 0.2 ms from \
         another thread.\n\
         - **peak RSS**: the server's `VmHWM` from `/proc/PID/status`, reset through `/proc/PID/clear_refs` before \
         the PUT and again before the GET.\n\
         - **server CPU**: user + system seconds the server used during the PUT.\n\
         - **GET MB/s**: whole file, checked byte for byte by the client. **Range**: median of 20 `Range` GETs of \
         32 KiB in the middle of the file on one keep-alive connection (after one warm-up).\n\n\
         griddav makes its shares durable (`fdatasync` as it goes, and at finish); LocalFs and rclone leave the \
         file in the page cache. griddav writes {:.2}x the file's bytes (3-of-10 shares plus hash trees).\n",
        n / k
    );

    let sizes: Vec<u64> = settings.sizes.clone();
    let _ = writeln!(md, "## Results by file size\n");
    let _ = writeln!(
        md,
        "| server | size | PUT MB/s | close ms | first share ms | PUT peak RSS MiB | server CPU s | GET MB/s | GET peak RSS MiB | 32 KiB Range ms |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for peer in &settings.peers {
        for &size in &sizes {
            if let Some(m) = results.get(&(*peer, size)) {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |{}",
                    peer.name(),
                    size_name(size),
                    fmt(m.put_mbs, 0),
                    fmt(m.close_ms, 1),
                    fmt(m.first_share_ms, 1),
                    fmt(m.put_rss_mib, 0),
                    fmt(m.put_cpu_s, 1),
                    fmt(m.get_mbs, 0),
                    fmt(m.get_rss_mib, 0),
                    fmt(m.range_ms, 2),
                    m.error
                        .as_deref()
                        .map(|e| format!(" **error: {e}**"))
                        .unwrap_or_default()
                );
            }
        }
    }
    let errors: Vec<String> = results
        .iter()
        .filter_map(|((p, s), m)| {
            m.error
                .as_ref()
                .map(|e| format!("{} {}: {e}", p.name(), size_name(*s)))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(md, "\nErrors: {}", errors.join("; "));
    }

    let peers: Vec<Peer> = settings
        .peers
        .iter()
        .copied()
        .filter(|p| *p != Peer::Griddav)
        .collect();
    if settings.peers.contains(&Peer::Griddav) && !peers.is_empty() {
        let _ = writeln!(md, "\n## Ratios griddav / peer\n");
        let _ = writeln!(
            md,
            "Above 1 means griddav is faster (MB/s) or larger (time, memory).\n"
        );
        let _ = writeln!(
            md,
            "| peer | size | PUT MB/s | close | first share | PUT peak RSS | GET MB/s | Range |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
        for peer in &peers {
            for &size in &sizes {
                let (Some(g), Some(p)) = (
                    results.get(&(Peer::Griddav, size)),
                    results.get(&(*peer, size)),
                ) else {
                    continue;
                };
                let r = |a: f64, b: f64| fmt(a / b, 2);
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    peer.name(),
                    size_name(size),
                    r(g.put_mbs, p.put_mbs),
                    r(g.close_ms, p.close_ms),
                    r(g.first_share_ms, p.first_share_ms),
                    r(g.put_rss_mib, p.put_rss_mib),
                    r(g.get_mbs, p.get_mbs),
                    r(g.range_ms, p.range_ms)
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\n![close latency against file size](benchmarks-close-latency.svg)\n"
    );

    if let Some(s) = slow {
        let expanded = s.size as f64 * n / k;
        let spool_close = expanded / s.rate;
        let _ = writeln!(md, "## Slow grid\n");
        let _ = writeln!(
            md,
            "griddav with every storage server behind one shared link of {:.0} MB/s for share writes \
             (a rate-limiting `ShareStore` wrapper around the ten local directories, `griddav::grid::ThrottledStore`; \
             the server is otherwise built as `griddav serve` builds it, in a separate process), one PUT of {}. \
             A spool-then-upload server (Tahoe-LAFS's HTTP front end, a WebDAV gateway that stages to disk) \
             receives the body first and uploads on close, so its close waits for all {:.0} MB of shares \
             ({:.2}x the file) to cross the link: {:.1} s, and at least {:.1} s (size / bandwidth) even if it stored \
             only the plaintext.\n",
            s.rate / 1e6,
            size_name(s.size),
            expanded / 1e6,
            n / k,
            spool_close,
            s.size as f64 / s.rate
        );
        let _ = writeln!(
            md,
            "| | PUT total s | close | first share ms | peak RSS MiB |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| griddav, streaming (measured) | {} | {} ms | {} | {} |",
            fmt(s.put_secs, 1),
            fmt(s.close_ms, 1),
            fmt(s.first_share_ms, 1),
            fmt(s.rss_mib, 0)
        );
        let _ = writeln!(
            md,
            "| spool then upload (computed: share bytes / link) | >= {:.1} | {:.1} s | after the whole body | |",
            spool_close, spool_close
        );
        let _ = writeln!(
            md,
            "\nStreaming, the close waits only for what is still queued inside griddav when the last byte \
             arrives (the body bytes still in the socket buffers, the segments being coded and the blocks queued \
             per share: about {:.0} MB of shares at the defaults): that is {:.1} s at this link speed, whatever the file size; with spooling it is the \
             whole file.",
            s.close_ms / 1e3 * s.rate / 1e6,
            s.close_ms / 1e3
        );
        if let Some(e) = &s.error {
            let _ = writeln!(md, "\n**error: {e}**");
        }
        let _ = writeln!(md);
    }

    if !conc.is_empty() {
        let _ = writeln!(md, "## Concurrent uploads\n");
        let _ = writeln!(
            md,
            "{} clients each PUT {} at the same moment (one connection each), then GET them all back at once, checked byte for byte. \
             MB/s is all plaintext bytes / wall time of the phase.\n",
            conc[0].clients,
            size_name(conc[0].size)
        );
        let _ = writeln!(md, "| server | PUT MB/s | PUT peak RSS MiB | slowest close ms | GET MB/s | GET peak RSS MiB | errors |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
        for c in conc {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.peer.name(),
                fmt(c.put_mbs, 0),
                fmt(c.put_rss_mib, 0),
                fmt(c.max_close_ms, 1),
                fmt(c.get_mbs, 0),
                fmt(c.get_rss_mib, 0),
                c.errors.len()
            );
        }
        for c in conc {
            for e in c.errors.iter().take(5) {
                let _ = writeln!(md, "\n- {}: {e}", c.peer.name());
            }
        }
        let _ = writeln!(md);
    }

    // Targets (issue 6), for 2 cores, loopback, the local 3-of-10 grid.
    let mut targets = Vec::new();
    let g = |size: u64| results.get(&(Peer::Griddav, size));
    let gs: Vec<(u64, &Measure)> = sizes.iter().filter_map(|&s| g(s).map(|m| (s, m))).collect();
    if !gs.is_empty() {
        let worst = gs.iter().map(|(_, m)| m.close_ms).fold(f64::NAN, f64::max);
        let best = gs.iter().map(|(_, m)| m.close_ms).fold(f64::NAN, f64::min);
        targets.push(Target {
            what: "close latency at every size, flat".into(),
            wanted: "<= 100 ms".into(),
            measured: format!(
                "{} .. {} ms ({})",
                fmt(best, 1),
                fmt(worst, 1),
                gs.iter()
                    .map(|(s, m)| format!("{}: {}", size_name(*s), fmt(m.close_ms, 1)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            holds: Some(worst <= 100.0),
        });
        let big = gs
            .iter()
            .find(|(s, _)| *s == 1024 * MIB)
            .or_else(|| gs.last())
            .copied();
        if let Some((s, m)) = big {
            targets.push(Target {
                what: format!("PUT throughput at {}", size_name(s)),
                wanted: ">= 250 MB/s".into(),
                measured: format!("{} MB/s", fmt(m.put_mbs, 0)),
                holds: Some(m.put_mbs >= 250.0),
            });
            if let Some(l) = results.get(&(Peer::LocalFs, s)) {
                targets.push(Target {
                    what: format!("PUT throughput vs LocalFs at {}", size_name(s)),
                    wanted: ">= 0.5x".into(),
                    measured: format!(
                        "{}x ({} / {} MB/s)",
                        fmt(m.put_mbs / l.put_mbs, 2),
                        fmt(m.put_mbs, 0),
                        fmt(l.put_mbs, 0)
                    ),
                    holds: Some(m.put_mbs / l.put_mbs >= 0.5),
                });
            }
        }
        // GET: every size from 256 MiB up (16 MiB is over before it is up to speed).
        let gets: Vec<&(u64, &Measure)> = gs.iter().filter(|(s, _)| *s >= 256 * MIB).collect();
        let gets = if gets.is_empty() {
            gs.iter().collect()
        } else {
            gets
        };
        let slowest = gets.iter().min_by(|a, b| {
            a.1.get_mbs
                .partial_cmp(&b.1.get_mbs)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        if let Some((s, m)) = slowest {
            targets.push(Target {
                what: "GET throughput, 256 MiB and larger".into(),
                wanted: ">= 600 MB/s".into(),
                measured: format!(
                    "{} MB/s at the slowest ({}); {}",
                    fmt(m.get_mbs, 0),
                    size_name(*s),
                    gets.iter()
                        .map(|(s, m)| format!("{}: {}", size_name(*s), fmt(m.get_mbs, 0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                holds: Some(m.get_mbs >= 600.0),
            });
        }
        let worst_range = gs.iter().map(|(_, m)| m.range_ms).fold(f64::NAN, f64::max);
        targets.push(Target {
            what: "32 KiB Range GET, every size".into(),
            wanted: "<= 5 ms".into(),
            measured: format!("at most {} ms", fmt(worst_range, 2)),
            holds: Some(worst_range <= 5.0),
        });
        let (s, m) = *gs.last().expect("not empty");
        targets.push(Target {
            what: format!("server peak RSS during the {} PUT", size_name(s)),
            wanted: "<= 150 MiB (at 4 GiB)".into(),
            measured: format!("{} MiB", fmt(m.put_rss_mib, 0)),
            holds: Some(m.put_rss_mib <= 150.0),
        });
    }
    if let Some(c) = conc.iter().find(|c| c.peer == Peer::Griddav) {
        targets.push(Target {
            what: format!(
                "server peak RSS, {} concurrent PUTs of {}",
                c.clients,
                size_name(c.size)
            ),
            wanted: "<= 400 MiB, no errors".into(),
            measured: format!("{} MiB, {} errors", fmt(c.put_rss_mib, 0), c.errors.len()),
            holds: Some(c.put_rss_mib <= 400.0 && c.errors.is_empty()),
        });
    }
    if let Some(s) = slow {
        let spool = s.size as f64 * n / k / s.rate;
        targets.push(Target {
            what: format!(
                "slow grid ({:.0} MB/s), {} PUT: close small vs spool-then-upload",
                s.rate / 1e6,
                size_name(s.size)
            ),
            wanted: "small: < 1/10 of spool-then-upload's".into(),
            measured: format!("{} ms vs {:.1} s", fmt(s.close_ms, 1), spool),
            holds: Some(s.error.is_none() && s.close_ms / 1e3 < spool / 10.0),
        });
    }
    let _ = writeln!(md, "## Targets (issue 6)\n");
    if settings.quick || !sizes.contains(&(4096 * MIB)) {
        let _ = writeln!(md, "Quick run or reduced sizes: the targets are checked against the largest sizes measured, not the ones the issue names.\n");
    }
    let _ = writeln!(md, "| target | wanted | measured | holds |");
    let _ = writeln!(md, "|---|---|---|---|");
    for t in &targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.wanted,
            t.measured,
            match t.holds {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        );
    }
    let _ = writeln!(md);

    std::fs::create_dir_all(&settings.out)?;
    std::fs::write(settings.out.join("BENCHMARKS.md"), md)?;
    std::fs::write(
        settings.out.join("benchmarks-close-latency.svg"),
        svg(settings, results, slow),
    )?;
    Ok(())
}

/// Close latency against file size, both axes logarithmic.
fn svg(
    settings: &Settings,
    results: &BTreeMap<(Peer, u64), Measure>,
    slow: Option<&SlowGrid>,
) -> String {
    let (w, h) = (720.0, 440.0);
    let (left, right, top, bottom) = (80.0, 220.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let sizes = &settings.sizes;
    let xmin = (*sizes.iter().min().unwrap_or(&MIB) as f64).log2() - 0.5;
    let xmax = (*sizes.iter().max().unwrap_or(&MIB) as f64).log2() + 0.5;
    let mut values: Vec<f64> = results
        .values()
        .map(|m| m.close_ms)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let spool = slow.map(|s| s.size as f64 * 10.0 / 3.0 / s.rate * 1e3);
    if let Some(v) = spool {
        values.push(v);
    }
    if let Some(s) = slow {
        if s.close_ms.is_finite() && s.close_ms > 0.0 {
            values.push(s.close_ms);
        }
    }
    let ymin = values
        .iter()
        .cloned()
        .fold(100.0_f64, f64::min)
        .max(0.01)
        .log10()
        .floor();
    let ymax = values
        .iter()
        .cloned()
        .fold(100.0_f64, f64::max)
        .log10()
        .ceil();
    let x = |bytes: f64| left + (bytes.log2() - xmin) / (xmax - xmin) * pw;
    let y = |ms: f64| top + ph - (ms.max(10f64.powf(ymin)).log10() - ymin) / (ymax - ymin) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">PUT close latency (last body byte sent to status) against file size</text>"#,
        w / 2.0
    );
    // Grid lines and labels.
    let mut e = ymin as i32;
    while e <= ymax as i32 {
        let v = 10f64.powi(e);
        let yy = y(v);
        let label = if v >= 1000.0 {
            format!("{} s", v / 1000.0)
        } else {
            format!("{v} ms")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            left + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            left - 6.0,
            yy + 4.0
        );
        e += 1;
    }
    for &size in sizes {
        let xx = x(size as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            top + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + ph + 18.0,
            size_name(size)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">file size (log scale)</text>"#,
        left + pw / 2.0,
        h - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">close latency (log scale)</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    // 100 ms target.
    let t = y(100.0);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{t:.1}" x2="{:.1}" y2="{t:.1}" stroke="#888" stroke-dasharray="6 4"/>"##,
        left + pw
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" fill="#666">target 100 ms</text>"##,
        left + 4.0,
        t - 4.0
    );
    let mut legend = 0.0;
    let mut add_legend = |s: &mut String, color: &str, dash: &str, label: &str| {
        let ly = top + 10.0 + legend * 20.0;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            s,
            r#"<circle cx="{}" cy="{ly}" r="3.5" fill="{color}"/>"#,
            lx + 12.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{label}</text>"#,
            lx + 30.0,
            ly + 4.0
        );
        legend += 1.0;
    };
    for peer in &settings.peers {
        let points: Vec<(f64, f64)> = sizes
            .iter()
            .filter_map(|&size| {
                results
                    .get(&(*peer, size))
                    .filter(|m| m.close_ms.is_finite())
                    .map(|m| (x(size as f64), y(m.close_ms)))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            path.join(" "),
            peer.color()
        );
        for (a, b) in &points {
            let _ = writeln!(
                s,
                r#"<circle cx="{a:.1}" cy="{b:.1}" r="3.5" fill="{}"/>"#,
                peer.color()
            );
        }
        add_legend(&mut s, peer.color(), "", peer.name());
    }
    if let Some(sl) = slow {
        let xx = x(sl.size as f64);
        if sl.close_ms.is_finite() {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="#8e44ad"/>"##,
                xx - 4.0,
                y(sl.close_ms) - 4.0
            );
        }
        if let Some(sp) = spool {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="none" stroke="#8e44ad" stroke-width="2"/>"##,
                xx - 4.0,
                y(sp) - 4.0
            );
        }
        let ly = top + 10.0 + legend * 20.0;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="8" height="8" fill="#8e44ad"/><text x="{}" y="{}">griddav, grid at {:.0} MB/s</text>"##,
            lx + 8.0,
            ly - 4.0,
            lx + 30.0,
            ly + 4.0,
            sl.rate / 1e6
        );
        let ly = ly + 20.0;
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="8" height="8" fill="none" stroke="#8e44ad" stroke-width="2"/><text x="{}" y="{}">spool then upload,</text><text x="{}" y="{}">same grid (computed)</text>"##,
            lx + 8.0,
            ly - 4.0,
            lx + 30.0,
            ly + 4.0,
            lx + 30.0,
            ly + 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

// --------------------------------------------------------------------- main

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
    let slow = settings.has("slow").then(|| slow_grid(&settings, &pattern));
    let mut conc = Vec::new();
    if settings.has("concurrent") {
        for &peer in &settings.peers {
            if peer != Peer::Rclone || settings.peers.len() == 1 {
                conc.push(concurrent(&settings, peer, &pattern));
            }
        }
    }
    machine.load_after = loadavg();
    write_report(
        &settings,
        &machine,
        &results,
        slow.as_ref(),
        &conc,
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
