//! One multistatus `response`, completed in a single pass over its bytes.
//!
//! [`super::propstat`] says what a PROPFIND answer needs: a 404 `propstat`
//! for each named property a response leaves out, DAV: elements under the
//! `D:` prefix, and entity tags in quotes. Parsing each response into a
//! tree and writing it out again took three quarters of the time of a
//! large Depth: 1 listing, so the changes are made here on the bytes
//! dav-server wrote, which otherwise pass through as they are.
//!
//! Names are resolved exactly as XML namespaces define them, with the
//! declarations of the multistatus root and of every element on the way.
//! An element is renamed to `D:` only where `D` means DAV:, and a
//! default-namespace declaration is dropped only from an element written
//! with the prefix; an element whose meaning would change because of a
//! dropped declaration gets its namespace declared again. A response that
//! is not well-formed, or uses a prefix nobody declared, is left as it is.

use std::borrow::Cow;

use super::propstat::PropName;

const DAV: &[u8] = b"DAV:";

/// `child` (one child of the root whose start tag is `root_open`) with
/// what [`super::propstat`] requires; `None` when it needs no change, is
/// not well-formed, or the root is not a DAV: `multistatus`.
pub(super) fn complete_response(
    requested: &[PropName],
    root_open: &[u8],
    child: &[u8],
) -> Option<Vec<u8>> {
    let root = StartTag::parse(root_open, 0)?;
    if root.self_closing || root.end != root_open.len() {
        return None;
    }
    let mut scope = Scope::default();
    scope.declare(&root)?;
    if !(root.local == b"multistatus" && *scope.resolve(root.prefix)? == *DAV) {
        return None;
    }
    let root_default = scope.resolve(b"")?;
    Completer {
        requested,
        input: child,
        out: Vec::with_capacity(child.len() + 256),
        scope,
        open: Vec::new(),
        root_default,
        response: false,
        present: Vec::new(),
        etag: None,
        changed: false,
    }
    .run()
}

/// The namespace declarations in force, innermost last.
#[derive(Default)]
struct Scope<'a> {
    /// (prefix, namespace); the prefix is empty for the default namespace,
    /// and an empty namespace means none (`xmlns=""`).
    bindings: Vec<(&'a [u8], Cow<'a, [u8]>)>,
}

impl<'a> Scope<'a> {
    fn declare(&mut self, tag: &StartTag<'a>) -> Option<()> {
        for attr in &tag.attrs {
            if let Some(prefix) = attr.declares() {
                self.bindings.push((prefix, unescape(attr.value)?));
            }
        }
        Some(())
    }

    /// The namespace `prefix` stands for: empty for none; `None` when the
    /// prefix was never declared.
    fn resolve(&self, prefix: &[u8]) -> Option<Cow<'a, [u8]>> {
        match self.bindings.iter().rev().find(|(p, _)| *p == prefix) {
            Some((_, namespace)) => Some(namespace.clone()),
            None if prefix.is_empty() => Some(Cow::Borrowed(b"")),
            None => None,
        }
    }

    /// Whether `D:` stands for DAV: here.
    fn d_is_dav(&self) -> bool {
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| *p == b"D")
            .is_some_and(|(_, namespace)| **namespace == *DAV)
    }
}

/// An element of the response that is open at this point of the pass.
struct Open<'a> {
    /// The name as the input spells it, to match its end tag.
    qname: &'a [u8],
    /// Written as `D:local` rather than as the input spells it.
    as_dav_prefix: bool,
    local: &'a [u8],
    /// How many bindings were in force before this element's own.
    bindings_before: usize,
    /// The default namespace in force in the output inside this element.
    out_default: Cow<'a, [u8]>,
    /// What this element is on the way to a property: a DAV: `propstat`
    /// at depth 2, its `prop` at depth 3.
    role: Role,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Propstat,
    Prop,
    Other,
}

/// A `getetag` property being passed through: where its text starts in
/// the output, and whether its content is one run of text so far.
struct Etag {
    text_start: usize,
    plain: bool,
}

