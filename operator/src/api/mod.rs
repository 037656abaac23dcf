//! The `Microservice` custom resource (`kea.dev/v1alpha1`): its spec, its status and the
//! condition types and reasons the operator reports.
//!
//! Every field carries a doc comment: it becomes the field's description in the CRD, which is
//! what `kubectl explain microservice.spec...` prints. Validation that the API server can do
//! (bounds, patterns, CEL rules with a message each) lives in the schema, so an invalid object is
//! rejected at `kubectl apply` time; [`crate::api::validate`] holds the few checks CEL cannot express.

pub mod crd;
pub mod quantity;
pub mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the custom resource.
pub const GROUP: &str = "kea.dev";
/// The API version of the custom resource.
pub const VERSION: &str = "v1alpha1";

/// The desired state of a Microservice: one HTTP service, run as a Deployment behind a Service.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kea.dev",
    version = "v1alpha1",
    kind = "Microservice",
    plural = "microservices",
    singular = "microservice",
    shortname = "ms",
    category = "kea",
    namespaced,
    status = "MicroserviceStatus",
    derive = "PartialEq",
    doc = "A Microservice is one HTTP service run by the kea operator: it becomes a Deployment with probes, a restricted security context and a graceful drain, a Service, where they apply a PodDisruptionBudget and a HorizontalPodAutoscaler, and the data stores it declares (a dedicated MariaDB or Redis, or a volume for SQLite or redb).",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Pods that are ready"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Pods that exist"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the Microservice is or is not ready"
    ),
    printcolumn(
        name = "RolledBack",
        type_ = "string",
        json_path = ".status.rolledBack.image",
        description = "The image of a revision rolled back (it made no progress in time), while the spec asks for it"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        description = "The in-cluster URL of the Service"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.dependsOn) || self.spec.dependsOn.all(d, d.name != self.metadata.name)")
        .message("spec.dependsOn must not name the Microservice itself: remove this Microservice's own name from dependsOn")
        .field_path(".spec.dependsOn"),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label of at most 63 characters (lowercase letters, digits and '-', starting with a letter), because it also names the Service"),
    validation = Rule::new("!has(self.spec.stores) || self.metadata.name.size() <= 45")
        .message("a Microservice with stores must have a name of at most 45 characters, because its stores' StatefulSets and Services are named after it (e.g. NAME-mariadb)"),
    validation = Rule::new("!has(self.spec.stores) || !((has(self.spec.stores.sql) && has(self.spec.stores.sql.backup)) || (has(self.spec.stores.nosql) && has(self.spec.stores.nosql.backup))) || self.metadata.name.size() <= 44")
        .message("a Microservice with backups must have a name of at most 44 characters, because its backup CronJobs are named after it (e.g. NAME-mariadb) and a CronJob's name has at most 52")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.autoscaling) || !has(self.resources) || (has(self.resources.requests) && 'cpu' in self.resources.requests)",
        "message": "autoscaling scales on CPU use relative to the CPU request: set resources.requests.cpu, or leave resources unset to get the default request"
    },
    {
        "rule": "!has(self.stores) || !((has(self.stores.sql) && self.stores.sql.engine == 'sqlite') || (has(self.stores.nosql) && self.stores.nosql.engine == 'redb')) || (self.replicas <= 1 && !has(self.autoscaling))",
        "message": "embedded stores live in one pod's volume; use mariadb/redis to run more than one replica (or set replicas to 1 and remove autoscaling)"
    }
]))]
pub struct MicroserviceSpec {
    /// Container image of the service, e.g. `registry.example/orders:1.2.0`. The image must
    /// serve HTTP on `port` and answer the health probes (by default `/healthz` and `/readyz`).
    #[schemars(length(min = 1, max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.matches('\\\\s')",
        "message": "image must be an image reference without spaces, e.g. registry.example/orders:1.2.0"
    }]))]
    pub image: String,

    /// Number of pods. Defaults to 1. Ignored while `autoscaling` is set (the
    /// HorizontalPodAutoscaler then decides) and while `suspend` is true (then 0). Also set by
    /// `kubectl scale microservice NAME --replicas=N` through the scale subresource.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// TCP port the container serves HTTP on; the Service exposes the same port. Defaults to
    /// 8080. A port below 1024 (e.g. 80, as images made for `docker run -p 80:80` listen on)
    /// works without root or capabilities: the pod's `net.ipv4.ip_unprivileged_port_start`
    /// sysctl, which Pod Security `restricted` allows, is lowered to this port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The user ID the container runs as, whatever the image's `USER` says. Defaults to 65532
    /// (distroless `nonroot`). Set it to the UID an image was built for when it must own its
    /// files (e.g. 101 for nginx-unprivileged). The group and the volumes' group are the same
    /// number. Root (0) is refused: Pod Security `restricted` forbids it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1 && self <= 2147483647",
        "message": "runAsUser must be a non-root user ID from 1 to 2147483647: Pod Security restricted forbids running as root (0); the files the container writes belong under /data or /tmp"
    }]))]
    pub run_as_user: Option<i64>,

    /// Environment variables of the container, in the core/v1 EnvVar form (value or valueFrom).
    /// The operator adds `KEA_SERVICE_NAME`, `KEA_NAMESPACE`, `KEA_PORT` and one
    /// `<NAME>_URL` per entry of `dependsOn`; an entry here with the same name wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// Sources of environment variables (whole ConfigMaps or Secrets), e.g. a Secret that holds
    /// database URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// CPU and memory requests and limits of the container. When absent the operator sets
    /// requests of cpu 50m and memory 32Mi and a memory limit of 128Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Health probes of the container. Liveness (`GET /healthz`) and readiness (`GET /readyz`)
    /// are on by default; the startup probe is off unless set. For an image without these
    /// routes, set `probes.path` (e.g. `/`) or `probes.type: TCP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,

    /// Other Microservices in the same namespace that this one calls. Each becomes an
    /// environment variable `<NAME>_URL` (name upper-cased, `-` replaced by `_`) holding the
    /// dependency's in-cluster URL, and its readiness is reported in the `DependenciesReady`
    /// condition. A missing dependency does not stop this Microservice from running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub depends_on: Vec<Dependency>,

    /// Scale the pods on CPU use with a HorizontalPodAutoscaler. While set, `replicas` is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Scale the service to zero pods while keeping its Service and configuration. Reported as
    /// the `Suspended` condition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// When the kubelet pulls the image: `Always`, `IfNotPresent` or `Never`. Defaults to the
    /// Kubernetes default (`Always` for `:latest` tags, otherwise `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets, in the same namespace, holding credentials for a private image registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// How the Service is exposed: `ClusterIP` (the default, in-cluster only), `NodePort` or
    /// `LoadBalancer`.
    #[serde(default, skip_serializing_if = "ServiceType::is_default")]
    pub service_type: ServiceType,

    /// Extra labels for the pods. The selector labels `app.kubernetes.io/name` and
    /// `app.kubernetes.io/instance` are set by the operator and cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/instance' in self)",
        "message": "podLabels must not set app.kubernetes.io/name or app.kubernetes.io/instance: the operator sets them to select the pods"
    }, {
        "rule": "self.all(key, !key.startsWith('calls.kea.dev/'))",
        "message": "podLabels must not set calls.kea.dev/ labels: they open network paths, and only dependsOn may declare a call"
    }]))]
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations for the pods, e.g. for a metrics scraper.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Seconds a terminating pod keeps serving before SIGTERM (a preStop sleep), so that every
    /// node's proxy and every load balancer stops routing to it first. Endpoint changes reach
    /// the nodes within a few seconds on a healthy cluster; raise it where they take longer
    /// (busy nodes, external load balancers). 0 sends SIGTERM at once. Defaults to 5.
    #[serde(default = "default_deregistration_seconds")]
    #[schemars(range(min = 0, max = 300))]
    pub deregistration_seconds: i32,

    /// Seconds the application needs after SIGTERM to finish in-flight requests. The
    /// termination grace period covers `deregistrationSeconds`, then these. Defaults to 5.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 300))]
    pub drain_seconds: i32,

    /// The writable scratch volume mounted at `/data` (the root filesystem is read-only). It is
    /// an emptyDir: its content lives as long as the pod. Without `stores`, the service's
    /// embedded stores (SQLite, redb) live here and are lost with the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolume>,

    /// The service's own data stores, provisioned by the operator and kept when pods come and
    /// go. A server engine (`mariadb`, `redis`) gets a dedicated instance (a StatefulSet with a
    /// PersistentVolumeClaim, a Service and a Secret with generated credentials, handed to the
    /// service as `DATABASE_URL` / `REDIS_URL`); an embedded engine (`sqlite`, `redb`) gets a
    /// PersistentVolumeClaim mounted into the service's pod. Without `stores` the service keeps
    /// its embedded stores on the `/data` emptyDir: ephemeral, lost when a pod is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stores: Option<Stores>,

    /// The network boundary of the pods. Whatever is set here, the pods accept connections on
    /// `port` only from the pods of Microservices that list this one in `dependsOn` (and the
    /// kubelet's probes), and the store servers only from this Microservice's pods, where
    /// the operator runs with NetworkPolicies on (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,

    /// How a new revision of the pods (a new image, a changed environment, a changed
    /// ConfigMap or Secret it reads) is delivered, and what happens when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

