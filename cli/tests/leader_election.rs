//! Operator processes against the REAL control plane: exactly one leads (holds the Lease and
//! reconciles); when it stops or is killed, another takes over; a holder's clock that disagrees
//! with the follower's makes no second leader.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kea_operator::Microservice;
use kea_testkit::microservices::{microservice, namespace_with_crd};
use kea_testkit::{has_status_condition, wait_for};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

/// How long a test waits for the cluster to get somewhere.
const TIMEOUT: Duration = Duration::from_secs(120);

struct Replica {
    identity: &'static str,
    metrics_url: String,
    child: Child,
}

impl Replica {
    fn start(identity: &'static str, namespace: &str) -> Self {
        Self::start_with(identity, namespace, &[])
    }

    /// A replica with short leader-election timings: a lease of 4 s, so takeovers are quick.
    fn start_quick(identity: &'static str, namespace: &str) -> Self {
        Self::start_with(
            identity,
            namespace,
            &[
                "--lease-duration-seconds=4",
                "--lease-renew-deadline-seconds=3",
                "--lease-retry-period-seconds=1",
            ],
        )
    }

    fn start_with(identity: &'static str, namespace: &str, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_kea-operator"))
            .args(["run", "--leader-elect=true"])
            .args(extra)
            .env("KUBECONFIG", kea_testkit::kubeconfig_path())
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", namespace)
            .env("KEA_WATCH_NAMESPACE", namespace)
            .env("KEA_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            identity,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            child,
        }
    }

    /// The value of the leader gauge, once the replica serves its metrics.
    async fn leader_gauge(&self) -> Option<u8> {
        let text = http_get(&self.metrics_url).await?;
        text.lines()
            .find(|line| line.starts_with("kea_operator_leader ") || line.starts_with("leader "))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
    }

