//! Safe delivery against a REAL control plane (`hack/control-plane.sh up`): a revision whose
//! pods never become ready (here: they cannot be scheduled, as kwok's node is too small for
//! them) makes no progress within `rollout.progressDeadlineSeconds`, and the operator puts
//! the pods back on the last revision that was Ready, says so, and keeps the spec as written;
//! the next change is tried.
//!
//! With two replicas each new revision starts as a canary: one pod of its own Deployment beside
//! the stable pods. Its Deployment's deadline reverts it the same way; a good one is promoted
//! once its checks passed (readiness alone here: an operator outside the cluster reads no
//! pod's metrics), and only then replaces the stable pods.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::{Duration, Instant};

use common::{Operator, condition, create, merge_spec, setup, wait_for_event, wait_ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kea_operator::Microservice;
use kea_testkit::wait_for;
use serde_json::json;

const DEADLINE_SECONDS: u64 = 10;

/// The image of the Deployment's pod template, when its rollout is complete.
fn rolled_out_image(deployment: &Deployment) -> Option<String> {
    let spec = deployment.spec.as_ref()?;
    let status = deployment.status.as_ref()?;
    let complete = status.observed_generation == deployment.metadata.generation
        && status.updated_replicas == spec.replicas
        && status.replicas == spec.replicas
        && status.available_replicas == spec.replicas;
    complete
        .then(|| spec.template.spec.as_ref()?.containers[0].image.clone())
        .flatten()
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_revision_that_makes_no_progress_is_rolled_back_and_the_next_change_is_tried() {
    let (namespace, microservices) = setup("ms-rollback").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "web",
        json!({"image": "kea.dev/kea-service:1", "replicas": 2,
               "rollout": {"progressDeadlineSeconds": DEADLINE_SECONDS,
                           "analysis": {"intervalSeconds": 2}}}),
    )
    .await;
    wait_ready(&microservices, "web").await;
    let stable = |generation: i64| {
        move |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref())
                .and_then(|s| s.stable_revision.as_ref())
                .is_some_and(|stable| stable.generation == generation)
        }
    };
    wait_for(&microservices, "web", stable(1), Duration::from_secs(30))
        .await
        .unwrap();

    // Generation 2 asks for more CPU than the node has: its pods are never scheduled.
    let started = Instant::now();
    merge_spec(
        &microservices,
        "web",
        json!({"image": "kea.dev/kea-service:2", "resources": {"requests": {"cpu": "100000"}}}),
    )
    .await;
    let rolled_back = wait_for(
        &microservices,
        "web",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref())
                .is_some_and(|s| s.rolled_back.is_some())
        },
        Duration::from_secs(DEADLINE_SECONDS + 50),
    )
    .await
    .unwrap()
    .unwrap();
    eprintln!(
        "rolled back {:?} after the change (deadline {DEADLINE_SECONDS}s)",
        started.elapsed()
    );
    let rolled_back_condition = condition(&rolled_back, "RolledBack");
    assert_eq!(
        (
            rolled_back_condition.status.as_str(),
            rolled_back_condition.reason.as_str()
        ),
        ("True", "ProgressDeadlineExceeded")
    );
    for fragment in [
        "generation 2 (image kea.dev/kea-service:2) made no progress in 10s",
        "Unschedulable",
        "the pods are back on generation 1 (image kea.dev/kea-service:1)",
    ] {
        assert!(
            rolled_back_condition.message.contains(fragment),
            "{fragment:?} not in {:?}",
            rolled_back_condition.message
        );
    }

    // The pods run generation 1's template again, every one of them available, and the
    // Microservice is Ready; the spec still says what the user wrote.
    let deployments = namespace.api::<Deployment>();
    wait_for(
        &deployments,
        "web",
        |d: Option<&Deployment>| {
            d.and_then(rolled_out_image).as_deref() == Some("kea.dev/kea-service:1")
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    eprintln!(
        "back on generation 1 {:?} after the change",
        started.elapsed()
    );
    let ready = wait_ready(&microservices, "web").await;
    assert_eq!(ready.spec.image, "kea.dev/kea-service:2");
    assert_eq!(
        ready
            .status
            .as_ref()
            .unwrap()
            .stable_revision
            .as_ref()
            .unwrap()
            .generation,
        1
    );
    let events = namespace.api::<Event>();
    wait_for_event(
        &events,
        "web",
        "RolledBack",
        |e| e.type_.as_deref() == Some("Warning"),
        Duration::from_secs(10),
        "a Warning event RolledBack",
    )
    .await;

    // The next change is a new revision: tried, rolled out, and the new stable one.
    merge_spec(
        &microservices,
        "web",
        json!({"image": "kea.dev/kea-service:3", "resources": {"requests": {"cpu": "10m"}}}),
    )
    .await;
    let started = Instant::now();
    // First as a canary: its own Deployment of one pod, while the stable pods stay as they
    // are and the status says what the analysis does.
    let analysing = wait_for(
        &microservices,
        "web",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref())
                .and_then(|s| s.canary.as_ref())
                .is_some_and(|c| c.image == "kea.dev/kea-service:3" && c.passed_checks >= 1)
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .unwrap();
    let progressing = condition(&analysing, "Progressing");
    assert_eq!(progressing.reason, "CanaryAnalysis", "{progressing:?}");
    assert!(
        progressing.message.contains("readiness alone counts"),
        "{progressing:?}"
    );
    let canary = deployments.get("web-canary").await.unwrap();
    assert_eq!(canary.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(
        canary
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image,
        Some("kea.dev/kea-service:3".to_owned())
    );
    let stable_pods = deployments.get("web").await.unwrap();
    assert_eq!(
        rolled_out_image(&stable_pods).as_deref(),
        Some("kea.dev/kea-service:1")
    );
    let promoted = wait_for(&microservices, "web", stable(3), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "generation 3 stable {:?} after the change",
        started.elapsed()
    );
    wait_for_event(
        &events,
        "web",
        "Promoted",
        |e| e.type_.as_deref() == Some("Normal"),
        Duration::from_secs(10),
        "a Normal event Promoted",
    )
    .await;
    kea_testkit::wait_for_deletion(&deployments, "web-canary", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(promoted.status.as_ref().unwrap().canary.is_none());
    let status = promoted.status.as_ref().unwrap();
    assert!(status.rolled_back.is_none());
    assert!(kea_testkit::microservices::condition(&promoted, "RolledBack").is_none());
    assert_eq!(
        deployments
            .get("web")
            .await
            .ok()
            .as_ref()
            .and_then(rolled_out_image)
            .as_deref(),
        Some("kea.dev/kea-service:3")
    );

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}
