//! `kea-operator render FILE`: the children of the Microservices in a YAML file, printed as
//! a multi-document YAML stream. No cluster needed; dependencies get the default port.

use serde::Serialize;

use crate::api::Microservice;
use crate::builders::{Children, DependencyPorts, Settings, build_children};
use crate::error::{Error, Result};
use crate::stores::StoreObjects;
use crate::validate;

/// Namespace used for a Microservice that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Parses one or more Microservices (a multi-document YAML stream) and renders their children.
/// Spec problems that the API server would not catch are reported as an error.
pub fn render_yaml(input: &str) -> Result<String> {
    let microservices: Vec<Microservice> = serde_saphyr::from_multiple(input)
        .map_err(|err| Error::Serialization(format!("not a Microservice: {err}")))?;
    if microservices.is_empty() {
        return Err(Error::Serialization("no Microservice in the input".into()));
    }
    let mut documents = Vec::new();
    for mut ms in microservices {
        if ms.metadata.namespace.is_none() {
            ms.metadata.namespace = Some(DEFAULT_NAMESPACE.to_owned());
        }
        let problems = validate::spec_problems(&ms.spec);
        if !problems.is_empty() {
            return Err(Error::InvalidSpec(problems.join("; ")));
        }
        documents.extend(children_as_values(build_children(
            &ms,
            &DependencyPorts::new(),
            &Settings::default(),
        )?)?);
    }
    to_yaml_stream(&documents)
}

/// The children in a fixed order: Deployment, Service, PodDisruptionBudget, HPA, the
/// NetworkPolicies, then each store's StatefulSet and Service, or claim. A server store's Secret is not rendered: its
/// credentials are generated in the cluster, once, when the operator first creates it.
pub fn children_as_values(children: Children) -> Result<Vec<serde_json::Value>> {
    let mut values = vec![
        serde_json::to_value(&children.deployment)?,
        serde_json::to_value(&children.service)?,
    ];
    if let Some(pdb) = &children.pod_disruption_budget {
        values.push(serde_json::to_value(pdb)?);
    }
    if let Some(hpa) = &children.horizontal_pod_autoscaler {
        values.push(serde_json::to_value(hpa)?);
    }
    for policy in &children.network_policies {
        values.push(serde_json::to_value(policy)?);
    }
    for store in &children.stores {
        match &store.objects {
            StoreObjects::Server(_, server) => {
                values.push(serde_json::to_value(&server.stateful_set)?);
                values.push(serde_json::to_value(&server.service)?);
            }
            StoreObjects::Embedded(claim) => values.push(serde_json::to_value(claim)?),
        }
    }
    Ok(values)
}

/// Serializes values as a multi-document YAML stream.
pub fn to_yaml_stream<T: Serialize>(documents: &[T]) -> Result<String> {
    serde_saphyr::to_string_multiple(documents).map_err(|err| Error::Serialization(err.to_string()))
}

/// Serializes one value as YAML.
pub fn to_yaml<T: Serialize>(document: &T) -> Result<String> {
    serde_saphyr::to_string(document).map_err(|err| Error::Serialization(err.to_string()))
}
