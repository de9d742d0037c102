//! Hostile and broken input: a corpus of cases, each run through the built binary against
//! the real git server, each with its expected outcome. A case is either edited correctly
//! (the exact bytes, and what `kubectl kustomize` renders where quoting matters) or refused
//! with exit 2 and a message naming the file, the line where one applies, and what to do.
//! Never a crash, never a push when refused.
//!
//! Cases run in a loop inside a few tests; a failing case reports its own name, and every
//! case of a group runs even when one fails.
//!
//! `TOMODA_WRITE_FUZZ_SEEDS=1 cargo test --test integration hostile` also writes each
//! kustomization and image into fuzz/corpus/set_image/, the fuzzers' seed corpus.

use std::path::Path;

use crate::dsl::*;

const OVERLAY: &str = "k8s/apps/tomoda/overlays/dev";
const TAG: &str = "v2.0.0";

/// What a path of the devops repository holds.
enum Content {
    Bytes(Vec<u8>),
    /// A symbolic link to this target, committed as a link.
    Link(&'static str),
}

/// How the binary is told what to do; `{URL}` becomes the devops repository's URL.
enum How {
    /// `--repo {URL} --overlay OVERLAY --image SPEC` and these extra arguments.
    Image(String, Vec<String>),
    /// promote.yaml and the environment.
    Config(String, Vec<(&'static str, String)>),
}

enum Expect {
    /// Exit 0, one commit that changes only DEV, to exactly these bytes; `render` is the
    /// `image:` that `kubectl kustomize` of the overlay must then show.
    Edited {
        bytes: Vec<u8>,
        render: Option<String>,
    },
    /// Exit 2, stderr has every needle (file, line, problem, hint), the branch unchanged.
    Refused(Vec<String>),
    /// Exit 0, "already up to date", the branch unchanged.
    Unchanged,
}

struct Case {
    name: &'static str,
    files: Vec<(String, Content)>,
    /// A repository with no commit at all.
    empty_repo: bool,
    /// The kustomization the binary should edit.
    edited: String,
    how: How,
    expect: Expect,
}

impl Case {
    /// The tomoda layout with DEV holding `dev`, promoted with `--image IMAGE:TAG`.
    fn dev(name: &'static str, dev: impl Into<Vec<u8>>) -> Case {
        let mut files: Vec<(String, Content)> = tomoda_files()
            .into_iter()
            .filter(|(p, _)| *p != DEV)
            .map(|(p, c)| (p.to_string(), Content::Bytes(c.into_bytes())))
            .collect();
        files.push((DEV.to_string(), Content::Bytes(dev.into())));
        Case {
            name,
            files,
            empty_repo: false,
            edited: DEV.to_string(),
            how: How::Image(format!("{IMAGE}:{TAG}"), Vec::new()),
            expect: Expect::Refused(Vec::new()),
        }
    }

    fn file(mut self, path: &str, content: Content) -> Case {
        self.files.retain(|(p, _)| p != path);
        self.files.push((path.to_string(), content));
        self
    }

    fn without(mut self, path: &str) -> Case {
        self.files.retain(|(p, _)| p != path);
        self
    }

    /// The kustomization is `path` instead of DEV.
    fn editing(mut self, path: &str) -> Case {
        self.edited = path.to_string();
        self
    }

    fn image(mut self, spec: &str) -> Case {
        self.how = How::Image(spec.to_string(), Vec::new());
        self
    }

    fn args(mut self, args: &[&str]) -> Case {
        if let How::Image(_, extra) = &mut self.how {
            extra.extend(args.iter().map(std::string::ToString::to_string));
        }
        self
    }

    fn config(mut self, config: String, env: &[(&'static str, &str)]) -> Case {
        let env = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.how = How::Config(config, env);
        self
    }

    /// Edited to `bytes`; `render`: the tag `kubectl kustomize` must show for IMAGE.
    fn edits(mut self, bytes: impl Into<Vec<u8>>, render: Option<&str>) -> Case {
        self.expect = Expect::Edited {
            bytes: bytes.into(),
            render: render.map(|tag| format!("image: {IMAGE}:{tag}")),
        };
        self
    }

    fn unchanged(mut self) -> Case {
        self.expect = Expect::Unchanged;
        self
    }

    fn refused(mut self, needles: &[&str]) -> Case {
        self.expect = Expect::Refused(
            needles
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        );
        self
    }
}

/// The tomoda dev overlay with `images:` as given (resources first, so it renders).
fn dev_images(images: &str) -> String {
    format!("resources:\n  - ../../base\n{images}")
}

/// `DEV:line:`, the start of an error about a line of the dev kustomization.
fn at(line: usize) -> String {
    format!("{DEV}:{line}: ")
}

/// Runs a group of cases, each isolated; fails naming every case that failed.
fn run_all(cases: Vec<Case>) {
    let mut failed = Vec::new();
    for case in cases {
        let name = case.name;
        write_seed(&case);
        if let Err(panic) = std::panic::catch_unwind(|| run_case(&case)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    panic
                        .downcast_ref::<&str>()
                        .map(std::string::ToString::to_string)
                })
                .unwrap_or_default();
            failed.push(format!("case `{name}`: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

fn run_case(case: &Case) {
    let devops = Devops::empty();
    if !case.empty_repo {
        commit_contents(&devops, &case.files);
    }
    let head = (!case.empty_repo).then(|| devops.head());
    let url = devops.url();
    let run = match &case.how {
        How::Image(spec, extra) => {
            let overlay =
                (!extra.iter().any(|a| a == "--overlay")).then_some(["--overlay", OVERLAY]);
            Run::new()
                .args(["--repo", &url, "--image", spec])
                .args(overlay.into_iter().flatten())
                .args(extra.iter().map(|a| a.replace("{URL}", &url)))
        }
        How::Config(config, env) => env.iter().fold(
            Run::new().config(&config.replace("{URL}", &url)),
            |run, (k, v)| run.env(k, v),
        ),
    };
    let done = run.run();
    assert!(
        [0, 1, 2].contains(&done.code) && !done.stderr.contains("panicked"),
        "crashed with exit {}:\n{}",
        done.code,
        done.stderr
    );
    match &case.expect {
        Expect::Refused(needles) => {
            done.code(2).stderr_has("\n  hint: ");
            for needle in needles {
                done.stderr_has(needle);
            }
            if let Some(head) = head {
                assert_eq!(devops.head(), head, "refused, yet the branch moved");
            }
        }
        Expect::Unchanged => {
            done.ok().stdout_has("already up to date");
            assert_eq!(
                Some(devops.head()),
                head,
                "up to date, yet the branch moved"
            );
        }
        Expect::Edited { bytes, render } => {
            done.ok();
            let head = head.expect("a case that edits has a repository");
            assert_eq!(
                git(&devops.bare(), &["rev-parse", "main^"]).trim(),
                head,
                "not one commit on top of the old head"
            );
            let changed = git(&devops.bare(), &["diff", "--name-only", "main^", "main"]);
            assert_eq!(changed.trim(), case.edited, "other files changed");
            let now = blob(&devops, &case.edited);
            assert!(
                now == *bytes,
                "the edited file differs\n--- expected\n{}\n--- got\n{}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&now)
            );
            if let Some(image) = render {
                let checkout = devops.checkout();
                let rendered = kustomize_render(checkout.path(), OVERLAY);
                assert!(
                    rendered.contains(&format!("{image}\n")),
                    "kubectl kustomize does not render {image:?}:\n{rendered}"
                );
            }
        }
    }
}

/// A file of main as bytes (`Devops::file` reads it as text).
fn blob(devops: &Devops, path: &str) -> Vec<u8> {
    let out = std::process::Command::new("git")
        .args(["cat-file", "blob", &format!("main:{path}")])
        .current_dir(devops.bare())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "no {path} on main");
    out.stdout
}

/// One commit of `files` (bytes and symbolic links, as the git CLI commits them) on main.
fn commit_contents(devops: &Devops, files: &[(String, Content)]) {
    let work = tempfile::tempdir().expect("temp dir");
    git(work.path(), &["init", "-q", "-b", "main", "."]);
    git(work.path(), &["config", "core.autocrlf", "false"]);
    git(work.path(), &["config", "core.symlinks", "true"]);
    for (path, content) in files {
        let full = work.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        match content {
            Content::Bytes(bytes) => std::fs::write(&full, bytes).unwrap(),
            Content::Link(target) => std::os::unix::fs::symlink(target, &full).unwrap(),
        }
    }
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "hostile fixture"]);
    git(
        work.path(),
        &["push", "-q", devops.bare().to_str().unwrap(), "main"],
    );
}

/// With TOMODA_WRITE_FUZZ_SEEDS set, the case becomes seeds of the fuzz targets: its
/// kustomization and image for set_image (the edit on the first line, then the file, as
/// fuzz/src/lib.rs reads it), its `--image` for parse_spec, its promote.yaml for
/// config_parse.
fn write_seed(case: &Case) {
    if std::env::var_os("TOMODA_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("hostile-{}", case.name)), bytes).unwrap();
    };
    let spec = match &case.how {
        How::Image(spec, _) => {
            write("parse_spec", spec.as_bytes());
            tomoda_promote::image::parse_spec(spec).ok()
        }
        How::Config(config, _) => {
            write("config_parse", config.as_bytes());
            None
        }
    };
    let spec = spec.unwrap_or_else(|| tomoda_promote::kustomize::ImageSpec {
        name: IMAGE.into(),
        new_name: None,
        new_tag: Some(TAG.into()),
        digest: None,
        ..tomoda_promote::kustomize::ImageSpec::default()
    });
    let Some((_, Content::Bytes(kustomization))) =
        case.files.iter().find(|(p, _)| *p == case.edited)
    else {
        return;
    };
    if kustomization.len() > 64 << 10 {
        return;
    }
    let field = |v: &Option<String>| {
        v.as_deref().map_or("~".to_string(), |v| {
            v.replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('\r', "\\r")
                .replace('\t', "\\t")
        })
    };
    let mut seed = format!(
        "{}\t{}\t{}\t{}\n",
        field(&Some(spec.name.clone())),
        field(&spec.new_name),
        field(&spec.new_tag),
        field(&spec.digest)
    )
    .into_bytes();
    seed.extend_from_slice(kustomization);
    write("set_image", &seed);
}

fn entry(tag_line: &str) -> String {
    dev_images(&format!("images:\n  - name: {IMAGE}\n    {tag_line}\n"))
}

#[test]
fn broken_yaml_is_refused_with_file_line_and_fix() {
    let digest = format!("sha256:{}", "c".repeat(64));
    run_all(vec![
        Case::dev("invalid_yaml", entry("newTag: [oops")).refused(&[
            &format!("{DEV}:"),
            "invalid YAML",
            "fix the YAML syntax",
        ]),
        Case::dev(
            "duplicate_keys_in_an_entry",
            entry("newTag: v1\n    newTag: v1.1"),
        )
        .refused(&[&at(6), "the key `newTag` appears twice", "remove one"]),
        Case::dev(
            "duplicate_top_level_keys",
            format!("images: []\n{}", entry("newTag: v1")),
        )
        .refused(&[&at(4), "the key `images` appears twice"]),
        Case::dev(
            "null_and_tilde_are_one_key",
            format!("~: a\nnull: b\n{}", entry("newTag: v1")),
        )
        .refused(&[&at(2), "appears twice"]),
        Case::dev(
            "alias_in_images",
            format!(
                "x-base: &img {{name: {IMAGE}, newTag: v1}}\n{}",
                dev_images("images:\n  - *img\n")
            ),
        )
        .refused(&[&at(5), "alias", "write the entry out in full"]),
        Case::dev(
            "merge_key_in_an_entry",
            format!(
                "x-base: &tag {{newTag: v1}}\n{}",
                dev_images(&format!("images:\n  - name: {IMAGE}\n    <<: *tag\n"))
            ),
        )
        .refused(&[&at(6), "alias"]),
        Case::dev(
            "tab_indentation",
            entry("newTag: v1").replace("    newTag", "\tnewTag"),
        )
        .refused(&[&format!("{DEV}:"), "invalid YAML"]),
        Case::dev(
            "multi_document_file",
            format!("{}---\nimages: []\n", entry("newTag: v1")),
        )
        .refused(&[&at(7), "2 YAML documents", "remove the extra `---`"]),
        Case::dev("top_level_list", "- resources\n- images\n").refused(&[&at(1), "not a mapping"]),
        Case::dev("document_is_null", "~\n").refused(&[&at(1), "`null`"]),
        Case::dev("images_is_a_mapping", dev_images("images: {}\n"))
            .refused(&[&at(3), "`images:` is a mapping, expected a list"]),
        Case::dev(
            "images_is_a_string",
            dev_images(&format!("images: {IMAGE}\n")),
        )
        .refused(&[&at(3), "`images:` is a scalar"]),
        Case::dev(
            "entry_is_a_string",
            dev_images(&format!("images:\n  - {IMAGE}:v1\n")),
        )
        .refused(&[&at(4), "expected a mapping with `name:`"]),
        Case::dev("block_scalar_tag", entry("newTag: |\n      v1"))
            .refused(&[&at(5), "not a one-line string"]),
        Case::dev("folded_plain_tag", entry("newTag: v1\n      continued"))
            .refused(&[&at(5), "not a one-line string"]),
        Case::dev("tagged_tag_value", entry("newTag: !!str v1")).refused(&[
            &at(5),
            "not a one-line string",
            "without tags",
        ]),
        Case::dev(
            "two_entries_for_the_image",
            format!("{}  - name: {IMAGE}\n    newTag: v0\n", entry("newTag: v1")),
        )
        .refused(&[&at(6), "a second `images:` entry", "line 4"]),
        Case::dev(
            "complex_key",
            format!("? [a, b]\n: c\n{}", entry("newTag: v1")),
        )
        .refused(&[&at(1), "complex key"]),
        Case::dev(
            "deeply_nested",
            format!("{}x-deep:\n{}\n", entry("newTag: v1"), "- ".repeat(10_000)),
        )
        .refused(&[&at(7), "nested more than 200 levels"]),
        Case::dev(
            "deep_flow_nesting",
            format!(
                "{}x-deep: {}{}\n",
                entry("newTag: v1"),
                "[".repeat(5_000),
                "]".repeat(5_000)
            ),
        )
        .refused(&[&format!("{DEV}:"), "invalid YAML"]),
        Case::dev(
            "flow_style_file_without_images",
            "{resources: [../../base]}\n",
        )
        .refused(&[&at(1), "flow style", "add `images: []`"]),
        Case::dev(
            "digest_in_a_block_scalar",
            format!("{}    digest: >-\n      {digest}\n", entry("newTag: v1")),
        )
        .refused(&[&at(6), "not a one-line string"]),
    ]);
}

#[test]
fn bytes_yaml_does_not_allow_are_refused() {
    let tagged = entry("newTag: v1");
    let mut cp1252 = b"# \xdcbersicht f\xfcr dev\n".to_vec();
    cp1252.extend_from_slice(tagged.as_bytes());
    let mut utf16 = vec![0xff, 0xfe];
    for unit in tagged.encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mut latin1_value = tagged.clone().into_bytes();
    latin1_value.extend_from_slice(b"    # caf\xe9\n");
    run_all(vec![
        Case::dev("windows_1252_comment", cp1252).refused(&[
            &at(1),
            "is not UTF-8 text (byte 0xdc",
            "save the file as UTF-8",
        ]),
        Case::dev("latin1_in_the_last_line", latin1_value).refused(&[
            &at(6),
            "is not UTF-8",
            "save the file as UTF-8",
        ]),
        Case::dev("utf16_with_bom", utf16).refused(&[&at(1), "is not UTF-8"]),
        Case::dev("nul_byte", format!("{tagged}\0\nimages: []\n"))
            .refused(&[&at(6), "control character U+0000"]),
        Case::dev("escape_character", format!("{tagged}# \x1b[31mred\n"))
            .refused(&[&at(6), "control character U+001B"]),
        Case::dev("lone_carriage_returns", tagged.replace('\n', "\r")).refused(&[
            &at(1),
            "carriage return",
            "LF or CRLF",
        ]),
        Case::dev("fifty_megabytes", {
            let mut big = tagged.clone();
            let line = format!("# {}\n", "padding ".repeat(15));
            while big.len() < 50 << 20 {
                big.push_str(&line);
            }
            big
        })
        .refused(&[
            &format!("{DEV}: is 5"),
            "bytes; kustomizations over 4194304 bytes are refused",
        ]),
    ]);
}

#[test]
fn odd_but_valid_files_are_edited_byte_for_byte() {
    let old = entry(&format!("newTag: \"{OLD_SHA}\" # set by CI"));
    let new_line = |from: &str, to: &str, text: &str| -> String {
        assert!(text.contains(from), "{from:?} not in {text:?}");
        text.replacen(from, to, 1)
    };
    let digest = format!("sha256:{}", "d".repeat(64));
    let comments = format!(
        "# top\nresources: # r\n  # between\n  - ../../base # base\n# before images\nimages: # the list\n  # first entry\n  - name: {IMAGE} # backend\n    # the tag\n    newTag: v1 # by CI\n    # after\n# end\n"
    );
    let long_comment = format!("# {}\n{}", "x".repeat(1 << 20), entry("newTag: v1"));
    let mut many = dev_images("images:\n");
    for i in 0..5_000 {
        many.push_str(&format!(
            "  - name: reg.example/team/app-{i}\n    newTag: t{i}\n"
        ));
    }
    let many_before = format!("{many}  - name: {IMAGE}\n    newTag: v1\n");
    let yml = format!("{OVERLAY}/kustomization.yml");
    let capital = format!("{OVERLAY}/Kustomization");
    run_all(vec![
        Case::dev("crlf_line_endings", old.replace('\n', "\r\n")).edits(
            old.replace(OLD_SHA, TAG).replace('\n', "\r\n"),
            Some(TAG),
        ),
        Case::dev("byte_order_mark", format!("\u{feff}{old}"))
            .edits(format!("\u{feff}{}", old.replace(OLD_SHA, TAG)), Some(TAG)),
        Case::dev("bom_and_crlf_and_no_images", "\u{feff}resources:\r\n- ../../base")
            .edits(
                format!("\u{feff}resources:\r\n- ../../base\r\nimages:\r\n- name: {IMAGE}\r\n  newTag: {TAG}"),
                Some(TAG),
            ),
        Case::dev("tabs_in_comments_and_after_values", entry("newTag: v1\t\t# tab\t"))
            .edits(entry(&format!("newTag: {TAG}\t\t# tab\t")), Some(TAG)),
        Case::dev("comments_everywhere", comments.clone())
            .edits(new_line("newTag: v1 #", &format!("newTag: {TAG} #"), &comments), Some(TAG)),
        Case::dev("unicode_around_the_value", entry("newTag: v1 # 日本語 ü 🚀"))
            .edits(entry(&format!("newTag: {TAG} # 日本語 ü 🚀")), Some(TAG)),
        Case::dev("quoted_keys", dev_images(&format!("images:\n  - \"name\": '{IMAGE}'\n    \"newTag\": 'v1'\n")))
            .edits(dev_images(&format!("images:\n  - \"name\": '{IMAGE}'\n    \"newTag\": '{TAG}'\n")), Some(TAG)),
        Case::dev("flow_style_images", dev_images(&format!("images: [{{name: {IMAGE}, newTag: v1}}]\n")))
            .edits(dev_images(&format!("images: [{{name: {IMAGE}, newTag: {TAG}}}]\n")), Some(TAG)),
        Case::dev("flow_style_file", format!("{{resources: [../../base], images: [{{name: {IMAGE}, newTag: v1}}]}}\n"))
            .edits(format!("{{resources: [../../base], images: [{{name: {IMAGE}, newTag: {TAG}}}]}}\n"), Some(TAG)),
        Case::dev("images_tilde", dev_images("images: ~ # none yet\n"))
            .edits(dev_images(&format!("images: # none yet\n  - name: {IMAGE}\n    newTag: {TAG}\n")), Some(TAG)),
        Case::dev("images_empty_flow_list", dev_images("images: []\n"))
            .edits(dev_images(&format!("images: [{{name: {IMAGE}, newTag: {TAG}}}]\n")), Some(TAG)),
        Case::dev("document_end_marker", format!("{}...\n", entry("newTag: v1")))
            .edits(format!("{}...\n", entry(&format!("newTag: {TAG}"))), Some(TAG)),
        Case::dev("document_end_marker_without_images", dev_images("...\n# after the end\n"))
            .edits(dev_images(&format!("images:\n  - name: {IMAGE}\n    newTag: {TAG}\n...\n# after the end\n")), Some(TAG)),
        Case::dev("document_start_marker", format!("---\n{}", entry("newTag: v1")))
            .edits(format!("---\n{}", entry(&format!("newTag: {TAG}"))), Some(TAG)),
        Case::dev("no_final_newline", entry("newTag: v1").trim_end().to_string())
            .edits(entry(&format!("newTag: {TAG}")).trim_end().to_string(), Some(TAG)),
        Case::dev("empty_file", "").edits(format!("images:\n- name: {IMAGE}\n  newTag: {TAG}\n"), None),
        Case::dev("only_comments", "# nothing here yet\n")
            .edits(format!("# nothing here yet\nimages:\n- name: {IMAGE}\n  newTag: {TAG}\n"), None),
        Case::dev("very_long_comment_line", long_comment.clone())
            .edits(long_comment.replace("newTag: v1", &format!("newTag: {TAG}")), Some(TAG)),
        Case::dev("five_thousand_other_entries", many_before.clone())
            .edits(new_line("newTag: v1\n", &format!("newTag: {TAG}\n"), &many_before), Some(TAG)),
        Case::dev("dash_with_two_spaces", dev_images("images:\n  -  name: reg.example/other\n     newTag: a\n"))
            .edits(dev_images(&format!("images:\n  -  name: reg.example/other\n     newTag: a\n  -  name: {IMAGE}\n     newTag: {TAG}\n")), Some(TAG)),
        Case::dev("old_digest_is_dropped", entry(&format!("newTag: v1\n    digest: {digest} # pinned")))
            .edits(entry(&format!("newTag: {TAG}")), Some(TAG)),
        Case::dev("kustomization_yml_name", "")
            .without(DEV)
            .file(&yml, Content::Bytes(entry("newTag: v1").into_bytes()))
            .editing(&yml)
            .edits(entry(&format!("newTag: {TAG}")), Some(TAG)),
        Case::dev("capital_kustomization_name", "")
            .without(DEV)
            .file(&capital, Content::Bytes(entry("newTag: v1").into_bytes()))
            .editing(&capital)
            .edits(entry(&format!("newTag: {TAG}")), Some(TAG)),
        Case::dev("dot_in_a_name_matches_only_itself", dev_images("images:\n  - name: reg.example/aXb\n    newTag: a\n"))
            .image("reg.example/a.b:v2")
            .edits(dev_images("images:\n  - name: reg.example/aXb\n    newTag: a\n  - name: reg.example/a.b\n    newTag: v2\n"), None),
        Case::dev("registry_port_in_the_name", dev_images("images:\n  - name: localhost:5000/app\n    newTag: a\n"))
            .image("localhost:5000/app:v2")
            .edits(dev_images("images:\n  - name: localhost:5000/app\n    newTag: v2\n"), None),
        Case::dev("already_up_to_date", entry(&format!("newTag: \"{TAG}\" # quoted"))).unchanged(),
    ]);
}

/// Cases whose value YAML would read as something else unless quoted: what
/// `kubectl kustomize` renders is the check, as the quoting of a plain scalar decides it.
#[test]
fn number_like_and_keyword_tags_render_as_strings() {
    let plain = entry("newTag: v1");
    let single = entry("newTag: 'v1'");
    let cases = [
        ("all_digit_short_sha", "1234567", "\"1234567\""),
        ("float_like_tag", "1.10", "\"1.10\""),
        ("octal_like_tag", "0123", "\"0123\""),
        ("exponent_like_tag", "1e3", "\"1e3\""),
        ("keyword_true_tag", "true", "\"true\""),
        ("keyword_null_tag", "null", "\"null\""),
        ("yaml11_yes_tag", "yes", "\"yes\""),
        ("yaml11_on_tag", "On", "\"On\""),
    ];
    let mut all: Vec<Case> = cases
        .iter()
        .map(|(name, tag, written)| {
            Case::dev(name, plain.clone())
                .image(&format!("{IMAGE}:{tag}"))
                .edits(entry(&format!("newTag: {written}")), Some(tag))
        })
        .collect();
    all.push(
        Case::dev("float_like_tag_in_single_quotes", single)
            .image(&format!("{IMAGE}:1.10"))
            .edits(entry("newTag: '1.10'"), Some("1.10")),
    );
    all.push(
        Case::dev("number_like_old_value_plain", entry("newTag: 1.9"))
            .image(&format!("{IMAGE}:1.10"))
            .edits(entry("newTag: \"1.10\""), Some("1.10")),
    );
    all.push(
        Case::dev("all_digit_commit_sha", plain)
            .config(
                tomoda_config("{URL}"),
                &[("COMMIT_SHA", "1234567890123456789012345678901234567890")],
            )
            .edits(
                entry("newTag: \"1234567890123456789012345678901234567890\""),
                Some("1234567890123456789012345678901234567890"),
            ),
    );
    run_all(all);
}

#[test]
fn hostile_flags_names_and_paths_are_refused() {
    let ok = || Case::dev("", entry("newTag: v1"));
    let named = |name: &'static str| Case { name, ..ok() };
    run_all(vec![
        named("overlay_climbs_out").args(&["--overlay", "k8s/../../etc"])
            .refused(&["overlay `k8s/../../etc` climbs out with `..`", "a path inside the devops repository"]),
        named("overlay_absolute").args(&["--overlay", "/etc"])
            .refused(&["overlay `/etc` is absolute"]),
        named("overlay_with_a_newline").args(&["--overlay", "k8s\nx"])
            .refused(&["holds control characters"]),
        named("overlay_missing").args(&["--overlay", "k8s/apps/nope"])
            .refused(&["k8s/apps/nope: no such overlay directory in branch main of"]),
        named("overlay_without_kustomization").args(&["--overlay", "k8s/apps/tomoda"])
            .refused(&["k8s/apps/tomoda: no kustomization.yaml, kustomization.yml, Kustomization in this overlay"]),
        named("kustomization_symlink_outside")
            .file(DEV, Content::Link("../../../../../../etc/passwd"))
            .refused(&[&format!("{DEV}: is a symbolic link"), "replace the link with the kustomization file itself"]),
        named("overlay_is_a_symlink")
            .file("k8s/apps/tomoda/overlays/elsewhere", Content::Link("/tmp"))
            .args(&["--overlay", "k8s/apps/tomoda/overlays/elsewhere"])
            .refused(&["the overlay is a symbolic link", "point the overlay at the real directory"]),
        named("kustomization_yaml_and_yml")
            .file(&format!("{OVERLAY}/kustomization.yml"), Content::Bytes(b"images: []\n".to_vec()))
            .refused(&[&format!("{OVERLAY}: holds both {DEV} and {OVERLAY}/kustomization.yml"), "keep one"]),
        named("kustomization_is_a_directory")
            .without(DEV)
            .file(&format!("{OVERLAY}/Kustomization/x"), Content::Bytes(b"x".to_vec()))
            .refused(&[&format!("{OVERLAY}/Kustomization: is not a file")]),
        named("regex_metacharacters_in_the_name").image("reg.example/a+b*c(d):v2")
            .refused(&["is not an image name"]),
        named("tag_with_a_newline").image(&format!("{IMAGE}:v1\nv2"))
            .refused(&["--image v2: `v2` sets nothing"]),
        named("tag_with_a_space").image(&format!("{IMAGE}:v 1"))
            .refused(&["`v 1` is not a valid image tag"]),
        named("tag_with_a_hash").image(&format!("{IMAGE}:v1#2"))
            .refused(&["`v1#2` is not a valid image tag"]),
        // `{IMAGE}:v1:2` is the tag 2 of an entry named `{IMAGE}:v1`, as kustomize reads it;
        // one colon more leaves a name that is no `repository:tag`.
        named("tag_with_a_colon").image(&format!("{IMAGE}:v1:2:3"))
            .refused(&[&format!("`{IMAGE}:v1:2` is not an image name")]),
        named("tag_too_long").image(&format!("{IMAGE}:{}", "x".repeat(129)))
            .refused(&["is not a valid image tag"]),
        named("digest_of_the_wrong_length").image(&format!("{IMAGE}@sha256:{}", "a".repeat(63)))
            .refused(&["is not a digest: write sha256: followed by 64 lowercase hex digits"]),
        named("digest_in_upper_case").image(&format!("{IMAGE}@sha256:{}", "A".repeat(64)))
            .refused(&["is not a digest"]),
        named("missing_branch").args(&["--branch", "release"])
            .refused(&["there is no branch release", "branches here: main"]),
        Case { empty_repo: true, ..named("empty_repository") }
            .refused(&["the repository is empty", "push a first commit"]),
    ]);
}

#[test]
fn hostile_configs_are_refused_at_their_line() {
    let cfg = || tomoda_config("{URL}");
    let with = |name: &'static str, config: String, env: &[(&'static str, &str)]| {
        Case::dev(name, entry("newTag: v1")).config(config, env)
    };
    let sha = [("COMMIT_SHA", SHA)];
    run_all(vec![
        with(
            "sha_not_hex",
            cfg(),
            &[("COMMIT_SHA", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")],
        )
        .refused(&["is not a commit SHA", "pass the full commit SHA"]),
        with("sha_too_short", cfg(), &[("COMMIT_SHA", "4d5e6")])
            .refused(&["`4d5e6` is not a commit SHA"]),
        with(
            "sha_with_a_trailing_newline",
            cfg(),
            &[("COMMIT_SHA", "4d5e6f7\n")],
        )
        .edits(entry("newTag: 4d5e6f7"), Some("4d5e6f7")),
        with(
            "sha_with_an_inner_newline",
            cfg(),
            &[("COMMIT_SHA", "4d5e6f7\nabc")],
        )
        .refused(&["is not a commit SHA"]),
        with(
            "tag_with_a_newline_in_the_config",
            cfg().replace("\"{commit_sha}\"", "\"v1\\nv2\""),
            &sha,
        )
        .refused(&["promote.yaml:9: `v1\\nv2` is not a valid image tag"]),
        with(
            "tag_with_spaces_and_hash_in_the_config",
            cfg().replace("\"{commit_sha}\"", "'v1 #2'"),
            &sha,
        )
        .refused(&["promote.yaml:9: `v1 #2` is not a valid image tag"]),
        with(
            "unknown_placeholder",
            cfg().replace("{commit_sha}", "{commit}"),
            &sha,
        )
        .refused(&[
            "promote.yaml:9: unknown placeholder `{commit}`",
            "placeholders are {commit_sha}",
        ]),
        with(
            "unclosed_placeholder",
            cfg().replace("{commit_sha}", "{commit_sha"),
            &sha,
        )
        .refused(&["promote.yaml:9: `{commit_sha` has a `{` with no closing `}`"]),
        with(
            "unknown_environment_key",
            cfg().replace(
                "    overlay: k8s/apps/tomoda/overlays/dev",
                "    overlays: x",
            ),
            &sha,
        )
        .refused(&[
            "promote.yaml:6: unknown key `overlays` in environment `dev`",
            "did you mean `overlay`?",
        ]),
        with(
            "unknown_top_level_key",
            format!("{}branches: [main]\n", cfg()),
            &sha,
        )
        .refused(&["promote.yaml:17: unknown key `branches` at the top level"]),
        with(
            "unknown_image_key",
            cfg().replace(
                "        tag: \"{commit_sha}\"",
                "        newTag: \"{commit_sha}\"",
            ),
            &sha,
        )
        .refused(&[
            "promote.yaml:9: unknown key `newTag` in an image",
            "allowed here: name, new_name, tag, digest",
        ]),
        with(
            "placeholder_in_a_name",
            cfg().replacen(&format!("name: {IMAGE}"), "name: \"{commit_sha}\"", 1),
            &sha,
        )
        .refused(&["promote.yaml:8: `{commit_sha}` is not an image name"]),
        with(
            "tag_build_with_an_invalid_tag",
            cfg().replace(r"'^v\d+\.\d+\.\d+$'", "'^v'"),
            &[("TAG_NAME", "v1/2"), ("COMMIT_SHA", SHA)],
        )
        .refused(&["promote.yaml:16: `v1/2` is not a valid image tag"]),
        with("config_is_not_yaml", "environments: [\n".into(), &sha)
            .refused(&["promote.yaml:", "invalid YAML"]),
        with("config_with_a_nul", format!("{}\0", cfg()), &sha)
            .refused(&["promote.yaml:", "control character U+0000"]),
        with(
            "config_nested_deep",
            format!("{}x:\n{}\n", cfg(), "- ".repeat(10_000)),
            &sha,
        )
        .refused(&["promote.yaml:", "nested more than 200 levels"]),
        with(
            "config_duplicate_environment",
            cfg().replace("  prod:", "  dev:"),
            &sha,
        )
        .refused(&["promote.yaml:10: environment `dev` is given twice (first at line 4)"]),
    ]);
}
