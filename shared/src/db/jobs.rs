//! Sync jobs' state transitions: the truth about every job's state. Each state change is one
//! statement guarded by the state (and, for a running attempt, the lease token) it expects, so
//! a stale worker can never overwrite a newer attempt. Reads and listings are in
//! [`super::job_reads`], batches in [`super::batches`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::db::job_reads;
use crate::db::resources::{self, ResourceWithSecret};
use crate::domain::{ErrorClass, JobState, JobWarning, Progress, SyncStats, Trigger};
use crate::ids::{BatchId, JobId, ResourceId, TenantId};
use crate::queue::{Class, Delivery};
use crate::retry::RetryOverrides;

/// A job as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Job {
    /// Job id; v7, so ordering by id orders by creation.
    pub id: JobId,
    /// The resource this job syncs.
    pub resource_id: ResourceId,
    /// Where the job is in its lifecycle (see `docs/job_states.md`).
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed, fixed when the job was created.
    pub max_attempts: i32,
    /// When the job was submitted.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt was claimed; `None` before the first.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal state; `None` until then.
    pub finished_at: Option<DateTime<Utc>>,
    /// When a `retrying` job becomes due again; `None` in other states.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The latest attempt's error; cleared on success.
    pub error: Option<String>,
    /// Whether `error` is worth retrying; set with it.
    pub error_class: Option<ErrorClass>,
    /// What the successful attempt read and wrote; `None` until the job succeeds.
    #[schema(value_type = Option<SyncStats>)]
    pub stats: Option<Json<SyncStats>>,
    /// What the successful attempt could not read (see `docs/job_states.md`); empty until
    /// the job succeeds, and when it read everything.
    #[schema(value_type = Vec<JobWarning>)]
    pub warnings: Json<Vec<JobWarning>>,
    /// Only while an attempt runs.
    #[schema(value_type = Option<Progress>)]
    pub progress: Option<Json<Progress>>,
    /// A cancel was asked for while the job ran; the worker stops at its next check.
    pub cancel_requested: bool,
    /// The failed or cancelled job this one retries.
    pub retry_of: Option<JobId>,
    /// The batch (`POST /v1/syncs`) that created this job, if any.
    pub batch_id: Option<BatchId>,
    /// What started it: `manual`, `batch`, `schedule` or `retry`.
    pub trigger: Trigger,
    /// For a job a schedule fired, the tick it was fired for.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// The SQL expression of a `jobs` row's [`Trigger`]: a retry links the job it retries, a tick
/// sets `scheduled_for`, a batch sets `batch_id`. A macro, so `COLUMNS` can `concat!` it.
macro_rules! trigger_sql {
    () => {
        "(case when retry_of is not null then 'retry' \
              when scheduled_for is not null then 'schedule' \
              when batch_id is not null then 'batch' else 'manual' end)"
    };
}

/// See [`trigger_sql`].
pub(crate) const TRIGGER_SQL: &str = trigger_sql!();

pub(crate) const COLUMNS: &str = concat!(
    "id, resource_id, state, attempts, max_attempts, created_at, started_at, \
     finished_at, next_attempt_at, error, error_class, stats, warnings, progress, \
     cancel_requested, retry_of, batch_id, scheduled_for, ",
    trigger_sql!(),
    " as trigger"
);

/// A new job's attempts: the resource's override, else the deployment's (`$4`).
const MAX_ATTEMPTS: &str = "greatest(1, coalesce((retry_policy ->> 'max_attempts')::int, $4))";

/// The outcome of asking for a sync of a resource.
#[derive(Debug)]
pub enum Enqueued {
    /// A new job was created; its delivery must be pushed.
    Created(Job),
    /// The resource already had an active job; that one is returned.
    Deduplicated(Job),
}

/// Creates a queued job for the resource, unless it has an active one (single flight, enforced
/// by the partial unique index `jobs_one_active_per_resource`). Returns `None` when the
/// resource does not exist in this tenant.
pub async fn enqueue(
    pool: &PgPool,
    tenant: &TenantId,
    resource_id: ResourceId,
    max_attempts: i32,
    retry_of: Option<JobId>,
) -> Result<Option<Enqueued>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    enqueue_on(&mut conn, tenant, resource_id, max_attempts, retry_of).await
}

