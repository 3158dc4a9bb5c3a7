//! Test-connection: `POST /v1/resources/test` (an unsaved definition, checked exactly as
//! registering it would be) and `POST /v1/resources/{id}/test` (a stored resource as it is).
//!
//! The API never dials a source and cannot open a password, so a worker runs the test: the
//! request (its sealed password bound to its target, as a resource's) goes into
//! `connection_tests`, its id onto the queue's test lane, and the API polls the row for the
//! worker's answer for up to `METASYNC_CONNECTION_TEST_TIMEOUT`. A failed connection is a
//! `200` with the classified result. With no live worker the answer is a `503` with
//! `Retry-After` (nothing is stored or pushed); when no worker took the test in time, also a
//! `503` (the workers are gone or all busy with tests); when one took it and did not answer in
//! time, a `504`.

use std::time::Duration;

use axum::extract::State;
use chrono::Utc;
use metasync_shared::connection_test::ConnectionTestResult;
use metasync_shared::custody::ConnectionTarget;
use metasync_shared::db::audit::{self, AuditAction, AuditDetails};
use metasync_shared::db::connection_tests::{self, NewTest};
use metasync_shared::ids::{ResourceId, TenantId, TestId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Operate, Tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath};
use crate::openapi::{Authed, problem};
use crate::quotas::Bucket;
use crate::routes::resources::{CreateResource, check_definition};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test_definition))
        .routes(routes!(test_resource))
}

/// The `Retry-After` of a 503 for want of a worker: about how long a worker takes to start.
const NO_WORKER_RETRY_AFTER: u64 = 5;

/// Test an unsaved definition: connect to the source the way a sync would, and report what
/// was found. Nothing is registered.
#[utoipa::path(
    post,
    path = "/v1/resources/test",
    operation_id = "testConnection",
    tag = "resources",
    security(("bearer" = [])),
    request_body = CreateResource,
    responses(
        (status = 200, description = "The test ran; `ok`, or what failed (a failed connection is a 200 too)", body = ConnectionTestResult),
        Authed,
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
        (status = 503, response = problem::NoWorker),
        (status = 504, response = problem::WorkerTimeout),
    ),
)]
async fn test_definition(
    State(state): State<AppState>,
    tenant: Tenant<Operate>,
    AppJson(body): AppJson<CreateResource>,
) -> ApiResult<axum::Json<ConnectionTestResult>> {
    let definition = check_definition(&state, body).await?;
    state.quotas.spend(tenant.id(), Bucket::Tests)?;
    require_live_worker(&state).await?;
    let id = TestId::new_v7();
    // Sealed for this test alone: its id stands for the resource id.
    let target = ConnectionTarget {
        tenant: tenant.id(),
        resource: ResourceId(id.uuid()),
        kind: definition.kind,
        host: &definition.host,
        port: definition.port,
        username: &definition.username,
        database: &definition.database,
        tls: &definition.tls,
    };
    let new = NewTest {
        id,
        kind: definition.kind,
        host: &definition.host,
        port: definition.port,
        database: &definition.database,
        username: &definition.username,
        tls: &definition.tls,
        password: state.sealing_key.seal(&definition.password, &target),
    };
    connection_tests::insert(&state.db, tenant.id(), &new, deadline(&state)).await?;
    let stored = Stored::new(&state, tenant.id(), id);
    stored.answer().await.map(axum::Json)
}

