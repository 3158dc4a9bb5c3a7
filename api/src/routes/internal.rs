//! `/internal/v1`: a platform's own system service pushes its resource definitions with an
//! internal API key ([`InternalCaller`]), naming the tenant in the path, so the names and
//! kinds stored here never go stale. `PUT …/resources/{external_id}` is an idempotent upsert:
//! a definition sent twice changes nothing the second time.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metasync_shared::custody::ConnectionTarget;
use metasync_shared::db::audit::{self, Actor, AuditAction, AuditDetails};
use metasync_shared::db::resources::{
    self, EXTERNAL_ID_TAKEN_CONSTRAINT, ExternalResource, NewResource, Resource, ResourcePatch,
    UpsertTarget,
};
use metasync_shared::domain::ResourceKind;
use metasync_shared::ids::{ResourceId, TenantId};
use metasync_shared::retry::RetryOverrides;
use metasync_shared::scan_options::ScanOptions;
use metasync_shared::schedule::ScheduleSpec;
use metasync_shared::tls::SourceTls;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::InternalCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath};
use crate::openapi::{Edge, problem};
use crate::routes::resources::{
    OptionsBody, TARGET_CHANGE_NEEDS_PASSWORD, check_host, check_options, check_password,
    check_port, check_retry_policy, check_schedule, check_text, check_tls, name_taken,
    store_password,
};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put_resource))
}

/// Longest external id accepted.
const MAX_EXTERNAL_ID: usize = 200;

/// The whole definition of a resource (a `PUT` replaces it): like the body of
/// `POST /v1/resources`, but `password` may be left out of an update that keeps the
/// connection target and `tls`. Absent `options`, `schedule`, `retry_policy` and `tls`
/// mean the defaults.
// Not Debug: it carries a password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutResource {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub(crate) name: String,
    pub(crate) kind: ResourceKind,
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^(\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?)$"
    )]
    pub(crate) host: String,
    #[schema(minimum = 1, maximum = 65535)]
    pub(crate) port: i64,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub(crate) database: String,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub(crate) username: String,
    /// Required when the resource is new or its target changes; sealed on arrival.
    #[serde(default)]
    #[schema(max_length = 1024, format = Password)]
    pub(crate) password: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<ScanOptions>)]
    pub(crate) options: Option<OptionsBody>,
    #[serde(default)]
    pub(crate) schedule: Option<ScheduleSpec>,
    #[serde(default)]
    pub(crate) retry_policy: Option<RetryOverrides>,
    #[serde(default)]
    pub(crate) tls: Option<SourceTls>,
}

/// The resource after an upsert, and whether this request changed it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Upserted {
    #[serde(flatten)]
    resource: Resource,
    changed: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct UpsertPath {
    /// The tenant: 1-64 of `A-Z a-z 0-9 . _ - : @`, starting with a letter or digit.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")]
    tenant: String,
    /// The platform's own id of the resource, 1-200 characters, none a control character.
    #[param(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,200}$")]
    external_id: String,
}

/// Creates or replaces the resource with this external id. `201` with the resource when it was
/// created, `200` with `"changed": true|false` otherwise.
#[utoipa::path(
    put,
    path = "/internal/v1/tenants/{tenant}/resources/{external_id}",
    operation_id = "putInternalResource",
    tag = "internal",
    security(("internalKey" = [])),
    params(UpsertPath),
    request_body = PutResource,
    responses(
        (status = 201, description = "Created", body = Upserted,
            headers(("Location" = String, description = "`/v1/resources/{id}`"))),
        (status = 200, description = "Already there: `changed` says whether this changed it", body = Upserted),
        Edge,
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden),
        (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 503, response = problem::Unavailable),
    ),
)]
async fn put_resource(
    State(state): State<AppState>,
    caller: InternalCaller,
    AppPath(path): AppPath<UpsertPath>,
    AppJson(body): AppJson<PutResource>,
) -> ApiResult<Response> {
    let tenant = TenantId::parse(&path.tenant).map_err(|_| {
        ApiError::BadRequest(format!(
            "the tenant in the path must be 1-{} of A-Z a-z 0-9 . _ - : @, starting with a \
             letter or digit",
            TenantId::MAX_LEN
        ))
    })?;
    let external_id = path.external_id.as_str();
    if external_id.is_empty()
        || external_id.chars().count() > MAX_EXTERNAL_ID
        || external_id.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "the external id in the path must be 1-{MAX_EXTERNAL_ID} characters, none a \
             control character"
        )));
    }
    let definition = Definition::check(&state, body).await?;
    let actor = caller.actor();
    let key = UpsertKey::External(external_id);
    // Two first pushes of one resource race to insert; the loser tries again and finds the
    // winner's row. Only the second try's unique violations are what they say.
    for retry_on_race in [true, false] {
        let upserted = upsert(
            &state,
            &tenant,
            key,
            &definition,
            &actor,
            retry_on_race,
            false,
        );
        if let Some(response) = upserted.await? {
            return Ok(response);
        }
    }
    Err(ApiError::Conflict(
        "the resource is being pushed concurrently: try again".into(),
    ))
}

