//! The promotions of the devops branch, read back from the commit messages the promotion
//! writes (`message.rs`): the subject names the environment, the body every changed value,
//! the trailers the image, source commit, tag and build. Also what a rollback sets: the
//! values before the promotions it undoes. Pure: messages in, records and targets out.

use std::fmt::Write;

use crate::error::{Error, Result};
use crate::holds::utc;
use crate::image::split_reference;
use crate::kustomize::{Field, ImageSpec};
use crate::message::short_sha;
use crate::plan::{Target, TargetEdit};
use crate::targets::{Change, Subject};
use crate::values::KeyPath;

/// One promotion (or rollback) commit of the devops branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The devops commit.
    pub commit: String,
    /// Commit time, unix seconds.
    pub time: i64,
    pub environment: String,
    pub subject: String,
    /// `Promoted-Image:` trailers.
    pub images: Vec<String>,
    pub changes: Vec<Change>,
    pub source_commit: Option<String>,
    pub source_tag: Option<String>,
    pub build_id: Option<String>,
    /// `Rollback-Of:` trailers: the devops commits this one undid.
    pub rollback_of: Vec<String>,
}

/// Reads a commit message as the promotion writes it; `None` for any other commit
/// (fixtures, holds, people's edits).
pub fn parse(commit: &str, time: i64, message: &str) -> Option<Record> {
    let mut lines = message.lines();
    let subject = lines.next()?.to_string();
    let environment = ["promote(", "rollback("]
        .iter()
        .find_map(|p| subject.strip_prefix(p))
        .and_then(|rest| rest.split_once("): "))
        .map(|(env, _)| env.to_string())?;
    let mut record = Record {
        commit: commit.to_string(),
        time,
        environment,
        subject: subject.clone(),
        images: Vec::new(),
        changes: Vec::new(),
        source_commit: None,
        source_tag: None,
        build_id: None,
        rollback_of: Vec::new(),
    };
    let mut file: Option<String> = None;
    for line in lines {
        if let Some(f) = line
            .strip_prefix("Set in ")
            .and_then(|l| l.strip_suffix(':'))
        {
            file = Some(f.to_string());
        } else if let (Some(f), Some(change)) = (&file, line.strip_prefix("  ")) {
            if let Some(change) = change_line(f, change) {
                record.changes.push(change);
            }
        } else {
            file = None;
            if let Some((key, value)) = line.split_once(": ") {
                let value = value.trim().to_string();
                match key {
                    "Promoted-Image" => record.images.push(value),
                    "Source-Commit" => record.source_commit = Some(value),
                    "Source-Tag" => record.source_tag = Some(value),
                    "Build-Id" => record.build_id = Some(value),
                    "Rollback-Of" => record.rollback_of.push(value),
                    _ => {}
                }
            }
        }
    }
    Some(record)
}

/// Adds the records of `commits` (id, unix time, message; newest first) for `environment`
/// (or every one) to `records`, until there are `limit` or `enough` accepts the last one
/// added; true when that happened, so no older commit need be read.
pub fn gather<'c>(
    records: &mut Vec<Record>,
    commits: impl IntoIterator<Item = (&'c str, i64, &'c str)>,
    environment: Option<&str>,
    limit: usize,
    enough: impl Fn(&Record) -> bool,
) -> bool {
    if records.len() >= limit {
        return true;
    }
    for (id, time, message) in commits {
        let Some(record) = parse(id, time, message) else {
            continue;
        };
        if environment.is_some_and(|e| e != record.environment) {
            continue;
        }
        let done = enough(&record);
        records.push(record);
        if done || records.len() >= limit {
            return true;
        }
    }
    false
}

/// Unix seconds of an RFC 3339 time as the forges write commit dates
/// (`2026-12-01T12:00:00Z`, `…T12:00:00.000+03:00`); `None` for anything else.
pub fn unix_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut parts = date.splitn(3, '-');
    let (year, month, day) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    if rest.len() < 8 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, mut zone) = rest.split_at(8);
    let mut hms = clock.splitn(3, ':');
    let (h, m, s) = (
        number(hms.next()?)?,
        number(hms.next()?)?,
        number(hms.next()?)?,
    );
    if let Some(fraction) = zone.strip_prefix('.') {
        zone = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = zone[1..].split_once(':')?;
            sign * (number(oh)? * 3600 + number(om)? * 60)
        }
    };
    // Days from civil (the inverse of `holds::utc`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s - offset)
}

