//! Backups to an S3-compatible bucket (`backup.target.s3`, `restoreFrom.s3`): a server store
//! (MariaDB) and an embedded one (redb) of `orders` backed up to a bucket of a real S3 server
//! in the cluster (versitygw, image kea.dev/kea-s3) over HTTPS, its certificate signed by a
//! private authority made by the test (`caSecretKeyRef`); exactly `keep` objects left in the
//! bucket; the Microservice deleted with its volumes and re-created from the bucket; missing
//! credentials, a missing authority and a missing bucket on the status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::core::v1::{Pod, SecretVolumeSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kea_e2e::{ClusterClient, TestNamespace, eventually, namespace};
use kea_operator::Microservice;
use kea_operator::api::conditions::reasons;
use kea_operator::api::{
    Backup, BackupTarget, DeletionPolicy, NosqlEngine, RestoreFrom, S3Target, SecretKeyRef,
    SqlEngine, Store, Stores,
};
use kube::api::{AttachParams, DeleteParams, ListParams, PostParams};
use tokio::io::AsyncReadExt;

use super::backup::{
    ITEMS, STORE_TIMEOUT, create_restored, edit_until_not_backed_up, item_count, post_items,
    request_backup,
};

const S3_IMAGE: &str = "kea.dev/kea-s3:dev";
/// Has `mkdir`, `ls` and `sleep`: makes the bucket's folder on the server's volume, and lists
/// the objects there.
const SHELL_IMAGE: &str = "kea.dev/kea-redis:dev";
const BUCKET: &str = "kea-backups";
const CREDENTIALS: &str = "s3-credentials";
/// The server's certificate and key (`tls.crt`, `tls.key`).
const SERVER_TLS: &str = "s3-tls";
/// The certificate of the authority that signs the server's (`ca.crt`).
const AUTHORITY: &str = "s3-authority";

