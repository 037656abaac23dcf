//! The canary's analysis as the controller runs it: at each check, one list of the
//! Microservice's pods and one read of each ready pod's `/metrics`, straight from its IP (the
//! NetworkPolicy admits the operator on the pods' port). What each pod answered since the
//! previous check is summed for the canary and for the stable pods, compared
//! ([`analysis::check`]) and counted ([`analysis::tally`]).
//!
//! The reads between two checks live here, in memory: an operator that restarts (or a new
//! leader) starts the analysis of a canary again from a first read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::api::{CanaryStatus, Microservice};
use crate::children::meta;
use crate::children::workload::TRACK_LABEL;
use crate::status::analysis::{self, Check, Counters, Verdict};
use crate::status::delivery;

/// Longest wait for one pod's `/metrics`.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/metrics` answer read (kea's service renders a few KiB).
const MAX_METRICS_BYTES: usize = 4 << 20;

/// The analyses under way, per Microservice.
#[derive(Default)]
pub struct Analyses {
    running: Mutex<HashMap<ObjectRef<Microservice>, Analysis>>,
}

/// One canary's analysis between two checks.
#[derive(Clone, Debug)]
struct Analysis {
    /// The canary's revision.
    revision: String,
    /// When the pods were last read.
    read_at: Instant,
    /// What each pod (by uid) said then; `None` for a pod without kea's metrics.
    counters: HashMap<String, Option<Counters>>,
    status: CanaryStatus,
}

/// One pod's read.
struct PodRead {
    uid: String,
    canary: bool,
    counters: Result<Counters, String>,
}

impl Analyses {
    /// Ends the analysis of `object` (no canary, or the Microservice is gone).
    pub fn forget(&self, object: &ObjectRef<Microservice>) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(object);
        }
    }

    fn get(&self, object: &ObjectRef<Microservice>) -> Option<Analysis> {
        self.running.lock().ok()?.get(object).cloned()
    }

    fn put(&self, object: ObjectRef<Microservice>, analysis: Analysis) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(object, analysis);
        }
    }

    /// Runs the analysis of the canary of `revision` one step: nothing while the canary is not
    /// ready; a first read once it is; then a check every interval.
    pub async fn step(
        &self,
        client: &Client,
        ms: &Microservice,
        revision: &str,
        canary: Option<&Deployment>,
        in_cluster: bool,
    ) -> Verdict {
        let object = ObjectRef::from_obj(ms);
        let policy = ms.spec.rollout.clone().unwrap_or_default().analysis;
        let interval = Duration::from_secs(u64::try_from(policy.interval_seconds).unwrap_or(10));
        let fresh = CanaryStatus {
            revision: revision.to_owned(),
            image: ms.spec.image.clone(),
            ..Default::default()
        };
        if !canary.is_some_and(|canary| is_ready(canary, revision)) {
            self.forget(&object);
            return Verdict::Analysing {
                status: CanaryStatus {
                    message: "waiting for the canary pod to be ready".to_owned(),
                    ..fresh
                },
                next_check: None,
            };
        }
        let before = self.get(&object).filter(|a| a.revision == revision);
        if let Some(before) = &before {
            let since = before.read_at.elapsed();
            if since < interval {
                return Verdict::Analysing {
                    status: before.status.clone(),
                    next_check: Some(interval - since),
                };
            }
        }
        let namespace = ms.namespace().unwrap_or_default();
        let reads = if in_cluster {
            read_pods(client, &namespace, &ms.name_any(), ms.spec.port).await
        } else {
            // Out of the cluster the pods' addresses lead nowhere: readiness alone counts.
            Ok(Vec::new())
        };
        let reads = match reads {
            Ok(reads) => reads,
            Err(error) => {
                // Counted as nothing: the next reconcile tries again.
                let status = before.map_or(fresh, |b| b.status);
                return Verdict::Analysing {
                    status: CanaryStatus {
                        message: format!("could not list the pods: {error}"),
                        ..status
                    },
                    next_check: Some(interval),
                };
            }
        };
        let counters: HashMap<String, Option<Counters>> = reads
            .iter()
            .map(|read| (read.uid.clone(), read.counters.clone().ok()))
            .collect();
        let Some(before) = before else {
            let status = CanaryStatus {
                message: format!(
                    "first read of the pods' metrics; each check compares what the canary and the stable pods answer in {}s",
                    interval.as_secs()
                ),
                ..fresh
            };
            return self.record(
                object,
                revision,
                counters,
                Verdict::Analysing {
                    status,
                    next_check: Some(interval),
                },
            );
        };
        let (check, canary_sample, stable_sample) = compare(&policy, &reads, &before.counters);
        let mut status = before.status.clone();
        status.canary = canary_sample;
        status.stable = stable_sample;
        let verdict = analysis::tally(&policy, status, check, interval);
        self.record(object, revision, counters, verdict)
    }

    /// Keeps what the pods said now, as the starting point of the next check, and the status
    /// the verdict shows; returns the verdict.
    fn record(
        &self,
        object: ObjectRef<Microservice>,
        revision: &str,
        counters: HashMap<String, Option<Counters>>,
        verdict: Verdict,
    ) -> Verdict {
        self.put(
            object,
            Analysis {
                revision: revision.to_owned(),
                read_at: Instant::now(),
                counters,
                status: verdict.status().clone(),
            },
        );
        verdict
    }
}

