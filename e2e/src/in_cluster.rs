//! A client inside the cluster: a busybox pod in a test namespace that sends requests through
//! Services and pod IPs, as another workload would. Traffic from the test process (port-forward,
//! the API server's proxy) starts on a node and so says nothing about NetworkPolicy; this does.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, Pod, PodSecurityContext, PodSpec,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use kube::api::{AttachParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::io::AsyncReadExt;

use crate::{Answer, eventually, pod_ready, service_url};

/// The image of the client pods: busybox (sh, wget, nc). The offline kind node image preloads
/// it for its volume provisioner; on other clusters name any busybox image here.
pub const CLIENT_IMAGE_ENV: &str = "KEA_E2E_CLIENT_IMAGE";
const DEFAULT_CLIENT_IMAGE: &str = "kea.dev/local-path-helper:busybox-bookworm";

/// What one command run in the client pod printed, and its exit code.
#[derive(Debug, Clone)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code (0 on success).
    pub code: i32,
}

/// A running busybox pod that the test execs commands in.
#[derive(Clone)]
pub struct ClusterClient {
    pods: Api<Pod>,
    /// The pod's name.
    pub name: String,
}

impl ClusterClient {
    /// Starts the pod `name` in `namespace` with `labels` (e.g. `calls.kea.dev/users: "true"`
    /// to be a declared caller of `users`) and waits until it runs. Restricted-compliant, so it
    /// runs in the suite's namespaces.
    pub async fn start(
        client: &Client,
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        Self::start_on(client, namespace, name, labels, None).await
    }

    /// Like [`start`](Self::start), on the node `node` when given (bypassing the scheduler).
    pub async fn start_on(
        client: &Client,
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        node: Option<&str>,
    ) -> anyhow::Result<Self> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let image = std::env::var(CLIENT_IMAGE_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_CLIENT_IMAGE.to_owned());
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(PodSpec {
                // busybox sleep as PID 1 ignores SIGTERM: nothing to wait for on deletion.
                termination_grace_period_seconds: Some(0),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(65534),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                containers: vec![Container {
                    name: "client".to_owned(),
                    image: Some(image),
                    image_pull_policy: Some("IfNotPresent".to_owned()),
                    command: Some(vec!["sleep".to_owned(), "3600".to_owned()]),
                    // The root filesystem is read-only; scripts keep their files here.
                    volume_mounts: Some(vec![VolumeMount {
                        name: "tmp".to_owned(),
                        mount_path: "/tmp".to_owned(),
                        ..Default::default()
                    }]),
                    security_context: Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        read_only_root_filesystem: Some(true),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".to_owned()]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                volumes: Some(vec![Volume {
                    name: "tmp".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                }]),
                node_name: node.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating client pod {namespace}/{name}"))?;
        eventually(
            &format!("client pod {namespace}/{name} running"),
            Duration::from_secs(120),
            || {
                let pods = pods.clone();
                async move { Ok(pods.get(name).await.ok().filter(pod_ready).map(|_| ())) }
            },
        )
        .await?;
        Ok(Self {
            pods,
            name: name.to_owned(),
        })
    }

    /// Starts a client pod named `caller-of-<service>` labelled as a declared caller of the
    /// Microservice `service` (what the operator puts on the pods of Microservices that list
    /// it in `dependsOn`), so the service's NetworkPolicy lets it in, and waits until it does:
    /// the policy engine admits a new pod's address only after it has seen the pod (kube-router
    /// refuses the connection until then), so the first request must not race it.
    pub async fn caller_of(
        client: &Client,
        namespace: &str,
        service: &str,
    ) -> anyhow::Result<Self> {
        Self::caller_at(
            client,
            namespace,
            service,
            &service_url(service, "/healthz"),
        )
        .await
    }

