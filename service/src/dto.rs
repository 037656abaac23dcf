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
    /// 1 to 200 characters with at least one visible one; no control,
    /// invisible (zero-width, bidirectional-control, byte-order mark), line
    /// separator or private-use characters. Surrounding spaces are trimmed.
    #[schema(min_length = 1, max_length = 200)]
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
        let chars: Vec<char> = name.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let joins_visible = || {
                // Zero-width (non-)joiners are part of emoji and of some scripts'
                // spelling; they are accepted between two visible characters.
                matches!(c, '\u{200C}' | '\u{200D}')
                    && i > 0
                    && chars.get(i + 1).is_some_and(|next| is_visible(*next))
                    && is_visible(chars[i - 1])
            };
            if is_forbidden(c) && !joins_visible() {
                return Err(ApiError::Invalid(format!(
                    "`name` must not contain the invisible, bidirectional-control or separator character U+{:04X}",
                    u32::from(c)
                )));
            }
        }
        if !chars.iter().any(|c| is_visible(*c)) {
            return Err(ApiError::Invalid(
                "`name` must contain a visible character".into(),
            ));
        }
        Ok(Self { name: name.into() })
    }
}

/// Characters a name may not hold: Unicode format characters (zero-width
/// characters, bidirectional controls, the byte-order mark, tag characters),
/// line and paragraph separators, private-use characters and noncharacters.
fn is_forbidden(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{0890}'..='\u{0891}' | '\u{08E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}' | '\u{E0020}'..='\u{E007F}'
        | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{10FFFF}'
        | '\u{FDD0}'..='\u{FDEF}')
        || (u32::from(c) & 0xFFFE) == 0xFFFE
}

/// Characters that show something: not whitespace, not forbidden, and not one
/// of the characters that render as nothing (fillers, variation selectors,
/// combining grapheme joiner).
fn is_visible(c: char) -> bool {
    !c.is_whitespace()
        && !is_forbidden(c)
        && !matches!(c,
            '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{2800}'
            | '\u{3164}' | '\u{FFA0}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'
            | '\u{180B}'..='\u{180D}' | '\u{180F}')
}

/// The answer of `GET /mysqldata` and `GET /nosqldata`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemList {
    /// Which backend served the list: `mysql`, `sqlite`, `redis` or `redb`.
    pub store: String,
    /// The items, newest first.
    pub items: Vec<Item>,
    /// When more items may follow: pass it as `before` to get the next page.
    pub next_before: Option<u64>,
}

/// Query parameters of the list routes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// How many items to return (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only items with a lower id: the `next_before` of the previous page.
    #[param(minimum = 1)]
    pub before: Option<u64>,
}

impl ListParams {
    /// The cursor to apply, or an error saying which values are accepted.
    pub fn before(&self) -> Result<Option<u64>, ApiError> {
        match self.before {
            Some(0) => Err(ApiError::BadRequest(
                "`before` must be an item id (1 or more): use `next_before` of the previous page"
                    .into(),
            )),
            other => Ok(other),
        }
    }

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
