//! A YAML document as a tree of nodes that know where they stand in the source bytes.
//!
//! yaml-rust2 reports positions as (line, column in characters) and only where a node
//! starts; editing needs byte offsets and, for scalars, where the value ends. This module
//! turns the parser's events into such a tree so the editor can splice bytes and leave
//! everything else untouched.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The UTF-8 byte-order mark; yaml-rust2 would otherwise read it as part of the first key.
const BOM: &str = "\u{feff}";

/// Deeper nesting is refused: building the tree recurses once per level, and a few
/// thousand `- - - …` would overflow the stack. No kustomization comes near it.
const MAX_DEPTH: usize = 200;

/// A place in the source: a byte offset and the 1-based line it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub offset: usize,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// `|` or `>`: the value's bytes cannot be located exactly.
    Block,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub value: String,
    pub style: Style,
    /// First byte of the scalar: its first character, or its opening quote.
    pub start: Pos,
    /// One past the last byte (after the closing quote); `None` where it cannot be
    /// known exactly (block scalars, plain scalars folded over several lines).
    pub end: Option<usize>,
    /// An explicit tag such as `!!str`.
    pub tagged: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Seq {
    pub items: Vec<Node>,
    pub flow: bool,
    pub start: Pos,
    /// For a flow sequence, the offset of its closing `]`.
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    pub entries: Vec<(Node, Node)>,
    pub flow: bool,
    pub start: Pos,
    /// For a flow mapping, the offset of its closing `}`.
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar(Scalar),
    Seq(Seq),
    Map(Map),
    /// `*name`: points at an anchored node elsewhere.
    Alias(Pos),
}

/// One YAML document of a file, with the anchors it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub root: Node,
    /// True when any node carries an `&anchor`.
    pub has_anchors: bool,
}

/// The parser's complaint, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl Node {
    pub fn start(&self) -> Pos {
        match self {
            Node::Scalar(s) => s.start,
            Node::Seq(s) => s.start,
            Node::Map(m) => m.start,
            Node::Alias(p) => *p,
        }
    }

    pub fn line(&self) -> usize {
        self.start().line
    }

    /// The scalar's text, or `None` for anything else.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(&s.value),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar(s) if s.style == Style::Plain && matches!(s.value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What a person would call this node in an error message.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar(_) => "a scalar",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
            Node::Alias(_) => "an alias",
        }
    }
}

impl Map {
    /// The line of the first key: block mappings' own start markers are not reliable.
    pub fn start_line(&self) -> usize {
        self.entries
            .first()
            .map_or(self.start.line, |(k, _)| k.line())
    }

    /// The first entry whose key is the plain string `key`.
    pub fn get(&self, key: &str) -> Option<&(Node, Node)> {
        self.entries.iter().find(|(k, _)| k.as_str() == Some(key))
    }
}

/// Parses every document of `source`.
pub fn parse(source: &str) -> Result<Vec<Document>, ParseError> {
    let (bom, text) = match source.strip_prefix(BOM) {
        Some(rest) => (BOM.len(), rest),
        None => (0, source),
    };
    let lines = LineIndex::new(text, bom);
    if let Some(at) = text.find(|c| !super::is_printable(c)) {
        let c = text[at..].chars().next().unwrap_or_default();
        return Err(ParseError {
            line: lines.line_of(at),
            message: format!(
                "the control character U+{:04X} is not allowed in YAML",
                c as u32
            ),
        });
    }
    let events = events(text, &lines)?;
    let mut builder = Builder {
        text,
        lines: &lines,
        events: events.into_iter().peekable(),
        has_anchors: false,
    };
    builder.documents()
}

/// The parser's events, read one by one: yaml-rust2's own `load` recurses once per level
/// of nesting, and so does building the tree, so depth is checked before either.
fn events(text: &str, lines: &LineIndex) -> Result<Vec<(Event, Marker)>, ParseError> {
    let mut parser = Parser::new_from_str(text);
    let mut events = Vec::new();
    let mut depth = 0usize;
    loop {
        let (event, marker) = parser.next_token().map_err(|e| ParseError {
            // At the end of the text the parser may point one line past the last.
            line: e.marker().line().clamp(1, lines.starts.len()),
            message: e.info().to_string(),
        })?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return Err(ParseError {
                line: lines.pos(text, &marker).line,
                message: format!("collections are nested more than {MAX_DEPTH} levels deep"),
            });
        }
        let end = event == Event::StreamEnd;
        events.push((event, marker));
        if end {
            return Ok(events);
        }
    }
}

/// Maps yaml-rust2's (line, character column) to byte offsets in the original source.
struct LineIndex {
    starts: Vec<usize>,
    bom: usize,
}

impl LineIndex {
    fn new(text: &str, bom: usize) -> Self {
        // Line breaks as YAML counts them: LF, CRLF and a lone CR.
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    starts.push(i + 2);
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        LineIndex { starts, bom }
    }

    /// The 1-based line holding byte `offset` of the text without the BOM.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }

