//! The first working path, end to end: the API on port 0, a worker in-process, real
//! PostgreSQL, MariaDB and Redis. Each test has its own catalog database and queue.

use std::time::Duration;

use metasync_tests::{FaultProxy, TestApp, assert_job, create_source, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

const FIXTURE: &str = r#"
create schema sales;
create schema "Mixed Case";
comment on schema sales is 'Revenue data';
create table sales.customers (
    id bigint generated always as identity primary key,
    email text not null unique,
    created_at timestamptz not null default now()
);
comment on column sales.customers.email is 'Login address';
comment on table sales.customers is 'People who pay';
create table sales.orders (
    id bigint primary key,
    customer_id bigint not null references sales.customers (id),
    amount numeric(12, 2) check (amount >= 0),
    note varchar(200)
);
create index orders_by_customer on sales.orders (customer_id);
create view sales.big_orders as select id, amount from sales.orders where amount > 1000;
create table "Mixed Case"."Weird ""Table"" Name" ("Id" integer, "select" text);
"#;

async fn app_with_worker() -> (TestApp, metasync_tests::TestWorker) {
    let app = spawn_app().await.expect("spawning the app");
    let worker = app.spawn_worker().await;
    (app, worker)
}

fn table<'a>(items: &'a [Value], schema: &str, name: &str) -> &'a Value {
    items
        .iter()
        .find(|t| t["schema"] == schema && t["name"] == name)
        .unwrap_or_else(|| panic!("{schema}.{name} missing from {items:?}"))
}

