//! The promotion: read the branch, edit the overlay, commit as a compare-and-swap. A
//! commit that loses a race is retried: read the new head, re-apply the same edit, commit
//! again, so that concurrent pipelines all land and none overwrites another. The branch is
//! a [`DevopsBranch`]: git (fetch and push) or a forge's API, the loop is the same. With
//! `pull_request:` the commit goes to the tool's own branch, made from the target's tip,
//! and a request to the target is opened or updated instead.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::branch::{DevopsBranch, GitBranch, Landed, NewCommit};
use crate::config::CommitVia;
use crate::error::{Error, Result, Retry};
use crate::forge::{ForgeApi, Proposal};
use crate::git::{self, HttpTransport, Refusal, Workspace};
use crate::holds::Hold;
use crate::message::{commit_message, request_body};
use crate::ordering::{self, History, Note, Older};
use crate::overlay::Entry;
use crate::plan::{Identity, Plan, PullRequest};
use crate::pulled::{self, Pulled};
use crate::registry::Verified;
use crate::repo::{ForgeRepo, RepoLocation};
use crate::targets::{self, Change, Edit};

pub struct Settings<'a> {
    pub max_attempts: u32,
    pub dry_run: bool,
    /// Promote even when the new tag is older than the deployed one.
    pub allow_downgrade: bool,
    pub history: &'a dyn History,
    /// How the devops branch is read and committed to.
    pub access: Access,
    /// A promotion, or a rollback (which passes holds and the ordering guard on purpose).
    pub purpose: Purpose,
    /// The forge's API for the plan's pull request (with `pull_request:` only).
    pub requests: Option<&'a dyn ForgeApi>,
    /// The registry check (`None`: --no-verify).
    pub verify: Option<&'a Check<'a>>,
}

/// The registry check, handed the image references the edit makes the cluster pull; it
/// answers with the images found and their digests, which pin the edit. It runs in every
/// round, after the files are read and before the commit: a retry reads files another
/// pipeline may have changed (a new `newName`). The registry's code stays in `registry/`.
pub type Check<'a> = RefCell<dyn FnMut(&[Pulled]) -> Result<Vec<Verified>> + 'a>;

/// Why the commit is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    Promote,
    /// Sets values back: the message says `rollback(env)` and names the undone commits.
    Rollback {
        of: Vec<String>,
    },
}

/// The two ways to the devops branch; everything else about a promotion is the same.
pub enum Access {
    /// Fetch and push over git (http(s)), or a local repository or directory.
    Git(HttpTransport),
    /// A forge's API: one file read and one commit request, whatever the repository's size.
    Api(Box<dyn DevopsBranch>),
}

/// What a run did, for everything that reports it: where, which values, how it ended.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub environment: String,
    /// The devops repository as people are shown it: never with credentials.
    pub repo: String,
    pub branch: String,
    /// The repository is a local one (a path): its branch is committed to, not pushed to
    /// a server.
    pub local: bool,
    /// Every file the plan's targets reach, relative to the repository's root, in the
    /// order of the targets (an overlay stands for its kustomization file).
    pub files: Vec<String>,
    /// The values that change in any of them (or would, or did not because the run was
    /// skipped), each with its file.
    pub changes: Vec<Change>,
    /// Rounds of fetch, edit and push it took (0 for a directory, which is only read).
    pub attempts: u32,
    /// `--plan` was asked for: nothing is written, whatever the outcome.
    pub dry_run: bool,
    pub outcome: Outcome,
    /// The images the registry check found, with their digests (empty without it).
    pub images: Vec<Verified>,
    /// What the ordering guard says of a promotion it let through: commits on diverged
    /// lines, or an order it could not tell (a warning).
    pub notes: Vec<Note>,
}

/// How a promotion ended; exactly one of these happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The commit is on the branch.
    Pushed { commit: String },
    /// Every file already holds the wanted values: nothing to commit.
    AlreadyUpToDate,
    /// A dry run: the diff of every changed file and the message the commit would have;
    /// with `pull_request:`, the request it would open or update.
    Planned {
        diff: String,
        message: String,
        request: Option<PlannedRequest>,
    },
    /// The new value is older than the deployed one; nothing was changed.
    Skipped { older: Older },
    /// The environment is held (`tomoda-promote hold`); nothing was changed.
    Held { hold: Hold },
    /// `pull_request:`: the commit is on the tool's own branch, and a request to the
    /// target branch is open (opened now, or the open one `updated`).
    Proposed {
        url: String,
        number: u64,
        branch: String,
        commit: String,
        updated: bool,
        /// Auto-merge was asked for and enabled.
        auto_merge: bool,
    },
}

