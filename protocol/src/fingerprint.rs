//! Device fingerprints. A device reports named components (`mac`, `cpu`, `disk`, `hostid`...);
//! its fingerprint is the SHA-256 of the sorted `name=value` lines, so any change of any
//! component changes it. A policy may instead accept a device when at least k of the n
//! components it activated with still match (`minComponentMatches`).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Fingerprint components by name (sorted, so serialisation is canonical).
pub type Components = BTreeMap<String, String>;

/// Most components a device may report.
pub const MAX_COMPONENTS: usize = 32;
/// Longest component name or value.
pub const MAX_COMPONENT_LEN: usize = 256;

/// Why a set of components was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComponentError {
    /// Too many components.
    #[error("at most {MAX_COMPONENTS} fingerprint components")]
    TooMany,
    /// A name or value is empty, too long, or has control characters or `=`.
    #[error(
        "component {0:?} must have a 1-{MAX_COMPONENT_LEN} character name without '=' and a value without control characters"
    )]
    Malformed(String),
    /// The same name twice.
    #[error("component {0:?} is listed twice")]
    Duplicate(String),
}

/// Builds checked components from `(name, value)` pairs; names are lower-cased.
///
/// # Errors
/// [`ComponentError`] for too many, malformed or repeated components.
pub fn components<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Components, ComponentError> {
    let mut out = Components::new();
    for (name, value) in pairs {
        let name = name.trim().to_ascii_lowercase();
        let bad = |s: &str| s.is_empty() || s.len() > MAX_COMPONENT_LEN || s.chars().any(char::is_control);
        if bad(&name) || name.contains('=') || value.len() > MAX_COMPONENT_LEN || value.chars().any(char::is_control) {
            return Err(ComponentError::Malformed(name));
        }
        if out.insert(name.clone(), value.to_owned()).is_some() {
            return Err(ComponentError::Duplicate(name));
        }
        if out.len() > MAX_COMPONENTS {
            return Err(ComponentError::TooMany);
        }
    }
    Ok(out)
}

/// The fingerprint of a set of components: hex SHA-256 of `name=value\n` lines in name order.
#[must_use]
pub fn fingerprint(components: &Components) -> String {
    let mut hasher = Sha256::new();
    for (name, value) in components {
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// How a presented set of components compares with the activated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentMatch {
    /// Activated components whose value is presented unchanged.
    pub matched: usize,
    /// Components the device activated with.
    pub total: usize,
    /// Names of activated components that are missing or changed.
    pub differing: Vec<String>,
}

impl ComponentMatch {
    /// Whether at least `min` components match (and there was something to match).
    #[must_use]
    pub fn accepts(&self, min: usize) -> bool {
        self.total > 0 && self.matched >= min.max(1)
    }
}

/// Compares presented components against the activated ones.
#[must_use]
pub fn compare(activated: &Components, presented: &Components) -> ComponentMatch {
    let differing: Vec<String> = activated
        .iter()
        .filter(|(name, value)| presented.get(*name) != Some(*value))
        .map(|(name, _)| name.clone())
        .collect();
    ComponentMatch {
        matched: activated.len() - differing.len(),
        total: activated.len(),
        differing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn four() -> Components {
        components([("mac", "aa:bb"), ("cpu", "Xeon"), ("disk", "WD-1"), ("hostid", "h1")]).unwrap_or_default()
    }

    #[test]
    fn fingerprint_is_order_free_and_change_sensitive() {
        let a = four();
        let b = components([("hostid", "h1"), ("disk", "WD-1"), ("CPU", "Xeon"), ("mac", "aa:bb")]).unwrap_or_default();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut c = a.clone();
        c.insert("mac".into(), "aa:bc".into());
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[test]
    fn k_of_n_tolerates_one_swap_of_four_with_k3() {
        let activated = four();
        let mut one = activated.clone();
        one.insert("disk".into(), "WD-2".into());
        let m = compare(&activated, &one);
        assert_eq!(
            (m.matched, m.total, m.differing.clone()),
            (3, 4, vec!["disk".to_owned()])
        );
        assert!(m.accepts(3));
        let mut two = one.clone();
        two.remove("mac");
        assert!(!compare(&activated, &two).accepts(3));
        assert!(
            !compare(&Components::new(), &two).accepts(0),
            "nothing activated, nothing accepted"
        );
    }

    #[test]
    fn refuses_malformed_components() {
        assert_eq!(components([("", "x")]), Err(ComponentError::Malformed(String::new())));
        assert!(components([("a=b", "x")]).is_err());
        assert!(components([("a", "x"), ("A", "y")]).is_err());
        assert!(components((0..40).map(|_| ("n", "v"))).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(pairs in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..40)) {
            if let Ok(c) = components(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str()))) {
                let _ = fingerprint(&c);
                prop_assert!(compare(&c, &c).differing.is_empty());
            }
        }
    }
}
