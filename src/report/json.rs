//! The result as one JSON object (`--output json`): the documented fields, stable for
//! scripts that read them.

use serde_json::{Value, json};

use crate::argocd::Deployment;
use crate::ordering::Note;
use crate::promote::{Outcome, Promotion};

pub fn to_json(promotion: &Promotion) -> Value {
    to_json_with(promotion, None)
}

/// The result with what Argo CD said after the push (`argocd`), when it was asked.
pub fn to_json_with(promotion: &Promotion, deployment: Option<&Deployment>) -> Value {
    let changes: Vec<Value> = promotion
        .changes
        .iter()
        .map(|c| {
            json!({
                "file": c.file,
                "image": c.image(),
                "field": c.field(),
                "old": c.old,
                "new": c.new,
            })
        })
        .collect();
    let images: Vec<Value> = promotion
        .images
        .iter()
        .map(|v| json!({"image": v.image, "tag": v.tag, "digest": v.digest}))
        .collect();
    let commit = match &promotion.outcome {
        Outcome::Pushed { commit } => Some(commit),
        _ => None,
    };
    let mut out = json!({
        "environment": promotion.environment,
        "repo": promotion.repo,
        "branch": promotion.branch,
        "changes": changes,
        "images": images,
        "commit": commit,
        "pushed": commit.is_some(),
        "up_to_date": promotion.outcome == Outcome::AlreadyUpToDate,
        "attempts": promotion.attempts,
        "plan": promotion.dry_run,
        "skipped": match &promotion.outcome {
            Outcome::Skipped { .. } => Some("older"),
            Outcome::Held { .. } => Some("held"),
            _ => None,
        },
    });
    out["notes"] = promotion
        .notes
        .iter()
        .map(|n| {
            let (Note::Diverged {
                image,
                deployed,
                wanted,
            }
            | Note::Unknowable {
                image,
                deployed,
                wanted,
                ..
            }) = n;
            json!({"kind": n.kind(), "image": image, "deployed": deployed, "wanted": wanted, "message": n.text()})
        })
        .collect();
    if let Outcome::Proposed {
        url,
        number,
        branch,
        commit,
        updated,
        auto_merge,
    } = &promotion.outcome
    {
        out["pull_request"] = json!({
            "url": url, "number": number, "branch": branch, "commit": commit,
            "updated": updated, "auto_merge": auto_merge,
        });
    }
    if let Outcome::Planned {
        request: Some(request),
        ..
    } = &promotion.outcome
    {
        out["planned_request"] = json!({"branch": request.branch, "open": request.open});
    }
    if let Outcome::Held { hold } = &promotion.outcome {
        out["hold"] = json!({
            "reason": hold.reason, "who": hold.who, "since": hold.since,
        });
    }
    if let Some(d) = deployment {
        out["argocd"] = json!({
            "server": d.server,
            "app": d.app,
            "refreshed": d.refreshed,
            "waited": d.waited,
            "revisions": d.revisions,
            "sync": d.sync,
            "health": d.health,
            "deployed": crate::report::github::deployed(d),
            "failure": d.failure,
        });
    }
    if promotion.dry_run {
        let (diff, message) = match &promotion.outcome {
            Outcome::Planned { diff, message, .. } => (Some(diff), Some(message)),
            _ => (None, None),
        };
        out["diff"] = json!(diff);
        out["message"] = json!(message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn verified_images_carry_their_digests() {
        let mut p = fixtures::pushed();
        p.images = vec![fixtures::verified()];
        assert_eq!(
            to_json(&p)["images"],
            json!([{"image": "reg/app", "tag": "v2", "digest": fixtures::DIGEST}])
        );
    }

    #[test]
    fn a_pushed_promotion_has_the_documented_fields() {
        assert_eq!(
            to_json(&fixtures::pushed()),
            json!({
                "environment": "dev",
                "repo": "https://h/devops.git",
                "branch": "main",
                "changes": [{"file": "ov/kustomization.yaml", "image": "reg/app", "field": "newTag", "old": "v1", "new": "v2"}],
                "images": [],
                "commit": "0123456789abcdef",
                "pushed": true,
                "up_to_date": false,
                "attempts": 1,
                "plan": false,
                "skipped": null,
                "notes": [],
            })
        );
    }

    #[test]
    fn a_plan_carries_its_diff_and_message_and_only_a_plan_does() {
        let mut planned = fixtures::pushed();
        planned.dry_run = true;
        planned.outcome = Outcome::Planned {
            diff: "-a\n+b\n".into(),
            message: "promote(dev): app v1 -> v2\n".into(),
            request: None,
        };
        let v = to_json(&planned);
        assert_eq!(
            (v["pushed"].as_bool(), v["plan"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(v["diff"], "-a\n+b\n");
        assert_eq!(v["message"], "promote(dev): app v1 -> v2\n");
        assert!(to_json(&fixtures::pushed()).get("diff").is_none());

        planned.outcome = Outcome::AlreadyUpToDate;
        let v = to_json(&planned);
        assert_eq!(v["up_to_date"], true);
        assert_eq!(v["diff"], Value::Null, "an up-to-date plan has no diff");
    }
}
