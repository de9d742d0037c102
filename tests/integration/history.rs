//! Looking back and steering, against the real git server: the promotions read from the
//! devops branch's log, a rollback as a new commit, holds that keep promotions off an
//! environment until lifted.

use crate::dsl::*;

const SHA1: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA2: &str = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHA3: &str = "3333333ccccccccccccccccccccccccccccccccc";

/// dev promoted to SHA1, SHA2, SHA3 in turn.
fn three_promotions() -> Devops {
    let devops = Devops::tomoda();
    for (i, sha) in [SHA1, SHA2, SHA3].iter().enumerate() {
        Run::tomoda(&devops)
            .sha(sha)
            .env("BUILD_ID", &format!("build-{}", i + 1))
            .run()
            .ok();
    }
    devops
}

fn dev_with(sha: &str) -> String {
    tomoda_file(DEV).replace(OLD_SHA, sha)
}

#[test]
fn history_lists_the_promotions_newest_first_from_the_trailers() {
    let devops = three_promotions();
    let done = Run::tomoda(&devops).args(["history", "--env", "dev"]).run();
    done.ok()
        .stdout_has("dev  ")
        .stdout_has("promote(dev): tomoda-backend 2222222 -> 3333333")
        .stdout_has(&format!("image:  {IMAGE}:{SHA3}"))
        .stdout_has("source 3333333, build build-3");
    let out = &done.stdout;
    let (third, first) = (out.find("build-3").unwrap(), out.find("build-1").unwrap());
    assert!(third < first, "newest first:\n{out}");

    let done = Run::tomoda(&devops)
        .args(["history", "--env", "dev", "--limit", "2", "-o", "json"])
        .run();
    let v = done.ok().json();
    let records = v.as_array().expect("an array");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["source_commit"], SHA3);
    assert_eq!(records[0]["build_id"], "build-3");
    assert_eq!(records[0]["environment"], "dev");
    assert_eq!(records[0]["commit"], devops.head());
    assert_eq!(records[0]["changes"][0]["from"], SHA2);
    assert_eq!(records[0]["changes"][0]["to"], SHA3);
    assert_eq!(records[1]["source_commit"], SHA2);
    assert!(records[0]["time"].as_str().unwrap().ends_with('Z'));

    let none = Run::tomoda(&devops)
        .args(["history", "--env", "prod"])
        .run();
    none.ok().stdout_has("no promotions found");
}

#[test]
fn history_fetches_deeper_only_as_needed_to_find_an_old_promotion() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .sha(SHA)
        .env("TAG_NAME", "v1.5.0")
        .run()
        .ok();
    for i in 0..20 {
        devops.commit(
            &[("notes.txt", format!("{i}\n"))],
            &format!("docs: note {i}"),
        );
    }
    let done = Run::tomoda(&devops)
        .args(["history", "--env", "prod", "-o", "json"])
        .run();
    let v = done.ok().json();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["tag"], "v1.5.0");
    let fetches: Vec<String> = devops
        .server
        .requests()
        .into_iter()
        .filter(|r| r.contains("git-upload-pack") && r.starts_with("POST"))
        .collect();
    assert!(fetches.len() >= 2, "deepened in steps: {fetches:?}");
}

#[test]
fn rollback_steps_1_sets_the_previous_values_in_a_new_commit() {
    let devops = three_promotions();
    let undone = devops.head();
    let before = devops.commit_count();
    Run::tomoda(&devops)
        .args(["rollback", "--env", "dev", "--steps", "1"])
        .run()
        .ok()
        .stdout_has("pushed ");
    assert_eq!(devops.file(DEV), dev_with(SHA2));
    assert_eq!(
        devops.commit_count(),
        before + 1,
        "a new commit, no rewrite"
    );
    assert_eq!(
        git(&devops.bare(), &["rev-parse", "main^"]).trim(),
        undone,
        "on top of the undone commit"
    );
    let log = devops.log();
    assert!(
        log.contains("rollback(dev): tomoda-backend 3333333 -> 2222222"),
        "{log}"
    );
    assert!(log.contains(&format!("Rollback-Of: {undone}")), "{log}");
    assert!(log.contains(&format!("Source-Commit: {SHA2}")), "{log}");
}

