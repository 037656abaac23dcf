//! `cargo xtask generate`: writes every checked-in file that is made from the code, and with
//! `--check` changes nothing and fails, naming each file, when one differs from what it would
//! write. The files and their sources:
//!
//! - the CRD (`operator/crd/`, `deploy/00-crd.yaml`, the chart's `files/`), from the Rust types;
//! - the chart's `files/rbac-rules.yaml`, from the operator's permission table;
//! - `deploy/02-rbac.yaml` and `deploy/03-operator.yaml`, rendered from the chart by helm;
//! - `docs/diagrams/package.puml`, from `cargo metadata` and the crates' sources;
//! - `docs/diagrams/cluster-example.puml`, from `cluster-example.yaml` beside it;
//! - every `docs/diagrams/*.svg`, rendered from its `.puml` by PlantUML.
//!
//! Needs helm (`hack/toolchain.sh helm`, found on PATH, in the toolchain cache, or as $HELM)
//! and plantuml with graphviz (Debian packages `plantuml graphviz`).

mod diagrams;
mod files;
mod manifests;
mod package_diagram;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::files::Generated;

#[derive(Parser)]
#[command(about = "The kea workspace's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the files made from the code (CRD, RBAC, rendered manifests, diagrams).
    Generate {
        /// Change nothing; exit 1, naming each file, when one is out of date.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let Cli {
        command: Command::Generate { check },
    } = Cli::parse();
    match generate(&repo_root(), check) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Generates everything; in check mode reports drift instead of writing. Ok(false) when a file
/// is out of date or the chart grants other rules than the operator's table.
fn generate(root: &Path, check: bool) -> anyhow::Result<bool> {
    let mut generated = Generated::default();
    let rules_match = manifests::generate(root, &mut generated)?;
    diagrams::generate(root, &mut generated)?;
    let up_to_date = if check {
        generated.check(root)?
    } else {
        generated.write(root)?;
        true
    };
    Ok(up_to_date && rules_match)
}

/// The workspace root: the parent of this crate's directory.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lies inside the workspace")
        .to_path_buf()
}
