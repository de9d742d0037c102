//! A fault-injecting HTTP proxy of the tests' own, in front of the git server.
//!
//! It listens on 127.0.0.1, reads the head of each request (the git server answers one
//! request per connection, so a connection is a request), asks the test what to do with
//! it, and then forwards it, answers in the server's place, cuts the connection, or goes
//! silent. Every thread polls a stop flag: dropping the proxy ends them all and joins them.
//!
//! [`Blackhole`] is an address where TCP connects never complete, for connect timeouts.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Reads wake up this often to notice that the proxy is being dropped.
const POLL: Duration = Duration::from_millis(20);
/// No connection lives longer than this, whatever it waits for.
const CONNECTION_LIMIT: Duration = Duration::from_secs(120);
/// Limit of a request head.
const MAX_HEAD: usize = 64 * 1024;

/// What the proxy saw of one request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// `/path?query`, as sent.
    pub target: String,
    /// 1-based, over every request the proxy received.
    pub index: usize,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The POST that carries a push's pack.
    pub fn is_push(&self) -> bool {
        self.method == "POST" && self.path().ends_with("/git-receive-pack")
    }
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Pass it to the git server and its answer back.
    Forward,
    /// Answer in the server's place (which never sees the request) with this status line,
    /// e.g. `500 Internal Server Error`, and extra headers.
    Answer {
        status: &'static str,
        headers: Vec<(String, String)>,
        /// Sent as text/plain.
        body: String,
    },
    /// Pass the head and half the body to the server, then reset both connections: an
    /// upload cut in the middle.
    ResetMidUpload,
    /// Pass the whole request, let the server act on it, then reset the client's
    /// connection instead of answering: the request took effect, its answer is lost.
    LoseAnswer,
    /// Read the request and never answer; the connection stays open until the client
    /// gives up or the proxy is dropped.
    Hang,
    /// Pass the whole request, let the server act on it, and never send the answer.
    ForwardThenHang,
    /// Pass the whole request, send the server's answer head and the first half of its
    /// body, then go silent: a read that stalls in the middle of an answer.
    StallAnswer,
}

impl Fault {
    pub fn status(status: &'static str) -> Fault {
        Fault::Answer {
            status,
            headers: Vec::new(),
            body: format!("injected by the test proxy: {status}\n"),
        }
    }

    pub fn too_many_requests(retry_after_seconds: u64) -> Fault {
        Fault::Answer {
            status: "429 Too Many Requests",
            headers: vec![("Retry-After".into(), retry_after_seconds.to_string())],
            body: "injected by the test proxy: slow down\n".into(),
        }
    }
}

type Decide = Box<dyn FnMut(&Request) -> Fault + Send>;

pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    accept_thread: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    decide: Mutex<Decide>,
    count: Mutex<usize>,
}

