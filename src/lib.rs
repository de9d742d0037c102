//! tomoda-promote: the last step of a CI pipeline, putting a freshly built image into a
//! GitOps repository's Kustomize overlay.
//!
//! Data flows one way: the edges (`cli`, `inputs`, `context`) feed a pure middle (`config`,
//! `plan`, `repo`, `overlay`, `kustomize`, `values`, `manifests`, `yaml`, `ordering`,
//! `message`, `holds`, `history`, `pulled`), whose result the edges carry out (`promote` over `git`, `argocd`, the subcommands in
//! `commands`) and tell (`report`).
//! `tests/integration/layout.rs` holds the modules to that: no import cycle, no I/O in the
//! middle.

pub mod argocd;
pub mod branch;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod error;
pub mod forge;
pub mod git;
pub mod history;
pub mod holds;
pub mod image;
pub mod inputs;
pub mod kustomize;
pub mod logging;
pub mod manifests;
pub mod message;
pub mod ordering;
pub mod overlay;
pub mod plan;
pub mod promote;
pub mod pulled;
pub mod registry;
pub mod repo;
pub mod report;
pub mod secrets;
pub mod targets;
pub mod token;
pub mod values;
pub mod yaml;

use std::path::Path;

use cli::Args;
use error::Result;

/// One promotion, from parsed flags to the printed result.
pub fn run(args: &Args) -> Result<()> {
    if let Some(what) = args.generate {
        return cli::print_generated(what);
    }
    if args.action != cli::Action::Promote {
        return commands::run(args);
    }
    // Read (and registered as a secret) first, so that a bad token file fails at once.
    inputs::read_token(&args.token)?;
    let registry_settings = inputs::registry_settings(args)?;
    let cwd = inputs::current_dir()?;
    let mut plan = inputs::plan(args, &cwd)?;
    // Every tag must be in its registry before the devops repo names it; which reference
    // the cluster pulls depends on the devops files, so the promotion asks in each round.
    let mut registry = registry::Registry::for_plan(registry_settings, &mut plan)?;
    let check = registry.as_mut().map(registry::Registry::as_check);
    // A token minted for this run (GitHub App, Cloud Build connection) replaces GIT_TOKEN.
    let token = token::for_run_with(
        &args.token,
        plan.forge.as_ref(),
        &plan.repo.display(),
        args.timeout,
        plan.pull_request.is_some(),
    )?;
    let requests = promote::requests_for(
        &plan,
        token.clone(),
        &args.token.username,
        args.timeout,
        args.dry_run,
    )?;
    // The app's history: a checkout here first, then the app repository's forge.
    let source_repo = cwd.join(args.source_repo.as_deref().unwrap_or(Path::new(".")));
    let local = git::AppHistory::discover(&source_repo);
    let forge = forge::for_app(
        &plan.app_repo,
        args.token.source_token.clone(),
        token.clone(),
        &args.token.username,
        args.timeout,
    );
    let history = ordering::Sources(vec![&local, forge.as_ref()]);
    let access = promote::Access::for_plan(
        &plan,
        token,
        &args.token.username,
        args.timeout,
        args.dry_run,
    )?;
    let promotion = promote::promote(
        &plan,
        &promote::Settings {
            max_attempts: args.max_attempts,
            dry_run: args.dry_run,
            allow_downgrade: args.allow_downgrade,
            history: &history,
            access,
            purpose: promote::Purpose::Promote,
            requests: requests.as_deref(),
            verify: check.as_ref().map(|c| c as &promote::Check),
        },
    )?;
    commands::report_and_deploy(&plan, &promotion, args)?;
    match promotion.skipped_because() {
        Some(reason) if args.fail_if_skipped => Err(error::Error::Skipped {
            environment: promotion.environment,
            reason,
        }),
        _ => Ok(()),
    }
}
