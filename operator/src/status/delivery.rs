//! Safe delivery: a revision of the pods (the Deployment's pod template) that makes no progress
//! within `rollout.progressDeadlineSeconds` is rolled back to the last revision that was
//! Ready, which the status keeps. The spec is never rewritten: while it still asks for the
//! failed revision, the operator applies the stable one instead; any change (of the spec, or of
//! a ConfigMap or Secret the environment reads) is a new revision and is tried.
//!
//! The Deployment controller measures the progress (its `ProgressDeadlineExceeded`), so a
//! crash loop, a readiness that never passes and an image that cannot be pulled are all caught,
//! and the old pods keep serving meanwhile (the rollout never takes a pod down first).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;

use super::Rollout;
use super::analysis::Verdict;
use super::pods::PodProblem;
use crate::api::conditions::reasons;
use crate::api::{
    CanaryStatus, Microservice, RollbackPolicy, RolledBack, RolloutSpec, RolloutStrategy,
    StableRevision,
};
use crate::children::workload::replica_control;

/// A short, stable name of a pod template: 64-bit FNV-1a of its JSON, in hex. (The same
/// template gives the same name in every operator version that builds it the same way.)
pub fn revision_of(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The revision the spec asks for, and the one the operator applies in its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The revision built from the spec.
    pub wanted: String,
    /// Its pod template.
    pub template: PodTemplateSpec,
    /// The stable revision was applied instead: the wanted one was rolled back before.
    pub held_back: bool,
    /// The wanted revision runs as a canary beside the stable pods, which keep the stable
    /// template (in the Deployment) until the analysis promotes it.
    pub canary: bool,
}

/// Which template the Deployment gets: the wanted one, or the stable one when the wanted one
/// was rolled back before or is to be tried as a canary first (it differs from the stable
/// one, the Deployment does not run it yet, and [`canary_applies`]). `current` is the
/// revision the Deployment carries now ([`REVISION_ANNOTATION`]).
pub fn hold_back(ms: &Microservice, deployment: &mut Deployment, current: Option<&str>) -> Applied {
    let template = deployment
        .spec
        .as_ref()
        .map(|spec| spec.template.clone())
        .unwrap_or_default();
    let wanted = revision_of(&template);
    let status = ms.status.as_ref();
    let stable_revision = status.and_then(|s| s.stable_revision.as_ref());
    let rolled_back = status
        .and_then(|s| s.rolled_back.as_ref())
        .is_some_and(|r| r.revision == wanted);
    let canary = !rolled_back
        && canary_applies(ms, deployment)
        && stable_revision.is_some_and(|stable| stable.revision != wanted)
        && current != Some(wanted.as_str());
    let stable = stable_revision
        .filter(|_| rolled_back || canary)
        .and_then(|stable| serde_json::from_value::<PodTemplateSpec>(stable.template.clone()).ok());
    let held_back = match (stable, deployment.spec.as_mut()) {
        (Some(stable), Some(spec)) => {
            spec.template = stable;
            true
        }
        _ => false,
    };
    let canary = canary && held_back;
    annotate_revision(deployment);
    Applied {
        wanted,
        template,
        held_back: held_back && !canary,
        canary,
    }
}

/// Whether a new revision of `ms` is tried as a canary: the strategy says so, at least two
/// pods run (one pod beside one stable pod would take half the traffic), and the pods roll
/// (a pod with its store in its volume is replaced, never doubled).
pub fn canary_applies(ms: &Microservice, deployment: &Deployment) -> bool {
    let policy = ms.spec.rollout.clone().unwrap_or_default();
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.type_.as_deref())
        != Some("Recreate");
    policy.strategy == RolloutStrategy::Canary
        && rolling
        && !ms.spec.suspend
        && replica_control(&ms.spec).min_replicas() >= 2
}

/// The analysis promoted the canary: the Deployment gets the wanted template.
pub fn promote(applied: &mut Applied, deployment: &mut Deployment) {
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template = applied.template.clone();
    }
    applied.canary = false;
    annotate_revision(deployment);
}

/// Annotation of a Deployment the operator writes: the revision of its pod template.
pub const REVISION_ANNOTATION: &str = "kea.dev/revision";

/// The revision a Deployment carries, as the operator annotated it.
pub fn revision_annotation(deployment: &Deployment) -> Option<&str> {
    deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .map(String::as_str)
}

