//! Test harness: every test gets its own catalog database and its own Redis queue name, and
//! talks to the real PostgreSQL, MariaDB and Redis on 127.0.0.1. No mocks.
//!
//! `spawn_app()` starts the API on port 0 and `spawn_worker()` runs a worker in-process, both
//! through the binaries' own start-up code (`Application::build`, `Worker::build`);
//! `spawn_worker_process()` starts the real `metasync-worker` binary for fault tests. The
//! client methods on [`TestApp`] return the API's own types; [`TestApp::call`] is the raw
//! escape hatch for status codes and problem+json bodies.

pub mod assert;
pub mod chaos;
pub mod fixtures;
pub mod redis_cluster;
pub mod tls;
pub mod webhook_receiver;

use std::fmt::Display;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metasync_api::auth::{JwtVerifier, Role};
use metasync_api::config::{InternalKeyArgs, JwtArgs, QuotaArgs, ServeArgs};
use metasync_api::startup::Application;
use metasync_shared::config::{DatabaseArgs, OpeningArgs, OutboundArgs, QueueArgs, SealingArgs};
use metasync_shared::custody::{ConnectionTarget, SealingKey};
use metasync_shared::db::job_reads::Attempt;
use metasync_shared::db::jobs::Job;
use metasync_shared::db::resources::Resource;
use metasync_shared::maintenance::MaintenanceArgs;
use metasync_shared::queue::Queue;
use metasync_shared::retry::RetryArgs;
use metasync_worker::config::WorkerArgs;
use metasync_worker::startup::Worker;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

pub use crate::assert::assert_job;
pub use crate::redis_cluster::RedisCluster;

pub const PG_HOST: &str = "127.0.0.1";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-long-enough-0123456789";
/// The API's password fingerprint key in tests.
pub const FINGERPRINT_KEY: [u8; 32] = [42; 32];

pub fn pg_url(database: &str) -> String {
    format!("postgres://root@{PG_HOST}:5432/{database}")
}

/// The environment variable naming the test run (`deploy/local/test.sh` exports its pid), so
/// that its clean-up drops only what runs no longer alive left behind.
pub const TEST_RUN_ENV: &str = "METASYNC_TEST_RUN";

/// A name for a test's database (`mstest_…`, `sep` `_`) or queue (`test-…`, `sep` `-`):
/// `prefix`, then `r<run>` when [`TEST_RUN_ENV`] is set, then a UUID v7 (whose leading 48 bits
/// are the creation time in ms, which the clean-up reads for names of runs without a tag).
pub fn unique_name(prefix: &str, sep: char) -> String {
    let id = Uuid::now_v7().simple();
    match std::env::var(TEST_RUN_ENV) {
        Ok(run) if !run.is_empty() && run.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{prefix}{sep}r{run}{sep}{id}")
        }
        _ => format!("{prefix}{sep}{id}"),
    }
}

/// A fresh queue name for a test (`test-…`).
pub fn queue_name() -> String {
    unique_name("test", '-')
}

/// A fresh PostgreSQL database, e.g. for a catalog or a source.
pub async fn create_database(prefix: &str) -> anyhow::Result<String> {
    create_database_at(&pg_url("postgres"), prefix).await
}

/// A fresh database on the server whose `postgres` database `admin_url` names (the shared
/// server, or a test's own [`PostgresServer`]).
pub async fn create_database_at(admin_url: &str, prefix: &str) -> anyhow::Result<String> {
    let name = unique_name(prefix, '_');
    let admin = PgPool::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(name)
}

/// A fresh catalog database, migrated, and a small pool on it: what `#[sqlx::test]` gives, for
/// tests of the data layer alone. Named like every test database, so clean-up finds it.
pub async fn catalog_database() -> anyhow::Result<PgPool> {
    let name = create_database("mstest_cat").await?;
    let pool = metasync_shared::db::connect(&DatabaseArgs {
        database_url: pg_url(&name),
        db_max_connections: 3,
    })
    .await?;
    metasync_shared::db::migrate(&pool).await?;
    Ok(pool)
}

