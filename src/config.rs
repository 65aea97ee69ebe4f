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

use crate::engine::{EncodingParams, UploadOptions};
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
    pub encoding: EncodingConfig,
    pub grid: GridConfig,
    pub http: HttpConfig,
    pub repair: RepairConfig,
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
}

/// An IP address and port, with a message that says what to write instead
/// of a host name: resolving one could listen somewhere the user did not
/// mean (`localhost` is both 127.0.0.1 and ::1).
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
            encoding: EncodingConfig::default(),
            grid: GridConfig::default(),
            http: HttpConfig::default(),
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
            upload_memory_mib: 128,
        }
    }
}

/// Why a configuration could not be used. Every variant names the file
/// (when there is one) and, where it can, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4918");
        assert_eq!(c.data_dir, PathBuf::from("./griddav-data"));
        assert_eq!(c.encoding_params(), EncodingParams::default());
        assert_eq!(c.encoding.segment_size, 1_048_576);
        assert_eq!(c.encoding.max_in_flight, 4);
        assert_eq!(c.inline_threshold, 16384);
        assert_eq!(c.read_buf_size, 262_144);
        assert_eq!(c.lock_max_timeout(), Duration::from_secs(3600));
        assert_eq!(c.grid.servers, None);
        assert_eq!(c.http.header_read_timeout_secs, 30);
        assert_eq!(c.http.keep_alive_idle_secs, 15);
        assert_eq!(c.http.body_idle_timeout_secs, 60);
        assert_eq!(c.http.max_connections, 256);
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
        let (msg, _) = error_of("[grid]\nservers = [{ kind = \"s3\", path = \"/a\" }]\n");
        assert!(msg.contains("s3"), "{msg}");
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
    fn a_missing_file_is_an_error_naming_it() {
        let err = Config::load(Some(Path::new("/nonexistent/griddav.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string().contains("/nonexistent/griddav.toml"),
            "{err}"
        );
    }
}
