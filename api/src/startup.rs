//! How the API starts, for `main` and for the tests alike (zero-to-production's
//! `Application::build`): settings → catalog pool → migrations → Redis queue → state → a bound
//! listener. Binding happens here, so a caller asking for port 0 learns the real port before
//! serving.

use std::future::Future;

use anyhow::Context as _;
use metasync_shared::db;
use metasync_shared::queue::Queue;
use metasync_shared::submit::Submitter;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::config::ServeArgs;
use crate::quotas::Quotas;
use crate::state::AppState;

/// The API, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    header_timeout: std::time::Duration,
}

impl Application {
    /// Connects, migrates and binds. `metrics` is the process's Prometheus recorder, when one
    /// is installed (it is global, so the caller owns it).
    pub async fn build(
        args: &ServeArgs,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let sealing_key = args.sealing.sealing_key()?;
        let fingerprinter = args.sealing.fingerprinter()?;
        let jwt = args.jwt.verifier()?;
        let retry = args.retry.policy()?;
        let pool = db::connect_with_acquire_timeout(&args.database, args.db_acquire_timeout)
            .await
            .context("connecting to DATABASE_URL")?;
        db::migrate(&pool).await.context("applying migrations")?;
        let queue = Queue::connect(&args.queue.redis_url, &args.queue.queue)
            .await
            .context("connecting to REDIS_URL")?;
        let state = AppState {
            submitter: Submitter::new(pool.clone(), queue.clone(), retry.max_attempts),
            db: pool,
            queue,
            sealing_key,
            fingerprinter,
            jwt,
            metrics,
            quotas: Quotas::new(args.quotas.limits()),
            outbound: args.outbound.policy()?,
        };
        let listener = TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding METASYNC_API_ADDR {}", args.addr))?;
        Ok(Self {
            listener,
            state,
            header_timeout: args.quotas.header_timeout,
        })
    }

    /// The port actually bound (the one the OS chose when asked for port 0).
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// What the handlers share: the pool, the queue, the keys.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "metasync-api listening");
        crate::serve(self.listener, self.state, self.header_timeout, shutdown).await
    }
}