/// [`enqueue`] on `conn`, e.g. inside the transaction that also records the request in the
/// audit log. Each statement sees what committed before it (read committed), so the retry
/// loop works the same inside a transaction.
pub async fn enqueue_on(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_id: ResourceId,
    max_attempts: i32,
    retry_of: Option<JobId>,
) -> Result<Option<Enqueued>, sqlx::Error> {
    // The active job may finish between our failed insert and the read; then insert again.
    // `for key share`: a resource deleted meanwhile is skipped (no job, so a 404) instead of
    // failing the jobs' foreign key; one deleted after waits for this insert.
    for _ in 0..5 {
        let created: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into jobs (id, tenant_id, resource_id, state, max_attempts, retry_of)
             select $1, tenant_id, id, 'queued', {MAX_ATTEMPTS}, $5 from resources
             where tenant_id = $2 and id = $3
             for key share
             on conflict (resource_id) where state in ('queued', 'running', 'retrying')
             do nothing
             returning {COLUMNS}"
        )))
        .bind(JobId::new_v7())
        .bind(tenant)
        .bind(resource_id)
        .bind(max_attempts)
        .bind(retry_of)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(job) = created {
            return Ok(Some(Enqueued::Created(job)));
        }
        let active: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from jobs
             where tenant_id = $1 and resource_id = $2
               and state in ('queued', 'running', 'retrying')"
        )))
        .bind(tenant)
        .bind(resource_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(job) = active {
            return Ok(Some(Enqueued::Deduplicated(job)));
        }
        let exists: Option<(Uuid,)> =
            sqlx::query_as("select id from resources where tenant_id = $1 and id = $2")
                .bind(tenant)
                .bind(resource_id)
                .fetch_optional(&mut *conn)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
    }
    Err(sqlx::Error::Protocol(
        "single-flight enqueue kept racing with job completion".into(),
    ))
}

/// Creates queued jobs for many resources of one tenant at once (all of them when
/// `resource_ids` is `None`); resources that already have an active job are skipped. Returns
/// the jobs created. With `batch_id`, the same statement records the batch, only if it
/// created a job: a batch that submits nothing leaves no row.
pub async fn enqueue_many(
    pool: &PgPool,
    tenant: &TenantId,
    resource_ids: Option<&[ResourceId]>,
    max_attempts: i32,
    batch_id: Option<BatchId>,
) -> Result<Vec<JobId>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let many = enqueue_many_on(
        &mut conn,
        tenant,
        resource_ids,
        max_attempts,
        batch_id,
        i64::MAX,
    )
    .await?;
    Ok(many.created)
}

/// What [`enqueue_many_on`] did.
#[derive(Debug, Default)]
pub struct EnqueuedMany {
    /// The jobs created.
    pub created: Vec<JobId>,
    /// Resources that would have had a job but came after the first `at_most`, in request
    /// order (resource id order for all of them); nothing was created for them.
    pub over_limit: Vec<ResourceId>,
}