    fn terminate(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET over a TCP socket: the metrics endpoint is loopback HTTP/1.1.
async fn http_get(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/')?;
    let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("kea-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < TIMEOUT,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until a replica holds the Lease, and names it.
async fn wait_for_leader(leases: &Api<Lease>) -> String {
    wait_until("a replica holds the Lease", || async {
        holder(leases).await.is_some()
    })
    .await;
    holder(leases).await.unwrap()
}

/// Creates the Microservice `name` and waits until the leader has made it Ready.
async fn create_ready(microservices: &Api<Microservice>, name: &str) {
    let ms = microservice(name, json!({"image": "kea.dev/kea-service:dev"}));
    microservices
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    wait_for(
        microservices,
        name,
        has_status_condition("Ready", "True"),
        TIMEOUT,
    )
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn two_replicas_one_leader_and_a_failover() {
    let namespace = namespace_with_crd("ms-leader").await;

    let mut replicas = vec![
        Replica::start("replica-a", namespace.name()),
        Replica::start("replica-b", namespace.name()),
    ];
    let leases = namespace.api::<Lease>();
    let leader = wait_for_leader(&leases).await;
    wait_until("both replicas serve metrics", || async {
        replicas[0].leader_gauge().await.is_some() && replicas[1].leader_gauge().await.is_some()
    })
    .await;
    let gauges = [
        replicas[0].leader_gauge().await.unwrap(),
        replicas[1].leader_gauge().await.unwrap(),
    ];
    assert_eq!(
        gauges.iter().sum::<u8>(),
        1,
        "exactly one leader: {gauges:?}"
    );
    let leading = replicas.iter().position(|r| r.identity == leader).unwrap();
    assert_eq!(gauges[leading], 1, "the Lease holder is the one that leads");

    // The leader reconciles.
    let microservices = namespace.api::<Microservice>();
    create_ready(&microservices, "first").await;

    // The leader stops (SIGTERM releases the Lease); the follower takes over at its next look
    // at the Lease (a 2 s retry), not after the 15 s lease expires, and reconciles.
    let stopping = Instant::now();
    replicas[leading].terminate();
    let follower = replicas
        .iter()
        .find(|r| r.identity != leader)
        .unwrap()
        .identity;
    wait_until("the follower holds the Lease", || async {
        holder(&leases).await.as_deref() == Some(follower)
    })
    .await;
    let handover = stopping.elapsed();
    eprintln!("handover after SIGTERM: {handover:?} (lease duration 15 s)");
    assert!(
        handover < Duration::from_millis(7500),
        "the follower took over {handover:?} after SIGTERM: the leader did not release the Lease"
    );
    create_ready(&microservices, "second").await;

    for replica in &mut replicas {
        replica.terminate();
    }
    namespace.cleanup().await.unwrap();
}

/// The short lease of [`Replica::start_quick`].
const QUICK_LEASE: Duration = Duration::from_secs(4);

/// Writes the Lease as the holder `ghost` would, with a `renewTime` `offset` away from this
/// machine's clock (a node whose clock is wrong).
async fn ghost_renews(leases: &Api<Lease>, namespace: &str, offset: SignedDuration) {
    let renewed = Timestamp::now().checked_add(offset).unwrap();
    let mut lease = leases
        .get_opt("kea-operator")
        .await
        .unwrap()
        .unwrap_or(Lease {
            metadata: ObjectMeta {
                name: Some("kea-operator".into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: None,
        });
    lease.spec = Some(LeaseSpec {
        holder_identity: Some("ghost".into()),
        lease_duration_seconds: Some(4),
        acquire_time: Some(MicroTime(renewed)),
        renew_time: Some(MicroTime(renewed)),
        ..Default::default()
    });
    if lease.metadata.resource_version.is_some() {
        leases
            .replace("kea-operator", &PostParams::default(), &lease)
            .await
            .unwrap();
    } else {
        leases.create(&PostParams::default(), &lease).await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_holder_with_a_skewed_clock_makes_no_second_leader() {
    let namespace = namespace_with_crd("ms-skew").await;
    let leases = namespace.api::<Lease>();
    let hour = SignedDuration::from_hours(1);
    // A live holder whose clock runs an hour behind: by its timestamps the Lease expired long
    // ago, yet it renews every second.
    ghost_renews(&leases, namespace.name(), -hour).await;
    let replica = Replica::start_quick("replica-a", namespace.name());
    wait_until("the replica serves metrics", || async {
        replica.leader_gauge().await.is_some()
    })
    .await;
    let window = Instant::now();
    while window.elapsed() < 3 * QUICK_LEASE {
        ghost_renews(&leases, namespace.name(), -hour).await;
        assert_eq!(
            holder(&leases).await.as_deref(),
            Some("ghost"),
            "the replica took the Lease of a live holder"
        );
        assert_eq!(replica.leader_gauge().await, Some(0), "a second leader");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The holder's last renewal claims an hour into the future, then it stops: the replica
    // takes over once the Lease stayed unchanged for its duration, by the replica's clock.
    ghost_renews(&leases, namespace.name(), hour).await;
    let last_renewal = Instant::now();
    wait_until("the replica holds the Lease", || async {
        holder(&leases).await.as_deref() == Some("replica-a")
    })
    .await;
    let takeover = last_renewal.elapsed();
    eprintln!("skewed holder stopped renewing: the replica took over after {takeover:?}");
    assert!(
        takeover >= QUICK_LEASE - Duration::from_millis(500),
        "took over after {takeover:?}, before the lease duration passed"
    );
    assert!(
        takeover < 3 * QUICK_LEASE,
        "took over after {takeover:?}: the holder's future timestamp held it back"
    );
    drop(replica);
    namespace.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane: hack/control-plane.sh up, then cargo test -- --ignored"]
async fn a_leader_killed_without_grace_is_replaced_within_the_lease_duration() {
    let namespace = namespace_with_crd("ms-sigkill").await;
    let mut replicas = vec![
        Replica::start_quick("replica-a", namespace.name()),
        Replica::start_quick("replica-b", namespace.name()),
    ];
    let leases = namespace.api::<Lease>();
    let leader = wait_for_leader(&leases).await;
    let microservices = namespace.api::<Microservice>();
    create_ready(&microservices, "first").await;
    let follower = replicas
        .iter()
        .find(|r| r.identity != leader)
        .unwrap()
        .identity;
    wait_until("the follower serves metrics", || async {
        replicas
            .iter()
            .find(|r| r.identity == follower)
            .unwrap()
            .leader_gauge()
            .await
            == Some(0)
    })
    .await;

    // SIGKILL: no release of the Lease, no goodbye.
    let leading = replicas.iter().position(|r| r.identity == leader).unwrap();
    replicas[leading].child.kill().unwrap();
    replicas[leading].child.wait().unwrap();
    let killed = Instant::now();
    wait_until("the follower holds the Lease", || async {
        holder(&leases).await.as_deref() == Some(follower)
    })
    .await;
    let takeover = killed.elapsed();
    // The new leader reconciles: a new Microservice gets its children and turns Ready.
    let created = Instant::now();
    create_ready(&microservices, "second").await;
    eprintln!(
        "leader SIGKILLed: takeover after {takeover:?}, a new Microservice Ready {:?} later",
        created.elapsed()
    );
    // Renewals stopped at the kill; the follower waits a lease duration from its last look.
    assert!(
        takeover < QUICK_LEASE + Duration::from_secs(4),
        "takeover took {takeover:?} with a {QUICK_LEASE:?} lease"
    );
    for replica in &mut replicas {
        replica.terminate();
    }
    namespace.cleanup().await.unwrap();
}
