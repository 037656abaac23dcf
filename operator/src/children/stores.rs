//! Pure builders of a Microservice's own data stores (`spec.stores`).
//!
//! - A server engine (`mariadb`, `redis`) becomes a dedicated instance: a StatefulSet of one
//!   pod whose data lives on a PersistentVolumeClaim from a `volumeClaimTemplate`, a Service,
//!   and a Secret with generated credentials. The service's container gets `DATABASE_URL` /
//!   `REDIS_URL` from that Secret (`secretKeyRef`), so no credential is ever written into the
//!   Microservice, its status, the Deployment or an Event.
//! - An embedded engine (`sqlite`, `redb`) becomes a PersistentVolumeClaim mounted into the
//!   service's own pod.
//!
//! The StatefulSet and the Service are ordinary children (controller ownerReference, garbage
//! collected with the Microservice). The data is not: the Secret and the claims carry an
//! ownerReference only under `deletionPolicy: Delete`; under `Retain` they outlive the
//! Microservice and a new Microservice of the same name adopts them by name.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{
    Backup, DeletionPolicy, NosqlEngine, RestoreFrom, SqlEngine, Store, Stores, quantity,
};
use crate::children::meta::{
    BuildContext, MANAGER, labels, restricted_container_security, restricted_pod_security,
    store_object_name,
};

/// Default image of the MariaDB servers: the official image, for clusters with a registry.
pub const DEFAULT_MARIADB_IMAGE: &str = "docker.io/library/mariadb:11.4";
/// Default image of the Redis servers: the official image, for clusters with a registry.
pub const DEFAULT_REDIS_IMAGE: &str = "docker.io/library/redis:7.4";
/// Default image of the embedded stores' backups and restores: the operator's own.
pub const DEFAULT_TOOLS_IMAGE: &str = concat!("kea.dev/kea-operator:", env!("CARGO_PKG_VERSION"));
/// UID and GID of the store servers: the `mysql` and `redis` users of the official images.
pub const STORE_RUN_AS_USER: i64 = 999;
/// Label naming the Microservice that owns a store object, also on retained objects that
/// have no ownerReference.
pub const MICROSERVICE_LABEL: &str = "kea.dev/microservice";
/// Label value of `app.kubernetes.io/component` on store objects.
pub const STORE_COMPONENT: &str = "store";
/// Name of the volume claim template of a store's StatefulSet (claims are `data-NAME-0`).
pub const CLAIM_TEMPLATE: &str = "data";
/// Where the embedded stores' volumes are mounted in the service's container.
pub const SQL_MOUNT_PATH: &str = kea_contract::mounts::SQL_DATA;
/// Where the embedded stores' volumes are mounted in the service's container.
pub const NOSQL_MOUNT_PATH: &str = kea_contract::mounts::NOSQL_DATA;
/// UID of the backup and restore containers of the operator's image (its `nonroot` user).
pub const TOOLS_RUN_AS_USER: i64 = 65532;
/// Length of generated passwords (alphanumeric: about 190 bits).
pub const PASSWORD_LEN: usize = 32;

/// The images of the store servers (operator flags `--mariadb-image`, `--redis-image`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreImages {
    /// MariaDB server image. It must follow the official image's contract: `MARIADB_*`
    /// variables, data in `/var/lib/mysql`, `mariadb-admin` and `mariadb` on the PATH.
    pub mariadb: String,
    /// Redis server image with `sh`, `redis-server` and `redis-cli` on the PATH.
    pub redis: String,
    /// The operator's own image, whose `kea-operator store-backup` and `store-restore` back
    /// up and restore the embedded stores.
    pub tools: String,
}

impl Default for StoreImages {
    fn default() -> Self {
        Self {
            mariadb: DEFAULT_MARIADB_IMAGE.to_owned(),
            redis: DEFAULT_REDIS_IMAGE.to_owned(),
            tools: DEFAULT_TOOLS_IMAGE.to_owned(),
        }
    }
}

/// Which of the two stores of a Microservice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `spec.stores.sql`, behind `/mysqldata`.
    Sql,
    /// `spec.stores.nosql`, behind `/nosqldata`.
    Nosql,
}

