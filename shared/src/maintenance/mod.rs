//! Background maintenance, as independent services (River's shape): every duty runs on its own
//! task at its own interval ([`duty`]) and reports its runs, errors and last success.
//!
//! - Per-process duties (a worker's Redis heartbeat and the leases of its own attempts) run in
//!   the process they belong to; they live in the worker.
//! - Fleet-wide duties ([`fleet`]: reap, rescue, promote, reconcile, schedule, prune, queue
//!   gauges) run in one process at a time: the one holding the maintenance lease ([`leader`]).
//!   API processes and workers both stand for election, so all of it works with zero workers.

pub mod duty;
pub mod fleet;
pub mod leader;

use std::time::Duration;

use clap::Args;

use crate::config::parse_duration;
pub use duty::{Duty, DutyError, DutyFuture, DutySet, RenewalLag, WARN_EVERY, Warnings, run_duty};
pub use fleet::{Fleet, reconcile_deliveries};
pub use leader::Participant;

/// Maintenance settings, shared by the API and the worker. Each is an environment variable
/// with a matching `--flag`.
#[derive(Debug, Clone, Args)]
pub struct MaintenanceArgs {
    /// The lease of a worker's deliveries, of each running attempt, and of the maintenance
    /// leader. Each is renewed every third of this; a dead holder's lease lapses after it.
    /// This bounds crash-recovery time.
    #[arg(long, env = "METASYNC_LEASE", default_value = "15s", value_parser = parse_duration)]
    pub lease: Duration,

    /// How often the maintenance leader re-pushes jobs whose delivery is missing from Redis.
    #[arg(long, env = "METASYNC_RECONCILE_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub reconcile_every: Duration,

    /// Finished jobs older than this are deleted from PostgreSQL, and audit events and retired
    /// table ids as old.
    #[arg(long, env = "METASYNC_JOB_RETENTION", default_value = "720h", value_parser = parse_duration)]
    pub job_retention: Duration,

    /// Finished webhook deliveries (delivered, failed or dropped) older than this are deleted
    /// with their attempts, except each hook's latest
    /// [`KEPT_DELIVERIES_PER_HOOK`](fleet::KEPT_DELIVERIES_PER_HOOK).
    #[arg(long, env = "METASYNC_WEBHOOK_DELIVERY_RETENTION", default_value = "720h", value_parser = parse_duration)]
    pub webhook_delivery_retention: Duration,

    /// Whether this process stands for election as maintenance leader. Leave it on: any
    /// process may lead, and with it off everywhere nothing is reaped, promoted, reconciled
    /// or scheduled.
    #[arg(long = "maintenance", env = "METASYNC_MAINTENANCE", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub stand_for_leader: bool,
}

impl MaintenanceArgs {
    /// The cadences the fleet-wide duties use.
    pub fn settings(&self) -> Settings {
        Settings {
            lease: self.lease,
            reconcile_every: self.reconcile_every,
            retention: self.job_retention,
            webhook_delivery_retention: self.webhook_delivery_retention,
        }
    }
}

/// Cadences and retention of the fleet-wide duties.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The leader's lease; reap, rescue and the gauges run every third of it.
    pub lease: Duration,
    /// How often to look for jobs whose delivery is missing from Redis.
    pub reconcile_every: Duration,
    /// Finished jobs older than this are deleted.
    pub retention: Duration,
    /// Finished webhook deliveries older than this are deleted (each hook keeps its latest).
    pub webhook_delivery_retention: Duration,
}