/// Annotates `deployment` with the revision of the template it carries.
fn annotate_revision(deployment: &mut Deployment) {
    let template = deployment
        .spec
        .as_ref()
        .map(|spec| spec.template.clone())
        .unwrap_or_default();
    mark_revision(deployment, &revision_of(&template));
}

/// Annotates `deployment` with `revision` (a canary's: its template adds the canary's label
/// to the revision's).
pub fn mark_revision(deployment: &mut Deployment, revision: &str) {
    deployment
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(REVISION_ANNOTATION.to_owned(), revision.to_owned());
}

/// The stable and rolled-back revisions after this reconcile, and the canary under analysis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delivery {
    pub stable: Option<StableRevision>,
    pub rolled_back: Option<RolledBack>,
    pub canary: Option<CanaryStatus>,
}

impl Delivery {
    /// Whether this reconcile decided the rollback (it was not rolled back before).
    pub fn rolled_back_now(&self, ms: &Microservice) -> Option<&RolledBack> {
        let before = ms.status.as_ref().and_then(|s| s.rolled_back.as_ref());
        self.rolled_back
            .as_ref()
            .filter(|now| before.is_none_or(|before| before.revision != now.revision))
    }
}

/// Decides from what the Deployments show and what the canary's analysis found: the wanted
/// revision becomes the stable one once its rollout completed with every pod available; past
/// its progress deadline (the Deployment's, or the canary's), or failed by the analysis, it is
/// rolled back (with `rollback: Auto` and a stable revision to go back to).
pub fn decide(
    ms: &Microservice,
    applied: &Applied,
    deployment: &Deployment,
    canary: Option<&Deployment>,
    verdict: Option<&Verdict>,
    pod_problem: Option<&PodProblem>,
) -> Delivery {
    let status = ms.status.as_ref();
    let stable = status.and_then(|s| s.stable_revision.clone());
    if applied.held_back {
        return Delivery {
            stable,
            rolled_back: status.and_then(|s| s.rolled_back.clone()),
            canary: None,
        };
    }
    let image = ms.spec.image.clone();
    let generation = ms.metadata.generation.unwrap_or_default();
    let policy = ms.spec.rollout.clone().unwrap_or_default();
    let roll_back = |reason: &str, message: String| RolledBack {
        revision: applied.wanted.clone(),
        generation,
        image: image.clone(),
        to_revision: stable
            .as_ref()
            .map(|s| s.revision.clone())
            .unwrap_or_default(),
        reason: reason.to_owned(),
        message,
    };
    let may_roll_back = policy.rollback == RollbackPolicy::Auto
        && stable
            .as_ref()
            .is_some_and(|s| s.revision != applied.wanted);
    if applied.canary {
        // Only the canary of this revision, as the Deployment controller last saw it, counts:
        // the Deployment of an earlier canary says nothing of this one.
        let canary_stuck = canary
            .filter(|canary| {
                revision_annotation(canary) == Some(applied.wanted.as_str())
                    && canary.metadata.deletion_timestamp.is_none()
                    && canary.status.as_ref().and_then(|s| s.observed_generation)
                        == canary.metadata.generation
            })
            .and_then(|canary| canary.status.as_ref())
            .is_some_and(super::progress_deadline_exceeded);
        let rolled_back = match (verdict, &stable) {
            (Some(Verdict::Revert(analysis)), Some(stable)) if may_roll_back => Some(roll_back(
                reasons::CANARY_ANALYSIS_FAILED,
                canary_message(ms, stable, &image, analysis),
            )),
            (_, Some(stable)) if may_roll_back && canary_stuck => Some(roll_back(
                reasons::PROGRESS_DEADLINE_EXCEEDED,
                rollback_message(ms, &policy, stable, &image, pod_problem),
            )),
            _ => None,
        };
        return Delivery {
            stable,
            canary: verdict
                .filter(|_| rolled_back.is_none())
                .map(|v| v.status().clone()),
            rolled_back,
        };
    }
    let rollout = Rollout::new(ms, Some(deployment));
    if rollout.complete && rollout.available == Some(true) {
        let template = serde_json::to_value(&applied.template).unwrap_or_default();
        return Delivery {
            stable: Some(StableRevision {
                revision: applied.wanted.clone(),
                generation,
                image,
                template,
            }),
            rolled_back: None,
            canary: None,
        };
    }
    let rolled_back = match &stable {
        Some(stable) if rollout.deadline_exceeded && may_roll_back => Some(roll_back(
            reasons::PROGRESS_DEADLINE_EXCEEDED,
            rollback_message(ms, &policy, stable, &image, pod_problem),
        )),
        _ => None,
    };
    Delivery {
        stable,
        rolled_back,
        canary: None,
    }
}

