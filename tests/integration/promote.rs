//! Promotions that succeed: what lands on the branch, byte for byte.

use crate::dsl::*;

#[test]
fn a_commit_build_promotes_dev_with_one_commit_that_changes_only_the_tag() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let done = Run::tomoda(&devops)
        .sha(SHA)
        .env("BUILD_ID", "build-77")
        .env("REPO_NAME", "tomoda")
        .run();
    done.ok()
        .stdout_has("pushed ")
        .stdout_has("to branch main of http://127.0.0.1:");

    let expected = tomoda_file(DEV).replace(OLD_SHA, SHA);
    assert_eq!(devops.file(DEV), expected);
    assert_eq!(devops.file(PROD), tomoda_file(PROD), "prod untouched");
    assert_eq!(devops.commit_count(), 2);
    assert_eq!(git(&devops.bare(), &["rev-parse", "main^"]).trim(), before);
    assert_renders(&devops, "dev", &format!("image: {IMAGE}:{SHA}"));
    let changed = git(&devops.bare(), &["diff", "--name-only", "main^", "main"]);
    assert_eq!(changed.trim(), DEV);

    let log = devops.log();
    assert!(log.starts_with("tomoda-promote <tomoda-promote@users.noreply.github.com>\npromote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7\n"), "{log}");
    for trailer in [
        format!("Promoted-Image: {IMAGE}:{SHA}"),
        format!("Source-Commit: {SHA}"),
        "Build-Id: build-77".to_string(),
        "Source repository: tomoda".to_string(),
    ] {
        assert!(log.contains(&trailer), "{trailer} missing in\n{log}");
    }
}

#[test]
fn a_release_tag_promotes_prod_keeping_new_name_and_kustomize_renders_it() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .sha(SHA)
        .env("TAG_NAME", "v1.5.0")
        .args(["--author", "Release Bot <release@tomoda.example>"])
        .run()
        .ok();
    assert_eq!(
        devops.file(PROD),
        tomoda_file(PROD).replace("v1.4.0", "v1.5.0")
    );
    assert_eq!(devops.file(DEV), tomoda_file(DEV), "dev untouched");
    let log = devops.log();
    assert!(
        log.starts_with(
            "Release Bot <release@tomoda.example>\npromote(prod): tomoda-backend v1.4.0 -> v1.5.0\n"
        ),
        "{log}"
    );
    assert!(log.contains("Source-Tag: v1.5.0"), "{log}");

    assert_renders(&devops, "prod", &format!("image: {PROD_IMAGE}:v1.5.0"));
}

#[test]
fn comments_quotes_crlf_and_utf8_stay_byte_for_byte() {
    let original = format!(
        "# Überblick: dev overlay — 開発\r\napiVersion: kustomize.config.k8s.io/v1beta1\r\nkind: Kustomization\r\n\r\nresources:\r\n    - ../../base   # base\r\n\r\nimages:\r\n    -   name: \"{IMAGE}\"   # the API\r\n        newName: '{IMAGE}'\r\n        newTag: 'old-tag'    # written by CI ✓\r\n    - name: other/image\r\n      newTag: keep\r\n# end\r\n"
    );
    let devops = Devops::with_files(&[(DEV, original.as_str())]);
    Run::tomoda(&devops).sha(SHA).run().ok();
    assert_eq!(
        devops.file(DEV),
        original.replace("'old-tag'", &format!("'{SHA}'"))
    );
}

#[test]
fn a_missing_entry_is_appended_and_a_missing_images_key_is_added() {
    let devops = Devops::with_files(&[
        (
            DEV,
            "resources:\n  - ../../base\nimages:\n  - name: other\n    newTag: a\n".to_string(),
        ),
        (PROD, "resources:\n- ../../base\n".to_string()),
    ]);
    Run::tomoda(&devops).sha(SHA).run().ok();
    assert_eq!(
        devops.file(DEV),
        format!(
            "resources:\n  - ../../base\nimages:\n  - name: other\n    newTag: a\n  - name: {IMAGE}\n    newTag: {SHA}\n"
        )
    );
    Run::tomoda(&devops)
        .sha(SHA)
        .env("TAG_NAME", "v2.0.0")
        .run()
        .ok();
    assert_eq!(
        devops.file(PROD),
        format!(
            "resources:\n- ../../base\nimages:\n- name: {IMAGE}\n  newName: {PROD_IMAGE}\n  newTag: v2.0.0\n"
        )
    );
}

