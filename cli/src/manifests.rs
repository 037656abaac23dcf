//! The manifests the operator is installed with, as YAML: its CRD (`kea-operator crd`) and the
//! RBAC rules it needs (`kea-operator rbac`). `hack/manifests.sh` writes the checked-in copies
//! (`operator/crd/`, `deploy/`, the chart) from these, and tests fail when they drift.

use kea_operator::{Result, crd, rbac};

use crate::render::{to_yaml, to_yaml_stream};

/// The command that regenerates the checked-in CRD.
pub const REGENERATE: &str =
    "cargo run -p kea-cli -- crd > operator/crd/microservices.kea.dev.yaml";

/// The CRD as YAML, with a header that says where it comes from.
pub fn crd_yaml() -> Result<String> {
    let header = format!(
        "# Generated from the Rust types in operator/src/api.rs; do not edit.\n# Regenerate: {REGENERATE}\n"
    );
    Ok(header + &to_yaml(&crd::crd()?)?)
}

/// The operator's ClusterRole and leader-election Role (in `namespace`); for an operator
/// confined to `watch_namespace`, its permissions there as a Role and a ClusterRole with the
/// cluster-scoped reads only.
pub fn rbac_yaml(namespace: &str, watch_namespace: Option<&str>) -> Result<String> {
    let documents = match watch_namespace {
        None => vec![
            serde_json::to_value(rbac::cluster_role())?,
            serde_json::to_value(rbac::lease_role(namespace))?,
        ],
        Some(watched) => vec![
            serde_json::to_value(rbac::cluster_scoped_role())?,
            serde_json::to_value(rbac::watched_namespace_role(watched))?,
            serde_json::to_value(rbac::lease_role(namespace))?,
        ],
    };
    to_yaml_stream(&documents)
}
