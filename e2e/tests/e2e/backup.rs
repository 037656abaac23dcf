//! A store's backups (`spec.stores.{sql,nosql}.backup`): on-demand runs through the
//! annotation, files on the target claim that hold the data, the newest `keep` kept, and a
//! missing target reported on the status. The claim's files are read by a pod of the test's
//! own, not through the operator's report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, SeccompProfile,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kea_e2e::{ClusterClient, TestNamespace, eventually, namespace, service_url};
use kea_operator::Microservice;
use kea_operator::api::conditions::{self, reasons};
use kea_operator::api::{
    Backup, BackupStatus, BackupTarget, ClaimTarget, DeletionPolicy, NosqlEngine, RestoreFrom,
    SqlEngine, Store, Stores,
};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};

/// MariaDB initialises its data directory on first start: allow for it.
pub(super) const STORE_TIMEOUT: Duration = Duration::from_secs(300);
/// A run: a pod scheduled, the dump, the Job's status.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// The image the test reads the claim with: it has bash, ls, zcat and redis-check-rdb.
const MARIADB_IMAGE: &str = "kea.dev/kea-mariadb:dev";
const REDIS_IMAGE: &str = "kea.dev/kea-redis:dev";
pub(super) const ITEMS: usize = 1000;
const KEEP: i32 = 2;

fn backed_up_store<E>(engine: E, claim: &str, restore: bool) -> Store<E> {
    Store {
        engine,
        size: "256Mi".into(),
        storage_class_name: None,
        deletion_policy: DeletionPolicy::Delete,
        backup: Some(Backup {
            // Once a year at a minute no test runs at: only the on-demand runs happen.
            schedule: "7 3 29 2 *".into(),
            keep: KEEP,
            suspend: false,
            target: BackupTarget {
                persistent_volume_claim: Some(ClaimTarget {
                    claim_name: claim.into(),
                }),
                s3: None,
            },
        }),
        // This store's own folder, the newest backup in it.
        restore_from: restore.then(|| RestoreFrom {
            persistent_volume_claim: Some(ClaimTarget {
                claim_name: claim.into(),
            }),
            s3: None,
            path: None,
        }),
    }
}

fn backed_up(claim: &str, restore: bool) -> Stores {
    Stores {
        sql: Some(backed_up_store(SqlEngine::Mariadb, claim, restore)),
        nosql: Some(backed_up_store(NosqlEngine::Redis, claim, restore)),
    }
}

/// Creates the claim `name` of 256Mi, of the StorageClass `class` (the default when None).
async fn create_claim(ns: &TestNamespace, name: &str, class: Option<&str>) {
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("256Mi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };
    ns.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
}

pub(super) fn backup_of<'a>(ms: &'a Microservice, store: &str) -> Option<&'a BackupStatus> {
    ms.status
        .as_ref()?
        .stores
        .iter()
        .find(|s| s.name == store)?
        .backup
        .as_ref()
}

