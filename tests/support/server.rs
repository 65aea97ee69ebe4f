//! Runs the real `griddav serve` binary on a temporary data directory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::grid::GridFiles;
use super::http::Client;

const LISTENING: &str = "griddav listening on ";
const METRICS: &str = "griddav metrics on ";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running griddav; killed (by PID) when dropped.
pub struct Server {
    dir: TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Where `/metrics` and the status page are, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    starts: u32,
    /// The open-files limit (`ulimit -n`) the server runs under, if set.
    fd_limit: Option<u64>,
}

impl Server {
    /// A server on a fresh data directory with the default configuration.
    pub fn start() -> Server {
        Server::start_inner(None)
    }

    /// A server whose `--config` file holds `toml`.
    pub fn start_with_config(toml: &str) -> Server {
        Server::start_inner(Some(toml))
    }

    /// A server (default configuration) started under `ulimit -n fd_limit`.
    pub fn start_with_fd_limit(fd_limit: u64) -> Server {
        Server::start_inner_with(None, Some(fd_limit))
    }

    /// A server whose data directory `setup` prepares first (a test
    /// mounts a small tmpfs there), with `config` as its config file.
    pub fn start_with_setup(config: &str, setup: impl FnOnce(&std::path::Path)) -> Server {
        Server::start_inner_full(Some(config), None, setup)
    }

    fn start_inner(config: Option<&str>) -> Server {
        Server::start_inner_with(config, None)
    }

    fn start_inner_with(config: Option<&str>, fd_limit: Option<u64>) -> Server {
        Server::start_inner_full(config, fd_limit, |_| {})
    }

    fn start_inner_full(
        config: Option<&str>,
        fd_limit: Option<u64>,
        setup: impl FnOnce(&std::path::Path),
    ) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("griddav-http-")
            .tempdir()
            .expect("create a temporary directory");
        // Tests count the shares in the grid exactly: a namespace copy
        // (10 shares) appearing 30 s after a change would break them at
        // random. Copies are taken at shutdown only, unless a test asks.
        let toml = config.unwrap_or_default();
        let toml = if toml.contains("snapshot_interval_secs") {
            toml.to_owned()
        } else {
            format!("snapshot_interval_secs = 0\n{toml}")
        };
        let config = {
            let path = dir.path().join("griddav.toml");
            fs::write(&path, toml).expect("write the test config file");
            Some(path)
        };
        let mut server = Server {
            dir,
            config,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            starts: 0,
            fd_limit,
        };
        setup(&server.data_dir());
        server.launch();
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Removes the namespace's log (WAL) under the running server, so that
    /// its next sync fails: SQLite keeps writing to its open handle, and
    /// the sync opens the path.
    pub fn break_namespace_log(&self) {
        std::fs::remove_file(self.data_dir().join("namespace.db-wal")).expect("remove the log");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Whether the server process has exited (without reaping a running one).
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("server was started");
        child.try_wait().expect("poll griddav").is_some()
    }

    /// The `shares` directory of every local server, in server order.
    pub fn share_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = fs::read_dir(self.data_dir().join("grid"))
            .expect("grid dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("server-"))
            })
            .map(|d| d.join("shares"))
            .collect();
        dirs.sort();
        dirs
    }

    /// Every file of the local grid.
    pub fn grid(&self) -> GridFiles {
        GridFiles::scan(&self.data_dir().join("grid"))
    }

    /// Starts griddav again on the same data directory (after `stop`).
    pub fn launch(&mut self) {
        self.starts += 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        let binary = env!("CARGO_BIN_EXE_griddav");
        let mut command = match self.fd_limit {
            None => Command::new(binary),
            Some(limit) => {
                // `exec` keeps the PID, so stop() and Drop still reach griddav.
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                sh
            }
        };
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn griddav serve");
        let stdout = child.stdout.take().expect("child stdout is piped");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Forward every line; keep draining so the server never blocks on stdout.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                }
            }
        });
        let started = Instant::now();
        let addr = loop {
            match lines_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(LISTENING) {
                        break parse_url(url);
                    }
                    if let Some(url) = line.strip_prefix(METRICS) {
                        self.metrics_addr = Some(parse_url(url));
                        continue;
                    }
                    eprintln!("griddav stdout: {line}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait for griddav");
                    panic!(
                        "griddav serve exited ({status}) before listening; log:\n{}",
                        self.log_tail()
                    );
                }
            }
            if let Some(status) = child.try_wait().expect("poll griddav") {
                panic!(
                    "griddav serve exited ({status}) before listening; log:\n{}",
                    self.log_tail()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "griddav serve did not print its listening line within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
        };
        self.addr = addr;
        self.child = Some(child);
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("poll griddav") {
                return status;
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "griddav did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server with SIGTERM (it must exit cleanly) and starts it
    /// again on the same data directory; the port may change.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "griddav exited with {status} on SIGTERM; log:\n{}",
            self.log_tail()
        );
        self.launch();
    }

    /// Kills the server with SIGKILL (a crash) and starts it again on the
    /// same data directory; the port may change.
    pub fn crash_and_restart(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().expect("SIGKILL griddav");
        child.wait().expect("wait for the killed griddav");
        self.launch();
    }

    /// The last few KiB of the server's log (stderr of every start).
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 << 10)));
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL by PID.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("GRIDDAV_TEST_LOG").is_some() {
            eprintln!(
                "---- griddav log ({} start(s), data dir {}) ----\n{}",
                self.starts,
                self.data_dir().display(),
                self.log_tail()
            );
        }
    }
}

fn parse_url(url: &str) -> SocketAddr {
    let hostport = url
        .trim()
        .strip_prefix("http://")
        .or_else(|| url.trim().strip_prefix("https://"))
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("listening line has an unexpected URL {url:?}"));
    hostport
        .parse()
        .unwrap_or_else(|e| panic!("listening address {hostport:?}: {e}"))
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; true if it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
