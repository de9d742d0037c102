//! GitHub Actions integration: step outputs, a job summary, and annotations, written only
//! when the binary runs as an Action step (`GITHUB_ACTIONS=true`).

use std::io::Write;
use std::path::Path;

use crate::argocd::Deployment;
use crate::error::{Error, Result};
use crate::message::short_sha;
use crate::promote::{Outcome, Promotion};
use crate::report::json::to_json;
use crate::report::text::{changed_files, deployment_text};
use crate::secrets;

pub fn active() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Writes the outputs `commit`, `pushed`, `environment`, `changes` (JSON), `up_to_date`,
/// `skipped` (the reason, as in the JSON result, or empty), `images` (JSON) and
/// `pull_request_url` and `pull_request_number` (empty without a request) to
/// `$GITHUB_OUTPUT`, and a Markdown table of the changes to `$GITHUB_STEP_SUMMARY`; when
/// Argo CD was asked, also `deployed` and a line of what it said.
pub fn publish(promotion: &Promotion, deployment: Option<&Deployment>) -> Result<()> {
    if let Some(path) = std::env::var_os("GITHUB_OUTPUT") {
        let mut text = outputs(promotion, &delimiter());
        if let Some(d) = deployment {
            text.push_str(&format!("deployed={}\n", deployed(d)));
        }
        append(Path::new(&path), &text)?;
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        let mut text = summary(promotion);
        if let Some(d) = deployment {
            text.push_str(&format!("\n{}", deployment_text(d)));
        }
        append(Path::new(&path), &text)?;
    }
    Ok(())
}

/// Argo CD runs the commit, Synced and Healthy, as the wait saw it.
pub(crate) fn deployed(d: &Deployment) -> bool {
    d.waited && d.failure.is_none() && d.sync == "Synced" && d.health == "Healthy"
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
    format!("ghadelimiter_{:016x}", fastrand::u64(..))
}

fn outputs(promotion: &Promotion, delimiter: &str) -> String {
    let commit = match &promotion.outcome {
        Outcome::Pushed { commit } => commit.as_str(),
        _ => "",
    };
    let json = to_json(promotion);
    let skipped = json["skipped"].as_str().unwrap_or_default();
    let (changes, images) = (json["changes"].to_string(), json["images"].to_string());
    let (request_url, request_number) = match &promotion.outcome {
        Outcome::Proposed { url, number, .. } => (url.clone(), number.to_string()),
        _ => (String::new(), String::new()),
    };
    format!(
        "commit={commit}\npushed={}\nenvironment={}\nchanges<<{delimiter}\n{changes}\n{delimiter}\nup_to_date={}\nskipped={skipped}\nimages<<{delimiter}\n{images}\n{delimiter}\npull_request_url={request_url}\npull_request_number={request_number}\n",
        !commit.is_empty(),
        promotion.environment,
        json["up_to_date"],
    )
}

fn summary(promotion: &Promotion) -> String {
    let state = match &promotion.outcome {
        Outcome::AlreadyUpToDate => "already up to date".to_string(),
        Outcome::Skipped { older } => {
            format!("skipped: `{}` stays at `{}`", older.image, older.deployed)
        }
        Outcome::Held { hold } => format!("skipped: held: {}", hold.reason),
        Outcome::Planned { .. } => "plan only, nothing pushed".to_string(),
        Outcome::Pushed { commit } => format!("pushed `{}`", short_sha(commit)),
        Outcome::Proposed {
            url,
            number,
            updated,
            ..
        } => format!(
            "pull request [#{number}]({url}) {}",
            if *updated { "updated" } else { "opened" }
        ),
    };
    let files: Vec<String> = promotion.files.iter().map(|f| format!("`{f}`")).collect();
    let mut out = format!(
        "### tomoda-promote: {} ({state})\n\n{} on branch `{}` of {}\n\n",
        promotion.environment,
        files.join(", "),
        promotion.branch,
        promotion.repo
    );
    for note in &promotion.notes {
        out.push_str(&format!("> {}\n\n", note.text()));
    }
    // One file is named above; several get a column of their own.
    let several = changed_files(promotion).len() > 1;
    if !promotion.changes.is_empty() {
        if several {
            out.push_str("| file | image | field | old | new |\n| --- | --- | --- | --- | --- |\n");
        } else {
            out.push_str("| image | field | old | new |\n| --- | --- | --- | --- |\n");
        }
        for c in &promotion.changes {
            if several {
                out.push_str(&format!("| `{}` ", c.file));
            }
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.image().map_or(String::new(), |i| format!("`{i}`")),
                c.field(),
                c.old.as_deref().map_or(String::new(), |v| format!("`{v}`")),
                c.new
                    .as_deref()
                    .map_or("(removed)".to_string(), |v| format!("`{v}`"))
            ));
        }
    }
    out.push('\n');
    out
}

