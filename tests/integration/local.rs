//! A local clone as the devops repository (issue 15, item 6): an ordinary clone with a
//! work tree gets the commit as `git commit` would put it there, a dirty one is refused,
//! `--plan` changes nothing, and a bare local repository is still pushed to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::dsl::*;

const OVERLAY: &str = "k8s/apps/tomoda/overlays/dev";
const HINT: &str = "commit or stash your changes in ";

/// The tomoda promote.yaml with `repo:` the local path `repo`, run for a commit build.
fn promote(repo: &Path) -> Run {
    Run::new()
        .config(&tomoda_config(repo.to_str().unwrap()))
        .sha(SHA)
}

/// Every file under `dir` (the .git directory included) with its size and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                files.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    files
}

/// The files of `before` and `after` that differ, were added or went away.
fn changed_files(
    before: &BTreeMap<PathBuf, (u64, SystemTime)>,
    after: &BTreeMap<PathBuf, (u64, SystemTime)>,
    root: &Path,
) -> Vec<String> {
    let mut paths: Vec<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect()
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap()
}

fn rev(dir: &Path, rev: &str) -> String {
    git(dir, &["rev-parse", rev]).trim().to_string()
}

#[test]
fn a_clean_checkout_of_the_branch_gets_the_commit_and_a_matching_work_tree() {
    let devops = Devops::tomoda();
    let upstream = devops.head();
    let clone = devops.checkout();
    let dir = clone.path();
    std::fs::write(dir.join("notes.txt"), "untracked, and fine\n").unwrap();
    let before = rev(dir, "HEAD");
    let files_before = snapshot(dir);

    let done = promote(dir).env("BUILD_ID", "build-9").run();
    done.ok()
        .stdout_has("committed ")
        .stdout_has(&format!("to branch main of {} (attempt", dir.display()));
    // Nothing went to a server: the result does not say pushed.
    assert!(!done.stdout.contains("pushed "), "{}", done.stdout);

    let head = rev(dir, "HEAD");
    assert_ne!(head, before);
    assert_eq!(rev(dir, "main"), head, "on the checked-out branch");
    assert_eq!(
        git(dir, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    assert_eq!(rev(dir, "HEAD^"), before);
    let log = git(dir, &["log", "-1", "--format=%an%n%B"]);
    assert!(
        log.starts_with("tomoda-promote\npromote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7\n"),
        "{log}"
    );
    assert!(log.contains("Build-Id: build-9"), "{log}");
    assert_eq!(
        git(dir, &["diff", "--name-only", "HEAD^", "HEAD"]).trim(),
        DEV
    );

    // The work tree and the index match the new commit; the untracked file stays.
    assert_eq!(git(dir, &["status", "--porcelain"]), "?? notes.txt\n");
    assert_eq!(read(dir, DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
    assert_eq!(read(dir, "notes.txt"), "untracked, and fine\n");
    let work_tree_changes: Vec<String> = changed_files(&files_before, &snapshot(dir), dir)
        .into_iter()
        .filter(|p| !p.starts_with(".git/"))
        .collect();
    assert_eq!(
        work_tree_changes,
        vec![DEV.to_string()],
        "only the edited file"
    );

    let rendered = kustomize_render(dir, OVERLAY);
    assert!(
        rendered.contains(&format!("image: {IMAGE}:{SHA}")),
        "{rendered}"
    );
    assert_eq!(devops.head(), upstream, "nothing pushed upstream");
    // The copied objects are whole and the branch's history connected.
    git(dir, &["fsck", "--strict", "--no-progress"]);

    // As with a remote, a rerun finds nothing to do.
    promote(dir).run().ok().stdout_has("already up to date");
    assert_eq!(rev(dir, "HEAD"), head);
}

#[test]
fn a_checkout_with_uncommitted_changes_is_refused_and_nothing_committed() {
    let devops = Devops::tomoda();
    for staged in [false, true] {
        let clone = devops.checkout();
        let dir = clone.path();
        let before = rev(dir, "HEAD");
        let edited = tomoda_file(PROD).replace("v1.4.0", "v1.4.9");
        std::fs::write(dir.join(PROD), &edited).unwrap();
        if staged {
            git(dir, &["add", PROD]);
        }
        let done = promote(dir).run();
        done.code(2)
            .stderr_has(&format!(
                "branch main is checked out in {} with uncommitted changes ({PROD})",
                dir.display()
            ))
            .stderr_has(&format!(
                "hint: {HINT}{}, or point --repo at the remote",
                dir.display()
            ));
        assert!(!done.stderr.contains("network"), "{}", done.stderr);
        assert_eq!(
            rev(dir, "HEAD"),
            before,
            "nothing committed (staged: {staged})"
        );
        assert_eq!(read(dir, DEV), tomoda_file(DEV), "dev untouched");
        assert_eq!(read(dir, PROD), edited, "the change is kept");
        let status = if staged { "M  " } else { " M " };
        assert_eq!(
            git(dir, &["status", "--porcelain"]),
            format!("{status}{PROD}\n")
        );
    }
}

#[test]
fn a_checkout_whose_index_another_git_holds_is_left_alone() {
    let devops = Devops::tomoda();
    let clone = devops.checkout();
    let dir = clone.path();
    let before = rev(dir, "HEAD");
    let lock = dir.join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    promote(dir)
        .run()
        .code(1)
        .stderr_has("its index is locked by another git process")
        .stderr_has("remove that file if no git process is running there");
    std::fs::remove_file(lock).unwrap();
    assert_eq!(rev(dir, "HEAD"), before, "nothing committed");
    assert_eq!(read(dir, DEV), tomoda_file(DEV));
    assert_eq!(git(dir, &["status", "--porcelain"]), "");
}

#[test]
fn plan_against_a_checkout_changes_nothing_clean_or_dirty() {
    let devops = Devops::tomoda();
    let clone = devops.checkout();
    let dir = clone.path();
    for dirty in [false, true] {
        if dirty {
            std::fs::write(dir.join(PROD), "# being edited\n").unwrap();
        }
        let before = snapshot(dir);
        promote(dir)
            .args(["--plan"])
            .run()
            .ok()
            .stdout_has(&format!(
                "-    newTag: \"{OLD_SHA}\" # set by CI\n+    newTag: \"{SHA}\" # set by CI\n"
            ))
            .stdout_has("nothing was committed or pushed");
        assert_eq!(
            changed_files(&before, &snapshot(dir), dir),
            Vec::<String>::new(),
            "dirty: {dirty}"
        );
    }
    assert_eq!(read(dir, DEV), tomoda_file(DEV));
    assert_eq!(git(dir, &["rev-list", "--count", "main"]).trim(), "1");
}

#[test]
fn a_branch_not_checked_out_is_moved_and_the_work_tree_left_alone() {
    let devops = Devops::tomoda();
    let clone = devops.checkout();
    let dir = clone.path();
    let before = rev(dir, "main");
    git(dir, &["checkout", "-q", "-b", "feature"]);
    // Work in progress on another branch is no business of the promotion.
    std::fs::write(dir.join(DEV), "# work in progress\n").unwrap();
    let files_before = snapshot(dir);

    promote(dir).run().ok().stdout_has("committed ");

    assert_eq!(rev(dir, "main^"), before);
    assert_eq!(
        git(dir, &["show", &format!("main:{DEV}")]),
        tomoda_file(DEV).replace(OLD_SHA, SHA)
    );
    assert_eq!(
        git(dir, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/feature"
    );
    assert_eq!(rev(dir, "HEAD"), before);
    assert_eq!(read(dir, DEV), "# work in progress\n");
    assert_eq!(git(dir, &["status", "--porcelain"]), format!(" M {DEV}\n"));
    let work_tree_changes: Vec<String> = changed_files(&files_before, &snapshot(dir), dir)
        .into_iter()
        .filter(|p| !p.starts_with(".git/"))
        .collect();
    assert_eq!(work_tree_changes, Vec::<String>::new());
}

#[test]
fn a_branch_checked_out_in_another_worktree_is_promoted_there_not_under_it() {
    let devops = Devops::tomoda();
    let clone = devops.checkout();
    let dir = clone.path();
    let before = rev(dir, "main");
    git(dir, &["checkout", "-q", "-b", "feature"]);
    let linked = tempfile::tempdir().unwrap();
    let linked_dir = linked.path().join("main");
    git(
        dir,
        &[
            "worktree",
            "add",
            "-q",
            linked_dir.to_str().unwrap(),
            "main",
        ],
    );

    promote(dir)
        .run()
        .code(2)
        .stderr_has(&format!(
            "branch main of {} is checked out in the work tree {}",
            dir.display(),
            linked_dir.display()
        ))
        .stderr_has(&format!("point --repo at {}", linked_dir.display()));
    assert_eq!(rev(dir, "main"), before, "nothing committed");

    promote(&linked_dir).run().ok();
    assert_eq!(rev(&linked_dir, "HEAD^"), before);
    assert_eq!(
        read(&linked_dir, DEV),
        tomoda_file(DEV).replace(OLD_SHA, SHA)
    );
    assert_eq!(git(&linked_dir, &["status", "--porcelain"]), "");
    assert_eq!(
        read(dir, DEV),
        tomoda_file(DEV),
        "the other work tree untouched"
    );
}

#[test]
fn a_bare_local_repository_is_still_pushed_to() {
    let devops = Devops::tomoda();
    let before = devops.head();
    promote(&devops.bare()).run().ok().stdout_has("committed ");
    assert_eq!(git(&devops.bare(), &["rev-parse", "main^"]).trim(), before);
    assert_eq!(devops.file(DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
}

#[test]
fn the_issue_s_command_line_promotes_a_clone_given_by_a_relative_path() {
    let devops = Devops::tomoda();
    let parent = tempfile::tempdir().unwrap();
    let bare = devops.bare();
    git(
        parent.path(),
        &["clone", "-q", bare.to_str().unwrap(), "devops"],
    );
    let dir = parent.path().join("devops");
    let before = rev(&dir, "HEAD");
    let done = Run::new()
        .in_dir(parent.path())
        .args(["--repo", "./devops", "--overlay", OVERLAY])
        .args(["--image", &format!("{IMAGE}:{SHA}"), "--output", "json"])
        .run();
    let json = done.ok().json();
    assert_eq!(json["pushed"], true);
    assert_eq!(json["commit"], rev(&dir, "HEAD").as_str());
    assert_eq!(rev(&dir, "HEAD^"), before);
    assert_eq!(read(&dir, DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
    assert_eq!(git(&dir, &["status", "--porcelain"]), "");
}

#[test]
fn promotions_into_one_checkout_at_once_all_land_and_leave_it_clean() {
    const PROMOTERS: usize = 6;
    let dev: String = (0..PROMOTERS)
        .map(|i| format!("  - name: reg.example/app-{i}\n    newTag: old-{i}\n"))
        .collect();
    let devops = Devops::with_files(&[(DEV, format!("images:\n{dev}"))]);
    let clone = devops.checkout();
    let dir = clone.path();
    let before = rev(dir, "HEAD");
    let (children, cwds): (Vec<_>, Vec<_>) = (0..PROMOTERS)
        .map(|i| {
            Run::new()
                .args(["--repo", dir.to_str().unwrap(), "--overlay", OVERLAY])
                .args(["--image", &format!("reg.example/app-{i}:new-{i}")])
                .args(["--max-attempts", "20"])
                .spawn()
        })
        .unzip();
    let ended = crate::bounded::wait_all(children, std::time::Duration::from_secs(120));
    drop(cwds);
    for (i, e) in ended.iter().enumerate() {
        e.finished(&format!("promoter {i}"));
        assert_eq!(e.done.code, 0, "promoter {i}:\n{}", e.done.stderr);
    }
    assert_eq!(
        read(dir, DEV),
        format!("images:\n{dev}").replace("old-", "new-")
    );
    let count = git(dir, &["rev-list", "--count", &format!("{before}..HEAD")]);
    assert_eq!(count.trim(), PROMOTERS.to_string(), "one commit each");
    assert_eq!(git(dir, &["status", "--porcelain"]), "");
}

#[test]
fn hold_and_unhold_of_a_checkout_say_committed_as_a_promotion_does() {
    let devops = Devops::tomoda();
    let upstream = devops.head();
    let clone = devops.checkout();
    let dir = clone.path();
    let run = |args: &[&str]| {
        Run::new()
            .config(&tomoda_config(dir.to_str().unwrap()))
            .args(args)
            .env("USER", "alice")
            .run()
    };

    let done = run(&["hold", "--env", "dev", "--reason", "incident"]);
    done.ok().stdout_has("hold dev: committed ");
    assert!(!done.stdout.contains("pushed"), "{}", done.stdout);
    assert!(read(dir, ".promote/holds.yaml").contains("incident"));
    let done = run(&["unhold", "--env", "dev"]);
    done.ok().stdout_has("unhold dev: committed ");
    assert!(!done.stdout.contains("pushed"), "{}", done.stdout);
    assert!(!read(dir, ".promote/holds.yaml").contains("incident"));
    assert_eq!(git(dir, &["status", "--porcelain"]), "");
    assert_eq!(devops.head(), upstream, "nothing pushed upstream");
}
