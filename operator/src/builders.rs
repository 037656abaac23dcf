//! Pure functions that turn a [`Microservice`] into the objects the operator owns: a
//! Deployment, a Service, and where they apply a PodDisruptionBudget and a
//! HorizontalPodAutoscaler. No I/O here: the reconciler applies what these return, `render`
//! prints it, and the unit tests compare it with golden files.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Sysctl,
    TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::{
    DataVolume, Microservice, MicroserviceSpec, ProbeSpec, ProbeType, Probes, default_port,
};
use crate::error::{Error, Result};
use crate::network;
use crate::stores::{self, ServiceWiring, StoreChildren, StoreContext, StoreImages};
use kea_contract::{env, mounts, paths};

use k8s_openapi::api::networking::v1::NetworkPolicy;

/// Name of the field manager for server-side apply, and value of `app.kubernetes.io/managed-by`.
pub const MANAGER: &str = "kea-operator";
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

/// Label keys of the standard Kubernetes label set.
pub mod labels {
    /// The application name (the Microservice name); part of the pod selector.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The instance (the Microservice name); part of the pod selector.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// The role of the object within the application.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The larger application this one is part of.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// The tool that manages the object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

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

/// The ports of the dependencies that exist, by name. A dependency that is not in the map
/// gets the default port, so its URL is right as soon as it is created with the default.
pub type DependencyPorts = BTreeMap<String, i32>;

/// Everything the operator wants to exist for one Microservice.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// Always wanted.
    pub deployment: Deployment,
    /// Always wanted.
    pub service: Service,
    /// Wanted while at least two pods are wanted, so a voluntary disruption (a node drain)
    /// never takes the service down.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// Wanted while `autoscaling` is set and the Microservice is not suspended.
    pub horizontal_pod_autoscaler: Option<HorizontalPodAutoscaler>,
    /// The objects of `spec.stores` (the Secrets are made by the reconciler, once).
    pub stores: Vec<StoreChildren>,
    /// The network boundaries of the pods and of the store servers (none when
    /// [`Settings::network_policies`] is off).
    pub network_policies: Vec<NetworkPolicy>,
}

/// Operator-wide settings that shape the children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Images of the store servers.
    pub store_images: StoreImages,
    /// Write NetworkPolicies (off for clusters without a NetworkPolicy implementation).
    pub network_policies: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            store_images: StoreImages::default(),
            network_policies: true,
        }
    }
}

/// Builds every child of `ms`. Fails when `ms` has no namespace.
///
/// Children carry a controller ownerReference when `ms` has a uid (it always does when read
/// from the API server; a Microservice read from a file for `render` has none).
pub fn build_children(
    ms: &Microservice,
    dependency_ports: &DependencyPorts,
    settings: &Settings,
) -> Result<Children> {
    let ctx = BuildContext::new(ms)?;
    let control = replica_control(&ms.spec);
    let planned = stores::plan(&ctx.name, ms.spec.stores.as_ref());
    let wiring = stores::service_wiring(&planned);
    let network_policies = if settings.network_policies {
        let store_ctx = ctx.store_context();
        let mut policies = vec![network::service_policy(
            ms,
            ctx.metadata(),
            dependency_ports,
            &planned,
        )];
        policies.extend(planned.iter().filter_map(|store| {
            network::store_policy(
                &ctx.name,
                store,
                store_ctx.object_metadata(store, &store.object_name),
            )
        }));
        policies
    } else {
        Vec::new()
    };
    Ok(Children {
        deployment: build_deployment(&ctx, ms, control, dependency_ports, &wiring),
        service: build_service(&ctx, ms),
        pod_disruption_budget: (control.min_replicas() > 1).then(|| build_pdb(&ctx)),
        horizontal_pod_autoscaler: build_hpa(&ctx, ms),
        stores: stores::build_stores(&ctx.store_context(), &planned, &settings.store_images),
        network_policies,
    })
}

/// The context of the store objects of `ms` (for the Secrets the reconciler creates).
pub fn with_store_context<T>(
    ms: &Microservice,
    f: impl FnOnce(&StoreContext<'_>) -> T,
) -> Result<T> {
    let ctx = BuildContext::new(ms)?;
    Ok(f(&ctx.store_context()))
}

/// The in-cluster URL of a Service: `http://NAME.NAMESPACE.svc.cluster.local`, with `:PORT`
/// unless the port is 80.
pub fn service_url(name: &str, namespace: &str, port: i32) -> String {
    if port == 80 {
        format!("http://{name}.{namespace}.svc.cluster.local")
    } else {
        format!("http://{name}.{namespace}.svc.cluster.local:{port}")
    }
}

/// The labels that select the pods of a Microservice. They never change for a given name,
/// because a Deployment's selector is immutable.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), name.to_owned()),
        (labels::INSTANCE.to_owned(), name.to_owned()),
    ])
}

