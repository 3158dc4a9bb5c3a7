//! Registered sources. Passwords are stored sealed and never selected into [`Resource`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use crate::custody::{ConnectionTarget, RecordFormat, SealedPassword};
use crate::domain::{JobState, ResourceKind};
use crate::ids::{JobId, ResourceId, TenantId};
use crate::retry::RetryOverrides;
use crate::scan_options::ScanOptions;
use crate::schedule::ScheduleSpec;
use crate::tls::SourceTls;

/// A registered source as clients see it: every field but the password.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Resource {
    /// Resource id; v7, so ordering by id orders by creation.
    pub id: ResourceId,
    /// Client-chosen name, unique per tenant.
    pub name: String,
    /// The source's engine.
    pub kind: ResourceKind,
    /// Host name or address of the source server.
    pub host: String,
    /// TCP port of the source server.
    pub port: i32,
    /// The database to connect to (and to scan unless the options select others).
    pub database: String,
    /// Login role on the source.
    pub username: String,
    /// Which databases, schemas and tables a sync reads.
    #[schema(value_type = ScanOptions)]
    pub options: Json<ScanOptions>,
    /// `{"interval_seconds": n}` or `{"cron": "…"}`; `null` when syncs are only on request.
    #[schema(value_type = Option<ScheduleSpec>)]
    pub schedule: Option<Json<ScheduleSpec>>,
    /// When the scheduler next submits a sync; `None` without a schedule.
    pub next_sync_at: Option<DateTime<Utc>>,
    /// Per-resource changes to the worker's default retry policy; `None` keeps the defaults.
    #[schema(value_type = Option<RetryOverrides>)]
    pub retry_policy: Option<Json<RetryOverrides>>,
    /// How workers secure the connection (TLS mode and CA).
    #[schema(value_type = SourceTls)]
    pub tls: Json<SourceTls>,
    /// When the resource was registered.
    pub created_at: DateTime<Utc>,
    /// When the resource was last changed through the API.
    pub updated_at: DateTime<Utc>,
    /// Its id in the platform whose system service pushes it through the internal API;
    /// `None` for resources registered through `/v1`.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The resource's last finished sync; `None` until one finishes.
    #[schema(value_type = Option<LastSync>)]
    #[serde(default)]
    pub last_sync: Option<Json<LastSync>>,
    /// When a sync of it last succeeded; `None` if none has.
    #[serde(default)]
    pub last_succeeded_at: Option<DateTime<Utc>>,
    /// The error of its last failed sync, until a later sync succeeds; `None` otherwise.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A resource's last finished sync, as its job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastSync {
    /// The job, readable at `/v1/jobs/{id}` until finished jobs are pruned.
    pub job_id: JobId,
    /// How it ended: `succeeded`, `failed` or `cancelled`.
    pub state: JobState,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

/// What the worker needs to connect: the resource plus its sealed password.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceWithSecret {
    /// The fields clients see.
    #[sqlx(flatten)]
    pub resource: Resource,
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The sealed password's record (see [`crate::custody`]).
    pub password_sealed: Vec<u8>,
    /// The master key that sealed it.
    pub password_key_id: String,
    /// What the record's associated data covers.
    pub password_format: RecordFormat,
}

/// The sealed password's columns of [`ResourceWithSecret`].
pub(crate) const SECRET_COLUMNS: &str = "password_sealed, password_key_id, password_format";

impl ResourceWithSecret {
    /// The sealed password as [`crate::custody::OpeningKeys::open`] takes it.
    pub fn sealed_password(&self) -> SealedPassword {
        SealedPassword {
            key_id: self.password_key_id.clone(),
            record: self.password_sealed.clone(),
            format: self.password_format,
        }
    }

    /// Where the password may be sent: the resource as it is now.
    pub fn target(&self) -> ConnectionTarget<'_> {
        self.resource.target(&self.tenant_id)
    }
}

impl Resource {
    /// Names of the client-visible fields (besides the password, which is not here) that differ
    /// between `self` and `other`, for the audit log.
    pub fn changed_fields(&self, other: &Resource) -> Vec<String> {
        let options = |r: &Resource| serde_json::to_value(&r.options.0).ok();
        let schedule = |r: &Resource| r.schedule.as_ref().map(|s| s.0.clone());
        let retry = |r: &Resource| r.retry_policy.as_ref().map(|p| p.0.clone());
        [
            ("name", self.name != other.name),
            ("kind", self.kind != other.kind),
            ("host", self.host != other.host),
            ("port", self.port != other.port),
            ("database", self.database != other.database),
            ("username", self.username != other.username),
            ("options", options(self) != options(other)),
            ("schedule", schedule(self) != schedule(other)),
            ("retry_policy", retry(self) != retry(other)),
            ("tls", self.tls.0 != other.tls.0),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(field, _)| field.to_owned())
        .collect()
    }

