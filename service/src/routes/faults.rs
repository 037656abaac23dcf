//! Fault demos that make "let it fail" visible: answer with any status, or
//! answer late.

use std::time::Duration;

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};

/// Longest delay `/delay/{ms}` accepts, below the default request timeout.
pub const MAX_DELAY_MS: u64 = 10_000;

/// The body of the fault demos' answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct FaultAnswer {
    /// The status sent.
    pub status: u16,
    /// The delay applied, in milliseconds.
    pub delay_ms: u64,
}

/// Answers with the given HTTP status (200 to 599).
#[utoipa::path(get, path = "/status/{code}", tag = "faults",
    params(("code" = u16, Path, minimum = 200, maximum = 599,
        description = "HTTP status to answer with, 200 to 599")),
    responses((status = 200, body = FaultAnswer),
        (status = 204, description = "No content, as asked"),
        (status = 205, description = "Reset content, as asked"),
        (status = 304, description = "Not modified, as asked"),
        (status = 400, description = "Not a status between 200 and 599", body = ErrorBody),
        (status = "default", description = "The status asked for", body = FaultAnswer)))]
pub async fn status(code: Result<Path<u16>, PathRejection>) -> Result<Response, ApiError> {
    let code = path_number(code, "code", "a status between 200 and 599")?;
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("`{code}` is not a status between 200 and 599"))
        })?;
    // These statuses never carry a body.
    if matches!(code, 204 | 205 | 304) {
        return Ok(status.into_response());
    }
    Ok((
        status,
        Json(FaultAnswer {
            status: code,
            delay_ms: 0,
        }),
    )
        .into_response())
}

/// Answers after the given number of milliseconds (at most 10 000).
#[utoipa::path(get, path = "/delay/{ms}", tag = "faults",
    params(("ms" = u64, Path, minimum = 0, maximum = 10000,
        description = "Delay in milliseconds, 0 to 10000")),
    responses((status = 200, body = FaultAnswer), (status = 400, body = ErrorBody)))]
pub async fn delay(ms: Result<Path<u64>, PathRejection>) -> Result<Json<FaultAnswer>, ApiError> {
    let ms = path_number(ms, "ms", "a number of milliseconds")?;
    if ms > MAX_DELAY_MS {
        return Err(ApiError::BadRequest(format!(
            "a delay of {ms} ms is over the limit of {MAX_DELAY_MS} ms"
        )));
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(FaultAnswer {
        status: 200,
        delay_ms: ms,
    }))
}

/// Turns a path rejection into a JSON 400 that names the parameter, without
/// echoing an arbitrarily long input back.
fn path_number<T>(
    value: Result<Path<T>, PathRejection>,
    name: &str,
    expected: &str,
) -> Result<T, ApiError> {
    value
        .map(|Path(v)| v)
        .map_err(|_| ApiError::BadRequest(format!("`{name}` must be {expected}")))
}
