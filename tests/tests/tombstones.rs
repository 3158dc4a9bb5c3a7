//! Deleting a resource keeps its jobs readable (an audit trail): its catalog, change history
//! and sealed password go, its active job ends `cancelled`, and a tombstone keeps its id, name
//! and kind.

use std::time::Duration;

use metasync_tests::{create_source, spawn_app};
use reqwest::Method;
use serde_json::Value;

const T: &str = "tomb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_resource_leaves_its_jobs_readable_and_its_catalog_gone() {
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "doomed", &source).await.unwrap();
    let rid = resource.id;

    let worker = app.spawn_worker().await;
    let done = app.sync(T, rid).await.unwrap();
    let done = app
        .wait_for_job(T, done.id, Duration::from_secs(60))
        .await
        .unwrap();
    worker.stop().await.unwrap();
    // No worker now: this one stays queued until the delete.
    let queued = app.sync(T, rid).await.unwrap();

    let (status, _, body) = app
        .call(T, Method::DELETE, &format!("/v1/resources/{rid}"), None)
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");

    let (status, _, body) = app
        .call(T, Method::GET, &format!("/v1/resources/{rid}"), None)
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, _, old) = app
        .call(T, Method::GET, &format!("/v1/jobs/{}", done.id), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["state"], "succeeded");
    assert!(!old["attempt_history"].as_array().unwrap().is_empty());
    let (status, _, ended) = app
        .call(T, Method::GET, &format!("/v1/jobs/{}", queued.id), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["state"], "cancelled", "{ended}");
    assert_eq!(ended["error"], "the resource was deleted", "{ended}");
    let (_, _, listing) = app
        .call(T, Method::GET, &format!("/v1/jobs?resource_id={rid}"), None)
        .await
        .unwrap();
    let listed: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{listing}");

    let catalog: i64 = sqlx::query_scalar(
        "select (select count(*) from catalog_tables where resource_id = $1)
              + (select count(*) from catalog_schemas where resource_id = $1)
              + (select count(*) from catalog_changes where resource_id = $1)
              + (select count(*) from resources where id = $1)",
    )
    .bind(rid.uuid())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(catalog, 0, "the catalog and the sealed password are gone");
    let tombstone: (String, String) =
        sqlx::query_as("select name, kind from resource_tombstones where id = $1")
            .bind(rid.uuid())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(tombstone, ("doomed".to_owned(), "postgres".to_owned()));

    // The name is free again, and the new resource's jobs are its own.
    let again = app.register(T, "doomed", &source).await.unwrap();
    assert_ne!(again.id, rid);
    let (_, _, listing) = app
        .call(
            T,
            Method::GET,
            &format!("/v1/jobs?resource_id={}", again.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(listing["items"], Value::Array(Vec::new()));
}

/// A delete racing a batch sync of the same resource: both answer (never a 500 from a
/// deadlock, which the fuzzing found when the delete locked the job before the resource), and
/// no active job outlives the resource, whether the batch came first or second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_batch_sync_answers_both_and_leaves_no_active_job() {
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    for round in 0..24 {
        let resource = app
            .register(T, &format!("raced-{round}"), &source)
            .await
            .unwrap();
        let rid = resource.id;
        if round % 2 == 0 {
            // No worker: this job stays queued, so the batch meets an active job.
            app.sync(T, rid).await.unwrap();
        }
        let batch = serde_json::json!({ "resource_ids": [rid] });
        let path = format!("/v1/resources/{rid}");
        let (synced, deleted) = tokio::join!(
            app.call(T, Method::POST, "/v1/syncs", Some(batch)),
            app.call(T, Method::DELETE, &path, None),
        );
        let (status, _, body) = synced.unwrap();
        assert!(
            matches!(status, 200 | 202),
            "round {round}: {status} {body}"
        );
        let (status, _, body) = deleted.unwrap();
        assert_eq!(status, 204, "round {round}: {body}");
        let active: i64 = sqlx::query_scalar(
            "select count(*) from jobs
             where resource_id = $1 and state in ('queued', 'running', 'retrying')",
        )
        .bind(rid.uuid())
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(active, 0, "round {round}: a job outlived its resource");
    }
}
