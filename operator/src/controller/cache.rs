//! The operator's view of the cluster: one watch per kind, kept in a cache that reconciles
//! read instead of sending a GET per child, and that also triggers the controller.
//!
//! The watches start with the process, before leader election: a follower keeps its caches
//! warm, so a takeover reconciles at once instead of listing everything first.
//!
//! Each watch hands every change to its subscribers, deletions included: a deleted child must
//! bring its owner back to reconcile it, and a deleted Microservice its dependents. (kube's own
//! shared reflector passes on only the objects that are added or changed.) The cached
//! objects carry no `managedFields` (nor kubectl's last-applied copy of a Microservice): the
//! operator never reads them, and they are often the larger half of an object.
//!
//! The children are kept as their JSON ([`Compact`]) and decoded when a reconcile reads one.
//! A typed Kubernetes object is mostly empty room: k8s-openapi's structs hold every optional
//! field inline (a `Volume` is 3 KiB, a `Container` 2 KiB whatever they contain), so a typed
//! Deployment costs about 16 KiB of memory and its JSON about 4 KiB.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::api::Microservice;
use crate::children::meta::{MANAGER, labels};
use crate::error::{Error, Result};

/// A stream of the objects of one watch that changed, were added or deleted (then the last
/// state seen), in the order the watch saw them.
pub type Subscription<K> = mpsc::Receiver<Arc<K>>;

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
    /// Deployments of Microservices.
    pub deployments: ChildCache<Deployment>,
    /// Services of Microservices and of store servers.
    pub services: ChildCache<Service>,
    /// PodDisruptionBudgets.
    pub pod_disruption_budgets: ChildCache<PodDisruptionBudget>,
    /// HorizontalPodAutoscalers.
    pub autoscalers: ChildCache<HorizontalPodAutoscaler>,
    /// The store servers.
    pub stateful_sets: ChildCache<StatefulSet>,
    /// The stores' backup schedules.
    pub cron_jobs: ChildCache<CronJob>,
    /// The backup runs, scheduled (owned by their CronJob) and on demand (owned by the
    /// Microservice). Only the operator's own: it creates Jobs with names of their own
    /// (a hash of the request), so it never needs to know whose other names are.
    pub jobs: Store<Compact<Job>>,
    /// NetworkPolicies (watched even when the operator writes none, to delete those it wrote
    /// before it was told to stop).
    pub network_policies: ChildCache<NetworkPolicy>,
    /// Every ConfigMap, metadata only: the versions of those the Microservices' environments
    /// read ([`crate::children::config`]).
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    /// Every Secret, metadata only (never their data), for the same.
    pub secrets: Store<PartialObjectMeta<Secret>>,
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

/// What the operator knows of one kind of child: the whole objects it manages (label
/// `app.kubernetes.io/managed-by`), and the names (with owners) of every other object of
/// the kind. Together they say whether a name is free without asking the API server, so
/// creating a child is one request, and a name that someone else's object holds is refused
/// before anything is written.
#[derive(Clone)]
pub struct ChildCache<K: Resource<DynamicType = ()> + Clone + 'static> {
    /// The operator's own objects, whole (as their JSON).
    pub ours: Store<Compact<K>>,
    /// Every other object of the kind: metadata only (name, namespace, owners).
    pub others: Store<PartialObjectMeta<K>>,
}

/// Where a child's name stands, as the caches see it.
pub enum Lookup<K> {
    /// The operator's object of that name.
    Ours(Arc<K>),
    /// Another object holds the name; its owners, as listed in its metadata.
    Other(Vec<OwnerReference>),
    /// No object of that name exists.
    Free,
    /// A cache is not filled yet (e.g. its watch lacks a permission): ask the API server.
    Unknown,
}

impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static> ChildCache<K> {
    /// The operator's cached object named `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        Caches::get(&self.ours, namespace, name).and_then(|kept| kept.decode().map(Arc::new))
    }

    /// Where the name `name` in `namespace` stands.
    pub fn lookup(&self, namespace: &str, name: &str) -> Lookup<K> {
        if let Some(ours) = self.get(namespace, name) {
            return Lookup::Ours(ours);
        }
        if let Some(other) = Caches::get(&self.others, namespace, name) {
            return Lookup::Other(other.metadata.owner_references.clone().unwrap_or_default());
        }
        if is_filled(&self.ours) && is_filled(&self.others) {
            Lookup::Free
        } else {
            Lookup::Unknown
        }
    }
}

