//! libgit2 at the edge: fetch the devops branch into a temporary bare repository, read
//! and write objects in memory (no working tree), and push as a compare-and-swap. A local
//! repository with a work tree, which libgit2 cannot push to, gets the commit as `git
//! commit` would put it there: its branch moved by a compare-and-swap, and its work tree
//! and index updated when that branch is checked out.

pub mod http;
mod partial;

pub use http::HttpTransport;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use git2::{
    Direction, ErrorCode, FetchOptions, FileMode, ObjectType, Odb, Oid, PushOptions,
    RemoteCallbacks, Repository, RepositoryState, Signature, StatusOptions,
};

use self::http::Failed;
use self::partial::Pushed;
use crate::error::{Error, Result, Retry};
use crate::ordering::{Order, Unknown};
use crate::overlay::Entry;
use crate::plan::Identity;
use crate::repo::RepoLocation;

/// A scratch bare repository holding the fetched tip of one branch.
pub struct Workspace {
    _dir: tempfile::TempDir,
    repo: Repository,
    /// Carries every fetch and push over http(s).
    transport: HttpTransport,
    /// What libgit2 connects to: an URL without credentials, or a local path.
    remote: String,
    /// What people are shown.
    display: String,
    shallow: bool,
    target: Target,
    /// What the server offers of partial fetch (see `partial.rs`), asked once, at the
    /// first fetch over http(s).
    offer: Cell<Option<partial::Offer>>,
    /// Whether this workspace fetches partially: the server offers it.
    partial: Cell<Option<bool>>,
    /// A read that had to fetch an object and failed: see [`Workspace::check_reads`].
    read_failure: RefCell<Option<Error>>,
    /// The files the last commit changed, whose new trees and blobs a partial push sends.
    changed: RefCell<Vec<String>>,
}

/// Where a commit goes.
enum Target {
    /// Pushed through libgit2: an http(s) remote, or a bare local repository.
    Push,
    /// A local repository with a work tree (an ordinary clone), which libgit2 cannot push
    /// to: its branch is updated in place.
    Checkout(PathBuf),
}

/// How a push ended when the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Pushed,
    /// Refused: the branch moved under us, or a hook or protection rule said no.
    Rejected(Refusal),
}

/// Why a push was refused, as far as the push itself can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// libgit2's or the server's reason (`pre-receive hook declined`, ...).
    pub reason: String,
    /// libgit2 saw that the branch is no longer the commit we built on (its error code
    /// NotFastForward): another push got there first. Otherwise only a fetch can tell a
    /// race (the branch moved) from a hook or protection rule (it did not).
    pub not_fast_forward: bool,
    /// What the server printed during the push (git shows these as `remote:` lines):
    /// a hook's message, GitHub's `GH006: Protected branch update failed ...`.
    pub server_said: Vec<String>,
}

/// One commit of the branch's log.
#[derive(Debug, Clone)]
pub struct LoggedCommit {
    pub id: String,
    /// Commit time, unix seconds.
    pub time: i64,
    pub message: String,
}

const LOCAL_REF: &str = "refs/heads/tomoda-promote";

/// A directory with at least this many entries holds many alike (one per app): what is
/// below one of them is small, and fetched whole down a read path (see
/// [`Workspace::fetch_path`]).
const MANY_ENTRIES: usize = 32;

impl Workspace {
    pub fn new(location: &RepoLocation, transport: HttpTransport) -> Result<Workspace> {
        let dir = tempfile::Builder::new()
            .prefix("tomoda-promote-")
            .tempdir()
            .map_err(|e| Error::local(format!("cannot create a temporary directory: {e}")))?;
        // No template (hooks, description): libgit2 runs none, and copying them is I/O
        // at every start.
        let mut init = git2::RepositoryInitOptions::new();
        init.bare(true).external_template(false);
        let repo = Repository::init_opts(dir.path(), &init).map_err(|e| {
            Error::local(format!(
                "cannot create a scratch repository: {}",
                e.message()
            ))
        })?;
        let (remote, shallow, target) = match location {
            RepoLocation::Remote { url, .. } => (url.clone(), true, Target::Push),
            // libgit2 cannot fetch shallow from a local path.
            RepoLocation::Local(path) => {
                let checkout = Repository::open(path).is_ok_and(|r| !r.is_bare());
                let target = if checkout {
                    Target::Checkout(path.clone())
                } else {
                    Target::Push
                };
                (path.display().to_string(), false, target)
            }
        };
        Ok(Workspace {
            _dir: dir,
            repo,
            transport,
            remote,
            display: location.display(),
            shallow,
            target,
            offer: Cell::new(None),
            partial: Cell::new(None),
            read_failure: RefCell::new(None),
            changed: RefCell::new(Vec::new()),
        })
    }

