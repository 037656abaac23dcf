//! The service's one error type and its JSON shape on the wire.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use std::time::Duration;

use crate::store::StoreError;
use crate::telemetry::LogThrottle;

/// Every error a handler can return. Each maps to one HTTP status and a JSON
/// body that says what went wrong and, for client errors, what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a wrong type, an invalid parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but its content fails validation.
    #[error("{0}")]
    Invalid(String),
    /// The body is not JSON (wrong or missing Content-Type).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body exceeds the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request target (path and query) is longer than the limit.
    #[error("the URI is {length} bytes long; the limit is {limit}: shorten the path and query")]
    UriTooLong { length: usize, limit: usize },
    /// The admin route needs the service's token (`Authorization: Bearer`).
    #[error("this route needs the service's admin token as `Authorization: Bearer TOKEN`")]
    Unauthorized,
    /// The request cannot be served in the resource's current state.
    #[error("{0}")]
    Conflict(String),
    /// No route matches the path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A backing store cannot serve the request right now.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The service is at its concurrency limit and sheds the request.
    #[error("the service is overloaded, retry later")]
    Overloaded,
    /// The request took longer than the configured timeout.
    #[error("the request did not finish within {0:?}")]
    Timeout(std::time::Duration),
    /// A bug: the service failed in a way it did not expect.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error details.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `invalid_body` or `store_unavailable`.
    pub code: &'static str,
    /// What went wrong and, where the client can act on it, what to fix.
    pub message: String,
}

impl ApiError {
    /// The HTTP status and stable error code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl ApiError {
    fn log_throttle(&self) -> &'static LogThrottle {
        static OVERLOADED: LogThrottle = LogThrottle::new(Duration::from_secs(1));
        static TIMEOUT: LogThrottle = LogThrottle::new(Duration::from_secs(1));
        static STORE: LogThrottle = LogThrottle::new(Duration::from_secs(1));
        static OTHER: LogThrottle = LogThrottle::new(Duration::from_secs(1));
        match self {
            Self::Overloaded => &OVERLOADED,
            Self::Timeout(_) => &TIMEOUT,
            Self::Store(_) => &STORE,
            _ => &OTHER,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error()
            && let Some(held_back) = self.log_throttle().admit()
        {
            // Under overload or an outage every request fails alike: one line
            // per second and kind says so, with the number of lines held back.
            tracing::warn!(error = %self, code, held_back, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}
