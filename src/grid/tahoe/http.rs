//! HTTPS to one Tahoe-LAFS storage server: TLS pinned to the SPKI hash of
//! its NURL, a keep-alive pool of HTTP/1.1 connections, timeouts, and one
//! retry on a fresh connection when a request fails in transport.
//!
//! Every request this backend sends is safe to repeat (reads, listings, and
//! read-test-writes whose test vector makes a repeat a no-op, see
//! `super`), so a request that failed in transport is retried once on a
//! fresh connection: that covers the common case of a keep-alive
//! connection the server closed while it sat idle. A request that timed
//! out is not retried: a server that does not answer in time (a stopped
//! process accepts TCP and never answers) would only make the caller wait
//! twice as long.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::nurl::{spki_hash, spki_of_certificate, Nurl};

/// Idle connections kept per server.
const MAX_IDLE: usize = 16;

/// The most read of an answer whose status is not a success: enough for a
/// message, and no more of what a misbehaving server might send.
pub(crate) const ERROR_BODY_LIMIT: usize = 1024;

/// The most read of a CBOR answer (read-test-write results, share sets,
/// the version document): a few KiB at most for 256 shares.
pub(crate) const CBOR_LIMIT: usize = 16 << 10;

/// Timeouts of one server's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// One request, from sending it to the last byte of the answer.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
        }
    }
}

/// A request that got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// The server's certificate carries another public key than the one
    /// its NURL pins.
    #[error("TLS: {0}")]
    PinMismatch(PinMismatch),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Build(#[from] http::Error),
    #[error("answer longer than the {limit} bytes expected")]
    TooLong { limit: usize },
}

impl TransportError {
    pub(crate) fn into_io(self) -> std::io::Error {
        use std::io::ErrorKind;
        match self {
            TransportError::Timeout(_) => std::io::Error::new(ErrorKind::TimedOut, self),
            TransportError::Connect(e) | TransportError::Tls(e) => e,
            TransportError::PinMismatch(_) => {
                std::io::Error::new(ErrorKind::PermissionDenied, self)
            }
            TransportError::Http(e) => std::io::Error::other(e),
            TransportError::Build(e) => std::io::Error::other(e),
            TransportError::TooLong { .. } => std::io::Error::new(ErrorKind::InvalidData, self),
        }
    }
}

/// The server's public key is not the one its NURL pins: the verifier's
/// error, recognised again when the handshake fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server's public key does not match the SPKI hash of its NURL")]
pub(crate) struct PinMismatch;

/// Why a client for a NURL cannot be built. No variant holds the swissnum.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("TLS configuration: {0}")]
    TlsConfig(#[source] rustls::Error),
    #[error("host {host:?}: {source}")]
    Host {
        host: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("swissnum is not a valid header value")]
    Swissnum(#[source] http::header::InvalidHeaderValue),
}

/// An HTTP answer. The body of a success is read in full, up to the
/// caller's limit; that of another status only up to
/// [`ERROR_BODY_LIMIT`] (`truncated` then says so).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    pub truncated: bool,
}

/// The connections to one server.
pub(crate) struct Client {
    authority: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    authorization: HeaderValue,
    timeouts: Timeouts,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Client {
    pub(crate) fn new(nurl: &Nurl, timeouts: Timeouts) -> Result<Client, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedSpki {
            spki_hash: nurl.spki_hash,
            provider: Arc::clone(&provider),
        });
        // TLS 1.3 only: its handshake signature is checked against the
        // pinned key itself (rustls's TLS 1.2 path needs a certificate that
        // webpki can parse, and Tahoe's are X.509 version 1).
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(ClientError::TlsConfig)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // The name is not checked (the pin is), but rustls needs one; an IP
        // address also keeps it from sending SNI.
        let server_name =
            ServerName::try_from(nurl.host.clone()).map_err(|source| ClientError::Host {
                host: nurl.host.clone(),
                source,
            })?;
        let authorization = HeaderValue::try_from(format!(
            "Tahoe-LAFS {}",
            STANDARD.encode(nurl.swissnum.as_bytes())
        ))
        .map_err(ClientError::Swissnum)?;
        Ok(Client {
            authority: nurl.authority(),
            host: nurl.host.clone(),
            port: nurl.port,
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
            authorization,
            timeouts,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one request and reads the answer, with a time limit; retried
    /// once on a fresh connection after a transport failure. A successful
    /// answer longer than `limit` bytes is the server's fault
    /// ([`TransportError::TooLong`]), found before more is read.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
        limit: usize,
    ) -> Result<Reply, TransportError> {
        let build = || {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(http::header::HOST, &self.authority)
                .header(http::header::AUTHORIZATION, self.authorization.clone());
            for (name, value) in headers {
                request = request.header(*name, value.clone());
            }
            if !body.is_empty() {
                request = request.header(http::header::CONTENT_TYPE, "application/cbor");
            }
            request.body(Full::new(body.clone()))
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = build()?;
            let fresh = attempt > 1;
            let result =
                tokio::time::timeout(self.timeouts.request, self.send(request, fresh, limit)).await;
            match result {
                Ok(Ok(reply)) => return Ok(reply),
                // Down (refused), hung (connect timed out) or our own
                // mistake: another try would not help.
                Ok(Err(
                    e @ (TransportError::Connect(_)
                    | TransportError::Timeout(_)
                    | TransportError::TooLong { .. }
                    | TransportError::PinMismatch(_)
                    | TransportError::Build(_)),
                )) => return Err(e),
                Ok(Err(e)) if attempt >= 2 => return Err(e),
                Ok(Err(e)) => {
                    tracing::debug!(server = %self.authority, error = %e, "retrying on a fresh connection");
                }
                Err(_) => return Err(TransportError::Timeout(self.timeouts.request)),
            }
        }
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        fresh: bool,
        limit: usize,
    ) -> Result<Reply, TransportError> {
        let mut sender = match (!fresh).then(|| self.take_idle()).flatten() {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let success = parts.status.is_success();
        let limit = if success {
            limit
        } else {
            limit.min(ERROR_BODY_LIMIT)
        };
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let (body, complete) = match read_bounded(body, limit, declared).await {
            Ok(read) => read,
            Err(BoundedError::TooLong) if success => {
                return Err(TransportError::TooLong { limit });
            }
            Err(BoundedError::TooLong) => (Bytes::new(), false),
            Err(BoundedError::Http(e)) => return Err(TransportError::Http(e)),
        };
        // Only a connection whose answer was read to the end can carry the
        // next request; one cut short is dropped (and closed).
        if complete && !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(sender);
            }
        }
        Ok(Reply {
            status: parts.status,
            body,
            truncated: !complete,
        })
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(TransportError::Connect)?;
            tcp.set_nodelay(true).map_err(TransportError::Connect)?;
            let tls = self
                .tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| {
                    if is_pin_mismatch(&e) {
                        TransportError::PinMismatch(PinMismatch)
                    } else {
                        TransportError::Tls(e)
                    }
                })?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(TransportError::Http)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "tahoe connection closed");
                }
            });
            Ok(sender)
        };
        match tokio::time::timeout(self.timeouts.connect, connect).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(self.timeouts.connect)),
        }
    }
}

