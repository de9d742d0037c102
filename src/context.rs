//! What the build says about itself: the commit and tag being promoted, and the ids that
//! make the devops commit traceable back to the build.
//!
//! Cloud Build passes these only when the step maps its substitutions into the environment
//! (`env:` or `options.automapSubstitutions: true`); GitHub Actions sets its own GITHUB_*.

/// The build's facts; empty values count as absent (Cloud Build maps an unset `$TAG_NAME` to "").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildContext {
    pub commit_sha: Option<String>,
    pub tag_name: Option<String>,
    pub short_sha: Option<String>,
    pub branch_name: Option<String>,
    pub build_id: Option<String>,
    pub project_id: Option<String>,
    pub repo_name: Option<String>,
    /// The app's `owner/repo` on GitHub Actions (GITHUB_REPOSITORY).
    pub github_repository: Option<String>,
    /// The app's `owner/repo` in Cloud Build (REPO_FULL_NAME, for GitHub and Bitbucket
    /// triggers and 2nd-gen repositories).
    pub repo_full_name: Option<String>,
    /// Where the GitHub of an Actions run is (GITHUB_SERVER_URL) and its REST API
    /// (GITHUB_API_URL): github.com, or a GitHub Enterprise Server.
    pub github_server_url: Option<String>,
    pub github_api_url: Option<String>,
    /// Where the build's log is read (GitHub Actions' run page, Cloud Build's console).
    pub log_url: Option<String>,
}

impl BuildContext {
    /// `commit_sha` and `tag_name` come from flags (which clap already filled from
    /// COMMIT_SHA and TAG_NAME); `env` looks up everything else.
    pub fn gather(
        commit_sha: Option<String>,
        tag_name: Option<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let commit_sha = present(commit_sha).or_else(|| get("GITHUB_SHA"));
        let github_tag = || {
            (get("GITHUB_REF_TYPE").as_deref() == Some("tag"))
                .then(|| get("GITHUB_REF_NAME"))
                .flatten()
        };
        let tag_name = present(tag_name).or_else(github_tag);
        let github_branch = || {
            (get("GITHUB_REF_TYPE").as_deref() == Some("branch"))
                .then(|| get("GITHUB_REF_NAME"))
                .flatten()
        };
        let github_build = || {
            get("GITHUB_RUN_ID").map(|id| match get("GITHUB_RUN_ATTEMPT") {
                Some(attempt) => format!("{id}/{attempt}"),
                None => id,
            })
        };
        let github_log = || {
            Some(format!(
                "{}/{}/actions/runs/{}",
                get("GITHUB_SERVER_URL")?.trim_end_matches('/'),
                get("GITHUB_REPOSITORY")?,
                get("GITHUB_RUN_ID")?
            ))
        };
        let cloud_build_log = || {
            let build = get("BUILD_ID")?;
            let project = get("PROJECT_ID")?;
            Some(match get("LOCATION") {
                Some(region) => format!(
                    "https://console.cloud.google.com/cloud-build/builds;region={region}/{build}?project={project}"
                ),
                None => format!(
                    "https://console.cloud.google.com/cloud-build/builds/{build}?project={project}"
                ),
            })
        };
        BuildContext {
            log_url: cloud_build_log().or_else(github_log),
            short_sha: get("SHORT_SHA")
                .or_else(|| commit_sha.as_deref().map(|s| s.chars().take(7).collect())),
            branch_name: get("BRANCH_NAME").or_else(github_branch),
            build_id: get("BUILD_ID").or_else(github_build),
            project_id: get("PROJECT_ID"),
            repo_name: get("REPO_NAME").or_else(|| get("GITHUB_REPOSITORY")),
            github_repository: get("GITHUB_REPOSITORY"),
            repo_full_name: get("REPO_FULL_NAME"),
            github_server_url: get("GITHUB_SERVER_URL"),
            github_api_url: get("GITHUB_API_URL"),
            commit_sha,
            tag_name,
        }
    }

    /// The value of a promote.yaml placeholder, if this build has it.
    pub fn placeholder(&self, name: &str) -> Option<String> {
        match name {
            "commit_sha" => self.commit_sha.clone(),
            "short_sha" => self.short_sha.clone(),
            "tag_name" => self.tag_name.clone(),
            "branch_name" => self.branch_name.clone(),
            _ => None,
        }
    }
}

fn present(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn cloud_build_values_come_from_flags_and_mapped_substitutions() {
        let c = BuildContext::gather(
            Some("4d5e6f7a".into()),
            Some(String::new()),
            env(&[
                ("BUILD_ID", "b-1"),
                ("BRANCH_NAME", "main"),
                ("REPO_NAME", "tomoda"),
            ]),
        );
        assert_eq!(c.commit_sha.as_deref(), Some("4d5e6f7a"));
        assert_eq!(c.tag_name, None, "an empty TAG_NAME is no tag");
        assert_eq!(c.short_sha.as_deref(), Some("4d5e6f7"));
        assert_eq!(c.build_id.as_deref(), Some("b-1"));
    }

    #[test]
    fn the_build_log_is_found_on_either_ci() {
        let actions = BuildContext::gather(
            None,
            None,
            env(&[
                ("GITHUB_SERVER_URL", "https://github.com"),
                ("GITHUB_REPOSITORY", "tomoda/app"),
                ("GITHUB_RUN_ID", "9"),
            ]),
        );
        assert_eq!(
            actions.log_url.as_deref(),
            Some("https://github.com/tomoda/app/actions/runs/9")
        );
        let cloud_build = BuildContext::gather(
            None,
            None,
            env(&[
                ("BUILD_ID", "b-1"),
                ("PROJECT_ID", "p"),
                ("LOCATION", "asia-east1"),
            ]),
        );
        assert_eq!(
            cloud_build.log_url.as_deref(),
            Some(
                "https://console.cloud.google.com/cloud-build/builds;region=asia-east1/b-1?project=p"
            )
        );
        assert_eq!(BuildContext::gather(None, None, env(&[])).log_url, None);
    }

    #[test]
    fn github_actions_values_are_the_fallback() {
        let c = BuildContext::gather(
            None,
            None,
            env(&[
                ("GITHUB_SHA", "abcdef0123"),
                ("GITHUB_REF_TYPE", "tag"),
                ("GITHUB_REF_NAME", "v1.2.3"),
                ("GITHUB_RUN_ID", "9"),
            ]),
        );
        assert_eq!(c.commit_sha.as_deref(), Some("abcdef0123"));
        assert_eq!(c.tag_name.as_deref(), Some("v1.2.3"));
        assert_eq!(c.branch_name, None);
        assert_eq!(c.build_id.as_deref(), Some("9"));
        let branch = BuildContext::gather(
            None,
            None,
            env(&[("GITHUB_REF_TYPE", "branch"), ("GITHUB_REF_NAME", "main")]),
        );
        assert_eq!(
            (branch.tag_name, branch.branch_name.as_deref()),
            (None, Some("main"))
        );
    }
}
