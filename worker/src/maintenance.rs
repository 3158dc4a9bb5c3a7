//! Background duties of every worker process: renew its leases (Redis and PostgreSQL), reap
//! the deliveries of dead workers, end cancelled jobs whose worker was lost, promote due
//! delayed deliveries, re-push jobs whose delivery was lost (Redis flushed, or a crash between
//! insert and push), fire due schedules, and prune old finished jobs. Every duty is safe to run in every process at once.

use std::time::Duration;

use crate::in_flight::InFlight;
use crate::pipeline::WorkerContext;
use metasync_shared::db::{jobs, schedules};
use uuid::Uuid;

/// How often due delayed deliveries (retries, deferrals) are promoted to `ready`.
const PROMOTE_EVERY: Duration = Duration::from_millis(100);
/// How often due schedules are fired.
const SCHEDULE_EVERY: Duration = Duration::from_millis(500);
/// How often old finished jobs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A queued job younger than this may still be waiting for its push; don't call it lost.
const SETTLE: Duration = Duration::from_secs(2);

/// Background duty settings, with the defaults operators get.
#[derive(Debug, Clone, Copy)]
pub struct Duties {
    /// How often to look for jobs whose delivery is missing from Redis (default 10 s).
    pub reconcile_every: Duration,
    /// Finished jobs older than this are deleted (default 30 days).
    pub retention: Duration,
    /// Attempts for jobs created by schedules (default 5).
    pub max_attempts: i32,
}

impl Default for Duties {
    fn default() -> Self {
        Self {
            reconcile_every: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 86_400),
            max_attempts: 5,
        }
    }
}

/// Registers the worker before it takes any delivery, so a crash right after its first pickup
/// is still covered by a lease that can lapse.
pub async fn register(ctx: &WorkerContext) -> anyhow::Result<()> {
    ctx.queue.heartbeat(&ctx.worker_id, ctx.lease).await?;
    Ok(())
}

/// Runs until the returned guard is dropped. `in_flight` holds the attempts whose PostgreSQL
/// leases the heartbeat renews.
pub fn spawn(ctx: WorkerContext, in_flight: InFlight) -> AbortOnDrop {
    let handle = tokio::spawn(async move {
        let heartbeat_every = ctx.lease / 3;
        let every = |period| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        };
        let mut promote = every(PROMOTE_EVERY);
        let mut heartbeat = every(heartbeat_every);
        let mut reconcile = every(ctx.duties.reconcile_every);
        let mut schedule = every(SCHEDULE_EVERY);
        let mut prune = every(PRUNE_EVERY);
        // As often as leases are renewed, so a cancelled job whose worker died ends within
        // one lease plus one heartbeat.
        let mut rescue = every(heartbeat_every);
        loop {
            tokio::select! {
                _ = promote.tick() => {
                    if let Err(e) = ctx.queue.promote_due().await {
                        tracing::warn!(error = %e, "promoting delayed deliveries failed");
                    }
                }
                _ = heartbeat.tick() => beat(&ctx, &in_flight).await,
                _ = rescue.tick() => {
                    match jobs::rescue_cancelled(&ctx.db, None, 1_000).await {
                        Ok(ended) if ended.is_empty() => {}
                        Ok(ended) => {
                            tracing::info!(jobs = ended.len(), "ended cancelled jobs whose worker was lost");
                            metrics::counter!("metasync_jobs_rescued_total").increment(ended.len() as u64);
                        }
                        Err(e) => tracing::warn!(error = %e, "rescuing cancelled jobs failed"),
                    }
                }
                _ = reconcile.tick() => {
                    if let Err(e) = reconcile_deliveries(&ctx).await {
                        tracing::warn!(error = format!("{e:#}"), "reconciling deliveries failed");
                    }
                }
                _ = schedule.tick() => {
                    if let Err(e) = fire_schedules(&ctx).await {
                        tracing::warn!(error = format!("{e:#}"), "firing schedules failed");
                    }
                }
                _ = prune.tick() => {
                    match jobs::prune_finished(&ctx.db, ctx.duties.retention, 1_000).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(jobs = n, "pruned old finished jobs"),
                        Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
                    }
                }
            }
        }
    });
    AbortOnDrop(handle)
}

/// Re-pushes every unfinished job that has no delivery in Redis. PostgreSQL is the truth, so
/// losing Redis loses no job: at worst it delays jobs by one reconcile period.
pub async fn reconcile_deliveries(ctx: &WorkerContext) -> anyhow::Result<usize> {
    let mut after: Option<Uuid> = None;
    let mut pushed = 0;
    loop {
        let ids = jobs::needing_delivery(&ctx.db, after, SETTLE, 1_000, None).await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        let mut missing = ctx.queue.missing(&ids).await?;
        if !missing.is_empty() {
            // Asked again: a job may have finished, and its delivery been acknowledged,
            // between the two reads above. Pushing it would leave a stray delivery.
            missing = jobs::needing_delivery(&ctx.db, None, SETTLE, 1_000, Some(&missing)).await?;
        }
        if !missing.is_empty() {
            ctx.queue.push(&missing).await?;
            pushed += missing.len();
        }
        after = Some(last);
    }
    if pushed > 0 {
        tracing::info!(jobs = pushed, "re-pushed jobs whose delivery was missing");
        metrics::counter!("metasync_deliveries_repaired_total").increment(pushed as u64);
    }
    Ok(pushed)
}

async fn fire_schedules(ctx: &WorkerContext) -> anyhow::Result<()> {
    loop {
        let created = schedules::fire_due(&ctx.db, ctx.duties.max_attempts, 100).await?;
        if created.is_empty() {
            return Ok(());
        }
        ctx.queue.push(&created).await?;
        metrics::counter!("metasync_jobs_scheduled_total").increment(created.len() as u64);
    }
}

async fn beat(ctx: &WorkerContext, in_flight: &InFlight) {
    if let Err(e) = ctx.queue.heartbeat(&ctx.worker_id, ctx.lease).await {
        tracing::warn!(error = %e, "renewing the Redis lease failed");
    }
    let attempts = in_flight.leases();
    if !attempts.is_empty()
        && let Err(e) = jobs::renew_leases(&ctx.db, &attempts, ctx.lease).await
    {
        tracing::warn!(error = %e, "renewing job leases failed");
    }
    match ctx.queue.reap().await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(deliveries = n, "redelivered the work of lapsed workers");
            metrics::counter!("metasync_deliveries_reaped_total").increment(n as u64);
        }
        Err(e) => tracing::warn!(error = %e, "reaping lapsed workers failed"),
    }
    if let Ok((ready, delayed)) = ctx.queue.depth().await {
        metrics::gauge!("metasync_queue_ready_deliveries").set(ready as f64);
        metrics::gauge!("metasync_queue_delayed_deliveries").set(delayed as f64);
    }
}

/// Aborts the maintenance task when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
