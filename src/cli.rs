//! The command line as plain data: every flag also reads an environment variable, so the
//! same binary is driven by a Cloud Build step's `env:`, a GitHub Action's inputs, or a shell.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line with `severity` and `message` (Cloud Logging)
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
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
EXIT CODES:\n  0  promoted, already up to date, skipped, or plan printed\n  \
2  usage, config or input error (nothing was pushed)\n  \
1  anything else: network, authentication, push still refused after the last attempt\n\n\
AUTHENTICATION:\n  GIT_TOKEN (or --git-token-file) is sent as HTTP basic auth with user GIT_USERNAME \
(default x-access-token, as GitHub App tokens use). It never appears in any output."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The promote.yaml that maps builds to environments [default: ./promote.yaml]
    #[arg(long, env = "PROMOTE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Promote to this environment of promote.yaml, whatever the build's tag says
    #[arg(long = "env", env = "PROMOTE_ENV", value_name = "NAME")]
    pub environment: Option<String>,

    /// The built commit (falls back to GITHUB_SHA)
    #[arg(long, env = "COMMIT_SHA", value_name = "SHA")]
    pub commit_sha: Option<String>,

    /// The built tag (falls back to GITHUB_REF_NAME when GITHUB_REF_TYPE=tag)
    #[arg(long, env = "TAG_NAME", value_name = "TAG")]
    pub tag_name: Option<String>,

    /// The devops repository: an https URL or a local path (overrides promote.yaml)
    #[arg(
        long,
        env = "PROMOTE_REPO",
        hide_env_values = true,
        value_name = "URL|PATH"
    )]
    pub repo: Option<String>,

    /// The branch to commit to (overrides promote.yaml) [default: main]
    #[arg(long, env = "PROMOTE_BRANCH", value_name = "NAME")]
    pub branch: Option<String>,

    /// The overlay directory holding kustomization.yaml (overrides the environment's)
    #[arg(long, env = "PROMOTE_OVERLAY", value_name = "DIR")]
    pub overlay: Option<String>,

    /// An image to set, as for `kustomize edit set image`: name:tag, name=newName:tag,
    /// name@sha256:…, name=newName:tag@sha256:… (repeatable; replaces the environment's images)
    #[arg(
        long = "image",
        env = "PROMOTE_IMAGES",
        value_name = "SPEC",
        value_delimiter = ','
    )]
    pub images: Vec<String>,

    /// Dry run: show each file's diff and the commit message; push nothing
    #[arg(long, env = "PROMOTE_PLAN")]
    pub plan: bool,

    /// How to print the result on stdout
    #[arg(long, env = "PROMOTE_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// How to write progress lines on stderr (json: for Cloud Logging's structured logs)
    #[arg(long, env = "PROMOTE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Commit author and committer [default: tomoda-promote <tomoda-promote@users.noreply.github.com>]
    #[arg(long, env = "PROMOTE_AUTHOR", value_name = "NAME <EMAIL>")]
    pub author: Option<String>,

    /// Token for HTTPS git; prefer the environment variable, a flag is visible to other processes
    #[arg(long, env = "GIT_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub git_token: Option<String>,

    /// Read the token from this file (e.g. a mounted secret)
    #[arg(long, env = "GIT_TOKEN_FILE", value_name = "FILE")]
    pub git_token_file: Option<PathBuf>,

    /// User name sent with the token
    #[arg(
        long,
        env = "GIT_USERNAME",
        default_value = "x-access-token",
        value_name = "NAME"
    )]
    pub git_username: String,

    /// Promote even when the new tag is older than the deployed one (a deliberate rollback)
    #[arg(long, env = "PROMOTE_ALLOW_DOWNGRADE")]
    pub allow_downgrade: bool,

    /// The application's checkout, to tell older commits from newer ones [default: the working directory]
    #[arg(long, env = "PROMOTE_SOURCE_REPO", value_name = "DIR")]
    pub source_repo: Option<PathBuf>,

    /// Push attempts before giving up when other pipelines keep moving the branch
    #[arg(long, env = "PROMOTE_MAX_ATTEMPTS", default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Seconds allowed for each HTTP request to the git server
    #[arg(long, env = "PROMOTE_TIMEOUT", default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// Removes the environment variables of our flags that are set but empty, so they count
/// as unset: a GitHub Action passes every input, given or not, and Cloud Build maps an
/// absent substitution such as `$TAG_NAME` to "".
pub fn forget_empty_env() {
    use clap::CommandFactory;
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
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn images_repeat_or_split_on_commas() {
        let cli = Cli::try_parse_from(["tomoda-promote", "--image", "a:1", "--image", "b:2,c:3"])
            .unwrap();
        assert_eq!(cli.images, ["a:1", "b:2", "c:3"]);
    }
}
