//! Chaos harness: a whole fleet as real processes on private services, a fault injected in the
//! middle of a batch, and what the fleet looks like once the fault has healed.
//!
//! Every run gets its own Redis ([`RedisServer`], on a free port), its own catalog PostgreSQL
//! ([`PostgresServer`], on a free port), the API and `workers` worker processes started from
//! the workspace binaries, and one tiny source database on the shared PostgreSQL that every
//! resource points at (directly, or through a [`FaultProxy`] that refuses connections for the
//! "attempts failing" variants). Everything listens on 127.0.0.1 and is removed when the run
//! ends; the processes' logs are kept only when the run failed.
//!
//! A run enqueues `jobs` syncs with one `POST /v1/syncs`, waits (by polling the catalog) until
//! part of them is done, injects its fault, and from the moment the fault has healed polls
//! until every job is terminal. It passes when that takes at most
//! [`ChaosSettings::bound`] (lease + reconcile period + 30 s), no job is left `queued`,
//! `running` or `retrying`, and, once the workers and the API have stopped, no key of the queue
//! is left in Redis (keys with a TTL are reported as expiring, not as leftovers).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metasync_shared::ids::TenantId;
use metasync_shared::queue::{Class, Keys};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::{
    FaultProxy, JWT_SECRET, Persistence, PostgresServer, ProxyMode, RedisServer,
    TEST_OUTBOUND_ALLOW, admin_token, api_custody_env, binary, create_source, eventually,
    insert_resources_into, test_jwt, test_master_key,
};

const TENANT: &str = "chaos";
/// Part of the batch that is finished (or, when attempts fail, has failed once) before the
/// fault, so that it hits a fleet in full flow.
const BEFORE_FAULT: f64 = 0.25;
/// How long past the bound a run keeps polling, to say how late it was rather than only that
/// it was late.
const OVERTIME: Duration = Duration::from_secs(60);
/// How long sources keep refusing connections after Redis is back, when attempts fail.
const FAILING_AFTER_RESTART: Duration = Duration::from_secs(5);

/// One fault, injected once the batch is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Redis killed with SIGKILL and started again at once on the same port; with
    /// `failing`, every source connection is refused from the start until 5 s after Redis
    /// is back (the fault heals then).
    RedisRestart {
        persistence: Persistence,
        failing: bool,
    },
    /// Redis (AOF on) killed with SIGKILL, started again after the outage.
    RedisDown,
    /// The catalog PostgreSQL stopped with `pg_ctl stop -m immediate`, started again after
    /// the outage.
    CatalogDown,
    /// The API killed with SIGKILL right after the batch's jobs committed, before its push of
    /// their deliveries reached Redis (Redis is `CLIENT PAUSE WRITE`d meanwhile, and a paused
    /// command of a dead client is dropped).
    ApiKilledAfterBatch,
    /// Each worker replaced in turn (new one started, old one SIGTERMed and awaited): no job
    /// may need a second attempt.
    RollingRestart,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::RedisRestart {
            persistence: Persistence::Off,
            failing: false,
        },
        Scenario::RedisRestart {
            persistence: Persistence::Aof,
            failing: false,
        },
        Scenario::RedisRestart {
            persistence: Persistence::Off,
            failing: true,
        },
        Scenario::RedisRestart {
            persistence: Persistence::Aof,
            failing: true,
        },
        Scenario::RedisDown,
        Scenario::CatalogDown,
        Scenario::ApiKilledAfterBatch,
        Scenario::RollingRestart,
    ];

    /// A short name, for the command line and the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::RedisRestart {
                persistence: Persistence::Off,
                failing: false,
            } => "redis-restart",
            Scenario::RedisRestart {
                persistence: Persistence::Aof,
                failing: false,
            } => "redis-restart-aof",
            Scenario::RedisRestart {
                persistence: Persistence::Off,
                failing: true,
            } => "redis-restart-failing",
            Scenario::RedisRestart {
                persistence: Persistence::Aof,
                failing: true,
            } => "redis-restart-aof-failing",
            Scenario::RedisDown => "redis-down",
            Scenario::CatalogDown => "catalog-down",
            Scenario::ApiKilledAfterBatch => "api-killed-after-batch",
            Scenario::RollingRestart => "rolling-restart",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn failing(self) -> bool {
        matches!(self, Scenario::RedisRestart { failing: true, .. })
    }

    fn persistence(self) -> Persistence {
        match self {
            Scenario::RedisRestart { persistence, .. } => persistence,
            // Production Redis runs with AOF.
            _ => Persistence::Aof,
        }
    }
}

