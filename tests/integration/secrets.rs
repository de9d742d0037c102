//! The git token never shows: every command path (success, plan, JSON, up to date, auth
//! failure, network failure, RUST_LOG=trace, JSON logs, GitHub Actions outputs and
//! annotations) is run with a known token, given as GIT_TOKEN, --git-token, a token file
//! or in the repo URL, and stdout, stderr, every file the run could write (its working
//! directory and HOME, its TMPDIR, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY) and every object
//! of the pushed repository are searched for it, in the forms it could leak in: as is,
//! percent-encoded (URL), JSON-escaped, escaped for a workflow command, and inside the
//! base64 of an HTTP Basic `Authorization` header.
//!
//! (There is no container registry yet, so only the git token is checked; a registry
//! password belongs here once it exists.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bounded;
use crate::dsl::*;
use crate::git_server::base64;
use crate::proxy::{Fault, Proxy};

const USER: &str = "x-access-token";
const TOKEN: &str = "ghs_Canary4SecretsTest0123456789abcdef";
/// A password with every character that some encoding changes: `"` and `\` (JSON), `%`
/// (workflow commands, URLs), `@`, `/` and `:` (URLs), a space.
const SPECIAL: &str = "pa\"ss\\wo%rd@Canary/9:x y";
const LIMIT: Duration = Duration::from_secs(60);

/// The forms a secret could leak in.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    let json = serde_json::to_string(secret).unwrap();
    let mut out = vec![
        ("as is", secret.to_string()),
        ("JSON-escaped", json[1..json.len() - 1].to_string()),
        ("percent-encoded", percent_encode(secret)),
        (
            "escaped for a workflow command",
            secret
                .replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A"),
        ),
        ("HTTP Basic", base64(format!("{USER}:{secret}").as_bytes())),
    ];
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A run of the binary whose every output is searched for the secret.
struct Leaks {
    root: tempfile::TempDir,
    forms: Vec<(&'static str, String)>,
    found: Vec<String>,
}

impl Leaks {
    fn new(secret: &str) -> Leaks {
        let root = tempfile::tempdir().unwrap();
        for dir in ["tmp", "gh"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        Leaks {
            root,
            forms: forms(secret),
            found: Vec::new(),
        }
    }

    fn gh(&self, name: &str) -> PathBuf {
        self.root.path().join("gh").join(name)
    }

    /// GitHub Actions mode: outputs and summary written into the scanned directory.
    fn github(&self, run: Run, sha: &str) -> Run {
        run.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_SHA", sha)
            .env("GITHUB_REF_TYPE", "branch")
            .env("GITHUB_REF_NAME", "main")
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_REPOSITORY", "tomoda/app")
            .env("GITHUB_OUTPUT", self.gh("output").to_str().unwrap())
            .env("GITHUB_STEP_SUMMARY", self.gh("summary").to_str().unwrap())
    }

    /// Runs, expects `code`, and searches everything the run could have written.
    fn run(&mut self, label: &str, run: Run, code: i32) -> Done {
        let tmp = self.root.path().join("tmp");
        let (child, cwd) = run.env("TMPDIR", tmp.to_str().unwrap()).spawn();
        let ended = bounded::wait_all(vec![child], LIMIT).remove(0);
        let done = ended.finished(label);
        assert_eq!(
            done.code, code,
            "{label}: exit code\n--- stdout\n{}\n--- stderr\n{}",
            done.stdout, done.stderr
        );
        self.search(label, "stdout", done.stdout.as_bytes());
        self.search(label, "stderr", done.stderr.as_bytes());
        self.search_dir(label, cwd.path());
        let root = self.root.path().to_path_buf();
        self.search_dir(label, &root);
        Done {
            code: done.code,
            stdout: done.stdout.clone(),
            stderr: done.stderr.clone(),
        }
    }

    fn search(&mut self, label: &str, place: &str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for (form, value) in &self.forms {
            if let Some(at) = text.find(value.as_str()) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                let to = (at + value.len() + 40).min(text.len());
                let to = (to..=text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(text.len());
                self.found.push(format!(
                    "{label}: the secret ({form}) in {place}: …{}…",
                    text[from..to].replace('\n', "⏎")
                ));
            }
        }
    }

    /// Every file under `dir` except the promote.yaml the test wrote.
    fn search_dir(&mut self, label: &str, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file() && path.file_name().is_none_or(|n| n != "promote.yaml") {
                    files += 1;
                    assert!(
                        files < 10_000,
                        "{label}: too many files under {}",
                        dir.display()
                    );
                    if let Ok(bytes) = std::fs::read(&path) {
                        self.search(label, &path.display().to_string(), &bytes);
                    }
                }
            }
        }
    }

