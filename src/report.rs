//! What the user is told at the end: one place for the result, as text or JSON on stdout.
//! Diagnostics go through tracing on stderr instead.

use serde_json::{Value, json};

use crate::kustomize::Change;
use crate::ordering::Older;
use crate::secrets;

/// The result of a run, whatever it was.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub environment: String,
    pub repo: String,
    pub branch: String,
    pub file: String,
    pub changes: Vec<Change>,
    pub commit: Option<String>,
    pub pushed: bool,
    pub up_to_date: bool,
    pub attempts: u32,
    pub plan: bool,
    /// Set when the new value is older than the deployed one.
    pub skipped: Option<Older>,
    /// With `plan`: the unified diff and the message the commit would have.
    pub diff: Option<String>,
    pub message: Option<String>,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                json!({
                    "file": self.file,
                    "image": c.image,
                    "field": c.field.key(),
                    "old": c.old,
                    "new": c.new,
                })
            })
            .collect();
        let mut out = json!({
            "environment": self.environment,
            "repo": self.repo,
            "branch": self.branch,
            "changes": changes,
            "commit": self.commit,
            "pushed": self.pushed,
            "up_to_date": self.up_to_date,
            "attempts": self.attempts,
            "plan": self.plan,
            "skipped": self.skipped.as_ref().map(|_| "older"),
        });
        if self.plan {
            out["diff"] = json!(self.diff);
            out["message"] = json!(self.message);
        }
        out
    }

    /// `github`: fold the diff into a collapsible group of the Actions log.
    pub fn to_text(&self, github: bool) -> String {
        let mut out = String::new();
        let target = format!("branch {} of {}", self.branch, self.repo);
        if let Some(older) = &self.skipped {
            out.push_str(&format!(
                "{}: skipped: {} stays at {} in {target}: {}; pass --allow-downgrade to promote {} anyway\n",
                self.environment, older.image, older.deployed, older.reason, older.wanted
            ));
            return out;
        }
        if self.up_to_date {
            out.push_str(&format!(
                "{}: already up to date: {} in {target} holds the wanted values\n",
                self.environment, self.file
            ));
            return out;
        }
        if self.plan {
            if let Some(diff) = &self.diff {
                if github {
                    out.push_str(&crate::github::group(
                        &format!("diff of {}", self.file),
                        diff,
                    ));
                } else {
                    out.push_str(diff);
                    if !diff.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
            if let Some(message) = &self.message {
                out.push_str("\ncommit message:\n");
                for line in message.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
            out.push_str(&format!(
                "\nplan only: nothing was committed or pushed to {target}\n"
            ));
            return out;
        }
        out.push_str(&format!("{}: {}\n", self.environment, self.file));
        for c in &self.changes {
            out.push_str(&format!(
                "  {} {}: {} -> {}\n",
                c.image,
                c.field.key(),
                c.old.as_deref().unwrap_or("(none)"),
                c.new.as_deref().unwrap_or("(removed)")
            ));
        }
        if let Some(commit) = &self.commit {
            out.push_str(&format!(
                "pushed {} to {target} (attempt {})\n",
                short_sha(commit),
                self.attempts
            ));
        }
        out
    }
}

/// A commit id as people read it in logs: the first 12 hex digits.
pub fn short_sha(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Prints to stdout, with every registered secret masked.
pub fn print(text: &str) {
    print!("{}", secrets::redact(text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kustomize::Field;

    #[test]
    fn json_has_the_documented_fields() {
        let outcome = Outcome {
            environment: "dev".into(),
            repo: "https://h/devops.git".into(),
            branch: "main".into(),
            file: "ov/kustomization.yaml".into(),
            changes: vec![Change {
                image: "app".into(),
                field: Field::NewTag,
                old: None,
                new: Some("v2".into()),
            }],
            commit: Some("abc".into()),
            pushed: true,
            attempts: 1,
            ..Default::default()
        };
        let v = outcome.to_json();
        for key in [
            "environment",
            "repo",
            "branch",
            "changes",
            "commit",
            "pushed",
            "up_to_date",
            "attempts",
            "plan",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(
            v["changes"][0],
            json!({"file": "ov/kustomization.yaml", "image": "app", "field": "newTag", "old": null, "new": "v2"})
        );
    }
}
