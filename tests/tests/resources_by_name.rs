//! `PUT /v1/resources/by-name/{name}`: configuration as code. The first PUT creates (`201`),
//! the same PUT again changes nothing (`200`, `"changed": false`), a different definition
//! replaces (`"changed": true`); a password may be left out only while the connection target
//! and TLS settings stay (the rule of `PATCH`); `dry_run=true` answers without storing.

use metasync_api::auth::Role;
use metasync_tests::assert::assert_job;
use metasync_tests::{TestApp, create_source, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

const TENANT: &str = "acme";

fn definition(database: &str) -> Value {
    json!({
        "kind": "postgres", "host": "127.0.0.1", "port": 5432,
        "database": database, "username": "root", "password": "unused-by-trust-auth",
        "schedule": { "cron": "0 3 1 1 *" }
    })
}

fn path(name: &str) -> String {
    // The name is one path segment, percent-encoded.
    let encoded: String = encode_segment(name);
    format!("/v1/resources/by-name/{encoded}")
}

fn encode_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn put(app: &TestApp, name: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = app
        .call(TENANT, Method::PUT, &path(name), Some(body.clone()))
        .await
        .unwrap();
    (status, body)
}

async fn count_named(app: &TestApp, name: &str) -> usize {
    let (status, _, page) = app
        .call(
            TENANT,
            Method::GET,
            &format!("/v1/resources?name={}", encode_segment(name)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn the_same_put_twice_creates_then_changes_nothing() {
    let app = spawn_app().await.unwrap();
    let body = definition("shop");

    let (status, _, created) = app
        .call(TENANT, Method::PUT, &path("shop"), Some(body.clone()))
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["changed"], true);
    assert_eq!(created["name"], "shop");
    let id = created["id"].as_str().unwrap().to_owned();

    // The same definition, password included: compared by fingerprint, nothing changes.
    let (status, again) = put(&app, "shop", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["changed"], false);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["updated_at"], created["updated_at"]);

    // Without the password and with the same target: still unchanged, the sealed one kept.
    let mut without = body.clone();
    without.as_object_mut().unwrap().remove("password");
    let (status, kept) = put(&app, "shop", &without).await;
    assert_eq!((status, &kept["changed"]), (200, &json!(false)), "{kept}");
    assert_eq!(count_named(&app, "shop").await, 1);

    // Only the audited create: the unchanged PUTs wrote nothing.
    let (_, _, audit) = app
        .call(
            TENANT,
            Method::GET,
            &format!("/v1/audit?object_id={id}"),
            None,
        )
        .await
        .unwrap();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["resource.create"], "{audit}");
}

#[tokio::test]
async fn a_changed_definition_replaces_and_absent_fields_mean_defaults() {
    let app = spawn_app().await.unwrap();
    let (status, created) = put(&app, "shop", &definition("shop")).await;
    assert_eq!(status, 201, "{created}");

    // No schedule in the new definition: a PUT replaces whole, so the schedule goes.
    let mut body = definition("shop");
    let fields = body.as_object_mut().unwrap();
    fields.remove("schedule");
    fields.remove("password");
    fields.insert("options".into(), json!({ "depth": 2 }));
    let (status, replaced) = put(&app, "shop", &body).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["changed"], true);
    assert_eq!(replaced["schedule"], Value::Null);
    assert_eq!(replaced["id"], created["id"]);
}

#[tokio::test]
async fn a_new_target_needs_the_password_again() {
    let app = spawn_app().await.unwrap();
    let (status, _) = put(&app, "shop", &definition("shop")).await;
    assert_eq!(status, 201);

    let mut moved = definition("other");
    moved.as_object_mut().unwrap().remove("password");
    let (status, problem) = put(&app, "shop", &moved).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("needs `password`"),
        "{problem}"
    );

    // TLS settings are part of the target too.
    let mut tls = definition("shop");
    tls.as_object_mut().unwrap().remove("password");
    tls["tls"] = json!({ "mode": "disable" });
    let (status, problem) = put(&app, "shop", &tls).await;
    assert_eq!(status, 422, "{problem}");

    let (status, moved) = put(&app, "shop", &definition("other")).await;
    assert_eq!((status, &moved["changed"]), (200, &json!(true)), "{moved}");
    assert_eq!(moved["database"], "other");

    // Creating needs a password.
    let mut no_password = definition("shop");
    no_password.as_object_mut().unwrap().remove("password");
    let (status, problem) = put(&app, "new-one", &no_password).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(count_named(&app, "new-one").await, 0);
}

