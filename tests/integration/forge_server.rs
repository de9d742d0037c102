//! Forge APIs on 127.0.0.1, for the `commit_via: api` and pull-request tests: GitHub (REST
//! contents, refs and pulls, GraphQL `createCommitOnBranch` and
//! `enablePullRequestAutoMerge`, the App token exchange), GitLab (branches, paged tree,
//! files, commits, merge requests) and Bitbucket Cloud (branches, paged src, POST src, pull
//! requests), each answering as its documentation says, plus the GCE metadata server's
//! token and Cloud Build's `accessReadWriteToken`. Pull requests are kept beside the
//! repository; merging one moves its target branch in the repository.
//!
//! The repository is a real bare git repository: a commit made through the API is written
//! with git plumbing (`hash-object`, `ls-tree` and `mktree` along the changed paths,
//! `commit-tree`) and the branch moved with `update-ref NEW OLD`, git's own
//! compare-and-swap, so the tests read what landed with `git`. Every request is recorded
//! (method, target, headers, body) for the tests to assert what was sent; faults (rate
//! limits, anything) can be queued for the next requests.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::git_server::serve;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    GitHub,
    GitLab,
    Bitbucket,
}

/// The owner (workspace, group) and name the servers give the devops repository.
pub const OWNER: &str = "tomoda";
pub const NAME: &str = "devops";
/// The identity GitHub gives commits made through its API with an App token.
pub const BOT: &str = "tomoda-promote-app[bot]";
pub const APP_ID: u64 = 424_242;
pub const INSTALLATION: u64 = 77;
pub const METADATA_TOKEN: &str = "ya29.metadata-access-token-for-tests";

/// A pull (merge) request as the forge keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    /// `open`, `merged` or `closed`.
    pub state: &'static str,
    pub auto_merge: bool,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer queued for the next request whose target contains `matching`.
pub struct Fault {
    pub matching: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

struct State {
    style: Style,
    bare: PathBuf,
    tokens: Mutex<Vec<String>>,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Run once, just before the first commit request is handled (another pipeline's push).
    before_commit: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Commits are made one at a time, as a forge serialises updates of one branch.
    commit_lock: Mutex<()>,
    /// Entries per page of directory listings (GitLab: at most per_page; Bitbucket: pagelen).
    page_size: usize,
    /// The App's public key (PEM) that JWTs must verify against, when the App is set up.
    app_public_key: Mutex<Option<PathBuf>>,
    /// The token the App exchange and Cloud Build hand out.
    minted: String,
    /// Cloud Build refuses the exchange (the permission is missing).
    cloudbuild_denied: AtomicBool,
    /// Pull requests, numbered from 1.
    pulls: Mutex<Vec<Pull>>,
    /// The next commit request lands, and its answer is never sent (the connection closes).
    lose_commit_answer: AtomicBool,
    /// The repositories are public: GETs without credentials are answered.
    public: AtomicBool,
    scratch: tempfile::TempDir,
    /// Other repositories of the forge (an app's), by path (`tomoda/app`): read only, for
    /// the comparisons of the ordering guard.
    apps: Mutex<Vec<(String, PathBuf)>>,
}

pub struct ForgeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<State>,
}

impl ForgeServer {
    /// A forge of `style` over the bare repository `bare`, accepting `token`.
    pub fn start(style: Style, bare: &Path, token: &str) -> ForgeServer {
        ForgeServer::start_paged(style, bare, token, 100)
    }

    /// As `start`, with directory listings paged at most `page_size` entries at a time.
    pub fn start_paged(style: Style, bare: &Path, token: &str, page_size: usize) -> ForgeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            style,
            bare: bare.to_path_buf(),
            tokens: Mutex::new(vec![token.to_string()]),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            before_commit: Mutex::new(None),
            commit_lock: Mutex::new(()),
            page_size,
            app_public_key: Mutex::new(None),
            minted: format!("ghs_minted{}", fastrand::u64(..)),
            cloudbuild_denied: AtomicBool::new(false),
            pulls: Mutex::new(Vec::new()),
            lose_commit_answer: AtomicBool::new(false),
            public: AtomicBool::new(false),
            scratch: tempfile::tempdir().unwrap(),
            apps: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                serve(&listener, &stop, "forge", move |stream, _| {
                    handle(&stream, &state);
                });
            })
        };
        ForgeServer {
            addr,
            stop,
            thread: Some(thread),
            state,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API base URL as promote.yaml's `api_url:` names it.
    pub fn api_url(&self) -> String {
        match self.state.style {
            Style::GitHub => format!("{}/api/v3", self.base()),
            Style::GitLab => format!("{}/api/v4", self.base()),
            Style::Bitbucket => format!("{}/2.0", self.base()),
        }
    }

    /// The repository's URL on this forge (as `repo:`; nothing is cloned from it).
    pub fn repo_url(&self) -> String {
        format!("{}/{OWNER}/{NAME}.git", self.base())
    }

    pub fn forge_name(&self) -> &'static str {
        match self.state.style {
            Style::GitHub => "github",
            Style::GitLab => "gitlab",
            Style::Bitbucket => "bitbucket",
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    pub fn fail_next(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    pub fn before_first_commit(&self, hook: impl FnOnce() + Send + 'static) {
        *lock(&self.state.before_commit) = Some(Box::new(hook));
    }

    /// Sets up the GitHub App whose JWTs must verify against `public_key_pem`.
    pub fn app(&self, public_key_pem: &Path) {
        *lock(&self.state.app_public_key) = Some(public_key_pem.to_path_buf());
    }

    /// The token the App exchange and Cloud Build hand out (accepted once handed out).
    pub fn minted(&self) -> &str {
        &self.state.minted
    }

    /// The next commit lands but its answer is lost.
    pub fn lose_next_commit_answer(&self) {
        self.state.lose_commit_answer.store(true, Ordering::SeqCst);
    }

    /// Serves the bare repository `bare` as `path` (`tomoda/app`) too, for comparisons.
    pub fn host(&self, path: &str, bare: &Path) {
        lock(&self.state.apps).push((path.to_string(), bare.to_path_buf()));
    }

    /// Makes the repositories public: reads need no token (writes still do).
    pub fn make_public(&self) {
        self.state.public.store(true, Ordering::SeqCst);
    }

    /// Accepts `token` too (another repository's token).
    pub fn accept(&self, token: &str) {
        lock(&self.state.tokens).push(token.to_string());
    }

    pub fn deny_cloudbuild(&self) {
        self.state.cloudbuild_denied.store(true, Ordering::SeqCst);
    }

    pub fn pulls(&self) -> Vec<Pull> {
        lock(&self.state.pulls).clone()
    }

    /// A person merges request `number`: its target branch fast-forwards to its head.
    pub fn merge_pull(&self, number: u64) {
        let mut pulls = lock(&self.state.pulls);
        let pull = pulls.iter_mut().find(|p| p.number == number).unwrap();
        let tip = head(&self.state, &pull.head).expect("the request's branch");
        let base = head(&self.state, &pull.base).expect("the target branch");
        git(
            &self.state,
            &["merge-base", "--is-ancestor", &base, &tip],
            &[],
            None,
        )
        .expect("a fast-forward merge");
        git(
            &self.state,
            &[
                "update-ref",
                &format!("refs/heads/{}", pull.base),
                &tip,
                &base,
            ],
            &[],
            None,
        )
        .unwrap();
        pull.state = "merged";
    }

    /// A person closes request `number` without merging it.
    pub fn close_pull(&self, number: u64) {
        let mut pulls = lock(&self.state.pulls);
        pulls.iter_mut().find(|p| p.number == number).unwrap().state = "closed";
    }
}

impl Drop for ForgeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn answer(status: u16, body: &Value) -> Answer {
    Answer {
        status,
        headers: vec![(
            "Content-Type".into(),
            "application/json; charset=utf-8".into(),
        )],
        body: body.to_string().into_bytes(),
    }
}

fn raw(status: u16, content_type: &str, body: Vec<u8>) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type".into(), content_type.into())],
        body,
    }
}

