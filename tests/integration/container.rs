//! The builder image as Cloud Build and GitHub Actions run it: real promotions from inside
//! the `FROM scratch` container (podman, host network) against the test git server on
//! 127.0.0.1.
//!
//! The image comes from `TOMODA_PROMOTE_IMAGE`, which `./scripts/test` sets after building
//! it. Without it these tests skip loudly, and fail under CI, so that a green run always
//! means the image was tried.

use std::path::Path;
use std::process::{Command, Stdio};

use yaml_rust2::{Yaml, YamlLoader};

use crate::dsl::*;

const TOKEN: &str = "ghs_containerToken0123456789";

/// The image under test, or `None` (after saying so) when it was not built.
fn image() -> Option<String> {
    match std::env::var("TOMODA_PROMOTE_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
            panic!("TOMODA_PROMOTE_IMAGE is not set under CI: ./scripts/test builds the image")
        }
        _ => {
            eprintln!("SKIPPED: TOMODA_PROMOTE_IMAGE not set; ./scripts/test builds the image");
            None
        }
    }
}

/// One `podman run` of the image: a host directory mounted as the runner mounts the
/// checkout, the working directory the runner sets, and the step's environment.
struct Container {
    command: Command,
}

impl Container {
    fn new(workspace: &Path, mount_at: &str) -> Container {
        let mut command = Command::new("podman");
        command
            .args(["run", "--rm", "--pull=never", "--network", "host"])
            .arg("-v")
            .arg(format!("{}:{mount_at}", workspace.display()))
            // The fixture images are in a registry the container cannot reach.
            .args(["-e", "PROMOTE_NO_VERIFY=1"])
            .stdin(Stdio::null());
        // The container gets only what is passed with -e; the token is passed by name, so
        // it is on no command line, as Cloud Build's secretEnv does.
        command.env_remove("GIT_TOKEN");
        Container { command }
    }

    /// `docker run --workdir`, as Cloud Build (/workspace) and GitHub (/github/workspace) do.
    fn workdir(mut self, dir: &str) -> Container {
        self.command.args(["--workdir", dir]);
        self
    }

    fn env(mut self, key: &str, value: &str) -> Container {
        self.command.arg("-e").arg(format!("{key}={value}"));
        self
    }

    fn secret_env(mut self, key: &str, value: &str) -> Container {
        self.command.arg("-e").arg(key).env(key, value);
        self
    }

    /// An entry of the env action.yml gives its promote step; the token the runner masks goes
    /// as a secret.
    fn action_env(self, key: &str, value: &str) -> Container {
        if key == "GIT_TOKEN" || key == "ARGOCD_AUTH_TOKEN" {
            self.secret_env(key, value)
        } else {
            self.env(key, value)
        }
    }

    fn mount(mut self, host: &Path, at: &str) -> Container {
        self.command
            .arg("-v")
            .arg(format!("{}:{at}", host.display()));
        self
    }

    fn user(mut self, user: &str) -> Container {
        self.command.args(["--user", user]);
        self
    }

    fn run(mut self, image: &str, args: &[&str]) -> Done {
        let out = self
            .command
            .arg(image)
            .args(args)
            .output()
            .expect("podman runs (./scripts/test installs it)");
        Done::from(out)
    }
}

/// A workspace directory holding promote.yaml for this devops server.
fn workspace(devops: &Devops) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("promote.yaml"),
        tomoda_config(&devops.url()),
    )
    .unwrap();
    dir
}

