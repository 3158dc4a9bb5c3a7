//! Test-connection (`POST /v1/resources/test`, `POST /v1/resources/{id}/test`): a worker
//! connects the way a sync would and the API returns what it found, classified. Each test has
//! its own catalog database, queue and workers; sources are the shared PostgreSQL and MariaDB,
//! a refused port, a stalling proxy.

use std::time::{Duration, Instant};

use metasync_api::auth::Role;
use metasync_shared::connection_test::{ConnectionTestResult, FailureCode};
use metasync_tests::fixtures::MariaDb;
use metasync_tests::{
    FaultProxy, ProxyMode, TestApp, create_source, eventually, free_port, spawn_app, spawn_app_with,
};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const T: &str = "probe";

fn postgres(database: &str) -> Value {
    json!({
        "name": "pg", "kind": "postgres", "host": "127.0.0.1", "port": 5432,
        "database": database, "username": "root", "password": "unused-by-trust-auth",
    })
}

fn mariadb(database: &str, username: &str, password: &str) -> Value {
    json!({
        "name": "my", "kind": "mysql", "host": "127.0.0.1", "port": 3306,
        "database": database, "username": username, "password": password,
    })
}

/// `POST path` with `body`; expects a 200 with a result.
async fn tested(app: &TestApp, path: &str, body: Option<Value>) -> ConnectionTestResult {
    let (status, _, result) = app.call(T, Method::POST, path, body).await.unwrap();
    assert_eq!(status, 200, "{result}");
    serde_json::from_value(result.clone()).unwrap_or_else(|e| panic!("{e}: {result}"))
}

/// `POST /v1/resources/test` with `body`; expects a 200 with a result.
async fn test_definition(app: &TestApp, body: Value) -> ConnectionTestResult {
    tested(app, "/v1/resources/test", Some(body)).await
}

/// Rows of `connection_tests` left in the app's catalog.
async fn stored_tests(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from connection_tests")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until every test row is gone (the API deletes its row just after answering).
async fn no_tests_left(app: &TestApp) {
    eventually(
        Duration::from_secs(5),
        "the test rows to be deleted",
        || async { Ok((stored_tests(app).await == 0).then_some(())) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_good_postgres_source_reports_engine_version_tls_and_no_missing_grant() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();

    // Unsaved, over TLS (the shared server has ssl=on).
    let mut body = postgres(&source);
    body["tls"] = json!({ "mode": "require" });
    let result = test_definition(&app, body).await;
    assert!(result.ok, "{result:?}");
    assert!(result.reachable);
    assert_eq!(result.authenticated, Some(true));
    assert_eq!(result.engine.as_deref(), Some("postgresql"));
    assert!(
        result.server_version.as_deref().unwrap().starts_with("15"),
        "{result:?}"
    );
    assert_eq!(result.tls, Some(true));
    assert!(result.missing_grants.is_empty(), "{result:?}");
    assert!(result.error.is_none());

    // In clear, as registered: TLS off is reported as off.
    let mut body = postgres(&source);
    body["tls"] = json!({ "mode": "disable" });
    let result = test_definition(&app, body.clone()).await;
    assert_eq!(result.tls, Some(false), "{result:?}");

    // Stored: tested as it is, and the test is in the audit log.
    let resource = app.create_resource(T, body).await.unwrap();
    let result = tested(&app, &format!("/v1/resources/{}/test", resource.id), None).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.tls, Some(false));
    let (status, _, audit) = app.call(T, Method::GET, "/v1/audit", None).await.unwrap();
    assert_eq!(status, 200, "{audit}");
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "resource.test" && e["object_id"] == resource.id.to_string()),
        "{audit}"
    );
    no_tests_left(&app).await;
}