#[tokio::test]
async fn bad_bodies_and_roles_are_refused_as_problems() {
    let app = spawn_app().await.unwrap();
    // The name is the path's: a `name` in the body is an unknown field.
    let mut named = definition("shop");
    named["name"] = json!("other");
    let (status, _, problem) = app
        .call(TENANT, Method::PUT, &path("shop"), Some(named))
        .await
        .unwrap();
    assert_eq!(status, 422, "{problem}");

    let mut bad_port = definition("shop");
    bad_port["port"] = json!(0);
    let (status, problem) = put(&app, "shop", &bad_port).await;
    assert_eq!(status, 422, "{problem}");

    let (status, problem) = put(&app, "   ", &definition("shop")).await;
    assert_eq!(status, 422, "{problem}");

    for role in [Role::Viewer, Role::Operator] {
        let token = app.token_for("someone", role, TENANT);
        let (status, content_type, problem) = app
            .call_with(&token, Method::PUT, &path("shop"), Some(definition("shop")))
            .await
            .unwrap();
        assert_eq!(status, 403, "{role:?}: {problem}");
        assert_eq!(content_type, "application/problem+json");
    }
    let (status, _, _) = app
        .call_with(
            "not-a-token",
            Method::PUT,
            &path("shop"),
            Some(definition("shop")),
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(count_named(&app, "shop").await, 0);
}

#[tokio::test]
async fn names_are_path_segments_and_tenants_are_separate() {
    let app = spawn_app().await.unwrap();
    let name = "team a/orders?v=2 #1";
    let (status, created) = put(&app, name, &definition("shop")).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], name);
    let (status, again) = put(&app, name, &definition("shop")).await;
    assert_eq!((status, &again["changed"]), (200, &json!(false)), "{again}");

    // Surrounding spaces are trimmed as at creation, so the same resource is found.
    let (status, padded) = put(&app, &format!("  {name} "), &definition("shop")).await;
    assert_eq!((status, &padded["id"]), (200, &created["id"]), "{padded}");

    // Another tenant's resource of the same name is another resource.
    let (status, _, other) = app
        .call("globex", Method::PUT, &path(name), Some(definition("shop")))
        .await
        .unwrap();
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["id"], created["id"]);
}

#[tokio::test]
async fn a_dry_run_answers_what_would_happen_and_stores_nothing() {
    let app = spawn_app().await.unwrap();
    let dry = |name: &str| format!("{}?dry_run=true", path(name));
    let (status, _, planned) = app
        .call(TENANT, Method::PUT, &dry("shop"), Some(definition("shop")))
        .await
        .unwrap();
    assert_eq!(status, 201, "{planned}");
    assert_eq!(count_named(&app, "shop").await, 0);

    let (status, created) = put(&app, "shop", &definition("shop")).await;
    assert_eq!(status, 201);
    let (status, _, planned) = app
        .call(TENANT, Method::PUT, &dry("shop"), Some(definition("other")))
        .await
        .unwrap();
    assert_eq!(
        (status, &planned["changed"]),
        (200, &json!(true)),
        "{planned}"
    );
    let (_, _, stored) = app
        .call(
            TENANT,
            Method::GET,
            &format!("/v1/resources/{}", created["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(stored["database"], "shop");
}

#[tokio::test]
async fn a_resource_put_by_name_syncs() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    let (status, created) = put(&app, "src", &definition(&source)).await;
    assert_eq!(status, 201, "{created}");
    // Replaced without its password (same target): the sealed one still opens.
    let mut body = definition(&source);
    body.as_object_mut().unwrap().remove("password");
    body["options"] = json!({ "depth": 2 });
    let (status, replaced) = put(&app, "src", &body).await;
    assert_eq!(
        (status, &replaced["changed"]),
        (200, &json!(true)),
        "{replaced}"
    );

    let job = app
        .sync(TENANT, created["id"].as_str().unwrap())
        .await
        .unwrap();
    let job = app
        .wait_for_job(TENANT, job.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_job(&job).succeeded();
}