/// How a new revision of the pods is delivered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Seconds a new revision may go without progress (a new pod becoming ready) before the
    /// Deployment reports `ProgressDeadlineExceeded`: a crash loop, a readiness that never
    /// passes, an image that cannot be pulled. Raise it for images that take long to pull or
    /// to start. Defaults to 90: a failed revision is back on the stable one within two minutes.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 10, max = 3600))]
    pub progress_deadline_seconds: i32,
    /// What happens to a revision past that deadline: `Auto` (the default) puts the pods back
    /// on the last revision that was Ready and says so in the `RolledBack` condition, until the
    /// next change of the spec or of what the environment reads; `Off` leaves the rollout
    /// where it stopped (the old pods keep serving beside the new ones that are not ready).
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// How a new revision is tried: `Canary` (the default) starts one pod of it beside the
    /// stable ones and compares their answers before it replaces them (with 2 replicas or
    /// more; with one, readiness alone gates it); `Rolling` replaces the pods at once, one by
    /// one, gated by readiness.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// The canary's analysis: how often the pods' own `/metrics` are compared, and what a
    /// passed and a failed check are.
    #[serde(default)]
    pub analysis: CanaryAnalysis,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            progress_deadline_seconds: default_progress_deadline_seconds(),
            rollback: RollbackPolicy::default(),
            strategy: RolloutStrategy::default(),
            analysis: CanaryAnalysis::default(),
        }
    }
}

/// How a new revision of the pods is tried.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    /// One pod of the new revision beside the stable ones, analysed, then promoted or reverted.
    #[default]
    Canary,
    /// The pods replaced one by one, gated by readiness only.
    Rolling,
}

