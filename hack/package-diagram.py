#!/usr/bin/env python3
"""Writes docs/diagrams/package.puml: the package diagram of the Cargo workspace, read from the code.

- the workspace crates, from `cargo metadata --no-deps --format-version 1`;
- each crate's main modules: the `mod`/`pub mod` declarations of its lib.rs;
- the dependencies between those modules: every `crate::<module>` path in a module's
  files (comments and the trailing `#[cfg(test)] mod tests` left out);
- the dependencies between workspace crates (path dependencies, normal or dev);
- the main external crates each crate depends on (MAIN_EXTERNAL below), with the modules
  that name them.

Output is sorted, so the same code gives the same file.

    hack/package-diagram.py                  # print the diagram
    hack/package-diagram.py -o FILE          # write it to FILE
    hack/package-diagram.py --metadata JSON  # read cargo metadata from a file instead
"""

import argparse
import json
import os
import re
import subprocess
import sys

# External crates worth a box: the ones that shape the architecture, crates used together
# sharing one box. Helpers used everywhere (tokio, serde, tracing, thiserror...) would only
# add noise.
MAIN_EXTERNAL = [
    ["kube", "k8s-openapi"],
    ["schemars"],
    ["serde-saphyr"],
    ["axum", "tower", "tower-http"],
    ["reqwest"],
    ["utoipa"],
    ["sqlx"],
    ["redis"],
    ["redb"],
    ["prometheus-client"],
    ["clap"],
]

MODULE_COLOR = "#E3F2FD"
EXTERNAL_COLOR = "#FFF8E1"

MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
TESTS_MODULE = re.compile(r"^\s*#\[cfg\(test\)\]\s*\n\s*mod\s+tests\b", re.M)
CRATE_PATH = re.compile(r"\bcrate::")
IDENT = re.compile(r"[a-z_][a-z0-9_]*")


def alias(*parts):
    return "_".join(re.sub(r"[^A-Za-z0-9]", "_", part) for part in parts)


def strip_comments(text):
    """Drops the tests module at the end, block comments and // comments."""
    match = TESTS_MODULE.search(text)
    if match:
        text = text[: match.start()]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("//"):
            continue
        # A trailing comment, when the line has no string that could hold "//".
        if '"' not in line and "//" in line:
            line = line[: line.index("//")]
        lines.append(line)
    return "\n".join(lines)


def crate_references(code):
    """Top-level module names after `crate::`, including `crate::{a::X, b}` groups."""
    names = set()
    for match in CRATE_PATH.finditer(code):
        rest = code[match.end():]
        if rest.startswith("{"):
            depth, items, current = 0, [], ""
            for char in rest:
                if char == "{":
                    depth += 1
                    if depth == 1:
                        continue
                elif char == "}":
                    depth -= 1
                    if depth == 0:
                        items.append(current)
                        break
                if depth == 1 and char == ",":
                    items.append(current)
                    current = ""
                else:
                    current += char
            for item in items:
                ident = IDENT.match(item.strip())
                if ident:
                    names.add(ident.group(0))
        else:
            ident = IDENT.match(rest)
            if ident:
                names.add(ident.group(0))
    return names


