//! The configuration: a TOML file, every key optional, defaults that need
//! no file at all.
//!
//! `config/griddav.toml` documents every key with its default; a test keeps
//! it equal to [`Config::default`]. Unknown keys are errors (a typo must not
//! silently fall back to a default), and every error names the file and the
//! key.
//!
//! Relative paths (`data_dir`, a local server's `path`) are taken relative
//! to the current directory, as on the command line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::{EncodingParams, Format, UploadOptions};
use crate::grid::tahoe::Nurl;

/// Number of directories of the embedded default grid.
pub const DEFAULT_LOCAL_SERVERS: usize = 10;

/// Everything `griddav serve` can be told.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port the WebDAV server listens on.
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    /// Where the namespace database and the default grid live.
    pub data_dir: PathBuf,
    /// Files up to this many bytes are kept in the namespace row and never
    /// touch the grid.
    pub inline_threshold: u64,
    /// Bytes read from the engine per step of a GET.
    pub read_buf_size: usize,
    /// The longest lock timeout granted, in seconds; also what a LOCK
    /// asking for an infinite lock (or none) gets.
    pub lock_max_timeout_secs: u64,
    /// How long replaced or deleted content stays before its shares are
    /// freed, in seconds: a grace period for reads that opened it just
    /// before.
    pub gc_grace_secs: u64,
    /// Seconds after a change within which the namespace is copied into
    /// the grid; 0: only at shutdown and on SIGUSR1.
    pub snapshot_interval_secs: u64,
    /// Namespace copies kept in the grid; older ones are freed.
    pub snapshot_keep: usize,
    /// Increments (changed pages only) shipped on one full namespace copy
    /// before the next full one; 0: every copy is full.
    pub snapshot_max_increments: usize,
    /// Seconds requests in flight may take to finish after SIGTERM or
    /// SIGINT before the uploads left are aborted.
    pub shutdown_grace_secs: u64,
    /// `[encoding]`: how files are split into shares.
    pub encoding: EncodingConfig,
    /// `[grid]`: the storage servers.
    pub grid: GridConfig,
    /// `[http]`: limits and time limits of the WebDAV listener.
    pub http: HttpConfig,
    /// Serve a non-loopback `listen` address without users and TLS.
    pub allow_insecure: bool,
    /// Where `/metrics`, the status page and `/status.json` are served;
    /// none by default.
    #[serde(deserialize_with = "optional_socket_address")]
    pub metrics_listen: Option<SocketAddr>,
    /// `[[users]]`: when any is given, every request needs one's password.
    pub users: Vec<UserConfig>,
    /// `[tls]`: HTTPS for the WebDAV listener.
    pub tls: TlsConfig,
    /// `[repair]`: the background check and repair of files.
    pub repair: RepairConfig,
}

/// One `[[users]]` entry.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The HTTP Basic user name.
    pub name: String,
    /// An argon2id PHC string, as `griddav passwd` prints it.
    pub password_hash: String,
    /// The folder this user sees as `/`; created on first use.
    #[serde(default = "root_folder")]
    pub root: String,
    /// Refuse every method that changes anything.
    #[serde(default)]
    pub read_only: bool,
}

fn root_folder() -> String {
    "/".to_owned()
}

impl fmt::Debug for UserConfig {
    /// Without the hash: a config printed in a log or an error must not
    /// hand out material for an offline guessing attack.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password_hash", &"(hidden)")
            .field("root", &self.root)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// `[tls]`: HTTPS instead of HTTP, with a certificate from files or one
/// griddav makes itself.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Make (once, under the data directory) and use a self-signed
    /// certificate for the listen address and `localhost`.
    pub self_signed: bool,
    /// More host names or IP addresses for the self-signed certificate:
    /// the ones other machines use to reach this one.
    pub names: Vec<String>,
}

impl TlsConfig {
    /// Whether HTTPS is served.
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert.is_some()
    }
}

/// `[repair]`: the check-and-repair pass `serve` runs in the background.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairConfig {
    /// Seconds between two passes over every file (the first one this
    /// long after start); 0: never.
    pub interval_secs: u64,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            interval_secs: 86_400,
        }
    }
}

/// `[encoding]`: how files are cut and coded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncodingConfig {
    /// Shares needed to read a file.
    pub k: u16,
    /// Shares that must be stored for an upload to succeed.
    pub happy: u16,
    /// Shares made of each file.
    pub n: u16,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
    /// Segments of one upload being encoded or written at once.
    pub max_in_flight: usize,
    /// Memory for coded segments of all uploads together, in MiB.
    pub upload_memory_mib: u64,
    /// The share format of new files whose size is known at the start.
    pub format: Format,
}

