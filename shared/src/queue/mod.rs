//! The Redis delivery queue. PostgreSQL holds the truth about jobs; Redis only carries
//! deliveries. A delivery is `<job id>|<class>|<tenant>` ([`Delivery`]): the job's id and where it
//! queues (its tenant, and `manual` or `scheduled`), never a credential.
//!
//! Keys (all hash-tagged `{queue}` so they share one Redis Cluster slot):
//! - `metasync:{q}:ready:<class>:<tenant>`: a tenant's ready deliveries of one class, pushed left,
//!   taken right (FIFO);
//! - `metasync:{q}:ring`: sorted set of the tenants with ready work, scored by when they were
//!   last served (scores only grow), so the head is the tenant served least recently;
//! - `metasync:{q}:signal`: wake-up tokens for blocked pickups, present only while work is ready;
//! - `metasync:{q}:delayed`: sorted set of deliveries by due time (ms), promoted in batches;
//! - `metasync:{q}:workers`: sorted set of live workers by lease expiry (ms);
//! - `metasync:{q}:claimed:<worker>`: list of deliveries a worker has taken;
//! - `metasync:{q}:pending`: set of job ids with a delivery outstanding anywhere above, so the
//!   reconciler can find jobs whose delivery was lost (Redis flushed or restarted empty, or a
//!   crash between the PostgreSQL insert and the push);
//! - `metasync:{q}:tests`: the test lane, ids of test-connection requests (nothing else: the
//!   request itself is in PostgreSQL), pushed right, taken left by each worker's test task
//!   ([`TestLane`]), apart from the job deliveries and their pickup.
//!
//! Scheduling is fair across tenants and puts manual work first (docs/scheduling.md): a pickup
//! is one Lua script (`pop.lua`) that takes the ring's head tenant, moves one delivery from its
//! manual list (else its scheduled one) to `claimed:<worker>`, and sends the tenant to the back
//! of the ring (or drops it when it has nothing left). A tenant that pushes while another has
//! a backlog of thousands is therefore served within one pickup per other tenant with ready
//! work. The move is atomic, so a delivery is always in exactly one place, even if the worker
//! dies mid-pickup. An idle worker blocks on `BLPOP signal` and runs the pop script when woken:
//! every push adds tokens (at most 64, trimmed), a pop that leaves work behind adds one for the
//! next idle worker, and a pop that finds the ring empty deletes the stale ones.
//!
//! A delivery's lease is its worker's lease, renewed by heartbeat; when it lapses, [`Queue::reap`]
//! moves the worker's claimed deliveries back to the front of their lists. Leases are judged only
//! once Redis has been up for a full lease, so a lease restored from disk after a restart never
//! reaps a worker that is alive but has not renewed yet. Each worker audits its own claimed list
//! against the attempts it runs and hands back what it does not hold ([`Queue::requeue`]).
//! Acknowledging removes the delivery (retried on failure), so nothing per job outlives the job.
//!
//! The same code runs on one Redis server or on a Redis Cluster ([`RedisClient`]): the keys
//! share one slot, so every script, pipeline and transaction runs on the queue's master, and
//! the one server command, the reaper's `INFO`, is sent there too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable as _};
use redis::{AsyncCommands as _, Script};
use uuid::Uuid;

use crate::ids::{JobId, TenantId, TestId};

mod connection;

pub use connection::{RedisClient, RedisConnection};

/// A Redis failure. Always transient from the job's point of view: PostgreSQL keeps the job.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct QueueError(#[from] redis::RedisError);

/// Where a job queues within its tenant: manual work is always taken before scheduled work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Asked for by a user: a sync, a batch of syncs, a retry.
    Manual,
    /// Fired by a resource's schedule.
    Scheduled,
}

impl Class {
    /// The class's name in deliveries and key names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
        }
    }
}

/// One delivery of a job: its id and where it queues. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The job to run.
    pub job_id: JobId,
    /// The job's tenant: whose turn in the ring the delivery waits for.
    pub tenant: TenantId,
    /// Manual or scheduled work.
    pub class: Class,
}

impl Delivery {
    /// A manual delivery of `job_id` for `tenant`.
    pub fn manual(job_id: JobId, tenant: TenantId) -> Self {
        Self {
            job_id,
            tenant,
            class: Class::Manual,
        }
    }

