use super::*;

const IMAGE: &str = "asia-east1-docker.pkg.dev/p/dev-repo/backend";

fn tag(t: &str) -> ImageSpec {
    ImageSpec {
        name: IMAGE.into(),
        new_name: None,
        new_tag: Some(t.into()),
        digest: None,
        ..ImageSpec::default()
    }
}

fn edit(src: &str, spec: &ImageSpec) -> String {
    set_image(src, spec).expect("edit succeeds").text
}

#[test]
fn a_tag_change_touches_only_the_value_and_keeps_new_name() {
    let src = "# overlay\r\nimages:\r\n  - name: asia-east1-docker.pkg.dev/p/dev-repo/backend   # the API\r\n    newName: reg/x  # ü\r\n    newTag: \"0a1b2c3\"   # set by CI\r\n\r\nresources: [../../base]\r\n";
    let out = edit(src, &tag("v1.2.3"));
    assert_eq!(out, src.replace("\"0a1b2c3\"", "\"v1.2.3\""));
}

#[test]
fn a_number_like_tag_gets_quotes_where_the_old_one_had_none() {
    let src = format!("images:\n- name: {IMAGE}\n  newTag: v1\n");
    assert_eq!(
        edit(&src, &tag("1234567")),
        format!("images:\n- name: {IMAGE}\n  newTag: \"1234567\"\n")
    );
    let single = format!("images:\n- name: {IMAGE}\n  newTag: 'v1'\n");
    assert_eq!(
        edit(&single, &tag("1.10")),
        single.replace("'v1'", "'1.10'")
    );
}

#[test]
fn a_new_tag_without_a_digest_drops_the_old_digest() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let last = format!(
        "images:\n- name: {IMAGE}\n  newTag: v1\n  digest: {digest}  # pinned\nresources: []\n"
    );
    assert_eq!(
        edit(&last, &tag("v2")),
        format!("images:\n- name: {IMAGE}\n  newTag: v2\nresources: []\n")
    );
    let first = format!("images:\n- digest: {digest}\n  name: {IMAGE}\n  newTag: v1\n");
    assert_eq!(
        edit(&first, &tag("v2")),
        format!("images:\n- name: {IMAGE}\n  newTag: v2\n")
    );
    let flow = format!("images: [{{name: {IMAGE}, digest: {digest}, newTag: v1}}]\n");
    assert_eq!(
        edit(&flow, &tag("v2")),
        format!("images: [{{name: {IMAGE}, newTag: v2}}]\n")
    );
}

#[test]
fn a_digest_is_set_beside_the_tag() {
    let digest = format!("sha256:{}", "b".repeat(64));
    let src = format!("images:\n- name: {IMAGE}\n  newTag: v1\n");
    let spec = ImageSpec {
        digest: Some(digest.clone()),
        ..tag("v2")
    };
    let edited = set_image(&src, &spec).unwrap();
    assert_eq!(
        edited.text,
        format!("images:\n- name: {IMAGE}\n  newTag: v2\n  digest: {digest}\n")
    );
    assert_eq!(edited.changes.len(), 2);
}

#[test]
fn missing_fields_are_added_in_the_entry_style() {
    let src = format!("images:\n  - name: {IMAGE}  # c\n    newName: x\nresources:\n  - a\n");
    assert_eq!(
        edit(&src, &tag("v2")),
        format!(
            "images:\n  - name: {IMAGE}  # c\n    newName: x\n    newTag: v2\nresources:\n  - a\n"
        )
    );
    let flow = format!("images:\n- {{ name: {IMAGE} }}\n");
    assert_eq!(
        edit(&flow, &tag("v2")),
        format!("images:\n- {{ name: {IMAGE}, newTag: v2 }}\n")
    );
    let empty_value = format!("images:\n- name: {IMAGE}\n  newTag:\n");
    assert_eq!(
        edit(&empty_value, &tag("v2")),
        format!("images:\n- name: {IMAGE}\n  newTag: v2\n")
    );
}

