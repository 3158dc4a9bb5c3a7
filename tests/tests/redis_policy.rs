//! Both binaries check Redis's `maxmemory-policy` at start-up: anything but `noeviction` is a
//! warning, or a refusal to start with `METASYNC_REDIS_REQUIRE_NOEVICTION=true`; a server that
//! refuses `CONFIG` is a warning that the policy could not be checked. Each test runs the real
//! binaries against a private Redis.

use std::process::Stdio;
use std::time::Duration;

use metasync_tests::{
    RedisServer, TestApp, capture_lines, free_port, spawn_app_with, wait_until_listening,
};

/// An API and a worker process against `app`, with `env`: whether each exited (and how) within
/// a few seconds, and what it logged.
async fn start_both(app: &TestApp, env: &[(&str, &str)]) -> Vec<(Option<bool>, String)> {
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "warn"));
    let api = app.api_command(&addr, &env).unwrap();
    let worker = app.worker_command("policy", &env).unwrap();
    let mut results = Vec::new();
    for (mut command, listens) in [(api, true), (worker, false)] {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = capture_lines(child.stderr.take().unwrap());
        let exited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let exited = match exited {
            Ok(status) => Some(status.unwrap().success()),
            Err(_) => {
                if listens {
                    wait_until_listening(&format!("http://{addr}"))
                        .await
                        .unwrap();
                }
                None
            }
        };
        let _ = child.kill().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        results.push((exited, stderr.lock().unwrap().join("\n")));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_a_warning_or_a_refusal() {
    let redis = RedisServer::start_with_args(&["--maxmemory-policy", "allkeys-lru"])
        .await
        .unwrap();
    // The in-process API warns and starts (the default).
    let app = spawn_app_with(&redis.url(), |args| {
        args.maintenance.stand_for_leader = false;
    })
    .await
    .unwrap();

    for (exited, log) in start_both(&app, &[]).await {
        assert_eq!(exited, None, "starts by default: {log}");
        assert!(
            log.contains("maxmemory_policy") && log.contains("allkeys-lru"),
            "{log}"
        );
    }
    let required = [("METASYNC_REDIS_REQUIRE_NOEVICTION", "true")];
    for (exited, log) in start_both(&app, &required).await {
        assert_eq!(exited, Some(false), "refuses to start: {log}");
        assert!(log.contains("`allkeys-lru`, not `noeviction`"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_without_config_is_a_warning() {
    let redis = RedisServer::start_with_args(&["--rename-command", "CONFIG", ""])
        .await
        .unwrap();
    let app = spawn_app_with(&redis.url(), |args| {
        args.maintenance.stand_for_leader = false;
    })
    .await
    .unwrap();
    let required = [("METASYNC_REDIS_REQUIRE_NOEVICTION", "true")];
    for (exited, log) in start_both(&app, &required).await {
        assert_eq!(
            exited, None,
            "starts: nothing shows the policy is wrong: {log}"
        );
        assert!(
            log.contains("could not check Redis's maxmemory-policy"),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noeviction_redis_passes_quietly() {
    let redis = RedisServer::start().await.unwrap();
    let app = spawn_app_with(&redis.url(), |args| {
        args.maintenance.stand_for_leader = false;
    })
    .await
    .unwrap();
    let required = [("METASYNC_REDIS_REQUIRE_NOEVICTION", "true")];
    for (exited, log) in start_both(&app, &required).await {
        assert_eq!(exited, None, "{log}");
        assert!(!log.contains("maxmemory"), "{log}");
    }
}
