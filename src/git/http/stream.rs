//! One libgit2 connection over smart HTTP: each git action is one request (GET
//! `info/refs?service=…`, POST `git-upload-pack` / `git-receive-pack`), its body
//! streamed back to libgit2. Redirects follow git's rule: only the first `info/refs`
//! request follows them, and later requests of the same connection go to the new base.

use std::io::{self, Read, Write};
use std::mem;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, PRAGMA};
use reqwest::{StatusCode, Url};

use super::Shared;
use super::failure::{self, FailureSlot};
use super::messages::{self, AuthState, Told, sanitize};
use super::url::{keeps_auth, redact_str, redirected_base, service_url, take_userinfo};
use crate::error::Retry;
use crate::repo::Credentials;

/// Redirects followed for one `info/refs` request (git's curl allows 20; a git host needs
/// one or two, more means a loop or a login portal).
const MAX_REDIRECTS: usize = 5;

/// Error body excerpt shown to the user, at most this many bytes read.
const SERVER_SAID_LIMIT: u64 = 1024;

/// One libgit2 connection: remembers a redirect of its first request.
pub(super) struct HttpSubtransport {
    pub(super) shared: Arc<Shared>,
    pub(super) failure: FailureSlot,
    pub(super) redirect: Arc<Mutex<Option<Redirect>>>,
    /// Ask for git's protocol version 2 (the `Git-Protocol` header): set for the requests
    /// of [`super::exchange`], never for libgit2, which speaks version 0.
    pub(super) protocol_v2: bool,
}

/// The `info/refs` request for `from` ended at base `to`.
#[derive(Clone)]
pub(super) struct Redirect {
    from: String,
    to: Url,
    auth_kept: bool,
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
            let error = self.failure.record(
                Told::new(
                    format!(
                        "the repository URL {} is not a valid URL ({e})",
                        redact_str(url)
                    ),
                    "check the repository URL",
                ),
                Retry::Never,
            );
            super::net_error(error.to_string())
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
            failure: self.failure.clone(),
            redirect: Arc::clone(&self.redirect),
            original: url.to_string(),
            service,
            post,
            base,
            auth,
            auth_state,
            protocol_v2: self.protocol_v2,
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

/// One request. libgit2 writes the POST body, then reads: the request goes out on the
/// first read and the response body is streamed to libgit2.
struct HttpStream {
    shared: Arc<Shared>,
    failure: FailureSlot,
    redirect: Arc<Mutex<Option<Redirect>>>,
    /// URL as libgit2 gave it (may hold userinfo): the key for `redirect`.
    original: String,
    service: &'static str,
    post: bool,
    /// Repository URL without userinfo.
    base: Url,
    auth: Option<Credentials>,
    auth_state: AuthState,
    protocol_v2: bool,
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

    /// A failure retrying cannot help with.
    fn permanent(&self, message: String, hint: &str) -> io::Error {
        self.failure.record(Told::new(message, hint), Retry::Never)
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
                        self.permanent(
                            format!(
                                "the redirect from {first} ended at {url}, which is not a git info/refs URL"
                            ),
                            "use the repository's final URL instead",
                        )
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
            let next = self.redirect_target(&url, &response)?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(self.permanent(
                    format!(
                        "refusing to follow the redirect from {url} to {next}, which leaves HTTPS for plain HTTP"
                    ),
                    "check the repository URL",
                ));
            }
            if auth.is_some() && !keeps_auth(&url, &next) {
                auth = None;
                auth_state = AuthState::DroppedOnRedirect;
            }
            url = next;
        }
        Err(self.permanent(
            format!("too many redirects (more than {MAX_REDIRECTS}) starting at {first}"),
            "check the repository URL",
        ))
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
            let target = self
                .redirect_target(&url, &response)
                .map_or_else(|_| "another URL".to_string(), |u| u.to_string());
            return Err(self.permanent(
                format!(
                    "the git server redirected POST {url} to {target}; git does not follow redirects of POST requests"
                ),
                "use the repository's final URL instead",
            ));
        }
        let response = self.check(response, &url, "result", self.auth_state)?;
        Ok((response, url))
    }

    fn send(
        &self,
        request: RequestBuilder,
        method: &str,
        url: &Url,
        auth: Option<&Credentials>,
    ) -> io::Result<Response> {
        let settings = &self.shared.settings;
        let request = request.timeout(settings.timeout);
        let request = if self.protocol_v2 {
            request.header("Git-Protocol", "version=2")
        } else {
            request
        };
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
                // Our URLs carry no userinfo, but the message names the URL itself.
                let e = e.without_url();
                let told = messages::send_error_message(&e, url, settings);
                tracing::debug!(method, url = %url, elapsed = ?start.elapsed(), error = %told.message, "git HTTP request failed");
                Err(self.failure.record(told, failure::retry_for_send_error(&e)))
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
            let retry = failure::retry_for_status(status, failure::retry_after(response.headers()));
            let said = server_said(response, content_type.as_deref());
            let push = self.service == "receive-pack";
            let told = messages::status_message(status, url, push, auth_state, said.as_deref());
            return Err(self.failure.record(told, retry));
        }
        let expected = format!("application/x-git-{}-{kind}", self.service);
        if !content_type_matches(content_type.as_deref(), &expected) {
            let told = messages::not_git_message(url, content_type.as_deref(), &expected);
            return Err(self.failure.record(told, Retry::Never));
        }
        Ok(response)
    }

    /// The Location of a redirect, resolved against `url`, without userinfo.
    fn redirect_target(&self, url: &Url, response: &Response) -> io::Result<Url> {
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
            None => Err(self.permanent(
                format!(
                    "HTTP {} from {url} is a redirect without a valid Location",
                    response.status().as_u16()
                ),
                "check the repository URL",
            )),
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
                let url = self
                    .shown_url
                    .as_ref()
                    .map_or_else(|| self.base.to_string(), Url::to_string);
                let told =
                    messages::read_error_message(&e, &url, &self.shared.settings, self.received);
                self.response = None;
                Err(self.failure.record(told, Retry::Transient { after: None }))
            }
        }
    }
}

/// Logs the whole exchange once libgit2 is done with it (it often stops reading before
/// EOF, once the git protocol says the answer is complete).
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

/// The statuses that move a resource; 300 and 304 are not followed.
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Compares media types, ignoring parameters and case.
fn content_type_matches(found: Option<&str>, expected: &str) -> bool {
    found
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(expected))
}

/// The first line of a short plain-text error body, which often says why (e.g. "HTTP
/// Basic: Access denied").
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
