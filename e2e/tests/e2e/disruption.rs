//! Losing a node: `kubectl drain` of a worker that runs pods of a two-replica Microservice,
//! under continuous concurrent load through its Service from inside the cluster.
//!
//! A drain evicts every pod of the node, whoever owns it, so these tests must run alone:
//! `hack/e2e.sh` runs the suite with `--skip disruption::`, then `disruption::` with one
//! thread. The node is uncordoned at the end, whether the test passed or not.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kea_e2e::load::{Counts, Load};
use kea_e2e::{
    eventually, namespace, pod_ready, pods_of, service_url, wait_ready, wait_ready_pods,
};
use kea_operator::Microservice;
use kea_operator::api::Network;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

const LOAD_LABEL: (&str, &str) = ("kea.dev/e2e-client", "load");
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs kubectl (on PATH: `hack/e2e.sh` puts the toolchain's there) and fails with its output.
fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("kubectl").args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(output.status.success(), "kubectl {args:?} failed: {text}");
    Ok(text)
}

/// Uncordons the node when dropped, so a failed test leaves a schedulable cluster.
struct Uncordon(String);

impl Drop for Uncordon {
    fn drop(&mut self) {
        if let Err(error) = kubectl(&["uncordon", &self.0]) {
            eprintln!("e2e: uncordon {}: {error:#}", self.0);
        }
    }
}

/// The schedulable worker nodes (no control-plane role).
async fn workers(client: &Client) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|n| {
            !n.labels()
                .contains_key("node-role.kubernetes.io/control-plane")
        })
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .map(ResourceExt::name_any)
        .collect()
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs kind with kea installed: hack/e2e.sh"]
async fn draining_a_worker_under_load_fails_no_request() {
    let ns = namespace("drain").await.unwrap();
    let client = ns.client();
    let workers = workers(&client).await;
    assert!(
        workers.len() >= 2,
        "a drain needs two schedulable workers, found {workers:?} (hack/kind.sh: KEA_KIND_WORKERS)"
    );

    let mut web = kea_e2e::microservice("web", 2);
    // Evicted pods keep serving until every node's proxy has dropped them.
    web.spec.deregistration_seconds = kea_e2e::DEREGISTRATION_SECONDS;
    web.spec.drain_seconds = 10;
    web.spec.network = Some(Network {
        allow_from: vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    LOAD_LABEL.0.to_owned(),
                    LOAD_LABEL.1.to_owned(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }],
        restrict_egress: false,
    });
    let microservices: Api<Microservice> = ns.api();
    microservices
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    wait_ready(&microservices, "web", TIMEOUT).await.unwrap();
    let pods: Api<Pod> = ns.api();
    let before = wait_ready_pods(&pods, "web", 2, TIMEOUT).await.unwrap();
    let drained = node_of(&before[0]);
    let spread: Vec<String> = before.iter().map(node_of).collect();
    eprintln!("e2e: web runs on {spread:?}; draining {drained}");
    let other = workers.iter().find(|w| **w != drained).cloned().unwrap();

    // The load comes from the worker that stays, through the Service's ClusterIP.
    let load = Load::start(
        &client,
        ns.name(),
        "load",
        BTreeMap::from([(LOAD_LABEL.0.to_owned(), LOAD_LABEL.1.to_owned())]),
        Some(&other),
        &service_url("web", "/"),
        50,
    )
    .await
    .unwrap();
    let warm = load.counts().await.unwrap().ok;

    let uncordon = Uncordon(drained.clone());
    let started = Instant::now();
    kubectl(&[
        "drain",
        &drained,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=240s",
    ])
    .unwrap();
    let drain_took = started.elapsed();
    let after = eventually(
        "web's two pods Ready on the other worker",
        TIMEOUT,
        || async {
            let list = pods_of(&pods, "web").await?;
            let ready: Vec<&Pod> = list.iter().filter(|p| pod_ready(p)).collect();
            Ok(
                (ready.len() == 2 && ready.iter().all(|p| node_of(p) != drained))
                    .then(|| ready.iter().map(|p| node_of(p)).collect::<Vec<_>>()),
            )
        },
    )
    .await
    .unwrap();
    let back_after = started.elapsed();
    // Keep the load on a little past the new pods, then stop it.
    let at_ready = load.counts().await.unwrap();
    load.wait_for_answers(at_ready.ok + 50, Duration::from_secs(60))
        .await
        .unwrap();
    let report = load.stop().await.unwrap();
    let Counts { ok, failed } = report.counts;
    eprintln!(
        "e2e: drain of {drained} took {drain_took:?}, web Ready on {after:?} after {back_after:?}; \
         {ok} requests answered ({warm} before the drain), {failed} failed"
    );
    assert_eq!(
        failed, 0,
        "requests failed during the drain:\n{}",
        report.output
    );
    assert!(ok >= warm + 100, "too little load: {ok} requests");
    drop(uncordon);
    ns.cleanup().await.unwrap();
}