/// The canary's analysis. Every `intervalSeconds` the operator reads the `/metrics` of the
/// canary pod and of the stable pods (the request counters and latency histograms kea's
/// service exports) and compares what they answered since the last check: the canary fails a
/// check when its success ratio (answers below 500) is more than `maxSuccessDropPercent`
/// points below the stable pods', or its p99 latency is more than `maxLatencyFactor` times
/// theirs and above `latencyFloorMilliseconds`. A check with fewer than `minRequests` answers
/// from the canary tells nothing and passes on readiness, as does every check of an image
/// without kea's metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Seconds between two checks. Defaults to 10.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 2, max = 600))]
    pub interval_seconds: i32,
    /// Passed checks in a row that promote the canary. Defaults to 3.
    #[serde(default = "default_checks_to_promote")]
    #[schemars(range(min = 1, max = 100))]
    pub checks_to_promote: i32,
    /// Failed checks (in all) that revert it. Defaults to 2.
    #[serde(default = "default_failed_checks_to_revert")]
    #[schemars(range(min = 1, max = 100))]
    pub failed_checks_to_revert: i32,
    /// Answers the canary must have given in a check for its numbers to count. Defaults to
    /// 20.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_requests: i32,
    /// Points of success percentage the canary may be below the stable pods. Defaults to 5.
    #[serde(default = "default_max_success_drop_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_success_drop_percent: i32,
    /// How many times the stable pods' p99 latency the canary's may be. Defaults to 3.
    #[serde(default = "default_max_latency_factor")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_latency_factor: i32,
    /// A p99 latency below this many milliseconds never fails a check. Defaults to 100.
    #[serde(default = "default_latency_floor_milliseconds")]
    #[schemars(range(min = 0, max = 600000))]
    pub latency_floor_milliseconds: i32,
}

impl Default for CanaryAnalysis {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval_seconds(),
            checks_to_promote: default_checks_to_promote(),
            failed_checks_to_revert: default_failed_checks_to_revert(),
            min_requests: default_min_requests(),
            max_success_drop_percent: default_max_success_drop_percent(),
            max_latency_factor: default_max_latency_factor(),
            latency_floor_milliseconds: default_latency_floor_milliseconds(),
        }
    }
}

fn default_interval_seconds() -> i32 {
    10
}
fn default_checks_to_promote() -> i32 {
    3
}
fn default_failed_checks_to_revert() -> i32 {
    2
}
fn default_min_requests() -> i32 {
    20
}
fn default_max_success_drop_percent() -> i32 {
    5
}
fn default_max_latency_factor() -> i32 {
    3
}
fn default_latency_floor_milliseconds() -> i32 {
    100
}

/// Default of `rollout.progressDeadlineSeconds`.
pub fn default_progress_deadline_seconds() -> i32 {
    90
}

/// What happens to a revision that makes no progress within its deadline.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RollbackPolicy {
    /// Back to the last revision that was Ready.
    #[default]
    Auto,
    /// Left where it stopped.
    Off,
}

/// Exceptions to, and extensions of, the network boundary of a Microservice.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Callers from outside the system of Microservices that may connect too, as NetworkPolicy
    /// peers: e.g. `{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name:
    /// ingress-nginx}}}` for an ingress controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allow_from: Vec<NetworkPolicyPeer>,
    /// Limit the pods' outgoing connections to the cluster DNS, the Microservices of
    /// `dependsOn` and their own stores. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restrict_egress: bool,
}

/// The data stores of one Microservice: at most one relational and one NoSQL store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stores {
    /// The relational store, behind the service's `/mysqldata`: `mariadb` (a dedicated MariaDB
    /// server, `DATABASE_URL`) or `sqlite` (a file on a volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlStore>,
    /// The NoSQL store, behind the service's `/nosqldata`: `redis` (a dedicated Redis server
    /// with append-only persistence, `REDIS_URL`) or `redb` (a file on a volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nosql: Option<NosqlStore>,
}

/// One store: its engine and the persistent volume it keeps its data on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.storageClassName) == has(oldSelf.storageClassName)",
    "message": "storageClassName cannot be added or removed once the store exists: its volume is already provisioned"
}]))]
pub struct Store<E> {
    /// The engine. Cannot change once set.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "engine cannot change once set (the data would be left behind): delete and re-create the Microservice, or create another Microservice"
    }]))]
    pub engine: E,
    /// Capacity of the volume, e.g. `1Gi` or `512Mi`. Defaults to `1Gi`. May grow (the claim is
    /// expanded, when its StorageClass allows it), never shrink.
    #[serde(default = "default_store_size")]
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
            "message": "size must be a positive quantity such as 1Gi or 512Mi"
        },
        {
            "rule": "!isQuantity(self) || !isQuantity(oldSelf) || !quantity(self).isLessThan(quantity(oldSelf))",
            "message": "size cannot shrink: a volume cannot be made smaller",
            "messageExpression": "'size cannot shrink from ' + oldSelf + ' to ' + self + ': a volume cannot be made smaller; keep ' + oldSelf + ' or more'"
        }
    ]))]
    pub size: String,
    /// StorageClass of the volume; the cluster's default class when unset. Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",
            "message": "storageClassName must be the name of a StorageClass: lowercase letters, digits, '-' and '.'"
        },
        {
            "rule": "self == oldSelf",
            "message": "storageClassName cannot change once set: the volume exists already"
        }
    ]))]
    pub storage_class_name: Option<String>,
    /// What happens to the data when the Microservice is deleted: `Retain` (the default) keeps
    /// the volume and the credentials, and a Microservice created again with the same name
    /// gets them back; `Delete` removes them with the Microservice.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Scheduled consistent backups to a volume claim, and on demand through the annotation
    /// `kea.dev/backup-requested`: a `mariadb` dump in one transaction, a `redis` RDB snapshot,
    /// or the copy of an embedded `sqlite` / `redb` file that the service serves at
    /// `/admin/backup/{sql,nosql}` to the backup Job (kea-service does; another image must too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    /// A backup to fill the store's volume from when the volume is new, e.g. to re-create a
    /// deleted Microservice with its data. Applied only to an empty volume, never over data:
    /// a server, or the service's pod for an embedded store, that finds data on its volume
    /// starts with it and ignores this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
}

