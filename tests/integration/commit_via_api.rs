//! `commit_via: api`: promotions through each forge's API (servers of forge_server.rs over
//! real bare repositories, read back with git), races lost and retried, a request count
//! that does not grow with the repository, and tokens minted without a stored secret.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bounded;
use crate::dsl::*;
use crate::forge_server::{APP_ID, Fault, ForgeServer, Recorded, Style};

const TOKEN: &str = "tok-forge-api-s3cret-0123456789";
const OVERLAY: &str = "k8s/apps/tomoda/overlays/dev";

/// promote.yaml of the tomoda layout, committing through `server`'s API.
fn api_config(server: &ForgeServer) -> String {
    format!(
        "commit_via: api\nforge: {}\napi_url: {}\n{}",
        server.forge_name(),
        server.api_url(),
        tomoda_config(&server.repo_url())
    )
}

fn api_run(server: &ForgeServer) -> Run {
    Run::new()
        .config(&api_config(server))
        .env("GIT_TOKEN", TOKEN)
        .args(["--output", "json"])
}

/// What every request of a promotion must be: the token in a header, never in the URL.
fn check_requests(requests: &[Recorded], token: &str) {
    assert!(!requests.is_empty());
    for r in requests {
        assert!(
            !r.target.contains(token),
            "token in a URL: {} {}",
            r.method,
            r.target
        );
        assert!(
            r.header("authorization").is_some(),
            "no Authorization: {} {}",
            r.method,
            r.target
        );
    }
}

fn posts(requests: &[Recorded]) -> Vec<&Recorded> {
    requests.iter().filter(|r| r.method == "POST").collect()
}

#[test]
fn dev_and_prod_land_through_each_forge() {
    for style in [Style::GitHub, Style::GitLab, Style::Bitbucket] {
        let devops = Devops::tomoda();
        // One entry a page: the listings of GitLab and Bitbucket take several pages.
        let server = ForgeServer::start_paged(style, &devops.bare(), TOKEN, 1);
        let before = devops.head();

        let done = api_run(&server).sha(SHA).env("RUST_LOG", "debug").run();
        done.ok().never_shows(TOKEN);
        let result = done.json();
        assert_eq!(result["pushed"], true, "{style:?}: {}", done.stdout);
        assert_eq!(result["commit"], devops.head(), "{style:?}");
        assert!(
            devops
                .file(DEV)
                .contains(&format!("newTag: \"{SHA}\" # set by CI"))
        );
        assert_eq!(devops.file(PROD), tomoda_file(PROD), "{style:?}");
        assert_eq!(
            git(&devops.bare(), &["rev-parse", "main^"]).trim(),
            before,
            "{style:?}: one commit on the head read"
        );
        let requests = server.requests();
        check_requests(&requests, TOKEN);
        let commits = posts(&requests);
        assert_eq!(commits.len(), 1, "{style:?}");
        let body = &commits[0].body;
        match style {
            Style::GitHub => {
                let sent: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(sent["variables"]["input"]["expectedHeadOid"], before);
            }
            Style::GitLab => assert!(body.contains("\"last_commit_id\""), "{body}"),
            Style::Bitbucket => assert!(body.contains(&format!("parents={before}")), "{body}"),
        }
        if style == Style::GitHub {
            // GitHub's API commits as the token's identity; the build facts stay in the
            // message.
            let log = devops.log();
            assert!(log.starts_with("tomoda-promote-app[bot]"), "{log}");
            assert!(log.contains(SHA), "{log}");
        }

        server.clear_requests();
        api_run(&server)
            .sha(SHA)
            .env("TAG_NAME", "v1.5.0")
            .run()
            .ok()
            .never_shows(TOKEN);
        let prod = devops.file(PROD);
        assert!(
            prod.contains("newTag: v1.5.0   # current release"),
            "{style:?}: {prod}"
        );
        check_requests(&server.requests(), TOKEN);
        git(&devops.bare(), &["fsck", "--strict", "--no-dangling"]);
    }
}

#[test]
fn a_plan_through_the_api_reads_the_same_and_writes_nothing() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let before = devops.head();
    let done = Run::new()
        .config(&api_config(&server))
        .env("GIT_TOKEN", TOKEN)
        .sha(SHA)
        .args(["--plan"])
        .run();
    done.ok()
        .stdout_has(&format!("+    newTag: \"{SHA}\" # set by CI"))
        .never_shows(TOKEN);
    assert_eq!(devops.head(), before);
    let requests = server.requests();
    assert!(posts(&requests).is_empty(), "{requests:?}");
    assert!(requests.iter().all(|r| r.method == "GET"));
}

