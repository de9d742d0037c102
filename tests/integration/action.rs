//! The GitHub Action (action.yml): its install script against a fake GitHub Release served
//! on 127.0.0.1 (the built binary and a SHA256SUMS), and its inputs checked against the
//! flags and environment variables the binary really has.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use yaml_rust2::{Yaml, YamlLoader};

use crate::dsl::*;
use crate::git_server::serve;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// GitHub's release downloads, `/releases/<tag>/<asset>`, answered from a map; 404 for
/// anything else, as github.com answers an unknown tag or asset.
struct ReleaseServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReleaseServer {
    fn start(files: BTreeMap<String, Vec<u8>>) -> ReleaseServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(files);
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            serve(&listener, &flag, "release", move |stream, _| {
                let _ = answer(stream, &files);
            });
        });
        ReleaseServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn base(&self) -> String {
        format!("http://{}/releases", self.addr)
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(stream: TcpStream, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let mut out = stream;
    match files.get(path) {
        Some(body) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
        }
        None => write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nNot Found"
        )?,
    }
    out.flush()
}

/// A release `tag` holding the built binary as the x86_64 asset, with the given SHA256SUMS
/// line for it (`None`: the right one).
fn release(tag: &str, sums_hash: Option<&str>) -> BTreeMap<String, Vec<u8>> {
    let binary = std::fs::read(BIN).unwrap();
    let hash = sums_hash.map_or_else(|| sha256_hex(&binary), String::from);
    let sums = format!(
        "{}  tomoda-promote-aarch64-linux\n{hash}  tomoda-promote-x86_64-linux\n{}  tomoda-promote.cdx.json\n",
        "a".repeat(64),
        "b".repeat(64)
    );
    BTreeMap::from([
        (format!("/releases/{tag}/SHA256SUMS"), sums.into_bytes()),
        (
            format!("/releases/{tag}/tomoda-promote-x86_64-linux"),
            binary,
        ),
    ])
}

/// scripts/action-install as the action's first step runs it, on a Linux runner of `arch`.
fn install(server: &ReleaseServer, reference: &str, temp: &Path, arch: &str) -> Done {
    install_with(server, reference, "", temp, arch)
}

