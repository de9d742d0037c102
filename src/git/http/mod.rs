//! Git smart-HTTP for libgit2, carried by reqwest over rustls.
//!
//! Why this module exists: git2's own HTTPS support links OpenSSL, and this tool ships as
//! one self-contained binary that needs neither OpenSSL nor any file at run time. So
//! libgit2 is built without HTTPS, and an [`HttpTransport`] makes every git request with
//! reqwest's blocking client and rustls (ring).
//!
//! With a custom transport libgit2 hands the whole HTTP exchange to us, so what its own
//! HTTP code would do happens here: authentication (libgit2 never calls the credentials
//! callback, so the token is sent preemptively as HTTP Basic), redirects (`stream.rs`),
//! certificate roots (`tls.rs`), timeouts, and telling a CI user what failed
//! (`messages.rs`) and whether another try may help (`failure.rs`). Nothing here ever
//! puts the password into a message, and URLs in messages never carry userinfo.

mod failure;
mod messages;
mod stream;
mod tls;
mod url;

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use git2::{ErrorClass, ErrorCode};
use reqwest::blocking::Client;

pub use self::failure::Failure;
use self::failure::FailureSlot;
use self::stream::HttpSubtransport;
// Shared with the registry client, which speaks HTTP the same way.
pub(crate) use self::failure::retry_after;
pub(crate) use self::messages::{causes, error_chain, fmt_secs};
pub(crate) use self::tls::tls_config;
use crate::error::{Error, Result};
use crate::repo::{Credentials, RepoLocation};
pub use crate::repo::{redact_str, take_userinfo};

/// HTTP settings for every git request of one transport.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Credentials sent preemptively as HTTP Basic. When `None`, userinfo in the remote
    /// URL (`https://user:token@host/...`) is used instead, as git does.
    pub auth: Option<Credentials>,
    /// Time allowed to open a connection: TCP, proxy CONNECT and TLS handshake.
    pub connect_timeout: Duration,
    /// Whole-request timeout (each request: headers + body).
    pub timeout: Duration,
    /// Sent on every request. Must start with `git/` because some servers decide by it
    /// whether to speak smart HTTP; one that does not gets wrapped as `git/2.0 (<given>)`.
    pub user_agent: String,
}

/// What every connection of one transport uses.
struct Shared {
    client: Client,
    settings: HttpSettings,
}

/// Git over HTTP(S) for the remote operations of a [`super::Workspace`], which owns it.
/// Building one registers the http and https schemes with libgit2 (once per process), so
/// no workspace can open a remote before that has happened.
#[derive(Clone)]
pub struct HttpTransport {
    shared: Arc<Shared>,
}

/// libgit2 failed a remote operation: its error, and what our transport recorded about
/// the request that failed (none when libgit2 failed on its own).
pub struct Failed {
    pub error: git2::Error,
    pub failure: Option<Failure>,
}

impl HttpTransport {
    /// Fails when the HTTP client cannot be built (unreadable `SSL_CERT_FILE`, invalid
    /// user agent) or libgit2 refuses the registration.
    pub fn new(settings: HttpSettings) -> Result<HttpTransport> {
        let fail = |e: String| Error::local(format!("cannot set up the HTTP transport: {e}"));
        let client = build_client(&settings).map_err(fail)?;
        register_schemes().map_err(fail)?;
        Ok(HttpTransport {
            shared: Arc::new(Shared { client, settings }),
        })
    }

    /// The transport for `repo`: the token (sent with `username`) when there is one, else
    /// the credentials written into the repo URL; `timeout` bounds each request.
    pub fn for_repo(
        repo: &RepoLocation,
        token: Option<String>,
        username: &str,
        timeout: Duration,
    ) -> Result<HttpTransport> {
        let url_credentials = match repo {
            RepoLocation::Remote { credentials, .. } => credentials.clone(),
            RepoLocation::Local(_) => None,
        };
        if let Some(c) = &url_credentials {
            crate::secrets::register(&c.password);
        }
        let auth = match token {
            Some(password) => Some(Credentials {
                username: username.to_string(),
                password,
            }),
            None => url_credentials,
        };
        HttpTransport::new(HttpSettings {
            auth,
            // Strictly below the request timeout, which covers the connect too: when both
            // were equal the request's fired first and a dead host read as "no answer".
            connect_timeout: (timeout / 2).min(Duration::from_secs(30)),
            timeout,
            user_agent: format!("git/2.0 (tomoda-promote {})", env!("CARGO_PKG_VERSION")),
        })
    }

