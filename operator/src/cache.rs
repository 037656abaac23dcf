//! The operator's view of the cluster: one watch per kind, kept in a cache that reconciles
//! read instead of sending a GET per child, and that also triggers the controller.
//!
//! The watches start with the process, before leader election: a follower keeps its caches
//! warm, so a takeover reconciles at once instead of listing everything first. The cached
//! objects carry no `managedFields` (nor kubectl's last-applied copy of a Microservice): the
//! operator never reads them, and they are often the larger half of an object.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::api::Microservice;
use crate::builders::{MANAGER, labels};
use crate::error::{Error, Result};

/// Events a subscriber may lag behind before the watch waits for it.
const BUFFER: usize = 1024;

/// How long the controller waits for the caches of children before it starts anyway.
pub const CHILDREN_SYNC_LIMIT: Duration = Duration::from_secs(10);

/// The annotation in which `kubectl apply` keeps a whole copy of the object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The caches, one per kind the operator reads.
#[derive(Clone)]
pub struct Caches {
    /// Every Microservice in the watched namespaces.
    pub microservices: Store<Microservice>,
    /// The children the operator manages (label `app.kubernetes.io/managed-by`).
    pub deployments: Store<Deployment>,
    /// Services of Microservices and of store servers.
    pub services: Store<Service>,
    /// PodDisruptionBudgets.
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    /// HorizontalPodAutoscalers.
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    /// The store servers.
    pub stateful_sets: Store<StatefulSet>,
    /// NetworkPolicies (watched even when the operator writes none, to delete those it wrote
    /// before it was told to stop).
    pub network_policies: Store<NetworkPolicy>,
}

impl Caches {
    /// The cached `K` named `name` in `namespace`.
    pub fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Subscriptions to the watches, for the controller's triggers.
pub struct Subscriptions {
    /// Microservices: reconcile the changed one.
    pub microservices: ReflectHandle<Microservice>,
    /// Microservices again: reconcile those that depend on the changed one.
    pub dependencies: ReflectHandle<Microservice>,
    /// Children: reconcile their owner.
    pub deployments: ReflectHandle<Deployment>,
    /// See [`Caches::services`].
    pub services: ReflectHandle<Service>,
    /// See [`Caches::pod_disruption_budgets`].
    pub pod_disruption_budgets: ReflectHandle<PodDisruptionBudget>,
    /// See [`Caches::autoscalers`].
    pub autoscalers: ReflectHandle<HorizontalPodAutoscaler>,
    /// See [`Caches::stateful_sets`].
    pub stateful_sets: ReflectHandle<StatefulSet>,
    /// See [`Caches::network_policies`].
    pub network_policies: ReflectHandle<NetworkPolicy>,
}

/// The running watches: the caches, and subscriptions parked until the controller takes
/// them. Dropping it stops the watches.
pub struct Informers {
    /// The caches, filled by the watches.
    pub caches: Caches,
    parked: Parked,
    tasks: Vec<JoinHandle<()>>,
}

struct Parked {
    microservices: ParkedSubscription<Microservice>,
    dependencies: ParkedSubscription<Microservice>,
    deployments: ParkedSubscription<Deployment>,
    services: ParkedSubscription<Service>,
    pod_disruption_budgets: ParkedSubscription<PodDisruptionBudget>,
    autoscalers: ParkedSubscription<HorizontalPodAutoscaler>,
    stateful_sets: ParkedSubscription<StatefulSet>,
    network_policies: ParkedSubscription<NetworkPolicy>,
}

impl Informers {
    /// Starts the watches of Microservices (all of them) and of the operator's children
    /// (only those it manages) in `namespace`, or in all namespaces.
    pub fn start(client: &Client, namespace: Option<&str>) -> Self {
        let children =
            watcher::Config::default().labels(&format!("{}={MANAGER}", labels::MANAGED_BY));
        let mut tasks = Vec::new();
        let (microservices, [parked_microservices, parked_dependencies]) = watch(
            api(client, namespace),
            watcher::Config::default(),
            &mut tasks,
        );
        let (deployments, [parked_deployments]) =
            watch(api(client, namespace), children.clone(), &mut tasks);
        let (services, [parked_services]) =
            watch(api(client, namespace), children.clone(), &mut tasks);
        let (pod_disruption_budgets, [parked_pdbs]) =
            watch(api(client, namespace), children.clone(), &mut tasks);
        let (autoscalers, [parked_autoscalers]) =
            watch(api(client, namespace), children.clone(), &mut tasks);
        let (stateful_sets, [parked_stateful_sets]) =
            watch(api(client, namespace), children.clone(), &mut tasks);
        let (network_policies, [parked_policies]) =
            watch(api(client, namespace), children, &mut tasks);
        Self {
            caches: Caches {
                microservices,
                deployments,
                services,
                pod_disruption_budgets,
                autoscalers,
                stateful_sets,
                network_policies,
            },
            parked: Parked {
                microservices: parked_microservices,
                dependencies: parked_dependencies,
                deployments: parked_deployments,
                services: parked_services,
                pod_disruption_budgets: parked_pdbs,
                autoscalers: parked_autoscalers,
                stateful_sets: parked_stateful_sets,
                network_policies: parked_policies,
            },
            tasks,
        }
    }

