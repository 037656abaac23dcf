//! Nothing silently stuck: when the API server refuses a child, the Microservice says so
//! within seconds (`Ready` and `Reconciled` False, the reason, the API server's message) and
//! a Warning Event tells it once; when the cause goes away, the status recovers. Against a
//! REAL control plane, with two kinds of refusal: an invalid object and an admission policy.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::Duration;

use common::{Operator, create, events_about, merge_spec, setup, wait_for_event, wait_ready};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Event, Service};
use k8s_openapi::api::events::v1::Event as EventV1;
use kea_operator::Microservice;
use kea_operator::api::conditions::{self, reasons};
use kea_operator::controller::recorder::EventRecorder;
use kea_testkit::wait_for;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::events::{Event as RecordedEvent, EventType};
use serde_json::json;

/// "Within seconds": the first reconcile fails at once; allow for a loaded machine.
const REPORTED_WITHIN: Duration = Duration::from_secs(20);

/// Waits until the Microservice shows `Reconciled=False` with `reason`, and returns it.
async fn wait_failure(api: &Api<Microservice>, name: &str, reason: &'static str) -> Microservice {
    wait_for(
        api,
        name,
        move |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == conditions::RECONCILED && c.status == "False" && c.reason == reason
                })
            })
        },
        REPORTED_WITHIN,
    )
    .await
    .unwrap()
    .unwrap()
}

/// The Warning Events of the Microservice `name` with `reason`.
async fn warnings(events: &Api<Event>, name: &str, reason: &str) -> Vec<Event> {
    events_about(events, name, reason)
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect()
}

