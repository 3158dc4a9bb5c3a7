//! Query parameters are strict (an unknown one or an unknown value is a 400 that names it and
//! lists the valid ones), the filters users reach for exist, and PATCH merges nested objects.

use std::time::Duration;

use metasync_tests::{TestApp, assert_job, create_source, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

const TENANT: &str = "acme";

async fn get(app: &TestApp, path: &str) -> (u16, String, Value) {
    app.call(TENANT, Method::GET, path, None).await.unwrap()
}

#[tokio::test]
async fn an_unknown_query_parameter_or_value_is_a_400_that_lists_the_valid_ones() {
    let app = spawn_app().await.unwrap();
    let resource = app.register(TENANT, "shop", "test").await.unwrap();
    let id = resource.id;
    for (path, names, lists) in [
        (
            "/v1/jobs?batch=x",
            "`batch`",
            vec!["`batch_id`", "`trigger`", "`state`"],
        ),
        (
            "/v1/resources?nmae=shop",
            "`nmae`",
            vec!["`name`", "`cursor`"],
        ),
        (
            &format!("/v1/resources/{id}/tables?databse=x") as &str,
            "`databse`",
            vec!["`database`", "`schema`", "`kind`"],
        ),
        (
            &format!("/v1/resources/{id}?verbose=1"),
            "`verbose`",
            vec!["takes none"],
        ),
    ] {
        let (status, content_type, problem) = get(&app, path).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(names), "{path}: {detail}");
        for valid in lists {
            assert!(detail.contains(valid), "{path}: {detail}");
        }
    }
    // Unknown values name the valid ones too.
    for (path, valid) in [
        (format!("/v1/resources/{id}/tables?kind=views"), "view"),
        ("/v1/jobs?trigger=cron".to_owned(), "schedule"),
        ("/v1/jobs?state=done".to_owned(), "succeeded"),
    ] {
        let (status, _, problem) = get(&app, &path).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(valid),
            "{path}: {problem}"
        );
    }
    // Known parameters still work.
    let (status, _, _) = get(
        &app,
        &format!("/v1/resources/{id}/tables?kind=view&limit=5"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn jobs_filter_by_batch_trigger_and_time_and_show_their_trigger() {
    let app = spawn_app().await.unwrap();
    let a = app.register(TENANT, "a", "test").await.unwrap();
    let b = app.register(TENANT, "b", "test").await.unwrap();
    let before = chrono::Utc::now();
    let manual = app.sync(TENANT, a.id).await.unwrap();
    assert_eq!(manual.trigger, metasync_shared::domain::Trigger::Manual);
    let (status, _, batch) = app
        .call(
            TENANT,
            Method::POST,
            "/v1/syncs",
            Some(json!({ "resource_ids": [b.id] })),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{batch}");
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();

    let (_, _, page) = get(&app, &format!("/v1/jobs?batch_id={batch_id}")).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["resource_id"], json!(b.id));
    assert_eq!(items[0]["trigger"], "batch");

    let (_, _, page) = get(&app, "/v1/jobs?trigger=manual").await;
    let ids: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["id"])
        .collect();
    assert_eq!(ids, vec![&json!(manual.id)], "{page}");

    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, _, page) = get(
        &app,
        &format!("/v1/jobs?since={}", since.replace('+', "%2B")),
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    let (_, _, page) = get(&app, "/v1/jobs?since=2999-01-01T00:00:00Z").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
}

#[tokio::test]
async fn tables_filter_by_database() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let first = create_source("create table in_first (id int);")
        .await
        .unwrap();
    let second = create_source("create table in_second (id int);")
        .await
        .unwrap();
    let resource = app
        .register_via(
            TENANT,
            "two",
            &first,
            5432,
            json!({ "options": { "databases": [first, second] } }),
        )
        .await
        .unwrap();
    let job = app.sync(TENANT, resource.id).await.unwrap();
    let job = app
        .wait_for_job(TENANT, job.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_job(&job).succeeded();
    let (_, _, page) = get(
        &app,
        &format!("/v1/resources/{}/tables?database={second}", resource.id),
    )
    .await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["in_second"], "{page}");
}

