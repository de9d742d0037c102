//! The command line, turned into plain data (`Args`) before anything else sees it: no clap
//! type goes past this file. Every flag also reads an environment variable, so the same
//! binary is driven by a Cloud Build step's `env:`, a GitHub Action's inputs, or a shell.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::CommitVia;
use crate::config::parse_duration;
use crate::error::{Error, Result};
use crate::plan::Flags;
use crate::report::Format;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Args {
    /// A subcommand that prints something generated from the flags' definitions.
    pub generate: Option<Generate>,
    /// What to do with the devops repo: promote (no subcommand), or look back and steer.
    pub action: Action,
    pub argocd: ArgoFlags,
    pub config: Option<PathBuf>,
    pub commit_sha: Option<String>,
    pub tag_name: Option<String>,
    /// What the planner takes from the flags.
    pub flags: Flags,
    /// `--plan`: show the change, write nothing.
    pub dry_run: bool,
    pub output: Format,
    pub log_format: Format,
    pub token: TokenSource,
    pub allow_downgrade: bool,
    /// `--fail-if-skipped`: a skipped promotion (older, held) exits 3, not 0.
    pub fail_if_skipped: bool,
    pub source_repo: Option<PathBuf>,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub registry: RegistryFlags,
}

/// The subcommands that work on the devops repo's history and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The default: promote this build.
    Promote,
    /// List the promotions recorded in the devops branch's log.
    History {
        limit: usize,
    },
    /// Set an environment's images back, as a new commit.
    Rollback {
        to: Option<String>,
        steps: Option<u32>,
        /// Hold the environment afterwards, so the next build does not undo the rollback.
        hold: bool,
        reason: Option<String>,
    },
    Hold {
        reason: String,
    },
    Unhold,
}

/// Argo CD, beyond the application (which is part of the plan).
#[derive(Clone)]
pub struct ArgoFlags {
    /// `ARGOCD_AUTH_TOKEN`: a secret.
    pub token: Option<String>,
    /// Time between two looks at the application while waiting.
    pub poll_interval: Duration,
}

impl std::fmt::Debug for ArgoFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgoFlags")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// What the command line says about the registry check (issue 8).
#[derive(Clone, Default)]
pub struct RegistryFlags {
    /// Check that each tag is in its registry; `--no-verify` turns it off.
    pub verify: bool,
    /// Write each verified digest into the image's entry.
    pub pin_digest: bool,
    /// Keep looking this long for a tag that is not there yet.
    pub wait_for_image: Option<Duration>,
    /// Registry hosts spoken to over plain HTTP besides loopback.
    pub insecure_registries: Vec<String>,
    /// `--registry-token`: a secret.
    pub token: Option<String>,
}

impl std::fmt::Debug for RegistryFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFlags")
            .field("verify", &self.verify)
            .field("pin_digest", &self.pin_digest)
            .field("wait_for_image", &self.wait_for_image)
            .field("insecure_registries", &self.insecure_registries)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Where the git token comes from; its value is a secret.