/// A backup to restore a new store from: on a volume claim or in an S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.persistentVolumeClaim) != has(self.s3)",
    "message": "restoreFrom must name exactly one of persistentVolumeClaim or s3"
}]))]
pub struct RestoreFrom {
    /// The claim the backups are on (a `backup.target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimTarget>,
    /// The bucket the backups are in (a `backup.target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// A backup file on the claim or under the bucket's prefix, e.g.
    /// `orders-mariadb/20261206T030000.000Z.sql.gz`, or a folder whose newest backup is taken
    /// (e.g. `orders-mariadb/`). Defaults to this store's own folder, `NAME-ENGINE/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]*)?$') && !self.contains('..')",
        "message": "path must be FOLDER/ or FOLDER/FILE, such as orders-mariadb/ or orders-mariadb/20261206T030000.000Z.sql.gz (letters, digits, '.', '_', '-'; no '..')"
    }]))]
    pub path: Option<String>,
}

impl RestoreFrom {
    /// Where the backup is; `None` when the spec names no place (the CRD refuses that).
    pub fn location(&self) -> Option<BackupLocation<'_>> {
        BackupLocation::of(self.persistent_volume_claim.as_ref(), self.s3.as_ref())
    }
}

/// When and where a store is backed up.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// When to back up, in UTC: five cron fields (`0 3 * * *` is 03:00 every day) or a macro
    /// such as `@hourly` or `@daily`.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')",
        "message": "schedule must be five cron fields such as '0 3 * * *' (minute hour day-of-month month day-of-week, in UTC) or a macro such as @hourly or @daily"
    }]))]
    pub schedule: String,
    /// How many complete backups to keep on the target: after each new one, the oldest beyond
    /// this number are deleted. Defaults to 7.
    #[serde(default = "default_backup_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: i32,
    /// Stop the scheduled backups (on-demand ones still run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Where the backups are written.
    pub target: BackupTarget,
}

/// Default of `backup.keep`.
pub fn default_backup_keep() -> i32 {
    7
}

/// Where a store's backups are written: a volume claim or an S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.persistentVolumeClaim) != has(self.s3)",
    "message": "backup.target must name exactly one of persistentVolumeClaim or s3"
}]))]
pub struct BackupTarget {
    /// An existing PersistentVolumeClaim in the Microservice's namespace. Backups go under
    /// `NAME-ENGINE/` on it (e.g. `orders-mariadb/20261206T030000.000Z.sql.gz`), so one claim
    /// can hold the backups of several stores. It is never deleted with the Microservice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimTarget>,
    /// An existing bucket of an S3-compatible object store. Backups go under
    /// `PREFIX/NAME-ENGINE/`; the run writes each one on a scratch volume of the node first,
    /// then uploads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
}

impl BackupTarget {
    /// Where the backups go; `None` when the spec names no place (the CRD refuses that).
    pub fn location(&self) -> Option<BackupLocation<'_>> {
        BackupLocation::of(self.persistent_volume_claim.as_ref(), self.s3.as_ref())
    }
}

/// The one place a `backup.target` or a `restoreFrom` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupLocation<'a> {
    /// A folder tree on a volume claim.
    Claim(&'a ClaimTarget),
    /// Objects in a bucket.
    S3(&'a S3Target),
}

impl<'a> BackupLocation<'a> {
    fn of(claim: Option<&'a ClaimTarget>, s3: Option<&'a S3Target>) -> Option<Self> {
        match (claim, s3) {
            (Some(claim), None) => Some(Self::Claim(claim)),
            (None, Some(s3)) => Some(Self::S3(s3)),
            _ => None,
        }
    }
}

/// A bucket of an S3-compatible object store (AWS S3, MinIO, Ceph RGW, versitygw, ...),
/// addressed path-style (`ENDPOINT/BUCKET/KEY`), over HTTP or HTTPS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// The bucket's name; it must exist.
    #[schemars(length(min = 3, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9][a-z0-9.-]*[a-z0-9]$')",
        "message": "bucket must be an S3 bucket name: lowercase letters, digits, '.' and '-', 3 to 63 characters"
    }]))]
    pub bucket: String,
    /// The object store's URL: `https://s3.REGION.amazonaws.com` for AWS S3, or a server's
    /// such as `http://minio.storage.svc:9000` or `https://minio.example.com`. An `https://`
    /// endpoint's certificate must be signed by a public authority (the image's CA bundle)
    /// or by the one in `caSecretKeyRef`. The backup pods must be allowed to reach it.
    #[schemars(length(min = 8, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^https?://[^/?#\\\\s]+/?$')",
        "message": "endpoint must be an http:// or https:// URL with a host and no path, such as https://s3.eu-west-1.amazonaws.com or http://minio.storage.svc:9000"
    }]))]
    pub endpoint: String,
    /// The bucket's region. Defaults to `us-east-1`, which most S3-compatible servers accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,
    /// A folder of the bucket to put the backups under, e.g. `kea/backups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$') && !self.contains('..')",
        "message": "prefix must be folder names joined by '/', such as kea/backups (letters, digits, '.', '_', '-'; no '..')"
    }]))]
    pub prefix: Option<String>,
    /// The Secret key holding the access key id.
    pub access_key_id_secret_key_ref: SecretKeyRef,
    /// The Secret key holding the secret access key.
    pub secret_access_key_secret_key_ref: SecretKeyRef,
    /// A Secret key holding the PEM certificate(s) of the authority that signs an
    /// `https://` endpoint's certificate, for a server with a private CA; trusted beside the
    /// public authorities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_key_ref: Option<SecretKeyRef>,
}

