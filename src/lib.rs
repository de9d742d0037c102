//! tomoda-promote: the last step of a CI pipeline, putting a freshly built image into a
//! GitOps repository's Kustomize overlay.
//!
//! Data flows one way: the edges (`cli`, `inputs`, `context`) feed a pure middle (`config`,
//! `plan`, `overlay`, `kustomize`, `yaml`, `ordering`, `message`), whose result the edges
//! carry out (`promote` over `git`) and tell (`report`).

pub mod cli;
pub mod config;
pub mod context;
pub mod error;
pub mod git;
pub mod image;
pub mod inputs;
pub mod kustomize;
pub mod logging;
pub mod manifests;
pub mod message;
pub mod ordering;
pub mod overlay;
pub mod percent;
pub mod plan;
pub mod promote;
pub mod report;
pub mod secrets;
pub mod values;
pub mod yaml;

use std::path::Path;
use std::time::Duration;

use cli::Args;
use error::{Error, Result};
use plan::RepoLocation;

/// One promotion, from parsed flags to the printed result.
pub fn run(args: &Args) -> Result<()> {
    if let Some(what) = args.generate {
        return cli::print_generated(what);
    }
    let token = inputs::read_token(&args.token)?;
    let cwd = inputs::current_dir()?;
    let plan = inputs::plan(args, &cwd)?;
    install_transport(args, &plan, token)?;
    let source_repo = cwd.join(args.source_repo.as_deref().unwrap_or(Path::new(".")));
    let history = git::AppHistory::discover(&source_repo);
    let promotion = promote::promote(
        &plan,
        &promote::Settings {
            max_attempts: args.max_attempts,
            dry_run: args.dry_run,
            allow_downgrade: args.allow_downgrade,
            history: &history,
        },
    )?;
    report::result(&promotion, args.output)
}

/// Git over HTTP(S) with the token (or the credentials written into the repo URL).
fn install_transport(args: &Args, plan: &plan::Plan, token: Option<String>) -> Result<()> {
    let url_credentials = match &plan.repo {
        RepoLocation::Remote { credentials, .. } => credentials.clone(),
        RepoLocation::Local(_) => None,
    };
    if let Some(c) = &url_credentials {
        secrets::register(&c.password);
    }
    let auth = match (token, url_credentials) {
        (Some(password), _) => Some(git::transport::BasicAuth {
            username: args.token.username.clone(),
            password,
        }),
        (None, Some(c)) => Some(git::transport::BasicAuth {
            username: c.username,
            password: c.password,
        }),
        (None, None) => None,
    };
    git::transport::install(git::transport::HttpSettings {
        auth,
        // Strictly below the request timeout, which covers the connect too: when both
        // were equal the request's fired first and a dead host read as "no answer".
        connect_timeout: (args.timeout / 2).min(Duration::from_secs(30)),
        timeout: args.timeout,
        user_agent: format!("git/2.0 (tomoda-promote {})", env!("CARGO_PKG_VERSION")),
    })
    .map_err(|e| Error::local(format!("cannot set up the HTTP transport: {}", e.message())))
}
