//! Data transfer objects: the typed, validated shapes of every JSON body that
//! crosses the service boundary. Stores map their own records to these.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query};
use chrono::{DateTime, Utc};
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
    /// Up to 200 characters with at least one visible one; no control,
    /// invisible (zero-width, bidirectional-control, byte-order mark), line
    /// separator or private-use characters (zero-width joiners only between
    /// visible characters). Surrounding spaces are trimmed.
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
        // The rules are those of the OpenAPI document (`maxLength` and
        // [`name_pattern`]), checked on the name as sent; then it is trimmed.
        let chars: Vec<char> = self.name.chars().collect();
        if chars.len() > MAX_NAME_CHARS {
            return Err(ApiError::Invalid(format!(
                "`name` is {} characters long; the limit is {MAX_NAME_CHARS}",
                chars.len()
            )));
        }
        if chars.iter().any(|c| c.is_control()) {
            return Err(ApiError::Invalid(
                "`name` must not contain control characters (newlines, tabs, ...)".into(),
            ));
        }
        for (i, &c) in chars.iter().enumerate() {
            let joins_visible = || {
                // Zero-width (non-)joiners are part of emoji and of some scripts'
                // spelling; they are accepted between two visible characters.
                in_ranges(c, JOINERS)
                    && i > 0
                    && is_visible(chars[i - 1])
                    && chars.get(i + 1).is_some_and(|next| is_visible(*next))
            };
            if (in_ranges(c, FORBIDDEN) || in_ranges(c, JOINERS)) && !joins_visible() {
                return Err(ApiError::Invalid(format!(
                    "`name` must not contain the invisible, bidirectional-control or separator character U+{:04X}",
                    u32::from(c)
                )));
            }
        }
        if !chars.iter().any(|c| is_visible(*c)) {
            return Err(ApiError::Invalid(
                "`name` must contain a visible character: give the item a name".into(),
            ));
        }
        Ok(Self {
            name: self.name.trim().into(),
        })
    }
}

/// Inclusive ranges of code points.
type Ranges = &'static [(u32, u32)];

/// Control characters (C0, DEL, C1).
const CONTROLS: Ranges = &[(0x00, 0x1F), (0x7F, 0x9F)];
/// Zero-width non-joiner and joiner: allowed only between visible characters.
const JOINERS: Ranges = &[(0x200C, 0x200D)];
/// Characters a name may not hold: Unicode format characters (zero-width
/// characters, bidirectional controls, the byte-order mark, tag characters),
/// line and paragraph separators, private-use characters and
/// noncharacters.
const FORBIDDEN: Ranges = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200B),
    (0x200E, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xE000, 0xF8FF),
    (0xFDD0, 0xFDEF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xFFFE, 0xFFFF),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0x1FFFE, 0x1FFFF),
    (0x2FFFE, 0x2FFFF),
    (0x3FFFE, 0x3FFFF),
    (0x4FFFE, 0x4FFFF),
    (0x5FFFE, 0x5FFFF),
    (0x6FFFE, 0x6FFFF),
    (0x7FFFE, 0x7FFFF),
    (0x8FFFE, 0x8FFFF),
    (0x9FFFE, 0x9FFFF),
    (0xAFFFE, 0xAFFFF),
    (0xBFFFE, 0xBFFFF),
    (0xCFFFE, 0xCFFFF),
    (0xDFFFE, 0xDFFFF),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
    (0xEFFFE, 0xEFFFF),
    (0xF0000, 0x10FFFF),
];
/// Allowed but not visible: white space (that is not a control) and the
/// characters that render as nothing (fillers, variation selectors, the
/// combining grapheme joiner, Mongolian free variation selectors).
const BLANK: Ranges = &[
    (0x0020, 0x0020),
    (0x00A0, 0x00A0),
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x1680, 0x1680),
    (0x17B4, 0x17B5),
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0x2000, 0x200A),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x2800, 0x2800),
    (0x3000, 0x3000),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
];

fn in_ranges(c: char, ranges: Ranges) -> bool {
    let c = u32::from(c);
    ranges.iter().any(|&(low, high)| (low..=high).contains(&c))
}

/// A character that shows something.
fn is_visible(c: char) -> bool {
    ![CONTROLS, JOINERS, FORBIDDEN, BLANK]
        .iter()
        .any(|ranges| in_ranges(c, ranges))
}

/// The rule of [`NewItem::validated`] (except the length) as a regular
/// expression, for the OpenAPI document: blank characters anywhere, at least
/// one visible character, a joiner only between two visible ones.
pub fn name_pattern() -> String {
    fn class(negated: bool, sets: &[Ranges]) -> String {
        let mut class = String::from(if negated { "[^" } else { "[" });
        for &(low, high) in sets.iter().flat_map(|ranges| ranges.iter()) {
            class.push_str(&code_point(low));
            if high != low {
                class.push('-');
                class.push_str(&code_point(high));
            }
        }
        class.push(']');
        class
    }
    // BMP code points as `\uXXXX`; others as themselves (a `\u` escape
    // cannot name them in every regex dialect).
    fn code_point(c: u32) -> String {
        match char::from_u32(c) {
            Some(c) if u32::from(c) > 0xFFFF => c.to_string(),
            _ => format!("\\u{c:04X}"),
        }
    }
    let visible = class(true, &[CONTROLS, JOINERS, FORBIDDEN, BLANK]);
    let blank = class(false, &[BLANK]);
    let joiner = class(false, &[JOINERS]);
    format!("^{blank}*(?:{visible}(?:{joiner}{visible})*{blank}*)+$")
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// How many items to return (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only items with a lower id: the `next_before` of the previous page.
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    pub before: Option<u64>,
}

impl ListParams {
    /// The cursor to apply, or an error saying which values are accepted.
    pub fn before(&self) -> Result<Option<u64>, ApiError> {
        match self.before {
            Some(0) | Some(9_223_372_036_854_775_808..) => Err(ApiError::BadRequest(
                "`before` must be an item id (1 to 2^63-1): use `next_before` of the previous page"
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
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
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
}

/// A query-string extractor with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}
