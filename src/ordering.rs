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

/// How a new commit stands to the deployed one in the app's history (GitHub's compare
/// words: the new commit is ahead of, behind, identical to or diverged from the deployed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The new commit descends from the deployed one.
    Ahead,
    /// Both tags name one commit.
    Identical,
    /// The new commit is an ancestor of the deployed one: an older build.
    Behind,
    /// Neither descends from the other: a hotfix branch, say.
    Diverged,
}

/// Why a source of history cannot order two commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub why: String,
    /// No news by itself: a checkout that lacks the build's own commit is some other
    /// repository (the README's quick start runs in tomoda-promote's clone), and no app
    /// repository named is nothing to warn of when no checkout was expected either. The
    /// reasons become a warning when any source that was asked is not foreign.
    pub foreign: bool,
}

/// No app repository is named on a forge: the reason, for the warning.
pub struct Unnamed(pub String);

impl History for Unnamed {
    fn order(&self, _: &str, _: &str) -> Result<Order, Unknown> {
        Err(Unknown {
            why: self.0.clone(),
            foreign: true,
        })
    }

    fn name(&self) -> String {
        "no forge".into()
    }
}

impl Unknown {
    pub fn because(why: impl Into<String>) -> Unknown {
        Unknown {
            why: why.into(),
            foreign: false,
        }
    }
}

/// A place that knows the app's history: a local checkout, the app repository's forge.
pub trait History {
    /// How `wanted` stands to `deployed` (both commits, full or abbreviated), or why this
    /// source cannot tell.
    fn order(&self, deployed: &str, wanted: &str) -> Result<Order, Unknown>;

    /// The source as messages name it: "the checkout here", "GitHub (tomoda/app)".
    fn name(&self) -> String;
}

/// Sources asked in turn (the local checkout first, then the forge): the first that can
/// tell decides; when none can, every reason is kept.
pub struct Sources<'a>(pub Vec<&'a dyn History>);

impl History for Sources<'_> {
    fn order(&self, deployed: &str, wanted: &str) -> Result<Order, Unknown> {
        let mut reasons: Vec<Unknown> = Vec::new();
        for source in &self.0 {
            match source.order(deployed, wanted) {
                Ok(order) => return Ok(order),
                Err(unknown) => reasons.push(unknown),
            }
        }
        Err(Unknown {
            foreign: !reasons.is_empty() && reasons.iter().all(|r| r.foreign),
            why: reasons
                .iter()
                .map(|r| r.why.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    fn name(&self) -> String {
        self.0
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", then ")
    }
}

/// What the guard says about a promotion of commits it could not simply pass or skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The new commit is on another line of history than the deployed one: promoted.
    Diverged {
        image: String,
        deployed: String,
        wanted: String,
    },
    /// The order could not be told: promoted, and the reason is a warning.
    Unknowable {
        image: String,
        deployed: String,
        wanted: String,
        why: String,
    },
}

impl Note {
    /// One sentence for people.
    pub fn text(&self) -> String {
        match self {
            Note::Diverged {
                image,
                deployed,
                wanted,
            } => format!(
                "{image}: commit {wanted} and the deployed {deployed} have diverged (neither descends from the other: a hotfix branch?); promoted as asked"
            ),
            Note::Unknowable {
                image,
                deployed,
                wanted,
                why,
            } => format!(
                "{image}: cannot tell whether commit {wanted} is older than the deployed {deployed}: {why}; promoted without the ordering guard"
            ),
        }
    }

    /// `diverged` or `unknown`, as the JSON result names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Note::Diverged { .. } => "diverged",
            Note::Unknowable { .. } => "unknown",
        }
    }
}

/// What the guard found: the change that would move an image backwards, if any, and what
/// it has to say about the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub older: Option<Older>,
    pub notes: Vec<Note>,
}

/// Two spellings of one commit: one hash abbreviates the other.
pub fn same_commit(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a.starts_with(&b) || b.starts_with(&a)
}

