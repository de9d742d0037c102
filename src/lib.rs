//! tomoda-promote: the last step of a CI pipeline, putting a freshly built image into a
//! GitOps repository's Kustomize overlay.
//!
//! Data flows one way: the edges (flags and environment, files, the git remote) feed a
//! pure middle (`config`, `plan`, `overlay`, `kustomize`, `yaml`), whose result the edges
//! carry out (`git`, `report`).

pub mod cli;
pub mod config;
pub mod context;
pub mod error;
pub mod git;
pub mod github;
pub mod image;
pub mod kustomize;
pub mod logging;
pub mod message;
pub mod ordering;
pub mod overlay;
pub mod plan;
pub mod promote;
pub mod report;
pub mod secrets;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;

use cli::{Cli, Command, LogFormat, OutputFormat};
use config::Config;
use context::BuildContext;
use error::{Error, Result};
use plan::Bases;

const DEFAULT_CONFIG: &str = "promote.yaml";

/// Randomness enough for backoff jitter and unguessable heredoc delimiters: std's
/// `RandomState` is keyed from the OS once per process and stepped on every call.
pub fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(())
}

/// One promotion, from parsed flags to the printed result.
pub fn run(cli: &Cli) -> Result<()> {
    if let Some(command) = &cli.command {
        return print_generated(command);
    }
    let token = read_token(cli)?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::local(format!("cannot read the working directory: {e}")))?;
    let plan = resolve_plan(cli, &cwd)?;
    let transport = git::HttpTransport::for_repo(
        &plan.repo,
        token,
        &cli.git_username,
        Duration::from_secs(cli.timeout),
    )?;
    let source_repo = cwd.join(cli.source_repo.as_deref().unwrap_or(Path::new(".")));
    let history = git::AppHistory::discover(&source_repo);
    let outcome = promote::promote(
        &plan,
        &promote::Settings {
            max_attempts: cli.max_attempts,
            dry_run: cli.plan,
            allow_downgrade: cli.allow_downgrade,
            history: &history,
            transport,
        },
    )?;
    let on_github = github::active();
    match cli.output {
        OutputFormat::Text => report::print(&outcome.to_text(on_github)),
        OutputFormat::Json => report::print(&format!("{}\n", outcome.to_json())),
    }
    if on_github {
        github::publish(&outcome)?;
    }
    Ok(())
}

/// Flags, promote.yaml and the build's environment, resolved into one checked plan.
fn resolve_plan(cli: &Cli, cwd: &Path) -> Result<plan::Plan> {
    let config = load_config(cli, cwd)?;
    let config_repo = config.as_ref().and_then(|(c, _)| c.repo.as_deref());
    // Before anything can show a repo URL, even one too mistyped to parse.
    for repo in [cli.repo.as_deref(), config_repo].into_iter().flatten() {
        secrets::register_userinfo(repo);
    }
    let context = BuildContext::gather(cli.commit_sha.clone(), cli.tag_name.clone(), |k| {
        std::env::var(k).ok()
    });
    let config_dir = config
        .as_ref()
        .map_or(cwd.to_path_buf(), |(_, dir)| dir.clone());
    let bases = Bases {
        config_dir: &config_dir,
        cwd,
    };
    let plan = plan::resolve(cli, config.as_ref().map(|(c, _)| c), context, &bases)?;
    tracing::info!(
        "environment {}: {} on branch {} of {}",
        plan.environment,
        plan.overlay,
        plan.branch,
        plan.repo.display()
    );
    Ok(plan)
}

/// Tells the user what failed, once, in the form the log format asks for.
pub fn report_error(error: &Error, format: LogFormat) {
    let text = format!("tomoda-promote: error: {error}");
    let line = match format {
        LogFormat::Text => text,
        LogFormat::Json => logging::json_line("ERROR", &text),
    };
    eprintln!("{}", secrets::redact(&line));
    if github::active() {
        println!("{}", secrets::redact(&github::annotation(error)));
    }
}

/// Shell completions and the man page, generated from the clap definitions.
fn print_generated(command: &Command) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "tomoda-promote", &mut out);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| Error::local(format!("cannot write the man page: {e}"))),
    }
}

/// GIT_TOKEN (or --git-token), else the file named by --git-token-file.
fn read_token(cli: &Cli) -> Result<Option<String>> {
    let token = match (&cli.git_token, &cli.git_token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::usage(
                    format!("cannot read --git-token-file {}: {e}", file.display()),
                    "point --git-token-file (GIT_TOKEN_FILE) at a readable file holding the token",
                )
            })?;
            Some(text.trim().to_string())
        }
        (None, None) => None,
    };
    if let Some(t) = &token {
        if t.is_empty() {
            return Err(Error::usage(
                "the git token is empty",
                "set GIT_TOKEN (or --git-token-file) to the devops repository's token",
            ));
        }
        secrets::register(t);
    }
    Ok(token)
}

/// The config and the directory its relative paths start from; `None` in flags-only use.
fn load_config(cli: &Cli, cwd: &Path) -> Result<Option<(Config, PathBuf)>> {
    let (path, explicit) = match &cli.config {
        Some(path) => (cwd.join(path), true),
        None => (cwd.join(DEFAULT_CONFIG), false),
    };
    let shown = cli
        .config
        .as_ref()
        .map_or(DEFAULT_CONFIG.to_string(), |p| p.display().to_string());
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| Error::input(&shown, None, "is not UTF-8 text", "save it as UTF-8"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            if cli.repo.is_none() && cli.overlay.is_none() && cli.images.is_empty() {
                return Err(Error::usage(
                    format!("no {DEFAULT_CONFIG} in {}", cwd.display()),
                    "pass --config FILE, or describe the promotion with --repo, --overlay and --image",
                ));
            }
            return Ok(None);
        }
        Err(e) => {
            return Err(Error::usage(
                format!("cannot read the config {shown}: {e}"),
                "pass --config with the path of promote.yaml",
            ));
        }
    };
    let config = Config::parse(&shown, &text)?;
    let dir = path.parent().map_or(cwd.to_path_buf(), Path::to_path_buf);
    Ok(Some((config, dir)))
}
