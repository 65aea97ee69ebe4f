//! Completing dav-server's PROPFIND answers.
//!
//! dav-server leaves out every requested property it cannot find, instead
//! of reporting it in a `propstat` with `404 Not Found` (RFC 4918 section
//! 9.1). LibreOffice asks folders for its own properties before it saves,
//! and abandons the save when they are missing from the answer altogether.
//! So for a PROPFIND that names its properties, the server adds the missing
//! ones to each `response` as 404s.
//!
//! dav-server also echoes each found property element as the request spelled
//! it, so `<resourcetype xmlns="DAV:"/>` in a request comes back with a
//! default namespace declaration of its own. LibreOffice's parser only knows
//! prefixed declarations and then misses `resourcetype`: DAV: elements are
//! rewritten to the `D:` prefix the rest of the answer uses.

use std::collections::HashSet;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use http::{Response, StatusCode};
use xmltree::{Element, XMLNode};

use crate::namespace::{ChildPropsPage, Prop};

const DAV: &str = "DAV:";

/// The most properties one PROPFIND may name. The handler looks each one
/// up for every entry it lists, so this bounds the work per entry; real
/// clients name a dozen or two (Finder 12, Windows 9, LibreOffice 2).
pub const MAX_NAMED_PROPS: usize = 256;

/// A property name: namespace (None for no namespace) and local name.
pub type PropName = (Option<String>, String);

/// The properties a PROPFIND names, as [`requested_props`] found them.
pub struct Requested {
    /// Each distinct name once, in the request's order.
    names: Vec<PropName>,
    /// How many property elements the request holds, repeats included:
    /// what the handler will work through for each entry.
    named: usize,
    scope: Arc<NamedPropfind>,
}

impl Requested {
    /// The property names asked for, in request order.
    pub fn names(&self) -> &[PropName] {
        &self.names
    }
}

/// The properties a PROPFIND body asks for by name; `None` for `allprop`,
/// `propname`, an empty body or one that does not parse (the handler
/// answers those itself).
pub fn requested_props(body: &[u8]) -> Option<Requested> {
    let elements = named_elements(body)?;
    let named = elements.len();
    let mut seen = HashSet::with_capacity(named);
    let names: Vec<PropName> = elements
        .into_iter()
        .filter(|name| seen.insert(name.clone()))
        .collect();
    let dead = names
        .iter()
        .filter(|(namespace, name)| may_be_dead(namespace.as_deref(), name))
        .map(|(namespace, name)| (namespace.clone().unwrap_or_default(), name.clone()))
        .collect();
    Some(Requested {
        names,
        named,
        scope: Arc::new(NamedPropfind {
            dead: Arc::new(dead),
            entry: Mutex::new(None),
            page: Mutex::new(None),
        }),
    })
}

/// The answer to a PROPFIND naming more than [`MAX_NAMED_PROPS`]
/// properties: 403 with a body saying why, before any work is done.
pub fn refusal(requested: Option<&Requested>) -> Option<Response<dav_server::body::Body>> {
    let named = requested?.named;
    if named <= MAX_NAMED_PROPS {
        return None;
    }
    tracing::debug!(named, "PROPFIND refused: too many named properties");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <D:error xmlns:D=\"DAV:\" xmlns:G=\"{GRIDDAV_NS}\">\
         <G:too-many-properties/>\
         <G:message>The PROPFIND names {named} properties; at most {MAX_NAMED_PROPS} are answered. \
         Ask for fewer, or use allprop.</G:message></D:error>\n"
    );
    let mut response = Response::new(dav_server::body::Body::from(body));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    Some(response)
}

/// The XML namespace of griddav's own error elements.
const GRIDDAV_NS: &str = "https://griddav.invalid/ns";

/// Runs `work` (the handler's PROPFIND, or the reading of its answer) so
/// that [`GridFs`](super::GridFs) knows which properties were named: it
/// then looks up only those, once per entry, instead of one query per
/// property and entry and then every property of the entry again.
pub async fn scoped<F: Future>(requested: Option<&Requested>, work: F) -> F::Output {
    match requested {
        Some(requested) => NAMED.scope(Arc::clone(&requested.scope), work).await,
        None => work.await,
    }
}

/// A PROPFIND answer's body as it streams to the client: completed one
/// `response` at a time ([`Completion`]), and polled with the named
/// properties in scope, since dav-server looks the properties up while
/// its body is read (see [`scoped`]).
pub fn streamed(
    requested: Option<Requested>,
    body: dav_server::body::Body,
) -> super::xmlstream::Rewritten<ScopedBody<dav_server::body::Body>, Completion> {
    let completion = Completion::new(requested.as_ref());
    let scoped = ScopedBody {
        scope: requested.map(|r| r.scope),
        inner: body,
    };
    super::xmlstream::Rewritten::new(scoped, completion)
}

/// A body polled inside a named PROPFIND's scope.
pub struct ScopedBody<B> {
    scope: Option<Arc<NamedPropfind>>,
    inner: B,
}

