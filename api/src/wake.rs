//! Wakes long-polls when a job changes: one Redis subscription per API process
//! ([`Queue::job_events`]) fans job ids out to every waiting request.
//!
//! Workers publish a job's id after its attempt's outcome is committed, so a waiter re-reads
//! PostgreSQL (the truth) only when its job may have moved. A trigger with `NOTIFY` would cover
//! every path, but PostgreSQL serializes the commits of notifying transactions: measured with
//! pgbench (8 clients, one UPDATE per transaction), 2,250–2,640 commits/s fell to 490–620 with a
//! `pg_notify` added. Changes that are not announced (a claim, a maintenance duty's rescue) are
//! seen by the waiter's own re-read (`METASYNC_WAIT_RECHECK`, default once a second).

use std::time::Duration;

use futures::StreamExt as _;
use metasync_shared::ids::JobId;
use metasync_shared::queue::Queue;
use tokio::sync::broadcast;

/// Job ids buffered per waiter; one that falls further behind re-reads at once.
const BUFFER: usize = 4_096;

/// The fan-out of job events to waiting requests.
#[derive(Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<JobId>,
}

impl JobEvents {
    /// Starts the subscription on its own task; it reconnects after a second whenever Redis
    /// drops it (waiters fall back to their re-read meanwhile).
    pub fn spawn(queue: Queue) -> Self {
        let (sender, _) = broadcast::channel(BUFFER);
        let events = Self {
            sender: sender.clone(),
        };
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), queue.job_events()).await {
                    Ok(Ok(stream)) => {
                        let mut stream = std::pin::pin!(stream);
                        while let Some(job) = stream.next().await {
                            // No receiver is no error: nobody is waiting.
                            let _ = sender.send(job);
                        }
                        tracing::debug!("job event subscription ended; resubscribing");
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "cannot subscribe to job events");
                        metrics::counter!("metasync_queue_errors_total", "op" => "subscribe")
                            .increment(1);
                    }
                    Err(_) => {
                        metrics::counter!("metasync_queue_errors_total", "op" => "subscribe")
                            .increment(1);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        events
    }

    /// A waiter's view, to take before reading the state it will wait on (so no event between
    /// the read and the wait is missed).
    pub fn subscribe(&self) -> Waiter {
        Waiter {
            receiver: self.sender.subscribe(),
        }
    }
}

/// One request's subscription.
pub struct Waiter {
    receiver: broadcast::Receiver<JobId>,
}

impl Waiter {
    /// Returns when one of the jobs `wanted` accepts may have changed, when events were lost
    /// (the caller must re-read), or after `recheck`, whichever comes first.
    pub async fn changed(&mut self, wanted: impl Fn(&JobId) -> bool, recheck: Duration) {
        let announced = async {
            loop {
                match self.receiver.recv().await {
                    Ok(job) if wanted(&job) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    // The subscription task never drops its sender; only the re-read remains.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        let _ = tokio::time::timeout(recheck, announced).await;
    }
}
