//! The CRD YAML, generated from the Rust types (`kea-operator crd`). The checked-in copy,
//! `operator/crd/microservices.kea.dev.yaml`, is compared with it by a test.

use kube::CustomResourceExt;

use crate::api::Microservice;
use crate::error::Result;
use crate::render::to_yaml;

/// The command that regenerates the checked-in CRD.
pub const REGENERATE: &str =
    "cargo run -p kea-operator -- crd > operator/crd/microservices.kea.dev.yaml";

/// The CustomResourceDefinition of `Microservice` as YAML.
pub fn crd_yaml() -> Result<String> {
    let header = format!(
        "# Generated from the Rust types in operator/src/api.rs; do not edit.\n# Regenerate: {REGENERATE}\n"
    );
    Ok(header + &to_yaml(&Microservice::crd())?)
}
