//! The ConfigMaps and Secrets a Microservice's environment reads (`env[].valueFrom`,
//! `envFrom`), and the pod template annotation that ties its pods to their versions: when one
//! of them changes, the annotation changes, and the Deployment rolls the pods as it would
//! for a new image (a container reads its environment only when it starts).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;

use crate::api::MicroserviceSpec;

/// The pod template annotation: the `resourceVersion` of each object the environment reads.
pub const CONFIG_VERSIONS: &str = "kea.dev/config-versions";

/// The kinds of object an environment reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

/// One object the environment reads, by kind and name (in the Microservice's namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

impl fmt::Display for ConfigRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/{}", self.kind, self.name)
    }
}

/// Each referenced object's `resourceVersion`; None for one that does not exist (yet).
pub type ConfigVersions = BTreeMap<ConfigRef, Option<String>>;

/// The ConfigMaps and Secrets that `spec.env` and `spec.envFrom` read.
pub fn references(spec: &MicroserviceSpec) -> BTreeSet<ConfigRef> {
    let config_map = |name: &str| ConfigRef {
        kind: ConfigKind::ConfigMap,
        name: name.to_owned(),
    };
    let secret = |name: &str| ConfigRef {
        kind: ConfigKind::Secret,
        name: name.to_owned(),
    };
    let from_env = spec
        .env
        .iter()
        .filter_map(|var| var.value_from.as_ref())
        .flat_map(|source| {
            let map = source
                .config_map_key_ref
                .as_ref()
                .map(|r| config_map(&r.name));
            let key = source.secret_key_ref.as_ref().map(|r| secret(&r.name));
            map.into_iter().chain(key)
        });
    let from_env_from = spec.env_from.iter().flat_map(|source| {
        let map = source.config_map_ref.as_ref().map(|r| config_map(&r.name));
        let key = source.secret_ref.as_ref().map(|r| secret(&r.name));
        map.into_iter().chain(key)
    });
    from_env.chain(from_env_from).collect()
}

/// Sets the annotation on the Deployment's pod template: `ConfigMap/settings@4711 Secret/key@4712`
/// (`@missing` for an object that does not exist). Without references, no annotation: the
/// pods of a Microservice that reads no ConfigMap or Secret never roll for this.
pub fn stamp(deployment: &mut Deployment, versions: &ConfigVersions) {
    if versions.is_empty() {
        return;
    }
    let value = versions
        .iter()
        .map(|(reference, version)| {
            format!("{reference}@{}", version.as_deref().unwrap_or("missing"))
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(template) = deployment
        .spec
        .as_mut()
        .and_then(|spec| spec.template.metadata.as_mut())
    {
        template
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(CONFIG_VERSIONS.to_owned(), value);
    }
}

/// The annotation [`stamp`] set on a Deployment's pod template, if any.
pub fn stamped(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_VERSIONS)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use kube::api::ObjectMeta;

    fn spec(fields: serde_json::Value) -> MicroserviceSpec {
        let mut value = serde_json::json!({"image": "img"});
        if let (Some(object), Some(extra)) = (value.as_object_mut(), fields.as_object()) {
            object.extend(extra.clone());
        }
        serde_json::from_value(value).expect("spec")
    }

    #[test]
    fn env_and_env_from_name_what_they_read() {
        let spec = spec(serde_json::json!({
            "env": [
                {"name": "A", "value": "literal"},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "b"}}},
                {"name": "C", "valueFrom": {"secretKeyRef": {"name": "api-key", "key": "c"}}},
                {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "E", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "e"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "flags"}}, {"secretRef": {"name": "tokens"}}],
        }));
        let found: Vec<String> = references(&spec).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "ConfigMap/flags",
                "ConfigMap/settings",
                "Secret/api-key",
                "Secret/tokens"
            ]
        );
        assert!(references(&self::spec(serde_json::json!({}))).is_empty());
    }

    #[test]
    fn the_annotation_lists_each_version_and_is_left_out_without_references() {
        let mut deployment = Deployment {
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta::default()),
                    spec: None,
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        stamp(&mut deployment, &ConfigVersions::new());
        assert_eq!(stamped(&deployment), None);
        let versions = ConfigVersions::from([
            (
                ConfigRef {
                    kind: ConfigKind::Secret,
                    name: "api-key".into(),
                },
                Some("12".into()),
            ),
            (
                ConfigRef {
                    kind: ConfigKind::ConfigMap,
                    name: "settings".into(),
                },
                None,
            ),
        ]);
        stamp(&mut deployment, &versions);
        assert_eq!(
            stamped(&deployment),
            Some("ConfigMap/settings@missing Secret/api-key@12")
        );
    }
}
