//! The devops branch through a forge's API (GitHub, GitLab, Bitbucket Cloud) instead of
//! git: the head from one request, only the files the plan reads, and the commit as one
//! compare-and-swap request. So a promotion costs the same few requests at any size of
//! repository, and GitHub signs the commit it makes.
//!
//! One HTTP client ([`Api`]) serves every forge: the token as its forge takes it, the same
//! timeouts as git, and one reading of failures (rate limits waited out by the promotion
//! loop, authentication and permission errors said plainly, never with the token).

mod bitbucket;
mod github;
mod gitlab;
mod history;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::HeaderMap;

use crate::branch::{DevopsBranch, Landed, NewCommit};
use crate::error::{Error, Result, Retry};
use crate::git::http::{causes, error_chain, retry_after, tls_config};
use crate::ordering::Order;
use crate::overlay::{Entry, MAX_FILE_BYTES};
use crate::repo::{Forge, ForgeRepo, sanitize};

pub use self::bitbucket::Bitbucket;
pub use self::github::GitHub;
pub use self::gitlab::GitLab;
pub use self::history::{AppRepoHistory, for_app};

/// The user name that means "a bare token" (GitHub App and Actions tokens use it for
/// git); any other is sent with the token as HTTP Basic where a forge takes that
/// (Bitbucket app passwords and API tokens).
pub const TOKEN_USERNAME: &str = "x-access-token";

/// What a path of a directory listing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A submodule or anything else a promotion does not read.
    Other,
}

/// A directory's entries as a listing gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dir {
    pub entries: Vec<(String, Kind)>,
    /// False when the forge cut the listing short (GitHub lists 1,000 entries at most):
    /// a name not in it is then asked about alone.
    pub complete: bool,
}

/// A directory's listing; `None` when there is no such directory.
pub type Listing = Option<Dir>;

/// A pull request (GitLab: merge request) as its forge answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// GitHub's and Bitbucket's number, GitLab's `iid`.
    pub number: u64,
    /// The page people review it on.
    pub url: String,
    /// GitHub's GraphQL id, which auto-merge is asked with.
    pub node_id: Option<String>,
}

/// What a promotion's request says, from its branch to the target branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
}

/// A commit of a branch's log as a forge lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCommit {
    pub id: String,
    /// Committer time, unix seconds.
    pub time: i64,
    pub message: String,
}

/// One page of a branch's log, newest first, and where the next page starts (`None`: the
/// log ends here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub commits: Vec<LoggedCommit>,
    pub next: Option<String>,
}

/// The requests one forge answers; [`ApiBranch`] turns them into a [`DevopsBranch`].
/// Comparisons of a later issue belong here too.
pub trait ForgeApi {
    /// The commit `branch` points at.
    fn head(&self, branch: &str) -> Result<String>;
    /// The names and kinds in directory `dir` (`""` is the root) at `head`; `None` when
    /// there is no such directory.
    fn list(&self, head: &str, dir: &str) -> Result<Listing>;
    /// What `path` is at `head`, asked alone, for a name an incomplete listing left out.
    fn stat(&self, _head: &str, _path: &str) -> Result<Option<Kind>> {
        Ok(None)
    }
    /// The bytes of the file `path` at `head`; `None` when there is none.
    fn read(&self, head: &str, path: &str) -> Result<Option<Vec<u8>>>;
    /// The parents of `commit`.
    fn parents(&self, commit: &str) -> Result<Vec<String>>;
    /// How commit `wanted` stands to `deployed` in this repository's history (the app's,
    /// for the ordering guard); `None` when the forge knows either not, or the token may
    /// not read the repository.
    fn order(&self, _deployed: &str, _wanted: &str) -> Result<Option<Order>> {
        Ok(None)
    }
    /// The page of `branch`'s log (newest first, `per_page` commits) that `cursor` names,
    /// `None` for the first: what `history` and `rollback` read, never deeper than needed.
    /// `Ok(None)` when this forge's client does not offer it.
    fn log(&self, _branch: &str, _cursor: Option<&str>, _per_page: u32) -> Result<Option<LogPage>> {
        Ok(None)
    }
    /// One commit of `files` onto `branch`, refused unless the branch (or, on GitLab, each
    /// file) is still as read at `head`.
    fn commit(&self, branch: &str, head: &str, content: &NewCommit) -> Result<Landed>;
    /// One commit of `files` on top of `base`, put on `branch` whatever it held (or on a
    /// new `branch`): the tool's own branch of a pull request.
    fn replace_branch(&self, branch: &str, base: &str, content: &NewCommit) -> Result<String>;
    /// The open request from `head` to `base`, if there is one; merged and closed ones
    /// are not looked at.
    fn find_request(&self, head: &str, base: &str) -> Result<Option<Request>>;
    fn create_request(&self, proposal: &Proposal) -> Result<Request>;
    /// New title, body (and labels, where the forge keeps them on the request).
    fn update_request(&self, request: &Request, proposal: &Proposal) -> Result<Request>;
    /// Merge once the required checks pass; `Err` with the forge's reason otherwise.
    fn enable_auto_merge(&self, request: &Request) -> Result<()>;
}

