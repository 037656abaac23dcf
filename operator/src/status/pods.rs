//! Pure functions that read why a Microservice's pods are not ready, in the words a user can
//! act on: a container waiting (image pull, configuration), a container that exits (its last
//! words, from the termination message the kubelet keeps), killed for memory, or failing a
//! probe (the kubelet's own words, from its `Unhealthy` events, with the probe's path and port).
//!
//! The reconciler reads the pods only while some are not ready, and a pod's events only when
//! [`needs_events`] says the pod has failed long enough for its probes to have spoken.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Event, Pod, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Reasons of the pod problems, worst first: the kubelet's waiting reasons that explain a pod
/// that is not ready, then the operator's own for what the kubelet tells in other places.
pub const REASONS: &[&str] = &[
    "InvalidImageName",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    OOM_KILLED,
    LIVENESS_PROBE_FAILED,
    STARTUP_PROBE_FAILED,
    "CrashLoopBackOff",
    READINESS_PROBE_FAILED,
    UNSCHEDULABLE,
];

/// Waiting reasons of the kubelet that mean the container cannot run as it is.
const WAITING_REASONS: &[&str] = &[
    "InvalidImageName",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// The container was killed for going over its memory limit.
pub const OOM_KILLED: &str = "OOMKilled";
/// The kubelet restarts the container because its liveness probe fails.
pub const LIVENESS_PROBE_FAILED: &str = "LivenessProbeFailed";
/// The kubelet restarts the container because its startup probe never passed.
pub const STARTUP_PROBE_FAILED: &str = "StartupProbeFailed";
/// The container runs but its readiness probe fails: no traffic reaches it.
pub const READINESS_PROBE_FAILED: &str = "ReadinessProbeFailed";
/// The scheduler finds no node for the pod.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// The reason of the kubelet's events about failing probes.
pub const UNHEALTHY_EVENT_REASON: &str = "Unhealthy";

/// Longest quote of a container's last words; the condition's message has room for more, but
/// one line is what a user reads in `kubectl get` and `describe`.
const MAX_LAST_WORDS: usize = 240;

/// A last error line shorter than this is read with the error line before it.
const SHORT_LINE: usize = 40;

/// How long a container may run unready before its readiness probe's failures are news, when
/// its probe does not say (the operator's default: 3 failures, 5 s apart).
const DEFAULT_READINESS_GRACE: Duration = Duration::from_secs(15);

/// Why the pods of a Microservice are not ready, as read from one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    /// A short CamelCase reason, one of [`REASONS`], e.g. `ImagePullBackOff`,
    /// `CrashLoopBackOff`, `ReadinessProbeFailed`, `Unschedulable`.
    pub reason: String,
    /// Which pod and container, and what Kubernetes says about it.
    pub message: String,
}

/// The first pod problem found among `pods` (sorted by name, so the answer is stable), with
/// the kubelet's probe events of those pods (`events`, possibly none).
pub fn problem(pods: &[Pod], events: &[Event]) -> Option<PodProblem> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|p| p.metadata.name.clone());
    pods.into_iter().find_map(|pod| pod_problem(pod, events))
}

/// The pod whose events can explain it (its probes failing, or a container killed and
/// restarted), when no other pod problem does: the first, by name, with a container that is
/// not ready and either has restarted or has run unready longer than its readiness probe
/// needs to fail (initial delay + period x failure threshold).
pub fn needs_events<'a>(pods: &'a [Pod], now: &Time) -> Option<&'a str> {
    if problem(pods, &[]).is_some_and(|p| p.reason != "CrashLoopBackOff") {
        return None;
    }
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|p| p.metadata.name.clone());
    pods.into_iter()
        .find(|pod| {
            containers(pod).any(|(status, spec)| {
                status.restart_count > 0 && !status.ready
                    || unready_grace_left(status, spec, now) == Some(Duration::ZERO)
            })
        })
        .and_then(|pod| pod.metadata.name.as_deref())
}

/// How long until a container that runs unready has done so for longer than its readiness
/// probe needs to fail (the earliest such container of `pods`); `None` when none is coming.
pub fn events_due_in(pods: &[Pod], now: &Time) -> Option<Duration> {
    pods.iter()
        .flat_map(containers)
        .filter_map(|(status, spec)| unready_grace_left(status, spec, now))
        .filter(|left| !left.is_zero())
        .min()
}

