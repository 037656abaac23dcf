//! The I/O of `spec.stores`: creates each store's Secret and claims once (never rewriting
//! them, except to grow a claim whose size was raised), applies the store servers, removes
//! servers no longer declared, and observes what the status needs (the server's readiness,
//! its pod, its claim and the claim's last event). The decisions are in [`crate::children::stores`] (what to build) and [`crate::status`] (what to say).

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{BackupLocation, BackupTarget, Microservice};
use crate::children;
use crate::children::backup::{self, RunReport};
use crate::children::meta::{self, MANAGER, labels};
use crate::children::stores::{
    self, Credentials, MICROSERVICE_LABEL, ServerChildren, ServerEngine, StoreChildren,
    StoreObjects,
};
use crate::controller::apply::{Applied, Changes, apply_child, delete_child};
use crate::controller::cache::{Caches, ChildCache};
use crate::error::{Error, Result};
use crate::status::{self, pods};
use crate::status::{BackupObservation, GrowthRefused, ServerObservation, StoreObservation};

/// What reconciling the stores did and saw.
#[derive(Debug, Default)]
pub struct StoresOutcome {
    /// One observation per declared store, in the spec's order.
    pub observations: Vec<StoreObservation>,
    /// The objects written and deleted.
    pub changes: Changes,
}

/// Where the stores of one Microservice live, and through what they are reached.
struct Place<'a> {
    client: &'a Client,
    caches: &'a Caches,
    ms: &'a Microservice,
    namespace: &'a str,
    /// The Microservice's uid: the owner its children must be controlled by.
    uid: &'a str,
}

impl Place<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.namespace)
    }
}

/// Makes the declared stores exist and observes them.
pub async fn reconcile_stores(
    client: &Client,
    caches: &Caches,
    ms: &Microservice,
    namespace: &str,
    uid: &str,
    wanted: Vec<StoreChildren>,
) -> Result<StoresOutcome> {
    let place = Place {
        client,
        caches,
        ms,
        namespace,
        uid,
    };
    let mut outcome = StoresOutcome::default();
    remove_undeclared_servers(&place, &wanted, &mut outcome.changes).await?;
    for children in wanted {
        let observation = reconcile_store(&place, children, &mut outcome.changes).await?;
        outcome.observations.push(observation);
    }
    Ok(outcome)
}

/// Deletes the servers that were declared before and are no longer (a store removed from the
/// spec). Their claims follow their retention policy; nothing else is touched.
async fn remove_undeclared_servers(
    place: &Place<'_>,
    wanted: &[StoreChildren],
    changes: &mut Changes,
) -> Result<()> {
    let previously: Vec<String> = place
        .ms
        .status
        .as_ref()
        .map(|s| s.stores.iter().map(|store| store.engine.clone()).collect())
        .unwrap_or_default();
    let (namespace, uid, caches) = (place.namespace, place.uid, place.caches);
    for engine in ServerEngine::ALL {
        let still_wanted = wanted.iter().any(|w| {
            matches!(&w.objects, StoreObjects::Server(wanted_engine, _) if *wanted_engine == engine)
        });
        if still_wanted || !previously.iter().any(|e| e == engine.as_str()) {
            continue;
        }
        let object_name = meta::store_object_name(&place.ms.name_any(), engine.as_str());
        if delete_child(
            &place.api::<StatefulSet>(),
            &caches.stateful_sets,
            namespace,
            &object_name,
            uid,
        )
        .await?
        {
            changes.deleted.push(format!("StatefulSet {object_name}"));
        }
        if delete_child(
            &place.api::<Service>(),
            &caches.services,
            namespace,
            &object_name,
            uid,
        )
        .await?
        {
            changes.deleted.push(format!("Service {object_name}"));
        }
        if delete_child(
            &place.api::<CronJob>(),
            &caches.cron_jobs,
            namespace,
            &object_name,
            uid,
        )
        .await?
        {
            changes.deleted.push(format!("CronJob {object_name}"));
        }
        if delete_child(
            &place.api::<NetworkPolicy>(),
            &caches.network_policies,
            namespace,
            &object_name,
            uid,
        )
        .await?
        {
            changes.deleted.push(format!("NetworkPolicy {object_name}"));
        }
    }
    Ok(())
}

