//! The properties the fuzz targets check, kept out of the targets so the seed corpus can
//! also be replayed by a plain `cargo test` of this crate (no libFuzzer, no nightly).
//!
//! Each `check_*` function takes the fuzzer's bytes and panics when a property fails.

use tomoda_promote::config::Config;
use tomoda_promote::error::Error;
use tomoda_promote::image;
use tomoda_promote::kustomize::{self, ImageSpec};
use yaml_rust2::{Yaml, YamlLoader};

/// The `set_image` input: the first line is the edit, the rest is the kustomization.
///
/// The edit line is `name<TAB>newName<TAB>newTag<TAB>digest`; a field that is `~` or
/// missing is not set; `\n`, `\r`, `\t`, `\\` and `\~` stand for themselves escaped.
pub fn decode_set_image(data: &[u8]) -> Option<(ImageSpec, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    let (header, source) = text.split_once('\n').unwrap_or((text, ""));
    let mut fields = header.split('\t').map(|f| match f {
        "~" => None,
        f => Some(unescape(f)),
    });
    let spec = ImageSpec {
        name: fields.next().flatten().unwrap_or_default(),
        new_name: fields.next().flatten(),
        new_tag: fields.next().flatten(),
        digest: fields.next().flatten(),
        ..ImageSpec::default()
    };
    Some((spec, source))
}

/// The inverse of [`decode_set_image`], for writing seeds.
pub fn encode_set_image(spec: &ImageSpec, source: &str) -> String {
    let field = |f: &Option<String>| f.as_deref().map_or("~".to_string(), escape);
    format!(
        "{}\t{}\t{}\t{}\n{source}",
        escape(&spec.name),
        field(&spec.new_name),
        field(&spec.new_tag),
        field(&spec.digest)
    )
}

fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

