//! A canary password followed everywhere it could leak. Real API and worker processes log at
//! trace level, in the text and the JSON format; a tenant registers sources with the canary,
//! sends it in requests that fail validation, changes it, and syncs (one sync succeeds, one
//! fails at the source's authentication). Then the canary must appear in no log line, no
//! response (bodies and headers), no Redis value and no dump of the catalog database.

use std::time::Duration;

use metasync_tests::{TestApp, create_source, spawn_app_without_maintenance};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const T: &str = "canary";

/// Every response the API gave, headers and body, as text.
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    seen: Vec<String>,
}

impl Client {
    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        self.seen.push(format!("{:?}", response.headers()));
        let text = response.text().await.unwrap();
        self.seen.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn wait_terminal(&mut self, job: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, job) = self
                .call(Method::GET, &format!("/v1/jobs/{job}?wait=5"), None)
                .await;
            let state = job["state"].as_str().unwrap_or_default().to_owned();
            if ["succeeded", "failed", "cancelled"].contains(&state.as_str()) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "job stuck: {job}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_password_reaches_no_text_log() {
    canary_run("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_password_reaches_no_json_log() {
    canary_run("json").await;
}

async fn canary_run(format: &str) {
    let canary = format!("Cnry{}", Uuid::now_v7().simple());
    let changed = format!("Chgd{}", Uuid::now_v7().simple());
    let app = spawn_app_without_maintenance().await.unwrap();
    // Every command any client sends to Redis, with its arguments, for the whole run.
    let env = [("RUST_LOG", "trace"), ("METASYNC_LOG_FORMAT", format)];
    let recorded = app.spawn_recorded("canary", &env).await.unwrap();
    let mut client = Client {
        base: recorded.base.clone(),
        token: app.token(T),
        http: reqwest::Client::new(),
        seen: Vec::new(),
    };

    let source = create_source("create table t (id int);").await.unwrap();
    let postgres = json!({
        "name": "pg", "kind": "postgres", "host": "127.0.0.1", "port": 5432,
        "database": source, "username": "root", "password": canary,
    });
    // Refused bodies that carry the password: nothing of it comes back.
    for (field, value) in [
        ("port", json!(0)),
        ("host", json!("/var/run/postgresql")),
        ("kind", json!("oracle")),
        ("options", json!({ "include": ["("] })),
        ("password", json!(format!("{canary}\u{0}"))),
    ] {
        let mut bad = postgres.clone();
        bad[field] = value;
        let (status, problem) = client.call(Method::POST, "/v1/resources", Some(bad)).await;
        assert!((400..500).contains(&status), "{field}: {status} {problem}");
    }
    let (status, pg) = client
        .call(Method::POST, "/v1/resources", Some(postgres))
        .await;
    assert_eq!(status, 201, "{pg}");
    let pg_id = pg["id"].as_str().unwrap().to_owned();
    // MariaDB's root has no password: offering one fails authentication, at the source.
    let mysql = json!({
        "name": "my", "kind": "mysql", "host": "127.0.0.1", "port": 3306,
        "database": "test", "username": "root", "password": canary,
        "retry_policy": { "max_attempts": 1 },
    });
    let (status, my) = client
        .call(Method::POST, "/v1/resources", Some(mysql))
        .await;
    assert_eq!(status, 201, "{my}");
    let my_id = my["id"].as_str().unwrap().to_owned();
    // A target change without the password is refused; with a new one it is taken.
    let (status, _) = client
        .call(
            Method::PATCH,
            &format!("/v1/resources/{pg_id}"),
            Some(json!({ "port": 5433 })),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = client
        .call(
            Method::PATCH,
            &format!("/v1/resources/{pg_id}"),
            Some(json!({ "password": changed })),
        )
        .await;
    assert_eq!(status, 200);

    for (id, outcome) in [(&pg_id, "succeeded"), (&my_id, "failed")] {
        let (status, job) = client
            .call(Method::POST, &format!("/v1/resources/{id}/sync"), None)
            .await;
        assert_eq!(status, 202, "{job}");
        let job = client.wait_terminal(job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], outcome, "{job}");
    }
    for path in [
        "/v1/resources".to_owned(),
        format!("/v1/resources/{pg_id}"),
        format!("/v1/resources/{my_id}"),
        "/v1/jobs".to_owned(),
        format!("/v1/resources/{pg_id}/tables"),
    ] {
        client.call(Method::GET, &path, None).await;
    }

    // Stopped by SIGTERM, so every buffered line is out before the logs are read.
    let (logs, commands) = recorded.finish().await.unwrap();
    assert!(
        logs.len() > 100,
        "trace logging is on, yet only {} lines",
        logs.len()
    );
    // The searches can see what they search: the failed attempt's error is logged.
    assert!(
        logs.iter().any(|l| l.contains("Access denied for user")),
        "the failed sync's error is in no log line"
    );
    let mut redis = redis_values(&app).await;
    redis.extend(commands);
    assert!(
        redis.iter().any(|c| c.contains(&app.queue_name)),
        "redis-cli monitor saw none of the queue's commands"
    );
    let dump = catalog_dump(&app);
    for secret in [&canary, &changed] {
        let hits = |texts: &[String]| texts.iter().filter(|t| t.contains(secret.as_str())).count();
        assert_eq!(hits(&logs), 0, "the password is in a {format} log line");
        assert_eq!(hits(&client.seen), 0, "the password is in a response");
        assert_eq!(hits(&redis), 0, "the password is in Redis");
        assert!(
            !dump.contains(secret.as_str()),
            "the password is in the catalog"
        );
    }
}

/// Every value left under the queue's keys, in text.
async fn redis_values(app: &TestApp) -> Vec<String> {
    let client = redis::Client::open(app.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{}*", app.queue_name))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut values = keys.clone();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let command: &[&str] = match kind.as_str() {
            "string" => &["GET"],
            "list" => &["LRANGE", "0", "-1"],
            "zset" => &["ZRANGE", "0", "-1", "WITHSCORES"],
            "hash" => &["HGETALL"],
            "set" => &["SMEMBERS"],
            "stream" => &["XRANGE", "-", "+"],
            _ => continue,
        };
        let mut cmd = redis::cmd(command[0]);
        cmd.arg(&key).arg(&command[1..]);
        let value: redis::Value = cmd
            .query_async(&mut conn)
            .await
            .unwrap_or(redis::Value::Nil);
        flatten(&value, &mut values);
    }
    values
}

fn flatten(value: &redis::Value, out: &mut Vec<String>) {
    match value {
        redis::Value::BulkString(bytes) => out.push(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(text) => out.push(text.clone()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                flatten(item, out);
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                flatten(k, out);
                flatten(v, out);
            }
        }
        other => out.push(format!("{other:?}")),
    }
}

/// `pg_dump` of the app's catalog database, data included.
fn catalog_dump(app: &TestApp) -> String {
    let output = std::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg(&app.database_url)
        .output()
        .expect("pg_dump to run");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dump = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(dump.contains("COPY public.jobs"), "an empty dump");
    dump
}
