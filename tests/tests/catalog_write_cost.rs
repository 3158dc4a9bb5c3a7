//! The catalog writer issues a constant number of statements per sync, whatever the table
//! count, renames, retired ids and scope changes included: counted from the worker process's
//! own sqlx statement log, inside the writer's span (`write_snapshot`).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metasync_shared::domain::JobState;
use metasync_shared::ids::ResourceId;
use metasync_tests::fixtures::{TENANT, run_pg};
use metasync_tests::{TestApp, create_source, eventually, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// A worker process whose statement log is counted: the writer's statements, and the jobs it
/// finished (the `succeeded` update comes after the writer's statements in the same log).
struct CountedWorker {
    _process: tokio::process::Child,
    writer: Arc<AtomicU64>,
    finished: Arc<AtomicU64>,
}

impl CountedWorker {
    fn spawn(app: &TestApp) -> Self {
        // The writer's span is at `info`: below the filter it would not be entered, and the
        // statements would not name it.
        let log = "warn,sqlx::query=debug,metasync_shared::db::catalog::write=info";
        let mut cmd = app.worker_command("counted", &[("RUST_LOG", log)]).unwrap();
        cmd.stderr(Stdio::piped());
        let mut process = cmd.spawn().unwrap();
        let stderr = process.stderr.take().unwrap();
        let (writer, finished) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (w, f) = (writer.clone(), finished.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.contains("sqlx::query") {
                    continue;
                }
                if line.contains("write_snapshot") {
                    w.fetch_add(1, Ordering::SeqCst);
                } else if line.contains("state = 'succeeded'") {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            _process: process,
            writer,
            finished,
        }
    }

    /// Syncs `rid` to success and returns the writer's statements for it.
    async fn sync(&self, app: &TestApp, rid: ResourceId) -> u64 {
        let before = self.writer.load(Ordering::SeqCst);
        let done = self.finished.load(Ordering::SeqCst);
        let job = app.sync(TENANT, rid).await.unwrap();
        let job = app
            .wait_for_job(TENANT, job.id, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        // The log is in order: once the job's `succeeded` update is read, so are its writes.
        eventually(Duration::from_secs(10), "the job's log", || async {
            Ok((self.finished.load(Ordering::SeqCst) > done).then_some(()))
        })
        .await
        .unwrap();
        self.writer.load(Ordering::SeqCst) - before
    }
}

/// `PATCH`es the resource's options (key by key).
async fn patch_options(app: &TestApp, rid: ResourceId, options: Value) {
    let path = format!("/v1/resources/{rid}");
    let body = json!({ "options": options });
    let (status, _, answer) = app
        .call(TENANT, Method::PATCH, &path, Some(body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
}

/// The writer's statements for each step of one story, on a source of `n` tables: first
/// sync, unchanged resync, every table renamed (and a column of each), a table dropped and
/// re-created (its retired id taken back), the filters changed (half the tables leave), and
/// changed back (they come back under their ids).
async fn story(app: &TestApp, worker: &CountedWorker, n: usize) -> Vec<u64> {
    let tables: String = (0..n)
        .map(|i| format!("create table t{i} (id int primary key, v text);"))
        .collect();
    let source = create_source(&tables).await.unwrap();
    let rid = app
        .register_via(TENANT, &format!("cost-{source}"), &source, 5432, json!({}))
        .await
        .unwrap()
        .id;
    let mut counts = vec![worker.sync(app, rid).await, worker.sync(app, rid).await];
    let renames: String = (0..n)
        .map(|i| format!("alter table t{i} rename to r{i}; alter table r{i} rename v to w;"))
        .collect();
    run_pg(&source, &renames).await;
    counts.push(worker.sync(app, rid).await);
    run_pg(&source, "drop table r0").await;
    counts.push(worker.sync(app, rid).await);
    run_pg(&source, "create table r0 (id int)").await;
    counts.push(worker.sync(app, rid).await);
    patch_options(app, rid, json!({"exclude_tables": ["r[0-9]*[02468]"]})).await;
    counts.push(worker.sync(app, rid).await);
    patch_options(app, rid, json!({"exclude_tables": []})).await;
    counts.push(worker.sync(app, rid).await);
    counts
}

#[tokio::test]
async fn the_writer_issues_a_constant_number_of_statements() {
    let app = spawn_app().await.unwrap();
    let worker = CountedWorker::spawn(&app);
    let small = story(&app, &worker, 4).await;
    let large = story(&app, &worker, 40).await;
    eprintln!("writer statements per step, 4 tables: {small:?}; 40 tables: {large:?}");
    assert_eq!(small, large, "the statements grew with the tables");
    // First sync: the read, the scope, the schemas, the inserts. Unchanged: the read alone.
    // Renamed: the read, the definitions (2), the rename, the columns' delete, the upsert, the
    // inserts. Dropped: the read, the retirement, the change. Re-created: the read, the retired
    // ids, their reuse, the inserts. Scope changed: the read, the scope, the retirement, the
    // inserts; changed back: the same and the retired ids.
    assert_eq!(small, [4, 1, 7, 3, 4, 4, 5]);
}