/// The order from the commits each side has that the other lacks (GitLab's compare, asked
/// both ways); `None` when neither has any, which two different commits cannot be.
pub fn from_own_commits(wanted_has_own: bool, deployed_has_own: bool) -> Option<Order> {
    match (wanted_has_own, deployed_has_own) {
        (true, true) => Some(Order::Diverged),
        (true, false) => Some(Order::Ahead),
        (false, true) => Some(Order::Behind),
        (false, false) => None,
    }
}

/// The order from the best common ancestor of the two commits (Bitbucket's merge-base).
pub fn from_merge_base(base: &str, deployed: &str, wanted: &str) -> Order {
    match (same_commit(base, wanted), same_commit(base, deployed)) {
        (true, true) => Order::Identical,
        (true, false) => Order::Behind,
        (false, true) => Order::Ahead,
        (false, false) => Order::Diverged,
    }
}

/// GitHub's compare `status` of head `wanted` against base `deployed`.
pub fn from_compare_status(status: &str) -> Option<Order> {
    match status {
        "ahead" => Some(Order::Ahead),
        "behind" => Some(Order::Behind),
        "identical" => Some(Order::Identical),
        "diverged" => Some(Order::Diverged),
        _ => None,
    }
}

/// The first tag change that would move an image backwards, if any.
pub fn find_older(changes: &[Change], history: &dyn History) -> Option<Older> {
    judge(changes, history).older
}

