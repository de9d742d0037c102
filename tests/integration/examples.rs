//! Every example under `examples/` runs as its README says, offline, and plans the change
//! its seed shape needs: the command is read from the README, so a README that drifts from
//! the example fails here.

use std::path::Path;
use std::process::Command;

use crate::dsl::*;

/// Each example with the README holding its command, the files its plan changes, and the
/// lines of its diff that go out (`-`) and come in (`+`), in order.
struct Example {
    dir: &'static str,
    readme: &'static str,
    files: &'static [&'static str],
    lines: &'static [&'static str],
    headline: &'static str,
}

const NEW: &str = "4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678";

fn examples() -> Vec<Example> {
    vec![
        Example {
            dir: "tomoda",
            readme: "README.md",
            files: &["k8s/apps/tomoda/overlays/dev/kustomization.yaml"],
            lines: &[
                "-    newTag: \"0a1b2c3d4e5f60718293a4b5c6d7e8f901234567\" # commit on main",
                "+    newTag: \"4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678\" # commit on main",
            ],
            headline: "promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7",
        },
        Example {
            dir: "tomoda-release",
            readme: "examples/tomoda-release/README.md",
            files: &["k8s/apps/tomoda/overlays/prod/kustomization.yaml"],
            lines: &[
                "-    newTag: v1.4.0   # current release",
                "+    newTag: v1.5.0   # current release",
                "-    newTag: v1.4.0",
                "+    newTag: v1.5.0",
            ],
            headline: "promote(prod): tomoda-backend v1.4.0 -> v1.5.0, tomoda-frontend v1.4.0 -> v1.5.0",
        },
        Example {
            dir: "wecare",
            readme: "examples/wecare/README.md",
            files: &[
                "manifests_v1/app-constructs/ecommercen-clients/wecare/adveshop4/base/kustomization.yaml",
            ],
            lines: &[
                "-    newTag: 4.99.10.0-wecare    # the release in production",
                "+    newTag: 4.99.11.0-wecare    # the release in production",
                "-    newTag: 4.99.10.0-wecare",
                "+    newTag: 4.99.11.0-wecare",
            ],
            headline: "promote(prod): adveshop4-php_fpm 4.99.10.0-wecare -> 4.99.11.0-wecare, adveshop4-php_cli 4.99.10.0-wecare -> 4.99.11.0-wecare",
        },
        Example {
            dir: "orofi",
            readme: "examples/orofi/README.md",
            files: &["microservice-identity/values-dev.yaml"],
            lines: &[
                "-  tag: \"abc123def456\"",
                "+  tag: \"4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678\"",
            ],
            headline: "promote(dev): values-dev.yaml image.tag abc123def456 -> 4d5e6f7",
        },
        Example {
            dir: "license-api",
            readme: "examples/license-api/README.md",
            files: &["kubernetes/license-api.yaml"],
            lines: &[
                "-          image: gcr.io/coditect-cloud-infra/license-api:0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
                "+          image: gcr.io/coditect-cloud-infra/license-api:4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678",
                "-          image: gcr.io/coditect-cloud-infra/license-api:0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
                "+          image: gcr.io/coditect-cloud-infra/license-api:4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678",
                "-              image: \"gcr.io/coditect-cloud-infra/license-api:0a1b2c3d4e5f60718293a4b5c6d7e8f901234567\"",
                "+              image: \"gcr.io/coditect-cloud-infra/license-api:4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678\"",
            ],
            headline: "promote(production): license-api 0a1b2c3 -> 4d5e6f7",
        },
    ]
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README's `cargo run -- …` line for the example, as the binary's arguments.
fn readme_command(example: &Example) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join(example.readme)).unwrap();
    let config = format!("examples/{}/promote.yaml", example.dir);
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run -- ") && l.contains(&config))
        .unwrap_or_else(|| {
            panic!(
                "{} has no `cargo run -- --config {config}` line",
                example.readme
            )
        });
    line["cargo run -- ".len()..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Runs from the repository's root as a reader would, with the registry certainly out of
/// reach (a proxy on a closed port): the plan goes on with a warning, as offline.
fn run(args: &[String]) -> Done {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("HTTPS_PROXY", &proxy)
        .env("HTTP_PROXY", &proxy)
        .args(args)
        .output()
        .unwrap();
    Done::from(out)
}

#[test]
fn every_example_plans_its_change_offline_as_its_readme_says() {
    for example in examples() {
        let args = readme_command(&example);
        assert!(
            args.iter().any(|a| a == "--plan" || a == "--dry-run"),
            "{}",
            example.dir
        );
        let done = run(&args);
        done.ok();
        let diff = done
            .stdout
            .split("\ncommit message:\n")
            .next()
            .unwrap_or_default();
        let files: Vec<&str> = diff
            .lines()
            .filter_map(|l| l.strip_prefix("+++ b/"))
            .collect();
        assert_eq!(files, example.files, "{}:\n{}", example.dir, done.stdout);
        let lines: Vec<&str> = diff
            .lines()
            .filter(|l| {
                (l.starts_with('-') || l.starts_with('+'))
                    && !l.starts_with("---")
                    && !l.starts_with("+++")
            })
            .collect();
        assert_eq!(lines, example.lines, "{}:\n{}", example.dir, done.stdout);
        done.stdout_has(&format!("commit message:\n    {}\n", example.headline))
            .stdout_has("plan only: nothing was committed or pushed");
    }
}

#[test]
fn every_example_directory_is_covered_and_has_its_devops_repo() {
    let mut dirs: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("promote.yaml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut covered: Vec<String> = examples().iter().map(|e| e.dir.to_string()).collect();
    covered.sort();
    assert_eq!(
        dirs, covered,
        "an example without a test, or a test without its example"
    );
    for dir in &dirs {
        assert!(
            root().join("examples").join(dir).join("devops").is_dir(),
            "examples/{dir} has no devops/"
        );
    }
}

#[test]
fn the_kustomize_examples_render() {
    // As Argo CD would render them: every image named in an `images:` entry is in a
    // resource, so the entries do something.
    for (dir, overlay, image) in [
        (
            "tomoda-release",
            "k8s/apps/tomoda/overlays/prod",
            "tomoda-prod-repo/tomoda-frontend:v1.4.0",
        ),
        (
            "tomoda-release",
            "k8s/apps/tomoda/overlays/dev",
            "tomoda-dev-repo/tomoda-frontend:0a1b2c3",
        ),
        (
            "wecare",
            "manifests_v1/app-constructs/ecommercen-clients/wecare/adveshop4/base",
            "image: ecommercen/adveshop4-php_cli:4.99.10.0-wecare",
        ),
    ] {
        let rendered = kustomize_render(&root().join("examples").join(dir).join("devops"), overlay);
        assert!(rendered.contains(image), "{dir} {overlay}:\n{rendered}");
    }
}

#[test]
fn the_prod_helm_values_wait_for_the_digest_the_registry_gives() {
    // orofi's prod: `{digest}` cannot be had offline; the plan shows the placeholder and
    // says why, and a run that skips the registry is refused with the line.
    let base = [
        "--config",
        "examples/orofi/promote.yaml",
        "--commit-sha",
        NEW,
        "--tag-name",
        "v1.3.0",
        "--plan",
    ]
    .map(str::to_string);
    run(&base)
        .ok()
        .stdout_has("+  tag: \"v1.3.0\"\n")
        .stdout_has("+  digest: \"{digest}\"")
        .stderr_has("cannot verify us-central1-docker.pkg.dev/orofi-dev-cloud/orofi/microservice-identity:v1.3.0");
    let mut skipping = base.to_vec();
    skipping.push("--no-verify".into());
    run(&skipping)
        .code(2)
        .stderr_has("examples/orofi/promote.yaml:24: `{digest}` has no value");
}
