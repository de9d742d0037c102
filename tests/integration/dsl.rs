//! A small language for the integration tests: given a devops repository served by a real
//! git server, run the built binary with these flags and environment, expect that.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::git_server::GitServer;

pub const BIN: &str = env!("CARGO_BIN_EXE_tomoda-promote");
pub const IMAGE: &str =
    "asia-east1-docker.pkg.dev/development-485000/tomoda-dev-repo/tomoda-backend";
pub const PROD_IMAGE: &str =
    "asia-east1-docker.pkg.dev/development-485000/tomoda-prod-repo/tomoda-backend";
pub const SHA: &str = "4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678";
pub const OLD_SHA: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
pub const DEV: &str = "k8s/apps/tomoda/overlays/dev/kustomization.yaml";
pub const PROD: &str = "k8s/apps/tomoda/overlays/prod/kustomization.yaml";

/// git as the tests run it: no user or system config, no prompts, fixed identity and dates,
/// so fixture repositories are the same on every machine.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.com")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The base Deployment and the two overlays of the tomoda layout.
pub fn tomoda_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "k8s/apps/tomoda/base/kustomization.yaml",
            "resources:\n  - backend-deployment.yaml\n".into(),
        ),
        (
            "k8s/apps/tomoda/base/backend-deployment.yaml",
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tomoda-api\nspec:\n  selector:\n    matchLabels: {{app: tomoda-api}}\n  template:\n    metadata:\n      labels: {{app: tomoda-api}}\n    spec:\n      containers:\n        - name: backend\n          image: {IMAGE}:latest\n"
            ),
        ),
        (
            DEV,
            format!(
                "# dev follows main\nresources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newTag: \"{OLD_SHA}\" # set by CI\n"
            ),
        ),
        (
            PROD,
            format!(
                "resources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newName: {PROD_IMAGE}\n    newTag: v1.4.0   # current release\n"
            ),
        ),
    ]
}

/// One file of the tomoda layout, by its path (`DEV`, `PROD`, ...).
pub fn tomoda_file(path: &str) -> String {
    tomoda_files()
        .into_iter()
        .find(|(p, _)| *p == path)
        .unwrap_or_else(|| panic!("no {path} in the tomoda layout"))
        .1
}

/// The tomoda layout with `path` holding `content` instead (added when it is new).
pub fn tomoda_files_with(path: &'static str, content: &str) -> Vec<(&'static str, String)> {
    let mut files: Vec<_> = tomoda_files()
        .into_iter()
        .filter(|(p, _)| *p != path)
        .collect();
    files.push((path, content.to_string()));
    files
}

pub fn tomoda_config(repo: &str) -> String {
    format!(
        r#"repo: {repo}
branch: main
environments:
  dev:
    when: commit
    overlay: k8s/apps/tomoda/overlays/dev
    images:
      - name: {IMAGE}
        tag: "{{commit_sha}}"
  prod:
    when: '^v\d+\.\d+\.\d+$'
    overlay: k8s/apps/tomoda/overlays/prod
    images:
      - name: {IMAGE}
        new_name: {PROD_IMAGE}
        tag: "{{tag_name}}"
"#
    )
}

/// A bare devops repository on disk, served over smart HTTP by `git http-backend`.
pub struct Devops {
    pub dir: tempfile::TempDir,
    pub server: GitServer,
}

impl Devops {
    pub fn tomoda() -> Devops {
        Devops::with_files(&tomoda_files())
    }

    pub fn with_files<S: AsRef<str>>(files: &[(&str, S)]) -> Devops {
        Devops::build(files, None)
    }

