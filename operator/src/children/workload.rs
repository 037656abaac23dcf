//! The workload of a Microservice: its Deployment, whose pod runs the container with its
//! environment, volumes, probes and security, spread across nodes and rolled out without a
//! gap.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SleepAction, Sysctl, TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{
    DataVolume, Microservice, MicroserviceSpec, ProbeSpec, ProbeType, Probes, default_port,
    default_progress_deadline_seconds,
};
use crate::children::meta::{
    BuildContext, DependencyPorts, restricted_container_security, restricted_pod_security,
    service_url,
};
use crate::children::network;
use crate::children::stores::ServiceWiring;
use kea_contract::{env, mounts, paths};

/// Name of the application container in every pod.
pub const CONTAINER_NAME: &str = "app";
/// UID and GID the container runs as unless `spec.runAsUser` says otherwise (the conventional
/// "nonroot" user of distroless images).
pub const RUN_AS_USER: i64 = 65532;
/// The lowest port a process may bind without `CAP_NET_BIND_SERVICE` (Linux's default).
pub const FIRST_UNPRIVILEGED_PORT: i32 = 1024;
/// The pod sysctl that moves that bound; in Kubernetes' safe set, allowed by Pod Security
/// `restricted`, and scoped to the pod's own network namespace.
pub const UNPRIVILEGED_PORT_SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";
/// Extra seconds of grace after the drain, before the kubelet sends SIGKILL.
pub const TERMINATION_MARGIN_SECONDS: i64 = 5;
/// Seconds a new pod must be ready before it counts as available during a rollout.
pub const MIN_READY_SECONDS: i32 = 3;

/// How the number of pods is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaControl {
    /// The operator sets `replicas` on the Deployment (0 when suspended).
    Fixed(i32),
    /// A HorizontalPodAutoscaler sets it between these bounds.
    Autoscaled {
        /// Fewest pods.
        min: i32,
        /// Most pods.
        max: i32,
    },
}

impl ReplicaControl {
    /// The number of pods that must at least be running when all is well.
    pub fn min_replicas(self) -> i32 {
        match self {
            Self::Fixed(n) => n,
            Self::Autoscaled { min, .. } => min,
        }
    }
}

/// Decides who sets the number of pods: `suspend` wins over `autoscaling`, which wins over
/// `replicas`.
pub fn replica_control(spec: &MicroserviceSpec) -> ReplicaControl {
    if spec.suspend {
        ReplicaControl::Fixed(0)
    } else if let Some(autoscaling) = &spec.autoscaling {
        ReplicaControl::Autoscaled {
            min: autoscaling.min_replicas,
            max: autoscaling.max_replicas,
        }
    } else {
        ReplicaControl::Fixed(spec.replicas.max(0))
    }
}

/// The requests and limits used when the spec sets none: small, because a Rust HTTP service
/// idles at a few MiB; no CPU limit, because CPU throttling hurts latency more than it helps.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".to_owned())),
            ("memory".to_owned(), Quantity("32Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("128Mi".to_owned()),
        )])),
        ..Default::default()
    }
}