/// The same with the `version` input given.
fn install_with(
    server: &ReleaseServer,
    reference: &str,
    version: &str,
    temp: &Path,
    arch: &str,
) -> Done {
    let output = temp.join("github_output");
    let out = Command::new("bash")
        .arg(root().join("scripts/action-install"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ACTION_REF", reference)
        .env("ACTION_REPOSITORY", "acme/tomoda-promote")
        .env("ACTION_VERSION", version)
        .env("RUNNER_OS", "Linux")
        .env("RUNNER_ARCH", arch)
        .env("RUNNER_TEMP", temp)
        .env("GITHUB_OUTPUT", &output)
        .env("TOMODA_PROMOTE_RELEASES", server.base())
        .output()
        .unwrap();
    Done::from(out)
}

fn installed_bin(temp: &Path) -> Option<PathBuf> {
    let outputs = std::fs::read_to_string(temp.join("github_output")).ok()?;
    outputs
        .lines()
        .find_map(|l| l.strip_prefix("bin="))
        .map(PathBuf::from)
}

#[test]
fn the_release_asset_with_the_right_checksum_is_installed_and_runs() {
    let server = ReleaseServer::start(release("v9.8.7", None));
    let temp = tempfile::tempdir().unwrap();
    install(&server, "v9.8.7", temp.path(), "X64")
        .ok()
        .stdout_has("tomoda-promote v9.8.7 (tomoda-promote-x86_64-linux, sha256 ");
    let bin = installed_bin(temp.path()).expect("a bin= output");
    assert!(bin.starts_with(temp.path()), "{}", bin.display());
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("tomoda-promote "),
        "{version:?}"
    );
    // A second install in the same job finds it in place.
    install(&server, "v9.8.7", temp.path(), "X64").ok();
}

#[test]
fn an_asset_whose_checksum_differs_is_refused_and_not_installed() {
    let server = ReleaseServer::start(release("v9.8.7", Some(&"0".repeat(64))));
    let temp = tempfile::tempdir().unwrap();
    install(&server, "v9.8.7", temp.path(), "X64")
        .code(1)
        .stdout_has("::error title=tomoda-promote::")
        .stderr_has("but its SHA256SUMS says 0000")
        .stderr_has("refusing to run it");
    assert_eq!(installed_bin(temp.path()), None);
    assert!(
        !temp
            .path()
            .join("tomoda-promote/v9.8.7/tomoda-promote")
            .exists()
    );
}

#[test]
fn a_ref_without_a_release_is_a_clear_error() {
    let server = ReleaseServer::start(release("v9.8.7", None));
    let temp = tempfile::tempdir().unwrap();
    install(&server, "main", temp.path(), "X64")
        .code(1)
        .stderr_has("no release main of acme/tomoda-promote")
        .stderr_has("use the action at a release tag, such as @v1 or @v1.2.3");
    // Pinned to a commit SHA, with the release named by the version input.
    let pinned = "0123456789abcdef0123456789abcdef01234567";
    install(&server, pinned, temp.path(), "X64")
        .code(1)
        .stderr_has("name the release with the input version");
    install_with(&server, pinned, "v9.8.7", temp.path(), "X64").ok();
    assert!(installed_bin(temp.path()).is_some());
    // A release without this runner's asset: arm64 has a checksum but no file here.
    install(&server, "v9.8.7", temp.path(), "ARM64")
        .code(1)
        .stderr_has("tomoda-promote-aarch64-linux: HTTP 404");
    install(&server, "v9.8.7", temp.path(), "X86")
        .code(1)
        .stderr_has("use a Linux x86_64 or arm64 runner");
}

fn action() -> Yaml {
    let text = std::fs::read_to_string(root().join("action.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn keys(map: &Yaml) -> Vec<String> {
    map.as_hash()
        .expect("a mapping")
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The environment variables the binary reads for its flags, from its own --help.
fn help_env_vars() -> BTreeSet<String> {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_input_of_the_action_is_a_real_flag_and_every_flag_has_an_input() {
    let action = action();
    let inputs: BTreeSet<String> = keys(&action["inputs"]).into_iter().collect();
    let steps = action["runs"]["steps"].as_vec().unwrap();
    assert_eq!(action["runs"]["using"].as_str(), Some("composite"));
    assert_eq!(
        steps[0]["run"].as_str(),
        Some("\"$GITHUB_ACTION_PATH/scripts/action-install\"")
    );
    let promote = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("promote"))
        .unwrap();
    let known = help_env_vars();
    assert!(known.contains("PROMOTE_PLAN"), "{known:?}");
    // The install step's only input: which release to download.
    assert_eq!(
        steps[0]["env"]["ACTION_VERSION"].as_str(),
        Some("${{ inputs.version }}")
    );
    let mut used = BTreeSet::new();
    let mut mapped = BTreeSet::new();
    for (name, value) in promote["env"].as_hash().unwrap() {
        let (name, value) = (name.as_str().unwrap(), value.as_str().unwrap());
        for part in value.split("inputs.").skip(1) {
            let input: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(
                inputs.contains(&input),
                "{name}: no input `{input}` in action.yml"
            );
            used.insert(input);
        }
        if name != "TOMODA_PROMOTE" {
            assert!(
                known.contains(name),
                "{name} is no environment variable of the binary (--help)"
            );
            mapped.insert(name.to_string());
        }
    }
    used.insert("version".to_string());
    let unused: Vec<_> = inputs.difference(&used).collect();
    assert!(unused.is_empty(), "inputs that reach no flag: {unused:?}");
    // The build's SHA and tag come from GITHUB_SHA / GITHUB_REF_NAME, which the binary
    // reads itself; the token comes as an input, not as a file on the runner.
    // The App's key comes as an input's text, not as a file on the runner; a Cloud Build
    // connection has no place on a GitHub runner.
    let not_inputs = [
        "COMMIT_SHA",
        "TAG_NAME",
        "GIT_TOKEN_FILE",
        "GITHUB_APP_KEY_FILE",
        "PROMOTE_CLOUDBUILD_REPOSITORY",
    ];
    let missing: Vec<_> = known
        .iter()
        .filter(|v| !mapped.contains(*v) && !not_inputs.contains(&v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "flags without an input in action.yml: {missing:?}"
    );
}

#[test]
fn the_outputs_are_the_promote_steps_outputs() {
    let action = action();
    let outputs = keys(&action["outputs"]);
    for name in [
        "commit",
        "pushed",
        "environment",
        "changes",
        "images",
        "up_to_date",
        "skipped",
        "pull_request_url",
        "pull_request_number",
        "deployed",
    ] {
        assert!(outputs.contains(&name.to_string()), "no output {name}");
        assert_eq!(
            action["outputs"][name]["value"].as_str(),
            Some(format!("${{{{ steps.promote.outputs.{name} }}}}").as_str())
        );
    }
}

/// The environment action.yml's promote step gives the binary: each `${{ … }}` of its
/// `env:` evaluated for these inputs (else their defaults; `github.token` is `token`).
/// Knows the expressions action.yml uses: `inputs.X`, and `inputs.X == 'v'` joined by `||`.
pub fn action_env(given: &[(&str, &str)], token: &str) -> Vec<(String, String)> {
    let action = action();
    let input = |name: &str| -> String {
        if let Some((_, v)) = given.iter().find(|(n, _)| *n == name) {
            return (*v).to_string();
        }
        match &action["inputs"][name]["default"] {
            Yaml::String(d) if d.contains("github.token") => token.to_string(),
            Yaml::String(d) => d.clone(),
            Yaml::Boolean(b) => b.to_string(),
            Yaml::BadValue => panic!("no input {name} in action.yml"),
            _ => String::new(),
        }
    };
    let steps = action["runs"]["steps"].as_vec().unwrap();
    let promote = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("promote"))
        .unwrap();
    let mut env = Vec::new();
    for (key, value) in promote["env"].as_hash().unwrap() {
        let (key, expr) = (key.as_str().unwrap(), value.as_str().unwrap().trim());
        let body = expr
            .strip_prefix("${{")
            .and_then(|r| r.strip_suffix("}}"))
            .unwrap_or_else(|| panic!("{key}: {expr} is not an expression"))
            .trim();
        if body.starts_with("steps.") {
            continue;
        }
        let terms: Vec<&str> = body.split(" || ").collect();
        let value = if body.contains("==") {
            let any = terms.iter().any(|term| {
                let (left, right) = term.split_once(" == ").expect("inputs.X == 'v'");
                let name = left.trim().strip_prefix("inputs.").expect("an input");
                input(name) == right.trim().trim_matches('\'')
            });
            any.to_string()
        } else {
            assert_eq!(terms.len(), 1, "{key}: {expr}");
            input(body.strip_prefix("inputs.").expect("an input"))
        };
        env.push((key.to_string(), value));
    }
    env
}

#[test]
fn the_env_of_action_yml_drives_a_promotion_and_writes_every_output() {
    const TOKEN: &str = "ghs_actionToken0123456789";
    let devops = Devops::with_auth(&tomoda_files(), "x-access-token", TOKEN);
    let files = tempfile::tempdir().unwrap();
    let output = files.path().join("output");
    let github = |inputs: &[(&str, &str)]| {
        let mut run = Run::new()
            .config(&tomoda_config(&devops.url()))
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", output.to_str().unwrap())
            .env("GITHUB_SHA", SHA)
            .env("GITHUB_REF_TYPE", "branch")
            .env("GITHUB_REF_NAME", "main");
        for (key, value) in action_env(inputs, TOKEN) {
            run = run.env(&key, &value);
        }
        run
    };
    // The example's images are in no registry here.
    let offline = [("config", "promote.yaml"), ("verify", "false")];
    let planned = github(&[offline[0], offline[1], ("dry-run", "true")]).run();
    planned.ok().never_shows(TOKEN);
    assert_eq!(devops.file(DEV), tomoda_file(DEV), "dry-run pushed");
    github(&offline).run().ok().never_shows(TOKEN);
    assert!(devops.file(DEV).contains(SHA));
    let written = std::fs::read_to_string(&output).unwrap();
    for name in ["commit", "pushed", "environment", "up_to_date", "skipped"] {
        assert!(
            written.lines().any(|l| l.starts_with(&format!("{name}="))),
            "no {name} in\n{written}"
        );
    }
    assert!(written.contains("changes<<"), "{written}");
    // verify left at its default checks the registry, which is unreachable from here.
    github(&[offline[0]])
        .env("TAG_NAME", "v1.5.0")
        .run()
        .code(1)
        .stderr_has("cannot reach the registry");
    assert_eq!(devops.file(PROD), tomoda_file(PROD));
}
