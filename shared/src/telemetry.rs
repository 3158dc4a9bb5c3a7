//! Logging and metrics set-up for both binaries. Metric names follow
//! `metasync_<name>_<unit>[_total]`; `docs/metrics.md` is their contract, and [`FAMILIES`] is
//! its one copy in code: every family's type, help text, labels and (where they can be known
//! in advance) label values. At start-up each is described (HELP and TYPE), and every counter
//! and histogram whose label values are all known is registered at 0, so a rate or an alert
//! never waits for a first event. A test (tests/tests/metrics_contract.rs) checks that the
//! scrapes, this table and the doc agree.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber: `RUST_LOG` filters (default `info`), and
/// `METASYNC_LOG_FORMAT=json` switches to one JSON object per line for log shippers.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("METASYNC_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests start several components in one process) is harmless.
    let _ = result;
}

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Which processes export a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `metasync-api`.
    Api,
    /// `metasync-worker`.
    Worker,
    /// Both binaries (maintenance and submission code they share).
    Both,
}

impl Role {
    /// The `role` label of `metasync_build_info`, and the doc's "exported by" column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Both => "both",
        }
    }

    fn includes(self, process: Role) -> bool {
        self == Role::Both || self == process
    }
}

/// Histogram buckets, by what is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buckets {
    /// Not a histogram.
    None,
    /// Requests and maintenance runs: 1 ms to 60 s.
    Short,
    /// Jobs and their phases: 10 ms to 30 min (the job timeout is 10 min by default, and a
    /// backlog can hold work longer).
    Long,
    /// Attempts used: 1 to 25.
    Attempts,
}

impl Buckets {
    fn values(self) -> &'static [f64] {
        match self {
            Self::None => &[],
            Self::Short => &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
            Self::Long => &[
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                900.0, 1200.0, 1800.0,
            ],
            Self::Attempts => &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 25.0],
        }
    }
}

/// One label of a family, with its values when they form a fixed set (empty: not known in
/// advance, such as a route template or a status code).
#[derive(Debug, Clone, Copy)]
pub struct Label {
    /// The label's name.
    pub name: &'static str,
    /// Its values, when fixed.
    pub values: &'static [&'static str],
}

/// One metric family of the contract.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The family's name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Who exports it.
    pub by: Role,
    /// Its labels (a histogram's `le` aside).
    pub labels: &'static [Label],
    /// A histogram's buckets.
    pub buckets: Buckets,
    /// The HELP text.
    pub help: &'static str,
    /// A fleet gauge: set by the maintenance leader, zeroed when it stops leading.
    pub fleet: bool,
}

const fn label(name: &'static str, values: &'static [&'static str]) -> Label {
    Label { name, values }
}

/// A family of `kind`; the helpers below name the kind.
const fn family(
    name: &'static str,
    kind: Kind,
    by: Role,
    labels: &'static [Label],
    buckets: Buckets,
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        by,
        labels,
        buckets,
        help,
        fleet: false,
    }
}

const fn counter(
    name: &'static str,
    by: Role,
    labels: &'static [Label],
    help: &'static str,
) -> Family {
    family(name, Kind::Counter, by, labels, Buckets::None, help)
}

const fn gauge(
    name: &'static str,
    by: Role,
    labels: &'static [Label],
    help: &'static str,
) -> Family {
    family(name, Kind::Gauge, by, labels, Buckets::None, help)
}

const fn fleet_gauge(name: &'static str, labels: &'static [Label], help: &'static str) -> Family {
    Family {
        fleet: true,
        ..gauge(name, Role::Both, labels, help)
    }
}

const fn histogram(
    name: &'static str,
    by: Role,
    labels: &'static [Label],
    buckets: Buckets,
    help: &'static str,
) -> Family {
    family(name, Kind::Histogram, by, labels, buckets, help)
}