/// Drops a PostgreSQL database made by [`create_database`], ending its sessions. Benchmarks
/// call it after each run, so that autovacuum on old runs' tables does not load the next one.
pub async fn drop_database(name: &str) -> anyhow::Result<()> {
    let admin = PgPool::connect(&pg_url("postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists \"{name}\" with (force)"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    Ok(())
}

/// Creates a source database and runs `sql` (several statements) in it.
pub async fn create_source(sql: &str) -> anyhow::Result<String> {
    let name = create_database("mstest_src").await?;
    let pool = PgPool::connect(&pg_url(&name)).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .context("creating the source fixture")?;
    pool.close().await;
    Ok(name)
}

/// A running API with its own catalog database and queue.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: PgPool,
    pub database_url: String,
    pub queue_name: String,
    pub queue: Queue,
    /// The Redis the queue lives on (the shared one, or a test's own [`RedisServer`]).
    pub redis_url: String,
    /// The CA file of a `rediss://` [`TestApp::redis_url`], for workers.
    pub redis_ca: Option<PathBuf>,
    pub jwt: JwtVerifier,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The API's settings for a test: port 0, this database and queue, the test keys.
/// Fast retries, so tests of retrying jobs finish in a second or two.
fn test_retry() -> RetryArgs {
    RetryArgs {
        max_attempts: 5,
        retry_base: Duration::from_millis(100),
        retry_factor: 2.0,
        retry_cap: Duration::from_secs(1),
    }
}

/// Maintenance settings for tests: a 3 s lease, a reconciler every second.
fn test_maintenance() -> MaintenanceArgs {
    MaintenanceArgs {
        lease: Duration::from_secs(3),
        reconcile_every: Duration::from_secs(1),
        job_retention: Duration::from_secs(30 * 86_400),
        webhook_delivery_retention: Duration::from_secs(30 * 86_400),
        stand_for_leader: true,
    }
}

fn serve_args(database_url: &str, redis_url: &str, queue_name: &str) -> ServeArgs {
    ServeArgs {
        addr: "127.0.0.1:0".parse().expect("a socket address"),
        metrics_addr: metasync_shared::ops::ListenAddr(None),
        // Generous: a test machine running many suites at once can take longer than the
        // production default to hand out a connection, which is not what these tests test
        // (the outage tests run the API binary with its default).
        db_acquire_timeout: Duration::from_secs(5),
        connection_test_timeout: Duration::from_secs(15),
        database: DatabaseArgs {
            database_url: database_url.to_owned(),
            db_max_connections: 5,
        },
        queue: QueueArgs {
            redis_url: redis_url.to_owned(),
            queue: queue_name.to_owned(),
            redis_ca: None,
            redis_require_noeviction: false,
        },
        sealing: sealing_args(),
        jwt: JwtArgs::hs256(JWT_SECRET),
        internal: InternalKeyArgs::default(),
        retry: RetryArgs {
            max_attempts: 5,
            ..test_retry()
        },
        quotas: test_quotas(),
        outbound: test_outbound(),
        maintenance: test_maintenance(),
    }
}

/// The limits the tests run under, set explicitly: high enough that only the tests of the
/// limits themselves meet them, and schedules of one second allowed (the lifecycle tests fire
/// them). Tests of a limit lower the one they test.
pub fn test_quotas() -> QuotaArgs {
    QuotaArgs {
        writes_per_minute: NonZeroU32::new(1_000_000).expect("non-zero"),
        syncs_per_minute: NonZeroU32::new(1_000_000).expect("non-zero"),
        tests_per_minute: NonZeroU32::new(1_000_000).expect("non-zero"),
        max_resources: 1_000_000,
        max_active_jobs: 10_000_000,
        max_waiters: 1_000,
        max_wait: Duration::from_secs(60),
        wait_recheck: Duration::from_secs(1),
        min_schedule_interval: Duration::from_secs(1),
        header_timeout: Duration::from_secs(10),
    }
}

/// The API as a `Router` without a socket, for handler tests with
/// `tower::ServiceExt::oneshot`: built by `Application::build` like the binary (own catalog
/// database, migrated; own queue name), never served.
pub struct TestRouter {
    pub router: axum::Router,
    pub db: PgPool,
    pub jwt: JwtVerifier,
}

pub async fn spawn_router() -> anyhow::Result<TestRouter> {
    spawn_router_with(|_| {}).await
}

/// Like [`spawn_router`], with the settings changed by `edit` (e.g. a lower limit).
pub async fn spawn_router_with(edit: impl FnOnce(&mut ServeArgs)) -> anyhow::Result<TestRouter> {
    let database = create_database("mstest_cat").await?;
    let queue_name = queue_name();
    let mut args = serve_args(&pg_url(&database), REDIS_URL, &queue_name);
    edit(&mut args);
    let application = Application::build(&args, None).await?;
    let state = application.state().clone();
    Ok(TestRouter {
        router: metasync_api::app(state.clone()),
        db: state.db,
        jwt: test_jwt(),
    })
}

impl TestRouter {
    /// A bearer token for `tenant`, valid for an hour.
    pub fn token(&self, tenant: &str) -> String {
        admin_token(&self.jwt, tenant)
    }
}

/// Starts the API the way `metasync-api serve` does, on port 0, with its own catalog database
/// (migrated by start-up) and its own queue name.
pub async fn spawn_app() -> anyhow::Result<TestApp> {
    spawn_app_with_redis(REDIS_URL).await
}

/// Like [`spawn_app`], with the API and its queue on the Redis at `redis_url` (e.g. a
/// [`RedisServer`]). Workers the app spawns use the same Redis.
pub async fn spawn_app_with_redis(redis_url: &str) -> anyhow::Result<TestApp> {
    spawn_app_with(redis_url, |_| {}).await
}

/// Like [`spawn_app`], but this API does not stand for maintenance leader: the test decides
/// which processes run the fleet-wide duties (e.g. only an API process, or only workers).
pub async fn spawn_app_without_maintenance() -> anyhow::Result<TestApp> {
    spawn_app_with(REDIS_URL, |args| args.maintenance.stand_for_leader = false).await
}

/// Like [`spawn_app_with_redis`], with the settings changed by `edit` (e.g. a lower limit).
pub async fn spawn_app_with(
    redis_url: &str,
    edit: impl FnOnce(&mut ServeArgs),
) -> anyhow::Result<TestApp> {
    let database = create_database("mstest_cat").await?;
    spawn_app_at(&pg_url(&database), redis_url, edit).await
}

/// Like [`spawn_app`], with the catalog in the (empty) database at `database_url` (e.g. on a
/// [`PostgresServer`]) and the queue on the Redis at `redis_url`.
pub async fn spawn_app_with_urls(database_url: &str, redis_url: &str) -> anyhow::Result<TestApp> {
    spawn_app_at(database_url, redis_url, |_| {}).await
}

/// Like [`spawn_app_with_urls`], with the settings changed by `edit` (e.g. a Redis CA).
pub async fn spawn_app_at(
    database_url: &str,
    redis_url: &str,
    edit: impl FnOnce(&mut ServeArgs),
) -> anyhow::Result<TestApp> {
    let database_url = database_url.to_owned();
    let mut args = serve_args(&database_url, redis_url, &queue_name());
    edit(&mut args);
    let queue_name = args.queue.queue.clone();
    let application = Application::build(&args, None).await?;
    let base = format!("http://127.0.0.1:{}", application.port());
    let db = application.state().db.clone();
    let queue = application.state().queue.clone();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(application.run_until(async {
        let _ = rx.await;
    }));
    Ok(TestApp {
        base,
        http: reqwest::Client::new(),
        db,
        database_url,
        queue_name,
        queue,
        redis_url: redis_url.to_owned(),
        redis_ca: args.queue.redis_ca.clone(),
        jwt: test_jwt(),
        shutdown: Some(tx),
    })
}

/// An in-process worker; stops when dropped.
pub struct TestWorker {
    pub worker_id: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Stops the worker and waits for it to hand back unfinished work.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    /// Worker settings for this app's database and queue, tuned for tests: short lease,
    /// fast retries, a reconciler every second. Change fields, then [`TestApp::spawn_worker_with`].
    pub fn worker_args(&self) -> WorkerArgs {
        WorkerArgs {
            concurrency: 4,
            connect_timeout: Duration::from_secs(3),
            source_idle: Duration::from_secs(5),
            source_max_parked: 16,
            // Uncapped in effect, like bench-jobs: tests of the cap set their own.
            source_connections_per_server: 64,
            statement_timeout: Duration::from_secs(10),
            job_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            retry: test_retry(),
            maintenance: test_maintenance(),
            metrics_addr: metasync_shared::ops::ListenAddr(None),
            worker_name: Some("test".to_owned()),
            database: DatabaseArgs {
                database_url: self.database_url.clone(),
                db_max_connections: 5,
            },
            queue: QueueArgs {
                redis_url: self.redis_url.clone(),
                queue: self.queue_name.clone(),
                redis_ca: self.redis_ca.clone(),
                redis_require_noeviction: false,
            },
            opening: opening_args(),
            outbound: test_outbound(),
        }
    }

    /// Runs a worker in-process with [`TestApp::worker_args`].
    pub async fn spawn_worker(&self) -> TestWorker {
        self.spawn_worker_with(self.worker_args()).await
    }

    /// Runs a worker in-process, built the way `metasync-worker` builds itself.
    pub async fn spawn_worker_with(&self, args: WorkerArgs) -> TestWorker {
        let worker = Worker::build(&args).await.expect("starting a worker");
        let worker_id = worker.worker_id().to_owned();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(worker.run_until(async {
            let _ = rx.await;
        }));
        TestWorker {
            worker_id,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// A command for `program` (e.g. [`binary`]`("metasync-worker")`) with a clean environment
    /// naming this app's database, Redis and queue, the test master key (both halves: the
    /// tests do not separate the processes' custody), loopback allowed as a source,
    /// `RUST_LOG=warn`, stderr inherited, killed on drop.
    pub fn process_command(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("METASYNC_QUEUE", &self.queue_name)
            .env("METASYNC_OPENING_KEYS", &test_master_key().0)
            .envs(api_custody_env())
            .env("METASYNC_OUTBOUND_ALLOW", TEST_OUTBOUND_ALLOW)
            // No operations listener unless a test asks (the API's default port is shared).
            .env("METASYNC_METRICS_ADDR", "off")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        cmd
    }

    /// Starts the real `metasync-worker` binary against this app's database and queue.
    pub fn spawn_worker_process(
        &self,
        name: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<tokio::process::Child> {
        Ok(self.worker_command(name, extra_env)?.spawn()?)
    }

    /// The command [`TestApp::spawn_worker_process`] runs, to change (e.g. capture stderr)
    /// before spawning.
    pub fn worker_command(
        &self,
        name: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<tokio::process::Command> {
        let mut cmd = self.process_command(&binary("metasync-worker")?);
        cmd.env("METASYNC_WORKER_NAME", name)
            .env("METASYNC_DB_MAX_CONNECTIONS", "8")
            .env("METASYNC_RETRY_BASE", "100ms")
            .env("METASYNC_RETRY_CAP", "1s")
            .env("METASYNC_RECONCILE_EVERY", "1s")
            .env("METASYNC_SOURCE_CONNECTIONS_PER_SERVER", "64");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// Starts the real `metasync-api serve` binary against this app's database and queue, on
    /// `addr` (e.g. `127.0.0.1:<free port>`), with the tests' 3 s lease and 1 s reconciler.
    pub fn spawn_api_process(
        &self,
        addr: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<tokio::process::Child> {
        Ok(self.api_command(addr, extra_env)?.spawn()?)
    }

    /// The command [`TestApp::spawn_api_process`] runs, to change before spawning.
    pub fn api_command(
        &self,
        addr: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<tokio::process::Command> {
        let mut cmd = self.process_command(&binary("metasync-api")?);
        cmd.arg("serve")
            .env("METASYNC_JWT_SECRET", JWT_SECRET)
            .env("METASYNC_API_ADDR", addr)
            .env("METASYNC_LEASE", "3s")
            .env("METASYNC_RECONCILE_EVERY", "1s");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    pub fn token(&self, tenant: &str) -> String {
        admin_token(&self.jwt, tenant)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request as `tenant` and returns `(status, content-type, body)`.
    pub async fn call(
        &self,
        tenant: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, String, Value)> {
        self.call_with(&self.token(tenant), method, path, body)
            .await
    }

    /// Sends a request with `Authorization: Bearer <bearer>` (any token, or an internal API
    /// key) and returns `(status, content-type, body)`.
    pub async fn call_with(
        &self,
        bearer: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, String, Value)> {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(bearer);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        read(response).await
    }

    /// An hour-long token for `subject` with `role` in `tenant`.
    pub fn token_for(&self, subject: &str, role: Role, tenant: &str) -> String {
        self.jwt
            .issue(subject, role, Some(tenant), Duration::from_secs(3600))
            .expect("HS256 issues tokens")
    }

    /// Sends a request as `tenant` and decodes a `2xx` answer as `T`; any other status is an
    /// error carrying the body.
    pub async fn call_typed<T: DeserializeOwned>(
        &self,
        tenant: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let (status, _, body) = self.call(tenant, method.clone(), path, body).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {body}"
        );
        serde_json::from_value(body.clone())
            .with_context(|| format!("decoding the answer to {method} {path}: {body}"))
    }

    /// `POST /v1/resources` with `body` as is; expects `201`.
    pub async fn create_resource(&self, tenant: &str, body: Value) -> anyhow::Result<Resource> {
        let (status, _, resource) = self
            .call(tenant, reqwest::Method::POST, "/v1/resources", Some(body))
            .await?;
        anyhow::ensure!(status == 201, "register answered {status}: {resource}");
        Ok(serde_json::from_value(resource)?)
    }

    /// Registers a PostgreSQL source on the local server.
    pub async fn register(
        &self,
        tenant: &str,
        name: &str,
        database: &str,
    ) -> anyhow::Result<Resource> {
        self.register_via(tenant, name, database, 5432, json!({}))
            .await
    }

    /// Enqueues a sync and returns the job (new, or the resource's active one).
    pub async fn sync(&self, tenant: &str, resource_id: impl Display) -> anyhow::Result<Job> {
        self.call_typed(
            tenant,
            reqwest::Method::POST,
            &format!("/v1/resources/{resource_id}/sync"),
            None,
        )
        .await
    }

    /// Reads a job.
    pub async fn job(&self, tenant: &str, job_id: impl Display) -> anyhow::Result<Job> {
        self.call_typed(
            tenant,
            reqwest::Method::GET,
            &format!("/v1/jobs/{job_id}"),
            None,
        )
        .await
    }

    /// A job's attempts, oldest first, as its document lists them.
    pub async fn attempts(
        &self,
        tenant: &str,
        job_id: impl Display,
    ) -> anyhow::Result<Vec<Attempt>> {
        #[derive(serde::Deserialize)]
        struct History {
            attempt_history: Vec<Attempt>,
        }
        let history: History = self
            .call_typed(
                tenant,
                reqwest::Method::GET,
                &format!("/v1/jobs/{job_id}"),
                None,
            )
            .await?;
        Ok(history.attempt_history)
    }

    /// Long-polls a job until it reaches a terminal state, or fails after `limit`.
    pub async fn wait_for_job(
        &self,
        tenant: &str,
        job_id: impl Display,
        limit: Duration,
    ) -> anyhow::Result<Job> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job: Job = self
                .call_typed(
                    tenant,
                    reqwest::Method::GET,
                    &format!("/v1/jobs/{job_id}?wait=5"),
                    None,
                )
                .await?;
            if job.state.is_terminal() {
                return Ok(job);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} still {:?} after {limit:?}",
                job.state
            );
        }
    }

    /// Keys of this test's queue still in its Redis (on a cluster, on every master).
    pub async fn queue_keys(&self) -> anyhow::Result<Vec<String>> {
        let client =
            metasync_shared::queue::redis_client(&self.redis_url, self.redis_ca.as_deref())?;
        let mut conn = client.connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(self.queue.keys().pattern())
            .query_async(&mut conn)
            .await?;
        Ok(keys)
    }
}

async fn read(response: reqwest::Response) -> anyhow::Result<(u16, String, Value)> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, content_type, body))
}

/// The verifier the test apps use (HS256 with [`JWT_SECRET`], default policy).
pub fn test_jwt() -> JwtVerifier {
    JwtArgs::hs256(JWT_SECRET)
        .verifier()
        .expect("the test JWT settings are valid")
}

/// An hour-long `admin` token for `tenant`.
pub fn admin_token(jwt: &JwtVerifier, tenant: &str) -> String {
    jwt.issue("test", Role::Admin, Some(tenant), Duration::from_secs(3600))
        .expect("HS256 issues tokens")
}

/// This test process's master key pair `(opening, sealing)`, made once: the API seals with
/// the public half, workers (in-process or spawned) open with the private half.
pub fn test_master_key() -> &'static (String, String) {
    static KEY: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| metasync_shared::custody::generate("test").expect("a valid key id"))
}

/// The API's custody settings in tests.
pub fn sealing_args() -> SealingArgs {
    use base64::Engine as _;
    SealingArgs {
        sealing_key: test_master_key().1.clone(),
        fingerprint_key: base64::engine::general_purpose::STANDARD.encode(FINGERPRINT_KEY),
    }
}

/// A TCP listener on 127.0.0.1 that counts the connections it is offered (and drops them): a
/// trap that proves nothing dialled it.
pub async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let port = listener.local_addr().expect("a bound port").port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, accepted)
}

