//! A small HTTP/1.1 client over `std::net::TcpStream`, made to misbehave on
//! demand: bodies streamed in pieces with a throttle, Content-Length or
//! chunked framing (with any declared length), stopping part-way, shutting
//! down the write half, or dropping the connection mid-body.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a socket read or write may block before the exchange fails.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a request body comes from.
pub enum BodySource {
    Empty,
    Bytes(Vec<u8>),
    /// Generated piece by piece; each piece is one write (one chunk when chunked).
    Pieces(Box<dyn Iterator<Item = Vec<u8>> + Send>),
}

/// How the body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` of the byte body; none for an empty body.
    Auto,
    /// `Content-Length: n`, whatever the body really holds.
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`, one chunk per piece.
    Chunked,
}

/// What the client does once it has sent the body (or the part of it it sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Finish the message (the chunked terminator if chunked), read the answer.
    Complete,
    /// Shut down the write half without finishing the message, then read the answer.
    ShutdownWrite,
    /// Drop the connection without reading anything.
    Drop,
}

/// Receives an answer's body instead of `Response::body`.
pub type Sink<'a> = &'a mut dyn FnMut(&[u8]);

/// Called once the (possibly partial) body has been written, before the ending.
pub type Hook = Box<dyn FnOnce() + Send>;

/// A request, built with the methods below.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: BodySource,
    pub framing: Framing,
    /// Bytes per second.
    pub throttle: Option<u64>,
    /// Send only this many body bytes.
    pub stop_after: Option<u64>,
    pub ending: Ending,
    /// Body bytes sent so far, updated after every write.
    pub progress: Option<Arc<AtomicU64>>,
    pub before_ending: Option<Hook>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: BodySource::Empty,
            framing: Framing::Auto,
            throttle: None,
            stop_after: None,
            ending: Ending::Complete,
            progress: None,
            before_ending: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Request {
        self.body = BodySource::Bytes(bytes.into());
        self
    }

    pub fn pieces(mut self, pieces: impl Iterator<Item = Vec<u8>> + Send + 'static) -> Request {
        self.body = BodySource::Pieces(Box::new(pieces));
        self
    }

    pub fn content_length(mut self, declared: u64) -> Request {
        self.framing = Framing::ContentLength(declared);
        self
    }

    pub fn chunked(mut self) -> Request {
        self.framing = Framing::Chunked;
        self
    }

    pub fn throttle(mut self, bytes_per_second: u64) -> Request {
        self.throttle = Some(bytes_per_second);
        self
    }

    pub fn stop_after(mut self, body_bytes: u64) -> Request {
        self.stop_after = Some(body_bytes);
        self
    }

    pub fn ending(mut self, ending: Ending) -> Request {
        self.ending = ending;
        self
    }

    pub fn progress(mut self, counter: Arc<AtomicU64>) -> Request {
        self.progress = Some(counter);
        self
    }

    pub fn before_ending(mut self, hook: impl FnOnce() + Send + 'static) -> Request {
        self.before_ending = Some(Box::new(hook));
        self
    }
}

/// A response; `body` is empty when the body went to a sink.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What happened during one exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Body bytes written.
    pub sent: u64,
    /// The first write that failed (the server may answer early and close).
    pub write_error: Option<io::Error>,
    /// The answer; `None` with `Ending::Drop`.
    pub response: Option<io::Result<Response>>,
}

/// A client for one server address; every request uses a new connection.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr }
    }

    /// Sends a request and returns its answer with the body; panics on I/O errors.
    pub fn send(&self, request: Request) -> Response {
        let what = format!("{} {}", request.method, request.path);
        let exchange = self.exchange(request, None);
        if let Some(e) = &exchange.write_error {
            panic!(
                "{what}: sending failed after {} body bytes: {e}",
                exchange.sent
            );
        }
        exchange
            .response
            .expect("a complete request reads its answer")
            .unwrap_or_else(|e| panic!("{what}: reading the answer failed: {e}"))
    }

    /// Sends a request; the answer's body goes to `sink` (if given) instead of `body`.
    pub fn exchange(&self, mut request: Request, sink: Option<Sink<'_>>) -> Exchange {
        let mut stream = match TcpStream::connect(self.addr) {
            Ok(stream) => stream,
            Err(e) => {
                return Exchange {
                    sent: 0,
                    write_error: Some(e),
                    response: None,
                }
            }
        };
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set write timeout");

        let mut sent = 0u64;
        let write_error = send_request(&mut stream, &mut request, &mut sent).err();
        if let Some(hook) = request.before_ending.take() {
            hook();
        }
        let response = match request.ending {
            Ending::Drop => {
                // Ignore errors: the point is to vanish.
                let _ = stream.shutdown(Shutdown::Both);
                drop(stream);
                None
            }
            Ending::ShutdownWrite | Ending::Complete => {
                if request.ending == Ending::ShutdownWrite {
                    let _ = stream.shutdown(Shutdown::Write);
                }
                Some(read_response(
                    &mut BufReader::with_capacity(256 << 10, stream),
                    request.method == "HEAD",
                    sink,
                ))
            }
        };
        Exchange {
            sent,
            write_error,
            response,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.send(Request::new("GET", path))
    }

    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) -> Response {
        self.send(Request::new("PUT", path).body(body))
    }

    pub fn delete(&self, path: &str) -> Response {
        self.send(Request::new("DELETE", path))
    }

    pub fn mkcol(&self, path: &str) -> Response {
        self.send(Request::new("MKCOL", path))
    }

    /// GET streamed into SHA-256: the answer (without body), body length, hex digest.
    pub fn get_sha256(&self, path: &str) -> (Response, u64, String) {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut sink = |bytes: &[u8]| {
            len += bytes.len() as u64;
            hasher.update(bytes);
        };
        let exchange = self.exchange(Request::new("GET", path), Some(&mut sink));
        if let Some(e) = &exchange.write_error {
            panic!("GET {path}: sending failed: {e}");
        }
        let response = exchange
            .response
            .expect("a complete request reads its answer")
            .unwrap_or_else(|e| panic!("GET {path}: reading the answer failed: {e}"));
        (response, len, hex::encode(hasher.finalize()))
    }
}

fn send_request(stream: &mut TcpStream, request: &mut Request, sent: &mut u64) -> io::Result<()> {
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    let has = |name: &str| {
        request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if !has("Host") {
        head.push_str(&format!("Host: {}\r\n", stream.peer_addr()?));
    }
    if !has("Connection") {
        head.push_str("Connection: close\r\n");
    }
    match (request.framing, &request.body) {
        (Framing::Auto, BodySource::Empty) => {}
        (Framing::Auto, BodySource::Bytes(bytes)) => {
            head.push_str(&format!("Content-Length: {}\r\n", bytes.len()));
        }
        (Framing::Auto, BodySource::Pieces(_)) => {
            panic!("a body in pieces needs content_length() or chunked()")
        }
        (Framing::ContentLength(n), _) => head.push_str(&format!("Content-Length: {n}\r\n")),
        (Framing::Chunked, _) => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;

    let body = std::mem::replace(&mut request.body, BodySource::Empty);
    let mut pieces: Box<dyn Iterator<Item = Vec<u8>> + Send> = match body {
        BodySource::Empty => Box::new(std::iter::empty()),
        BodySource::Bytes(bytes) => Box::new(std::iter::once(bytes).filter(|b| !b.is_empty())),
        BodySource::Pieces(pieces) => pieces,
    };
    let chunked = request.framing == Framing::Chunked;
    let started = Instant::now();
    let mut stopped = false;
    for mut piece in pieces.by_ref() {
        if let Some(limit) = request.stop_after {
            let room = limit.saturating_sub(*sent);
            if (piece.len() as u64) >= room {
                piece.truncate(room as usize);
                stopped = true;
            }
        }
        if !piece.is_empty() {
            if chunked {
                let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                chunk.extend_from_slice(&piece);
                chunk.extend_from_slice(b"\r\n");
                stream.write_all(&chunk)?;
            } else {
                stream.write_all(&piece)?;
            }
            *sent += piece.len() as u64;
            if let Some(progress) = &request.progress {
                progress.store(*sent, Ordering::SeqCst);
            }
        }
        if stopped {
            break;
        }
        if let Some(rate) = request.throttle {
            let due = Duration::from_secs_f64(*sent as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    if chunked && !stopped && request.ending == Ending::Complete {
        stream.write_all(b"0\r\n\r\n")?;
    }
    stream.flush()
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete answer",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads one answer (skipping 1xx interim answers).
pub fn read_response(
    reader: &mut impl BufRead,
    head_only: bool,
    mut sink: Option<Sink<'_>>,
) -> io::Result<Response> {
    let (status, reason, headers) = loop {
        let status_line = read_line(reader)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let line = read_line(reader)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        break (status, reason, headers);
    };
    let mut response = Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    let mut deliver = |bytes: &[u8], body: &mut Vec<u8>| match sink.as_mut() {
        Some(sink) => sink(bytes),
        None => body.extend_from_slice(bytes),
    };
    let mut body = Vec::new();
    let no_body = head_only || status == 204 || status == 304;
    let chunked = response
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut buf = vec![0u8; 256 << 10];
    if no_body {
    } else if chunked {
        loop {
            let line = read_line(reader)?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let mut size = u64::from_str_radix(size_text, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            while size > 0 {
                let want = (size as usize).min(buf.len());
                reader.read_exact(&mut buf[..want])?;
                deliver(&buf[..want], &mut body);
                size -= want as u64;
            }
            if !read_line(reader)?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    } else if let Some(length) = response.header("Content-Length") {
        let mut left: u64 = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let n = reader.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended {left} bytes short of its Content-Length"),
                ));
            }
            deliver(&buf[..n], &mut body);
            left -= n as u64;
        }
    } else {
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            deliver(&buf[..n], &mut body);
        }
    }
    response.body = body;
    Ok(response)
}
