//! Invalid Microservices are rejected by the REAL API server, from the CRD's
//! schema and CEL rules, with a message that says what to fix.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use common::namespace_with_crd;
use kea_operator::Microservice;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

/// (name, spec, what the API server's message must contain: the field and what to fix)
fn bad_specs() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    vec![
        (
            "no-image",
            json!({"replicas": 1}),
            "spec.image: Required value",
        ),
        (
            "empty-image",
            json!({"image": ""}),
            "spec.image in body should be at least 1 chars long",
        ),
        (
            "spaced-image",
            json!({"image": "kea service:1"}),
            "image must be an image reference without spaces",
        ),
        (
            "port-zero",
            json!({"image": "x", "port": 0}),
            "spec.port in body should be greater than or equal to 1",
        ),
        (
            "port-too-big",
            json!({"image": "x", "port": 70000}),
            "spec.port in body should be less than or equal to 65535",
        ),
        (
            "negative-replicas",
            json!({"image": "x", "replicas": -1}),
            "spec.replicas in body should be greater than or equal to 0",
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
            "spec.dependsOn[0].name: Invalid value: \"string\": dependsOn name must be a DNS-1035 label: lowercase letters",
        ),
        (
            "depends-on-itself",
            json!({"image": "x", "dependsOn": [{"name": "depends-on-itself"}]}),
            "spec.dependsOn must not name the Microservice itself: remove this Microservice's own name",
        ),
        (
            "duplicate-dependency",
            json!({"image": "x", "dependsOn": [{"name": "users"}, {"name": "users"}]}),
            r#"spec.dependsOn[1]: Duplicate value: {"name":"users"}"#,
        ),
        (
            "relative-probe",
            json!({"image": "x", "probes": {"readiness": {"path": "readyz"}}}),
            "must start with '/'",
        ),
        (
            "relative-shared-probe",
            json!({"image": "x", "probes": {"path": "index.html"}}),
            "probes.path must start with '/', e.g. /",
        ),
        (
            "tcp-probe-with-path",
            json!({"image": "x", "probes": {"liveness": {"type": "TCP", "path": "/healthz"}}}),
            "a TCP probe has no path: remove path, or set type to HTTP",
        ),
        (
            "tcp-probes-with-path",
            json!({"image": "x", "probes": {"type": "TCP", "path": "/"}}),
            "probes.path is the path of HTTP probes: remove it, or set probes.type to HTTP",
        ),
        (
            "grpc-probe",
            json!({"image": "x", "probes": {"type": "GRPC"}}),
            r#"spec.probes.type: Unsupported value: "GRPC": supported values: "HTTP", "TCP""#,
        ),
        (
            "runs-as-root",
            json!({"image": "x", "runAsUser": 0}),
            "runAsUser must be a non-root user ID from 1 to 2147483647",
        ),
        (
            "magic-service",
            json!({"image": "x", "serviceType": "Magic"}),
            r#"spec.serviceType: Unsupported value: "Magic": supported values: "ClusterIP", "NodePort", "LoadBalancer""#,
        ),
        (
            "9lives",
            json!({"image": "x"}),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "unknown-engine",
            json!({"image": "x", "stores": {"sql": {"engine": "postgres"}}}),
            r#"spec.stores.sql.engine: Unsupported value: "postgres": supported values: "mariadb", "sqlite""#,
        ),
        (
            "embedded-replicas",
            json!({"image": "x", "replicas": 3, "stores": {"nosql": {"engine": "redb"}}}),
            "embedded stores live in one pod's volume; use mariadb/redis to run more than one replica",
        ),
        (
            "embedded-autoscaling",
            json!({"image": "x", "stores": {"sql": {"engine": "sqlite"}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}),
            "embedded stores live in one pod's volume",
        ),
        (
            "store-size-words",
            json!({"image": "x", "stores": {"sql": {"engine": "mariadb", "size": "lots"}}}),
            "size must be a positive quantity such as 1Gi",
        ),
        (
            "store-size-zero",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis", "size": "0"}}}),
            "size must be a positive quantity",
        ),
        (
            "store-class",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis", "storageClassName": "Fast_SSD"}}}),
            "storageClassName must be the name of a StorageClass",
        ),
        (
            "store-policy",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis", "deletionPolicy": "Shred"}}}),
            r#"spec.stores.nosql.deletionPolicy: Unsupported value: "Shred": supported values: "Retain", "Delete""#,
        ),
        (
            "a-microservice-whose-name-is-too-long-for-its-stores",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis"}}}),
            "a Microservice with stores must have a name of at most 45 characters",
        ),
        (
            "backup-schedule",
            json!({"image": "x", "stores": {"sql": {"engine": "mariadb", "backup": {
                "schedule": "every night", "target": {"persistentVolumeClaim": {"claimName": "b"}}}}}}),
            "schedule must be five cron fields such as '0 3 * * *'",
        ),
        (
            "backup-keep",
            json!({"image": "x", "stores": {"sql": {"engine": "mariadb", "backup": {
                "schedule": "@daily", "keep": 0, "target": {"persistentVolumeClaim": {"claimName": "b"}}}}}}),
            "spec.stores.sql.backup.keep in body should be greater than or equal to 1",
        ),
        (
            "backup-no-target",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis", "backup": {"schedule": "@daily"}}}}),
            "spec.stores.nosql.backup.target: Required value",
        ),
        (
            "backup-claim",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis", "backup": {
                "schedule": "@daily", "target": {"persistentVolumeClaim": {"claimName": "My Backups"}}}}}}),
            "claimName must be the name of a PersistentVolumeClaim",
        ),
        (
            "backup-two-targets",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis", "backup": {
                "schedule": "@daily", "target": {"persistentVolumeClaim": {"claimName": "b"}, "s3": {
                    "bucket": "backups", "endpoint": "http://minio.storage:9000",
                    "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
                    "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"}}}}}}}),
            "backup.target must name exactly one of persistentVolumeClaim or s3",
        ),
        (
            "backup-empty-target",
            json!({"image": "x", "stores": {"nosql": {"engine": "redis", "backup": {
                "schedule": "@daily", "target": {}}}}}),
            "backup.target must name exactly one of persistentVolumeClaim or s3",
        ),
        (
            "backup-bucket-name",
            json!({"image": "x", "stores": {"sql": {"engine": "sqlite", "backup": {
                "schedule": "@daily", "target": {"s3": {
                    "bucket": "My_Backups", "endpoint": "http://minio.storage:9000",
                    "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
                    "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"}}}}}}}),
            "bucket must be an S3 bucket name",
        ),
        (
            "backup-bucket-endpoint",
            json!({"image": "x", "stores": {"sql": {"engine": "sqlite", "backup": {
                "schedule": "@daily", "target": {"s3": {
                    "bucket": "backups", "endpoint": "s3://s3.amazonaws.com",
                    "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
                    "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"}}}}}}}),
            "endpoint must be an http:// or https:// URL with a host and no path",
        ),
        (
            "backup-bucket-endpoint-path",
            json!({"image": "x", "stores": {"sql": {"engine": "sqlite", "backup": {
                "schedule": "@daily", "target": {"s3": {
                    "bucket": "backups", "endpoint": "https://s3.amazonaws.com/backups",
                    "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
                    "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"}}}}}}}),
            "endpoint must be an http:// or https:// URL with a host and no path",
        ),
        (
            "backup-bucket-authority-name",
            json!({"image": "x", "stores": {"sql": {"engine": "sqlite", "backup": {
                "schedule": "@daily", "target": {"s3": {
                    "bucket": "backups", "endpoint": "https://minio.example.com",
                    "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
                    "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"},
                    "caSecretKeyRef": {"name": "Private_CA", "key": "ca.crt"}}}}}}}),
            "name must be the name of a Secret",
        ),
        (
            "backup-bucket-no-credentials",
            json!({"image": "x", "stores": {"sql": {"engine": "sqlite", "backup": {
                "schedule": "@daily", "target": {"s3": {"bucket": "backups", "endpoint": "http://minio.storage:9000"}}}}}}),
            "accessKeyIdSecretKeyRef: Required value",
        ),
        (
            "restore-two-sources",
            json!({"image": "x", "stores": {"sql": {"engine": "mariadb", "restoreFrom": {
                "persistentVolumeClaim": {"claimName": "b"}, "s3": {
                    "bucket": "backups", "endpoint": "http://minio.storage:9000",
                    "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
                    "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"}}}}}}),
            "restoreFrom must name exactly one of persistentVolumeClaim or s3",
        ),
        (
            "a-microservice-named-too-long-for-its-backups",
            json!({"image": "x", "stores": {"sql": {"engine": "mariadb", "backup": {
                "schedule": "0 3 * * *", "target": {"persistentVolumeClaim": {"claimName": "b"}}}}}}),
            "a Microservice with backups must have a name of at most 44 characters",
        ),
    ]
}

