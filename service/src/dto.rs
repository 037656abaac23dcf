//! Data transfer objects: the typed, validated shapes of every JSON body that
//! crosses the service boundary. Stores map their own records to these.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Longest accepted item name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Items returned by a list when the client asks for no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Most items one list returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// A stored item, as returned by `GET` and `POST` on the data routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Item {
    /// Identifier assigned by the store, increasing with each new item.
    pub id: u64,
    /// The item's name.
    pub name: String,
    /// When the item was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /mysqldata` and `POST /nosqldata`: a JSON object, never
/// an array (serde's derive would accept `["name"]` for a struct).
#[derive(Debug, Clone, ToSchema)]
pub struct NewItem {
    /// 1 to 200 characters, no control characters; surrounding spaces are trimmed.
    pub name: String,
}

impl<'de> Deserialize<'de> for NewItem {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            name: String,
        }
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = NewItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a JSON object such as {"name": "coffee"}"#)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<NewItem, A::Error> {
                let fields =
                    Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(NewItem { name: fields.name })
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

impl NewItem {
    /// Checks the item and returns it normalised (name trimmed), or says what to fix.
    pub fn validated(self) -> Result<Self, ApiError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(ApiError::Invalid(
                "`name` must not be empty: give the item a name".into(),
            ));
        }
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(ApiError::Invalid(format!(
                "`name` is {chars} characters long; the limit is {MAX_NAME_CHARS}"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(ApiError::Invalid(
                "`name` must not contain control characters (newlines, tabs, ...)".into(),
            ));
        }
        Ok(Self { name: name.into() })
    }
}

/// The answer of `GET /mysqldata` and `GET /nosqldata`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemList {
    /// Which backend served the list: `mysql`, `sqlite`, `redis` or `redb`.
    pub store: String,
    /// The items, oldest first.
    pub items: Vec<Item>,
}

/// Query parameters of the list routes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// How many items to return (1 to 1000, default 100).
    pub limit: Option<u32>,
}

impl ListParams {
    /// The limit to apply, or an error saying which values are accepted.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIST_LIMIT),
            Some(limit @ 1..=MAX_LIST_LIMIT) => Ok(limit),
            Some(other) => Err(ApiError::BadRequest(format!(
                "`limit` must be between 1 and {MAX_LIST_LIMIT}, got {other}"
            ))),
        }
    }
}

/// A JSON body extractor whose rejections are the service's JSON errors
/// rather than axum's plain-text ones.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::Invalid(format!(
            "the JSON body does not have the expected shape: {}",
            e.body_text()
        )),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ),
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::PayloadTooLarge {
                limit: crate::config::MAX_BODY_BYTES,
            }
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// A query-string extractor with JSON errors.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
            })
    }
}