/// `[http]`: limits on connections, so that idle or stalled clients cannot
/// hold sockets, memory and partial uploads for ever.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds within which a request head must be complete, counted from
    /// the connection opening or from the previous answer.
    pub header_read_timeout_secs: u64,
    /// Seconds after which a connection with no request in progress, on
    /// which nothing is sent or received, is closed.
    pub keep_alive_idle_secs: u64,
    /// Seconds a request body may send nothing while griddav waits for it
    /// (the upload is then aborted), and an answer may go unread.
    pub body_idle_timeout_secs: u64,
    /// Connections served at once; further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
}

/// `[grid]`: where shares live.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GridConfig {
    /// The storage servers; `None` (the key absent) is the embedded default
    /// grid: [`DEFAULT_LOCAL_SERVERS`] directories under
    /// `<data_dir>/grid`, wherever `data_dir` ends up.
    pub servers: Option<Vec<ServerConfig>>,
}

/// One storage server, `{ kind = "local", path = "..." }` or
/// `{ kind = "tahoe", nurl = "pb://..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ServerConfig {
    /// A directory on this machine.
    Local {
        /// The directory this server keeps its shares in.
        path: PathBuf,
        /// The server id, which decides where shares of each file go:
        /// keep it stable. Default `local-NN`, NN the position in the list
        /// (the ids of the default grid).
        #[serde(default)]
        id: Option<String>,
    },
    /// A Tahoe-LAFS storage server, over its HTTP storage protocol.
    Tahoe {
        /// `pb://<spki-hash>@<host>:<port>/<swissnum>#v=1`, as
        /// `griddav tahoe-nurl NODEDIR` prints it. Parsed when the file
        /// is read, so that a bad one is an error naming its key.
        #[serde(deserialize_with = "nurl")]
        nurl: Nurl,
        /// The server id; default `tahoe-<spki-hash>`, the server's own
        /// stable identity.
        #[serde(default)]
        id: Option<String>,
        /// Seconds one request may take before the server counts as failed
        /// (default 60).
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// An S3 bucket, or a prefix in one.
    S3(S3ServerConfig),
}

/// `{ kind = "s3", endpoint = "http://127.0.0.1:9000", bucket = "b0", ... }`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ServerConfig {
    /// `http(s)://host:port` of an S3-compatible service; absent for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket, which must exist.
    pub bucket: String,
    /// Prepended to every object name; a `/` is added when missing.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    /// The region requests are signed for (default `us-east-1`).
    pub region: String,
    /// The key id requests are signed with.
    pub access_key_id: String,
    /// The secret itself; or the name of an environment variable holding
    /// it (`secret_access_key_env`); or a file whose first line it is
    /// (`secret_access_key_file`). Exactly one of the three.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    /// See `secret_access_key`.
    pub secret_access_key_env: Option<String>,
    #[serde(default)]
    /// See `secret_access_key`.
    pub secret_access_key_file: Option<PathBuf>,
    /// Plain-HTTP endpoints are refused unless this is true.
    #[serde(default)]
    pub allow_http: bool,
    /// The server id; default `s3-<bucket>` (and `/<prefix>` when there is
    /// one). Keep it stable once files are stored.
    #[serde(default)]
    pub id: Option<String>,
    /// Seconds one request may take, retries included (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// MiB gathered per part of a multipart upload (default and least 5).
    #[serde(default)]
    pub part_size_mib: Option<u64>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl fmt::Debug for S3ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret never reaches a log, even at debug level.
        f.debug_struct("S3ServerConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("secret_access_key_env", &self.secret_access_key_env)
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("allow_http", &self.allow_http)
            .field("id", &self.id)
            .field("timeout_secs", &self.timeout_secs)
            .field("part_size_mib", &self.part_size_mib)
            .finish_non_exhaustive()
    }
}