#[test]
fn a_plan_reads_a_public_repository_without_a_token_and_a_run_still_needs_one() {
    for style in [Style::GitHub, Style::GitLab, Style::Bitbucket] {
        let devops = Devops::tomoda();
        let server = ForgeServer::start(style, &devops.bare(), TOKEN);
        server.make_public();
        let before = devops.head();
        Run::new()
            .config(&api_config(&server))
            .sha(SHA)
            .args(["--plan"])
            .run()
            .ok()
            .stdout_has(&format!("+    newTag: \"{SHA}\" # set by CI"))
            .stderr_has(&format!(
                "no token: reading {} through the {} API anonymously",
                server.repo_url(),
                server.forge_name()
            ));
        let requests = server.requests();
        assert!(!requests.is_empty(), "{style:?}");
        for r in &requests {
            assert_eq!(r.method, "GET", "{style:?}: {}", r.target);
            assert_eq!(r.header("authorization"), None, "{style:?}: {}", r.target);
        }
        assert_eq!(devops.head(), before);

        // A run that commits still needs the token, and asks nothing without it.
        server.clear_requests();
        Run::new()
            .config(&api_config(&server))
            .sha(SHA)
            .run()
            .code(2)
            .stderr_has("commit_via: api needs a token for the");
        assert!(server.requests().is_empty(), "{style:?}");
        assert_eq!(devops.head(), before);

        // `history` only reads, too.
        Run::new()
            .config(&api_config(&server))
            .args(["history", "--env", "dev"])
            .run()
            .ok()
            .stderr_has("API anonymously");
        let requests = server.requests();
        assert!(!requests.is_empty(), "{style:?}");
        assert!(
            requests
                .iter()
                .all(|r| r.method == "GET" && r.header("authorization").is_none()),
            "{style:?}"
        );
    }
    // A private repository answers anonymous reads as if it did not exist; the note says
    // why the branch seems missing.
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    Run::new()
        .config(&api_config(&server))
        .sha(SHA)
        .args(["--plan"])
        .run()
        .code(2)
        .stderr_has("a private one answers as if missing")
        .stderr_has("there is no branch main");
}

/// Another pipeline's commit to the dev overlay, straight into the bare repository.
fn concurrent_edit(bare: PathBuf) -> impl FnOnce() + Send + 'static {
    move || {
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["clone", "-q", bare.to_str().unwrap(), "."]);
        let file = work.path().join(DEV);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            text.replace("# dev follows main", "# dev follows main, always"),
        )
        .unwrap();
        git(work.path(), &["commit", "-q", "-am", "someone else"]);
        git(work.path(), &["push", "-q", "origin", "main"]);
    }
}

#[test]
fn a_race_lost_on_each_forge_is_read_again_and_lands() {
    for style in [Style::GitHub, Style::GitLab, Style::Bitbucket] {
        let devops = Devops::tomoda();
        let server = ForgeServer::start(style, &devops.bare(), TOKEN);
        server.before_first_commit(concurrent_edit(devops.bare()));
        let done = api_run(&server).sha(SHA).run();
        done.ok();
        assert_eq!(done.json()["attempts"], 2, "{style:?}: {}", done.stderr);
        let dev = devops.file(DEV);
        assert!(
            dev.contains("# dev follows main, always"),
            "{style:?}: {dev}"
        );
        assert!(dev.contains(SHA), "{style:?}: {dev}");
        assert_eq!(devops.commit_count(), 3, "{style:?}");
        assert_eq!(posts(&server.requests()).len(), 2, "{style:?}");
    }
}

#[test]
fn a_commit_whose_answer_was_lost_is_reported_as_pushed_not_made_twice() {
    for style in [Style::GitHub, Style::GitLab, Style::Bitbucket] {
        let devops = Devops::tomoda();
        let server = ForgeServer::start(style, &devops.bare(), TOKEN);
        server.lose_next_commit_answer();
        let done = api_run(&server).sha(SHA).run();
        done.ok();
        let result = done.json();
        assert_eq!(result["pushed"], true, "{style:?}: {}", done.stderr);
        assert_eq!(result["commit"], devops.head(), "{style:?}");
        assert_eq!(devops.commit_count(), 2, "{style:?}: one commit, not two");
        assert_eq!(posts(&server.requests()).len(), 1, "{style:?}");
    }
}