impl Role {
    /// `sql` or `nosql`, as in the spec and `status.stores`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sql => "sql",
            Self::Nosql => "nosql",
        }
    }
}

/// A store server engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerEngine {
    /// MariaDB on port 3306.
    Mariadb,
    /// Redis on port 6379.
    Redis,
}

impl ServerEngine {
    /// Every server engine, for cleaning up those no longer wanted.
    pub const ALL: [Self; 2] = [Self::Mariadb, Self::Redis];

    /// The engine's name, also the suffix of its objects' names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mariadb => "mariadb",
            Self::Redis => "redis",
        }
    }

    /// The port the server listens on.
    pub fn port(self) -> i32 {
        match self {
            Self::Mariadb => 3306,
            Self::Redis => 6379,
        }
    }

    /// Where the server keeps its data (the claim's mount).
    pub fn data_path(self) -> &'static str {
        match self {
            Self::Mariadb => "/var/lib/mysql",
            Self::Redis => "/data",
        }
    }

    /// The variable through which the service gets the URL.
    pub fn url_variable(self) -> &'static str {
        match self {
            Self::Mariadb => kea_contract::env::DATABASE_URL,
            Self::Redis => kea_contract::env::REDIS_URL,
        }
    }
}

/// A store embedded in the service's pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddedEngine {
    /// SQLite.
    Sqlite,
    /// redb.
    Redb,
}

impl EmbeddedEngine {
    /// The engine's name, also the suffix of its claim's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Redb => "redb",
        }
    }
}

/// How a declared store is realised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// A dedicated server.
    Server(ServerEngine),
    /// A file in the service's pod.
    Embedded(EmbeddedEngine),
}

/// One declared store, with the names of its objects.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedStore {
    /// sql or nosql.
    pub role: Role,
    /// The engine.
    pub engine: Engine,
    /// Capacity of the volume.
    pub size: String,
    /// StorageClass of the volume, or the cluster's default.
    pub storage_class_name: Option<String>,
    /// What happens to the data on delete.
    pub deletion_policy: DeletionPolicy,
    /// Name of the StatefulSet, Service and Secret (server engines), or of the claim (embedded).
    pub object_name: String,
    /// Name of the PersistentVolumeClaim that holds the data.
    pub claim_name: String,
    /// Its backups, when declared.
    pub backup: Option<Backup>,
    /// The backup a new volume is filled from.
    pub restore_from: Option<RestoreFrom>,
}

impl PlannedStore {
    /// The engine's name, e.g. `mariadb`.
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Server(engine) => engine.as_str(),
            Engine::Embedded(engine) => engine.as_str(),
        }
    }

    /// `HOST:PORT` of a server engine in the cluster.
    pub fn host(&self, namespace: &str) -> Option<String> {
        match self.engine {
            Engine::Server(engine) => Some(format!(
                "{}.{namespace}.svc.cluster.local:{}",
                self.object_name,
                engine.port()
            )),
            Engine::Embedded(_) => None,
        }
    }
}

/// The stores of a Microservice named `name`, in a fixed order (sql, then nosql).
pub fn plan(name: &str, stores: Option<&Stores>) -> Vec<PlannedStore> {
    let Some(stores) = stores else {
        return Vec::new();
    };
    let mut planned = Vec::new();
    if let Some(sql) = &stores.sql {
        let engine = match sql.engine {
            SqlEngine::Mariadb => Engine::Server(ServerEngine::Mariadb),
            SqlEngine::Sqlite => Engine::Embedded(EmbeddedEngine::Sqlite),
        };
        planned.push(planned_store(name, Role::Sql, engine, sql));
    }
    if let Some(nosql) = &stores.nosql {
        let engine = match nosql.engine {
            NosqlEngine::Redis => Engine::Server(ServerEngine::Redis),
            NosqlEngine::Redb => Engine::Embedded(EmbeddedEngine::Redb),
        };
        planned.push(planned_store(name, Role::Nosql, engine, nosql));
    }
    planned
}

