//! Maintenance benchmark: a large backlog of unfinished jobs, 1 then 4 worker processes.
//!
//! `cargo run --release -p metasync-tests --bin bench-maintenance -- [JOBS] [SECONDS] [FLEETS]`
//! (defaults 100000 unfinished jobs, 60 s per phase, fleets `1,4`). Build the worker in
//! release first (`cargo build --release --bins`): the fleet is the real `metasync-worker`
//! binary, with its default settings (15 s lease, reconciler every 10 s, 8 slots), or the one
//! `BENCH_WORKER_BIN` names (e.g. a previous commit's release build, for a before/after).
//!
//! For each fleet size, on a fresh catalog database and queue (the in-process API does not
//! stand for maintenance leader, so the workers are the whole fleet):
//! 1. JOBS unfinished jobs are inserted directly: `retrying`, due in an hour, each with its
//!    delayed delivery in Redis (the steady state of a large retry backlog). No job is
//!    runnable, so every catalog statement the workers issue is maintenance: the phase
//!    counts the sqlx statement log lines of all workers (`RUST_LOG=sqlx::query=debug`, one
//!    line per statement, BEGIN/COMMIT included) over SECONDS and reports statements/s.
//! 2. A tenth of the jobs become `queued` and runnable against a tiny source, so the fleet
//!    scans at full speed while the reconciler still pages through the whole backlog; the
//!    phase runs SECONDS (the other jobs stay unfinished throughout).
//!
//! Then it reads each worker's `metasync_lease_renewal_lag_max_seconds` (the worst lateness of
//! a renewal against its schedule since the process started, per lease: `attempts`, `worker`,
//! `leader`) and reports the worst against a third of the lease, which is the margin a late
//! renewal eats into. The ratio of statements/s between fleets says whether maintenance grows
//! with the number of processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use metasync_shared::ids::{JobId, TenantId};
use metasync_shared::queue::Delivery;
use metasync_tests::{
    TestApp, create_source, drop_database, eventually, signal, spawn_app_without_maintenance,
};
use tokio::io::AsyncBufReadExt as _;
use uuid::Uuid;

const TENANT: &str = "bench";
/// The worker's default lease; renewals are due every third of it.
const LEASE: Duration = Duration::from_secs(15);

struct Fleet {
    workers: Vec<tokio::process::Child>,
    metrics: Vec<String>,
    statements: Arc<Statements>,
}

/// The fleet's statement log lines while counting is on, in all and by sqlx's summary (the
/// statement's first four words).
#[derive(Default)]
struct Statements {
    counting: AtomicBool,
    total: AtomicU64,
    by_summary: Mutex<HashMap<String, u64>>,
}

impl Statements {
    fn logged(&self, line: &str) {
        if !self.counting.load(Ordering::Relaxed) || !line.contains("sqlx::query") {
            return;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        // `summary="…"`, perhaps with colour codes around the name.
        let summary = line
            .split_once("summary")
            .and_then(|(_, rest)| rest.split('"').nth(1))
            .unwrap_or("?")
            .to_owned();
        *self
            .by_summary
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(summary)
            .or_default() += 1;
    }
}

fn free_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

/// Starts `n` workers (`program`) with default settings, counting their statement log lines.
fn start_fleet(app: &TestApp, program: &Path, n: usize) -> anyhow::Result<Fleet> {
    let statements = Arc::new(Statements::default());
    let mut workers = Vec::new();
    let mut metrics = Vec::new();
    for i in 0..n {
        let addr = free_addr()?;
        let mut child = app
            .process_command(program)
            .env("METASYNC_WORKER_NAME", format!("bench-{i}"))
            .env("METASYNC_METRICS_ADDR", &addr)
            .env("RUST_LOG", "warn,sqlx::query=debug")
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("the worker's stderr")?;
        let counter = statements.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                counter.logged(&line);
            }
        });
        workers.push(child);
        metrics.push(addr);
    }
    Ok(Fleet {
        workers,
        metrics,
        statements,
    })
}

