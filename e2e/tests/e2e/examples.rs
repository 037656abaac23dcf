//! Item 1: the example system (deploy/examples, namespace kea-demo) is Ready and answers.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kea_e2e::{
    DEMO_NAMESPACE, client, conditions, eventually, get_from_service_pod, is_ready, pod_ready,
    pods_of,
};
use kea_operator::Microservice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use kea_e2e::EXAMPLES;

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn examples_are_ready_with_pods_ready_by_their_probes() {
    let client = client().await.unwrap();
    let microservices: Api<Microservice> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    kea_e2e::wait_demo_settled(&client, Duration::from_secs(120))
        .await
        .unwrap();
    for name in EXAMPLES {
        let ms = kea_e2e::wait_ready(&microservices, name, Duration::from_secs(120))
            .await
            .unwrap();
        assert!(is_ready(&ms));
        let status = ms.status.clone().unwrap();
        let list = pods_of(&pods, name).await.unwrap();
        let running: Vec<&Pod> = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert!(!running.is_empty(), "{name} has no pods");
        assert_eq!(
            status.ready_replicas,
            running.len() as i32,
            "{name}: {status:?}"
        );
        for pod in &running {
            assert!(
                pod_ready(pod),
                "pod {} of {name} is not Running and Ready",
                pod.name_any()
            );
            let containers = pod
                .status
                .as_ref()
                .unwrap()
                .container_statuses
                .clone()
                .unwrap();
            for container in containers {
                assert!(
                    container.ready,
                    "container {} of {} not ready",
                    container.name,
                    pod.name_any()
                );
                assert_eq!(
                    container.restart_count,
                    0,
                    "container {} of {} restarted",
                    container.name,
                    pod.name_any()
                );
            }
            // The kubelet's own probes decide readiness: the pod template must have them.
            let spec = pod.spec.as_ref().unwrap();
            let container = &spec.containers[0];
            assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
        }
        // The Service routes to every ready pod.
        let ready_endpoints: usize = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await
            .unwrap()
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .count();
        assert_eq!(
            ready_endpoints,
            running.len(),
            "ready endpoints of Service {name}"
        );
    }
    // frontend autoscales with minReplicas 2.
    assert!(
        pods_of(&pods, "frontend")
            .await
            .unwrap()
            .iter()
            .filter(|p| pod_ready(p))
            .count()
            >= 2
    );
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn examples_answer_the_seed_routes() {
    let client = client().await.unwrap();
    for name in EXAMPLES {
        let get = |path: &'static str| get_from_service_pod(&client, DEMO_NAMESPACE, name, path);
        let root = get("/").await.unwrap();
        assert_eq!(
            (root.status, root.body.as_str()),
            (200, "Hello KEA!"),
            "{name} GET /"
        );
        let os = get("/oscheck").await.unwrap();
        assert_eq!(os.status, 200);
        assert!(
            os.body.starts_with("Your operation system is: Linux"),
            "{name} /oscheck: {}",
            os.body
        );
        for (path, seed) in [("/mysqldata", "Test MySQL"), ("/nosqldata", "Test NoSQL")] {
            let answer = get(path).await.unwrap();
            assert_eq!(answer.status, 200, "{name} {path}: {}", answer.body);
            let json = answer.json().unwrap();
            assert!(json["store"].is_string(), "{name} {path}: {json}");
            let names: Vec<&str> = json["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["name"].as_str())
                .collect();
            assert!(
                names.contains(&seed),
                "{name} {path} lacks the seed item {seed}: {json}"
            );
        }
    }
    // POST then GET on users' NoSQL store.
    let pods: Api<Pod> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    let pod = pods_of(&pods, "users")
        .await
        .unwrap()
        .into_iter()
        .find(pod_ready)
        .unwrap()
        .name_any();
    let item = format!("e2e-{}", std::process::id());
    let body = serde_json::json!({ "name": item }).to_string();
    let created = kea_e2e::http(
        &client,
        DEMO_NAMESPACE,
        &pod,
        "POST",
        "/nosqldata",
        Some(&body),
    )
    .await
    .unwrap();
    assert!(
        created.status == 200 || created.status == 201,
        "POST /nosqldata: {created:?}"
    );
    let list = kea_e2e::http(
        &client,
        DEMO_NAMESPACE,
        &pod,
        "GET",
        "/nosqldata?limit=1000",
        None,
    )
    .await
    .unwrap();
    assert!(
        list.body.contains(&item),
        "the new item is not listed: {}",
        list.body
    );
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn frontend_reaches_users_and_orders_by_cluster_dns() {
    let client = client().await.unwrap();
    let answer = get_from_service_pod(&client, DEMO_NAMESPACE, "frontend", "/api/dependencies")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json().unwrap();
    let dependencies = json["dependencies"].as_array().unwrap();
    for name in ["users", "orders"] {
        let dependency = dependencies
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {json}"));
        assert_eq!(dependency["up"], true, "{name} is down: {dependency}");
        assert_eq!(dependency["status"], 200, "{dependency}");
        assert_eq!(dependency["answer"], "Hello KEA!", "{dependency}");
        let url = dependency["url"].as_str().unwrap();
        assert!(
            url.contains(&format!("{name}.{DEMO_NAMESPACE}")),
            "{name} is not called by its DNS name: {url}"
        );
    }
}

/// metrics-server feeds the HorizontalPodAutoscaler: frontend's reports its pods' CPU (not
/// `<unknown>`), and the Microservice's `Autoscaling` condition says it is active.
#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn frontend_autoscaler_reads_cpu_from_metrics() {
    let client = client().await.unwrap();
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    let microservices: Api<Microservice> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    // metrics-server has a value once it has scraped the pods twice (15 s apart), and the
    // HPA reads it on its next sync.
    let utilization = eventually(
        "frontend's HPA to report CPU utilization",
        Duration::from_secs(240),
        || async {
            let hpa = autoscalers.get("frontend").await?;
            let status = hpa.status.unwrap_or_default();
            let current = status
                .current_metrics
                .into_iter()
                .flatten()
                .filter_map(|m| m.resource)
                .find(|r| r.name == "cpu")
                .and_then(|r| r.current.average_utilization);
            match current {
                Some(current) => Ok(Some(current)),
                // Not yet: what the HPA says, for the message should it never come.
                None => anyhow::bail!("the HPA's conditions are {:?}", status.conditions),
            }
        },
    )
    .await
    .unwrap();
    let ms = eventually(
        "frontend's Autoscaling condition True",
        Duration::from_secs(60),
        || async {
            let ms = microservices.get("frontend").await?;
            let autoscaling = ms.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == conditions::AUTOSCALING)
                    .cloned()
            });
            match autoscaling {
                Some(c) if c.status == "True" => Ok(Some(ms)),
                other => anyhow::bail!("the Autoscaling condition is {other:?}"),
            }
        },
    )
    .await
    .unwrap();
    let condition = ms
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == conditions::AUTOSCALING)
        .unwrap();
    eprintln!(
        "e2e: frontend's HPA reads cpu {utilization}% ({}: {})",
        condition.reason, condition.message
    );
}
