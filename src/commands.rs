//! After the push and beside it: Argo CD's refresh and wait, and the subcommands that look
//! back at the devops branch (`history`) and steer it (`rollback`, `hold`, `unhold`), each
//! a commit through the promotion's own fetch, compare-and-swap and retry.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use crate::argocd::{self, Deployment};
use crate::cli::{Action, Args};
use crate::context::BuildContext;
use crate::error::{Error, Result};
use crate::forge::ForgeApi;
use crate::git::{self, HttpTransport, Workspace};
use crate::history::{self, Record};
use crate::holds::{self, Hold};
use crate::inputs;
use crate::overlay::Entry;
use crate::plan::{ArgoApp, Place, Plan};
use crate::promote::{self, Committed, Outcome, Promotion, Purpose};
use crate::report;

/// The first depth `history` fetches, and the deepest it goes.
const FIRST_DEPTH: usize = 16;
const MAX_DEPTH: usize = 4096;

pub fn run(args: &Args) -> Result<()> {
    let cwd = inputs::current_dir()?;
    inputs::read_token(&args.token)?;
    let place = inputs::place(args, &cwd)?;
    let token = crate::token::for_run_with(
        &args.token,
        place.forge.as_ref(),
        &place.repo.display(),
        args.timeout,
        place.review.is_some(),
    )?;
    // `pull_request:` holds for every commit to the environment's branch, not only builds.
    let requests = match place.review {
        Some(_) => promote::requests_to(
            &place.repo,
            place.forge.as_ref(),
            token.clone(),
            &args.token.username,
            args.timeout,
            args.dry_run,
        )?,
        None => None,
    };
    let requests = requests.as_deref();
    let transport =
        HttpTransport::for_repo(&place.repo, token, &args.token.username, args.timeout)?;
    match &args.action {
        Action::Promote => unreachable!("lib::run promotes"),
        Action::History { limit } => {
            let environment = args.flags.environment.as_deref();
            let log = Log::open(&place, args, &transport)?;
            let records = read_history(&place, &log, environment, *limit, |_| false)?;
            report::history(&records, args.output);
            Ok(())
        }
        Action::Rollback {
            to,
            steps,
            hold,
            reason,
        } => {
            let environment = required_env(args, "rollback")?;
            rollback(
                args,
                &place,
                (&transport, requests),
                &Rollback {
                    environment,
                    to: to.as_deref(),
                    steps: steps.unwrap_or(1) as usize,
                    hold: *hold,
                    reason: reason.as_deref(),
                },
                &cwd,
            )
        }
        Action::Hold { reason } => {
            let environment = required_env(args, "hold")?;
            let committed = set_hold(
                args,
                &place,
                (&transport, requests),
                environment,
                Some(reason),
            )?;
            report::hold_result(
                &format!("hold {environment}"),
                &committed,
                &place.repo,
                args.output,
            );
            Ok(())
        }
        Action::Unhold => {
            let environment = required_env(args, "unhold")?;
            let committed = set_hold(args, &place, (&transport, requests), environment, None)?;
            report::hold_result(
                &format!("unhold {environment}"),
                &committed,
                &place.repo,
                args.output,
            );
            Ok(())
        }
    }
}

fn required_env<'a>(args: &'a Args, command: &str) -> Result<&'a str> {
    args.flags.environment.as_deref().ok_or_else(|| {
        Error::usage(
            format!("`{command}` needs --env NAME"),
            format!("name the environment: tomoda-promote {command} --env prod ..."),
        )
    })
}

/// Prints the promotion's result, after asking Argo CD to refresh (and waiting, if asked)
/// when a commit was pushed to the branch Argo CD follows. A failed wait is reported with
/// the result, then returned. A pull-request promotion deploys nothing until it merges:
/// it neither refreshes nor waits, and says so.
pub fn report_and_deploy(plan: &Plan, promotion: &Promotion, args: &Args) -> Result<()> {
    let (deployment, failure) = match (&plan.argocd, &promotion.outcome) {
        (Some(app), Outcome::Pushed { commit }) if !promotion.dry_run => {
            let (d, e) = deploy(plan, app, commit, args)?;
            (Some(d), e)
        }
        // A rerun of a step whose push landed (and whose wait may not have ended well):
        // what Argo CD should run is the branch's tip, which holds the wanted values.
        (Some(app), Outcome::AlreadyUpToDate) if !promotion.dry_run => {
            let transport = transport_for(plan, args)?;
            let tip = Workspace::new(&plan.repo, transport)?
                .fetch(&plan.branch)?
                .to_string();
            let (d, e) = deploy(plan, app, &tip, args)?;
            (Some(d), e)
        }
        (Some(app), Outcome::Proposed { number, .. }) => {
            report::not_deployed(&app.app, *number);
            (None, None)
        }
        _ => (None, None),
    };
    report::result(promotion, deployment.as_ref(), args.output)?;
    failure.map_or(Ok(()), Err)
}

