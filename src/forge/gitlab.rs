//! GitLab (gitlab.com and self-managed): the head from `GET /projects/:id/repository/
//! branches/:branch`, directories from `GET /projects/:id/repository/tree` (paged),
//! files from `GET /projects/:id/repository/files/:path?ref=` (content and
//! `last_commit_id`), and the commit from `POST /projects/:id/repository/commits` with
//! each file's `last_commit_id`: GitLab's check is per file, and its 400 "file has
//! changed" is a lost race. A merge request's branch is made with the same request's
//! `start_sha` and `force`; requests through `/merge_requests` (found by `source_branch`
//! and `state=opened`), merge when the pipeline succeeds through `PUT …/:iid/merge`.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    Api, Dir, ForgeApi, Kind, Listing, LogPage, MAX_LIST_PAGES, Proposal, Request, escape_segment,
    head_from, logged_commits, lost_race, query_value, string_at, strings_in,
};
use crate::branch::{Landed, NewCommit};
use crate::error::{Error, Result};
use crate::ordering::{self, Order};
use crate::repo::{Forge, ForgeRepo};

pub struct GitLab {
    api: Api,
    /// `…/api/v4/projects/group%2Fproject`
    project_url: String,
    name: String,
    /// The `last_commit_id` of each file read, by (head, path), for the commit's check.
    last_commits: RefCell<HashMap<(String, String), String>>,
}

impl GitLab {
    pub fn new(api: Api, repo: &ForgeRepo) -> GitLab {
        GitLab {
            api,
            project_url: format!("{}/projects/{}", repo.api_url, escape_segment(&repo.path)),
            name: repo.path.clone(),
            last_commits: RefCell::new(HashMap::new()),
        }
    }

    fn get(&self, url: &str) -> Result<reqwest::blocking::Response> {
        self.api.send(self.api.get(url), url)
    }
}

impl ForgeApi for GitLab {
    fn head(&self, branch: &str) -> Result<String> {
        let url = format!(
            "{}/repository/branches/{}",
            self.project_url,
            escape_segment(branch)
        );
        let answer = self.get(&url)?;
        head_from(
            answer,
            &url,
            Forge::GitLab,
            &self.name,
            branch,
            "/commit/id",
        )
    }

