//! One pagination scheme for every list route: `?limit=` (default [`DEFAULT_LIMIT`], at most
//! [`MAX_LIMIT`]; anything else is a 400) and an opaque `?cursor=` that the previous page
//! returned as `next_cursor`. A cursor is the sort key of a page's last item, as base64url
//! JSON: clients must not build one, and the key's shape may change per route.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ApiError, ApiResult};

/// Items per page when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 100;
/// Most items a page may ask for.
pub const MAX_LIMIT: i64 = 1000;

/// A page size within `1..=MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(i64);

impl Limit {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self(DEFAULT_LIMIT)
    }
}

impl utoipa::PartialSchema for Limit {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(1))
            .maximum(Some(MAX_LIMIT))
            .default(Some(DEFAULT_LIMIT.into()))
            .description(Some("Items per page"))
            .into()
    }
}

impl utoipa::ToSchema for Limit {}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d).map_err(|_| {
            D::Error::custom(format!(
                "`limit` must be a whole number from 1 to {MAX_LIMIT}"
            ))
        })?;
        if (1..=MAX_LIMIT).contains(&n) {
            Ok(Self(n))
        } else {
            Err(D::Error::custom(format!(
                "`limit` must be between 1 and {MAX_LIMIT}"
            )))
        }
    }
}

/// An opaque page cursor: a previous page's `next_cursor`, copied as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// The cursor as issued, for a client to send back as `?cursor=`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn encode<K: Serialize>(key: &K) -> Self {
        Self(URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("cursor keys serialize")))
    }

    /// The sort key it carries; a 400 when it is not a cursor of this route.
    pub fn decode<K: DeserializeOwned>(&self) -> ApiResult<K> {
        URL_SAFE_NO_PAD
            .decode(&self.0)
            .ok()
            .filter(|bytes| !crate::edge::json_has_nul(bytes))
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| ApiError::BadRequest("`cursor` is not a cursor this API issued".into()))
    }
}

/// A `since` query parameter: an RFC 3339 time, or a 400 that shows one.
pub fn since(value: Option<&str>) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    value
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::BadRequest(
                        "`since` must be an RFC 3339 time, e.g. 2026-11-27T10:00:00Z".into(),
                    )
                })
        })
        .transpose()
}

/// Decodes an optional cursor.
pub fn after<K: DeserializeOwned>(cursor: Option<&Cursor>) -> ApiResult<Option<K>> {
    cursor.map(Cursor::decode).transpose()
}

/// `{items, next_cursor}`: a full page carries the cursor of its last item; a shorter page is
/// the last one. `Deserialize` is for clients (the tests read pages as this type).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// The next page's cursor; `null` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    pub fn new<K: Serialize>(items: Vec<T>, limit: Limit, key: impl Fn(&T) -> K) -> Self {
        let next_cursor = (items.len() as i64 == limit.get())
            .then(|| items.last().map(|item| Cursor::encode(&key(item))))
            .flatten();
        Self { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Query {
        limit: Option<Limit>,
    }

    fn limit(query: &str) -> Result<Option<Limit>, String> {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        axum::extract::Query::<Query>::try_from_uri(&uri)
            .map(|q| q.0.limit)
            .map_err(|e| e.body_text())
    }

    #[test]
    fn limits_outside_the_rule_are_refused() {
        assert_eq!(limit(""), Ok(None));
        assert_eq!(limit("limit=1000"), Ok(Some(Limit(1000))));
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten", "limit="] {
            let err = limit(bad).unwrap_err();
            assert!(err.contains("`limit`"), "{bad}: {err}");
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let cursor = Cursor::encode(&("a", 7));
        assert_eq!(cursor.decode::<(String, i32)>().unwrap(), ("a".into(), 7));
        assert!(
            Cursor("not a cursor".into())
                .decode::<(String, i32)>()
                .is_err()
        );
    }
}