    /// Every commit, diff and object of the repository the runs pushed to.
    fn search_repo(&mut self, devops: &Devops) {
        let bare = devops.bare();
        let log = git(&bare, &["log", "-p", "--all", "--format=fuller"]);
        self.search("the pushed repository", "git log -p", log.as_bytes());
        let objects = std::process::Command::new("git")
            .args(["cat-file", "--batch-all-objects", "--batch"])
            .current_dir(&bare)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git cat-file runs");
        assert!(objects.status.success());
        self.search("the pushed repository", "its objects", &objects.stdout);
    }

    fn assert_clean(&self) {
        assert!(
            self.found.is_empty(),
            "the secret leaked:\n{}",
            self.found.join("\n")
        );
    }

    /// What GitHub Actions mode wrote, shown with the test's output.
    fn show_github_files(&self) {
        for name in ["output", "summary"] {
            match std::fs::read_to_string(self.gh(name)) {
                Ok(text) => eprintln!("--- GITHUB_{name}:\n{text}"),
                Err(_) => eprintln!("--- GITHUB_{name}: not written"),
            }
        }
    }
}

/// A distinct commit SHA per run, so that every run has something to push.
fn sha(n: u8) -> String {
    format!("{n:02x}{}", &SHA[2..])
}

/// A port where nothing listens.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/devops.git")
}

