//! Git smart-HTTP for libgit2, carried by reqwest over rustls.
//!
//! Why this module exists: git2's own HTTPS support links OpenSSL, and this
//! tool ships as one self-contained binary that needs neither OpenSSL nor any
//! file at run time. So libgit2 is built without HTTPS, and [`install`]
//! registers a smart subtransport for `http://` and `https://` URLs that makes
//! every git request with reqwest's blocking client and rustls (ring).
//!
//! With a custom transport libgit2 hands the whole HTTP exchange to us, so the
//! things its own HTTP code would do happen here:
//! - authentication: libgit2 never calls the credentials callback, so the
//!   token is sent preemptively as HTTP Basic on every request;
//! - redirects: git's rule, only the first `info/refs` request follows them
//!   and later requests of the same connection go to the new base URL;
//! - certificate roots, connect and whole-request timeouts;
//! - turning HTTP failures into sentences a CI user can act on. libgit2 copies
//!   the text of the `io::Error`s returned here into the `git2::Error` that
//!   the caller reports, so that text is what the user reads. It never holds
//!   the password, and URLs in it never carry userinfo.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Read, Write};
use std::mem;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use git2::{ErrorClass, ErrorCode};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, PRAGMA};
use reqwest::{StatusCode, Url};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Redirects followed for one `info/refs` request (git's curl allows 20; a
/// git host needs one or two, more means a loop or a login portal).
const MAX_REDIRECTS: usize = 5;

/// Debian's CA bundle: used when `SSL_CERT_FILE` is unset, so private and
/// TLS-intercepting CAs installed on the machine are trusted.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the user supplies the token, named in authentication errors.
const TOKEN_HINT: &str = "GIT_TOKEN (or --git-token-file)";

/// Error body excerpt shown to the user, at most this many bytes read.
const SERVER_SAID_LIMIT: u64 = 1024;

/// HTTP settings for every git request the process makes.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Credentials sent preemptively as HTTP Basic. When `None`, userinfo in
    /// the remote URL (`https://user:token@host/...`) is used instead, as git does.
    pub auth: Option<BasicAuth>,
    /// Time allowed to open a connection: TCP, proxy CONNECT and TLS handshake.
    pub connect_timeout: std::time::Duration,
    /// Whole-request timeout (each request: headers + body).
    pub timeout: std::time::Duration,
    /// Sent on every request. Must start with `git/` because some servers
    /// decide by it whether to speak smart HTTP; one that does not gets
    /// wrapped as `git/2.0 (<given>)`.
    pub user_agent: String, // e.g. "git/2.0 (tomoda-promote 0.1.0)"
}

/// HTTP Basic credentials, sent with every git request.
#[derive(Clone)]
pub struct BasicAuth {
    /// User name; for a token, many servers accept any non-empty name.
    pub username: String,
    /// The token (or password); never logged nor put into messages.
    pub password: String,
}

/// Hand-written so that the password never reaches a log line.
impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// What every transport created from now on uses.
struct Shared {
    client: Client,
    settings: HttpSettings,
}

/// Settings of the latest [`install`]; read by each new transport.
static CURRENT: RwLock<Option<Arc<Shared>>> = RwLock::new(None);

/// Outcome of the one-time registration with libgit2 (errors as text,
/// because `git2::Error` is not `Clone`).
static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the transport for http and https, once per process. Must be
/// called before any git2 fetch/push over http(s), and not while another
/// thread is opening a git2 remote.
///
/// A later call replaces the settings (client, token, timeouts) for
/// connections opened after it; connections already open keep theirs. Fails
/// when the HTTP client cannot be built (unreadable `SSL_CERT_FILE`, invalid
/// user agent) or libgit2 refuses the registration.
pub fn install(settings: HttpSettings) -> Result<(), git2::Error> {
    let client = build_client(&settings).map_err(net_error)?;
    let shared = Arc::new(Shared { client, settings });
    *CURRENT.write().unwrap_or_else(PoisonError::into_inner) = Some(shared);
    REGISTERED
        .get_or_init(|| register_schemes().map_err(|e| e.message().to_string()))
        .clone()
        .map_err(net_error)
}

