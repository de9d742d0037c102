//! GitHub (and GitHub Enterprise Server): the head from `GET /repos/{o}/{r}/git/ref/heads/
//! {branch}`, directories and files from `GET /repos/{o}/{r}/contents/{path}?ref={head}`
//! (files in the raw media type), and the commit through the GraphQL mutation
//! `createCommitOnBranch` with `expectedHeadOid`: a strict compare-and-swap whose
//! `STALE_DATA` error is a lost race. GitHub signs these commits (Verified); their author
//! is the token's identity. Pull requests: `GET|POST /pulls`, `PATCH /pulls/{n}`, labels
//! through `POST /issues/{n}/labels`, auto-merge through GraphQL
//! `enablePullRequestAutoMerge`; the request's branch is set with `POST /git/refs` or a
//! forced `PATCH /git/refs/heads/{b}`.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    Api, Dir, ForgeApi, Kind, Listing, LogPage, Proposal, Request, escape_path, head_from,
    logged_commits, lost_race, query_value, split_message, strings_in,
};
use crate::branch::{Landed, NewCommit};
use crate::error::{Error, Result, Retry};
use crate::git::Refusal;
use crate::ordering::{self, Order};
use crate::repo::{Forge, ForgeRepo, sanitize};

const JSON: &str = "application/vnd.github+json";
const RAW: &str = "application/vnd.github.raw+json";
const API_VERSION: (&str, &str) = ("X-GitHub-Api-Version", "2022-11-28");

/// GitHub lists at most this many entries of a directory, and says nothing of the rest.
const MAX_LISTED: usize = 1000;

const AUTO_MERGE: &str = "mutation($id: ID!) { enablePullRequestAutoMerge(input: {pullRequestId: $id}) { pullRequest { number } } }";

const MUTATION: &str = "mutation($input: CreateCommitOnBranchInput!) { createCommitOnBranch(input: $input) { commit { oid url } } }";

pub struct GitHub {
    api: Api,
    /// `https://api.github.com/repos/{owner}/{repo}`
    repo_url: String,
    graphql_url: String,
    /// `owner/repo`
    name: String,
}

impl GitHub {
    pub fn new(api: Api, repo: &ForgeRepo) -> GitHub {
        GitHub {
            api,
            repo_url: format!("{}/repos/{}", repo.api_url, escape_path(&repo.path)),
            graphql_url: graphql_url(&repo.api_url),
            name: repo.path.clone(),
        }
    }

    fn get(&self, url: &str, accept: &str) -> Result<reqwest::blocking::Response> {
        self.api.send(
            self.api
                .get(url)
                .header("Accept", accept)
                .header(API_VERSION.0, API_VERSION.1),
            url,
        )
    }

    fn send_json(
        &self,
        request: reqwest::blocking::RequestBuilder,
        url: &str,
        body: &Value,
    ) -> Result<Value> {
        self.api
            .send_json(
                request
                    .header("Accept", JSON)
                    .header(API_VERSION.0, API_VERSION.1),
                url,
                body,
                Forge::GitHub,
            )
            .map_err(|e| {
                if url.contains("/pulls") || url.contains("/issues/") {
                    pulls_error(e)
                } else {
                    e
                }
            })
    }

    /// Points `branch` at `sha`, creating it when missing, force-moving it otherwise.
    fn set_branch(&self, branch: &str, sha: &str) -> Result<()> {
        let url = format!("{}/git/ref/heads/{}", self.repo_url, escape_path(branch));
        let exists = self.get(&url, JSON)?;
        match exists.status() {
            StatusCode::NOT_FOUND => {
                let url = format!("{}/git/refs", self.repo_url);
                let body = json!({"ref": format!("refs/heads/{branch}"), "sha": sha});
                self.send_json(self.api.post(&url), &url, &body)?;
            }
            status if status.is_success() => {
                let url = format!("{}/git/refs/heads/{}", self.repo_url, escape_path(branch));
                let body = json!({"sha": sha, "force": true});
                self.send_json(self.api.patch(&url), &url, &body)?;
            }
            _ => return Err(Api::status_error(exists, &url, Forge::GitHub)),
        }
        Ok(())
    }

    fn graphql(&self, query: &str, variables: &Value) -> Result<Value> {
        let url = &self.graphql_url;
        let request = json!({"query": query, "variables": variables});
        let answer = self.api.send(
            self.api
                .post(url)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .body(request.to_string()),
            url,
        )?;
        Api::json(Api::success(answer, url, Forge::GitHub)?, url)
    }

