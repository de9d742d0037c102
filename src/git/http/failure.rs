//! Which failures are worth another try. libgit2 passes only the text of an error back
//! to its caller, so the stream records what the text cannot carry (retry or not, the
//! hint) in the slot of the call that made the request; `HttpTransport::run` hands it
//! back beside libgit2's error.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;

use super::messages::{Told, causes};
use crate::error::Retry;

/// What the caller needs beyond libgit2's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub hint: String,
    pub retry: Retry,
}

/// The failure of one libgit2 call (fetch, push, ls-remote), shared with its streams.
#[derive(Clone, Default)]
pub(super) struct FailureSlot(Arc<Mutex<Option<Failure>>>);

impl FailureSlot {
    /// Keeps the hint and the retry decision; returns the error libgit2 gets, whose text
    /// is the message.
    pub(super) fn record(&self, told: Told, retry: Retry) -> io::Error {
        let failure = Failure {
            hint: told.hint,
            retry,
        };
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
        io::Error::other(told.message)
    }

    pub(super) fn take(&self) -> Option<Failure> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// HTTP 408, 429 and 5xx may pass on another try (after `Retry-After` when the server
/// said so); any other status will not.
pub(super) fn retry_for_status(status: StatusCode, retry_after: Option<Duration>) -> Retry {
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        Retry::Transient { after: retry_after }
    } else {
        Retry::Never
    }
}

/// No answer at all: a TLS failure stays one; timeouts, refused and reset connections,
/// name resolution may pass on another try.
pub(super) fn retry_for_send_error(error: &reqwest::Error) -> Retry {
    let tls = causes(error)
        .iter()
        .any(|c| c.downcast_ref::<rustls::Error>().is_some());
    if tls {
        Retry::Never
    } else {
        Retry::Transient { after: None }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for git servers and is ignored).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_worth_a_retry() {
        let later = Some(Duration::from_secs(3));
        assert_eq!(
            retry_for_status(StatusCode::TOO_MANY_REQUESTS, later),
            Retry::Transient { after: later }
        );
        for code in [408, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                retry_for_status(status, None),
                Retry::Transient { after: None },
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 407, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(retry_for_status(status, None), Retry::Never, "{code}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn the_slot_hands_the_failure_back_once() {
        let slot = FailureSlot::default();
        let error = slot.record(Told::new("what", "do this"), Retry::Never);
        assert_eq!(error.to_string(), "what");
        assert_eq!(
            slot.take(),
            Some(Failure {
                hint: "do this".into(),
                retry: Retry::Never
            })
        );
        assert_eq!(slot.take(), None);
    }
}
