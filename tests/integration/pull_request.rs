//! `pull_request: true`: the change lands on `promote/<env>/<image>` made from the target
//! branch's tip and a request to the target is opened on each forge (servers of
//! forge_server.rs over real bare repositories), updated by the next promotion, and opened
//! anew once a person merged or closed it; through the API or through git, also when the
//! target branch refuses direct pushes.

use std::path::Path;

use crate::commit_via_api::app_key;
use crate::dsl::*;
use crate::forge_server::{APP_ID, Fault, ForgeServer, Pull, Style};

const TOKEN: &str = "tok-pull-request-s3cret-0123456789";
const BRANCH: &str = "promote/dev/tomoda-backend";
const SECOND: &str = "5e6f7a8b9c0d1e2f3a4b5c6d7e8f901234567890";
const THIRD: &str = "6f7a8b9c0d1e2f3a4b5c6d7e8f90123456789012";
const FOURTH: &str = "7a8b9c0d1e2f3a4b5c6d7e8f9012345678901234";

/// promote.yaml of the tomoda layout on `server`'s forge, dev gated by a request with
/// `review` (more keys of dev), committing as `commit_via` says to `repo`.
fn config(server: &ForgeServer, repo: &str, commit_via: &str, review: &str) -> String {
    let dev = "  dev:\n    when: commit\n";
    format!(
        "commit_via: {commit_via}\nforge: {}\napi_url: {}\n{}",
        server.forge_name(),
        server.api_url(),
        tomoda_config(repo).replace(dev, &format!("{dev}{review}"))
    )
}

fn run(config: &str, sha: &str) -> Run {
    text_run(config, sha).args(["--output", "json"])
}

fn text_run(config: &str, sha: &str) -> Run {
    Run::new().config(config).env("GIT_TOKEN", TOKEN).sha(sha)
}

fn tip(bare: &Path, branch: &str) -> String {
    git(bare, &["rev-parse", branch]).trim().to_string()
}

fn open(pulls: &[Pull]) -> Vec<&Pull> {
    pulls.iter().filter(|p| p.state == "open").collect()
}

/// Checks that the request's branch is one commit on main's tip, holding `sha` in dev.
fn branch_holds(devops: &Devops, sha: &str) {
    let bare = devops.bare();
    assert_eq!(tip(&bare, &format!("{BRANCH}^")), devops.head());
    let dev = git(&bare, &["show", &format!("{BRANCH}:{DEV}")]);
    assert!(
        dev.contains(&format!("newTag: \"{sha}\" # set by CI")),
        "{dev}"
    );
}