    /// The delivery as stored in Redis: `<job id>|<class>|<tenant>` (the tenant last, so it may
    /// contain anything).
    pub fn payload(&self) -> String {
        format!(
            "{}|{}|{}",
            self.job_id,
            self.class.as_str(),
            self.tenant.as_str()
        )
    }

    /// Reads a stored delivery; `None` for anything else.
    pub fn parse(payload: &str) -> Option<Self> {
        let (id, rest) = payload.split_once('|')?;
        let (class, tenant) = rest.split_once('|')?;
        let class = match class {
            "manual" => Class::Manual,
            "scheduled" => Class::Scheduled,
            _ => return None,
        };
        Some(Self {
            job_id: JobId(Uuid::parse_str(id).ok()?),
            tenant: TenantId::new(tenant),
            class,
        })
    }
}

/// A worker as the queue sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerView {
    /// The worker's id (`METASYNC_WORKER_NAME` plus a per-process suffix).
    pub worker: String,
    /// When its lease lapses unless renewed (ms since the epoch).
    pub lease_expires_ms: i64,
    /// Whether the lease is current: a lapsed worker is dead or cut off from Redis.
    pub live: bool,
    /// Deliveries it has claimed and not yet acked.
    pub in_flight: u64,
    /// Jobs it runs at once, as it announced (none until its first heartbeat).
    pub concurrency: Option<u16>,
}

/// Key names of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Tenants with ready deliveries, scored by when last served (`metasync:{q}:ring`).
    pub ring: String,
    /// Wake-up tokens for blocked pickups (`metasync:{q}:signal`).
    pub signal: String,
    /// Deliveries scored by due time in ms (`metasync:{q}:delayed`).
    pub delayed: String,
    /// Live workers scored by lease expiry in ms (`metasync:{q}:workers`).
    pub workers: String,
    /// Job ids with a delivery outstanding (`metasync:{q}:pending`).
    pub pending: String,
    /// Each live worker's concurrency (`metasync:{q}:worker-info`), for `GET /v1/workers`.
    pub worker_info: String,
    /// Ids of test-connection requests waiting for a worker (`metasync:{q}:tests`).
    pub tests: String,
    /// Pub/sub channel on which an attempt's end is announced with its job id
    /// (`metasync:{q}:events`), to wake long-polls; a hint only, PostgreSQL has the state.
    pub events: String,
    /// Prefix of the ready lists, `metasync:{q}:ready:` + `<class>:<tenant>`.
    ready_prefix: String,
    /// The one FIFO list of bare job ids that the queue had before fair scheduling
    /// (`metasync:{q}:ready`), drained when nothing else is ready.
    legacy_ready: String,
    claimed_prefix: String,
    base: String,
}

impl Keys {
    /// The keys of queue `queue`, hash-tagged into one cluster slot.
    pub fn new(queue: &str) -> Self {
        let base = format!("metasync:{{{queue}}}");
        Self {
            ring: format!("{base}:ring"),
            signal: format!("{base}:signal"),
            delayed: format!("{base}:delayed"),
            workers: format!("{base}:workers"),
            pending: format!("{base}:pending"),
            worker_info: format!("{base}:worker-info"),
            tests: format!("{base}:tests"),
            events: format!("{base}:events"),
            ready_prefix: format!("{base}:ready:"),
            legacy_ready: format!("{base}:ready"),
            claimed_prefix: format!("{base}:claimed:"),
            base,
        }
    }

    /// The list of ready deliveries of one tenant and class.
    pub fn ready(&self, tenant: &TenantId, class: Class) -> String {
        format!(
            "{}{}:{}",
            self.ready_prefix,
            class.as_str(),
            tenant.as_str()
        )
    }

    /// The list of deliveries `worker` has taken.
    pub fn claimed(&self, worker: &str) -> String {
        format!("{}{worker}", self.claimed_prefix)
    }

    /// A pattern that matches every key of this queue, for inspection and tests.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.base)
    }
}

/// The queue's Lua scripts; the ones that make deliveries ready share `route.lua`.
#[derive(Clone)]
struct Scripts {
    push: Script,
    pop: Script,
    promote: Script,
    reap: Script,
    requeue: Script,
    depth: Script,
}

