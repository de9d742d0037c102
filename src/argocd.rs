//! Argo CD after the push: ask it to refresh the application now rather than at its next
//! poll (every 3 minutes by default), and with `--wait` follow the application until it
//! runs the pushed commit Synced and Healthy. Only `GET /api/v1/applications/{name}` is
//! used: `?refresh=normal` is the refresh, and the same read is the poll.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client as HttpClient;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::Value;

use crate::error::{Error, Result, Retry, with_retries};
use crate::forge::{escape_segment, query_value};
use crate::git::http::{error_chain, retry_after};
use crate::message::short_sha;
use crate::plan::ArgoApp;

/// A progress line at least this often while nothing changes.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What Argo CD said about the application, for the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub server: String,
    pub app: String,
    pub refreshed: bool,
    /// `--wait` was asked for.
    pub waited: bool,
    /// The revisions Argo CD last reported synced (one per source).
    pub revisions: Vec<String>,
    pub sync: String,
    pub health: String,
    /// Why the wait failed, in Argo CD's words, when it did.
    pub failure: Option<String>,
}

/// How to talk to Argo CD.
pub struct Settings {
    pub token: Option<String>,
    pub timeout: Duration,
    pub poll_interval: Duration,
}

/// The application's status fields the wait reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `status.sync.revisions` for several sources, else `[status.sync.revision]`.
    pub revisions: Vec<String>,
    /// `status.sync.status`: Synced, OutOfSync, Unknown.
    pub sync: String,
    /// `status.health.status`: Healthy, Progressing, Degraded, Suspended, Missing, Unknown.
    pub health: String,
    pub health_message: Option<String>,
    /// `status.operationState`: the last (or running) sync operation.
    pub operation: Option<Operation>,
    /// `status.conditions[].message`: errors such as ComparisonError.
    pub conditions: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operation {
    /// Running, Terminating, Failed, Error, Succeeded.
    pub phase: String,
    pub message: String,
    /// The revisions the operation synced (`syncResult.revision(s)`, else the requested
    /// `operation.sync.revision(s)`).
    pub revisions: Vec<String>,
}

/// What one look at the application means for the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The commit runs, Synced and Healthy.
    Deployed,
    Waiting,
    Failed(String),
}

