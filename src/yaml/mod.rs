//! Span-exact YAML editing: only the bytes of the values we change are touched, so the
//! comments, quoting, indentation and line endings that people wrote stay theirs.

pub mod scalar;
pub mod tree;

use std::ops::Range;

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

/// The column (in characters) of `offset` on its line.
pub fn column(source: &str, offset: usize) -> usize {
    source[line_start(source, offset)..offset].chars().count()
}

/// The file's own line ending: CRLF if its first line break is one.
pub fn line_ending(source: &str) -> &'static str {
    match source.find('\n') {
        Some(i) if i > 0 && source.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
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
}
