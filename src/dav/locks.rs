//! dav-server's [`DavLockSystem`] on the namespace's persistent lock table.
//!
//! The rules (what conflicts, what a submitted token must match) are the
//! namespace's, which are dav-server `MemLs`'s plus expiry; see
//! `namespace/locks.rs`. This module only translates, and decides:
//!
//! - **Paths.** dav-server hands a [`DavPath`]: percent-decoded bytes below
//!   the handler's prefix, with a trailing `/` when the URL had one (a
//!   collection). The namespace key is those bytes as UTF-8, trailing `/`
//!   dropped (`/a/` and `/a` are one lock path). Locks handed back carry the
//!   caller's prefix again, and a trailing `/` when their root is a
//!   collection: the request path's own form when the root is the requested
//!   path, always for a deep lock rooted at an ancestor (only a collection
//!   has something below it), never for a conflicting lock below the
//!   request path (unknown; dav-server only answers 423 with it).
//! - **Names that are not UTF-8** cannot exist in the namespace (GridFs
//!   refuses them too), so no lock can be taken on or below them: `lock`
//!   and `check` refuse (the client gets 423 Locked), `unlock` and
//!   `refresh` find nothing, `discover` finds nothing, `delete` has nothing
//!   to delete.
//! - **Timeouts.** Every lock expires: a request for an infinite lock, or
//!   none at all (dav-server passes `None` when the LOCK has no `Timeout`
//!   header), or for more than the maximum, gets the maximum
//!   (`lock_max_timeout_secs`, default one hour). RFC 4918 section 10.7
//!   lets the server choose the timeout it grants ("the server is not
//!   required to honor" the request) and the granted value is reported in
//!   the LOCK answer, so clients refresh in time. A crashed Office or Finder
//!   client thus blocks a file for at most that long. dav-server itself
//!   already caps a requested timeout at 600 s (exclusive) or 86400 s
//!   (shared) before it reaches us. An expired lock blocks no one; the
//!   namespace deletes such rows as it goes.
//! - **Database errors.** The trait has no error channel, so a failure is
//!   logged (`tracing::error!`) and the operation refused: `lock` and
//!   `check` answer with a placeholder conflicting lock (token
//!   [`NamespaceLockSystem::REFUSED_TOKEN`]; dav-server answers 423 and uses nothing of it),
//!   `unlock`, `refresh` and `delete` answer `Err(())`. `discover` can only
//!   answer an empty list (it feeds the `lockdiscovery` property). Refusing
//!   a modification because the lock table cannot be read is the safe side:
//!   nothing is written under someone else's lock.
//! - **Owner.** The `DAV:owner` element is stored as XML text and parsed
//!   back. dav-server renames its prefix to `D` without declaring it, so the
//!   stored copy declares `D` itself. An owner that fails to serialize or
//!   parse is logged and dropped (it is informational); the lock stands.

use std::time::Duration;

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use xmltree::{Element, EmitterConfig};

use crate::namespace::{Lock, Namespace, NamespaceError, NsPath};

/// A [`DavLockSystem`] keeping its locks in the namespace database, so they
/// survive a restart and expire on time. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NamespaceLockSystem {
    ns: Namespace,
    max_timeout: Duration,
}

/// A request path in both forms.
struct Target {
    /// The namespace's canonical form.
    path: NsPath,
    /// The handler's (percent-decoded) prefix, to put back on answers.
    prefix: String,
    /// The URL ended in `/`.
    collection: bool,
}

impl NamespaceLockSystem {
    /// The default cap on a lock's timeout: one hour.
    pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(3600);

    /// Token of the placeholder lock returned when a lock or check is
    /// refused for a reason other than a real lock (database failure, a
    /// path that cannot be stored).
    pub const REFUSED_TOKEN: &'static str = "urn:griddav:lock-refused";

    /// A lock system on `ns` granting timeouts of at most `max_timeout`
    /// (at least one second).
    pub fn new(ns: Namespace, max_timeout: Duration) -> Self {
        Self {
            ns,
            max_timeout: max_timeout.max(Duration::from_secs(1)),
        }
    }

    /// The longest timeout this lock system grants.
    pub fn max_timeout(&self) -> Duration {
        self.max_timeout
    }

    /// The timeout granted for a request of `asked` (`None`: infinite).
    fn grant(&self, asked: Option<Duration>) -> Duration {
        asked.map_or(self.max_timeout, |d| d.min(self.max_timeout))
    }

