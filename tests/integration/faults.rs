//! Network faults between the binary and the git server, injected by the tests' own proxy
//! (`proxy.rs`): HTTP 500 and 429, a connection reset in the middle of the pack upload,
//! an answer lost after the push landed, a server that stops answering, a connect that
//! never completes. Every run is bounded; each ends in success or exit 1 with a message
//! naming what failed and where, and the branch is either unchanged or holds the whole
//! promotion: one commit, the exact file bytes.

use std::time::Duration;

use crate::bounded;
use crate::dsl::*;
use crate::proxy::{Blackhole, Fault, Proxy, Request};

/// A run still going after this is killed as hung (not a speed check: the slowest, 4
/// timeouts of 2 s, needs about 10 s).
const LIMIT: Duration = Duration::from_secs(60);
/// Transient failures tolerated in one run.
const TRANSIENT_RETRIES: usize = tomoda_promote::promote::MAX_TRANSIENT_FAILURES as usize;

/// Pushes are POSTs to git-receive-pack; everything else passes.
fn on_pushes(
    mut fault: impl FnMut(usize) -> Fault + Send + 'static,
) -> impl FnMut(&Request) -> Fault + Send + 'static {
    let mut pushes = 0;
    move |request| {
        if request.is_push() {
            pushes += 1;
            fault(pushes)
        } else {
            Fault::Forward
        }
    }
}

/// The fault on the first push; everything else goes through.
fn first_push_only(fault: Fault) -> impl FnMut(&Request) -> Fault + Send + 'static {
    let mut fault = Some(fault);
    on_pushes(move |_| fault.take().unwrap_or(Fault::Forward))
}

fn promote_through(proxy_url: &str, extra: &[&str]) -> (Done, Duration) {
    let run = Run::new()
        .config(&tomoda_config(proxy_url))
        .sha(SHA)
        .args(["--output", "json"])
        .args(extra);
    let (done, elapsed) = bounded::run(run, LIMIT);
    eprintln!("run took {elapsed:?}, exit {}\n{}", done.code, done.stderr);
    (done, elapsed)
}

/// The branch holds exactly one new commit on `before`: the whole promotion, the one the
/// JSON names.
fn assert_landed_whole(devops: &Devops, before: &str, done: &Done) {
    let json = done.ok().json();
    assert_eq!(json["pushed"], true);
    assert_eq!(
        json["commit"],
        devops.head(),
        "the reported commit is the tip"
    );
    assert_eq!(
        git(&devops.bare(), &["rev-parse", "main^"]).trim(),
        before,
        "exactly one commit on top of the old tip"
    );
    assert_eq!(devops.commit_count(), 2);
    assert_eq!(devops.file(DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
    assert_eq!(devops.file(PROD), tomoda_file(PROD));
}

fn assert_unchanged(devops: &Devops, before: &str) {
    assert_eq!(devops.head(), before, "the branch did not move");
    assert_eq!(devops.commit_count(), 1);
}

#[test]
fn a_500_on_the_first_push_is_retried_and_lands_whole() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(
        devops.server.addr(),
        first_push_only(Fault::status("500 Internal Server Error")),
    );
    let (done, _) = promote_through(&proxy.url("devops.git"), &[]);
    assert_landed_whole(&devops, &before, &done);
    done.stderr_has("HTTP 500").stderr_has("retrying");
    assert_eq!(done.json()["attempts"], 2);
    assert_eq!(
        proxy.count("POST /devops.git/git-receive-pack"),
        2,
        "{:?}",
        proxy.log()
    );
}

#[test]
fn a_500_on_every_push_exits_1_naming_the_status_and_url_and_changes_nothing() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(
        devops.server.addr(),
        on_pushes(|_| Fault::status("500 Internal Server Error")),
    );
    let (done, _) = promote_through(&proxy.url("devops.git"), &[]);
    done.code(1)
        .stderr_has("HTTP 500")
        .stderr_has(&format!("{}/git-receive-pack", proxy.url("devops.git")));
    assert_eq!(done.stdout, "", "no result on stdout");
    assert_unchanged(&devops, &before);
    assert_eq!(
        proxy.count("POST /devops.git/git-receive-pack"),
        1 + TRANSIENT_RETRIES,
        "bounded retries: {:?}",
        proxy.log()
    );
}

#[test]
fn a_connection_reset_in_the_middle_of_the_upload_is_retried_and_lands_whole() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(devops.server.addr(), first_push_only(Fault::ResetMidUpload));
    let (done, _) = promote_through(&proxy.url("devops.git"), &[]);
    let log = proxy.log();
    assert!(log.iter().any(|l| l.contains("reset after")), "{log:?}");
    // Either outcome keeps the branch whole; with the retry it must have landed.
    if done.code == 0 {
        assert_landed_whole(&devops, &before, &done);
    } else {
        assert_unchanged(&devops, &before);
    }
    done.ok().stderr_has("retrying");
}