/// The worst `metasync_lease_renewal_lag_max_seconds` of each lease across the fleet.
async fn worst_lags(fleet: &Fleet) -> anyhow::Result<Vec<(String, f64)>> {
    let mut worst: Vec<(String, f64)> = Vec::new();
    for addr in &fleet.metrics {
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await?
            .text()
            .await?;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("metasync_lease_renewal_lag_max_seconds{lease=\"")
            else {
                continue;
            };
            let Some((lease, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let value: f64 = value.trim().parse()?;
            match worst.iter_mut().find(|(l, _)| l == lease) {
                Some((_, w)) => *w = w.max(value),
                None => worst.push((lease.to_owned(), value)),
            }
        }
    }
    worst.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(worst)
}

/// Inserts `jobs` resources on `source` and one `retrying` job each, due in an hour, with its
/// delayed delivery in Redis. Returns the job ids.
async fn backlog(app: &TestApp, source: &str, jobs: usize) -> anyhow::Result<Vec<Uuid>> {
    let resources = app.insert_resources(TENANT, source, jobs).await?;
    let ids: Vec<Uuid> = (0..jobs).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "insert into jobs (id, tenant_id, resource_id, state, attempts, next_attempt_at)
         select id, $1, resource_id, 'retrying', 1, now() + interval '1 hour'
         from unnest($2::uuid[], $3::uuid[]) as j (id, resource_id)",
    )
    .bind(TENANT)
    .bind(&ids)
    .bind(&resources)
    .execute(&app.db)
    .await?;
    let keys = app.queue.keys();
    let due = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let mut conn = redis::Client::open(app.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    for chunk in ids.chunks(1_000) {
        let job_ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
        let payloads = payloads(chunk);
        let scored: Vec<(i64, &String)> = payloads.iter().map(|p| (due, p)).collect();
        let _: () = redis::pipe()
            .atomic()
            .sadd(&keys.pending, &job_ids)
            .ignore()
            .zadd_multiple(&keys.delayed, &scored)
            .ignore()
            .query_async(&mut conn)
            .await?;
    }
    Ok(ids)
}

/// Makes `ids` runnable now: `queued`, their deliveries moved from `delayed` to `ready`.
async fn make_runnable(app: &TestApp, ids: &[Uuid]) -> anyhow::Result<()> {
    sqlx::query(
        "update jobs set state = 'queued', attempts = 0, next_attempt_at = null
         where id = any($1)",
    )
    .bind(ids)
    .execute(&app.db)
    .await?;
    let mut conn = redis::Client::open(app.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    for chunk in ids.chunks(1_000) {
        let _: () = redis::pipe()
            .zrem(&app.queue.keys().delayed, payloads(chunk))
            .ignore()
            .query_async(&mut conn)
            .await?;
        // Through the queue, so each lands in its tenant's list and wakes the workers.
        app.queue.push(&deliveries(chunk)).await?;
    }
    Ok(())
}

/// Manual deliveries of `ids` for the bench's tenant.
fn deliveries(ids: &[Uuid]) -> Vec<Delivery> {
    ids.iter()
        .map(|id| Delivery::manual(JobId(*id), TenantId::new(TENANT)))
        .collect()
}

/// How `ids`' deliveries are stored in Redis.
fn payloads(ids: &[Uuid]) -> Vec<String> {
    deliveries(ids).iter().map(Delivery::payload).collect()
}

async fn count_where(app: &TestApp, condition: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from jobs where {condition}"
    )))
    .fetch_one(&app.db)
    .await?)
}

struct Run {
    statements_per_sec: f64,
    /// Statements/s by summary, most frequent first.
    by_summary: Vec<(String, f64)>,
    lags: Vec<(String, f64)>,
    succeeded: i64,
    unfinished: i64,
}