fn escape(value: &str) -> String {
    if value == "~" {
        return "\\~".into();
    }
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// For any kustomization and edit, `set_image` either refuses with a message, a hint and
/// a line inside the file, or returns a document that
/// - loads (with yaml-rust2's own loader, not the editor's tree) as the original data with
///   exactly the edit applied, keys in the same order, values of the same YAML type;
/// - differs from the input only on the lines of the edited values (and the lines added);
/// - holds the wanted values already: the same edit again changes nothing.
///
/// A refusal by the editor's own re-parse check, or an "internal error", is a bug too:
/// the splice was wrong and only the safety net caught it.
pub fn check_set_image(data: &[u8]) {
    let Some((spec, source)) = decode_set_image(data) else {
        return;
    };
    let edited = match kustomize::set_image(source, &spec) {
        Ok(edited) => edited,
        Err(e) => {
            assert!(!e.message.is_empty() && !e.hint.is_empty(), "{e:?}");
            assert!(
                !e.message.starts_with("internal error")
                    && (!e.message.starts_with("refusing") || tail_is_unstable(source)),
                "the editor produced a wrong splice: {e:?}"
            );
            if let Some(line) = e.line {
                assert!(
                    (1..=line_count(source)).contains(&line),
                    "line {line} is outside the file of {} lines: {e:?}",
                    line_count(source)
                );
            }
            return;
        }
    };
    // yaml-rust2's loader refuses duplicate keys, which the editor accepts outside
    // `images:` with a warning (kustomize keeps the last): no model for those files.
    let original = match load_one(source) {
        Ok(original) => original,
        Err(e) if !edited.warnings.is_empty() => {
            assert!(e.contains("duplicate"), "{e}");
            check_touched_lines(source, &edited.text, &spec, edited.changes.len());
            return;
        }
        Err(e) => panic!("the editor accepted a file that does not load ({e})"),
    };
    let expected = apply_model(original.clone(), &spec);
    if edited.changes.is_empty() {
        assert_eq!(edited.text, source, "no changes, yet the text changed");
        assert_eq!(
            expected, original,
            "the file lacks the values, yet no change"
        );
        return;
    }
    let result = load_one(&edited.text)
        .unwrap_or_else(|e| panic!("the edited text does not load ({e}):\n{}", edited.text));
    assert_eq!(
        result, expected,
        "the edited data is not the original with the edit applied:\n{}",
        edited.text
    );
    check_touched_lines(source, &edited.text, &spec, edited.changes.len());
    let again = kustomize::set_image(&edited.text, &spec).unwrap_or_else(|e| {
        panic!(
            "the edited text is refused on a second pass: {e:?}\n{}",
            edited.text
        )
    });
    assert!(
        again.changes.is_empty(),
        "a second pass changes {:?} again:\n{}",
        again.changes,
        edited.text
    );
}

/// True when yaml-rust2 reads the end of `source` differently once a key follows it: it
/// reads an empty block scalar (`a: |`) at the very end as "\n", and as "" anywhere else.
/// Appending to such a file changes its data, and the editor's re-parse check refuses it;
/// that refusal is the check working, not a wrong splice.
fn tail_is_unstable(source: &str) -> bool {
    let Ok(Yaml::Hash(before)) = load_one(source) else {
        return false;
    };
    let indent: String = source
        .trim_start_matches('\u{feff}')
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    let eol = if source.ends_with('\n') { "" } else { "\n" };
    let probe = format!("{source}{eol}{indent}zz_probe_zz: 0\n");
    match load_one(&probe) {
        Ok(Yaml::Hash(mut after)) => {
            after.remove(&key("zz_probe_zz"));
            after != before
        }
        _ => false,
    }
}

/// Lines as YAML counts them (LF, CRLF, lone CR), at least 1.
fn line_count(source: &str) -> usize {
    let breaks = source.replace("\r\n", "\n").matches(['\n', '\r']).count();
    breaks + 1
}

/// The one document of `text` (an empty file is null), BOM ignored.
fn load_one(text: &str) -> Result<Yaml, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.len() {
        0 => Ok(Yaml::Null),
        1 => Ok(docs.remove(0)),
        n => Err(format!("{n} documents")),
    }
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// The edit as kustomize's rules define it, written independently of the editor: the
/// first entry whose name is the image gets the values (in place; new keys at its end;
/// a new tag without a digest drops the digest); without one, the one entry whose
/// `newName` is the image (when the image is not renamed); without that, an entry is
/// appended.
fn apply_model(mut root: Yaml, spec: &ImageSpec) -> Yaml {
    if spec.new_name.is_none() && spec.new_tag.is_none() && spec.digest.is_none() {
        return root;
    }
    if root.is_null() {
        root = Yaml::Hash(Default::default());
    }
    let Yaml::Hash(top) = &mut root else {
        panic!("the editor accepted a top level that is not a mapping: {root:?}");
    };
    let images = match top.get_mut(&key("images")) {
        Some(v) => v,
        None => {
            top.insert(key("images"), Yaml::Null);
            top.get_mut(&key("images")).unwrap()
        }
    };
    if images.is_null() {
        *images = Yaml::Array(Vec::new());
    }
    let Yaml::Array(items) = images else {
        panic!("the editor accepted `images:` that is not a list: {images:?}");
    };
    let name_is = |item: &Yaml| match item {
        Yaml::Hash(h) => h.get(&key("name")).and_then(scalar_text) == Some(spec.name.clone()),
        other => panic!("the editor accepted an entry that is not a mapping: {other:?}"),
    };
    let set = |entry: &mut yaml_rust2::yaml::Hash, field: &str, value: &Option<String>| {
        if let Some(v) = value {
            match entry.get_mut(&key(field)) {
                Some(slot) => *slot = key(v),
                None => {
                    entry.insert(key(field), key(v));
                }
            }
        }
    };
    let new_name_is = |item: &Yaml| match item {
        Yaml::Hash(h) => h.get(&key("newName")).and_then(scalar_text) == Some(spec.name.clone()),
        _ => false,
    };
    let by_new_name = || {
        let hits: Vec<usize> = (0..items.len()).filter(|i| new_name_is(&items[*i])).collect();
        match hits.as_slice() {
            [one] if spec.new_name.is_none() => Some(*one),
            _ => None,
        }
    };
    match items.iter().position(name_is).or_else(by_new_name) {
        Some(i) => {
            let Yaml::Hash(entry) = &mut items[i] else {
                unreachable!()
            };
            set(entry, "newName", &spec.new_name);
            set(entry, "newTag", &spec.new_tag);
            set(entry, "digest", &spec.digest);
            if spec.new_tag.is_some() && spec.digest.is_none() {
                entry.remove(&key("digest"));
            }
        }
        None => {
            let mut entry = yaml_rust2::yaml::Hash::new();
            entry.insert(key("name"), key(&spec.name));
            set(&mut entry, "newName", &spec.new_name);
            set(&mut entry, "newTag", &spec.new_tag);
            set(&mut entry, "digest", &spec.digest);
            items.push(Yaml::Hash(entry));
        }
    }
    root
}

/// A scalar's text as kustomize compares names: the string it was written as.
fn scalar_text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Byte-level: a line diff of input and output touches only lines that name an edited
/// field, `images` or the image, and at most one input line per change (plus the
/// `images:` line and a last line that had no line break).
fn check_touched_lines(old: &str, new: &str, spec: &ImageSpec, changes: usize) {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    if a.len() * b.len() > 4_000_000 {
        return;
    }
    let (removed, added) = line_diff(&a, &b);
    let mentions_edit = |line: &str| {
        ["newTag", "newName", "digest", "images", "name"]
            .iter()
            .any(|k| line.contains(k))
            || line.contains(spec.name.as_str())
    };
    let unterminated_last = |i: usize| i + 1 == a.len() && !a[i].ends_with('\n');
    // A line that only had text inserted into it (an entry appended to a flow list that
    // spans lines) keeps all of its bytes.
    let grew = |i: usize| added.iter().any(|&j| is_insertion(a[i], b[j]));
    for &i in &removed {
        assert!(
            mentions_edit(a[i]) || unterminated_last(i) || grew(i),
            "line {} changed though it holds no edited value: {:?}\n--- new\n{new}",
            i + 1,
            a[i]
        );
    }
    assert!(
        removed.len() <= changes + 2,
        "{} lines changed for {changes} changes:\n--- old\n{old}\n--- new\n{new}",
        removed.len()
    );
    // Text that goes into the file: keys, values, indentation, punctuation.
    for &j in &added {
        let line = b[j];
        let values_gone = [
            &spec.new_name,
            &spec.new_tag,
            &spec.digest,
            &Some(spec.name.clone()),
        ]
        .iter()
        .filter_map(|v| v.as_deref())
        .fold(line.to_string(), |l, v| l.replace(v, ""));
        let was_unterminated_last = a.last().is_some_and(|last| {
            !last.ends_with('\n')
                && line
                    .strip_prefix(last)
                    .is_some_and(|eol| eol.trim().is_empty())
        });
        assert!(
            mentions_edit(line)
                || values_gone.trim().is_empty()
                || line.trim().is_empty()
                || was_unterminated_last,
            "an added line holds something other than the edit: {line:?}\n--- new\n{new}"
        );
    }
}

/// True when `new` is `old` with one run of text inserted.
fn is_insertion(old: &str, new: &str) -> bool {
    let prefix = old
        .bytes()
        .zip(new.bytes())
        .take_while(|(x, y)| x == y)
        .count();
    new.len() > old.len() && new.ends_with(&old[prefix..]) && new.is_char_boundary(prefix)
}

/// Indices of the lines of `a` not kept and of `b` added, by a longest common subsequence.
fn line_diff(a: &[&str], b: &[&str]) -> (Vec<usize>, Vec<usize>) {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            added.push(j);
            j += 1;
        } else {
            removed.push(i);
            i += 1;
        }
    }
    (removed, added)
}

