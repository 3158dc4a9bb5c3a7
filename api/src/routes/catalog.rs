//! Catalog reads: what the last syncs stored for a resource.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use metasync_shared::db::catalog::{self, TableFilter};
use metasync_shared::db::resources;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/resources/{id}/tables", get(list_tables))
        .route("/v1/tables/{id}", get(read_table))
}

#[derive(Debug, Deserialize)]
struct TablesQuery {
    schema: Option<String>,
    kind: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// Cursors are opaque to clients: base64url of the JSON `[database, schema, name]` of the
/// last item of the previous page.
fn encode_cursor(key: (&str, &str, &str)) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&key).expect("tuple of strings serializes"))
}

fn decode_cursor(cursor: &str) -> ApiResult<(String, String, String)> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::BadRequest("`cursor` is not a cursor this API issued".into()))
}

async fn list_tables(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<TablesQuery>,
) -> ApiResult<Response> {
    resources::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let filter = TableFilter {
        schema: query.schema,
        kind: query.kind,
        q: query.q,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let items = catalog::list_tables(&state.db, tenant.id(), id, &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| {
            items
                .last()
                .map(|t| encode_cursor((&t.database, &t.schema, &t.name)))
        })
        .flatten();
    Ok(axum::Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

async fn read_table(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    let table = catalog::get_table(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("table"))?;
    Ok(axum::Json(table).into_response())
}