/// The request a dry run would open, or update, from the tool's branch to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    /// `promote/<environment>/<image>`.
    pub branch: String,
    /// The number of the open request from `branch` to the target, which a real run would
    /// update; `None`: it would open one.
    pub open: Option<u64>,
}

impl Promotion {
    /// Why nothing was changed, when the promotion was skipped (older, or held).
    pub fn skipped_because(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Skipped { older } => Some(format!(
                "{} stays at {}: {}",
                older.image, older.deployed, older.reason
            )),
            Outcome::Held { hold } => Some(format!(
                "held since {} by {}: {}",
                hold.since, hold.who, hold.reason
            )),
            _ => None,
        }
    }
}

impl Access {
    /// The way `plan.commit_via` asks for, speaking with `token` (sent as `username`);
    /// `dry_run`: only reads, which a public repository allows without a token.
    pub fn for_plan(
        plan: &Plan,
        token: Option<String>,
        username: &str,
        timeout: Duration,
        dry_run: bool,
    ) -> Result<Access> {
        Access::open(
            &plan.repo,
            plan.commit_via,
            plan.forge.as_ref(),
            token,
            username,
            timeout,
            dry_run,
        )
    }

    /// The way `commit_via` asks for to `repo` (on `forge`, which the API needs).
    pub fn open(
        repo: &RepoLocation,
        commit_via: CommitVia,
        forge: Option<&ForgeRepo>,
        token: Option<String>,
        username: &str,
        timeout: Duration,
        dry_run: bool,
    ) -> Result<Access> {
        match (commit_via, forge) {
            (CommitVia::Api, Some(forge)) => {
                let api = open_api(repo, forge, token, username, timeout, dry_run)?;
                tracing::info!(
                    "committing through the {} API at {}",
                    forge.forge.name(),
                    forge.api_url
                );
                Ok(Access::Api(Box::new(crate::forge::ApiBranch::new(api))))
            }
            _ => Ok(Access::Git(HttpTransport::for_repo(
                repo, token, username, timeout,
            )?)),
        }
    }
}

/// The forge's API for the plan's pull request; `None` without `pull_request:`.
pub fn requests_for(
    plan: &Plan,
    token: Option<String>,
    username: &str,
    timeout: Duration,
    dry_run: bool,
) -> Result<Option<Box<dyn ForgeApi>>> {
    if plan.pull_request.is_none() {
        return Ok(None);
    }
    requests_to(
        &plan.repo,
        plan.forge.as_ref(),
        token,
        username,
        timeout,
        dry_run,
    )
}

/// The API of `repo`'s forge for its pull requests; `None` off a forge.
pub fn requests_to(
    repo: &RepoLocation,
    forge: Option<&ForgeRepo>,
    token: Option<String>,
    username: &str,
    timeout: Duration,
    dry_run: bool,
) -> Result<Option<Box<dyn ForgeApi>>> {
    forge
        .map(|forge| open_api(repo, forge, token, username, timeout, dry_run))
        .transpose()
}

/// The forge's API speaking with the token (the one given, else the repository URL's).
/// A run that only reads (a plan, `history`) without one reads anonymously, as a public
/// repository allows, and says so; a run that commits still needs the token.
pub fn open_api(
    repo: &RepoLocation,
    forge: &ForgeRepo,
    token: Option<String>,
    username: &str,
    timeout: Duration,
    reads_only: bool,
) -> Result<Box<dyn ForgeApi>> {
    match api_token(repo, token) {
        None if reads_only => {
            // Once a run (the pull request's API is opened too), on the progress lines:
            // a private repository then answers as if it did not exist.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    "no token: reading {} through the {} API anonymously, which a public repository allows (at a lower rate limit; a private one answers as if missing); a run that commits needs GIT_TOKEN (or --git-token-file, --github-app-id, --cloudbuild-repository)",
                    repo.display(),
                    forge.forge.name()
                );
            });
            crate::forge::open_anonymous(forge, timeout)
        }
        token => crate::forge::open(forge, &repo.display(), token, username, timeout),
    }
}

/// The token for a forge's API: the one given, else the one in the repository's URL.
pub fn api_token(repo: &RepoLocation, token: Option<String>) -> Option<String> {
    token.or_else(|| match repo {
        RepoLocation::Remote {
            credentials: Some(c),
            ..
        } => {
            crate::secrets::register(&c.password);
            Some(c.password.clone())
        }
        _ => None,
    })
}

/// Transient network failures (timeouts, resets, HTTP 429 and 5xx) tolerated in one run:
/// as many as one request to any other service may have.
pub const MAX_TRANSIENT_FAILURES: u32 = crate::error::MAX_RETRIES;
pub use crate::error::MAX_RETRY_AFTER;