#[test]
fn sixteen_promotions_at_once_through_the_github_api_all_land() {
    const N: usize = 16;
    let mut kustomization = String::from("resources:\n  - ../../base\nimages:\n");
    for i in 0..N {
        kustomization.push_str(&format!(
            "  - name: reg.example/tomoda/app-{i:02}\n    newTag: old-{i:02}\n"
        ));
    }
    let devops = Devops::with_files(&[(DEV, kustomization)]);
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let config = api_config(&server);
    let (children, cwds): (Vec<_>, Vec<_>) = (0..N)
        .map(|i| {
            Run::new()
                .config(&config)
                .env("GIT_TOKEN", TOKEN)
                .sha(SHA)
                .args(["--overlay", OVERLAY, "--max-attempts", "40"])
                .args([
                    "--image",
                    &format!("reg.example/tomoda/app-{i:02}:new-{i:02}"),
                ])
                .spawn()
        })
        .unzip();
    let ended = bounded::wait_all(children, Duration::from_secs(120));
    drop(cwds);
    for (i, e) in ended.iter().enumerate() {
        assert!(
            !e.killed && e.done.code == 0,
            "promoter {i}: exit {}\n{}",
            e.done.code,
            e.done.stderr
        );
        assert!(!e.done.stderr.contains(TOKEN) && !e.done.stdout.contains(TOKEN));
    }
    assert_eq!(devops.commit_count(), 1 + N);
    let dev = devops.file(DEV);
    for i in 0..N {
        assert!(dev.contains(&format!("newTag: new-{i:02}")), "{dev}");
    }
    let requests = server.requests();
    check_requests(&requests, TOKEN);
    for commit in posts(&requests) {
        assert!(
            commit.body.contains("\"expectedHeadOid\":\""),
            "{}",
            commit.body
        );
    }
}

/// The requests (and wall time) of one API promotion of app7.
fn one_promotion(devops: &Devops) -> (usize, Duration) {
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let config = format!(
        "commit_via: api\nforge: github\napi_url: {}\nrepo: {}\nenvironments:\n  dev:\n    when: commit\n    overlay: apps/app7/overlays/dev\n    images:\n      - name: reg/app7\n        tag: \"{{short_sha}}\"\n",
        server.api_url(),
        server.repo_url()
    );
    let start = Instant::now();
    Run::new()
        .config(&config)
        .env("GIT_TOKEN", TOKEN)
        .sha(SHA)
        .run()
        .ok();
    let took = start.elapsed();
    assert!(
        devops
            .file("apps/app7/overlays/dev/kustomization.yaml")
            .contains("4d5e6f7")
    );
    (server.requests().len(), took)
}

#[test]
fn one_promotion_costs_the_same_requests_at_100_and_10000_apps() {
    let (small, small_time) = one_promotion(&Devops::apps(100));
    let (large, large_time) = one_promotion(&Devops::apps(10_000));
    // Read by scripts/bench next to the git path's numbers; not asserted.
    eprintln!(
        "api promotion: {small} requests, {:.0} ms at 100 apps; {large} requests, {:.0} ms at 10,000 apps",
        small_time.as_secs_f64() * 1e3,
        large_time.as_secs_f64() * 1e3
    );
    assert_eq!(small, large);
    // The head; the overlay's parent, the overlay and the holds file's directory listed;
    // the file; the commit.
    assert_eq!(small, 6);
}

