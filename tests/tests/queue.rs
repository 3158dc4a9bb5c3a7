//! The delivery queue's promises, against real Redis servers: tenants take turns whatever their
//! backlog, manual work goes before scheduled work, no delivery can hide a job in a live
//! worker's claimed list, acknowledgements survive a write outage, and a lease restored from
//! disk never reaps a live worker. Each test has its own queue name; tests that break Redis
//! start their own server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use metasync_shared::db::jobs::{self, Enqueued};
use metasync_shared::ids::{JobId, TenantId};
use metasync_shared::queue::{Class, Delivery, Pickup, Queue};
use metasync_tests::{
    FaultProxy, ProxyMode, REDIS_URL, RedisCluster, RedisServer, create_source, eventually,
    spawn_app,
};
use uuid::Uuid;

fn delivery(tenant: &str, class: Class) -> Delivery {
    Delivery {
        job_id: JobId::new_v7(),
        tenant: TenantId::new(tenant),
        class,
    }
}

async fn own_queue(url: &str) -> Queue {
    Queue::connect(url, &format!("test-{}", Uuid::now_v7().simple()))
        .await
        .expect("connecting to Redis")
}

/// Deletes every key of the queue (tests on the shared Redis leave nothing behind).
async fn drop_keys(queue: &Queue) {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(queue.keys().pattern())
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

async fn take(fetcher: &mut metasync_shared::queue::Fetcher) -> Delivery {
    match fetcher.next(Duration::from_secs(1)).await.unwrap() {
        Some(Pickup::Job(delivery)) => delivery,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tenant_waits_at_most_one_pickup_behind_another_tenants_backlog() {
    let queue = own_queue(REDIS_URL).await;
    let backlog: Vec<Delivery> = (0..2_000).map(|_| delivery("a", Class::Manual)).collect();
    queue.push(&backlog).await.unwrap();
    let b = delivery("b", Class::Manual);
    queue.push(std::slice::from_ref(&b)).await.unwrap();
    let c = delivery("c", Class::Scheduled);
    queue.push(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), (2_002, 0));

    let mut fetcher = queue.fetcher("w").await.unwrap();
    let first: Vec<Delivery> = [
        take(&mut fetcher).await,
        take(&mut fetcher).await,
        take(&mut fetcher).await,
    ]
    .into();
    // A was first in the ring; B and C each joined behind it and are served next, in turn.
    assert_eq!(first, vec![backlog[0].clone(), b, c]);
    // A alone again: its backlog drains in its own order.
    assert_eq!(take(&mut fetcher).await, backlog[1]);
    assert_eq!(queue.depth().await.unwrap(), (1_998, 0));
    drop_keys(&queue).await;
}

#[tokio::test]
async fn manual_work_goes_before_scheduled_work_of_the_same_tenant() {
    let queue = own_queue(REDIS_URL).await;
    let scheduled: Vec<Delivery> = (0..3).map(|_| delivery("t", Class::Scheduled)).collect();
    queue.push(&scheduled).await.unwrap();
    let manual = delivery("t", Class::Manual);
    queue.push(std::slice::from_ref(&manual)).await.unwrap();
    // A retry due later keeps its class and jumps the scheduled queue too.
    let retried = delivery("t", Class::Manual);
    queue.push_delayed(&retried, Duration::ZERO).await.unwrap();
    queue.promote_due().await.unwrap();

    let mut fetcher = queue.fetcher("w").await.unwrap();
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(take(&mut fetcher).await);
    }
    let mut expected = vec![manual, retried];
    expected.extend(scheduled);
    assert_eq!(order, expected);
    assert_eq!(fetcher.next(Duration::from_millis(10)).await.unwrap(), None);
    drop_keys(&queue).await;
}

/// A delivery left in a live worker's claimed list (as a Redis restart from disk leaves the
/// deliveries of attempts that ended after the last write it kept) is handed back by that
/// worker's audit, and its job runs. The reconciler cannot help: the job is `pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_delivery_in_a_live_workers_claimed_list_is_handed_back_and_runs() {
    const TENANT: &str = "stale";
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    let resource = app.register(TENANT, "stale", &source).await.unwrap();
    let worker = app.spawn_worker().await;
    let Some(Enqueued::Created(job)) =
        jobs::enqueue(&app.db, &TenantId::new(TENANT), resource.id, 5, None)
            .await
            .unwrap()
    else {
        panic!("a new job");
    };
    let stale = Delivery::manual(job.id, TenantId::new(TENANT));
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::pipe()
        .lpush(app.queue.keys().claimed(&worker.worker_id), stale.payload())
        .sadd(&app.queue.keys().pending, job.id.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();

    // Lease 3 s: audits every second, so the delivery is back within about two seconds.
    let job = app
        .wait_for_job(TENANT, job.id, Duration::from_secs(30))
        .await
        .unwrap();
    metasync_tests::assert_job(&job).succeeded().attempts(1);
    // Acknowledged once handled: nothing is claimed or pending any more.
    eventually(
        Duration::from_secs(10),
        "the delivery to be acknowledged",
        || async {
            let claimed = app.queue.claimed(&worker.worker_id).await?;
            let missing = app.queue.missing(&[job.id]).await?;
            Ok((claimed.is_empty() && missing == vec![job.id]).then_some(()))
        },
    )
    .await
    .unwrap();
    worker.stop().await.unwrap();
}

async fn config_set(url: &str, name: &str, value: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// An acknowledgement that fails (here Redis refuses writes: `NOREPLICAS`) is retried until
/// Redis takes it, instead of leaving the delivery of a finished job behind.
#[tokio::test]
async fn a_failed_acknowledgement_is_retried_until_redis_takes_it() {
    let redis = RedisServer::start().await.unwrap();
    let queue = own_queue(&redis.url()).await;
    let done = delivery("t", Class::Manual);
    queue.push(std::slice::from_ref(&done)).await.unwrap();
    let mut fetcher = queue.fetcher("w").await.unwrap();
    assert_eq!(take(&mut fetcher).await, done);

    config_set(&redis.url(), "min-replicas-to-write", "1").await;
    assert!(
        queue.heartbeat("w", Duration::from_secs(5)).await.is_err(),
        "writes fail while Redis wants a replica"
    );
    let url = redis.url();
    let heal = tokio::spawn(async move {
        // The outage lasts a moment: long enough for the first tries to fail.
        tokio::time::sleep(Duration::from_millis(700)).await;
        config_set(&url, "min-replicas-to-write", "0").await;
    });
    queue.ack("w", &done).await.unwrap();
    heal.await.unwrap();
    assert!(queue.claimed("w").await.unwrap().is_empty());
    assert_eq!(
        queue.missing(&[done.job_id]).await.unwrap(),
        vec![done.job_id]
    );
}

/// A `redis-server` with AOF (`appendfsync always`) on a fixed port and directory, so it can be
/// killed with SIGKILL and restarted with its data.
struct AofRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl AofRedis {
    fn spawn(port: u16, dir: &Path) -> Child {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server")
    }

    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("mstest-redis-aof-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn(port, &dir);
        let server = Self { port, dir, child };
        server.wait_ready().await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let url = self.url();
        eventually(Duration::from_secs(10), "redis-server to answer", || {
            let url = url.clone();
            async move {
                let answered = async {
                    let client = redis::Client::open(url.as_str())?;
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PING").query_async::<String>(&mut conn).await
                }
                .await;
                Ok(answered.is_ok().then_some(()))
            }
        })
        .await
        .unwrap();
    }

    /// SIGKILL, then `down` without Redis, then the same server back from its AOF.
    async fn crash_and_restart(&mut self, down: Duration) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        tokio::time::sleep(down).await;
        self.child = Self::spawn(self.port, &self.dir);
        self.wait_ready().await;
    }
}

impl Drop for AofRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// After a Redis restart from disk, every restored lease has expired. A live worker renews
/// within a lease; the reaper must not take its deliveries back before it could, while a lost
/// worker's deliveries still come back.
#[tokio::test]
async fn a_restored_expired_lease_of_a_live_worker_is_not_reaped() {
    const LEASE: Duration = Duration::from_secs(4);
    let mut redis = AofRedis::start().await;
    let queue = own_queue(&redis.url()).await;
    let running = delivery("t", Class::Manual);
    let orphan = delivery("t", Class::Manual);
    queue
        .push(&[running.clone(), orphan.clone()])
        .await
        .unwrap();
    queue.heartbeat("live", LEASE).await.unwrap();
    queue.heartbeat("lost", LEASE).await.unwrap();
    assert_eq!(
        take(&mut queue.fetcher("live").await.unwrap()).await,
        running
    );
    assert_eq!(
        take(&mut queue.fetcher("lost").await.unwrap()).await,
        orphan
    );

    // Down for longer than the lease: both leases are restored expired.
    redis
        .crash_and_restart(LEASE + Duration::from_millis(500))
        .await;
    let reaped = eventually(Duration::from_secs(2), "a reap to run", || async {
        Ok(queue.reap(LEASE).await.ok())
    })
    .await
    .unwrap();
    assert_eq!(
        reaped, 0,
        "no lease is judged while Redis is younger than a lease"
    );
    // The live worker renews, as its heartbeat does every lease / 3; the lost one never does.
    eventually(
        Duration::from_secs(2),
        "the live worker to renew",
        || async { Ok(queue.heartbeat("live", LEASE).await.ok()) },
    )
    .await
    .unwrap();

    let reaped = eventually(LEASE * 3, "the lost worker to be reaped", || async {
        queue.heartbeat("live", LEASE).await?;
        let n = queue.reap(LEASE).await?;
        Ok((n > 0).then_some(n))
    })
    .await
    .unwrap();
    assert_eq!(reaped, 1);
    assert_eq!(
        queue.claimed("live").await.unwrap(),
        vec![running.payload()]
    );
    assert!(queue.claimed("lost").await.unwrap().is_empty());
    assert_eq!(
        take(&mut queue.fetcher("other").await.unwrap()).await,
        orphan
    );
}

/// Through the API and a real worker: tenant A's batch of 300 syncs is queued first, then one
/// sync of tenant B; B's job is among the first pickups instead of the 301st.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_sync_overtakes_a_queued_batch() {
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    app.insert_resources("tenant-a", &source, 300)
        .await
        .unwrap();
    let b = app.register("tenant-b", "b", &source).await.unwrap();
    let (status, _, body) = app
        .call(
            "tenant-a",
            reqwest::Method::POST,
            "/v1/syncs",
            Some(serde_json::json!({})),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let b_job = app.sync("tenant-b", b.id).await.unwrap();

    let worker = app.spawn_worker().await;
    let b_job = app
        .wait_for_job("tenant-b", b_job.id, Duration::from_secs(60))
        .await
        .unwrap();
    let started = b_job.started_at.expect("a started job");
    let (a_before,): (i64,) = sqlx::query_as(
        "select count(*) from jobs where tenant_id = 'tenant-a' and started_at < $1",
    )
    .bind(started)
    .fetch_one(&app.db)
    .await
    .unwrap();
    // One pickup of A comes first (A was first in the ring); the worker's 4 slots may claim
    // a few more of A's before B's claim commits, but never the batch.
    assert!(a_before <= 4, "{a_before} of A's jobs started before B's");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tarpit_tenant_holding_every_slot_does_not_stop_another_tenants_job() {
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    // Tenant A's sources accept sessions and never answer a statement: each attempt holds a
    // slot until the statement timeout plus the client's grace.
    let tarpit = FaultProxy::start(5432).await.unwrap();
    tarpit.set_mode(ProxyMode::StallQueries);
    let mut args = app.worker_args();
    args.concurrency = 4;
    args.statement_timeout = Duration::from_secs(3);
    let worker = app.spawn_worker_with(args).await;
    for i in 0..12 {
        let resource = app
            .register_via(
                "tarpit-a",
                &format!("a{i}"),
                &source,
                tarpit.port,
                serde_json::json!({ "retry_policy": { "max_attempts": 1 } }),
            )
            .await
            .unwrap();
        app.sync("tarpit-a", resource.id).await.unwrap();
    }
    // A holds all 4 slots, 8 more of its jobs waiting; then B asks for one sync.
    eventually(Duration::from_secs(30), "A to hold every slot", || async {
        let (running,): (i64,) = sqlx::query_as(
            "select count(*) from jobs where tenant_id = 'tarpit-a' and state = 'running'",
        )
        .fetch_one(&app.db)
        .await?;
        Ok((running == 4).then_some(()))
    })
    .await
    .unwrap();
    let b = app.register("tenant-b", "b", &source).await.unwrap();
    let b_job = app.sync("tenant-b", b.id).await.unwrap();
    let b_job = app
        .wait_for_job("tenant-b", b_job.id, Duration::from_secs(60))
        .await
        .unwrap();
    metasync_tests::assert::assert_job(&b_job).succeeded();
    // B waited for a slot A gave back, then one pickup of A's (A was ahead in the ring), not
    // for A's backlog of 8. The 4 slots come free together, so the pickups after them (A, B,
    // A, A) claim at once and their `started_at` may commit in any order: up to 3 of A's may
    // show as started before B's. An unfair queue would start all 12 first.
    let (a_before,): (i64,) = sqlx::query_as(
        "select count(*) from jobs where tenant_id = 'tarpit-a' and started_at < $1",
    )
    .bind(b_job.started_at.expect("a started job"))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        (4..=7).contains(&a_before),
        "{a_before} of A's jobs started before B's: 4 held the slots, at most 3 more may"
    );
    worker.stop().await.unwrap();
}

/// A bare job id left in the single FIFO list of the queue before fair scheduling comes out as
/// garbage once nothing else is ready; acknowledging it takes the job out of `pending`, so the
/// reconciler pushes it again as a routed delivery.
#[tokio::test]
async fn a_bare_job_id_from_the_old_fifo_list_is_handed_to_the_reconciler() {
    let name = format!("test-{}", Uuid::now_v7().simple());
    let queue = Queue::connect(REDIS_URL, &name).await.unwrap();
    let job = JobId::new_v7();
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::pipe()
        .lpush(format!("metasync:{{{name}}}:ready"), job.to_string())
        .sadd(&queue.keys().pending, job.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let routed = delivery("t", Class::Manual);
    queue.push(std::slice::from_ref(&routed)).await.unwrap();

    let mut fetcher = queue.fetcher("w").await.unwrap();
    assert_eq!(take(&mut fetcher).await, routed, "routed deliveries first");
    let Some(Pickup::Garbage(payload)) = fetcher.next(Duration::from_secs(1)).await.unwrap() else {
        panic!("the bare id comes out as garbage");
    };
    queue.ack_garbage("w", &payload).await.unwrap();
    assert_eq!(queue.missing(&[job]).await.unwrap(), vec![job]);
    assert_eq!(queue.claimed("w").await.unwrap(), vec![routed.payload()]);
    drop_keys(&queue).await;
}

/// Every queue operation on a three-master Redis Cluster: each script, pipeline and
/// transaction touches one slot, `INFO` for the reaper goes to the queue's master, and a
/// blocked pickup holds up neither the queue's other commands nor the test lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queue_operation_works_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await.unwrap();
    let queue = own_queue(&cluster.url()).await;
    assert!(queue.client().is_cluster());

    // Pushed, delayed, promoted, taken in order; the backlog's depth and pending count.
    let first = delivery("a", Class::Manual);
    let later = delivery("b", Class::Scheduled);
    queue.push(std::slice::from_ref(&first)).await.unwrap();
    queue.push_delayed(&later, Duration::ZERO).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), (1, 1));
    assert_eq!(queue.promote_due().await.unwrap(), 1);
    assert_eq!(queue.pending_count().await.unwrap(), 2);
    let mut fetcher = queue.fetcher("w").await.unwrap();
    assert_eq!(take(&mut fetcher).await, first);
    assert_eq!(take(&mut fetcher).await, later);

    // Heartbeats, the fleet view, acknowledgement, redelivery, the audit's requeue.
    queue
        .worker_heartbeat("w", Duration::from_secs(30), 4)
        .await
        .unwrap();
    let workers = queue.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!((workers[0].in_flight, workers[0].concurrency), (2, Some(4)));
    assert_eq!(queue.live_workers().await.unwrap(), 1);
    queue.ack("w", &first).await.unwrap();
    assert_eq!(
        queue.missing(&[first.job_id]).await.unwrap(),
        [first.job_id]
    );
    queue
        .redeliver_later("w", &later, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(queue.promote_due().await.unwrap(), 1);
    assert_eq!(take(&mut fetcher).await, later);
    let claimed = queue.claimed("w").await.unwrap();
    assert_eq!(claimed, [later.payload()]);
    assert_eq!(queue.requeue("w", &claimed).await.unwrap(), 1);
    assert_eq!(take(&mut fetcher).await, later);

    // The reaper: Redis (the queue's master) has not been up for an hour, so no lease is
    // judged; a lapsed lease is reaped once judged, and a released worker at once.
    queue.heartbeat("w", Duration::ZERO).await.unwrap();
    assert_eq!(queue.reap(Duration::from_secs(3_600)).await.unwrap(), 0);
    assert_eq!(queue.reap(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(take(&mut fetcher).await, later);
    queue.heartbeat("w", Duration::from_secs(30)).await.unwrap();
    assert_eq!(queue.release("w").await.unwrap(), 1);
    assert_eq!(take(&mut fetcher).await, later);
    queue.ack("w", &later).await.unwrap();
    queue.ack_garbage("w", "not-a-delivery").await.unwrap();

    // A blocked pickup waits on its own connections: the queue's commands answer meanwhile,
    // and a push wakes it.
    let blocked = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let pickup = fetcher.next(Duration::from_secs(10)).await.unwrap();
        (pickup, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    assert_eq!(queue.depth().await.unwrap(), (0, 0));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let woken = delivery("c", Class::Manual);
    queue.push(std::slice::from_ref(&woken)).await.unwrap();
    let (pickup, waited) = blocked.await.unwrap();
    assert_eq!(pickup, Some(Pickup::Job(woken.clone())));
    assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
    queue.ack("w", &woken).await.unwrap();

    // The test lane: pushed, withdrawn, taken by a blocked take.
    let test = metasync_shared::ids::TestId::new_v7();
    queue
        .push_test(test, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(queue.withdraw_test(test).await.unwrap());
    let mut lane = queue.test_lane().await.unwrap();
    queue
        .push_test(test, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(lane.next(Duration::from_secs(5)).await.unwrap(), Some(test));

    queue.heartbeat("w", Duration::ZERO).await.unwrap();
    queue.release("w").await.unwrap();
    let port = cluster.master_of(&queue.keys().ring).await.unwrap();
    let keys = cluster
        .node_keys(port, &queue.keys().pattern())
        .await
        .unwrap();
    assert_eq!(
        keys,
        Vec::<String>::new(),
        "nothing left on the queue's master"
    );
    let errors = cluster.errors().await.unwrap();
    assert!(
        !errors.replies.iter().any(|line| line.contains("CROSSSLOT")),
        "{errors:?}"
    );
    assert_eq!(errors.unexpected, Vec::<String>::new());
}