impl S3Target {
    /// The object key prefix of the backups (`PREFIX/`, or empty).
    pub fn key_prefix(&self) -> String {
        match self.prefix.as_deref().map(|p| p.trim_end_matches('/')) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}/"),
            _ => String::new(),
        }
    }

    /// The TCP port of the endpoint (80 for an `http://` one without a port).
    pub fn port(&self) -> u16 {
        let endpoint = &self.endpoint;
        let (default, rest) = match endpoint.strip_prefix("http://") {
            Some(rest) => (80, rest),
            None => (443, endpoint.trim_start_matches("https://")),
        };
        let host = rest.split('/').next().unwrap_or_default();
        // The port follows the last ':' unless that is inside an IPv6 address's brackets.
        match host.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => port.parse().unwrap_or(default),
            _ => default,
        }
    }

    /// `s3://BUCKET/PREFIX/`, how statuses and messages name the place.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key_prefix())
    }
}

/// A key of a Secret in the Microservice's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",
        "message": "name must be the name of a Secret: lowercase letters, digits, '-' and '.'"
    }]))]
    pub name: String,
    /// The key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[-._a-zA-Z0-9]+$')",
        "message": "key must be a Secret data key: letters, digits, '-', '_' and '.'"
    }]))]
    pub key: String,
}

/// A PersistentVolumeClaim named as a backup target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimTarget {
    /// The claim's name.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",
        "message": "claimName must be the name of a PersistentVolumeClaim: lowercase letters, digits, '-' and '.'"
    }]))]
    pub claim_name: String,
}

/// The relational store.
pub type SqlStore = Store<SqlEngine>;
/// The NoSQL store.
pub type NosqlStore = Store<NosqlEngine>;

/// Relational engines.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SqlEngine {
    /// A dedicated MariaDB server (StatefulSet), reached through `DATABASE_URL`.
    Mariadb,
    /// An SQLite file on a volume of the service's own pod (one replica at most).
    Sqlite,
}

/// NoSQL engines.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NosqlEngine {
    /// A dedicated Redis server (StatefulSet) with append-only persistence, reached through
    /// `REDIS_URL`.
    Redis,
    /// A redb file on a volume of the service's own pod (one replica at most).
    Redb,
}

/// What happens to a store's data when its Microservice is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the volume and the Secret; a Microservice of the same name adopts them.
    #[default]
    Retain,
    /// Delete the volume and the Secret with the Microservice.
    Delete,
}

/// Default of a store's `size`.
pub fn default_store_size() -> String {
    "1Gi".to_owned()
}

impl SqlEngine {
    /// The engine's name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mariadb => "mariadb",
            Self::Sqlite => "sqlite",
        }
    }
}

impl NosqlEngine {
    /// The engine's name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Redb => "redb",
        }
    }
}

impl Stores {
    /// Whether a store lives in the service's own pod (so the pod cannot be replicated).
    pub fn has_embedded(&self) -> bool {
        self.sql
            .as_ref()
            .is_some_and(|s| s.engine == SqlEngine::Sqlite)
            || self
                .nosql
                .as_ref()
                .is_some_and(|s| s.engine == NosqlEngine::Redb)
    }
}

/// The three probes of the container, and what they share.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.path) || !has(self.type) || self.type == 'HTTP'",
    "message": "probes.path is the path of HTTP probes: remove it, or set probes.type to HTTP"
}]))]
pub struct Probes {
    /// How every probe checks the container, unless it sets its own `type`: `HTTP` (the
    /// default: GET a path, 200-399 is healthy) or `TCP` (the port accepts a connection), for
    /// an image with no health route.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ProbeType>,
    /// The path of every HTTP probe that sets none of its own, e.g. `/` for an image that
    /// serves only its pages. Without it: `/healthz` for liveness and startup, `/readyz` for
    /// readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "probes.path must start with '/', e.g. /"
    }]))]
    pub path: Option<String>,
    /// Restarts the container when it fails. Defaults to `GET /healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeSpec>,
    /// Takes the pod out of the Service endpoints when it fails. Defaults to `GET /readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeSpec>,
    /// Holds back the other probes until the service has started. Off unless set; its path
    /// defaults to `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeSpec>,
}

/// One probe on the container's `http` port. Unset fields keep their defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.path) || !has(self.type) || self.type == 'HTTP'",
    "message": "a TCP probe has no path: remove path, or set type to HTTP"
}]))]
pub struct ProbeSpec {
    /// Set to false to switch this probe off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `HTTP` or `TCP`; defaults to `probes.type`, else `HTTP`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ProbeType>,
    /// HTTP path to GET, starting with `/`; defaults to `probes.path`, else the probe's own
    /// default. A status from 200 to 399 counts as success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "probe path must start with '/', e.g. /healthz"
    }]))]
    pub path: Option<String>,
    /// Seconds between two probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: Option<i32>,
    /// Consecutive failures before the probe counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: Option<i32>,
    /// Seconds before one probe request times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
    /// Seconds after the container started before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
}

