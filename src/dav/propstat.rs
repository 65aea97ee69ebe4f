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

use std::io::Cursor;

use xmltree::{Element, XMLNode};

const DAV: &str = "DAV:";

/// A property name: namespace (None for no namespace) and local name.
pub type PropName = (Option<String>, String);

/// The properties a PROPFIND body asks for by name; `None` for `allprop`,
/// `propname`, an empty body or one that does not parse (the handler
/// answers those itself).
pub fn requested_props(body: &[u8]) -> Option<Vec<PropName>> {
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
/// elements under the `D:` prefix. `None` when nothing needed to change or
/// the answer is not a multistatus.
pub fn complete_answer(requested: &[PropName], response: &[u8]) -> Option<Vec<u8>> {
    let mut root = Element::parse(Cursor::new(response)).ok()?;
    if !is_dav(&root, "multistatus") {
        return None;
    }
    let mut changed = false;
    for node in &mut root.children {
        if let Some(element) = node.as_mut_element() {
            changed |= use_dav_prefix(element);
        }
    }
    for node in &mut root.children {
        let Some(response) = node.as_mut_element().filter(|e| is_dav(e, "response")) else {
            continue;
        };
        let mut present: Vec<PropName> = Vec::new();
        for propstat in response.children.iter().filter_map(XMLNode::as_element) {
            if !is_dav(propstat, "propstat") {
                continue;
            }
            for prop in propstat.children.iter().filter_map(XMLNode::as_element) {
                if is_dav(prop, "prop") {
                    present.extend(
                        prop.children
                            .iter()
                            .filter_map(XMLNode::as_element)
                            .map(|e| {
                                (
                                    e.namespace.clone().filter(|ns| !ns.is_empty()),
                                    e.name.clone(),
                                )
                            }),
                    );
                }
            }
        }
        let missing: Vec<&PropName> = requested
            .iter()
            .filter(|name| !present.contains(name))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let mut prop = dav_element("prop");
        for (index, (namespace, name)) in missing.into_iter().enumerate() {
            let mut element = Element::new(name);
            if let Some(namespace) = namespace {
                if namespace == DAV {
                    element.prefix = Some("D".into());
                } else {
                    // A prefix of our own per property: no clash with the document's.
                    let prefix = format!("gd{index}");
                    let mut namespaces = xmltree::Namespace::empty();
                    namespaces.put(prefix.as_str(), namespace.as_str());
                    element.namespaces = Some(namespaces);
                    element.prefix = Some(prefix);
                }
                element.namespace = Some(namespace.clone());
            }
            prop.children.push(XMLNode::Element(element));
        }
        let mut status = dav_element("status");
        status
            .children
            .push(XMLNode::Text("HTTP/1.1 404 Not Found".into()));
        let mut propstat = dav_element("propstat");
        propstat.children.push(XMLNode::Element(prop));
        propstat.children.push(XMLNode::Element(status));
        response.children.push(XMLNode::Element(propstat));
        changed = true;
    }
    if !changed {
        return None;
    }
    let mut out = Vec::with_capacity(response.len() + 256);
    root.write(&mut out).ok()?;
    Some(out)
}

/// Puts `element` and its descendants of the DAV: namespace under the `D:`
/// prefix (declared on the multistatus root). Returns whether anything changed.
fn use_dav_prefix(element: &mut Element) -> bool {
    let mut changed = false;
    if element.namespace.as_deref() == Some(DAV) && element.prefix.as_deref() != Some("D") {
        element.prefix = Some("D".into());
        changed = true;
    }
    if changed || element.namespace.as_deref() == Some(DAV) {
        // Drop a default-namespace declaration that only served the old spelling.
        if let Some(namespaces) = &mut element.namespaces {
            if namespaces.get("") == Some(DAV) {
                namespaces.0.remove("");
                changed = true;
            }
        }
    }
    for child in &mut element.children {
        if let Some(child) = child.as_mut_element() {
            changed |= use_dav_prefix(child);
        }
    }
    changed
}

fn dav_element(name: &str) -> Element {
    let mut element = Element::new(name);
    element.prefix = Some("D".into());
    element.namespace = Some(DAV.into());
    element
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
        assert_eq!(requested.len(), 5);
        assert_eq!(
            requested[3].0.as_deref(),
            Some("http://ucb.openoffice.org/dav/props/")
        );
        let answer = br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/d/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response><D:response><D:href>/d/x</D:href></D:response></D:multistatus>"#;
        let fixed = complete_answer(&requested, answer).expect("changed");
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
        assert!(complete_answer(&requested, &fixed).is_none());
    }

    #[test]
    fn dav_properties_use_the_d_prefix() {
        let requested = requested_props(REQUEST).expect("named properties");
        let answer = br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/docs/</D:href><D:propstat><D:prop><resourcetype xmlns="DAV:"><D:collection/></resourcetype><getcontenttype xmlns="DAV:">httpd/unix-directory</getcontenttype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let fixed = complete_answer(&requested, answer).expect("changed");
        let text = String::from_utf8(fixed).expect("utf-8");
        assert!(text.contains("<D:resourcetype><D:collection"), "{text}");
        assert!(
            text.contains("<D:getcontenttype>httpd/unix-directory</D:getcontenttype>"),
            "{text}"
        );
        assert!(!text.contains("xmlns=\"DAV:\""), "{text}");
    }

    #[test]
    fn leaves_allprop_alone() {
        assert!(requested_props(b"").is_none());
        assert!(requested_props(br#"<propfind xmlns="DAV:"><allprop/></propfind>"#).is_none());
        assert!(requested_props(b"<not xml").is_none());
    }
}
