//! What the local grid holds on disk: every file under `grid/server-*/`,
//! and every live share packed into a log under `grid/server-*/packed/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The files of a local grid, by kind, each with its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GridFiles {
    /// Finished shares: `server-NN/shares/...`, and the live records of
    /// the packed logs as `server-NN/packed/<si>/<share number>`.
    pub shares: BTreeMap<PathBuf, u64>,
    /// Shares being written: `server-NN/incoming/...`.
    pub incoming: BTreeMap<PathBuf, u64>,
    /// Anything else under a server directory (not the packed logs,
    /// whose live records are in `shares`).
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
                    Some("packed") if path.extension().is_some_and(|x| x == "log") => {
                        for (si, share, len) in packed_records(&path) {
                            let server = PathBuf::from(&name);
                            files.shares.insert(
                                server.join("packed").join(si).join(share.to_string()),
                                len,
                            );
                        }
                        continue;
                    }
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

/// The live records of a packed log (src/grid/local/packed.rs): storage
/// index in base32, share number, length.
pub fn packed_records(log: &Path) -> Vec<(String, u8, u64)> {
    let Ok(bytes) = fs::read(log) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 64) {
        if &header[..4] != b"GDP1" {
            break;
        }
        let len = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes")) as usize;
        if at + 64 + len > bytes.len() {
            break;
        }
        if header[4] == 1 {
            let si: [u8; 16] = header[8..24].try_into().expect("16 bytes");
            records.push((
                griddav::grid::StorageIndex::from_bytes(si).to_base32(),
                header[5],
                len as u64,
            ));
        }
        at += 64 + len;
    }
    records
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