/// A private authority and a server certificate it signs for `host`: (authority's
/// certificate, server's certificate, server's key), PEM.
fn private_authority(host: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut authority = CertificateParams::new(Vec::<String>::new()).unwrap();
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    authority
        .distinguished_name
        .push(DnType::CommonName, "kea e2e authority");
    let authority_key = KeyPair::generate().unwrap();
    let authority_pem = authority.self_signed(&authority_key).unwrap().pem();
    let issuer = Issuer::new(authority, authority_key);
    let mut server = CertificateParams::new(vec![host.to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_pem = server.signed_by(&server_key, &issuer).unwrap().pem();
    (authority_pem, server_pem, server_key.serialize_pem())
}

async fn create_secret(ns: &TestNamespace, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

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

/// Starts the S3 server `s3` (HTTPS on port 7070, with a certificate for `s3.NAMESPACE.svc`
/// signed by the authority in the Secret [`AUTHORITY`]) with the bucket [`BUCKET`] and the
/// Secret [`CREDENTIALS`] (`id`, `secret`) that opens it; waits until it serves.
async fn start_s3_server(ns: &TestNamespace) {
    let labels = BTreeMap::from([("app".to_owned(), "s3".to_owned())]);
    create_secret(
        ns,
        CREDENTIALS,
        &[("id", "kea-e2e"), ("secret", "kea-e2e-secret-key")],
    )
    .await;
    let (authority, certificate, key) = private_authority(&format!("s3.{}.svc", ns.name()));
    create_secret(ns, AUTHORITY, &[("ca.crt", &authority)]).await;
    create_secret(
        ns,
        SERVER_TLS,
        &[("tls.crt", &certificate), ("tls.key", &key)],
    )
    .await;
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
                    // `sleep` (the lister) ignores SIGTERM: no need to wait for it.
                    termination_grace_period_seconds: Some(1),
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
                    containers: vec![
                        Container {
                            name: "versitygw".into(),
                            image: Some(S3_IMAGE.into()),
                            args: Some(
                                [
                                    "--port",
                                    ":7070",
                                    "--quiet",
                                    "--cert",
                                    "/tls/tls.crt",
                                    "--key",
                                    "/tls/tls.key",
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
                            volume_mounts: Some(vec![
                                data("/data"),
                                VolumeMount {
                                    name: "tmp".into(),
                                    mount_path: "/tmp".into(),
                                    ..Default::default()
                                },
                                VolumeMount {
                                    name: "tls".into(),
                                    mount_path: "/tls".into(),
                                    read_only: Some(true),
                                    ..Default::default()
                                },
                            ]),
                            ..Default::default()
                        },
                        // Lists what the bucket holds (the server's image has no shell).
                        Container {
                            name: "files".into(),
                            image: Some(SHELL_IMAGE.into()),
                            command: Some(vec!["sleep".into(), "3600".into()]),
                            security_context: Some(restricted_container()),
                            volume_mounts: Some(vec![data("/data")]),
                            ..Default::default()
                        },
                    ],
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
                        Volume {
                            name: "tls".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(SERVER_TLS.into()),
                                default_mode: Some(0o444),
                                ..Default::default()
                            }),
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
        endpoint: format!("https://s3.{}.svc:7070", ns.name()),
        region: None,
        prefix: Some("e2e".into()),
        access_key_id_secret_key_ref: key("id"),
        secret_access_key_secret_key_ref: key("secret"),
        ca_secret_key_ref: Some(SecretKeyRef {
            name: AUTHORITY.into(),
            key: "ca.crt".into(),
        }),
    }
}

/// The objects in the bucket's folder `folder` (`e2e/orders-mariadb`), as the server's
/// files: one per object.
async fn objects_in(ns: &TestNamespace, folder: &str) -> Vec<String> {
    let pods = ns.api::<Pod>();
    let pod = pods
        .list(&ListParams::default().labels("app=s3"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find_map(|pod| pod.metadata.name)
        .expect("the S3 server's pod");
    let params = AttachParams::default()
        .container("files")
        .stdout(true)
        .stderr(false);
    let directory = format!("/data/root/{BUCKET}/{folder}");
    let mut process = pods
        .exec(&pod, ["ls", "-1", directory.as_str()], &params)
        .await
        .unwrap();
    let mut listing = String::new();
    process
        .stdout()
        .expect("stdout")
        .read_to_string(&mut listing)
        .await
        .unwrap();
    process.join().await.unwrap();
    listing.lines().map(str::to_owned).collect()
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
    let second = request_backup(&ns, "orders", "2").await;
    let last = request_backup(&ns, "orders", "3").await;
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
    // keep = 2: the bucket holds the last two runs' objects, and nothing else.
    for (index, folder) in [(0, "orders-mariadb"), (1, "orders-redb")] {
        let mut wanted: Vec<String> = [&second[index], &last[index]]
            .iter()
            .map(|status| {
                let location = status.last_location.as_deref().unwrap_or_default();
                location.rsplit('/').next().unwrap_or_default().to_owned()
            })
            .collect();
        wanted.sort();
        assert_eq!(
            objects_in(&ns, &format!("e2e/{folder}")).await,
            wanted,
            "s3://{BUCKET}/e2e/{folder}/ after three backups with keep 2"
        );
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
    edit_until_not_backed_up(
        &ns,
        "orders",
        &patch,
        reasons::BACKUP_TARGET_NOT_FOUND,
        "Secret no-such-secret does not exist",
        Duration::from_secs(30),
    )
    .await;

    // So is an authority's Secret without the key named.
    let patch = serde_json::json!({"spec": {"stores": {"sql": {"backup": {"target": {"s3": {
        "secretAccessKeySecretKeyRef": {"name": CREDENTIALS, "key": "secret"},
        "caSecretKeyRef": {"name": AUTHORITY, "key": "no-such-key"}}}}}}}});
    edit_until_not_backed_up(
        &ns,
        "orders",
        &patch,
        reasons::BACKUP_TARGET_NOT_FOUND,
        &format!("Secret {AUTHORITY} has no key no-such-key (backup.target.s3.caSecretKeyRef)"),
        Duration::from_secs(30),
    )
    .await;

    // A bucket that does not exist fails the next run, and the status says which.
    let patch = serde_json::json!({
        "metadata": {"annotations": {"kea.dev/backup-requested": "to-a-missing-bucket"}},
        "spec": {"stores": {"sql": {"backup": {"target": {"s3": {
            "bucket": "no-such-bucket",
            "caSecretKeyRef": {"name": AUTHORITY, "key": "ca.crt"}}}}}}}});
    edit_until_not_backed_up(
        &ns,
        "orders",
        &patch,
        reasons::BACKUP_FAILED,
        "bucket no-such-bucket does not exist",
        Duration::from_secs(180),
    )
    .await;
}
