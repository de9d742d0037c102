//! Holds: environments no promotion may change for now (after a rollback, during an
//! incident), kept in a small YAML file of the devops repo so that every pipeline reads
//! them in the same fetch as the overlay it would edit. Pure: parse and render.

use crate::error::{Error, Result};
use crate::yaml::tree::{self, Node};

/// One held environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub environment: String,
    pub reason: String,
    /// Who held it (the CI actor or the local user).
    pub who: String,
    /// When, as RFC 3339 UTC (`2026-12-01T10:00:00Z`).
    pub since: String,
}

const HEADER: &str = "# Environments tomoda-promote does not promote to, written by `tomoda-promote hold`;\n# `tomoda-promote unhold --env NAME` lets promotions land again.\n";
const KEYS: [&str; 4] = ["environment", "reason", "who", "since"];

/// Reads the holds file; `None` (no file) is no hold. Errors name the file and line.
pub fn parse(file: &str, text: Option<&str>) -> Result<Vec<Hold>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let bad = |line: usize, message: String| {
        Error::input(
            file,
            Some(line),
            message,
            "fix the file in the devops repo, or rewrite it with `tomoda-promote hold` / `unhold`",
        )
    };
    let docs =
        tree::parse(text).map_err(|e| bad(e.line, format!("invalid YAML: {}", e.message)))?;
    let Some(doc) = docs.first() else {
        return Ok(Vec::new());
    };
    let top = match &doc.root {
        Node::Map(map) => map,
        node if node.is_null() => return Ok(Vec::new()),
        node => return Err(bad(node.line(), "expected a mapping with `holds:`".into())),
    };
    let Some((_, list)) = top.get("holds") else {
        return Ok(Vec::new());
    };
    let items = match list {
        Node::Seq(seq) => &seq.items,
        node if node.is_null() => return Ok(Vec::new()),
        node => return Err(bad(node.line(), "`holds:` is not a list".into())),
    };
    let mut holds: Vec<Hold> = Vec::new();
    for item in items {
        let Node::Map(map) = item else {
            return Err(bad(item.line(), "a hold is not a mapping".into()));
        };
        let field = |key: &str| -> Result<String> {
            match map.get(key) {
                Some((_, Node::Scalar(s))) if !s.value.is_empty() => Ok(s.value.clone()),
                Some((_, node)) if node.is_null() => Ok(String::new()),
                Some((_, node)) => Err(bad(node.line(), format!("`{key}:` is not a string"))),
                None => Ok(String::new()),
            }
        };
        for (key, _) in &map.entries {
            if !key.as_str().is_some_and(|k| KEYS.contains(&k)) {
                return Err(bad(
                    key.line(),
                    format!("unknown key in a hold (allowed: {})", KEYS.join(", ")),
                ));
            }
        }
        let environment = field("environment")?;
        if environment.is_empty() {
            return Err(bad(item.line(), "a hold names no `environment:`".into()));
        }
        holds.push(Hold {
            environment,
            reason: field("reason")?,
            who: field("who")?,
            since: field("since")?,
        });
    }
    Ok(holds)
}

/// The holds file's text; every value double-quoted (JSON strings are YAML), so a reason
/// can say anything.
pub fn render(holds: &[Hold]) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = String::from(HEADER);
    if holds.is_empty() {
        out.push_str("holds: []\n");
        return out;
    }
    out.push_str("holds:\n");
    for hold in holds {
        out.push_str(&format!(
            "  - environment: {}\n    reason: {}\n    who: {}\n    since: {}\n",
            quote(&hold.environment),
            quote(&hold.reason),
            quote(&hold.who),
            quote(&hold.since)
        ));
    }
    out
}

/// The hold on `environment`, if any.
pub fn find<'h>(holds: &'h [Hold], environment: &str) -> Option<&'h Hold> {
    holds.iter().find(|h| h.environment == environment)
}

/// `holds` with `hold` in place of any hold on the same environment.
pub fn with(holds: &[Hold], hold: Hold) -> Vec<Hold> {
    let mut out: Vec<Hold> = without(holds, &hold.environment);
    out.push(hold);
    out
}

pub fn without(holds: &[Hold], environment: &str) -> Vec<Hold> {
    holds
        .iter()
        .filter(|h| h.environment != environment)
        .cloned()
        .collect()
}

/// Unix seconds as RFC 3339 UTC, by the civil-from-days algorithm (no calendar crate for
/// one format).
pub fn utc(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(env: &str, reason: &str) -> Hold {
        Hold {
            environment: env.into(),
            reason: reason.into(),
            who: "alice".into(),
            since: "2026-12-01T10:00:00Z".into(),
        }
    }

    #[test]
    fn rendered_holds_read_back_whatever_the_reason_says() {
        let holds = vec![
            hold(
                "prod",
                "rolled back: v1.5.0 leaks \"memory\" # see INC-7\nnext line",
            ),
            hold("dev", "yes"),
        ];
        let text = render(&holds);
        assert_eq!(parse(".promote/holds.yaml", Some(&text)).unwrap(), holds);
        assert_eq!(find(&holds, "dev").unwrap().reason, "yes");
        assert_eq!(parse("f", Some(&render(&[]))).unwrap(), vec![]);
        assert_eq!(parse("f", None).unwrap(), vec![]);
    }

    #[test]
    fn with_replaces_and_without_removes() {
        let holds = with(&[hold("prod", "a")], hold("prod", "b"));
        assert_eq!(holds, vec![hold("prod", "b")]);
        assert_eq!(without(&holds, "prod"), vec![]);
    }

    #[test]
    fn a_broken_file_is_named_with_its_line() {
        let e = parse("h.yaml", Some("holds:\n  - reason: x\n")).unwrap_err();
        assert!(
            e.to_string().starts_with("h.yaml:2: a hold names no"),
            "{e}"
        );
        let e = parse("h.yaml", Some("holds:\n  - environment: p\n    until: x\n")).unwrap_err();
        assert!(e.to_string().starts_with("h.yaml:3: unknown key"), "{e}");
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(utc(951_825_599), "2000-02-29T11:59:59Z");
    }
}