/// The size of a run and the fleet's timing settings.
#[derive(Debug, Clone)]
pub struct ChaosSettings {
    pub jobs: usize,
    pub workers: usize,
    /// `METASYNC_LEASE` of the workers.
    pub lease: Duration,
    /// `METASYNC_RECONCILE_EVERY` of the workers.
    pub reconcile_every: Duration,
    /// How long Redis or the catalog stays down in [`Scenario::RedisDown`] and
    /// [`Scenario::CatalogDown`].
    pub outage: Duration,
    /// Where a failed run's logs are kept (a directory per scenario below it).
    pub log_dir: PathBuf,
}

impl ChaosSettings {
    /// The figures: 2,000 jobs, 2 workers, the default lease (15 s) and reconcile
    /// period (10 s), 30 s outages.
    pub fn full(log_dir: PathBuf) -> Self {
        Self {
            jobs: 2000,
            workers: 2,
            lease: Duration::from_secs(15),
            reconcile_every: Duration::from_secs(10),
            outage: Duration::from_secs(30),
            log_dir,
        }
    }

    /// The promise: every job is terminal within this long of the fault healing.
    pub fn bound(&self) -> Duration {
        self.lease + self.reconcile_every + Duration::from_secs(30)
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub jobs: usize,
    pub bound: Duration,
    /// From the fault healing to every job terminal; `None` if that never happened within the
    /// bound plus [`OVERTIME`].
    pub heal_to_terminal: Option<Duration>,
    /// Jobs by state at the end.
    pub states: BTreeMap<String, i64>,
    /// Jobs by number of attempts at the end.
    pub attempts: BTreeMap<i32, i64>,
    /// Up to 10 jobs not terminal at the end: `id state attempts worker cancel_requested`.
    pub stuck: Vec<String>,
    pub stuck_count: i64,
    /// Queue keys without a TTL left once every process stopped: `key (type, size: a few
    /// members …)`.
    pub leftover_keys: Vec<String>,
    /// Queue keys with a TTL left then: `key (ttl)`.
    pub expiring_keys: Vec<String>,
    /// What happened when, for the report (fault injected, healed, ...).
    pub timeline: Vec<String>,
    /// Every broken promise; empty means PASS.
    pub failures: Vec<String>,
    /// Where the logs are, when kept.
    pub logs: Option<PathBuf>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(
            f,
            "== {} ({} jobs): {verdict}",
            self.scenario.name(),
            self.jobs
        )?;
        match self.heal_to_terminal {
            Some(t) => writeln!(
                f,
                "   healed → all terminal: {:.1} s (bound {} s)",
                t.as_secs_f64(),
                self.bound.as_secs()
            )?,
            None => writeln!(
                f,
                "   healed → all terminal: never within {} s (bound {} s)",
                (self.bound + OVERTIME).as_secs(),
                self.bound.as_secs()
            )?,
        }
        writeln!(f, "   states: {:?}", self.states)?;
        writeln!(f, "   attempts histogram: {:?}", self.attempts)?;
        writeln!(f, "   stuck jobs: {}", self.stuck_count)?;
        for job in &self.stuck {
            writeln!(f, "     {job}")?;
        }
        writeln!(f, "   leftover keys: {:?}", self.leftover_keys)?;
        if !self.expiring_keys.is_empty() {
            writeln!(f, "   expiring keys: {:?}", self.expiring_keys)?;
        }
        for event in &self.timeline {
            writeln!(f, "   {event}")?;
        }
        for failure in &self.failures {
            writeln!(f, "   FAILED: {failure}")?;
        }
        if let Some(logs) = &self.logs {
            writeln!(f, "   logs: {}", logs.display())?;
        }
        Ok(())
    }
}

