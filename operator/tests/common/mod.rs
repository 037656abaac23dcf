//! Helpers shared by the operator's tests on the real control plane.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kea_operator::Microservice;
use kea_testkit::{TestNamespace, wait_for};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::conditions;
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;

/// How long a test waits for the cluster to get somewhere.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh namespace with the CRD installed (or updated, with server-side
/// apply) and served; `None` when the test is skipped for lack of a cluster.
pub async fn namespace_with_crd(prefix: &str) -> Option<TestNamespace> {
    let namespace = TestNamespace::create_or_skip(prefix).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(namespace.client());
    let crd = Microservice::crd();
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("kea-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait_for(
        &crds,
        &crd.name_any(),
        conditions::is_crd_established(),
        TIMEOUT,
    )
    .await
    .unwrap();
    Some(namespace)
}

/// A Microservice object from a JSON spec.
pub fn microservice(name: &str, spec: serde_json::Value) -> Microservice {
    serde_json::from_value(json!({
        "apiVersion": "kea.dev/v1alpha1",
        "kind": "Microservice",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}