impl S3ServerConfig {
    /// The values that parse but cannot work: the key and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.bucket.is_empty() {
            return Err(("bucket", "must not be empty".into()));
        }
        if let Some(endpoint) = &self.endpoint {
            if endpoint.starts_with("http://") {
                if !self.allow_http {
                    return Err((
                        "endpoint",
                        "is plain http: add `allow_http = true` to send requests \
                         (and their signatures) unencrypted"
                            .into(),
                    ));
                }
            } else if !endpoint.starts_with("https://") {
                return Err(("endpoint", "must start with http:// or https://".into()));
            }
        }
        let sources = [
            self.secret_access_key.is_some(),
            self.secret_access_key_env.is_some(),
            self.secret_access_key_file.is_some(),
        ];
        if sources.iter().filter(|given| **given).count() != 1 {
            return Err((
                "secret_access_key",
                "give exactly one of secret_access_key, secret_access_key_env \
                 and secret_access_key_file"
                    .into(),
            ));
        }
        if self.timeout_secs == Some(0) {
            return Err(("timeout_secs", "must be at least 1".into()));
        }
        if let Some(mib) = self.part_size_mib {
            if !(5..=5120).contains(&mib) {
                return Err((
                    "part_size_mib",
                    format!("must be between 5 and 5120 (S3's part sizes), got {mib}"),
                ));
            }
        }
        Ok(())
    }

    /// The prefix as object names use it: empty, or ending in `/`.
    pub fn normalized_prefix(&self) -> String {
        let trimmed = self.prefix.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        }
    }

    /// The secret access key from wherever the config says it is. The
    /// error names the source, never the secret.
    pub fn secret(&self) -> Result<String, String> {
        match (
            &self.secret_access_key,
            &self.secret_access_key_env,
            &self.secret_access_key_file,
        ) {
            (Some(secret), None, None) => Ok(secret.clone()),
            (None, Some(var), None) => std::env::var(var).map_err(|_| {
                format!("environment variable {var} (secret_access_key_env) is not set")
            }),
            (None, None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "cannot read {} (secret_access_key_file): {e}",
                        path.display()
                    )
                })?;
                let secret = text.lines().next().unwrap_or("").trim().to_owned();
                if secret.is_empty() {
                    return Err(format!(
                        "{} (secret_access_key_file) is empty",
                        path.display()
                    ));
                }
                Ok(secret)
            }
            _ => Err(
                "give exactly one of secret_access_key, secret_access_key_env \
                 and secret_access_key_file"
                    .to_owned(),
            ),
        }
    }
}

/// An IP address and port, with a message that says what to write instead
/// of a host name: resolving one could listen somewhere the user did not
/// mean (`localhost` is both 127.0.0.1 and ::1).
fn optional_socket_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_address(deserializer).map(Some)
}

fn socket_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        let reason = if text.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && host.parse::<std::net::IpAddr>().is_err()
                && port.parse::<u16>().is_ok()
        }) {
            "host names are not accepted: give an IP address and a port, \
             such as \"127.0.0.1:4918\" or \"[::1]:4918\""
        } else {
            "expected an IP address and a port, such as \"127.0.0.1:4918\" or \"[::1]:4918\""
        };
        serde::de::Error::custom(format!("{text:?}: {reason}"))
    })
}

/// A NURL, parsed as it is read. A field attribute rather than
/// `#[serde(try_from)]` on `Nurl` itself: the grid layer does not know serde
/// or configuration files.
fn nurl<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Nurl, D::Error> {
    let text = String::deserialize(deserializer)?;
    Nurl::parse(&text).map_err(|reason| serde::de::Error::custom(format!("bad NURL: {reason}")))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4918)),
            data_dir: PathBuf::from("./griddav-data"),
            inline_threshold: 16384,
            read_buf_size: 256 << 10,
            lock_max_timeout_secs: 3600,
            gc_grace_secs: 3600,
            snapshot_interval_secs: 30,
            snapshot_keep: 10,
            snapshot_max_increments: crate::snapshot::copy::DEFAULT_MAX_INCREMENTS,
            shutdown_grace_secs: 30,
            encoding: EncodingConfig::default(),
            grid: GridConfig::default(),
            http: HttpConfig::default(),
            allow_insecure: false,
            metrics_listen: None,
            users: Vec::new(),
            tls: TlsConfig::default(),
            repair: RepairConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 30,
            keep_alive_idle_secs: 15,
            body_idle_timeout_secs: 60,
            max_connections: 256,
        }
    }
}

impl Default for EncodingConfig {
    fn default() -> Self {
        let p = EncodingParams::default();
        Self {
            k: p.k,
            happy: p.happy,
            n: p.n,
            segment_size: p.segment_size,
            max_in_flight: UploadOptions::default().max_in_flight,
            upload_memory_mib: 64,
            format: Format::default(),
        }
    }
}

/// Why a configuration could not be used. Every variant names the file
/// (when there is one) and, where it can, the key.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // fields are named in each variant's message
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's message names the key and shows the line.
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or contradicts another.
    #[error("invalid config{}: `{key}`: {reason}", Origin(path))]
    Invalid {
        path: Option<PathBuf>,
        key: String,
        reason: String,
    },
}

/// ` file <path>` or nothing, for messages.
struct Origin<'a>(&'a Option<PathBuf>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " file {}", p.display()),
            None => Ok(()),
        }
    }
}