#[test]
fn a_rerun_is_already_up_to_date_and_commits_nothing() {
    let devops = Devops::tomoda();
    let config = tomoda_config(&devops.url());
    Run::new().config(&config).sha(SHA).run().ok();
    let head = devops.head();
    let done = Run::new()
        .config(&config)
        .sha(SHA)
        .args(["--output", "json"])
        .run();
    done.ok();
    let json = done.json();
    assert_eq!(json["up_to_date"], true);
    assert_eq!(json["pushed"], false);
    assert_eq!(json["commit"], serde_json::Value::Null);
    assert_eq!(devops.head(), head);
    Run::new()
        .config(&config)
        .sha(SHA)
        .run()
        .ok()
        .stdout_has("already up to date");
}

#[test]
fn plan_shows_the_diff_and_message_and_pushes_nothing() {
    let devops = Devops::tomoda();
    let head = devops.head();
    let requests_before = devops.server.request_count();
    let done = Run::tomoda(&devops).sha(SHA).args(["--plan"]).run();
    done.ok()
        .stdout_has(&format!("--- a/{DEV}\n+++ b/{DEV}\n"))
        .stdout_has(&format!(
            "-    newTag: \"{OLD_SHA}\" # set by CI\n+    newTag: \"{SHA}\" # set by CI\n"
        ))
        .stdout_has("promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7")
        .stdout_has("nothing was committed or pushed");
    assert_eq!(devops.head(), head);
    let pushes = devops
        .server
        .requests()
        .iter()
        .skip(requests_before)
        .filter(|r| r.contains("receive-pack"))
        .count();
    assert_eq!(pushes, 0, "{:?}", devops.server.requests());
}

#[test]
fn json_output_reports_the_change_and_the_commit() {
    let devops = Devops::tomoda();
    let done = Run::tomoda(&devops)
        .sha(SHA)
        .args(["--output", "json"])
        .run();
    let json = done.ok().json();
    assert_eq!(json["environment"], "dev");
    assert_eq!(json["repo"], devops.url());
    assert_eq!(json["branch"], "main");
    assert_eq!(json["pushed"], true);
    assert_eq!(json["up_to_date"], false);
    assert_eq!(json["plan"], false);
    assert_eq!(json["attempts"], 1);
    assert_eq!(json["commit"], devops.head());
    assert_eq!(
        json["changes"],
        serde_json::json!([{"file": DEV, "image": IMAGE, "field": "newTag", "old": OLD_SHA, "new": SHA}])
    );
}

#[test]
fn four_promoters_racing_on_one_branch_all_land() {
    // Two promoters of different images race on one branch: both must land.
    let files = [(
        DEV,
        "images:\n  - name: reg/a\n    newTag: a0\n  - name: reg/b\n    newTag: b0\n  - name: reg/c\n    newTag: c0\n  - name: reg/d\n    newTag: d0\n".to_string(),
    )];
    let devops = Devops::with_files(&files);
    let overlay = "k8s/apps/tomoda/overlays/dev";
    let children: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| {
            Run::new()
                .args([
                    "--repo",
                    &devops.url(),
                    "--overlay",
                    overlay,
                    "--image",
                    &format!("reg/{name}:{name}1"),
                    "--output",
                    "json",
                ])
                .sha(SHA)
                .spawn()
        })
        .collect();
    let mut attempts = Vec::new();
    for (child, _cwd) in children {
        let done = Done::from(child.wait_with_output().unwrap());
        attempts.push(done.ok().json()["attempts"].as_u64().unwrap());
    }
    assert_eq!(
        devops.file(DEV),
        "images:\n  - name: reg/a\n    newTag: a1\n  - name: reg/b\n    newTag: b1\n  - name: reg/c\n    newTag: c1\n  - name: reg/d\n    newTag: d1\n"
    );
    assert_eq!(devops.commit_count(), 5, "one commit each: {attempts:?}");
}

/// Another pipeline pushes at an exact moment of our push; ours must be re-applied on
/// its tip, in a second attempt, and both changes must be on the branch.
fn race_at(moment: &'static str) {
    race_at_with(moment, false);
}