/// Test a stored resource as it is: connect to it the way a sync would, with its stored
/// password, and report what was found. Recorded in the audit log (`resource.test`).
#[utoipa::path(
    post,
    path = "/v1/resources/{id}/test",
    operation_id = "testResourceConnection",
    tag = "resources",
    security(("bearer" = [])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The test ran; `ok`, or what failed (a failed connection is a 200 too)", body = ConnectionTestResult),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 429, response = problem::TooManyRequests),
        (status = 503, response = problem::NoWorker),
        (status = 504, response = problem::WorkerTimeout),
    ),
)]
async fn test_resource(
    State(state): State<AppState>,
    tenant: Tenant<Operate>,
    AppPath(resource): AppPath<ResourceId>,
) -> ApiResult<axum::Json<ConnectionTestResult>> {
    state.quotas.spend(tenant.id(), Bucket::Tests)?;
    let id = TestId::new_v7();
    let mut tx = state.db.begin().await?;
    // The definition and sealed password are copied inside PostgreSQL.
    if !connection_tests::insert_for_resource(&mut *tx, tenant.id(), id, resource, deadline(&state))
        .await?
    {
        return Err(ApiError::NotFound("resource"));
    }
    require_live_worker(&state).await?;
    let (actor, action) = (tenant.actor(), AuditAction::ResourceTest);
    let details = AuditDetails::default();
    audit::record(
        &mut *tx,
        tenant.id(),
        &actor,
        action,
        resource.uuid(),
        details,
    )
    .await?;
    tx.commit().await?;
    let stored = Stored::new(&state, tenant.id(), id);
    stored.answer().await.map(axum::Json)
}

/// When the API stops waiting for a test stored now (the worker does not start it after).
fn deadline(state: &AppState) -> chrono::DateTime<Utc> {
    Utc::now()
        + chrono::Duration::from_std(state.connection_test_timeout).unwrap_or(chrono::Duration::MAX)
}

/// A `503` unless some worker holds a current lease (the registry `GET /v1/workers` reads).
async fn require_live_worker(state: &AppState) -> ApiResult<()> {
    if state.queue.live_workers().await? == 0 {
        return Err(ApiError::NoWorker {
            detail: "no worker is running to test the connection; retry once one is".into(),
            retry_after: NO_WORKER_RETRY_AFTER,
        });
    }
    Ok(())
}

/// A stored test request. Its row is deleted when this is dropped, answered or not (also when
/// the client goes away mid-wait), so nothing of it outlives the request by more than a moment.
struct Stored<'a> {
    state: &'a AppState,
    tenant: &'a TenantId,
    id: TestId,
}

impl<'a> Stored<'a> {
    fn new(state: &'a AppState, tenant: &'a TenantId, id: TestId) -> Self {
        Self { state, tenant, id }
    }

    /// Pushes the test's id to the workers and waits for the answer.
    async fn answer(&self) -> ApiResult<ConnectionTestResult> {
        let (state, tenant, id) = (self.state, self.tenant, self.id);
        let timeout = state.connection_test_timeout;
        let give_up = tokio::time::Instant::now() + timeout;
        // The lane outlives an id nobody takes by a little: then it expires, ids and all.
        state.queue.push_test(id, timeout * 2).await?;
        let mut pause = Duration::from_millis(20);
        loop {
            tokio::time::sleep(pause).await;
            if let Some(result) = connection_tests::result(&state.db, tenant, id).await? {
                return Ok(result);
            }
            if tokio::time::Instant::now() >= give_up {
                break;
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        if state.queue.withdraw_test(id).await? {
            return Err(ApiError::NoWorker {
                detail: format!(
                    "no worker took the test within {}s (all gone or busy with other tests); \
                     retry shortly",
                    timeout.as_secs()
                ),
                retry_after: NO_WORKER_RETRY_AFTER,
            });
        }
        // Taken: a last look, in case the answer came while the lane was checked.
        if let Some(result) = connection_tests::result(&state.db, tenant, id).await? {
            return Ok(result);
        }
        Err(ApiError::WorkerTimeout(format!(
            "a worker took the test and did not answer within {}s \
             (METASYNC_CONNECTION_TEST_TIMEOUT)",
            timeout.as_secs()
        )))
    }
}

impl Drop for Stored<'_> {
    fn drop(&mut self) {
        let (db, tenant, id) = (self.state.db.clone(), self.tenant.clone(), self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = connection_tests::delete(&db, &tenant, id).await {
                    tracing::debug!(error = %e, "a connection test's row is left to the prune");
                }
            });
        }
    }
}