/// [`enqueue_many`] on `conn` (e.g. the transaction that also records the batch in the audit
/// log), creating at most `at_most` jobs: the first resources in request order that exist and
/// have no active job get one, the others of those are returned as over the limit. A
/// resource named twice counts once.
pub async fn enqueue_many_on(
    conn: &mut PgConnection,
    tenant: &TenantId,
    resource_ids: Option<&[ResourceId]>,
    max_attempts: i32,
    batch_id: Option<BatchId>,
    at_most: i64,
) -> Result<EnqueuedMany, sqlx::Error> {
    let resource_ids: Vec<Uuid> = match resource_ids {
        Some(ids) => ids.iter().map(|id| id.uuid()).collect(),
        None => {
            sqlx::query_scalar("select id from resources where tenant_id = $1 order by id")
                .bind(tenant)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let job_ids: Vec<Uuid> = resource_ids.iter().map(|_| Uuid::now_v7()).collect();
    let rows: Vec<(ResourceId, Option<JobId>)> = sqlx::query_as(
        // The jobs' foreign key to the batch is checked at the end of the statement, once
        // the batch row exists. `for key share`: resources deleted since they were listed are
        // skipped instead of failing the foreign key to them (a 500 the fuzzing found). A
        // resource that gets an active job between the look here and the insert is skipped by
        // the conflict clause (it is deduplicated, not over the limit).
        "with requested as (
             select distinct on (q.resource_id) q.resource_id, q.job_id, q.n
             from unnest($2::uuid[], $3::uuid[]) with ordinality as q (resource_id, job_id, n)
             order by q.resource_id, q.n
         ), runnable as (
             select q.job_id, q.n, r.id as resource_id, r.tenant_id,
                    greatest(1, coalesce((r.retry_policy ->> 'max_attempts')::int, $4))
                        as max_attempts
             from requested q
             join resources r on r.id = q.resource_id and r.tenant_id = $1
             where not exists (
                 select from jobs a
                 where a.resource_id = r.id and a.state in ('queued', 'running', 'retrying'))
             for key share of r
         ), ranked as (
             select runnable.*, row_number() over (order by n) as rank from runnable
         ), created as (
             insert into jobs (id, tenant_id, resource_id, state, max_attempts, batch_id)
             select job_id, tenant_id, resource_id, 'queued', max_attempts, $5
             from ranked where rank <= $6
             on conflict (resource_id) where state in ('queued', 'running', 'retrying')
             do nothing
             returning id, resource_id
         ), batch as (
             insert into batches (id, tenant_id)
             select $5, $1 where $5::uuid is not null and exists (select from created)
         )
         select resource_id, id from created
         union all
         select resource_id, null from ranked where rank > $6",
    )
    .bind(tenant)
    .bind(&resource_ids)
    .bind(&job_ids)
    .bind(max_attempts)
    .bind(batch_id)
    .bind(at_most)
    .fetch_all(&mut *conn)
    .await?;
    let mut many = EnqueuedMany::default();
    for (resource, job) in rows {
        match job {
            Some(job) => many.created.push(job),
            None => many.over_limit.push(resource),
        }
    }
    Ok(many)
}

/// What a worker holds after claiming a job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claim {
    /// The claimed job.
    pub job_id: JobId,
    /// The job's owner, for every tenant-scoped write of the attempt.
    pub tenant_id: TenantId,
    /// The resource to scan.
    pub resource_id: ResourceId,
    /// This attempt's number, from 1; the guard of every state change it makes.
    pub attempt: i32,
    /// Attempts allowed, to decide between retry and failure.
    pub max_attempts: i32,
    /// The fencing token: every later write of this attempt must present it.
    pub lease_token: Uuid,
    /// The resource's retry-policy override, if any.
    pub retry_policy: Option<Json<RetryOverrides>>,
}

/// A claim, with the resource to scan as it is now (read in the claiming statement).
#[derive(Debug, sqlx::FromRow)]
pub struct ClaimedJob {
    /// The claim itself.
    #[sqlx(flatten)]
    pub claim: Claim,
    /// The resource as read in the claiming statement, sealed password included.
    #[sqlx(flatten)]
    pub resource: ResourceWithSecret,
    /// When the job was created (for the end-to-end time).
    pub job_created_at: DateTime<Utc>,
    /// When the job became ready to run: created, or its retry due (for the queue wait).
    pub job_ready_at: DateTime<Utc>,
    /// Whether this claim took the job over from a worker whose lease lapsed.
    pub taken_over: bool,
}

/// Why a delivery could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The job is gone, finished or cancelled: drop the delivery.
    NotRunnable,
    /// Another attempt holds a live lease: look again once it may have lapsed.
    LeasedUntil(DateTime<Utc>),
    /// A `retrying` job whose next attempt is not due yet.
    NotDueUntil(DateTime<Utc>),
}