    /// Like [`caller_of`](Self::caller_of), for a service on another port or without
    /// `/healthz`: waits until `probe` (a URL of the service) answers.
    pub async fn caller_at(
        client: &Client,
        namespace: &str,
        service: &str,
        probe: &str,
    ) -> anyhow::Result<Self> {
        let labels = BTreeMap::from([(
            kea_operator::children::network::calls_label(service),
            "true".to_owned(),
        )]);
        let caller =
            Self::start(client, namespace, &format!("caller-of-{service}"), labels).await?;
        let probe = probe.to_owned();
        eventually(
            &format!("{} admitted by the NetworkPolicy of {service}", caller.name),
            Duration::from_secs(60),
            || {
                let caller = caller.clone();
                let probe = probe.clone();
                async move { Ok(caller.reaches(&probe).await.then_some(())) }
            },
        )
        .await?;
        Ok(caller)
    }

    /// Runs `args` in the pod and collects its output; `timeout` bounds the whole exchange.
    pub async fn exec(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let run = async {
            let params = AttachParams::default().stdout(true).stderr(true);
            let mut process = self.pods.exec(&self.name, args.to_vec(), &params).await?;
            let mut stdout = process.stdout().context("no stdout")?;
            let mut stderr = process.stderr().context("no stderr")?;
            let status = process.take_status().context("no status")?;
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (read_out, read_err) =
                tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            read_out?;
            read_err?;
            let status = status.await;
            process.join().await?;
            let code = match status {
                Some(s) if s.status.as_deref() == Some("Success") => 0,
                Some(s) => s
                    .details
                    .and_then(|d| d.causes)
                    .into_iter()
                    .flatten()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
                    .and_then(|c| c.message)
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(-1),
                None => -1,
            };
            anyhow::Ok(Output {
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
                code,
            })
        };
        tokio::time::timeout(timeout + Duration::from_secs(15), run)
            .await
            .with_context(|| format!("exec {args:?} in {} timed out", self.name))?
            .with_context(|| format!("exec {args:?} in {}", self.name))
    }

    /// One HTTP request from the pod (busybox wget, 5 s limit). The body of an error status
    /// is not kept (wget drops it). Fails when no HTTP answer came (refused, timed out).
    pub async fn http(&self, url: &str, json_body: Option<&str>) -> anyhow::Result<Answer> {
        let mut args = vec!["timeout", "5", "wget", "-S", "-O", "-"];
        if let Some(body) = json_body {
            args.extend([
                "--header",
                "Content-Type: application/json",
                "--post-data",
                body,
            ]);
        }
        args.push(url);
        let output = self.exec(&args, Duration::from_secs(5)).await?;
        // `-S` prints the status line(s) to stderr: "  HTTP/1.1 200 OK" (or HTTP/1.0, as
        // Python's http.server answers).
        let status = output
            .stderr
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let version = words.next()?;
                (version == "HTTP/1.1" || version == "HTTP/1.0")
                    .then(|| words.next()?.parse::<u16>().ok())
                    .flatten()
            })
            .next_back();
        match status {
            Some(status) => Ok(Answer {
                status,
                body: output.stdout,
            }),
            None => bail!(
                "no HTTP answer from {url} (exit {}): {}",
                output.code,
                output.stderr.trim()
            ),
        }
    }

    /// Whether `url` answers at all from this pod (any HTTP status).
    pub async fn reaches(&self, url: &str) -> bool {
        self.http(url, None).await.is_ok()
    }

    /// Opens a TCP connection to `host:port`, sends `line` and returns what came back within
    /// about a second (empty when the connection could not be made).
    pub async fn tcp_exchange(&self, host: &str, port: u16, line: &str) -> anyhow::Result<String> {
        let script = "{ printf '%s\\r\\n' \"$1\"; sleep 1; } | timeout 4 nc \"$2\" \"$3\"";
        let port = port.to_string();
        let output = self
            .exec(
                &["sh", "-c", script, "sh", line, host, &port],
                Duration::from_secs(5),
            )
            .await?;
        Ok(output.stdout)
    }
}
