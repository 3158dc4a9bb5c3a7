//! How a worker starts, for `main` and for the tests alike: settings → catalog pool → Redis
//! queue → [`WorkerContext`] → [`run`](crate::run). Serving metrics stays with `main`, since
//! the recorder is global to the process; [`Worker::readiness`] is what its `/readyz` reads.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use metasync_shared::db;
use metasync_shared::ops::Readiness;
use metasync_shared::submit::Submitter;

use crate::RunOptions;
use crate::config::{WorkerArgs, worker_id};
use crate::pipeline::WorkerContext;
use crate::scan::ScanLimits;
use crate::scan::permits::ServerPermits;
use crate::scan::reuse::SourceConnections;

/// A worker, connected and configured but not yet taking work.
pub struct Worker {
    ctx: WorkerContext,
    options: RunOptions,
}

impl Worker {
    /// Connects to the catalog database and Redis and assembles the context every job slot
    /// shares. The worker id is the configured name plus a random suffix.
    pub async fn build(args: &WorkerArgs) -> anyhow::Result<Self> {
        let keys = args.opening.keys()?;
        let retry = args.retry.policy()?;
        let pool = db::connect(&args.database)
            .await
            .context("connecting to DATABASE_URL")?;
        let queue = args
            .queue
            .connect()
            .await
            .context("connecting to REDIS_URL")?;
        args.queue.check_eviction_policy().await?;
        let worker_id = worker_id(args.worker_name.as_deref());
        let permits = ServerPermits::connect(
            queue.client(),
            &args.queue.queue,
            &worker_id,
            args.source_connections_per_server,
            args.maintenance.lease,
        )
        .await
        .context("connecting to REDIS_URL")?;
        let ctx = WorkerContext {
            submitter: Submitter::new(pool.clone(), queue.clone(), retry.max_attempts),
            db: pool,
            queue,
            keys,
            outbound: args.outbound.policy()?,
            worker_id,
            lease: args.maintenance.lease,
            job_timeout: args.job_timeout,
            limits: ScanLimits {
                connect_timeout: args.connect_timeout,
                statement_timeout: args.statement_timeout,
            },
            sources: SourceConnections::new(args.source_idle, args.source_max_parked)
                .with_permits(permits),
            filters: Arc::default(),
            retry,
            maintenance: args.maintenance.clone(),
            readiness: Readiness::new(args.maintenance.lease),
        };
        let options = RunOptions {
            concurrency: usize::from(args.concurrency),
            shutdown_grace: args.shutdown_grace,
        };
        Ok(Self { ctx, options })
    }

    /// What the operations listener's `/readyz` reports for this worker.
    pub fn readiness(&self) -> &Readiness {
        &self.ctx.readiness
    }

    /// This process's worker id, as recorded on the jobs it claims.
    pub fn worker_id(&self) -> &str {
        &self.ctx.worker_id
    }

    /// Runs until `shutdown` resolves; see [`run`](crate::run) for what shutdown does.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        crate::run(self.ctx, self.options, shutdown).await
    }
}
