//! Batches: the jobs one `POST /v1/syncs` enqueued, counted by state. A batch row is written
//! with its jobs, by [`enqueue_many`](crate::db::jobs::enqueue_many), only if it has any.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::domain::JobState;
use crate::ids::{BatchId, TenantId};

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