    fn contents_url(&self, path: &str, head: &str) -> String {
        if path.is_empty() {
            format!("{}/contents?ref={head}", self.repo_url)
        } else {
            format!(
                "{}/contents/{}?ref={head}",
                self.repo_url,
                escape_path(path)
            )
        }
    }
}

/// GraphQL answers at `/graphql` of api.github.com, and at `/api/graphql` of a GitHub
/// Enterprise Server whose REST API is `/api/v3`.
pub fn graphql_url(api_url: &str) -> String {
    match api_url.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{api_url}/graphql"),
    }
}

impl ForgeApi for GitHub {
    fn head(&self, branch: &str) -> Result<String> {
        let url = format!("{}/git/ref/heads/{}", self.repo_url, escape_path(branch));
        let answer = self.get(&url, JSON)?;
        head_from(
            answer,
            &url,
            Forge::GitHub,
            &self.name,
            branch,
            "/object/sha",
        )
    }

    fn list(&self, head: &str, dir: &str) -> Result<Listing> {
        let url = self.contents_url(dir, head);
        let Some(answer) = Api::found(self.get(&url, JSON)?, &url, Forge::GitHub)? else {
            return Ok(None);
        };
        // A directory answers a list; a file an object.
        let Value::Array(items) = Api::json(answer, &url)? else {
            return Ok(None);
        };
        Ok(Some(Dir {
            complete: items.len() < MAX_LISTED,
            entries: items
                .iter()
                .filter_map(|item| Some((item["name"].as_str()?.to_string(), kind(item))))
                .collect(),
        }))
    }

    fn stat(&self, head: &str, path: &str) -> Result<Option<Kind>> {
        let url = self.contents_url(path, head);
        let Some(answer) = Api::found(self.get(&url, JSON)?, &url, Forge::GitHub)? else {
            return Ok(None);
        };
        Ok(Some(match Api::json(answer, &url)? {
            Value::Array(_) => Kind::Dir,
            item => kind(&item),
        }))
    }

    fn read(&self, head: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let url = self.contents_url(path, head);
        let Some(answer) = Api::found(self.get(&url, RAW)?, &url, Forge::GitHub)? else {
            return Ok(None);
        };
        Api::bytes(answer, &url).map(Some)
    }

    fn parents(&self, commit: &str) -> Result<Vec<String>> {
        let url = format!("{}/git/commits/{commit}", self.repo_url);
        let answer = Api::success(self.get(&url, JSON)?, &url, Forge::GitHub)?;
        Ok(strings_in(&Api::json(answer, &url)?, "/parents", "/sha"))
    }

    /// `GET /repos/{o}/{r}/compare/{deployed}...{wanted}`: its `status` is how the head
    /// stands to the base. One commit a page: only the status is read.
    fn order(&self, deployed: &str, wanted: &str) -> Result<Option<Order>> {
        let url = format!("{}/compare/{deployed}...{wanted}?per_page=1", self.repo_url);
        let Some(answer) = Api::found(self.get(&url, JSON)?, &url, Forge::GitHub)? else {
            return Ok(None);
        };
        let body = Api::json(answer, &url)?;
        let status = body["status"].as_str().unwrap_or_default();
        ordering::from_compare_status(status)
            .map(Some)
            .ok_or_else(|| bad_answer(&url, &format!("compare status `{status}`")))
    }

