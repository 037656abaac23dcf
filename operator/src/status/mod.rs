//! Pure functions that compute a Microservice's status from what the operator observed: the
//! Deployment, the pods when something is wrong, and the dependencies.
//!
//! Conditions keep their `lastTransitionTime` unless their status flips, and messages only
//! change when the facts do, so a status computed twice from the same facts is equal and the
//! reconciler writes nothing at steady state. See [`crate::api::conditions`] for the meaning of
//! each condition.

pub mod analysis;
pub mod delivery;
pub mod pods;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::api::conditions::{self, reasons};
use crate::api::{
    BackupStatus, DependencyStatus, Microservice, MicroserviceStatus, StoreStatus, default_port,
    dependency_reasons,
};
use crate::children::backup::RunReport;
use crate::children::meta;
use crate::children::stores::{Engine, PlannedStore};
use crate::children::workload::{self, ReplicaControl};
use pods::PodProblem;

/// Longest condition message; a pod's message can be long, and a status is no log.
const MAX_MESSAGE_LEN: usize = 512;

/// Whether the Deployment controller reports the Deployment `Available`.
pub fn deployment_available(status: &k8s_openapi::api::apps::v1::DeploymentStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Available")
        .is_some_and(|c| c.status == "True")
}

/// Whether the Deployment controller gave up on the rollout: its `Progressing` condition is
/// False with `ProgressDeadlineExceeded`.
pub fn progress_deadline_exceeded(status: &k8s_openapi::api::apps::v1::DeploymentStatus) -> bool {
    status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    })
}

/// What the reconciler observed, the input of [`compute_status`].
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Deployment as the API server returned it (None before it exists).
    pub deployment: Option<Deployment>,
    /// Why pods are not ready, looked up only when the Deployment is not available.
    pub pod_problem: Option<PodProblem>,
    /// The dependencies, from [`dependency_statuses`].
    pub dependencies: Vec<DependencyStatus>,
    /// Set when the spec breaks a rule the schema cannot check: nothing is applied then.
    pub invalid_spec: Option<String>,
    /// The stores of `spec.stores`, from [`crate::controller::provision`].
    pub stores: Vec<StoreObservation>,
    /// What the NetworkPolicies let through, when the operator writes them.
    pub network_policy: Option<String>,
    /// The HorizontalPodAutoscaler as the API server returned it, while one is wanted.
    pub autoscaler: Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    /// The stable revision and the rolled-back one, from [`delivery::decide`]; kept from the
    /// previous status when nothing was applied (an invalid spec).
    pub delivery: Option<delivery::Delivery>,
}

/// What the reconciler saw of one store.
#[derive(Clone, Debug)]
pub struct StoreObservation {
    /// The store as declared.
    pub store: PlannedStore,
    /// An object the store needs exists and belongs to someone else.
    pub conflict: Option<String>,
    /// The declared StorageClass, when it does not exist.
    pub missing_storage_class: Option<String>,
    /// The claim holding the data (read while it matters: embedded, or server not ready).
    pub claim: Option<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    /// The newest event about a claim that is not bound, as `Reason: message`.
    pub claim_event: Option<String>,
    /// The server of a server engine.
    pub server: Option<ServerObservation>,
    /// The declared size grew and the claim's StorageClass cannot expand it.
    pub growth_refused: Option<GrowthRefused>,
    /// Its backups, when declared.
    pub backup: Option<BackupObservation>,
}

/// What the reconciler saw of a store's backups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupObservation {
    /// Where they go (`pvc://CLAIM/OBJECT-NAME/`).
    pub target: String,
    /// What of the target does not exist (its claim, its bucket's credentials), said so
    /// that it tells what to do.
    pub missing_target: Option<String>,
    /// The newest run that succeeded: when it finished, and what it wrote (when its pod
    /// still tells).
    pub last_success: Option<(Time, Option<RunReport>)>,
    /// The newest run that failed: when, and why.
    pub last_failure: Option<(Time, String)>,
    /// The value of `kea.dev/backup-requested` a Job exists for.
    pub request: Option<String>,
    /// A run has not finished yet: the reconcile comes back soon to see how it ends.
    pub running: bool,
    /// Why a run's pod cannot run (the Job and the pod problem), while it waits.
    pub cannot_run: Option<String>,
}

/// A store whose size was raised on a StorageClass that cannot expand volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrowthRefused {
    /// The claim's StorageClass; empty when it has none.
    pub class: String,
    /// What the claim requests, and keeps.
    pub current: String,
}

impl StoreObservation {
    /// An observation of `store` with nothing seen yet.
    pub fn new(store: PlannedStore) -> Self {
        Self {
            store,
            conflict: None,
            missing_storage_class: None,
            claim: None,
            claim_event: None,
            server: None,
            growth_refused: None,
            backup: None,
        }
    }
}

/// What the reconciler saw of a store server.
#[derive(Clone, Debug)]
pub struct ServerObservation {
    /// The StatefulSet reports its pod ready.
    pub ready: bool,
    /// The server's pod, read when it is not ready.
    pub pod: Option<Pod>,
}