/// Every duty's name (the `duty` label): a worker's own, the election, and the fleet-wide ones.
pub const DUTIES: &[&str] = &[
    "redis_heartbeat",
    "lease_renewal",
    "claimed_audit",
    "leader_election",
    "reap",
    "rescue",
    "queue_gauges",
    "fleet_gauges",
    "promote",
    "reconcile",
    "schedule",
    "prune",
];
/// How a delivery ended (`metasync_jobs_total`).
pub const OUTCOMES: &[&str] = &[
    "succeeded",
    "failed",
    "retrying",
    "deferred",
    "skipped",
    "fenced",
    "cancelled",
];
/// The final outcomes of a job that a worker records.
pub const FINAL_OUTCOMES: &[&str] = &["succeeded", "failed"];
/// Why an attempt failed (`metasync_job_failures_total{reason}`): a fixed set, never text.
pub const FAILURE_REASONS: &[&str] = &[
    "connect",
    "source",
    "timeout",
    "panic",
    "catalog",
    "credentials",
    "policy",
    "other",
];
/// Redis operations whose errors are counted (`metasync_queue_errors_total{op}`).
pub const QUEUE_OPS: &[&str] = &[
    "pickup",
    "ack",
    "redeliver",
    "push",
    "maintenance",
    "handle",
    "announce",
    "subscribe",
];
/// Where a catalog database error was seen (`metasync_catalog_db_errors_total{site}`).
pub const DB_SITES: &[&str] = &["api", "attempt", "worker", "maintenance"];
/// Unfinished job states (`metasync_jobs{state}`).
pub const UNFINISHED_STATES: &[&str] = &["queued", "running", "retrying"];
/// Resource freshness (`metasync_resources{freshness}`; defined in docs/metrics.md).
pub const FRESHNESS: &[&str] = &["fresh", "stale", "failing", "never_synced"];

const NO_LABELS: &[Label] = &[];
const DUTY: &[Label] = &[label("duty", DUTIES)];
const LEASE: &[Label] = &[label("lease", &["attempts", "worker", "leader"])];