fn flags(repo: &str) -> Vec<String> {
    [
        "--repo",
        repo,
        "--overlay",
        "k8s/apps/tomoda/overlays/dev",
        "--max-attempts",
        "3",
        "--timeout",
        "10",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect()
}

fn with_token(run: Run) -> Run {
    run.env("GIT_TOKEN", TOKEN)
}

#[test]
fn the_git_token_never_shows_on_any_path() {
    let devops = Devops::with_auth(&tomoda_files(), USER, TOKEN);
    let wrong = Devops::with_auth(&tomoda_files(), USER, "the-right-token-is-another");
    let config = tomoda_config(&devops.url());
    let mut leaks = Leaks::new(TOKEN);

    let done = leaks.run(
        "success",
        with_token(Run::new().config(&config)).sha(&sha(1)),
        0,
    );
    done.stdout_has("pushed ");
    leaks
        .run(
            "already up to date",
            with_token(Run::new().config(&config)).sha(&sha(1)),
            0,
        )
        .stdout_has("already up to date");
    leaks
        .run(
            "plan",
            with_token(Run::new().config(&config))
                .sha(&sha(2))
                .args(["--plan"]),
            0,
        )
        .stdout_has("nothing was committed or pushed");
    let done = leaks.run(
        "JSON output",
        with_token(Run::new().config(&config))
            .sha(&sha(2))
            .args(["--output", "json"]),
        0,
    );
    assert_eq!(done.json()["pushed"], true);
    leaks.run(
        "RUST_LOG=trace",
        with_token(Run::new().config(&config))
            .sha(&sha(3))
            .env("RUST_LOG", "trace"),
        0,
    );
    leaks.run(
        "RUST_LOG=trace, JSON logs and output",
        with_token(Run::new().config(&config))
            .sha(&sha(4))
            .env("RUST_LOG", "trace")
            .args(["--log-format", "json", "--output", "json"]),
        0,
    );
    let done = leaks.run(
        "GitHub Actions, success",
        leaks.github(with_token(Run::new().config(&config)), &sha(5)),
        0,
    );
    assert!(done.stdout.contains("pushed "), "{}", done.stdout);
    leaks.show_github_files();
    leaks.run(
        "--git-token flag",
        Run::new()
            .config(&config)
            .sha(&sha(6))
            .args(["--git-token", TOKEN]),
        0,
    );

    let wrong_config = tomoda_config(&wrong.url());
    for (label, extra) in [
        ("auth failure", vec![]),
        ("auth failure, RUST_LOG=trace", vec![("RUST_LOG", "trace")]),
    ] {
        let mut run = with_token(Run::new().config(&wrong_config)).sha(&sha(7));
        for (k, v) in extra {
            run = run.env(k, v);
        }
        leaks.run(label, run, 1).stderr_has("HTTP 401");
    }
    leaks.run(
        "auth failure, JSON logs and output",
        with_token(Run::new().config(&wrong_config))
            .sha(&sha(7))
            .env("RUST_LOG", "trace")
            .args(["--log-format", "json", "--output", "json"]),
        1,
    );
    leaks.run(
        "GitHub Actions, auth failure",
        leaks.github(with_token(Run::new().config(&wrong_config)), &sha(7)),
        1,
    );
    let refused = tomoda_config(&refused_url());
    leaks
        .run(
            "network failure, RUST_LOG=trace",
            with_token(Run::new().config(&refused))
                .sha(&sha(8))
                .env("RUST_LOG", "trace")
                .args(["--max-attempts", "2"]),
            1,
        )
        .stderr_has("connection refused");
    leaks.run(
        "GitHub Actions, network failure, JSON logs",
        leaks
            .github(with_token(Run::new().config(&refused)), &sha(8))
            .args(["--max-attempts", "2", "--log-format", "json"]),
        1,
    );

    leaks.search_repo(&devops);
    leaks.search_repo(&wrong);
    assert_eq!(
        devops.commit_count(),
        7,
        "six promotions pushed:\n{}",
        devops.log()
    );
    leaks.assert_clean();
}

#[test]
fn a_token_in_the_repo_url_never_shows() {
    let devops = Devops::with_auth(&tomoda_files(), USER, TOKEN);
    let wrong = Devops::with_auth(&tomoda_files(), USER, "the-right-token-is-another");
    let with_userinfo = |url: &str| url.replace("http://", &format!("http://{USER}:{TOKEN}@"));
    let good = flags(&with_userinfo(&devops.url()));
    let bad = flags(&with_userinfo(&wrong.url()));
    let refused = flags(&with_userinfo(&refused_url()));
    let image = |n: u8| format!("{IMAGE}:{}", sha(n));
    let mut leaks = Leaks::new(TOKEN);

    let done = leaks.run(
        "URL: success",
        Run::new().sha(SHA).args(&good).args(["--image", &image(1)]),
        0,
    );
    done.stdout_has(&format!("to branch main of {}", devops.url()));
    leaks.run(
        "URL: plan",
        Run::new()
            .sha(SHA)
            .args(&good)
            .args(["--image", &image(2), "--plan"]),
        0,
    );
    leaks.run(
        "URL: trace, JSON logs and output",
        Run::new()
            .sha(SHA)
            .args(&good)
            .args([
                "--image",
                &image(3),
                "--output",
                "json",
                "--log-format",
                "json",
            ])
            .env("RUST_LOG", "trace"),
        0,
    );
    leaks.run(
        "URL: GitHub Actions",
        leaks.github(Run::new().args(&good).args(["--image", &image(4)]), SHA),
        0,
    );
    leaks.run(
        "URL in PROMOTE_REPO: success",
        Run::new()
            .sha(SHA)
            .env("PROMOTE_REPO", &with_userinfo(&devops.url()))
            .args([
                "--overlay",
                "k8s/apps/tomoda/overlays/dev",
                "--image",
                &image(5),
            ]),
        0,
    );
    leaks
        .run(
            "URL: auth failure, trace",
            Run::new()
                .sha(SHA)
                .args(&bad)
                .args(["--image", &image(6)])
                .env("RUST_LOG", "trace"),
            1,
        )
        .stderr_has("HTTP 401");
    leaks.run(
        "URL: GitHub Actions, auth failure, JSON logs",
        leaks.github(
            Run::new()
                .args(&bad)
                .args(["--image", &image(6), "--log-format", "json"]),
            SHA,
        ),
        1,
    );
    leaks.run(
        "URL: network failure, trace",
        Run::new()
            .sha(SHA)
            .args(&refused)
            .args(["--image", &image(7)])
            .env("RUST_LOG", "trace"),
        1,
    );

    leaks.search_repo(&devops);
    assert_eq!(devops.commit_count(), 5, "{}", devops.log());
    leaks.assert_clean();
}

#[test]
fn a_token_file_never_shows() {
    let devops = Devops::with_auth(&tomoda_files(), USER, TOKEN);
    let wrong = Devops::with_auth(&tomoda_files(), USER, "the-right-token-is-another");
    // Outside the searched directories: this file holds the token by design.
    let secret_dir = tempfile::tempdir().unwrap();
    let token_file = secret_dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();
    let mut leaks = Leaks::new(TOKEN);

    leaks.run(
        "token file: success",
        Run::tomoda(&devops)
            .sha(&sha(1))
            .args(["--git-token-file", token_file]),
        0,
    );
    leaks.run(
        "GIT_TOKEN_FILE: trace, JSON",
        Run::tomoda(&devops)
            .sha(&sha(2))
            .env("GIT_TOKEN_FILE", token_file)
            .env("RUST_LOG", "trace")
            .args(["--output", "json", "--log-format", "json"]),
        0,
    );
    leaks.run(
        "token file: auth failure, GitHub Actions",
        leaks.github(
            Run::new()
                .config(&tomoda_config(&wrong.url()))
                .args(["--git-token-file", token_file])
                .env("RUST_LOG", "trace"),
            &sha(3),
        ),
        1,
    );
    leaks.search_repo(&devops);
    assert_eq!(devops.commit_count(), 3);
    leaks.assert_clean();
}

/// A scheme typo or a stray space makes the URL a local path; the credentials in it must
/// still not be printed (exit 2, a usage error).
#[test]
fn credentials_in_a_mistyped_repo_url_never_show() {
    let mut leaks = Leaks::new(TOKEN);
    // Exit 2 for what is no repo URL at all; the leading space is trimmed, and nothing
    // listens on port 9, so that one fails at the connection: exit 1.
    for (repo, code) in [
        (
            format!("htps://{USER}:{TOKEN}@github.com/tomoda/devops.git"),
            2,
        ),
        (format!(" http://{USER}:{TOKEN}@127.0.0.1:9/devops.git"), 1),
        (
            format!("https//{USER}:{TOKEN}@github.com/tomoda/devops.git"),
            2,
        ),
        (
            format!("ssh://{USER}:{TOKEN}@github.com/tomoda/devops.git"),
            2,
        ),
        (format!("https://{USER}:{TOKEN}@/devops.git"), 2),
    ] {
        let done = leaks.run(
            &format!("--repo {repo:?}"),
            Run::new()
                .sha(SHA)
                .args(["--repo", &repo, "--overlay", "o", "--image", "app:v1"]),
            code,
        );
        assert!(
            done.stderr.contains("tomoda-promote: error:"),
            "{}",
            done.stderr
        );
    }
    leaks.assert_clean();
}

/// Environment variables of a run.
type Env<'a> = &'a [(&'a str, &'a str)];

/// A server (or a proxy in front of it) that echoes the credentials in its error page:
/// the binary shows the server's first line, so the redaction behind it must mask the
/// token in every output format, whatever characters it holds.
#[test]
fn credentials_echoed_by_the_server_are_masked_in_every_format() {
    let devops = Devops::tomoda();
    let echo = format!("invalid credentials {USER}:{SPECIAL}");
    let proxy = Proxy::start(devops.server.addr(), move |_| Fault::Answer {
        status: "401 Unauthorized",
        headers: vec![("WWW-Authenticate".into(), "Basic realm=\"git\"".into())],
        body: format!("{echo}\n"),
    });
    let url = proxy.url("devops.git");
    let url_with_password = url.replace(
        "http://",
        &format!("http://{USER}:{}@", percent_encode(SPECIAL)),
    );
    let mut leaks = Leaks::new(SPECIAL);
    let formats: [(&str, Env, &[&str]); 3] = [
        ("text logs", &[], &[]),
        ("trace", &[("RUST_LOG", "trace")], &[]),
        (
            "JSON logs and output",
            &[],
            &["--log-format", "json", "--output", "json"],
        ),
    ];
    for (format, envs, args) in formats {
        for (how, token_env, repo) in [
            ("GIT_TOKEN", true, url.as_str()),
            ("URL", false, url_with_password.as_str()),
        ] {
            for github in [false, true] {
                let mut run = Run::new()
                    .args(flags(repo))
                    .args(["--image", "app:v1"])
                    .args(args);
                for (k, v) in envs {
                    run = run.env(k, v);
                }
                if token_env {
                    run = run.env("GIT_TOKEN", SPECIAL);
                }
                let (run, label) = if github {
                    (
                        leaks.github(run, SHA),
                        format!("echoed {how}, {format}, GitHub Actions"),
                    )
                } else {
                    (run.sha(SHA), format!("echoed {how}, {format}"))
                };
                leaks.run(&label, run, 1).stderr_has("HTTP 401");
            }
        }
    }
    assert_eq!(devops.commit_count(), 1);
    leaks.assert_clean();
}

/// `--help` shows the current value of each flag's environment variable: the token must
/// not be among them, neither from GIT_TOKEN nor inside PROMOTE_REPO.
#[test]
fn help_and_usage_errors_never_show_the_token() {
    let mut leaks = Leaks::new(TOKEN);
    let repo = format!("https://{USER}:{TOKEN}@github.com/tomoda/devops.git");
    for (label, args, code) in [
        ("--help", &["--help"][..], 0),
        ("-h", &["-h"][..], 0),
        ("an unknown flag", &["--bogus"][..], 2),
        ("a bad value", &["--max-attempts", "many"][..], 2),
    ] {
        leaks.run(
            label,
            Run::new()
                .env("GIT_TOKEN", TOKEN)
                .env("PROMOTE_REPO", &repo)
                .args(args),
            code,
        );
    }
    leaks.assert_clean();
}