/// Makes one store exist (its Secret and server, or its claim) and observes it.
async fn reconcile_store(
    place: &Place<'_>,
    children: StoreChildren,
    changes: &mut Changes,
) -> Result<StoreObservation> {
    let store = children.store;
    let mut observation = StoreObservation::new(store.clone());
    if let Some(class) = &store.storage_class_name
        && Api::<StorageClass>::all(place.client.clone())
            .get_opt(class)
            .await?
            .is_none()
    {
        observation.missing_storage_class = Some(class.clone());
    }
    let claims = place.api::<PersistentVolumeClaim>();
    match children.objects {
        StoreObjects::Server(engine, server) => {
            provision_server(place, engine, *server, &mut observation, changes).await?;
        }
        StoreObjects::Embedded(claim) => {
            let owners =
                children::with_store_context(place.ms, |ctx| ctx.data_owner_references(&store))?;
            let ensured = ensure_data_object(
                &claims,
                &store.claim_name,
                &place.ms.name_any(),
                owners,
                || Ok(*claim),
            )
            .await?;
            match ensured.conflict() {
                Some(conflict) => observation.conflict = Some(conflict),
                None => {
                    changes
                        .applied
                        .extend(ensured.written("PersistentVolumeClaim", &store.claim_name));
                    observation.claim = claims.get_opt(&store.claim_name).await?;
                }
            }
            if store.backup.is_some() && observation.conflict.is_none() {
                ensure_admin_secret(place, &store, &mut observation, changes).await?;
            }
        }
    }
    if observation.conflict.is_none() {
        reconcile_backup(place, children.backup, &mut observation, changes).await?;
    }
    if observation.conflict.is_some() {
        return Ok(observation);
    }
    if observation.claim.is_none() {
        observation.claim = claims.get_opt(&store.claim_name).await?;
    }
    grow_volume(place, &mut observation, changes).await?;

    let pending = observation
        .claim
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        != Some("Bound");
    if pending && observation.claim.is_some() {
        observation.claim_event =
            last_event(place.client, place.namespace, &store.claim_name).await?;
    }
    Ok(observation)
}

/// The Secret with the token the backup Jobs of embedded stores fetch their copies with
/// (shared by both stores of the Microservice; created once).
async fn ensure_admin_secret(
    place: &Place<'_>,
    store: &stores::PlannedStore,
    observation: &mut StoreObservation,
    changes: &mut Changes,
) -> Result<()> {
    let owners = children::with_store_context(place.ms, |ctx| ctx.data_owner_references(store))?;
    let name = stores::admin_secret_name(&place.ms.name_any());
    let secret = ensure_data_object(
        &place.api::<Secret>(),
        &name,
        &place.ms.name_any(),
        owners,
        || {
            let token = stores::random_password()?;
            children::with_store_context(place.ms, |ctx| {
                stores::build_admin_secret(ctx, store, &token)
            })
        },
    )
    .await?;
    match secret.conflict() {
        Some(conflict) => observation.conflict = Some(conflict),
        None => changes.applied.extend(secret.written("Secret", &name)),
    }
    Ok(())
}

/// What of a backup target does not exist, as a sentence that says what to do: the claim,
/// or a Secret (or its key) holding the bucket's credentials. `None` when all exist.
async fn missing_target(place: &Place<'_>, target: &BackupTarget) -> Result<Option<String>> {
    match target.location() {
        Some(BackupLocation::Claim(claim)) => {
            let exists = place
                .api::<PersistentVolumeClaim>()
                .get_opt(&claim.claim_name)
                .await?
                .is_some();
            Ok((!exists).then(|| {
                format!(
                    "PersistentVolumeClaim {} (backup.target.persistentVolumeClaim.claimName) does not exist: create it, or name an existing claim; runs wait for it",
                    claim.claim_name
                )
            }))
        }
        Some(BackupLocation::S3(s3)) => {
            let credentials = "the bucket's credentials";
            let refs = [
                (
                    "accessKeyIdSecretKeyRef",
                    Some(&s3.access_key_id_secret_key_ref),
                    credentials,
                ),
                (
                    "secretAccessKeySecretKeyRef",
                    Some(&s3.secret_access_key_secret_key_ref),
                    credentials,
                ),
                (
                    "caSecretKeyRef",
                    s3.ca_secret_key_ref.as_ref(),
                    "the PEM certificate of the authority that signs the endpoint's certificate",
                ),
            ];
            for (field, key_ref, content) in refs {
                let Some(key_ref) = key_ref else { continue };
                let secret = place.api::<Secret>().get_opt(&key_ref.name).await?;
                let has_key = secret.as_ref().is_some_and(|secret| {
                    secret
                        .data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(&key_ref.key))
                        || secret
                            .string_data
                            .as_ref()
                            .is_some_and(|d| d.contains_key(&key_ref.key))
                });
                if !has_key {
                    let what = if secret.is_some() {
                        format!("Secret {} has no key {}", key_ref.name, key_ref.key)
                    } else {
                        format!("Secret {} does not exist", key_ref.name)
                    };
                    return Ok(Some(format!(
                        "{what} (backup.target.s3.{field}): create it with {content}; runs wait for it"
                    )));
                }
            }
            Ok(None)
        }
        None => Ok(Some(
            "backup.target names no place: set persistentVolumeClaim or s3".to_owned(),
        )),
    }
}