/// Runs one scenario end to end and reports what it found; an `Err` means the harness itself
/// could not run it (a service did not start), not that the fleet broke a promise.
///
/// `source` is the source database every resource points at, on the shared PostgreSQL (see
/// [`source_database`]); runs only read it, so one can serve many.
pub async fn run(
    scenario: Scenario,
    settings: &ChaosSettings,
    source: &str,
) -> anyhow::Result<Outcome> {
    let log_dir = settings
        .log_dir
        .join(format!("{}-{}", scenario.name(), Uuid::now_v7().simple()));
    std::fs::create_dir_all(&log_dir)?;
    let mut fleet = Fleet::start(scenario, settings, source, &log_dir).await?;
    let result = fleet.exercise().await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            fleet.shutdown().await;
            fleet.cleanup().await;
            anyhow::bail!(
                "{}: {e:#} (logs in {})\n   {}",
                scenario.name(),
                log_dir.display(),
                fleet.timeline.join("\n   ")
            );
        }
    };
    fleet.cleanup().await;
    let mut outcome = outcome;
    if outcome.passed() {
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        outcome.logs = Some(log_dir);
    }
    Ok(outcome)
}

/// The services and processes of one run.
struct Fleet {
    scenario: Scenario,
    settings: ChaosSettings,
    log_dir: PathBuf,
    redis: RedisServer,
    catalog: PostgresServer,
    catalog_url: String,
    /// The harness's own pool on the catalog: short acquire timeout, so polls during an
    /// outage fail fast instead of hanging.
    db: PgPool,
    queue: String,
    source: String,
    proxy: Option<FaultProxy>,
    api: Option<tokio::process::Child>,
    api_base: String,
    workers: Vec<tokio::process::Child>,
    workers_started: usize,
    http: reqwest::Client,
    token: String,
    timeline: Vec<String>,
    started: Instant,
}

