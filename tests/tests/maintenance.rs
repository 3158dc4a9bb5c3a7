//! Maintenance as independent services: the fleet-wide duties run in the one process holding
//! the maintenance lease, which API processes stand for too. With zero workers an API process
//! fires schedules, promotes due retries, repairs lost deliveries and exports the backlog
//! gauge; a leader killed with -9 is replaced within a lease, and one that stops gracefully
//! resigns and notifies, so a follower takes over at once. Real processes and signals.

use std::time::{Duration, Instant};

use metasync_shared::ids::{JobId, TenantId};
use metasync_shared::queue::{Class, Delivery};
use metasync_tests::{TestApp, create_source, eventually, signal, spawn_app_without_maintenance};
use redis::AsyncCommands as _;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

static SERIAL: Mutex<()> = Mutex::const_new(());
const T: &str = "maintenance";

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A metric's value on a process's `/metrics`, if it exports it.
async fn metric(addr: &str, name: &str) -> anyhow::Result<Option<f64>> {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    Ok(body.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    }))
}

/// The current maintenance leader's holder id, if any holds an unexpired lease.
async fn leader(app: &TestApp) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "select holder from maintenance_leader where name = 'fleet' and expires_at > now()",
    )
    .fetch_optional(&app.db)
    .await?)
}

/// Waits (at most `within`) until the holder named `prefix…` leads.
async fn until_led_by(app: &TestApp, prefix: &str, within: Duration) {
    let what = format!("{prefix}… to take the lease");
    eventually(within, &what, || async {
        Ok(leader(app)
            .await?
            .filter(|holder| holder.starts_with(prefix)))
    })
    .await
    .unwrap();
}

