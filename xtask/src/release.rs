//! What `hack/release.sh` asks of the workspace: the CHANGELOG section of a version (a version
//! without one is not released) and an SPDX 2.3 SBOM per image, listing the crates of
//! Cargo.lock that cargo compiles for the image's binary (`cargo tree -e normal,build` of its
//! package, for the image's platform) or, for the store images, the Debian packages their
//! dpkg database lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The section of `changelog` for `version`: from its `## [VERSION]` (or `## VERSION`) heading
/// to the next `## ` heading, without trailing blank lines. None when there is no such heading
/// or the section says nothing.
pub fn changelog_section(changelog: &str, version: &str) -> Option<String> {
    let mut lines = changelog.lines();
    lines.find(|line| heading_version(line) == Some(version))?;
    let body: Vec<&str> = lines.take_while(|line| !line.starts_with("## ")).collect();
    let text = body.join("\n").trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The version of a `## [1.2.3] - date` or `## 1.2.3` heading.
fn heading_version(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("## ")?.trim_start();
    let word = rest.split_whitespace().next()?;
    Some(word.trim_start_matches('[').trim_end_matches(']'))
}

/// One component of an image, as the SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Component {
    pub name: String,
    pub version: String,
    /// The declared license (SPDX expression), when the package states one.
    pub license: Option<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A crate of crates.io, with Cargo.lock's checksum of its archive.
    Crate { sha256: Option<String> },
    /// A crate of this workspace.
    Workspace,
    /// A Debian package.
    Deb { architecture: String },
}

impl Component {
    fn purl(&self) -> String {
        match &self.origin {
            Origin::Crate { .. } | Origin::Workspace => {
                format!("pkg:cargo/{}@{}", self.name, self.version)
            }
            Origin::Deb { architecture } => format!(
                "pkg:deb/debian/{}@{}?arch={architecture}",
                self.name, self.version
            ),
        }
    }

    fn download_location(&self) -> String {
        match &self.origin {
            Origin::Crate { .. } => format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                self.name, self.version
            ),
            Origin::Workspace | Origin::Deb { .. } => "NOASSERTION".to_owned(),
        }
    }
}

/// The crates cargo compiles for `package`'s binaries on `target`: its normal and build
/// dependencies, transitively, as `cargo tree` resolves them for that package alone.
pub fn cargo_components(
    root: &Path,
    package: &str,
    target: &str,
) -> anyhow::Result<Vec<Component>> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(root)
        .args(["tree", "--locked", "-p", package, "-e", "normal,build"])
        .args(["--target", target, "--prefix", "none", "-f", "{p}|{l}"])
        .output()
        .context("running cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    parse_cargo_tree(&String::from_utf8(output.stdout)?, &lock_checksums(&lock))
}

/// The components of `cargo tree --prefix none -f '{p}|{l}'` output, each once.
fn parse_cargo_tree(
    tree: &str,
    checksums: &BTreeMap<(String, String), String>,
) -> anyhow::Result<Vec<Component>> {
    let mut components = BTreeSet::new();
    for line in tree.lines().filter(|line| !line.trim().is_empty()) {
        let (package, license) = line
            .split_once('|')
            .with_context(|| format!("unexpected cargo tree line: {line}"))?;
        let mut words = package.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            bail!("unexpected cargo tree line: {line}");
        };
        let version = version.trim_start_matches('v');
        // What follows the version: "(proc-macro)", "(*)" for a repeat, "(/path)" for a
        // crate of the workspace.
        let workspace = words.any(|word| word.starts_with("(/"));
        let key = (name.to_owned(), version.to_owned());
        components.insert(Component {
            name: name.to_owned(),
            version: version.to_owned(),
            license: Some(license.trim().to_owned()).filter(|license| !license.is_empty()),
            origin: if workspace {
                Origin::Workspace
            } else {
                Origin::Crate {
                    sha256: checksums.get(&key).cloned(),
                }
            },
        });
    }
    Ok(components.into_iter().collect())
}

/// Cargo.lock's checksums by (name, version).
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut checksums = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(name), Some(version), Some(checksum)) =
            (field("name"), field("version"), field("checksum"))
        {
            checksums.insert((name, version), checksum);
        }
    }
    checksums
}

/// The installed packages of a dpkg status file (`/var/lib/dpkg/status`).
pub fn dpkg_components(status: &str) -> Vec<Component> {
    let mut components = BTreeSet::new();
    for stanza in status.split("\n\n") {
        let field = |key: &str| {
            stanza.lines().find_map(|line| {
                line.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|value| value.trim().to_owned())
            })
        };
        let installed = field("Status").is_some_and(|status| status.ends_with(" installed"));
        if let (true, Some(name), Some(version)) = (installed, field("Package"), field("Version")) {
            components.insert(Component {
                name,
                version,
                license: None,
                origin: Origin::Deb {
                    architecture: field("Architecture").unwrap_or_else(|| "all".to_owned()),
                },
            });
        }
    }
    components.into_iter().collect()
}

/// The image an SBOM describes.
pub struct Subject<'a> {
    /// The image's name without registry, e.g. "kea-operator".
    pub name: &'a str,
    pub version: &'a str,
    /// The image's manifest digest ("sha256:..."), when it was pushed already.
    pub digest: Option<&'a str>,
    /// RFC 3339 creation time (the released commit's, so that a rebuild matches).
    pub created: &'a str,
}

