//! Bitbucket Cloud: the head from `GET /2.0/repositories/{workspace}/{repo}/refs/branches/
//! {branch}`, directories (paged, `next`) and files from `GET …/src/{commit}/{path}`, and
//! the commit from `POST …/src` (a form: one field per file path) with `parents` = the
//! head read: Bitbucket answers 409 when the branch moved, a lost race. Pull requests
//! through `/pullrequests` (found with the query `q=source.branch.name="…" AND
//! state="OPEN"`); Bitbucket Cloud has no labels and no auto-merge in its API.

use reqwest::StatusCode;

use serde_json::{Value, json};

use super::{
    Api, Dir, ForgeApi, Kind, Listing, LogPage, MAX_LIST_PAGES, Proposal, Request, escape_path,
    head_from, logged_commits, lost_race, string_at, strings_in,
};
use crate::branch::{Landed, NewCommit};
use crate::error::{Error, Result};
use crate::ordering::{self, Order};
use crate::repo::{Forge, ForgeRepo};

pub struct Bitbucket {
    api: Api,
    /// `https://api.bitbucket.org/2.0/repositories/{workspace}/{repo}`
    repo_url: String,
    /// Only `next` links under the API's own base are followed: the token goes nowhere else.
    api_url: String,
    name: String,
}

impl Bitbucket {
    pub fn new(api: Api, repo: &ForgeRepo) -> Bitbucket {
        Bitbucket {
            api,
            repo_url: format!("{}/repositories/{}", repo.api_url, escape_path(&repo.path)),
            api_url: repo.api_url.clone(),
            name: repo.path.clone(),
        }
    }

    fn get(&self, url: &str) -> Result<reqwest::blocking::Response> {
        self.api.send(self.api.get(url), url)
    }

    fn src_url(&self, head: &str, path: &str) -> String {
        format!("{}/src/{head}/{}", self.repo_url, escape_path(path))
    }
}

impl ForgeApi for Bitbucket {
    fn head(&self, branch: &str) -> Result<String> {
        let url = format!("{}/refs/branches/{}", self.repo_url, escape_path(branch));
        let answer = self.get(&url)?;
        head_from(
            answer,
            &url,
            Forge::Bitbucket,
            &self.name,
            branch,
            "/target/hash",
        )
    }

