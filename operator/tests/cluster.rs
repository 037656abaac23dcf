//! The controller against a REAL control plane (etcd, kube-apiserver,
//! kube-controller-manager and kwok: `hack/control-plane.sh up`). Each test
//! runs its own controller, limited to a fresh namespace, in-process.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::Duration;

use common::{
    Operator, StaticVolumes, TIMEOUT, condition, create, events_about, merge_spec, setup,
    wait_for_event, wait_ready,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kea_operator::Microservice;
use kea_testkit::{has_status_condition, wait_for, wait_for_deletion};
use kube::Api;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use serde_json::json;

fn container_env(deployment: &Deployment) -> Vec<(String, String)> {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_microservice_becomes_a_ready_deployment_and_service() {
    let (namespace, microservices) = setup("ms-create").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "hello",
        json!({"image": "kea.dev/kea-service:dev"}),
    )
    .await;

    let ready = wait_ready(&microservices, "hello").await;
    let status = ready.status.as_ref().unwrap();
    assert_eq!(status.ready_replicas, 1);
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(
        status.url.as_deref(),
        Some(format!("http://hello.{}.svc.cluster.local:8080", namespace.name()).as_str())
    );
    assert_eq!(condition(&ready, "Available").status, "True");

    let deployment = namespace.api::<Deployment>().get("hello").await.unwrap();
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Microservice", Some(true))
    );
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));

    let service = namespace.api::<Service>().get("hello").await.unwrap();
    assert_eq!(
        service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        8080
    );
    assert_eq!(service.owner_references()[0].kind, "Microservice");

    // Steady state: once Ready, the operator writes nothing while nothing changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = operator.metrics.writes.get();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        operator.metrics.writes.get(),
        writes,
        "no API writes at steady state"
    );

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn updates_reach_the_deployment_and_drift_is_corrected() {
    let (namespace, microservices) = setup("ms-update").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "app",
        json!({"image": "kea.dev/kea-service:1"}),
    )
    .await;
    wait_ready(&microservices, "app").await;
    let deployments = namespace.api::<Deployment>();
    // A new Microservice: a Ready event, and no Applied event (the status told it).
    let events = namespace.api::<Event>();
    wait_for_note(&events, "app", "Ready", "").await;
    assert!(
        events_about(&events, "app", "Applied").await.is_empty(),
        "no Applied event for a new Microservice"
    );

    // Image, replicas and env changes are applied.
    merge_spec(
        &microservices,
        "app",
        json!({
            "image": "kea.dev/kea-service:2",
            "replicas": 2,
            "env": [{"name": "GREETING", "value": "hej"}],
        }),
    )
    .await;
    let updated = wait_for(
        &deployments,
        "app",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref()).is_some_and(|s| {
                s.replicas == Some(2)
                    && s.template.spec.as_ref().unwrap().containers[0]
                        .image
                        .as_deref()
                        == Some("kea.dev/kea-service:2")
            })
        },
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(container_env(&updated).contains(&("GREETING".into(), "hej".into())));
    // An update of an existing one is told.
    wait_for_note(&events, "app", "Applied", "Deployment").await;
    // More than one replica gets a PodDisruptionBudget.
    wait_for(
        &namespace.api::<PodDisruptionBudget>(),
        "app",
        conditions::is_created(),
        TIMEOUT,
    )
    .await
    .unwrap();
    wait_ready(&microservices, "app").await;

    // Drift: replicas changed by hand are reverted.
    deployments
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    wait_for(
        &deployments,
        "app",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref())
                .is_some_and(|s| s.replicas == Some(2))
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    // Drift: a deleted Deployment comes back.
    let old_uid = deployments.get("app").await.unwrap().uid();
    deployments
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &deployments,
        "app",
        move |d: Option<&Deployment>| d.is_some_and(|d| d.uid() != old_uid),
        TIMEOUT,
    )
    .await
    .unwrap();

    // Back to one replica: the PodDisruptionBudget goes away.
    merge_spec(&microservices, "app", json!({"replicas": 1})).await;
    wait_for_deletion(&namespace.api::<PodDisruptionBudget>(), "app", TIMEOUT)
        .await
        .unwrap();

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

/// Waits until Microservice `name` has an event with `reason` whose note contains `note`.
async fn wait_for_note(events: &Api<Event>, name: &str, reason: &str, note: &str) {
    let wanted = |e: &Event| e.message.as_deref().unwrap_or_default().contains(note);
    let what = format!("{reason} event mentioning '{note}'");
    wait_for_event(events, name, reason, wanted, TIMEOUT, &what).await;
}