    /// Offset into the text without the BOM.
    fn text_offset(&self, text: &str, marker: &Marker) -> usize {
        let line = marker.line().max(1);
        let Some(&start) = self.starts.get(line - 1) else {
            return text.len();
        };
        text[start..]
            .char_indices()
            .nth(marker.col())
            .map_or(text.len(), |(i, _)| start + i)
    }

    fn pos(&self, text: &str, marker: &Marker) -> Pos {
        Pos {
            offset: self.bom + self.text_offset(text, marker),
            line: marker.line().clamp(1, self.starts.len()),
        }
    }
}

struct Builder<'a, I: Iterator<Item = (Event, Marker)>> {
    text: &'a str,
    lines: &'a LineIndex,
    events: std::iter::Peekable<I>,
    has_anchors: bool,
}

impl<I: Iterator<Item = (Event, Marker)>> Builder<'_, I> {
    fn documents(&mut self) -> Result<Vec<Document>, ParseError> {
        let mut docs = Vec::new();
        while let Some((event, marker)) = self.events.next() {
            match event {
                Event::DocumentStart => {
                    self.has_anchors = false;
                    let root = match self.events.peek() {
                        Some((Event::DocumentEnd, m)) => {
                            let start = self.lines.pos(self.text, m);
                            empty_scalar(start)
                        }
                        _ => self.node()?,
                    };
                    docs.push(Document {
                        root,
                        has_anchors: self.has_anchors,
                    });
                }
                Event::StreamStart | Event::DocumentEnd | Event::StreamEnd | Event::Nothing => {}
                other => return Err(unexpected(&other, &marker)),
            }
        }
        Ok(docs)
    }

    fn node(&mut self) -> Result<Node, ParseError> {
        let Some((event, marker)) = self.events.next() else {
            return Err(ParseError {
                line: 0,
                message: "unexpected end of the document".into(),
            });
        };
        let start = self.lines.pos(self.text, &marker);
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                self.has_anchors |= anchor > 0;
                Ok(Node::Scalar(self.scalar(
                    value,
                    style,
                    start,
                    tag.is_some(),
                )))
            }
            Event::Alias(_) => Ok(Node::Alias(start)),
            Event::SequenceStart(anchor, _) => {
                self.has_anchors |= anchor > 0;
                let mut items = Vec::new();
                loop {
                    if let Some((Event::SequenceEnd, end)) = self.events.peek() {
                        let end = self.lines.pos(self.text, end).offset;
                        self.events.next();
                        let flow = self.byte_at(end) == Some(b']');
                        return Ok(Node::Seq(Seq {
                            items,
                            flow,
                            start,
                            end,
                        }));
                    }
                    items.push(self.node()?);
                }
            }
            Event::MappingStart(anchor, _) => {
                self.has_anchors |= anchor > 0;
                let mut entries = Vec::new();
                loop {
                    if let Some((Event::MappingEnd, end)) = self.events.peek() {
                        let end = self.lines.pos(self.text, end).offset;
                        self.events.next();
                        let flow = self.byte_at(end) == Some(b'}');
                        return Ok(Node::Map(Map {
                            entries,
                            flow,
                            start,
                            end,
                        }));
                    }
                    let key = self.node()?;
                    let value = self.node()?;
                    entries.push((key, value));
                }
            }
            other => Err(unexpected(&other, &marker)),
        }
    }

    fn byte_at(&self, offset: usize) -> Option<u8> {
        offset
            .checked_sub(self.lines.bom)
            .and_then(|o| self.text.as_bytes().get(o).copied())
    }

    fn scalar(&self, value: String, style: TScalarStyle, start: Pos, tagged: bool) -> Scalar {
        let text_start = start.offset - self.lines.bom;
        let rest = &self.text[text_start.min(self.text.len())..];
        let (style, len) = match style {
            TScalarStyle::Plain => (
                Style::Plain,
                // A plain scalar that spans lines is folded: its source differs from its value.
                (!value.is_empty() && rest.starts_with(value.as_str())).then_some(value.len()),
            ),
            TScalarStyle::SingleQuoted => (Style::SingleQuoted, quoted_len(rest, b'\'')),
            TScalarStyle::DoubleQuoted => (Style::DoubleQuoted, quoted_len(rest, b'"')),
            _ => (Style::Block, None),
        };
        Scalar {
            value,
            style,
            start,
            end: len.map(|len| start.offset + len),
            tagged,
        }
    }
}

fn empty_scalar(start: Pos) -> Node {
    Node::Scalar(Scalar {
        value: String::new(),
        style: Style::Plain,
        start,
        end: None,
        tagged: false,
    })
}

