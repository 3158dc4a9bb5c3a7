//! One maintenance duty: a small async step run on its own task at its own interval, reporting
//! its runs, errors, last success and (for a lease renewal) how late it ran.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::queue::QueueError;
pub use crate::warnings::{WARN_EVERY, Warnings};

/// Why one run of a duty failed. The duty runs again at its next tick.
#[derive(Debug, thiserror::Error)]
pub enum DutyError {
    /// The catalog PostgreSQL failed.
    #[error("catalog database: {0}")]
    Db(#[from] sqlx::Error),
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// One run of a duty.
pub type DutyFuture = Pin<Box<dyn Future<Output = Result<(), DutyError>> + Send>>;

/// A duty's name and cadence.
#[derive(Debug, Clone, Copy)]
pub struct Duty {
    /// The `duty` label of the maintenance metrics.
    pub name: &'static str,
    /// Time between the starts of two runs.
    pub every: Duration,
    /// For a duty that renews a lease, the `lease` label under which its lateness is exported
    /// (see [`RenewalLag`]).
    pub renews: Option<&'static str>,
}

impl Duty {
    /// A duty run every `every`.
    pub const fn new(name: &'static str, every: Duration) -> Self {
        Self {
            name,
            every,
            renews: None,
        }
    }

    /// Marks the duty as the renewal of lease `lease`.
    pub const fn renewing(self, lease: &'static str) -> Self {
        Self {
            renews: Some(lease),
            ..self
        }
    }
}

/// Runs `duty` every `duty.every` (a late tick is delayed, never bunched), forever.
pub async fn run_duty<S, F>(duty: Duty, state: S, mut run: F)
where
    S: Clone + Send + 'static,
    F: FnMut(S) -> DutyFuture + Send + 'static,
{
    let name = duty.name;
    let mut interval = tokio::time::interval(duty.every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warnings = Warnings::new(name);
    let mut lag = duty.renews.map(RenewalLag::new);
    loop {
        let scheduled = interval.tick().await;
        let started = Instant::now();
        let result = run(state.clone()).await;
        metrics::histogram!("metasync_maintenance_duration_seconds", "duty" => name)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("metasync_maintenance_runs_total", "duty" => name).increment(1);
        match result {
            Ok(()) => {
                if let Some(lag) = &mut lag {
                    lag.renewed(scheduled.into_std());
                }
                metrics::gauge!("metasync_maintenance_last_success_timestamp_seconds", "duty" => name)
                    .set(unix_now());
                warnings.succeeded();
            }
            Err(e) => {
                metrics::counter!("metasync_maintenance_errors_total", "duty" => name).increment(1);
                if duty.renews.is_some() {
                    let store = match &e {
                        DutyError::Db(_) => "postgres",
                        DutyError::Queue(_) => "redis",
                    };
                    metrics::counter!("metasync_lease_renewal_failures_total", "store" => store)
                        .increment(1);
                }
                match &e {
                    DutyError::Db(_) => {
                        metrics::counter!("metasync_catalog_db_errors_total", "site" => "maintenance")
                            .increment(1);
                    }
                    DutyError::Queue(_) => {
                        metrics::counter!("metasync_queue_errors_total", "op" => "maintenance")
                            .increment(1);
                    }
                }
                warnings.failed(&e);
            }
        }
    }
}

/// How late a lease's renewals complete, against the time they were due:
/// `metasync_lease_renewal_lag_seconds{lease}` (histogram) and
/// `metasync_lease_renewal_lag_max_seconds{lease}` (the worst since the process started). A
/// renewal later than a third of the lease eats into the margin that keeps a live holder's
/// lease from lapsing.
#[derive(Debug)]
pub struct RenewalLag {
    lease: &'static str,
    worst: f64,
}

impl RenewalLag {
    /// The lag of lease `lease`.
    pub fn new(lease: &'static str) -> Self {
        Self { lease, worst: 0.0 }
    }

    /// Records a renewal, due at `scheduled`, that completed now.
    pub fn renewed(&mut self, scheduled: Instant) {
        let lag = Instant::now()
            .saturating_duration_since(scheduled)
            .as_secs_f64();
        metrics::histogram!("metasync_lease_renewal_lag_seconds", "lease" => self.lease)
            .record(lag);
        if lag > self.worst {
            self.worst = lag;
            metrics::gauge!("metasync_lease_renewal_lag_max_seconds", "lease" => self.lease)
                .set(lag);
        }
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// A set of running duties, aborted when dropped.
#[derive(Debug, Default)]
pub struct DutySet(tokio::task::JoinSet<()>);

impl DutySet {
    /// Starts `duty` on its own task.
    pub fn spawn<S, F>(&mut self, duty: Duty, state: S, run: F)
    where
        S: Clone + Send + 'static,
        F: FnMut(S) -> DutyFuture + Send + 'static,
    {
        self.0.spawn(run_duty(duty, state, run));
    }

    /// Aborts every duty and waits until none runs, so that a renewal in flight cannot extend
    /// a lease after shutdown has released it.
    pub async fn stop(mut self) {
        self.0.abort_all();
        while self.0.join_next().await.is_some() {}
    }
}

impl Drop for DutySet {
    fn drop(&mut self) {
        self.0.abort_all();
    }
}