#[derive(Clone)]
pub struct TokenSource {
    pub value: Option<String>,
    pub file: Option<PathBuf>,
    pub username: String,
    /// `--github-app-id`: mint an installation token instead of reading one.
    pub github_app_id: Option<String>,
    /// `--github-app-key-file`: the App's private key (PEM).
    pub github_app_key_file: Option<PathBuf>,
    /// `GITHUB_APP_PRIVATE_KEY`: the App's private key itself (PEM); a secret.
    pub github_app_key: Option<String>,
    /// `--cloudbuild-repository`: a Cloud Build 2nd-gen repository resource, whose
    /// connection hands out a read-write token.
    pub cloudbuild_repository: Option<String>,
    /// `SOURCE_GIT_TOKEN`: reads the app's repository on its forge (the ordering guard);
    /// a secret. Without it, the devops token is tried.
    pub source_token: Option<String>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("value", &self.value.as_ref().map(|_| "***"))
            .field("file", &self.file)
            .field("username", &self.username)
            .field("github_app_id", &self.github_app_id)
            .field("github_app_key_file", &self.github_app_key_file)
            .field(
                "github_app_key",
                &self.github_app_key.as_ref().map(|_| "***"),
            )
            .field("cloudbuild_repository", &self.cloudbuild_repository)
            .field("source_token", &self.source_token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generate {
    Completions(clap_complete::Shell),
    Man,
}

/// Reads the command line and the environment; exits with clap's message on bad flags.
pub fn parse() -> Args {
    forget_empty_env();
    Args::from(Cli::parse())
}

impl Args {
    /// As `parse`, from a given command line, for tests.
    pub fn try_parse_from<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Cli::try_parse_from(args).map(Args::from)
    }
}

impl From<Cli> for Args {
    fn from(cli: Cli) -> Args {
        Args {
            generate: match &cli.command {
                Some(Command::Completions { shell }) => Some(Generate::Completions(*shell)),
                Some(Command::Man) => Some(Generate::Man),
                _ => None,
            },
            action: match cli.command {
                Some(Command::History { limit }) => Action::History { limit },
                Some(Command::Rollback {
                    to,
                    steps,
                    hold,
                    reason,
                }) => Action::Rollback {
                    to,
                    steps,
                    hold,
                    reason,
                },
                Some(Command::Hold { reason }) => Action::Hold { reason },
                Some(Command::Unhold) => Action::Unhold,
                _ => Action::Promote,
            },
            argocd: ArgoFlags {
                token: cli.argocd_token,
                poll_interval: cli.argocd_poll_interval,
            },
            config: cli.config,
            commit_sha: cli.commit_sha,
            tag_name: cli.tag_name,
            flags: Flags {
                environment: cli.environment,
                repo: cli.repo,
                branch: cli.branch,
                overlay: cli.overlay,
                images: cli.images,
                sets: cli.sets,
                author: cli.author,
                commit_via: cli.commit_via.map(|c| match c {
                    CommitViaArg::Git => CommitVia::Git,
                    CommitViaArg::Api => CommitVia::Api,
                }),
                argocd_server: cli.argocd_server,
                argocd_app: cli.argocd_app,
                wait: cli.wait_timeout.or(cli.wait),
                pull_request: cli.pull_request,
            },
            dry_run: cli.plan,
            output: cli.output.into(),
            log_format: cli.log_format.into(),
            token: TokenSource {
                value: cli.git_token,
                file: cli.git_token_file,
                username: cli.git_username,
                github_app_id: cli.github_app_id,
                github_app_key_file: cli.github_app_key_file,
                github_app_key: cli.github_app_private_key,
                cloudbuild_repository: cli.cloudbuild_repository,
                source_token: cli.source_token,
            },
            allow_downgrade: cli.allow_downgrade,
            fail_if_skipped: cli.fail_if_skipped,
            source_repo: cli.source_repo,
            max_attempts: cli.max_attempts,
            timeout: Duration::from_secs(cli.timeout),
            registry: RegistryFlags {
                verify: !cli.no_verify,
                pin_digest: cli.pin_digest,
                wait_for_image: cli.wait_for_image,
                insecure_registries: cli.insecure_registries,
                token: cli.registry_token,
            },
        }
    }
}

/// Shell completions and the man page, generated from the flags' definitions.
pub fn print_generated(what: Generate) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    match what {
        Generate::Completions(shell) => {
            clap_complete::generate(shell, &mut cmd, "tomoda-promote", &mut out);
            Ok(())
        }
        Generate::Man => clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| Error::local(format!("cannot write the man page: {e}"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CommitViaArg {
    /// Push over git (HTTPS)
    Git,
    /// The forge's API: GitHub signs the commit (Verified); nothing is cloned
    Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    /// One JSON object per line with `severity` and `message` (Cloud Logging)
    Json,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::Text => Format::Text,
            OutputFormat::Json => Format::Json,
        }
    }
}

impl From<LogFormat> for Format {
    fn from(f: LogFormat) -> Format {
        match f {
            LogFormat::Text => Format::Text,
            LogFormat::Json => Format::Json,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Print a completion script for a shell: `tomoda-promote completions bash > /etc/bash_completion.d/tomoda-promote`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `tomoda-promote man | man -l -`
    Man,
    /// List the promotions recorded in the devops branch's log (newest first; --env to
    /// keep one environment)
    History {
        /// How many promotions to list
        #[arg(long, env = "PROMOTE_HISTORY_LIMIT", default_value_t = 20, value_name = "N",
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        limit: usize,
    },
    /// Set --env's images back to an earlier promotion's values, as a new commit (never a
    /// force push): the one before the last (--steps 1), N before (--steps N), or the
    /// promotion of a tag, version or source commit (--to)
    Rollback {
        /// The value to go back to: a tag, an image reference's tag or digest, or a source
        /// commit (its first 7 digits are enough)
        #[arg(
            long,
            env = "PROMOTE_ROLLBACK_TO",
            value_name = "VALUE",
            conflicts_with = "steps"
        )]
        to: Option<String>,
        /// Go back this many promotions [default: 1]
        #[arg(long, env = "PROMOTE_ROLLBACK_STEPS", value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        steps: Option<u32>,
        /// Hold the environment afterwards, so that the next build does not undo the rollback
        #[arg(long, env = "PROMOTE_ROLLBACK_HOLD", value_parser = BoolishValueParser::new())]
        hold: bool,
        /// Why the environment is held (with --hold)
        #[arg(long, env = "PROMOTE_HOLD_REASON", value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Hold --env: promotions to it are skipped, with the reason, until `unhold`
    Hold {
        /// Why, as every skipped promotion will say
        #[arg(long, env = "PROMOTE_HOLD_REASON", value_name = "TEXT")]
        reason: String,
    },
    /// Let promotions to --env land again
    Unhold,
}

// Flags are booleans by nature; each is one switch of the command line.
#[allow(clippy::struct_excessive_bools)]
#[derive(Parser)]
#[command(
    name = "tomoda-promote",
    version,
    about = "Promote a freshly built image into a GitOps repo's Kustomize overlay, as the last step of a CI build",
    long_about = "Promote a freshly built image into a GitOps repo's Kustomize overlay, as the last step of a CI build.\n\n\
It reads the build's commit SHA and tag, picks the environment (a commit build goes to the \
`when: commit` environment, a tag build to the first environment whose `when` regex matches), \
sets newTag / newName / digest of the image in that environment's kustomization.yaml in the \
devops repo, and commits and pushes straight to its branch. Only the bytes of those values \
change: comments, quoting and layout stay as they were. A push that loses a race is retried \
on the new tip, so no promotion is lost.",
    after_long_help = "EXAMPLES:\n\
  Preview what a build of commit 4d5e6f7 would change (no push):\n    \
tomoda-promote --config promote.yaml --commit-sha 4d5e6f7 --plan\n\n\
  In Cloud Build, as the last step (the token from Secret Manager):\n    \
- name: <region>-docker.pkg.dev/<project>/builders/tomoda-promote\n      \
env: ['COMMIT_SHA=$COMMIT_SHA', 'TAG_NAME=$TAG_NAME']\n      \
secretEnv: ['GIT_TOKEN']\n\n\
  Without a config file:\n    \
tomoda-promote --repo https://github.com/acme/devops.git --overlay k8s/app/overlays/dev \\\n      \
--image reg.io/acme/app:4d5e6f7\n\n\
  A Helm values file, without a config file:\n    \
tomoda-promote --repo https://github.com/acme/infra.git \\\n      \
--set charts/api/values-dev.yaml:image.tag=4d5e6f7\n\n\
EXIT CODES:\n  0  promoted, already up to date, skipped, or plan printed\n  \
2  usage, config or input error (nothing was pushed)\n  \
1  anything else: network, authentication, push still refused after the last attempt\n  \
3  skipped (older than the deployed build, or held) with --fail-if-skipped (nothing was pushed)\n\n\
AUTHENTICATION:\n  GIT_TOKEN (or --git-token-file) is sent as HTTP basic auth with user GIT_USERNAME \
(default x-access-token, as GitHub App tokens use). It never appears in any output.\n  \
Without a stored token: --github-app-id with --github-app-key-file (or GITHUB_APP_PRIVATE_KEY) \
mints a one-hour GitHub App token for the devops repository; --cloudbuild-repository takes \
the read-write token of a Cloud Build 2nd-gen repository connection.\n  \
--commit-via api commits through the forge's API (GitHub signs the commit) instead of git."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The promote.yaml that maps builds to environments [default: ./promote.yaml]
    #[arg(global = true, long, env = "PROMOTE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Promote to this environment of promote.yaml, whatever the build's tag says
    #[arg(global = true, long = "env", env = "PROMOTE_ENV", value_name = "NAME")]
    environment: Option<String>,

    /// The built commit (falls back to GITHUB_SHA)
    #[arg(long, env = "COMMIT_SHA", value_name = "SHA")]
    commit_sha: Option<String>,

    /// The built tag (falls back to GITHUB_REF_NAME when GITHUB_REF_TYPE=tag)
    #[arg(long, env = "TAG_NAME", value_name = "TAG")]
    tag_name: Option<String>,

    /// The devops repository: an https URL or a local path (overrides promote.yaml)
    #[arg(
        global = true,
        long,
        env = "PROMOTE_REPO",
        hide_env_values = true,
        value_name = "URL|PATH"
    )]
    repo: Option<String>,

