//! Per-tenant limits, so no tenant can take the service from the others: token buckets on
//! writes, syncs and test-connection requests (`429` + `Retry-After`), caps on resources (`403`), active jobs (`429`) and
//! concurrent long-polls (`429`). Each has a setting and a documented default
//! ([`crate::config::QuotaArgs`]).
//!
//! The buckets and the long-poll count live in this API process (GCRA from `governor`): with
//! several API replicas behind a balancer, a tenant's effective rate is up to replicas × rate.
//! The resource and active-job caps are counted in PostgreSQL, so they hold fleet-wide (two
//! requests racing past a cap can overshoot it by their own size, never more; batches count
//! under a per-tenant lock, so a batch never overshoots: see `Submitter::batch`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use metasync_shared::db::{job_reads, resources};
use metasync_shared::ids::TenantId;
use metasync_shared::schedule::Schedule;
use sqlx::PgPool;

use crate::error::ApiError;

/// The limits, as configured.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Resource writes (create, change, delete) per minute per tenant.
    pub writes_per_minute: NonZeroU32,
    /// Sync requests (one resource, a batch, a retry) per minute per tenant.
    pub syncs_per_minute: NonZeroU32,
    /// Test-connection requests per minute per tenant.
    pub tests_per_minute: NonZeroU32,
    /// Most resources a tenant may register.
    pub max_resources: u32,
    /// Most unfinished jobs a tenant may have.
    pub max_active_jobs: u32,
    /// Most long-polls (`?wait=`) a tenant may hold open at once.
    pub max_waiters: u32,
    /// The longest one long-poll holds.
    pub max_wait: Duration,
    /// How often a long-poll re-reads without a wake-up.
    pub wait_recheck: Duration,
    /// Shortest schedule interval (and shortest gap between cron firings).
    pub min_schedule_interval: Duration,
}

/// The buckets and counters of this process.
#[derive(Clone)]
pub struct Quotas {
    /// The configured limits.
    pub limits: Limits,
    writes: Arc<DefaultKeyedRateLimiter<TenantId>>,
    syncs: Arc<DefaultKeyedRateLimiter<TenantId>>,
    tests: Arc<DefaultKeyedRateLimiter<TenantId>>,
    waiters: Arc<Mutex<HashMap<TenantId, u32>>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("limits", &self.limits)
            .finish()
    }
}

/// What a request spends.
#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    /// Creating, changing or deleting a resource.
    Writes,
    /// Asking for syncs.
    Syncs,
    /// Testing a connection.
    Tests,
}

