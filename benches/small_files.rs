//! Small files over HTTP: what a durable namespace commit costs.
//!
//!     cargo bench --bench small_files
//!     GRIDDAV_BENCH_SECS=3 cargo bench --bench small_files     # CI: short
//!
//! Starts `griddav serve` (this build's binary, or `GRIDDAV_BIN`) on a
//! fresh data directory on disk (under `GRIDDAV_BENCH_DIR`, default
//! `target/`: not a tmpfs, so syncs cost what they cost) and runs, on
//! loopback, with keep-alive connections:
//!
//! - **one client**: PUT, GET (checked) and DELETE of a 4 KiB file, again
//!   and again, for `GRIDDAV_BENCH_SECS` seconds (default 10);
//! - **8 clients** at once, each the same loop on its own names.
//!
//! Every PUT and DELETE is a namespace commit (4 KiB files live inline in
//! the namespace row), so the loop measures the commit path, sync included.
//! No PROPFIND: a keep-alive PROPFIND can wait 40 ms for a delayed ACK
//! (Nagle on the server's side, fixed separately), which would hide what is
//! measured here. The client writes each request in one `write` with
//! TCP_NODELAY.
//!
//! Prints one table row per scenario: loops per second, namespace commits
//! per second (PUT and DELETE: two per loop), and the median and
//! 99th percentile of PUT and DELETE answer times.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const FILE_SIZE: usize = 4096;
const CLIENTS: usize = 8;
const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let secs = std::env::var("GRIDDAV_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(10.0);
    let bin = std::env::var_os("GRIDDAV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_griddav")));
    let base = std::env::var_os("GRIDDAV_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).expect("create the benchmark directory");
    let run = Duration::from_secs_f64(secs);
    println!("small files ({FILE_SIZE} B, PUT + GET + DELETE per loop), {secs} s per scenario");
    println!("binary: {}", bin.display());
    println!();
    println!("| clients | loops/s | commits/s | PUT median ms | PUT p99 ms | DELETE median ms | DELETE p99 ms | GET median ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for clients in [1, CLIENTS] {
        let dir = tempfile::Builder::new()
            .prefix("griddav-small-files-")
            .tempdir_in(&base)
            .expect("create a data directory");
        let server = Server::start(&bin, dir.path().join("data"));
        let result = scenario(server.addr, clients, run);
        drop(server);
        match result {
            Ok(r) => println!(
                "| {clients} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.loops as f64 / r.secs,
                2.0 * r.loops as f64 / r.secs,
                pct(&r.put, 50.0),
                pct(&r.put, 99.0),
                pct(&r.delete, 50.0),
                pct(&r.delete, 99.0),
                pct(&r.get, 50.0),
            ),
            Err(e) => {
                eprintln!("small files, {clients} client(s): {e}");
                std::process::exit(1);
            }
        }
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &PathBuf, data: PathBuf) -> Server {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start griddav serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("griddav exited before listening")
                .expect("read griddav's stdout");
            if let Some(url) = line.strip_prefix("griddav listening on ") {
                let hostport = url
                    .trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                break hostport.parse().expect("listening address");
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // By PID: only the process this benchmark started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Results {
    loops: u64,
    secs: f64,
    put: Vec<f64>,
    get: Vec<f64>,
    delete: Vec<f64>,
}

fn scenario(addr: SocketAddr, clients: usize, run: Duration) -> io::Result<Results> {
    let start = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || client(addr, c, &start, run))
        })
        .collect();
    let mut all = Results::default();
    for t in threads {
        let r = t
            .join()
            .map_err(|_| io::Error::other("a client thread panicked"))??;
        all.loops += r.loops;
        all.secs = all.secs.max(r.secs);
        all.put.extend(r.put);
        all.get.extend(r.get);
        all.delete.extend(r.delete);
    }
    Ok(all)
}

fn client(addr: SocketAddr, c: usize, start: &Barrier, run: Duration) -> io::Result<Results> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut conn = Conn {
        writer: stream.try_clone()?,
        reader: BufReader::new(stream),
        addr,
    };
    let mut r = Results::default();
    start.wait();
    let began = Instant::now();
    let mut i = 0u64;
    while began.elapsed() < run {
        let path = format!("/c{c}-{i}.bin");
        let body: Vec<u8> = (0..FILE_SIZE)
            .map(|j| (j as u64).wrapping_mul(31).wrapping_add(i) as u8)
            .collect();
        let t = Instant::now();
        let (status, _) = conn.exchange("PUT", &path, &body)?;
        r.put.push(ms(t));
        expect(status, &[201, 204], "PUT", &path)?;
        let t = Instant::now();
        let (status, got) = conn.exchange("GET", &path, &[])?;
        r.get.push(ms(t));
        expect(status, &[200], "GET", &path)?;
        if got != body {
            return Err(io::Error::other(format!("GET {path}: wrong bytes")));
        }
        let t = Instant::now();
        let (status, _) = conn.exchange("DELETE", &path, &[])?;
        r.delete.push(ms(t));
        expect(status, &[204, 200], "DELETE", &path)?;
        i += 1;
    }
    r.loops = i;
    r.secs = began.elapsed().as_secs_f64();
    Ok(r)
}

fn expect(status: u16, ok: &[u16], method: &str, path: &str) -> io::Result<()> {
    if ok.contains(&status) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{method} {path}: status {status}"
        )))
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn pct(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[at.min(v.len() - 1)]
}

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Conn {
    /// One request in one `write`, then its whole answer.
    fn exchange(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.writer.write_all(&req)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "answer cut"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "content-length" {
                    length = value.parse::<usize>().ok();
                } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok((status, body))
    }
}
