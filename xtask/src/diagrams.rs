//! The diagrams of docs/diagrams/: the generated sources (`package.puml` from the code,
//! `cluster-example.puml` from `cluster-example.yaml`), and an SVG next to every `.puml`.
//!
//! Rendering is offline and deterministic: the SVGs carry no metadata, comments or version
//! strings, so the same sources give the same bytes. Fonts and layout come from Java and
//! graphviz: the checked-in SVGs are made with Debian 12's plantuml 1.2020.02 and graphviz
//! 2.42; other versions render differently and `--check` says so.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::files::Generated;
use crate::package_diagram;

const DIAGRAMS: &str = "docs/diagrams";
const EXPECTED_PLANTUML: &str = "1.2020.02";

pub fn generate(root: &Path, generated: &mut Generated) -> anyhow::Result<()> {
    let dir = root.join(DIAGRAMS);
    // Every source, the generated ones as they are generated now.
    let mut sources: Vec<(String, String)> = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if name.ends_with(".puml") && name != "package.puml" && name != "cluster-example.puml" {
            sources.push((name.to_owned(), fs::read_to_string(&path)?));
        } else if let Some(stem) = name.strip_suffix(".svg")
            && !dir.join(format!("{stem}.puml")).exists()
        {
            generated.remove(format!("{DIAGRAMS}/{name}"));
        }
    }
    let example = fs::read_to_string(dir.join("cluster-example.yaml"))?;
    let example = kea_cli::diagram::render_snapshot("kea-demo", &example)
        .context("rendering docs/diagrams/cluster-example.yaml")?;
    sources.push(("cluster-example.puml".into(), example));
    sources.push(("package.puml".into(), package_diagram::render(root)?));
    sources.sort();

    for (name, svg) in render_svgs(&sources)? {
        generated.add(format!("{DIAGRAMS}/{name}"), svg);
    }
    for (name, text) in sources {
        if name == "package.puml" || name == "cluster-example.puml" {
            generated.add(format!("{DIAGRAMS}/{name}"), text);
        }
    }
    Ok(())
}

/// Every source rendered to SVG by one PlantUML run, as (file name, SVG text).
fn render_svgs(sources: &[(String, String)]) -> anyhow::Result<Vec<(String, String)>> {
    let version = Command::new("plantuml")
        .arg("-version")
        .output()
        .context("plantuml is not installed: apt-get install plantuml graphviz")?;
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version
        .lines()
        .find_map(|line| line.strip_prefix("PlantUML version "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("unknown");
    if version != EXPECTED_PLANTUML {
        eprintln!(
            "warning: plantuml {version}; the SVGs are rendered with {EXPECTED_PLANTUML}: expect layout differences"
        );
    }

    let work = tempfile::tempdir()?;
    for (name, text) in sources {
        fs::write(work.path().join(name), text)?;
    }
    // PlantUML writes a syntax error into the image and carries on: -failfast2 checks the
    // syntax of every file first.
    let status = Command::new("plantuml")
        .args(["-tsvg", "-nometadata", "-failfast2", "-charset", "UTF-8"])
        .args(sources.iter().map(|(name, _)| name))
        .current_dir(work.path())
        .status()?;
    if !status.success() {
        bail!("plantuml failed on one of {DIAGRAMS}/*.puml");
    }
    sources
        .iter()
        .map(|(name, _)| {
            let svg_name = name.replace(".puml", ".svg");
            let svg = fs::read_to_string(work.path().join(&svg_name))
                .with_context(|| format!("plantuml wrote no {svg_name}"))?;
            Ok((svg_name, without_comments(&svg)))
        })
        .collect()
}

/// An SVG without the XML comments PlantUML embeds besides the drawing (entity hashes, and the
/// source with the Java version when metadata is on), ending in one newline.
fn without_comments(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start..].find("-->") {
            Some(end) => rest = &rest[start + end + 3..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out.trim_end_matches('\n').to_owned() + "\n"
}

#[cfg(test)]
mod tests {
    use super::without_comments;

    #[test]
    fn comments_are_dropped_and_one_newline_ends_the_file() {
        assert_eq!(
            without_comments("<svg><!--a\nb--><g/><!--c--></svg>\n\n"),
            "<svg><g/></svg>\n"
        );
    }
}
