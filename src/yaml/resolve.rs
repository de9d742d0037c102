//! How the YAML readers a kustomization meets take a plain (unquoted) scalar: kubectl,
//! kustomize and Argo CD read it with go-yaml v2 or v3, other tools with YAML 1.2's core
//! schema or YAML 1.1 (as PyYAML implements it). A value goes into a file plain only when
//! every one of them reads it as a string, so `4.99.11.0-wecare` or an ECR host stays as
//! its siblings are written, while `1.10` or an all-digit SHA gets quotes.
//!
//! Each reader's rules are written out from its own definition; where one is unsure
//! (numbers too large for Go's parsers, which Go then leaves as strings) they err towards
//! "not a string": a needless quote is harmless, a missing one turns a tag into a number.

use std::sync::LazyLock;

use regex_lite::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// gopkg.in/yaml.v2: YAML 1.1 words (`yes`, `on`, `y`), Go's number syntax, timestamps.
    GoYamlV2,
    /// gopkg.in/yaml.v3 (kyaml, hence kustomize): YAML 1.2 words, Go's number syntax.
    GoYamlV3,
    /// The YAML 1.2 core schema (10.3.2).
    Yaml12Core,
    /// YAML 1.1 types as PyYAML's resolver reads them (no `y`/`n`, `1e3` a string).
    PyYaml11,
}

impl Reader {
    pub const ALL: [Reader; 4] = [
        Reader::GoYamlV2,
        Reader::GoYamlV3,
        Reader::Yaml12Core,
        Reader::PyYaml11,
    ];

    /// True when this reader takes the plain scalar `text` for the string `text`.
    pub fn reads_as_string(self, text: &str) -> bool {
        match self {
            Reader::GoYamlV2 => go_yaml_reads_as_string(text, GO_YAML_V2_WORDS),
            Reader::GoYamlV3 => go_yaml_reads_as_string(text, &[]),
            Reader::Yaml12Core => !matches(&YAML12_CORE, text),
            Reader::PyYaml11 => !matches(&PYYAML11, text),
        }
    }
}

/// True when every reader takes the plain scalar `text` for the string `text`.
pub fn reads_as_string_everywhere(text: &str) -> bool {
    Reader::ALL.iter().all(|r| r.reads_as_string(text))
}

fn matches(patterns: &[Regex], text: &str) -> bool {
    patterns.iter().any(|p| p.is_match(text))
}

fn anchored(patterns: &[&str]) -> Vec<Regex> {
    patterns
        .iter()
        .map(|p| Regex::new(&format!("^(?:{p})$")).expect("a valid pattern"))
        .collect()
}

/// Null, bool, int and float of the core schema.
static YAML12_CORE: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    anchored(&[
        r"null|Null|NULL|~|",
        r"true|True|TRUE|false|False|FALSE",
        r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+",
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?",
        r"[-+]?(?:\.inf|\.Inf|\.INF)|\.nan|\.NaN|\.NAN",
    ])
});

/// PyYAML's implicit types: bool, float (a dot required, a signed exponent), int (binary,
/// old-style octal, sexagesimal, `_` anywhere after the first digit), merge, null,
/// timestamp, value (`=`, which its safe loader refuses outright).
static PYYAML11: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    anchored(&[
        r"yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
        r"[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?",
        r"\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
        r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"[-+]?(?:\.inf|\.Inf|\.INF)|\.nan|\.NaN|\.NAN",
        r"[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+",
        r"[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+",
        r"<<",
        r"~|null|Null|NULL|",
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
        r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?",
        r"=",
    ])
});

/// Words both go-yaml versions look up before anything else.
const GO_YAML_WORDS: &[&str] = &[
    "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", ".nan",
    ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
    "<<",
];

/// The YAML 1.1 booleans go-yaml v2 adds to them.
const GO_YAML_V2_WORDS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off",
    "OFF",
];

/// go-yaml's resolver: the words, then for text led by a digit or a sign a timestamp,
/// Go's integer syntax (`_` removed first), its YAML-style float; for text led by a dot,
/// Go's float syntax.
fn go_yaml_reads_as_string(text: &str, more_words: &[&str]) -> bool {
    if GO_YAML_WORDS.contains(&text) || more_words.contains(&text) {
        return false;
    }
    match text.as_bytes()[0] {
        b'.' => !GO_DOT_FLOAT.is_match(text),
        b'0'..=b'9' | b'+' | b'-' => {
            let plain = text.replace('_', "");
            !(GO_TIMESTAMP.is_match(text)
                || is_go_integer(&plain)
                || GO_YAML_STYLE_FLOAT.is_match(&plain))
        }
        _ => true,
    }
}

/// What `strconv.ParseFloat` takes after a leading dot (underscores need a base prefix).
static GO_DOT_FLOAT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\.[0-9]+(?:[eE][-+]?[0-9]+)?$").expect("a valid pattern"));

/// go-yaml's own float shape, checked before `strconv.ParseFloat`.
static GO_YAML_STYLE_FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
        .expect("a valid pattern")
});

/// Four digits and a dash, then what Go's `time.Parse` accepts for "2006-1-2", optionally
/// followed by a time; anything after `T` or a space is taken for a time (more than Go
/// parses, so more is quoted).
static GO_TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt ].*)?$").expect("a valid pattern")
});

