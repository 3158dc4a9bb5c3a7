//! Control-plane benchmark: many tiny jobs end to end, with 1, 2 and 4 worker processes.
//!
//! `cargo run --release -p metasync-tests --bin bench-jobs -- [JOBS] [RUNS] [postgres|mysql] [FLEETS]`
//! (defaults 10000 jobs, 3 runs per fleet, PostgreSQL sources, fleets `2fresh,1,2,4`: a fleet is
//! a worker count, and `fresh` makes every job open its own source connection, the baseline that
//! parked-connection reuse is measured against).
//!
//! For each fleet size it registers JOBS resources on one tiny source database (one job each,
//! so single flight merges none), enqueues them with one `POST /v1/syncs`, and reports:
//! - jobs/s from the enqueue request to the last job `succeeded` in PostgreSQL;
//! - pickup latency (claim − creation) p50/p99 on an idle fleet, over 200 sequential jobs;
//! - Redis commands per job (`INFO commandstats`, all commands, heartbeats included);
//! - catalog PostgreSQL statements per job (a separate run that counts the workers' sqlx
//!   statement log lines; source statements are reported by the jobs themselves).
//!
//! Every resource lives on one source server, so the per-server connection cap
//! (`METASYNC_SOURCE_CONNECTIONS_PER_SERVER`, default 4) is raised to the fleet's concurrency
//! (lifted for `fresh` fleets): this measures the control plane, not the cap.
//!
//! Without TLS unless `BENCH_TLS=1` (sources at `tls: disable`, the workers' catalog URL at
//! `sslmode=disable`), so it compares the control plane with builds that had no TLS.
//!
//! Medians over RUNS runs. As a baseline it first measures how many fresh connections per
//! second the source server accepts (each job opens one), since that bounds the whole run.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metasync_tests::{REDIS_URL, TestApp, create_source, eventually, spawn_app};
use reqwest::Method;
use tokio::io::AsyncBufReadExt as _;

const TENANT: &str = "bench";

async fn redis_calls() -> anyhow::Result<u64> {
    let client = redis::Client::open(REDIS_URL)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum())
}

async fn succeeded(app: &TestApp) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("select count(*) from jobs where state = 'succeeded'")
        .fetch_one(&app.db)
        .await?;
    Ok(n)
}

async fn wait_registered(app: &TestApp, workers: usize) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), "workers to register", || async {
        let client = redis::Client::open(REDIS_URL)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let n: usize = redis::cmd("ZCARD")
            .arg(&app.queue.keys().workers)
            .query_async(&mut conn)
            .await?;
        Ok((n >= workers).then_some(()))
    })
    .await
}

/// Busy CPU seconds of the whole machine so far (all cores; `/proc/stat`, 100 ticks/s).
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .context("empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Ok(busy as f64 / 100.0)
}

struct Run {
    jobs_per_sec: f64,
    cpu_ms_per_job: f64,
    redis_per_job: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A tiny source database on the chosen engine, and the resources pointing at it. Returns a
/// clean-up for the end of the run.
async fn tiny_sources(app: &TestApp, engine: &str, jobs: usize) -> anyhow::Result<Cleanup> {
    match engine {
        "mysql" => {
            let db = format!("mstest_bench_{}", uuid::Uuid::now_v7().simple());
            let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test").await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "create database `{db}`; create table `{db}`.t (id int primary key, v text)"
            )))
            .execute(&admin)
            .await?;
            metasync_tests::insert_resources_with_tls(
                &app.db,
                TENANT,
                "mysql",
                3306,
                &db,
                "",
                jobs,
                &source_tls(),
            )
            .await?;
            Ok(Cleanup::Mysql(db))
        }
        _ => {
            let source = create_source("create table t (id int primary key, v text);").await?;
            metasync_tests::insert_resources_with_tls(
                &app.db,
                TENANT,
                "postgres",
                5432,
                &source,
                "pw",
                jobs,
                &source_tls(),
            )
            .await?;
            Ok(Cleanup::Postgres(source))
        }
    }
}

/// Whether the run encrypts (`BENCH_TLS=1`): sources at `tls: prefer` and the workers'
/// catalog URL at its default (`sslmode=prefer`), both TLS on a server with `ssl=on`. Off by
/// default, so the bench compares the control plane with builds that had no TLS (a70ccfa);
/// run it with `BENCH_TLS=1` to price encryption separately.
fn tls_on() -> bool {
    std::env::var("BENCH_TLS").is_ok_and(|v| v == "1")
}

fn source_tls() -> metasync_shared::tls::SourceTls {
    if tls_on() {
        metasync_shared::tls::SourceTls::default()
    } else {
        serde_json::from_value(serde_json::json!({ "mode": "disable" })).expect("a valid mode")
    }
}

/// The workers' catalog URL: TLS as [`tls_on`] says.
fn worker_database_url(app: &TestApp) -> String {
    if tls_on() {
        app.database_url.clone()
    } else {
        format!("{}?sslmode=disable", app.database_url)
    }
}

/// A run's source database, dropped with its catalog database when the run ends.
enum Cleanup {
    Postgres(String),
    Mysql(String),
}

