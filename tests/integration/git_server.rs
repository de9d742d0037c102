//! A real git server over smart HTTP, for the integration tests.
//!
//! `tomoda-promote` clones, commits and pushes over HTTP(S) with libgit2. A
//! mock that imitates git's wire protocol would only test our idea of that
//! protocol, so this module runs git's own server side instead: a small
//! HTTP/1.1 server on 127.0.0.1 hands every request to `git http-backend`
//! (git's CGI program, the one behind Apache or nginx on real git hosts) and
//! sends its answer back. Clones, fetches and pushes therefore meet the same
//! upload-pack / receive-pack, ref locking and non-fast-forward rejections as
//! on a real server, including several pushers racing on one repository.
//!
//! Design, kept simple on purpose (repositories in tests are small):
//! - one thread accepts; one thread per connection; one request per
//!   connection, answered with `Connection: close` (or, after
//!   [`GitServer::keep_alive`], as many as the client sends, as a forge serves);
//! - TCP_NODELAY, as nginx sets it: the head and the body go out in two writes,
//!   and with Nagle on the body would wait ~40 ms for the client's delayed ACK;
//! - request bodies (`Content-Length` or `Transfer-Encoding: chunked`) are
//!   read whole, de-chunked, and piped to the CGI; a gzip
//!   `Content-Encoding` is passed on as `HTTP_CONTENT_ENCODING` and inflated
//!   by http-backend itself;
//! - the CGI output is read whole and sent with a `Content-Length`;
//! - every blocking read or write has a timeout, the CGI has a deadline, and
//!   dropping the server stops the accept loop and joins every thread.

// Shared helper of the `integration` test binary: not every test file uses
// every method.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Timeout of every blocking read or write on a client connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Reads wake up this often to notice that the server is being dropped.
const READ_POLL: Duration = Duration::from_millis(100);
/// How long one `git http-backend` run may take before it is killed.
const CGI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the accept loop sleeps when no connection is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// After the response, how long to wait for the client to close its side.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Limits of one request line or header line, and of the whole head.
const MAX_LINE: u64 = 16 * 1024;
const MAX_HEAD: usize = 64 * 1024;
/// Limit of one request body (after de-chunking).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// A smart-HTTP git server serving the bare repositories under one folder.
pub struct GitServer {
    addr: SocketAddr,
    hook: Arc<Mutex<Option<Hook>>>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    /// Response bytes (heads and bodies) written to clients.
    sent: Arc<AtomicU64>,
    /// Connections accepted.
    connections: Arc<AtomicU64>,
    keep_alive: Arc<AtomicBool>,
    allow_filter: Arc<AtomicBool>,
    ref_in_want: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
    /// With [`GitServer::start_tls`]: the HTTPS address and its accept thread.
    tls: Option<(SocketAddr, JoinHandle<()>)>,
}

impl GitServer {
    /// Serves every bare repo under `root` (e.g. root/devops.git) at
    /// `http://127.0.0.1:PORT/<name>.git`, without authentication. Pushes are
    /// allowed (the CGI runs with `REMOTE_USER=test`).
    pub fn start(root: &Path) -> GitServer {
        Self::start_inner(root, None)
    }

    /// Same as [`GitServer::start`], but every request must carry HTTP basic
    /// auth with exactly this user and password; otherwise the answer is
    /// `401` with `WWW-Authenticate: Basic realm="git"`.
    pub fn start_with_auth(root: &Path, user: &str, password: &str) -> GitServer {
        let token = base64(format!("{user}:{password}").as_bytes());
        Self::start_inner(
            root,
            Some(Auth {
                user: user.to_owned(),
                token,
            }),
        )
    }

    /// The clone URL of a repository under the root: `url("devops.git")` and
    /// `url("devops")` both give `http://127.0.0.1:PORT/devops.git`.
    pub fn url(&self, repo_name: &str) -> String {
        let name = repo_name.trim_start_matches('/');
        let suffix = if Path::new(name).extension().is_some_and(|e| e == "git") {
            ""
        } else {
            ".git"
        };
        match &self.tls {
            Some((addr, _)) => format!("https://{addr}/{name}{suffix}"),
            None => format!("http://{}/{name}{suffix}", self.addr),
        }
    }