/// Claims a job for one attempt: `queued`/`retrying` (or `running` under a lapsed lease) becomes
/// `running` with a fresh lease token, and the attempt is recorded. One statement, so two
/// workers holding the same delivery cannot both win.
pub async fn claim(
    pool: &PgPool,
    job_id: JobId,
    worker_id: &str,
    lease: Duration,
) -> Result<Result<ClaimedJob, ClaimRefused>, sqlx::Error> {
    // A `running` job whose lease lapsed lost its worker (crash, kill, freeze): its attempt is
    // closed as lost, and it is taken over, unless that was its last attempt (a poison job
    // that kills every worker must stop cycling), in which case it ends `failed`.
    let claimed: Option<ClaimedJob> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with claimed as (
             update jobs j set state = 'running', attempts = j.attempts + 1, worker_id = $2,
                    lease_token = $3, lease_expires_at = now() + $4 * interval '1 millisecond',
                    started_at = now(), next_attempt_at = null,
                    progress = jsonb_build_object('phase', 'scanning')
             from (select state as prev_state, coalesce(next_attempt_at, created_at) as ready_at
                   from jobs where id = $1) p
             where j.id = $1
               and not j.cancel_requested
               and (j.state = 'queued'
                    or (j.state = 'retrying' and coalesce(j.next_attempt_at, now()) <= now())
                    or (j.state = 'running' and j.lease_expires_at < now()
                        and j.attempts < j.max_attempts))
             returning j.id, j.tenant_id, j.resource_id, j.attempts, j.max_attempts, j.lease_token,
                       j.created_at as job_created_at, p.ready_at as job_ready_at,
                       p.prev_state = 'running' as taken_over
         ), lost as (
             -- Only a taken-over attempt is still open: failed ones were closed when they failed.
             update job_attempts a set finished_at = now(), error_class = 'transient',
                    error = 'the worker running this attempt was lost (lease lapsed)'
             from claimed c
             where a.job_id = c.id and a.attempt = c.attempts - 1 and a.finished_at is null
         ), recorded as (
             insert into job_attempts (job_id, attempt, tenant_id, worker_id)
             select id, attempts, tenant_id, $2 from claimed
         )
         select c.id as job_id, c.tenant_id, c.resource_id, c.attempts as attempt,
                c.max_attempts, c.lease_token, c.job_created_at, c.job_ready_at, c.taken_over,
                r.*
         from claimed c
              cross join lateral (
                  select {}, {} from resources where id = c.resource_id
              ) r",
        resources::COLUMNS,
        resources::SECRET_COLUMNS
    )))
    .bind(job_id)
    .bind(worker_id)
    .bind(Uuid::now_v7())
    .bind(lease.as_millis() as i64)
    .fetch_optional(pool)
    .await?;
    if let Some(claim) = claimed {
        return Ok(Ok(claim));
    }
    if fail_lost_last_attempt(pool, job_id).await?
        || !rescue_cancelled(pool, Some(job_id), 1).await?.is_empty()
    {
        return Ok(Err(ClaimRefused::NotRunnable));
    }
    // (state, cancel_requested, lease_expires_at, next_attempt_at)
    type Current = (JobState, bool, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let current: Option<Current> = sqlx::query_as(
        "select state, cancel_requested, lease_expires_at, next_attempt_at
         from jobs where id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    Ok(Err(match current {
        Some((JobState::Running, false, Some(until), _)) => ClaimRefused::LeasedUntil(until),
        Some((JobState::Retrying, false, _, Some(due))) => ClaimRefused::NotDueUntil(due),
        _ => ClaimRefused::NotRunnable,
    }))
}

/// Ends a job whose worker was lost during its last attempt. Returns whether it did.
async fn fail_lost_last_attempt(pool: &PgPool, job_id: JobId) -> Result<bool, sqlx::Error> {
    const LOST: &str = "the worker running the last attempt was lost (lease lapsed); \
                        no attempts left";
    let done = sqlx::query(
        "with failed as (
             update jobs set state = 'failed', finished_at = now(), error = $2,
                    error_class = 'transient', lease_expires_at = null, progress = null
             where id = $1 and state = 'running' and lease_expires_at < now()
               and attempts >= max_attempts
             returning id, attempts
         )
         update job_attempts a set finished_at = now(), error_class = 'transient', error = $2
         from failed f where a.job_id = f.id and a.attempt = f.attempts
         returning a.job_id",
    )
    .bind(job_id)
    .bind(LOST)
    .fetch_optional(pool)
    .await?;
    Ok(done.is_some())
}

