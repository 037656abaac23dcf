//! The controller: watches Microservices and their children, and reconciles each
//! Microservice by applying its children ([`crate::children`]) and writing its status
//! ([`crate::status`]). Decisions live in those pure modules; this one does the I/O.

pub mod apply;
pub mod cache;
pub mod canary;
pub mod metrics;
pub mod provision;
pub mod rbac;
pub mod recorder;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::api::conditions::{self, reasons};
use crate::api::validate;
use crate::api::{Microservice, MicroserviceStatus, RollbackPolicy, events};
use crate::children::config::{self, ConfigKind, ConfigRef, ConfigVersions};
use crate::children::meta::{self, DependencyPorts, MANAGER};
use crate::children::stores::{MICROSERVICE_LABEL, ServerEngine};
use crate::children::{self, Settings};
use crate::children::{network, workload};
use crate::controller::apply::{Applied, Changes, apply_child, delete_child, is_controlled_by};
use crate::controller::cache::{Caches, ChildCache, Informers, spec_changes};
use crate::controller::metrics::Metrics;
use crate::controller::recorder::EventRecorder;
use crate::error::{Error, Result};
use crate::status::analysis::Verdict;
use crate::status::pods;
use crate::status::{self, Observed, StoreObservation, delivery, find_condition};

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Watch only this namespace; all namespaces when None. Tests use it to run one
    /// controller per test namespace.
    pub namespace: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// How long a triggered reconcile waits for more triggers of the same Microservice: the
    /// burst of watch events that follows an apply (each new child, each status update of
    /// the Deployment controller) then costs one reconcile instead of one each.
    pub debounce: Duration,
    /// Next reconcile of a Ready Microservice when nothing changes (a safety net: watches
    /// trigger reconciles on every relevant change).
    pub requeue_ready: Duration,
    /// Next reconcile of a Microservice that is not Ready, to refresh the reason read from
    /// its pods (pod events do not trigger reconciles).
    pub requeue_not_ready: Duration,
    /// Next reconcile of a Microservice whose stores are not ready: claims, store pods and
    /// their events are not watched, and a volume that cannot bind must show within seconds.
    pub requeue_stores_pending: Duration,
    /// How long a status change that only reports the progress of a rollout (pod counts
    /// while pods come up) may wait before it is written: a rollout's steps then share
    /// writes, and its end (Ready, or a failure) is written at once and carries them.
    pub progress_delay: Duration,
    /// How long a new Microservice's first status may wait while all it says is that its pods
    /// are coming up: a rollout that completes within it is written once, as Ready. Anything
    /// else (a failure, a pod that cannot start, a dependency or store not ready, a suspended
    /// spec) is written at once, and so is the rollout's progress once this is over.
    pub first_status_delay: Duration,
    /// Name of this process in the events it records (the pod name in a cluster).
    pub instance: Option<String>,
    /// What shapes the children: store images, NetworkPolicies on or off.
    pub settings: Settings,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 4,
            debounce: Duration::from_millis(500),
            requeue_ready: Duration::from_secs(300),
            requeue_not_ready: Duration::from_secs(30),
            requeue_stores_pending: Duration::from_secs(5),
            // A new pod is ready some moments before it counts as available
            // (MIN_READY_SECONDS): long enough for that step to be written with Ready.
            progress_delay: Duration::from_secs(5),
            // Under load (a thousand Microservices applied at once on a small control plane)
            // pods take 5-11 s from the apply to be available: long enough to cover that.
            first_status_delay: Duration::from_secs(15),
            instance: None,
            settings: Settings::default(),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The client to the API server.
    pub client: Client,
    /// Records Kubernetes events on Microservices.
    pub recorder: Arc<EventRecorder>,
    /// The controller's metrics.
    pub metrics: Metrics,
    /// The caches of Microservices and children: reconciles read them instead of the API
    /// server.
    pub caches: Caches,
    /// The settings.
    pub config: ControllerConfig,
    /// Consecutive failures per Microservice, for the exponential backoff.
    failures: Mutex<HashMap<ObjectRef<Microservice>, u32>>,
    /// Rollout progress seen and not yet written, per Microservice.
    progress: ProgressHold<ObjectRef<Microservice>>,
    /// The canaries' analyses under way.
    analyses: canary::Analyses,
    /// Events being recorded. Owned here, not detached, so that a controller that is dropped
    /// (a leader that lost its Lease) drops them too: nothing it started writes afterwards.
    event_writes: Mutex<JoinSet<()>>,
}

impl Context {
    /// Resets the backoff of a Microservice: it reconciled, or it is going away.
    fn forget_failures(&self, object: &ObjectRef<Microservice>) {
        self.failures
            .lock()
            .map(|mut failures| failures.remove(object))
            .ok();
    }
}