fn handle(stream: &TcpStream, state: &State) {
    stream.set_nodelay(true).ok();
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let Some(request) = read_request(stream) else {
        return;
    };
    lock(&state.requests).push(request.clone());
    let queued = {
        let mut faults = lock(&state.faults);
        let at = faults
            .iter()
            .position(|f| request.target.contains(&f.matching));
        at.and_then(|i| faults.remove(i))
    };
    let reply = match queued {
        Some(f) => Answer {
            status: f.status,
            headers: f.headers,
            body: f.body.into_bytes(),
        },
        None => route(&request, state),
    };
    let path = request.target.split('?').next().unwrap_or_default();
    let commit = request.method == "POST"
        && (path == "/api/graphql"
            || path.ends_with("/repository/commits")
            || path.ends_with("/src"));
    if commit && state.lose_commit_answer.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&reply.body);
    let mut stream = stream;
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
}

fn read_request(stream: &TcpStream) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query's `key`, decoded.
fn query(target: &str, key: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn bearer(request: &Recorded) -> Option<String> {
    let value = request.header("authorization")?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.to_string());
    }
    if let Some(t) = value.strip_prefix("token ") {
        return Some(t.to_string());
    }
    if let Some(b) = value.strip_prefix("Basic ") {
        let text = String::from_utf8(STANDARD.decode(b).ok()?).ok()?;
        return text.split_once(':').map(|(_, p)| p.to_string());
    }
    request.header("private-token").map(str::to_string)
}