    /// Waits until the Microservices are listed, and the children for at most
    /// [`CHILDREN_SYNC_LIMIT`]: a watch that cannot list (a permission missing) must not keep
    /// the controller from starting. Until a child cache fills, reconciles read that kind from
    /// the API server, where the failure shows on the Microservice's status.
    pub async fn wait_until_ready(&self) {
        let caches = &self.caches;
        let _ = caches.microservices.wait_until_ready().await;
        let children = async {
            futures::join!(
                synced("Deployment", &caches.deployments),
                synced("Service", &caches.services),
                synced("PodDisruptionBudget", &caches.pod_disruption_budgets),
                synced("HorizontalPodAutoscaler", &caches.autoscalers),
                synced("StatefulSet", &caches.stateful_sets),
                synced("NetworkPolicy", &caches.network_policies),
            )
        };
        let _ = tokio::time::timeout(CHILDREN_SYNC_LIMIT, children).await;
    }

    /// Hands the subscriptions over to the controller; the watches go on.
    pub async fn subscribe(self) -> Result<(Caches, Subscriptions, WatchTasks)> {
        let tasks = WatchTasks(self.tasks);
        let parked = self.parked;
        let subscriptions = Subscriptions {
            microservices: parked.microservices.take().await?,
            dependencies: parked.dependencies.take().await?,
            deployments: parked.deployments.take().await?,
            services: parked.services.take().await?,
            pod_disruption_budgets: parked.pod_disruption_budgets.take().await?,
            autoscalers: parked.autoscalers.take().await?,
            stateful_sets: parked.stateful_sets.take().await?,
            network_policies: parked.network_policies.take().await?,
        };
        Ok((self.caches, subscriptions, tasks))
    }
}

/// The tasks running the watches; dropping this stops them.
pub struct WatchTasks(Vec<JoinHandle<()>>);

impl Drop for WatchTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Starts one watch of `K` into a shared cache, with `N` parked subscriptions.
fn watch<K, const N: usize>(
    api: Api<K>,
    config: watcher::Config,
    tasks: &mut Vec<JoinHandle<()>>,
) -> (Store<K>, [ParkedSubscription<K>; N])
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store_shared(BUFFER);
    let parked = std::array::from_fn(|_| ParkedSubscription::park(writer.subscribe()));
    let kind = K::kind(&()).into_owned();
    let events = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect_shared(writer)
        .for_each(move |event| {
            if let Err(error) = event {
                warn!(%kind, %error, "watch failed, retrying");
            }
            std::future::ready(())
        });
    tasks.push(tokio::spawn(events));
    (reader, parked)
}

/// Waits until `cache` is filled, and says so when it takes long.
async fn synced<K>(kind: &str, cache: &Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let waited = tokio::time::timeout(CHILDREN_SYNC_LIMIT / 2, cache.wait_until_ready()).await;
    if waited.is_err() {
        warn!(
            %kind,
            "the cache has not filled yet (see the watch errors): reading this kind from the API server until it has"
        );
        let _ = cache.wait_until_ready().await;
    }
}