async fn redis(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(app.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The job's delivery in either class of the tenant's ready lists, as `(list, payload)`.
fn ready_places(app: &TestApp, job: JobId) -> Vec<(String, String)> {
    let tenant = TenantId::new(T);
    [Class::Manual, Class::Scheduled]
        .into_iter()
        .map(|class| {
            let delivery = Delivery {
                job_id: job,
                tenant: tenant.clone(),
                class,
            };
            (app.queue.keys().ready(&tenant, class), delivery.payload())
        })
        .collect()
}

/// Whether the job's delivery waits in its tenant's ready lists.
async fn in_ready(app: &TestApp, job: JobId) -> anyhow::Result<bool> {
    for (list, payload) in ready_places(app, job) {
        let position: Option<i64> = redis::cmd("LPOS")
            .arg(&list)
            .arg(&payload)
            .query_async(&mut redis(app).await)
            .await?;
        if position.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the job's delivery from Redis, as a Redis restart without persistence would.
async fn lose_delivery(app: &TestApp, job: JobId) {
    let mut conn = redis(app).await;
    for (list, payload) in ready_places(app, job) {
        let _: () = conn.lrem(&list, 0, &payload).await.unwrap();
    }
    let _: () = conn
        .srem(&app.queue.keys().pending, job.to_string())
        .await
        .unwrap();
}

/// Two worker processes standing for leader with lease `lease`, once one leads and the other
/// follows.
struct Candidates {
    leader: tokio::process::Child,
    follower: tokio::process::Child,
    /// The follower's worker id prefix (`<name>-`) and metrics address.
    follower_name: String,
    follower_metrics: String,
}

async fn two_candidates(app: &TestApp, names: [&str; 2], lease: &str) -> Candidates {
    let metrics = [free_addr(), free_addr()];
    let mut children = Vec::new();
    for (name, addr) in names.iter().zip(&metrics) {
        // TLS to the catalog, as every process has by default (the local server offers it,
        // and `prefer` takes it); the resignation's notification arrives over it.
        let url = format!("{}?sslmode=require", app.database_url);
        let env = [
            ("METASYNC_LEASE", lease),
            ("METASYNC_METRICS_ADDR", addr.as_str()),
            ("DATABASE_URL", url.as_str()),
        ];
        children.push(app.spawn_worker_process(name, &env).unwrap());
    }
    let first = eventually(Duration::from_secs(20), "a leader", || leader(app))
        .await
        .unwrap();
    let second = children.pop().unwrap();
    let first_child = children.pop().unwrap();
    let a_leads = first.starts_with(&format!("{}-", names[0]));
    let (leader, follower, follower_index) = if a_leads {
        (first_child, second, 1)
    } else {
        (second, first_child, 0)
    };
    let candidates = Candidates {
        leader,
        follower,
        follower_name: format!("{}-", names[follower_index]),
        follower_metrics: metrics[follower_index].clone(),
    };
    eventually(Duration::from_secs(20), "the follower to start", || async {
        let gauge = metric(&candidates.follower_metrics, "metasync_maintenance_leader").await;
        Ok((gauge.ok().flatten() == Some(0.0)).then_some(()))
    })
    .await
    .unwrap();
    candidates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_zero_workers_the_api_process_keeps_everything_moving() {
    let _serial = SERIAL.lock().await;
    // The in-process API only answers requests; the API process does the maintenance.
    let app = spawn_app_without_maintenance().await.unwrap();
    let api_addr = free_addr();
    let ops_addr = free_addr();
    let mut api = app
        .spawn_api_process(&api_addr, &[("METASYNC_METRICS_ADDR", ops_addr.as_str())])
        .unwrap();
    let source = create_source("create table t (id int);").await.unwrap();

    // A lost delivery: queued in PostgreSQL, nothing in Redis.
    let lost = app.register(T, "lost", &source).await.unwrap();
    let lost = app.sync(T, lost.id).await.unwrap().id;
    lose_delivery(&app, lost).await;

    // A retry that falls due shortly, waiting as a delayed delivery.
    let retried = app.register(T, "retried", &source).await.unwrap();
    let retried = app.sync(T, retried.id).await.unwrap().id;
    lose_delivery(&app, retried).await;
    sqlx::query(
        "update jobs set state = 'retrying', attempts = 1,
                         next_attempt_at = now() + interval '300 milliseconds'
         where id = $1",
    )
    .bind(retried)
    .execute(&app.db)
    .await
    .unwrap();
    app.queue
        .push_delayed(
            &Delivery::manual(retried, TenantId::new(T)),
            Duration::from_millis(300),
        )
        .await
        .unwrap();

    // A schedule, every second.
    let scheduled = app
        .register_via(
            T,
            "scheduled",
            &source,
            5432,
            json!({ "schedule": { "interval_seconds": 1 } }),
        )
        .await
        .unwrap();

    let fired: Uuid = eventually(Duration::from_secs(20), "the schedule to fire", || async {
        Ok(sqlx::query_scalar(
            "select id from jobs where resource_id = $1 and scheduled_for is not null",
        )
        .bind(scheduled.id)
        .fetch_optional(&app.db)
        .await?)
    })
    .await
    .unwrap();
    let fired = JobId(fired);
    for (what, job) in [
        ("the scheduled job's delivery", fired),
        ("the due retry to be promoted", retried),
        ("the lost delivery to be repaired", lost),
    ] {
        eventually(Duration::from_secs(20), what, || async {
            Ok(in_ready(&app, job).await?.then_some(()))
        })
        .await
        .unwrap();
    }
    let delayed: u64 = redis(&app)
        .await
        .zcard(&app.queue.keys().delayed)
        .await
        .unwrap();
    assert_eq!(delayed, 0, "the due retry left the delayed set");

    // The backlog gauge, on the API process's operations listener.
    eventually(
        Duration::from_secs(20),
        "the API to export the backlog gauge",
        || async {
            let ready = metric(&ops_addr, "metasync_queue_ready_deliveries").await?;
            Ok(ready.filter(|n| *n >= 3.0).map(|_| ()))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        metric(&ops_addr, "metasync_maintenance_leader")
            .await
            .unwrap(),
        Some(1.0)
    );

    // A worker started later drains it all.
    let worker = app.spawn_worker().await;
    for job in [lost, retried, fired] {
        let done = app
            .wait_for_job(T, job, Duration::from_secs(60))
            .await
            .unwrap();
        metasync_tests::assert_job(&done).succeeded();
    }
    worker.stop().await.unwrap();
    signal(&api, "TERM").unwrap();
    assert!(api.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_a_lease() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app_without_maintenance().await.unwrap();
    let lease = Duration::from_secs(3);
    let Candidates {
        leader: mut killed,
        follower: mut survivor,
        follower_name: survivor_name,
        follower_metrics: survivor_metrics,
    } = two_candidates(&app, ["lead-a", "lead-b"], "3s").await;

    signal(&killed, "KILL").unwrap();
    let killed_at = Instant::now();
    killed.wait().await.unwrap();
    until_led_by(&app, &survivor_name, lease * 2).await;
    let takeover = killed_at.elapsed();
    eprintln!("a leader killed with -9 was replaced after {takeover:?}");
    assert!(
        takeover <= lease + Duration::from_millis(500),
        "took {takeover:?} to replace a killed leader; the lease is {lease:?}"
    );
    eventually(Duration::from_secs(5), "the new leader's gauge", || async {
        Ok(
            (metric(&survivor_metrics, "metasync_maintenance_leader").await? == Some(1.0))
                .then_some(()),
        )
    })
    .await
    .unwrap();

    signal(&survivor, "TERM").unwrap();
    assert!(survivor.wait().await.unwrap().success());
    let rows: i64 = sqlx::query_scalar("select count(*) from maintenance_leader")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the last leader resigned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_resigns_and_a_follower_takes_over_at_once() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app_without_maintenance().await.unwrap();
    // A long lease: a follower polls only every 10 s, so a takeover within a second can only
    // come from the resignation's notification.
    let Candidates {
        leader: mut stopping,
        mut follower,
        follower_name,
        ..
    } = two_candidates(&app, ["calm-a", "calm-b"], "30s").await;
    // Both listen for resignations over TLS, as the server sees it.
    eventually(
        Duration::from_secs(20),
        "both candidates to listen over TLS",
        || async {
            let (listening, encrypted) = listeners(&app).await?;
            Ok((listening == 2 && encrypted == 2).then_some(()))
        },
    )
    .await
    .unwrap();

    signal(&stopping, "TERM").unwrap();
    let stopped_at = Instant::now();
    until_led_by(&app, &follower_name, Duration::from_secs(40)).await;
    let handover = stopped_at.elapsed();
    eprintln!("a leader stopped with SIGTERM was replaced after {handover:?}");
    assert!(
        handover <= Duration::from_secs(2),
        "took {handover:?} to hand over after a graceful stop (followers poll every 10 s)"
    );
    assert!(stopping.wait().await.unwrap().success());
    signal(&follower, "TERM").unwrap();
    assert!(follower.wait().await.unwrap().success());
}

/// Sessions of this test's database listening for resignations, and how many of them are on
/// TLS (`pg_stat_ssl`, the server's view).
async fn listeners(app: &TestApp) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "select count(*), count(*) filter (where s.ssl) from pg_stat_activity a
         join pg_stat_ssl s using (pid)
         where a.datname = current_database()
           and a.query = 'LISTEN \"metasync_maintenance_resigned\"'",
    )
    .fetch_one(&app.db)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_looks_at_the_lease_whenever_it_starts_listening() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app_without_maintenance().await.unwrap();
    // Another process holds the lease for 30 s: the follower polls only every 10 s.
    sqlx::query(
        "insert into maintenance_leader (name, holder, expires_at)
         values ('fleet', 'ghost', now() + interval '30 seconds')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let metrics = free_addr();
    let url = format!("{}?sslmode=require", app.database_url);
    let env = [
        ("METASYNC_LEASE", "30s"),
        ("METASYNC_METRICS_ADDR", metrics.as_str()),
        ("DATABASE_URL", url.as_str()),
    ];
    let mut follower = app.spawn_worker_process("looker", &env).unwrap();
    // It has tried once (and found the ghost), and listens, over TLS.
    let attempts = r#"metasync_maintenance_runs_total{duty="leader_election"}"#;
    eventually(
        Duration::from_secs(20),
        "the follower to try and listen",
        || async {
            let tried = metric(&metrics, attempts).await.ok().flatten() >= Some(1.0);
            Ok((tried && listeners(&app).await? == (1, 1)).then_some(()))
        },
    )
    .await
    .unwrap();

    // The ghost goes without a word (its notification lost), and the follower's listening
    // connection breaks: when it listens again, it looks at the lease at once, since
    // whatever was sent while it was not listening never reaches it.
    sqlx::query("delete from maintenance_leader where holder = 'ghost'")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database()
           and query = 'LISTEN \"metasync_maintenance_resigned\"'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let cut_at = Instant::now();
    until_led_by(&app, "looker-", Duration::from_secs(40)).await;
    let elected = cut_at.elapsed();
    eprintln!("a follower that listened again took the free lease after {elected:?}");
    assert!(
        elected <= Duration::from_secs(3),
        "took {elected:?} (followers poll every 10 s)"
    );
    signal(&follower, "TERM").unwrap();
    assert!(follower.wait().await.unwrap().success());
}

/// Whether the session that last ran `query` is on TLS, from the server's side.
async fn session_encrypted(app: &TestApp, query: &str) -> anyhow::Result<Option<bool>> {
    Ok(sqlx::query_scalar(
        "select s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid) where a.query = $1",
    )
    .bind(query)
    .fetch_optional(&app.db)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_a_listener_over_tls_at_once() {
    use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

    let app = spawn_app_without_maintenance().await.unwrap();
    let options: PgConnectOptions = format!("{}?sslmode=require", app.database_url)
        .parse()
        .unwrap();
    // As the leader election listens: a pool of its own, one connection.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&own).await.unwrap();
    let channel = format!("tls_probe_{}", Uuid::now_v7().simple());
    listener.listen(&channel).await.unwrap();
    let listen = format!(r#"LISTEN "{channel}""#);
    assert_eq!(
        session_encrypted(&app, &listen).await.unwrap(),
        Some(true),
        "the listener's session is on TLS"
    );
    let notifier = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    for i in 0..20 {
        let payload = format!("n{i}");
        let sent = Instant::now();
        sqlx::query("select pg_notify($1, $2)")
            .bind(&channel)
            .bind(&payload)
            .execute(&notifier)
            .await
            .unwrap();
        let received = tokio::time::timeout(Duration::from_secs(2), listener.recv())
            .await
            .unwrap_or_else(|_| panic!("notification {i} did not arrive over TLS within 2 s"))
            .unwrap();
        assert_eq!(received.payload(), payload);
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "notification {i} took {:?}",
            sent.elapsed()
        );
    }
}
