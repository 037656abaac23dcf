//! Helpers for the end-to-end suite (`e2e/tests/`).
//!
//! The suite runs against whatever cluster `KUBECONFIG` points at (kind, or any other), where
//! the kea operator is already installed (`kubectl apply -f deploy/` or the Helm chart) and
//! the example system (`deploy/examples/`) is applied. `hack/e2e.sh` does all of that on the
//! local kind cluster. The tests need real kubelets (pods run, probes answer): they are
//! `#[ignore]`d, so a plain `cargo test` lists them as ignored, and `cargo test -- --ignored`
//! runs them, with `KEA_E2E=1` to confirm that `KUBECONFIG`'s cluster is one to test on
//! (without it each test fails at its first call to the cluster, saying so).
//!
//! A pod is reached from the test process through the API server's port-forward (the kube
//! crate's [`Api::portforward`]), one short HTTP/1.1 exchange per call: no host port, no
//! `kubectl` child process. Services are reached from inside the cluster, by a
//! [`ClusterClient`] pod, so that the cluster's NetworkPolicies apply as to any workload.

mod in_cluster;
pub mod load;
pub use in_cluster::{CLIENT_IMAGE_ENV, ClusterClient, Output};

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kea_operator::Microservice;
pub use kea_testkit::TestNamespace;
pub use kea_testkit::microservices::is_ready;
use kea_testkit::microservices::{self, Fixture};
use kea_testkit::wait_for_list;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use kea_operator::api::conditions;

/// The environment variable that confirms the cluster of `KUBECONFIG` is one to test on.
pub const ENABLE_ENV: &str = "KEA_E2E";
/// The namespace of the example system (deploy/examples/00-namespace.yaml).
pub const DEMO_NAMESPACE: &str = "kea-demo";
/// The namespace of the operator (deploy/01-namespace.yaml; the Helm release's too).
pub const OPERATOR_NAMESPACE: &str = "kea-system";
/// The Lease the operator replicas elect their leader on.
pub const OPERATOR_LEASE: &str = "kea-operator";
/// The image of the example services, loaded into the cluster by `hack/kind.sh up`.
pub const SERVICE_IMAGE: &str = "kea.dev/kea-service:dev";
/// The port kea-service listens on.
pub const SERVICE_PORT: u16 = 8080;
/// Label put on every namespace the suite creates (`kubectl delete ns -l kea.dev/e2e=true`).
pub const NAMESPACE_LABEL: &str = "kea.dev/e2e";
/// `deregistrationSeconds` of the tests that count dropped requests: the default 5 covers a
/// healthy cluster, but the test cluster's nodes share two cores with the whole suite, and
/// their proxies then apply an endpoint change up to several seconds late.
pub const DEREGISTRATION_SECONDS: i32 = 15;

/// The configuration of the cluster of `KUBECONFIG` (or `KEA_KUBECONFIG`, the testkit's
/// variable, when `KUBECONFIG` is unset).
pub async fn config() -> anyhow::Result<kube::Config> {
    anyhow::ensure!(
        std::env::var(ENABLE_ENV).is_ok_and(|v| v == "1"),
        "the end-to-end tests create namespaces and pods on the cluster KUBECONFIG points at: \
         set {ENABLE_ENV}=1 to confirm it is one to test on (hack/e2e.sh does it all on kind)"
    );
    Ok(
        match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(_) => kube::Config::infer().await?,
            None if std::env::var_os(kea_testkit::KUBECONFIG_ENV).is_some() => {
                kea_testkit::config().await?
            }
            None => kube::Config::infer().await?,
        },
    )
}

/// A client for the cluster of [`config`], checked to answer.
pub async fn client() -> anyhow::Result<Client> {
    let client = Client::try_from(config().await?)?;
    client
        .apiserver_version()
        .await
        .context("the cluster of KUBECONFIG does not answer")?;
    Ok(client)
}

/// Polls `check` every half second until it returns `Ok(Some(value))`, or fails after
/// `timeout` with the last error or "not yet" description.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_string(),
            Err(error) => format!("{error:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A namespace of one test in the cluster of [`config`], `e2e-<prefix>-<suffix>`, labelled
/// [`NAMESPACE_LABEL`] and enforcing the "restricted" Pod Security Standard like the examples'
/// namespace. Deleted by its `cleanup`, or best-effort on drop (kept with
/// `KEA_KEEP_NAMESPACES=1`).
pub async fn namespace(prefix: &str) -> anyhow::Result<TestNamespace> {
    let mut labels = restricted_labels();
    labels.insert(NAMESPACE_LABEL.into(), "true".into());
    let namespace =
        TestNamespace::create_in(config().await?, &format!("e2e-{prefix}"), labels).await?;
    eprintln!("e2e: namespace {}", namespace.name());
    Ok(namespace)
}

/// The Pod Security labels of deploy/examples/00-namespace.yaml: enforce "restricted".
pub fn restricted_labels() -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .iter()
        .flat_map(|mode| {
            [
                (
                    format!("pod-security.kubernetes.io/{mode}"),
                    "restricted".into(),
                ),
                (
                    format!("pod-security.kubernetes.io/{mode}-version"),
                    "latest".into(),
                ),
            ]
        })
        .collect()
}

/// A Microservice of the kea-service image, pulled only if absent (the image is preloaded).
pub fn microservice(name: &str, replicas: i32) -> Microservice {
    Fixture::new(name)
        .image(SERVICE_IMAGE)
        .replicas(replicas)
        // Short drain so rollouts and deletions in the tests stay quick.
        .spec(serde_json::json!({ "drainSeconds": 2 }))
        .build()
}