impl Config {
    /// The defaults (`None`) or the file at `path` over the defaults,
    /// validated.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let config = Config::default();
            config.validate_at(None)?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate_at(Some(path))?;
        Ok(config)
    }

    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks the values that parse but cannot work. Call it again after
    /// changing fields (command-line overrides).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at(None)
    }

    fn validate_at(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.map(Path::to_owned),
            key: key.to_owned(),
            reason,
        };
        let e = &self.encoding;
        self.encoding_params()
            .validate()
            .map_err(|reason| invalid("encoding", reason.to_string()))?;
        if e.max_in_flight == 0 {
            return Err(invalid(
                "encoding.max_in_flight",
                "must be at least 1".into(),
            ));
        }
        if self.read_buf_size == 0 {
            return Err(invalid("read_buf_size", "must be at least 1".into()));
        }
        if self.lock_max_timeout_secs == 0 {
            return Err(invalid(
                "lock_max_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        if !(1..=crate::snapshot::record::MAX_COPIES).contains(&self.snapshot_keep) {
            return Err(invalid(
                "snapshot_keep",
                format!(
                    "must be between 1 and {}, got {}",
                    crate::snapshot::record::MAX_COPIES,
                    self.snapshot_keep
                ),
            ));
        }
        if self.snapshot_max_increments >= crate::snapshot::increment::MAX_CHAIN {
            return Err(invalid(
                "snapshot_max_increments",
                format!(
                    "must be below {}, got {}",
                    crate::snapshot::increment::MAX_CHAIN,
                    self.snapshot_max_increments
                ),
            ));
        }
        for (key, value) in [
            ("snapshot_interval_secs", self.snapshot_interval_secs),
            ("shutdown_grace_secs", self.shutdown_grace_secs),
        ] {
            if value > 86_400 {
                return Err(invalid(
                    key,
                    format!("must be at most 86400 seconds, got {value}"),
                ));
            }
        }
        let h = &self.http;
        for (key, value) in [
            ("http.header_read_timeout_secs", h.header_read_timeout_secs),
            ("http.keep_alive_idle_secs", h.keep_alive_idle_secs),
            ("http.body_idle_timeout_secs", h.body_idle_timeout_secs),
        ] {
            // Beyond a day a limit protects nothing; the bound also keeps
            // deadline arithmetic far from overflow.
            if !(1..=86_400).contains(&value) {
                return Err(invalid(
                    key,
                    format!("must be between 1 and 86400 seconds, got {value}"),
                ));
            }
        }
        if !(1..=1_000_000).contains(&h.max_connections) {
            return Err(invalid(
                "http.max_connections",
                format!("must be between 1 and 1000000, got {}", h.max_connections),
            ));
        }
        self.validate_users_and_tls(&invalid)?;
        if self.repair.interval_secs > 366 * 86_400 {
            return Err(invalid(
                "repair.interval_secs",
                format!(
                    "at most a year (31622400 seconds), or 0 for never; got {}",
                    self.repair.interval_secs
                ),
            ));
        }
        if let Some(servers) = &self.grid.servers {
            if servers.is_empty() {
                return Err(invalid(
                    "grid.servers",
                    "is empty; leave it out for the default local grid".into(),
                ));
            }
            let mut ids = std::collections::HashSet::new();
            for (i, s) in servers.iter().enumerate() {
                if let ServerConfig::Tahoe { timeout_secs, .. } = s {
                    if *timeout_secs == Some(0) {
                        return Err(invalid(
                            &format!("grid.servers[{i}].timeout_secs"),
                            "must be at least 1".into(),
                        ));
                    }
                }
                if let ServerConfig::S3(s3) = s {
                    s3.check().map_err(|(key, reason)| {
                        invalid(&format!("grid.servers[{i}].{key}"), reason)
                    })?;
                }
                let id = s.id(i);
                if !ids.insert(id.clone()) {
                    return Err(invalid(
                        "grid.servers",
                        format!("server id {id:?} appears twice"),
                    ));
                }
            }
            if usize::from(e.happy) > servers.len() {
                // `happy` counts distinct servers (as Tahoe's
                // servers-of-happiness does): no upload can succeed. Only
                // a warning, so that a grid being set up can still serve
                // what it has.
                tracing::warn!(
                    happy = e.happy,
                    servers = servers.len(),
                    "fewer storage servers than `happy`: every upload will fail; \
                     add servers or lower encoding.happy"
                );
            }
        }
        Ok(())
    }

    fn validate_users_and_tls(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let key = |field: &str| format!("users[{i}].{field}");
            // Basic splits user and password at the first ':'.
            if user.name.is_empty()
                || user.name.len() > 64
                || user.name.contains(':')
                || user.name.chars().any(char::is_control)
            {
                return Err(invalid(
                    &key("name"),
                    "1 to 64 characters, no ':' and no control characters".into(),
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err(invalid(
                    &key("name"),
                    format!("user {:?} appears twice", user.name),
                ));
            }
            crate::auth::check_phc(&user.password_hash)
                .map_err(|reason| invalid(&key("password_hash"), reason.into()))?;
            crate::auth::root_names(&user.root)
                .map_err(|reason| invalid(&key("root"), reason.into()))?;
        }
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            return Err(invalid("tls", "`cert` and `key` go together".into()));
        }
        for (i, name) in t.names.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
            if !ok {
                return Err(invalid(
                    &format!("tls.names[{i}]"),
                    "a host name or an IP address".into(),
                ));
            }
        }
        if t.self_signed && t.cert.is_some() {
            return Err(invalid(
                "tls",
                "either `cert` and `key` or `self_signed = true`, not both".into(),
            ));
        }
        Ok(())
    }

    /// Refuses to serve anyone who can reach a non-loopback `listen`
    /// address without users and TLS, unless `allow_insecure` says so.
    /// Called before binding.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        // The status page has no authentication and names files.
        if let Some(at) = self.metrics_listen {
            if !at.ip().is_loopback() && !self.allow_insecure {
                return Err(ConfigError::Invalid {
                    path: None,
                    key: "metrics_listen".into(),
                    reason: format!(
                        "{at} is reachable from other machines, and the metrics and \
                         status page have no password and show file names: listen on \
                         127.0.0.1 (and reach it through a tunnel or a proxy), or set \
                         `allow_insecure = true`"
                    ),
                });
            }
        }
        if self.listen.ip().is_loopback()
            || self.allow_insecure
            || (!self.users.is_empty() && self.tls.enabled())
        {
            return Ok(());
        }
        let missing = match (self.users.is_empty(), self.tls.enabled()) {
            (true, false) => "no [[users]] and no [tls]",
            (true, true) => "no [[users]]",
            _ => "no [tls]",
        };
        Err(ConfigError::Invalid {
            path: None,
            key: "listen".into(),
            reason: format!(
                "{} is reachable from other machines, and there are {missing}: anyone \
                 there could read and change every file, in clear text. Add a user \
                 (`griddav passwd` prints the password_hash for a [[users]] entry \
                 with name and password_hash) and TLS ([tls] self_signed = true, or \
                 cert and key), or listen on 127.0.0.1; `allow_insecure = true` \
                 serves it anyway (behind a trusted proxy or network). See docs/SECURITY.md.",
                self.listen
            ),
        })
    }

    /// `[encoding]` as the engine takes it.
    pub fn encoding_params(&self) -> EncodingParams {
        EncodingParams {
            k: self.encoding.k,
            happy: self.encoding.happy,
            n: self.encoding.n,
            segment_size: self.encoding.segment_size,
        }
    }

    /// `lock_max_timeout_secs` as a duration.
    pub fn lock_max_timeout(&self) -> Duration {
        Duration::from_secs(self.lock_max_timeout_secs)
    }

    /// `gc_grace_secs` as a duration.
    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.gc_grace_secs)
    }

    /// `shutdown_grace_secs` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// `snapshot_interval_secs` as a duration (zero: no periodic copies).
    pub fn snapshot_interval(&self) -> Duration {
        Duration::from_secs(self.snapshot_interval_secs)
    }

    /// How often `serve` checks and repairs every file; `None`: never.
    pub fn repair_interval(&self) -> Option<Duration> {
        (self.repair.interval_secs > 0).then(|| Duration::from_secs(self.repair.interval_secs))
    }

    /// Where the namespace database lives.
    pub fn namespace_db(&self) -> PathBuf {
        self.data_dir.join("namespace.db")
    }
}