/// The status of `ms` given what was observed. `now` stamps conditions whose status changed.
pub fn compute_status(ms: &Microservice, observed: &Observed, now: &Time) -> MicroserviceStatus {
    let name = ms.name_any();
    let namespace = ms.namespace().unwrap_or_default();
    let generation = ms.metadata.generation;
    let previous = ms
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let rollout = Rollout::new(ms, observed.deployment.as_ref());
    let suspended = ms.spec.suspend;
    let stores = store_statuses(ms, &observed.stores);
    let (stores_ready, stores_reason, stores_message) = stores_condition(ms, &stores);

    let stores_verdict = Verdict::new(stores_ready, &stores_reason, stores_message);
    let mut verdicts = vec![
        (
            conditions::READY,
            ready(ms, observed, &rollout, &stores_verdict),
        ),
        (conditions::AVAILABLE, available(ms, observed, &rollout)),
        (conditions::PROGRESSING, progressing(observed, &rollout)),
    ];
    let (deps_ready, deps_reason, deps_message) = dependencies_condition(&observed.dependencies);
    verdicts.push((
        conditions::DEPENDENCIES_READY,
        Verdict::new(deps_ready, deps_reason, deps_message),
    ));
    verdicts.push((conditions::STORES_READY, stores_verdict));
    if let Some((ok, reason, message)) = backed_up_condition(&stores) {
        verdicts.push((conditions::BACKED_UP, Verdict::new(ok, &reason, message)));
    }
    // Autoscaling: only while an autoscaler is wanted. An autoscaler that cannot read the
    // pods' CPU (no metrics API in the cluster) leaves the pods at their minimum for ever.
    if ms.spec.autoscaling.is_some() && !suspended {
        let (active, reason, message) = autoscaler_state(observed.autoscaler.as_ref());
        verdicts.push((
            conditions::AUTOSCALING,
            Verdict::new(active, &reason, message),
        ));
    }
    let delivery = observed
        .delivery
        .clone()
        .unwrap_or_else(|| delivery::Delivery {
            stable: ms.status.as_ref().and_then(|s| s.stable_revision.clone()),
            rolled_back: ms.status.as_ref().and_then(|s| s.rolled_back.clone()),
            canary: ms.status.as_ref().and_then(|s| s.canary.clone()),
        });
    if let Some(rolled_back) = &delivery.rolled_back {
        verdicts.push((
            conditions::ROLLED_BACK,
            Verdict::new(true, &rolled_back.reason, rolled_back.message.clone()),
        ));
    }
    verdicts.push((
        conditions::SUSPENDED,
        if suspended {
            Verdict::new(true, reasons::SUSPENDED, "spec.suspend is true".into())
        } else {
            Verdict::new(false, reasons::ACTIVE, "spec.suspend is false".into())
        },
    ));
    let new = verdicts
        .into_iter()
        .map(|(type_, v)| condition(type_, v.status, &v.reason, v.message, generation, now))
        .collect();

    MicroserviceStatus {
        observed_generation: generation,
        replicas: rollout.replicas,
        ready_replicas: rollout.ready,
        updated_replicas: rollout.updated,
        selector: Some(meta::selector_string(&name)),
        url: Some(meta::service_url(&name, &namespace, ms.spec.port)),
        conditions: merge_conditions(previous, new),
        dependencies: observed.dependencies.clone(),
        stores,
        network_policy: observed.network_policy.clone(),
        stable_revision: delivery.stable,
        rolled_back: delivery.rolled_back,
        canary: delivery.canary,
    }
}

/// The status, reason and message of one condition.
#[derive(Clone, Debug)]
struct Verdict {
    status: bool,
    reason: String,
    message: String,
}

impl Verdict {
    fn new(status: bool, reason: &str, message: String) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            message,
        }
    }
}

const SUSPENDED_MESSAGE: &str = "scaled to zero by spec.suspend";

/// `Ready`: a valid spec, not suspended, its stores ready, and the rollout complete with the
/// pods available.
fn ready(ms: &Microservice, observed: &Observed, rollout: &Rollout, stores: &Verdict) -> Verdict {
    if let Some(problem) = &observed.invalid_spec {
        Verdict::new(false, reasons::INVALID_SPEC, problem.clone())
    } else if ms.spec.suspend {
        Verdict::new(false, reasons::SUSPENDED, SUSPENDED_MESSAGE.into())
    } else if !stores.status && stores.reason != reasons::VOLUME_CANNOT_GROW {
        // A service without its data is not ready, whatever its pods say. A store that only
        // cannot grow still has its data, at its former size.
        Verdict {
            status: false,
            ..stores.clone()
        }
    } else if rollout.complete && rollout.available == Some(true) {
        Verdict::new(
            true,
            reasons::READY,
            format!("{} of {} pods ready", rollout.ready, rollout.desired),
        )
    } else {
        let (reason, message) = rollout.not_ready_explanation(observed.pod_problem.as_ref());
        Verdict::new(false, &reason, message)
    }
}

/// `Available`: the Deployment has its minimum of pods available.
fn available(ms: &Microservice, observed: &Observed, rollout: &Rollout) -> Verdict {
    if ms.spec.suspend {
        return Verdict::new(false, reasons::SUSPENDED, SUSPENDED_MESSAGE.into());
    }
    match rollout.available {
        None => Verdict::new(
            false,
            reasons::DEPLOYMENT_PENDING,
            "the Deployment does not exist yet".into(),
        ),
        Some(true) => Verdict::new(
            true,
            reasons::MINIMUM_REPLICAS_AVAILABLE,
            format!("{} pods available", rollout.available_replicas),
        ),
        Some(false) => match &observed.pod_problem {
            Some(problem) => Verdict::new(false, &problem.reason, problem.message.clone()),
            None => Verdict::new(
                false,
                reasons::MINIMUM_REPLICAS_UNAVAILABLE,
                format!(
                    "{} of {} pods available",
                    rollout.available_replicas, rollout.desired
                ),
            ),
        },
    }
}

/// `Progressing`: a rollout under way (True), complete, or stuck past its deadline.
fn progressing(observed: &Observed, rollout: &Rollout) -> Verdict {
    let canary = observed.delivery.as_ref().and_then(|d| d.canary.as_ref());
    if let Some(canary) = canary {
        Verdict::new(
            true,
            reasons::CANARY_ANALYSIS,
            format!(
                "canary of image {} beside the stable pods, {} checks passed in a row, {} failed: {}",
                canary.image, canary.passed_checks, canary.failed_checks, canary.message
            ),
        )
    } else if rollout.deadline_exceeded {
        let message = observed
            .pod_problem
            .as_ref()
            .map(|p| p.message.clone())
            .unwrap_or_else(|| "the rollout made no progress within its deadline".into());
        Verdict::new(false, reasons::PROGRESS_DEADLINE_EXCEEDED, message)
    } else if rollout.complete {
        Verdict::new(
            false,
            reasons::ROLLOUT_COMPLETE,
            "the current spec is rolled out".into(),
        )
    } else {
        Verdict::new(true, reasons::ROLLING_OUT, rollout.progress_message())
    }
}

/// The status of each declared store. Never reads a credential: there is none to read.
pub fn store_statuses(ms: &Microservice, observations: &[StoreObservation]) -> Vec<StoreStatus> {
    let namespace = ms.namespace().unwrap_or_default();
    observations
        .iter()
        .map(|seen| {
            let (ready, reason, message) = store_state(seen);
            let previous = previous_backup(ms, seen.store.role.as_str());
            StoreStatus {
                backup: seen
                    .backup
                    .as_ref()
                    .map(|observed| backup_status(previous, observed)),
                name: seen.store.role.as_str().to_owned(),
                engine: seen.store.engine_name().to_owned(),
                ready,
                host: seen.store.host(&namespace),
                volume: seen.store.claim_name.clone(),
                deletion_policy: seen.store.deletion_policy,
                reason: reason.to_owned(),
                message: truncate(message),
            }
        })
        .collect()
}

