//! Test harness: every test gets its own catalog database and its own Redis queue name, and
//! talks to the real PostgreSQL, MariaDB and Redis on 127.0.0.1. No mocks.
//!
//! `spawn_app()` starts the API on port 0; `spawn_worker()` runs a worker in-process;
//! `spawn_worker_process()` starts the real `metasync-worker` binary for fault tests.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metasync_api::AppState;
use metasync_api::auth::JwtKeys;
use metasync_shared::config::DatabaseArgs;
use metasync_shared::crypto::SecretBox;
use metasync_shared::queue::Queue;
use metasync_worker::pipeline::WorkerContext;
use metasync_worker::retry::RetryPolicy;
use metasync_worker::scan::ScanLimits;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const PG_HOST: &str = "127.0.0.1";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-long-enough-0123456789";
pub const SECRET_KEY: [u8; 32] = [42; 32];

pub fn pg_url(database: &str) -> String {
    format!("postgres://root@{PG_HOST}:5432/{database}")
}

/// A fresh PostgreSQL database, e.g. for a catalog or a source.
pub async fn create_database(prefix: &str) -> anyhow::Result<String> {
    let name = format!("{prefix}_{}", Uuid::now_v7().simple());
    let admin = PgPool::connect(&pg_url("postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(name)
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
    pub jwt: JwtKeys,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn spawn_app() -> anyhow::Result<TestApp> {
    let database = create_database("mstest_cat").await?;
    let database_url = pg_url(&database);
    let db = metasync_shared::db::connect(&DatabaseArgs {
        database_url: database_url.clone(),
        db_max_connections: 5,
    })
    .await?;
    metasync_shared::db::migrate(&db).await?;
    let queue_name = format!("test-{}", Uuid::now_v7().simple());
    let queue = Queue::connect(REDIS_URL, &queue_name).await?;
    let jwt = JwtKeys::new(JWT_SECRET.as_bytes());
    let state = AppState {
        db: db.clone(),
        queue: queue.clone(),
        secrets: SecretBox::new(&SECRET_KEY),
        jwt: Arc::new(jwt.clone()),
        max_attempts: 5,
        metrics: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = oneshot::channel();
    tokio::spawn(metasync_api::serve(listener, state, async {
        let _ = rx.await;
    }));
    Ok(TestApp {
        base,
        http: reqwest::Client::new(),
        db,
        database_url,
        queue_name,
        queue,
        jwt,
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
    pub fn worker_context(&self, worker_id: &str) -> WorkerContext {
        WorkerContext {
            db: self.db.clone(),
            queue: self.queue.clone(),
            secrets: SecretBox::new(&SECRET_KEY),
            worker_id: worker_id.to_owned(),
            lease: Duration::from_secs(3),
            job_timeout: Duration::from_secs(60),
            limits: ScanLimits {
                connect_timeout: Duration::from_secs(3),
                statement_timeout: Duration::from_secs(10),
            },
            retry: RetryPolicy {
                base: Duration::from_millis(100),
                factor: 2.0,
                cap: Duration::from_secs(1),
            },
        }
    }

    pub fn spawn_worker(&self) -> TestWorker {
        self.spawn_worker_with(self.worker_context(&format!("test-{}", Uuid::now_v7().simple())))
    }

    pub fn spawn_worker_with(&self, ctx: WorkerContext) -> TestWorker {
        let worker_id = ctx.worker_id.clone();
        let (tx, rx) = oneshot::channel();
        let options = metasync_worker::RunOptions {
            concurrency: 4,
            shutdown_grace: Duration::from_secs(5),
        };
        let handle = tokio::spawn(metasync_worker::run(ctx, options, async {
            let _ = rx.await;
        }));
        TestWorker {
            worker_id,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Starts the real `metasync-worker` binary against this app's database and queue.
    pub fn spawn_worker_process(
        &self,
        name: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(binary("metasync-worker")?);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", REDIS_URL)
            .env("METASYNC_QUEUE", &self.queue_name)
            .env("METASYNC_SECRET_KEY", secret_key_base64())
            .env("METASYNC_WORKER_NAME", name)
            .env("METASYNC_DB_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Ok(cmd.spawn()?)
    }

    pub fn token(&self, tenant: &str) -> String {
        self.jwt.issue("test", tenant, Duration::from_secs(3600))
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
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(self.token(tenant));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        read(response).await
    }

    /// Registers a PostgreSQL source on the local server.
    pub async fn register(
        &self,
        tenant: &str,
        name: &str,
        database: &str,
    ) -> anyhow::Result<Value> {
        let (status, _, body) = self
            .call(
                tenant,
                reqwest::Method::POST,
                "/v1/resources",
                Some(json!({
                    "name": name, "kind": "postgres", "host": PG_HOST, "port": 5432,
                    "database": database, "username": "root", "password": "unused-by-trust-auth"
                })),
            )
            .await?;
        anyhow::ensure!(status == 201, "register answered {status}: {body}");
        Ok(body)
    }

    /// Enqueues a sync and returns the job document.
    pub async fn sync(&self, tenant: &str, resource_id: &str) -> anyhow::Result<Value> {
        let (status, _, body) = self
            .call(
                tenant,
                reqwest::Method::POST,
                &format!("/v1/resources/{resource_id}/sync"),
                None,
            )
            .await?;
        anyhow::ensure!(
            status == 202 || status == 200,
            "sync answered {status}: {body}"
        );
        Ok(body)
    }

    /// Long-polls a job until it reaches a terminal state, or fails after `limit`.
    pub async fn wait_for_job(
        &self,
        tenant: &str,
        job_id: &str,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, _, job) = self
                .call(
                    tenant,
                    reqwest::Method::GET,
                    &format!("/v1/jobs/{job_id}?wait=5"),
                    None,
                )
                .await?;
            anyhow::ensure!(status == 200, "job read answered {status}: {job}");
            if matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return Ok(job);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} still {} after {limit:?}",
                job["state"]
            );
        }
    }

    /// Keys of this test's queue still in Redis.
    pub async fn queue_keys(&self) -> anyhow::Result<Vec<String>> {
        let client = redis::Client::open(REDIS_URL)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
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

pub fn secret_key_base64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(SECRET_KEY)
}

/// A workspace binary, built by `cargo build --bins` before the tests run.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .context("locating the target directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first",
        path.display()
    );
    Ok(path)
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