fn route(request: &Recorded, state: &State) -> Answer {
    let path = request
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if request.header("metadata-flavor") != Some("Google") {
            return raw(
                403,
                "text/html",
                b"Missing Metadata-Flavor:Google header".to_vec(),
            );
        }
        return answer(
            200,
            &json!({"access_token": METADATA_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
        );
    }
    if path.starts_with("/v2/projects/") && path.ends_with(":accessReadWriteToken") {
        return cloudbuild(request, state, &path);
    }
    if state.style == Style::GitHub
        && (path.ends_with("/installation") || path.contains("/app/installations/"))
    {
        return github_app(request, state, &path);
    }
    let authorized = bearer(request).is_some_and(|t| lock(&state.tokens).contains(&t));
    let anonymous =
        request.header("authorization").is_none() && request.header("private-token").is_none();
    if anonymous && request.method == "GET" {
        // A public repository answers reads without credentials; a private one answers as
        // if it did not exist, as all three forges do.
        if !state.public.load(Ordering::SeqCst) {
            return match state.style {
                Style::GitHub => not_found_github(),
                Style::GitLab => answer(404, &json!({"message": "404 Project Not Found"})),
                Style::Bitbucket => answer(
                    404,
                    &json!({"type": "error", "error": {"message": "Repository not found"}}),
                ),
            };
        }
    } else if !authorized {
        return match state.style {
            Style::GitHub => answer(
                401,
                &json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
            ),
            Style::GitLab => answer(401, &json!({"message": "401 Unauthorized"})),
            Style::Bitbucket => answer(
                401,
                &json!({"type": "error", "error": {"message": "Access token expired or invalid"}}),
            ),
        };
    }
    if let Some(answer) = compare(request, state, &path) {
        return answer;
    }
    match state.style {
        Style::GitHub => github(request, state, &path),
        Style::GitLab => gitlab(request, state, &path),
        Style::Bitbucket => bitbucket(request, state, &path),
    }
}

// ---- comparisons of two commits of a hosted repository (the ordering guard) ----

/// GitHub's `GET /repos/{o}/{r}/compare/{base}...{head}`, GitLab's `GET /projects/:id/
/// repository/compare?from=&to=` and Bitbucket's `GET /repositories/{ws}/{r}/merge-base/
/// {a}..{b}`, over a hosted repository (or the devops one), answered from git.
fn compare(request: &Recorded, state: &State, path: &str) -> Option<Answer> {
    if request.method != "GET" {
        return None;
    }
    let repos: Vec<(String, PathBuf)> = lock(&state.apps)
        .iter()
        .cloned()
        .chain([(format!("{OWNER}/{NAME}"), state.bare.clone())])
        .collect();
    let in_repo = |bare: &Path, args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(bare)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = |bare: &Path, rev: &str| {
        in_repo(
            bare,
            &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")],
        )
    };
    let count = |bare: &Path, range: &str| -> usize {
        in_repo(bare, &["rev-list", "--count", range])
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    match state.style {
        Style::GitHub => {
            let (bare, basehead) = repos.iter().find_map(|(name, bare)| {
                let rest = path.strip_prefix(&format!("/api/v3/repos/{name}/compare/"))?;
                Some((bare, decode(rest)))
            })?;
            let (base, head) = basehead.split_once("...")?;
            let (Some(base), Some(head)) = (commit(bare, base), commit(bare, head)) else {
                return Some(not_found_github());
            };
            let ahead = count(bare, &format!("{base}..{head}"));
            let behind = count(bare, &format!("{head}..{base}"));
            let status = match (ahead, behind) {
                _ if base == head => "identical",
                (_, 0) => "ahead",
                (0, _) => "behind",
                _ => "diverged",
            };
            let merge_base = in_repo(bare, &["merge-base", &base, &head]);
            Some(answer(
                200,
                &json!({
                    "status": status, "ahead_by": ahead, "behind_by": behind, "total_commits": ahead,
                    "base_commit": {"sha": base}, "merge_base_commit": {"sha": merge_base},
                    "commits": [], "files": [],
                }),
            ))
        }
        Style::GitLab => {
            let (bare, rest) = repos.iter().find_map(|(name, bare)| {
                let id = name.replace('/', "%2F");
                Some((
                    bare,
                    path.strip_prefix(&format!("/api/v4/projects/{id}/repository/"))?,
                ))
            })?;
            if rest != "compare" {
                return None;
            }
            let from = query(&request.target, "from")?;
            let to = query(&request.target, "to")?;
            let (Some(a), Some(b)) = (commit(bare, &from), commit(bare, &to)) else {
                return Some(answer(404, &json!({"message": "404 Ref Not Found"})));
            };
            // `from...to`: the commits of `to` since the merge base, oldest first.
            let list =
                in_repo(bare, &["rev-list", "--reverse", &format!("{a}..{b}")]).unwrap_or_default();
            let commits: Vec<Value> = list
                .lines()
                .filter(|l| !l.is_empty())
                .map(|id| json!({"id": id, "short_id": &id[..8], "title": "a commit"}))
                .collect();
            Some(answer(
                200,
                &json!({
                    "commit": commits.last(), "commits": commits, "diffs": [],
                    "compare_timeout": false, "compare_same_ref": from == to,
                }),
            ))
        }
        Style::Bitbucket => {
            let (bare, spec) = repos.iter().find_map(|(name, bare)| {
                let rest = path.strip_prefix(&format!("/2.0/repositories/{name}/merge-base/"))?;
                Some((bare, decode(rest)))
            })?;
            let (a, b) = spec.split_once("..")?;
            let not_found = answer(
                404,
                &json!({"type": "error", "error": {"message": "Commit not found"}}),
            );
            let (Some(a), Some(b)) = (commit(bare, a), commit(bare, b)) else {
                return Some(not_found);
            };
            Some(match in_repo(bare, &["merge-base", &a, &b]) {
                Some(base) => answer(200, &json!({"type": "commit", "hash": base})),
                None => not_found,
            })
        }
    }
}

// ---- the repository, through git plumbing ----

fn git(state: &State, args: &[&str], env: &[(&str, &str)], input: Option<&[u8]>) -> Option<String> {
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(&state.bare)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().ok()?;
    if let Some(input) = input {
        child.stdin.take()?.write_all(input).ok()?;
    }
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn head(state: &State, branch: &str) -> Option<String> {
    git(
        state,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
        &[],
        None,
    )
    .map(|s| s.trim().to_string())
}

/// One commit of a branch's log as `git log` gives it: id, committer date (strict ISO
/// 8601, as the forges write it) and the raw message.
struct LogEntry {
    id: String,
    date: String,
    /// The same in UTC with a `Z`, as GitHub writes times.
    utc: String,
    message: String,
}

/// Commits `skip..skip + count` of the log of `branch`, newest first; `None` when there
/// is no such branch.
fn log_of(state: &State, branch: &str, skip: usize, count: usize) -> Option<Vec<LogEntry>> {
    let tip = head(state, branch)?;
    let out = git(
        state,
        &[
            "log",
            "--format=%H%x00%cI%x00%cd%x00%B%x1e",
            "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
            &format!("--skip={skip}"),
            &format!("--max-count={count}"),
            &tip,
        ],
        &[("TZ", "UTC")],
        None,
    )?;
    Some(
        out.split('\x1e')
            .filter_map(|record| {
                let mut parts = record.trim_start_matches('\n').splitn(4, '\0');
                Some(LogEntry {
                    id: parts.next().filter(|id| id.len() == 40)?.to_string(),
                    date: parts.next()?.to_string(),
                    utc: parts.next()?.to_string(),
                    message: parts.next()?.to_string(),
                })
            })
            .collect(),
    )
}

/// `(mode, type, name)` of each entry of `dir` at `commit`; `None` when it is no tree.
/// A whole number of the request's query.
fn number(request: &Recorded, key: &str) -> Option<usize> {
    query(&request.target, key).and_then(|v| v.parse().ok())
}

/// The page size asked for with `key` (else the forge's `default`), within the forge's
/// bounds and the test's own page size.
fn page_size(request: &Recorded, key: &str, default: usize, state: &State) -> usize {
    number(request, key)
        .unwrap_or(default)
        .clamp(1, 100)
        .min(state.page_size)
}

/// Page `page` (from 1) of `size` entries of the listing of `dir`: each entry's mode,
/// kind and name, and its path.
fn page_of<'a>(
    entries: &'a [(String, String, String)],
    dir: &'a str,
    page: usize,
    size: usize,
) -> impl Iterator<Item = (&'a str, &'a str, &'a str, String)> {
    entries
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(move |(mode, kind, name)| {
            let full = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            (mode.as_str(), kind.as_str(), name.as_str(), full)
        })
}

fn ls_tree(state: &State, commit: &str, dir: &str) -> Option<Vec<(String, String, String)>> {
    let spec = if dir.is_empty() {
        format!("{commit}^{{tree}}")
    } else {
        format!("{commit}:{dir}")
    };
    let kind = git(state, &["cat-file", "-t", &spec], &[], None)?;
    if kind.trim() != "tree" {
        return None;
    }
    let out = git(state, &["ls-tree", &spec], &[], None)?;
    Some(
        out.lines()
            .filter_map(|l| {
                let (meta, name) = l.split_once('\t')?;
                let mut m = meta.split_whitespace();
                Some((m.next()?.into(), m.next()?.into(), name.to_string()))
            })
            .collect(),
    )
}

fn blob(state: &State, commit: &str, path: &str) -> Option<Vec<u8>> {
    let spec = format!("{commit}:{path}");
    let kind = git(state, &["cat-file", "-t", &spec], &[], None)?;
    if kind.trim() != "blob" {
        return None;
    }
    let out = Command::new("git")
        .args(["cat-file", "blob", &spec])
        .current_dir(&state.bare)
        .output()
        .ok()?;
    Some(out.stdout)
}

/// The parents of `commit`; `None` when it is no commit.
fn parents(state: &State, commit: &str) -> Option<Vec<String>> {
    let out = git(state, &["rev-parse", &format!("{commit}^@")], &[], None)?;
    Some(out.lines().map(str::to_string).collect())
}

fn last_commit(state: &State, commit: &str, path: &str) -> Option<String> {
    git(
        state,
        &["log", "-1", "--format=%H", commit, "--", path],
        &[],
        None,
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

/// A commit of `files` on top of `parent`, written with plumbing; the branch is moved only
/// if it is still `parent` (`update-ref NEW OLD`). `None` when it moved.
fn commit_files(
    state: &State,
    branch: &str,
    parent: &str,
    files: &[(String, Vec<u8>)],
    message: &str,
    author: (&str, &str),
) -> Option<String> {
    write_commit(state, branch, parent, Some(parent), files, message, author)
}

/// As `commit_files`, the branch set to the new commit whatever it held (or created).
fn replace_with_files(
    state: &State,
    branch: &str,
    parent: &str,
    files: &[(String, Vec<u8>)],
    message: &str,
    author: (&str, &str),
) -> Option<String> {
    write_commit(state, branch, parent, None, files, message, author)
}

fn write_commit(
    state: &State,
    branch: &str,
    parent: &str,
    old: Option<&str>,
    files: &[(String, Vec<u8>)],
    message: &str,
    author: (&str, &str),
) -> Option<String> {
    let env = [
        ("GIT_AUTHOR_NAME", author.0),
        ("GIT_AUTHOR_EMAIL", author.1),
        ("GIT_COMMITTER_NAME", "Forge"),
        ("GIT_COMMITTER_EMAIL", "noreply@forge.example"),
    ];
    let mut tree = git(
        state,
        &["rev-parse", &format!("{parent}^{{tree}}")],
        &[],
        None,
    )?
    .trim()
    .to_string();
    for (path, content) in files {
        let blob = git(state, &["hash-object", "-w", "--stdin"], &[], Some(content))?;
        let parts: Vec<&str> = path.split('/').collect();
        tree = with_blob(state, Some(&tree), &parts, blob.trim())?;
    }
    let commit = git(
        state,
        &["commit-tree", &tree, "-p", parent],
        &env,
        Some(message.as_bytes()),
    )?;
    let commit = commit.trim().to_string();
    let refname = format!("refs/heads/{branch}");
    let mut update = vec!["update-ref", refname.as_str(), commit.as_str()];
    update.extend(old);
    git(state, &update, &[], None)?;
    Some(commit)
}

/// `tree` with the blob at `parts` (a path), as a new tree: only the trees along the path
/// are rewritten (`ls-tree`, then `mktree`), as a forge does, so a commit costs the same
/// at any size of repository. A file keeps its mode.
fn with_blob(state: &State, tree: Option<&str>, parts: &[&str], blob: &str) -> Option<String> {
    let listing = match tree {
        Some(tree) => git(state, &["ls-tree", tree], &[], None)?,
        None => String::new(),
    };
    let (name, rest) = parts.split_first()?;
    let mut entries: Vec<String> = Vec::new();
    let mut existing: Option<(String, String)> = None;
    for line in listing.lines() {
        let (meta, entry_name) = line.split_once('\t')?;
        if entry_name == *name {
            let mut m = meta.split_whitespace();
            let mode = m.next()?.to_string();
            m.next();
            existing = Some((mode, m.next()?.to_string()));
        } else {
            entries.push(line.to_string());
        }
    }
    let entry = if rest.is_empty() {
        let mode = existing.map_or("100644".to_string(), |(mode, _)| mode);
        format!("{mode} blob {blob}\t{name}")
    } else {
        let subtree = existing.map(|(_, oid)| oid);
        let child = with_blob(state, subtree.as_deref(), rest, blob)?;
        format!("040000 tree {child}\t{name}")
    };
    entries.push(entry);
    let input = entries.join("\n") + "\n";
    git(state, &["mktree"], &[], Some(input.as_bytes())).map(|t| t.trim().to_string())
}

fn run_before_commit(state: &State) {
    let hook = lock(&state.before_commit).take();
    if let Some(hook) = hook {
        hook();
    }
}

// ---- GitHub ----

fn not_found_github() -> Answer {
    answer(
        404,
        &json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}),
    )
}

fn github(request: &Recorded, state: &State, path: &str) -> Answer {
    if request.method == "POST" && path == "/api/graphql" {
        return github_graphql(request, state);
    }
    let prefix = format!("/api/v3/repos/{OWNER}/{NAME}");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return not_found_github();
    };
    if let Some(sha) = rest.strip_prefix("/git/commits/") {
        return match parents(state, sha) {
            Some(list) => answer(
                200,
                &json!({"sha": sha, "parents": list.iter().map(|p| json!({"sha": p})).collect::<Vec<_>>()}),
            ),
            None => not_found_github(),
        };
    }
    if rest == "/commits" && request.method == "GET" {
        return github_commits(request, state);
    }
    if rest == "/git/refs" && request.method == "POST" {
        return github_create_ref(request, state);
    }
    if let Some(branch) = rest.strip_prefix("/git/refs/heads/")
        && request.method == "PATCH"
    {
        return github_update_ref(request, state, &decode(branch));
    }
    if rest == "/pulls" || rest.starts_with("/pulls/") || rest.starts_with("/issues/") {
        return github_pulls(request, state, rest);
    }
    if let Some(branch) = rest.strip_prefix("/git/ref/heads/") {
        let branch = decode(branch);
        return match head(state, &branch) {
            Some(sha) => answer(
                200,
                &json!({"ref": format!("refs/heads/{branch}"), "node_id": "REF_x", "object": {"sha": sha, "type": "commit"}}),
            ),
            None => not_found_github(),
        };
    }
    let Some(content_path) = rest
        .strip_prefix("/contents")
        .map(|p| decode(p.trim_start_matches('/')))
    else {
        return not_found_github();
    };
    let Some(reference) = query(&request.target, "ref") else {
        return not_found_github();
    };
    let download =
        |path: &str| format!("https://raw.github.example/{OWNER}/{NAME}/{reference}/{path}");
    if let Some(entries) = ls_tree(state, &reference, &content_path) {
        // At most 1,000 entries, the rest left out without a word, as documented.
        let items: Vec<Value> = entries
            .iter()
            .take(1000)
            .map(|(mode, kind, name)| {
                let full = if content_path.is_empty() {
                    name.clone()
                } else {
                    format!("{content_path}/{name}")
                };
                // A submodule is listed as a "file" without a download URL.
                let (kind, url) = match (mode.as_str(), kind.as_str()) {
                    ("120000", _) => ("symlink", json!(download(&full))),
                    (_, "tree") => ("dir", Value::Null),
                    (_, "commit") => ("file", Value::Null),
                    _ => ("file", json!(download(&full))),
                };
                json!({"name": name, "path": full, "type": kind, "download_url": url})
            })
            .collect();
        return answer(200, &Value::Array(items));
    }
    match blob(state, &reference, &content_path) {
        Some(bytes) if request.header("accept") == Some("application/vnd.github.raw+json") => {
            raw(200, "application/vnd.github.raw+json", bytes)
        }
        Some(bytes) => answer(
            200,
            &json!({"type": "file", "encoding": "base64", "size": bytes.len(), "path": content_path, "content": STANDARD.encode(&bytes), "download_url": download(&content_path)}),
        ),
        None => not_found_github(),
    }
}

fn github_graphql(request: &Recorded, state: &State) -> Answer {
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return answer(400, &json!({"message": "Problems parsing JSON"}));
    };
    let query = body["query"].as_str().unwrap_or_default();
    if query.contains("enablePullRequestAutoMerge") {
        return github_auto_merge(&body, state);
    }
    if !query.contains("createCommitOnBranch") {
        return answer(
            200,
            &json!({"errors": [{"message": "unsupported in this test server"}]}),
        );
    }
    let input = &body["variables"]["input"];
    let branch = input["branch"]["branchName"].as_str().unwrap_or_default();
    let expected = input["expectedHeadOid"].as_str().unwrap_or_default();
    let name = input["branch"]["repositoryNameWithOwner"]
        .as_str()
        .unwrap_or_default();
    if name != format!("{OWNER}/{NAME}") {
        return answer(
            200,
            &json!({"data": {"createCommitOnBranch": null}, "errors": [{"type": "NOT_FOUND", "message": format!("Could not resolve to a Repository with the name '{name}'.")}]}),
        );
    }
    let headline = input["message"]["headline"].as_str().unwrap_or_default();
    let text = input["message"]["body"].as_str().unwrap_or_default();
    let message = if text.is_empty() {
        headline.to_string()
    } else {
        format!("{headline}\n\n{text}")
    };
    let files: Vec<(String, Vec<u8>)> = input["fileChanges"]["additions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a["path"].as_str()?.to_string(),
                STANDARD.decode(a["contents"].as_str()?).ok()?,
            ))
        })
        .collect();
    run_before_commit(state);
    let _one_at_a_time = lock(&state.commit_lock);
    let stale = || {
        answer(
            200,
            &json!({"data": {"createCommitOnBranch": null}, "errors": [{"type": "STALE_DATA", "path": ["createCommitOnBranch"], "locations": [{"line": 1, "column": 58}], "message": format!("Expected branch to point to \"{expected}\" but it did not. Pull and try again.")}]}),
        )
    };
    if head(state, branch).as_deref() != Some(expected) {
        return stale();
    }
    match commit_files(
        state,
        branch,
        expected,
        &files,
        &message,
        (
            BOT,
            "424242+tomoda-promote-app[bot]@users.noreply.github.com",
        ),
    ) {
        Some(oid) => answer(
            200,
            &json!({"data": {"createCommitOnBranch": {"commit": {"oid": oid, "url": format!("https://github.example/{OWNER}/{NAME}/commit/{oid}")}}}}),
        ),
        None => stale(),
    }
}