fn planned_store<E>(name: &str, role: Role, engine: Engine, spec: &Store<E>) -> PlannedStore {
    let suffix = match engine {
        Engine::Server(engine) => engine.as_str(),
        Engine::Embedded(engine) => engine.as_str(),
    };
    let object_name = store_object_name(name, suffix);
    let claim_name = match engine {
        Engine::Server(_) => format!("{CLAIM_TEMPLATE}-{object_name}-0"),
        Engine::Embedded(_) => object_name.clone(),
    };
    PlannedStore {
        role,
        engine,
        size: spec.size.clone(),
        storage_class_name: spec.storage_class_name.clone(),
        deletion_policy: spec.deletion_policy,
        object_name,
        claim_name,
        backup: spec.backup.clone(),
        restore_from: spec.restore_from.clone(),
    }
}

/// The objects of one server store that are applied on every reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerChildren {
    /// The server.
    pub stateful_set: StatefulSet,
    /// Its in-cluster address.
    pub service: Service,
}

/// The objects of one store, except the Secret (whose credentials are generated once, by
/// the reconciler, when it does not exist).
#[derive(Clone, Debug, PartialEq)]
pub enum StoreObjects {
    /// A dedicated server.
    Server(ServerEngine, Box<ServerChildren>),
    /// The claim of a store embedded in the service's pod.
    Embedded(Box<PersistentVolumeClaim>),
}

/// One declared store and its objects.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreChildren {
    /// What was declared.
    pub store: PlannedStore,
    /// What realises it.
    pub objects: StoreObjects,
    /// The CronJob of its backups, when declared.
    pub backup: Option<Box<CronJob>>,
}

/// The objects of every declared store.
pub fn build_stores(
    ctx: &StoreContext<'_>,
    planned: &[PlannedStore],
    images: &StoreImages,
) -> Vec<StoreChildren> {
    planned
        .iter()
        .map(|store| StoreChildren {
            store: store.clone(),
            // Added by [`crate::children::backup::attach`].
            backup: None,
            objects: match store.engine {
                Engine::Server(engine) => {
                    StoreObjects::Server(engine, Box::new(build_server(ctx, store, engine, images)))
                }
                Engine::Embedded(_) => {
                    StoreObjects::Embedded(Box::new(build_embedded_claim(ctx, store)))
                }
            },
        })
        .collect()
}

/// What every store object of one Microservice shares.
#[derive(Clone, Debug)]
pub struct StoreContext<'a> {
    /// The Microservice's name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// `app.kubernetes.io/part-of`.
    pub part_of: &'a str,
    /// The controller ownerReference to the Microservice (None when rendering from a file).
    pub owner: Option<&'a OwnerReference>,
}

impl<'a> StoreContext<'a> {
    /// The context of the stores of the Microservice of `ctx`.
    pub fn of(ctx: &'a BuildContext) -> Self {
        Self {
            name: &ctx.name,
            namespace: &ctx.namespace,
            part_of: ctx
                .labels
                .get(labels::PART_OF)
                .map(String::as_str)
                .unwrap_or(&ctx.namespace),
            owner: ctx.owner.as_ref(),
        }
    }

    fn labels(&self, store: &PlannedStore) -> BTreeMap<String, String> {
        let mut labels = selector_labels(store);
        labels.insert(labels::COMPONENT.to_owned(), STORE_COMPONENT.to_owned());
        labels.insert(labels::PART_OF.to_owned(), self.part_of.to_owned());
        labels.insert(labels::MANAGED_BY.to_owned(), MANAGER.to_owned());
        labels.insert(MICROSERVICE_LABEL.to_owned(), self.name.to_owned());
        labels
    }

    fn metadata(&self, store: &PlannedStore, name: &str, owned: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels(store)),
            owner_references: owned
                .then(|| self.owner.cloned().map(|owner| vec![owner]))
                .flatten(),
            ..Default::default()
        }
    }

    /// The metadata of an object of `store` owned (as controller) by the Microservice.
    pub fn object_metadata(&self, store: &PlannedStore, name: &str) -> ObjectMeta {
        self.metadata(store, name, true)
    }

    /// The ownerReferences a data object (Secret, embedded claim) should carry: the
    /// Microservice under `Delete`, none under `Retain`.
    pub fn data_owner_references(&self, store: &PlannedStore) -> Vec<OwnerReference> {
        match (store.deletion_policy, self.owner) {
            (DeletionPolicy::Delete, Some(owner)) => vec![owner.clone()],
            _ => Vec::new(),
        }
    }
}

