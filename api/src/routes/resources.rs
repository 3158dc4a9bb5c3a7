//! `/v1/resources`: register, read, change and remove sources, and ask for a sync.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use metasync_shared::custody::ConnectionTarget;
use metasync_shared::db::audit::{self, AuditAction, AuditDetails};
use metasync_shared::db::resources::{
    self, NAME_TAKEN_CONSTRAINT, NewResource, Resource, ResourcePatch, StoredPassword,
    StoredSchedule,
};
use metasync_shared::domain::ResourceKind;
use metasync_shared::ids::ResourceId;
use metasync_shared::retry::RetryOverrides;
use metasync_shared::scan_options::ScanOptions;
use metasync_shared::schedule::{Schedule, ScheduleSpec};
use metasync_shared::tls::SourceTls;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Manage, Operate, Tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::openapi::{Authed, problem};
use crate::pagination::{self, Cursor, Limit, Page};
use crate::quotas::Bucket;
use crate::routes::internal::{self, PutResource, UpsertKey, Upserted, upsert};
use crate::routes::jobs::JobDocument;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(sync))
        .routes(routes!(put_by_name))
}

// The patterns: text fields hold something besides spaces and no control characters; a host
// is one name (labels of letters, digits, `-`, `_`) or IP literal, as
// `outbound::check_host_syntax` accepts it (the outbound policy is checked beyond that).

/// A source to register.
// Not Debug: it carries a password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateResource {
    /// Unique in the tenant; 1-200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
    kind: ResourceKind,
    /// One host name or IP address (no port, path or list), allowed by the outbound policy.
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^(\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?)$"
    )]
    host: String,
    #[schema(minimum = 1, maximum = 65535)]
    port: i64,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    database: String,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    username: String,
    /// Sealed for the workers on arrival; never returned.
    #[schema(max_length = 1024, format = Password)]
    password: String,
    #[serde(default)]
    #[schema(value_type = Option<ScanOptions>)]
    options: Option<OptionsBody>,
    #[serde(default)]
    schedule: Option<ScheduleSpec>,
    #[serde(default)]
    retry_policy: Option<RetryOverrides>,
    /// Absent: `{"mode": "prefer"}`.
    #[serde(default)]
    tls: Option<SourceTls>,
}

/// Changes to a resource; absent fields stay as they are. Changing `kind`, `host`, `port`,
/// `username`, `database` or `tls` needs `password` again.
// Not Debug: it carries a password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchResource {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^(\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?)$"
    )]
    host: Option<String>,
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<i64>,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    database: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    username: Option<String>,
    #[schema(max_length = 1024, format = Password)]
    password: Option<String>,
    /// Merged key by key: a key given replaces that key (a pattern list whole), a key left
    /// out keeps its value; a key goes back to its default when given it (`"resource"`, `3`, `[]`).
    #[schema(value_type = Option<ScanOptions>)]
    options: Option<OptionsBody>,
    kind: Option<ResourceKind>,
    /// Absent: unchanged; `null`: removed.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ScheduleSpec>)]
    schedule: Option<Option<ScheduleSpec>>,
    /// Absent: unchanged; `null`: removed.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RetryOverrides>)]
    retry_policy: Option<Option<RetryOverrides>>,
    tls: Option<SourceTls>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub(crate) fn check_schedule(state: &AppState, spec: &ScheduleSpec) -> ApiResult<StoredSchedule> {
    let schedule = Schedule::parse(spec).map_err(ApiError::Unprocessable)?;
    state.quotas.check_schedule(&schedule)?;
    let now = Utc::now();
    // An interval fires at once and then every interval; a cron expression at its next tick.
    let next_sync_at = match &schedule {
        Schedule::Interval(_) => Some(now),
        Schedule::Cron(_) => schedule.next_after(now),
    }
    .ok_or_else(|| ApiError::Unprocessable("`cron` never fires".into()))?;
    Ok(StoredSchedule {
        interval_seconds: spec.interval_seconds,
        cron: spec.cron.clone(),
        next_sync_at,
    })
}

pub(crate) fn check_tls(tls: SourceTls) -> ApiResult<SourceTls> {
    tls.validate().map_err(ApiError::Unprocessable)?;
    Ok(tls)
}

