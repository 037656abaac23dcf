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
//!
//! For `hack/release.sh`: `cargo xtask changelog VERSION` prints the CHANGELOG.md section of a
//! version (and fails without one); `cargo xtask sbom` writes an image's SPDX SBOM.

mod diagrams;
mod files;
mod manifests;
mod package_diagram;
mod release;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::files::Generated;

#[derive(Parser)]
#[command(about = "The kea workspace's developer tasks")]
struct Cli {
    /// The workspace to work on (default: this one); hack/release.sh releases another
    /// commit's tree with this one's tasks.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
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
    /// Print the CHANGELOG.md section of VERSION; exit 1 when it has none.
    Changelog { version: String },
    /// Print an image's SPDX 2.3 SBOM (JSON): the crates cargo compiles for a package's
    /// binaries, or the Debian packages of a dpkg status file.
    Sbom {
        /// The image's name, e.g. kea-operator.
        #[arg(long)]
        image: String,
        /// The release's version.
        #[arg(long)]
        version: String,
        /// The image's manifest digest (sha256:...).
        #[arg(long)]
        digest: Option<String>,
        /// The package whose binaries the image holds.
        #[arg(
            long,
            required_unless_present = "dpkg_status",
            conflicts_with = "dpkg_status"
        )]
        package: Option<String>,
        /// The image's /var/lib/dpkg/status, for an image of Debian packages.
        #[arg(long)]
        dpkg_status: Option<PathBuf>,
        /// The platform the binaries are built for.
        #[arg(long, default_value = "x86_64-unknown-linux-gnu")]
        target: String,
        /// The document's creation time, in seconds since the epoch (the released commit's,
        /// so that a rebuild gives the same document); now by default.
        #[arg(long)]
        created_at: Option<i64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.root.unwrap_or_else(repo_root);
    let result = match cli.command {
        Command::Generate { check } => generate(&root, check),
        Command::Changelog { version } => changelog(&root, &version),
        Command::Sbom {
            image,
            version,
            digest,
            package,
            dpkg_status,
            target,
            created_at,
        } => sbom(
            &root,
            &release::Subject {
                name: &image,
                version: &version,
                digest: digest.as_deref(),
                created: &created(created_at),
            },
            package.as_deref(),
            dpkg_status.as_deref(),
            &target,
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn changelog(root: &Path, version: &str) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(root.join("CHANGELOG.md"))?;
    match release::changelog_section(&text, version) {
        Some(section) => {
            println!("{section}");
            Ok(true)
        }
        None => {
            eprintln!(
                "CHANGELOG.md has no entry for {version}: add a `## [{version}] - DATE` section"
            );
            Ok(false)
        }
    }
}

fn sbom(
    root: &Path,
    subject: &release::Subject,
    package: Option<&str>,
    dpkg_status: Option<&Path>,
    target: &str,
) -> anyhow::Result<bool> {
    let components = match (package, dpkg_status) {
        (Some(package), _) => release::cargo_components(root, package, target)?,
        (None, Some(status)) => release::dpkg_components(&std::fs::read_to_string(status)?),
        (None, None) => anyhow::bail!("name --package or --dpkg-status"),
    };
    let document = release::spdx_document(subject, &components);
    println!("{}", serde_json::to_string_pretty(&document)?);
    eprintln!("{}: {} components", subject.name, components.len());
    Ok(true)
}

/// The SBOM's creation time (RFC 3339): `seconds` since the epoch, else now.
fn created(seconds: Option<i64>) -> String {
    let time = seconds
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .unwrap_or_else(chrono::Utc::now);
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Generates everything; in check mode reports drift instead of writing. Ok(false) when a file
/// is out of date or the chart grants other rules than the operator's table.
fn generate(root: &Path, check: bool) -> anyhow::Result<bool> {
    let mut generated = Generated::default();
    let rules_match = manifests::generate(root, &mut generated)?;
    diagrams::generate(root, &mut generated)?;
    let readme_true = readme_names_version(root, env!("CARGO_PKG_VERSION"))?;
    let up_to_date = if check {
        generated.check(root)?
    } else {
        generated.write(root)?;
        true
    };
    Ok(up_to_date && rules_match && readme_true)
}

/// Whether every install line of README.md (a `--version` or a release download) names
/// `version`, the one the chart and images of this tree carry; each other line is reported.
fn readme_names_version(root: &Path, version: &str) -> anyhow::Result<bool> {
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let stale: Vec<&str> = readme
        .lines()
        .filter(|line| line.contains("oci://ghcr.io") || line.contains("/releases/download/"))
        .filter(|line| {
            !line.contains(&format!("--version {version}"))
                && !line.contains(&format!("/v{version}/"))
        })
        .collect();
    for line in &stale {
        eprintln!("README.md: the install line does not name version {version}: {line}");
    }
    Ok(stale.is_empty())
}

/// The workspace root: the parent of this crate's directory.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lies inside the workspace")
        .to_path_buf()
}
