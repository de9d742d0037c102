//! The shape of the house, checked: modules depend on each other one way only, and the
//! pure middle (planning and editing) touches no file, socket or process. Read from the
//! `use` lines of `src/`, leaving out `#[cfg(test)]` modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that must stay functions on bytes and data.
const PURE: [&str; 15] = [
    "config",
    "history",
    "holds",
    "image",
    "kustomize",
    "manifests",
    "message",
    "ordering",
    "overlay",
    "plan",
    "pulled",
    "repo",
    "targets",
    "values",
    "yaml",
];

/// What a pure module may not name.
const EDGES: [&str; 8] = [
    "crate::git",
    "crate::report",
    "crate::promote",
    "std::fs",
    "std::net",
    "std::process",
    "reqwest::blocking",
    "std::env",
];

/// Each top-level module of `src/` with the text of its files, test modules left out.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, top: Option<&str>, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let module = top.map_or(name.clone(), str::to_string);
            if path.is_dir() {
                walk(&path, Some(&module), out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !["main", "lib", "tests"].contains(&name.as_str())
            {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                out.entry(module).or_default().push_str(code);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        None,
        &mut out,
    );
    out
}

fn dependencies(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    modules
        .iter()
        .map(|(name, code)| {
            let deps = modules
                .keys()
                .filter(|other| *other != name && code.contains(&format!("crate::{other}")))
                .map(String::as_str)
                .collect();
            (name.as_str(), deps)
        })
        .collect()
}

/// Depth-first search; a module met again on the current path closes a cycle.
fn visit<'a>(
    node: &'a str,
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    if let Some(at) = path.iter().position(|n| *n == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node);
        return Some(cycle);
    }
    if !done.insert(node) {
        return None;
    }
    path.push(node);
    for next in &graph[node] {
        if let Some(cycle) = visit(next, graph, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    None
}

#[test]
fn modules_depend_on_each_other_one_way_only() {
    let modules = modules();
    assert!(
        modules.contains_key("promote") && modules.contains_key("plan"),
        "read src/"
    );
    let graph = dependencies(&modules);
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_pure_middle_touches_no_file_socket_or_process() {
    let modules = modules();
    for name in PURE {
        let code = modules
            .get(name)
            .unwrap_or_else(|| panic!("no module {name}"));
        for edge in EDGES {
            assert!(!code.contains(edge), "{name} names {edge}");
        }
    }
}
