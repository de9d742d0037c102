//! The benchmark (issue 12): not a test, it asserts nothing. Run by `scripts/bench` with
//! `--ignored`. It compares a promotion with what users run today, a CI script (`git clone
//! --depth 1`, `sed`, `git commit`, `git push`), against the same server: git's own
//! `git http-backend` behind the test HTTP server (TCP_NODELAY, connections kept alive as
//! a forge keeps them), on devops repositories shaped like tomoda's at several sizes. It
//! writes a Markdown table (each goal of the issue beside its measured value), the same as
//! JSON, and a chart into the results folder.
//!
//! Knobs (environment): TOMODA_PROMOTE_BENCH_BIN (the binary, else the test build),
//! TOMODA_PROMOTE_BENCH_OUT (results folder, else `bench/results`), TOMODA_PROMOTE_BENCH_APPS
//! (`100,3000,10000`), TOMODA_PROMOTE_BENCH_RUNS (5), TOMODA_PROMOTE_BENCH_CONTENTION_APPS
//! (`100,3000`), TOMODA_PROMOTE_BENCH_IMAGE (the podman image to size), TOMODA_PROMOTE_BENCH_TRACE
//! (a RUST_LOG filter for the binary; its log is printed), TOMODA_PROMOTE_BENCH_SCRIPT=0 (skip
//! the script while working on the binary).

// Measurements are reported in floating point; their integers are far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bounded;
use crate::dsl::BIN;
use crate::git_server::GitServer;

/// No promotion or script run may take longer.
const LIMIT: Duration = Duration::from_secs(300);
/// The branch every repository has.
const BRANCH: &str = "main";
/// Commits of history below the tip (a depth-1 fetch skips them; a careless fetch would not).
const HISTORY: usize = 30;

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn bench_promotion() {
    let setting = Setting::from_env();
    let taken = machine();
    eprintln!("bench: {}", taken["summary"].as_str().unwrap_or_default());

    let mut sizes = Vec::new();
    for &apps in &setting.apps {
        let devops = Repo::generate(apps);
        let one = compare(&setting, &devops, apps);
        eprintln!(
            "bench: {apps} apps: {}",
            one["summary"].as_str().unwrap_or("")
        );
        sizes.push(one);
    }

    let mut contention = Vec::new();
    for &apps in &setting.contention_apps {
        let devops = Repo::generate(apps);
        let full_fetch = one_full_fetch(&setting, &devops, apps);
        let runs: Vec<Value> = [1, 8, 32]
            .into_iter()
            .map(|n| {
                let one = contend(&setting, &devops, apps, n, full_fetch);
                eprintln!(
                    "bench: {n} promoters, {apps} apps: {}",
                    one["summary"].as_str().unwrap_or("")
                );
                one
            })
            .collect();
        contention.push(json!({
            "apps": apps,
            "one_full_fetch_bytes": full_fetch,
            "runs": runs,
        }));
    }

    let startup = version_startup(&setting.bin);
    let binary = std::fs::metadata(&setting.bin).map(|m| m.len()).ok();
    let image = image_size();

    let report = json!({
        "taken": taken,
        "binary": setting.bin.display().to_string(),
        "runs": setting.runs,
        "sizes": sizes,
        "contention": contention,
        "version_startup_ms": startup,
        "binary_bytes": binary,
        "image_bytes": image,
        "forge_api": forge_api(&setting),
    });
    let report = with_goals(report);
    let markdown = markdown(&report);
    let svg = chart(&report);

    std::fs::create_dir_all(&setting.out).expect("results folder");
    std::fs::write(setting.out.join("latest.md"), &markdown).expect("write latest.md");
    let pretty = serde_json::to_string_pretty(&report).expect("json");
    std::fs::write(setting.out.join("latest.json"), pretty + "\n").expect("write latest.json");
    std::fs::write(setting.out.join("chart.svg"), svg).expect("write chart.svg");
    println!("{markdown}");
    eprintln!("bench: written to {}", setting.out.display());
}

