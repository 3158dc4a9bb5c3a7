//! Chaos, the fast subset: every scenario of `metasync_tests::chaos` on a smaller batch (300
//! jobs, 2 worker processes, lease 5 s, reconcile every 2 s, outages 10 s), each on its own
//! Redis and catalog PostgreSQL. The scale (2,000 jobs, default lease and reconcile
//! period, 30 s outages) is `deploy/local/chaos.sh`.
//!
//! Each test asserts that every job ends terminal within lease + reconcile period + 30 s of
//! the fault healing, none is left unfinished, and no queue key is left once the processes
//! stopped. They run two at a time at most (each is a whole fleet on a 2-core machine); the
//! eight take about 70 s.

use std::time::Duration;

use metasync_tests::Persistence;
use metasync_tests::chaos::{self, ChaosSettings, Scenario};
use tokio::sync::Semaphore;

static FLEETS: Semaphore = Semaphore::const_new(2);

async fn check(scenario: Scenario) {
    let _slot = FLEETS.acquire().await.unwrap();
    let settings = ChaosSettings {
        jobs: 300,
        workers: 2,
        lease: Duration::from_secs(5),
        reconcile_every: Duration::from_secs(2),
        outage: Duration::from_secs(10),
        log_dir: std::env::temp_dir().join("metasync-chaos-tests"),
    };
    // Left for test.sh's clean-up, like every test's database: dropping it would force a
    // checkpoint of the shared server.
    let source = chaos::source_database().await.unwrap();
    let outcome = chaos::run(scenario, &settings, &source).await.unwrap();
    println!("{outcome}");
    assert!(outcome.passed(), "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_without_persistence() {
    check(Scenario::RedisRestart {
        persistence: Persistence::Off,
        failing: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof() {
    check(Scenario::RedisRestart {
        persistence: Persistence::Aof,
        failing: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_without_persistence_while_attempts_fail() {
    check(Scenario::RedisRestart {
        persistence: Persistence::Off,
        failing: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof_while_attempts_fail() {
    check(Scenario::RedisRestart {
        persistence: Persistence::Aof,
        failing: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_a_while() {
    check(Scenario::RedisDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_postgres_stopped_immediately_and_down_for_a_while() {
    check(Scenario::CatalogDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_killed_right_after_committing_a_batch() {
    check(Scenario::ApiKilledAfterBatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_the_workers_needs_no_second_attempt() {
    check(Scenario::RollingRestart).await;
}