/// Drops what the operator never reads from a cached object.
fn trim<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove(LAST_APPLIED);
}

/// A subscription whose events are dropped until the controller takes it: a subscriber
/// that nobody reads would fill the buffer and stall the watch (and the cache with it).
/// The controller, once it has the subscription, reconciles everything once, so nothing
/// dropped here is missed.
struct ParkedSubscription<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    take: oneshot::Sender<()>,
    task: JoinHandle<Option<ReflectHandle<K>>>,
}

impl<K> ParkedSubscription<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    fn park(subscription: Option<ReflectHandle<K>>) -> Self {
        let (take, mut taken) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut subscription = subscription?;
            loop {
                tokio::select! {
                    _ = &mut taken => return Some(subscription),
                    next = subscription.next() => {
                        next.as_ref()?;
                    }
                }
            }
        });
        Self { take, task }
    }

    async fn take(self) -> Result<ReflectHandle<K>> {
        let _ = self.take.send(());
        match self.task.await {
            Ok(Some(subscription)) => Ok(subscription),
            _ => Err(Error::WatchStopped(
                K::kind(&K::DynamicType::default()).into_owned(),
            )),
        }
    }
}

/// Keeps, of a stream of Microservices, those whose spec, labels, annotations or deletion
/// changed since last seen (or that are new: another uid under the same name counts as
/// new): the operator's own status writes would otherwise each trigger another reconcile of
/// the same object (the status is an output, not an input). An object gone from `cache` is
/// forgotten, so the memory follows the cache.
pub fn spec_changes<S>(
    stream: S,
    cache: Store<Microservice>,
) -> impl futures::Stream<Item = Arc<Microservice>> + Send + 'static
where
    S: futures::Stream<Item = Arc<Microservice>> + Send + 'static,
{
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};

    let mut seen: HashMap<ObjectRef<Microservice>, u64> = HashMap::new();
    stream.filter(move |ms| {
        let key = ObjectRef::from_obj(ms.as_ref());
        if cache.get(&key).is_none() {
            // Deleted: nothing to compare with next time.
            seen.remove(&key);
            return std::future::ready(true);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        ms.metadata.uid.hash(&mut hasher);
        ms.metadata.generation.hash(&mut hasher);
        ms.metadata.deletion_timestamp.is_some().hash(&mut hasher);
        ms.metadata.labels.hash(&mut hasher);
        ms.metadata.annotations.hash(&mut hasher);
        let fingerprint = hasher.finish();
        std::future::ready(seen.insert(key, fingerprint) != Some(fingerprint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MicroserviceStatus;
    use futures::StreamExt;

    fn ms(uid: &str, generation: i64, observed: Option<i64>) -> Microservice {
        let mut ms: Microservice = serde_json::from_value(serde_json::json!({
            "apiVersion": "kea.dev/v1alpha1",
            "kind": "Microservice",
            "metadata": {"name": "web", "namespace": "shop", "uid": uid, "generation": generation},
            "spec": {"image": "kea.dev/kea-service:dev"},
        }))
        .expect("a Microservice");
        ms.status = observed.map(|generation| MicroserviceStatus {
            observed_generation: Some(generation),
            ..Default::default()
        });
        ms
    }

    #[tokio::test]
    async fn only_changes_of_what_the_user_wrote_trigger() {
        let (cache, mut writer) = reflector::store::<Microservice>();
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        let mut filtered = Box::pin(spec_changes(receiver, cache));
        let mut seen = Vec::new();
        let versions = [
            ms("a", 1, None),
            ms("a", 1, Some(1)), // the operator's status write: filtered out
            ms("a", 2, Some(1)), // a spec change
            ms("b", 2, Some(1)), // deleted and created again under the same name
        ];
        for version in versions {
            writer.apply_watcher_event(&watcher::Event::Apply(version.clone()));
            sender.unbounded_send(Arc::new(version)).expect("send");
            let next = tokio::time::timeout(Duration::from_millis(50), filtered.next()).await;
            seen.push(next.ok().flatten().map(|m| m.metadata.generation));
        }
        assert_eq!(seen, [Some(Some(1)), None, Some(Some(2)), Some(Some(2))]);
    }
}