/// `GET /repos/{o}/{r}/commits?sha=&per_page=&page=`: 30 a page unless asked (at most
/// 100), each commit with its `commit.message` and `commit.committer.date`; a `Link`
/// header names the next page while there is one.
fn github_commits(request: &Recorded, state: &State) -> Answer {
    let branch = query(&request.target, "sha").unwrap_or_else(|| "main".into());
    let per_page = page_size(request, "per_page", 30, state);
    let page = number(request, "page").unwrap_or(1).max(1);
    let Some(entries) = log_of(state, &branch, (page - 1) * per_page, per_page + 1) else {
        return not_found_github();
    };
    let more = entries.len() > per_page;
    let items: Vec<Value> = entries
        .iter()
        .take(per_page)
        .map(|c| {
            json!({"sha": c.id, "commit": {"message": c.message.trim_end_matches('\n'), "committer": {"name": "GitHub", "date": c.utc}}})
        })
        .collect();
    let mut reply = answer(200, &Value::Array(items));
    if more {
        let next = format!(
            "</api/v3/repos/{OWNER}/{NAME}/commits?sha={branch}&per_page={per_page}&page={}>; rel=\"next\"",
            page + 1
        );
        reply.headers.push(("Link".into(), next));
    }
    reply
}

fn unprocessable(message: &str) -> Answer {
    answer(
        422,
        &json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": "422"}),
    )
}

fn github_ref(branch: &str, sha: &str) -> Value {
    json!({"ref": format!("refs/heads/{branch}"), "node_id": "REF_x", "object": {"sha": sha, "type": "commit"}})
}

