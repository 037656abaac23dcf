//! `docs/diagrams/package.puml`: the package diagram of the workspace, read from the code.
//!
//! - the workspace crates, from `cargo metadata --no-deps`;
//! - each crate's top-level modules: the `mod` declarations of its lib.rs;
//! - the uses between those modules: every `crate::<module>` path in a module's files
//!   (comments and a trailing `#[cfg(test)] mod tests` left out);
//! - the path dependencies between workspace crates (normal, dev or build);
//! - the main external crates each module names ([`MAIN_EXTERNAL`]).
//!
//! Everything is sorted, so the same code gives the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// External crates worth a box: the ones that shape the architecture, crates used together
/// sharing one box. Helpers used everywhere (tokio, serde, tracing...) would only add noise.
const MAIN_EXTERNAL: &[&[&str]] = &[
    &["kube", "k8s-openapi"],
    &["schemars"],
    &["serde-saphyr"],
    &["axum", "tower", "tower-http"],
    &["reqwest"],
    &["utoipa"],
    &["sqlx"],
    &["redis"],
    &["redb"],
    &["prometheus-client"],
    &["clap"],
];

const MODULE_COLOR: &str = "#E3F2FD";
const EXTERNAL_COLOR: &str = "#FFF8E1";

/// What the diagram shows of one crate.
struct Crate {
    name: String,
    /// Its directory, relative to the workspace root.
    path: String,
    /// Its top-level modules; `lib.rs` for a library without any.
    modules: Vec<String>,
    /// Per module, the sibling modules it uses.
    uses: BTreeMap<String, BTreeSet<String>>,
    /// Per module, the main external crates it names.
    external: BTreeMap<String, BTreeSet<String>>,
    /// Workspace crates it depends on, with the dependency kind.
    workspace_deps: BTreeSet<(String, String)>,
}

/// The diagram of the workspace at `root`.
pub fn render(root: &Path) -> anyhow::Result<String> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    Ok(draw(&crates(&metadata)?))
}

fn crates(metadata: &Value) -> anyhow::Result<Vec<Crate>> {
    let root = Path::new(metadata["workspace_root"].as_str().unwrap_or_default());
    let members: BTreeSet<&str> = strings(&metadata["workspace_members"]).collect();
    let mut packages: Vec<&Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata has no packages")?
        .iter()
        .filter(|package| members.contains(package["id"].as_str().unwrap_or_default()))
        .collect();
    packages.sort_by_key(|package| package["name"].as_str().unwrap_or_default().to_owned());
    let names: BTreeSet<&str> = packages
        .iter()
        .filter_map(|package| package["name"].as_str())
        .collect();
    packages
        .into_iter()
        .map(|package| analyse(package, root, &names))
        .collect()
}

fn strings(value: &Value) -> impl Iterator<Item = &str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn analyse(package: &Value, root: &Path, workspace: &BTreeSet<&str>) -> anyhow::Result<Crate> {
    let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
    let dependencies = package["dependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut krate = Crate {
        name: package["name"].as_str().unwrap_or_default().to_owned(),
        path: manifest
            .parent()
            .and_then(|dir| dir.strip_prefix(root).ok())
            .map(|dir| dir.display().to_string())
            .unwrap_or_default(),
        modules: Vec::new(),
        uses: BTreeMap::new(),
        external: BTreeMap::new(),
        workspace_deps: dependencies
            .iter()
            .filter_map(|dependency| {
                let name = dependency["name"].as_str()?;
                let kind = dependency["kind"].as_str().unwrap_or("normal");
                workspace
                    .contains(name)
                    .then(|| (name.to_owned(), kind.to_owned()))
            })
            .collect(),
    };
    let Some(lib) = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|target| strings(&target["kind"]).any(|kind| kind == "lib"))
    else {
        return Ok(krate);
    };
    let normal: BTreeSet<&str> = dependencies
        .iter()
        .filter(|dependency| dependency["kind"].is_null())
        .filter_map(|dependency| dependency["name"].as_str())
        .collect();
    let lib_path = Path::new(lib["src_path"].as_str().unwrap_or_default());
    let src = lib_path.parent().unwrap_or(Path::new("."));
    let root_code = code_of(lib_path)?;
    let declared: BTreeSet<String> = module_declarations(&root_code).collect();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for module in &declared {
        let mut code = String::new();
        for file in module_files(src, module)? {
            code.push_str(&code_of(&file)?);
            code.push('\n');
        }
        sources.insert(module.clone(), code);
    }
    // A crate without modules is drawn as its lib.rs.
    if sources.is_empty() {
        sources.insert("lib.rs".to_owned(), root_code);
    }
    for (module, code) in &sources {
        let used = crate_references(code)
            .into_iter()
            .filter(|name| declared.contains(name) && name != module)
            .collect();
        krate.uses.insert(module.clone(), used);
        let named: BTreeSet<String> = MAIN_EXTERNAL
            .iter()
            .flat_map(|group| group.iter())
            .filter(|name| normal.contains(**name) && names_crate(code, &name.replace('-', "_")))
            .map(|name| (*name).to_owned())
            .collect();
        if !named.is_empty() {
            krate.external.insert(module.clone(), named);
        }
    }
    krate.modules = sources.into_keys().collect();
    Ok(krate)
}