/// For a running container that is not ready: the time left of its readiness probe's grace
/// (zero once it is over); `None` for any other container.
fn unready_grace_left(
    status: &ContainerStatus,
    spec: Option<&Container>,
    now: &Time,
) -> Option<Duration> {
    if status.ready {
        return None;
    }
    let started = status
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()?;
    let grace = spec
        .and_then(|c| c.readiness_probe.as_ref())
        .map_or(DEFAULT_READINESS_GRACE, probe_grace);
    Some(grace.saturating_sub(elapsed(started, now)))
}

fn probe_grace(probe: &Probe) -> Duration {
    let seconds = |value: Option<i32>, default: i32| u64::try_from(value.unwrap_or(default)).ok();
    let initial = seconds(probe.initial_delay_seconds, 0).unwrap_or(0);
    let period = seconds(probe.period_seconds, 10).unwrap_or(10);
    let threshold = seconds(probe.failure_threshold, 3).unwrap_or(3);
    Duration::from_secs(initial + period * threshold)
}

fn elapsed(since: &Time, now: &Time) -> Duration {
    let seconds = now.0.as_second() - since.0.as_second();
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The statuses of the pod's containers (init containers first), each with its spec.
fn containers(pod: &Pod) -> impl Iterator<Item = (&ContainerStatus, Option<&Container>)> {
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let init = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(move |c| {
            let found = spec
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|all| all.iter().find(|s| s.name == c.name));
            (c, found)
        });
    let main = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(move |c| {
            (
                c,
                spec.and_then(|s| s.containers.iter().find(|s| s.name == c.name)),
            )
        });
    init.chain(main)
}

fn pod_problem(pod: &Pod, events: &[Event]) -> Option<PodProblem> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
    let mut found: Vec<PodProblem> = Vec::new();
    for (status, spec) in containers(pod) {
        let at = format!("pod {pod_name}, container {}", status.name);
        let probes = failing_probes(pod_name, status, spec, events);
        if let Some(problem) = container_problem(&at, status, &probes) {
            found.push(problem);
        }
    }
    if let Some(worst) = found.into_iter().min_by_key(|p| rank(&p.reason)) {
        return Some(worst);
    }
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some(UNSCHEDULABLE)
    })?;
    Some(PodProblem {
        reason: UNSCHEDULABLE.to_owned(),
        message: format!(
            "pod {pod_name}: {}",
            unschedulable
                .message
                .as_deref()
                .unwrap_or("cannot be scheduled")
        ),
    })
}

fn rank(reason: &str) -> usize {
    REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REASONS.len())
}

/// What one container says, if anything is wrong with it.
fn container_problem(
    at: &str,
    status: &ContainerStatus,
    probes: &[ProbeFailure],
) -> Option<PodProblem> {
    if status.ready {
        return None;
    }
    let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref());
    let waiting_reason = waiting
        .and_then(|w| w.reason.as_deref())
        .filter(|r| WAITING_REASONS.contains(r));
    let last_exit = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let restarts = match status.restart_count {
        0 => String::new(),
        1 => "; restarted once".to_owned(),
        n => format!("; restarted {n} times"),
    };

    if last_exit.is_some_and(|e| e.reason.as_deref() == Some(OOM_KILLED)) {
        return Some(PodProblem {
            reason: OOM_KILLED.to_owned(),
            message: format!(
                "{at} was killed for using more memory than its limit: raise resources.limits.memory{restarts}"
            ),
        });
    }
    // A container the kubelet killed (SIGKILL, SIGTERM, or a clean exit after SIGTERM) while a
    // liveness or startup probe failed: the probe, not the program, explains the restarts.
    let killed_by_kubelet = last_exit.is_some_and(|e| matches!(e.exit_code, 0 | 137 | 143));
    let restarting_probe = probes
        .iter()
        .find(|p| p.kind != ProbeKind::Readiness)
        .filter(|_| killed_by_kubelet || (last_exit.is_none() && status.restart_count > 0));
    if let Some(probe) = restarting_probe {
        return Some(PodProblem {
            reason: probe.kind.reason().to_owned(),
            message: format!("{at}: {}{restarts}", probe_summary(probes)),
        });
    }
    if let Some(reason) = waiting_reason {
        let detail = waiting
            .and_then(|w| w.message.as_deref())
            .unwrap_or(reason)
            .trim();
        // "back-off 40s restarting failed container=app pod=NAME_NAMESPACE(UID)": the pod and
        // container are named already.
        let detail = detail.split_once(" container=").map_or_else(
            || detail.to_owned(),
            |(before, _)| format!("{before} container"),
        );
        let message = match last_exit {
            // A command that ends by itself: a job or a CLI, not a server.
            Some(exit) if exit.exit_code == 0 && exit.message.is_none() => format!(
                "{at} exited with code 0: a Microservice's container must keep serving on its port, and this image's command ends ({detail})"
            ),
            Some(exit) => {
                let words = exit
                    .message
                    .as_deref()
                    .and_then(last_words)
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default();
                let how = match exit.reason.as_deref() {
                    Some("StartError") => "could not start".to_owned(),
                    _ => format!("exited with code {}", exit.exit_code),
                };
                format!("{at} {how}{words} ({detail})")
            }
            None => format!("{at}: {detail}"),
        };
        return Some(PodProblem {
            reason: reason.to_owned(),
            message,
        });
    }
    let running = status.state.as_ref().and_then(|s| s.running.as_ref());
    if running.is_none() || probes.is_empty() {
        return None;
    }
    // Running and not ready: the readiness probe is why, when it fails; the others are told
    // too (a failing liveness probe will restart the container).
    let kind = probes
        .iter()
        .find(|p| p.kind == ProbeKind::Readiness)
        .unwrap_or(&probes[0])
        .kind;
    let mut told: Vec<ProbeFailure> = probes.to_vec();
    told.sort_by_key(|p| p.kind != kind);
    Some(PodProblem {
        reason: kind.reason().to_owned(),
        message: format!("{at}: {}", probe_summary(&told)),
    })
}