#[test]
fn a_missing_entry_is_appended_in_the_list_style() {
    let indented = "images:\n  - name: other\n    newTag: a  # keep\n# trailing comment\n";
    assert_eq!(
        edit(indented, &tag("v2")),
        format!(
            "images:\n  - name: other\n    newTag: a  # keep\n  - name: {IMAGE}\n    newTag: v2\n# trailing comment\n"
        )
    );
    let flush = "images:\n- name: other\n  newTag: a";
    assert_eq!(
        edit(flush, &tag("v2")),
        format!("images:\n- name: other\n  newTag: a\n- name: {IMAGE}\n  newTag: v2")
    );
    let flow = "images: [{name: other}]\n";
    assert_eq!(
        edit(flow, &tag("v2")),
        format!("images: [{{name: other}}, {{name: {IMAGE}, newTag: v2}}]\n")
    );
    assert_eq!(
        edit("images: []\n", &tag("v2")),
        format!("images: [{{name: {IMAGE}, newTag: v2}}]\n")
    );
}

#[test]
fn an_appended_entry_puts_its_keys_where_the_file_does() {
    // Found by fuzzing: with `-  newTag:` (two spaces) the new entry's keys were
    // misaligned and the result did not parse.
    let src = "images:\n-  newTag: v1\n   name: other\n";
    assert_eq!(
        edit(src, &tag("v2")),
        format!("{src}-  name: {IMAGE}\n   newTag: v2\n")
    );
}

#[test]
fn new_keys_go_to_the_column_of_the_keys_that_begin_their_lines() {
    // Found by fuzzing: a tag before the first key put `images:` at that key's column.
    let src = "!tagged first: 1\nsecond: 2\n";
    assert_eq!(
        edit(src, &tag("v2")),
        format!("{src}images:\n- name: {IMAGE}\n  newTag: v2\n")
    );
    let err = set_image("!t only: 1\n", &tag("v2")).unwrap_err();
    assert!(err.message.contains("indentation"), "{err:?}");
}

#[test]
fn a_lone_carriage_return_is_refused_at_its_line() {
    // Found by fuzzing: YAML breaks lines at a lone CR, the editor at LF only, so an
    // entry was appended inside a folded scalar.
    let err = set_image("a: 1\r\nb: 2\rc: 3\n", &tag("v2")).unwrap_err();
    assert_eq!(err.line, Some(2), "{err:?}");
    assert!(err.message.contains("carriage return"), "{err:?}");
    assert!(set_image("a: 1\r\n", &tag("v2")).is_ok());
}

#[test]
fn a_missing_images_key_goes_before_a_document_end_marker() {
    // Found by fuzzing: `images:` was added after `...`, starting a second document.
    let src = "resources:\n- a\n...\n# after the end\n";
    assert_eq!(
        edit(src, &tag("v2")),
        format!("resources:\n- a\nimages:\n- name: {IMAGE}\n  newTag: v2\n...\n# after the end\n")
    );
}

