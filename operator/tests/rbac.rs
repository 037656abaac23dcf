//! An operator confined to one namespace (`--watch-namespace`, chart value
//! `operator.watchNamespace`) does its whole job with the permissions `kea-operator rbac
//! --watch-namespace` lists: a Role in that namespace and a ClusterRole of cluster-scoped
//! reads only. Against a REAL control plane, the controller impersonating a ServiceAccount
//! bound to exactly those.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::Duration;

use common::{Operator, TIMEOUT, create, setup, wait_ready};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kea_operator::Microservice;
use kea_operator::children::Settings;
use kea_operator::controller::rbac;
use kea_testkit::wait_for;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

/// Creates the ServiceAccount `account` in the test namespace, bound to `role` there, and
/// returns a client that acts as it.
async fn confined_client(
    namespace: &kea_testkit::TestNamespace,
    account: &str,
    role: Role,
) -> Client {
    let ns = namespace.name().to_owned();
    let post = PostParams::default();
    namespace
        .api::<ServiceAccount>()
        .create(
            &post,
            &serde_json::from_value(json!({"metadata": {"name": account}})).unwrap(),
        )
        .await
        .unwrap();
    let role_name = role.meta().name.clone().unwrap();
    namespace.api::<Role>().create(&post, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
    }))
    .unwrap();
    namespace
        .api::<RoleBinding>()
        .create(&post, &binding)
        .await
        .unwrap();
    let mut config = kea_testkit::config().await.unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:{account}"));
    Client::try_from(config).unwrap()
}

/// A permission the operator lacks shows on the Microservice as `Forbidden`, with the API
/// server's message naming it, and nothing else blocks: the children it may write are there.
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_missing_permission_shows_on_the_status() {
    let (namespace, microservices) = setup("ms-forbidden").await;
    let mut role = rbac::watched_namespace_role(namespace.name());
    // Everything but NetworkPolicies.
    role.rules
        .as_mut()
        .unwrap()
        .retain(|rule| rule.resources.as_ref().unwrap()[0] != "networkpolicies");
    let confined = confined_client(&namespace, "kea-operator", role).await;
    let operator = Operator::start_as(&namespace, confined, Settings::default());
    let started = std::time::Instant::now();
    create(
        &microservices,
        "web",
        json!({"image": "kea.dev/kea-service:dev"}),
    )
    .await;
    let ms = wait_for(
        &microservices,
        "web",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Reconciled" && c.reason == "Forbidden")
            })
        },
        // The operator first waits up to CHILDREN_SYNC_LIMIT (10 s) for the caches of the
        // children, and the one it may not list never fills: about 10.5 s when idle, more
        // when the suite's other tests share the two cores.
        Duration::from_secs(45),
    )
    .await
    .unwrap()
    .unwrap();
    eprintln!(
        "Reconciled=False Forbidden {:?} after the create",
        started.elapsed()
    );
    let ready = common::condition(&ms, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Forbidden")
    );
    assert!(
        ready.message.contains("networkpolicies") && ready.message.contains("forbidden"),
        "the message names what is missing: {}",
        ready.message
    );
    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_namespaced_operator_needs_only_its_role_and_the_cluster_scoped_reads() {
    let (namespace, microservices) = setup("ms-rbac").await;
    let admin = namespace.client();
    let ns = namespace.name().to_owned();
    let account = "kea-operator";
    let post = PostParams::default();
    let confined = confined_client(&namespace, account, rbac::watched_namespace_role(&ns)).await;
    let subject = json!([{"kind": "ServiceAccount", "name": account, "namespace": ns}]);

    // Cluster-scoped objects are shared by the tests: a name of this namespace's own.
    let cluster_name = format!("kea-test-{ns}");
    let mut cluster_role = rbac::cluster_scoped_role();
    cluster_role.metadata.name = Some(cluster_name.clone());
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    cluster_roles.create(&post, &cluster_role).await.unwrap();
    let cluster_binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": cluster_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
        "subjects": subject,
    }))
    .unwrap();
    cluster_bindings
        .create(&post, &cluster_binding)
        .await
        .unwrap();

    // The confined identity cannot read Microservices elsewhere: the test means something.
    let everywhere: Api<Microservice> = Api::all(confined.clone());
    let refused = everywhere.list(&Default::default()).await.unwrap_err();
    assert!(refused.to_string().contains("forbidden"), "{refused}");

    let operator = Operator::start_as(&namespace, confined, Settings::default());
    let image = "kea.dev/kea-service:dev";
    create(
        &microservices,
        "users",
        json!({"image": image, "replicas": 2}),
    )
    .await;
    create(
        &microservices,
        "frontend",
        json!({"image": image, "dependsOn": [{"name": "users"}],
               "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}),
    )
    .await;
    // Stores, with a StorageClass that does not exist: the cluster-scoped read says so.
    create(
        &microservices,
        "orders",
        json!({"image": image, "stores": {
            "sql": {"engine": "mariadb", "storageClassName": "no-such-class"},
            "nosql": {"engine": "redb", "storageClassName": "no-such-class"}}}),
    )
    .await;
    wait_ready(&microservices, "users").await;
    wait_for(
        &microservices,
        "orders",
        |ms: Option<&Microservice>| {
            ms.and_then(|ms| ms.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "StoresReady" && c.reason == "StorageClassNotFound")
            })
        },
        TIMEOUT,
    )
    .await
    .unwrap();
    let frontend = wait_for(
        &microservices,
        "frontend",
        |ms: Option<&Microservice>| ms.is_some_and(|ms| ms.status.is_some()),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    let conditions = frontend.status.unwrap().conditions;
    assert!(
        !conditions.iter().any(|c| c.type_ == "Reconciled"),
        "frontend's children were all applied: {conditions:?}"
    );
    operator.stop().await;
    cluster_bindings
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .unwrap();
    cluster_roles
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .unwrap();
    namespace.cleanup().await.unwrap();
}