pub fn build_deployment(
    ctx: &BuildContext,
    ms: &Microservice,
    control: ReplicaControl,
    dependency_ports: &DependencyPorts,
    wiring: &ServiceWiring,
) -> Deployment {
    let spec = &ms.spec;

    // User pod labels first, so the operator's labels (the selector among them) win. The
    // calls.kea.dev/ labels mark the pods as callers of their dependencies (network policies).
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(ctx.labels.clone());
    pod_labels.extend(network::caller_labels(ms));
    let pod_annotations = (!spec.pod_annotations.is_empty()).then(|| spec.pod_annotations.clone());

    Deployment {
        metadata: ctx.metadata(),
        spec: Some(DeploymentSpec {
            // With an HPA the field is left out, so that this field manager does not own it and
            // server-side apply never fights the autoscaler.
            replicas: match control {
                ReplicaControl::Fixed(n) => Some(n),
                ReplicaControl::Autoscaled { .. } => None,
            },
            selector: ctx.selector(),
            min_ready_seconds: Some(MIN_READY_SECONDS),
            progress_deadline_seconds: Some(
                spec.rollout
                    .as_ref()
                    .map_or_else(default_progress_deadline_seconds, |r| {
                        r.progress_deadline_seconds
                    }),
            ),
            revision_history_limit: Some(5),
            strategy: Some(deployment_strategy(wiring)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: pod_annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    topology_spread_constraints: Some(spread_across_nodes(ctx)),
                    ..build_pod_spec(ctx, spec, dependency_ports, wiring)
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Label of a canary's pods (value `canary`): its Deployment selects them by it, and the
/// operator tells them from the stable pods by it. The Service selects both.
pub const TRACK_LABEL: &str = "kea.dev/track";

/// Name of the Deployment of a Microservice's canary.
pub fn canary_name(name: &str) -> String {
    format!("{name}-canary")
}

/// The Deployment of a canary: one pod of `template` beside the pods of `deployment` (the
/// Microservice's own, which keep the stable template), in the same Service.
pub fn canary_deployment(deployment: &Deployment, template: &PodTemplateSpec) -> Deployment {
    let mut canary = deployment.clone();
    let name = deployment.metadata.name.clone().unwrap_or_default();
    canary.metadata.name = Some(canary_name(&name));
    let track = (TRACK_LABEL.to_owned(), "canary".to_owned());
    let mut template = template.clone();
    template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default()
        .insert(track.0.clone(), track.1.clone());
    if let Some(spec) = canary.spec.as_mut() {
        spec.replicas = Some(1);
        spec.selector
            .match_labels
            .get_or_insert_default()
            .insert(track.0, track.1);
        spec.template = template;
    }
    canary
}

/// One pod per node where the cluster has several, so that losing or draining a node leaves
/// pods serving elsewhere. `ScheduleAnyway`: a single-node cluster still runs them all;
/// nodes a pod may not run on (taints) do not count. Set for one pod too: adding it when
/// the Microservice scales out would change the pod template and restart every pod.
/// `pod-template-hash` keeps a rollout's new pods spread among themselves.
fn spread_across_nodes(ctx: &BuildContext) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(ctx.selector()),
        match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
        node_taints_policy: Some("Honor".to_owned()),
        ..Default::default()
    }]
}

/// Surge first, never go below the wanted number of ready pods: a rollout drops no request.
/// Except with a store in the pod's volume: a ReadWriteOnce claim and a file lock admit one
/// pod at a time, so the old pod stops before the new one starts.
fn deployment_strategy(wiring: &ServiceWiring) -> DeploymentStrategy {
    if wiring.embedded {
        return DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::String("25%".to_owned())),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

fn build_pod_spec(
    ctx: &BuildContext,
    spec: &MicroserviceSpec,
    dependency_ports: &DependencyPorts,
    wiring: &ServiceWiring,
) -> PodSpec {
    let deregistration_seconds = i64::from(spec.deregistration_seconds.max(0));
    let drain_seconds = i64::from(spec.drain_seconds.max(0));
    let data_volume = spec.data_volume.clone().unwrap_or_default();
    let mut volumes = vec![
        Volume {
            name: "data".to_owned(),
            empty_dir: Some(empty_dir(&data_volume)),
            ..Default::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    volumes.extend(wiring.volumes.iter().cloned());
    PodSpec {
        init_containers: (!wiring.init_containers.is_empty())
            .then(|| wiring.init_containers.clone()),
        containers: vec![build_container(ctx, spec, dependency_ports, wiring)],
        // The service talks to no Kubernetes API: no token in the pod.
        automount_service_account_token: Some(false),
        // Service links would add a dozen variables per Service in the namespace.
        enable_service_links: Some(false),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        security_context: Some(pod_security(spec)),
        termination_grace_period_seconds: Some(
            deregistration_seconds + drain_seconds + TERMINATION_MARGIN_SECONDS,
        ),
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// The restricted pod security context of the service's pod, as `spec.runAsUser`, and able to
/// bind its port when that port is below 1024: images made for `docker run -p 80:80` listen
/// there, and Docker itself lowers the same sysctl (to 0) in every container. Lowered only to
/// the declared port, and only when needed, so other pods keep the kernel's default.
fn pod_security(spec: &MicroserviceSpec) -> PodSecurityContext {
    let mut security = restricted_pod_security(spec.run_as_user.unwrap_or(RUN_AS_USER));
    if spec.port < FIRST_UNPRIVILEGED_PORT {
        security.sysctls = Some(vec![Sysctl {
            name: UNPRIVILEGED_PORT_SYSCTL.to_owned(),
            value: spec.port.to_string(),
        }]);
    }
    security
}

fn empty_dir(data_volume: &DataVolume) -> EmptyDirVolumeSource {
    EmptyDirVolumeSource {
        medium: data_volume.medium.map(|_| "Memory".to_owned()),
        size_limit: data_volume.size_limit.clone(),
    }
}

fn build_container(
    ctx: &BuildContext,
    spec: &MicroserviceSpec,
    dependency_ports: &DependencyPorts,
    wiring: &ServiceWiring,
) -> Container {
    let probes = spec.probes.clone().unwrap_or_default();
    let mut volume_mounts = vec![
        VolumeMount {
            name: "data".to_owned(),
            mount_path: mounts::DATA.to_owned(),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: mounts::TMP.to_owned(),
            ..Default::default()
        },
    ];
    volume_mounts.extend(wiring.mounts.iter().cloned());
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some(kea_contract::PORT_NAME.to_owned()),
            container_port: spec.port,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: Some(build_env(ctx, spec, dependency_ports, wiring)),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        liveness_probe: probe(&probes, probes.liveness.as_ref(), ProbeDefaults::LIVENESS),
        readiness_probe: probe(&probes, probes.readiness.as_ref(), ProbeDefaults::READINESS),
        startup_probe: probes
            .startup
            .as_ref()
            .and_then(|startup| probe(&probes, Some(startup), ProbeDefaults::STARTUP)),
        // Serving on while the endpoint removal spreads; a `sleep` hook needs no shell.
        lifecycle: (spec.deregistration_seconds > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::from(spec.deregistration_seconds),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        security_context: Some(restricted_container_security()),
        // A crash-looping container then shows its last log lines in the pod status.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    }
}

/// The operator's variables first, then the user's; a user variable with the same name
/// replaces the operator's. Keeping ours first lets user values refer to them as `$(USERS_URL)`.
fn build_env(
    ctx: &BuildContext,
    spec: &MicroserviceSpec,
    dependency_ports: &DependencyPorts,
    wiring: &ServiceWiring,
) -> Vec<EnvVar> {
    let mut ours = vec![
        (env::SERVICE_NAME.to_owned(), ctx.name.clone()),
        (env::NAMESPACE.to_owned(), ctx.namespace.clone()),
        (env::PORT.to_owned(), spec.port.to_string()),
        // The convention of Cloud Run, Heroku and many web frameworks: images from elsewhere
        // often listen on $PORT.
        (env::GENERIC_PORT.to_owned(), spec.port.to_string()),
        // Read by the kea reference service; harmless for other images.
        (env::LISTEN.to_owned(), format!("0.0.0.0:{}", spec.port)),
        (env::DATA_DIR.to_owned(), mounts::DATA.to_owned()),
        // The preStop sleep (deregistrationSeconds) keeps traffic away before SIGTERM.
        (env::SHUTDOWN_DELAY.to_owned(), "0s".to_owned()),
        (
            env::DRAIN_TIMEOUT.to_owned(),
            format!("{}s", spec.drain_seconds),
        ),
    ];
    for dependency in &spec.depends_on {
        let port = dependency_ports
            .get(&dependency.name)
            .copied()
            .unwrap_or_else(default_port);
        ours.push((
            env::dependency_url(&dependency.name),
            service_url(&dependency.name, &ctx.namespace, port),
        ));
    }

    let mut env: Vec<EnvVar> = ours
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..Default::default()
        })
        // The stores' URLs come from their Secrets, never as literal values.
        .chain(wiring.env.iter().cloned())
        .filter(|ours| !spec.env.iter().any(|user| user.name == ours.name))
        .collect();
    env.extend(spec.env.iter().cloned());
    env
}

/// The timing of one kind of probe when the spec does not say.
#[derive(Clone, Copy)]
struct ProbeDefaults {
    path: &'static str,
    period_seconds: i32,
    failure_threshold: i32,
    timeout_seconds: i32,
    initial_delay_seconds: i32,
}

impl ProbeDefaults {
    const LIVENESS: Self = Self {
        path: paths::HEALTHZ,
        period_seconds: 10,
        failure_threshold: 3,
        timeout_seconds: 2,
        initial_delay_seconds: 0,
    };
    const READINESS: Self = Self {
        path: paths::READYZ,
        period_seconds: 5,
        failure_threshold: 3,
        timeout_seconds: 2,
        initial_delay_seconds: 0,
    };
    // Up to 60 seconds to start (30 x 2 s) before liveness takes over.
    const STARTUP: Self = Self {
        path: paths::HEALTHZ,
        period_seconds: 2,
        failure_threshold: 30,
        timeout_seconds: 2,
        initial_delay_seconds: 0,
    };
}

/// One probe: its own settings first, then what `probes` sets for all, then `defaults`.
fn probe(shared: &Probes, spec: Option<&ProbeSpec>, defaults: ProbeDefaults) -> Option<Probe> {
    let spec = spec.cloned().unwrap_or_default();
    if spec.enabled == Some(false) {
        return None;
    }
    let port = IntOrString::String(kea_contract::PORT_NAME.to_owned());
    let (http_get, tcp_socket) = match spec.type_.or(shared.type_).unwrap_or(ProbeType::Http) {
        ProbeType::Http => {
            let path = spec
                .path
                .or_else(|| shared.path.clone())
                .unwrap_or_else(|| defaults.path.to_owned());
            let action = HTTPGetAction {
                path: Some(path),
                port,
                scheme: Some("HTTP".to_owned()),
                ..Default::default()
            };
            (Some(action), None)
        }
        ProbeType::Tcp => (
            None,
            Some(TCPSocketAction {
                port,
                ..Default::default()
            }),
        ),
    };
    Some(Probe {
        http_get,
        tcp_socket,
        period_seconds: Some(spec.period_seconds.unwrap_or(defaults.period_seconds)),
        failure_threshold: Some(spec.failure_threshold.unwrap_or(defaults.failure_threshold)),
        timeout_seconds: Some(spec.timeout_seconds.unwrap_or(defaults.timeout_seconds)),
        initial_delay_seconds: Some(
            spec.initial_delay_seconds
                .unwrap_or(defaults.initial_delay_seconds),
        ),
        success_threshold: Some(1),
        ..Default::default()
    })
}
