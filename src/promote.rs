//! The promotion: fetch the branch, edit the overlay, commit, push. A push that loses a
//! race is a compare-and-swap failure: fetch the new tip, re-apply the same edit, retry,
//! so that concurrent pipelines all land and none overwrites another.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::git::{self, PushOutcome, Workspace};
use crate::kustomize::Change;
use crate::message::commit_message;
use crate::message::short_sha;
use crate::ordering::{self, History, Older};
use crate::overlay::{self, Entry, FileEdit};
use crate::plan::{Plan, RepoLocation};

pub struct Settings<'a> {
    pub max_attempts: u32,
    pub dry_run: bool,
    /// Promote even when the new tag is older than the deployed one.
    pub allow_downgrade: bool,
    pub history: &'a dyn History,
}

/// What a run did, for everything that reports it: where, which values, how it ended.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub environment: String,
    /// The devops repository as people are shown it: never with credentials.
    pub repo: String,
    pub branch: String,
    /// The kustomization file, relative to the repository's root.
    pub file: String,
    /// The values that change (or would, or did not because the run was skipped).
    pub changes: Vec<Change>,
    /// Rounds of fetch, edit and push it took (0 for a directory, which is only read).
    pub attempts: u32,
    /// `--plan` was asked for: nothing is written, whatever the outcome.
    pub dry_run: bool,
    pub outcome: Outcome,
}

/// How a promotion ended; exactly one of these happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The commit is on the branch.
    Pushed { commit: String },
    /// The file already holds the wanted values: nothing to commit.
    AlreadyUpToDate,
    /// A dry run: the diff and the message the commit would have.
    Planned { diff: String, message: String },
    /// The new value is older than the deployed one; nothing was changed.
    Skipped { older: Older },
}

/// Transient network failures (timeouts, resets, HTTP 429 and 5xx) tolerated in one run.
const MAX_TRANSIENT_FAILURES: u32 = 3;
/// The longest wait a server's Retry-After may ask for before we give up instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How one round of fetch, edit, commit and push ended.
enum Round {
    Done(Box<Promotion>),
    /// The server refused the push; `tip` is what we built on.
    Rejected {
        tip: git2::Oid,
        reason: String,
    },
}

pub fn promote(plan: &Plan, settings: &Settings) -> Result<Promotion> {
    if let RepoLocation::Local(path) = &plan.repo
        && git2::Repository::open(path).is_err()
    {
        return promote_directory(plan, path, settings);
    }
    let workspace = Workspace::new(&plan.repo)?;
    let place = format!("branch {} of {}", plan.branch, plan.repo.display());
    let mut rejected: Option<(git2::Oid, String)> = None;
    let mut in_transit: Option<git2::Oid> = None;
    let mut transient_failures = 0;
    for attempt in 1..=settings.max_attempts {
        let last = attempt == settings.max_attempts;
        let round = Round::run(
            &workspace,
            plan,
            settings,
            &place,
            attempt,
            &rejected,
            &mut in_transit,
        );
        let wait = match round {
            Ok(Round::Done(promotion)) => return Ok(*promotion),
            Ok(Round::Rejected { tip, reason }) => {
                if last {
                    return Err(Error::PushRejected {
                        url: plan.repo.display(),
                        branch: plan.branch.clone(),
                        attempts: attempt,
                        message: reason,
                    });
                }
                let wait = backoff(attempt);
                tracing::info!(
                    "push refused ({reason}); fetching the new tip and retrying in {} ms",
                    wait.as_millis()
                );
                rejected = Some((tip, reason));
                wait
            }
            Err(error) => match git::transport::take_last_failure() {
                Some(git::transport::Failure::Transient { retry_after })
                    if !last && transient_failures < MAX_TRANSIENT_FAILURES =>
                {
                    transient_failures += 1;
                    let wait = match retry_after {
                        Some(asked) if asked > MAX_RETRY_AFTER => {
                            return Err(error.with_note(&format!(
                                "the server asked to retry after {} s, longer than the {} s tomoda-promote waits",
                                asked.as_secs(),
                                MAX_RETRY_AFTER.as_secs()
                            )));
                        }
                        Some(asked) => asked,
                        None => backoff(attempt),
                    };
                    tracing::warn!("{}; retrying in {} ms", error.summary(), wait.as_millis());
                    wait
                }
                _ => return Err(error),
            },
        };
        std::thread::sleep(wait);
    }
    unreachable!("the last attempt returns")
}

