//! Pure builders of a store server's backups (`spec.stores.{sql,nosql}.backup`).
//!
//! A store with `backup` gets a CronJob named like its server (`NAME-mariadb`,
//! `NAME-redis`). Each run is one pod of the server's own image that connects to the server
//! with the service's credentials (`secretKeyRef`, never in the spec), takes a consistent
//! logical copy and writes it to the target claim:
//!
//! - MariaDB: `mariadb-dump --single-transaction` of the service's database, gzipped
//!   (`TIMESTAMP.sql.gz`); restored with `mariadb < dump`.
//! - Redis: the RDB snapshot the server streams to `redis-cli --rdb` (`TIMESTAMP.rdb`).
//! - SQLite and redb, embedded in the service's pod: the service streams a consistent copy of
//!   its file from `/admin/backup/{sql,nosql}` (with the token of the Microservice's backup
//!   Secret) to `kea-operator store-backup` in the operator's image (`TIMESTAMP.sqlite`,
//!   `TIMESTAMP.redb`); a restore puts the file in place before the service starts
//!   (`kea-operator store-restore`, an init container of the service's pod).
//!
//! Files are written under `OBJECT-NAME/` on the claim as `.NAME.partial` and renamed when
//! complete, so a run killed half-way leaves no file that looks like a backup. Then the
//! oldest complete ones beyond `keep` are deleted (names sort by time). The pod reports the
//! location and size of what it wrote in its termination message, which the reconciler
//! copies to the store's status.
//!
//! With an S3 target the same file is written to a scratch volume of the pod (`emptyDir`,
//! at most the store's size), then uploaded to `PREFIX/OBJECT-NAME/FILE` in the bucket by
//! `kea-operator` (`store-upload` after a server's dump, `store-backup --s3-bucket` for an
//! embedded store), which also deletes the oldest objects beyond `keep`. A restore from S3
//! downloads the backup to a scratch volume first (`kea-operator store-fetch`, an init
//! container before the restore's own), and only when the store's volume is still empty.
//! The certificate of a private authority (`caSecretKeyRef`, for an `https://` endpoint) is
//! a read-only Secret volume of each pod that reaches the bucket.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, KeyToPath, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::api::{Backup, BackupLocation, RestoreFrom, S3Target};
use crate::children::meta::{
    MANAGER, labels, restricted_container_security, restricted_pod_security,
};
use crate::children::stores::{
    EmbeddedEngine, Engine, MICROSERVICE_LABEL, PlannedStore, STORE_RUN_AS_USER, ServerEngine,
    ServiceWiring, StoreChildren, StoreContext, StoreImages, StoreObjects, TOOLS_RUN_AS_USER,
    admin_secret_name, database_name, embedded_mount_path, embedded_volume_name, plain_env,
    resources, secret_env, secret_keys,
};

/// Value of `app.kubernetes.io/component` on backup CronJobs, Jobs and pods.
pub const BACKUP_COMPONENT: &str = "backup";
/// Annotation on a Microservice that asks for a backup now: each new value starts one Job
/// per store with `backup` (e.g. `kubectl annotate ms orders kea.dev/backup-requested="$(date
/// +%s)" --overwrite`).
pub const BACKUP_REQUESTED: &str = "kea.dev/backup-requested";
/// Annotation on an on-demand Job: the request it answers.
pub const BACKUP_REQUEST: &str = "kea.dev/backup-request";
/// Where the target claim is mounted in the backup pod.
pub const TARGET_MOUNT: &str = "/backup";
/// How long a run may take before it counts as failed.
pub const RUN_DEADLINE_SECONDS: i64 = 3600;
/// How long a finished on-demand Job is kept (scheduled ones follow the history limits).
pub const ON_DEMAND_TTL_SECONDS: i32 = 86_400;

/// The labels that select a store's backup pods (the store's NetworkPolicy admits them).
/// Distinct from the server's selector, so the StatefulSet never adopts them.
pub fn selector_labels(store: &PlannedStore) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::NAME.to_owned(),
            format!("{}-{BACKUP_COMPONENT}", store.engine_name()),
        ),
        (labels::INSTANCE.to_owned(), store.object_name.clone()),
    ])
}

fn all_labels(ctx: &StoreContext<'_>, store: &PlannedStore) -> BTreeMap<String, String> {
    let mut all = selector_labels(store);
    all.insert(labels::COMPONENT.to_owned(), BACKUP_COMPONENT.to_owned());
    all.insert(labels::PART_OF.to_owned(), ctx.part_of.to_owned());
    all.insert(labels::MANAGED_BY.to_owned(), MANAGER.to_owned());
    all.insert(MICROSERVICE_LABEL.to_owned(), ctx.name.to_owned());
    all
}

/// Where a store's backups go, as the status and the termination message name it.
pub fn target_location(backup: &Backup, store: &PlannedStore) -> String {
    match backup.target.location() {
        Some(BackupLocation::Claim(claim)) => {
            format!("pvc://{}/{}/", claim.claim_name, store.object_name)
        }
        Some(BackupLocation::S3(s3)) => format!("{}{}/", s3.url(), store.object_name),
        None => String::new(),
    }
}

/// Where a container that talks to a bucket finds the certificate of `caSecretKeyRef`.
const S3_CA_MOUNT: &str = "/etc/kea/s3-ca";
/// The file of that certificate under [`S3_CA_MOUNT`].
const S3_CA_FILE: &str = "ca.crt";

/// What a `kea-operator` container needs to reach a bucket: its flags (the bucket, the key
/// prefix, the endpoint, the CA file), the credentials by `secretKeyRef` (the variables the
/// AWS tools read too), and the CA Secret's mount and pod volume when there is one.
struct S3Access {
    flags: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
    volumes: Vec<Volume>,
}