/// How a probe checks the container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProbeType {
    /// An HTTP GET of the probe's path; a status from 200 to 399 is healthy.
    #[serde(rename = "HTTP")]
    Http,
    /// A TCP connection to the port; accepted is healthy.
    #[serde(rename = "TCP")]
    Tcp,
}

/// A Microservice, in the same namespace, that this one calls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Name of the other Microservice (a DNS-1035 label, like every Service name).
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "message": "dependsOn name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
    }]))]
    pub name: String,
}

/// CPU-based autoscaling of the pods (a HorizontalPodAutoscaler, autoscaling/v2).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.minReplicas <= self.maxReplicas",
    "message": "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
}]))]
pub struct Autoscaling {
    /// Fewest pods. Defaults to 1.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU use to aim for, in percent of the CPU request. Defaults to 80.
    #[serde(
        default = "default_target_cpu",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: i32,
}

/// The `/data` volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    /// Most space the volume may use, e.g. `1Gi`; the pod is evicted past it. Unbounded when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    /// Set to `Memory` to back the volume by RAM (tmpfs); it then counts against the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<StorageMedium>,
}

/// Storage behind an emptyDir volume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StorageMedium {
    /// RAM (tmpfs).
    Memory,
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// On every container start.
    Always,
    /// Only when the node does not have the image.
    IfNotPresent,
    /// Never: the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling of the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// How the Service is exposed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    #[default]
    ClusterIP,
    /// Also a port on every node.
    NodePort,
    /// Also an external load balancer, where the cluster provides one.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The observed state of a Microservice, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroserviceStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods that exist (any version).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that run the current version of the spec.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Label selector of the pods, in the string form (used by the scale subresource and HPAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster URL of the Service, e.g. `http://orders.shop.svc.cluster.local:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Conditions: `Ready`, `Available`, `Progressing`, `DependenciesReady`, `StoresReady`,
    /// `Autoscaling` (with `spec.autoscaling`) and `Suspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The Microservices named in `spec.dependsOn`, as the operator last saw them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub dependencies: Vec<DependencyStatus>,
    /// The stores of `spec.stores`, as the operator last saw them. Never holds a credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub stores: Vec<StoreStatus>,
    /// What the NetworkPolicies let through; unset when the operator writes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    /// The last revision of the pods that was Ready: what a failed revision is rolled back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<StableRevision>,
    /// The revision that was rolled back, while the spec still asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// The canary under analysis: its revision and the numbers of the last check, beside the
    /// stable pods'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
}

/// A revision of the pods that was Ready.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StableRevision {
    /// A hash of the pod template.
    pub revision: String,
    /// The Microservice's `metadata.generation` it was made from.
    pub generation: i64,
    /// Its image.
    pub image: String,
    /// The Deployment's pod template, as applied.
    #[schemars(schema_with = "any_object")]
    pub template: serde_json::Value,
}

/// A revision that was rolled back, and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The hash of the pod template that failed.
    pub revision: String,
    /// The Microservice's `metadata.generation` it was made from.
    pub generation: i64,
    /// Its image.
    pub image: String,
    /// The revision the pods went back to.
    pub to_revision: String,
    /// Why, in a word: `ProgressDeadlineExceeded` or `CanaryAnalysisFailed`.
    #[serde(default = "default_rolled_back_reason")]
    pub reason: String,
    /// Why, with what was seen of the failing pods or the numbers of the analysis.
    pub message: String,
}

fn default_rolled_back_reason() -> String {
    conditions::reasons::PROGRESS_DEADLINE_EXCEEDED.to_owned()
}

/// A canary under analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The hash of its pod template.
    pub revision: String,
    /// Its image.
    pub image: String,
    /// Passed checks in a row.
    pub passed_checks: i32,
    /// Failed checks.
    pub failed_checks: i32,
    /// What the canary answered in the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<TrafficSample>,
    /// What the stable pods answered in the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<TrafficSample>,
    /// The last check, in words.
    pub message: String,
}

/// What a group of pods answered between two checks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSample {
    /// Answers given.
    pub requests: u64,
    /// Percentage of them below 500.
    pub success_percent: f64,
    /// 99th percentile of their latency, in milliseconds (from the histogram's buckets).
    pub p99_milliseconds: f64,
}

/// A schema for an object kept as it is (a pod template, whose full schema would weigh more
/// than the rest of the CRD).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// What the operator knows of one store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// `sql` or `nosql`.
    pub name: String,
    /// The engine, e.g. `mariadb`.
    pub engine: String,
    /// Whether the store can be used: its server is ready, or its volume is bound.
    pub ready: bool,
    /// Where a server engine listens (`HOST:PORT`); empty for an embedded engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The PersistentVolumeClaim that holds the data.
    pub volume: String,
    /// What happens to the data when the Microservice is deleted.
    pub deletion_policy: DeletionPolicy,
    /// `Ready`, or why the store is not ready (e.g. `StorageClassNotFound`, `VolumeNotBound`,
    /// `ImagePullBackOff`, `StorePodNotReady`).
    pub reason: String,
    /// Details of the reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Its backups, when `backup` is declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// What the operator knows of one store's backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Where the backups go, e.g. `pvc://backups/orders-mariadb/`.
    pub target: String,
    /// `BackupSucceeded` (the last run succeeded), `BackupFailed`, `BackupTargetNotFound`,
    /// `BackupCannotRun` (a run's pod waits for something it cannot get), or `NoBackupYet`.
    pub reason: String,
    /// Details of the reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the last successful backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// Where the last successful backup is, e.g.
    /// `pvc://backups/orders-mariadb/20261206T030000.000Z.sql.gz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_location: Option<String>,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_size_bytes: Option<i64>,
    /// When the last failed run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// The last value of the annotation `kea.dev/backup-requested` a Job was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
}

