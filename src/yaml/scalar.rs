//! Writing a new scalar value so that YAML, and kustomize after it, read back the same string.

use super::tree::Style;

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
        Style::SingleQuoted | Style::DoubleQuoted => double_quoted(value),
        Style::Plain | Style::Block if plain_is_safe(value) => value.to_string(),
        Style::Plain | Style::Block => double_quoted(value),
    }
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

/// True when a plain scalar with this text is read as this very string by YAML 1.1 and
/// 1.2 resolvers alike. Errs on the side of quoting: a needless quote is harmless.
pub fn plain_is_safe(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if first.is_ascii_digit() || "-+.?:,[]{}#&*!|>'\"%@`~ \t".contains(first) {
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
    const WORDS: [&str; 12] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", ".inf", ".nan", "<<",
    ];
    !WORDS.iter().any(|w| w.eq_ignore_ascii_case(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_that_read_as_other_types_are_quoted() {
        for v in [
            "1.10", "1.2", "0123", "1234567", "12e4567", "yes", "No", "on", "null", "~", "",
        ] {
            assert_eq!(render(v, Style::Plain), format!("\"{v}\""), "{v}");
        }
        for v in [
            "v1.2.3",
            "main-4d5e6f7",
            "abc1234",
            "sha256:00ff",
            "reg.io/a/b",
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