/// A write was refused because the attempt no longer holds the job.
#[derive(Debug, thiserror::Error)]
#[error("job {0} is no longer held by this attempt (lease lapsed, cancelled or taken over)")]
pub struct Fenced(pub JobId);

/// Extends the leases of the given attempts (job id and lease token), and of no others: an
/// attempt its process no longer runs (it failed to record its outcome, or panicked) must lapse
/// on time even while that process lives. A row locked by a long statement (its own catalog
/// write) is skipped rather than waited for, so one busy job never delays the renewal of the
/// rest; a lease is renewed three times per term, so one skipped renewal does not lapse it.
/// Returns how many leases it extended.
pub async fn renew_leases(
    db: impl PgExecutor<'_>,
    attempts: &[(JobId, Uuid)],
    lease: Duration,
) -> Result<u64, sqlx::Error> {
    let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) =
        attempts.iter().map(|(j, t)| (j.uuid(), *t)).unzip();
    let done = sqlx::query(
        "update jobs set lease_expires_at = now() + $3 * interval '1 millisecond'
         where id in (
                 select j.id from jobs j
                 join unnest($1::uuid[], $2::uuid[]) as a (id, token)
                   on j.id = a.id and j.lease_token = a.token
                 where j.state = 'running'
                 for update of j skip locked)
           and state = 'running'",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(lease.as_millis() as i64)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// On shutdown: lets the jobs this worker could not finish be claimed at once by another
/// worker, instead of after their lease lapses. Their tokens stay, so this worker can no
/// longer write for them once another attempt claims them.
pub async fn expire_leases(db: impl PgExecutor<'_>, worker_id: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update jobs set lease_expires_at = now() where worker_id = $1 and state = 'running'",
    )
    .bind(worker_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Locks the job row if, and only if, this attempt still holds it. Called first in the
/// catalog transaction, so a stale attempt never writes beside the current one; [`succeed`]
/// checks again at the end (a cancel may arrive during the write).
pub async fn fence(
    tx: &mut sqlx::PgConnection,
    claim: &Claim,
) -> Result<Result<(), Fenced>, sqlx::Error> {
    // The resource first (the catalog rows' foreign keys take it anyway, later): a delete
    // locks the resource, then its jobs, and the opposite order here could deadlock with it.
    // The CTE's lock is taken as it is scanned, below the job's (taken on the joined row), so
    // one statement keeps that order. A resource deleted meanwhile fences the attempt off.
    let held: Option<(JobId,)> = sqlx::query_as(
        "with resource as (select id from resources where id = $3 for key share)
         select j.id from jobs j join resource r on r.id = j.resource_id
         where j.id = $1 and j.lease_token = $2 and j.state = 'running'
           and not j.cancel_requested
         for update of j",
    )
    .bind(claim.job_id)
    .bind(claim.lease_token)
    .bind(claim.resource_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(held.map(|_| ()).ok_or(Fenced(claim.job_id)))
}

/// Marks the attempt succeeded, inside the catalog transaction. It matches only while the
/// attempt still holds the job (its token, `running`, no cancel requested); on `Err(Fenced)`
/// the caller must roll back. `warnings` are what the attempt could not read.
pub async fn succeed(
    tx: &mut sqlx::PgConnection,
    claim: &Claim,
    stats: &SyncStats,
    warnings: &[JobWarning],
) -> Result<Result<(), Fenced>, sqlx::Error> {
    let (done,): (i64,) = sqlx::query_as(
        // clock_timestamp(), not now(): now() is the transaction's start, before the write.
        "with done as (
             update jobs set state = 'succeeded', finished_at = clock_timestamp(), stats = $3,
                    warnings = $4, error = null, error_class = null, lease_expires_at = null, progress = null
             where id = $1 and lease_token = $2 and state = 'running' and not cancel_requested
             returning id, attempts, finished_at
         ), closed as (
             update job_attempts a set finished_at = done.finished_at
             from done where a.job_id = done.id and a.attempt = done.attempts
         )
         select count(*) from done",
    )
    .bind(claim.job_id)
    .bind(claim.lease_token)
    .bind(Json(stats))
    .bind(Json(warnings))
    .fetch_one(&mut *tx)
    .await?;
    Ok(if done == 1 {
        Ok(())
    } else {
        Err(Fenced(claim.job_id))
    })
}

/// How a failed attempt ends.
#[derive(Debug, Clone, Copy)]
pub enum FailureOutcome {
    /// No attempts left, or a permanent error: the job ends `failed`.
    Failed,
    /// Try again after the delay.
    RetryAfter(Duration),
}

/// Records a failed attempt under its lease token. Returns `Err(Fenced)` if the attempt no
/// longer holds the job (then nothing was written).
pub async fn fail_attempt(
    pool: &PgPool,
    claim: &Claim,
    class: ErrorClass,
    message: &str,
    outcome: FailureOutcome,
) -> Result<Result<(), Fenced>, sqlx::Error> {
    let (state, delay_ms) = match outcome {
        FailureOutcome::Failed => (JobState::Failed, None),
        FailureOutcome::RetryAfter(delay) => (JobState::Retrying, Some(delay.as_millis() as i64)),
    };
    let done = sqlx::query(
        "with done as (
             update jobs set state = $3, error = $4, error_class = $5,
                    finished_at = case when $3 = 'failed' then now() end,
                    next_attempt_at = now() + $6 * interval '1 millisecond',
                    lease_expires_at = null, progress = null
             where id = $1 and lease_token = $2 and state = 'running'
             returning id, attempts
         )
         update job_attempts a set finished_at = now(), error = $4, error_class = $5
         from done where a.job_id = done.id and a.attempt = done.attempts
         returning a.job_id",
    )
    .bind(claim.job_id)
    .bind(claim.lease_token)
    .bind(state)
    .bind(message)
    .bind(class)
    .bind(delay_ms)
    .fetch_optional(pool)
    .await?;
    Ok(done.map(|_| ()).ok_or(Fenced(claim.job_id)))
}

/// What a cancel request did.
#[derive(Debug)]
pub enum Cancelled {
    /// A queued or retrying job: cancelled at once; it will never run.
    Now(Job),
    /// A running job: asked to stop at its next checkpoint; it writes nothing more.
    Requested(Job),
    /// Already finished; nothing to cancel.
    AlreadyFinished(Job),
}

/// Cancels a job in one statement guarded by the state it finds: `queued`/`retrying` become
/// `cancelled`, a `running` job gets `cancel_requested` (its attempt stops at the next
/// checkpoint, or the rescuer ends it if its worker is gone), and a finished job is left
/// alone. Being one statement, it sees the job's state at the moment it locks the row: a job
/// that moves `running` → `retrying` meanwhile is cancelled, never answered "requested" with no
/// flag set. Returns `None` when the job is not the tenant's.
pub async fn cancel(
    pool: &PgPool,
    tenant: &TenantId,
    id: JobId,
) -> Result<Option<Cancelled>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    cancel_on(&mut conn, tenant, id).await
}