/// Commits asked for a page of a branch's log (the most each forge gives).
const LOG_PAGE: u32 = 100;

/// Reads the log of `branch` page by page, newest first, handing each page to `enough`
/// until it says it has enough, the log ends, or `max` commits were read; a rate limit or
/// a transient failure is waited out within the bounds of any other request.
pub fn read_log(
    api: &dyn ForgeApi,
    branch: &str,
    max: usize,
    mut enough: impl FnMut(&[LoggedCommit]) -> bool,
) -> Result<()> {
    let mut cursor: Option<String> = None;
    let mut read = 0;
    loop {
        let asked = || api.log(branch, cursor.as_deref(), LOG_PAGE);
        let Some(page) = crate::error::with_retries("the forge", &mut std::thread::sleep, asked)?
        else {
            return Err(Error::usage(
                format!("this forge's API offers no log of branch {branch}"),
                "set commit_via: git to read the history through git",
            ));
        };
        read += page.commits.len();
        if enough(&page.commits) || page.commits.is_empty() || read >= max {
            return Ok(());
        }
        let Some(next) = page.next else {
            return Ok(());
        };
        tracing::info!("reading the history of branch {branch} past {read} commits");
        cursor = Some(next);
    }
}

/// How opening a promotion's request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    pub request: Request,
    /// The open request of the branch was updated, not a new one opened.
    pub updated: bool,
    /// Auto-merge was asked for and the forge said yes.
    pub auto_merge: bool,
}

/// Opens the request of `proposal`, or updates the one already open from its branch (a
/// merged or closed one is left alone, and a new one opened), then asks for auto-merge.
/// A refused auto-merge is a warning: the request stands, and a person can merge it.
pub fn propose(api: &dyn ForgeApi, proposal: &Proposal, auto_merge: bool) -> Result<Proposed> {
    let (request, updated) = if let Some(open) = api.find_request(&proposal.head, &proposal.base)? {
        tracing::info!(
            "updating the open request #{} of {}",
            open.number,
            proposal.head
        );
        (api.update_request(&open, proposal)?, true)
    } else {
        tracing::info!(
            "opening a request from {} to {}",
            proposal.head,
            proposal.base
        );
        match api.create_request(proposal) {
            Ok(created) => (created, false),
            // Another pipeline of the same image may have opened it in between.
            Err(error) => match api.find_request(&proposal.head, &proposal.base)? {
                Some(open) => (api.update_request(&open, proposal)?, true),
                None => return Err(error),
            },
        }
    };
    let auto_merge = auto_merge
        && match api.enable_auto_merge(&request) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "auto-merge of request #{} was not enabled: {}",
                    request.number,
                    e.summary()
                );
                false
            }
        };
    Ok(Proposed {
        request,
        updated,
        auto_merge,
    })
}