/// Which probe an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ProbeKind {
    Liveness,
    Startup,
    Readiness,
}

impl ProbeKind {
    fn reason(self) -> &'static str {
        match self {
            Self::Liveness => LIVENESS_PROBE_FAILED,
            Self::Startup => STARTUP_PROBE_FAILED,
            Self::Readiness => READINESS_PROBE_FAILED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Liveness => "liveness",
            Self::Startup => "startup",
            Self::Readiness => "readiness",
        }
    }

    fn of(container: &Container, kind: Self) -> Option<&Probe> {
        match kind {
            Self::Liveness => container.liveness_probe.as_ref(),
            Self::Startup => container.startup_probe.as_ref(),
            Self::Readiness => container.readiness_probe.as_ref(),
        }
    }
}

/// The newest failure of one probe of one container, in the kubelet's words.
#[derive(Clone, Debug)]
struct ProbeFailure {
    kind: ProbeKind,
    /// What was probed, e.g. `GET /readyz on port 80`.
    target: String,
    /// The kubelet's words after "Readiness probe failed: ".
    words: String,
    /// What to change, when the words tell.
    hint: Option<String>,
}

/// The newest failure of each probe of the container, from the kubelet's `Unhealthy` events
/// since the container's previous start (older ones are about containers long gone), worst
/// first.
fn failing_probes(
    pod: &str,
    status: &ContainerStatus,
    spec: Option<&Container>,
    events: &[Event],
) -> Vec<ProbeFailure> {
    let field_path = format!("{{{}}}", status.name);
    let since = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.started_at.as_ref())
        .or_else(|| {
            status
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
        })
        .map(|t| t.0.as_second());
    let mut newest: Vec<(ProbeKind, i64, &str)> = Vec::new();
    for event in events {
        let about = &event.involved_object;
        if about.name.as_deref() != Some(pod)
            || event.reason.as_deref() != Some(UNHEALTHY_EVENT_REASON)
            || !about
                .field_path
                .as_deref()
                .is_some_and(|p| p.ends_with(&field_path))
        {
            continue;
        }
        let seen = event_time(event);
        if since.is_some_and(|since| seen.is_some_and(|seen| seen < since)) {
            continue;
        }
        let Some((kind, words)) = event.message.as_deref().and_then(parse_probe_message) else {
            continue;
        };
        let seen = seen.unwrap_or(i64::MIN);
        match newest.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(entry) if entry.1 <= seen => *entry = (kind, seen, words),
            Some(_) => {}
            None => newest.push((kind, seen, words)),
        }
    }
    newest.sort_by_key(|(kind, _, _)| *kind);
    newest
        .into_iter()
        .map(|(kind, _, words)| {
            let probe = spec.and_then(|c| ProbeKind::of(c, kind));
            let port = spec.and_then(|c| probe.and_then(|p| probe_port(c, p)));
            let target = describe_target(probe, port.as_deref());
            ProbeFailure {
                kind,
                hint: hint(kind, words, probe, port.as_deref()),
                target,
                words: words.trim().to_owned(),
            }
        })
        .collect()
}