/// What an upsert finds its resource by.
#[derive(Clone, Copy)]
pub(crate) enum UpsertKey<'a> {
    /// The platform's own id (`/internal/v1`); the name may change.
    External(&'a str),
    /// The definition's name (`PUT /v1/resources/by-name/{name}`).
    Name,
}

/// A checked definition.
pub(crate) struct Definition {
    name: String,
    kind: ResourceKind,
    host: String,
    port: i32,
    database: String,
    username: String,
    password: Option<String>,
    options: metasync_shared::scan_options::ScanOptions,
    schedule: Option<ScheduleSpec>,
    retry_policy: Option<RetryOverrides>,
    tls: SourceTls,
}

impl Definition {
    /// The same checks as `POST /v1/resources` (outbound host policy included).
    pub(crate) async fn check(state: &AppState, body: PutResource) -> ApiResult<Self> {
        check_text("name", &body.name, 200)?;
        check_host(state, &body.host).await?;
        let port = check_port(body.port)?;
        check_text("database", &body.database, 255)?;
        check_text("username", &body.username, 255)?;
        if let Some(password) = &body.password {
            check_password(password)?;
        }
        let options = check_options(body.options)?;
        if let Some(spec) = &body.schedule {
            check_schedule(state, spec)?;
        }
        let retry_policy = body.retry_policy.map(check_retry_policy).transpose()?;
        let tls = check_tls(body.tls.unwrap_or_default())?;
        Ok(Self {
            name: body.name.trim().to_owned(),
            kind: body.kind,
            host: body.host,
            port,
            database: body.database,
            username: body.username,
            password: body.password,
            options,
            schedule: body.schedule,
            retry_policy,
            tls,
        })
    }

    fn target<'a>(&'a self, tenant: &'a TenantId, id: ResourceId) -> ConnectionTarget<'a> {
        ConnectionTarget {
            tenant,
            resource: id,
            kind: self.kind,
            host: &self.host,
            port: self.port,
            username: &self.username,
            database: &self.database,
            tls: &self.tls,
        }
    }
}

/// The unique constraint `e` violates, if that is what it is.
fn violated(e: &sqlx::Error) -> Option<&str> {
    e.as_database_error()?.constraint()
}

