//! `/v1/webhooks`: a tenant's HTTP receivers of job outcomes and catalog changes, and the
//! record of what was sent to them (docs/webhooks.md).
//!
//! The signing secret is write-only: the API seals it to the workers' master key (as a source
//! password, bound to the tenant, the hook and its URL) and can never read it back; workers
//! open it to sign. The URL's host is checked against the outbound policy here (a 422) and
//! again, resolved, by the worker right before each delivery.

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use metasync_shared::custody::WebhookTarget;
use metasync_shared::db::audit::{self, AuditAction, AuditDetails};
use metasync_shared::db::webhooks::{self, Delivery, Webhook, WebhookEvent};
use metasync_shared::ids::{DeliveryId, WebhookId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Manage, Tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::openapi::{Authed, problem};
use crate::pagination::{self, Cursor, Limit, Page};
use crate::quotas::Bucket;
use crate::routes::resources::check_host;
use crate::state::AppState;

/// Most webhooks a tenant may have.
pub const MAX_WEBHOOKS_PER_TENANT: i64 = 20;
/// Longest URL accepted.
const MAX_URL: usize = 2048;
/// Shortest secret accepted: 24 characters (Standard Webhooks' `whsec_` keys are longer).
const MIN_SECRET: usize = 24;
const MAX_SECRET: usize = 256;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(deliveries))
}

/// A webhook to register.
// Not Debug: it carries the secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    /// `http://` or `https://` URL the events are POSTed to; its host must be allowed by the
    /// outbound policy, as a source's.
    #[schema(
        min_length = 8,
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^\s]+$"
    )]
    url: String,
    /// The events to receive (a repeated one counts once).
    #[schema(min_items = 1)]
    events: Vec<WebhookEvent>,
    /// The signing secret (24-256 printable ASCII characters; a `whsec_`-prefixed base64 key
    /// is used as the decoded bytes, as Standard Webhooks libraries do). Never returned.
    #[schema(min_length = 24, max_length = 256, pattern = r"^[!-~]+$")]
    secret: String,
}

/// What a `PATCH` may change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateWebhook {
    /// `true` turns a webhook on again (after a 410 Gone turned it off); `false` turns it off
    /// and drops its pending deliveries.
    enabled: bool,
}

/// Register a webhook (recorded in the audit log as `webhook.create`, with its URL's host).
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    operation_id = "createWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Registered (the secret is not returned)", body = Webhook,
            headers(("Location" = String, description = "`/v1/webhooks/{id}`"))),
        Authed,
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant<Manage>,
    AppJson(body): AppJson<CreateWebhook>,
) -> ApiResult<Response> {
    check_url(&state, &body.url).await?;
    let events = check_events(body.events)?;
    check_secret(&body.secret)?;
    state.quotas.spend(tenant.id(), Bucket::Writes)?;
    let mut tx = state.db.begin().await?;
    let (count,): (i64,) = sqlx::query_as("select count(*) from webhooks where tenant_id = $1")
        .bind(tenant.id())
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_WEBHOOKS_PER_TENANT {
        return Err(ApiError::QuotaExceeded(format!(
            "a tenant may have at most {MAX_WEBHOOKS_PER_TENANT} webhooks"
        )));
    }
    let id = WebhookId::new_v7();
    let target = WebhookTarget {
        tenant: tenant.id(),
        webhook: id,
        url: &body.url,
    };
    let sealed = state.sealing_key.seal_webhook_secret(&body.secret, &target);
    let hook = webhooks::insert(&mut *tx, tenant.id(), id, &body.url, &events, &sealed).await?;
    let details = AuditDetails {
        host: url_host(&hook.url),
        ..AuditDetails::default()
    };
    let (actor, action) = (tenant.actor(), AuditAction::WebhookCreate);
    audit::record(&mut *tx, tenant.id(), &actor, action, id.uuid(), details).await?;
    tx.commit().await?;
    let location = format!("/v1/webhooks/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(hook),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// The tenant's webhooks, oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    operation_id = "listWebhooks",
    tag = "webhooks",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of webhooks", body = Page<Webhook>),
        Authed,
    ),
)]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(query): AppQuery<ListQuery>,
) -> ApiResult<Response> {
    let after = pagination::after(query.cursor.as_ref())?;
    let items = webhooks::list(&state.db, tenant.id(), after, query.limit.get()).await?;
    Ok(axum::Json(Page::new(items, query.limit, |w| w.id)).into_response())
}