struct Setting {
    bin: PathBuf,
    out: PathBuf,
    apps: Vec<usize>,
    runs: usize,
    contention_apps: Vec<usize>,
    /// Off (TOMODA_PROMOTE_BENCH_SCRIPT=0) to time the binary alone while working on it.
    script: bool,
}

impl Setting {
    fn from_env() -> Setting {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let list = |name: &str, default: &str| -> Vec<usize> {
            var(name)
                .unwrap_or_else(|| default.into())
                .split(',')
                .map(|n| n.trim().parse().expect("a list of numbers"))
                .collect()
        };
        Setting {
            bin: var("TOMODA_PROMOTE_BENCH_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from),
            out: var("TOMODA_PROMOTE_BENCH_OUT").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results"),
                PathBuf::from,
            ),
            apps: list("TOMODA_PROMOTE_BENCH_APPS", "100,3000,10000"),
            runs: var("TOMODA_PROMOTE_BENCH_RUNS").map_or(5, |n| n.parse().expect("runs")),
            contention_apps: list("TOMODA_PROMOTE_BENCH_CONTENTION_APPS", "100,3000"),
            script: var("TOMODA_PROMOTE_BENCH_SCRIPT").is_none_or(|v| v != "0"),
        }
    }
}

/// A devops repository of `apps` apps served over smart HTTP.
struct Repo {
    _dir: tempfile::TempDir,
    server: GitServer,
}

impl Repo {
    /// Deterministic: the same files, dates and so commit ids for the same size. Written
    /// with `git fast-import`, then repacked as a forge's repositories are.
    fn generate(apps: usize) -> Repo {
        let dir = tempfile::tempdir().expect("temp dir");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).expect("srv");
        let bare = srv.join("devops.git");
        git_in(&srv, &["init", "-q", "--bare", "-b", BRANCH, "devops.git"]);
        let mut import = git_command(&bare)
            .args(["fast-import", "--quiet"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("git fast-import");
        {
            let mut input = std::io::BufWriter::new(import.stdin.take().expect("stdin"));
            fast_import_stream(&mut input, apps).expect("fast-import input");
        }
        assert!(import.wait().expect("fast-import").success());
        git_in(&bare, &["repack", "-a", "-d", "-q"]);
        let server = GitServer::start(&srv);
        server.keep_alive();
        server.allow_filter(true);
        Repo { _dir: dir, server }
    }

    fn url(&self) -> String {
        self.server.url("devops.git")
    }
}

/// One app of the tomoda layout: a base and two overlays, the dev one set by CI.
fn app_files(n: usize, dev_tag: &str) -> Vec<(String, String)> {
    let image = format!("europe-docker.pkg.dev/tomoda/apps/app{n}");
    let root = format!("k8s/apps/app{n}");
    vec![
        (
            format!("{root}/base/kustomization.yaml"),
            "resources:\n  - deployment.yaml\n  - service.yaml\n".into(),
        ),
        (
            format!("{root}/base/deployment.yaml"),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{n}\n  labels: {{app: app{n}}}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: app{n}}}\n  template:\n    metadata:\n      labels: {{app: app{n}}}\n    spec:\n      containers:\n        - name: app{n}\n          image: {image}:latest\n          ports:\n            - containerPort: 8080\n          resources:\n            requests: {{cpu: 100m, memory: 128Mi}}\n            limits: {{memory: 256Mi}}\n          readinessProbe:\n            httpGet: {{path: /healthz, port: 8080}}\n"
            ),
        ),
        (
            format!("{root}/base/service.yaml"),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: app{n}\nspec:\n  selector: {{app: app{n}}}\n  ports:\n    - port: 80\n      targetPort: 8080\n"
            ),
        ),
        (
            format!("{root}/overlays/dev/kustomization.yaml"),
            format!(
                "# dev follows main\nresources:\n  - ../../base\nimages:\n  - name: {image}\n    newTag: \"{dev_tag}\" # set by CI\n"
            ),
        ),
        (
            format!("{root}/overlays/prod/kustomization.yaml"),
            format!(
                "resources:\n  - ../../base\nreplicas:\n  - name: app{n}\n    count: 4\nimages:\n  - name: {image}\n    newTag: v1.{}.0\n",
                n % 50
            ),
        ),
    ]
}

