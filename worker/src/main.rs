//! `metasync-worker`: run as many as wanted; each process gets a unique worker id.

use anyhow::Context as _;
use clap::Parser;
use metasync_shared::crypto::SecretBox;
use metasync_shared::queue::Queue;
use metasync_shared::submit::Submitter;
use metasync_shared::{db, telemetry};
use metasync_worker::config::{WorkerArgs, worker_id};
use metasync_worker::maintenance::Duties;
use metasync_worker::pipeline::WorkerContext;
use metasync_worker::scan::ScanLimits;
use metasync_worker::scan::reuse::SourceConnections;
use metasync_worker::{RunOptions, run};

#[derive(Parser)]
#[command(name = "metasync-worker", version, about = "The metasync sync worker")]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Cli::parse().args;
    telemetry::init_tracing();
    let secrets = SecretBox::new(&args.secret_key.key()?);
    let retry = args.retry.policy()?;
    if let Some(addr) = args.metrics_addr {
        telemetry::serve_metrics(addr).context("serving METASYNC_METRICS_ADDR")?;
    }
    let pool = db::connect(&args.database)
        .await
        .context("connecting to DATABASE_URL")?;
    let queue = Queue::connect(&args.queue.redis_url, &args.queue.queue)
        .await
        .context("connecting to REDIS_URL")?;
    let ctx = WorkerContext {
        submitter: Submitter::new(pool.clone(), queue.clone(), retry.max_attempts),
        db: pool,
        queue,
        secrets,
        worker_id: worker_id(args.worker_name.as_deref()),
        lease: args.lease,
        job_timeout: args.job_timeout,
        limits: ScanLimits {
            connect_timeout: args.connect_timeout,
            statement_timeout: args.statement_timeout,
        },
        sources: SourceConnections::new(args.source_idle, args.source_max_parked),
        retry,
        duties: Duties {
            reconcile_every: args.reconcile_every,
            retention: args.job_retention,
        },
    };
    let options = RunOptions {
        concurrency: usize::from(args.concurrency),
        shutdown_grace: args.shutdown_grace,
    };
    run(ctx, options, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested");
}
