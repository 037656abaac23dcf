//! Item 4: a rolling update under continuous load drops no request, as the Service sees it.
//!
//! A port-forward to a Service pins one pod, which dies in the rollout, so load sent from the
//! test process would measure the port-forward, not the Service. And no image with a load
//! tool can be pulled. So kea-service itself is the load source: a second Microservice,
//! `prober`, depends on `target`, and every `GET /api/dependencies` on the prober makes it
//! call `target` through its Service (ClusterIP, kube-proxy, cluster DNS), exactly as a
//! real client in the cluster would. The test polls the prober (through a port-forward to
//! the prober's pod, which the rollout does not touch) for the whole rollout of `target`.
//! Each report must show `target` up with status 200 in ONE attempt: /api/dependencies
//! retries failed calls, so `attempts > 1` would mean a request failed and was hidden.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kea_e2e::{TestNamespace, enabled, http, microservice, pods_of, wait_ready, wait_ready_pods};
use kea_operator::Microservice;
use kea_operator::api::Dependency;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test]
async fn rolling_update_under_load_drops_no_request() {
    if !enabled("rolling_update_under_load_drops_no_request") {
        return;
    }
    let ns = TestNamespace::create("rollout").await.unwrap();
    let api = ns.api::<Microservice>();
    let pods = ns.api::<Pod>();
    api.create(&PostParams::default(), &microservice("target", 2))
        .await
        .unwrap();
    let mut prober = microservice("prober", 1);
    prober.spec.depends_on = vec![Dependency {
        name: "target".into(),
    }];
    api.create(&PostParams::default(), &prober).await.unwrap();
    wait_ready(&api, "target", TIMEOUT).await.unwrap();
    wait_ready(&api, "prober", TIMEOUT).await.unwrap();
    wait_ready_pods(&pods, "target", 2, TIMEOUT).await.unwrap();
    let prober_pod = wait_ready_pods(&pods, "prober", 1, TIMEOUT).await.unwrap()[0].name_any();
    let old_pods: Vec<String> = pods_of(&pods, "target")
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();

    // The load: reports of the prober, as fast as the port-forward allows, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, namespace, stop) = (ns.client.clone(), ns.name.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reports = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = http(
                    &client,
                    &namespace,
                    &prober_pod,
                    "GET",
                    "/api/dependencies",
                    None,
                )
                .await;
                // A failed port-forward is the test harness failing, not the Service.
                let Ok(answer) = answer else { continue };
                let json = answer.json().unwrap();
                let report = json["dependencies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["name"] == "target")
                    .cloned()
                    .unwrap();
                reports.push(report);
            }
            reports
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let patch =
        serde_json::json!({ "spec": { "env": [{ "name": "E2E_REVISION", "value": "2" }] } });
    let ms = api
        .patch("target", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = ms.metadata.generation;
    eprintln!("rollout of target to generation {generation:?} started");
    let deployments = ns.api::<Deployment>();
    kea_e2e::eventually("target rolled out", TIMEOUT, || {
        let (api, deployments, pods, old_pods) = (
            api.clone(),
            deployments.clone(),
            pods.clone(),
            old_pods.clone(),
        );
        async move {
            let ms = api.get("target").await?;
            let deployment = deployments.get("target").await?;
            let updated = deployment
                .status
                .as_ref()
                .and_then(|s| s.updated_replicas)
                .unwrap_or(0);
            let current = pods_of(&pods, "target").await?;
            let old_left = current
                .iter()
                .filter(|p| old_pods.contains(&p.name_any()))
                .count();
            Ok((kea_e2e::is_ready(&ms)
                && ms.metadata.generation == generation
                && updated == 2
                && old_left == 0)
                .then_some(()))
        }
    })
    .await
    .unwrap();
    // Keep the load on a little after the last old pod is gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let reports = load.await.unwrap();

    let failed: Vec<&serde_json::Value> = reports
        .iter()
        .filter(|r| r["up"] != true || r["status"] != 200 || r["attempts"] != 1)
        .collect();
    eprintln!(
        "{} requests to target through its Service during the rollout, {} failed",
        reports.len(),
        failed.len()
    );
    assert!(
        reports.len() >= 10,
        "too few requests to prove anything: {}",
        reports.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during the rollout: {failed:#?}"
    );
    // Every pod now runs the new spec.
    for pod in pods_of(&pods, "target")
        .await
        .unwrap()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let env = pod.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        assert!(
            env.iter().any(|e| e.name == "E2E_REVISION"),
            "pod {} runs the old spec",
            pod.name_any()
        );
    }
    ns.cleanup().await.unwrap();
}