#[test]
fn a_request_is_opened_updated_and_opened_anew_after_a_merge_or_a_close_on_each_forge() {
    for style in [Style::GitHub, Style::GitLab, Style::Bitbucket] {
        let devops = Devops::tomoda();
        let server = ForgeServer::start(style, &devops.bare(), TOKEN);
        let labels = "    pull_request: true\n    labels: [promotion, dev]\n";
        let config = config(&server, &server.repo_url(), "api", labels);
        let main = devops.head();

        // 1. Opened: main untouched, the change on the tool's branch.
        let done = run(&config, SHA).run();
        done.ok().never_shows(TOKEN);
        let result = done.json();
        let request = &result["pull_request"];
        assert_eq!(request["number"], 1, "{style:?}: {}", done.stdout);
        assert_eq!(request["updated"], false, "{style:?}");
        assert_eq!(request["branch"], BRANCH);
        assert_eq!(result["pushed"], false, "{style:?}");
        assert_eq!(devops.head(), main, "{style:?}: the target branch stays");
        branch_holds(&devops, SHA);
        assert_eq!(request["commit"], tip(&devops.bare(), BRANCH));
        let pulls = server.pulls();
        assert_eq!(pulls.len(), 1, "{style:?}");
        let pull = &pulls[0];
        assert_eq!((pull.head.as_str(), pull.base.as_str()), (BRANCH, "main"));
        assert_eq!(
            pull.title,
            format!(
                "promote(dev): tomoda-backend {} -> {}",
                &OLD_SHA[..7],
                &SHA[..7]
            ),
            "{style:?}"
        );
        assert!(
            pull.body
                .contains(&format!("+    newTag: \"{SHA}\" # set by CI")),
            "{style:?}: {}",
            pull.body
        );
        assert!(
            pull.body.contains(&format!("- Source commit: {SHA}")),
            "{}",
            pull.body
        );
        assert!(
            request["url"].as_str().unwrap().ends_with("/1"),
            "{request}"
        );
        // Bitbucket pull requests have no labels, and the run says so.
        if style == Style::Bitbucket {
            assert!(pull.labels.is_empty());
            done.stderr_has("Bitbucket Cloud pull requests have no labels");
        } else {
            assert_eq!(pull.labels, ["promotion", "dev"], "{style:?}");
        }

        // 2. A newer build rewrites the branch and updates the same request.
        let done = run(&config, SECOND).run();
        done.ok();
        let request = &done.json()["pull_request"];
        assert_eq!(request["number"], 1, "{style:?}: {}", done.stdout);
        assert_eq!(request["updated"], true, "{style:?}");
        branch_holds(&devops, SECOND);
        let pulls = server.pulls();
        assert_eq!((pulls.len(), open(&pulls).len()), (1, 1), "{style:?}");
        assert!(pulls[0].title.ends_with(&SECOND[..7]), "{}", pulls[0].title);
        assert!(pulls[0].body.contains(SECOND));
        assert_eq!(devops.head(), main);

        // 3. Merged by a person: left alone, the next build opens a new request.
        server.merge_pull(1);
        assert!(devops.file(DEV).contains(SECOND));
        let done = run(&config, THIRD).run();
        done.ok();
        let request = &done.json()["pull_request"];
        assert_eq!(request["number"], 2, "{style:?}: {}", done.stdout);
        assert_eq!(request["updated"], false);
        branch_holds(&devops, THIRD);
        let pulls = server.pulls();
        assert_eq!(pulls[0].state, "merged", "{style:?}");
        assert!(
            pulls[0].title.ends_with(&SECOND[..7]),
            "the merged one stays"
        );
        assert_eq!(open(&pulls).len(), 1);

        // 4. Closed without a merge: left alone too.
        server.close_pull(2);
        let done = run(&config, FOURTH).run();
        done.ok();
        assert_eq!(done.json()["pull_request"]["number"], 3, "{style:?}");
        let pulls = server.pulls();
        assert_eq!(
            pulls.iter().map(|p| p.state).collect::<Vec<_>>(),
            ["merged", "closed", "open"],
            "{style:?}"
        );
        git(&devops.bare(), &["fsck", "--strict", "--no-dangling"]);
    }
}

#[test]
fn the_text_result_names_the_request_and_an_up_to_date_target_opens_none() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let config = config(&server, &server.repo_url(), "api", "");
    let outputs = tempfile::tempdir().unwrap();
    let output = outputs.path().join("github_output");
    let done = Run::new()
        .config(&config)
        .env("GIT_TOKEN", TOKEN)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", output.to_str().unwrap())
        .env(
            "GITHUB_STEP_SUMMARY",
            outputs.path().join("summary").to_str().unwrap(),
        )
        .sha(SHA)
        .args(["--pull-request"])
        .run();
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(
        written.contains("\npull_request_url=https://github.example/tomoda/devops/pull/1\npull_request_number=1\n"),
        "{written}"
    );
    assert!(written.starts_with("commit=\npushed=false\n"), "{written}");
    done.ok().stdout_has(&format!(
        "opened pull request #1 from {BRANCH} ({}) to branch main of {}: https://github.example/tomoda/devops/pull/1",
        &tip(&devops.bare(), BRANCH)[..7],
        server.repo_url()
    ));
    // The target already holding the values, there is nothing to ask for.
    let done = run(&config, OLD_SHA).args(["--pull-request"]).run();
    done.ok();
    assert_eq!(done.json()["up_to_date"], true, "{}", done.stdout);
    assert_eq!(server.pulls().len(), 1);
}

