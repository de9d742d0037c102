//! An Argo CD API server for the tests, as its API documents `GET
//! /api/v1/applications/{name}` (server/application/application.proto): the Application
//! as JSON (`status.sync.{status,revision,revisions}`, `status.health.{status,message}`,
//! `status.operationState`), `refresh=normal` in the query, `Authorization: Bearer`,
//! gRPC-gateway error bodies (`{"error","code","message"}`) with 401 for a bad token and
//! 404 for an unknown application. Each test scripts the answers by the number of reads;
//! every request is recorded.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Value, json};

use crate::git_server::serve;

/// What the server answers to a read of the application.
pub enum Answer {
    App(Value),
    /// An HTTP status with an error body.
    Error(u16, String),
}

type Script = Box<dyn FnMut(usize) -> Answer + Send>;

struct State {
    app: String,
    token: String,
    script: Script,
    /// Reads of the application that passed authentication.
    reads: usize,
    /// `GET /path?query Authorization-present` of every request.
    requests: Vec<String>,
}

pub struct ArgoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<State>>,
}

impl ArgoServer {
    /// Serves application `app` to bearer `token`; read number n (from 0) gets
    /// `script(n)`.
    pub fn start(
        app: &str,
        token: &str,
        script: impl FnMut(usize) -> Answer + Send + 'static,
    ) -> ArgoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            app: app.to_string(),
            token: token.to_string(),
            script: Box::new(script),
            reads: 0,
            requests: Vec::new(),
        }));
        let thread = {
            let stop = Arc::clone(&stop);
            let state = Arc::clone(&state);
            thread::spawn(move || {
                serve(&listener, &stop, "argocd", move |stream, _| {
                    let _ = handle(&stream, &state);
                });
            })
        };
        ArgoServer {
            addr,
            stop,
            thread: Some(thread),
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request, as `METHOD target`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests that asked for a refresh.
    pub fn refreshes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains("refresh=normal"))
            .count()
    }
}

impl Drop for ArgoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: requests answered in turn until the client closes it.
fn handle(stream: &TcpStream, state: &Mutex<State>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first)? == 0 {
            return Ok(());
        }
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("authorization")
            {
                authorization = Some(v.trim().to_string());
            }
        }
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let (status, body) = answer(state, &method, &target, authorization.as_deref());
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let body = body.to_string();
        let mut out = stream.try_clone()?;
        write!(
            out,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        out.flush()?;
    }
}

fn error_body(code: u32, message: &str) -> Value {
    json!({"error": message, "code": code, "message": message})
}

fn answer(
    state: &Mutex<State>,
    method: &str,
    target: &str,
    authorization: Option<&str>,
) -> (u16, Value) {
    let mut state = state.lock().unwrap();
    state.requests.push(format!(
        "{method} {target} auth={}",
        if authorization.is_some() { "yes" } else { "no" }
    ));
    if authorization != Some(&format!("Bearer {}", state.token)) {
        return (
            401,
            error_body(16, "invalid session: token signature is invalid"),
        );
    }
    let path = target.split('?').next().unwrap_or_default();
    let Some(name) = path.strip_prefix("/api/v1/applications/") else {
        return (404, error_body(5, "Not Found"));
    };
    if method != "GET" {
        return (405, error_body(12, "method not allowed"));
    }
    if name != state.app {
        return (
            404,
            error_body(5, &format!("applications.argoproj.io \"{name}\" not found")),
        );
    }
    let n = state.reads;
    state.reads += 1;
    match (state.script)(n) {
        Answer::App(app) => (200, app),
        Answer::Error(status, message) => (status, error_body(14, &message)),
    }
}

/// An Application as the API returns it, at `revision`, with these statuses.
pub fn application(name: &str, revision: &str, sync: &str, health: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/devops.git", "path": "k8s/apps/tomoda/overlays/dev", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "tomoda"},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
        "status": {
            "sync": {"status": sync, "revision": revision},
            "health": {"status": health},
            "sourceType": "Kustomize",
        },
    })
}

/// The branch's tip in a bare repository: the commit a promotion just pushed.
pub fn tip(bare: &Path) -> String {
    crate::dsl::git(bare, &["rev-parse", "main"])
        .trim()
        .to_string()
}
