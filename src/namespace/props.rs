//! Dead properties: opaque values keyed by (node, XML namespace, name).
//!
//! They key on the node id, so they move with a rename, disappear with
//! their node (ON DELETE CASCADE) and are copied by `copy_file`. A property
//! without an XML namespace uses the empty string. The value is whatever
//! the DAV layer stores (typically the serialized XML element); it is not
//! interpreted here.

use rusqlite::{params, OptionalExtension};

use super::error::DbContext;
use super::tree::require;
use super::{Namespace, NamespaceError, NsPath};

/// The largest value of one dead property, in bytes (the serialized XML
/// element). A client's metadata, not content: Windows, Office and Finder
/// store a few hundred bytes each.
pub const MAX_PROP_VALUE: usize = 64 << 10;

/// The most bytes (names and values) of dead properties one node keeps.
/// Every PROPFIND that lists the node carries them, so a node must not be
/// able to grow without bound one PROPPATCH at a time.
pub const MAX_PROPS_PER_NODE: u64 = 1 << 20;

/// Past this many bytes of values, a page of
/// [`Namespace::get_named_props_of_children`] ends early: a page is held
/// in memory while its entries are answered.
pub const CHILD_PAGE_BYTES: usize = 4 << 20;

/// Named properties of a run of a folder's children, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildPropsPage {
    /// The name the page starts at (the first child may sort after it).
    pub from: String,
    /// The last child the page covers; `None` when it covers none.
    pub last: Option<String>,
    /// Whether the page reaches the folder's last child.
    pub complete: bool,
    /// The properties found, by child name; a covered child missing here
    /// has none of the names.
    pub props: std::collections::HashMap<String, Vec<Prop>>,
}

impl ChildPropsPage {
    /// Whether the page answers for the child `name`.
    pub fn covers(&self, name: &str) -> bool {
        name >= self.from.as_str()
            && (self.complete || self.last.as_deref().is_some_and(|last| name <= last))
    }
}

/// One dead property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    /// XML namespace URI; empty for none.
    pub namespace: String,
    /// Local name within `namespace`.
    pub name: String,
    /// The property element's content as the DAV layer serialized it.
    pub value: Vec<u8>,
}