    /// The connection target of this resource in `tenant`: what its password is bound to.
    pub fn target<'a>(&'a self, tenant: &'a TenantId) -> ConnectionTarget<'a> {
        ConnectionTarget {
            tenant,
            resource: self.id,
            kind: self.kind,
            host: &self.host,
            port: self.port,
            username: &self.username,
            database: &self.database,
            tls: &self.tls.0,
        }
    }
}

/// A password as the API stores it: sealed to the fleet's key, and fingerprinted.
#[derive(Debug, Clone)]
pub struct StoredPassword {
    /// The sealed record and its key id.
    pub sealed: SealedPassword,
    /// Its keyed fingerprint ([`crate::custody::Fingerprinter`]).
    pub fingerprint: Vec<u8>,
}

/// A new resource, validated by the caller.
#[derive(Debug)]
pub struct NewResource<'a> {
    /// Client-chosen name, unique per tenant (see [`NAME_TAKEN_CONSTRAINT`]).
    pub name: &'a str,
    /// The source's engine.
    pub kind: ResourceKind,
    /// Host name or address of the source server.
    pub host: &'a str,
    /// TCP port of the source server.
    pub port: i32,
    /// The database to connect to.
    pub database: &'a str,
    /// Login role on the source.
    pub username: &'a str,
    /// The password, sealed for this resource's target.
    pub password: StoredPassword,
    /// Which databases, schemas and tables a sync reads.
    pub options: ScanOptions,
    /// `None` for syncs on request only.
    pub schedule: Option<StoredSchedule>,
    /// `None` keeps the worker's default retry policy.
    pub retry_policy: Option<RetryOverrides>,
    /// Its id in the platform that pushed it through the internal API (see
    /// [`EXTERNAL_ID_TAKEN_CONSTRAINT`]); `None` through `/v1`.
    pub external_id: Option<&'a str>,
    /// How workers secure the connection.
    pub tls: SourceTls,
}

/// A schedule as stored: one of the two columns, plus the first due time.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    /// Seconds between syncs; set when `cron` is not.
    pub interval_seconds: Option<i32>,
    /// Cron expression (UTC); set when `interval_seconds` is not.
    pub cron: Option<String>,
    /// When the first scheduled sync is due.
    pub next_sync_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str = "id, name, kind, host, port, database, username, options, \
     case when sync_interval_seconds is not null
               then jsonb_build_object('interval_seconds', sync_interval_seconds)
          when sync_cron is not null then jsonb_build_object('cron', sync_cron) end as schedule,
     next_sync_at, retry_policy, tls, created_at, updated_at, external_id,
     case when last_job_id is not null
               then jsonb_build_object('job_id', last_job_id, 'state', last_job_state,
                                       'finished_at', last_job_finished_at) end as last_sync,
     last_succeeded_at, last_error";

/// The unique constraint on `(tenant_id, name)`, for turning a violation into a 409.
pub const NAME_TAKEN_CONSTRAINT: &str = "resources_tenant_id_name_key";

/// The unique constraint on `(tenant_id, external_id)`: two pushes of a new resource raced.
pub const EXTERNAL_ID_TAKEN_CONSTRAINT: &str = "resources_tenant_id_external_id_key";

/// Stores a new resource for the tenant and returns it as clients see it.
pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: ResourceId,
    new: NewResource<'_>,
) -> Result<Resource, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into resources (id, tenant_id, name, kind, host, port, database, username,
                                password_sealed, options, sync_interval_seconds, sync_cron,
                                next_sync_at, retry_policy, password_key_id, password_fingerprint,
                                external_id, tls, password_format)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19)
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
    .bind(&new.password.sealed.record)
    .bind(Json(new.options))
    .bind(new.schedule.as_ref().and_then(|s| s.interval_seconds))
    .bind(new.schedule.as_ref().and_then(|s| s.cron.clone()))
    .bind(new.schedule.as_ref().map(|s| s.next_sync_at))
    .bind(new.retry_policy.map(Json))
    .bind(&new.password.sealed.key_id)
    .bind(&new.password.fingerprint)
    .bind(new.external_id)
    .bind(Json(new.tls))
    .bind(new.password.sealed.format)
    .fetch_one(db)
    .await
}

/// The tenant's resource, or `None` if it has no resource with this id.
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

/// Keyset page of a tenant's resources, oldest first; only the one named `name` if given.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    name: Option<&str>,
    after: Option<ResourceId>,
    limit: i64,
) -> Result<Vec<Resource>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from resources
         where tenant_id = $1 and ($2::uuid is null or id > $2)
           and ($4::text is null or name = $4)
         order by id limit $3"
    )))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .bind(name)
    .fetch_all(db)
    .await
}