struct Completer<'r, 'a> {
    requested: &'r [PropName],
    input: &'a [u8],
    out: Vec<u8>,
    scope: Scope<'a>,
    open: Vec<Open<'a>>,
    root_default: Cow<'a, [u8]>,
    /// The child is a DAV: `response`.
    response: bool,
    /// The properties the response's propstats name: (namespace, name).
    present: Vec<(Cow<'a, [u8]>, &'a [u8])>,
    etag: Option<Etag>,
    changed: bool,
}

impl<'a> Completer<'_, 'a> {
    fn run(mut self) -> Option<Vec<u8>> {
        let input = self.input;
        let mut at = 0;
        let mut closed = false;
        while at < input.len() {
            if closed {
                // Only the one element makes a child.
                return None;
            }
            let lt = input[at..]
                .iter()
                .position(|b| *b == b'<')
                .map(|i| at + i)?;
            if lt > at {
                if self.open.is_empty() {
                    return None;
                }
                self.out.extend_from_slice(&input[at..lt]);
            }
            at = match input.get(lt + 1)? {
                b'/' => {
                    let end = self.end_tag(lt)?;
                    closed = self.open.is_empty();
                    end
                }
                b'!' | b'?' => {
                    let end = markup_end(input, lt)?;
                    if self.open.is_empty() {
                        return None;
                    }
                    if let Some(etag) = &mut self.etag {
                        etag.plain = false;
                    }
                    self.out.extend_from_slice(&input[lt..end]);
                    end
                }
                _ => {
                    let end = self.start_tag(lt)?;
                    closed = self.open.is_empty();
                    end
                }
            };
        }
        (closed && self.changed).then_some(self.out)
    }

    fn start_tag(&mut self, at: usize) -> Option<usize> {
        let tag = StartTag::parse(self.input, at)?;
        let depth = self.open.len() + 1;
        if let Some(etag) = &mut self.etag {
            etag.plain = false;
        }
        let bindings_before = self.scope.bindings.len();
        self.scope.declare(&tag)?;
        let namespace = self.scope.resolve(tag.prefix)?;
        let is_dav = *namespace == *DAV;
        let as_dav_prefix = is_dav && tag.prefix != b"D" && self.scope.d_is_dav();
        let written_with_d = is_dav && (tag.prefix == b"D" || as_dav_prefix);
        let parent_default = self
            .open
            .last()
            .map_or(&self.root_default, |open| &open.out_default)
            .clone();

        // The default declaration the output keeps, and the one it drops.
        let mut out_default = parent_default;
        let mut dropped = None;
        for attr in &tag.attrs {
            if attr.declares() == Some(b"") {
                let value = unescape(attr.value)?;
                if written_with_d && *value == *DAV {
                    dropped = Some((attr.start, attr.end));
                } else {
                    out_default = value;
                }
            }
        }
        // An unprefixed element must mean in the output what it meant in
        // the input, even where a declaration above it was dropped.
        let redeclare = !written_with_d && tag.prefix.is_empty() && *out_default != *namespace;
        if redeclare {
            out_default = namespace.clone();
        }

        let mut opens_etag = false;
        let role = match (depth, self.open.last().map(|o| o.role)) {
            (1, _) => {
                self.response = is_dav && tag.local == b"response";
                Role::Other
            }
            (2, _) if self.response && is_dav && tag.local == b"propstat" => Role::Propstat,
            (3, Some(Role::Propstat)) if is_dav && tag.local == b"prop" => Role::Prop,
            (4, Some(Role::Prop)) => {
                opens_etag = is_dav && tag.local == b"getetag" && !tag.self_closing;
                self.present.push((namespace.clone(), tag.local));
                Role::Other
            }
            _ => Role::Other,
        };

        let out = &mut self.out;
        out.push(b'<');
        if as_dav_prefix {
            out.extend_from_slice(b"D:");
            out.extend_from_slice(tag.local);
        } else {
            out.extend_from_slice(tag.qname);
        }
        if redeclare {
            out.extend_from_slice(b" xmlns=\"");
            escape_into(out, &namespace);
            out.push(b'"');
        }
        let rest = at + 1 + tag.qname.len()..tag.end;
        match dropped {
            Some((start, end)) => {
                out.extend_from_slice(&self.input[rest.start..start]);
                out.extend_from_slice(&self.input[end..rest.end]);
            }
            None => out.extend_from_slice(&self.input[rest]),
        }
        self.changed |= as_dav_prefix || redeclare || dropped.is_some();
        if opens_etag {
            self.etag = Some(Etag {
                text_start: out.len(),
                plain: true,
            });
        }

        if tag.self_closing {
            self.scope.bindings.truncate(bindings_before);
            if depth == 1 && self.response {
                // `<D:response/>`: open it to hold the missing properties.
                let missing = self.missing_propstat(&out_default);
                if !missing.is_empty() {
                    let cut = self.out.len() - tag_close_len(&self.input[..tag.end]);
                    self.out.truncate(cut);
                    self.out.push(b'>');
                    self.out.extend_from_slice(&missing);
                    self.write_end(as_dav_prefix, tag.local, tag.qname);
                    self.changed = true;
                }
            }
        } else {
            self.open.push(Open {
                qname: tag.qname,
                as_dav_prefix,
                local: tag.local,
                bindings_before,
                out_default,
                role,
            });
        }
        Some(tag.end)
    }

    fn end_tag(&mut self, at: usize) -> Option<usize> {
        let input = self.input;
        let close = input[at..]
            .iter()
            .position(|b| *b == b'>')
            .map(|i| at + i)?;
        let name = input[at + 2..close].trim_ascii_end();
        let open = self.open.pop()?;
        if name != open.qname {
            return None;
        }
        let depth = self.open.len() + 1;
        if depth == 4 {
            if let Some(etag) = self.etag.take() {
                let text = &self.out[etag.text_start..];
                if etag.plain && !text.is_empty() && !starts_quoted(text) {
                    self.out.insert(etag.text_start, b'"');
                    self.out.push(b'"');
                    self.changed = true;
                }
            }
        }
        if depth == 1 && self.response {
            let missing = self.missing_propstat(&open.out_default);
            if !missing.is_empty() {
                self.out.extend_from_slice(&missing);
                self.changed = true;
            }
        }
        self.write_end(open.as_dav_prefix, open.local, open.qname);
        self.scope.bindings.truncate(open.bindings_before);
        Some(close + 1)
    }

    fn write_end(&mut self, as_dav_prefix: bool, local: &[u8], qname: &[u8]) {
        self.out.extend_from_slice(b"</");
        if as_dav_prefix {
            self.out.extend_from_slice(b"D:");
            self.out.extend_from_slice(local);
        } else {
            self.out.extend_from_slice(qname);
        }
        self.out.push(b'>');
    }

    /// A `propstat` with a 404 for each requested property the response
    /// did not name; empty when it named them all. `inner_default` is the
    /// default namespace in force inside the response, in the output.
    fn missing_propstat(&self, inner_default: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let missing = self.requested.iter().filter(|(namespace, name)| {
            let namespace = namespace.as_deref().unwrap_or("").as_bytes();
            !self
                .present
                .iter()
                .any(|(n, l)| *l == name.as_bytes() && **n == *namespace)
        });
        for (index, (namespace, name)) in missing.enumerate() {
            if out.is_empty() {
                out.extend_from_slice(b"<D:propstat");
                if !self.scope.d_is_dav() {
                    out.extend_from_slice(b" xmlns:D=\"DAV:\"");
                }
                out.extend_from_slice(b"><D:prop>");
            }
            match namespace.as_deref() {
                Some("DAV:") => {
                    out.extend_from_slice(b"<D:");
                    out.extend_from_slice(name.as_bytes());
                }
                None | Some("") => {
                    out.push(b'<');
                    out.extend_from_slice(name.as_bytes());
                    if !inner_default.is_empty() {
                        out.extend_from_slice(b" xmlns=\"\"");
                    }
                }
                Some(namespace) => {
                    // A prefix of its own, declared on the element itself.
                    let prefix = format!("gd{index}");
                    out.push(b'<');
                    out.extend_from_slice(prefix.as_bytes());
                    out.push(b':');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b" xmlns:");
                    out.extend_from_slice(prefix.as_bytes());
                    out.extend_from_slice(b"=\"");
                    escape_into(&mut out, namespace.as_bytes());
                    out.push(b'"');
                }
            }
            out.extend_from_slice(b"/>");
        }
        if !out.is_empty() {
            out.extend_from_slice(
                b"</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>",
            );
        }
        out
    }
}

