//! What users and operators see while a service the fleet depends on is down or misbehaves,
//! on real processes and private servers (a [`PostgresServer`] or [`RedisServer`] of each
//! test's own, never the shared ones): the API answers 503 at once while the catalog database
//! is down and recovers with it; its first push after a Redis restart is not lost; workers
//! warn once per period while Redis is down; a silent source fails within its statement
//! timeout; a source server never sees more connections than the per-server cap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metasync_shared::domain::ErrorClass;
use metasync_tests::{
    FaultProxy, JWT_SECRET, PostgresServer, ProxyMode, REDIS_URL, RedisServer, TEST_OUTBOUND_ALLOW,
    admin_token, api_custody_env, assert_job, binary, capture_stderr, create_source, eventually,
    free_port, pg_url, queue_name, spawn_app, spawn_app_with, spawn_app_with_redis, test_jwt,
};
use reqwest::Method;
use serde_json::json;

const T: &str = "outages";

/// The real `metasync-api` binary on a free port, its stderr captured.
struct ApiProcess {
    base: String,
    child: tokio::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
    token: String,
}

impl ApiProcess {
    async fn start(database_url: &str) -> Self {
        let port = free_port().unwrap();
        let mut child = tokio::process::Command::new(binary("metasync-api").unwrap())
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", REDIS_URL)
            .env("METASYNC_QUEUE", queue_name())
            .envs(api_custody_env())
            .env("METASYNC_OUTBOUND_ALLOW", TEST_OUTBOUND_ALLOW)
            .env("METASYNC_JWT_SECRET", JWT_SECRET)
            .env("METASYNC_API_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env("METASYNC_METRICS_ADDR", "off")
            .env("METASYNC_LOG_FORMAT", "json")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = capture_stderr(&mut child);
        let api = Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            stderr,
            http: reqwest::Client::new(),
            token: admin_token(&test_jwt(), T),
        };
        eventually(Duration::from_secs(20), "the API to listen", || async {
            Ok(api
                .http
                .get(format!("{}/healthz", api.base))
                .send()
                .await
                .is_ok()
                .then_some(()))
        })
        .await
        .unwrap();
        api
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    fn stderr_lines_containing(&self, needle: &str) -> Vec<String> {
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_outage_answers_503_at_once_and_the_api_recovers_with_the_database() {
    let catalog = PostgresServer::start().await.unwrap();
    let database = catalog.create_database("mstest_cat").await.unwrap();
    let mut api = ApiProcess::start(&catalog.url(&database)).await;
    assert_eq!(api.get("/v1/resources").await.status(), 200);

    catalog.stop("immediate").await.unwrap();
    for path in ["/v1/resources", "/v1/jobs", "/v1/resources", "/v1/jobs"] {
        let started = Instant::now();
        let response = api.get(path).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(header("retry-after").as_deref(), Some("1"));
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 503, "{problem}");
        assert!(
            took < Duration::from_secs(1),
            "{path} answered after {took:?}"
        );
    }
    // Four failed requests, one warning: the rest are counted for the next one.
    let warnings = api.stderr_lines_containing(r#""what":"catalog database""#);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains(r#""failures_since_last_warning":1"#),
        "{warnings:#?}"
    );

    catalog.start_again().await.unwrap();
    eventually(Duration::from_secs(10), "the API to recover", || async {
        Ok((api.get("/v1/resources").await.status() == 200).then_some(()))
    })
    .await
    .unwrap();
    api.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sync_after_a_redis_restart_is_pushed() {
    let mut redis = RedisServer::start().await.unwrap();
    // No process runs a reconciler that could repair a lost push: the API stays out of the
    // maintenance election, and the worker below reconciles once an hour.
    let app = spawn_app_with(&redis.url(), |args| {
        args.maintenance.stand_for_leader = false;
    })
    .await
    .unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "after-restart", &source).await.unwrap();
    let before = app.sync(T, resource.id).await.unwrap();
    sqlx::query("update jobs set state = 'cancelled', finished_at = now() where id = $1")
        .bind(before.id.0)
        .execute(&app.db)
        .await
        .unwrap();

    redis.restart().await.unwrap();
    let job = app.sync(T, resource.id).await.unwrap();
    // Read with a client of our own: the API's queue handle would reconnect the API.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let tenant = metasync_shared::ids::TenantId::new(T);
    let ready: Vec<String> = redis::cmd("LRANGE")
        .arg(
            app.queue
                .keys()
                .ready(&tenant, metasync_shared::queue::Class::Manual),
        )
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        ready,
        vec![metasync_shared::queue::Delivery::manual(job.id, tenant).payload()],
        "the push after the restart"
    );

    // No reconciler to repair a lost push: the delivery above is what runs the job.
    let mut args = app.worker_args();
    args.maintenance.reconcile_every = Duration::from_secs(3600);
    let _worker = app.spawn_worker_with(args).await;
    let done = app
        .wait_for_job(T, job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&done).succeeded().attempts(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_warns_once_per_period_while_redis_is_down() {
    let redis = RedisServer::start().await.unwrap();
    let app = spawn_app_with_redis(&redis.url()).await.unwrap();
    let mut worker = app
        .worker_command(
            "quiet",
            &[("RUST_LOG", "warn"), ("METASYNC_LOG_FORMAT", "json")],
        )
        .unwrap()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = capture_stderr(&mut worker);
    // Registered (its first heartbeat) means its pickup loop and duties are running.
    let workers_key = app.queue.keys().workers.clone();
    eventually(
        Duration::from_secs(20),
        "the worker to register",
        || async {
            let client = redis::Client::open(redis.url())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let n: usize = redis::cmd("ZCARD")
                .arg(&workers_key)
                .query_async(&mut conn)
                .await?;
            Ok((n == 1).then_some(()))
        },
    )
    .await
    .unwrap();

    drop(redis);
    // Unlimited, the pickup loop alone warned at every retry: about ten times in six seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let warnings: Vec<String> = stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(r#""level":"WARN""#))
        .cloned()
        .collect();
    let pickup = warnings
        .iter()
        .filter(|l| l.contains(r#""what":"redis pickup""#))
        .count();
    assert_eq!(pickup, 1, "{warnings:#?}");
    // One per failing duty at most (heartbeat, reap, rescue, gauges, promote, ...), once each.
    let mut sources: Vec<&str> = warnings
        .iter()
        .map(|l| {
            l.split(r#""what":""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or(l)
        })
        .collect();
    let total = sources.len();
    sources.sort_unstable();
    sources.dedup();
    assert_eq!(total, sources.len(), "a source warned twice: {warnings:#?}");
    worker.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_answers_a_statement_fails_within_its_statement_timeout_plus_grace() {
    let app = spawn_app().await.unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    proxy.set_mode(ProxyMode::StallQueries); // sessions start; statements are never answered
    let policy = json!({ "retry_policy": { "max_attempts": 1 } });
    let resource = app
        .register_via(T, "tarpit", "postgres", proxy.port, policy)
        .await
        .unwrap();
    let mut args = app.worker_args();
    args.statement_timeout = Duration::from_secs(1);
    let _worker = app.spawn_worker_with(args).await;
    let job = app.sync(T, resource.id).await.unwrap();
    let done = app
        .wait_for_job(T, job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&done)
        .failed()
        .error_class(ErrorClass::Transient)
        .error_contains("did not answer");
    let took = done.finished_at.expect("a finished job") - done.started_at.expect("a started job");
    assert!(took.num_milliseconds() >= 1_000, "took {took}");
    assert!(took.num_milliseconds() < 1_000 + 5_000, "took {took}");
    assert!(proxy.accepted() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_resources_on_one_server_never_see_more_connections_than_the_cap() {
    const CAP: i64 = 3;
    let app = spawn_app().await.unwrap();
    // Four databases on the one server, 50 resources each (one tenant per database, since
    // the helper names resources alike): connections for different databases cannot be
    // shared, so the cap is met by closing idle ones, not only by reuse.
    let mut databases = Vec::new();
    for i in 0..4 {
        let database = create_source("create table t (id int);").await.unwrap();
        app.insert_resources(&format!("cap-{i}"), &database, 50)
            .await
            .unwrap();
        databases.push(database);
    }
    let admin = sqlx::PgPool::connect(&pg_url("postgres")).await.unwrap();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (admin, databases, sampling) = (admin.clone(), databases.clone(), sampling.clone());
        async move {
            let (mut most, mut samples) = (0i64, 0u64);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let open: i64 = sqlx::query_scalar(
                    "select count(*) from pg_stat_activity
                     where datname = any($1) and application_name = 'metasync'",
                )
                .bind(&databases)
                .fetch_one(&admin)
                .await
                .unwrap();
                most = most.max(open);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (most, samples)
        }
    });
    let cap = CAP.to_string();
    let env = [
        ("METASYNC_SOURCE_CONNECTIONS_PER_SERVER", cap.as_str()),
        ("METASYNC_WORKER_CONCURRENCY", "16"),
    ];
    let _workers = [
        app.spawn_worker_process("capped-a", &env).unwrap(),
        app.spawn_worker_process("capped-b", &env).unwrap(),
    ];
    for i in 0..4 {
        let (status, _, batch) = app
            .call(&format!("cap-{i}"), Method::POST, "/v1/syncs", None)
            .await
            .unwrap();
        assert_eq!(status, 202, "{batch}");
    }
    let db = app.db.clone();
    eventually(Duration::from_secs(120), "every job to succeed", || async {
        let succeeded: i64 =
            sqlx::query_scalar("select count(*) from jobs where state = 'succeeded'")
                .fetch_one(&db)
                .await?;
        Ok((succeeded == 200).then_some(()))
    })
    .await
    .unwrap();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (most, samples) = sampler.await.unwrap();
    println!("{samples} samples of pg_stat_activity; at most {most} connections (cap {CAP})");
    assert!(most <= CAP, "{most} connections open at once, cap {CAP}");
    assert!(
        most >= 1,
        "the sampler saw no connection in {samples} samples"
    );
    // Waiting for a connection never used up an attempt.
    let (attempts, rows): (i64, i64) = sqlx::query_as(
        "select (select sum(attempts) from jobs)::bigint, (select count(*) from job_attempts)",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((attempts, rows), (200, 200));
}