impl Scripts {
    fn new() -> Self {
        let routed =
            |body: &str| Script::new(&format!("{}\n{body}", include_str!("lua/route.lua")));
        Self {
            push: routed(include_str!("lua/push.lua")),
            pop: routed(include_str!("lua/pop.lua")),
            promote: routed(include_str!("lua/promote.lua")),
            reap: routed(include_str!("lua/reap.lua")),
            requeue: routed(include_str!("lua/requeue.lua")),
            depth: Script::new(include_str!("lua/depth.lua")),
        }
    }
}

/// Handle on one queue, on one Redis server or a Redis Cluster. Cheap to clone; commands are
/// multiplexed on one connection, except blocking pickups, which get a [`Fetcher`] of their
/// own.
#[derive(Clone)]
pub struct Queue {
    client: RedisClient,
    conn: RedisConnection,
    keys: Keys,
    scripts: Scripts,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("keys", &self.keys).finish()
    }
}

/// Most deliveries moved by one push, promotion or reap script call.
const BATCH: usize = 1_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How a write that must not be lost (an acknowledgement) is retried: about 6 s in all, enough
/// for a Redis restart or a short `LOADING`; past that the worker's audit of its claimed list
/// cleans up.
fn write_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(6)
        .with_jitter()
}

fn note_retry(op: &'static str) -> impl FnMut(&QueueError, Duration) {
    move |e, delay| {
        tracing::debug!(error = %e, ?delay, op, "queue write failed; retrying");
        metrics::counter!("metasync_queue_write_retries_total", "op" => op).increment(1);
        metrics::counter!("metasync_queue_errors_total", "op" => op).increment(1);
    }
}

/// A Redis client for `url`: one server or a cluster, with TLS as [`RedisClient::open`] says.
pub fn redis_client(url: &str, ca: Option<&std::path::Path>) -> Result<RedisClient, QueueError> {
    RedisClient::open(url, ca)
}

impl Queue {
    /// Connects to Redis at `url` (no CA of its own: see [`RedisClient::open`]), retrying lost
    /// connections; `queue` names the key set.
    pub async fn connect(url: &str, queue: &str) -> Result<Self, QueueError> {
        Self::connect_client(redis_client(url, None)?, queue).await
    }

