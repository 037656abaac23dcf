//! Helpers shared by the operator's tests on the real control plane.
#![allow(dead_code, clippy::unwrap_used)]

pub mod partition;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume};
use k8s_openapi::api::storage::v1::StorageClass;
use kea_operator::{ControllerConfig, Metrics, Microservice, run_controller};
use kea_testkit::TestNamespace;
use kea_testkit::microservices;
pub use kea_testkit::microservices::{microservice, namespace_with_crd};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for the cluster to get somewhere.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A controller running in this test's namespace.
pub struct Operator {
    stop: oneshot::Sender<()>,
    pub task: JoinHandle<kea_operator::Result<()>>,
    pub metrics: Metrics,
}

impl Operator {
    pub fn start(namespace: &TestNamespace) -> Self {
        Self::start_with(namespace, kea_operator::children::Settings::default())
    }

    /// A controller with other settings (e.g. NetworkPolicies off).
    pub fn start_with(
        namespace: &TestNamespace,
        settings: kea_operator::children::Settings,
    ) -> Self {
        Self::start_as(namespace, namespace.client(), settings)
    }

    /// A controller that talks to the API server through `client` (e.g. one that
    /// impersonates a ServiceAccount with fewer permissions).
    pub fn start_as(
        namespace: &TestNamespace,
        client: Client,
        settings: kea_operator::children::Settings,
    ) -> Self {
        let config = ControllerConfig {
            settings,
            namespace: Some(namespace.name().to_owned()),
            requeue_not_ready: Duration::from_secs(2),
            // Frequent reconciles at steady state, so that a needless write shows within a test.
            requeue_ready: Duration::from_secs(2),
            ..ControllerConfig::default()
        };
        Self::start_config(client, config)
    }

    /// A controller whose timed reconciles are an hour away: whatever it does within a test
    /// it does because a watch told it to.
    pub fn start_without_timers(namespace: &TestNamespace) -> Self {
        let hour = Duration::from_secs(3600);
        let config = ControllerConfig {
            namespace: Some(namespace.name().to_owned()),
            requeue_ready: hour,
            requeue_not_ready: hour,
            requeue_stores_pending: hour,
            ..ControllerConfig::default()
        };
        Self::start_config(namespace.client(), config)
    }

    /// A controller that holds rollout progress for up to `progress_delay`, and a new
    /// Microservice's first status, while only its pods are awaited, for up to
    /// `first_status_delay`.
    pub fn start_with_status_delays(
        namespace: &TestNamespace,
        progress_delay: Duration,
        first_status_delay: Duration,
    ) -> Self {
        let config = ControllerConfig {
            namespace: Some(namespace.name().to_owned()),
            requeue_not_ready: Duration::from_secs(2),
            progress_delay,
            first_status_delay,
            ..ControllerConfig::default()
        };
        Self::start_config(namespace.client(), config)
    }

    fn start_config(client: Client, config: ControllerConfig) -> Self {
        let metrics = Metrics::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_controller(
            client,
            config,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop,
            task,
            metrics,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

pub async fn setup(prefix: &str) -> (TestNamespace, Api<Microservice>) {
    let namespace = namespace_with_crd(prefix).await;
    let microservices = namespace.api::<Microservice>();
    (namespace, microservices)
}

pub async fn create(api: &Api<Microservice>, name: &str, spec: serde_json::Value) {
    api.create(&PostParams::default(), &microservice(name, spec))
        .await
        .unwrap();
}

pub async fn merge_spec(api: &Api<Microservice>, name: &str, spec: serde_json::Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .unwrap();
}

pub async fn wait_ready(api: &Api<Microservice>, name: &str) -> Microservice {
    microservices::wait_ready(api, name, TIMEOUT).await.unwrap()
}

/// Whether `event` is about the Microservice `name` and has `reason`.
fn is_about(event: &Event, name: &str, reason: &str) -> bool {
    event.involved_object.kind.as_deref() == Some("Microservice")
        && event.involved_object.name.as_deref() == Some(name)
        && event.reason.as_deref() == Some(reason)
}

/// The Events about the Microservice `name` with `reason`.
pub async fn events_about(events: &Api<Event>, name: &str, reason: &str) -> Vec<Event> {
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| is_about(e, name, reason))
        .collect()
}

/// Waits, following a watch, until the Microservice `name` has an Event with `reason` that
/// `wanted` accepts; fails with "no {what} for {name}" after `within`.
pub async fn wait_for_event(
    events: &Api<Event>,
    name: &str,
    reason: &str,
    wanted: impl Fn(&Event) -> bool,
    within: Duration,
    what: &str,
) {
    let about = |e: &&Event| is_about(e, name, reason);
    let found = kea_testkit::wait_for_list(
        events,
        "",
        &format!("{what} for {name}"),
        |all: &[Event]| all.iter().filter(about).any(&wanted),
        |all: &[Event]| {
            let notes: Vec<_> = all
                .iter()
                .filter(about)
                .map(|e| e.message.clone())
                .collect();
            format!("{reason} events about {name}: {notes:?}")
        },
        within,
    )
    .await;
    if let Err(error) = found {
        panic!("no {what} for {name}: {error}");
    }
}

pub fn condition<'a>(
    ms: &'a Microservice,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    microservices::condition(ms, type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", ms.status))
}

/// A StorageClass without a provisioner, named after the test's namespace, with
/// PersistentVolumes pre-bound by name to the claims the test expects.
pub struct StaticVolumes {
    client: Client,
    pub class: String,
    volumes: Vec<String>,
}

impl StaticVolumes {
    /// A class whose volumes cannot grow (`allowVolumeExpansion` unset, like local-path).
    pub async fn new(namespace: &TestNamespace) -> Self {
        Self::with_class(namespace, "static", false).await
    }

    /// A class that allows volume expansion.
    pub async fn expandable(namespace: &TestNamespace) -> Self {
        Self::with_class(namespace, "expandable", true).await
    }

    async fn with_class(namespace: &TestNamespace, suffix: &str, expandable: bool) -> Self {
        let class = format!("{}-{suffix}", namespace.name());
        let classes: Api<StorageClass> = Api::all(namespace.client());
        let mut storage_class = json!({
            "metadata": {"name": class},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        });
        if expandable {
            storage_class["allowVolumeExpansion"] = json!(true);
        }
        let storage_class: StorageClass = serde_json::from_value(storage_class).unwrap();
        classes
            .create(&PostParams::default(), &storage_class)
            .await
            .unwrap();
        Self {
            client: namespace.client(),
            class,
            volumes: Vec::new(),
        }
    }

    /// A volume for the claim `claim` of `namespace`, under a unique name.
    pub async fn for_claim(&mut self, namespace: &str, claim: &str) {
        let name = format!("{}-{}-{}", self.class, claim, self.volumes.len());
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "storageClassName": self.class,
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": format!("/tmp/kea-tests/{name}")},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }))
        .unwrap();
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &volume)
            .await
            .unwrap();
        self.volumes.push(name);
    }

    pub async fn cleanup(self) {
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        for name in &self.volumes {
            let _ = volumes.delete(name, &DeleteParams::default()).await;
        }
        let classes: Api<StorageClass> = Api::all(self.client);
        let _ = classes.delete(&self.class, &DeleteParams::default()).await;
    }
}