/// `strconv.ParseInt(text, 0, 64)` or `ParseUint` syntax: a sign, then `0x`, `0o`, `0b`,
/// a leading `0` (octal) or decimal digits. Values too large for 64 bits count as numbers.
fn is_go_integer(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (digits, radix) = match unsigned.get(..2) {
        Some("0x" | "0X") => (&unsigned[2..], 16),
        Some("0o" | "0O") => (&unsigned[2..], 8),
        Some("0b" | "0B") => (&unsigned[2..], 2),
        _ if unsigned.len() > 1 && unsigned.starts_with('0') => (&unsigned[1..], 8),
        _ => (unsigned, 10),
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reader's verdict on plain scalars: `S` a string, `-` something else, in the
    /// order go-yaml v2, go-yaml v3, YAML 1.2 core, PyYAML (YAML 1.1).
    const TABLE: &[(&str, &str)] = &[
        // Tags and names that must stay plain.
        ("v1.2.3", "SSSS"),
        ("1.2.3", "SSSS"),
        ("1.2.3-rc1", "SSSS"),
        ("4.99.11.0-wecare", "SSSS"),
        ("main-4d5e6f7", "SSSS"),
        ("4d5e6f7", "SSSS"),
        (
            "478468757808.dkr.ecr.ap-south-1.amazonaws.com/team/new",
            "SSSS",
        ),
        ("sha256:00ff", "SSSS"),
        ("2024-01-01-abc1234", "SSSS"),
        ("20240101.1", "----"),
        ("yEs", "SSSS"),
        ("~x", "SSSS"),
        ("+x", "SSSS"),
        (".x", "SSSS"),
        ("0x", "SSSS"),
        ("0b2", "SSSS"),
        ("1.0.0_beta", "SSSS"),
        // Numbers.
        ("1234567", "----"),
        ("4012345678901234567890123456789012345678", "----"),
        ("1.10", "----"),
        ("012", "----"),
        ("08", "---S"),
        ("0x1F", "----"),
        ("0o17", "---S"),
        ("0b101", "--S-"),
        ("1_000", "--S-"),
        ("1_", "--S-"),
        ("1e3", "---S"),
        ("12e4567", "---S"),
        ("1.0e+5", "----"),
        ("1.", "----"),
        (".5", "----"),
        ("-.5", "---S"),
        ("+1", "----"),
        ("-1", "----"),
        ("12:30:00", "SSS-"),
        ("190:20:30.15", "SSS-"),
        (".inf", "----"),
        ("-.Inf", "----"),
        (".NaN", "----"),
        // Words.
        ("yes", "-SS-"),
        ("No", "-SS-"),
        ("on", "-SS-"),
        ("OFF", "-SS-"),
        ("y", "-SSS"),
        ("N", "-SSS"),
        ("true", "----"),
        ("False", "----"),
        ("~", "----"),
        ("null", "----"),
        ("NULL", "----"),
        ("", "----"),
        ("<<", "--S-"),
        ("=", "SSS-"),
        // Dates and times.
        ("2024-01-01", "--S-"),
        ("2024-1-1", "--SS"),
        ("2024-01-01T10:00:00Z", "--S-"),
        ("2024-01-01 10:00:00", "--S-"),
    ];

    fn verdicts(text: &str) -> String {
        Reader::ALL
            .iter()
            .map(|r| if r.reads_as_string(text) { 'S' } else { '-' })
            .collect()
    }

    #[test]
    fn each_reader_reads_plain_scalars_by_its_own_rules() {
        let wrong: Vec<String> = TABLE
            .iter()
            .filter(|(text, expected)| verdicts(text) != *expected)
            .map(|(text, expected)| {
                format!("{text:?}: expected {expected}, got {}", verdicts(text))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_issue_examples_are_plain_or_quoted_as_promised() {
        for plain in [
            "4.99.11.0-wecare",
            "v1.2.3",
            "1.2.3-rc1",
            "main-4d5e6f7",
            "478468757808.dkr.ecr.ap-south-1.amazonaws.com/team/new",
        ] {
            assert!(reads_as_string_everywhere(plain), "{plain}");
        }
        for quoted in [
            "1.10",
            "1e3",
            "0x1F",
            "0o17",
            "012",
            "1_000",
            "12:30:00",
            "2024-01-01",
            "yes",
            "~",
            "4012345678901234567890123456789012345678",
        ] {
            assert!(!reads_as_string_everywhere(quoted), "{quoted}");
        }
    }

    /// The PyYAML column, checked against PyYAML itself when python3 has it (this machine
    /// does; a CI image without it skips the check and says so).
    #[test]
    fn the_pyyaml_column_agrees_with_pyyaml() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let script = "import sys, json, yaml\n\
            for line in sys.stdin:\n    \
                s = json.loads(line)\n    \
                try:\n        v = yaml.safe_load('v: ' + s)['v']\n        ok = isinstance(v, str) and v == s\n    \
                except Exception:\n        ok = False\n    \
                print('S' if ok else '-')\n";
        let child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: no python3 to check the PyYAML column against");
            return;
        };
        let input: String = TABLE
            .iter()
            .map(|(t, _)| format!("{}\n", serde_json::Value::from(*t)))
            .collect();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("No module named 'yaml'"), "{err}");
            eprintln!("skipped: python3 has no PyYAML to check the PyYAML column against");
            return;
        }
        let answers = String::from_utf8(out.stdout).unwrap();
        assert_eq!(answers.lines().count(), TABLE.len());
        for ((text, _), pyyaml) in TABLE.iter().zip(answers.lines()) {
            let ours = if Reader::PyYaml11.reads_as_string(text) {
                "S"
            } else {
                "-"
            };
            assert_eq!(ours, pyyaml, "{text:?}: our table vs PyYAML");
        }
    }
}