/// Asks for a backup with the annotation value `request` and waits until both stores report
/// a successful run for it; returns their statuses.
pub(super) async fn request_backup(
    ns: &TestNamespace,
    name: &str,
    request: &str,
) -> Vec<BackupStatus> {
    let microservices = ns.api::<Microservice>();
    let before = microservices.get(name).await.unwrap();
    let previous: Vec<Option<String>> = ["sql", "nosql"]
        .iter()
        .map(|s| {
            backup_of(&before, s)
                .and_then(|b| b.last_successful_time.as_ref())
                .map(|t| t.0.to_string())
        })
        .collect();
    let patch = serde_json::json!({
        "metadata": {"annotations": {"kea.dev/backup-requested": request}}
    });
    microservices
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let started = Instant::now();
    let statuses = eventually(
        &format!("backup {request} of both stores"),
        RUN_TIMEOUT,
        || {
            let (microservices, previous) = (microservices.clone(), previous.clone());
            async move {
                let ms = microservices.get(name).await?;
                let mut done = Vec::new();
                for (store, previous) in ["sql", "nosql"].iter().zip(&previous) {
                    let Some(backup) = backup_of(&ms, store) else {
                        return Ok(None);
                    };
                    assert_ne!(
                        backup.reason,
                        reasons::BACKUP_FAILED,
                        "{store}: {}",
                        backup.message
                    );
                    let newer = backup
                        .last_successful_time
                        .as_ref()
                        .map(|t| t.0.to_string())
                        .is_some_and(|t| Some(&t) != previous.as_ref());
                    if !(newer && backup.last_request.as_deref() == Some(request)) {
                        return Ok(None);
                    }
                    done.push(backup.clone());
                }
                Ok(Some(done))
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "e2e: backup {request} of {name}: both stores backed up {:.1}s after the request: {}",
        started.elapsed().as_secs_f64(),
        statuses
            .iter()
            .map(|b| format!(
                "{} ({} bytes)",
                b.last_location.as_deref().unwrap_or("?"),
                b.last_size_bytes.unwrap_or(-1)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    statuses
}

/// Runs `script` with bash in a pod of `image` that mounts the claim at /backup, and returns
/// its output.
async fn read_claim(
    ns: &TestNamespace,
    claim: &str,
    name: &str,
    image: &str,
    script: &str,
) -> String {
    let pods = ns.api::<Pod>();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65534),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: "read".into(),
                image: Some(image.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec!["bash".into(), "-c".into(), script.into()]),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                volume_mounts: Some(vec![
                    VolumeMount {
                        name: "backup".into(),
                        mount_path: "/backup".into(),
                        read_only: Some(true),
                        ..Default::default()
                    },
                    VolumeMount {
                        name: "tmp".into(),
                        mount_path: "/tmp".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }],
            volumes: Some(vec![
                Volume {
                    name: "backup".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.into(),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "tmp".into(),
                    empty_dir: Some(Default::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    };
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let phase = eventually(&format!("pod {name} finished"), RUN_TIMEOUT, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get(name).await?;
            let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
            Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
        }
    })
    .await
    .unwrap();
    let logs = pods.logs(name, &LogParams::default()).await.unwrap();
    assert_eq!(phase, "Succeeded", "pod {name}: {logs}");
    logs
}

/// How many distinct items named `item-N` the route lists, page by page.
pub(super) async fn item_count(caller: &ClusterClient, name: &str, route: &str) -> usize {
    let mut names = std::collections::BTreeSet::new();
    let mut before: Option<u64> = None;
    // At most 100 pages of 1000: far more than the test writes.
    for _ in 0..100 {
        let url = match before {
            Some(id) => service_url(name, &format!("{route}?limit=1000&before={id}")),
            None => service_url(name, &format!("{route}?limit=1000")),
        };
        let answer = eventually(&format!("GET {url}"), RUN_TIMEOUT, || async {
            let answer = caller.http(&url, None).await?;
            Ok((answer.status == 200).then_some(answer))
        })
        .await
        .unwrap();
        let page = answer.json().unwrap();
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|item| item["name"].as_str())
                .filter(|name| name.starts_with("item-"))
                .map(str::to_owned),
        );
        match page["next_before"].as_u64() {
            Some(id) => before = Some(id),
            None => return names.len(),
        }
    }
    panic!("{route} lists more than 100 pages");
}

/// POSTs `count` items `item-00000`... to `route` of the Microservice `name` from the
/// caller's pod, in one loop there (one exec instead of one per item).
pub(super) async fn post_items(caller: &ClusterClient, name: &str, route: &str, count: usize) {
    let url = service_url(name, route);
    let script = format!(
        r#"i=0; while [ $i -lt {count} ]; do
  name=$(printf 'item-%05d' $i)
  timeout 5 wget -q -O /dev/null --header 'Content-Type: application/json' --post-data "{{\"name\":\"$name\"}}" {url} || {{ echo "POST $name failed" >&2; exit 1; }}
  i=$((i + 1))
done"#
    );
    let started = Instant::now();
    let output = caller
        .exec(&["sh", "-c", &script], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(output.code, 0, "POST {route}: {}", output.stderr);
    eprintln!(
        "e2e: {count} items POSTed to {route} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Creates `ms` (a re-created Microservice with `restoreFrom`) and waits until it is Ready.
pub(super) async fn create_restored(ns: &TestNamespace, ms: &Microservice) {
    let microservices = ns.api::<Microservice>();
    let name = ms.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    microservices
        .create(&PostParams::default(), ms)
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, &name, STORE_TIMEOUT)
        .await
        .unwrap();
    eprintln!(
        "e2e: {name} re-created with restoreFrom Ready {:.1}s after the create",
        started.elapsed().as_secs_f64()
    );
}

/// POSTs the item `item-99999` to each of `routes` of the Microservice `name`.
async fn post_one_more(caller: &ClusterClient, name: &str, routes: &[&str]) {
    for route in routes {
        let answer = caller
            .http(&service_url(name, route), Some(r#"{"name":"item-99999"}"#))
            .await
            .unwrap();
        assert_eq!(answer.status, 201, "POST {route}: {}", answer.body);
    }
}

/// Deletes the serving pods of the Microservice `name`; returns their names.
async fn delete_serving_pods(ns: &TestNamespace, name: &str) -> Vec<String> {
    let pods = ns.api::<Pod>();
    let serving: Vec<String> = kea_e2e::pods_of(&pods, name)
        .await
        .unwrap()
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    for pod in &serving {
        pods.delete(pod, &DeleteParams::default()).await.unwrap();
    }
    serving
}

/// Waits until the Microservice `name` is Ready on one pod that is none of `gone`.
async fn wait_ready_on_a_new_pod(ns: &TestNamespace, name: &str, gone: Vec<String>) {
    let (pods, microservices) = (ns.api::<Pod>(), ns.api::<Microservice>());
    eventually(&format!("{name} Ready on a new pod"), STORE_TIMEOUT, || {
        let (pods, microservices, gone) = (pods.clone(), microservices.clone(), gone.clone());
        async move {
            let ms = microservices.get(name).await?;
            let fresh = kea_e2e::pods_of(&pods, name)
                .await?
                .iter()
                .filter(|p| {
                    kea_e2e::pod_ready(p)
                        && !gone.contains(&p.metadata.name.clone().unwrap_or_default())
                })
                .count();
            Ok((kea_e2e::is_ready(&ms) && fresh == 1).then_some(()))
        }
    })
    .await
    .unwrap();
}

/// Applies the merge `patch` to the Microservice `name`, then waits (at most `within`) until
/// its `BackedUp` condition is `False` with `reason` and a message that says `saying`;
/// returns the message.
pub(super) async fn edit_until_not_backed_up(
    ns: &TestNamespace,
    name: &str,
    patch: &serde_json::Value,
    reason: &str,
    saying: &str,
    within: Duration,
) -> String {
    let microservices = ns.api::<Microservice>();
    microservices
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let started = Instant::now();
    let what = format!("BackedUp=False {reason} saying {saying:?}");
    let message = eventually(&what, within, || {
        let microservices = microservices.clone();
        async move {
            let ms = microservices.get(name).await?;
            let condition = kea_operator::status::find_condition(
                &ms.status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default(),
                conditions::BACKED_UP,
            )
            .cloned();
            Ok(condition
                .filter(|c| c.status == "False" && c.reason == reason)
                .filter(|c| c.message.contains(saying))
                .map(|c| c.message))
        }
    })
    .await
    .unwrap();
    eprintln!(
        "e2e: {name}: BackedUp=False {reason} {:.1}s after the change: {message}",
        started.elapsed().as_secs_f64()
    );
    message
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn orders_stores_are_backed_up_on_demand_and_the_newest_are_kept() {
    let ns = namespace("backup").await.unwrap();
    let client = ns.client();
    let microservices = ns.api::<Microservice>();
    create_claim(&ns, "backups", None).await;
    let mut orders = kea_e2e::microservice("orders", 1);
    orders.spec.stores = Some(backed_up("backups", false));
    microservices
        .create(&PostParams::default(), &orders)
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, "orders", STORE_TIMEOUT)
        .await
        .unwrap();
    let ms = microservices.get("orders").await.unwrap();
    let condition = kea_operator::status::find_condition(
        &ms.status.as_ref().unwrap().conditions,
        conditions::BACKED_UP,
    )
    .cloned()
    .unwrap();
    assert_eq!(condition.reason, reasons::NO_BACKUP_YET, "{condition:?}");

    let caller = ClusterClient::caller_of(&client, ns.name(), "orders")
        .await
        .unwrap();
    for route in ["/mysqldata", "/nosqldata"] {
        post_items(&caller, "orders", route, ITEMS).await;
    }

    // One on-demand backup: both files hold every item.
    let first = request_backup(&ns, "orders", "1").await;
    let sql_file = first[0].last_location.clone().unwrap();
    let redis_file = first[1].last_location.clone().unwrap();
    assert!(sql_file.starts_with("pvc://backups/orders-mariadb/") && sql_file.ends_with(".sql.gz"));
    assert!(redis_file.starts_with("pvc://backups/orders-redis/") && redis_file.ends_with(".rdb"));
    let path = |location: &str| location.replacen("pvc://backups/", "/backup/", 1);
    let dump = read_claim(
        &ns,
        "backups",
        "read-dump",
        MARIADB_IMAGE,
        &format!(
            "zcat {} | grep -o \"'item-[0-9]*'\" | sort -u | wc -l",
            path(&sql_file)
        ),
    )
    .await;
    assert_eq!(dump.trim(), ITEMS.to_string(), "distinct items in the dump");
    // The snapshot loaded by a Redis server of the test's own: the hash of items is whole.
    let rdb = read_claim(
        &ns,
        "backups",
        "read-rdb",
        REDIS_IMAGE,
        &format!(
            r#"set -e
cp {} /tmp/dump.rdb
redis-server --port 6390 --dir /tmp --dbfilename dump.rdb --appendonly no --save '' --daemonize yes >/dev/null
for attempt in $(seq 100); do redis-cli -p 6390 ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
redis-cli -p 6390 --scan | while read -r key; do
  if [ "$(redis-cli -p 6390 type "$key")" = hash ]; then redis-cli -p 6390 hvals "$key"; fi
done | grep -o '"item-[0-9]*"' | sort -u | wc -l"#,
            path(&redis_file)
        ),
    )
    .await;
    assert_eq!(
        rdb.trim(),
        ITEMS.to_string(),
        "distinct items in the snapshot"
    );

    // Two more: the newest KEEP of each store are kept.
    request_backup(&ns, "orders", "2").await;
    let last = request_backup(&ns, "orders", "3").await;
    let listing = read_claim(
        &ns,
        "backups",
        "list-backups",
        MARIADB_IMAGE,
        "ls -1A /backup/orders-mariadb /backup/orders-redis",
    )
    .await;
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.is_empty() && !l.ends_with(':'))
        .collect();
    assert_eq!(files.len(), 2 * KEEP as usize, "files kept: {listing}");
    for status in &last {
        let name = status
            .last_location
            .as_deref()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap();
        assert!(files.contains(&name), "the newest {name} kept: {listing}");
    }

    // Deleted with its volumes (deletionPolicy Delete), then re-created with restoreFrom:
    // each new volume is filled from the newest backup, before the server serves.
    microservices
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let claims = ns.api::<PersistentVolumeClaim>();
    for claim in ["data-orders-mariadb-0", "data-orders-redis-0"] {
        kea_testkit::wait_for_deletion(&claims, claim, STORE_TIMEOUT)
            .await
            .unwrap();
    }
    let remaining = claims.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        remaining.items.len(),
        1,
        "only the backups' claim is left: {:?}",
        remaining
            .items
            .iter()
            .map(|c| c.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let mut restored = kea_e2e::microservice("orders", 1);
    restored.spec.stores = Some(backed_up("backups", true));
    create_restored(&ns, &restored).await;
    for route in ["/mysqldata", "/nosqldata"] {
        assert_eq!(
            item_count(&caller, "orders", route).await,
            ITEMS,
            "{route} after the restore"
        );
    }

    // Never over data: a new item, then the MariaDB server's pod and the service's deleted;
    // the server's restore finds data on the volume and leaves it, the new item included.
    post_one_more(&caller, "orders", &["/mysqldata"]).await;
    let serving = delete_serving_pods(&ns, "orders").await;
    let pods = ns.api::<Pod>();
    for pod in ["orders-mariadb-0"] {
        let uid = pods.get(pod).await.unwrap().metadata.uid;
        pods.delete(pod, &DeleteParams::default()).await.unwrap();
        eventually(&format!("{pod} back and ready"), STORE_TIMEOUT, || {
            let (pods, uid) = (pods.clone(), uid.clone());
            async move {
                let pod = pods.get_opt(pod).await?;
                Ok(pod
                    .filter(|p| p.metadata.uid != uid && kea_e2e::pod_ready(p))
                    .map(|_| ()))
            }
        })
        .await
        .unwrap();
    }
    wait_ready_on_a_new_pod(&ns, "orders", serving).await;
    for route in ["/mysqldata"] {
        assert_eq!(
            item_count(&caller, "orders", route).await,
            ITEMS + 1,
            "{route} after the store pods' restart"
        );
    }

    // A target that does not exist is on the status within seconds.
    let patch = serde_json::json!({"spec": {"stores": {"sql": {"backup": {"target": {
        "persistentVolumeClaim": {"claimName": "no-such-claim"}}}}}}});
    edit_until_not_backed_up(
        &ns,
        "orders",
        &patch,
        reasons::BACKUP_TARGET_NOT_FOUND,
        "no-such-claim",
        Duration::from_secs(30),
    )
    .await;
}

fn embedded(claim: &str, restore: bool) -> Stores {
    Stores {
        sql: Some(backed_up_store(SqlEngine::Sqlite, claim, restore)),
        nosql: Some(backed_up_store(NosqlEngine::Redb, claim, restore)),
    }
}

/// The embedded stores of `users` (SQLite, redb in the service's own pod): the backup Jobs
/// fetch consistent copies from the service with the Microservice's admin token, and a
/// re-created `users` starts from them.
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn users_embedded_stores_are_backed_up_and_restored_into_a_new_microservice() {
    let ns = namespace("backup-embedded").await.unwrap();
    let client = ns.client();
    let microservices = ns.api::<Microservice>();
    create_claim(&ns, "backups", None).await;
    let mut users = kea_e2e::microservice("users", 1);
    users.spec.stores = Some(embedded("backups", false));
    microservices
        .create(&PostParams::default(), &users)
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, "users", STORE_TIMEOUT)
        .await
        .unwrap();
    let caller = ClusterClient::caller_of(&client, ns.name(), "users")
        .await
        .unwrap();
    for route in ["/mysqldata", "/nosqldata"] {
        post_items(&caller, "users", route, ITEMS).await;
    }

    request_backup(&ns, "users", "1").await;
    let last = request_backup(&ns, "users", "2").await;
    assert!(
        last[0]
            .last_location
            .as_deref()
            .is_some_and(|l| l.starts_with("pvc://backups/users-sqlite/") && l.ends_with(".sqlite")),
        "{:?}",
        last[0]
    );
    assert!(
        last[1]
            .last_location
            .as_deref()
            .is_some_and(|l| l.starts_with("pvc://backups/users-redb/") && l.ends_with(".redb")),
        "{:?}",
        last[1]
    );
    let listing = read_claim(
        &ns,
        "backups",
        "list-backups",
        MARIADB_IMAGE,
        "ls -1A /backup/users-sqlite /backup/users-redb",
    )
    .await;
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.is_empty() && !l.ends_with(':'))
        .collect();
    assert_eq!(files.len(), 2 * KEEP as usize, "files kept: {listing}");

    // Deleted with its volumes (deletionPolicy Delete), then re-created with restoreFrom.
    microservices
        .delete("users", &DeleteParams::default())
        .await
        .unwrap();
    let claims = ns.api::<PersistentVolumeClaim>();
    for claim in ["users-sqlite", "users-redb"] {
        kea_testkit::wait_for_deletion(&claims, claim, STORE_TIMEOUT)
            .await
            .unwrap();
    }
    let mut restored = kea_e2e::microservice("users", 1);
    restored.spec.stores = Some(embedded("backups", true));
    create_restored(&ns, &restored).await;
    for route in ["/mysqldata", "/nosqldata"] {
        assert_eq!(
            item_count(&caller, "users", route).await,
            ITEMS,
            "{route} after the restore"
        );
    }

    // Never over data: a new item in each store, then the pod replaced; the restore finds
    // the store's files and leaves them, the new items included.
    post_one_more(&caller, "users", &["/mysqldata", "/nosqldata"]).await;
    let serving = delete_serving_pods(&ns, "users").await;
    wait_ready_on_a_new_pod(&ns, "users", serving).await;
    for route in ["/mysqldata", "/nosqldata"] {
        assert_eq!(
            item_count(&caller, "users", route).await,
            ITEMS + 1,
            "{route} after the pod was replaced"
        );
    }

    // A target claim that never binds (its class does not exist): the run's pod cannot be
    // scheduled, and the status says so while the Job waits.
    create_claim(&ns, "unbound-backups", Some("no-such-class")).await;
    let patch = serde_json::json!({
        "metadata": {"annotations": {"kea.dev/backup-requested": "unbound"}},
        "spec": {"stores": {"sql": {"backup": {"target": {
            "persistentVolumeClaim": {"claimName": "unbound-backups"}}}}}}
    });
    edit_until_not_backed_up(
        &ns,
        "users",
        &patch,
        reasons::BACKUP_CANNOT_RUN,
        "Unschedulable",
        Duration::from_secs(60),
    )
    .await;
}

/// The CronJob runs on its schedule (every minute here), and after three runs exactly `keep`
/// backups are on the target, the newest among them.
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn scheduled_backups_run_on_their_schedule_and_keep_exactly_keep() {
    let ns = namespace("backup-scheduled").await.unwrap();
    let microservices = ns.api::<Microservice>();
    create_claim(&ns, "backups", None).await;
    let mut store = backed_up_store(SqlEngine::Sqlite, "backups", false);
    if let Some(backup) = store.backup.as_mut() {
        backup.schedule = "* * * * *".into();
    }
    let mut users = kea_e2e::microservice("users", 1);
    users.spec.stores = Some(Stores {
        sql: Some(store),
        nosql: None,
    });
    microservices
        .create(&PostParams::default(), &users)
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, "users", STORE_TIMEOUT)
        .await
        .unwrap();
    let started = Instant::now();
    let runs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let last = eventually("three scheduled backups", Duration::from_secs(300), || {
        let (microservices, runs) = (microservices.clone(), runs.clone());
        async move {
            let ms = microservices.get("users").await?;
            let Some(backup) = backup_of(&ms, "sql") else {
                return Ok(None);
            };
            assert_ne!(backup.reason, reasons::BACKUP_FAILED, "{}", backup.message);
            let mut seen = runs.lock().unwrap();
            if let Some(location) = &backup.last_location
                && !seen.contains(location)
            {
                seen.push(location.clone());
                eprintln!(
                    "e2e: scheduled backup {} at {:.0}s: {location}",
                    seen.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok((seen.len() >= 3).then(|| backup.clone()))
        }
    })
    .await
    .unwrap();
    assert!(
        last.last_request.is_none(),
        "no on-demand run was asked for: {last:?}"
    );
    let listing = read_claim(
        &ns,
        "backups",
        "list-backups",
        MARIADB_IMAGE,
        "ls -1A /backup/users-sqlite",
    )
    .await;
    let files: Vec<&str> = listing.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(files.len(), KEEP as usize, "files kept: {listing}");
    let newest = last
        .last_location
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert!(
        files.contains(&newest),
        "the newest {newest} kept: {listing}"
    );
}
