//! The kea operator: reconciles `Microservice` custom resources (`kea.dev/v1alpha1`) into
//! Deployments, Services, PodDisruptionBudgets, HorizontalPodAutoscalers, NetworkPolicies and
//! the stores of each Microservice. This crate is the controller and the process that runs it;
//! the `kea-operator` command and what it prints (CRD, RBAC, rendered children, diagrams) are
//! the `kea-cli` crate, and what the operator and the service agree on is `kea-contract`.
//!
//! - [`api`]: the custom resource types, condition types and reasons, event reasons.
//! - [`crd`]: the CustomResourceDefinition made from [`api`].
//! - [`builders`]: pure functions, Microservice -> children.
//! - [`network`]: pure functions, `dependsOn` and `stores` -> NetworkPolicies.
//! - [`stores`]: pure functions, `spec.stores` -> the stores' StatefulSets, Services, claims, Secrets.
//! - [`status`]: pure functions, observed state -> status and conditions.
//! - [`pods`]: pure functions, pods and their probe events -> why they are not ready.
//! - [`provision`]: the I/O of the stores (Secrets and claims created once, servers applied).
//! - [`validate`]: spec checks the CRD schema cannot express.
//! - [`apply`]: server-side apply without writes at steady state.
//! - [`cache`]: the watches and caches the controller reads and is triggered by.
//! - [`reconcile`]: the controller ([`run_controller`] runs it in-process).
//! - [`leader`]: leader election on a Lease.
//! - [`http`], [`metrics`]: the operator's own health and metrics endpoints.
//! - [`rbac`]: the permissions the controller needs.
//! - [`runtime`]: the operator process (endpoints, leader election, controller, signals).

pub mod api;
pub mod apply;
pub mod builders;
pub mod cache;
pub mod crd;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod network;
pub mod pods;
pub mod provision;
pub mod rbac;
pub mod reconcile;
pub mod recorder;
pub mod runtime;
pub mod status;
pub mod stores;
pub mod validate;

pub use api::{Microservice, MicroserviceSpec, MicroserviceStatus};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use reconcile::{ControllerConfig, run_controller};