    /// Converts a lock row for an answer to a request on `t`.
    fn to_dav(&self, lock: Lock, t: &Target, request: &DavPath) -> DavLock {
        let owner = lock.owner.as_deref().and_then(|xml| {
            owner_from_xml(xml)
                .map_err(|e| tracing::warn!(token = %lock.token, "dropping an unreadable lock owner: {e}"))
                .ok()
        });
        DavLock {
            path: Box::new(lock_root(&lock.path, t, request)),
            token: lock.token,
            principal: lock.principal,
            owner: owner.map(Box::new),
            timeout_at: lock.timeout_at,
            timeout: lock.timeout,
            shared: lock.shared,
            deep: lock.deep,
        }
    }
}

/// Parses a request path; `None` when it has a name that is not UTF-8 (or
/// is otherwise not a namespace path).
fn target(path: &DavPath) -> Option<Target> {
    let text = super::fs::ns_path(path).ok()?;
    let ns_path = NsPath::parse(&text).ok()?;
    Some(Target {
        path: ns_path,
        prefix: path.prefix().to_owned(),
        collection: path.is_collection(),
    })
}

/// The placeholder conflicting lock of a refusal.
fn refusal(path: &DavPath) -> DavLock {
    DavLock {
        token: NamespaceLockSystem::REFUSED_TOKEN.to_owned(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

/// The [`DavPath`] of a lock root `root` (canonical), with the request's
/// prefix.
fn lock_root(root: &str, t: &Target, request: &DavPath) -> DavPath {
    let collection = match NsPath::parse(root) {
        Ok(r) if r == t.path => t.collection,
        // Something is below it: a collection.
        Ok(r) if r.is_ancestor_of(&t.path) => true,
        // A lock below the request (a conflict of a deep request): its
        // kind is not known here; only the handler's 423 uses it.
        _ => false,
    };
    let mut url = encode(&t.prefix);
    url.push_str(&encode(root));
    if collection && !url.ends_with('/') {
        url.push('/');
    }
    let built = DavPath::new(&url).and_then(|mut p| {
        p.set_prefix(&t.prefix)?;
        Ok(p)
    });
    built.unwrap_or_else(|e| {
        // Cannot happen for a path that came from a DavPath; answer with
        // the request path rather than fail the request.
        tracing::warn!(%root, "cannot rebuild a lock root as a DavPath: {e}");
        request.clone()
    })
}

/// Everything but unreserved characters and `/` is percent-encoded.
const PATH_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

fn encode(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH_ENCODE).to_string()
}

/// The owner element as stored: standalone XML with its prefix declared.
fn owner_to_xml(owner: &Element) -> Result<Vec<u8>, xmltree::Error> {
    let mut e = owner.clone();
    if let (Some(prefix), Some(ns)) = (&e.prefix, &e.namespace) {
        let mut map = e
            .namespaces
            .take()
            .unwrap_or_else(xmltree::Namespace::empty);
        if map.get(prefix) != Some(ns.as_str()) {
            map.force_put(prefix.clone(), ns.clone());
        }
        e.namespaces = Some(map);
    }
    let mut out = Vec::new();
    e.write_with_config(
        &mut out,
        EmitterConfig::new()
            .write_document_declaration(false)
            .perform_indent(false),
    )?;
    Ok(out)
}

/// Inverse of [`owner_to_xml`] (parsed as dav-server parses a LOCK body).
fn owner_from_xml(xml: &[u8]) -> Result<Element, xmltree::ParseError> {
    Element::parse(xml)
}

impl NamespaceLockSystem {
    /// Whether one of `tokens` is a current lock token of the resource
    /// (RFC 4918 section 10.4.2): a lock on it, or a deep lock on an
    /// ancestor. dav-server evaluates each state token of an `If:` header
    /// with `check(path, None, ignore_principal: true, ..)`, the only
    /// caller that ignores the principal, and counts `Ok` as a match. As
    /// a write check that is `Ok` on an unlocked resource, so
    /// `(<urn:uuid:unknown>)` would match and `(Not <urn:uuid:unknown>)`
    /// would not: the wrong way round. Answered here from the locks themselves.
    async fn state_token_matches(
        &self,
        t: &Target,
        request: &DavPath,
        tokens: &[String],
    ) -> Result<(), DavLock> {
        let locks = match self.ns.discover(t.path.as_str()).await {
            Ok(locks) => locks,
            Err(e) => {
                log_db("state token", request, &e);
                return Err(refusal(request));
            }
        };
        if locks.iter().any(|l| tokens.contains(&l.token)) {
            return Ok(());
        }
        Err(match locks.into_iter().next() {
            Some(lock) => self.to_dav(lock, t, request),
            None => refusal(request),
        })
    }
}

fn log_db(op: &'static str, path: &DavPath, e: &NamespaceError) {
    tracing::error!(?path, "lock system: {op} refused: {e}");
}

impl DavLockSystem for NamespaceLockSystem {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let request = path.clone();
        let principal = principal.map(str::to_owned);
        let owner = owner.and_then(|o| {
            owner_to_xml(o)
                .map_err(|e| tracing::warn!(?request, "lock owner not stored: {e}"))
                .ok()
        });
        let granted = self.grant(timeout);
        Box::pin(async move {
            let Some(t) = target(&request) else {
                tracing::debug!(?request, "lock refused: not a namespace path");
                return Err(refusal(&request));
            };
            let result = self
                .ns
                .lock(
                    t.path.as_str(),
                    principal.as_deref(),
                    owner.as_deref(),
                    Some(granted),
                    shared,
                    deep,
                )
                .await;
            match result {
                Ok(lock) => {
                    let mut dav = self.to_dav(lock, &t, &request);
                    // The root is the request path, in the request's form.
                    dav.path = Box::new(request);
                    Ok(dav)
                }
                Err(NamespaceError::Locked { lock, .. }) => Err(self.to_dav(*lock, &t, &request)),
                Err(e) => {
                    log_db("lock", &request, &e);
                    Err(refusal(&request))
                }
            }
        })
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let request = path.clone();
        let token = token.to_owned();
        Box::pin(async move {
            let t = target(&request).ok_or(())?;
            match self.ns.unlock(t.path.as_str(), &token).await {
                Ok(()) => Ok(()),
                Err(NamespaceError::LockNotFound { .. }) => Err(()),
                Err(e) => {
                    log_db("unlock", &request, &e);
                    Err(())
                }
            }
        })
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let request = path.clone();
        let token = token.to_owned();
        let granted = self.grant(timeout);
        Box::pin(async move {
            let t = target(&request).ok_or(())?;
            match self
                .ns
                .refresh(t.path.as_str(), &token, Some(granted))
                .await
            {
                Ok(lock) => Ok(self.to_dav(lock, &t, &request)),
                Err(NamespaceError::LockNotFound { .. }) => Err(()),
                Err(e) => {
                    log_db("refresh", &request, &e);
                    Err(())
                }
            }
        })
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let request = path.clone();
        let principal = principal.map(str::to_owned);
        let tokens = submitted_tokens.to_vec();
        Box::pin(async move {
            let Some(t) = target(&request) else {
                tracing::debug!(?request, "lock check refused: not a namespace path");
                return Err(refusal(&request));
            };
            if ignore_principal {
                return self.state_token_matches(&t, &request, &tokens).await;
            }
            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let result = self
                .ns
                .check(
                    t.path.as_str(),
                    principal.as_deref(),
                    ignore_principal,
                    deep,
                    &tokens,
                )
                .await;
            match result {
                Ok(()) => Ok(()),
                Err(NamespaceError::Locked { lock, .. }) => Err(self.to_dav(*lock, &t, &request)),
                Err(e) => {
                    log_db("check", &request, &e);
                    Err(refusal(&request))
                }
            }
        })
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let request = path.clone();
        Box::pin(async move {
            let Some(t) = target(&request) else {
                return Vec::new();
            };
            match self.ns.discover(t.path.as_str()).await {
                Ok(locks) => locks
                    .into_iter()
                    .map(|l| self.to_dav(l, &t, &request))
                    .collect(),
                Err(e) => {
                    log_db("discover", &request, &e);
                    Vec::new()
                }
            }
        })
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let request = path.clone();
        Box::pin(async move {
            let Some(t) = target(&request) else {
                return Ok(());
            };
            match self.ns.delete_locks(t.path.as_str()).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    log_db("delete", &request, &e);
                    Err(())
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::namespace::testutil::Fixture;
    use crate::namespace::Clock;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ls(f: &Fixture) -> NamespaceLockSystem {
        NamespaceLockSystem::new(f.ns.clone(), HOUR)
    }

    fn p(url: &str) -> DavPath {
        DavPath::new(url).unwrap()
    }

    /// A path as the handler makes it: below the prefix `/dav`.
    fn pp(url: &str) -> DavPath {
        let mut path = DavPath::new(&format!("/dav{url}")).unwrap();
        path.set_prefix("/dav").unwrap();
        path
    }

    fn toks(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The owner as dav-server hands it over: parsed from the LOCK body,
    /// prefix renamed to `D`.
    fn owner_from_lockinfo(body: &str) -> Element {
        let info = Element::parse(body.as_bytes()).unwrap();
        let mut owner = info.get_child("owner").unwrap().clone();
        owner.prefix = Some("D".to_owned());
        owner
    }

    /// `nodes` without the namespace maps of elements (the stored owner
    /// declares its `D:` prefix, which then is in scope of its children
    /// too); names, namespaces, attributes and text stay.
    fn same_ns(nodes: &[xmltree::XMLNode]) -> Vec<xmltree::XMLNode> {
        nodes
            .iter()
            .map(|n| match n {
                xmltree::XMLNode::Element(e) => {
                    let mut e = e.clone();
                    e.namespaces = None;
                    e.children = same_ns(&e.children);
                    xmltree::XMLNode::Element(e)
                }
                other => other.clone(),
            })
            .collect()
    }

    #[tokio::test]
    async fn exclusive_lock_blocks_others_and_passes_its_holder() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        let path = p("/f");
        let lock = ls
            .lock(
                &path,
                Some("alice"),
                None,
                Some(Duration::from_secs(60)),
                false,
                false,
            )
            .await
            .unwrap();
        assert!(lock.token.starts_with("urn:uuid:"));
        assert_eq!(lock.path.as_bytes(), b"/f");
        assert_eq!(lock.principal.as_deref(), Some("alice"));
        assert_eq!(lock.timeout, Some(Duration::from_secs(60)));
        assert!(!lock.shared && !lock.deep);

        // No token, a wrong token, the right token for someone else.
        let err = ls
            .check(&path, Some("alice"), false, false, &[])
            .await
            .unwrap_err();
        assert_eq!(err.token, lock.token);
        assert!(ls
            .check(&path, Some("alice"), false, false, &toks(&["urn:uuid:x"]))
            .await
            .is_err());
        let mine = toks(&[&lock.token]);
        assert!(ls
            .check(&path, Some("bob"), false, false, &mine)
            .await
            .is_err());
        assert!(ls
            .check(&path, Some("bob"), true, false, &mine)
            .await
            .is_ok());
        assert!(ls
            .check(&path, Some("alice"), false, false, &mine)
            .await
            .is_ok());
        // Other paths are free; a second lock of any kind is not.
        assert!(ls.check(&p("/g"), None, false, false, &[]).await.is_ok());
        // As an If: state token (ignore_principal), only a current lock
        // token of the resource matches: never on an unlocked one.
        assert!(ls.check(&p("/g"), None, true, false, &mine).await.is_err());
        assert!(ls
            .check(&p("/g"), None, true, false, &toks(&["urn:uuid:x"]))
            .await
            .is_err());
        assert!(ls
            .check(&path, None, true, false, &toks(&["urn:uuid:x"]))
            .await
            .is_err());
        for shared in [false, true] {
            let err = ls
                .lock(&path, Some("bob"), None, None, shared, false)
                .await
                .unwrap_err();
            assert_eq!(err.token, lock.token);
        }

        assert_eq!(ls.unlock(&path, "urn:uuid:x").await, Err(()));
        assert_eq!(ls.unlock(&p("/g"), &lock.token).await, Err(()));
        assert_eq!(ls.unlock(&path, &lock.token).await, Ok(()));
        assert_eq!(ls.unlock(&path, &lock.token).await, Err(()));
        assert!(ls.check(&path, None, false, false, &[]).await.is_ok());
        assert!(ls.discover(&path).await.is_empty());
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_any_one_of_them_suffices() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        let path = p("/f");
        let a = ls.lock(&path, None, None, None, true, false).await.unwrap();
        let b = ls.lock(&path, None, None, None, true, false).await.unwrap();
        assert!(a.shared && b.shared);
        assert!(ls
            .lock(&path, None, None, None, false, false)
            .await
            .is_err());
        assert!(ls.check(&path, None, false, false, &[]).await.is_err());
        assert!(ls
            .check(&path, None, false, false, &toks(&[&b.token]))
            .await
            .is_ok());
        let found: Vec<String> = ls
            .discover(&path)
            .await
            .into_iter()
            .map(|l| l.token)
            .collect();
        assert_eq!(found.len(), 2);
        assert!(found.contains(&a.token) && found.contains(&b.token));
    }

    #[tokio::test]
    async fn depth_and_collections_with_or_without_trailing_slash() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        f.ns.create_dir("/d").await.unwrap();
        let deep = ls
            .lock(&pp("/d/"), None, None, None, false, true)
            .await
            .unwrap();
        assert!(deep.deep);
        assert_eq!(deep.path.with_prefix().as_url_string(), "/dav/d/");
        // One lock path whatever the form of the URL.
        assert_eq!(f.ns.list_locks().await.unwrap()[0].path, "/d");
        assert!(ls
            .lock(&pp("/d"), None, None, None, true, false)
            .await
            .is_err());
        // Below a deep lock: blocked, and the lock reported is rooted at the
        // collection, with the prefix and a trailing slash.
        let err = ls
            .lock(&pp("/d/x"), None, None, None, false, false)
            .await
            .unwrap_err();
        assert_eq!(err.token, deep.token);
        let err = ls
            .check(&pp("/d/e/x"), None, false, false, &[])
            .await
            .unwrap_err();
        assert_eq!(err.path.with_prefix().as_url_string(), "/dav/d/");
        let found = ls.discover(&pp("/d/e/x")).await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path.with_prefix().as_url_string(), "/dav/d/");
        assert_eq!(found[0].path.as_bytes(), b"/d/");
        assert!(ls
            .check(&pp("/d/x"), None, false, false, &toks(&[&deep.token]))
            .await
            .is_ok());
        // Unlock and refresh from the other form of the path, or from below.
        ls.refresh(&pp("/d/x"), &deep.token, None).await.unwrap();
        ls.unlock(&pp("/d"), &deep.token).await.unwrap();

        // A shallow lock on a collection leaves its members free...
        let shallow = ls
            .lock(&pp("/d/"), None, None, None, false, false)
            .await
            .unwrap();
        assert!(ls.check(&pp("/d/x"), None, false, false, &[]).await.is_ok());
        assert!(ls.discover(&pp("/d/x")).await.is_empty());
        // ...but not a deep check of the collection itself.
        assert!(ls.check(&pp("/d"), None, false, true, &[]).await.is_err());
        ls.unlock(&pp("/d/"), &shallow.token).await.unwrap();

        // A lock below refuses a deep lock above, and a deep check above.
        let below = ls
            .lock(&pp("/d/e/x"), None, None, None, false, false)
            .await
            .unwrap();
        let err = ls
            .lock(&pp("/d/"), None, None, None, false, true)
            .await
            .unwrap_err();
        assert_eq!(err.token, below.token);
        assert_eq!(err.path.with_prefix().as_url_string(), "/dav/d/e/x");
        assert!(ls
            .lock(&pp("/d/"), None, None, None, false, false)
            .await
            .is_ok());
        let err = ls
            .check(&pp("/d/e/"), None, false, true, &[])
            .await
            .unwrap_err();
        assert_eq!(err.token, below.token);
    }

    #[tokio::test]
    async fn paths_are_percent_decoded_and_re_encoded() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        let lock = ls
            .lock(&pp("/a%20b/c%C3%BC%25"), None, None, None, false, false)
            .await
            .unwrap();
        assert_eq!(f.ns.list_locks().await.unwrap()[0].path, "/a b/cü%");
        let found = ls.discover(&pp("/a%20b/c%c3%bc%25")).await;
        assert_eq!(found[0].token, lock.token);
        assert_eq!(
            found[0].path.with_prefix().as_url_string(),
            "/dav/a%20b/c%C3%BC%25"
        );
        // The namespace's form reaches the same lock.
        assert!(f
            .ns
            .check("/a b/cü%", None, false, false, &[])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn names_that_are_not_utf8_are_refused() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        let bad = p("/x%FF/y");
        let err = ls
            .lock(&bad, None, None, None, false, false)
            .await
            .unwrap_err();
        assert_eq!(err.token, NamespaceLockSystem::REFUSED_TOKEN);
        let err = ls.check(&bad, None, false, false, &[]).await.unwrap_err();
        assert_eq!(err.token, NamespaceLockSystem::REFUSED_TOKEN);
        assert_eq!(ls.unlock(&bad, "urn:uuid:x").await, Err(()));
        assert!(ls.refresh(&bad, "urn:uuid:x", None).await.is_err());
        assert!(ls.discover(&bad).await.is_empty());
        assert_eq!(ls.delete(&bad).await, Ok(()));
        assert!(f.ns.list_locks().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn owners_round_trip() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        for (i, body) in [
            // neon (litmus): default namespace.
            "<lockinfo xmlns='DAV:'><lockscope><exclusive/></lockscope>\
             <locktype><write/></locktype><owner>litmus test suite</owner></lockinfo>",
            // Windows, Office: a D: prefix and an href.
            "<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\"><D:owner>\
             <D:href>mailto:alice@example.com</D:href></D:owner></D:lockinfo>",
            // Another prefix, a foreign namespace, text to escape.
            "<a:lockinfo xmlns:a=\"DAV:\" xmlns:x=\"urn:x\"><a:owner>\
             <x:who id=\"7\">A &amp; B &lt;c&gt;</x:who></a:owner></a:lockinfo>",
        ]
        .into_iter()
        .enumerate()
        {
            let owner = owner_from_lockinfo(body);
            let path = p(&format!("/o{i}"));
            let lock = ls
                .lock(&path, None, Some(&owner), None, false, false)
                .await
                .unwrap();
            let found = ls.discover(&path).await.pop().unwrap();
            assert_eq!(found.token, lock.token);
            for back in [lock.owner.unwrap(), found.owner.unwrap()] {
                assert_eq!(back.name, "owner");
                assert_eq!(back.namespace.as_deref(), Some("DAV:"));
                assert_eq!(back.prefix.as_deref(), Some("D"));
                assert_eq!(same_ns(&back.children), same_ns(&owner.children), "{body}");
                assert_eq!(back.attributes, owner.attributes);
            }
        }
        // No owner stays no owner.
        let lock = ls
            .lock(&p("/none"), None, None, None, false, false)
            .await
            .unwrap();
        assert!(lock.owner.is_none());
        assert!(ls.discover(&p("/none")).await[0].owner.is_none());
    }

    #[tokio::test]
    async fn timeouts_are_capped_and_expired_locks_block_no_one() {
        let f = Fixture::new().await;
        let ls = NamespaceLockSystem::new(f.ns.clone(), Duration::from_secs(100));
        assert_eq!(ls.max_timeout(), Duration::from_secs(100));
        // Infinite (or absent) and too long both get the maximum.
        let inf = ls
            .lock(&p("/inf"), None, None, None, false, false)
            .await
            .unwrap();
        let long = ls
            .lock(&p("/long"), None, None, Some(HOUR), true, true)
            .await
            .unwrap();
        let short = ls
            .lock(
                &p("/short"),
                None,
                None,
                Some(Duration::from_secs(30)),
                false,
                false,
            )
            .await
            .unwrap();
        assert_eq!(inf.timeout, Some(Duration::from_secs(100)));
        assert_eq!(long.timeout, Some(Duration::from_secs(100)));
        assert_eq!(short.timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            inf.timeout_at,
            Some(f.clock.now() + Duration::from_secs(100))
        );

        f.clock.advance(Duration::from_secs(10));
        let found = ls.discover(&p("/short")).await;
        assert_eq!(found[0].timeout, Some(Duration::from_secs(20)));

        f.clock.advance(Duration::from_secs(21));
        let free = p("/short");
        assert!(ls.check(&free, None, false, false, &[]).await.is_ok());
        assert!(ls.discover(&free).await.is_empty());
        assert_eq!(ls.unlock(&free, &short.token).await, Err(()));
        assert!(ls.refresh(&free, &short.token, None).await.is_err());
        assert!(ls.lock(&free, None, None, None, false, false).await.is_ok());
        assert!(ls.check(&p("/inf"), None, false, false, &[]).await.is_err());

        f.clock.advance(Duration::from_secs(70));
        for path in ["/inf", "/long", "/long/below"] {
            assert!(
                ls.check(&p(path), None, false, true, &[]).await.is_ok(),
                "{path}"
            );
            assert!(
                ls.lock(&p(path), None, None, None, false, false)
                    .await
                    .is_ok(),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn refresh_restarts_the_timeout_capped() {
        let f = Fixture::new().await;
        let ls = NamespaceLockSystem::new(f.ns.clone(), Duration::from_secs(100));
        let path = p("/f");
        let lock = ls
            .lock(
                &path,
                Some("alice"),
                None,
                Some(Duration::from_secs(60)),
                false,
                false,
            )
            .await
            .unwrap();
        f.clock.advance(Duration::from_secs(50));
        // As dav-server refreshes: check with the token, then refresh.
        let mine = toks(&[&lock.token]);
        ls.check(&path, Some("alice"), false, false, &mine)
            .await
            .unwrap();
        let again = ls
            .refresh(&path, &lock.token, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(again.token, lock.token);
        assert_eq!(again.timeout, Some(Duration::from_secs(60)));
        assert_eq!(again.principal.as_deref(), Some("alice"));
        f.clock.advance(Duration::from_secs(50));
        assert!(ls.check(&path, None, false, false, &[]).await.is_err());
        let capped = ls.refresh(&path, &lock.token, None).await.unwrap();
        assert_eq!(capped.timeout, Some(Duration::from_secs(100)));
        f.clock.advance(Duration::from_secs(99));
        assert!(ls.check(&path, None, false, false, &[]).await.is_err());
        f.clock.advance(Duration::from_secs(1));
        assert!(ls.check(&path, None, false, false, &[]).await.is_ok());
    }

    #[tokio::test]
    async fn delete_removes_locks_at_and_below_only() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        for path in ["/d/a", "/d/b/c", "/dx", "/d/"] {
            ls.lock(&p(path), None, None, None, false, false)
                .await
                .unwrap();
        }
        assert_eq!(ls.delete(&p("/d/")).await, Ok(()));
        let left: Vec<String> =
            f.ns.list_locks()
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.path)
                .collect();
        assert_eq!(left, ["/dx"]);
        assert_eq!(ls.delete(&p("/nothing")).await, Ok(()));
    }

    #[tokio::test]
    async fn locks_survive_a_restart() {
        let f = Fixture::new().await;
        let owner = owner_from_lockinfo(
            "<D:lockinfo xmlns:D=\"DAV:\"><D:owner><D:href>me</D:href></D:owner></D:lockinfo>",
        );
        let lock = ls(&f)
            .lock(&pp("/d/"), Some("alice"), Some(&owner), None, true, true)
            .await
            .unwrap();
        f.clock.advance(Duration::from_secs(60));
        let f = f.reopen().await;
        let ls = ls(&f);
        let err = ls
            .lock(&pp("/d/f"), None, None, None, false, false)
            .await
            .unwrap_err();
        assert_eq!(err.token, lock.token);
        let found = ls.discover(&pp("/d/f")).await;
        assert_eq!(found.len(), 1);
        let found = &found[0];
        assert_eq!(found.token, lock.token);
        assert_eq!(found.principal.as_deref(), Some("alice"));
        assert_eq!(
            same_ns(&found.owner.as_ref().unwrap().children),
            same_ns(&owner.children)
        );
        assert!(found.shared && found.deep);
        assert_eq!(found.timeout_at, lock.timeout_at);
        assert_eq!(found.timeout, Some(HOUR - Duration::from_secs(60)));
        assert_eq!(found.path.with_prefix().as_url_string(), "/dav/d/");
        ls.unlock(&pp("/d/"), &lock.token).await.unwrap();
        assert!(ls.discover(&pp("/d/f")).await.is_empty());
    }

    /// A broken database refuses: nothing may be written past a lock we
    /// cannot see.
    #[tokio::test]
    async fn database_errors_refuse() {
        let f = Fixture::new().await;
        let ls = ls(&f);
        let lock = ls
            .lock(&p("/f"), None, None, None, false, false)
            .await
            .unwrap();
        rusqlite::Connection::open(f.db_path())
            .unwrap()
            .execute_batch("DROP TABLE locks")
            .unwrap();
        let path = p("/f");
        let err = ls
            .lock(&p("/g"), None, None, None, false, false)
            .await
            .unwrap_err();
        assert_eq!(err.token, NamespaceLockSystem::REFUSED_TOKEN);
        let err = ls
            .check(&path, None, false, false, &toks(&[&lock.token]))
            .await
            .unwrap_err();
        assert_eq!(err.token, NamespaceLockSystem::REFUSED_TOKEN);
        assert_eq!(ls.unlock(&path, &lock.token).await, Err(()));
        assert!(ls.refresh(&path, &lock.token, None).await.is_err());
        assert!(ls.discover(&path).await.is_empty());
        assert_eq!(ls.delete(&path).await, Err(()));
    }

    #[test]
    fn encode_keeps_unreserved_and_slashes() {
        assert_eq!(encode("/a-b_c.d~e/F9"), "/a-b_c.d~e/F9");
        assert_eq!(encode("/a b/ü?#%"), "/a%20b/%C3%BC%3F%23%25");
    }
}

/// The lock system behind dav-server's own handler (with its in-memory
/// filesystem as a stand-in for GridFs): the requests clients send.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod handler_tests {
    use super::*;
    use crate::namespace::testutil::Fixture;
    use dav_server::body::Body;
    use dav_server::memfs::MemFs;
    use dav_server::DavHandler;
    use futures::StreamExt;

    struct Server {
        handler: DavHandler,
    }

    impl Server {
        fn new(f: &Fixture, fs: &MemFs) -> Self {
            let ls = NamespaceLockSystem::new(f.ns.clone(), Duration::from_secs(3600));
            let handler = DavHandler::builder()
                .filesystem(Box::new(fs.clone()))
                .locksystem(Box::new(ls))
                .strip_prefix("/dav")
                .build_handler();
            Server { handler }
        }

        async fn send(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> (u16, http::HeaderMap, String) {
            let mut req = http::Request::builder()
                .method(method)
                .uri(format!("/dav{path}"));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = self
                .handler
                .handle(req.body(Body::from(body.to_owned())).unwrap())
                .await;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let mut body = resp.into_body();
            let mut out = Vec::new();
            while let Some(chunk) = body.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            (status, headers, String::from_utf8(out).unwrap())
        }
    }

    const LOCKINFO: &str = "<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\">\
        <D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>\
        <D:owner><D:href>mailto:alice@example.com</D:href></D:owner></D:lockinfo>";

    #[tokio::test]
    async fn lock_put_unlock_restart_and_expiry_through_the_handler() {
        let f = Fixture::new().await;
        let fs = *MemFs::new();
        let server = Server::new(&f, &fs);

        // LOCK of a missing file: 201, the file exists, the granted timeout
        // is the requested one.
        let (status, headers, body) = server
            .send("LOCK", "/doc.txt", &[("Timeout", "Second-60")], LOCKINFO)
            .await;
        assert_eq!(status, 201, "{body}");
        let token = headers["Lock-Token"]
            .to_str()
            .unwrap()
            .trim_matches(['<', '>'])
            .to_owned();
        assert!(body.contains("Second-60"), "{body}");
        assert!(body.contains("mailto:alice@example.com"), "{body}");
        assert!(body.contains("/dav/doc.txt"), "{body}");

        // Writes without the token are refused; with it they pass.
        let (status, ..) = server.send("PUT", "/doc.txt", &[], "x").await;
        assert_eq!(status, 423);
        let if_token = format!("(<{token}>)");
        let (status, ..) = server
            .send("PUT", "/doc.txt", &[("If", &if_token)], "hello")
            .await;
        assert!(status == 201 || status == 204, "{status}");
        let (status, _, body) = server
            .send(
                "PROPFIND",
                "/doc.txt",
                &[("Depth", "0")],
                "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop>\
                 <D:lockdiscovery/></D:prop></D:propfind>",
            )
            .await;
        assert_eq!(status, 207);
        assert!(body.contains(&token), "{body}");
        assert!(body.contains("mailto:alice@example.com"), "{body}");

        // A restart keeps the lock.
        let f = f.reopen().await;
        let server = Server::new(&f, &fs);
        let (status, ..) = server.send("PUT", "/doc.txt", &[], "x").await;
        assert_eq!(status, 423);
        let (status, ..) = server.send("DELETE", "/doc.txt", &[], "").await;
        assert_eq!(status, 423);

        // Refresh (no body, the token in If:): the timeout restarts.
        f.clock.advance(Duration::from_secs(50));
        let (status, _, body) = server
            .send(
                "LOCK",
                "/doc.txt",
                &[("If", &if_token), ("Timeout", "Second-60")],
                "",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Second-60"), "{body}");
        f.clock.advance(Duration::from_secs(50));
        let (status, ..) = server.send("PUT", "/doc.txt", &[], "x").await;
        assert_eq!(status, 423);

        // Expired: anyone may write, and UNLOCK of the old token fails.
        f.clock.advance(Duration::from_secs(11));
        let (status, ..) = server.send("PUT", "/doc.txt", &[], "x").await;
        assert_eq!(status, 204);
        let lt = format!("<{token}>");
        let (status, ..) = server
            .send("UNLOCK", "/doc.txt", &[("Lock-Token", &lt)], "")
            .await;
        assert_eq!(status, 409);
    }

    #[tokio::test]
    async fn a_lock_without_timeout_gets_the_maximum_and_covers_a_collection() {
        let f = Fixture::new().await;
        let fs = *MemFs::new();
        let server = Server::new(&f, &fs);
        let (status, ..) = server.send("MKCOL", "/d/", &[], "").await;
        assert_eq!(status, 201);
        let (status, headers, body) = server.send("LOCK", "/d", &[], LOCKINFO).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Second-3600"), "{body}");
        assert!(body.contains("<D:depth>Infinity</D:depth>"), "{body}");
        let lt = headers["Lock-Token"].to_str().unwrap().to_owned();
        let (status, ..) = server.send("PUT", "/d/new", &[], "x").await;
        assert_eq!(status, 423);
        let (status, ..) = server.send("MKCOL", "/d/sub/", &[], "").await;
        assert_eq!(status, 423);
        // The lock root is the collection, as a collection URL.
        let (status, _, body) = server
            .send(
                "PROPFIND",
                "/d/",
                &[("Depth", "0")],
                "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop>\
                 <D:lockdiscovery/></D:prop></D:propfind>",
            )
            .await;
        assert_eq!(status, 207);
        assert!(
            body.contains("<D:lockroot><D:href>/dav/d/</D:href>"),
            "{body}"
        );
        let (status, ..) = server
            .send("UNLOCK", "/d/", &[("Lock-Token", &lt)], "")
            .await;
        assert_eq!(status, 204);
        let (status, ..) = server.send("PUT", "/d/new", &[], "x").await;
        assert_eq!(status, 201);
    }
}