#[test]
fn auto_merge_is_asked_for_on_github_and_gitlab_and_refused_for_bitbucket() {
    for style in [Style::GitHub, Style::GitLab] {
        let devops = Devops::tomoda();
        let server = ForgeServer::start(style, &devops.bare(), TOKEN);
        let review = "    pull_request: true\n    auto_merge: true\n";
        let config = config(&server, &server.repo_url(), "api", review);
        let done = run(&config, SHA).run();
        done.ok();
        assert_eq!(
            done.json()["pull_request"]["auto_merge"],
            true,
            "{style:?}: {}",
            done.stdout
        );
        assert!(server.pulls()[0].auto_merge, "{style:?}");
        let asked = server.requests().into_iter().any(|r| match style {
            Style::GitHub => r.body.contains("enablePullRequestAutoMerge"),
            _ => r.method == "PUT" && r.target.ends_with("/merge_requests/1/merge"),
        });
        assert!(asked, "{style:?}");
    }
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::Bitbucket, &devops.bare(), TOKEN);
    let review = "    pull_request: true\n    auto_merge: true\n";
    let config = config(&server, &server.repo_url(), "api", review);
    let done = text_run(&config, SHA).run();
    done.code(2).stderr_has(
        "promote.yaml:10: `auto_merge: true`: Bitbucket Cloud's API offers no auto-merge of a pull request",
    );
    assert!(
        server.requests().is_empty(),
        "nothing asked, nothing pushed"
    );
}

/// main refuses direct pushes, as a protected branch does.
fn protect_main(bare: &Path) {
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  if [ \"$ref\" = refs/heads/main ]; then\n    echo \"main is protected: changes go through a pull request\" >&2\n    exit 1\n  fi\ndone\n",
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hook, permissions).unwrap();
}

#[test]
fn a_protected_branch_refuses_the_push_and_takes_the_change_as_a_request_through_git() {
    // libgit2's push, and the partial path's own.
    for partial in [false, true] {
        protected_branch_through_git(partial);
    }
}

fn protected_branch_through_git(partial: bool) {
    let devops = Devops::tomoda();
    devops.server.allow_filter(partial);
    protect_main(&devops.bare());
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    // The git server serves the repository under the path its forge names it by.
    let owner = devops.dir.path().join("srv/tomoda");
    std::fs::create_dir_all(&owner).unwrap();
    std::os::unix::fs::symlink(devops.bare(), owner.join("devops.git")).unwrap();
    let url = devops.server.url("tomoda/devops.git");
    let config = config(&server, &url, "git", "");
    let main = devops.head();

    text_run(&config, SHA)
        .run()
        .code(1)
        .stderr_has("remote: main is protected");
    assert_eq!(devops.head(), main);

    let done = run(&config, SHA).env("PROMOTE_PULL_REQUEST", "true").run();
    done.ok().never_shows(TOKEN);
    assert_eq!(done.json()["pull_request"]["number"], 1, "{}", done.stderr);
    branch_holds(&devops, SHA);
    assert_eq!(devops.head(), main);

    // Through git too, the next build moves the branch (a forced push of the tool's own
    // branch) and updates the one request.
    let done = run(&config, SECOND).args(["--pull-request"]).run();
    done.ok();
    assert_eq!(
        done.json()["pull_request"]["updated"],
        true,
        "{}",
        done.stderr
    );
    branch_holds(&devops, SECOND);
    let pulls = server.pulls();
    assert_eq!(pulls.len(), 1);
    assert!(pulls[0].body.contains(SECOND));
    assert_eq!(devops.head(), main);
    // No request to the forge carried a commit: git did.
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.body.contains("createCommitOnBranch")),
    );
    git(&devops.bare(), &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn a_pull_request_needs_a_forge() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .sha(SHA)
        .args(["--pull-request"])
        .run()
        .code(2)
        .stderr_has("a pull request needs the forge's API");
    assert_eq!(devops.file(DEV), tomoda_file(DEV));
}

#[test]
fn argo_cd_is_neither_refreshed_nor_waited_for_until_the_request_merges() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let config = config(
        &server,
        &server.repo_url(),
        "api",
        "    pull_request: true\n",
    );
    // Nothing listens there: asking Argo CD would fail the run.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let argocd = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let done = run(&config, SHA)
        .args(["--argocd-server", &argocd, "--argocd-app", "tomoda-dev"])
        .args(["--wait=1m"])
        .run();
    done.ok().stderr_has(
        "Argo CD tomoda-dev: not refreshed or waited for: nothing deploys until pull request #1 merges",
    );
    assert!(done.json().get("argocd").is_none(), "{}", done.stdout);
}

