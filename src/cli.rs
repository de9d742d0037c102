//! The command line, turned into plain data (`Args`) before anything else sees it: no clap
//! type goes past this file. Every flag also reads an environment variable, so the same
//! binary is driven by a Cloud Build step's `env:`, a GitHub Action's inputs, or a shell.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::plan::Flags;
use crate::report::Format;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Args {
    /// A subcommand that prints something generated from the flags' definitions.
    pub generate: Option<Generate>,
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
    pub source_repo: Option<PathBuf>,
    pub max_attempts: u32,
    pub timeout: Duration,
}

/// Where the git token comes from; its value is a secret.
#[derive(Clone)]
pub struct TokenSource {
    pub value: Option<String>,
    pub file: Option<PathBuf>,
    pub username: String,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("value", &self.value.as_ref().map(|_| "***"))
            .field("file", &self.file)
            .field("username", &self.username)
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
            generate: cli.command.map(|c| match c {
                Command::Completions { shell } => Generate::Completions(shell),
                Command::Man => Generate::Man,
            }),
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
            },
            dry_run: cli.plan,
            output: cli.output.into(),
            log_format: cli.log_format.into(),
            token: TokenSource {
                value: cli.git_token,
                file: cli.git_token_file,
                username: cli.git_username,
            },
            allow_downgrade: cli.allow_downgrade,
            source_repo: cli.source_repo,
            max_attempts: cli.max_attempts,
            timeout: Duration::from_secs(cli.timeout),
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
}

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
1  anything else: network, authentication, push still refused after the last attempt\n\n\
AUTHENTICATION:\n  GIT_TOKEN (or --git-token-file) is sent as HTTP basic auth with user GIT_USERNAME \
(default x-access-token, as GitHub App tokens use). It never appears in any output."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The promote.yaml that maps builds to environments [default: ./promote.yaml]
    #[arg(long, env = "PROMOTE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Promote to this environment of promote.yaml, whatever the build's tag says
    #[arg(long = "env", env = "PROMOTE_ENV", value_name = "NAME")]
    environment: Option<String>,

    /// The built commit (falls back to GITHUB_SHA)
    #[arg(long, env = "COMMIT_SHA", value_name = "SHA")]
    commit_sha: Option<String>,

    /// The built tag (falls back to GITHUB_REF_NAME when GITHUB_REF_TYPE=tag)
    #[arg(long, env = "TAG_NAME", value_name = "TAG")]
    tag_name: Option<String>,

    /// The devops repository: an https URL or a local path (overrides promote.yaml)
    #[arg(
        long,
        env = "PROMOTE_REPO",
        hide_env_values = true,
        value_name = "URL|PATH"
    )]
    repo: Option<String>,

    /// The branch to commit to (overrides promote.yaml) [default: main]
    #[arg(long, env = "PROMOTE_BRANCH", value_name = "NAME")]
    branch: Option<String>,

    /// The overlay directory holding kustomization.yaml (overrides the environment's)
    #[arg(long, env = "PROMOTE_OVERLAY", value_name = "DIR")]
    overlay: Option<String>,

    /// An image to set, as for `kustomize edit set image`: name:tag, name=newName:tag,
    /// name@sha256:…, name=newName:tag@sha256:… (repeatable; replaces the environment's images)
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

    /// Dry run: show each file's diff and the commit message; push nothing
    #[arg(long, env = "PROMOTE_PLAN")]
    plan: bool,

    /// How to print the result on stdout
    #[arg(long, env = "PROMOTE_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    /// How to write progress lines on stderr (json: for Cloud Logging's structured logs)
    #[arg(long, env = "PROMOTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Commit author and committer [default: tomoda-promote <tomoda-promote@users.noreply.github.com>]
    #[arg(long, env = "PROMOTE_AUTHOR", value_name = "NAME <EMAIL>")]
    author: Option<String>,

    /// Token for HTTPS git; prefer the environment variable, a flag is visible to other processes
    #[arg(long, env = "GIT_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    git_token: Option<String>,

    /// Read the token from this file (e.g. a mounted secret)
    #[arg(long, env = "GIT_TOKEN_FILE", value_name = "FILE")]
    git_token_file: Option<PathBuf>,

    /// User name sent with the token
    #[arg(
        long,
        env = "GIT_USERNAME",
        default_value = "x-access-token",
        value_name = "NAME"
    )]
    git_username: String,

    /// Promote even when the new tag is older than the deployed one (a deliberate rollback)
    #[arg(long, env = "PROMOTE_ALLOW_DOWNGRADE")]
    allow_downgrade: bool,

    /// The application's checkout, to tell older commits from newer ones [default: the working directory]
    #[arg(long, env = "PROMOTE_SOURCE_REPO", value_name = "DIR")]
    source_repo: Option<PathBuf>,

    /// Push attempts before giving up when other pipelines keep moving the branch
    #[arg(long, env = "PROMOTE_MAX_ATTEMPTS", default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,

    /// Seconds allowed for each HTTP request to the git server
    #[arg(long, env = "PROMOTE_TIMEOUT", default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

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