/// Whether the last failed request is worth retrying, as the caller only sees libgit2's
/// error text. Recorded by every failure, taken (and cleared) by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Timeouts, broken connections, HTTP 408, 429 and 5xx: another try may succeed,
    /// after `retry_after` when the server said so.
    Transient { retry_after: Option<Duration> },
    /// Authentication, permission, a wrong URL, TLS: retrying cannot help.
    Permanent,
}

static LAST_FAILURE: Mutex<Option<Failure>> = Mutex::new(None);

fn record(failure: Failure) {
    *LAST_FAILURE.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
}

/// The failure recorded since the last call, if any.
pub fn take_last_failure() -> Option<Failure> {
    LAST_FAILURE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

fn register_schemes() -> Result<(), git2::Error> {
    for scheme in ["http", "https"] {
        // SAFETY: git2 requires registration to be synchronised with the
        // creation of transports. This runs once, inside OnceLock::get_or_init,
        // and `install` documents that no remote may be opened concurrently.
        unsafe { git2::transport::register(scheme, transport_factory)? };
    }
    Ok(())
}

/// Called by libgit2 for each remote connection over http(s).
fn transport_factory(remote: &git2::Remote<'_>) -> Result<Transport, git2::Error> {
    let shared = CURRENT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .ok_or_else(|| net_error("the HTTP transport has no settings; call install() first"))?;
    let sub = HttpSubtransport {
        shared,
        redirect: Arc::new(Mutex::new(None)),
    };
    Transport::smart(remote, true, sub)
}

fn net_error(message: impl AsRef<str>) -> git2::Error {
    git2::Error::new(ErrorCode::GenericError, ErrorClass::Net, message.as_ref())
}

fn build_client(settings: &HttpSettings) -> Result<Client, String> {
    let tls = tls_config()?;
    Client::builder()
        .tls_backend_preconfigured(tls)
        // Redirects are followed by hand: reqwest would turn a redirected POST
        // into a body-less GET and cannot apply git's "first request only" rule.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        // The blocking client's own wait (default 30 s); each request also
        // gets `.timeout()`, which covers the body as well.
        .timeout(settings.timeout)
        .user_agent(git_user_agent(&settings.user_agent))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client for git: {}", error_chain(&e)))
}

/// Some servers only speak smart HTTP to user agents starting with `git/`.
fn git_user_agent(given: &str) -> String {
    if given.starts_with("git/") {
        given.to_string()
    } else {
        format!("git/2.0 ({given})")
    }
}

/// rustls with the ring provider; roots = webpki-roots plus the machine's or
/// `SSL_CERT_FILE`'s PEM bundle (private and re-signing CAs must work).
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (path, explicit) = match std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        Some(p) => (Some(PathBuf::from(p)), true),
        None => {
            let p = PathBuf::from(SYSTEM_CA_BUNDLE);
            (p.is_file().then_some(p), false)
        }
    };
    if let Some(path) = path {
        match load_pem_certs(&path) {
            Ok(certs) => {
                let (added, ignored) = roots.add_parsable_certificates(certs);
                tracing::debug!(path = %path.display(), added, ignored, "extra CA certificates loaded");
                if explicit && added == 0 {
                    return Err(format!(
                        "SSL_CERT_FILE names {}, which holds no usable PEM certificate; point it at a PEM CA bundle or unset it",
                        path.display()
                    ));
                }
            }
            Err(e) if explicit => {
                return Err(format!(
                    "SSL_CERT_FILE names {}, which cannot be read as a PEM CA bundle ({e}); point it at a PEM CA bundle or unset it",
                    path.display()
                ));
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "system CA bundle skipped");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest sets ALPN only on configs it builds itself; this client speaks HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn load_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// One libgit2 connection: remembers a redirect of its first request.
struct HttpSubtransport {
    shared: Arc<Shared>,
    redirect: Arc<Mutex<Option<Redirect>>>,
}

/// The `info/refs` request for `from` ended at base `to`.
#[derive(Clone)]
struct Redirect {
    from: String,
    to: Url,
    auth_kept: bool,
}

/// Whether credentials went with a request, for choosing the error hint.
#[derive(Clone, Copy, Debug, PartialEq)]
enum AuthState {
    Sent,
    NotConfigured,
    DroppedOnRedirect,
}

impl SmartSubtransport for HttpSubtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let (service, post) = match action {
            Service::UploadPackLs => ("upload-pack", false),
            Service::UploadPack => ("upload-pack", true),
            Service::ReceivePackLs => ("receive-pack", false),
            Service::ReceivePack => ("receive-pack", true),
        };
        let mut base = Url::parse(url).map_err(|e| {
            net_error(format!(
                "the repository URL {} is not a valid URL ({e}); check the repository URL",
                redact_str(url)
            ))
        })?;
        let url_auth = take_userinfo(&mut base);
        let mut auth = self.shared.settings.auth.clone().or(url_auth);
        let mut auth_state = if auth.is_some() {
            AuthState::Sent
        } else {
            AuthState::NotConfigured
        };
        let redirect = self
            .redirect
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(r) = redirect.filter(|r| r.from == url) {
            base = r.to;
            if !r.auth_kept && auth.is_some() {
                auth = None;
                auth_state = AuthState::DroppedOnRedirect;
            }
        }
        Ok(Box::new(HttpStream {
            shared: Arc::clone(&self.shared),
            redirect: Arc::clone(&self.redirect),
            original: url.to_string(),
            service,
            post,
            base,
            auth,
            auth_state,
            body: Vec::new(),
            sent: false,
            response: None,
            shown_url: None,
            started: Instant::now(),
            received: 0,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// One request. libgit2 writes the POST body, then reads: the request goes
/// out on the first read and the response body is streamed to libgit2.
struct HttpStream {
    shared: Arc<Shared>,
    redirect: Arc<Mutex<Option<Redirect>>>,
    /// URL as libgit2 gave it (may hold userinfo): the key for `redirect`.
    original: String,
    service: &'static str,
    post: bool,
    /// Repository URL without userinfo.
    base: Url,
    auth: Option<BasicAuth>,
    auth_state: AuthState,
    body: Vec<u8>,
    sent: bool,
    response: Option<Response>,
    /// URL of the request that produced `response`, for messages.
    shown_url: Option<Url>,
    started: Instant,
    received: u64,
}

impl HttpStream {
    fn execute(&mut self) -> io::Result<()> {
        self.sent = true;
        self.started = Instant::now();
        let (response, url) = if self.post {
            self.post_request()?
        } else {
            self.get_refs()?
        };
        self.response = Some(response);
        self.shown_url = Some(url);
        Ok(())
    }

    /// GET info/refs, following redirects by git's rule.
    fn get_refs(&mut self) -> io::Result<(Response, Url)> {
        let query = format!("service=git-{}", self.service);
        let first = service_url(&self.base, "info/refs", Some(&query));
        let mut url = first.clone();
        let mut auth = self.auth.clone();
        let mut auth_state = self.auth_state;
        for _ in 0..=MAX_REDIRECTS {
            let request = self
                .shared
                .client
                .get(url.clone())
                .header(ACCEPT, "*/*")
                .header(PRAGMA, "no-cache");
            let response = self.send(request, "GET", &url, auth.as_ref())?;
            if !is_followed_redirect(response.status()) {
                let response = self.check(response, &url, "advertisement", auth_state)?;
                if url != first {
                    let to = redirected_base(&url).ok_or_else(|| {
                        io::Error::other(format!(
                            "the redirect from {first} ended at {url}, which is not a git info/refs URL; use the repository's final URL instead"
                        ))
                    })?;
                    tracing::debug!(from = %self.base, to = %to, "repository URL redirected");
                    *self.redirect.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(Redirect {
                            from: self.original.clone(),
                            to,
                            auth_kept: auth_state != AuthState::DroppedOnRedirect,
                        });
                }
                return Ok((response, url));
            }
            let next = redirect_target(&url, &response)?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(io::Error::other(format!(
                    "refusing to follow the redirect from {url} to {next}, which leaves HTTPS for plain HTTP; check the repository URL"
                )));
            }
            if auth.is_some() && !keeps_auth(&url, &next) {
                auth = None;
                auth_state = AuthState::DroppedOnRedirect;
            }
            url = next;
        }
        Err(io::Error::other(format!(
            "too many redirects (more than {MAX_REDIRECTS}) starting at {first}; check the repository URL"
        )))
    }

    /// POST git-upload-pack / git-receive-pack with the buffered body.
    fn post_request(&mut self) -> io::Result<(Response, Url)> {
        let url = service_url(&self.base, &format!("git-{}", self.service), None);
        let request = self
            .shared
            .client
            .post(url.clone())
            .header(
                CONTENT_TYPE,
                format!("application/x-git-{}-request", self.service),
            )
            .header(ACCEPT, format!("application/x-git-{}-result", self.service))
            .body(mem::take(&mut self.body));
        let response = self.send(request, "POST", &url, self.auth.as_ref())?;
        if is_followed_redirect(response.status()) {
            let target = redirect_target(&url, &response)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| "another URL".to_string());
            return Err(io::Error::other(format!(
                "the git server redirected POST {url} to {target}; git does not follow redirects of POST requests, so use the repository's final URL instead"
            )));
        }
        let response = self.check(response, &url, "result", self.auth_state)?;
        Ok((response, url))
    }

    fn send(
        &self,
        request: RequestBuilder,
        method: &str,
        url: &Url,
        auth: Option<&BasicAuth>,
    ) -> io::Result<Response> {
        let settings = &self.shared.settings;
        let request = request.timeout(settings.timeout);
        let request = match auth {
            Some(a) => request.basic_auth(&a.username, Some(&a.password)),
            None => request,
        };
        let start = Instant::now();
        match request.send() {
            Ok(response) => {
                tracing::debug!(
                    method,
                    url = %url,
                    status = response.status().as_u16(),
                    elapsed = ?start.elapsed(),
                    auth = auth.is_some(),
                    "git HTTP request"
                );
                Ok(response)
            }
            Err(e) => {
                let tls = causes(&e)
                    .iter()
                    .any(|c| c.downcast_ref::<rustls::Error>().is_some());
                record(if tls {
                    Failure::Permanent
                } else {
                    Failure::Transient { retry_after: None }
                });
                let message = describe_send_error(e, url, settings);
                tracing::debug!(method, url = %url, elapsed = ?start.elapsed(), error = %message, "git HTTP request failed");
                Err(io::Error::other(message))
            }
        }
    }

    /// Accepts a 2xx answer of the expected git Content-Type.
    fn check(
        &self,
        response: Response,
        url: &Url,
        kind: &str,
        auth_state: AuthState,
    ) -> io::Result<Response> {
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if !status.is_success() {
            let code = status.as_u16();
            record(if code == 408 || code == 429 || status.is_server_error() {
                Failure::Transient {
                    retry_after: retry_after(&response),
                }
            } else {
                Failure::Permanent
            });
            let said = server_said(response, content_type.as_deref());
            let push = self.service == "receive-pack";
            return Err(io::Error::other(status_message(
                status,
                url,
                push,
                auth_state,
                said.as_deref(),
            )));
        }
        let expected = format!("application/x-git-{}-{kind}", self.service);
        if !content_type_matches(content_type.as_deref(), &expected) {
            record(Failure::Permanent);
            let found = content_type.as_deref().map_or("none".to_string(), sanitize);
            let html = if found.to_ascii_lowercase().starts_with("text/html") {
                " (an HTML page usually means a web UI URL, a login page or a proxy)"
            } else {
                ""
            };
            return Err(io::Error::other(format!(
                "the server at {url} did not answer as a git smart-HTTP server (Content-Type {found}, expected {expected}){html}; check the repo URL"
            )));
        }
        Ok(response)
    }

    fn describe_read_error(&self, e: &io::Error) -> String {
        let url = self
            .shown_url
            .as_ref()
            .map_or_else(|| self.base.to_string(), Url::to_string);
        let timed_out = e.kind() == io::ErrorKind::TimedOut
            || causes(e).iter().any(|c| {
                c.downcast_ref::<reqwest::Error>()
                    .is_some_and(reqwest::Error::is_timeout)
            });
        if timed_out {
            format!(
                "no complete answer from {url} within {} ({} bytes had arrived); retry, or raise the HTTP timeout",
                fmt_secs(self.shared.settings.timeout),
                self.received
            )
        } else {
            format!(
                "the connection to {url} broke while receiving the answer ({}); retry",
                error_chain(e)
            )
        }
    }
}

impl Read for HttpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.sent {
            self.execute()?;
        }
        let result = match self.response.as_mut() {
            Some(response) => response.read(buf),
            None => {
                return Err(io::Error::other(
                    "the git HTTP request already failed; see the previous error",
                ));
            }
        };
        match result {
            Ok(n) => {
                self.received += n as u64;
                Ok(n)
            }
            Err(e) => {
                record(Failure::Transient { retry_after: None });
                let message = self.describe_read_error(&e);
                self.response = None;
                Err(io::Error::other(message))
            }
        }
    }
}

/// Logs the whole exchange once libgit2 is done with it (it often stops
/// reading before EOF, once the git protocol says the answer is complete).
impl Drop for HttpStream {
    fn drop(&mut self) {
        if let Some(url) = &self.shown_url {
            tracing::debug!(
                url = %url,
                bytes = self.received,
                elapsed = ?self.started.elapsed(),
                "git HTTP exchange done"
            );
        }
    }
}

impl Write for HttpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.sent || !self.post {
            return Err(io::Error::other(format!(
                "internal error: libgit2 wrote to the git HTTP request for {} after it was sent",
                self.base
            )));
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `base` + `/tail` + optional query; the base's own query is dropped.
/// `Retry-After` in seconds (the HTTP-date form is rare for git servers and is ignored).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

fn service_url(base: &Url, tail: &str, query: Option<&str>) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{tail}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(query);
    url.set_fragment(None);
    url
}

/// New repository base from the final URL of a redirected info/refs request.
fn redirected_base(final_url: &Url) -> Option<Url> {
    let path = final_url.path().strip_suffix("/info/refs")?;
    let mut base = final_url.clone();
    base.set_path(path);
    base.set_query(None);
    base.set_fragment(None);
    take_userinfo(&mut base);
    Some(base)
}

/// The statuses that move a resource; 300 and 304 are not followed.
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The Location of a redirect, resolved against `url`, without userinfo.
fn redirect_target(url: &Url, response: &Response) -> io::Result<Url> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|loc| url.join(loc).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    match location {
        Some(mut next) => {
            take_userinfo(&mut next);
            Ok(next)
        }
        None => Err(io::Error::other(format!(
            "HTTP {} from {url} is a redirect without a valid Location; check the repository URL",
            response.status().as_u16()
        ))),
    }
}

