//! One delivery, start to finish: claim the job → decrypt credentials → scan the source →
//! diff and write the catalog (fenced) → record the outcome → acknowledge the delivery.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;

use metasync_shared::catalog::Snapshot;
use metasync_shared::custody::OpeningKeys;
use metasync_shared::db::catalog;
use metasync_shared::db::jobs::{self, Claim, ClaimRefused, ClaimedJob, FailureOutcome, Fenced};
use metasync_shared::db::resources::ResourceWithSecret;
use metasync_shared::domain::{ErrorClass, Phase, Progress, ResourceKind, SyncStats};
use metasync_shared::maintenance::MaintenanceArgs;
use metasync_shared::ops::Readiness;
use metasync_shared::outbound::{HostPolicy, PolicyError};
use metasync_shared::queue::{Delivery, Queue, QueueError};
use metasync_shared::retry::RetryPolicy;
use metasync_shared::submit::Submitter;
use sqlx::PgPool;

use crate::error::{JobError, Reason};
use crate::in_flight::InFlight;
use crate::scan::filters::FilterCache;
use crate::scan::reuse::SourceConnections;
use crate::scan::{self, ScanError, ScanLimits, ScanTarget};

/// Everything a worker process shares between its job slots.
#[derive(Clone)]
pub struct WorkerContext {
    pub db: PgPool,
    pub queue: Queue,
    /// Opens sealed passwords (the private master keys).
    pub keys: OpeningKeys,
    /// Where a source may be: checked (resolved once) right before each connection.
    pub outbound: HostPolicy,
    pub worker_id: String,
    pub lease: Duration,
    pub job_timeout: Duration,
    pub limits: ScanLimits,
    /// Source connections parked between jobs.
    pub sources: SourceConnections,
    /// Resources' filter patterns, compiled once per version of their options.
    pub filters: Arc<FilterCache>,
    /// The deployment's retry policy; each job applies its resource's overrides.
    pub retry: RetryPolicy,
    /// The lease, the fleet-wide duties' cadences, and whether to stand for leader.
    pub maintenance: MaintenanceArgs,
    /// Creates the jobs that schedules fire.
    pub submitter: Submitter,
    /// What `/readyz` on the operations listener answers: heartbeat current, not draining.
    pub readiness: Readiness,
}

/// How a delivery ended, for logs, metrics and the apalis event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed for good (permanent error, or out of attempts): its class and message.
    Failed(ErrorClass, String),
    /// Failed; another attempt is scheduled after the delay.
    Retrying(ErrorClass, String, Duration),
    /// Not claimable now (another attempt holds a live lease, or a retry is not yet due), or
    /// claimed but no connection to its source server could be had under the per-server cap
    /// (the claim was undone, no attempt used); the delivery was pushed again for later.
    Deferred,
    /// The job is finished, cancelled or gone: nothing to do.
    Skipped,
    /// This attempt lost its lease to a newer one; nothing it did was written.
    Fenced,
    /// Cancelled while running; nothing more was written.
    Cancelled,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed(..) => "failed",
            Self::Retrying(..) => "retrying",
            Self::Deferred => "deferred",
            Self::Skipped => "skipped",
            Self::Fenced => "fenced",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Handles one delivery and acknowledges it. Errors here are infrastructure failures (the
/// catalog database or Redis); the delivery then stays claimed and is redelivered. The attempt
/// is in `in_flight` (its lease renewed) from its claim until this returns.
///
/// Every event logged while handling it carries the job, its tenant and, once claimed, its
/// resource and attempt number (fields of this span); its end is one `info` line with the
/// outcome and the duration. The span's level is `error` so that it is enabled whenever any
/// event is: under `RUST_LOG=warn` a warning still carries the ids.
#[tracing::instrument(level = "error", skip_all, fields(
    job_id = %delivery.job_id,
    tenant = %delivery.tenant,
    resource_id = tracing::field::Empty,
    attempt = tracing::field::Empty,
    worker = %ctx.worker_id,
))]
pub async fn handle_delivery(
    ctx: &WorkerContext,
    in_flight: &InFlight,
    delivery: &Delivery,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let gauge = metrics::gauge!("metasync_worker_in_flight");
    gauge.increment(1.0);
    let processed = process(ctx, in_flight, delivery).await;
    gauge.decrement(1.0);
    let (outcome, redeliver) = processed.inspect_err(count_infrastructure_error)?;
    // A job that must run again keeps its delivery, moved to the delayed set in one step.
    match redeliver {
        Some(delay) => {
            ctx.queue
                .redeliver_later(&ctx.worker_id, delivery, delay)
                .await
                .inspect_err(|_| count_queue_error())?;
        }
        None => ctx
            .queue
            .ack(&ctx.worker_id, delivery)
            .await
            .inspect_err(|_| count_queue_error())?,
    }
    if outcome == Outcome::Fenced {
        metrics::counter!("metasync_fenced_writes_total").increment(1);
    }
    let label = outcome.label();
    let duration_seconds = started.elapsed().as_secs_f64();
    metrics::counter!("metasync_jobs_total", "outcome" => label).increment(1);
    metrics::histogram!("metasync_job_duration_seconds", "outcome" => label)
        .record(duration_seconds);
    // Error messages are scrubbed of the password where they arise (`JobError::guarded`).
    match &outcome {
        Outcome::Failed(class, error) => tracing::info!(
            outcome = label,
            error_class = class.as_str(),
            %error,
            duration_seconds,
            "job failed"
        ),
        Outcome::Retrying(class, error, delay) => tracing::info!(
            outcome = label,
            error_class = class.as_str(),
            %error,
            retry_in_seconds = delay.as_secs_f64(),
            duration_seconds,
            "job will retry"
        ),
        Outcome::Fenced => tracing::warn!(
            outcome = label,
            duration_seconds,
            "stale attempt fenced off; its results were dropped"
        ),
        _ => tracing::info!(outcome = label, duration_seconds, "delivery handled"),
    }
    Ok(outcome)
}