/// The forge client for `repo`, speaking with `token` (sent as `username` where the forge
/// takes Basic auth). `shown` is the repository as people see it.
pub fn open(
    repo: &ForgeRepo,
    shown: &str,
    token: Option<String>,
    username: &str,
    timeout: Duration,
) -> Result<Box<dyn ForgeApi>> {
    let Some(token) = token else {
        return Err(Error::usage(
            format!(
                "commit_via: api needs a token for the {} API of {shown}",
                repo.forge.name()
            ),
            "set GIT_TOKEN (or --git-token-file), or mint one with --github-app-id or --cloudbuild-repository",
        ));
    };
    let api = Api::new(auth(repo.forge, token, username), timeout)?;
    Ok(client(repo, api))
}

/// The forge client for `repo` without a token, for a plan: a public repository answers
/// reads without one (at a lower rate limit), and a plan only reads.
pub fn open_anonymous(repo: &ForgeRepo, timeout: Duration) -> Result<Box<dyn ForgeApi>> {
    Ok(client(repo, Api::new(Auth::None, timeout)?))
}

/// `token` as `forge` takes it: Bearer, or Basic with a Bitbucket user name.
fn auth(forge: Forge, token: String, username: &str) -> Auth {
    match (forge, username) {
        (Forge::Bitbucket, user) if user != TOKEN_USERNAME => Auth::Basic {
            username: user.to_string(),
            password: token,
        },
        _ => Auth::Bearer(token),
    }
}

fn client(repo: &ForgeRepo, api: Api) -> Box<dyn ForgeApi> {
    match repo.forge {
        Forge::GitHub => Box::new(GitHub::new(api, repo)),
        Forge::GitLab => Box::new(GitLab::new(api, repo)),
        Forge::Bitbucket => Box::new(Bitbucket::new(api, repo)),
    }
}

/// How requests authenticate; the token never goes into a URL.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Basic { username: String, password: String },
}

/// The HTTP client of every forge request.
pub struct Api {
    http: Client,
    auth: Auth,
}