/// [`cancel`] on `conn` (e.g. the transaction that also records the cancel in the audit log).
pub async fn cancel_on(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: JobId,
) -> Result<Option<Cancelled>, sqlx::Error> {
    // SET expressions read the row as it was before this update.
    let changed: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update jobs set cancel_requested = true,
                state = case when state = 'running' then state else 'cancelled' end,
                finished_at = case when state = 'running' then finished_at else now() end,
                next_attempt_at = case when state = 'running' then next_attempt_at end
         where tenant_id = $1 and id = $2 and state in ('queued', 'running', 'retrying')
         returning {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(job) = changed {
        return Ok(Some(if job.state == JobState::Cancelled {
            Cancelled::Now(job)
        } else {
            Cancelled::Requested(job)
        }));
    }
    // Matched nothing, so the job is finished or gone; finished states never change, so this
    // read cannot race with anything that would have made the cancel apply.
    Ok(job_reads::get(&mut *conn, tenant, id)
        .await?
        .map(Cancelled::AlreadyFinished))
}

/// Ends `running` jobs whose cancel was requested and whose lease lapsed: the attempt that
/// would have stopped at its next checkpoint lost its worker, so nobody else would ever end
/// them, and they would block their resource for good. Closes the open attempt. `only` narrows
/// the sweep to one job (a delivery for it was just refused). Returns the jobs it ended.
pub async fn rescue_cancelled(
    db: impl PgExecutor<'_>,
    only: Option<JobId>,
    limit: i64,
) -> Result<Vec<JobId>, sqlx::Error> {
    const LOST: &str = "cancelled; the worker running this attempt was lost (lease lapsed)";
    // The same shape as the poison-job path in `claim`: rows locked by a live write are left
    // for the next sweep instead of stalling this one.
    sqlx::query_scalar(
        "with rescued as (
             update jobs set state = 'cancelled', finished_at = now(), lease_expires_at = null,
                    progress = null
             where id in (
                     select id from jobs
                     where state = 'running' and cancel_requested and lease_expires_at < now()
                       and ($1::uuid is null or id = $1)
                     order by lease_expires_at limit $2
                     for update skip locked)
               and state = 'running' and cancel_requested and lease_expires_at < now()
             returning id, attempts
         ), closed as (
             update job_attempts a set finished_at = now(), error = $3
             from rescued r
             where a.job_id = r.id and a.attempt = r.attempts and a.finished_at is null
         )
         select id from rescued",
    )
    .bind(only)
    .bind(limit)
    .bind(LOST)
    .fetch_all(db)
    .await
}

