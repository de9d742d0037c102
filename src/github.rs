//! GitHub Actions integration: step outputs, a job summary, and annotations, written only
//! when the binary runs as an Action step (`GITHUB_ACTIONS=true`).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::report::Outcome;
use crate::secrets;

pub fn active() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Writes the outputs `commit`, `pushed`, `environment` and `changes` (JSON) to
/// `$GITHUB_OUTPUT`, and a Markdown table of the changes to `$GITHUB_STEP_SUMMARY`.
pub fn publish(outcome: &Outcome) -> Result<()> {
    if let Some(path) = std::env::var_os("GITHUB_OUTPUT") {
        append(Path::new(&path), &outputs(outcome, &delimiter()))?;
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        append(Path::new(&path), &summary(outcome))?;
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::local(format!(
            "cannot write the GitHub Actions file {}: {e}",
            path.display()
        ))
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(fail)?;
    file.write_all(secrets::redact(text).as_bytes())
        .map_err(fail)
}

/// A heredoc delimiter no value can contain, as GitHub recommends for multi-line outputs.
fn delimiter() -> String {
    format!("ghadelimiter_{:016x}", crate::random_u64())
}

fn outputs(outcome: &Outcome, delimiter: &str) -> String {
    let changes = outcome.to_json()["changes"].to_string();
    format!(
        "commit={}\npushed={}\nenvironment={}\nchanges<<{delimiter}\n{changes}\n{delimiter}\n",
        outcome.commit.as_deref().unwrap_or(""),
        outcome.pushed,
        outcome.environment
    )
}

fn summary(outcome: &Outcome) -> String {
    let state = if outcome.up_to_date {
        "already up to date".to_string()
    } else if outcome.plan {
        "plan only, nothing pushed".to_string()
    } else {
        format!(
            "pushed `{}`",
            outcome
                .commit
                .as_deref()
                .map_or("", crate::report::short_sha)
        )
    };
    let mut out = format!(
        "### tomoda-promote: {} ({state})\n\n`{}` on branch `{}` of {}\n\n",
        outcome.environment, outcome.file, outcome.branch, outcome.repo
    );
    if !outcome.changes.is_empty() {
        out.push_str("| image | field | old | new |\n| --- | --- | --- | --- |\n");
        for c in &outcome.changes {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                c.image,
                c.field.key(),
                c.old
                    .as_deref()
                    .map_or("".to_string(), |v| format!("`{v}`")),
                c.new
                    .as_deref()
                    .map_or("(removed)".to_string(), |v| format!("`{v}`"))
            ));
        }
    }
    out.push('\n');
    out
}

/// An `::error::` workflow command; `%`, CR and LF must be escaped in its message.
pub fn annotation(error: &Error) -> String {
    let message = error
        .to_string()
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    format!("::error title=tomoda-promote::{message}")
}

/// Folds the diff into a collapsible group of the job log.
pub fn group(title: &str, body: &str) -> String {
    let body = body.strip_suffix('\n').unwrap_or(body);
    format!("::group::{title}\n{body}\n::endgroup::\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kustomize::{Change, Field};

    fn outcome() -> Outcome {
        Outcome {
            environment: "dev".into(),
            repo: "https://h/devops.git".into(),
            branch: "main".into(),
            file: "ov/kustomization.yaml".into(),
            changes: vec![Change {
                image: "reg/app".into(),
                field: Field::NewTag,
                old: Some("v1".into()),
                new: Some("v2".into()),
            }],
            commit: Some("0123456789abcdef".into()),
            pushed: true,
            attempts: 1,
            ..Default::default()
        }
    }

    #[test]
    fn outputs_use_a_heredoc_for_the_json_changes() {
        let text = outputs(&outcome(), "EOF_X");
        assert_eq!(
            text,
            "commit=0123456789abcdef\npushed=true\nenvironment=dev\nchanges<<EOF_X\n[{\"field\":\"newTag\",\"file\":\"ov/kustomization.yaml\",\"image\":\"reg/app\",\"new\":\"v2\",\"old\":\"v1\"}]\nEOF_X\n"
        );
        assert_ne!(delimiter(), delimiter(), "random per call");
    }

    #[test]
    fn the_summary_is_a_markdown_table() {
        let text = summary(&outcome());
        assert!(
            text.contains("| `reg/app` | newTag | `v1` | `v2` |"),
            "{text}"
        );
        assert!(
            text.starts_with("### tomoda-promote: dev (pushed `0123456789ab`)"),
            "{text}"
        );
    }

    #[test]
    fn annotations_escape_newlines() {
        let e = Error::input("f.yaml", Some(3), "bad 100%", "fix it");
        assert_eq!(
            annotation(&e),
            "::error title=tomoda-promote::f.yaml:3: bad 100%25%0A  hint: fix it"
        );
    }
}