def module_files(src_dir, module):
    """The files of a top-level module: src/m.rs and everything under src/m/."""
    files = []
    single = os.path.join(src_dir, module + ".rs")
    if os.path.isfile(single):
        files.append(single)
    directory = os.path.join(src_dir, module)
    if os.path.isdir(directory):
        for root, _, names in os.walk(directory):
            files.extend(os.path.join(root, n) for n in names if n.endswith(".rs"))
    return sorted(files)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def analyse(package, root):
    lib = next((t for t in package["targets"] if "lib" in t["kind"]), None)
    crate = {
        "name": package["name"],
        "path": os.path.relpath(os.path.dirname(package["manifest_path"]), root),
        "modules": [],
        "uses": {},
        "external": {},
    }
    if lib is None:
        return crate
    dependency_names = {d["name"] for d in package["dependencies"] if d["kind"] is None}
    externals = [name for group in MAIN_EXTERNAL for name in group if name in dependency_names]
    src_dir = os.path.dirname(lib["src_path"])
    root_code = strip_comments(read(lib["src_path"]))
    modules = sorted(set(MOD_DECL.findall(root_code)))
    crate["modules"] = modules
    # A crate without modules is drawn as its lib.rs.
    sources = {m: [strip_comments(read(f)) for f in module_files(src_dir, m)] for m in modules}
    if not modules:
        sources = {"lib.rs": [root_code]}
    for module, texts in sources.items():
        code = "\n".join(texts)
        crate["uses"][module] = sorted(
            name for name in crate_references(code) if name in modules and name != module
        )
        for external in externals:
            ident = external.replace("-", "_")
            if re.search(r"(?<![A-Za-z0-9_:])" + ident + r"::", code):
                crate["external"].setdefault(module, set()).add(external)
    crate["modules"] = sorted(sources)
    return crate


def wrap(words, width):
    """Joins words with ", " into lines of at most `width` characters."""
    lines, current = [], ""
    for word in words:
        candidate = word if not current else current + ", " + word
        if current and len(candidate) > width:
            lines.append(current + ",")
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def render(metadata):
    root = metadata["workspace_root"]
    members = set(metadata["workspace_members"])
    packages = sorted(
        (p for p in metadata["packages"] if p["id"] in members), key=lambda p: p["name"]
    )
    names = {p["name"] for p in packages}
    crates = [analyse(p, root) for p in packages]
    for package, crate in zip(packages, crates):
        crate["workspace_deps"] = sorted(
            {(d["name"], d["kind"] or "normal") for d in package["dependencies"] if d["name"] in names}
        )

    out = [
        "@startuml",
        "' Generated by hack/package-diagram.py from cargo metadata and the crates' sources;",
        "' regenerate with hack/diagrams.sh, do not edit.",
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
    for crate in crates:
        ident = alias("crate", crate["name"])
        out.append(f'package "{crate["name"]}\\n<size:11>{crate["path"]}/</size>" <<crate>> as {ident} {{')
        for module in crate["modules"]:
            out.append(f'  folder "{module}" as {alias(ident, module)} {MODULE_COLOR}')
        out.append("}")
    out.append("")

    used = {e for crate in crates for names in crate["external"].values() for e in names}
    groups = [[name for name in group if name in used] for group in MAIN_EXTERNAL]
    group_of = {}
    for group in groups:
        if group:
            ident = alias("ext", group[0])
            label = "\\n".join(group)
            out.append(f'folder "{label}" as {ident} {EXTERNAL_COLOR}')
            group_of.update((name, ident) for name in group)
    out.append("")

    out.append("' Modules: `use crate::...` between the top-level modules of a crate.")
    for crate in crates:
        ident = alias("crate", crate["name"])
        for module in crate["modules"]:
            for used_module in crate["uses"][module]:
                out.append(f"{alias(ident, module)} ..> {alias(ident, used_module)}")
    out.append("")

    out.append("' Crates: path dependencies inside the workspace.")
    for crate in crates:
        for name, kind in crate["workspace_deps"]:
            label = "" if kind == "normal" else f" : <<{kind}>>"
            out.append(f"{alias('crate', crate['name'])} ..> {alias('crate', name)}{label}")
    out.append("")

    out.append("' External crates: from each module that names one.")
    for crate in crates:
        ident = alias("crate", crate["name"])
        for module in crate["modules"]:
            targets = sorted({group_of[e] for e in crate["external"].get(module, ())})
            for target in targets:
                out.append(f"{alias(ident, module)} ..> {target}")
    out.append("@enduml")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    parser.add_argument("--metadata", help="read `cargo metadata` JSON from this file")
    args = parser.parse_args()
    if args.metadata:
        metadata = json.loads(read(args.metadata))
    else:
        metadata = json.loads(
            subprocess.run(
                ["cargo", "metadata", "--no-deps", "--format-version", "1"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    text = render(metadata)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
