//! Firing due schedules exactly once, however many schedulers run: due resources are claimed
//! with `FOR UPDATE SKIP LOCKED`, and their next tick is advanced in the same transaction as
//! the job insert. The unique index `jobs_one_per_tick` backs this up in the database.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ids::{JobId, ResourceId};
use crate::schedule::Schedule;

/// A resource whose schedule is due.
#[derive(sqlx::FromRow)]
struct Due {
    id: ResourceId,
    sync_interval_seconds: Option<i32>,
    sync_cron: Option<String>,
    /// The tick that is due.
    next_sync_at: DateTime<Utc>,
}

/// Fires up to `limit` due schedules. Returns the ids of the jobs created (a tick that finds an
/// active job for its resource creates none: single flight holds for schedules too).
pub async fn fire_due(
    pool: &PgPool,
    max_attempts: i32,
    limit: i64,
) -> Result<Vec<JobId>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<Due> = sqlx::query_as(
        "select id, sync_interval_seconds, sync_cron, next_sync_at from resources
         where next_sync_at <= now()
         order by next_sync_at limit $1
         for update skip locked",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let mut resource_ids = Vec::with_capacity(due.len());
    let mut ticks = Vec::with_capacity(due.len());
    let mut next_ticks: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(due.len());
    for Due {
        id,
        sync_interval_seconds,
        sync_cron,
        next_sync_at: tick,
    } in due
    {
        let schedule = Schedule::from_columns(sync_interval_seconds, sync_cron.as_deref());
        // After downtime, fire the missed tick once and resume from now, not a storm.
        let next = schedule.and_then(|s| s.next_after(tick.max(now)));
        resource_ids.push(id.uuid());
        ticks.push(tick);
        next_ticks.push(next);
    }
    let job_ids: Vec<Uuid> = resource_ids.iter().map(|_| Uuid::now_v7()).collect();
    let created: Vec<JobId> = sqlx::query_scalar(
        "insert into jobs (id, tenant_id, resource_id, state, max_attempts, scheduled_for)
         select t.job_id, r.tenant_id, r.id, 'queued',
                greatest(1, coalesce((r.retry_policy ->> 'max_attempts')::int, $4)), t.tick
         from unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) as t (job_id, resource_id, tick)
         join resources r on r.id = t.resource_id
         on conflict do nothing
         returning id",
    )
    .bind(&job_ids)
    .bind(&resource_ids)
    .bind(&ticks)
    .bind(max_attempts)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "update resources r set next_sync_at = t.next
         from unnest($1::uuid[], $2::timestamptz[]) as t (id, next)
         where r.id = t.id",
    )
    .bind(&resource_ids)
    .bind(&next_ticks)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(created)
}