impl Round {
    fn run(
        workspace: &Workspace,
        plan: &Plan,
        settings: &Settings,
        place: &str,
        attempt: u32,
        rejected: &Option<(git2::Oid, String)>,
        in_transit: &mut Option<git2::Oid>,
    ) -> Result<Round> {
        git::transport::take_last_failure();
        tracing::info!("fetching {place} (attempt {attempt})");
        let tip = workspace.fetch(&plan.branch)?;
        if let Some((old_tip, reason)) = rejected
            && *old_tip == tip
            && !is_race(reason)
        {
            return Err(Error::PushRejected {
                url: plan.repo.display(),
                branch: plan.branch.clone(),
                attempts: attempt - 1,
                message: format!(
                    "{reason} (the branch did not move: a server hook or branch protection refused the push)"
                ),
            });
        }
        let edit = overlay::promote_overlay(
            |p| workspace.lookup(tip, p),
            &plan.overlay,
            &plan.images,
            place,
        )?;
        let done = |outcome| {
            Ok(Round::Done(Box::new(promotion(
                plan,
                &edit,
                attempt,
                settings.dry_run,
                outcome,
            ))))
        };
        // A push whose answer was lost may have landed all the same.
        if *in_transit == Some(tip) {
            return done(Outcome::Pushed {
                commit: tip.to_string(),
            });
        }
        let message = match decide(&edit, plan, settings)? {
            Decision::End(outcome) => return done(outcome),
            Decision::Commit(message) => message,
        };
        let commit =
            workspace.commit(tip, &edit.path, edit.new.as_bytes(), &message, &plan.author)?;
        tracing::info!("pushing {} to {place}", short_sha(&commit.to_string()));
        *in_transit = Some(commit);
        match workspace.push(&plan.branch)? {
            PushOutcome::Pushed => done(Outcome::Pushed {
                commit: commit.to_string(),
            }),
            PushOutcome::Rejected(reason) => {
                *in_transit = None;
                Ok(Round::Rejected { tip, reason })
            }
        }
    }
}

/// Refusals that mean another push got there first; anything else is checked by
/// whether the branch moved.
fn is_race(reason: &str) -> bool {
    [
        "non-fast-forward",
        "fetch first",
        "lock",
        "stale",
        "cannot lock",
        "failed to update ref",
    ]
    .iter()
    .any(|r| reason.contains(r))
}

/// Exponential backoff with jitter: 200 ms doubling to 6.4 s, each wait drawn from its upper half.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 200u64 << attempt.saturating_sub(1).min(5);
    Duration::from_millis(ceiling / 2 + random_below(ceiling / 2 + 1))
}

fn random_below(bound: u64) -> u64 {
    fastrand::u64(..bound.max(1))
}

/// What an edit leads to.
enum Decision {
    /// The run ends here: already up to date, older than what is deployed, or a plan.
    End(Outcome),
    /// Commit and push, with this message.
    Commit(String),
}

/// The same rules for git and directory sources: nothing to do, an older build, a plan
/// (which gets the diff and the message), or a commit to push.
fn decide(edit: &FileEdit, plan: &Plan, settings: &Settings) -> Result<Decision> {
    if edit.changes.is_empty() {
        tracing::info!("{} already holds the wanted values", edit.path);
        return Ok(Decision::End(Outcome::AlreadyUpToDate));
    }
    if !settings.allow_downgrade
        && let Some(older) = ordering::find_older(&edit.changes, settings.history)
    {
        tracing::warn!("not promoting {}: {}", older.image, older.reason);
        return Ok(Decision::End(Outcome::Skipped { older }));
    }
    let message = commit_message(
        &plan.environment,
        &edit.path,
        &plan.images,
        &edit.changes,
        &plan.context,
    );
    if settings.dry_run {
        let diff = git::unified_diff(&edit.path, &edit.old, &edit.new)?;
        return Ok(Decision::End(Outcome::Planned { diff, message }));
    }
    Ok(Decision::Commit(message))
}

fn promotion(
    plan: &Plan,
    edit: &FileEdit,
    attempts: u32,
    dry_run: bool,
    outcome: Outcome,
) -> Promotion {
    Promotion {
        environment: plan.environment.clone(),
        repo: plan.repo.display(),
        branch: plan.branch.clone(),
        file: edit.path.clone(),
        changes: edit.changes.clone(),
        attempts,
        dry_run,
        outcome,
    }
}

/// A plain directory (such as the bundled example) can be previewed, not promoted to.
fn promote_directory(plan: &Plan, root: &Path, settings: &Settings) -> Result<Promotion> {
    if !root.is_dir() {
        return Err(Error::usage(
            format!(
                "repo {} is neither a git repository nor a directory",
                root.display()
            ),
            "set `repo:` in promote.yaml (or --repo) to the devops repository's https URL or local path",
        ));
    }
    if !settings.dry_run {
        return Err(Error::usage(
            format!(
                "repo {} is a directory, not a git repository: there is nothing to push to",
                root.display()
            ),
            "add --plan to preview the change, or point `repo:` at the devops git repository",
        ));
    }
    let place = format!("directory {}", root.display());
    let lookup = |path: &str| {
        let full = root.join(path);
        match std::fs::symlink_metadata(&full) {
            Err(_) => Entry::Missing,
            Ok(meta) if meta.file_type().is_symlink() => Entry::Symlink,
            Ok(meta) if meta.is_dir() => Entry::Dir,
            Ok(_) => std::fs::read(&full).map_or(Entry::Missing, Entry::File),
        }
    };
    let edit = overlay::promote_overlay(lookup, &plan.overlay, &plan.images, &place)?;
    // Always a plan here (checked above): `decide` never asks for a commit.
    let outcome = match decide(&edit, plan, settings)? {
        Decision::End(outcome) => outcome,
        Decision::Commit(_) => unreachable!("a directory is only planned"),
    };
    Ok(promotion(plan, &edit, 0, true, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..=20 {
            let ceiling = 200u64 << (attempt - 1).min(5);
            let wait = backoff(attempt).as_millis() as u64;
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{attempt}: {wait}");
        }
    }

    #[test]
    fn races_are_told_from_refusals() {
        assert!(is_race("the branch moved (non-fast-forward)"));
        assert!(is_race("failed to lock"));
        assert!(!is_race("pre-receive hook declined"));
    }
}
