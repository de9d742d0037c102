//! The ordering guard where no checkout holds the app's history (Cloud Build's
//! `/workspace` without `.git`, a shallow Actions checkout): the app repository lives only
//! in a forge double's bare repository, and the guard asks its API how two commits stand.
//! Behind is skipped with a warning, ahead promoted, diverged promoted with a note, an
//! unreachable forge is a warning; `--fail-if-skipped` turns a skip into exit 3.

use std::path::{Path, PathBuf};

use crate::dsl::*;
use crate::forge_server::{ForgeServer, Recorded, Style};

const TOKEN: &str = "tok-devops-s3cret-0123456789";
const SOURCE_TOKEN: &str = "tok-app-read-s3cret-9876543210";

/// The app's repository: `main` is c0 -> c1 -> c2, and `hotfix` branches off c1 with h1.
struct App {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    main: Vec<String>,
    hotfix: String,
}

fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main", "."]);
    let mut main = Vec::new();
    for n in 0..3 {
        let message = format!("app change {n}");
        git(&work, &["commit", "-q", "--allow-empty", "-m", &message]);
        main.push(git(&work, &["rev-parse", "HEAD"]).trim().to_string());
    }
    git(&work, &["checkout", "-q", "-b", "hotfix", &main[1]]);
    git(&work, &["commit", "-q", "--allow-empty", "-m", "hotfix"]);
    let hotfix = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    let bare = dir.path().join("app.git");
    git(
        dir.path(),
        &["clone", "-q", "--bare", "work", bare.to_str().unwrap()],
    );
    App {
        _dir: dir,
        bare,
        main,
        hotfix,
    }
}

/// A dev overlay deploying `sha`.
fn dev_at(sha: &str) -> String {
    format!("images:\n  - name: {IMAGE}\n    newTag: \"{sha}\"\n")
}

/// A run as on GitHub Actions: the app is GITHUB_REPOSITORY on the GitHub of the run,
/// read with its own token; no checkout in the working directory.
fn on_github(devops: &Devops, github: &ForgeServer, outputs: &Path) -> Run {
    Run::tomoda(devops)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", outputs.to_str().unwrap())
        .env("GITHUB_REPOSITORY", "tomoda/app")
        .env("GITHUB_SERVER_URL", &github.base())
        .env("GITHUB_API_URL", &github.api_url())
        .env("SOURCE_GIT_TOKEN", SOURCE_TOKEN)
}

fn compares(requests: &[Recorded]) -> Vec<&Recorded> {
    requests
        .iter()
        .filter(|r| r.target.contains("/compare") || r.target.contains("/merge-base/"))
        .collect()
}

/// A GitHub double over an empty devops repository (unused), hosting the app.
fn github_with(app: &App) -> (Devops, ForgeServer) {
    let unused = Devops::with_files(&[("README.md", "devops on git\n")]);
    let github = ForgeServer::start(Style::GitHub, &unused.bare(), TOKEN);
    github.accept(SOURCE_TOKEN);
    github.host("tomoda/app", &app.bare);
    (unused, github)
}

#[test]
fn an_older_commit_known_only_to_github_is_skipped_with_a_warning_and_skipped_older() {
    let app = app();
    let (_unused, github) = github_with(&app);
    let devops = Devops::with_files(&[(DEV, dev_at(&app.main[2]))]);
    let head = devops.head();
    let outputs = tempfile::tempdir().unwrap();
    let out = outputs.path().join("output");
    let done = on_github(&devops, &github, &out)
        .sha(&app.main[1])
        .args(["--output", "json"])
        .run();
    done.ok().never_shows(SOURCE_TOKEN).never_shows(TOKEN);
    let json = done.json();
    assert_eq!(json["skipped"], "older", "{}", done.stderr);
    assert_eq!(json["pushed"], false);
    assert_eq!(devops.head(), head, "nothing pushed");
    done.stderr_has(&format!(
        "::warning title=tomoda-promote::dev: not promoting {IMAGE} {}: commit {} is an ancestor of the deployed {}",
        app.main[1], app.main[1], app.main[2]
    ));
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.contains("\nskipped=older\n"), "{written}");
    let asked = github.requests();
    let asked = compares(&asked);
    assert_eq!(asked.len(), 1, "one compare");
    assert_eq!(
        asked[0].target,
        format!(
            "/api/v3/repos/tomoda/app/compare/{}...{}?per_page=1",
            app.main[2], app.main[1]
        )
    );
    assert_eq!(
        asked[0].header("authorization"),
        Some(format!("Bearer {SOURCE_TOKEN}").as_str())
    );

    // The text result says it too, and --fail-if-skipped makes the build red.
    let done = on_github(&devops, &github, &out)
        .sha(&app.main[0])
        .args(["--fail-if-skipped"])
        .run();
    done.code(3)
        .stdout_has("dev: skipped: ")
        .stderr_has("(--fail-if-skipped)")
        .stdout_has("::error title=tomoda-promote::dev: skipped: ")
        .never_shows(SOURCE_TOKEN);
    assert_eq!(devops.head(), head, "nothing pushed");
}