/// The contract, in the order of docs/metrics.md.
pub const FAMILIES: &[Family] = &[
    gauge(
        "metasync_build_info",
        Role::Both,
        &[
            label("version", &[]),
            label("role", &["api", "worker"]),
            label("queue", &[]),
        ],
        "Always 1; the labels say which version runs, as which role, on which queue",
    ),
    // The API.
    counter(
        "metasync_http_requests_total",
        Role::Api,
        &[
            label("method", &[]),
            label("route", &[]),
            label("status", &[]),
        ],
        "API requests by method, route template and status",
    ),
    histogram(
        "metasync_http_request_duration_seconds",
        Role::Api,
        &[label("method", &[]), label("route", &[])],
        Buckets::Short,
        "API request latency; ?wait long-polls are left out (they last as long as asked)",
    ),
    // Submission (the API, and the scheduler in whichever process leads).
    counter(
        "metasync_jobs_enqueued_total",
        Role::Both,
        &[label("trigger", &["manual", "retry", "batch", "schedule"])],
        "Jobs created, by what asked for them",
    ),
    counter(
        "metasync_delivery_push_failures_total",
        Role::Both,
        NO_LABELS,
        "Redis pushes that failed (the job stays queued in PostgreSQL for the reconciler)",
    ),
    counter(
        "metasync_delivery_push_retries_total",
        Role::Both,
        NO_LABELS,
        "Pushes tried a second time because the Redis connection was lost",
    ),
    // Workers: deliveries and attempts.
    counter(
        "metasync_jobs_total",
        Role::Worker,
        &[label("outcome", OUTCOMES)],
        "Deliveries handled by workers, by outcome",
    ),
    histogram(
        "metasync_job_duration_seconds",
        Role::Worker,
        &[label("outcome", OUTCOMES)],
        Buckets::Long,
        "Time to handle one delivery",
    ),
    histogram(
        "metasync_job_queue_wait_seconds",
        Role::Worker,
        &[label("class", &["manual", "scheduled"])],
        Buckets::Long,
        "Time from a job being ready (created, or its retry due) to its claim: the pickup SLI",
    ),
    histogram(
        "metasync_job_end_to_end_seconds",
        Role::Worker,
        &[label("outcome", FINAL_OUTCOMES)],
        Buckets::Long,
        "Time from a job's creation to its final outcome",
    ),
    histogram(
        "metasync_job_attempts",
        Role::Worker,
        &[label("outcome", FINAL_OUTCOMES)],
        Buckets::Attempts,
        "Attempts a job used, observed at its final outcome",
    ),
    counter(
        "metasync_job_failures_total",
        Role::Worker,
        &[
            label("class", &["transient", "permanent"]),
            label("reason", FAILURE_REASONS),
        ],
        "Failed attempts, by error class and reason",
    ),
    counter(
        "metasync_job_takeovers_total",
        Role::Worker,
        NO_LABELS,
        "Running jobs claimed again after their worker's lease lapsed",
    ),
    counter(
        "metasync_fenced_writes_total",
        Role::Worker,
        NO_LABELS,
        "Attempts whose writes the fence refused: a newer attempt held the job",
    ),
    histogram(
        "metasync_scan_duration_seconds",
        Role::Worker,
        NO_LABELS,
        Buckets::Long,
        "Time to scan a source (connection included), successful or not",
    ),
    histogram(
        "metasync_source_connect_duration_seconds",
        Role::Worker,
        NO_LABELS,
        Buckets::Long,
        "Time to open a new source connection, successful or not",
    ),
    histogram(
        "metasync_catalog_write_duration_seconds",
        Role::Worker,
        NO_LABELS,
        Buckets::Long,
        "Time to write a snapshot to the catalog and commit it",
    ),
    counter(
        "metasync_source_connections_total",
        Role::Worker,
        &[label("reused", &["true", "false"])],
        "Source connections a scan started on: parked ones reused, or newly opened",
    ),
    gauge(
        "metasync_source_connections_parked",
        Role::Worker,
        &[label("engine", &["postgres", "mysql"])],
        "Source connections parked between jobs, by engine",
    ),
    counter(
        "metasync_source_jobs_deferred_total",
        Role::Worker,
        NO_LABELS,
        "Jobs deferred because no connection to their source server could be had in time",
    ),
    counter(
        "metasync_connection_tests_total",
        Role::Worker,
        &[label(
            "result",
            &[
                "ok",
                "refused_by_policy",
                "unresolved",
                "connection_refused",
                "timed_out",
                "unreachable",
                "wrong_protocol",
                "tls",
                "authentication_failed",
                "unknown_database",
                "permission_denied",
                "server_busy",
                "credentials",
                "server_error",
            ],
        )],
        "Test-connection requests a worker answered: ok, or the failure's code",
    ),
    gauge(
        "metasync_worker_in_flight",
        Role::Worker,
        NO_LABELS,
        "Deliveries this worker is handling now",
    ),
    gauge(
        "metasync_worker_concurrency",
        Role::Worker,
        NO_LABELS,
        "Deliveries this worker handles at once at most",
    ),
    counter(
        "metasync_deliveries_audited_total",
        Role::Worker,
        NO_LABELS,
        "Claimed deliveries no attempt of their worker held, handed back by its audit",
    ),
    counter(
        "metasync_deliveries_released_total",
        Role::Worker,
        NO_LABELS,
        "Unfinished deliveries a stopping worker handed back for prompt redelivery",
    ),
    // Errors.
    counter(
        "metasync_queue_errors_total",
        Role::Both,
        &[label("op", QUEUE_OPS)],
        "Redis errors, by operation",
    ),
    counter(
        "metasync_queue_write_retries_total",
        Role::Both,
        &[label("op", &["ack", "redeliver"])],
        "Acknowledgements and redeliveries retried after a Redis error",
    ),
    counter(
        "metasync_catalog_db_errors_total",
        Role::Both,
        &[label("site", DB_SITES)],
        "Catalog PostgreSQL errors, by where they were seen",
    ),
    // Maintenance.
    counter(
        "metasync_deliveries_reaped_total",
        Role::Both,
        NO_LABELS,
        "Deliveries given back after a worker's lease lapsed",
    ),
    counter(
        "metasync_jobs_rescued_total",
        Role::Both,
        NO_LABELS,
        "Running jobs with a cancel requested, ended by the rescuer after their worker was lost",
    ),
    counter(
        "metasync_deliveries_repaired_total",
        Role::Both,
        NO_LABELS,
        "Jobs re-pushed by the reconciler because their delivery was missing",
    ),
    gauge(
        "metasync_maintenance_leader",
        Role::Both,
        NO_LABELS,
        "1 while this process holds the maintenance lease, else 0",
    ),
    counter(
        "metasync_lease_renewal_failures_total",
        Role::Both,
        &[label("store", &["postgres", "redis"])],
        "Lease renewals that failed, by the store holding the lease",
    ),
    histogram(
        "metasync_lease_renewal_lag_seconds",
        Role::Both,
        LEASE,
        Buckets::Short,
        "How late each successful lease renewal completed against the time it was due",
    ),
    gauge(
        "metasync_lease_renewal_lag_max_seconds",
        Role::Both,
        LEASE,
        "The worst lease renewal lag since the process started",
    ),
    counter(
        "metasync_maintenance_runs_total",
        Role::Both,
        DUTY,
        "Runs of each maintenance duty",
    ),
    counter(
        "metasync_maintenance_errors_total",
        Role::Both,
        DUTY,
        "Failed runs of each maintenance duty",
    ),
    histogram(
        "metasync_maintenance_duration_seconds",
        Role::Both,
        DUTY,
        Buckets::Short,
        "Time one run of a duty took",
    ),
    gauge(
        "metasync_maintenance_last_success_timestamp_seconds",
        Role::Both,
        &[label("duty", &[])],
        "Unix time of the duty's last successful run in this process",
    ),
    // Fleet gauges, by the maintenance leader.
    gauge(
        "metasync_db_pool_connections",
        Role::Both,
        &[label("state", &["idle", "in_use", "max"])],
        "This process's catalog connection pool: idle and in-use connections, and its size limit",
    ),
    fleet_gauge(
        "metasync_queue_ready_deliveries",
        NO_LABELS,
        "Deliveries waiting in the ready lists (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_queue_delayed_deliveries",
        NO_LABELS,
        "Deliveries scheduled for later (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_queue_claimed_deliveries",
        NO_LABELS,
        "Deliveries claimed by workers (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_queue_pending_deliveries",
        NO_LABELS,
        "Jobs with a delivery outstanding anywhere (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_workers_live",
        NO_LABELS,
        "Workers whose lease is current (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_workers_concurrency",
        NO_LABELS,
        "Sum of the live workers' announced concurrency (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_jobs",
        &[label("state", UNFINISHED_STATES)],
        "Unfinished jobs by state, from PostgreSQL (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_job_oldest_age_seconds",
        &[label("state", &["queued", "retrying"])],
        "Age of the oldest job in the state, since its creation (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_job_running_longest_seconds",
        NO_LABELS,
        "How long the longest running attempt has run (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_resources",
        &[label("freshness", FRESHNESS)],
        "Resources by freshness (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_schedules_overdue",
        NO_LABELS,
        "Scheduled resources whose next tick is over 60 s past (fleet, by the leader; 0 elsewhere)",
    ),
    fleet_gauge(
        "metasync_schedule_lag_max_seconds",
        NO_LABELS,
        "How far past its due time the most overdue schedule tick is (fleet, by the leader; 0 elsewhere)",
    ),
];

