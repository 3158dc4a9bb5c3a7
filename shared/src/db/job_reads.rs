//! Reading jobs as clients see them: one job, its attempt history, and keyset-paged listings.
//! Nothing here changes a job; the transitions are in [`super::jobs`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::db::jobs::{COLUMNS, Job, TRIGGER_SQL};
use crate::domain::{ErrorClass, JobState, Trigger};
use crate::ids::{BatchId, JobId, ResourceId, TenantId};

/// One attempt of a job, for its history.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Attempt {
    /// Attempt number, from 1.
    pub attempt: i32,
    /// Id of the worker that ran it.
    pub worker: String,
    /// When the worker claimed it.
    pub started_at: DateTime<Utc>,
    /// `None` while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether retrying could help; `None` unless it failed.
    pub error_class: Option<ErrorClass>,
    /// `None` unless it failed.
    pub error: Option<String>,
}

/// The tenant's job, or `None` if it has no job with this id.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: JobId,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from jobs where tenant_id = $1 and id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The job's attempts, oldest first. The caller has already checked the job is the tenant's.
pub async fn attempts(db: impl PgExecutor<'_>, job_id: JobId) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(
        "select attempt, worker_id as worker, started_at, finished_at, error_class, error
         from job_attempts where job_id = $1 order by attempt",
    )
    .bind(job_id)
    .fetch_all(db)
    .await
}

/// Filters for listing jobs.
#[derive(Debug, Default)]
pub struct JobFilter {
    /// Only jobs of this resource.
    pub resource_id: Option<ResourceId>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this batch.
    pub batch_id: Option<BatchId>,
    /// Only jobs started this way.
    pub trigger: Option<Trigger>,
    /// Only jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Keyset cursor: the last id of the previous page (newest first).
    pub before: Option<JobId>,
    /// Page size; the caller clamps it.
    pub limit: i64,
}

/// The tenant's jobs, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    filter: &JobFilter,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from jobs
         where tenant_id = $1
           and ($2::uuid is null or resource_id = $2)
           and ($3::text is null or state = $3)
           and ($4::uuid is null or id < $4)
           and ($6::uuid is null or batch_id = $6)
           and ($7::text is null or {TRIGGER_SQL} = $7)
           and ($8::timestamptz is null or created_at >= $8)
         order by id desc limit $5"
    )))
    .bind(tenant)
    .bind(filter.resource_id)
    .bind(filter.state)
    .bind(filter.before)
    .bind(filter.limit)
    .bind(filter.batch_id)
    .bind(filter.trigger)
    .bind(filter.since)
    .fetch_all(db)
    .await
}

/// How many unfinished (queued, running, retrying) jobs the tenant has, counted up to `up_to`
/// (enough to compare with a cap without counting a huge backlog whole).
pub async fn count_active(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    up_to: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from (
             select 1 from jobs
             where tenant_id = $1 and state in ('queued', 'running', 'retrying')
             limit $2
         ) active",
    )
    .bind(tenant)
    .bind(up_to)
    .fetch_one(db)
    .await
}

/// The fleet's unfinished work, from PostgreSQL (the truth; Redis holds only deliveries).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Backlog {
    /// Jobs waiting for their first attempt.
    pub queued: i64,
    /// Jobs with an attempt in progress.
    pub running: i64,
    /// Jobs between attempts (due or not).
    pub retrying: i64,
    /// Retrying jobs whose next attempt is due: waiting for a worker like queued ones.
    pub retrying_due: i64,
    /// How long the longest-waiting job has waited for a worker, in seconds: a queued job
    /// since it was created, a due retry since its next attempt fell due. `None` when none
    /// waits.
    pub oldest_waiting_seconds: Option<f64>,
}

/// Counts unfinished jobs of every tenant by state, over the partial index of unfinished jobs.
pub async fn backlog(db: impl PgExecutor<'_>) -> Result<Backlog, sqlx::Error> {
    sqlx::query_as(
        "select count(*) filter (where state = 'queued') as queued,
                count(*) filter (where state = 'running') as running,
                count(*) filter (where state = 'retrying') as retrying,
                count(*) filter (where state = 'retrying' and next_attempt_at <= now())
                    as retrying_due,
                extract(epoch from now() - min(
                    case when state = 'queued' then created_at
                         when state = 'retrying' and next_attempt_at <= now()
                             then next_attempt_at end))::float8 as oldest_waiting_seconds
         from jobs where state in ('queued', 'running', 'retrying')",
    )
    .fetch_one(db)
    .await
}
