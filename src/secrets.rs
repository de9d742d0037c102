//! Every secret the process learns is registered here, and everything it prints (results,
//! errors, log lines) passes through `redact`: a second line of defence behind never
//! formatting a secret in the first place.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

const MASK: &str = "***";

/// Remembers a secret; short values are ignored, masking them would garble ordinary text.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < 4 {
        return;
    }
    // Also as JSON strings escape it, since the JSON result is escaped before it is
    // redacted. (Workflow commands are redacted before they are escaped.)
    let json = serde_json::to_string(secret).unwrap_or_default();
    let forms = [
        secret.to_string(),
        json.get(1..json.len().saturating_sub(1))
            .unwrap_or_default()
            .to_string(),
    ];
    let mut all = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    for form in forms {
        if !form.is_empty() && !all.contains(&form) {
            all.push(form);
        }
    }
    // Longest first, so a secret containing another is masked whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the password of anything shaped `user:password@` in a repo URL, even one
/// mistyped into a local path, before anything shows it.
pub fn register_userinfo(text: &str) {
    let Some(at) = text.find('@') else { return };
    let before = &text[..at];
    let start = before.rfind(['/', ' ']).map_or(0, |i| i + 1);
    if let Some((_, password)) = before[start..].split_once(':') {
        register(password);
    }
}

pub fn redact(text: &str) -> String {
    let all = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = text.to_string();
    for secret in all.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// A writer for tracing-subscriber that redacts each formatted log line before stderr.
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_everywhere() {
        register("ghs_abcdefSECRET");
        register("xy");
        assert_eq!(
            redact("token ghs_abcdefSECRET in https://u:ghs_abcdefSECRET@h/ and xy"),
            "token *** in https://u:***@h/ and xy"
        );
    }
}