pub(crate) fn check_retry_policy(policy: RetryOverrides) -> ApiResult<RetryOverrides> {
    policy.validate().map_err(ApiError::Unprocessable)?;
    Ok(policy)
}

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.trim().is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "`{field}` must not be empty"
        )));
    }
    if value.chars().count() > max {
        return Err(ApiError::Unprocessable(format!(
            "`{field}` must be at most {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(())
}

/// One host name or IP address that the outbound policy allows (a name that does not resolve
/// here is accepted: the workers check it again, resolved, right before they connect).
pub(crate) async fn check_host(state: &AppState, host: &str) -> ApiResult<()> {
    check_text("host", host, 253)?;
    state
        .outbound
        .check_registration(host)
        .await
        .map_err(|e| ApiError::Unprocessable(e.to_string()))
}

pub(crate) fn check_port(port: i64) -> ApiResult<i32> {
    if (1..=65_535).contains(&port) {
        Ok(port as i32)
    } else {
        Err(ApiError::Unprocessable(
            "`port` must be between 1 and 65535".into(),
        ))
    }
}

pub(crate) fn check_password(password: &str) -> ApiResult<()> {
    if password.len() > 1024 {
        return Err(ApiError::Unprocessable(
            "`password` must be at most 1024 bytes".into(),
        ));
    }
    Ok(())
}

/// `options` as the body carries it, parsed after the body so that a bad option is a 422
/// that names the key (serde's own message would not).
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct OptionsBody(serde_json::Value);

/// Scan options are parsed with the worker's own parser, so what is accepted here is exactly
/// what the worker can run; what was parsed is what gets stored.
pub(crate) fn check_options(options: Option<OptionsBody>) -> ApiResult<ScanOptions> {
    match options {
        None => Ok(ScanOptions::default()),
        Some(OptionsBody(value)) => ScanOptions::parse(&value).map_err(ApiError::Unprocessable),
    }
}

/// The 422 of a change to a password's target (`PATCH`, or the internal upsert) without it.
pub(crate) const TARGET_CHANGE_NEEDS_PASSWORD: &str = "changing `kind`, `host`, `port`, `username`, `database` or `tls` needs `password` again: \
     the stored password is sealed for the current target and TLS settings, and is never sent \
     to another or under other TLS settings";

/// Seals `password` for `target` and fingerprints it.
pub(crate) fn store_password(
    state: &AppState,
    password: &str,
    target: &ConnectionTarget<'_>,
) -> StoredPassword {
    StoredPassword {
        sealed: state.sealing_key.seal(password, target),
        fingerprint: state.fingerprinter.fingerprint(target.resource, password),
    }
}

pub(crate) fn name_taken(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some(NAME_TAKEN_CONSTRAINT) => {
            ApiError::Conflict("a resource with this name already exists".into())
        }
        _ => e.into(),
    }
}

/// A [`CreateResource`] body, checked: every field valid, the host allowed by the outbound
/// policy. Not Debug: it carries a password.
pub(crate) struct Definition {
    pub name: String,
    pub kind: ResourceKind,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub username: String,
    pub password: String,
    pub options: ScanOptions,
    pub schedule: Option<StoredSchedule>,
    pub retry_policy: Option<RetryOverrides>,
    pub tls: SourceTls,
}

/// Checks a definition as registering it does (a 422 naming what is wrong); test-connection
/// checks an unsaved one the same way.
pub(crate) async fn check_definition(
    state: &AppState,
    body: CreateResource,
) -> ApiResult<Definition> {
    check_text("name", &body.name, 200)?;
    check_host(state, &body.host).await?;
    let port = check_port(body.port)?;
    check_text("database", &body.database, 255)?;
    check_text("username", &body.username, 255)?;
    check_password(&body.password)?;
    let options = check_options(body.options)?;
    let schedule = body
        .schedule
        .as_ref()
        .map(|spec| check_schedule(state, spec))
        .transpose()?;
    let retry_policy = body.retry_policy.map(check_retry_policy).transpose()?;
    let tls = check_tls(body.tls.unwrap_or_default())?;
    Ok(Definition {
        name: body.name,
        kind: body.kind,
        host: body.host,
        port,
        database: body.database,
        username: body.username,
        password: body.password,
        options,
        schedule,
        retry_policy,
        tls,
    })
}

/// Register a source.
#[utoipa::path(
    post,
    path = "/v1/resources",
    operation_id = "createResource",
    tag = "resources",
    security(("bearer" = [])),
    request_body = CreateResource,
    responses(
        (status = 201, description = "Registered", body = Resource,
            headers(("Location" = String, description = "`/v1/resources/{id}`"))),
        Authed,
        (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant<Manage>,
    AppJson(body): AppJson<CreateResource>,
) -> ApiResult<Response> {
    let body = check_definition(&state, body).await?;
    state.quotas.spend(tenant.id(), Bucket::Writes)?;
    state
        .quotas
        .check_resource_cap(&state.db, tenant.id())
        .await?;

    let id = ResourceId::new_v7();
    let target = ConnectionTarget {
        tenant: tenant.id(),
        resource: id,
        kind: body.kind,
        host: &body.host,
        port: body.port,
        username: &body.username,
        database: &body.database,
        tls: &body.tls,
    };
    let password = store_password(&state, &body.password, &target);
    let mut tx = state.db.begin().await?;
    let resource = resources::insert(
        &mut *tx,
        tenant.id(),
        id,
        NewResource {
            name: body.name.trim(),
            kind: body.kind,
            host: &body.host,
            port: body.port,
            database: &body.database,
            username: &body.username,
            password,
            options: body.options,
            schedule: body.schedule,
            retry_policy: body.retry_policy,
            external_id: None,
            tls: body.tls,
        },
    )
    .await
    .map_err(name_taken)?;
    let details = AuditDetails {
        name: Some(resource.name.clone()),
        ..AuditDetails::default()
    };
    let (actor, action) = (tenant.actor(), AuditAction::ResourceCreate);
    audit::record(&mut *tx, tenant.id(), &actor, action, id.uuid(), details).await?;
    tx.commit().await?;
    let location = format!("/v1/resources/{}", resource.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(resource),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only the resource with this name (names are unique per tenant).
    name: Option<String>,
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// The tenant's resources, oldest first.
#[utoipa::path(
    get,
    path = "/v1/resources",
    operation_id = "listResources",
    tag = "resources",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of resources", body = Page<Resource>),
        Authed,
    ),
)]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(query): AppQuery<ListQuery>,
) -> ApiResult<Response> {
    let after = pagination::after(query.cursor.as_ref())?;
    let items = resources::list(
        &state.db,
        tenant.id(),
        query.name.as_deref(),
        after,
        query.limit.get(),
    )
    .await?;
    Ok(axum::Json(Page::new(items, query.limit, |r| r.id)).into_response())
}

/// One resource (never its password).
#[utoipa::path(
    get,
    path = "/v1/resources/{id}",
    operation_id = "readResource",
    tag = "resources",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The resource", body = Resource),
        Authed,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn read(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<ResourceId>,
) -> ApiResult<Response> {
    let resource = resources::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    Ok(axum::Json(resource).into_response())
}

/// Change a resource.
#[utoipa::path(
    patch,
    path = "/v1/resources/{id}",
    operation_id = "updateResource",
    tag = "resources",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    request_body = PatchResource,
    responses(
        (status = 200, description = "Changed", body = Resource),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn update(
    State(state): State<AppState>,
    tenant: Tenant<Manage>,
    AppPath(id): AppPath<ResourceId>,
    AppJson(body): AppJson<PatchResource>,
) -> ApiResult<Response> {
    if let Some(name) = &body.name {
        check_text("name", name, 200)?;
    }
    if let Some(host) = &body.host {
        check_host(&state, host).await?;
    }
    let port = body.port.map(check_port).transpose()?;
    if let Some(database) = &body.database {
        check_text("database", database, 255)?;
    }
    if let Some(username) = &body.username {
        check_text("username", username, 255)?;
    }
    if let Some(password) = &body.password {
        check_password(password)?;
    }
    let tls = body.tls.map(check_tls).transpose()?;
    state.quotas.spend(tenant.id(), Bucket::Writes)?;
    let current = resources::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    // `options` merges key by key (a list given replaces that list), as the retry policy
    // merges field by field below.
    let options = body
        .options
        .map(|OptionsBody(patch)| current.options.0.patched(&patch))
        .transpose()
        .map_err(ApiError::Unprocessable)?;
    // The password is sealed for a target: where it may be sent, and under which TLS
    // settings. A new target without the password again would send the stored one somewhere
    // new (or under laxer TLS), and the API cannot re-seal what it cannot open; so that takes
    // the password.
    let target = ConnectionTarget {
        tenant: tenant.id(),
        resource: id,
        kind: body.kind.unwrap_or(current.kind),
        host: body.host.as_deref().unwrap_or(&current.host),
        port: port.unwrap_or(current.port),
        username: body.username.as_deref().unwrap_or(&current.username),
        database: body.database.as_deref().unwrap_or(&current.database),
        tls: tls.as_ref().unwrap_or(&current.tls),
    };
    let password = match &body.password {
        Some(password) => Some(store_password(&state, password, &target)),
        None if target != current.target(tenant.id()) => {
            return Err(ApiError::Unprocessable(TARGET_CHANGE_NEEDS_PASSWORD.into()));
        }
        None => None,
    };
    // A retyped resource (e.g. a database moved from PostgreSQL to MariaDB) is scanned with
    // its new engine on the next sync; the catalog diff then replaces what was stored.
    let patch = ResourcePatch {
        kind: body.kind,
        name: body.name.as_deref().map(str::trim),
        host: body.host.as_deref(),
        port,
        database: body.database.as_deref(),
        username: body.username.as_deref(),
        password,
        options,
        schedule: match &body.schedule {
            None => None,
            Some(None) => Some(None),
            Some(Some(spec)) => Some(Some(check_schedule(&state, spec)?)),
        },
        retry_policy: match body.retry_policy {
            None => None,
            Some(None) => Some(None),
            Some(Some(policy)) => {
                let current = current.retry_policy.as_ref().map(|p| &p.0);
                Some(Some(check_retry_policy(policy.merged_over(current))?))
            }
        },
        tls,
    };
    let password_given = patch.password.is_some();
    let mut tx = state.db.begin().await?;
    let resource = resources::update(&mut *tx, tenant.id(), &current, patch)
        .await
        .map_err(name_taken)?
        .ok_or_else(|| {
            ApiError::Conflict(
                "the resource was changed or deleted meanwhile: read it and try again".into(),
            )
        })?;
    let mut fields = current.changed_fields(&resource);
    if password_given {
        fields.push("password".into());
    }
    let details = AuditDetails {
        fields,
        ..AuditDetails::default()
    };
    let (actor, action) = (tenant.actor(), AuditAction::ResourceUpdate);
    audit::record(&mut *tx, tenant.id(), &actor, action, id.uuid(), details).await?;
    tx.commit().await?;
    Ok(axum::Json(resource).into_response())
}

/// Remove a resource and its stored catalog. Its jobs stay readable (active ones are cancelled).
#[utoipa::path(
    delete,
    path = "/v1/resources/{id}",
    operation_id = "deleteResource",
    tag = "resources",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id")),
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
    AppPath(id): AppPath<ResourceId>,
) -> ApiResult<StatusCode> {
    state.quotas.spend(tenant.id(), Bucket::Writes)?;
    // A job that ends while the delete runs locks its row, then (its freshness trigger) the
    // resource: the opposite of the delete's order. PostgreSQL breaks such a deadlock by
    // aborting one side; when it is this one, the delete runs again.
    let mut tries = 0;
    let name = loop {
        tries += 1;
        match delete_resource(&state, &tenant, id).await {
            Err(e) if tries < 3 && metasync_shared::db::is_transient_conflict(&e) => continue,
            done => break done?,
        }
    };
    name.map(|_| StatusCode::NO_CONTENT)
        .ok_or(ApiError::NotFound("resource"))
}

/// Deletes the resource and records it in the audit log, in one transaction; its name, or
/// `None` when it did not exist.
async fn delete_resource(
    state: &AppState,
    tenant: &Tenant<Manage>,
    id: ResourceId,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = state.db.begin().await?;
    let Some(name) = resources::delete(&mut tx, tenant.id(), id).await? else {
        return Ok(None);
    };
    let details = AuditDetails {
        name: Some(name.clone()),
        ..AuditDetails::default()
    };
    let (actor, action) = (tenant.actor(), AuditAction::ResourceDelete);
    audit::record(&mut *tx, tenant.id(), &actor, action, id.uuid(), details).await?;
    tx.commit().await?;
    Ok(Some(name))
}

/// The whole definition of the resource a `PUT /v1/resources/by-name/{name}` creates or
/// replaces: the body of `POST /v1/resources` without `name` (the path names it), and
/// `password` may be left out of an update that keeps `kind`, `host`, `port`, `database`,
/// `username` and `tls`. Absent `options`, `schedule`, `retry_policy` and `tls` mean the
/// defaults, as at creation.
// Not Debug: it carries a password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutByName {
    kind: ResourceKind,
    /// One host name or IP address (no port, path or list), allowed by the outbound policy.
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^(\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?)$"
    )]
    host: String,
    #[schema(minimum = 1, maximum = 65535)]
    port: i64,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    database: String,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    username: String,
    /// Required when the resource is new or its target changes; sealed on arrival, compared
    /// by fingerprint otherwise (the same password again changes nothing).
    #[serde(default)]
    #[schema(max_length = 1024, format = Password)]
    password: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<ScanOptions>)]
    options: Option<OptionsBody>,
    #[serde(default)]
    schedule: Option<ScheduleSpec>,
    #[serde(default)]
    retry_policy: Option<RetryOverrides>,
    /// Absent: `{"mode": "prefer"}`.
    #[serde(default)]
    tls: Option<SourceTls>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ByNamePath {
    /// The resource's name (percent-encoded): 1-200 characters, none a control character,
    /// not only spaces; leading and trailing spaces are trimmed, as at creation.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PutQuery {
    /// `true`: check and compare as usual, store nothing, and answer what the request would
    /// do (`201` for a creation, without `Location`; `200` with `changed`). A plan.
    #[serde(default)]
    dry_run: bool,
}

