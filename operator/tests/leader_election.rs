//! Two operator processes against the REAL control plane: exactly one leads
//! (holds the Lease and reconciles); when it stops, the other takes over.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TIMEOUT, microservice, namespace_with_crd};
use k8s_openapi::api::coordination::v1::Lease;
use kea_operator::Microservice;
use kea_testkit::{has_status_condition, wait_for};
use kube::api::{Api, PostParams};
use serde_json::json;

struct Replica {
    identity: &'static str,
    metrics_url: String,
    child: Child,
}

impl Replica {
    fn start(identity: &'static str, namespace: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_kea-operator"))
            .args(["run", "--leader-elect=true"])
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

#[tokio::test]
async fn two_replicas_one_leader_and_a_failover() {
    let Some(namespace) = namespace_with_crd("ms-leader").await else {
        return;
    };

    let mut replicas = vec![
        Replica::start("replica-a", namespace.name()),
        Replica::start("replica-b", namespace.name()),
    ];
    let leases = namespace.api::<Lease>();
    wait_until("a replica holds the Lease", || async {
        holder(&leases).await.is_some()
    })
    .await;
    let leader = holder(&leases).await.unwrap();
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
    let first = microservice("first", json!({"image": "kea.dev/kea-service:dev"}));
    microservices
        .create(&PostParams::default(), &first)
        .await
        .unwrap();
    wait_for(
        &microservices,
        "first",
        has_status_condition("Ready", "True"),
        TIMEOUT,
    )
    .await
    .unwrap();

    // The leader stops (SIGTERM releases the Lease); the follower takes over and reconciles.
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
    let mut second = first.clone();
    second.metadata = kube::api::ObjectMeta {
        name: Some("second".into()),
        ..Default::default()
    };
    microservices
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    wait_for(
        &microservices,
        "second",
        has_status_condition("Ready", "True"),
        TIMEOUT,
    )
    .await
    .unwrap();

    for replica in &mut replicas {
        replica.terminate();
    }
    namespace.cleanup().await.unwrap();
}