/// How a container of the store `role` (`sql`, `nosql`: a pod may hold both restores)
/// reaches `s3` under `key_prefix`.
fn s3_access(s3: &S3Target, key_prefix: &str, role: &str) -> S3Access {
    let mut flags = vec![
        "--s3-bucket".to_owned(),
        s3.bucket.clone(),
        "--s3-region".to_owned(),
        s3.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
        "--s3-prefix".to_owned(),
        key_prefix.to_owned(),
        "--s3-endpoint".to_owned(),
        s3.endpoint.clone(),
    ];
    let env = vec![
        secret_env(
            "AWS_ACCESS_KEY_ID",
            &s3.access_key_id_secret_key_ref.name,
            &s3.access_key_id_secret_key_ref.key,
        ),
        secret_env(
            "AWS_SECRET_ACCESS_KEY",
            &s3.secret_access_key_secret_key_ref.name,
            &s3.secret_access_key_secret_key_ref.key,
        ),
    ];
    let Some(ca) = &s3.ca_secret_key_ref else {
        return S3Access {
            flags,
            env,
            mounts: Vec::new(),
            volumes: Vec::new(),
        };
    };
    let volume_name = format!("s3-ca-{role}");
    flags.extend([
        "--s3-ca-file".to_owned(),
        format!("{S3_CA_MOUNT}/{S3_CA_FILE}"),
    ]);
    S3Access {
        flags,
        env,
        mounts: vec![VolumeMount {
            name: volume_name.clone(),
            mount_path: S3_CA_MOUNT.to_owned(),
            read_only: Some(true),
            ..Default::default()
        }],
        volumes: vec![Volume {
            name: volume_name,
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ca.key.clone(),
                    path: S3_CA_FILE.to_owned(),
                    ..Default::default()
                }]),
                // A certificate is public: readable by any user the container runs as.
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
}

/// A container of the operator's image: runs as its `nonroot` user whatever the pod's user.
fn tools_container(name: &str, images: &StoreImages, args: Vec<String>) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(images.tools.clone()),
        // The image's entrypoint is `kea-operator`.
        args: Some(args),
        resources: Some(resources("10m", "32Mi", "256Mi")),
        security_context: Some(SecurityContext {
            run_as_user: Some(TOOLS_RUN_AS_USER),
            ..restricted_container_security()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

/// Adds to each store what its `backup` and `restoreFrom` ask for: the CronJob, and for a
/// server the restore's init container and volumes in the server's pod (an embedded store's
/// restore is in the service's pod: [`embedded_restore`]). `service_port` is where the
/// service serves its embedded stores' copies.
pub fn attach(
    ctx: &StoreContext<'_>,
    stores: &mut [StoreChildren],
    images: &StoreImages,
    service_port: i32,
) {
    for children in stores {
        let store = &children.store;
        if let Some(backup) = &store.backup {
            let run = match store.engine {
                Engine::Server(engine) => server_run(ctx, store, engine, backup, images),
                Engine::Embedded(engine) => {
                    embedded_run(ctx, store, engine, backup, images, service_port)
                }
            };
            children.backup = Some(Box::new(build_cron_job(ctx, store, backup, run)));
        }
        let StoreObjects::Server(engine, server) = &mut children.objects else {
            continue;
        };
        let engine = *engine;
        let (Some(from), Some(pod)) = (
            &store.restore_from,
            server
                .stateful_set
                .spec
                .as_mut()
                .and_then(|s| s.template.spec.as_mut()),
        ) else {
            continue;
        };
        let image = pod.containers[0].image.clone().unwrap_or_default();
        let restore = restore(store, engine, from, images, &image, engine.data_path());
        pod.volumes.get_or_insert_default().extend(restore.volumes);
        if let Some(mount) = restore.server_mount {
            pod.containers[0]
                .volume_mounts
                .get_or_insert_default()
                .push(mount);
        }
        pod.init_containers = Some(restore.init_containers);
    }
}

/// The CronJob that backs a store up on `backup.schedule`, each run a pod of `run`.
pub fn build_cron_job(
    ctx: &StoreContext<'_>,
    store: &PlannedStore,
    backup: &Backup,
    run: BackupRun,
) -> CronJob {
    let all = all_labels(ctx, store);
    let mut metadata = ctx.object_metadata(store, &store.object_name);
    metadata.labels = Some(all.clone());
    CronJob {
        metadata,
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            time_zone: Some("Etc/UTC".to_owned()),
            suspend: Some(backup.suspend),
            // A run still writing when the next is due finishes first; none overlap.
            concurrency_policy: Some("Forbid".to_owned()),
            // A run missed by more than this (the controller was down) is skipped.
            starting_deadline_seconds: Some(300),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(all.clone()),
                    ..Default::default()
                }),
                spec: Some(job_spec(store, backup, run, all)),
            },
        }),
        status: None,
    }
}

