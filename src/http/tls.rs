//! HTTPS: the rustls server configuration from `[tls]`, with ring as the
//! crypto provider (as the Tahoe backend's client uses).
//!
//! - `cert` and `key`: PEM files, parsed with rustls-pki-types.
//! - `self_signed = true`: `<data_dir>/tls/cert.pem` and `key.pem` (0600),
//!   made with rcgen on the first start for `localhost`, the loopback
//!   addresses, the listen address, this machine's host name and
//!   `[tls] names`, and kept across restarts so that a
//!   client told to trust it once keeps trusting it. Its SHA-256
//!   fingerprint is logged at every start, to compare with what a client
//!   shows.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// Why TLS could not be set up; names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read the TLS certificate {}: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    /// Never holds key material: only what was wrong with the file.
    #[error("cannot read the TLS private key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    /// The self-signed certificate or its key could not be saved.
    #[error("cannot write the self-signed certificate under {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Generating the self-signed certificate failed.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate and key (a key that does not match, say).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The TLS acceptor `[tls]` asks for; `None` for plain HTTP.
pub fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    let tls = &config.tls;
    let (cert, key) = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ if tls.self_signed => self_signed(&config.data_dir, config.listen.ip(), &tls.names)?,
        _ => return Ok(None),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.clone(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::Cert {
            path: cert,
            reason: "no CERTIFICATE in the file".into(),
        });
    };
    tracing::info!(
        cert = %cert.display(),
        sha256 = fingerprint(leaf),
        "serving HTTPS"
    );
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::Key {
        path: key.clone(),
        // pki-types' errors name the problem, never the key's bytes.
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// `AB:CD:...`, the form browsers and `openssl x509 -fingerprint` show.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The self-signed certificate and key files under `data_dir`, made now
/// if either is missing.
fn self_signed(
    data_dir: &Path,
    listen: IpAddr,
    extra: &[String],
) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.is_unspecified() && !listen.is_loopback() {
        names.push(listen.to_string());
    }
    // What other machines most likely call this one.
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            names.push(host.to_owned());
        }
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write_err = |source| TlsError::Write {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    // The key first, owner-only from its creation; the certificate last,
    // so that a start interrupted between the two makes both again.
    write_new(&key, made.key_pair.serialize_pem().as_bytes(), 0o600).map_err(write_err)?;
    write_new(&cert, made.cert.pem().as_bytes(), 0o644).map_err(write_err)?;
    tracing::info!(cert = %cert.display(), "made a self-signed TLS certificate");
    Ok((cert, key))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            tls: crate::config::TlsConfig {
                self_signed: true,
                ..Default::default()
            },
            ..Config::default()
        };
        assert!(acceptor(&config).unwrap().is_some());
        let cert = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
        let mode = std::fs::metadata(dir.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(acceptor(&config).unwrap().is_some());
        assert_eq!(
            std::fs::read(dir.path().join("tls/cert.pem")).unwrap(),
            cert
        );
    }

    #[test]
    fn bad_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let config = Config {
            tls: crate::config::TlsConfig {
                cert: Some(cert.clone()),
                key: Some(key),
                ..Default::default()
            },
            ..Config::default()
        };
        let err = acceptor(&config).err().unwrap().to_string();
        assert!(err.contains(&cert.display().to_string()), "{err}");
    }
}