#[test]
fn an_overlay_beyond_the_thousand_entries_github_lists_is_still_found() {
    let files: Vec<(String, String)> = (0..1100)
        .map(|n| {
            (
                format!("overlays/app{n}/kustomization.yaml"),
                format!("images:\n- name: reg/app{n}\n  newTag: v0\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let devops = Devops::with_files(&refs);
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    // `git ls-tree` order: app999 comes last, past the first 1,000.
    let config = format!(
        "commit_via: api\nforge: github\napi_url: {}\nrepo: {}\nenvironments:\n  dev:\n    when: commit\n    overlay: overlays/app999\n    images:\n      - name: reg/app999\n        tag: v1\n",
        server.api_url(),
        server.repo_url()
    );
    Run::new()
        .config(&config)
        .env("GIT_TOKEN", TOKEN)
        .sha(SHA)
        .run()
        .ok();
    assert!(
        devops
            .file("overlays/app999/kustomization.yaml")
            .contains("newTag: v1")
    );
}

#[test]
fn a_hold_through_the_api_is_read_back_by_the_next_promotion() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitLab, &devops.bare(), TOKEN);
    Run::new()
        .config(&api_config(&server))
        .env("GIT_TOKEN", TOKEN)
        .args(["hold", "--env", "prod", "--reason", "freeze for the audit"])
        .run()
        .ok()
        .never_shows(TOKEN);
    assert!(
        devops
            .file(".promote/holds.yaml")
            .contains("freeze for the audit")
    );
    let commits = posts(&server.requests())
        .iter()
        .filter(|r| r.target.ends_with("/repository/commits"))
        .count();
    assert_eq!(commits, 1, "the hold is committed through the API");
    let held_at = devops.head();
    Run::new()
        .config(&api_config(&server))
        .env("GIT_TOKEN", TOKEN)
        .sha(SHA)
        .env("TAG_NAME", "v1.5.0")
        .run()
        .ok()
        .stdout_has("prod: skipped: held");
    assert_eq!(devops.head(), held_at);
}

/// An RSA key pair made by openssl: the private key in `format` ("pkcs1" or "pkcs8"), and
/// the public half for the server.
pub fn app_key(dir: &Path, format: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("app-{format}.pem"));
    let public = dir.join(format!("app-{format}.pub.pem"));
    let mut genrsa = Command::new("openssl");
    genrsa.args(["genrsa", "-out"]).arg(&key);
    if format == "pkcs1" {
        genrsa.arg("-traditional");
    }
    genrsa.arg("2048");
    assert!(genrsa.output().expect("openssl runs").status.success());
    let out = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    (key, public)
}

#[test]
fn a_github_app_token_is_minted_for_the_one_repository_and_never_shown() {
    let keys = tempfile::tempdir().unwrap();
    // PKCS#1 from a file, for the API path.
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), "not-the-token-used");
    let (key, public) = app_key(keys.path(), "pkcs1");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    server.app(&public);
    let done = Run::new()
        .config(&api_config(&server))
        .sha(SHA)
        .args([
            "--github-app-id",
            &APP_ID.to_string(),
            "--github-app-key-file",
        ])
        .args([&key])
        .env("RUST_LOG", "debug")
        .run();
    done.ok().never_shows(server.minted());
    assert!(devops.file(DEV).contains(SHA));
    let requests = server.requests();
    check_requests(&requests, server.minted());
    let exchange = requests
        .iter()
        .find(|r| r.target.ends_with("/access_tokens"))
        .expect("the token exchange");
    let scope: serde_json::Value = serde_json::from_str(&exchange.body).unwrap();
    assert_eq!(scope["repositories"], serde_json::json!(["devops"]));
    assert_eq!(
        scope["permissions"],
        serde_json::json!({"contents": "write"})
    );

    // PKCS#8 in GITHUB_APP_PRIVATE_KEY, for the git path: the minted token pushes.
    let (key8, public8) = app_key(keys.path(), "pkcs8");
    assert!(
        std::fs::read_to_string(&key8)
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    let api_only = Devops::tomoda();
    let forge = ForgeServer::start(Style::GitHub, &api_only.bare(), "unused");
    forge.app(&public8);
    let pushed_to = Devops::with_auth(&tomoda_files(), "x-access-token", forge.minted());
    // Served as owner/name, as GitHub names it.
    let owner_dir = pushed_to
        .bare()
        .parent()
        .unwrap()
        .join(crate::forge_server::OWNER);
    std::fs::create_dir(&owner_dir).unwrap();
    std::os::unix::fs::symlink(pushed_to.bare(), owner_dir.join("devops.git")).unwrap();
    let config = format!(
        "forge: github\napi_url: {}\n{}",
        forge.api_url(),
        tomoda_config(&pushed_to.server.url("tomoda/devops.git"))
    );
    Run::new()
        .config(&config)
        .sha(SHA)
        .env("GITHUB_APP_ID", &APP_ID.to_string())
        .env(
            "GITHUB_APP_PRIVATE_KEY",
            &std::fs::read_to_string(&key8).unwrap(),
        )
        .run()
        .ok()
        .never_shows(forge.minted());
    assert!(pushed_to.file(DEV).contains(SHA));
}

