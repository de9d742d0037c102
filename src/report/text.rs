//! The result as people read it in a build log.

use std::fmt::Write;

use crate::argocd::Deployment;
use crate::message::{change_line, short_sha};
use crate::ordering::Note;
use crate::promote::{Outcome, PlannedRequest, Promotion};
use crate::report::github;

/// `on_github`: fold the diff into a collapsible group of the Actions log.
pub fn to_text(promotion: &Promotion, on_github: bool) -> String {
    let p = promotion;
    let target = format!("branch {} of {}", p.branch, p.repo);
    let mut out = String::new();
    // What the registry check found comes first, as it happened first.
    for v in &p.images {
        let _ = writeln!(out, "verified {}:{} {}", v.image, v.tag, v.digest);
    }
    match &p.outcome {
        Outcome::Skipped { older } => {
            let _ = writeln!(
                out,
                "{}: skipped: {} stays at {} in {target}: {}; pass --allow-downgrade to promote {} anyway",
                p.environment, older.image, older.deployed, older.reason, older.wanted
            );
        }
        Outcome::Held { hold } => {
            let _ = writeln!(
                out,
                "{}: skipped: held since {} by {}: {}; `tomoda-promote unhold --env {}` lets promotions land again",
                p.environment, hold.since, hold.who, hold.reason, p.environment
            );
        }
        Outcome::AlreadyUpToDate => {
            let verb = if p.files.len() == 1 { "holds" } else { "hold" };
            let _ = writeln!(
                out,
                "{}: already up to date: {} in {target} {verb} the wanted values",
                p.environment,
                p.files.join(", ")
            );
        }
        Outcome::Planned {
            diff,
            message,
            request,
        } => {
            diverged(&mut out, p);
            if on_github {
                let title = format!("diff of {}", changed_files(p).join(", "));
                out.push_str(&github::group(&title, diff));
            } else {
                out.push_str(diff);
                if !diff.ends_with('\n') {
                    out.push('\n');
                }
            }
            out.push_str("\ncommit message:\n");
            for line in message.lines() {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(
                out,
                "\nplan only: nothing was committed or pushed to {target}"
            );
            if let Some(request) = request {
                out.push_str(&planned_request(request, &target));
            }
        }
        Outcome::Proposed {
            url,
            number,
            branch,
            commit,
            updated,
            auto_merge,
        } => {
            changed(&mut out, p);
            let verb = if *updated { "updated" } else { "opened" };
            let _ = writeln!(
                out,
                "{verb} pull request #{number} from {branch} ({}) to {target}: {url}",
                short_sha(commit)
            );
            if *auto_merge {
                let _ = writeln!(out, "auto-merge is on: it merges once its checks pass");
            }
        }
        Outcome::Pushed { commit } => {
            changed(&mut out, p);
            // A local repository is written to in place: nothing went over the network.
            let verb = if p.local { "committed" } else { "pushed" };
            let _ = writeln!(
                out,
                "{verb} {} to {target} (attempt {})",
                short_sha(commit),
                p.attempts
            );
        }
    }
    out
}

/// What a run without `--plan` would do with a pull request to `target`.
pub fn planned_request(request: &PlannedRequest, target: &str) -> String {
    match request.open {
        Some(number) => format!(
            "a run would update the open pull request #{number} from {} to {target}\n",
            request.branch
        ),
        None => format!(
            "a run would open a pull request from {} to {target}\n",
            request.branch
        ),
    }
}

/// Commits on diverged lines are promoted, and the result says so.
fn diverged(out: &mut String, p: &Promotion) {
    for note in p
        .notes
        .iter()
        .filter(|n| matches!(n, Note::Diverged { .. }))
    {
        let _ = writeln!(out, "{}: note: {}", p.environment, note.text());
    }
}

/// Each changed file and its changes, after the guard's note on diverged commits.
fn changed(out: &mut String, p: &Promotion) {
    diverged(out, p);
    for file in changed_files(p) {
        let _ = writeln!(out, "{}: {file}", p.environment);
        for change in p.changes.iter().filter(|c| c.file == file) {
            out.push_str(&change_line(change));
        }
    }
}

/// What Argo CD said after the push, one line.
pub fn deployment_text(d: &Deployment) -> String {
    let revisions: Vec<&str> = d.revisions.iter().map(|r| short_sha(r)).collect();
    let state = format!(
        "revision {}, {}, {}",
        if revisions.is_empty() {
            "unknown".to_string()
        } else {
            revisions.join(", ")
        },
        d.sync,
        d.health
    );
    match (&d.failure, d.waited) {
        (Some(why), _) => format!("Argo CD {}: not deployed: {why}\n", d.app),
        (None, true) => format!("Argo CD {}: deployed ({state})\n", d.app),
        (None, false) => format!(
            "Argo CD {}: refreshed ({state}); pass --wait to wait for Synced and Healthy\n",
            d.app
        ),
    }
}

/// The files that change, in the order of the promotion's files.
pub(crate) fn changed_files(p: &Promotion) -> Vec<&str> {
    let mut files: Vec<&str> = Vec::new();
    for change in &p.changes {
        if !files.contains(&change.file.as_str()) {
            files.push(&change.file);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ordering::Older;
    use crate::report::fixtures;

    #[test]
    fn each_outcome_reads_as_one_sentence_of_what_happened() {
        let mut p = fixtures::pushed();
        assert_eq!(
            to_text(&p, false),
            "dev: ov/kustomization.yaml\n  reg/app newTag: v1 -> v2\npushed 0123456 to branch main of https://h/devops.git (attempt 1)\n"
        );
        p.outcome = Outcome::AlreadyUpToDate;
        assert_eq!(
            to_text(&p, false),
            "dev: already up to date: ov/kustomization.yaml in branch main of https://h/devops.git holds the wanted values\n"
        );
        p.outcome = Outcome::Skipped {
            older: Older {
                image: "reg/app".into(),
                deployed: "v2".into(),
                wanted: "v1".into(),
                reason: "version v1 is older than v2".into(),
            },
        };
        assert_eq!(
            to_text(&p, false),
            "dev: skipped: reg/app stays at v2 in branch main of https://h/devops.git: version v1 is older than v2; pass --allow-downgrade to promote v1 anyway\n"
        );
    }

    #[test]
    fn verified_images_come_first_with_their_digests() {
        let mut p = fixtures::pushed();
        p.images = vec![fixtures::verified()];
        assert!(
            to_text(&p, false).starts_with(&format!(
                "verified reg/app:v2 {}\ndev: ov/kustomization.yaml\n",
                fixtures::DIGEST
            )),
            "{}",
            to_text(&p, false)
        );
    }

    #[test]
    fn every_file_and_change_is_listed() {
        let mut p = fixtures::pushed_two_files();
        assert_eq!(
            to_text(&p, false),
            "dev: ov/kustomization.yaml\n  reg/app newTag: v1 -> v2\ndev: charts/api/values-dev.yaml\n  image.tag: v1 -> v2\npushed 0123456 to branch main of https://h/devops.git (attempt 1)\n"
        );
        p.outcome = Outcome::AlreadyUpToDate;
        assert!(
            to_text(&p, false).starts_with(
                "dev: already up to date: ov/kustomization.yaml, charts/api/values-dev.yaml in branch main of https://h/devops.git hold the wanted values"
            ),
            "{}",
            to_text(&p, false)
        );
    }

    #[test]
    fn a_plan_shows_the_diff_the_message_and_that_nothing_was_pushed() {
        let mut p = fixtures::pushed();
        p.dry_run = true;
        p.outcome = Outcome::Planned {
            diff: "-a\n+b".into(),
            message: "subject\n\nbody\n".into(),
            request: None,
        };
        assert_eq!(
            to_text(&p, false),
            "-a\n+b\n\ncommit message:\n    subject\n    \n    body\n\nplan only: nothing was committed or pushed to branch main of https://h/devops.git\n"
        );
        assert!(
            to_text(&p, true)
                .starts_with("::group::diff of ov/kustomization.yaml\n-a\n+b\n::endgroup::\n"),
            "folded on GitHub"
        );
    }

    #[test]
    fn a_local_repository_is_committed_to_not_pushed() {
        let mut p = fixtures::pushed();
        p.repo = "/srv/devops".into();
        p.local = true;
        assert!(
            to_text(&p, false)
                .ends_with("committed 0123456 to branch main of /srv/devops (attempt 1)\n"),
            "{}",
            to_text(&p, false)
        );
    }

    #[test]
    fn a_plan_in_pull_request_mode_says_which_request_it_would_open_or_update() {
        let mut p = fixtures::pushed();
        p.dry_run = true;
        let mut request = PlannedRequest {
            branch: "promote/dev/app".into(),
            open: None,
        };
        p.outcome = Outcome::Planned {
            diff: "-a\n+b\n".into(),
            message: "subject\n".into(),
            request: Some(request.clone()),
        };
        assert!(
            to_text(&p, false).ends_with("plan only: nothing was committed or pushed to branch main of https://h/devops.git\na run would open a pull request from promote/dev/app to branch main of https://h/devops.git\n"),
            "{}",
            to_text(&p, false)
        );
        request.open = Some(7);
        p.outcome = Outcome::Planned {
            diff: "-a\n+b\n".into(),
            message: "subject\n".into(),
            request: Some(request),
        };
        assert!(to_text(&p, false).ends_with(
            "a run would update the open pull request #7 from promote/dev/app to branch main of https://h/devops.git\n"
        ));
    }
}