/// When rollout progress not yet written was first seen, per object: a change that only
/// reports progress waits until a delay after that, unless something else is written first.
struct ProgressHold<K> {
    /// Age after which an entry is surely stale: its object was reconciled since, or deleted.
    stale_after: Duration,
    held: Mutex<HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq + Clone> ProgressHold<K> {
    /// A hold for delays up to `longest_delay`.
    fn new(longest_delay: Duration) -> Self {
        Self {
            stale_after: longest_delay + STALE_PROGRESS,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// How much longer the progress of `object`, seen `now`, may wait to be written, `delay`
    /// after it was first seen (None: write it now). Entries left by deleted objects are
    /// dropped as they age.
    fn wait(&self, object: &K, now: Instant, delay: Duration) -> Option<Duration> {
        let mut held = self.held.lock().ok()?;
        if !held.contains_key(object) {
            held.retain(|_, since| now.saturating_duration_since(*since) < self.stale_after);
        }
        let since = *held.entry(object.clone()).or_insert(now);
        delay
            .checked_sub(now.saturating_duration_since(since))
            .filter(|wait| !wait.is_zero())
    }

    /// Forgets progress held for `object` (it was written, or is no longer news).
    fn release(&self, object: &K) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(object);
        }
    }
}

/// How long after its delay held progress is surely stale (its object was reconciled since,
/// or deleted).
const STALE_PROGRESS: Duration = Duration::from_secs(60);

/// Fails with [`Error::CrdNotInstalled`] when the API server does not serve Microservices.
/// Reads only the watched namespace when there is one (the operator may have no more).
pub async fn check_crd_installed(client: &Client, namespace: Option<&str>) -> Result<()> {
    let api = match namespace {
        Some(namespace) => Api::<Microservice>::namespaced(client.clone(), namespace),
        None => Api::<Microservice>::all(client.clone()),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(Error::CrdNotInstalled),
        Err(err) => Err(err.into()),
    }
}

/// Runs the controller until `shutdown` resolves (then it finishes running reconciles and
/// returns). Checks first that the CRD is installed.
///
/// This is the entry point for an in-process run, e.g. in a test against a real API server:
///
/// ```no_run
/// # async fn example(client: kube::Client) -> kea_operator::Result<()> {
/// use kea_operator::{ControllerConfig, Metrics, run_controller};
/// let config = ControllerConfig { namespace: Some("test-ns".into()), ..Default::default() };
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let handle = tokio::spawn(run_controller(client, config, Metrics::default(), async move {
///     let _ = stopped.await;
/// }));
/// // ... create Microservices, wait for their status ...
/// let _ = stop.send(());
/// handle.await.expect("controller task")?;
/// # Ok(()) }
/// ```
pub async fn run_controller(
    client: Client,
    config: ControllerConfig,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    check_crd_installed(&client, config.namespace.as_deref()).await?;
    let informers = start_informers(&client, &config);
    run_controller_with(informers, client, config, metrics, shutdown).await
}

/// Starts the watches the controller of `config` reads (see [`Informers`]). A follower
/// starts them before it leads, so that its caches are warm when it takes over.
pub fn start_informers(client: &Client, config: &ControllerConfig) -> Informers {
    Informers::start(client, config.namespace.as_deref())
}

/// Runs the controller on watches already started by [`start_informers`]: once their
/// caches are filled, every Microservice is reconciled, then each change triggers again.
pub async fn run_controller_with(
    informers: Informers,
    client: Client,
    config: ControllerConfig,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    informers.wait_until_ready().await;
    let (caches, subscriptions, _watches) = informers.subscribe().await?;
    let dependents_cache = caches.microservices.clone();
    let (config_map_readers, secret_readers) =
        (caches.microservices.clone(), caches.microservices.clone());

    let controller = Controller::for_shared_stream(
        spec_changes(subscriptions.microservices, caches.microservices.clone()),
        caches.microservices.clone(),
    )
    .owns_shared_stream(subscriptions.deployments)
    .owns_shared_stream(subscriptions.services)
    .owns_shared_stream(subscriptions.pod_disruption_budgets)
    .owns_shared_stream(subscriptions.autoscalers)
    // The stores' servers: their readiness is the StoresReady condition.
    .owns_shared_stream(subscriptions.stateful_sets)
    // The stores' backups: a run that ends (scheduled or on demand) is on the status.
    .owns_shared_stream(subscriptions.cron_jobs)
    .watches_shared_stream(subscriptions.jobs, |job| {
        let owner = job.labels().get(MICROSERVICE_LABEL)?;
        Some(ObjectRef::new(owner).within(&job.namespace()?))
    })
    // A change of one Microservice re-reconciles those that depend on it, so their
    // `<NAME>_URL` and DependenciesReady follow.
    .watches_shared_stream(subscriptions.dependencies, move |changed| {
        dependents(&dependents_cache, &changed)
    })
    // A changed ConfigMap or Secret rolls the pods of the Microservices whose environment
    // reads it; a change of any other one triggers nothing.
    .watches_shared_stream(subscriptions.config_maps, move |changed| {
        readers_of(&config_map_readers, ConfigKind::ConfigMap, changed.as_ref())
    })
    .watches_shared_stream(subscriptions.secrets, move |changed| {
        readers_of(&secret_readers, ConfigKind::Secret, changed.as_ref())
    })
    // The subscriptions start now: what the caches held before is reconciled once.
    .reconcile_all_on(futures::stream::once(std::future::ready(())));
    let controller = if config.settings.network_policies {
        controller.owns_shared_stream(subscriptions.network_policies)
    } else {
        controller
    };

    let context = Arc::new(Context {
        recorder: Arc::new(EventRecorder::new(
            client.clone(),
            MANAGER,
            config.instance.as_deref(),
        )),
        client,
        metrics,
        caches,
        config: config.clone(),
        failures: Mutex::new(HashMap::new()),
        progress: ProgressHold::new(config.progress_delay.max(config.first_status_delay)),
        analyses: canary::Analyses::default(),
        event_writes: Mutex::new(JoinSet::new()),
    });

    info!(namespace = ?config.namespace, "starting the Microservice controller");
    controller
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(config.concurrency)
                .debounce(config.debounce),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(%object, "reconciled"),
                Err(err) => debug!(error = %err, "reconcile failed"),
            }
        })
        .await;
    // Events of the last reconciles are still worth recording after a graceful stop.
    let pending = context
        .event_writes
        .lock()
        .map(|mut writes| std::mem::take(&mut *writes))
        .unwrap_or_default();
    pending.join_all().await;
    info!("the Microservice controller stopped");
    Ok(())
}

/// The Microservices of the same namespace whose `dependsOn` names `changed`.
pub fn dependents(
    store: &Store<Microservice>,
    changed: &Microservice,
) -> Vec<ObjectRef<Microservice>> {
    let name = changed.name_any();
    let namespace = changed.namespace();
    store
        .state()
        .iter()
        .filter(|ms| ms.namespace() == namespace)
        .filter(|ms| ms.spec.depends_on.iter().any(|d| d.name == name))
        .map(|ms| ObjectRef::from_obj(ms.as_ref()))
        .collect()
}

/// The Microservices in the namespace of `changed` whose environment reads it.
pub fn readers_of<K: Resource>(
    store: &Store<Microservice>,
    kind: ConfigKind,
    changed: &K,
) -> Vec<ObjectRef<Microservice>> {
    let reference = ConfigRef {
        kind,
        name: changed.name_any(),
    };
    let namespace = changed.namespace();
    store
        .state()
        .iter()
        .filter(|ms| ms.namespace() == namespace)
        .filter(|ms| config::references(&ms.spec).contains(&reference))
        .map(|ms| ObjectRef::from_obj(ms.as_ref()))
        .collect()
}

/// The version of each ConfigMap and Secret the environment of `ms` reads, from the caches.
fn config_versions(ms: &Microservice, caches: &Caches, namespace: &str) -> ConfigVersions {
    config::references(&ms.spec)
        .into_iter()
        .map(|reference| {
            let version = match reference.kind {
                ConfigKind::ConfigMap => {
                    Caches::get(&caches.config_maps, namespace, &reference.name)
                        .and_then(|o| o.metadata.resource_version.clone())
                }
                ConfigKind::Secret => Caches::get(&caches.secrets, namespace, &reference.name)
                    .and_then(|o| o.metadata.resource_version.clone()),
            };
            (reference, version)
        })
        .collect()
}

/// Reconciles one Microservice: applies its children, deletes those no longer wanted, and
/// writes its status when it changed.
pub async fn reconcile(ms: Arc<Microservice>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start_reconcile();
    let result = reconcile_children(&ms, &ctx).await;
    if let Err(error) = &result
        && let Some(reason) = status::failure_reason(error)
    {
        report_failure(&ctx, &ms, reason, &status::failure_message(error)).await;
    }
    result
}

/// Nothing silently stuck: a failed reconcile shows on the Microservice (`Ready` and
/// `Reconciled` False with the reason and the API server's message) and as a Warning Event
/// when it is new. Best effort: the error itself goes on to `error_policy` and its backoff.
async fn report_failure(ctx: &Context, ms: &Microservice, reason: &str, message: &str) {
    let Some(namespace) = ms.namespace() else {
        return;
    };
    let new_status = status::failed_status(ms, reason, message, &now());
    if ms.status.as_ref() == Some(&new_status) {
        return;
    }
    if let Err(error) = write_status(ctx, ms, &namespace, &new_status).await {
        warn!(microservice = %ms.name_any(), %error, "could not report a failed reconcile on the status");
    }
    let old = ms
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, conditions::RECONCILED));
    if old.is_none_or(|old| old.reason != reason || old.message != message) {
        publish(
            ctx,
            ms,
            EventType::Warning,
            reason,
            events::actions::APPLY,
            message.to_owned(),
        );
    }
}

