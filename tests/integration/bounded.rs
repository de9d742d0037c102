//! Runs of the binary that cannot hang a test: every child is waited with a deadline,
//! killed past it, and its output kept for the failure message.

#![allow(dead_code)]

use std::io::Read;
use std::process::Child;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::dsl::{Done, Run};

/// How one bounded child ended.
pub struct Ended {
    pub done: Done,
    /// From the start of the wait (the children are spawned just before) to its exit.
    pub elapsed: Duration,
    /// It outlived the deadline and was killed.
    pub killed: bool,
}

impl Ended {
    /// Fails the test if the child had to be killed.
    pub fn finished(&self, what: &str) -> &Done {
        assert!(
            !self.killed,
            "{what} still ran after {:?} and was killed\n--- stdout\n{}\n--- stderr\n{}",
            self.elapsed, self.done.stdout, self.done.stderr
        );
        &self.done
    }
}

/// Runs once, killed after `limit`; fails the test if it had to be killed.
pub fn run(run: Run, limit: Duration) -> (Done, Duration) {
    let (child, cwd) = run.spawn();
    let mut ended = wait_all(vec![child], limit);
    drop(cwd);
    let ended = ended.remove(0);
    ended.finished("tomoda-promote");
    (ended.done, ended.elapsed)
}

struct Waiting {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    ended: Option<(i32, Duration, bool)>,
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        out
    })
}

/// Waits for every child (stdout and stderr piped) until `limit` from now; those still
/// running then are killed and reported with `killed`. Results are in the given order.
pub fn wait_all(children: Vec<Child>, limit: Duration) -> Vec<Ended> {
    let start = Instant::now();
    let mut waiting: Vec<Waiting> = children
        .into_iter()
        .map(|mut child| Waiting {
            stdout: drain(child.stdout.take()),
            stderr: drain(child.stderr.take()),
            child,
            ended: None,
        })
        .collect();
    loop {
        let mut running = 0;
        for w in waiting.iter_mut().filter(|w| w.ended.is_none()) {
            match w.child.try_wait() {
                Ok(Some(status)) => {
                    w.ended = Some((status.code().unwrap_or(-1), start.elapsed(), false));
                }
                Ok(None) => running += 1,
                Err(e) => panic!("cannot wait for a child: {e}"),
            }
        }
        if running == 0 {
            break;
        }
        if start.elapsed() >= limit {
            for w in waiting.iter_mut().filter(|w| w.ended.is_none()) {
                let _ = w.child.kill();
                let _ = w.child.wait();
                w.ended = Some((-1, start.elapsed(), true));
            }
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    waiting
        .into_iter()
        .map(|w| {
            let (code, elapsed, killed) = w.ended.expect("every child ended");
            let text = |h: JoinHandle<Vec<u8>>| {
                String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
            };
            Ended {
                done: Done {
                    code,
                    stdout: text(w.stdout),
                    stderr: text(w.stderr),
                },
                elapsed,
                killed,
            }
        })
        .collect()
}
