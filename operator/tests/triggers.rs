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
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kea_operator::Microservice;
use kea_operator::children::config::stamped;
use kea_testkit::{TestNamespace, has_status_condition, wait_for};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

/// The operator's annotation on the Deployment's pod template, and the Deployment's generation.
async fn config_versions(namespace: &TestNamespace, name: &str) -> (String, i64) {
    let deployment = namespace.api::<Deployment>().get(name).await.unwrap();
    (
        template_annotation(&deployment),
        deployment.metadata.generation.unwrap_or_default(),
    )
}

/// Changes one key of a ConfigMap's or Secret's data; returns its new resourceVersion.
async fn edit<K>(namespace: &TestNamespace, name: &str, data: serde_json::Value) -> String
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let field = if K::kind(&()) == "Secret" {
        "stringData"
    } else {
        "data"
    };
    namespace
        .api::<K>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ field: data })),
        )
        .await
        .unwrap()
        .resource_version()
        .unwrap()
}

/// A ConfigMap or Secret that a Microservice's environment reads rolls its pods when it
/// changes, like a new image; a change of any other ConfigMap writes nothing. With the timed
/// reconciles an hour away, only the watches can tell the operator.
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_changed_config_map_or_secret_rolls_the_pods_that_read_it() {
    let (namespace, microservices) = setup("ms-config").await;
    let operator = Operator::start_without_timers(&namespace);
    let config_maps = namespace.api::<ConfigMap>();
    for name in ["settings", "unrelated"] {
        let map: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": name}, "data": {"greeting": "hello"}}),
        )
        .unwrap();
        config_maps
            .create(&PostParams::default(), &map)
            .await
            .unwrap();
    }
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "api-key"}, "stringData": {"API_KEY": "one"}}),
    )
    .unwrap();
    namespace
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    create(
        &microservices,
        "users",
        json!({
            "image": "kea.dev/kea-service:dev",
            "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}}],
            "envFrom": [{"secretRef": {"name": "api-key"}}],
        }),
    )
    .await;
    wait_ready(&microservices, "users").await;
    let settings_version = config_maps
        .get("settings")
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let key_version = namespace
        .api::<Secret>()
        .get("api-key")
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let (annotation, generation) = config_versions(&namespace, "users").await;
    assert_eq!(
        annotation,
        format!("ConfigMap/settings@{settings_version} Secret/api-key@{key_version}")
    );
    wait_quiet(&operator).await;

    // The unrelated edit first: had it caused a write, the Deployment would have two new
    // generations by the time the second edit shows.
    let reconciles = operator.metrics.reconciles.get();
    edit::<ConfigMap>(&namespace, "unrelated", json!({"greeting": "hi"})).await;
    let started = Instant::now();
    let settings_version =
        edit::<ConfigMap>(&namespace, "settings", json!({"greeting": "hi"})).await;
    let deployments = namespace.api::<Deployment>();
    let wanted = format!("ConfigMap/settings@{settings_version} ");
    wait_for(
        &deployments,
        "users",
        |d: Option<&Deployment>| d.is_some_and(|d| template_annotation(d).contains(&wanted)),
        BACK_WITHIN,
    )
    .await
    .unwrap();
    eprintln!(
        "ConfigMap edit reached the pod template in {:?}",
        started.elapsed()
    );
    let (annotation, after) = config_versions(&namespace, "users").await;
    assert_eq!(after, generation + 1, "{annotation}");
    assert!(!annotation.contains("unrelated"), "{annotation}");
    wait_quiet(&operator).await;
    assert!(operator.metrics.reconciles.get() > reconciles);

    let started = Instant::now();
    let key_version = edit::<Secret>(&namespace, "api-key", json!({"API_KEY": "two"})).await;
    let wanted = format!("Secret/api-key@{key_version}");
    let rolled = wait_for(
        &deployments,
        "users",
        |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                let status = d.status.clone().unwrap_or_default();
                template_annotation(d).contains(&wanted)
                    && status.observed_generation == d.metadata.generation
                    && status.updated_replicas == d.spec.as_ref().and_then(|s| s.replicas)
                    && status.ready_replicas == status.updated_replicas
            })
        },
        TIMEOUT,
    )
    .await
    .unwrap();
    eprintln!("Secret edit rolled the pods in {:?}", started.elapsed());
    assert_eq!(rolled.unwrap().metadata.generation, Some(generation + 2));

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

fn template_annotation(deployment: &Deployment) -> String {
    stamped(deployment).unwrap_or_default().to_owned()
}
