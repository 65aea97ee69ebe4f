//! A keep-alive HTTP/1.1 client connection for the small-request scenarios
//! (small files, big folders): each request leaves in one `write` with
//! TCP_NODELAY, the answer is read whole.

use super::*;

pub(super) struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

/// One answer: status, headers (names lowercased), body, and when its
/// first byte arrived.
pub(super) struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub first_byte: Instant,
}

/// How a request body is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyMode {
    /// `Content-Length` (Windows, rclone).
    Length,
    /// `Transfer-Encoding: chunked` with `X-Expected-Entity-Length`, one
    /// chunk: what macOS Finder sends.
    Chunked,
}

impl Conn {
    pub(super) fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = connect(addr)?;
        stream.set_write_timeout(Some(Duration::from_secs(600)))?;
        Ok(Conn {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(256 << 10, stream),
            addr,
        })
    }

    /// Sends one request and reads its whole answer. `headers` are extra
    /// header lines, each ending in `\r\n`.
    pub(super) fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
        send: BodyMode,
    ) -> io::Result<Answer> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}",
            self.addr
        );
        match send {
            BodyMode::Length => {
                let _ = write!(req, "Content-Length: {}\r\n\r\n", body.len());
            }
            BodyMode::Chunked => {
                let _ = write!(
                    req,
                    "Transfer-Encoding: chunked\r\nX-Expected-Entity-Length: {}\r\n\r\n",
                    body.len()
                );
            }
        }
        let mut req = req.into_bytes();
        match send {
            BodyMode::Length => req.extend_from_slice(body),
            BodyMode::Chunked => {
                if !body.is_empty() {
                    req.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    req.extend_from_slice(body);
                    req.extend_from_slice(b"\r\n");
                }
                req.extend_from_slice(b"0\r\n\r\n");
            }
        }
        self.writer.write_all(&req)?;
        let (status, first_byte, headers) = read_head(&mut self.reader)?;
        let mut body = Vec::new();
        if method != "HEAD" && status != 204 && status != 304 {
            drain_body(&mut self.reader, &headers, |piece| {
                body.extend_from_slice(piece);
                Ok(())
            })?;
        }
        if headers
            .get("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
        {
            // The server ends the connection after this answer (dav-server's
            // LocalFs does after its 501 to a PROPPATCH): the next request
            // goes on a new one, as Finder's and Explorer's would.
            *self = Conn::open(self.addr)?;
        }
        Ok(Answer {
            status,
            headers,
            body,
            first_byte,
        })
    }
}

/// An error unless `answer`'s status is a success.
pub(super) fn ok(answer: &Answer, method: &str, path: &str) -> io::Result<()> {
    if (200..300).contains(&answer.status) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{method} {path} answered {}",
            answer.status
        )))
    }
}
