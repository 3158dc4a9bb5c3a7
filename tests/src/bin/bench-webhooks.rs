//! Webhooks must not slow syncs: sync throughput with a webhook receiver that never answers,
//! against the same run without webhooks.
//!
//! `cargo run --release -p metasync-tests --bin bench-webhooks -- [JOBS] [RUNS] [WORKERS]`
//! (defaults 2000 jobs, 3 runs per mode, 2 worker processes of concurrency 8).
//!
//! Each run registers JOBS resources on one tiny PostgreSQL source (one job each) and enqueues
//! them with one `POST /v1/syncs`; jobs/s is measured from the request to the last job
//! `succeeded`. In the `hanging` mode the tenant first registers a webhook for every event
//! (`job.succeeded`, `job.failed`, `catalog.changed`: two deliveries per job) whose receiver
//! accepts connections and never answers, so every delivery runs into its timeout while the
//! syncs run. Runs come in pairs, one of each mode, in alternating order (none first, then
//! hanging first, ...), so a drift of the machine's load hits both modes alike. It prints each
//! pair's ratio and the median of those ratios (the figure to quote: the two runs of a pair are
//! seconds apart), the medians per mode, and the worker processes' CPU per job (utime + stime
//! from /proc, the cost a hanging receiver could add to the syncs' processes) and the
//! PostgreSQL server's (where the outbox written in the job-ending transaction costs).

use std::time::Duration;

use anyhow::Context as _;
use metasync_tests::{REDIS_URL, TestApp, create_source, eventually, spawn_app};
use reqwest::Method;
use serde_json::json;

const TENANT: &str = "bench";

/// A TCP listener on loopback that accepts every connection and never answers (it holds the
/// sockets open until the process ends).
async fn hanging_receiver() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok(port)
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

struct Run {
    jobs_per_sec: f64,
    /// CPU time of the worker processes (user + system), per job.
    worker_cpu_ms_per_job: f64,
    /// CPU time of the PostgreSQL server's processes (catalog and source) while the jobs ran,
    /// per job: where the outbox trigger's cost shows.
    postgres_cpu_ms_per_job: f64,
    /// Delivery attempts made (all timed out) while the syncs ran.
    attempts: i64,
    /// Deliveries waiting at the end (the outbox the hanging receiver left behind).
    outstanding: i64,
}

async fn run_once(jobs: usize, workers: usize, hanging: bool) -> anyhow::Result<Run> {
    let app = spawn_app().await?;
    let source = create_source("create table t (id int primary key, v text);").await?;
    let tls = serde_json::from_value(json!({ "mode": "disable" }))?;
    metasync_tests::insert_resources_with_tls(
        &app.db, TENANT, "postgres", 5432, &source, "pw", jobs, &tls,
    )
    .await?;
    if hanging {
        let port = hanging_receiver().await?;
        let body = json!({
            "url": format!("http://127.0.0.1:{port}/hook"),
            "events": ["job.succeeded", "job.failed", "catalog.changed"],
            "secret": "bench-secret-0123456789abcdef",
        });
        let (status, _, hook) = app
            .call(TENANT, Method::POST, "/v1/webhooks", Some(body))
            .await?;
        anyhow::ensure!(status == 201, "webhook answered {status}: {hook}");
    }
    let database_url = format!("{}?sslmode=disable", app.database_url);
    let fleet: Vec<_> = (0..workers)
        .map(|i| {
            app.spawn_worker_process(
                &format!("bench-{i}"),
                &[
                    ("DATABASE_URL", database_url.as_str()),
                    ("METASYNC_WORKER_CONCURRENCY", "8"),
                    ("METASYNC_SOURCE_CONNECTIONS_PER_SERVER", "64"),
                ],
            )
        })
        .collect::<Result<_, _>>()?;
    wait_registered(&app, workers).await?;

    let postgres_before = postgres_cpu()?;
    let started = chrono::Utc::now();
    let (status, _, batch) = app.call(TENANT, Method::POST, "/v1/syncs", None).await?;
    anyhow::ensure!(status == 202, "batch answered {status}: {batch}");
    loop {
        let (done,): (i64,) =
            sqlx::query_as("select count(*) from jobs where state in ('succeeded', 'failed')")
                .fetch_one(&app.db)
                .await?;
        if done == jobs as i64 {
            break;
        }
        anyhow::ensure!(
            chrono::Utc::now() - started < chrono::TimeDelta::seconds(900),
            "timed out waiting for the jobs to finish"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (last_finished, failed): (chrono::DateTime<chrono::Utc>, i64) = sqlx::query_as(
        "select max(finished_at), count(*) filter (where state = 'failed') from jobs",
    )
    .fetch_one(&app.db)
    .await?;
    anyhow::ensure!(failed == 0, "{failed} jobs failed");
    let postgres_after = postgres_cpu()?;
    let postgres: Duration = postgres_after
        .iter()
        .map(|(pid, after)| {
            after.saturating_sub(postgres_before.get(pid).copied().unwrap_or_default())
        })
        .sum();
    let elapsed = (last_finished - started).to_std()?;
    let (attempts, outstanding): (i64, i64) = sqlx::query_as(
        "select (select count(*) from webhook_attempts)
                + (select count(*) from webhook_deliveries where state = 'delivering'),
                (select count(*) from webhook_deliveries
                 where state in ('pending', 'delivering'))",
    )
    .fetch_one(&app.db)
    .await?;
    // Read before the workers drain: their CPU while the syncs ran (the hanging lane included).
    let mut worker_cpu = Duration::ZERO;
    for w in &fleet {
        worker_cpu += process_cpu(w.id().context("a worker exited early")?)?;
    }
    for mut w in fleet {
        metasync_tests::signal(&w, "TERM")?;
        w.wait().await?;
    }
    let catalog = app
        .database_url
        .rsplit('/')
        .next()
        .context("catalog database name")?
        .to_owned();
    app.db.close().await;
    drop(app);
    metasync_tests::drop_database(&catalog).await?;
    metasync_tests::drop_database(&source).await?;
    Ok(Run {
        jobs_per_sec: jobs as f64 / elapsed.as_secs_f64(),
        worker_cpu_ms_per_job: worker_cpu.as_secs_f64() * 1000.0 / jobs as f64,
        postgres_cpu_ms_per_job: postgres.as_secs_f64() * 1000.0 / jobs as f64,
        attempts,
        outstanding,
    })
}

/// The CPU time so far of every PostgreSQL server process on the machine, by pid (a backend
/// that exits between two readings is missed; the pools keep theirs open through a run).
fn postgres_cpu() -> anyhow::Result<std::collections::HashMap<u32, Duration>> {
    let mut cpu = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "postgres");
        if is_postgres && let Ok(used) = process_cpu(pid) {
            cpu.insert(pid, used);
        }
    }
    Ok(cpu)
}

