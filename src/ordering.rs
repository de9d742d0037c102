//! The ordering guard: an environment never moves backwards by accident. An older build
//! finishing after a newer one (a slow pipeline, a retried step) must not overwrite it.
//! Pure: ancestry between commits is asked of a function the edge provides.

use std::cmp::Ordering;

use crate::kustomize::{Change, Field};

/// Why a promotion is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Older {
    pub image: String,
    pub deployed: String,
    pub wanted: String,
    pub reason: String,
}

/// Answers whether `ancestor` is an ancestor of `descendant` in the app's history;
/// `None` when that cannot be known (no checkout, a shallow clone, an unknown commit).
pub trait History {
    fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Option<bool>;
}

/// The first tag change that would move an image backwards, if any.
pub fn find_older(changes: &[Change], history: &dyn History) -> Option<Older> {
    changes.iter().filter(|c| c.field == Field::NewTag).find_map(|change| {
        let (Some(deployed), Some(wanted)) = (&change.old, &change.new) else {
            return None;
        };
        let older = |reason: String| Older {
            image: change.image.clone(),
            deployed: deployed.clone(),
            wanted: wanted.clone(),
            reason,
        };
        if let (Some(d), Some(w)) = (Version::parse(deployed), Version::parse(wanted)) {
            return (w.cmp(&d) == Ordering::Less).then(|| older(format!("version {wanted} is older than {deployed}")));
        }
        let (d, w) = (commit_in_tag(deployed)?, commit_in_tag(wanted)?);
        match history.is_ancestor(w, d) {
            Some(true) => Some(older(format!("commit {w} is an ancestor of the deployed {d}"))),
            Some(false) => None,
            None => {
                tracing::info!("cannot tell whether {w} is older than the deployed {d} (no checkout of the app here holds both commits); promoting");
                None
            }
        }
    })
}

/// A semantic version, `v` prefix allowed: MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD].
#[derive(Debug, PartialEq, Eq)]
struct Version<'a> {
    core: [u64; 3],
    pre: Option<&'a str>,
}

impl<'a> Version<'a> {
    fn parse(tag: &'a str) -> Option<Self> {
        let text = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
        let text = text.split_once('+').map_or(text, |(t, _)| t);
        let (core, pre) = match text.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p)),
            Some(_) => return None,
            None => (text, None),
        };
        let mut parts = core.split('.');
        let mut number = || {
            parts
                .next()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?
                .parse()
                .ok()
        };
        let parsed = [number()?, number()?, number()?];
        parts
            .next()
            .is_none()
            .then_some(Version { core: parsed, pre })
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre, other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => compare_prerelease(a, b),
            })
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// SemVer 2.0 precedence: numeric identifiers compare as numbers and sort first.
fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// The commit a tag names: the tag itself, or its last `-`/`_` part, when 7 to 64 hex digits.
pub fn commit_in_tag(tag: &str) -> Option<&str> {
    let last = tag.rsplit(['-', '_']).next().unwrap_or(tag);
    ((7..=64).contains(&last.len()) && last.bytes().all(|b| b.is_ascii_hexdigit())).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Linear(&'static [&'static str]);

    impl History for Linear {
        fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Option<bool> {
            let at = |sha: &str| {
                self.0
                    .iter()
                    .position(|c| c.starts_with(sha) || sha.starts_with(c))
            };
            Some(at(ancestor)? < at(descendant)?)
        }
    }

    fn tag(old: &str, new: &str) -> Vec<Change> {
        vec![Change {
            image: "app".into(),
            field: Field::NewTag,
            old: Some(old.into()),
            new: Some(new.into()),
        }]
    }

    const HISTORY: Linear = Linear(&["aaaaaaa", "bbbbbbb", "ccccccc"]);

    #[test]
    fn older_versions_are_found_newer_ones_pass() {
        for (deployed, wanted) in [
            ("v1.5.0", "v1.4.9"),
            ("v2.0.0", "v1.99.99"),
            ("1.2.3", "1.2.3-rc.1"),
            ("v1.0.0-rc.10", "v1.0.0-rc.9"),
            ("v1.0.0-beta", "v1.0.0-alpha.1"),
        ] {
            assert!(
                find_older(&tag(deployed, wanted), &HISTORY).is_some(),
                "{deployed} -> {wanted}"
            );
        }
        for (deployed, wanted) in [
            ("v1.4.0", "v1.5.0"),
            ("v1.2.3-rc.1", "v1.2.3"),
            ("v1.0.0-alpha", "v1.0.0-alpha.1"),
            ("latest", "v1.0.0"),
            ("v1.2", "v1.1"),
        ] {
            assert!(
                find_older(&tag(deployed, wanted), &HISTORY).is_none(),
                "{deployed} -> {wanted}"
            );
        }
    }

    #[test]
    fn older_commits_are_found_through_the_history() {
        let skip = find_older(&tag("ccccccc", "aaaaaaa"), &HISTORY).unwrap();
        assert_eq!(
            skip.reason,
            "commit aaaaaaa is an ancestor of the deployed ccccccc"
        );
        assert!(find_older(&tag("main-aaaaaaa", "main-bbbbbbb"), &HISTORY).is_none());
        assert!(find_older(&tag("sha-bbbbbbb", "sha-aaaaaaa"), &HISTORY).is_some());
        assert!(
            find_older(&tag("ccccccc", "ddddddd"), &HISTORY).is_none(),
            "unknown commits proceed"
        );
    }

    #[test]
    fn commits_are_read_out_of_tags() {
        assert_eq!(commit_in_tag("4d5e6f7"), Some("4d5e6f7"));
        assert_eq!(commit_in_tag("main-4d5e6f7"), Some("4d5e6f7"));
        assert_eq!(commit_in_tag("v1.2.3"), None);
        assert_eq!(commit_in_tag("abc"), None);
    }
}
