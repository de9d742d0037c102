//! Everything the user is told: the result (text or JSON on stdout), the GitHub Actions
//! outputs, summary and annotations, and the one error line. Everything passes through
//! the secret redactor on the way out. Diagnostics go through tracing instead (`logging`).

pub mod github;
mod json;
mod text;

use crate::argocd::Deployment;
use crate::error::Error;
use crate::ordering::Note;
use crate::promote::{Committed, Outcome, Promotion};
use crate::repo::RepoLocation;
use crate::secrets;

pub use json::to_json;
pub use text::to_text;

/// How a result or an error is written: for people, or one JSON object for machines
/// (`--output json`, and Cloud Logging's structured lines for `--log-format json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Prints the result on stdout and, inside a GitHub Actions step, writes its outputs and
/// job summary.
pub fn result(
    promotion: &Promotion,
    deployment: Option<&Deployment>,
    format: Format,
) -> crate::error::Result<()> {
    let on_github = github::active();
    for (kind, text) in warnings(promotion) {
        warn(kind, &text, on_github);
    }
    match format {
        Format::Text => {
            print(&to_text(promotion, on_github));
            if let Some(d) = deployment {
                print(&text::deployment_text(d));
            }
        }
        Format::Json => print(&format!("{}\n", json::to_json_with(promotion, deployment))),
    }
    if on_github {
        github::publish(promotion, deployment)?;
    }
    Ok(())
}

/// What a promotion must not pass silently: a skip (the environment did not move), an
/// order the guard could not tell (warnings), commits on diverged lines (a notice).
fn warnings(promotion: &Promotion) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    if let Outcome::Skipped { older } = &promotion.outcome {
        out.push((
            Level::Warning,
            format!(
                "{}: not promoting {} {}: {}; it stays at {} (pass --allow-downgrade to promote it anyway)",
                promotion.environment, older.image, older.wanted, older.reason, older.deployed
            ),
        ));
    }
    for note in &promotion.notes {
        let level = match note {
            Note::Diverged { .. } => Level::Notice,
            Note::Unknowable { .. } => Level::Warning,
        };
        out.push((level, format!("{}: {}", promotion.environment, note.text())));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Notice,
    Warning,
}

/// On stderr with the progress lines; on GitHub Actions as an annotation, which the runner
/// reads on stderr too and shows on the run's page.
fn warn(level: Level, text: &str, on_github: bool) {
    match (on_github, level) {
        (true, Level::Warning) => {
            eprintln!("{}", github::workflow_command("warning", text));
        }
        (true, Level::Notice) => eprintln!("{}", github::workflow_command("notice", text)),
        (false, Level::Warning) => tracing::warn!("{}", secrets::redact(text)),
        (false, Level::Notice) => tracing::info!("{}", secrets::redact(text)),
    }
}

/// A line of progress while something takes time (Argo CD's sync): on stderr with the
/// other progress lines, in the log format asked for (text, or Cloud Logging's JSON), so
/// that stdout stays the one result.
pub fn progress(line: &str) {
    tracing::info!("{}", secrets::redact(line));
}

/// A promotion through a pull request deploys nothing until the request merges: Argo CD
/// is neither refreshed nor waited for, and the log says so (a warning, since `--wait`
/// may have been asked for).
pub fn not_deployed(app: &str, number: u64) {
    tracing::warn!(
        "Argo CD {app}: not refreshed or waited for: nothing deploys until pull request #{number} merges"
    );
}

/// The devops branch's promotions (`history`).
pub fn history(records: &[crate::history::Record], format: Format) {
    match format {
        Format::Text => print(&crate::history::to_text(records)),
        Format::Json => print(&format!("{}\n", crate::history::to_json(records))),
    }
}

/// A rollback to the values the environment already has: nothing to do.
pub fn already_at(environment: &str, value: &str, format: Format) {
    match format {
        Format::Text => print(&format!(
            "{environment}: already at {value}: nothing to roll back\n"
        )),
        Format::Json => print(&format!(
            "{}\n",
            serde_json::json!({
                "environment": environment, "pushed": false, "up_to_date": true, "commit": null,
            })
        )),
    }
}