/// Characters escaped in one path segment of a URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// `path` as URL path segments, each escaped, the slashes kept.
pub fn escape_path(path: &str) -> String {
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `text` as a value of a URL's query.
pub fn query_value(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `text` as one URL path segment: slashes escaped too (GitLab's project and file ids).
pub fn escape_segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// Pages of a directory listing read at most (GitLab and Bitbucket page theirs by 100):
/// a directory longer than that is listed incomplete.
const MAX_LIST_PAGES: u32 = 50;

/// What to do about a rate limit that outlasted the waits.
const RATE_LIMIT_HINT: &str = "the forge limits requests per token; fewer pipelines at once, or a GitHub App token (higher limits), help";

/// The longest rate-limit wait asked through `x-ratelimit-reset` that is still reported as
/// a wait (the promotion loop then decides whether it is too long).
const MAX_RESET_WAIT: Duration = Duration::from_secs(3600);

impl Api {
    pub fn new(auth: Auth, timeout: Duration) -> Result<Api> {
        let fail = |e: String| Error::local(format!("cannot set up the forge API client: {e}"));
        if let Auth::Bearer(token)
        | Auth::Basic {
            password: token, ..
        } = &auth
        {
            crate::secrets::register(token);
        }
        let http = Client::builder()
            .tls_backend_preconfigured(tls_config().map_err(fail)?)
            .connect_timeout((timeout / 2).min(Duration::from_secs(30)))
            .timeout(timeout)
            .user_agent(format!("tomoda-promote/{}", env!("CARGO_PKG_VERSION")))
            // A redirect to another host would drop the token: follow none, say so.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| fail(error_chain(&e)))?;
        Ok(Api { http, auth })
    }

    pub fn get(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.get(url))
    }

    pub fn post(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.post(url))
    }

    pub fn put(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.put(url))
    }

    pub fn patch(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.patch(url))
    }

    pub fn delete(&self, url: &str) -> RequestBuilder {
        self.authorize(self.http.delete(url))
    }

    /// Sends `body` as JSON with `request`; the answer's JSON when successful.
    pub fn send_json(
        &self,
        request: RequestBuilder,
        url: &str,
        body: &serde_json::Value,
        forge: Forge,
    ) -> Result<serde_json::Value> {
        let answer = self.send(
            request
                .header("Content-Type", "application/json")
                .body(body.to_string()),
            url,
        )?;
        Api::json(Api::success(answer, url, forge)?, url)
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        }
    }

    /// Sends a request; any answer comes back, no answer is an error (transient unless TLS).
    pub fn send(&self, request: RequestBuilder, url: &str) -> Result<Response> {
        request.send().map_err(|e| {
            let tls = causes(&e)
                .iter()
                .any(|c| c.downcast_ref::<rustls::Error>().is_some());
            let message = if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                format!("no answer: {}", error_chain(&e))
            };
            Error::Remote {
                url: shown_url(url),
                message,
                hint: "check the API URL (api_url: in promote.yaml) and the network".into(),
                retry: if tls {
                    Retry::Never
                } else {
                    Retry::Transient { after: None }
                },
            }
        })
    }

    /// A successful answer's JSON.
    pub fn json(response: Response, url: &str) -> Result<serde_json::Value> {
        let bytes = response.bytes().map_err(|e| Error::Remote {
            url: shown_url(url),
            message: format!("the answer broke off: {}", error_chain(&e)),
            hint: "retry".into(),
            retry: Retry::Transient { after: None },
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Remote {
            url: shown_url(url),
            message: format!("the answer is not JSON: {e}"),
            hint: "check api_url: in promote.yaml: it must be the forge's API, not its web pages"
                .into(),
            retry: Retry::Never,
        })
    }

    /// A successful answer, or what its failure means.
    pub fn success(response: Response, url: &str, forge: Forge) -> Result<Response> {
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(Api::status_error(response, url, forge))
        }
    }

    /// As [`Api::success`], with 404 as `None`: no such branch, file or commit.
    pub fn found(response: Response, url: &str, forge: Forge) -> Result<Option<Response>> {
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Api::success(response, url, forge).map(Some)
    }

    /// A successful answer's bytes, refused beyond the size of any file a promotion edits.
    pub fn bytes(response: Response, url: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX) + 1;
        std::io::Read::read_to_end(&mut std::io::Read::take(response, limit), &mut out).map_err(
            |e| Error::Remote {
                url: shown_url(url),
                message: format!("the answer broke off: {e}"),
                hint: "retry".into(),
                retry: Retry::Transient { after: None },
            },
        )?;
        Ok(out)
    }

    /// What an unsuccessful answer means: a rate limit (transient, with the wait asked
    /// for), a refused or missing token, a missing permission, a server failure.
    pub fn status_error(response: Response, url: &str, forge: Forge) -> Error {
        let status = response.status();
        let headers = response.headers().clone();
        let said = server_message(response);
        let code = status.as_u16();
        let url = shown_url(url);
        let said_part = said
            .as_deref()
            .map_or(String::new(), |s| format!(" (the server said: \"{s}\")"));
        // GitHub's secondary limits may come as a bare 403 whose message says so.
        let said_limited = code == 403
            && said
                .as_deref()
                .is_some_and(|s| s.to_ascii_lowercase().contains("rate limit"));
        let limited = rate_limited(status, &headers)
            .or(said_limited.then_some(Retry::Transient { after: None }));
        if let Some(retry) = limited {
            return Error::Remote {
                url,
                message: format!("rate limited: HTTP {code}{said_part}"),
                hint: RATE_LIMIT_HINT.into(),
                retry,
            };
        }
        let (hint, retry) = match code {
            401 => (
                "the token was refused: renew GIT_TOKEN (or check --github-app-id / --cloudbuild-repository)".to_string(),
                Retry::Never,
            ),
            403 => (permission_hint(forge), Retry::Never),
            404 => (
                "check repo:, branch: and api_url: in promote.yaml; a token that cannot read a private repository gets 404 too".into(),
                Retry::Never,
            ),
            408 | 429 => ("retry later".into(), Retry::Transient { after: None }),
            _ if status.is_server_error() => (
                "the forge failed; retry later".into(),
                Retry::Transient {
                    after: retry_after(&headers),
                },
            ),
            _ if status.is_redirection() => (
                "the API answered with a redirect; set api_url: to the URL it redirects to".into(),
                Retry::Never,
            ),
            _ => (
                "nothing was committed; check the request the message names".into(),
                Retry::Never,
            ),
        };
        Error::Remote {
            url,
            message: format!("HTTP {code}{said_part}"),
            hint,
            retry,
        }
    }
}

