//! The metasync worker: pulls deliveries from Redis, runs the sync pipeline
//! ([`pipeline`]) under apalis 1.0's runtime, and records every outcome in PostgreSQL.

pub mod audit;
pub mod backend;
pub mod config;
pub mod connection_test;
pub mod custody;
pub mod error;
#[cfg(feature = "test-faults")]
pub mod faults;
pub mod in_flight;
pub mod maintenance;
pub mod pipeline;
pub mod scan;
pub mod startup;
pub mod webhooks;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt as _;
use apalis::prelude::{AbortError, BoxDynError, Data, Monitor, RetryAfterError, WorkerBuilder};
use futures::FutureExt as _;
use metasync_shared::db::jobs;
use metasync_shared::warnings::Warnings;

use crate::backend::{Delivery, RedisBackend};
use crate::in_flight::InFlight;
use crate::pipeline::{Outcome, WorkerContext};

/// How a worker process runs.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub concurrency: usize,
    /// On shutdown, how long running jobs may take before their deliveries are released.
    pub shutdown_grace: Duration,
}

/// Runs a worker until `shutdown` resolves, then stops taking work, lets running jobs finish
/// within the grace period, and hands everything unfinished back for prompt redelivery.
pub async fn run(
    ctx: WorkerContext,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let concurrency = u16::try_from(options.concurrency).unwrap_or(u16::MAX);
    maintenance::register(&ctx, concurrency).await?;
    metrics::gauge!("metasync_worker_concurrency").set(f64::from(concurrency));
    let in_flight = InFlight::default();
    let maintenance = maintenance::spawn(ctx.clone(), in_flight.clone(), concurrency);
    // Tests are served on their own task, never behind a job slot.
    let test_lane = connection_test::TestLane::spawn(ctx.clone());
    // Webhook deliveries likewise: a receiver that never answers holds none of the slots.
    let webhook_lane = webhooks::WebhookLane::spawn(ctx.clone());
    tracing::info!(worker = %ctx.worker_id, concurrency = options.concurrency, "worker started");

    let factory_ctx = ctx.clone();
    let monitor = Monitor::new()
        .register(move |_restarts| {
            WorkerBuilder::new(factory_ctx.worker_id.as_str())
                .backend(RedisBackend::new(
                    factory_ctx.queue.clone(),
                    factory_ctx.worker_id.clone(),
                ))
                .data(factory_ctx.clone())
                .data(in_flight.clone())
                .concurrency(options.concurrency)
                .build(handle)
        })
        // apalis polls the terminator only once shutdown begins; creating the timer inside it
        // counts the grace from the signal, not from start-up.
        .with_terminator(async move { tokio::time::sleep(options.shutdown_grace).await });
    let result = monitor
        .run_with_signal({
            let readiness = ctx.readiness.clone();
            async move {
                shutdown.await;
                readiness.drain();
                Ok(())
            }
        })
        .await;
    test_lane.stop().await;
    webhook_lane.stop().await;
    maintenance.stop().await;

    // Whatever did not finish goes back now, not when the lease lapses.
    let expired = jobs::expire_leases(&ctx.db, &ctx.worker_id).await;
    let released = ctx.queue.release(&ctx.worker_id).await;
    if let Ok(n) = &released {
        metrics::counter!("metasync_deliveries_released_total").increment(*n as u64);
    }
    ctx.sources.close_all().await;
    tracing::info!(
        worker = %ctx.worker_id,
        unfinished_jobs = ?expired.as_ref().ok(),
        released_deliveries = ?released.as_ref().ok(),
        "worker stopped"
    );
    result?;
    expired?;
    released?;
    Ok(())
}

/// While the catalog database or Redis is down, one warning per 10 s for every job slot.
static UNHANDLED_DELIVERIES: std::sync::Mutex<Warnings> =
    std::sync::Mutex::new(Warnings::new("delivery not handled; requeued"));

/// The apalis task function. Outcomes are recorded in PostgreSQL by the pipeline; the returned
/// error only tells apalis's event stream what happened (AbortError = permanent).
async fn handle(
    delivery: Delivery,
    ctx: Data<WorkerContext>,
    in_flight: Data<InFlight>,
) -> Result<(), BoxDynError> {
    // A panic outside the attempt (which records its own as a failure) is handled like an
    // infrastructure error: the delivery comes back later, and the attempt, no longer in
    // `in_flight`, loses its lease on time.
    let handled = AssertUnwindSafe(pipeline::handle_delivery(&ctx, &in_flight, &delivery))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(anyhow::anyhow!(
                "handling the delivery panicked: {}",
                pipeline::panic_message(panic.as_ref())
            ))
        });
    match handled {
        Ok(Outcome::Failed(_, message)) => Err(AbortError::new(message).into()),
        Ok(Outcome::Retrying(_, message, delay)) => {
            Err(RetryAfterError::new(message, delay).into())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            // The catalog database or Redis failed: hand the delivery back for a later try.
            UNHANDLED_DELIVERIES
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .failed(&format_args!("job {}: {e:#}", delivery.job_id));
            let _ = ctx
                .queue
                .redeliver_later(&ctx.worker_id, &delivery, Duration::from_secs(1))
                .await;
            Err(e.into())
        }
    }
}
