//! The shape of the source tree: no source file of any member over 600 lines (STYLE.md: split a
//! file along the seams it already has), and layers that stay one-way (no two modules use each
//! other). Function length is clippy's `too_many_lines` (threshold in the workspace's
//! `clippy.toml`, enforced by CI's `cargo clippy -- -D warnings`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The limit, in lines.
const MAX_LINES: usize = 600;

/// The source roots of every member, relative to the workspace root.
const ROOTS: [&str; 5] = ["src", "expr/src", "dtype/src", "mpi/src", "python/src"];

/// Files over the limit that their owners split in the same round (session 3: `cli/map.rs` and
/// `mpi` by d17, `pool/run.rs` and `kernel` by l18). Known until the merge, which empties this
/// list; an entry that is no longer over the limit fails the test, so the list only shrinks.
const KNOWN: [&str; 0] = [];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// (path relative to the workspace root, line count) of every Rust source file of every member.
fn sizes() -> Vec<(String, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for r in ROOTS {
        rust_files(&root.join(r), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files: wrong root?", files.len());
    let mut out: Vec<(String, usize)> = files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            let rel = p.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
            (rel, text.lines().count())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn no_source_file_is_over_600_lines() {
    let sizes = sizes();
    let over: Vec<String> = sizes
        .iter()
        .filter(|(path, n)| *n > MAX_LINES && !KNOWN.contains(&path.as_str()))
        .map(|(path, n)| format!("{path}: {n} lines"))
        .collect();
    assert!(over.is_empty(), "source files over {MAX_LINES} lines (split them):\n{}", over.join("\n"));
}

#[test]
fn every_known_oversized_file_is_still_oversized() {
    let sizes = sizes();
    for known in KNOWN {
        let n = sizes.iter().find(|(p, _)| p == known).map(|&(_, n)| n);
        assert!(
            n.is_some_and(|n| n > MAX_LINES),
            "{known} is listed in KNOWN but is {}: remove it from the list",
            n.map_or("gone".to_string(), |n| format!("{n} lines"))
        );
    }
}

/// Module cycles their owners remove in the same round (b18: the expression compiler), as
/// (root, the modules of the cycle, sorted). An entry no longer found fails the test.
const KNOWN_CYCLES: [(&str, &[&str]); 0] = [];

/// A file's module path inside its crate (`launch/server/client.rs` → `launch::server::client`,
/// `launch/mod.rs` → `launch`, `lib.rs` and `main.rs` → the root, ``).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().expect("a file name");
    let stem = file.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The code of a file without its `#[cfg(test)] mod tests` block (tests may reach anywhere).
fn non_test_code(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// The module paths a file's code names through `crate::` and `super::` (lower-case segments
/// only: `crate::launch::fork::exit_now` → `launch::fork::exit_now`).
fn paths_named(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent_of(module))] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            let segs: Vec<&str> = rest
                .split("::")
                .map(|seg| seg.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""))
                .take_while(|seg| seg.starts_with(|c: char| c.is_ascii_lowercase()))
                .collect();
            let mut full: Vec<&str> = base.split("::").filter(|p| !p.is_empty()).collect();
            full.extend(segs);
            out.push(full.join("::"));
        }
    }
    out
}

/// What `super` names from `module` (`a::b` → `a`, whether `b` is `a/b.rs` or `a/b/mod.rs`).
fn parent_of(module: &str) -> String {
    module.rsplit_once("::").map_or(String::new(), |(p, _)| p.to_string())
}

/// The longest module of `modules` that `path` starts with (`None`: the crate root only).
fn owner<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().find_map(|n| modules.get(&parts[..n].join("::")))
}

/// The module graph of one source root: module → modules its non-test code uses. Edges between a
/// module and its own ancestors or descendants are left out (a parent re-exports its children).
fn graph(root: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let files: Vec<(String, String)> = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "test.rs" && n != "tests.rs"))
        .map(|p| {
            let rel = p.strip_prefix(&dir).expect("under the root");
            (module_of(rel), std::fs::read_to_string(p).expect("readable"))
        })
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).filter(|m| !m.is_empty()).collect();
    let related = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &files {
        for path in paths_named(m, non_test_code(text)) {
            if let Some(to) = owner(&path, &modules) {
                if !m.is_empty() && !related(m, to) {
                    g.entry(m.clone()).or_default().insert(to.clone());
                }
            }
        }
    }
    g
}

/// Sets of modules that reach each other (strongly connected, more than one), each sorted, at
/// the granularity `level` (1: top-level modules; `usize::MAX`: every file's module).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>, level: usize) -> Vec<Vec<String>> {
    let cut = |m: &str| m.split("::").take(level).collect::<Vec<_>>().join("::");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, tos) in g {
        for b in tos {
            let (a, b) = (cut(a), cut(b));
            if a != b {
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for n in edges.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<String> = edges.keys().cloned().collect();
    let reaches: BTreeMap<String, BTreeSet<String>> = nodes.iter().map(|n| (n.clone(), reach(n))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let comp: Vec<String> =
            nodes.iter().filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n)).cloned().collect();
        if comp.len() > 1 {
            out.insert(comp);
        }
    }
    out.into_iter().collect()
}

/// Every cycle of every root, as (root, modules), at both granularities.
fn all_cycles() -> BTreeSet<(String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for root in ROOTS {
        let g = graph(root);
        for level in [1, usize::MAX] {
            out.extend(cycles(&g, level).into_iter().map(|c| (root.to_string(), c)));
        }
    }
    out
}

#[test]
fn no_two_modules_use_each_other() {
    let known: BTreeSet<(String, Vec<String>)> =
        KNOWN_CYCLES.iter().map(|(r, ms)| (r.to_string(), ms.iter().map(|m| m.to_string()).collect())).collect();
    let found = all_cycles();
    let new: Vec<String> = found.difference(&known).map(|(root, ms)| format!("{root}: {}", ms.join(" <-> "))).collect();
    assert!(new.is_empty(), "modules that use each other (layers must be one-way):\n{}", new.join("\n"));
    let gone: Vec<String> =
        known.difference(&found).map(|(root, ms)| format!("{root}: {}", ms.join(" <-> "))).collect();
    assert!(gone.is_empty(), "listed in KNOWN_CYCLES but gone (remove them):\n{}", gone.join("\n"));
}

#[test]
fn the_layer_check_sees_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("process::fork".into()).or_default().insert("process::server".into());
    g.entry("process::server".into()).or_default().insert("process::fork".into());
    g.entry("array::io".into()).or_default().insert("kernel".into());
    g.entry("kernel".into()).or_default().insert("array".into());
    assert_eq!(cycles(&g, usize::MAX), [vec!["process::fork".to_string(), "process::server".to_string()]]);
    assert_eq!(cycles(&g, 1), [vec!["array".to_string(), "kernel".to_string()]]);
    assert_eq!(
        paths_named("launch::server::client", "use super::wire::{recv}; crate::os::pid()"),
        ["os::pid".to_string(), "launch::server::wire".to_string()]
    );
}