#[test]
fn keys_that_read_as_the_same_value_are_duplicates() {
    // Found by fuzzing: `~:` and `null:` passed the duplicate check, and the re-parse
    // check then refused the file with "please report this".
    for src in ["~: 1\nnull: 2\n", "1: a\n0x1: b\n", ": 1\n~: 2\n"] {
        let err = set_image(src, &tag("v2")).expect_err(src);
        assert!(err.message.contains("appears twice"), "{src:?}: {err:?}");
        assert_eq!(err.line, Some(2), "{src:?}");
    }
    let edited = set_image("a: 1\n\"a\": 2\n", &tag("v2")).unwrap();
    assert_eq!(edited.warnings.len(), 1);
    assert_eq!(edited.warnings[0].line, 2);
    assert!(
        set_image("1: a\n'1': b\n", &tag("v2"))
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn a_key_twice_outside_images_is_edited_around_with_a_true_warning() {
    // Issue 15: `namespace:` twice was refused for every image ("kustomize refuses
    // duplicate keys"), yet kubectl kustomize 5.5 renders it with the last one.
    let src = format!(
        "namespace: a\nresources:\n- ../base\nnamespace: b\nlabels:\n- pairs: {{x: 1}}\n  pairs: {{y: 2}}\nimages:\n- name: {IMAGE}\n  newTag: v1\n"
    );
    let edited = set_image(&src, &tag("v2")).unwrap();
    assert_eq!(edited.text, src.replace("newTag: v1", "newTag: v2"));
    let warnings: Vec<(usize, &str)> = edited
        .warnings
        .iter()
        .map(|w| (w.line, w.message.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [
            (
                4,
                "the key `namespace` appears twice in one mapping (first at line 1); kubectl kustomize uses the last one and stricter YAML tools refuse the file; it was left as it is"
            ),
            (
                7,
                "the key `pairs` appears twice in one mapping (first at line 6); kubectl kustomize uses the last one and stricter YAML tools refuse the file; it was left as it is"
            ),
        ]
    );
    // The same file with nothing to change still warns.
    let again = set_image(&edited.text, &tag("v2")).unwrap();
    assert!(again.changes.is_empty());
    assert_eq!(again.warnings.len(), 2);
    // A new entry and a new `images:` key are written around duplicates too.
    let appended = set_image("namespace: a\nnamespace: b\n", &tag("v2")).unwrap();
    assert_eq!(
        appended.text,
        format!("namespace: a\nnamespace: b\nimages:\n- name: {IMAGE}\n  newTag: v2\n")
    );
}

#[test]
fn a_key_twice_in_images_is_refused_as_ambiguous() {
    let cases = [
        (
            format!("images:\n- name: {IMAGE}\n  newTag: a\nresources: []\nimages:\n- name: x\n"),
            5,
            "the key `images` appears twice (first at line 1); kustomize would use only this last list, so which one to edit is unclear",
        ),
        (
            format!("images:\n- name: {IMAGE}\n  newTag: a\n  newTag: b\n"),
            4,
            "the key `newTag` appears twice in one mapping of `images:` (first at line 3); kustomize would use only this last one, so which one to edit is unclear",
        ),
        // Another entry's: with `name` twice, whether it is the image's entry is a guess.
        (
            format!("images:\n- name: {IMAGE}\n  newTag: a\n- name: other\n  name: {IMAGE}\n"),
            5,
            "the key `name` appears twice in one mapping of `images:` (first at line 4)",
        ),
    ];
    for (src, line, message) in cases {
        let err = set_image(&src, &tag("v2")).expect_err(&src);
        assert_eq!(err.line, Some(line), "{src:?}");
        assert!(err.message.starts_with(message), "{src:?}: {err:?}");
        assert!(!err.hint.contains("kustomize refuses"), "{err:?}");
    }
}

const PUSHED: &str = "acr.example.io/team/api";

fn pushed(t: &str) -> ImageSpec {
    ImageSpec {
        name: PUSHED.into(),
        ..tag(t)
    }
}

#[test]
fn the_pushed_reference_sets_the_one_entry_whose_new_name_it_is() {
    // Issue 15: `--image acr.example.io/team/api:sha-abc1234` appended a second entry
    // beside `name: api` / `newName: acr.example.io/team/api`, which kept the old tag.
    let src = format!(
        "images:\n- name: worker\n  newTag: w1\n- name: api   # short name in the base\n  newName: {PUSHED}\n  newTag: sha-2d26382\n"
    );
    let edited = set_image(&src, &pushed("sha-abc1234")).unwrap();
    assert_eq!(edited.text, src.replace("sha-2d26382", "sha-abc1234"));
    let note = edited.matched_by_new_name.expect("a note");
    assert_eq!(note.line, 4);
    assert_eq!(
        note.message,
        format!(
            "no `images:` entry is named {PUSHED}; set the entry named api instead, whose `newName` it is"
        )
    );
    assert_eq!(
        edited.changes,
        [Change {
            image: PUSHED.into(),
            field: Field::NewTag,
            old: Some("sha-2d26382".into()),
            new: Some("sha-abc1234".into()),
        }]
    );
    // Run again: up to date, still through that entry.
    let again = set_image(&edited.text, &pushed("sha-abc1234")).unwrap();
    assert!(again.changes.is_empty());
    assert!(again.matched_by_new_name.is_some());
    // A digest goes to that entry too, and `newName` equal to the name changes nothing.
    let digest = format!("sha256:{}", "d".repeat(64));
    let spec = ImageSpec {
        new_name: Some(PUSHED.into()),
        digest: Some(digest.clone()),
        ..pushed("sha-abc1234")
    };
    assert_eq!(
        set_image(&src, &spec).unwrap().text,
        src.replace(
            "sha-2d26382\n",
            &format!("sha-abc1234\n  digest: {digest}\n")
        )
    );
}

#[test]
fn a_name_match_comes_before_a_new_name_match() {
    let src = format!(
        "images:\n- name: api\n  newName: {PUSHED}\n  newTag: a\n- name: {PUSHED}\n  newTag: b\n"
    );
    let edited = set_image(&src, &pushed("v2")).unwrap();
    assert_eq!(edited.text, src.replace("newTag: b", "newTag: v2"));
    assert_eq!(edited.matched_by_new_name, None);
}

#[test]
fn a_spec_that_renames_the_image_does_not_match_by_new_name() {
    // `reg/app=reg/other:v2` asks for an entry `name: reg/app`; an entry renaming
    // something else to `reg/app` is not it.
    let src = "images:\n- name: app\n  newName: reg/app\n  newTag: a\n";
    let spec = ImageSpec {
        name: "reg/app".into(),
        new_name: Some("reg/other".into()),
        ..tag("v2")
    };
    assert_eq!(
        set_image(src, &spec).unwrap().text,
        format!("{src}- name: reg/app\n  newName: reg/other\n  newTag: v2\n")
    );
}

#[test]
fn several_entries_with_the_pushed_reference_as_new_name_are_refused() {
    let src = format!(
        "images:\n- name: api\n  newName: {PUSHED}\n- name: other\n  newTag: x\n- name: api-canary\n  newName: {PUSHED}\n  newTag: c\n"
    );
    let err = set_image(&src, &pushed("v2")).unwrap_err();
    assert_eq!(err.line, Some(6));
    assert_eq!(
        err.message,
        format!(
            "no `images:` entry is named {PUSHED}, and 2 entries have it as their `newName`: api (line 2), api-canary (line 6); which one to set is unclear"
        )
    );
    assert_eq!(
        err.hint,
        "name the image by one entry's `name:` in promote.yaml (or --image)"
    );
}

#[test]
fn two_entries_for_the_image_are_refused() {
    // Found by the hostile corpus: the first entry was edited, but `kubectl kustomize`
    // renders the second one's tag, so the promotion changed nothing.
    let src = format!(
        "images:\n- name: {IMAGE}\n  newTag: b\n- name: other\n- name: {IMAGE}\n  newTag: c\n"
    );
    let err = set_image(&src, &tag("v2")).unwrap_err();
    assert_eq!(err.line, Some(5));
    assert!(err.message.contains("the first is at line 2"), "{err:?}");
}

#[test]
fn a_value_that_cannot_be_edited_is_named_at_its_key() {
    // Found by the hostile corpus: a block scalar was reported at the line after `|`.
    let src = format!("images:\n- name: {IMAGE}\n  newTag: |\n    v1\n");
    assert_eq!(set_image(&src, &tag("v2")).unwrap_err().line, Some(3));
}

#[test]
fn complex_keys_are_refused() {
    // Found by fuzzing: `images:` appended after `?\n-` became part of the key.
    for src in ["?\n-", "? [a]\n: b\n", "images:\n- ? {x: 1}\n  : y\n"] {
        let err = set_image(src, &tag("v2")).expect_err(src);
        assert!(err.message.contains("complex key"), "{src:?}: {err:?}");
    }
}

#[test]
fn an_entry_appended_after_an_anchored_one_lines_up_with_it() {
    // Found by fuzzing: after `- &a name: other` the new entry went to column 5.
    let src = "images:\n  - &a name: other\n    newTag: a\n";
    assert_eq!(
        edit(src, &tag("v2")),
        format!("{src}  - name: {IMAGE}\n    newTag: v2\n")
    );
    let alone = "images:\n  - &a name: other\n";
    assert!(
        set_image(alone, &tag("v2"))
            .unwrap_err()
            .message
            .contains("indentation")
    );
}

#[test]
fn a_missing_images_key_is_added() {
    let src = "resources:\n  - ../../base\n";
    assert_eq!(
        edit(src, &tag("v2")),
        format!("resources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newTag: v2\n")
    );
    let crlf_no_eol = "kind: Kustomization\r\nresources:\r\n- a";
    assert_eq!(
        edit(crlf_no_eol, &tag("v2")),
        format!(
            "kind: Kustomization\r\nresources:\r\n- a\r\nimages:\r\n- name: {IMAGE}\r\n  newTag: v2"
        )
    );
    assert_eq!(
        edit("images:\nresources:\n- a\n", &tag("v2")),
        format!("images:\n- name: {IMAGE}\n  newTag: v2\nresources:\n- a\n")
    );
    assert_eq!(
        edit("", &tag("v2")),
        format!("images:\n- name: {IMAGE}\n  newTag: v2\n")
    );
}

#[test]
fn a_file_that_already_holds_the_values_is_left_alone() {
    let src = format!("images:\n- name: {IMAGE}\n  newTag: \"v2\"\n");
    let edited = set_image(&src, &tag("v2")).unwrap();
    assert!(edited.changes.is_empty());
    assert_eq!(edited.text, src);
}

#[test]
fn names_match_exactly_as_kustomize_compares_them() {
    let src =
        format!("images:\n- name: {IMAGE}-worker\n  newTag: a\n- name: {IMAGE}\n  newTag: b\n");
    let edited = edit(&src, &tag("v2"));
    assert_eq!(edited, src.replacen("newTag: b", "newTag: v2", 1));
    let regexy = ImageSpec {
        name: "reg/a.b+c".into(),
        ..tag("v2")
    };
    let src = "images:\n- name: reg/aXb+c\n  newTag: a\n";
    assert!(edit(src, &regexy).contains("- name: reg/a.b+c\n  newTag: v2\n"));
}

#[test]
fn unsafe_documents_are_refused_with_the_line() {
    let cases = [
        ("images:\n- name: a\n  newTag: [b\n", "invalid YAML"),
        ("images:\n- name: a\n  name: b\n", "appears twice"),
        ("images: []\nimages: []\n", "appears twice"),
        ("a: &x {name: q}\nimages:\n- *x\n", "alias"),
        ("images: []\n---\nimages: []\n", "2 YAML documents"),
        ("- a\n", "not a mapping"),
        ("images: x\n", "expected a list"),
        ("images:\n- just-a-string\n", "expected a mapping"),
        (
            &format!("images:\n- name: {IMAGE}\n  newTag: |\n    v1\n"),
            "not a one-line string",
        ),
        (
            &format!("images:\n- name: {IMAGE}\n  newTag: !!str v1\n"),
            "not a one-line string",
        ),
    ];
    for (src, needle) in cases {
        let err = set_image(src, &tag("v2")).expect_err(src);
        assert!(err.message.contains(needle), "{src:?}: {err:?}");
        assert!(err.line.is_some(), "{src:?}: {err:?}");
    }
}

#[test]
fn a_document_that_is_an_explicit_null_is_refused() {
    // Found by fuzzing: `images:` was appended after the `~`, which does not parse.
    for src in ["~\n", "\t~", "--- null\n"] {
        let err = set_image(src, &tag("v2")).expect_err(src);
        assert!(err.message.contains("`null`"), "{src:?}: {err:?}");
        assert_eq!(err.line, Some(1), "{src:?}");
    }
    assert!(set_image("!!null\n", &tag("v2")).is_err());
    for empty in ["", "# only a comment\n", "---\n", "&a\n"] {
        assert!(set_image(empty, &tag("v2")).is_ok(), "{empty:?}");
    }
}

#[test]
fn tabs_bom_and_unicode_stay_byte_for_byte() {
    let src = format!(
        "\u{feff}# Überblick\timages\nimages:\n- name: {IMAGE} # 日本\n  newTag: v1\t# tab\n"
    );
    assert_eq!(
        edit(&src, &tag("v2")),
        src.replace("newTag: v1", "newTag: v2")
    );
}

#[test]
fn a_file_without_a_final_line_break_gains_exactly_the_new_lines() {
    // Issue 15: a stray blank line was left where the old last line ended.
    let src = format!("images:\n- name: {IMAGE}\n  newName: reg/x");
    assert_eq!(edit(&src, &tag("v2")), format!("{src}\n  newTag: v2"));
    let commented = format!("images:\r\n- name: {IMAGE}\r\n  newName: reg/x  # c");
    assert_eq!(
        edit(&commented, &tag("v2")),
        format!("{commented}\r\n  newTag: v2")
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = format!("images:\n- name: {IMAGE}\n  newName: reg/x\n  digest: {digest}");
    assert_eq!(
        edit(&pinned, &tag("v2")),
        format!("images:\n- name: {IMAGE}\n  newName: reg/x\n  newTag: v2")
    );
    let pinned_crlf = format!("images:\r\n- name: {IMAGE}\r\n  newTag: v1\r\n  digest: {digest}");
    assert_eq!(
        edit(&pinned_crlf, &tag("v2")),
        format!("images:\r\n- name: {IMAGE}\r\n  newTag: v2")
    );
    let empty_images = "resources:\n- a\nimages:";
    assert_eq!(
        edit(empty_images, &tag("v2")),
        format!("{empty_images}\n- name: {IMAGE}\n  newTag: v2")
    );
    let flow = format!("images:\n- {{name: {IMAGE}}}");
    assert_eq!(
        edit(&flow, &tag("v2")),
        format!("images:\n- {{name: {IMAGE}, newTag: v2}}")
    );
}

/// Found by the fuzzer: the re-parse check read a `!!str` key as another key than the
/// editor did, and refused a right edit as a wrong splice.
#[test]
fn a_str_tagged_images_key_is_the_images_key() {
    let src = format!("!!str images:\n  - name: {IMAGE}\n    newTag: 1.9\n");
    assert_eq!(
        edit(&src, &tag("1.10")),
        format!("!!str images:\n  - name: {IMAGE}\n    newTag: \"1.10\"\n")
    );
}

/// `kustomize edit set image`'s `*` (setimage.go's own cases), through `parse_spec`.
#[test]
fn a_star_keeps_the_entrys_value() {
    let digest = format!("sha256:{}", "c".repeat(64));
    let entry =
        "images:\n- name: image1\n  newName: foo.bar.foo:8800/foo/image1\n  newTag: my-tag\n";
    let star = |spec: &str| crate::image::parse_spec(spec).unwrap();
    assert_eq!(
        edit(entry, &star("image1=*:v1")),
        entry.replace("my-tag", "v1")
    );
    assert_eq!(
        edit(entry, &star("image1=my-image1:*")),
        entry.replace("foo.bar.foo:8800/foo/image1", "my-image1")
    );
    assert_eq!(edit(entry, &star("image1=*:*")), entry);
    let pinned = format!("images:\n- name: image1\n  newTag: v1\n  digest: {digest}\n");
    assert_eq!(
        edit(&pinned, &star("image1:v2@*")),
        pinned.replace("v1", "v2")
    );
    assert_eq!(
        edit(&pinned, &star("image1=my-image1@*")),
        format!(
            "images:\n- name: image1\n  newTag: v1\n  digest: {digest}\n  newName: my-image1\n"
        )
    );
    // A new entry gets no `*`: the placeholder names no value.
    assert_eq!(
        edit("images: []\n", &star("image1=*:v1")),
        "images: [{name: image1, newTag: v1}]\n"
    );
    assert_eq!(
        edit("resources: []\n", &star("image1=my-image1:*")),
        "resources: []\nimages:\n- name: image1\n  newName: my-image1\n"
    );
}