/// A first commit with every app, then `HISTORY` commits each promoting one app's dev tag.
fn fast_import_stream(out: &mut impl std::io::Write, apps: usize) -> std::io::Result<()> {
    let mut time = 1_767_225_600u64; // 2026-01-01
    let mut commit = |out: &mut dyn std::io::Write,
                      message: &str,
                      files: &[(String, String)]|
     -> std::io::Result<()> {
        time += 3600;
        writeln!(out, "commit refs/heads/{BRANCH}")?;
        writeln!(out, "committer CI <ci@example.com> {time} +0000")?;
        writeln!(out, "data {}\n{message}", message.len())?;
        for (path, content) in files {
            writeln!(
                out,
                "M 100644 inline {path}\ndata {}\n{content}",
                content.len()
            )?;
        }
        writeln!(out)
    };
    let all: Vec<(String, String)> = (0..apps)
        .flat_map(|n| app_files(n, &format!("{:040x}", n * 7919)))
        .collect();
    commit(out, "initial layout", &all)?;
    for h in 0..HISTORY {
        let n = (h * 37) % apps;
        let dev = app_files(n, &format!("{:040x}", h + 1))
            .into_iter()
            .filter(|(p, _)| p.contains("overlays/dev"))
            .collect::<Vec<_>>();
        commit(out, &format!("promote app{n} to dev"), &dev)?;
    }
    Ok(())
}

fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C");
    command
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir).args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What users run today: a shallow clone, an edit, a commit and a push.
const SCRIPT: &str = r#"set -eu
url=$1 overlay=$2 tag=$3 dir=$4
git clone -q --depth 1 --single-branch --branch main "$url" "$dir"
cd "$dir"
sed -i "s/^\( *newTag:\).*/\1 \"$tag\"/" "$overlay/kustomization.yaml"
git -c user.name=CI -c user.email=ci@example.com commit -q -am "dev: promote $tag"
git push -q origin HEAD:main
"#;

/// One timed run: wall time, peak RSS (of the largest process, through `/usr/bin/time`),
/// and the bytes the server sent.
struct Measured {
    wall: Duration,
    peak_kib: u64,
    bytes: u64,
    /// TCP connections the server accepted during the run.
    connections: u64,
    /// HTTP requests the server answered during the run.
    requests: usize,
}

fn measured(command: &Command, server: &GitServer) -> Measured {
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%M"]).arg(command.get_program());
    timed.args(command.get_args());
    timed.env_clear();
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    let before = server.bytes_sent();
    let connections = server.connection_count();
    let requests = server.request_count();
    let start = Instant::now();
    let child = timed
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/time runs");
    let ended = bounded::wait_all(vec![child], LIMIT).remove(0);
    let wall = start.elapsed();
    let done = ended.finished("benchmark run");
    assert_eq!(done.code, 0, "benchmark run failed:\n{}", done.stderr);
    if std::env::var_os("TOMODA_PROMOTE_BENCH_TRACE").is_some() {
        eprintln!("{}", done.stderr);
        for line in &server.requests()[requests..] {
            eprintln!("bench: request {line}");
        }
    }
    let peak_kib = done
        .stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Measured {
        wall,
        peak_kib,
        bytes: server.bytes_sent() - before,
        connections: server.connection_count() - connections,
        requests: server.request_count() - requests,
    }
}

/// A promotion by the binary, in a fresh directory with nothing of the machine's setup.
fn promotion(bin: &Path, url: &str, app: usize, tag: &str, cwd: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("PROMOTE_NO_VERIFY", "1")
        .env(
            "RUST_LOG",
            std::env::var("TOMODA_PROMOTE_BENCH_TRACE").unwrap_or_default(),
        )
        .args(["--repo", url, "--branch", BRANCH, "--output", "json"])
        .args(["--overlay", &format!("k8s/apps/app{app}/overlays/dev")])
        .args([
            "--image",
            &format!("europe-docker.pkg.dev/tomoda/apps/app{app}:{tag}"),
        ])
        .args(["--max-attempts", "60"]);
    command
}