/// An SPDX 2.3 JSON document: the image as the described package, depending on each component.
pub fn spdx_document(subject: &Subject, components: &[Component]) -> Value {
    let image_id = "SPDXRef-Image";
    let mut packages = vec![json!({
        "name": subject.name,
        "SPDXID": image_id,
        "versionInfo": subject.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for (index, component) in components.iter().enumerate() {
        let id = format!("SPDXRef-Package-{index}");
        let mut package = json!({
            "name": component.name,
            "SPDXID": id,
            "versionInfo": component.version,
            "downloadLocation": component.download_location(),
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": component.license.as_deref().unwrap_or("NOASSERTION"),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": component.purl(),
            }],
        });
        if let Origin::Crate {
            sha256: Some(sha256),
        } = &component.origin
        {
            package["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sha256}]);
        }
        packages.push(package);
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "DEPENDS_ON",
            "relatedSpdxElement": id,
        }));
    }
    let reference = subject.digest.unwrap_or(subject.version);
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", subject.name, subject.version),
        "documentNamespace": format!(
            "https://github.com/kea-dev/kea/releases/{}/sbom/{}/{reference}",
            subject.version, subject.name
        ),
        "creationInfo": {
            "created": subject.created,
            "creators": ["Tool: kea xtask sbom"],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CHANGELOG: &str = "# Changelog\n\n## [Unreleased]\n\n## [1.1.0] - 2026-12-06\n\n### Added\n- S3.\n\n\n## [1.0.0]\n- First.\n## [0.9.0]\n";

    #[test]
    fn a_version_has_its_own_section_only() {
        assert_eq!(
            changelog_section(CHANGELOG, "1.1.0").unwrap(),
            "### Added\n- S3."
        );
        assert_eq!(changelog_section(CHANGELOG, "1.0.0").unwrap(), "- First.");
        // A heading with nothing under it is no entry; nor is a version that is not there,
        // or a prefix of one.
        assert_eq!(changelog_section(CHANGELOG, "0.9.0"), None);
        assert_eq!(changelog_section(CHANGELOG, "1.1"), None);
        assert_eq!(changelog_section(CHANGELOG, "2.0.0"), None);
        assert_eq!(
            changelog_section("## 2.0.0\nText\n", "2.0.0").unwrap(),
            "Text"
        );
    }

    #[test]
    fn cargo_tree_lines_become_components_once() {
        let tree = "kea-service v0.1.0 (/src/service)|Apache-2.0\naxum v0.8.9|MIT\n\
                    serde_derive v1.0.1 (proc-macro)|MIT OR Apache-2.0\naxum v0.8.9 (*)|MIT\n\
                    odd v1.0.0|\n";
        let lock = "[[package]]\nname = \"axum\"\nversion = \"0.8.9\"\nsource = \"registry\"\n\
                    checksum = \"abc\"\n\n[[package]]\nname = \"odd\"\nversion = \"1.0.0\"\n";
        let components = parse_cargo_tree(tree, &lock_checksums(lock)).unwrap();
        let names: Vec<_> = components
            .iter()
            .map(|c| (c.name.as_str(), c.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("axum", "0.8.9"),
                ("kea-service", "0.1.0"),
                ("odd", "1.0.0"),
                ("serde_derive", "1.0.1")
            ]
        );
        assert_eq!(
            components[0].origin,
            Origin::Crate {
                sha256: Some("abc".into())
            }
        );
        assert_eq!(components[1].origin, Origin::Workspace);
        assert_eq!(components[2].license, None);
        assert!(parse_cargo_tree("no separator\n", &BTreeMap::new()).is_err());
    }

    #[test]
    fn only_installed_debian_packages_count() {
        let status = "Package: redis-server\nStatus: install ok installed\nArchitecture: amd64\n\
                      Version: 5:7.0.15-1\n\nPackage: gone\nStatus: deinstall ok config-files\n\
                      Version: 1\n\nPackage: tzdata\nStatus: install ok installed\nVersion: 2025b\n";
        let components = dpkg_components(status);
        assert_eq!(components.len(), 2);
        assert_eq!(
            components[0].purl(),
            "pkg:deb/debian/redis-server@5:7.0.15-1?arch=amd64"
        );
        assert_eq!(components[1].purl(), "pkg:deb/debian/tzdata@2025b?arch=all");
    }

    #[test]
    fn the_document_describes_the_image_and_its_components() {
        let components = vec![Component {
            name: "axum".into(),
            version: "0.8.9".into(),
            license: Some("MIT".into()),
            origin: Origin::Crate {
                sha256: Some("abc".into()),
            },
        }];
        let subject = Subject {
            name: "kea-service",
            version: "1.0.0",
            digest: Some("sha256:1234"),
            created: "2026-12-06T00:00:00Z",
        };
        let document = spdx_document(&subject, &components);
        assert_eq!(document["spdxVersion"], "SPDX-2.3");
        assert_eq!(document["packages"].as_array().unwrap().len(), 2);
        assert_eq!(
            document["packages"][1]["checksums"][0]["checksumValue"],
            "abc"
        );
        assert_eq!(
            document["packages"][1]["externalRefs"][0]["referenceLocator"],
            "pkg:cargo/axum@0.8.9"
        );
        assert_eq!(
            document["relationships"][1]["relatedSpdxElement"],
            "SPDXRef-Package-0"
        );
        assert!(
            document["documentNamespace"]
                .as_str()
                .unwrap()
                .ends_with("/kea-service/sha256:1234")
        );
    }
}