/// An error that escaped a delivery: the catalog database's or Redis's.
fn count_infrastructure_error(e: &anyhow::Error) {
    if e.downcast_ref::<sqlx::Error>().is_some() {
        metrics::counter!("metasync_catalog_db_errors_total", "site" => "worker").increment(1);
    } else if e.downcast_ref::<QueueError>().is_some() {
        metrics::counter!("metasync_queue_errors_total", "op" => "handle").increment(1);
    }
}

/// Acknowledgements and redeliveries count their errors as they retry; one that gives up is
/// counted here, as the delivery's handling failing.
fn count_queue_error() {
    metrics::counter!("metasync_queue_errors_total", "op" => "handle").increment(1);
}

/// The figures of a job's final outcome: its time from creation and the attempts it used.
fn record_final(outcome: &'static str, claimed: &Claimed) {
    let end_to_end = (chrono::Utc::now() - claimed.created_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("metasync_job_end_to_end_seconds", "outcome" => outcome)
        .record(end_to_end.as_secs_f64());
    metrics::histogram!("metasync_job_attempts", "outcome" => outcome)
        .record(f64::from(claimed.attempt));
}

/// What the final figures need of a claim.
struct Claimed {
    created_at: chrono::DateTime<chrono::Utc>,
    attempt: i32,
}

/// Runs the job if it can be claimed. Returns the outcome and, when the job must run again
/// later, the delay before its next delivery.
async fn process(
    ctx: &WorkerContext,
    in_flight: &InFlight,
    delivery: &Delivery,
) -> anyhow::Result<(Outcome, Option<Duration>)> {
    let job_id = delivery.job_id;
    let ClaimedJob {
        claim,
        resource,
        job_created_at,
        job_ready_at,
        taken_over,
    } = match jobs::claim(&ctx.db, job_id, &ctx.worker_id, ctx.lease).await? {
        Ok(claimed) => claimed,
        Err(ClaimRefused::NotRunnable) => return Ok((Outcome::Skipped, None)),
        Err(ClaimRefused::LeasedUntil(at) | ClaimRefused::NotDueUntil(at)) => {
            let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            return Ok((Outcome::Deferred, Some(wait + Duration::from_millis(50))));
        }
    };

    let waited = (chrono::Utc::now() - job_ready_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("metasync_job_queue_wait_seconds", "class" => delivery.class.as_str())
        .record(waited.as_secs_f64());
    if taken_over {
        metrics::counter!("metasync_job_takeovers_total").increment(1);
    }
    tracing::Span::current()
        .record("resource_id", tracing::field::display(claim.resource_id))
        .record("attempt", claim.attempt);
    let claimed = Claimed {
        created_at: job_created_at,
        attempt: claim.attempt,
    };
    let _held = in_flight.hold(claim.job_id, claim.lease_token);
    #[cfg(feature = "test-faults")]
    {
        use crate::faults::{Fault, hit};
        if hit(Fault::PanicAfterClaim) {
            panic!("injected fault: panic after the claim");
        }
        if hit(Fault::LoseOutcome) {
            anyhow::bail!("injected fault: recording the outcome failed");
        }
    }

    // A panic ends the attempt like any transient failure; the unwind has already rolled
    // back its catalog transaction and closed its source connection.
    let attempt = AssertUnwindSafe(tokio::time::timeout(
        ctx.job_timeout,
        run_attempt(ctx, &claim, &resource),
    ))
    .catch_unwind()
    .await;
    let error = match attempt {
        Ok(Ok(Ok(_stats))) => {
            record_final("succeeded", &claimed);
            return Ok((Outcome::Succeeded, None));
        }
        Ok(Ok(Err(AttemptError::Stopped))) => {
            return Ok(if jobs::mark_cancelled(&ctx.db, &claim).await? {
                (Outcome::Cancelled, None)
            } else {
                (Outcome::Fenced, None)
            });
        }
        Ok(Ok(Err(AttemptError::ServerBusy))) => {
            // Jittered, so that jobs deferred together do not come back together.
            let delay = SERVER_BUSY_DELAY + Duration::from_millis(rand::random::<u64>() % 1_000);
            return Ok(if jobs::undo_claim(&ctx.db, &claim, delay).await? {
                (Outcome::Deferred, Some(delay))
            } else if jobs::mark_cancelled(&ctx.db, &claim).await? {
                (Outcome::Cancelled, None)
            } else {
                (Outcome::Fenced, None)
            });
        }
        Ok(Ok(Err(AttemptError::Job(e)))) => e,
        Ok(Err(_elapsed)) => {
            JobError::transient(format!("job timed out after {:?}", ctx.job_timeout))
                .because(Reason::Timeout)
        }
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(panic = %message, "the attempt panicked");
            JobError::transient(format!("the attempt panicked: {message}")).because(Reason::Panic)
        }
    };

    let out_of_attempts = claim.attempt >= claim.max_attempts;
    let outcome = if error.class == ErrorClass::Permanent || out_of_attempts {
        FailureOutcome::Failed
    } else {
        let policy = ctx.retry.with_overrides(claim.retry_policy.as_deref());
        FailureOutcome::RetryAfter(policy.delay(claim.attempt))
    };
    match jobs::fail_attempt(&ctx.db, &claim, error.class, &error.message, outcome).await? {
        Err(Fenced(_)) => Ok((Outcome::Fenced, None)),
        Ok(()) => Ok(match outcome {
            FailureOutcome::Failed => {
                count_failure(&error);
                record_final("failed", &claimed);
                (Outcome::Failed(error.class, error.message), None)
            }
            FailureOutcome::RetryAfter(delay) => {
                count_failure(&error);
                (
                    Outcome::Retrying(error.class, error.message, delay),
                    Some(delay),
                )
            }
        }),
    }
}

fn count_failure(error: &JobError) {
    metrics::counter!(
        "metasync_job_failures_total",
        "class" => error.class.as_str(),
        "reason" => error.reason.as_str()
    )
    .increment(1);
}

/// The text of a panic's payload (`panic!` with a literal or a format string).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

enum AttemptError {
    Job(JobError),
    /// A cancel was requested, or the attempt was taken over: stop and write nothing more.
    /// `process` tells which by trying to record the cancel under this attempt's token.
    Stopped,
    /// The source server's connection cap is reached: undo the claim and come back later.
    ServerBusy,
}

impl From<JobError> for AttemptError {
    fn from(e: JobError) -> Self {
        Self::Job(e)
    }
}

impl From<ScanError> for AttemptError {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Failed(e) => Self::Job(e),
            ScanError::ServerBusy => Self::ServerBusy,
        }
    }
}