/// Engine and class of a store are fixed once set (its volume exists), and its size can only
/// grow.
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn store_settings_cannot_change_once_set() {
    let namespace = namespace_with_crd("ms-store-immutable").await;
    let client = namespace.client();
    let resource = ApiResource::erase::<Microservice>(&());
    let microservices: Api<DynamicObject> =
        Api::namespaced_with(client, namespace.name(), &resource);
    let original = json!({"image": "x", "stores": {
        "sql": {"engine": "mariadb", "size": "1Gi"},
        "nosql": {"engine": "redis", "storageClassName": "fast"},
    }});
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kea.dev/v1alpha1", "kind": "Microservice",
        "metadata": {"name": "shop"}, "spec": original,
    }))
    .unwrap();
    microservices
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let changes = [
        (
            json!({"sql": {"engine": "sqlite"}}),
            "engine cannot change once set",
        ),
        (
            json!({"sql": {"size": "512Mi"}}),
            "size cannot shrink from 1Gi to 512Mi: a volume cannot be made smaller; keep 1Gi or more",
        ),
        (
            json!({"nosql": {"storageClassName": "slow"}}),
            "storageClassName cannot change once set",
        ),
        (
            json!({"sql": {"storageClassName": "fast"}}),
            "storageClassName cannot be added or removed",
        ),
    ];
    let mut failures = Vec::new();
    for (change, fragment) in changes {
        let patch = json!({"spec": {"stores": change}});
        match microservices
            .patch(
                "shop",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Err(kube::Error::Api(status))
                if status.code == 422 && status.message.contains(fragment) => {}
            other => failures.push(format!(
                "{change}: {:?} lacks {fragment:?}",
                other.map(|_| "accepted")
            )),
        }
    }
    // What may change: the deletion policy, and the size upwards.
    let patch =
        json!({"spec": {"stores": {"sql": {"deletionPolicy": "Delete", "size": "1536Mi"}}}});
    if let Err(err) = microservices
        .patch(
            "shop",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        failures.push(format!("deletionPolicy change refused: {err}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn invalid_microservices_are_rejected_with_readable_messages() {
    let namespace = namespace_with_crd("ms-invalid").await;
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