/// For any string, `parse_spec` refuses with a message, or returns a spec whose every
/// value passes its check, that sets something, and that the canonical form
/// `name[=newName][:tag][@digest]` parses back to.
pub fn check_parse_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let spec = match image::parse_spec(text) {
        Ok(spec) => spec,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    image::check_name(&spec.name).expect("the name passes its check");
    if let Some(n) = &spec.new_name {
        image::check_new_name(n).expect("the new name passes its check");
    }
    if let Some(t) = &spec.new_tag {
        image::check_tag(t).expect("the tag passes its check");
    }
    if let Some(d) = &spec.digest {
        image::check_digest(d).expect("the digest passes its check");
    }
    assert!(spec.new_name.is_some() || spec.new_tag.is_some() || spec.digest.is_some());
    let mut canonical = spec.name.clone();
    if let Some(n) = &spec.new_name {
        canonical = format!("{canonical}={n}");
    }
    if let Some(t) = &spec.new_tag {
        canonical = format!("{canonical}:{t}");
    }
    if let Some(d) = &spec.digest {
        canonical = format!("{canonical}@{d}");
    }
    assert_eq!(
        image::parse_spec(&canonical).as_ref(),
        Ok(&spec),
        "{text:?} and its canonical form {canonical:?} differ"
    );
}

/// For any text, `Config::parse` refuses with an input error (exit 2) naming the file, a
/// line inside it and a hint, or returns environments that each have an overlay and
/// images whose names pass the check and whose placeholders are all known.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse("promote.yaml", text) {
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            let shown = e.to_string();
            assert!(shown.starts_with("promote.yaml"), "{shown}");
            assert!(shown.contains("\n  hint: "), "{shown}");
            let Error::Input { line, .. } = &e else {
                panic!("not an input error: {e:?}");
            };
            if let Some(line) = line {
                assert!(
                    (1..=line_count(text)).contains(line),
                    "line {line} is outside the file of {} lines: {shown}",
                    line_count(text)
                );
            }
        }
        Ok(config) => {
            assert!(!config.environments.is_empty());
            for env in &config.environments {
                assert!(!env.images.is_empty());
                for rule in &env.images {
                    image::check_name(&rule.name).expect("image names are checked");
                    for t in [&rule.new_name, &rule.tag, &rule.digest]
                        .into_iter()
                        .flatten()
                    {
                        t.render(|_| Some("x".into()))
                            .expect("every placeholder is known");
                    }
                }
            }
        }
    }
}