#[tokio::test]
async fn a_good_mariadb_source_reports_engine_version_and_missing_grants() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let db = MariaDb::create().await;

    let result = test_definition(&app, mariadb(&db.name, "root", "")).await;
    assert!(result.ok, "{result:?}");
    assert!(result.reachable);
    assert_eq!(result.authenticated, Some(true));
    assert_eq!(result.engine.as_deref(), Some("mariadb"));
    assert!(
        result
            .server_version
            .as_deref()
            .unwrap()
            .contains("MariaDB"),
        "{result:?}"
    );
    // The shared MariaDB has no TLS; `prefer` goes on in clear and says so.
    assert_eq!(result.tls, Some(false));
    assert!(result.missing_grants.is_empty(), "{result:?}");

    // A reader with SELECT but not SHOW VIEW: connected, and told what the scan would miss.
    let user = format!("p{}", &Uuid::now_v7().simple().to_string()[20..]);
    db.run(&[
        &format!("create user '{user}'@'%' identified by 'reader-pw'"),
        &format!("grant select on `{{db}}`.* to '{user}'@'%'"),
    ])
    .await;
    let result = test_definition(&app, mariadb(&db.name, &user, "reader-pw")).await;
    db.run(&[&format!("drop user '{user}'@'%'")]).await;
    assert_eq!(result.authenticated, Some(true), "{result:?}");
    assert!(!result.ok, "{result:?}");
    let missing: Vec<&str> = result
        .missing_grants
        .iter()
        .map(|g| g.privilege.as_str())
        .collect();
    assert_eq!(missing, ["SHOW VIEW"], "{result:?}");
    db.drop().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_200_that_says_authentication_failed() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let db = MariaDb::create().await;
    let password = format!("Wrong{}", Uuid::now_v7().simple());
    // MariaDB's root has no password: offering one fails authentication.
    let result = test_definition(&app, mariadb(&db.name, "root", &password)).await;
    db.drop().await;
    assert!(!result.ok);
    assert!(result.reachable, "{result:?}");
    assert_eq!(result.authenticated, Some(false));
    let error = result.error.as_ref().unwrap();
    assert_eq!(error.code, FailureCode::AuthenticationFailed, "{result:?}");
    assert!(!error.transient);
    assert!(
        error.message.starts_with("connecting to 127.0.0.1:3306: "),
        "{error:?}"
    );
    assert!(error.message.contains("Access denied"), "{error:?}");
    assert!(error.hint.contains("password"), "{error:?}");
    let text = serde_json::to_string(&result).unwrap();
    assert!(!text.contains(&password));
}

#[tokio::test]
async fn a_refused_port_is_a_200_that_says_connection_refused() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let port = free_port().unwrap();
    let mut body = postgres("nothing");
    body["port"] = json!(port);
    let result = test_definition(&app, body).await;
    assert!(!result.ok && !result.reachable, "{result:?}");
    assert_eq!(result.authenticated, None);
    assert_eq!(result.engine, None);
    let error = result.error.unwrap();
    assert_eq!(error.code, FailureCode::ConnectionRefused);
    assert!(error.transient);
    assert_eq!(
        error.message,
        format!("connecting to 127.0.0.1:{port}: the connection was refused")
    );
    no_tests_left(&app).await;
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_a_200_that_says_tls() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    // The shared server's certificate is not signed by this test's own CA.
    let ca = metasync_tests::tls::TestCa::new().unwrap();
    let mut body = postgres(&source);
    body["tls"] = json!({ "mode": "verify-ca", "ca": ca.cert_pem });
    let result = test_definition(&app, body).await;
    assert!(!result.ok && result.reachable, "{result:?}");
    assert_eq!(result.authenticated, None);
    let error = result.error.unwrap();
    assert_eq!(error.code, FailureCode::Tls, "{error:?}");
    assert!(!error.transient);
    assert!(
        error.message.contains("not signed by a trusted CA"),
        "{error:?}"
    );
    assert!(error.hint.contains("tls.ca"), "{error:?}");
}

#[tokio::test]
async fn a_host_the_policy_denies_is_a_422_before_anything_is_stored_or_sent() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    for host in [
        "10.0.0.7",
        "169.254.169.254",
        "/var/run/postgresql",
        "db:5432",
    ] {
        let mut body = postgres("x");
        body["host"] = json!(host);
        let (status, content_type, problem) = app
            .call(T, Method::POST, "/v1/resources/test", Some(body))
            .await
            .unwrap();
        assert_eq!(status, 422, "{host}: {problem}");
        assert_eq!(content_type, "application/problem+json");
    }
    // Invalid like a registration: a bad TLS mode, a bad option.
    let mut body = postgres("x");
    body["options"] = json!({ "include": ["("] });
    let (status, _, _) = app
        .call(T, Method::POST, "/v1/resources/test", Some(body))
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(stored_tests(&app).await, 0);
    let lane = app.queue.keys().tests.clone();
    assert!(!app.queue_keys().await.unwrap().contains(&lane));
}

