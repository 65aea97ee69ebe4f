//! The files `griddav check` and the background repair walk: those under a
//! path that live in the grid, with their capabilities.

use rusqlite::params;

use super::error::DbContext;
use super::tree::{cap_refs, resolve};
use super::{Namespace, NamespaceError, NsPath};

/// A file whose content is in the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridFile {
    /// Canonical path, `/a/b`.
    pub path: String,
    /// Its capability: keep it as private as the file.
    pub cap: String,
    /// Length in bytes.
    pub size: u64,
}

impl Namespace {
    /// Every file under `path` (or `path` itself, a file) whose content is
    /// in the grid, sorted by path: one read transaction, so a consistent
    /// picture even while a server changes the tree.
    pub async fn grid_files_under(&self, path: &str) -> Result<Vec<GridFile>, NamespaceError> {
        let path = NsPath::parse(path)?;
        self.run("listing grid files", false, move |tx, _| {
            let Some(top) = resolve(tx, &path)? else {
                return Err(NamespaceError::NotFound {
                    path: path.to_string(),
                });
            };
            let mut files: Vec<GridFile> = tx
                .prepare(
                    "WITH RECURSIVE walk(id, path, kind, cap, size) AS (
                         SELECT id, ?2, kind, cap, size FROM nodes WHERE id = ?1
                         UNION ALL
                         SELECT n.id,
                                CASE WHEN w.path = '/' THEN '/' || n.name
                                     ELSE w.path || '/' || n.name END,
                                n.kind, n.cap, n.size
                         FROM nodes n JOIN walk w ON n.parent = w.id
                         WHERE w.kind = 'dir'
                     )
                     SELECT path, cap, size FROM walk WHERE cap IS NOT NULL",
                )
                .and_then(|mut s| {
                    s.query_map(params![top.id, path.to_string()], |r| {
                        Ok(GridFile {
                            path: r.get(0)?,
                            cap: r.get(1)?,
                            size: r.get::<_, i64>(2)?.max(0) as u64,
                        })
                    })?
                    .collect()
                })
                .ctx("listing grid files")?;
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(files)
        })
        .await
    }

    /// Records that `cap` was stored with fewer than n shares.
    pub async fn record_short(&self, cap: &str) -> Result<(), NamespaceError> {
        let cap = cap.to_owned();
        self.run("recording a file short of shares", true, move |tx, now| {
            tx.execute(
                "INSERT OR IGNORE INTO short_files (cap, recorded_at) VALUES (?1, ?2)",
                params![cap, now],
            )
            .ctx("recording a file short of shares")?;
            Ok(())
        })
        .await
    }

    /// The files recorded short of shares that still exist (one path each),
    /// oldest record first; records of files gone are dropped.
    pub async fn short_files(&self) -> Result<Vec<GridFile>, NamespaceError> {
        self.run("listing files short of shares", true, |tx, _| {
            tx.execute(
                "DELETE FROM short_files WHERE cap NOT IN
                     (SELECT cap FROM nodes WHERE cap IS NOT NULL)",
                [],
            )
            .ctx("dropping records of files gone")?;
            let caps: Vec<(String, i64)> = tx
                .prepare(
                    "SELECT s.cap, MIN(n.size) FROM short_files s
                     JOIN nodes n ON n.cap = s.cap
                     GROUP BY s.cap ORDER BY MIN(s.recorded_at)",
                )
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .ctx("listing files short of shares")?;
            Ok(caps
                .into_iter()
                .map(|(cap, size)| GridFile {
                    path: String::new(),
                    cap,
                    size: size.max(0) as u64,
                })
                .collect())
        })
        .await
    }

    /// Forgets that `cap` was short of shares (repair completed it).
    pub async fn short_done(&self, cap: &str) -> Result<(), NamespaceError> {
        let cap = cap.to_owned();
        self.run("completing a file short of shares", true, move |tx, _| {
            tx.execute("DELETE FROM short_files WHERE cap = ?1", [&cap])
                .ctx("completing a file short of shares")?;
            Ok(())
        })
        .await
    }

    /// Whether any file still refers to `cap`.
    pub async fn cap_referenced(&self, cap: &str) -> Result<bool, NamespaceError> {
        let cap = cap.to_owned();
        self.run("counting references", false, move |tx, _| {
            Ok(cap_refs(tx, &cap)? > 0)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::super::testutil::*;
    use super::super::Content;
    use super::*;

    #[tokio::test]
    async fn grid_files_under_walks_folders_and_skips_inline_files() {
        let f = Fixture::new().await;
        f.ns.create_dir("/d").await.unwrap();
        f.ns.create_dir("/d/e").await.unwrap();
        f.put("/a", "cap-a", 1).await;
        f.put("/d/b", "cap-b", 2).await;
        f.put("/d/e/c", "cap-c", 3).await;
        f.ns.publish_file("/d/small", Content::Inline(b"x".to_vec()), 1, t0(), None)
            .await
            .unwrap();
        let all = f.ns.grid_files_under("/").await.unwrap();
        let paths: Vec<&str> = all.iter().map(|g| g.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/d/b", "/d/e/c"]);
        assert_eq!(all[2].cap, "cap-c");
        assert_eq!(all[2].size, 3);
        let under: Vec<String> =
            f.ns.grid_files_under("/d/")
                .await
                .unwrap()
                .into_iter()
                .map(|g| g.path)
                .collect();
        assert_eq!(under, ["/d/b", "/d/e/c"]);
        assert_eq!(f.ns.grid_files_under("/a").await.unwrap().len(), 1);
        assert!(f.ns.grid_files_under("/nope").await.is_err());

        assert!(f.ns.cap_referenced("cap-b").await.unwrap());
        f.ns.remove("/d").await.unwrap();
        assert!(!f.ns.cap_referenced("cap-b").await.unwrap());
    }

    #[tokio::test]
    async fn a_read_only_handle_reads_beside_a_writer() {
        let f = Fixture::new().await;
        f.put("/a", "cap-a", 1).await;
        let reader = Namespace::open_read_only(f.db_path()).await.unwrap();
        assert_eq!(reader.grid_files_under("/").await.unwrap().len(), 1);
        f.put("/b", "cap-b", 1).await;
        assert_eq!(reader.grid_files_under("/").await.unwrap().len(), 2);
        assert!(reader.create_dir("/x").await.is_err(), "read-only");
        drop(f.ns);
        // The writer gone (its log removed at close), still readable.
        let reader = Namespace::open_read_only(f.dir.path().join("ns.db"))
            .await
            .unwrap();
        assert_eq!(reader.grid_files_under("/").await.unwrap().len(), 2);
    }
}
