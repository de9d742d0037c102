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
fn the_readme_example_plans_offline() {
    // The README's first command, run from the repository root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(BIN)
        .current_dir(root)
        .env_clear()
        .args([
            "--config",
            "examples/tomoda/promote.yaml",
            "--commit-sha",
            SHA,
            "--plan",
        ])
        .output()
        .unwrap();
    let done = Done::from(out);
    done.ok()
        .stdout_has("+++ b/k8s/apps/tomoda/overlays/dev/kustomization.yaml")
        .stdout_has(&format!("+    newTag: \"{SHA}\" # commit on main"))
        .stdout_has("promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7");
}

#[test]
fn a_plain_directory_cannot_be_pushed_to() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(BIN)
        .current_dir(root)
        .env_clear()
        .args([
            "--config",
            "examples/tomoda/promote.yaml",
            "--commit-sha",
            SHA,
        ])
        .output()
        .unwrap();
    Done::from(out)
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
