//! Each service owns its data (`spec.stores`): provisioned stores on real volumes, shared by
//! the replicas, kept across the loss of every pod, kept or deleted with the Microservice as
//! its deletionPolicy says, credentials seen by nobody but the service. Each test runs in a
//! namespace of its own that enforces Pod Security `restricted`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret};
use kea_e2e::{
    Answer, ClusterClient, OPERATOR_NAMESPACE, TestNamespace, eventually, http, namespace,
    pod_ready, pods_of, service_url,
};
use kea_operator::Microservice;
use kea_operator::api::{DeletionPolicy, NosqlEngine, SqlEngine, Store, Stores};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};

/// MariaDB initialises its data directory on first start: allow for it.
const STORE_TIMEOUT: Duration = Duration::from_secs(300);

fn store<E>(engine: E, size: &str, class: Option<&str>) -> Store<E> {
    Store {
        engine,
        size: size.into(),
        storage_class_name: class.map(str::to_owned),
        deletion_policy: DeletionPolicy::Retain,
        backup: None,
        restore_from: None,
    }
}

fn with_stores(name: &str, replicas: i32, stores: Stores) -> Microservice {
    let mut ms = kea_e2e::microservice(name, replicas);
    ms.spec.stores = Some(stores);
    ms
}

fn server_stores() -> Stores {
    Stores {
        sql: Some(store(SqlEngine::Mariadb, "256Mi", None)),
        nosql: Some(store(NosqlEngine::Redis, "128Mi", None)),
    }
}

/// POSTs an item through the Service `name`, from a declared caller's pod.
async fn post_item(caller: &ClusterClient, name: &str, route: &str, item: &str) {
    let body = format!(r#"{{"name":"{item}"}}"#);
    let answer = caller
        .http(&service_url(name, route), Some(&body))
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "POST {route} {item}: {}", answer.body);
}

fn item_names(answer: &Answer) -> Vec<String> {
    answer.json().unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["name"].as_str().map(str::to_owned))
        .collect()
}

/// Every item in `items` is listed by `route` of the Service `name`.
async fn assert_items_through_service(
    caller: &ClusterClient,
    name: &str,
    route: &str,
    items: &[String],
) -> Answer {
    let answer = caller.http(&service_url(name, route), None).await.unwrap();
    assert_eq!(answer.status, 200, "GET {route}: {}", answer.body);
    let names = item_names(&answer);
    for item in items {
        assert!(names.contains(item), "{route} lacks {item}: {names:?}");
    }
    answer
}

/// Waits until `name` is Ready with `replicas` Ready pods, none of them in `old_pods`.
async fn wait_ready_again(ns: &TestNamespace, name: &str, replicas: usize, old_pods: &[String]) {
    let microservices = ns.api::<Microservice>();
    let pods = ns.api::<Pod>();
    eventually(&format!("{name} Ready on new pods"), STORE_TIMEOUT, || {
        let (microservices, pods) = (microservices.clone(), pods.clone());
        async move {
            let ms = microservices.get(name).await?;
            let list = pods_of(&pods, name).await?;
            let fresh = list
                .iter()
                .filter(|p| pod_ready(p) && !old_pods.contains(&p.name_any()))
                .count();
            Ok(
                (kea_e2e::is_ready(&ms) && fresh == replicas && list.len() == replicas)
                    .then_some(()),
            )
        }
    })
    .await
    .unwrap();
}

