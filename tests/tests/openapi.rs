//! The OpenAPI document against the router it describes: every documented operation is
//! routed (none answers the router's own 404 or 405), and answers one of its documented
//! statuses with the documented content type. Routes cannot be missing from the document by
//! construction (they are registered through `OpenApiRouter`; `api/src/openapi.rs` tests that
//! nothing registers a route any other way).

use axum::body::Body;
use axum::http::{Method, Request, header};
use metasync_tests::spawn_router;
use serde_json::Value;
use tower::ServiceExt as _;

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_as_documented() {
    let app = spawn_router().await.unwrap();
    let token = app.token("acme");
    let document: Value =
        serde_json::from_str(metasync_api::openapi::document_json()).expect("valid JSON");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 18, "{} paths", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        // Every path parameter is an id: a fresh one names nothing, which is enough to reach
        // the handler.
        let uri = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        let uri = if path == "/v1/search" {
            format!("{uri}?q=orders")
        } else {
            uri
        };
        for (method, operation) in item.as_object().expect("a path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"));
            let body = if operation.get("requestBody").is_some() {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from("{}")
            } else {
                Body::empty()
            };
            let response = app
                .router
                .clone()
                .oneshot(request.body(body).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let what = format!("{method} {path} answered {status} {content_type}: {text}");
            assert!(
                !text.contains("route not found") && status != 405,
                "not routed: {what}"
            );
            let documented = &operation["responses"][status.as_str()];
            assert!(!documented.is_null(), "undocumented status: {what}");
            let documented = match documented.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let name = reference.rsplit('/').next().unwrap();
                    &document["components"]["responses"][name]
                }
                None => documented,
            };
            if let Some(content) = documented.get("content").and_then(Value::as_object) {
                let mime = content_type.split(';').next().unwrap_or_default().trim();
                assert!(
                    content.contains_key(mime),
                    "undocumented content type: {what}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 21, "{checked} operations");
}

/// Found by the fuzzing: a sync or batch racing a `DELETE` of its resource saw the resource,
/// then the jobs' foreign key failed when the delete committed: a 500. The delete is held open
/// here (uncommitted) while the request runs, then committed: the request must skip the
/// resource (a 404, or a batch without it), not fail.
#[tokio::test]
async fn a_resource_deleted_under_a_sync_request_is_skipped_not_a_500() {
    let app = spawn_router().await.unwrap();
    let token = app.token("acme");
    let call = |method: Method, uri: String, body: Option<String>| {
        let router = app.router.clone();
        let token = token.clone();
        async move {
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"));
            if body.is_some() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            let body = body.map_or_else(Body::empty, Body::from);
            let response = router.oneshot(request.body(body).unwrap()).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
            (status.as_u16(), body)
        }
    };
    for (n, (uri, body)) in [
        ("/v1/resources/{id}/sync", None),
        ("/v1/syncs", Some(r#"{"resource_ids": ["{id}"]}"#)),
        ("/v1/syncs", None),
    ]
    .into_iter()
    .enumerate()
    {
        let resource = serde_json::json!({
            "name": format!("r{n}"), "kind": "postgres", "host": "127.0.0.1",
            "port": 5432, "database": "app", "username": "reader", "password": "pw"
        });
        let (status, resource) = call(
            Method::POST,
            "/v1/resources".into(),
            Some(resource.to_string()),
        )
        .await;
        assert_eq!(status, 201, "{resource}");
        let id = resource["id"].as_str().unwrap().to_owned();
        let mut delete = app.db.begin().await.unwrap();
        sqlx::query("delete from resources where id = $1::uuid")
            .bind(&id)
            .execute(&mut *delete)
            .await
            .unwrap();
        let request = tokio::spawn(call(
            Method::POST,
            uri.replace("{id}", &id),
            body.map(|b| b.replace("{id}", &id)),
        ));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        delete.commit().await.unwrap();
        let (status, body) = request.await.unwrap();
        match uri {
            "/v1/syncs" => {
                assert_eq!(status, 200, "{uri}: {body}");
                assert_eq!(body["jobs"], 0, "{uri}: {body}");
            }
            _ => assert_eq!(status, 404, "{uri}: {body}"),
        }
    }
}

/// Found by the fuzzing: serde reads a struct from a JSON array by field order, so `[null]`
/// was a valid `POST /v1/syncs` body (and an array of fields a resource). Bodies are objects.
#[tokio::test]
async fn a_body_that_is_not_an_object_is_a_422() {
    let app = spawn_router().await.unwrap();
    let token = app.token("acme");
    for (uri, body) in [
        ("/v1/syncs", "[null]"),
        ("/v1/syncs", "[[]]"),
        (
            "/v1/resources",
            r#"["shop", "postgres", "db.internal", 5432, "app", "reader", "pw"]"#,
        ),
    ] {
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = app.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 422, "{uri} {body}");
    }
}