impl Cleanup {
    async fn run(self, app: TestApp) -> anyhow::Result<()> {
        let catalog = app
            .database_url
            .rsplit('/')
            .next()
            .context("catalog database name")?
            .to_owned();
        app.db.close().await;
        drop(app);
        metasync_tests::drop_database(&catalog).await?;
        match self {
            Self::Postgres(source) => metasync_tests::drop_database(&source).await,
            Self::Mysql(db) => {
                let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test").await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database `{db}`")))
                    .execute(&admin)
                    .await?;
                Ok(())
            }
        }
    }
}

/// Fresh connections per second the source server accepts, each running one query: the
/// ceiling for jobs that each open a connection.
async fn connection_rate(engine: &str) -> anyhow::Result<f64> {
    use sqlx::{ConnectOptions as _, Connection as _};
    const N: usize = 300;
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.to_owned();
            tokio::spawn(async move {
                for _ in 0..N / 4 {
                    if engine == "mysql" {
                        let opts = sqlx::mysql::MySqlConnectOptions::new()
                            .host("127.0.0.1")
                            .username("root")
                            .database("test")
                            .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
                        let mut c = opts.connect().await?;
                        sqlx::query("select 1").execute(&mut c).await?;
                        c.close().await?;
                    } else {
                        let opts = sqlx::postgres::PgConnectOptions::new()
                            .host("127.0.0.1")
                            .username("root")
                            .database("postgres")
                            .ssl_mode(sqlx::postgres::PgSslMode::Disable);
                        let mut c = opts.connect().await?;
                        sqlx::query("select 1").execute(&mut c).await?;
                        c.close().await?;
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(N as f64 / started.elapsed().as_secs_f64())
}

/// A fleet to measure: its size, and whether each job opens a fresh source connection
/// (`METASYNC_SOURCE_IDLE=0s`, the baseline) instead of reusing parked ones.
#[derive(Clone, Copy)]
struct Fleet {
    workers: usize,
    fresh: bool,
}

impl std::str::FromStr for Fleet {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (n, fresh) = match s.strip_suffix("fresh") {
            Some(n) => (n, true),
            None => (s, false),
        };
        Ok(Self {
            workers: n.parse().context("fleet size")?,
            fresh,
        })
    }
}

async fn run_once(jobs: usize, fleet: Fleet, engine: &str) -> anyhow::Result<Run> {
    let app = spawn_app().await?;
    let cleanup = tiny_sources(&app, engine, jobs).await?;
    let idle = if fleet.fresh { "0s" } else { "5s" };
    // The worker's default concurrency unless BENCH_CONCURRENCY says otherwise. On 2 cores,
    // 16 jobs in flight in all is about the best; more only adds context switches.
    let concurrency = std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "8".to_owned());
    let workers = fleet.workers;
    let database_url = worker_database_url(&app);
    // All sources are on one server: let every slot of the fleet hold a connection to it. A
    // `fresh` fleet opens a connection per job, and a closed connection's permit is held
    // 100 ms more (until the server has ended the session), so it runs uncapped: it is the
    // baseline of connection cost, not a measure of the cap.
    let per_server = if fleet.fresh {
        "0".to_owned()
    } else {
        (workers * concurrency.parse::<usize>().unwrap_or(8)).to_string()
    };
    let fleet: Vec<_> = (0..workers)
        .map(|i| {
            app.spawn_worker_process(
                &format!("bench-{i}"),
                &[
                    ("DATABASE_URL", database_url.as_str()),
                    ("METASYNC_WORKER_CONCURRENCY", concurrency.as_str()),
                    ("METASYNC_SOURCE_IDLE", idle),
                    (
                        "METASYNC_SOURCE_CONNECTIONS_PER_SERVER",
                        per_server.as_str(),
                    ),
                ],
            )
        })
        .collect::<Result<_, _>>()?;
    wait_registered(&app, workers).await?;

    let redis_before = redis_calls().await?;
    let cpu_before = machine_busy_seconds()?;
    let started = chrono::Utc::now();
    let (status, _, batch) = app.call(TENANT, Method::POST, "/v1/syncs", None).await?;
    anyhow::ensure!(status == 202, "batch answered {status}: {batch}");
    // The end is read from the jobs themselves, so the observer can poll gently and take
    // almost no CPU from the fleet it measures.
    loop {
        if succeeded(&app).await? == jobs as i64 {
            break;
        }
        anyhow::ensure!(
            chrono::Utc::now() - started < chrono::TimeDelta::seconds(900),
            "timed out waiting for the jobs to finish"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cpu_ms_per_job = (machine_busy_seconds()? - cpu_before) * 1000.0 / jobs as f64;
    let (last_finished,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("select max(finished_at) from jobs")
            .fetch_one(&app.db)
            .await?;
    let elapsed = (last_finished - started).to_std()?;
    let redis_per_job = (redis_calls().await? - redis_before) as f64 / jobs as f64;

    // Idle pickup: one job at a time on the now idle fleet.
    let resource: (uuid::Uuid,) = sqlx::query_as("select id from resources limit 1")
        .fetch_one(&app.db)
        .await?;
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let job = app.sync(TENANT, &resource.0.to_string()).await?;
        let id = job.id.to_string();
        app.wait_for_job(TENANT, &id, Duration::from_secs(30))
            .await?;
        let (ms,): (f64,) = sqlx::query_as(
            "select (extract(epoch from (started_at - created_at)) * 1000)::float8 from jobs where id = $1",
        )
        .bind(uuid::Uuid::parse_str(&id)?)
        .fetch_one(&app.db)
        .await?;
        latencies.push(ms);
    }
    latencies.sort_by(f64::total_cmp);
    for mut w in fleet {
        metasync_tests::signal(&w, "TERM")?;
        w.wait().await?;
    }
    cleanup.run(app).await?;
    Ok(Run {
        jobs_per_sec: jobs as f64 / elapsed.as_secs_f64(),
        cpu_ms_per_job,
        redis_per_job,
        p50_ms: latencies[latencies.len() / 2],
        p99_ms: latencies[latencies.len() * 99 / 100 - 1],
    })
}

/// Counts the catalog statements one worker issues per job, from sqlx's statement log.
async fn catalog_statements_per_job(jobs: usize, engine: &str) -> anyhow::Result<f64> {
    let app = spawn_app().await?;
    let cleanup = tiny_sources(&app, engine, jobs).await?;
    let mut cmd = tokio::process::Command::new(metasync_tests::binary("metasync-worker")?);
    cmd.env("DATABASE_URL", worker_database_url(&app))
        .env("REDIS_URL", REDIS_URL)
        .env("METASYNC_QUEUE", &app.queue_name)
        .env(
            "METASYNC_OPENING_KEYS",
            &metasync_tests::test_master_key().0,
        )
        .env(
            "METASYNC_OUTBOUND_ALLOW",
            metasync_tests::TEST_OUTBOUND_ALLOW,
        )
        .env("METASYNC_RECONCILE_EVERY", "1h")
        // One server for every source; the default cap would throttle the default slots.
        .env("METASYNC_SOURCE_CONNECTIONS_PER_SERVER", "0")
        .env("RUST_LOG", "warn,sqlx::query=debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let mut worker = cmd.spawn()?;
    let stderr = worker.stderr.take().context("stderr")?;
    let counter = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut n = 0u64;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("sqlx::query") {
                n += 1;
            }
        }
        n
    });
    wait_registered(&app, 1).await?;
    // Let start-up and idle ticks settle, then count only the jobs' window.
    let (status, _, _) = app.call(TENANT, Method::POST, "/v1/syncs", None).await?;
    anyhow::ensure!(status == 202);
    eventually(Duration::from_secs(300), "the jobs to finish", || async {
        Ok((succeeded(&app).await? == jobs as i64).then_some(()))
    })
    .await?;
    metasync_tests::signal(&worker, "TERM")?;
    worker.wait().await?;
    let total = counter.await?;
    cleanup.run(app).await?;
    Ok(total as f64 / jobs as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let engine = args.get(3).map(String::as_str).unwrap_or("postgres");
    let fleets: Vec<Fleet> = args
        .get(4)
        .map(String::as_str)
        .unwrap_or("2fresh,1,2,4")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("fleets: a comma-separated list such as 2fresh,1,2,4")?;
    anyhow::ensure!(
        matches!(engine, "postgres" | "mysql"),
        "engine must be postgres or mysql"
    );
    println!("bench-jobs: {jobs} tiny {engine} jobs per run, {runs} runs per fleet size (medians)");
    let ceiling = connection_rate(engine).await?;
    println!(
        "baseline: the source server accepts {ceiling:.0} fresh connections/s (4 clients, one query each)"
    );
    let mut baseline = None;
    for fleet in fleets {
        let mut results = Vec::new();
        for _ in 0..runs {
            results.push(run_once(jobs, fleet, engine).await?);
        }
        let rate = median(results.iter().map(|r| r.jobs_per_sec).collect());
        let baseline_rate = *baseline.get_or_insert(rate);
        let (workers, connections) = (fleet.workers, if fleet.fresh { "fresh" } else { "reused" });
        println!(
            "workers={workers} ({connections} source connections): {rate:.0} jobs/s end to end ({:.2}x the first fleet, {:.2}x the connection ceiling); machine CPU {:.2} ms/job; idle pickup p50 {:.2} ms, p99 {:.2} ms; redis {:.1} commands/job",
            rate / baseline_rate,
            rate / ceiling,
            median(results.iter().map(|r| r.cpu_ms_per_job).collect()),
            median(results.iter().map(|r| r.p50_ms).collect()),
            median(results.iter().map(|r| r.p99_ms).collect()),
            median(results.iter().map(|r| r.redis_per_job).collect()),
        );
    }
    let statements = catalog_statements_per_job(jobs.min(1_000), engine).await?;
    println!(
        "catalog PostgreSQL statements per job (1 worker, includes BEGIN/COMMIT and background ticks): {statements:.1}"
    );
    Ok(())
}
