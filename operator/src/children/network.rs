//! Pure builders of the network boundaries of a Microservice (networking.k8s.io/v1
//! NetworkPolicies): only declared calls get through.
//!
//! - Its pods accept connections on its port only from the pods of Microservices that list it
//!   in `dependsOn`, and from the peers of `spec.network.allowFrom`. A caller's pods carry the
//!   label `calls.kea.dev/<NAME>` for each dependency, so the policy needs no list of callers
//!   and is right the moment a caller's pods start.
//! - Each store server accepts connections only from its owner's pods (and its backups').
//! - With `spec.network.restrictEgress`, its pods may only open connections to the cluster's
//!   DNS, to the pods of its dependencies and to its own stores.
//!
//! Kubelet probes come from the node, which NetworkPolicy implementations let through.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{BackupLocation, Microservice, default_port};
use crate::children::backup;
use crate::children::meta::{DependencyPorts, selector_labels};
use crate::children::stores::{Engine, PlannedStore, selector_labels as store_selector_labels};

/// Prefix of the pod label that marks a caller of a Microservice: `calls.kea.dev/<NAME>`.
pub const CALLS_LABEL_PREFIX: &str = "calls.kea.dev/";

/// The label a caller's pods carry for its dependency `dependency`.
pub fn calls_label(dependency: &str) -> String {
    format!("{CALLS_LABEL_PREFIX}{dependency}")
}

/// The labels a Microservice's pods carry for its dependencies.
pub fn caller_labels(ms: &Microservice) -> BTreeMap<String, String> {
    ms.spec
        .depends_on
        .iter()
        .map(|d| (calls_label(&d.name), "true".to_owned()))
        .collect()
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The labels of the operator's pods (its chart and deploy/ set them).
pub const OPERATOR_POD_LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/part-of", "kea"),
    ("app.kubernetes.io/component", "operator"),
];

/// The operator's pods, in its namespace.
fn operator_pods(namespace: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                namespace.to_owned(),
            )])),
            ..Default::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(
                OPERATOR_POD_LABELS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The NetworkPolicy of a Microservice's own pods.
pub fn service_policy(
    ms: &Microservice,
    metadata: ObjectMeta,
    dependency_ports: &DependencyPorts,
    stores: &[PlannedStore],
    operator_namespace: Option<&str>,
) -> NetworkPolicy {
    let name = metadata.name.clone().unwrap_or_default();
    let network = ms.spec.network.clone().unwrap_or_default();
    let mut from = vec![pods(BTreeMap::from([(
        calls_label(&name),
        "true".to_owned(),
    )]))];
    from.extend(network.allow_from.iter().cloned());
    // The backup Jobs of its embedded stores fetch their copies from the service itself.
    from.extend(
        stores
            .iter()
            .filter(|store| matches!(store.engine, Engine::Embedded(_)) && store.backup.is_some())
            .map(|store| pods(backup::selector_labels(store))),
    );
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![tcp_port(ms.spec.port)]),
    }];
    // The operator reads the pods' /metrics for the canary's analysis, on the same port.
    if let Some(namespace) = operator_namespace {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![operator_pods(namespace)]),
            ports: Some(vec![tcp_port(ms.spec.port)]),
        });
    }
    let mut policy_types = vec!["Ingress".to_owned()];
    let egress = network.restrict_egress.then(|| {
        policy_types.push("Egress".to_owned());
        egress_rules(ms, dependency_ports, stores)
    });
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            }),
            policy_types: Some(policy_types),
            ingress: Some(ingress),
            egress,
        }),
    }
}

/// DNS, each dependency on its port, each own store server on its port.
fn egress_rules(
    ms: &Microservice,
    dependency_ports: &DependencyPorts,
    stores: &[PlannedStore],
) -> Vec<NetworkPolicyEgressRule> {
    let mut rules = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "k8s-app".to_owned(),
                    "kube-dns".to_owned(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".to_owned()),
                ..Default::default()
            },
            tcp_port(53),
        ]),
    }];
    for dependency in &ms.spec.depends_on {
        let port = dependency_ports
            .get(&dependency.name)
            .copied()
            .unwrap_or_else(default_port);
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![pods(selector_labels(&dependency.name))]),
            ports: Some(vec![tcp_port(port)]),
        });
    }
    for store in stores {
        if let Engine::Server(engine) = store.engine {
            rules.push(NetworkPolicyEgressRule {
                to: Some(vec![pods(store_selector_labels(store))]),
                ports: Some(vec![tcp_port(engine.port())]),
            });
        }
        // An embedded store's restore downloads from its bucket in the service's pod. A
        // policy cannot name a host: the bucket's port is open to any address.
        if let (Engine::Embedded(_), Some(from)) = (store.engine, &store.restore_from)
            && let Some(BackupLocation::S3(s3)) = from.location()
        {
            rules.push(NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![tcp_port(i32::from(s3.port()))]),
            });
        }
    }
    rules
}

/// The NetworkPolicy of a store server: only its owner's pods reach it, and its backup pods
/// when it has backups.
pub fn store_policy(
    owner: &str,
    store: &PlannedStore,
    metadata: ObjectMeta,
) -> Option<NetworkPolicy> {
    let Engine::Server(engine) = store.engine else {
        return None;
    };
    let mut from = vec![pods(selector_labels(owner))];
    if store.backup.is_some() {
        from.push(pods(backup::selector_labels(store)));
    }
    Some(NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(store_selector_labels(store)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![tcp_port(engine.port())]),
            }]),
            egress: None,
        }),
    })
}

/// One line for the status: what the policies let in and out.
pub fn summary(ms: &Microservice) -> String {
    let network = ms.spec.network.clone().unwrap_or_default();
    let name = ms.metadata.name.clone().unwrap_or_default();
    let mut text = format!(
        "ingress on port {} only from Microservices that list {name} in dependsOn (pods labelled {})",
        ms.spec.port,
        calls_label(&name)
    );
    if !network.allow_from.is_empty() {
        text.push_str(&format!(
            " and {} allowFrom peer(s)",
            network.allow_from.len()
        ));
    }
    if network.restrict_egress {
        let dependencies: Vec<&str> = ms.spec.depends_on.iter().map(|d| d.name.as_str()).collect();
        text.push_str(&format!(
            "; egress only to DNS, {} and its own stores",
            if dependencies.is_empty() {
                "no dependency".to_owned()
            } else {
                dependencies.join(", ")
            }
        ));
    }
    text
}