/// Whether a cancel was requested for the attempt's job (a scan checkpoint).
pub async fn cancel_requested(db: impl PgExecutor<'_>, claim: &Claim) -> Result<bool, sqlx::Error> {
    let requested: Option<(bool,)> =
        sqlx::query_as("select cancel_requested from jobs where id = $1 and lease_token = $2")
            .bind(claim.job_id)
            .bind(claim.lease_token)
            .fetch_optional(db)
            .await?;
    // A job we no longer hold is as good as cancelled for this attempt.
    Ok(requested.is_none_or(|(r,)| r))
}

/// Undoes a claim whose attempt never started its work (no connection to the source server
/// could be had under the per-server cap): the job goes back to `queued` (or `retrying`, due in
/// `delay`, if it had earlier attempts), its attempt count and attempt row as before the
/// claim, so waiting for a connection never uses up an attempt. Guarded by the attempt's
/// token and no cancel requested; `false` if either changed (the caller then records the
/// cancel or gives up the job).
pub async fn undo_claim(
    pool: &PgPool,
    claim: &Claim,
    delay: Duration,
) -> Result<bool, sqlx::Error> {
    let undone: Option<(JobId,)> = sqlx::query_as(
        "with undone as (
             update jobs set
                    state = case when attempts > 1 then 'retrying' else 'queued' end,
                    attempts = attempts - 1, worker_id = null, lease_token = null,
                    lease_expires_at = null, progress = null,
                    next_attempt_at = case when attempts > 1
                                           then now() + $3 * interval '1 millisecond' end,
                    started_at = case when attempts > 1 then started_at end
             where id = $1 and lease_token = $2 and state = 'running' and not cancel_requested
             returning id
         ), forgotten as (
             delete from job_attempts a using undone u where a.job_id = u.id and a.attempt = $4
         )
         select id from undone",
    )
    .bind(claim.job_id)
    .bind(claim.lease_token)
    .bind(delay.as_millis() as i64)
    .bind(claim.attempt)
    .fetch_optional(pool)
    .await?;
    Ok(undone.is_some())
}

/// Ends a running attempt whose cancel was requested.
pub async fn mark_cancelled(pool: &PgPool, claim: &Claim) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "with done as (
             update jobs set state = 'cancelled', finished_at = now(), lease_expires_at = null,
                    progress = null
             where id = $1 and lease_token = $2 and state = 'running'
             returning id, attempts
         )
         update job_attempts a set finished_at = now(), error = 'cancelled'
         from done where a.job_id = done.id and a.attempt = done.attempts
         returning a.job_id",
    )
    .bind(claim.job_id)
    .bind(claim.lease_token)
    .fetch_optional(pool)
    .await?;
    Ok(done.is_some())
}