/// Partial update: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ResourcePatch<'a> {
    /// New engine.
    pub kind: Option<ResourceKind>,
    /// New name; may hit [`NAME_TAKEN_CONSTRAINT`].
    pub name: Option<&'a str>,
    /// New host.
    pub host: Option<&'a str>,
    /// New port.
    pub port: Option<i32>,
    /// New database.
    pub database: Option<&'a str>,
    /// New login role.
    pub username: Option<&'a str>,
    /// New password, sealed for the target the resource has after this patch.
    pub password: Option<StoredPassword>,
    /// New scan options, replacing the old ones whole.
    pub options: Option<ScanOptions>,
    /// `Some(None)` removes the schedule.
    pub schedule: Option<Option<StoredSchedule>>,
    /// `Some(None)` removes the overrides.
    pub retry_policy: Option<Option<RetryOverrides>>,
    /// New TLS settings, replacing the old ones whole.
    pub tls: Option<SourceTls>,
}

/// Applies `patch` to the tenant's resource `current`, read just before: `None` if it is gone,
/// or if its connection target (kind, host, port, database, user) or TLS settings changed
/// since that read, so a password sealed for the target the caller saw is never stored beside
/// another.
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    current: &Resource,
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
             password_key_id = coalesce($22, password_key_id),
             password_format = coalesce($26, password_format),
             password_fingerprint = case when $8 is null then password_fingerprint else $23 end,
             options = coalesce($9, options),
             sync_interval_seconds = case when $10 then $11 else sync_interval_seconds end,
             sync_cron = case when $10 then $12 else sync_cron end,
             next_sync_at = case when $10 then $13 else next_sync_at end,
             retry_policy = case when $14 then $15 else retry_policy end,
             kind = coalesce($16, kind),
             tls = coalesce($24, tls),
             updated_at = now()
         where tenant_id = $1 and id = $2
           and kind = $17 and host = $18 and port = $19 and database = $20 and username = $21
           and tls = $25
         returning {COLUMNS}"
    )))
    .bind(tenant)
    .bind(current.id)
    .bind(patch.name)
    .bind(patch.host)
    .bind(patch.port)
    .bind(patch.database)
    .bind(patch.username)
    .bind(patch.password.as_ref().map(|p| &p.sealed.record))
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
    .bind(current.kind)
    .bind(&current.host)
    .bind(current.port)
    .bind(&current.database)
    .bind(&current.username)
    .bind(patch.password.as_ref().map(|p| &p.sealed.key_id))
    .bind(patch.password.as_ref().map(|p| &p.fingerprint))
    .bind(patch.tls.map(Json))
    .bind(&current.tls)
    .bind(patch.password.as_ref().map(|p| p.sealed.format))
    .fetch_optional(db)
    .await
}

/// Deletes a resource with its catalog, leaving a tombstone (id, name, kind) and its jobs, which
/// stay readable; its active jobs are cancelled. Returns its name, or `None` if it did not
/// exist. Run it in a transaction: it is two statements.
pub async fn delete(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ResourceId,
) -> Result<Option<String>, sqlx::Error> {
    // Lock order, everywhere: the resource, then its jobs. An enqueue holds the resource (key
    // share) while it waits on an active job's row, and an attempt's catalog write takes it
    // before its job (`jobs::fence`); taking the jobs first here deadlocked with a batch
    // (a fuzz finding).
    sqlx::query("select from resources where tenant_id = $1 and id = $2 for update")
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    // Its active jobs end first, so no claim can start one on a resource that is gone (a
    // running attempt's outcome is then fenced off: the job is no longer `running`).
    sqlx::query(
        "with ended as (
             update jobs set state = 'cancelled', cancel_requested = true, finished_at = now(),
                    next_attempt_at = null, lease_expires_at = null,
                    error = 'the resource was deleted', error_class = 'permanent'
             where tenant_id = $1 and resource_id = $2
               and state in ('queued', 'running', 'retrying')
             returning id
         )
         update job_attempts a set finished_at = now(), error_class = 'permanent',
                error = 'the resource was deleted'
         from ended e where a.job_id = e.id and a.finished_at is null",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "with gone as (
             delete from resources where tenant_id = $1 and id = $2
             returning id, tenant_id, name, kind
         ), kept as (
             insert into resource_tombstones (id, tenant_id, name, kind)
             select id, tenant_id, name, kind from gone
         )
         select name from gone",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
}

/// A resource read for an upsert (by external id or by name), with its password's fingerprint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExternalResource {
    /// The fields clients see.
    #[sqlx(flatten)]
    pub resource: Resource,
    /// The stored password's fingerprint; `None` for a record not fingerprinted yet.
    pub password_fingerprint: Option<Vec<u8>>,
}