/// Sums what the canary and the stable pods answered since their previous read and compares
/// them. A pod read for the first time only sets its starting point.
fn compare(
    policy: &crate::api::CanaryAnalysis,
    reads: &[PodRead],
    before: &HashMap<String, Option<Counters>>,
) -> (
    Check,
    Option<crate::api::TrafficSample>,
    Option<crate::api::TrafficSample>,
) {
    let mut canary = None::<Counters>;
    let mut stable = None::<Counters>;
    let mut canary_error = None;
    for read in reads {
        let counters = match &read.counters {
            Ok(counters) => counters,
            Err(error) => {
                if read.canary {
                    canary_error = Some(error.clone());
                }
                continue;
            }
        };
        let Some(Some(previous)) = before.get(&read.uid) else {
            continue;
        };
        let window = counters.since(Some(previous));
        let group = if read.canary {
            &mut canary
        } else {
            &mut stable
        };
        group.get_or_insert_default().add(&window);
    }
    let stable_sample = stable.as_ref().map(Counters::sample);
    let Some(canary) = canary else {
        let why = canary_error.unwrap_or_else(|| {
            if reads.is_empty() {
                "the operator runs outside the cluster and does not read the pods".to_owned()
            } else {
                "no earlier read of the canary pod".to_owned()
            }
        });
        return (
            Check::Inconclusive(format!(
                "the canary's /metrics tell nothing ({why}); readiness alone counts"
            )),
            None,
            stable_sample,
        );
    };
    let canary_sample = canary.sample();
    let check = analysis::check(
        policy,
        &canary_sample,
        stable_sample.as_ref().unwrap_or(&canary_sample),
    );
    (check, Some(canary_sample), stable_sample)
}

/// Whether the canary's Deployment runs its one pod of `revision`, ready and available.
fn is_ready(canary: &Deployment, revision: &str) -> bool {
    let Some(status) = canary.status.as_ref() else {
        return false;
    };
    delivery::revision_annotation(canary) == Some(revision)
        && canary.metadata.deletion_timestamp.is_none()
        && status.observed_generation == canary.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= 1
        && status.available_replicas.unwrap_or(0) >= 1
        && status.replicas == status.updated_replicas
}

/// Reads the `/metrics` of every ready pod of `name`, at once.
async fn read_pods(
    client: &Client,
    namespace: &str,
    name: &str,
    port: i32,
) -> kube::Result<Vec<PodRead>> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&meta::selector_string(name)))
        .await?;
    let reads = pods
        .items
        .iter()
        .filter(|pod| is_serving(pod))
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            Some(async move {
                PodRead {
                    uid: pod.uid().unwrap_or_default(),
                    canary: pod.labels().get(TRACK_LABEL).is_some_and(|t| t == "canary"),
                    counters: read_metrics(&ip, port).await,
                }
            })
        });
    Ok(futures::future::join_all(reads).await)
}

/// A pod that is ready and not going away.
fn is_serving(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}

/// `GET /metrics` from a pod, over HTTP/1.0 (the answer ends with the connection; no chunks),
/// bounded in time and size.
async fn read_metrics(ip: &str, port: i32) -> Result<Counters, String> {
    let address = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let exchange = async {
        let mut stream = TcpStream::connect(&address).await?;
        stream
            .write_all(
                format!(
                    "GET {} HTTP/1.0\r\nHost: {address}\r\n\r\n",
                    kea_contract::paths::METRICS
                )
                .as_bytes(),
            )
            .await?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_METRICS_BYTES as u64)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(READ_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {address} within {READ_TIMEOUT:?}"))?
        .map_err(|error| format!("{address}: {error}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{address}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("GET /metrics answered {status}"));
    }
    analysis::parse(body).ok_or_else(|| "no kea request series in /metrics".to_owned())
}