    /// Where the plain-HTTP server listens (for a server started with
    /// [`GitServer::start_tls`], the plain side behind the TLS front), e.g. for a
    /// proxy to forward to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Same as [`GitServer::start`], but [`GitServer::url`] is
    /// `https://127.0.0.1:PORT/...`: a TLS front (rustls, ring) presents
    /// `cert_chain_pem` (leaf first) with `key_pem` and hands the decrypted bytes to
    /// the plain-HTTP server. A client that refuses the certificate never reaches it.
    pub fn start_tls(root: &Path, cert_chain_pem: &str, key_pem: &str) -> GitServer {
        let mut server = Self::start_inner(root, None);
        server.tls = Some(tls_front::start(
            cert_chain_pem,
            key_pem,
            server.addr,
            Arc::clone(&server.stop),
        ));
        server
    }

    /// Keeps connections open for further requests unless the client asks to close,
    /// as a forge's server does (for the benchmark; tests keep one request per connection).
    pub fn keep_alive(&self) {
        self.keep_alive.store(true, Ordering::SeqCst);
    }

    /// Lets clients fetch with a filter (partial clone), as GitHub and GitLab do, or not:
    /// `uploadpack.allowFilter`. Off unless TEST_ALLOW_FILTER is set, which runs every
    /// test through tomoda-promote's partial fetch.
    pub fn allow_filter(&self, on: bool) {
        self.allow_filter.store(on, Ordering::SeqCst);
    }

    /// Lets clients fetch a branch by name (`want-ref`), as GitLab's servers may:
    /// `uploadpack.allowRefInWant`. Off unless TEST_ALLOW_REF_IN_WANT is set.
    pub fn allow_ref_in_want(&self, on: bool) {
        self.ref_in_want.store(on, Ordering::SeqCst);
    }

    /// Response bytes written to clients so far: what they fetched, counted at the server.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Installs a hook run before each request reaches `git http-backend`.
    pub fn before_request(&self, hook: impl FnMut(&str) + Send + 'static) {
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
    }