/// The current time, at the second precision the API server stores.
fn now() -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
    )
}

/// The pipeline of one reconcile: apply the children and observe what they became, compute
/// the status, write it (unless only rollout progress may wait), and choose when to come back.
async fn reconcile_children(ms: &Arc<Microservice>, ctx: &Arc<Context>) -> Result<Action> {
    let object_ref = ObjectRef::from_obj(ms.as_ref());
    if ms.metadata.deletion_timestamp.is_some() {
        // The garbage collector deletes the children through their ownerReferences.
        ctx.forget_failures(&object_ref);
        ctx.analyses.forget(&object_ref);
        return Ok(Action::await_change());
    }
    let name = ms.name_any();
    let namespace = ms
        .namespace()
        .ok_or_else(|| Error::InvalidObject(format!("Microservice {name} has no namespace")))?;
    let uid = ms
        .uid()
        .ok_or_else(|| Error::InvalidObject(format!("Microservice {name} has no uid")))?;

    let (observed, probes_due) = apply_and_observe(ms, ctx, &namespace, &uid).await?;
    let new_status = status::compute_status(ms, &observed, &now());
    let progress_wait =
        write_status_unless_held(ctx, ms, &namespace, &object_ref, &new_status).await?;
    ctx.forget_failures(&object_ref);
    let rolled_back_now = observed
        .delivery
        .as_ref()
        .is_some_and(|d| d.rolled_back_now(ms).is_some());
    if rolled_back_now {
        // Once the status that says so is in the cache, the next reconcile applies the
        // stable revision.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // A backup run in progress is looked at again soon: how it ends, or why it cannot run.
    let backup_running = observed
        .stores
        .iter()
        .any(|store| store.backup.as_ref().is_some_and(|b| b.running))
        .then_some(ctx.config.requeue_stores_pending);
    Ok(next_reconcile(
        ctx,
        ms,
        &new_status,
        [progress_wait, probes_due, backup_running],
    ))
}

/// Applies the children of a valid spec (an invalid one keeps what runs) and observes the
/// cluster: dependencies, the Deployment, the stores, the autoscaler, and why pods are not
/// ready. Also returns when to come back: when unready pods' probes will have failed long
/// enough to be told, or the canary's next check is due.
async fn apply_and_observe(
    ms: &Microservice,
    ctx: &Context,
    namespace: &str,
    uid: &str,
) -> Result<(Observed, Option<Duration>)> {
    let name = ms.name_any();
    // Each dependency is looked up once, in the cache: for its status and for its port.
    let found: HashMap<&str, Arc<Microservice>> = ms
        .spec
        .depends_on
        .iter()
        .filter_map(|d| {
            Caches::get(&ctx.caches.microservices, namespace, &d.name)
                .map(|found| (d.name.as_str(), found))
        })
        .collect();
    let dependencies = status::dependency_statuses(ms, |dependency| found.get(dependency).cloned());
    let mut observed = Observed {
        dependencies,
        ..Default::default()
    };

    let mut probes_due: Option<Duration> = None;
    let mut canary_check: Option<Duration> = None;
    let problems = validate::spec_problems(&ms.spec);
    if problems.is_empty() {
        let ports: DependencyPorts = found
            .iter()
            .map(|(name, found)| ((*name).to_owned(), found.spec.port))
            .collect();
        let children = apply_children(ms, ctx, namespace, uid, &ports).await?;
        canary_check = match &children.verdict {
            Some(Verdict::Analysing { next_check, .. }) => *next_check,
            _ => None,
        };
        let canary_not_ready = children.canary.as_ref().is_some_and(has_pods_not_ready);
        if !ms.spec.suspend && (has_pods_not_ready(&children.deployment) || canary_not_ready) {
            let pods = read_pod_problem(&ctx.client, namespace, &name).await?;
            observed.pod_problem = pods.problem;
            probes_due = pods.probes_due;
        }
        observed.delivery = Some(delivery::decide(
            ms,
            &children.revision,
            &children.deployment,
            children.canary.as_ref(),
            children.verdict.as_ref(),
            observed.pod_problem.as_ref(),
        ));
        observed.deployment = Some(children.deployment);
        observed.stores = children.stores;
        observed.autoscaler = children.autoscaler;
        observed.network_policy = ctx
            .config
            .settings
            .network_policies
            .then(|| network::summary(ms));
    } else {
        observed.invalid_spec = Some(problems.join("; "));
        // Keep showing the Deployment that still runs the last valid spec.
        observed.deployment = ctx
            .caches
            .deployments
            .get(namespace, &name)
            .filter(|d| is_controlled_by(d.as_ref(), uid))
            .map(|d| Deployment::clone(&d));
    }
    Ok((observed, probes_due.into_iter().chain(canary_check).min()))
}

/// Writes `new_status` when it differs, with the events of its transitions; only the
/// progress of a rollout (pod counts changing, or a first status that says no more than that
/// pods are coming up) may wait, for up to the configured delay. Returns how long it waits.
async fn write_status_unless_held(
    ctx: &Context,
    ms: &Microservice,
    namespace: &str,
    object_ref: &ObjectRef<Microservice>,
    new_status: &MicroserviceStatus,
) -> Result<Option<Duration>> {
    let (only_progress, delay) = match &ms.status {
        Some(old) => (
            status::is_progress_only(old, new_status),
            ctx.config.progress_delay,
        ),
        None => (
            status::is_rollout_start(new_status),
            ctx.config.first_status_delay,
        ),
    };
    let progress_wait = only_progress
        .then(|| ctx.progress.wait(object_ref, Instant::now(), delay))
        .flatten();
    if progress_wait.is_none() {
        ctx.progress.release(object_ref);
        if ms.status.as_ref() != Some(new_status) {
            write_status(ctx, ms, namespace, new_status).await?;
            publish_transition_events(ctx, ms, new_status);
        }
    }
    Ok(progress_wait)
}

/// When to reconcile again: soon while stores are pending or the Microservice is not Ready,
/// rarely once Ready, and no later than any of `waits` (held progress, probes' grace).
fn next_reconcile(
    ctx: &Context,
    ms: &Microservice,
    new_status: &MicroserviceStatus,
    waits: [Option<Duration>; 3],
) -> Action {
    let is_true = |type_: &str| {
        find_condition(&new_status.conditions, type_).is_some_and(|c| c.status == "True")
    };
    let requeue = if !is_true(conditions::STORES_READY) {
        ctx.config.requeue_stores_pending
    } else if is_true(conditions::READY) || ms.spec.suspend {
        ctx.config.requeue_ready
    } else {
        ctx.config.requeue_not_ready
    };
    Action::requeue(waits.into_iter().flatten().fold(requeue, Duration::min))
}

/// Applies every wanted child and deletes the optional ones no longer wanted, then tells what
/// it wrote ([`report_changes`]). Returns the Deployment as it is now, and what was seen of
/// the stores.
async fn apply_children(
    ms: &Microservice,
    ctx: &Context,
    namespace: &str,
    uid: &str,
    ports: &DependencyPorts,
) -> Result<AppliedChildren> {
    let mut wanted = children::build_children(ms, ports, &ctx.config.settings)?;
    config::stamp(
        &mut wanted.deployment,
        &config_versions(ms, &ctx.caches, namespace),
    );
    let name = ms.name_any();
    let client = &ctx.client;
    let caches = &ctx.caches;
    let mut changes = Changes::default();
    // A revision rolled back before stays rolled back while the spec asks for it; a new one
    // starts as a canary beside the stable pods.
    let current = caches
        .deployments
        .get(namespace, &name)
        .filter(|d| is_controlled_by(d.as_ref(), uid))
        .and_then(|d| delivery::revision_annotation(&d).map(str::to_owned));
    let mut revision = delivery::hold_back(ms, &mut wanted.deployment, current.as_deref());
    let canary_name = workload::canary_name(&name);
    let verdict = if revision.canary {
        let cached = caches
            .deployments
            .get(namespace, &canary_name)
            .filter(|d| is_controlled_by(d.as_ref(), uid));
        Some(
            ctx.analyses
                .step(
                    client,
                    ms,
                    &revision.wanted,
                    cached.as_deref(),
                    ctx.config.settings.operator_namespace.is_some(),
                )
                .await,
        )
    } else {
        ctx.analyses.forget(&ObjectRef::from_obj(ms));
        None
    };
    if let Some(Verdict::Promote(analysis)) = &verdict {
        delivery::promote(&mut revision, &mut wanted.deployment);
        publish(
            ctx,
            ms,
            EventType::Normal,
            events::reasons::PROMOTED,
            events::actions::APPLY,
            format!(
                "promoted the canary of generation {} (image {}) after {} passed checks: {}",
                ms.metadata.generation.unwrap_or_default(),
                ms.spec.image,
                analysis.passed_checks,
                analysis.message.trim_start_matches("check passed: "),
            ),
        );
    }
    let reverted = matches!(verdict, Some(Verdict::Revert(_)))
        && ms.spec.rollout.clone().unwrap_or_default().rollback == RollbackPolicy::Auto;
    let wanted_canary = (revision.canary && !reverted).then(|| {
        let mut canary = workload::canary_deployment(&wanted.deployment, &revision.template);
        delivery::mark_revision(&mut canary, &revision.wanted);
        canary
    });

    // Stores first: the Secrets the Deployment's variables refer to must exist before its
    // pods start.
    let stores =
        provision::reconcile_stores(client, caches, ms, namespace, uid, wanted.stores).await?;
    changes.extend(stores.changes);

    // The children do not depend on one another: apply them at once.
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace);
    let (deployment, canary, service, pdb, autoscaler, policies) = futures::try_join!(
        apply_child(&deployments, &caches.deployments, wanted.deployment, uid),
        apply_or_delete(
            &deployments,
            &caches.deployments,
            wanted_canary,
            namespace,
            &canary_name,
            uid
        ),
        apply_child(&services, &caches.services, wanted.service, uid),
        apply_or_delete(
            &pdbs,
            &caches.pod_disruption_budgets,
            wanted.pod_disruption_budget,
            namespace,
            &name,
            uid
        ),
        apply_or_delete(
            &hpas,
            &caches.autoscalers,
            wanted.horizontal_pod_autoscaler,
            namespace,
            &name,
            uid
        ),
        reconcile_network_policies(ctx, ms, namespace, uid, wanted.network_policies),
    )?;
    if deployment.changed {
        changes.applied.push("Deployment".to_owned());
    }
    if service.changed {
        changes.applied.push("Service".to_owned());
    }
    canary.record("canary Deployment", &mut changes);
    pdb.record("PodDisruptionBudget", &mut changes);
    autoscaler.record("HorizontalPodAutoscaler", &mut changes);
    changes.extend(policies);
    report_changes(ctx, ms, namespace, &changes);
    Ok(AppliedChildren {
        deployment: deployment.object,
        canary: match canary {
            OptionalChild::Applied(canary) => Some(canary.object),
            _ => None,
        },
        verdict,
        revision,
        stores: stores.observations,
        autoscaler: match autoscaler {
            OptionalChild::Applied(hpa) => Some(hpa.object),
            _ => None,
        },
    })
}

