//! The permissions the operator needs, from one table, printed by `kea-operator rbac` as a
//! ClusterRole (everything the controller does) and a Role (the leader Lease, in the
//! operator's own namespace); with `--watch-namespace`, the namespaced permissions become a
//! Role in the watched namespace and the ClusterRole keeps only the cluster-scoped reads.
//! No wildcards. Secrets: the operator creates the stores' Secrets and sets their
//! ownerReferences, and watches Secrets for their versions (a change of one a Microservice's
//! environment reads rolls its pods); it asks for their metadata only, and never reads a
//! Secret's data.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One row of the permission table.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    /// API group ("" for the core group).
    pub group: &'static str,
    /// Resource (with `/subresource` where it applies).
    pub resource: &'static str,
    /// Verbs, each used by the operator.
    pub verbs: &'static [&'static str],
    /// Why the operator needs it.
    pub why: &'static str,
}

/// The verbs of a child the operator owns and deletes when the spec no longer wants it.
const OWN: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

impl Permission {
    const fn new(
        group: &'static str,
        resource: &'static str,
        verbs: &'static [&'static str],
        why: &'static str,
    ) -> Self {
        Self {
            group,
            resource,
            verbs,
            why,
        }
    }
}

/// The controller's permissions on namespaced objects, in every namespace it watches.
/// Server-side apply creates missing objects through PATCH; `create` is listed for that path.
#[rustfmt::skip]
pub const NAMESPACED_PERMISSIONS: &[Permission] = &[
    Permission::new("kea.dev", "microservices", &["get", "list", "watch"],
        "watch the custom resources"),
    Permission::new("kea.dev", "microservices/status", &["get", "patch"],
        "write the status subresource (server-side apply)"),
    Permission::new("apps", "deployments", OWN,
        "own the Deployment (server-side apply; deleted by garbage collection) and the canary's, deleted when it is promoted or reverted"),
    Permission::new("", "services", OWN,
        "own the Services of the Microservice and of its stores (server-side apply)"),
    Permission::new("policy", "poddisruptionbudgets", OWN,
        "own the PodDisruptionBudget, deleted when one pod is wanted"),
    Permission::new("autoscaling", "horizontalpodautoscalers", OWN,
        "own the HorizontalPodAutoscaler, deleted when autoscaling is removed"),
    Permission::new("", "pods", &["get", "list"],
        "read why pods fail (image pull, crash loop) when a Deployment or a store server is not available; find the canary's and the stable pods' addresses for the canary's analysis"),
    Permission::new("apps", "statefulsets", OWN,
        "own the stores' servers (server-side apply), deleted when a store is removed"),
    Permission::new("batch", "cronjobs", OWN,
        "own the stores' backup schedules (server-side apply), deleted when backup is removed"),
    Permission::new("batch", "jobs", &["list", "watch", "create"],
        "start on-demand backups (kea.dev/backup-requested) and read how each backup run ended"),
    Permission::new("networking.k8s.io", "networkpolicies", OWN,
        "own the network boundaries of the pods and store servers, deleted when switched off"),
    Permission::new("", "secrets", &["get", "list", "watch", "create", "patch"],
        "create the stores' credentials once (afterwards only their ownerReferences follow deletionPolicy); watch the versions (metadata only) of those the pods' environment reads"),
    Permission::new("", "configmaps", &["list", "watch"],
        "watch the versions (metadata only) of the ConfigMaps the pods' environment reads, to roll the pods when one changes"),
    Permission::new("", "persistentvolumeclaims", &["get", "create", "patch"],
        "create the embedded stores' volumes once, read why a store's volume does not bind, and grow a volume whose size was raised"),
    Permission::new("", "events", &["list"],
        "read why a store's volume does not bind and why pods fail their probes (the provisioner's and kubelet's events)"),
    Permission::new("events.k8s.io", "events", &["create", "patch"],
        "record events on Microservices"),
];

/// The controller's reads of cluster-scoped objects (no namespace to confine them to).
#[rustfmt::skip]
pub const CLUSTER_SCOPED_PERMISSIONS: &[Permission] = &[
    Permission::new("storage.k8s.io", "storageclasses", &["get"],
        "report a store whose StorageClass does not exist, and whether a store's volume can grow"),
];

/// Permissions in the operator's own namespace.
#[rustfmt::skip]
pub const NAMESPACE_PERMISSIONS: &[Permission] = &[
    Permission::new("coordination.k8s.io", "leases", &["get", "create", "update"],
        "leader election"),
];

/// Name of the ClusterRole and of the Role.
pub const ROLE_NAME: &str = "kea-operator";

/// The RBAC rules that grant `permissions`.
pub fn rules(permissions: &[Permission]) -> Vec<PolicyRule> {
    permissions
        .iter()
        .map(|p| PolicyRule {
            api_groups: Some(vec![p.group.to_owned()]),
            resources: Some(vec![p.resource.to_owned()]),
            verbs: p.verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        })
        .collect()
}

fn named_cluster_role(rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(ROLE_NAME.to_owned()),
            ..Default::default()
        },
        rules: Some(rules),
        ..Default::default()
    }
}

fn named_role(namespace: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(ROLE_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        rules: Some(rules),
    }
}

/// The ClusterRole of a controller that watches every namespace: all its permissions.
pub fn cluster_role() -> ClusterRole {
    let mut all = rules(NAMESPACED_PERMISSIONS);
    all.extend(rules(CLUSTER_SCOPED_PERMISSIONS));
    named_cluster_role(all)
}

/// The ClusterRole of a controller confined to one namespace: the cluster-scoped reads only.
pub fn cluster_scoped_role() -> ClusterRole {
    named_cluster_role(rules(CLUSTER_SCOPED_PERMISSIONS))
}

/// The Role of a controller confined to the namespace `watched`: everything it does there.
pub fn watched_namespace_role(watched: &str) -> Role {
    named_role(watched, rules(NAMESPACED_PERMISSIONS))
}

/// The Role for the leader Lease, in `namespace`.
pub fn lease_role(namespace: &str) -> Role {
    named_role(namespace, rules(NAMESPACE_PERMISSIONS))
}