#[test]
fn an_app_key_that_is_not_a_key_exits_2_before_any_request() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    let before = devops.head();
    let run = Run::new().config(&api_config(&server)).sha(SHA);
    std::fs::write(
        run.cwd.path().join("app.pem"),
        "ghp_this-is-a-token-not-a-key\n",
    )
    .unwrap();
    run.args([
        "--github-app-id",
        "424242",
        "--github-app-key-file",
        "app.pem",
    ])
    .run()
    .code(2)
    .stderr_has("--github-app-key-file app.pem is not an RSA private key")
    .never_shows("ghp_this-is-a-token-not-a-key");
    assert!(server.requests().is_empty());
    assert_eq!(devops.head(), before);
}

#[test]
fn a_cloud_build_connection_hands_out_the_token() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), "unused");
    let name = "projects/p/locations/asia-east1/connections/gh/repositories/devops";
    let run = || {
        Run::new()
            .config(&api_config(&server))
            .sha(SHA)
            .env("PROMOTE_METADATA_URL", &server.base())
            .env("PROMOTE_CLOUDBUILD_URL", &server.base())
            .args(["--cloudbuild-repository", name])
    };
    run().run().ok().never_shows(server.minted());
    assert!(devops.file(DEV).contains(SHA));
    let requests = server.requests();
    let metadata = &requests[0];
    assert_eq!(metadata.header("metadata-flavor"), Some("Google"));
    assert_eq!(
        requests[1].target,
        format!("/v2/{name}:accessReadWriteToken")
    );
    check_requests(&requests[2..], server.minted());

    server.deny_cloudbuild();
    run()
        .run()
        .code(1)
        .stderr_has("lacks the permission cloudbuild.repositories.accessReadWriteToken")
        .stderr_has("roles/cloudbuild.tokenAccessor");
}

#[test]
fn rate_limits_are_waited_out_within_bounds_and_a_wrong_token_is_told() {
    let devops = Devops::tomoda();
    let server = ForgeServer::start(Style::GitHub, &devops.bare(), TOKEN);
    server.fail_next(Fault {
        matching: "/git/ref/heads/".into(),
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        body: r#"{"message":"You have exceeded a secondary rate limit"}"#.into(),
    });
    api_run(&server).sha(SHA).run().ok();
    assert!(devops.file(DEV).contains(SHA));
    let reads = server
        .requests()
        .iter()
        .filter(|r| r.target.contains("/git/ref/heads/"))
        .count();
    assert_eq!(reads, 2);

    // A primary limit that resets in an hour is longer than any wait: said, exit 1.
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    server.fail_next(Fault {
        matching: "/git/ref/heads/".into(),
        status: 403,
        headers: vec![
            ("x-ratelimit-remaining".into(), "0".into()),
            ("x-ratelimit-reset".into(), reset.to_string()),
        ],
        body: r#"{"message":"API rate limit exceeded for installation ID 77."}"#.into(),
    });
    api_run(&server)
        .sha(OLD_SHA)
        .run()
        .code(1)
        .stderr_has("rate limited: HTTP 403")
        .stderr_has("longer than the 30 s");

    let wrong = "tok-wrong-but-secret-987654";
    Run::new()
        .config(&api_config(&server))
        .env("GIT_TOKEN", wrong)
        .sha(SHA)
        .run()
        .code(1)
        .stderr_has("HTTP 401 (the server said: \"Bad credentials\")")
        .stderr_has("the token was refused")
        .never_shows(wrong);
}

/// Requests that speak git's smart HTTP: none may be made where history is read through
/// the API (the doubles serve no git at all, so such a request would fail the run too).
fn git_requests(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.target.contains("/info/refs") || r.target.contains("git-upload-pack"))
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

/// The requests of a branch log listing, as each forge names it.
fn log_requests(requests: &[Recorded], style: Style) -> usize {
    requests
        .iter()
        .filter(|r| {
            let path = r.target.split('?').next().unwrap_or_default();
            r.method == "GET"
                && match style {
                    Style::GitHub => path.ends_with("/commits"),
                    Style::GitLab => path.ends_with("/repository/commits"),
                    Style::Bitbucket => path.contains("/commits/"),
                }
        })
        .count()
}