/// Records where a running attempt is, for clients polling the job.
pub async fn set_progress(
    db: impl PgExecutor<'_>,
    claim: &Claim,
    progress: &Progress,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update jobs set progress = $3 where id = $1 and lease_token = $2 and state = 'running'",
    )
    .bind(claim.job_id)
    .bind(claim.lease_token)
    .bind(Json(progress))
    .execute(db)
    .await?;
    Ok(())
}

/// Unfinished jobs that should have a delivery in Redis, keyset-paged by id: `queued` and
/// `retrying` jobs older than `settle` (so a push in flight is not mistaken for a lost one),
/// and `running` jobs whose lease lapsed. `among` narrows the search to those ids.
pub async fn needing_delivery(
    db: impl PgExecutor<'_>,
    after: Option<JobId>,
    settle: Duration,
    limit: i64,
    among: Option<&[JobId]>,
) -> Result<Vec<JobId>, sqlx::Error> {
    let among: Option<Vec<Uuid>> = among.map(|ids| ids.iter().map(|id| id.uuid()).collect());
    sqlx::query_scalar(
        "select id from jobs
         where state in ('queued', 'running', 'retrying')
           and ($1::uuid is null or id > $1)
           and ($4::uuid[] is null or id = any($4))
           and (state <> 'running' or lease_expires_at < now())
           and created_at < now() - $2 * interval '1 millisecond'
         order by id limit $3",
    )
    .bind(after)
    .bind(settle.as_millis() as i64)
    .bind(limit)
    .bind(among)
    .fetch_all(db)
    .await
}

/// The deliveries of these jobs: each routed to its tenant, as scheduled work when a schedule
/// fired it and as manual work otherwise. Ids that are not jobs are left out.
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    job_ids: &[JobId],
) -> Result<Vec<Delivery>, sqlx::Error> {
    let ids: Vec<Uuid> = job_ids.iter().map(|id| id.uuid()).collect();
    let rows: Vec<(JobId, TenantId, bool)> = sqlx::query_as(
        "select id, tenant_id, scheduled_for is not null from jobs where id = any($1) order by id",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job_id, tenant, scheduled)| Delivery {
            job_id,
            tenant,
            class: if scheduled {
                Class::Scheduled
            } else {
                Class::Manual
            },
        })
        .collect())
}

/// Deletes finished jobs older than `retention`, at most `limit` at a time. Returns how many.
pub async fn prune_finished(
    db: impl PgExecutor<'_>,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from jobs where id in (
             select id from jobs
             where state in ('succeeded', 'failed', 'cancelled')
               and finished_at < now() - $1 * interval '1 millisecond'
             limit $2)",
    )
    .bind(retention.as_millis() as i64)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// The unfinished jobs of one state, fleet-wide (`metasync_jobs` and its age gauges).
#[derive(Debug, sqlx::FromRow)]
pub struct FleetFigures {
    /// `queued`, `running` or `retrying`.
    pub state: String,
    /// How many jobs are in it.
    pub jobs: i64,
    /// Since the creation of the oldest job in the state.
    pub oldest_age_seconds: f64,
    /// Since the start of the oldest running attempt (0 for other states).
    pub longest_running_seconds: f64,
}

/// Counts unfinished jobs by state (every unfinished state, zeros included), from the
/// `jobs_unfinished` partial index.
pub async fn fleet_figures(pool: &PgPool) -> Result<Vec<FleetFigures>, sqlx::Error> {
    sqlx::query_as(
        "select s.state, count(j.id) as jobs,
                coalesce(extract(epoch from now() - min(j.created_at)), 0)::float8
                    as oldest_age_seconds,
                coalesce(extract(epoch from now() - min(j.started_at)), 0)::float8
                    as longest_running_seconds
         from unnest(array['queued', 'running', 'retrying']) as s(state)
              left join jobs j on j.state = s.state
         group by s.state order by s.state",
    )
    .fetch_all(pool)
    .await
}