/// How one round of fetch, edit, commit and push ended.
enum Round<T> {
    Done(T),
    /// The server refused the push.
    Rejected(Rejected),
}

/// A refused push and the tip it was built on, kept to tell a race from a refusal.
struct Rejected {
    tip: String,
    refusal: Refusal,
}

pub fn promote(plan: &Plan, settings: &Settings) -> Result<Promotion> {
    if let RepoLocation::Local(path) = &plan.repo
        && git2::Repository::open(path).is_err()
    {
        return promote_directory(plan, path, settings);
    }
    let opened = Opened::open(&settings.access, &plan.repo)?;
    let branch = opened.branch();
    let place = opened.place(&plan.branch, &plan.repo.display());
    let promotion = retry_rounds(
        &plan.repo.display(),
        &plan.branch,
        settings.max_attempts,
        &mut std::thread::sleep,
        |attempt, rejected| Round::run(branch, plan, settings, &place, attempt, rejected),
    )?;
    Ok(*promotion)
}

/// The compare-and-swap loop: runs rounds until one is done, sleeping between them
/// (through `sleep`, so that tests see the waits without waiting). A refused push is
/// retried on the new tip after a short wait, up to `max_attempts` rounds; a failure the
/// transport judged transient, up to [`MAX_TRANSIENT_FAILURES`] times, after the server's
/// Retry-After when it gave one; anything else ends the run.
fn retry_rounds<T>(
    repo: &str,
    branch: &str,
    max_attempts: u32,
    sleep: &mut dyn FnMut(Duration),
    mut round: impl FnMut(u32, Option<&Rejected>) -> Result<Round<T>>,
) -> Result<T> {
    let mut rejected: Option<Rejected> = None;
    let mut transient_failures = 0;
    for attempt in 1..=max_attempts {
        let last = attempt == max_attempts;
        let wait = match round(attempt, rejected.as_ref()) {
            Ok(Round::Done(done)) => return Ok(done),
            Ok(Round::Rejected(refused)) => {
                if last {
                    return Err(Error::PushRejected {
                        url: repo.to_string(),
                        branch: branch.to_string(),
                        attempts: attempt,
                        message: refused.refusal.reason,
                    });
                }
                let wait = race_wait(attempt);
                tracing::info!(
                    "push refused ({}); fetching the new tip and retrying in {} ms",
                    refused.refusal.reason,
                    wait.as_millis()
                );
                rejected = Some(refused);
                wait
            }
            Err(error) => match error.retry() {
                Retry::Transient { after }
                    if !last && transient_failures < MAX_TRANSIENT_FAILURES =>
                {
                    transient_failures += 1;
                    let wait = match after {
                        Some(asked) if asked > MAX_RETRY_AFTER => {
                            return Err(error.with_note(&format!(
                                "the server asked to retry after {} s, longer than the {} s tomoda-promote waits",
                                asked.as_secs(),
                                MAX_RETRY_AFTER.as_secs()
                            )));
                        }
                        Some(asked) => asked,
                        None => Retry::backoff(attempt),
                    };
                    tracing::warn!("{}; retrying in {} ms", error.summary(), wait.as_millis());
                    wait
                }
                _ => return Err(error),
            },
        };
        sleep(wait);
    }
    unreachable!("the last attempt returns")
}