/// `{image} {field}: {old} -> {new}`, `{image} at {path}: …` or `{path}: …`, as
/// `message::change_line` writes them.
fn change_line(file: &str, line: &str) -> Option<Change> {
    let (head, values) = line.split_once(": ")?;
    let (old, new) = values.split_once(" -> ")?;
    let subject = match head.split_once(' ') {
        None => Subject::Value {
            path: head.to_string(),
        },
        Some((image, rest)) => match rest.strip_prefix("at ") {
            Some(path) => Subject::Container {
                image: image.to_string(),
                path: path.to_string(),
            },
            None => Subject::Entry {
                image: image.to_string(),
                field: Field::ALL.into_iter().find(|f| f.key() == rest)?,
            },
        },
    };
    Some(Change {
        file: file.to_string(),
        subject,
        old: (old != "(none)").then(|| old.to_string()),
        new: (new != "(removed)").then(|| new.to_string()),
    })
}

/// The value a record is known by: its tag, else its source commit, else its first
/// change's new value.
pub fn headline(record: &Record) -> String {
    if let Some(tag) = &record.source_tag {
        return tag.clone();
    }
    if let Some(reference) = record.images.first()
        && let (_, Some(tag), _) = split_reference(reference)
    {
        return short_value(tag);
    }
    if let Some(sha) = &record.source_commit {
        return short_sha(sha).to_string();
    }
    record
        .changes
        .iter()
        .find_map(|c| c.new.as_deref())
        .map_or_else(String::new, short_value)
}

fn short_value(value: &str) -> String {
    if value.len() >= 40 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        short_sha(value).to_string()
    } else {
        value.to_string()
    }
}

/// Whether `value` names this record: its tag, a tag or digest of its images, its
/// source commit (7 digits or more), its devops commit, or a new value it set.
pub fn matches(record: &Record, value: &str) -> bool {
    let is_prefix = |full: &str| value.len() >= 7 && full.starts_with(value);
    record.source_tag.as_deref() == Some(value)
        || record.source_commit.as_deref().is_some_and(is_prefix)
        || is_prefix(&record.commit)
        || record.images.iter().any(|i| {
            let (_, tag, digest) = split_reference(i);
            tag == Some(value) || digest == Some(value) || i == value
        })
        || record
            .changes
            .iter()
            .any(|c| c.new.as_deref() == Some(value))
}

/// What a rollback sets, from an environment's records newest first: undoing the first
/// `undo` of them, each value goes back to what it was before the oldest of those that
/// changed it. Values that did not exist before are left alone (nothing to set back to).
pub fn rollback_targets(records: &[Record], undo: usize) -> Result<(Vec<Target>, Vec<Change>)> {
    let mut wanted: Vec<Change> = Vec::new();
    for record in records[..undo].iter().rev() {
        for change in &record.changes {
            if wanted
                .iter()
                .any(|w| w.file == change.file && w.subject == change.subject)
            {
                continue;
            }
            wanted.push(change.clone());
        }
    }
    // From the newest record's point of view: now `new`, back to the oldest's `old`.
    let wanted: Vec<Change> = wanted.into_iter().filter(|c| c.old.is_some()).collect();
    let mut targets: Vec<Target> = Vec::new();
    for change in &wanted {
        let old = change.old.clone().unwrap_or_default();
        let index = if let Some(i) = targets.iter().position(|t| t.path == change.file) {
            i
        } else {
            let edit = match change.subject {
                Subject::Value { .. } => TargetEdit::Set(Vec::new()),
                _ => TargetEdit::Images(Vec::new()),
            };
            targets.push(Target {
                path: change.file.clone(),
                edit,
            });
            targets.len() - 1
        };
        let target = &mut targets[index];
        match (&change.subject, &mut target.edit) {
            (Subject::Value { path }, TargetEdit::Set(sets)) => {
                let key = KeyPath::parse(path).map_err(|e| {
                    Error::usage(
                        format!("cannot roll back {} {path}: {e}", change.file),
                        "set the value with --set instead",
                    )
                })?;
                sets.push((key, old));
            }
            (Subject::Entry { image, field }, TargetEdit::Images(images)) => {
                let spec = spec_for(images, image);
                match field {
                    Field::NewTag => spec.new_tag = Some(old),
                    Field::NewName => spec.new_name = Some(old),
                    Field::Digest => spec.digest = Some(old),
                }
            }
            (Subject::Container { image, .. }, TargetEdit::Images(images)) => {
                let (name, tag, digest) = split_reference(&old);
                let spec = spec_for(images, image);
                if name != image {
                    spec.new_name = Some(name.to_string());
                }
                spec.new_tag = tag.map(str::to_string);
                spec.digest = digest.map(str::to_string);
            }
            _ => {
                return Err(Error::usage(
                    format!(
                        "{} was changed both as values and as images in the promotions rolled back",
                        change.file
                    ),
                    "roll back with --set and --image instead",
                ));
            }
        }
    }
    Ok((targets, wanted))
}