/// The backup status the last status written gave the store `role` (`sql`, `nosql`).
pub fn previous_backup<'a>(ms: &'a Microservice, role: &str) -> Option<&'a BackupStatus> {
    ms.status
        .as_ref()?
        .stores
        .iter()
        .find(|s| s.name == role)?
        .backup
        .as_ref()
}

/// The backup status of a store: the newest success and failure of those seen now and
/// those on the previous status (finished Jobs are deleted after a while), and the reason.
pub fn backup_status(previous: Option<&BackupStatus>, seen: &BackupObservation) -> BackupStatus {
    let previous = previous.cloned().unwrap_or_default();
    let newer = |time: &Time, than: &Option<Time>| than.as_ref().is_none_or(|t| time.0 > t.0);
    let mut status = BackupStatus {
        target: seen.target.clone(),
        last_request: seen.request.clone().or(previous.last_request.clone()),
        ..previous.clone()
    };
    if let Some((time, report)) = &seen.last_success
        && newer(time, &previous.last_successful_time)
    {
        status.last_successful_time = Some(time.clone());
        status.last_location = report.as_ref().map(|r| r.location.clone());
        status.last_size_bytes = report.as_ref().map(|r| r.size);
    }
    // A new failure brings its own words; otherwise the previous status keeps its own.
    let failure = match &seen.last_failure {
        Some((time, why)) if newer(time, &previous.last_failure_time) => {
            status.last_failure_time = Some(time.clone());
            Some(why.clone())
        }
        _ => (previous.reason == reasons::BACKUP_FAILED).then(|| previous.message.clone()),
    };
    let failed_last = match (&status.last_failure_time, &status.last_successful_time) {
        (Some(failed), Some(succeeded)) => failed.0 > succeeded.0,
        (Some(_), None) => true,
        _ => false,
    };
    (status.reason, status.message) = if let Some(missing) = &seen.missing_target {
        (reasons::BACKUP_TARGET_NOT_FOUND.to_owned(), missing.clone())
    } else if let Some(why) = &seen.cannot_run {
        (reasons::BACKUP_CANNOT_RUN.to_owned(), truncate(why.clone()))
    } else if failed_last {
        (
            reasons::BACKUP_FAILED.to_owned(),
            truncate(failure.unwrap_or_else(|| "the last run failed".to_owned())),
        )
    } else if let Some(time) = &status.last_successful_time {
        (
            reasons::BACKUP_SUCCEEDED.to_owned(),
            format!(
                "last backup finished at {}{}",
                time.0,
                status
                    .last_location
                    .as_ref()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ),
        )
    } else {
        (
            reasons::NO_BACKUP_YET.to_owned(),
            "no run has finished yet".to_owned(),
        )
    };
    status
}

/// The `BackedUp` condition over the stores that declare `backup`; None when none does.
fn backed_up_condition(stores: &[StoreStatus]) -> Option<(bool, String, String)> {
    let with_backup: Vec<(&StoreStatus, &BackupStatus)> = stores
        .iter()
        .filter_map(|s| s.backup.as_ref().map(|b| (s, b)))
        .collect();
    if with_backup.is_empty() {
        return None;
    }
    let severity = |reason: &str| match reason {
        reasons::BACKUP_TARGET_NOT_FOUND => 0,
        reasons::BACKUP_FAILED | reasons::BACKUP_CANNOT_RUN => 1,
        reasons::NO_BACKUP_YET => 2,
        _ => 3,
    };
    let (store, worst) = with_backup
        .iter()
        .min_by_key(|(_, b)| severity(&b.reason))
        .copied()?;
    let ok = worst.reason == reasons::BACKUP_SUCCEEDED;
    let message = if ok {
        let names: Vec<String> = with_backup
            .iter()
            .map(|(s, _)| format!("{} ({})", s.name, s.engine))
            .collect();
        format!("the last backup of {} succeeded", names.join(", "))
    } else {
        format!("store {} ({}): {}", store.name, store.engine, worst.message)
    };
    Some((ok, worst.reason.clone(), truncate(message)))
}

/// Whether one store can be used, and if not why, worst first.
fn store_state(seen: &StoreObservation) -> (bool, &'static str, String) {
    if let Some(conflict) = &seen.conflict {
        return (false, reasons::STORE_CONFLICT, conflict.clone());
    }
    if let Some(class) = &seen.missing_storage_class {
        return (
            false,
            reasons::STORAGE_CLASS_NOT_FOUND,
            format!(
                "StorageClass \"{class}\" does not exist: create it, or set stores.{}.storageClassName to an existing class (kubectl get storageclass)",
                seen.store.role.as_str()
            ),
        );
    }
    if let Some(refused) = &seen.growth_refused {
        let role = seen.store.role.as_str();
        let class = if refused.class.is_empty() {
            "the claim has no StorageClass, so it".to_owned()
        } else {
            format!(
                "StorageClass \"{}\" does not allow volume expansion (allowVolumeExpansion is not true), so it",
                refused.class
            )
        };
        return (
            false,
            reasons::VOLUME_CANNOT_GROW,
            format!(
                "stores.{role}.size is {} but PersistentVolumeClaim {} stays at {}: {class} cannot grow; the store keeps serving at {}. Allow expansion on the class if its provisioner supports it, or move the data to a store on a class that does",
                seen.store.size, seen.store.claim_name, refused.current, refused.current
            ),
        );
    }
    let claim_phase = seen
        .claim
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.phase.clone());
    let claim_problem = || -> (bool, &'static str, String) {
        let claim = &seen.store.claim_name;
        let detail = seen
            .claim_event
            .clone()
            .unwrap_or_else(|| "no event yet".to_owned());
        match &claim_phase {
            None => (
                false,
                reasons::VOLUME_NOT_BOUND,
                format!("PersistentVolumeClaim {claim} does not exist yet"),
            ),
            Some(phase) => (
                false,
                reasons::VOLUME_NOT_BOUND,
                format!("PersistentVolumeClaim {claim} is {phase}: {detail}"),
            ),
        }
    };
    match seen.store.engine {
        Engine::Embedded(_) => {
            if claim_phase.as_deref() == Some("Bound") {
                (true, reasons::READY, "volume bound".to_owned())
            } else {
                claim_problem()
            }
        }
        Engine::Server(_) => {
            let Some(server) = &seen.server else {
                return (
                    false,
                    reasons::STORE_PENDING,
                    "not provisioned yet".to_owned(),
                );
            };
            if server.ready {
                return (true, reasons::READY, "server ready".to_owned());
            }
            let pod_name = format!("{}-0", seen.store.object_name);
            let Some(pod) = &server.pod else {
                if seen.claim.is_some() && claim_phase.as_deref() != Some("Bound") {
                    return claim_problem();
                }
                return (
                    false,
                    reasons::STORE_PENDING,
                    format!("pod {pod_name} does not exist yet"),
                );
            };
            if let Some(problem) = pods::problem(std::slice::from_ref(pod), &[]) {
                // Unschedulable because of the claim: the claim's event says more.
                if problem.reason == pods::UNSCHEDULABLE && claim_phase.as_deref() != Some("Bound")
                {
                    return claim_problem();
                }
                let reason = pods::REASONS
                    .iter()
                    .find(|r| **r == problem.reason)
                    .copied()
                    .unwrap_or(reasons::STORE_POD_NOT_READY);
                return (false, reason, problem.message);
            }
            if claim_phase.as_deref() != Some("Bound") && seen.claim.is_some() {
                return claim_problem();
            }
            (
                false,
                reasons::STORE_POD_NOT_READY,
                format!("pod {pod_name} is not ready yet"),
            )
        }
    }
}

