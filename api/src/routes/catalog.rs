//! Catalog reads: what the last syncs stored for a resource, its change history, and search
//! across the caller's tenant. Every read answers with an `ETag` (a hash of the body) and
//! `304 Not Modified` when `If-None-Match` already holds it.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use metasync_shared::db::catalog::{self, TableFilter};
use metasync_shared::db::resources;
use metasync_shared::ids::{ResourceId, TableId, TenantId};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/resources/{id}/tables", get(list_tables))
        .route("/v1/resources/{id}/schemas", get(list_schemas))
        .route("/v1/resources/{id}/changes", get(list_changes))
        .route("/v1/tables/{id}", get(read_table))
        .route("/v1/search", get(search))
}

/// Cursors are opaque to clients: base64url of the JSON keyset position (the sort key of the
/// last item of the previous page).
fn encode_cursor(key: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("cursor keys serialize"))
}

fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> ApiResult<T> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::BadRequest("`cursor` is not a cursor this API issued".into()))
}

/// `{items, next_cursor}`, where a full page carries the cursor of its last item.
fn page<T: Serialize, K: Serialize>(
    headers: &HeaderMap,
    items: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> Response {
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|item| encode_cursor(&key(item))))
        .flatten();
    conditional(
        headers,
        &json!({ "items": items, "next_cursor": next_cursor }),
    )
}

/// A JSON `200` with a strong `ETag` over its bytes, or a bodiless `304` when the client's
/// `If-None-Match` already names it. Hashing the body makes the tag exact for every read
/// (listings, filters, pages, search) with no version bookkeeping; the catalog only changes
/// when a sync writes something, so an unchanged catalog keeps its tags.
fn conditional(headers: &HeaderMap, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("responses serialize");
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&bytes)[..16]));
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        bytes,
    )
        .into_response()
}

fn page_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(100).clamp(1, 1000)
}

/// 404 unless the resource exists in the caller's tenant.
async fn check_resource(state: &AppState, tenant: &Tenant, id: Uuid) -> ApiResult<()> {
    resources::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct TablesQuery {
    schema: Option<String>,
    kind: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list_tables(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<TablesQuery>,
) -> ApiResult<Response> {
    check_resource(&state, &tenant, id).await?;
    let limit = page_limit(query.limit);
    let filter = TableFilter {
        schema: query.schema,
        kind: query.kind,
        q: query.q,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let items = catalog::list_tables(
        &state.db,
        &TenantId::new(tenant.id()),
        ResourceId::from(id),
        &filter,
    )
    .await?;
    Ok(page(&headers, items, limit, |t| {
        (t.database.clone(), t.schema.clone(), t.name.clone())
    }))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list_schemas(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<PageQuery>,
) -> ApiResult<Response> {
    check_resource(&state, &tenant, id).await?;
    let limit = page_limit(query.limit);
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let items = catalog::list_schemas(
        &state.db,
        &TenantId::new(tenant.id()),
        ResourceId::from(id),
        after,
        limit,
    )
    .await?;
    Ok(page(&headers, items, limit, |s| {
        (s.database.clone(), s.name.clone())
    }))
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    since: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list_changes(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<ChangesQuery>,
) -> ApiResult<Response> {
    check_resource(&state, &tenant, id).await?;
    let since = query
        .since
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::BadRequest(
                        "`since` must be an RFC 3339 time, e.g. 2026-11-27T10:00:00Z".into(),
                    )
                })
        })
        .transpose()?;
    let limit = page_limit(query.limit);
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let items = catalog::list_changes(
        &state.db,
        &TenantId::new(tenant.id()),
        ResourceId::from(id),
        since,
        after,
        limit,
    )
    .await?;
    Ok(page(&headers, items, limit, |c| (c.created_at, c.id)))
}

async fn read_table(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    let table = catalog::get_table(&state.db, &TenantId::new(tenant.id()), TableId::from(id))
        .await?
        .ok_or(ApiError::NotFound("table"))?;
    Ok(conditional(&headers, &table))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// Shorter text cannot use the trigram indexes and would scan every column in the tenant.
const MIN_SEARCH_CHARS: usize = 3;

async fn search(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SearchQuery>,
) -> ApiResult<Response> {
    let q = query.q.unwrap_or_default();
    let chars = q.chars().count();
    if !(MIN_SEARCH_CHARS..=200).contains(&chars) {
        return Err(ApiError::BadRequest(format!(
            "`q` must be {MIN_SEARCH_CHARS} to 200 characters"
        )));
    }
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let items = catalog::search(&state.db, &TenantId::new(tenant.id()), &q, after, limit).await?;
    Ok(page(&headers, items, limit, |h| {
        (h.name.clone(), h.table_id, h.position)
    }))
}