fn spec_for<'s>(images: &'s mut Vec<ImageSpec>, name: &str) -> &'s mut ImageSpec {
    if let Some(i) = images.iter().position(|s| s.name == name) {
        return &mut images[i];
    }
    // Only the fields the undone promotions changed are set back: a digest they left
    // alone stays under the old tag.
    images.push(ImageSpec {
        name: name.to_string(),
        new_name: None,
        new_tag: None,
        digest: None,
        keep_digest: true,
        pin: false,
    });
    images.last_mut().expect("just pushed")
}

/// The records as a table for people, newest first.
pub fn to_text(records: &[Record]) -> String {
    if records.is_empty() {
        return "no promotions found\n".to_string();
    }
    let mut out = String::new();
    for r in records {
        let _ = writeln!(
            out,
            "{}  {}  {}  {}",
            utc(r.time),
            r.environment,
            short_sha(&r.commit),
            r.subject
        );
        for image in &r.images {
            let _ = writeln!(out, "    image:  {image}");
        }
        let facts = [
            ("source", r.source_commit.as_deref().map(short_sha)),
            ("tag", r.source_tag.as_deref()),
            ("build", r.build_id.as_deref()),
        ];
        let known: Vec<String> = facts
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
            .collect();
        if !known.is_empty() {
            let _ = writeln!(out, "    {}", known.join(", "));
        }
        for commit in &r.rollback_of {
            let _ = writeln!(out, "    rolls back {}", short_sha(commit));
        }
    }
    out
}

