//! Microservices in tests: the CRD installed in the cluster, fixtures built the same way by
//! every tier, and a watch-based wait for a Microservice to be Ready.
//!
//! ```
//! use kea_testkit::microservices::Fixture;
//! use serde_json::json;
//!
//! let orders = Fixture::new("orders")
//!     .image("kea.dev/kea-service:dev")
//!     .replicas(2)
//!     .depends_on(["users"])
//!     .spec(json!({"drainSeconds": 2}))
//!     .build();
//! assert_eq!(orders.spec.replicas, 2);
//! assert_eq!(orders.spec.depends_on[0].name, "users");
//! ```

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kea_operator::Microservice;
use kea_operator::api::conditions;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::conditions as wait_conditions;
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};

use crate::{Error, Result, TestNamespace, wait_for};

/// The image of the fixtures unless a test names another: the project's own service.
pub const SERVICE_IMAGE: &str = "kea.dev/kea-service:dev";

/// How long [`install_crd`] waits for the CRD to be served.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);

/// Installs (or updates, with server-side apply) the Microservice CRD the operator generates
/// and waits until the API server serves it.
pub async fn install_crd(client: Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = kea_operator::api::crd::crd()
        .map_err(|err| Error::Setup(format!("the Microservice CRD does not build: {err}")))?;
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("kea-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|source| Error::Kube {
        action: "applying the Microservice CRD".into(),
        source,
    })?;
    wait_for(
        &crds,
        &crd.name_any(),
        wait_conditions::is_crd_established(),
        CRD_TIMEOUT,
    )
    .await
    .map(|_| ())
}

/// A fresh namespace (see [`TestNamespace::for_test`]) in a cluster where the Microservice
/// CRD is installed and served.
///
/// # Panics
///
/// When no control plane is reachable, or the CRD cannot be installed: a test failure.
pub async fn namespace_with_crd(prefix: &str) -> TestNamespace {
    let namespace = TestNamespace::for_test(prefix).await;
    if let Err(err) = install_crd(namespace.client()).await {
        panic!("installing the Microservice CRD for '{prefix}': {err}");
    }
    namespace
}

/// A Microservice under construction: the kea-service image with its defaults, and whatever a
/// test changes. Fields without a method of their own are set with [`spec`](Self::spec), in
/// the CRD's JSON names, so a fixture reads like the YAML a user writes.
#[derive(Clone, Debug)]
pub struct Fixture {
    name: String,
    spec: Map<String, Value>,
}

impl Fixture {
    /// A Microservice named `name` running [`SERVICE_IMAGE`], pulled only if absent (the
    /// clusters of the tests have it preloaded, or run no pods at all).
    pub fn new(name: &str) -> Self {
        let mut spec = Map::new();
        spec.insert("image".into(), json!(SERVICE_IMAGE));
        spec.insert("imagePullPolicy".into(), json!("IfNotPresent"));
        Self {
            name: name.to_owned(),
            spec,
        }
    }

    /// The container image.
    pub fn image(self, image: &str) -> Self {
        self.spec(json!({ "image": image }))
    }

    /// The number of pods.
    pub fn replicas(self, replicas: i32) -> Self {
        self.spec(json!({ "replicas": replicas }))
    }

    /// The Microservices this one calls (`spec.dependsOn`).
    pub fn depends_on<'a>(self, names: impl IntoIterator<Item = &'a str>) -> Self {
        let calls: Vec<Value> = names.into_iter().map(|n| json!({ "name": n })).collect();
        self.spec(json!({ "dependsOn": calls }))
    }

    /// Sets the top-level spec fields of `fields` (a JSON object), replacing earlier values.
    ///
    /// # Panics
    ///
    /// When `fields` is not a JSON object: a mistake in the test itself.
    pub fn spec(mut self, fields: Value) -> Self {
        let Value::Object(fields) = fields else {
            panic!("Fixture::spec takes a JSON object of spec fields, got {fields}");
        };
        self.spec.extend(fields);
        self
    }

    /// The Microservice.
    ///
    /// # Panics
    ///
    /// When the fields set do not make a Microservice spec (a wrong type, a missing image):
    /// a mistake in the test itself.
    pub fn build(self) -> Microservice {
        serde_json::from_value(json!({
            "apiVersion": "kea.dev/v1alpha1",
            "kind": "Microservice",
            "metadata": { "name": self.name },
            "spec": self.spec,
        }))
        .unwrap_or_else(|err| panic!("fixture {} is not a Microservice: {err}", self.name))
    }
}

/// A Microservice named `name` with exactly the JSON `spec` given (the image included):
/// for tests that spell the whole spec out.
///
/// # Panics
///
/// When `spec` is not a Microservice spec: a mistake in the test itself.
pub fn microservice(name: &str, spec: Value) -> Microservice {
    let fixture = Fixture {
        name: name.to_owned(),
        spec: Map::new(),
    };
    fixture.spec(spec).build()
}

/// Whether the Microservice reports `Ready=True` for its current generation.
pub fn is_ready(ms: &Microservice) -> bool {
    let generation = ms.metadata.generation;
    ms.status.as_ref().is_some_and(|status| {
        status.observed_generation == generation
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == conditions::READY && c.status == "True")
    })
}

/// Waits (on a watch) until the Microservice is Ready for its current generation.
pub async fn wait_ready(
    api: &Api<Microservice>,
    name: &str,
    timeout: Duration,
) -> Result<Microservice> {
    let ready = |ms: Option<&Microservice>| ms.is_some_and(is_ready);
    wait_for(api, name, ready, timeout)
        .await?
        .ok_or_else(|| Error::Timeout {
            what: format!("Microservice {name} to be Ready"),
            timeout,
            last_seen: "it does not exist".into(),
        })
}

/// The condition `type_` of the Microservice's status, if it has one.
pub fn condition<'a>(ms: &'a Microservice, type_: &str) -> Option<&'a Condition> {
    ms.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixture_keeps_the_last_value_of_each_field() {
        let ms = Fixture::new("web")
            .replicas(3)
            .spec(json!({"replicas": 2, "port": 9090}))
            .build();
        assert_eq!(ms.name_any(), "web");
        assert_eq!(ms.spec.replicas, 2);
        assert_eq!(ms.spec.port, 9090);
        assert_eq!(ms.spec.image, SERVICE_IMAGE);
    }

    #[test]
    fn readiness_is_for_the_current_generation() {
        let mut ms = Fixture::new("web").build();
        assert!(!is_ready(&ms));
        ms.metadata.generation = Some(2);
        ms.status = Some(
            serde_json::from_value(json!({
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(!is_ready(&ms), "an older generation's Ready does not count");
        if let Some(status) = ms.status.as_mut() {
            status.observed_generation = Some(2);
        }
        assert!(is_ready(&ms));
        assert_eq!(
            condition(&ms, "Ready").map(|c| c.status.as_str()),
            Some("True")
        );
    }
}
