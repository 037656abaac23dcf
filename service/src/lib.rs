//! kea-service: the seed's Flask demo rebuilt as a production-grade axum
//! microservice.
//!
//! - [`routes`]: the HTTP surface (seed routes, data routes, probes, faults);
//! - [`store`]: the service's own relational and NoSQL stores;
//! - [`dependencies`]: calls to other services, with timeouts, retries and circuit breakers;
//! - [`dto`]: the JSON shapes at the boundary; [`error`]: the one error type;
//! - [`config`], [`telemetry`]: configuration, logs and metrics.

pub mod config;
pub mod dependencies;
pub mod dto;
pub mod error;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::dependencies::{Dependencies, DependencyTarget, targets_from_env};
use crate::routes::{App, AppState, Flags, Limits, ServiceState};
use crate::store::{StoreError, Stores};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A store is misconfigured (bad URL, unusable data directory).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The configured address.
        address: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Builds the application: stores opened, dependencies read from the
/// environment. Returns the application (routes behind the edge) and the state shared with it.
pub async fn build(config: &Config) -> Result<(App, AppState), StartupError> {
    build_with_dependencies(config, targets_from_env(std::env::vars())).await
}

/// [`build`] with the dependencies given rather than read from the environment.
pub async fn build_with_dependencies(
    config: &Config,
    targets: Vec<DependencyTarget>,
) -> Result<(App, AppState), StartupError> {
    let stores = Stores::open(config).await?;
    let state = Arc::new(ServiceState {
        stores,
        dependencies: Arc::new(Dependencies::new(
            targets,
            config.dependency_timeout,
            config.circuit_open_for,
        )),
        metrics: Arc::default(),
        flags: Arc::new(Flags::default()),
        root_faults: routes::seed::RootFaults::new(config.fault_error_percent),
        admin_token: config.admin_token.clone().filter(|token| !token.is_empty()),
    });
    state.flags.enabled.store(true, Ordering::Relaxed);
    let limits = Limits {
        request_timeout: config.request_timeout,
        max_concurrency: config.max_concurrency,
    };
    Ok((routes::app(state.clone(), limits), state))
}

/// Serves until SIGTERM or Ctrl-C, then shuts down gracefully (see [`server`]):
/// readiness turns false at once, the service keeps serving for
/// `shutdown_delay` (so the platform stops routing to it), then stops
/// accepting and gives open connections up to `drain_timeout`.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let (app, state) = build(&config).await?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartupError::Listen {
                address: config.listen,
                source,
            })?;
    let options = server::ServerOptions {
        max_connections: config.effective_max_connections(),
        header_timeout: config.header_timeout,
        max_header_bytes: config.max_header_bytes,
        shutdown_delay: config.shutdown_delay,
        drain_timeout: config.drain_timeout,
    };
    tracing::info!(
        address = %config.listen,
        relational = state.stores.relational.backend().name,
        nosql = state.stores.nosql.backend().name,
        max_connections = options.max_connections,
        "kea-service listening"
    );
    server::serve(
        listener,
        app,
        options,
        Arc::clone(&state.flags),
        termination_signal(),
    )
    .await;
    Ok(())
}

async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                tokio::select! {
                    _ = sigterm.recv() => {}
                    _ = ctrl_c => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
