//! Batches: the jobs one `POST /v1/syncs` enqueued, counted by state. A batch row is written
//! with its jobs, by [`enqueue_many`](crate::db::jobs::enqueue_many), only if it has any.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::domain::JobState;
use crate::ids::{BatchId, JobId, ResourceId, TenantId};

/// A batch's jobs counted by state; `None` if the batch is not the tenant's.
pub async fn counts(
    db: &PgPool,
    tenant: &TenantId,
    batch: BatchId,
) -> Result<Option<BTreeMap<JobState, i64>>, sqlx::Error> {
    let exists: Option<BatchId> =
        sqlx::query_scalar("select id from batches where tenant_id = $1 and id = $2")
            .bind(tenant)
            .bind(batch)
            .fetch_optional(db)
            .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let counts: Vec<(JobState, i64)> = sqlx::query_as(
        "select state, count(*) from jobs where tenant_id = $1 and batch_id = $2 group by state",
    )
    .bind(tenant)
    .bind(batch)
    .fetch_all(db)
    .await?;
    Ok(Some(counts.into_iter().collect()))
}

/// The ids of a batch's jobs (none if the batch is not the tenant's).
pub async fn job_ids(
    db: &PgPool,
    tenant: &TenantId,
    batch: BatchId,
) -> Result<Vec<JobId>, sqlx::Error> {
    sqlx::query_scalar("select id from jobs where tenant_id = $1 and batch_id = $2")
        .bind(tenant)
        .bind(batch)
        .fetch_all(db)
        .await
}

/// What a batch request did with one of the resources it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SyncOutcome {
    /// A job was created for it in the batch.
    Enqueued,
    /// It had an active job, which it keeps; not part of the batch.
    Deduplicated,
    /// The tenant has no resource with this id.
    NotFound,
    /// Not enqueued: a quota left no room for it (`reason` says which); ask again later.
    Refused,
}

/// Which quota refused a requested resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RefusalReason {
    /// The tenant's unfinished jobs would pass `METASYNC_MAX_ACTIVE_JOBS`.
    ActiveJobsQuota,
}

/// One requested resource and what became of it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RequestedSync {
    /// The id as requested.
    pub resource_id: ResourceId,
    /// What became of it.
    pub outcome: SyncOutcome,
    /// The batch's job (`enqueued`) or the active job it kept (`deduplicated`); `null`
    /// otherwise.
    pub job_id: Option<JobId>,
    /// Why it was `refused`; absent for the other outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RefusalReason>,
}

/// What the batch `batch` (`None` when it created nothing) did with each of `requested`, in
/// request order, `refused` being those the active-jobs cap left out. Read after the batch
/// committed: a job of the batch is found by its batch id whatever its state now, and any
/// other resource left out of the batch had an active job then, its latest job.
pub async fn outcomes(
    db: &PgPool,
    tenant: &TenantId,
    batch: Option<BatchId>,
    requested: &[ResourceId],
    refused: &[ResourceId],
) -> Result<Vec<RequestedSync>, sqlx::Error> {
    sqlx::query_as(
        "select q.resource_id,
                case when b.id is not null then 'enqueued'
                     when r.id is null then 'not_found'
                     when q.resource_id = any ($4::uuid[]) then 'refused'
                     else 'deduplicated' end as outcome,
                case when b.id is not null then b.id
                     when r.id is not null and q.resource_id <> all ($4::uuid[]) then l.id end as job_id,
                case when b.id is null and r.id is not null and q.resource_id = any ($4::uuid[])
                     then 'active_jobs_quota' end as reason
         from unnest($2::uuid[]) with ordinality as q (resource_id, n)
         left join resources r on r.id = q.resource_id and r.tenant_id = $1
         left join lateral (
             select id from jobs j
             where j.tenant_id = $1 and j.resource_id = q.resource_id and j.batch_id = $3
             limit 1
         ) b on true
         left join lateral (
             select id from jobs j
             where j.tenant_id = $1 and j.resource_id = q.resource_id
             order by id desc limit 1
         ) l on true
         order by q.n",
    )
    .bind(tenant)
    .bind(requested)
    .bind(batch)
    .bind(refused)
    .fetch_all(db)
    .await
}