    /// The branch to commit to (overrides promote.yaml) [default: main]
    #[arg(global = true, long, env = "PROMOTE_BRANCH", value_name = "NAME")]
    branch: Option<String>,

    /// The overlay directory holding kustomization.yaml (overrides the environment's)
    #[arg(long, env = "PROMOTE_OVERLAY", value_name = "DIR")]
    overlay: Option<String>,

    /// An image to set, as for `kustomize edit set image`: name:tag, name=newName:tag,
    /// name@sha256:…, name=newName:tag@sha256:…; `*` keeps the entry's value (name=*:v2,
    /// name:v2@*) (repeatable; replaces the environment's images)
    #[arg(
        long = "image",
        env = "PROMOTE_IMAGES",
        value_name = "SPEC",
        value_delimiter = ','
    )]
    images: Vec<String>,

    /// A value to set at a key path of a YAML file in the devops repository (Helm values),
    /// as FILE:PATH=VALUE, e.g. --set charts/api/values-dev.yaml:image.tag=4d5e6f7; lists
    /// by index or field match: containers[name=api].image (repeatable; replaces the
    /// environment's files)
    #[arg(
        long = "set",
        env = "PROMOTE_SET",
        value_name = "FILE:PATH=VALUE",
        value_delimiter = '\n'
    )]
    sets: Vec<String>,

    /// Dry run: show each file's diff and the commit message; push nothing (also
    /// --dry-run, as kubectl, helm and Argo CD Image Updater spell it)
    #[arg(global = true, long, visible_alias = "dry-run", env = "PROMOTE_PLAN",
          value_parser = BoolishValueParser::new())]
    plan: bool,

    /// How to print the result on stdout
    #[arg(global = true, short = 'o', long, env = "PROMOTE_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    /// How to write progress lines on stderr (json: for Cloud Logging's structured logs)
    #[arg(global = true, long, env = "PROMOTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Commit author and committer [default: tomoda-promote <tomoda-promote@users.noreply.github.com>]
    #[arg(
        global = true,
        long,
        env = "PROMOTE_AUTHOR",
        value_name = "NAME <EMAIL>"
    )]
    author: Option<String>,

    /// Token for HTTPS git; prefer the environment variable, a flag is visible to other processes
    #[arg(
        global = true,
        long,
        env = "GIT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    git_token: Option<String>,

    /// Read the token from this file (e.g. a mounted secret)
    #[arg(global = true, long, env = "GIT_TOKEN_FILE", value_name = "FILE")]
    git_token_file: Option<PathBuf>,

    /// User name sent with the token
    #[arg(
        global = true,
        long,
        env = "GIT_USERNAME",
        default_value = "x-access-token",
        value_name = "NAME"
    )]
    git_username: String,

    /// How the commit reaches the branch: a git push, or the forge's API (overrides
    /// promote.yaml's `commit_via:`) [default: git]
    #[arg(long, env = "PROMOTE_COMMIT_VIA", value_enum, value_name = "HOW")]
    commit_via: Option<CommitViaArg>,

    /// Mint a one-hour GitHub App installation token for the devops repository instead of
    /// reading GIT_TOKEN (with --github-app-key-file or GITHUB_APP_PRIVATE_KEY)
    #[arg(long, env = "GITHUB_APP_ID", value_name = "ID")]
    github_app_id: Option<String>,

    /// The GitHub App's private key (PEM, PKCS#1 or PKCS#8)
    #[arg(long, env = "GITHUB_APP_KEY_FILE", value_name = "FILE")]
    github_app_key_file: Option<PathBuf>,

    /// The GitHub App's private key itself (PEM); prefer the environment variable
    #[arg(
        long,
        env = "GITHUB_APP_PRIVATE_KEY",
        hide_env_values = true,
        // A PEM begins with `-----BEGIN`.
        allow_hyphen_values = true,
        value_name = "PEM"
    )]
    github_app_private_key: Option<String>,

    /// Take the token from a Cloud Build 2nd-gen repository connection:
    /// projects/P/locations/L/connections/C/repositories/R (no stored secret)
    #[arg(long, env = "PROMOTE_CLOUDBUILD_REPOSITORY", value_name = "NAME")]
    cloudbuild_repository: Option<String>,

    /// Open (or update) a pull request to the branch instead of pushing to it, for a
    /// promotion, rollback, hold or unhold (overrides promote.yaml's `pull_request:`)
    #[arg(global = true, long, env = "PROMOTE_PULL_REQUEST")]
    pull_request: bool,

    /// Promote even when the new tag is older than the deployed one (a deliberate rollback)
    #[arg(long, env = "PROMOTE_ALLOW_DOWNGRADE")]
    allow_downgrade: bool,

    /// Exit 3 instead of 0 when the promotion is skipped (older than the deployed build, or
    /// held), for a build that should go red
    #[arg(long, env = "PROMOTE_FAIL_IF_SKIPPED", value_parser = BoolishValueParser::new())]
    fail_if_skipped: bool,

    /// The application's checkout, to tell older commits from newer ones [default: the working directory]
    #[arg(long, env = "PROMOTE_SOURCE_REPO", value_name = "DIR")]
    source_repo: Option<PathBuf>,

    /// Token that may read the app's repository on its forge (source_repo: in promote.yaml,
    /// GITHUB_REPOSITORY, REPO_FULL_NAME), asked for the order of two commits when no
    /// checkout here holds them [default: the devops token, where the app is on the devops
    /// repository's own API]
    #[arg(
        long,
        env = "SOURCE_GIT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    source_token: Option<String>,

    /// Push attempts before giving up when other pipelines keep moving the branch
    #[arg(global = true, long, env = "PROMOTE_MAX_ATTEMPTS", default_value_t = 30, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,

    /// Seconds allowed for each HTTP request to the git server or a registry
    #[arg(global = true, long, env = "PROMOTE_TIMEOUT", default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,

    /// Skip the check that each image's tag is in its registry
    #[arg(long, env = "PROMOTE_NO_VERIFY", value_parser = BoolishValueParser::new())]
    no_verify: bool,

    /// Pin what was built: write the digest the registry gives each tag into the image's
    /// entry (`digest:`)
    #[arg(long, env = "PROMOTE_PIN_DIGEST", value_parser = BoolishValueParser::new())]
    pin_digest: bool,

    /// Keep looking for a tag that is not in its registry yet, up to this long (90s, 2m, 1m30s)
    #[arg(long, env = "PROMOTE_WAIT_FOR_IMAGE", value_name = "DURATION",
          value_parser = parse_duration)]
    wait_for_image: Option<Duration>,

    /// Speak plain HTTP to this registry host[:port] (loopback registries always are); repeatable
    #[arg(
        long = "insecure-registry",
        env = "PROMOTE_INSECURE_REGISTRIES",
        value_name = "HOST",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,

    /// Registry credentials: USER:PASSWORD, or an access token (sent as user
    /// oauth2accesstoken); prefer the environment variable
    #[arg(
        long,
        env = "PROMOTE_REGISTRY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    registry_token: Option<String>,

    /// Argo CD's API (https://argocd.example.com): after the push, refresh --argocd-app
    /// there so it deploys at once (overrides the environment's `argocd:`)
    #[arg(global = true, long, env = "PROMOTE_ARGOCD_SERVER", value_name = "URL")]
    argocd_server: Option<String>,

    /// The Argo CD application that deploys the environment
    #[arg(global = true, long, env = "PROMOTE_ARGOCD_APP", value_name = "NAME")]
    argocd_app: Option<String>,

    /// Argo CD's API token (a project or account token); prefer the environment variable
    #[arg(
        global = true,
        long,
        env = "ARGOCD_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    argocd_token: Option<String>,

    /// After the refresh, wait until Argo CD runs the pushed commit Synced and Healthy, up
    /// to DURATION (10m when not given); Degraded, a failed sync or the timeout exit 1
    #[arg(global = true, long, env = "PROMOTE_WAIT", value_name = "DURATION",
          num_args = 0..=1, require_equals = true, default_missing_value = "10m",
          value_parser = parse_wait)]
    wait: Option<Duration>,

    /// As --wait=DURATION
    #[arg(global = true, long, env = "PROMOTE_WAIT_TIMEOUT", value_name = "DURATION",
          value_parser = parse_duration)]
    wait_timeout: Option<Duration>,

    /// How often to look at the application while waiting (3s, 500ms)
    #[arg(global = true, long, env = "PROMOTE_ARGOCD_POLL_INTERVAL", value_name = "DURATION",
          default_value = "3s", value_parser = parse_duration)]
    argocd_poll_interval: Duration,
}