    fn list(&self, head: &str, dir: &str) -> Result<Listing> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut url = format!("{}?pagelen=100", self.src_url(head, &prefix));
        let mut entries = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let Some(answer) = Api::found(self.get(&url)?, &url, Forge::Bitbucket)? else {
                return Ok(None);
            };
            // A file answers its bytes, a directory a JSON page.
            let listing = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if !listing {
                return Ok(None);
            }
            let page = Api::json(answer, &url)?;
            for item in page["values"].as_array().into_iter().flatten() {
                let Some(path) = item["path"].as_str() else {
                    continue;
                };
                let name = path.rsplit('/').next().unwrap_or(path).to_string();
                let link = item["attributes"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == "link"));
                let kind = match item["type"].as_str() {
                    _ if link => Kind::Symlink,
                    Some("commit_file") => Kind::File,
                    Some("commit_directory") => Kind::Dir,
                    _ => Kind::Other,
                };
                entries.push((name, kind));
            }
            match page["next"].as_str() {
                Some(next) if next.starts_with(&format!("{}/", self.api_url)) => {
                    url = next.to_string();
                }
                next => {
                    return Ok(Some(Dir {
                        entries,
                        complete: next.is_none(),
                    }));
                }
            }
        }
        Ok(Some(Dir {
            entries,
            complete: false,
        }))
    }

    fn read(&self, head: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let url = self.src_url(head, path);
        let Some(answer) = Api::found(self.get(&url)?, &url, Forge::Bitbucket)? else {
            return Ok(None);
        };
        Api::bytes(answer, &url).map(Some)
    }

    fn parents(&self, commit: &str) -> Result<Vec<String>> {
        let url = format!("{}/commit/{commit}", self.repo_url);
        let answer = Api::success(self.get(&url)?, &url, Forge::Bitbucket)?;
        Ok(strings_in(&Api::json(answer, &url)?, "/parents", "/hash"))
    }

    /// `GET …/merge-base/{deployed}..{wanted}`: the best common ancestor, which is the
    /// older of the two when one descends from the other.
    fn order(&self, deployed: &str, wanted: &str) -> Result<Option<Order>> {
        let url = format!("{}/merge-base/{deployed}..{wanted}", self.repo_url);
        let Some(answer) = Api::found(self.get(&url)?, &url, Forge::Bitbucket)? else {
            return Ok(None);
        };
        let base = string_at(&Api::json(answer, &url)?, "/hash", &url, Forge::Bitbucket)?;
        Ok(Some(ordering::from_merge_base(&base, deployed, wanted)))
    }

    /// `GET …/commits/{branch}?pagelen=`, then each page's `next` link (kept under the
    /// API's base, as the listings' are).
    fn log(&self, branch: &str, cursor: Option<&str>, per_page: u32) -> Result<Option<LogPage>> {
        let url = match cursor {
            Some(next) => next.to_string(),
            None => format!(
                "{}/commits/{}?pagelen={per_page}",
                self.repo_url,
                escape_path(branch)
            ),
        };
        let answer = Api::success(self.get(&url)?, &url, Forge::Bitbucket)?;
        let page = Api::json(answer, &url)?;
        let commits = logged_commits(
            &page,
            "/values",
            ["/hash", "/date", "/message"],
            &url,
            Forge::Bitbucket,
        )?;
        let next = page["next"].as_str().and_then(|next| {
            let ours = next.starts_with(&format!("{}/", self.api_url));
            if !ours {
                tracing::warn!(
                    "the log's next page is not under {}: not read",
                    self.api_url
                );
            }
            ours.then(|| next.to_string())
        });
        Ok(Some(LogPage { commits, next }))
    }

    fn commit(&self, branch: &str, head: &str, content: &NewCommit) -> Result<Landed> {
        let NewCommit {
            files,
            message,
            author,
        } = *content;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("message", message)
            .append_pair("author", &format!("{} <{}>", author.name, author.email))
            .append_pair("branch", branch)
            .append_pair("parents", head);
        for (path, content) in files {
            form.append_pair(&format!("/{path}"), &String::from_utf8_lossy(content));
        }
        let url = format!("{}/src", self.repo_url);
        let answer = self.api.send(
            self.api
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.finish()),
            &url,
        )?;
        match answer.status() {
            StatusCode::CONFLICT => Ok(lost_race("the branch moved (Bitbucket 409)")),
            status if status.is_success() => {
                // The new commit is named by the Location header: …/commit/{hash}.
                let location = answer
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let hash = location.trim_end_matches('/').rsplit('/').next();
                match hash.filter(|h| h.len() >= 7 && h.bytes().all(|b| b.is_ascii_hexdigit())) {
                    Some(hash) => Ok(Landed::Commit(hash.to_string())),
                    None => Err(bad_answer(&url, "no commit in Location")),
                }
            }
            _ => Err(Api::status_error(answer, &url, Forge::Bitbucket)),
        }
    }

    /// Bitbucket moves no branch backwards: the old branch is deleted, then made anew by a
    /// commit whose parent is `base` (an open request of the branch follows it, or, if
    /// Bitbucket declined it, a new one is opened).
    fn replace_branch(&self, branch: &str, base: &str, content: &NewCommit) -> Result<String> {
        let url = format!("{}/refs/branches/{}", self.repo_url, escape_path(branch));
        // Deleted, or already gone.
        Api::found(
            self.api.send(self.api.delete(&url), &url)?,
            &url,
            Forge::Bitbucket,
        )?;
        self.commit(branch, base, content)?
            .into_commit(&format!("{}/src", self.repo_url), branch)
    }

    fn find_request(&self, head: &str, base: &str) -> Result<Option<Request>> {
        let filter = format!(
            "source.branch.name=\"{head}\" AND destination.branch.name=\"{base}\" AND state=\"OPEN\""
        );
        let url = format!(
            "{}/pullrequests?q={}",
            self.repo_url,
            super::query_value(&filter)
        );
        let answer = Api::success(self.get(&url)?, &url, Forge::Bitbucket)?;
        Ok(Api::json(answer, &url)?["values"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|pr| pr["source"]["branch"]["name"] == head && pr["state"] == "OPEN")
            .and_then(request))
    }

    fn create_request(&self, proposal: &Proposal) -> Result<Request> {
        if !proposal.labels.is_empty() {
            tracing::warn!(
                "Bitbucket Cloud pull requests have no labels: {} not set",
                proposal.labels.join(", ")
            );
        }
        let url = format!("{}/pullrequests", self.repo_url);
        let body = json!({
            "title": proposal.title,
            "description": proposal.body,
            "source": {"branch": {"name": proposal.head}},
            "destination": {"branch": {"name": proposal.base}},
            "close_source_branch": true,
        });
        let answer = self
            .api
            .send_json(self.api.post(&url), &url, &body, Forge::Bitbucket)?;
        request(&answer).ok_or_else(|| bad_answer(&url, "no id or links.html"))
    }

    fn update_request(&self, open: &Request, proposal: &Proposal) -> Result<Request> {
        let url = format!("{}/pullrequests/{}", self.repo_url, open.number);
        let body = json!({"title": proposal.title, "description": proposal.body});
        let answer = self
            .api
            .send_json(self.api.put(&url), &url, &body, Forge::Bitbucket)?;
        request(&answer).ok_or_else(|| bad_answer(&url, "no id or links.html"))
    }

    fn enable_auto_merge(&self, _open: &Request) -> Result<()> {
        Err(Error::usage(
            "Bitbucket Cloud's API offers no auto-merge of a pull request",
            "merge the request in Bitbucket once its checks pass",
        ))
    }
}

/// A pull request of Bitbucket's answers.
fn request(pr: &Value) -> Option<Request> {
    Some(Request {
        number: pr["id"].as_u64()?,
        url: pr["links"]["html"]["href"].as_str()?.to_string(),
        node_id: None,
    })
}

fn bad_answer(url: &str, what: &str) -> Error {
    super::bad_answer(url, what, Forge::Bitbucket)
}
