//! `/v1/jobs`: job state by id (with optional long-poll) and job listings.

use std::time::Duration;

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metasync_shared::db::audit::{self, AuditAction, AuditDetails};
use metasync_shared::db::batches::{self, RequestedSync};
use metasync_shared::db::job_reads::{self, Attempt, JobFilter};
use metasync_shared::db::jobs::{self, Cancelled, Enqueued, Job};
use metasync_shared::domain::{JobState, Trigger};
use metasync_shared::ids::{BatchId, JobId, ResourceId, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Operate, Tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::openapi::{Authed, problem};
use crate::pagination::{self, Cursor, Limit, Page};
use crate::quotas::Bucket;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(sync_many))
        .routes(routes!(read_batch))
}

/// `202` + `Location` for a new job (its delivery already pushed by the submitter), `200` with
/// `"deduplicated": true` for the resource's already active job.
pub fn enqueued_response(enqueued: Enqueued) -> Response {
    let (status, job, deduplicated) = match enqueued {
        Enqueued::Created(job) => (StatusCode::ACCEPTED, job, false),
        Enqueued::Deduplicated(job) => (StatusCode::OK, job, true),
    };
    let location = format!("/v1/jobs/{}", job.id);
    let document = JobDocument {
        job,
        attempt_history: None,
        deduplicated: Some(deduplicated),
    };
    (status, [(header::LOCATION, location)], axum::Json(document)).into_response()
}

