//! Issue 7's targets through the real git server: Helm values by key path, plain
//! manifests by image, several targets in one commit, prod in another repository, and
//! `--set` without a config.

use yaml_rust2::{Yaml, YamlLoader};

use crate::dsl::*;

const VALUES: &str = "microservice-identity/values-dev.yaml";
const VALUES_TEXT: &str = "# Default values for microservice-identity.\nreplicaCount: 2   # two pods\n\nimage:\n  repository: asia-east1-docker.pkg.dev/orofi/infra/identity\n  # set by CI: the commit built\n  tag: \"0a1b2c3d4e5f60718293a4b5c6d7e8f901234567\"\n  pullPolicy: 'IfNotPresent'\n\nenv:\n  - name: LOG_LEVEL\n    value: 'info'   # keep quiet\n";

const LICENSE_IMAGE: &str = "asia-docker.pkg.dev/license/apps/license-api";
const MANIFEST: &str = "k8s/license-api/manifests.yaml";

fn manifest_text() -> String {
    format!(
        "# license-api: set by hand with kubectl until now\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: license-api\nspec:\n  selector:\n    matchLabels: {{app: license-api}}\n  template:\n    metadata:\n      labels: {{app: license-api}}\n    spec:\n      containers:\n        - name: api\n          image: \"{LICENSE_IMAGE}:1.4.0\"   # the API\n        - name: proxy\n          image: envoyproxy/envoy:v1.29.0\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: license-report\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n            - name: report\n              image: {LICENSE_IMAGE}:1.4.0\n          restartPolicy: OnFailure\n"
    )
}

/// A config whose dev environment sets `image.tag` of the values file to the commit.
fn values_config(repo: &str) -> String {
    format!(
        r#"repo: {repo}
environments:
  dev:
    when: commit
    files:
      - path: {VALUES}
        set:
          image.tag: "{{commit_sha}}"
"#
    )
}

fn parse(text: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text).expect("the file is YAML")
}

