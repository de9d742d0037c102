//! Runs that must fail: exit code, message, and nothing pushed.

use crate::dsl::*;
use crate::proxy::{Fault, Proxy};

const TOKEN: &str = "ghs_tokenValue4Tests9876543210";

#[test]
fn invalid_yaml_in_the_overlay_exits_2_names_the_line_and_pushes_nothing() {
    let devops = Devops::with_files(&[(
        DEV,
        format!("images:\n  - name: {IMAGE}\n    newTag: [oops\n"),
    )]);
    let head = devops.head();
    Run::tomoda(&devops)
        .sha(SHA)
        .run()
        .code(2)
        .stderr_has(&format!("tomoda-promote: error: {DEV}:"))
        .stderr_has("invalid YAML");
    assert_eq!(devops.head(), head);
}

#[test]
fn a_missing_sha_says_how_to_map_cloud_build_substitutions() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .run()
        .code(2)
        .stderr_has("no commit SHA: none of --commit-sha, COMMIT_SHA or GITHUB_SHA is set")
        .stderr_has("automapSubstitutions");
}

#[test]
fn a_tag_no_environment_takes_exits_2_with_the_rules() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .sha(SHA)
        .env("TAG_NAME", "nightly-3")
        .run()
        .code(2)
        .stderr_has("no environment in promote.yaml takes a build of tag nightly-3")
        .stderr_has("dev (when: commit")
        .stderr_has(r"prod (when: a tag matching '^v\d+\.\d+\.\d+$')");
}

#[test]
fn an_unknown_config_key_names_its_line() {
    let config = tomoda_config("http://127.0.0.1:9/devops.git").replace(
        "    overlay: k8s/apps/tomoda/overlays/dev",
        "    overlays: k8s/apps/tomoda/overlays/dev",
    );
    Run::new()
        .config(&config)
        .sha(SHA)
        .run()
        .code(2)
        .stderr_has("promote.yaml:6: unknown key `overlays` in environment `dev`")
        .stderr_has("did you mean `overlay`?");
}

#[test]
fn a_wrong_token_exits_1_with_a_clear_message_and_never_shows_the_token() {
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", "the-right-one-123");
    let head = devops.head();
    for rust_log in ["info", "trace"] {
        let done = Run::tomoda(&devops)
            .sha(SHA)
            .env("GIT_TOKEN", TOKEN)
            .env("RUST_LOG", rust_log)
            .args(["--output", "json"])
            .run();
        done.code(1)
            .stderr_has("401")
            .stderr_has("GIT_TOKEN")
            .never_shows(TOKEN);
    }
    assert_eq!(devops.head(), head);
}

#[test]
fn the_right_token_pushes_and_is_never_shown() {
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", TOKEN);
    let done = Run::tomoda(&devops)
        .sha(SHA)
        .env("GIT_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .run();
    done.ok().never_shows(TOKEN);
    assert!(devops.file(DEV).contains(SHA));
    assert!(!devops.log().contains(TOKEN));
}

#[test]
fn a_token_file_and_credentials_in_the_url_work_and_stay_hidden() {
    let devops = Devops::with_auth(&tomoda_files(), "bot", TOKEN);
    let with_creds = devops
        .url()
        .replace("http://", &format!("http://bot:{TOKEN}@"));
    let done = Run::new()
        .config(&tomoda_config(&with_creds))
        .sha(SHA)
        .env("RUST_LOG", "debug")
        .args(["--output", "json"])
        .run();
    done.ok().never_shows(TOKEN);
    assert_eq!(done.json()["repo"], devops.url());

    let run = Run::new();
    let token_file = run.cwd.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    run.config(&tomoda_config(&devops.url()))
        .env("TAG_NAME", "v9.9.9")
        .args([
            "--git-username",
            "bot",
            "--git-token-file",
            token_file.to_str().unwrap(),
        ])
        .run()
        .ok()
        .never_shows(TOKEN);
    assert!(devops.file(PROD).contains("v9.9.9"));
}

#[test]
fn a_missing_branch_and_an_empty_repo_exit_2() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .sha(SHA)
        .args(["--branch", "release"])
        .run()
        .code(2)
        .stderr_has("there is no branch release")
        .stderr_has("branches here: main");
    let empty = Devops::empty();
    Run::new()
        .config(&tomoda_config(&empty.url()))
        .sha(SHA)
        .run()
        .code(2)
        .stderr_has("the repository is empty");
}

#[test]
fn a_missing_overlay_exits_2() {
    let devops = Devops::with_files(&[("README.md", "nothing here\n")]);
    Run::tomoda(&devops)
        .sha(SHA)
        .run()
        .code(2)
        .stderr_has("k8s/apps/tomoda/overlays/dev: no such overlay directory in branch main of");
}

#[test]
fn an_unreachable_server_exits_1() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    Run::new()
        .config(&tomoda_config("http://127.0.0.1:9/devops.git"))
        .sha(SHA)
        .run()
        .code(1)
        .stderr_has("http://127.0.0.1:9/devops.git");
}

#[test]
fn an_invalid_tag_exits_2() {
    let devops = Devops::tomoda();
    Run::new()
        .args([
            "--repo",
            &devops.url(),
            "--overlay",
            "k8s/apps/tomoda/overlays/dev",
            "--image",
            &format!("{IMAGE}:bad#tag"),
        ])
        .run()
        .code(2)
        .stderr_has("not a valid image tag");
}

