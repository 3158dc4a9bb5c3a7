//! Test-connection on the worker. The API stores a test request (a definition and its sealed
//! password) in PostgreSQL and puts its id on the queue's test lane; each worker serves that
//! lane on a task of its own, apart from the job slots, so a worker whose slots are all busy
//! with long syncs still answers a test at once. A test opens the password, checks the host
//! against the outbound policy, and connects the way a scan does ([`scan::probe`]: the checked
//! address, the resource's TLS mode, a permit of the server's cap, the connect timeout), then
//! writes a [`ConnectionTestResult`] for the API to return. A failure is a result too,
//! classified as [`JobError::from_connect`] classifies a sync's, with a hint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use metasync_shared::connection_test::{ConnectionTestResult, FailureCode, TestFailure};
use metasync_shared::db::connection_tests::{self, TestRequest};
use metasync_shared::db::resources::Resource;
use metasync_shared::ids::{ResourceId, TestId};
use metasync_shared::outbound::PolicyError;
use metasync_shared::scan_options::{Filters, ScanOptions};
use metasync_shared::warnings::Warnings;
use sqlx::types::Json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::error::JobError;
use crate::pipeline::WorkerContext;
use crate::scan::{self, ScanError, ScanTarget};

/// Tests one worker runs at once; while it runs this many, it leaves the lane to the others.
pub const MAX_CONCURRENT_TESTS: usize = 4;

/// How long one wait on the lane blocks, so that a stop is seen within it.
const BLOCK: Duration = Duration::from_secs(1);

/// A test gives up this long before the API stops waiting, so that even a source that never
/// answers gets its `timed_out` result to the client instead of a 504.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// The worker's test lane, running until [`TestLane::stop`].
pub struct TestLane {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TestLane {
    /// Starts serving the lane.
    pub fn spawn(ctx: WorkerContext) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(ctx, stopped));
        Self { stop, task }
    }

    /// Stops taking tests (tests already taken finish on their own, within their deadline).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn serve(ctx: WorkerContext, mut stopped: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_TESTS));
    let mut warnings = Warnings::new("test lane: redis failed");
    let mut lane = None;
    while !*stopped.borrow() {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopped.changed() => break,
        };
        if lane.is_none() {
            match ctx.queue.test_lane().await {
                Ok(connected) => lane = Some(connected),
                Err(e) => {
                    warnings.failed(&e);
                    tokio::time::sleep(BLOCK).await;
                    continue;
                }
            }
        }
        let Some(connected) = lane.as_mut() else {
            continue;
        };
        // Not raced against the stop signal: a taken id must not be dropped half-read.
        match connected.next(BLOCK).await {
            Ok(Some(id)) => {
                warnings.succeeded();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(&ctx, id).await {
                        tracing::warn!(test_id = %id, error = %e, "test-connection not answered");
                    }
                    drop(slot);
                });
            }
            Ok(None) => warnings.succeeded(),
            Err(e) => {
                warnings.failed(&e);
                lane = None;
                tokio::time::sleep(BLOCK).await;
            }
        }
    }
}

/// Runs test `id` if it still waits for an answer, and records the result.
#[tracing::instrument(skip_all, fields(test_id = %id, worker = %ctx.worker_id))]
async fn answer(ctx: &WorkerContext, id: TestId) -> anyhow::Result<()> {
    let Some(request) = connection_tests::pending(&ctx.db, id).await? else {
        // Answered, abandoned or pruned: the API no longer waits.
        return Ok(());
    };
    let started = Instant::now();
    let left = (request.expires_at - Utc::now())
        .to_std()
        .unwrap_or_default()
        .saturating_sub(ANSWER_MARGIN);
    let mut result = match tokio::time::timeout(left, run(ctx, &request)).await {
        Ok(result) => result,
        Err(_) => failed(
            FailureCode::TimedOut,
            "the test did not finish before the API stopped waiting".to_owned(),
            true,
        ),
    };
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let label = result.error.as_ref().map_or("ok", |e| e.code.as_str());
    metrics::counter!("metasync_connection_tests_total", "result" => label).increment(1);
    tracing::debug!(result = label, "test-connection answered");
    connection_tests::finish(&ctx.db, id, &result).await?;
    Ok(())
}