/// The Job that answers the on-demand request `request` (the annotation's value): the
/// CronJob's template, owned by the Microservice, named after a hash of the request so the
/// same request never starts two.
pub fn on_demand_job(ctx: &StoreContext<'_>, cron_job: &CronJob, request: &str) -> Option<Job> {
    let template = cron_job.spec.as_ref()?.job_template.clone();
    let name = on_demand_job_name(cron_job.metadata.name.as_deref()?, request);
    let mut spec = template.spec?;
    spec.ttl_seconds_after_finished = Some(ON_DEMAND_TTL_SECONDS);
    Some(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: cron_job.metadata.namespace.clone(),
            labels: template.metadata.and_then(|m| m.labels),
            annotations: Some(BTreeMap::from([(
                BACKUP_REQUEST.to_owned(),
                request.to_owned(),
            )])),
            owner_references: ctx.owner.cloned().map(|owner| vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// `CRONJOB-` and ten hex digits of the request's FNV-1a hash (at most 63 characters, as
/// the CronJob's name has at most 52).
pub fn on_demand_job_name(cron_job: &str, request: &str) -> String {
    let hash = request
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{cron_job}-{:010x}", hash & 0xff_ffff_ffff)
}

/// The containers of a backup pod and the user it runs as.
pub struct BackupRun {
    /// Run first: a server's dump, when an S3 upload follows.
    pub init_containers: Vec<Container>,
    /// Writes (or uploads) one backup and reports it ([`RunReport`]).
    pub container: Container,
    /// `runAsUser` of the pod.
    pub run_as_user: i64,
    /// Volumes of the pod beside the target's (the bucket's CA).
    pub volumes: Vec<Volume>,
}

/// A server store's run: a shell script in the server's own image, with its client tools.
fn server_run(
    ctx: &StoreContext<'_>,
    store: &PlannedStore,
    engine: ServerEngine,
    backup: &Backup,
    images: &StoreImages,
) -> BackupRun {
    let secret = &store.object_name;
    let host = store.object_name.clone();
    let database = database_name(ctx.name);
    let (image, mut env, ping, dump, suffix) = match engine {
        ServerEngine::Mariadb => (
            images.mariadb.clone(),
            vec![
                plain_env("MARIADB_USER", &database),
                plain_env("MARIADB_DATABASE", &database),
                secret_env("MARIADB_PASSWORD", secret, secret_keys::PASSWORD),
            ],
            format!(
                r#"MYSQL_PWD="$MARIADB_PASSWORD" mariadb-admin -h {host} -u "$MARIADB_USER" --connect-timeout=2 ping"#
            ),
            // One transaction: a consistent snapshot of InnoDB tables without locking them.
            format!(
                r#"MYSQL_PWD="$MARIADB_PASSWORD" mariadb-dump -h {host} -u "$MARIADB_USER" --single-transaction --no-tablespaces --routines --events "$MARIADB_DATABASE" | gzip -c > "$partial""#
            ),
            ".sql.gz",
        ),
        ServerEngine::Redis => (
            images.redis.clone(),
            vec![secret_env("REDIS_PASSWORD", secret, secret_keys::PASSWORD)],
            format!(r#"REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h {host} ping | grep -q PONG"#),
            // The server forks and streams a point-in-time RDB snapshot.
            format!(r#"REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h {host} --rdb "$partial""#),
            ".rdb",
        ),
    };
    env.push(plain_env("KEA_BACKUP_KEEP", &backup.keep.to_string()));
    env.push(plain_env(
        "KEA_BACKUP_LOCATION",
        &target_location(backup, store),
    ));
    let script = format!(
        r#"set -euo pipefail
dir={TARGET_MOUNT}/{object}
mkdir -p "$dir"
name="$(date -u +%Y%m%dT%H%M%S.%3NZ){suffix}"
partial="$dir/.$name.partial"
trap 'rm -f "$partial"' EXIT
# A new pod's address reaches the NetworkPolicy engine a moment after the pod starts.
for attempt in $(seq 30); do {ping} >/dev/null 2>&1 && break; sleep 2; done
{dump}
mv "$partial" "$dir/$name"
ls -1 "$dir" | {{ grep -E '^[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{3}}Z\.' || true; }} | sort -r | tail -n +$((KEA_BACKUP_KEEP + 1)) | while read -r old; do rm -f -- "$dir/$old"; done
size=$(stat -c %s "$dir/$name")
printf '{{"location":"%s%s","size":%s}}' "$KEA_BACKUP_LOCATION" "$name" "$size" > /dev/termination-log
echo "backed up to $KEA_BACKUP_LOCATION$name ($size bytes)"
"#,
        object = store.object_name,
    );
    let dump = Container {
        name: BACKUP_COMPONENT.to_owned(),
        image: Some(image),
        command: Some(vec!["bash".to_owned(), "-c".to_owned(), script]),
        env: Some(env),
        ..backup_container()
    };
    let Some(BackupLocation::S3(s3)) = backup.target.location() else {
        return BackupRun {
            init_containers: Vec::new(),
            container: dump,
            run_as_user: STORE_RUN_AS_USER,
            volumes: Vec::new(),
        };
    };
    // The dump lands on the scratch volume; the upload reports the object instead.
    let access = s3_access(s3, &bucket_folder(s3, store), store.role.as_str());
    let mut args = vec!["store-upload".to_owned()];
    args.extend(destination_flags(store, backup, suffix));
    args.extend(access.flags);
    let mut mounts = backup_container().volume_mounts.unwrap_or_default();
    mounts.extend(access.mounts);
    BackupRun {
        init_containers: vec![Container {
            name: "dump".to_owned(),
            ..dump
        }],
        container: Container {
            env: Some(access.env),
            volume_mounts: Some(mounts),
            ..tools_container(BACKUP_COMPONENT, images, args)
        },
        run_as_user: STORE_RUN_AS_USER,
        volumes: access.volumes,
    }
}

/// The store's own folder in the bucket: `PREFIX/OBJECT-NAME/`.
fn bucket_folder(s3: &S3Target, store: &PlannedStore) -> String {
    format!("{}{}/", s3.key_prefix(), store.object_name)
}

/// The flags of `kea-operator store-backup` and `store-upload` that say where a store's
/// backup goes: its folder under [`TARGET_MOUNT`], what ends its name, how many to keep,
/// how the status names the place (the bucket's flags come with [`s3_access`]).
fn destination_flags(store: &PlannedStore, backup: &Backup, suffix: &str) -> Vec<String> {
    [
        "--dir",
        &format!("{TARGET_MOUNT}/{}", store.object_name),
        "--suffix",
        suffix,
        "--keep",
        &backup.keep.to_string(),
        "--location",
        &target_location(backup, store),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// An embedded store's run: `kea-operator store-backup` fetches the service's copy of its
/// file with the Microservice's admin token.
fn embedded_run(
    ctx: &StoreContext<'_>,
    store: &PlannedStore,
    engine: EmbeddedEngine,
    backup: &Backup,
    images: &StoreImages,
    service_port: i32,
) -> BackupRun {
    let url = format!(
        "{}{}/{}",
        crate::children::meta::service_url(ctx.name, ctx.namespace, service_port),
        kea_contract::paths::BACKUP,
        store.role.as_str()
    );
    let mut args = vec!["store-backup".to_owned(), "--url".to_owned(), url];
    args.extend(destination_flags(store, backup, embedded_suffix(engine)));
    let mut env = vec![secret_env(
        kea_contract::env::ADMIN_TOKEN,
        &admin_secret_name(ctx.name),
        secret_keys::TOKEN,
    )];
    let mut container = backup_container();
    let mut volumes = Vec::new();
    if let Some(BackupLocation::S3(s3)) = backup.target.location() {
        let access = s3_access(s3, &bucket_folder(s3, store), store.role.as_str());
        args.extend(access.flags);
        env.extend(access.env);
        container
            .volume_mounts
            .get_or_insert_default()
            .extend(access.mounts);
        volumes = access.volumes;
    }
    BackupRun {
        init_containers: Vec::new(),
        container: Container {
            name: BACKUP_COMPONENT.to_owned(),
            image: Some(images.tools.clone()),
            // The image's entrypoint is `kea-operator`.
            args: Some(args),
            env: Some(env),
            ..container
        },
        run_as_user: TOOLS_RUN_AS_USER,
        volumes,
    }
}

/// The file suffix of an embedded engine's backups.
pub fn embedded_suffix(engine: EmbeddedEngine) -> &'static str {
    match engine {
        EmbeddedEngine::Sqlite => ".sqlite",
        EmbeddedEngine::Redb => ".redb",
    }
}

/// What every backup container shares: limits, security, the target's mount.
fn backup_container() -> Container {
    Container {
        resources: Some(resources("50m", "64Mi", "512Mi")),
        security_context: Some(restricted_container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(vec![VolumeMount {
            name: "target".to_owned(),
            mount_path: TARGET_MOUNT.to_owned(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The volume a run writes to: the target claim, or a scratch volume as large as the store
/// for an upload.
fn target_volume(store: &PlannedStore, backup: &Backup) -> Volume {
    let mut volume = Volume {
        name: "target".to_owned(),
        ..Default::default()
    };
    match backup.target.location() {
        Some(BackupLocation::Claim(claim)) => {
            volume.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.claim_name.clone(),
                read_only: Some(false),
            });
        }
        _ => {
            volume.empty_dir = Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(store.size.clone())),
                ..Default::default()
            });
        }
    }
    volume
}

fn job_spec(
    store: &PlannedStore,
    backup: &Backup,
    run: BackupRun,
    pod_labels: BTreeMap<String, String>,
) -> JobSpec {
    JobSpec {
        backoff_limit: Some(1),
        active_deadline_seconds: Some(RUN_DEADLINE_SECONDS),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".to_owned()),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                security_context: Some(restricted_pod_security(run.run_as_user)),
                init_containers: (!run.init_containers.is_empty()).then_some(run.init_containers),
                containers: vec![run.container],
                volumes: Some(
                    std::iter::once(target_volume(store, backup))
                        .chain(run.volumes)
                        .collect(),
                ),
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

/// What a successful run reports in its termination message.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RunReport {
    /// `pvc://CLAIM/OBJECT-NAME/FILE`.
    pub location: String,
    /// Bytes written.
    pub size: i64,
}

impl RunReport {
    /// The report in a termination message, if it holds one.
    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str(message.trim()).ok()
    }
}

/// Where the MariaDB server imports `*.sql.gz` files from on its first start.
pub const INITDB_MOUNT: &str = "/docker-entrypoint-initdb.d";
/// Names of the restore's volumes in the server's pod.
pub const RESTORE_SOURCE_VOLUME: &str = "restore-source";
/// The folder the server imports from (MariaDB).
pub const INITDB_VOLUME: &str = "initdb";

/// What a server's pod gets to fill a new volume from a backup: init containers, and the
/// volumes they need (the backup claim, read-only, or a scratch volume the backup is
/// downloaded to; for MariaDB the import folder, which the server's container must mount at
/// [`INITDB_MOUNT`] too).
pub struct Restore {
    /// Download from S3 when the source is a bucket, then put the backup in place when the
    /// data volume is empty; both do nothing otherwise.
    pub init_containers: Vec<Container>,
    /// The volumes to add to the pod.
    pub volumes: Vec<Volume>,
    /// The mount the server's container needs (MariaDB's import folder).
    pub server_mount: Option<VolumeMount>,
}

/// Where a restore reads its backup from: a volume of the pod, how messages name it, and
/// for a bucket the init container that downloads the backup to that volume first.
struct RestoreSource {
    volume: Volume,
    description: String,
    fetch: Option<Container>,
    /// Other volumes the fetch needs (the bucket's CA).
    fetch_volumes: Vec<Volume>,
}

/// `PATH`, the backup file or folder `from` names: the store's own folder by default.
fn restore_path(from: &RestoreFrom, store: &PlannedStore) -> String {
    from.path
        .clone()
        .unwrap_or_else(|| format!("{}/", store.object_name))
}

/// The source of `from` as the pod volume `volume_name`. `data_mount` is the store's data
/// volume and `has_data` what on it means "not empty": then nothing is downloaded.
fn restore_source(
    from: &RestoreFrom,
    store: &PlannedStore,
    images: &StoreImages,
    volume_name: &str,
    data_mount: VolumeMount,
    has_data: &[String],
) -> RestoreSource {
    let mut volume = Volume {
        name: volume_name.to_owned(),
        ..Default::default()
    };
    let s3 = match from.location() {
        Some(BackupLocation::S3(s3)) => s3,
        claim => {
            let claim = match claim {
                Some(BackupLocation::Claim(claim)) => claim.claim_name.clone(),
                _ => String::new(),
            };
            volume.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            });
            return RestoreSource {
                volume,
                description: format!("PersistentVolumeClaim {claim}"),
                fetch: None,
                fetch_volumes: Vec::new(),
            };
        }
    };
    volume.empty_dir = Some(EmptyDirVolumeSource {
        size_limit: Some(Quantity(store.size.clone())),
        ..Default::default()
    });
    let mut args: Vec<String> = [
        "store-fetch",
        "--path",
        &restore_path(from, store),
        "--suffix",
        restore_suffix(store),
        "--to",
        TARGET_MOUNT,
    ]
    .map(str::to_owned)
    .to_vec();
    for path in has_data {
        args.extend(["--unless-exists".to_owned(), path.clone()]);
    }
    let access = s3_access(s3, &s3.key_prefix(), store.role.as_str());
    args.extend(access.flags);
    let mut mounts = vec![
        VolumeMount {
            read_only: Some(true),
            ..data_mount
        },
        VolumeMount {
            name: volume_name.to_owned(),
            mount_path: TARGET_MOUNT.to_owned(),
            ..Default::default()
        },
    ];
    mounts.extend(access.mounts);
    let fetch = Container {
        env: Some(access.env),
        volume_mounts: Some(mounts),
        // The pod's own user: it can tell whether the store's volume holds data.
        security_context: Some(restricted_container_security()),
        ..tools_container(&format!("fetch-{}", store.role.as_str()), images, args)
    };
    RestoreSource {
        volume,
        description: s3.url(),
        fetch: Some(fetch),
        fetch_volumes: access.volumes,
    }
}

/// What ends the name of a store's backups.
fn restore_suffix(store: &PlannedStore) -> &'static str {
    match store.engine {
        Engine::Server(ServerEngine::Mariadb) => ".sql.gz",
        Engine::Server(ServerEngine::Redis) => ".rdb",
        Engine::Embedded(engine) => embedded_suffix(engine),
    }
}

/// The restore of `store` from `from` into the volume mounted at `data_path`.
pub fn restore(
    store: &PlannedStore,
    engine: ServerEngine,
    from: &RestoreFrom,
    images: &StoreImages,
    image: &str,
    data_path: &str,
) -> Restore {
    let path = restore_path(from, store);
    // What on the volume means it holds data: then neither download nor restore happens.
    let (suffix, data_files, place) = match engine {
        ServerEngine::Mariadb => (
            r"\.sql\.gz",
            vec![format!("{data_path}/mysql")],
            format!(r#"cp "$file" {INITDB_MOUNT}/restore.sql.gz"#),
        ),
        // With append-only persistence, Redis starts from appendonlydir/, not dump.rdb: the
        // snapshot becomes the base of a new append-only log, put in place by one rename.
        ServerEngine::Redis => (
            r"\.rdb",
            vec![
                format!("{data_path}/appendonlydir"),
                format!("{data_path}/dump.rdb"),
            ],
            format!(
                r#"rm -rf {data_path}/.restore && mkdir {data_path}/.restore
cp "$file" {data_path}/.restore/appendonly.aof.1.base.rdb
printf 'file appendonly.aof.1.base.rdb seq 1 type b\n' > {data_path}/.restore/appendonly.aof.manifest
mv {data_path}/.restore {data_path}/appendonlydir"#
            ),
        ),
    };
    let has_data = data_files
        .iter()
        .map(|file| format!("[ -e {file} ]"))
        .collect::<Vec<_>>()
        .join(" || ");
    let script = format!(
        r#"set -euo pipefail
if {has_data}; then echo "the volume holds data: nothing restored"; exit 0; fi
source="{TARGET_MOUNT}/$KEA_RESTORE_PATH"
if [ -d "$source" ]; then
  newest=$(ls -1 "$source" | {{ grep -E '^[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{3}}Z{suffix}$' || true; }} | sort | tail -n 1)
  if [ -z "$newest" ]; then echo "no backup in $KEA_RESTORE_PATH on $KEA_RESTORE_SOURCE (restoreFrom)" >&2; exit 1; fi
  file="${{source%/}}/$newest"
elif [ -f "$source" ]; then
  file=$source
else
  echo "$KEA_RESTORE_PATH is not on $KEA_RESTORE_SOURCE (restoreFrom.path)" >&2; exit 1
fi
{place}
echo "restoring ${{file#{TARGET_MOUNT}/}} ($(stat -c %s "$file") bytes) from $KEA_RESTORE_SOURCE"
"#
    );
    let data_mount = VolumeMount {
        name: crate::children::stores::CLAIM_TEMPLATE.to_owned(),
        mount_path: data_path.to_owned(),
        ..Default::default()
    };
    let source = restore_source(
        from,
        store,
        images,
        RESTORE_SOURCE_VOLUME,
        data_mount.clone(),
        &data_files,
    );
    let mut mounts = vec![
        data_mount,
        VolumeMount {
            name: RESTORE_SOURCE_VOLUME.to_owned(),
            mount_path: TARGET_MOUNT.to_owned(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    let mut volumes = vec![source.volume];
    volumes.extend(source.fetch_volumes);
    let server_mount = (engine == ServerEngine::Mariadb).then(|| VolumeMount {
        name: INITDB_VOLUME.to_owned(),
        mount_path: INITDB_MOUNT.to_owned(),
        ..Default::default()
    });
    if let Some(mount) = &server_mount {
        mounts.push(mount.clone());
        volumes.push(Volume {
            name: INITDB_VOLUME.to_owned(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        });
    }
    let restore = Container {
        name: "restore".to_owned(),
        image: Some(image.to_owned()),
        command: Some(vec!["bash".to_owned(), "-c".to_owned(), script]),
        env: Some(vec![
            plain_env("KEA_RESTORE_PATH", &path),
            plain_env("KEA_RESTORE_SOURCE", &source.description),
        ]),
        resources: Some(resources("10m", "16Mi", "128Mi")),
        security_context: Some(restricted_container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Restore {
        init_containers: source.fetch.into_iter().chain([restore]).collect(),
        volumes,
        server_mount,
    }
}

/// Adds to the service's pod the restore of each embedded store with `restoreFrom`: an init
/// container of the operator's image that puts the newest backup (or the named file) in
/// place as the store's file, unless the volume already holds one.
pub fn attach_embedded_restores(
    wiring: &mut ServiceWiring,
    stores: &[PlannedStore],
    images: &StoreImages,
) {
    for store in stores {
        let (Engine::Embedded(engine), Some(from)) = (store.engine, &store.restore_from) else {
            continue;
        };
        let path = restore_path(from, store);
        let mount_path = embedded_mount_path(store.role);
        let file = match engine {
            EmbeddedEngine::Sqlite => kea_contract::files::SQLITE,
            EmbeddedEngine::Redb => kea_contract::files::REDB,
        };
        let data_mount = VolumeMount {
            name: embedded_volume_name(engine),
            mount_path: mount_path.to_owned(),
            ..Default::default()
        };
        let source = restore_source(
            from,
            store,
            images,
            &format!("{RESTORE_SOURCE_VOLUME}-{}", store.role.as_str()),
            data_mount.clone(),
            &[format!("{mount_path}/{file}")],
        );
        // One volume per claim: the kubelet never finishes mounting a pod that names the same
        // claim in two volumes.
        let same_claim = |volume: &Volume| {
            volume.name.starts_with(RESTORE_SOURCE_VOLUME)
                && volume.persistent_volume_claim.is_some()
                && volume.persistent_volume_claim == source.volume.persistent_volume_claim
        };
        let source_volume = match wiring.volumes.iter().find(|volume| same_claim(volume)) {
            Some(volume) => volume.name.clone(),
            None => {
                wiring.volumes.push(source.volume.clone());
                source.volume.name.clone()
            }
        };
        wiring.init_containers.extend(source.fetch);
        wiring.volumes.extend(source.fetch_volumes);
        let args = [
            "store-restore",
            "--from",
            &format!("{TARGET_MOUNT}/{path}"),
            "--suffix",
            embedded_suffix(engine),
            "--to",
            &format!("{mount_path}/{file}"),
            "--source",
            &source.description,
        ];
        wiring.init_containers.push(Container {
            name: format!("restore-{}", store.role.as_str()),
            image: Some(images.tools.clone()),
            // The image's entrypoint is `kea-operator`.
            args: Some(args.iter().map(|arg| (*arg).to_owned()).collect()),
            resources: Some(resources("10m", "16Mi", "128Mi")),
            security_context: Some(restricted_container_security()),
            termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
            volume_mounts: Some(vec![
                data_mount,
                VolumeMount {
                    name: source_volume.clone(),
                    mount_path: TARGET_MOUNT.to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `users` with both embedded stores backed up to and restored from the claim `b`.
    fn embedded_children() -> crate::children::Children {
        let spec: crate::api::MicroserviceSpec = serde_json::from_value(serde_json::json!({
            "image": "img:1",
            "stores": {
                "sql": {"engine": "sqlite", "backup": {"schedule": "@daily",
                    "target": {"persistentVolumeClaim": {"claimName": "b"}}},
                    "restoreFrom": {"persistentVolumeClaim": {"claimName": "b"}}},
                "nosql": {"engine": "redb", "backup": {"schedule": "@daily",
                    "target": {"persistentVolumeClaim": {"claimName": "b"}}},
                    "restoreFrom": {"persistentVolumeClaim": {"claimName": "b"}}},
            },
        }))
        .expect("spec");
        let mut ms = crate::Microservice::new("users", spec);
        ms.metadata.namespace = Some("shop".into());
        let settings = crate::children::Settings::default();
        crate::children::build_children(&ms, &Default::default(), &settings).expect("children")
    }

    #[test]
    fn embedded_backups_fetch_the_service_copy_with_the_admin_token() {
        let children = embedded_children();
        let cron_job = children.stores[0].backup.as_ref().expect("a CronJob");
        let pod = serde_json::to_value(
            &cron_job
                .spec
                .as_ref()
                .expect("spec")
                .job_template
                .spec
                .as_ref()
                .expect("job")
                .template,
        )
        .expect("json");
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], StoreImages::default().tools);
        assert_eq!(
            container["command"],
            serde_json::Value::Null,
            "the entrypoint is kea-operator"
        );
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(args[0], "store-backup");
        assert!(args.contains(&"http://users.shop.svc.cluster.local:8080/admin/backup/sql"));
        assert!(args.contains(&"/backup/users-sqlite"));
        assert_eq!(
            container["env"][0]["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "users-backup", "key": "token", "optional": false})
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

        // The service has the token, and admits the backup pods of both stores.
        let deployment = serde_json::to_value(&children.deployment).expect("json");
        let pod_spec = &deployment["spec"]["template"]["spec"];
        let env = pod_spec["containers"][0]["env"].as_array().expect("env");
        assert!(
            env.iter()
                .any(|e| e["name"] == kea_contract::env::ADMIN_TOKEN
                    && e["valueFrom"]["secretKeyRef"]["name"] == "users-backup")
        );
        let policy = serde_json::to_value(&children.network_policies[0]).expect("json");
        let from = policy["spec"]["ingress"][0]["from"].to_string();
        assert!(
            from.contains("sqlite-backup") && from.contains("redb-backup"),
            "{from}"
        );

        // Each store is restored before the service starts; the claim both restore from is
        // one volume of the pod.
        let claims = pod_spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter(|volume| volume["persistentVolumeClaim"]["claimName"] == "b")
            .count();
        assert_eq!(claims, 1, "the claim b in one volume");
        let init = pod_spec["initContainers"]
            .as_array()
            .expect("init containers");
        assert_eq!(init.len(), 2);
        assert_eq!(init[0]["args"][0], "store-restore");
        let args = init[0]["args"].to_string();
        assert!(
            args.contains("/backup/users-sqlite/") && args.contains("/data/sql/relational.sqlite"),
            "{args}"
        );
    }

    /// The pod of a store's backup runs.
    fn run_pod(children: &crate::children::Children, store: usize) -> serde_json::Value {
        let cron_job = children.stores[store].backup.as_ref().expect("a CronJob");
        serde_json::to_value(&cron_job.spec.as_ref().expect("spec").job_template)
            .expect("json")["spec"]["template"]["spec"]
            .clone()
    }

    #[test]
    fn s3_targets_upload_from_a_scratch_volume_and_restores_download_first() {
        let s3 = serde_json::json!({"bucket": "backups", "endpoint": "http://s3.storage:7070",
            "prefix": "kea", "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
            "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"}});
        let spec: crate::api::MicroserviceSpec = serde_json::from_value(serde_json::json!({
            "image": "img:1",
            "network": {"restrictEgress": true},
            "stores": {
                "sql": {"engine": "mariadb", "size": "2Gi", "backup": {"schedule": "@daily",
                    "keep": 3, "target": {"s3": s3}}, "restoreFrom": {"s3": s3}},
                "nosql": {"engine": "redb", "backup": {"schedule": "@daily",
                    "target": {"s3": s3}}, "restoreFrom": {"s3": s3}},
            },
        }))
        .expect("spec");
        let mut ms = crate::Microservice::new("orders", spec);
        ms.metadata.namespace = Some("shop".into());
        let settings = crate::children::Settings::default();
        let children =
            crate::children::build_children(&ms, &Default::default(), &settings).expect("children");
        let has_credentials = |container: &serde_json::Value| {
            let env = container["env"].to_string();
            env.contains(r#""name":"AWS_ACCESS_KEY_ID""#)
                && env.contains(r#""key":"id","name":"s3""#)
                && env.contains(r#""name":"AWS_SECRET_ACCESS_KEY""#)
        };

        // MariaDB: the dump (the server's image) on a scratch volume, then the upload.
        let pod = run_pod(&children, 0);
        assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "2Gi");
        assert_eq!(pod["initContainers"][0]["name"], "dump");
        assert!(
            pod["initContainers"][0]["command"][2]
                .as_str()
                .expect("script")
                .contains("mariadb-dump")
        );
        let upload = &pod["containers"][0];
        assert_eq!(upload["args"][0], "store-upload");
        let args = upload["args"].to_string();
        for wanted in [
            r#""--s3-bucket","backups""#,
            r#""--s3-prefix","kea/orders-mariadb/""#,
            r#""--s3-endpoint","http://s3.storage:7070""#,
            r#""--keep","3""#,
            r#""--location","s3://backups/kea/orders-mariadb/""#,
        ] {
            assert!(args.contains(wanted), "{wanted} in {args}");
        }
        assert!(has_credentials(upload), "{upload}");
        assert_eq!(upload["securityContext"]["runAsUser"], TOOLS_RUN_AS_USER);
        assert_eq!(upload["securityContext"]["readOnlyRootFilesystem"], true);

        // redb: the service's copy fetched and uploaded by one container, with both secrets.
        let pod = run_pod(&children, 1);
        assert!(pod["initContainers"].is_null());
        let backup = &pod["containers"][0];
        assert_eq!(backup["args"][0], "store-backup");
        assert!(
            backup["args"]
                .to_string()
                .contains(r#""--s3-prefix","kea/orders-redb/""#)
        );
        assert!(has_credentials(backup) && backup["env"].to_string().contains("orders-backup"));

        // The server downloads before its restore, and only to an empty volume.
        let StoreObjects::Server(_, server) = &children.stores[0].objects else {
            panic!("a server");
        };
        let server_pod =
            serde_json::to_value(&server.stateful_set).expect("json")["spec"]["template"]["spec"]
                .clone();
        let init = server_pod["initContainers"]
            .as_array()
            .expect("init containers");
        assert_eq!(init.len(), 2);
        assert_eq!(init[0]["args"][0], "store-fetch");
        let args = init[0]["args"].to_string();
        assert!(
            args.contains(r#""--path","orders-mariadb/""#)
                && args.contains(r#""--unless-exists","/var/lib/mysql/mysql""#)
                && args.contains(r#""--s3-prefix","kea/""#),
            "{args}"
        );
        assert!(has_credentials(&init[0]));
        assert!(init[1]["env"].to_string().contains("s3://backups/kea/"));
        let source = server_pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == RESTORE_SOURCE_VOLUME)
            .expect("the restore's source");
        assert_eq!(source["emptyDir"]["sizeLimit"], "2Gi");

        // The service's pod: download, then restore; its egress admits the bucket's port.
        let deployment = serde_json::to_value(&children.deployment).expect("json");
        let init = deployment["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .expect("init containers");
        let names: Vec<&str> = init.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["fetch-nosql", "restore-nosql"]);
        assert!(
            init[1]["args"]
                .to_string()
                .contains(r#""--source","s3://backups/kea/""#)
        );
        let policy = serde_json::to_value(&children.network_policies[0]).expect("json");
        let egress = policy["spec"]["egress"].as_array().expect("egress");
        assert!(
            egress
                .iter()
                .any(|rule| rule["to"].is_null() && rule["ports"][0]["port"] == 7070),
            "{egress:?}"
        );
    }

    #[test]
    fn a_bucket_with_a_private_authority_gets_its_certificate_in_every_pod_that_reaches_it() {
        let s3 = serde_json::json!({"bucket": "backups", "endpoint": "https://s3.example.com",
            "accessKeyIdSecretKeyRef": {"name": "s3", "key": "id"},
            "secretAccessKeySecretKeyRef": {"name": "s3", "key": "secret"},
            "caSecretKeyRef": {"name": "s3-authority", "key": "root.pem"}});
        let spec: crate::api::MicroserviceSpec = serde_json::from_value(serde_json::json!({
            "image": "img:1",
            "network": {"restrictEgress": true},
            "stores": {
                "sql": {"engine": "mariadb", "backup": {"schedule": "@daily",
                    "target": {"s3": s3}}, "restoreFrom": {"s3": s3}},
                "nosql": {"engine": "redb", "backup": {"schedule": "@daily",
                    "target": {"s3": s3}}, "restoreFrom": {"s3": s3}},
            },
        }))
        .expect("spec");
        let mut ms = crate::Microservice::new("orders", spec);
        ms.metadata.namespace = Some("shop".into());
        let children = crate::children::build_children(
            &ms,
            &Default::default(),
            &crate::children::Settings::default(),
        )
        .expect("children");
        // The pod has the Secret's key as a file; the container mounts it and names it.
        let assert_trusts = |pod: &serde_json::Value, container: &serde_json::Value, role: &str| {
            let volume = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == format!("s3-ca-{role}"))
                .unwrap_or_else(|| panic!("no s3-ca-{role} volume in {pod}"));
            assert_eq!(volume["secret"]["secretName"], "s3-authority");
            assert_eq!(volume["secret"]["items"][0]["key"], "root.pem");
            assert_eq!(volume["secret"]["items"][0]["path"], S3_CA_FILE);
            let mounts = container["volumeMounts"].to_string();
            assert!(
                mounts.contains(&format!(
                    r#""mountPath":"{S3_CA_MOUNT}","name":"s3-ca-{role}","readOnly":true"#
                )),
                "{mounts}"
            );
            let args = container["args"].to_string();
            assert!(
                args.contains(&format!(r#""--s3-ca-file","{S3_CA_MOUNT}/{S3_CA_FILE}""#))
                    && args.contains(r#""--s3-endpoint","https://s3.example.com""#),
                "{args}"
            );
        };
        for (index, role) in [(0, "sql"), (1, "nosql")] {
            let pod = run_pod(&children, index);
            assert_trusts(&pod, &pod["containers"][0], role);
        }
        let StoreObjects::Server(_, server) = &children.stores[0].objects else {
            panic!("a server");
        };
        let server_pod =
            serde_json::to_value(&server.stateful_set).expect("json")["spec"]["template"]["spec"]
                .clone();
        assert_trusts(&server_pod, &server_pod["initContainers"][0], "sql");
        let deployment = serde_json::to_value(&children.deployment).expect("json");
        let service_pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(service_pod["initContainers"][0]["name"], "fetch-nosql");
        assert_trusts(service_pod, &service_pod["initContainers"][0], "nosql");
        // An https:// endpoint without a port is reached on 443.
        let policy = serde_json::to_value(&children.network_policies[0]).expect("json");
        let egress = policy["spec"]["egress"].as_array().expect("egress");
        assert!(
            egress
                .iter()
                .any(|rule| rule["to"].is_null() && rule["ports"][0]["port"] == 443),
            "{egress:?}"
        );
    }

    #[test]
    fn s3_endpoint_ports() {
        let target = |endpoint: &str| crate::api::S3Target {
            bucket: "b".into(),
            endpoint: endpoint.to_owned(),
            region: None,
            prefix: None,
            access_key_id_secret_key_ref: crate::api::SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
            },
            secret_access_key_secret_key_ref: crate::api::SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
            },
            ca_secret_key_ref: None,
        };
        assert_eq!(target("http://minio:9000").port(), 9000);
        assert_eq!(target("http://minio").port(), 80);
        assert_eq!(target("http://minio.storage/").port(), 80);
        assert_eq!(target("http://[fd00::1]:7070").port(), 7070);
        assert_eq!(target("http://[fd00::1]").port(), 80);
        assert_eq!(target("http://minio").url(), "s3://b/");
    }

    #[test]
    fn on_demand_job_names_fit_a_label_and_differ_by_request() {
        let cron_job = "a".repeat(52);
        let first = on_demand_job_name(&cron_job, "1");
        assert_eq!(first.len(), 63);
        assert_ne!(first, on_demand_job_name(&cron_job, "2"));
        assert_eq!(first, on_demand_job_name(&cron_job, "1"));
    }

    #[test]
    fn a_run_report_is_read_from_the_termination_message() {
        assert_eq!(
            RunReport::parse(r#"{"location":"pvc://b/o-mariadb/x.sql.gz","size":42}"#),
            Some(RunReport {
                location: "pvc://b/o-mariadb/x.sql.gz".to_owned(),
                size: 42
            })
        );
        assert_eq!(RunReport::parse("mariadb-dump: Got error: 1045"), None);
    }
}