impl ServerConfig {
    /// The server id of the `index`-th server of the list.
    pub fn id(&self, index: usize) -> String {
        match self {
            ServerConfig::Local { id, .. } => {
                id.clone().unwrap_or_else(|| format!("local-{index:02}"))
            }
            ServerConfig::Tahoe { id, nurl, .. } => id
                .clone()
                .unwrap_or_else(|| format!("tahoe-{}", nurl.spki_hash_text())),
            ServerConfig::S3(s3) => s3.id.clone().unwrap_or_else(|| {
                let prefix = s3.normalized_prefix();
                let prefix = prefix.trim_end_matches('/');
                if prefix.is_empty() {
                    format!("s3-{}", s3.bucket)
                } else {
                    format!("s3-{}/{prefix}", s3.bucket)
                }
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn documented() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/griddav.toml")
    }

    #[test]
    fn the_documented_file_is_the_defaults() {
        let loaded = Config::load(Some(&documented())).unwrap();
        assert_eq!(loaded, Config::default());
        assert_eq!(Config::load(None).unwrap(), Config::default());
    }

    /// Uncommenting every `key = value` line of the documented file gives
    /// the defaults too: the values written there are the real ones.
    #[test]
    fn the_documented_values_are_the_defaults() {
        let text = std::fs::read_to_string(documented()).unwrap();
        let mut uncommented = String::new();
        for line in text.lines() {
            let Some(body) = line.trim_start().strip_prefix('#') else {
                continue;
            };
            let body = body.trim();
            let is_setting = body.starts_with(['[', '{', ']'])
                || body.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if is_setting {
                uncommented.push_str(body);
                uncommented.push('\n');
            }
        }
        // The documented example grid is the default grid written out.
        let mut config = Config::parse(&uncommented).unwrap();
        let servers = config.grid.servers.take().unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(servers.len(), DEFAULT_LOCAL_SERVERS);
        for (i, s) in servers.iter().enumerate() {
            assert_eq!(
                s,
                &ServerConfig::Local {
                    path: PathBuf::from(format!("./griddav-data/grid/server-{i:02}")),
                    id: None
                }
            );
            assert_eq!(s.id(i), format!("local-{i:02}"));
        }
    }

    #[test]
    fn the_share_format_is_one_of_two_names() {
        assert_eq!(Config::default().encoding.format, Format::GriddavV1);
        let c = Config::parse("[encoding]\nformat = \"tahoe-chk\"\n").unwrap();
        assert_eq!(c.encoding.format, Format::TahoeChk);
        let c = Config::parse("[encoding]\nformat = \"griddav-v1\"\n").unwrap();
        assert_eq!(c.encoding.format, Format::GriddavV1);
        for bad in ["\"tahoe\"", "\"Tahoe-CHK\"", "1"] {
            assert!(
                Config::parse(&format!("[encoding]\nformat = {bad}\n")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4918");
        assert_eq!(c.data_dir, PathBuf::from("./griddav-data"));
        assert_eq!(c.encoding_params(), EncodingParams::default());
        assert_eq!(c.encoding.segment_size, 1_048_576);
        assert_eq!(c.encoding.max_in_flight, 2);
        assert_eq!(c.inline_threshold, 16384);
        assert_eq!(c.read_buf_size, 262_144);
        assert_eq!(c.lock_max_timeout(), Duration::from_secs(3600));
        assert_eq!(c.grid.servers, None);
        assert_eq!(c.http.header_read_timeout_secs, 30);
        assert_eq!(c.http.keep_alive_idle_secs, 15);
        assert_eq!(c.http.body_idle_timeout_secs, 60);
        assert_eq!(c.http.max_connections, 256);
        assert_eq!(c.snapshot_interval_secs, 30);
        assert_eq!(c.snapshot_keep, 10);
        assert_eq!(c.snapshot_max_increments, 100);
        assert_eq!(c.shutdown_grace_secs, 30);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c = Config::parse(
            "listen = \"[::1]:8080\"\ndata_dir = \"/srv/g\"\n[encoding]\nk = 2\n\
             [grid]\nservers = [{ kind = \"local\", path = \"/a\" }, \
             { kind = \"local\", path = \"/b\", id = \"b\" }]\n",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "[::1]:8080");
        assert_eq!(c.data_dir, PathBuf::from("/srv/g"));
        assert_eq!(c.encoding.k, 2);
        assert_eq!(c.encoding.n, 10);
        assert_eq!(c.inline_threshold, 16384);
        let servers = c.grid.servers.as_ref().unwrap();
        assert_eq!(servers[0].id(0), "local-00");
        assert_eq!(servers[1].id(1), "b");
        c.validate().unwrap();
    }

    fn load_text(text: &str) -> (tempfile::TempDir, PathBuf, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let result = Config::load(Some(&path));
        (dir, path, result)
    }

    fn error_of(text: &str) -> (String, PathBuf) {
        let (_dir, path, result) = load_text(text);
        (result.unwrap_err().to_string(), path)
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_file() {
        for (text, key) in [
            ("lisen = \"127.0.0.1:1\"\n", "lisen"),
            ("[encoding]\nkk = 3\n", "kk"),
            ("[grid]\nserver = []\n", "server"),
            (
                "[grid]\nservers = [{ kind = \"local\", path = \"/a\", pth = \"/b\" }]\n",
                "pth",
            ),
            ("[encodings]\nk = 3\n", "encodings"),
        ] {
            let (msg, path) = error_of(text);
            assert!(msg.contains(key), "{text:?}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("unknown"), "{msg}");
        }
        let (msg, _) = error_of("[grid]\nservers = [{ kind = \"s4\", path = \"/a\" }]\n");
        assert!(msg.contains("s4"), "{msg}");
        let (msg, _) = error_of("[grid]\nservers = [{ kind = \"s3\", path = \"/a\" }]\n");
        assert!(msg.contains("path"), "{msg}");
    }

    const S3: &str =
        "kind = \"s3\", endpoint = \"http://127.0.0.1:9000\", bucket = \"griddav-0\", \
                      access_key_id = \"AKID\"";

    #[test]
    fn s3_servers_take_their_secret_from_one_place() {
        let c = Config::parse(&format!(
            "[grid]\nservers = [{{ {S3}, secret_access_key = \"sekrit\", allow_http = true, \
             prefix = \"/griddav\" }}]\n"
        ))
        .unwrap();
        c.validate().unwrap();
        let ServerConfig::S3(s3) = &c.grid.servers.as_ref().unwrap()[0] else {
            panic!("an s3 server");
        };
        assert_eq!(s3.secret().unwrap(), "sekrit");
        assert_eq!(s3.normalized_prefix(), "griddav/");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(
            c.grid.servers.as_ref().unwrap()[0].id(0),
            "s3-griddav-0/griddav"
        );
        assert!(
            !format!("{c:?}").contains("sekrit"),
            "the secret never reaches a log"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file\nignored\n").unwrap();
        let c = Config::parse(&format!(
            "[grid]\nservers = [{{ {S3}, secret_access_key_file = \"{}\", allow_http = true }}]\n",
            file.display()
        ))
        .unwrap();
        let ServerConfig::S3(s3) = &c.grid.servers.as_ref().unwrap()[0] else {
            panic!("an s3 server");
        };
        assert_eq!(s3.secret().unwrap(), "from-a-file");
        assert_eq!(c.grid.servers.as_ref().unwrap()[0].id(0), "s3-griddav-0");
    }

    #[test]
    fn bad_s3_servers_are_errors_naming_the_key() {
        for (extra, key, why) in [
            ("secret_access_key = \"s\"", "endpoint", "allow_http"),
            (
                "secret_access_key = \"s\", secret_access_key_env = \"V\", allow_http = true",
                "secret_access_key",
                "exactly one",
            ),
            ("allow_http = true", "secret_access_key", "exactly one"),
            (
                "secret_access_key = \"s\", allow_http = true, part_size_mib = 4",
                "part_size_mib",
                "between 5 and 5120",
            ),
            (
                "secret_access_key = \"s\", allow_http = true, timeout_secs = 0",
                "timeout_secs",
                "at least 1",
            ),
        ] {
            let (msg, _) = error_of(&format!("[grid]\nservers = [{{ {S3}, {extra} }}]\n"));
            assert!(
                msg.contains(&format!("grid.servers[0].{key}")),
                "{extra}: {msg}"
            );
            assert!(msg.contains(why), "{extra}: {msg}");
            assert!(!msg.contains("\"s\""), "{msg}");
        }
    }

    #[test]
    fn bad_values_are_errors_naming_key_and_file() {
        for (text, key) in [
            ("listen = \"localhost\"\n", "listen"),
            (
                "listen = \"localhost:4930\"\n",
                "host names are not accepted",
            ),
            ("listen = \"127.0.0.1\"\n", "an IP address and a port"),
            ("[encoding]\nk = -1\n", "k = -1"),
            ("[encoding]\nsegment_size = \"1M\"\n", "segment_size"),
            ("inline_threshold = 1.5\n", "inline_threshold"),
        ] {
            let (msg, path) = error_of(text);
            assert!(msg.contains(key), "{text:?}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        for (text, key) in [
            // One check of the parameters: EncodingParams::validate.
            ("[encoding]\nk = 0\n", "`encoding`"),
            ("[encoding]\nk = 8\n", "`encoding`"),
            ("[encoding]\nn = 300\nhappy = 200\n", "`encoding`"),
            ("[encoding]\nsegment_size = 0\n", "`encoding`"),
            (
                "[encoding]\nmax_in_flight = 0\n",
                "`encoding.max_in_flight`",
            ),
            ("lock_max_timeout_secs = 0\n", "`lock_max_timeout_secs`"),
            ("snapshot_keep = 0\n", "`snapshot_keep`"),
            ("snapshot_keep = 65\n", "`snapshot_keep`"),
            (
                "snapshot_max_increments = 1024\n",
                "`snapshot_max_increments`",
            ),
            (
                "snapshot_interval_secs = 86401\n",
                "`snapshot_interval_secs`",
            ),
            ("shutdown_grace_secs = 100000\n", "`shutdown_grace_secs`"),
            ("read_buf_size = 0\n", "`read_buf_size`"),
            (
                "[http]\nheader_read_timeout_secs = 0\n",
                "`http.header_read_timeout_secs`",
            ),
            (
                "[http]\nkeep_alive_idle_secs = 100000\n",
                "`http.keep_alive_idle_secs`",
            ),
            (
                "[http]\nbody_idle_timeout_secs = 0\n",
                "`http.body_idle_timeout_secs`",
            ),
            ("[http]\nmax_connections = 0\n", "`http.max_connections`"),
            (
                "[repair]\ninterval_secs = 99999999\n",
                "`repair.interval_secs`",
            ),
            ("[grid]\nservers = []\n", "`grid.servers`"),
            (
                "[grid]\nservers = [{ kind = \"local\", path = \"/a\", id = \"x\" }, \
                 { kind = \"local\", path = \"/b\", id = \"x\" }]\n",
                "`grid.servers`",
            ),
        ] {
            let (msg, path) = error_of(text);
            assert!(msg.contains(key), "{text:?}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn tahoe_servers_mix_with_local_ones() {
        let nurl = "pb://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@127.0.0.1:1/swiss#v=1";
        let c = Config::parse(&format!(
            "[grid]\nservers = [{{ kind = \"local\", path = \"/a\" }}, \
             {{ kind = \"tahoe\", nurl = \"{nurl}\" }}, \
             {{ kind = \"tahoe\", nurl = \"{nurl}\", id = \"t\", timeout_secs = 5 }}]\n"
        ))
        .unwrap();
        c.validate().unwrap();
        let servers = c.grid.servers.as_ref().unwrap();
        assert_eq!(servers[0].id(0), "local-00");
        assert_eq!(
            servers[1].id(1),
            "tahoe-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        );
        assert_eq!(servers[2].id(2), "t");

        for (text, key) in [
            (
                "[grid]\nservers = [{ kind = \"tahoe\", nurl = \"http://x\" }]\n",
                "bad NURL",
            ),
            (
                &format!("[grid]\nservers = [{{ kind = \"tahoe\", nurl = \"{nurl}\", timeout_secs = 0 }}]\n"),
                "`grid.servers[0].timeout_secs`",
            ),
        ] {
            let (msg, _) = error_of(text);
            assert!(msg.contains(key), "{text:?}: {msg}");
        }
        let (msg, _) = error_of("[grid]\nservers = [{ kind = \"tahoe\", path = \"/a\" }]\n");
        assert!(msg.contains("nurl") || msg.contains("path"), "{msg}");
    }

    #[test]
    fn users_and_tls_are_checked() {
        let phc = crate::auth::hash_password("pw").unwrap();
        let user = |name: &str, root: &str| {
            format!("[[users]]\nname = \"{name}\"\npassword_hash = \"{phc}\"\nroot = \"{root}\"\n")
        };
        let c = Config::parse(&format!("{}{}", user("a", "/a"), user("b", "/"))).unwrap();
        c.validate().unwrap();
        assert_eq!(c.users[0].root, "/a");
        assert!(!format!("{c:?}").contains(&phc), "Debug hides the hashes");
        for (text, key) in [
            (user("a:b", "/"), "`users[0].name`"),
            (user("", "/"), "`users[0].name`"),
            (
                format!("{}{}", user("a", "/"), user("a", "/b")),
                "`users[1].name`",
            ),
            (user("a", "/../x"), "`users[0].root`"),
            (user("a", "x"), "`users[0].root`"),
            (
                "[[users]]\nname = \"a\"\npassword_hash = \"secret\"\n".to_owned(),
                "`users[0].password_hash`",
            ),
            ("[tls]\ncert = \"/c.pem\"\n".to_owned(), "`tls`"),
            (
                "[tls]\ncert = \"/c\"\nkey = \"/k\"\nself_signed = true\n".to_owned(),
                "`tls`",
            ),
        ] {
            let (msg, _) = error_of(&text);
            assert!(msg.contains(key), "{text:?}: {msg}");
            assert!(!msg.contains("secret"), "{msg}");
        }
    }

    /// Only the decision: nothing is bound.
    #[test]
    fn a_listen_beyond_loopback_needs_users_and_tls() {
        let phc = crate::auth::hash_password("pw").unwrap();
        let users = format!("[[users]]\nname = \"a\"\npassword_hash = \"{phc}\"\n");
        let tls = "[tls]\nself_signed = true\n";
        for (listen, extra, ok) in [
            ("127.0.0.1:1", String::new(), true),
            ("[::1]:1", String::new(), true),
            ("0.0.0.0:1", String::new(), false),
            ("[::]:1", String::new(), false),
            ("192.0.2.1:1", users.clone(), false),
            ("192.0.2.1:1", tls.to_owned(), false),
            ("192.0.2.1:1", format!("{users}{tls}"), true),
            ("allow_insecure = true\n", String::new(), true),
        ] {
            let text = if listen.contains('=') {
                format!("{listen}listen = \"0.0.0.0:1\"\n{extra}")
            } else {
                format!("listen = \"{listen}\"\n{extra}")
            };
            let c = Config::parse(&text).unwrap();
            c.validate().unwrap();
            let result = c.check_exposure();
            assert_eq!(result.is_ok(), ok, "{text}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("griddav passwd"), "{e}");
            }
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = Config::load(Some(Path::new("/nonexistent/griddav.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string().contains("/nonexistent/griddav.toml"),
            "{err}"
        );
    }
}