impl Proxy {
    /// Proxies to `upstream` (the git server's address), deciding each request's fate
    /// with `decide`, called in the order the requests arrive.
    pub fn start(
        upstream: SocketAddr,
        decide: impl FnMut(&Request) -> Fault + Send + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy: local address");
        listener
            .set_nonblocking(true)
            .expect("proxy: nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream,
            stop: Arc::clone(&stop),
            log: Arc::clone(&log),
            decide: Mutex::new(Box::new(decide)),
            count: Mutex::new(0),
        });
        let accept_thread = thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &shared))
            .expect("proxy: spawn the accept thread");
        Proxy {
            addr,
            stop,
            log,
            accept_thread: Some(accept_thread),
        }
    }

    /// Passes everything on.
    pub fn transparent(upstream: SocketAddr) -> Proxy {
        Proxy::start(upstream, |_| Fault::Forward)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{}", self.addr, repo.trim_start_matches('/'))
    }

    /// One `"METHOD /target -> what happened"` line per request, in order.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests the proxy received whose log line contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    /// [`Proxy::count`] once it reaches `at_least`, or after `limit`: a request relayed
    /// without a body length (a HEAD) is logged when its connection ends, which may be
    /// just after the client's process has exited.
    pub fn count_within(&self, needle: &str, at_least: usize, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let count = self.count(needle);
            if count >= at_least || start.elapsed() > limit {
                return count;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.accept_thread.take()
            && handle.join().is_err()
        {
            eprintln!("proxy {}: the accept thread panicked", self.addr);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let handler = Arc::clone(shared);
    crate::git_server::serve(listener, &shared.stop, "proxy", move |stream, _| {
        if let Err(e) = handle(stream, &handler) {
            handler.record(format!("(connection failed: {e})"));
        }
    });
}

impl Shared {
    fn record(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A read that gives up when the proxy stops or the connection is too old, waking every
/// [`POLL`]. `Ok(0)` at end of stream; `Err(TimedOut)` when giving up.
fn read_some(
    stream: &TcpStream,
    buf: &mut [u8],
    shared: &Shared,
    born: Instant,
) -> io::Result<usize> {
    loop {
        match (&mut &*stream).read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if shared.stopping() || born.elapsed() > CONNECTION_LIMIT {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "proxy stopping"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

struct Head {
    bytes: Vec<u8>,
    method: String,
    target: String,
    /// `None` when chunked or unsaid: then the body ends with the client's side.
    content_length: Option<usize>,
    /// Body bytes read together with the head.
    body_start: Vec<u8>,
}

fn read_head(client: &TcpStream, shared: &Shared, born: Instant) -> io::Result<Option<Head>> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if bytes.len() > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        let n = read_some(client, &mut buf, shared, born)?;
        if n == 0 {
            return Ok(None);
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let body_start = bytes.split_off(end);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let content_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    Ok(Some(Head {
        bytes,
        method,
        target,
        content_length,
        body_start,
    }))
}

fn handle(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let born = Instant::now();
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(POLL))?;
    client.set_write_timeout(Some(Duration::from_secs(30)))?;
    let Some(head) = read_head(&client, shared, born)? else {
        return Ok(());
    };
    let request = {
        let mut count = shared.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count += 1;
        Request {
            method: head.method.clone(),
            target: head.target.clone(),
            index: *count,
        }
    };
    let fault = (shared.decide.lock().unwrap_or_else(PoisonError::into_inner))(&request);
    let line = format!("{} {}", request.method, request.target);
    match fault {
        Fault::Forward => {
            forward(&client, &head, shared, born, Delivery::Answer, &line, "")?;
        }
        Fault::Answer {
            status,
            headers,
            body,
        } => {
            read_body(&client, &head, shared, born)?;
            let extra: String = headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect();
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            (&client).write_all(response.as_bytes())?;
            shared.record(format!("{line} -> {status} (injected)"));
            close_politely(&client, shared, born);
        }
        Fault::ResetMidUpload => {
            let upstream = connect_upstream(shared)?;
            (&upstream).write_all(&head.bytes)?;
            let total = head.content_length.unwrap_or(head.body_start.len().max(2));
            let half = (total / 2).max(1);
            let mut sent = head.body_start.len().min(half);
            (&upstream).write_all(&head.body_start[..sent])?;
            let mut buf = [0u8; 8192];
            while sent < half {
                let want = (half - sent).min(buf.len());
                let n = read_some(&client, &mut buf[..want], shared, born)?;
                if n == 0 {
                    break;
                }
                (&upstream).write_all(&buf[..n])?;
                sent += n;
            }
            shared.record(format!(
                "{line} -> reset after {sent} of {total} body bytes (injected)"
            ));
            reset(upstream);
            reset(client);
        }
        Fault::LoseAnswer => {
            let what = " from the server, answer lost by a reset (injected)";
            forward(&client, &head, shared, born, Delivery::Reset, &line, what)?;
        }
        Fault::Hang => {
            shared.record(format!("{line} -> no answer (injected)"));
            read_body(&client, &head, shared, born)?;
            hold(&client, shared, born);
        }
        Fault::ForwardThenHang => {
            let what = " from the server, never delivered (injected)";
            forward(
                &client,
                &head,
                shared,
                born,
                Delivery::Withhold,
                &line,
                what,
            )?;
        }
        Fault::StallAnswer => {
            let what = " from the server, half delivered then stalled (injected)";
            forward(&client, &head, shared, born, Delivery::Half, &line, what)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    Answer,
    Reset,
    Withhold,
    Half,
}

fn connect_upstream(shared: &Shared) -> io::Result<TcpStream> {
    let upstream = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    upstream.set_read_timeout(Some(POLL))?;
    upstream.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(upstream)
}

/// Reads the rest of the request body (per Content-Length) and drops it.
fn read_body(client: &TcpStream, head: &Head, shared: &Shared, born: Instant) -> io::Result<()> {
    let mut left = head
        .content_length
        .unwrap_or(0)
        .saturating_sub(head.body_start.len());
    let mut buf = [0u8; 8192];
    while left > 0 {
        let n = read_some(client, &mut buf[..left.min(8192)], shared, born)?;
        if n == 0 {
            break;
        }
        left -= n;
    }
    Ok(())
}

/// Sends the request to the server and reads its whole answer (the server closes after
/// it); logs `line -> STATUS what`, then delivers the answer, resets the client, or
/// withholds it.
fn forward(
    client: &TcpStream,
    head: &Head,
    shared: &Shared,
    born: Instant,
    delivery: Delivery,
    line: &str,
    what: &str,
) -> io::Result<()> {
    let upstream = connect_upstream(shared)?;
    (&upstream).write_all(&head.bytes)?;
    (&upstream).write_all(&head.body_start)?;
    let mut buf = [0u8; 16384];
    match head.content_length {
        Some(length) => {
            let mut left = length.saturating_sub(head.body_start.len());
            while left > 0 {
                let want = left.min(buf.len());
                let n = read_some(client, &mut buf[..want], shared, born)?;
                if n == 0 {
                    break;
                }
                (&upstream).write_all(&buf[..n])?;
                left -= n;
            }
        }
        None if head.method == "GET" => {}
        None => {
            // A body of unknown length: pass the client's bytes on until it stops sending.
            let status = pump(client, &upstream, shared, born)?;
            shared.record(format!("{line} -> {status} (relayed){what}"));
            return Ok(());
        }
    }
    let mut answer = Vec::new();
    loop {
        let n = read_some(&upstream, &mut buf, shared, born)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    shared.record(format!("{line} -> {}{what}", status_line(&answer)));
    match delivery {
        Delivery::Answer => {
            client.write_all_ref(&answer)?;
            close_politely(client, shared, born);
        }
        Delivery::Reset => reset(client.try_clone()?),
        Delivery::Withhold => hold(client, shared, born),
        Delivery::Half => {
            let head_end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(0, |i| i + 4);
            let half = head_end + (answer.len() - head_end) / 2;
            client.write_all_ref(&answer[..half])?;
            hold(client, shared, born);
        }
    }
    Ok(())
}

/// Both directions at once until the server closes, for bodies of unknown length.
fn pump(
    client: &TcpStream,
    upstream: &TcpStream,
    shared: &Shared,
    born: Instant,
) -> io::Result<String> {
    let mut buf = [0u8; 16384];
    let mut answer_head = Vec::new();
    let mut client_open = true;
    loop {
        if shared.stopping() || born.elapsed() > CONNECTION_LIMIT {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "proxy stopping"));
        }
        if client_open {
            match (&mut &*client).read(&mut buf) {
                Ok(0) => {
                    client_open = false;
                    let _ = upstream.shutdown(Shutdown::Write);
                }
                Ok(n) => (&mut &*upstream).write_all(&buf[..n])?,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        match (&mut &*upstream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if answer_head.len() < 256 {
                    answer_head.extend_from_slice(&buf[..n.min(256)]);
                }
                (&mut &*client).write_all(&buf[..n])?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    close_politely(client, shared, born);
    Ok(status_line(&answer_head))
}

trait WriteAllRef {
    fn write_all_ref(&self, data: &[u8]) -> io::Result<()>;
}

impl WriteAllRef for TcpStream {
    fn write_all_ref(&self, data: &[u8]) -> io::Result<()> {
        (&mut &*self).write_all(data)
    }
}

fn status_line(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(&answer[..answer.len().min(256)]).into_owned();
    text.lines()
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .unwrap_or("(no answer)")
        .trim()
        .to_string()
}

/// Keeps the connection open, reading and dropping whatever comes, until the client
/// closes it or the proxy stops.
fn hold(client: &TcpStream, shared: &Shared, born: Instant) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = read_some(client, &mut buf, shared, born) {
        if n == 0 {
            break;
        }
    }
}

/// After an answer: shut our side, then read until the client closes (briefly), so the
/// kernel does not reset a connection with unread data and destroy the answer.
fn close_politely(client: &TcpStream, shared: &Shared, born: Instant) {
    if client.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match read_some(client, &mut buf, shared, born) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Closes with a TCP reset (RST) instead of an orderly FIN: SO_LINGER with a zero timeout.
pub fn reset(stream: TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    {
        use std::os::fd::AsRawFd;
        use std::os::raw::{c_int, c_void};
        #[repr(C)]
        struct Linger {
            l_onoff: c_int,
            l_linger: c_int,
        }
        unsafe extern "C" {
            fn setsockopt(
                fd: c_int,
                level: c_int,
                name: c_int,
                value: *const c_void,
                len: u32,
            ) -> c_int;
        }
        #[cfg(target_os = "linux")]
        const LEVEL_NAME: (c_int, c_int) = (1, 13); // SOL_SOCKET, SO_LINGER
        #[cfg(target_os = "macos")]
        const LEVEL_NAME: (c_int, c_int) = (0xffff, 0x80);
        let linger = Linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket descriptor owned by `stream`, and a pointer to a live
        // `struct linger` of the size passed.
        let rc = unsafe {
            setsockopt(
                stream.as_raw_fd(),
                LEVEL_NAME.0,
                LEVEL_NAME.1,
                std::ptr::from_ref(&linger).cast(),
                u32::try_from(std::mem::size_of::<Linger>()).expect("small"),
            )
        };
        assert_eq!(
            rc,
            0,
            "setsockopt(SO_LINGER) failed: {}",
            io::Error::last_os_error()
        );
    }
    drop(stream);
}

/// An address on 127.0.0.1 where TCP connects hang: a listener that never accepts, its
/// accept queue filled by connections of our own, so the kernel drops further SYNs.
pub struct Blackhole {
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
    addr: SocketAddr,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("blackhole: bind");
        let addr = listener.local_addr().expect("blackhole: address");
        let mut fillers = Vec::new();
        // Linux queues backlog + 1 connections (std listens with a backlog of 128).
        for _ in 0..4200 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => fillers.push(stream),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Blackhole {
                        _listener: listener,
                        _fillers: fillers,
                        addr,
                    };
                }
                Err(e) => panic!(
                    "blackhole: filling the accept queue failed after {} connections: {e}",
                    fillers.len()
                ),
            }
        }
        panic!("blackhole: the accept queue never filled");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{}", self.addr, repo.trim_start_matches('/'))
    }
}