/// A job deferred for want of a source connection comes back after this (plus up to 1 s).
const SERVER_BUSY_DELAY: Duration = Duration::from_millis(500);

/// Snapshots at least this large report a `writing` phase before the catalog write.
const PROGRESS_FROM_TABLES: usize = 200;

/// How often a running scan checks whether its job was cancelled.
const CANCEL_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Resolves once a cancel is requested for the attempt (or it lost the job).
async fn cancel_requested(ctx: &WorkerContext, claim: &Claim) {
    loop {
        tokio::time::sleep(CANCEL_CHECK_EVERY).await;
        if let Ok(true) = jobs::cancel_requested(&ctx.db, claim).await {
            return;
        }
    }
}

/// The catalog database failing mid-attempt is worth a retry.
fn catalog_error(e: sqlx::Error) -> AttemptError {
    metrics::counter!("metasync_catalog_db_errors_total", "site" => "attempt").increment(1);
    AttemptError::Job(
        JobError::transient(format!("writing the catalog: {e}")).because(Reason::Catalog),
    )
}

async fn run_attempt(
    ctx: &WorkerContext,
    claim: &Claim,
    resource: &ResourceWithSecret,
) -> Result<SyncStats, AttemptError> {
    #[cfg(feature = "test-faults")]
    if crate::faults::hit(crate::faults::Fault::PanicInAttempt) {
        panic!("injected fault: panic in the attempt");
    }
    let password = ctx
        .keys
        .open(&resource.sealed_password(), &resource.target())
        .map_err(|e| JobError::permanent(e.to_string()).because(Reason::Credentials))?;
    // Compiled when the options were written; a pattern that does not compile got into the
    // row behind the API, and will not compile on a retry either.
    let (filters, _) = ctx
        .filters
        .get(resource.resource.id, &resource.resource.options.0)
        .map_err(JobError::permanent)?;

    // The address the policy checked is the one dialled: the name is not resolved again.
    let address = ctx
        .outbound
        .connect_address(&resource.resource.host, resource.resource.port as u16)
        .await
        .map_err(|e| match e {
            PolicyError::Unresolved => JobError::transient(e.to_string()).because(Reason::Policy),
            PolicyError::Refused | PolicyError::Syntax | PolicyError::HostWithPort => {
                JobError::permanent(e.to_string()).because(Reason::Policy)
            }
        })?;
    let target = ScanTarget {
        resource: &resource.resource,
        filters: &filters,
        address: address.ip(),
        password: &password,
    };
    // Checkpoint: the scan stops as soon as a cancel is seen.
    let scan_started = Instant::now();
    let snapshot: Snapshot = tokio::select! {
        scanned = scan::scan(&target, ctx.limits, &ctx.sources) => {
            metrics::histogram!("metasync_scan_duration_seconds")
                .record(scan_started.elapsed().as_secs_f64());
            scanned?
        }
        () = cancel_requested(ctx, claim) => return Err(AttemptError::Stopped),
    };
    drop(password);

    // Worth a statement only when the write takes long enough for anyone to see it.
    let tables: usize = snapshot.databases.iter().map(|d| d.tables.len()).sum();
    let large = tables >= PROGRESS_FROM_TABLES;
    if large {
        let progress = Progress {
            phase: Phase::Writing,
            objects_total: Some(tables as u64),
        };
        jobs::set_progress(&ctx.db, claim, &progress)
            .await
            .map_err(catalog_error)?;
    }
    let write_started = Instant::now();
    let mut tx = ctx.db.begin().await.map_err(catalog_error)?;
    // Lock the job row first: a stale attempt stops here instead of writing beside the
    // current one (contending for its rows, or deadlocking with it). `succeed` checks again.
    if jobs::fence(&mut tx, claim)
        .await
        .map_err(catalog_error)?
        .is_err()
    {
        return Err(AttemptError::Stopped);
    }
    let stats = catalog::write_snapshot(
        &mut tx,
        &claim.tenant_id,
        claim.resource_id,
        claim.job_id,
        &snapshot,
        catalog::Scope {
            options: &resource.resource.options.0,
            filters: &filters,
            resource_database: &resource.resource.database,
            databases_are_schemas: resource.resource.kind == ResourceKind::Mysql,
        },
    )
    .await
    .map_err(catalog_error)?;
    if jobs::succeed(&mut tx, claim, &stats, &snapshot.warnings)
        .await
        .map_err(catalog_error)?
        .is_err()
    {
        // Dropping the transaction rolls back everything this attempt wrote.
        return Err(AttemptError::Stopped);
    }
    tx.commit().await.map_err(catalog_error)?;
    metrics::histogram!("metasync_catalog_write_duration_seconds")
        .record(write_started.elapsed().as_secs_f64());
    Ok(stats)
}