/// Cancels a job: `200` with the cancelled job if it had not started, `202` if it is running
/// and will stop at its next checkpoint, `409` if it already finished.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancelJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = JobId, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled before it ran", body = JobDocument),
        (status = 202, description = "Running: it stops at its next checkpoint and writes nothing more", body = JobDocument),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict),
    ),
)]
async fn cancel(
    State(state): State<AppState>,
    tenant: Tenant<Operate>,
    AppPath(id): AppPath<JobId>,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let outcome = jobs::cancel_on(&mut tx, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    let (status, job, outcome) = match outcome {
        Cancelled::Now(job) => (StatusCode::OK, job, "cancelled"),
        Cancelled::Requested(job) => (StatusCode::ACCEPTED, job, "requested"),
        Cancelled::AlreadyFinished(job) => {
            return Err(ApiError::Conflict(format!(
                "job already finished as `{}`",
                job.state.as_str()
            )));
        }
    };
    let details = AuditDetails {
        outcome: Some(outcome.into()),
        ..AuditDetails::default()
    };
    let (actor, action) = (tenant.actor(), AuditAction::JobCancel);
    audit::record(&mut *tx, tenant.id(), &actor, action, id.uuid(), details).await?;
    tx.commit().await?;
    if status == StatusCode::OK {
        state.queue.announce(id).await;
    }
    let document = JobDocument {
        job,
        attempt_history: None,
        deduplicated: None,
    };
    Ok((status, axum::Json(document)).into_response())
}

/// Starts a new job, linked to a failed or cancelled one.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    operation_id = "retryJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = JobId, Path, description = "A failed or cancelled job")),
    responses(
        (status = 202, description = "A new job with `retry_of`", body = JobDocument,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "The resource's active job (`deduplicated: true`)", body = JobDocument,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn retry(
    State(state): State<AppState>,
    tenant: Tenant<Operate>,
    AppPath(id): AppPath<JobId>,
) -> ApiResult<Response> {
    let old = job_reads::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    if !matches!(old.state, JobState::Failed | JobState::Cancelled) {
        return Err(ApiError::Conflict(format!(
            "only failed or cancelled jobs can be retried; this one is `{}`",
            old.state.as_str()
        )));
    }
    state.quotas.spend(tenant.id(), Bucket::Syncs)?;
    state
        .quotas
        .check_active_jobs(&state.db, tenant.id(), 1)
        .await?;
    let enqueued = state
        .submitter
        .sync(tenant.id(), old.resource_id, Some(old.id), &tenant.actor())
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    Ok(enqueued_response(enqueued))
}

/// Which resources to sync; an empty body syncs all of the tenant's.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SyncMany {
    /// A subset of the tenant's resources; all of them when absent.
    #[schema(max_items = 100_000)]
    resource_ids: Option<Vec<ResourceId>>,
}

/// What `POST /v1/syncs` enqueued.
#[derive(Debug, Serialize, ToSchema)]
struct BatchAccepted {
    /// The batch; `null` when every resource already had an active job.
    batch_id: Option<BatchId>,
    /// Jobs in the batch.
    jobs: usize,
    /// With `resource_ids`: what became of each, in request order (`enqueued` with the
    /// batch's job, `deduplicated` with the active job it kept, `not_found`, or `refused` with
    /// a `reason`: `active_jobs_quota` when the tenant's unfinished jobs reached
    /// `METASYNC_MAX_ACTIVE_JOBS` before its turn). Absent when the request named no ids
    /// (every resource).
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<RequestedSync>>,
}

/// A batch's progress.
#[derive(Debug, Serialize, ToSchema)]
struct BatchStatus {
    id: BatchId,
    /// Jobs in the batch.
    jobs: i64,
    /// Jobs by state; states with none are absent.
    by_state: BTreeMap<JobState, i64>,
    /// Whether every job is finished.
    done: bool,
}

/// Enqueues many resources as a batch: `202` with the batch. Resources with an active job keep
/// it and are not part of the batch; when that leaves nothing to run, `200` with
/// `"batch_id": null` and `"jobs": 0`, and no batch is recorded.
///
/// The tenant's cap on unfinished jobs (`METASYNC_MAX_ACTIVE_JOBS`): with `resource_ids`, the
/// named resources are enqueued in request order while they fit and the others are reported
/// `refused` (`reason: active_jobs_quota`) in `results`, not enqueued. Without them (every
/// resource), the batch is all or nothing: `429` when they do not all fit. A spent request
/// bucket (`METASYNC_RATE_SYNCS_PER_MINUTE`) is a `429` for the whole request either way.
#[utoipa::path(
    post,
    path = "/v1/syncs",
    operation_id = "syncMany",
    tag = "jobs",
    security(("bearer" = [])),
    request_body(content = Option<SyncMany>, description = "Optional: no body (or `null`) syncs every resource"),
    responses(
        (status = 202, description = "A batch", body = BatchAccepted,
            headers(("Location" = String, description = "`/v1/batches/{id}`")),
            links(("readBatch" = (operation_id = "readBatch", parameters(("id" = "$response.body#/batch_id")))))),
        (status = 200, description = "Nothing to run: every named resource already had an active job, was not found or was refused by the cap", body = BatchAccepted),
        Authed,
        (status = 413, response = problem::PayloadTooLarge),
        (status = 422, response = problem::Unprocessable),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn sync_many(
    State(state): State<AppState>,
    tenant: Tenant<Operate>,
    raw: axum::body::Bytes,
) -> ApiResult<Response> {
    // The body is optional: no body (or `null`) means every resource of the tenant. Only an
    // empty body is "no body": whitespace alone is not JSON (a 400, a fuzz finding).
    let body: SyncMany = if raw.is_empty() {
        SyncMany::default()
    } else {
        if crate::edge::json_has_nul(&raw) {
            return Err(ApiError::BadRequest(
                "the body contains a NUL character (\\u0000), which no field accepts".into(),
            ));
        }
        let body =
            serde_json::from_slice::<Option<SyncMany>>(&raw).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::Unprocessable(e.to_string()),
                _ => ApiError::BadRequest(format!("invalid JSON: {e}")),
            })?;
        // serde also reads a struct from an array (`[null]`, found by the fuzzing): only an
        // object (or `null`) is a body here.
        if body.is_some() && !crate::extract::is_object(&raw) {
            return Err(ApiError::Unprocessable(
                "the body must be a JSON object or null".into(),
            ));
        }
        body.unwrap_or_default()
    };
    if body
        .resource_ids
        .as_ref()
        .is_some_and(|ids| ids.len() > 100_000)
    {
        return Err(ApiError::Unprocessable(
            "at most 100000 `resource_ids` per batch".into(),
        ));
    }
    // One request against the bucket (a whole-request 429); its jobs against the cap, which
    // the submitter counts under a per-tenant lock (see `Submitter::batch`).
    state.quotas.spend(tenant.id(), Bucket::Syncs)?;
    let batch = state
        .submitter
        .batch(
            tenant.id(),
            body.resource_ids.as_deref(),
            &tenant.actor(),
            state.quotas.limits.max_active_jobs,
        )
        .await?;
    if let Some(over) = batch.over_cap {
        return Err(state.quotas.active_jobs_exceeded(over.active, over.wanted));
    }
    let results = match &body.resource_ids {
        Some(ids) => {
            Some(batches::outcomes(&state.db, tenant.id(), batch.id, ids, &batch.refused).await?)
        }
        None => None,
    };
    let Some(id) = batch.id else {
        // Nothing to run: no batch is recorded, and nothing was accepted for later.
        let nothing = BatchAccepted {
            batch_id: None,
            jobs: 0,
            results,
        };
        return Ok(axum::Json(nothing).into_response());
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/batches/{id}"))],
        axum::Json(BatchAccepted {
            batch_id: Some(id),
            jobs: batch.jobs.len(),
            results,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BatchQuery {
    /// Long-poll: wait up to this many seconds (at most `METASYNC_MAX_WAIT`, default 60) for
    /// every job of the batch to finish; then the batch is returned as it is.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    wait: Option<u32>,
}

/// A batch's jobs counted by state; `?wait=` long-polls until they have all finished.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    operation_id = "readBatch",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = BatchId, Path, description = "Batch id"), BatchQuery),
    responses(
        (status = 200, description = "The batch", body = BatchStatus),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn read_batch(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<BatchId>,
    AppQuery(query): AppQuery<BatchQuery>,
) -> ApiResult<Response> {
    let mut waiter = query.wait.map(|_| state.job_events.subscribe());
    let mut batch = batch_status(&state, tenant.id(), id).await?;
    if let (Some(wait), Some(waiter)) = (query.wait, waiter.as_mut())
        && !batch.done
    {
        let _slot = state.quotas.wait_slot(tenant.id())?;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(wait.into()).min(state.quotas.limits.max_wait);
        // A batch's jobs are fixed when it is created: only their events wake the wait.
        let members: HashSet<JobId> = batches::job_ids(&state.db, tenant.id(), id)
            .await?
            .into_iter()
            .collect();
        let recheck = state.quotas.limits.wait_recheck;
        while !batch.done && tokio::time::Instant::now() < deadline {
            let _ =
                tokio::time::timeout_at(deadline, waiter.changed(|j| members.contains(j), recheck))
                    .await;
            batch = batch_status(&state, tenant.id(), id).await?;
        }
    }
    Ok(axum::Json(batch).into_response())
}

async fn batch_status(state: &AppState, tenant: &TenantId, id: BatchId) -> ApiResult<BatchStatus> {
    let by_state = batches::counts(&state.db, tenant, id)
        .await?
        .ok_or(ApiError::NotFound("batch"))?;
    let total: i64 = by_state.values().sum();
    let finished: i64 = by_state
        .iter()
        .filter(|(s, _)| s.is_terminal())
        .map(|(_, n)| n)
        .sum();
    Ok(BatchStatus {
        id,
        jobs: total,
        by_state,
        done: finished == total,
    })
}

/// A job as the API returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDocument {
    #[serde(flatten)]
    pub job: Job,
    /// Every attempt, oldest first (`GET /v1/jobs/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none", rename = "attempt_history")]
    pub attempt_history: Option<Vec<Attempt>>,
    /// Whether this is the resource's already active job (sync requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// Long-poll: wait up to this many seconds (at most `METASYNC_MAX_WAIT`, default 60) for
    /// what `until` names; then the job is returned as it is.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    wait: Option<u32>,
    /// With `wait`: return on any change of state or attempt (`change`, the default), or only
    /// once the job has finished (`finished`).
    #[param(inline)]
    until: Option<Until>,
}

/// What a job long-poll waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Until {
    /// Any change of state or attempt.
    #[default]
    Change,
    /// A terminal state: succeeded, failed or cancelled.
    Finished,
}

/// A job with its attempt history; `?wait=` long-polls for a change, `&until=finished` for
/// its end.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "readJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = JobId, Path, description = "Job id"), ReadQuery),
    responses(
        (status = 200, description = "The job", body = JobDocument),
        Authed,
        (status = 404, response = problem::NotFound),
        (status = 429, response = problem::TooManyRequests),
    ),
)]
async fn read(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<JobId>,
    AppQuery(query): AppQuery<ReadQuery>,
) -> ApiResult<Response> {
    // Subscribed before the first read, so a change between the two still wakes the wait.
    let mut waiter = query.wait.map(|_| state.job_events.subscribe());
    let mut job = job_reads::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    if let (Some(wait), Some(waiter)) = (query.wait, waiter.as_mut())
        && !job.state.is_terminal()
    {
        let _slot = state.quotas.wait_slot(tenant.id())?;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(wait.into()).min(state.quotas.limits.max_wait);
        let seen = (job.state, job.attempts);
        let until = query.until.unwrap_or_default();
        let done = |job: &Job| {
            job.state.is_terminal() || (until == Until::Change && (job.state, job.attempts) != seen)
        };
        while !done(&job) && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(
                deadline,
                waiter.changed(|j| *j == id, state.quotas.limits.wait_recheck),
            )
            .await;
            job = job_reads::get(&state.db, tenant.id(), id)
                .await?
                .ok_or(ApiError::NotFound("job"))?;
        }
    }
    let attempt_history = Some(job_reads::attempts(&state.db, id).await?);
    Ok(axum::Json(JobDocument {
        job,
        attempt_history,
        deduplicated: None,
    })
    .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this resource's jobs.
    resource_id: Option<ResourceId>,
    /// Only jobs in this state.
    state: Option<JobState>,
    /// Only the jobs of this batch.
    batch_id: Option<BatchId>,
    /// Only jobs started this way (`manual`, `batch`, `schedule`, `retry`).
    trigger: Option<Trigger>,
    /// Only jobs created at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    cursor: Option<Cursor>,
    #[serde(default)]
    #[param(value_type = Option<Limit>)]
    limit: Limit,
}

/// The tenant's jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = Page<Job>),
        Authed,
    ),
)]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(query): AppQuery<ListQuery>,
) -> ApiResult<Response> {
    let filter = JobFilter {
        resource_id: query.resource_id,
        state: query.state,
        batch_id: query.batch_id,
        trigger: query.trigger,
        since: pagination::since(query.since.as_deref())?,
        before: pagination::after(query.cursor.as_ref())?,
        limit: query.limit.get(),
    };
    let items = job_reads::list(&state.db, tenant.id(), &filter).await?;
    Ok(axum::Json(Page::new(items, query.limit, |job| job.id)).into_response())
}
