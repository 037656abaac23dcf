//! Only declared calls get through: the NetworkPolicies the operator writes from `dependsOn`
//! and `spec.stores`, enforced by the cluster's network (kube-router on kind), seen from
//! inside the cluster. With the operator's policies switched off (`hack/e2e.sh` runs this file
//! again after `helm upgrade --set networkPolicies.enabled=false`, with
//! `KEA_E2E_NETWORK_POLICIES=0`) the same calls all get through and no NetworkPolicy exists.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::EnvVar;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kea_e2e::{
    ClusterClient, DEMO_NAMESPACE, eventually, get_from_service_pod, http, namespace, pod_ready,
    pods_of, wait_ready,
};
use kea_operator::Microservice;
use kea_operator::api::{DeletionPolicy, Dependency, NosqlEngine, Store, Stores};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Opening or closing a path after a change of `dependsOn` (a rollout of the caller's pods).
const PATH_CHANGE_LIMIT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether the installed operator writes NetworkPolicies (its default).
fn policies_on() -> bool {
    std::env::var("KEA_E2E_NETWORK_POLICIES").map_or(true, |v| v != "0")
}

/// `users` with a Redis store of its own, as the owner whose data nobody else may reach.
fn users() -> Microservice {
    let mut ms = kea_e2e::microservice("users", 1);
    ms.spec.stores = Some(Stores {
        sql: None,
        nosql: Some(Store {
            engine: NosqlEngine::Redis,
            size: "64Mi".into(),
            storage_class_name: None,
            deletion_policy: DeletionPolicy::Delete,
            backup: None,
            restore_from: None,
        }),
    });
    ms
}

fn caller_of(name: &str, dependency: &str) -> Microservice {
    let mut ms = kea_e2e::microservice(name, 1);
    ms.spec.depends_on = vec![Dependency {
        name: dependency.into(),
    }];
    ms
}

/// A Microservice that calls `users` (USERS_URL set by hand) without declaring it.
fn undeclared_caller(name: &str) -> Microservice {
    let mut ms = kea_e2e::microservice(name, 1);
    ms.spec.env = vec![EnvVar {
        name: "USERS_URL".into(),
        value: Some("http://users:8080".into()),
        ..Default::default()
    }];
    ms
}

/// Whether the newest Ready pod of the Microservice `name` (the one a rollout brings) reports
/// `users` up at its own `/api/dependencies`, and what it says about the call.
async fn sees_users(client: &Client, ns: &str, name: &str) -> anyhow::Result<(bool, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let newest = pods_of(&pods, name)
        .await?
        .into_iter()
        .filter(pod_ready)
        .max_by_key(|p| p.creation_timestamp())
        .ok_or_else(|| anyhow::anyhow!("no Ready pod of {name}"))?;
    let answer = http(
        client,
        ns,
        &newest.name_any(),
        "GET",
        "/api/dependencies",
        None,
    )
    .await?;
    let report = answer.json()?;
    let users = report["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == "users")
        .ok_or_else(|| anyhow::anyhow!("{name} reports no users dependency: {report}"))?;
    Ok((users["up"] == true, users.to_string()))
}

/// Waits until `name` sees `users` up (`want`) or not three times in a row (a single failed
/// call is no closed path), and returns how long it took to the first of the three.
async fn until_sees_users(
    client: &Client,
    ns: &str,
    name: &str,
    want: bool,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    let what = if want { "up" } else { "down" };
    let mut streak: Option<Duration> = None;
    let mut in_a_row = 0;
    let mut last = String::new();
    while in_a_row < 3 {
        assert!(
            start.elapsed() < limit,
            "{name} did not see users {what} within {limit:?}: {last}"
        );
        match sees_users(client, ns, name).await {
            Ok((up, _)) if up == want => {
                streak.get_or_insert(start.elapsed());
                in_a_row += 1;
            }
            Ok((_, report)) => (streak, in_a_row, last) = (None, 0, report),
            Err(error) => (streak, in_a_row, last) = (None, 0, format!("{error:#}")),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    streak.unwrap_or_default()
}

async fn policy_names(api: &Api<NetworkPolicy>) -> Vec<String> {
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

async fn set_depends_on(api: &Api<Microservice>, name: &str, depends_on: serde_json::Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"dependsOn": depends_on}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn only_declared_callers_reach_a_service_and_only_its_owner_reaches_its_store() {
    let ns = namespace("net").await.unwrap();
    let client = ns.client();
    let microservices: Api<Microservice> = ns.api();
    for ms in [
        users(),
        caller_of("caller", "users"),
        undeclared_caller("intruder"),
    ] {
        microservices
            .create(&PostParams::default(), &ms)
            .await
            .unwrap();
    }
    for name in ["users", "caller", "intruder"] {
        wait_ready(&microservices, name, READY_TIMEOUT)
            .await
            .unwrap();
    }
    // Any pod of the namespace that is no Microservice: no label, no declared call.
    let stranger = ClusterClient::start(&client, ns.name(), "stranger", BTreeMap::new())
        .await
        .unwrap();
    let users_url = "http://users:8080/";
    let owner_store = get_from_service_pod(&client, ns.name(), "users", "/nosqldata")
        .await
        .unwrap();
    assert_eq!(
        owner_store.status, 200,
        "the owner reaches its store: {}",
        owner_store.body
    );
    let policies: Api<NetworkPolicy> = ns.api();

    if !policies_on() {
        assert!(
            policy_names(&policies).await.is_empty(),
            "policies switched off: none in the test namespace"
        );
        eventually(
            "no NetworkPolicy in the demo namespace",
            Duration::from_secs(60),
            || async {
                let demo: Api<NetworkPolicy> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
                let left = policy_names(&demo).await;
                if left.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(anyhow::anyhow!("still there: {left:?}"))
                }
            },
        )
        .await
        .unwrap();
        let status = microservices.get("users").await.unwrap().status.unwrap();
        assert_eq!(status.network_policy, None, "the status claims no boundary");
        // Without policies, the undeclared call and the stranger's store access get through:
        // what the boundary, when on, takes away.
        assert!(sees_users(&client, ns.name(), "intruder").await.unwrap().0);
        assert!(stranger.reaches(users_url).await);
        let answer = stranger
            .tcp_exchange("users-redis", 6379, "PING")
            .await
            .unwrap();
        assert!(answer.contains("NOAUTH"), "redis answered {answer:?}");
        ns.cleanup().await.unwrap();
        return;
    }

    assert_eq!(
        policy_names(&policies).await,
        ["caller", "intruder", "users", "users-redis"],
        "one policy per Microservice and per store server"
    );
    let status = microservices.get("users").await.unwrap().status.unwrap();
    let summary = status.network_policy.unwrap_or_default();
    assert!(
        summary.contains("only from Microservices that list users in dependsOn"),
        "status says what is allowed: {summary}"
    );

    // The declared caller gets through; the undeclared one and the stranger do not.
    until_sees_users(&client, ns.name(), "caller", true, PATH_CHANGE_LIMIT).await;
    let (up, report) = sees_users(&client, ns.name(), "intruder").await.unwrap();
    assert!(!up, "an undeclared caller must not reach users: {report}");
    let refused = stranger.http(users_url, None).await;
    assert!(refused.is_err(), "a stranger reached users: {refused:?}");
    // Only the owner reaches its store: the stranger's connection to Redis gets no answer.
    let answer = stranger
        .tcp_exchange("users-redis", 6379, "PING")
        .await
        .unwrap();
    assert!(
        !answer.contains("NOAUTH"),
        "a stranger reached the owner's Redis: {answer:?}"
    );

    // Declaring the call opens the path; removing the declaration closes it again.
    set_depends_on(&microservices, "intruder", json!([{"name": "users"}])).await;
    let opened = until_sees_users(&client, ns.name(), "intruder", true, PATH_CHANGE_LIMIT).await;
    set_depends_on(&microservices, "intruder", json!(null)).await;
    let closed = until_sees_users(&client, ns.name(), "intruder", false, PATH_CHANGE_LIMIT).await;
    eprintln!(
        "e2e: adding dependsOn opened the path in {opened:?}, removing it closed it in {closed:?}"
    );
    ns.cleanup().await.unwrap();
}