/// The labels that select a store server's pod. Distinct from the Microservice's own
/// selector, so the service's Service never routes to its database.
pub fn selector_labels(store: &PlannedStore) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), store.engine_name().to_owned()),
        (labels::INSTANCE.to_owned(), store.object_name.clone()),
    ])
}

/// The generated credentials of a server store; only [`build_secret`] reads them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The service's password (MariaDB user, Redis `requirepass`).
    pub password: String,
    /// MariaDB's root password (unused for Redis).
    pub root_password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print a credential, not even in a debug log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl Credentials {
    /// Fresh random credentials from the operating system's generator.
    pub fn generate() -> std::io::Result<Self> {
        Ok(Self {
            password: random_password()?,
            root_password: random_password()?,
        })
    }
}

/// A random alphanumeric password of [`PASSWORD_LEN`] characters (no character that needs
/// escaping in a URL, a shell or SQL).
pub fn random_password() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(PASSWORD_LEN);
    let mut bytes = [0u8; 64];
    while password.len() < PASSWORD_LEN {
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        // Rejection sampling keeps every character equally likely.
        for byte in bytes {
            let index = usize::from(byte & 0x3f);
            if index < ALPHABET.len() && password.len() < PASSWORD_LEN {
                password.push(char::from(ALPHABET[index]));
            }
        }
    }
    Ok(password)
}

/// The database and user name of a Microservice: its name with `-` as `_`.
pub fn database_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Keys of a store Secret.
pub mod secret_keys {
    /// The full URL the service connects with (`DATABASE_URL` / `REDIS_URL`).
    pub const URL: &str = "url";
    /// The service's password.
    pub const PASSWORD: &str = "password";
    /// The admin token of a Microservice's backup Secret ([`super::admin_secret_name`]).
    pub const TOKEN: &str = "token";
    /// MariaDB's root password.
    pub const ROOT_PASSWORD: &str = "root-password";
}

/// The Secret with the token that opens the service's `/admin/backup/...` to the backup Jobs
/// of its embedded stores: `NAME-backup`.
pub fn admin_secret_name(name: &str) -> String {
    format!("{name}-backup")
}

/// The Secret of a Microservice's admin token ([`admin_secret_name`]): created once with
/// `token`, never rewritten; owned like the data of `store`.
pub fn build_admin_secret(ctx: &StoreContext<'_>, store: &PlannedStore, token: &str) -> Secret {
    let name = admin_secret_name(ctx.name);
    let mut metadata = ctx.metadata(store, &name, false);
    let owners = ctx.data_owner_references(store);
    metadata.owner_references = (!owners.is_empty()).then_some(owners);
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([(
            secret_keys::TOKEN.to_owned(),
            token.to_owned(),
        )])),
        ..Default::default()
    }
}

/// The Secret of a server store: created once with `credentials`, never rewritten.
pub fn build_secret(
    ctx: &StoreContext<'_>,
    store: &PlannedStore,
    engine: ServerEngine,
    credentials: &Credentials,
) -> Secret {
    let host = store.host(ctx.namespace).unwrap_or_default();
    let database = database_name(ctx.name);
    let password = &credentials.password;
    let mut data = BTreeMap::from([(secret_keys::PASSWORD.to_owned(), password.clone())]);
    match engine {
        ServerEngine::Mariadb => {
            data.insert(
                secret_keys::URL.to_owned(),
                format!("mysql://{database}:{password}@{host}/{database}"),
            );
            data.insert(
                secret_keys::ROOT_PASSWORD.to_owned(),
                credentials.root_password.clone(),
            );
        }
        ServerEngine::Redis => {
            data.insert(
                secret_keys::URL.to_owned(),
                format!("redis://:{password}@{host}/0"),
            );
        }
    }
    let mut metadata = ctx.metadata(store, &store.object_name, false);
    let owners = ctx.data_owner_references(store);
    metadata.owner_references = (!owners.is_empty()).then_some(owners);
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        string_data: Some(data),
        ..Default::default()
    }
}

