//! Dead properties: opaque values keyed by (node, XML namespace, name).
//!
//! They key on the node id, so they move with a rename, disappear with
//! their node (ON DELETE CASCADE) and are copied by `copy_file`. A property
//! without an XML namespace uses the empty string. The value is whatever
//! the DAV layer stores (typically the serialized XML element); it is not
//! interpreted here.

use rusqlite::params;

use super::error::DbContext;
use super::tree::require;
use super::{Namespace, NamespaceError, NsPath};

/// One dead property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    /// XML namespace URI; empty for none.
    pub namespace: String,
    pub name: String,
    pub value: Vec<u8>,
}

/// One change of a PROPPATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropPatch {
    /// Create or replace.
    Set(Prop),
    /// Remove; removing a property that does not exist is not an error
    /// (RFC 4918 section 9.2).
    Remove { namespace: String, name: String },
}

impl Namespace {
    /// The value of one property of the node at `path`, or `None`.
    pub async fn get_prop(
        &self,
        path: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, NamespaceError> {
        let path = NsPath::parse(path)?;
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run("reading a property", false, move |tx, _| {
            let node = require(tx, &path)?;
            let mut stmt = tx
                .prepare_cached(
                    "SELECT value FROM props WHERE node_id = ?1 AND namespace = ?2 AND name = ?3",
                )
                .ctx("reading a property")?;
            let mut rows = stmt
                .query(params![node.id, namespace, name])
                .ctx("reading a property")?;
            rows.next()
                .ctx("reading a property")?
                .map(|r| r.get(0))
                .transpose()
                .ctx("reading a property")
        })
        .await
    }

    /// All properties of the node at `path`, sorted by namespace and name.
    pub async fn list_props(&self, path: &str) -> Result<Vec<Prop>, NamespaceError> {
        let path = NsPath::parse(path)?;
        self.run("listing properties", false, move |tx, _| {
            let node = require(tx, &path)?;
            tx.prepare_cached(
                "SELECT namespace, name, value FROM props WHERE node_id = ?1 ORDER BY namespace, name",
            )
            .and_then(|mut s| {
                s.query_map([node.id], |r| {
                    Ok(Prop {
                        namespace: r.get(0)?,
                        name: r.get(1)?,
                        value: r.get(2)?,
                    })
                })?
                .collect()
            })
            .ctx("listing properties")
        })
        .await
    }

    /// Applies `patches` in order, all or none (one transaction).
    pub async fn patch_props(
        &self,
        path: &str,
        patches: Vec<PropPatch>,
    ) -> Result<(), NamespaceError> {
        let path = NsPath::parse(path)?;
        self.run("patching properties", true, move |tx, _| {
            let node = require(tx, &path)?;
            for patch in &patches {
                match patch {
                    PropPatch::Set(p) => tx
                        .prepare_cached(
                            "INSERT INTO props (node_id, namespace, name, value) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (node_id, namespace, name) DO UPDATE SET value = excluded.value",
                        )
                        .and_then(|mut s| s.execute(params![node.id, p.namespace, p.name, p.value])),
                    PropPatch::Remove { namespace, name } => tx
                        .prepare_cached(
                            "DELETE FROM props WHERE node_id = ?1 AND namespace = ?2 AND name = ?3",
                        )
                        .and_then(|mut s| s.execute(params![node.id, namespace, name])),
                }
                .ctx("patching properties")?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn set(ns: &str, name: &str, value: &str) -> PropPatch {
        PropPatch::Set(Prop {
            namespace: ns.into(),
            name: name.into(),
            value: value.as_bytes().to_vec(),
        })
    }

    #[tokio::test]
    async fn properties_round_trip_move_and_cascade() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        ns.create_dir("/d").await.unwrap();
        f.put("/d/f", "cap", 1).await;
        ns.patch_props(
            "/d/f",
            vec![
                set("urn:b", "x", "1"),
                set("", "plain", "2"),
                set("urn:a", "y", "3"),
                set("urn:a", "y", "4"),
                PropPatch::Remove {
                    namespace: "urn:b".into(),
                    name: "x".into(),
                },
                PropPatch::Remove {
                    namespace: "urn:never".into(),
                    name: "set".into(),
                },
            ],
        )
        .await
        .unwrap();
        let listed = ns.list_props("/d/f").await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|p| (p.namespace.as_str(), p.name.as_str(), p.value.as_slice()))
                .collect::<Vec<_>>(),
            [("", "plain", &b"2"[..]), ("urn:a", "y", &b"4"[..])]
        );
        assert_eq!(
            ns.get_prop("/d/f", "urn:a", "y").await.unwrap().unwrap(),
            b"4"
        );
        assert_eq!(ns.get_prop("/d/f", "urn:b", "x").await.unwrap(), None);
        assert!(matches!(
            ns.patch_props("/nope", vec![set("", "a", "b")]).await,
            Err(NamespaceError::NotFound { .. })
        ));
        assert!(matches!(
            ns.get_prop("/nope", "", "a").await,
            Err(NamespaceError::NotFound { .. })
        ));

        // Directory properties too; both follow a move of the parent.
        ns.patch_props("/d", vec![set("urn:a", "dir", "yes")])
            .await
            .unwrap();
        ns.rename("/d", "/e", false).await.unwrap();
        assert_eq!(ns.list_props("/e/f").await.unwrap(), listed);
        assert_eq!(ns.list_props("/e").await.unwrap().len(), 1);

        // Removal cascades: a new node at the same name starts bare, and
        // no row is left behind.
        ns.remove("/e").await.unwrap();
        ns.create_dir("/e").await.unwrap();
        f.put("/e/f", "cap", 1).await;
        assert!(ns.list_props("/e/f").await.unwrap().is_empty());
        let rows: i64 = rusqlite::Connection::open(f.db_path())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM props", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }
}