/// The length of a self-closing tag's `/>` and the blanks before it.
fn tag_close_len(tag: &[u8]) -> usize {
    let without = tag.strip_suffix(b"/>").unwrap_or(tag);
    tag.len() - without.trim_ascii_end().len()
}

/// Whether an entity tag's text, as written in XML, begins with a quote
/// (`"`, or `W/"` for a weak one).
fn starts_quoted(text: &[u8]) -> bool {
    let text = text.strip_prefix(b"W/").unwrap_or(text);
    [&b"\""[..], b"&quot;", b"&#34;", b"&#x22;", b"&#X22;"]
        .iter()
        .any(|quote| text.starts_with(quote))
}

/// One attribute of a start tag.
struct Attr<'a> {
    /// From the blank before the attribute to just past its value.
    start: usize,
    end: usize,
    name: &'a [u8],
    /// As written, between its quotes.
    value: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The prefix this attribute declares (empty for the default
    /// namespace), if it is a namespace declaration.
    fn declares(&self) -> Option<&'a [u8]> {
        if self.name == b"xmlns" {
            Some(b"")
        } else {
            self.name.strip_prefix(b"xmlns:")
        }
    }
}

/// A start tag, as written.
struct StartTag<'a> {
    qname: &'a [u8],
    prefix: &'a [u8],
    local: &'a [u8],
    attrs: Vec<Attr<'a>>,
    self_closing: bool,
    /// Just past its `>`.
    end: usize,
}

