//! The kea operator: reconciles `Microservice` custom resources (`kea.dev/v1alpha1`) into
//! Deployments, Services, PodDisruptionBudgets, HorizontalPodAutoscalers, NetworkPolicies and
//! the stores of each Microservice. This crate is the controller and the process that runs it;
//! the `kea-operator` command and what it prints (CRD, RBAC, rendered children, diagrams) are
//! the `kea-cli` crate, and what the operator and the service agree on is `kea-contract`.
//!
//! The folders are the pipeline, and each imports only from those before it:
//!
//! 1. [`api`]: the custom resource (types, conditions, reasons), its CRD and the checks the
//!    CRD's schema cannot express.
//! 2. [`children`]: pure functions, Microservice -> the objects the operator owns
//!    ([`children::meta`] the names, labels and security shared by all of them).
//! 3. [`status`]: pure functions, what the cluster shows -> status and conditions
//!    ([`status::pods`] why pods are not ready).
//! 4. [`controller`]: the I/O: caches and watches, server-side apply, the stores'
//!    provisioning, events, and the reconcile that runs them ([`run_controller`]).
//! 5. [`runtime`]: the operator as a process: leader election, health and metrics endpoints,
//!    signals.
//!
//! [`error`] is shared by all of them.

pub mod api;
pub mod children;
pub mod controller;
pub mod error;
pub mod runtime;
pub mod status;

pub use api::{Microservice, MicroserviceSpec, MicroserviceStatus};
pub use controller::metrics::Metrics;
pub use controller::{ControllerConfig, run_controller};
pub use error::{Error, Result};
