//! Namespace paths: parsed once, canonical afterwards.
//!
//! A path is a `&str` of `/`-separated names that the DAV layer has already
//! percent-decoded, starting with `/`. One trailing `/` is accepted and
//! dropped, so a collection's URL form (`/a/`) and its plain form (`/a`) are
//! the same path; the root is `/`. Canonical form: `/a/b`, no trailing `/`.
//! Node lookups and lock rows both use that form, which is what makes lock
//! prefix matching a plain string comparison.

use std::fmt;

use super::NamespaceError;

/// A validated, canonical path (`/` or `/name/name...`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsPath(String);

impl NsPath {
    /// The root directory, `/`.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Parses and validates `path` (see the module docs for the form).
    pub fn parse(path: &str) -> Result<Self, NamespaceError> {
        let invalid = |name: &str, reason| NamespaceError::InvalidName {
            path: path.to_owned(),
            name: name.to_owned(),
            reason,
        };
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| invalid(path, "a path must start with '/'"))?;
        if rest.starts_with('/') {
            return Err(invalid("", "empty name (a doubled '/')"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Self::root());
        }
        for name in rest.split('/') {
            check_name(name).map_err(|reason| invalid(name, reason))?;
        }
        Ok(Self(format!("/{rest}")))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The names from the root down; empty for the root.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|n| !n.is_empty())
    }

    /// The last name; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            return None;
        }
        self.0.rsplit('/').next()
    }

    /// The parent directory's path; `None` for the root.
    pub fn parent(&self) -> Option<NsPath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) | None => Some(Self::root()),
            Some(i) => Some(Self(self.0[..i].to_owned())),
        }
    }

    /// The strict ancestors, root first.
    pub fn ancestors(&self) -> Vec<NsPath> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    /// Whether `self` is a strict ancestor of `other` (`/a` is one of
    /// `/a/b`, not of `/ab`, nor of itself).
    pub fn is_ancestor_of(&self, other: &NsPath) -> bool {
        if self.is_root() {
            return !other.is_root();
        }
        other
            .0
            .strip_prefix(&self.0)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// `self` with its prefix `from` replaced by `to`; `self` must be `from`
    /// or below it.
    pub(crate) fn rebase(&self, from: &NsPath, to: &NsPath) -> NsPath {
        if self == from {
            return to.clone();
        }
        let tail = if from.is_root() {
            &self.0[1..]
        } else {
            &self.0[from.0.len() + 1..]
        };
        if to.is_root() {
            Self(format!("/{tail}"))
        } else {
            Self(format!("{}/{tail}", to.0))
        }
    }

    /// Bounds `[lo, hi)` of the canonical strings of all strict descendants,
    /// under SQLite's binary collation: they all start with `self + "/"`,
    /// and `'0'` is the byte after `'/'`. For the root the range also holds
    /// `/` itself, which the caller excludes.
    pub(crate) fn descendant_range(&self) -> (String, String) {
        let base = if self.is_root() { "" } else { self.0.as_str() };
        (format!("{base}/"), format!("{base}0"))
    }
}

impl fmt::Display for NsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NsPath({:?})", self.0)
    }
}

/// Checks one name; the reason is for the error message.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name (a doubled '/')");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not names");
    }
    if name.contains('/') {
        return Err("a name cannot contain '/'");
    }
    if name.contains('\0') {
        return Err("a name cannot contain NUL");
    }
    Ok(())
}

/// Validates a single name, as [`NsPath::parse`] does for each component.
pub fn validate_name(name: &str) -> Result<(), NamespaceError> {
    check_name(name).map_err(|reason| NamespaceError::InvalidName {
        path: name.to_owned(),
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn p(s: &str) -> NsPath {
        NsPath::parse(s).unwrap()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(p("/").as_str(), "/");
        assert_eq!(p("/a").as_str(), "/a");
        assert_eq!(p("/a/").as_str(), "/a");
        assert_eq!(p("/a/b c/ü").as_str(), "/a/b c/ü");
        assert!(p("/").is_root());
        assert_eq!(p("/a/b").names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p("/").names().count(), 0);
        assert_eq!(p("/a/b").file_name(), Some("b"));
        assert_eq!(p("/a/b").parent(), Some(p("/a")));
        assert_eq!(p("/a").parent(), Some(p("/")));
        assert_eq!(p("/").parent(), None);
        assert_eq!(p("/a/b/c").ancestors(), [p("/"), p("/a"), p("/a/b")]);
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "", "a", "//", "/a//b", "/.", "/a/..", "/a/./b", "/a\0b", "/a//", "a/b",
        ] {
            assert!(
                matches!(NsPath::parse(bad), Err(NamespaceError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("...").is_ok());
        assert!(validate_name(".hidden").is_ok());
    }

    #[test]
    fn ancestry_is_by_name_not_by_prefix() {
        assert!(p("/a").is_ancestor_of(&p("/a/b")));
        assert!(p("/").is_ancestor_of(&p("/a")));
        assert!(!p("/a").is_ancestor_of(&p("/ab")));
        assert!(!p("/a").is_ancestor_of(&p("/a")));
        assert!(!p("/").is_ancestor_of(&p("/")));
        let (lo, hi) = p("/a").descendant_range();
        for inside in ["/a/b", "/a/b/c", "/a/\u{10ffff}"] {
            assert!(lo.as_str() <= inside && inside < hi.as_str(), "{inside}");
        }
        for outside in ["/a", "/ab", "/a-b", "/a0", "/b"] {
            assert!(
                !(lo.as_str() <= outside && outside < hi.as_str()),
                "{outside}"
            );
        }
    }

    #[test]
    fn rebase_moves_prefixes() {
        assert_eq!(p("/a/b/c").rebase(&p("/a"), &p("/x/y")), p("/x/y/b/c"));
        assert_eq!(p("/a").rebase(&p("/a"), &p("/z")), p("/z"));
        assert_eq!(p("/a/b").rebase(&p("/a"), &p("/")), p("/b"));
    }
}
