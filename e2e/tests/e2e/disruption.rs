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
use kea_e2e::{
    ClusterClient, TestNamespace, enabled, eventually, pod_ready, pods_of, service_url, wait_ready,
    wait_ready_pods,
};
use kea_operator::Microservice;
use kea_operator::api::Network;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

const LOAD_LABEL: (&str, &str) = ("kea.dev/e2e-client", "load");
/// Parallel request loops in the load pod.
const LOAD_LOOPS: u32 = 4;
/// Bounds of the load: requests per loop and seconds in all.
const LOAD_MAX_REQUESTS: u32 = 20_000;
const LOAD_MAX_SECONDS: u32 = 400;
const TIMEOUT: Duration = Duration::from_secs(300);

/// `LOAD_LOOPS` loops of `wget` against the URL `$1`, each counting answers "Hello KEA!" and
/// everything else (a refused or reset connection, a timeout, an error status). Every 10
/// requests a loop writes its counts to /tmp/count.N; /tmp/stop ends them. Prints the sums
/// and the first failures.
const LOAD_SCRIPT: &str = r#"
url=$1; loops=$2; max=$3; seconds=$4
deadline=$(( $(date +%s) + seconds ))
rm -f /tmp/stop /tmp/count.* /tmp/failures
run() {
  ok=0; failed=0; n=0
  while [ ! -f /tmp/stop ] && [ $n -lt "$max" ] && [ "$(date +%s)" -lt $deadline ]; do
    n=$((n + 1))
    answer=$(timeout 5 wget -q -O - "$url" 2>&1)
    if [ "$answer" = "Hello KEA!" ]; then ok=$((ok + 1)); else
      failed=$((failed + 1)); echo "$(date +%T) $answer" >> /tmp/failures; fi
    [ $((n % 10)) = 0 ] && echo "$ok $failed" > /tmp/count.$1
  done
  echo "$ok $failed" > /tmp/count.$1
}
for i in $(seq "$loops"); do run "$i" & done
wait
cat /tmp/count.* | awk '{ok += $1; failed += $2} END {print ok, failed}'
head -n 20 /tmp/failures 2>/dev/null || true
"#;

/// `ok failed` summed over the loops so far.
async fn load_counts(load: &ClusterClient) -> anyhow::Result<(u64, u64)> {
    let output = load
        .exec(
            &["sh", "-c", "cat /tmp/count.* 2>/dev/null || true"],
            Duration::from_secs(5),
        )
        .await?;
    Ok(sum_counts(&output.stdout))
}

fn sum_counts(text: &str) -> (u64, u64) {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
            Some((fields.next()??, fields.next()??))
        })
        .fold((0, 0), |(ok, failed), (o, f)| (ok + o, failed + f))
}

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
async fn draining_a_worker_under_load_fails_no_request() {
    if !enabled("draining_a_worker_under_load_fails_no_request") {
        return;
    }
    let ns = TestNamespace::create("drain").await.unwrap();
    let client = ns.client.clone();
    let workers = workers(&client).await;
    assert!(
        workers.len() >= 2,
        "a drain needs two schedulable workers, found {workers:?} (hack/kind.sh: KEA_KIND_WORKERS)"
    );

    let mut web = kea_e2e::microservice("web", 2);
    // Long enough for every node's kube-proxy to drop an evicted pod before it stops.
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
    let load = ClusterClient::start_on(
        &client,
        &ns.name,
        "load",
        BTreeMap::from([(LOAD_LABEL.0.to_owned(), LOAD_LABEL.1.to_owned())]),
        Some(&other),
    )
    .await
    .unwrap();
    let url = service_url("web", "/");
    let (loops, max, seconds) = (
        LOAD_LOOPS.to_string(),
        LOAD_MAX_REQUESTS.to_string(),
        LOAD_MAX_SECONDS.to_string(),
    );
    let running = {
        let load = load.clone();
        let args: Vec<String> = ["sh", "-c", LOAD_SCRIPT, "sh", &url, &loops, &max, &seconds]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            load.exec(&args, Duration::from_secs(u64::from(LOAD_MAX_SECONDS)))
                .await
        })
    };
    let (warm, _) = eventually("the load running", Duration::from_secs(60), || async {
        let counts = load_counts(&load).await?;
        Ok((counts.0 >= 50).then_some(counts))
    })
    .await
    .unwrap();

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
    let at_ready = load_counts(&load).await.unwrap();
    eventually(
        "more requests after the drain",
        Duration::from_secs(60),
        || async { Ok((load_counts(&load).await?.0 >= at_ready.0 + 50).then_some(())) },
    )
    .await
    .unwrap();
    load.exec(&["touch", "/tmp/stop"], Duration::from_secs(5))
        .await
        .unwrap();
    let output = running.await.unwrap().unwrap();
    let (ok, failed) = sum_counts(output.stdout.lines().next().unwrap_or_default());
    eprintln!(
        "e2e: drain of {drained} took {drain_took:?}, web Ready on {after:?} after {back_after:?}; \
         {ok} requests answered ({} before the drain), {failed} failed",
        warm
    );
    assert_eq!(
        failed, 0,
        "requests failed during the drain:\n{}",
        output.stdout
    );
    assert!(ok >= warm + 100, "too little load: {ok} requests");
    drop(uncordon);
    ns.cleanup().await.unwrap();
}

#[test]
fn sums_the_counts_of_the_loops() {
    assert_eq!(sum_counts("10 0\n5 1\n\nbad\n"), (15, 1));
}