impl Status {
    /// Reads an `Application` as the API returns it; missing fields read as empty.
    pub fn from_json(app: &Value) -> Status {
        let status = &app["status"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let revisions_of = |one: &Value, many: &Value| {
            let many = strings(many);
            if many.is_empty() {
                one.as_str()
                    .filter(|r| !r.is_empty())
                    .map(|r| vec![r.to_string()])
                    .unwrap_or_default()
            } else {
                many
            }
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let operation = status.get("operationState").map(|op| {
            let result = &op["syncResult"];
            let mut revisions = revisions_of(&result["revision"], &result["revisions"]);
            if revisions.is_empty() {
                let sync = &op["operation"]["sync"];
                revisions = revisions_of(&sync["revision"], &sync["revisions"]);
            }
            Operation {
                phase: text(&op["phase"]),
                message: text(&op["message"]),
                revisions,
            }
        });
        Status {
            revisions: revisions_of(&status["sync"]["revision"], &status["sync"]["revisions"]),
            sync: text(&status["sync"]["status"]),
            health: text(&status["health"]["status"]),
            health_message: status["health"]["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            operation,
            conditions: status["conditions"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|c| {
                            let message = c["message"].as_str()?;
                            Some(match c["type"].as_str() {
                                Some(kind) => format!("{kind}: {message}"),
                                None => message.to_string(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Whether the application runs `commit`, or a later commit of the branch (`later`:
    /// another pipeline pushed on top, and Argo CD synced that): an old Degraded or failed
    /// state belongs to the previous revision and is waited out; once the commit is in
    /// the synced (or the operated) one, Degraded and a failed operation end the wait.
    pub fn verdict(&self, commit: &str, later: &dyn Fn(&str) -> bool) -> Verdict {
        let carries = |r: &String| r == commit || later(r);
        let ours = self.revisions.iter().any(carries);
        if let Some(op) = &self.operation
            && matches!(op.phase.as_str(), "Failed" | "Error")
            && (op.revisions.iter().any(carries) || (op.revisions.is_empty() && ours))
        {
            return Verdict::Failed(format!(
                "the sync of {} ended {}: {}",
                short_sha(commit),
                op.phase,
                if op.message.is_empty() {
                    "(no message)"
                } else {
                    &op.message
                }
            ));
        }
        if ours && self.health == "Degraded" {
            return Verdict::Failed(format!("the application is Degraded{}", self.said()));
        }
        if ours && self.sync == "Synced" && self.health == "Healthy" {
            return Verdict::Deployed;
        }
        Verdict::Waiting
    }

    /// One line of where the application stands.
    pub fn describe(&self, commit: &str, later: &dyn Fn(&str) -> bool) -> String {
        let revision = if self.revisions.iter().any(|r| r == commit) {
            format!("at {}", short_sha(commit))
        } else if let Some(newer) = self.revisions.iter().find(|r| later(r)) {
            format!(
                "at {}, which includes {}",
                short_sha(newer),
                short_sha(commit)
            )
        } else if self.revisions.is_empty() {
            "no revision yet".to_string()
        } else {
            let shown: Vec<&str> = self.revisions.iter().map(|r| short_sha(r)).collect();
            format!("still at {}", shown.join(", "))
        };
        let or_unknown = |s: &str| {
            if s.is_empty() {
                "Unknown".to_string()
            } else {
                s.to_string()
            }
        };
        let mut line = format!(
            "{revision}, {}, {}",
            or_unknown(&self.sync),
            or_unknown(&self.health)
        );
        if let Some(op) = &self.operation
            && op.phase == "Running"
        {
            line.push_str(", syncing");
        }
        line
    }

    /// Argo CD's own words, when it gave some: `: message; condition`.
    fn said(&self) -> String {
        let mut words: Vec<&str> = Vec::new();
        words.extend(self.health_message.as_deref());
        if let Some(op) = &self.operation
            && !op.message.is_empty()
            && op.phase != "Succeeded"
        {
            words.push(&op.message);
        }
        words.extend(self.conditions.iter().map(String::as_str));
        if words.is_empty() {
            String::new()
        } else {
            format!(": {}", words.join("; "))
        }
    }
}

/// The Argo CD API of one application.
pub struct Client {
    http: HttpClient,
    app: ArgoApp,
    settings: Settings,
}

impl Client {
    pub fn new(app: ArgoApp, settings: Settings) -> Result<Client> {
        let fail = |e: String| Error::local(format!("cannot set up the Argo CD client: {e}"));
        let tls = crate::git::http::tls_config().map_err(fail)?;
        let http = HttpClient::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout((settings.timeout / 2).min(Duration::from_secs(10)))
            .timeout(settings.timeout)
            .user_agent(format!("tomoda-promote/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(error_chain(&e)))?;
        Ok(Client {
            http,
            app,
            settings,
        })
    }

    /// `{server}/api/v1/applications/{name}`; an app written `namespace/name` (apps in
    /// any namespace) adds `appNamespace`.
    fn url(&self, refresh: bool) -> String {
        let (namespace, name) = match self.app.app.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, self.app.app.as_str()),
        };
        let mut url = format!(
            "{}/api/v1/applications/{}",
            self.app.server,
            escape_segment(name)
        );
        let mut query: Vec<String> = Vec::new();
        if refresh {
            query.push("refresh=normal".into());
        }
        if let Some(ns) = namespace {
            query.push(format!("appNamespace={}", query_value(ns)));
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    /// Refreshes the application and, when asked, waits for `commit` (or a `later` commit
    /// of the branch) to run Synced and Healthy. The error, if any, comes with the
    /// deployment as far as it got.
    pub fn settle(
        &self,
        commit: &str,
        later: &dyn Fn(&str) -> bool,
        progress: &mut dyn FnMut(&str),
        sleep: &mut dyn FnMut(Duration),
    ) -> (Deployment, Option<Error>) {
        let mut deployment = Deployment {
            server: self.app.server.clone(),
            app: self.app.app.clone(),
            refreshed: false,
            waited: self.app.wait.is_some(),
            revisions: Vec::new(),
            sync: String::new(),
            health: String::new(),
            failure: None,
        };
        let note = |deployment: &mut Deployment, status: &Status| {
            deployment.revisions.clone_from(&status.revisions);
            deployment.sync.clone_from(&status.sync);
            deployment.health.clone_from(&status.health);
        };
        let status = match self.get(true, sleep) {
            Ok(status) => status,
            Err(e) => return (deployment, Some(e)),
        };
        deployment.refreshed = true;
        note(&mut deployment, &status);
        let app = &self.app.app;
        progress(&format!(
            "Argo CD: asked {app} to refresh: {}",
            status.describe(commit, later)
        ));
        let Some(wait) = self.app.wait else {
            return (deployment, None);
        };
        let start = Instant::now();
        let mut last_line = String::new();
        let mut last_told = start;
        let mut status = status;
        loop {
            match status.verdict(commit, later) {
                Verdict::Deployed => {
                    progress(&format!(
                        "Argo CD: {app} deployed: {}",
                        status.describe(commit, later)
                    ));
                    return (deployment, None);
                }
                Verdict::Failed(why) => {
                    let error = self.failed(&format!("{why} ({})", status.describe(commit, later)));
                    deployment.failure = Some(why);
                    return (deployment, Some(error));
                }
                Verdict::Waiting => {}
            }
            let line = status.describe(commit, later);
            if line != last_line || last_told.elapsed() >= PROGRESS_EVERY {
                progress(&format!(
                    "Argo CD: waiting for {app} ({}s of {}s): {line}",
                    start.elapsed().as_secs(),
                    wait.as_secs()
                ));
                last_line = line;
                last_told = Instant::now();
            }
            if start.elapsed() + self.settings.poll_interval > wait {
                let why = format!(
                    "not Synced and Healthy at {} within {}s: {}{}",
                    short_sha(commit),
                    wait.as_secs(),
                    status.describe(commit, later),
                    status.said()
                );
                let error = self.failed(&why);
                deployment.failure = Some(why);
                return (deployment, Some(error));
            }
            sleep(self.settings.poll_interval);
            status = match self.get(false, sleep) {
                Ok(status) => status,
                Err(e) => return (deployment, Some(e)),
            };
            note(&mut deployment, &status);
        }
    }

    fn failed(&self, why: &str) -> Error {
        Error::Remote {
            url: self.app.server.clone(),
            message: format!("Argo CD application {}: {why}", self.app.app),
            hint: format!(
                "the devops commit is pushed; see the application in Argo CD ({}/applications/{}) and fix or roll back (tomoda-promote rollback)",
                self.app.server, self.app.app
            ),
            retry: Retry::Never,
        }
    }

    /// One read of the application, retried on 429, 5xx and no answer.
    fn get(&self, refresh: bool, sleep: &mut dyn FnMut(Duration)) -> Result<Status> {
        with_retries("Argo CD", sleep, || self.get_once(refresh))
    }

    fn get_once(&self, refresh: bool) -> Result<Status> {
        let url = self.url(refresh);
        let mut request = self.http.get(&url).header(ACCEPT, "application/json");
        if let Some(token) = &self.settings.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let server = &self.app.server;
        let app = &self.app.app;
        let answer = request.send().map_err(|e| Error::Remote {
            url: server.clone(),
            message: format!("cannot reach Argo CD: {}", error_chain(&e)),
            hint: "check --argocd-server (the API's base URL) and the network".into(),
            retry: if e.is_connect() || e.is_timeout() {
                Retry::Transient { after: None }
            } else {
                Retry::Never
            },
        })?;
        let status = answer.status();
        let after = retry_after(answer.headers());
        let body = answer.bytes().map(|b| b.to_vec()).unwrap_or_default();
        if status.is_success() {
            let json: Value = serde_json::from_slice(&body).map_err(|e| Error::Remote {
                url: server.clone(),
                message: format!("Argo CD answered application {app} with no JSON: {e}"),
                hint: "check that --argocd-server is Argo CD's API (not its login page or a proxy)"
                    .into(),
                retry: Retry::Never,
            })?;
            return Ok(Status::from_json(&json));
        }
        let said = api_message(&body);
        let (message, hint, retry) = match status {
            StatusCode::UNAUTHORIZED => (
                format!("Argo CD refused the token (HTTP 401{said})"),
                "set ARGOCD_AUTH_TOKEN to a valid token (argocd account generate-token, or a project role's token)".to_string(),
                Retry::Never,
            ),
            StatusCode::FORBIDDEN => (
                format!("Argo CD denied reading application {app} (HTTP 403{said})"),
                format!("let the token's account or role `get` (and `sync`) applications in {app}'s project; Argo CD also answers 403 for an application that does not exist"),
                Retry::Never,
            ),
            StatusCode::NOT_FOUND => (
                format!("Argo CD has no application {app} (HTTP 404{said})"),
                "check --argocd-app (or `app:` under `argocd:`): the name as `argocd app list` shows it, namespace/name for apps in other namespaces".to_string(),
                Retry::Never,
            ),
            _ => (
                format!("Argo CD answered HTTP {}{said} for application {app}", status.as_u16()),
                "retry later; if it persists, check Argo CD's API server".to_string(),
                if status.as_u16() == 429 || status.is_server_error() {
                    Retry::Transient { after }
                } else {
                    Retry::Never
                },
            ),
        };
        Err(Error::Remote {
            url: server.clone(),
            message,
            hint,
            retry,
        })
    }
}

/// Argo CD's API errors are gRPC-gateway bodies: `{"error", "code", "message"}`.
fn api_message(body: &[u8]) -> String {
    let json: Value = serde_json::from_slice(body).unwrap_or_default();
    let text = json["message"]
        .as_str()
        .or_else(|| json["error"].as_str())
        .map_or_else(
            || {
                String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_string()
            },
            str::to_string,
        );
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COMMIT: &str = "4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678";
    const OLD: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";

    fn app(revision: &str, sync: &str, health: &str) -> Value {
        json!({"metadata": {"name": "tomoda-dev"}, "status": {
            "sync": {"status": sync, "revision": revision},
            "health": {"status": health},
        }})
    }

    #[test]
    fn an_application_in_another_namespace_is_asked_for_with_app_namespace() {
        let client = |app: &str| {
            let app = ArgoApp {
                server: "https://argocd.example".into(),
                app: app.into(),
                wait: None,
            };
            let settings = Settings {
                token: None,
                timeout: Duration::from_secs(5),
                poll_interval: Duration::from_secs(1),
            };
            Client::new(app, settings).unwrap()
        };
        assert_eq!(
            client("team-a/tomoda-dev").url(true),
            "https://argocd.example/api/v1/applications/tomoda-dev?refresh=normal&appNamespace=team-a"
        );
        assert_eq!(
            client("tomoda dev#1").url(false),
            "https://argocd.example/api/v1/applications/tomoda%20dev%231"
        );
    }

    #[test]
    fn the_commit_synced_and_healthy_is_deployed_and_not_before() {
        let v = |a: Value| Status::from_json(&a).verdict(COMMIT, &|_| false);
        assert_eq!(v(app(OLD, "OutOfSync", "Healthy")), Verdict::Waiting);
        assert_eq!(v(app(COMMIT, "Synced", "Progressing")), Verdict::Waiting);
        assert_eq!(v(app(COMMIT, "Synced", "Healthy")), Verdict::Deployed);
        assert_eq!(
            v(app(OLD, "Synced", "Degraded")),
            Verdict::Waiting,
            "the old revision's state"
        );
        let mut degraded = app(COMMIT, "Synced", "Degraded");
        degraded["status"]["health"]["message"] =
            json!("Deployment exceeded its progress deadline");
        assert_eq!(
            v(degraded),
            Verdict::Failed(
                "the application is Degraded: Deployment exceeded its progress deadline".into()
            )
        );
    }

    #[test]
    fn a_later_commit_of_the_branch_carries_the_promotion() {
        const LATER: &str = "9999999999999999999999999999999999999999";
        let status = Status::from_json(&app(LATER, "Synced", "Healthy"));
        assert_eq!(status.verdict(COMMIT, &|_| false), Verdict::Waiting);
        assert_eq!(status.verdict(COMMIT, &|r| r == LATER), Verdict::Deployed);
        assert_eq!(
            status.describe(COMMIT, &|r| r == LATER),
            "at 9999999, which includes 4d5e6f7, Synced, Healthy"
        );
    }

    #[test]
    fn several_sources_and_failed_operations() {
        let multi = json!({"status": {
            "sync": {"status": "Synced", "revisions": ["abc", COMMIT]},
            "health": {"status": "Healthy"},
        }});
        assert_eq!(
            Status::from_json(&multi).verdict(COMMIT, &|_| false),
            Verdict::Deployed
        );
        let failed = json!({"status": {
            "sync": {"status": "OutOfSync", "revision": OLD},
            "health": {"status": "Healthy"},
            "operationState": {"phase": "Failed", "message": "one or more objects failed to apply",
                "operation": {"sync": {"revision": COMMIT}}},
        }});
        assert_eq!(
            Status::from_json(&failed).verdict(COMMIT, &|_| false),
            Verdict::Failed(
                "the sync of 4d5e6f7 ended Failed: one or more objects failed to apply".into()
            )
        );
        let old_failure = json!({"status": {
            "sync": {"status": "OutOfSync", "revision": OLD},
            "operationState": {"phase": "Error", "message": "x", "syncResult": {"revision": OLD}},
        }});
        assert_eq!(
            Status::from_json(&old_failure).verdict(COMMIT, &|_| false),
            Verdict::Waiting
        );
    }

    #[test]
    fn api_errors_carry_argo_cds_message() {
        assert_eq!(
            api_message(br#"{"error":"invalid session: token is expired","code":16,"message":"invalid session: token is expired"}"#),
            ": invalid session: token is expired"
        );
        assert_eq!(api_message(b""), "");
    }
}
