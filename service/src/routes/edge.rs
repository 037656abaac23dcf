//! The edge of the service: what every request passes before and after its
//! route, as one service wrapped once around the whole router. (Layers given
//! to `Router::layer` are copied into each route and each costs a clone and
//! an allocation per request; here a request costs one boxed future.)
//!
//! In order, for every request:
//! - counted and timed by its route template ([`Metrics::track`]), whatever answers it;
//! - a request target over [`MAX_URI_BYTES`] is answered 414 before any route parses it;
//! - at the concurrency limit, the request is shed with a 503 at once rather than queued:
//!   one limit for the whole service, not one per route;
//! - the route runs under the request timeout (503 when it passes) and a panic in it is
//!   answered 500 instead of dropping the connection;
//! - once draining, every answer carries `Connection: close`, so clients with keep-alive
//!   connections reconnect, through the Service, to another pod.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::Service;

use super::{Flags, Limits, paths};
use crate::config::MAX_URI_BYTES;
use crate::error::ApiError;
use crate::telemetry::Metrics;

/// The whole HTTP application: the router behind the edge. Cloned per
/// connection and per request, so it is two reference counts.
#[derive(Clone)]
pub struct App {
    router: Router,
    edge: Arc<Edge>,
}

struct Edge {
    metrics: Arc<Metrics>,
    flags: Arc<Flags>,
    /// One permit per request being answered: the service-wide concurrency limit.
    permits: Semaphore,
    request_timeout: Duration,
}

impl App {
    pub(super) fn new(
        router: Router,
        metrics: Arc<Metrics>,
        flags: Arc<Flags>,
        limits: Limits,
    ) -> Self {
        Self {
            router,
            edge: Arc::new(Edge {
                metrics,
                flags,
                permits: Semaphore::new(limits.max_concurrency.clamp(1, Semaphore::MAX_PERMITS)),
                request_timeout: limits.request_timeout,
            }),
        }
    }
}

impl<B> Service<axum::http::Request<B>> for App
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Never back-pressures: a request over the limit is shed in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        let edge = Arc::clone(&self.edge);
        let router = self.router.clone();
        Box::pin(async move { Ok(edge.answer(router, request).await) })
    }
}

impl Edge {
    async fn answer(&self, router: Router, request: Request) -> Response {
        let route = paths::index_of(request.uri().path());
        let tracked = self.metrics.track(request.method(), route);
        let mut response = self.admit_and_route(router, request).await;
        tracked.finish(response.status().as_u16());
        if self.flags.draining.load(Ordering::Relaxed) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    async fn admit_and_route(&self, mut router: Router, request: Request) -> Response {
        let length = request
            .uri()
            .path_and_query()
            .map_or(0, |target| target.as_str().len());
        if length > MAX_URI_BYTES {
            return ApiError::UriTooLong {
                length,
                limit: MAX_URI_BYTES,
            }
            .into_response();
        }
        let Ok(_permit) = self.permits.try_acquire() else {
            return ApiError::Overloaded.into_response();
        };
        // `Router` is always ready, so it can be called without `poll_ready`.
        let routed = AssertUnwindSafe(router.call(request)).catch_unwind();
        match tokio::time::timeout(self.request_timeout, routed).await {
            Ok(Ok(Ok(response))) => response,
            Ok(Ok(Err(infallible))) => match infallible {},
            Ok(Err(_panic)) => {
                ApiError::Internal("the request handler failed".into()).into_response()
            }
            Err(_elapsed) => ApiError::Timeout(self.request_timeout).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app(router: Router, request_timeout: Duration) -> (App, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let limits = Limits {
            request_timeout,
            max_concurrency: 4,
        };
        let app = App::new(
            router,
            Arc::clone(&metrics),
            Arc::new(Flags::default()),
            limits,
        );
        (app, metrics)
    }

    async fn status_and_code(app: &App, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path).body(Body::empty());
        let response = app
            .clone()
            .oneshot(request.unwrap_or_default())
            .await
            .unwrap_or_else(|infallible| match infallible {});
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        (
            status,
            json["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    }

    #[tokio::test]
    async fn a_panicking_route_is_answered_500_and_counted() {
        let router = Router::new().route(
            paths::VERSION,
            get(|| async {
                if true {
                    panic!("a bug in a handler");
                }
                ""
            }),
        );
        let (app, metrics) = app(router, Duration::from_secs(5));
        assert_eq!(
            status_and_code(&app, "/version").await,
            (StatusCode::INTERNAL_SERVER_ERROR, "internal".into())
        );
        let text = metrics.render();
        assert!(
            text.contains(r#"route="/version",status="500"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_route_slower_than_the_request_timeout_is_answered_503() {
        let router = Router::new().route(
            paths::VERSION,
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                ""
            }),
        );
        let (app, _) = app(router, Duration::from_millis(50));
        let started = std::time::Instant::now();
        assert_eq!(
            status_and_code(&app, "/version").await,
            (StatusCode::SERVICE_UNAVAILABLE, "timeout".into())
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn paths_are_labelled_by_the_template_they_match() {
        let cases = [
            ("/", Some(paths::ROOT)),
            ("/mysqldata", Some(paths::MYSQLDATA)),
            ("/status/418", Some(paths::STATUS)),
            ("/delay/%31", Some(paths::DELAY)),
            ("/status/", None),
            ("/status/418/x", None),
            ("/status", None),
            ("//", None),
            ("/mysqldata/", None),
            ("/nowhere", None),
            ("", None),
        ];
        for (path, template) in cases {
            assert_eq!(
                paths::index_of(path).map(|index| paths::ALL[index]),
                template,
                "{path}"
            );
        }
    }
}