/// Every source of the tests is on this machine: loopback is allowed explicitly, as the
/// outbound policy requires.
pub const TEST_OUTBOUND_ALLOW: &str = "127.0.0.0/8,::1/128";

/// A name that resolves to loopback in tests but that no test certificate carries (the TLS
/// tests' wrong name).
pub const TEST_OTHER_NAME: &str = "other-name.test";

/// How the tests' API and workers resolve names: a static map (`localhost`,
/// [`TEST_OTHER_NAME`], and the inet_aton spellings that getaddrinfo turns into 127.0.0.1
/// itself), so no test sends a DNS query off the machine.
pub const TEST_OUTBOUND_RESOLVER: &str = "static:localhost=127.0.0.1,localhost=::1,\
     other-name.test=127.0.0.1,2130706433=127.0.0.1,0x7f000001=127.0.0.1,127.1=127.0.0.1";

/// The outbound policy settings of the tests' API and workers: loopback allowed, names
/// resolved by [`TEST_OUTBOUND_RESOLVER`].
pub fn test_outbound() -> OutboundArgs {
    OutboundArgs {
        outbound_allow: TEST_OUTBOUND_ALLOW.to_owned(),
        outbound_resolver: TEST_OUTBOUND_RESOLVER.to_owned(),
    }
}