/// What each forge needs a token to have to commit.
fn permission_hint(forge: Forge) -> String {
    match forge {
        Forge::GitHub => "the token may not write here: a GitHub App or fine-grained token needs Contents: read and write on the devops repository".into(),
        Forge::GitLab => "the token may not write here: it needs the api scope and at least the Developer role, and the branch must allow Developers to push".into(),
        Forge::Bitbucket => "the token may not write here: it needs repository:write (Repositories: Write)".into(),
    }
}

/// The head commit of `branch` of repository `repo` from the answer to a GET of `url`,
/// at `pointer` of its JSON; 404 means no such branch, or none the token can see.
fn head_from(
    answer: Response,
    url: &str,
    forge: Forge,
    repo: &str,
    branch: &str,
    pointer: &str,
) -> Result<String> {
    let Some(answer) = Api::found(answer, url, forge)? else {
        let (place, needs) = match forge {
            Forge::GitHub => ("repository", "a token needs Contents: read and write"),
            Forge::GitLab => ("project", "the token needs the api scope"),
            Forge::Bitbucket => ("repository", "the token needs repository:write"),
        };
        return Err(Error::input(
            repo.to_string(),
            None,
            format!("there is no branch {branch} (or the token cannot see the {place})"),
            format!("set `branch:` in promote.yaml or --branch; {needs}"),
        ));
    };
    string_at(&Api::json(answer, url)?, pointer, url, forge)
}

/// The string at `pointer` of a forge's JSON answer to `url`.
fn string_at(body: &serde_json::Value, pointer: &str, url: &str, forge: Forge) -> Result<String> {
    body.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            let field = pointer.trim_start_matches('/').replace('/', ".");
            bad_answer(url, &format!("no {field}"), forge)
        })
}

/// The string at `item` (a JSON pointer; `""` for the item itself) of each item of the
/// list at `list`: the parents of a commit, as each forge lists them.
fn strings_in(body: &serde_json::Value, list: &str, item: &str) -> Vec<String> {
    body.pointer(list)
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer(item)?.as_str().map(str::to_string))
        .collect()
}

/// A commit of a log listing: the strings at `id`, `time` and `message` (JSON pointers)
/// of `item`, the time read as RFC 3339.
fn logged_commit(
    item: &serde_json::Value,
    [id, time, message]: [&str; 3],
    url: &str,
    forge: Forge,
) -> Result<LoggedCommit> {
    let time = string_at(item, time, url, forge)?;
    Ok(LoggedCommit {
        id: string_at(item, id, url, forge)?,
        time: crate::history::unix_time(&time)
            .ok_or_else(|| bad_answer(url, &format!("commit date `{time}`"), forge))?,
        message: string_at(item, message, url, forge)?,
    })
}