/// Counts the writes, logs them, and records them as `Applied` and `Deleted` events.
fn report_changes(ctx: &Context, ms: &Microservice, namespace: &str, changes: &Changes) {
    let name = ms.name_any();
    for _ in 0..changes.writes() {
        ctx.metrics.writes.inc();
    }
    let Changes { applied, deleted } = changes;
    if !applied.is_empty() {
        info!(microservice = %name, %namespace, children = ?applied, "applied");
    }
    // A new Microservice (no status yet) gets no Applied event: its first status says the
    // same, and the Ready event, or a Warning, follows. At scale an event per creation is a
    // write per Microservice on the API server for nothing new.
    if !applied.is_empty() && ms.status.is_some() {
        publish(
            ctx,
            ms,
            EventType::Normal,
            events::reasons::APPLIED,
            events::actions::APPLY,
            format!("applied {}", applied.join(", ")),
        );
    }
    if !deleted.is_empty() {
        info!(microservice = %name, %namespace, children = ?deleted, "deleted");
        publish(
            ctx,
            ms,
            EventType::Normal,
            events::reasons::DELETED,
            events::actions::DELETE,
            format!("deleted {}, no longer wanted", deleted.join(", ")),
        );
    }
}

/// What became of a child that is wanted only in some cases (a PDB, an HPA).
enum OptionalChild<K> {
    Applied(Applied<K>),
    Deleted,
    Untouched,
}