/// Creates or replaces the resource with this name (configuration as code: the same request
/// twice changes nothing the second time). `201` with the resource when it was created, `200`
/// with `"changed": true|false` otherwise. Replacing without `password` keeps the stored one
/// only when the connection target and TLS settings stay the same (as `PATCH`).
#[utoipa::path(
    put,
    path = "/v1/resources/by-name/{name}",
    operation_id = "putResourceByName",
    tag = "resources",
    security(("bearer" = [])),
    params(ByNamePath, PutQuery),
    request_body = PutByName,
    responses(
        (status = 201, description = "Created", body = Upserted,
            headers(("Location" = String, description = "`/v1/resources/{id}`"))),
        (status = 200, description = "Already there: `changed` says whether this changed it", body = Upserted),
        Authed,
        (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn put_by_name(
    State(state): State<AppState>,
    tenant: Tenant<Manage>,
    AppPath(path): AppPath<ByNamePath>,
    AppQuery(query): AppQuery<PutQuery>,
    AppJson(body): AppJson<PutByName>,
) -> ApiResult<Response> {
    // The name is checked like a body's (a 422 names it); what is stored is trimmed, so it is
    // also what is looked up, or a name with spaces around it could never be found again.
    let body = PutResource {
        name: path.name,
        kind: body.kind,
        host: body.host,
        port: body.port,
        database: body.database,
        username: body.username,
        password: body.password,
        options: body.options,
        schedule: body.schedule,
        retry_policy: body.retry_policy,
        tls: body.tls,
    };
    let definition = internal::Definition::check(&state, body).await?;
    state.quotas.spend(tenant.id(), Bucket::Writes)?;
    let actor = tenant.actor();
    // Two first PUTs of one name race to insert; the loser tries again and finds the winner's
    // row.
    for retry_on_race in [true, false] {
        let upserted = upsert(
            &state,
            tenant.id(),
            UpsertKey::Name,
            &definition,
            &actor,
            retry_on_race,
            query.dry_run,
        );
        if let Some(response) = upserted.await? {
            return Ok(response);
        }
    }
    Err(ApiError::Conflict(
        "the resource is being written concurrently: try again".into(),
    ))
}

/// Enqueues a sync: `202` with the new job, or `200` with the active job when one exists.
#[utoipa::path(
    post,
    path = "/v1/resources/{id}/sync",
    operation_id = "syncResource",
    tag = "resources",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    responses(
        (status = 202, description = "A new job", body = JobDocument,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "The resource's active job (`deduplicated: true`)", body = JobDocument,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn sync(
    State(state): State<AppState>,
    tenant: Tenant<Operate>,
    AppPath(id): AppPath<ResourceId>,
) -> ApiResult<Response> {
    state.quotas.spend(tenant.id(), Bucket::Syncs)?;
    state
        .quotas
        .check_active_jobs(&state.db, tenant.id(), 1)
        .await?;
    let enqueued = state
        .submitter
        .sync(tenant.id(), id, None, &tenant.actor())
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    Ok(crate::routes::jobs::enqueued_response(enqueued))
}