/// A store server: its Secret (created once), its StatefulSet and Service (applied), and
/// whether it is ready (else its pod and claim, to tell why). A conflict stops it, on the
/// observation.
async fn provision_server(
    place: &Place<'_>,
    engine: ServerEngine,
    server: ServerChildren,
    observation: &mut StoreObservation,
    changes: &mut Changes,
) -> Result<()> {
    let store = observation.store.clone();
    let owners = children::with_store_context(place.ms, |ctx| ctx.data_owner_references(&store))?;
    let secret = ensure_data_object(
        &place.api::<Secret>(),
        &store.object_name,
        &place.ms.name_any(),
        owners,
        || {
            let credentials = Credentials::generate()?;
            children::with_store_context(place.ms, |ctx| {
                stores::build_secret(ctx, &store, engine, &credentials)
            })
        },
    )
    .await?;
    if let Some(conflict) = secret.conflict() {
        observation.conflict = Some(conflict);
        return Ok(());
    }
    changes
        .applied
        .extend(secret.written("Secret", &store.object_name));

    let mut wanted_stateful_set = server.stateful_set;
    if let Some(existing) = place
        .caches
        .stateful_sets
        .get(place.namespace, &store.object_name)
    {
        stores::keep_claim_template_sizes(&mut wanted_stateful_set, &existing);
    }
    let Some(stateful_set) = apply_store_child(
        place,
        &place.caches.stateful_sets,
        wanted_stateful_set,
        observation,
        changes,
    )
    .await?
    else {
        return Ok(());
    };
    if apply_store_child(
        place,
        &place.caches.services,
        server.service,
        observation,
        changes,
    )
    .await?
    .is_none()
    {
        return Ok(());
    }
    let ready = stateful_set
        .object
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1;
    let pod = if ready {
        None
    } else {
        place
            .api::<Pod>()
            .get_opt(&format!("{}-0", store.object_name))
            .await?
    };
    observation.server = Some(ServerObservation { ready, pod });
    Ok(())
}

/// Applies one object of a store and records the write; None when another owner holds its
/// name (then the observation says so, and the store goes no further).
async fn apply_store_child<K>(
    place: &Place<'_>,
    cache: &ChildCache<K>,
    wanted: K,
    observation: &mut StoreObservation,
    changes: &mut Changes,
) -> Result<Option<Applied<K>>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let name = wanted.name_any();
    match apply_child(&place.api::<K>(), cache, wanted, place.uid).await {
        Err(Error::Conflict(message)) => {
            observation.conflict = Some(message);
            Ok(None)
        }
        Err(other) => Err(other),
        Ok(applied) => {
            if applied.changed {
                changes.applied.push(format!("{} {name}", K::kind(&())));
            }
            Ok(Some(applied))
        }
    }
}

