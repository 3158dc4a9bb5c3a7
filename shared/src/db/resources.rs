//! Registered sources. Passwords are stored sealed and never selected into [`Resource`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use sqlx::types::Json;

use crate::domain::ResourceKind;
use crate::ids::{ResourceId, TenantId};
use crate::retry::RetryOverrides;
use crate::scan_options::ScanOptions;
use crate::schedule::ScheduleSpec;

/// A registered source as clients see it: every field but the password.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Resource {
    pub id: ResourceId,
    pub name: String,
    pub kind: ResourceKind,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub username: String,
    pub options: Json<ScanOptions>,
    /// `{"interval_seconds": n}` or `{"cron": "…"}`; `null` when syncs are only on request.
    pub schedule: Option<Json<ScheduleSpec>>,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub retry_policy: Option<Json<RetryOverrides>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the worker needs to connect: the resource plus its sealed password.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceWithSecret {
    #[sqlx(flatten)]
    pub resource: Resource,
    pub tenant_id: TenantId,
    pub password_sealed: Vec<u8>,
}

/// A new resource, validated by the caller.
#[derive(Debug)]
pub struct NewResource<'a> {
    pub name: &'a str,
    pub kind: ResourceKind,
    pub host: &'a str,
    pub port: i32,
    pub database: &'a str,
    pub username: &'a str,
    pub password_sealed: Vec<u8>,
    pub options: ScanOptions,
    pub schedule: Option<StoredSchedule>,
    pub retry_policy: Option<RetryOverrides>,
}

/// A schedule as stored: one of the two columns, plus the first due time.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    pub interval_seconds: Option<i32>,
    pub cron: Option<String>,
    pub next_sync_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str = "id, name, kind, host, port, database, username, options, \
     case when sync_interval_seconds is not null
               then jsonb_build_object('interval_seconds', sync_interval_seconds)
          when sync_cron is not null then jsonb_build_object('cron', sync_cron) end as schedule,
     next_sync_at, retry_policy, created_at, updated_at";

/// The unique constraint on `(tenant_id, name)`, for turning a violation into a 409.
pub const NAME_TAKEN_CONSTRAINT: &str = "resources_tenant_id_name_key";

pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: ResourceId,
    new: NewResource<'_>,
) -> Result<Resource, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into resources (id, tenant_id, name, kind, host, port, database, username,
                                password_sealed, options, sync_interval_seconds, sync_cron,
                                next_sync_at, retry_policy)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         returning {COLUMNS}"
    )))
    .bind(id)
    .bind(tenant)
    .bind(new.name)
    .bind(new.kind)
    .bind(new.host)
    .bind(new.port)
    .bind(new.database)
    .bind(new.username)
    .bind(new.password_sealed)
    .bind(Json(new.options))
    .bind(new.schedule.as_ref().and_then(|s| s.interval_seconds))
    .bind(new.schedule.as_ref().and_then(|s| s.cron.clone()))
    .bind(new.schedule.as_ref().map(|s| s.next_sync_at))
    .bind(new.retry_policy.map(Json))
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: ResourceId,
) -> Result<Option<Resource>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from resources where tenant_id = $1 and id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Keyset page of a tenant's resources, oldest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    after: Option<ResourceId>,
    limit: i64,
) -> Result<Vec<Resource>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from resources
         where tenant_id = $1 and ($2::uuid is null or id > $2)
         order by id limit $3"
    )))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Partial update: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ResourcePatch<'a> {
    pub kind: Option<ResourceKind>,
    pub name: Option<&'a str>,
    pub host: Option<&'a str>,
    pub port: Option<i32>,
    pub database: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password_sealed: Option<Vec<u8>>,
    pub options: Option<ScanOptions>,
    /// `Some(None)` removes the schedule.
    pub schedule: Option<Option<StoredSchedule>>,
    /// `Some(None)` removes the overrides.
    pub retry_policy: Option<Option<RetryOverrides>>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: ResourceId,
    patch: ResourcePatch<'_>,
) -> Result<Option<Resource>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update resources set
             name = coalesce($3, name),
             host = coalesce($4, host),
             port = coalesce($5, port),
             database = coalesce($6, database),
             username = coalesce($7, username),
             password_sealed = coalesce($8, password_sealed),
             options = coalesce($9, options),
             sync_interval_seconds = case when $10 then $11 else sync_interval_seconds end,
             sync_cron = case when $10 then $12 else sync_cron end,
             next_sync_at = case when $10 then $13 else next_sync_at end,
             retry_policy = case when $14 then $15 else retry_policy end,
             kind = coalesce($16, kind),
             updated_at = now()
         where tenant_id = $1 and id = $2
         returning {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id)
    .bind(patch.name)
    .bind(patch.host)
    .bind(patch.port)
    .bind(patch.database)
    .bind(patch.username)
    .bind(patch.password_sealed)
    .bind(patch.options.map(Json))
    .bind(patch.schedule.is_some())
    .bind(
        patch
            .schedule
            .as_ref()
            .and_then(|s| s.as_ref()?.interval_seconds),
    )
    .bind(
        patch
            .schedule
            .as_ref()
            .and_then(|s| s.as_ref()?.cron.clone()),
    )
    .bind(
        patch
            .schedule
            .as_ref()
            .and_then(|s| Some(s.as_ref()?.next_sync_at)),
    )
    .bind(patch.retry_policy.is_some())
    .bind(patch.retry_policy.flatten().map(Json))
    .bind(patch.kind)
    .fetch_optional(db)
    .await
}

/// Deletes a resource with its jobs and catalog. Returns whether it existed.
pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: ResourceId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from resources where tenant_id = $1 and id = $2")
        .bind(tenant)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
