//! Background duties of every worker process: renew its leases (Redis and PostgreSQL), reap
//! the deliveries of dead workers, and promote due delayed deliveries.

use std::time::Duration;

use crate::pipeline::WorkerContext;
use metasync_shared::db::jobs;

/// How often due delayed deliveries (retries, deferrals) are promoted to `ready`.
const PROMOTE_EVERY: Duration = Duration::from_millis(100);

/// Registers the worker before it takes any delivery, so a crash right after its first pickup
/// is still covered by a lease that can lapse.
pub async fn register(ctx: &WorkerContext) -> anyhow::Result<()> {
    ctx.queue.heartbeat(&ctx.worker_id, ctx.lease).await?;
    Ok(())
}

/// Runs until the returned guard is dropped.
pub fn spawn(ctx: WorkerContext) -> AbortOnDrop {
    let handle = tokio::spawn(async move {
        let heartbeat_every = ctx.lease / 3;
        let mut promote = tokio::time::interval(PROMOTE_EVERY);
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        promote.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = promote.tick() => {
                    if let Err(e) = ctx.queue.promote_due().await {
                        tracing::warn!(error = %e, "promoting delayed deliveries failed");
                    }
                }
                _ = heartbeat.tick() => beat(&ctx).await,
            }
        }
    });
    AbortOnDrop(handle)
}

async fn beat(ctx: &WorkerContext) {
    if let Err(e) = ctx.queue.heartbeat(&ctx.worker_id, ctx.lease).await {
        tracing::warn!(error = %e, "renewing the Redis lease failed");
    }
    if let Err(e) = jobs::renew_leases(&ctx.db, &ctx.worker_id, ctx.lease).await {
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