    fn list(&self, head: &str, dir: &str) -> Result<Listing> {
        let mut entries = Vec::new();
        let mut page = 1;
        loop {
            let mut url = format!(
                "{}/repository/tree?ref={head}&per_page=100&page={page}",
                self.project_url
            );
            if !dir.is_empty() {
                url.push_str(&format!("&path={}", escape_segment(dir)));
            }
            let Some(answer) = Api::found(self.get(&url)?, &url, Forge::GitLab)? else {
                return Ok(None);
            };
            let next = answer
                .headers()
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok());
            let Value::Array(items) = Api::json(answer, &url)? else {
                return Err(bad_answer(&url, "not a list"));
            };
            for item in &items {
                let (Some(name), Some(kind)) = (item["name"].as_str(), item["type"].as_str())
                else {
                    continue;
                };
                let kind = match (kind, item["mode"].as_str()) {
                    (_, Some("120000")) => Kind::Symlink,
                    ("blob", _) => Kind::File,
                    ("tree", _) => Kind::Dir,
                    _ => Kind::Other,
                };
                entries.push((name.to_string(), kind));
            }
            // A path that is no directory answers an empty first page.
            if page == 1 && items.is_empty() && !dir.is_empty() {
                return Ok(None);
            }
            match next {
                Some(n) if n > page && page < MAX_LIST_PAGES => page = n,
                next => {
                    return Ok(Some(Dir {
                        entries,
                        complete: next.is_none(),
                    }));
                }
            }
        }
    }

    fn read(&self, head: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let url = format!(
            "{}/repository/files/{}?ref={head}",
            self.project_url,
            escape_segment(path)
        );
        let Some(answer) = Api::found(self.get(&url)?, &url, Forge::GitLab)? else {
            return Ok(None);
        };
        let body = Api::json(answer, &url)?;
        let content = body["content"].as_str().unwrap_or_default();
        let bytes = match body["encoding"].as_str() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(content.replace(['\n', '\r'], ""))
                .map_err(|e| bad_answer(&url, &format!("content is not base64: {e}")))?,
            _ => content.as_bytes().to_vec(),
        };
        if let Some(last) = body["last_commit_id"].as_str() {
            self.last_commits
                .borrow_mut()
                .insert((head.to_string(), path.to_string()), last.to_string());
        }
        Ok(Some(bytes))
    }

    fn parents(&self, commit: &str) -> Result<Vec<String>> {
        let url = format!("{}/repository/commits/{commit}", self.project_url);
        let answer = Api::success(self.get(&url)?, &url, Forge::GitLab)?;
        Ok(strings_in(&Api::json(answer, &url)?, "/parent_ids", ""))
    }

    /// `GET /projects/:id/repository/compare?from=&to=` asked both ways: its `commits` are
    /// those of `to` since the merge base, so each side's own commits tell the order.
    fn order(&self, deployed: &str, wanted: &str) -> Result<Option<Order>> {
        let own_commits = |from: &str, to: &str| -> Result<Option<bool>> {
            let url = format!(
                "{}/repository/compare?from={from}&to={to}",
                self.project_url
            );
            let Some(answer) = Api::found(self.get(&url)?, &url, Forge::GitLab)? else {
                return Ok(None);
            };
            let body = Api::json(answer, &url)?;
            let commits = body["commits"]
                .as_array()
                .ok_or_else(|| bad_answer(&url, "no commits"))?;
            Ok(Some(!commits.is_empty()))
        };
        let Some(wanted_has_own) = own_commits(deployed, wanted)? else {
            return Ok(None);
        };
        let Some(deployed_has_own) = own_commits(wanted, deployed)? else {
            return Ok(None);
        };
        Ok(ordering::from_own_commits(wanted_has_own, deployed_has_own))
    }

    /// `GET /projects/:id/repository/commits?ref_name=&per_page=&page=`, the next page
    /// from `x-next-page` (empty on the last).
    fn log(&self, branch: &str, cursor: Option<&str>, per_page: u32) -> Result<Option<LogPage>> {
        let page: u32 = cursor.and_then(|c| c.parse().ok()).unwrap_or(1);
        let url = format!(
            "{}/repository/commits?ref_name={}&per_page={per_page}&page={page}",
            self.project_url,
            query_value(branch)
        );
        let answer = Api::success(self.get(&url)?, &url, Forge::GitLab)?;
        let next = answer
            .headers()
            .get("x-next-page")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|n| *n > page);
        let commits = logged_commits(
            &Api::json(answer, &url)?,
            "",
            ["/id", "/committed_date", "/message"],
            &url,
            Forge::GitLab,
        )?;
        Ok(Some(LogPage {
            commits,
            next: next.map(|n| n.to_string()),
        }))
    }

    fn commit(&self, branch: &str, head: &str, content: &NewCommit) -> Result<Landed> {
        let NewCommit {
            files,
            message,
            author,
        } = *content;
        let request = json!({
            "branch": branch,
            "commit_message": message,
            "actions": self.actions(head, files, true),
            "author_name": author.name,
            "author_email": author.email,
        });
        let url = format!("{}/repository/commits", self.project_url);
        let answer = self.api.send(
            self.api
                .post(&url)
                .header("Content-Type", "application/json")
                .body(request.to_string()),
            &url,
        )?;
        let status = answer.status();
        if status.is_success() {
            let body = Api::json(answer, &url)?;
            return string_at(&body, "/id", &url, Forge::GitLab).map(Landed::Commit);
        }
        if status == StatusCode::BAD_REQUEST {
            let error = Api::status_error(answer, &url, Forge::GitLab);
            if error.to_string().contains("has changed") {
                return Ok(lost_race("a file changed since it was read (GitLab 400)"));
            }
            return Err(error);
        }
        Err(Api::status_error(answer, &url, Forge::GitLab))
    }

    fn replace_branch(&self, branch: &str, base: &str, content: &NewCommit) -> Result<String> {
        let NewCommit {
            files,
            message,
            author,
        } = *content;
        // `start_sha` with `force`: the branch is made anew from the target's tip.
        let body = json!({
            "branch": branch,
            "start_sha": base,
            "force": true,
            "commit_message": message,
            "actions": self.actions(base, files, false),
            "author_name": author.name,
            "author_email": author.email,
        });
        let url = format!("{}/repository/commits", self.project_url);
        let answer = self.send_json(self.api.post(&url), &url, &body)?;
        string_at(&answer, "/id", &url, Forge::GitLab)
    }

    fn find_request(&self, head: &str, base: &str) -> Result<Option<Request>> {
        let url = format!(
            "{}?source_branch={}&target_branch={}&state=opened",
            self.merge_requests_url(),
            super::query_value(head),
            super::query_value(base)
        );
        let answer = Api::success(self.get(&url)?, &url, Forge::GitLab)?;
        Ok(Api::json(answer, &url)?
            .as_array()
            .into_iter()
            .flatten()
            .find(|mr| mr["source_branch"] == head && mr["state"] == "opened")
            .and_then(request))
    }

    fn create_request(&self, proposal: &Proposal) -> Result<Request> {
        let url = self.merge_requests_url();
        let mut body = GitLab::fields(proposal);
        body["source_branch"] = json!(proposal.head);
        body["target_branch"] = json!(proposal.base);
        body["remove_source_branch"] = json!(true);
        if !proposal.labels.is_empty() {
            body["labels"] = json!(proposal.labels.join(","));
        }
        let answer = self.send_json(self.api.post(&url), &url, &body)?;
        request(&answer).ok_or_else(|| bad_answer(&url, "no iid or web_url"))
    }

    fn update_request(&self, open: &Request, proposal: &Proposal) -> Result<Request> {
        let url = format!("{}/{}", self.merge_requests_url(), open.number);
        let mut body = GitLab::fields(proposal);
        if !proposal.labels.is_empty() {
            body["add_labels"] = json!(proposal.labels.join(","));
        }
        let answer = self.send_json(self.api.put(&url), &url, &body)?;
        request(&answer).ok_or_else(|| bad_answer(&url, "no iid or web_url"))
    }

    fn enable_auto_merge(&self, open: &Request) -> Result<()> {
        let url = format!("{}/{}/merge", self.merge_requests_url(), open.number);
        // `auto_merge` since GitLab 17.11; `merge_when_pipeline_succeeds` before (still read).
        let body = json!({"merge_when_pipeline_succeeds": true, "auto_merge": true});
        self.send_json(self.api.put(&url), &url, &body).map(drop)
    }
}

