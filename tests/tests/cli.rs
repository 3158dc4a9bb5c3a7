//! The `metasync` binary end to end against a real API and worker: `apply -f` twice (the
//! second run changes nothing), `sync --wait` and each of its exit codes, `--output json` as
//! the API's own documents, `login`, and the progress display in a real terminal (tmux).

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use metasync_tests::{TestApp, binary, create_source, free_port, spawn_app, unique_name};
use reqwest::Method;
use serde_json::{Value, json};

const TENANT: &str = "acme";

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("metasync-cli-", '-'));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `metasync ARGS` with a clean environment: this app's URL and a token for [`TENANT`] (unless
/// `env` replaces them), a config directory of its own.
async fn run(app: &TestApp, scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(binary("metasync").unwrap());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("XDG_CONFIG_HOME", scratch.0.join("config"))
        .env("HOME", &scratch.0)
        .env("METASYNC_URL", &app.base)
        .env("METASYNC_TOKEN", app.token(TENANT))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("metasync finishes within 2 minutes")
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn sources_yaml(source_db: &str, extra: &str) -> String {
    format!(
        "resources:
  - name: orders
    kind: postgres
    host: 127.0.0.1
    port: 5432
    database: {source_db}
    username: root
    password_env: ORDERS_PASSWORD
  - name: billing
    kind: postgres
    host: 127.0.0.1
    port: 5432
    database: {source_db}
    username: root
    password_file: ./billing.secret
    schedule: {{cron: \"0 3 1 1 *\"}}
{extra}"
    )
}

async fn api(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, _, body) = app.call(TENANT, method, path, body).await.unwrap();
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

#[tokio::test]
async fn apply_twice_creates_then_changes_nothing_and_prune_deletes_the_rest() {
    let app = spawn_app().await.unwrap();
    let scratch = Scratch::new();
    scratch.write("billing.secret", "from-a-file\n");
    let file = scratch.write("sources.yaml", &sources_yaml("shop", ""));
    let file = file.to_str().unwrap();
    let env = [("ORDERS_PASSWORD", "from-the-env")];

    let first = run(&app, &scratch, &["resources", "apply", "-f", file], &env).await;
    assert_exit(&first, 0);
    let plan = stdout(&first);
    assert!(plan.contains("create     orders"), "{plan}");
    assert!(plan.contains("create     billing"), "{plan}");
    assert!(plan.contains("2 created, 0 updated, 0 unchanged"), "{plan}");

    let second = run(&app, &scratch, &["resources", "apply", "-f", file], &env).await;
    assert_exit(&second, 0);
    let plan = stdout(&second);
    assert!(
        plan.contains("0 created, 0 updated, 2 unchanged, 0 deleted"),
        "{plan}"
    );
    let listed = api(&app, Method::GET, "/v1/resources", None).await;
    let updated: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["updated_at"])
        .collect();

    // Another password is a change; a dry run says so and changes nothing.
    let other = [("ORDERS_PASSWORD", "rotated")];
    let dry = run(
        &app,
        &scratch,
        &["resources", "apply", "-f", file, "--dry-run"],
        &other,
    )
    .await;
    assert_exit(&dry, 0);
    assert!(
        stdout(&dry).contains("update     orders"),
        "{}",
        stdout(&dry)
    );
    assert!(stdout(&dry).contains("dry run"), "{}", stdout(&dry));
    let again = api(&app, Method::GET, "/v1/resources", None).await;
    let still: Vec<&Value> = again["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["updated_at"])
        .collect();
    assert_eq!(updated, still);

    // --prune deletes what the file does not declare (a dry run first only plans it).
    api(
        &app,
        Method::PUT,
        "/v1/resources/by-name/stray",
        Some(
            json!({"kind": "postgres", "host": "127.0.0.1", "port": 5432,
                    "database": "x", "username": "root", "password": "p"}),
        ),
    )
    .await;
    let args = ["resources", "apply", "-f", file, "--prune", "--dry-run"];
    let planned = run(&app, &scratch, &args, &env).await;
    assert_exit(&planned, 0);
    assert!(
        stdout(&planned).contains("delete     stray"),
        "{}",
        stdout(&planned)
    );
    let json_args = ["resources", "apply", "-f", file, "--prune", "-o", "json"];
    let pruned = run(&app, &scratch, &json_args, &env).await;
    assert_exit(&pruned, 0);
    let doc: Value = serde_json::from_str(&stdout(&pruned)).unwrap();
    let actions: Vec<(&str, &str)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["action"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("unchanged", "orders"),
            ("unchanged", "billing"),
            ("delete", "stray")
        ]
    );
    let left = api(&app, Method::GET, "/v1/resources", None).await;
    assert_eq!(left["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn apply_refuses_inline_passwords_and_missing_secrets() {
    let app = spawn_app().await.unwrap();
    let scratch = Scratch::new();
    let inline = scratch.write(
        "inline.yaml",
        "resources:\n  - {name: a, kind: postgres, host: 127.0.0.1, port: 5432, database: d, \
         username: u, password: hunter2}\n",
    );
    let out = run(
        &app,
        &scratch,
        &["resources", "apply", "-f", inline.to_str().unwrap()],
        &[],
    )
    .await;
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("inline `password`"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"));

    // ORDERS_PASSWORD unset: nothing is applied, not even the resource that has its secret.
    scratch.write("billing.secret", "s");
    let file = scratch.write("sources.yaml", &sources_yaml("shop", ""));
    let out = run(
        &app,
        &scratch,
        &["resources", "apply", "-f", file.to_str().unwrap()],
        &[],
    )
    .await;
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("ORDERS_PASSWORD"), "{}", stderr(&out));
    let listed = api(&app, Method::GET, "/v1/resources", None).await;
    assert_eq!(listed["items"], json!([]));

    // A field the API refuses (422) is bad input too.
    let bad = scratch.write(
        "bad.yaml",
        "resources:\n  - {name: a, kind: postgres, host: 127.0.0.1, port: 0, database: d, \
         username: u, password_env: P}\n",
    );
    let out = run(
        &app,
        &scratch,
        &["resources", "apply", "-f", bad.to_str().unwrap()],
        &[("P", "x")],
    )
    .await;
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("port"), "{}", stderr(&out));
}

#[tokio::test]
async fn sync_wait_exits_0_and_json_is_the_apis_own_job() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int primary key); create view v as select 1;")
        .await
        .unwrap();
    app.register(TENANT, "src", &source).await.unwrap();
    let scratch = Scratch::new();

    let out = run(
        &app,
        &scratch,
        &["sync", "src", "--wait", "--timeout", "60s", "-o", "json"],
        &[],
    )
    .await;
    assert_exit(&out, 0);
    let jobs: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let job = &jobs[0];
    assert_eq!(job["state"], "succeeded");
    let id = job["id"].as_str().unwrap();
    let from_api = api(&app, Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(job, &from_api);
    // Not a terminal here: plain progress lines on stderr, ending with the outcome.
    assert!(
        stderr(&out).contains("src: succeeded · 2 tables"),
        "{}",
        stderr(&out)
    );

    // Listings: the API's page, all pages in one.
    let out = run(&app, &scratch, &["resources", "list", "-o", "json"], &[]).await;
    assert_exit(&out, 0);
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let from_api = api(&app, Method::GET, "/v1/resources", None).await;
    assert_eq!(listed, from_api);
    let out = run(&app, &scratch, &["tables", "src"], &[]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains(" public ") && l.contains(" t ")),
        "{}",
        stdout(&out)
    );
    let out = run(
        &app,
        &scratch,
        &["resources", "get", "src", "-o", "yaml"],
        &[],
    )
    .await;
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("name: src"), "{}", stdout(&out));
    let out = run(&app, &scratch, &["jobs", "list", "--resource", "src"], &[]).await;
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
}