/// The API's custody settings as environment variables, for an API process.
pub fn api_custody_env() -> [(&'static str, String); 2] {
    let args = sealing_args();
    [
        ("METASYNC_SEALING_KEY", args.sealing_key),
        ("METASYNC_PASSWORD_FINGERPRINT_KEY", args.fingerprint_key),
    ]
}

/// A worker's custody settings in tests.
pub fn opening_args() -> OpeningArgs {
    OpeningArgs {
        opening_keys: test_master_key().0.clone(),
        legacy_secret_key: None,
    }
}

/// An API process and a worker process of one [`TestApp`], with everything they said: their
/// stderr, and every command any client sent to the app's Redis meanwhile (`redis-cli
/// monitor`), for searches that must see all of it (a password that must appear nowhere).
pub struct Recorded {
    /// The API process's base URL.
    pub base: String,
    api: tokio::process::Child,
    worker: tokio::process::Child,
    monitor: tokio::process::Child,
    api_log: Arc<std::sync::Mutex<Vec<String>>>,
    worker_log: Arc<std::sync::Mutex<Vec<String>>>,
    commands: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestApp {
    /// Starts Redis's monitor, then an API process (on a free port, listening when this
    /// returns) and a worker process named `worker_name`, both with `env` (e.g. `RUST_LOG`).
    pub async fn spawn_recorded(
        &self,
        worker_name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Recorded> {
        let mut monitor = tokio::process::Command::new("redis-cli")
            .args(["-u", self.redis_url.as_str(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-cli monitor")?;
        let commands = capture_lines(monitor.stdout.take().context("stdout piped")?);
        let port = free_port()?;
        let mut api = self
            .api_command(&format!("127.0.0.1:{port}"), env)?
            .stderr(Stdio::piped())
            .spawn()?;
        let api_log = capture_stderr(&mut api);
        let mut worker = self
            .worker_command(worker_name, env)?
            .stderr(Stdio::piped())
            .spawn()?;
        let worker_log = capture_stderr(&mut worker);
        let base = format!("http://127.0.0.1:{port}");
        wait_until_listening(&base).await?;
        Ok(Recorded {
            base,
            api,
            worker,
            monitor,
            api_log,
            worker_log,
            commands,
        })
    }
}

impl Recorded {
    /// Stops the worker and the API by SIGTERM (so every buffered line is out), then the
    /// monitor; returns their log lines and the Redis commands seen.
    pub async fn finish(mut self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        for child in [&mut self.worker, &mut self.api] {
            signal(child, "TERM")?;
            tokio::time::timeout(Duration::from_secs(40), child.wait())
                .await
                .context("the process to stop")??;
        }
        self.monitor.kill().await?;
        let logs = [&self.api_log, &self.worker_log]
            .iter()
            .flat_map(|lines| lines.lock().expect("log lock").clone())
            .collect();
        let commands = self.commands.lock().expect("monitor lock").clone();
        Ok((logs, commands))
    }
}

/// A workspace binary, built by `cargo build --bins` before the tests run.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // Tests live in target/<profile>/deps/, binaries in target/<profile>/.
    let mut dir = exe.parent().context("locating the target directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("locating the target directory")?;
    }
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first",
        path.display()
    );
    Ok(path)
}

/// A TCP port of 127.0.0.1 that was free a moment ago (for a server a test starts).
/// Waits until the server at `base` (`http://host:port`) answers `/healthz`.
pub async fn wait_until_listening(base: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(20), "the server to listen", || async {
        Ok(reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok()
            .then_some(()))
    })
    .await
}

/// The lines a child writes to stderr (which must be piped), collected as it runs.
pub fn capture_stderr(
    child: &mut tokio::process::Child,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    capture_lines(child.stderr.take().expect("stderr piped"))
}

/// The lines of `stream` (a child's piped output), collected as they come.
pub fn capture_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use tokio::io::AsyncBufReadExt as _;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a [`FaultProxy`] does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward to the upstream server.
    Pass,
    /// Accept, then close at once (the client sees a reset or early EOF).
    Refuse,
    /// Accept and say nothing until [`FaultProxy::release_stalled`] (a silent or frozen server).
    Stall,
    /// PostgreSQL only: let the connection set up (start-up, authentication), then swallow the
    /// client's first query and forward nothing more, until [`FaultProxy::release_stalled`]
    /// (a tarpit: a server that accepts sessions and never answers a statement).
    StallQueries,
}

/// A TCP proxy on 127.0.0.1 in front of a real server, for fault tests: it can refuse, stall
/// and release connections on command.
pub struct FaultProxy {
    pub port: u16,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    release: tokio::sync::watch::Sender<u64>,
    refuse_next: Arc<std::sync::atomic::AtomicUsize>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream_port: u16) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (mode, mode_rx) = tokio::sync::watch::channel(ProxyMode::Pass);
        let (release, release_rx) = tokio::sync::watch::channel(0u64);
        let refuse_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (refuse, count) = (refuse_next.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let refused = refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let mode = if refused {
                    ProxyMode::Refuse
                } else {
                    *mode_rx.borrow()
                };
                let mut release_rx = release_rx.clone();
                tokio::spawn(async move {
                    match mode {
                        ProxyMode::Refuse => return,
                        ProxyMode::StallQueries => {
                            if let Ok(server) =
                                tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                            {
                                let held = swallow_first_query(client, server).await;
                                release_rx.borrow_and_update();
                                let _ = release_rx.changed().await;
                                drop(held);
                            }
                            return;
                        }
                        ProxyMode::Stall => {
                            let seen = *release_rx.borrow_and_update();
                            while *release_rx.borrow() == seen {
                                if release_rx.changed().await.is_err() {
                                    return;
                                }
                            }
                        }
                        ProxyMode::Pass => {}
                    }
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(Self {
            port,
            mode,
            release,
            refuse_next,
            accepted,
            task,
        })
    }

    /// Sets what happens to new connections.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// Refuses the next `n` connections, whatever the mode.
    pub fn refuse_next(&self, n: usize) {
        self.refuse_next
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets every stalled connection through.
    pub fn release_stalled(&self) {
        self.release.send_modify(|generation| *generation += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Forwards a PostgreSQL session (server to client throughout; client to server up to its
/// first query: a simple `Query` or an extended `Parse`), then stops forwarding the client's
/// messages. Returns what must stay alive to keep both sockets open.
async fn swallow_first_query(
    mut client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
) -> Option<impl Send> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // The start-up message: a length (counting itself), then the body. The tarpit has no
    // TLS: it declines an SSLRequest itself, so the client goes on in plain text and the
    // messages below can be read.
    async fn startup_message(client: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
        let mut length = [0u8; 4];
        client.read_exact(&mut length).await?;
        let mut message = length.to_vec();
        message.resize((u32::from_be_bytes(length) as usize).max(4), 0);
        client.read_exact(&mut message[4..]).await?;
        Ok(message)
    }
    let mut startup = startup_message(&mut client).await.ok()?;
    if startup == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
        client.write_all(b"N").await.ok()?;
        startup = startup_message(&mut client).await.ok()?;
    }
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let downstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    });
    let upstream = async {
        to_server.write_all(&startup).await?;
        // Then messages: a type byte, a length, a body.
        loop {
            let mut header = [0u8; 5];
            from_client.read_exact(&mut header).await?;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut body = vec![0; (length as usize).saturating_sub(4)];
            from_client.read_exact(&mut body).await?;
            if matches!(header[0], b'Q' | b'P') {
                return Ok::<_, std::io::Error>(());
            }
            to_server.write_all(&header).await?;
            to_server.write_all(&body).await?;
        }
    };
    let swallowed = upstream.await.is_ok();
    swallowed.then_some((from_client, to_server, AbortOnDrop(downstream)))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TestApp {
    /// Registers a PostgreSQL source reached through `port` (e.g. a [`FaultProxy`]); `extra`
    /// adds or replaces fields of the request body.
    pub async fn register_via(
        &self,
        tenant: &str,
        name: &str,
        database: &str,
        port: u16,
        extra: Value,
    ) -> anyhow::Result<Resource> {
        let mut body = json!({
            "name": name, "kind": "postgres", "host": PG_HOST, "port": port,
            "database": database, "username": "root", "password": "unused-by-trust-auth"
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.create_resource(tenant, body).await
    }

    /// Reads a job straight from the catalog database: `(state, attempts, worker_id)`.
    pub async fn job_row(
        &self,
        job_id: impl Display,
    ) -> anyhow::Result<(String, i32, Option<String>)> {
        Ok(
            sqlx::query_as("select state, attempts, worker_id from jobs where id = $1")
                .bind(Uuid::parse_str(&job_id.to_string())?)
                .fetch_one(&self.db)
                .await?,
        )
    }
}

/// Sends a signal to a child process with the `kill` command.
pub fn signal(child: &tokio::process::Child, signal: &str) -> anyhow::Result<()> {
    let pid = child.id().context("the process has exited")?;
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

impl TestApp {
    /// Inserts `count` resources pointing at `database` on the local PostgreSQL, the way the
    /// API would (sealed passwords), for tests that need thousands.
    pub async fn insert_resources(
        &self,
        tenant: &str,
        database: &str,
        count: usize,
    ) -> anyhow::Result<Vec<Uuid>> {
        insert_resources_into(&self.db, tenant, "postgres", 5432, database, "pw", count).await
    }
}

/// Inserts `count` resources into the catalog at `db` the way the API would (sealed
/// passwords), each pointing at `database` on the local server at `port` (`kind` `postgres` or
/// `mysql`; the user is `root`).
pub async fn insert_resources_into(
    db: &PgPool,
    tenant: &str,
    kind: &str,
    port: i32,
    database: &str,
    password: &str,
    count: usize,
) -> anyhow::Result<Vec<Uuid>> {
    // The column's default, `{"mode": "prefer"}`.
    let tls = metasync_shared::tls::SourceTls::default();
    insert_resources_with_tls(db, tenant, kind, port, database, password, count, &tls).await
}

/// [`insert_resources_into`] with the sources' `tls` settings.
#[allow(clippy::too_many_arguments)]
pub async fn insert_resources_with_tls(
    db: &PgPool,
    tenant: &str,
    kind: &str,
    port: i32,
    database: &str,
    password: &str,
    count: usize,
    tls: &metasync_shared::tls::SourceTls,
) -> anyhow::Result<Vec<Uuid>> {
    let sealing = SealingKey::parse(&test_master_key().1)?;
    let tenant_id = metasync_shared::ids::TenantId::new(tenant);
    let engine: metasync_shared::domain::ResourceKind =
        serde_json::from_value(serde_json::Value::String(kind.to_owned()))?;
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    let names: Vec<String> = (0..count).map(|i| format!("source-{i:05}")).collect();
    let sealed: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let target = ConnectionTarget {
                tenant: &tenant_id,
                resource: (*id).into(),
                kind: engine,
                host: "127.0.0.1",
                port,
                username: "root",
                database,
                tls,
            };
            sealing.seal(password, &target).record
        })
        .collect();
    sqlx::query(
        "insert into resources (id, tenant_id, name, kind, host, port, database, username,
                                password_sealed, password_key_id, password_format, tls)
         select id, $1, name, $2, '127.0.0.1', $3, $4, 'root', sealed, $8, $9, $10
         from unnest($5::uuid[], $6::text[], $7::bytea[]) as r (id, name, sealed)",
    )
    .bind(tenant)
    .bind(kind)
    .bind(port)
    .bind(database)
    .bind(&ids)
    .bind(&names)
    .bind(&sealed)
    .bind(sealing.id())
    .bind(metasync_shared::custody::RecordFormat::CURRENT)
    .bind(sqlx::types::Json(tls))
    .execute(db)
    .await?;
    Ok(ids)
}

/// Whether a [`RedisServer`] keeps its data on disk across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restarted server is empty.
    Off,
    /// Append-only file, fsync every second (production Redis): a restart replays it.
    Aof,
}

/// A private `redis-server` on a free port of 127.0.0.1, for tests that flush, kill or restart
/// Redis: they never touch the shared server on 6379 that other tests are using. Started by
/// [`RedisServer::start`] (no persistence) or [`RedisServer::start_with`], stopped (by its pid)
/// when dropped.
pub struct RedisServer {
    pub port: u16,
    pub persistence: Persistence,
    /// More `redis-server` arguments, e.g. `--maxmemory-policy allkeys-lru`.
    args: Vec<String>,
    child: Option<std::process::Child>,
    dir: PathBuf,
    tls: Option<RedisTls>,
}

/// A TLS-only [`RedisServer`]'s certificate and the CA file that verifies it.
struct RedisTls {
    cert: tls::ServerCert,
    ca_file: PathBuf,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Persistence::Off).await
    }

    pub async fn start_with(persistence: Persistence) -> anyhow::Result<Self> {
        Self::start_inner(persistence, None, &[]).await
    }

    /// A server started with more arguments, e.g. `["--maxmemory-policy", "allkeys-lru"]`.
    pub async fn start_with_args(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(Persistence::Off, None, args).await
    }

    /// A Redis that speaks TLS only (its plain port is off), with a certificate from `ca` for
    /// `127.0.0.1` and `localhost`; [`RedisServer::url`] is `rediss://`, and
    /// [`RedisServer::ca_file`] verifies it.
    pub async fn start_tls(ca: &tls::TestCa) -> anyhow::Result<Self> {
        let cert = ca.issue("redis", &["127.0.0.1", "localhost"])?;
        let tls = RedisTls {
            cert,
            ca_file: ca.ca_file(),
        };
        Self::start_inner(Persistence::Off, Some(tls), &[]).await
    }

    async fn start_inner(
        persistence: Persistence,
        tls: Option<RedisTls>,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("mstest-redis", '-'));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            port: 0,
            persistence,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
            dir,
            tls,
        };
        // The port is free when picked but could be taken before redis-server binds it: then
        // the server exits at once, and another port is tried.
        for _ in 0..5 {
            server.port = free_port()?;
            if server.start_again().await.is_ok() {
                return Ok(server);
            }
        }
        anyhow::bail!("redis-server did not start on a free port")
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and directory: with
    /// [`Persistence::Off`] an empty Redis, as after a crash. Clients see their connections break.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start_again().await
    }

    /// Starts the server again on the same port and directory (so an AOF is replayed); returns
    /// once it answers `PING` (not `LOADING`).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "redis-server is already running");
        let appendonly = match self.persistence {
            Persistence::Off => "no",
            Persistence::Aof => "yes",
        };
        let mut command = std::process::Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.cert.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca_file)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", appendonly])
            .args(["--appendfsync", "everysec", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let pid = child.id();
        self.child = Some(child);
        let url = self.url();
        let ca_file = self.ca_file();
        let ready = eventually(Duration::from_secs(30), "redis-server to answer", || {
            let url = url.clone();
            let ca_file = ca_file.clone();
            async move {
                anyhow::ensure!(process_alive(pid), "redis-server exited");
                let answered = async {
                    let client = metasync_shared::queue::redis_client(&url, ca_file.as_deref())?;
                    let mut conn = client.blocking_connection().await?;
                    redis::cmd("PING").query_async::<String>(&mut conn).await?;
                    anyhow::Ok(())
                }
                .await;
                Ok(answered.is_ok().then_some(()))
            }
        })
        .await;
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    /// `kill -9`: the server dies at once; with [`Persistence::Aof`], writes of the last second
    /// may be lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
        }
    }

    /// The CA file that verifies a TLS server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|tls| tls.ca_file.clone())
    }
}

