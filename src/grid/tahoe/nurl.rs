//! NURLs, the names of Tahoe-LAFS storage servers, and the SPKI pin in them.
//!
//! A NURL is `pb://<spki-hash>@<host>:<port>/<swissnum>#v=1`: the hash is
//! unpadded urlsafe base64 of SHA-256 over the DER SubjectPublicKeyInfo of
//! the server's TLS certificate, the swissnum the bearer secret that every
//! request carries.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// Why a text is not a NURL: which part is wrong, never quoting the
/// swissnum (the port and version fragment come before it and are public).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NurlError {
    #[error("a NURL starts with pb://")]
    NotPb,
    #[error("a NURL ends with #v=1 (no version fragment)")]
    NoVersion,
    #[error("unsupported NURL version fragment #{fragment}: only #v=1 is known")]
    UnsupportedVersion { fragment: String },
    #[error("no '@' after the SPKI hash")]
    NoAt,
    #[error("SPKI hash is not unpadded urlsafe base64: {0}")]
    HashNotBase64(#[source] base64::DecodeError),
    #[error("SPKI hash is not 32 bytes")]
    HashNot32Bytes,
    #[error("no /<swissnum> after host:port")]
    NoSwissnum,
    #[error("the swissnum must be one non-empty path element")]
    BadSwissnum,
    #[error("no :port after the host")]
    NoPort,
    #[error("unclosed '[' in the host")]
    UnclosedBracket,
    #[error("the host must be one non-empty host name or address")]
    BadHost,
    #[error("port {port:?} is not a number 0..65535")]
    BadPort { port: String },
}

/// Why a certificate gives no SubjectPublicKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("truncated DER")]
    Truncated,
    #[error("unsupported DER length")]
    UnsupportedLength,
    #[error("certificate is not one DER SEQUENCE")]
    NotOneSequence,
    #[error("TBSCertificate is not a SEQUENCE")]
    TbsNotSequence,
    #[error("subjectPublicKeyInfo is not a SEQUENCE")]
    SpkiNotSequence,
}

/// A parsed NURL of protocol version 1.
#[derive(Clone, PartialEq, Eq)]
pub struct Nurl {
    /// SHA-256 of the server certificate's DER SubjectPublicKeyInfo.
    pub spki_hash: [u8; 32],
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port of the storage server's HTTPS API.
    pub port: u16,
    /// The bearer secret every request carries; never logged.
    pub swissnum: String,
}

// By hand: the swissnum is a bearer secret and must not reach logs.
impl fmt::Debug for Nurl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nurl")
            .field("spki_hash", &URL_SAFE_NO_PAD.encode(self.spki_hash))
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Nurl {
    /// Parses `pb://<spki-hash>@<host>:<port>/<swissnum>#v=1`; the error says
    /// which part is wrong (never quoting the swissnum).
    pub fn parse(text: &str) -> Result<Nurl, NurlError> {
        let rest = text.strip_prefix("pb://").ok_or(NurlError::NotPb)?;
        let (rest, version) = rest.split_once('#').ok_or(NurlError::NoVersion)?;
        if version != "v=1" {
            return Err(NurlError::UnsupportedVersion {
                fragment: version.to_owned(),
            });
        }
        let (hash, rest) = rest.split_once('@').ok_or(NurlError::NoAt)?;
        let decoded = URL_SAFE_NO_PAD
            .decode(hash)
            .map_err(NurlError::HashNotBase64)?;
        let spki_hash: [u8; 32] = decoded.try_into().map_err(|_| NurlError::HashNot32Bytes)?;
        let (location, swissnum) = rest.split_once('/').ok_or(NurlError::NoSwissnum)?;
        if swissnum.is_empty() || swissnum.contains(['/', '?']) {
            return Err(NurlError::BadSwissnum);
        }
        let (host, port) = location.rsplit_once(':').ok_or(NurlError::NoPort)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or(NurlError::UnclosedBracket)?,
            None => host,
        };
        if host.is_empty() || host.contains(',') {
            return Err(NurlError::BadHost);
        }
        let port: u16 = port.parse().map_err(|_| NurlError::BadPort {
            port: port.to_owned(),
        })?;
        Ok(Nurl {
            spki_hash,
            host: host.to_owned(),
            port,
            swissnum: swissnum.to_owned(),
        })
    }

    /// `host:port`, with brackets round an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The SPKI hash as it is written in the NURL: a stable, public name
    /// of the server.
    pub fn spki_hash_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.spki_hash)
    }
}

