//! Submitting jobs: the insert in PostgreSQL, the delivery pushed to Redis and the metric,
//! in one place used by the sync route, retries, batches and schedules.
//!
//! The insert is the commit point. A push that fails because the Redis connection was lost
//! (a restart or failover: the client notices only when a command fails) is tried once more,
//! on the connection the client opens in its place. A push that still fails is logged and
//! counted, not returned: the job is safe in PostgreSQL and the reconciler pushes any queued
//! job whose delivery is missing.

use sqlx::PgPool;

use crate::db::audit::{self, Actor, AuditAction, AuditDetails};
use crate::db::job_reads;
use crate::db::jobs::{self, Enqueued};
use crate::db::schedules;
pub use crate::domain::Trigger;
use crate::ids::{BatchId, JobId, ResourceId, TenantId};
use crate::queue::{Delivery, Queue, QueueError};

/// Creates jobs and delivers them. Cheap to clone.
#[derive(Clone)]
pub struct Submitter {
    db: PgPool,
    queue: Queue,
    /// Attempts a new job gets unless its resource overrides it.
    max_attempts: i32,
}

/// A batch as submitted.
#[derive(Debug)]
pub struct SubmittedBatch {
    /// The batch's id; `None` when it created no job (every resource had an active job, was
    /// refused by the cap, or there were none), and no batch was recorded.
    pub id: Option<BatchId>,
    /// The jobs created, one per resource.
    pub jobs: Vec<JobId>,
    /// Named resources that would have had a job but did not fit under the tenant's cap on
    /// unfinished jobs.
    pub refused: Vec<ResourceId>,
    /// All the tenant's resources were asked for and they did not all fit under the cap:
    /// nothing was enqueued.
    pub over_cap: Option<OverCap>,
}

/// A batch of every resource that did not fit under the tenant's cap on unfinished jobs.
#[derive(Debug, Clone, Copy)]
pub struct OverCap {
    /// The tenant's unfinished jobs when the batch was counted.
    pub active: i64,
    /// The jobs the batch needed.
    pub wanted: i64,
}

impl Submitter {
    /// A submitter that gives new jobs `max_attempts` unless a resource overrides it.
    pub fn new(db: PgPool, queue: Queue, max_attempts: i32) -> Self {
        Self {
            db,
            queue,
            max_attempts,
        }
    }