#[tokio::test]
async fn a_failed_sync_exits_1_and_a_cancelled_one_5() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let scratch = Scratch::new();
    // Nothing listens on this port: every attempt is refused.
    let refused = free_port().unwrap();
    app.register_via(
        TENANT,
        "down",
        "nothing",
        refused,
        json!({ "retry_policy": { "max_attempts": 2 } }),
    )
    .await
    .unwrap();
    let out = run(&app, &scratch, &["sync", "down", "--wait"], &[]).await;
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("failed"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("failed after 2 attempt(s)"),
        "{}",
        stderr(&out)
    );

    // `jobs retry` starts a new job linked to it.
    let jobs = api(&app, Method::GET, "/v1/jobs?state=failed", None).await;
    let failed = jobs["items"][0]["id"].as_str().unwrap().to_owned();
    let out = run(
        &app,
        &scratch,
        &["jobs", "retry", &failed, "-o", "json"],
        &[],
    )
    .await;
    assert_exit(&out, 0);
    let retry: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(retry["retry_of"], failed.as_str());
}

#[tokio::test]
async fn waiting_on_a_job_no_worker_takes_times_out_with_6_or_ends_cancelled_with_5() {
    // No worker: the job stays queued.
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    app.register(TENANT, "idle", &source).await.unwrap();
    let scratch = Scratch::new();

    let started = Instant::now();
    let out = run(
        &app,
        &scratch,
        &["sync", "idle", "--wait", "--timeout", "2s"],
        &[],
    )
    .await;
    assert_exit(&out, 6);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        stderr(&out).contains("timed out: idle still queued after 2s"),
        "{}",
        stderr(&out)
    );

    // The same (deduplicated) job, cancelled while a second CLI waits on it.
    let app_ref = &app;
    let scratch_ref = &scratch;
    let args = ["sync", "idle", "--wait", "--timeout", "60s"];
    let waiter = run(app_ref, scratch_ref, &args, &[]);
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let jobs = api(app_ref, Method::GET, "/v1/jobs?state=queued", None).await;
        let id = jobs["items"][0]["id"].as_str().unwrap().to_owned();
        let out = run(app_ref, scratch_ref, &["jobs", "cancel", &id], &[]).await;
        assert_exit(&out, 0);
    };
    let (out, ()) = tokio::join!(waiter, canceller);
    assert_exit(&out, 5);
}

