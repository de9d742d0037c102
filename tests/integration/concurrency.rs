//! No lost update: many processes of the binary promoting into one branch at once, through
//! the real git server. Each push is a compare-and-swap; a loser re-applies its edit on
//! the new tip. Every child is waited with a deadline and killed past it.

use std::time::{Duration, Instant};

use crate::bounded;
use crate::dsl::*;

/// No child may run longer than this.
const LIMIT: Duration = Duration::from_secs(120);
const OVERLAY: &str = "k8s/apps/tomoda/overlays/dev";
const PROMOTERS: usize = 32;

fn kustomization(tag: impl Fn(usize) -> String) -> String {
    let mut out = String::from("# 32 services, one overlay\nresources:\n  - ../../base\nimages:\n");
    for i in 0..PROMOTERS {
        out.push_str(&format!(
            "  - name: reg.example/tomoda/app-{i:02}\n    newTag: {}\n",
            tag(i)
        ));
    }
    out
}

#[test]
fn thirty_two_promotions_of_different_images_at_once_all_land_in_32_commits() {
    let devops = Devops::with_files(&[(DEV, kustomization(|i| format!("old-{i:02}")))]);
    let before = devops.head();
    let url = devops.url();
    let start = Instant::now();
    let (children, cwds): (Vec<_>, Vec<_>) = (0..PROMOTERS)
        .map(|i| {
            Run::new()
                .sha(SHA)
                .args(["--repo", &url, "--overlay", OVERLAY, "--output", "json"])
                .args([
                    "--image",
                    &format!("reg.example/tomoda/app-{i:02}:new-{i:02}"),
                ])
                .args(["--max-attempts", "40"])
                .spawn()
        })
        .unzip();
    let ended = bounded::wait_all(children, LIMIT);
    let wall = start.elapsed();
    drop(cwds);

    let mut attempts = Vec::new();
    let mut commits = Vec::new();
    let mut failures = Vec::new();
    for (i, e) in ended.iter().enumerate() {
        if e.killed || e.done.code != 0 {
            failures.push(format!(
                "promoter {i}: exit {} after {:?}{}\n{}",
                e.done.code,
                e.elapsed,
                if e.killed { " (killed)" } else { "" },
                e.done.stderr
            ));
            continue;
        }
        let json = e.done.json();
        assert_eq!(json["pushed"], true, "promoter {i}: {}", e.done.stdout);
        attempts.push(json["attempts"].as_u64().unwrap());
        commits.push(json["commit"].as_str().unwrap().to_string());
    }
    let mut sorted = attempts.clone();
    sorted.sort_unstable();
    eprintln!(
        "{PROMOTERS} promoters in {wall:?}; attempts each needed: {attempts:?}; min {}, median {}, max {}, total {} rounds",
        sorted.first().unwrap_or(&0),
        sorted.get(sorted.len() / 2).unwrap_or(&0),
        sorted.last().unwrap_or(&0),
        sorted.iter().sum::<u64>()
    );
    let slowest = ended.iter().map(|e| e.elapsed).max().unwrap_or_default();
    eprintln!("slowest promoter took {slowest:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert_eq!(
        devops.file(DEV),
        kustomization(|i| format!("new-{i:02}")),
        "every promotion is in the final tree"
    );
    assert_eq!(
        git(
            &devops.bare(),
            &["rev-list", "--count", &format!("{before}..main")]
        )
        .trim(),
        PROMOTERS.to_string(),
        "exactly one commit per promotion"
    );
    let history = git(&devops.bare(), &["rev-list", &format!("{before}..main")]);
    let mut landed: Vec<&str> = history.lines().collect();
    landed.sort_unstable();
    commits.sort_unstable();
    assert_eq!(
        landed, commits,
        "the commits reported are the commits on the branch"
    );
    // Each commit changes one image's tag and nothing else: none undoes another.
    for commit in history.lines() {
        let diff = git(
            &devops.bare(),
            &["diff", "--unified=0", &format!("{commit}^"), commit],
        );
        let removed: Vec<_> = diff.lines().filter(|l| l.starts_with("-  ")).collect();
        let added: Vec<_> = diff.lines().filter(|l| l.starts_with("+  ")).collect();
        assert!(
            removed.len() == 1
                && added.len() == 1
                && removed[0].contains("newTag: old-")
                && added[0].contains("newTag: new-"),
            "commit {commit} should change one tag from old to new:\n{diff}"
        );
    }
}

/// Same image, two promotions with different values at once: the branch ends holding one
/// of them whole (newName, newTag and digest from the same promotion), in exactly two
/// commits, the later one on top of the earlier one.
#[test]
fn two_promotions_of_the_same_image_at_once_end_in_one_of_them_whole() {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let images = [
        format!(
            "{IMAGE}=reg.example/mirror-a/tomoda-backend:tag-a@{}",
            digest('a')
        ),
        format!(
            "{IMAGE}=reg.example/mirror-b/tomoda-backend:tag-b@{}",
            digest('b')
        ),
    ];
    let promote = |url: &str, image: &str| {
        Run::new()
            .sha(SHA)
            .args(["--repo", url, "--overlay", OVERLAY, "--output", "json"])
            .args(["--image", image, "--max-attempts", "20"])
    };

    // What each promotion alone makes of the file.
    let expected: Vec<String> = images
        .iter()
        .map(|image| {
            let alone = Devops::tomoda();
            let (done, _) = bounded::run(promote(&alone.url(), image), LIMIT);
            done.ok();
            alone.file(DEV)
        })
        .collect();
    for (state, tag) in expected.iter().zip(["a", "b"]) {
        assert!(
            state.contains(&format!("newTag: \"tag-{tag}\""))
                && state.contains(&format!("newName: reg.example/mirror-{tag}/tomoda-backend"))
                && state.contains(&digest(tag.chars().next().unwrap())),
            "{state}"
        );
    }

    for round in 1..=3 {
        let devops = Devops::tomoda();
        let base = devops.head();
        let url = devops.url();
        let (children, cwds): (Vec<_>, Vec<_>) = images
            .iter()
            .map(|image| promote(&url, image).spawn())
            .unzip();
        let ended = bounded::wait_all(children, LIMIT);
        drop(cwds);
        let jsons: Vec<_> = ended
            .iter()
            .map(|e| {
                e.finished("a racing promoter").ok();
                e.done.json()
            })
            .collect();
        let attempts: Vec<_> = jsons
            .iter()
            .map(|j| j["attempts"].as_u64().unwrap_or(0))
            .collect();
        eprintln!("round {round}: attempts {attempts:?}");
        for json in &jsons {
            assert_eq!(json["pushed"], true, "{json}");
        }

        let head = devops.head();
        let winner = jsons
            .iter()
            .position(|j| j["commit"] == head.as_str())
            .unwrap_or_else(|| panic!("the tip {head} is one of the promotions: {jsons:?}"));
        let loser = 1 - winner;
        assert_eq!(
            devops.file(DEV),
            expected[winner],
            "round {round}: the final state is one promotion, whole"
        );
        let parent = git(&devops.bare(), &["rev-parse", "main^"]);
        assert_eq!(
            parent.trim(),
            jsons[loser]["commit"].as_str().unwrap(),
            "round {round}: the other promotion is the commit below"
        );
        assert_eq!(
            git(&devops.bare(), &["show", &format!("main^:{DEV}")]),
            expected[loser],
            "round {round}: and it too was whole"
        );
        assert_eq!(
            git(&devops.bare(), &["rev-parse", "main~2"]).trim(),
            base,
            "round {round}: exactly two commits"
        );
    }
}
