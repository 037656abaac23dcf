//! The operator's own HTTP surface, on its own port: `/healthz` (the process runs),
//! `/readyz` (the CRD check passed and, with leader election, the candidate is up) and
//! `/metrics` (Prometheus text format); and [`probe`], the client side of them that the
//! chart's `helm test` pod runs (the operator image has no other HTTP client).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

/// What the handlers read.
pub struct HttpState {
    /// The metrics to serve.
    pub registry: Registry,
    /// Set once the operator is initialized.
    pub ready: AtomicBool,
}

impl HttpState {
    /// A state serving `registry`, not yet ready.
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            registry,
            ready: AtomicBool::new(false),
        })
    }

    /// Marks the operator ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// The router of the HTTP surface.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves [`router`] on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// GETs `url` (plain `http://host:port/path`) and returns the status code; fails when no
/// answer comes within `timeout`.
pub async fn probe(url: &str, timeout: std::time::Duration) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let invalid = || Error::InvalidObject(format!("{url}: expected http://HOST:PORT/PATH"));
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(invalid());
    }
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        let request =
            format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        // The status line is all that is needed; 64 KiB bounds what is read.
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            Error::Io(std::io::Error::other(format!(
                "{url}: no answer within {timeout:?}"
            )))
        })??;
    let status_line = String::from_utf8_lossy(&answer);
    status_line
        .lines()
        .next()
        .and_then(|line| {
            line.strip_prefix("HTTP/1.1 ")
                .or_else(|| line.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::Io(std::io::Error::other(format!("{url}: not an HTTP answer"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(state: Arc<HttpState>, path: &str) -> (StatusCode, String) {
        let response = router(state)
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let metrics = crate::Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.reconciles.inc();
        let state = HttpState::new(registry);

        assert_eq!(get(state.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(state.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.set_ready(true);
        assert_eq!(get(state.clone(), "/readyz").await.0, StatusCode::OK);
        let (status, body) = get(state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("kea_operator_reconciles_total 1"), "{body}");
        assert!(
            body.contains("kea_operator_reconcile_duration_seconds"),
            "{body}"
        );
    }
}