impl GitLab {
    /// The commit's actions: a file read at `head` is updated (with its `last_commit_id`
    /// when `checked`), any other created.
    fn actions(&self, head: &str, files: &[(&str, &[u8])], checked: bool) -> Vec<Value> {
        let last_commits = self.last_commits.borrow();
        files
            .iter()
            .map(|(path, content)| {
                let last = last_commits.get(&(head.to_string(), (*path).to_string()));
                let mut action = json!({
                    "action": if last.is_some() { "update" } else { "create" },
                    "file_path": path,
                    "content": base64::engine::general_purpose::STANDARD.encode(content),
                    "encoding": "base64",
                });
                if let Some(last) = last.filter(|_| checked) {
                    action["last_commit_id"] = json!(last);
                }
                action
            })
            .collect()
    }

    fn send_json(
        &self,
        request: reqwest::blocking::RequestBuilder,
        url: &str,
        body: &Value,
    ) -> Result<Value> {
        self.api.send_json(request, url, body, Forge::GitLab)
    }

    fn merge_requests_url(&self) -> String {
        format!("{}/merge_requests", self.project_url)
    }

    /// A merge request's edit of a promotion; labels as GitLab takes them, comma-separated.
    fn fields(proposal: &Proposal) -> Value {
        json!({"title": proposal.title, "description": proposal.body})
    }
}

/// A merge request of GitLab's answers.
fn request(mr: &Value) -> Option<Request> {
    Some(Request {
        number: mr["iid"].as_u64()?,
        url: mr["web_url"].as_str()?.to_string(),
        node_id: None,
    })
}

fn bad_answer(url: &str, what: &str) -> Error {
    super::bad_answer(url, what, Forge::GitLab)
}
