//! Invalid Microservices are rejected by the REAL API server, from the CRD's
//! schema and CEL rules, with a message that says what to fix.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use common::namespace_with_crd;
use kea_operator::Microservice;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

/// (name, spec, a fragment the API server's message must contain)
fn bad_specs() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    vec![
        (
            "no-image",
            json!({"replicas": 1}),
            "spec.image: Required value",
        ),
        ("empty-image", json!({"image": ""}), "spec.image"),
        (
            "spaced-image",
            json!({"image": "kea service:1"}),
            "without spaces",
        ),
        ("port-zero", json!({"image": "x", "port": 0}), "spec.port"),
        (
            "port-too-big",
            json!({"image": "x", "port": 70000}),
            "spec.port",
        ),
        (
            "negative-replicas",
            json!({"image": "x", "replicas": -1}),
            "spec.replicas",
        ),
        (
            "min-over-max",
            json!({"image": "x", "resources": {"requests": {"cpu": "100m"}},
            "autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilizationPercentage": 80}}),
            "minReplicas must be less than or equal to autoscaling.maxReplicas",
        ),
        (
            "bad-dependency",
            json!({"image": "x", "dependsOn": [{"name": "Users_DB"}]}),
            "spec.dependsOn[0].name",
        ),
        (
            "depends-on-itself",
            json!({"image": "x", "dependsOn": [{"name": "depends-on-itself"}]}),
            "itself",
        ),
        (
            "duplicate-dependency",
            json!({"image": "x", "dependsOn": [{"name": "users"}, {"name": "users"}]}),
            "Duplicate value",
        ),
        (
            "relative-probe",
            json!({"image": "x", "probes": {"readiness": {"path": "readyz"}}}),
            "must start with '/'",
        ),
        (
            "magic-service",
            json!({"image": "x", "serviceType": "Magic"}),
            "spec.serviceType",
        ),
        (
            "9lives",
            json!({"image": "x"}),
            "metadata.name must be a DNS-1035 label",
        ),
    ]
}

#[tokio::test]
async fn invalid_microservices_are_rejected_with_readable_messages() {
    let Some(namespace) = namespace_with_crd("ms-invalid").await else {
        return;
    };
    let client = namespace.client();
    let resource = ApiResource::erase::<Microservice>(&());
    let microservices: Api<DynamicObject> =
        Api::namespaced_with(client, namespace.name(), &resource);
    let mut failures = Vec::new();
    for (name, spec, fragment) in bad_specs() {
        let object: serde_json::Value = json!({
            "apiVersion": "kea.dev/v1alpha1", "kind": "Microservice",
            "metadata": {"name": name}, "spec": spec,
        });
        // Sent as untyped JSON so that the API server, not the Rust types, judges it.
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        match microservices.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(status)) => {
                eprintln!("{name}: {}", status.message);
                if status.code != 422 || !status.message.contains(fragment) {
                    failures.push(format!(
                        "{name}: HTTP {} {:?} lacks {fragment:?}",
                        status.code, status.message
                    ));
                }
            }
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(other) => failures.push(format!("{name}: {other}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    namespace.cleanup().await.unwrap();
}
