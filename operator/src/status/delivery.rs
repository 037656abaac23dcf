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
use super::pods::PodProblem;
use crate::api::{Microservice, RollbackPolicy, RolledBack, RolloutSpec, StableRevision};

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
}

/// Puts the stable pod template in `deployment` when the revision it carries is the one that
/// was rolled back; says which was applied.
pub fn hold_back(ms: &Microservice, deployment: &mut Deployment) -> Applied {
    let template = deployment
        .spec
        .as_ref()
        .map(|spec| spec.template.clone())
        .unwrap_or_default();
    let wanted = revision_of(&template);
    let status = ms.status.as_ref();
    let stable = status
        .filter(|s| s.rolled_back.as_ref().is_some_and(|r| r.revision == wanted))
        .and_then(|s| s.stable_revision.as_ref())
        .and_then(|stable| serde_json::from_value::<PodTemplateSpec>(stable.template.clone()).ok());
    let held_back = match (stable, deployment.spec.as_mut()) {
        (Some(stable), Some(spec)) => {
            spec.template = stable;
            true
        }
        _ => false,
    };
    Applied {
        wanted,
        template,
        held_back,
    }
}

/// The stable and rolled-back revisions after this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delivery {
    pub stable: Option<StableRevision>,
    pub rolled_back: Option<RolledBack>,
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

/// Decides from what the Deployment shows: the wanted revision becomes the stable one once its
/// rollout completed with every pod available; past its progress deadline it is rolled back
/// (with `rollback: Auto` and a stable revision to go back to).
pub fn decide(
    ms: &Microservice,
    applied: &Applied,
    deployment: &Deployment,
    pod_problem: Option<&PodProblem>,
) -> Delivery {
    let status = ms.status.as_ref();
    let stable = status.and_then(|s| s.stable_revision.clone());
    if applied.held_back {
        return Delivery {
            stable,
            rolled_back: status.and_then(|s| s.rolled_back.clone()),
        };
    }
    let rollout = Rollout::new(ms, Some(deployment));
    let image = ms.spec.image.clone();
    let generation = ms.metadata.generation.unwrap_or_default();
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
        };
    }
    let policy = ms.spec.rollout.clone().unwrap_or_default();
    let rolled_back = match &stable {
        Some(stable)
            if rollout.deadline_exceeded
                && policy.rollback == RollbackPolicy::Auto
                && stable.revision != applied.wanted =>
        {
            Some(RolledBack {
                revision: applied.wanted.clone(),
                generation,
                image: image.clone(),
                to_revision: stable.revision.clone(),
                message: rollback_message(ms, &policy, stable, &image, pod_problem),
            })
        }
        _ => None,
    };
    Delivery {
        stable,
        rolled_back,
    }
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
        let applied = hold_back(&ms, &mut wanted);
        assert!(!applied.held_back);
        let delivery = decide(&ms, &applied, &wanted, None);
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
        let applied = hold_back(&ms_2, &mut wanted);
        let problem = PodProblem {
            reason: "CrashLoopBackOff".into(),
            message: "pod web-x exited with code 1".into(),
        };
        let delivery = decide(&ms_2, &applied, &wanted, Some(&problem));
        let rolled_back = delivery
            .rolled_back_now(&ms_2)
            .expect("rolled back")
            .clone();
        assert_eq!(rolled_back.revision, revision_of(&template("a:2")));
        assert_eq!(rolled_back.to_revision, revision_of(&template("a:1")));
        assert_eq!(
            rolled_back.message,
            "generation 2 (image a:2) made no progress in 120s (CrashLoopBackOff: pod web-x exited with code 1); the pods are back on generation 1 (image a:1). web keeps it until its spec, or a ConfigMap or Secret it reads, changes again"
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
        let applied = hold_back(&ms_2, &mut wanted);
        assert!(applied.held_back);
        assert_eq!(
            wanted.spec.as_ref().map(|s| s.template.clone()),
            Some(template("a:1"))
        );
        let delivery = decide(&ms_2, &applied, &deployment("a:1", true, false), None);
        assert_eq!(delivery.rolled_back, Some(rolled_back));
        assert_eq!(delivery.rolled_back_now(&ms_2), None);
        assert_eq!(delivery.stable, after.stable_revision);

        // A new spec is a new revision: tried, and the rollback is over.
        let ms_3 = ms("a:3", 3, Some(after));
        let mut wanted = deployment("a:3", false, false);
        let applied = hold_back(&ms_3, &mut wanted);
        assert!(!applied.held_back);
        assert_eq!(decide(&ms_3, &applied, &wanted, None).rolled_back, None);
    }

    #[test]
    fn nothing_is_rolled_back_without_a_stable_revision_or_with_rollback_off() {
        let ms_first = ms("a:1", 1, None);
        let mut wanted = deployment("a:1", false, true);
        let applied = hold_back(&ms_first, &mut wanted);
        assert_eq!(
            decide(&ms_first, &applied, &wanted, None),
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
            ..Default::default()
        });
        let mut wanted = deployment("a:2", false, true);
        let applied = hold_back(&ms_off, &mut wanted);
        assert_eq!(decide(&ms_off, &applied, &wanted, None).rolled_back, None);
    }
}