/// Why a canary was reverted, with the numbers of its last failed check.
fn canary_message(
    ms: &Microservice,
    stable: &StableRevision,
    image: &str,
    analysis: &CanaryStatus,
) -> String {
    format!(
        "the canary of generation {} (image {image}) failed {} checks of its analysis, the last: {}; the pods stay on generation {} (image {}). {} keeps it until its spec, or a ConfigMap or Secret it reads, changes again",
        ms.metadata.generation.unwrap_or_default(),
        analysis.failed_checks,
        analysis.message.trim_start_matches("check failed: "),
        stable.generation,
        stable.image,
        ms.name_any(),
    )
}

fn rollback_message(
    ms: &Microservice,
    policy: &RolloutSpec,
    stable: &StableRevision,
    image: &str,
    pod_problem: Option<&PodProblem>,
) -> String {
    let why = pod_problem.map_or_else(
        || "its pods did not become ready".to_owned(),
        |p| format!("{}: {}", p.reason, p.message),
    );
    format!(
        "generation {} (image {image}) made no progress in {}s ({why}); the pods are back on generation {} (image {}). {} keeps it until its spec, or a ConfigMap or Secret it reads, changes again",
        ms.metadata.generation.unwrap_or_default(),
        policy.progress_deadline_seconds,
        stable.generation,
        stable.image,
        ms.name_any(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MicroserviceSpec, MicroserviceStatus};
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn ms(image: &str, generation: i64, status: Option<MicroserviceStatus>) -> Microservice {
        let mut ms = Microservice::new("web", MicroserviceSpec::with_image(image));
        ms.metadata.namespace = Some("shop".into());
        ms.metadata.generation = Some(generation);
        ms.spec.replicas = 2;
        // Replaced at once: the canary has its own tests.
        ms.spec.rollout = Some(RolloutSpec {
            strategy: RolloutStrategy::Rolling,
            ..Default::default()
        });
        ms.status = status;
        ms
    }

    /// A Deployment of `image` as the Deployment controller reports it.
    fn deployment(image: &str, complete: bool, deadline_exceeded: bool) -> Deployment {
        let progressing = DeploymentCondition {
            type_: "Progressing".into(),
            status: if deadline_exceeded { "False" } else { "True" }.into(),
            reason: Some(
                if deadline_exceeded {
                    "ProgressDeadlineExceeded"
                } else {
                    "NewReplicaSetAvailable"
                }
                .into(),
            ),
            ..Default::default()
        };
        let available = DeploymentCondition {
            type_: "Available".into(),
            status: "True".into(),
            ..Default::default()
        };
        Deployment {
            metadata: ObjectMeta {
                generation: Some(4),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                template: template(image),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(4),
                replicas: Some(if complete { 2 } else { 3 }),
                updated_replicas: Some(if complete { 2 } else { 1 }),
                ready_replicas: Some(2),
                available_replicas: Some(2),
                conditions: Some(vec![available, progressing]),
                ..Default::default()
            }),
        }
    }

    fn stable(image: &str, generation: i64) -> StableRevision {
        StableRevision {
            revision: revision_of(&template(image)),
            generation,
            image: image.into(),
            template: serde_json::to_value(template(image)).unwrap_or_default(),
        }
    }

    #[test]
    fn revisions_name_templates() {
        assert_eq!(revision_of(&template("a:1")), revision_of(&template("a:1")));
        assert_ne!(revision_of(&template("a:1")), revision_of(&template("a:2")));
        assert_eq!(revision_of(&template("a:1")).len(), 16);
    }

    #[test]
    fn a_complete_rollout_becomes_the_stable_revision() {
        let ms = ms("a:2", 2, None);
        let mut wanted = deployment("a:2", true, false);
        let applied = hold_back(&ms, &mut wanted, None);
        assert!(!applied.held_back);
        let delivery = decide(&ms, &applied, &wanted, None, None, None);
        let stable = delivery.stable.expect("stable");
        assert_eq!((stable.generation, stable.image.as_str()), (2, "a:2"));
        assert_eq!(stable.revision, revision_of(&template("a:2")));
        assert_eq!(delivery.rolled_back, None);
    }

    #[test]
    fn past_its_deadline_a_revision_goes_back_to_the_stable_one_until_the_spec_changes() {
        let before = MicroserviceStatus {
            stable_revision: Some(stable("a:1", 1)),
            ..Default::default()
        };
        let ms_2 = ms("a:2", 2, Some(before.clone()));
        let mut wanted = deployment("a:2", false, true);
        let applied = hold_back(&ms_2, &mut wanted, None);
        let problem = PodProblem {
            reason: "CrashLoopBackOff".into(),
            message: "pod web-x exited with code 1".into(),
        };
        let delivery = decide(&ms_2, &applied, &wanted, None, None, Some(&problem));
        let rolled_back = delivery
            .rolled_back_now(&ms_2)
            .expect("rolled back")
            .clone();
        assert_eq!(rolled_back.revision, revision_of(&template("a:2")));
        assert_eq!(rolled_back.to_revision, revision_of(&template("a:1")));
        assert_eq!(
            rolled_back.message,
            "generation 2 (image a:2) made no progress in 90s (CrashLoopBackOff: pod web-x exited with code 1); the pods are back on generation 1 (image a:1). web keeps it until its spec, or a ConfigMap or Secret it reads, changes again"
        );
        assert_eq!(delivery.stable, before.stable_revision);

        // Next reconcile: the spec still asks for a:2; the stable template is applied instead.
        let after = MicroserviceStatus {
            stable_revision: delivery.stable.clone(),
            rolled_back: Some(rolled_back.clone()),
            ..Default::default()
        };
        let ms_2 = ms("a:2", 2, Some(after.clone()));
        let mut wanted = deployment("a:2", false, false);
        let applied = hold_back(&ms_2, &mut wanted, None);
        assert!(applied.held_back);
        assert_eq!(
            wanted.spec.as_ref().map(|s| s.template.clone()),
            Some(template("a:1"))
        );
        let delivery = decide(
            &ms_2,
            &applied,
            &deployment("a:1", true, false),
            None,
            None,
            None,
        );
        assert_eq!(delivery.rolled_back, Some(rolled_back));
        assert_eq!(delivery.rolled_back_now(&ms_2), None);
        assert_eq!(delivery.stable, after.stable_revision);

        // A new spec is a new revision: tried, and the rollback is over.
        let ms_3 = ms("a:3", 3, Some(after));
        let mut wanted = deployment("a:3", false, false);
        let applied = hold_back(&ms_3, &mut wanted, None);
        assert!(!applied.held_back);
        assert_eq!(
            decide(&ms_3, &applied, &wanted, None, None, None).rolled_back,
            None
        );
    }

    #[test]
    fn nothing_is_rolled_back_without_a_stable_revision_or_with_rollback_off() {
        let ms_first = ms("a:1", 1, None);
        let mut wanted = deployment("a:1", false, true);
        let applied = hold_back(&ms_first, &mut wanted, None);
        assert_eq!(
            decide(&ms_first, &applied, &wanted, None, None, None),
            Delivery::default()
        );

        let mut ms_off = ms(
            "a:2",
            2,
            Some(MicroserviceStatus {
                stable_revision: Some(stable("a:1", 1)),
                ..Default::default()
            }),
        );
        ms_off.spec.rollout = Some(RolloutSpec {
            rollback: RollbackPolicy::Off,
            strategy: RolloutStrategy::Rolling,
            ..Default::default()
        });
        let mut wanted = deployment("a:2", false, true);
        let applied = hold_back(&ms_off, &mut wanted, None);
        assert_eq!(
            decide(&ms_off, &applied, &wanted, None, None, None).rolled_back,
            None
        );
    }

    /// The canary's Deployment as the Deployment controller reports it.
    fn canary_deployment(deadline_exceeded: bool) -> Deployment {
        let mut canary = deployment("a:2", false, deadline_exceeded);
        canary.metadata.name = Some("web-canary".into());
        annotate_revision(&mut canary);
        canary
    }

    #[test]
    fn a_new_revision_runs_as_a_canary_beside_the_stable_pods_until_promoted() {
        let before = MicroserviceStatus {
            stable_revision: Some(stable("a:1", 1)),
            ..Default::default()
        };
        let mut ms_2 = ms("a:2", 2, Some(before.clone()));
        ms_2.spec.rollout = None;
        let mut wanted = deployment("a:2", false, false);
        let mut applied = hold_back(&ms_2, &mut wanted, Some("older"));
        assert!(applied.canary && !applied.held_back);
        // The Deployment keeps the stable pods; the canary gets the wanted template.
        assert_eq!(
            wanted.spec.as_ref().map(|s| s.template.clone()),
            Some(template("a:1"))
        );
        assert_eq!(applied.template, template("a:2"));
        let analysing = Verdict::Analysing {
            status: CanaryStatus {
                passed_checks: 1,
                ..Default::default()
            },
            next_check: None,
        };
        let canary = canary_deployment(false);
        let delivery = decide(
            &ms_2,
            &applied,
            &wanted,
            Some(&canary),
            Some(&analysing),
            None,
        );
        assert_eq!(delivery.stable, before.stable_revision);
        assert_eq!(delivery.rolled_back, None);
        assert_eq!(delivery.canary.map(|c| c.passed_checks), Some(1));

        promote(&mut applied, &mut wanted);
        assert!(!applied.canary);
        assert_eq!(revision_annotation(&wanted), Some(applied.wanted.as_str()));
        // Once the Deployment carries it, the wanted revision is no canary any more.
        let mut again = deployment("a:2", false, false);
        let applied = hold_back(&ms_2, &mut again, Some(&applied.wanted));
        assert!(!applied.canary && !applied.held_back);
    }

    #[test]
    fn a_failed_or_stuck_canary_is_rolled_back_with_its_numbers() {
        let before = MicroserviceStatus {
            stable_revision: Some(stable("a:1", 1)),
            ..Default::default()
        };
        let mut ms_2 = ms("a:2", 2, Some(before));
        ms_2.spec.rollout = None;
        let mut wanted = deployment("a:2", false, false);
        let applied = hold_back(&ms_2, &mut wanted, None);
        let failed = Verdict::Revert(CanaryStatus {
            failed_checks: 2,
            message: "check failed: canary 100 answers, 50% ok".into(),
            ..Default::default()
        });
        let canary = canary_deployment(false);
        let delivery = decide(&ms_2, &applied, &wanted, Some(&canary), Some(&failed), None);
        let rolled_back = delivery.rolled_back.expect("rolled back");
        assert_eq!(rolled_back.reason, "CanaryAnalysisFailed");
        assert!(
            rolled_back.message.starts_with(
                "the canary of generation 2 (image a:2) failed 2 checks of its analysis, the last: canary 100 answers, 50% ok;"
            ),
            "{}",
            rolled_back.message
        );
        assert_eq!(delivery.canary, None);

        let stuck = canary_deployment(true);
        let analysing = Verdict::Analysing {
            status: CanaryStatus::default(),
            next_check: None,
        };
        let delivery = decide(
            &ms_2,
            &applied,
            &wanted,
            Some(&stuck),
            Some(&analysing),
            None,
        );
        assert_eq!(
            delivery.rolled_back.map(|r| r.reason),
            Some("ProgressDeadlineExceeded".to_owned())
        );
        // The Deployment of an earlier canary, or one the controller has not seen since its
        // new template, tells nothing of this one.
        let mut earlier = canary_deployment(true);
        if let Some(spec) = earlier.spec.as_mut() {
            spec.template = template("a:0");
        }
        annotate_revision(&mut earlier);
        let mut unseen = canary_deployment(true);
        unseen.metadata.generation = Some(5);
        for canary in [earlier, unseen] {
            let delivery = decide(
                &ms_2,
                &applied,
                &wanted,
                Some(&canary),
                Some(&analysing),
                None,
            );
            assert_eq!(delivery.rolled_back, None);
        }
    }

    #[test]
    fn one_pod_or_a_store_in_the_volume_is_never_doubled_by_a_canary() {
        let status = MicroserviceStatus {
            stable_revision: Some(stable("a:1", 1)),
            ..Default::default()
        };
        let mut one = ms("a:2", 2, Some(status.clone()));
        one.spec.rollout = None;
        one.spec.replicas = 1;
        assert!(!hold_back(&one, &mut deployment("a:2", false, false), None).canary);
        let mut embedded = ms("a:2", 2, Some(status));
        embedded.spec.rollout = None;
        let mut recreate = deployment("a:2", false, false);
        if let Some(spec) = recreate.spec.as_mut() {
            spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            });
        }
        assert!(!hold_back(&embedded, &mut recreate, None).canary);
    }
}
