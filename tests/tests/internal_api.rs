//! The internal API from outside: a platform's system service pushes resource definitions
//! with an internal API key (`PUT /internal/v1/tenants/{tenant}/resources/{external_id}`).
//! Keys work only on `/internal/*` and tokens only on `/v1`; the upsert is idempotent, tells
//! whether it changed anything (a re-sent password by its fingerprint), keeps the password
//! rule of `PATCH`, and is audited under the key's id.

use std::process::Stdio;
use std::time::Duration;

use metasync_tests::assert::assert_job;
use metasync_tests::{
    JWT_SECRET, REDIS_URL, TestApp, binary, create_source, eventually, free_port, signal,
    spawn_app, spawn_app_with,
};
use reqwest::Method;
use serde_json::{Value, json};

const TENANT: &str = "acme";
const KEY_OLD: &str = "old-secret-0123456789abcdef-0123456789abcdef";
const KEY_NEW: &str = "new-secret-fedcba9876543210-fedcba9876543210";
const WAIT: Duration = Duration::from_secs(60);

async fn app_with_keys() -> TestApp {
    spawn_app_with(REDIS_URL, |args| {
        args.internal.internal_api_keys = Some(format!("platform:{KEY_OLD},platform-2:{KEY_NEW}"));
    })
    .await
    .unwrap()
}

fn definition(name: &str) -> Value {
    json!({
        "name": name, "kind": "postgres", "host": "127.0.0.1", "port": 5432,
        "database": "shop", "username": "reader", "password": "first-password",
        "options": { "depth": 2 }, "schedule": { "cron": "0 3 1 1 *" }
    })
}

fn path(tenant: &str, external_id: &str) -> String {
    format!("/internal/v1/tenants/{tenant}/resources/{external_id}")
}

async fn put(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, String, Value) {
    app.call_with(key, Method::PUT, path, Some(body.clone()))
        .await
        .unwrap()
}