/// `POST /git/refs {ref, sha}`: 422 when the reference exists.
fn github_create_ref(request: &Recorded, state: &State) -> Answer {
    let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
    let (Some(name), Some(sha)) = (body["ref"].as_str(), body["sha"].as_str()) else {
        return unprocessable("Invalid request.");
    };
    let Some(branch) = name.strip_prefix("refs/heads/") else {
        return unprocessable("Reference name must start with 'refs/'.");
    };
    if head(state, branch).is_some() {
        return unprocessable("Reference already exists");
    }
    let created = git(state, &["update-ref", name, sha, ""], &[], None);
    match created {
        Some(_) => answer(201, &github_ref(branch, sha)),
        None => unprocessable("Object does not exist"),
    }
}

/// `PATCH /git/refs/heads/{b} {sha, force}`: a fast-forward unless `force`.
fn github_update_ref(request: &Recorded, state: &State, branch: &str) -> Answer {
    let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
    let Some(sha) = body["sha"].as_str() else {
        return unprocessable("Invalid request.");
    };
    let Some(old) = head(state, branch) else {
        return unprocessable("Reference does not exist");
    };
    let forward = git(
        state,
        &["merge-base", "--is-ancestor", &old, sha],
        &[],
        None,
    )
    .is_some();
    if !forward && body["force"] != true {
        return unprocessable("Update is not a fast forward");
    }
    let refname = format!("refs/heads/{branch}");
    match git(state, &["update-ref", &refname, sha, &old], &[], None) {
        Some(_) => answer(200, &github_ref(branch, sha)),
        None => unprocessable("Reference cannot be updated"),
    }
}

fn github_pull_json(pull: &Pull, state: &State) -> Value {
    json!({
        "number": pull.number,
        "node_id": format!("PR_node{}", pull.number),
        "html_url": format!("https://github.example/{OWNER}/{NAME}/pull/{}", pull.number),
        "state": if pull.state == "open" { "open" } else { "closed" },
        "merged": pull.state == "merged",
        "title": pull.title,
        "body": pull.body,
        "head": {"ref": pull.head, "sha": head(state, &pull.head), "label": format!("{OWNER}:{}", pull.head)},
        "base": {"ref": pull.base},
        "labels": pull.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        "auto_merge": if pull.auto_merge { json!({"merge_method": "merge"}) } else { Value::Null },
    })
}

/// `GET|POST /pulls`, `PATCH /pulls/{n}`, `POST /issues/{n}/labels`.
fn github_pulls(request: &Recorded, state: &State, rest: &str) -> Answer {
    let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
    let mut pulls = lock(&state.pulls);
    if rest == "/pulls" && request.method == "GET" {
        // `head` is `owner:branch`; `state` open, closed or all (open by default).
        let wanted_head = query(&request.target, "head");
        let base = query(&request.target, "base");
        let wanted_state = query(&request.target, "state").unwrap_or_else(|| "open".into());
        let list: Vec<Value> = pulls
            .iter()
            .filter(|p| {
                wanted_head
                    .as_ref()
                    .is_none_or(|h| *h == format!("{OWNER}:{}", p.head))
            })
            .filter(|p| base.as_ref().is_none_or(|b| *b == p.base))
            .filter(|p| match wanted_state.as_str() {
                "all" => true,
                "closed" => p.state != "open",
                _ => p.state == "open",
            })
            .map(|p| github_pull_json(p, state))
            .collect();
        return answer(200, &Value::Array(list));
    }
    if rest == "/pulls" && request.method == "POST" {
        let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
        let (head_ref, base) = (field("head"), field("base"));
        let head_ref = head_ref
            .strip_prefix(&format!("{OWNER}:"))
            .unwrap_or(&head_ref)
            .to_string();
        if field("title").is_empty() || head(state, &head_ref).is_none() {
            return unprocessable("Validation Failed");
        }
        if pulls
            .iter()
            .any(|p| p.head == head_ref && p.base == base && p.state == "open")
        {
            return unprocessable(&format!(
                "A pull request already exists for {OWNER}:{head_ref}."
            ));
        }
        let pull = Pull {
            number: pulls.len() as u64 + 1,
            head: head_ref,
            base,
            title: field("title"),
            body: field("body"),
            labels: Vec::new(),
            state: "open",
            auto_merge: false,
        };
        let json = github_pull_json(&pull, state);
        pulls.push(pull);
        return answer(201, &json);
    }
    let (kind, tail) = rest[1..].split_once('/').unwrap_or_default();
    let (number, labels) = tail.split_once('/').unwrap_or((tail, ""));
    let Some(pull) = number
        .parse::<u64>()
        .ok()
        .and_then(|n| pulls.iter_mut().find(|p| p.number == n))
    else {
        return not_found_github();
    };
    match (kind, labels, request.method.as_str()) {
        ("pulls", "", "PATCH") => {
            if let Some(title) = body["title"].as_str() {
                pull.title = title.to_string();
            }
            if let Some(text) = body["body"].as_str() {
                pull.body = text.to_string();
            }
            answer(200, &github_pull_json(pull, state))
        }
        ("issues", "labels", "POST") => {
            for label in body["labels"].as_array().into_iter().flatten() {
                let label = label.as_str().unwrap_or_default().to_string();
                if !pull.labels.contains(&label) {
                    pull.labels.push(label);
                }
            }
            let list: Vec<Value> = pull.labels.iter().map(|l| json!({"name": l})).collect();
            answer(200, &Value::Array(list))
        }
        _ => not_found_github(),
    }
}

/// `enablePullRequestAutoMerge(input: {pullRequestId})`: refused on a request not open.
fn github_auto_merge(body: &Value, state: &State) -> Answer {
    let id = body["variables"]["id"].as_str().unwrap_or_default();
    let mut pulls = lock(&state.pulls);
    let found = pulls
        .iter_mut()
        .find(|p| format!("PR_node{}", p.number) == id);
    match found {
        Some(pull) if pull.state == "open" => {
            pull.auto_merge = true;
            answer(
                200,
                &json!({"data": {"enablePullRequestAutoMerge": {"pullRequest": {"number": pull.number}}}}),
            )
        }
        Some(_) => answer(
            200,
            &json!({"data": {"enablePullRequestAutoMerge": null}, "errors": [{"type": "UNPROCESSABLE", "message": "Pull request is not in the correct state to enable auto-merge"}]}),
        ),
        None => answer(
            200,
            &json!({"data": {"enablePullRequestAutoMerge": null}, "errors": [{"type": "NOT_FOUND", "message": format!("Could not resolve to a node with the global id of '{id}'")}]}),
        ),
    }
}

/// The App's two requests: the JWT (RS256 over the test key) is checked with `openssl`.
fn github_app(request: &Recorded, state: &State, path: &str) -> Answer {
    let Some(public) = lock(&state.app_public_key).clone() else {
        return not_found_github();
    };
    let jwt = bearer(request).unwrap_or_default();
    if let Err(why) = verify_jwt(&jwt, &public, &state.scratch) {
        return answer(
            401,
            &json!({"message": format!("A JSON web token could not be decoded ({why})"), "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    if request.method == "GET" && path == format!("/api/v3/repos/{OWNER}/{NAME}/installation") {
        return answer(
            200,
            &json!({"id": INSTALLATION, "app_id": APP_ID, "account": {"login": OWNER}}),
        );
    }
    if request.method == "POST"
        && path == format!("/api/v3/app/installations/{INSTALLATION}/access_tokens")
    {
        lock(&state.tokens).push(state.minted.clone());
        return answer(
            201,
            &json!({"token": state.minted, "expires_at": "2026-12-01T13:00:00Z", "permissions": {"contents": "write"}, "repository_selection": "selected"}),
        );
    }
    not_found_github()
}

fn verify_jwt(jwt: &str, public_pem: &Path, scratch: &tempfile::TempDir) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not three parts".into());
    }
    let json = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let header = json(parts[0])?;
    if header["alg"] != "RS256" {
        return Err("alg is not RS256".into());
    }
    let claims = json(parts[1])?;
    if claims["iss"] != json!(APP_ID) {
        return Err(format!("iss is {}", claims["iss"]));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    if iat > now + 60 || exp <= now || exp - iat > 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future or past".into());
    }
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| e.to_string())?;
    let id = fastrand::u64(..);
    let data_file = scratch.path().join(format!("jwt-{id}.data"));
    let sig_file = scratch.path().join(format!("jwt-{id}.sig"));
    std::fs::write(&data_file, format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(&sig_file, signature).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_pem)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&data_file)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err("signature does not verify".into())
    }
}