fn race_at_with(moment: &'static str, partial_clone: bool) {
    let devops = std::sync::Arc::new(Devops::tomoda());
    devops.server.allow_filter(partial_clone);
    let other = std::sync::Arc::clone(&devops);
    let mut fired = false;
    devops.server.before_request(move |request| {
        if !fired && request.starts_with(moment) {
            fired = true;
            other.commit(
                &[(PROD, tomoda_file(PROD).replace("v1.4.0", "v1.4.1"))],
                "another pipeline",
            );
        }
    });
    let done = Run::tomoda(&devops)
        .sha(SHA)
        .args(["--output", "json"])
        .run();
    assert_eq!(done.ok().json()["attempts"], 2, "{}", done.stderr);
    done.stderr_has("push refused");
    assert!(
        devops.file(PROD).contains("v1.4.1"),
        "the other pipeline's change stays"
    );
    assert!(devops.file(DEV).contains(SHA), "ours lands");
    assert_eq!(devops.commit_count(), 3);
    devops.server.before_request(|_| {});
}

#[test]
fn a_branch_moved_before_our_push_advertisement_is_refetched_and_retried() {
    race_at("GET /devops.git/info/refs?service=git-receive-pack");
}

#[test]
fn a_branch_moved_while_our_pack_is_in_flight_is_refetched_and_retried() {
    race_at("POST /devops.git/git-receive-pack");
}

#[test]
fn a_hand_edit_on_the_branch_is_kept() {
    let devops = Devops::tomoda();
    devops.commit(
        &[(PROD, tomoda_file(PROD).replace("v1.4.0", "v1.4.1"))],
        "hand edit",
    );
    Run::tomoda(&devops).sha(SHA).run().ok();
    assert!(devops.file(PROD).contains("v1.4.1"));
    assert!(devops.file(DEV).contains(SHA));
    assert_eq!(devops.commit_count(), 3);
}

#[test]
fn a_flags_only_run_needs_no_config() {
    let devops = Devops::tomoda();
    let digest = format!("sha256:{}", "c".repeat(64));
    Run::new()
        .args([
            "--repo",
            &devops.url(),
            "--overlay",
            "k8s/apps/tomoda/overlays/prod",
            "--image",
            &format!("{IMAGE}={PROD_IMAGE}:v3.0.0@{digest}"),
        ])
        .run()
        .ok();
    assert_eq!(
        devops.file(PROD),
        tomoda_file(PROD).replace(
            "v1.4.0   # current release\n",
            &format!("v3.0.0   # current release\n    digest: {digest}\n")
        )
    );
}

#[test]
fn an_older_release_is_skipped_unless_downgrade_is_allowed() {
    let devops = Devops::tomoda();
    let head = devops.head();
    let done = Run::tomoda(&devops)
        .env("TAG_NAME", "v1.3.9")
        .args(["--output", "json"])
        .run();
    let json = done.ok().json();
    assert_eq!(json["skipped"], "older");
    assert_eq!(json["pushed"], false);
    assert_eq!(devops.head(), head, "nothing pushed");
    Run::tomoda(&devops)
        .env("TAG_NAME", "v1.3.9")
        .run()
        .ok()
        .stdout_has("skipped: ")
        .stdout_has("version v1.3.9 is older than v1.4.0")
        .stdout_has("--allow-downgrade");
    Run::tomoda(&devops)
        .env("TAG_NAME", "v1.3.9")
        .args(["--allow-downgrade"])
        .run()
        .ok();
    assert!(devops.file(PROD).contains("newTag: v1.3.9"));
}

#[test]
fn an_older_build_number_is_skipped_and_a_newer_one_promoted() {
    let dev =
        format!("resources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newTag: \"118\"\n");
    let devops = Devops::with_files(&tomoda_files_with(DEV, &dev));
    let head = devops.head();
    let promote = |tag: &str| {
        Run::new()
            .args([
                "--repo",
                &devops.url(),
                "--overlay",
                "k8s/apps/tomoda/overlays/dev",
            ])
            .args(["--image", &format!("{IMAGE}:{tag}")])
            .run()
    };
    promote("99")
        .ok()
        .stdout_has("skipped: ")
        .stdout_has("build number 99 is older than 118")
        .stdout_has("--allow-downgrade");
    assert_eq!(devops.head(), head, "nothing pushed");
    assert_eq!(devops.file(DEV), dev);

    promote("119").ok().stdout_has("pushed ");
    assert_eq!(devops.file(DEV), dev.replace("\"118\"", "\"119\""));
}