#[test]
fn a_minted_app_token_may_open_pull_requests_too() {
    let keys = tempfile::tempdir().unwrap();
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), "not-the-token-used");
    let (key, public) = app_key(keys.path(), "pkcs8");
    server.app(&public);
    let config = config(
        &server,
        &server.repo_url(),
        "api",
        "    pull_request: true\n",
    );
    let done = Run::new()
        .config(&config)
        .sha(SHA)
        .args([
            "--github-app-id",
            &APP_ID.to_string(),
            "--github-app-key-file",
        ])
        .args([&key])
        .run();
    done.ok().never_shows(server.minted());
    assert_eq!(server.pulls().len(), 1);
    let requests = server.requests();
    let exchange = requests
        .iter()
        .find(|r| r.target.ends_with("/access_tokens"))
        .expect("the token exchange");
    let scope: serde_json::Value = serde_json::from_str(&exchange.body).unwrap();
    assert_eq!(
        scope["permissions"],
        serde_json::json!({"contents": "write", "pull_requests": "write"})
    );
}

#[test]
fn a_token_that_may_not_touch_pull_requests_is_told_what_it_lacks() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    server.fail_next(Fault {
        matching: "/pulls?head=".into(),
        status: 403,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: r#"{"message": "Resource not accessible by personal access token", "status": "403"}"#
            .into(),
    });
    let config = config(
        &server,
        &server.repo_url(),
        "api",
        "    pull_request: true\n",
    );
    text_run(&config, SHA).run().code(1).stderr_has(
        "pulls: HTTP 403 (the server said: \"Resource not accessible by personal access token\")\n  hint: the token may not open pull requests here: a GitHub App or fine-grained token needs Pull requests: read and write",
    );
    assert!(server.pulls().is_empty());
}

/// The git server's URL of `devops` under the path its forge names it by: `history`,
/// `rollback` and `hold` read the branch's log through git.
fn served(devops: &Devops) -> String {
    let owner = devops.dir.path().join("srv/tomoda");
    std::fs::create_dir_all(&owner).unwrap();
    std::os::unix::fs::symlink(devops.bare(), owner.join("devops.git")).unwrap();
    devops.server.url("tomoda/devops.git")
}

/// dev pushed to SHA, then to SECOND, straight to main (no request): a history to undo.
fn two_pushed(server: &ForgeServer, devops: &Devops) -> String {
    let config = config(server, &served(devops), "git", "");
    for sha in [SHA, SECOND] {
        run(&config, sha).run().ok();
    }
    assert!(devops.file(DEV).contains(SECOND));
    config
}