/// The wait after a refused push. The branch has usually moved on: another promotion
/// landed, and its new commit is a small fetch away, so a fixed floor only idles. A wait
/// drawn from zero up to a ceiling (100 ms, doubling to 3.2 s) spreads the pipelines that
/// lost together; with 32 racing on 2 cores this landed them all in about half the time
/// of a wait drawn from the upper half of twice that (scripts/bench).
fn race_wait(attempt: u32) -> Duration {
    let ceiling = 100u64 << attempt.saturating_sub(1).min(5);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

/// After a refused push, the new fetch tells a race from a refusal: libgit2 saw a
/// non-fast-forward, or the branch moved, so another push got there first (retry on the
/// new tip); else a hook or protection rule said no, and would again.
fn refusal_stands(
    repo: &str,
    branch: &str,
    rejected: Option<&Rejected>,
    tip: &str,
    attempt: u32,
) -> Result<()> {
    match rejected {
        Some(Rejected {
            tip: old_tip,
            refusal,
        }) if old_tip == tip && !refusal.not_fast_forward => Err(Error::PushRefused {
            url: repo.to_string(),
            branch: branch.to_string(),
            attempts: attempt - 1,
            reason: refusal.reason.clone(),
            server_said: refusal.server_said.clone(),
        }),
        _ => Ok(()),
    }
}

impl Round<Box<Promotion>> {
    fn run(
        branch: &dyn DevopsBranch,
        plan: &Plan,
        settings: &Settings,
        place: &str,
        attempt: u32,
        rejected: Option<&Rejected>,
    ) -> Result<Self> {
        tracing::info!("reading {place} (attempt {attempt})");
        let tip = branch.read_head(&plan.branch)?;
        refusal_stands(&plan.repo.display(), &plan.branch, rejected, &tip, attempt)?;
        let snapshot = Snapshot::new(branch, &tip);
        let (plan, edits, images) = snapshot.read(checked_edits(
            &|p| snapshot.lookup(p),
            plan,
            settings,
            place,
        ))?;
        let plan = plan.as_ref();
        let done = |outcome, notes| {
            let mut promotion = promotion(plan, &edits, attempt, settings.dry_run, outcome);
            promotion.images.clone_from(&images);
            promotion.notes = notes;
            Ok(Round::Done(Box::new(promotion)))
        };
        // A push whose answer was lost may have landed all the same.
        if branch.landed_unanswered(&tip)? {
            return done(Outcome::Pushed { commit: tip }, Vec::new());
        }
        if let Some(hold) = snapshot.read(held(|p| snapshot.lookup(p), plan, settings))? {
            return done(Outcome::Held { hold }, Vec::new());
        }
        let (decision, notes) = decide(&edits, plan, settings)?;
        let message = match decision {
            Decision::End(Outcome::Planned { diff, message, .. }) => {
                let request = plan_request(plan.pull_request.as_ref(), &plan.branch, settings);
                return done(
                    Outcome::Planned {
                        diff,
                        message,
                        request,
                    },
                    notes,
                );
            }
            Decision::End(outcome) => return done(outcome, notes),
            Decision::Commit(message) => message,
        };
        let files: Vec<(&str, &[u8])> = edits
            .iter()
            .filter(|e| e.changed())
            .map(|e| (e.path.as_str(), e.new.as_bytes()))
            .collect();
        let new_commit = NewCommit {
            files: &files,
            message: &message,
            author: &plan.author,
        };
        if let Some(request) = &plan.pull_request {
            let mut diff = String::new();
            for edit in edits.iter().filter(|e| e.changed()) {
                diff.push_str(&git::unified_diff(&edit.path, &edit.old, &edit.new)?);
            }
            let change = Proposing {
                base: &plan.branch,
                commit: new_commit,
                body: request_body(&plan.environment, &plan.branch, &diff, &plan.context),
            };
            return done(propose(branch, settings, request, &tip, &change)?, notes);
        }
        match branch.commit(&plan.branch, &tip, &new_commit)? {
            Landed::Commit(commit) => done(Outcome::Pushed { commit }, notes),
            Landed::Refused(refusal) => Ok(Round::Rejected(Rejected { tip, refusal })),
        }
    }
}

/// A commit for the tool's own branch and the request that carries it to `base`.
struct Proposing<'a> {
    base: &'a str,
    commit: NewCommit<'a>,
    body: String,
}

/// The change on the tool's own branch, made from the target's tip `tip`, and the request
/// from it to the target branch opened or updated. A promotion, a rollback and a hold all
/// go this way when the environment asks for requests.
fn propose(
    devops: &dyn DevopsBranch,
    settings: &Settings,
    request: &PullRequest,
    tip: &str,
    change: &Proposing,
) -> Result<Outcome> {
    let Some(api) = settings.requests else {
        return Err(Error::local(
            "a pull request was asked for without the forge's API".to_string(),
        ));
    };
    let commit = devops.replace(&request.branch, tip, &change.commit)?;
    let proposal = Proposal {
        head: request.branch.clone(),
        base: change.base.to_string(),
        title: change
            .commit
            .message
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        body: change.body.clone(),
        labels: request.labels.clone(),
    };
    let proposed = crate::forge::propose(api, &proposal, request.auto_merge)?;
    Ok(Outcome::Proposed {
        url: proposed.request.url,
        number: proposed.request.number,
        branch: request.branch.clone(),
        commit,
        updated: proposed.updated,
        auto_merge: proposed.auto_merge,
    })
}

/// What a dry run with `pull_request:` would do: open a request from the tool's branch,
/// or update the open one, which is looked up (a read; nothing is written).
fn plan_request(
    request: Option<&PullRequest>,
    base: &str,
    settings: &Settings,
) -> Option<PlannedRequest> {
    let request = request?;
    let open = settings.requests.and_then(|api| {
        api.find_request(&request.branch, base)
            .unwrap_or_else(|e| {
                tracing::warn!(
                    "cannot tell whether a request from {} is open: {}",
                    request.branch,
                    e.summary()
                );
                None
            })
            .map(|r| r.number)
    });
    Some(PlannedRequest {
        branch: request.branch.clone(),
        open,
    })
}

