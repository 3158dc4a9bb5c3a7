//! How the API starts, for `main` and for the tests alike (zero-to-production's
//! `Application::build`): settings → catalog pool → migrations → Redis queue → state → a bound
//! listener. Binding happens here, so a caller asking for port 0 learns the real port before
//! serving. While serving, the API also stands for election as maintenance leader, so the
//! fleet-wide duties (schedules, retries, repairs, the backlog gauge) run with zero workers.

use std::future::Future;

use anyhow::Context as _;
use metasync_shared::db;
use metasync_shared::maintenance::{Fleet, Participant};
use metasync_shared::ops::{self, ReadinessCheck};
use metasync_shared::submit::Submitter;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

use crate::routes::health;
use tokio::net::TcpListener;

use crate::config::ServeArgs;
use crate::quotas::Quotas;
use crate::state::AppState;
use crate::wake::JobEvents;

/// The API, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    header_timeout: std::time::Duration,
    /// What the fleet-wide duties work on, when this process stands for leader.
    fleet: Option<Fleet>,
    /// The operations listener and the recorder it renders, when both are configured.
    ops: Option<(TcpListener, PrometheusHandle)>,
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
        let internal_keys = args.internal.keys()?;
        let retry = args.retry.policy()?;
        let pool = db::connect_with_acquire_timeout(&args.database, args.db_acquire_timeout)
            .await
            .context("connecting to DATABASE_URL")?;
        db::migrate(&pool).await.context("applying migrations")?;
        let queue = args
            .queue
            .connect()
            .await
            .context("connecting to REDIS_URL")?;
        args.queue.check_eviction_policy().await?;
        let submitter = Submitter::new(pool.clone(), queue.clone(), retry.max_attempts);
        let fleet = args.maintenance.stand_for_leader.then(|| Fleet {
            db: pool.clone(),
            queue: queue.clone(),
            submitter: submitter.clone(),
            settings: args.maintenance.settings(),
        });
        let state = AppState {
            submitter,
            db: pool,
            job_events: JobEvents::spawn(queue.clone()),
            queue,
            sealing_key,
            fingerprinter,
            jwt,
            internal_keys,
            quotas: Quotas::new(args.quotas.limits()),
            outbound: args.outbound.policy()?,
            connection_test_timeout: args.connection_test_timeout,
            draining: Arc::default(),
        };
        let listener = TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding METASYNC_API_ADDR {}", args.addr))?;
        let ops = match (metrics, args.metrics_addr.0) {
            (Some(metrics), Some(addr)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding METASYNC_METRICS_ADDR {addr}"))?;
                Some((listener, metrics))
            }
            _ => None,
        };
        Ok(Self {
            listener,
            state,
            header_timeout: args.quotas.header_timeout,
            fleet,
            ops,
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

    /// Serves until `shutdown` resolves, then drains in-flight requests. Maintenance stops
    /// (and the maintenance lease is resigned) as soon as `shutdown` resolves, not after the
    /// drain.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "metasync-api listening");
        if let Some((listener, metrics)) = self.ops {
            tracing::info!(addr = %listener.local_addr()?, "operations listener (metrics, probes)");
            let state = self.state.clone();
            let check: ReadinessCheck = Arc::new(move || {
                let state = state.clone();
                Box::pin(async move { health::readiness(&state).await })
            });
            ops::spawn(listener, metrics, check);
        }
        let participant = self
            .fleet
            .map(|fleet| Participant::start(fleet, holder_id()));
        // Dropped when `shutdown` resolves, or with the server if it fails first.
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let draining = self.state.draining.clone();
        let maintenance = tokio::spawn(async move {
            let _ = stopped.await;
            if let Some(participant) = participant {
                participant.stop().await;
            }
        });
        let served = crate::serve(self.listener, self.state, self.header_timeout, async move {
            shutdown.await;
            // Unready at once, so the load balancer stops sending while requests drain.
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("shutting down: unready, draining in-flight requests");
            drop(stopping);
        })
        .await;
        let _ = maintenance.await;
        served
    }
}

/// This process's name in the maintenance election: `api-`, the hostname, a random suffix.
fn holder_id() -> String {
    let host = gethostname::gethostname();
    let suffix: u32 = rand::random();
    format!("api-{}-{suffix:08x}", host.to_string_lossy())
}