/// A store's backups: applies its CronJob (or deletes the one of a `backup` removed), starts
/// the Job of a new on-demand request, and observes the target and how the runs ended.
async fn reconcile_backup(
    place: &Place<'_>,
    cron_job: Option<Box<CronJob>>,
    observation: &mut StoreObservation,
    changes: &mut Changes,
) -> Result<()> {
    let store = observation.store.clone();
    let (Some(cron_job), Some(declared)) = (cron_job, &store.backup) else {
        if delete_child(
            &place.api::<CronJob>(),
            &place.caches.cron_jobs,
            place.namespace,
            &store.object_name,
            place.uid,
        )
        .await?
        {
            changes
                .deleted
                .push(format!("CronJob {}", store.object_name));
        }
        return Ok(());
    };
    let Some(applied) = apply_store_child(
        place,
        &place.caches.cron_jobs,
        *cron_job,
        observation,
        changes,
    )
    .await?
    else {
        return Ok(());
    };
    let mut seen = BackupObservation {
        target: backup::target_location(declared, &store),
        ..Default::default()
    };
    seen.missing_target = missing_target(place, &declared.target).await?;
    let previous = status::previous_backup(place.ms, store.role.as_str())
        .cloned()
        .unwrap_or_default();
    seen.request = previous.last_request.clone();
    if let Some(request) = place.ms.annotations().get(backup::BACKUP_REQUESTED)
        && previous.last_request.as_ref() != Some(request)
    {
        let job = children::with_store_context(place.ms, |ctx| {
            backup::on_demand_job(ctx, &applied.object, request)
        })?;
        if let Some(job) = job {
            let name = job.name_any();
            match place
                .api::<Job>()
                .create(&PostParams::default(), &job)
                .await
            {
                Ok(_) => changes.applied.push(format!("Job {name}")),
                // Created by an earlier reconcile whose status write was lost.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(err) => return Err(err.into()),
            }
            seen.request = Some(request.clone());
        }
    }
    // The store's runs are named after its CronJob: only those are decoded.
    let prefix = format!("{}-", store.object_name);
    let runs: Vec<Job> = place
        .caches
        .jobs
        .state()
        .iter()
        .filter(|kept| {
            kept.namespace().as_deref() == Some(place.namespace)
                && kept.name_any().starts_with(&prefix)
        })
        .filter_map(|kept| kept.decode())
        .filter(|job: &Job| {
            job.labels().get(labels::INSTANCE) == Some(&store.object_name)
                && job.labels().get(labels::COMPONENT).map(String::as_str)
                    == Some(backup::BACKUP_COMPONENT)
        })
        .collect();
    let newest = |wanted: &str| {
        runs.iter()
            .filter_map(|job| finished(job, wanted).map(|(time, why)| (time, why, job)))
            .max_by(|a, b| a.0.0.cmp(&b.0.0))
    };
    let is_new = |time: &Time, known: &Option<Time>| known.as_ref().is_none_or(|k| time.0 > k.0);
    if let Some((time, _, job)) = newest("Complete") {
        let report = if is_new(&time, &previous.last_successful_time) {
            run_message(place, job)
                .await?
                .as_deref()
                .and_then(RunReport::parse)
        } else {
            None
        };
        seen.last_success = Some((time, report));
    }
    if let Some((time, why, job)) = newest("Failed") {
        let mut why = format!("Job {}: {why}", job.name_any());
        if is_new(&time, &previous.last_failure_time)
            && let Some(message) = run_message(place, job).await?
        {
            why.push_str(": ");
            why.push_str(message.trim());
        }
        seen.last_failure = Some((time, why));
    }
    // A run not finished yet: its pod may wait for what it cannot get (an image, a Secret, a
    // node), which the Job itself never tells.
    for job in runs
        .iter()
        .filter(|job| finished(job, "Complete").is_none() && finished(job, "Failed").is_none())
    {
        seen.running = true;
        if let Some(problem) = pods::problem(&job_pods(place, job).await?, &[]) {
            seen.cannot_run = Some(format!(
                "Job {}: {}: {}",
                job.name_any(),
                problem.reason,
                problem.message
            ));
        }
    }
    observation.backup = Some(seen);
    Ok(())
}

/// When `job` finished with the condition `wanted` (`Complete` or `Failed`), and the
/// condition's reason and message.
fn finished(job: &Job, wanted: &str) -> Option<(Time, String)> {
    let condition = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == wanted && c.status == "True")?;
    let time = condition.last_transition_time.clone()?;
    let why = [condition.reason.as_deref(), condition.message.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    Some((time, why))
}

/// The pods of `job`.
async fn job_pods(place: &Place<'_>, job: &Job) -> Result<Vec<Pod>> {
    let selector = format!("batch.kubernetes.io/job-name={}", job.name_any());
    let pods = place
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(pods.items)
}

/// The termination message of the last pod of `job` (its report, or the end of its log).
async fn run_message(place: &Place<'_>, job: &Job) -> Result<Option<String>> {
    let message = job_pods(place, job)
        .await?
        .iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
            let terminated = status.state.as_ref()?.terminated.as_ref()?;
            Some((terminated.finished_at.clone(), terminated.message.clone()?))
        })
        .max_by(|a, b| a.0.as_ref().map(|t| t.0).cmp(&b.0.as_ref().map(|t| t.0)))
        .map(|(_, message)| message);
    Ok(message)
}