/// Length in bytes of a quoted scalar starting at its opening quote, closing quote included.
fn quoted_len(rest: &str, quote: u8) -> Option<usize> {
    let bytes = rest.as_bytes();
    if bytes.first() != Some(&quote) {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn unexpected(event: &Event, marker: &Marker) -> ParseError {
    ParseError {
        line: marker.line(),
        message: format!("unexpected YAML event {event:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(src: &str) -> Node {
        let mut docs = parse(src).expect("parses");
        assert_eq!(docs.len(), 1);
        docs.remove(0).root
    }

    fn scalar_text<'a>(src: &'a str, node: &Node) -> &'a str {
        let Node::Scalar(s) = node else {
            panic!("not a scalar")
        };
        &src[s.start.offset..s.end.expect("end known")]
    }

    #[test]
    fn scalars_know_their_byte_span_across_crlf_utf8_and_bom() {
        let src = "\u{feff}a: 1 # ü\r\nimages:\r\n- name: \"ä/b\"\r\n  newTag: 'it''s'   # c\r\n";
        let Node::Map(top) = root(src) else { panic!() };
        assert_eq!(scalar_text(src, &top.entries[0].0), "a");
        let (_, images) = top.get("images").unwrap();
        let Node::Seq(seq) = images else { panic!() };
        assert!(!seq.flow);
        let Node::Map(item) = &seq.items[0] else {
            panic!()
        };
        assert_eq!(scalar_text(src, &item.get("name").unwrap().1), "\"ä/b\"");
        let tag = &item.get("newTag").unwrap().1;
        assert_eq!(scalar_text(src, tag), "'it''s'");
        assert_eq!(tag.as_str(), Some("it's"));
        assert_eq!(tag.line(), 4);
    }

    #[test]
    fn flow_collections_are_told_from_block_ones() {
        let src = "images: [{name: a, newTag: b}]\nresources:\n- x\n";
        let Node::Map(top) = root(src) else { panic!() };
        assert!(!top.flow);
        let Node::Seq(seq) = &top.get("images").unwrap().1 else {
            panic!()
        };
        assert!(seq.flow);
        assert_eq!(&src[seq.end..=seq.end], "]");
        let Node::Map(item) = &seq.items[0] else {
            panic!()
        };
        assert!(item.flow);
        assert_eq!(&src[item.end..=item.end], "}");
        let Node::Seq(res) = &top.get("resources").unwrap().1 else {
            panic!()
        };
        assert!(!res.flow);
    }

    #[test]
    fn block_and_folded_scalars_have_no_exact_end() {
        let src = "a: |\n  x\nb: one\n  two\n";
        let Node::Map(top) = root(src) else { panic!() };
        let Node::Scalar(a) = &top.entries[0].1 else {
            panic!()
        };
        assert_eq!((a.style, a.end), (Style::Block, None));
        let Node::Scalar(b) = &top.entries[1].1 else {
            panic!()
        };
        assert_eq!(b.value, "one two");
        assert_eq!(b.end, None);
    }

    #[test]
    fn anchors_and_aliases_are_reported() {
        let docs = parse("a: &x 1\nb: *x\n").unwrap();
        assert!(docs[0].has_anchors);
        let Node::Map(top) = &docs[0].root else {
            panic!()
        };
        assert!(matches!(top.entries[1].1, Node::Alias(_)));
    }

    #[test]
    fn errors_carry_the_line() {
        let err = parse("a: b\nc: [d\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn an_error_at_the_end_names_a_line_of_the_file() {
        // Found by fuzzing: the parser reported line 4 of this 3-line text.
        let err = parse("images:\n- mean\nimages ne").unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
    }

    #[test]
    fn a_node_at_the_very_end_is_on_the_last_line() {
        // Found by fuzzing: an empty tagged scalar ending the text was put on line 3 of 2.
        let docs = parse("\n!").unwrap();
        assert_eq!(docs[0].root.line(), 2);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // Found while building the hostile corpus: 10,000 `- ` on one line (20 kB) overflowed the stack.
        let deep = format!("a: 1\nx:\n{}\n", "- ".repeat(10_000));
        let err = parse(&deep).unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        assert!(
            err.message.contains("nested more than 200 levels"),
            "{err:?}"
        );
        assert!(parse(&format!("x:\n{}y\n", "- ".repeat(150))).is_ok());
    }

    #[test]
    fn control_characters_are_refused_at_their_line() {
        // Found by fuzzing: yaml-rust2 ends the text at a NUL, so whatever followed it was
        // invisible to the editor and to its re-parse check.
        let err = parse("a: 1\n\0\0images: x\n").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
        assert!(err.message.contains("U+0000"), "{err:?}");
        for c in ['\u{1}', '\u{7f}', '\u{9b}', '\u{ffff}'] {
            let err = parse(&format!("a: 1\r\nb: x{c}y\n")).unwrap_err();
            assert_eq!(err.line, 2, "{c:?}");
        }
        assert!(parse("\u{feff}a: \"\u{85}\u{a0}\u{e000}\u{1f600}\"\t# ok\n").is_ok());
    }

    #[test]
    fn documents_are_counted() {
        assert_eq!(parse("a: 1\n---\nb: 2\n").unwrap().len(), 2);
        assert_eq!(parse("").unwrap().len(), 0);
    }
}