fn assert_failure_shown(ms: &Microservice, reason: &str, fragment: &str) {
    let status = ms.status.as_ref().unwrap();
    for type_ in [conditions::READY, conditions::RECONCILED] {
        let condition = common::condition(ms, type_);
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", reason),
            "{type_}: {condition:?}"
        );
        assert!(
            condition.message.contains(fragment),
            "{type_} should say {fragment:?}: {}",
            condition.message
        );
    }
    assert_eq!(status.observed_generation, ms.metadata.generation);
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_deployment_the_api_server_refuses_shows_on_the_status() {
    let (namespace, microservices) = setup("ms-refused").await;
    let operator = Operator::start(&namespace);
    // The CRD takes the core EnvVar as it is; the API server's Deployment validation refuses
    // a variable with both a value and a valueFrom.
    create(
        &microservices,
        "greedy",
        json!({"image": "kea.dev/kea-service:dev",
               "env": [{"name": "POD", "value": "x",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
    )
    .await;
    let ms = wait_failure(&microservices, "greedy", reasons::CHILD_REJECTED).await;
    assert_failure_shown(
        &ms,
        reasons::CHILD_REJECTED,
        "may not be specified when `value` is not empty",
    );
    let events: Api<Event> = namespace.api();
    wait_for_warning(&events, "greedy", reasons::CHILD_REJECTED).await;

    // Retries with a backoff go on; the same failure is not told again.
    let reconciles = operator.metrics.reconciles.get();
    let start = std::time::Instant::now();
    while operator.metrics.reconciles.get() < reconciles + 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "no retry");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        warnings(&events, "greedy", reasons::CHILD_REJECTED)
            .await
            .iter()
            .map(|e| e.count.unwrap_or(1))
            .sum::<i32>(),
        1,
        "one Warning Event for one failure"
    );

    // Fixed: Ready, and the failure is gone from the status.
    merge_spec(
        &microservices,
        "greedy",
        json!({"env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
    )
    .await;
    let ms = wait_ready(&microservices, "greedy").await;
    assert!(
        !ms.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == conditions::RECONCILED),
        "Reconciled is shown only while it fails"
    );
    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

async fn wait_for_warning(events: &Api<Event>, name: &str, reason: &str) {
    let warning = |e: &Event| e.type_.as_deref() == Some("Warning");
    let what = format!("Warning Event {reason}");
    wait_for_event(events, name, reason, warning, REPORTED_WITHIN, &what).await;
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_service_an_admission_policy_denies_shows_on_the_status() {
    let (namespace, microservices) = setup("ms-denied").await;
    // A cluster rule the operator cannot know of: no Service of type ClusterIP in this
    // namespace (a ValidatingAdmissionPolicy, bound to this namespace only).
    let client = namespace.client();
    let name = format!("kea-test-deny-{}", namespace.name());
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["services"]}]},
            "validations": [{
                "expression": "false",
                "message": "Services need the platform team's approval in this namespace"}]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": namespace.name()}}}
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The API server enforces a new policy once its informer has it: wait for a dry run to
    // be denied.
    let services: Api<Service> = namespace.api();
    let probe: Service = serde_json::from_value(json!({
        "metadata": {"name": "probe"},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    let start = std::time::Instant::now();
    while services
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &probe,
        )
        .await
        .is_ok()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the policy is not enforced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "web",
        json!({"image": "kea.dev/kea-service:dev"}),
    )
    .await;
    let ms = wait_failure(&microservices, "web", reasons::CHILD_REJECTED).await;
    assert_failure_shown(
        &ms,
        reasons::CHILD_REJECTED,
        "Services need the platform team's approval",
    );
    let events: Api<Event> = namespace.api();
    wait_for_warning(&events, "web", reasons::CHILD_REJECTED).await;

    // The rule lifted: the next retry succeeds.
    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&microservices, "web").await;
    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_name_someone_else_holds_is_refused_and_left_untouched() {
    let (namespace, microservices) = setup("ms-taken").await;
    // Someone else's Service of the name, made before the operator starts (it is in the
    // operator's cache of other objects from the first list), and a Deployment made after it
    // (it arrives through the watch).
    let services: Api<Service> = namespace.api();
    let theirs: Service = serde_json::from_value(json!({
        "metadata": {"name": "taken", "labels": {"team": "theirs"}},
        "spec": {"selector": {"team": "theirs"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let operator = Operator::start(&namespace);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = namespace.api();
    let their_deployment = serde_json::from_value(json!({
        "metadata": {"name": "taken"},
        "spec": {
            "selector": {"matchLabels": {"team": "theirs"}},
            "template": {
                "metadata": {"labels": {"team": "theirs"}},
                "spec": {"containers": [{"name": "theirs", "image": "theirs:1"}]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &their_deployment)
        .await
        .unwrap();

    create(
        &microservices,
        "taken",
        json!({"image": "kea.dev/kea-service:dev"}),
    )
    .await;
    let ms = wait_failure(&microservices, "taken", reasons::CHILD_CONFLICT).await;
    assert_failure_shown(
        &ms,
        reasons::CHILD_CONFLICT,
        "exists and is not controlled by this Microservice",
    );
    // Nothing of theirs was written to: no owner added, their spec as they left it.
    let service = services.get("taken").await.unwrap();
    assert_eq!(service.metadata.owner_references, None);
    assert_eq!(
        service.spec.unwrap().selector,
        Some([("team".to_owned(), "theirs".to_owned())].into())
    );
    let deployment = deployments.get("taken").await.unwrap();
    assert_eq!(deployment.metadata.owner_references, None);
    let containers = deployment.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.image.clone())
            .collect::<Vec<_>>(),
        [Some("theirs:1".to_owned())]
    );

    // Their objects gone, the name is free: the Microservice gets its own.
    services
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    deployments
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&microservices, "taken").await;
    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

/// The events of `name`, as `events.k8s.io/v1` shows them (with their series).
async fn series_of(events: &Api<EventV1>, name: &str) -> Vec<(String, i32)> {
    let mut found: Vec<(String, i32)> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (e.note.unwrap_or_default(), count)
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_repeated_event_is_one_event_whose_count_rises() {
    let (namespace, microservices) = setup("ms-events").await;
    create(
        &microservices,
        "noisy",
        json!({"image": "kea.dev/kea-service:dev"}),
    )
    .await;
    let ms = microservices.get("noisy").await.unwrap();
    let reference = kube::Resource::object_ref(&ms, &());
    let recorder = EventRecorder::new(namespace.client(), "kea-operator", Some("test"));
    let event = |note: &str| RecordedEvent {
        type_: EventType::Warning,
        reason: "NotReady".to_owned(),
        note: Some(note.to_owned()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    let events: Api<EventV1> = namespace.api();

    for _ in 0..3 {
        recorder.publish(&event("down"), &reference).await.unwrap();
    }
    recorder.publish(&event("other"), &reference).await.unwrap();
    assert_eq!(
        series_of(&events, "noisy").await,
        [("down".to_owned(), 3), ("other".to_owned(), 1)],
        "three of the same are one Event counting 3; another message is another Event"
    );

    // The Event is gone (the API server's TTL, or deleted): the next one is created anew.
    let down = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.note.as_deref() == Some("down"))
        .unwrap();
    events
        .delete(&down.metadata.name.unwrap(), &DeleteParams::default())
        .await
        .unwrap();
    recorder.publish(&event("down"), &reference).await.unwrap();
    assert_eq!(
        series_of(&events, "noisy").await,
        [("down".to_owned(), 1), ("other".to_owned(), 1)]
    );
    namespace.cleanup().await.unwrap();
}