/// What the operator knows of one dependency.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyStatus {
    /// Name of the Microservice depended on.
    pub name: String,
    /// The URL injected as `<NAME>_URL`.
    pub url: String,
    /// Whether that Microservice exists and is Ready.
    pub ready: bool,
    /// Why it is not ready (`NotFound`, `NotReady`), or `Ready`.
    pub reason: String,
}

/// Condition types and reasons reported in `status.conditions`.
///
/// Semantics, in short:
/// - `Ready`: the current spec is fully rolled out and every wanted pod is available. A
///   suspended Microservice is not Ready (reason `Suspended`). Missing dependencies do not
///   make it unready: they have their own condition, and a service is expected to degrade
///   gracefully while a dependency is down.
/// - `Available`: at least the minimum number of pods serve (the Deployment's `Available`).
/// - `Progressing`: a rollout is under way (`True`), finished (`False`, `RolloutComplete`) or
///   stuck (`False`, `ProgressDeadlineExceeded`).
/// - `DependenciesReady`: every Microservice in `dependsOn` exists and is Ready.
/// - `StoresReady`: every store of `spec.stores` can be used (its server is ready, its volume
///   is bound). `Ready` requires it: a service without its data is not ready.
/// - `Autoscaling` (with `spec.autoscaling` only): the HorizontalPodAutoscaler's own
///   `ScalingActive`; False when it cannot read the pods' CPU.
/// - `Suspended`: `spec.suspend` is true.
/// - `Reconciled` (only while it fails): False when the last attempt to apply the children
///   failed: the API server refused an object (`ChildRejected`), the operator lacks a
///   permission (`Forbidden`), an object of that name is someone else's (`ChildConflict`), or
///   the API server could not be used (`ApiError`); the message is the API server's. `Ready`
///   is False with the same reason, and the operator retries with a backoff.
pub mod conditions {
    /// Condition type: the Microservice serves its current spec with every wanted pod.
    pub const READY: &str = "Ready";
    /// Condition type: the minimum number of pods are available.
    pub const AVAILABLE: &str = "Available";
    /// Condition type: a rollout is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Condition type: all dependencies exist and are ready.
    pub const DEPENDENCIES_READY: &str = "DependenciesReady";
    /// Condition type: `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// Condition type: every store of `spec.stores` can be used.
    pub const STORES_READY: &str = "StoresReady";
    /// Condition type (only with `spec.autoscaling`): the autoscaler reads the pods' CPU and
    /// scales; its own `ScalingActive` condition, e.g. False with `FailedGetResourceMetric`
    /// when the cluster serves no metrics.
    pub const AUTOSCALING: &str = "Autoscaling";
    /// Condition type (only while it fails): the last attempt to apply the children failed.
    pub const RECONCILED: &str = "Reconciled";
    /// Condition type (only while it holds): the revision the spec asks for made no progress
    /// in time, and the pods run the last revision that was Ready.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Condition type: the last run of every store's backups succeeded (present only when a
    /// store declares `backup`).
    pub const BACKED_UP: &str = "BackedUp";

    /// Reasons used in the conditions above.
    pub mod reasons {
        /// All wanted pods run the current spec and are available.
        pub const READY: &str = "Ready";
        /// The API server refused a child object (invalid, or denied by an admission policy).
        pub const CHILD_REJECTED: &str = "ChildRejected";
        /// The operator lacks a permission it needs for a child.
        pub const FORBIDDEN: &str = "Forbidden";
        /// A child's name is taken by an object the Microservice does not own.
        pub const CHILD_CONFLICT: &str = "ChildConflict";
        /// The API server failed or could not be reached.
        pub const API_ERROR: &str = "ApiError";
        /// The Microservice is scaled to zero by `spec.suspend`.
        pub const SUSPENDED: &str = "Suspended";
        /// `spec.suspend` is false.
        pub const ACTIVE: &str = "Active";
        /// The Deployment does not exist yet.
        pub const DEPLOYMENT_PENDING: &str = "DeploymentPending";
        /// A rollout is under way.
        pub const ROLLING_OUT: &str = "RollingOut";
        /// The last rollout finished.
        pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
        /// The rollout made no progress within the Deployment's deadline.
        pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
        /// One pod of the new revision runs beside the stable ones and is being compared.
        pub const CANARY_ANALYSIS: &str = "CanaryAnalysis";
        /// The canary answered worse than the stable pods in its analysis.
        pub const CANARY_ANALYSIS_FAILED: &str = "CanaryAnalysisFailed";
        /// Enough pods are available.
        pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
        /// Too few pods are available.
        pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
        /// `dependsOn` is empty.
        pub const NO_DEPENDENCIES: &str = "NoDependencies";
        /// Every dependency is ready.
        pub const DEPENDENCIES_READY: &str = "DependenciesReady";
        /// A dependency does not exist.
        pub const DEPENDENCY_MISSING: &str = "DependencyMissing";
        /// A dependency exists but is not ready.
        pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
        /// The HorizontalPodAutoscaler has not reported its state yet.
        pub const AUTOSCALER_PENDING: &str = "AutoscalerPending";
        /// `spec.stores` is empty: the service keeps ephemeral embedded stores.
        pub const NO_STORES: &str = "NoStores";
        /// Every store is ready.
        pub const STORES_READY: &str = "StoresReady";
        /// A store's volume names a StorageClass that does not exist.
        pub const STORAGE_CLASS_NOT_FOUND: &str = "StorageClassNotFound";
        /// A store's PersistentVolumeClaim is not bound to a volume (yet).
        pub const VOLUME_NOT_BOUND: &str = "VolumeNotBound";
        /// A store's size was raised and its claim's StorageClass cannot expand volumes.
        pub const VOLUME_CANNOT_GROW: &str = "VolumeCannotGrow";
        /// A store's server pod exists but is not ready.
        pub const STORE_POD_NOT_READY: &str = "StorePodNotReady";
        /// A store's server has no pod yet.
        pub const STORE_PENDING: &str = "StorePending";
        /// An object the store needs exists and belongs to someone else.
        pub const STORE_CONFLICT: &str = "StoreConflict";
        /// The last backup of every store with `backup` succeeded.
        pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
        /// A store's last backup failed; the message says why.
        pub const BACKUP_FAILED: &str = "BackupFailed";
        /// A store's backup target (its PersistentVolumeClaim) does not exist.
        pub const BACKUP_TARGET_NOT_FOUND: &str = "BackupTargetNotFound";
        /// A backup run's pod cannot run (its image, a missing Secret, no node); the
        /// message names the Job and says why.
        pub const BACKUP_CANNOT_RUN: &str = "BackupCannotRun";
        /// A store with `backup` has not been backed up yet.
        pub const NO_BACKUP_YET: &str = "NoBackupYet";
        /// The spec cannot be turned into children (it passed the schema but not the
        /// operator's own checks); the message says what to fix.
        pub const INVALID_SPEC: &str = "InvalidSpec";
    }
}

