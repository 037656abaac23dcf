//! NetworkPolicies from `dependsOn` and `stores`, against a REAL control plane: what the
//! operator writes, how it follows `dependsOn`, and that it writes none (and removes its own)
//! when told to. Whether a CNI enforces them is the end-to-end suite's business.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use common::{Operator, TIMEOUT, create, merge_spec, setup, wait_ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kea_operator::children::Settings;
use kea_testkit::{wait_for, wait_for_deletion};
use kube::api::ListParams;
use serde_json::json;

fn template_labels(deployment: &Deployment) -> std::collections::BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn policies_follow_depends_on_and_can_be_switched_off() {
    let (namespace, microservices) = setup("ms-network").await;
    let operator = Operator::start(&namespace);
    let image = "kea.dev/kea-service:dev";
    create(
        &microservices,
        "users",
        json!({"image": image, "port": 9000}),
    )
    .await;
    create(
        &microservices,
        "frontend",
        json!({"image": image, "dependsOn": [{"name": "users"}],
               "network": {"restrictEgress": true}}),
    )
    .await;
    create(
        &microservices,
        "orders",
        json!({"image": image, "stores": {"nosql": {"engine": "redis", "storageClassName": "none"}}}),
    )
    .await;
    let users = wait_ready(&microservices, "users").await;
    assert_eq!(
        users.status.unwrap().network_policy.as_deref(),
        Some(
            "ingress on port 9000 only from Microservices that list users in dependsOn \
             (pods labelled calls.kea.dev/users)"
        ),
        "the status says what is allowed"
    );

    // users accepts its callers only, on its port.
    let policies = namespace.api::<NetworkPolicy>();
    let policy = wait_for(
        &policies,
        "users",
        |p: Option<&NetworkPolicy>| p.is_some(),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    let rule = &policy.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0];
    let from = serde_json::to_value(rule.from.as_ref().unwrap()).unwrap();
    assert_eq!(
        from,
        json!([{"podSelector": {"matchLabels": {"calls.kea.dev/users": "true"}}}])
    );
    assert_eq!(
        serde_json::to_value(&rule.ports).unwrap(),
        json!([{"port": 9000, "protocol": "TCP"}])
    );
    // frontend's pods are marked as callers of users, and may call out to it only.
    let deployments = namespace.api::<Deployment>();
    let frontend = deployments.get("frontend").await.unwrap();
    assert_eq!(
        template_labels(&frontend)
            .get("calls.kea.dev/users")
            .map(String::as_str),
        Some("true")
    );
    let frontend_policy = policies.get("frontend").await.unwrap();
    let egress = serde_json::to_value(&frontend_policy.spec.unwrap().egress).unwrap();
    assert_eq!(
        egress,
        json!([
            {
                "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
            },
            {
                "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "users", "app.kubernetes.io/name": "users"}}}],
                "ports": [{"port": 9000, "protocol": "TCP"}]
            }
        ]),
        "egress: DNS, and users' pods on users' port, nothing else"
    );
    // A store server accepts its owner only.
    let store = wait_for(
        &policies,
        "orders-redis",
        |p: Option<&NetworkPolicy>| p.is_some(),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    let from = serde_json::to_value(&store.spec.unwrap().ingress.unwrap()[0].from).unwrap();
    assert_eq!(
        from,
        json!([{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "orders", "app.kubernetes.io/name": "orders"}}}])
    );

    // Removing the dependency removes the mark: the path closes.
    merge_spec(&microservices, "frontend", json!({"dependsOn": null})).await;
    wait_for(
        &deployments,
        "frontend",
        |d: Option<&Deployment>| {
            d.is_some_and(|d| !template_labels(d).contains_key("calls.kea.dev/users"))
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    // Switched off: the operator removes the policies it wrote and writes no new one.
    operator.stop().await;
    let operator = Operator::start_with(
        &namespace,
        Settings {
            network_policies: false,
            ..Settings::default()
        },
    );
    for name in ["users", "frontend", "orders", "orders-redis"] {
        wait_for_deletion(&policies, name, TIMEOUT).await.unwrap();
    }
    create(&microservices, "payments", json!({"image": image})).await;
    let payments = wait_ready(&microservices, "payments").await;
    assert!(payments.status.unwrap().network_policy.is_none());
    let left = policies.list(&ListParams::default()).await.unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}