/// One try of the upsert, in one transaction with its audit record. With `retry_on_race`,
/// `None` when the insert of a new resource hit a unique violation (a concurrent push may have
/// created it first: try again, and it is an update).
pub(crate) async fn upsert(
    state: &AppState,
    tenant: &TenantId,
    key: UpsertKey<'_>,
    definition: &Definition,
    actor: &Actor,
    retry_on_race: bool,
    dry_run: bool,
) -> ApiResult<Option<Response>> {
    let external_id = match key {
        UpsertKey::External(id) => Some(id),
        UpsertKey::Name => None,
    };
    let mut tx = state.db.begin().await?;
    let target = match key {
        UpsertKey::External(id) => UpsertTarget::ExternalId(id),
        UpsertKey::Name => UpsertTarget::Name(&definition.name),
    };
    let found = resources::get_for_update(&mut *tx, tenant, target).await?;
    let Some(current) = found else {
        let Some(password) = &definition.password else {
            return Err(ApiError::Unprocessable(
                "`password` is required to create a resource".into(),
            ));
        };
        // On this transaction's connection: a second one per request could exhaust the pool.
        state.quotas.check_resource_cap(&mut *tx, tenant).await?;
        let id = ResourceId::new_v7();
        let password = store_password(state, password, &definition.target(tenant, id));
        let schedule = definition
            .schedule
            .as_ref()
            .map(|spec| check_schedule(state, spec))
            .transpose()?;
        let inserted = resources::insert(
            &mut *tx,
            tenant,
            id,
            NewResource {
                name: &definition.name,
                kind: definition.kind,
                host: &definition.host,
                port: definition.port,
                database: &definition.database,
                username: &definition.username,
                password,
                options: definition.options.clone(),
                schedule,
                retry_policy: definition.retry_policy.clone(),
                external_id,
                tls: definition.tls.clone(),
            },
        )
        .await;
        // A concurrent first push of this resource may make the loser hit either constraint.
        let resource = match inserted {
            Err(e) if retry_on_race && violated(&e).is_some() => return Ok(None),
            Err(e) if violated(&e) == Some(EXTERNAL_ID_TAKEN_CONSTRAINT) => {
                return Err(ApiError::Conflict(
                    "the resource is being pushed concurrently: try again".into(),
                ));
            }
            other => other.map_err(name_taken)?,
        };
        let details = AuditDetails {
            name: Some(resource.name.clone()),
            external_id: external_id.map(str::to_owned),
            ..AuditDetails::default()
        };
        let action = AuditAction::ResourceCreate;
        audit::record(&mut *tx, tenant, actor, action, id.uuid(), details).await?;
        finish(tx, dry_run).await?;
        let body = Upserted {
            resource,
            changed: true,
        };
        if dry_run {
            return Ok(Some(
                (StatusCode::CREATED, axum::Json(body)).into_response(),
            ));
        }
        let location = format!("/v1/resources/{id}");
        return Ok(Some(
            (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                axum::Json(body),
            )
                .into_response(),
        ));
    };
    let ExternalResource {
        resource: current,
        password_fingerprint,
    } = current;
    let id = current.id;
    let target = definition.target(tenant, id);
    let target_changed = target != current.target(tenant);
    // A re-sent password is compared by its fingerprint: nothing is opened. A new target
    // needs the password sealed again for it, changed or not.
    let password = match &definition.password {
        None if target_changed => {
            return Err(ApiError::Unprocessable(TARGET_CHANGE_NEEDS_PASSWORD.into()));
        }
        None => None,
        Some(password) => {
            let same = password_fingerprint
                .as_deref()
                .is_some_and(|stored| state.fingerprinter.matches(id, password, stored));
            (target_changed || !same).then(|| store_password(state, password, &target))
        }
    };
    let mut desired = current.clone();
    desired.name.clone_from(&definition.name);
    desired.kind = definition.kind;
    desired.host.clone_from(&definition.host);
    desired.port = definition.port;
    desired.database.clone_from(&definition.database);
    desired.username.clone_from(&definition.username);
    desired.options = Json(definition.options.clone());
    desired.schedule = definition.schedule.clone().map(Json);
    desired.retry_policy = definition.retry_policy.clone().map(Json);
    desired.tls = Json(definition.tls.clone());
    let mut fields = current.changed_fields(&desired);
    if password.is_some() {
        fields.push("password".into());
    }
    if fields.is_empty() {
        finish(tx, dry_run).await?;
        let body = Upserted {
            resource: current,
            changed: false,
        };
        return Ok(Some(axum::Json(body).into_response()));
    }
    let changed = |field: &str| fields.iter().any(|f| f == field);
    let patch = ResourcePatch {
        kind: changed("kind").then_some(definition.kind),
        name: changed("name").then_some(definition.name.as_str()),
        host: changed("host").then_some(definition.host.as_str()),
        port: changed("port").then_some(definition.port),
        database: changed("database").then_some(definition.database.as_str()),
        username: changed("username").then_some(definition.username.as_str()),
        password,
        options: changed("options").then(|| definition.options.clone()),
        // An unchanged schedule keeps its next due time.
        schedule: match &definition.schedule {
            _ if !changed("schedule") => None,
            None => Some(None),
            Some(spec) => Some(Some(check_schedule(state, spec)?)),
        },
        retry_policy: changed("retry_policy").then(|| definition.retry_policy.clone()),
        tls: changed("tls").then(|| definition.tls.clone()),
    };
    let resource = resources::update(&mut *tx, tenant, &current, patch)
        .await
        .map_err(name_taken)?
        .ok_or(ApiError::NotFound("resource"))?;
    let details = AuditDetails {
        fields,
        external_id: external_id.map(str::to_owned),
        ..AuditDetails::default()
    };
    audit::record(
        &mut *tx,
        tenant,
        actor,
        AuditAction::ResourceUpdate,
        id.uuid(),
        details,
    )
    .await?;
    finish(tx, dry_run).await?;
    let body = Upserted {
        resource,
        changed: true,
    };
    Ok(Some(axum::Json(body).into_response()))
}

/// Commits the upsert's transaction, or with `dry_run` rolls it back: the answer then says
/// what the request would have done, and nothing (audit record included) is stored.
async fn finish(tx: sqlx::Transaction<'_, sqlx::Postgres>, dry_run: bool) -> ApiResult<()> {
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(())
}
