//! Backups to an S3-compatible bucket (`backup.target.s3`, `restoreFrom.s3`): a server store
//! (MariaDB) and an embedded one (redb) of `orders` backed up to a bucket of a real S3 server
//! in the cluster (versitygw, image kea.dev/kea-s3), the Microservice deleted with its
//! volumes and re-created from the bucket; missing credentials and a missing bucket on the
//! status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kea_e2e::{ClusterClient, TestNamespace, eventually, namespace};
use kea_operator::Microservice;
use kea_operator::api::conditions::reasons;
use kea_operator::api::{
    Backup, BackupTarget, DeletionPolicy, NosqlEngine, RestoreFrom, S3Target, SecretKeyRef,
    SqlEngine, Store, Stores,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

use super::backup::{
    ITEMS, STORE_TIMEOUT, create_restored, item_count, post_items, request_backup,
    wait_not_backed_up,
};

const S3_IMAGE: &str = "kea.dev/kea-s3:dev";
/// Has `mkdir`: makes the bucket's folder on the server's volume.
const SHELL_IMAGE: &str = "kea.dev/kea-redis:dev";
const BUCKET: &str = "kea-backups";
const CREDENTIALS: &str = "s3-credentials";

fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: CREDENTIALS.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts the S3 server `s3` (port 7070) with the bucket [`BUCKET`] and the Secret
/// [`CREDENTIALS`] (`id`, `secret`) that opens it; waits until it serves.
async fn start_s3_server(ns: &TestNamespace) {
    let labels = BTreeMap::from([("app".to_owned(), "s3".to_owned())]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CREDENTIALS.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("id".to_owned(), "kea-e2e".to_owned()),
            ("secret".to_owned(), "kea-e2e-secret-key".to_owned()),
        ])),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let data = |path: &str| VolumeMount {
        name: "data".into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("s3".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    // A bucket is a folder under the server's root.
                    init_containers: Some(vec![Container {
                        name: "bucket".into(),
                        image: Some(SHELL_IMAGE.into()),
                        command: Some(vec![
                            "mkdir".into(),
                            "-p".into(),
                            format!("/data/root/{BUCKET}"),
                            "/data/meta".into(),
                        ]),
                        security_context: Some(restricted_container()),
                        volume_mounts: Some(vec![data("/data")]),
                        ..Default::default()
                    }]),
                    containers: vec![Container {
                        name: "versitygw".into(),
                        image: Some(S3_IMAGE.into()),
                        args: Some(
                            [
                                "--port",
                                ":7070",
                                "--quiet",
                                "posix",
                                "--sidecar",
                                "/data/meta",
                                "/data/root",
                            ]
                            .map(str::to_owned)
                            .to_vec(),
                        ),
                        env: Some(vec![
                            secret_env("ROOT_ACCESS_KEY", "id"),
                            secret_env("ROOT_SECRET_KEY", "secret"),
                        ]),
                        ports: Some(vec![ContainerPort {
                            container_port: 7070,
                            ..Default::default()
                        }]),
                        readiness_probe: Some(Probe {
                            tcp_socket: Some(TCPSocketAction {
                                port: IntOrString::Int(7070),
                                ..Default::default()
                            }),
                            period_seconds: Some(2),
                            ..Default::default()
                        }),
                        security_context: Some(restricted_container()),
                        volume_mounts: Some(vec![data("/data"), {
                            VolumeMount {
                                name: "tmp".into(),
                                mount_path: "/tmp".into(),
                                ..Default::default()
                            }
                        }]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        Volume {
                            name: "data".into(),
                            empty_dir: Some(Default::default()),
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
            },
            ..Default::default()
        }),
        status: None,
    };
    let deployments = ns.api::<Deployment>();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let service = Service {
        metadata: ObjectMeta {
            name: Some("s3".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels),
            ports: Some(vec![ServicePort {
                port: 7070,
                target_port: Some(IntOrString::Int(7070)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    eventually("the S3 server ready", STORE_TIMEOUT, || {
        let deployments = deployments.clone();
        async move {
            let deployment = deployments.get("s3").await?;
            let ready = deployment
                .status
                .and_then(|s| s.ready_replicas)
                .unwrap_or_default();
            Ok((ready == 1).then_some(()))
        }
    })
    .await
    .unwrap();
}

fn bucket_target(ns: &TestNamespace) -> S3Target {
    let key = |key: &str| SecretKeyRef {
        name: CREDENTIALS.into(),
        key: key.into(),
    };
    S3Target {
        bucket: BUCKET.into(),
        endpoint: format!("http://s3.{}.svc:7070", ns.name()),
        region: None,
        prefix: Some("e2e".into()),
        access_key_id_secret_key_ref: key("id"),
        secret_access_key_secret_key_ref: key("secret"),
    }
}

fn to_bucket<E>(engine: E, target: &S3Target, restore: bool) -> Store<E> {
    Store {
        engine,
        size: "256Mi".into(),
        storage_class_name: None,
        deletion_policy: DeletionPolicy::Delete,
        backup: Some(Backup {
            // Once a year at a minute no test runs at: only the on-demand runs happen.
            schedule: "7 3 29 2 *".into(),
            keep: 2,
            suspend: false,
            target: BackupTarget {
                persistent_volume_claim: None,
                s3: Some(target.clone()),
            },
        }),
        restore_from: restore.then(|| RestoreFrom {
            persistent_volume_claim: None,
            s3: Some(target.clone()),
            path: None,
        }),
    }
}

/// A server store and an embedded one, both backed up to the bucket.
fn stores(target: &S3Target, restore: bool) -> Stores {
    Stores {
        sql: Some(to_bucket(SqlEngine::Mariadb, target, restore)),
        nosql: Some(to_bucket(NosqlEngine::Redb, target, restore)),
    }
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn stores_are_backed_up_to_a_bucket_and_restored_from_it() {
    let ns = namespace("backup-s3").await.unwrap();
    let client = ns.client();
    let microservices = ns.api::<Microservice>();
    start_s3_server(&ns).await;
    let target = bucket_target(&ns);
    let mut orders = kea_e2e::microservice("orders", 1);
    orders.spec.stores = Some(stores(&target, false));
    microservices
        .create(&PostParams::default(), &orders)
        .await
        .unwrap();
    kea_e2e::wait_ready(&microservices, "orders", STORE_TIMEOUT)
        .await
        .unwrap();
    let caller = ClusterClient::caller_of(&client, ns.name(), "orders")
        .await
        .unwrap();
    for route in ["/mysqldata", "/nosqldata"] {
        post_items(&caller, "orders", route, ITEMS).await;
    }

    request_backup(&ns, "orders", "1").await;
    let last = request_backup(&ns, "orders", "2").await;
    for (status, folder, suffix) in [
        (&last[0], "orders-mariadb", ".sql.gz"),
        (&last[1], "orders-redb", ".redb"),
    ] {
        let location = status.last_location.as_deref().unwrap_or_default();
        assert!(
            location.starts_with(&format!("s3://{BUCKET}/e2e/{folder}/"))
                && location.ends_with(suffix),
            "{status:?}"
        );
        assert!(status.last_size_bytes.unwrap_or_default() > 0, "{status:?}");
    }

    // Deleted with its volumes, then re-created from the bucket.
    microservices
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let claims = ns.api::<PersistentVolumeClaim>();
    for claim in ["data-orders-mariadb-0", "orders-redb"] {
        kea_testkit::wait_for_deletion(&claims, claim, STORE_TIMEOUT)
            .await
            .unwrap();
    }
    let mut restored = kea_e2e::microservice("orders", 1);
    restored.spec.stores = Some(stores(&target, true));
    create_restored(&ns, &restored).await;
    for route in ["/mysqldata", "/nosqldata"] {
        assert_eq!(
            item_count(&caller, "orders", route).await,
            ITEMS,
            "{route} after the restore from the bucket"
        );
    }

    // Credentials that do not exist are on the status within seconds.
    let patch = serde_json::json!({"spec": {"stores": {"sql": {"backup": {"target": {"s3": {
        "secretAccessKeySecretKeyRef": {"name": "no-such-secret", "key": "secret"}}}}}}}});
    microservices
        .patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let message = wait_not_backed_up(
        &ns,
        "orders",
        reasons::BACKUP_TARGET_NOT_FOUND,
        Duration::from_secs(30),
    )
    .await;
    assert!(message.contains("no-such-secret"), "{message}");

    // A bucket that does not exist fails the next run, and the status says which.
    let patch = serde_json::json!({
        "metadata": {"annotations": {"kea.dev/backup-requested": "to-a-missing-bucket"}},
        "spec": {"stores": {"sql": {"backup": {"target": {"s3": {
            "bucket": "no-such-bucket",
            "secretAccessKeySecretKeyRef": {"name": CREDENTIALS, "key": "secret"}}}}}}}});
    microservices
        .patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let message = wait_not_backed_up(
        &ns,
        "orders",
        reasons::BACKUP_FAILED,
        Duration::from_secs(180),
    )
    .await;
    assert!(
        message.contains("bucket no-such-bucket does not exist"),
        "{message}"
    );
}