impl<K> OptionalChild<K> {
    /// Adds `kind` to what was applied or deleted, when something was.
    fn record(&self, kind: &str, changes: &mut Changes) {
        match self {
            Self::Applied(child) if child.changed => changes.applied.push(kind.to_owned()),
            Self::Deleted => changes.deleted.push(kind.to_owned()),
            _ => {}
        }
    }
}

/// Applies `wanted` when there is one, else deletes the child `name` this owner controls.
async fn apply_or_delete<K>(
    api: &Api<K>,
    cache: &ChildCache<K>,
    wanted: Option<K>,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<OptionalChild<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    Ok(match wanted {
        Some(child) => OptionalChild::Applied(apply_child(api, cache, child, uid).await?),
        None if delete_child(api, cache, namespace, name, uid).await? => OptionalChild::Deleted,
        None => OptionalChild::Untouched,
    })
}

/// Applies the wanted NetworkPolicies at once; with policies switched off, deletes those the
/// operator wrote before (the status remembers that it did).
async fn reconcile_network_policies(
    ctx: &Context,
    ms: &Microservice,
    namespace: &str,
    uid: &str,
    wanted: Vec<NetworkPolicy>,
) -> Result<Changes> {
    let policies = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace);
    let cache = &ctx.caches.network_policies;
    let mut changes = Changes::default();
    let applies = wanted.into_iter().map(|policy| {
        let name = policy.name_any();
        let policies = &policies;
        async move {
            let applied = apply_child(policies, cache, policy, uid).await?;
            Ok::<_, Error>(applied.changed.then(|| format!("NetworkPolicy {name}")))
        }
    });
    changes.applied.extend(
        futures::future::try_join_all(applies)
            .await?
            .into_iter()
            .flatten(),
    );
    let wrote_policies = ms
        .status
        .as_ref()
        .is_some_and(|s| s.network_policy.is_some());
    if !ctx.config.settings.network_policies && wrote_policies {
        let name = ms.name_any();
        let mut names = vec![name.clone()];
        names.extend(
            ServerEngine::ALL
                .iter()
                .map(|engine| meta::store_object_name(&name, engine.as_str())),
        );
        for policy_name in names {
            if delete_child(&policies, cache, namespace, &policy_name, uid).await? {
                changes.deleted.push(format!("NetworkPolicy {policy_name}"));
            }
        }
    }
    Ok(changes)
}