impl Fleet {
    async fn start(
        scenario: Scenario,
        settings: &ChaosSettings,
        source: &str,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let redis = RedisServer::start_with(scenario.persistence()).await?;
        let catalog = PostgresServer::start().await?;
        let catalog_url = catalog.url(&catalog.create_database("metasync").await?);
        let db = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(1))
            .connect(&catalog_url)
            .await?;
        let proxy = if scenario.failing() {
            let proxy = FaultProxy::start(5432).await?;
            proxy.set_mode(ProxyMode::Refuse);
            Some(proxy)
        } else {
            None
        };
        let mut fleet = Self {
            scenario,
            settings: settings.clone(),
            log_dir: log_dir.to_owned(),
            redis,
            catalog,
            catalog_url,
            db,
            queue: format!("chaos-{}", Uuid::now_v7().simple()),
            source: source.to_owned(),
            proxy,
            api: None,
            api_base: String::new(),
            workers: Vec::new(),
            workers_started: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            token: admin_token(&test_jwt(), TENANT),
            timeline: Vec::new(),
            started,
        };
        fleet.note("redis, catalog postgres and source up");
        fleet.start_api().await?;
        let port = fleet.proxy.as_ref().map_or(5432, |p| p.port);
        insert_resources_into(
            &fleet.db,
            TENANT,
            "postgres",
            i32::from(port),
            &fleet.source,
            "pw",
            settings.jobs,
        )
        .await?;
        for _ in 0..settings.workers {
            fleet.start_worker()?;
        }
        fleet.note(format!(
            "api and {} workers started, {} resources registered",
            settings.workers, settings.jobs
        ));
        Ok(fleet)
    }

    fn note(&mut self, event: impl fmt::Display) {
        let at = self.started.elapsed().as_secs_f64();
        self.timeline.push(format!("t={at:6.1}s {event}"));
    }

    /// Settings every process shares: this run's catalog, Redis, queue and keys; fast retries
    /// and, when attempts fail, enough of them that none runs out before the fault heals.
    fn common_env(&self) -> Vec<(&'static str, String)> {
        let max_attempts = if self.scenario.failing() { "50" } else { "5" };
        vec![
            ("DATABASE_URL", self.catalog_url.clone()),
            ("REDIS_URL", self.redis.url()),
            ("METASYNC_QUEUE", self.queue.clone()),
            // Every process gets both halves of the master key here; production gives the
            // API the public half only.
            ("METASYNC_OPENING_KEYS", test_master_key().0.clone()),
            ("METASYNC_OUTBOUND_ALLOW", TEST_OUTBOUND_ALLOW.to_owned()),
            ("METASYNC_MAX_ATTEMPTS", max_attempts.to_owned()),
            ("METASYNC_RETRY_BASE", "100ms".to_owned()),
            ("METASYNC_RETRY_CAP", "2s".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            ("NO_COLOR", "1".to_owned()),
            ("METASYNC_METRICS_ADDR", "off".to_owned()),
        ]
    }

    fn command(
        &self,
        binary_name: &str,
        log_name: &str,
    ) -> anyhow::Result<tokio::process::Command> {
        let log = std::fs::File::create(self.log_dir.join(log_name))?;
        let mut cmd = tokio::process::Command::new(binary(binary_name)?);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.common_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        Ok(cmd)
    }

    async fn start_api(&mut self) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = self.command("metasync-api", "api.log")?;
        cmd.arg("serve")
            .env("METASYNC_API_ADDR", format!("127.0.0.1:{port}"))
            .env("METASYNC_JWT_SECRET", JWT_SECRET)
            .envs(api_custody_env());
        let child = cmd.spawn().context("starting metasync-api")?;
        let pid = child.id();
        self.api = Some(child);
        self.api_base = format!("http://127.0.0.1:{port}");
        let health = format!("{}/healthz", self.api_base);
        let http = self.http.clone();
        eventually(Duration::from_secs(60), "the API to answer", || {
            let (health, http) = (health.clone(), http.clone());
            async move {
                anyhow::ensure!(
                    pid.is_some_and(crate::process_alive),
                    "metasync-api exited (see api.log)"
                );
                let up = http
                    .get(&health)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                Ok(up.then_some(()))
            }
        })
        .await
    }

    fn start_worker(&mut self) -> anyhow::Result<()> {
        self.workers_started += 1;
        let n = self.workers_started;
        let mut cmd = self.command("metasync-worker", &format!("worker-{n}.log"))?;
        cmd.env("METASYNC_WORKER_NAME", format!("chaos{n}"))
            .env(
                "METASYNC_LEASE",
                format!("{}ms", self.settings.lease.as_millis()),
            )
            .env(
                "METASYNC_RECONCILE_EVERY",
                format!("{}ms", self.settings.reconcile_every.as_millis()),
            );
        self.workers
            .push(cmd.spawn().context("starting metasync-worker")?);
        Ok(())
    }

    /// Submits the batch, injects the fault, measures the recovery, stops everything and
    /// inspects what is left.
    async fn exercise(&mut self) -> anyhow::Result<Outcome> {
        let healed = match self.scenario {
            Scenario::ApiKilledAfterBatch => self
                .kill_api_after_batch()
                .await
                .context("killing the API after the batch")?,
            _ => {
                self.submit_batch().await.context("submitting the batch")?;
                self.note(format!("batch of {} submitted", self.settings.jobs));
                self.wait_for_flow().await?;
                self.inject().await.context("injecting the fault")?
            }
        };
        let heal_to_terminal = self.wait_all_terminal(healed).await;
        match heal_to_terminal {
            Some(t) => self.note(format!(
                "all terminal {:.1} s after healing",
                t.as_secs_f64()
            )),
            None => self.note("not all terminal by the deadline"),
        }
        if heal_to_terminal.is_some() {
            self.wait_queue_settled()
                .await
                .context("reading the queue's keys")?;
        }
        self.shutdown().await;
        self.note("workers and api stopped");
        self.inspect(heal_to_terminal).await
    }

    async fn submit_batch(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/syncs", self.api_base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(status.as_u16() == 202, "POST /v1/syncs: {status} {body}");
        anyhow::ensure!(
            body["jobs"] == self.settings.jobs,
            "POST /v1/syncs made {} jobs",
            body["jobs"]
        );
        Ok(())
    }

    /// Waits until a quarter of the batch is finished, or (attempts failing) is `retrying`.
    async fn wait_for_flow(&mut self) -> anyhow::Result<()> {
        let target = (self.settings.jobs as f64 * BEFORE_FAULT).ceil() as i64;
        let (what, states): (&str, &[&str]) = if self.scenario.failing() {
            ("retrying", &["retrying"])
        } else {
            ("terminal", &["succeeded", "failed", "cancelled"])
        };
        let db = self.db.clone();
        eventually(
            Duration::from_secs(300),
            &format!("{target} jobs {what} before the fault"),
            || {
                let db = db.clone();
                async move {
                    let n = count_in_states(&db, states).await?;
                    Ok((n >= target).then_some(()))
                }
            },
        )
        .await?;
        self.note(format!("{target}+ jobs {what}; injecting the fault"));
        Ok(())
    }

    /// Injects the scenario's fault and heals it; returns when it healed.
    async fn inject(&mut self) -> anyhow::Result<Instant> {
        match self.scenario {
            Scenario::RedisRestart { .. } => {
                self.redis.kill();
                self.note("redis killed (SIGKILL)");
                self.redis.start_again().await?;
                self.note("redis answering again");
                let Some(proxy) = &self.proxy else {
                    return Ok(Instant::now());
                };
                // Attempts keep failing across the restart, so retries are scheduled on the
                // restarted Redis too; the fault has healed once sources answer again.
                tokio::time::sleep(FAILING_AFTER_RESTART).await;
                proxy.set_mode(ProxyMode::Pass);
                self.note("sources accept connections again");
                Ok(Instant::now())
            }
            Scenario::RedisDown => {
                self.redis.kill();
                self.note("redis killed (SIGKILL)");
                // The outage itself: a duration by design, not a condition to wait for.
                tokio::time::sleep(self.settings.outage).await;
                self.redis.start_again().await?;
                self.note("redis answering again");
                Ok(Instant::now())
            }
            Scenario::CatalogDown => {
                self.catalog.stop("immediate").await?;
                self.note("catalog postgres stopped (-m immediate)");
                tokio::time::sleep(self.settings.outage).await;
                self.catalog.start_again().await?;
                self.note("catalog postgres answering again");
                Ok(Instant::now())
            }
            Scenario::RollingRestart => {
                let old = std::mem::take(&mut self.workers);
                for mut worker in old {
                    self.start_worker()?;
                    crate::signal(&worker, "TERM")?;
                    let exit = tokio::time::timeout(Duration::from_secs(60), worker.wait())
                        .await
                        .context("a worker did not exit within 60 s of SIGTERM")??;
                    self.note(format!("worker replaced; the old one exited with {exit}"));
                    anyhow::ensure!(exit.success(), "a SIGTERMed worker exited with {exit}");
                }
                Ok(Instant::now())
            }
            Scenario::ApiKilledAfterBatch => unreachable!("handled by kill_api_after_batch"),
        }
    }

    /// Pauses Redis writes, submits the batch, kills the API with SIGKILL as soon as the
    /// batch's jobs are committed (its push is then stuck behind the pause, and Redis drops a
    /// paused command whose client is gone), then unpauses Redis: every delivery must come
    /// from the reconciler.
    async fn kill_api_after_batch(&mut self) -> anyhow::Result<Instant> {
        let mut redis = self.redis_connection().await?;
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(120_000)
            .arg("WRITE")
            .query_async(&mut redis)
            .await?;
        let submit = {
            let request = self
                .http
                .post(format!("{}/v1/syncs", self.api_base))
                .bearer_auth(&self.token);
            tokio::spawn(async move { request.send().await })
        };
        let db = self.db.clone();
        let jobs = self.settings.jobs as i64;
        let committed = eventually(
            Duration::from_secs(120),
            "the batch's jobs to commit",
            || {
                let db = db.clone();
                async move {
                    let (n,): (i64,) = sqlx::query_as("select count(*) from jobs")
                        .fetch_one(&db)
                        .await?;
                    Ok((n >= jobs).then_some(()))
                }
            },
        )
        .await;
        if let Some(api) = &self.api {
            crate::signal(api, "KILL")?;
        }
        if let Some(mut api) = self.api.take() {
            api.wait().await?;
        }
        self.note(format!("{jobs} jobs committed; API killed (SIGKILL)"));
        let ready_before: u64 = redis::cmd("LLEN")
            .arg(Keys::new(&self.queue).ready(&TenantId::new(TENANT), Class::Manual))
            .query_async(&mut redis)
            .await?;
        let _: () = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut redis)
            .await?;
        let healed = Instant::now();
        committed?;
        let answered = submit.await?;
        self.note(format!(
            "redis unpaused ({ready_before} deliveries were in ready); the API's request ended with {}",
            match answered {
                Ok(r) => r.status().to_string(),
                Err(e) => format!("an error ({})", error_kind(&e)),
            }
        ));
        Ok(healed)
    }

    /// Polls the catalog until no job is unfinished; returns how long that took after
    /// `healed`, or `None` past the bound plus [`OVERTIME`]. Poll errors (the catalog still
    /// recovering) count as "not yet".
    async fn wait_all_terminal(&self, healed: Instant) -> Option<Duration> {
        let deadline = healed + self.settings.bound() + OVERTIME;
        loop {
            if let Ok(0) = count_in_states(&self.db, &["queued", "running", "retrying"]).await {
                return Some(healed.elapsed());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Once every job is terminal, deliveries may still be on their way out: a duplicate
    /// delivery deferred until its job's lease lapses sits in `delayed` until then, and is
    /// skipped and acknowledged when it comes due. Waits (at most the bound) until the queue
    /// holds nothing but the workers' registrations, and notes how long that took or what
    /// was left.
    async fn wait_queue_settled(&mut self) -> anyhow::Result<()> {
        let since = Instant::now();
        let keys = Keys::new(&self.queue);
        let deadline = since + self.settings.bound();
        loop {
            let (leftover, _) = self.queue_keys().await?;
            let deliveries: Vec<String> = leftover
                .into_iter()
                .filter(|k| !k.starts_with(&format!("{} ", keys.workers)))
                .collect();
            if deliveries.is_empty() {
                self.note(format!(
                    "queue settled (no delivery left) {:.1} s after all terminal",
                    since.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.note(format!(
                    "queue not settled {} s after all terminal: {deliveries:?}",
                    self.settings.bound().as_secs()
                ));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM to every worker and the API, each awaited (bounded by its grace and a margin);
    /// SIGKILL for one that does not exit.
    async fn shutdown(&mut self) {
        let mut processes: Vec<(String, tokio::process::Child)> = self
            .workers
            .drain(..)
            .enumerate()
            .map(|(i, c)| (format!("worker {}", i + 1), c))
            .collect();
        if let Some(api) = self.api.take() {
            processes.push(("api".to_owned(), api));
        }
        for (_, child) in &processes {
            let _ = crate::signal(child, "TERM");
        }
        for (name, mut child) in processes {
            match tokio::time::timeout(Duration::from_secs(40), child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => self.note(format!("{name} exited with {status} after SIGTERM")),
                _ => {
                    let _ = child.kill().await;
                    self.note(format!(
                        "{name} did not exit within 40 s of SIGTERM; killed"
                    ));
                }
            }
        }
    }

    async fn inspect(&mut self, heal_to_terminal: Option<Duration>) -> anyhow::Result<Outcome> {
        // The catalog may still be recovering from its own fault: retry the reads a while.
        let db = self.db.clone();
        let (states, attempts, stuck, stuck_count) =
            eventually(Duration::from_secs(60), "the catalog to answer", || {
                let db = db.clone();
                async move { Ok(final_counts(&db).await.ok()) }
            })
            .await?;
        let (leftover_keys, expiring_keys) = self
            .queue_keys()
            .await
            .context("reading the queue's keys at the end")?;
        let bound = self.settings.bound();
        let mut failures = Vec::new();
        match heal_to_terminal {
            None => failures.push(format!(
                "{stuck_count} jobs not terminal {} s after the fault healed",
                (bound + OVERTIME).as_secs()
            )),
            Some(t) if t > bound => failures.push(format!(
                "all terminal only {:.1} s after the fault healed (bound {} s)",
                t.as_secs_f64(),
                bound.as_secs()
            )),
            Some(_) => {}
        }
        if stuck_count > 0 && heal_to_terminal.is_some() {
            failures.push(format!("{stuck_count} jobs unfinished at the end"));
        }
        if !leftover_keys.is_empty() {
            failures.push(format!(
                "{} queue keys left after every process stopped",
                leftover_keys.len()
            ));
        }
        let total: i64 = states.values().sum();
        if total != self.settings.jobs as i64 {
            failures.push(format!(
                "{total} jobs in the catalog, {} expected",
                self.settings.jobs
            ));
        }
        if self.scenario == Scenario::RollingRestart {
            let retried: i64 = attempts
                .iter()
                .filter(|(n, _)| **n > 1)
                .map(|(_, c)| c)
                .sum();
            if retried > 0 {
                failures.push(format!("{retried} jobs needed a second attempt"));
            }
        }
        Ok(Outcome {
            scenario: self.scenario,
            jobs: self.settings.jobs,
            bound,
            heal_to_terminal,
            states,
            attempts,
            stuck,
            stuck_count,
            leftover_keys,
            expiring_keys,
            timeline: std::mem::take(&mut self.timeline),
            failures,
            logs: None,
        })
    }

    async fn redis_connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        // Generous timeouts: the machine may be loaded, and redis-rs's default response
        // timeout (500 ms) would fail the harness rather than the fleet.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let client = redis::Client::open(self.redis.url())?;
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Every key of the queue: without a TTL as `key (type, size: a few members …)`, with one
    /// as `key (ttl)`.
    async fn queue_keys(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let mut redis = self.redis_connection().await?;
        let pattern = Keys::new(&self.queue).pattern();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let (mut leftover, mut expiring) = (Vec::new(), Vec::new());
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut redis).await?;
            if ttl >= 0 {
                expiring.push(format!("{key} ({ttl} ms)"));
                continue;
            }
            let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await?;
            let size_command = match kind.as_str() {
                "list" => "LLEN",
                "set" => "SCARD",
                "zset" => "ZCARD",
                "hash" => "HLEN",
                _ => "STRLEN",
            };
            let size: i64 = redis::cmd(size_command)
                .arg(&key)
                .query_async(&mut redis)
                .await?;
            // A few members name the jobs whose deliveries were left, to look up in the logs.
            let sample = match kind.as_str() {
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(2).clone(),
                "set" => redis::cmd("SRANDMEMBER").arg(&key).arg(3).clone(),
                "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(2).clone(),
                _ => {
                    leftover.push(format!("{key} ({kind}, {size})"));
                    continue;
                }
            };
            let members: Vec<String> = sample.query_async(&mut redis).await?;
            leftover.push(format!("{key} ({kind}, {size}: {} …)", members.join(" ")));
        }
        Ok((leftover, expiring))
    }

    /// Stops what is still running (its servers go when the fleet is dropped); the catalog's
    /// server log joins the run's logs first.
    async fn cleanup(&mut self) {
        for mut worker in self.workers.drain(..) {
            let _ = worker.kill().await;
        }
        if let Some(mut api) = self.api.take() {
            let _ = api.kill().await;
        }
        let _ = std::fs::copy(
            self.catalog.log_path(),
            self.log_dir.join("catalog-postgres.log"),
        );
        self.db.close().await;
    }
}

/// A source database for [`run`]: one table, on the shared PostgreSQL, named like every test
/// database (`mstest_src_*`). Dropping it (`drop_database`) forces a checkpoint of the shared
/// server, which takes seconds to tens of seconds under load: create one per batch of runs.
pub async fn source_database() -> anyhow::Result<String> {
    create_source("create table t (id int);").await
}

async fn count_in_states(db: &PgPool, states: &[&str]) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("select count(*) from jobs where state = any($1)")
        .bind(states)
        .fetch_one(db)
        .await?;
    Ok(n)
}

type FinalCounts = (BTreeMap<String, i64>, BTreeMap<i32, i64>, Vec<String>, i64);

async fn final_counts(db: &PgPool) -> anyhow::Result<FinalCounts> {
    let states: Vec<(String, i64)> =
        sqlx::query_as("select state, count(*) from jobs group by state")
            .fetch_all(db)
            .await?;
    let attempts: Vec<(i32, i64)> =
        sqlx::query_as("select attempts, count(*) from jobs group by attempts")
            .fetch_all(db)
            .await?;
    let stuck: Vec<(Uuid, String, i32, Option<String>, bool)> = sqlx::query_as(
        "select id, state, attempts, worker_id, cancel_requested from jobs
         where state in ('queued', 'running', 'retrying') order by id limit 10",
    )
    .fetch_all(db)
    .await?;
    let stuck_count: i64 = states
        .iter()
        .filter(|(s, _)| matches!(s.as_str(), "queued" | "running" | "retrying"))
        .map(|(_, n)| n)
        .sum();
    Ok((
        states.into_iter().collect(),
        attempts.into_iter().collect(),
        stuck
            .into_iter()
            .map(|(id, state, attempts, worker, cancel)| {
                format!(
                    "{id} {state} attempts={attempts} worker={} cancel_requested={cancel}",
                    worker.unwrap_or_default()
                )
            })
            .collect(),
        stuck_count,
    ))
}

fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "connection closed"
    }
}
