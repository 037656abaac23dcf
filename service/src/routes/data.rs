//! The data routes: `/mysqldata` (relational store) and `/nosqldata` (NoSQL
//! store). `GET` lists items, `POST` creates one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use crate::dto::{Item, ItemList, JsonBody, ListParams, NewItem, QueryParams};
use crate::error::{ApiError, ErrorBody};
use crate::store::{ItemStore, StoreError};

async fn list(
    state: &AppState,
    label: &'static str,
    store: &dyn ItemStore,
    params: &ListParams,
) -> Result<Json<ItemList>, ApiError> {
    let limit = params.limit()?;
    // One more than asked says whether a next page exists.
    let mut items = observed(
        state,
        label,
        store,
        store.list(limit + 1, params.before()?).await,
    )?;
    let next_before = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|item| item.id)
    } else {
        None
    };
    Ok(Json(ItemList {
        store: store.backend().name.to_owned(),
        items,
        next_before,
    }))
}

async fn create(
    state: &AppState,
    label: &'static str,
    store: &dyn ItemStore,
    item: NewItem,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    let item = item.validated()?;
    let item = observed(state, label, store, store.create(item).await)?;
    Ok((StatusCode::CREATED, Json(item)))
}

/// Records in the metrics whether the store answered.
fn observed<T>(
    state: &AppState,
    label: &'static str,
    store: &dyn ItemStore,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    state
        .metrics
        .store_up(label, store.backend().name, result.is_ok());
    result
}

/// Items of the relational store (MySQL, or SQLite when none is configured).
#[utoipa::path(get, path = "/mysqldata", tag = "data", params(ListParams),
    responses((status = 200, body = ItemList), (status = 400, body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn list_relational(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ItemList>, ApiError> {
    list(
        &state,
        "relational",
        state.stores.relational.as_ref(),
        &params,
    )
    .await
}

/// Creates an item in the relational store.
#[utoipa::path(post, path = "/mysqldata", tag = "data", request_body = NewItem,
    responses((status = 201, body = Item), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_relational(
    State(state): State<AppState>,
    JsonBody(item): JsonBody<NewItem>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    create(&state, "relational", state.stores.relational.as_ref(), item).await
}

/// Items of the NoSQL store (Redis, or redb when none is configured).
#[utoipa::path(get, path = "/nosqldata", tag = "data", params(ListParams),
    responses((status = 200, body = ItemList), (status = 400, body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn list_nosql(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ItemList>, ApiError> {
    list(&state, "nosql", state.stores.nosql.as_ref(), &params).await
}

/// Creates an item in the NoSQL store.
#[utoipa::path(post, path = "/nosqldata", tag = "data", request_body = NewItem,
    responses((status = 201, body = Item), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_nosql(
    State(state): State<AppState>,
    JsonBody(item): JsonBody<NewItem>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    create(&state, "nosql", state.stores.nosql.as_ref(), item).await
}
