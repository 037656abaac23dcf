//! Zero writes at steady state, proven from outside: over a window in which the operator
//! demonstrably reconciled every Microservice again (its reconcile counter rose), no child's
//! `resourceVersion` and no Microservice's changed. The operator's own write counter is not
//! trusted for this. Against a REAL control plane, with every kind of child the operator
//! writes: Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler,
//! NetworkPolicies, a store's StatefulSet, Service, Secret and claim.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Operator, StaticVolumes, create, setup, wait_ready};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kea_operator::Microservice;
use kea_testkit::TestNamespace;
use kube::api::ListParams;
use kube::{Resource, ResourceExt};
use serde_json::json;

/// `kind/name` -> what must not change. For HorizontalPodAutoscalers the controller-manager
/// writes the status every sync, so their `generation` (bumped by any change of the spec the
/// operator owns) and labels stand in for the resourceVersion.
type Versions = BTreeMap<String, String>;

async fn versions_of<K>(namespace: &TestNamespace, into: &mut Versions)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    for object in namespace
        .api::<K>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let version = if kind == "HorizontalPodAutoscaler" {
            format!(
                "generation {:?}, labels {:?}",
                object.meta().generation,
                object.labels()
            )
        } else {
            object.resource_version().unwrap_or_default()
        };
        into.insert(format!("{kind}/{}", object.name_any()), version);
    }
}

async fn snapshot(namespace: &TestNamespace) -> Versions {
    let mut versions = Versions::new();
    versions_of::<Microservice>(namespace, &mut versions).await;
    versions_of::<Deployment>(namespace, &mut versions).await;
    versions_of::<Service>(namespace, &mut versions).await;
    versions_of::<PodDisruptionBudget>(namespace, &mut versions).await;
    versions_of::<HorizontalPodAutoscaler>(namespace, &mut versions).await;
    versions_of::<NetworkPolicy>(namespace, &mut versions).await;
    versions_of::<StatefulSet>(namespace, &mut versions).await;
    versions_of::<Secret>(namespace, &mut versions).await;
    versions_of::<PersistentVolumeClaim>(namespace, &mut versions).await;
    versions
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn at_steady_state_reconciles_change_nothing() {
    let (namespace, microservices) = setup("ms-steady").await;
    let ns = namespace.name().to_owned();
    let mut volumes = StaticVolumes::new(&namespace).await;
    volumes.for_claim(&ns, "data-orders-redis-0").await;
    let operator = Operator::start(&namespace);
    let image = "kea.dev/kea-service:dev";
    create(
        &microservices,
        "users",
        json!({"image": image, "replicas": 2}),
    )
    .await;
    create(
        &microservices,
        "orders",
        json!({"image": image, "dependsOn": [{"name": "users"}],
               "stores": {"nosql": {"engine": "redis", "storageClassName": volumes.class}}}),
    )
    .await;
    create(
        &microservices,
        "frontend",
        json!({"image": image, "dependsOn": [{"name": "users"}, {"name": "orders"}],
               "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}),
    )
    .await;
    for name in ["users", "orders", "frontend"] {
        wait_ready(&microservices, name).await;
    }
    // Settled: two snapshots a reconcile round apart agree (the last status writes landed).
    let mut before = snapshot(&namespace).await;
    let settle = Instant::now();
    loop {
        let reconciles = operator.metrics.reconciles.get();
        wait_reconciles(&operator, reconciles + 3).await;
        let now = snapshot(&namespace).await;
        if now == before {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(60),
            "never settled: {before:?} -> {now:?}"
        );
        before = now;
    }
    for kind in [
        "Deployment/",
        "PodDisruptionBudget/",
        "HorizontalPodAutoscaler/",
        "NetworkPolicy/",
        "StatefulSet/",
        "Secret/orders-redis",
        "PersistentVolumeClaim/",
    ] {
        assert!(
            before.keys().any(|k| k.starts_with(kind)),
            "no {kind} watched: {before:?}"
        );
    }

    // The window: every Microservice reconciled at least twice more.
    let reconciles = operator.metrics.reconciles.get();
    wait_reconciles(&operator, reconciles + 6).await;
    let after = snapshot(&namespace).await;
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        changed.is_empty() && after.len() == before.len(),
        "written at steady state: {changed:?} ({} objects before, {} after)",
        before.len(),
        after.len()
    );
    operator.stop().await;
    volumes.cleanup().await;
    namespace.cleanup().await.unwrap();
}

async fn wait_reconciles(operator: &Operator, at_least: u64) {
    let start = Instant::now();
    while operator.metrics.reconciles.get() < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the operator stopped reconciling"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