impl<'a> StartTag<'a> {
    /// The start tag whose `<` is at `at`; `None` when it is not one.
    fn parse(input: &'a [u8], at: usize) -> Option<StartTag<'a>> {
        if input.get(at) != Some(&b'<') {
            return None;
        }
        let mut i = at + 1;
        let qname = name_at(input, i)?;
        i += qname.len();
        let (prefix, local) = match qname.iter().position(|b| *b == b':') {
            Some(colon) => (&qname[..colon], &qname[colon + 1..]),
            None => (&b""[..], qname),
        };
        if local.is_empty() || local.contains(&b':') || prefix.starts_with(b"xml") {
            return None;
        }
        let mut attrs = Vec::new();
        loop {
            let blank_start = i;
            while input.get(i)?.is_ascii_whitespace() {
                i += 1;
            }
            match input.get(i)? {
                b'>' => {
                    return Some(StartTag {
                        qname,
                        prefix,
                        local,
                        attrs,
                        self_closing: false,
                        end: i + 1,
                    })
                }
                b'/' if input.get(i + 1) == Some(&b'>') => {
                    return Some(StartTag {
                        qname,
                        prefix,
                        local,
                        attrs,
                        self_closing: true,
                        end: i + 2,
                    })
                }
                _ if i == blank_start => return None,
                _ => {}
            }
            let name = name_at(input, i)?;
            i += name.len();
            while input.get(i)?.is_ascii_whitespace() {
                i += 1;
            }
            if *input.get(i)? != b'=' {
                return None;
            }
            i += 1;
            while input.get(i)?.is_ascii_whitespace() {
                i += 1;
            }
            let quote = *input.get(i)?;
            if quote != b'"' && quote != b'\'' {
                return None;
            }
            let value_start = i + 1;
            let value_len = input.get(value_start..)?.iter().position(|b| *b == quote)?;
            let value = &input[value_start..value_start + value_len];
            if value.contains(&b'<') {
                return None;
            }
            i = value_start + value_len + 1;
            attrs.push(Attr {
                start: blank_start,
                end: i,
                name,
                value,
            });
        }
    }
}

/// The XML name starting at `at`: up to a blank, `/`, `>` or `=`.
fn name_at(input: &[u8], at: usize) -> Option<&[u8]> {
    let rest = input.get(at..)?;
    let len = rest.iter().position(|b| {
        b.is_ascii_whitespace() || matches!(b, b'/' | b'>' | b'=' | b'<' | b'"' | b'\'')
    })?;
    (len > 0).then(|| &rest[..len])
}

/// Just past the comment, CDATA section or processing instruction whose
/// `<` is at `at`; `None` for a declaration, which has no place here.
fn markup_end(input: &[u8], at: usize) -> Option<usize> {
    let rest = &input[at..];
    let (skip, terminator): (usize, &[u8]) = if rest.starts_with(b"<!--") {
        (4, b"-->")
    } else if rest.starts_with(b"<![CDATA[") {
        (9, b"]]>")
    } else if rest.starts_with(b"<?") {
        (2, b"?>")
    } else {
        return None;
    };
    let found = rest[skip..]
        .windows(terminator.len())
        .position(|w| w == terminator)?;
    Some(at + skip + found + terminator.len())
}

/// An attribute value with its entity and character references replaced.
fn unescape(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(&b'&') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.iter().position(|b| *b == b'&') {
        out.extend_from_slice(&rest[..amp]);
        let semi = rest[amp..].iter().position(|b| *b == b';')? + amp;
        let entity = &rest[amp + 1..semi];
        let c = match entity {
            b"lt" => '<',
            b"gt" => '>',
            b"amp" => '&',
            b"quot" => '"',
            b"apos" => '\'',
            _ => {
                let digits = std::str::from_utf8(entity.strip_prefix(b"#")?).ok()?;
                let code = match digits.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => digits.parse().ok()?,
                };
                char::from_u32(code)?
            }
        };
        let mut utf8 = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        rest = &rest[semi + 1..];
    }
    out.extend_from_slice(rest);
    Some(Cow::Owned(out))
}

