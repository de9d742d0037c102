//! After the push, Argo CD: the application refreshed at once, and with --wait followed
//! until it runs the pushed commit Synced and Healthy, or ends in Argo CD's own words.

use serde_json::json;

use crate::argocd_server::{Answer, ArgoServer, application, tip};
use crate::dsl::*;

const TOKEN: &str = "argocd-s3cret-token-9f8e7d";
const APP: &str = "tomoda-dev";
const OLD_REVISION: &str = "1111111111111111111111111111111111111111";

/// A promotion of dev that tells Argo CD, with a short poll.
fn promote_with_argo(devops: &Devops, argo: &ArgoServer) -> Run {
    Run::tomoda(devops)
        .sha(SHA)
        .env("ARGOCD_AUTH_TOKEN", TOKEN)
        .env("PROMOTE_ARGOCD_POLL_INTERVAL", "20ms")
        .args(["--argocd-server", &argo.url(), "--argocd-app", APP])
}

#[test]
fn the_application_is_refreshed_once_after_the_push_with_the_token() {
    let devops = Devops::tomoda();
    let argo = ArgoServer::start(APP, TOKEN, |_| {
        Answer::App(application(APP, OLD_REVISION, "OutOfSync", "Healthy"))
    });
    let done = promote_with_argo(&devops, &argo)
        .env("RUST_LOG", "trace")
        .run();
    done.ok()
        .stdout_has("pushed ")
        .stdout_has("Argo CD tomoda-dev: refreshed (revision 1111111, OutOfSync, Healthy)")
        .never_shows(TOKEN);
    assert_eq!(
        argo.requests(),
        [format!(
            "GET /api/v1/applications/{APP}?refresh=normal auth=yes"
        )]
    );
    assert_eq!(devops.file(DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
}

#[test]
fn wait_follows_the_application_until_the_pushed_commit_is_synced_and_healthy() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |n| {
        let head = tip(&bare);
        Answer::App(match n {
            0 => application(APP, OLD_REVISION, "OutOfSync", "Healthy"),
            1 => application(APP, &head, "Synced", "Progressing"),
            _ => application(APP, &head, "Synced", "Healthy"),
        })
    });
    let done = promote_with_argo(&devops, &argo)
        .args(["--wait=30s", "--output", "json"])
        .run();
    done.ok()
        .stderr_has("Argo CD: waiting for tomoda-dev")
        .stderr_has("Synced, Progressing")
        .stderr_has("Argo CD: tomoda-dev deployed: at ")
        .never_shows(TOKEN);
    let v = done.json();
    let head = devops.head();
    assert_eq!(v["pushed"], true);
    assert_eq!(
        v["argocd"],
        json!({
            "server": argo.url(), "app": APP, "refreshed": true, "waited": true,
            "revisions": [head], "sync": "Synced", "health": "Healthy",
            "deployed": true, "failure": null,
        })
    );
    assert_eq!(argo.refreshes(), 1, "one refresh, then plain reads");
    assert!(argo.requests().len() >= 3, "{:?}", argo.requests());
}

#[test]
fn a_later_commit_of_another_pipeline_synced_in_place_of_ours_counts_as_deployed() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |n| {
        if n == 0 {
            return Answer::App(application(APP, OLD_REVISION, "OutOfSync", "Healthy"));
        }
        // Another pipeline pushed on top of ours; Argo CD synced the branch's new tip.
        if n == 1 {
            let ours = tip(&bare);
            let tree = format!("{ours}^{{tree}}");
            let later = git(
                &bare,
                &[
                    "commit-tree",
                    &tree,
                    "-p",
                    &ours,
                    "-m",
                    "promote(dev): other",
                ],
            );
            git(&bare, &["update-ref", "refs/heads/main", later.trim()]);
        }
        Answer::App(application(APP, &tip(&bare), "Synced", "Healthy"))
    });
    let done = promote_with_argo(&devops, &argo).args(["--wait=30s"]).run();
    done.ok()
        .stderr_has(", which includes ")
        .stdout_has("Argo CD tomoda-dev: deployed");
}

#[test]
fn an_unrelated_revision_is_not_taken_for_ours() {
    let devops = Devops::tomoda();
    let unrelated = devops.head();
    let argo = ArgoServer::start(APP, TOKEN, move |_| {
        Answer::App(application(APP, &unrelated, "Synced", "Healthy"))
    });
    promote_with_argo(&devops, &argo)
        .args(["--wait=1s"])
        .env("PROMOTE_ARGOCD_POLL_INTERVAL", "200ms")
        .run()
        .code(1)
        .stderr_has("not Synced and Healthy at ");
}