#[tokio::test]
async fn bad_input_bad_tokens_and_no_server_have_their_own_exit_codes() {
    let app = spawn_app().await.unwrap();
    let scratch = Scratch::new();

    let out = run(&app, &scratch, &["sync", "no-such-resource"], &[]).await;
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no resource is named `no-such-resource`"));
    let out = run(
        &app,
        &scratch,
        &["sync", "x", "--wait", "--timeout", "soon"],
        &[],
    )
    .await;
    assert_exit(&out, 2);
    let out = run(
        &app,
        &scratch,
        &["resources", "apply", "-f", "/nonexistent.yaml"],
        &[],
    )
    .await;
    assert_exit(&out, 2);

    let out = run(
        &app,
        &scratch,
        &["resources", "list"],
        &[("METASYNC_TOKEN", "not-a-token")],
    )
    .await;
    assert_exit(&out, 3);
    let out = run(
        &app,
        &scratch,
        &["resources", "list"],
        &[("METASYNC_TOKEN", "")],
    )
    .await;
    assert_exit(&out, 3);

    let nobody = format!("http://127.0.0.1:{}", free_port().unwrap());
    let out = run(
        &app,
        &scratch,
        &["resources", "list"],
        &[("METASYNC_URL", &nobody)],
    )
    .await;
    assert_exit(&out, 4);
}

#[tokio::test]
async fn login_stores_the_url_and_token_for_the_owner_only() {
    let app = spawn_app().await.unwrap();
    let scratch = Scratch::new();
    let token = app.token(TENANT);
    let out = run(
        &app,
        &scratch,
        &["login", "--token", &token],
        &[("METASYNC_TOKEN", "")],
    )
    .await;
    assert_exit(&out, 0);
    let file = scratch.0.join("config/metasync/config.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["url"], app.base.as_str());

    // Later commands need neither variable.
    let bare = [("METASYNC_TOKEN", ""), ("METASYNC_URL", "")];
    let out = run(&app, &scratch, &["resources", "list"], &bare).await;
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("NAME"), "{}", stdout(&out));

    // A bad token is refused before it is stored.
    let out = run(
        &app,
        &scratch,
        &["login", "--token", "nope"],
        &[("METASYNC_TOKEN", "")],
    )
    .await;
    assert_exit(&out, 3);
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["token"], token.as_str());
}

/// tmux: a real terminal. `metasync sync --wait` inside it shows a live progress line while
/// the source stalls, and the final state once it answers.
#[tokio::test]
async fn in_a_terminal_the_progress_display_advances_then_shows_the_outcome() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: tmux is not installed (apt-get install tmux)");
        return;
    }
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    // The source behind a proxy that holds new connections until released.
    let proxy = metasync_tests::FaultProxy::start(5432).await.unwrap();
    proxy.set_mode(metasync_tests::ProxyMode::Stall);
    app.register_via(TENANT, "slow", &source, proxy.port, json!({}))
        .await
        .unwrap();
    let scratch = Scratch::new();
    let session = unique_name("mscli", '-');
    let script = scratch.write(
        "run.sh",
        &format!(
            "export METASYNC_URL='{}' METASYNC_TOKEN='{}' XDG_CONFIG_HOME='{}'\n\
             '{}' sync slow --wait --timeout 60s\n\
             echo \"exit=$?\"\n\
             sleep 60\n",
            app.base,
            app.token(TENANT),
            scratch.0.join("config").display(),
            binary("metasync").unwrap().display(),
        ),
    );
    let status = std::process::Command::new("tmux")
        .args(["new-session", "-d", "-x", "120", "-y", "30", "-s", &session])
        .arg(format!("bash '{}'", script.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let _kill = KillSession(session.clone());
    let capture = || {
        let out = std::process::Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Running, stalled: the spinner line names the resource, state, phase and attempt, and
    // its elapsed time advances.
    let first = wait_for_pane(&capture, |p| p.contains("slow") && p.contains("running")).await;
    assert!(first.contains("scanning · attempt "), "{first}");
    let later = wait_for_pane(&capture, |p| p != first && p.contains("slow")).await;
    assert_ne!(first, later);

    proxy.set_mode(metasync_tests::ProxyMode::Pass);
    proxy.release_stalled();
    let done = wait_for_pane(&capture, |p| p.contains("exit=")).await;
    assert!(done.contains("exit=0"), "{done}");
    assert!(done.contains("succeeded · 1 tables"), "{done}");
    // The final table under the progress line.
    assert!(
        done.contains("RESOURCE") && done.contains("STATE"),
        "{done}"
    );
}

struct KillSession(String);

impl Drop for KillSession {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

async fn wait_for_pane(capture: &impl Fn() -> String, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pane = capture();
        if done(&pane) {
            return pane;
        }
        assert!(
            Instant::now() < deadline,
            "the pane never showed it:\n{pane}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