/// What [`apply_children`] returns for the status.
struct AppliedChildren {
    deployment: Deployment,
    /// The canary's Deployment, while a canary runs.
    canary: Option<Deployment>,
    /// What the canary's analysis decided in this reconcile.
    verdict: Option<Verdict>,
    /// The revision the spec asks for, and whether the stable one was applied in its place.
    revision: delivery::Applied,
    stores: Vec<StoreObservation>,
    autoscaler: Option<HorizontalPodAutoscaler>,
}

/// Whether the Deployment is not Available (or past its progress deadline) and some of its
/// pods are not ready: only then
/// can its pods tell why (a Deployment just made has none yet, and its next status update
/// brings the owner back; pods that are all ready are only waiting out `minReadySeconds`).
fn has_pods_not_ready(deployment: &Deployment) -> bool {
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    // Past its progress deadline, a new revision's pods tell why it is rolled back, even
    // while the old pods keep the Deployment available.
    (!status::deployment_available(status) || status::progress_deadline_exceeded(status))
        && status.ready_replicas.unwrap_or(0) < status.replicas.unwrap_or(0)
}

/// What the pods of a Microservice that is not available say.
struct PodsSeen {
    /// Why they are not ready, when they tell.
    problem: Option<pods::PodProblem>,
    /// When a pod that runs unready will have failed its readiness probe long enough for its
    /// events to tell why: the reconcile comes back then rather than at the next requeue.
    probes_due: Option<Duration>,
}

/// Reads the Microservice's pods (one list call, by label selector) for a reason they fail,
/// and, when a pod has failed long enough for its probes to explain it, that pod's probe
/// events (one more list call).
async fn read_pod_problem(client: &Client, namespace: &str, name: &str) -> Result<PodsSeen> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&meta::selector_string(name)))
        .await?;
    let now = now();
    let events = match pods::needs_events(&pods.items, &now) {
        Some(pod) => {
            Api::<CoreEvent>::namespaced(client.clone(), namespace)
                .list(&ListParams::default().fields(&format!(
                    "involvedObject.kind=Pod,involvedObject.name={pod},reason={}",
                    pods::UNHEALTHY_EVENT_REASON
                )))
                .await?
                .items
        }
        None => Vec::new(),
    };
    Ok(PodsSeen {
        problem: pods::problem(&pods.items, &events),
        probes_due: pods::events_due_in(&pods.items, &now),
    })
}