    /// `GET /repos/{o}/{r}/commits?sha={branch}&per_page=&page=`; the `Link` header names
    /// a next page while there is one.
    fn log(&self, branch: &str, cursor: Option<&str>, per_page: u32) -> Result<Option<LogPage>> {
        let page: u32 = cursor.and_then(|c| c.parse().ok()).unwrap_or(1);
        let url = format!(
            "{}/commits?sha={}&per_page={per_page}&page={page}",
            self.repo_url,
            query_value(branch)
        );
        let answer = Api::success(self.get(&url, JSON)?, &url, Forge::GitHub)?;
        let more = answer
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|link| link.contains("rel=\"next\""));
        let commits = logged_commits(
            &Api::json(answer, &url)?,
            "",
            ["/sha", "/commit/committer/date", "/commit/message"],
            &url,
            Forge::GitHub,
        )?;
        Ok(Some(LogPage {
            commits,
            next: more.then(|| (page + 1).to_string()),
        }))
    }

    fn commit(&self, branch: &str, head: &str, content: &NewCommit) -> Result<Landed> {
        // The author is the token's identity: GitHub signs the commit as it.
        let NewCommit { files, message, .. } = *content;
        let (headline, body) = split_message(message);
        let additions: Vec<Value> = files
            .iter()
            .map(|(path, content)| {
                json!({
                    "path": path,
                    "contents": base64::engine::general_purpose::STANDARD.encode(content),
                })
            })
            .collect();
        let variables = json!({"input": {
            "branch": {"repositoryNameWithOwner": self.name, "branchName": branch},
            "expectedHeadOid": head,
            "message": {"headline": headline, "body": body},
            "fileChanges": {"additions": additions},
        }});
        let answer = self.graphql(MUTATION, &variables)?;
        if let Some(oid) = answer["data"]["createCommitOnBranch"]["commit"]["oid"].as_str() {
            return Ok(Landed::Commit(oid.to_string()));
        }
        graphql_refusal(&answer, &self.graphql_url)
    }

    /// The branch is set to `base` (created, or force-moved: it is the tool's own), then
    /// committed to through `createCommitOnBranch` (signed by GitHub), expecting `base`.
    fn replace_branch(&self, branch: &str, base: &str, content: &NewCommit) -> Result<String> {
        self.set_branch(branch, base)?;
        self.commit(branch, base, content)?
            .into_commit(&self.graphql_url, branch)
    }

    fn find_request(&self, head: &str, base: &str) -> Result<Option<Request>> {
        let owner = self.name.split('/').next().unwrap_or_default();
        let url = format!(
            "{}/pulls?head={}&base={}&state=open",
            self.repo_url,
            super::query_value(&format!("{owner}:{head}")),
            super::query_value(base)
        );
        let answer =
            Api::success(self.get(&url, JSON)?, &url, Forge::GitHub).map_err(pulls_error)?;
        let list = Api::json(answer, &url)?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .find(|pr| pr["head"]["ref"] == head && pr["state"] == "open")
            .and_then(request))
    }

    fn create_request(&self, proposal: &Proposal) -> Result<Request> {
        let url = format!("{}/pulls", self.repo_url);
        let body = json!({
            "title": proposal.title,
            "head": proposal.head,
            "base": proposal.base,
            "body": proposal.body,
            "maintainer_can_modify": false,
        });
        let answer = self.send_json(self.api.post(&url), &url, &body)?;
        let created = request(&answer).ok_or_else(|| bad_answer(&url, "no number or html_url"))?;
        self.label(&created, &proposal.labels)?;
        Ok(created)
    }

    fn update_request(&self, open: &Request, proposal: &Proposal) -> Result<Request> {
        let url = format!("{}/pulls/{}", self.repo_url, open.number);
        let body = json!({"title": proposal.title, "body": proposal.body});
        let answer = self.send_json(self.api.patch(&url), &url, &body)?;
        let updated = request(&answer).ok_or_else(|| bad_answer(&url, "no number or html_url"))?;
        self.label(&updated, &proposal.labels)?;
        Ok(updated)
    }

    fn enable_auto_merge(&self, open: &Request) -> Result<()> {
        let Some(id) = &open.node_id else {
            return Err(bad_answer(
                &self.graphql_url,
                "the pull request has no node_id",
            ));
        };
        let answer = self.graphql(AUTO_MERGE, &json!({"id": id}))?;
        if answer["data"]["enablePullRequestAutoMerge"]["pullRequest"].is_object() {
            return Ok(());
        }
        let said: Vec<String> = answer["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .map(|m| crate::secrets::redact(&sanitize(m)))
            .collect();
        Err(Error::Remote {
            url: self.graphql_url.clone(),
            message: format!("enablePullRequestAutoMerge refused: {}", said.join("; ")),
            hint: "allow auto-merge in the repository's settings (General > Pull Requests), and protect the branch with required checks".into(),
            retry: Retry::Never,
        })
    }
}

impl GitHub {
    /// Adds `labels` to the request (labels already on it stay; a missing one is made).
    fn label(&self, open: &Request, labels: &[String]) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let url = format!("{}/issues/{}/labels", self.repo_url, open.number);
        self.send_json(self.api.post(&url), &url, &json!({ "labels": labels }))?;
        Ok(())
    }
}

