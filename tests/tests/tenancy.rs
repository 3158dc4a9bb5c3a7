//! Tenant isolation as an attacker would probe it: over a thousand ids of another tenant
//! (resources, jobs, tables, a batch) and ids that never existed, on every route that takes an
//! id, with every id on every route (a job's id as a resource id too). Each answer must be
//! exactly what a missing id gets, nothing of the owner's may change, and the list, batch and
//! search routes must not show the owner's objects either.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use metasync_tests::{create_source, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const OWNER: &str = "owner";
const INTRUDER: &str = "intruder";

/// `(method, path with {id}, body)` for every route that takes an id.
fn id_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/v1/resources/{id}", None),
        (
            Method::PATCH,
            "/v1/resources/{id}",
            Some(json!({ "name": "mine-now" })),
        ),
        (Method::DELETE, "/v1/resources/{id}", None),
        (Method::POST, "/v1/resources/{id}/sync", None),
        (Method::POST, "/v1/resources/{id}/test", None),
        (Method::GET, "/v1/resources/{id}/tables", None),
        (Method::GET, "/v1/resources/{id}/schemas", None),
        (Method::GET, "/v1/resources/{id}/changes", None),
        (Method::GET, "/v1/tables/{id}", None),
        (Method::GET, "/v1/jobs/{id}", None),
        (Method::POST, "/v1/jobs/{id}/cancel", None),
        (Method::POST, "/v1/jobs/{id}/retry", None),
        (Method::GET, "/v1/batches/{id}", None),
    ]
}

/// A problem without its per-request parts, to compare with another.
fn comparable(mut body: Value) -> Value {
    if let Some(problem) = body.as_object_mut() {
        problem.remove("instance");
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_ids_of_another_tenant_answer_like_missing_ones_on_every_route() {
    let app = spawn_app().await.unwrap();

    // The owner's objects: a synced source (tables, schemas, changes, a finished job), 400
    // more resources, and a batch that enqueues a job for each.
    let tables: String = (0..100)
        .map(|i| format!("create table t{i:03} (id int primary key);"))
        .collect();
    let source = create_source(&tables).await.unwrap();
    let synced = app.register(OWNER, "synced", &source).await.unwrap();
    let worker = app.spawn_worker().await;
    let job = app.sync(OWNER, synced.id).await.unwrap();
    app.wait_for_job(OWNER, job.id, Duration::from_secs(60))
        .await
        .unwrap();
    worker.stop().await.unwrap();
    let resources = app.insert_resources(OWNER, &source, 400).await.unwrap();
    let (status, _, batch) = app
        .call(OWNER, Method::POST, "/v1/syncs", Some(json!({})))
        .await
        .unwrap();
    assert_eq!(status, 202, "{batch}");
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();

    let job_ids: Vec<String> =
        sqlx::query_scalar("select id::text from jobs where tenant_id = $1 order by id")
            .bind(OWNER)
            .fetch_all(&app.db)
            .await
            .unwrap();
    let table_ids: Vec<String> =
        sqlx::query_scalar("select id::text from catalog_tables order by id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(job_ids.len() >= 401 && table_ids.len() >= 100);
    let mut ids: Vec<String> = std::iter::once(synced.id.to_string())
        .chain(resources.iter().map(Uuid::to_string))
        .chain(job_ids)
        .chain(table_ids)
        .chain(std::iter::once(batch_id.clone()))
        .collect();
    let owned = ids.len();
    ids.extend((0..100).map(|_| Uuid::now_v7().to_string()));
    assert!(ids.len() >= 1_000, "{} ids", ids.len());

    // What a missing id gets on each route, asked before any probe.
    let mut missing = Vec::new();
    for (method, path, body) in id_routes() {
        let path = path.replace("{id}", &Uuid::now_v7().to_string());
        let (status, content_type, problem) = app
            .call(INTRUDER, method.clone(), &path, body.clone())
            .await
            .unwrap();
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        missing.push(comparable(problem));
    }

    let probes = ids.iter().flat_map(|id| {
        id_routes()
            .into_iter()
            .enumerate()
            .map(move |(route, (method, path, body))| {
                (route, method, path.replace("{id}", id), body)
            })
    });
    let answers: Vec<_> = futures::stream::iter(probes)
        .map(|(route, method, path, body)| {
            let app = &app;
            async move {
                let answer = app
                    .call(INTRUDER, method.clone(), &path, body)
                    .await
                    .unwrap();
                (route, method, path, answer)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(answers.len(), ids.len() * id_routes().len());
    for (route, method, path, (status, content_type, body)) in answers {
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        assert_eq!(comparable(body), missing[route], "{method} {path}");
    }

    // Lists, batches and search show nothing of the owner's.
    for path in [
        "/v1/resources".to_owned(),
        "/v1/jobs".to_owned(),
        format!("/v1/jobs?resource_id={}", synced.id),
        "/v1/search?q=t00".to_owned(),
    ] {
        let (status, _, page) = app.call(INTRUDER, Method::GET, &path, None).await.unwrap();
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(page["items"], json!([]), "{path}: {page}");
    }
    let some: Vec<String> = ids[..owned].iter().take(500).cloned().collect();
    let (status, _, batch) = app
        .call(
            INTRUDER,
            Method::POST,
            "/v1/syncs",
            Some(json!({ "resource_ids": some })),
        )
        .await
        .unwrap();
    assert!([200, 202, 404].contains(&status), "{status}: {batch}");
    let intruder_jobs: i64 = sqlx::query_scalar("select count(*) from jobs where tenant_id = $1")
        .bind(INTRUDER)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        intruder_jobs, 0,
        "a batch of the owner's ids enqueued jobs: {batch}"
    );

    // Nothing of the owner's changed: every resource is there under its name, no job was
    // cancelled or retried, the batch is whole.
    let names: HashSet<String> =
        sqlx::query_scalar("select name from resources where tenant_id = $1")
            .bind(OWNER)
            .fetch_all(&app.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(names.len(), 401);
    assert!(!names.contains("mine-now"));
    let touched: i64 = sqlx::query_scalar(
        "select count(*) from jobs where tenant_id = $1
         and (state = 'cancelled' or cancel_requested or attempts > 1)",
    )
    .bind(OWNER)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(touched, 0);
    let (status, _, batch) = app
        .call(OWNER, Method::GET, &format!("/v1/batches/{batch_id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{batch}");
}