#[tokio::test]
async fn a_sync_stores_exactly_the_source_catalog() {
    let (app, _worker) = app_with_worker().await;
    let source = create_source(FIXTURE).await.unwrap();
    let resource = app.register("acme", "warehouse", &source).await.unwrap();
    let rid = resource.id;
    let (_, _, raw) = app
        .call("acme", Method::GET, &format!("/v1/resources/{rid}"), None)
        .await
        .unwrap();
    assert!(raw.get("password").is_none());
    assert!(raw.get("password_sealed").is_none());

    let job = app.sync("acme", rid).await.unwrap();
    assert_job(&job).queued();
    let job = app
        .wait_for_job("acme", job.id, Duration::from_secs(30))
        .await
        .unwrap();
    let stats = assert_job(&job).succeeded().attempts(1).stats();
    assert_eq!(stats.schemas, 3, "public, sales, Mixed Case: {stats:?}");
    assert_eq!(stats.tables, 4, "{stats:?}");
    assert_eq!(stats.columns, 3 + 4 + 2 + 2, "{stats:?}");
    assert!(stats.source_statements <= 10);

    let (status, _, listing) = app
        .call(
            "acme",
            Method::GET,
            &format!("/v1/resources/{rid}/tables"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let items = listing["items"].as_array().unwrap();
    let mut names: Vec<(String, String, String)> = items
        .iter()
        .map(|t| {
            (
                t["schema"].as_str().unwrap().to_owned(),
                t["name"].as_str().unwrap().to_owned(),
                t["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            (
                "Mixed Case".into(),
                "Weird \"Table\" Name".into(),
                "table".into()
            ),
            ("sales".into(), "big_orders".into(), "view".into()),
            ("sales".into(), "customers".into(), "table".into()),
            ("sales".into(), "orders".into(), "table".into()),
        ]
    );

    let customers = table(items, "sales", "customers");
    let (status, _, detail) = app
        .call(
            "acme",
            Method::GET,
            &format!("/v1/tables/{}", customers["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(detail["comment"], "People who pay");
    let columns = detail["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 3);
    assert_eq!(columns[0]["name"], "id");
    assert_eq!(columns[0]["data_type"], "bigint");
    assert_eq!(columns[0]["nullable"], false);
    assert_eq!(columns[0]["details"]["identity"], "always");
    assert_eq!(columns[1]["name"], "email");
    assert_eq!(columns[1]["position"], 2);
    assert_eq!(columns[1]["data_type"], "text");
    assert_eq!(columns[1]["comment"], "Login address");
    assert_eq!(columns[2]["default_value"], "now()");
    assert_eq!(columns[2]["data_type"], "timestamp with time zone");

    let orders = table(items, "sales", "orders");
    let (_, _, detail) = app
        .call(
            "acme",
            Method::GET,
            &format!("/v1/tables/{}", orders["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    let columns = detail["columns"].as_array().unwrap();
    assert_eq!(columns[2]["data_type"], "numeric(12,2)");
    assert_eq!(columns[2]["nullable"], true);
    assert_eq!(columns[3]["data_type"], "character varying(200)");
    let kinds: Vec<&str> = detail["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"primary_key")
            && kinds.contains(&"foreign_key")
            && kinds.contains(&"check"),
        "{kinds:?}"
    );

    let weird = table(items, "Mixed Case", "Weird \"Table\" Name");
    let (_, _, detail) = app
        .call(
            "acme",
            Method::GET,
            &format!("/v1/tables/{}", weird["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    let names: Vec<&str> = detail["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Id", "select"]);

    let view = table(items, "sales", "big_orders");
    let (_, _, detail) = app
        .call(
            "acme",
            Method::GET,
            &format!("/v1/tables/{}", view["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert!(detail["view_definition"].as_str().unwrap().contains("1000"));

    // A resync of an unchanged source rewrites nothing.
    let job = app.sync("acme", rid).await.unwrap();
    let job = app
        .wait_for_job("acme", job.id, Duration::from_secs(30))
        .await
        .unwrap();
    let stats = assert_job(&job).succeeded().stats();
    assert_eq!(stats.tables_unchanged, 4, "{stats:?}");
    assert_eq!(stats.tables_added, 0, "{stats:?}");
}

#[tokio::test]
async fn a_mysql_source_is_catalogued() {
    let (app, _worker) = app_with_worker().await;
    let db = metasync_tests::unique_name("mstest", '_');
    let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
        .await
        .unwrap();
    for sql in [
        format!("create database `{db}`"),
        format!(
            "create table `{db}`.accounts (id int primary key, name varchar(50) not null comment 'Display name') comment 'All accounts'"
        ),
        format!("create view `{db}`.named as select name from `{db}`.accounts"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .unwrap();
    }
    let resource = app
        .create_resource(
            "acme",
            json!({
                "name": "maria", "kind": "mysql", "host": "127.0.0.1", "port": 3306,
                "database": db, "username": "root", "password": ""
            }),
        )
        .await
        .unwrap();
    let rid = resource.id;
    let job = app.sync("acme", rid).await.unwrap();
    let job = app
        .wait_for_job("acme", job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_job(&job).succeeded();
    let (_, _, listing) = app
        .call(
            "acme",
            Method::GET,
            &format!("/v1/resources/{rid}/tables?schema={db}"),
            None,
        )
        .await
        .unwrap();
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listing}");
    let accounts = table(items, &db, "accounts");
    assert_eq!(accounts["comment"], "All accounts");
    let (_, _, detail) = app
        .call(
            "acme",
            Method::GET,
            &format!("/v1/tables/{}", accounts["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(detail["columns"][1]["data_type"], "varchar(50)");
    assert_eq!(detail["columns"][1]["comment"], "Display name");
    assert_eq!(detail["constraints"][0]["kind"], "primary_key");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database `{db}`")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_and_never_leaks() {
    let (app, _worker) = app_with_worker().await;
    let user = format!("ms_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create user '{user}'@'%' identified by 'the-right-one'; create user '{user}'@'localhost' identified by 'the-right-one'"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let password = "Wr0ng-S3cret-Passw0rd";
    let (status, _, resource) = app
        .call(
            "acme",
            Method::POST,
            "/v1/resources",
            Some(json!({
                "name": "locked", "kind": "mysql", "host": "127.0.0.1", "port": 3306,
                "database": "test", "username": user, "password": password
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    assert!(!resource.to_string().contains(password));
    let job = app
        .sync("acme", resource["id"].as_str().unwrap())
        .await
        .unwrap();
    let job = app
        .wait_for_job("acme", job.id, Duration::from_secs(30))
        .await
        .unwrap();
    // Authentication failures are permanent: one attempt.
    assert_job(&job)
        .failed_permanently()
        .attempts(1)
        .error_contains("Access denied")
        .never_mentions(password);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop user '{user}'@'%'; drop user '{user}'@'localhost'"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_closed_port_fails_with_connection_refused() {
    let (app, _worker) = app_with_worker().await;
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let password = "Cl0sed-P0rt-S3cret";
    let (status, _, resource) = app
        .call(
            "acme",
            Method::POST,
            "/v1/resources",
            Some(json!({
                "name": "closed", "kind": "postgres", "host": "127.0.0.1", "port": port,
                "database": "x", "username": "root", "password": password
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let job = app
        .sync("acme", resource["id"].as_str().unwrap())
        .await
        .unwrap();
    let job = app
        .wait_for_job("acme", job.id, Duration::from_secs(60))
        .await
        .unwrap();
    // Transient failures retry up to max_attempts.
    assert_job(&job)
        .failed_transiently()
        .attempts(5)
        .error_contains("the connection was refused")
        .never_mentions(password);
    assert_eq!(app.attempts("acme", job.id).await.unwrap().len(), 5);
}

#[tokio::test]
async fn tenants_cannot_see_each_other() {
    let (app, _worker) = app_with_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register("tenant-a", "private", &source).await.unwrap();
    let rid = resource.id;
    let job = app.sync("tenant-a", rid).await.unwrap();
    let jid = job.id;
    app.wait_for_job("tenant-a", jid, Duration::from_secs(30))
        .await
        .unwrap();
    let (_, _, tables) = app
        .call(
            "tenant-a",
            Method::GET,
            &format!("/v1/resources/{rid}/tables"),
            None,
        )
        .await
        .unwrap();
    let tid = tables["items"][0]["id"].as_str().unwrap().to_owned();

    for (method, path) in [
        (Method::GET, format!("/v1/resources/{rid}")),
        (Method::PATCH, format!("/v1/resources/{rid}")),
        (Method::DELETE, format!("/v1/resources/{rid}")),
        (Method::POST, format!("/v1/resources/{rid}/sync")),
        (Method::GET, format!("/v1/resources/{rid}/tables")),
        (Method::GET, format!("/v1/jobs/{jid}")),
        (Method::GET, format!("/v1/tables/{tid}")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({ "name": "stolen" }));
        let (status, content_type, problem) = app
            .call("tenant-b", method.clone(), &path, body)
            .await
            .unwrap();
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(content_type, "application/problem+json");
    }
    let (_, _, listing) = app
        .call("tenant-b", Method::GET, "/v1/resources", None)
        .await
        .unwrap();
    assert_eq!(listing["items"], json!([]));
    let (_, _, listing) = app
        .call("tenant-b", Method::GET, "/v1/jobs", None)
        .await
        .unwrap();
    assert_eq!(listing["items"], json!([]));
    // And tenant A still has everything.
    let (status, _, _) = app
        .call(
            "tenant-a",
            Method::GET,
            &format!("/v1/resources/{rid}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_input_gets_a_problem_document() {
    let app = spawn_app().await.unwrap();
    let token = app.token("acme");
    let valid = json!({
        "name": "n", "kind": "postgres", "host": "h", "port": 5432,
        "database": "d", "username": "u", "password": "p"
    });
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let unknown = uuid::Uuid::now_v7();
    // (method, path, body, token, expected status)
    type Case<'a> = (Method, String, Option<String>, Option<&'a str>, u16);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/resources".into(),
            Some("{not json".into()),
            Some(&token),
            400,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(without("host")),
            Some(&token),
            422,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(without("password")),
            Some(&token),
            422,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(with("kind", json!("oracle"))),
            Some(&token),
            422,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(with("port", json!(70000))),
            Some(&token),
            422,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(with("name", json!(""))),
            Some(&token),
            422,
        ),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(with("options", json!([1]))),
            Some(&token),
            422,
        ),
        (
            Method::GET,
            "/v1/resources/not-a-uuid".into(),
            None,
            Some(&token),
            400,
        ),
        (Method::GET, "/v1/jobs/123".into(), None, Some(&token), 400),
        (
            Method::GET,
            format!("/v1/resources/{unknown}"),
            None,
            Some(&token),
            404,
        ),
        (
            Method::GET,
            format!("/v1/jobs/{unknown}"),
            None,
            Some(&token),
            404,
        ),
        (
            Method::POST,
            format!("/v1/resources/{unknown}/sync"),
            None,
            Some(&token),
            404,
        ),
        (
            Method::GET,
            format!("/v1/tables/{unknown}"),
            None,
            Some(&token),
            404,
        ),
        (
            Method::GET,
            "/v1/jobs?state=bogus".into(),
            None,
            Some(&token),
            400,
        ),
        (Method::GET, "/v1/resources".into(), None, None, 401),
        (
            Method::GET,
            "/v1/resources".into(),
            None,
            Some("not.a.jwt"),
            401,
        ),
        (Method::GET, "/v1/nowhere".into(), None, Some(&token), 404),
        (Method::PUT, "/v1/resources".into(), None, Some(&token), 405),
    ];
    for (method, path, body, token, expected) in cases {
        let mut request = app.http.request(method.clone(), app.url(&path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, expected, "{method} {path} {body:?}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        assert_eq!(problem["status"], expected);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // An expired token is refused too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = app
        .jwt
        .sign(&metasync_api::auth::Claims {
            sub: "t".into(),
            exp: now - 3600,
            iat: Some(now - 7200),
            role: Some(metasync_api::auth::Role::Admin),
            other: [("tenant".to_owned(), "acme".into())].into(),
        })
        .unwrap();
    let response = app
        .http
        .get(app.url("/v1/resources"))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // A second resource with a taken name is a conflict, not a 500.
    let (status, _, _) = app
        .call("acme", Method::POST, "/v1/resources", Some(valid.clone()))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let (status, content_type, _) = app
        .call("acme", Method::POST, "/v1/resources", Some(valid))
        .await
        .unwrap();
    assert_eq!(
        (status, content_type.as_str()),
        (409, "application/problem+json")
    );
}

/// How many connections the worker has open to `database` right now.
async fn source_backends(app: &TestApp, database: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "select count(*) from pg_stat_activity
         where datname = $1 and application_name = 'metasync'",
    )
    .bind(database)
    .fetch_one(&app.db)
    .await
    .unwrap();
    n
}

/// Back-to-back syncs of one source share a parked connection. Other credentials are another
/// key and never get it; a parked connection is closed once idle past the limit.
#[tokio::test]
async fn back_to_back_syncs_share_a_parked_source_connection() {
    let app = spawn_app().await.unwrap();
    let mut args = app.worker_args();
    args.worker_name = Some("reuse".to_owned());
    args.source_idle = Duration::from_secs(2);
    args.source_max_parked = 4;
    let _worker = app.spawn_worker_with(args).await;
    let source = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    let proxy = FaultProxy::start(5432).await.unwrap();
    let resource = app
        .register_via("acme", "reused", &source, proxy.port, json!({}))
        .await
        .unwrap();
    let rid = resource.id;
    let sync = |expected_connections: usize| {
        let app = &app;
        let proxy = &proxy;
        async move {
            let job = app.sync("acme", rid).await.unwrap();
            let job = app
                .wait_for_job("acme", job.id, Duration::from_secs(30))
                .await
                .unwrap();
            assert_job(&job).succeeded();
            assert_eq!(proxy.accepted(), expected_connections, "after {job:?}");
        }
    };

    for _ in 0..3 {
        sync(1).await;
    }
    assert_eq!(
        source_backends(&app, &source).await,
        1,
        "one parked connection"
    );

    // Trust auth ignores the password, but the worker cannot know that: new key, new connection.
    let (status, _, body) = app
        .call(
            "acme",
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(json!({ "password": "rotated" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    sync(2).await;
    sync(2).await;

    metasync_tests::eventually(
        Duration::from_secs(15),
        "parked connections to close",
        || async { Ok((source_backends(&app, &source).await == 0).then_some(())) },
    )
    .await
    .unwrap();
    sync(3).await;
}
