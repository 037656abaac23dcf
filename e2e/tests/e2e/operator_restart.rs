//! Item 5: the operator's leader is killed mid-rollout and the system still converges.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kea_e2e::{
    OPERATOR_LEASE, OPERATOR_NAMESPACE, eventually, microservice, namespace, wait_ready,
    wait_ready_pods,
};
use kea_operator::Microservice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn killing_the_leader_mid_rollout_converges() {
    let ns = namespace("leader").await.unwrap();
    let api = ns.api::<Microservice>();
    let pods = ns.api::<Pod>();
    api.create(&PostParams::default(), &microservice("survivor", 2))
        .await
        .unwrap();
    wait_ready(&api, "survivor", TIMEOUT).await.unwrap();

    let leases: Api<Lease> = Api::namespaced(ns.client(), OPERATOR_NAMESPACE);
    let operator_pods: Api<Pod> = Api::namespaced(ns.client(), OPERATOR_NAMESPACE);
    let leader = eventually("an operator leader", TIMEOUT, || {
        let leases = leases.clone();
        async move {
            Ok(leases
                .get(OPERATOR_LEASE)
                .await?
                .spec
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()))
        }
    })
    .await
    .unwrap();
    let leader_uid = operator_pods.get(&leader).await.unwrap().uid();

    // Start a rollout (env change); once the leader has handed it to the Deployment, kill the
    // leader at once, without grace: a crash in the middle of the rollout.
    let patch =
        serde_json::json!({ "spec": { "env": [{ "name": "E2E_REVISION", "value": "2" }] } });
    let generation = api
        .patch("survivor", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap()
        .metadata
        .generation;
    let deployments = ns.api::<Deployment>();
    eventually("the leader to apply the change", TIMEOUT, || {
        let deployments = deployments.clone();
        async move {
            let deployment = deployments.get("survivor").await?;
            Ok(
                kea_e2e::runs_revision_2(deployment.spec.and_then(|s| s.template.spec).as_ref())
                    .then_some(()),
            )
        }
    })
    .await
    .unwrap();
    operator_pods
        .delete(
            &leader,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    // The state at the kill: the rollout had begun and not finished, and the Microservice's
    // status did not say Ready for the new generation yet.
    let deployment = deployments.get("survivor").await.unwrap();
    let rolled_out = deployment.status.as_ref().is_some_and(|s| {
        s.observed_generation == deployment.metadata.generation
            && s.updated_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.replicas == Some(2)
    });
    assert!(
        !rolled_out,
        "the rollout finished before the kill: {:?}",
        deployment.status
    );
    let at_kill = api.get("survivor").await.unwrap();
    let observed = at_kill.status.as_ref().and_then(|s| s.observed_generation);
    assert!(
        !(kea_e2e::is_ready(&at_kill) && observed == generation),
        "the Microservice was already Ready for generation {generation:?} at the kill"
    );
    eprintln!(
        "killed operator leader {leader} mid-rollout to generation {generation:?} (status at the kill: observed {observed:?}, Deployment {:?})",
        deployment
            .status
            .map(|s| (s.updated_replicas, s.available_replicas))
    );

    // The Microservice converges: Ready with the new generation observed. The rollout takes
    // longer than the kill (new pods must start, pass their probes and the Deployment's
    // minReadySeconds), so this Ready, once all pods run the new spec, can only have been
    // written by the operator replica that took the Lease over.
    let ms = wait_ready(&api, "survivor", TIMEOUT).await.unwrap();
    assert_eq!(ms.status.as_ref().unwrap().observed_generation, generation);
    let running = wait_ready_pods(&pods, "survivor", 2, TIMEOUT)
        .await
        .unwrap();
    for pod in &running {
        assert!(
            kea_e2e::runs_revision_2(pod.spec.as_ref()),
            "pod {} runs the old spec",
            pod.name_any()
        );
    }
    // The Lease is held by a live operator pod (another one, or the killed one's replacement).
    let holder = eventually("a live leader", TIMEOUT, || {
        let (leases, operator_pods, leader_uid) =
            (leases.clone(), operator_pods.clone(), leader_uid.clone());
        async move {
            let Some(holder) = leases
                .get(OPERATOR_LEASE)
                .await?
                .spec
                .and_then(|s| s.holder_identity)
            else {
                return Ok(None);
            };
            let pod = operator_pods.get_opt(&holder).await?;
            Ok(pod.filter(|p| p.uid() != leader_uid).map(|_| holder))
        }
    })
    .await
    .unwrap();
    eprintln!("new leader: {holder}");
    ns.cleanup().await.unwrap();
}
