//! The command line itself: help, the bundled example, flags and their environment variables.

use std::path::Path;

use crate::dsl::*;

#[test]
fn help_teaches_the_flags_their_env_vars_and_hides_the_token() {
    let done = Run::new()
        .env("GIT_TOKEN", "ghs_helpTokenValue123")
        .args(["--help"])
        .run();
    done.ok()
        .stdout_has("--commit-sha <SHA>")
        .stdout_has("[env: COMMIT_SHA=]")
        .stdout_has("[env: GIT_TOKEN]")
        .stdout_has("--plan")
        .stdout_has("EXIT CODES")
        .never_shows("ghs_helpTokenValue123");
}

#[test]
fn the_token_value_is_never_shown_in_help() {
    // Replaces a unit test that set no token and so could not fail (issue 13).
    const TOKEN: &str = "ghs_helpSecretValue456";
    const REPO: &str = "https://x-access-token:repoSecret789@git.example/o/devops.git";
    for flag in ["--help", "-h"] {
        let done = Run::new()
            .env("GIT_TOKEN", TOKEN)
            .env("PROMOTE_REPO", REPO)
            .env("COMMIT_SHA", "4d5e6f7")
            .args([flag])
            .run();
        done.ok().never_shows(TOKEN).never_shows("repoSecret789");
        // Help wraps lines at spaces, differently per flag: compare with one space.
        let flat = done.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        for shown in [
            // The variables reach the binary: a value that is not secret is shown.
            "[env: COMMIT_SHA=4d5e6f7]",
            "[env: GIT_TOKEN]",
            "[env: PROMOTE_REPO]",
        ] {
            assert!(
                flat.contains(shown),
                "{flag} lacks {shown:?}:\n{}",
                done.stdout
            );
        }
    }
}

/// The binary run from the repository root on the bundled example, as the README says.
fn run_example(extra: &[&str]) -> Done {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(BIN)
        .current_dir(root)
        .env_clear()
        // Offline: the example's images are in a registry the tests cannot reach.
        .env("PROMOTE_NO_VERIFY", "1")
        .args([
            "--config",
            "examples/tomoda/promote.yaml",
            "--commit-sha",
            SHA,
        ])
        .args(extra)
        .output()
        .unwrap();
    Done::from(out)
}

#[test]
fn the_readme_example_plans_offline() {
    run_example(&["--plan"])
        .ok()
        .stdout_has("+++ b/k8s/apps/tomoda/overlays/dev/kustomization.yaml")
        .stdout_has(&format!("+    newTag: \"{SHA}\" # commit on main"))
        .stdout_has("promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7");
}

/// The README's quick-start command, as a newcomer pastes it: the arguments after
/// `cargo run --` on the line under "# 1.".
fn readme_quick_start_args() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let quick_start = &readme[readme
        .find("## Quick start")
        .expect("a Quick start section")..];
    let line = quick_start
        .lines()
        .find_map(|l| l.strip_prefix("cargo run -- "))
        .expect("a `cargo run -- ` line in the quick start");
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn the_readme_quick_start_prints_the_plan_and_no_line_a_newcomer_cannot_act_on() {
    let args = readme_quick_start_args();
    assert!(args.iter().any(|a| a == "--dry-run"), "{args:?}");
    // Run from the tool's own clone (a git checkout that is not the app's), with no
    // PROMOTE_* variable and nothing but the README's words.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = std::process::Command::new(BIN);
    command.current_dir(root).env_clear().args(&args);
    for keep in ["PATH", "HOME", "SSL_CERT_FILE"] {
        if let Some(v) = std::env::var_os(keep) {
            command.env(keep, v);
        }
    }
    let done = Done::from(command.output().unwrap());
    done.ok()
        .stdout_has("+++ b/k8s/apps/tomoda/overlays/dev/kustomization.yaml")
        .stdout_has("plan only: nothing was committed or pushed");
    for line in done.stderr.lines() {
        assert!(
            line.trim_start().starts_with("INFO environment dev:"),
            "a line the quick start should not print: {line}\n{}",
            done.stderr
        );
    }
}

#[test]
fn a_plain_directory_cannot_be_pushed_to() {
    run_example(&[])
        .code(2)
        .stderr_has("is a directory, not a git repository")
        .stderr_has("--plan");
}

#[test]
fn without_config_or_flags_it_says_what_to_give() {
    Run::new()
        .sha(SHA)
        .run()
        .code(2)
        .stderr_has("no promote.yaml in")
        .stderr_has("--config FILE");
}

#[test]
fn version_prints() {
    Run::new()
        .args(["--version"])
        .run()
        .ok()
        .stdout_has(concat!("tomoda-promote ", env!("CARGO_PKG_VERSION")));
}