/// The commits of a log listing's `list` (a JSON pointer; `""` for the answer itself).
fn logged_commits(
    body: &serde_json::Value,
    list: &str,
    fields: [&str; 3],
    url: &str,
    forge: Forge,
) -> Result<Vec<LoggedCommit>> {
    body.pointer(list)
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad_answer(url, "no list of commits", forge))?
        .iter()
        .map(|item| logged_commit(item, fields, url, forge))
        .collect()
}

/// An answer that is not what the forge's API gives: most likely `api_url:` names
/// something else.
fn bad_answer(url: &str, what: &str, forge: Forge) -> Error {
    let api = match forge {
        Forge::GitHub => "the GitHub API (https://HOST/api/v3 on GitHub Enterprise Server)",
        Forge::GitLab => "the GitLab API (https://HOST/api/v4)",
        Forge::Bitbucket => "the Bitbucket Cloud API (https://api.bitbucket.org/2.0)",
    };
    Error::Remote {
        url: shown_url(url),
        message: format!("unexpected answer: {what}"),
        hint: format!("check api_url: in promote.yaml: it must be {api}"),
        retry: Retry::Never,
    }
}

/// A URL as messages show it: no query (it could hold anything), no userinfo.
fn shown_url(url: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    crate::repo::redact_str(base)
}

/// HTTP 429, or 403 with `Retry-After` or an exhausted `x-ratelimit-remaining`: a
/// transient failure, after the wait asked for (`Retry-After`, else until
/// `x-ratelimit-reset`) when there is one.
fn rate_limited(status: StatusCode, headers: &HeaderMap) -> Option<Retry> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let exhausted = header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
    let asked = retry_after(headers);
    let limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (asked.is_some() || exhausted));
    if !limited {
        return None;
    }
    let until_reset = || {
        let reset: u64 = header("x-ratelimit-reset")?.trim().parse().ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        // One second more: the window turns at the reset second.
        Some(Duration::from_secs(reset.saturating_sub(now) + 1).min(MAX_RESET_WAIT))
    };
    Some(Retry::Transient {
        after: asked.or_else(until_reset),
    })
}

/// The `message` of a JSON error body (all three forges use that key), one line, short.
fn server_message(response: Response) -> Option<String> {
    let bytes = response.bytes().ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let message = match &value["message"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => value["error"]["message"].as_str()?.to_string(),
        other => other.to_string(),
    };
    let line: String = sanitize(&message).chars().take(300).collect();
    Some(crate::secrets::redact(&line))
}

/// A commit request as sent: the head it was built on, and the files.
#[derive(Clone)]
struct Sent {
    head: String,
    files: Vec<(String, Vec<u8>)>,
}

/// A [`ForgeApi`] as a [`DevopsBranch`]: a file is found through its directory's listing
/// (one request per directory, kept per head), then read, so the overlay lookups of a
/// promotion cost two listings and one read.
pub struct ApiBranch {
    api: Box<dyn ForgeApi>,
    /// A commit request whose answer never came.
    unanswered: RefCell<Option<Sent>>,
    /// Each directory's listing, by (head, directory).
    listings: RefCell<HashMap<(String, String), Listing>>,
}

impl ApiBranch {
    pub fn new(api: Box<dyn ForgeApi>) -> ApiBranch {
        ApiBranch {
            api,
            unanswered: RefCell::new(None),
            listings: RefCell::new(HashMap::new()),
        }
    }

    fn kind(&self, head: &str, path: &str) -> Result<Option<Kind>> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let key = (head.to_string(), dir.to_string());
        if !self.listings.borrow().contains_key(&key) {
            let listing = self.api.list(head, dir)?;
            self.listings.borrow_mut().insert(key.clone(), listing);
        }
        let (found, complete) = match &self.listings.borrow()[&key] {
            None => (None, true),
            Some(dir) => (
                dir.entries.iter().find(|(n, _)| n == name).map(|(_, k)| *k),
                dir.complete,
            ),
        };
        match found {
            None if !complete => self.api.stat(head, path),
            found => Ok(found),
        }
    }
}