/// Credentials follow a redirect only to the same host, on the same port
/// or upgraded from http to https.
fn keeps_auth(from: &Url, to: &Url) -> bool {
    let same_host =
        from.host_str().map(str::to_ascii_lowercase) == to.host_str().map(str::to_ascii_lowercase);
    let same_port = from.port_or_known_default() == to.port_or_known_default();
    let upgrade = from.scheme() == "http" && to.scheme() == "https";
    same_host && (same_port || upgrade)
}

/// Removes userinfo from `url`, returning it percent-decoded.
fn take_userinfo(url: &mut Url) -> Option<BasicAuth> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let auth = BasicAuth {
        username: crate::percent::decode(url.username()),
        password: url
            .password()
            .map(crate::percent::decode)
            .unwrap_or_default(),
    };
    // Cannot fail for http(s) URLs, which always have a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(auth)
}

/// Strips userinfo from a URL that may not parse, for messages.
fn redact_str(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return sanitize(url);
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => sanitize(&format!("{}{}", &url[..rest_start], &rest[at + 1..])),
        None => sanitize(url),
    }
}

/// Compares media types, ignoring parameters and case.
fn content_type_matches(found: Option<&str>, expected: &str) -> bool {
    found
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(expected))
}

/// The first line of a short plain-text error body, which often says why
/// (e.g. "HTTP Basic: Access denied").
fn server_said(response: Response, content_type: Option<&str>) -> Option<String> {
    if !content_type.is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/plain")) {
        return None;
    }
    let mut body = Vec::new();
    response
        .take(SERVER_SAID_LIMIT)
        .read_to_end(&mut body)
        .ok()?;
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(sanitize(&line.chars().take(200).collect::<String>()))
}

