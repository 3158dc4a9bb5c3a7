//! The logs operators ship: the API and a worker, run as the real binaries with
//! `METASYNC_LOG_FORMAT=json`, write nothing but JSON lines; every event of a job carries its
//! job, resource, tenant and attempt, and the attempt's end says how it went and how long it
//! took; the API writes one access line per request, with the route template and the request
//! id it returns in `x-request-id`.

use std::process::Stdio;
use std::time::Duration;

use metasync_tests::{
    JWT_SECRET, capture_lines, create_source, free_port, signal, spawn_app_without_maintenance,
    test_master_key,
};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// A response as the test saw it, to match against the access log.
#[derive(Debug)]
struct Seen {
    route: &'static str,
    status: u16,
    request_id: String,
}

/// Sends a request to the API process and records what came back.
async fn send(
    http: &reqwest::Client,
    seen: &mut Vec<Seen>,
    (method, base, path, route): (Method, &str, &str, &'static str),
    token: &str,
    body: Option<Value>,
    request_id: Option<&str>,
) -> (u16, Value, String) {
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on the answer to {path} ({status})"))
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    seen.push(Seen {
        route,
        status,
        request_id: request_id.clone(),
    });
    (status, body, request_id)
}

/// A line's fields with those of every span it was logged in (innermost last).
fn context(line: &Value) -> Map<String, Value> {
    let mut all = Map::new();
    for span in line["spans"].as_array().into_iter().flatten() {
        all.extend(span.as_object().cloned().unwrap_or_default());
    }
    all.extend(line["fields"].as_object().cloned().unwrap_or_default());
    all
}

fn parse_all(process: &str, lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{process} wrote a line that is not JSON ({e}): {line}")
            });
            assert!(value.is_object(), "{process}: {line}");
            value
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_json_with_the_job_and_request_fields() {
    let app = spawn_app_without_maintenance().await.unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let base = format!("http://{addr}");
    let json_logs = [("METASYNC_LOG_FORMAT", "json"), ("RUST_LOG", "info")];
    let mut api = app.api_command(&addr, &json_logs).unwrap();
    let mut api = api
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut worker = app.worker_command("logs", &json_logs).unwrap();
    let mut worker = worker
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let api_lines = [
        capture_lines(api.stdout.take().unwrap()),
        capture_lines(api.stderr.take().unwrap()),
    ];
    let worker_lines = [
        capture_lines(worker.stdout.take().unwrap()),
        capture_lines(worker.stderr.take().unwrap()),
    ];

    let http = reqwest::Client::new();
    let token = app.token("acme");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healthz = (Method::GET, base.as_str(), "/healthz", "/healthz");
    send(&http, &mut seen, healthz, &token, None, None).await;

    // A good source, and one whose database does not exist (a permanent failure).
    let password = "pw-that-must-never-be-logged-7f3a";
    let source = create_source("create table t (id int);").await.unwrap();
    let mut resources = Vec::new();
    for (name, database, given_id) in [
        ("good", source.as_str(), Some("client-chosen.id-1")),
        ("missing", "mstest_no_such_database", Some("not a token {}")),
    ] {
        let body = json!({
            "name": name, "kind": "postgres", "host": "127.0.0.1", "port": 5432,
            "database": database, "username": "root", "password": password,
        });
        let create = (
            Method::POST,
            base.as_str(),
            "/v1/resources",
            "/v1/resources",
        );
        let (status, resource, request_id) =
            send(&http, &mut seen, create, &token, Some(body), given_id).await;
        assert_eq!(status, 201, "{resource}");
        if name == "good" {
            assert_eq!(request_id, "client-chosen.id-1", "a usable id is kept");
        } else {
            let generated = uuid::Uuid::parse_str(&request_id).expect("a generated id");
            assert_eq!(generated.get_version_num(), 7, "{request_id}");
        }
        resources.push(resource["id"].as_str().unwrap().to_owned());
    }
    let mut jobs = Vec::new();
    for resource in &resources {
        let path = format!("/v1/resources/{resource}/sync");
        let sync = (
            Method::POST,
            base.as_str(),
            path.as_str(),
            "/v1/resources/{id}/sync",
        );
        let (status, job, _) = send(&http, &mut seen, sync, &token, None, None).await;
        assert_eq!(status, 202, "{job}");
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    for job in &jobs {
        let path = format!("/v1/jobs/{job}?wait=10");
        loop {
            let get = (Method::GET, base.as_str(), path.as_str(), "/v1/jobs/{id}");
            let (_, body, _) = send(&http, &mut seen, get, &token, None, None).await;
            if ["succeeded", "failed"].contains(&body["state"].as_str().unwrap()) {
                break;
            }
        }
    }
    // Errors carry the request id too: a problem+json 404 and an unknown route.
    let missing = format!("/v1/jobs/{}", uuid::Uuid::now_v7());
    let get = (
        Method::GET,
        base.as_str(),
        missing.as_str(),
        "/v1/jobs/{id}",
    );
    let (status, _, _) = send(&http, &mut seen, get, &token, None, None).await;
    assert_eq!(status, 404);
    let nowhere = (Method::GET, base.as_str(), "/no/such/route", "unmatched");
    let (status, _, _) = send(&http, &mut seen, nowhere, &token, None, None).await;
    assert_eq!(status, 404);

    signal(&api, "TERM").unwrap();
    signal(&worker, "TERM").unwrap();
    for child in [&mut api, &mut worker] {
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the process stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
    }
    // The readers finish once the pipes close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let collect = |streams: &[std::sync::Arc<std::sync::Mutex<Vec<String>>>]| -> Vec<String> {
        streams
            .iter()
            .flat_map(|s| s.lock().unwrap().clone())
            .collect()
    };
    let api_lines = collect(&api_lines);
    let worker_lines = collect(&worker_lines);

    // Nothing secret anywhere.
    for line in api_lines.iter().chain(&worker_lines) {
        for secret in [password, JWT_SECRET, token.as_str(), &test_master_key().0] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }

    // The worker: every event of a job has the four ids, and each attempt ends in one line.
    let worker_lines = parse_all("the worker", &worker_lines);
    let mut ends = Vec::new();
    for line in &worker_lines {
        let ctx = context(line);
        let Some(job_id) = ctx.get("job_id").and_then(Value::as_str) else {
            continue;
        };
        let i = jobs
            .iter()
            .position(|j| j == job_id)
            .unwrap_or_else(|| panic!("an unknown job: {line}"));
        assert_eq!(ctx["resource_id"], resources[i].as_str(), "{line}");
        assert_eq!(ctx["tenant"], "acme", "{line}");
        assert_eq!(ctx["attempt"], 1, "{line}");
        if ctx.contains_key("outcome") {
            assert_eq!(line["level"], "INFO", "{line}");
            assert!(ctx["duration_seconds"].as_f64().unwrap() > 0.0, "{line}");
            ends.push((i, ctx));
        }
    }
    assert_eq!(ends.len(), 2, "one end line per attempt: {ends:#?}");
    for (i, end) in ends {
        if i == 0 {
            assert_eq!(end["outcome"], "succeeded", "{end:?}");
            assert!(!end.contains_key("error_class"), "{end:?}");
        } else {
            assert_eq!(end["outcome"], "failed", "{end:?}");
            assert_eq!(end["error_class"], "permanent", "{end:?}");
            assert!(
                end["error"].as_str().unwrap().contains("does not exist"),
                "{end:?}"
            );
        }
    }

    // The API: one access line per request, with the id it answered and the route template.
    let api_lines = parse_all("the API", &api_lines);
    let access: Vec<Map<String, Value>> = api_lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request served")
        .map(context)
        .collect();
    for access in &access {
        assert!(access["method"].is_string(), "{access:?}");
        assert!(access["latency_seconds"].as_f64().is_some(), "{access:?}");
        let route = access["route"].as_str().unwrap();
        for id in resources.iter().chain(&jobs) {
            assert!(!route.contains(id.as_str()), "a raw path: {access:?}");
        }
    }
    for seen in &seen {
        let lines: Vec<_> = access
            .iter()
            .filter(|a| a["request_id"] == seen.request_id.as_str())
            .collect();
        assert_eq!(lines.len(), 1, "{seen:?}: {lines:#?}");
        assert_eq!(lines[0]["route"], seen.route, "{seen:?}");
        assert_eq!(lines[0]["status"], seen.status, "{seen:?}");
    }
}