/// Whether the watch has filled `store` with its first list (without waiting for it).
fn is_filled<K: Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> bool {
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Subscriptions to the watches, for the controller's triggers.
pub struct Subscriptions {
    /// Microservices: reconcile the changed one.
    pub microservices: Subscription<Microservice>,
    /// Microservices again: reconcile those that depend on the changed one.
    pub dependencies: Subscription<Microservice>,
    /// Children: reconcile their owner.
    pub deployments: Subscription<Deployment>,
    /// See [`Caches::services`].
    pub services: Subscription<Service>,
    /// See [`Caches::pod_disruption_budgets`].
    pub pod_disruption_budgets: Subscription<PodDisruptionBudget>,
    /// See [`Caches::autoscalers`].
    pub autoscalers: Subscription<HorizontalPodAutoscaler>,
    /// See [`Caches::stateful_sets`].
    pub stateful_sets: Subscription<StatefulSet>,
    /// See [`Caches::cron_jobs`].
    pub cron_jobs: Subscription<CronJob>,
    /// See [`Caches::jobs`].
    pub jobs: Subscription<Job>,
    /// See [`Caches::network_policies`].
    pub network_policies: Subscription<NetworkPolicy>,
    /// ConfigMaps: reconcile the Microservices whose environment reads the changed one.
    pub config_maps: Subscription<PartialObjectMeta<ConfigMap>>,
    /// Secrets: the same.
    pub secrets: Subscription<PartialObjectMeta<Secret>>,
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
    cron_jobs: ParkedSubscription<CronJob>,
    jobs: ParkedSubscription<Job>,
    network_policies: ParkedSubscription<NetworkPolicy>,
    config_maps: ParkedSubscription<PartialObjectMeta<ConfigMap>>,
    secrets: ParkedSubscription<PartialObjectMeta<Secret>>,
}

impl Informers {
    /// Starts the watches of Microservices (all of them) and of the operator's children
    /// (only those it manages) in `namespace`, or in all namespaces.
    pub fn start(client: &Client, namespace: Option<&str>) -> Self {
        let children =
            watcher::Config::default().labels(&format!("{}={MANAGER}", labels::MANAGED_BY));
        let mut tasks = Vec::new();
        let (microservices, [parked_microservices, parked_dependencies]) =
            watch::<_, Microservice, 2>(
                api(client, namespace),
                watcher::Config::default(),
                &mut tasks,
            );
        let others =
            watcher::Config::default().labels(&format!("{}!={MANAGER}", labels::MANAGED_BY));
        let (deployments, [parked_deployments]) =
            watch_children(client, namespace, &children, &others, &mut tasks);
        let (services, [parked_services]) =
            watch_children(client, namespace, &children, &others, &mut tasks);
        let (pod_disruption_budgets, [parked_pdbs]) =
            watch_children(client, namespace, &children, &others, &mut tasks);
        let (autoscalers, [parked_autoscalers]) =
            watch_children(client, namespace, &children, &others, &mut tasks);
        let (stateful_sets, [parked_stateful_sets]) =
            watch_children(client, namespace, &children, &others, &mut tasks);
        let (cron_jobs, [parked_cron_jobs]) =
            watch_children(client, namespace, &children, &others, &mut tasks);
        let (jobs, [parked_jobs]) = watch(api(client, namespace), children.clone(), &mut tasks);
        let (network_policies, [parked_policies]) =
            watch_children(client, namespace, &children, &others, &mut tasks);
        let (config_maps, [parked_config_maps]) = watch(
            api(client, namespace),
            watcher::Config::default(),
            &mut tasks,
        );
        let (secrets, [parked_secrets]) = watch(
            api(client, namespace),
            watcher::Config::default(),
            &mut tasks,
        );
        Self {
            caches: Caches {
                microservices,
                deployments,
                services,
                pod_disruption_budgets,
                autoscalers,
                stateful_sets,
                cron_jobs,
                jobs,
                network_policies,
                config_maps,
                secrets,
            },
            parked: Parked {
                microservices: parked_microservices,
                dependencies: parked_dependencies,
                deployments: parked_deployments,
                services: parked_services,
                pod_disruption_budgets: parked_pdbs,
                autoscalers: parked_autoscalers,
                stateful_sets: parked_stateful_sets,
                cron_jobs: parked_cron_jobs,
                jobs: parked_jobs,
                network_policies: parked_policies,
                config_maps: parked_config_maps,
                secrets: parked_secrets,
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
                synced(&caches.deployments),
                synced(&caches.services),
                synced(&caches.pod_disruption_budgets),
                synced(&caches.autoscalers),
                synced(&caches.stateful_sets),
                synced(&caches.cron_jobs),
                caches.jobs.wait_until_ready(),
                synced(&caches.network_policies),
                caches.config_maps.wait_until_ready(),
                caches.secrets.wait_until_ready(),
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
            cron_jobs: parked.cron_jobs.take().await?,
            jobs: parked.jobs.take().await?,
            network_policies: parked.network_policies.take().await?,
            config_maps: parked.config_maps.take().await?,
            secrets: parked.secrets.take().await?,
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

/// Starts the watches of one kind of child: the operator's objects (`ours`, whole, with `N`
/// parked subscriptions) and everyone else's (`others`, metadata only).
fn watch_children<K, const N: usize>(
    client: &Client,
    namespace: Option<&str>,
    ours: &watcher::Config,
    others: &watcher::Config,
    tasks: &mut Vec<JoinHandle<()>>,
) -> (ChildCache<K>, [ParkedSubscription<K>; N])
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (ours, parked) = watch::<K, Compact<K>, N>(api(client, namespace), ours.clone(), tasks);
    let (reader, mut writer) = reflector::store::<PartialObjectMeta<K>>();
    let kind = K::kind(&()).into_owned();
    // An Api of PartialObjectMeta asks for metadata only.
    let events = watcher(
        api::<PartialObjectMeta<K>>(client, namespace),
        others.clone(),
    )
    .default_backoff()
    .modify(|meta: &mut PartialObjectMeta<K>| {
        // Only the name and the owners are read.
        meta.metadata.managed_fields = None;
        meta.metadata.annotations = None;
        meta.metadata.labels = None;
    });
    tasks.push(tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => writer.apply_watcher_event(&event),
                Err(error) => warn!(%kind, %error, "watch of other objects failed, retrying"),
            }
        }
    }));
    (
        ChildCache {
            ours,
            others: reader,
        },
        parked,
    )
}

