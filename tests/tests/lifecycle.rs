//! A job lifecycle users can trust, proven on real processes, signals and services: retries
//! with backoff, permanent failures, single flight, cancel, crash recovery, poison jobs,
//! fencing of frozen workers, Redis loss, graceful shutdown, schedules and silent sources.
//! Every test starts processes, so they run one at a time; the one that flushes Redis does it
//! on a `redis-server` of its own.

use std::time::{Duration, Instant};

use metasync_shared::db::resources::Resource;
use metasync_shared::domain::ErrorClass;
use metasync_shared::ids::JobId;
use metasync_tests::{
    FaultProxy, ProxyMode, REDIS_URL, RedisServer, TestApp, assert_job, create_source, eventually,
    signal, spawn_app, spawn_app_with_redis, spawn_app_without_maintenance,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

static SERIAL: Mutex<()> = Mutex::const_new(());
const T: &str = "lifecycle";

async fn wait_until_running(app: &TestApp, job_id: &str, attempts: i32) -> String {
    eventually(Duration::from_secs(30), "the job to be running", || async {
        let (state, n, worker) = app.job_row(job_id).await?;
        Ok((state == "running" && n == attempts)
            .then_some(worker)
            .flatten())
    })
    .await
    .unwrap()
}

async fn sync_id(app: &TestApp, resource: &Resource) -> String {
    let job = app.sync(T, resource.id).await.unwrap();
    job.id.to_string()
}

/// A source reached through a proxy that stalls every new connection (a frozen or silent
/// server), registered as `name`.
async fn stalled_source(app: &TestApp, name: &str, extra: Value) -> (FaultProxy, Resource) {
    let source = create_source("create table t (id int);").await.unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    proxy.set_mode(ProxyMode::Stall);
    let resource = app
        .register_via(T, name, &source, proxy.port, extra)
        .await
        .unwrap();
    (proxy, resource)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_with_backoff_then_succeed() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    proxy.refuse_next(2);
    let policy = json!({ "retry_policy": { "base_ms": 200, "factor": 2.0, "cap_ms": 1000 } });
    let resource = app
        .register_via(T, "flaky", &source, proxy.port, policy)
        .await
        .unwrap();
    let _worker = app.spawn_worker().await;
    let job = sync_id(&app, &resource).await;
    let job = app
        .wait_for_job(T, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&job).succeeded().attempts(3);
    let history = app.attempts(T, job.id).await.unwrap();
    assert_eq!(history.len(), 3);
    for (i, attempt) in history.iter().enumerate() {
        assert_eq!(attempt.attempt, i as i32 + 1);
        if i < 2 {
            assert_eq!(
                attempt.error_class,
                Some(ErrorClass::Transient),
                "{attempt:?}"
            );
            // Full jitter: the wait is within [0, base * factor^(n-1)], plus pickup slack.
            let ceiling_ms = 200 * 2_i64.pow(i as u32);
            let finished = attempt.finished_at.expect("a failed attempt is closed");
            let gap = history[i + 1].started_at - finished;
            assert!(gap.num_milliseconds() >= 0, "{gap}");
            assert!(
                gap.num_milliseconds() <= ceiling_ms + 500,
                "attempt {}: waited {gap}",
                i + 1
            );
        } else {
            assert!(attempt.error.is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_ends_after_one_attempt() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let resource = app
        .register(T, "missing-db", "mstest_no_such_database")
        .await
        .unwrap();
    let _worker = app.spawn_worker().await;
    let job = sync_id(&app, &resource).await;
    let job = app
        .wait_for_job(T, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&job)
        .failed_permanently()
        .attempts(1)
        .error_contains("does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_attempts_ends_failed_with_the_last_error() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    proxy.set_mode(ProxyMode::Refuse);
    let policy = json!({ "retry_policy": { "base_ms": 50, "max_attempts": 3 } });
    let resource = app
        .register_via(T, "down", "postgres", proxy.port, policy)
        .await
        .unwrap();
    let _worker = app.spawn_worker().await;
    let job = sync_id(&app, &resource).await;
    let job = app
        .wait_for_job(T, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&job).failed_transiently().attempts(3);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(app.attempts(T, job.id).await.unwrap().len(), 3);
    assert_eq!(proxy.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sync_requests_make_exactly_one_job() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let resource = app.register(T, "hot", "postgres").await.unwrap();
    let path = format!("/v1/resources/{}/sync", resource.id);
    let requests = (0..50).map(|_| app.call(T, Method::POST, &path, None));
    let answers = futures::future::join_all(requests).await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for answer in answers {
        let (status, _, job) = answer.unwrap();
        match status {
            202 => {
                created += 1;
                assert_eq!(job["deduplicated"], false);
            }
            200 => assert_eq!(job["deduplicated"], true),
            other => panic!("sync answered {other}: {job}"),
        }
        ids.insert(job["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "every request saw the same job");
    let (count,): (i64,) = sqlx::query_as("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_job_never_runs() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let resource = app.register(T, "later", "postgres").await.unwrap();
    let job = sync_id(&app, &resource).await;
    let (status, _, cancelled) = app
        .call(T, Method::POST, &format!("/v1/jobs/{job}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let worker = app.spawn_worker().await;
    // The worker takes the delivery and drops it: Redis ends empty, the job never ran.
    eventually(
        Duration::from_secs(10),
        "the delivery to be dropped",
        || async {
            let drained = app.queue.depth().await? == (0, 0)
                && app.queue.missing(&[job.parse()?]).await?.len() == 1;
            Ok(drained.then_some(()))
        },
    )
    .await
    .unwrap();
    let (state, attempts, _) = app.job_row(&job).await.unwrap();
    assert_eq!((state.as_str(), attempts), ("cancelled", 0));
    let (status, content_type, _) = app
        .call(T, Method::POST, &format!("/v1/jobs/{job}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(
        (status, content_type.as_str()),
        (409, "application/problem+json")
    );
    // A cancelled job can be retried as a new, linked job.
    let (status, _, retried) = app
        .call(T, Method::POST, &format!("/v1/jobs/{job}/retry"), None)
        .await
        .unwrap();
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["retry_of"], job.as_str());
    let retried = app
        .wait_for_job(T, retried["id"].as_str().unwrap(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&retried).succeeded();
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_job_stops_and_writes_nothing() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let (proxy, resource) = stalled_source(&app, "slow", json!({})).await;
    let _worker = app.spawn_worker().await;
    let job = sync_id(&app, &resource).await;
    wait_until_running(&app, &job, 1).await;
    let (_, _, running) = app
        .call(T, Method::GET, &format!("/v1/jobs/{job}"), None)
        .await
        .unwrap();
    assert_eq!(running["progress"]["phase"], "scanning", "{running}");
    let (status, _, answer) = app
        .call(T, Method::POST, &format!("/v1/jobs/{job}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 202, "{answer}");
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&done).cancelled();
    proxy.release_stalled();
    let (tables,): (i64,) = sqlx::query_as("select count(*) from catalog_tables")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(tables, 0, "a cancelled scan writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_scan_loses_no_job() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let (proxy, resource) = stalled_source(&app, "victim", json!({})).await;
    let lease = [("METASYNC_LEASE", "2s")];
    let mut a = app.spawn_worker_process("doomed", &lease).unwrap();
    let job = sync_id(&app, &resource).await;
    let first = wait_until_running(&app, &job, 1).await;
    assert!(first.starts_with("doomed-"));
    signal(&a, "KILL").unwrap();
    a.wait().await.unwrap();
    let killed_at = Instant::now();
    proxy.set_mode(ProxyMode::Pass);
    let _b = app.spawn_worker_process("rescuer", &lease).unwrap();
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(60))
        .await
        .unwrap();
    let recovery = killed_at.elapsed();
    assert_job(&done).succeeded().attempts(2);
    let history = app.attempts(T, &job).await.unwrap();
    assert!(
        history[0].error.as_deref().unwrap().contains("lost"),
        "{history:?}"
    );
    assert!(history[1].worker.starts_with("rescuer-"), "{history:?}");
    println!(
        "kill -9 recovery: job succeeded {:.2} s after the kill (lease 2 s)",
        recovery.as_secs_f64()
    );
    assert!(
        recovery < Duration::from_secs(10),
        "recovery took {recovery:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_fails_after_max_attempts_and_stops_cycling() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let policy = json!({ "retry_policy": { "max_attempts": 2 } });
    let (_proxy, resource) = stalled_source(&app, "poison", policy).await;
    let lease = [("METASYNC_LEASE", "2s")];
    let job = sync_id(&app, &resource).await;
    // Every worker that takes the job dies with it.
    for attempt in 1..=2 {
        let mut worker = app
            .spawn_worker_process(&format!("victim{attempt}"), &lease)
            .unwrap();
        wait_until_running(&app, &job, attempt).await;
        signal(&worker, "KILL").unwrap();
        worker.wait().await.unwrap();
    }
    let survivor = app.spawn_worker_process("survivor", &lease).unwrap();
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(60))
        .await
        .unwrap();
    assert_job(&done)
        .failed()
        .attempts(2)
        .error_contains("lost");
    assert_eq!(app.attempts(T, &job).await.unwrap().len(), 2);
    signal(&survivor, "TERM").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_cannot_overwrite_the_newer_attempt() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let source = create_source("create table early (id int);").await.unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    proxy.set_mode(ProxyMode::Stall);
    let resource = app
        .register_via(T, "frozen", &source, proxy.port, json!({}))
        .await
        .unwrap();
    let metrics_port = free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let a = app
        .spawn_worker_process(
            "frozen",
            &[
                ("METASYNC_LEASE", "2s"),
                ("METASYNC_METRICS_ADDR", &metrics_addr),
            ],
        )
        .unwrap();
    let job = sync_id(&app, &resource).await;
    wait_until_running(&app, &job, 1).await;
    proxy.set_mode(ProxyMode::Pass); // later connections go through; A's stays stalled
    signal(&a, "STOP").unwrap();
    let b = app
        .spawn_worker_process("fresh", &[("METASYNC_LEASE", "2s")])
        .unwrap();
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(60))
        .await
        .unwrap();
    assert_job(&done).succeeded().attempts(2);
    // The source changes; the frozen attempt will read the new state when it resumes.
    let pool = sqlx::PgPool::connect(&metasync_tests::pg_url(&source))
        .await
        .unwrap();
    sqlx::query("create table late (id int)")
        .execute(&pool)
        .await
        .unwrap();
    signal(&a, "CONT").unwrap();
    proxy.release_stalled();
    let fenced = format!("http://{metrics_addr}/metrics");
    eventually(
        Duration::from_secs(30),
        "the frozen attempt to be fenced off",
        || async {
            let body = reqwest::get(&fenced).await?.text().await?;
            Ok(body
                .lines()
                .any(|l| l.starts_with("metasync_jobs_total{outcome=\"fenced\"} 1"))
                .then_some(()))
        },
    )
    .await
    .unwrap();
    let tables: Vec<(String,)> = sqlx::query_as("select name from catalog_tables order by name")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        tables,
        vec![("early".to_owned(),)],
        "the stale attempt's snapshot was not written"
    );
    let (state, attempts, worker) = app.job_row(&job).await.unwrap();
    assert_eq!((state.as_str(), attempts), ("succeeded", 2));
    assert!(worker.unwrap().starts_with("fresh-"));
    signal(&a, "TERM").unwrap();
    signal(&b, "TERM").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_with_100_queued_jobs_loses_none() {
    let _serial = SERIAL.lock().await;
    // A Redis of its own: FLUSHALL on the shared one would wipe other tests' queues.
    let redis = RedisServer::start().await.unwrap();
    let app = spawn_app_with_redis(&redis.url()).await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    app.insert_resources(T, &source, 100).await.unwrap();
    let (status, _, batch) = app.call(T, Method::POST, "/v1/syncs", None).await.unwrap();
    assert_eq!(status, 202, "{batch}");
    assert_eq!(batch["jobs"], 100);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(app.queue.depth().await.unwrap(), (0, 0));
    let _worker = app.spawn_worker().await;
    let batch_path = format!("/v1/batches/{}", batch["batch_id"].as_str().unwrap());
    let done = eventually(Duration::from_secs(120), "the batch to finish", || async {
        let (_, _, counts) = app.call(T, Method::GET, &batch_path, None).await?;
        Ok((counts["done"] == true).then_some(counts))
    })
    .await
    .unwrap();
    assert_eq!(done["by_state"], json!({ "succeeded": 100 }), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_busy_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    proxy.set_mode(ProxyMode::Stall);
    let mut job_ids = Vec::new();
    for i in 0..12 {
        let resource = app
            .register_via(T, &format!("busy-{i}"), &source, proxy.port, json!({}))
            .await
            .unwrap();
        job_ids.push(sync_id(&app, &resource).await);
    }
    let env = [
        ("METASYNC_WORKER_CONCURRENCY", "4"),
        ("METASYNC_SHUTDOWN_GRACE", "1s"),
    ];
    let mut a = app.spawn_worker_process("leaving", &env).unwrap();
    eventually(
        Duration::from_secs(30),
        "the leaving worker to be busy",
        || async {
            let (busy,): (i64,) =
                sqlx::query_as("select count(*) from jobs where state = 'running'")
                    .fetch_one(&app.db)
                    .await?;
            Ok((busy == 4).then_some(()))
        },
    )
    .await
    .unwrap();
    signal(&a, "TERM").unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(15), a.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit}");
    proxy.set_mode(ProxyMode::Pass);
    proxy.release_stalled();
    let _b = app.spawn_worker_process("staying", &[]).unwrap();
    for id in &job_ids {
        let job = app
            .wait_for_job(T, id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_job(&job).succeeded();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_fire_each_tick_once() {
    let _serial = SERIAL.lock().await;
    // The workers are the only candidates for maintenance leader, so they fire the schedules.
    let app = spawn_app_without_maintenance().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let mut resources = Vec::new();
    for i in 0..5 {
        let schedule = json!({ "schedule": { "interval_seconds": 1 } });
        let r = app
            .register_via(T, &format!("cron-{i}"), &source, 5432, schedule)
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&r.schedule).unwrap(),
            json!({ "interval_seconds": 1 })
        );
        resources.push(r.id);
    }
    let started = Instant::now();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            app.spawn_worker_process(&format!("sched-{i}"), &[])
                .unwrap()
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        "three ticks per resource",
        || async {
            let (min,): (Option<i64>,) = sqlx::query_as(
                "select min(n) from (select count(*) as n from jobs group by resource_id) c",
            )
            .fetch_one(&app.db)
            .await?;
            Ok((min.unwrap_or(0) >= 3 && resources.len() == 5).then_some(()))
        },
    )
    .await
    .unwrap();
    for w in &workers {
        signal(w, "TERM").unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select resource_id, count(*), count(distinct scheduled_for) from jobs group by resource_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    for (resource, jobs, ticks) in rows {
        assert_eq!(jobs, ticks, "resource {resource}: a tick fired twice");
        // One tick a second at most (plus the first at once), however many schedulers.
        assert!(
            jobs as f64 <= elapsed + 2.0,
            "resource {resource}: {jobs} jobs in {elapsed:.1} s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_source_fails_within_the_connect_timeout() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    proxy.set_mode(ProxyMode::Stall); // accepts TCP, then never says a word
    let policy = json!({ "retry_policy": { "max_attempts": 1 } });
    let resource = app
        .register_via(T, "silent", "postgres", proxy.port, policy)
        .await
        .unwrap();
    let _worker = app.spawn_worker().await; // connect timeout 3 s
    let job = sync_id(&app, &resource).await;
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&done).failed().error_contains("timed out");
    let took = done.finished_at.expect("a finished job") - done.started_at.expect("a started job");
    assert!(took.num_milliseconds() < 5_000, "took {took}");
    assert!(took.num_milliseconds() >= 2_900, "took {took}");
}

/// Live workers registered in this test's queue.
async fn live_workers(app: &TestApp) -> anyhow::Result<usize> {
    let client = redis::Client::open(REDIS_URL)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let n: usize = redis::cmd("ZCOUNT")
        .arg(&app.queue.keys().workers)
        .arg(now_ms)
        .arg("+inf")
        .query_async(&mut conn)
        .await?;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_whose_worker_dies_ends_cancelled() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let (_proxy, resource) = stalled_source(&app, "orphaned", json!({})).await;
    let lease_ms = 2_000;
    let lease = [("METASYNC_LEASE", "2s")];
    let mut doomed = app.spawn_worker_process("doomed", &lease).unwrap();
    let job = sync_id(&app, &resource).await;
    wait_until_running(&app, &job, 1).await;
    // The worker that must notice is up before the kill.
    let witness = app.spawn_worker_process("witness", &lease).unwrap();
    eventually(Duration::from_secs(30), "two live workers", || async {
        Ok((live_workers(&app).await? == 2).then_some(()))
    })
    .await
    .unwrap();
    let (status, _, answer) = app
        .call(T, Method::POST, &format!("/v1/jobs/{job}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["cancel_requested"], true, "{answer}");
    signal(&doomed, "KILL").unwrap();
    doomed.wait().await.unwrap();
    let killed_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "the job to end cancelled",
        || async {
            let (state, _, _) = app.job_row(&job).await?;
            Ok((state == "cancelled").then_some(()))
        },
    )
    .await
    .unwrap();
    let took = killed_at.elapsed();
    // The lease lapses at most one lease after the kill; the rescuer runs every heartbeat
    // (a third of the lease). The slack covers polling and a loaded machine.
    let bound = Duration::from_millis(lease_ms + lease_ms / 3 + 500);
    println!(
        "cancel + kill -9: job cancelled {:.2} s after the kill (lease 2 s)",
        took.as_secs_f64()
    );
    assert!(took <= bound, "cancelled {took:?} after the kill");
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(5))
        .await
        .unwrap();
    assert_job(&done).cancelled().attempts(1);
    let history = app.attempts(T, &job).await.unwrap();
    assert!(history[0].finished_at.is_some(), "{history:?}");
    assert!(
        history[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("lost"),
        "{history:?}"
    );
    let (status, _, next) = app
        .call(
            T,
            Method::POST,
            &format!("/v1/resources/{}/sync", resource.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "the resource takes new syncs again: {next}");
    assert_ne!(next["id"].as_str(), Some(done.id.to_string().as_str()));
    signal(&witness, "TERM").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_acts_on_the_state_the_job_has_when_it_is_locked() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let resource = app.register(T, "racing", "postgres").await.unwrap();
    let job = sync_id(&app, &resource).await;
    let job_id: JobId = job.parse().unwrap();
    metasync_shared::db::jobs::claim(&app.db, job_id, "racer", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    // The attempt fails as transient (running → retrying) in a transaction that commits
    // only once the cancel is waiting for the row: a cancel that decided from an earlier
    // read would answer 202 and set no flag, and the job would run again.
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query(
        "update jobs set state = 'retrying', next_attempt_at = now() + interval '1 hour',
                lease_expires_at = null
         where id = $1 and state = 'running'",
    )
    .bind(job_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    let cancel_path = format!("/v1/jobs/{job}/cancel");
    let cancel = app.call(T, Method::POST, &cancel_path, None);
    let commit = async {
        eventually(
            Duration::from_secs(10),
            "the cancel to wait for the row",
            || async {
                let (waiting,): (i64,) = sqlx::query_as(
                    "select count(*) from pg_stat_activity
                     where datname = current_database() and wait_event_type = 'Lock'",
                )
                .fetch_one(&app.db)
                .await?;
                Ok((waiting > 0).then_some(()))
            },
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(())
    };
    let (answer, committed) = tokio::join!(cancel, commit);
    committed.unwrap();
    let (status, _, body) = answer.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled", "{body}");
    let (state, _, _) = app.job_row(&job).await.unwrap();
    assert_eq!(state, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_long_after_start_still_gives_the_full_grace() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let (proxy, resource) = stalled_source(&app, "veteran", json!({})).await;
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let mut worker = app
        .spawn_worker_process("veteran", &[("METASYNC_SHUTDOWN_GRACE", "2s")])
        .unwrap();
    let job = sync_id(&app, &resource).await;
    wait_until_running(&app, &job, 1).await;
    // Up for longer than the grace before the signal: a deadline counted from start-up has
    // already passed by then.
    let up = grace + Duration::from_secs(1);
    tokio::time::sleep(up.saturating_sub(started.elapsed())).await;
    signal(&worker, "TERM").unwrap();
    let signalled = Instant::now();
    // The job needs part of the grace: its source answers only now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.release_stalled();
    let exit = tokio::time::timeout(grace + Duration::from_secs(2), worker.wait())
        .await
        .expect("the worker exits within grace + 2 s of SIGTERM")
        .unwrap();
    let took = signalled.elapsed();
    println!(
        "SIGTERM {:.1} s after start (grace 2 s): exited {:.2} s after the signal",
        (signalled - started).as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(exit.success(), "{exit}");
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(5))
        .await
        .unwrap();
    // The running job finished in its grace: one attempt.
    assert_job(&done).succeeded().attempts(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_attempt_is_recorded_as_transient_and_retried() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "panicky", &source).await.unwrap();
    let worker = app
        .spawn_worker_process(
            "panicky",
            &[
                ("METASYNC_LEASE", "2s"),
                ("METASYNC_TEST_FAULTS", "panic-in-attempt"),
            ],
        )
        .unwrap();
    let job = sync_id(&app, &resource).await;
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&done).succeeded().attempts(2);
    let history = app.attempts(T, &job).await.unwrap();
    assert_eq!(
        history[0].error_class,
        Some(ErrorClass::Transient),
        "{history:?}"
    );
    assert!(
        history[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("panicked"),
        "{history:?}"
    );
    // Retried after its backoff (at most 1 s here), well within lease + heartbeat.
    let gap = history[1].started_at - history[0].finished_at.expect("a closed attempt");
    assert!(gap.num_milliseconds() <= 2_667, "retried after {gap}");
    signal(&worker, "TERM").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_that_record_no_outcome_are_taken_over_within_a_lease() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "careless", &source).await.unwrap();
    // The first attempt panics outside the attempt's own catch, the second ends without
    // recording its outcome (as when that write fails); the process lives on throughout, so
    // only per-attempt leases let the job be taken over.
    let worker = app
        .spawn_worker_process(
            "careless",
            &[
                ("METASYNC_LEASE", "2s"),
                ("METASYNC_TEST_FAULTS", "panic-after-claim,lose-outcome"),
            ],
        )
        .unwrap();
    let job = sync_id(&app, &resource).await;
    let done = app
        .wait_for_job(T, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&done).succeeded().attempts(3);
    let history = app.attempts(T, &job).await.unwrap();
    for i in 0..2 {
        assert!(
            history[i]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("lost"),
            "{history:?}"
        );
        // Taken over once its lease (2 s from the claim, never renewed) lapsed: within
        // lease + one heartbeat of the attempt's start.
        let gap = history[i + 1].started_at - history[i].started_at;
        println!(
            "attempt {} taken over {:.2} s after it started (lease 2 s)",
            i + 1,
            gap.num_milliseconds() as f64 / 1000.0
        );
        assert!(gap.num_milliseconds() <= 2_667, "taken over after {gap}");
    }
    signal(&worker, "TERM").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_another_duty_is_stuck() {
    let _serial = SERIAL.lock().await;
    // The worker is the only candidate for maintenance leader, so the stuck schedule duty
    // runs in the same process as the lease renewals.
    let app = spawn_app_without_maintenance().await.unwrap();
    let (_proxy, resource) = stalled_source(&app, "steady", json!({})).await;
    let worker = app
        .spawn_worker_process("steady", &[("METASYNC_LEASE", "2s")])
        .unwrap();
    let job = sync_id(&app, &resource).await;
    let job_id = Uuid::parse_str(&job).unwrap();
    wait_until_running(&app, &job, 1).await;
    // The schedule duty reads `resources`; this lock stops it for three leases.
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("lock table resources in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the schedule duty to wait for the lock",
        || async {
            let (waiting,): (i64,) = sqlx::query_as(
                "select count(*) from pg_stat_activity
                 where datname = current_database() and wait_event_type = 'Lock'",
            )
            .fetch_one(&app.db)
            .await?;
            Ok((waiting > 0).then_some(()))
        },
    )
    .await
    .unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let (live,): (bool,) =
            sqlx::query_as("select lease_expires_at > now() from jobs where id = $1")
                .bind(job_id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert!(
            live,
            "the job's lease lapsed while the schedule duty was stuck"
        );
        assert_eq!(
            live_workers(&app).await.unwrap(),
            1,
            "the worker's Redis lease lapsed while the schedule duty was stuck"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.rollback().await.unwrap();
    let (state, attempts, _) = app.job_row(&job).await.unwrap();
    assert_eq!(
        (state.as_str(), attempts),
        ("running", 1),
        "never taken over"
    );
    signal(&worker, "TERM").unwrap();
}