/// The claim of an embedded store: created once, adopted when it exists.
pub fn build_embedded_claim(ctx: &StoreContext<'_>, store: &PlannedStore) -> PersistentVolumeClaim {
    let mut metadata = ctx.metadata(store, &store.claim_name, false);
    let owners = ctx.data_owner_references(store);
    metadata.owner_references = (!owners.is_empty()).then_some(owners);
    PersistentVolumeClaim {
        metadata,
        spec: Some(claim_spec(store)),
        status: None,
    }
}

fn claim_spec(store: &PlannedStore) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
        storage_class_name: store.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(store.size.clone()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The storage a claim requests now, when the declared `size` is larger (the volume must
/// grow). A claim is never shrunk: a smaller or equal size, or a claim without a request,
/// gives None.
pub fn claim_to_grow(claim: &PersistentVolumeClaim, size: &str) -> Option<String> {
    let requested = claim_request(claim)?;
    let wanted = quantity::bytes(size)?;
    (wanted > quantity::bytes(&requested)?).then_some(requested)
}

/// The storage request of a claim, e.g. `1Gi`.
pub fn claim_request(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// A StatefulSet's volumeClaimTemplates cannot change once it exists: `wanted` keeps the
/// sizes of `existing`'s templates (a grown store's claim is expanded on its own).
pub fn keep_claim_template_sizes(wanted: &mut StatefulSet, existing: &StatefulSet) {
    let existing_templates = existing
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref());
    let wanted_templates = wanted
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut());
    let (Some(existing_templates), Some(wanted_templates)) = (existing_templates, wanted_templates)
    else {
        return;
    };
    for template in wanted_templates {
        let size = existing_templates
            .iter()
            .find(|t| t.metadata.name == template.metadata.name)
            .and_then(claim_request);
        if let (Some(size), Some(requests)) = (
            size,
            template
                .spec
                .as_mut()
                .and_then(|s| s.resources.as_mut())
                .and_then(|r| r.requests.as_mut()),
        ) {
            requests.insert("storage".to_owned(), Quantity(size));
        }
    }
}

/// The StatefulSet and Service of a server store.
pub fn build_server(
    ctx: &StoreContext<'_>,
    store: &PlannedStore,
    engine: ServerEngine,
    images: &StoreImages,
) -> ServerChildren {
    let labels = ctx.labels(store);
    let retention = match store.deletion_policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    let stateful_set = StatefulSet {
        metadata: ctx.metadata(store, &store.object_name, true),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(store.object_name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(store)),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(server_pod_spec(ctx, store, engine, images)),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(CLAIM_TEMPLATE.to_owned()),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: Some(claim_spec(store)),
                status: None,
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: ctx.metadata(store, &store.object_name, true),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(store)),
            ports: Some(vec![ServicePort {
                name: Some(engine.as_str().to_owned()),
                port: engine.port(),
                target_port: Some(IntOrString::String(engine.as_str().to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    ServerChildren {
        stateful_set,
        service,
    }
}

pub(crate) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

fn exec_probe(script: &str, period: i32, failure_threshold: i32, timeout: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(timeout),
        success_threshold: Some(1),
        ..Default::default()
    }
}

fn empty_dir_volume(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..Default::default()
    }
}

/// Requests of `cpu` and `memory`, and a limit of `memory_limit`.
pub(crate) fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.to_owned()),
        )])),
        ..Default::default()
    }
}