impl<B: http_body::Body + Unpin> http_body::Body for ScopedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let inner = std::pin::Pin::new(&mut this.inner);
        match &this.scope {
            Some(scope) => NAMED.sync_scope(Arc::clone(scope), || inner.poll_frame(cx)),
            None => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

tokio::task_local! {
    static NAMED: Arc<NamedPropfind>;
}

/// The named PROPFIND being answered on this task, if any.
pub(crate) fn named_propfind() -> Option<Arc<NamedPropfind>> {
    NAMED.try_with(Arc::clone).ok()
}

/// What a named PROPFIND needs from the dead properties, and those of the
/// entry being answered.
///
/// dav-server 0.11 answers each entry by asking `get_prop` for every named
/// property it does not compute itself, then adds whatever `get_props`
/// returns (meant for allprop, but it does so for every PROPFIND). So the
/// entry's named dead properties are loaded in one lookup, `get_prop`
/// hands them out, and `get_props` returns only those not handed out yet:
/// each appears once, and properties that were not named never do.
pub(crate) struct NamedPropfind {
    /// The named properties that can be dead: (namespace or "", name).
    dead: Arc<Vec<(String, String)>>,
    entry: Mutex<Option<EntryProps>>,
    /// Those of a run of one folder's entries, loaded together: a Depth: 1
    /// listing answers its entries in name order.
    page: Mutex<Option<(String, ChildPropsPage)>>,
}

struct EntryProps {
    path: String,
    /// Found properties, each with whether it was handed out already.
    props: Vec<(Prop, bool)>,
}

impl NamedPropfind {
    /// The names to look up for each entry.
    pub(crate) fn dead_names(&self) -> Arc<Vec<(String, String)>> {
        Arc::clone(&self.dead)
    }

    /// Whether the properties of `path` are the ones loaded.
    pub(crate) fn has(&self, path: &str) -> bool {
        self.lock().as_ref().is_some_and(|e| e.path == path)
    }

    /// Keeps `page` as that of the entries of the folder `dir`, replacing
    /// the previous page.
    pub(crate) fn keep_page(&self, dir: &str, page: ChildPropsPage) {
        *self.page.lock().unwrap_or_else(|p| p.into_inner()) = Some((dir.to_owned(), page));
    }

    /// The properties of the entry `name` of the folder `dir`, when the
    /// page kept covers it.
    pub(crate) fn take_from_page(&self, dir: &str, name: &str) -> Option<Vec<Prop>> {
        let mut page = self.page.lock().unwrap_or_else(|p| p.into_inner());
        let (page_dir, page) = page.as_mut()?;
        if page_dir != dir || !page.covers(name) {
            return None;
        }
        Some(page.props.remove(name).unwrap_or_default())
    }

    /// Keeps `props` as those of `path`, replacing the previous entry's.
    pub(crate) fn load(&self, path: &str, props: Vec<Prop>) {
        *self.lock() = Some(EntryProps {
            path: path.to_owned(),
            props: props.into_iter().map(|p| (p, false)).collect(),
        });
    }

    /// The value of one loaded property of `path`, marked handed out.
    pub(crate) fn take(&self, path: &str, namespace: &str, name: &str) -> Option<Vec<u8>> {
        let mut entry = self.lock();
        let entry = entry.as_mut().filter(|e| e.path == path)?;
        let (prop, handed) = entry
            .props
            .iter_mut()
            .find(|(p, _)| p.namespace == namespace && p.name == name)?;
        *handed = true;
        Some(prop.value.clone())
    }

    /// The loaded properties of `path` not handed out yet, marked handed out.
    pub(crate) fn rest(&self, path: &str) -> Vec<Prop> {
        let mut entry = self.lock();
        let Some(entry) = entry.as_mut().filter(|e| e.path == path) else {
            return Vec::new();
        };
        entry
            .props
            .iter_mut()
            .filter(|(_, handed)| !*handed)
            .map(|(p, handed)| {
                *handed = true;
                p.clone()
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<EntryProps>> {
        // Only plain data behind it: a panic elsewhere leaves it usable.
        self.entry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether dav-server can ask the file system for this property (it
/// computes the DAV:, Apache and Microsoft ones itself, except these two).
fn may_be_dead(namespace: Option<&str>, name: &str) -> bool {
    match namespace {
        Some(DAV) => matches!(name, "displayname" | "getcontentlanguage"),
        Some("http://apache.org/dav/props/") | Some("urn:schemas-microsoft-com:") => false,
        _ => true,
    }
}

/// Every property element of the body's `prop`, repeats included.
fn named_elements(body: &[u8]) -> Option<Vec<PropName>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let root = Element::parse(Cursor::new(body)).ok()?;
    if !is_dav(&root, "propfind") {
        return None;
    }
    let prop = root
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .find(|e| is_dav(e, "prop"))?;
    let names: Vec<PropName> = prop
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .map(|e| {
            (
                e.namespace.clone().filter(|ns| !ns.is_empty()),
                e.name.clone(),
            )
        })
        .collect();
    (!names.is_empty()).then_some(names)
}

fn is_dav(element: &Element, name: &str) -> bool {
    element.name == name && element.namespace.as_deref() == Some(DAV)
}

/// The multistatus answer with a 404 `propstat` for every requested
/// property that no `propstat` of its `response` mentions, and with DAV:
/// elements under the `D:` prefix. `None` when nothing needed to change.
/// allprop and propname answers (`requested` is `None`) only get the D:
/// prefix and quoted entity tags. The whole-answer form of [`Completion`].
pub fn complete_answer(requested: Option<&Requested>, response: &[u8]) -> Option<Vec<u8>> {
    let mut splitter = super::xmlstream::Splitter::new(Completion::new(requested));
    let mut out = splitter.push(response);
    out.extend(splitter.finish());
    (out != response).then_some(out)
}

/// Completes a multistatus answer one `response` at a time, as it streams
/// ([`super::xmlstream`]): see [`complete_answer`] for what changes.
pub struct Completion {
    requested: Arc<Vec<PropName>>,
}

impl Completion {
    /// A completion for the request's properties; `None` for an `allprop` or
    /// a request with no body.
    pub fn new(requested: Option<&Requested>) -> Completion {
        Completion {
            requested: Arc::new(requested.map_or_else(Vec::new, |r| r.names.clone())),
        }
    }
}

impl super::xmlstream::Rewrite for Completion {
    fn child(&mut self, root_open: &[u8], child: &[u8]) -> Option<Vec<u8>> {
        super::complete::complete_response(&self.requested, root_open, child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = br#"<?xml version="1.0" encoding="utf-8"?>
<propfind xmlns="DAV:"><prop><resourcetype/><getcontenttype/><supportedlock/>
<IsReadOnly xmlns="http://ucb.openoffice.org/dav/props/"/><plain/></prop></propfind>"#;

    #[test]
    fn reports_missing_properties_as_404() {
        let requested = requested_props(REQUEST).expect("named properties");
        assert_eq!(requested.names().len(), 5);
        assert_eq!(
            requested.names()[3].0.as_deref(),
            Some("http://ucb.openoffice.org/dav/props/")
        );
        let answer = br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/d/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response><D:response><D:href>/d/x</D:href></D:response></D:multistatus>"#;
        let fixed = complete_answer(Some(&requested), answer).expect("changed");
        let text = String::from_utf8(fixed.clone()).expect("utf-8");
        assert_eq!(text.matches("HTTP/1.1 404 Not Found").count(), 2, "{text}");
        assert!(
            text.contains("http://ucb.openoffice.org/dav/props/"),
            "{text}"
        );
        // The result parses and every response now names all five properties.
        let root = Element::parse(Cursor::new(&fixed[..])).expect("parses");
        for response in root.children.iter().filter_map(XMLNode::as_element) {
            let names: usize = response
                .children
                .iter()
                .filter_map(XMLNode::as_element)
                .filter(|e| e.name == "propstat")
                .filter_map(|ps| ps.get_child("prop"))
                .map(|p| p.children.iter().filter_map(XMLNode::as_element).count())
                .sum();
            assert_eq!(names, 5, "{text}");
        }
        assert!(complete_answer(Some(&requested), &fixed).is_none());
    }

    #[test]
    fn dav_properties_use_the_d_prefix() {
        let requested = requested_props(REQUEST).expect("named properties");
        let answer = br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/docs/</D:href><D:propstat><D:prop><resourcetype xmlns="DAV:"><D:collection/></resourcetype><getcontenttype xmlns="DAV:">httpd/unix-directory</getcontenttype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let fixed = complete_answer(Some(&requested), answer).expect("changed");
        let text = String::from_utf8(fixed).expect("utf-8");
        assert!(text.contains("<D:resourcetype><D:collection"), "{text}");
        assert!(
            text.contains("<D:getcontenttype>httpd/unix-directory</D:getcontenttype>"),
            "{text}"
        );
        assert!(!text.contains("xmlns=\"DAV:\""), "{text}");
    }

    #[test]
    fn entity_tags_get_their_quotes() {
        let answer = br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/f</D:href><D:propstat><D:prop><D:getetag>2b8e</D:getetag><x:n xmlns:x="urn:x"><D:getetag>dead</D:getetag></x:n></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response><D:response><D:href>/g</D:href><D:propstat><D:prop><D:getetag>"already"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let fixed = complete_answer(None, answer).expect("changed");
        let text = String::from_utf8(fixed.clone()).expect("utf-8");
        assert!(text.contains("<D:getetag>\"2b8e\"</D:getetag>"), "{text}");
        assert!(text.contains("<D:getetag>dead</D:getetag>"), "{text}");
        assert!(
            text.contains("<D:getetag>\"already\"</D:getetag>"),
            "{text}"
        );
        assert!(complete_answer(None, &fixed).is_none());
    }

    #[test]
    fn leaves_allprop_alone() {
        assert!(requested_props(b"").is_none());
        assert!(requested_props(br#"<propfind xmlns="DAV:"><allprop/></propfind>"#).is_none());
        assert!(requested_props(b"<not xml").is_none());
    }
}
