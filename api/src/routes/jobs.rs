//! `/v1/jobs`: job state by id (with optional long-poll) and job listings.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metasync_shared::db::audit::{self, AuditAction, AuditDetails};
use metasync_shared::db::job_reads::{self, Attempt, JobFilter};
use metasync_shared::db::jobs::{self, Cancelled, Enqueued, Job};
use metasync_shared::db::{batches, resources};
use metasync_shared::domain::JobState;
use metasync_shared::ids::{BatchId, JobId, ResourceId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Operate, Tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::pagination::{self, Cursor, Limit, Page};
use crate::quotas::Bucket;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(read))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/syncs", post(sync_many))
        .route("/v1/batches/{id}", get(read_batch))
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
    let document = JobDocument {
        job,
        attempt_history: None,
        deduplicated: None,
    };
    Ok((status, axum::Json(document)).into_response())
}

/// Starts a new job, linked to a failed or cancelled one.
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncMany {
    /// A subset of the tenant's resources; all of them when absent.
    resource_ids: Option<Vec<ResourceId>>,
}

/// Enqueues many resources as a batch: `202` with the batch. Resources with an active job keep
/// it and are not part of the batch; when that leaves nothing to run, `200` with
/// `"batch_id": null` and `"jobs": 0`, and no batch is recorded.
async fn sync_many(
    State(state): State<AppState>,
    tenant: Tenant<Operate>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // The body is optional: no body means every resource of the tenant.
    let body: SyncMany = if body.iter().all(u8::is_ascii_whitespace) {
        SyncMany::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::Unprocessable(e.to_string()),
            _ => ApiError::BadRequest(format!("invalid JSON: {e}")),
        })?
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
    // One request against the bucket; all its jobs against the cap.
    state.quotas.spend(tenant.id(), Bucket::Syncs)?;
    let size = match &body.resource_ids {
        Some(ids) => ids.len(),
        None => usize::try_from(resources::count(&state.db, tenant.id()).await?).unwrap_or(0),
    };
    state
        .quotas
        .check_active_jobs(&state.db, tenant.id(), size)
        .await?;
    let batch = state
        .submitter
        .batch(tenant.id(), body.resource_ids.as_deref(), &tenant.actor())
        .await?;
    let Some(id) = batch.id else {
        // Nothing to run: no batch is recorded, and nothing was accepted for later.
        return Ok(axum::Json(json!({ "batch_id": null, "jobs": 0 })).into_response());
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/batches/{id}"))],
        axum::Json(json!({ "batch_id": id, "jobs": batch.jobs.len() })),
    )
        .into_response())
}

async fn read_batch(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<BatchId>,
) -> ApiResult<Response> {
    let by_state = batches::counts(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("batch"))?;
    let total: i64 = by_state.values().sum();
    let finished: i64 = by_state
        .iter()
        .filter(|(s, _)| s.is_terminal())
        .map(|(_, n)| n)
        .sum();
    Ok(axum::Json(json!({
        "id": id, "jobs": total, "by_state": by_state, "done": finished == total
    }))
    .into_response())
}

/// A job as the API returns it.
#[derive(Debug, Serialize)]
pub struct JobDocument {
    #[serde(flatten)]
    pub job: Job,
    #[serde(skip_serializing_if = "Option::is_none", rename = "attempt_history")]
    pub attempt_history: Option<Vec<Attempt>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    /// Long-poll: wait up to this many seconds (max 60) for the job's state to change.
    wait: Option<u64>,
}

/// How often a long-poll re-reads the job row.
const WAIT_POLL: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_secs(60);

async fn read(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<JobId>,
    AppQuery(query): AppQuery<ReadQuery>,
) -> ApiResult<Response> {
    let mut job = job_reads::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    if let Some(wait) = query.wait.filter(|_| !job.state.is_terminal()) {
        let _slot = state.quotas.wait_slot(tenant.id())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait).min(MAX_WAIT);
        let seen = (job.state, job.attempts);
        while !job.state.is_terminal() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(WAIT_POLL).await;
            job = job_reads::get(&state.db, tenant.id(), id)
                .await?
                .ok_or(ApiError::NotFound("job"))?;
            if (job.state, job.attempts) != seen {
                break;
            }
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

#[derive(Debug, Deserialize)]
struct ListQuery {
    resource_id: Option<ResourceId>,
    state: Option<JobState>,
    cursor: Option<Cursor>,
    #[serde(default)]
    limit: Limit,
}

async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(query): AppQuery<ListQuery>,
) -> ApiResult<Response> {
    let filter = JobFilter {
        resource_id: query.resource_id,
        state: query.state,
        before: pagination::after(query.cursor.as_ref())?,
        limit: query.limit.get(),
    };
    let items = job_reads::list(&state.db, tenant.id(), &filter).await?;
    Ok(axum::Json(Page::new(items, query.limit, |job| job.id)).into_response())
}
