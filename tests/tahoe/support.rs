//! Shared by the `tahoe_*` integration tests: the nodes of
//! `tests/tahoe/harness.sh`, found from `GRIDDAV_TAHOE_CONFIG`.

#![allow(dead_code)]
// Each test crate includes this module privately: its `pub` items are
// the test crates' shared API, so `pub(crate)` would only add noise.
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use griddav::config::{Config, ServerConfig};
use griddav::grid::tahoe::{Nurl, Timeouts};
use griddav::grid::{Grid, ShareStore, StorageIndex, TahoeStore};

pub const MIB: usize = 1 << 20;

/// One test at a time: they kill and restart the shared nodes.
static SERIAL: Mutex<()> = Mutex::new(());

pub struct Harness {
    _serial: MutexGuard<'static, ()>,
    pub config: PathBuf,
    pub base: PathBuf,
    /// NURLs in node order.
    pub nurls: Vec<String>,
}

impl Harness {
    /// The running harness. The tests that call this are `#[ignore]`d:
    /// run with `--ignored` where the nodes run, never without them.
    pub fn get() -> Harness {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let config = std::env::var_os("GRIDDAV_TAHOE_CONFIG").expect(
            "GRIDDAV_TAHOE_CONFIG must be the config written by \
             `tests/tahoe/harness.sh start` (see docs/TAHOE.md)",
        );
        let config = PathBuf::from(config);
        let base = config.parent().expect("config in a directory").to_owned();
        let loaded = Config::load(Some(&config)).expect("harness config");
        let nurls = loaded
            .grid
            .servers
            .expect("servers")
            .into_iter()
            .map(|s| match s {
                ServerConfig::Tahoe { nurl, .. } => nurl.to_string(),
                other => panic!("not a tahoe server: {other:?}"),
            })
            .collect();
        let harness = Harness {
            _serial: serial,
            config,
            base,
            nurls,
        };
        // Whatever an earlier test did, start from ten running nodes.
        harness.restart_all();
        harness
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.base.join(format!("node-{i:02}"))
    }

    pub fn pid(&self, i: usize) -> i32 {
        std::fs::read_to_string(self.node_dir(i).join("harness.pid"))
            .expect("harness.pid")
            .trim()
            .parse()
            .expect("pid")
    }

    pub fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid(i).to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} node {i}");
    }

    pub fn restart_all(&self) {
        for i in 0..self.nurls.len() {
            if self.node_dir(i).join("harness.pid").exists() {
                let _ = Command::new("kill")
                    .args(["-CONT", &self.pid(i).to_string()])
                    .status();
            }
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tahoe/harness.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg("start")
            .env("GRIDDAV_TAHOE_DIR", &self.base)
            .status()
            .expect("harness.sh start");
        assert!(status.success(), "harness.sh start");
    }

    /// A grid of the ten nodes, with the given request timeout.
    pub fn grid(&self, request_timeout: Duration) -> (Grid, Vec<TahoeStore>) {
        let stores: Vec<TahoeStore> = self
            .nurls
            .iter()
            .enumerate()
            .map(|(i, nurl)| {
                TahoeStore::new(
                    Nurl::parse(nurl).expect("nurl"),
                    Some(format!("tahoe-{i:02}")),
                    Timeouts {
                        request: request_timeout,
                        ..Timeouts::default()
                    },
                )
                .expect("store")
            })
            .collect();
        let grid = Grid::new(
            stores
                .iter()
                .map(|s| Arc::new(s.clone()) as Arc<dyn ShareStore>)
                .collect(),
        );
        (grid, stores)
    }

    /// Every storage index with a share directory on node `i`.
    pub fn storage_indexes(&self, i: usize) -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        let Ok(prefixes) = std::fs::read_dir(self.node_dir(i).join("storage/shares")) else {
            return found;
        };
        for prefix in prefixes.flatten() {
            if let Ok(dirs) = std::fs::read_dir(prefix.path()) {
                for dir in dirs.flatten() {
                    found.insert(dir.file_name().to_string_lossy().into_owned());
                }
            }
        }
        found.remove("incoming");
        found
    }

    /// The files of a storage index's shares on every node's disk.
    pub fn share_files(&self, si: StorageIndex) -> Vec<(usize, PathBuf)> {
        let si = si.to_base32();
        let mut found = Vec::new();
        for i in 0..self.nurls.len() {
            let dir = self
                .node_dir(i)
                .join("storage/shares")
                .join(&si[..2])
                .join(&si);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries {
                    found.push((i, entry.expect("entry").path()));
                }
            }
        }
        found.sort();
        found
    }
}

pub fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u64::from(seed) ^ 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
