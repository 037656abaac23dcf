//! Helpers shared by the service's integration tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kea_service::config::Config;
use tower::ServiceExt;

/// The response of one request: status, content type and body text.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `error.code` of a JSON error answer.
    pub fn error_code(&self) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "error answers are JSON, got {:?}: {}",
            self.content_type,
            self.text
        );
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Sends one request through the router, with no network.
pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        content_type,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn post_json(app: &Router, uri: &str, body: &str) -> Answer {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    send(app, request).await
}

/// The service with embedded stores in a fresh temporary directory.
pub async fn embedded_app() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = kea_service::build_with_dependencies(&Config::with_data_dir(dir.path()), vec![])
        .await
        .unwrap();
    (app, dir)
}

/// A real backing server's URL from the environment (set by
/// `hack/backing-services.sh env`). Without it the test is skipped, unless
/// `KEA_REQUIRE_BACKENDS=1` (as in `hack/test.sh`), where a missing server fails.
pub fn backend_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("KEA_REQUIRE_BACKENDS").as_deref() == Ok("1") => {
            panic!("{variable} is not set: start the servers with hack/backing-services.sh start")
        }
        _ => {
            eprintln!(
                "SKIPPED: {variable} is not set (hack/backing-services.sh start && eval \"$(hack/backing-services.sh env)\")"
            );
            None
        }
    }
}