/// Refreshes the application and waits when asked; the deployment as far as it got, and
/// the error that ended it.
fn deploy(
    plan: &Plan,
    app: &ArgoApp,
    commit: &str,
    args: &Args,
) -> Result<(Deployment, Option<Error>)> {
    if args.argocd.token.is_none() {
        tracing::warn!("no ARGOCD_AUTH_TOKEN: asking Argo CD anonymously");
    }
    let client = argocd::Client::new(
        app.clone(),
        argocd::Settings {
            token: args.argocd.token.clone(),
            timeout: args.timeout,
            poll_interval: args.argocd.poll_interval,
        },
    )?;
    let later = LaterCommits::new(plan, args, commit)?;
    Ok(client.settle(
        commit,
        &|revision| later.includes(revision),
        &mut report::progress,
        &mut std::thread::sleep,
    ))
}

/// Git over http(s) to the plan's repository, as the promotion had it.
fn transport_for(plan: &Plan, args: &Args) -> Result<HttpTransport> {
    let token = crate::token::for_run(
        &args.token,
        plan.forge.as_ref(),
        &plan.repo.display(),
        args.timeout,
    )?;
    HttpTransport::for_repo(&plan.repo, token, &args.token.username, args.timeout)
}

/// Whether a revision Argo CD reports is a later commit of the branch, built on ours
/// (another pipeline pushed after us, and Argo CD synced that): the branch is fetched
/// again for each revision not seen before, and the answer kept.
struct LaterCommits<'a> {
    plan: &'a Plan,
    commit: &'a str,
    transport: HttpTransport,
    workspace: RefCell<Option<Workspace>>,
    seen: RefCell<HashMap<String, bool>>,
}

/// How deep the branch is fetched to find our commit under a later one.
const LATER_DEPTH: i32 = 64;

impl<'a> LaterCommits<'a> {
    fn new(plan: &'a Plan, args: &Args, commit: &'a str) -> Result<Self> {
        Ok(LaterCommits {
            plan,
            commit,
            transport: transport_for(plan, args)?,
            workspace: RefCell::new(None),
            seen: RefCell::new(HashMap::new()),
        })
    }

    fn includes(&self, revision: &str) -> bool {
        if revision.len() != 40 || !revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        if let Some(known) = self.seen.borrow().get(revision) {
            return *known;
        }
        let answer = self.look(revision).unwrap_or_else(|e| {
            tracing::warn!(
                "cannot tell whether {revision} includes {}: {}",
                self.commit,
                e.summary()
            );
            false
        });
        self.seen.borrow_mut().insert(revision.to_string(), answer);
        answer
    }

    fn look(&self, revision: &str) -> Result<bool> {
        let mut workspace = self.workspace.borrow_mut();
        if workspace.is_none() {
            *workspace = Some(Workspace::new(&self.plan.repo, self.transport.clone())?);
        }
        let workspace = workspace.as_ref().expect("just set");
        workspace.fetch_deep(&self.plan.branch, LATER_DEPTH)?;
        Ok(workspace.descends(revision, self.commit))
    }
}

/// Where `history` and `rollback` read the branch's log: git, or with `commit_via: api`
/// the forge's API (no clone, and no git access needed).
enum Log {
    Git(HttpTransport),
    Api(Box<dyn ForgeApi>),
}

impl Log {
    fn open(place: &Place, args: &Args, transport: &HttpTransport) -> Result<Log> {
        let (crate::config::CommitVia::Api, Some(forge)) = (place.commit_via, &place.forge) else {
            return Ok(Log::Git(transport.clone()));
        };
        let token = crate::token::for_run(
            &args.token,
            Some(forge),
            &place.repo.display(),
            args.timeout,
        )?;
        // `history` and a planned rollback only read: a public repository needs no token.
        let reads_only = args.dry_run || matches!(args.action, Action::History { .. });
        Ok(Log::Api(promote::open_api(
            &place.repo,
            forge,
            token,
            &args.token.username,
            args.timeout,
            reads_only,
        )?))
    }
}

