//! The set of generated files, written or compared with the checked-in ones in one place.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Files by their path relative to the workspace root, and files that must not exist.
#[derive(Default)]
pub struct Generated {
    files: BTreeMap<PathBuf, Vec<u8>>,
    stale: Vec<PathBuf>,
}

impl Generated {
    pub fn add(&mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), contents.into());
    }

    /// A checked-in file whose source is gone (an SVG without its .puml).
    pub fn remove(&mut self, path: impl Into<PathBuf>) {
        self.stale.push(path.into());
    }

    /// Writes the files that differ, removes the stale ones, and says what it did.
    pub fn write(&self, root: &Path) -> anyhow::Result<()> {
        let mut changed = 0;
        for (path, contents) in &self.files {
            if fs::read(root.join(path)).ok().as_deref() != Some(contents.as_slice()) {
                fs::write(root.join(path), contents)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
                changed += 1;
            }
        }
        for path in &self.stale {
            fs::remove_file(root.join(path))
                .with_context(|| format!("removing {}", path.display()))?;
            eprintln!("removed {} (its source is gone)", path.display());
            changed += 1;
        }
        eprintln!(
            "{} generated files, {changed} changed",
            self.files.len() + self.stale.len()
        );
        Ok(())
    }

    /// Compares every file with the checked-in one; true when all match. Each difference is
    /// reported with its first differing line.
    pub fn check(&self, root: &Path) -> anyhow::Result<bool> {
        let mut drifted = 0;
        for (path, contents) in &self.files {
            let checked_in = match fs::read(root.join(path)) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(error) => {
                    return Err(error).with_context(|| format!("reading {}", path.display()));
                }
            };
            if checked_in != *contents {
                eprintln!(
                    "out of date: {} ({})",
                    path.display(),
                    first_difference(&checked_in, contents)
                );
                drifted += 1;
            }
        }
        for path in &self.stale {
            eprintln!("out of date: {} (its source is gone)", path.display());
            drifted += 1;
        }
        if drifted > 0 {
            eprintln!(
                "{drifted} generated files are out of date: run `cargo xtask generate` and commit the result"
            );
        } else {
            eprintln!("{} generated files are up to date", self.files.len());
        }
        Ok(drifted == 0)
    }
}

/// Where two texts part, for a drift report: the line number and both lines.
fn first_difference(checked_in: &[u8], generated: &[u8]) -> String {
    let old = String::from_utf8_lossy(checked_in);
    let new = String::from_utf8_lossy(generated);
    let mut old_lines = old.lines();
    let mut new_lines = new.lines();
    for number in 1.. {
        match (old_lines.next(), new_lines.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => break,
            (a, b) => {
                let (a, b) = (a.unwrap_or("<end of file>"), b.unwrap_or("<end of file>"));
                let column = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
                return format!(
                    "line {number}: checked in `{}`, generated `{}`",
                    excerpt(a, column),
                    excerpt(b, column)
                );
            }
        }
    }
    "differs in line endings".to_owned()
}

/// Up to 80 characters of `line` from a little before `column` (an SVG is one long line).
fn excerpt(line: &str, column: usize) -> String {
    let start = column.saturating_sub(20);
    let text: String = line.chars().skip(start).take(80).collect();
    let before = if start > 0 { "…" } else { "" };
    let after = if line.chars().count() > start + 80 {
        "…"
    } else {
        ""
    };
    format!("{before}{text}{after}")
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn long_lines_are_cut_around_the_difference() {
        let old = format!("{}a{}", "x".repeat(100), "y".repeat(100));
        let new = format!("{}b{}", "x".repeat(100), "y".repeat(100));
        let report = first_difference(old.as_bytes(), new.as_bytes());
        assert_eq!(
            report,
            format!(
                "line 1: checked in `…{}a{}…`, generated `…{}b{}…`",
                "x".repeat(20),
                "y".repeat(59),
                "x".repeat(20),
                "y".repeat(59)
            )
        );
    }

    #[test]
    fn names_the_first_line_that_differs() {
        assert_eq!(
            first_difference(b"a\nb\nc\n", b"a\nB\nc\n"),
            "line 2: checked in `b`, generated `B`"
        );
        assert_eq!(
            first_difference(b"a\n", b"a\nb\n"),
            "line 2: checked in `<end of file>`, generated `b`"
        );
    }
}