fn server_pod_spec(
    ctx: &StoreContext<'_>,
    store: &PlannedStore,
    engine: ServerEngine,
    images: &StoreImages,
) -> PodSpec {
    let secret = &store.object_name;
    let database = database_name(ctx.name);
    let (image, env, data_path, extra_mounts, probes, resources, command) = match engine {
        ServerEngine::Mariadb => (
            images.mariadb.clone(),
            vec![
                secret_env("MARIADB_ROOT_PASSWORD", secret, secret_keys::ROOT_PASSWORD),
                plain_env("MARIADB_DATABASE", &database),
                plain_env("MARIADB_USER", &database),
                secret_env("MARIADB_PASSWORD", secret, secret_keys::PASSWORD),
            ],
            engine.data_path(),
            vec![mount("run", "/run/mysqld")],
            // Ping answers as soon as the server runs (it logs in, so the server logs no denied
            // attempt); the query proves the service's own user, password and database work.
            [
                exec_probe(MARIADB_PING, 2, 90, 5),
                exec_probe(
                    r#"MYSQL_PWD="$MARIADB_PASSWORD" mariadb -h 127.0.0.1 -u "$MARIADB_USER" -e 'SELECT 1' "$MARIADB_DATABASE""#,
                    5,
                    3,
                    5,
                ),
                exec_probe(MARIADB_PING, 10, 6, 5),
            ],
            resources("50m", "128Mi", "512Mi"),
            None,
        ),
        ServerEngine::Redis => (
            images.redis.clone(),
            vec![secret_env("REDIS_PASSWORD", secret, secret_keys::PASSWORD)],
            engine.data_path(),
            Vec::new(),
            [
                exec_probe(REDIS_PING, 2, 30, 5),
                exec_probe(REDIS_PING, 5, 3, 5),
                exec_probe(REDIS_PING, 10, 6, 5),
            ],
            resources("25m", "32Mi", "256Mi"),
            // Append-only persistence: every acknowledged write is in the log on the volume.
            // The password comes from the Secret through the environment, never the spec.
            Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                r#"exec redis-server --port 6379 --dir /data --appendonly yes --protected-mode no --requirepass "$REDIS_PASSWORD""#
                    .to_owned(),
            ]),
        ),
    };
    let [startup, readiness, liveness] = probes;
    let mut mounts = vec![mount(CLAIM_TEMPLATE, data_path), mount("tmp", "/tmp")];
    mounts.extend(extra_mounts.iter().cloned());
    let mut volumes = vec![empty_dir_volume("tmp")];
    volumes.extend(extra_mounts.iter().map(|m| empty_dir_volume(&m.name)));
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(restricted_pod_security(STORE_RUN_AS_USER)),
        termination_grace_period_seconds: Some(30),
        containers: vec![Container {
            name: engine.as_str().to_owned(),
            image: Some(image),
            command,
            ports: Some(vec![ContainerPort {
                name: Some(engine.as_str().to_owned()),
                container_port: engine.port(),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            env: Some(env),
            resources: Some(resources),
            startup_probe: Some(startup),
            readiness_probe: Some(readiness),
            liveness_probe: Some(liveness),
            security_context: Some(restricted_container_security()),
            termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
            volume_mounts: Some(mounts),
            ..Default::default()
        }],
        volumes: Some(volumes),
        ..Default::default()
    }
}

const MARIADB_PING: &str =
    r#"MYSQL_PWD="$MARIADB_PASSWORD" mariadb-admin -h 127.0.0.1 -u "$MARIADB_USER" ping"#;

const REDIS_PING: &str =
    r#"REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 ping | grep -q PONG"#;

/// The variables, volumes and mounts the service's own container gets for its stores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceWiring {
    /// `DATABASE_URL` / `REDIS_URL` from the Secrets, `KEA_*_DATA_DIR` for embedded stores.
    pub env: Vec<EnvVar>,
    /// The embedded stores' claims.
    pub volumes: Vec<Volume>,
    /// Where they are mounted.
    pub mounts: Vec<VolumeMount>,
    /// Whether a store lives in the pod's volume: then at most one pod may run at a time.
    pub embedded: bool,
    /// Containers that run before the service's (restores of embedded stores).
    pub init_containers: Vec<Container>,
}

/// Where an embedded store's volume is mounted in the service's pod.
pub fn embedded_mount_path(role: Role) -> &'static str {
    match role {
        Role::Sql => SQL_MOUNT_PATH,
        Role::Nosql => NOSQL_MOUNT_PATH,
    }
}