fn prometheus() -> Result<PrometheusBuilder, BuildError> {
    let mut builder = PrometheusBuilder::new().set_buckets(Buckets::Short.values())?;
    for family in FAMILIES
        .iter()
        .filter(|f| f.kind == Kind::Histogram && f.buckets != Buckets::Short)
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(family.name.into()), family.buckets.values())?;
    }
    Ok(builder)
}

/// Installs the Prometheus recorder, describes every family, registers the series known in
/// advance at 0 and sets `metasync_build_info`; the operations listener (`crate::ops`) renders
/// the handle.
pub fn install_metrics(role: Role, queue: &str) -> Result<PrometheusHandle, BuildError> {
    let handle = prometheus()?.install_recorder()?;
    describe(role);
    metrics::gauge!(
        "metasync_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "role" => role.as_str(),
        "queue" => queue.to_owned()
    )
    .set(1.0);
    process_collector().describe();
    Ok(handle)
}

/// Describes every family `role` exports, and registers at 0 each series whose labels are all
/// known in advance (a gauge whose 0 would be a lie, such as a last-success time, lists no
/// label values in [`FAMILIES`]).
pub fn describe(role: Role) {
    for family in FAMILIES.iter().filter(|f| f.by.includes(role)) {
        let (name, help) = (family.name, family.help);
        match family.kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
        let known = family.labels.iter().all(|l| !l.values.is_empty());
        if !known {
            continue;
        }
        for labels in label_sets(family.labels) {
            match family.kind {
                Kind::Counter => {
                    metrics::counter!(name, labels.clone()).absolute(0);
                }
                Kind::Gauge => metrics::gauge!(name, labels.clone()).set(0.0),
                Kind::Histogram => {
                    let _ = metrics::histogram!(name, labels.clone());
                }
            }
        }
    }
}