/// When an event was last seen, in seconds: its `lastTimestamp`, else its `eventTime`, else
/// when it was created (the kubelet and the provisioners set different ones).
pub fn event_time(event: &Event) -> Option<i64> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| event.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

/// Splits "Readiness probe failed: HTTP probe failed with statuscode: 404" (or "... probe
/// errored: ...") into the probe and the kubelet's words.
fn parse_probe_message(message: &str) -> Option<(ProbeKind, &str)> {
    let (kind, rest) = message.split_once(" probe ")?;
    let kind = match kind.trim() {
        "Liveness" => ProbeKind::Liveness,
        "Startup" => ProbeKind::Startup,
        "Readiness" => ProbeKind::Readiness,
        _ => return None,
    };
    let (_, words) = rest.split_once(':')?;
    Some((kind, words))
}

/// The port number a probe reaches: its own number, or the container port it names.
fn probe_port(container: &Container, probe: &Probe) -> Option<String> {
    let port = probe
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or_else(|| probe.tcp_socket.as_ref().map(|t| &t.port))?;
    Some(match port {
        IntOrString::Int(number) => number.to_string(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map_or_else(|| name.clone(), |p| p.container_port.to_string()),
    })
}

fn describe_target(probe: Option<&Probe>, port: Option<&str>) -> String {
    let port = port.map(|p| format!(" on port {p}")).unwrap_or_default();
    match probe {
        Some(Probe {
            http_get: Some(http),
            ..
        }) => format!("GET {}{port}", http.path.as_deref().unwrap_or("/")),
        Some(Probe {
            tcp_socket: Some(_),
            ..
        }) => format!("TCP connect{port}"),
        _ => format!("probe{port}"),
    }
}

/// What to change, for the failures whose cause the kubelet's words make plain.
fn hint(kind: ProbeKind, words: &str, probe: Option<&Probe>, port: Option<&str>) -> Option<String> {
    let lower = words.to_ascii_lowercase();
    let field = format!("spec.probes.{}", kind.name());
    if let Some(code) = lower
        .split_once("statuscode:")
        .map(|(_, code)| code.trim().to_owned())
    {
        let path = probe
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.as_deref())
            .unwrap_or("/");
        return Some(if code == "404" {
            format!(
                "the image does not serve {path}: set {field}.path or spec.probes.path to a route it serves, or spec.probes.type: TCP"
            )
        } else {
            format!(
                "{path} answers HTTP {code}: a probe passes on 200-399; set {field}.path to a route that answers so while the service is healthy"
            )
        });
    }
    if lower.contains("connection refused") {
        let port = port.unwrap_or("the declared port");
        return Some(format!(
            "nothing listens on port {port}: set spec.port to the port the image listens on; if it starts slowly, give it spec.probes.startup"
        ));
    }
    if lower.contains("timeout") || lower.contains("deadline exceeded") {
        return Some(format!(
            "the probe timed out: raise {field}.timeoutSeconds, or point it at a cheaper route"
        ));
    }
    None
}