/// `--wait`'s value: a duration, or `true` / `yes` / `on` (PROMOTE_WAIT=true) for the
/// default 10 minutes.
fn parse_wait(text: &str) -> std::result::Result<Duration, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(DEFAULT_WAIT),
        _ => parse_duration(text),
    }
}

/// How long `--wait` waits for Argo CD when no duration is given.
const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// Removes the environment variables of our flags that are set but empty, so they count
/// as unset: a GitHub Action passes every input, given or not, and Cloud Build maps an
/// absent substitution such as `$TAG_NAME` to "".
fn forget_empty_env() {
    for arg in Cli::command().get_arguments() {
        if let Some(name) = arg.get_env()
            && std::env::var_os(name).is_some_and(|v| v.is_empty())
        {
            // SAFETY: called first thing in main, while the process has one thread.
            unsafe { std::env::remove_var(name) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn images_repeat_or_split_on_commas() {
        let args = Args::try_parse_from(["tomoda-promote", "--image", "a:1", "--image", "b:2,c:3"])
            .unwrap();
        assert_eq!(args.flags.images, ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn registry_flags() {
        let args = Args::try_parse_from(["tomoda-promote"]).unwrap();
        assert!(args.registry.verify && !args.registry.pin_digest);
        let args = Args::try_parse_from([
            "tomoda-promote",
            "--pin-digest",
            "--wait-for-image",
            "1m30s",
            "--insecure-registry",
            "reg.internal:5000",
            "--insecure-registry",
            "cache",
            "--registry-token",
            "robot:s3cret",
        ])
        .unwrap();
        assert!(args.registry.pin_digest);
        assert_eq!(args.registry.wait_for_image, Some(Duration::from_secs(90)));
        assert_eq!(
            args.registry.insecure_registries,
            ["reg.internal:5000", "cache"]
        );
        assert!(!format!("{args:?}").contains("s3cret"));
        let off = Args::try_parse_from(["tomoda-promote", "--no-verify"]).unwrap();
        assert!(!off.registry.verify);
    }

    #[test]
    fn forge_and_token_flags() {
        let args = Args::try_parse_from([
            "tomoda-promote",
            "--commit-via",
            "api",
            "--github-app-id",
            "42",
            "--github-app-private-key",
            "-----BEGIN RSA PRIVATE KEY-----secret",
            "--cloudbuild-repository",
            "projects/p/locations/l/connections/c/repositories/r",
        ])
        .unwrap();
        assert_eq!(args.flags.commit_via, Some(CommitVia::Api));
        assert_eq!(args.token.github_app_id.as_deref(), Some("42"));
        assert!(!format!("{args:?}").contains("secret"));
        let default = Args::try_parse_from(["tomoda-promote"]).unwrap();
        assert_eq!(default.flags.commit_via, None);
    }

    #[test]
    fn argocd_flags_and_the_forms_of_wait() {
        let wait = |args: &[&str]| {
            let mut all = vec!["tomoda-promote"];
            all.extend_from_slice(args);
            Args::try_parse_from(all).unwrap().flags.wait
        };
        assert_eq!(wait(&[]), None);
        assert_eq!(wait(&["--wait"]), Some(DEFAULT_WAIT));
        assert_eq!(wait(&["--wait=90s"]), Some(Duration::from_secs(90)));
        assert_eq!(
            wait(&["--wait-timeout", "2m"]),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_wait("true"), Ok(DEFAULT_WAIT));
        let args = Args::try_parse_from([
            "tomoda-promote",
            "rollback",
            "--env",
            "prod",
            "--steps",
            "2",
            "--argocd-token",
            "argo-s3cret",
        ])
        .unwrap();
        assert_eq!(
            args.action,
            Action::Rollback {
                to: None,
                steps: Some(2),
                hold: false,
                reason: None
            }
        );
        assert_eq!(args.flags.environment.as_deref(), Some("prod"));
        assert!(!format!("{args:?}").contains("argo-s3cret"));
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("2m"), Ok(120));
        assert_eq!(d("1m30s"), Ok(90));
        assert_eq!(d("1h"), Ok(3600));
        for bad in ["", "m", "5x", "1.5m", "10m5"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dry_run_is_plan_and_o_is_output() {
        for flag in ["--plan", "--dry-run"] {
            let args = Args::try_parse_from(["tomoda-promote", flag]).unwrap();
            assert!(args.dry_run, "{flag}");
        }
        assert!(!Args::try_parse_from(["tomoda-promote"]).unwrap().dry_run);
        let args = Args::try_parse_from(["tomoda-promote", "-o", "json"]).unwrap();
        assert_eq!(args.output, Format::Json);
    }

    #[test]
    fn sets_repeat_and_keep_their_commas() {
        let args = Args::try_parse_from([
            "tomoda-promote",
            "--set",
            "v.yaml:image.tag=a,b",
            "--set",
            "v.yaml:c[name=x].d=1",
        ])
        .unwrap();
        assert_eq!(
            args.flags.sets,
            ["v.yaml:image.tag=a,b", "v.yaml:c[name=x].d=1"]
        );
    }
}