/// A 403 of a pull request's request: what the token lacks is the pull requests'
/// permission, not (only) the contents'.
fn pulls_error(error: Error) -> Error {
    match error {
        Error::Remote {
            url,
            message,
            retry: Retry::Never,
            ..
        } if message.starts_with("HTTP 403") => Error::Remote {
            url,
            message,
            hint: "the token may not open pull requests here: a GitHub App or fine-grained token needs Pull requests: read and write (beside Contents: read and write) on the devops repository".into(),
            retry: Retry::Never,
        },
        other => other,
    }
}

/// A pull request of the REST API's answers.
fn request(pr: &Value) -> Option<Request> {
    Some(Request {
        number: pr["number"].as_u64()?,
        url: pr["html_url"].as_str()?.to_string(),
        node_id: pr["node_id"].as_str().map(str::to_string),
    })
}

/// An entry of a listing, or a path asked alone. In listings GitHub calls a submodule a
/// "file" (for backwards compatibility), one without a download URL.
fn kind(item: &Value) -> Kind {
    match item["type"].as_str() {
        Some("file") if item["download_url"].is_string() => Kind::File,
        Some("dir") => Kind::Dir,
        Some("symlink") => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// GraphQL reports failures with HTTP 200 and `errors`: `STALE_DATA` is a lost race;
/// missing access is an error; anything else (a ruleset, a protected branch) is a refusal
/// in GitHub's words, which the loop tells from a race by reading the head again.
fn graphql_refusal(answer: &Value, url: &str) -> Result<Landed> {
    let errors = answer["errors"].as_array().cloned().unwrap_or_default();
    let said: Vec<String> = errors
        .iter()
        .filter_map(|e| e["message"].as_str())
        .map(|m| crate::secrets::redact(&sanitize(m)))
        .collect();
    let kinds: Vec<&str> = errors.iter().filter_map(|e| e["type"].as_str()).collect();
    if kinds.contains(&"STALE_DATA") {
        return Ok(lost_race("another commit landed first (STALE_DATA)"));
    }
    if kinds.contains(&"RATE_LIMITED") {
        return Err(Error::Remote {
            url: url.to_string(),
            message: format!("rate limited: {}", said.join("; ")),
            hint: super::RATE_LIMIT_HINT.into(),
            retry: Retry::Transient { after: None },
        });
    }
    if kinds
        .iter()
        .any(|k| ["FORBIDDEN", "NOT_FOUND", "INSUFFICIENT_SCOPES"].contains(k))
    {
        return Err(Error::Remote {
            url: url.to_string(),
            message: format!("createCommitOnBranch refused: {}", said.join("; ")),
            hint: super::permission_hint(Forge::GitHub),
            retry: Retry::Never,
        });
    }
    if said.is_empty() {
        return Err(bad_answer(url, "neither a commit nor errors"));
    }
    Ok(Landed::Refused(Refusal {
        reason: format!("createCommitOnBranch refused ({})", kinds.join(", ")),
        not_fast_forward: false,
        server_said: said,
    }))
}

fn bad_answer(url: &str, what: &str) -> Error {
    super::bad_answer(url, what, Forge::GitHub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_lives_beside_the_rest_api() {
        assert_eq!(
            graphql_url("https://api.github.com"),
            "https://api.github.com/graphql"
        );
        assert_eq!(
            graphql_url("https://ghe.corp/api/v3"),
            "https://ghe.corp/api/graphql"
        );
    }

    #[test]
    fn stale_data_is_a_race_and_other_errors_are_not() {
        let stale = json!({"data": {"createCommitOnBranch": null}, "errors": [{"type": "STALE_DATA", "message": "Expected branch to point to \"abc\" but it did not. Pull and try again."}]});
        assert!(matches!(
            graphql_refusal(&stale, "u").unwrap(),
            Landed::Refused(Refusal {
                not_fast_forward: true,
                ..
            })
        ));
        let rule = json!({"errors": [{"type": "UNPROCESSABLE", "message": "Repository rule violations found"}]});
        match graphql_refusal(&rule, "u").unwrap() {
            Landed::Refused(r) => {
                assert!(!r.not_fast_forward);
                assert_eq!(r.server_said, ["Repository rule violations found"]);
            }
            other @ Landed::Commit(_) => panic!("{other:?}"),
        }
        let denied = json!({"errors": [{"type": "FORBIDDEN", "message": "Resource not accessible by integration"}]});
        assert_eq!(
            graphql_refusal(&denied, "u").unwrap_err().retry(),
            Retry::Never
        );
        let limited =
            json!({"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]});
        assert_eq!(
            graphql_refusal(&limited, "u").unwrap_err().retry(),
            Retry::Transient { after: None }
        );
    }
}
