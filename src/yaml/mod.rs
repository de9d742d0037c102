//! Span-exact YAML editing: only the bytes of the values we change are touched, so the
//! comments, quoting, indentation and line endings that people wrote stay theirs.

pub mod resolve;
pub mod scalar;
pub mod tree;

use std::ops::Range;

/// YAML's printable characters (1.2, 5.1). yaml-rust2 stops reading at a NUL, which would
/// hide the rest of a file from the editor and its re-parse check alike, and kustomize
/// refuses control characters: text with any other character is refused, and values
/// written into a file escape them.
pub fn is_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        || c >= '\u{10000}'
}

/// Replace `range` of the source with `text` (an empty range inserts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub range: Range<usize>,
    pub text: String,
}

impl Splice {
    pub fn insert(at: usize, text: impl Into<String>) -> Self {
        Splice {
            range: at..at,
            text: text.into(),
        }
    }

    pub fn replace(range: Range<usize>, text: impl Into<String>) -> Self {
        Splice {
            range,
            text: text.into(),
        }
    }

    pub fn remove(range: Range<usize>) -> Self {
        Splice {
            range,
            text: String::new(),
        }
    }
}

/// Applies non-overlapping splices. Returns `None` if two of them overlap, which would
/// mean the editor computed something inconsistent.
pub fn apply(source: &str, splices: &[Splice]) -> Option<String> {
    let mut ordered: Vec<&Splice> = splices.iter().collect();
    // From the end backwards, so earlier offsets stay valid; at one offset a removal goes
    // before an insertion, or the removal would swallow the inserted text.
    ordered.sort_by(|a, b| {
        b.range
            .start
            .cmp(&a.range.start)
            .then(a.range.is_empty().cmp(&b.range.is_empty()))
    });
    let mut out = source.to_string();
    let mut limit = source.len();
    for splice in ordered {
        let Range { start, end } = splice.range.clone();
        if start > end || end > limit || !out.is_char_boundary(start) || !out.is_char_boundary(end)
        {
            return None;
        }
        out.replace_range(start..end, &splice.text);
        limit = start;
    }
    Some(out)
}

/// Where the line holding `offset` starts.
pub fn line_start(source: &str, offset: usize) -> usize {
    source[..offset].rfind('\n').map_or(0, |i| i + 1)
}

/// Just past the line break that ends the line holding `offset`, or the end of the source.
pub fn next_line(source: &str, offset: usize) -> usize {
    source[offset..]
        .find('\n')
        .map_or(source.len(), |i| offset + i + 1)
}

/// The column (in characters) of `offset` on its line; a byte-order mark takes none.
pub fn column(source: &str, offset: usize) -> usize {
    let line = &source[line_start(source, offset)..offset];
    line.strip_prefix('\u{feff}')
        .unwrap_or(line)
        .chars()
        .count()
}

/// The file's own line ending: CRLF if its first line break is one.
pub fn line_ending(source: &str) -> &'static str {
    match source.find('\n') {
        Some(i) if i > 0 && source.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// Equality of loaded YAML data that ignores the order of keys in mappings: the re-parse
/// checks compare what a file means, and hashlink's maps move keys on insertion.
pub fn same_data(a: &yaml_rust2::Yaml, b: &yaml_rust2::Yaml) -> bool {
    use yaml_rust2::Yaml;
    match (a, b) {
        (Yaml::Hash(x), Yaml::Hash(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_data(v, w)))
        }
        (Yaml::Array(x), Yaml::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_data(v, w))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_apply_back_to_front() {
        let s = "abcdef";
        let out = apply(
            s,
            &[
                Splice::replace(0..1, "X"),
                Splice::insert(6, "!"),
                Splice::remove(2..4),
                Splice::insert(4, "-"),
            ],
        );
        assert_eq!(out.as_deref(), Some("Xb-ef!"));
    }

    #[test]
    fn a_removal_and_an_insertion_at_one_offset_both_take_effect() {
        assert_eq!(
            apply(
                "ab\ncd\n",
                &[Splice::remove(3..6), Splice::insert(6, "x\n")]
            )
            .as_deref(),
            Some("ab\nx\n")
        );
        assert_eq!(
            apply("abcd", &[Splice::insert(1, "X"), Splice::remove(1..3)]).as_deref(),
            Some("aXd")
        );
    }

    #[test]
    fn overlapping_splices_are_refused() {
        assert_eq!(
            apply("abcdef", &[Splice::remove(0..3), Splice::remove(2..4)]),
            None
        );
    }

    #[test]
    fn lines_and_columns() {
        let s = "a\r\nbü: c\n";
        assert_eq!(line_ending(s), "\r\n");
        assert_eq!(line_start(s, 6), 3);
        assert_eq!(next_line(s, 4), s.len());
        assert_eq!(column(s, 8), 4);
    }

    #[test]
    fn a_byte_order_mark_takes_no_column() {
        // Found by fuzzing: `images:` was added one column in, under a BOM-led first key.
        let s = "\u{feff}a: 1\n";
        assert_eq!(column(s, 3), 0);
        assert_eq!(column(s, 4), 1);
    }
}