    /// Runs one libgit2 remote operation (fetch, push, ls-remote) over this transport.
    pub fn run<T>(&self, operation: impl FnOnce() -> Result<T, git2::Error>) -> Result<T, Failed> {
        let slot = FailureSlot::default();
        let result = {
            let _active = Active::enter(Arc::clone(&self.shared), slot.clone());
            operation()
        };
        result.map_err(|error| Failed {
            error,
            failure: slot.take(),
        })
    }
}

thread_local! {
    /// The transport of the operation this thread is running, for `transport_factory`.
    static ACTIVE: RefCell<Option<(Arc<Shared>, FailureSlot)>> = const { RefCell::new(None) };
}

/// Sets `ACTIVE` for the length of one operation, and restores it even on a panic.
struct Active(Option<(Arc<Shared>, FailureSlot)>);

impl Active {
    fn enter(shared: Arc<Shared>, slot: FailureSlot) -> Active {
        Active(ACTIVE.replace(Some((shared, slot))))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.set(self.0.take());
    }
}

/// libgit2 keeps one transport factory per URL scheme for the whole process and offers
/// no way to pass it per-remote data, so the registration is the one process-wide piece:
/// the factory finds the transport of the calling operation in a thread-local, set by
/// [`HttpTransport::run`] (libgit2 calls the factory on the thread that opens the remote).
fn register_schemes() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for scheme in ["http", "https"] {
                // SAFETY: git2 requires registration to be synchronised with the creation
                // of transports. This runs once, inside OnceLock::get_or_init, while
                // building the first HttpTransport; remotes over http(s) are only opened
                // by a Workspace, which needs an HttpTransport, so none exists yet.
                unsafe { git2::transport::register(scheme, transport_factory) }
                    .map_err(|e| e.message().to_string())?;
            }
            Ok(())
        })
        .clone()
}

/// Called by libgit2 for each remote connection over http(s).
fn transport_factory(remote: &git2::Remote<'_>) -> Result<Transport, git2::Error> {
    let (shared, failure) = ACTIVE.with_borrow(Clone::clone).ok_or_else(|| {
        net_error("internal error: a git remote over HTTP was opened outside HttpTransport::run")
    })?;
    let sub = HttpSubtransport {
        shared,
        failure,
        redirect: Arc::new(Mutex::new(None)),
        protocol_v2: false,
    };
    Transport::smart(remote, true, sub)
}

/// One smart-HTTP request of our own (not libgit2's), with git's protocol version 2 when
/// `protocol_v2`: the same client, credentials, redirects, messages and retry decisions
/// as libgit2's requests. Call it inside [`HttpTransport::run`]; write the POST body, then
/// read the answer.
pub(crate) fn exchange(
    url: &str,
    service: Service,
    protocol_v2: bool,
) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
    let (shared, failure) = ACTIVE.with_borrow(Clone::clone).ok_or_else(|| {
        net_error("internal error: a git HTTP request was made outside HttpTransport::run")
    })?;
    HttpSubtransport {
        shared,
        failure,
        redirect: Arc::new(Mutex::new(None)),
        protocol_v2,
    }
    .action(url, service)
}

fn net_error(message: impl AsRef<str>) -> git2::Error {
    git2::Error::new(ErrorCode::GenericError, ErrorClass::Net, message.as_ref())
}