/// A file's code without comments and without its trailing tests module.
fn code_of(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(strip_comments(&text))
}

fn strip_comments(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|pair| {
            pair[0].trim() == "#[cfg(test)]" && starts_with_word(pair[1].trim_start(), "mod tests")
        })
        .unwrap_or(lines.len());
    let mut code = lines[..end].join("\n");
    while let Some(start) = code.find("/*") {
        let Some(length) = code[start + 2..].find("*/") else {
            break;
        };
        code.replace_range(start..start + 2 + length + 2, "");
    }
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        // A trailing comment, when the line has no string that could hold "//".
        .map(|line| match line.find("//") {
            Some(at) if !line.contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn starts_with_word(text: &str, word: &str) -> bool {
    text.strip_prefix(word)
        .is_some_and(|rest| !rest.starts_with(is_ident_char))
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The leading identifier of `text` (lowercase, as module names are).
fn identifier(text: &str) -> Option<&str> {
    let first = text.chars().next()?;
    if !(first.is_ascii_lowercase() || first == '_') {
        return None;
    }
    let end = text
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    Some(&text[..end])
}

/// The modules a lib.rs declares: `mod x;`, `pub mod x;`, `pub(crate) mod x;`.
fn module_declarations(code: &str) -> impl Iterator<Item = String> + '_ {
    code.lines().filter_map(|line| {
        let mut rest = line.trim_start();
        if let Some(after) = rest.strip_prefix("pub") {
            rest = match after.strip_prefix('(') {
                Some(scoped) => scoped.split_once(')')?.1,
                None => after,
            };
            if !rest.starts_with(char::is_whitespace) {
                return None;
            }
            rest = rest.trim_start();
        }
        let rest = rest.strip_prefix("mod")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        let name = identifier(rest.trim_start())?;
        let after = rest.trim_start()[name.len()..].trim_start();
        after.starts_with(';').then(|| name.to_owned())
    })
}

/// Top-level module names after `crate::`, including `crate::{a::X, b}` groups.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `crate` as a word: not the end of `my_crate::`.
        if code[..at].ends_with(is_ident_char) {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                if let Some(name) = identifier(item.trim()) {
                    names.insert(name.to_owned());
                }
            }
        } else if let Some(name) = identifier(rest) {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The comma-separated items of a `{...}` group (its opening brace already consumed), nested
/// groups kept whole.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (index, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..index]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    items
}

/// Whether `code` names `ident::` as a path of its own (not `x::ident::` or `my_ident::`).
fn names_crate(code: &str, ident: &str) -> bool {
    let pattern = format!("{ident}::");
    code.match_indices(&pattern).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident_char(c) || c == ':')
    })
}

