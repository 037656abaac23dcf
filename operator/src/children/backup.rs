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

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::api::{Backup, RestoreFrom};
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
    format!(
        "pvc://{}/{}/",
        backup.target.persistent_volume_claim.claim_name, store.object_name
    )
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
        let restore = restore(store, engine, from, &image, engine.data_path());
        pod.volumes.get_or_insert_default().extend(restore.volumes);
        if let Some(mount) = restore.server_mount {
            pod.containers[0]
                .volume_mounts
                .get_or_insert_default()
                .push(mount);
        }
        pod.init_containers = Some(vec![restore.init_container]);
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
                spec: Some(job_spec(backup, run, all)),
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

/// The container of a backup pod and the user it runs as.
pub struct BackupRun {
    /// Writes one backup under [`TARGET_MOUNT`] and reports it ([`RunReport`]).
    pub container: Container,
    /// `runAsUser` of the pod.
    pub run_as_user: i64,
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
    BackupRun {
        container: Container {
            name: BACKUP_COMPONENT.to_owned(),
            image: Some(image),
            command: Some(vec!["bash".to_owned(), "-c".to_owned(), script]),
            env: Some(env),
            ..backup_container()
        },
        run_as_user: STORE_RUN_AS_USER,
    }
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
    let args = [
        "store-backup",
        "--url",
        &url,
        "--dir",
        &format!("{TARGET_MOUNT}/{}", store.object_name),
        "--suffix",
        embedded_suffix(engine),
        "--keep",
        &backup.keep.to_string(),
        "--location",
        &target_location(backup, store),
    ];
    BackupRun {
        container: Container {
            name: BACKUP_COMPONENT.to_owned(),
            image: Some(images.tools.clone()),
            // The image's entrypoint is `kea-operator`.
            args: Some(args.iter().map(|arg| (*arg).to_owned()).collect()),
            env: Some(vec![secret_env(
                kea_contract::env::ADMIN_TOKEN,
                &admin_secret_name(ctx.name),
                secret_keys::TOKEN,
            )]),
            ..backup_container()
        },
        run_as_user: TOOLS_RUN_AS_USER,
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

fn job_spec(backup: &Backup, run: BackupRun, pod_labels: BTreeMap<String, String>) -> JobSpec {
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
                containers: vec![run.container],
                volumes: Some(vec![Volume {
                    name: "target".to_owned(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: backup.target.persistent_volume_claim.claim_name.clone(),
                        read_only: Some(false),
                    }),
                    ..Default::default()
                }]),
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

/// What a server's pod gets to fill a new volume from a backup: an init container, and the
/// volumes it needs (the backup claim, read-only; for MariaDB the import folder, which the
/// server's container must mount at [`INITDB_MOUNT`] too).
pub struct Restore {
    /// Copies the backup into place when the data volume is empty; does nothing otherwise.
    pub init_container: Container,
    /// The volumes to add to the pod.
    pub volumes: Vec<Volume>,
    /// The mount the server's container needs (MariaDB's import folder).
    pub server_mount: Option<VolumeMount>,
}

/// The restore of `store` from `from` into the volume mounted at `data_path`.
pub fn restore(
    store: &PlannedStore,
    engine: ServerEngine,
    from: &RestoreFrom,
    image: &str,
    data_path: &str,
) -> Restore {
    let claim = &from.persistent_volume_claim.claim_name;
    let path = from
        .path
        .clone()
        .unwrap_or_else(|| format!("{}/", store.object_name));
    let (suffix, has_data, place) = match engine {
        ServerEngine::Mariadb => (
            r"\.sql\.gz",
            format!("[ -d {data_path}/mysql ]"),
            format!(r#"cp "$file" {INITDB_MOUNT}/restore.sql.gz"#),
        ),
        // With append-only persistence, Redis starts from appendonlydir/, not dump.rdb: the
        // snapshot becomes the base of a new append-only log, put in place by one rename.
        ServerEngine::Redis => (
            r"\.rdb",
            format!("[ -e {data_path}/appendonlydir ] || [ -e {data_path}/dump.rdb ]"),
            format!(
                r#"rm -rf {data_path}/.restore && mkdir {data_path}/.restore
cp "$file" {data_path}/.restore/appendonly.aof.1.base.rdb
printf 'file appendonly.aof.1.base.rdb seq 1 type b\n' > {data_path}/.restore/appendonly.aof.manifest
mv {data_path}/.restore {data_path}/appendonlydir"#
            ),
        ),
    };
    let script = format!(
        r#"set -euo pipefail
if {has_data}; then echo "the volume holds data: nothing restored"; exit 0; fi
source="{TARGET_MOUNT}/$KEA_RESTORE_PATH"
if [ -d "$source" ]; then
  newest=$(ls -1 "$source" | {{ grep -E '^[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{3}}Z{suffix}$' || true; }} | sort | tail -n 1)
  if [ -z "$newest" ]; then echo "no backup in $KEA_RESTORE_PATH on PersistentVolumeClaim $KEA_RESTORE_CLAIM (restoreFrom)" >&2; exit 1; fi
  file="${{source%/}}/$newest"
elif [ -f "$source" ]; then
  file=$source
else
  echo "$KEA_RESTORE_PATH is not on PersistentVolumeClaim $KEA_RESTORE_CLAIM (restoreFrom.path)" >&2; exit 1
fi
{place}
echo "restoring ${{file#{TARGET_MOUNT}/}} ($(stat -c %s "$file") bytes) from PersistentVolumeClaim $KEA_RESTORE_CLAIM"
"#
    );
    let mut mounts = vec![
        VolumeMount {
            name: crate::children::stores::CLAIM_TEMPLATE.to_owned(),
            mount_path: data_path.to_owned(),
            ..Default::default()
        },
        VolumeMount {
            name: RESTORE_SOURCE_VOLUME.to_owned(),
            mount_path: TARGET_MOUNT.to_owned(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: RESTORE_SOURCE_VOLUME.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.clone(),
            read_only: Some(true),
        }),
        ..Default::default()
    }];
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
    Restore {
        init_container: Container {
            name: "restore".to_owned(),
            image: Some(image.to_owned()),
            command: Some(vec!["bash".to_owned(), "-c".to_owned(), script]),
            env: Some(vec![
                plain_env("KEA_RESTORE_PATH", &path),
                plain_env("KEA_RESTORE_CLAIM", claim),
            ]),
            resources: Some(resources("10m", "16Mi", "128Mi")),
            security_context: Some(restricted_container_security()),
            termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
            volume_mounts: Some(mounts),
            ..Default::default()
        },
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
        let claim = &from.persistent_volume_claim.claim_name;
        let path = from
            .path
            .clone()
            .unwrap_or_else(|| format!("{}/", store.object_name));
        let mount_path = embedded_mount_path(store.role);
        let file = match engine {
            EmbeddedEngine::Sqlite => kea_contract::files::SQLITE,
            EmbeddedEngine::Redb => kea_contract::files::REDB,
        };
        // One volume per claim: the kubelet never finishes mounting a pod that names the same
        // claim in two volumes.
        let source_volume = match wiring.volumes.iter().find(|volume| {
            volume.name.starts_with(RESTORE_SOURCE_VOLUME)
                && volume
                    .persistent_volume_claim
                    .as_ref()
                    .is_some_and(|source| &source.claim_name == claim)
        }) {
            Some(volume) => volume.name.clone(),
            None => {
                let name = format!("{RESTORE_SOURCE_VOLUME}-{}", store.role.as_str());
                wiring.volumes.push(Volume {
                    name: name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                });
                name
            }
        };
        let args = [
            "store-restore",
            "--from",
            &format!("{TARGET_MOUNT}/{path}"),
            "--suffix",
            embedded_suffix(engine),
            "--to",
            &format!("{mount_path}/{file}"),
            "--claim",
            claim,
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
                VolumeMount {
                    name: embedded_volume_name(engine),
                    mount_path: mount_path.to_owned(),
                    ..Default::default()
                },
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