impl fmt::Display for Nurl {
    /// The NURL in full, swissnum included: print it only where the user
    /// asked for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pb://{}@{}/{}#v=1",
            self.spki_hash_text(),
            self.authority(),
            self.swissnum
        )
    }
}

/// SHA-256 of the DER SubjectPublicKeyInfo of a DER certificate.
pub fn spki_hash(cert: &CertificateDer<'_>) -> Result<[u8; 32], CertError> {
    let spki = spki_of_certificate(cert.as_ref())?;
    Ok(Sha256::digest(spki).into())
}

/// The SubjectPublicKeyInfo (tag and length included) of a DER X.509
/// certificate, of any version.
///
/// By hand rather than with webpki, which rejects the version 1
/// certificates that Tahoe-LAFS (Foolscap) generates, and rather than with
/// a full ASN.1 stack for one field: it walks the fixed fields of
/// `TBSCertificate` (RFC 5280 4.1), checking every length, and the SPKI is
/// the seventh element (the sixth when the optional version is absent).
pub(super) fn spki_of_certificate(der: &[u8]) -> Result<&[u8], CertError> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0; // [0] EXPLICIT
    let (tag, certificate, rest) = der_element(der)?;
    if tag != SEQUENCE || !rest.is_empty() {
        return Err(CertError::NotOneSequence);
    }
    let (tag, mut tbs, _) = der_element(contents(certificate)?)?;
    if tag != SEQUENCE {
        return Err(CertError::TbsNotSequence);
    }
    tbs = contents(tbs)?;
    let (tag, _, after) = der_element(tbs)?;
    if tag == VERSION {
        tbs = after;
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        tbs = der_element(tbs)?.2;
    }
    let (tag, spki, _) = der_element(tbs)?;
    if tag != SEQUENCE {
        return Err(CertError::SpkiNotSequence);
    }
    Ok(spki)
}

/// Splits one DER element off `input`: its tag, the whole element (tag and
/// length included) and what follows. Every split is checked: no input
/// panics it.
fn der_element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertError> {
    let (header, len) = der_header(input)?;
    let end = header
        .checked_add(len)
        .ok_or(CertError::UnsupportedLength)?;
    let (element, rest) = input.split_at_checked(end).ok_or(CertError::Truncated)?;
    let tag = *element.first().ok_or(CertError::Truncated)?;
    Ok((tag, element, rest))
}

/// The length of an element's tag and length octets, and of its contents.
/// Lengths of more than four octets are refused: no certificate needs them.
fn der_header(input: &[u8]) -> Result<(usize, usize), CertError> {
    let [_tag, first, rest @ ..] = input else {
        return Err(CertError::Truncated);
    };
    if *first < 0x80 {
        return Ok((2, usize::from(*first)));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return Err(CertError::UnsupportedLength);
    }
    let (bytes, _) = rest.split_at_checked(count).ok_or(CertError::Truncated)?;
    let len = bytes
        .iter()
        .try_fold(0usize, |acc, b| {
            acc.checked_mul(256)?.checked_add(usize::from(*b))
        })
        .ok_or(CertError::UnsupportedLength)?;
    Ok((2 + count, len))
}

/// The contents of one DER element (without tag and length).
fn contents(element: &[u8]) -> Result<&[u8], CertError> {
    let (header, _) = der_header(element)?;
    element
        .split_at_checked(header)
        .map(|(_, contents)| contents)
        .ok_or(CertError::Truncated)
}

/// Why a node directory gives no NURL.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum NodeDirError {
    /// A file of the node directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the node directory does not hold what Tahoe writes there.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// Tahoe writes the certificate and the storage FURL at the node's
    /// first start, not at `tahoe create-node`.
    #[error(
        "{} has no {missing} yet: start the node once (`tahoe run {}`) so that it \
         creates its certificate and storage FURL, then ask again",
        dir.display(),
        dir.display()
    )]
    NeverStarted { dir: PathBuf, missing: &'static str },
}

