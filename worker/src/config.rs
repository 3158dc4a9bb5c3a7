//! Worker settings. Each is an environment variable with a matching `--flag`.

use std::time::Duration;

use clap::Args;
use metasync_shared::config::{DatabaseArgs, OpeningArgs, OutboundArgs, QueueArgs, parse_duration};
use metasync_shared::maintenance::MaintenanceArgs;
use metasync_shared::retry::RetryArgs;

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs one process runs at once.
    #[arg(long, env = "METASYNC_WORKER_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Limit for opening a connection to a source.
    #[arg(long, env = "METASYNC_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How long a source connection stays open after a successful scan, for the next job on
    /// the same server, database and credentials. `0s` opens and closes one per job.
    #[arg(long, env = "METASYNC_SOURCE_IDLE", default_value = "5s", value_parser = parse_duration)]
    pub source_idle: Duration,

    /// Most source connections one process keeps parked (per engine).
    #[arg(long, env = "METASYNC_SOURCE_MAX_PARKED", default_value_t = 16)]
    pub source_max_parked: usize,

    /// Most connections the whole fleet opens to one source server (host and port as
    /// registered), parked ones included; a job that cannot get one within 2 s is deferred
    /// without using an attempt. Counted in Redis. `0` lifts the cap.
    #[arg(
        long,
        env = "METASYNC_SOURCE_CONNECTIONS_PER_SERVER",
        default_value_t = 4
    )]
    pub source_connections_per_server: u32,

    /// Limit for each catalog statement on a source (on PostgreSQL, one statement reads a
    /// whole database).
    #[arg(long, env = "METASYNC_STATEMENT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub statement_timeout: Duration,

    /// Limit for a whole attempt; past it the attempt fails as transient.
    #[arg(long, env = "METASYNC_JOB_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub job_timeout: Duration,

    /// On SIGTERM, how long running jobs may take to finish before their deliveries are
    /// released for another worker.
    #[arg(long, env = "METASYNC_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// The operations listener (`/metrics`, `/healthz`, `/readyz`), e.g. 0.0.0.0:9091; `off`
    /// (the default) for none.
    #[arg(long, env = "METASYNC_METRICS_ADDR", default_value = "off",
          value_parser = metasync_shared::ops::parse_listen_addr)]
    pub metrics_addr: metasync_shared::ops::ListenAddr,

    /// Prefix of the worker id; the hostname when unset. A random suffix is always added.
    #[arg(long, env = "METASYNC_WORKER_NAME")]
    pub worker_name: Option<String>,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub opening: OpeningArgs,
    #[command(flatten)]
    pub outbound: OutboundArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub maintenance: MaintenanceArgs,
}

/// A unique id for this process: a name (hostname by default) plus a random suffix, so that two
/// processes never share claimed deliveries, even after a restart under the same name.
pub fn worker_id(name: Option<&str>) -> String {
    let base = name
        .map(str::to_owned)
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let suffix: u32 = rand::random();
    format!("{base}-{suffix:08x}")
}