/// The files the last commit of main changed.
fn changed_by_last_commit(devops: &Devops) -> Vec<String> {
    let mut files: Vec<String> = git(&devops.bare(), &["diff", "--name-only", "main^", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    files
}

#[test]
fn helm_values_are_edited_byte_exact_keeping_comments_and_quotes() {
    let devops = Devops::with_files(&[(VALUES, VALUES_TEXT)]);
    let done = Run::new()
        .config(&values_config(&devops.url()))
        .sha(SHA)
        .args(["--output", "json"])
        .run();
    let json = done.ok().json();
    assert_eq!(
        json["changes"],
        serde_json::json!([{"file": VALUES, "image": null, "field": "image.tag", "old": OLD_SHA, "new": SHA}])
    );
    assert_eq!(json["pushed"], true);

    let text = devops.file(VALUES);
    assert_eq!(
        text,
        VALUES_TEXT.replace(OLD_SHA, SHA),
        "only the tag's bytes"
    );
    let doc = &parse(&text)[0];
    assert_eq!(doc["image"]["tag"].as_str(), Some(SHA));
    assert_eq!(
        doc["image"]["repository"].as_str(),
        Some("asia-east1-docker.pkg.dev/orofi/infra/identity")
    );
    assert_eq!(doc["image"]["pullPolicy"].as_str(), Some("IfNotPresent"));
    assert_eq!(doc["replicaCount"].as_i64(), Some(2));
    assert_eq!(doc["env"][0]["value"].as_str(), Some("info"));

    assert_eq!(devops.commit_count(), 2);
    let log = devops.log();
    assert!(
        log.contains("promote(dev): values-dev.yaml image.tag 0a1b2c3 -> 4d5e6f7\n"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Set in {VALUES}:\n  image.tag: {OLD_SHA} -> {SHA}\n"
        )),
        "{log}"
    );

    // A rerun finds the value in place.
    let head = devops.head();
    Run::new()
        .config(&values_config(&devops.url()))
        .sha(SHA)
        .run()
        .ok()
        .stdout_has(&format!("already up to date: {VALUES}"));
    assert_eq!(devops.head(), head);
}

#[test]
fn a_multi_document_manifest_gets_its_deployment_and_cronjob_images_set() {
    let devops = Devops::with_files(&[(MANIFEST, manifest_text())]);
    let config = format!(
        r#"repo: {}
environments:
  prod:
    when: '^\d+\.\d+\.\d+$'
    files:
      - path: {MANIFEST}
        images:
          - name: {LICENSE_IMAGE}
            tag: "{{tag_name}}"
"#,
        devops.url()
    );
    let done = Run::new()
        .config(&config)
        .sha(SHA)
        .env("TAG_NAME", "1.5.0")
        .run();
    done.ok()
        .stdout_has(&format!("prod: {MANIFEST}\n"))
        .stdout_has(&format!(
            "  {LICENSE_IMAGE} at spec.jobTemplate.spec.template.spec.containers[0].image: {LICENSE_IMAGE}:1.4.0 -> {LICENSE_IMAGE}:1.5.0\n"
        ));

    let text = devops.file(MANIFEST);
    assert_eq!(
        text,
        manifest_text().replace(
            &format!("{LICENSE_IMAGE}:1.4.0"),
            &format!("{LICENSE_IMAGE}:1.5.0")
        )
    );
    let docs = parse(&text);
    assert_eq!(docs.len(), 2);
    let containers = &docs[0]["spec"]["template"]["spec"]["containers"];
    let wanted = format!("{LICENSE_IMAGE}:1.5.0");
    assert_eq!(containers[0]["image"].as_str(), Some(wanted.as_str()));
    assert_eq!(
        containers[1]["image"].as_str(),
        Some("envoyproxy/envoy:v1.29.0"),
        "another image stays"
    );
    assert_eq!(docs[1]["kind"].as_str(), Some("CronJob"));
    assert_eq!(
        docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str(),
        Some(wanted.as_str())
    );
    assert!(
        devops
            .log()
            .starts_with("tomoda-promote <tomoda-promote@users.noreply.github.com>\npromote(prod): license-api 1.4.0 -> 1.5.0\n"),
        "{}",
        devops.log()
    );
}

#[test]
fn a_missing_key_path_is_exit_2_naming_the_file_and_the_missing_part_and_pushes_nothing() {
    let devops = Devops::with_files(&[(VALUES, VALUES_TEXT)]);
    let head = devops.head();
    let config = values_config(&devops.url()).replace("image.tag:", "image.tags:");
    Run::new()
        .config(&config)
        .sha(SHA)
        .run()
        .code(2)
        .stderr_has(&format!(
            "{VALUES}:5: key path `image.tags`: `image` has no key `tags`"
        ))
        .stderr_has("never creates keys");
    Run::new()
        .args(["--repo", &devops.url()])
        .args(["--set", &format!("{VALUES}:images.tag=v2")])
        .run()
        .code(2)
        .stderr_has(&format!(
            "{VALUES}:2: key path `images.tag`: the document has no key `images`"
        ));
    Run::new()
        .args(["--repo", &devops.url()])
        .args(["--set", "charts/none/values.yaml:image.tag=v2"])
        .run()
        .code(2)
        .stderr_has("charts/none/values.yaml: no such file in branch main of");
    assert_eq!(devops.head(), head, "nothing pushed");
    assert_eq!(devops.file(VALUES), VALUES_TEXT);
}

/// Ten services' values files, and a config setting `image.tag` in each; `bad` names the
/// one whose key path is misspelled, if any.
fn ten_services(repo: &str, bad: Option<usize>) -> String {
    let mut config = format!("repo: {repo}\nenvironments:\n  dev:\n    when: commit\n    files:\n");
    for n in 0..10 {
        let key = if bad == Some(n) {
            "image.tagz"
        } else {
            "image.tag"
        };
        config.push_str(&format!(
            "      - path: services/svc-{n}/values.yaml\n        set:\n          {key}: \"{{short_sha}}\"\n"
        ));
    }
    config
}

#[test]
fn ten_targets_land_in_one_commit_or_with_one_invalid_nothing_does() {
    let files: Vec<(String, String)> = (0..10)
        .map(|n| {
            (
                format!("services/svc-{n}/values.yaml"),
                format!("image:\n  repository: reg/svc-{n}\n  tag: old-{n}  # by CI\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let devops = Devops::with_files(&refs);
    let head = devops.head();

    Run::new()
        .config(&ten_services(&devops.url(), Some(7)))
        .sha(SHA)
        .run()
        .code(2)
        .stderr_has("services/svc-7/values.yaml:")
        .stderr_has("has no key `tagz`");
    assert_eq!(devops.head(), head, "nothing pushed");
    for (path, content) in &files {
        assert_eq!(&devops.file(path), content);
    }

    let done = Run::new()
        .config(&ten_services(&devops.url(), None))
        .sha(SHA)
        .args(["--output", "json"])
        .run();
    let json = done.ok().json();
    assert_eq!(json["changes"].as_array().unwrap().len(), 10);
    assert_eq!(devops.commit_count(), 2, "one commit for all ten");
    let mut expected: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    expected.sort();
    assert_eq!(changed_by_last_commit(&devops), expected);
    for (n, (path, content)) in files.iter().enumerate() {
        assert_eq!(
            devops.file(path),
            content.replace(&format!("old-{n}"), "4d5e6f7")
        );
        assert_eq!(json["changes"][n]["file"], path.as_str());
    }
}

#[test]
fn an_overlay_and_a_values_file_land_as_one_commit() {
    let mut files = tomoda_files();
    files.push((VALUES, VALUES_TEXT.to_string()));
    let devops = Devops::with_files(&files);
    let config = format!(
        r#"repo: {}
environments:
  dev:
    when: commit
    overlay: k8s/apps/tomoda/overlays/dev
    images:
      - name: {IMAGE}
        tag: "{{commit_sha}}"
    files:
      - path: {VALUES}
        set:
          image.tag: "{{commit_sha}}"
"#,
        devops.url()
    );
    let done = Run::new().config(&config).sha(SHA).run();
    done.ok()
        .stdout_has(&format!(
            "dev: {DEV}\n  {IMAGE} newTag: {OLD_SHA} -> {SHA}\ndev: {VALUES}\n  image.tag: {OLD_SHA} -> {SHA}\npushed "
        ));
    assert_eq!(devops.commit_count(), 2, "one commit");
    let mut expected = vec![DEV.to_string(), VALUES.to_string()];
    expected.sort();
    assert_eq!(changed_by_last_commit(&devops), expected);
    assert_eq!(devops.file(DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
    assert_eq!(devops.file(VALUES), VALUES_TEXT.replace(OLD_SHA, SHA));
    let log = devops.log();
    assert!(
        log.contains("promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7, values-dev.yaml image.tag 0a1b2c3 -> 4d5e6f7\n"),
        "{log}"
    );
    let checkout = devops.checkout();
    let rendered = kustomize_render(checkout.path(), "k8s/apps/tomoda/overlays/dev");
    assert!(
        rendered.contains(&format!("image: {IMAGE}:{SHA}")),
        "{rendered}"
    );

    // Both in place: the whole run is up to date.
    let head = devops.head();
    Run::new()
        .config(&config)
        .sha(SHA)
        .run()
        .ok()
        .stdout_has(&format!(
            "dev: already up to date: {DEV}, {VALUES} in branch main of"
        ));
    assert_eq!(devops.head(), head);
}

#[test]
fn a_branch_moved_mid_push_gets_every_target_reapplied_on_the_new_tip() {
    let mut files = tomoda_files();
    files.push((VALUES, VALUES_TEXT.to_string()));
    let devops = std::sync::Arc::new(Devops::with_files(&files));
    let other = std::sync::Arc::clone(&devops);
    let mut fired = false;
    devops.server.before_request(move |request| {
        if !fired && request.starts_with("POST /devops.git/git-receive-pack") {
            fired = true;
            other.commit(
                &[(
                    VALUES,
                    VALUES_TEXT.replace("replicaCount: 2", "replicaCount: 3"),
                )],
                "another pipeline scales identity",
            );
        }
    });
    let done = Run::new()
        .args(["--repo", &devops.url(), "--output", "json"])
        .args(["--overlay", "k8s/apps/tomoda/overlays/dev"])
        .args(["--image", &format!("{IMAGE}:{SHA}")])
        .args(["--set", &format!("{VALUES}:image.tag={SHA}")])
        .run();
    assert_eq!(done.ok().json()["attempts"], 2, "{}", done.stderr);
    assert_eq!(devops.commit_count(), 3);
    assert_eq!(
        devops.file(VALUES),
        VALUES_TEXT
            .replace("replicaCount: 2", "replicaCount: 3")
            .replace(OLD_SHA, SHA),
        "theirs and ours"
    );
    assert!(devops.file(DEV).contains(SHA));
    devops.server.before_request(|_| {});
}

#[test]
fn prod_may_live_in_a_second_repository() {
    let dev_repo = Devops::tomoda();
    let prod_repo = Devops::tomoda();
    let config = tomoda_config(&dev_repo.url()).replace(
        "  prod:\n",
        &format!("  prod:\n    repo: {}\n    branch: main\n", prod_repo.url()),
    );
    let (dev_head, prod_head) = (dev_repo.head(), prod_repo.head());

    Run::new()
        .config(&config)
        .sha(SHA)
        .env("TAG_NAME", "v1.5.0")
        .run()
        .ok()
        .stdout_has(&format!("to branch main of {}", prod_repo.url()));
    assert_eq!(
        prod_repo.file(PROD),
        tomoda_file(PROD).replace("v1.4.0", "v1.5.0")
    );
    assert_eq!(dev_repo.head(), dev_head, "the dev repo is not touched");

    Run::new().config(&config).sha(SHA).run().ok();
    assert!(dev_repo.file(DEV).contains(SHA));
    assert_eq!(prod_repo.commit_count(), 2, "only the release");
    assert_ne!(prod_repo.head(), prod_head);
    assert_eq!(prod_repo.file(DEV), tomoda_file(DEV));
}

#[test]
fn set_flags_promote_without_a_config() {
    let manifest = "web.yaml";
    let web = "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: sidecar\n          image: envoy:1.29\n        - name: api\n          image: 'reg.io/acme/api:v1'\n";
    let devops = Devops::with_files(&[(VALUES, VALUES_TEXT), (manifest, web)]);
    let done = Run::new()
        .args(["--repo", &devops.url(), "--output", "json"])
        .args(["--set", &format!("{VALUES}:image.tag=1.10")])
        .args([
            "--set",
            &format!("{manifest}:spec.template.spec.containers[name=api].image=reg.io/acme/api:v2"),
        ])
        .run();
    let json = done.ok().json();
    assert_eq!(json["environment"], "default");
    assert_eq!(
        json["changes"],
        serde_json::json!([
            {"file": VALUES, "image": null, "field": "image.tag", "old": OLD_SHA, "new": "1.10"},
            {"file": manifest, "image": null, "field": "spec.template.spec.containers[name=api].image", "old": "reg.io/acme/api:v1", "new": "reg.io/acme/api:v2"},
        ])
    );
    assert_eq!(devops.commit_count(), 2);
    // `1.10` would read as a number: its double quotes stay.
    assert_eq!(devops.file(VALUES), VALUES_TEXT.replace(OLD_SHA, "1.10"));
    assert_eq!(
        parse(&devops.file(VALUES))[0]["image"]["tag"].as_str(),
        Some("1.10")
    );
    assert_eq!(devops.file(manifest), web.replace("api:v1'", "api:v2'"));
}

#[test]
fn a_plain_directory_is_planned_with_every_target() {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in [
        (VALUES, VALUES_TEXT.to_string()),
        (MANIFEST, manifest_text()),
    ] {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    let config = format!(
        r#"repo: {}
environments:
  dev:
    when: commit
    files:
      - path: {VALUES}
        set:
          image.tag: "{{commit_sha}}"
      - path: {MANIFEST}
        images:
          - name: {LICENSE_IMAGE}
            tag: "{{short_sha}}"
"#,
        dir.path().display()
    );
    Run::new()
        .config(&config)
        .sha(SHA)
        .args(["--plan"])
        .run()
        .ok()
        .stdout_has(&format!("--- a/{VALUES}\n+++ b/{VALUES}\n"))
        .stdout_has(&format!("+  tag: \"{SHA}\"\n"))
        .stdout_has(&format!("--- a/{MANIFEST}\n+++ b/{MANIFEST}\n"))
        .stdout_has(&format!("+              image: {LICENSE_IMAGE}:4d5e6f7\n"))
        .stdout_has("promote(dev): license-api 1.4.0 -> 4d5e6f7, values-dev.yaml image.tag 0a1b2c3 -> 4d5e6f7")
        .stdout_has("nothing was committed or pushed");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(VALUES)).unwrap(),
        VALUES_TEXT
    );
}

#[test]
fn credentials_in_an_environment_repo_never_show() {
    let secret = "s3cr3t-environment-token";
    // `https//` is no URL but a local path, which the error names: masked all the same.
    for (repo, code) in [
        (format!("https//ci:{secret}@github.com/o/prod.git"), 2),
        (format!("htps://ci:{secret}@github.com/o/prod.git"), 2),
        (format!("http://ci:{secret}@127.0.0.1:9/prod.git"), 1),
    ] {
        let config = format!(
            "repo: https://github.com/o/dev.git\nenvironments:\n  prod:\n    when: commit\n    repo: {repo}\n    files:\n      - path: {VALUES}\n        set:\n          image.tag: v2\n"
        );
        let done = Run::new().config(&config).sha(SHA).run();
        done.code(code).never_shows(secret);
        assert!(
            done.stderr.contains("tomoda-promote: error:"),
            "{}",
            done.stderr
        );
    }
}

#[test]
fn two_promoters_racing_with_overlapping_targets_both_land_whole() {
    let overlay = "k8s/apps/tomoda/overlays/dev";
    let values = "charts/app/values-dev.yaml";
    let devops = Devops::with_files(&[
        (
            DEV,
            "images:\n  - name: reg/a\n    newTag: a0\n  - name: reg/b\n    newTag: b0\n",
        ),
        (values, "a:\n  tag: a0\nb:\n  tag: b0\n"),
    ]);
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            Run::new()
                .args(["--repo", &devops.url(), "--overlay", overlay])
                .args(["--image", &format!("reg/{name}:{name}1")])
                .args(["--set", &format!("{values}:{name}.tag={name}1")])
                .sha(SHA)
                .spawn()
        })
        .collect();
    for (child, _cwd) in children {
        Done::from(child.wait_with_output().unwrap()).ok();
    }
    assert_eq!(
        devops.file(DEV),
        "images:\n  - name: reg/a\n    newTag: a1\n  - name: reg/b\n    newTag: b1\n"
    );
    assert_eq!(devops.file(values), "a:\n  tag: a1\nb:\n  tag: b1\n");
    assert_eq!(devops.commit_count(), 3, "one commit each");
    for commit in ["main", "main^"] {
        let files = git(
            &devops.bare(),
            &["diff", "--name-only", &format!("{commit}^"), commit],
        );
        assert_eq!(
            files.lines().count(),
            2,
            "{commit} holds both files: {files}"
        );
    }
}

#[test]
fn a_kustomization_named_in_files_gets_its_images_and_kustomize_renders_them() {
    // wecare's shape: two images bumped to one tag, in the kustomization file itself.
    let frontend = "asia-east1-docker.pkg.dev/development-485000/tomoda-dev-repo/tomoda-frontend";
    let mut files = tomoda_files();
    files.push((
        "k8s/apps/tomoda/base/frontend-deployment.yaml",
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tomoda-web\nspec:\n  selector:\n    matchLabels: {{app: tomoda-web}}\n  template:\n    metadata:\n      labels: {{app: tomoda-web}}\n    spec:\n      containers:\n        - name: web\n          image: {frontend}:latest\n"
        ),
    ));
    files.retain(|(p, _)| *p != "k8s/apps/tomoda/base/kustomization.yaml");
    files.push((
        "k8s/apps/tomoda/base/kustomization.yaml",
        "resources:\n  - backend-deployment.yaml\n  - frontend-deployment.yaml\n".into(),
    ));
    let devops = Devops::with_files(&files);
    let config = format!(
        r#"repo: {}
environments:
  dev:
    when: commit
    files:
      - path: {DEV}
        images:
          - name: {IMAGE}
            tag: "{{short_sha}}"
          - name: {frontend}
            tag: "{{short_sha}}"
"#,
        devops.url()
    );
    Run::new().config(&config).sha(SHA).run().ok();
    assert_eq!(devops.commit_count(), 2);
    assert_eq!(
        devops.file(DEV),
        format!(
            "# dev follows main\nresources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newTag: \"4d5e6f7\" # set by CI\n  - name: {frontend}\n    newTag: 4d5e6f7\n"
        )
    );
    assert!(
        devops.log().contains(
            "promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7, tomoda-frontend (none) -> 4d5e6f7\n"
        ),
        "{}",
        devops.log()
    );
    let checkout = devops.checkout();
    let rendered = kustomize_render(checkout.path(), "k8s/apps/tomoda/overlays/dev");
    for image in [IMAGE, frontend] {
        assert!(
            rendered.contains(&format!("image: {image}:4d5e6f7\n")),
            "{rendered}"
        );
    }
}

#[test]
fn image_flags_take_kustomizes_star_to_keep_a_value() {
    // prod is renamed and pinned; `name=*:TAG@*` keeps newName and the digest, as
    // `kustomize edit set image` reads the `*`.
    let digest = format!("sha256:{}", "d".repeat(64));
    let prod = format!(
        "resources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newName: {PROD_IMAGE}\n    newTag: v1.4.0   # current release\n    digest: {digest}\n"
    );
    let devops = Devops::with_files(&tomoda_files_with(PROD, &prod));
    Run::new()
        .args([
            "--repo",
            &devops.url(),
            "--overlay",
            "k8s/apps/tomoda/overlays/prod",
        ])
        .args(["--image", &format!("{IMAGE}=*:v1.5.0@*")])
        .sha(SHA)
        .run()
        .ok();
    assert_eq!(devops.file(PROD), prod.replace("v1.4.0", "v1.5.0"));
    let rendered = kustomize_render(devops.checkout().path(), "k8s/apps/tomoda/overlays/prod");
    assert!(
        rendered.contains(&format!("image: {PROD_IMAGE}:v1.5.0@{digest}\n")),
        "{rendered}"
    );
    // `name=NEW:*` renames and keeps the tag.
    Run::new()
        .args([
            "--repo",
            &devops.url(),
            "--overlay",
            "k8s/apps/tomoda/overlays/prod",
        ])
        .args(["--image", &format!("{IMAGE}=reg.example/tomoda/backend:*")])
        .sha(SHA)
        .run()
        .ok();
    let rendered = kustomize_render(devops.checkout().path(), "k8s/apps/tomoda/overlays/prod");
    assert!(
        rendered.contains(&format!(
            "image: reg.example/tomoda/backend:v1.5.0@{digest}\n"
        )),
        "{rendered}"
    );
}

#[test]
fn a_star_in_promote_yaml_keeps_a_value_as_the_image_flag_does() {
    // prod is renamed and pinned; the release keeps both, as `--image NAME=*:TAG@*` would.
    let digest = format!("sha256:{}", "d".repeat(64));
    let prod = format!(
        "resources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newName: {PROD_IMAGE}\n    newTag: v1.4.0   # current release\n    digest: {digest}\n"
    );
    let devops = Devops::with_files(&tomoda_files_with(PROD, &prod));
    let config = tomoda_config(&devops.url()).replace(
        &format!("        new_name: {PROD_IMAGE}\n"),
        "        new_name: \"*\"\n        digest: \"*\"\n",
    );
    Run::new()
        .config(&config)
        .sha(SHA)
        .env("TAG_NAME", "v1.5.0")
        .run()
        .ok();
    assert_eq!(devops.file(PROD), prod.replace("v1.4.0", "v1.5.0"));
    let rendered = kustomize_render(devops.checkout().path(), "k8s/apps/tomoda/overlays/prod");
    assert!(
        rendered.contains(&format!("image: {PROD_IMAGE}:v1.5.0@{digest}\n")),
        "{rendered}"
    );
}

#[test]
fn help_shows_set_and_the_star_of_image() {
    let done = Run::new().args(["--help"]).run();
    let flat = done
        .ok()
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for shown in [
        "--set <FILE:PATH=VALUE>",
        "[env: PROMOTE_SET=]",
        "containers[name=api].image",
        "`*` keeps the entry's value (name=*:v2, name:v2@*)",
    ] {
        assert!(flat.contains(shown), "{shown:?} not in:\n{}", done.stdout);
    }
}