/// The plan's edits of the files `lookup` reads. With the registry check on, it checks
/// what those edits make the cluster pull, and the edits are those of the plan pinned to
/// the digests it found: the plan to commit, its edits, and the images found.
fn checked_edits<'p>(
    lookup: &dyn Fn(&str) -> Entry,
    plan: &'p Plan,
    settings: &Settings,
    place: &str,
) -> Result<(Cow<'p, Plan>, Vec<Edit>, Vec<Verified>)> {
    let edits = targets::apply(lookup, &plan.targets, place)?;
    let Some(check) = settings.verify else {
        return Ok((Cow::Borrowed(plan), edits, Vec::new()));
    };
    let pulled = pulled::pulled(plan, &edits)?;
    let verified = (check.borrow_mut())(&pulled)?;
    let digest_of = |p: &Pulled| {
        verified
            .iter()
            .find(|v| v.image == p.name && v.tag == p.tag)
            .map(|v| v.digest.clone())
    };
    let pinned = pulled::pin(plan, &pulled, digest_of, settings.dry_run)?;
    if pinned.targets == plan.targets {
        return Ok((Cow::Borrowed(plan), edits, verified));
    }
    let edits = targets::apply(lookup, &pinned.targets, place)?;
    Ok((Cow::Owned(pinned), edits, verified))
}

/// What an edit leads to.
enum Decision {
    /// The run ends here: already up to date, older than what is deployed, or a plan.
    End(Outcome),
    /// Commit and push, with this message.
    Commit(String),
}

/// Every change of every edit, in order.
fn all_changes(edits: &[Edit]) -> Vec<Change> {
    edits
        .iter()
        .flat_map(|e| e.changes.iter().cloned())
        .collect()
}

/// The same rules for git and directory sources: nothing to do, an older build, a plan
/// (which gets the diffs and the message), or a commit to push. The run is up to date
/// only when no target changes anything; the ordering guard reads the kustomization tags,
/// and its notes on what it let through come along.
fn decide(edits: &[Edit], plan: &Plan, settings: &Settings) -> Result<(Decision, Vec<Note>)> {
    let changes = all_changes(edits);
    if changes.is_empty() {
        let paths: Vec<&str> = edits.iter().map(|e| e.path.as_str()).collect();
        let verb = if paths.len() == 1 { "holds" } else { "hold" };
        tracing::info!("{} already {verb} the wanted values", paths.join(", "));
        return Ok((Decision::End(Outcome::AlreadyUpToDate), Vec::new()));
    }
    let tags: Vec<crate::kustomize::Change> =
        changes.iter().filter_map(Change::entry_change).collect();
    let mut notes = Vec::new();
    if !settings.allow_downgrade && settings.purpose == Purpose::Promote {
        let verdict = ordering::judge(&tags, settings.history);
        if let Some(older) = verdict.older {
            return Ok((Decision::End(Outcome::Skipped { older }), Vec::new()));
        }
        notes = verdict.notes;
    }
    let message = dress(
        commit_message(&plan.environment, plan.images(), &changes, &plan.context),
        &settings.purpose,
    );
    if settings.dry_run {
        let mut diff = String::new();
        for edit in edits.iter().filter(|e| e.changed()) {
            diff.push_str(&git::unified_diff(&edit.path, &edit.old, &edit.new)?);
        }
        return Ok((
            Decision::End(Outcome::Planned {
                diff,
                message,
                request: None,
            }),
            notes,
        ));
    }
    Ok((Decision::Commit(message), notes))
}

