//! `spec.stores` against a REAL control plane (`hack/control-plane.sh up`: etcd,
//! kube-apiserver, kube-controller-manager with its StatefulSet, PersistentVolume and
//! garbage-collection controllers, the scheduler and kwok). Volumes bind to PersistentVolumes
//! the test creates; kwok runs the pods. Each test runs its own controller in a fresh namespace.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Operator, StaticVolumes, TIMEOUT, condition, create, merge_spec, setup, wait_ready};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Secret};
use kea_operator::Microservice;
use kea_testkit::{TestNamespace, has_status_condition, wait_for, wait_for_deletion};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

fn secret_value(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

/// Everything a user or a log could see of the Microservice, as one text.
async fn visible_text(namespace: &TestNamespace, name: &str) -> String {
    let ms = namespace.api::<Microservice>().get(name).await.unwrap();
    let deployment = namespace.api::<Deployment>().get(name).await.unwrap();
    let stateful_sets = namespace
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let events = namespace
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    format!(
        "{}\n{}\n{}\n{}",
        serde_json::to_string(&ms).unwrap(),
        serde_json::to_string(&deployment).unwrap(),
        serde_json::to_string(&stateful_sets).unwrap(),
        serde_json::to_string(&events).unwrap()
    )
}

fn stores_spec(class: &str) -> serde_json::Value {
    json!({
        "image": "kea.dev/kea-service:dev",
        "replicas": 2,
        "stores": {
            "sql": {"engine": "mariadb", "size": "1Gi", "storageClassName": class},
            "nosql": {"engine": "redis", "size": "1Gi", "storageClassName": class, "deletionPolicy": "Delete"},
        },
    })
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn server_stores_are_provisioned_kept_and_adopted() {
    let (namespace, microservices) = setup("ms-stores").await;
    let ns = namespace.name().to_owned();
    let mut volumes = StaticVolumes::new(&namespace).await;
    volumes.for_claim(&ns, "data-orders-mariadb-0").await;
    volumes.for_claim(&ns, "data-orders-redis-0").await;
    let operator = Operator::start(&namespace);
    create(&microservices, "orders", stores_spec(&volumes.class)).await;

    // Ready requires both stores: their servers are StatefulSets on bound volumes.
    let ready = wait_ready(&microservices, "orders").await;
    assert_eq!(condition(&ready, "StoresReady").status, "True");
    let stores = &ready.status.as_ref().unwrap().stores;
    assert_eq!(stores.len(), 2, "{stores:?}");
    assert!(stores.iter().all(|s| s.ready), "{stores:?}");
    assert_eq!(
        stores[0].host.as_deref(),
        Some(format!("orders-mariadb.{ns}.svc.cluster.local:3306").as_str())
    );
    assert_eq!(stores[1].volume, "data-orders-redis-0");

    // The credentials: generated, in the Secrets only; the service gets references.
    let secrets = namespace.api::<Secret>();
    let mariadb_secret = secrets.get("orders-mariadb").await.unwrap();
    let password = secret_value(&mariadb_secret, "password");
    let root_password = secret_value(&mariadb_secret, "root-password");
    let redis_password = secret_value(&secrets.get("orders-redis").await.unwrap(), "password");
    assert_eq!(password.len(), 32);
    assert_ne!(password, root_password);
    let deployment = namespace.api::<Deployment>().get("orders").await.unwrap();
    let env = &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let database_url = env.iter().find(|e| e.name == "DATABASE_URL").unwrap();
    assert!(database_url.value.is_none());
    let reference = database_url
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("orders-mariadb", "url")
    );
    let visible = visible_text(&namespace, "orders").await;
    for (what, secret) in [
        ("password", &password),
        ("root password", &root_password),
        ("redis password", &redis_password),
    ] {
        assert!(!visible.contains(secret.as_str()), "the {what} leaks");
    }

    // Under Retain the Secret has no owner (it outlives the Microservice); under Delete it has.
    assert!(mariadb_secret.owner_references().is_empty());
    let redis_secret = secrets.get("orders-redis").await.unwrap();
    assert_eq!(redis_secret.owner_references()[0].name, "orders");

    // Steady state: no writes, and the Secret is never rewritten.
    let writes = operator.metrics.writes.get();
    let version = mariadb_secret.resource_version();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        operator.metrics.writes.get(),
        writes,
        "no API writes at steady state"
    );
    assert_eq!(
        secrets
            .get("orders-mariadb")
            .await
            .unwrap()
            .resource_version(),
        version
    );

    // Delete: Retain keeps the claim and the Secret, Delete removes them.
    let claims = namespace.api::<PersistentVolumeClaim>();
    let redis_claim_uid = claims.get("data-orders-redis-0").await.unwrap().uid();
    microservices
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let stateful_sets = namespace.api::<StatefulSet>();
    wait_for_deletion(&stateful_sets, "orders-mariadb", TIMEOUT)
        .await
        .unwrap();
    wait_for_deletion(&secrets, "orders-redis", TIMEOUT)
        .await
        .unwrap();
    wait_for_deletion(&claims, "data-orders-redis-0", TIMEOUT)
        .await
        .unwrap();
    assert!(secrets.get_opt("orders-mariadb").await.unwrap().is_some());
    assert!(
        claims
            .get_opt("data-orders-mariadb-0")
            .await
            .unwrap()
            .is_some()
    );

    // Created again under the same name: the retained data and credentials are adopted.
    volumes.for_claim(&ns, "data-orders-redis-0").await;
    create(&microservices, "orders", stores_spec(&volumes.class)).await;
    wait_ready(&microservices, "orders").await;
    let adopted = secrets.get("orders-mariadb").await.unwrap();
    assert_eq!(adopted.uid(), mariadb_secret.uid());
    assert_eq!(secret_value(&adopted, "password"), password);
    let new_redis_claim = claims.get("data-orders-redis-0").await.unwrap();
    assert_ne!(new_redis_claim.uid(), redis_claim_uid);

    operator.stop().await;
    namespace.cleanup().await.unwrap();
    volumes.cleanup().await;
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn embedded_stores_live_on_claims_of_their_own() {
    let (namespace, microservices) = setup("ms-embedded").await;
    let ns = namespace.name().to_owned();
    let mut volumes = StaticVolumes::new(&namespace).await;
    volumes.for_claim(&ns, "users-sqlite").await;
    volumes.for_claim(&ns, "users-redb").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "users",
        json!({
            "image": "kea.dev/kea-service:dev",
            "stores": {
                "sql": {"engine": "sqlite", "storageClassName": volumes.class},
                "nosql": {"engine": "redb", "storageClassName": volumes.class, "deletionPolicy": "Delete"},
            },
        }),
    )
    .await;
    let ready = wait_ready(&microservices, "users").await;
    assert_eq!(condition(&ready, "StoresReady").reason, "StoresReady");
    let deployment = namespace.api::<Deployment>().get("users").await.unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let claims: BTreeMap<String, String> = spec
        .template
        .spec
        .unwrap()
        .volumes
        .unwrap()
        .into_iter()
        .filter_map(|v| Some((v.name, v.persistent_volume_claim?.claim_name)))
        .collect();
    assert_eq!(
        claims.values().cloned().collect::<Vec<_>>(),
        ["users-redb", "users-sqlite"]
    );

    microservices
        .delete("users", &DeleteParams::default())
        .await
        .unwrap();
    let claim_api = namespace.api::<PersistentVolumeClaim>();
    wait_for_deletion(&claim_api, "users-redb", TIMEOUT)
        .await
        .unwrap();
    assert!(claim_api.get_opt("users-sqlite").await.unwrap().is_some());

    operator.stop().await;
    namespace.cleanup().await.unwrap();
    volumes.cleanup().await;
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_volume_that_cannot_bind_shows_on_the_status() {
    let (namespace, microservices) = setup("ms-unbound").await;
    let operator = Operator::start(&namespace);
    let class = format!("{}-missing", namespace.name());
    let started = Instant::now();
    create(
        &microservices,
        "orders",
        json!({
            "image": "kea.dev/kea-service:dev",
            "stores": {"sql": {"engine": "mariadb", "storageClassName": class}},
        }),
    )
    .await;
    let seen = wait_for(
        &microservices,
        "orders",
        has_status_condition("StoresReady", "False"),
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .unwrap();
    let stores = condition(&seen, "StoresReady");
    assert_eq!(stores.reason, "StorageClassNotFound");
    assert!(stores.message.contains(&class), "{}", stores.message);
    let ready = condition(&seen, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StorageClassNotFound")
    );
    eprintln!(
        "StoresReady=False after {:?}: {}",
        started.elapsed(),
        stores.message
    );

    // An embedded store whose claim finds no volume (no such class, no default either).
    create(
        &microservices,
        "users",
        json!({
            "image": "kea.dev/kea-service:dev",
            "stores": {"nosql": {"engine": "redb", "storageClassName": class}},
        }),
    )
    .await;
    let seen = wait_for(
        &microservices,
        "users",
        has_status_condition("StoresReady", "False"),
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        condition(&seen, "StoresReady").reason,
        "StorageClassNotFound"
    );
    let status = seen.status.unwrap();
    assert_eq!(status.stores[0].volume, "users-redb");
    assert!(!status.stores[0].ready);

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}

/// The requested storage of a claim.
fn requested(claim: &PersistentVolumeClaim) -> Option<String> {
    kea_operator::children::stores::claim_request(claim)
}

/// Raising `size` grows a claim whose StorageClass allows expansion (a server store's claim,
/// while its StatefulSet keeps the claim template it was created with), and on a class that
/// cannot expand, says so on StoresReady within seconds, naming the class, without touching
/// the claim or the Microservice's readiness.
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_raised_size_grows_the_claim_or_says_why_it_cannot() {
    let (namespace, microservices) = setup("ms-grow").await;
    let ns = namespace.name().to_owned();
    let mut expandable = StaticVolumes::expandable(&namespace).await;
    let mut fixed = StaticVolumes::new(&namespace).await;
    expandable.for_claim(&ns, "data-shop-mariadb-0").await;
    fixed.for_claim(&ns, "shop-redb").await;
    let operator = Operator::start(&namespace);
    create(
        &microservices,
        "shop",
        json!({
            "image": "kea.dev/kea-service:dev",
            "stores": {
                "sql": {"engine": "mariadb", "size": "1Gi", "storageClassName": expandable.class},
                "nosql": {"engine": "redb", "size": "1Gi", "storageClassName": fixed.class},
            },
        }),
    )
    .await;
    wait_ready(&microservices, "shop").await;

    let started = Instant::now();
    merge_spec(
        &microservices,
        "shop",
        json!({"stores": {"sql": {"size": "2Gi"}, "nosql": {"size": "3Gi"}}}),
    )
    .await;
    let claims = namespace.api::<PersistentVolumeClaim>();
    wait_for(
        &claims,
        "data-shop-mariadb-0",
        |claim: Option<&PersistentVolumeClaim>| claim.and_then(requested).as_deref() == Some("2Gi"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    eprintln!(
        "claim data-shop-mariadb-0 asks for 2Gi after {:?}",
        started.elapsed()
    );

    let seen = wait_for(
        &microservices,
        "shop",
        has_status_condition("StoresReady", "False"),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
    .unwrap();
    let stores = condition(&seen, "StoresReady");
    eprintln!(
        "StoresReady=False after {:?}: {}",
        started.elapsed(),
        stores.message
    );
    assert_eq!(stores.reason, "VolumeCannotGrow");
    assert!(
        stores
            .message
            .contains(&format!("StorageClass \"{}\"", fixed.class))
            && stores.message.contains("stays at 1Gi")
            && stores.message.contains("is 3Gi"),
        "{}",
        stores.message
    );
    // The data is there at its former size: the service stays Ready.
    assert_eq!(condition(&seen, "Ready").status, "True");
    let redb = claims.get("shop-redb").await.unwrap();
    assert_eq!(requested(&redb).as_deref(), Some("1Gi"));
    // A StatefulSet's claim templates cannot change: it keeps the one it was created with.
    let stateful_set = namespace
        .api::<StatefulSet>()
        .get("shop-mariadb")
        .await
        .unwrap();
    let template = &stateful_set.spec.unwrap().volume_claim_templates.unwrap()[0];
    assert_eq!(requested(template).as_deref(), Some("1Gi"));

    operator.stop().await;
    namespace.cleanup().await.unwrap();
    expandable.cleanup().await;
    fixed.cleanup().await;
}

/// Waits until the Microservice's `BackedUp` condition has `reason`.
async fn wait_backed_up_reason(
    microservices: &kube::Api<Microservice>,
    reason: &'static str,
) -> Microservice {
    wait_for(
        microservices,
        "orders",
        move |ms: Option<&Microservice>| {
            ms.and_then(|ms| kea_testkit::microservices::condition(ms, "BackedUp"))
                .is_some_and(|c| c.reason == reason)
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .unwrap()
}

/// A store's backups on the real API server: a CronJob that runs the store's own image with
/// the Secret's credentials, a missing target on the status and as a Warning within seconds,
/// one Job per on-demand request, the store's NetworkPolicy admitting the backup pods, and
/// the CronJob gone when `backup` is removed. The runs themselves are the kind tier's
/// (e2e/tests/e2e/backup.rs): kwok runs no command.
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn backups_are_scheduled_and_requested_and_a_missing_target_is_reported() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    let (namespace, microservices) = setup("ms-backup").await;
    let operator = Operator::start(&namespace);
    let started = Instant::now();
    create(
        &microservices,
        "orders",
        json!({
            "image": "kea.dev/kea-service:dev",
            "stores": {"sql": {"engine": "mariadb", "backup": {"schedule": "0 3 * * *", "keep": 3,
                "target": {"persistentVolumeClaim": {"claimName": "backups"}}}}},
        }),
    )
    .await;
    let seen = wait_backed_up_reason(&microservices, "BackupTargetNotFound").await;
    let backed_up = condition(&seen, "BackedUp");
    assert_eq!(backed_up.status, "False");
    assert!(
        backed_up.message.contains("PersistentVolumeClaim backups"),
        "{}",
        backed_up.message
    );
    eprintln!(
        "BackedUp=False BackupTargetNotFound {:?} after the create",
        started.elapsed()
    );
    common::wait_for_event(
        &namespace.api::<Event>(),
        "orders",
        "BackupFailed",
        |e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("BackupTargetNotFound"))
        },
        Duration::from_secs(30),
        "a BackupFailed Warning",
    )
    .await;

    // The CronJob: the store's image, the Secret's password, the target claim, restricted.
    let cron_job = namespace
        .api::<CronJob>()
        .get("orders-mariadb")
        .await
        .unwrap();
    assert!(
        cron_job
            .owner_references()
            .iter()
            .any(|r| r.name == "orders" && r.controller == Some(true))
    );
    let spec = cron_job.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, "0 3 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let container = &pod.containers[0];
    let script = container.command.as_ref().unwrap().join(" ");
    assert!(script.contains("mariadb-dump"), "{script}");
    assert!(script.contains("--single-transaction"), "{script}");
    let password = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "MARIADB_PASSWORD")
        .unwrap();
    assert_eq!(
        password
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| s.name.as_str()),
        Some("orders-mariadb")
    );
    assert_eq!(
        pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("backups")
    );
    assert_eq!(
        container
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem),
        Some(true)
    );

    // The store's NetworkPolicy admits the backup pods.
    let policy = namespace
        .api::<NetworkPolicy>()
        .get("orders-mariadb")
        .await
        .unwrap();
    let peers = serde_json::to_string(&policy.spec.unwrap().ingress).unwrap();
    assert!(peers.contains("mariadb-backup"), "{peers}");

    // The target created: no backup yet, then one Job per new request value.
    let claims = namespace.api::<PersistentVolumeClaim>();
    claims
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "backups"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    wait_backed_up_reason(&microservices, "NoBackupYet").await;
    let jobs = namespace.api::<Job>();
    let request = |value: &'static str| {
        let microservices = microservices.clone();
        async move {
            microservices
                .patch(
                    "orders",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({
                        "metadata": {"annotations": {"kea.dev/backup-requested": value}}
                    })),
                )
                .await
                .unwrap();
            wait_for(
                &microservices,
                "orders",
                move |ms: Option<&Microservice>| {
                    ms.and_then(|ms| ms.status.as_ref())
                        .and_then(|s| s.stores.first())
                        .and_then(|s| s.backup.as_ref())
                        .is_some_and(|b| b.last_request.as_deref() == Some(value))
                },
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        }
    };
    request("first").await;
    let job_names = || async {
        let mut names: Vec<String> = jobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|j| j.name_any())
            .collect();
        names.sort();
        names
    };
    let first = job_names().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("orders-mariadb-"), "{first:?}");
    // Any other change (here a label) starts no second Job for the same request.
    microservices
        .patch(
            "orders",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    request("second").await;
    assert_eq!(job_names().await.len(), 2);

    // backup removed: its CronJob goes, the condition too.
    merge_spec(
        &microservices,
        "orders",
        json!({"stores": {"sql": {"backup": null}}}),
    )
    .await;
    wait_for_deletion(
        &namespace.api::<CronJob>(),
        "orders-mariadb",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    wait_for(
        &microservices,
        "orders",
        |ms: Option<&Microservice>| {
            ms.is_some_and(|ms| kea_testkit::microservices::condition(ms, "BackedUp").is_none())
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    operator.stop().await;
    namespace.cleanup().await.unwrap();
}
