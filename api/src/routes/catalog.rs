//! Catalog reads: what the last syncs stored for a resource, its change history, and search
//! across the caller's tenant. Every read answers with an `ETag` (a hash of the body) and
//! `304 Not Modified` when `If-None-Match` already holds it.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metasync_shared::catalog::ChangeKind;
use metasync_shared::db::catalog::{
    self, ChangeFilter, SchemaSummary, SearchFilter, SearchHit, SearchHitKind, SearchKey,
    StoredChange, TableDetail, TableFilter, TableSummary,
};
use metasync_shared::db::resources;
use metasync_shared::ids::{JobId, ResourceId, TableId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::openapi::{Authed, problem};
use crate::pagination::{self, Cursor, Limit, Page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tables))
        .routes(routes!(list_schemas))
        .routes(routes!(list_changes))
        .routes(routes!(read_table))
        .routes(routes!(search))
}

/// The `If-None-Match` request header every catalog read honours.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only described: the handlers read the header map.
struct Conditional {
    /// An `ETag` from an earlier answer: `304` if the answer is still the same.
    #[param(rename = "If-None-Match")]
    if_none_match: Option<String>,
}

/// A page of the catalog, with its `ETag`.
fn page<T: Serialize, K: Serialize>(
    headers: &HeaderMap,
    items: Vec<T>,
    limit: Limit,
    key: impl Fn(&T) -> K,
) -> Response {
    conditional(headers, &Page::new(items, limit, key))
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

/// 404 unless the resource exists in the caller's tenant.
async fn check_resource(state: &AppState, tenant: &Tenant, id: ResourceId) -> ApiResult<()> {
    resources::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TablesQuery {
    /// Only tables in this database (of the resource's `options.databases`).
    database: Option<String>,
    /// Only tables in this schema.
    schema: Option<String>,
    /// Only this kind.
    #[param(inline)]
    kind: Option<RelationKind>,
    /// Only tables whose name contains this.
    q: Option<String>,
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// The kinds of relation the catalog stores, as its tables' `kind` says them.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum RelationKind {
    Table,
    View,
    MaterializedView,
    PartitionedTable,
    ForeignTable,
}

impl RelationKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::View => "view",
            Self::MaterializedView => "materialized_view",
            Self::PartitionedTable => "partitioned_table",
            Self::ForeignTable => "foreign_table",
        }
    }
}

/// A resource's stored tables and views, by database, schema and name.
#[utoipa::path(
    get,
    path = "/v1/resources/{id}/tables",
    operation_id = "listTables",
    tag = "catalog",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id"), TablesQuery, Conditional),
    responses(
        (status = 200, description = "A page of tables", body = Page<TableSummary>, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag", headers(("ETag" = String))),
        Authed,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn list_tables(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<ResourceId>,
    AppQuery(query): AppQuery<TablesQuery>,
) -> ApiResult<Response> {
    check_resource(&state, &tenant, id).await?;
    let filter = TableFilter {
        database: query.database,
        schema: query.schema,
        kind: query.kind.map(|k| k.as_str().to_owned()),
        q: query.q,
        after: pagination::after(query.cursor.as_ref())?,
        limit: query.limit.get(),
    };
    let items = catalog::list_tables(&state.db, tenant.id(), id, &filter).await?;
    Ok(page(&headers, items, query.limit, |t| {
        (t.database.clone(), t.schema.clone(), t.name.clone())
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// A resource's stored schemas (per database), with their table counts.
#[utoipa::path(
    get,
    path = "/v1/resources/{id}/schemas",
    operation_id = "listSchemas",
    tag = "catalog",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id"), PageQuery, Conditional),
    responses(
        (status = 200, description = "A page of schemas", body = Page<SchemaSummary>, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag", headers(("ETag" = String))),
        Authed,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn list_schemas(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<ResourceId>,
    AppQuery(query): AppQuery<PageQuery>,
) -> ApiResult<Response> {
    check_resource(&state, &tenant, id).await?;
    let after = pagination::after(query.cursor.as_ref())?;
    let items = catalog::list_schemas(&state.db, tenant.id(), id, after, query.limit.get()).await?;
    Ok(page(&headers, items, query.limit, |s| {
        (s.database.clone(), s.name.clone())
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ChangesQuery {
    /// Only changes at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only the changes this job recorded.
    job_id: Option<JobId>,
    /// Only changes of this kind.
    kind: Option<ChangeKind>,
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// A resource's change history, oldest first.
#[utoipa::path(
    get,
    path = "/v1/resources/{id}/changes",
    operation_id = "listChanges",
    tag = "catalog",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id"), ChangesQuery, Conditional),
    responses(
        (status = 200, description = "A page of changes", body = Page<StoredChange>, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag", headers(("ETag" = String))),
        Authed,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn list_changes(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<ResourceId>,
    AppQuery(query): AppQuery<ChangesQuery>,
) -> ApiResult<Response> {
    check_resource(&state, &tenant, id).await?;
    let filter = ChangeFilter {
        since: pagination::since(query.since.as_deref())?,
        job_id: query.job_id,
        kind: query.kind,
    };
    let after = pagination::after(query.cursor.as_ref())?;
    let items =
        catalog::list_changes(&state.db, tenant.id(), id, filter, after, query.limit.get()).await?;
    Ok(page(&headers, items, query.limit, |c| (c.created_at, c.id)))
}

/// One stored table with its columns, constraints and indexes.
#[utoipa::path(
    get,
    path = "/v1/tables/{id}",
    operation_id = "readTable",
    tag = "catalog",
    security(("bearer" = [])),
    params(("id" = TableId, Path, description = "Stored table id"), Conditional),
    responses(
        (status = 200, description = "The table", body = TableDetail, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag", headers(("ETag" = String))),
        Authed,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn read_table(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    AppPath(id): AppPath<TableId>,
) -> ApiResult<Response> {
    let table = catalog::get_table(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("table"))?;
    Ok(conditional(&headers, &table))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// Text the table or column name, or its comment, contains (3-200 characters).
    #[param(required = true, min_length = 3, max_length = 200)]
    q: Option<String>,
    /// Only this resource's tables and columns.
    resource_id: Option<ResourceId>,
    /// Only tables, or only columns.
    kind: Option<SearchHitKind>,
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// Shorter text cannot use the trigram indexes and would scan every column in the tenant.
const MIN_SEARCH_CHARS: usize = 3;

/// Tables and columns of the caller's tenant whose name or comment contains `q`: exact name
/// matches first, then names containing `q`, then comments containing it.
#[utoipa::path(
    get,
    path = "/v1/search",
    operation_id = "search",
    tag = "catalog",
    security(("bearer" = [])),
    params(SearchQuery, Conditional),
    responses(
        (status = 200, description = "A page of hits", body = Page<SearchHit>, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag", headers(("ETag" = String))),
        Authed,
    ),
)]
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
    let filter = SearchFilter {
        resource_id: query.resource_id,
        kind: query.kind,
    };
    let after: Option<SearchKey> = pagination::after(query.cursor.as_ref())?;
    let items =
        catalog::search(&state.db, tenant.id(), &q, filter, after, query.limit.get()).await?;
    Ok(page(&headers, items, query.limit, |h| {
        (h.rank, h.name.clone(), h.table_id, h.position)
    }))
}