fn promotion(
    plan: &Plan,
    edits: &[Edit],
    attempts: u32,
    dry_run: bool,
    outcome: Outcome,
) -> Promotion {
    Promotion {
        environment: plan.environment.clone(),
        repo: plan.repo.display(),
        branch: plan.branch.clone(),
        local: matches!(plan.repo, RepoLocation::Local(_)),
        files: edits.iter().map(|e| e.path.clone()).collect(),
        changes: all_changes(edits),
        attempts,
        dry_run,
        outcome,
        images: Vec::new(),
        notes: Vec::new(),
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
    let (plan, edits, images) = checked_edits(&lookup, plan, settings, &place)?;
    let plan = plan.as_ref();
    let (outcome, notes) = if let Some(hold) = held(lookup, plan, settings)? {
        (Outcome::Held { hold }, Vec::new())
    } else {
        // Always a plan here (checked above): `decide` never asks for a commit.
        match decide(&edits, plan, settings)? {
            (Decision::End(outcome), notes) => (outcome, notes),
            (Decision::Commit(_), _) => unreachable!("a directory is only planned"),
        }
    };
    let mut promotion = promotion(plan, &edits, 0, true, outcome);
    promotion.images = images;
    promotion.notes = notes;
    Ok(promotion)
}

// Issue 11: holds, rollbacks, and whole-file commits (hold, unhold) through the same loop.

/// The hold on the plan's environment in the same tree as the files it edits; a rollback
/// passes it (it is what the hold protects).
fn held(lookup: impl Fn(&str) -> Entry, plan: &Plan, settings: &Settings) -> Result<Option<Hold>> {
    if settings.purpose != Purpose::Promote {
        return Ok(None);
    }
    let text = match lookup(&plan.holds_file) {
        Entry::File(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
            Error::input(
                &plan.holds_file,
                None,
                "is not UTF-8 text",
                "save it as UTF-8",
            )
        })?),
        _ => None,
    };
    let holds = crate::holds::parse(&plan.holds_file, text.as_deref())?;
    let hold = crate::holds::find(&holds, &plan.environment).cloned();
    if let Some(h) = &hold {
        tracing::warn!("environment {} is held: {}", plan.environment, h.reason);
    }
    Ok(hold)
}

/// A rollback's message: its own subject verb and a `Rollback-Of:` trailer per undone
/// commit, so that `history` tells it from a promotion.
fn dress(message: String, purpose: &Purpose) -> String {
    match purpose {
        Purpose::Promote => message,
        Purpose::Rollback { of } => {
            let mut message = message.replacen("promote(", "rollback(", 1);
            for commit in of {
                message.push_str(&format!("Rollback-Of: {commit}\n"));
            }
            message
        }
    }
}

/// How a commit of [`commit_files`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Pushed {
        commit: String,
    },
    /// `compose` had nothing to change.
    Unchanged,
    /// A dry run: the diff and the message (and the request it would open or update).
    Planned {
        diff: String,
        message: String,
        request: Option<PlannedRequest>,
    },
    /// With `request`: the commit is on the tool's own branch, in an open request.
    Proposed {
        url: String,
        number: u64,
        branch: String,
        commit: String,
        updated: bool,
    },
}

/// One commit of whole files through the same fetch, compare-and-swap and retry as a
/// promotion: `compose` reads the fetched tip and says which files to write, with which
/// message (`None`: nothing to do). Holds and the like use it. With `request`, the commit
/// goes to the request's branch and the request to `branch` is opened or updated, as a
/// promotion's does.
pub fn commit_files(
    repo: &RepoLocation,
    branch: &str,
    author: &Identity,
    settings: &Settings,
    request: Option<&PullRequest>,
    compose: impl Fn(&dyn Fn(&str) -> Entry) -> Result<Option<(Vec<(String, String)>, String)>>,
) -> Result<Committed> {
    let opened = Opened::open(&settings.access, repo)?;
    let devops = opened.branch();
    retry_rounds(
        &repo.display(),
        branch,
        settings.max_attempts,
        &mut std::thread::sleep,
        |attempt, rejected| {
            let tip = devops.read_head(branch)?;
            refusal_stands(&repo.display(), branch, rejected, &tip, attempt)?;
            if devops.landed_unanswered(&tip)? {
                return Ok(Round::Done(Committed::Pushed { commit: tip }));
            }
            let snapshot = Snapshot::new(devops, &tip);
            let lookup = |p: &str| snapshot.lookup(p);
            let Some((files, message)) = snapshot.read(compose(&lookup))? else {
                return Ok(Round::Done(Committed::Unchanged));
            };
            // What the commit changes, against the files as read at the tip.
            let diff = || -> Result<String> {
                let mut diff = String::new();
                for (path, new) in &files {
                    let old = match lookup(path) {
                        Entry::File(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                        _ => String::new(),
                    };
                    diff.push_str(&git::unified_diff(path, &old, new)?);
                }
                Ok(diff)
            };
            if settings.dry_run {
                let diff = diff()?;
                snapshot.read(Ok(()))?;
                let request = plan_request(request, branch, settings);
                return Ok(Round::Done(Committed::Planned {
                    diff,
                    message,
                    request,
                }));
            }
            let bytes: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_bytes()))
                .collect();
            let new_commit = NewCommit {
                files: &bytes,
                message: &message,
                author,
            };
            if let Some(request) = request {
                let diff = diff()?;
                let change = Proposing {
                    base: branch,
                    commit: new_commit,
                    body: format!("{message}\n````diff\n{diff}````\n"),
                };
                let Outcome::Proposed {
                    url,
                    number,
                    branch,
                    commit,
                    updated,
                    ..
                } = propose(devops, settings, request, &tip, &change)?
                else {
                    unreachable!("propose proposes")
                };
                return Ok(Round::Done(Committed::Proposed {
                    url,
                    number,
                    branch,
                    commit,
                    updated,
                }));
            }
            match devops.commit(branch, &tip, &new_commit)? {
                Landed::Commit(commit) => Ok(Round::Done(Committed::Pushed { commit })),
                Landed::Refused(refusal) => Ok(Round::Rejected(Rejected { tip, refusal })),
            }
        },
    )
}