#[test]
fn a_newer_commit_is_promoted_and_a_diverged_one_with_its_note() {
    let app = app();
    let (_unused, github) = github_with(&app);
    let devops = Devops::with_files(&[(DEV, dev_at(&app.main[1]))]);
    let outputs = tempfile::tempdir().unwrap();
    let out = outputs.path().join("output");
    let done = on_github(&devops, &github, &out)
        .sha(&app.main[2])
        .args(["--output", "json"])
        .run();
    done.ok();
    assert_eq!(done.json()["pushed"], true, "{}", done.stderr);
    assert_eq!(done.json()["notes"], serde_json::json!([]));
    assert!(devops.file(DEV).contains(&app.main[2]));
    assert!(!done.stderr.contains("::warning"), "{}", done.stderr);

    // A hotfix built from c1 while c2 runs: neither descends from the other.
    let done = on_github(&devops, &github, &out).sha(&app.hotfix).run();
    done.ok()
        .stdout_has("pushed ")
        .stdout_has(&format!(
            "dev: note: {IMAGE}: commit {} and the deployed {} have diverged",
            app.hotfix, app.main[2]
        ))
        .stderr_has("::notice title=tomoda-promote::dev: ")
        .never_shows(SOURCE_TOKEN);
    assert!(devops.file(DEV).contains(&app.hotfix));
}

#[test]
fn an_unreachable_forge_is_a_warning_and_the_commit_is_promoted() {
    let app = app();
    let devops = Devops::with_files(&[(DEV, dev_at(&app.main[2]))]);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let done = Run::tomoda(&devops)
        .env("GITHUB_REPOSITORY", "tomoda/app")
        .env("GITHUB_SERVER_URL", &base)
        .env("GITHUB_API_URL", &format!("{base}/api/v3"))
        .env("SOURCE_GIT_TOKEN", SOURCE_TOKEN)
        .sha(&app.main[1])
        .args(["--output", "json"])
        .run();
    done.ok().never_shows(SOURCE_TOKEN);
    let json = done.json();
    assert_eq!(json["pushed"], true, "{}", done.stderr);
    assert_eq!(json["notes"][0]["kind"], "unknown");
    let warning = done
        .stderr
        .lines()
        .find(|l| l.contains("cannot tell whether commit"))
        .unwrap_or_else(|| panic!("no warning in\n{}", done.stderr));
    assert!(
        warning.contains("WARN"),
        "a warning, not an info line: {warning}"
    );
    assert!(
        warning.contains("no git checkout of the app here")
            && warning.contains("the github API of tomoda/app did not answer"),
        "{warning}"
    );
    assert!(devops.file(DEV).contains(&app.main[1]));
}

#[test]
fn without_any_source_of_history_the_warning_says_what_to_set() {
    let app = app();
    let devops = Devops::with_files(&[(DEV, dev_at(&app.main[2]))]);
    Run::tomoda(&devops)
        .sha(&app.main[1])
        .run()
        .ok()
        .stderr_has("WARN")
        .stderr_has("set source_repo: in promote.yaml");
    assert!(devops.file(DEV).contains(&app.main[1]));
}

/// The devops repository on `style`'s double, committed to through its API, with the app
/// hosted beside it; promote.yaml names the app as `extra` says.
fn on_forge(style: Style, app: &App, dev: &str, extra: &str) -> (Devops, ForgeServer, Run) {
    let devops = Devops::with_files(&tomoda_files_with(DEV, dev));
    let forge = ForgeServer::start(style, &devops.bare(), TOKEN);
    forge.host("tomoda/app", &app.bare);
    let config = format!(
        "commit_via: api\nforge: {}\napi_url: {}\n{extra}{}",
        forge.forge_name(),
        forge.api_url(),
        tomoda_config(&forge.repo_url())
    );
    let run = Run::new().config(&config).env("GIT_TOKEN", TOKEN);
    (devops, forge, run)
}