async fn write_status(
    ctx: &Context,
    ms: &Microservice,
    namespace: &str,
    status: &MicroserviceStatus,
) -> Result<()> {
    let api = Api::<Microservice>::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": Microservice::api_version(&()),
        "kind": Microservice::kind(&()),
        "status": status,
    });
    api.patch_status(
        &ms.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.writes.inc();
    Ok(())
}

/// Records an event for each condition change worth a human's attention.
fn publish_transition_events(ctx: &Context, ms: &Microservice, new: &MicroserviceStatus) {
    let old: &[Condition] = ms
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    for event in status_events(old, &new.conditions) {
        publish(
            ctx,
            ms,
            event.type_,
            event.reason,
            events::actions::RECONCILE,
            event.note,
        );
    }
}

/// An event derived from a change of conditions.
#[derive(Debug, PartialEq)]
pub struct StatusEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// The event reason.
    pub reason: &'static str,
    /// The human-readable note.
    pub note: String,
}

/// The events to record when the conditions go from `old` to `new`: Ready and NotReady when
/// `Ready` flips or its reason changes (not for a rollout under way), DependencyMissing when
/// a dependency disappears, StoresReady and StoresNotReady when the stores' state changes,
/// and InvalidSpec when the spec becomes invalid. Nothing when nothing changed.
pub fn status_events(old: &[Condition], new: &[Condition]) -> Vec<StatusEvent> {
    let changed = |type_: &str| -> Option<&Condition> {
        let new = find_condition(new, type_)?;
        match find_condition(old, type_) {
            Some(old) if old.status == new.status && old.reason == new.reason => None,
            _ => Some(new),
        }
    };
    let mut events = Vec::new();
    // A rollout under way is progress, not a problem: its start is already told by the
    // Applied event, and a Warning for every new or updated Microservice would be noise. A
    // rollout that fails turns into a reason of its own (a pod's, or the Deployment's
    // ProgressDeadlineExceeded), and that one is told.
    let in_progress = |ready: &Condition| {
        ready.status != "True" && status::ROLLOUT_IN_PROGRESS.contains(&ready.reason.as_str())
    };
    if let Some(ready) = changed(conditions::READY).filter(|ready| !in_progress(ready)) {
        let (type_, reason) = match (ready.status.as_str(), ready.reason.as_str()) {
            ("True", _) => (EventType::Normal, events::reasons::READY),
            (_, reasons::INVALID_SPEC) => (EventType::Warning, events::reasons::INVALID_SPEC),
            (_, reasons::SUSPENDED) => (EventType::Normal, events::reasons::SUSPENDED),
            _ => (EventType::Warning, events::reasons::NOT_READY),
        };
        events.push(StatusEvent {
            type_,
            reason,
            note: format!("{}: {}", ready.reason, ready.message),
        });
    }
    if let Some(deps) = changed(conditions::DEPENDENCIES_READY)
        && deps.reason == reasons::DEPENDENCY_MISSING
    {
        events.push(StatusEvent {
            type_: EventType::Warning,
            reason: events::reasons::DEPENDENCY_MISSING,
            note: deps.message.clone(),
        });
    }
    if let Some(rolled_back) = changed(conditions::ROLLED_BACK) {
        events.push(StatusEvent {
            type_: EventType::Warning,
            reason: events::reasons::ROLLED_BACK,
            note: rolled_back.message.clone(),
        });
    }
    // Each new failure of a backup is told (its message names the run), and the first
    // success after one.
    if let Some(backed_up) = find_condition(new, conditions::BACKED_UP) {
        let before = find_condition(old, conditions::BACKED_UP);
        let failing = |c: &Condition| c.status != "True" && c.reason != reasons::NO_BACKUP_YET;
        if failing(backed_up)
            && before.is_none_or(|b| b.reason != backed_up.reason || b.message != backed_up.message)
        {
            events.push(StatusEvent {
                type_: EventType::Warning,
                reason: events::reasons::BACKUP_FAILED,
                note: format!("{}: {}", backed_up.reason, backed_up.message),
            });
        } else if backed_up.status == "True" && before.is_some_and(failing) {
            events.push(StatusEvent {
                type_: EventType::Normal,
                reason: events::reasons::BACKED_UP,
                note: backed_up.message.clone(),
            });
        }
    }
    if let Some(stores) = changed(conditions::STORES_READY)
        && stores.reason != reasons::NO_STORES
    {
        let (type_, reason) = if stores.status == "True" {
            (EventType::Normal, events::reasons::STORES_READY)
        } else {
            (EventType::Warning, events::reasons::STORES_NOT_READY)
        };
        events.push(StatusEvent {
            type_,
            reason,
            note: format!("{}: {}", stores.reason, stores.message),
        });
    }
    events
}

/// Records an event without waiting for it: events are best effort, and a reconcile that
/// waited for each would hold its slot for another round trip.
fn publish(
    ctx: &Context,
    ms: &Microservice,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    let recorder = ctx.recorder.clone();
    let writes = ctx.metrics.writes.clone();
    let reference = ms.object_ref(&());
    let Ok(mut event_writes) = ctx.event_writes.lock() else {
        return;
    };
    // Reap the finished ones, so the set holds only those still being written.
    while event_writes.try_join_next().is_some() {}
    event_writes.spawn(async move {
        // Failing to record one must not fail the reconcile.
        match recorder.publish(&event, &reference).await {
            Ok(()) => {
                writes.inc();
            }
            Err(err) => warn!(error = %err, "could not record an event"),
        }
    });
}

