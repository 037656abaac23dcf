//! Leader election on the real API server: one leader at a time, even when the leader is cut
//! off from the API server. (The operator processes' elections, handover after SIGTERM and
//! clock skew, are tested in cli/tests/leader_election.rs.)
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::partition::{PartitionProxy, WriteLog, recording_client};
use common::setup;
use k8s_openapi::api::coordination::v1::Lease;
use kea_operator::controller::start_informers;
use kea_operator::runtime::lead;
use kea_operator::runtime::leader::{LeaderElection, LeaderElector};
use kea_operator::{ControllerConfig, Error, Metrics};
use kea_testkit::TestNamespace;
use kea_testkit::microservices::Fixture;
use kube::Client;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A replica of the operator leading (or waiting to) in the test's namespace.
struct Replica {
    stop: watch::Sender<bool>,
    task: JoinHandle<kea_operator::Result<()>>,
}

impl Replica {
    fn start(
        namespace: &TestNamespace,
        client: Client,
        identity: &str,
        timing: (u64, u64, u64),
    ) -> Self {
        let (lease, deadline, retry) = timing;
        let settings = LeaderElection {
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
            ..LeaderElection::new("kea-test".into(), namespace.name().into(), identity.into())
        };
        settings.check().unwrap();
        let config = ControllerConfig {
            namespace: Some(namespace.name().to_owned()),
            instance: Some(identity.to_owned()),
            ..ControllerConfig::default()
        };
        let informers = start_informers(&client, &config);
        let elector = LeaderElector::new(client.clone(), settings);
        let (stop, _) = watch::channel(false);
        let task = tokio::spawn(lead(
            client,
            config,
            informers,
            Metrics::default(),
            elector,
            stop.clone(),
        ));
        Self { stop, task }
    }
}

/// Polls `check` every 50 ms until it holds; panics after `timeout` naming `what`.
async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Instant::now();
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn holder(namespace: &TestNamespace) -> Option<String> {
    namespace
        .api::<Lease>()
        .get_opt("kea-test")
        .await
        .unwrap()
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
}

/// The leader's connection to the API server stalls while it reconciles: it must stop writing
/// before the follower takes over, and nothing it had sent may land after that (with the
/// renewal unbounded it keeps leading, and its stalled writes land once the link heals).
#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_leader_cut_off_from_the_api_server_writes_nothing_after_the_takeover() {
    let (namespace, microservices) = setup("leader-partition").await;
    let config = kea_testkit::config().await.unwrap();
    let upstream = {
        let url = &config.cluster_url;
        tokio::net::lookup_host((url.host().unwrap(), url.port_u16().unwrap()))
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = PartitionProxy::start(upstream).await;
    let mut behind_proxy = config.clone();
    behind_proxy.cluster_url = format!("https://{}", proxy.addr()).parse().unwrap();
    let (old_writes, new_writes) = (WriteLog::default(), WriteLog::default());
    // Lease 6 s, renew deadline 4 s, retry 1 s.
    let timing = (6, 4, 1);

    let old = Replica::start(
        &namespace,
        recording_client(behind_proxy, old_writes.clone()),
        "old",
        timing,
    );
    until(
        "the first replica to lead",
        Duration::from_secs(30),
        || async { holder(&namespace).await.as_deref() == Some("old") },
    )
    .await;
    let new = Replica::start(
        &namespace,
        recording_client(config, new_writes.clone()),
        "new",
        timing,
    );

    // Work for the leader, and the partition while some of its writes are on the way.
    for index in 0..40 {
        let ms = Fixture::new(&format!("svc-{index}")).build();
        microservices
            .create(&PostParams::default(), &ms)
            .await
            .unwrap();
    }
    until(
        "the leader to be writing children",
        Duration::from_secs(60),
        || async {
            old_writes.in_flight() > 0 && old_writes.first_accepted("/deployments").is_some()
        },
    )
    .await;
    proxy.partition();
    let partitioned_at = Instant::now();
    let cut_off = old_writes.in_flight();

    // The follower takes over and writes; then the link heals.
    until(
        "the follower to take over",
        Duration::from_secs(30),
        || async {
            new_writes.first_accepted("/leases").is_some()
                && holder(&namespace).await.as_deref() == Some("new")
        },
    )
    .await;
    let taken_over_at = new_writes
        .first_accepted("/leases")
        .and_then(|w| w.accepted_at())
        .unwrap();
    until(
        "the new leader's first write",
        Duration::from_secs(30),
        || async {
            new_writes.first_accepted("/microservices/").is_some()
                || new_writes.first_accepted("/deployments").is_some()
        },
    )
    .await;
    proxy.heal();

    let lost = tokio::time::timeout(Duration::from_secs(60), old.task)
        .await
        .expect("the cut-off leader to stop")
        .unwrap();
    assert!(
        matches!(lost, Err(Error::LeadershipLost(_))),
        "the cut-off leader ends with a lost lease, got {lost:?}"
    );
    until(
        "the cut-off leader's writes to settle",
        Duration::from_secs(30),
        || async { old_writes.in_flight() == 0 },
    )
    .await;

    let late = old_writes.accepted_after(taken_over_at);
    eprintln!(
        "partitioned with {cut_off} writes in flight; takeover {:?} after the partition; \
         the old leader's writes: {} accepted, {} after the takeover",
        taken_over_at - partitioned_at,
        old_writes
            .writes()
            .iter()
            .filter(|w| w.accepted_at().is_some())
            .count(),
        late.len()
    );
    assert!(
        late.is_empty(),
        "the old leader wrote after the new one took over: {late:#?}"
    );

    new.stop.send_replace(true);
    new.task.await.unwrap().unwrap();
    namespace.cleanup().await.unwrap();
}
