//! Fairness benchmark: tenant A enqueues a large batch, then tenant B enqueues one sync at a
//! time while A's backlog drains. Reports how long B's jobs wait to be claimed (p50/p99 over
//! the repeats) and A's throughput, which fair scheduling must not cost.
//!
//! `cargo run --release -p metasync-tests --bin bench-fairness -- [A_JOBS] [REPEATS] [WORKERS]`
//! (defaults 20000, 20, 2 worker processes of the default concurrency). Compare with the FIFO
//! queue of an older build in one invocation:
//! `deploy/local/bench-compare.sh OLD_DIR NEW_DIR bench-fairness 20000 20 2`.
//!
//! It only talks HTTP to the API and SQL to the catalog, so the same file builds against the
//! previous commit (the unfair FIFO baseline).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use metasync_tests::{create_source, eventually, spawn_app};
use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const TENANT_A: &str = "bench-a";
const TENANT_B: &str = "bench-b";

async fn count(db: &PgPool, tenant: &str, states: &[&str]) -> anyhow::Result<i64> {
    let states: Vec<String> = states.iter().map(|s| (*s).to_owned()).collect();
    let (n,): (i64,) =
        sqlx::query_as("select count(*) from jobs where tenant_id = $1 and state::text = any($2)")
            .bind(tenant)
            .bind(&states)
            .fetch_one(db)
            .await?;
    Ok(n)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let a_jobs: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let repeats: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let workers: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);

    let app = spawn_app().await?;
    // The bench's own pool: the API's is busy with the batch, and on a loaded machine its
    // acquire timeout would end the run.
    let db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(300))
        .connect(&app.database_url)
        .await?;
    let source = create_source("create table t (id int primary key, v text);").await?;
    app.insert_resources(TENANT_A, &source, a_jobs).await?;
    let b_resources = app.insert_resources(TENANT_B, &source, repeats).await?;

    let mut fleet = Vec::new();
    for i in 0..workers {
        fleet.push(app.spawn_worker_process(&format!("fair-{i}"), &[])?);
    }
    // Let the workers register and warm up on B's first job before the clock starts.
    let warm = app
        .call(
            TENANT_B,
            Method::POST,
            &format!("/v1/resources/{}/sync", b_resources[0]),
            None,
        )
        .await?;
    anyhow::ensure!(warm.0 == 202, "warm-up sync answered {}", warm.0);
    eventually(Duration::from_secs(60), "the warm-up job", || async {
        Ok((count(&db, TENANT_B, &["succeeded"]).await? == 1).then_some(()))
    })
    .await?;

    let started = Instant::now();
    let (status, _, body) = app
        .call(TENANT_A, Method::POST, "/v1/syncs", Some(json!({})))
        .await?;
    anyhow::ensure!(status == 202, "batch answered {status}: {body}");

    // B syncs one resource at a time while A's backlog drains, and records how long each
    // waited between its creation and its claim.
    let mut waits_ms = Vec::new();
    let mut during_backlog = 0;
    for resource in b_resources.iter().skip(1).chain(b_resources.first()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if count(&db, TENANT_A, &["queued"]).await? > 0 {
            during_backlog += 1;
        }
        let (status, _, job) = app
            .call(
                TENANT_B,
                Method::POST,
                &format!("/v1/resources/{resource}/sync"),
                None,
            )
            .await?;
        anyhow::ensure!(status == 202, "sync answered {status}: {job}");
        let job_id: Uuid = job["id"].as_str().context("job id")?.parse()?;
        let wait: f64 = eventually(
            Duration::from_secs(600),
            "B's job to be claimed",
            || async {
                let row: Option<(f64,)> = sqlx::query_as(
                    "select extract(epoch from started_at - created_at)::float8 * 1000
                 from jobs where id = $1 and started_at is not null",
                )
                .bind(job_id)
                .fetch_optional(&db)
                .await?;
                Ok(row.map(|(ms,)| ms))
            },
        )
        .await?;
        waits_ms.push(wait);
    }
    eventually(
        Duration::from_secs(1_800),
        "A's backlog to drain",
        || async {
            Ok(
                (count(&db, TENANT_A, &["succeeded", "failed"]).await? == a_jobs as i64)
                    .then_some(()),
            )
        },
    )
    .await?;
    let drained = started.elapsed();
    let failed = count(&db, TENANT_A, &["failed"]).await?;

    waits_ms.sort_by(f64::total_cmp);
    let at = |q: usize| waits_ms[(waits_ms.len() * q).div_ceil(100).max(1) - 1];
    println!(
        "fairness: tenant A {a_jobs} jobs, {workers} workers: {:.1} jobs/s ({failed} failed); \
         tenant B claim wait over {} repeats ({during_backlog} while A had queued jobs): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        a_jobs as f64 / drained.as_secs_f64(),
        waits_ms.len(),
        at(50),
        at(99),
        waits_ms.last().copied().unwrap_or_default(),
    );

    for mut worker in fleet {
        if let Some(pid) = worker.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    }
    let catalog = app
        .database_url
        .rsplit('/')
        .next()
        .context("catalog database name")?
        .to_owned();
    db.close().await;
    app.db.close().await;
    drop(app);
    metasync_tests::drop_database(&catalog).await?;
    metasync_tests::drop_database(&source).await?;
    Ok(())
}
