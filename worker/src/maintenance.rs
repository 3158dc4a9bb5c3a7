//! Background duties of every worker process, each an independent service on its own task
//! with its own interval (River's shape): renew its leases (the Redis worker lease and the
//! PostgreSQL leases of its in-flight attempts, each on its own task so neither ever waits
//! behind other work), reap the deliveries of dead workers, end cancelled jobs whose worker
//! was lost, promote due delayed deliveries, re-push jobs whose delivery was lost (Redis
//! flushed, or a crash between insert and push), fire due schedules, prune old finished jobs,
//! and export the queue gauges. Every duty is safe to run in every process at once; each
//! reports its runs, errors and last success, and logs a repeated failure at most once per
//! [`WARN_EVERY`] with a count.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::in_flight::InFlight;
use crate::pipeline::WorkerContext;
use metasync_shared::db::jobs;
use metasync_shared::ids::JobId;

/// How often due delayed deliveries (retries, deferrals) are promoted to `ready`.
const PROMOTE_EVERY: Duration = Duration::from_millis(100);
/// How often due schedules are fired.
const SCHEDULE_EVERY: Duration = Duration::from_millis(500);
/// How often old finished jobs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A queued job younger than this may still be waiting for its push; don't call it lost.
const SETTLE: Duration = Duration::from_secs(2);
/// A duty that keeps failing logs a warning at most this often (with the count in between),
/// so an outage does not flood the logs.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Background duty settings, with the defaults operators get.
#[derive(Debug, Clone, Copy)]
pub struct Duties {
    /// How often to look for jobs whose delivery is missing from Redis (default 10 s).
    pub reconcile_every: Duration,
    /// Finished jobs older than this are deleted (default 30 days).
    pub retention: Duration,
}

