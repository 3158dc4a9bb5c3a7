//! The API's handlers on their own: requests sent with `tower::ServiceExt::oneshot` to the
//! router `metasync_api::app` builds, with no socket and no worker. Authentication, input
//! validation, tenancy, conditional reads and the health probe, each answered the way a
//! client relies on (problem+json for every error).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use metasync_api::auth::{Claims, Role};
use metasync_api::config::JwtArgs;
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
    let expired = app
        .jwt
        .sign(&Claims {
            sub: "t".into(),
            exp: an_hour_ago,
            iat: Some(an_hour_ago - 60),
            role: Some(Role::Admin),
            other: [("tenant".to_owned(), "acme".into())].into(),
        })
        .unwrap();
    let forged = JwtArgs::hs256("another-secret-that-is-long-enough-0123456789")
        .verifier()
        .unwrap()
        .issue("t", Role::Admin, Some("acme"), Duration::from_secs(3600))
        .unwrap();
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
async fn each_role_does_what_it_may_and_gets_a_403_problem_otherwise() {
    let app = spawn_router().await.unwrap();
    let resource = create_resource(&app, "acme").await;
    let token = |role, tenant: Option<&str>| {
        app.jwt
            .issue("someone", role, tenant, Duration::from_secs(600))
            .unwrap()
    };
    let (viewer, operator, admin, fleet) = (
        token(Role::Viewer, Some("acme")),
        token(Role::Operator, Some("acme")),
        token(Role::Admin, Some("acme")),
        token(Role::Fleet, None),
    );
    let rid = resource.id;
    let patch = json!({ "port": 6543, "password": "again" });
    // (method, path, body, the least role that may)
    let routes: Vec<(Method, String, Option<Value>, Role)> = vec![
        (Method::GET, "/v1/resources".into(), None, Role::Viewer),
        (
            Method::GET,
            format!("/v1/resources/{rid}"),
            None,
            Role::Viewer,
        ),
        (Method::GET, "/v1/jobs".into(), None, Role::Viewer),
        (Method::GET, "/v1/audit".into(), None, Role::Admin),
        (
            Method::GET,
            format!("/v1/resources/{rid}/tables"),
            None,
            Role::Viewer,
        ),
        (
            Method::POST,
            format!("/v1/resources/{rid}/sync"),
            None,
            Role::Operator,
        ),
        (
            Method::POST,
            "/v1/syncs".into(),
            Some(json!({ "resource_ids": [rid] })),
            Role::Operator,
        ),
        (
            Method::PATCH,
            format!("/v1/resources/{rid}"),
            Some(patch),
            Role::Admin,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(valid_resource()),
            Role::Admin,
        ),
    ];
    for (method, path, body, least) in &routes {
        for (role, token) in [
            (Role::Viewer, &viewer),
            (Role::Operator, &operator),
            (Role::Admin, &admin),
        ] {
            let answer = send(
                &app,
                request(method.clone(), path, Some(token), body.clone()),
            )
            .await;
            if role < *least {
                assert_problem(&answer, StatusCode::FORBIDDEN);
            } else {
                assert_ne!(
                    answer.status,
                    StatusCode::FORBIDDEN,
                    "{role:?} {method} {path}"
                );
                assert_ne!(
                    answer.status,
                    StatusCode::UNAUTHORIZED,
                    "{role:?} {method} {path}"
                );
            }
        }
        // A fleet token carries no tenant: no tenant route is open to it.
        let answer = send(
            &app,
            request(method.clone(), path, Some(&fleet), body.clone()),
        )
        .await;
        assert_problem(&answer, StatusCode::FORBIDDEN);
    }
    // Deleting is an admin's; the viewer's and operator's attempts leave the resource there.
    for token in [&viewer, &operator] {
        let answer = send(
            &app,
            request(
                Method::DELETE,
                &format!("/v1/resources/{rid}"),
                Some(token),
                None,
            ),
        )
        .await;
        assert_problem(&answer, StatusCode::FORBIDDEN);
    }
    let answer = send(
        &app,
        request(
            Method::DELETE,
            &format!("/v1/resources/{rid}"),
            Some(&admin),
            None,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
}

#[tokio::test]
async fn hostile_input_is_a_4xx_problem_never_a_500() {
    let app = spawn_router().await.unwrap();
    let token = app.token("acme");
    let resource = create_resource(&app, "acme").await;
    let rid = resource.id;
    let mut with_nul = valid_resource();
    with_nul["name"] = "ware\u{0}house".into();
    let mut nul_option = valid_resource();
    nul_option["name"] = "other".into();
    nul_option["options"] = json!({ "include": ["a\u{0}b"] });
    let cursor_with_nul = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"["a\u0000",1]"#)
    };
    let big = json!({ "name": "x".repeat(2 * 1024 * 1024) });
    let cases: Vec<(Method, String, Option<Value>, StatusCode)> = vec![
        (
            Method::GET,
            "/v1/search?q=a%00b".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/v1/resources/{rid}/tables?schema=%00"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/v1/resources?cursor={cursor_with_nul}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/resources/%00".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(with_nul),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(nul_option),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            format!("/v1/resources/{rid}"),
            Some(json!({ "name": "a\u{0}" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PATCH,
            format!("/v1/resources/{rid}"),
            Some(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/v1/syncs".into(),
            Some(big),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::GET,
            format!("/v1/search?q={}", "a".repeat(10_000)),
            None,
            StatusCode::URI_TOO_LONG,
        ),
        (
            Method::from_bytes(b"BREW").unwrap(),
            "/v1/resources".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, body, expected) in cases {
        let answer = send(&app, request(method.clone(), &path, Some(&token), body)).await;
        assert_eq!(
            answer.status, expected,
            "{method} {:.80}: {}",
            path, answer.body
        );
        assert_problem(&answer, expected);
    }
    // Headers over the limit.
    let mut huge = request(Method::GET, "/v1/resources", Some(&token), None);
    huge.headers_mut()
        .insert("x-padding", "p".repeat(20_000).parse().unwrap());
    assert_problem(
        &send(&app, huge).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    );
    // Nothing was stored or broken on the way: the one resource is still there, unchanged.
    let answer = send(
        &app,
        request(Method::GET, "/v1/resources", Some(&token), None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["items"][0]["name"], "warehouse");
}

#[tokio::test]
async fn tenant_data_is_private_to_the_client_and_revalidated() {
    let app = spawn_router().await.unwrap();
    let token = app.token("acme");
    let response = app
        .router
        .clone()
        .oneshot(request(Method::GET, "/v1/resources", Some(&token), None))
        .await
        .unwrap();
    assert_eq!(
        response.headers().get(header::CACHE_CONTROL).unwrap(),
        "private, no-cache"
    );
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