/// How an upsert finds the resource it replaces.
#[derive(Debug, Clone, Copy)]
pub enum UpsertTarget<'a> {
    /// By the caller's external id (the internal API).
    ExternalId(&'a str),
    /// By name (`PUT /v1/resources/by-name/{name}`).
    Name(&'a str),
}

/// The tenant's resource that `target` names, locked for the rest of the transaction (an
/// upsert reads, compares and writes it), with its password's fingerprint.
pub async fn get_for_update(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    target: UpsertTarget<'_>,
) -> Result<Option<ExternalResource>, sqlx::Error> {
    let (column, value) = match target {
        UpsertTarget::ExternalId(id) => ("external_id", id),
        UpsertTarget::Name(name) => ("name", name),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS}, password_fingerprint from resources
         where tenant_id = $1 and {column} = $2
         for update"
    )))
    .bind(tenant)
    .bind(value)
    .fetch_optional(db)
    .await
}

/// Up to `limit` resources whose password is not sealed under `key_id` or not in the current
/// [`RecordFormat`], after `after` in id order: the next page for `rotate-master-key`.
pub async fn needing_reseal(
    db: impl PgExecutor<'_>,
    key_id: &str,
    after: Option<ResourceId>,
    limit: i64,
) -> Result<Vec<ResourceWithSecret>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS}, tenant_id, {SECRET_COLUMNS} from resources
         where (password_key_id <> $1 or password_format <> $4)
           and ($2::uuid is null or id > $2)
         order by id limit $3"
    )))
    .bind(key_id)
    .bind(after)
    .bind(limit)
    .bind(RecordFormat::CURRENT)
    .fetch_all(db)
    .await
}

/// Replaces a resource's sealed password with `resealed` if it still holds `old` (a password
/// set meanwhile through the API wins). `fingerprint` fills a missing fingerprint.
pub async fn reseal(
    db: impl PgExecutor<'_>,
    id: ResourceId,
    old: &SealedPassword,
    resealed: &SealedPassword,
    fingerprint: Option<&[u8]>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update resources
         set password_sealed = $4, password_key_id = $5, password_format = $7,
             password_fingerprint = coalesce(password_fingerprint, $6)
         where id = $1 and password_key_id = $2 and password_sealed = $3
           and password_format = $8",
    )
    .bind(id)
    .bind(&old.key_id)
    .bind(&old.record)
    .bind(&resealed.record)
    .bind(&resealed.key_id)
    .bind(fingerprint)
    .bind(resealed.format)
    .bind(old.format)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many resources the tenant has.
pub async fn count(db: impl PgExecutor<'_>, tenant: &TenantId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from resources where tenant_id = $1")
        .bind(tenant)
        .fetch_one(db)
        .await
}

/// Resources by freshness, and how late the schedules are, fleet-wide. The definitions are
/// docs/metrics.md's (`metasync_resources`): failing (its last finished, not cancelled, job
/// failed), never_synced (no success yet), stale (an interval schedule's last success older
/// than twice the interval plus 60 s, or any schedule's next tick over 60 s past), else fresh.
#[derive(Debug, sqlx::FromRow)]
pub struct Freshness {
    /// Resources of each freshness.
    pub fresh: i64,
    /// See above.
    pub stale: i64,
    /// See above.
    pub failing: i64,
    /// See above.
    pub never_synced: i64,
    /// Scheduled resources whose next tick is over 60 s past.
    pub overdue: i64,
    /// How far past due the most overdue tick is (0 when none is due).
    pub worst_lag_seconds: f64,
}

/// Counts every resource's freshness in one pass over the resources table.
pub async fn freshness(db: impl PgExecutor<'_>) -> Result<Freshness, sqlx::Error> {
    sqlx::query_as(
        "select count(*) filter (where f = 'fresh') as fresh,
                count(*) filter (where f = 'stale') as stale,
                count(*) filter (where f = 'failing') as failing,
                count(*) filter (where f = 'never_synced') as never_synced,
                count(*) filter (where next_sync_at < now() - interval '60 seconds') as overdue,
                coalesce(extract(epoch from now() - min(next_sync_at)
                                 filter (where next_sync_at <= now())), 0)::float8
                    as worst_lag_seconds
         from (select next_sync_at,
                      case when last_error is not null then 'failing'
                           when last_succeeded_at is null then 'never_synced'
                           when last_succeeded_at < now()
                                    - make_interval(secs => 2 * sync_interval_seconds + 60)
                                or next_sync_at < now() - interval '60 seconds' then 'stale'
                           else 'fresh' end as f
               from resources) r",
    )
    .fetch_one(db)
    .await
}