    fn partial_remote(&self) -> partial::Remote<'_> {
        partial::Remote {
            transport: &self.transport,
            url: &self.remote,
            agent: concat!("tomoda-promote/", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Fetches read objects only when the remote is http(s) and its server offers it.
    fn partial(&self, branch: &str) -> Result<bool> {
        if !self.shallow {
            return Ok(false);
        }
        if let Some(known) = self.partial.get() {
            return Ok(known);
        }
        let offer = self
            .partial_remote()
            .offer()
            .map_err(|e| self.remote_error(&format!("fetching branch {branch} failed"), e))?;
        tracing::debug!(
            partial_fetch = offer.partial,
            ref_in_want = offer.ref_in_want,
            "server capabilities"
        );
        self.offer.set(Some(offer));
        self.partial.set(Some(offer.partial));
        Ok(offer.partial)
    }

    /// The branch's tip commit with its root tree only; a retry fetches nothing when the
    /// tip did not move, and otherwise the new commit and root tree. A server that takes
    /// `want-ref` names the tip in the fetch itself (one request, not two; a retry then
    /// fetches the commit and root tree again, a few hundred bytes).
    fn fetch_partial(&self, branch: &str) -> Result<Oid> {
        let remote = self.partial_remote();
        let what = || format!("fetching branch {branch} failed");
        let by_name = self.offer.get().is_some_and(|o| o.ref_in_want);
        let tip = if by_name {
            remote.fetch_branch(&self.repo, branch)
        } else {
            remote.branch_tip(branch)
        };
        let tip = tip
            .map_err(|e| self.remote_error(&what(), e))?
            .ok_or_else(|| self.missing_branch(branch))?;
        if !by_name && !self.has(tip) {
            remote
                .fetch(&self.repo, &[tip], 1, true)
                .map_err(|e| self.remote_error(&what(), e))?;
        }
        self.repo
            .reference(&format!("refs/remotes/origin/{branch}"), tip, true, "fetch")
            .map_err(|e| {
                Error::local(format!(
                    "cannot record the fetched tip in the scratch repository: {}",
                    e.message()
                ))
            })?;
        Ok(tip)
    }

    fn has(&self, id: Oid) -> bool {
        self.repo.odb().is_ok_and(|odb| odb.exists(id))
    }

    /// Fetches, in a partial workspace, what reading `path` of `commit` needs that is not
    /// here yet: each tree on the way and the file (a tree comes with its files and the
    /// listings of its directories). Below a directory of many entries (the one holding
    /// every app) the entry on the path is one of many small siblings: it comes with all of
    /// the rest of the path at once (and the files in the path's end, when that is a
    /// directory), one request where each level would be one.
    fn fetch_path(&self, commit: Oid, path: &str) -> Result<()> {
        let fail = |e: git2::Error| {
            Error::local(format!(
                "cannot read the fetched objects in the scratch repository: {}",
                e.message()
            ))
        };
        let mut tree = self.repo.find_commit(commit).map_err(fail)?.tree_id();
        let names: Vec<&str> = path
            .split('/')
            .filter(|n| !n.is_empty() && *n != ".")
            .collect();
        for (level, name) in names.iter().enumerate() {
            let (id, kind, siblings) = {
                let current = self.repo.find_tree(tree).map_err(fail)?;
                let Some(entry) = current.get_name(name) else {
                    return Ok(());
                };
                (entry.id(), entry.kind(), current.len())
            };
            if !matches!(kind, Some(ObjectType::Tree | ObjectType::Blob)) {
                return Ok(());
            }
            if !self.has(id) {
                let depth = if siblings >= MANY_ENTRIES {
                    names.len() - level
                } else {
                    1
                };
                self.partial_remote()
                    .fetch(&self.repo, &[id], depth, false)
                    .map_err(|e| self.remote_error(&format!("fetching {path} failed"), e))?;
            }
            if kind != Some(ObjectType::Tree) {
                return Ok(());
            }
            tree = id;
        }
        Ok(())
    }

    /// The failure of a fetch that a [`Workspace::lookup`] needed, which it could only
    /// report as a missing file: call it after the lookups, before judging what they found.
    pub fn check_reads(&self) -> Result<()> {
        match self.read_failure.borrow_mut().take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The transport's own hint and retry decision when the failure was an HTTP one;
    /// libgit2's failures of its own are not retried.
    fn remote_error(&self, what: &str, failed: Failed) -> Error {
        let message = failed.error.message().trim_end_matches('.').to_string();
        let (hint, retry) = match failed.failure {
            Some(f) => (f.hint, f.retry),
            None => (
                "check the repo URL and the network; nothing was pushed".to_string(),
                Retry::Never,
            ),
        };
        Error::Remote {
            url: self.display.clone(),
            message: format!("{what}: {message}"),
            hint,
            retry,
        }
    }

    fn anonymous_remote(&self) -> Result<git2::Remote<'_>> {
        self.repo.remote_anonymous(&self.remote).map_err(|error| {
            self.remote_error(
                "cannot use this remote",
                Failed {
                    error,
                    failure: None,
                },
            )
        })
    }

    /// Fetches the branch's tip (depth 1 over HTTP) and returns its commit.
    pub fn fetch(&self, branch: &str) -> Result<Oid> {
        if self.partial(branch)? {
            return self.fetch_partial(branch);
        }
        self.fetch_deep(branch, 1)
    }

    /// Fetches the branch `depth` commits deep over HTTP (a local path: all of it); a
    /// later call with a larger depth deepens what is here. Always libgit2's fetch of
    /// whole trees: history readers use it on a workspace of their own, never mixed with
    /// [`Workspace::fetch`]'s partial fetch.
    pub fn fetch_deep(&self, branch: &str, depth: i32) -> Result<Oid> {
        let tracking = format!("refs/remotes/origin/{branch}");
        let mut remote = self.anonymous_remote()?;
        let mut options = FetchOptions::new();
        if self.shallow {
            options.depth(depth);
        }
        options.download_tags(git2::AutotagOption::None);
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        self.transport
            .run(|| remote.fetch(&[refspec], Some(&mut options), None))
            .map_err(|e| self.remote_error(&format!("fetching branch {branch} failed"), e))?;
        match self.repo.refname_to_id(&tracking) {
            Ok(oid) => Ok(oid),
            Err(_) => Err(self.missing_branch(branch)),
        }
    }

    /// Why the branch is not there: the repository is empty, or the branch is another.
    /// A failure to list the branches is that failure, not an empty repository.
    fn missing_branch(&self, branch: &str) -> Error {
        let heads = match self.list_heads() {
            Ok(heads) => heads,
            Err(failed) => return self.remote_error("listing the branches failed", failed),
        };
        let (message, hint) = if heads.is_empty() {
            (
                "the repository is empty".to_string(),
                format!("push a first commit with the overlays to branch {branch}"),
            )
        } else {
            (
                format!("there is no branch {branch}"),
                format!(
                    "branches here: {}; set `branch:` in promote.yaml or --branch",
                    heads.join(", ")
                ),
            )
        };
        Error::input(self.display.clone(), None, message, hint)
    }

    fn list_heads(&self) -> Result<Vec<String>, Failed> {
        self.transport.run(|| {
            let mut remote = self.repo.remote_anonymous(&self.remote)?;
            let connection = remote.connect_auth(Direction::Fetch, None, None)?;
            let heads = connection
                .list()?
                .iter()
                .filter_map(|h| h.name().strip_prefix("refs/heads/").map(str::to_string))
                .take(20)
                .collect();
            Ok(heads)
        })
    }

    /// The commits from `tip` back, newest first, at most `max`: id, commit time and
    /// message; and whether older ones may exist beyond what was fetched.
    pub fn log(&self, tip: Oid, max: usize) -> Result<(Vec<LoggedCommit>, bool)> {
        let fail = |e: git2::Error| {
            Error::local(format!("cannot read the fetched history: {}", e.message()))
        };
        let shallow: Vec<String> = std::fs::read_to_string(self.repo.path().join("shallow"))
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default();
        let mut walk = self.repo.revwalk().map_err(fail)?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(fail)?;
        walk.push(tip).map_err(fail)?;
        let mut out = Vec::new();
        let mut cut = false;
        for oid in walk {
            let oid = oid.map_err(fail)?;
            if out.len() == max {
                return Ok((out, true));
            }
            let commit = self.repo.find_commit(oid).map_err(fail)?;
            let id = oid.to_string();
            cut |= shallow.contains(&id);
            out.push(LoggedCommit {
                id,
                time: commit.time().seconds(),
                message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
            });
        }
        Ok((out, cut))
    }

    /// Whether `descendant` (a full commit id) is a later commit built on `ancestor`, in
    /// what was fetched; unknown commits are not.
    pub fn descends(&self, descendant: &str, ancestor: &str) -> bool {
        match (Oid::from_str(descendant), Oid::from_str(ancestor)) {
            (Ok(d), Ok(a)) if descendant.len() == 40 => {
                self.repo.graph_descendant_of(d, a).unwrap_or(false)
            }
            _ => false,
        }
    }

    /// What `path` is in the commit's tree.
    pub fn lookup(&self, commit: Oid, path: &str) -> Entry {
        if self.partial.get() == Some(true)
            && let Err(error) = self.fetch_path(commit, path)
        {
            self.read_failure.borrow_mut().get_or_insert(error);
            return Entry::Missing;
        }
        let Ok(tree) = self.repo.find_commit(commit).and_then(|c| c.tree()) else {
            return Entry::Missing;
        };
        if path.is_empty() {
            return Entry::Dir;
        }
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Entry::Missing;
        };
        match (entry.kind(), entry.filemode()) {
            (_, mode) if mode == i32::from(FileMode::Link) => Entry::Symlink,
            (Some(ObjectType::Tree), _) => Entry::Dir,
            (Some(ObjectType::Blob), _) => match self.repo.find_blob(entry.id()) {
                Ok(blob) => Entry::File(blob.content().to_vec()),
                Err(_) => Entry::Missing,
            },
            _ => Entry::Missing,
        }
    }

    /// Writes every `(path, content)` on top of `parent`, in one new commit, and returns it.
    pub fn commit(
        &self,
        parent: Oid,
        files: &[(&str, &[u8])],
        message: &str,
        author: &Identity,
    ) -> Result<Oid> {
        let fail = |what: &str, e: git2::Error| {
            Error::local(format!(
                "cannot {what} in the scratch repository: {}",
                e.message()
            ))
        };
        // A read that failed to fetch must not become a commit built on a "missing" file.
        self.check_reads()?;
        if self.partial.get() == Some(true) {
            for (path, _) in files {
                self.fetch_path(parent, path)?;
            }
            *self.changed.borrow_mut() = files.iter().map(|(p, _)| (*p).to_string()).collect();
        }
        let parent = self
            .repo
            .find_commit(parent)
            .map_err(|e| fail("read the fetched commit", e))?;
        let tree = parent
            .tree()
            .map_err(|e| fail("read the fetched tree", e))?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        for (path, content) in files {
            let mode = match tree.get_path(Path::new(path)) {
                Ok(entry) if entry.filemode() == i32::from(FileMode::BlobExecutable) => {
                    FileMode::BlobExecutable
                }
                _ => FileMode::Blob,
            };
            let blob = self
                .repo
                .blob(content)
                .map_err(|e| fail("write the file", e))?;
            update.upsert(path, blob, mode);
        }
        let tree_id = update
            .create_updated(&self.repo, &tree)
            .map_err(|e| fail("write the tree", e))?;
        let new_tree = self
            .repo
            .find_tree(tree_id)
            .map_err(|e| fail("read the new tree", e))?;
        let signature = Signature::now(&author.name, &author.email)
            .map_err(|e| fail("make the signature", e))?;
        let commit = self
            .repo
            .commit(None, &signature, &signature, message, &new_tree, &[&parent])
            .map_err(|e| fail("write the commit", e))?;
        self.repo
            .reference(LOCAL_REF, commit, true, "tomoda-promote")
            .map_err(|e| fail("name the commit", e))?;
        Ok(commit)
    }

    /// Pushes the last commit to `branch`, refusing anything but a fast-forward.
    /// The repository as people are shown it.
    pub fn shown_url(&self) -> String {
        self.display.clone()
    }

    pub fn push(&self, branch: &str) -> Result<PushOutcome> {
        self.push_to(branch, false)
    }

    /// Pushes the last commit onto `branch` whatever it held (or creates it): only for
    /// the tool's own `promote/` branch of a pull request, never the target.
    pub fn push_replacing(&self, branch: &str) -> Result<PushOutcome> {
        if let Target::Checkout(dir) = &self.target {
            return Err(Error::usage(
                format!(
                    "{} is a local repository: a pull request needs a forge",
                    dir.display()
                ),
                "set `repo:` to the repository's https URL on its forge",
            ));
        }
        self.push_to(branch, true)
    }

    fn push_to(&self, branch: &str, replace: bool) -> Result<PushOutcome> {
        if let Target::Checkout(dir) = &self.target {
            return self.commit_into(dir, branch);
        }
        if self.partial.get() == Some(true) {
            return self.push_partial(branch, replace);
        }
        let refused: RefCell<Option<String>> = RefCell::new(None);
        let progress: RefCell<Vec<u8>> = RefCell::new(Vec::new());
        let mut callbacks = RemoteCallbacks::new();
        // A refusal by a hook or protection rule comes back as Ok from push(), with the
        // reason only here; the server's explanation comes on the progress channel.
        callbacks.push_update_reference(|_, status| {
            if let Some(message) = status {
                *refused.borrow_mut() = Some(message.to_string());
            }
            Ok(())
        });
        callbacks.sideband_progress(|text| {
            progress.borrow_mut().extend_from_slice(text);
            true
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let mut remote = self.anonymous_remote()?;
        let force = if replace { "+" } else { "" };
        let refspec = format!("{force}{LOCAL_REF}:refs/heads/{branch}");
        let result = self
            .transport
            .run(|| remote.push(&[refspec], Some(&mut options)));
        drop(options);
        let server_said = || remote_lines(&progress.borrow());
        match result {
            Ok(()) => Ok(match refused.into_inner() {
                Some(reason) => PushOutcome::Rejected(Refusal {
                    reason,
                    not_fast_forward: false,
                    server_said: server_said(),
                }),
                None => PushOutcome::Pushed,
            }),
            Err(failed) if failed.error.code() == ErrorCode::NotFastForward => {
                Ok(PushOutcome::Rejected(Refusal {
                    reason: "the branch moved (non-fast-forward)".into(),
                    not_fast_forward: true,
                    server_said: server_said(),
                }))
            }
            Err(failed) => {
                Err(self.remote_error(&format!("pushing to branch {branch} failed"), failed))
            }
        }
    }
}

impl Workspace {
    /// Pushes the last commit with only what it adds: itself, the trees on the changed
    /// paths and the changed files.
    fn push_partial(&self, branch: &str, replace: bool) -> Result<PushOutcome> {
        let fail = |e: git2::Error| {
            Error::local(format!(
                "cannot read the new commit in the scratch repository: {}",
                e.message()
            ))
        };
        let commit = self
            .repo
            .find_reference(LOCAL_REF)
            .and_then(|r| r.peel_to_commit())
            .map_err(fail)?;
        let parent = commit.parent(0).map_err(fail)?;
        let mut objects = vec![commit.id()];
        for path in self.changed.borrow().iter() {
            let old = path_ids(&self.repo, parent.tree_id(), path);
            for (depth, id) in path_ids(&self.repo, commit.tree_id(), path)
                .into_iter()
                .enumerate()
            {
                if old.get(depth) != Some(&id) && !objects.contains(&id) {
                    objects.push(id);
                }
            }
        }
        let pushed = self
            .partial_remote()
            .push(
                &self.repo,
                branch,
                (!replace).then(|| parent.id()),
                commit.id(),
                &objects,
            )
            .map_err(|e| self.remote_error(&format!("pushing to branch {branch} failed"), e))?;
        Ok(match pushed {
            Pushed::Ok => PushOutcome::Pushed,
            Pushed::Moved => PushOutcome::Rejected(Refusal {
                reason: "the branch moved (non-fast-forward)".into(),
                not_fast_forward: true,
                server_said: Vec::new(),
            }),
            Pushed::Refused {
                reason,
                server_said,
            } => PushOutcome::Rejected(Refusal {
                reason,
                not_fast_forward: false,
                server_said: remote_lines(&server_said),
            }),
        })
    }

    /// "Pushes" the last commit into a local repository with a work tree, as `git commit`
    /// would have made it there. The branch is locked as git locks it (`<branch>.lock`)
    /// from the first check to its update, so neither git nor another promotion can move
    /// it, or see a half-done update, in between; it must still be the fetched tip. When
    /// it is the branch checked out, the work tree and index must be clean, and their
    /// copies of the changed files are updated before the branch moves; a branch not
    /// checked out is only moved.
    fn commit_into(&self, dir: &Path, branch: &str) -> Result<PushOutcome> {
        let shown = dir.display();
        let fail = |what: &str, e: &git2::Error| {
            Error::local(format!("cannot {what} in {shown}: {}", e.message()))
        };
        let refname = format!("refs/heads/{branch}");
        let commit = self
            .repo
            .find_reference(LOCAL_REF)
            .and_then(|r| r.peel_to_commit())
            .map_err(|e| fail("read the new commit", &e))?;
        let tip = commit
            .parent(0)
            .map_err(|e| fail("read the fetched commit", &e))?;
        let target = Repository::open(dir).map_err(|e| fail("open the repository", &e))?;
        let mut update = target
            .transaction()
            .map_err(|e| fail("start a reference transaction", &e))?;
        match update.lock_ref(&refname) {
            Ok(()) => {}
            Err(e) if e.code() == ErrorCode::Locked => {
                return Ok(race("another git process holds the branch", &e));
            }
            Err(e) => return Err(fail(&format!("lock branch {branch}"), &e)),
        }
        // A commit, another promotion, or a deletion since the fetch: retried on what the
        // next fetch finds.
        match target.refname_to_id(&refname) {
            Ok(id) if id == tip.id() => {}
            Ok(_) => return Ok(moved("the branch moved since the fetch")),
            Err(_) => return Ok(moved("the branch is gone")),
        }
        let checked_out = head_is(&target, &refname);
        if checked_out {
            let lock = target.path().join("index.lock");
            if lock.exists() {
                return Err(Error::local(format!(
                    "cannot commit onto branch {branch} in {shown}: its index is locked by another git process, or by one that crashed ({}); remove that file if no git process is running there",
                    lock.display()
                )));
            }
            refuse_if_dirty(&target, &shown.to_string(), branch)?;
        } else if let Some(other) = checked_out_elsewhere(&target, &refname) {
            return Err(Error::usage(
                format!(
                    "branch {branch} of {shown} is checked out in the work tree {}",
                    other.display()
                ),
                format!("point --repo at {}, or at the remote", other.display()),
            ));
        }
        copy_objects(&self.repo, &target, commit.id())
            .map_err(|e| fail("copy the new commit", &e))?;
        let paths = if checked_out {
            changed_paths(&self.repo, &tip, &commit)
                .map_err(|e| fail("list the changed files", &e))?
        } else {
            Vec::new()
        };
        let left = |restored: bool| {
            if restored {
                format!("branch {branch} and the work tree were left as they were")
            } else {
                format!(
                    "run `git checkout HEAD -- {}` there to put the work tree back",
                    paths.join(" ")
                )
            }
        };
        if let Err((e, restored)) =
            update_work_tree(&target, tip.tree_id(), commit.tree_id(), &paths)
        {
            return Err(fail(
                &format!("update the work tree ({})", left(restored)),
                &e,
            ));
        }
        let reflog = format!(
            "tomoda-promote: {}",
            String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
        );
        let committer = commit.committer();
        let signature = Signature::now(
            &String::from_utf8_lossy(committer.name_bytes()),
            &String::from_utf8_lossy(committer.email_bytes()),
        )
        .ok();
        let moved_branch = update
            .set_target(&refname, commit.id(), signature.as_ref(), &reflog)
            .and_then(|()| update.commit());
        if let Err(e) = moved_branch {
            let restored = check_out(&target, tip.tree_id(), &paths, true).is_ok();
            return Err(fail(
                &format!("update branch {branch} ({})", left(restored)),
                &e,
            ));
        }
        Ok(PushOutcome::Pushed)
    }
}

/// A refusal that is a race: retried on the tip the next fetch finds.
fn moved(reason: &str) -> PushOutcome {
    PushOutcome::Rejected(Refusal {
        reason: reason.to_string(),
        not_fast_forward: true,
        server_said: Vec::new(),
    })
}

fn race(what: &str, e: &git2::Error) -> PushOutcome {
    moved(&format!(
        "{what} ({})",
        e.message().trim_end_matches(['.', ':', ' '])
    ))
}

/// Writes the changed `paths` of `new_tree` into the work tree and the index, before the
/// checked-out branch moves to the commit. When that fails (another git process took the
/// index, a file cannot be written), the files of `tip_tree`, which the clean work tree
/// held, are put back; the index, written only when all went well, still holds them. The
/// error says whether that worked.
fn update_work_tree(
    repo: &Repository,
    tip_tree: Oid,
    new_tree: Oid,
    paths: &[String],
) -> Result<(), (git2::Error, bool)> {
    let Err(error) = check_out(repo, new_tree, paths, true) else {
        return Ok(());
    };
    // The index in memory may hold the new entries its failed write did not keep.
    if let Ok(mut index) = repo.index() {
        let _ = index.read(true);
    }
    let restored = check_out(repo, tip_tree, paths, false).is_ok();
    Err((error, restored))
}

/// Whether the repository's HEAD is the branch `refname` (born or not).
fn head_is(repo: &Repository, refname: &str) -> bool {
    repo.find_reference("HEAD")
        .is_ok_and(|head| head.symbolic_target_bytes() == Some(refname.as_bytes()))
}

/// Another work tree of the same repository (the main one, or one added with `git
/// worktree add`) that has the branch checked out; moving it under that work tree would
/// leave it showing the promotion reverted.
fn checked_out_elsewhere(repo: &Repository, refname: &str) -> Option<PathBuf> {
    let main = Repository::open(repo.commondir()).ok()?;
    let mut others = vec![main];
    if let Ok(names) = others[0].worktrees() {
        for name in names.iter().filter_map(|n| n.ok().flatten()) {
            if let Ok(linked) = others[0]
                .find_worktree(name)
                .and_then(|w| Repository::open_from_worktree(&w))
            {
                others.push(linked);
            }
        }
    }
    let here = std::fs::canonicalize(repo.path()).ok();
    others
        .into_iter()
        .filter(|r| !r.is_bare() && std::fs::canonicalize(r.path()).ok() != here)
        .find(|r| head_is(r, refname))
        .map(|r| r.workdir().unwrap_or(r.path()).to_path_buf())
}

/// Refuses a checked-out branch whose work tree or index holds changes to tracked files,
/// or that is in the middle of a merge, rebase or cherry-pick, as committing onto it would
/// mix those into the promotion or leave them behind. Untracked files do not count.
fn refuse_if_dirty(repo: &Repository, dir: &str, branch: &str) -> Result<()> {
    let hint = format!("commit or stash your changes in {dir}, or point --repo at the remote");
    let operation = match repo.state() {
        // Bisecting does not stop `git commit` either.
        RepositoryState::Clean | RepositoryState::Bisect => None,
        RepositoryState::Merge => Some("merge"),
        RepositoryState::Revert | RepositoryState::RevertSequence => Some("revert"),
        RepositoryState::CherryPick | RepositoryState::CherryPickSequence => Some("cherry-pick"),
        RepositoryState::Rebase
        | RepositoryState::RebaseInteractive
        | RepositoryState::RebaseMerge => Some("rebase"),
        RepositoryState::ApplyMailbox | RepositoryState::ApplyMailboxOrRebase => Some("git am"),
    };
    if let Some(operation) = operation {
        return Err(Error::usage(
            format!("{dir} is in the middle of a {operation} on branch {branch}"),
            format!("finish or abort the {operation} in {dir}, or point --repo at the remote"),
        ));
    }
    let mut options = StatusOptions::new();
    options
        .include_untracked(false)
        .include_ignored(false)
        .renames_head_to_index(false);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|e| Error::local(format!("cannot read the status of {dir}: {}", e.message())))?;
    let changed: Vec<String> = statuses
        .iter()
        .filter(|s| !s.status().is_empty())
        .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let mut listed = changed
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if changed.len() > 5 {
        listed.push_str(&format!(" and {} more", changed.len() - 5));
    }
    Err(Error::usage(
        format!(
            "branch {branch} is checked out in {dir} with uncommitted changes ({listed}); the promotion would be committed on top of them"
        ),
        hint,
    ))
}

/// The ids of the trees from `tree` down along `path`, then of the file, as far as they
/// exist.
fn path_ids(repo: &Repository, tree: Oid, path: &str) -> Vec<Oid> {
    let mut ids = vec![tree];
    let mut current = tree;
    for name in path.split('/').filter(|n| !n.is_empty()) {
        let Some((id, kind)) = repo
            .find_tree(current)
            .ok()
            .and_then(|t| t.get_name(name).map(|e| (e.id(), e.kind())))
        else {
            break;
        };
        ids.push(id);
        if kind != Some(ObjectType::Tree) {
            break;
        }
        current = id;
    }
    ids
}

/// Copies the commit and what it needs that `to` lacks (its new trees and blobs) from
/// `from`; its parent is already there.
fn copy_objects(from: &Repository, to: &Repository, commit: Oid) -> Result<(), git2::Error> {
    let (src, dst) = (from.odb()?, to.odb()?);
    if dst.exists(commit) {
        return Ok(());
    }
    copy_tree(from, &src, &dst, from.find_commit(commit)?.tree_id())?;
    copy_object(&src, &dst, commit)
}

fn copy_tree(from: &Repository, src: &Odb, dst: &Odb, tree: Oid) -> Result<(), git2::Error> {
    if dst.exists(tree) {
        return Ok(());
    }
    for entry in &from.find_tree(tree)? {
        match entry.kind() {
            Some(ObjectType::Tree) => copy_tree(from, src, dst, entry.id())?,
            Some(ObjectType::Blob) if !dst.exists(entry.id()) => {
                copy_object(src, dst, entry.id())?;
            }
            // Blobs already there, and submodule commits, which live elsewhere.
            _ => {}
        }
    }
    copy_object(src, dst, tree)
}

fn copy_object(src: &Odb, dst: &Odb, id: Oid) -> Result<(), git2::Error> {
    let object = src.read(id)?;
    dst.write(object.kind(), object.data())?;
    Ok(())
}

/// The files that differ between two commits.
fn changed_paths(
    repo: &Repository,
    old: &git2::Commit<'_>,
    new: &git2::Commit<'_>,
) -> Result<Vec<String>, git2::Error> {
    let diff = repo.diff_tree_to_tree(Some(&old.tree()?), Some(&new.tree()?), None)?;
    Ok(diff
        .deltas()
        .filter_map(|d| d.new_file().path().or(d.old_file().path()))
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

/// Writes `paths` of the tree into the work tree (and the index, when `index`), and
/// nothing else. The work tree was clean, so its copies of them are those the branch just
/// left.
fn check_out(
    repo: &Repository,
    tree: Oid,
    paths: &[String],
    index: bool,
) -> Result<(), git2::Error> {
    if paths.is_empty() {
        // No pathspec would mean every file.
        return Ok(());
    }
    let tree = repo.find_tree(tree)?;
    let mut options = git2::build::CheckoutBuilder::new();
    options
        .force()
        .disable_pathspec_match(true)
        .update_index(index);
    for path in paths {
        options.path(path.as_str());
    }
    repo.checkout_tree(tree.as_object(), Some(&mut options))
}

/// The server's progress text as lines: split at `\n` and `\r` (progress meters redraw
/// with `\r`), control characters dropped, blank lines and repeats skipped.
fn remote_lines(progress: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(progress);
    let mut lines: Vec<String> = Vec::new();
    for line in text.split(['\n', '\r']) {
        let line: String = line.chars().filter(|c| !c.is_control()).collect();
        let line = line.trim();
        if !line.is_empty() && !lines.iter().any(|l| l == line) {
            lines.push(line.to_string());
        }
    }
    lines
}

/// Lets libgit2 open repositories owned by another user: a CI checkout often is (the
/// step runs as another user than the one that cloned), and it is only read. Call it
/// first in `main`, before any thread exists.
pub fn allow_checkouts_of_other_users() {
    // SAFETY: libgit2 reads this process-wide option without synchronisation, so it must
    // not be set while another thread may use libgit2. Called first in main, the process
    // has one thread: no HttpTransport (whose reqwest client starts a runtime thread) and
    // no repository exist yet.
    let _ = unsafe { git2::opts::set_verify_owner_validation(false) };
}

/// Keeps parsed trees of up to 16 MiB in libgit2's object cache (its default: 4 KiB): the
/// directory holding every app (400 KB at 10,000 apps) is then inflated and parsed once,
/// not at each read of a path through it, at the commit and again at the push. Call it
/// first in `main`, with [`allow_checkouts_of_other_users`].
pub fn cache_large_trees() {
    // SAFETY: as in allow_checkouts_of_other_users, a process-wide option libgit2 reads
    // without synchronisation, set while the process has one thread.
    let _ = unsafe { git2::opts::set_cache_object_limit(ObjectType::Tree, 16 << 20) };
}

/// The application's own history, from the checkout the build runs in (Cloud Build's
/// /workspace, GitHub's checkout), to tell an older commit from a newer one.
pub struct AppHistory {
    repo: Option<Repository>,
}

impl AppHistory {
    /// Reading a checkout owned by another user needs [`allow_checkouts_of_other_users`]
    /// to have run first.
    pub fn discover(dir: &Path) -> AppHistory {
        let repo = Repository::discover(dir).ok();
        if let Some(r) = &repo {
            tracing::debug!("app history from {}", r.path().display());
        }
        AppHistory { repo }
    }
}

impl crate::ordering::History for AppHistory {
    fn order(&self, deployed: &str, wanted: &str) -> Result<Order, Unknown> {
        let Some(repo) = self.repo.as_ref() else {
            return Err(Unknown::because("no git checkout of the app here"));
        };
        let id = |rev: &str| {
            repo.revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .map(|c| c.id())
                .ok()
        };
        let Some(new) = id(wanted) else {
            return Err(Unknown {
                why: format!("the checkout here does not hold commit {wanted}"),
                foreign: true,
            });
        };
        let Some(old) = id(deployed) else {
            return Err(Unknown::because(format!(
                "the checkout here does not hold the deployed commit {deployed}"
            )));
        };
        let descends = |a, b| repo.graph_descendant_of(a, b).unwrap_or(false);
        if new == old {
            Ok(Order::Identical)
        } else if descends(new, old) {
            Ok(Order::Ahead)
        } else if descends(old, new) {
            Ok(Order::Behind)
        } else if repo.is_shallow() {
            // Neither way may only mean that the history is cut.
            Err(Unknown::because(
                "the checkout here is shallow (check out with fetch-depth: 0)",
            ))
        } else {
            Ok(Order::Diverged)
        }
    }

    fn name(&self) -> String {
        "the checkout here".into()
    }
}

/// A unified diff of one file, as `git diff` shows it.
pub fn unified_diff(path: &str, old: &str, new: &str) -> Result<String> {
    let patch = git2::Patch::from_buffers(
        old.as_bytes(),
        Some(Path::new(path)),
        new.as_bytes(),
        Some(Path::new(path)),
        None,
    )
    .and_then(|mut p| p.to_buf())
    .map_err(|e| Error::local(format!("cannot compute the diff: {}", e.message())))?;
    Ok(String::from_utf8_lossy(&patch).into_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FILE: &str = "overlays/dev/kustomization.yaml";

    fn author() -> Identity {
        Identity {
            name: "Test".into(),
            email: "test@example.com".into(),
        }
    }

    /// Writes `content` at `path` of the work tree and commits it onto the checked-out
    /// branch, as someone working in the clone would.
    fn commit_file(repo: &Repository, path: &str, content: &str) -> Oid {
        let full = repo.workdir().unwrap().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new(path)).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("Someone", "someone@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            "work",
            &tree,
            &parents,
        )
        .unwrap()
    }

    /// An ordinary repository with a work tree, branch main checked out, holding FILE.
    fn checkout_with(content: &str) -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_opts(
            dir.path(),
            git2::RepositoryInitOptions::new().initial_head("main"),
        )
        .unwrap();
        commit_file(&repo, FILE, content);
        (dir, repo)
    }

    fn workspace(dir: &Path) -> Workspace {
        let location = RepoLocation::Local(dir.to_path_buf());
        let transport =
            HttpTransport::for_repo(&location, None, "x", Duration::from_secs(5)).unwrap();
        Workspace::new(&location, transport).unwrap()
    }

    fn clean(repo: &Repository) -> bool {
        let mut options = StatusOptions::new();
        options.include_untracked(true);
        repo.statuses(Some(&mut options)).unwrap().is_empty()
    }

    #[test]
    fn a_commit_in_the_checkout_after_the_fetch_is_a_race_and_the_retry_lands() {
        let (dir, repo) = checkout_with("newTag: a\n");
        let workspace = workspace(dir.path());
        let tip = workspace.fetch("main").unwrap();
        workspace
            .commit(tip, &[(FILE, b"newTag: b\n")], "promote", &author())
            .unwrap();
        let theirs = commit_file(&repo, "other.yaml", "x\n");
        match workspace.push("main").unwrap() {
            PushOutcome::Rejected(refusal) => assert!(refusal.not_fast_forward, "{refusal:?}"),
            PushOutcome::Pushed => panic!("pushed over a moved branch"),
        }
        assert_eq!(repo.refname_to_id("refs/heads/main").unwrap(), theirs);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "newTag: a\n"
        );
        assert!(clean(&repo));

        let tip = workspace.fetch("main").unwrap();
        assert_eq!(tip, theirs);
        let ours = workspace
            .commit(tip, &[(FILE, b"newTag: b\n")], "promote", &author())
            .unwrap();
        assert_eq!(workspace.push("main").unwrap(), PushOutcome::Pushed);
        assert_eq!(repo.head().unwrap().target(), Some(ours));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "newTag: b\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("other.yaml")).unwrap(),
            "x\n"
        );
        assert!(clean(&repo));
    }

    #[test]
    fn a_work_tree_that_cannot_be_updated_keeps_its_files() {
        let (dir, repo) = checkout_with("newTag: a\n");
        let tip = repo
            .head()
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .tree()
            .unwrap();
        let mut update = git2::build::TreeUpdateBuilder::new();
        update.upsert(FILE, repo.blob(b"newTag: b\n").unwrap(), FileMode::Blob);
        let new_tree = update.create_updated(&repo, &tip).unwrap();
        // Another git process holds the index: the files are written, the index is not.
        let lock = repo.path().join("index.lock");
        std::fs::write(&lock, "").unwrap();
        let (_, restored) =
            update_work_tree(&repo, tip.id(), new_tree, &[FILE.into()]).unwrap_err();
        assert!(restored);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "newTag: a\n"
        );
        std::fs::remove_file(lock).unwrap();
        assert!(clean(&repo));
        assert!(clean(&Repository::open(dir.path()).unwrap()));
    }
}
