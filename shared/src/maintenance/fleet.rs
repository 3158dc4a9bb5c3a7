//! The fleet-wide duties, run by the maintenance leader alone: reap the deliveries of dead
//! workers, end cancelled jobs whose worker was lost, promote due delayed deliveries, re-push
//! jobs whose delivery was lost (Redis flushed, or a crash between insert and push), fire due
//! schedules, prune old finished jobs (and audit events and retired table ids as old, and old
//! webhook deliveries)
//! and export the queue gauges.
//! Each is still safe to run in several processes at once, so the moment of a leadership
//! change needs no care.

use std::time::Duration;

use sqlx::PgPool;

use super::Settings;
use super::duty::{Duty, DutyError, DutySet};
use crate::db::{audit, catalog, connection_tests, jobs, resources, webhooks};
use crate::ids::JobId;
use crate::queue::Queue;
use crate::submit::Submitter;

/// How often due delayed deliveries (retries, deferrals) are promoted to `ready`.
const PROMOTE_EVERY: Duration = Duration::from_millis(100);
/// How often due schedules are fired.
const SCHEDULE_EVERY: Duration = Duration::from_millis(500);
/// How often old finished jobs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Audit events deleted per statement, and statements per prune run at most.
const AUDIT_PRUNE_PAGE: i64 = 10_000;
const AUDIT_PRUNE_PAGES: usize = 10;
/// Finished webhook deliveries each hook keeps past the retention, newest first: a quiet
/// hook's last answers stay readable (`GET /v1/webhooks/{id}/deliveries`) to debug it.
pub const KEPT_DELIVERIES_PER_HOOK: i64 = 100;
/// Webhook deliveries deleted per statement, and statements per prune run at most.
const DELIVERY_PRUNE_PAGE: i64 = 10_000;
const DELIVERY_PRUNE_PAGES: usize = 10;
/// A queued job younger than this may still be waiting for its push; don't call it lost.
const SETTLE: Duration = Duration::from_secs(2);

/// What the fleet-wide duties work on. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    /// The catalog database.
    pub db: PgPool,
    /// The delivery queue.
    pub queue: Queue,
    /// Creates the jobs that schedules fire.
    pub submitter: Submitter,
    /// Cadences and retention.
    pub settings: Settings,
}

/// Starts every fleet-wide duty, each on its own task.
pub(crate) fn spawn(fleet: &Fleet) -> DutySet {
    let every_third_of_lease = fleet.settings.lease / 3;
    let mut duties = DutySet::default();
    let mut duty = |name, every, run: fn(Fleet) -> super::DutyFuture| {
        duties.spawn(Duty::new(name, every), fleet.clone(), run);
    };
    duty("reap", every_third_of_lease, |fleet| Box::pin(reap(fleet)));
    // As often as leases are renewed, so a cancelled job whose worker died ends within one
    // lease plus one heartbeat.
    duty("rescue", every_third_of_lease, |fleet| {
        Box::pin(rescue(fleet))
    });
    duty("queue_gauges", every_third_of_lease, |fleet| {
        Box::pin(gauges(fleet))
    });
    duty("fleet_gauges", every_third_of_lease, |fleet| {
        Box::pin(fleet_gauges(fleet))
    });
    duty("promote", PROMOTE_EVERY, |fleet| {
        Box::pin(async move {
            fleet.queue.promote_due().await?;
            Ok(())
        })
    });
    duty("reconcile", fleet.settings.reconcile_every, |fleet| {
        Box::pin(async move {
            reconcile_deliveries(&fleet).await?;
            Ok(())
        })
    });
    duty("schedule", SCHEDULE_EVERY, |fleet| {
        Box::pin(async move {
            fleet.submitter.fire_schedules(100).await?;
            Ok(())
        })
    });
    duty("prune", PRUNE_EVERY, |fleet| Box::pin(prune(fleet)));
    duties
}

async fn reap(fleet: Fleet) -> Result<(), DutyError> {
    let n = fleet.queue.reap(fleet.settings.lease).await?;
    if n > 0 {
        tracing::info!(deliveries = n, "redelivered the work of lapsed workers");
        metrics::counter!("metasync_deliveries_reaped_total").increment(n as u64);
    }
    Ok(())
}

async fn rescue(fleet: Fleet) -> Result<(), DutyError> {
    let ended = jobs::rescue_cancelled(&fleet.db, None, 1_000).await?;
    if !ended.is_empty() {
        tracing::info!(
            jobs = ended.len(),
            "ended cancelled jobs whose worker was lost"
        );
        metrics::counter!("metasync_jobs_rescued_total").increment(ended.len() as u64);
    }
    Ok(())
}