/// The audit events about `object_id`, oldest first: `(action, subject, fields)`.
async fn audit_of(app: &TestApp, object_id: &str) -> Vec<(String, String, Vec<String>)> {
    let (status, _, body) = app
        .call(
            TENANT,
            Method::GET,
            &format!("/v1/audit?object_id={object_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut events: Vec<(String, String, Vec<String>)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let fields = e["details"]["fields"]
                .as_array()
                .map(|f| f.iter().map(|f| f.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            (
                e["action"].as_str().unwrap().to_owned(),
                e["subject"].as_str().unwrap().to_owned(),
                fields,
            )
        })
        .collect();
    events.reverse();
    events
}

#[tokio::test]
async fn keys_work_only_on_internal_routes_and_tokens_only_on_v1() {
    let app = app_with_keys().await;
    let body = definition("shop");
    let target = path(TENANT, "ext-1");
    let token = app.token(TENANT);
    let wrong = "x".repeat(KEY_OLD.len());
    for (what, bearer) in [
        ("a wrong key", wrong.as_str()),
        ("a key one byte short", &KEY_OLD[..KEY_OLD.len() - 1]),
        ("an admin token", token.as_str()),
        ("nothing", ""),
    ] {
        let (status, content_type, problem) = put(&app, bearer, &target, &body).await;
        assert_eq!(
            (status, content_type.as_str()),
            (401, "application/problem+json"),
            "{what}: {problem}"
        );
        assert!(!problem.to_string().contains(KEY_OLD), "{problem}");
    }
    // The key is no token.
    for (method, route) in [(Method::GET, "/v1/resources"), (Method::GET, "/v1/audit")] {
        let (status, content_type, problem) =
            app.call_with(KEY_OLD, method, route, None).await.unwrap();
        assert_eq!(
            (status, content_type.as_str()),
            (401, "application/problem+json"),
            "{route}: {problem}"
        );
    }
    // Both keys of a rotation work, and the audit log names which one.
    let (status, _, first) = put(&app, KEY_OLD, &target, &body).await;
    assert_eq!(status, 201, "{first}");
    let (status, _, second) = put(&app, KEY_NEW, &path(TENANT, "ext-2"), &definition("blog")).await;
    assert_eq!(status, 201, "{second}");
    let subjects = |events: Vec<(String, String, Vec<String>)>| {
        events.into_iter().map(|e| e.1).collect::<Vec<_>>()
    };
    assert_eq!(
        subjects(audit_of(&app, first["id"].as_str().unwrap()).await),
        ["internal-key:platform"]
    );
    assert_eq!(
        subjects(audit_of(&app, second["id"].as_str().unwrap()).await),
        ["internal-key:platform-2"]
    );

    // Without configured keys, the internal routes accept nothing.
    let plain = spawn_app().await.unwrap();
    let (status, _, problem) = put(&plain, KEY_OLD, &target, &body).await;
    assert_eq!(status, 401, "{problem}");
}

#[tokio::test]
async fn the_upsert_is_idempotent_and_says_what_changed() {
    let app = app_with_keys().await;
    let target = path(TENANT, "ext-1");
    let mut body = definition("shop");

    let client = reqwest::Client::new();
    let response = client
        .put(app.url(&target))
        .bearer_auth(KEY_OLD)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/resources/{id}"));
    assert_eq!(created["changed"], true);
    assert_eq!(created["external_id"], "ext-1");
    assert!(!created.to_string().contains("first-password"));

    // The same definition again changes nothing, with or without the password.
    for _ in 0..2 {
        let (status, _, same) = put(&app, KEY_OLD, &target, &body).await;
        assert_eq!(status, 200, "{same}");
        assert_eq!(same["changed"], false, "{same}");
        assert_eq!(same["updated_at"], created["updated_at"]);
        assert_eq!(same["next_sync_at"], created["next_sync_at"]);
    }
    let mut without_password = body.clone();
    without_password.as_object_mut().unwrap().remove("password");
    let (status, _, same) = put(&app, KEY_OLD, &target, &without_password).await;
    assert_eq!((status, &same["changed"]), (200, &json!(false)), "{same}");

    // The tenant's users see the pushed resource like any other.
    let (status, _, read) = app
        .call(TENANT, Method::GET, &format!("/v1/resources/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(read["external_id"], "ext-1");
    let (status, _, _) = app
        .call("globex", Method::GET, &format!("/v1/resources/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 404);

    // A rename, then a new password alone, then new options and no schedule.
    body["name"] = json!("shop-eu");
    let (status, _, renamed) = put(&app, KEY_OLD, &target, &body).await;
    assert_eq!(
        (status, &renamed["changed"]),
        (200, &json!(true)),
        "{renamed}"
    );
    assert_eq!(renamed["name"], "shop-eu");
    assert_eq!(renamed["next_sync_at"], created["next_sync_at"]);
    body["password"] = json!("second-password");
    let (status, _, repassworded) = put(&app, KEY_OLD, &target, &body).await;
    assert_eq!((status, &repassworded["changed"]), (200, &json!(true)));
    let (status, _, same) = put(&app, KEY_OLD, &target, &body).await;
    assert_eq!((status, &same["changed"]), (200, &json!(false)), "{same}");
    body["options"] = json!({ "depth": 3 });
    body.as_object_mut().unwrap().remove("schedule");
    let (status, _, reoptioned) = put(&app, KEY_OLD, &target, &body).await;
    assert_eq!((status, &reoptioned["changed"]), (200, &json!(true)));
    assert_eq!(reoptioned["schedule"], Value::Null);

    // A new target needs the password again (422, nothing changed), and takes it.
    body["port"] = json!(5433);
    let mut no_password = body.clone();
    no_password.as_object_mut().unwrap().remove("password");
    let (status, content_type, problem) = put(&app, KEY_OLD, &target, &no_password).await;
    assert_eq!(
        (status, content_type.as_str()),
        (422, "application/problem+json"),
        "{problem}"
    );
    assert!(problem["detail"].as_str().unwrap().contains("password"));
    let (status, _, moved) = put(&app, KEY_OLD, &target, &body).await;
    assert_eq!((status, &moved["changed"]), (200, &json!(true)), "{moved}");
    assert_eq!(moved["port"], 5433);

    let fields = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let key = "internal-key:platform".to_owned();
    assert_eq!(
        audit_of(&app, &id).await,
        [
            ("resource.create".to_owned(), key.clone(), vec![]),
            ("resource.update".to_owned(), key.clone(), fields(&["name"])),
            (
                "resource.update".to_owned(),
                key.clone(),
                fields(&["password"])
            ),
            (
                "resource.update".to_owned(),
                key.clone(),
                fields(&["options", "schedule"])
            ),
            (
                "resource.update".to_owned(),
                key,
                fields(&["port", "password"])
            ),
        ]
    );
}

#[tokio::test]
async fn a_pushed_resource_syncs_and_is_checked_like_a_registered_one() {
    let app = app_with_keys().await;
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    let body = json!({
        "name": "shop", "kind": "postgres", "host": "127.0.0.1", "port": 5432,
        "database": source, "username": "root", "password": "unused-by-trust-auth"
    });
    let (status, _, created) = put(&app, KEY_OLD, &path(TENANT, "ext-1"), &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    // The password was sealed for this resource's target: the worker opens it and connects.
    let job = app.sync(TENANT, id).await.unwrap();
    let job = app.wait_for_job(TENANT, job.id, WAIT).await.unwrap();
    assert_job(&job).succeeded();

    // Bad input, each a problem+json 4xx.
    let mut metadata = body.clone();
    metadata["host"] = json!("169.254.169.254");
    let mut no_password = body.clone();
    no_password.as_object_mut().unwrap().remove("password");
    let mut unknown = body.clone();
    unknown["colour"] = json!("blue");
    let mut taken = body.clone();
    taken["name"] = json!("shop");
    let long_tenant = "t".repeat(65);
    for (what, route, payload, expected) in [
        ("a bad tenant", path("bad%20tenant", "ext-9"), &body, 400),
        (
            "a tenant with a newline",
            path("acme%0A", "ext-9"),
            &body,
            400,
        ),
        (
            "a tenant starting with -",
            path("-acme", "ext-9"),
            &body,
            400,
        ),
        (
            "an over-long tenant",
            path(&long_tenant, "ext-9"),
            &body,
            400,
        ),
        (
            "a control character in the id",
            path(TENANT, "ext%07"),
            &body,
            400,
        ),
        ("a metadata host", path(TENANT, "ext-9"), &metadata, 422),
        (
            "a creation without password",
            path(TENANT, "ext-9"),
            &no_password,
            422,
        ),
        ("an unknown field", path(TENANT, "ext-9"), &unknown, 422),
        ("a taken name", path(TENANT, "ext-9"), &taken, 409),
    ] {
        let (status, content_type, problem) = put(&app, KEY_OLD, &route, payload).await;
        assert_eq!(
            (status, content_type.as_str()),
            (expected, "application/problem+json"),
            "{what}: {problem}"
        );
    }
    let (status, _, wrong_method) = app
        .call_with(KEY_OLD, Method::POST, &path(TENANT, "ext-1"), None)
        .await
        .unwrap();
    assert_eq!(status, 405, "{wrong_method}");
}

#[tokio::test]
async fn pushes_count_against_the_resource_cap() {
    let app = spawn_app_with(REDIS_URL, |args| {
        args.internal.internal_api_keys = Some(format!("platform:{KEY_OLD}"));
        args.quotas.max_resources = 1;
    })
    .await
    .unwrap();
    let (status, _, _) = put(&app, KEY_OLD, &path(TENANT, "ext-1"), &definition("a")).await;
    assert_eq!(status, 201);
    let (status, content_type, problem) =
        put(&app, KEY_OLD, &path(TENANT, "ext-2"), &definition("b")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (403, "application/problem+json"),
        "{problem}"
    );
    // Updating the one it has is no new resource.
    let mut renamed = definition("a2");
    renamed.as_object_mut().unwrap().remove("password");
    let (status, _, body) = put(&app, KEY_OLD, &path(TENANT, "ext-1"), &renamed).await;
    assert_eq!(status, 200, "{body}");
    // Other tenants have their own cap.
    let (status, _, _) = put(&app, KEY_OLD, &path("globex", "ext-1"), &definition("a")).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn concurrent_first_pushes_create_one_resource() {
    let app = app_with_keys().await;
    let body = definition("shop");
    let target = path(TENANT, "ext-1");
    let pushes = (0..8).map(|_| put(&app, KEY_OLD, &target, &body));
    let statuses: Vec<u16> = futures::future::join_all(pushes)
        .await
        .into_iter()
        .map(|(status, _, _)| status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 200),
        "{statuses:?}"
    );
    let count: i64 = sqlx::query_scalar("select count(*) from resources")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_key_never_reaches_a_log() {
    let app = spawn_app().await.unwrap();
    let binary = binary("metasync-api").unwrap();
    // A secret too short stops start-up with a message that does not echo it.
    let short = "short-secret-0123456789";
    let output = app
        .process_command(&binary)
        .arg("serve")
        .env("METASYNC_JWT_SECRET", JWT_SECRET)
        .env("METASYNC_INTERNAL_API_KEYS", format!("platform:{short}"))
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("METASYNC_INTERNAL_API_KEYS"), "{stderr}");
    assert!(!stderr.contains(short), "{stderr}");

    // Serving at trace level, through failed and successful calls.
    let port = free_port().unwrap();
    let mut api = app
        .process_command(&binary)
        .arg("serve")
        .env("METASYNC_JWT_SECRET", JWT_SECRET)
        .env("METASYNC_API_ADDR", format!("127.0.0.1:{port}"))
        .env("METASYNC_INTERNAL_API_KEYS", format!("platform:{KEY_OLD}"))
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = api.stderr.take().unwrap();
    let reading = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut log, &mut text).await;
        text
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), "the API to listen", || {
        let (client, base) = (&client, &base);
        async move {
            Ok(client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .ok()
                .map(|_| ()))
        }
    })
    .await
    .unwrap();
    let target = format!("{base}{}", path(TENANT, "ext-1"));
    let almost = format!("{}x", &KEY_OLD[..KEY_OLD.len() - 1]);
    for key in [KEY_OLD, almost.as_str(), KEY_OLD] {
        client
            .put(&target)
            .bearer_auth(key)
            .json(&definition("shop"))
            .send()
            .await
            .unwrap();
    }
    let answer = client
        .get(format!("{base}/v1/resources"))
        .bearer_auth(KEY_OLD)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    signal(&api, "TERM").unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), api.wait()).await;
    let log = String::from_utf8_lossy(&reading.await.unwrap()).into_owned();
    // The upsert's statements are there, the key is not.
    assert!(log.contains("insert into audit_events"), "{log}");
    assert!(!log.contains(KEY_OLD) && !log.contains(&almost));
    assert!(!log.contains(&KEY_OLD[..16]));
}