fn cloudbuild(request: &Recorded, state: &State, path: &str) -> Answer {
    if request.method != "POST" || bearer(request).as_deref() != Some(METADATA_TOKEN) {
        return answer(
            401,
            &json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
        );
    }
    let name = path
        .trim_start_matches("/v2/")
        .trim_end_matches(":accessReadWriteToken");
    if state.cloudbuild_denied.load(Ordering::SeqCst) {
        return answer(
            403,
            &json!({"error": {"code": 403, "message": format!("Permission 'cloudbuild.repositories.accessReadWriteToken' denied on resource '{name}' (or it may not exist)."), "status": "PERMISSION_DENIED"}}),
        );
    }
    lock(&state.tokens).push(state.minted.clone());
    answer(
        200,
        &json!({"token": state.minted, "expirationTime": "2026-12-01T13:00:00Z"}),
    )
}

// ---- GitLab ----

fn gitlab(request: &Recorded, state: &State, path: &str) -> Answer {
    let not_found = |what: &str| answer(404, &json!({"message": format!("404 {what} Not Found")}));
    // The project id is the path, URL-encoded: split before decoding.
    let project = format!("/api/v4/projects/{OWNER}%2F{NAME}/");
    if let Some(rest) = path
        .strip_prefix(&project)
        .and_then(|r| r.strip_prefix("merge_requests"))
    {
        return gitlab_merge_requests(request, state, rest);
    }
    let Some(rest) = path.strip_prefix(&format!("{project}repository/")) else {
        return not_found("Project");
    };
    if let Some(branch) = rest.strip_prefix("branches/") {
        return match head(state, &decode(branch)) {
            Some(sha) => answer(
                200,
                &json!({"name": decode(branch), "protected": false, "commit": {"id": sha, "short_id": &sha[..8]}}),
            ),
            None => not_found("Branch"),
        };
    }
    if rest == "tree" {
        let reference = query(&request.target, "ref").unwrap_or_default();
        let dir = query(&request.target, "path").unwrap_or_default();
        let per_page = page_size(request, "per_page", 20, state);
        let page = number(request, "page").unwrap_or(1).max(1);
        // GitLab answers an empty list for a path that is no directory.
        let entries = ls_tree(state, &reference, &dir).unwrap_or_default();
        let items: Vec<Value> = page_of(&entries, &dir, page, per_page)
            .map(|(mode, kind, name, full)| {
                json!({"id": "0", "name": name, "type": if kind == "tree" { "tree" } else { "blob" }, "path": full, "mode": mode})
            })
            .collect();
        let pages = entries.len().div_ceil(per_page).max(1);
        let mut reply = answer(200, &Value::Array(items));
        let next = if page < pages {
            (page + 1).to_string()
        } else {
            String::new()
        };
        reply.headers.extend([
            ("x-next-page".to_string(), next),
            ("x-page".to_string(), page.to_string()),
            ("x-per-page".to_string(), per_page.to_string()),
            ("x-total".to_string(), entries.len().to_string()),
            ("x-total-pages".to_string(), pages.to_string()),
        ]);
        return reply;
    }
    if let Some(file) = rest.strip_prefix("files/") {
        let file = decode(file);
        let reference = query(&request.target, "ref").unwrap_or_default();
        let Some(bytes) = blob(state, &reference, &file) else {
            return not_found("File");
        };
        let commit = git(state, &["rev-parse", &reference], &[], None).unwrap_or_default();
        return answer(
            200,
            &json!({
                "file_name": file.rsplit('/').next(), "file_path": file, "size": bytes.len(),
                "encoding": "base64", "content": STANDARD.encode(&bytes), "ref": reference,
                "commit_id": commit.trim(), "last_commit_id": last_commit(state, &reference, &file),
            }),
        );
    }
    if rest == "commits" && request.method == "POST" {
        return gitlab_commit(request, state);
    }
    if rest == "commits" && request.method == "GET" {
        return gitlab_commits(request, state);
    }
    if let Some(sha) = rest.strip_prefix("commits/") {
        return match parents(state, sha) {
            Some(list) => answer(200, &json!({"id": sha, "parent_ids": list})),
            None => not_found("Commit"),
        };
    }
    not_found("Path")
}

/// `GET /projects/:id/repository/commits?ref_name=&per_page=&page=`: 20 a page unless
/// asked, `x-next-page` empty on the last page, and no `x-total` (GitLab leaves it out of
/// this API).
fn gitlab_commits(request: &Recorded, state: &State) -> Answer {
    let branch = query(&request.target, "ref_name").unwrap_or_else(|| "main".into());
    let per_page = page_size(request, "per_page", 20, state);
    let page = number(request, "page").unwrap_or(1).max(1);
    let Some(entries) = log_of(state, &branch, (page - 1) * per_page, per_page + 1) else {
        return answer(404, &json!({"message": "404 Reference Not Found"}));
    };
    let more = entries.len() > per_page;
    let items: Vec<Value> = entries
        .iter()
        .take(per_page)
        .map(|c| {
            json!({"id": c.id, "short_id": &c.id[..8], "title": c.message.lines().next().unwrap_or_default(), "message": c.message, "committed_date": c.date, "created_at": c.date})
        })
        .collect();
    let mut reply = answer(200, &Value::Array(items));
    reply.headers.extend([
        (
            "x-next-page".to_string(),
            if more {
                (page + 1).to_string()
            } else {
                String::new()
            },
        ),
        ("x-page".to_string(), page.to_string()),
        ("x-per-page".to_string(), per_page.to_string()),
    ]);
    reply
}

