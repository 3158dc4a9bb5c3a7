//! The API's handlers on their own: requests sent with `tower::ServiceExt::oneshot` to the
//! router `metasync_api::app` builds, with no socket and no worker. Authentication, input
//! validation, tenancy, conditional reads and the health probe, each answered the way a
//! client relies on (problem+json for every error).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use metasync_shared::db::resources::Resource;
use metasync_tests::{TestRouter, spawn_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    content_type: String,
    etag: Option<String>,
    body: Value,
}

async fn send(app: &TestRouter, request: Request<Body>) -> Answer {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let etag = header(header::ETAG);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        content_type,
        etag,
        body,
    }
}

fn request(method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

#[track_caller]
fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["status"], status.as_u16());
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        answer.body
    );
}

fn valid_resource() -> Value {
    json!({
        "name": "warehouse", "kind": "postgres", "host": "db.internal", "port": 5432,
        "database": "app", "username": "reader", "password": "s3cret"
    })
}

async fn create_resource(app: &TestRouter, tenant: &str) -> Resource {
    let token = app.token(tenant);
    let answer = send(
        app,
        request(
            Method::POST,
            "/v1/resources",
            Some(&token),
            Some(valid_resource()),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    serde_json::from_value(answer.body).unwrap()
}

#[tokio::test]
async fn healthz_answers_without_a_token() {
    let app = spawn_router().await.unwrap();
    let answer = send(&app, request(Method::GET, "/healthz", None, None)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "ok");
}

#[tokio::test]
async fn a_missing_token_is_a_401_problem() {
    let app = spawn_router().await.unwrap();
    let answer = send(&app, request(Method::GET, "/v1/resources", None, None)).await;
    assert_problem(&answer, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_or_forged_token_is_a_401_problem() {
    let app = spawn_router().await.unwrap();
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let expired = app.jwt.sign(&metasync_api::auth::Claims {
        sub: "t".into(),
        tenant: "acme".into(),
        exp: an_hour_ago,
    });
    let forged = metasync_api::auth::JwtKeys::new(b"another-secret-that-is-long-enough-0123456789")
        .issue("t", "acme", std::time::Duration::from_secs(3600));
    for token in [expired.as_str(), forged.as_str(), "not.a.jwt"] {
        let answer = send(
            &app,
            request(Method::GET, "/v1/resources", Some(token), None),
        )
        .await;
        assert_problem(&answer, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_bad_resource_body_is_a_422_problem() {
    let app = spawn_router().await.unwrap();
    let token = app.token("acme");
    let mut without_host = valid_resource();
    without_host.as_object_mut().unwrap().remove("host");
    let mut bad_port = valid_resource();
    bad_port["port"] = json!(70_000);
    let mut bad_kind = valid_resource();
    bad_kind["kind"] = json!("oracle");
    let mut bad_options = valid_resource();
    bad_options["options"] = json!({ "include_schemas": ["("] });
    for body in [without_host, bad_port, bad_kind, bad_options] {
        let answer = send(
            &app,
            request(
                Method::POST,
                "/v1/resources",
                Some(&token),
                Some(body.clone()),
            ),
        )
        .await;
        assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (count,): (i64,) = sqlx::query_as("select count(*) from resources")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing invalid was stored");
}

#[tokio::test]
async fn another_tenants_resource_is_a_404_problem() {
    let app = spawn_router().await.unwrap();
    let resource = create_resource(&app, "tenant-a").await;
    let theirs = app.token("tenant-b");
    for (method, path) in [
        (Method::GET, format!("/v1/resources/{}", resource.id)),
        (Method::DELETE, format!("/v1/resources/{}", resource.id)),
        (Method::GET, format!("/v1/resources/{}/tables", resource.id)),
    ] {
        let answer = send(&app, request(method.clone(), &path, Some(&theirs), None)).await;
        assert_problem(&answer, StatusCode::NOT_FOUND);
    }
    let mine = app.token("tenant-a");
    let answer = send(
        &app,
        request(
            Method::GET,
            &format!("/v1/resources/{}", resource.id),
            Some(&mine),
            None,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let read: Resource = serde_json::from_value(answer.body).unwrap();
    assert_eq!(read.id, resource.id);
}

#[tokio::test]
async fn a_catalog_read_with_its_etag_answers_304() {
    let app = spawn_router().await.unwrap();
    let resource = create_resource(&app, "acme").await;
    let token = app.token("acme");
    let path = format!("/v1/resources/{}/tables", resource.id);
    let first = send(&app, request(Method::GET, &path, Some(&token), None)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let etag = first.etag.expect("a catalog read carries an ETag");

    let conditional = |tag: &str| {
        Request::builder()
            .uri(path.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::IF_NONE_MATCH, tag)
            .body(Body::empty())
            .unwrap()
    };
    let unchanged = send(&app, conditional(&etag)).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(unchanged.body, Value::Null, "a 304 has no body");

    let stale = send(&app, conditional("\"0000\"")).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.etag.as_deref(), Some(etag.as_str()));
}

#[tokio::test]
async fn a_batch_that_submits_nothing_answers_200_and_records_no_batch() {
    let app = spawn_router().await.unwrap();
    let token = app.token("batcher");
    let sync_all = || request(Method::POST, "/v1/syncs", Some(&token), None);
    let batches = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from batches")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };

    // No resources at all.
    let answer = send(&app, sync_all()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, json!({ "batch_id": null, "jobs": 0 }));
    assert_eq!(batches().await, 0);

    create_resource(&app, "batcher").await;
    let answer = send(&app, sync_all()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["jobs"], 1);
    let batch = answer.body["batch_id"].as_str().unwrap().to_owned();
    let read = send(
        &app,
        request(
            Method::GET,
            &format!("/v1/batches/{batch}"),
            Some(&token),
            None,
        ),
    )
    .await;
    assert_eq!(read.body["jobs"], 1, "{}", read.body);

    // Every resource already has its active job: nothing new, no empty batch rows.
    for _ in 0..3 {
        let answer = send(&app, sync_all()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, json!({ "batch_id": null, "jobs": 0 }));
    }
    assert_eq!(batches().await, 1);
}