/// `value` written into a double-quoted attribute.
fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use std::io::Cursor;

    use xmltree::{Element, XMLNode};

    use super::*;

    const ROOT: &[u8] = br#"<D:multistatus xmlns:D="DAV:">"#;

    fn names(list: &[(&str, &str)]) -> Vec<PropName> {
        list.iter()
            .map(|(ns, name)| ((!ns.is_empty()).then(|| ns.to_string()), name.to_string()))
            .collect()
    }

    fn complete(requested: &[PropName], root: &[u8], child: &str) -> String {
        String::from_utf8(
            complete_response(requested, root, child.as_bytes())
                .unwrap_or_else(|| child.as_bytes().to_vec()),
        )
        .unwrap()
    }

    /// Every element of `child` under `root`, as (depth, namespace, name)
    /// in document order: what the XML means, whatever the prefixes.
    fn meaning(root: &[u8], child: &str) -> Vec<(usize, String, String)> {
        let name_end = root.iter().position(|b| *b == b' ').unwrap();
        let mut doc = root.to_vec();
        doc.extend_from_slice(child.as_bytes());
        doc.extend_from_slice(b"</");
        doc.extend_from_slice(&root[1..name_end]);
        doc.push(b'>');
        let root = Element::parse(Cursor::new(doc)).unwrap();
        let mut out = Vec::new();
        fn walk(e: &Element, depth: usize, out: &mut Vec<(usize, String, String)>) {
            out.push((
                depth,
                e.namespace.clone().unwrap_or_default(),
                e.name.clone(),
            ));
            for child in e.children.iter().filter_map(XMLNode::as_element) {
                walk(child, depth + 1, out);
            }
        }
        walk(&root, 0, &mut out);
        out
    }

    #[test]
    fn renames_dav_elements_without_changing_what_any_element_means() {
        let child = r#"<D:response><D:href>/a</D:href><D:propstat><D:prop><resourcetype xmlns="DAV:"><collection/><x:c xmlns:x="urn:x"><plain xmlns=""/></x:c></resourcetype><n:dead xmlns:n="urn:n" xmlns:D="urn:other"><getetag xmlns="DAV:">v</getetag><D:foo/></n:dead><a:getetag xmlns:a="DA&#86;:" note="a &gt; b/>">t</a:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#;
        let requested = names(&[("DAV:", "resourcetype")]);
        let out = complete(&requested, ROOT, child);
        assert_eq!(meaning(ROOT, child), meaning(ROOT, &out), "{out}");
        assert!(
            out.contains(r#"<D:resourcetype><D:collection></D:collection><x:c xmlns:x="urn:x"><plain xmlns=""/></x:c></D:resourcetype>"#)
                || out.contains(r#"<D:resourcetype><D:collection/><x:c xmlns:x="urn:x"><plain xmlns=""/></x:c></D:resourcetype>"#),
            "{out}"
        );
        // Where D: means something else, the DAV: element keeps its spelling.
        assert!(
            out.contains(r#"<getetag xmlns="DAV:">v</getetag><D:foo/>"#),
            "{out}"
        );
        // A DAV: element under another prefix is renamed, and its entity tag
        // quoted, while its attribute stays as written.
        assert!(
            out.contains(r#"<D:getetag xmlns:a="DA&#86;:" note="a &gt; b/>">"t"</D:getetag>"#),
            "{out}"
        );
    }

    #[test]
    fn an_element_that_relied_on_a_dropped_declaration_declares_its_namespace() {
        // `inner` is in DAV: through the default, but D: means another
        // namespace around it, so it cannot be renamed: it must say DAV:.
        let child = r#"<D:response><D:href>/a</D:href><D:propstat><D:prop><q xmlns="DAV:"><m:w xmlns:m="urn:m" xmlns:D="urn:d"><inner/></m:w></q></D:prop></D:propstat></D:response>"#;
        let out = complete(&[], ROOT, child);
        assert!(
            out.contains(r#"<D:q><m:w xmlns:m="urn:m" xmlns:D="urn:d"><inner xmlns="DAV:"/>"#),
            "{out}"
        );
        assert_eq!(meaning(ROOT, child), meaning(ROOT, &out), "{out}");
    }

    #[test]
    fn missing_properties_are_declared_where_they_are_written() {
        let requested = names(&[("DAV:", "getetag"), ("", "plain"), ("urn:a&b", "odd")]);
        // The root declares DAV: as the default namespace and no D: prefix.
        let root = br#"<multistatus xmlns="DAV:">"#;
        let child = "<response><href>/a</href></response>";
        let out = complete(&requested, root, child);
        let meant = meaning(root, &out);
        let props: Vec<_> = meant.iter().filter(|(depth, _, _)| *depth == 4).collect();
        assert_eq!(
            props,
            [
                &(4, "DAV:".to_string(), "getetag".to_string()),
                &(4, String::new(), "plain".to_string()),
                &(4, "urn:a&b".to_string(), "odd".to_string()),
            ],
            "{out}"
        );
        assert!(out.contains("HTTP/1.1 404 Not Found"), "{out}");
    }

    #[test]
    fn an_empty_response_element_is_opened_for_its_missing_properties() {
        let requested = names(&[("DAV:", "getetag")]);
        let out = complete(&requested, ROOT, "<D:response />");
        assert_eq!(
            out,
            "<D:response><D:propstat><D:prop><D:getetag/></D:prop>\
             <D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response>"
        );
    }

    #[test]
    fn entity_tags_already_quoted_or_not_plain_text_are_left_alone() {
        for etag in [
            "&quot;x&quot;",
            "W/&quot;x&quot;",
            "W/\"x\"",
            "&#34;x\"",
            "<![CDATA[x]]>",
            "x<!-- c -->",
            "",
        ] {
            let child = format!(
                "<D:response><D:propstat><D:prop><D:getetag>{etag}</D:getetag></D:prop></D:propstat></D:response>"
            );
            assert!(
                complete_response(&[], ROOT, child.as_bytes()).is_none(),
                "{etag}"
            );
        }
    }

    #[test]
    fn what_is_not_a_well_formed_response_passes_unchanged() {
        let requested = names(&[("DAV:", "getetag")]);
        for child in [
            "<D:response><D:href>/a</D:href>",
            "<D:response></D:other>",
            "<D:response><u:x/></D:response>",
            "<D:response/><D:response/>",
            "<D:response><D:href a=b/></D:response>",
            "<D:response><!DOCTYPE x></D:response>",
            "text<D:response/>",
        ] {
            assert!(
                complete_response(&requested, ROOT, child.as_bytes()).is_none(),
                "{child}"
            );
        }
        // A root that is not a DAV: multistatus: nothing to complete.
        assert!(
            complete_response(&requested, br#"<D:other xmlns:D="DAV:">"#, b"<D:response/>")
                .is_none()
        );
    }

    /// A response holding properties nested as `ops` say: each byte opens,
    /// closes or writes one of a few spellings that exercise prefixes,
    /// default declarations, D: rebound, text and comments.
    fn built(ops: &[u8]) -> String {
        const KINDS: [(&str, &str); 8] = [
            ("D:getetag", ""),
            ("getetag", r#" xmlns="DAV:""#),
            ("a:resourcetype", r#" xmlns:a="DAV:""#),
            ("n:dead", r#" xmlns:n="urn:n""#),
            ("plain", ""),
            ("q", r#" xmlns="""#),
            ("p:w", r#" xmlns:p="urn:p" xmlns:D="urn:d""#),
            ("collection", ""),
        ];
        let mut out = String::from("<D:response><D:href>/a</D:href><D:propstat><D:prop>");
        let mut open = Vec::new();
        for op in ops {
            let (name, attrs) = KINDS[usize::from(op % 8)];
            match op / 8 % 4 {
                0 => {
                    out.push_str(&format!("<{name}{attrs}>"));
                    open.push(name);
                }
                1 => out.push_str(&format!("<{name}{attrs}/>")),
                2 => match open.pop() {
                    Some(name) => out.push_str(&format!("</{name}>")),
                    None => out.push_str("v&amp;1"),
                },
                _ => out.push_str(if op % 2 == 0 { "t\"x" } else { "<!-- c -->" }),
            }
        }
        while let Some(name) = open.pop() {
            out.push_str(&format!("</{name}>"));
        }
        out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>");
        out
    }

    use proptest::prelude::*;

    // Run long by tests/fuzz.sh (PROPTEST_CASES).
    proptest! {
        #[test]
        fn fuzz_completion_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            text in "[<>/=:\"' a-zDAV&;#x!?\\[\\]-]{0,80}",
        ) {
            let requested = names(&[("DAV:", "getetag"), ("", "plain"), ("urn:x", "y")]);
            let _ = complete_response(&requested, ROOT, &bytes);
            let child = format!("<D:response>{text}</D:response>");
            let _ = complete_response(&requested, ROOT, child.as_bytes());
            let child = format!("<D:response><D:propstat><D:prop><D:getetag>{text}</D:getetag></D:prop></D:propstat></D:response>");
            let _ = complete_response(&requested, ROOT, child.as_bytes());
        }

        #[test]
        fn fuzz_completion_keeps_every_meaning(ops in proptest::collection::vec(any::<u8>(), 0..40)) {
            let requested = names(&[("DAV:", "getetag"), ("", "plain"), ("urn:n", "dead"), ("DAV:", "collection")]);
            let child = built(&ops);
            for root in [ROOT, br#"<multistatus xmlns="DAV:" xmlns:D="DAV:">"#] {
                let out = complete(&requested, root, &child);
                let before = meaning(root, &child);
                let after = meaning(root, &out);
                // What was there still means the same, in the same order;
                // only the 404 propstat follows.
                prop_assert_eq!(&after[..before.len()], &before[..], "{}", out);
                let props: Vec<(String, String)> = after
                    .iter()
                    .filter(|(depth, _, _)| *depth == 4)
                    .map(|(_, ns, name)| (ns.clone(), name.clone()))
                    .collect();
                for (ns, name) in &requested {
                    let ns = ns.clone().unwrap_or_default();
                    prop_assert!(props.contains(&(ns, name.clone())), "{} missing: {}", name, out);
                }
            }
        }
    }
}
