//! A fleet-wide cap on open connections to each source server (host and port as registered),
//! counted in Redis, so that a batch against one database server never opens more than
//! `METASYNC_SOURCE_CONNECTIONS_PER_SERVER` connections to it, however many worker processes
//! and slots take its jobs.
//!
//! Each open connection, in use or parked ([`super::reuse`]), holds a [`Permit`]: a member of
//! the sorted set `metasync:{queue}:permits:<host>:<port>`, scored by its lease expiry. A
//! permit is taken by one Lua call that first drops lapsed members, then adds one if fewer
//! than the cap remain. Each process renews the permits it holds every third of the lease (by
//! upsert, so after a Redis restart the set is rebuilt from the connections really open), and
//! releases a permit shortly after its connection is closed. A process that dies stops renewing: its
//! permits lapse within a lease. The cap is exact while processes renew on time; a process
//! frozen for longer than the lease may find its permits taken by others when it resumes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metasync_shared::queue::{RedisClient, RedisConnection};
use metasync_shared::warnings::Warnings;
use redis::Script;

/// Takes a permit if fewer than the cap are live. KEYS[1]: the server's set; ARGV: now (ms),
/// the new permit's expiry (ms), the cap, the permit's id, the set's TTL (ms).
const ACQUIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
";

/// A permit outlives its connection by this much: the client's close returns once it has sent
/// its goodbye, and the server ends the session's backend a moment later (longer on a busy
/// host: 100 ms was seen to be too short on a loaded 2-core machine), so releasing at once
/// would let the server count the next connection beside it.
const RELEASE_AFTER: Duration = Duration::from_millis(500);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The permits of one worker process. Cheap to clone. [`ServerPermits::unlimited`] caps
/// nothing and never talks to Redis.
#[derive(Clone)]
pub struct ServerPermits {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    conn: RedisConnection,
    /// `metasync:{queue}:permits:`, followed by `host:port`.
    key_prefix: String,
    cap: u32,
    lease: Duration,
    /// This process's permit ids start with its worker id.
    owner: String,
    next_id: AtomicU64,
    acquire: Script,
    /// Permits held now: id → set key. What the renewal renews.
    held: Mutex<HashMap<String, String>>,
}

impl ServerPermits {
    /// No cap: every connection may open.
    pub fn unlimited() -> Self {
        Self { inner: None }
    }

    /// At most `cap` connections per source server across every process on `queue`; `0`
    /// means no cap. Permits held by a process that stops renewing lapse after `lease`.
    pub async fn connect(
        client: &RedisClient,
        queue: &str,
        worker_id: &str,
        cap: u32,
        lease: Duration,
    ) -> Result<Self, metasync_shared::queue::QueueError> {
        if cap == 0 {
            return Ok(Self::unlimited());
        }
        let conn = client.connection().await?;
        let inner = Arc::new(Inner {
            conn,
            key_prefix: format!("metasync:{{{queue}}}:permits:"),
            cap,
            lease,
            owner: worker_id.to_owned(),
            next_id: AtomicU64::new(0),
            acquire: Script::new(ACQUIRE),
            held: Mutex::default(),
        });
        tokio::spawn(renew_forever(Arc::downgrade(&inner)));
        Ok(Self { inner: Some(inner) })
    }

    /// Releases every permit still held (at shutdown, once every connection is closed), so
    /// that other processes need not wait for them to lapse.
    pub async fn release_all(&self) {
        let Some(inner) = &self.inner else { return };
        let held: Vec<(String, String)> =
            inner.held.lock().expect("permits lock").drain().collect();
        if held.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (id, key) in &held {
            pipe.zrem(key, id).ignore();
        }
        let _ = pipe.query_async::<()>(&mut inner.conn.clone()).await;
    }

    /// A permit for one connection to `host:port`, or `None` while the cap is reached.
    pub async fn try_acquire(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Option<Permit>, redis::RedisError> {
        let Some(inner) = &self.inner else {
            return Ok(Some(Permit { held: None }));
        };
        let key = format!("{}{host}:{port}", inner.key_prefix);
        let id = format!(
            "{}:{}",
            inner.owner,
            inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let now = now_ms();
        let lease_ms = inner.lease.as_millis() as i64;
        let taken: i64 = inner
            .acquire
            .key(&key)
            .arg(now)
            .arg(now + lease_ms)
            .arg(inner.cap)
            .arg(&id)
            .arg(lease_ms)
            .invoke_async(&mut inner.conn.clone())
            .await?;
        if taken == 0 {
            return Ok(None);
        }
        inner
            .held
            .lock()
            .expect("permits lock")
            .insert(id.clone(), key.clone());
        Ok(Some(Permit {
            held: Some((inner.clone(), key, id)),
        }))
    }
}

/// The right to keep one source connection open. Dropping it releases it (in the background),
/// so it must live exactly as long as its connection.
pub struct Permit {
    held: Option<(Arc<Inner>, String, String)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some((inner, key, id)) = self.held.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (process exit): the permit lapses with its lease.
            inner.held.lock().expect("permits lock").remove(&id);
            return;
        };
        // Forgotten only once removed, so that `release_all` at shutdown still sees it.
        runtime.spawn(async move {
            tokio::time::sleep(RELEASE_AFTER).await;
            let mut conn = inner.conn.clone();
            let _: Result<i64, _> = redis::cmd("ZREM")
                .arg(&key)
                .arg(&id)
                .query_async(&mut conn)
                .await;
            inner.held.lock().expect("permits lock").remove(&id);
        });
    }
}

/// Renews every permit this process holds, every third of the lease, until the last handle
/// is dropped.
async fn renew_forever(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(inner) => inner.lease / 3,
        None => return,
    };
    let mut warnings = Warnings::new("source connection permit renewal");
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let held: Vec<(String, String)> = {
            let held = inner.held.lock().expect("permits lock");
            held.iter()
                .map(|(id, key)| (id.clone(), key.clone()))
                .collect()
        };
        if held.is_empty() {
            continue;
        }
        let expires = now_ms() + inner.lease.as_millis() as i64;
        let mut pipe = redis::pipe();
        for (id, key) in &held {
            // An upsert: a permit lost with Redis is counted again, since its connection is
            // still open.
            pipe.zadd(key, id, expires)
                .ignore()
                .pexpire(key, inner.lease.as_millis() as i64)
                .ignore();
        }
        match pipe.query_async::<()>(&mut inner.conn.clone()).await {
            Ok(()) => warnings.succeeded(),
            Err(e) => {
                warnings.failed(&e);
            }
        }
        // A permit released while the renewal was on its way may have been added back: take
        // it out again.
        let released: Vec<(String, String)> = {
            let now_held = inner.held.lock().expect("permits lock");
            held.into_iter()
                .filter(|(id, _)| !now_held.contains_key(id))
                .collect()
        };
        if !released.is_empty() {
            let mut pipe = redis::pipe();
            for (id, key) in &released {
                pipe.zrem(key, id).ignore();
            }
            let _ = pipe.query_async::<()>(&mut inner.conn.clone()).await;
        }
    }
}