fn build_client(settings: &HttpSettings) -> Result<Client, String> {
    let tls = tls::tls_config()?;
    Client::builder()
        .tls_backend_preconfigured(tls)
        // Redirects are followed by hand: reqwest would turn a redirected POST into a
        // body-less GET and cannot apply git's "first request only" rule.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        // The blocking client's own wait (default 30 s); each request also gets
        // `.timeout()`, which covers the body as well.
        .timeout(settings.timeout)
        .user_agent(git_user_agent(&settings.user_agent))
        .build()
        .map_err(|e| {
            format!(
                "cannot set up the HTTP client for git: {}",
                messages::error_chain(&e)
            )
        })
}

/// Some servers only speak smart HTTP to user agents starting with `git/`.
fn git_user_agent(given: &str) -> String {
    if given.starts_with("git/") {
        given.to_string()
    } else {
        format!("git/2.0 ({given})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Retry;
    use std::io::{self, BufRead, Read, Write};
    use std::net::TcpListener;
    use std::thread;

    fn settings(auth: Option<Credentials>) -> HttpSettings {
        HttpSettings {
            auth,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            user_agent: "git/2.0 (transport-test)".to_string(),
        }
    }

    fn token() -> Credentials {
        Credentials {
            username: "ci".to_string(),
            password: "s3cret-token".to_string(),
        }
    }

    #[test]
    fn user_agent_starts_with_git() {
        assert_eq!(git_user_agent("git/2.0 (x 1)"), "git/2.0 (x 1)");
        assert_eq!(git_user_agent("tomoda/1"), "git/2.0 (tomoda/1)");
    }

    /// One canned answer per connection; returns each request's head+body.
    fn fake_server(answers: Vec<String>) -> (String, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                let mut reader = io::BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                head.push_str(&String::from_utf8_lossy(&body));
                seen.push(head);
                let answer = answer
                    .replace("{addr}", &addr.to_string())
                    .replace("{port}", &addr.port().to_string());
                let _ = reader.get_mut().write_all(answer.as_bytes());
            }
            seen
        });
        (format!("http://{addr}"), handle)
    }

    fn answer(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn subtransport(auth: Option<Credentials>) -> HttpSubtransport {
        let settings = settings(auth);
        let client = build_client(&settings).expect("client");
        HttpSubtransport {
            shared: Arc::new(Shared { client, settings }),
            failure: FailureSlot::default(),
            redirect: Arc::new(Mutex::new(None)),
            protocol_v2: false,
        }
    }

    fn read_all(
        sub: &HttpSubtransport,
        url: &str,
        action: Service,
        body: &[u8],
    ) -> io::Result<Vec<u8>> {
        let mut stream = sub
            .action(url, action)
            .map_err(|e| io::Error::other(e.message().to_string()))?;
        stream.write_all(body)?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn unauthorized_gives_readable_message_without_secret() {
        let (base, server) = fake_server(vec![answer(
            "401 Unauthorized",
            "Content-Type: text/plain\r\n",
            "HTTP Basic: Access denied\n",
        )]);
        let sub = subtransport(Some(token()));
        let err = read_all(
            &sub,
            &format!("{base}/devops.git"),
            Service::ReceivePackLs,
            b"",
        )
        .expect_err("401");
        assert_eq!(
            err.to_string(),
            format!(
                "authentication failed: HTTP 401 from {base}/devops.git/info/refs?service=git-receive-pack (the server said: \"HTTP Basic: Access denied\")"
            )
        );
        assert_eq!(
            sub.failure.take(),
            Some(Failure {
                hint: "the server did not accept the token in GIT_TOKEN (or --git-token-file): it is wrong, expired or revoked; set a valid one".into(),
                retry: Retry::Never,
            })
        );
        let seen = server.join().expect("server");
        assert!(seen[0].starts_with("GET /devops.git/info/refs?service=git-receive-pack HTTP/1.1"));
        assert!(
            seen[0].contains("authorization: Basic Y2k6czNjcmV0LXRva2Vu"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains("user-agent: git/2.0 (transport-test)"),
            "{}",
            seen[0]
        );
    }

    #[test]
    fn html_page_is_not_a_git_server() {
        let (base, server) = fake_server(vec![answer(
            "200 OK",
            "Content-Type: text/html\r\n",
            "<html>",
        )]);
        let sub = subtransport(None);
        let err =
            read_all(&sub, &format!("{base}/r"), Service::UploadPackLs, b"").expect_err("html");
        assert!(
            err.to_string().starts_with(&format!(
                "the server at {base}/r/info/refs?service=git-upload-pack did not answer as a git smart-HTTP server (Content-Type text/html"
            )),
            "{err}"
        );
        server.join().expect("server");
    }

    #[test]
    fn redirected_refs_move_later_requests_and_keep_same_host_auth() {
        let adv = "application/x-git-upload-pack-advertisement";
        let res = "application/x-git-upload-pack-result";
        let (base, server) = fake_server(vec![
            answer(
                "301 Moved",
                "Location: /new/r.git/info/refs?service=git-upload-pack\r\n",
                "",
            ),
            answer("200 OK", &format!("Content-Type: {adv}\r\n"), "refs"),
            answer("200 OK", &format!("Content-Type: {res}\r\n"), "pack"),
        ]);
        let sub = subtransport(None);
        let old = format!(
            "{}/old/r.git",
            base.replace("http://", "http://ci:s3cret-token@")
        );
        let refs = read_all(&sub, &old, Service::UploadPackLs, b"").expect("refs");
        assert_eq!(refs, b"refs");
        let pack = read_all(&sub, &old, Service::UploadPack, b"want").expect("pack");
        assert_eq!(pack, b"pack");
        let seen = server.join().expect("server");
        assert!(seen[1].starts_with("GET /new/r.git/info/refs?service=git-upload-pack "));
        assert!(seen[1].contains("authorization: Basic Y2k6czNjcmV0LXRva2Vu"));
        assert!(
            seen[2].starts_with("POST /new/r.git/git-upload-pack "),
            "{}",
            seen[2]
        );
        assert!(seen[2].contains("content-type: application/x-git-upload-pack-request"));
        assert!(seen[2].contains(&format!("accept: {res}")));
        assert!(seen[2].contains("authorization: Basic"));
        assert!(seen[2].ends_with("want"));
    }

    #[test]
    fn cross_host_redirect_drops_auth() {
        let (base, server) = fake_server(vec![
            answer(
                "302 Found",
                "Location: http://localhost:{port}/r.git/info/refs?service=git-upload-pack\r\n",
                "",
            ),
            answer("401 Unauthorized", "", ""),
        ]);
        let sub = subtransport(Some(token()));
        let err =
            read_all(&sub, &format!("{base}/r.git"), Service::UploadPackLs, b"").expect_err("401");
        assert!(
            err.to_string().contains("redirected to another host"),
            "{err}"
        );
        let seen = server.join().expect("server");
        assert!(seen[0].contains("authorization: Basic"));
        assert!(!seen[1].contains("authorization"), "{}", seen[1]);
    }

    #[test]
    fn connection_refused_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let sub = subtransport(Some(token()));
        let err = read_all(
            &sub,
            &format!("http://ci:s3cret-token@{addr}/r.git"),
            Service::UploadPackLs,
            b"",
        )
        .expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "connection refused by {addr} (for http://{addr}/r.git/info/refs"
            )),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"));
        let failure = sub.failure.take().expect("recorded");
        assert_eq!(failure.retry, Retry::Transient { after: None });
    }

    #[test]
    fn slow_server_times_out_with_message() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let holder = thread::spawn(move || {
            let conn = listener.accept();
            let _ = wait.recv_timeout(Duration::from_secs(10));
            drop(conn);
        });
        let sub = subtransport(None);
        let err = read_all(
            &sub,
            &format!("http://{addr}/r.git"),
            Service::UploadPackLs,
            b"",
        )
        .expect_err("timeout");
        assert_eq!(
            err.to_string(),
            format!(
                "no answer from http://{addr}/r.git/info/refs?service=git-upload-pack within 2s; the git server or the network is slow or stuck"
            )
        );
        let failure = sub.failure.take().expect("recorded");
        assert_eq!(failure.retry, Retry::Transient { after: None });
        assert_eq!(failure.hint, "retry, or raise the HTTP timeout (--timeout)");
        let _ = done.send(());
        let _ = holder.join();
    }
}