#[test]
fn completions_and_the_man_page_come_from_the_flag_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        Run::new()
            .args(["completions", shell])
            .run()
            .ok()
            .stdout_has("commit-sha");
    }
    Run::new()
        .args(["man"])
        .run()
        .ok()
        .stdout_has(".TH tomoda-promote 1")
        .stdout_has("COMMIT_SHA");
}

#[test]
fn json_logs_carry_severity_and_message_for_cloud_logging() {
    let devops = Devops::tomoda();
    let done = Run::tomoda(&devops)
        .sha(SHA)
        .env("PROMOTE_LOG_FORMAT", "json")
        .run();
    done.ok();
    let lines: Vec<serde_json::Value> = done
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["severity"] == "INFO"
                && l["message"].as_str().unwrap().starts_with("pushing ")),
        "{lines:?}"
    );
    let failed = Run::tomoda(&devops).args(["--log-format", "json"]).run();
    failed.code(2);
    let last: serde_json::Value =
        serde_json::from_str(failed.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["severity"], "ERROR");
    assert!(last["message"].as_str().unwrap().contains("no commit SHA"));
}

#[test]
fn on_github_actions_outputs_summary_annotations_and_a_folded_diff_are_written() {
    let devops = Devops::tomoda();
    let files = tempfile::tempdir().unwrap();
    let output = files.path().join("output");
    let summary = files.path().join("summary");
    let github = |run: Run| {
        run.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", output.to_str().unwrap())
            .env("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())
            .env("GITHUB_SHA", SHA)
            .env("GITHUB_REF_TYPE", "branch")
            .env("GITHUB_REF_NAME", "main")
    };
    github(Run::tomoda(&devops).args(["--plan"]))
        .run()
        .ok()
        .stdout_has(&format!("::group::diff of {DEV}\ndiff --git"))
        .stdout_has("::endgroup::\n");
    std::fs::remove_file(&output).unwrap();
    github(Run::tomoda(&devops)).run().ok();
    let written = std::fs::read_to_string(&output).unwrap();
    let head = devops.head();
    assert!(
        written.starts_with(&format!(
            "commit={head}\npushed=true\nenvironment=dev\nchanges<<ghadelimiter_"
        )),
        "{written}"
    );
    assert!(
        written.contains("\nup_to_date=false\nskipped=\n"),
        "{written}"
    );
    std::fs::remove_file(&output).unwrap();
    github(Run::tomoda(&devops)).run().ok();
    let rerun = std::fs::read_to_string(&output).unwrap();
    assert!(
        rerun.starts_with("commit=\npushed=false\n")
            && rerun.contains("\nup_to_date=true\nskipped=\n"),
        "{rerun}"
    );
    let json_line = written.lines().nth(4).unwrap();
    let changes: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(changes[0]["new"], SHA);
    let table = std::fs::read_to_string(&summary).unwrap();
    assert!(
        table.contains(&format!("| `{IMAGE}` | newTag | `{OLD_SHA}` | `{SHA}` |")),
        "{table}"
    );

    github(Run::tomoda(&devops).env("TAG_NAME", "nightly"))
        .run()
        .code(2)
        .stdout_has("::error title=tomoda-promote::no environment in promote.yaml takes a build of tag nightly%0A");
}

#[test]
fn empty_environment_variables_count_as_unset() {
    // What a GitHub Action passes for inputs the workflow did not give.
    let devops = Devops::tomoda();
    let mut run = Run::tomoda(&devops).sha(SHA);
    for name in [
        "PROMOTE_ENV",
        "PROMOTE_BRANCH",
        "PROMOTE_REPO",
        "PROMOTE_OVERLAY",
        "PROMOTE_OUTPUT",
        "PROMOTE_CONFIG",
        "PROMOTE_IMAGES",
        "GIT_TOKEN",
        "TAG_NAME",
    ] {
        run = run.env(name, "");
    }
    run.run().ok().stdout_has("pushed ");
    assert!(devops.file(DEV).contains(SHA));
}

#[test]
fn branch_names_git_refuses_are_refused_before_anything_is_fetched() {
    // The hand-written check let `x.lock`, `a/.b` and `@{` through (issue 13).
    for bad in [
        "x.lock", "a/.b", "@{", "a..b", "HEAD", "-main", "re lease", "main/",
    ] {
        let done = Run::new()
            .args([
                "--repo",
                "./nowhere",
                "--overlay",
                "k8s/app",
                "--image",
                "app:v1",
            ])
            .args([format!("--branch={bad}")])
            .sha(SHA)
            .run();
        done.code(2);
        assert_eq!(
            done.stderr,
            format!(
                "tomoda-promote: error: `{bad}` is not a valid branch name\n  hint: pass the devops branch, such as main, with --branch\n"
            ),
            "{bad}"
        );
    }
}