fn assert_dev_promoted(devops: &Devops) {
    assert_eq!(devops.file(DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
    assert_eq!(devops.commit_count(), 2);
}

#[test]
fn the_image_promotes_with_an_absolute_config_and_no_workdir() {
    let Some(image) = image() else { return };
    let devops = Devops::tomoda();
    let ws = workspace(&devops);
    Container::new(ws.path(), "/workspace")
        .env("COMMIT_SHA", SHA)
        .run(&image, &["--config", "/workspace/promote.yaml"])
        .ok()
        .stdout_has("pushed ");
    assert_dev_promoted(&devops);
}

#[test]
fn the_image_runs_as_a_cloud_build_step_in_workspace() {
    let Some(image) = image() else { return };
    let devops = Devops::tomoda();
    let ws = workspace(&devops);
    Container::new(ws.path(), "/workspace")
        .workdir("/workspace")
        .env("COMMIT_SHA", SHA)
        .env("BUILD_ID", "b-1234")
        .env("PROJECT_ID", "development-485000")
        .env("REPO_NAME", "tomoda")
        .env("BRANCH_NAME", "main")
        .run(&image, &["--config", "promote.yaml", "--output", "json"])
        .ok();
    assert_dev_promoted(&devops);
    assert!(
        devops.log().contains("Build-Id: b-1234"),
        "{}",
        devops.log()
    );
}

#[test]
fn a_release_tag_promotes_prod_from_the_image() {
    let Some(image) = image() else { return };
    let devops = Devops::tomoda();
    let ws = workspace(&devops);
    Container::new(ws.path(), "/workspace")
        .workdir("/workspace")
        .env("COMMIT_SHA", SHA)
        .env("TAG_NAME", "v1.5.0")
        .run(&image, &["--config", "promote.yaml"])
        .ok();
    assert_eq!(
        devops.file(PROD),
        tomoda_file(PROD).replace("v1.4.0", "v1.5.0")
    );
}

#[test]
fn the_image_runs_as_a_container_action_in_github_workspace() {
    let Some(image) = image() else { return };
    let devops = Devops::tomoda();
    let ws = workspace(&devops);
    let commands = runner_file_commands();
    github_runner(ws.path(), commands.path(), SHA)
        .env("PROMOTE_CONFIG", "promote.yaml")
        .run(&image, &[])
        .ok();
    assert_dev_promoted(&devops);
    // The outputs action.yml declares, written to the runner's file from inside.
    let outputs = std::fs::read_to_string(commands.path().join("set_output")).unwrap();
    for line in [
        format!("commit={}", devops.head()),
        "pushed=true".to_string(),
        "environment=dev".to_string(),
        "changes<<".to_string(),
    ] {
        assert!(outputs.contains(&line), "{line} missing in\n{outputs}");
    }
    let summary = std::fs::read_to_string(commands.path().join("step_summary")).unwrap();
    assert!(summary.contains("tomoda-promote: dev"), "{summary}");
}

#[test]
fn the_env_of_action_yml_drives_a_promotion_with_a_config() {
    let Some(image) = image() else { return };
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", TOKEN);
    let ws = workspace(&devops);
    let commands = runner_file_commands();
    let mut container = github_runner(ws.path(), commands.path(), SHA);
    for (key, value) in action_env(&[("config", "promote.yaml"), ("verify", "false")]) {
        container = container.action_env(&key, &value);
    }
    container.run(&image, &[]).ok().never_shows(TOKEN);
    assert_dev_promoted(&devops);
}

#[test]
fn the_env_of_action_yml_drives_a_promotion_without_a_config() {
    let Some(image) = image() else { return };
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", TOKEN);
    let ws = tempfile::tempdir().expect("temp dir");
    let commands = runner_file_commands();
    // A YAML block scalar (`images: |`) ends each image with a newline.
    let images = format!("{IMAGE}:{SHA}\n");
    let mut container = github_runner(ws.path(), commands.path(), SHA);
    for (key, value) in action_env(&[
        ("repo", &devops.url()),
        ("overlay", "k8s/apps/tomoda/overlays/dev"),
        ("images", &images),
        ("verify", "false"),
    ]) {
        container = container.action_env(&key, &value);
    }
    container.run(&image, &[]).ok().never_shows(TOKEN);
    assert_dev_promoted(&devops);
}

#[test]
fn the_token_reaches_an_authenticating_server_and_is_never_shown() {
    let Some(image) = image() else { return };
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", TOKEN);
    let ws = workspace(&devops);
    Container::new(ws.path(), "/workspace")
        .workdir("/workspace")
        .env("COMMIT_SHA", SHA)
        .secret_env("GIT_TOKEN", TOKEN)
        .run(&image, &["--config", "promote.yaml", "--output", "json"])
        .ok()
        .never_shows(TOKEN);
    assert_dev_promoted(&devops);
    assert!(!devops.log().contains(TOKEN));
}

#[test]
fn host_names_resolve_in_the_empty_image() {
    // glibc's static resolver reads the /etc/hosts the runtime mounts; no NSS libraries.
    let Some(image) = image() else { return };
    let devops = Devops::tomoda();
    let ws = workspace(&devops);
    let by_name = devops.url().replace("127.0.0.1", "localhost");
    Container::new(ws.path(), "/workspace")
        .workdir("/workspace")
        .env("COMMIT_SHA", SHA)
        .run(&image, &["--config", "promote.yaml", "--repo", &by_name])
        .ok();
    assert_dev_promoted(&devops);
}

#[test]
fn an_app_checkout_owned_by_another_user_is_read_for_the_ordering_guard() {
    // GitHub's checkout belongs to the runner's user (1001), the action runs as root: the
    // app history must still be read, so an older commit is skipped rather than promoted.
    let Some(image) = image() else { return };
    let ws = tempfile::tempdir().expect("temp dir");
    let app = ws.path();
    git(app, &["init", "-q", "-b", "main", "."]);
    let mut commits = Vec::new();
    for n in 0..2 {
        git(
            app,
            &["commit", "-q", "--allow-empty", "-m", &format!("app {n}")],
        );
        commits.push(git(app, &["rev-parse", "HEAD"]).trim().to_string());
    }
    let dev = format!(
        "images:\n  - name: {IMAGE}\n    newTag: \"{}\"\n",
        commits[1]
    );
    let devops = Devops::with_files(&[(DEV, dev.as_str())]);
    std::fs::write(app.join("promote.yaml"), tomoda_config(&devops.url())).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "1001:1001"])
        .arg(app)
        .status()
        .expect("chown runs");
    assert!(
        chown.success(),
        "chown -R 1001:1001 (the tests run as root)"
    );

    let commands = runner_file_commands();
    let done = github_runner(app, commands.path(), &commits[0])
        .env("PROMOTE_CONFIG", "promote.yaml")
        .env("PROMOTE_OUTPUT", "json")
        .run(&image, &[]);
    assert_eq!(done.ok().json()["skipped"], "older", "{}", done.stderr);
    assert_eq!(devops.file(DEV), dev);
}