/// The fleet's Redis side: deliveries by place, and the live workers with their concurrency.
async fn gauges(fleet: Fleet) -> Result<(), DutyError> {
    let (ready, delayed) = fleet.queue.depth().await?;
    let pending = fleet.queue.pending_count().await?;
    let workers = fleet.queue.workers().await?;
    let live = workers.iter().filter(|w| w.live);
    let claimed: u64 = workers.iter().map(|w| w.in_flight).sum();
    let concurrency: u64 = live
        .clone()
        .filter_map(|w| w.concurrency)
        .map(u64::from)
        .sum();
    metrics::gauge!("metasync_queue_ready_deliveries").set(ready as f64);
    metrics::gauge!("metasync_queue_delayed_deliveries").set(delayed as f64);
    metrics::gauge!("metasync_queue_pending_deliveries").set(pending as f64);
    metrics::gauge!("metasync_queue_claimed_deliveries").set(claimed as f64);
    metrics::gauge!("metasync_workers_live").set(live.count() as f64);
    metrics::gauge!("metasync_workers_concurrency").set(concurrency as f64);
    Ok(())
}

/// The fleet's PostgreSQL side: unfinished jobs, resource freshness and schedule lag
/// (definitions in docs/metrics.md). Each query reads an index or the resources table once.
async fn fleet_gauges(fleet: Fleet) -> Result<(), DutyError> {
    for row in jobs::fleet_figures(&fleet.db).await? {
        metrics::gauge!("metasync_jobs", "state" => row.state.clone()).set(row.jobs as f64);
        if row.state != "running" {
            metrics::gauge!("metasync_job_oldest_age_seconds", "state" => row.state)
                .set(row.oldest_age_seconds);
        } else {
            metrics::gauge!("metasync_job_running_longest_seconds")
                .set(row.longest_running_seconds);
        }
    }
    let freshness = resources::freshness(&fleet.db).await?;
    // The same definition of stale, turned into `resource.stale` webhook events.
    let went_stale = webhooks::record_stale(&fleet.db).await?;
    if went_stale > 0 {
        tracing::info!(resources = went_stale, "resources went stale");
    }
    for (name, count) in [
        ("fresh", freshness.fresh),
        ("stale", freshness.stale),
        ("failing", freshness.failing),
        ("never_synced", freshness.never_synced),
    ] {
        metrics::gauge!("metasync_resources", "freshness" => name).set(count as f64);
    }
    metrics::gauge!("metasync_schedules_overdue").set(freshness.overdue as f64);
    metrics::gauge!("metasync_schedule_lag_max_seconds").set(freshness.worst_lag_seconds);
    Ok(())
}

/// Old finished jobs, and audit events as old: the audit log is kept as long as jobs are; old
/// finished webhook deliveries; retired table ids as old as jobs; and test-connection requests
/// their API process abandoned.
async fn prune(fleet: Fleet) -> Result<(), DutyError> {
    let n = jobs::prune_finished(&fleet.db, fleet.settings.retention, 1_000).await?;
    if n > 0 {
        tracing::info!(jobs = n, "pruned old finished jobs");
    }
    // Every manual sync is an event, so a busy tenant can add more than a page a minute: take
    // a few pages per run, each its own short statement.
    let mut pruned = 0;
    for _ in 0..AUDIT_PRUNE_PAGES {
        let n = audit::prune(&fleet.db, fleet.settings.retention, AUDIT_PRUNE_PAGE).await?;
        pruned += n;
        if n < AUDIT_PRUNE_PAGE as u64 {
            break;
        }
    }
    if pruned > 0 {
        tracing::info!(events = pruned, "pruned old audit events");
    }
    let mut pruned = 0;
    for _ in 0..DELIVERY_PRUNE_PAGES {
        let retention = fleet.settings.webhook_delivery_retention;
        let (keep, page) = (KEPT_DELIVERIES_PER_HOOK, DELIVERY_PRUNE_PAGE);
        let n = webhooks::prune_deliveries(&fleet.db, retention, keep, page).await?;
        pruned += n;
        if n < DELIVERY_PRUNE_PAGE as u64 {
            break;
        }
    }
    if pruned > 0 {
        tracing::info!(deliveries = pruned, "pruned old webhook deliveries");
    }
    let n = catalog::prune_retired_tables(&fleet.db, fleet.settings.retention, 10_000).await?;
    if n > 0 {
        tracing::info!(ids = n, "forgot old retired table ids");
    }
    connection_tests::prune_expired(&fleet.db).await?;
    Ok(())
}

/// Re-pushes every unfinished job that has no delivery in Redis. PostgreSQL is the truth, so
/// losing Redis loses no job: at worst it delays jobs by one reconcile period.
pub async fn reconcile_deliveries(fleet: &Fleet) -> Result<usize, DutyError> {
    let mut after: Option<JobId> = None;
    let mut pushed = 0;
    loop {
        let ids = jobs::needing_delivery(&fleet.db, after, SETTLE, 1_000, None).await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        let mut missing = fleet.queue.missing(&ids).await?;
        if !missing.is_empty() {
            // Asked again: a job may have finished, and its delivery been acknowledged,
            // between the two reads above. Pushing it would leave a stray delivery.
            missing =
                jobs::needing_delivery(&fleet.db, None, SETTLE, 1_000, Some(&missing)).await?;
        }
        if !missing.is_empty() {
            fleet
                .queue
                .push(&jobs::deliveries(&fleet.db, &missing).await?)
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