/// Starts one watch of `K` into a cache of `S` (what the cache keeps of each `K`), with `N`
/// parked subscriptions.
fn watch<K, S, const N: usize>(
    api: Api<K>,
    config: watcher::Config,
    tasks: &mut Vec<JoinHandle<()>>,
) -> (Store<S>, [ParkedSubscription<K>; N])
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: Kept<K>,
{
    let (reader, writer) = reflector::store();
    let mut subscribers = Vec::with_capacity(N);
    let parked = std::array::from_fn(|_| {
        let (sender, receiver) = mpsc::channel(BUFFER);
        subscribers.push(sender);
        ParkedSubscription::park(receiver)
    });
    let mut dispatcher = Dispatcher {
        writer,
        subscribers,
        cache: reader.clone(),
        before_relist: Vec::new(),
    };
    let kind = K::kind(&()).into_owned();
    let events = watcher(api, config).default_backoff().modify(trim);
    tasks.push(tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => dispatcher.apply(&event).await,
                Err(error) => warn!(%kind, %error, "watch failed, retrying"),
            }
        }
    }));
    (reader, parked)
}

/// What a cache keeps of each object of kind `K`.
pub trait Kept<K>: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    /// Applies a watch event to the cache.
    fn apply(writer: &mut reflector::store::Writer<Self>, event: &watcher::Event<K>);
    /// The object of a watch event, to hand to subscribers, after `apply`.
    fn shared(cache: &Store<Self>, object: &K) -> Arc<K>;
    /// The object again, from what the cache kept.
    fn object(kept: Arc<Self>) -> Option<Arc<K>>;
}

/// Kinds kept as the watch gives them: Microservices (the controller reads them whole from the
/// cache) and the metadata-only watches.
pub trait KeptAsGiven: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {}

impl KeptAsGiven for Microservice {}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> KeptAsGiven
    for PartialObjectMeta<K>
{
}

impl<K: KeptAsGiven> Kept<K> for K {
    fn apply(writer: &mut reflector::store::Writer<Self>, event: &watcher::Event<Self>) {
        writer.apply_watcher_event(event);
    }