/// The name of an embedded store's volume in the service's pod.
pub fn embedded_volume_name(engine: EmbeddedEngine) -> String {
    format!("store-{}", engine.as_str())
}

/// How the service's container of the Microservice `name` is wired to its stores.
pub fn service_wiring(name: &str, stores: &[PlannedStore]) -> ServiceWiring {
    let mut wiring = ServiceWiring::default();
    // The backup Jobs of embedded stores fetch their copies with this token.
    if stores
        .iter()
        .any(|store| matches!(store.engine, Engine::Embedded(_)) && store.backup.is_some())
    {
        wiring.env.push(secret_env(
            kea_contract::env::ADMIN_TOKEN,
            &admin_secret_name(name),
            secret_keys::TOKEN,
        ));
    }
    for store in stores {
        match store.engine {
            Engine::Server(engine) => wiring.env.push(secret_env(
                engine.url_variable(),
                &store.object_name,
                secret_keys::URL,
            )),
            Engine::Embedded(engine) => {
                let variable = match store.role {
                    Role::Sql => kea_contract::env::SQL_DATA_DIR,
                    Role::Nosql => kea_contract::env::NOSQL_DATA_DIR,
                };
                let path = embedded_mount_path(store.role);
                let volume = embedded_volume_name(engine);
                wiring.env.push(plain_env(variable, path));
                wiring.volumes.push(Volume {
                    name: volume.clone(),
                    persistent_volume_claim: Some(
                        k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                            claim_name: store.claim_name.clone(),
                            read_only: None,
                        },
                    ),
                    ..Default::default()
                });
                wiring.mounts.push(mount(&volume, path));
                wiring.embedded = true;
            }
        }
    }
    wiring
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Store;

    fn claim(size: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(size.to_owned()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_claim_grows_when_the_size_is_larger_and_never_shrinks() {
        assert_eq!(claim_to_grow(&claim("1Gi"), "2Gi"), Some("1Gi".to_owned()));
        assert_eq!(
            claim_to_grow(&claim("1Gi"), "1025Mi"),
            Some("1Gi".to_owned())
        );
        assert_eq!(claim_to_grow(&claim("1Gi"), "1024Mi"), None);
        assert_eq!(claim_to_grow(&claim("2Gi"), "1Gi"), None);
        assert_eq!(
            claim_to_grow(&PersistentVolumeClaim::default(), "1Gi"),
            None
        );
    }

    #[test]
    fn a_stateful_set_keeps_the_claim_template_it_was_created_with() {
        let server = |size: &str| {
            let planned = plan(
                "orders",
                Some(&Stores {
                    sql: Some(Store {
                        engine: SqlEngine::Mariadb,
                        size: size.to_owned(),
                        storage_class_name: None,
                        deletion_policy: DeletionPolicy::Retain,
                        backup: None,
                        restore_from: None,
                    }),
                    nosql: None,
                }),
            );
            let ctx = StoreContext {
                name: "orders",
                namespace: "shop",
                part_of: "shop",
                owner: None,
            };
            build_server(
                &ctx,
                &planned[0],
                ServerEngine::Mariadb,
                &StoreImages::default(),
            )
            .stateful_set
        };
        let template_size = |set: &StatefulSet| {
            claim_request(
                &set.spec
                    .as_ref()
                    .unwrap()
                    .volume_claim_templates
                    .as_ref()
                    .unwrap()[0],
            )
        };
        let existing = server("1Gi");
        let mut grown = server("3Gi");
        assert_eq!(template_size(&grown).as_deref(), Some("3Gi"));
        keep_claim_template_sizes(&mut grown, &existing);
        assert_eq!(template_size(&grown).as_deref(), Some("1Gi"));
    }

    fn stores(sql: SqlEngine, nosql: NosqlEngine) -> Stores {
        Stores {
            sql: Some(Store {
                engine: sql,
                size: "2Gi".into(),
                storage_class_name: Some("fast".into()),
                deletion_policy: DeletionPolicy::Retain,
                backup: None,
                restore_from: None,
            }),
            nosql: Some(Store {
                engine: nosql,
                size: "256Mi".into(),
                storage_class_name: None,
                deletion_policy: DeletionPolicy::Delete,
                backup: None,
                restore_from: None,
            }),
        }
    }

    #[test]
    fn passwords_are_long_alphanumeric_and_differ() {
        let a = random_password().expect("password");
        let b = random_password().expect("password");
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        let credentials = Credentials::generate().expect("credentials");
        assert!(!format!("{credentials:?}").contains(&credentials.password));
    }

    #[test]
    fn server_stores_are_named_after_the_microservice_and_engine() {
        let planned = plan(
            "orders",
            Some(&stores(SqlEngine::Mariadb, NosqlEngine::Redis)),
        );
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].object_name, "orders-mariadb");
        assert_eq!(planned[0].claim_name, "data-orders-mariadb-0");
        assert_eq!(
            planned[0].host("shop").as_deref(),
            Some("orders-mariadb.shop.svc.cluster.local:3306")
        );
        assert_eq!(planned[1].object_name, "orders-redis");
        assert!(plan("orders", None).is_empty());
    }

    #[test]
    fn embedded_stores_mount_their_claims_and_need_one_pod() {
        let planned = plan("users", Some(&stores(SqlEngine::Sqlite, NosqlEngine::Redb)));
        assert_eq!(planned[0].claim_name, "users-sqlite");
        let wiring = service_wiring("orders", &planned);
        assert!(wiring.embedded);
        assert_eq!(wiring.volumes.len(), 2);
        assert_eq!(wiring.mounts[1].mount_path, NOSQL_MOUNT_PATH);
        assert_eq!(wiring.env[0].value.as_deref(), Some(SQL_MOUNT_PATH));
    }

    #[test]
    fn urls_reach_the_service_only_through_secret_references() {
        let planned = plan(
            "orders",
            Some(&stores(SqlEngine::Mariadb, NosqlEngine::Redis)),
        );
        let wiring = service_wiring("orders", &planned);
        assert!(!wiring.embedded);
        for env in &wiring.env {
            assert!(env.value.is_none(), "{} carries a literal value", env.name);
            let reference = env
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .expect("a secretKeyRef");
            assert_eq!(reference.key, secret_keys::URL);
        }
    }

    #[test]
    fn data_objects_are_owned_only_under_the_delete_policy() {
        let owner = OwnerReference {
            api_version: "kea.dev/v1alpha1".into(),
            kind: "Microservice".into(),
            name: "orders".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let ctx = StoreContext {
            name: "orders",
            namespace: "shop",
            part_of: "shop",
            owner: Some(&owner),
        };
        let planned = plan(
            "orders",
            Some(&stores(SqlEngine::Mariadb, NosqlEngine::Redis)),
        );
        let credentials = Credentials {
            password: "p".into(),
            root_password: "r".into(),
        };
        let retained = build_secret(&ctx, &planned[0], ServerEngine::Mariadb, &credentials);
        assert!(retained.metadata.owner_references.is_none());
        let deleted = build_secret(&ctx, &planned[1], ServerEngine::Redis, &credentials);
        assert_eq!(
            deleted.metadata.owner_references.map(|o| o[0].uid.clone()),
            Some("uid-1".into())
        );
        let url = retained
            .string_data
            .as_ref()
            .and_then(|d| d.get(secret_keys::URL))
            .cloned();
        assert_eq!(
            url.as_deref(),
            Some("mysql://orders:p@orders-mariadb.shop.svc.cluster.local:3306/orders")
        );
        // The server itself is always owned: it holds no data of its own.
        let server = build_server(
            &ctx,
            &planned[0],
            ServerEngine::Mariadb,
            &StoreImages::default(),
        );
        assert!(server.stateful_set.metadata.owner_references.is_some());
        let policy = server
            .stateful_set
            .spec
            .and_then(|s| s.persistent_volume_claim_retention_policy)
            .and_then(|p| p.when_deleted);
        assert_eq!(policy.as_deref(), Some("Retain"));
    }
}
