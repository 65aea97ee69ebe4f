//! What users cost: authenticated vs anonymous request rates over HTTP.
//!
//!     cargo bench --bench auth
//!     GRIDDAV_BENCH_SECS=2 cargo bench --bench auth     # short
//!
//! Starts two `griddav serve` (this build's binary, or `GRIDDAV_BIN`) on
//! loopback: one without users, one with a `[[users]]` entry whose root is
//! `/home/alice` (so the path rewriting and href stripping are measured
//! too). One keep-alive client per server runs, for `GRIDDAV_BENCH_SECS`
//! seconds (default 5) each:
//!
//! - PROPFIND `Depth: 1` of a folder of 20 files;
//! - PUT of a 4 KiB file under a new name each time.
//!
//! The authenticated client sends `Authorization: Basic` on every request,
//! as Finder and Explorer do. Rounds alternate between the two servers
//! (three each) and the median of each is printed, with the ratio.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILE_SIZE: usize = 4096;
const ROUNDS: usize = 3;
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// `alice:alice-pw`.
const AUTHORIZATION: &str = "Basic YWxpY2U6YWxpY2UtcHc=";

fn main() {
    let secs = std::env::var("GRIDDAV_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    let run = Duration::from_secs_f64(secs);
    let bin = std::env::var_os("GRIDDAV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_griddav")));
    let dir = tempfile::Builder::new()
        .prefix("griddav-auth-bench-")
        .tempdir()
        .expect("create a temporary directory");
    let phc = griddav::auth::hash_password("alice-pw").expect("hash a password");
    let config = dir.path().join("users.toml");
    std::fs::write(
        &config,
        format!("[[users]]\nname = \"alice\"\npassword_hash = \"{phc}\"\nroot = \"/home/alice\"\n"),
    )
    .expect("write the config");
    let anonymous = Server::start(&bin, &dir.path().join("anon"), None);
    let users = Server::start(&bin, &dir.path().join("users"), Some(&config));
    let setups = [(&anonymous, None), (&users, Some(AUTHORIZATION))];
    for (server, auth) in setups {
        let mut conn = Conn::open(server.addr, auth).expect("connect");
        expect(
            conn.exchange("MKCOL", "/list/", &[]).expect("MKCOL"),
            201,
            "MKCOL",
        );
        for i in 0..20 {
            let path = format!("/list/f{i}");
            expect(conn.exchange("PUT", &path, b"x").expect("PUT"), 201, "PUT");
        }
    }
    println!("authenticated (Basic on every request, root /home/alice) vs anonymous, {secs} s per round, median of {ROUNDS}");
    println!();
    println!("| request | anonymous /s | authenticated /s | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, scenario) in [
        (
            "PROPFIND Depth 1, 20 entries",
            propfind as fn(&mut Conn, u64) -> io::Result<()>,
        ),
        ("PUT 4 KiB", put),
    ] {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (i, (server, auth)) in setups.iter().enumerate() {
                let mut conn = Conn::open(server.addr, *auth).expect("connect");
                rates[i].push(rate(&mut conn, scenario, run).expect(name));
            }
        }
        let [anon, auth] = rates.map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        });
        println!("| {name} | {anon:.0} | {auth:.0} | {:.2} |", auth / anon);
    }
}

fn rate(
    conn: &mut Conn,
    scenario: fn(&mut Conn, u64) -> io::Result<()>,
    run: Duration,
) -> io::Result<f64> {
    let began = Instant::now();
    let mut i = 0u64;
    while began.elapsed() < run {
        scenario(conn, i)?;
        i += 1;
    }
    Ok(i as f64 / began.elapsed().as_secs_f64())
}

fn propfind(conn: &mut Conn, _: u64) -> io::Result<()> {
    let (status, body) = conn.exchange("PROPFIND", "/list/", &[])?;
    if status != 207 || !body.windows(9).any(|w| w == b"/list/f19") {
        return Err(io::Error::other(format!("PROPFIND: {status}")));
    }
    Ok(())
}

fn put(conn: &mut Conn, i: u64) -> io::Result<()> {
    let body = vec![(i % 251) as u8; FILE_SIZE];
    let nonce = conn.nonce;
    let (status, _) = conn.exchange("PUT", &format!("/p{nonce}-{i}.bin"), &body)?;
    if status != 201 {
        return Err(io::Error::other(format!("PUT: {status}")));
    }
    Ok(())
}

fn expect(got: (u16, Vec<u8>), status: u16, what: &str) {
    assert_eq!(got.0, status, "{what}");
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, data: &Path, config: Option<&Path>) -> Server {
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
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

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
    auth: Option<&'static str>,
    nonce: u64,
}

impl Conn {
    fn open(addr: SocketAddr, auth: Option<&'static str>) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Conn {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            addr,
            auth,
            nonce,
        })
    }

    /// One request in one `write`, then its whole answer.
    fn exchange(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let auth = self
            .auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let depth = if method == "PROPFIND" {
            "Depth: 1\r\n"
        } else {
            ""
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}{depth}Content-Length: {}\r\n\r\n",
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
