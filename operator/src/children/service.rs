//! How a Microservice is reached and kept up: its Service, its PodDisruptionBudget (two pods
//! or more), its HorizontalPodAutoscaler (with `autoscaling`).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::Microservice;
use crate::children::meta::{BuildContext, selector_labels};

pub fn build_service(ctx: &BuildContext, ms: &Microservice) -> Service {
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

pub fn build_pdb(ctx: &BuildContext) -> PodDisruptionBudget {
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

pub fn build_hpa(ctx: &BuildContext, ms: &Microservice) -> Option<HorizontalPodAutoscaler> {
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