#[test]
fn an_older_commit_of_the_checked_out_app_is_skipped() {
    // The build runs inside the app's checkout, as Cloud Build's /workspace is.
    let checkout = tempfile::tempdir().unwrap();
    let app = checkout.path();
    git(app, &["init", "-q", "-b", "main", "."]);
    let mut commits = Vec::new();
    for n in 0..3 {
        git(
            app,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("app change {n}"),
            ],
        );
        commits.push(git(app, &["rev-parse", "HEAD"]).trim().to_string());
    }
    let dev = format!(
        "images:\n  - name: {IMAGE}\n    newTag: \"{}\"\n",
        commits[1]
    );
    let devops = Devops::with_files(&[(DEV, dev.as_str())]);
    let done = Run::new()
        .in_dir(app)
        .config(&tomoda_config(&devops.url()))
        .sha(&commits[0])
        .args(["--output", "json"])
        .run();
    assert_eq!(done.ok().json()["skipped"], "older", "{}", done.stderr);
    assert_eq!(devops.file(DEV), dev);

    Run::tomoda(&devops)
        .sha(&commits[2])
        .args(["--source-repo", app.to_str().unwrap()])
        .run()
        .ok();
    assert!(devops.file(DEV).contains(&commits[2]));
}

#[test]
fn without_the_app_history_a_commit_is_promoted_and_the_reason_logged() {
    let devops = Devops::tomoda();
    Run::tomoda(&devops)
        .sha(SHA)
        .run()
        .ok()
        .stderr_has("cannot tell whether");
    assert!(devops.file(DEV).contains(SHA));
}

#[test]
fn a_name_that_carries_a_tag_is_set_by_flag_and_by_config() {
    // The base Deployment pulls `{IMAGE}:latest`; kustomize v5 matches this entry by it.
    let dev =
        format!("resources:\n  - ../../base\nimages:\n  - name: {IMAGE}:latest\n    newTag: old\n");
    let devops = Devops::with_files(&tomoda_files_with(DEV, &dev));
    let overlay = "k8s/apps/tomoda/overlays/dev";
    Run::new()
        .args(["--repo", &devops.url(), "--overlay", overlay])
        .args(["--image", &format!("{IMAGE}:latest:210")])
        .run()
        .ok();
    assert_eq!(
        devops.file(DEV),
        dev.replace("newTag: old", "newTag: \"210\"")
    );
    assert_renders(&devops, "dev", &format!("image: {IMAGE}:210\n"));

    Run::new()
        .args(["--repo", &devops.url(), "--overlay", overlay])
        .args(["--image", &format!("{IMAGE}:latest={PROD_IMAGE}:211")])
        .run()
        .ok();
    assert_eq!(
        devops.file(DEV),
        dev.replace(
            "newTag: old",
            &format!("newTag: \"211\"\n    newName: {PROD_IMAGE}")
        )
    );
    assert_renders(&devops, "dev", &format!("image: {PROD_IMAGE}:211\n"));

    let config = tomoda_config(&devops.url()).replacen(
        &format!("name: {IMAGE}\n"),
        &format!("name: {IMAGE}:latest\n"),
        1,
    );
    Run::new().config(&config).sha(SHA).run().ok();
    assert!(devops.file(DEV).contains(&format!("newTag: \"{SHA}\"")));
    assert_renders(&devops, "dev", &format!("image: {PROD_IMAGE}:{SHA}\n"));
}

/// What Argo CD would render from the overlay of the pushed branch holds `image`.
fn assert_renders(devops: &Devops, overlay: &str, image: &str) {
    let checkout = devops.checkout();
    let rendered = kustomize_render(
        checkout.path(),
        &format!("k8s/apps/tomoda/overlays/{overlay}"),
    );
    assert!(rendered.contains(image), "{rendered}");
}