#[test]
fn a_user_other_than_root_can_use_the_images_tmp() {
    // /tmp is mode 1777 in the image: a runner that drops root still gets its scratch repo.
    let Some(image) = image() else { return };
    let devops = Devops::tomoda();
    let ws = workspace(&devops);
    Container::new(ws.path(), "/workspace")
        .workdir("/workspace")
        .user("65534:65534")
        .env("COMMIT_SHA", SHA)
        .run(&image, &["--config", "promote.yaml"])
        .ok();
    assert_dev_promoted(&devops);
}

#[test]
fn the_builder_pipelines_smoke_steps_pass_in_the_image() {
    // cloudbuild.yaml's steps that run the image, run here as Cloud Build runs them: the
    // repository at /workspace, the step's args and environment.
    let Some(image) = image() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let steps: Vec<BuildStep> =
        cloud_build_steps("cloudbuild.yaml", &cloud_build_substitutions(""))
            .into_iter()
            .filter(|step| step.name.contains("/builders/tomoda-promote:"))
            .collect();
    assert!(
        steps.len() >= 3,
        "cloudbuild.yaml has --version and --plan smoke steps"
    );
    for step in steps {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let done = step.container(root).run(&image, &args);
        assert_eq!(
            done.code, 0,
            "step {}: {}{}",
            step.id, done.stdout, done.stderr
        );
    }
}

#[test]
fn the_example_pipelines_promote_step_promotes_dev_then_prod() {
    let Some(image) = image() else { return };
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", TOKEN);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The example's promote.yaml, pointed at the test server instead of ./devops.
    let config = std::fs::read_to_string(root.join("examples/tomoda/promote.yaml")).unwrap();
    assert!(config.contains("repo: ./devops"));
    let ws = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        ws.path().join("promote.yaml"),
        config.replace("repo: ./devops", &format!("repo: {}", devops.url())),
    )
    .unwrap();

    for (tag, file, want) in [("", DEV, SHA), ("v1.5.0", PROD, "v1.5.0")] {
        let step = cloud_build_steps(
            "examples/tomoda/cloudbuild.yaml",
            &cloud_build_substitutions(tag),
        )
        .into_iter()
        .find(|step| step.id == "promote")
        .expect("a step with id promote");
        assert!(
            step.name.contains("/builders/tomoda-promote"),
            "{}",
            step.name
        );
        assert_eq!(step.secret_env, ["GIT_TOKEN"]);
        // The example pins the digest its registry gives; the fixture image is in no
        // registry the container reaches (the check is off, see Container::new), so the
        // pinning is left to registry::*.
        let args: Vec<&str> = step
            .args
            .iter()
            .map(String::as_str)
            .filter(|arg| *arg != "--pin-digest")
            .collect();
        step.container(ws.path())
            .secret_env("GIT_TOKEN", TOKEN)
            .run(&image, &args)
            .ok()
            .never_shows(TOKEN);
        assert!(
            devops.file(file).contains(&format!("newTag: \"{want}\""))
                || devops.file(file).contains(&format!("newTag: {want} ")),
            "{file}:\n{}",
            devops.file(file)
        );
    }
    assert_eq!(devops.commit_count(), 3);
}

/// A step of a cloudbuild.yaml as Cloud Build hands it to the container: substitutions
/// applied to its name and args, its `env:`, and the substitutions as variables when
/// `automapSubstitutions` is on.
struct BuildStep {
    id: String,
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    secret_env: Vec<String>,
}