#[test]
fn history_and_rollback_read_the_log_through_each_forges_api() {
    const SHAS: [&str; 3] = [
        "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "3333333ccccccccccccccccccccccccccccccccc",
    ];
    for style in [Style::GitHub, Style::GitLab, Style::Bitbucket] {
        let devops = Devops::tomoda();
        // One commit a page: the log is read page by page.
        let server = ForgeServer::start_paged(style, &devops.bare(), TOKEN, 1);
        for (i, sha) in SHAS.iter().enumerate() {
            api_run(&server)
                .sha(sha)
                .env("BUILD_ID", &format!("build-{}", i + 1))
                .run()
                .ok();
        }
        // A commit that is no promotion, on top: skipped, as through git.
        devops.commit(&[("notes.txt", "a note\n")], "docs: a note");
        let tip = devops.head();
        let promoted = git(&devops.bare(), &["rev-parse", "main^"])
            .trim()
            .to_string();

        server.clear_requests();
        let done = api_run(&server).args(["history", "--env", "dev"]).run();
        done.ok().never_shows(TOKEN);
        let v = done.json();
        let records = v.as_array().expect("an array");
        assert_eq!(
            records.len(),
            3,
            "{style:?}: {v}\n{}\n{:?}",
            devops.log(),
            server
                .requests()
                .iter()
                .map(|r| &r.target)
                .collect::<Vec<_>>()
        );
        for (record, (sha, build)) in records.iter().zip([
            (SHAS[2], "build-3"),
            (SHAS[1], "build-2"),
            (SHAS[0], "build-1"),
        ]) {
            assert_eq!(record["source_commit"], sha, "{style:?}: newest first");
            assert_eq!(record["build_id"], build, "{style:?}");
            assert_eq!(record["environment"], "dev", "{style:?}");
        }
        assert_eq!(records[0]["commit"], promoted, "{style:?}");
        assert_eq!(records[0]["changes"][0]["from"], SHAS[1], "{style:?}");
        assert_eq!(records[0]["changes"][0]["to"], SHAS[2], "{style:?}");
        assert!(records[0]["time"].as_str().unwrap().ends_with('Z'));
        let requests = server.requests();
        check_requests(&requests, TOKEN);
        assert_eq!(git_requests(&requests), Vec::<String>::new(), "{style:?}");
        // Five commits (the fixture's, three promotions, the note): every page is read.
        assert_eq!(log_requests(&requests, style), 5, "{style:?}");

        // --limit 1: the note and the newest promotion, two pages, no deeper; a rate
        // limit on the way is waited out.
        server.clear_requests();
        server.fail_next(Fault {
            matching: "/commits".into(),
            status: 429,
            headers: vec![("Retry-After".into(), "1".into())],
            body: r#"{"message":"slow down"}"#.into(),
        });
        let done = api_run(&server)
            .args(["history", "--env", "dev", "--limit", "1"])
            .run();
        let v = done.ok().json();
        assert_eq!(v.as_array().unwrap().len(), 1, "{style:?}: {v}");
        assert_eq!(v[0]["source_commit"], SHAS[2]);
        assert_eq!(
            log_requests(&server.requests(), style),
            3,
            "{style:?}: one again"
        );

        // A rollback of one step, read and committed through the API.
        server.clear_requests();
        let done = api_run(&server)
            .args(["rollback", "--env", "dev", "--steps", "1"])
            .run();
        done.ok().never_shows(TOKEN);
        assert_eq!(done.json()["pushed"], true, "{style:?}: {}", done.stdout);
        assert!(
            devops
                .file(DEV)
                .contains(&format!("newTag: \"{}\" # set by CI", SHAS[1])),
            "{style:?}: {}",
            devops.file(DEV)
        );
        assert_eq!(
            git(&devops.bare(), &["rev-parse", "main^"]).trim(),
            tip,
            "{style:?}: a new commit on top, no rewrite"
        );
        let log = devops.log();
        assert!(
            log.contains(&format!("Rollback-Of: {promoted}")),
            "{style:?}: {log}"
        );
        assert!(
            log.contains(&format!("Source-Commit: {}", SHAS[1])),
            "{style:?}: {log}"
        );
        let requests = server.requests();
        check_requests(&requests, TOKEN);
        assert_eq!(git_requests(&requests), Vec::<String>::new(), "{style:?}");
    }
}
