//! What the operator answers, it answers because a watch told it: with its timed reconciles
//! an hour away, a deleted child comes back and a deleted dependency shows on its dependent.
//! Runs on the real control plane (`hack/control-plane.sh up`).

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use common::{Operator, TIMEOUT, create, setup, wait_ready};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kea_operator::Microservice;
use kea_testkit::{TestNamespace, has_status_condition, wait_for};
use kube::api::{DeleteParams, ListParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Far below the hour of the timed reconciles, far above a watch's latency.
const BACK_WITHIN: Duration = Duration::from_secs(10);

/// Waits until the operator has started no reconcile for two seconds: what it does next was
/// triggered by what the test does next, not by a change still rippling through.
async fn wait_quiet(operator: &Operator) {
    let started = Instant::now();
    let mut last = operator.metrics.reconciles.get();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        assert!(
            started.elapsed() < TIMEOUT,
            "the operator kept reconciling for {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = operator.metrics.reconciles.get();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// Deletes every `K` of the namespace's Microservice `owner` and waits until the operator has
/// made each of them again (same name, new uid).
async fn delete_and_see_them_back<K>(operator: &Operator, namespace: &TestNamespace, owner: &str)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&());
    let api = namespace.api::<K>();
    let children: Vec<K> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|child| child.owner_references().iter().any(|r| r.name == owner))
        .collect();
    assert!(!children.is_empty(), "{owner} has no {kind}");
    wait_quiet(operator).await;
    let started = Instant::now();
    for child in &children {
        api.delete(&child.name_any(), &DeleteParams::background())
            .await
            .unwrap();
    }
    for child in children {
        let old_uid = child.uid();
        wait_for(
            &api,
            &child.name_any(),
            move |now: Option<&K>| now.is_some_and(|now| now.uid() != old_uid),
            BACK_WITHIN,
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{kind} {} not made again within {BACK_WITHIN:?}: {error}",
                child.name_any()
            )
        });
    }
    eprintln!("{kind} of {owner}: back in {:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn deleted_children_and_dependencies_reach_the_operator_through_its_watches() {
    let (namespace, microservices) = setup("ms-triggers").await;
    let operator = Operator::start_without_timers(&namespace);
    create(
        &microservices,
        "users",
        json!({"image": "kea.dev/kea-service:dev",
               "autoscaling": {"minReplicas": 2, "maxReplicas": 3}}),
    )
    .await;
    create(
        &microservices,
        "frontend",
        json!({"image": "kea.dev/kea-service:dev", "dependsOn": [{"name": "users"}]}),
    )
    .await;
    wait_ready(&microservices, "users").await;
    wait_for(
        &microservices,
        "frontend",
        has_status_condition("DependenciesReady", "True"),
        BACK_WITHIN,
    )
    .await
    .unwrap();

    delete_and_see_them_back::<Service>(&operator, &namespace, "users").await;
    delete_and_see_them_back::<PodDisruptionBudget>(&operator, &namespace, "users").await;
    delete_and_see_them_back::<HorizontalPodAutoscaler>(&operator, &namespace, "users").await;
    delete_and_see_them_back::<NetworkPolicy>(&operator, &namespace, "users").await;
    delete_and_see_them_back::<Deployment>(&operator, &namespace, "users").await;

    // The dependency goes: its dependent says so.
    wait_quiet(&operator).await;
    microservices
        .delete("users", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        &microservices,
        "frontend",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "DependenciesReady"))
                .is_some_and(|c| c.status == "False" && c.reason == "DependencyMissing")
        },
        BACK_WITHIN,
    )
    .await
    .unwrap();

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}