/// Control characters (NUL included, which git2 cannot carry) become spaces.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The message for a non-2xx, non-redirect status.
fn status_message(
    status: StatusCode,
    url: &Url,
    push: bool,
    auth: AuthState,
    server_said: Option<&str>,
) -> String {
    let code = status.as_u16();
    let access = if push { "write" } else { "read" };
    let said = server_said.map_or(String::new(), |s| format!(" (the server said: \"{s}\")"));
    let dropped = "the token was not sent because the server redirected to another host; use the repository's final URL instead";
    match (code, auth) {
        (401, AuthState::Sent) => format!(
            "authentication failed: HTTP 401 from {url}{said}; check that {TOKEN_HINT} holds a valid token with {access} access to this repository"
        ),
        (401, AuthState::NotConfigured) => format!(
            "authentication required: HTTP 401 from {url}{said}, and no token was given; set {TOKEN_HINT} to a token with {access} access to this repository"
        ),
        (401 | 403, AuthState::DroppedOnRedirect) => {
            format!("authentication required: HTTP {code} from {url}{said}; {dropped}")
        }
        (403, AuthState::Sent) => format!(
            "access denied: HTTP 403 from {url}{said}; the token lacks permission: it needs {access} access to this repository"
        ),
        (403, AuthState::NotConfigured) => format!(
            "access denied: HTTP 403 from {url}{said}, and no token was given; set {TOKEN_HINT} to a token with {access} access to this repository"
        ),
        (404, _) => format!(
            "repository not found or no access: HTTP 404 from {url}{said}; check the repository URL, and that the token can see this repository (servers answer 404 to hide private ones)"
        ),
        (407, _) => format!(
            "proxy authentication required: HTTP 407 for {url}{said}; put the proxy's credentials in HTTPS_PROXY/HTTP_PROXY, or list the git host in NO_PROXY"
        ),
        (408 | 429, _) | (500..=599, _) => format!(
            "the git server answered HTTP {code} ({}) for {url}{said}; the problem is on the server side or temporary, retry later",
            status.canonical_reason().unwrap_or("error")
        ),
        _ => format!(
            "unexpected answer HTTP {code} ({}) from {url}{said}; check the repository URL",
            status.canonical_reason().unwrap_or("unknown status")
        ),
    }
}