/// The environment's (or every) promotion records, newest first, at most `limit`, or
/// until `enough` says the last one read suffices; the branch is read deeper in steps
/// (fetched deeper, or the log's next page) until they are found or the history ends.
fn read_history(
    place: &Place,
    log: &Log,
    environment: Option<&str>,
    limit: usize,
    enough: impl Fn(&Record) -> bool,
) -> Result<Vec<Record>> {
    let transport = match log {
        Log::Git(transport) => transport.clone(),
        Log::Api(api) => {
            let mut records = Vec::new();
            crate::forge::read_log(api.as_ref(), &place.branch, MAX_DEPTH, |commits| {
                history::gather(
                    &mut records,
                    commits
                        .iter()
                        .map(|c| (c.id.as_str(), c.time, c.message.as_str())),
                    environment,
                    limit,
                    &enough,
                )
            })?;
            return Ok(records);
        }
    };
    let workspace = Workspace::new(&place.repo, transport)?;
    let mut depth = FIRST_DEPTH;
    loop {
        let tip = workspace.fetch_deep(&place.branch, i32::try_from(depth).unwrap_or(i32::MAX))?;
        let (commits, more) = workspace.log(tip, depth)?;
        let mut records = Vec::new();
        let done = history::gather(
            &mut records,
            commits
                .iter()
                .map(|c| (c.id.as_str(), c.time, c.message.as_str())),
            environment,
            limit,
            &enough,
        );
        if done || !more || depth >= MAX_DEPTH {
            return Ok(records);
        }
        depth *= 4;
        tracing::info!(
            "reading the history of branch {} {depth} commits deep",
            place.branch
        );
    }
}

struct Rollback<'a> {
    environment: &'a str,
    to: Option<&'a str>,
    steps: usize,
    hold: bool,
    reason: Option<&'a str>,
}

/// How a rollback or hold reaches the devops repository: git, and the forge's API for
/// requests when the environment has `pull_request:`.
type Reach<'a> = (&'a HttpTransport, Option<&'a dyn ForgeApi>);

/// A rollback is committed as a promotion is: pushed, or with `pull_request:` proposed
/// from `promote/<env>/rollback`. Not the image's own `promote/<env>/<image>`: the next
/// build of that image rewrites its branch and request, and would drop the rollback while
/// it waits for review (what holds are for); a rollback may also set several images.
/// Like a proposed promotion it deploys nothing until merged, so Argo CD is not waited for.
fn rollback(
    args: &Args,
    place: &Place,
    (transport, requests): Reach,
    asked: &Rollback,
    cwd: &Path,
) -> Result<()> {
    let env = asked.environment;
    let log = Log::open(place, args, transport)?;
    let records = match asked.to {
        Some(value) => read_history(place, &log, Some(env), MAX_DEPTH, |r| {
            history::matches(r, value)
        })?,
        None => read_history(place, &log, Some(env), asked.steps + 1, |_| false)?,
    };
    let undo = match asked.to {
        Some(value) => records
            .iter()
            .position(|r| history::matches(r, value))
            .ok_or_else(|| {
                Error::usage(
                    format!(
                        "no promotion of {env} to `{value}` in branch {} of {}",
                        place.branch,
                        place.repo.display()
                    ),
                    format!("see `tomoda-promote history --env {env}` for the values it had"),
                )
            })?,
        None => asked.steps,
    };
    if records.len() < undo || records.is_empty() {
        return Err(Error::usage(
            format!(
                "{env} has {} promotion(s) in branch {}; cannot go back {undo}",
                records.len(),
                place.branch
            ),
            format!("see `tomoda-promote history --env {env}`"),
        ));
    }
    if undo == 0 {
        // `--to` names the current promotion: a rerun of the same rollback, say.
        report::already_at(env, asked.to.unwrap_or_default(), args.output);
        return Ok(());
    }
    let (targets, _) = history::rollback_targets(&records, undo)?;
    if targets.is_empty() {
        return Err(Error::usage(
            format!("the promotions to roll back in {env} set no value that existed before"),
            "set the values with --image or --set instead",
        ));
    }
    // The build whose values come back, for the message's trailers.
    let context = records
        .get(undo)
        .map_or_else(BuildContext::default, |r| BuildContext {
            commit_sha: r.source_commit.clone(),
            tag_name: r.source_tag.clone(),
            build_id: r.build_id.clone(),
            ..Default::default()
        });
    let plan = Plan {
        environment: env.to_string(),
        repo: place.repo.clone(),
        branch: place.branch.clone(),
        targets,
        context,
        author: place.author.clone(),
        commit_via: place.commit_via,
        forge: place.forge.clone(),
        digests: Vec::new(),
        argocd: place.argocd.clone(),
        holds_file: place.holds_file.clone(),
        // A rollback passes the ordering guard: nothing to ask.
        app_repo: crate::plan::AppRepo::Unknown("a rollback is not ordered".into()),
        pull_request: place.request("rollback")?,
    };
    let promotion = {
        let history = git::AppHistory::discover(cwd);
        promote::promote(
            &plan,
            &promote::Settings {
                max_attempts: args.max_attempts,
                dry_run: args.dry_run,
                allow_downgrade: true,
                history: &history,
                access: commit_access(place, args, transport)?,
                purpose: Purpose::Rollback {
                    of: records[..undo].iter().map(|r| r.commit.clone()).collect(),
                },
                requests,
                verify: None,
            },
        )?
    };
    if asked.hold {
        let reason = asked.reason.map_or_else(
            || {
                format!(
                    "rolled back to {}",
                    records
                        .get(undo)
                        .map_or_else(String::new, history::headline)
                )
            },
            str::to_string,
        );
        let committed = set_hold(args, place, (transport, requests), env, Some(&reason))?;
        // stdout carries one JSON object, the rollback's; the hold goes to the log there.
        match args.output {
            report::Format::Text => {
                report::hold_result(&format!("hold {env}"), &committed, &place.repo, args.output);
            }
            report::Format::Json => tracing::info!("hold {env}: {committed:?}"),
        }
    }
    report_and_deploy(&plan, &promotion, args)
}