/// The branch [`Access`] reaches: a git workspace made for this run, or the forge's API.
enum Opened<'a> {
    Git(Box<GitBranch>),
    Api(&'a dyn DevopsBranch),
}

impl<'a> Opened<'a> {
    fn open(access: &'a Access, repo: &RepoLocation) -> Result<Opened<'a>> {
        Ok(match access {
            Access::Git(transport) => Opened::Git(Box::new(GitBranch::new(Workspace::new(
                repo,
                transport.clone(),
            )?))),
            Access::Api(api) => Opened::Api(api.as_ref()),
        })
    }

    fn branch(&self) -> &dyn DevopsBranch {
        match self {
            Opened::Git(git) => git.as_ref(),
            Opened::Api(api) => *api,
        }
    }

    /// The branch as messages name it.
    fn place(&self, branch: &str, repo: &str) -> String {
        match self {
            Opened::Git(_) => format!("branch {branch} of {repo}"),
            Opened::Api(_) => format!("branch {branch} of {repo} (through the API)"),
        }
    }
}

/// The files at one head, as the pure edit reads them (a lookup cannot fail): the first
/// failed read is kept, and ends the round with its own error rather than with what the
/// edit made of a file it could not read.
struct Snapshot<'a> {
    branch: &'a dyn DevopsBranch,
    head: &'a str,
    /// What was read: a round may apply the edit twice (before and after pinning), and a
    /// read through a forge's API is a request.
    read: RefCell<HashMap<String, Entry>>,
    failed: RefCell<Option<Error>>,
}

