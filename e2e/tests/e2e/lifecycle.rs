//! Items 2 and 3: scaling through the scale subresource and deletion; drift repair.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kea_e2e::{
    ClusterClient, eventually, microservice, namespace, pods_of, service_url, wait_ready,
    wait_ready_pods,
};
use kea_operator::Microservice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(180);

async fn scale(api: &Api<Microservice>, name: &str, replicas: i32) {
    // What `kubectl scale ms NAME --replicas=N` does: a patch of the scale subresource.
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    let scale = api
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(replicas));
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn scale_subresource_changes_pod_count_and_delete_removes_children() {
    let ns = namespace("scale").await.unwrap();
    let api = ns.api::<Microservice>();
    let pods = ns.api::<Pod>();
    api.create(&PostParams::default(), &microservice("web", 1))
        .await
        .unwrap();
    wait_ready(&api, "web", TIMEOUT).await.unwrap();
    wait_ready_pods(&pods, "web", 1, TIMEOUT).await.unwrap();

    scale(&api, "web", 3).await;
    wait_ready_pods(&pods, "web", 3, TIMEOUT).await.unwrap();
    let ms = wait_ready(&api, "web", TIMEOUT).await.unwrap();
    assert_eq!(ms.spec.replicas, 3);
    let status = api.get_scale("web").await.unwrap().status.unwrap();
    assert_eq!(status.replicas, 3);
    assert_eq!(
        status.selector.as_deref(),
        Some(kea_operator::children::meta::selector_string("web").as_str())
    );

    scale(&api, "web", 1).await;
    wait_ready_pods(&pods, "web", 1, TIMEOUT).await.unwrap();
    wait_ready(&api, "web", TIMEOUT).await.unwrap();

    api.delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let deployments = ns.api::<Deployment>();
    let services = ns.api::<Service>();
    eventually("Deployment, Service and pods of web gone", TIMEOUT, || {
        let (deployments, services, pods) = (deployments.clone(), services.clone(), pods.clone());
        async move {
            let deployment = deployments.get_opt("web").await?.is_some();
            let service = services.get_opt("web").await?.is_some();
            let pods = pods_of(&pods, "web").await?.len();
            if deployment || service || pods > 0 {
                anyhow::bail!("deployment {deployment}, service {service}, {pods} pods left");
            }
            Ok(Some(()))
        }
    })
    .await
    .unwrap();
    assert!(api.get_opt("web").await.unwrap().is_none());
    ns.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn deleted_children_come_back() {
    let ns = namespace("drift").await.unwrap();
    let api = ns.api::<Microservice>();
    let pods = ns.api::<Pod>();
    api.create(&PostParams::default(), &microservice("drift", 1))
        .await
        .unwrap();
    wait_ready(&api, "drift", TIMEOUT).await.unwrap();

    let deployments = ns.api::<Deployment>();
    let old = deployments.get("drift").await.unwrap().uid().unwrap();
    deployments
        .delete("drift", &DeleteParams::background())
        .await
        .unwrap();
    eventually("a new Deployment drift", TIMEOUT, || {
        let (deployments, old) = (deployments.clone(), old.clone());
        async move {
            Ok(deployments
                .get_opt("drift")
                .await?
                .filter(|d| d.uid() != Some(old))
                .map(|_| ()))
        }
    })
    .await
    .unwrap();

    let services = ns.api::<Service>();
    let old = services.get("drift").await.unwrap().uid().unwrap();
    services
        .delete("drift", &DeleteParams::background())
        .await
        .unwrap();
    eventually("a new Service drift", TIMEOUT, || {
        let (services, old) = (services.clone(), old.clone());
        async move {
            Ok(services
                .get_opt("drift")
                .await?
                .filter(|s| s.uid() != Some(old))
                .map(|_| ()))
        }
    })
    .await
    .unwrap();

    wait_ready_pods(&pods, "drift", 1, TIMEOUT).await.unwrap();
    wait_ready(&api, "drift", TIMEOUT).await.unwrap();
    // The recreated Service answers, through the Service: a caller in the cluster reaches it
    // by its name (a new cluster IP behind the same DNS name).
    let caller = ClusterClient::caller_of(&ns.client(), ns.name(), "drift")
        .await
        .unwrap();
    let answer = caller.http(&service_url("drift", "/"), None).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "Hello KEA!"));
    ns.cleanup().await.unwrap();
}