    fn shared(cache: &Store<Self>, object: &Self) -> Arc<Self> {
        cache
            .get(&ObjectRef::from_obj(object))
            .unwrap_or_else(|| Arc::new(object.clone()))
    }

    fn object(kept: Arc<Self>) -> Option<Arc<Self>> {
        Some(kept)
    }
}

/// An object kept as its JSON, LZ4-compressed (a Deployment's 3-4 KiB of JSON, much of it
/// repeated keys, shrinks to about a third; compressing or decompressing it takes
/// microseconds), with the metadata that indexes it (name, namespace, uid, resourceVersion).
/// [`Compact::decode`] gives the object back.
#[derive(Clone)]
pub struct Compact<K> {
    metadata: ObjectMeta,
    compressed_json: Arc<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource<DynamicType = ()> + Serialize> Compact<K> {
    /// Encodes `object`; `None` if it does not serialize (no Kubernetes object fails to).
    pub fn encode(object: &K) -> Option<Self> {
        let meta = object.meta();
        Some(Self {
            metadata: ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                ..ObjectMeta::default()
            },
            compressed_json: lz4_flex::compress_prepend_size(&serde_json::to_vec(object).ok()?)
                .into(),
            kind: PhantomData,
        })
    }
}

impl<K: DeserializeOwned> Compact<K> {
    /// The object.
    pub fn decode(&self) -> Option<K> {
        let json = lz4_flex::decompress_size_prepended(&self.compressed_json).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K> Kept<K> for Compact<K>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn apply(writer: &mut reflector::store::Writer<Self>, event: &watcher::Event<K>) {
        let keep = |object: &K| Compact::encode(object);
        let kept = match event {
            watcher::Event::Apply(object) => keep(object).map(watcher::Event::Apply),
            watcher::Event::Delete(object) => keep(object).map(watcher::Event::Delete),
            watcher::Event::InitApply(object) => keep(object).map(watcher::Event::InitApply),
            watcher::Event::Init => Some(watcher::Event::Init),
            watcher::Event::InitDone => Some(watcher::Event::InitDone),
        };
        if let Some(kept) = kept {
            writer.apply_watcher_event(&kept);
        }
    }

    fn shared(_cache: &Store<Self>, object: &K) -> Arc<K> {
        Arc::new(object.clone())
    }

    fn object(kept: Arc<Self>) -> Option<Arc<K>> {
        kept.decode().map(Arc::new)
    }
}

/// Applies the events of one watch to its cache, then hands the changes to its subscribers.
struct Dispatcher<K, S: Kept<K>> {
    writer: reflector::store::Writer<S>,
    subscribers: Vec<mpsc::Sender<Arc<K>>>,
    cache: Store<S>,
    /// What the cache held when a (re)list began: an object missing from the new list was
    /// deleted while the watch was down, and its subscribers hear of it as of any deletion.
    before_relist: Vec<Arc<S>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static, S: Kept<K>> Dispatcher<K, S> {
    /// Applies `event` to the cache; then its subscribers hear of what changed.
    async fn apply(&mut self, event: &watcher::Event<K>) {
        if let watcher::Event::Init = event {
            self.before_relist = self.cache.state();
        }
        S::apply(&mut self.writer, event);
        match event {
            watcher::Event::Apply(object) => self.send(S::shared(&self.cache, object)).await,
            watcher::Event::Delete(object) => self.send(Arc::new(object.clone())).await,
            watcher::Event::InitDone => {
                let gone: Vec<_> = std::mem::take(&mut self.before_relist)
                    .into_iter()
                    .filter(|old| self.cache.get(&ObjectRef::from_obj(old.as_ref())).is_none())
                    .collect();
                for kept in self.cache.state().into_iter().chain(gone) {
                    if let Some(object) = S::object(kept) {
                        self.send(object).await;
                    }
                }
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// Sends `object` to every subscriber still listening; waits while one is full (so the
    /// watch slows down rather than losing a change).
    async fn send(&mut self, object: Arc<K>) {
        let mut listening = Vec::with_capacity(self.subscribers.len());
        for mut subscriber in self.subscribers.drain(..) {
            if subscriber.send(Arc::clone(&object)).await.is_ok() {
                listening.push(subscriber);
            }
        }
        self.subscribers = listening;
    }
}

/// Waits until both caches of a kind are filled, and says so when it takes long.
async fn synced<K>(cache: &ChildCache<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let filled = async {
        let _ = futures::join!(
            cache.ours.wait_until_ready(),
            cache.others.wait_until_ready()
        );
    };
    let mut filled = std::pin::pin!(filled);
    if tokio::time::timeout(CHILDREN_SYNC_LIMIT / 2, &mut filled)
        .await
        .is_err()
    {
        warn!(
            kind = %K::kind(&()),
            "the cache has not filled yet (see the watch errors): reading this kind from the API server until it has"
        );
        filled.await;
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
{
    take: oneshot::Sender<()>,
    task: JoinHandle<Option<Subscription<K>>>,
}

impl<K> ParkedSubscription<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn park(mut subscription: Subscription<K>) -> Self {
        let (take, mut taken) = oneshot::channel();
        let task = tokio::spawn(async move {
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

    async fn take(self) -> Result<Subscription<K>> {
        let _ = self.take.send(());
        match self.task.await {
            Ok(Some(subscription)) => Ok(subscription),
            _ => Err(Error::WatchStopped(K::kind(&()).into_owned())),
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
    use futures::channel::mpsc;

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

    /// Feeds `events` through a cache and a dispatcher; returns the uids each one handed on.
    async fn dispatched(events: Vec<watcher::Event<Microservice>>) -> Vec<Vec<String>> {
        let (cache, writer) = reflector::store::<Microservice>();
        let (sender, mut receiver) = mpsc::channel(BUFFER);
        let mut dispatcher = Dispatcher {
            writer,
            subscribers: vec![sender],
            cache,
            before_relist: Vec::new(),
        };
        let mut seen = Vec::new();
        for event in events {
            dispatcher.apply(&event).await;
            let mut uids = Vec::new();
            while let Ok(ms) = receiver.try_recv() {
                uids.push(ms.metadata.uid.clone().unwrap_or_default());
            }
            uids.sort();
            seen.push(uids);
        }
        seen
    }

    #[tokio::test]
    async fn deletions_reach_subscribers_even_when_the_watch_was_down() {
        let named = |name: &str, uid: &str| {
            let mut ms = ms(uid, 1, None);
            ms.metadata.name = Some(name.to_owned());
            ms
        };
        let seen = dispatched(vec![
            watcher::Event::Init,
            watcher::Event::InitApply(named("a", "a1")),
            watcher::Event::InitApply(named("b", "b1")),
            watcher::Event::InitDone, // the first list: everything
            watcher::Event::Apply(named("a", "a1")),
            watcher::Event::Delete(named("a", "a1")), // a watched deletion
            watcher::Event::Init,                     // the watch restarts
            watcher::Event::InitApply(named("c", "c1")),
            watcher::Event::InitDone, // b went while the watch was down
        ])
        .await;
        let uids = |uids: &[&str]| uids.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(
            seen,
            [
                uids(&[]),
                uids(&[]),
                uids(&[]),
                uids(&["a1", "b1"]),
                uids(&["a1"]),
                uids(&["a1"]),
                uids(&[]),
                uids(&[]),
                uids(&["b1", "c1"]),
            ]
        );
    }

    #[test]
    fn a_compact_object_decodes_to_the_object_and_is_indexed_like_it() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                         "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "kea.dev/v1alpha1", "kind": "Microservice",
                                              "name": "web", "uid": "o1", "controller": true}]},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "kea.dev/kea-service:dev"}],
                                           "volumes": [{"name": "tmp", "emptyDir": {}}]}}},
            "status": {"replicas": 2, "availableReplicas": 1},
        }))
        .expect("a Deployment");
        let compact = Compact::encode(&deployment).expect("encodes");
        assert_eq!(compact.decode().as_ref(), Some(&deployment));
        assert_eq!(
            ObjectRef::from_obj(&compact).erase(),
            ObjectRef::from_obj(&deployment).erase()
        );
        let (store, mut writer) = reflector::store::<Compact<Deployment>>();
        <Compact<Deployment> as Kept<Deployment>>::apply(
            &mut writer,
            &watcher::Event::Apply(deployment.clone()),
        );
        let cache = ChildCache {
            ours: store,
            others: reflector::store::<PartialObjectMeta<Deployment>>().0,
        };
        assert_eq!(cache.get("shop", "web").as_deref(), Some(&deployment));
        assert!(cache.get("shop", "api").is_none());
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
