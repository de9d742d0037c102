//! The devops branch as the promotion loop sees it, whichever way it is reached: read the
//! head, read files at that head, and put one commit on top of it only if the branch is
//! still there (a compare-and-swap). A git [`Workspace`] and a forge's API both do this,
//! so the loop in `promote.rs` does not know which it drives.

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::git::{PushOutcome, Refusal, Workspace};
use crate::message::short_sha;
use crate::overlay::Entry;
use crate::plan::Identity;

/// How a compare-and-swap commit ended when the other side answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landed {
    /// The branch now points at this commit.
    Commit(String),
    /// Refused: another commit landed first (`not_fast_forward`), or a hook or protection
    /// rule said no. Anything else is an `Err`.
    Refused(Refusal),
}

impl Landed {
    /// The commit, or the refusal as the error of a push to `branch` at `url`: for the
    /// tool's own branch of a pull request, where no other writer can win a race.
    pub fn into_commit(self, url: &str, branch: &str) -> Result<String> {
        match self {
            Landed::Commit(commit) => Ok(commit),
            Landed::Refused(refusal) => Err(refused(url, branch, refusal)),
        }
    }
}

/// A refused push to `branch` at `url` as the error of a single attempt.
fn refused(url: &str, branch: &str, refusal: Refusal) -> Error {
    Error::PushRefused {
        url: url.to_string(),
        branch: branch.to_string(),
        attempts: 1,
        reason: refusal.reason,
        server_said: refusal.server_said,
    }
}

/// What one commit holds, whichever way it is made: the files written in full, its
/// message and its author.
#[derive(Debug, Clone, Copy)]
pub struct NewCommit<'a> {
    pub files: &'a [(&'a str, &'a [u8])],
    pub message: &'a str,
    pub author: &'a Identity,
}

pub trait DevopsBranch {
    /// The branch's head commit now (a git workspace fetches it).
    fn read_head(&self, branch: &str) -> Result<String>;

    /// What `path` is at `head`, one of the commits `read_head` returned.
    fn lookup(&self, head: &str, path: &str) -> Result<Entry>;

    /// One commit holding `files` on top of `head`, moved onto `branch` only if the branch
    /// is still at `head`.
    fn commit(&self, branch: &str, head: &str, content: &NewCommit) -> Result<Landed>;

    /// One commit holding `files` on top of `base` (the target branch's tip), put on
    /// `branch` whatever that held, or on a new `branch`: the tool's own branch of a pull
    /// request, which it alone writes, so the last promotion's wins.
    fn replace(&self, branch: &str, base: &str, content: &NewCommit) -> Result<String>;

    /// Whether `head` is the commit of the last `commit` whose answer never came (a
    /// request that timed out may have landed all the same): then it is reported as
    /// pushed, not made twice.
    fn landed_unanswered(&self, head: &str) -> Result<bool>;
}

/// The branch reached by git: fetched into a scratch [`Workspace`], pushed back.
pub struct GitBranch {
    workspace: Workspace,
    sent: RefCell<Option<String>>,
}

impl GitBranch {
    pub fn new(workspace: Workspace) -> GitBranch {
        GitBranch {
            workspace,
            sent: RefCell::new(None),
        }
    }

    /// A commit of `files` on top of `parent` in the workspace, to be pushed to `branch`.
    fn commit_on(&self, parent: &str, branch: &str, content: &NewCommit) -> Result<String> {
        let NewCommit {
            files,
            message,
            author,
        } = *content;
        let commit = self
            .workspace
            .commit(oid(parent)?, files, message, author)?
            .to_string();
        tracing::info!("pushing {} to branch {branch}", short_sha(&commit));
        Ok(commit)
    }
}

fn oid(commit: &str) -> Result<git2::Oid> {
    git2::Oid::from_str(commit).map_err(|e| Error::local(format!("bad commit id {commit}: {e}")))
}

impl DevopsBranch for GitBranch {
    fn read_head(&self, branch: &str) -> Result<String> {
        self.workspace.fetch(branch).map(|oid| oid.to_string())
    }

    fn lookup(&self, head: &str, path: &str) -> Result<Entry> {
        let entry = self.workspace.lookup(oid(head)?, path);
        // A blob a partial fetch left out is fetched on demand; its failure is an error.
        self.workspace.check_reads()?;
        Ok(entry)
    }

    fn commit(&self, branch: &str, head: &str, content: &NewCommit) -> Result<Landed> {
        let commit = self.commit_on(head, branch, content)?;
        *self.sent.borrow_mut() = Some(commit.clone());
        match self.workspace.push(branch)? {
            PushOutcome::Pushed => Ok(Landed::Commit(commit)),
            PushOutcome::Rejected(refusal) => {
                *self.sent.borrow_mut() = None;
                Ok(Landed::Refused(refusal))
            }
        }
    }

    fn replace(&self, branch: &str, base: &str, content: &NewCommit) -> Result<String> {
        let commit = self.commit_on(base, branch, content)?;
        match self.workspace.push_replacing(branch)? {
            PushOutcome::Pushed => Ok(commit),
            PushOutcome::Rejected(refusal) => {
                Err(refused(&self.workspace.shown_url(), branch, refusal))
            }
        }
    }

    fn landed_unanswered(&self, head: &str) -> Result<bool> {
        Ok(self.sent.borrow().as_deref() == Some(head))
    }
}