/// The NURLs of the storage server of a Tahoe-LAFS node directory, one per
/// TCP location hint of its storage FURL. Tahoe writes them nowhere: the
/// SPKI hash comes from the certificate in `private/node.pem`, the swissnum
/// and locations from `private/storage.furl`.
pub fn nurls_of_node_dir(dir: &Path) -> Result<Vec<Nurl>, NodeDirError> {
    let read = |name: &'static str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound && dir.join("tahoe.cfg").is_file() {
                NodeDirError::NeverStarted {
                    dir: dir.to_owned(),
                    missing: name,
                }
            } else {
                NodeDirError::Read { path, source }
            }
        })
    };
    let pem_path = dir.join("private/node.pem");
    let pem = read("private/node.pem")?;
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| NodeDirError::Invalid {
            path: pem_path.clone(),
            reason: "no CERTIFICATE block".into(),
        })?
        .map_err(|e| NodeDirError::Invalid {
            path: pem_path.clone(),
            reason: format!("bad PEM: {e}"),
        })?;
    let spki_hash = spki_hash(&cert).map_err(|e| NodeDirError::Invalid {
        path: pem_path,
        reason: e.to_string(),
    })?;

    let furl_path = dir.join("private/storage.furl");
    let invalid = |reason: &str| NodeDirError::Invalid {
        path: furl_path.clone(),
        reason: reason.to_owned(),
    };
    let furl =
        String::from_utf8(read("private/storage.furl")?).map_err(|_| invalid("not UTF-8"))?;
    let furl = furl.trim();
    let rest = furl
        .strip_prefix("pb://")
        .ok_or_else(|| invalid("does not start with pb://"))?;
    let (_tub_id, rest) = rest
        .split_once('@')
        .ok_or_else(|| invalid("no '@' in the FURL"))?;
    let (hints, swissnum) = rest
        .split_once('/')
        .ok_or_else(|| invalid("no /<swissnum> in the FURL"))?;
    let swissnum = swissnum.split(['#', '?']).next().unwrap_or_default();
    if swissnum.is_empty() {
        return Err(invalid("empty swissnum"));
    }
    let mut nurls = Vec::new();
    for hint in hints.split(',') {
        // `tcp:HOST:PORT` or the older `HOST:PORT`; skip tor:, i2p: and others.
        let hint = hint.strip_prefix("tcp:").unwrap_or(hint);
        if hint.contains(':') && hint.split(':').count() == 2 {
            let text = format!(
                "pb://{}@{}/{}#v=1",
                URL_SAFE_NO_PAD.encode(spki_hash),
                hint,
                swissnum
            );
            if let Ok(nurl) = Nurl::parse(&text) {
                nurls.push(nurl);
            }
        }
    }
    if nurls.is_empty() {
        return Err(invalid("no tcp location hint in the FURL"));
    }
    Ok(nurls)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    const HASH: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn parse_and_format() {
        let text = format!("pb://{HASH}@127.0.0.1:47100/abcdefswiss#v=1");
        let nurl = Nurl::parse(&text).unwrap();
        assert_eq!(nurl.spki_hash[..4], [0, 1, 2, 3]);
        assert_eq!(nurl.host, "127.0.0.1");
        assert_eq!(nurl.port, 47100);
        assert_eq!(nurl.swissnum, "abcdefswiss");
        assert_eq!(nurl.to_string(), text);
        assert!(!format!("{nurl:?}").contains("abcdefswiss"));

        let v6 = Nurl::parse(&format!("pb://{HASH}@[::1]:9/s#v=1")).unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.authority(), "[::1]:9");
    }

    #[test]
    fn spki_of_v1_and_v3_certificates() {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
            }
            out.extend_from_slice(body);
            out
        }
        let spki = tlv(0x30, &[0x05; 200]);
        let fields = [
            tlv(0x02, &[1]),
            tlv(0x30, &[]),
            tlv(0x30, b"issuer"),
            tlv(0x30, b"validity"),
            tlv(0x30, b"subject"),
        ]
        .concat();
        for version in [vec![], tlv(0xa0, &tlv(0x02, &[2]))] {
            let tbs = tlv(0x30, &[version, fields.clone(), spki.clone()].concat());
            let cert = tlv(0x30, &[tbs, tlv(0x30, &[]), tlv(0x03, &[0])].concat());
            assert_eq!(spki_of_certificate(&cert).unwrap(), &spki[..]);
            for cut in [1, 10, cert.len() - 1] {
                assert!(spki_of_certificate(&cert[..cut]).is_err());
            }
        }
    }

    #[test]
    fn a_node_that_never_started_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tahoe.cfg"), "[node]\n").unwrap();
        let err = nurls_of_node_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                NodeDirError::NeverStarted {
                    missing: "private/node.pem",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("start the node once"), "{err}");
        // Not a node directory at all: the plain read error.
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            nurls_of_node_dir(empty.path()).unwrap_err(),
            NodeDirError::Read { .. }
        ));
    }

    #[test]
    fn bad_nurls_are_rejected() {
        use NurlError as E;
        type Check = fn(&NurlError) -> bool;
        let cases: [(String, Check); 10] = [
            (format!("http://{HASH}@h:1/s#v=1"), |e| *e == E::NotPb),
            (format!("pb://{HASH}@h:1/s"), |e| *e == E::NoVersion),
            (
                format!("pb://{HASH}@h:1/s#v=2"),
                |e| matches!(e, E::UnsupportedVersion { fragment } if fragment == "v=2"),
            ),
            (format!("pb://{HASH}h:1/s#v=1"), |e| *e == E::NoAt),
            ("pb://AAEC@h:1/s#v=1".to_owned(), |e| {
                *e == E::HashNot32Bytes
            }),
            (format!("pb://{HASH}@h/s#v=1"), |e| *e == E::NoPort),
            (
                format!("pb://{HASH}@h:99999/s#v=1"),
                |e| matches!(e, E::BadPort { port } if port == "99999"),
            ),
            (format!("pb://{HASH}@h:1/#v=1"), |e| *e == E::BadSwissnum),
            (format!("pb://{HASH}@h:1/a/b#v=1"), |e| *e == E::BadSwissnum),
            (format!("pb://{HASH}@:1/s#v=1"), |e| *e == E::BadHost),
        ];
        for (bad, expected) in cases {
            let err = Nurl::parse(&bad).unwrap_err();
            assert!(expected(&err), "{bad}: {err:?}");
        }
        let err = Nurl::parse("pb://!!@h:1/secretswiss#v=1").unwrap_err();
        assert!(matches!(err, E::HashNotBase64(_)), "{err:?}");
        assert!(!err.to_string().contains("secretswiss"));
    }

    use proptest::prelude::*;

    // Run long by tests/fuzz.sh (PROPTEST_CASES).
    proptest! {
        #[test]
        fn fuzz_nurl_arbitrary_text(text in ".{0,120}", swiss in "[a-z0-9]{1,20}") {
            let _ = Nurl::parse(&text);
            // Arbitrary text in each part of an otherwise good NURL.
            let good = format!("pb://{HASH}@h:1/{swiss}#v=1");
            for cut in 0..=good.len() {
                if let (Some(head), Some(tail)) = (good.get(..cut), good.get(cut..)) {
                    let _ = Nurl::parse(&format!("{head}{text}{tail}"));
                }
            }
        }

        #[test]
        fn fuzz_nurl_round_trips(
            hash in any::<[u8; 32]>(),
            host in "[a-z0-9.-]{1,30}|[0-9a-f:]{2,39}",
            port in any::<u16>(),
            swissnum in "[A-Za-z0-9_-]{1,40}",
        ) {
            let nurl = Nurl { spki_hash: hash, host, port, swissnum };
            prop_assert_eq!(Nurl::parse(&nurl.to_string()), Ok(nurl.clone()));
            let debug = format!("{nurl:?}");
            prop_assert!(!debug.contains("swissnum"), "{}", debug);
        }

        #[test]
        fn fuzz_certificate_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(spki) = spki_of_certificate(&bytes) {
                // What it returns lies within the input and is one SEQUENCE.
                prop_assert_eq!(spki.first(), Some(&0x30));
                prop_assert!(spki.len() <= bytes.len());
            }
        }

        #[test]
        fn fuzz_certificate_mutations(cut in 0usize..400, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
            let mut cert = sample_certificate(true);
            for (at, byte) in flips {
                let i = at.index(cert.len());
                cert[i] = byte;
            }
            cert.truncate(cut);
            let _ = spki_of_certificate(&cert);
        }
    }

    fn sample_certificate(with_version: bool) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
            }
            out.extend_from_slice(body);
            out
        }
        let fields = [
            tlv(0x02, &[1]),
            tlv(0x30, &[]),
            tlv(0x30, b"issuer"),
            tlv(0x30, b"validity"),
            tlv(0x30, b"subject"),
            tlv(0x30, &[0x05; 200]),
        ]
        .concat();
        let version = if with_version {
            tlv(0xa0, &tlv(0x02, &[2]))
        } else {
            vec![]
        };
        let tbs = tlv(0x30, &[version, fields].concat());
        tlv(0x30, &[tbs, tlv(0x30, &[]), tlv(0x03, &[0])].concat())
    }
}