#[test]
fn a_reset_on_every_upload_exits_1_and_changes_nothing() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(devops.server.addr(), on_pushes(|_| Fault::ResetMidUpload));
    let (done, _) = promote_through(&proxy.url("devops.git"), &[]);
    done.code(1)
        .stderr_has(&format!("{}/git-receive-pack", proxy.url("devops.git")));
    assert_unchanged(&devops, &before);
    assert_eq!(
        proxy.count("reset after"),
        1 + TRANSIENT_RETRIES,
        "{:?}",
        proxy.log()
    );
}

#[test]
fn a_push_that_landed_but_whose_answer_was_lost_is_reported_as_pushed_once() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(devops.server.addr(), first_push_only(Fault::LoseAnswer));
    let (done, _) = promote_through(&proxy.url("devops.git"), &[]);
    assert_landed_whole(&devops, &before, &done);
    assert_eq!(
        proxy.count("POST /devops.git/git-receive-pack"),
        1,
        "no second push once the fetch shows ours landed: {:?}",
        proxy.log()
    );
}

#[test]
fn a_push_that_landed_but_whose_answer_never_came_is_reported_as_pushed_once() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(
        devops.server.addr(),
        first_push_only(Fault::ForwardThenHang),
    );
    let (done, elapsed) = promote_through(&proxy.url("devops.git"), &["--timeout", "2"]);
    assert_landed_whole(&devops, &before, &done);
    done.stderr_has("within 2s");
    assert_eq!(
        proxy.count("POST /devops.git/git-receive-pack"),
        1,
        "{:?}",
        proxy.log()
    );
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn a_server_that_stops_answering_times_out_and_exits_1() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(devops.server.addr(), |_| Fault::Hang);
    let (done, elapsed) = promote_through(&proxy.url("devops.git"), &["--timeout", "2"]);
    done.code(1).stderr_has(&format!(
        "no answer from {}/info/refs?service=git-upload-pack within 2s",
        proxy.url("devops.git")
    ));
    assert_unchanged(&devops, &before);
    assert_eq!(
        proxy.count("no answer (injected)"),
        1 + TRANSIENT_RETRIES,
        "{:?}",
        proxy.log()
    );
    assert!(
        elapsed >= Duration::from_secs(2 * (1 + TRANSIENT_RETRIES as u64)),
        "{elapsed:?}"
    );
}

#[test]
fn an_answer_that_stalls_halfway_times_out_and_exits_1() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(devops.server.addr(), |request| {
        if request.method == "POST" {
            Fault::StallAnswer
        } else {
            Fault::Forward
        }
    });
    let (done, _) = promote_through(&proxy.url("devops.git"), &["--timeout", "2"]);
    done.code(1).stderr_has(&format!(
        "no complete answer from {}/git-upload-pack within 2s",
        proxy.url("devops.git")
    ));
    assert_eq!(
        proxy.count("half delivered then stalled"),
        1 + TRANSIENT_RETRIES,
        "{:?}",
        proxy.log()
    );
    assert_unchanged(&devops, &before);
}

#[test]
fn a_connect_that_never_completes_times_out_and_exits_1() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let hole = Blackhole::start();
    let url = hole.url("devops.git");
    let (done, elapsed) = promote_through(&url, &["--timeout", "2"]);
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    done.code(1)
        .stderr_has(&format!("could not connect to {host} within "));
    assert_unchanged(&devops, &before);
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn a_429_with_retry_after_is_waited_out_then_lands() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(devops.server.addr(), |request| {
        if request.index <= 2 {
            Fault::too_many_requests(1)
        } else {
            Fault::Forward
        }
    });
    let (done, elapsed) = promote_through(&proxy.url("devops.git"), &[]);
    assert_landed_whole(&devops, &before, &done);
    done.stderr_has("HTTP 429");
    assert_eq!(
        proxy.count("429 Too Many Requests (injected)"),
        2,
        "{:?}",
        proxy.log()
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "two Retry-After: 1 waits, took {elapsed:?}"
    );
}

#[test]
fn a_retry_after_longer_than_30_seconds_fails_at_once() {
    let devops = Devops::tomoda();
    let before = devops.head();
    let proxy = Proxy::start(devops.server.addr(), |_| Fault::too_many_requests(3600));
    let (done, _) = promote_through(&proxy.url("devops.git"), &[]);
    done.code(1)
        .stderr_has("HTTP 429")
        .stderr_has("the server asked to retry after 3600 s")
        .stderr_has(&proxy.url("devops.git"));
    assert_unchanged(&devops, &before);
    assert_eq!(proxy.count("429"), 1, "{:?}", proxy.log());
}
