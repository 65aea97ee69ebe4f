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