/// One change of a PROPPATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropPatch {
    /// Create or replace.
    Set(Prop),
    /// Remove; removing a property that does not exist is not an error
    /// (RFC 4918 section 9.2).
    Remove {
        /// XML namespace URI; empty for none.
        namespace: String,
        /// Local name within `namespace`.
        name: String,
    },
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
        self.read_few("reading a property", move |tx, _| {
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
        // In place: at most MAX_PROPS_PER_NODE bytes, and an allprop
        // PROPFIND asks this for every entry it lists.
        self.read_few("listing properties", move |tx, _| {
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

    /// The properties of the node at `path` among `names` (namespace,
    /// name), in the order asked; the missing ones are left out. One
    /// transaction, one indexed lookup per name: what a PROPFIND naming
    /// its properties needs, without reading every value of the node.
    pub async fn get_named_props(
        &self,
        path: &str,
        names: std::sync::Arc<Vec<(String, String)>>,
    ) -> Result<Vec<Prop>, NamespaceError> {
        let path = NsPath::parse(path)?;
        self.read_few("reading properties", move |tx, _| {
            let node = require(tx, &path)?;
            let mut stmt = tx
                .prepare_cached(
                    "SELECT value FROM props WHERE node_id = ?1 AND namespace = ?2 AND name = ?3",
                )
                .ctx("reading properties")?;
            let mut found = Vec::new();
            for (namespace, name) in names.iter() {
                let value: Option<Vec<u8>> = stmt
                    .query_row(params![node.id, namespace, name], |r| r.get(0))
                    .optional()
                    .ctx("reading properties")?;
                if let Some(value) = value {
                    found.push(Prop {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        value,
                    });
                }
            }
            Ok(found)
        })
        .await
    }

    /// The properties among `names` of the children of the directory at
    /// `dir`, in name order from the child named `from` on (inclusive):
    /// at most `limit` children, and no more once their values pass
    /// [`CHILD_PAGE_BYTES`]. One transaction for a page of a Depth: 1
    /// PROPFIND instead of one per entry.
    pub async fn get_named_props_of_children(
        &self,
        dir: &str,
        from: &str,
        limit: usize,
        names: std::sync::Arc<Vec<(String, String)>>,
    ) -> Result<ChildPropsPage, NamespaceError> {
        let dir = NsPath::parse(dir)?;
        let from = from.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("reading properties", false, move |tx, _| {
            let ctx = "reading properties of a folder's entries";
            let parent = require(tx, &dir)?;
            let mut children = tx
                .prepare_cached(
                    "SELECT id, name FROM nodes WHERE parent = ?1 AND name >= ?2 \
                     ORDER BY name LIMIT ?3",
                )
                .ctx(ctx)?;
            let children: Vec<(i64, String)> = children
                .query_map(params![parent.id, from, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .and_then(|rows| rows.collect())
                .ctx(ctx)?;
            let complete = i64::try_from(children.len()).unwrap_or(i64::MAX) < limit;
            let mut lookup = tx
                .prepare_cached(
                    "SELECT value FROM props WHERE node_id = ?1 AND namespace = ?2 AND name = ?3",
                )
                .ctx(ctx)?;
            let mut page = ChildPropsPage {
                from: from.clone(),
                last: None,
                complete,
                props: std::collections::HashMap::new(),
            };
            let mut bytes = 0usize;
            for (id, child) in children {
                let mut found = Vec::new();
                for (namespace, name) in names.iter() {
                    let value: Option<Vec<u8>> = lookup
                        .query_row(params![id, namespace, name], |r| r.get(0))
                        .optional()
                        .ctx(ctx)?;
                    if let Some(value) = value {
                        bytes = bytes.saturating_add(value.len());
                        found.push(Prop {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            value,
                        });
                    }
                }
                if !found.is_empty() {
                    page.props.insert(child.clone(), found);
                }
                page.last = Some(child);
                if bytes > CHILD_PAGE_BYTES {
                    page.complete = false;
                    break;
                }
            }
            Ok(page)
        })
        .await
    }

    /// Applies `patches` in order, all or none (one transaction). Refuses
    /// a value over [`MAX_PROP_VALUE`] and a result over
    /// [`MAX_PROPS_PER_NODE`] for the node, changing nothing.
    pub async fn patch_props(
        &self,
        path: &str,
        patches: Vec<PropPatch>,
    ) -> Result<(), NamespaceError> {
        let path = NsPath::parse(path)?;
        for patch in &patches {
            if let PropPatch::Set(p) = patch {
                if p.value.len() > MAX_PROP_VALUE {
                    return Err(NamespaceError::PropertyTooLarge {
                        path: path.to_string(),
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        size: p.value.len(),
                        limit: MAX_PROP_VALUE,
                    });
                }
            }
        }
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
            let total: i64 = tx
                .prepare_cached(
                    "SELECT COALESCE(SUM(length(CAST(namespace AS BLOB)) + length(CAST(name AS BLOB))
                                         + length(value)), 0)
                     FROM props WHERE node_id = ?1",
                )
                .and_then(|mut s| s.query_row([node.id], |r| r.get(0)))
                .ctx("patching properties")?;
            let total = u64::try_from(total).unwrap_or(u64::MAX);
            // Only a patch that grows the node past the budget is refused:
            // one that shrinks a node already over it (written before the
            // limit existed) still goes through.
            if total > MAX_PROPS_PER_NODE && patches.iter().any(|p| matches!(p, PropPatch::Set(_))) {
                // Returning the error drops the transaction: nothing changed.
                return Err(NamespaceError::PropertiesFull {
                    path: path.to_string(),
                    total,
                    limit: MAX_PROPS_PER_NODE,
                });
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

    #[tokio::test]
    async fn limits_refuse_without_changing_anything() {
        let f = Fixture::new().await;
        let ns = &f.ns;
        f.put("/f", "cap", 1).await;
        let big = "v".repeat(MAX_PROP_VALUE + 1);
        assert!(matches!(
            ns.patch_props("/f", vec![set("", "small", "1"), set("urn:a", "big", &big)])
                .await,
            Err(NamespaceError::PropertyTooLarge { ref name, .. }) if name == "big"
        ));
        assert!(ns.list_props("/f").await.unwrap().is_empty());

        // Fill the node's budget with values at the largest size allowed.
        let value = "v".repeat(MAX_PROP_VALUE);
        let fit = usize::try_from(MAX_PROPS_PER_NODE).unwrap() / (MAX_PROP_VALUE + 8);
        for i in 0..fit {
            ns.patch_props("/f", vec![set("", &format!("p{i}"), &value)])
                .await
                .unwrap();
        }
        let full = ns
            .patch_props(
                "/f",
                vec![
                    PropPatch::Remove {
                        namespace: String::new(),
                        name: "p0".into(),
                    },
                    set("", "one-more", &value),
                    set("", "two-more", &value),
                ],
            )
            .await;
        assert!(
            matches!(full, Err(NamespaceError::PropertiesFull { total, limit, .. }) if total > limit),
            "{full:?}"
        );
        assert_eq!(ns.list_props("/f").await.unwrap().len(), fit, "rolled back");
        // Shrinking is always allowed.
        ns.patch_props(
            "/f",
            vec![PropPatch::Remove {
                namespace: String::new(),
                name: "p0".into(),
            }],
        )
        .await
        .unwrap();

        // Named lookups: in the order asked, missing ones left out.
        let names = std::sync::Arc::new(vec![
            (String::new(), "p2".to_owned()),
            ("urn:none".to_owned(), "p1".to_owned()),
            (String::new(), "p1".to_owned()),
        ]);
        let found = ns.get_named_props("/f", names).await.unwrap();
        assert_eq!(
            found.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["p2", "p1"]
        );
    }
}
