//! The layers of `docs/architecture.md`, held against the code: every `crate::` and `super::`
//! path in `src/` is an edge from the module it is written in to the module it names, and
//! each edge must stay in its layer or point down (or stay within one folder), with no cycle
//! among modules at all. Unit tests at the end of a file (`#[cfg(test)]`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module belongs to the layer of the longest prefix listed.
const LAYERS: &[&[&str]] = &[
    &["error", "close", "config", "model"],
    &["telemetry", "metrics", "outbound"],
    &["store", "protocol", "auth", "budget", "cluster"],
    &["messages", "session::outbox"],
    &["acks", "webhooks", "retention"],
    &["group"],
    &["registry"],
    &["session"],
    &["api"],
    &["startup"],
];

type Module = String;

#[test]
fn no_import_points_up_the_layers() {
    let edges = import_edges();
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            let same_folder = folder(from) == folder(to) && folder(from).is_some();
            if !same_folder && layer(to) > layer(from) {
                wrong.push(format!(
                    "{from} (layer {}) imports {to} (layer {})",
                    layer(from),
                    layer(to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_modules_import_each_other_in_a_loop() {
    let edges = import_edges();
    // Peel off, again and again, every module nothing left imports and every module that
    // imports nothing left: what remains lies on a cycle.
    let mut left: BTreeSet<&Module> = edges.keys().chain(edges.values().flatten()).collect();
    let imports = |m: &Module| edges.get(m).into_iter().flatten();
    loop {
        let peeled: Vec<&Module> = left
            .iter()
            .copied()
            .filter(|m| {
                let imported = left.iter().any(|other| imports(other).any(|t| t == *m));
                let importing = imports(m).any(|t| left.contains(t));
                !imported || !importing
            })
            .collect();
        if peeled.is_empty() {
            break;
        }
        for m in peeled {
            left.remove(m);
        }
    }
    assert!(left.is_empty(), "modules on import cycles: {left:?}");
}

#[test]
fn the_layers_name_every_module() {
    let unlisted: Vec<_> = import_edges()
        .keys()
        .filter(|m| m.as_str() != "lib" && m.as_str() != "main")
        .filter(|m| layer_of(m).is_none())
        .cloned()
        .collect();
    assert!(unlisted.is_empty(), "modules in no layer: {unlisted:?}");
}

fn layer(module: &str) -> usize {
    layer_of(module).unwrap_or(usize::MAX)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(at, names)| names.iter().map(move |name| (at, *name)))
        .filter(|(_, name)| module == *name || module.starts_with(&format!("{name}::")))
        .max_by_key(|(_, name)| name.len())
        .map(|(at, _)| at)
}

fn folder(module: &str) -> Option<&str> {
    module.split_once("::").map(|(top, _)| top).or_else(|| {
        // A folder's own module (`group` for src/group/mod.rs) shares the folder too.
        Path::new("src").join(module).is_dir().then_some(module)
    })
}

/// Module → the modules it names, from every source file under `src/`.
fn import_edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for file in rust_files(Path::new("src")) {
        let module = module_of(&file);
        let source = std::fs::read_to_string(&file).expect("source file readable");
        let mut targets = BTreeSet::new();
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        for line in code.lines().map(|l| l.split("//").next().unwrap_or("")) {
            for path in paths_after(line, "crate::") {
                targets.insert(resolve(&path));
            }
            for path in paths_after(line, "super::") {
                let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
                let parent = if file.ends_with("mod.rs") {
                    module.as_str()
                } else {
                    parent
                };
                let full = if parent.is_empty() {
                    path
                } else {
                    format!("{parent}::{path}")
                };
                targets.insert(resolve(&full));
            }
        }
        targets.retain(|t| *t != module && !module.starts_with(&format!("{t}::")));
        edges.insert(module, targets);
    }
    edges
}

/// The `a::b::c` paths written after each occurrence of `prefix` (a `{` list stops the path).
fn paths_after(line: &str, prefix: &str) -> Vec<String> {
    line.match_indices(prefix)
        .map(|(at, _)| {
            line[at + prefix.len()..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .trim_end_matches(':')
                .to_owned()
        })
        .collect()
}

/// The deepest module a path names: `group::policy::judge_ack` → `group::policy`.
fn resolve(path: &str) -> Module {
    let mut module = Vec::new();
    for segment in path.split("::") {
        let candidate = Path::new("src").join(module.join("/")).join(segment);
        if candidate.with_extension("rs").is_file() || candidate.join("mod.rs").is_file() {
            module.push(segment);
        } else {
            break;
        }
    }
    module.join("::")
}

fn module_of(file: &Path) -> Module {
    let relative = file.strip_prefix("src").expect("under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
