//! What the local grid holds on disk: every file under `grid/server-*/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The files of a local grid, by kind, each with its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GridFiles {
    /// Finished shares: `server-NN/shares/...`.
    pub shares: BTreeMap<PathBuf, u64>,
    /// Shares being written: `server-NN/incoming/...`.
    pub incoming: BTreeMap<PathBuf, u64>,
    /// Anything else under a server directory.
    pub other: BTreeMap<PathBuf, u64>,
}

impl GridFiles {
    /// Scans `grid_dir` (`<data-dir>/grid`); files can vanish while it looks.
    pub fn scan(grid_dir: &Path) -> GridFiles {
        let mut files = GridFiles::default();
        let Ok(servers) = fs::read_dir(grid_dir) else {
            return files;
        };
        for server in servers.flatten() {
            let name = server.file_name();
            if !name.to_string_lossy().starts_with("server-") {
                continue;
            }
            let mut found = Vec::new();
            walk(&server.path(), &mut found);
            for (path, size) in found {
                let relative = path
                    .strip_prefix(grid_dir)
                    .expect("walked paths are below the grid")
                    .to_path_buf();
                let kind = relative
                    .components()
                    .nth(1)
                    .map(|c| c.as_os_str().to_string_lossy().into_owned());
                let map = match kind.as_deref() {
                    Some("shares") => &mut files.shares,
                    Some("incoming") => &mut files.incoming,
                    _ => &mut files.other,
                };
                map.insert(relative, size);
            }
        }
        files
    }

    pub fn incoming_bytes(&self) -> u64 {
        self.incoming.values().sum()
    }

    pub fn share_bytes(&self) -> u64 {
        self.shares.values().sum()
    }

    /// All files, shares, incoming and other.
    pub fn file_count(&self) -> usize {
        self.shares.len() + self.incoming.len() + self.other.len()
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&entry.path(), out);
        } else if let Ok(meta) = entry.metadata() {
            out.push((entry.path(), meta.len()));
        }
    }
}
