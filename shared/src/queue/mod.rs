//! The Redis delivery queue. PostgreSQL holds the truth about jobs; Redis only carries
//! deliveries, each of which is nothing but a job id (never a credential).
//!
//! Keys (all hash-tagged `{queue}` so they share one Redis Cluster slot):
//! - `metasync:{q}:ready`: list of deliveries, pushed left, taken right (FIFO);
//! - `metasync:{q}:delayed`: sorted set of deliveries by due time (ms), promoted in batches;
//! - `metasync:{q}:workers`: sorted set of live workers by lease expiry (ms);
//! - `metasync:{q}:claimed:<worker>`: list of deliveries a worker has taken;
//! - `metasync:{q}:pending`: set of job ids with a delivery outstanding anywhere above, so the
//!   reconciler can find jobs whose delivery was lost (Redis flushed or restarted empty, or a
//!   crash between the PostgreSQL insert and the push).
//!
//! Pickup is `BLMOVE ready -> claimed:<worker>`: blocking (an idle worker wakes the moment a
//! delivery arrives) and atomic (a delivery is always in exactly one list, even if the worker
//! dies mid-pickup). A delivery's lease is its worker's lease, renewed by heartbeat; when it
//! lapses, [`Queue::reap`] moves the worker's claimed deliveries back to `ready`. Acknowledging
//! removes the delivery, so nothing per job outlives the job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands as _, AsyncConnectionConfig, Direction, Script};
use uuid::Uuid;

use crate::ids::JobId;

/// A Redis failure. Always transient from the job's point of view: PostgreSQL keeps the job.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct QueueError(#[from] redis::RedisError);

/// Key names of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// List of deliveries waiting for a worker (`metasync:{q}:ready`).
    pub ready: String,
    /// Deliveries scored by due time in ms (`metasync:{q}:delayed`).
    pub delayed: String,
    /// Live workers scored by lease expiry in ms (`metasync:{q}:workers`).
    pub workers: String,
    /// Job ids with a delivery outstanding (`metasync:{q}:pending`).
    pub pending: String,
    claimed_prefix: String,
}

impl Keys {
    /// The keys of queue `queue`, hash-tagged into one cluster slot.
    pub fn new(queue: &str) -> Self {
        let base = format!("metasync:{{{queue}}}");
        Self {
            ready: format!("{base}:ready"),
            delayed: format!("{base}:delayed"),
            workers: format!("{base}:workers"),
            pending: format!("{base}:pending"),
            claimed_prefix: format!("{base}:claimed:"),
        }
    }

    /// The list of deliveries `worker` has taken.
    pub fn claimed(&self, worker: &str) -> String {
        format!("{}{worker}", self.claimed_prefix)
    }

    /// A pattern that matches every key of this queue, for inspection and tests.
    pub fn pattern(&self) -> String {
        format!("{}*", self.ready.trim_end_matches("ready"))
    }
}

/// Handle on one queue. Cheap to clone; commands are multiplexed on one connection, except
/// blocking pickups, which get a [`Fetcher`] of their own.
#[derive(Clone)]
pub struct Queue {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    promote: Script,
    reap: Script,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("keys", &self.keys).finish()
    }
}