    /// A repository of `apps` apps, each with a dev overlay setting `reg/app{n}`.
    pub fn apps(apps: usize) -> Devops {
        let files: Vec<(String, String)> = (0..apps)
            .map(|n| {
                (
                    format!("apps/app{n}/overlays/dev/kustomization.yaml"),
                    format!("resources: [../../base]\nimages:\n- name: reg/app{n}\n  newTag: v0\n"),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        Devops::with_files(&refs)
    }

    pub fn with_auth<S: AsRef<str>>(files: &[(&str, S)], user: &str, password: &str) -> Devops {
        Devops::build(files, Some((user, password)))
    }

    /// An empty bare repository (no commit at all).
    pub fn empty() -> Devops {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("srv")).unwrap();
        git(
            &dir.path().join("srv"),
            &["init", "-q", "--bare", "-b", "main", "devops.git"],
        );
        let server = GitServer::start(&dir.path().join("srv"));
        Devops { dir, server }
    }

    fn build<S: AsRef<str>>(files: &[(&str, S)], auth: Option<(&str, &str)>) -> Devops {
        let dir = tempfile::tempdir().expect("temp dir");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        git(&srv, &["init", "-q", "--bare", "-b", "main", "devops.git"]);
        let devops = Devops {
            server: match auth {
                Some((u, p)) => GitServer::start_with_auth(&srv, u, p),
                None => GitServer::start(&srv),
            },
            dir,
        };
        devops.commit(files, "initial layout");
        devops
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("srv/devops.git")
    }

    pub fn url(&self) -> String {
        self.server.url("devops.git")
    }

    /// Someone else's commit on main, made with the git CLI straight into the bare repo.
    pub fn commit<S: AsRef<str>>(&self, files: &[(&str, S)], message: &str) {
        let work = tempfile::tempdir().expect("temp dir");
        let bare = self.bare();
        let bare = bare.to_str().unwrap();
        let has_main = !git(&self.bare(), &["for-each-ref", "refs/heads/main"]).is_empty();
        git(work.path(), &["init", "-q", "-b", "main", "."]);
        if has_main {
            git(work.path(), &["fetch", "-q", bare, "main"]);
            git(work.path(), &["reset", "-q", "--hard", "FETCH_HEAD"]);
        }
        for (path, content) in files {
            let full = work.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content.as_ref()).unwrap();
        }
        git(work.path(), &["add", "-A"]);
        git(
            work.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(work.path(), &["push", "-q", bare, "main"]);
    }

    /// A file as the branch holds it now.
    pub fn file(&self, path: &str) -> String {
        git(&self.bare(), &["show", &format!("main:{path}")])
    }

    pub fn head(&self) -> String {
        git(&self.bare(), &["rev-parse", "main"]).trim().to_string()
    }

    pub fn commit_count(&self) -> usize {
        git(&self.bare(), &["rev-list", "--count", "main"])
            .trim()
            .parse()
            .unwrap()
    }

    /// `git log` of main, full messages.
    pub fn log(&self) -> String {
        git(
            &self.bare(),
            &["log", "--format=%an <%ae>%n%B%n----", "main"],
        )
    }

    /// Checks main out into a directory, for `kubectl kustomize`.
    pub fn checkout(&self) -> tempfile::TempDir {
        let work = tempfile::tempdir().expect("temp dir");
        git(
            work.path(),
            &["clone", "-q", self.bare().to_str().unwrap(), "."],
        );
        work
    }
}

/// One run of the binary: flags, environment and working directory, then expectations.
pub struct Run {
    command: Command,
    pub cwd: tempfile::TempDir,
    /// Where the binary runs and promote.yaml is written: `cwd` unless `in_dir` moved it.
    dir: PathBuf,
}

pub struct Done {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// A run in a fresh working directory, with an environment holding nothing of the
    /// machine's build variables (COMMIT_SHA, GITHUB_*, GIT_TOKEN...).
    pub fn new() -> Run {
        let cwd = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(BIN);
        command
            .current_dir(cwd.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", cwd.path())
            // The fixture images name registries the tests cannot reach; the registry
            // check has its own tests (registry.rs), which turn it on with `verifying`.
            .env("PROMOTE_NO_VERIFY", "1")
            .stdin(Stdio::null());
        let dir = cwd.path().to_path_buf();
        Run { command, cwd, dir }
    }

    /// A run with the tomoda promote.yaml pointing at `devops`: the usual "given this repo".
    pub fn tomoda(devops: &Devops) -> Run {
        Run::new().config(&tomoda_config(&devops.url()))
    }

    /// Runs in `dir` (e.g. an app checkout) instead of the fresh directory.
    pub fn in_dir(mut self, dir: &Path) -> Run {
        self.command.current_dir(dir);
        self.dir = dir.to_path_buf();
        self
    }

    /// Writes promote.yaml into the working directory.
    pub fn config(self, text: &str) -> Run {
        std::fs::write(self.dir.join("promote.yaml"), text).unwrap();
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Run {
        self.command.args(args);
        self
    }

    /// Turns the registry check on (it is off in every other test).
    pub fn verifying(mut self) -> Run {
        self.command.env_remove("PROMOTE_NO_VERIFY");
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Run {
        self.command.env(key, value);
        self
    }

    pub fn sha(self, sha: &str) -> Run {
        self.env("COMMIT_SHA", sha)
    }

    pub fn spawn(mut self) -> (std::process::Child, tempfile::TempDir) {
        let child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        (child, self.cwd)
    }

    pub fn run(mut self) -> Done {
        let out = self.command.output().expect("binary runs");
        Done::from(out)
    }
}

impl From<Output> for Done {
    fn from(out: Output) -> Done {
        Done {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Done {
    pub fn code(&self, expected: i32) -> &Done {
        assert_eq!(
            self.code, expected,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn ok(&self) -> &Done {
        self.code(0)
    }

    pub fn stdout_has(&self, needle: &str) -> &Done {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn stderr_has(&self, needle: &str) -> &Done {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    /// Neither stream holds `secret`.
    pub fn never_shows(&self, secret: &str) -> &Done {
        assert!(
            !self.stdout.contains(secret),
            "stdout shows the secret:\n{}",
            self.stdout
        );
        assert!(
            !self.stderr.contains(secret),
            "stderr shows the secret:\n{}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// `kubectl kustomize` of an overlay of a checkout: what Argo CD would render.
pub fn kustomize_render(dir: &Path, overlay: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", overlay])
        .current_dir(dir)
        .output()
        .expect("kubectl runs (is kubectl installed?)");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