/// The HPA's own `ScalingActive` condition, or `AutoscalerPending` before it has one.
fn autoscaler_state(
    hpa: Option<&k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
) -> (bool, String, String) {
    let active = hpa
        .and_then(|h| h.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "ScalingActive"));
    match active {
        Some(c) => (
            c.status == "True",
            c.reason
                .clone()
                .unwrap_or_else(|| "ScalingActive".to_owned()),
            truncate(c.message.clone().unwrap_or_default()),
        ),
        None => (
            false,
            reasons::AUTOSCALER_PENDING.to_owned(),
            "the HorizontalPodAutoscaler has not reported yet".to_owned(),
        ),
    }
}

/// The `StoresReady` condition: status, reason and message.
fn stores_condition(ms: &Microservice, stores: &[StoreStatus]) -> (bool, String, String) {
    let declared = ms
        .spec
        .stores
        .as_ref()
        .is_some_and(|s| s.sql.is_some() || s.nosql.is_some());
    if !declared {
        return (
            true,
            reasons::NO_STORES.to_owned(),
            "spec.stores is empty: embedded stores on the pod's /data emptyDir, lost with the pod"
                .to_owned(),
        );
    }
    if stores.is_empty() {
        return (
            false,
            reasons::STORE_PENDING.to_owned(),
            "the stores are not provisioned yet".to_owned(),
        );
    }
    // A store without its data first; one that only cannot grow last.
    let failing = stores
        .iter()
        .filter(|s| !s.ready)
        .min_by_key(|s| s.reason == reasons::VOLUME_CANNOT_GROW);
    if let Some(failing) = failing {
        return (
            false,
            failing.reason.clone(),
            truncate(format!(
                "store {} ({}): {}",
                failing.name, failing.engine, failing.message
            )),
        );
    }
    let names: Vec<String> = stores
        .iter()
        .map(|s| format!("{} ({})", s.name, s.engine))
        .collect();
    (
        true,
        reasons::STORES_READY.to_owned(),
        format!("ready: {}", names.join(", ")),
    )
}

/// Returns `new`, where each condition whose status did not change keeps the
/// `lastTransitionTime` it had in `previous`.
pub fn merge_conditions(previous: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut condition| {
            if let Some(old) = previous.iter().find(|old| old.type_ == condition.type_)
                && old.status == condition.status
            {
                condition.last_transition_time = old.last_transition_time.clone();
            }
            condition
        })
        .collect()
}

/// The reasons of a rollout under way that is not failing (`Ready`, `Available` and
/// `Progressing` say so while pods come up).
pub const ROLLOUT_IN_PROGRESS: &[&str] = &[
    reasons::DEPLOYMENT_PENDING,
    reasons::ROLLING_OUT,
    reasons::MINIMUM_REPLICAS_UNAVAILABLE,
];

/// Whether `new` differs from `old` only by the progress of a rollout under way: the pod
/// counts, and the reasons and messages of conditions that say the rollout is progressing.
/// Such a change may wait a moment, so that one write carries several steps of a rollout;
/// any other (Ready, a failure, a new generation, a dependency, a store) is written at once.
pub fn is_progress_only(old: &MicroserviceStatus, new: &MicroserviceStatus) -> bool {
    fn without_progress(status: &MicroserviceStatus) -> MicroserviceStatus {
        let mut status = status.clone();
        status.replicas = 0;
        status.ready_replicas = 0;
        status.updated_replicas = 0;
        for condition in &mut status.conditions {
            if ROLLOUT_IN_PROGRESS.contains(&condition.reason.as_str()) {
                condition.reason.clear();
                condition.message.clear();
            }
        }
        status
    }
    old != new && without_progress(old) == without_progress(new)
}

/// Whether `new`, the first status of a Microservice, only reports a rollout under way: its
/// pods are coming up, nothing failed and nothing else is waited for. It may wait like
/// progress (for the controller's `first_status_delay`), so that a rollout that completes
/// within it is written once, as Ready; a failure, a dependency or store not ready, or a
/// suspended spec is written at once.
pub fn is_rollout_start(new: &MicroserviceStatus) -> bool {
    new.conditions.iter().all(|c| match c.type_.as_str() {
        conditions::READY | conditions::AVAILABLE | conditions::PROGRESSING => {
            ROLLOUT_IN_PROGRESS.contains(&c.reason.as_str())
        }
        conditions::DEPENDENCIES_READY | conditions::STORES_READY => c.status == "True",
        conditions::SUSPENDED => c.status == "False",
        _ => false,
    })
}

/// The reason a failed reconcile shows on the status, or `None` for failures that are not
/// the Microservice's (e.g. this replica lost the leadership).
pub fn failure_reason(error: &crate::Error) -> Option<&'static str> {
    use crate::Error;
    match error {
        Error::Kube(kube::Error::Api(status)) => Some(match status.code {
            403 => reasons::FORBIDDEN,
            409 => reasons::CHILD_CONFLICT,
            400 | 404 | 422 => reasons::CHILD_REJECTED,
            _ => reasons::API_ERROR,
        }),
        Error::Conflict(_) => Some(reasons::CHILD_CONFLICT),
        Error::Kube(_) | Error::Serialization(_) | Error::Io(_) => Some(reasons::API_ERROR),
        Error::InvalidObject(_) | Error::InvalidSpec(_) => Some(reasons::CHILD_REJECTED),
        Error::CrdNotInstalled | Error::LeadershipLost(_) | Error::WatchStopped(_) => None,
    }
}