    /// A sync of one resource, or its active job (single flight), requested by `actor`: a job
    /// created is recorded in the audit log in the same transaction (`resource.sync`, or
    /// `job.retry` of `retry_of`). `None` when the resource is not the tenant's.
    pub async fn sync(
        &self,
        tenant: &TenantId,
        resource: ResourceId,
        retry_of: Option<JobId>,
        actor: &Actor,
    ) -> Result<Option<Enqueued>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let enqueued =
            jobs::enqueue_on(&mut tx, tenant, resource, self.max_attempts, retry_of).await?;
        if let Some(Enqueued::Created(job)) = &enqueued {
            let (action, object) = match retry_of {
                Some(old) => (AuditAction::JobRetry, old.uuid()),
                None => (AuditAction::ResourceSync, resource.uuid()),
            };
            let details = AuditDetails {
                job_id: Some(job.id),
                ..AuditDetails::default()
            };
            audit::record(&mut *tx, tenant, actor, action, object, details).await?;
        }
        tx.commit().await?;
        if let Some(Enqueued::Created(job)) = &enqueued {
            let trigger = if retry_of.is_some() {
                Trigger::Retry
            } else {
                Trigger::Manual
            };
            self.deliver(&[Delivery::manual(job.id, tenant.clone())], trigger)
                .await;
        }
        Ok(enqueued)
    }

    /// Syncs of many resources of one tenant (all of them when `resources` is `None`) as one
    /// batch requested by `actor`; resources with an active job keep it and are not part of
    /// the batch. The batch keeps the tenant within `max_active_jobs` unfinished jobs: named
    /// resources are enqueued in request order while they fit and the rest are refused; all
    /// of them are enqueued together or, when they do not all fit, none. A batch created is
    /// recorded in the audit log in the same transaction.
    pub async fn batch(
        &self,
        tenant: &TenantId,
        resources: Option<&[ResourceId]>,
        actor: &Actor,
        max_active_jobs: u32,
    ) -> Result<SubmittedBatch, sqlx::Error> {
        let id = BatchId::new_v7();
        let mut tx = self.db.begin().await?;
        // The guarantee: a tenant's batches count and enqueue one at a time (this lock is
        // held until the transaction ends, and each statement after it sees the batches
        // committed before), so no two batches spend the same room and a batch never takes
        // the tenant past its cap. Single syncs and retries check the cap without the lock:
        // each one in flight while a batch counts can take the tenant one job past it, never
        // more. Schedule ticks are not held to the cap (one job per schedule, at most).
        sqlx::query(
            "select pg_advisory_xact_lock(hashtextextended('metasync.active_jobs:' || $1, 0))",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        let cap = i64::from(max_active_jobs);
        let active = job_reads::count_active(&mut *tx, tenant, cap + 1).await?;
        let room = (cap - active).max(0);
        let many = jobs::enqueue_many_on(
            &mut tx,
            tenant,
            resources,
            self.max_attempts,
            Some(id),
            room,
        )
        .await?;
        if resources.is_none() && !many.over_limit.is_empty() {
            // Rolled back: "every resource" is one intent, and without ids there is no
            // per-resource answer to say which were left out.
            let wanted = (many.created.len() + many.over_limit.len()) as i64;
            return Ok(SubmittedBatch {
                id: None,
                jobs: Vec::new(),
                refused: Vec::new(),
                over_cap: Some(OverCap { active, wanted }),
            });
        }
        let jobs = many.created;
        if !jobs.is_empty() {
            let details = AuditDetails {
                jobs: Some(jobs.len() as i64),
                ..AuditDetails::default()
            };
            let action = AuditAction::BatchCreate;
            audit::record(&mut *tx, tenant, actor, action, id.uuid(), details).await?;
        }
        tx.commit().await?;
        let deliveries: Vec<Delivery> = jobs
            .iter()
            .map(|id| Delivery::manual(*id, tenant.clone()))
            .collect();
        self.deliver(&deliveries, Trigger::Batch).await;
        Ok(SubmittedBatch {
            id: (!jobs.is_empty()).then_some(id),
            jobs,
            refused: many.over_limit,
            over_cap: None,
        })
    }

    /// Fires every due schedule, `page` at a time. Returns how many jobs it created.
    pub async fn fire_schedules(&self, page: i64) -> Result<usize, sqlx::Error> {
        let mut fired = 0;
        loop {
            let created = schedules::fire_due(&self.db, self.max_attempts, page).await?;
            if created.is_empty() {
                return Ok(fired);
            }
            fired += created.len();
            // Routed by the jobs' rows: a page of schedules spans tenants.
            let deliveries = jobs::deliveries(&self.db, &created).await?;
            self.deliver(&deliveries, Trigger::Schedule).await;
        }
    }

    async fn deliver(&self, jobs: &[Delivery], trigger: Trigger) {
        if jobs.is_empty() {
            return;
        }
        metrics::counter!("metasync_jobs_enqueued_total", "trigger" => trigger.as_str())
            .increment(jobs.len() as u64);
        let mut pushed = self.queue.push(jobs).await;
        if pushed.as_ref().is_err_and(connection_lost) {
            metrics::counter!("metasync_delivery_push_retries_total").increment(1);
            pushed = self.queue.push(jobs).await;
        }
        if let Err(e) = pushed {
            tracing::warn!(error = %e, jobs = jobs.len(), "delivery push failed; the reconciler will push it");
            metrics::counter!("metasync_delivery_push_failures_total").increment(1);
            metrics::counter!("metasync_queue_errors_total", "op" => "push").increment(1);
        }
    }
}

/// Whether the push failed because the connection broke (the client reconnects on its own
/// after such a failure), as opposed to Redis refusing the command.
fn connection_lost(e: &QueueError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<redis::RedisError>())
        .is_some_and(|e| e.is_unrecoverable_error() || e.is_io_error())
}
