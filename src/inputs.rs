//! What a run is given from this machine: promote.yaml from disk, the git token, the
//! build's environment variables; read here, then handed to the pure planner.

use std::path::{Path, PathBuf};

use crate::cli::{Args, TokenSource};
use crate::config::Config;
use crate::context::BuildContext;
use crate::error::{Error, Result};
use crate::plan::{self, Bases, Place, Plan};
use crate::registry;
use crate::secrets;

const DEFAULT_CONFIG: &str = "promote.yaml";

/// Flags, promote.yaml and the build's environment, resolved into one checked plan.
pub fn plan(args: &Args, cwd: &Path) -> Result<Plan> {
    let (config, config_dir) = load_with_secrets(args, cwd)?;
    let context = BuildContext::gather(args.commit_sha.clone(), args.tag_name.clone(), |k| {
        std::env::var(k).ok()
    });
    let bases = Bases {
        config_dir: &config_dir,
        cwd,
    };
    let plan = plan::resolve(&args.flags, config.as_ref(), context, &bases)?;
    tracing::info!(
        "environment {}: {} on branch {} of {}",
        plan.environment,
        plan.targets
            .iter()
            .map(|t| t.path.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        plan.branch,
        plan.repo.display()
    );
    Ok(plan)
}

/// Where `--env` lives (repo, branch, holds file, Argo CD), for the subcommands that do
/// not promote a build.
pub fn place(args: &Args, cwd: &Path) -> Result<Place> {
    let (config, config_dir) = load_with_secrets(args, cwd)?;
    let bases = Bases {
        config_dir: &config_dir,
        cwd,
    };
    plan::place(&args.flags, config.as_ref(), &bases)
}

/// promote.yaml, if there is one, and the directory its paths are relative to (else
/// `cwd`). ARGOCD_AUTH_TOKEN is a secret from the start, whatever fails first; every repo
/// URL's userinfo (the flag's, the config's, each environment's, the app's) is one before
/// anything can show the URL, even one too mistyped to parse.
fn load_with_secrets(args: &Args, cwd: &Path) -> Result<(Option<Config>, PathBuf)> {
    if let Some(token) = &args.argocd.token {
        secrets::register(token);
    }
    let config = load_config(args, cwd)?;
    let config_repos = config.iter().flat_map(|(c, _)| {
        c.repo
            .iter()
            .chain(c.source_repo.iter().map(|(url, _)| url))
            .chain(c.environments.iter().filter_map(|e| e.repo.as_ref()))
    });
    for repo in args.flags.repo.iter().chain(config_repos) {
        secrets::register_userinfo(repo);
    }
    Ok(match config {
        Some((config, dir)) => (Some(config), dir),
        None => (None, cwd.to_path_buf()),
    })
}

/// Who holds an environment: the CI's actor, else the local user, else the author.
pub fn who(author: &str) -> String {
    ["GITHUB_ACTOR", "USER", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| author.to_string())
}

/// Now, as unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub fn current_dir() -> Result<PathBuf> {
    std::env::current_dir()
        .map_err(|e| Error::local(format!("cannot read the working directory: {e}")))
}

/// GIT_TOKEN (or --git-token), else the file named by --git-token-file; registered as a
/// secret before anything can print it.
pub fn read_token(source: &TokenSource) -> Result<Option<String>> {
    if let Some(token) = &source.source_token {
        secrets::register(token);
    }
    let token = match (&source.value, &source.file) {
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

/// The registry check's settings: the flags, and where credentials are on this machine.
/// `None` under `--no-verify`. The token is registered as a secret either way.
pub fn registry_settings(args: &Args) -> Result<Option<registry::Settings>> {
    let flags = &args.registry;
    if let Some(token) = &flags.token {
        secrets::register(token);
    }
    if !flags.verify && (flags.pin_digest || flags.wait_for_image.is_some()) {
        let flag = if flags.pin_digest {
            "--pin-digest"
        } else {
            "--wait-for-image"
        };
        return Err(Error::usage(
            format!(
                "{flag} needs the registry check, which --no-verify (PROMOTE_NO_VERIFY) turns off"
            ),
            format!("drop --no-verify, or {flag}"),
        ));
    }
    Ok(flags.verify.then(|| registry::Settings {
        sources: registry::Sources::from_env(flags.token.clone()),
        insecure: flags.insecure_registries.clone(),
        timeout: args.timeout,
        wait: flags.wait_for_image,
        pin: flags.pin_digest,
        dry_run: args.dry_run,
    }))
}

/// The config and the directory its relative paths start from; `None` in flags-only use.
fn load_config(args: &Args, cwd: &Path) -> Result<Option<(Config, PathBuf)>> {
    let (path, explicit) = match &args.config {
        Some(path) => (cwd.join(path), true),
        None => (cwd.join(DEFAULT_CONFIG), false),
    };
    let shown = args
        .config
        .as_ref()
        .map_or(DEFAULT_CONFIG.to_string(), |p| p.display().to_string());
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| Error::input(&shown, None, "is not UTF-8 text", "save it as UTF-8"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            let flags = &args.flags;
            if flags.repo.is_none()
                && flags.overlay.is_none()
                && flags.images.is_empty()
                && flags.sets.is_empty()
            {
                return Err(Error::usage(
                    format!("no {DEFAULT_CONFIG} in {}", cwd.display()),
                    "pass --config FILE, or describe the promotion with --repo, --overlay and --image (or --set)",
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