/// The files of a top-level module: src/m.rs and everything under src/m/.
fn module_files(src: &Path, module: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let mut directories = vec![src.join(module)];
    while let Some(directory) = directories.pop() {
        if !directory.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&directory)? {
            let path = entry?.path();
            if path.is_dir() {
                directories.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn alias(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| part.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
        .collect::<Vec<_>>()
        .join("_")
}

fn draw(crates: &[Crate]) -> String {
    let mut out: Vec<String> = [
        "@startuml",
        "' Generated by `cargo xtask generate` from cargo metadata and the crates' sources;",
        "' do not edit.",
        "skinparam shadowing false",
        "skinparam packageStyle folder",
        "skinparam defaultTextAlignment center",
        "skinparam ArrowColor #455A64",
        "skinparam package {",
        "  BackgroundColor<<crate>> #F5F5F5",
        "  BorderColor #37474F",
        "}",
        "skinparam folder {",
        "  BorderColor #37474F",
        "}",
        "left to right direction",
        "title Workspace crates, their modules and dependencies",
        "legend top right",
        "  grey package: workspace crate (its directory)",
        "  blue folder: top-level module, a `mod` of the crate's lib.rs",
        "  yellow folder: main external crates (crates.io)",
        "  dashed arrow: uses (a crate::module or external:: path in the code)",
        "endlegend",
        "",
    ]
    .map(String::from)
    .to_vec();

    for krate in crates {
        let ident = alias(&["crate", &krate.name]);
        out.push(format!(
            "package \"{}\\n<size:11>{}/</size>\" <<crate>> as {ident} {{",
            krate.name, krate.path
        ));
        for module in &krate.modules {
            out.push(format!(
                "  folder \"{module}\" as {} {MODULE_COLOR}",
                alias(&[&ident, module])
            ));
        }
        out.push("}".into());
    }
    out.push(String::new());

    let used: BTreeSet<&str> = crates
        .iter()
        .flat_map(|krate| krate.external.values().flatten())
        .map(String::as_str)
        .collect();
    let mut group_of: BTreeMap<&str, String> = BTreeMap::new();
    for group in MAIN_EXTERNAL {
        let members: Vec<&str> = group
            .iter()
            .copied()
            .filter(|name| used.contains(name))
            .collect();
        if let Some(first) = members.first() {
            let ident = alias(&["ext", first]);
            out.push(format!(
                "folder \"{}\" as {ident} {EXTERNAL_COLOR}",
                members.join("\\n")
            ));
            for name in members {
                group_of.insert(name, ident.clone());
            }
        }
    }
    out.push(String::new());

    out.push("' Modules: `use crate::...` between the top-level modules of a crate.".into());
    for krate in crates {
        let ident = alias(&["crate", &krate.name]);
        for module in &krate.modules {
            for used in krate.uses.get(module).into_iter().flatten() {
                out.push(format!(
                    "{} ..> {}",
                    alias(&[&ident, module]),
                    alias(&[&ident, used])
                ));
            }
        }
    }
    out.push(String::new());

    out.push("' Crates: path dependencies inside the workspace.".into());
    for krate in crates {
        for (name, kind) in &krate.workspace_deps {
            let label = if kind == "normal" {
                String::new()
            } else {
                format!(" : <<{kind}>>")
            };
            out.push(format!(
                "{} ..> {}{label}",
                alias(&["crate", &krate.name]),
                alias(&["crate", name])
            ));
        }
    }
    out.push(String::new());

    out.push("' External crates: from each module that names one.".into());
    for krate in crates {
        let ident = alias(&["crate", &krate.name]);
        for module in &krate.modules {
            let targets: BTreeSet<&String> = krate
                .external
                .get(module)
                .into_iter()
                .flatten()
                .filter_map(|name| group_of.get(name.as_str()))
                .collect();
            for target in targets {
                out.push(format!("{} ..> {target}", alias(&[&ident, module])));
            }
        }
    }
    out.push("@enduml".into());
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_the_mod_declarations_of_any_visibility() {
        let code = "pub mod api;\nmod error;\npub(crate) mod runtime;\n#[cfg(test)]\nmod x { }\npub use api::X;\nmodern();";
        let found: Vec<String> = module_declarations(code).collect();
        assert_eq!(found, ["api", "error", "runtime"]);
    }

    #[test]
    fn crate_paths_name_their_top_level_module() {
        let code = "use crate::api::Microservice;\nuse crate::{children::{meta, workload}, error::Error};\nlet x = my_crate::other;";
        let found: Vec<String> = crate_references(code).into_iter().collect();
        assert_eq!(found, ["api", "children", "error"]);
    }

    #[test]
    fn comments_and_the_tests_module_are_not_code() {
        let code = "use crate::a; // crate::b\n/* crate::c */\n// crate::d\nlet s = \"//\"; crate::e\n#[cfg(test)]\nmod tests {\n  use crate::f;\n}\n";
        let found: Vec<String> = crate_references(&strip_comments(code))
            .into_iter()
            .collect();
        assert_eq!(found, ["a", "e"]);
    }

    #[test]
    fn external_crates_are_named_as_paths_of_their_own() {
        assert!(names_crate("use kube::Api;", "kube"));
        assert!(names_crate("x(kube::Client::new())", "kube"));
        assert!(!names_crate("use crate::kube::Api;", "kube"));
        assert!(!names_crate("my_kube::x", "kube"));
    }
}