/// Expands the store's claim when its declared size grew: raises the claim's request, which
/// the StorageClass's provisioner and the kubelet carry out. When the claim's StorageClass
/// cannot expand volumes, the observation says so instead. A claim that is not bound yet is
/// left alone (the API server changes the request of bound claims only): it is expanded once
/// it binds.
async fn grow_volume(
    place: &Place<'_>,
    observation: &mut StoreObservation,
    changes: &mut Changes,
) -> Result<()> {
    let Some(claim) = &observation.claim else {
        return Ok(());
    };
    let size = observation.store.size.clone();
    let Some(current) = stores::claim_to_grow(claim, &size) else {
        return Ok(());
    };
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !bound {
        return Ok(());
    }
    let class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    let expandable = !class.is_empty()
        && Api::<StorageClass>::all(place.client.clone())
            .get_opt(&class)
            .await?
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
    if !expandable {
        observation.growth_refused = Some(GrowthRefused { class, current });
        return Ok(());
    }
    let name = claim.name_any();
    let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..Default::default()
    };
    observation.claim = Some(
        place
            .api::<PersistentVolumeClaim>()
            .patch(&name, &params, &Patch::Merge(&patch))
            .await?,
    );
    changes.applied.push(format!(
        "PersistentVolumeClaim {name} (grown from {current} to {size})"
    ));
    Ok(())
}

/// What [`ensure_data_object`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Ensured {
    /// It did not exist and was created.
    Created,
    /// It existed; its ownerReferences were changed to follow the deletion policy.
    Adopted,
    /// It existed as wanted.
    Unchanged,
    /// An object of that name exists and belongs to someone else.
    Conflict(String),
}

impl Ensured {
    fn conflict(&self) -> Option<String> {
        match self {
            Self::Conflict(message) => Some(message.clone()),
            _ => None,
        }
    }

    fn written(&self, kind: &str, name: &str) -> Option<String> {
        match self {
            Self::Created => Some(format!("{kind} {name}")),
            Self::Adopted => Some(format!("{kind} {name} (adopted)")),
            Self::Unchanged | Self::Conflict(_) => None,
        }
    }
}

/// Makes a data object (a store's Secret or claim) exist without ever rewriting it: creates it
/// from `create` when it is missing, and otherwise only sets its ownerReferences to `owners`
/// (the Microservice under `Delete`, none under `Retain`). Reads metadata only, so no
/// credential is ever loaded into the operator.
pub async fn ensure_data_object<K>(
    api: &Api<K>,
    name: &str,
    microservice: &str,
    owners: Vec<OwnerReference>,
    create: impl FnOnce() -> Result<K>,
) -> Result<Ensured>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let Some(current) = api.get_metadata_opt(name).await? else {
        let object = create()?;
        let params = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..Default::default()
        };
        return match api.create(&params, &object).await {
            Ok(_) => Ok(Ensured::Created),
            // Created meanwhile (e.g. by the other replica before it lost its lease): the next
            // reconcile checks it.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Ensured::Unchanged),
            Err(err) => Err(err.into()),
        };
    };
    if current.labels().get(MICROSERVICE_LABEL).map(String::as_str) != Some(microservice) {
        return Ok(Ensured::Conflict(format!(
            "{} {name} exists and does not belong to Microservice {microservice} (its label {MICROSERVICE_LABEL} says otherwise): delete or rename it",
            K::kind(&())
        )));
    }
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(Ensured::Conflict(format!(
            "{} {name} is being deleted (the Microservice it belonged to had deletionPolicy Delete): it is created again once it is gone",
            K::kind(&())
        )));
    }
    let existing = current.owner_references().to_vec();
    // References to a former Microservice of the same name (another uid) are replaced.
    let mut desired: Vec<OwnerReference> = existing
        .iter()
        .filter(|r| !(r.kind == "Microservice" && r.name == microservice))
        .cloned()
        .collect();
    desired.extend(owners);
    if desired == existing {
        return Ok(Ensured::Unchanged);
    }
    let patch = serde_json::json!({ "metadata": { "ownerReferences": desired } });
    api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Ensured::Adopted)
}

/// The newest event about a claim, as `Reason: message` (why it does not bind).
async fn last_event(client: &Client, namespace: &str, claim: &str) -> Result<Option<String>> {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={claim}"
        )))
        .await?;
    Ok(events
        .items
        .into_iter()
        .max_by_key(pods::event_time)
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default().trim()
            )
        }))
}
