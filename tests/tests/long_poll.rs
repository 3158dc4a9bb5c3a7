//! Long-polls woken by job events: `GET /v1/jobs/{id}?wait=N&until=finished` and
//! `GET /v1/batches/{id}?wait=N`. The API under test re-reads a waited job on its own only every
//! 60 s (`wait_recheck`), so a wait that ends well before that was woken by an announcement
//! (a worker's acknowledgement, or the API's own cancel).

use std::time::{Duration, Instant};

use metasync_tests::{REDIS_URL, RedisCluster, TestApp, create_source, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

const T: &str = "longpoll";

async fn app() -> TestApp {
    app_on(REDIS_URL).await
}

async fn app_on(redis_url: &str) -> TestApp {
    spawn_app_with(redis_url, |args| {
        args.quotas.wait_recheck = Duration::from_secs(60);
    })
    .await
    .unwrap()
}

async fn get(app: &TestApp, path: &str) -> (u16, Value, Duration) {
    spawn_get(app, path).await.unwrap()
}

/// `GET path` on its own task: `(status, body, how long it took)`.
fn spawn_get(app: &TestApp, path: &str) -> tokio::task::JoinHandle<(u16, Value, Duration)> {
    let request = reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(app.token(T));
    tokio::spawn(async move {
        let started = Instant::now();
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, started.elapsed())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_finished_skips_the_claim_and_returns_at_the_end() {
    until_finished_on(&app().await).await;
}

/// On a cluster the API subscribes on one seed node, which hears every node's PUBLISH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_is_woken_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await.unwrap();
    until_finished_on(&app_on(&cluster.url()).await).await;
}

async fn until_finished_on(app: &TestApp) {
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "src", &source).await.unwrap();
    let job = app.sync(T, resource.id).await.unwrap();

    // Waiting before any worker exists: the claim (`running`) must not end this wait.
    let path = format!("/v1/jobs/{}?wait=50&until=finished", job.id);
    let waiting = spawn_get(app, &path);
    let _worker = app.spawn_worker().await;
    let (status, body, elapsed) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "succeeded", "{body}");
    assert!(
        elapsed < Duration::from_secs(30),
        "woken by the worker's acknowledgement, not by the 60 s re-read: {elapsed:?}"
    );

    // A finished job answers at once, whatever the wait.
    let (_, body, elapsed) = get(app, &format!("/v1/jobs/{}?wait=50&until=finished", job.id)).await;
    assert_eq!(body["state"], "succeeded");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_returns_the_current_state() {
    let app = spawn_app_with(REDIS_URL, |_| {}).await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "src", &source).await.unwrap();
    let job = app.sync(T, resource.id).await.unwrap();
    // No worker: the job stays queued, and the wait ends at its N seconds.
    let (status, body, elapsed) =
        get(&app, &format!("/v1/jobs/{}?wait=1&until=finished", job.id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "queued", "{body}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");

    let (status, body, _) = get(&app, &format!("/v1/jobs/{}?wait=1&until=done", job.id)).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("finished"),
        "names the valid values: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_wakes_a_waiter_of_a_queued_job() {
    let app = app().await;
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "src", &source).await.unwrap();
    let job = app.sync(T, resource.id).await.unwrap();

    let path = format!("/v1/jobs/{}?wait=50", job.id);
    let waiting = spawn_get(&app, &path);
    let (status, _, body) = app
        .call(
            T,
            Method::POST,
            &format!("/v1/jobs/{}/cancel", job.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, body, elapsed) = waiting.await.unwrap();
    assert_eq!(body["state"], "cancelled", "{body}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_wait_returns_when_every_job_has_finished() {
    let app = app().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let source = create_source("create table t (id int);").await.unwrap();
        ids.push(
            app.register(T, &format!("src{n}"), &source)
                .await
                .unwrap()
                .id,
        );
    }
    let (status, _, batch) = app
        .call(
            T,
            Method::POST,
            "/v1/syncs",
            Some(json!({ "resource_ids": ids })),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{batch}");
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();

    let (_, body, _) = get(&app, &format!("/v1/batches/{batch_id}")).await;
    assert_eq!(body["done"], false, "{body}");

    let path = format!("/v1/batches/{batch_id}?wait=50");
    let waiting = spawn_get(&app, &path);
    let _worker = app.spawn_worker().await;
    let (status, body, elapsed) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], true, "{body}");
    assert_eq!(body["by_state"]["succeeded"], 3, "{body}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");

    let (status, body, _) = get(&app, &format!("/v1/batches/{batch_id}?wait=1&until=x")).await;
    assert_eq!(status, 400, "batches take no `until`: {body}");
}
