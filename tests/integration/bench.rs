//! The benchmark's promotion timing: not a test (it asserts nothing about speed), run by
//! `scripts/bench` with `--ignored`. It promotes into a devops repository of realistic size
//! through the real git server and prints wall time per promotion and the peak memory of one.

use std::time::{Duration, Instant};

use crate::dsl::*;

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn bench_promotion() {
    let bin = std::env::var("TOMODA_PROMOTE_BENCH_BIN").unwrap_or_else(|_| BIN.to_string());
    // 400 apps with an overlay each, plus a 4 MB blob of history-free manifests: a large devops repo.
    let mut files: Vec<(String, String)> = (0..400)
        .map(|n| {
            (
                format!("apps/app{n}/overlays/dev/kustomization.yaml"),
                format!("resources: [../../base]\nimages:\n- name: reg/app{n}\n  newTag: v0\n"),
            )
        })
        .collect();
    files.push((
        "manifests/big.yaml".into(),
        "x: ".to_string() + &"y".repeat(4 << 20) + "\n",
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let devops = Devops::with_files(&refs);
    let runs = 10;
    let mut times = Vec::new();
    let mut peak_kb = 0u64;
    for n in 1..=runs {
        let start = Instant::now();
        let out = std::process::Command::new("/usr/bin/time")
            .args([
                "-f",
                "%M",
                &bin,
                "--repo",
                &devops.url(),
                "--overlay",
                "apps/app7/overlays/dev",
                "--image",
                &format!("reg/app7:v{n}"),
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PROMOTE_NO_VERIFY", "1")
            .output()
            .expect("/usr/bin/time runs");
        times.push(start.elapsed());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        peak_kb = peak_kb.max(
            stderr
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0),
        );
    }
    times.sort();
    let median = times[runs / 2];
    let total: Duration = times.iter().sum();
    eprintln!(
        "bench: promotion into a 400-overlay, 4 MB repo over local smart HTTP: median {:.0} ms, min {:.0} ms, max {:.0} ms, mean {:.0} ms over {runs} runs; peak RSS {} KiB",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / f64::from(u32::try_from(runs).expect("few runs")),
        peak_kb
    );
}

/// One promotion through git and one through the (GitHub) API at 100 and at 10,000 apps:
/// wall time and requests, printed next to each other. Run by `scripts/bench` (its
/// `bench_promotion` filter takes this one too).
#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn bench_promotion_git_and_api_by_repo_size() {
    use crate::forge_server::{ForgeServer, Style};
    let bin = std::env::var("TOMODA_PROMOTE_BENCH_BIN").unwrap_or_else(|_| BIN.to_string());
    let token = "bench-token-0123456789";
    let runs = 5;
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1e3
    };
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
        for n in 1..=runs {
            for via in ["git", "api"] {
                let before = (devops.server.request_count(), forge.requests().len());
                let start = Instant::now();
                let mut command = std::process::Command::new(&bin);
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
        eprintln!(
            "bench: one promotion at {apps} apps: git {:.0} ms ({git_requests} requests), api {:.0} ms ({api_requests} requests); medians over {runs} runs, loopback",
            median(git_times),
            median(api_times)
        );
    }
}