impl DevopsBranch for ApiBranch {
    fn read_head(&self, branch: &str) -> Result<String> {
        self.api.head(branch)
    }

    fn lookup(&self, head: &str, path: &str) -> Result<Entry> {
        if path.is_empty() {
            return Ok(Entry::Dir);
        }
        Ok(match self.kind(head, path)? {
            None | Some(Kind::Other) => Entry::Missing,
            Some(Kind::Dir) => Entry::Dir,
            Some(Kind::Symlink) => Entry::Symlink,
            Some(Kind::File) => self
                .api
                .read(head, path)?
                .map_or(Entry::Missing, Entry::File),
        })
    }

    fn commit(&self, branch: &str, head: &str, content: &NewCommit) -> Result<Landed> {
        let sent = content
            .files
            .iter()
            .map(|(path, content)| ((*path).to_string(), content.to_vec()))
            .collect();
        *self.unanswered.borrow_mut() = Some(Sent {
            head: head.to_string(),
            files: sent,
        });
        let landed = self.api.commit(branch, head, content);
        // A failure that may pass on another try (no answer, a timeout, a 502 from a
        // proxy) leaves the doubt whether the commit landed; any other answer does not.
        let in_doubt = landed
            .as_ref()
            .is_err_and(|e| matches!(e.retry(), Retry::Transient { .. }));
        if !in_doubt {
            *self.unanswered.borrow_mut() = None;
        }
        landed
    }

    fn replace(&self, branch: &str, base: &str, content: &NewCommit) -> Result<String> {
        self.api.replace_branch(branch, base, content)
    }

    /// The commit is ours when it sits right on the head we sent, holding the files sent.
    fn landed_unanswered(&self, head: &str) -> Result<bool> {
        let Some(Sent {
            head: sent_on,
            files,
        }) = self.unanswered.borrow().clone()
        else {
            return Ok(false);
        };
        if sent_on == head || self.api.parents(head)? != [sent_on] {
            return Ok(false);
        }
        for (path, content) in files {
            if self.lookup(head, &path)? != Entry::File(content) {
                return Ok(false);
            }
        }
        *self.unanswered.borrow_mut() = None;
        Ok(true)
    }
}

/// A lost race as the loop knows it from git's non-fast-forward.
fn lost_race(reason: &str) -> Landed {
    Landed::Refused(crate::git::Refusal {
        reason: reason.to_string(),
        not_fast_forward: true,
        server_said: Vec::new(),
    })
}