/// The message for a request that got no HTTP answer.
fn describe_send_error(error: reqwest::Error, url: &Url, settings: &HttpSettings) -> String {
    let host = match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.to_string(),
    };
    // Our URLs carry no userinfo, but the message names the URL itself.
    let error = error.without_url();
    let all = causes(&error);
    if error.is_timeout() {
        return if error.is_connect() {
            format!(
                "could not connect to {host} within {} (for {url}); check that the git server is reachable from this machine (network, proxy, firewall)",
                fmt_secs(settings.connect_timeout)
            )
        } else {
            format!(
                "no answer from {url} within {}; the git server or the network is slow or stuck: retry, or raise the HTTP timeout",
                fmt_secs(settings.timeout)
            )
        };
    }
    if let Some(tls) = all.iter().find_map(|c| c.downcast_ref::<rustls::Error>()) {
        return tls_message(tls, url);
    }
    let refused = all.iter().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
    });
    if refused {
        return format!(
            "connection refused by {host} (for {url}): nothing listens there; check the repository URL and that the git server is up"
        );
    }
    if error.is_connect() {
        return format!(
            "could not connect to {host} (for {url}): {}; check the repository URL and network access",
            error_chain(&error)
        );
    }
    format!(
        "the HTTP request to {url} failed: {}; retry, and check the repository URL",
        error_chain(&error)
    )
}