/// How a hold or unhold commit to `repo` ended.
pub fn hold_result(what: &str, committed: &Committed, repo: &RepoLocation, format: Format) {
    let (text, commit) = match committed {
        Committed::Pushed { commit } => {
            // A local repository is written to in place, as a promotion's result says.
            let verb = if matches!(repo, RepoLocation::Local(_)) {
                "committed"
            } else {
                "pushed"
            };
            (
                format!("{what}: {verb} {}\n", crate::message::short_sha(commit)),
                Some(commit.as_str()),
            )
        }
        Committed::Unchanged => (format!("{what}: nothing to change\n"), None),
        Committed::Planned {
            diff,
            message,
            request,
        } => (
            format!(
                "{diff}\ncommit message:\n    {}\n\nplan only: nothing was committed or pushed\n{}",
                message.trim_end().replace('\n', "\n    "),
                request
                    .as_ref()
                    .map_or_else(String::new, |r| text::planned_request(r, "the branch")),
            ),
            None,
        ),
        Committed::Proposed {
            url,
            number,
            branch,
            commit,
            updated,
        } => (
            format!(
                "{what}: {} pull request #{number} from {branch} ({}): {url}\n",
                if *updated { "updated" } else { "opened" },
                crate::message::short_sha(commit)
            ),
            None,
        ),
    };
    let (request, planned) = match committed {
        Committed::Proposed {
            url,
            number,
            branch,
            commit,
            updated,
        } => (
            serde_json::json!({
                "url": url, "number": number, "branch": branch, "commit": commit,
                "updated": updated,
            }),
            serde_json::Value::Null,
        ),
        Committed::Planned {
            request: Some(r), ..
        } => (
            serde_json::Value::Null,
            serde_json::json!({"branch": r.branch, "open": r.open}),
        ),
        _ => (serde_json::Value::Null, serde_json::Value::Null),
    };
    match format {
        Format::Text => print(&text),
        Format::Json => print(&format!(
            "{}\n",
            serde_json::json!({
                "action": what,
                "commit": commit,
                "pushed": commit.is_some(),
                "plan": matches!(committed, Committed::Planned { .. }),
                "pull_request": request,
                "planned_request": planned,
            })
        )),
    }
}

/// Tells the user what failed, once, in the form the log format asks for.
pub fn error(error: &Error, format: Format) {
    let text = format!("tomoda-promote: error: {error}");
    let line = match format {
        Format::Text => text,
        // As Cloud Logging reads the progress lines (`logging`), for the one that is not
        // an event of tracing.
        Format::Json => serde_json::json!({"severity": "ERROR", "message": text}).to_string(),
    };
    eprintln!("{}", secrets::redact(&line));
    if github::active() {
        println!("{}", secrets::redact(&github::annotation(error)));
    }
}

/// Prints to stdout, with every registered secret masked.
pub fn print(text: &str) {
    print!("{}", secrets::redact(text));
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::kustomize::Field;
    use crate::promote::{Outcome, Promotion};
    use crate::targets::{Change, Subject};

    pub const DIGEST: &str =
        "sha256:0000000000000000000000000000000000000000000000000000000000000abc";

    /// What the registry check found for the fixtures' image.
    pub fn verified() -> crate::registry::Verified {
        crate::registry::Verified {
            image: "reg/app".into(),
            tag: "v2".into(),
            digest: DIGEST.into(),
        }
    }

    /// A pushed promotion of one tag, for the renderers' tests.
    pub fn pushed() -> Promotion {
        Promotion {
            environment: "dev".into(),
            repo: "https://h/devops.git".into(),
            branch: "main".into(),
            local: false,
            files: vec!["ov/kustomization.yaml".into()],
            changes: vec![Change {
                file: "ov/kustomization.yaml".into(),
                subject: Subject::Entry {
                    image: "reg/app".into(),
                    field: Field::NewTag,
                },
                old: Some("v1".into()),
                new: Some("v2".into()),
            }],
            attempts: 1,
            dry_run: false,
            outcome: Outcome::Pushed {
                commit: "0123456789abcdef".into(),
            },
            images: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A pushed promotion of an overlay's tag and a values file's key path.
    pub fn pushed_two_files() -> Promotion {
        let mut p = pushed();
        p.files.push("charts/api/values-dev.yaml".into());
        p.changes.push(Change {
            file: "charts/api/values-dev.yaml".into(),
            subject: Subject::Value {
                path: "image.tag".into(),
            },
            old: Some("v1".into()),
            new: Some("v2".into()),
        });
        p
    }
}
