//! Admin routes, served only when the service has a token ([`kea_contract::env::ADMIN_TOKEN`]):
//! `GET /admin/backup/{store}` streams a consistent copy of an embedded store, for the
//! operator's backup Jobs. Only a caller with the token gets it: the data is the service's
//! own, and no other service reads it.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;

use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::store::ItemStore;

/// Size of the chunks the copy is streamed in.
const CHUNK_BYTES: usize = 64 * 1024;

/// A consistent copy of the embedded store `store` (`sql`: the SQLite file, `nosql`: the
/// redb file), with its length, so a cut transfer shows.
#[utoipa::path(get, path = "/admin/backup/{store}", tag = "operations",
    params(("store" = String, Path, description = "`sql` or `nosql`")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The database file", content_type = "application/octet-stream"),
        (status = 400, description = "Neither `sql` nor `nosql`", body = ErrorBody),
        (status = 401, description = "No token, or not the service's", body = ErrorBody),
        (status = 404, description = "The service has no admin token", body = ErrorBody),
        (status = 409, description = "The store is a server, backed up from there", body = ErrorBody)))]
pub async fn backup(
    State(state): State<AppState>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::NotFound(super::paths::BACKUP.to_owned()));
    };
    authorize(&headers, token)?;
    let store: &dyn ItemStore = match store.as_str() {
        "sql" => state.stores.relational.as_ref(),
        "nosql" => state.stores.nosql.as_ref(),
        _ => {
            return Err(ApiError::BadRequest(
                "the store is `sql` or `nosql`: /admin/backup/sql or /admin/backup/nosql".into(),
            ));
        }
    };
    let Some(file) = store.snapshot().await? else {
        return Err(ApiError::Conflict(format!(
            "the {} store is a server: back it up from the server, not through the service",
            store.backend().name
        )));
    };
    let length = file
        .metadata()
        .map_err(|e| ApiError::Internal(format!("the snapshot cannot be read: {e}")))?
        .len();
    let file = tokio::fs::File::from_std(file);
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        match (&mut file)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut chunk)
            .await
        {
            Ok(0) => None,
            Ok(_) => Some((Ok::<_, std::io::Error>(chunk), file)),
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Accepts `Authorization: Bearer TOKEN` with the service's token, compared in constant time.
fn authorize(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
