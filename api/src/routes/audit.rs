//! `/v1/audit`: the tenant's audit log, newest first, for admins.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use metasync_shared::db::audit::{self, AuditAction, AuditEvent, AuditFilter};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{ReadAudit, Tenant};
use crate::error::ApiResult;
use crate::extract::AppQuery;
use crate::openapi::Authed;
use crate::pagination::{self, Cursor, Limit, Page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only events about this resource, job or batch.
    object_id: Option<Uuid>,
    /// Only this action (`resource.create`, `job.cancel`, …).
    action: Option<AuditAction>,
    /// Only events at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// Lists who changed what in the caller's tenant, newest first (admins only).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "listAudit",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit events", body = Page<AuditEvent>),
        Authed,
    ),
)]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant<ReadAudit>,
    AppQuery(query): AppQuery<AuditQuery>,
) -> ApiResult<Response> {
    let since = pagination::since(query.since.as_deref())?;
    let filter = AuditFilter {
        object_id: query.object_id,
        action: query.action,
        since,
        before: pagination::after(query.cursor.as_ref())?,
        limit: query.limit.get(),
    };
    let items = audit::list(&state.db, tenant.id(), &filter).await?;
    Ok(axum::Json(Page::new(items, query.limit, |event| (event.at, event.id))).into_response())
}
