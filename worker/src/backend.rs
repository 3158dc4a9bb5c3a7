//! `RedisBackend`: an apalis 1.0 [`Backend`] over metasync's own Redis queue
//! ([`metasync_shared::queue`]). apalis-redis 1.0.0 is not used: it wedges past ~8,000 due
//! tasks, sees new work only at its heartbeat without polling, ignores `max_attempts`, and
//! keeps task data forever (see ARCHITECTURE.md).
//!
//! apalis asks for a task only when a job slot is free (the concurrency layer's `poll_ready`
//! comes first), so at most one blocking pickup is in flight per process. Redis errors never
//! reach apalis (which would stop the worker): the backend logs them and retries with capped,
//! jittered backoff.

use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{Backend, Task, WorkerContext};
use apalis_core::backend::BackendConfig;
use apalis_core::backend::finalize::Ephemeral;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use metasync_shared::queue::{Fetcher, Pickup, Queue, QueueError};
use metasync_shared::warnings::Warnings;
use tower::layer::util::Identity;
use uuid::Uuid;

/// What a worker receives: the id of the job to run and where it queued. Never a credential.
pub use metasync_shared::queue::Delivery;

/// How long one blocking wait for a wake-up lasts before the pickup loop looks again.
const BLOCK: Duration = Duration::from_secs(2);

type PickupFuture = BoxFuture<'static, (Option<Fetcher>, Result<Option<Pickup>, QueueError>)>;

pub struct RedisBackend {
    queue: Queue,
    worker_id: String,
    fetcher: Option<Fetcher>,
    pending: Option<PickupFuture>,
    failures: u32,
    /// While Redis is down, one warning per 10 s with a count, not one per retry.
    warnings: Warnings,
}

impl RedisBackend {
    pub fn new(queue: Queue, worker_id: String) -> Self {
        Self {
            queue,
            worker_id,
            fetcher: None,
            pending: None,
            failures: 0,
            warnings: Warnings::new("redis pickup"),
        }
    }

    fn start_pickup(&mut self) -> PickupFuture {
        let queue = self.queue.clone();
        let worker = self.worker_id.clone();
        let fetcher = self.fetcher.take();
        let backoff = (self.failures > 0).then(|| {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .without_max_times()
                .build()
                .nth(self.failures.min(16) as usize - 1)
                .unwrap_or(Duration::from_secs(5))
        });
        async move {
            if let Some(delay) = backoff {
                tokio::time::sleep(delay).await;
            }
            let mut fetcher = match fetcher {
                Some(f) => f,
                None => match queue.fetcher(&worker).await {
                    Ok(f) => f,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = fetcher.next(BLOCK).await;
            (Some(fetcher), result)
        }
        .boxed()
    }
}

impl Backend for RedisBackend {
    type Task = Task<Delivery>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            let mut pending = match self.pending.take() {
                Some(p) => p,
                None => self.start_pickup(),
            };
            let (fetcher, result) = match pending.poll_unpin(cx) {
                Poll::Pending => {
                    self.pending = Some(pending);
                    return Poll::Pending;
                }
                Poll::Ready(done) => done,
            };
            match result {
                Ok(pickup) => {
                    self.fetcher = fetcher;
                    self.failures = 0;
                    self.warnings.succeeded();
                    match pickup {
                        Some(Pickup::Job(delivery)) => {
                            return Poll::Ready(Some(Ok(Task::new(delivery))));
                        }
                        Some(Pickup::Garbage(payload)) => {
                            tracing::warn!(%payload, "dropping a delivery that is not a job id");
                            let queue = self.queue.clone();
                            let worker = self.worker_id.clone();
                            tokio::spawn(async move {
                                let _ = queue.ack_garbage(&worker, &payload).await;
                            });
                        }
                        None => {} // Block timed out; block again.
                    }
                }
                Err(e) => {
                    // Drop the connection: it may be broken. Reconnect after a backoff.
                    self.fetcher = None;
                    self.failures = self.failures.saturating_add(1);
                    self.warnings.failed(&e);
                    metrics::counter!("metasync_queue_errors_total", "op" => "pickup").increment(1);
                }
            }
        }
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // Dropping an in-flight pickup may still move one delivery into our claimed list;
        // `Queue::release` at shutdown hands it back.
        self.pending = None;
        self.fetcher = None;
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for RedisBackend {
    type Args = Delivery;
    type Id = Uuid;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}
