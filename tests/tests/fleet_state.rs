//! `GET /v1/workers` and `GET /v1/queue`, the fleet-wide reads: only a `fleet` token may read
//! them (tenant tokens, admins included, get 403), and they show live workers with their
//! in-flight work and concurrency, and the backlog from Redis and PostgreSQL.

use std::time::Duration;

use metasync_api::auth::Role;
use metasync_tests::{create_source, eventually, free_port, spawn_app, wait_until_listening};
use serde_json::Value;

const T: &str = "fleet-state";

async fn get_as(app: &metasync_tests::TestApp, token: &str, path: &str) -> (u16, Value) {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_fleet_token_reads_workers_and_the_queue() {
    let app = spawn_app().await.unwrap();
    let fleet = app
        .jwt
        .issue("ops", Role::Fleet, None, Duration::from_secs(300))
        .unwrap();
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let token = app
            .jwt
            .issue("someone", role, Some(T), Duration::from_secs(300))
            .unwrap();
        for path in ["/v1/workers", "/v1/queue"] {
            let (status, problem) = get_as(&app, &token, path).await;
            assert_eq!(status, 403, "{role:?} {path}: {problem}");
            assert!(problem["detail"].as_str().unwrap().contains("fleet"));
        }
    }
    // A fleet token reads no tenant data.
    let (status, _) = get_as(&app, &fleet, "/v1/resources").await;
    assert_eq!(status, 403);

    // Nothing yet: no worker, an empty queue.
    let (status, workers) = get_as(&app, &fleet, "/v1/workers").await;
    assert_eq!(status, 200, "{workers}");
    assert_eq!(workers["items"], serde_json::json!([]));

    // Three jobs queued and no worker: the backlog shows them, with their age.
    let source = create_source("create table t (id int);").await.unwrap();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let resource = app.register(T, &format!("r{i}"), &source).await.unwrap();
        jobs.push(app.sync(T, resource.id).await.unwrap().id);
    }
    let (status, queue) = get_as(&app, &fleet, "/v1/queue").await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["ready"], 3, "{queue}");
    assert_eq!(queue["delayed"], 0, "{queue}");
    assert_eq!(queue["in_flight"], 0, "{queue}");
    assert_eq!(queue["jobs"]["queued"], 3, "{queue}");
    assert!(queue["jobs"]["oldest_waiting_seconds"].as_f64().unwrap() >= 0.0);

    // A worker drains them and shows itself with its concurrency.
    let worker = app.spawn_worker().await;
    for job in &jobs {
        app.wait_for_job(T, job, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let (_, workers) = get_as(&app, &fleet, "/v1/workers").await;
    let items = workers["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{workers}");
    assert_eq!(items[0]["id"], worker.worker_id.as_str());
    assert_eq!(items[0]["live"], true);
    assert!(items[0]["concurrency"].as_u64().unwrap() >= 1, "{workers}");
    assert!(items[0]["lease_expires_at"].is_string());
    let (_, queue) = get_as(&app, &fleet, "/v1/queue").await;
    assert_eq!(queue["ready"], 0, "{queue}");
    assert_eq!(queue["jobs"]["queued"], 0, "{queue}");
    assert!(queue["jobs"]["oldest_waiting_seconds"].is_null(), "{queue}");

    // Stopped, it leaves the list (its lease released and reaped).
    worker.stop().await.unwrap();
    eventually(Duration::from_secs(20), "the worker to leave", || async {
        let (_, workers) = get_as(&app, &fleet, "/v1/workers").await;
        Ok((workers["items"] == serde_json::json!([])).then_some(()))
    })
    .await
    .unwrap();
}

/// The operations listener of both binaries: `/metrics`, `/healthz` and `/readyz`, and a 404
/// for anything else; the public API no longer serves `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_live_on_the_operations_listener_only() {
    let app = spawn_app().await.unwrap();
    let public = format!("127.0.0.1:{}", free_port().unwrap());
    let api_ops = format!("127.0.0.1:{}", free_port().unwrap());
    let _api = app
        .spawn_api_process(&public, &[("METASYNC_METRICS_ADDR", api_ops.as_str())])
        .unwrap();
    let worker_ops = format!("127.0.0.1:{}", free_port().unwrap());
    let _worker = app
        .spawn_worker_process("ops", &[("METASYNC_METRICS_ADDR", worker_ops.as_str())])
        .unwrap();
    wait_until_listening(&format!("http://{public}"))
        .await
        .unwrap();
    for ops in [&api_ops, &worker_ops] {
        let base = format!("http://{ops}");
        wait_until_listening(&base).await.unwrap();
        // Ready once registered (the worker) or connected (the API).
        eventually(Duration::from_secs(20), "ready", || async {
            let response = reqwest::get(format!("{base}/readyz")).await?;
            Ok((response.status() == 200).then_some(()))
        })
        .await
        .unwrap();
        let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(metrics.status(), 200);
        assert!(metrics.text().await.unwrap().contains("metasync_"), "{ops}");
        for path in ["/", "/v1/resources", "/metrics/x", "/healthz/../metrics2"] {
            let status = reqwest::get(format!("{base}{path}"))
                .await
                .unwrap()
                .status();
            assert_eq!(status, 404, "{ops}{path}");
        }
    }
    let status = reqwest::get(format!("http://{public}/metrics"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "the public API serves /metrics");
}