#[test]
fn rollback_to_a_source_commit_passes_the_ordering_guard_and_plan_pushes_nothing() {
    let devops = three_promotions();
    let before = devops.head();
    Run::tomoda(&devops)
        .args(["rollback", "--env", "dev", "--to", "1111111", "--plan"])
        .run()
        .ok()
        .stdout_has(&format!("-    newTag: \"{SHA3}\" # set by CI"))
        .stdout_has(&format!("+    newTag: \"{SHA1}\" # set by CI"))
        .stdout_has("rollback(dev): tomoda-backend 3333333 -> 1111111")
        .stdout_has("plan only");
    assert_eq!(devops.head(), before, "--plan pushes nothing");
    Run::tomoda(&devops)
        .args(["rollback", "--env", "dev", "--to", SHA1])
        .run()
        .ok();
    assert_eq!(devops.file(DEV), dev_with(SHA1));
    let log = devops.log();
    assert_eq!(log.matches("Rollback-Of: ").count(), 2, "{log}");
    let rolled_back = devops.head();
    Run::tomoda(&devops)
        .args(["rollback", "--env", "dev", "--to", SHA1])
        .run()
        .ok()
        .stdout_has(
            "dev: already at 1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: nothing to roll back",
        );
    assert_eq!(devops.head(), rolled_back, "a rerun is harmless");
    Run::tomoda(&devops)
        .args(["rollback", "--env", "dev", "--to", "v9.9.9"])
        .run()
        .code(2)
        .stderr_has("no promotion of dev to `v9.9.9`");
}

#[test]
fn rollback_with_hold_keeps_the_next_build_off_until_unhold() {
    let devops = three_promotions();
    Run::tomoda(&devops)
        .args([
            "rollback",
            "--env",
            "dev",
            "--hold",
            "--reason",
            "3333333 leaks memory",
        ])
        .env("USER", "alice")
        .run()
        .ok()
        .stdout_has("hold dev: pushed ");
    assert_eq!(devops.file(DEV), dev_with(SHA2));
    let holds = devops.file(".promote/holds.yaml");
    assert!(holds.contains("  - environment: \"dev\"\n    reason: \"3333333 leaks memory\"\n    who: \"alice\"\n    since: \""), "{holds}");
    let held_at = devops.head();

    let done = Run::tomoda(&devops)
        .sha(SHA)
        .args(["--output", "json"])
        .run();
    let v = done.ok().json();
    assert_eq!(v["skipped"], "held");
    assert_eq!(v["pushed"], false);
    assert_eq!(v["hold"]["reason"], "3333333 leaks memory");
    assert_eq!(devops.head(), held_at, "nothing pushed while held");
    Run::tomoda(&devops)
        .sha(SHA)
        .run()
        .ok()
        .stdout_has("dev: skipped: held since ")
        .stdout_has("by alice: 3333333 leaks memory");
    // Other environments still promote.
    Run::tomoda(&devops)
        .sha(SHA)
        .env("TAG_NAME", "v1.5.0")
        .run()
        .ok()
        .stdout_has("pushed ");

    Run::tomoda(&devops)
        .args(["unhold", "--env", "dev"])
        .run()
        .ok()
        .stdout_has("unhold dev: pushed ");
    assert!(!devops.file(".promote/holds.yaml").contains("dev"));
    Run::tomoda(&devops)
        .sha(SHA)
        .run()
        .ok()
        .stdout_has("pushed ");
    assert_eq!(devops.file(DEV), dev_with(SHA));
    Run::tomoda(&devops)
        .args(["unhold", "--env", "dev"])
        .run()
        .ok()
        .stdout_has("unhold dev: nothing to change");
}

#[test]
fn hold_lives_where_holds_file_says_and_needs_env() {
    let devops = Devops::tomoda();
    let config = format!(
        "holds_file: ops/holds.yaml\n{}",
        tomoda_config(&devops.url())
    );
    Run::new()
        .config(&config)
        .args([
            "hold",
            "--env",
            "prod",
            "--reason",
            "freeze for the audit",
            "--plan",
        ])
        .run()
        .ok()
        .stdout_has("+++ b/ops/holds.yaml")
        .stdout_has("hold(prod): freeze for the audit")
        .stdout_has("plan only");
    assert_eq!(devops.commit_count(), 1, "--plan pushes nothing");
    Run::new()
        .config(&config)
        .args(["hold", "--env", "prod", "--reason", "freeze for the audit"])
        .run()
        .ok();
    assert!(
        devops
            .file("ops/holds.yaml")
            .contains("freeze for the audit")
    );
    Run::new()
        .config(&config)
        .sha(SHA)
        .env("TAG_NAME", "v1.5.0")
        .run()
        .ok()
        .stdout_has("prod: skipped: held");
    assert_eq!(devops.file(PROD), tomoda_file(PROD));
    Run::new()
        .config(&config)
        .args(["hold", "--reason", "x"])
        .run()
        .code(2)
        .stderr_has("`hold` needs --env NAME");
}

#[test]
fn a_rollback_asked_as_a_request_needs_a_forge_and_pushes_nothing_without_one() {
    let devops = three_promotions();
    let before = devops.head();
    for command in [
        &["rollback", "--env", "dev"][..],
        &["hold", "--env", "dev", "--reason", "incident"][..],
    ] {
        Run::tomoda(&devops)
            .args(command)
            .args(["--pull-request"])
            .run()
            .code(2)
            .stderr_has("a pull request needs the forge's API");
        assert_eq!(devops.head(), before, "{command:?}: nothing pushed");
    }
}