/// Retries a failed reconcile after an exponential backoff per Microservice.
pub fn error_policy(ms: Arc<Microservice>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.record_error(error);
    let microservices = &ctx.caches.microservices;
    let failures = ctx
        .failures
        .lock()
        .map(|mut failures| {
            count_failure(&mut failures, ObjectRef::from_obj(ms.as_ref()), |other| {
                microservices.get(other).is_some()
            })
        })
        .unwrap_or(1);
    let delay = backoff_delay(failures);
    warn!(
        microservice = %ms.name_any(),
        namespace = ms.namespace().unwrap_or_default(),
        error = %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Counts one more failure of `object` and returns its count. The counts of Microservices
/// that no longer `exist` are dropped: a deleted object is never reconciled again, so nothing
/// else would remove them.
fn count_failure<K: Eq + std::hash::Hash + Clone>(
    failures: &mut HashMap<K, u32>,
    object: K,
    exist: impl Fn(&K) -> bool,
) -> u32 {
    failures.retain(|other, _| *other == object || exist(other));
    let count = failures.entry(object).or_insert(0);
    *count = count.saturating_add(1);
    *count
}

/// The wait before retry number `failures` (1 for the first): 1 s doubling up to 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn pods_are_read_only_while_an_unavailable_deployment_has_pods_not_ready() {
        use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
        let deployment = |replicas: i32, ready: i32, available: &str| Deployment {
            status: Some(DeploymentStatus {
                replicas: Some(replicas),
                ready_replicas: Some(ready),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: available.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!has_pods_not_ready(&Deployment::default()), "just made");
        assert!(
            !has_pods_not_ready(&deployment(0, 0, "False")),
            "no pod yet"
        );
        assert!(
            has_pods_not_ready(&deployment(1, 0, "False")),
            "a pod starting or failing"
        );
        assert!(
            has_pods_not_ready(&deployment(2, 1, "False")),
            "a new pod of a rollout"
        );
        assert!(
            !has_pods_not_ready(&deployment(1, 1, "False")),
            "ready, waiting out minReadySeconds"
        );
        assert!(!has_pods_not_ready(&deployment(2, 1, "True")), "available");
    }

    #[test]
    fn progress_waits_out_its_delay_from_when_it_was_first_seen() {
        let progress = Duration::from_secs(5);
        let first_status = Duration::from_secs(15);
        let hold = ProgressHold::new(first_status);
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let secs = Duration::from_secs;
        assert_eq!(hold.wait(&"a", at(0), progress), Some(secs(5)));
        assert_eq!(
            hold.wait(&"a", at(2), progress),
            Some(secs(3)),
            "more progress"
        );
        assert_eq!(
            hold.wait(&"b", at(4), progress),
            Some(secs(5)),
            "per object"
        );
        assert_eq!(
            hold.wait(&"new", at(4), first_status),
            Some(secs(15)),
            "a first status has its own delay"
        );
        assert_eq!(
            hold.wait(&"a", at(5), progress),
            None,
            "its delay is out: write it"
        );
        hold.release(&"a");
        assert_eq!(
            hold.wait(&"a", at(6), progress),
            Some(secs(5)),
            "a new hold"
        );
        hold.release(&"a");
        assert_eq!(hold.wait(&"new", at(14), first_status), Some(secs(5)));
        assert_eq!(hold.wait(&"new", at(19), first_status), None);
        hold.release(&"new");
        // Entries nobody released (a deleted object) are dropped once surely stale: the
        // longest delay and a minute after they were first seen.
        assert_eq!(hold.wait(&"c", at(79), progress), Some(secs(5)));
        assert_eq!(hold.held.lock().unwrap().len(), 1, "b was dropped");
    }

    #[test]
    fn failure_counts_of_deleted_microservices_are_dropped() {
        let mut failures = HashMap::from([("kept", 3), ("deleted", 7)]);
        let exist = |name: &&str| *name != "deleted";
        assert_eq!(count_failure(&mut failures, "kept", exist), 4);
        assert_eq!(failures.get("deleted"), None, "no count left behind");
        assert_eq!(count_failure(&mut failures, "new", exist), 1);
        assert_eq!(failures.len(), 2);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(20), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn events_only_on_changes() {
        let ready = vec![condition(conditions::READY, "True", reasons::READY)];
        assert!(status_events(&ready, &ready).is_empty());

        let rolling_out = vec![condition(conditions::READY, "False", reasons::ROLLING_OUT)];
        assert!(status_events(&[], &rolling_out).is_empty(), "a new rollout");
        assert!(status_events(&ready, &rolling_out).is_empty(), "an update");
        assert_eq!(status_events(&rolling_out, &ready).len(), 1, "then Ready");
        let starting = vec![condition(
            conditions::READY,
            "False",
            reasons::MINIMUM_REPLICAS_UNAVAILABLE,
        )];
        assert!(status_events(&[], &starting).is_empty(), "pods starting");

        let crashing = vec![condition(conditions::READY, "False", "CrashLoopBackOff")];
        let events = status_events(&ready, &crashing);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].reason, &events[0].type_),
            ("NotReady", &EventType::Warning)
        );

        let missing = vec![condition(
            conditions::DEPENDENCIES_READY,
            "False",
            reasons::DEPENDENCY_MISSING,
        )];
        let events = status_events(&[], &missing);
        assert_eq!(events[0].reason, events::reasons::DEPENDENCY_MISSING);
    }
}