/// A result that stopped before any session: `code`, said in `message`.
fn failed(code: FailureCode, message: String, transient: bool) -> ConnectionTestResult {
    ConnectionTestResult {
        error: Some(TestFailure {
            code,
            message,
            hint: code.hint().to_owned(),
            transient,
        }),
        ..ConnectionTestResult::default()
    }
}

/// The test itself: open the password, check the host, connect and ask.
async fn run(ctx: &WorkerContext, request: &TestRequest) -> ConnectionTestResult {
    let Ok(password) = ctx.keys.open(&request.sealed_password(), &request.target()) else {
        return failed(
            FailureCode::Credentials,
            "the password cannot be opened with this worker's keys".to_owned(),
            false,
        );
    };
    let address = match ctx
        .outbound
        .connect_address(&request.host, request.port as u16)
        .await
    {
        Ok(address) => address,
        Err(e @ PolicyError::Unresolved) => {
            return failed(FailureCode::Unresolved, e.to_string(), true);
        }
        Err(e @ (PolicyError::Refused | PolicyError::Syntax | PolicyError::HostWithPort)) => {
            return failed(FailureCode::RefusedByPolicy, e.to_string(), false);
        }
    };
    let resource = as_resource(request);
    // A probe only connects: no filter is matched.
    let filters = Filters::default();
    let target = ScanTarget {
        resource: &resource,
        filters: &filters,
        address: address.ip(),
        password: &password,
    };
    match scan::probe(&target, ctx.limits, &ctx.sources).await {
        Ok(probe) => ConnectionTestResult {
            ok: probe.missing_grants.is_empty(),
            reachable: true,
            authenticated: Some(true),
            engine: Some(probe.engine.to_owned()),
            server_version: Some(probe.version),
            tls: Some(probe.tls),
            missing_grants: probe.missing_grants,
            error: None,
            duration_ms: 0,
        },
        Err(ScanError::ServerBusy) => failed(
            FailureCode::ServerBusy,
            format!(
                "every connection allowed to {}:{} is in use",
                request.host, request.port
            ),
            true,
        ),
        Err(ScanError::Failed(e)) => session_failure(e),
    }
}

/// A failure once connecting began: the class says how far it got.
fn session_failure(e: JobError) -> ConnectionTestResult {
    let transient = e.class == metasync_shared::domain::ErrorClass::Transient;
    // No class: the session was open and a statement on it failed.
    let code = e.failure.unwrap_or(FailureCode::ServerError);
    let (reachable, authenticated) = match e.failure {
        None => (true, Some(true)),
        Some(FailureCode::AuthenticationFailed) => (true, Some(false)),
        Some(
            FailureCode::UnknownDatabase
            | FailureCode::PermissionDenied
            | FailureCode::ServerError
            | FailureCode::Tls,
        ) => (true, None),
        Some(_) => (false, None),
    };
    ConnectionTestResult {
        reachable,
        authenticated,
        error: Some(TestFailure {
            code,
            message: e.message,
            hint: code.hint().to_owned(),
            transient,
        }),
        ..ConnectionTestResult::default()
    }
}

/// The request as the scanner's connection code takes a resource: only the connection
/// settings matter; the rest is left empty.
fn as_resource(request: &TestRequest) -> Resource {
    let now = Utc::now();
    Resource {
        id: request.resource_id.unwrap_or(ResourceId(request.id.uuid())),
        name: String::new(),
        kind: request.kind,
        host: request.host.clone(),
        port: request.port,
        database: request.database.clone(),
        username: request.username.clone(),
        options: Json(ScanOptions::default()),
        schedule: None,
        next_sync_at: None,
        retry_policy: None,
        tls: request.tls.clone(),
        created_at: now,
        updated_at: now,
        external_id: None,
        last_sync: None,
        last_succeeded_at: None,
        last_error: None,
    }
}