/// What the user reads about a failed reconcile: the API server's own message where there is
/// one (it names the object and the field), the error otherwise.
pub fn failure_message(error: &crate::Error) -> String {
    match error {
        crate::Error::Kube(kube::Error::Api(status)) => status.message.clone(),
        other => other.to_string(),
    }
}

/// The status after a failed attempt to apply the children: the last status, with `Ready`
/// and `Reconciled` False for this generation, `reason` and `message`.
pub fn failed_status(
    ms: &Microservice,
    reason: &str,
    message: &str,
    now: &Time,
) -> MicroserviceStatus {
    let mut status = ms.status.clone().unwrap_or_default();
    let generation = ms.metadata.generation;
    let failed: Vec<Condition> = [conditions::READY, conditions::RECONCILED]
        .iter()
        .map(|type_| condition(type_, false, reason, message.to_owned(), generation, now))
        .collect();
    let mut conditions: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| !failed.iter().any(|f| f.type_ == c.type_))
        .cloned()
        .collect();
    conditions.extend(failed);
    status.conditions = merge_conditions(&status.conditions, conditions);
    status.observed_generation = generation;
    status
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a Microservice reports `Ready=True` for its current generation.
pub fn is_ready(ms: &Microservice) -> bool {
    ms.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, conditions::READY))
        .is_some_and(|c| c.status == "True" && c.observed_generation == ms.metadata.generation)
}

/// The status of each dependency of `ms`; `lookup` finds a Microservice of the same namespace
/// by name (the reconciler reads its cache, tests pass a closure over a slice).
pub fn dependency_statuses(
    ms: &Microservice,
    lookup: impl Fn(&str) -> Option<std::sync::Arc<Microservice>>,
) -> Vec<DependencyStatus> {
    let namespace = ms.namespace().unwrap_or_default();
    ms.spec
        .depends_on
        .iter()
        .map(|dependency| match lookup(&dependency.name) {
            Some(found) => {
                let ready = is_ready(&found);
                DependencyStatus {
                    name: dependency.name.clone(),
                    url: meta::service_url(&dependency.name, &namespace, found.spec.port),
                    ready,
                    reason: if ready {
                        dependency_reasons::READY
                    } else {
                        dependency_reasons::NOT_READY
                    }
                    .to_owned(),
                }
            }
            None => DependencyStatus {
                name: dependency.name.clone(),
                url: meta::service_url(&dependency.name, &namespace, default_port()),
                ready: false,
                reason: dependency_reasons::NOT_FOUND.to_owned(),
            },
        })
        .collect()
}

fn dependencies_condition(dependencies: &[DependencyStatus]) -> (bool, &'static str, String) {
    if dependencies.is_empty() {
        return (true, reasons::NO_DEPENDENCIES, "dependsOn is empty".into());
    }
    let missing: Vec<&str> = dependencies
        .iter()
        .filter(|d| d.reason == dependency_reasons::NOT_FOUND)
        .map(|d| d.name.as_str())
        .collect();
    let not_ready: Vec<&str> = dependencies
        .iter()
        .filter(|d| !d.ready && d.reason != dependency_reasons::NOT_FOUND)
        .map(|d| d.name.as_str())
        .collect();
    if !missing.is_empty() {
        let mut message = format!("Microservices not found: {}", missing.join(", "));
        if !not_ready.is_empty() {
            message.push_str(&format!("; not ready: {}", not_ready.join(", ")));
        }
        (false, reasons::DEPENDENCY_MISSING, message)
    } else if !not_ready.is_empty() {
        (
            false,
            reasons::DEPENDENCY_NOT_READY,
            format!("Microservices not ready: {}", not_ready.join(", ")),
        )
    } else {
        (
            true,
            reasons::DEPENDENCIES_READY,
            format!("all {} dependencies are ready", dependencies.len()),
        )
    }
}

/// The rollout state of the Deployment, reduced to what the conditions need.
struct Rollout {
    desired: i32,
    replicas: i32,
    ready: i32,
    updated: i32,
    available_replicas: i32,
    /// The Deployment's `Available` condition; None when there is no Deployment.
    available: Option<bool>,
    /// The Deployment controller has seen the latest spec and every pod runs it.
    complete: bool,
    deadline_exceeded: bool,
}

impl Rollout {
    fn new(ms: &Microservice, deployment: Option<&Deployment>) -> Self {
        let control = workload::replica_control(&ms.spec);
        let Some(deployment) = deployment else {
            return Self {
                desired: control.min_replicas(),
                replicas: 0,
                ready: 0,
                updated: 0,
                available_replicas: 0,
                available: None,
                complete: false,
                deadline_exceeded: false,
            };
        };
        let status = deployment.status.clone().unwrap_or_default();
        let desired = match control {
            ReplicaControl::Fixed(n) => n,
            // The autoscaler owns the number: whatever the Deployment currently asks for.
            ReplicaControl::Autoscaled { min, .. } => deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(min),
        };
        let available = deployment_available(&status);
        let deadline_exceeded = progress_deadline_exceeded(&status);
        let caught_up = match (status.observed_generation, deployment.metadata.generation) {
            (Some(observed), Some(generation)) => observed >= generation,
            _ => false,
        };
        let replicas = status.replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        let available_replicas = status.available_replicas.unwrap_or(0);
        Self {
            desired,
            replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated,
            available_replicas,
            available: Some(available),
            complete: caught_up
                && updated >= desired
                && replicas == updated
                && available_replicas >= desired,
            deadline_exceeded,
        }
    }

    fn progress_message(&self) -> String {
        if self.available.is_none() {
            return "waiting for the Deployment to be created".into();
        }
        format!(
            "{} of {} pods updated, {} available",
            self.updated, self.desired, self.available_replicas
        )
    }

