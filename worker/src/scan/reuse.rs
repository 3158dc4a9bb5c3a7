//! Source connections parked for a few seconds after a scan, so that the next job for the same
//! server, database and credentials skips the connection set-up.
//!
//! Why: a fresh PostgreSQL connection forks a backend whose catalog caches start cold; on the
//! 2-core reference machine that made up about 90% of a tiny job's cost (`bench-jobs`). Why not
//! sqlx's `Pool` per source: while connecting it retries `ConnectionRefused` until the acquire
//! timeout and then reports only `PoolTimedOut`, which loses the cause that error
//! classification and the job's error message depend on.
//!
//! A connection is parked only after a scan that succeeded (its read-only transaction
//! committed), is pinged before reuse unless it was parked moments ago, and is closed once idle for `idle_for` or older than
//! [`MAX_AGE`]. `idle_for = 0` parks nothing: every job opens and closes its own connection.
//!
//! Every connection, parked or in use, carries the [`Permit`] that counts it against its
//! server's fleet-wide cap ([`super::permits`]); the permit is released once the connection is
//! closed.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use sqlx::{Connection, MySqlConnection, PgConnection};

use super::permits::{Permit, ServerPermits};

/// A connection parked for less than this is used without a ping first: a round trip per job
/// saved while jobs are flowing. If the server dropped it in that second, the scan fails as
/// transient and is retried.
const PING_AFTER: Duration = Duration::from_secs(1);

/// Reconnect at least this often, so that source-side changes (a revoked login, a failover)
/// reach long-running workers.
const MAX_AGE: Duration = Duration::from_secs(60);

/// What a parked connection can be reused for. Holds a salted digest of the password, never
/// the password itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SourceKey {
    host: String,
    port: u16,
    database: String,
    username: String,
    password_digest: [u8; 32],
}

impl SourceKey {
    /// The server as registered: what the per-server connection cap counts by.
    pub fn server(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

/// Both engines' parked connections, shared by a worker process's job slots.
#[derive(Clone)]
pub struct SourceConnections {
    pub postgres: Parking<PgConnection>,
    pub mysql: Parking<MySqlConnection>,
    /// The fleet-wide cap on connections per source server.
    pub permits: ServerPermits,
    salt: [u8; 16],
}

impl SourceConnections {
    /// Parks at most `max_parked` connections per engine, each for at most `idle_for`.
    pub fn new(idle_for: Duration, max_parked: usize) -> Self {
        Self {
            postgres: Parking::new("postgres", idle_for, max_parked),
            mysql: Parking::new("mysql", idle_for, max_parked),
            permits: ServerPermits::unlimited(),
            salt: rand::random(),
        }
    }

    /// Counts every connection against the per-server cap of `permits`.
    pub fn with_permits(mut self, permits: ServerPermits) -> Self {
        self.permits = permits;
        self
    }

    /// Closes one connection this process has parked on `host:port` (for any database or
    /// user), releasing its permit for a job that needs another. Whether there was one.
    pub async fn evict_one(&self, host: &str, port: u16) -> bool {
        self.postgres.evict_one(host, port).await || self.mysql.evict_one(host, port).await
    }

    /// Never parks: one connection per job, opened and closed by it.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO, 0)
    }

    pub fn key(
        &self,
        host: &str,
        port: u16,
        database: &str,
        username: &str,
        password: &str,
        tls_session: &str,
    ) -> SourceKey {
        let mut digest = Sha256::new();
        digest.update(self.salt);
        digest.update(password.as_bytes());
        // The length between them, so no password and TLS settings run into another pair's.
        digest.update((password.len() as u64).to_le_bytes());
        digest.update(tls_session.as_bytes());
        SourceKey {
            host: host.to_owned(),
            port,
            database: database.to_owned(),
            username: username.to_owned(),
            password_digest: digest.finalize().into(),
        }
    }

    /// Closes every parked connection and releases every permit (on shutdown).
    pub async fn close_all(&self) {
        self.postgres.close_all().await;
        self.mysql.close_all().await;
        self.permits.release_all().await;
    }
}

/// A connection taken for one scan, with its birth time so that parking respects [`MAX_AGE`].
pub struct Taken<C> {
    pub conn: C,
    opened: Instant,
    /// Whether it came from the parking (for metrics).
    pub reused: bool,
    permit: Permit,
}

impl<C> Taken<C> {
    /// A connection just opened under `permit`.
    pub fn fresh(conn: C, permit: Permit) -> Self {
        Self {
            conn,
            opened: Instant::now(),
            reused: false,
            permit,
        }
    }
}

struct Parked<C> {
    conn: C,
    opened: Instant,
    parked: Instant,
    permit: Permit,
}

impl<C> Parked<C> {
    fn usable(&self, idle_for: Duration) -> bool {
        self.parked.elapsed() < idle_for && self.opened.elapsed() < MAX_AGE
    }
}

type Slots<C> = HashMap<SourceKey, Vec<Parked<C>>>;

/// Parked connections of one engine.
pub struct Parking<C> {
    slots: Arc<Mutex<Slots<C>>>,
    /// The `engine` label of `metasync_source_connections_parked`.
    engine: &'static str,
    idle_for: Duration,
    max_parked: usize,
}

/// Moves `metasync_source_connections_parked{engine}` by `delta` (not set to a count: a test
/// process runs several workers, whose parkings add up).
fn count_parked(engine: &'static str, delta: f64) {
    metrics::gauge!("metasync_source_connections_parked", "engine" => engine).increment(delta);
}

impl<C> Clone for Parking<C> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            engine: self.engine,
            idle_for: self.idle_for,
            max_parked: self.max_parked,
        }
    }
}