impl<'a> Snapshot<'a> {
    fn new(branch: &'a dyn DevopsBranch, head: &'a str) -> Snapshot<'a> {
        Snapshot {
            branch,
            head,
            read: RefCell::new(HashMap::new()),
            failed: RefCell::new(None),
        }
    }

    fn lookup(&self, path: &str) -> Entry {
        if let Some(entry) = self.read.borrow().get(path) {
            return entry.clone();
        }
        let entry = self.branch.lookup(self.head, path).unwrap_or_else(|e| {
            self.failed.borrow_mut().get_or_insert(e);
            Entry::Missing
        });
        self.read
            .borrow_mut()
            .insert(path.to_string(), entry.clone());
        entry
    }

    /// `result`, unless a read failed on the way to it.
    fn read<T>(&self, result: Result<T>) -> Result<T> {
        match self.failed.borrow_mut().take() {
            Some(error) => Err(error),
            None => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "https://git.example/o/devops.git";

    #[test]
    fn a_rollback_message_says_so_and_names_the_undone_commits() {
        let message = "promote(prod): app v2 -> v1\n\nSet in k.yaml:\n  app newTag: v2 -> v1\n\nPromoted-Image: app:v1\n";
        assert_eq!(dress(message.into(), &Purpose::Promote), message);
        assert_eq!(
            dress(
                message.into(),
                &Purpose::Rollback {
                    of: vec!["c2".into(), "c1".into()]
                }
            ),
            "rollback(prod): app v2 -> v1\n\nSet in k.yaml:\n  app newTag: v2 -> v1\n\nPromoted-Image: app:v1\nRollback-Of: c2\nRollback-Of: c1\n"
        );
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..=20 {
            let ceiling = 200u64 << (attempt - 1).min(5);
            let wait = u64::try_from(Retry::backoff(attempt).as_millis()).unwrap();
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{attempt}: {wait}");
        }
    }

    fn transient(after: Option<Duration>) -> Error {
        Error::Remote {
            url: REPO.into(),
            message: "pushing to branch main failed: the git server answered HTTP 503".into(),
            hint: "retry later".into(),
            retry: Retry::Transient { after },
        }
    }

    fn race(tip: u8) -> Rejected {
        Rejected {
            tip: tip.to_string(),
            refusal: Refusal {
                reason: "the branch moved (non-fast-forward)".into(),
                not_fast_forward: true,
                server_said: Vec::new(),
            },
        }
    }

    /// Runs the loop over scripted rounds; returns its result, the waits it asked for and
    /// the rounds it ran.
    fn run_loop(
        max_attempts: u32,
        mut script: Vec<Result<Round<&'static str>>>,
    ) -> (Result<&'static str>, Vec<Duration>, u32) {
        script.reverse();
        let mut waits = Vec::new();
        let mut rounds = 0;
        let result = retry_rounds(
            REPO,
            "main",
            max_attempts,
            &mut |d| waits.push(d),
            |_, _| {
                rounds += 1;
                script.pop().expect("a scripted round")
            },
        );
        (result, waits, rounds)
    }

    #[test]
    fn retry_after_is_waited_out_as_asked() {
        let second = Some(Duration::from_secs(1));
        let (result, waits, _) = run_loop(
            10,
            vec![
                Err(transient(second)),
                Err(transient(second)),
                Ok(Round::Done("pushed")),
            ],
        );
        assert_eq!(result.unwrap(), "pushed");
        assert_eq!(waits, vec![Duration::from_secs(1); 2]);
    }

    #[test]
    fn a_retry_after_beyond_the_limit_fails_at_once_without_waiting() {
        let (result, waits, rounds) = run_loop(
            10,
            vec![Err(transient(Some(
                MAX_RETRY_AFTER + Duration::from_secs(1),
            )))],
        );
        let error = result.unwrap_err().to_string();
        assert!(
            error.contains("the server asked to retry after 31 s, longer than the 30 s"),
            "{error}"
        );
        assert_eq!((waits, rounds), (vec![], 1));
    }

    #[test]
    fn transient_failures_are_retried_a_bounded_number_of_times_with_backoff() {
        let script = (0..=MAX_TRANSIENT_FAILURES)
            .map(|_| Err(transient(None)))
            .collect();
        let (result, waits, rounds) = run_loop(10, script);
        assert!(result.unwrap_err().to_string().contains("HTTP 503"));
        assert_eq!(rounds, 1 + MAX_TRANSIENT_FAILURES);
        assert_eq!(waits.len(), MAX_TRANSIENT_FAILURES as usize);
        for (attempt, wait) in (1..).zip(&waits) {
            let ceiling = Duration::from_millis(200 << (attempt - 1));
            assert!(
                *wait >= ceiling / 2 && *wait <= ceiling,
                "{attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn a_permanent_failure_is_not_retried() {
        let error = Error::Remote {
            url: REPO.into(),
            message: "HTTP 401".into(),
            hint: "set a valid token".into(),
            retry: Retry::Never,
        };
        let (result, waits, rounds) = run_loop(10, vec![Err(error)]);
        assert!(result.is_err());
        assert_eq!((waits, rounds), (vec![], 1));
    }

    #[test]
    fn lost_races_back_off_and_end_in_a_message_saying_so() {
        let script = (1..=3).map(|tip| Ok(Round::Rejected(race(tip)))).collect();
        let (result, waits, rounds) = run_loop(3, script);
        assert_eq!(
            result.unwrap_err().to_string(),
            "https://git.example/o/devops.git: push to branch main still refused after 3 attempt(s): the branch moved (non-fast-forward)\n  hint: nothing was changed on the remote; rerun the step, or raise --max-attempts if many pipelines promote at once"
        );
        assert_eq!(rounds, 3);
        assert_eq!(waits.len(), 2);
        assert!(waits[0] <= Duration::from_millis(100), "{waits:?}");
        assert!(waits[1] <= Duration::from_millis(200), "{waits:?}");
    }

    #[test]
    fn the_wait_after_a_lost_race_is_short_and_bounded() {
        for attempt in 1..40 {
            assert!(race_wait(attempt) <= Duration::from_millis(3200));
        }
    }

    fn refused(reason: &str, tip: u8) -> Rejected {
        Rejected {
            tip: tip.to_string(),
            refusal: Refusal {
                reason: reason.into(),
                not_fast_forward: false,
                server_said: vec!["push blocked: cannot lock main for you".into()],
            },
        }
    }

    #[test]
    fn a_refusal_on_an_unmoved_branch_stands_whatever_its_words() {
        // "blocked" and "lock" once read as a race and were retried to the last attempt.
        let tip = "1";
        for reason in [
            "blocked by policy",
            "cannot lock ref",
            "pre-receive hook declined",
        ] {
            let error =
                refusal_stands(REPO, "main", Some(&refused(reason, 1)), tip, 2).expect_err(reason);
            assert!(
                matches!(error, Error::PushRefused { attempts: 1, .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn a_moved_branch_or_a_non_fast_forward_is_a_race() {
        let tip = "1";
        assert!(refusal_stands(REPO, "main", Some(&refused("failed to lock", 2)), tip, 2).is_ok());
        assert!(refusal_stands(REPO, "main", Some(&race(1)), tip, 2).is_ok());
        assert!(refusal_stands(REPO, "main", None, tip, 1).is_ok());
    }
}