async fn run(jobs: usize, seconds: u64, program: &Path, workers: usize) -> anyhow::Result<Run> {
    let app = spawn_app_without_maintenance().await?;
    let source = create_source("create table t (id int primary key, v text);").await?;
    let ids = backlog(&app, &source, jobs).await?;
    let mut fleet = start_fleet(&app, program, workers)?;
    eventually(
        Duration::from_secs(30),
        "the workers to register",
        || async {
            let mut conn = redis::Client::open(app.redis_url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let registered: usize = redis::cmd("ZCARD")
                .arg(&app.queue.keys().workers)
                .query_async(&mut conn)
                .await?;
            Ok((registered >= workers).then_some(()))
        },
    )
    .await?;
    // Past start-up (migrations, first reconcile pass), then count one window.
    tokio::time::sleep(Duration::from_secs(12)).await;
    fleet.statements.counting.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    fleet.statements.counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let statements_per_sec = fleet.statements.total.load(Ordering::Relaxed) as f64 / elapsed;
    let mut by_summary: Vec<(String, f64)> = fleet
        .statements
        .by_summary
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(summary, n)| (summary.clone(), *n as f64 / elapsed))
        .collect();
    by_summary.sort_by(|a, b| b.1.total_cmp(&a.1));

    make_runnable(&app, &ids[..jobs / 10]).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let lags = worst_lags(&fleet).await?;
    let succeeded = count_where(&app, "state = 'succeeded'").await?;
    let unfinished = count_where(&app, "state in ('queued', 'running', 'retrying')").await?;

    for worker in &fleet.workers {
        signal(worker, "TERM")?;
    }
    for worker in &mut fleet.workers {
        worker.wait().await?;
    }
    let keys = app.queue_keys().await?;
    if !keys.is_empty() {
        let mut conn = redis::Client::open(app.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
    }
    let catalog = app
        .database_url
        .rsplit('/')
        .next()
        .context("catalog database name")?
        .to_owned();
    app.db.close().await;
    drop(app);
    drop_database(&catalog).await?;
    drop_database(&source).await?;
    Ok(Run {
        statements_per_sec,
        by_summary,
        lags,
        succeeded,
        unfinished,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let fleets: Vec<usize> = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("1,4")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("fleets: a comma-separated list of worker counts such as 1,4")?;
    // Another build's worker (e.g. the previous commit's) to compare against.
    let program = match std::env::var_os("BENCH_WORKER_BIN") {
        Some(path) => PathBuf::from(path),
        None => metasync_tests::binary("metasync-worker")?,
    };
    println!("worker binary: {}", program.display());
    println!(
        "bench-maintenance: {jobs} unfinished jobs, {seconds} s idle backlog + {seconds} s with {} runnable; lease {LEASE:?}, so renewals are due every {:?}",
        jobs / 10,
        LEASE / 3
    );
    let mut first: Option<f64> = None;
    for workers in fleets {
        let run = run(jobs, seconds, &program, workers).await?;
        let baseline = *first.get_or_insert(run.statements_per_sec);
        let lags: Vec<String> = run
            .lags
            .iter()
            .map(|(lease, lag)| format!("{lease} {lag:.3} s"))
            .collect();
        let worst = run.lags.iter().map(|(_, lag)| *lag).fold(0.0, f64::max);
        println!(
            "workers={workers}: maintenance {:.2} catalog statements/s ({:.2}x the first fleet); worst lease renewal lag {worst:.3} s = {:.1}% of a third of the lease ({}); then {} jobs succeeded, {} still unfinished",
            run.statements_per_sec,
            run.statements_per_sec / baseline,
            worst * 100.0 / (LEASE / 3).as_secs_f64(),
            lags.join(", "),
            run.succeeded,
            run.unfinished,
        );
        for (summary, rate) in &run.by_summary {
            println!("    {rate:>7.2}/s  {summary}");
        }
    }
    Ok(())
}