fn script(url: &str, app: usize, tag: &str, cwd: &Path) -> Command {
    let mut command = Command::new("bash");
    command
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["-c", SCRIPT, "promote"])
        .args([url, &format!("k8s/apps/app{app}/overlays/dev"), tag])
        .arg(cwd.join("clone"));
    command
}

/// Median, min and max of the runs, in milliseconds.
fn spread(times: &[Duration]) -> Value {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "median_ms": round(ms[ms.len() / 2]),
        "min_ms": round(ms[0]),
        "max_ms": round(ms[ms.len() - 1]),
        "runs_ms": ms.iter().copied().map(round).collect::<Vec<_>>(),
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The binary and the script, alternating, `runs` times each on a repository of `apps`.
fn compare(setting: &Setting, repo: &Repo, apps: usize) -> Value {
    let url = repo.url();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..setting.runs {
        let cwd = tempfile::tempdir().expect("temp dir");
        ours.push(measured(
            &promotion(&setting.bin, &url, 7, &format!("tomoda-{run}"), cwd.path()),
            &repo.server,
        ));
        if !setting.script {
            continue;
        }
        let cwd = tempfile::tempdir().expect("temp dir");
        theirs.push(measured(
            &script(&url, 8, &format!("script-{run}"), cwd.path()),
            &repo.server,
        ));
    }
    let side = |runs: &[Measured]| {
        let mut value = spread(&runs.iter().map(|m| m.wall).collect::<Vec<_>>());
        value["peak_rss_kib"] = json!(runs.iter().map(|m| m.peak_kib).max());
        value["bytes_fetched"] = json!(median_u64(runs.iter().map(|m| m.bytes)));
        value["connections"] = json!(median_u64(runs.iter().map(|m| m.connections)));
        value["requests"] = json!(median_u64(runs.iter().map(|m| m.requests as u64)));
        value
    };
    // The same server without partial clone (Bitbucket, a plain git server): libgit2's
    // depth-1 fetch of the whole tree.
    repo.server.allow_filter(false);
    let mut whole = Vec::new();
    for run in 0..setting.runs {
        let cwd = tempfile::tempdir().expect("temp dir");
        whole.push(measured(
            &promotion(&setting.bin, &url, 9, &format!("whole-{run}"), cwd.path()),
            &repo.server,
        ));
    }
    repo.server.allow_filter(true);
    if theirs.is_empty() {
        theirs.push(Measured {
            wall: Duration::from_secs(1),
            peak_kib: 0,
            bytes: 0,
            connections: 0,
            requests: 0,
        });
    }
    let (a, b) = (side(&ours), side(&theirs));
    let without_filter = side(&whole);
    let ratio = a["median_ms"].as_f64().unwrap_or(0.0) / b["median_ms"].as_f64().unwrap_or(1.0);
    let ratio_whole = without_filter["median_ms"].as_f64().unwrap_or(0.0)
        / b["median_ms"].as_f64().unwrap_or(1.0);
    let summary = format!(
        "tomoda-promote median {} ms, {} KiB, {} bytes, {} connections, {} requests; script median {} ms, {} KiB, {} bytes; ratio {:.3}",
        a["median_ms"],
        a["peak_rss_kib"],
        a["bytes_fetched"],
        a["connections"],
        a["requests"],
        b["median_ms"],
        b["peak_rss_kib"],
        b["bytes_fetched"],
        ratio
    );
    json!({
        "apps": apps,
        "tomoda_promote": a,
        "script": b,
        "tomoda_promote_without_filter": without_filter,
        "time_ratio": (ratio * 1000.0).round() / 1000.0,
        "time_ratio_without_filter": (ratio_whole * 1000.0).round() / 1000.0,
        "summary": summary,
    })
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut values: Vec<u64> = values.collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// The unit of the contention goal: the bytes of one fetch of the whole tip tree, as the
/// script's `git clone --depth 1` makes it (its push adds a few hundred bytes).
fn one_full_fetch(setting: &Setting, repo: &Repo, apps: usize) -> u64 {
    let cwd = tempfile::tempdir().expect("temp dir");
    measured(
        &script(&repo.url(), apps / 2, "unit", cwd.path()),
        &repo.server,
    )
    .bytes
    .max(u64::from(!setting.script))
}

/// `n` promoters of different apps into one branch at once.
fn contend(setting: &Setting, repo: &Repo, repo_apps: usize, n: usize, full_fetch: u64) -> Value {
    let url = repo.url();
    let before = repo.server.bytes_sent();
    let cwds: Vec<tempfile::TempDir> = (0..n)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let start = Instant::now();
    let children = cwds
        .iter()
        .enumerate()
        .map(|(i, cwd)| {
            promotion(
                &setting.bin,
                &url,
                (100 + i) % repo_apps,
                &format!("race-{n}-{i}"),
                cwd.path(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts")
        })
        .collect();
    let ended = bounded::wait_all(children, LIMIT);
    let all_landed = start.elapsed();
    let bytes = repo.server.bytes_sent() - before;
    let mut attempts = Vec::new();
    let mut failed = 0;
    for e in &ended {
        let json: Value = serde_json::from_str(&e.done.stdout).unwrap_or(Value::Null);
        match json["attempts"].as_u64() {
            Some(a) if e.done.code == 0 && !e.killed => attempts.push(a),
            _ => {
                failed += 1;
                eprintln!("bench: a promoter failed: {}", e.done.stderr);
            }
        }
    }
    let mean = attempts.iter().sum::<u64>() as f64 / attempts.len().max(1) as f64;
    let full_fetches = bytes as f64 / full_fetch.max(1) as f64;
    json!({
        "promoters": n,
        "all_landed_ms": round(all_landed.as_secs_f64() * 1e3),
        "attempts": attempts,
        "attempts_mean": round(mean),
        "attempts_max": attempts.iter().max(),
        "failed": failed,
        "bytes_fetched": bytes,
        "bytes_in_full_fetches": (full_fetches * 100.0).round() / 100.0,
        "summary": format!(
            "all landed in {:.0} ms, attempts mean {mean:.1} max {:?}, {bytes} bytes ({full_fetches:.2} full fetches), {failed} failed",
            all_landed.as_secs_f64() * 1e3,
            attempts.iter().max()
        ),
    })
}

/// Median wall time of `--version` over 200 runs, in milliseconds.
fn version_startup(bin: &Path) -> f64 {
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .expect("--version runs");
            assert!(status.success());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2].as_secs_f64() * 1e5).round() / 100.0
}

fn image_size() -> Option<u64> {
    let image = std::env::var("TOMODA_PROMOTE_BENCH_IMAGE")
        .unwrap_or_else(|_| "localhost/tomoda-promote:test".into());
    let out = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", &image])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// When and where: the date, the CPU, the cores and the memory, the git and the commit.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |l| l.trim_start_matches([' ', '\t', ':']))
        .to_string();
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let git = output("git", &["--version"]);
    let commit = output("git", &["rev-parse", "--short", "HEAD"]);
    let summary = format!(
        "{date}, {nproc} cores of {cpu}, {:.1} GiB memory, {git}, commit {commit}",
        memory_kib as f64 / 1024.0 / 1024.0
    );
    json!({
        "date": date,
        "nproc": nproc,
        "cpu": cpu,
        "memory_kib": memory_kib,
        "git": git,
        "commit": commit,
        "summary": summary,
    })
}

/// The issue's goals, each with the measured value and whether it is met (said, not asserted).
fn with_goals(mut report: Value) -> Value {
    let mut goals = Vec::new();
    let mut goal = |goal: String, measured: String, met: Option<bool>| {
        goals.push(json!({"goal": goal, "measured": measured, "met": met}));
    };
    let sizes = report["sizes"].as_array().cloned().unwrap_or_default();
    for size in &sizes {
        let apps = size["apps"].as_u64().unwrap_or(0);
        let limit = if apps <= 100 { 0.2 } else { 0.02 };
        let ratio = size["time_ratio"].as_f64();
        goal(
            format!("wall time at {apps} apps ≤ {limit} × the script"),
            ratio.map_or("-".into(), |r| {
                format!(
                    "{r:.3} × ({} ms vs {} ms)",
                    size["tomoda_promote"]["median_ms"], size["script"]["median_ms"]
                )
            }),
            ratio.map(|r| r <= limit),
        );
    }
    if let Some(largest) = sizes.iter().max_by_key(|s| s["apps"].as_u64()) {
        let kib = largest["tomoda_promote"]["peak_rss_kib"]
            .as_u64()
            .unwrap_or(0);
        goal(
            format!("peak RSS ≤ 16 MB at {} apps", largest["apps"]),
            format!(
                "{:.1} MB (script: {:.1} MB; from a server without filter: {:.1} MB)",
                kib as f64 / 1024.0,
                largest["script"]["peak_rss_kib"].as_u64().unwrap_or(0) as f64 / 1024.0,
                largest["tomoda_promote_without_filter"]["peak_rss_kib"]
                    .as_u64()
                    .unwrap_or(0) as f64
                    / 1024.0
            ),
            Some(kib <= 16 * 1024),
        );
    }
    for contention in report["contention"].as_array().into_iter().flatten() {
        let Some(run) = contention["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["promoters"] == 32))
        else {
            continue;
        };
        let apps = &contention["apps"];
        let ms = run["all_landed_ms"].as_f64().unwrap_or(f64::MAX);
        goal(
            format!("32 concurrent promoters all land ≤ 5 s ({apps} apps)"),
            format!("{:.2} s, {} failed", ms / 1e3, run["failed"]),
            Some(ms <= 5000.0 && run["failed"] == 0),
        );
        let full = run["bytes_in_full_fetches"].as_f64().unwrap_or(f64::MAX);
        goal(
            format!("32 promoters: bytes fetched in all ≤ 3 × one full fetch ({apps} apps)"),
            format!(
                "{full:.2} × ({} bytes; one full fetch {} bytes)",
                run["bytes_fetched"], contention["one_full_fetch_bytes"]
            ),
            Some(full <= 3.0),
        );
    }
    let startup = report["version_startup_ms"].as_f64().unwrap_or(f64::MAX);
    goal(
        "`--version` ≤ 5 ms".into(),
        format!("{startup:.2} ms (median of 200)"),
        Some(startup <= 5.0),
    );
    let binary = report["binary_bytes"].as_u64();
    goal(
        "binary ≤ 8 MB".into(),
        binary.map_or("-".into(), |b| format!("{:.2} MB", b as f64 / 1e6)),
        binary.map(|b| b <= 8_000_000),
    );
    report["goals"] = Value::Array(goals);
    report
}

fn markdown(report: &Value) -> String {
    let mut md = String::new();
    let taken = &report["taken"];
    let _ = writeln!(md, "# tomoda-promote benchmark\n");
    let _ = writeln!(
        md,
        "Taken {} on {} cores of {}, {:.1} GiB memory; {}; commit {}; {} runs per cell. Loopback, git http-backend behind a TCP_NODELAY keep-alive server. The script is `git clone --depth 1`, `sed`, `git commit`, `git push`.\n",
        taken["date"].as_str().unwrap_or("?"),
        taken["nproc"],
        taken["cpu"].as_str().unwrap_or("?"),
        taken["memory_kib"].as_f64().unwrap_or(0.0) / 1024.0 / 1024.0,
        taken["git"].as_str().unwrap_or("?"),
        taken["commit"].as_str().unwrap_or("?"),
        report["runs"]
    );
    let _ = writeln!(md, "## Goals\n\n| goal | measured | met |\n|---|---|---|");
    for g in report["goals"].as_array().into_iter().flatten() {
        let met = match g["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {met} |",
            g["goal"].as_str().unwrap_or(""),
            g["measured"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        md,
        "\n## One promotion\n\nThe server offers partial clone (`uploadpack.allowFilter`, as GitHub and GitLab do); the last columns are the same promotion from a server that does not (libgit2's depth-1 fetch of the whole tree).\n\n| apps | tomoda-promote median (min–max) | script median (min–max) | time ratio | peak RSS ours / script | bytes fetched ours / script | without filter: median, ratio, peak RSS, bytes |\n|---|---|---|---|---|---|---|"
    );
    for s in report["sizes"].as_array().into_iter().flatten() {
        let (a, b, w) = (
            &s["tomoda_promote"],
            &s["script"],
            &s["tomoda_promote_without_filter"],
        );
        let _ = writeln!(
            md,
            "| {} | {} ms ({}–{}) | {} ms ({}–{}) | {} | {:.1} MB / {:.1} MB | {} / {} | {} ms, {}, {:.1} MB, {} |",
            s["apps"],
            a["median_ms"],
            a["min_ms"],
            a["max_ms"],
            b["median_ms"],
            b["min_ms"],
            b["max_ms"],
            s["time_ratio"],
            a["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            b["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            a["bytes_fetched"],
            b["bytes_fetched"],
            w["median_ms"],
            s["time_ratio_without_filter"],
            w["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            w["bytes_fetched"]
        );
    }
    for contention in report["contention"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "\n## Concurrent promoters of different images into one branch ({} apps; one full fetch = {} bytes)\n\n| promoters | all landed | attempts mean / max | bytes fetched in all | in full fetches | failed |\n|---|---|---|---|---|---|",
            contention["apps"], contention["one_full_fetch_bytes"]
        );
        for r in contention["runs"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {} ms | {} / {} | {} | {} | {} |",
                r["promoters"],
                r["all_landed_ms"],
                r["attempts_mean"],
                r["attempts_max"],
                r["bytes_fetched"],
                r["bytes_in_full_fetches"],
                r["failed"]
            );
        }
    }
    let connections: Vec<String> = report["sizes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} at {} apps (script: {})",
                s["tomoda_promote"]["connections"], s["apps"], s["script"]["connections"]
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "\nTCP connections per promotion (the server keeps them alive): {}.",
        connections.join(", ")
    );
    let _ = writeln!(
        md,
        "\n## One promotion by git and by the forge API (`commit_via: api`)\n\nThe API path against the local GitHub-style forge server (a real bare repo behind GitHub's documented answers); the git path against git http-backend, both loopback, medians over {} runs. The overlays here are one file per app (`apps/<app>/overlays/dev`).\n\n| apps | git: median, requests | API: median, requests |\n|---|---|---|",
        report["runs"]
    );
    for row in report["forge_api"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} ms, {} | {} ms, {} |",
            row["apps"],
            row["git"]["median_ms"],
            row["git"]["requests"],
            row["api"]["median_ms"],
            row["api"]["requests"]
        );
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "## Start-up and size\n\n| `--version` median | binary | image |\n|---|---|---|\n| {} ms | {} | {} |",
        report["version_startup_ms"],
        report["binary_bytes"]
            .as_u64()
            .map_or("-".into(), |b| format!("{b} bytes")),
        report["image_bytes"]
            .as_u64()
            .map_or("not built (podman image absent)".into(), |b| format!(
                "{b} bytes"
            )),
    );
    md
}

/// Median wall time against repository size, both axes logarithmic, one line each.
fn chart(report: &Value) -> String {
    let sizes: Vec<&Value> = report["sizes"].as_array().into_iter().flatten().collect();
    let series = |key: &str| -> Vec<(f64, f64)> {
        sizes
            .iter()
            .map(|s| {
                (
                    s["apps"].as_f64().unwrap_or(1.0),
                    s[key]["median_ms"].as_f64().unwrap_or(1.0),
                )
            })
            .collect()
    };
    let ours = series("tomoda_promote");
    let theirs = series("script");
    let whole = series("tomoda_promote_without_filter");
    let all: Vec<(f64, f64)> = ours.iter().chain(&theirs).chain(&whole).copied().collect();
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let lx = |v: f64| v.max(1.0).log10();
    let (x0, x1) = (
        lx(all.iter().map(|p| p.0).fold(f64::MAX, f64::min)).floor(),
        lx(all.iter().map(|p| p.0).fold(1.0, f64::max)).ceil(),
    );
    let (y0, y1) = (
        lx(all.iter().map(|p| p.1).fold(f64::MAX, f64::min)).floor(),
        lx(all.iter().map(|p| p.1).fold(1.0, f64::max)).ceil(),
    );
    let (x1, y1) = (x1.max(x0 + 1.0), y1.max(y0 + 1.0));
    let px = |v: f64| left + (lx(v) - x0) / (x1 - x0) * (w - left - right);
    let py = |v: f64| h - bottom - (lx(v) - y0) / (y1 - y0) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">Promotion of one image: median wall time ({})</text>\n",
        w / 2.0,
        report["taken"]["date"].as_str().unwrap_or("")
    );
    let mut decade = y0;
    while decade <= y1 {
        let v = 10f64.powf(decade);
        let y = py(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{} ms</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            v
        );
        decade += 1.0;
    }
    for s in &sizes {
        let apps = s["apps"].as_f64().unwrap_or(1.0);
        let x = px(apps);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{apps} apps</text>",
            h - bottom,
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for (points, colour, name, dy) in [
        (&ours, "#1f77b4", "tomoda-promote", -8.0),
        (
            &whole,
            "#7f7f7f",
            "tomoda-promote, server without partial clone",
            -8.0,
        ),
        (
            &theirs,
            "#d62728",
            "shell script (git clone --depth 1, sed, commit, push)",
            16.0,
        ),
    ] {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{y:.0}</text>",
                px(x),
                py(y),
                px(x),
                py(y) + dy
            );
        }
        if let Some(&(x, y)) = points.last() {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{colour}\">{name}</text>",
                px(x) - 8.0,
                py(y) + dy + 14.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// One promotion through git and one through the (GitHub) API at 100 and at 10,000 apps:
/// wall time and requests of each, side by side (the API path reads one file and writes one
/// commit whatever the repository's size).
fn forge_api(setting: &Setting) -> Value {
    use crate::dsl::Devops;
    use crate::forge_server::{ForgeServer, Style};
    let token = "bench-token-0123456789";
    let median = |mut times: Vec<Duration>| {
        times.sort();
        round(times[times.len() / 2].as_secs_f64() * 1e3)
    };
    let mut rows = Vec::new();
    for apps in [100, 10_000] {
        let devops = Devops::apps(apps);
        let forge = ForgeServer::start(Style::GitHub, &devops.bare(), token);
        let config = format!(
            "forge: github\napi_url: {}\nrepo: {}\nenvironments:\n  dev:\n    when: commit\n    overlay: apps/app7/overlays/dev\n    images:\n      - name: reg/app7\n        tag: v0\n",
            forge.api_url(),
            forge.repo_url()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("promote.yaml"), config).unwrap();
        let mut git_times = Vec::new();
        let mut api_times = Vec::new();
        let (mut git_requests, mut api_requests) = (0, 0);
        for n in 1..=setting.runs {
            for via in ["git", "api"] {
                let before = (devops.server.request_count(), forge.requests().len());
                let start = Instant::now();
                let mut command = std::process::Command::new(&setting.bin);
                command
                    .current_dir(dir.path())
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .env("PROMOTE_NO_VERIFY", "1")
                    .env("GIT_TOKEN", token)
                    .args([
                        "--commit-via",
                        via,
                        "--image",
                        &format!("reg/app7:{via}{n}"),
                    ]);
                if via == "git" {
                    command.args(["--repo", &devops.url()]);
                }
                let out = command.output().expect("the binary runs");
                let took = start.elapsed();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if via == "git" {
                    git_times.push(took);
                    git_requests = devops.server.request_count() - before.0;
                } else {
                    api_times.push(took);
                    api_requests = forge.requests().len() - before.1;
                }
            }
        }
        let row = json!({
            "apps": apps,
            "git": {"median_ms": median(git_times), "requests": git_requests},
            "api": {"median_ms": median(api_times), "requests": api_requests},
        });
        eprintln!("bench: one promotion at {apps} apps, git and API: {row}");
        rows.push(row);
    }
    Value::Array(rows)
}