/// Most deliveries moved by one promotion or reap script call.
const BATCH: usize = 1_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Queue {
    /// Connects to Redis at `url`, retrying lost connections; `queue` names the key set.
    pub async fn connect(url: &str, queue: &str) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(queue),
            promote: Script::new(include_str!("lua/promote.lua")),
            reap: Script::new(include_str!("lua/reap.lua")),
        })
    }

    /// This queue's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Pushes deliveries for jobs that are ready now, in pipelined chunks.
    pub async fn push(&self, job_ids: &[JobId]) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        for chunk in job_ids.chunks(BATCH) {
            let payloads: Vec<String> = chunk.iter().map(JobId::to_string).collect();
            let _: () = redis::pipe()
                .atomic()
                .sadd(&self.keys.pending, &payloads)
                .ignore()
                .lpush(&self.keys.ready, &payloads)
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Schedules a delivery for later; [`Queue::promote_due`] moves it to `ready` once due.
    pub async fn push_delayed(&self, job_id: JobId, delay: Duration) -> Result<(), QueueError> {
        let due = now_ms() + delay.as_millis() as i64;
        let payload = job_id.to_string();
        let _: () = redis::pipe()
            .atomic()
            .sadd(&self.keys.pending, &payload)
            .ignore()
            .zadd(&self.keys.delayed, &payload, due)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Promotes every due delayed delivery, 1,000 (`BATCH`) per Lua call. Returns how many
    /// moved.
    pub async fn promote_due(&self) -> Result<usize, QueueError> {
        let mut conn = self.conn.clone();
        let mut total = 0;
        loop {
            let moved: usize = self
                .promote
                .key(&self.keys.delayed)
                .key(&self.keys.ready)
                .arg(now_ms())
                .arg(BATCH)
                .invoke_async(&mut conn)
                .await?;
            total += moved;
            if moved < BATCH {
                return Ok(total);
            }
        }
    }

    /// Registers or renews a worker's lease, which covers every delivery it has claimed.
    pub async fn heartbeat(&self, worker: &str, lease: Duration) -> Result<(), QueueError> {
        let expires = now_ms() + lease.as_millis() as i64;
        let _: () = self
            .conn
            .clone()
            .zadd(&self.keys.workers, worker, expires)
            .await?;
        Ok(())
    }

    /// Removes a handled delivery: from the worker's claimed list and from `pending`.
    pub async fn ack(&self, worker: &str, job_id: JobId) -> Result<(), QueueError> {
        let payload = job_id.to_string();
        let _: () = redis::pipe()
            .atomic()
            .lrem(self.keys.claimed(worker), 1, &payload)
            .ignore()
            .srem(&self.keys.pending, &payload)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Of these jobs, the ones with no delivery outstanding in Redis.
    pub async fn missing(&self, job_ids: &[JobId]) -> Result<Vec<JobId>, QueueError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let payloads: Vec<String> = job_ids.iter().map(JobId::to_string).collect();
        let present: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(&self.keys.pending)
            .arg(&payloads)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(job_ids
            .iter()
            .zip(present)
            .filter(|(_, present)| !present)
            .map(|(id, _)| *id)
            .collect())
    }

    /// Gives the deliveries of workers whose lease lapsed back to `ready`. Any process may run
    /// it; the script is atomic, so concurrent reapers never double a delivery.
    pub async fn reap(&self) -> Result<usize, QueueError> {
        self.reap_before(now_ms()).await
    }

    async fn reap_before(&self, cutoff_ms: i64) -> Result<usize, QueueError> {
        let mut conn = self.conn.clone();
        let mut total = 0;
        loop {
            let moved: usize = self
                .reap
                .key(&self.keys.workers)
                .key(&self.keys.ready)
                .arg(cutoff_ms)
                .arg(&self.keys.claimed_prefix)
                .arg(BATCH)
                .invoke_async(&mut conn)
                .await?;
            total += moved;
            if moved == 0 {
                return Ok(total);
            }
        }
    }

    /// On clean shutdown: expire this worker's lease and hand its unfinished deliveries back
    /// at once, instead of waiting for the lease to lapse.
    pub async fn release(&self, worker: &str) -> Result<usize, QueueError> {
        let _: () = self
            .conn
            .clone()
            .zadd(&self.keys.workers, worker, 0)
            .await?;
        self.reap_before(0).await
    }

    /// Deliveries waiting: `(ready, delayed)`. Drives the autoscaler's backlog metric.
    pub async fn depth(&self) -> Result<(u64, u64), QueueError> {
        let mut conn = self.conn.clone();
        let (ready, delayed): (u64, u64) = redis::pipe()
            .llen(&self.keys.ready)
            .zcard(&self.keys.delayed)
            .query_async(&mut conn)
            .await?;
        Ok((ready, delayed))
    }

    /// A dedicated connection for blocking pickups by one worker.
    pub async fn fetcher(&self, worker: &str) -> Result<Fetcher, QueueError> {
        // A blocking command must not share a multiplexed connection or hit the default
        // 500 ms response timeout.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Fetcher {
            conn,
            ready: self.keys.ready.clone(),
            claimed: self.keys.claimed(worker),
        })
    }
}

/// Blocking pickup for one worker.
pub struct Fetcher {
    conn: MultiplexedConnection,
    ready: String,
    claimed: String,
}

/// What came off the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pickup {
    /// A delivery for this job.
    Job(JobId),
    /// A payload that is not a job id: acknowledge it and move on.
    Garbage(String),
}

impl Fetcher {
    /// Waits up to `block` for a delivery and moves it to this worker's claimed list.
    pub async fn next(&mut self, block: Duration) -> Result<Option<Pickup>, QueueError> {
        let payload: Option<String> = self
            .conn
            .blmove(
                &self.ready,
                &self.claimed,
                Direction::Right,
                Direction::Left,
                block.as_secs_f64(),
            )
            .await?;
        Ok(payload.map(|p| match Uuid::parse_str(&p) {
            Ok(id) => Pickup::Job(JobId(id)),
            Err(_) => Pickup::Garbage(p),
        }))
    }
}

impl Queue {
    /// Removes a payload that is not a job id from a worker's claimed list.
    pub async fn ack_garbage(&self, worker: &str, payload: &str) -> Result<(), QueueError> {
        let _: () = self
            .conn
            .clone()
            .lrem(self.keys.claimed(worker), 1, payload)
            .await?;
        Ok(())
    }
}