/// Whether `pid` is a live process (not a zombie).
pub(crate) fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL server on a free port of 127.0.0.1, in a fresh data directory, for
/// tests that stop, kill or restart the catalog database: they never touch the shared server
/// on 5432. `initdb` refuses to run as root, so as root the server runs as the `postgres`
/// user. Trust authentication for the `postgres` superuser. Stopped (immediately) and its
/// directory removed when dropped.
pub struct PostgresServer {
    pub port: u16,
    dir: PathBuf,
    /// With TLS: the certificate's and key's files in `dir`.
    tls: Option<tls::ServerCert>,
}

impl PostgresServer {
    /// Runs `initdb`, then starts the server and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(None).await
    }

    /// A server that accepts TCP connections over TLS only (`hostssl` in `pg_hba.conf`), with
    /// a certificate from `ca` for `127.0.0.1` and `localhost`.
    pub async fn start_tls(ca: &tls::TestCa) -> anyhow::Result<Self> {
        Self::start_inner(Some(ca)).await
    }

    async fn start_inner(ca: Option<&tls::TestCa>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("mstest-pg", '-'));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            port: 0,
            dir,
            tls: None,
        };
        if let Some(ca) = ca {
            // The key must belong to the server's user, mode 0600: PostgreSQL checks both.
            let issued = ca.issue("postgres", &["127.0.0.1", "localhost"])?;
            let cert = tls::ServerCert {
                cert_file: server.dir.join("server.crt"),
                key_file: server.dir.join("server.key"),
            };
            std::fs::copy(&issued.cert_file, &cert.cert_file)?;
            std::fs::copy(&issued.key_file, &cert.key_file)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&cert.key_file, std::fs::Permissions::from_mode(0o600))?;
            server.tls = Some(cert);
        }
        if running_as_root() {
            run_checked(
                tokio::process::Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&server.dir),
            )
            .await?;
        }
        let data = server.data_dir();
        run_checked(
            server
                .command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        )
        .await
        .context("initdb")?;
        if server.tls.is_some() {
            // TCP over TLS only: a session that is not encrypted cannot connect at all.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            )?;
        }
        // The port is free when picked but could be taken before the server binds it.
        for _ in 0..5 {
            server.port = free_port()?;
            if server.start_again().await.is_ok() {
                return Ok(server);
            }
        }
        anyhow::bail!("PostgreSQL did not start on a free port")
    }

    /// Starts the server again (after [`PostgresServer::stop`] or a kill), on the same port
    /// and data directory, and waits until it accepts connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        if let Some(cert) = &self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.cert_file.display(),
                cert.key_file.display()
            ));
        }
        run_checked(
            self.command("pg_ctl")
                .args(["-w", "-t", "30", "-D"])
                .arg(self.data_dir())
                .args(["-o", &options, "-l"])
                .arg(self.dir.join("server.log"))
                .arg("start"),
        )
        .await
        .context("pg_ctl start")
    }

    /// Stops the server with pg_ctl's shutdown `mode` (`smart`, `fast` or `immediate`, the
    /// last like a crash) and waits until it is gone.
    pub async fn stop(&self, mode: &str) -> anyhow::Result<()> {
        run_checked(
            self.command("pg_ctl")
                .args(["-w", "-t", "30", "-m", mode, "-D"])
                .arg(self.data_dir())
                .arg("stop"),
        )
        .await
        .context("pg_ctl stop")
    }

    /// The postmaster's pid, while it runs (for signals: `kill -9`, `SIGSTOP`).
    pub fn pid(&self) -> Option<u32> {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pid_file.lines().next()?.trim().parse().ok()
    }

    /// A URL for `database` as the `postgres` superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's log (`pg_ctl -l`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A fresh database on this server, named like [`create_database`]'s.
    pub async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
        create_database_at(&self.url("postgres"), prefix).await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program` (initdb, pg_ctl), as the `postgres` user when running as root.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = if running_as_root() {
            let mut cmd = tokio::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--", program]);
            cmd
        } else {
            tokio::process::Command::new(program)
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SIGQUIT is PostgreSQL's immediate shutdown; it also ends the backends.
            let _ = std::process::Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
            for _ in 0..250 {
                let alive = std::process::Command::new("kill")
                    .args(["-0", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !alive {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Runs a command to completion; fails with its stderr unless it exits 0.
async fn run_checked(cmd: &mut tokio::process::Command) -> anyhow::Result<()> {
    let output = cmd.stderr(Stdio::piped()).output().await?;
    anyhow::ensure!(
        output.status.success(),
        "{:?} exited with {}: {}",
        cmd.as_std(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A private MariaDB server on a free port of 127.0.0.1 that accepts TLS connections only
/// (`require_secure_transport`), with a certificate from a test's CA for `127.0.0.1` and
/// `localhost`; `root` has no password. Killed (by its pid) and its directory removed when
/// dropped.
pub struct MariaDbServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: PathBuf,
}

impl MariaDbServer {
    pub async fn start_tls(ca: &tls::TestCa) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("mstest-mariadb", '-'));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            port: 0,
            child: None,
            dir,
        };
        run_checked(
            tokio::process::Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=root", "--skip-test-db"])
                .args(["--auth-root-authentication-method=normal"])
                .arg(format!("--datadir={}", server.dir.join("data").display()))
                .stdout(Stdio::null()),
        )
        .await
        .context("mariadb-install-db")?;
        let cert = ca.issue("mariadb", &["127.0.0.1", "localhost"])?;
        for _ in 0..5 {
            server.port = free_port()?;
            let child = std::process::Command::new("mariadbd")
                .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
                .arg(format!("--port={}", server.port))
                .arg(format!("--datadir={}", server.dir.join("data").display()))
                .arg(format!("--socket={}", server.dir.join("sock").display()))
                .arg(format!("--pid-file={}", server.dir.join("pid").display()))
                .arg(format!(
                    "--log-error={}",
                    server.dir.join("error.log").display()
                ))
                .arg(format!("--ssl-cert={}", cert.cert_file.display()))
                .arg(format!("--ssl-key={}", cert.key_file.display()))
                .arg(format!("--ssl-ca={}", ca.ca_file().display()))
                .args(["--require-secure-transport=ON", "--skip-log-bin"])
                .args(["--innodb-buffer-pool-size=16M", "--performance-schema=OFF"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mariadbd")?;
            let pid = child.id();
            server.child = Some(child);
            let url = server.admin_url("mysql");
            let ready = eventually(Duration::from_secs(30), "mariadbd to answer", || {
                let url = url.clone();
                async move {
                    anyhow::ensure!(process_alive(pid), "mariadbd exited");
                    Ok(sqlx::MySqlPool::connect(&url).await.ok().map(|_| ()))
                }
            })
            .await;
            if ready.is_ok() {
                return Ok(server);
            }
            server.kill();
        }
        anyhow::bail!("mariadbd did not start on a free port")
    }

    /// A URL for `database` as `root`, over TLS (the server takes nothing else).
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/{database}?ssl-mode=required",
            self.port
        )
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
