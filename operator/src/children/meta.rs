//! What every child of a Microservice shares: the field manager, the labels and selectors,
//! the owner, the names of store objects, and the security contexts that pass the Pod
//! Security Standard `restricted`. The leaf of [`crate::children`]: it imports none of its
//! siblings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::Microservice;
use crate::error::{Error, Result};

/// Name of the field manager for server-side apply, and value of `app.kubernetes.io/managed-by`.
pub const MANAGER: &str = "kea-operator";
/// Label keys of the standard Kubernetes label set.
pub mod labels {
    /// The application name (the Microservice name); part of the pod selector.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The instance (the Microservice name); part of the pod selector.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// The role of the object within the application.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The larger application this one is part of.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// The tool that manages the object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

/// The ports of the dependencies that exist, by name. A dependency that is not in the map
/// gets the default port, so its URL is right as soon as it is created with the default.
pub type DependencyPorts = BTreeMap<String, i32>;

/// The in-cluster URL of a Service: `http://NAME.NAMESPACE.svc.cluster.local`, with `:PORT`
/// unless the port is 80.
pub fn service_url(name: &str, namespace: &str, port: i32) -> String {
    if port == 80 {
        format!("http://{name}.{namespace}.svc.cluster.local")
    } else {
        format!("http://{name}.{namespace}.svc.cluster.local:{port}")
    }
}

/// The labels that select the pods of a Microservice. They never change for a given name,
/// because a Deployment's selector is immutable.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), name.to_owned()),
        (labels::INSTANCE.to_owned(), name.to_owned()),
    ])
}

/// The pod selector in its string form, as the scale subresource reports it.
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod security context that passes the Pod Security Standard `restricted`: non-root with
/// the numeric `uid` (as user, group and volume group), seccomp `RuntimeDefault`.
pub fn restricted_pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container security context for `restricted`: no privilege escalation, no capabilities,
/// a read-only root filesystem.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

/// The name of a store object of the Microservice `owner`: `{owner}-{engine}` (the server's
/// StatefulSet, Service, Secret and NetworkPolicy; the embedded store's claim).
pub fn store_object_name(owner: &str, engine: &str) -> String {
    format!("{owner}-{engine}")
}

/// Facts shared by all children of one Microservice.
pub struct BuildContext {
    /// The Microservice's name, also the name of its Deployment, Service and friends.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The labels of every child.
    pub labels: BTreeMap<String, String>,
    /// The controller ownerReference to the Microservice (None when rendering from a file).
    pub owner: Option<OwnerReference>,
}

impl BuildContext {
    /// The context of `ms`; fails when it has no namespace.
    pub fn new(ms: &Microservice) -> Result<Self> {
        let name = ms.name_any();
        let namespace = ms
            .namespace()
            .ok_or_else(|| Error::InvalidObject(format!("Microservice {name} has no namespace")))?;
        let part_of = ms
            .labels()
            .get(labels::PART_OF)
            .cloned()
            .unwrap_or_else(|| namespace.clone());
        let mut labels = selector_labels(&name);
        labels.insert(labels::COMPONENT.to_owned(), "microservice".to_owned());
        labels.insert(labels::PART_OF.to_owned(), part_of);
        labels.insert(labels::MANAGED_BY.to_owned(), MANAGER.to_owned());
        Ok(Self {
            owner: ms.controller_owner_ref(&()),
            name,
            namespace,
            labels,
        })
    }

    /// The metadata of a child named after the Microservice.
    pub fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            owner_references: self.owner.clone().map(|owner| vec![owner]),
            ..Default::default()
        }
    }

    /// The selector of the Microservice's pods.
    pub fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(selector_labels(&self.name)),
            ..Default::default()
        }
    }
}