#[test]
fn gitlab_compare_both_ways_orders_behind_ahead_and_diverged() {
    let app = app();
    let source = "source_repo: tomoda/app\n";

    let (devops, gitlab, run) = on_forge(Style::GitLab, &app, &dev_at(&app.main[2]), source);
    let head = devops.head();
    let done = run.sha(&app.main[1]).args(["--output", "json"]).run();
    done.ok().never_shows(TOKEN);
    assert_eq!(done.json()["skipped"], "older", "{}", done.stderr);
    assert_eq!(devops.head(), head);
    let requests = gitlab.requests();
    let asked = compares(&requests);
    assert_eq!(
        asked[0].target,
        format!(
            "/api/v4/projects/tomoda%2Fapp/repository/compare?from={}&to={}",
            app.main[2], app.main[1]
        )
    );
    // Without SOURCE_GIT_TOKEN, the devops token reads the app too.
    assert_eq!(
        asked[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    let (devops, _gitlab, run) = on_forge(Style::GitLab, &app, &dev_at(&app.main[1]), source);
    run.sha(&app.main[2]).run().ok().stdout_has("pushed ");
    assert!(devops.file(DEV).contains(&app.main[2]));

    let (devops, _gitlab, run) = on_forge(Style::GitLab, &app, &dev_at(&app.main[2]), source);
    run.sha(&app.hotfix)
        .run()
        .ok()
        .stdout_has("pushed ")
        .stdout_has("have diverged");
    assert!(devops.file(DEV).contains(&app.hotfix));
}

#[test]
fn bitbucket_merge_base_orders_commits_named_by_cloud_builds_repo_full_name() {
    let app = app();
    let (devops, bitbucket, run) = on_forge(Style::Bitbucket, &app, &dev_at(&app.main[2]), "");
    let head = devops.head();
    let done = run
        .env("REPO_FULL_NAME", "tomoda/app")
        .sha(&app.main[0])
        .args(["--output", "json"])
        .run();
    done.ok().never_shows(TOKEN);
    assert_eq!(done.json()["skipped"], "older", "{}", done.stderr);
    assert_eq!(devops.head(), head);
    let requests = bitbucket.requests();
    assert_eq!(
        compares(&requests)[0].target,
        format!(
            "/2.0/repositories/tomoda/app/merge-base/{}..{}",
            app.main[2], app.main[0]
        )
    );

    let (devops, _bitbucket, run) = on_forge(Style::Bitbucket, &app, &dev_at(&app.main[2]), "");
    run.env("REPO_FULL_NAME", "tomoda/app")
        .sha(&app.hotfix)
        .run()
        .ok()
        .stdout_has("have diverged");
    assert!(devops.file(DEV).contains(&app.hotfix));
}

#[test]
fn a_skip_by_version_exits_3_with_fail_if_skipped_from_the_environment() {
    let devops = Devops::tomoda();
    let head = devops.head();
    Run::tomoda(&devops)
        .env("TAG_NAME", "v1.3.9")
        .env("PROMOTE_FAIL_IF_SKIPPED", "true")
        .run()
        .code(3)
        .stdout_has("prod: skipped: ")
        .stderr_has("tomoda-promote: error: prod: skipped: ");
    assert_eq!(devops.head(), head, "nothing pushed");
    Run::tomoda(&devops)
        .env("TAG_NAME", "v1.3.9")
        .run()
        .ok()
        .stderr_has("WARN")
        .stderr_has("not promoting");
}

#[test]
fn the_devops_token_never_goes_to_another_forge_host() {
    let app = app();
    // The devops repository on GitLab; the app on a GitHub of its own (the Actions run's).
    let (devops, _gitlab, run) = on_forge(Style::GitLab, &app, &dev_at(&app.main[2]), "");
    let (_unused, github) = github_with(&app);
    let done = run
        .env("GITHUB_REPOSITORY", "tomoda/app")
        .env("GITHUB_SERVER_URL", &github.base())
        .env("GITHUB_API_URL", &github.api_url())
        .sha(&app.main[1])
        .args(["--output", "json"])
        .run();
    done.ok().never_shows(TOKEN);
    // Asked anonymously, a private repository answers 404 (as if missing): promoted, with
    // the warning.
    assert_eq!(
        done.json()["notes"][0]["kind"],
        "unknown",
        "{}",
        done.stderr
    );
    assert!(devops.file(DEV).contains(&app.main[1]));
    let requests = github.requests();
    let asked = compares(&requests);
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].header("authorization"),
        None,
        "no token for another host"
    );
}