    /// Like [`Queue::connect`], with a client built by [`RedisClient::open`] (e.g. with a CA).
    pub async fn connect_client(client: RedisClient, queue: &str) -> Result<Self, QueueError> {
        if queue.is_empty() {
            // `metasync:{}:…` has no hash tag: a cluster would scatter the queue's keys over
            // slots, and every script would fail.
            return Err(QueueError(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the queue name (METASYNC_QUEUE) is empty",
            ))));
        }
        let conn = client.connection().await?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(queue),
            scripts: Scripts::new(),
        })
    }

    /// The client this queue connects with, for other connections to the same Redis.
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// This queue's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Makes deliveries ready now, 1,000 per script call.
    pub async fn push(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        for chunk in deliveries.chunks(BATCH) {
            let mut call = self.scripts.push.prepare_invoke();
            call.key(&self.keys.ring)
                .key(&self.keys.signal)
                .key(&self.keys.pending)
                .arg(&self.keys.ready_prefix);
            for delivery in chunk {
                call.arg(delivery.payload());
            }
            let _: usize = call.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Schedules a delivery for later; [`Queue::promote_due`] makes it ready once due.
    pub async fn push_delayed(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let due = now_ms() + delay.as_millis() as i64;
        let _: () = redis::pipe()
            .atomic()
            .sadd(&self.keys.pending, delivery.job_id.to_string())
            .ignore()
            .zadd(&self.keys.delayed, delivery.payload(), due)
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
                .scripts
                .promote
                .key(&self.keys.delayed)
                .key(&self.keys.ring)
                .key(&self.keys.signal)
                .arg(now_ms())
                .arg(BATCH)
                .arg(&self.keys.ready_prefix)
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

    /// A worker's heartbeat: renews its lease and tells the fleet how many jobs it runs at
    /// once, in one round trip. The concurrency is renewed with the lease, so it comes back
    /// after Redis loses it; the reaper removes it with the lease.
    pub async fn worker_heartbeat(
        &self,
        worker: &str,
        lease: Duration,
        concurrency: u16,
    ) -> Result<(), QueueError> {
        let expires = now_ms() + lease.as_millis() as i64;
        let _: () = redis::pipe()
            .zadd(&self.keys.workers, worker, expires)
            .ignore()
            .hset(&self.keys.worker_info, worker, concurrency)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Every worker with a lease (lapsed ones included, until reaped), with its claimed
    /// deliveries and announced concurrency, by worker id.
    pub async fn workers(&self) -> Result<Vec<WorkerView>, QueueError> {
        let mut conn = self.conn.clone();
        let leases: Vec<(String, i64)> = conn.zrange_withscores(&self.keys.workers, 0, -1).await?;
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (worker, _) in &leases {
            pipe.llen(self.keys.claimed(worker));
            pipe.hget(&self.keys.worker_info, worker);
        }
        let answers: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let now = now_ms();
        let mut views: Vec<WorkerView> = leases
            .into_iter()
            .zip(answers.chunks(2))
            .map(|((worker, expires_ms), answer)| WorkerView {
                worker,
                lease_expires_ms: expires_ms,
                live: expires_ms > now,
                in_flight: redis::from_redis_value(answer[0].clone()).unwrap_or(0),
                concurrency: redis::from_redis_value(answer[1].clone()).ok(),
            })
            .collect();
        views.sort_by(|a, b| a.worker.cmp(&b.worker));
        Ok(views)
    }

    /// Removes a handled delivery: from the worker's claimed list and from `pending`. Retried
    /// (about 6 s) when Redis fails, so a restart does not leave the delivery of a finished job
    /// behind.
    pub async fn ack(&self, worker: &str, delivery: &Delivery) -> Result<(), QueueError> {
        let claimed = self.keys.claimed(worker);
        let payload = delivery.payload();
        let job = delivery.job_id.to_string();
        (|| async {
            let _: () = redis::pipe()
                .atomic()
                .lrem(&claimed, 1, &payload)
                .ignore()
                .srem(&self.keys.pending, &job)
                .ignore()
                .publish(&self.keys.events, &job)
                .ignore()
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(())
        })
        .retry(write_retries())
        .notify(note_retry("ack"))
        .await
    }

    /// Moves a handled delivery from the worker's claimed list to the delayed set, due after
    /// `delay`, in one step (the job stays `pending`). Retried like [`Queue::ack`]; repeating it
    /// is harmless, since the delayed set holds each delivery once.
    pub async fn redeliver_later(
        &self,
        worker: &str,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let claimed = self.keys.claimed(worker);
        let payload = delivery.payload();
        let job = delivery.job_id.to_string();
        (|| async {
            let due = now_ms() + delay.as_millis() as i64;
            let _: () = redis::pipe()
                .atomic()
                .lrem(&claimed, 1, &payload)
                .ignore()
                .sadd(&self.keys.pending, &job)
                .ignore()
                .zadd(&self.keys.delayed, &payload, due)
                .ignore()
                .publish(&self.keys.events, &job)
                .ignore()
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(())
        })
        .retry(write_retries())
        .notify(note_retry("redeliver"))
        .await
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

    /// Gives the deliveries of workers whose lease lapsed back to their ready lists. Any
    /// process may run it; the script is atomic, so concurrent reapers never double a delivery.
    ///
    /// Leases are judged only once Redis has been up for `lease`: a lease restored from disk
    /// (AOF) after a restart was written before the outage and has usually expired, while its
    /// worker may be alive and about to renew it. Every live worker renews within a lease of
    /// Redis coming back, so after that an expired lease means a lost worker.
    pub async fn reap(&self, lease: Duration) -> Result<usize, QueueError> {
        if self.uptime().await? < lease {
            return Ok(0);
        }
        self.reap_before(now_ms()).await
    }

    /// How long the Redis server has been up (whole seconds, rounded down).
    async fn uptime(&self) -> Result<Duration, QueueError> {
        // The server that holds the queue (on a cluster, the master of its slot).
        let info: String = self
            .conn
            .clone()
            .query_on_node_of(redis::cmd("INFO").arg("server"), &self.keys.workers)
            .await?;
        let seconds = info
            .lines()
            .find_map(|line| line.strip_prefix("uptime_in_seconds:"))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Duration::from_secs(seconds))
    }

    async fn reap_before(&self, cutoff_ms: i64) -> Result<usize, QueueError> {
        let mut conn = self.conn.clone();
        let mut total = 0;
        loop {
            let (workers, moved): (usize, usize) = self
                .scripts
                .reap
                .key(&self.keys.workers)
                .key(&self.keys.ring)
                .key(&self.keys.signal)
                .key(&self.keys.worker_info)
                .arg(cutoff_ms)
                .arg(&self.keys.claimed_prefix)
                .arg(BATCH)
                .arg(&self.keys.ready_prefix)
                .invoke_async(&mut conn)
                .await?;
            total += moved;
            if workers < BATCH {
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

    /// The deliveries in a worker's claimed list, as stored.
    pub async fn claimed(&self, worker: &str) -> Result<Vec<String>, QueueError> {
        let payloads: Vec<String> = self
            .conn
            .clone()
            .lrange(self.keys.claimed(worker), 0, -1)
            .await?;
        Ok(payloads)
    }

    /// Moves these stored deliveries (as [`Queue::claimed`] lists them) from a worker's claimed
    /// list back to the front of their ready lists, each only if it is still claimed. Returns
    /// how many moved.
    pub async fn requeue(&self, worker: &str, payloads: &[String]) -> Result<usize, QueueError> {
        if payloads.is_empty() {
            return Ok(0);
        }
        let mut call = self.scripts.requeue.prepare_invoke();
        call.key(self.keys.claimed(worker))
            .key(&self.keys.ring)
            .key(&self.keys.signal)
            .arg(&self.keys.ready_prefix)
            .arg(payloads);
        Ok(call.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Deliveries waiting: `(ready, delayed)`. Drives the autoscaler's backlog metric.
    pub async fn depth(&self) -> Result<(u64, u64), QueueError> {
        let (ready, delayed): (u64, u64) = self
            .scripts
            .depth
            .key(&self.keys.ring)
            .key(&self.keys.delayed)
            .arg(&self.keys.ready_prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((ready, delayed))
    }

    /// How many jobs have a delivery outstanding anywhere (the `pending` set's size).
    pub async fn pending_count(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(conn.scard(&self.keys.pending).await?)
    }

    /// Announces on [`Keys::events`] that job `job` changed state outside an attempt (e.g.
    /// cancelled before it ran), so its long-polls wake at once. Best effort: a waiter re-reads
    /// PostgreSQL on its own every second anyway.
    pub async fn announce(&self, job: JobId) {
        let sent: Result<(), redis::RedisError> = self
            .conn
            .clone()
            .publish(&self.keys.events, job.to_string())
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not announce a job's change");
            metrics::counter!("metasync_queue_errors_total", "op" => "announce").increment(1);
        }
    }

    /// Subscribes to [`Keys::events`] on a connection of its own: the ids of jobs whose
    /// attempt ended (or that changed state otherwise), until that connection drops.
    pub async fn job_events(
        &self,
    ) -> Result<impl futures::Stream<Item = JobId> + Send + 'static, QueueError> {
        use futures::StreamExt as _;
        let mut pubsub = self.client.pubsub().await?;
        pubsub.subscribe(&self.keys.events).await?;
        Ok(pubsub.into_on_message().filter_map(|message| {
            let id = message
                .get_payload::<String>()
                .ok()
                .and_then(|p| p.parse().ok());
            std::future::ready(id)
        }))
    }

    /// A dedicated connection for blocking pickups by one worker.
    pub async fn fetcher(&self, worker: &str) -> Result<Fetcher, QueueError> {
        Ok(Fetcher {
            conn: self.client.blocking_connection().await?,
            pop: self.scripts.pop.clone(),
            keys: self.keys.clone(),
            claimed: self.keys.claimed(worker),
        })
    }
}

/// Blocking pickup for one worker.
pub struct Fetcher {
    conn: RedisConnection,
    pop: Script,
    keys: Keys,
    claimed: String,
}

/// One worker's blocking take from the test lane.
pub struct TestLane {
    conn: RedisConnection,
    key: String,
}

impl TestLane {
    /// The next test-connection request's id, waiting up to `block` for one. Anything on the
    /// lane that is not an id is dropped.
    pub async fn next(&mut self, block: Duration) -> Result<Option<TestId>, QueueError> {
        let taken: Option<(String, String)> =
            self.conn.blpop(&self.key, block.as_secs_f64()).await?;
        Ok(taken.and_then(|(_, id)| id.parse().ok()))
    }
}

/// What came off the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pickup {
    /// A delivery of a job.
    Job(Delivery),
    /// A payload that is not a delivery: acknowledge it and move on.
    Garbage(String),
}

impl Fetcher {
    /// Takes the next delivery into this worker's claimed list, waiting up to `block` for one
    /// when nothing is ready.
    pub async fn next(&mut self, block: Duration) -> Result<Option<Pickup>, QueueError> {
        if let Some(pickup) = self.pop().await? {
            return Ok(Some(pickup));
        }
        // Woken by a push, or timed out: either way, look again (a token may have been taken
        // by a pickup that found nothing after all; the timeout bounds that wait).
        let _: Option<(String, String)> = self
            .conn
            .blpop(&self.keys.signal, block.as_secs_f64())
            .await?;
        self.pop().await
    }

    async fn pop(&mut self) -> Result<Option<Pickup>, QueueError> {
        let payload: Option<String> = self
            .pop
            .key(&self.keys.ring)
            .key(&self.keys.signal)
            .key(&self.claimed)
            .key(&self.keys.legacy_ready)
            .arg(&self.keys.ready_prefix)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(payload.map(|p| match Delivery::parse(&p) {
            Some(delivery) => Pickup::Job(delivery),
            None => Pickup::Garbage(p),
        }))
    }
}

impl Queue {
    /// How many workers hold a current lease.
    pub async fn live_workers(&self) -> Result<u64, QueueError> {
        let live: u64 = self
            .conn
            .clone()
            .zcount(&self.keys.workers, now_ms() + 1, "+inf")
            .await?;
        Ok(live)
    }

    /// Puts a test-connection request's id on the test lane. The lane expires `ttl` after the
    /// last push, so ids nobody took (every worker gone meanwhile) do not stay behind.
    pub async fn push_test(&self, id: TestId, ttl: Duration) -> Result<(), QueueError> {
        let _: () = redis::pipe()
            .atomic()
            .rpush(&self.keys.tests, id.to_string())
            .ignore()
            .pexpire(&self.keys.tests, ttl.as_millis() as i64)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Takes a test's id back off the lane: `true` if it was still there (no worker took it).
    pub async fn withdraw_test(&self, id: TestId) -> Result<bool, QueueError> {
        let removed: u64 = self
            .conn
            .clone()
            .lrem(&self.keys.tests, 1, id.to_string())
            .await?;
        Ok(removed > 0)
    }

    /// A dedicated connection for one worker's test task to block on the test lane.
    pub async fn test_lane(&self) -> Result<TestLane, QueueError> {
        Ok(TestLane {
            conn: self.client.blocking_connection().await?,
            key: self.keys.tests.clone(),
        })
    }

    /// Removes a payload that is not a delivery from a worker's claimed list. One that starts
    /// with a job id (a bare id from before fair scheduling) also leaves `pending`, so the
    /// reconciler pushes that job again as a proper delivery.
    pub async fn ack_garbage(&self, worker: &str, payload: &str) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lrem(self.keys.claimed(worker), 1, payload)
            .ignore();
        let job = payload
            .split('|')
            .next()
            .and_then(|id| Uuid::parse_str(id).ok());
        if let Some(job) = job {
            pipe.srem(&self.keys.pending, job.to_string()).ignore();
        }
        let _: () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_reads_back_as_written() {
        let delivery = Delivery {
            job_id: JobId::new_v7(),
            tenant: TenantId::new("acme|eu:1"),
            class: Class::Scheduled,
        };
        assert_eq!(Delivery::parse(&delivery.payload()), Some(delivery));
        assert_eq!(Delivery::parse(&JobId::new_v7().to_string()), None);
        assert_eq!(Delivery::parse("x|manual|t"), None);
    }
}