/// The pod selector in its string form, as the scale subresource reports it.
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod security context that passes the Pod Security Standard `restricted`: non-root with
/// the numeric `uid` (as user, group and volume group), seccomp `RuntimeDefault`.
pub fn restricted_pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container security context for `restricted`: no privilege escalation, no capabilities,
/// a read-only root filesystem.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
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

/// Facts shared by all children of one Microservice.
struct BuildContext {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
}

impl BuildContext {
    fn new(ms: &Microservice) -> Result<Self> {
        let name = ms.name_any();
        let namespace = ms
            .namespace()
            .ok_or_else(|| Error::InvalidObject(format!("Microservice {name} has no namespace")))?;
        let part_of = ms
            .labels()
            .get(labels::PART_OF)
            .cloned()
            .unwrap_or_else(|| namespace.clone());
        let mut labels = selector_labels(&name);
        labels.insert(labels::COMPONENT.to_owned(), "microservice".to_owned());
        labels.insert(labels::PART_OF.to_owned(), part_of);
        labels.insert(labels::MANAGED_BY.to_owned(), MANAGER.to_owned());
        Ok(Self {
            owner: ms.controller_owner_ref(&()),
            name,
            namespace,
            labels,
        })
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            owner_references: self.owner.clone().map(|owner| vec![owner]),
            ..Default::default()
        }
    }

    fn store_context(&self) -> StoreContext<'_> {
        StoreContext {
            name: &self.name,
            namespace: &self.namespace,
            part_of: self
                .labels
                .get(labels::PART_OF)
                .map(String::as_str)
                .unwrap_or(&self.namespace),
            owner: self.owner.as_ref(),
        }
    }

    fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(selector_labels(&self.name)),
            ..Default::default()
        }
    }
}