enum BoundedError {
    TooLong,
    Http(hyper::Error),
}

/// Reads a body of at most `limit` bytes. A declared length (the server's
/// Content-Length, untrusted) is checked against the limit before anything
/// is allocated from it. Returns the bytes read and whether the body was
/// read to its end; an error body may stop short, a longer one is
/// `TooLong` as soon as a byte past the limit arrives.
async fn read_bounded<B>(
    mut body: B,
    limit: usize,
    declared: Option<u64>,
) -> Result<(Bytes, bool), BoundedError>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BoundedError::TooLong);
    }
    let capacity = declared.map_or(0, |len| len as usize).min(limit);
    let mut out = bytes::BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BoundedError::Http)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not used by Tahoe, ignored
        };
        if data.len() > limit - out.len() {
            return Err(BoundedError::TooLong);
        }
        out.extend_from_slice(&data);
    }
    Ok((out.freeze(), true))
}

/// Untrusted text from a server (an error body), fit for a log line or an
/// error message: at most `max` characters, control characters and
/// anything not printable escaped, so it cannot forge log lines or
/// terminal escapes.
pub(crate) fn escaped_excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max * 4)]);
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count >= max {
            out.push('…');
            break;
        }
        if c == ' ' || c.is_alphanumeric() || c.is_ascii_punctuation() {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// Whether a failed handshake is [`PinnedSpki`] refusing the key
/// (tokio-rustls hands the rustls error back inside the I/O error).
fn is_pin_mismatch(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)))
            if other.0.downcast_ref::<PinMismatch>().is_some()
    )
}

/// Accepts exactly the certificate whose SubjectPublicKeyInfo hashes to the
/// pin, whatever its issuer, name or validity dates (Tahoe's certificates
/// are self-signed, with no subject alternative name); the handshake
/// signature is still checked, so the server must hold the pinned key.
#[derive(Debug)]
struct PinnedSpki {
    spki_hash: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedSpki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = spki_hash(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if hash == self.spki_hash {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let spki = spki_of_certificate(cert.as_ref())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki),
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    /// The verifier's refusal is told apart from other TLS failures once
    /// tokio-rustls has wrapped it in an I/O error.
    #[test]
    fn a_pin_mismatch_is_recognised_through_the_io_error() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch)),
        ));
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        assert!(is_pin_mismatch(&wrapped));
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature),
        );
        assert!(!is_pin_mismatch(&other));
        assert!(!is_pin_mismatch(&std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        )));
    }
    use futures::stream;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    /// A hyper-compatible body from a stream of chunks.
    fn body_of(
        chunks: impl futures::Stream<Item = Bytes> + Send + Unpin + 'static,
    ) -> impl hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin {
        StreamBody::new(futures::StreamExt::map(chunks, |c| Ok(Frame::data(c))))
    }

    #[tokio::test]
    async fn an_endless_answer_stops_at_the_limit() {
        let endless = stream::repeat(Bytes::from_static(&[7u8; 4096]));
        let result = read_bounded(body_of(endless), 100_000, None).await;
        assert!(matches!(result, Err(BoundedError::TooLong)));
    }

    #[tokio::test]
    async fn a_declared_length_past_the_limit_is_refused_before_reading() {
        // Declares 1 TiB: nothing is allocated from it.
        let body = body_of(stream::iter(vec![Bytes::from_static(b"abc")]));
        let result = read_bounded(body, 10, Some(1 << 40)).await;
        assert!(matches!(result, Err(BoundedError::TooLong)));
        let body = body_of(stream::iter(vec![Bytes::from_static(b"abc")]));
        let (bytes, complete) = read_bounded(body, 3, Some(3)).await.ok().unwrap();
        assert_eq!((&bytes[..], complete), (&b"abc"[..], true));
    }

    #[test]
    fn server_text_is_escaped_and_short() {
        let hostile = b"bad\n\x1b[31mred\r\nFAKE LOG LINE \xff\xfe and more and more";
        let excerpt = escaped_excerpt(hostile, 20);
        assert!(!excerpt.chars().any(|c| c.is_control()), "{excerpt}");
        assert!(excerpt.chars().count() <= 40, "{excerpt}");
        assert!(excerpt.starts_with("bad\\n"), "{excerpt}");
    }
}