impl BuildStep {
    /// The step's container, /workspace holding `workspace` and being the working directory.
    fn container(&self, workspace: &Path) -> Container {
        let mut container = Container::new(workspace, "/workspace").workdir("/workspace");
        for (key, value) in &self.env {
            container = container.env(key, value);
        }
        container
    }
}

/// The built-in substitutions of a triggered build of SHA: a push to main, or of `tag`.
fn cloud_build_substitutions(tag: &str) -> Vec<(String, String)> {
    let ref_name = if tag.is_empty() { "main" } else { tag };
    let branch = if tag.is_empty() { "main" } else { "" };
    [
        ("PROJECT_ID", "development-485000"),
        ("BUILD_ID", "0b1c2d3e-build"),
        ("LOCATION", "asia-east1"),
        ("COMMIT_SHA", SHA),
        ("REVISION_ID", SHA),
        ("SHORT_SHA", &SHA[..7]),
        ("REPO_NAME", "tomoda"),
        ("BRANCH_NAME", branch),
        ("TAG_NAME", tag),
        ("REF_NAME", ref_name),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The steps of a cloudbuild.yaml (relative to the repository root) with `builtins` and
/// the file's own `substitutions:` applied.
fn cloud_build_steps(file: &str, builtins: &[(String, String)]) -> Vec<BuildStep> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let build = &YamlLoader::load_from_str(&text).expect("YAML")[0];
    let mut values = builtins.to_vec();
    if let Some(user) = build["substitutions"].as_hash() {
        for (key, value) in user {
            values.push((key.as_str().unwrap().into(), value.as_str().unwrap().into()));
        }
    }
    // Longest names first, so that $SHORT_SHA is not read as $SHORT followed by _SHA.
    values.sort_by_key(|(key, _)| std::cmp::Reverse(key.len()));
    let substitute = |text: &str, values: &[(String, String)]| {
        let mut out = text.to_string();
        for (key, value) in values {
            out = out
                .replace(&format!("${{{key}}}"), value)
                .replace(&format!("${key}"), value);
        }
        out
    };
    // dynamicSubstitutions: user substitutions may be made of others.
    let resolved: Vec<(String, String)> = values
        .iter()
        .map(|(key, value)| (key.clone(), substitute(value, &values)))
        .collect();
    let automap_all = build["options"]["automapSubstitutions"]
        .as_bool()
        .unwrap_or(false);
    let strings = |yaml: &Yaml| -> Vec<String> {
        yaml.as_vec()
            .map(|items| {
                items
                    .iter()
                    .map(|item| substitute(item.as_str().expect("a string"), &resolved))
                    .collect()
            })
            .unwrap_or_default()
    };
    build["steps"]
        .as_vec()
        .expect("steps:")
        .iter()
        .map(|step| {
            let automap = step["automapSubstitutions"]
                .as_bool()
                .unwrap_or(automap_all);
            let mut env = if automap {
                resolved.clone()
            } else {
                Vec::new()
            };
            for entry in strings(&step["env"]) {
                let (key, value) = entry.split_once('=').expect("env: KEY=VALUE");
                env.push((key.to_string(), value.to_string()));
            }
            BuildStep {
                id: step["id"].as_str().unwrap_or_default().to_string(),
                name: substitute(step["name"].as_str().expect("name:"), &resolved),
                args: strings(&step["args"]),
                env,
                secret_env: strings(&step["secretEnv"]),
            }
        })
        .collect()
}

/// The runner's file-command files (outputs, step summary), in a directory mounted where
/// the runner mounts it.
fn runner_file_commands() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["set_output", "step_summary"] {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    dir
}

/// `docker run` as a GitHub runner starts a container action: the checkout at
/// /github/workspace (also the working directory), the file commands beside it, and the
/// GITHUB_* variables of a push of `sha` to main.
fn github_runner(workspace: &Path, file_commands: &Path, sha: &str) -> Container {
    Container::new(workspace, "/github/workspace")
        .mount(file_commands, "/github/file_commands")
        .workdir("/github/workspace")
        .env("CI", "true")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", "/github/workspace")
        .env("GITHUB_SHA", sha)
        .env("GITHUB_REF", "refs/heads/main")
        .env("GITHUB_REF_NAME", "main")
        .env("GITHUB_REF_TYPE", "branch")
        .env("GITHUB_OUTPUT", "/github/file_commands/set_output")
        .env("GITHUB_STEP_SUMMARY", "/github/file_commands/step_summary")
}

/// The environment action.yml gives the binary, the token being the test's.
fn action_env(inputs: &[(&str, &str)]) -> Vec<(String, String)> {
    crate::action::action_env(inputs, TOKEN)
}