/// User + system CPU time of a process so far, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces), from field 3 (`state`).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a /proc stat line")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let per_second: u64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()?
            .stdout,
    )?
    .trim()
    .parse()?;
    Ok(Duration::from_millis(ticks * 1000 / per_second.max(1)))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args.get(1).map_or(Ok(2000), |s| s.parse())?;
    let runs: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let workers: usize = args.get(3).map_or(Ok(2), |s| s.parse())?;
    let (mut plain, mut hanging, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut plain_cpu, mut hanging_cpu) = (Vec::new(), Vec::new());
    let (mut plain_pg, mut hanging_pg) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let order = if run % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        let mut pair = [0.0; 2];
        for mode in order {
            let result = run_once(jobs, workers, mode).await?;
            println!(
                "run {run} {:<8} {:>8.1} jobs/s  worker cpu {:>5.2} ms/job  postgres cpu {:>5.2} ms/job  delivery attempts {:>5}  outstanding deliveries {:>5}",
                if mode { "hanging" } else { "none" },
                result.jobs_per_sec,
                result.worker_cpu_ms_per_job,
                result.postgres_cpu_ms_per_job,
                result.attempts,
                result.outstanding,
            );
            pair[usize::from(mode)] = result.jobs_per_sec;
            if mode {
                hanging.push(result.jobs_per_sec);
                hanging_cpu.push(result.worker_cpu_ms_per_job);
                hanging_pg.push(result.postgres_cpu_ms_per_job);
            } else {
                plain.push(result.jobs_per_sec);
                plain_cpu.push(result.worker_cpu_ms_per_job);
                plain_pg.push(result.postgres_cpu_ms_per_job);
            }
        }
        let ratio = pair[1] / pair[0];
        println!("run {run} ratio hanging/none {ratio:.3}");
        ratios.push(ratio);
    }
    println!(
        "median of the pairs' ratios (hanging/none): {:.3} ({:+.1}%) over {runs} pairs",
        median(ratios.clone()),
        (median(ratios) - 1.0) * 100.0
    );
    println!(
        "medians: no webhooks {:.1} jobs/s, {:.2} worker cpu ms/job, {:.2} postgres cpu ms/job; receiver never answers {:.1} jobs/s, {:.2} worker cpu ms/job, {:.2} postgres cpu ms/job",
        median(plain),
        median(plain_cpu),
        median(plain_pg),
        median(hanging),
        median(hanging_cpu),
        median(hanging_pg),
    );
    Ok(())
}