fn gitlab_commit(request: &Recorded, state: &State) -> Answer {
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return answer(400, &json!({"message": "invalid JSON"}));
    };
    let branch = body["branch"].as_str().unwrap_or_default().to_string();
    run_before_commit(state);
    let _one_at_a_time = lock(&state.commit_lock);
    // `start_sha` starts a new branch there; with `force`, an existing one is overwritten.
    let start = body["start_sha"].as_str().map(str::to_string);
    let force = body["force"] == true;
    if start.is_some() && head(state, &branch).is_some() && !force {
        return answer(
            400,
            &json!({"message": format!("A branch called '{branch}' already exists. Switch to that branch in order to make changes")}),
        );
    }
    let Some(tip) = start.clone().or_else(|| head(state, &branch)) else {
        return answer(
            400,
            &json!({"message": "You can only create or edit files when you are on a branch"}),
        );
    };
    let mut files = Vec::new();
    for action in body["actions"].as_array().into_iter().flatten() {
        let path = action["file_path"].as_str().unwrap_or_default().to_string();
        let exists = blob(state, &tip, &path).is_some();
        match action["action"].as_str() {
            Some("update") if !exists => {
                return answer(
                    400,
                    &json!({"message": "A file with this name doesn't exist"}),
                );
            }
            Some("create") if exists => {
                return answer(
                    400,
                    &json!({"message": "A file with this name already exists"}),
                );
            }
            Some("update" | "create") => {}
            _ => {
                return answer(
                    400,
                    &json!({"message": "only create and update in this test server"}),
                );
            }
        }
        if let Some(last) = action["last_commit_id"].as_str()
            && last_commit(state, &tip, &path).as_deref() != Some(last)
        {
            return answer(
                400,
                &json!({"message": format!("The file has changed since you started editing it: {path}")}),
            );
        }
        let content = action["content"].as_str().unwrap_or_default();
        let bytes = if action["encoding"] == "base64" {
            STANDARD.decode(content).unwrap_or_default()
        } else {
            content.as_bytes().to_vec()
        };
        files.push((path, bytes));
    }
    let message = body["commit_message"].as_str().unwrap_or_default();
    let author = (
        body["author_name"].as_str().unwrap_or("GitLab User"),
        body["author_email"]
            .as_str()
            .unwrap_or("user@gitlab.example"),
    );
    let made = if start.is_some() {
        replace_with_files(state, &branch, &tip, &files, message, author)
    } else {
        commit_files(state, &branch, &tip, &files, message, author)
    };
    match made {
        Some(id) => answer(
            201,
            &json!({"id": id, "short_id": &id[..8], "title": message.lines().next(), "message": message}),
        ),
        None => answer(
            400,
            &json!({"message": "9:Could not update refs/heads/main."}),
        ),
    }
}

fn gitlab_mr_json(pull: &Pull) -> Value {
    json!({
        "id": 1000 + pull.number,
        "iid": pull.number,
        "web_url": format!("https://gitlab.example/{OWNER}/{NAME}/-/merge_requests/{}", pull.number),
        "state": match pull.state { "open" => "opened", other => other },
        "source_branch": pull.head,
        "target_branch": pull.base,
        "title": pull.title,
        "description": pull.body,
        "labels": pull.labels,
        "merge_when_pipeline_succeeds": pull.auto_merge,
    })
}

/// `GET|POST /merge_requests`, `PUT /merge_requests/:iid`, `PUT …/:iid/merge`.
fn gitlab_merge_requests(request: &Recorded, state: &State, rest: &str) -> Answer {
    let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let labels = |k: &str| -> Vec<String> {
        field(k)
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut pulls = lock(&state.pulls);
    match (rest, request.method.as_str()) {
        ("", "GET") => {
            let source = query(&request.target, "source_branch");
            let target = query(&request.target, "target_branch");
            let wanted = query(&request.target, "state").unwrap_or_else(|| "all".into());
            let list: Vec<Value> = pulls
                .iter()
                .map(gitlab_mr_json)
                .filter(|mr| source.as_ref().is_none_or(|s| mr["source_branch"] == *s))
                .filter(|mr| target.as_ref().is_none_or(|t| mr["target_branch"] == *t))
                .filter(|mr| wanted == "all" || mr["state"] == wanted)
                .collect();
            answer(200, &Value::Array(list))
        }
        ("", "POST") => {
            let (source, target) = (field("source_branch"), field("target_branch"));
            if head(state, &source).is_none() || field("title").is_empty() {
                return answer(400, &json!({"message": {"source_branch": ["is invalid"]}}));
            }
            if let Some(open) = pulls
                .iter()
                .find(|p| p.head == source && p.base == target && p.state == "open")
            {
                return answer(
                    409,
                    &json!({"message": [format!("Another open merge request already exists for this source branch: !{}", open.number)]}),
                );
            }
            let pull = Pull {
                number: pulls.len() as u64 + 1,
                head: source,
                base: target,
                title: field("title"),
                body: field("description"),
                labels: labels("labels"),
                state: "open",
                auto_merge: false,
            };
            let json = gitlab_mr_json(&pull);
            pulls.push(pull);
            answer(201, &json)
        }
        (tail, "PUT") => {
            let tail = tail.trim_start_matches('/');
            let (number, merge) = tail.split_once('/').unwrap_or((tail, ""));
            let Some(pull) = number
                .parse::<u64>()
                .ok()
                .and_then(|n| pulls.iter_mut().find(|p| p.number == n))
            else {
                return answer(404, &json!({"message": "404 Not found"}));
            };
            if merge == "merge" {
                if pull.state != "open" {
                    return answer(405, &json!({"message": "405 Method Not Allowed"}));
                }
                // A pipeline runs: the request merges when it succeeds, not now.
                pull.auto_merge =
                    body["merge_when_pipeline_succeeds"] == true || body["auto_merge"] == true;
                return answer(200, &gitlab_mr_json(pull));
            }
            if !field("title").is_empty() {
                pull.title = field("title");
            }
            if body.get("description").is_some() {
                pull.body = field("description");
            }
            for label in labels("add_labels") {
                if !pull.labels.contains(&label) {
                    pull.labels.push(label);
                }
            }
            answer(200, &gitlab_mr_json(pull))
        }
        _ => answer(404, &json!({"message": "404 Not found"})),
    }
}

// ---- Bitbucket Cloud ----

fn bitbucket(request: &Recorded, state: &State, path: &str) -> Answer {
    let not_found = || {
        answer(
            404,
            &json!({"type": "error", "error": {"message": "No such file or directory"}}),
        )
    };
    let Some(rest) = path.strip_prefix(&format!("/2.0/repositories/{OWNER}/{NAME}/")) else {
        return not_found();
    };
    if rest.starts_with("pullrequests") {
        return bitbucket_pulls(request, state, rest);
    }
    if let Some(branch) = rest.strip_prefix("refs/branches/")
        && request.method == "DELETE"
    {
        let refname = format!("refs/heads/{}", decode(branch));
        return match git(state, &["update-ref", "-d", &refname], &[], None) {
            Some(_) if head(state, &decode(branch)).is_none() => raw(204, "text/plain", Vec::new()),
            _ => answer(
                404,
                &json!({"type": "error", "error": {"message": "Branch not found"}}),
            ),
        };
    }
    if let Some(branch) = rest.strip_prefix("refs/branches/") {
        let branch = decode(branch);
        return match head(state, &branch) {
            Some(sha) => answer(
                200,
                &json!({"type": "branch", "name": branch, "target": {"type": "commit", "hash": sha}}),
            ),
            None => answer(
                404,
                &json!({"type": "error", "error": {"message": format!("Branch \"{branch}\" not found")}}),
            ),
        };
    }
    if rest == "src" && request.method == "POST" {
        return bitbucket_commit(request, state);
    }
    if let Some(branch) = rest.strip_prefix("commits/")
        && request.method == "GET"
    {
        return bitbucket_commits(request, state, &decode(branch));
    }
    if let Some(sha) = rest.strip_prefix("commit/") {
        return match parents(state, sha) {
            Some(list) => answer(
                200,
                &json!({"type": "commit", "hash": sha, "parents": list.iter().map(|p| json!({"hash": p, "type": "commit"})).collect::<Vec<_>>()}),
            ),
            None => not_found(),
        };
    }
    let Some(rest) = rest.strip_prefix("src/") else {
        return not_found();
    };
    let (commit, file) = rest.split_once('/').unwrap_or((rest, ""));
    let file = decode(file);
    let dir = file.trim_end_matches('/');
    if let Some(entries) = ls_tree(state, commit, dir) {
        let page = number(request, "page").unwrap_or(1).max(1);
        let size = page_size(request, "pagelen", 10, state);
        let values: Vec<Value> = page_of(&entries, dir, page, size)
            .map(|(mode, kind, _, full)| {
                let attributes: Vec<&str> = if mode == "120000" { vec!["link"] } else { vec![] };
                let kind = if kind == "tree" {
                    "commit_directory"
                } else {
                    "commit_file"
                };
                json!({"path": full, "type": kind, "attributes": attributes, "commit": {"hash": commit}})
            })
            .collect();
        let mut page_json = json!({"pagelen": size, "page": page, "values": values});
        if page * size < entries.len() {
            let host = request.header("host").unwrap_or("127.0.0.1");
            page_json["next"] = json!(format!(
                "http://{host}/2.0/repositories/{OWNER}/{NAME}/src/{commit}/{}?pagelen={size}&page={}",
                if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                },
                page + 1
            ));
        }
        return answer(200, &page_json);
    }
    match blob(state, commit, dir) {
        Some(bytes) => raw(200, "text/plain", bytes),
        None => not_found(),
    }
}