/// Reasons of one entry of `status.dependencies`.
pub mod dependency_reasons {
    /// The dependency exists and is Ready.
    pub const READY: &str = "Ready";
    /// The dependency exists and is not Ready.
    pub const NOT_READY: &str = "NotReady";
    /// No Microservice of that name in the namespace.
    pub const NOT_FOUND: &str = "NotFound";
}

/// The Kubernetes Events the operator records on a Microservice (`kubectl describe ms`,
/// `kubectl get events --field-selector reason=...`). A failure to apply is recorded with
/// the `Reconciled` condition's reason (e.g. `ChildRejected`, `Forbidden`).
pub mod events {
    /// Event reasons.
    pub mod reasons {
        /// `Ready` turned True.
        pub const READY: &str = "Ready";
        /// `Ready` turned False, or its reason changed.
        pub const NOT_READY: &str = "NotReady";
        /// The spec cannot be turned into children.
        pub const INVALID_SPEC: &str = "InvalidSpec";
        /// `spec.suspend` scaled the Microservice to zero.
        pub const SUSPENDED: &str = "Suspended";
        /// A Microservice named in `dependsOn` does not exist (any more).
        pub const DEPENDENCY_MISSING: &str = "DependencyMissing";
        /// Every store turned ready.
        pub const STORES_READY: &str = "StoresReady";
        /// A store turned unusable, or its reason changed.
        pub const STORES_NOT_READY: &str = "StoresNotReady";
        /// Children of an existing Microservice were created or changed (a new one gets
        /// none: its status tells it).
        pub const APPLIED: &str = "Applied";
        /// Children no longer wanted were deleted.
        pub const DELETED: &str = "Deleted";
        /// A revision made no progress in time; the pods went back to the stable one.
        pub const ROLLED_BACK: &str = "RolledBack";
        /// The canary passed its analysis; its revision replaces the stable pods.
        pub const PROMOTED: &str = "Promoted";
        /// The last backup of every store with `backup` succeeded (again).
        pub const BACKED_UP: &str = "BackedUp";
        /// A backup failed, or cannot run (its target is missing); the note says why.
        pub const BACKUP_FAILED: &str = "BackupFailed";
    }

    /// Event actions: what the operator was doing.
    pub mod actions {
        /// Computing the status.
        pub const RECONCILE: &str = "Reconcile";
        /// Applying children.
        pub const APPLY: &str = "Apply";
        /// Deleting children.
        pub const DELETE: &str = "Delete";
    }
}

/// Default of `spec.replicas`.
pub fn default_replicas() -> i32 {
    1
}

/// Default of `spec.port`.
pub fn default_port() -> i32 {
    i32::from(kea_contract::DEFAULT_PORT)
}

/// Default of `spec.deregistrationSeconds`.
pub fn default_deregistration_seconds() -> i32 {
    5
}

/// Default of `spec.drainSeconds`.
pub fn default_drain_seconds() -> i32 {
    5
}

fn default_min_replicas() -> i32 {
    1
}

fn default_target_cpu() -> i32 {
    80
}

impl MicroserviceSpec {
    /// A spec with the given image and every other field at its default.
    pub fn with_image(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            replicas: default_replicas(),
            port: default_port(),
            run_as_user: None,
            env: Vec::new(),
            env_from: Vec::new(),
            resources: None,
            probes: None,
            depends_on: Vec::new(),
            autoscaling: None,
            suspend: false,
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            service_type: ServiceType::default(),
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            deregistration_seconds: default_deregistration_seconds(),
            drain_seconds: default_drain_seconds(),
            data_volume: None,
            stores: None,
            network: None,
            rollout: None,
        }
    }
}
