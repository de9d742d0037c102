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

    /// A checkout that lacks the build's own commit is some other repository (the
    /// README's quick start runs in tomoda-promote's clone): not being able to order
    /// commits there is no news worth a line.
    fn is_foreign(&self, _built: &str) -> bool {
        false
    }
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
        if let Some((order, kind)) = compare_by_shape(deployed, wanted) {
            return (order == Ordering::Less)
                .then(|| older(format!("{kind} {wanted} is older than {deployed}")));
        }
        let (d, w) = (commit_in_tag(deployed)?, commit_in_tag(wanted)?);
        match history.is_ancestor(w, d) {
            Some(true) => Some(older(format!("commit {w} is an ancestor of the deployed {d}"))),
            Some(false) => None,
            None if history.is_foreign(w) => {
                tracing::debug!("cannot tell whether {w} is older than the deployed {d}: the checkout here does not hold {w}; promoting");
                None
            }
            None => {
                tracing::info!("cannot tell whether {w} is older than the deployed {d} (no checkout of the app here holds both commits); promoting");
                None
            }
        }
    })
}

/// How `wanted` orders against `deployed` when both tags are of one shape that orders by
/// itself, and the name of that shape; `None` for tags of different or unknown shapes.
fn compare_by_shape(deployed: &str, wanted: &str) -> Option<(Ordering, &'static str)> {
    if let (Some(d), Some(w)) = (semantic_version(deployed), semantic_version(wanted)) {
        return Some((w.cmp_precedence(&d), "version"));
    }
    if is_build_number(deployed) && is_build_number(wanted) {
        let number = |t: &str| t.parse::<u32>().ok();
        return Some((number(wanted)?.cmp(&number(deployed)?), "build number"));
    }
    if is_date_stamp(deployed) && is_date_stamp(wanted) && deployed.len() == wanted.len() {
        // One layout, digits in the same places: text order is time order.
        return Some((wanted.cmp(deployed), "date stamp"));
    }
    None
}

/// A semantic version, `v` or `V` prefix allowed: MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD];
/// `+BUILD` does not count in the order, as SemVer says.
fn semantic_version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix(['v', 'V']).unwrap_or(tag)).ok()
}

/// A CI run counter: 1 to 6 digits, no leading zero. Seven digits and more could be an
/// abbreviated commit, which only the app's history can order.
fn is_build_number(tag: &str) -> bool {
    (1..=6).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_digit())
        && (tag == "0" || !tag.starts_with('0'))
}

/// `YYYYMMDD`, `YYYYMMDD-HHMM` or `YYYYMMDD-HHMMSS`, with a real month, day and time.
fn is_date_stamp(tag: &str) -> bool {
    let (date, time) = tag.split_once('-').unwrap_or((tag, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let field = |s: &str, at: usize| s[at..at + 2].parse::<u32>().unwrap_or(99);
    let date_ok = date.len() == 8
        && digits(date)
        && (1..=12).contains(&field(date, 4))
        && (1..=31).contains(&field(date, 6));
    let time_ok = match time.len() {
        0 => !tag.contains('-'),
        4 | 6 => {
            digits(time)
                && field(time, 0) <= 23
                && field(time, 2) <= 59
                && (time.len() == 4 || field(time, 4) <= 59)
        }
        _ => false,
    };
    date_ok && time_ok
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
            ("V1.2.4", "v1.2.3+build.9"),
            ("1.2.3+b", "v1.2.3-rc.1+a"),
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
            ("v1.2.3+build.5", "V1.2.3+build.4"),
            ("01.2.3", "1.0.0"),
        ] {
            assert!(
                find_older(&tag(deployed, wanted), &HISTORY).is_none(),
                "{deployed} -> {wanted}"
            );
        }
    }

    #[test]
    fn build_numbers_and_date_stamps_compare_as_numbers() {
        let skip = find_older(&tag("118", "99"), &HISTORY).unwrap();
        assert_eq!(skip.reason, "build number 99 is older than 118");
        let skip = find_older(&tag("20240102", "20240101"), &HISTORY).unwrap();
        assert_eq!(skip.reason, "date stamp 20240101 is older than 20240102");
        for (deployed, wanted) in [
            ("1000", "999"),
            ("7", "0"),
            ("20240101-1530", "20240101-0915"),
            ("20231231-235959", "20231231-235958"),
        ] {
            assert!(
                find_older(&tag(deployed, wanted), &HISTORY).is_some(),
                "{deployed} -> {wanted}"
            );
        }
        for (deployed, wanted) in [
            ("99", "118"),
            ("118", "118"),
            ("20240101", "20240215"),
            ("20240101-1530", "20240101-1531"),
            // Different shapes are not compared: the promotion goes ahead.
            ("20240101-1530", "20240101"),
            ("118", "20240101"),
            ("118", "v1.0.0"),
            ("v2.0.0", "118"),
            // Leading zeros, seven digits (could be a commit), impossible dates.
            ("0118", "099"),
            ("1000000", "999999"),
            ("20241301", "20241231"),
            ("20240132", "20240101"),
            ("20240101-2460", "20240101-0000"),
            ("20240101-", "2024010"),
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