fn tls_message(error: &rustls::Error, url: &Url) -> String {
    use rustls::CertificateError as C;
    let host = url.host_str().unwrap_or("the server");
    let hint = match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA; if the server uses a private or TLS-intercepting CA, set SSL_CERT_FILE to a PEM file that contains that CA's certificate"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => {
            "the certificate is not valid for this host name; check the host in the repository URL"
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the certificate is outside its validity period (or this machine's clock is wrong)",
        _ => {
            "check the repository URL, and set SSL_CERT_FILE to the CA's PEM file if the server uses a private CA"
        }
    };
    format!("TLS handshake with {host} failed (for {url}): {error}; {hint}")
}

/// The error and its causes, looking inside `io::Error` wrappers (whose
/// `source()` skips the wrapped error itself).
fn causes<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        if out.len() >= 16 {
            break;
        }
        out.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

/// "outer: inner: root" without repeats (wrappers often repeat their cause).
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in causes(error) {
        let text = sanitize(&cause.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::thread;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn settings(auth: Option<BasicAuth>) -> HttpSettings {
        HttpSettings {
            auth,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            user_agent: "git/2.0 (transport-test)".to_string(),
        }
    }

    fn token() -> BasicAuth {
        BasicAuth {
            username: "ci".to_string(),
            password: "s3cret-token".to_string(),
        }
    }

    #[test]
    fn basic_auth_debug_hides_password() {
        let shown = format!("{:?}", token());
        assert_eq!(shown, r#"BasicAuth { username: "ci", password: "***" }"#);
        let shown = format!("{:?}", settings(Some(token())));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn service_url_joins_with_and_without_slash() {
        let q = Some("service=git-upload-pack");
        for base in ["https://h/org/repo.git", "https://h/org/repo.git/"] {
            assert_eq!(
                service_url(&url(base), "info/refs", q).as_str(),
                "https://h/org/repo.git/info/refs?service=git-upload-pack"
            );
        }
        assert_eq!(
            service_url(&url("http://h:8080/r?x=1#f"), "git-receive-pack", None).as_str(),
            "http://h:8080/r/git-receive-pack"
        );
        assert_eq!(
            service_url(&url("https://h"), "git-upload-pack", None).as_str(),
            "https://h/git-upload-pack"
        );
    }

    #[test]
    fn userinfo_is_taken_out_and_decoded() {
        let mut u = url("https://ci:p%40ss%2Fw@h/repo.git");
        let auth = take_userinfo(&mut u).expect("userinfo");
        assert_eq!(auth.username, "ci");
        assert_eq!(auth.password, "p@ss/w");
        assert_eq!(u.as_str(), "https://h/repo.git");
        let mut u = url("https://token@h/repo.git");
        let auth = take_userinfo(&mut u).expect("userinfo");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("token", "")
        );
        assert!(take_userinfo(&mut url("https://h/repo.git")).is_none());
    }

    #[test]
    fn redact_str_drops_userinfo() {
        assert_eq!(redact_str("https://u:p@h/r@x"), "https://h/r@x");
        assert_eq!(redact_str("https://u:p@w@h:1/r"), "https://h:1/r");
        assert_eq!(redact_str("https://h/r"), "https://h/r");
        assert_eq!(redact_str("http://u:p@[::1"), "http://[::1");
        assert_eq!(redact_str("not a url\0"), "not a url ");
    }

    #[test]
    fn redirect_base_is_final_url_minus_info_refs() {
        let got = redirected_base(&url(
            "https://new.example/org/repo.git/info/refs?service=git-upload-pack",
        ));
        assert_eq!(
            got.map(String::from).as_deref(),
            Some("https://new.example/org/repo.git")
        );
        let got = redirected_base(&url("https://u:p@h/r/info/refs"));
        assert_eq!(got.map(String::from).as_deref(), Some("https://h/r"));
        assert!(redirected_base(&url("https://h/login?next=/r")).is_none());
    }

    #[test]
    fn auth_follows_only_same_host_redirects() {
        assert!(keeps_auth(&url("https://h/a"), &url("https://H/b")));
        assert!(keeps_auth(&url("http://h/a"), &url("https://h/b")));
        assert!(!keeps_auth(&url("https://h/a"), &url("https://other/b")));
        assert!(!keeps_auth(&url("https://h/a"), &url("https://h:8443/b")));
    }

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let want = "application/x-git-upload-pack-advertisement";
        assert!(content_type_matches(Some(want), want));
        assert!(content_type_matches(
            Some("Application/X-Git-Upload-Pack-Advertisement; charset=utf-8"),
            want
        ));
        assert!(!content_type_matches(Some("text/html"), want));
        assert!(!content_type_matches(None, want));
    }

    #[test]
    fn status_messages_name_url_and_action() {
        let u = url("https://h/devops.git/info/refs?service=git-receive-pack");
        let m = status_message(StatusCode::UNAUTHORIZED, &u, true, AuthState::Sent, None);
        assert_eq!(
            m,
            "authentication failed: HTTP 401 from https://h/devops.git/info/refs?service=git-receive-pack; check that GIT_TOKEN (or --git-token-file) holds a valid token with write access to this repository"
        );
        let m = status_message(
            StatusCode::FORBIDDEN,
            &u,
            true,
            AuthState::Sent,
            Some("denied"),
        );
        assert!(
            m.starts_with("access denied: HTTP 403 from https://h/devops.git"),
            "{m}"
        );
        assert!(m.contains("lacks permission") && m.contains("(the server said: \"denied\")"));
        let m = status_message(StatusCode::NOT_FOUND, &u, false, AuthState::Sent, None);
        assert!(m.starts_with("repository not found or no access: HTTP 404 from https://h/"));
        let m = status_message(
            StatusCode::UNAUTHORIZED,
            &u,
            false,
            AuthState::NotConfigured,
            None,
        );
        assert!(
            m.contains("no token was given") && m.contains("read access"),
            "{m}"
        );
        let m = status_message(
            StatusCode::UNAUTHORIZED,
            &u,
            false,
            AuthState::DroppedOnRedirect,
            None,
        );
        assert!(m.contains("redirected to another host"), "{m}");
        let m = status_message(StatusCode::BAD_GATEWAY, &u, false, AuthState::Sent, None);
        assert!(
            m.contains("HTTP 502 (Bad Gateway)") && m.contains("retry"),
            "{m}"
        );
    }

    #[test]
    fn user_agent_starts_with_git() {
        assert_eq!(git_user_agent("git/2.0 (x 1)"), "git/2.0 (x 1)");
        assert_eq!(git_user_agent("tomoda/1"), "git/2.0 (tomoda/1)");
    }

    #[test]
    fn seconds_are_readable() {
        assert_eq!(fmt_secs(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_secs(Duration::from_millis(2500)), "2.5s");
    }

    #[test]
    fn tls_config_builds_with_roots() {
        let config = tls_config().expect("TLS config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
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

    fn subtransport(auth: Option<BasicAuth>) -> HttpSubtransport {
        let settings = settings(auth);
        let client = build_client(&settings).expect("client");
        HttpSubtransport {
            shared: Arc::new(Shared { client, settings }),
            redirect: Arc::new(Mutex::new(None)),
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
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "authentication failed: HTTP 401 from {base}/devops.git/info/refs?service=git-receive-pack (the server said: \"HTTP Basic: Access denied\"); check that GIT_TOKEN (or --git-token-file) holds a valid token with write access to this repository"
            )
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
        let start = Instant::now();
        let err = read_all(
            &sub,
            &format!("http://{addr}/r.git"),
            Service::UploadPackLs,
            b"",
        )
        .expect_err("timeout");
        assert!(start.elapsed() < Duration::from_secs(4));
        assert_eq!(
            err.to_string(),
            format!(
                "no answer from http://{addr}/r.git/info/refs?service=git-upload-pack within 2s; the git server or the network is slow or stuck: retry, or raise the HTTP timeout"
            )
        );
        let _ = done.send(());
        let _ = holder.join();
    }
}
