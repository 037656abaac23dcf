//! Operational routes: probes, metrics, version, OpenAPI document and the
//! dependency report.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::dependencies::DependencyReport;
use crate::store::StoreError;

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process serves requests.
    pub status: &'static str,
}

/// Readiness answer: whether the pod should get traffic, and why not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// True when the pod itself can serve: enabled, not draining, and its
    /// embedded stores (if any) answer. A shared store (MySQL, Redis) that is
    /// down does not make the pod unready.
    pub ready: bool,
    /// True when a store shared by every replica is down: its route answers 503
    /// while the rest of the service keeps serving.
    pub degraded: bool,
    /// False after `POST /readyz/disable`.
    pub enabled: bool,
    /// True once SIGTERM arrived: the service finishes its requests and exits.
    pub draining: bool,
    /// `ok`, or why the relational store fails.
    pub relational: String,
    /// `ok`, or why the NoSQL store fails.
    pub nosql: String,
}

/// Liveness: the process serves. Checks no dependency, so a database outage
/// never gets the pod restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: enabled, not draining, and the pod's own embedded stores
/// answer. A shared store that is down is reported (`degraded`, and the
/// `kea_service_store_up` metric) but leaves the pod ready.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let stores = &state.stores;
    let (relational, nosql) = tokio::join!(stores.relational.ping(), stores.nosql.ping());
    state.metrics.store_up(
        "relational",
        stores.relational.backend().name,
        relational.is_ok(),
    );
    state
        .metrics
        .store_up("nosql", stores.nosql.backend().name, nosql.is_ok());
    let enabled = state.flags.enabled.load(Ordering::Relaxed);
    let draining = state.flags.draining.load(Ordering::Relaxed);
    let local_ok = |store: &dyn crate::store::ItemStore, result: &Result<(), StoreError>| {
        store.backend().shared || result.is_ok()
    };
    let ready = enabled
        && !draining
        && local_ok(stores.relational.as_ref(), &relational)
        && local_ok(stores.nosql.as_ref(), &nosql);
    let degraded = (stores.relational.backend().shared && relational.is_err())
        || (stores.nosql.backend().shared && nosql.is_err());
    let describe = |result: Result<(), StoreError>| {
        result.map_or_else(|e| e.to_string(), |()| "ok".to_owned())
    };
    let body = Readiness {
        ready,
        degraded,
        enabled,
        draining,
        relational: describe(relational),
        nosql: describe(nosql),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Marks the service ready again (if its checks pass).
#[utoipa::path(post, path = "/readyz/enable", tag = "operations",
    responses((status = 202, description = "Readiness enabled")))]
pub async fn enable_readiness(State(state): State<AppState>) -> StatusCode {
    state.flags.enabled.store(true, Ordering::Relaxed);
    tracing::info!("readiness enabled by request");
    StatusCode::ACCEPTED
}

/// Marks the service unready, to show how the platform takes it out of rotation.
#[utoipa::path(post, path = "/readyz/disable", tag = "operations",
    responses((status = 202, description = "Readiness disabled")))]
pub async fn disable_readiness(State(state): State<AppState>) -> StatusCode {
    state.flags.enabled.store(false, Ordering::Relaxed);
    tracing::info!("readiness disabled by request");
    StatusCode::ACCEPTED
}

/// Prometheus metrics: requests by route and status, latency histograms.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", body = String,
        content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Name and version of the running build.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    /// The package name.
    pub name: &'static str,
    /// The package version.
    pub version: &'static str,
}

/// The running build.
#[utoipa::path(get, path = "/version", tag = "operations",
    responses((status = 200, body = Version)))]
pub async fn version() -> Json<Version> {
    Json(Version {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The dependency report.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependenciesAnswer {
    /// One report per dependency, by name.
    pub dependencies: Vec<DependencyReport>,
}

/// Calls every dependency (`<NAME>_URL`) and reports on each. Always 200: a
/// failing dependency is reported, never passed on.
#[utoipa::path(get, path = "/api/dependencies", tag = "operations",
    responses((status = 200, body = DependenciesAnswer)))]
pub async fn dependencies(State(state): State<AppState>) -> Json<DependenciesAnswer> {
    Json(DependenciesAnswer {
        dependencies: state.dependencies.check_all().await,
    })
}

/// The OpenAPI document of this service, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::ApiDoc::openapi())
}
