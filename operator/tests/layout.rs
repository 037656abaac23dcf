//! The layout of operator/src: its folders are the pipeline (api -> children -> status ->
//! controller -> runtime, with `error` shared), each module imports only from its own folder
//! or the folders before it, and no module imports one that imports it back.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders (top-level modules) in pipeline order; a module may use its own and earlier ones.
const PIPELINE: [&str; 6] = [
    "error",
    "api",
    "children",
    "status",
    "controller",
    "runtime",
];

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `children/mod.rs` -> `children`, `children/meta.rs` -> `children::meta`, `lib.rs` -> ``.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .filter(|part| part != "mod" && part != "lib")
        .collect();
    parts.join("::")
}

/// The code of a file without its comments and its `#[cfg(test)]` module (tests may reach
/// anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b::Item` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue; // e.g. `kea_operator::crate::`, not ours
        }
        let rest = &code[at + "crate::".len()..];
        if rest.starts_with('{') {
            // `use crate::{a, b}`: each name is a path of its own.
            let inner = &rest[1..rest.find('}').unwrap()];
            for name in inner.split(',') {
                let segments: Vec<String> = name
                    .trim()
                    .split("::")
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if !segments.is_empty() {
                    paths.push(segments);
                }
            }
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segments: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        paths.push(segments);
    }
    paths
}

/// The module a path points into: its longest prefix that is a module; root re-exports
/// (`crate::Error`) resolve through lib.rs's `pub use` lines.
fn target_module(
    segments: &[String],
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Option<String> {
    for len in (1..=segments.len()).rev() {
        let candidate = segments[..len].join("::");
        if modules.contains(&candidate) {
            return Some(candidate);
        }
    }
    reexports.get(&segments[0]).cloned()
}

/// `pub use controller::{ControllerConfig, run_controller};` -> each name to `controller`.
fn root_reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in lib.lines().filter(|l| l.starts_with("pub use ")) {
        let path = line["pub use ".len()..].trim_end_matches(';');
        let (prefix, items) = match path.split_once("::{") {
            Some((prefix, items)) => (prefix.to_owned(), items.trim_end_matches('}').to_owned()),
            None => {
                let (prefix, item) = path.rsplit_once("::").unwrap();
                (prefix.to_owned(), item.to_owned())
            }
        };
        let segments: Vec<String> = prefix.split("::").map(str::to_owned).collect();
        let module = target_module(&segments, modules, &BTreeMap::new()).unwrap();
        for item in items.split(',') {
            names.insert(item.trim().to_owned(), module.clone());
        }
    }
    names
}

/// Which modules each module uses.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let reexports = root_reexports(
        &std::fs::read_to_string(src.join("lib.rs")).unwrap(),
        &modules,
    );
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module.is_empty() {
            continue; // lib.rs declares and re-exports, it imports nothing
        }
        let text = std::fs::read_to_string(file).unwrap();
        let used: BTreeSet<String> = crate_paths(&code(&text))
            .iter()
            .filter_map(|segments| target_module(segments, &modules, &reexports))
            .filter(|target| *target != module)
            .collect();
        graph.insert(module, used);
    }
    graph
}

fn folder(module: &str) -> &str {
    module.split("::").next().unwrap()
}

fn rank(module: &str) -> usize {
    PIPELINE
        .iter()
        .position(|f| *f == folder(module))
        .unwrap_or_else(|| panic!("{module} is in no folder of the pipeline {PIPELINE:?}"))
}

#[test]
fn folders_import_only_from_themselves_and_earlier_folders() {
    let graph = imports();
    assert!(graph.len() > 15, "found only {graph:?}");
    let backwards: Vec<String> = graph
        .iter()
        .flat_map(|(module, used)| {
            used.iter()
                .filter(|target| rank(target) > rank(module))
                .map(move |target| format!("{module} -> {target}"))
        })
        .collect();
    assert!(
        backwards.is_empty(),
        "imports against the pipeline {PIPELINE:?}: {backwards:#?}"
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    let circles: Vec<String> = graph
        .iter()
        .flat_map(|(module, used)| {
            used.iter()
                .filter(|target| *target > module)
                .filter(|target| graph.get(*target).is_some_and(|back| back.contains(module)))
                .map(move |target| format!("{module} <-> {target}"))
        })
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}
