//! Replays the seed corpus (and, with `--ignored`, a file named on TOMODA_FUZZ_REPLAY)
//! through the fuzz targets' properties: a plain, bounded `cargo test`, no libFuzzer or nightly needed.

use std::path::{Path, PathBuf};

/// The seed files of a target, sorted. A missing or empty corpus fails: a replay of
/// nothing would pass whatever the properties say.
fn seeds(target: &str) -> Vec<PathBuf> {
    seeds_in(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target),
    )
}

fn seeds_in(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("no seed corpus at {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(
        !files.is_empty(),
        "the seed corpus {} is empty",
        dir.display()
    );
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    for file in seeds(target) {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its property", file.display());
    }
}

#[test]
fn the_set_image_seeds_hold() {
    replay("set_image", tomoda_promote_fuzz::check_set_image);
}

#[test]
fn the_parse_spec_seeds_hold() {
    replay("parse_spec", tomoda_promote_fuzz::check_parse_spec);
}

#[test]
fn the_config_seeds_hold() {
    replay("config_parse", tomoda_promote_fuzz::check_config);
}

#[test]
fn a_missing_or_empty_corpus_fails_the_replay() {
    let missing = std::env::temp_dir().join(format!("tomoda-no-corpus-{}", std::process::id()));
    assert!(std::panic::catch_unwind(|| seeds_in(&missing)).is_err());
    std::fs::create_dir_all(&missing).unwrap();
    let empty = std::panic::catch_unwind(|| seeds_in(&missing));
    std::fs::remove_dir(&missing).unwrap();
    assert!(empty.is_err());
}

/// Re-runs one input, unwrapped, to see its panic and backtrace:
/// `TOMODA_FUZZ_REPLAY=set_image:path/to/crash cargo test -- --ignored one_input`.
/// Ignored in a plain `cargo test`, and it fails when run without the variable, so it
/// never passes having checked nothing.
#[test]
#[ignore = "replays the input named by TOMODA_FUZZ_REPLAY=TARGET:PATH; run with --ignored"]
fn one_input_from_the_environment() {
    let spec = std::env::var("TOMODA_FUZZ_REPLAY")
        .expect("set TOMODA_FUZZ_REPLAY=TARGET:PATH (e.g. set_image:artifacts/set_image/crash-…)");
    let (target, path) = spec.split_once(':').expect("TARGET:PATH");
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    match target {
        "set_image" => tomoda_promote_fuzz::check_set_image(&data),
        "parse_spec" => tomoda_promote_fuzz::check_parse_spec(&data),
        "config_parse" => tomoda_promote_fuzz::check_config(&data),
        other => panic!("no target {other}: set_image, parse_spec or config_parse"),
    }
}

/// A small, deterministic stand-in for the fuzzer that runs on any toolchain: every seed,
/// mutated a fixed number of times by a xorshift generator (flips, YAML-ish insertions,
/// deletions, lines moved), through each property. Bounded: about a second.
#[test]
fn mutations_of_the_seeds_hold() {
    const ROUNDS: usize = 24;
    const PIECES: [&[u8]; 16] = [
        b"\n", b"\r\n", b" ", b"\t", b"- ", b": ", b"#", b"'", b"\"", b"...\n", b"---\n", b"&a ",
        b"*a", b"!!str ", b"{", b"]",
    ];
    for (target, check) in [
        (
            "set_image",
            tomoda_promote_fuzz::check_set_image as fn(&[u8]),
        ),
        ("parse_spec", tomoda_promote_fuzz::check_parse_spec),
        ("config_parse", tomoda_promote_fuzz::check_config),
    ] {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for file in seeds(target) {
            let seed = std::fs::read(&file).unwrap();
            if seed.len() > 16 << 10 {
                continue;
            }
            for round in 0..ROUNDS {
                let mut data = seed.clone();
                for _ in 0..1 + rng.below(4) {
                    mutate(&mut data, &mut rng, &PIECES);
                }
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(
                    outcome.is_ok(),
                    "{target}: mutation {round} of {} fails: {:?}",
                    file.display(),
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(data: &mut Vec<u8>, rng: &mut XorShift, pieces: &[&[u8]]) {
    // Mutations after the first line keep the edit of a set_image seed readable.
    let start = data.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let at = start + rng.below(data.len() - start + 1);
    match rng.below(4) {
        0 if at < data.len() => data[at] = (rng.next() & 0x7f) as u8,
        1 => {
            let piece = pieces[rng.below(pieces.len())];
            data.splice(at..at, piece.iter().copied());
        }
        2 if at < data.len() => {
            let end = (at + 1 + rng.below(8)).min(data.len());
            data.drain(at..end);
        }
        _ => {
            // Copy a line of the text to another place.
            let line_start = data[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let line_end = data[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(data.len(), |i| at + i + 1);
            let line = data[line_start..line_end].to_vec();
            let to = start + rng.below(data.len() - start + 1);
            data.splice(to..to, line);
        }
    }
}