#[test]
fn a_rerun_that_is_already_up_to_date_still_waits_for_the_branch_tip() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops).sha(SHA).run().ok();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |_| {
        Answer::App(application(APP, &tip(&bare), "Synced", "Healthy"))
    });
    promote_with_argo(&devops, &argo)
        .args(["--wait=30s"])
        .run()
        .ok()
        .stdout_has("already up to date")
        .stdout_has("Argo CD tomoda-dev: deployed");
    assert_eq!(argo.refreshes(), 1);
}

#[test]
fn a_degraded_application_ends_the_wait_with_exit_1_and_argo_cds_message() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |n| {
        let mut app = if n == 0 {
            application(APP, OLD_REVISION, "OutOfSync", "Healthy")
        } else {
            application(APP, &tip(&bare), "Synced", "Degraded")
        };
        app["status"]["health"]["message"] =
            json!("Deployment \"tomoda-api\" exceeded its progress deadline");
        Answer::App(app)
    });
    let done = promote_with_argo(&devops, &argo)
        .args(["--wait=30s", "--output", "json"])
        .run();
    done.code(1)
        .stderr_has("Argo CD application tomoda-dev: the application is Degraded: Deployment \"tomoda-api\" exceeded its progress deadline")
        .stderr_has("hint: the devops commit is pushed");
    let v = done.json();
    assert_eq!(v["pushed"], true, "the result is reported with the failure");
    assert_eq!(v["argocd"]["deployed"], false);
    assert_eq!(v["argocd"]["health"], "Degraded");
}

#[test]
fn a_failed_sync_operation_ends_the_wait_with_its_message() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |_| {
        let mut app = application(APP, OLD_REVISION, "OutOfSync", "Healthy");
        app["status"]["operationState"] = json!({
            "phase": "Failed",
            "message": "one or more objects failed to apply, reason: admission webhook denied the request",
            "operation": {"sync": {"revision": tip(&bare)}},
            "startedAt": "2026-12-01T10:00:00Z",
        });
        Answer::App(app)
    });
    promote_with_argo(&devops, &argo)
        .args(["--wait=30s"])
        .run()
        .code(1)
        .stderr_has("ended Failed: one or more objects failed to apply, reason: admission webhook denied the request")
        .stdout_has("pushed ");
}

#[test]
fn a_wait_that_times_out_says_where_the_application_stands() {
    let devops = Devops::tomoda();
    let mut app = application(APP, OLD_REVISION, "OutOfSync", "Healthy");
    app["status"]["conditions"] =
        json!([{"type": "ComparisonError", "message": "rpc error: repository not accessible"}]);
    let argo = ArgoServer::start(APP, TOKEN, move |_| Answer::App(app.clone()));
    let done = promote_with_argo(&devops, &argo)
        .args(["--wait=1s"])
        .env("PROMOTE_ARGOCD_POLL_INTERVAL", "100ms")
        .run();
    done.code(1).stderr_has(&format!(
        "not Synced and Healthy at {} within 1s: still at 1111111, OutOfSync, Healthy: ComparisonError: rpc error: repository not accessible",
        &devops.head()[..7]
    ));
    let reads = argo.requests().len();
    assert!((2..=20).contains(&reads), "bounded polling: {reads}");
}

#[test]
fn several_sources_are_deployed_when_one_of_their_revisions_is_the_commit() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |_| {
        let mut app = application(APP, "", "Synced", "Healthy");
        app["status"]["sync"] = json!({"status": "Synced", "revisions": ["v2.3.1", tip(&bare)]});
        Answer::App(app)
    });
    promote_with_argo(&devops, &argo)
        .args(["--wait=30s"])
        .run()
        .ok()
        .stdout_has("Argo CD tomoda-dev: deployed (revision v2.3.1, ");
}

#[test]
fn a_refused_token_is_a_clear_error_that_never_shows_it() {
    let devops = Devops::tomoda();
    let argo = ArgoServer::start(APP, "another-token", |_| unreachable!("refused first"));
    promote_with_argo(&devops, &argo)
        .run()
        .code(1)
        .stderr_has(&format!(
            "{}: Argo CD refused the token (HTTP 401: invalid session: token signature is invalid)",
            argo.url()
        ))
        .stderr_has("hint: set ARGOCD_AUTH_TOKEN")
        .stdout_has("pushed ")
        .never_shows(TOKEN);
}