    /// How many requests have been answered so far (any status, including
    /// 401 and requests the server could not parse).
    pub fn request_count(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// One `"METHOD /path?query -> STATUS"` line per request, in order, for
    /// debugging failing tests. Requests the server rejected itself carry the
    /// reason in parentheses.
    pub fn requests(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn start_inner(root: &Path, auth: Option<Auth>) -> GitServer {
        let root = root.canonicalize().unwrap_or_else(|e| {
            panic!(
                "git server: cannot serve {}: {e} (create the bare repos first)",
                root.display()
            )
        });
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("git server: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("git server: no local address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("git server: cannot make the listener nonblocking: {e}"));

        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let hook: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(None));
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let keep_alive = Arc::new(AtomicBool::new(false));
        let allow_filter = Arc::new(AtomicBool::new(
            std::env::var_os("TEST_ALLOW_FILTER").is_some(),
        ));
        let ref_in_want = Arc::new(AtomicBool::new(
            std::env::var_os("TEST_ALLOW_REF_IN_WANT").is_some(),
        ));
        let config = Arc::new(Config {
            allow_filter: Arc::clone(&allow_filter),
            ref_in_want: Arc::clone(&ref_in_want),
            sent: Arc::clone(&sent),
            connections: Arc::clone(&connections),
            keep_alive: Arc::clone(&keep_alive),
            hook: Arc::clone(&hook),
            root,
            auth,
            path: std::env::var_os("PATH").unwrap_or_default(),
            log: Arc::clone(&log),
            stop: Arc::clone(&stop),
        });
        let accept_thread = thread::Builder::new()
            .name(format!("git-server-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &config))
            .unwrap_or_else(|e| panic!("git server: cannot spawn the accept thread: {e}"));

        GitServer {
            addr,
            hook,
            stop,
            log,
            sent,
            connections,
            keep_alive,
            allow_filter,
            ref_in_want,
            accept_thread: Some(accept_thread),
            tls: None,
        }
    }
}

impl Drop for GitServer {
    /// Stops accepting, abandons connections waiting for client data, waits
    /// for the `git http-backend` runs in flight (bounded by their deadline)
    /// and joins every thread.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some((_, handle)) = self.tls.take()
            && handle.join().is_err()
        {
            eprintln!("git server {}: the TLS accept thread panicked", self.addr);
        }
        if let Some(handle) = self.accept_thread.take()
            && handle.join().is_err()
        {
            eprintln!("git server {}: the accept thread panicked", self.addr);
        }
    }
}

/// Runs before `git http-backend` answers a request, with `"METHOD /path?query"`: lets a
/// test change the repository at an exact moment of the protocol.
pub type Hook = Box<dyn FnMut(&str) + Send>;

struct Auth {
    user: String,
    /// base64("user:password"), as sent after `Authorization: Basic `.
    token: String,
}

struct Config {
    root: PathBuf,
    auth: Option<Auth>,
    /// PATH of the test process, so that the CGI finds `git`.
    path: OsString,
    log: Arc<Mutex<Vec<String>>>,
    /// Set when the server is dropped.
    stop: Arc<AtomicBool>,
    hook: Arc<Mutex<Option<Hook>>>,
    sent: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    keep_alive: Arc<AtomicBool>,
    allow_filter: Arc<AtomicBool>,
    ref_in_want: Arc<AtomicBool>,
}

impl Config {
    fn record(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

fn accept_loop(listener: &TcpListener, config: &Arc<Config>) {
    let handler = Arc::clone(config);
    serve(listener, &config.stop, "git-server", move |stream, peer| {
        handle_connection(&stream, peer, &handler);
    });
}

/// The accept loop of every test server (plain, TLS front, fault proxy): one thread per
/// connection, finished ones reaped as it goes, all joined once `stop` is set. The listener
/// must be nonblocking, or `stop` would not be seen while no client connects.
pub fn serve<F>(listener: &TcpListener, stop: &AtomicBool, who: &str, handle: F)
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let handle = Arc::clone(&handle);
                let spawned = thread::Builder::new()
                    .name(format!("{who}-conn-{}", peer.port()))
                    .spawn(move || handle(stream, peer));
                match spawned {
                    Ok(thread) => connections.push(thread),
                    Err(e) => eprintln!("{who}: cannot spawn a connection thread: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. out of file descriptors: keep serving, but say so.
                eprintln!("{who}: accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
        let (finished, running): (Vec<_>, Vec<_>) =
            connections.into_iter().partition(JoinHandle::is_finished);
        connections = running;
        join_all(finished, who);
    }
    join_all(connections, who);
}

fn join_all(handles: Vec<JoinHandle<()>>, who: &str) {
    for handle in handles {
        if handle.join().is_err() {
            eprintln!("{who}: a connection thread panicked");
        }
    }
}

/// One parsed HTTP request, body de-chunked.
struct Request {
    method: String,
    /// The request target as sent: `/path?query`.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path_and_query(&self) -> (&str, &str) {
        self.target.split_once('?').unwrap_or((&self.target, ""))
    }
}

/// A response about to be sent.
struct Response {
    /// Status code and reason phrase, e.g. `200 OK`.
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn plain(status: &str, message: &str) -> Response {
        Response {
            status: status.to_owned(),
            headers: vec![(
                "Content-Type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            )],
            body: format!("{message}\n").into_bytes(),
        }
    }

    fn code(&self) -> &str {
        self.status.split_whitespace().next().unwrap_or("?")
    }
}

/// The reading side of a client connection: a blocking read that gives up
/// after `idle_limit` without data, or at once when the server is dropped.
struct Conn<'a> {
    stream: &'a TcpStream,
    stop: &'a AtomicBool,
    idle_limit: Duration,
}

impl Read for Conn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            match self.stream.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.stop.load(Ordering::SeqCst) {
                        return Err(io::Error::other("the server is stopping"));
                    }
                    if start.elapsed() >= self.idle_limit {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no data from the client for {:?}", self.idle_limit),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }
}

type ConnReader<'a> = BufReader<Conn<'a>>;

/// Why a request could not be read.
struct RequestError {
    /// The request line, if it was read.
    request_line: Option<String>,
    /// The response to send, if the connection is still usable.
    response: Option<Response>,
    reason: String,
}

fn handle_connection(stream: &TcpStream, peer: SocketAddr, config: &Config) {
    config.connections.fetch_add(1, Ordering::SeqCst);
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(READ_POLL)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if let Err(e) = setup {
        eprintln!("git server: cannot set up the connection from {peer}: {e}");
        return;
    }
    let mut reader = BufReader::new(Conn {
        stream,
        stop: &config.stop,
        idle_limit: IO_TIMEOUT,
    });
    loop {
        let request = match read_request(&mut reader, stream) {
            Ok(Some(request)) => request,
            // The client connected (or kept the connection) and closed without a request.
            Ok(None) => return,
            Err(error) => {
                let line = error.request_line.as_deref().unwrap_or("<no request line>");
                let code = error.response.as_ref().map_or("closed", Response::code);
                config.record(format!("{line} -> {code} ({})", error.reason));
                if let Some(response) = error.response {
                    finish(stream, &mut reader, &response, &config.sent);
                }
                return;
            }
        };
        let keep = config.keep_alive.load(Ordering::SeqCst)
            && !request
                .header("Connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = answer(&request, peer, config);
        if !keep {
            finish(stream, &mut reader, &response, &config.sent);
            return;
        }
        if let Err(e) = write_response(stream, &response, false, &config.sent) {
            eprintln!("git server: cannot send the response: {e}");
            return;
        }
    }
}

/// The answer to one request, recorded in the log.
fn answer(request: &Request, peer: SocketAddr, config: &Config) -> Response {
    let response = match &config.auth {
        Some(auth) if !authorized(request, auth) => {
            let mut response = Response::plain("401 Unauthorized", "authentication required");
            response.headers.push((
                "WWW-Authenticate".to_owned(),
                "Basic realm=\"git\"".to_owned(),
            ));
            response
        }
        _ => run_cgi(config, request, peer),
    };
    config.record(format!(
        "{} {} -> {}",
        request.method,
        request.target,
        response.code()
    ));
    response
}

fn authorized(request: &Request, auth: &Auth) -> bool {
    request
        .header("Authorization")
        .and_then(|value| value.trim().split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("basic") && token.trim() == auth.token
        })
}

/// Sends the response, then closes politely: shut down our side and read
/// what the client still sends until it closes, so that the kernel does not
/// answer unread data with a reset that could destroy the response.
fn finish(stream: &TcpStream, reader: &mut ConnReader<'_>, response: &Response, sent: &AtomicU64) {
    if let Err(e) = write_response(stream, response, true, sent) {
        eprintln!("git server: cannot send the response: {e}");
        return;
    }
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    reader.get_mut().idle_limit = DRAIN_TIMEOUT;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    while Instant::now() < deadline && drained < MAX_BODY {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn write_response(
    mut stream: &TcpStream,
    response: &Response,
    close: bool,
    sent: &AtomicU64,
) -> io::Result<()> {
    let headers: String = response
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let connection = if close { "Connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {}\r\n{headers}Content-Length: {}\r\n{connection}\r\n",
        response.status,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    sent.fetch_add((head.len() + response.body.len()) as u64, Ordering::SeqCst);
    stream.flush()
}

fn bad_request(request_line: Option<&str>, status: &str, reason: String) -> RequestError {
    RequestError {
        request_line: request_line.map(str::to_owned),
        response: Some(Response::plain(status, &reason)),
        reason,
    }
}

fn io_failure(request_line: Option<&str>, what: &str, e: &io::Error) -> RequestError {
    RequestError {
        request_line: request_line.map(str::to_owned),
        response: None,
        reason: format!("{what}: {e}"),
    }
}

/// Reads one line ending in LF (CRLF accepted), without the line ending.
/// `Ok(None)` at end of stream before any byte.
fn read_line(reader: &mut ConnReader<'_>) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or connection closed mid-line",
        ));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not UTF-8"))
}

fn read_request(
    reader: &mut ConnReader<'_>,
    mut stream: &TcpStream,
) -> Result<Option<Request>, RequestError> {
    // Request line (empty lines before it are allowed).
    let request_line = loop {
        match read_line(reader) {
            Ok(None) => return Ok(None),
            Ok(Some(line)) if line.is_empty() => {}
            Ok(Some(line)) => break line,
            Err(e) => return Err(io_failure(None, "reading the request line", &e)),
        }
    };
    let line = Some(request_line.as_str());
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_request(
            line,
            "400 Bad Request",
            "malformed request line".to_owned(),
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad_request(
            line,
            "505 HTTP Version Not Supported",
            format!("unsupported version {version}"),
        ));
    }
    let (method, target) = (method.to_owned(), target.to_owned());
    let head_line = Some(format!("{method} {target}"));
    let line = head_line.as_deref();

    // Headers.
    let mut headers = Vec::new();
    let mut head_size = request_line.len();
    loop {
        let header = match read_line(reader) {
            Ok(Some(header)) => header,
            Ok(None) => {
                let e = io::Error::from(io::ErrorKind::UnexpectedEof);
                return Err(io_failure(line, "reading the headers", &e));
            }
            Err(e) => return Err(io_failure(line, "reading the headers", &e)),
        };
        if header.is_empty() {
            break;
        }
        head_size += header.len() + 2;
        if head_size > MAX_HEAD {
            return Err(bad_request(
                line,
                "431 Request Header Fields Too Large",
                "request head too large".to_owned(),
            ));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad_request(
                line,
                "400 Bad Request",
                format!("malformed header {header:?}"),
            ));
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };

    // Body framing.
    let chunked = match request.header("Transfer-Encoding") {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(te) => {
            return Err(bad_request(
                line,
                "501 Not Implemented",
                format!("unsupported Transfer-Encoding {te:?}"),
            ));
        }
    };
    let content_length = match (chunked, request.header("Content-Length")) {
        (false, Some(value)) => match value.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            Ok(n) => {
                return Err(bad_request(
                    line,
                    "413 Content Too Large",
                    format!("body of {n} bytes is over the limit"),
                ));
            }
            Err(_) => {
                return Err(bad_request(
                    line,
                    "400 Bad Request",
                    format!("bad Content-Length {value:?}"),
                ));
            }
        },
        _ => 0,
    };
    let expects_continue = request
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue && (chunked || content_length > 0) {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|e| io_failure(line, "sending 100 Continue", &e))?;
    }

    if chunked {
        request.body = read_chunked(reader).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => bad_request(line, "400 Bad Request", e.to_string()),
            _ => io_failure(line, "reading the chunked body", &e),
        })?;
    } else {
        let mut body = vec![0u8; content_length];
        reader
            .read_exact(&mut body)
            .map_err(|e| io_failure(line, "reading the body", &e))?;
        request.body = body;
    }
    Ok(Some(request))
}

fn read_chunked(reader: &mut ConnReader<'_>) -> io::Result<Vec<u8>> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size line {size_line:?}")))?;
        if size == 0 {
            break;
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body over the limit".to_owned()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let end = read_line(reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if !end.is_empty() {
            return Err(invalid("chunk not followed by CRLF".to_owned()));
        }
    }
    // Trailers, up to the empty line.
    loop {
        let trailer = read_line(reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if trailer.is_empty() {
            return Ok(body);
        }
    }
}

/// Runs `git http-backend` for one request and turns its CGI output into a
/// response; failures become a 500 whose body says why.
fn run_cgi(config: &Config, request: &Request, peer: SocketAddr) -> Response {
    if let Some(hook) = config
        .hook
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
    {
        hook(&format!("{} {}", request.method, request.target));
    }
    match run_cgi_inner(config, request, peer) {
        Ok(response) => response,
        Err(reason) => {
            eprintln!(
                "git server: {} {}: {reason}",
                request.method, request.target
            );
            Response::plain("500 Internal Server Error", &reason)
        }
    }
}

fn run_cgi_inner(config: &Config, request: &Request, peer: SocketAddr) -> Result<Response, String> {
    let (path, query) = request.path_and_query();
    let remote_user = config
        .auth
        .as_ref()
        .map_or("test", |auth| auth.user.as_str());
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        // Nothing of the test process leaks in: no GIT_DIR, GIT_* or
        // user/system config.
        .env_clear()
        .env("PATH", &config.path)
        .env("HOME", &config.root)
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Same as `git -c k=v`: no background `gc --auto` after a push (it
        // could outlive the test and race with its temporary folder), and no
        // "dubious ownership" refusal whoever owns the temporary folders.
        .env("GIT_CONFIG_COUNT", "4")
        .env("GIT_CONFIG_KEY_0", "receive.autogc")
        .env("GIT_CONFIG_VALUE_0", "false")
        .env("GIT_CONFIG_KEY_1", "safe.directory")
        .env("GIT_CONFIG_VALUE_1", "*")
        .env("GIT_CONFIG_KEY_2", "uploadpack.allowFilter")
        .env(
            "GIT_CONFIG_VALUE_2",
            if config.allow_filter.load(Ordering::SeqCst) {
                "true"
            } else {
                "false"
            },
        )
        .env("GIT_CONFIG_KEY_3", "uploadpack.allowRefInWant")
        .env(
            "GIT_CONFIG_VALUE_3",
            if config.ref_in_want.load(Ordering::SeqCst) {
                "true"
            } else {
                "false"
            },
        )
        .env("GIT_PROJECT_ROOT", &config.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "tomoda-promote-test-git-server")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", percent_decode(path))
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REMOTE_PORT", peer.port().to_string())
        // http-backend enables receive-pack (push) only for an
        // authenticated user or with http.receivepack=true.
        .env("REMOTE_USER", remote_user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if config.auth.is_some() {
        command.env("AUTH_TYPE", "Basic");
    }
    if let Some(content_type) = request.header("Content-Type") {
        command.env("CONTENT_TYPE", content_type);
    }
    if let Some(encoding) = request.header("Content-Encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = request.header("Git-Protocol") {
        command
            .env("GIT_PROTOCOL", protocol)
            .env("HTTP_GIT_PROTOCOL", protocol);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `git http-backend` (is git on PATH?): {e}"))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        // Unreachable: all three were piped.
        let _ = child.kill();
        let _ = child.wait();
        return Err("`git http-backend` has no pipes".to_owned());
    };

    let (status, output, errors) = thread::scope(|scope| {
        let writer = scope.spawn(move || {
            // http-backend may stop reading early (e.g. on an error it
            // reports in its output): a broken pipe here is not our error.
            let _ = stdin.write_all(&request.body);
        });
        let out = scope.spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).map(|_| buf)
        });
        let err = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let status = wait_with_deadline(&mut child, CGI_TIMEOUT);
        let _ = writer.join();
        let output = out
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("stdout reader panicked")));
        let errors = err.join().unwrap_or_default();
        (status, output, errors)
    });
    let status = status?;
    let output = output.map_err(|e| format!("reading the output of `git http-backend`: {e}"))?;
    let errors = String::from_utf8_lossy(&errors);
    if !errors.trim().is_empty() {
        eprintln!(
            "git server: {} {}: git http-backend ({status}) said: {}",
            request.method,
            request.target,
            errors.trim_end()
        );
    }
    parse_cgi_output(&output).map_err(|reason| {
        format!(
            "`git http-backend` ({status}) gave no valid CGI response: {reason}; stderr: {errors}"
        )
    })
}

fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`git http-backend` killed after {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for `git http-backend`: {e}"));
            }
        }
    }
}

/// Splits CGI output into status, headers and body.
fn parse_cgi_output(output: &[u8]) -> Result<Response, String> {
    let crlf = find(output, b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = find(output, b"\n\n").map(|i| (i, i + 2));
    let (head_end, body_start) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).ok_or("no blank line after the headers")?,
    };
    let head = std::str::from_utf8(&output[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let mut status = "200 OK".to_owned();
    let mut headers = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("Status") {
            value.clone_into(&mut status);
        } else if !["Content-Length", "Connection", "Transfer-Encoding"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(Response {
        status,
        headers,
        body: output[body_start..].to_vec(),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `%XX` decoding of a URL path (CGI's `PATH_INFO` is decoded); invalid
/// sequences are kept as they are.
fn percent_decode(path: &str) -> OsString {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        OsString::from_vec(out)
    }
    #[cfg(not(unix))]
    {
        OsString::from(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Standard base64 with padding, for the expected `Authorization` token.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// HTTPS for [`GitServer::start_tls`]: terminates TLS and relays the plain bytes to the
/// plain-HTTP server, one backend connection per client connection, polling both sides
/// so that every connection ends when either side closes, the server is dropped, or
/// the CGI deadline passes.
mod tls_front {
    use super::*;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// Read timeout of both sockets of a relayed connection: the relay's poll period.
    const RELAY_POLL: Duration = Duration::from_millis(2);

    pub(super) fn start(
        cert_chain_pem: &str,
        key_pem: &str,
        backend: SocketAddr,
        stop: Arc<AtomicBool>,
    ) -> (SocketAddr, JoinHandle<()>) {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("git server: bad certificate PEM: {e}"));
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .unwrap_or_else(|e| panic!("git server: bad private key PEM: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .unwrap_or_else(|e| panic!("git server: cannot set up TLS: {e}"));
        let config = Arc::new(config);
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("git server: cannot bind 127.0.0.1:0 for TLS: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("git server: no local address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("git server: cannot make the listener nonblocking: {e}"));
        let handle = thread::Builder::new()
            .name(format!("git-server-tls-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &config, backend, &stop))
            .unwrap_or_else(|e| panic!("git server: cannot spawn the TLS accept thread: {e}"));
        (addr, handle)
    }

    fn accept_loop(
        listener: &TcpListener,
        config: &Arc<rustls::ServerConfig>,
        backend: SocketAddr,
        stop: &Arc<AtomicBool>,
    ) {
        let (config, relay_stop) = (Arc::clone(config), Arc::clone(stop));
        serve(listener, stop, "git-server-tls", move |stream, peer| {
            if let Err(e) = relay(&stream, Arc::clone(&config), backend, &relay_stop) {
                eprintln!("git server: TLS connection from {peer}: {e}");
            }
        });
    }

    fn idle(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
        )
    }

    fn relay(
        tcp: &TcpStream,
        config: Arc<rustls::ServerConfig>,
        backend_addr: SocketAddr,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        tcp.set_nonblocking(false)?;
        tcp.set_read_timeout(Some(RELAY_POLL))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut tls = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        let mut backend: Option<TcpStream> = None;
        let mut client_done = false;
        let deadline = Instant::now() + CGI_TIMEOUT + IO_TIMEOUT;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                return Err(io::Error::other(
                    "abandoned: the server is stopping or the connection is too old",
                ));
            }
            // TLS records from the client.
            if !client_done && tls.wants_read() {
                match tls.read_tls(&mut &*tcp) {
                    Ok(0) => client_done = true,
                    Ok(_) => {
                        if let Err(e) = tls.process_new_packets() {
                            // Send our alert, if any, then give up on this connection.
                            let _ = tls.write_tls(&mut &*tcp);
                            return Err(io::Error::other(format!("TLS: {e}")));
                        }
                    }
                    Err(e) if idle(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if backend.is_none() && !tls.is_handshaking() {
                let stream = TcpStream::connect(backend_addr)?;
                stream.set_read_timeout(Some(RELAY_POLL))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                backend = Some(stream);
            }
            // Plain bytes from the client to the backend.
            if let Some(b) = &backend {
                loop {
                    match tls.reader().read(&mut buf) {
                        Ok(0) => {
                            client_done = true;
                            let _ = b.shutdown(Shutdown::Write);
                            break;
                        }
                        Ok(n) => (&mut &*b).write_all(&buf[..n])?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // The client closed without close_notify.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            client_done = true;
                            let _ = b.shutdown(Shutdown::Write);
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if client_done {
                    let _ = b.shutdown(Shutdown::Write);
                }
            }
            // The backend's answer to the client.
            let mut backend_done = false;
            if let Some(b) = &backend {
                match (&mut &*b).read(&mut buf) {
                    Ok(0) => backend_done = true,
                    Ok(n) => tls.writer().write_all(&buf[..n])?,
                    Err(e) if idle(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if backend_done {
                tls.send_close_notify();
            }
            while tls.wants_write() {
                match tls.write_tls(&mut &*tcp) {
                    Ok(_) => {}
                    Err(e) if client_done || backend_done => {
                        let _ = e;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if backend_done {
                let _ = tcp.shutdown(Shutdown::Write);
                return Ok(());
            }
            if client_done && backend.is_none() {
                return Ok(());
            }
        }
    }
}