/// The first line of a commit message, and the rest (GitHub's headline and body).
fn split_message(message: &str) -> (&str, &str) {
    match message.split_once('\n') {
        Some((headline, body)) => (headline.trim_end(), body.trim_start_matches('\n')),
        None => (message.trim_end(), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// A forge where another pipeline opened the request between our look and our open.
    struct Raced {
        finds: RefCell<u32>,
        calls: RefCell<Vec<&'static str>>,
    }

    impl ForgeApi for Raced {
        fn head(&self, _: &str) -> Result<String> {
            unimplemented!()
        }
        fn list(&self, _: &str, _: &str) -> Result<Listing> {
            unimplemented!()
        }
        fn read(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>> {
            unimplemented!()
        }
        fn parents(&self, _: &str) -> Result<Vec<String>> {
            unimplemented!()
        }
        fn commit(&self, _: &str, _: &str, _: &NewCommit) -> Result<Landed> {
            unimplemented!()
        }
        fn replace_branch(&self, _: &str, _: &str, _: &NewCommit) -> Result<String> {
            unimplemented!()
        }
        fn find_request(&self, _: &str, _: &str) -> Result<Option<Request>> {
            *self.finds.borrow_mut() += 1;
            Ok((*self.finds.borrow() > 1).then(|| request(4)))
        }
        fn create_request(&self, _: &Proposal) -> Result<Request> {
            self.calls.borrow_mut().push("create");
            Err(Error::local(
                "422 A pull request already exists".to_string(),
            ))
        }
        fn update_request(&self, open: &Request, _: &Proposal) -> Result<Request> {
            self.calls.borrow_mut().push("update");
            Ok(open.clone())
        }
        fn enable_auto_merge(&self, _: &Request) -> Result<()> {
            self.calls.borrow_mut().push("auto-merge");
            Err(Error::local("auto-merge is not allowed".to_string()))
        }
    }

    fn request(number: u64) -> Request {
        Request {
            number,
            url: format!("https://forge.example/pull/{number}"),
            node_id: None,
        }
    }

    #[test]
    fn a_request_opened_by_another_pipeline_meanwhile_is_updated_and_a_refused_auto_merge_is_no_failure()
     {
        let forge = Raced {
            finds: RefCell::new(0),
            calls: RefCell::new(Vec::new()),
        };
        let proposal = Proposal {
            head: "promote/dev/app".into(),
            base: "main".into(),
            title: "promote(dev): app v1 -> v2".into(),
            body: String::new(),
            labels: Vec::new(),
        };
        let proposed = propose(&forge, &proposal, true).unwrap();
        assert_eq!(
            proposed,
            Proposed {
                request: request(4),
                updated: true,
                auto_merge: false
            }
        );
        assert_eq!(*forge.calls.borrow(), ["create", "update", "auto-merge"]);
    }

    #[test]
    fn rate_limits_are_told_from_permission_errors() {
        let mut headers = HeaderMap::new();
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &headers), None);
        assert_eq!(
            rate_limited(StatusCode::TOO_MANY_REQUESTS, &headers),
            Some(Retry::Transient { after: None })
        );
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            rate_limited(StatusCode::FORBIDDEN, &headers),
            Some(Retry::Transient {
                after: Some(Duration::from_secs(7))
            })
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 5;
        headers.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
        let Some(Retry::Transient { after: Some(wait) }) =
            rate_limited(StatusCode::FORBIDDEN, &headers)
        else {
            panic!("a wait until the reset");
        };
        assert!(wait >= Duration::from_secs(4) && wait <= Duration::from_secs(6));
    }

    #[test]
    fn paths_are_escaped_per_segment() {
        assert_eq!(escape_path("k8s/a b/c#d.yaml"), "k8s/a%20b/c%23d.yaml");
        assert_eq!(escape_segment("group/sub/proj"), "group%2Fsub%2Fproj");
    }

    #[test]
    fn answers_are_read_at_json_pointers_and_a_missing_field_is_named() {
        let body = serde_json::json!({"object": {"sha": "abc"}, "parents": [{"sha": "p1"}, {}], "parent_ids": ["p2"]});
        let url = "https://api.example/repos/o/r/git/ref/heads/main?x=1";
        assert_eq!(
            string_at(&body, "/object/sha", url, Forge::GitHub).unwrap(),
            "abc"
        );
        let missing = string_at(&body, "/commit/id", url, Forge::GitLab).unwrap_err();
        assert_eq!(
            missing.summary(),
            "https://api.example/repos/o/r/git/ref/heads/main: unexpected answer: no commit.id"
        );
        assert_eq!(strings_in(&body, "/parents", "/sha"), ["p1"]);
        assert_eq!(strings_in(&body, "/parent_ids", ""), ["p2"]);
        assert!(strings_in(&body, "/nothing", "").is_empty());
    }

    #[test]
    fn messages_split_into_headline_and_body() {
        assert_eq!(
            split_message("promote dev\n\nBuild: 1\n"),
            ("promote dev", "Build: 1\n")
        );
        assert_eq!(split_message("one line"), ("one line", ""));
    }
}