/// Adds (`reason` given) or lifts the hold on `environment`: one commit of the holds file,
/// with `pull_request:` proposed from `promote/<env>/hold` (unhold too: lifting a hold is
/// as much a change to the protected branch as adding one).
fn set_hold(
    args: &Args,
    place: &Place,
    (transport, requests): Reach,
    environment: &str,
    reason: Option<&str>,
) -> Result<Committed> {
    let file = place.holds_file.as_str();
    let who = inputs::who(&place.author.name);
    let since = holds::utc(inputs::now());
    let compose = |lookup: &dyn Fn(&str) -> Entry| {
        let text =
            match lookup(file) {
                Entry::File(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
                    Error::input(file, None, "is not UTF-8 text", "save it as UTF-8")
                })?),
                _ => None,
            };
        let current = holds::parse(file, text.as_deref())?;
        let (holds, message) = if let Some(reason) = reason {
            if holds::find(&current, environment).is_some_and(|h| h.reason == reason) {
                return Ok(None);
            }
            let hold = Hold {
                environment: environment.to_string(),
                reason: reason.to_string(),
                who: who.clone(),
                since: since.clone(),
            };
            (
                holds::with(&current, hold),
                format!("hold({environment}): {reason}\n\nHeld-By: {who}\n"),
            )
        } else {
            if holds::find(&current, environment).is_none() {
                return Ok(None);
            }
            (
                holds::without(&current, environment),
                format!("unhold({environment})\n\nReleased-By: {who}\n"),
            )
        };
        Ok(Some((
            vec![(file.to_string(), holds::render(&holds))],
            message,
        )))
    };
    let settings = promote::Settings {
        max_attempts: args.max_attempts,
        dry_run: args.dry_run,
        allow_downgrade: false,
        history: &NoHistory,
        access: commit_access(place, args, transport)?,
        purpose: Purpose::Promote,
        requests,
        verify: None,
    };
    promote::commit_files(
        &place.repo,
        &place.branch,
        &place.author,
        &settings,
        place.request("hold")?.as_ref(),
        compose,
    )
}

/// How a rollback or hold commit reaches the branch: as `commit_via` says.
fn commit_access(place: &Place, args: &Args, transport: &HttpTransport) -> Result<promote::Access> {
    if place.commit_via == crate::config::CommitVia::Git {
        return Ok(promote::Access::Git(transport.clone()));
    }
    let token = crate::token::for_run(
        &args.token,
        place.forge.as_ref(),
        &place.repo.display(),
        args.timeout,
    )?;
    promote::Access::open(
        &place.repo,
        place.commit_via,
        place.forge.as_ref(),
        token,
        &args.token.username,
        args.timeout,
        args.dry_run,
    )
}

/// A holds commit sets no tag: nothing for the ordering guard to ask.
struct NoHistory;

impl crate::ordering::History for NoHistory {
    fn order(&self, _: &str, _: &str) -> Result<crate::ordering::Order, crate::ordering::Unknown> {
        Err(crate::ordering::Unknown {
            why: "a holds commit orders nothing".into(),
            foreign: true,
        })
    }

    fn name(&self) -> String {
        "nothing".into()
    }
}
