//! `kea-operator render FILE`: the children of the Microservices in a YAML file, printed as
//! a multi-document YAML stream. No cluster needed; dependencies get the default port.

use serde::Serialize;

use kea_operator::api::Microservice;
use kea_operator::api::validate;
use kea_operator::children::meta::DependencyPorts;
use kea_operator::children::stores::StoreObjects;
use kea_operator::children::{Children, Settings, build_children};
use kea_operator::error::{Error, Result};

/// Namespace used for a Microservice that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Parses a multi-document YAML stream and renders the children of its Microservices; other
/// objects (a Namespace, say, as in `deploy/examples/`) are skipped. Spec problems that the
/// API server would not catch are reported as an error.
pub fn render_yaml(input: &str) -> Result<String> {
    let microservices = microservices_in(input)?;
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

/// The Microservices of a YAML stream, in order; an error names the document that is not
/// YAML or not a valid Microservice, or says that there is none.
pub fn microservices_in(input: &str) -> Result<Vec<Microservice>> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(input)
        .map_err(|err| Error::Serialization(format!("not YAML: {err}")))?;
    let mut microservices = Vec::new();
    let mut skipped = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = document["apiVersion"].as_str().unwrap_or_default();
        if document.is_null() {
            continue;
        }
        if kind != "Microservice" || !api_version.starts_with("kea.dev/") {
            skipped.push(if kind.is_empty() {
                "an object without kind".to_owned()
            } else {
                kind
            });
            continue;
        }
        let ms: Microservice = serde_json::from_value(document).map_err(|err| {
            Error::Serialization(format!(
                "document {}: not a valid Microservice: {err}",
                index + 1
            ))
        })?;
        microservices.push(ms);
    }
    if microservices.is_empty() {
        let found = if skipped.is_empty() {
            "nothing".to_owned()
        } else {
            skipped.join(", ")
        };
        return Err(Error::Serialization(format!(
            "no Microservice (apiVersion kea.dev/v1alpha1, kind Microservice) in the input; found {found}"
        )));
    }
    Ok(microservices)
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
        if let Some(cron_job) = &store.backup {
            values.push(serde_json::to_value(cron_job)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "apiVersion: kea.dev/v1alpha1\nkind: Microservice\nmetadata:\n  name: users\nspec:\n  image: kea.dev/kea-service:dev\n";

    #[test]
    fn other_objects_in_the_stream_are_skipped() {
        let input = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n{EXAMPLE}---\n"
        );
        let found = microservices_in(&input).unwrap();
        assert_eq!(found.len(), 1);
        assert!(render_yaml(&input).unwrap().contains("kind: Deployment"));
    }

    #[test]
    fn a_stream_without_microservices_or_a_broken_one_says_what_is_wrong() {
        let none = microservices_in("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
            .unwrap_err()
            .to_string();
        assert!(none.contains("found Namespace"), "{none}");
        let broken = microservices_in(&format!(
            "{EXAMPLE}---\n{}",
            EXAMPLE.replace("image: kea.dev/kea-service:dev", "replicas: many")
        ))
        .unwrap_err()
        .to_string();
        assert!(
            broken.contains("document 2: not a valid Microservice"),
            "{broken}"
        );
    }

    #[test]
    fn the_example_system_renders_as_one_stream() {
        let examples =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples"))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
                .map(|path| std::fs::read_to_string(path).unwrap())
                .collect::<Vec<_>>()
                .join("---\n");
        assert_eq!(microservices_in(&examples).unwrap().len(), 3);
    }
}