impl Default for Duties {
    fn default() -> Self {
        Self {
            reconcile_every: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Registers the worker before it takes any delivery, so a crash right after its first pickup
/// is still covered by a lease that can lapse.
pub async fn register(ctx: &WorkerContext) -> anyhow::Result<()> {
    ctx.queue.heartbeat(&ctx.worker_id, ctx.lease).await?;
    Ok(())
}

/// Starts every duty on its own task; they run until the returned guard is dropped.
/// `in_flight` holds the attempts whose PostgreSQL leases the heartbeat renews.
pub fn spawn(ctx: WorkerContext, in_flight: InFlight) -> AbortOnDrop {
    let heartbeat_every = ctx.lease / 3;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(run_duty(
        "claimed_audit",
        heartbeat_every,
        ctx.clone(),
        crate::audit::claimed_audit(in_flight.clone()),
    ));
    let renew = move |ctx: WorkerContext| -> DutyFuture {
        let attempts = in_flight.leases();
        Box::pin(async move {
            if !attempts.is_empty() {
                jobs::renew_leases(&ctx.db, &attempts, ctx.lease).await?;
            }
            Ok(())
        })
    };
    tasks.spawn(run_duty(
        "lease_renewal",
        heartbeat_every,
        ctx.clone(),
        renew,
    ));
    let mut duty = |name, every, run: fn(WorkerContext) -> DutyFuture| {
        tasks.spawn(run_duty(name, every, ctx.clone(), run));
    };
    duty("redis_heartbeat", heartbeat_every, |ctx| {
        Box::pin(async move {
            ctx.queue.heartbeat(&ctx.worker_id, ctx.lease).await?;
            Ok(())
        })
    });
    duty("reap", heartbeat_every, |ctx| Box::pin(reap(ctx)));
    // As often as leases are renewed, so a cancelled job whose worker died ends within one
    // lease plus one heartbeat.
    duty("rescue", heartbeat_every, |ctx| Box::pin(rescue(ctx)));
    duty("queue_gauges", heartbeat_every, |ctx| Box::pin(gauges(ctx)));
    duty("promote", PROMOTE_EVERY, |ctx| {
        Box::pin(async move {
            ctx.queue.promote_due().await?;
            Ok(())
        })
    });
    duty("reconcile", ctx.duties.reconcile_every, |ctx| {
        Box::pin(async move {
            reconcile_deliveries(&ctx).await?;
            Ok(())
        })
    });
    duty("schedule", SCHEDULE_EVERY, |ctx| {
        Box::pin(async move { fire_schedules(&ctx).await })
    });
    duty("prune", PRUNE_EVERY, |ctx| Box::pin(prune(ctx)));
    AbortOnDrop(tasks)
}

type DutyFuture = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs one duty every `every` (a late tick is delayed, never bunched), forever.
async fn run_duty<F>(name: &'static str, every: Duration, ctx: WorkerContext, mut run: F)
where
    F: FnMut(WorkerContext) -> DutyFuture + Send + 'static,
{
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warnings = Warnings::new(name);
    loop {
        interval.tick().await;
        let started = Instant::now();
        let result = run(ctx.clone()).await;
        metrics::histogram!("metasync_maintenance_duration_seconds", "duty" => name)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("metasync_maintenance_runs_total", "duty" => name).increment(1);
        match result {
            Ok(()) => {
                metrics::gauge!("metasync_maintenance_last_success_timestamp_seconds", "duty" => name)
                    .set(unix_now());
                warnings.succeeded();
            }
            Err(e) => {
                metrics::counter!("metasync_maintenance_errors_total", "duty" => name).increment(1);
                warnings.failed(&e);
            }
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Rate-limits one duty's failure warnings to one per [`WARN_EVERY`], counting the rest.
struct Warnings {
    duty: &'static str,
    last: Option<Instant>,
    /// Failures since the last warning.
    unlogged: u64,
}

impl Warnings {
    fn new(duty: &'static str) -> Self {
        Self {
            duty,
            last: None,
            unlogged: 0,
        }
    }

    fn failed(&mut self, e: &anyhow::Error) {
        let now = Instant::now();
        if self.last.is_some_and(|at| now - at < WARN_EVERY) {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            duty = self.duty,
            error = format!("{e:#}"),
            failures_since_last_warning = self.unlogged + 1,
            "maintenance duty failed"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }

    fn succeeded(&mut self) {
        if self.unlogged > 0 {
            tracing::info!(
                duty = self.duty,
                unlogged_failures = self.unlogged,
                "maintenance duty recovered"
            );
            self.unlogged = 0;
        }
    }
}

async fn reap(ctx: WorkerContext) -> anyhow::Result<()> {
    let n = ctx.queue.reap(ctx.lease).await?;
    if n > 0 {
        tracing::info!(deliveries = n, "redelivered the work of lapsed workers");
        metrics::counter!("metasync_deliveries_reaped_total").increment(n as u64);
    }
    Ok(())
}

async fn rescue(ctx: WorkerContext) -> anyhow::Result<()> {
    let ended = jobs::rescue_cancelled(&ctx.db, None, 1_000).await?;
    if !ended.is_empty() {
        tracing::info!(
            jobs = ended.len(),
            "ended cancelled jobs whose worker was lost"
        );
        metrics::counter!("metasync_jobs_rescued_total").increment(ended.len() as u64);
    }
    Ok(())
}

async fn gauges(ctx: WorkerContext) -> anyhow::Result<()> {
    let (ready, delayed) = ctx.queue.depth().await?;
    metrics::gauge!("metasync_queue_ready_deliveries").set(ready as f64);
    metrics::gauge!("metasync_queue_delayed_deliveries").set(delayed as f64);
    Ok(())
}

async fn prune(ctx: WorkerContext) -> anyhow::Result<()> {
    let n = jobs::prune_finished(&ctx.db, ctx.duties.retention, 1_000).await?;
    if n > 0 {
        tracing::info!(jobs = n, "pruned old finished jobs");
    }
    Ok(())
}
/// Re-pushes every unfinished job that has no delivery in Redis. PostgreSQL is the truth, so
/// losing Redis loses no job: at worst it delays jobs by one reconcile period.
pub async fn reconcile_deliveries(ctx: &WorkerContext) -> anyhow::Result<usize> {
    let mut after: Option<JobId> = None;
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
            ctx.queue
                .push(&jobs::deliveries(&ctx.db, &missing).await?)
                .await?;
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
    ctx.submitter.fire_schedules(100).await?;
    Ok(())
}

/// Aborts every duty when dropped.
pub struct AbortOnDrop(tokio::task::JoinSet<()>);

impl AbortOnDrop {
    /// Aborts every duty and waits until none runs, so that a heartbeat in flight cannot
    /// renew the worker's lease after shutdown has released it.
    pub async fn stop(mut self) {
        self.0.abort_all();
        while self.0.join_next().await.is_some() {}
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_warn_once_per_period_with_a_count() {
        let mut warnings = Warnings::new("test");
        let e = anyhow::anyhow!("down");
        warnings.failed(&e);
        let first = warnings.last;
        assert!(first.is_some());
        warnings.failed(&e);
        warnings.failed(&e);
        assert_eq!(warnings.unlogged, 2, "two failures held back");
        assert_eq!(warnings.last, first, "no second warning within the period");
        warnings.succeeded();
        assert_eq!(warnings.unlogged, 0);
        warnings.failed(&e);
        assert_eq!(
            warnings.last, first,
            "still one warning per period after a recovery"
        );
    }
}
