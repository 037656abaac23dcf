//! Pure functions that turn a [`Microservice`] into the objects the operator owns: a
//! Deployment, a Service, and where they apply a PodDisruptionBudget and a
//! HorizontalPodAutoscaler. No I/O here: the reconciler applies what these return, `render`
//! prints it, and the unit tests compare it with golden files.

pub mod backup;
pub mod config;
pub mod meta;
pub mod network;
pub mod service;
pub mod stores;
pub mod workload;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::api::Microservice;
use crate::error::Result;
use meta::{BuildContext, DependencyPorts};
use stores::{StoreChildren, StoreContext, StoreImages};

use k8s_openapi::api::networking::v1::NetworkPolicy;

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
    /// The namespace the operator's pods run in: its NetworkPolicies admit them to the pods'
    /// port, to read their `/metrics` for the canary's analysis. None out of a cluster.
    pub operator_namespace: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            store_images: StoreImages::default(),
            network_policies: true,
            operator_namespace: None,
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
    let control = workload::replica_control(&ms.spec);
    let planned = stores::plan(&ctx.name, ms.spec.stores.as_ref());
    let mut wiring = stores::service_wiring(&ctx.name, &planned);
    backup::attach_embedded_restores(&mut wiring, &planned, &settings.store_images);
    let store_ctx = StoreContext::of(&ctx);
    let network_policies = if settings.network_policies {
        let mut policies = vec![network::service_policy(
            ms,
            ctx.metadata(),
            dependency_ports,
            &planned,
            settings.operator_namespace.as_deref(),
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
    let mut stores = stores::build_stores(&store_ctx, &planned, &settings.store_images);
    backup::attach(
        &store_ctx,
        &mut stores,
        &settings.store_images,
        ms.spec.port,
    );
    Ok(Children {
        deployment: workload::build_deployment(&ctx, ms, control, dependency_ports, &wiring),
        service: service::build_service(&ctx, ms),
        pod_disruption_budget: (control.min_replicas() > 1).then(|| service::build_pdb(&ctx)),
        horizontal_pod_autoscaler: service::build_hpa(&ctx, ms),
        stores,
        network_policies,
    })
}

/// The context of the store objects of `ms` (for the Secrets the reconciler creates).
pub fn with_store_context<T>(
    ms: &Microservice,
    f: impl FnOnce(&StoreContext<'_>) -> T,
) -> Result<T> {
    let ctx = BuildContext::new(ms)?;
    Ok(f(&StoreContext::of(&ctx)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Probe, Sysctl};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kea_contract::{env, paths};

    use super::meta::{labels, service_url};
    use super::workload::*;
    use super::*;
    use crate::api::{Autoscaling, Dependency, MicroserviceSpec, ProbeSpec, ProbeType, Probes};

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
    fn the_operator_in_its_namespace_may_read_the_pods_port_and_nothing_else() {
        let ms = microservice(MicroserviceSpec::with_image("img:1"));
        let rules = |operator_namespace: Option<&str>| {
            let settings = Settings {
                operator_namespace: operator_namespace.map(str::to_owned),
                ..Settings::default()
            };
            let children =
                build_children(&ms, &DependencyPorts::new(), &settings).expect("children");
            serde_json::to_value(
                &children.network_policies[0]
                    .spec
                    .as_ref()
                    .expect("spec")
                    .ingress,
            )
            .expect("json")
        };
        assert_eq!(rules(None).as_array().map(Vec::len), Some(1));
        assert_eq!(
            rules(Some("kea-system"))[1],
            serde_json::json!({
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kea-system"}},
                    "podSelector": {"matchLabels": {
                        "app.kubernetes.io/component": "operator",
                        "app.kubernetes.io/part-of": "kea",
                    }},
                }],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            })
        );
    }

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