impl Quotas {
    /// Empty buckets and counters for `limits`.
    pub fn new(limits: Limits) -> Self {
        // A bucket holds a quarter of a minute's worth (at least one), refilled evenly.
        let quota = |per_minute: NonZeroU32| {
            let burst = NonZeroU32::new((per_minute.get() / 4).max(1)).unwrap_or(NonZeroU32::MIN);
            Quota::per_minute(per_minute).allow_burst(burst)
        };
        Self {
            limits,
            writes: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                limits.writes_per_minute,
            ))),
            syncs: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                limits.syncs_per_minute,
            ))),
            tests: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                limits.tests_per_minute,
            ))),
            waiters: Arc::default(),
        }
    }

    /// Takes one token from `tenant`'s `bucket`, or a `429` saying when to come back.
    pub fn spend(&self, tenant: &TenantId, bucket: Bucket) -> Result<(), ApiError> {
        let limiter = match bucket {
            Bucket::Writes => &self.writes,
            Bucket::Syncs => &self.syncs,
            Bucket::Tests => &self.tests,
        };
        limiter.check_key(tenant).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                detail: match bucket {
                    Bucket::Writes => format!(
                        "this tenant's resource writes are limited to {} per minute",
                        self.limits.writes_per_minute
                    ),
                    Bucket::Syncs => format!(
                        "this tenant's sync requests are limited to {} per minute",
                        self.limits.syncs_per_minute
                    ),
                    Bucket::Tests => format!(
                        "this tenant's connection tests are limited to {} per minute",
                        self.limits.tests_per_minute
                    ),
                },
                retry_after: retry_after_secs(wait),
            }
        })
    }

    /// Holds one of `tenant`'s long-poll places until the guard is dropped, or a `429`.
    pub fn wait_slot(&self, tenant: &TenantId) -> Result<WaitSlot, ApiError> {
        let mut waiters = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = waiters.entry(tenant.clone()).or_default();
        if *count >= self.limits.max_waiters {
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "this tenant already holds {} long-polls (`wait`), the most allowed at once",
                    self.limits.max_waiters
                ),
                retry_after: 1,
            });
        }
        *count += 1;
        Ok(WaitSlot {
            waiters: self.waiters.clone(),
            tenant: tenant.clone(),
        })
    }

    /// A `403` when `tenant` already has the most resources allowed.
    pub async fn check_resource_cap(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        tenant: &TenantId,
    ) -> Result<(), ApiError> {
        let have = resources::count(db, tenant).await?;
        if have >= i64::from(self.limits.max_resources) {
            return Err(ApiError::QuotaExceeded(format!(
                "this tenant has {have} resources, the most allowed (METASYNC_MAX_RESOURCES)"
            )));
        }
        Ok(())
    }

    /// A `429` when `adding` more unfinished jobs would take `tenant` past its cap.
    pub async fn check_active_jobs(
        &self,
        db: &PgPool,
        tenant: &TenantId,
        adding: usize,
    ) -> Result<(), ApiError> {
        let cap = i64::from(self.limits.max_active_jobs);
        let have = job_reads::count_active(db, tenant, cap + 1).await?;
        let adding = i64::try_from(adding).unwrap_or(i64::MAX);
        if have.saturating_add(adding) > cap {
            return Err(self.active_jobs_exceeded(have, adding));
        }
        Ok(())
    }

    /// The `429` for `adding` more unfinished jobs to the `have` of a tenant over its cap.
    pub fn active_jobs_exceeded(&self, have: i64, adding: i64) -> ApiError {
        let cap = self.limits.max_active_jobs;
        ApiError::TooManyRequests {
            detail: format!(
                "this tenant has {have} unfinished jobs and may have at most {cap}: \
                 {adding} more would exceed that; try again as they finish"
            ),
            retry_after: 30,
        }
    }

    /// A `422` when `schedule` fires more often than the minimum interval allows.
    pub fn check_schedule(&self, schedule: &Schedule) -> Result<(), ApiError> {
        let min = self.limits.min_schedule_interval;
        let too_often = match schedule {
            Schedule::Interval(every) => every.to_std().unwrap_or_default() < min,
            // The gaps between the next few firings: a cron that fires every minute (or every
            // second) somewhere in its pattern shows it here.
            Schedule::Cron(_) => {
                let mut firings =
                    std::iter::successors(schedule.next_after(chrono::Utc::now()), |at| {
                        schedule.next_after(*at)
                    })
                    .take(16);
                let mut previous = firings.next();
                firings.any(|next| {
                    let gap = previous.map(|p| (next - p).to_std().unwrap_or_default());
                    previous = Some(next);
                    gap.is_some_and(|gap| gap < min)
                })
            }
        };
        if too_often {
            return Err(ApiError::Unprocessable(format!(
                "the schedule fires more often than every {}s, the shortest interval allowed \
                 (METASYNC_MIN_SCHEDULE_INTERVAL)",
                min.as_secs()
            )));
        }
        Ok(())
    }

    /// Forgets buckets that have refilled, so idle tenants cost no memory.
    pub fn forget_idle(&self) {
        self.writes.retain_recent();
        self.syncs.retain_recent();
        self.tests.retain_recent();
    }
}

/// One long-poll place, given back when dropped.
#[derive(Debug)]
pub struct WaitSlot {
    waiters: Arc<Mutex<HashMap<TenantId, u32>>>,
    tenant: TenantId,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut waiters = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = waiters.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                waiters.remove(&self.tenant);
            }
        }
    }
}

fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            writes_per_minute: NonZeroU32::new(8).unwrap(),
            syncs_per_minute: NonZeroU32::new(60).unwrap(),
            tests_per_minute: NonZeroU32::new(8).unwrap(),
            max_resources: 10,
            max_active_jobs: 10,
            max_waiters: 2,
            max_wait: Duration::from_secs(60),
            wait_recheck: Duration::from_secs(1),
            min_schedule_interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_tenant_spends_its_own_bucket_only() {
        let quotas = Quotas::new(limits());
        let (a, b) = (TenantId::new("a"), TenantId::new("b"));
        // A burst of a quarter minute's worth, then a 429 that says when to come back.
        assert!(quotas.spend(&a, Bucket::Writes).is_ok());
        assert!(quotas.spend(&a, Bucket::Writes).is_ok());
        match quotas.spend(&a, Bucket::Writes) {
            Err(ApiError::TooManyRequests { retry_after, .. }) => {
                assert!((1..=8).contains(&retry_after), "{retry_after}");
            }
            other => panic!("expected a 429, got {other:?}"),
        }
        // Another tenant, and another bucket of the same tenant, are untouched.
        assert!(quotas.spend(&b, Bucket::Writes).is_ok());
        assert!(quotas.spend(&a, Bucket::Syncs).is_ok());
    }

    #[test]
    fn long_poll_places_are_given_back() {
        let quotas = Quotas::new(limits());
        let a = TenantId::new("a");
        let first = quotas.wait_slot(&a).unwrap();
        let _second = quotas.wait_slot(&a).unwrap();
        assert!(quotas.wait_slot(&a).is_err());
        assert!(quotas.wait_slot(&TenantId::new("b")).is_ok());
        drop(first);
        assert!(quotas.wait_slot(&a).is_ok());
    }
}