/// Follows the Microservice `name` on a watch until it is Ready or `timeout` passes, and
/// returns the Ready condition's reason of each status seen on the way ("-" for none).
async fn ready_reasons_until_ready(
    microservices: &Api<Microservice>,
    name: &str,
    timeout: Duration,
) -> Vec<String> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let ready = move |ms: Option<&Microservice>| {
        let ms = ms.filter(|ms| ms.status.is_some());
        let reason = ms
            .and_then(|ms| kea_testkit::microservices::condition(ms, "Ready"))
            .map_or("-".to_owned(), |c| format!("{}={}", c.reason, c.status));
        let mut seen = record.lock().unwrap();
        if seen.last() != Some(&reason) {
            seen.push(reason);
        }
        ms.is_some_and(kea_testkit::microservices::is_ready)
    };
    let _ = wait_for(microservices, name, ready, timeout).await;
    seen.lock().unwrap().clone()
}

/// Creates a Microservice followed on a watch from before its creation, and returns the
/// `Ready` reasons its status showed until it was Ready (see [`ready_reasons_until_ready`]).
async fn create_and_follow_until_ready(
    microservices: &Api<Microservice>,
    name: &'static str,
    spec: serde_json::Value,
) -> Vec<String> {
    let watch = tokio::spawn({
        let microservices = microservices.clone();
        async move { ready_reasons_until_ready(&microservices, name, TIMEOUT).await }
    });
    create(microservices, name, spec).await;
    watch.await.unwrap()
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_first_status_waits_only_for_pods_coming_up() {
    let (namespace, microservices) = setup("ms-first-status").await;
    // Longer than any step below may take: what is written before it was not held.
    let delay = Duration::from_secs(60);
    let operator = Operator::start_with_status_delays(&namespace, delay, delay);

    // Pods that come up within the delay: the first status written says Ready.
    let seen = create_and_follow_until_ready(
        &microservices,
        "quick",
        json!({"image": "kea.dev/kea-service:1"}),
    )
    .await;
    assert_eq!(
        seen.iter().filter(|r| *r != "-").collect::<Vec<_>>(),
        ["Ready=True"],
        "one status, Ready, for a Microservice whose pods came up at once (seen: {seen:?})"
    );

    // Pods that cannot come up: the reason shows long before the delay is over.
    create(
        &microservices,
        "unschedulable",
        json!({"image": "kea.dev/kea-service:1", "resources": {"requests": {"cpu": "100000"}}}),
    )
    .await;
    let explained = wait_for(
        &microservices,
        "unschedulable",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| kea_testkit::microservices::condition(ms, "Ready"))
                .is_some_and(|c| c.status == "False" && c.reason == "Unschedulable")
        },
        delay / 2,
    )
    .await;
    assert!(
        explained.is_ok(),
        "Ready=False, Unschedulable within {:?}: {explained:?}",
        delay / 2
    );

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_first_status_waits_no_longer_than_its_own_delay() {
    let (namespace, microservices) = setup("ms-first-delay").await;
    // A pod counts as available minReadySeconds (3 s) after it is ready: a first status held
    // for 1 s is written while the pods are still coming up, whatever the progress delay.
    let operator = Operator::start_with_status_delays(
        &namespace,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let seen = create_and_follow_until_ready(
        &microservices,
        "rolling",
        json!({"image": "kea.dev/kea-service:1"}),
    )
    .await;
    let written: Vec<_> = seen.iter().filter(|r| *r != "-").collect();
    assert!(
        written.len() >= 2 && written[0].ends_with("=False"),
        "a not-Ready status first, then Ready (seen: {seen:?})"
    );
    assert_eq!(written.last().map(|r| r.as_str()), Some("Ready=True"));

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn deleting_a_microservice_garbage_collects_its_children() {
    let (namespace, microservices) = setup("ms-delete").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "short-lived",
        json!({"image": "kea.dev/kea-service:dev"}),
    )
    .await;
    wait_ready(&microservices, "short-lived").await;

    microservices
        .delete("short-lived", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_deletion(&namespace.api::<Deployment>(), "short-lived", TIMEOUT)
        .await
        .unwrap();
    wait_for_deletion(&namespace.api::<Service>(), "short-lived", TIMEOUT)
        .await
        .unwrap();
    let replica_sets = namespace.api::<ReplicaSet>();
    let started = std::time::Instant::now();
    while !replica_sets
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        // The garbage collector works through one queue for the whole cluster: give it time.
        assert!(
            started.elapsed() < 2 * TIMEOUT,
            "ReplicaSets were not garbage-collected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn depends_on_injects_urls_and_reports_dependencies_ready() {
    let (namespace, microservices) = setup("ms-deps").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "frontend",
        json!({
            "image": "kea.dev/kea-service:dev",
            "dependsOn": [{"name": "users"}],
        }),
    )
    .await;

    // The dependency does not exist yet: the URL is injected anyway, and the condition says so.
    let waiting = wait_for(
        &microservices,
        "frontend",
        has_status_condition("DependenciesReady", "False"),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        condition(&waiting, "DependenciesReady").reason,
        "DependencyMissing"
    );
    let deployment = namespace.api::<Deployment>().get("frontend").await.unwrap();
    let expected_url = format!("http://users.{}.svc.cluster.local:9000", namespace.name());
    let env = container_env(&deployment);
    assert!(env.iter().any(|(name, _)| name == "USERS_URL"), "{env:?}");

    create(
        &microservices,
        "users",
        json!({"image": "kea.dev/kea-service:dev", "port": 9000}),
    )
    .await;
    let ready = wait_for(
        &microservices,
        "frontend",
        has_status_condition("DependenciesReady", "True"),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    let dependency = &ready.status.as_ref().unwrap().dependencies[0];
    assert_eq!(
        (dependency.name.as_str(), dependency.ready),
        ("users", true)
    );
    assert_eq!(dependency.url, expected_url);
    // The dependency's real port reaches the dependent's environment.
    let deployments = namespace.api::<Deployment>();
    wait_for(
        &deployments,
        "frontend",
        move |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                container_env(d).contains(&("USERS_URL".into(), expected_url.clone()))
            })
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn suspend_scales_to_zero_and_says_so() {
    let (namespace, microservices) = setup("ms-suspend").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "sleepy",
        json!({"image": "kea.dev/kea-service:dev", "replicas": 2}),
    )
    .await;
    wait_ready(&microservices, "sleepy").await;

    merge_spec(&microservices, "sleepy", json!({"suspend": true})).await;
    let suspended = wait_for(
        &microservices,
        "sleepy",
        has_status_condition("Suspended", "True"),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(condition(&suspended, "Ready").status, "False");
    assert_eq!(condition(&suspended, "Ready").reason, "Suspended");
    wait_for(
        &namespace.api::<Deployment>(),
        "sleepy",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref())
                .is_some_and(|s| s.replicas == Some(0))
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    merge_spec(&microservices, "sleepy", json!({"suspend": false})).await;
    wait_ready(&microservices, "sleepy").await;

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn the_scale_subresource_drives_replicas() {
    let (namespace, microservices) = setup("ms-scale").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "scalable",
        json!({"image": "kea.dev/kea-service:dev"}),
    )
    .await;
    wait_ready(&microservices, "scalable").await;

    // What `kubectl scale ms scalable --replicas=3` sends.
    microservices
        .patch_scale(
            "scalable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let scaled = wait_for(
        &microservices,
        "scalable",
        |m: Option<&Microservice>| {
            m.and_then(|m| m.status.as_ref())
                .is_some_and(|s| s.ready_replicas == 3)
        },
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    let scale = microservices.get_scale("scalable").await.unwrap();
    assert_eq!(scale.status.as_ref().unwrap().replicas, 3);
    assert!(
        scale
            .status
            .as_ref()
            .unwrap()
            .selector
            .as_deref()
            .unwrap_or_default()
            .contains("scalable")
    );
    assert_eq!(scaled.spec.replicas, 3);

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_restarted_operator_converges_fifty_microservices() {
    let (namespace, microservices) = setup("ms-restart").await;
    let names: Vec<String> = (0..50).map(|i| format!("svc-{i:02}")).collect();
    for name in &names {
        create(
            &microservices,
            name,
            json!({"image": "kea.dev/kea-service:dev"}),
        )
        .await;
    }
    // Killed in the middle of reconciling, without a graceful stop: as soon as it has
    // written a few children, long before it could have written all of them.
    let operator = Operator::start(&namespace);
    let started = std::time::Instant::now();
    while operator.metrics.writes.get() < 10 {
        assert!(started.elapsed() < TIMEOUT, "the operator wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    operator.task.abort();
    let _ = operator.task.await;
    let made = namespace
        .api::<Deployment>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    eprintln!("killed with {made} of 50 Deployments made");
    assert!(
        made < names.len(),
        "the kill came too late to land mid-way: {made} Deployments already made"
    );

    let operator = Operator::start(&namespace);
    for name in &names {
        wait_ready(&microservices, name).await;
    }
    let deployments = namespace
        .api::<Deployment>()
        .list(&Default::default())
        .await
        .unwrap();
    let services = namespace
        .api::<Service>()
        .list(&Default::default())
        .await
        .unwrap();
    let mut deployment_names: Vec<String> = deployments
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let mut service_names: Vec<String> = services.items.iter().map(ResourceExt::name_any).collect();
    deployment_names.sort();
    service_names.sort();
    assert_eq!(
        deployment_names, names,
        "exactly one Deployment per Microservice"
    );
    assert_eq!(service_names, names, "exactly one Service per Microservice");

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

/// The example system of `deploy/examples` (users, orders, frontend) converges on
/// the real API server, and `kea-operator diagram` draws it from the cluster.
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn the_example_system_converges_and_draws_itself() {
    let (namespace, microservices) = setup("ms-examples").await;
    // The examples' stores use the cluster's default StorageClass; here, a class of the test's
    // own with a volume for each claim.
    let mut volumes = StaticVolumes::new(&namespace).await;
    for claim in [
        "users-sqlite",
        "users-redb",
        "data-orders-mariadb-0",
        "data-orders-redis-0",
    ] {
        volumes.for_claim(namespace.name(), claim).await;
    }
    let operator = Operator::start(&namespace);
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let names = ["users", "orders", "frontend"];
    for (file, name) in ["10-users.yaml", "20-orders.yaml", "30-frontend.yaml"]
        .iter()
        .zip(names)
    {
        let text = std::fs::read_to_string(format!("{examples}/{file}")).unwrap();
        let mut example: Microservice = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(example.name_any(), name);
        example.metadata.namespace = None;
        if let Some(stores) = example.spec.stores.as_mut() {
            for class in [
                stores.sql.as_mut().map(|s| &mut s.storage_class_name),
                stores.nosql.as_mut().map(|s| &mut s.storage_class_name),
            ]
            .into_iter()
            .flatten()
            {
                *class = Some(volumes.class.clone());
            }
        }
        microservices
            .create(&PostParams::default(), &example)
            .await
            .unwrap();
    }
    for name in names {
        wait_ready(&microservices, name).await;
    }
    let frontend = wait_for(
        &microservices,
        "frontend",
        has_status_condition("DependenciesReady", "True"),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(frontend.status.as_ref().unwrap().dependencies.len(), 2);

    let diagram = kea_cli::diagram::from_cluster(&namespace.client(), namespace.name())
        .await
        .unwrap();
    let ns = namespace.name();
    for expected in [
        format!("title Microservices in namespace {ns}"),
        format!("<b>users</b>\\nhttp://users.{ns}.svc.cluster.local:8080"),
        format!("<b>orders</b>\\nhttp://orders.{ns}.svc.cluster.local:8080"),
        format!("<b>frontend</b>\\nhttp://frontend.{ns}.svc.cluster.local:8080"),
        "ms_frontend --> ms_users : USERS_URL".to_owned(),
        "ms_frontend --> ms_orders : ORDERS_URL".to_owned(),
        "ms_orders --> ms_users : USERS_URL".to_owned(),
        "<b>MariaDB</b> of orders\\nStatefulSet orders-mariadb".to_owned(),
        "ms_orders --> store_nosql_orders : REDIS_URL".to_owned(),
        "<b>SQLite</b> of users\\nin its pod, volume users-sqlite".to_owned(),
        "ms_users --> store_nosql_users : own volume".to_owned(),
    ] {
        assert!(
            diagram.contains(&expected),
            "diagram lacks {expected:?}:\n{diagram}"
        );
    }
    assert_eq!(
        diagram.matches(", Ready\"").count(),
        3,
        "all three drawn Ready:\n{diagram}"
    );

    operator.stop().await;
    namespace.cleanup().await.unwrap();
    volumes.cleanup().await;
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn an_autoscaler_that_reads_no_metrics_shows_on_the_status() {
    let (namespace, microservices) = setup("ms-hpa").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "frontend",
        json!({"image": "kea.dev/kea-service:dev",
               "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}),
    )
    .await;
    // This control plane serves no metrics API: the autoscaler says it cannot read CPU.
    let seen = wait_for(
        &microservices,
        "frontend",
        has_status_condition("Autoscaling", "False"),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    let autoscaling = condition(&seen, "Autoscaling");
    eprintln!("{}: {}", autoscaling.reason, autoscaling.message);
    assert!(
        ["FailedGetResourceMetric", "AutoscalerPending"].contains(&autoscaling.reason.as_str()),
        "{autoscaling:?}"
    );
    let seen = wait_for(
        &microservices,
        "frontend",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Autoscaling"))
                .is_some_and(|c| c.reason == "FailedGetResourceMetric")
        },
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(condition(&seen, "Autoscaling").message.contains("cpu"));
    // More than one pod: spread across nodes.
    let deployment = namespace.api::<Deployment>().get("frontend").await.unwrap();
    let spread = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .topology_spread_constraints
        .unwrap();
    assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
    operator.stop().await;
    namespace.cleanup().await.unwrap();
}