/// Waits (on a watch) until the Microservice is Ready with its current generation observed.
pub async fn wait_ready(
    api: &Api<Microservice>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Microservice> {
    Ok(microservices::wait_ready(api, name, timeout).await?)
}

/// The pods of a Microservice (by the operator's selector labels).
pub async fn pods_of(pods: &Api<Pod>, name: &str) -> anyhow::Result<Vec<Pod>> {
    let selector = kea_operator::children::meta::selector_string(name);
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Whether the pod is Running, not being deleted, and Ready by the kubelet's probes.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|status| {
            status.phase.as_deref() == Some("Running")
                && status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Waits (on a watch) until exactly `count` pods of the Microservice exist and all are Ready.
pub async fn wait_ready_pods(
    pods: &Api<Pod>,
    name: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let ready = |list: &[Pod]| list.iter().filter(|p| pod_ready(p)).count();
    Ok(wait_for_list(
        pods,
        &kea_operator::children::meta::selector_string(name),
        &format!("{count} Ready pods of {name}"),
        |list| list.len() == count && ready(list) == count,
        |list| format!("{} pods, {} Ready", list.len(), ready(list)),
        timeout,
    )
    .await?)
}

/// The Microservices of deploy/examples.
pub const EXAMPLES: [&str; 3] = ["users", "orders", "frontend"];

/// Waits until the example system has settled: every example Microservice Ready, and
/// frontend at its autoscaling minimum of 2 Ready pods (the HorizontalPodAutoscaler raises
/// it from 1 a few seconds after the apply).
pub async fn wait_demo_settled(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let microservices: Api<Microservice> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    for name in EXAMPLES {
        wait_ready(&microservices, name, timeout).await?;
    }
    eventually("frontend at 2 Ready pods or more", timeout, || {
        let (microservices, pods) = (microservices.clone(), pods.clone());
        async move {
            let ms = microservices.get("frontend").await?;
            let list = pods_of(&pods, "frontend").await?;
            let ready = list.iter().filter(|p| pod_ready(p)).count();
            Ok((is_ready(&ms) && ready >= 2 && list.len() == ready).then_some(()))
        }
    })
    .await
}

/// An HTTP answer: status code and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl Answer {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// One HTTP/1.1 request to a pod's port through the API server's port-forward.
pub async fn http(
    client: &Client,
    namespace: &str,
    pod: &str,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> anyhow::Result<Answer> {
    let exchange = async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let mut forwarder = pods.portforward(pod, &[SERVICE_PORT]).await?;
        let mut stream = forwarder
            .take_stream(SERVICE_PORT)
            .context("no port-forward stream")?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(body) = json_body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("\r\n");
        }
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        // The port-forward stream does not always end when the server closes the connection:
        // read until the answer is complete by its own framing.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        let answer = loop {
            let read = stream.read(&mut chunk).await?;
            if read > 0 {
                raw.extend_from_slice(&chunk[..read]);
            }
            if let Some(answer) = parse_response(&raw)? {
                break answer;
            }
            if read == 0 {
                bail!(
                    "connection closed before a full answer: {:?}",
                    String::from_utf8_lossy(&raw)
                );
            }
        };
        drop(stream);
        forwarder.abort();
        Ok::<_, anyhow::Error>(answer)
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .with_context(|| format!("{method} {path} on pod {namespace}/{pod} timed out"))?
        .with_context(|| format!("{method} {path} on pod {namespace}/{pod}"))
}

/// Parses a complete HTTP/1.1 response, or `None` while more bytes are needed.
fn parse_response(raw: &[u8]) -> anyhow::Result<Option<Answer>> {
    let Some(header_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..header_end]).to_string();
    let body = &raw[header_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        if key == "content-length" {
            length = value.parse::<usize>().ok();
        } else if key == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = body;
        loop {
            let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                return Ok(Some(Answer {
                    status,
                    body: text(&decoded),
                }));
            }
            let start = line_end + 2;
            if rest.len() < start + size + 2 {
                return Ok(None);
            }
            decoded.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
    }
    match length {
        Some(length) if body.len() >= length => Ok(Some(Answer {
            status,
            body: text(&body[..length]),
        })),
        Some(_) => Ok(None),
        None if status == 204 || status == 304 => Ok(Some(Answer {
            status,
            body: String::new(),
        })),
        // Neither length nor chunked: the body ends with the connection; the caller sees EOF.
        None => Ok(None),
    }
}

/// The URL of `path` on the Service `name` of the caller's namespace, for [`ClusterClient`].
pub fn service_url(name: &str, path: &str) -> String {
    format!("http://{name}:{SERVICE_PORT}{path}")
}

/// Whether a pod spec carries `E2E_REVISION=2`, the change the rollout tests roll out.
pub fn runs_revision_2(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> bool {
    spec.is_some_and(|spec| {
        spec.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "E2E_REVISION" && e.value.as_deref() == Some("2"))
    })
}

/// GET through a port-forward to the first Ready pod of the Microservice `name`.
pub async fn get_from_service_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    path: &str,
) -> anyhow::Result<Answer> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods_of(&pods, name).await?;
    let pod = list
        .iter()
        .find(|p| pod_ready(p))
        .with_context(|| format!("no Ready pod of {namespace}/{name}"))?;
    http(client, namespace, &pod.name_any(), "GET", path, None).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_answers() {
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
                .unwrap()
                .is_none()
        );
        let answer = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "hello"));
        let chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let answer = parse_response(chunked).unwrap().unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (201, "abcde"));
        assert!(parse_response(&chunked[..60]).unwrap().is_none());
    }

    #[test]
    fn restricted_labels_enforce_restricted() {
        let labels = restricted_labels();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(labels.len(), 6);
    }
}