#[test]
fn an_unknown_application_is_named() {
    let devops = Devops::tomoda();
    let argo = ArgoServer::start("tomoda-prod", TOKEN, |_| unreachable!("no such app"));
    promote_with_argo(&devops, &argo)
        .run()
        .code(1)
        .stderr_has(&format!(
            "{}: Argo CD has no application tomoda-dev (HTTP 404: applications.argoproj.io \"tomoda-dev\" not found)",
            argo.url()
        ))
        .stderr_has("check --argocd-app");
}

#[test]
fn server_errors_are_retried() {
    let devops = Devops::tomoda();
    let argo = ArgoServer::start(APP, TOKEN, |n| match n {
        0 => Answer::Error(503, "upstream connect error".into()),
        _ => Answer::App(application(APP, OLD_REVISION, "OutOfSync", "Healthy")),
    });
    promote_with_argo(&devops, &argo).run().ok();
    assert_eq!(argo.refreshes(), 2);
}

#[test]
fn the_environments_argocd_in_promote_yaml_is_used_and_a_plan_contacts_nothing() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |_| {
        Answer::App(application(APP, &tip(&bare), "Synced", "Healthy"))
    });
    let config = tomoda_config(&devops.url()).replace(
        "    overlay: k8s/apps/tomoda/overlays/dev\n",
        &format!(
            "    overlay: k8s/apps/tomoda/overlays/dev\n    argocd:\n      server: {}\n      app: {APP}\n      wait: 30s\n",
            argo.url()
        ),
    );
    Run::new()
        .config(&config)
        .sha(SHA)
        .env("ARGOCD_AUTH_TOKEN", TOKEN)
        .args(["--plan"])
        .run()
        .ok()
        .stdout_has("plan only");
    assert_eq!(argo.requests(), Vec::<String>::new(), "--plan asks nothing");
    Run::new()
        .config(&config)
        .sha(SHA)
        .env("ARGOCD_AUTH_TOKEN", TOKEN)
        .env("PROMOTE_ARGOCD_POLL_INTERVAL", "20ms")
        .run()
        .ok()
        .stdout_has("Argo CD tomoda-dev: deployed");
}

#[test]
fn argocd_settings_are_checked() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .sha(SHA)
        .args(["--argocd-server", "http://127.0.0.1:9"])
        .run()
        .code(2)
        .stderr_has("Argo CD needs app");
    Run::tomoda(&devops)
        .sha(SHA)
        .args(["--wait"])
        .run()
        .code(2)
        .stderr_has("--wait needs an Argo CD application");
    assert_eq!(devops.commit_count(), 1, "nothing pushed");
}

#[test]
fn help_names_the_token_variable_and_never_its_value() {
    for args in [&["--help"][..], &["rollback", "--help"], &["history", "-h"]] {
        let done = Run::new().env("ARGOCD_AUTH_TOKEN", TOKEN).args(args).run();
        done.ok().never_shows(TOKEN);
        // Help wraps lines at spaces, differently per command: compare with one space.
        let flat = done.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("[env: ARGOCD_AUTH_TOKEN]"),
            "{args:?}: {flat}"
        );
    }
}

#[test]
fn progress_lines_follow_the_log_format() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |n| {
        Answer::App(match n {
            0 => application(APP, OLD_REVISION, "OutOfSync", "Healthy"),
            _ => application(APP, &tip(&bare), "Synced", "Healthy"),
        })
    });
    let done = promote_with_argo(&devops, &argo)
        .args(["--wait=30s", "--log-format", "json"])
        .run();
    done.ok().stderr_has("Argo CD: waiting for tomoda-dev");
    for line in done.stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["message"].is_string(), "{line}");
    }
}

#[test]
fn on_github_actions_the_deployed_output_and_summary_say_what_argo_cd_said() {
    let devops = Devops::tomoda();
    let bare = devops.bare();
    let argo = ArgoServer::start(APP, TOKEN, move |_| {
        Answer::App(application(APP, &tip(&bare), "Synced", "Healthy"))
    });
    let files = tempfile::tempdir().unwrap();
    let output = files.path().join("output");
    let summary = files.path().join("summary");
    promote_with_argo(&devops, &argo)
        .args(["--wait=30s"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", output.to_str().unwrap())
        .env("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())
        .run()
        .ok();
    let outputs = std::fs::read_to_string(&output).unwrap();
    assert!(outputs.contains("pushed=true\n"), "{outputs}");
    assert!(outputs.ends_with("deployed=true\n"), "{outputs}");
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        summary.contains("Argo CD tomoda-dev: deployed"),
        "{summary}"
    );
}