fn probe_summary(probes: &[ProbeFailure]) -> String {
    probes
        .iter()
        .map(|p| {
            let hint = p
                .hint
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            format!(
                "{} probe {} failed: {}{hint}",
                p.kind.name(),
                p.target,
                p.words
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The line of a termination message (the container's last log lines, or what it wrote to
/// its termination-log file) that says most about why it stopped: the last line that names
/// an error, else the last line; stack frames and runtime trailers are passed over. Cut to
/// [`MAX_LAST_WORDS`].
pub fn last_words(message: &str) -> Option<String> {
    const MARKERS: &[&str] = &[
        "error",
        "exception",
        "panic",
        "fatal",
        "fail",
        "denied",
        "refused",
        "cannot",
        "can't",
        "unable",
        "not found",
        "no such",
        "invalid",
        "[emerg]",
        "[crit]",
        "missing",
    ];
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .collect();
    // Indented lines are stack frames (Python, Java, Node, Go) and carry no message.
    let candidates: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| !line.starts_with([' ', '\t']))
        .collect();
    let mut named_errors = candidates.iter().rev().filter(|line| {
        let lower = line.to_ascii_lowercase();
        !lower.starts_with("goroutine ")
            && !lower.starts_with("traceback ")
            && MARKERS.iter().any(|m| lower.contains(m))
    });
    let words = match (named_errors.next(), named_errors.next()) {
        // A short last error ("[ERROR] Aborting", "fatal error, exiting") says less than
        // the one before it: keep both.
        (Some(last), Some(before)) if last.trim().len() < SHORT_LINE => {
            format!("{} / {}", before.trim(), last.trim())
        }
        (Some(last), _) => last.trim().to_owned(),
        (None, _) => candidates.last().or(lines.last())?.trim().to_owned(),
    };
    Some(cut(&words, MAX_LAST_WORDS))
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, HTTPGetAction, ObjectReference, PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    fn time(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("valid time"))
    }

    fn container_spec() -> Container {
        let http = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        };
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 80,
                ..Default::default()
            }]),
            liveness_probe: Some(http("/healthz")),
            readiness_probe: Some(http("/readyz")),
            ..Default::default()
        }
    }

    fn pod(name: &str, status: ContainerStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container_spec()],
                ..Default::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![status]),
                ..Default::default()
            }),
        }
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some(message.into()),
            }),
            ..Default::default()
        }
    }

    fn running(since: i64) -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(since)),
            }),
            ..Default::default()
        }
    }

    fn exited(code: i32, reason: &str, message: Option<&str>) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                message: message.map(Into::into),
                started_at: Some(time(100)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(
        state: ContainerState,
        last: Option<ContainerState>,
        restarts: i32,
    ) -> ContainerStatus {
        ContainerStatus {
            name: "app".into(),
            state: Some(state),
            last_state: last,
            restart_count: restarts,
            ready: false,
            ..Default::default()
        }
    }

    fn unhealthy(pod: &str, message: &str, at: i64) -> Event {
        Event {
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                field_path: Some("spec.containers{app}".into()),
                ..Default::default()
            },
            reason: Some(UNHEALTHY_EVENT_REASON.into()),
            message: Some(message.into()),
            last_timestamp: Some(time(at)),
            ..Default::default()
        }
    }

    #[test]
    fn waiting_containers_explain_themselves() {
        let creating = pod("a", status(waiting("ContainerCreating", ""), None, 0));
        assert_eq!(problem(std::slice::from_ref(&creating), &[]), None);
        let pulling = pod(
            "b",
            status(
                waiting("ImagePullBackOff", "Back-off pulling image"),
                None,
                0,
            ),
        );
        let found = problem(&[creating, pulling], &[]).expect("a problem");
        assert_eq!(found.reason, "ImagePullBackOff");
        assert_eq!(
            found.message,
            "pod b, container app: Back-off pulling image"
        );
    }

    #[test]
    fn a_crash_loop_quotes_the_containers_last_words() {
        let log = "Traceback (most recent call last):\n  File \"/app/app.py\", line 9, in <module>\n    open(path)\nFileNotFoundError: [Errno 2] No such file or directory: '/etc/app/greeting.txt'\n";
        let crashing = pod(
            "web-1",
            status(
                waiting(
                    "CrashLoopBackOff",
                    "back-off 20s restarting failed container=app",
                ),
                Some(exited(1, "Error", Some(log))),
                2,
            ),
        );
        let found = problem(&[crashing], &[]).expect("a problem");
        assert_eq!(found.reason, "CrashLoopBackOff");
        assert_eq!(
            found.message,
            "pod web-1, container app exited with code 1: FileNotFoundError: [Errno 2] No such file or directory: '/etc/app/greeting.txt' (back-off 20s restarting failed container)"
        );
    }

    #[test]
    fn a_command_that_ends_by_itself_is_told_it_must_serve() {
        let done = pod(
            "a",
            status(
                waiting("CrashLoopBackOff", "back-off 10s"),
                Some(exited(0, "Completed", None)),
                4,
            ),
        );
        let found = problem(&[done], &[]).expect("a problem");
        assert_eq!(found.reason, "CrashLoopBackOff");
        assert_eq!(
            found.message,
            "pod a, container app exited with code 0: a Microservice's container must keep serving on its port, and this image's command ends (back-off 10s)"
        );
    }

    #[test]
    fn a_slow_starter_killed_by_liveness_is_pointed_at_the_startup_probe() {
        let events = [unhealthy(
            "a",
            "Liveness probe failed: Get \"http://10.244.1.5:8080/healthz\": dial tcp 10.244.1.5:8080: connect: connection refused",
            110,
        )];
        let killed = pod(
            "a",
            status(
                waiting("CrashLoopBackOff", "back-off 10s"),
                Some(exited(137, "Error", None)),
                2,
            ),
        );
        let found = problem(&[killed], &events).expect("a problem");
        assert_eq!(found.reason, LIVENESS_PROBE_FAILED);
        assert!(
            found.message.contains("nothing listens on port 80: set spec.port to the port the image listens on; if it starts slowly, give it spec.probes.startup"),
            "{}",
            found.message
        );
    }

    #[test]
    fn a_start_error_and_an_oom_kill_say_what_happened() {
        let start_error = pod(
            "a",
            status(
                waiting("CrashLoopBackOff", "back-off 10s"),
                Some(exited(
                    128,
                    "StartError",
                    Some(
                        "failed to create containerd task: exec: \"python\": executable file not found in $PATH",
                    ),
                )),
                1,
            ),
        );
        let found = problem(&[start_error], &[]).expect("a problem");
        assert!(
            found.message.starts_with("pod a, container app could not start: failed to create containerd task: exec: \"python\": executable file not found"),
            "{}",
            found.message
        );
        let oom = pod(
            "b",
            status(
                waiting("CrashLoopBackOff", "back-off 10s"),
                Some(exited(137, OOM_KILLED, None)),
                3,
            ),
        );
        let found = problem(&[oom], &[]).expect("a problem");
        assert_eq!(found.reason, OOM_KILLED);
        assert!(
            found.message.contains("resources.limits.memory"),
            "{}",
            found.message
        );
        assert!(
            found.message.ends_with("restarted 3 times"),
            "{}",
            found.message
        );
    }

    #[test]
    fn a_failing_readiness_probe_is_told_with_its_path_port_and_status() {
        let unready = pod("web-1", status(running(100), None, 0));
        let events = [
            unhealthy(
                "web-1",
                "Readiness probe failed: Get \"http://10.244.1.5:80/readyz\": dial tcp 10.244.1.5:80: connect: connection refused",
                101,
            ),
            unhealthy(
                "web-1",
                "Readiness probe failed: HTTP probe failed with statuscode: 404",
                110,
            ),
            unhealthy(
                "other",
                "Liveness probe failed: HTTP probe failed with statuscode: 500",
                120,
            ),
        ];
        let found = problem(std::slice::from_ref(&unready), &events).expect("a problem");
        assert_eq!(found.reason, READINESS_PROBE_FAILED);
        // Before any restart, a failing liveness probe is told after the readiness one's reason.
        let mut both = events.to_vec();
        both.push(unhealthy(
            "web-1",
            "Liveness probe failed: HTTP probe failed with statuscode: 404",
            112,
        ));
        let found_both = problem(std::slice::from_ref(&unready), &both).expect("a problem");
        assert_eq!(found_both.reason, READINESS_PROBE_FAILED);
        assert!(
            found_both
                .message
                .contains("liveness probe GET /healthz on port 80 failed"),
            "{}",
            found_both.message
        );
        assert_eq!(
            found.message,
            "pod web-1, container app: readiness probe GET /readyz on port 80 failed: HTTP probe failed with statuscode: 404 (the image does not serve /readyz: set spec.probes.readiness.path or spec.probes.path to a route it serves, or spec.probes.type: TCP)"
        );
        // Without events, a running container that is not ready is no problem yet.
        assert_eq!(problem(&[unready], &[]), None);
    }

    #[test]
    fn a_container_killed_by_its_liveness_probe_is_explained_by_the_probe() {
        let events = [
            unhealthy(
                "web-1",
                "Liveness probe failed: HTTP probe failed with statuscode: 404",
                110,
            ),
            unhealthy(
                "web-1",
                "Readiness probe failed: HTTP probe failed with statuscode: 404",
                111,
            ),
        ];
        let killed = pod(
            "web-1",
            status(
                waiting("CrashLoopBackOff", "back-off 10s"),
                Some(exited(143, "Error", Some("GET /healthz 404"))),
                1,
            ),
        );
        let found = problem(&[killed], &events).expect("a problem");
        assert_eq!(found.reason, LIVENESS_PROBE_FAILED);
        assert!(
            found.message.starts_with("pod web-1, container app: liveness probe GET /healthz on port 80 failed: HTTP probe failed with statuscode: 404"),
            "{}",
            found.message
        );
        assert!(
            found.message.contains("readiness probe GET /readyz"),
            "{}",
            found.message
        );
        assert!(
            found.message.ends_with("restarted once"),
            "{}",
            found.message
        );

        // A program that exits by itself is explained by its exit, even when a probe failed
        // while it was starting.
        let crashed = pod(
            "web-1",
            status(
                waiting("CrashLoopBackOff", "back-off 10s"),
                Some(exited(1, "Error", Some("fatal: no config"))),
                1,
            ),
        );
        let found = problem(&[crashed], &events).expect("a problem");
        assert_eq!(found.reason, "CrashLoopBackOff");
        assert!(
            found
                .message
                .contains("exited with code 1: fatal: no config"),
            "{}",
            found.message
        );
    }

    #[test]
    fn events_older_than_the_previous_start_are_ignored() {
        let unready = pod("web-1", status(running(200), None, 0));
        let old = [unhealthy(
            "web-1",
            "Readiness probe failed: HTTP probe failed with statuscode: 404",
            150,
        )];
        assert_eq!(problem(&[unready], &old), None);
    }

    #[test]
    fn unschedulable_pods_say_why() {
        let mut pending = pod("a", status(waiting("ContainerCreating", ""), None, 0));
        if let Some(status) = pending.status.as_mut() {
            status.container_statuses = None;
            status.conditions = Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some(UNSCHEDULABLE.into()),
                message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
                ..Default::default()
            }]);
        }
        let found = problem(&[pending], &[]).expect("a problem");
        assert_eq!(found.reason, UNSCHEDULABLE);
        assert_eq!(
            found.message,
            "pod a: 0/3 nodes are available: 3 Insufficient cpu."
        );
    }

    #[test]
    fn events_are_read_once_a_probe_has_had_time_to_fail() {
        let now = time(1000);
        let young_again = || pod("a", status(running(990), None, 0));
        let young = young_again();
        let old = pod("b", status(running(900), None, 0));
        let restarted = pod("c", status(running(999), None, 1));
        assert_eq!(needs_events(std::slice::from_ref(&young), &now), None);
        assert_eq!(needs_events(&[young.clone(), old], &now), Some("b"));
        assert_eq!(needs_events(&[young, restarted], &now), Some("c"));
        let pulling = pod(
            "d",
            status(waiting("ErrImagePull", "no such host"), None, 0),
        );
        assert_eq!(
            needs_events(&[pulling], &now),
            None,
            "the pod problem says it all"
        );

        // The reconciler comes back when the youngest unready container's grace is over.
        let younger = pod("e", status(running(995), None, 0));
        assert_eq!(
            events_due_in(&[young_again(), younger], &now),
            Some(Duration::from_secs(5))
        );
        let over = pod("f", status(running(900), None, 0));
        assert_eq!(events_due_in(&[over], &now), None);
    }

    #[test]
    fn last_words_pick_the_line_that_names_the_error() {
        let cases = [
            (
                "Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'PORT'\n",
                "KeyError: 'PORT'",
            ),
            (
                "panic: config missing\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:5 +0x25\n",
                "panic: config missing",
            ),
            (
                "Error: Cannot find module 'express'\n    at Module._resolveFilename (node:internal)\n\nNode.js v20.1.0\n",
                "Error: Cannot find module 'express'",
            ),
            (
                "Exception in thread \"main\" java.lang.IllegalStateException: boom\n\tat Main.main(Main.java:3)\nCaused by: java.io.FileNotFoundException: /etc/app.conf\n\tat x\n",
                "Caused by: java.io.FileNotFoundException: /etc/app.conf",
            ),
            (
                "nginx: [emerg] mkdir() \"/var/cache/nginx/client_temp\" failed (13: Permission denied)\n",
                "nginx: [emerg] mkdir() \"/var/cache/nginx/client_temp\" failed (13: Permission denied)",
            ),
            ("starting\nlistening on :80\nbye\n", "bye"),
        ];
        for (log, expected) in cases {
            assert_eq!(last_words(log).as_deref(), Some(expected), "{log}");
        }
        assert_eq!(last_words("\n \n"), None);
        let long = last_words(&"e".repeat(1000)).expect("a line");
        assert!(long.len() <= MAX_LAST_WORDS + '…'.len_utf8());
    }
}