impl<C: Connection + 'static> Parking<C> {
    fn new(engine: &'static str, idle_for: Duration, max_parked: usize) -> Self {
        let parking = Self {
            slots: Arc::default(),
            engine,
            idle_for,
            max_parked,
        };
        if !idle_for.is_zero() && max_parked > 0 {
            // The sweeper holds a weak reference: it ends when the last handle is dropped.
            tokio::spawn(sweep_forever(
                Arc::downgrade(&parking.slots),
                engine,
                idle_for,
            ));
        }
        parking
    }

    /// A live parked connection for `key`, if any. A candidate parked a while ago is pinged
    /// first and dropped if the ping fails (the server may have closed it).
    pub async fn take(&self, key: &SourceKey, ping_timeout: Duration) -> Option<Taken<C>> {
        loop {
            let parked = {
                let mut slots = self.slots.lock().expect("parking lock");
                let stack = slots.get_mut(key)?;
                let parked = stack.pop();
                if stack.is_empty() {
                    slots.remove(key);
                }
                parked?
            };
            count_parked(self.engine, -1.0);
            if !parked.usable(self.idle_for) {
                close_in_background(parked.conn, parked.permit);
                continue;
            }
            let recent = parked.parked.elapsed() < PING_AFTER;
            let mut conn = parked.conn;
            if recent
                || matches!(
                    tokio::time::timeout(ping_timeout, conn.ping()).await,
                    Ok(Ok(()))
                )
            {
                return Some(Taken {
                    conn,
                    opened: parked.opened,
                    reused: true,
                    permit: parked.permit,
                });
            }
            // Dropped: the socket closes now, then the permit goes.
            drop(conn);
            drop(parked.permit);
        }
    }

    /// Parks a connection whose work succeeded. Closes it instead when the work failed (its
    /// state is unknown), or parking is off or full, or the connection is too old.
    pub async fn give_back(
        &self,
        key: SourceKey,
        taken: Taken<C>,
        succeeded: bool,
        close_timeout: Duration,
    ) {
        if !succeeded {
            // Closing politely is best effort and must not delay the outcome, which is
            // already decided (a silent source would hold the close until its timeout).
            close_in_background(taken.conn, taken.permit);
            return;
        }
        let refused = {
            let mut slots = self.slots.lock().expect("parking lock");
            let parked: usize = slots.values().map(Vec::len).sum();
            if self.idle_for.is_zero()
                || parked >= self.max_parked
                || taken.opened.elapsed() >= MAX_AGE
            {
                Some((taken.conn, taken.permit))
            } else {
                slots.entry(key).or_default().push(Parked {
                    conn: taken.conn,
                    opened: taken.opened,
                    parked: Instant::now(),
                    permit: taken.permit,
                });
                None
            }
        };
        match refused {
            Some((conn, permit)) => {
                let _ = tokio::time::timeout(close_timeout, conn.close()).await;
                drop(permit);
            }
            None => count_parked(self.engine, 1.0),
        }
    }

    async fn close_all(&self) {
        let all: Vec<Parked<C>> = {
            let mut slots = self.slots.lock().expect("parking lock");
            slots.drain().flat_map(|(_, stack)| stack).collect()
        };
        count_parked(self.engine, -(all.len() as f64));
        for parked in all {
            let _ = tokio::time::timeout(Duration::from_secs(1), parked.conn.close()).await;
            drop(parked.permit);
        }
    }

    /// Closes the longest-parked connection on `host:port`, if any, then releases its permit.
    async fn evict_one(&self, host: &str, port: u16) -> bool {
        let victim = {
            let mut slots = self.slots.lock().expect("parking lock");
            let oldest = slots
                .iter()
                .filter(|(key, _)| key.server() == (host, port))
                .filter_map(|(key, stack)| stack.first().map(|p| (key.clone(), p.parked)))
                .min_by_key(|(_, parked)| *parked)
                .map(|(key, _)| key);
            oldest.and_then(|key| {
                let stack = slots.get_mut(&key)?;
                let parked = stack.remove(0);
                if stack.is_empty() {
                    slots.remove(&key);
                }
                Some(parked)
            })
        };
        let Some(parked) = victim else {
            return false;
        };
        count_parked(self.engine, -1.0);
        let _ = tokio::time::timeout(Duration::from_secs(1), parked.conn.close()).await;
        drop(parked.permit);
        true
    }
}

async fn sweep_forever<C: Connection + 'static>(
    slots: Weak<Mutex<Slots<C>>>,
    engine: &'static str,
    idle_for: Duration,
) {
    let every = (idle_for / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(slots) = slots.upgrade() else { return };
        let stale: Vec<Parked<C>> = {
            let mut slots = slots.lock().expect("parking lock");
            let mut stale = Vec::new();
            slots.retain(|_, stack| {
                let (keep, old): (Vec<_>, Vec<_>) =
                    stack.drain(..).partition(|p| p.usable(idle_for));
                stale.extend(old);
                *stack = keep;
                !stack.is_empty()
            });
            stale
        };
        count_parked(engine, -(stale.len() as f64));
        for parked in stale {
            close_in_background(parked.conn, parked.permit);
        }
    }
}

/// Says goodbye to the server without holding up the caller, then releases the connection's
/// permit (not before: the server would count both the closing and the next connection).
fn close_in_background<C: Connection + 'static>(conn: C, permit: Permit) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        drop(permit);
    });
}