/// The guard over every tag change: tags of one orderable shape by themselves, tags
/// holding commits through `history`. Stops at the first change that is older.
pub fn judge(changes: &[Change], history: &dyn History) -> Verdict {
    let mut verdict = Verdict::default();
    for change in changes.iter().filter(|c| c.field == Field::NewTag) {
        let (Some(deployed), Some(wanted)) = (&change.old, &change.new) else {
            continue;
        };
        let older = |reason: String| Older {
            image: change.image.clone(),
            deployed: deployed.clone(),
            wanted: wanted.clone(),
            reason,
        };
        if let Some((order, kind)) = compare_by_shape(deployed, wanted) {
            if order == Ordering::Less {
                verdict.older = Some(older(format!("{kind} {wanted} is older than {deployed}")));
                return verdict;
            }
            continue;
        }
        let (Some(d), Some(w)) = (commit_in_tag(deployed), commit_in_tag(wanted)) else {
            continue;
        };
        if same_commit(d, w) {
            continue;
        }
        match history.order(d, w) {
            Ok(Order::Behind) => {
                verdict.older = Some(older(format!(
                    "commit {w} is an ancestor of the deployed {d}"
                )));
                return verdict;
            }
            Ok(Order::Ahead | Order::Identical) => {}
            Ok(Order::Diverged) => verdict.notes.push(Note::Diverged {
                image: change.image.clone(),
                deployed: d.to_string(),
                wanted: w.to_string(),
            }),
            Err(unknown) if unknown.foreign => {
                tracing::debug!(
                    "cannot tell whether {w} is older than the deployed {d}: {}; promoting",
                    unknown.why
                );
            }
            Err(unknown) => verdict.notes.push(Note::Unknowable {
                image: change.image.clone(),
                deployed: d.to_string(),
                wanted: w.to_string(),
                why: unknown.why,
            }),
        }
    }
    verdict
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
        fn order(&self, deployed: &str, wanted: &str) -> Result<Order, Unknown> {
            let at = |sha: &str| {
                self.0
                    .iter()
                    .position(|c| c.starts_with(sha) || sha.starts_with(c))
                    .ok_or_else(|| Unknown::because(format!("no commit {sha}")))
            };
            Ok(match at(wanted)?.cmp(&at(deployed)?) {
                Ordering::Less => Order::Behind,
                Ordering::Equal => Order::Identical,
                Ordering::Greater => Order::Ahead,
            })
        }

        fn name(&self) -> String {
            "a line".into()
        }
    }

    /// A source that knows one answer for every pair, or none.
    struct Fixed(Result<Order, Unknown>);

    impl History for Fixed {
        fn order(&self, _: &str, _: &str) -> Result<Order, Unknown> {
            self.0.clone()
        }

        fn name(&self) -> String {
            "fixed".into()
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
    fn diverged_and_unknowable_commits_are_promoted_with_a_note() {
        let diverged = judge(&tag("ccccccc", "ddddddd"), &Fixed(Ok(Order::Diverged)));
        assert_eq!(diverged.older, None);
        assert_eq!(diverged.notes[0].kind(), "diverged");
        assert!(
            diverged.notes[0].text().contains("have diverged"),
            "{}",
            diverged.notes[0].text()
        );
        let unknown = judge(
            &tag("ccccccc", "ddddddd"),
            &Fixed(Err(Unknown::because("the forge did not answer"))),
        );
        assert_eq!(unknown.older, None);
        assert_eq!(
            unknown.notes[0].text(),
            "app: cannot tell whether commit ddddddd is older than the deployed ccccccc: the forge did not answer; promoted without the ordering guard"
        );
        let quiet = judge(
            &tag("ccccccc", "ddddddd"),
            &Fixed(Err(Unknown {
                why: "not the app's checkout".into(),
                foreign: true,
            })),
        );
        assert_eq!(
            quiet,
            Verdict::default(),
            "a foreign checkout alone is no news"
        );
        let same = judge(&tag("main-ccccccc", "sha-ccccccc"), &HISTORY);
        assert_eq!(same, Verdict::default());
    }

    #[test]
    fn the_first_source_that_can_tell_decides_and_every_reason_is_kept() {
        let local = Fixed(Err(Unknown {
            why: "no checkout here holds ccccccc".into(),
            foreign: true,
        }));
        let forge = Fixed(Ok(Order::Behind));
        let both = Sources(vec![&local, &forge]);
        assert!(judge(&tag("ccccccc", "aaaaaaa"), &both).older.is_some());
        let down = Fixed(Err(Unknown::because("GitHub did not answer")));
        let neither = Sources(vec![&local, &down]);
        let unknown = neither.order("c", "a").unwrap_err();
        assert_eq!(
            unknown.why,
            "no checkout here holds ccccccc; GitHub did not answer"
        );
        assert!(!unknown.foreign, "a forge was asked: the warning is news");
        assert!(Sources(vec![&local]).order("c", "a").unwrap_err().foreign);
    }

    #[test]
    fn each_forge_answer_reads_as_an_order() {
        assert_eq!(from_compare_status("behind"), Some(Order::Behind));
        assert_eq!(from_compare_status("diverged"), Some(Order::Diverged));
        assert_eq!(from_compare_status("unheard-of"), None);
        assert_eq!(from_own_commits(true, false), Some(Order::Ahead));
        assert_eq!(from_own_commits(false, true), Some(Order::Behind));
        assert_eq!(from_own_commits(true, true), Some(Order::Diverged));
        assert_eq!(from_own_commits(false, false), None);
        let (old, new) = ("aaaaaaa1111", "bbbbbbb2222");
        assert_eq!(from_merge_base("aaaaaaa1111ffff", old, new), Order::Ahead);
        assert_eq!(from_merge_base("BBBBBBB2222ffff", old, new), Order::Behind);
        assert_eq!(from_merge_base("ccccccc", old, new), Order::Diverged);
    }

    #[test]
    fn commits_are_read_out_of_tags() {
        assert_eq!(commit_in_tag("4d5e6f7"), Some("4d5e6f7"));
        assert_eq!(commit_in_tag("main-4d5e6f7"), Some("4d5e6f7"));
        assert_eq!(commit_in_tag("v1.2.3"), None);
        assert_eq!(commit_in_tag("abc"), None);
    }
}