/// A server that offers partial clone (GitHub, GitLab) is asked only for what the promotion
/// reads: the tip's commit and root tree, the trees down to the overlay and its file; the
/// push sends only the new commit, trees and file, and the repository stays whole.
#[test]
fn with_partial_clone_only_what_is_read_is_fetched_and_the_repo_stays_whole() {
    let mut files = tomoda_files();
    // Other apps' manifests: what a fetch of the whole tree would bring.
    // Each with a digest-like line that does not compress, as image digests do not.
    let mut seed = 1u64;
    let filler: Vec<(String, String)> = (0..200)
        .map(|n| {
            let digest: String = (0..4)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    format!("{seed:016x}")
                })
                .collect();
            (
                format!("k8s/apps/app{n}/base/deployment.yaml"),
                format!("kind: Deployment\nmetadata:\n  name: app{n}\n# sha256:{digest}\n"),
            )
        })
        .collect();
    files.extend(filler.iter().map(|(p, c)| (p.as_str(), c.clone())));
    let fetched = |partial_clone: bool| {
        let devops = Devops::with_files(&files);
        devops.server.allow_filter(partial_clone);
        let before = devops.server.bytes_sent();
        Run::tomoda(&devops).sha(SHA).run().ok();
        assert!(devops.file(DEV).contains(SHA));
        assert_eq!(devops.commit_count(), 2);
        git(&devops.bare(), &["fsck", "--strict", "--no-dangling"]);
        assert_eq!(
            devops.file("k8s/apps/app7/base/deployment.yaml"),
            filler[7].1,
            "the files not read are untouched"
        );
        devops.server.bytes_sent() - before
    };
    let (partial, whole) = (fetched(true), fetched(false));
    assert!(
        partial * 4 < whole,
        "partial fetch served {partial} bytes, the whole tree {whole}"
    );
}

/// Below the directory of many apps, the app's own directory comes in one fetch with the
/// rest of the path to the overlay, not one fetch per level: ls-refs, the tip, `k8s` (with
/// the listing of `apps`), and the app's directory down to the overlay's file.
#[test]
fn with_partial_clone_the_path_below_a_directory_of_many_apps_is_one_fetch() {
    let mut files = tomoda_files();
    let filler: Vec<(String, String)> = (0..40)
        .map(|n| {
            (
                format!("k8s/apps/app{n}/overlays/dev/kustomization.yaml"),
                format!("images:\n- name: reg/app{n}\n  newTag: v0\n"),
            )
        })
        .collect();
    files.extend(filler.iter().map(|(p, c)| (p.as_str(), c.clone())));
    let devops = Devops::with_files(&files);
    devops.server.allow_filter(true);
    devops.server.allow_ref_in_want(false);
    let before = devops.server.request_count();
    Run::tomoda(&devops).sha(SHA).run().ok();
    assert!(devops.file(DEV).contains(SHA));
    let requests = devops.server.requests()[before..].to_vec();
    let fetches = requests
        .iter()
        .filter(|r| r.starts_with("POST /devops.git/git-upload-pack"))
        .count();
    assert_eq!(fetches, 4, "{requests:#?}");
    git(&devops.bare(), &["fsck", "--strict", "--no-dangling"]);
}

/// A server that takes `want-ref` (GitLab may) names the branch's tip in the fetch of its
/// commit: no `ls-refs` before it.
#[test]
fn with_ref_in_want_the_tip_is_fetched_by_name_without_ls_refs() {
    let devops = Devops::tomoda();
    devops.server.allow_filter(true);
    devops.server.allow_ref_in_want(true);
    let before = devops.server.request_count();
    Run::tomoda(&devops).sha(SHA).run().ok();
    assert!(devops.file(DEV).contains(SHA));
    assert_eq!(devops.commit_count(), 2);
    let requests = devops.server.requests()[before..].to_vec();
    let fetches = requests
        .iter()
        .filter(|r| r.starts_with("POST /devops.git/git-upload-pack"))
        .count();
    // The tip by name, k8s (with apps), the app, its overlays' directory.
    assert_eq!(fetches, 4, "{requests:#?}");
    git(&devops.bare(), &["fsck", "--strict", "--no-dangling"]);

    let done = Run::tomoda(&devops)
        .sha(SHA)
        .args(["--branch", "nope"])
        .run();
    done.code(2).stderr_has("there is no branch nope");
}

#[test]
fn with_partial_clone_a_branch_moved_before_our_push_is_refetched_and_retried() {
    race_at_with("GET /devops.git/info/refs?service=git-receive-pack", true);
}

#[test]
fn with_partial_clone_a_branch_moved_mid_push_is_refetched_and_retried() {
    race_at_with("POST /devops.git/git-receive-pack", true);
}