/// The records as JSON (`--output json`): an array, newest first.
pub fn to_json(records: &[Record]) -> serde_json::Value {
    records
        .iter()
        .map(|r| {
            let changes: Vec<serde_json::Value> = r
                .changes
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "file": c.file, "image": c.image(), "field": c.field(),
                        "from": c.old, "to": c.new,
                    })
                })
                .collect();
            serde_json::json!({
                "time": utc(r.time),
                "environment": r.environment,
                "commit": r.commit,
                "subject": r.subject,
                "images": r.images,
                "changes": changes,
                "source_commit": r.source_commit,
                "tag": r.source_tag,
                "build_id": r.build_id,
                "rollback_of": r.rollback_of,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_commit_dates_read_as_unix_seconds() {
        for (text, unix) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2026-12-01T12:14:41Z", 1_796_127_281),
            ("2026-12-01T15:14:41.000+03:00", 1_796_127_281),
            ("2026-12-01T12:14:41+00:00", 1_796_127_281),
            ("2000-02-29T00:00:00Z", 951_782_400),
        ] {
            assert_eq!(unix_time(text), Some(unix), "{text}");
            if text.ends_with('Z') {
                assert_eq!(utc(unix), text, "round trip");
            }
        }
        assert_eq!(unix_time("yesterday"), None);
        assert_eq!(unix_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(unix_time("2026-12-01T00:00:00"), None);
    }

    #[test]
    fn gathering_stops_at_the_limit_or_at_enough() {
        let dev = |n: u32| format!("promote(dev): app {n} -> {}\n\nSource-Tag: v{n}\n", n + 1);
        let messages = [dev(3), "docs: a note".to_string(), dev(2), dev(1)];
        let commits: Vec<(String, i64, &str)> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("c{i}"), 0, m.as_str()))
            .collect();
        let each = || commits.iter().map(|(id, t, m)| (id.as_str(), *t, *m));
        let mut records = Vec::new();
        assert!(gather(&mut records, each(), Some("dev"), 2, |_| false));
        assert_eq!(
            records
                .iter()
                .map(|r| r.commit.as_str())
                .collect::<Vec<_>>(),
            ["c0", "c2"]
        );
        let mut records = Vec::new();
        assert!(!gather(&mut records, each(), Some("prod"), 9, |_| false));
        assert!(records.is_empty());
        let mut records = Vec::new();
        assert!(gather(&mut records, each(), None, 9, |r| r
            .source_tag
            .as_deref()
            == Some("v2")));
        assert_eq!(records.len(), 2);
    }
    use crate::context::BuildContext;
    use crate::message::commit_message;

    fn promotion(env: &str, old: &str, new: &str, tag: Option<&str>) -> String {
        let image = ImageSpec {
            name: "reg/app".into(),
            new_name: None,
            new_tag: Some(new.into()),
            digest: None,
            keep_digest: false,
            pin: false,
        };
        let changes = vec![
            Change {
                file: "ov/kustomization.yaml".into(),
                subject: Subject::Entry {
                    image: "reg/app".into(),
                    field: Field::NewTag,
                },
                old: Some(old.into()),
                new: Some(new.into()),
            },
            Change {
                file: "values.yaml".into(),
                subject: Subject::Value {
                    path: "image.tag".into(),
                },
                old: Some(old.into()),
                new: Some(new.into()),
            },
        ];
        let context = BuildContext {
            commit_sha: Some("4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678".into()),
            tag_name: tag.map(str::to_string),
            build_id: Some("b-1".into()),
            ..Default::default()
        };
        commit_message(env, [&image], &changes, &context)
    }

    #[test]
    fn a_promotion_message_reads_back_whole() {
        let r = parse("c1", 0, &promotion("prod", "v1", "v2", Some("v2"))).unwrap();
        assert_eq!(r.environment, "prod");
        assert_eq!(r.images, ["reg/app:v2"]);
        assert_eq!(r.source_tag.as_deref(), Some("v2"));
        assert_eq!(r.build_id.as_deref(), Some("b-1"));
        assert_eq!(r.changes.len(), 2);
        assert_eq!(
            r.changes[1].subject,
            Subject::Value {
                path: "image.tag".into()
            }
        );
        assert_eq!(headline(&r), "v2");
        assert!(matches(&r, "v2") && matches(&r, "4d5e6f7") && !matches(&r, "v1"));
        assert!(parse("c", 0, "Initial layout\n").is_none());
        assert!(parse("c", 0, "hold(prod): incident\n").is_none());
    }

    #[test]
    fn container_lines_read_back_and_roll_back_to_the_whole_reference() {
        let c = change_line(
            "web.yaml",
            "reg/web at spec.template.spec.containers[0].image: reg/web:v1 -> reg/web:v2",
        )
        .unwrap();
        assert_eq!(
            c.subject,
            Subject::Container {
                image: "reg/web".into(),
                path: "spec.template.spec.containers[0].image".into()
            }
        );
        let record = Record {
            commit: "c".into(),
            time: 0,
            environment: "dev".into(),
            subject: String::new(),
            images: vec![],
            changes: vec![c],
            source_commit: None,
            source_tag: None,
            build_id: None,
            rollback_of: vec![],
        };
        let (targets, _) = rollback_targets(&[record], 1).unwrap();
        assert_eq!(
            targets[0].edit,
            TargetEdit::Images(vec![ImageSpec {
                name: "reg/web".into(),
                new_name: None,
                new_tag: Some("v1".into()),
                digest: None,
                keep_digest: true,
                pin: false
            }])
        );
        assert!(change_line("f", "reg/app newTags: a -> b").is_none());
    }

    #[test]
    fn a_rollback_sets_the_values_before_the_oldest_undone_promotion() {
        let records: Vec<Record> = [("v2", "v3"), ("v1", "v2"), ("v0", "v1")]
            .iter()
            .enumerate()
            .map(|(i, (old, new))| {
                parse(&format!("c{i}"), 0, &promotion("prod", old, new, None)).unwrap()
            })
            .collect();
        let (targets, changes) = rollback_targets(&records, 2).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(
            targets[0].edit,
            TargetEdit::Images(vec![ImageSpec {
                name: "reg/app".into(),
                new_name: None,
                new_tag: Some("v1".into()),
                digest: None,
                keep_digest: true,
                pin: false
            }])
        );
        assert!(changes.iter().all(|c| c.old.as_deref() == Some("v1")));
    }
}