#[test]
fn a_push_refused_by_a_server_hook_is_not_retried_in_vain() {
    let devops = Devops::tomoda();
    let hook = devops.bare().join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'main is protected' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let head = devops.head();
    Run::tomoda(&devops)
        .sha(SHA)
        .run()
        .code(1)
        .stderr_has("push to branch main still refused after 1 attempt(s)")
        .stderr_has("the branch did not move");
    assert_eq!(devops.head(), head);
}

/// The error as the user reads it: from `tomoda-promote: error:` to the end of stderr.
fn error_text(done: &Done) -> &str {
    let start = done
        .stderr
        .find("tomoda-promote: error: ")
        .unwrap_or_else(|| panic!("no error in stderr:\n{}", done.stderr));
    &done.stderr[start..]
}

fn install_pre_receive_hook(devops: &Devops, script: &str) {
    let hook = devops.bare().join("hooks/pre-receive");
    std::fs::write(&hook, script).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn a_push_refused_by_branch_protection_shows_the_servers_own_words() {
    let devops = Devops::tomoda();
    install_pre_receive_hook(
        &devops,
        "#!/bin/sh\n\
         echo 'GH006: Protected branch update failed for refs/heads/main.' >&2\n\
         echo 'error: Changes must be made through a pull request.' >&2\n\
         exit 1\n",
    );
    let head = devops.head();
    let done = Run::tomoda(&devops).sha(SHA).run();
    done.code(1);
    assert_eq!(
        error_text(&done),
        format!(
            "tomoda-promote: error: {url}: push to branch main still refused after 1 attempt(s): pre-receive hook declined (the branch did not move: a server hook or branch protection refused the push)\n  \
             remote: GH006: Protected branch update failed for refs/heads/main.\n  \
             remote: error: Changes must be made through a pull request.\n  \
             hint: nothing was changed on the remote; the remote: lines are the server's reason (a hook or branch protection rule): do what they ask, or let this token push to the branch\n",
            url = devops.url()
        )
    );
    assert_eq!(devops.head(), head);
}

#[test]
fn a_wrong_token_is_told_in_exactly_these_words() {
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", "the-right-one-123");
    let done = Run::tomoda(&devops).sha(SHA).env("GIT_TOKEN", TOKEN).run();
    done.code(1);
    let url = devops.url();
    assert_eq!(
        error_text(&done),
        format!(
            "tomoda-promote: error: {url}: fetching branch main failed: authentication failed: HTTP 401 from {url}/info/refs?service=git-upload-pack (the server said: \"authentication required\")\n  \
             hint: the server did not accept the token in GIT_TOKEN (or --git-token-file): it is wrong, expired or revoked; set a valid one\n"
        )
    );
}

#[test]
fn a_token_without_write_access_is_told_in_exactly_these_words() {
    let devops = Devops::tomoda();
    let proxy = Proxy::start(devops.server.addr(), |request| {
        if request.target.ends_with("service=git-receive-pack") {
            Fault::status("403 Forbidden")
        } else {
            Fault::Forward
        }
    });
    let url = proxy.url("devops.git");
    let done = Run::new()
        .config(&tomoda_config(&url))
        .sha(SHA)
        .env("GIT_TOKEN", TOKEN)
        .run();
    done.code(1);
    assert_eq!(
        error_text(&done),
        format!(
            "tomoda-promote: error: {url}: pushing to branch main failed: access denied: HTTP 403 from {url}/info/refs?service=git-receive-pack (the server said: \"injected by the test proxy: 403 Forbidden\")\n  \
             hint: the token in GIT_TOKEN (or --git-token-file) was accepted but lacks permission: give it write access to this repository\n"
        )
    );
}

#[test]
fn a_repository_not_found_is_told_in_exactly_these_words() {
    let devops = Devops::tomoda();
    let proxy = Proxy::start(devops.server.addr(), |_| Fault::status("404 Not Found"));
    let url = proxy.url("devops.git");
    let done = Run::new().config(&tomoda_config(&url)).sha(SHA).run();
    done.code(1);
    assert_eq!(
        error_text(&done),
        format!(
            "tomoda-promote: error: {url}: fetching branch main failed: repository not found or no access: HTTP 404 from {url}/info/refs?service=git-upload-pack (the server said: \"injected by the test proxy: 404 Not Found\")\n  \
             hint: check the repository URL, and that the token can read this repository (servers answer 404 to hide private ones)\n"
        )
    );
}

#[test]
fn a_network_failure_while_listing_branches_is_not_an_empty_repository() {
    let devops = Devops::tomoda();
    // The capabilities request and the fetch of the missing branch pass; listing the
    // branches to explain it fails.
    let proxy = Proxy::start(devops.server.addr(), |request| {
        if request.index >= 3 {
            Fault::status("403 Forbidden")
        } else {
            Fault::Forward
        }
    });
    let done = Run::new()
        .config(&tomoda_config(&proxy.url("devops.git")))
        .sha(SHA)
        .args(["--branch", "release"])
        .run();
    done.code(1)
        .stderr_has("listing the branches failed: access denied: HTTP 403");
    assert!(
        !done.stderr.contains("the repository is empty"),
        "{}",
        done.stderr
    );
}