/// An `::error::` workflow command. Redacted before it is escaped (`%`, CR and LF), so
/// that a secret is masked in the form it was registered in.
pub fn annotation(error: &Error) -> String {
    workflow_command("error", &error.to_string())
}

/// A `::warning::` or `::notice::` annotation, as [`annotation`] escapes it.
pub fn workflow_command(kind: &str, text: &str) -> String {
    let message = secrets::redact(text)
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    format!("::{kind} title=tomoda-promote::{message}")
}

/// Folds the diff into a collapsible group of the job log.
pub fn group(title: &str, body: &str) -> String {
    let body = body.strip_suffix('\n').unwrap_or(body);
    format!("::group::{title}\n{body}\n::endgroup::\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::pushed as outcome;

    #[test]
    fn outputs_use_a_heredoc_for_the_json_changes() {
        let text = outputs(&outcome(), "EOF_X");
        assert_eq!(
            text,
            "commit=0123456789abcdef\npushed=true\nenvironment=dev\nchanges<<EOF_X\n[{\"field\":\"newTag\",\"file\":\"ov/kustomization.yaml\",\"image\":\"reg/app\",\"new\":\"v2\",\"old\":\"v1\"}]\nEOF_X\nup_to_date=false\nskipped=\nimages<<EOF_X\n[]\nEOF_X\npull_request_url=\npull_request_number=\n"
        );
        let mut verified = outcome();
        verified.images = vec![crate::report::fixtures::verified()];
        assert!(outputs(&verified, "EOF_X").contains(&format!(
            "images<<EOF_X\n[{{\"digest\":\"{}\",\"image\":\"reg/app\",\"tag\":\"v2\"}}]\nEOF_X\n",
            crate::report::fixtures::DIGEST
        )));
        assert_ne!(delimiter(), delimiter(), "random per call");
        let mut proposed = outcome();
        proposed.outcome = Outcome::Proposed {
            url: "https://github.example/o/r/pull/7".into(),
            number: 7,
            branch: "promote/dev/app".into(),
            commit: "0123456789abcdef".into(),
            updated: false,
            auto_merge: false,
        };
        let text = outputs(&proposed, "EOF_X");
        assert!(text.starts_with("commit=\npushed=false\n"), "{text}");
        assert!(
            text.ends_with(
                "pull_request_url=https://github.example/o/r/pull/7\npull_request_number=7\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn up_to_date_and_skipped_are_outputs_of_their_own() {
        let mut done = outcome();
        done.outcome = Outcome::AlreadyUpToDate;
        let text = outputs(&done, "EOF_X");
        assert!(
            text.starts_with("commit=\npushed=false\n")
                && text.contains("\nup_to_date=true\nskipped=\nimages<<"),
            "{text}"
        );
        done.outcome = Outcome::Skipped {
            older: crate::ordering::Older {
                image: "reg/app".into(),
                deployed: "v2".into(),
                wanted: "v1".into(),
                reason: "version v1 is older than v2".into(),
            },
        };
        let text = outputs(&done, "EOF_X");
        assert!(
            text.contains("\nup_to_date=false\nskipped=older\nimages<<"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_is_a_markdown_table() {
        let text = summary(&outcome());
        assert!(
            text.contains("| `reg/app` | newTag | `v1` | `v2` |"),
            "{text}"
        );
        assert!(
            text.starts_with("### tomoda-promote: dev (pushed `0123456`)"),
            "{text}"
        );
    }

    #[test]
    fn several_files_get_a_file_column() {
        let text = summary(&crate::report::fixtures::pushed_two_files());
        assert!(
            text.contains("`ov/kustomization.yaml`, `charts/api/values-dev.yaml` on branch `main`"),
            "{text}"
        );
        assert!(
            text.contains("| `charts/api/values-dev.yaml` |  | image.tag | `v1` | `v2` |"),
            "{text}"
        );
    }

    #[test]
    fn a_skipped_promotion_is_not_summarised_as_a_push() {
        let mut skipped = outcome();
        skipped.outcome = Outcome::Skipped {
            older: crate::ordering::Older {
                image: "reg/app".into(),
                deployed: "v2".into(),
                wanted: "v1".into(),
                reason: "version v1 is older than v2".into(),
            },
        };
        let text = summary(&skipped);
        assert!(
            text.starts_with("### tomoda-promote: dev (skipped: `reg/app` stays at `v2`)"),
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