#[test]
fn a_rollback_and_a_hold_of_a_pull_request_environment_are_requests_and_main_stays() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let config = two_pushed(&server, &devops);
    let gated = config.replace(
        "  dev:\n    when: commit\n",
        "  dev:\n    when: commit\n    pull_request: true\n    labels: [rollback]\n",
    );
    let main = devops.head();

    // --plan names the request it would open, and asks the forge nothing but reads.
    server.clear_requests();
    let done = Run::new()
        .config(&gated)
        .env("GIT_TOKEN", TOKEN)
        .args(["rollback", "--env", "dev", "--plan", "-o", "json"])
        .run();
    done.ok();
    let planned = &done.json()["planned_request"];
    assert_eq!(planned["branch"], "promote/dev/rollback", "{}", done.stdout);
    assert_eq!(planned["open"], serde_json::Value::Null);
    assert!(
        server.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        server
            .requests()
            .iter()
            .map(|r| (&r.method, &r.target))
            .collect::<Vec<_>>()
    );
    assert!(server.pulls().is_empty());

    let done = Run::new()
        .config(&gated)
        .env("GIT_TOKEN", TOKEN)
        .args(["rollback", "--env", "dev", "-o", "json"])
        .run();
    done.ok().never_shows(TOKEN);
    let result = done.json();
    let request = &result["pull_request"];
    assert_eq!(request["number"], 1, "{}", done.stdout);
    assert_eq!(request["branch"], "promote/dev/rollback");
    assert_eq!(result["pushed"], false);
    assert_eq!(devops.head(), main, "main stays until the request merges");
    let bare = devops.bare();
    assert_eq!(tip(&bare, "promote/dev/rollback^"), main);
    let dev = git(&bare, &["show", &format!("promote/dev/rollback:{DEV}")]);
    assert!(dev.contains(&format!("newTag: \"{SHA}\"")), "{dev}");
    let log = git(&bare, &["log", "-1", "--format=%B", "promote/dev/rollback"]);
    assert!(log.contains(&format!("Rollback-Of: {main}")), "{log}");
    let pulls = server.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        ("promote/dev/rollback", "main")
    );
    assert_eq!(
        pulls[0].title,
        format!(
            "rollback(dev): tomoda-backend {} -> {}",
            &SECOND[..7],
            &SHA[..7]
        )
    );
    assert_eq!(pulls[0].labels, ["rollback"]);

    // Planned again: the open request would be updated.
    let done = Run::new()
        .config(&gated)
        .env("GIT_TOKEN", TOKEN)
        .args(["rollback", "--env", "dev", "--plan"])
        .run();
    done.ok().stdout_has(&format!(
        "a run would update the open pull request #1 from promote/dev/rollback to branch main of {}",
        devops.server.url("tomoda/devops.git")
    ));

    // A hold goes its own way: promote/dev/hold, its own request.
    let done = Run::new()
        .config(&gated)
        .env("GIT_TOKEN", TOKEN)
        .args(["hold", "--env", "dev", "--reason", "incident 42"])
        .run();
    done.ok()
        .stdout_has("hold dev: opened pull request #2 from promote/dev/hold");
    assert_eq!(devops.head(), main);
    let holds = git(&bare, &["show", "promote/dev/hold:.promote/holds.yaml"]);
    assert!(holds.contains("incident 42"), "{holds}");
    let pulls = server.pulls();
    assert_eq!(pulls.len(), 2);
    assert_eq!(pulls[1].title, "hold(dev): incident 42");
    assert_eq!(open(&pulls).len(), 2);
}

#[test]
fn a_promotion_plan_in_pull_request_mode_names_the_request_it_would_open_or_update() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitLab, &devops.bare(), TOKEN);
    let config = config(
        &server,
        &server.repo_url(),
        "api",
        "    pull_request: true\n",
    );
    let main = devops.head();
    let done = text_run(&config, SHA).args(["--plan"]).run();
    done.ok().stdout_has(&format!(
        "a run would open a pull request from {BRANCH} to branch main of {}",
        server.repo_url()
    ));
    run(&config, SHA).run().ok();
    server.clear_requests();
    let done = run(&config, SECOND).args(["--plan"]).run();
    done.ok();
    let result = done.json();
    assert_eq!(
        result["planned_request"]["branch"], BRANCH,
        "{}",
        done.stdout
    );
    assert_eq!(result["planned_request"]["open"], 1);
    assert!(server.requests().iter().all(|r| r.method == "GET"));
    branch_holds(&devops, SHA);
    assert_eq!(devops.head(), main);
    assert_eq!(server.pulls().len(), 1);
}

#[test]
fn a_protected_branch_takes_a_rollback_as_a_request() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let config = two_pushed(&server, &devops);
    protect_main(&devops.bare());
    let main = devops.head();
    let rollback = || {
        Run::new()
            .config(&config)
            .env("GIT_TOKEN", TOKEN)
            .args(["rollback", "--env", "dev"])
    };
    rollback()
        .run()
        .code(1)
        .stderr_has("remote: main is protected");
    assert_eq!(devops.head(), main);
    let done = rollback().args(["--pull-request", "-o", "json"]).run();
    done.ok().never_shows(TOKEN);
    assert_eq!(done.json()["pull_request"]["number"], 1, "{}", done.stderr);
    assert_eq!(devops.head(), main);
    let dev = git(
        &devops.bare(),
        &["show", &format!("promote/dev/rollback:{DEV}")],
    );
    assert!(dev.contains(&format!("newTag: \"{SHA}\"")), "{dev}");
}