fn secret_text(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

/// The Microservice, the Deployment, the StatefulSets, the namespace's Events, the
/// operator's logs and the diagram: everything a user or a log collector sees.
async fn everything_visible(client: &Client, ns: &TestNamespace, name: &str) -> String {
    let mut text = String::new();
    let ms = ns.api::<Microservice>().get(name).await.unwrap();
    text.push_str(&serde_json::to_string(&ms).unwrap());
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    text.push_str(&serde_json::to_string(&deployment).unwrap());
    let sets = ns
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap();
    text.push_str(&serde_json::to_string(&sets).unwrap());
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    text.push_str(&serde_json::to_string(&events).unwrap());
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    for pod in operator_pods.list(&ListParams::default()).await.unwrap() {
        // A log that cannot be read fails the test: an empty one would pass the leak check.
        let logs = operator_pods
            .logs(&pod.name_any(), &LogParams::default())
            .await
            .unwrap_or_else(|err| panic!("the logs of operator pod {}: {err}", pod.name_any()));
        assert!(
            !logs.is_empty(),
            "operator pod {} has logged nothing",
            pod.name_any()
        );
        text.push_str(&logs);
    }
    text.push_str(
        &kea_cli::diagram::from_cluster(client, ns.name())
            .await
            .unwrap(),
    );
    text
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn orders_replicas_share_their_own_stores_and_keep_them() {
    let ns = namespace("stores").await.unwrap();
    let client = ns.client();
    let microservices = ns.api::<Microservice>();
    let started = Instant::now();
    microservices
        .create(
            &PostParams::default(),
            &with_stores("orders", 3, server_stores()),
        )
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, "orders", STORE_TIMEOUT)
        .await
        .unwrap();
    eprintln!(
        "e2e: orders with MariaDB and Redis Ready {:.1}s after the apply",
        started.elapsed().as_secs_f64()
    );

    // Items POSTed through the Service are seen by each of the three pods.
    let caller = ClusterClient::caller_of(&client, ns.name(), "orders")
        .await
        .unwrap();
    let items: Vec<String> = (0..5).map(|i| format!("order-{i}")).collect();
    for item in &items {
        post_item(&caller, "orders", "/mysqldata", item).await;
        post_item(&caller, "orders", "/nosqldata", item).await;
    }
    let pods = ns.api::<Pod>();
    let serving = pods_of(&pods, "orders").await.unwrap();
    assert_eq!(serving.len(), 3);
    for pod in &serving {
        for (route, engine) in [("/mysqldata", "mysql"), ("/nosqldata", "redis")] {
            let answer = http(&client, ns.name(), &pod.name_any(), "GET", route, None)
                .await
                .unwrap();
            let names = item_names(&answer);
            for item in &items {
                assert!(
                    names.contains(item),
                    "pod {} {route} lacks {item}",
                    pod.name_any()
                );
            }
            assert_eq!(
                answer.json().unwrap()["store"].as_str(),
                Some(engine),
                "pod {} {route} answers from its own server",
                pod.name_any()
            );
        }
    }

    // Every pod lost at once, the service's and its stores': the data is on the volumes.
    let mut old: Vec<String> = serving.iter().map(|p| p.name_any()).collect();
    old.extend(["orders-mariadb-0".to_owned(), "orders-redis-0".to_owned()]);
    for pod in &old {
        pods.delete(pod, &DeleteParams::default()).await.unwrap();
    }
    wait_ready_again(&ns, "orders", 3, &old[..3]).await;
    for route in ["/mysqldata", "/nosqldata"] {
        assert_items_through_service(&caller, "orders", route, &items).await;
    }

    // The generated credentials are nowhere but in the Secrets.
    let secrets = ns.api::<Secret>();
    let mariadb = secrets.get("orders-mariadb").await.unwrap();
    let redis = secrets.get("orders-redis").await.unwrap();
    let visible = everything_visible(&client, &ns, "orders").await;
    for (what, value) in [
        ("MariaDB password", secret_text(&mariadb, "password")),
        (
            "MariaDB root password",
            secret_text(&mariadb, "root-password"),
        ),
        ("Redis password", secret_text(&redis, "password")),
    ] {
        assert_eq!(value.len(), 32);
        assert!(!visible.contains(&value), "the {what} is visible");
    }

    // Deleted and created again under Retain: the data is back.
    microservices
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let sets = ns.api::<StatefulSet>();
    for set in ["orders-mariadb", "orders-redis"] {
        kea_testkit::wait_for_deletion(&sets, set, STORE_TIMEOUT)
            .await
            .unwrap();
    }
    let claims = ns.api::<PersistentVolumeClaim>();
    for claim in ["data-orders-mariadb-0", "data-orders-redis-0"] {
        assert!(
            claims.get_opt(claim).await.unwrap().is_some(),
            "{claim} kept"
        );
    }
    microservices
        .create(
            &PostParams::default(),
            &with_stores("orders", 3, server_stores()),
        )
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, "orders", STORE_TIMEOUT)
        .await
        .unwrap();
    for route in ["/mysqldata", "/nosqldata"] {
        assert_items_through_service(&caller, "orders", route, &items).await;
    }

    // deletionPolicy Delete: the volumes and the Secrets go with the Microservice.
    let mut delete = server_stores();
    for policy in [
        delete.sql.as_mut().map(|s| &mut s.deletion_policy),
        delete.nosql.as_mut().map(|s| &mut s.deletion_policy),
    ]
    .into_iter()
    .flatten()
    {
        *policy = DeletionPolicy::Delete;
    }
    let mut ms = microservices.get("orders").await.unwrap();
    ms.spec.stores = Some(delete);
    ms.metadata.managed_fields = None;
    microservices
        .replace("orders", &PostParams::default(), &ms)
        .await
        .unwrap();
    eventually("the Secrets owned by orders", STORE_TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let mut owned = 0;
            for name in ["orders-mariadb", "orders-redis"] {
                let secret = secrets.get(name).await?;
                owned += usize::from(secret.owner_references().iter().any(|r| r.name == "orders"));
            }
            Ok((owned == 2).then_some(()))
        }
    })
    .await
    .unwrap();
    microservices
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    for claim in ["data-orders-mariadb-0", "data-orders-redis-0"] {
        kea_testkit::wait_for_deletion(&claims, claim, STORE_TIMEOUT)
            .await
            .unwrap();
    }
    for secret in ["orders-mariadb", "orders-redis"] {
        kea_testkit::wait_for_deletion(&secrets, secret, STORE_TIMEOUT)
            .await
            .unwrap();
    }
    ns.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn embedded_stores_keep_their_data_when_the_pod_goes() {
    let ns = namespace("embedded").await.unwrap();
    let client = ns.client();
    let microservices = ns.api::<Microservice>();
    let stores = Stores {
        sql: Some(store(SqlEngine::Sqlite, "64Mi", None)),
        nosql: Some(store(NosqlEngine::Redb, "64Mi", None)),
    };
    microservices
        .create(&PostParams::default(), &with_stores("users", 1, stores))
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, "users", STORE_TIMEOUT)
        .await
        .unwrap();
    let caller = ClusterClient::caller_of(&client, ns.name(), "users")
        .await
        .unwrap();
    let items: Vec<String> = (0..3).map(|i| format!("user-{i}")).collect();
    for item in &items {
        post_item(&caller, "users", "/mysqldata", item).await;
        post_item(&caller, "users", "/nosqldata", item).await;
    }
    let pods = ns.api::<Pod>();
    let old: Vec<String> = pods_of(&pods, "users")
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();
    for pod in &old {
        pods.delete(pod, &DeleteParams::default()).await.unwrap();
    }
    wait_ready_again(&ns, "users", 1, &old).await;
    for route in ["/mysqldata", "/nosqldata"] {
        let answer = assert_items_through_service(&caller, "users", route, &items).await;
        let engine = if route == "/mysqldata" {
            "sqlite"
        } else {
            "redb"
        };
        assert_eq!(answer.json().unwrap()["store"], engine);
    }
    ns.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn a_store_volume_that_cannot_bind_is_reported() {
    let ns = namespace("unbound").await.unwrap();
    let microservices = ns.api::<Microservice>();
    let class = "no-such-class";
    let stores = Stores {
        sql: Some(store(SqlEngine::Mariadb, "64Mi", Some(class))),
        nosql: None,
    };
    let started = Instant::now();
    microservices
        .create(&PostParams::default(), &with_stores("orders", 1, stores))
        .await
        .unwrap();
    let condition = eventually(
        "StoresReady=False naming the class",
        Duration::from_secs(60),
        || {
            let microservices = microservices.clone();
            async move {
                let ms = microservices.get("orders").await?;
                let conditions = ms.status.map(|s| s.conditions).unwrap_or_default();
                let stores = conditions
                    .iter()
                    .find(|c| c.type_ == "StoresReady")
                    .cloned();
                let ready = conditions.iter().find(|c| c.type_ == "Ready").cloned();
                Ok(match (stores, ready) {
                    (Some(stores), Some(ready))
                        if stores.status == "False" && stores.message.contains(class) =>
                    {
                        Some((stores, ready))
                    }
                    _ => None,
                })
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "e2e: StoresReady=False after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        condition.0.message
    );
    assert_eq!(condition.0.reason, "StorageClassNotFound");
    assert_eq!(condition.1.status, "False");
    ns.cleanup().await.unwrap();
}