/// One webhook (never its secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    operation_id = "readWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = WebhookId, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = Webhook),
        Authed,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn read(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<WebhookId>,
) -> ApiResult<axum::Json<Webhook>> {
    let hook = webhooks::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(axum::Json(hook))
}

/// Turn a webhook on again, or off (recorded in the audit log as `webhook.update`).
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    operation_id = "updateWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = WebhookId, Path, description = "Webhook id")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "Changed", body = Webhook),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn update(
    State(state): State<AppState>,
    tenant: Tenant<Manage>,
    AppPath(id): AppPath<WebhookId>,
    AppJson(body): AppJson<UpdateWebhook>,
) -> ApiResult<axum::Json<Webhook>> {
    state.quotas.spend(tenant.id(), Bucket::Writes)?;
    let mut tx = state.db.begin().await?;
    let hook = webhooks::set_enabled(&mut *tx, tenant.id(), id, body.enabled)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    let details = AuditDetails {
        fields: vec!["enabled".into()],
        enabled: Some(body.enabled),
        ..AuditDetails::default()
    };
    let (actor, action) = (tenant.actor(), AuditAction::WebhookUpdate);
    audit::record(&mut *tx, tenant.id(), &actor, action, id.uuid(), details).await?;
    tx.commit().await?;
    Ok(axum::Json(hook))
}

/// Remove a webhook and its deliveries (recorded in the audit log as `webhook.delete`).
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    operation_id = "deleteWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = WebhookId, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Removed"),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn remove(
    State(state): State<AppState>,
    tenant: Tenant<Manage>,
    AppPath(id): AppPath<WebhookId>,
) -> ApiResult<StatusCode> {
    state.quotas.spend(tenant.id(), Bucket::Writes)?;
    let mut tx = state.db.begin().await?;
    let url = webhooks::delete(&mut *tx, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    let details = AuditDetails {
        host: url_host(&url),
        ..AuditDetails::default()
    };
    let (actor, action) = (tenant.actor(), AuditAction::WebhookDelete);
    audit::record(&mut *tx, tenant.id(), &actor, action, id.uuid(), details).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = WebhookId, Path, description = "Webhook id"), ListQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<Delivery>),
        Authed,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn deliveries(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<WebhookId>,
    AppQuery(query): AppQuery<ListQuery>,
) -> ApiResult<Response> {
    let before: Option<DeliveryId> = pagination::after(query.cursor.as_ref())?;
    if webhooks::get(&state.db, tenant.id(), id).await?.is_none() {
        return Err(ApiError::NotFound("webhook"));
    }
    let items = webhooks::deliveries(&state.db, tenant.id(), id, before, query.limit.get()).await?;
    Ok(axum::Json(Page::new(items, query.limit, |d| d.id)).into_response())
}

/// An absolute `http(s)` URL without credentials, whose host the outbound policy allows.
async fn check_url(state: &AppState, url: &str) -> ApiResult<()> {
    let invalid = |why: &str| ApiError::Unprocessable(format!("`url` {why}"));
    if url.len() > MAX_URL {
        return Err(invalid(&format!("must be at most {MAX_URL} bytes")));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("must not contain spaces or control characters"));
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| invalid("must be an absolute http:// or https:// URL"))?;
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "https") => {}
        _ => return Err(invalid("must be an absolute http:// or https:// URL")),
    }
    let authority = uri.authority().ok_or_else(|| invalid("must name a host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("must not contain credentials"));
    }
    check_host(state, authority.host()).await
}

/// The host of a stored (so already checked) URL, for the audit log.
fn url_host(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    uri.host().map(str::to_owned)
}

fn check_events(mut events: Vec<WebhookEvent>) -> ApiResult<Vec<WebhookEvent>> {
    if events.is_empty() {
        return Err(ApiError::Unprocessable(
            "`events` must name at least one event".into(),
        ));
    }
    events.sort();
    events.dedup();
    Ok(events)
}

fn check_secret(secret: &str) -> ApiResult<()> {
    let printable = secret.bytes().all(|b| b.is_ascii_graphic());
    if !(MIN_SECRET..=MAX_SECRET).contains(&secret.len()) || !printable {
        return Err(ApiError::Unprocessable(format!(
            "`secret` must be {MIN_SECRET} to {MAX_SECRET} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}