fn build_deployment(
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

fn build_service(ctx: &BuildContext, ms: &Microservice) -> Service {
    Service {
        metadata: ctx.metadata(),
        spec: Some(ServiceSpec {
            type_: Some(ms.spec.service_type.as_str().to_owned()),
            selector: Some(selector_labels(&ctx.name)),
            ports: Some(vec![ServicePort {
                name: Some(kea_contract::PORT_NAME.to_owned()),
                port: ms.spec.port,
                target_port: Some(IntOrString::String(kea_contract::PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn build_pdb(ctx: &BuildContext) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ctx.metadata(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(ctx.selector()),
            // A pod that is not ready anyway (e.g. crash-looping) must not block a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..Default::default()
        }),
        status: None,
    }
}

fn build_hpa(ctx: &BuildContext, ms: &Microservice) -> Option<HorizontalPodAutoscaler> {
    if ms.spec.suspend {
        return None;
    }
    let autoscaling = ms.spec.autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: ctx.metadata(),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(<Deployment as k8s_openapi::Resource>::API_VERSION.to_owned()),
                kind: <Deployment as k8s_openapi::Resource>::KIND.to_owned(),
                name: ctx.name.clone(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Autoscaling, Dependency, ProbeSpec, Probes};

    fn microservice(spec: MicroserviceSpec) -> Microservice {
        let mut ms = Microservice::new("orders", spec);
        ms.metadata.namespace = Some("shop".into());
        ms.metadata.uid = Some("uid-1".into());
        ms
    }

    fn container(children: &Children) -> &Container {
        &children
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
            .containers[0]
    }

    fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    #[test]
    fn urls_leave_out_port_80() {
        assert_eq!(service_url("a", "b", 80), "http://a.b.svc.cluster.local");
        assert_eq!(
            service_url("a", "b", 8080),
            "http://a.b.svc.cluster.local:8080"
        );
    }

    #[test]
    fn dependency_variables_are_upper_case_with_underscores() {}

    #[test]
    fn the_pod_serves_through_its_deregistration_then_drains_within_the_grace_period() {
        let pod_of = |deregistration_seconds, drain_seconds| {
            let mut spec = MicroserviceSpec::with_image("img:1");
            spec.deregistration_seconds = deregistration_seconds;
            spec.drain_seconds = drain_seconds;
            let children = build_children(
                &microservice(spec),
                &DependencyPorts::new(),
                &Settings::default(),
            )
            .expect("children");
            children
                .deployment
                .spec
                .expect("spec")
                .template
                .spec
                .expect("pod spec")
        };
        let pre_stop_sleep = |pod: &PodSpec| {
            pod.containers[0]
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.sleep.as_ref())
                .map(|sleep| sleep.seconds)
        };
        let pod = pod_of(20, 30);
        assert_eq!(pre_stop_sleep(&pod), Some(20));
        assert_eq!(pod.termination_grace_period_seconds, Some(20 + 30 + 5));
        let pod = pod_of(0, 7);
        assert_eq!(pre_stop_sleep(&pod), None, "no preStop hook at 0");
        assert_eq!(pod.termination_grace_period_seconds, Some(7 + 5));
    }

    #[test]
    fn minimal_spec_gets_defaults_and_a_restricted_pod() {
        let children = build_children(
            &microservice(MicroserviceSpec::with_image("img:1")),
            &DependencyPorts::new(),
            &Settings::default(),
        )
        .expect("children");
        let deployment_spec = children.deployment.spec.as_ref().expect("spec");
        assert_eq!(deployment_spec.replicas, Some(1));
        let pod = deployment_spec.template.spec.as_ref().expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.termination_grace_period_seconds, Some(15));
        let pod_security = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let c = container(&children);
        let security = c
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert!(c.startup_probe.is_none(), "startup probe is off by default");
        let readiness = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(readiness.and_then(|h| h.path.as_deref()), Some("/readyz"));
        assert_eq!(c.resources, Some(default_resources()));
        assert!(children.pod_disruption_budget.is_none());
        assert!(children.horizontal_pod_autoscaler.is_none());
        // The ownerReference makes the garbage collector delete the children.
        let owners = children.service.metadata.owner_references.expect("owner");
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_hpa_and_adds_a_pdb() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: 70,
        });
        let children = build_children(
            &microservice(spec),
            &DependencyPorts::new(),
            &Settings::default(),
        )
        .expect("children");
        assert_eq!(
            children.deployment.spec.as_ref().and_then(|s| s.replicas),
            None
        );
        let hpa = children.horizontal_pod_autoscaler.expect("hpa");
        let hpa_spec = hpa.spec.expect("hpa spec");
        assert_eq!((hpa_spec.min_replicas, hpa_spec.max_replicas), (Some(2), 5));
        assert_eq!(hpa_spec.scale_target_ref.kind, "Deployment");
        assert!(children.pod_disruption_budget.is_some());
    }

    #[test]
    fn suspend_scales_to_zero_without_hpa_or_pdb() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.replicas = 3;
        spec.suspend = true;
        spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: 70,
        });
        let children = build_children(
            &microservice(spec),
            &DependencyPorts::new(),
            &Settings::default(),
        )
        .expect("children");
        assert_eq!(
            children.deployment.spec.as_ref().and_then(|s| s.replicas),
            Some(0)
        );
        assert!(children.horizontal_pod_autoscaler.is_none());
        assert!(children.pod_disruption_budget.is_none());
    }

    #[test]
    fn dependencies_use_their_port_or_the_default_and_user_env_wins() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.depends_on = vec![
            Dependency {
                name: "users".into(),
            },
            Dependency {
                name: "stock".into(),
            },
        ];
        spec.env = vec![EnvVar {
            name: "STOCK_URL".into(),
            value: Some("http://elsewhere".into()),
            ..Default::default()
        }];
        let ports = DependencyPorts::from([("users".to_owned(), 80)]);
        let children =
            build_children(&microservice(spec), &ports, &Settings::default()).expect("children");
        let c = container(&children);
        assert_eq!(
            env_value(c, "USERS_URL"),
            Some("http://users.shop.svc.cluster.local")
        );
        assert_eq!(env_value(c, "STOCK_URL"), Some("http://elsewhere"));
        let stock_count = c
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == "STOCK_URL")
            .count();
        assert_eq!(
            stock_count, 1,
            "the user's variable replaces the operator's"
        );
    }

    #[test]
    fn pod_labels_cannot_replace_the_selector() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.pod_labels = BTreeMap::from([
            (labels::NAME.to_owned(), "other".to_owned()),
            ("team".to_owned(), "a".to_owned()),
        ]);
        let children = build_children(
            &microservice(spec),
            &DependencyPorts::new(),
            &Settings::default(),
        )
        .expect("children");
        let template_labels = children
            .deployment
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .expect("labels");
        assert_eq!(
            template_labels.get(labels::NAME).map(String::as_str),
            Some("orders")
        );
        assert_eq!(template_labels.get("team").map(String::as_str), Some("a"));
    }

    #[test]
    fn probes_share_a_path_or_check_tcp_for_images_without_health_routes() {
        let probe_of = |probes: Probes| {
            let mut spec = MicroserviceSpec::with_image("img:1");
            spec.probes = Some(probes);
            let children = build_children(
                &microservice(spec),
                &DependencyPorts::new(),
                &Settings::default(),
            )
            .expect("children");
            let c = container(&children).clone();
            (
                c.liveness_probe.expect("liveness"),
                c.readiness_probe.expect("readiness"),
            )
        };
        let path = |p: &Probe| p.http_get.as_ref().and_then(|h| h.path.clone());

        // One path for all, a probe's own path still wins.
        let (liveness, readiness) = probe_of(Probes {
            path: Some("/".into()),
            readiness: Some(ProbeSpec {
                path: Some("/ready".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(path(&liveness).as_deref(), Some("/"));
        assert_eq!(path(&readiness).as_deref(), Some("/ready"));

        // TCP for all, a probe may still ask for HTTP (with its default path).
        let (liveness, readiness) = probe_of(Probes {
            type_: Some(ProbeType::Tcp),
            readiness: Some(ProbeSpec {
                type_: Some(ProbeType::Http),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(liveness.http_get.is_none());
        assert_eq!(
            liveness.tcp_socket.map(|t| t.port),
            Some(IntOrString::String(kea_contract::PORT_NAME.to_owned()))
        );
        assert_eq!(path(&readiness).as_deref(), Some(paths::READYZ));
        assert!(readiness.tcp_socket.is_none());
    }

    #[test]
    fn a_port_below_1024_is_bound_without_root_or_capabilities() {
        let pod_of = |port: i32, run_as_user: Option<i64>| {
            let mut spec = MicroserviceSpec::with_image("img:1");
            spec.port = port;
            spec.run_as_user = run_as_user;
            let children = build_children(
                &microservice(spec),
                &DependencyPorts::new(),
                &Settings::default(),
            )
            .expect("children");
            let pod = children
                .deployment
                .spec
                .and_then(|s| s.template.spec)
                .expect("pod spec");
            let env = pod.containers[0].env.clone().unwrap_or_default();
            let port_variable = env
                .iter()
                .find(|e| e.name == env::GENERIC_PORT)
                .and_then(|e| e.value.clone());
            (
                pod.security_context.expect("security context"),
                port_variable,
            )
        };
        let (security, port) = pod_of(80, None);
        assert_eq!(
            security.sysctls,
            Some(vec![Sysctl {
                name: UNPRIVILEGED_PORT_SYSCTL.into(),
                value: "80".into()
            }])
        );
        assert_eq!(security.run_as_user, Some(RUN_AS_USER));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(port.as_deref(), Some("80"));

        let (security, port) = pod_of(8080, Some(101));
        assert_eq!(security.sysctls, None, "the kernel's default above 1023");
        assert_eq!(security.run_as_user, Some(101));
        assert_eq!(security.run_as_group, Some(101));
        assert_eq!(security.fs_group, Some(101));
        assert_eq!(port.as_deref(), Some("8080"));
    }

    #[test]
    fn probes_can_be_overridden_and_switched_off() {
        let mut spec = MicroserviceSpec::with_image("img:1");
        spec.probes = Some(Probes {
            liveness: Some(ProbeSpec {
                enabled: Some(false),
                ..Default::default()
            }),
            readiness: Some(ProbeSpec {
                path: Some("/ready".into()),
                period_seconds: Some(7),
                ..Default::default()
            }),
            startup: Some(ProbeSpec::default()),
            ..Default::default()
        });
        let children = build_children(
            &microservice(spec),
            &DependencyPorts::new(),
            &Settings::default(),
        )
        .expect("children");
        let c = container(&children);
        assert!(c.liveness_probe.is_none());
        let readiness = c.readiness_probe.as_ref().expect("readiness");
        assert_eq!(readiness.period_seconds, Some(7));
        assert_eq!(
            readiness.http_get.as_ref().and_then(|h| h.path.as_deref()),
            Some("/ready")
        );
        let startup = c.startup_probe.as_ref().expect("startup");
        assert_eq!(
            startup.http_get.as_ref().and_then(|h| h.path.as_deref()),
            Some("/healthz")
        );
    }

    #[test]
    fn a_microservice_without_namespace_is_rejected() {
        let ms = Microservice::new("x", MicroserviceSpec::with_image("img:1"));
        assert!(build_children(&ms, &DependencyPorts::new(), &Settings::default()).is_err());
    }
}
