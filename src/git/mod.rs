//! libgit2 at the edge: fetch the devops branch into a temporary bare repository, read
//! and write objects in memory (no working tree), and push as a compare-and-swap.

pub mod http;

pub use http::HttpTransport;

use std::cell::RefCell;
use std::path::Path;

use git2::{
    Direction, ErrorCode, FetchOptions, FileMode, ObjectType, Oid, PushOptions, RemoteCallbacks,
    Repository, Signature,
};

use self::http::Failed;
use crate::error::{Error, Result, Retry};
use crate::overlay::Entry;
use crate::plan::{Identity, RepoLocation};

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

const LOCAL_REF: &str = "refs/heads/tomoda-promote";

impl Workspace {
    pub fn new(location: &RepoLocation, transport: HttpTransport) -> Result<Workspace> {
        let dir = tempfile::Builder::new()
            .prefix("tomoda-promote-")
            .tempdir()
            .map_err(|e| Error::local(format!("cannot create a temporary directory: {e}")))?;
        let repo = Repository::init_bare(dir.path()).map_err(|e| {
            Error::local(format!(
                "cannot create a scratch repository: {}",
                e.message()
            ))
        })?;
        let (remote, shallow) = match location {
            RepoLocation::Remote { url, .. } => (url.clone(), true),
            // libgit2 cannot fetch shallow from a local path.
            RepoLocation::Local(path) => (path.display().to_string(), false),
        };
        Ok(Workspace {
            _dir: dir,
            repo,
            transport,
            remote,
            display: location.display(),
            shallow,
        })
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
        let tracking = format!("refs/remotes/origin/{branch}");
        let mut remote = self.anonymous_remote()?;
        let mut options = FetchOptions::new();
        if self.shallow {
            options.depth(1);
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

    /// What `path` is in the commit's tree.
    pub fn lookup(&self, commit: Oid, path: &str) -> Entry {
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
    pub fn push(&self, branch: &str) -> Result<PushOutcome> {
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
        let refspec = format!("{LOCAL_REF}:refs/heads/{branch}");
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
    fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Option<bool> {
        let repo = self.repo.as_ref()?;
        let id = |rev: &str| {
            repo.revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .map(|c| c.id())
                .ok()
        };
        let (ancestor, descendant) = (id(ancestor)?, id(descendant)?);
        let descends = repo.graph_descendant_of(descendant, ancestor).ok()?;
        // In a shallow clone, "no" may only mean that the history is cut.
        if !descends && repo.is_shallow() {
            return None;
        }
        Some(descends)
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
