//! The one error type: each variant names where the problem is (file and line, URL,
//! branch) and what to do, and maps to a fixed exit code.

use std::fmt;
use std::time::Duration;

/// Exit code for bad flags, config or input: fix the input, a retry will not help.
pub const EXIT_INPUT: u8 = 2;
/// Whether a failed remote operation is worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Authentication, permission, a wrong URL, TLS: retrying cannot help.
    Never,
    /// Timeouts, broken connections, HTTP 408, 429 and 5xx: another try may succeed,
    /// `after` the wait the server asked for, if it did.
    Transient { after: Option<Duration> },
}

impl Retry {
    /// The wait before try `attempt + 1` when the server did not say: exponential backoff
    /// with jitter, 200 ms doubling to 6.4 s, each wait drawn from its upper half, so that
    /// pipelines that failed together do not retry together.
    pub fn backoff(attempt: u32) -> Duration {
        let ceiling = 200u64 << attempt.saturating_sub(1).min(5);
        Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))
    }
}

/// Transient failures one request to a service (registry, forge token endpoint, Argo CD)
/// may have before its error ends the run.
pub const MAX_RETRIES: u32 = 3;
/// The longest wait a server's Retry-After may ask for before we give up instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds or fails for good: a transient failure is tried again
/// up to [`MAX_RETRIES`] times, after the server's Retry-After (one longer than
/// [`MAX_RETRY_AFTER`] ends the run) or [`Retry::backoff`]. `service` names the server in
/// that note; `sleep` waits, so that tests see the waits without waiting.
pub fn with_retries<T>(
    service: &str,
    sleep: &mut dyn FnMut(Duration),
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut failures = 0;
    loop {
        let error = match attempt() {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        let Retry::Transient { after } = error.retry() else {
            return Err(error);
        };
        failures += 1;
        if failures > MAX_RETRIES {
            return Err(error.with_note(&format!("after {failures} tries")));
        }
        let wait = match after {
            Some(asked) if asked > MAX_RETRY_AFTER => {
                return Err(error.with_note(&format!(
                    "{service} asked to retry after {} s, longer than the {} s tomoda-promote waits",
                    asked.as_secs(),
                    MAX_RETRY_AFTER.as_secs()
                )));
            }
            Some(asked) => asked,
            None => Retry::backoff(failures),
        };
        tracing::warn!("{}; retrying in {} ms", error.summary(), wait.as_millis());
        sleep(wait);
    }
}

/// Exit code for everything else (network, auth, a push still refused).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a promotion skipped (older, or held) under `--fail-if-skipped`: nothing
/// failed, but the build asked to go red.
pub const EXIT_SKIPPED: u8 = 3;

#[derive(Debug)]
pub enum Error {
    /// Flags or environment variables are missing or wrong.
    Usage { message: String, hint: String },
    /// A file we read as input (promote.yaml, a kustomization) cannot be used as it is.
    Input {
        file: String,
        line: Option<usize>,
        message: String,
        hint: String,
    },
    /// The remote could not be read from or written to.
    Remote {
        url: String,
        message: String,
        hint: String,
        /// Whether another try may succeed, as the transport judged the failure.
        retry: Retry,
    },
    /// Every attempt to push lost the race against other pushes.
    PushRejected {
        url: String,
        branch: String,
        attempts: u32,
        message: String,
    },
    /// The server refused the push while the branch stayed where it was: a hook or a
    /// branch protection rule said no, in its own words (the `remote:` lines).
    PushRefused {
        url: String,
        branch: String,
        attempts: u32,
        reason: String,
        server_said: Vec<String>,
    },
    /// Local I/O or libgit2 failed on this machine.
    Local { message: String },
    /// Nothing was changed because the promotion was skipped, and `--fail-if-skipped` asks
    /// for a failure.
    Skipped { environment: String, reason: String },
}

impl Error {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn input(
        file: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Input {
            file: file.into(),
            line,
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn local(message: impl Into<String>) -> Self {
        Error::Local {
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. } | Error::Input { .. } => EXIT_INPUT,
            Error::Remote { .. }
            | Error::PushRejected { .. }
            | Error::PushRefused { .. }
            | Error::Local { .. } => EXIT_FAILURE,
            Error::Skipped { .. } => EXIT_SKIPPED,
        }
    }

    /// Whether another try may help; only a remote failure can say yes.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Remote { retry, .. } => *retry,
            _ => Retry::Never,
        }
    }

    /// The same failure, never to be retried: whoever made it has spent its own retries.
    #[must_use]
    pub fn not_retried(self) -> Self {
        match self {
            Error::Remote {
                url, message, hint, ..
            } => Error::Remote {
                url,
                message,
                hint,
                retry: Retry::Never,
            },
            other => other,
        }
    }

    /// Adds a sentence to a remote error's message.
    #[must_use]
    pub fn with_note(self, note: &str) -> Self {
        match self {
            Error::Remote {
                url,
                message,
                hint,
                retry,
            } => Error::Remote {
                url,
                message: format!("{message} ({note})"),
                hint,
                retry,
            },
            other => other,
        }
    }

    /// The one-line summary used by CI annotations.
    pub fn summary(&self) -> String {
        self.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { message, hint } => write!(f, "{message}\n  hint: {hint}"),
            Error::Input {
                file,
                line,
                message,
                hint,
            } => {
                match line {
                    Some(line) => write!(f, "{file}:{line}: {message}")?,
                    None => write!(f, "{file}: {message}")?,
                }
                write!(f, "\n  hint: {hint}")
            }
            Error::Remote {
                url, message, hint, ..
            } => {
                write!(f, "{url}: {message}\n  hint: {hint}")
            }
            Error::PushRejected {
                url,
                branch,
                attempts,
                message,
            } => write!(
                f,
                "{url}: push to branch {branch} still refused after {attempts} attempt(s): {message}\n  hint: nothing was changed on the remote; rerun the step, or raise --max-attempts if many pipelines promote at once"
            ),
            Error::PushRefused {
                url,
                branch,
                attempts,
                reason,
                server_said,
            } => {
                write!(
                    f,
                    "{url}: push to branch {branch} still refused after {attempts} attempt(s): {reason} (the branch did not move: a server hook or branch protection refused the push)"
                )?;
                for line in server_said {
                    write!(f, "\n  remote: {line}")?;
                }
                let why = if server_said.is_empty() {
                    "the server gave no reason: ask its administrators which hook or branch protection rule refuses this push"
                } else {
                    "the remote: lines are the server's reason (a hook or branch protection rule): do what they ask, or let this token push to the branch"
                };
                write!(f, "\n  hint: nothing was changed on the remote; {why}")
            }
            Error::Local { message } => write!(f, "{message}"),
            Error::Skipped {
                environment,
                reason,
            } => write!(
                f,
                "{environment}: skipped: {reason} (--fail-if-skipped)\n  hint: nothing was pushed; the result above says how to promote anyway (--allow-downgrade, unhold), or drop --fail-if-skipped (PROMOTE_FAIL_IF_SKIPPED) to let a skip pass"
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_name_file_line_and_fix_and_exit_2() {
        let e = Error::input(
            "promote.yaml",
            Some(7),
            "unknown key `overlays`",
            "did you mean `overlay`?",
        );
        assert_eq!(
            e.to_string(),
            "promote.yaml:7: unknown key `overlays`\n  hint: did you mean `overlay`?"
        );
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.summary(), "promote.yaml:7: unknown key `overlays`");
    }

    #[test]
    fn a_skip_under_fail_if_skipped_exits_3() {
        let e = Error::Skipped {
            environment: "dev".into(),
            reason: "app stays at v2: version v1 is older than v2".into(),
        };
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.summary(),
            "dev: skipped: app stays at v2: version v1 is older than v2 (--fail-if-skipped)"
        );
    }

    #[test]
    fn runtime_errors_exit_1() {
        let e = Error::Remote {
            url: "https://h/r.git".into(),
            message: "HTTP 401".into(),
            hint: "check GIT_TOKEN".into(),
            retry: Retry::Never,
        };
        assert_eq!(e.exit_code(), 1);
    }
}