    fn not_ready_explanation(&self, pod_problem: Option<&PodProblem>) -> (String, String) {
        if let Some(problem) = pod_problem {
            return (problem.reason.clone(), problem.message.clone());
        }
        if self.available.is_none() {
            return (
                reasons::DEPLOYMENT_PENDING.to_owned(),
                self.progress_message(),
            );
        }
        if self.deadline_exceeded {
            return (
                reasons::PROGRESS_DEADLINE_EXCEEDED.to_owned(),
                self.progress_message(),
            );
        }
        if self.available == Some(false) {
            return (
                reasons::MINIMUM_REPLICAS_UNAVAILABLE.to_owned(),
                self.progress_message(),
            );
        }
        (reasons::ROLLING_OUT.to_owned(), self.progress_message())
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message),
        observed_generation,
        last_transition_time: now.clone(),
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Dependency, MicroserviceSpec};
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::jiff::Timestamp;

    fn time(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("valid time"))
    }

    #[test]
    fn backups_report_the_newest_run_and_keep_what_finished_jobs_no_longer_tell() {
        let target = "pvc://backups/orders-mariadb/".to_owned();
        let report = |file: &str| RunReport {
            location: format!("{target}{file}"),
            size: 42,
        };
        let none_yet = backup_status(
            None,
            &BackupObservation {
                target: target.clone(),
                ..Default::default()
            },
        );
        assert_eq!(none_yet.reason, reasons::NO_BACKUP_YET);

        let succeeded = backup_status(
            Some(&none_yet),
            &BackupObservation {
                target: target.clone(),
                last_success: Some((time(10), Some(report("a.sql.gz")))),
                ..Default::default()
            },
        );
        assert_eq!(succeeded.reason, reasons::BACKUP_SUCCEEDED);
        assert_eq!(succeeded.last_size_bytes, Some(42));
        assert!(
            succeeded.message.contains("a.sql.gz"),
            "{}",
            succeeded.message
        );

        // The same run seen again (its pod gone): the report is kept.
        let again = backup_status(
            Some(&succeeded),
            &BackupObservation {
                target: target.clone(),
                last_success: Some((time(10), None)),
                ..Default::default()
            },
        );
        assert_eq!(again, succeeded);

        // A newer failure wins, and stays after its Job is deleted.
        let failed = backup_status(
            Some(&succeeded),
            &BackupObservation {
                target: target.clone(),
                last_success: Some((time(10), None)),
                last_failure: Some((time(20), "Job x: BackoffLimitExceeded".to_owned())),
                ..Default::default()
            },
        );
        assert_eq!(failed.reason, reasons::BACKUP_FAILED);
        assert!(failed.message.contains("BackoffLimitExceeded"));
        assert_eq!(failed.last_location, succeeded.last_location);
        let jobs_gone = backup_status(
            Some(&failed),
            &BackupObservation {
                target: target.clone(),
                ..Default::default()
            },
        );
        assert_eq!(jobs_gone, failed);

        // A run whose pod cannot run says so while it waits, over the last failure; once it
        // ends, its Job's end is what counts.
        let stuck = backup_status(
            Some(&failed),
            &BackupObservation {
                target: target.clone(),
                running: true,
                cannot_run: Some("Job x-1: Unschedulable: 0/3 nodes are available".to_owned()),
                ..Default::default()
            },
        );
        assert_eq!(stuck.reason, reasons::BACKUP_CANNOT_RUN);
        assert!(
            stuck.message.contains("Job x-1: Unschedulable"),
            "{}",
            stuck.message
        );
        assert_eq!(stuck.last_failure_time, failed.last_failure_time);

        // A missing target is said first, whatever the runs did.
        let missing = backup_status(
            Some(&failed),
            &BackupObservation {
                target,
                missing_target: Some("PersistentVolumeClaim backups does not exist".to_owned()),
                ..Default::default()
            },
        );
        assert_eq!(missing.reason, reasons::BACKUP_TARGET_NOT_FOUND);
        assert!(missing.message.contains("PersistentVolumeClaim backups"));
    }

    fn microservice(spec: MicroserviceSpec) -> Microservice {
        let mut ms = Microservice::new("orders", spec);
        ms.metadata.namespace = Some("shop".into());
        ms.metadata.generation = Some(2);
        ms
    }

    fn deployment(replicas: i32, ready: i32, updated: i32, available: bool) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(4);
        d.spec = Some(DeploymentSpec {
            replicas: Some(replicas),
            ..Default::default()
        });
        d.status = Some(DeploymentStatus {
            observed_generation: Some(4),
            replicas: Some(updated.max(replicas)),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            available_replicas: Some(ready),
            conditions: Some(vec![DeploymentCondition {
                type_: "Available".into(),
                status: if available { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        d
    }

    fn get<'a>(status: &'a MicroserviceStatus, type_: &str) -> &'a Condition {
        find_condition(&status.conditions, type_).expect("condition present")
    }

    #[test]
    fn a_rolled_out_deployment_is_ready() {
        let ms = microservice(MicroserviceSpec::with_image("img:1"));
        let observed = Observed {
            deployment: Some(deployment(1, 1, 1, true)),
            ..Default::default()
        };
        let status = compute_status(&ms, &observed, &time(100));
        assert_eq!(get(&status, conditions::READY).status, "True");
        assert_eq!(
            get(&status, conditions::PROGRESSING).reason,
            reasons::ROLLOUT_COMPLETE
        );
        assert_eq!(
            get(&status, conditions::DEPENDENCIES_READY).reason,
            reasons::NO_DEPENDENCIES
        );
        assert_eq!(get(&status, conditions::SUSPENDED).status, "False");
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            status.url.as_deref(),
            Some("http://orders.shop.svc.cluster.local:8080")
        );
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/instance=orders,app.kubernetes.io/name=orders")
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    #[test]
    fn the_pod_problem_explains_why_it_is_not_ready() {
        let ms = microservice(MicroserviceSpec::with_image("img:1"));
        let observed = Observed {
            deployment: Some(deployment(1, 0, 1, false)),
            pod_problem: Some(PodProblem {
                reason: "ImagePullBackOff".into(),
                message: "pod orders-1, container app: Back-off pulling image".into(),
            }),
            ..Default::default()
        };
        let status = compute_status(&ms, &observed, &time(100));
        let ready = get(&status, conditions::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ImagePullBackOff")
        );
        assert_eq!(
            get(&status, conditions::AVAILABLE).reason,
            "ImagePullBackOff"
        );
        assert_eq!(get(&status, conditions::PROGRESSING).status, "True");
    }

    #[test]
    fn a_rollout_in_progress_is_not_ready() {
        let ms = microservice(MicroserviceSpec::with_image("img:1"));
        let mut rolling = deployment(2, 2, 1, true);
        if let Some(status) = rolling.status.as_mut() {
            status.replicas = Some(3);
        }
        let observed = Observed {
            deployment: Some(rolling),
            ..Default::default()
        };
        let status = compute_status(&ms, &observed, &time(100));
        assert_eq!(get(&status, conditions::READY).reason, reasons::ROLLING_OUT);
        assert_eq!(get(&status, conditions::AVAILABLE).status, "True");
    }

    #[test]
    fn only_the_steps_of_a_rollout_under_way_are_progress() {
        let mut ms = microservice(MicroserviceSpec::with_image("img:1"));
        let mut step = |deployment: Option<Deployment>, pod_problem: Option<PodProblem>, at| {
            let observed = Observed {
                deployment,
                pod_problem,
                ..Default::default()
            };
            let status = compute_status(&ms, &observed, &time(at));
            let old = ms.status.replace(status.clone());
            (old.unwrap_or_default(), status)
        };
        let (_, pending) = step(None, None, 100);
        let (old, starting) = step(Some(deployment(1, 0, 1, false)), None, 101);
        assert!(
            is_progress_only(&old, &starting),
            "pending -> a pod starting"
        );
        // Ready, waiting out minReadySeconds before it counts as available.
        let mut ready_not_available = deployment(1, 1, 1, false);
        if let Some(status) = ready_not_available.status.as_mut() {
            status.available_replicas = Some(0);
        }
        let (old, waiting) = step(Some(ready_not_available), None, 102);
        assert!(
            is_progress_only(&old, &waiting),
            "-> ready, not yet available"
        );
        assert!(!is_progress_only(&waiting, &waiting), "no change");
        let (old, ready) = step(Some(deployment(1, 1, 1, true)), None, 103);
        assert!(!is_progress_only(&old, &ready), "Ready is written at once");

        let crashing = PodProblem {
            reason: "CrashLoopBackOff".into(),
            message: "back-off restarting".into(),
        };
        let failing = step(Some(deployment(1, 0, 1, false)), Some(crashing), 104).1;
        assert!(
            !is_progress_only(&starting, &failing),
            "a failure is written at once"
        );

        let mut next_generation = pending.clone();
        next_generation.observed_generation = Some(3);
        assert!(
            !is_progress_only(&pending, &next_generation),
            "a new generation"
        );
        let mut dependency_gone = starting.clone();
        if let Some(deps) = dependency_gone
            .conditions
            .iter_mut()
            .find(|c| c.type_ == conditions::DEPENDENCIES_READY)
        {
            deps.status = "False".into();
            deps.reason = reasons::DEPENDENCY_MISSING.into();
        }
        assert!(
            !is_progress_only(&starting, &dependency_gone),
            "another condition"
        );
    }

    #[test]
    fn a_first_status_may_wait_only_while_pods_come_up() {
        let first = |spec: MicroserviceSpec, deployment: Option<Deployment>, pod_problem| {
            let ms = microservice(spec);
            let observed = Observed {
                dependencies: dependency_statuses(&ms, |_| None),
                deployment,
                pod_problem,
                ..Default::default()
            };
            is_rollout_start(&compute_status(&ms, &observed, &time(100)))
        };
        let plain = || MicroserviceSpec::with_image("img:1");
        let just_applied = || {
            let mut d = deployment(1, 0, 0, false);
            d.status = None;
            Some(d)
        };
        assert!(first(plain(), just_applied(), None), "just applied");
        assert!(
            first(plain(), Some(deployment(1, 0, 1, false)), None),
            "a pod starting"
        );
        assert!(
            !first(plain(), Some(deployment(1, 1, 1, true)), None),
            "Ready is written at once"
        );
        let crashing = PodProblem {
            reason: "CrashLoopBackOff".into(),
            message: "back-off restarting".into(),
        };
        assert!(
            !first(plain(), Some(deployment(1, 0, 1, false)), Some(crashing)),
            "a failure is written at once"
        );
        let mut waits_for_a_dependency = plain();
        waits_for_a_dependency.depends_on = vec![Dependency {
            name: "users".into(),
        }];
        assert!(
            !first(waits_for_a_dependency, just_applied(), None),
            "a missing dependency is written at once"
        );
        let mut suspended = plain();
        suspended.suspend = true;
        assert!(
            !first(suspended, Some(deployment(0, 0, 0, true)), None),
            "suspended is written at once"
        );
    }

    #[test]
    fn suspended_is_reported_everywhere() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.suspend = true;
        let observed = Observed {
            deployment: Some(deployment(0, 0, 0, true)),
            ..Default::default()
        };
        let status = compute_status(&microservice(spec), &observed, &time(100));
        assert_eq!(get(&status, conditions::READY).reason, reasons::SUSPENDED);
        assert_eq!(get(&status, conditions::READY).status, "False");
        assert_eq!(get(&status, conditions::SUSPENDED).status, "True");
        assert_eq!(
            get(&status, conditions::AVAILABLE).reason,
            reasons::SUSPENDED
        );
    }

    #[test]
    fn transition_times_change_only_when_the_status_flips() {
        let mut ms = microservice(MicroserviceSpec::with_image("img:1"));
        let ready = Observed {
            deployment: Some(deployment(1, 1, 1, true)),
            ..Default::default()
        };
        let first = compute_status(&ms, &ready, &time(100));
        ms.status = Some(first.clone());
        let again = compute_status(&ms, &ready, &time(200));
        assert_eq!(first, again, "same facts, same status: nothing to write");

        let broken = Observed {
            deployment: Some(deployment(1, 0, 1, false)),
            ..Default::default()
        };
        let later = compute_status(&ms, &broken, &time(300));
        assert_eq!(
            get(&later, conditions::READY).last_transition_time,
            time(300)
        );
        assert_eq!(
            get(&later, conditions::SUSPENDED).last_transition_time,
            time(100),
            "an unchanged condition keeps its time"
        );
    }

    #[test]
    fn dependencies_are_looked_up_and_reported() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.depends_on = vec![
            Dependency {
                name: "users".into(),
            },
            Dependency {
                name: "stock".into(),
            },
        ];
        let ms = microservice(spec);
        let mut users = microservice(MicroserviceSpec::with_image("users:1"));
        users.spec.port = 80;
        users.status = Some(compute_status(
            &users,
            &Observed {
                deployment: Some(deployment(1, 1, 1, true)),
                ..Default::default()
            },
            &time(1),
        ));
        let users = std::sync::Arc::new(users);
        let dependencies =
            dependency_statuses(&ms, |name| (name == "users").then(|| users.clone()));
        assert_eq!(dependencies[0].url, "http://users.shop.svc.cluster.local");
        assert!(dependencies[0].ready);
        assert_eq!(dependencies[1].reason, dependency_reasons::NOT_FOUND);
        assert_eq!(
            dependencies[1].url,
            "http://stock.shop.svc.cluster.local:8080"
        );

        let observed = Observed {
            deployment: Some(deployment(1, 1, 1, true)),
            dependencies,
            ..Default::default()
        };
        let status = compute_status(&ms, &observed, &time(100));
        let deps = get(&status, conditions::DEPENDENCIES_READY);
        assert_eq!(deps.reason, reasons::DEPENDENCY_MISSING);
        assert!(deps.message.contains("stock"));
        assert_eq!(
            get(&status, conditions::READY).status,
            "True",
            "dependencies do not gate Ready"
        );
    }

    #[test]
    fn a_crashing_store_server_tells_its_last_words() {
        use crate::api::Stores;
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
            PodStatus,
        };
        let stores: Stores =
            serde_json::from_value(serde_json::json!({"sql": {"engine": "mariadb"}}))
                .expect("stores");
        let store = crate::children::stores::plan("orders", Some(&stores)).remove(0);
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("orders-mariadb-0".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "mariadb".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("CrashLoopBackOff".into()),
                            message: Some("back-off 10s".into()),
                        }),
                        ..Default::default()
                    }),
                    last_state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 1,
                            message: Some("2026-12-04 [ERROR] mariadbd: Can't create/write to file '/var/lib/mysql/x' (Errcode: 28 \"No space left on device\")\n2026-12-04 [ERROR] Aborting\n".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    restart_count: 2,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let mut seen = StoreObservation::new(store);
        seen.server = Some(ServerObservation {
            ready: false,
            pod: Some(pod),
        });
        let (ready, reason, message) = store_state(&seen);
        assert!(!ready);
        assert_eq!(reason, "CrashLoopBackOff");
        assert_eq!(
            message,
            "pod orders-mariadb-0, container mariadb exited with code 1: 2026-12-04 [ERROR] mariadbd: Can't create/write to file '/var/lib/mysql/x' (Errcode: 28 \"No space left on device\") / 2026-12-04 [ERROR] Aborting (back-off 10s)"
        );
    }

    #[test]
    fn a_store_that_cannot_grow_names_its_class_and_yields_to_a_store_without_data() {
        let stores: crate::api::Stores = serde_json::from_value(serde_json::json!({
            "sql": {"engine": "sqlite", "size": "2Gi"},
            "nosql": {"engine": "redb"},
        }))
        .expect("stores");
        let ms = microservice(MicroserviceSpec {
            stores: Some(stores.clone()),
            ..MicroserviceSpec::with_image("img")
        });
        let planned = crate::children::stores::plan("users", Some(&stores));
        let mut sql = StoreObservation::new(planned[0].clone());
        sql.growth_refused = Some(GrowthRefused {
            class: "local-path".into(),
            current: "1Gi".into(),
        });
        let (ready, reason, message) = store_state(&sql);
        assert!(!ready);
        assert_eq!(reason, reasons::VOLUME_CANNOT_GROW);
        assert_eq!(
            message,
            "stores.sql.size is 2Gi but PersistentVolumeClaim users-sqlite stays at 1Gi: StorageClass \"local-path\" does not allow volume expansion (allowVolumeExpansion is not true), so it cannot grow; the store keeps serving at 1Gi. Allow expansion on the class if its provisioner supports it, or move the data to a store on a class that does"
        );

        // The other store is not bound: that is the worse news, and the one StoresReady gives.
        let nosql = StoreObservation::new(planned[1].clone());
        let statuses = store_statuses(&ms, &[sql.clone(), nosql]);
        let (ready, reason, _) = stores_condition(&ms, &statuses);
        assert_eq!((ready, reason.as_str()), (false, reasons::VOLUME_NOT_BOUND));

        // Alone, it makes StoresReady False, and leaves Ready to the pods: the data is there.
        let statuses = store_statuses(&ms, &[sql]);
        let (ready, reason, message) = stores_condition(&ms, &statuses);
        assert_eq!(
            (ready, reason.as_str()),
            (false, reasons::VOLUME_CANNOT_GROW)
        );
        let verdict = Verdict::new(ready, &reason, message);
        let rollout = Rollout {
            complete: true,
            available: Some(true),
            ..Rollout::new(&ms, None)
        };
        assert!(ready_verdict_status(&ms, &rollout, &verdict));
        let missing = Verdict::new(false, reasons::VOLUME_NOT_BOUND, String::new());
        assert!(!ready_verdict_status(&ms, &rollout, &missing));
    }

    fn ready_verdict_status(ms: &Microservice, rollout: &Rollout, stores: &Verdict) -> bool {
        ready(ms, &Observed::default(), rollout, stores).status
    }

    #[test]
    fn long_messages_are_cut() {
        let cut = truncate("é".repeat(600));
        assert!(cut.len() <= MAX_MESSAGE_LEN + '…'.len_utf8());
    }

    #[test]
    fn a_failed_reconcile_marks_ready_and_reconciled_false_and_keeps_the_rest() {
        let ms = microservice(MicroserviceSpec::with_image("img"));
        let before = compute_status(&ms, &Observed::default(), &time(10));
        let mut ms = ms;
        ms.status = Some(before.clone());
        let failed = failed_status(&ms, reasons::FORBIDDEN, "cannot patch", &time(20));
        let get = |type_: &str| find_condition(&failed.conditions, type_).unwrap();
        for type_ in [conditions::READY, conditions::RECONCILED] {
            let c = get(type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                ("False", reasons::FORBIDDEN, "cannot patch")
            );
        }
        // Ready was False already: it keeps its transition time; Reconciled is new.
        assert_eq!(get(conditions::READY).last_transition_time, time(10));
        assert_eq!(get(conditions::RECONCILED).last_transition_time, time(20));
        assert_eq!(
            get(conditions::DEPENDENCIES_READY),
            find_condition(&before.conditions, conditions::DEPENDENCIES_READY).unwrap()
        );
        assert_eq!(failed.conditions.len(), before.conditions.len() + 1);
        assert_eq!(failed.observed_generation, Some(2));
    }

    #[test]
    fn failures_get_a_reason_from_the_api_answer() {
        let api = |code: u16| {
            crate::Error::Kube(kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: format!("answer {code}"),
                ..Default::default()
            })))
        };
        assert_eq!(failure_reason(&api(403)), Some(reasons::FORBIDDEN));
        assert_eq!(failure_reason(&api(422)), Some(reasons::CHILD_REJECTED));
        assert_eq!(failure_reason(&api(409)), Some(reasons::CHILD_CONFLICT));
        assert_eq!(failure_reason(&api(500)), Some(reasons::API_ERROR));
        assert_eq!(failure_message(&api(422)), "answer 422");
        assert_eq!(
            failure_reason(&crate::Error::LeadershipLost("l".into())),
            None
        );
    }
}