#[tokio::test]
async fn patch_merges_the_retry_policy_and_options_and_refuses_a_cap_below_the_base() {
    let app = spawn_app().await.unwrap();
    let resource = app
        .register_via(
            TENANT,
            "shop",
            "test",
            5432,
            json!({
                "retry_policy": { "base_ms": 100, "cap_ms": 5000, "max_attempts": 4 },
                "options": { "include_schemas": ["public"], "depth": 2 }
            }),
        )
        .await
        .unwrap();
    let path = format!("/v1/resources/{}", resource.id);
    let (status, _, changed) = app
        .call(
            TENANT,
            Method::PATCH,
            &path,
            Some(json!({ "retry_policy": { "max_attempts": 2 } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed["retry_policy"],
        json!({ "base_ms": 100, "factor": null, "cap_ms": 5000, "max_attempts": 2 })
    );
    let (status, _, changed) = app
        .call(
            TENANT,
            Method::PATCH,
            &path,
            Some(json!({ "options": { "depth": 1 } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{changed}");
    // `options` merges key by key: the schemas filter is kept.
    assert_eq!(
        changed["options"],
        json!({ "include_schemas": ["public"], "depth": 1 }),
        "{changed}"
    );
    // A list given replaces that list whole; a bad key is a 422 naming it, and changes nothing.
    let (status, _, changed) = app
        .call(
            TENANT,
            Method::PATCH,
            &path,
            Some(json!({ "options": { "include_schemas": [] } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["options"], json!({ "depth": 1 }), "{changed}");
    let (status, _, problem) = app
        .call(
            TENANT,
            Method::PATCH,
            &path,
            Some(json!({ "options": { "depth": null } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("options.depth"),
        "{problem}"
    );
    // `null` removes the policy.
    let (status, _, changed) = app
        .call(
            TENANT,
            Method::PATCH,
            &path,
            Some(json!({ "retry_policy": null })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(changed["retry_policy"], Value::Null);
    // A cap below the base, given or after the merge, is a 422.
    for policy in [json!({ "base_ms": 500, "cap_ms": 100 })] {
        let (status, content_type, problem) = app
            .call(
                TENANT,
                Method::PATCH,
                &path,
                Some(json!({ "retry_policy": policy })),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{problem}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["detail"].as_str().unwrap().contains("cap_ms"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn a_batch_reports_what_became_of_every_requested_id() {
    let app = spawn_app().await.unwrap();
    // Whitespace alone is not "no body" (which syncs everything): it is not JSON.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/syncs", app.base))
        .bearer_auth(app.token(TENANT))
        .header("content-type", "application/json")
        .body("\t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let active = app.register(TENANT, "active", "test").await.unwrap();
    let idle = app.register(TENANT, "idle", "test").await.unwrap();
    let kept = app.sync(TENANT, active.id).await.unwrap();
    let unknown = uuid::Uuid::now_v7();
    let (status, _, body) = app
        .call(
            TENANT,
            Method::POST,
            "/v1/syncs",
            Some(json!({ "resource_ids": [active.id, idle.id, unknown] })),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["jobs"], 1);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{body}");
    assert_eq!(results[0]["resource_id"], json!(active.id));
    assert_eq!(results[0]["outcome"], "deduplicated");
    assert_eq!(results[0]["job_id"], json!(kept.id));
    assert_eq!(results[1]["resource_id"], json!(idle.id));
    assert_eq!(results[1]["outcome"], "enqueued");
    let (_, _, batch_jobs) = get(
        &app,
        &format!("/v1/jobs?batch_id={}", body["batch_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(results[1]["job_id"], batch_jobs["items"][0]["id"]);
    assert_eq!(results[2]["resource_id"], json!(unknown));
    assert_eq!(results[2]["outcome"], "not_found");
    assert_eq!(results[2]["job_id"], Value::Null);

    // Nothing to run: 200, no batch, and still every id accounted for.
    let (status, _, body) = app
        .call(
            TENANT,
            Method::POST,
            "/v1/syncs",
            Some(json!({ "resource_ids": [active.id] })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["batch_id"], Value::Null);
    assert_eq!(body["results"][0]["outcome"], "deduplicated");
}