/// Zeroes every fleet gauge: a process that stops leading must not keep exporting its last
/// figures, so a `max` or `sum` across processes reads the leader's alone.
pub fn clear_fleet_gauges() {
    for family in FAMILIES.iter().filter(|f| f.fleet) {
        for labels in label_sets(family.labels) {
            metrics::gauge!(family.name, labels).set(0.0);
        }
    }
}

/// Every combination of the labels' values.
fn label_sets(labels: &[Label]) -> Vec<Vec<metrics::Label>> {
    let mut sets = vec![Vec::new()];
    for l in labels {
        sets = sets
            .into_iter()
            .flat_map(|set: Vec<metrics::Label>| {
                l.values.iter().map(move |v| {
                    let mut set = set.clone();
                    set.push(metrics::Label::new(l.name, *v));
                    set
                })
            })
            .collect();
    }
    sets
}

/// Refreshes what is read at each scrape: the process metrics and the pool gauges.
pub fn refresh() {
    process_collector().collect();
    if let Some(pool) = WATCHED_POOL.get() {
        let idle = pool.num_idle() as f64;
        let size = f64::from(pool.size());
        let max = f64::from(pool.options().get_max_connections());
        metrics::gauge!("metasync_db_pool_connections", "state" => "idle").set(idle);
        metrics::gauge!("metasync_db_pool_connections", "state" => "in_use").set(size - idle);
        metrics::gauge!("metasync_db_pool_connections", "state" => "max").set(max);
    }
}

static WATCHED_POOL: OnceLock<sqlx::PgPool> = OnceLock::new();

/// Exports `metasync_db_pool_connections` for `pool`: the process's first catalog pool (a
/// binary has one; tests that build several in one process see the first).
pub fn watch_pool(pool: &sqlx::PgPool) {
    let _ = WATCHED_POOL.set(pool.clone());
}

/// The process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …,
/// from the metrics-process crate), refreshed by each scrape.
pub fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(f.name.starts_with("metasync_"), "{}", f.name);
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            assert_eq!(
                f.kind == Kind::Histogram,
                f.buckets != Buckets::None,
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn label_sets_are_the_cartesian_product() {
        let sets = label_sets(&[label("a", &["1", "2"]), label("b", &["x", "y", "z"])]);
        assert_eq!(sets.len(), 6);
        assert!(label_sets(&[]).len() == 1);
    }
}
