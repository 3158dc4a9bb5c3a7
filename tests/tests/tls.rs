//! TLS everywhere: the catalog PostgreSQL and Redis take TLS from their URLs (`sslmode=…`,
//! `rediss://` with `METASYNC_REDIS_CA`). Each test makes its own CA and starts servers of
//! its own that accept TLS only, so a sync that succeeds can only have been encrypted; the
//! servers' own views (`pg_stat_ssl`) confirm it.

use std::time::Duration;

use metasync_tests::tls::TestCa;
use metasync_tests::{PostgresServer, RedisServer, assert_job, create_source, spawn_app_at};

const T: &str = "tls";

/// The catalog URL for `database` on `server`, verified against `ca` by name (`verify-full`).
fn verified_url(server: &PostgresServer, database: &str, ca: &TestCa) -> String {
    format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url(database),
        ca.ca_file().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_runs_through_a_tls_catalog_and_a_tls_only_redis() {
    let ca = TestCa::new().unwrap();
    let catalog = PostgresServer::start_tls(&ca).await.unwrap();
    let database = catalog.create_database("mstest_cat").await.unwrap();
    let redis = RedisServer::start_tls(&ca).await.unwrap();
    assert!(redis.url().starts_with("rediss://"));

    let app = spawn_app_at(
        &verified_url(&catalog, &database, &ca),
        &redis.url(),
        |args| {
            args.queue.redis_ca = redis.ca_file();
        },
    )
    .await
    .unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "over-tls", &source).await.unwrap();
    let job = app.sync(T, resource.id).await.unwrap();
    let done = app
        .wait_for_job(T, job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&done).succeeded().attempts(1);

    // The server's view of every session on the catalog database (the API's and the
    // worker's pools, and this query's own): all encrypted.
    let sessions: Vec<(i32, bool, Option<String>)> = sqlx::query_as(
        "select a.pid, s.ssl, s.version from pg_stat_activity a join pg_stat_ssl s using (pid) \
         where a.datname = $1",
    )
    .bind(&database)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(sessions.len() >= 3, "{sessions:?}");
    assert!(
        sessions
            .iter()
            .all(|(_, ssl, version)| *ssl
                && version.as_deref().is_some_and(|v| v.starts_with("TLS"))),
        "{sessions:?}"
    );
    // And the server takes nothing else: a session without TLS is refused.
    let plain = format!("{}?sslmode=disable", catalog.url(&database));
    assert!(sqlx::PgPool::connect(&plain).await.is_err());

    // Redis has no plain port at all (`--port 0`): the deliveries went over TLS. A plain
    // client on the TLS port gets no answer.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    assert!(!matches!(answered, Ok(Ok(_))), "{answered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_or_redis_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let catalog = PostgresServer::start_tls(&ca).await.unwrap();
    let database = catalog.create_database("mstest_cat").await.unwrap();
    let redis = RedisServer::start_tls(&ca).await.unwrap();

    // The catalog verified against another CA: start-up fails.
    let wrong_catalog = verified_url(&catalog, &database, &other);
    let started = spawn_app_at(&wrong_catalog, &redis.url(), |args| {
        args.queue.redis_ca = redis.ca_file();
    })
    .await;
    assert!(
        started.is_err(),
        "a catalog signed by another CA was accepted"
    );

    // Redis verified against another CA, or against the built-in roots: refused.
    let right_catalog = verified_url(&catalog, &database, &ca);
    for redis_ca in [Some(other.ca_file()), None] {
        let started = spawn_app_at(&right_catalog, &redis.url(), |args| {
            args.queue.redis_ca = redis_ca.clone();
        })
        .await;
        assert!(
            started.is_err(),
            "Redis verified with {redis_ca:?} was accepted"
        );
    }

    // A CA with a plain `redis://` URL is a configuration error, not TLS silently off.
    let client =
        metasync_shared::queue::redis_client("redis://127.0.0.1:6379", Some(&ca.ca_file()));
    assert!(client.is_err());
}