#[tokio::test]
async fn with_no_live_worker_a_test_is_a_503_with_retry_after_and_nothing_is_stored() {
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.create_resource(T, postgres(&source)).await.unwrap();
    for (path, body) in [
        ("/v1/resources/test".to_owned(), Some(postgres(&source))),
        (format!("/v1/resources/{}/test", resource.id), None),
    ] {
        let mut request = app.http.post(app.url(&path)).bearer_auth(app.token(T));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "5");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains("no worker"),
            "{problem}"
        );
    }
    assert_eq!(stored_tests(&app).await, 0);
    let lane = app.queue.keys().tests.clone();
    assert!(!app.queue_keys().await.unwrap().contains(&lane));
    // Nor is an unanswered test audited.
    let (_, _, audit) = app.call(T, Method::GET, "/v1/audit", None).await.unwrap();
    assert!(!audit.to_string().contains("resource.test"), "{audit}");
}

/// A live lease in the registry with no test lane behind it, then one that takes the test and
/// never answers: `503` (nobody took it; withdrawn from the lane) and `504` (taken, unanswered).
#[tokio::test]
async fn a_test_nobody_takes_is_a_503_and_one_taken_and_not_answered_a_504() {
    let app = spawn_app_with(metasync_tests::REDIS_URL, |args| {
        args.connection_test_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap();
    app.queue
        .heartbeat("ghost-worker", Duration::from_secs(60))
        .await
        .unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let post = || {
        app.http
            .post(app.url("/v1/resources/test"))
            .bearer_auth(app.token(T))
            .json(&postgres(&source))
            .send()
    };

    let response = post().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no worker took"),
        "{problem}"
    );
    let lane = app.queue.keys().tests.clone();
    let client = redis::Client::open(app.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let left: i64 = redis::cmd("LLEN")
        .arg(&lane)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the untaken id was withdrawn");

    // A taker that never answers.
    let taker = tokio::spawn(async move {
        let taken: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&lane)
            .arg(5)
            .query_async(&mut conn)
            .await
            .unwrap();
        taken
    });
    let response = post().await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (_, id) = taker.await.unwrap().expect("the test's id was taken");
    assert!(
        id.parse::<Uuid>().is_ok(),
        "the lane carries an id only: {id}"
    );
    no_tests_left(&app).await;
}

#[tokio::test]
async fn viewers_may_not_test_and_another_tenant_s_resource_is_not_found() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.create_resource(T, postgres(&source)).await.unwrap();
    let path = format!("/v1/resources/{}/test", resource.id);
    let viewer = app.token_for("v", Role::Viewer, T);
    for (path, body) in [
        ("/v1/resources/test", Some(postgres(&source))),
        (path.as_str(), None),
    ] {
        let (status, _, _) = app
            .call_with(&viewer, Method::POST, path, body)
            .await
            .unwrap();
        assert_eq!(status, 403, "{path}");
    }
    let operator = app.token_for("o", Role::Operator, T);
    let (status, _, result) = app
        .call_with(&operator, Method::POST, &path, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{result}");
    let (status, _, _) = app
        .call("other-tenant", Method::POST, &path, None)
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_test_bucket_answers_429_with_retry_after() {
    let app = spawn_app_with(metasync_tests::REDIS_URL, |args| {
        // A quarter of a minute's worth at once: one.
        args.quotas.tests_per_minute = std::num::NonZeroU32::new(4).unwrap();
    })
    .await
    .unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    let first = test_definition(&app, postgres(&source)).await;
    assert!(first.ok, "{first:?}");
    let response = app
        .http
        .post(app.url("/v1/resources/test"))
        .bearer_auth(app.token(T))
        .json(&postgres(&source))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&retry_after), "{retry_after}");
    // Another tenant has its own bucket.
    let (status, _, _) = app
        .call(
            "other",
            Method::POST,
            "/v1/resources/test",
            Some(postgres(&source)),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_slots_all_hold_slow_syncs_still_answers_a_test_promptly() {
    let app = spawn_app().await.unwrap();
    let mut args = app.worker_args();
    args.concurrency = 2;
    args.statement_timeout = Duration::from_secs(60);
    let _worker = app.spawn_worker_with(args).await;
    let source = create_source("create table t (id int);").await.unwrap();
    // A tarpit: sessions set up, then no statement is ever answered.
    let tarpit = FaultProxy::start(5432).await.unwrap();
    tarpit.set_mode(ProxyMode::StallQueries);
    let mut jobs = Vec::new();
    for name in ["slow-1", "slow-2"] {
        let resource = app
            .register_via(
                T,
                name,
                &source,
                tarpit.port,
                json!({ "tls": { "mode": "disable" } }),
            )
            .await
            .unwrap();
        jobs.push(app.sync(T, resource.id).await.unwrap().id);
    }
    eventually(Duration::from_secs(15), "both slots busy", || async {
        let mut running = 0;
        for id in &jobs {
            if app.job(T, id).await?.state == metasync_shared::domain::JobState::Running {
                running += 1;
            }
        }
        Ok((running == 2 && tarpit.accepted() >= 2).then_some(()))
    })
    .await
    .unwrap();

    let started = Instant::now();
    let result = test_definition(&app, postgres(&source)).await;
    let took = started.elapsed();
    assert!(result.ok, "{result:?}");
    assert!(took < Duration::from_secs(3), "the test took {took:?}");
    // The syncs are still stuck in their slots.
    for id in &jobs {
        assert_eq!(
            app.job(T, id).await.unwrap().state,
            metasync_shared::domain::JobState::Running
        );
    }
    tarpit.release_stalled();
}

/// Real API and worker processes, logging at trace level: a canary password sent in test
/// requests (a good one, a wrong one, a stored resource) appears in no response, no Redis
/// command and no log line, and no test row outlives its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_reaches_no_response_redis_command_or_log() {
    let canary = format!("Cnry{}", Uuid::now_v7().simple());
    let app = metasync_tests::spawn_app_without_maintenance()
        .await
        .unwrap();
    let recorded = app
        .spawn_recorded("probe", &[("RUST_LOG", "trace")])
        .await
        .unwrap();
    let base = recorded.base.clone();
    let http = reqwest::Client::new();
    let token = app.token(T);
    let mut seen = Vec::new();
    let mut call = async |path: &str, body: Option<Value>| -> (u16, Value) {
        let mut request = http.post(format!("{base}{path}")).bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        seen.push(format!("{:?}", response.headers()));
        let text = response.text().await.unwrap();
        seen.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    // The worker registers within a moment of starting.
    let db = MariaDb::create().await;
    let wrong = mariadb(&db.name, "root", &canary);
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        let (status, result) = call("/v1/resources/test", Some(wrong.clone())).await;
        if status != 503 || Instant::now() > deadline {
            break result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(result["error"]["code"], "authentication_failed", "{result}");
    let source = create_source("create table t (id int);").await.unwrap();
    let mut good = postgres(&source);
    good["password"] = json!(canary);
    let (status, result) = call("/v1/resources/test", Some(good.clone())).await;
    assert_eq!((status, &result["ok"]), (200, &json!(true)), "{result}");
    let (status, resource) = call("/v1/resources", Some(good)).await;
    assert_eq!(status, 201, "{resource}");
    let id = resource["id"].as_str().unwrap().to_owned();
    let (status, result) = call(&format!("/v1/resources/{id}/test"), None).await;
    assert_eq!((status, &result["ok"]), (200, &json!(true)), "{result}");
    db.drop().await;
    no_tests_left(&app).await;

    let (logs, commands) = recorded.finish().await.unwrap();
    assert!(
        logs.len() > 50,
        "trace logging is on, yet {} lines",
        logs.len()
    );
    // The searches see what they search: the lane's traffic is in the monitor's record.
    let lane = app.queue.keys().tests.clone();
    assert!(
        commands.iter().any(|c| c.contains(&lane)),
        "no lane traffic seen"
    );
    for (what, lines) in [
        ("log", &logs),
        ("redis command", &commands),
        ("response", &seen),
    ] {
        if let Some(line) = lines.iter().find(|l| l.contains(&canary)) {
            panic!("the password is in a {what}: {line}");
        }
    }
}
