//! Writing a new scalar value so that YAML, and kustomize after it, read back the same string.

use super::Splice;
use super::tree::{Node, Scalar, Style};

/// Renders `value` for the place of an existing scalar of `style`.
///
/// The existing quoting is kept; a plain value that YAML would read as something other
/// than this string (`1.10`, `yes`, `0123`, an all-digit short SHA) gets double quotes,
/// or kustomize would see a number where a tag belongs.
pub fn render(value: &str, style: Style) -> String {
    match style {
        Style::SingleQuoted if !value.chars().any(|c| c.is_control() || needs_escape(c)) => {
            format!("'{}'", value.replace('\'', "''"))
        }
        Style::Plain | Style::Block if plain_is_safe(value) => value.to_string(),
        Style::SingleQuoted | Style::DoubleQuoted | Style::Plain | Style::Block => {
            double_quoted(value)
        }
    }
}

/// The splice that makes `value` (under the mapping key `key`, if it stands under one)
/// read `new`: the scalar's bytes replaced, its quoting kept, or, for an empty value
/// (`tag:` and nothing after it), the value written after the colon. `None` where the
/// value's bytes cannot be known exactly (not a scalar, tagged, a block scalar, over
/// several lines): such a value is not edited.
pub fn splice_value(source: &str, key: Option<&Node>, value: &Node, new: &str) -> Option<Splice> {
    let Node::Scalar(scalar) = value else {
        return None;
    };
    if scalar.tagged || scalar.style == Style::Block {
        return None;
    }
    match (scalar.end, key) {
        (Some(end), _) if !source[scalar.start.offset..end].contains(['\n', '\r']) => Some(
            Splice::replace(scalar.start.offset..end, render(new, scalar.style)),
        ),
        (None, Some(key)) if value.is_null() => {
            let colon = colon_after(source, key)?;
            Some(Splice::insert(
                colon + 1,
                format!(" {}", render(new, Style::Plain)),
            ))
        }
        _ => None,
    }
}

/// The offset of the `:` after the mapping key `key`.
pub fn colon_after(source: &str, key: &Node) -> Option<usize> {
    let Node::Scalar(Scalar { end: Some(end), .. }) = key else {
        return None;
    };
    let rest = &source[*end..];
    let skip = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    rest[skip..].starts_with(':').then_some(end + skip)
}

fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || needs_escape(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Characters that a file may not hold as they are (U+FFFF), or that YAML 1.1 readers take
/// for a line break (NEL, U+2028, U+2029) or a byte-order mark.
fn needs_escape(c: char) -> bool {
    !super::is_printable(c) || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// True when a plain scalar with this text is read as this very string: it is a plain
/// scalar at all, in block and flow context, and every YAML reader on the way (go-yaml v2
/// and v3, YAML 1.2 core, YAML 1.1) resolves it to a string, not a number, a boolean, a
/// date or null. A digit in front is fine (`4.99.11.0-wecare`, an ECR registry host).
pub fn plain_is_safe(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    // Indicators cannot begin a plain scalar (`-`, `?` and `:` only before a non-space,
    // which is rare enough in a tag or a name to quote always).
    if "-?:,[]{}#&*!|>'\"%@` \t".contains(first) {
        return false;
    }
    // `,[]{}` end a plain scalar inside a flow collection (`images: [{newTag: v]}]`).
    if value.ends_with([' ', ':'])
        || value.contains([',', '[', ']', '{', '}'])
        || value.contains(": ")
        || value.contains(" #")
        || value.chars().any(|c| c.is_control() || needs_escape(c))
    {
        return false;
    }
    super::resolve::reads_as_string_everywhere(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_that_read_as_other_types_are_quoted() {
        for v in [
            "1.10",
            "1.2",
            "0123",
            "1234567",
            "12e4567",
            "yes",
            "No",
            "on",
            "null",
            "~",
            "",
            "1e3",
            "0x1F",
            "0o17",
            "012",
            "1_000",
            "12:30:00",
            "2024-01-01",
            "<<",
            "=",
        ] {
            assert_eq!(render(v, Style::Plain), format!("\"{v}\""), "{v}");
        }
        for v in [
            "v1.2.3",
            "main-4d5e6f7",
            "abc1234",
            "sha256:00ff",
            "reg.io/a/b",
            "4.99.11.0-wecare",
            "1.2.3-rc1",
            "1.2.3",
            "478468757808.dkr.ecr.ap-south-1.amazonaws.com/team/new",
            "yEs",
        ] {
            assert_eq!(render(v, Style::Plain), v, "{v}");
        }
    }

    #[test]
    fn characters_yaml_does_not_print_are_escaped() {
        // Found by fuzzing: a raw U+FFFF was written into the file, which then was refused.
        assert_eq!(render("a\u{ffff}b", Style::Plain), "\"a\\uffffb\"");
        assert_eq!(render("a\u{ffff}b", Style::SingleQuoted), "\"a\\uffffb\"");
        assert_eq!(
            render("\u{feff}x\u{2028}", Style::DoubleQuoted),
            "\"\\ufeffx\\u2028\""
        );
        assert_eq!(render("ü日本", Style::Plain), "ü日本");
    }

    #[test]
    fn flow_indicators_anywhere_are_quoted() {
        // Found by fuzzing: `v]` was written plain into `[{…, newTag: v]}]`.
        for v in ["v]", "a,b", "x{y", "t}"] {
            assert_eq!(render(v, Style::Plain), format!("\"{v}\""), "{v}");
        }
    }

    #[test]
    fn existing_quotes_are_kept() {
        assert_eq!(render("v1", Style::SingleQuoted), "'v1'");
        assert_eq!(render("v1", Style::DoubleQuoted), "\"v1\"");
        assert_eq!(render("a\"b", Style::DoubleQuoted), "\"a\\\"b\"");
        assert_eq!(render("it's", Style::SingleQuoted), "'it''s'");
    }
}