/// `GET /2.0/repositories/{ws}/{r}/commits/{branch}?pagelen=&page=`: a page of `values`
/// (hash, date, message) and, while there is more, the `next` page's whole URL.
fn bitbucket_commits(request: &Recorded, state: &State, branch: &str) -> Answer {
    let pagelen = page_size(request, "pagelen", 30, state);
    let page = number(request, "page").unwrap_or(1).max(1);
    let Some(entries) = log_of(state, branch, (page - 1) * pagelen, pagelen + 1) else {
        return answer(
            404,
            &json!({"type": "error", "error": {"message": format!("Commit not found: {branch}")}}),
        );
    };
    let values: Vec<Value> = entries
        .iter()
        .take(pagelen)
        .map(|c| json!({"type": "commit", "hash": c.id, "date": c.date, "message": c.message}))
        .collect();
    let mut body = json!({"pagelen": pagelen, "values": values});
    if entries.len() > pagelen {
        let host = request.header("host").unwrap_or("127.0.0.1");
        body["next"] = json!(format!(
            "http://{host}/2.0/repositories/{OWNER}/{NAME}/commits/{branch}?pagelen={pagelen}&page={}",
            page + 1
        ));
    }
    answer(200, &body)
}

fn bitbucket_commit(request: &Recorded, state: &State) -> Answer {
    if request.header("content-type") != Some("application/x-www-form-urlencoded") {
        return answer(
            400,
            &json!({"type": "error", "error": {"message": "a form is expected"}}),
        );
    }
    let mut message = String::new();
    let mut branch = String::new();
    let mut parents = String::new();
    let mut author = String::new();
    let mut files = Vec::new();
    for (k, v) in url::form_urlencoded::parse(request.body.as_bytes()) {
        match k.as_ref() {
            "message" => message = v.into_owned(),
            "branch" => branch = v.into_owned(),
            "parents" => parents = v.into_owned(),
            "author" => author = v.into_owned(),
            path => files.push((
                path.trim_start_matches('/').to_string(),
                v.as_bytes().to_vec(),
            )),
        }
    }
    run_before_commit(state);
    let _one_at_a_time = lock(&state.commit_lock);
    // A new branch with a parent is made on that parent, whatever the main branch is.
    let existing = head(state, &branch);
    let tip = existing.clone().unwrap_or_else(|| parents.clone());
    if existing.is_some() && !parents.is_empty() && parents != tip {
        return answer(
            409,
            &json!({"type": "error", "error": {"message": "The commit's parents don't match the branch's head; the branch was modified."}}),
        );
    }
    let (name, email) = author
        .split_once(" <")
        .map_or(("Bitbucket", "bb@example.com"), |(n, e)| {
            (n, e.trim_end_matches('>'))
        });
    let made = if existing.is_some() {
        commit_files(state, &branch, &tip, &files, &message, (name, email))
    } else {
        replace_with_files(state, &branch, &tip, &files, &message, (name, email))
    };
    match made {
        Some(hash) => {
            let host = request.header("host").unwrap_or("127.0.0.1");
            let mut reply = raw(201, "text/plain", Vec::new());
            reply.headers.push((
                "Location".into(),
                format!("http://{host}/2.0/repositories/{OWNER}/{NAME}/commit/{hash}"),
            ));
            reply
        }
        None => answer(
            409,
            &json!({"type": "error", "error": {"message": "the branch was modified"}}),
        ),
    }
}

fn bitbucket_pull_json(pull: &Pull) -> Value {
    json!({
        "type": "pullrequest",
        "id": pull.number,
        "title": pull.title,
        "description": pull.body,
        "state": match pull.state { "open" => "OPEN", "merged" => "MERGED", _ => "DECLINED" },
        "source": {"branch": {"name": pull.head}},
        "destination": {"branch": {"name": pull.base}},
        "links": {"html": {"href": format!("https://bitbucket.example/{OWNER}/{NAME}/pull-requests/{}", pull.number)}},
    })
}

/// The `field="value"` terms of a BBQL filter joined by AND (all this server reads).
fn bbql_terms(q: &str) -> Vec<(String, String)> {
    q.split(" AND ")
        .filter_map(|term| {
            let (k, v) = term.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// `GET|POST /pullrequests`, `PUT /pullrequests/{id}`: without `q`, only open ones are
/// listed, as documented.
fn bitbucket_pulls(request: &Recorded, state: &State, rest: &str) -> Answer {
    let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
    let mut pulls = lock(&state.pulls);
    let tail = rest
        .trim_start_matches("pullrequests")
        .trim_start_matches('/');
    match (tail, request.method.as_str()) {
        ("", "GET") => {
            let terms = query(&request.target, "q").map_or_else(
                || vec![("state".to_string(), "OPEN".to_string())],
                |q| bbql_terms(&q),
            );
            let values: Vec<Value> = pulls
                .iter()
                .map(bitbucket_pull_json)
                .filter(|pr| {
                    terms.iter().all(|(k, v)| match k.as_str() {
                        "state" => pr["state"] == *v,
                        "source.branch.name" => pr["source"]["branch"]["name"] == *v,
                        "destination.branch.name" => pr["destination"]["branch"]["name"] == *v,
                        _ => false,
                    })
                })
                .collect();
            answer(
                200,
                &json!({"pagelen": 10, "page": 1, "size": values.len(), "values": values}),
            )
        }
        ("", "POST") => {
            let source = body["source"]["branch"]["name"]
                .as_str()
                .unwrap_or_default();
            let target = body["destination"]["branch"]["name"]
                .as_str()
                .unwrap_or("main");
            if head(state, source).is_none() {
                return answer(
                    400,
                    &json!({"type": "error", "error": {"message": "source: Branch not found"}}),
                );
            }
            // An open request of the same branches is answered as it stands.
            if let Some(open) = pulls
                .iter()
                .find(|p| p.head == source && p.base == target && p.state == "open")
            {
                return answer(200, &bitbucket_pull_json(open));
            }
            let pull = Pull {
                number: pulls.len() as u64 + 1,
                head: source.to_string(),
                base: target.to_string(),
                title: body["title"].as_str().unwrap_or_default().to_string(),
                body: body["description"].as_str().unwrap_or_default().to_string(),
                labels: Vec::new(),
                state: "open",
                auto_merge: false,
            };
            let json = bitbucket_pull_json(&pull);
            pulls.push(pull);
            answer(201, &json)
        }
        (number, "PUT") => {
            let Some(pull) = number
                .parse::<u64>()
                .ok()
                .and_then(|n| pulls.iter_mut().find(|p| p.number == n))
            else {
                return answer(
                    404,
                    &json!({"type": "error", "error": {"message": "Not found"}}),
                );
            };
            if let Some(title) = body["title"].as_str() {
                pull.title = title.to_string();
            }
            if let Some(text) = body["description"].as_str() {
                pull.body = text.to_string();
            }
            answer(200, &bitbucket_pull_json(pull))
        }
        _ => answer(
            404,
            &json!({"type": "error", "error": {"message": "Not found"}}),
        ),
    }
}
